"""The built-in synthetic code catalogue (fedrx.medrx.synth.builtin): synth with no demo data,
read end to end by the real readers, and the demo catalogue's output left as it was."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest
from synth_demo import DEMO

from fedrx.errors import ConfigError, DataError
from fedrx.medrx.datasets import load_dataset
from fedrx.medrx.metrics import load_ddi_pairs
from fedrx.medrx.mimic import load_drug_mapping, read_mimic3
from fedrx.medrx.public_vocab import lexicon_atc3
from fedrx.medrx.synth.builtin import RXCUI_BASE, builtin_sources
from fedrx.medrx.synth.config import SynthConfig, SynthSummary
from fedrx.medrx.synth.writer import generate

FEDRX = [sys.executable, "-m", "fedrx.cli"]
DX = re.compile(r"^(\d{3}|V\d{2})\d{0,2}$")
PX = re.compile(r"^\d{2}\d{1,2}$")


def _small(**kw) -> SynthConfig:
    base = {"hospitals": 3, "patients": 150, "seed": 7, "catalogue": "builtin"}
    base.update(kw)
    return SynthConfig(**base)


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file()}


@pytest.fixture()
def no_data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """FEDRX_DATA_ROOT at an empty folder: nothing shared can be found."""
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.setenv("FEDRX_DATA_ROOT", str(empty))
    return empty


@pytest.fixture(scope="module")
def cohort(tmp_path_factory) -> tuple[Path, SynthSummary]:
    out = tmp_path_factory.mktemp("builtin") / "out"
    return out, generate(_small(), out)


def test_deterministic_for_seed(tmp_path: Path) -> None:
    generate(_small(), tmp_path / "a")
    generate(_small(), tmp_path / "b")
    a, b = _files(tmp_path / "a"), _files(tmp_path / "b")
    assert a == b
    generate(_small(seed=8), tmp_path / "c")
    c = _files(tmp_path / "c")
    assert set(a) == set(c)
    for name in ("mappings/ndc2rxnorm_mapping.txt", "mappings/ndc2atc_level4.csv.gz",
                 "mappings/ddi_atc3_pairs_gamenet.csv", "hosp01/DIAGNOSES_ICD.csv",
                 "hosp01/PROCEDURES_ICD.csv", "hosp01/PRESCRIPTIONS.csv"):
        assert a[name] != c[name], name
    s7, s8 = builtin_sources(7, 300, 100, 100), builtin_sources(8, 300, 100, 100)
    assert s7 == builtin_sources(7, 300, 100, 100)
    assert s7.dx_codes != s8.dx_codes and s7.px_codes != s8.px_codes


def test_codes_are_shaped_and_marked_synthetic() -> None:
    src = builtin_sources(3, 300, 100, 40)
    assert len(src.dx_codes) == len(set(src.dx_codes)) == 300
    assert all(DX.match(c) for c in src.dx_codes), src.dx_codes
    for c in src.dx_codes:
        assert 1 <= int(c[1:3]) <= 91 if c[0] == "V" else 1 <= int(c[:3]) <= 999
    assert any(c.startswith("V") for c in src.dx_codes)
    assert {len(c) for c in src.dx_codes if c[0] != "V"} == {3, 4, 5}
    assert all(t.endswith("(synthetic)") for t in src.dx_titles)
    assert len(src.px_codes) == len(set(src.px_codes)) == 100
    assert all(PX.match(c) for c in src.px_codes), src.px_codes
    assert len(src.labels) == 40 and set(src.labels) <= lexicon_atc3()
    assert list(src.labels) == sorted(src.labels)
    ndcs = [d.ndc for ds in src.drugs for d in ds]
    assert len(ndcs) == len(set(ndcs))
    for lab, ds in zip(src.labels, src.drugs, strict=True):
        assert 1 <= len(ds) <= 3
        for d in ds:
            assert len(d.ndc) == 11 and d.ndc.isdigit() and d.atc4[:4] == lab
            assert int(d.rxcui) >= RXCUI_BASE and len(d.meta) == 13 and d.meta[6] == d.ndc
    # More labels asked than the lexicon has: all of its classes.
    assert set(builtin_sources(3, 300, 100, 1000).labels) == lexicon_atc3()


def test_mappings_parse_with_the_real_readers(cohort: tuple[Path, SynthSummary]) -> None:
    out, summary = cohort
    assert summary.catalogue == "builtin"
    mapping = load_drug_mapping(out / "mappings")
    assert len(mapping.ndc_to_rxcui) == sum(len(ds) for ds in
                                            builtin_sources(7, 300, 100, 100).drugs)
    pairs = load_ddi_pairs(out / "mappings" / "ddi_atc3_pairs_gamenet.csv")
    assert pairs and all(p <= set(summary.labels) for p in pairs)
    used: set[str] = set()
    for h in summary.hospitals:
        labels: dict[str, set[str]] = defaultdict(set)
        for line in (out / h / "PRESCRIPTIONS.csv").read_text().splitlines()[1:]:
            cols = line.split(",")
            ndc, hadm = cols[12], cols[2]
            if ndc != "0":
                atc3 = mapping.atc3(ndc)
                assert atc3 in summary.labels, ndc  # every written NDC maps
                labels[hadm].add(atc3)
        assert len(labels) == summary.visits[h]  # every visit has a mapped drug
        used |= set().union(*labels.values())
        cohort_h = read_mimic3(out / h, mappings_dir=out / "mappings", hospital=h)
        assert len(cohort_h.patients) == summary.patients[h]
        assert cohort_h.n_visits == summary.visits[h]
        assert cohort_h.stats.get("prescription_rows_unmapped", 0) == 0
        for p in cohort_h.patients:
            for v in p.visits:
                assert all(DX.match(c) for c in v.diagnoses)
                assert all(PX.match(c) for c in v.procedures)
    assert len(used) > 50
    whole = load_dataset(str(out))
    assert len(whole.patients) == summary.total_patients
    assert whole.hospitals == summary.hospitals
    assert 7 <= summary.mean_diagnoses <= 15
    assert 1.5 <= summary.mean_procedures <= 5
    assert 8 <= summary.mean_labels <= 20
    meta = json.loads((out / "SYNTH.json").read_text())
    assert meta["catalogue"].startswith("builtin: synthetic") and "not real" in meta["catalogue"]
    assert "catalogue" not in meta["config"] and "catalogue" not in meta["summary"]


def test_auto_falls_back_without_demo(tmp_path: Path, no_data: Path) -> None:
    s = generate(_small(catalogue="auto"), tmp_path / "auto")
    assert s.catalogue == "builtin"
    generate(_small(), tmp_path / "builtin")
    assert _files(tmp_path / "auto") == _files(tmp_path / "builtin")
    with pytest.raises(DataError, match="FEDRX_DATA_ROOT"):
        generate(_small(catalogue="demo"), tmp_path / "demo")
    assert not (tmp_path / "demo").exists()


def test_bad_catalogue_choices(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="catalogue must be one of"):
        generate(_small(catalogue="real"), tmp_path / "x")
    with pytest.raises(ConfigError, match="mappings folder"):
        generate(_small(), tmp_path / "y", mappings_dir=tmp_path)
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()


@pytest.mark.skipif(DEMO is None, reason="shared mimic3-demo data not found")
def test_demo_found_keeps_demo_output(tmp_path: Path) -> None:
    cfg = {"hospitals": 2, "patients": 60, "seed": 5}
    s = generate(SynthConfig(**cfg), tmp_path / "auto")
    assert s.catalogue == "demo"
    generate(SynthConfig(**cfg, catalogue="demo"), tmp_path / "demo")
    auto = _files(tmp_path / "auto")
    assert auto == _files(tmp_path / "demo")
    assert "catalogue" not in json.loads(auto["SYNTH.json"])
    generate(SynthConfig(**cfg, catalogue="builtin"), tmp_path / "builtin")
    assert _files(tmp_path / "builtin")["hosp01/DIAGNOSES_ICD.csv"] != auto[
        "hosp01/DIAGNOSES_ICD.csv"]


def _cli(*args: str, root: Path, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "FEDRX_DATA_ROOT": str(root), "COLUMNS": "120"}
    return subprocess.run([*FEDRX, *args], capture_output=True, text=True, cwd=cwd, env=env,
                          timeout=600)


def test_cli_synth_then_simulate_with_no_data(tmp_path: Path) -> None:
    """A fresh machine: nothing under FEDRX_DATA_ROOT; synth falls back (one line saying
    so, on stderr) and a federation runs on what it wrote."""
    empty = tmp_path / "empty"
    empty.mkdir()
    proc = _cli("data", "synth", "--out", "d", "--hospitals", "3", "--patients", "150",
                "--seed", "1", root=empty, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    notes = [ln for ln in proc.stderr.splitlines() if "catalogue" in ln]
    assert len(notes) == 1, proc.stderr
    assert notes[0].startswith("no MIMIC-III demo found: using fedrx's built-in synthetic")
    assert "not real" in notes[0] and "catalogue" not in proc.stdout
    proc = _cli("simulate", "--data", "d", "--rounds", "2", "--out", "run", root=empty,
                cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    res = json.loads((tmp_path / "run" / "results.json").read_text())
    assert [r["status"] for r in res["rounds"]] == ["completed", "completed"]
    assert sorted(res["hospitals"]) == ["hosp01", "hosp02", "hosp03"]
    assert res["final"]["global"]["jaccard"] > 0
    assert res["final"]["global"]["ddi_rate"] > 0  # the synthetic DDI graph was found
    proc = _cli("data", "synth", "--out", "d2", "--catalogue", "demo", root=empty,
                cwd=tmp_path)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "FEDRX_DATA_ROOT" in lines[0], proc.stderr
