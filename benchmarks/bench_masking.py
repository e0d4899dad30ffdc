"""Benchmark of pairwise-mask secure aggregation (a script, not a test).

For d parameters and n hospitals (complete graph, active mode, no dropouts, plus one
row per config with one dropout at masked_input to time key-share recovery) it measures:

* hospital CPU time per stage (mean over hospitals, seconds),
* aggregator CPU time (all stages, including unmasking),
* wire bytes per parameter: the summed lengths of every bytes field in all requests and
  replies (keys, signatures, nonces, ciphertexts, packed vectors, shares) divided by d,
  per hospital (up + down), next to the packed size m/8,
* this machine's floors: AES-256-CTR throughput for the mask bytes one hospital must
  generate ((n-1) pairwise + 1 self mask) and numpy uint64 add bandwidth for the
  aggregator's n additions.

Usage: .venv/bin/python benchmarks/bench_masking.py [--quick]
Writes a Markdown table to stdout.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import time

import numpy as np

from fedrx.protocol.protection import RoundContext
from fedrx.protocol.protections.mask import MaskConfig, MaskProtection
from fedrx.secagg.identity import Federation, Identity
from fedrx.secagg.prg import prg_bytes, word_bytes


def wire_bytes(msg: object) -> int:
    """Summed length of every bytes field in a (nested) message dataclass."""
    if isinstance(msg, (bytes, bytearray)):
        return len(msg)
    if isinstance(msg, (tuple, list)):
        return sum(wire_bytes(x) for x in msg)
    if dataclasses.is_dataclass(msg):
        return sum(wire_bytes(getattr(msg, f.name)) for f in dataclasses.fields(msg))
    return 0


def run(n: int, d: int, ids: list[Identity], fed: Federation, drop: str | None) -> dict:
    cfg = MaskConfig(clip_norm=1.0, frac_bits=16, max_count=100_000)
    ctx = RoundContext(os.urandom(32), 1, tuple(sorted(i.hospital for i in ids[:n])), d + 1)
    server = MaskProtection(None, fed, cfg).new_server(ctx)
    clients = {i.hospital: MaskProtection(i, fed, cfg).new_client(ctx, i.hospital)
               for i in ids[:n]}
    rng = np.random.default_rng(0)
    t_client = {s: 0.0 for s in server.stages}
    t_quant = 0.0
    for c in clients.values():
        v = np.append(50 * rng.normal(0, 1e-3, d), 50.0)
        t0 = time.process_time()
        c.set_input(v)
        t_quant += time.process_time() - t0
    t_server = 0.0
    down = up = 0
    alive = set(clients)
    for stage in server.stages:
        if stage == drop:
            alive.discard(sorted(alive)[-1])
        t0 = time.process_time()
        reqs = server.requests(stage, sorted(alive))
        t_server += time.process_time() - t0
        replies = {}
        for h, r in reqs.items():
            down += wire_bytes(r)
            t0 = time.process_time()
            replies[h] = clients[h].handle(stage, r)
            t_client[stage] += time.process_time() - t0
            up += wire_bytes(replies[h])
        t0 = time.process_time()
        server.collect(stage, replies)
        t_server += time.process_time() - t0
    res = server.result()
    return {"stages": {s: v / n for s, v in t_client.items()}, "quant": t_quant / n,
            "server": t_server, "bytes_per_param": (up + down) / n / d,
            "m": res.stats["modulus_bits"], "contributors": len(res.contributors)}


def floors(n: int, d: int, m: int) -> tuple[float, float]:
    nbytes = (d + 2) * word_bytes(m)  # one mask; a hospital expands n of them
    key = os.urandom(32)
    vecs = [np.ones(d + 2, dtype=np.uint64) for _ in range(n)]
    aes = add = float("inf")
    for _ in range(5):  # best of 5: a floor, not an average
        t0 = time.perf_counter()
        for _ in range(n):  # (n-1) pairwise + 1 self mask
            prg_bytes(key, nbytes)
        aes = min(aes, time.perf_counter() - t0)
        acc = np.zeros(d + 2, dtype=np.uint64)
        t0 = time.perf_counter()
        for v in vecs:
            acc += v
        add = min(add, time.perf_counter() - t0)
    return aes, add


def main() -> None:
    quick = "--quick" in sys.argv
    ds = [10_000] if quick else [10_000, 100_000]
    ns = [5, 10] if quick else [5, 10, 20]
    ids = [Identity.generate(f"h{i:03d}") for i in range(max(ns))]
    fed = Federation.of(ids)
    print("| n | d | dropout | m bits | client advertise | client share_keys | "
          "client masked_input (+quantise) | client consistency | client unmask | "
          "client total | AES floor | server total | add floor | bytes/param/hospital "
          "| packed m/8 |")
    print("|" + "---|" * 15)
    for d in ds:
        for n in ns:
            for drop in (None, "masked_input"):
                r = run(n, d, ids, fed, drop)
                aes, add = floors(n, d, r["m"])
                s = r["stages"]
                tot = sum(s.values()) + r["quant"]
                print(f"| {n} | {d:.0e} | {drop or '-'} | {r['m']} | "
                      f"{s['advertise_keys'] * 1e3:.2f} ms | {s['share_keys'] * 1e3:.2f} ms | "
                      f"{s['masked_input'] * 1e3:.1f} (+{r['quant'] * 1e3:.1f}) ms | "
                      f"{s['consistency_check'] * 1e3:.2f} ms | {s['unmask'] * 1e3:.2f} ms | "
                      f"{tot * 1e3:.1f} ms | {aes * 1e3:.1f} ms | {r['server'] * 1e3:.1f} ms | "
                      f"{add * 1e3:.2f} ms | {r['bytes_per_param']:.3f} | {r['m'] / 8:.3f} |")
            sys.stdout.flush()


if __name__ == "__main__":
    main()
