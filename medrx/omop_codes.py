"""The code shapes of the OMOP reader (:mod:`fedrx.medrx.omop`): which ICD version a
source value is by its shape, which vocabulary_id names which ICD version, and the NDC of
a ``drug_source_value``.

A diagnosis of 3-5 digits is ICD-9-CM; a letter, a digit and 1-5 of ``[0-9A-Z]`` is
ICD-10-CM, except ``Vdd[d[d]]`` and ``Eddd[d]``, shapes ICD-9-CM has too: E031-E799 are
ICD-10, E900-E999 ICD-9, the rest "either" (the reader decides them by their visit). A
procedure ``ddd[d]`` is ICD-9-CM, 7 characters of the ICD-10-PCS alphabet (no I, O)
ICD-10-PCS. Codes are upper-cased with the dots removed before they are looked at.
"""

from __future__ import annotations

import re

DX_VOCABULARIES = {"ICD9CM": "9", "ICD10CM": "10", "ICD10": "10"}
PX_VOCABULARIES = {"ICD9Proc": "9", "ICD10PCS": "10"}
_ICD9_DX = re.compile(r"^(?:\d{3,5}|V\d{2,4}|E\d{3,4})$")
_ICD10_DX = re.compile(r"^[A-Z]\d[0-9A-Z]{1,5}$")
_ICD9_PX = re.compile(r"^\d{3,4}$")
_ICD10_PX = re.compile(r"^[0-9A-HJ-NP-Z]{7}$")
_NDC_HYPHEN = re.compile(r"^(\d{4,5})-(\d{3,4})-(\d{1,2})$")


def dx_version(code: str) -> str | None:
    """ICD version of a diagnosis code by its shape: "9", "10", "" (either) or None (no ICD)."""
    nine, ten = bool(_ICD9_DX.match(code)), bool(_ICD10_DX.match(code))
    if nine and ten:
        n = int(code[1:4]) if code[0] == "E" else -1
        return "10" if 31 <= n < 800 else "9" if n >= 900 else ""
    return "9" if nine else "10" if ten else None


def px_version(code: str) -> str | None:
    """ICD version of a procedure code by its shape: "9", "10" or None (no ICD code)."""
    return "9" if _ICD9_PX.match(code) else "10" if _ICD10_PX.match(code) else None


def ndc11(value: str) -> str | None:
    """An 11-digit NDC from ``drug_source_value``, or None when it holds no NDC."""
    v = value.strip()
    if len(v) == 11 and v.isdigit():
        return v
    m = _NDC_HYPHEN.match(v)
    if m and len("".join(m.groups())) in (10, 11):
        a, b, c = m.groups()
        return a.zfill(5) + b.zfill(4) + c.zfill(2)
    return None
