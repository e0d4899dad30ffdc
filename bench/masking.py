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

Usage: .venv/bin/python -m fedrx.bench.masking [--quick | --parts]
(main(): the per-target table of :func:`breakdown`; full < 6 min, --quick < 60 s on 2 cores;
--parts: :func:`parts`, the cost of the pieces, < 30 s)
Writes a Markdown table to stdout.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import time
import tracemalloc
from collections.abc import Callable

import numpy as np

from fedrx.protocol.protection import RoundContext
from fedrx.protocol.protections.mask import MaskConfig, MaskProtection
from fedrx.secagg.identity import Federation, Identity
from fedrx.secagg.prg import word_bytes


def wire_bytes(msg: object) -> int:
    """Summed length of every bytes field in a (nested) message dataclass."""
    if isinstance(msg, (bytes, bytearray)):
        return len(msg)
    if isinstance(msg, (tuple, list)):
        return sum(wire_bytes(x) for x in msg)
    if dataclasses.is_dataclass(msg):
        return sum(wire_bytes(getattr(msg, f.name)) for f in dataclasses.fields(msg))
    return 0


def _drive(n: int, d: int, ids: list[Identity], fed: Federation, *, graph: str = "complete",
           drop: str | None = None, trace: bool = False, keep_inputs: bool = False) -> dict:
    """Build one REAL masked round of n hospitals over d parameters (every party runs the
    fedrx code, in this process) and run it, timing every call (CPU seconds,
    ``time.process_time``; the hot paths are single-threaded).

    ``drop``: the stage before which the last live hospital drops. ``trace``: also measure
    the aggregator's own peak memory with tracemalloc (``server_peak_bytes``: the largest,
    over its calls, of its retained allocations plus that call's transient peak; the replies
    handed to it are the transport's and not counted; tracing slows the run: do not time a
    traced run). ``keep_inputs``: keep a copy of every encoded input (to check the sum).
    Returns per-stage client and server times, client call counts, wire bytes (up + down),
    the mean packed-vector size, the server protection, the decoded result and the inputs.
    """
    from fedrx.secagg.mask.params import MASKED_INPUT

    cfg = MaskConfig(clip_norm=1.0, frac_bits=16, max_count=100_000, graph=graph)
    # the round's federation is exactly its n hospitals: n_C (and so t) follows from the
    # pinned federation's size, and a round of 10 in a federation of 200 would be refused
    fed = Federation({h: fed.members[h] for h in sorted(i.hospital for i in ids[:n])}) \
        if len(fed.members) != n else fed
    ctx = RoundContext(os.urandom(32), 1, tuple(sorted(i.hospital for i in ids[:n])), d + 1)
    server = MaskProtection(None, fed, cfg).new_server(ctx)
    clients = {i.hospital: MaskProtection(i, fed, cfg).new_client(ctx, i.hospital)
               for i in ids[:n]}
    rng = np.random.default_rng(0)
    t_quant = 0.0
    encoded = {}
    for h, c in clients.items():
        v = np.append(50 * rng.normal(0, 1e-3, d), 50.0)
        t0 = time.process_time()
        c.set_input(v)
        t_quant += time.process_time() - t0
        if keep_inputs:
            encoded[h] = c.machine.state.x.copy()  # benchmark-only exactness check
    t_client = dict.fromkeys(server.stages, 0.0)
    n_client = dict.fromkeys(server.stages, 0)
    t_server = dict.fromkeys((*server.stages, "result"), 0.0)
    wire = 0
    vec = 0.0
    alive = set(clients)
    mem = {"retained": 0, "peak": 0}

    def server_call(key: str, fn, *args):  # noqa: ANN001, ANN202
        if trace:
            before = tracemalloc.get_traced_memory()[0]
            tracemalloc.reset_peak()
        t0 = time.process_time()
        out = fn(*args)
        t_server[key] += time.process_time() - t0
        if trace:
            cur, peak = tracemalloc.get_traced_memory()
            mem["peak"] = max(mem["peak"], mem["retained"] + peak - before)
            mem["retained"] += cur - before
        return out

    if trace:
        tracemalloc.start()
    try:
        for stage in server.stages:
            if stage == drop:
                alive.discard(sorted(alive)[-1])
            reqs = server_call(stage, server.requests, stage, sorted(alive))
            replies = {}
            for h, r in reqs.items():
                wire += wire_bytes(r)
                t0 = time.process_time()
                replies[h] = clients[h].handle(stage, r)
                t_client[stage] += time.process_time() - t0
                n_client[stage] += 1
                wire += wire_bytes(replies[h])
            if stage == MASKED_INPUT:
                vec = sum(len(r.packed) for r in replies.values()) / len(replies)
            server_call(stage, server.collect, stage, replies)
            del replies
        res = server_call("result", server.result)
    finally:
        if trace:
            tracemalloc.stop()
    return {"server": server, "result": res, "encoded": encoded, "t_quant": t_quant,
            "t_client": t_client, "n_client": n_client, "t_server": t_server, "wire": wire,
            "vector_bytes": vec, "degree": cfg.degree(n),
            "server_peak_bytes": mem["peak"] if trace else None}


def run(n: int, d: int, ids: list[Identity], fed: Federation, drop: str | None,
        graph: str = "complete", trace: bool = False) -> dict:
    """One masked round (:func:`_drive`) summarised for ``fedrx bench``'s scaling tables:
    mean hospital CPU per stage and for quantisation, aggregator CPU (all calls), wire
    bytes per parameter per hospital, the modulus, contributors, graph degree and (with
    ``trace``) the aggregator's peak memory."""
    r = _drive(n, d, ids, fed, graph=graph, drop=drop, trace=trace)
    res = r["result"]
    return {"stages": {s: v / n for s, v in r["t_client"].items()}, "quant": r["t_quant"] / n,
            "server": sum(r["t_server"].values()), "bytes_per_param": r["wire"] / n / d,
            "m": res.stats["modulus_bits"], "contributors": len(res.contributors),
            "degree": r["degree"], "server_peak_bytes": r["server_peak_bytes"]}


def aes_ctr_floor(nbytes: int, repeats: int = 5) -> float:
    """Best-of-``repeats`` seconds for raw AES-256-CTR (cryptography) over ``nbytes`` bytes
    into a preallocated buffer: this machine's floor for mask expansion."""
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

    src = bytes(nbytes)
    dst = bytearray(nbytes + 16)
    best = float("inf")
    for _ in range(repeats):
        enc = Cipher(algorithms.AES(os.urandom(32)), modes.CTR(bytes(16))).encryptor()
        t0 = time.perf_counter()
        enc.update_into(src, dst)
        best = min(best, time.perf_counter() - t0)
    return best


def best_of(fn: Callable[[], object], repeats: int) -> float:
    """Best wall seconds of ``repeats`` calls of ``fn`` after one warm-up call."""
    fn()
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def add_floor(d: int, repeats: int = 5, dtype: type = np.uint64) -> float:
    """Best-of-``repeats`` seconds of an in-place numpy ``a += b`` of length d (``dtype``,
    default uint64): this machine's memory-bandwidth floor for aggregation (24 bytes moved
    per element); the warm-up call faults the pages in."""
    a = np.ones(d, dtype=dtype)
    b = np.ones(d, dtype=dtype)
    return best_of(lambda: a.__iadd__(b), repeats)


def micro(d: int, m: int, repeats: int = 5) -> dict[str, float | int | str]:
    """Best-of-``repeats`` seconds of the masking hot paths for one vector of d elements:
    ``mask_expansion`` (prg_vector: AES-CTR keystream -> Z_2^m), ``modular_add`` (the
    aggregator's ``total += y; total &= 2^m-1``), ``pack`` and ``unpack`` (m-bit packing),
    with the floors ``aes_floor`` (raw AES-CTR over the same keystream bytes) and
    ``add_floor`` (one numpy uint64 add of d)."""
    from fedrx.secagg import bitpack
    from fedrx.secagg.prg import prg_vector

    key = os.urandom(32)
    rng = np.random.default_rng(0)
    mask = np.uint64((1 << m) - 1) if m < 64 else np.uint64(2**64 - 1)
    y = rng.integers(0, 2**min(m, 63), d, dtype=np.uint64)
    total = np.zeros(d, dtype=np.uint64)
    packed = bitpack.pack(y, m)

    def best(fn: Callable[[], object]) -> float:
        return best_of(fn, repeats)

    def modadd() -> None:
        total.__iadd__(y)
        total.__iand__(mask)

    acc = bitpack.SumAccumulator(m, d)
    return {"d": d, "m": m, "keystream_bytes": d * word_bytes(m),
            "backend": f"{bitpack.BACKEND}/{bitpack.SIMD}",
            "packed_bytes": len(packed),
            "mask_expansion": best(lambda: prg_vector(key, d, m)),
            "modular_add": best(modadd),
            "pack": best(lambda: bitpack.pack(y, m)),
            "unpack": best(lambda: bitpack.unpack(packed, m, d)),
            "packed_add": best(lambda: acc.add(packed)),
            "aes_floor": aes_ctr_floor(d * word_bytes(m), repeats),
            "add_floor": add_floor(d, repeats)}


def breakdown(n: int, d: int, ids: list[Identity], fed: Federation) -> dict:
    """One REAL round (:func:`_drive`, complete graph, active mode) with the last hospital
    dropping before masked_input, timed per party and per stage.

    Reported for one representative hospital (the mean over the n-1 that sent a masked
    input) and for the aggregator, split as the issue's targets are:
    ``masked_input``: the hospital's mask expansion + masking + packing (n-1 PRG masks:
    self + n-2 live neighbours; the dropped peer is skipped because its shares never
    arrived), ``quant``: its clip + stochastic rounding, ``agg_add``: the aggregator's
    masked_input collect (validating and summing n-1 packed vectors), ``agg_unmask``: its
    unmask collect (Shamir reconstruction, regenerating n-1 self masks and the dropped
    hospital's n-1 pairwise masks, removing them). The unmasked sum is checked exact.
    """
    from fedrx.secagg.bitpack import packed_size
    from fedrx.secagg.mask.params import MASKED_INPUT, UNMASK

    r = _drive(n, d, ids, fed, drop=MASKED_INPUT, keep_inputs=True)
    t_client, n_client, t_server = r["t_client"], r["n_client"], r["t_server"]
    server, encoded = r["server"], r["encoded"]
    total, contributors = server.machine.result()
    m = server.params.modulus_bits
    want = sum(encoded[h] for h in contributors) & np.uint64((1 << m) - 1)
    assert np.array_equal(total, want), "unmasked sum is wrong"
    w = word_bytes(m)
    return {"m": m, "quant": r["t_quant"] / n,
            "masked_input": t_client[MASKED_INPUT] / n_client[MASKED_INPUT],
            "client_other": sum(t / max(n_client[s], 1) for s, t in t_client.items()
                                if s != MASKED_INPUT),
            "agg_add": t_server[MASKED_INPUT], "agg_unmask": t_server[UNMASK],
            "agg_other": sum(t for s, t in t_server.items()
                             if s not in (MASKED_INPUT, UNMASK, "result")),
            "hosp_mask_bytes": (n - 1) * (d + 1) * w,   # self + n-2 live neighbours
            "agg_mask_bytes": 2 * (n - 1) * (d + 1) * w,  # n-1 self + n-1 of the dropped
            "n_added": len(contributors), "length": d + 1,
            "vector_bytes": r["vector_bytes"], "packed": packed_size(d + 1, m),
            "wire_per_hospital": r["wire"] / len(contributors)}


def parts(d: int = 100_000, n: int = 100, t: int = 51, repeats: int = 30) -> None:
    """Print what the round tables are made of (best of ``repeats``, wall seconds):
    unpack-add of one packed vector at every SIMD level this CPU has against the numpy
    add floor (d elements, m = 37 / 41 / 57); the per-peer public-key operations (Ed25519
    verify, X25519 agreement, HKDF); and the aggregator's Shamir work for n secrets of n
    shares each with threshold t (the consistency check of :func:`shamir.consistent_many`
    and reconstruction)."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from fedrx.secagg import _bitpack_native as native
    from fedrx.secagg import kex, shamir

    def best(fn: Callable[[], object], r: int = repeats) -> float:
        return best_of(fn, r)

    fl = add_floor(d, repeats)
    levels = ("none", "avx2", "avx512vbmi")[: ("none", "avx2", "avx512vbmi").index(
        native.SIMD) + 1]
    print(f"unpack-add of one packed vector, d = {d}, / numpy add floor ({fl * 1e6:.1f} us)")
    print()
    print("| m | " + " | ".join(levels) + " |")
    print("|---" * (len(levels) + 1) + "|")
    rng = np.random.default_rng(0)
    for m in (37, 41, 57):
        packed = native.pack(rng.integers(0, 2**m, d, dtype=np.uint64), m)
        acc = np.zeros(d, dtype=np.uint64)
        cells = [best(lambda lv=lv, p=packed, m=m, a=acc: native.unpack_add(p, m, d, a, lv))
                 / fl for lv in range(len(levels))]
        print(f"| {m} | " + " | ".join(f"{c:.2f}x" for c in cells) + " |")
    sk = Ed25519PrivateKey.generate()
    sig, pk = sk.sign(b"m" * 200), sk.public_key()
    a_sk, _ = kex.generate_keypair()
    _, b_pk = kex.generate_keypair()
    shared, sid = kex.agree(a_sk, b_pk), os.urandom(32)
    print()
    print(f"per peer: Ed25519 verify {best(lambda: pk.verify(sig, b'm' * 200)) * 1e6:.0f} us, "
          f"X25519 agreement {best(lambda: kex.agree(a_sk, b_pk)) * 1e6:.0f} us, "
          f"HKDF {best(lambda: kex.mask_key(shared, sid, 1, 'a', 'b')) * 1e6:.0f} us")
    xs = list(range(1, n + 1))
    sets = [shamir.split(os.urandom(32), t, xs) for _ in range(n)]
    cold = best(lambda: (shamir._extra_point_rows.cache_clear(),  # noqa: SLF001
                         shamir.consistent_many(sets, t)), 5)
    warm = best(lambda: shamir.consistent_many(sets, t), 5)
    rec = best(lambda: [shamir.reconstruct(s_, t) for s_ in sets], 5)
    print(f"Shamir, {n} secrets x {n} shares, t = {t}: consistency check {cold * 1e3:.1f} ms "
          f"(cold cache) / {warm * 1e3:.1f} ms (warm), reconstruction {rec * 1e3:.1f} ms")


def main() -> None:
    """The issue's table: n in {10, 50, 100} x d in {1e5, 1e6} (``--quick``: n in {10, 50},
    d = 1e5). Floors are measured in the same run: ``aes_ctr_floor`` over exactly the mask
    bytes a party must expand, ``add_floor`` (cache-resident uint64 add, a strict floor)
    times the number of vectors the aggregator adds."""
    import platform

    import cryptography

    from fedrx.secagg import bitpack

    if "--parts" in sys.argv:
        parts()
        return
    quick = "--quick" in sys.argv
    ds = [100_000] if quick else [100_000, 1_000_000]
    ns = [10, 50] if quick else [10, 50, 100]
    ids = [Identity.generate(f"h{i:03d}") for i in range(max(ns))]
    fed = Federation.of(ids)
    print(f"machine: {platform.machine()} {platform.processor() or ''} {os.cpu_count()} CPUs, "
          f"Python {platform.python_version()}, numpy {np.__version__}, cryptography "
          f"{cryptography.__version__}; bit-packing backend {bitpack.BACKEND} (SIMD "
          f"{bitpack.SIMD}); one dropout "
          "before masked_input; CPU seconds")
    print()
    print("| n | d | m | hospital masked_input | its AES floor | ratio | quantise | "
          "other client stages | aggregator add (n-1 vectors) | add floor | ratio | "
          "aggregator unmask | its AES floor | ratio | masked vector bytes / packed | "
          "wire bytes per hospital / packed |")
    print("|" + "---|" * 16)
    for d in ds:
        for n in ns:
            r = breakdown(n, d, ids, fed)
            aes_h = aes_ctr_floor(r["hosp_mask_bytes"])
            aes_a = aes_ctr_floor(r["agg_mask_bytes"])
            add = add_floor(r["length"]) * r["n_added"]
            ms = 1e3
            print(f"| {n} | {d:.0e} | {r['m']} | {r['masked_input'] * ms:.1f} ms | "
                  f"{aes_h * ms:.1f} ms | {r['masked_input'] / aes_h:.2f}x | "
                  f"{r['quant'] * ms:.1f} ms | {r['client_other'] * ms:.1f} ms | "
                  f"{r['agg_add'] * ms:.1f} ms | {add * ms:.1f} ms | "
                  f"{r['agg_add'] / add:.2f}x | {r['agg_unmask'] * ms:.1f} ms | "
                  f"{aes_a * ms:.1f} ms | {r['agg_unmask'] / aes_a:.2f}x | "
                  f"{r['vector_bytes'] / r['packed']:.3f}x | "
                  f"{r['wire_per_hospital'] / r['packed']:.3f}x |")
            sys.stdout.flush()


if __name__ == "__main__":
    main()
