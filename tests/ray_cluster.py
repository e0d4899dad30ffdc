"""The local Ray test cluster, shared by every test module that runs on Ray.

``from ray_cluster import local_ray  # noqa: F401`` in a test module gives it the
module-scoped :func:`local_ray` fixture: a local Ray head with 2 CPUs started by ``ray
start`` in its own process (no dashboard, a small object store, a temporary folder), this
test process joined to it as a driver, and only OUR cluster's processes stopped after
(never another Ray on the machine). Ray is imported inside the fixture, so importing this
module needs no Ray (the test module's ``pytest.importorskip("ray")`` decides).
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest


def _cluster_pids(tmp: str) -> list[int]:
    """The processes of OUR cluster: each names ``tmp`` in its arguments."""
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            if tmp.encode() in (proc / "cmdline").read_bytes():
                pids.append(int(proc.name))
        except OSError:
            continue
    return pids


def _stop_cluster(tmp: str) -> None:
    """Stop OUR cluster only, never another Ray on the machine (``ray stop`` would stop
    them all): SIGTERM, then SIGKILL whatever is left after 5 s."""
    for sig, wait in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 0.0)):
        for pid in _cluster_pids(tmp):
            with contextlib.suppress(OSError):
                os.kill(pid, sig)
        deadline = time.monotonic() + wait
        while _cluster_pids(tmp) and time.monotonic() < deadline:
            time.sleep(0.2)


@pytest.fixture(scope="module")
def local_ray():
    """A local Ray head with 2 CPUs started by ``ray start`` in its own process, and this
    test process connected to it as a driver. The head's processes are started from a fresh
    process, not from this long-lived pytest process: in the full suite, raylets spawned by an
    in-process ``ray.init`` sometimes never came up (startup timeout), after earlier tests
    had installed signal handlers and left threads in this process."""
    ray = pytest.importorskip("ray")
    tmp = tempfile.mkdtemp(prefix="fedrx-ray-")
    ray_cli = Path(sys.executable).with_name("ray")
    cmd = [str(ray_cli), "start", "--head", "--num-cpus=2", "--include-dashboard=false",
           f"--object-store-memory={100 * 1024 * 1024}", f"--temp-dir={tmp}", "--port=0",
           "--disable-usage-stats"]
    # a local test cluster without token authentication (the driver below presents none)
    env = dict(os.environ, RAY_AUTH_MODE="disabled")
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=180, check=False,
                          env=env)
    if proc.returncode != 0:
        _stop_cluster(tmp)
        pytest.fail(f"ray start failed: {(proc.stderr or proc.stdout)[-2000:]}")
    address = re.search(r"--address='([^']+)'", proc.stdout + proc.stderr)
    assert address, proc.stdout[-2000:]
    try:
        ray.init(address=address.group(1), log_to_driver=False)
        yield address.group(1)
    finally:
        ray.shutdown()
        _stop_cluster(tmp)
