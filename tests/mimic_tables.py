"""Hand-built MIMIC tables shared by the MIMIC-III and MIMIC-IV reader tests: CSV text
written under its table name, and the two GAMENet mapping files (three NDCs: one mapped
to two ATC-4 rows, one without an RxCUI, one to one row)."""

from __future__ import annotations

import gzip
from pathlib import Path


def write_tables(folder: Path, tables: dict[str, str], *, upper: bool = False,
                 gz: bool = False) -> None:
    """Each ``name -> CSV text`` as ``folder/name.csv`` (lower-case name and text), or with
    ``upper`` as ``NAME.csv`` with an upper-case header; gzipped with ``gz``."""
    for name, text in tables.items():
        if upper:
            head, body = text.split("\n", 1)
            text = head.upper() + "\n" + body
        fname = name.upper() if upper else name.lower()
        if gz:
            with gzip.open(folder / f"{fname}.csv.gz", "wt") as fh:
                fh.write(text)
        else:
            (folder / f"{fname}.csv").write_text(text)


def write_mappings(root: Path) -> None:
    """``root/mappings`` with ndc2rxnorm_mapping.txt and ndc2atc_level4.csv."""
    maps = root / "mappings"
    maps.mkdir(exist_ok=True)
    (maps / "ndc2rxnorm_mapping.txt").write_text(
        "{'11111111111': u'123', '22222222222': u'', '33333333333': u'456'}"
    )
    (maps / "ndc2atc_level4.csv").write_text(
        'YEAR,MONTH,NDC,RXCUI,ATC5\n2010,01,"1-1",123,"B01AB"\n2010,01,"1-2",123,"C09AA"\n'
        '2010,01,"3-3",456,"C10AA"\n'
    )
