"""Per-hospital cost of one pairwise-mask round, complete graph vs SecAgg+ (a script, not a
test; issue 14 item 9: a SecAgg+ hospital's cost must not grow with n).

Drives the transport-free state machines of :mod:`fedrx.secagg.mask` directly (n hospitals
and the aggregator in this process, active mode, no dropouts, honest aggregator), so the
same script also runs against an older checkout (``--tree``). For every configuration:

* hospital CPU seconds per round: the thread CPU time (``time.thread_time``) of its
  ``handle`` calls over all stages (the encoded input is set outside the timing); mean and
  max over hospitals;
* hospital bytes per round: the protobuf encoding (:func:`fedrx.nodes.codec.to_bytes`) of
  every request it receives (down) and reply it sends (up), and the same without the
  masked vector itself (``overhead``: keys, shares, lists, signatures);
* aggregator CPU seconds per round (all stages, including unmasking);
* ``graph``: the CPU time to build the round's neighbour graph, which every party does
  once (SHA-256 of every participant id: O(n log n), the only O(n) part left).

Inputs are zero vectors of ``d`` uint64 entries at m = 32 bits (the masks do not depend on
the values). Usage::

    .venv/bin/python -m fedrx.bench.secagg_plus_cost [--d 100000]
        [--configs harary:2:100,harary:2:500,harary:6:100,harary:6:500,complete:0:10,...]
        [--tree /path/to/other/checkout] [--per-stage REPS]

Writes a Markdown table to stdout.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

DEFAULT_CONFIGS = ("harary:2:100,harary:2:500,harary:6:100,harary:6:500,"
                   "complete:0:10,complete:0:100")
_PACKAGES = ("secagg", "dp", "protocol", "proto", "nodes", "cli", "medrx", "bench")


def use_tree(tree: Path) -> None:
    """Import ``fedrx`` from another checkout: a temporary package of symlinks laid out as
    pyproject's ``package-dir`` (``fedrx`` = core/, ``fedrx.secagg`` = secagg/, ...), put
    first on ``sys.path`` (before the editable install's finder). Run this module as a
    file (``python bench/secagg_plus_cost.py --tree ...``), so no fedrx is imported yet."""
    if "fedrx" in sys.modules:
        raise SystemExit("--tree needs a fresh interpreter: run bench/secagg_plus_cost.py as "
                         "a file, not with -m")
    root = Path(tempfile.mkdtemp(prefix="fedrx_tree_"))
    pkg = root / "fedrx"
    pkg.mkdir()
    for f in (tree / "core").iterdir():
        (pkg / f.name).symlink_to(f)
    for sub in _PACKAGES:
        if (tree / sub).is_dir():
            (pkg / sub).symlink_to(tree / sub)
    sys.path.insert(0, str(root))


def run_round(graph: str, k: int, n: int, d: int, m: int = 32) -> dict:
    """One real round; returns the per-hospital and aggregator costs (see module doc)."""
    import numpy as np

    from fedrx.nodes.codec import to_bytes
    from fedrx.secagg import graph as graphs
    from fedrx.secagg.identity import Federation, Identity
    from fedrx.secagg.mask.client import MaskingClient
    from fedrx.secagg.mask.params import MASKED_INPUT, MaskingParams
    from fedrx.secagg.mask.server import MaskingServer

    ids = [Identity.generate(f"h{i:04d}") for i in range(n)]
    fed = Federation.of(ids)
    parts = tuple(i.hospital for i in ids)
    sid = os.urandom(32)
    t0 = time.thread_time()
    g = graphs.complete_graph(parts) if graph == "complete" else \
        graphs.harary_graph(parts, k, sid, 1)
    t_graph = time.thread_time() - t0
    group = n if graph == "complete" else k + 1
    t = graphs.default_threshold(group)
    fields = {f.name for f in dataclasses.fields(MaskingParams)}
    bind = {"context": os.urandom(32)} if "context" in fields else {"model_hash": b"m" * 32}
    params = MaskingParams(sid, 1, parts, d, m, t, g, active=True, **bind)
    server = MaskingServer(params, fed)
    clients = {i.hospital: MaskingClient(params, i, fed) for i in ids}
    cpu = dict.fromkeys(parts, 0.0)
    per_stage: dict[str, list[float]] = {s: [] for s in params.stages}
    down = dict.fromkeys(parts, 0)
    up = dict.fromkeys(parts, 0)
    vec = dict.fromkeys(parts, 0)
    t_server = 0.0
    zeros = np.zeros(d, dtype=np.uint64)
    for stage in params.stages:
        t0 = time.thread_time()
        reqs = server.requests(stage, parts)
        t_server += time.thread_time() - t0
        replies = {}
        for h, q in reqs.items():
            c = clients[h]
            if stage == MASKED_INPUT:
                c.set_input(zeros)
            t0 = time.thread_time()
            replies[h] = c.handle(stage, q)
            dt = time.thread_time() - t0
            cpu[h] += dt
            per_stage[stage].append(dt)
            down[h] += len(to_bytes(q))
            up[h] += len(to_bytes(replies[h]))
            if stage == MASKED_INPUT:
                vec[h] = len(replies[h].packed)
        t0 = time.thread_time()
        server.collect(stage, replies)
        t_server += time.thread_time() - t0
        del replies
    total, who = server.result()
    if len(who) != n or int(np.count_nonzero(total)):
        raise RuntimeError("benchmark round did not unmask to the zero sum")
    per = list(parts)
    return {
        "graph": graph, "k": k if graph != "complete" else n - 1, "n": n, "d": d, "t": t,
        "cpu_mean": statistics.fmean(cpu[h] for h in per), "cpu_max": max(cpu.values()),
        "down": statistics.fmean(down[h] for h in per),
        "up": statistics.fmean(up[h] for h in per),
        "overhead": statistics.fmean(down[h] + up[h] - vec[h] for h in per),
        "server": t_server, "graph_s": t_graph, "per_stage": per_stage,
    }


def table(rows: list[dict]) -> str:
    out = ["| graph | k | n | t | hospital CPU s/round (mean, max) | hospital KB down / up "
           "| KB without the masked vector | aggregator CPU s | graph build ms |",
           "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        out.append(f"| {r['graph']} | {r['k']} | {r['n']} | {r['t']} | {r['cpu_mean']:.4f}, "
                   f"{r['cpu_max']:.4f} | {r['down'] / 1e3:.1f} / {r['up'] / 1e3:.1f} | "
                   f"{r['overhead'] / 1e3:.2f} | {r['server']:.3f} | "
                   f"{r['graph_s'] * 1e3:.2f} |")
    return "\n".join(out)


def stage_table(spec: str, d: int, reps: int) -> str:
    """Median hospital CPU per stage (ms) over ``reps`` rounds of one configuration."""
    graph, k, n = spec.split(":")
    acc: dict[str, list[float]] = {}
    for _ in range(reps):
        r = run_round(graph, int(k), int(n), d)
        for stage, v in r["per_stage"].items():
            acc.setdefault(stage, []).extend(v)
    head = " | ".join(acc)
    vals = " | ".join(f"{statistics.median(v) * 1e3:.3f}" for v in acc.values())
    return f"| config | {head} |\n|{'---|' * (len(acc) + 1)}\n| {spec} | {vals} |"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--d", type=int, default=100_000)
    ap.add_argument("--configs", default=DEFAULT_CONFIGS,
                    help="comma-separated graph:k:n (k ignored for complete)")
    ap.add_argument("--tree", type=Path, default=None,
                    help="benchmark the fedrx of another checkout (e.g. a git worktree)")
    ap.add_argument("--per-stage", type=int, default=0, metavar="REPS",
                    help="instead: median hospital CPU per stage over REPS rounds per config")
    a = ap.parse_args(argv)
    if a.tree is not None:
        use_tree(a.tree.resolve())
    if a.per_stage:
        for spec in a.configs.split(","):
            print(stage_table(spec, a.d, a.per_stage))
        return 0
    rows = []
    for spec in a.configs.split(","):
        graph, k, n = spec.split(":")
        rows.append(run_round(graph, int(k), int(n), a.d))
        print(f"done {spec}", file=sys.stderr, flush=True)
    print(table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
