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

Usage: .venv/bin/python benchmarks/bench_ckks.py [--quick]
Prints a Markdown table to stdout.
"""

from __future__ import annotations

import hashlib
import os
import sys
import time

import numpy as np

from fedrx.secagg.ckks import CkksKeyring, CkksParams, ReleasePolicy
from fedrx.secagg.identity import Federation, Identity


def main(quick: bool = False) -> None:
    ids = [Identity.generate(f"h{i}") for i in range(2)]
    fed = Federation.of(ids)
    ring = CkksKeyring.create(ids[0], fed, epoch=1, federation_id=os.urandom(32))
    key = ring.open(ids[1], fed)
    pub = ring.server_context(fed)
    params: CkksParams = ring.manifest.params
    dims = (10**5,) if quick else (10**5, 10**6)
    ns = (10,) if quick else (10, 50)
    rows = []
    rng = np.random.default_rng(0)
    for d in dims:
        reps = 3 if d <= 10**5 else 2
        limit = params.max_abs_input(max(ns))
        xs = [rng.uniform(-limit, limit, d) for _ in range(reps)]
        t0 = time.perf_counter()
        uploads = [key.encrypt(x) for x in xs]
        t_enc = (time.perf_counter() - t0) / reps
        digests = [[hashlib.sha256(c).digest() for c in up] for up in uploads]
        up_bytes = sum(len(c) for c in uploads[0])
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
            rows.append((d, n, len(chunks), t_enc, t_add, t_add / n, t_dec, up_bytes / d,
                         up_bytes / d / 4, raw_err, params.sum_error_bound(n), rel_err,
                         bound.error_bound))
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


if __name__ == "__main__":
    main(quick="--quick" in sys.argv)
