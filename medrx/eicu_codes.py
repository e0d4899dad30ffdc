"""eICU codes and drug names: splitting the ``icd9code`` field (:func:`split_icd_codes`),
truncating treatment paths (:func:`truncate_treatment`) and mapping free-text drug names to
ATC-3 classes through a curated lexicon (:class:`DrugLexicon`,
``resources/eicu_drug_atc3.csv``, :func:`load_lexicon`). The reader is
:mod:`fedrx.medrx.eicu`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from fedrx.errors import DataError
from fedrx.medrx.tables import iter_columns

DEFAULT_LEXICON_PATH = Path(__file__).resolve().parent / "resources" / "eicu_drug_atc3.csv"

_ATC3 = re.compile(r"^[A-Z][0-9]{2}[A-Z]$")
_TOKEN_SPLIT = re.compile(r"[^A-Z0-9]+")
# ICD-9-CM DIAGNOSIS formats: 3 digits (+ up to 2 decimals), V + 2 digits (+ up to 2
# decimals), E + 3 digits (+ 1 decimal). ICD-10-CM E codes have only 2 digits after the
# letter (E87.2), so an E code is never ambiguous; ICD-10-CM V codes (V43.52XA) are told
# apart by position (see split_icd_codes).
_ICD9_DX = re.compile(
    r"^(?:[0-9]{3}(?:\.[0-9]{1,2})?|V[0-9]{2}(?:\.[0-9]{1,2})?|E[0-9]{3}(?:\.[0-9])?)$"
)


def split_icd_codes(field: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Split an eICU ``icd9code`` field into (ICD-9-CM codes without dot, other codes).

    eICU writes the ICD-9-CM code(s) FIRST and the ICD-10-CM code(s) after them, e.g.
    ``"401.9, I10"`` or ``"E980.2, 965.00, T40.60"``. The rule:

    1. split on commas, strip and upper-case each token, drop empty tokens;
    2. the leading run of tokens that have an ICD-9-CM *diagnosis* format -- ``ddd`` or
       ``ddd.d[d]``, ``Vdd[.d[d]]``, ``Eddd[.d]`` -- is ICD-9;
    3. the first token that does not have that format, and EVERY token after it, is
       returned as "other" (ICD-10-CM, or an ICD-9 procedure code such as ``31.1``).

    E codes are unambiguous by format (ICD-9 ``E980.2`` has 3 digits, ICD-10 ``E87.2``
    has 2). V codes are decided by position: a ``Vdd.dd``-shaped token after an ICD-10
    token is ICD-10 (external cause), one in the leading run is ICD-9 (``V62.84``).
    ICD-9 codes lose their dot (``"401.9"`` -> ``"4019"``, MIMIC-III style); duplicates
    are removed, first occurrence kept.
    """
    icd9: list[str] = []
    other: list[str] = []
    in_icd9 = True
    for raw in field.split(","):
        token = raw.strip().upper()
        if not token:
            continue
        if in_icd9 and _ICD9_DX.match(token):
            code = token.replace(".", "")
            if code not in icd9:
                icd9.append(code)
        else:
            in_icd9 = False
            if token not in other:
                other.append(token)
    return tuple(icd9), tuple(other)


def truncate_treatment(path: str, depth: int = 3) -> str:
    """First ``depth`` levels of an eICU ``treatmentstring`` (``"a|b|c|d"`` -> ``"a|b|c"``).

    Levels are stripped of surrounding blanks; empty levels are dropped. An empty path
    gives ``""``.
    """
    parts = [p.strip() for p in path.split("|")]
    return "|".join([p for p in parts if p][:depth])


# --------------------------------------------------------------------------- lexicon


def _tokens(text: str) -> tuple[str, ...]:
    return tuple(t for t in _TOKEN_SPLIT.split(text.upper()) if t)


@dataclass(frozen=True)
class _Pattern:
    tokens: tuple[str, ...]
    text: str
    atc3: str


class DrugLexicon:
    """Maps free-text eICU drug names to ATC-3 classes.

    A pattern matches a drug name when its word sequence occurs in the name's word
    sequence, where words are the maximal runs of ``A-Z0-9`` in the upper-cased text
    (so ``"K-DUR"`` matches ``"K-DUR 20 MEQ"`` and ``"ALBUTEROL-IPRATROPIUM"`` also
    matches ``"ALBUTEROL/IPRATROPIUM"``, but ``"NS"`` does not match ``"NSS"``).
    The longest matching pattern (most characters in its normalised word sequence)
    wins; ties go to the pattern found earlier in the name, then to the smaller text.
    Results are cached per distinct name.
    """

    def __init__(self, patterns: dict[str, str]) -> None:
        self._by_first: dict[str, list[_Pattern]] = {}
        for text, atc3 in patterns.items():
            toks = _tokens(text)
            if not toks:
                raise DataError(f"drug lexicon pattern {text!r} has no letters or digits")
            self._by_first.setdefault(toks[0], []).append(_Pattern(toks, " ".join(toks), atc3))
        self._cache: dict[str, str | None] = {}
        self.size = len(patterns)

    def match(self, name: str) -> str | None:
        """ATC-3 class of drug name ``name``, or ``None`` when no pattern matches."""
        try:
            return self._cache[name]
        except KeyError:
            pass
        toks = _tokens(name)
        best: tuple[int, int, str] | None = None
        best_atc: str | None = None
        for i, tok in enumerate(toks):
            for pat in self._by_first.get(tok, ()):
                n = len(pat.tokens)
                if toks[i : i + n] == pat.tokens:
                    key = (-len(pat.text), i, pat.text)
                    if best is None or key < best:
                        best, best_atc = key, pat.atc3
        if len(self._cache) < 2_000_000:
            self._cache[name] = best_atc
        return best_atc


def load_lexicon(path: Path | None = None) -> DrugLexicon:
    """Load a ``pattern,atc3,note`` CSV (default: the shipped eICU lexicon).

    Patterns are case-insensitive; ``atc3`` must look like ``B01A``. A pattern listed
    twice is an error.
    """
    path = Path(path) if path is not None else DEFAULT_LEXICON_PATH
    if not path.is_file():
        raise DataError(f"drug lexicon not found: {path}")
    patterns: dict[str, str] = {}
    for line, (pattern, atc3) in iter_columns(path, ("pattern", "atc3")):
        pattern = pattern.strip().upper()
        atc3 = atc3.strip().upper()
        if not pattern:
            raise DataError(f"{path}:{line}: empty pattern")
        if not _ATC3.match(atc3):
            raise DataError(f"{path}:{line}: {atc3!r} is not an ATC level-3 code (like B01A)")
        if pattern in patterns:
            raise DataError(f"{path}:{line}: pattern {pattern!r} is listed twice")
        patterns[pattern] = atc3
    if not patterns:
        raise DataError(f"{path}: drug lexicon has no patterns")
    return DrugLexicon(patterns)
