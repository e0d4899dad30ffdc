"""Code catalogues of the synthetic cohort, all real: ICD-9 diagnoses and procedures from
the MIMIC-III demo dictionaries (codes the demo uses first), ATC-3 labels from GAMENet's
vocabulary and real 11-digit NDCs whose RxCUI maps to exactly one of those labels.

:func:`load_sources` reads them once per (folders, sizes) and caches the result.
"""

from __future__ import annotations

import ast
import csv
import gzip
from collections import Counter, defaultdict
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from fedrx.errors import DataError
from fedrx.medrx.datasets import named_dataset_path
from fedrx.medrx.synth.layout import (
    DDI_FILE,
    NDC_ATC,
    NDC_RXNORM,
    PRESCRIPTIONS_COLUMNS,
    VOCAB_FILE,
)


def find_mimic3_demo() -> Path:
    """The shared ``mimic3-demo`` folder (``$FEDRX_DATA_ROOT/mimic3-demo`` if the variable
    is set, else a ``shared/data`` folder above this file or the cwd; see
    :func:`fedrx.medrx.datasets.shared_data_root`). DataError naming FEDRX_DATA_ROOT if
    there is none."""
    return named_dataset_path("mimic3-demo")


def resolve_source_dirs(mappings_dir: Path | None) -> tuple[Path, Path]:
    """(demo folder with D_ICD_*.csv, mappings folder) from a mappings or demo folder."""
    if mappings_dir is None:
        demo = find_mimic3_demo()
        return demo, demo / "mappings"
    p = Path(mappings_dir)
    if (p / NDC_RXNORM).is_file():
        return p.parent, p
    if (p / "mappings" / NDC_RXNORM).is_file():
        return p, p / "mappings"
    raise DataError(f"{p}: no {NDC_RXNORM} here or in {p}/mappings (pass the real "
                    "mimic3-demo mappings folder, or set FEDRX_DATA_ROOT)")


@dataclass(frozen=True)
class Drug:
    ndc: str  # 11 digits
    rxcui: str
    atc4: str
    meta: tuple[str, ...]  # PRESCRIPTIONS columns drug_type .. route (13 values)
    atc_rows: tuple[tuple[str, ...], ...]  # real ndc2atc_level4 rows for this RxCUI


@dataclass(frozen=True)
class Sources:
    dx_codes: tuple[str, ...]
    dx_titles: tuple[str, ...]
    dx_freq: tuple[float, ...]
    px_codes: tuple[str, ...]
    labels: tuple[str, ...]
    label_freq: tuple[float, ...]
    drugs: tuple[tuple[Drug, ...], ...]  # per label, 1-3 drugs
    ddi_text: str
    vocab_text: str


def read_csv(path: Path) -> list[dict[str, str]]:
    try:
        with open(path, encoding="utf-8", newline="") as fh:
            return list(csv.DictReader(fh))
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc.strerror}") from None
    except (csv.Error, UnicodeDecodeError) as exc:
        raise DataError(f"cannot parse {path}: {exc}") from None


def _rank_codes(dictionary: list[str], used: Counter, n: int) -> list[str]:
    """Up to ``n`` dictionary codes: most used in the demo first, then the rest in order."""
    known = set(dictionary)
    ranked = [c for c, _ in sorted(used.items(), key=lambda kv: (-kv[1], kv[0])) if c in known]
    if len(ranked) < n:
        chosen = set(ranked)
        ranked += [c for c in dictionary if c not in chosen][: n - len(ranked)]
    return ranked[:n]


@lru_cache(maxsize=4)
def load_sources(demo_dir: str, map_dir: str, n_dx: int, n_px: int, n_labels: int) -> Sources:
    demo, maps = Path(demo_dir), Path(map_dir)
    dx_dict = read_csv(demo / "D_ICD_DIAGNOSES.csv")
    px_dict = read_csv(demo / "D_ICD_PROCEDURES.csv")
    titles = {r["icd9_code"]: r["short_title"] for r in dx_dict}
    dx_used: Counter = Counter()
    px_used: Counter = Counter()
    if (demo / "DIAGNOSES_ICD.csv").is_file():
        dx_used = Counter(r["icd9_code"] for r in read_csv(demo / "DIAGNOSES_ICD.csv"))
    if (demo / "PROCEDURES_ICD.csv").is_file():
        px_used = Counter(r["icd9_code"] for r in read_csv(demo / "PROCEDURES_ICD.csv"))
    dx_codes = _rank_codes([r["icd9_code"] for r in dx_dict], dx_used, n_dx)
    px_codes = _rank_codes([r["icd9_code"] for r in px_dict], px_used, n_px)
    if len(dx_codes) < 20 or len(px_codes) < 5:
        raise DataError(f"{demo}: too few ICD-9 codes in D_ICD_DIAGNOSES/D_ICD_PROCEDURES")
    dx_freq = [float(dx_used.get(c, 0)) + 0.5 for c in dx_codes]

    # Drug mappings: NDC -> RxCUI (dict literal), RxCUI -> ATC-4 (real rows).
    try:
        ndc2rx = ast.literal_eval((maps / NDC_RXNORM).read_text(encoding="utf-8"))
    except OSError as exc:
        raise DataError(f"cannot read {maps / NDC_RXNORM}: {exc.strerror}") from None
    except (ValueError, SyntaxError):
        raise DataError(f"{maps / NDC_RXNORM}: not a dict literal") from None
    if not isinstance(ndc2rx, dict):
        raise DataError(f"{maps / NDC_RXNORM}: not a dict literal")
    wanted_rx = {str(v) for v in ndc2rx.values() if v}
    rx_rows: dict[str, list[tuple[str, ...]]] = defaultdict(list)
    try:
        with gzip.open(maps / NDC_ATC, "rt", encoding="utf-8", newline="") as fh:
            reader = csv.reader(fh)
            header = next(reader)
            if [h.upper() for h in header] != ["YEAR", "MONTH", "NDC", "RXCUI", "ATC5"]:
                raise DataError(f"{maps / NDC_ATC}: unexpected header {header}")
            for row in reader:
                if len(row) == 5 and row[3] in wanted_rx:
                    rx_rows[row[3]].append(tuple(row))
    except OSError as exc:
        raise DataError(f"cannot read {maps / NDC_ATC}: {exc}") from None
    vocab_rows = read_csv(maps / VOCAB_FILE)
    vocab = [r["atc3"] for r in vocab_rows]
    vocab_set = set(vocab)

    # Metadata of real prescriptions, by NDC (most frequent row wins).
    meta_by_ndc: dict[str, tuple[str, ...]] = {}
    ndc_use: Counter = Counter()
    if (demo / "PRESCRIPTIONS.csv").is_file():
        counts: Counter = Counter()
        for r in read_csv(demo / "PRESCRIPTIONS.csv"):
            if r.get("ndc") and r["ndc"] != "0":
                counts[tuple(r[c] for c in PRESCRIPTIONS_COLUMNS[6:])] += 1
                ndc_use[r["ndc"]] += 1
        for meta, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])):
            meta_by_ndc.setdefault(meta[6], meta)

    # Candidate drugs: NDCs whose RxCUI maps to exactly one ATC-3 label of the vocabulary.
    by_label: dict[str, list[Drug]] = defaultdict(list)
    for ndc in sorted(ndc2rx):
        rx = str(ndc2rx[ndc])
        rows = rx_rows.get(rx)
        if not rows or len(ndc) != 11 or not ndc.isdigit():
            continue
        atc3s = {r[4][:4] for r in rows}
        if len(atc3s) != 1 or rows[0][4][:4] not in vocab_set or len(rows[0][4]) != 5:
            continue
        atc4 = rows[0][4]
        meta = meta_by_ndc.get(ndc) or (
            "MAIN", f"Rx {atc4} {rx}", f"Rx {atc4} {rx}", f"Rx {atc4} {rx}",
            f"{atc4}{rx}"[:10], "", ndc, "1 unit", "1", "unit", "1", "unit", "PO",
        )
        by_label[atc4[:4]].append(Drug(ndc, rx, atc4, meta, tuple(rows[:3])))
    # Labels: those with real prescription metadata first (by demo use), then the rest.
    use_by_label: Counter = Counter()
    for lab, ds in by_label.items():
        use_by_label[lab] = sum(ndc_use.get(d.ndc, 0) for d in ds)
    order = sorted(by_label, key=lambda lab: (-use_by_label[lab], vocab.index(lab)))
    labels = order[:n_labels]
    if len(labels) < 10:
        raise DataError(f"{maps}: fewer than 10 ATC-3 labels reachable through the mappings")
    drugs = []
    for lab in labels:
        cands = sorted(by_label[lab], key=lambda d: (-ndc_use.get(d.ndc, 0), d.ndc))
        picked: list[Drug] = []
        seen_rx: set[str] = set()
        for d in cands:
            if d.rxcui not in seen_rx:
                picked.append(d)
                seen_rx.add(d.rxcui)
            if len(picked) == 3:
                break
        drugs.append(tuple(picked))
    label_freq = [float(use_by_label[lab]) + 5.0 for lab in labels]
    try:
        ddi_text = (maps / DDI_FILE).read_text(encoding="utf-8")
        vocab_text = (maps / VOCAB_FILE).read_text(encoding="utf-8")
    except OSError as exc:
        raise DataError(f"cannot read drug mapping files in {maps}: {exc.strerror}") from None
    return Sources(
        tuple(dx_codes), tuple(titles.get(c, "") for c in dx_codes), tuple(dx_freq),
        tuple(px_codes), tuple(labels), tuple(label_freq), tuple(drugs), ddi_text, vocab_text,
    )
