"""SynthConfig validation (fedrx.medrx.synth.config): one clear ConfigError per bad knob."""

from __future__ import annotations

import pytest

from fedrx.errors import ConfigError
from fedrx.medrx.synth.config import MIN_PATIENTS_PER_HOSPITAL, SynthConfig


def _small(**kw) -> SynthConfig:
    base = {"hospitals": 3, "patients": 300, "seed": 7}
    base.update(kw)
    return SynthConfig(**base)


@pytest.mark.parametrize(
    ("kw", "needle"),
    [
        ({"hospitals": 0}, "hospitals"),
        ({"hospitals": 100}, "hospitals"),
        ({"hospitals": 5, "patients": 5 * MIN_PATIENTS_PER_HOSPITAL - 1}, "too few"),
        ({"seed": -1}, "seed"),
        ({"size_skew": -0.1}, "size_skew"),
        ({"case_mix_skew": 0.0}, "case_mix_skew"),
        ({"case_mix_skew": -1.0}, "case_mix_skew"),
        ({"prescribing_skew": 1.5}, "prescribing_skew"),
        ({"label_skew": float("nan")}, "label_skew"),
        ({"label_skew": float("inf")}, "label_skew"),
        ({"mean_visits": 0.5}, "mean_visits"),
        ({"max_visits": 0}, "max_visits"),
        ({"n_clusters": 1}, "n_clusters"),
        ({"n_labels": 3}, "n_labels"),
        ({"patients": 300.0}, "patients"),
        ({"missing_tables": 1.5}, "missing_tables"),
        ({"missing_tables": ((3, "PROCEDURES_ICD"),)}, "out of range"),
        ({"missing_tables": (("hosp09", "PROCEDURES_ICD"),)}, "hosp09"),
        ({"missing_tables": ((0, "ADMISSIONS"),)}, "ADMISSIONS"),
        ({"missing_tables": ((0,),)}, "pair"),
        ({"missing_mode": "gone"}, "missing_mode"),
    ],
)
def test_config_validation(kw: dict, needle: str) -> None:
    with pytest.raises(ConfigError, match=needle):
        _small(**kw).validate()


def test_valid_config_passes() -> None:
    SynthConfig().validate()
    _small(missing_tables=((0, "procedures_icd"), ("hosp02", "DIAGNOSES_ICD.csv"))).validate()
    _small(missing_tables=0.5, case_mix_skew=float("inf")).validate()
