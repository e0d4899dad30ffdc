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


def _demo(data_root: Path, name: str, inside: str = "") -> Path:
    """``data_root/name``; the test is skipped when it (or its ``inside`` folder) is absent."""
    p = data_root / name
    if not (p / inside).is_dir():
        pytest.skip(f"{name} not found")
    return p


@pytest.fixture(scope="session")
def mimic_demo(data_root: Path) -> Path:
    return _demo(data_root, "mimic3-demo")


@pytest.fixture(scope="session")
def mimic4_demo(data_root: Path) -> Path:
    return _demo(data_root, "mimic4-demo", "hosp")


@pytest.fixture(scope="session")
def omop_demo(data_root: Path) -> Path:
    """The MIMIC-IV demo in OMOP CDM 5.3 (shared/data/omop-demo, see its SOURCE.md)."""
    return _demo(data_root, "omop-demo")


@pytest.fixture(scope="session")
def eicu_demo(data_root: Path) -> Path:
    return _demo(data_root, "eicu-demo")


@pytest.fixture(scope="session")
def mappings_dir(mimic_demo: Path) -> Path:
    return mimic_demo / "mappings"
