"""`fedrx data split`: per-hospital exports of the open demos, in the source's own layout."""

from __future__ import annotations

import csv
import gzip
import hashlib
import json
import shutil
from collections import Counter
from pathlib import Path

import pytest
from test_cli import assert_one_line_error, run

from fedrx.errors import ConfigError, DataError
from fedrx.medrx import export_split
from fedrx.medrx.csv_records import read_records
from fedrx.medrx.datasets import load_dataset
from fedrx.medrx.export_split import MANIFEST, split_export

# name -> (--by, table listing the patients, patient column, row key column)
DEMOS = {
    "mimic3-demo": ("random", "PATIENTS.csv", "subject_id", "subject_id"),
    "mimic4-demo": ("random", "hosp/patients.csv.gz", "subject_id", "subject_id"),
    "omop-demo": ("random", "person.csv", "person_id", "person_id"),
    "eicu-demo": ("site", "patient.csv.gz", "uniquepid", "patientunitstayid"),
}


def rows(path: Path) -> list[dict[str, str]]:
    """The rows of a table read independently of the code under test."""
    raw = gzip.open(path, "rt", newline="") if path.name.endswith(".gz") else open(
        path, newline="")
    with raw as fh:
        return list(csv.DictReader(fh))


def header_bytes(path: Path) -> bytes:
    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "rb") as fh:
        return fh.readline()


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def splits(data_root: Path, tmp_path_factory) -> dict[str, tuple[Path, Path, dict]]:
    base = tmp_path_factory.mktemp("splits")
    done = {}
    for name, (by, *_rest) in DEMOS.items():
        src = data_root / name
        if not src.is_dir():
            continue
        out = base / name
        done[name] = (src, out, split_export(src, out, by=by, hospitals=3, seed=0))
    return done


def get(splits, name):
    if name not in splits:
        pytest.skip(f"{name} not found")
    return splits[name]


@pytest.mark.parametrize("name", list(DEMOS))
def test_manifest_and_hashes(splits, name):
    src, out, m = get(splits, name)
    assert json.loads((out / MANIFEST).read_text()) == m
    written = {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()}
    assert written - {MANIFEST} == set(m["files"])
    for rel, digest in m["files"].items():
        assert sha256(out / rel) == digest, rel
    expect = ["h1", "h2", "h3"] if DEMOS[name][0] == "random" else list(m["site_ids"])
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == sorted(expect)
    assert list(m["hospitals"]) == expect
    assert m["layout"] == name.split("-")[0] and m["method"] == DEMOS[name][0]
    assert "LICENSE.txt" in m["copied"]
    assert not any(n.startswith(("SHA256SUMS", "SOURCE")) for n in m["copied"])


@pytest.mark.parametrize("name", list(DEMOS))
def test_same_layout_headers_and_rows_add_up(splits, name):
    src, out, m = get(splits, name)
    tables = sorted(set(m["source_rows"]) | set(m["shared"]))
    for h in m["hospitals"]:
        have = sorted(p.relative_to(out / h).as_posix() for p in (out / h).rglob("*")
                      if p.is_file())
        assert have == sorted(tables + m["copied"])
    for rel in m["shared"]:
        for h in m["hospitals"]:
            assert (out / h / rel).read_bytes() == (src / rel).read_bytes()
    for rel, n_src in m["source_rows"].items():
        assert len(rows(src / rel)) == n_src
        got = 0
        for h, entry in m["hospitals"].items():
            assert header_bytes(out / h / rel) == header_bytes(src / rel), rel
            n = len(rows(out / h / rel))
            assert n == entry["tables"][rel]
            got += n
        assert got + m["rows_not_exported"][rel] == n_src, rel
        if m["method"] == "random":
            assert m["rows_not_exported"][rel] == 0
            # byte-faithful: the records of the exports are exactly the source's records
            src_records = Counter(t for t, _ in list(read_records(src / rel, None))[1:])
            out_records = Counter()
            for h in m["hospitals"]:
                out_records.update(t for t, _ in list(read_records(out / h / rel, None))[1:])
            assert out_records == src_records, rel


@pytest.mark.parametrize("name", list(DEMOS))
def test_patients_disjoint_and_complete(splits, name):
    src, out, m = get(splits, name)
    _by, ptable, pcol, key = DEMOS[name]
    seen: dict[str, str] = {}
    for h, entry in m["hospitals"].items():
        pids = {r[pcol] for r in rows(out / h / ptable)}
        assert len(pids) == entry["patients"] > 0
        for p in pids:
            assert p not in seen, f"patient {p} in {seen[p]} and {h}"
            seen[p] = h
        keys = {r[key] for r in rows(out / h / ptable)}
        for rel in m["source_rows"]:
            if "hospital" not in rel:
                assert {r[key] for r in rows(out / h / rel)} <= keys, rel
    if m["method"] == "random":
        assert set(seen) == {r[pcol] for r in rows(src / ptable)}
        assert sorted(e["patients"] for e in m["hospitals"].values()) in (
            [33, 33, 34], [34, 34, 34])


def test_eicu_sites(splits):
    src, out, m = get(splits, "eicu-demo")
    source = rows(src / "patient.csv.gz")
    sites_of: dict[str, set[str]] = {}
    for r in source:
        sites_of.setdefault(r["uniquepid"], set()).add(r["hospitalid"])
    with_med = {r["patientunitstayid"] for r in rows(src / "medication.csv.gz")}
    for h, hid in m["site_ids"].items():
        assert h == f"site-{hid}"
        [hrow] = rows(out / h / "hospital.csv.gz")
        assert hrow["hospitalid"] == hid
        exported = rows(out / h / "patient.csv.gz")
        assert {r["hospitalid"] for r in exported} == {hid}
        stays = {r["patientunitstayid"] for r in exported}
        single = {r["patientunitstayid"] for r in source
                  if r["hospitalid"] == hid and sites_of[r["uniquepid"]] == {hid}}
        assert single <= stays  # only stays of multi-site patients may be left out
        assert m["hospitals"][h]["stays"] == len(stays)
        assert len(stays & with_med) == m["site_stays_with_medication"][h]
    ranked = sorted(m["site_stays_with_medication"].values(), reverse=True)
    assert ranked[0] == 37 and len(ranked) == 3
    for h in m["hospitals"]:
        load_dataset(str(out / h))  # each site export is a readable eICU folder


def test_mimic3_exports_load(splits, mappings_dir):
    _src, out, m = get(splits, "mimic3-demo")
    ids = []
    for h in m["hospitals"]:
        cohort = load_dataset(str(out / h), mappings_dir=mappings_dir)
        assert cohort.patients
        ids += [p.patient_id for p in cohort.patients]
    assert len(ids) == len(set(ids))
    whole = load_dataset(str(out), mappings_dir=mappings_dir)  # the folder of exports
    assert sorted(whole.hospitals) == ["h1", "h2", "h3"]


def test_other_readers_read_exports(splits, mappings_dir):
    for name, module, reader in (("mimic4-demo", "fedrx.medrx.mimic4", "read_mimic4"),
                                 ("omop-demo", "fedrx.medrx.omop", "read_omop")):
        mod = pytest.importorskip(module)
        _src, out, m = get(splits, name)
        for h, entry in m["hospitals"].items():
            cohort = getattr(mod, reader)(out / h, mappings_dir)
            assert len(cohort.patients) == entry["patients"]


def test_eicu_random(data_root, tmp_path):
    src = data_root / "eicu-demo"
    if not src.is_dir():
        pytest.skip("eicu-demo not found")
    m = split_export(src, tmp_path / "r", by="random", hospitals=2, seed=3)
    pids = [{r["uniquepid"] for r in rows(tmp_path / "r" / h / "patient.csv.gz")}
            for h in ("h1", "h2")]
    assert not pids[0] & pids[1]
    assert pids[0] | pids[1] == {r["uniquepid"] for r in rows(src / "patient.csv.gz")}
    assert sum(e["stays"] for e in m["hospitals"].values()) == 2520
    assert "hospital.csv.gz" in m["shared"] and not any(m["rows_not_exported"].values())


def test_seed_reproducible(mimic_demo, tmp_path, splits):
    _src, _out, m = get(splits, "mimic3-demo")
    (tmp_path / "a").mkdir()  # an existing empty --out is fine
    again = split_export(mimic_demo, tmp_path / "a", by="random", hospitals=3, seed=0)
    assert again["files"] == m["files"]
    other = split_export(mimic_demo, tmp_path / "b", by="random", hospitals=3, seed=1)
    assert other["files"] != m["files"]


def test_omop_sites(data_root, tmp_path):
    src = data_root / "omop-demo"
    if not src.is_dir():
        pytest.skip("omop-demo not found")
    with pytest.raises(DataError, match="no usable sites"):
        split_export(src, tmp_path / "x", by="site", hospitals=2)
    assert not (tmp_path / "x").exists()
    # the same data with person.care_site_id filled in: a site split works
    fake = tmp_path / "omop"
    fake.mkdir()
    for name in ("visit_occurrence.csv", "drug_exposure.csv", "care_site.csv"):
        shutil.copyfile(src / name, fake / name)
    with open(src / "person.csv", newline="") as fh:
        people = list(csv.reader(fh))
    col = people[0].index("care_site_id")
    for i, row in enumerate(people[1:]):
        row[col] = ("11", "22", "22", "33")[i % 4]
    with open(fake / "person.csv", "w", newline="") as fh:
        csv.writer(fh, lineterminator="\n").writerows(people)
    m = split_export(fake, tmp_path / "s", by="site", hospitals=2)
    assert {h: e["patients"] for h, e in m["hospitals"].items()} == {"site-11": 25,
                                                                     "site-22": 50}
    assert m["persons_without_site"] == 0
    assert m["shared"] == ["care_site.csv"]


def test_failure_leaves_nothing(mimic_demo, tmp_path, monkeypatch):
    calls = {"n": 0}
    real = export_split.RecordWriter.write

    def boom(self, text, *, header=False):
        calls["n"] += 1
        if calls["n"] > 500:
            raise OSError(28, "No space left on device")
        real(self, text, header=header)

    monkeypatch.setattr(export_split.RecordWriter, "write", boom)
    with pytest.raises(OSError):
        split_export(mimic_demo, tmp_path / "out", by="random", hospitals=2)
    assert list(tmp_path.iterdir()) == []


def test_bad_requests(mimic_demo, tmp_path):
    with pytest.raises(ConfigError, match="must be >= 1"):
        split_export(mimic_demo, tmp_path / "o", by="random", hospitals=0)
    with pytest.raises(ConfigError, match="no site column"):
        split_export(mimic_demo, tmp_path / "o", by="site", hospitals=2)
    with pytest.raises(ConfigError, match="inside the source"):
        split_export(mimic_demo, mimic_demo / "exports", by="random", hospitals=2)
    odd = tmp_path / "odd"
    odd.mkdir()
    for f in ("ADMISSIONS.csv", "PATIENTS.csv"):
        shutil.copyfile(mimic_demo / f, odd / f)
    (odd / "NOTES.csv").write_text("note_id,text\n1,hello\n")
    with pytest.raises(DataError, match="NOTES.csv: cannot split this table"):
        split_export(odd, tmp_path / "o", by="random", hospitals=2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["odd"]


def test_cli_split_and_errors(mimic_demo, tmp_path):
    proc = run("data", "split", str(mimic_demo), "--by", "random", "--hospitals", "3",
               "--out", str(tmp_path / "m3"))
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert [ln.split(":")[0] for ln in lines[:3]] == ["h1", "h2", "h3"]
    assert "34 patients" in lines[0] and "mappings/ not copied" in lines[3]
    for args, fragment in (
        (["--hospitals", "3", "--out", str(tmp_path / "m3")], "not an empty folder"),
        (["--hospitals", "101", "--out", str(tmp_path / "n")], "more than the 100 patients"),
        (["--hospitals", "2", "--format", "omop", "--out", str(tmp_path / "f")],
         "is not the omop layout"),
    ):
        proc = run("data", "split", str(mimic_demo), "--by", "random", *args)
        assert_one_line_error(proc, fragment)
        assert proc.returncode == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m3"]


def test_tricky_csv_kept_byte_for_byte(tmp_path):
    """CRLF line ends, a quoted field spanning lines, a missing final newline, gzip, a BOM."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "PATIENTS.csv").write_bytes(b"\xef\xbb\xbfROW_ID,SUBJECT_ID\r\n1,7\r\n2,8\r\n3,9")
    adm = (b'ROW_ID,SUBJECT_ID,HADM_ID,DIAGNOSIS\r\n1,7,100,"chest pain,\r\nfever"\r\n'
           b'2,8,101,"said ""no"""\r\n\r\n3,9,102,caf\xc3\xa9\r\n4,7,103,\xff\xfe\r\n')
    with gzip.open(src / "ADMISSIONS.csv.gz", "wb") as fh:
        fh.write(adm)
    m = split_export(src, tmp_path / "out", by="random", hospitals=2, seed=5)
    got = Counter()
    for h in ("h1", "h2"):
        with gzip.open(tmp_path / "out" / h / "ADMISSIONS.csv.gz", "rb") as fh:
            data = fh.read()
        assert data.split(b"\r\n", 1)[0] == b"ROW_ID,SUBJECT_ID,HADM_ID,DIAGNOSIS"
        got.update(t for t, _ in list(read_records(tmp_path / "out" / h / "ADMISSIONS.csv.gz",
                                                    None))[1:])
        bom_head = header_bytes(tmp_path / "out" / h / "PATIENTS.csv")
        assert bom_head == b"\xef\xbb\xbfROW_ID,SUBJECT_ID\r\n"
    want = Counter(t for t, _ in list(read_records(src / "ADMISSIONS.csv.gz", None))[1:])
    assert got == want and len(want) == 4
    assert m["source_rows"] == {"ADMISSIONS.csv.gz": 4, "PATIENTS.csv": 3}
    body = b"".join(
        (tmp_path / "out" / h / "PATIENTS.csv").read_bytes().split(b"\r\n", 1)[1]
        for h in ("h1", "h2"))
    assert sorted(body.split(b"\r\n")) == [b"", b"1,7", b"2,8", b"3,9"]  # CRLF added to 3,9
