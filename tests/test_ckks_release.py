"""Release of a decrypted aggregate: flooding, rounding, determinism, known answer."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from ckks_epoch import HOSPITALS, epoch_fixtures

from fedrx.csprng import normal_from_key

fed, ring, keys = epoch_fixtures()


def test_release_is_flooded_rounded_deterministic_and_within_bound(fed, ring, keys):
    length, n = 300, 3
    rng = np.random.default_rng(7)
    xs = [rng.normal(0, 100, length) for _ in range(n)]
    acc = ring.server_context(fed[1]).accumulator(length)
    for i, x in enumerate(xs):
        acc.add(HOSPITALS[i], keys[HOSPITALS[i]].encrypt(x))
    chunks = acc.chunks()
    raw = keys["h0"].decrypt(chunks, length)
    a, policy = keys["h1"].release(chunks, length, n)
    b, _ = keys["h2"].release(chunks, length, n)
    assert np.array_equal(a, b)  # every honest decryptor releases the same vector
    assert np.all(np.abs(a / policy.grid - np.round(a / policy.grid)) == 0)  # on the grid
    assert policy.grid >= ring.manifest.params.sum_error_bound(n)
    assert np.max(np.abs(a - np.sum(xs, axis=0))) <= policy.error_bound
    noise = a - raw
    assert np.std(noise) == pytest.approx(policy.flood_sigma, rel=0.25)  # noise is there
    # a different aggregate gets different noise
    acc2 = ring.server_context(fed[1]).accumulator(length)
    for i, x in enumerate(xs):
        acc2.add(HOSPITALS[i], keys[HOSPITALS[i]].encrypt(x))
    c, _ = keys["h1"].release(acc2.chunks(), length, n)
    assert not np.array_equal(a, c)


def test_flood_noise_known_answer():
    v = json.loads((Path(__file__).parent / "vectors" / "ckks_flood.json").read_text())
    z = normal_from_key(bytes.fromhex(v["seed"]), v["length"])
    assert np.allclose(z, v["normals"], rtol=0, atol=1e-12)
    big = normal_from_key(os.urandom(32), 20000)
    assert abs(big.mean()) < 0.05 and abs(big.std() - 1) < 0.05
