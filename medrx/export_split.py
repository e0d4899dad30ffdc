"""Split one EHR export into one export per hospital, in the source's own layout.

:func:`split_export` writes ``OUT/<hospital>/`` folders that a node can read exactly like
the source: the same file names, headers and compression, with whole rows filtered (see
:mod:`fedrx.medrx.csv_records`), and ``OUT/split.json``, the manifest it returns.

Layouts (``fmt``; ``auto`` detects) and what a row belongs to:

* ``mimic3`` -- ``ADMISSIONS`` etc. in the folder; rows by ``subject_id``;
* ``mimic4`` -- tables in ``hosp/`` (and ``icu/``...) sub-folders, kept as sub-folders;
  rows by ``subject_id``;
* ``omop`` -- OMOP CDM ``person`` + ``visit_occurrence``; rows by ``person_id``;
* ``eicu`` -- ``patient`` with ``hospitalid``; rows by ``patientunitstayid``, the patient
  is ``uniquepid``; ``hospital`` is cut to the hospital's own row.

Methods: ``random`` deals the patients into ``h1..hN`` by a seeded hash (sizes differ by at
most one; eICU ``hospital`` then copied whole); ``site`` keeps the ``N`` largest sites as
``site-<id>`` (eICU: ``hospitalid``, ranked by stays with a medication row; OMOP:
``person.care_site_id``, else the care site of the person's first visit, ranked by persons;
ties: the smaller id). Invariants: every patient is in at most one export (eICU: a
patient's stays at sites other than that of their first stay are dropped, the rule of
:func:`fedrx.medrx.eicu.read_eicu`, counted in ``dropped_cross_site_stays``); every
patient-level row of the source is in exactly one export or counted in
``rows_not_exported``; dictionary tables are copied whole; licences are copied; checksum
files, READMEs and other folders (MIMIC-III ``mappings/``) are not, and are listed in
``not_copied``. The whole output appears at once (written to ``OUT.tmp-*``, fsynced,
renamed); the folder is created private (mode 0700, as :func:`tempfile.mkdtemp` makes it).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections import Counter
from pathlib import Path

from fedrx.atomic import atomic_write_text, fsync_dir
from fedrx.errors import ConfigError, DataError
from fedrx.medrx.csv_records import RecordWriter, column_values, header_names, read_records
from fedrx.medrx.export_layouts import (
    FORMATS,
    LAYOUTS,
    Layout,
    detect_layouts,
    inventory,
    table_path,
    table_stem,
)

MANIFEST = "split.json"
MANIFEST_FORMAT = "fedrx-split/1"
METHODS = ("random", "site")


def _hash_deal(patients: set[str], hospitals: int, seed: int) -> dict[str, str]:
    """Patient -> ``h1..hN``: order by SHA-256 of ``seed:id``, cut into near-equal runs."""
    order = sorted(patients, key=lambda p: (hashlib.sha256(f"{seed}:{p}".encode()).digest(), p))
    base, extra = divmod(len(order), hospitals)
    out: dict[str, str] = {}
    start = 0
    for i in range(hospitals):
        size = base + (i < extra)
        for p in order[start:start + size]:
            out[p] = f"h{i + 1}"
        start += size
    return out


def _site_order(site: str) -> tuple[int, int | str]:
    return (0, int(site)) if site.lstrip("-").isdigit() else (1, site)


def _pick_sites(sizes: Counter[str], hospitals: int, what: str) -> list[str]:
    if hospitals > len(sizes):
        raise ConfigError(f"--hospitals {hospitals} is more than the {len(sizes)} sites {what}")
    ranked = sorted(sizes, key=lambda s: (-sizes[s], _site_order(s)))
    return ranked[:hospitals]


def _eicu_routes(src: Path, by: str, hospitals: int, seed: int, info: dict) -> dict[str, str]:
    """Stay id -> export folder for eICU; the patient of each stay is ``uniquepid``."""
    from fedrx.medrx.eicu import _assign_hospitals, _read_patients

    stats: Counter[str] = Counter()
    all_stays = _read_patients(table_path(src, "patient"), stats)
    stays = _assign_hospitals(all_stays, stats)
    if by == "random":
        patients = {s.patient for s in stays.values()}
        if hospitals > len(patients):
            raise ConfigError(f"--hospitals {hospitals} is more than the {len(patients)} "
                              "patients in the source")
        deal = _hash_deal(patients, hospitals, seed)
        info["dropped_cross_site_stays"] = 0
        return {sid: deal[s.patient] for sid, s in all_stays.items()}
    info["dropped_cross_site_stays"] = len(all_stays) - len(stays)
    with_med = {sid for (sid,) in column_values(table_path(src, "medication"),
                                                ("patientunitstayid",)) if sid in stays}
    sizes = Counter(stays[sid].hospital for sid in with_med)
    sites = sorted(_pick_sites(sizes, hospitals, "with medication rows"), key=_site_order)
    info["site_stays_with_medication"] = {f"site-{h}": sizes[h] for h in sites}
    info["site_ids"] = {f"site-{h}": h for h in sites}
    keep = set(sites)
    return {sid: f"site-{s.hospital}" for sid, s in stays.items() if s.hospital in keep}


def _omop_sites(src: Path) -> dict[str, str]:
    """Person -> care site: ``person.care_site_id``, else that of the first visit."""
    site: dict[str, str] = {}
    for pid, cs in column_values(table_path(src, "person"), ("person_id", "care_site_id")):
        if cs:
            site[pid] = cs
    first: dict[str, tuple[str, str, str]] = {}
    for pid, start, vid, cs in column_values(
            table_path(src, "visit_occurrence"),
            ("person_id", "visit_start_date", "visit_occurrence_id", "care_site_id")):
        if cs and pid not in site and (pid not in first or (start, vid) < first[pid][:2]):
            first[pid] = (start, vid, cs)
    site.update({pid: v[2] for pid, v in first.items()})
    return site


def _routes(src: Path, layout: Layout, by: str, hospitals: int, seed: int,
            info: dict) -> dict[str, str]:
    """Value of ``layout.key`` -> export folder name."""
    if layout.name == "eicu":
        return _eicu_routes(src, by, hospitals, seed, info)
    ptable = table_path(src, layout.patient_table)
    patients = {v for (v,) in column_values(ptable, (layout.patient_col,)) if v}
    if by == "random":
        if hospitals > len(patients):
            raise ConfigError(f"--hospitals {hospitals} is more than the {len(patients)} "
                              "patients in the source")
        return _hash_deal(patients, hospitals, seed)
    if layout.name != "omop":
        raise ConfigError(f"--by site: the {layout.name} layout has no site column "
                          "(one hospital); use --by random")
    site = _omop_sites(src)
    if not site:
        raise DataError(f"{src}: no usable sites for --by site (person.care_site_id and "
                        "visit_occurrence.care_site_id are empty; visit_detail care sites are "
                        "wards); use --by random")
    chosen = sorted(_pick_sites(Counter(site.values()), hospitals, "with persons"),
                    key=_site_order)
    info["persons_without_site"] = len(patients - site.keys())
    info["site_ids"] = {f"site-{s}": s for s in chosen}
    return {p: f"site-{s}" for p, s in site.items() if s in chosen}


def _sha256_synced(path: Path) -> str:
    """SHA-256 of a written file, which is also fsynced (copies included) before the rename."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
        os.fsync(fh.fileno())
    return h.hexdigest()


def _split_table(path: Path, rel: str, key: str, routes: dict[str, str], tmp: Path,
                 names: list[str], hosp: dict[str, dict]) -> tuple[int, int]:
    """Write ``rel`` filtered by ``key`` into every export; ``(source rows, rows not kept)``."""
    writers = {n: RecordWriter(tmp / n / rel) for n in names}
    total = lost = 0
    try:
        records = read_records(path, key)
        head, _ = next(records)
        for w in writers.values():
            w.write(head, header=True)
        for text, value in records:
            total += 1
            dest = routes.get(value)  # type: ignore[arg-type]
            if dest is None:
                lost += 1
            else:
                writers[dest].write(text)
    finally:
        for w in writers.values():
            w.close()
    for n, w in writers.items():
        hosp[n]["tables"][rel] = w.records
    return total, lost


def _plan_tables(src: Path, layout: Layout, by: str, tables: list[str],
                 ) -> list[tuple[str, str | None]]:
    """``(table, column to filter by)``, None = copied whole; checked before any write."""
    plan: list[tuple[str, str | None]] = []
    for rel in tables:
        stem = table_stem(src / rel)
        key: str | None = layout.key
        if layout.is_shared(stem):
            key = None
        elif layout.name == "eicu" and stem == "hospital":
            key = "hospitalid" if by == "site" else None
        if key is not None:
            if key not in header_names(src / rel):
                raise DataError(f"{src / rel}: cannot split this table: it has no {key} "
                                f"column and is not a known {layout.name} dictionary table")
        plan.append((rel, key))
    return plan


def _check_request(src: Path, out: Path, by: str, hospitals: int, fmt: str) -> Layout:
    if by not in METHODS:
        raise ConfigError(f"--by must be one of {', '.join(METHODS)}, got {by!r}")
    if fmt != "auto" and fmt not in FORMATS:
        raise ConfigError(f"--format must be auto or one of {', '.join(FORMATS)}, got {fmt!r}")
    if isinstance(hospitals, bool) or not isinstance(hospitals, int) or hospitals < 1:
        raise ConfigError(f"--hospitals must be >= 1, got {hospitals!r}")
    if not src.is_dir():
        raise DataError(f"source folder not found: {src}")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ConfigError(f"--out {out} exists and is not an empty folder; refusing to "
                          "overwrite it")
    rs, ro = src.resolve(), out.resolve()
    if ro == rs or rs in ro.parents or ro in rs.parents:
        raise ConfigError(f"--out {out} must not be inside the source {src} or hold it")
    found = detect_layouts(src)
    if not found:
        raise DataError(f"{src}: unknown layout (no MIMIC-III ADMISSIONS, MIMIC-IV "
                        "hosp/admissions, eICU patient, or OMOP person + visit_occurrence)")
    if fmt == "auto":
        if len(found) > 1:
            raise DataError(f"{src}: ambiguous layout ({', '.join(found)}); pass --format")
        return LAYOUTS[found[0]]
    if fmt not in found:
        raise DataError(f"{src} is not the {fmt} layout (it looks like {', '.join(found)})")
    return LAYOUTS[fmt]


def split_export(src: Path, out: Path, *, by: str, hospitals: int, seed: int = 0,
                 fmt: str = "auto") -> dict:
    """Write one export per hospital under ``out`` and return the manifest (also written
    as ``out/split.json``). Refuses (ConfigError / DataError) a non-empty ``out``, an
    unknown or mismatched layout, ``hospitals`` < 1 or above the patients / sites there
    are; on any failure nothing appears at ``out``. See the module docstring."""
    src, out = Path(src), Path(out)
    layout = _check_request(src, out, by, hospitals, fmt)
    tables, copied, not_copied = inventory(src, layout)
    plan = _plan_tables(src, layout, by, tables)
    info: dict = {}
    routes = _routes(src, layout, by, hospitals, seed, info)
    if by == "random":
        names = [f"h{i + 1}" for i in range(hospitals)]
    else:
        names = list(info["site_ids"])
    hosp: dict[str, dict] = {n: {"tables": {}} for n in names}
    manifest: dict = {"format": MANIFEST_FORMAT, "source": str(src.resolve()),
                      "layout": layout.name, "method": by,
                      "seed": seed if by == "random" else None, "key": layout.key,
                      "hospitals": hosp, "source_rows": {}, "rows_not_exported": {},
                      "shared": [], "copied": copied, "not_copied": not_copied, **info}
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f"{out.name}.tmp-", dir=out.parent))
    try:
        for n in names:
            for rel in tables + copied:
                (tmp / n / rel).parent.mkdir(parents=True, exist_ok=True)
        for rel, key in plan:
            path = src / rel
            if key is None:
                manifest["shared"].append(rel)
                for n in names:
                    shutil.copyfile(path, tmp / n / rel)
                continue
            sub_routes = routes
            if key == "hospitalid":
                sub_routes = {hid: name for name, hid in info["site_ids"].items()}
            total, lost = _split_table(path, rel, key, sub_routes, tmp, names, hosp)
            manifest["source_rows"][rel] = total
            manifest["rows_not_exported"][rel] = lost
        for rel in copied:
            for n in names:
                shutil.copyfile(src / rel, tmp / n / rel)
        _count_patients(src, layout, routes, hosp)
        files = {}
        for p in sorted(q for q in tmp.rglob("*") if q.is_file()):
            files[p.relative_to(tmp).as_posix()] = _sha256_synced(p)
        manifest["files"] = files
        atomic_write_text(tmp / MANIFEST, json.dumps(manifest, indent=1, sort_keys=True) + "\n")
        for d in sorted({p.parent for p in tmp.rglob("*")} | {tmp}, reverse=True):
            fsync_dir(d)
        try:
            os.rename(tmp, out)
        except OSError as exc:
            raise ConfigError(f"cannot create --out {out}: {exc.strerror or exc}") from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    fsync_dir(out.parent)
    return manifest


def _count_patients(src: Path, layout: Layout, routes: dict[str, str],
                    hosp: dict[str, dict]) -> None:
    """Per export: patients, stays (eICU) and patient-level rows."""
    for entry in hosp.values():
        entry["rows"] = sum(entry["tables"].values())
    if layout.name != "eicu":
        counts = Counter(routes.values())
        for n, entry in hosp.items():
            entry["patients"] = counts.get(n, 0)
        return
    pids: dict[str, set[str]] = {n: set() for n in hosp}
    stays: Counter[str] = Counter()
    for sid, pid in column_values(table_path(src, "patient"), ("patientunitstayid", "uniquepid")):
        n = routes.get(sid)
        if n is not None:
            pids[n].add(pid)
            stays[n] += 1
    for n, entry in hosp.items():
        entry["patients"] = len(pids[n])
        entry["stays"] = stays[n]
