"""The design's import arrows (docs/architecture.md), checked on the source with ``ast``.

Every ``import fedrx.X`` / ``from fedrx.X import ...`` of every project module (generated
code excepted) is mapped to the folder it comes from through pyproject's package-dir table;
an arrow that the design forbids fails the test, naming file, line and arrow. Third-party
imports that a layer must not make (torch or gRPC in the protocol layer, ...) are checked the
same way. The checker itself is tested on planted violations, one per rule.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

ROOT = Path(__file__).resolve().parent.parent

FORBIDDEN: dict[str, set[str]] = {
    "secagg": {"protocol", "nodes", "dp", "medrx", "cli", "bench", "proto"},
    "protocol": {"nodes", "proto", "medrx", "cli", "bench"},
    "dp": {"medrx", "nodes", "proto", "cli", "bench", "protocol"},
    "medrx": {"secagg", "protocol", "nodes", "dp", "cli", "bench", "proto"},
    "nodes": {"cli", "bench"},
    "proto": {"secagg", "protocol", "nodes", "dp", "medrx", "cli", "bench"},
    "core": {"secagg", "protocol", "nodes", "dp", "medrx", "cli", "bench", "proto"},
}
"""folder -> project folders it must not import (``core`` is ``fedrx`` itself; its lazy
public-API attribute lookup is exempt, see :data:`ALLOWED`)."""

ALLOWED = {
    ("medrx", "fedrx.protocol.task"),  # the task implements the round's task interface
    ("core", "fedrx.protocol.api"),    # fedrx.build_federated_averaging_process (lazy)
    ("core", "fedrx.protocol"),        # fedrx.fedavg / fedadam (lazy)
    ("core", "fedrx.protocol.task"),   # fedrx.ClientOptimizer (lazy)
}

THIRD_PARTY: dict[str, set[str]] = {
    "secagg": {"torch", "grpc", "opacus", "click"},
    "protocol": {"torch", "grpc", "opacus", "click", "google"},
    "dp": {"grpc", "click"},
    "medrx": {"grpc", "opacus", "cryptography", "tenseal", "click"},
}
"""folder -> third-party top-level packages it must not import."""


def package_dirs() -> dict[str, str]:
    doc = tomllib.loads((ROOT / "pyproject.toml").read_text())
    return doc["tool"]["setuptools"]["package-dir"]


def folder_of(module: str, dirs: dict[str, str]) -> str | None:
    """The project folder a ``fedrx...`` module lives in (longest package-dir match)."""
    best = max((k for k in dirs if module == k or module.startswith(k + ".")),
               key=len, default=None)
    return None if best is None else dirs[best].rstrip("/").split("/")[0]


def arrows(source: str) -> list[tuple[int, str]]:
    """(line, imported module) of every absolute import in ``source``."""
    out = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.append((node.lineno, node.module))
        elif isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
    return out


def violations(folder: str, source: str, dirs: dict[str, str], where: str) -> list[str]:
    bad = []
    for line, mod in arrows(source):
        top = mod.split(".")[0]
        if top == "fedrx":
            target = folder_of(mod, dirs)
            if (folder, mod) in ALLOWED or target is None or target == folder:
                continue
            if target in FORBIDDEN.get(folder, set()):
                bad.append(f"{where}:{line} {folder} -> {target} ({mod})")
        elif top in THIRD_PARTY.get(folder, set()):
            bad.append(f"{where}:{line} {folder} -> third-party {top} ({mod})")
    return sorted(set(bad))


def project_modules(dirs: dict[str, str]):
    for folder in sorted({v.rstrip("/").split("/")[0] for v in dirs.values()}):
        for path in sorted((ROOT / folder).rglob("*.py")):
            rel = path.relative_to(ROOT)
            if "gen" in rel.parts:  # generated protobuf code
                continue
            yield folder, path, str(rel)


def test_no_forbidden_import_arrow():
    dirs = package_dirs()
    bad = []
    for folder, path, rel in project_modules(dirs):
        bad += violations(folder, path.read_text(), dirs, rel)
    assert not bad, "forbidden import arrows:\n" + "\n".join(bad)


def test_nothing_but_the_cli_imports_the_bench_harness():
    dirs = package_dirs()
    users = sorted(rel for folder, path, rel in project_modules(dirs)
                   if folder not in ("bench", "cli") and any(
                       folder_of(m, dirs) == "bench" for _, m in arrows(path.read_text())))
    assert users == []


@pytest.mark.parametrize("folder, line, target", [
    # today's violations before the redesign, one per rule, as they were written
    ("dp", "from fedrx.medrx.features import VisitTensors", "medrx"),
    ("nodes", "from fedrx.cli.config import build", "cli"),
    ("medrx", "from fedrx.protocol.aggregator import RoundMachine", "protocol"),
    ("medrx", "from fedrx.protocol.registry import PROTECTIONS", "protocol"),
    ("medrx", "from fedrx.dp.ledger import Ledger", "dp"),
    ("medrx", "from fedrx.nodes.launcher import DemoSpec", "nodes"),
    ("medrx", "from fedrx.secagg import quantize", "secagg"),
    ("medrx", "import fedrx.secagg.identity", "secagg"),
    ("secagg", "from fedrx.protocol.protection import Protection", "protocol"),
    ("protocol", "from fedrx.nodes.codec import Limits", "nodes"),
    ("protocol", "from fedrx.proto.gen.fedrx.v1 import fedrx_pb2", "proto"),
    ("protocol", "import torch", "third-party torch"),
    ("secagg", "import grpc", "third-party grpc"),
    ("nodes", "from fedrx.bench.arms import run_arms", "bench"),
])
def test_the_checker_catches_each_kind_of_violation(folder, line, target):
    bad = violations(folder, line + "\n", package_dirs(), "planted.py")
    assert len(bad) == 1 and f"{folder} -> {target}" in bad[0]


def test_allowed_arrows_pass():
    dirs = package_dirs()
    assert violations("medrx", "from fedrx.protocol.task import FederatedTask\n", dirs, "x") \
        == []
    assert violations("nodes", "from fedrx.protocol.runner import FederationRunner\n", dirs,
                      "x") == []
    assert violations("dp", "from fedrx.errors import LedgerError\n", dirs, "x") == []
