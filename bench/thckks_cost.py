"""Cost of ``ckks-threshold`` next to ``mask`` and ``ckks`` in one run (a script, not a test).

For n in {3, 10} hospitals and d in {1e5, 1e6} parameters (``--quick``: d = 1e5 only), one
REAL round per protection through its Protection interface (every party's code runs in this
process; ckks-threshold's OpenFHE runs in its worker process under CPython 3.10, one thread).
Per row:

* hospital CPU per round (mean over hospitals; ckks-threshold: upload + partial decryption
  of a decryptor, parent + worker process CPU), aggregator CPU per round (checks, fusion);
* bytes per parameter: one hospital's upload; for ckks-threshold also what ONE decryptor
  downloads (it recomputes the sum from the n listed uploads);
* worker overhead: the share of the engine calls' wall time spent outside the OpenFHE
  operations (framing, pipes, parsing);
* max |error| of the released sum against the exact one, next to the stated bound;
* once per key epoch (ckks-threshold): a hospital's CPU for crs + keygen + keyshares.

Usage: .venv/bin/python -m fedrx.bench.thckks_cost [--quick]   (prints Markdown)
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from fedrx.bench import ckks as ckks_bench
from fedrx.bench import masking as mask_bench
from fedrx.protocol.protection import RoundContext
from fedrx.protocol.protections.ckks_threshold import ThresholdProtection
from fedrx.secagg.identity import Federation, Identity
from fedrx.secagg.thckks.engine import WorkerEngine, open_engine

KEY_STAGES = ("crs", "keygen", "keyshares")


def _cpu(engine) -> float:
    """This process's CPU plus the worker's (seconds)."""
    worker = engine.worker_cpu_seconds() if isinstance(engine, WorkerEngine) else 0.0
    return time.process_time() + worker


def threshold_round(n: int, d: int, seed: int = 0) -> dict:
    """One keyed epoch + one round of ckks-threshold at n hospitals and d parameters."""
    engine = open_engine()
    prot = ThresholdProtection.simulated([f"h{i:02d}" for i in range(n)], engine=engine)
    hs = sorted(prot.hospitals)
    rng = np.random.default_rng(seed)
    xs = {h: rng.uniform(-1, 1, d) for h in hs}
    ctx = RoundContext(b"b" * 32, 1, tuple(hs), d)
    server = prot.new_server(ctx)
    clients = {h: prot.new_client(ctx, h) for h in hs}
    for h in hs:
        clients[h].set_input(xs[h])
    cpu_h = {h: {"keys": 0.0, "round": 0.0} for h in hs}
    cpu_agg = 0.0
    up_bytes, dl_bytes = 0, 0
    s0 = (engine.stats.seconds, engine.stats.op_seconds)
    for stage in server.stages:
        t0 = _cpu(engine)
        reqs = server.requests(stage, hs)
        cpu_agg += _cpu(engine) - t0
        replies = {}
        for h, req in reqs.items():
            t0 = _cpu(engine)
            replies[h] = clients[h].handle(stage, req)
            cpu_h[h]["keys" if stage in KEY_STAGES else "round"] += _cpu(engine) - t0
            if stage == "upload":
                up_bytes = sum(len(c) for c in replies[h].chunks)
            if stage == "decrypt":
                dl_bytes = sum(len(c) for u in req.uploads for c in u.chunks)
        t0 = _cpu(engine)
        server.collect(stage, replies)
        cpu_agg += _cpu(engine) - t0
    res = server.result()
    exact = sum(xs.values())
    dec = res.stats["decryptors"]
    wall, op = engine.stats.seconds - s0[0], engine.stats.op_seconds - s0[1]
    return {"n": n, "d": d, "t": res.stats["threshold"],
            "hospital_cpu": float(np.mean([cpu_h[h]["round"] for h in dec])),
            "hospital_cpu_nondecryptor": float(np.mean(
                [cpu_h[h]["round"] for h in hs if h not in dec] or [float("nan")])),
            "aggregator_cpu": cpu_agg,
            "epoch_cpu": float(np.mean([cpu_h[h]["keys"] for h in hs])),
            "upload_bytes_per_param": up_bytes / d, "decryptor_bytes_per_param": dl_bytes / d,
            "worker_overhead": (wall - op) / wall if wall else 0.0,
            "max_err": float(np.max(np.abs(res.total - exact))),
            "bound": res.stats["error_bound"]}


def mask_round(n: int, d: int) -> dict:
    ids = [Identity.generate(f"h{i:02d}") for i in range(n)]
    r = mask_bench.run(n, d, ids, Federation.of(ids), None)
    return {"hospital_cpu": sum(r["stages"].values()) + r["quant"],
            "aggregator_cpu": r["server"], "bytes_per_param": r["bytes_per_param"]}


def ckks_round(n: int, d: int, ctx: tuple) -> dict:
    key, pub, params = ctx
    r = ckks_bench.measure(key, pub, params, d, (n,), reps=2)[0]
    return {"hospital_cpu": r["encrypt"] + r["decrypt"], "aggregator_cpu": r["add"],
            "bytes_per_param": r["upload_bytes"] / d, "max_err": r["released_err"],
            "bound": r["released_bound"]}


def main(quick: bool = False) -> None:
    dims = (10**5,) if quick else (10**5, 10**6)
    ckks_ctx = ckks_bench.setup()
    rows = []
    for d in dims:
        for n in (3, 10):
            rows.append((threshold_round(n, d), mask_round(n, d), ckks_round(n, d, ckks_ctx)))
    eng = open_engine()
    print(f"ckks-threshold: OpenFHE N={eng.ring_dim}, primes of "
          f"{[q.bit_length() for q in eng.moduli]} bits, scale 2^{eng.params.scale_bits}, "
          f"{eng.slots} values/ciphertext (complex packing), 128-bit (HE standard); engine "
          f"{type(eng).__name__}; CPU seconds per round\n")
    print("| n | d | t | thckks hospital CPU (decryptor) | non-decryptor | thckks aggregator CPU "
          "| mask hospital | mask aggregator | ckks hospital (enc+dec) | ckks aggregator "
          "| thckks upload B/param | decryptor download B/param | mask B/param | ckks B/param "
          "| worker overhead | thckks max err / bound | ckks max err / bound "
          "| thckks epoch CPU / hospital |")
    print("|" + "---|" * 18)
    for th, mk, ck in rows:
        print(f"| {th['n']} | {th['d']:.0e} | {th['t']} | {th['hospital_cpu']:.2f} | "
              f"{th['hospital_cpu_nondecryptor']:.2f} | {th['aggregator_cpu']:.2f} | "
              f"{mk['hospital_cpu']:.3f} | {mk['aggregator_cpu']:.3f} | "
              f"{ck['hospital_cpu']:.2f} | {ck['aggregator_cpu']:.2f} | "
              f"{th['upload_bytes_per_param']:.1f} | {th['decryptor_bytes_per_param']:.0f} | "
              f"{mk['bytes_per_param']:.2f} | {ck['bytes_per_param']:.1f} | "
              f"{100 * th['worker_overhead']:.0f}% | {th['max_err']:.1e} / {th['bound']:.1e} | "
              f"{ck['max_err']:.1e} / {ck['bound']:.1e} | {th['epoch_cpu']:.2f} |")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="d = 1e5 only")
    main(ap.parse_args().quick)
