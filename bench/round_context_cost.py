"""CPU cost of the agreed round context per round (issue 14: the checks a hospital and the
aggregator make before any protected input), against this or an older checkout (a script,
not a test).

For ``mask`` (complete graph, active) with n hospitals and a model of d parameters:

* hospital: CPU seconds (``time.process_time``) of ONE ``HospitalParty.handle("train",
  ...)`` whose local training is a no-op (returns the weights plus a constant), so what is
  timed is the request checks, the model hash, building the protection client (round
  parameters, graph, context digest) and encoding the input (quantisation of d values, the
  same in both trees); ``checks`` is the same minus the input encoding
  (``set_input`` timed alone and subtracted);
* aggregator: CPU seconds of what the round machine derives before the protection stages:
  ``min_survivors`` and ``new_server`` (round parameters and context digest).

Median over ``--reps`` rounds. Usage::

    .venv/bin/python bench/round_context_cost.py [--d 100000] [--n 10,100] [--reps 7]
        [--tree /tmp/wt_old]

Writes a Markdown table to stdout.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import statistics
import sys
import time
from pathlib import Path


def _use_tree(tree: Path) -> None:
    """Import fedrx from another checkout (bench/secagg_plus_cost.py's ``use_tree``)."""
    here = Path(__file__).with_name("secagg_plus_cost.py")
    spec = importlib.util.spec_from_file_location("_spc", here)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    mod.use_tree(tree)


def measure(n: int, d: int, reps: int) -> dict[str, float]:
    import numpy as np

    from fedrx.protocol.messages import TrainRequest
    from fedrx.protocol.protection import RoundContext
    from fedrx.protocol.registry import make_party, make_server_protection
    from fedrx.protocol.task import ClientOptimizer, FederatedTask, LocalResult, model_hash
    from fedrx.secagg.identity import Federation, Identity

    class NoTrain(FederatedTask):
        def initial_weights(self, seed):
            return np.random.default_rng(seed).normal(0, 0.01, d).astype(np.float32)

        def local_train(self, weights, data, opt, seed, dp=None):
            return LocalResult((weights + 1e-3).astype(np.float32), 50, 0.0)

        def evaluate(self, weights, data, part="test"):
            raise NotImplementedError

        def personalize(self, weights, data, opt, seed):
            return weights

        def n_train_examples(self, data):
            return 50

    ids = [Identity.generate(f"h{i:03d}") for i in range(n)]
    fed = Federation.of(ids)
    names = tuple(sorted(i.hospital for i in ids))
    task = NoTrain()
    party = make_party(names[0], task, None, protection="mask", federation=fed,
                       identity=ids[0], params={}, client_optimizer=ClientOptimizer(),
                       seed=0)
    server = make_server_protection("mask", fed, {}, n, d + 1)
    pinned = getattr(party.protection, "pinned", None)
    sid = pinned.session_id if pinned is not None else os.urandom(32)
    w = task.initial_weights(0)
    mh = model_hash(w)
    hosp, enc, agg = [], [], []
    for r in range(1, reps + 1):
        req = TrainRequest(sid, r, names, w, mh, "mask", d + 1)
        t0 = time.process_time()
        party.handle("train", req)
        hosp.append(time.process_time() - t0)
        vec = np.concatenate([np.full(d, 50e-3), [50.0]])
        client = party.client
        t0 = time.process_time()
        client.set_input(vec)
        enc.append(time.process_time() - t0)
        try:
            ctx = RoundContext(sid, r, names, d + 1, {}, model_hash=mh)
        except TypeError:  # the older RoundContext has no model_hash
            ctx = RoundContext(sid, r, names, d + 1, {})
        t0 = time.process_time()
        server.min_survivors(n)
        server.new_server(ctx)
        agg.append(time.process_time() - t0)
    med = statistics.median
    return {"hospital": med(hosp), "checks": max(0.0, med(hosp) - med(enc)),
            "aggregator": med(agg)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--d", type=int, default=100_000)
    ap.add_argument("--n", default="10,100")
    ap.add_argument("--reps", type=int, default=7)
    ap.add_argument("--tree", type=Path, default=None)
    a = ap.parse_args(argv)
    if a.tree is not None:
        _use_tree(a.tree.resolve())
    import fedrx.protocol.hospital as hospital_module

    print(f"tree: {Path(hospital_module.__file__).parent.parent}; mask, complete graph, "
          f"d = {a.d}; "
          f"median of {a.reps} rounds; CPU ms per round")
    print("| n | hospital train handler | of which checks (w/o input encoding) | "
          "aggregator (min_survivors + new_server) |")
    print("|---|---|---|---|")
    for n in (int(x) for x in a.n.split(",")):
        r = measure(n, a.d, a.reps)
        print(f"| {n} | {1e3 * r['hospital']:.2f} | {1e3 * r['checks']:.2f} | "
              f"{1e3 * r['aggregator']:.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
