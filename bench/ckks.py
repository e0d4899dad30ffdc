"""Benchmark of CKKS aggregation (a script, not a test).

For d in {1e5, 1e6} parameters and n in {10, 50} hospitals, at the default parameters
(N = 8192, q = 56 + 40 bits, scale 2^32), it measures on this machine, single thread:

* encrypt: one hospital encrypting + serialising its d values (mean over ``reps`` distinct
  encryptions; 3 for d = 1e5, 2 for d = 1e6),
* add: the aggregator checking (SHA-256 digest, parse, structure) and adding n uploads into
  one running sum (n uploads simulated by cycling the ``reps`` distinct encryptions),
* decrypt: one hospital decrypting the aggregate and releasing it (flooding + rounding),
* bytes per parameter on the wire for one upload, and its ratio to float32 (4 bytes),
* the largest observed error against the exact sum, next to the stated bound.

Usage: .venv/bin/python -m fedrx.bench.ckks [--quick]
Prints a Markdown table to stdout.
"""

from __future__ import annotations

import gc
import hashlib
import os
import sys
import time
import tracemalloc

import numpy as np

from fedrx.bench.memory import reset_peak_rss, status_kb
from fedrx.secagg.ckks.keyring import CkksKeyring
from fedrx.secagg.ckks.params import CkksParams
from fedrx.secagg.ckks.release import ReleasePolicy
from fedrx.secagg.identity import Federation, Identity


def setup() -> tuple[object, object, CkksParams]:
    """(hospital's secret key, aggregator's public context, params) for a fresh epoch."""
    ids = [Identity.generate(f"h{i}") for i in range(2)]
    fed = Federation.of(ids)
    ring = CkksKeyring.create(ids[0], fed, epoch=1, federation_id=os.urandom(32))
    return ring.open(ids[1], fed), ring.server_context(fed), ring.manifest.params


def measure(key, pub, params: CkksParams, d: int, ns: tuple[int, ...],  # noqa: ANN001
            reps: int | None = None, seed: int = 0) -> list[dict]:
    """Encrypt/add/decrypt timings (seconds, wall) for d values and each n in ``ns``.

    One dict per n: ``encrypt`` (one hospital, mean over ``reps`` distinct encryptions),
    ``add`` (the aggregator's checked incremental addition of n uploads, the ``reps``
    encryptions cycled), ``decrypt`` (decrypt + release of the aggregate), ``upload_bytes``,
    the raw and released errors and their bounds.
    """
    reps = reps or (3 if d <= 10**5 else 2)
    rng = np.random.default_rng(seed)
    limit = params.max_abs_input(max(ns))
    xs = [rng.uniform(-limit, limit, d) for _ in range(reps)]
    t0 = time.perf_counter()
    uploads = [key.encrypt(x) for x in xs]
    t_enc = (time.perf_counter() - t0) / reps
    digests = [[hashlib.sha256(c).digest() for c in up] for up in uploads]
    up_bytes = sum(len(c) for c in uploads[0])
    rows = []
    for n in ns:
        acc = pub.accumulator(d)
        t0 = time.perf_counter()
        for i in range(n):
            acc.add(f"x{i}", uploads[i % reps], digests[i % reps])
        t_add = time.perf_counter() - t0
        chunks = acc.chunks()
        t0 = time.perf_counter()
        released, policy = key.release(chunks, d, n)
        t_dec = time.perf_counter() - t0
        exact = sum(xs[i % reps] for i in range(n))
        raw_err = float(np.max(np.abs(key.decrypt(chunks, d) - exact)))
        rel_err = float(np.max(np.abs(released - exact)))
        bound = ReleasePolicy.for_sum(params, n, 16)
        rows.append({"d": d, "n": n, "ciphertexts": len(chunks), "encrypt": t_enc,
                     "add": t_add, "decrypt": t_dec, "upload_bytes": up_bytes,
                     "raw_err": raw_err, "raw_bound": params.sum_error_bound(n),
                     "released_err": rel_err, "released_bound": bound.error_bound})
    return rows


def aggregator_memory(key, pub, d: int, n: int, reps: int = 2) -> dict:  # noqa: ANN001
    """Peak memory of the aggregator adding n uploads of d values incrementally.

    The uploads (``reps`` distinct encryptions, cycled) are made first and are not
    counted. ``rss_peak_bytes``: growth of the process's peak RSS (VmHWM, reset before)
    over its RSS before the accumulator exists: it sees SEAL's C++ ciphertexts, which
    tracemalloc cannot; None where VmHWM cannot be reset. ``py_peak_bytes``: tracemalloc's
    peak of Python-side allocations (parsed chunks, digests, the serialised result).
    """
    rng = np.random.default_rng(1)
    xs = [rng.uniform(-1, 1, d) for _ in range(reps)]
    uploads = [key.encrypt(x) for x in xs]
    digests = [[hashlib.sha256(c).digest() for c in up] for up in uploads]
    gc.collect()
    ok = reset_peak_rss()
    base = status_kb("VmRSS")
    tracemalloc.start()
    try:
        acc = pub.accumulator(d)
        for i in range(n):
            acc.add(f"x{i}", uploads[i % reps], digests[i % reps])
        result = acc.chunks()
        py_peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    hwm = status_kb("VmHWM")
    rss = (hwm - base) * 1024 if ok and hwm is not None and base is not None else None
    return {"d": d, "n": n, "rss_peak_bytes": rss, "py_peak_bytes": py_peak,
            "retained_ciphertexts": acc.retained_ciphertexts, "chunks": len(result),
            "upload_bytes": sum(len(c) for c in uploads[0]),
            "result_bytes": sum(len(c) for c in result)}


def main(quick: bool = False) -> None:
    key, pub, params = setup()
    dims = (10**5,) if quick else (10**5, 10**6)
    ns = (10,) if quick else (10, 50)
    rows = []
    for d in dims:
        for r in measure(key, pub, params, d, ns):
            rows.append((d, r["n"], r["ciphertexts"], r["encrypt"], r["add"], r["add"] / r["n"],
                         r["decrypt"], r["upload_bytes"] / d, r["upload_bytes"] / d / 4,
                         r["raw_err"], r["raw_bound"], r["released_err"],
                         r["released_bound"]))
    print(f"CKKS N={params.poly_modulus_degree}, q bits={list(params.coeff_mod_bit_sizes)}, "
          f"scale=2^{params.scale_bits}, {params.slots} slots/ciphertext, "
          f"{params.security_bits()}-bit (HE standard); single thread\n")
    print("| d | n | ciphertexts | encrypt s (1 hospital) | add s (n uploads) | add s/upload "
          "| decrypt+release s | bytes/param | x float32 | max raw err | raw bound "
          "| max released err | released bound |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r[0]:.0e} | {r[1]} | {r[2]} | {r[3]:.2f} | {r[4]:.2f} | {r[5]:.3f} | "
              f"{r[6]:.2f} | {r[7]:.2f} | {r[8]:.2f} | {r[9]:.1e} | {r[10]:.1e} | "
              f"{r[11]:.1e} | {r[12]:.1e} |")


def memory_child(d: int, n: int) -> dict:
    """:func:`aggregator_memory` in THIS (fresh) process, plus the process's peak RSS.

    Run it in a new process per point (``python -m fedrx.bench.ckks --aggregator-memory D N``): SEAL
    keeps freed ciphertext memory in its own pool, so a second measurement in the same
    process would reuse it and read too low."""
    key, pub, _ = setup()
    out = aggregator_memory(key, pub, d, n, reps=1)
    hwm = status_kb("VmHWM")
    out["process_peak_rss_bytes"] = hwm * 1024 if hwm is not None else None
    return out


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--aggregator-memory":
        import json

        print(json.dumps(memory_child(int(sys.argv[2]), int(sys.argv[3]))))
    else:
        main(quick="--quick" in sys.argv)
