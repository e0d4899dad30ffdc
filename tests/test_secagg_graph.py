"""SecAgg+ neighbour graphs (Harary) and the threshold rule."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedrx.errors import (
    ConfigError,
)
from fedrx.secagg import graph


@pytest.mark.parametrize("n,k", [(10, 4), (11, 6), (12, 5), (20, 8), (7, 6), (30, 3)])
def test_harary_graph_is_k_regular_connected_and_deterministic(n, k):
    parts = [f"h{i:02d}" for i in range(n)]
    sid = bytes(range(32))
    g = graph.harary_graph(parts, k, sid, 3)
    assert g.is_regular(k) and g.is_connected()
    assert all(h not in g.of(h) for h in parts)
    assert all(h in g.of(w) for h in parts for w in g.of(h))  # undirected
    assert g == graph.harary_graph(list(reversed(parts)), k, sid, 3)  # P12: deterministic
    if k < n - 1:
        assert g != graph.harary_graph(parts, k, sid, 4)  # re-drawn each round


def test_harary_rejects_impossible_and_default_rule():
    with pytest.raises(ConfigError, match="even k"):
        graph.harary_graph([str(i) for i in range(7)], 3, bytes(32), 1)
    for bad_k in (7, 1):
        with pytest.raises(ConfigError):
            graph.harary_graph([str(i) for i in range(7)], bad_k, bytes(32), 1)
    for n in (3, 5, 10, 20, 101, 1000):
        k = graph.default_k(n)
        assert 1 <= k <= n - 1 and (k % 2 == 0 or n % 2 == 0)
        graph.check_threshold(graph.default_threshold(k + 1), k + 1,
                              graph.default_corrupt(k + 1))
    assert graph.default_k(20) == 14 and graph.default_k(1000) == 30


def test_threshold_rule():
    for n in range(3, 40):
        graph.check_threshold(graph.default_threshold(n), n, graph.default_corrupt(n))
    with pytest.raises(ConfigError, match="exceeds"):
        graph.check_threshold(6, 5, 1)
    with pytest.raises(ConfigError, match="raise t"):
        graph.check_threshold(3, 5, 1)
    with pytest.raises(ConfigError, match="t - n_C"):
        graph.check_threshold(2, 2, 1)


@settings(max_examples=30, deadline=None)
@given(st.integers(2, 40).flatmap(
    lambda n: st.tuples(st.just(n), st.integers(min(2, n - 1), n - 1))))
def test_harary_property(nk):
    n, k = nk
    if n % 2 == 1 and k % 2 == 1:
        return
    g = graph.harary_graph([f"p{i}" for i in range(n)], k, b"s" * 32, 1)
    assert g.is_regular(k) and g.is_connected()


def test_two_hop_and_complete():
    """two_hop(h): every holder of a secret of anyone whose shares h holds; complete: every
    hospital neighbours every other (the per-neighbourhood rules then reduce to Bonawitz's)."""
    parts = [f"p{i:02d}" for i in range(12)]
    g = graph.harary_graph(parts, 4, b"s" * 32, 1)
    assert not g.complete and graph.complete_graph(parts).complete
    for h in parts:
        want = set().union(*(g.holders(v) for v in g.holders(h)))
        assert g.two_hop(h) == want and len(want) <= 1 + 4 + 4 * 3
    c = graph.complete_graph(parts)
    assert all(c.two_hop(h) == set(parts) for h in parts)
