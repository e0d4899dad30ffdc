"""A hospital's epoch key: sums decrypt within the bound, packing, no wrap-around."""

from __future__ import annotations

import numpy as np
import pytest
from ckks_epoch import HOSPITALS, epoch_fixtures

fed, ring, keys = epoch_fixtures()


@pytest.mark.parametrize("n", [1, 10, 50])
def test_sum_of_n_updates_within_bound(fed, ring, keys, n):
    p = ring.manifest.params
    length = p.slots + 300  # two chunks, the second partly filled
    rng = np.random.default_rng(n)
    bound = p.max_abs_input(50)
    xs = [rng.uniform(-bound, bound, length) for _ in range(n)]
    pub = ring.server_context(fed[1])
    acc = pub.accumulator(length)
    for i, x in enumerate(xs):
        acc.add(f"h{i}", keys[HOSPITALS[i % 3]].encrypt(x))
    got = keys["h1"].decrypt(acc.chunks(), length)
    err = np.max(np.abs(got - np.sum(xs, axis=0)))
    assert err <= p.sum_error_bound(n), (err, p.sum_error_bound(n))


def test_sum_at_range_limit_does_not_wrap(fed, ring, keys):
    p = ring.manifest.params
    n, length = 4, 64
    x = np.full(length, p.max_abs_input(n))
    x[::2] *= -1
    acc = ring.server_context(fed[1]).accumulator(length)
    for i in range(n):
        acc.add(f"h{i}", keys["h0"].encrypt(x))
    got = keys["h2"].decrypt(acc.chunks(), length)
    assert np.max(np.abs(got - n * x)) <= p.sum_error_bound(n)


def test_packing_uses_fewest_ciphertexts_and_at_most_8x_float32(keys):
    k = keys["h0"]
    assert k.params.chunk_count(4096) == 1 and k.params.chunk_count(4097) == 2
    chunks = k.encrypt(np.zeros(3 * 4096 + 1))
    assert len(chunks) == 4
    full = chunks[0]
    assert len(full) <= k.params.max_chunk_bytes
    assert len(full) / (4096 * 4) <= 8.0  # bytes per parameter vs float32
