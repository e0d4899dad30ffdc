"""Tests of the synthetic MIMIC-III-layout generator (fedrx.medrx.synth.writer)."""

from __future__ import annotations

import ast
import csv
import gzip
import itertools
import json
from collections import Counter, defaultdict
from pathlib import Path

import pytest
from synth_demo import DEMO, needs_data, small_config

from fedrx.errors import ConfigError, DataError
from fedrx.medrx.synth.config import MIN_PATIENTS_PER_HOSPITAL, SynthSummary
from fedrx.medrx.synth.writer import generate

TABLES = ("ADMISSIONS", "DIAGNOSES_ICD", "PROCEDURES_ICD", "PRESCRIPTIONS")


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, encoding="utf-8", newline="") as fh:
        return list(csv.DictReader(fh))


def _header(path: Path) -> list[str]:
    with open(path, encoding="utf-8", newline="") as fh:
        return next(csv.reader(fh))


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file()}


def _label_map(mdir: Path) -> dict[str, str]:
    """NDC -> ATC-3 through the written mappings, following the GAMENet recipe."""
    ndc2rx = ast.literal_eval((mdir / "ndc2rxnorm_mapping.txt").read_text(encoding="utf-8"))
    assert isinstance(ndc2rx, dict)
    rx2atc4: dict[str, str] = {}
    with gzip.open(mdir / "ndc2atc_level4.csv.gz", "rt", encoding="utf-8", newline="") as fh:
        reader = csv.DictReader(fh)
        assert reader.fieldnames == ["YEAR", "MONTH", "NDC", "RXCUI", "ATC5"]
        for r in reader:
            rx2atc4.setdefault(r["RXCUI"], r["ATC5"])
    return {ndc: rx2atc4[rx][:4] for ndc, rx in ndc2rx.items() if rx in rx2atc4}


def _visit_labels(out: Path, hosp: str, ndc2atc3: dict[str, str]) -> dict[str, set[str]]:
    labels: dict[str, set[str]] = defaultdict(set)
    for r in _rows(out / hosp / "PRESCRIPTIONS.csv"):
        if r["ndc"] != "0":
            labels[r["hadm_id"]].add(ndc2atc3[r["ndc"]])
    return labels


def _label_dist(out: Path, hosp: str, ndc2atc3: dict[str, str]) -> Counter:
    c: Counter = Counter()
    for labs in _visit_labels(out, hosp, ndc2atc3).values():
        c.update(labs)
    return c


def _mean_pairwise_tv(dists: list[Counter]) -> float:
    tvs = []
    for a, b in itertools.combinations(dists, 2):
        na, nb = sum(a.values()), sum(b.values())
        keys = set(a) | set(b)
        tvs.append(0.5 * sum(abs(a[k] / na - b[k] / nb) for k in keys))
    return sum(tvs) / len(tvs)


@pytest.fixture(scope="module")
def small(tmp_path_factory) -> tuple[Path, SynthSummary]:
    if DEMO is None:
        pytest.skip("shared mimic3-demo data not found")
    out = tmp_path_factory.mktemp("synth") / "out"
    return out, generate(small_config(), out)


def test_generate_validates_before_writing(tmp_path: Path) -> None:
    out = tmp_path / "out"
    with pytest.raises(ConfigError):
        generate(small_config(hospitals=0), out)
    assert not out.exists()


# --------------------------------------------------------------------------- output


@needs_data
def test_out_dir_must_be_empty(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "stale.txt").write_text("x")
    with pytest.raises(DataError, match="not empty"):
        generate(small_config(), out)
    summary = generate(small_config(), out, overwrite=True)
    assert not (out / "stale.txt").exists()
    assert summary.out_dir == out
    (tmp_path / "file").write_text("x")
    with pytest.raises(DataError):
        generate(small_config(), tmp_path / "file", overwrite=True)


@needs_data
def test_deterministic_for_seed(tmp_path: Path) -> None:
    cfg = small_config(patients=120, missing_tables=0.5)
    generate(cfg, tmp_path / "a")
    generate(cfg, tmp_path / "b")
    a, b = _files(tmp_path / "a"), _files(tmp_path / "b")
    assert a == b
    generate(small_config(patients=120, missing_tables=0.5, seed=8), tmp_path / "c")
    c = _files(tmp_path / "c")
    for name in ("hosp01/DIAGNOSES_ICD.csv", "hosp01/PRESCRIPTIONS.csv", "hosp01/ADMISSIONS.csv"):
        assert a[name] != c[name]


@needs_data
def test_layout_and_headers(small: tuple[Path, SynthSummary]) -> None:
    out, summary = small
    assert DEMO is not None
    assert summary.hospitals == ["hosp01", "hosp02", "hosp03"]
    assert sorted(p.name for p in out.iterdir()) == [
        "SYNTH.json", "hosp01", "hosp02", "hosp03", "mappings"]
    for h in summary.hospitals:
        for t in TABLES:
            assert _header(out / h / f"{t}.csv") == _header(DEMO / f"{t}.csv"), (h, t)
    meta = json.loads((out / "SYNTH.json").read_text())
    assert meta["config"]["patients"] == 300
    assert meta["summary"]["patients"] == summary.patients
    assert meta["summary"]["visits"] == summary.visits
    assert summary.total_patients == 300


@needs_data
def test_ids_unique_and_consistent(small: tuple[Path, SynthSummary]) -> None:
    out, summary = small
    subjects: dict[str, str] = {}
    hadm_owner: dict[str, str] = {}
    row_ids: dict[str, set[str]] = defaultdict(set)
    for h in summary.hospitals:
        adm = _rows(out / h / "ADMISSIONS.csv")
        assert len({r["subject_id"] for r in adm}) == summary.patients[h]
        assert len(adm) == summary.visits[h]
        for r in adm:
            assert subjects.setdefault(r["subject_id"], h) == h  # one hospital per patient
            assert r["hadm_id"] not in hadm_owner
            hadm_owner[r["hadm_id"]] = r["subject_id"]
        for t in TABLES:
            for r in _rows(out / h / f"{t}.csv"):
                assert r["row_id"] not in row_ids[t]
                row_ids[t].add(r["row_id"])
                assert hadm_owner[r["hadm_id"]] == r["subject_id"]


@needs_data
def test_times_ordered_and_codes_real(small: tuple[Path, SynthSummary]) -> None:
    out, summary = small
    assert DEMO is not None
    dx_dict = {r["icd9_code"] for r in _rows(DEMO / "D_ICD_DIAGNOSES.csv")}
    px_dict = {r["icd9_code"] for r in _rows(DEMO / "D_ICD_PROCEDURES.csv")}
    for h in summary.hospitals:
        adm = _rows(out / h / "ADMISSIONS.csv")
        by_subject: dict[str, list[dict[str, str]]] = defaultdict(list)
        span = {}
        for r in adm:
            assert len(r["admittime"]) == 19 and r["admittime"] < r["dischtime"]
            assert "2100" <= r["admittime"][:4] < "2300"
            by_subject[r["subject_id"]].append(r)
            span[r["hadm_id"]] = (r["admittime"][:10], r["dischtime"][:10])
        for visits in by_subject.values():
            visits.sort(key=lambda r: r["admittime"])
            for a, b in itertools.pairwise(visits):
                assert a["dischtime"] < b["admittime"]  # no overlap
            for r in visits[:-1]:
                assert r["deathtime"] == "" and r["hospital_expire_flag"] == "0"
        counts: dict[str, Counter] = {}
        for t, vocab in (("DIAGNOSES_ICD", dx_dict), ("PROCEDURES_ICD", px_dict)):
            rows = _rows(out / h / f"{t}.csv")
            counts[t] = Counter(r["hadm_id"] for r in rows)
            seqs: dict[str, list[int]] = defaultdict(list)
            for r in rows:
                assert r["icd9_code"] in vocab and "." not in r["icd9_code"]
                seqs[r["hadm_id"]].append(int(r["seq_num"]))
            assert all(s == list(range(1, len(s) + 1)) for s in seqs.values())
        assert set(counts["DIAGNOSES_ICD"]) == set(span)
        assert set(counts["PROCEDURES_ICD"]) == set(span)
        for r in _rows(out / h / "PRESCRIPTIONS.csv"):
            lo, hi = span[r["hadm_id"]]
            assert lo <= r["startdate"][:10] <= hi
            assert r["startdate"] <= r["enddate"]
            assert r["ndc"] == "0" or (len(r["ndc"]) == 11 and r["ndc"].isdigit())


@needs_data
def test_ndcs_map_to_written_vocabulary(small: tuple[Path, SynthSummary]) -> None:
    out, summary = small
    assert DEMO is not None
    mdir = out / "mappings"
    ndc2atc3 = _label_map(mdir)
    vocab = {r["atc3"] for r in _rows(mdir / "atc3_label_vocab.csv")}
    real_ndc2rx = ast.literal_eval(
        (DEMO / "mappings" / "ndc2rxnorm_mapping.txt").read_text(encoding="utf-8"))
    written = ast.literal_eval((mdir / "ndc2rxnorm_mapping.txt").read_text(encoding="utf-8"))
    assert all(real_ndc2rx[k] == v for k, v in written.items())  # real NDC -> RxCUI pairs
    with gzip.open(mdir / "ndc2atc_level4.csv.gz", "rt", encoding="utf-8") as fh:
        for r in csv.DictReader(fh):
            assert tuple(len(p) for p in r["NDC"].split("-")) in {(4, 4, 2), (5, 3, 2),
                                                                  (5, 4, 1)}
    ddi = _rows(mdir / "ddi_atc3_pairs_gamenet.csv")
    assert ddi and set(ddi[0]) == {"atc3_a", "atc3_b"}
    used: set[str] = set()
    for h in summary.hospitals:
        labels = _visit_labels(out, h, ndc2atc3)
        assert len(labels) == summary.visits[h]  # every visit has a mapped drug
        for labs in labels.values():
            used |= labs
    assert used <= vocab
    assert used <= set(summary.labels)
    assert len(used) > 50


@needs_data
def test_realistic_volumes_and_learnable_signal(small: tuple[Path, SynthSummary]) -> None:
    out, summary = small
    assert 7 <= summary.mean_diagnoses <= 15
    assert 1.5 <= summary.mean_procedures <= 5
    assert 8 <= summary.mean_labels <= 20
    ndc2atc3 = _label_map(out / "mappings")
    jac = []
    for h in summary.hospitals:
        labels = _visit_labels(out, h, ndc2atc3)
        by_subject: dict[str, list[tuple[str, str]]] = defaultdict(list)
        for r in _rows(out / h / "ADMISSIONS.csv"):
            by_subject[r["subject_id"]].append((r["admittime"], r["hadm_id"]))
        for visits in by_subject.values():
            visits.sort()
            for (_, a), (_, b) in itertools.pairwise(visits):
                jac.append(len(labels[a] & labels[b]) / len(labels[a] | labels[b]))
    copy_last = sum(jac) / len(jac)
    assert 0.2 <= copy_last <= 0.5, copy_last  # moderate: beatable by a learned model


# --------------------------------------------------------------------------- skew knobs


@needs_data
def test_size_skew(tmp_path: Path) -> None:
    eq = generate(small_config(size_skew=0.0, patients=301), tmp_path / "eq")
    assert max(eq.patients.values()) - min(eq.patients.values()) <= 1
    sk = generate(small_config(size_skew=2.0), tmp_path / "sk")
    sizes = [sk.patients[h] for h in sk.hospitals]
    assert sizes == sorted(sizes, reverse=True) and sizes[0] > 3 * sizes[-1]
    assert min(sizes) >= MIN_PATIENTS_PER_HOSPITAL and sum(sizes) == 300


@needs_data
def test_case_mix_skew_makes_hospitals_differ(tmp_path: Path) -> None:
    tv = {}
    for skew in (0.05, 100.0):
        out = tmp_path / f"cm{skew}"
        s = generate(small_config(size_skew=0.0, case_mix_skew=skew, label_skew=0.0,
                            prescribing_skew=0.0), out)
        m = _label_map(out / "mappings")
        tv[skew] = _mean_pairwise_tv([_label_dist(out, h, m) for h in s.hospitals])
    assert tv[0.05] > tv[100.0] + 0.1, tv


@needs_data
def test_label_skew_and_prescribing_skew(tmp_path: Path) -> None:
    common = {"size_skew": 0.0, "case_mix_skew": float("inf")}
    tv = {}
    for ls in (0.0, 2.0):
        out = tmp_path / f"ls{ls}"
        s = generate(small_config(label_skew=ls, prescribing_skew=0.0, **common), out)
        m = _label_map(out / "mappings")
        tv[ls] = _mean_pairwise_tv([_label_dist(out, h, m) for h in s.hospitals])
    assert tv[2.0] > tv[0.0] + 0.05, tv
    distinct = {}
    for ps in (0.0, 1.0):
        out = tmp_path / f"ps{ps}"
        s = generate(small_config(label_skew=0.0, prescribing_skew=ps, **common), out)
        m = _label_map(out / "mappings")
        distinct[ps] = sum(len(_label_dist(out, h, m)) for h in s.hospitals)
    assert distinct[1.0] < distinct[0.0] - 20, distinct  # substituted classes vanish


@needs_data
def test_missing_tables(tmp_path: Path) -> None:
    s = generate(small_config(missing_tables=((1, "PROCEDURES_ICD"), ("hosp03", "diagnoses_icd"))),
                 tmp_path / "hdr")
    out = tmp_path / "hdr"
    assert s.missing_tables == {"hosp02": ["PROCEDURES_ICD"], "hosp03": ["DIAGNOSES_ICD"]}
    assert (out / "hosp02" / "PROCEDURES_ICD.csv").read_text().count("\n") == 1
    assert (out / "hosp03" / "DIAGNOSES_ICD.csv").read_text().count("\n") == 1
    assert len(_rows(out / "hosp01" / "PROCEDURES_ICD.csv")) > 0
    assert len(_rows(out / "hosp03" / "PROCEDURES_ICD.csv")) > 0

    s = generate(small_config(missing_tables=((0, "PROCEDURES_ICD"),), missing_mode="absent"),
                 tmp_path / "abs")
    assert not (tmp_path / "abs" / "hosp01" / "PROCEDURES_ICD.csv").exists()
    assert (tmp_path / "abs" / "hosp02" / "PROCEDURES_ICD.csv").exists()

    s = generate(small_config(missing_tables=1.0), tmp_path / "all")
    assert s.missing_tables == {h: ["PROCEDURES_ICD"] for h in s.hospitals}
    s = generate(small_config(missing_tables=0.0), tmp_path / "none")
    assert s.missing_tables == {}


# --------------------------------------------------------------------------- readers


@needs_data
def test_readers_see_what_was_written(small: tuple[Path, SynthSummary]) -> None:
    mimic = pytest.importorskip("fedrx.medrx.mimic")
    datasets = pytest.importorskip("fedrx.medrx.datasets")
    if not hasattr(mimic, "read_mimic3") or not hasattr(datasets, "load_dataset"):
        pytest.skip("MIMIC-III reader not available yet")
    out, summary = small
    for h in summary.hospitals:
        cohort = mimic.read_mimic3(out / h, mappings_dir=out / "mappings", hospital=h)
        assert len(cohort.patients) == summary.patients[h]
        assert cohort.n_visits == summary.visits[h]
        assert {p.hospital for p in cohort.patients} == {h}
    cohort = datasets.load_dataset(str(out))
    assert len(cohort.patients) == summary.total_patients
    assert cohort.n_visits == summary.total_visits
    assert cohort.hospitals == summary.hospitals


@needs_data
def test_reader_handles_missing_procedures(tmp_path: Path) -> None:
    mimic = pytest.importorskip("fedrx.medrx.mimic")
    if not hasattr(mimic, "read_mimic3"):
        pytest.skip("MIMIC-III reader not available yet")
    for mode in ("header", "absent"):
        out = tmp_path / mode
        s = generate(small_config(missing_tables=((0, "PROCEDURES_ICD"),), missing_mode=mode), out)
        cohort = mimic.read_mimic3(out / "hosp01", mappings_dir=out / "mappings")
        assert cohort.n_visits == s.visits["hosp01"]
        assert all(not v.procedures for p in cohort.patients for v in p.visits)
