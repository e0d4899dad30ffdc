"""Locating the real code catalogues (fedrx.medrx.synth.catalogue)."""

from __future__ import annotations

from pathlib import Path

import pytest
from synth_demo import DEMO, needs_data, small_config

from fedrx.errors import DataError
from fedrx.medrx.synth.catalogue import find_mimic3_demo
from fedrx.medrx.synth.writer import generate


def test_data_root_env_not_found(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FEDRX_DATA_ROOT", str(tmp_path))
    with pytest.raises(DataError, match="FEDRX_DATA_ROOT"):
        find_mimic3_demo()
    with pytest.raises(DataError, match="FEDRX_DATA_ROOT"):  # "auto" falls back instead
        generate(small_config(catalogue="demo"), tmp_path / "out")


def test_bad_mappings_dir(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="ndc2rxnorm"):
        generate(small_config(), tmp_path / "out", mappings_dir=tmp_path)


@needs_data
def test_env_data_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert DEMO is not None
    monkeypatch.setenv("FEDRX_DATA_ROOT", str(DEMO.parent))
    assert find_mimic3_demo() == DEMO
