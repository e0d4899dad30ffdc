"""Shared fixtures: locating the open demo data (skip cleanly when it is absent)."""

from __future__ import annotations

from pathlib import Path

import pytest

from fedrx.medrx.datasets import shared_data_root


@pytest.fixture(scope="session")
def data_root() -> Path:
    root = shared_data_root()
    if root is None:
        pytest.skip("shared open data not found (set FEDRX_DATA_ROOT)")
    return root


@pytest.fixture(scope="session")
def mimic_demo(data_root: Path) -> Path:
    p = data_root / "mimic3-demo"
    if not p.is_dir():
        pytest.skip("mimic3-demo not found")
    return p


@pytest.fixture(scope="session")
def mappings_dir(mimic_demo: Path) -> Path:
    return mimic_demo / "mappings"
