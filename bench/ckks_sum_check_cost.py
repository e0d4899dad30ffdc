"""Per-round cost of the ``ckks`` protection by party and stage: CPU seconds and wire bytes.

Measures what the decrypt-side sum check costs (issue 14 item 6: keyed linear sum tags, the
round-context binding, the confirm stage, the range check) by running the SAME script against
the current tree and an older one::

    python -m fedrx.bench.ckks_sum_check_cost --n 10 --d 100000
    git worktree add /tmp/wt_old dd4ffc7 && mkdir -p /tmp/old && ln -sfn /tmp/wt_old /tmp/old/fedrx
    PYTHONPATH=/tmp/old python -m fedrx.bench.ckks_sum_check_cost --n 10 --d 100000

One in-process round of ``n`` hospitals (all of them key holders, the epoch pre-distributed),
vector length ``d + 1``; each party's calls timed with ``time.process_time`` (CPU of all
threads); bytes are the protobuf envelopes of :mod:`fedrx.nodes.codec`. Median of ``--rounds``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections import defaultdict
from typing import Any

import numpy as np

from fedrx.nodes import codec
from fedrx.protocol.protection import RoundContext
from fedrx.protocol.protections.ckks import CkksProtection


def _timed(fn, *args) -> tuple[Any, float]:
    t = time.process_time()
    out = fn(*args)
    return out, time.process_time() - t


def one_round(prot: CkksProtection, n: int, d: int, rnd: int) -> dict[str, float]:
    hospitals = sorted(prot.hospitals)
    ctx = RoundContext(b"s" * 32, rnd, tuple(hospitals), d + 1)
    rng = np.random.default_rng(rnd)
    clients = {h: prot.new_client(ctx, h) for h in hospitals}
    for h in hospitals:
        clients[h].set_input(np.concatenate([100.0 * rng.normal(0, 0.01, d), [100.0]]))
    server = prot.new_server(ctx)
    cpu: dict[str, float] = defaultdict(float)
    size: dict[str, float] = defaultdict(float)
    for stage in server.stages:
        reqs, t = _timed(server.requests, stage, hospitals)
        cpu["aggregator"] += t
        replies = {}
        for h, req in reqs.items():
            size[f"{stage}_request_bytes"] += len(codec.to_bytes(req)) / len(reqs)
            replies[h], t = _timed(clients[h].handle, stage, req)
            cpu[f"hospital_{stage}"] += t / len(reqs)
            size[f"{stage}_reply_bytes"] += len(codec.to_bytes(replies[h])) / len(reqs)
        _, t = _timed(server.collect, stage, replies)
        cpu["aggregator"] += t
    res = server.result()
    assert res.total.shape == (d + 1,) and abs(res.total[-1] - 100.0 * n) < 1.0
    return {**{f"cpu_{k}": v for k, v in cpu.items()}, **size}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=10)
    ap.add_argument("--d", type=int, default=100_000)
    ap.add_argument("--rounds", type=int, default=3)
    a = ap.parse_args(argv)
    prot = CkksProtection.simulated([f"h{i:02d}" for i in range(a.n)])
    runs = [one_round(prot, a.n, a.d, r + 1) for r in range(a.rounds)]
    out = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
    print(json.dumps({"n": a.n, "d": a.d, "stages": list(prot.stages),
                      **{k: round(v, 4) for k, v in sorted(out.items())}}, indent=1))


if __name__ == "__main__":
    main()
