"""Micro-benchmarks of the hot paths against this machine's floors (same run, same d).

Seconds are wall time, best of several repetitions (:mod:`fedrx.bench.masking`,
:mod:`fedrx.bench.ckks`); ``x_floor`` = seconds / floor seconds.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from fedrx.bench import ckks, masking
from fedrx.protocol.protections.mask import MaskConfig
from fedrx.secagg import quantize


def run_micro(d: int, tick: Callable[[str], None]) -> dict[str, Any]:
    """Hot paths against the floors, d elements / parameters."""
    m = quantize.modulus_bits(MaskConfig().quant, 10, d)
    mk = masking.micro(d, m)
    tick("micro: masking")
    key, pub, _params = ckks.setup()
    ck = ckks.measure(key, pub, _params, d, (10,), reps=2)[0]
    aes32 = masking.aes_ctr_floor(4 * d)
    f_add = masking.add_floor(d, 5, np.float64)
    tick("micro: ckks")
    rows = [
        ("mask expansion (AES-CTR -> Z_2^m)", mk["mask_expansion"], "AES-256-CTR, same bytes",
         mk["aes_floor"]),
        ("modular addition (+=, &= 2^m-1)", mk["modular_add"], "numpy uint64 add",
         mk["add_floor"]),
        (f"bit packing, pack ({m} bits)", mk["pack"], "numpy uint64 add", mk["add_floor"]),
        (f"bit packing, unpack ({m} bits)", mk["unpack"], "numpy uint64 add", mk["add_floor"]),
        (f"aggregator packed add ({m} bits, {mk['backend']})", mk["packed_add"],
         "numpy uint64 add", mk["add_floor"]),
        ("CKKS encrypt (1 hospital)", ck["encrypt"], "AES-256-CTR of the float32 update",
         aes32),
        ("CKKS add (per upload)", ck["add"] / ck["n"], "numpy float64 add", f_add),
        ("CKKS decrypt + release", ck["decrypt"], "AES-256-CTR of the float32 update", aes32),
    ]
    floors = {"aes_ctr_bytes_per_s": mk["keystream_bytes"] / mk["aes_floor"],
              "numpy_add_bytes_per_s": 24 * d / mk["add_floor"]}
    return {"d": d, "modulus_bits": m, "floors": floors,
            "ckks_upload_bytes_per_param": ck["upload_bytes"] / d,
            "rows": [{"operation": op, "seconds": s, "floor": fl, "floor_seconds": fs,
                      "ns_per_param": s / d * 1e9, "x_floor": s / fs if fs > 0 else None}
                     for op, s, fl, fs in rows]}
