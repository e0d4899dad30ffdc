"""Issue 13 acceptance, fast: a hospital node's ``[data]`` (its OWN export) mounted with
every bad input, through the node's load path (:func:`~fedrx.nodes.config.load_node_config`
+ ``HospitalNode.build_party``), ``fedrx node run`` and, where that is the user's path,
``fedrx data inspect``: each ends as ONE ``fedrx: error: ...`` line with exit 2 and nothing
written in the node's out folder.

* an export of another layout than ``format`` says; an unknown format;
* a ``site`` on a single-site export, a ``site`` the eICU / OMOP export does not hold, a
  multi-site eICU export without ``site``;
* an OMOP export without ``drug_exposure``;
* an export where no drug maps to ATC-3 (MIMIC-III, MIMIC-IV, OMOP: every NDC replaced), a
  mappings folder without the mapping files;
* a missing ``[data]`` path or table, a path that does not exist, a path at the folder of
  EVERY hospital's exports;
* no demo data at all (``FEDRX_DATA_ROOT`` empty): the demo makes a synthetic federation,
  each node gets only its own export folder, the aggregator none.

The task-level attacks are in ``tests/test_deploy_task.py`` (whose helpers this file uses).
"""

from __future__ import annotations

import csv
import gzip
import json
import shutil
from pathlib import Path

import pytest
from test_cli import run
from test_deploy_task import assert_nothing_written, assert_refused, demo_spec, node_toml

from fedrx.config import load_toml
from fedrx.errors import ConfigError, DataError
from fedrx.nodes.config import load_node_config
from fedrx.nodes.launcher import DemoSpec, Setup, prepare_exports, write_setup


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> Setup:
    """A 2-hospital synthetic deployment (needs no shared data)."""
    return write_setup(demo_spec(tmp_path_factory.mktemp("deploy-data") / "fed"))


# ---------------------------------------------------------------- 4. [data] errors


def _build_party(cfg_path: Path):
    from fedrx.nodes.hospital import HospitalNode

    cfg, data, privacy = load_node_config(cfg_path)
    return HospitalNode(cfg, data, privacy).build_party()


def _data_refused(setup: Setup, dest: Path, data: dict, fragment: str) -> None:
    """The node's load path (in process) and ``fedrx node run`` refuse ``data``."""
    cfg = node_toml(setup, "h1", dest, data=data)
    with pytest.raises(DataError, match=None) as ei:
        _build_party(cfg)
    assert fragment in str(ei.value) and "\n" not in str(ei.value)
    assert_refused(run("node", "run", "--config", str(cfg)), fragment)
    assert_nothing_written(dest)


@pytest.mark.parametrize("fmt", ["eicu", "omop", "mimic4", "jsonl"])
def test_export_of_another_layout_than_format_says(setup, tmp_path, fmt):
    _data_refused(setup, tmp_path, {"format": fmt},
                  f"[data] format is {fmt!r} but the export is in the mimic3 layout")


def test_format_not_known(setup, tmp_path):
    cfg = node_toml(setup, "h1", tmp_path, data={"format": "fhir"})
    assert_refused(run("node", "run", "--config", str(cfg)), "[data] format must be one of")


def test_site_on_a_single_site_export(setup, tmp_path):
    _data_refused(setup, tmp_path, {"site": "73"}, "[data] site is only for multi-site")


def test_site_that_the_eicu_export_does_not_hold(setup, tmp_path, eicu_demo):
    _data_refused(setup, tmp_path, {"path": str(eicu_demo), "format": "eicu", "site": "99999",
                                    "mappings": None}, "no site '99999' in this eICU export")


def test_site_that_the_omop_export_does_not_hold(setup, tmp_path, omop_demo, mappings_dir):
    _data_refused(setup, tmp_path, {"path": str(omop_demo), "format": "omop", "site": "999",
                                    "mappings": str(mappings_dir)},
                  "OMOP site '999' not found in")


def test_multi_site_eicu_export_without_site(setup, tmp_path, eicu_demo):
    _data_refused(setup, tmp_path, {"path": str(eicu_demo), "mappings": None},
                  "set [data] site to this hospital's hospitalid")


@pytest.fixture(scope="module")
def omop_without_drugs(omop_demo: Path, tmp_path_factory) -> Path:
    dest = tmp_path_factory.mktemp("omop") / "omop-no-drug"
    shutil.copytree(omop_demo, dest, ignore=shutil.ignore_patterns("drug_exposure*"))
    return dest


def test_omop_export_without_drug_exposure(setup, tmp_path, omop_without_drugs, mappings_dir):
    fragment = "OMOP export without drug_exposure"
    _data_refused(setup, tmp_path, {"path": str(omop_without_drugs), "format": "omop",
                                    "mappings": str(mappings_dir)}, fragment)
    assert_refused(run("data", "inspect", str(omop_without_drugs)), fragment)


def _replace_ndcs(table: Path, column: str) -> None:
    """Every NDC of ``table`` (.csv or .csv.gz) replaced by one no mapping file holds."""
    opener = gzip.open if table.suffix == ".gz" else open
    with opener(table, "rt", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert rows and column in rows[0]
    with opener(table, "wt", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        for r in rows:
            w.writerow({**r, column: "99999999999"})


@pytest.fixture(scope="module")
def export_without_mapped_drugs(setup, tmp_path_factory) -> Path:
    """h1's (MIMIC-III layout) export with every NDC unmappable."""
    dest = tmp_path_factory.mktemp("nomap") / "h1"
    shutil.copytree(setup.out / "exports" / "h1", dest)
    _replace_ndcs(dest / "PRESCRIPTIONS.csv", "ndc")
    return dest


def test_export_where_no_drug_maps_to_atc3(setup, tmp_path, export_without_mapped_drugs):
    _data_refused(setup, tmp_path, {"path": str(export_without_mapped_drugs)},
                  "no admission has diagnoses and mappable prescriptions")


def test_inspect_export_where_no_drug_maps_to_atc3(setup, export_without_mapped_drugs):
    proc = run("data", "inspect", str(export_without_mapped_drugs), "--mappings",
               str(setup.out / "exports" / "mappings"))
    assert_refused(proc, "no admission has diagnoses and mappable prescriptions")


@pytest.mark.parametrize("demo, table, column, fragment", [
    ("mimic4_demo", "hosp/prescriptions.csv.gz", "ndc", "none of 18087 NDC rows maps to ATC-3"),
    ("omop_demo", "drug_exposure.csv", "drug_source_value",
     "no drug maps to ATC-3 (18229 rows, 18229 with an unmapped NDC"),
])
def test_mimic4_or_omop_export_where_no_drug_maps_to_atc3(setup, tmp_path, request,
                                                          mappings_dir, demo, table, column,
                                                          fragment):
    src = tmp_path / demo
    shutil.copytree(request.getfixturevalue(demo), src)
    _replace_ndcs(src / table, column)
    _data_refused(setup, tmp_path, {"path": str(src), "mappings": str(mappings_dir)}, fragment)
    assert_refused(run("data", "inspect", str(src), "--mappings", str(mappings_dir)), fragment)


def test_mappings_folder_without_the_mapping_files(setup, tmp_path):
    (tmp_path / "maps").mkdir()
    fragment = "drug mapping ndc2rxnorm_mapping.txt not found"
    _data_refused(setup, tmp_path, {"mappings": str(tmp_path / "maps")}, fragment)
    assert_refused(run("data", "inspect", str(setup.out / "exports" / "h1"), "--mappings",
                       str(tmp_path / "maps")), fragment)


@pytest.mark.parametrize("data, drop, fragment", [
    ({"path": None}, (), "[data] path (this hospital's own export) is required"),
    ({}, ("data",), "missing [data] table"),
])
def test_missing_data_path(setup, tmp_path, data, drop, fragment):
    cfg = node_toml(setup, "h1", tmp_path, data=data, drop=drop)
    with pytest.raises(ConfigError, match=None) as ei:
        load_node_config(cfg)
    assert fragment in str(ei.value)
    assert_refused(run("node", "run", "--config", str(cfg)), fragment)
    assert_nothing_written(tmp_path)


def test_data_path_at_the_whole_federations_exports_is_refused(setup, tmp_path):
    """A node pointed at the folder holding EVERY hospital's export reads none of them."""
    _data_refused(setup, tmp_path, {"path": str(setup.out / "exports")},
                  "not an export fedrx can read")


def test_data_path_that_does_not_exist(setup, tmp_path):
    _data_refused(setup, tmp_path, {"path": str(tmp_path / "nowhere")}, "export not found")
    assert_refused(run("data", "inspect", str(tmp_path / "nowhere")), "dataset not found")


# -------------------------------------------------------------- 6. no demo data


def test_no_demo_data_makes_a_synthetic_federation_one_folder_per_node(tmp_path, monkeypatch):
    empty = tmp_path / "no-data"
    empty.mkdir()
    monkeypatch.setenv("FEDRX_DATA_ROOT", str(empty))
    spec = DemoSpec(out=tmp_path / "demo", data="auto", hospitals=3, patients=150,
                    protection="none", hidden=16, rounds=1)
    root = tmp_path / "demo" / "exports"
    ex = prepare_exports(spec, root)
    assert "no demo data found" in ex.note and "builtin" in ex.note, ex.note
    assert len(ex.hospitals) == 3
    assert sorted(p.name for p in root.iterdir() if p.is_dir()) == sorted(ex.hospitals) + \
        ["mappings"]
    assert ex.mappings == root / "mappings"
    summary = json.loads((root / "SYNTH.json").read_text())
    assert summary["generator"] == "fedrx.medrx.synth"
    s = write_setup(spec)
    assert s.hospitals == ex.hospitals
    agg = load_toml(s.aggregator_config)
    assert set(agg) == {"aggregator"}
    assert not [v for v in agg["aggregator"].values() if str(root) in str(v)]
    for h in s.hospitals:
        doc = load_toml(s.node_configs[h])
        assert Path(doc["data"]["path"]) == root.resolve() / h
        assert doc["data"]["mappings"] == str(root.resolve() / "mappings")  # public tables
        text = json.dumps(doc)
        assert not [g for g in s.hospitals if g != h and str(root.resolve() / g) in text]
        cfg, data, _ = load_node_config(s.node_configs[h])
        assert data.path == str(root.resolve() / h)
    assert not list(empty.iterdir())
