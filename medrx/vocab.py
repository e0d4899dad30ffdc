"""The shared vocabulary: diagnosis, procedure and label code lists with fixed indices.

Every hospital in a federation encodes its visits with the SAME vocabulary, so model
parameters line up. It is stored as JSON (``vocab.json``: three lists, order = index),
never pickled. Building it from data reveals which codes occur; in a federation it is
agreed once before training (see threat_model.md).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from fedrx.atomic import atomic_write_text
from fedrx.errors import DataError
from fedrx.medrx.records import Patient

FORMAT = "fedrx-vocab/1"


@dataclass(frozen=True)
class Vocabulary:
    """Code lists; a code's index is its position. Invariant: no duplicates."""

    diagnoses: tuple[str, ...]
    procedures: tuple[str, ...]
    labels: tuple[str, ...]

    def __post_init__(self) -> None:
        for name in ("diagnoses", "procedures", "labels"):
            vals = getattr(self, name)
            if len(set(vals)) != len(vals):
                raise DataError(f"vocabulary {name} has duplicate codes")

    @property
    def sizes(self) -> tuple[int, int, int]:
        return len(self.diagnoses), len(self.procedures), len(self.labels)

    def index(self) -> tuple[dict[str, int], dict[str, int], dict[str, int]]:
        return (
            {c: i for i, c in enumerate(self.diagnoses)},
            {c: i for i, c in enumerate(self.procedures)},
            {c: i for i, c in enumerate(self.labels)},
        )

    def to_json(self) -> dict:
        return {
            "format": FORMAT,
            "diagnoses": list(self.diagnoses),
            "procedures": list(self.procedures),
            "labels": list(self.labels),
        }

    def save(self, path: Path) -> None:
        atomic_write_text(Path(path), json.dumps(self.to_json(), indent=1) + "\n")

    @staticmethod
    def load(path: Path) -> Vocabulary:
        try:
            obj = json.loads(Path(path).read_text(encoding="utf-8"))
        except OSError as exc:
            raise DataError(f"cannot read vocabulary {path}: {exc.strerror}") from None
        except json.JSONDecodeError as exc:
            raise DataError(f"vocabulary {path}: not valid JSON ({exc.msg})") from None
        if not isinstance(obj, dict) or obj.get("format") != FORMAT:
            raise DataError(f"vocabulary {path}: not a {FORMAT} file")
        try:
            return Vocabulary(
                tuple(map(str, obj["diagnoses"])),
                tuple(map(str, obj["procedures"])),
                tuple(map(str, obj["labels"])),
            )
        except (KeyError, TypeError):
            raise DataError(f"vocabulary {path}: missing code lists") from None


def build_vocabulary(
    patients: Iterable[Patient], *, min_count: int = 1, max_diagnoses: int | None = 2000,
    max_procedures: int | None = None, max_labels: int | None = None,
) -> Vocabulary:
    """Vocabulary of codes seen at least ``min_count`` times, most frequent first.

    Ties are broken by code so the result is deterministic. ``max_diagnoses`` defaults to
    2000, as in GAMENet's preprocessing.
    """
    dx: Counter[str] = Counter()
    px: Counter[str] = Counter()
    lab: Counter[str] = Counter()
    for p in patients:
        for v in p.visits:
            dx.update(v.diagnoses)
            px.update(v.procedures)
            lab.update(v.labels)

    def top(c: Counter[str], k: int | None) -> tuple[str, ...]:
        items = sorted(((n, code) for code, n in c.items() if n >= min_count),
                       key=lambda t: (-t[0], t[1]))
        if k is not None:
            items = items[:k]
        return tuple(code for _, code in items)

    vocab = Vocabulary(top(dx, max_diagnoses), top(px, max_procedures), top(lab, max_labels))
    if not vocab.labels:
        raise DataError("no drug labels in the training data: cannot build a vocabulary")
    return vocab
