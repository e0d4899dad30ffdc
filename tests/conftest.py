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


def _he_engine_available() -> bool:
    from fedrx.secagg.thckks.engine import find_he_python, openfhe_in_process

    return openfhe_in_process() or Path(find_he_python() or "/nonexistent").is_file()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """ckks-threshold's tests need OpenFHE (in-process, or the CPython 3.10 worker that
    ``make he-env`` builds and ``make test`` builds when a 3.10 exists). Without one they
    are skipped with that reason, except where ``FEDRX_REQUIRE_HE=1`` (``.ci/run``: the CI
    machine has CPython 3.10, so a skip there would hide a failure)."""
    import os

    he_items = [i for i in items if Path(str(i.fspath)).name.startswith("test_thckks_")]
    if not he_items or os.environ.get("FEDRX_REQUIRE_HE") == "1" or _he_engine_available():
        return
    skip = pytest.mark.skip(reason="ckks-threshold needs OpenFHE: run `make he-env` "
                                   "(CPython 3.10) or set FEDRX_HE_PYTHON")
    for item in he_items:
        item.add_marker(skip)
