"""The shared MIMIC-III demo as the synth tests see it: ``DEMO`` (None when it is absent),
the ``needs_data`` skip mark, and ``small_config(**kw)``, a small :class:`SynthConfig`
(3 hospitals, 300 patients, seed 7) with ``kw`` overriding."""

from __future__ import annotations

from pathlib import Path

import pytest

from fedrx.errors import DataError
from fedrx.medrx.synth.catalogue import find_mimic3_demo
from fedrx.medrx.synth.config import SynthConfig


def _demo() -> Path | None:
    try:
        return find_mimic3_demo()
    except DataError:
        return None


DEMO = _demo()
needs_data = pytest.mark.skipif(DEMO is None, reason="shared mimic3-demo data not found")


def small_config(**kw) -> SynthConfig:
    base = {"hospitals": 3, "patients": 300, "seed": 7}
    base.update(kw)
    return SynthConfig(**base)
