"""README's examples, executed as written: the Python API example (on a fresh machine: no
demo data, so it must run on what it generates itself) and every line of the quick tour."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def _blocks(lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", README, re.S)


def test_readme_starts_with_the_two_commands():
    first = _blocks("bash")[0].splitlines()
    assert [line.split()[:2] for line in first] == [["make", "demo"], ["make", "test"]]
    ci = (ROOT / ".ci" / "run").read_text()
    assert "make test" in ci


def test_python_api_example_runs_as_written_on_a_fresh_machine(tmp_path):
    """No demo data anywhere (FEDRX_DATA_ROOT is an empty folder): the example prints one
    line per round with a real pooled Jaccard (``process.next`` evaluates), then the
    validation Jaccard of ``process.evaluate``."""
    (tmp_path / "empty").mkdir()
    code = _blocks("python")[0]
    env = dict(os.environ, FEDRX_DATA_ROOT=str(tmp_path / "empty"))
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env,  # noqa: S603
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = proc.stdout.split("\n")
    rounds = [line.split() for line in lines if line and line[0].isdigit()]
    assert [r[:2] for r in rounds] == [["1", "completed"], ["2", "completed"],
                                       ["3", "completed"]]
    assert all(0.0 < float(r[2]) <= 1.0 for r in rounds)
    val = [line for line in lines if line.startswith("validation:")]
    assert len(val) == 1 and 0.0 < float(val[0].split()[1]) <= 1.0


@pytest.mark.slow
def test_quick_tour_runs_line_by_line(tmp_path, data_root):
    """Every command of the quick tour, in a fresh folder, as written (``../shared/data``
    is where CI keeps the open demo data; here it is the located data root)."""
    tour = _blocks("bash")[1]
    bindir = Path(sys.executable).parent
    env = dict(os.environ, PATH=f"{bindir}{os.pathsep}{os.environ['PATH']}", COLUMNS="140")
    ran = 0
    for line in tour.splitlines():
        line = line.split("  #")[0].strip()
        if not line or line.startswith(". "):  # the venv activation: PATH is set above
            continue
        line = line.replace("../shared/data", str(data_root))
        proc = subprocess.run(line, shell=True, cwd=tmp_path, env=env,  # noqa: S602
                              capture_output=True, text=True, timeout=900)
        assert proc.returncode == 0, f"{line}\n{proc.stderr[-1500:]}"
        ran += 1
    assert ran == 9
    assert (tmp_path / "runs" / "dp" / "report").is_dir()
    assert (tmp_path / "runs" / "mimic4-split" / "split.json").is_file()
