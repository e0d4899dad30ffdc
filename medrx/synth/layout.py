"""The MIMIC-III layout the synthetic cohort is written in: table columns (lower-case
headers, real column order) and the file names of the GAMENet-format drug mappings."""

from __future__ import annotations

OPTIONAL_TABLES = ("DIAGNOSES_ICD", "PROCEDURES_ICD", "PRESCRIPTIONS")

ADMISSIONS_COLUMNS = (
    "row_id", "subject_id", "hadm_id", "admittime", "dischtime", "deathtime",
    "admission_type", "admission_location", "discharge_location", "insurance", "language",
    "religion", "marital_status", "ethnicity", "edregtime", "edouttime", "diagnosis",
    "hospital_expire_flag", "has_chartevents_data",
)
DIAGNOSES_COLUMNS = ("row_id", "subject_id", "hadm_id", "seq_num", "icd9_code")
PROCEDURES_COLUMNS = DIAGNOSES_COLUMNS
PRESCRIPTIONS_COLUMNS = (
    "row_id", "subject_id", "hadm_id", "icustay_id", "startdate", "enddate", "drug_type",
    "drug", "drug_name_poe", "drug_name_generic", "formulary_drug_cd", "gsn", "ndc",
    "prod_strength", "dose_val_rx", "dose_unit_rx", "form_val_disp", "form_unit_disp",
    "route",
)
TABLE_COLUMNS = {
    "ADMISSIONS": ADMISSIONS_COLUMNS,
    "DIAGNOSES_ICD": DIAGNOSES_COLUMNS,
    "PROCEDURES_ICD": PROCEDURES_COLUMNS,
    "PRESCRIPTIONS": PRESCRIPTIONS_COLUMNS,
}

NDC_RXNORM = "ndc2rxnorm_mapping.txt"
NDC_ATC = "ndc2atc_level4.csv.gz"
DDI_FILE = "ddi_atc3_pairs_gamenet.csv"
VOCAB_FILE = "atc3_label_vocab.csv"
