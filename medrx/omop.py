"""OMOP CDM 5.3 / 5.4 reader: person, visit_occurrence, condition/procedure_occurrence,
drug_exposure -> Cohort.

Tables (``NAME.csv[.gz]``, any case, see :mod:`fedrx.medrx.tables`): ``person``,
``visit_occurrence``, ``condition_occurrence``, ``drug_exposure`` are required;
``procedure_occurrence`` (counted when missing), ``visit_detail``, ``care_site``, ``concept``,
``concept_ancestor`` are optional. A patient is a ``person_id``, a visit a
``visit_occurrence_id`` (strings: often signed 64-bit hashes), ordered by
``visit_start_datetime`` (else the date); an event row belongs to its
``visit_occurrence_id``, else to the visit of its ``visit_detail_id``.

Codes (the convention of :mod:`fedrx.medrx.records`): ICD-9 codes without the dot and
unprefixed (``"4019"``, procedure ``"3893"``); ICD-10 codes without the dot and prefixed
``"10:"`` (``"10:I10"``, ``"10:0DTJ4ZZ"``). Codes come from ``condition_source_value`` /
``procedure_source_value`` (stripped, upper-cased, dots removed). A row is an ICD code, and
its version is decided, by the FIRST rule that applies:

1. vocabulary: when ``concept`` holds the row's ``*_source_concept_id`` (not 0), its
   ``vocabulary_id`` decides: ICD9CM / ICD9Proc -> ICD-9, ICD10CM / ICD10 / ICD10PCS ->
   ICD-10, any other vocabulary (a local chart-value vocabulary, SNOMED, CPT4) -> no ICD;
2. shape: diagnoses of 3-5 digits are ICD-9-CM; a letter, a digit and 1-5 of ``[0-9A-Z]``
   are ICD-10-CM, except ``Vdd[d[d]]`` and ``Eddd[d]``, shapes ICD-9-CM has too. Of those,
   E031-E799 are ICD-10 (ICD-9 has only E000-E030 and E800-E999) and E900-E999 ICD-9 (the
   ICD-10-CM E chapter ends at E89); the rest (V codes, E000-E030, E800-E899: ``E870`` is
   ICD-9 E870 and ICD-10 E87.0) take the version most other rows of their visit have (a
   stay is billed in one ICD version); with no such row, or a tie, they are skipped and
   counted (``*_rows_icd_version_unknown``). Procedures ``ddd[d]`` are ICD-9-CM, 7
   characters of the ICD-10-PCS alphabet (no I, O) ICD-10-PCS; anything else (CPT/HCPCS,
   ICU item ids, chart values such as ``"SR (Sinus Rhythm)"``) is no ICD code: skipped and
   COUNTED (``condition_rows_not_icd``: the ICU rhythm chart rows of the MIMIC-IV demo).

Labels are ATC level-3 classes: through the ATC hierarchy when the vocabulary holds ATC 3rd
level concepts (``concept``: vocabulary_id ATC, concept_class_id "ATC 3rd") and
``concept_ancestor`` links them to the row's ``drug_concept_id`` (every such class is a
label: aspirin is B01A and N02B); otherwise (or when that finds none) through the NDC in
``drug_source_value`` (11 digits, or a hyphenated 10-digit NDC padded to 5-4-2) with the
MIMIC-III recipe of :func:`fedrx.medrx.mimic.load_drug_mapping`.

A visit is kept when it has >= 1 ICD diagnosis and >= 1 mapped ATC-3 label. A visit's site
is ``visit_occurrence.care_site_id``, else the care site of its earliest ``visit_detail``
row that has one; ``site`` keeps one site (by care_site_id or care_site_name). Nothing is
dropped silently: ``Cohort.stats`` counts every skipped row and visit by reason.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Callable, Container, Iterable
from pathlib import Path

from fedrx.errors import DataError
from fedrx.medrx.mimic import DrugMapping, default_mappings_dir, load_drug_mapping
from fedrx.medrx.mimic4 import ICD10_PREFIX
from fedrx.medrx.omop_codes import (
    DX_VOCABULARIES,
    PX_VOCABULARIES,
    dx_version,
    ndc11,
    px_version,
)
from fedrx.medrx.records import Cohort, Visit, gather_patients
from fedrx.medrx.tables import find_table, iter_rows


def _required(root: Path, name: str) -> Path:
    path = find_table(root, name, required=False)
    if path is None:
        raise DataError(f"OMOP export without {name}: no {name}.csv(.gz) in {root}")
    return path


def is_omop_folder(path: Path) -> bool:
    """True if ``path`` holds OMOP ``person`` and ``visit_occurrence`` tables. Never raises."""
    try:
        return all(find_table(Path(path), t, required=False) is not None
                   for t in ("person", "visit_occurrence"))
    except (DataError, OSError):
        return False


def _time(row: dict[str, str], prefix: str) -> str:
    return row.get(f"{prefix}_start_datetime", "").strip() or row[f"{prefix}_start_date"].strip()


def _read_visits(root: Path, stats: dict[str, int]) -> dict[str, tuple[str, str, str]]:
    """``visit_occurrence_id -> (person_id, start time, care_site_id or "")``."""
    persons = {r["person_id"].strip() for r in iter_rows(_required(root, "person"),
                                                          ("person_id",))}
    stats["persons"] = len(persons)
    path = _required(root, "visit_occurrence")
    out: dict[str, tuple[str, str, str]] = {}
    for row in iter_rows(path, ("visit_occurrence_id", "person_id", "visit_start_date")):
        vid, person = row["visit_occurrence_id"].strip(), row["person_id"].strip()
        if not vid or vid in out:
            stats["visit_rows_no_or_duplicate_id"] += 1
        elif person not in persons:
            stats["visits_unknown_person"] += 1
        elif not _time(row, "visit"):
            stats["visits_no_start_date"] += 1
        else:
            out[vid] = (person, _time(row, "visit"), row.get("care_site_id", "").strip())
    stats["visit_occurrences"] = len(out)
    if not out:
        raise DataError(f"{path}: no visit of a known person (empty OMOP export)")
    return out


def _read_details(root: Path, visits: dict[str, tuple[str, str, str]]
                  ) -> tuple[dict[str, str], dict[str, str]]:
    """``(visit_detail_id -> visit id, visit id -> care site of its earliest detail row)``."""
    path = find_table(root, "visit_detail", required=False)
    parent: dict[str, str] = {}
    first: dict[str, tuple[str, str, str]] = {}
    if path is None:
        return parent, {}
    cols = ("visit_detail_id", "visit_occurrence_id", "visit_detail_start_date")
    for row in iter_rows(path, cols):
        vid, did = row["visit_occurrence_id"].strip(), row["visit_detail_id"].strip()
        if vid not in visits:
            continue
        parent[did] = vid
        site = row.get("care_site_id", "").strip()
        key = (_time(row, "visit_detail"), did, site)
        if site and (vid not in first or key < first[vid]):
            first[vid] = key
    return parent, {vid: key[2] for vid, key in first.items()}


def _read_events(path: Path, table: str, value_col: str, concept_col: str,
                 visit_of: Container[str], details: dict[str, str], stats: dict[str, int],
                 ) -> dict[str, list[tuple[str, str]]]:
    """``visit id -> [(source value, source concept id)]`` in file order; strays counted."""
    out: dict[str, list[tuple[str, str]]] = defaultdict(list)
    for row in iter_rows(path, ("visit_occurrence_id", value_col)):
        stats[f"{table}_rows"] += 1
        vid = row["visit_occurrence_id"].strip()
        vid = vid if vid in visit_of else details.get(row.get("visit_detail_id", "").strip(), "")
        if not vid:
            stats[f"{table}_rows_unknown_visit"] += 1
            continue
        out[vid].append((row[value_col], row.get(concept_col, "").strip()))
    return out


class _Vocabulary:
    """The parts of ``concept`` / ``concept_ancestor`` this reader needs (possibly none)."""

    def __init__(self, root: Path, wanted: set[str], drugs: set[str]) -> None:
        self.vocab: dict[str, str] = {}
        self.atc3: dict[str, set[str]] = defaultdict(set)
        concept = find_table(root, "concept", required=False)
        if concept is None:
            return
        classes: dict[str, str] = {}
        for row in iter_rows(concept, ("concept_id", "vocabulary_id", "concept_code")):
            cid, vocabulary = row["concept_id"].strip(), row["vocabulary_id"].strip()
            if cid in wanted and cid != "0":
                self.vocab[cid] = vocabulary
            if vocabulary == "ATC" and row.get("concept_class_id", "").strip() == "ATC 3rd":
                classes[cid] = row["concept_code"].strip().upper()
        ancestor = find_table(root, "concept_ancestor", required=False)
        if ancestor is None or not classes:
            return
        for row in iter_rows(ancestor, ("ancestor_concept_id", "descendant_concept_id")):
            a, d = row["ancestor_concept_id"].strip(), row["descendant_concept_id"].strip()
            if a in classes and d in drugs:
                self.atc3[d].add(classes[a])

    def version(self, concept_id: str, versions: dict[str, str]) -> str | None:
        """ICD version ("9"/"10") of a source concept; "-": another vocabulary; None: unknown."""
        vocabulary = self.vocab.get(concept_id)
        if vocabulary in (None, "", "None"):
            return None
        return versions.get(vocabulary, "-")


def _codes(rows: dict[str, list[tuple[str, str]]], table: str, vocab: _Vocabulary,
           versions: dict[str, str], shape: Callable[[str], str | None],
           stats: dict[str, int],
           ) -> tuple[dict[str, tuple[str, ...]], dict[str, set[str]]]:
    """Canonical ICD codes per visit (file order, no duplicates) and each visit's versions."""
    out: dict[str, tuple[str, ...]] = {}
    used: dict[str, set[str]] = {}
    stats.update({f"{table}_rows_{k}": 0 for k in (
        "icd9", "icd10", "not_icd", "icd_version_from_visit", "icd_version_unknown")})
    for vid, items in rows.items():
        classified: list[tuple[str, str | None]] = []  # (code, None: either version)
        for value, concept_id in items:
            code = value.strip().upper().replace(".", "")
            version = vocab.version(concept_id, versions) if code else "-"
            if version is None:
                version = shape(code)
            if version is None or version == "-":
                stats[f"{table}_rows_not_icd"] += 1
                continue
            classified.append((code, version or None))
        decided = Counter(v for _, v in classified if v).most_common()
        visit_version = decided[0][0] if decided and (
            len(decided) == 1 or decided[0][1] > decided[1][1]) else None
        codes: dict[str, None] = {}
        for code, version in classified:
            if version is None:
                stats[f"{table}_rows_icd_version_" + ("from_visit" if visit_version
                                                       else "unknown")] += 1
                version = visit_version
                if version is None:
                    continue
            stats[f"{table}_rows_icd{version}"] += 1
            codes.setdefault(code if version == "9" else ICD10_PREFIX + code, None)
            used.setdefault(vid, set()).add(version)
        if codes:
            out[vid] = tuple(codes)
    return out, used


def _drug_mapping(root: Path, mappings_dir: Path | None, vocab: _Vocabulary,
                  stats: dict[str, int]) -> DrugMapping | None:
    if mappings_dir is not None:
        return load_drug_mapping(Path(mappings_dir))
    try:
        return load_drug_mapping(default_mappings_dir(root))
    except DataError:
        if not vocab.atc3:
            raise
        stats["ndc_mapping_missing"] = 1
        return None


def _labels(path: Path, drugs: Counter[tuple[str, str, str]], vocab: _Vocabulary,
            mapping: DrugMapping | None, stats: dict[str, int]) -> dict[str, set[str]]:
    """``visit id -> ATC-3 labels``; each drug row is counted by route or reason."""
    labels: dict[str, set[str]] = defaultdict(set)
    stats.update({f"drug_rows_{k}": 0 for k in ("mapped", "mapped_atc_hierarchy", "mapped_ndc",
                                                 "no_ndc", "unmapped_ndc", "multiple_atc3")})
    for (vid, concept_id, value), n in drugs.items():
        classes = vocab.atc3.get(concept_id, set())
        route = "atc_hierarchy"
        if not classes:
            route, ndc = "ndc", ndc11(value)
            if ndc is None:
                stats["drug_rows_no_ndc"] += n
                continue
            atc3 = mapping.atc3(ndc) if mapping is not None else None
            if atc3 is None:
                stats["drug_rows_unmapped_ndc"] += n
                continue
            classes = {atc3}
        stats["drug_rows_mapped"] += n
        stats[f"drug_rows_mapped_{route}"] += n
        stats["drug_rows_multiple_atc3"] += n if len(classes) > 1 else 0
        labels[vid] |= classes
    if not labels:
        routes = "the ATC hierarchy of concept_ancestor or " if vocab.atc3 else ""
        raise DataError(
            f"{path}: no drug maps to ATC-3 ({stats['drug_rows']} rows, "
            f"{stats['drug_rows_unmapped_ndc']} with an unmapped NDC, "
            f"{stats['drug_rows_no_ndc']} without an NDC; tried {routes}the NDC mappings)")
    return labels


def _resolve_site(site: str, sites: Iterable[str], root: Path) -> str:
    """The care_site_id that ``site`` (an id or a care_site_name) names; else a DataError."""
    path = find_table(root, "care_site", required=False)
    names = {} if path is None else {r["care_site_id"].strip(): r.get("care_site_name", "").strip()
                                     for r in iter_rows(path, ("care_site_id",))}
    known = set(sites) | set(names)
    if site in known:
        return site
    by_name = [cid for cid, name in names.items() if name == site]
    if len(by_name) == 1:
        return by_name[0]
    listed = ", ".join(f"{cid} ({names[cid]})" if names.get(cid) else cid
                       for cid in sorted(known)) or "none (no visit has a care site)"
    raise DataError(f"OMOP site {site!r} not found in {root}; sites: {listed}")


def _visit_sites(visits: dict[str, tuple[str, str, str]], detail_sites: dict[str, str],
                 stats: dict[str, int]) -> dict[str, str]:
    """``visit id -> care_site_id`` ("" for none), each visit counted by where it came from."""
    out: dict[str, str] = {}
    for key in ("visit_occurrence", "visit_detail", "none"):
        stats[f"visits_site_from_{key}"] = 0
    for vid, (_, _, site) in visits.items():
        out[vid] = site or detail_sites.get(vid, "")
        where = "visit_occurrence" if site else "visit_detail" if out[vid] else "none"
        stats[f"visits_site_from_{where}"] += 1
    return out


def omop_sites(path: Path) -> dict[str, int]:
    """``care_site_id -> number of visit_occurrences`` at that site (the rule above)."""
    root = Path(path)
    visits = _read_visits(root, defaultdict(int))
    sites = _visit_sites(visits, _read_details(root, visits)[1], defaultdict(int))
    return dict(sorted(Counter(s for s in sites.values() if s).items()))


def read_omop(
    path: Path,
    mappings_dir: Path | None = None,
    *,
    site: str | None = None,
    hospital: str | None = None,
    min_visits: int = 1,
) -> Cohort:
    """Read one OMOP CDM export folder into a Cohort (one hospital).

    ``site`` keeps only the visits of that care site (an id or a name); the patients are
    tagged ``hospital``, else ``site``, else ``"omop"``.
    """
    root = Path(path)
    if min_visits < 1:
        raise DataError(f"min_visits must be >= 1, got {min_visits}")
    if not root.is_dir():
        raise DataError(f"OMOP folder not found: {root}")
    stats: dict[str, int] = defaultdict(int)
    drug_path = _required(root, "drug_exposure")
    cond_path = _required(root, "condition_occurrence")
    proc_path = find_table(root, "procedure_occurrence", required=False)
    visits = _read_visits(root, stats)
    details, detail_sites = _read_details(root, visits)

    cond = _read_events(cond_path, "condition", "condition_source_value",
                        "condition_source_concept_id", visits, details, stats)
    stats["missing_table_procedure_occurrence"] = int(proc_path is None)
    proc = {} if proc_path is None else _read_events(
        proc_path, "procedure", "procedure_source_value", "procedure_source_concept_id",
        visits, details, stats)
    drugs: Counter[tuple[str, str, str]] = Counter()
    for vid, items in _read_events(drug_path, "drug", "drug_source_value", "drug_concept_id",
                                   visits, details, stats).items():
        drugs.update((vid, concept_id, value) for value, concept_id in items)

    wanted = {c for rows in (cond, proc) for items in rows.values() for _, c in items}
    drug_ids = {c for _, c, _ in drugs}
    vocab = _Vocabulary(root, wanted, drug_ids)
    stats["vocabulary_drug_concepts_with_atc3"] = len(vocab.atc3)
    stats["ndc_mapping_missing"] = 0
    diagnoses, versions = _codes(cond, "condition", vocab, DX_VOCABULARIES, dx_version, stats)
    procedures, _ = _codes(proc, "procedure", vocab, PX_VOCABULARIES, px_version, stats)
    mapping = _drug_mapping(root, mappings_dir, vocab, stats)
    labels = _labels(drug_path, drugs, vocab, mapping, stats)

    sites = _visit_sites(visits, detail_sites, stats)
    wanted_site = None if site is None else _resolve_site(site, filter(None, sites.values()),
                                                          root)
    hospital = hospital or site or "omop"

    stats.update(dict.fromkeys(("visits_dropped_other_site", "visits_dropped_no_diagnosis",
                                "visits_dropped_no_drug_rows", "visits_dropped_no_mapped_drug",
                                "visits_icd9", "visits_icd10", "visits_mixed_icd"), 0))
    drug_visits = {vid for vid, _, _ in drugs}
    by_person: dict[str, list[Visit]] = defaultdict(list)
    for vid, (person, time, _) in visits.items():
        if wanted_site is not None and sites[vid] != wanted_site:
            stats["visits_dropped_other_site"] += 1
        elif vid not in diagnoses:
            stats["visits_dropped_no_diagnosis"] += 1
        elif vid not in labels:
            stats["visits_dropped_no_drug_rows" if vid not in drug_visits
                  else "visits_dropped_no_mapped_drug"] += 1
        else:
            v = versions[vid]
            stats["visits_mixed_icd" if len(v) > 1 else f"visits_icd{next(iter(v))}"] += 1
            by_person[person].append(Visit(vid, time, diagnoses[vid], procedures.get(vid, ()),
                                           tuple(sorted(labels[vid]))))
    patients = gather_patients(by_person, hospital, min_visits, stats)
    if not patients:
        where = f" at site {site!r}" if site is not None else ""
        raise DataError(f"{root}: no usable visits{where} (no person has {min_visits} or more "
                        "visits with an ICD diagnosis and a drug mapped to ATC-3)")
    return Cohort(name=hospital, patients=patients, stats=dict(stats))
