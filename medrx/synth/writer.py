"""The MIMIC-III-layout writer: :func:`generate` draws the cohort (one seeded generator,
in a fixed order) and writes per hospital the four tables, the ``mappings/`` folder and
``SYNTH.json``."""

from __future__ import annotations

import csv
import datetime as _dt
import gzip
import io
import json
import math
import shutil
from pathlib import Path

import numpy as np

from fedrx.errors import ConfigError, DataError
from fedrx.medrx.synth.builtin import BUILTIN_NOTE, builtin_sources
from fedrx.medrx.synth.catalogue import (
    Sources,
    find_mimic3_demo,
    load_sources,
    resolve_source_dirs,
)
from fedrx.medrx.synth.config import SynthConfig, SynthSummary, hospital_name
from fedrx.medrx.synth.hospitals import build_hospitals, hospital_sizes
from fedrx.medrx.synth.layout import DDI_FILE, NDC_ATC, NDC_RXNORM, TABLE_COLUMNS, VOCAB_FILE
from fedrx.medrx.synth.patients import build_model, simulate_visits

# Patient-level categorical attributes (values and rough frequencies of the demo).
_INSURANCE = (("Medicare", 0.6), ("Private", 0.25), ("Medicaid", 0.1), ("Government", 0.05))
_LANGUAGE = (("ENGL", 0.55), ("", 0.3), ("SPAN", 0.1), ("RUSS", 0.03), ("PORT", 0.02))
_RELIGION = (
    ("CATHOLIC", 0.4), ("NOT SPECIFIED", 0.15), ("UNOBTAINABLE", 0.12),
    ("PROTESTANT QUAKER", 0.12), ("JEWISH", 0.08), ("OTHER", 0.05),
    ("EPISCOPALIAN", 0.03), ("BUDDHIST", 0.02), ("MUSLIM", 0.03),
)
_MARITAL = (
    ("MARRIED", 0.45), ("SINGLE", 0.25), ("WIDOWED", 0.12), ("", 0.08),
    ("DIVORCED", 0.07), ("SEPARATED", 0.02), ("UNKNOWN (DEFAULT)", 0.01),
)
_ETHNICITY = (
    ("WHITE", 0.7), ("BLACK/AFRICAN AMERICAN", 0.09), ("UNKNOWN/NOT SPECIFIED", 0.07),
    ("HISPANIC/LATINO - PUERTO RICAN", 0.05), ("ASIAN", 0.04), ("OTHER", 0.03),
    ("HISPANIC OR LATINO", 0.02),
)
_ADM_TYPE = (("EMERGENCY", 0.8), ("ELECTIVE", 0.15), ("URGENT", 0.05))
_ADM_LOC_EMERG = (
    ("EMERGENCY ROOM ADMIT", 0.65), ("TRANSFER FROM HOSP/EXTRAM", 0.2),
    ("CLINIC REFERRAL/PREMATURE", 0.1), ("TRANSFER FROM SKILLED NUR", 0.05),
)
_ADM_LOC_ELECT = (("PHYS REFERRAL/NORMAL DELI", 0.9), ("CLINIC REFERRAL/PREMATURE", 0.1))
_DISCH_LOC = (
    ("HOME", 0.3), ("HOME HEALTH CARE", 0.25), ("SNF", 0.25),
    ("REHAB/DISTINCT PART HOSP", 0.12), ("ICF", 0.03), ("LONG TERM CARE HOSPITAL", 0.05),
)
_FLUIDS = (  # unmapped rows (ndc "0"), as MIMIC records base solutions
    ("BASE", "NS", "", "", "NS1000", "", "0", "1000mL Bag", "1000", "ml", "1000", "ml", "IV"),
    ("BASE", "D5W", "", "", "D5W250", "", "0", "250 mL Bag", "250", "ml", "250", "ml", "IV"),
    ("BASE", "SW", "", "", "SW100", "", "0", "100mL Bag", "100", "ml", "100", "ml", "IV"),
)


def _pick(rng: np.random.Generator, table: tuple[tuple[str, float], ...], n: int) -> np.ndarray:
    vals = np.array([v for v, _ in table], dtype=object)
    w = np.array([p for _, p in table], dtype=float)
    return vals[rng.choice(len(vals), size=n, p=w / w.sum())]


def _fmt(ts: np.ndarray) -> list[str]:
    """datetime64[m] -> 'YYYY-MM-DD HH:MM:00'."""
    s = np.datetime_as_string(ts, unit="m")
    return [x.replace("T", " ") + ":00" for x in s.tolist()]


def _ndc_dashed_to_11(ndc: str) -> str:
    parts = ndc.split("-")
    if len(parts) != 3:
        return ""
    a, b, c = parts
    return a.zfill(5) + b.zfill(4) + c.zfill(2)


def _write_csv(path: Path, header: tuple[str, ...], rows: list[tuple]) -> None:
    with open(path, "w", encoding="utf-8", newline="") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(header)
        w.writerows(rows)


def _write_mappings(out: Path, src: Sources) -> None:
    out.mkdir(parents=True, exist_ok=True)
    items = []
    rows: list[tuple[str, ...]] = []
    for drugs in src.drugs:
        for d in drugs:
            items.append(f"'{d.ndc}': u'{d.rxcui}'")
            own = [r for r in d.atc_rows if _ndc_dashed_to_11(r[2]) == d.ndc]
            rows.extend(own or d.atc_rows[:1])
            rows.extend(r for r in d.atc_rows[:2] if r not in own)
    (out / NDC_RXNORM).write_text("{" + ", ".join(items) + "}", encoding="utf-8")
    seen: set[tuple[str, ...]] = set()
    buf = io.StringIO()
    buf.write('"YEAR","MONTH","NDC","RXCUI","ATC5"\n')
    for r in rows:
        if r in seen:
            continue
        seen.add(r)
        buf.write(f'{r[0]},{r[1]},"{r[2]}",{r[3]},"{r[4]}"\n')
    with open(out / NDC_ATC, "wb") as raw:
        with gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as gz:
            gz.write(buf.getvalue().encode("utf-8"))
    (out / DDI_FILE).write_text(src.ddi_text, encoding="utf-8")
    (out / VOCAB_FILE).write_text(src.vocab_text, encoding="utf-8")


def _prepare_out_dir(out_dir: Path, overwrite: bool) -> None:
    if out_dir.exists() and not out_dir.is_dir():
        raise DataError(f"output {out_dir} exists and is not a folder")
    if out_dir.is_dir() and any(out_dir.iterdir()):
        if not overwrite:
            raise DataError(f"output folder {out_dir} is not empty (pass overwrite=True / "
                            "--overwrite to replace it)")
        for child in out_dir.iterdir():
            if child.is_dir() and not child.is_symlink():
                shutil.rmtree(child)
            else:
                child.unlink()
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DataError(f"cannot create output folder {out_dir}: {exc.strerror}") from None


def select_sources(config: SynthConfig, mappings_dir: Path | None) -> tuple[Sources, str]:
    """The code catalogue for ``config`` and its kind (``"demo"`` or ``"builtin"``).

    ``"auto"`` takes the demo when ``mappings_dir`` is given or the demo is found
    (errors reading it propagate), else the built-in catalogue; ``"builtin"`` refuses a
    ``mappings_dir`` (ConfigError), ``"demo"`` raises DataError when there is no demo.
    """
    kind = config.catalogue
    if kind == "builtin" and mappings_dir is not None:
        raise ConfigError("synth: a mappings folder is for catalogue 'demo' (or 'auto'), "
                          "not 'builtin'")
    if kind == "auto" and mappings_dir is None:
        try:
            find_mimic3_demo()
            kind = "demo"
        except DataError:
            kind = "builtin"
    if kind == "builtin":
        return builtin_sources(config.seed, config.n_diagnosis_codes,
                               config.n_procedure_codes, config.n_labels), "builtin"
    demo, maps = resolve_source_dirs(mappings_dir)
    return load_sources(str(demo.resolve()), str(maps.resolve()), config.n_diagnosis_codes,
                        config.n_procedure_codes, config.n_labels), "demo"


def generate(config: SynthConfig, out_dir: Path, mappings_dir: Path | None = None,
             *, overwrite: bool = False) -> SynthSummary:
    """Generate the synthetic cohort under ``out_dir``; return what was written.

    The codes come from ``config.catalogue`` (see :func:`select_sources`):
    ``mappings_dir`` is the real drug-mapping folder (``mimic3-demo/mappings``) or the
    ``mimic3-demo`` folder itself; ``None`` locates it (``FEDRX_DATA_ROOT``, else a
    ``shared/data`` folder above this file or the cwd). The ICD-9 dictionaries are read
    from the ``mimic3-demo`` folder. With no demo found, ``"auto"`` uses the built-in
    synthetic catalogue; ``summary.catalogue`` says which was used. Raises
    :class:`ConfigError` for an invalid config and :class:`DataError` if the sources are
    missing or ``out_dir`` is a non-empty folder and ``overwrite`` is false (with
    ``overwrite`` its contents are replaced).

    Invariants of the output: ``subject_id``/``hadm_id`` unique across hospitals; a
    patient's admissions are in time order and do not overlap; every admission has >= 1
    diagnosis, >= 1 procedure and >= 1 prescription with a mappable NDC (unless its table
    is configured missing); ``row_id`` is unique per table across hospitals.
    """
    if not isinstance(config, SynthConfig):
        raise ConfigError(f"synth: expected a SynthConfig, got {type(config).__name__}")
    config.validate()
    out_dir = Path(out_dir)
    src, kind = select_sources(config, mappings_dir)
    _prepare_out_dir(out_dir, overwrite)

    rng = np.random.Generator(np.random.PCG64(config.seed))
    model = build_model(rng, config, src)
    hosps = build_hospitals(rng, config, model.cluster_pop, src)
    missing = config.missing_by_hospital(rng)
    sizes = hospital_sizes(config)
    names = [hospital_name(i) for i in range(config.hospitals)]
    hosp_of = np.repeat(np.arange(config.hospitals), sizes)
    n = int(hosp_of.size)
    n_visits = np.minimum(rng.geometric(1.0 / config.mean_visits, size=n), config.max_visits)
    records = simulate_visits(rng, config, model, hosps, hosp_of, n_visits)

    # Identifiers: subject ids increase with random gaps; hadm ids are a random sample.
    subject_ids = 10000 + np.cumsum(rng.integers(1, 4, size=n))
    total_visits = int(n_visits.sum())
    hadm_space = max(900000, 4 * total_visits)
    hadm_ids = 100000 + rng.choice(hadm_space, size=total_visits, replace=False)
    # Times (minutes): first admission in years 2100-2200, then LOS and gaps.
    first = np.datetime64("2100-01-01T00:00") + rng.integers(
        0, 100 * 365 * 1440, size=n).astype("timedelta64[m]")
    los = (rng.lognormal(math.log(5.0), 0.6, size=total_visits) * 1440).astype(np.int64) + 180
    gap = (rng.exponential(200.0, size=total_visits) * 1440).astype(np.int64) + 2 * 1440
    owner = np.repeat(np.arange(n), n_visits)
    starts_of = np.concatenate([[0], np.cumsum(n_visits)[:-1]])
    step = los + gap
    step_cum = np.cumsum(step)
    before = step_cum - step  # sum of steps before this visit (global)
    offset = before - before[starts_of][owner]
    admit = first[owner] + offset.astype("timedelta64[m]")
    disch = admit + los.astype("timedelta64[m]")
    admit_s, disch_s = _fmt(admit), _fmt(disch)
    ed_s = _fmt(admit - rng.integers(60, 360, size=total_visits).astype("timedelta64[m]"))
    edout_s = _fmt(admit + rng.integers(10, 120, size=total_visits).astype("timedelta64[m]"))
    day0 = admit.astype("datetime64[D]")
    los_days = (disch.astype("datetime64[D]") - day0).astype(int)

    adm_type = _pick(rng, _ADM_TYPE, total_visits)
    loc_em = _pick(rng, _ADM_LOC_EMERG, total_visits)
    loc_el = _pick(rng, _ADM_LOC_ELECT, total_visits)
    disch_loc = _pick(rng, _DISCH_LOC, total_visits)
    dies = rng.random(n) < 0.1
    pat_attrs = [_pick(rng, t, n) for t in (_INSURANCE, _LANGUAGE, _RELIGION, _MARITAL,
                                             _ETHNICITY)]
    u_visit = rng.random((total_visits, 2))

    counters = {"ADMISSIONS": 0, "DIAGNOSES_ICD": 0, "PROCEDURES_ICD": 0, "PRESCRIPTIONS": 0}
    row_base = {"ADMISSIONS": 12000, "DIAGNOSES_ICD": 110000, "PROCEDURES_ICD": 3900,
                "PRESCRIPTIONS": 30000}
    summary = SynthSummary(hospitals=names, patients={}, visits={}, out_dir=out_dir,
                           labels=list(src.labels), catalogue=kind)
    sum_dx = sum_px = sum_lab = 0
    day_str: dict[int, str] = {}

    def day(d: int) -> str:
        s = day_str.get(d)
        if s is None:
            s = (_dt.date(1970, 1, 1) + _dt.timedelta(days=d)).isoformat() + " 00:00:00"
            day_str[d] = s
        return s

    patient_start = 0
    for h, name in enumerate(names):
        hdir = out_dir / name
        hdir.mkdir(parents=True, exist_ok=True)
        hosp = hosps[h]
        adm_rows: list[tuple] = []
        dx_rows: list[tuple] = []
        px_rows: list[tuple] = []
        rx_rows: list[tuple] = []
        n_vis = 0
        for i in range(patient_start, patient_start + sizes[h]):
            subj = int(subject_ids[i])
            v0 = int(starts_of[i])
            nv = int(n_visits[i])
            for t, (dxs, pxs, labs) in enumerate(records[i]):
                v = v0 + t
                hadm = int(hadm_ids[v])
                last_death = bool(dies[i]) and t == nv - 1
                a_type = str(adm_type[v])
                em = a_type != "ELECTIVE"
                counters["ADMISSIONS"] += 1
                adm_rows.append((
                    row_base["ADMISSIONS"] + counters["ADMISSIONS"], subj, hadm,
                    admit_s[v], disch_s[v], disch_s[v] if last_death else "", a_type,
                    str(loc_em[v]) if em else str(loc_el[v]),
                    "DEAD/EXPIRED" if last_death else str(disch_loc[v]),
                    *(str(a[i]) for a in pat_attrs),
                    ed_s[v] if em and a_type == "EMERGENCY" else "",
                    edout_s[v] if em and a_type == "EMERGENCY" else "",
                    src.dx_titles[int(dxs[0])].upper(), int(last_death), 1,
                ))
                for s, d in enumerate(dxs.tolist(), 1):
                    counters["DIAGNOSES_ICD"] += 1
                    dx_rows.append((row_base["DIAGNOSES_ICD"] + counters["DIAGNOSES_ICD"],
                                    subj, hadm, s, src.dx_codes[d]))
                for s, p in enumerate(pxs.tolist(), 1):
                    counters["PROCEDURES_ICD"] += 1
                    px_rows.append((row_base["PROCEDURES_ICD"] + counters["PROCEDURES_ICD"],
                                    subj, hadm, s, src.px_codes[p]))
                d0 = int(day0[v].astype(int))
                nd = int(los_days[v])
                extra = 1 if u_visit[v, 0] < config.unmapped_rx_prob else 0
                labs_l = labs.tolist()
                k = len(labs_l)
                choice = rng.random((k + extra, 4))
                for j, lab in enumerate(labs_l):
                    opts = src.drugs[lab]
                    di = int(hosp.ndc_pref[lab])
                    if len(opts) > 1 and choice[j, 0] < 0.15:
                        di = int(choice[j, 1] * len(opts)) % len(opts)
                    meta = opts[di].meta
                    n_rows = 2 if choice[j, 2] < 0.25 else 1
                    for r in range(n_rows):
                        sd = d0 + int(choice[j, 3] * (nd + 1)) if r == 0 else d0 + nd
                        ed = min(sd + 1 + (j + r) % 3, d0 + nd + 1)
                        counters["PRESCRIPTIONS"] += 1
                        rx_rows.append((row_base["PRESCRIPTIONS"] + counters["PRESCRIPTIONS"],
                                        subj, hadm, "", day(sd), day(ed), *meta))
                if extra:
                    meta = _FLUIDS[int(choice[k, 0] * len(_FLUIDS)) % len(_FLUIDS)]
                    counters["PRESCRIPTIONS"] += 1
                    rx_rows.append((row_base["PRESCRIPTIONS"] + counters["PRESCRIPTIONS"],
                                    subj, hadm, "", day(d0), day(d0 + 1), *meta))
                sum_dx += len(dxs)
                sum_px += len(pxs)
                sum_lab += k
                n_vis += 1
        patient_start += sizes[h]
        tables = {"ADMISSIONS": adm_rows, "DIAGNOSES_ICD": dx_rows,
                  "PROCEDURES_ICD": px_rows, "PRESCRIPTIONS": rx_rows}
        gone = missing.get(h, set())
        for table, rows in tables.items():
            if table in gone:
                if config.missing_mode == "header":
                    _write_csv(hdir / f"{table}.csv", TABLE_COLUMNS[table], [])
                continue
            _write_csv(hdir / f"{table}.csv", TABLE_COLUMNS[table], rows)
        summary.patients[name] = sizes[h]
        summary.visits[name] = n_vis
        if gone:
            summary.missing_tables[name] = sorted(gone)

    _write_mappings(out_dir / "mappings", src)
    summary.mean_diagnoses = round(sum_dx / total_visits, 4)
    summary.mean_procedures = round(sum_px / total_visits, 4)
    summary.mean_labels = round(sum_lab / total_visits, 4)
    meta = {"generator": "fedrx.medrx.synth", "config": config.to_json(),
            "summary": summary.to_json()}
    if kind == "builtin":  # absent for the demo catalogue: its SYNTH.json is unchanged
        meta["catalogue"] = f"builtin: {BUILTIN_NOTE}"
    (out_dir / "SYNTH.json").write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n",
                                        encoding="utf-8")
    return summary
