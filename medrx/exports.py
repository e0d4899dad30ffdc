"""A hospital's OWN EHR export: one folder (or one .jsonl file) in a known layout.

``load_export(path, fmt, site, mappings)`` is what a hospital node reads, and all it reads:
the export of that one hospital. ``fmt`` is ``auto`` (detected) or one of
:data:`FORMATS`; an export whose layout is not the one ``fmt`` names is refused. A
multi-site export (eICU ``hospitalid``, OMOP ``care_site_id``) needs ``site``; a ``site``
that the export does not hold is refused, naming the sites it has. Every failure is one
:class:`~fedrx.errors.DataError` line.
"""

from __future__ import annotations

from pathlib import Path

from fedrx.errors import DataError
from fedrx.medrx.records import Cohort, read_jsonl

FORMATS = ("auto", "mimic3", "mimic4", "eicu", "omop", "jsonl")


def detect_format(path: Path) -> str:
    """The layout of the export at ``path`` (DataError if none is recognised)."""
    from fedrx.medrx.datasets import is_eicu_folder
    from fedrx.medrx.mimic import is_mimic3_folder
    from fedrx.medrx.mimic4 import is_mimic4_folder
    from fedrx.medrx.omop import is_omop_folder

    if path.is_file():
        if path.suffix == ".jsonl":
            return "jsonl"
        raise DataError(f"{path}: unknown export file type (expected a .jsonl file or a folder)")
    if not path.is_dir():
        raise DataError(f"export not found: {path}")
    for fmt, test in (("mimic4", is_mimic4_folder), ("omop", is_omop_folder),
                      ("mimic3", is_mimic3_folder), ("eicu", is_eicu_folder)):
        if test(path):
            return fmt
    raise DataError(f"{path}: not an export fedrx can read (no MIMIC-III, MIMIC-IV, eICU or "
                    "OMOP tables, not a .jsonl file)")


def load_export(path: str | Path, fmt: str = "auto", *, site: str = "",
                mappings: str | Path | None = None, min_visits: int = 1,
                hospital: str = "") -> Cohort:
    """Read ONE hospital's export. ``hospital``: the id its patients get (default: the
    site, else the folder name)."""
    p = Path(path).expanduser()
    if fmt not in FORMATS:
        raise DataError(f"unknown export format {fmt!r} (expected one of: {', '.join(FORMATS)})")
    found = detect_format(p)
    if fmt != "auto" and fmt != found:
        raise DataError(f"{p}: [data] format is {fmt!r} but the export is in the {found} "
                        "layout")
    mdir = Path(mappings) if mappings else None
    name = hospital or site or p.stem
    if found in ("eicu", "omop"):
        cohort = _one_site(p, found, site, mdir, min_visits)
    elif site:
        raise DataError(f"{p}: [data] site is only for multi-site exports (eICU, OMOP); a "
                        f"{found} export is one hospital")
    elif found == "mimic3":
        from fedrx.medrx.mimic import read_mimic3

        cohort = read_mimic3(p, mdir, hospital=name, min_visits=min_visits)
    elif found == "mimic4":
        from fedrx.medrx.mimic4 import read_mimic4

        cohort = read_mimic4(p, mdir, hospital=name, min_visits=min_visits)
    else:
        cohort = Cohort(p.stem, [pt for pt in read_jsonl(p)
                                 if len(pt.visits) >= min_visits])
    from dataclasses import replace

    cohort.patients = [replace(pt, hospital=name) for pt in cohort.patients]
    if not cohort.patients:
        raise DataError(f"{p}: no patient with a diagnosis and a drug that maps to ATC-3")
    cohort.stats["export_format_" + found] = 1
    return cohort


def _one_site(p: Path, fmt: str, site: str, mdir: Path | None, min_visits: int) -> Cohort:
    if fmt == "omop":
        from fedrx.medrx.omop import read_omop

        cohort = read_omop(p, mdir, site=site or None, min_visits=min_visits)
    else:
        from fedrx.medrx.eicu import read_eicu

        cohort = read_eicu(p)
        sites = sorted({pt.hospital for pt in cohort.patients})
        if site:
            if site not in sites:
                raise DataError(f"{p}: no site {site!r} in this eICU export (it has "
                                f"{', '.join(sites[:20])}{' ...' if len(sites) > 20 else ''})")
            cohort.patients = [pt for pt in cohort.patients if pt.hospital == site]
        elif len(sites) > 1:
            raise DataError(f"{p}: this eICU export holds {len(sites)} sites; set [data] "
                            "site to this hospital's hospitalid (or split it with "
                            "`fedrx data split --by site`)")
        cohort.patients = [pt for pt in cohort.patients if len(pt.visits) >= min_visits]
    return cohort
