"""Neighbour graphs for pairwise masking, and the threshold/neighbourhood rules.

* ``complete``: every hospital masks with and shares to every other (Bonawitz et al. 2017).
* ``harary``: SecAgg+ (Bell et al. 2020) k-regular Harary graph H(k, n) on a pseudorandom
  ring order. Position ``i`` is joined to ``i +- 1 .. i +- k//2`` (mod n) and, for odd k
  (n must then be even), to ``i + n/2``. The ring order sorts hospitals by
  ``SHA-256(session_id || round || hospital)``, so every party computes the same graph and the
  aggregator cannot choose it (given a session id it does not control alone).

Rules (documented in threat_model.md, section 4.3):

* Corruption bound: ``n_C = floor((N - 1) / 3)`` by default, where N is the size of the
  group whose shares reconstruct a secret (N = n for the complete graph, N = k + 1 for a
  neighbourhood).
* Threshold: a threshold t is safe iff ``2t > N + n_C``, ``t - n_C >= 2`` and ``t <= N``;
  the default is ``t = floor(2N/3) + 1`` (which satisfies both for N >= 3 with the default
  n_C).
* SecAgg+ degree (heuristic): ``k = min(n - 1, 2 * ceil(1.5 * log2 n))`` adjusted up to an
  even number when n is odd. This is O(log n) as in Bell et al., but the constant is NOT
  derived from their concrete failure-probability bound.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property

from fedrx.errors import ConfigError
from fedrx.secagg.kex import encode_fields


def default_corrupt(group: int) -> int:
    """Default bound on corrupted members of a group of ``group`` share holders."""
    return max((group - 1) // 3, 0)


def default_threshold(group: int) -> int:
    """Default threshold ``floor(2N/3) + 1`` for N share holders."""
    return 2 * group // 3 + 1


def check_threshold(t: int, group: int, n_corrupt: int) -> None:
    """ConfigError unless ``t <= N``, ``2t > N + n_C`` and ``t - n_C >= 2``."""
    if t > group:
        raise ConfigError(f"threshold t={t} exceeds the {group} share holders; lower t")
    if 2 * t <= group + n_corrupt:
        raise ConfigError(f"threshold t={t} too small: need 2t > N + n_C = {group} + "
                          f"{n_corrupt}; raise t to at least {(group + n_corrupt) // 2 + 1}")
    if t - n_corrupt < 2:
        raise ConfigError(f"threshold t={t} too small: need t - n_C >= 2 with n_C={n_corrupt}")


def default_k(n: int) -> int:
    """SecAgg+ degree rule (heuristic O(log n), see module doc)."""
    if n <= 2:
        return max(n - 1, 0)
    k = min(n - 1, 2 * math.ceil(1.5 * math.log2(n)))
    if n % 2 == 1 and k % 2 == 1:
        k = min(k + 1, n - 1)
    return k


@dataclass(frozen=True)
class Graph:
    """An undirected neighbour graph over hospital ids (no self-loops)."""

    neighbours: dict[str, frozenset[str]]

    def of(self, hospital: str) -> frozenset[str]:
        return self.neighbours[hospital]

    def holders(self, hospital: str) -> frozenset[str]:
        """Share holders of ``hospital``'s secrets: its neighbours and itself."""
        return self.neighbours[hospital] | {hospital}

    def two_hop(self, hospital: str) -> frozenset[str]:
        """Every hospital within two hops of ``hospital`` (itself included): the holders of
        the secrets of everyone whose shares ``hospital`` holds. O(k**2)."""
        out: set[str] = set(self.holders(hospital))
        for v in self.neighbours[hospital]:
            out |= self.neighbours[v]
        return frozenset(out)

    @cached_property
    def complete(self) -> bool:
        """Whether every hospital neighbours every other (then every neighbourhood is the
        whole round and the per-neighbourhood rules reduce to Bonawitz et al.'s)."""
        n = len(self.neighbours)
        return all(len(v) == n - 1 for v in self.neighbours.values())

    def is_regular(self, k: int) -> bool:
        return all(len(v) == k for v in self.neighbours.values())

    def is_connected(self) -> bool:
        nodes = list(self.neighbours)
        if not nodes:
            return True
        seen, stack = {nodes[0]}, [nodes[0]]
        while stack:
            for w in self.neighbours[stack.pop()]:
                if w not in seen:
                    seen.add(w)
                    stack.append(w)
        return len(seen) == len(nodes)


def complete_graph(parties: Sequence[str]) -> Graph:
    ps = frozenset(parties)
    return Graph({p: ps - {p} for p in parties})


def harary_graph(parties: Sequence[str], k: int, session_id: bytes, round_: int) -> Graph:
    """k-regular Harary graph on a ring ordered by SHA-256(session, round, hospital)."""
    n = len(parties)
    if not min(2, n - 1) <= k <= n - 1:
        raise ConfigError(f"SecAgg+ degree k={k} must be in [2, n-1={n - 1}] (k=1 is a "
                          "disconnected matching)")
    if k % 2 == 1 and n % 2 == 1:
        raise ConfigError(f"no {k}-regular graph on {n} hospitals (k and n both odd); "
                          "use an even k")
    order = sorted(parties, key=lambda h: hashlib.sha256(
        encode_fields("fedrx/secagg/v1/graph", session_id, round_, h)).digest())
    nb: dict[str, set[str]] = {p: set() for p in parties}
    for i, p in enumerate(order):
        for j in range(1, k // 2 + 1):
            for q in (order[(i + j) % n], order[(i - j) % n]):
                nb[p].add(q)
        if k % 2 == 1:
            nb[p].add(order[(i + n // 2) % n])
    return Graph({p: frozenset(v) for p, v in nb.items()})
