"""fedrx's built-in code catalogue for the synthetic cohort: SYNTHETIC codes, NOT real ones.

Used by :func:`~fedrx.medrx.synth.writer.generate` when the MIMIC-III demo is not found
(``SynthConfig.catalogue = "auto"``) or when asked for (``"builtin"``), so that
``fedrx data synth`` runs on a fresh machine with no data at all. Nothing here is read
from outside the package, and nothing is a real clinical record:

* diagnoses: ICD-9-CM-*shaped* codes (a 3-digit category ``001``-``999`` or a ``V01``-
  ``V91`` supplementary category, plus a 0-2 digit subcode, no dot: ``"4019"``,
  ``"V5861"``). They are drawn at random; one may coincide with a real ICD-9 code, but
  its meaning does not. Titles are ``"<ICD-9 chapter> <code> (synthetic)"``;
* procedures: ICD-9-procedure-shaped codes (2-digit category + 1-2 digits: ``"3893"``);
* drug classes: real ATC-3 class names, those of the eICU drug lexicon shipped in the
  package (``medrx/resources/eicu_drug_atc3.csv``, via
  :func:`fedrx.medrx.public_vocab.lexicon_atc3`); the ATC-4 level below them is a made-up
  letter;
* drugs: made-up 11-digit NDCs (5-3-2 labeler-product-package, zero-padded to 5-4-2) and
  made-up RxCUIs (``RXCUI_BASE`` and up, above the RxCUIs RxNorm has assigned so far),
  1-3 per class, named after one of the lexicon's drug-name patterns of the class;
* the mapping files are written in exactly the GAMENet format the MIMIC-III reader
  (:func:`fedrx.medrx.mimic.load_drug_mapping`) reads, and the DDI pairs (random pairs
  of the chosen classes, about ``DDI_DENSITY`` of all pairs) in the ``atc3_a,atc3_b``
  format of :func:`fedrx.medrx.metrics.load_ddi_pairs`. The DDI graph is random: DDI
  rates measured on it say nothing about real drug interactions.

Everything is a function of the seed (its own stream, ``SeedSequence(seed, spawn_key=
(CATALOGUE_STREAM,))``, apart from the cohort's generator): the same seed gives the same
catalogue, a different seed a different one.
"""

from __future__ import annotations

import csv
from functools import lru_cache
from importlib import resources

import numpy as np

from fedrx.medrx.public_vocab import lexicon_atc3
from fedrx.medrx.synth.catalogue import Drug, Sources

BUILTIN_NOTE = "synthetic ICD-9-shaped diagnosis/procedure codes, NDCs and RxCUIs, not real ones"
LEXICON = "resources/eicu_drug_atc3.csv"  # inside the fedrx.medrx package
CATALOGUE_STREAM = 0xC0DE  # spawn key of the catalogue's random stream
RXCUI_BASE = 9_000_000
DDI_DENSITY = 0.06
V_CODE_SHARE = 0.1  # share of diagnosis categories that are V-codes

# ICD-9-CM chapters (first code of each range, title), for the synthetic titles.
_CHAPTERS = (
    (1, "INFECTIOUS"), (140, "NEOPLASM"), (240, "ENDOCRINE METABOLIC"), (280, "BLOOD"),
    (290, "MENTAL"), (320, "NERVOUS SENSE"), (390, "CIRCULATORY"), (460, "RESPIRATORY"),
    (520, "DIGESTIVE"), (580, "GENITOURINARY"), (630, "PREGNANCY"), (680, "SKIN"),
    (710, "MUSCULOSKELETAL"), (740, "CONGENITAL"), (760, "PERINATAL"), (780, "SYMPTOMS"),
    (800, "INJURY POISONING"),
)
# (prod_strength suffix, form_unit_disp, route) of the synthetic drug products.
_FORMS = (("Tab", "TAB", "PO"), ("Cap", "CAP", "PO"), ("Vial", "VIAL", "IV"),
          ("Syringe", "SYR", "SC"), ("Bag", "BAG", "IV"), ("Inhaler", "INH", "IH"))
_STRENGTHS = (1, 2, 5, 10, 20, 25, 40, 50, 100, 250, 500)


def _chapter(code: str) -> str:
    if code.startswith("V"):
        return "SUPPLEMENTARY"
    cat = int(code[:3])
    return next(t for lo, t in reversed(_CHAPTERS) if cat >= lo)


def _dotted(code: str) -> str:
    """``"4019"`` -> ``"401.9"``; a bare category stays as it is."""
    return f"{code[:3]}.{code[3:]}" if len(code) > 3 else code


def _subcoded(rng: np.random.Generator, cats: list[str], n: int, digits: tuple[int, ...],
              p: tuple[float, ...]) -> list[str]:
    """``min(n, all)`` distinct codes, sorted: a category of ``cats`` + a subcode of ``k``
    digits, ``k`` in ``digits`` with probability ``p`` (spread evenly over the subcodes)."""
    codes: list[str] = []
    weights: list[float] = []
    for k, pk in zip(digits, p, strict=True):
        subs = [f"{i:0{k}d}" for i in range(10**k)] if k else [""]
        codes += [c + sub for c in cats for sub in subs]
        weights += [pk / len(subs)] * (len(cats) * len(subs))
    w = np.asarray(weights)
    pick = rng.choice(len(codes), size=min(n, len(codes)), replace=False, p=w / w.sum())
    return sorted(codes[int(i)] for i in pick)


def _zipf_freq(rng: np.random.Generator, n: int, a: float, floor: float) -> tuple[float, ...]:
    """Heavy-tailed frequencies (Zipf exponent ``a`` over a random order) plus ``floor``."""
    ranks = rng.permutation(n) + 1
    return tuple(float(round(1000.0 / r**a, 3) + floor) for r in ranks)


def _lexicon_names() -> dict[str, list[str]]:
    """Drug-name patterns of the shipped lexicon, by ATC-3 class (file order)."""
    text = resources.files("fedrx.medrx").joinpath(LEXICON).read_text(encoding="utf-8")
    names: dict[str, list[str]] = {}
    for row in csv.DictReader(text.splitlines()):
        names.setdefault(row["atc3"].strip(), []).append(row["pattern"].strip().upper())
    return names


def _drugs(rng: np.random.Generator, labels: list[str], names: dict[str, list[str]]
           ) -> tuple[tuple[Drug, ...], ...]:
    n_drugs = [int(k) for k in rng.integers(1, 4, size=len(labels))]
    total = sum(n_drugs)
    rxcuis = RXCUI_BASE + np.sort(rng.choice(900_000, size=total, replace=False))
    # Products: distinct (labeler, product) pairs; packages 01-99.
    prods = rng.choice(100_000 * 1000, size=total, replace=False)
    out: list[tuple[Drug, ...]] = []
    j = 0
    for lab, k in zip(labels, n_drugs, strict=True):
        per: list[Drug] = []
        for _ in range(k):
            labeler, product = divmod(int(prods[j]), 1000)
            packs = sorted({int(x) for x in rng.integers(1, 100, size=int(rng.integers(1, 3)))})
            rx = str(int(rxcuis[j]))
            atc4 = lab + "ABCDEFGX"[int(rng.integers(8))]
            dashed = [f"{labeler:05d}-{product:03d}-{pk:02d}" for pk in packs]
            ndc = f"{labeler:05d}0{product:03d}{packs[0]:02d}"
            rows = tuple((str(int(rng.integers(2000, 2017))), f"{int(rng.integers(1, 13)):02d}",
                          d, rx, atc4) for d in dashed)
            pool = names.get(lab) or [f"SYNTHETIC {lab}"]
            name = pool[int(rng.integers(len(pool)))]
            suffix, unit, route = _FORMS[int(rng.integers(len(_FORMS)))]
            dose = _STRENGTHS[int(rng.integers(len(_STRENGTHS)))]
            meta = ("MAIN", name, name, name, f"{name[:4].replace(' ', '')}{dose}"[:10],
                    f"{int(rng.integers(1, 80000)):06d}", ndc, f"{dose}mg {suffix}",
                    str(dose), "mg", "1", unit, route)
            per.append(Drug(ndc, rx, atc4, meta, rows))
            j += 1
        out.append(tuple(per))
    return tuple(out)


@lru_cache(maxsize=4)
def builtin_sources(seed: int, n_dx: int, n_px: int, n_labels: int) -> Sources:
    """The built-in (synthetic) catalogue for ``seed``: ``n_dx`` diagnosis codes,
    ``n_px`` procedure codes (each at most what the code shapes allow) and
    ``min(n_labels, number of lexicon ATC-3 classes)`` drug classes with 1-3 drugs each.
    Deterministic in its arguments."""
    rng = np.random.Generator(np.random.PCG64(
        np.random.SeedSequence(seed, spawn_key=(CATALOGUE_STREAM,))))
    # Diagnoses: about 3 codes per category, V-codes ~10% of the categories.
    n_cat = max(n_dx // 3, 10)
    n_v = min(91, max(1, round(n_cat * V_CODE_SHARE)))
    n_num = min(999, n_cat - n_v)
    cats = [f"{int(c):03d}" for c in rng.choice(np.arange(1, 1000), n_num, replace=False)]
    cats += [f"V{int(c):02d}" for c in rng.choice(np.arange(1, 92), n_v, replace=False)]
    dx_codes = _subcoded(rng, cats, n_dx, (0, 1, 2), (0.15, 0.4, 0.45))
    dx_titles = tuple(f"{_chapter(c)} {_dotted(c)} (synthetic)" for c in dx_codes)
    dx_freq = _zipf_freq(rng, n_dx, 1.0, 0.5)
    px_cats = [f"{int(c):02d}" for c in rng.choice(100, min(max(n_px // 2, 5), 100),
                                                    replace=False)]
    px_codes = _subcoded(rng, px_cats, n_px, (1, 2), (0.35, 0.65))
    # Drug classes: a sample of the lexicon's ATC-3 classes, in code order.
    vocab = sorted(lexicon_atc3())
    k = min(n_labels, len(vocab))
    labels = sorted(vocab[int(i)] for i in rng.choice(len(vocab), size=k, replace=False))
    label_freq = _zipf_freq(rng, k, 1.2, 5.0)
    drugs = _drugs(rng, labels, _lexicon_names())
    pairs = [(a, b) for i, a in enumerate(labels) for b in labels[i + 1:]]
    keep = rng.random(len(pairs)) < DDI_DENSITY
    chosen = [p for p, m in zip(pairs, keep, strict=True) if m] or pairs[:1]
    ddi_text = "atc3_a,atc3_b\n" + "".join(f"{a},{b}\n" for a, b in chosen)
    vocab_text = "atc3,builtin_idx\n" + "".join(f"{a},{i}\n" for i, a in enumerate(vocab))
    return Sources(tuple(dx_codes), dx_titles, dx_freq, tuple(px_codes), tuple(labels),
                   label_freq, drugs, ddi_text, vocab_text)
