"""A masking round driven without transport, for the tests of :mod:`fedrx.secagg.mask`:
n clients and an honest server, with hooks for a scripted malicious aggregator."""

from __future__ import annotations

import dataclasses
import hashlib
import os
from collections.abc import Callable

import numpy as np

from fedrx.errors import ProtocolAbort
from fedrx.secagg import graph as graphs
from fedrx.secagg.identity import Federation, Identity
from fedrx.secagg.mask.client import MaskingClient
from fedrx.secagg.mask.messages import SELF_MASK, AdvertiseKeys, UnmaskReply
from fedrx.secagg.mask.params import STAGES_ACTIVE, MaskingParams
from fedrx.secagg.mask.server import MaskingServer
from fedrx.secagg.mask.transcript import advertise_message

IDS = [Identity.generate(f"h{i:02d}") for i in range(40)]
FED = Federation.of(IDS)
BY_NAME = {i.hospital: i for i in IDS}
STAGES = STAGES_ACTIVE
CONTEXT = hashlib.sha256(b"test round context").digest()


class Round:
    """One round: n clients + honest server, with hooks for a malicious aggregator."""

    def __init__(self, n: int, t: int, *, active: bool = True, d: int = 16, m: int = 32,
                 graph: str = "complete", k: int = 0, sid: bytes | None = None, rnd: int = 1,
                 inputs: dict[str, np.ndarray] | None = None, context: bytes = CONTEXT,
                 contexts: dict[str, bytes] | None = None, min_contributors: int = 0):
        parts = tuple(f"h{i:02d}" for i in range(n))
        sid = sid or os.urandom(32)
        g = graphs.complete_graph(parts) if graph == "complete" else \
            graphs.harary_graph(parts, k, sid, rnd)
        self.params = MaskingParams(sid, rnd, parts, d, m, t, g, context, active,
                                    min_contributors)
        self.server = MaskingServer(self.params, FED)
        contexts = contexts or {}  # per-hospital context (a lying aggregator), else ``context``
        self.clients = {h: MaskingClient(dataclasses.replace(
            self.params, context=contexts.get(h, context)), BY_NAME[h], FED) for h in parts}
        rng = np.random.default_rng(n * 1000 + t)  # test data only, not key material
        self.inputs = inputs or {h: rng.integers(0, 1 << m, d, dtype=np.uint64) for h in parts}
        for h, c in self.clients.items():
            c.set_input(self.inputs[h])
        self.aborts: dict[str, str] = {}
        self.sent: dict[str, dict[str, object]] = {}
        self.alive = set(parts)

    def step(self, stage: str, drop: set[str] = frozenset(),
             hook: Callable[[str, dict], dict] | None = None) -> None:
        self.alive -= set(drop)
        reqs = self.server.requests(stage, sorted(self.alive))
        if hook is not None:
            reqs = hook(stage, reqs)
        replies = {}
        for h, r in reqs.items():
            if h not in self.alive:
                continue
            try:
                replies[h] = self.clients[h].handle(stage, r)
            except ProtocolAbort as exc:
                self.aborts[h] = exc.reason
                self.alive.discard(h)
        self.sent[stage] = replies
        self.server.collect(stage, replies)

    def run(self, drops: dict[str, set[str]] | None = None, hook=None):
        drops = drops or {}
        for stage in self.params.stages:
            self.step(stage, drops.get(stage, set()), hook)
        return self.server.result()

    def expected(self, who) -> np.ndarray:
        tot = np.zeros(self.params.length, dtype=np.uint64)
        for h in who:
            tot += self.inputs[h]
        return tot & np.uint64((1 << self.params.modulus_bits) - 1)

    def revealed_kinds(self, owner: str) -> dict[str, set[str]]:
        """kind -> the holders that released a share of that kind for ``owner``."""
        out: dict[str, set[str]] = {}
        for h, c in self.clients.items():
            if owner in c.revealed:
                out.setdefault(c.revealed[owner], set()).add(h)
        return out

    def nothing_revealed(self) -> bool:
        return all(not c.revealed for c in self.clients.values())


def masked_vector(r: Round, h: str) -> np.ndarray:
    from fedrx.secagg import bitpack
    msg = r.sent["masked_input"][h]
    return bitpack.unpack(msg.packed, msg.modulus_bits, msg.length)


def to_stage(r: Round, last: str) -> None:
    for stage in r.params.stages:
        r.step(stage)
        if stage == last:
            return


def forged_ad(ad: AdvertiseKeys) -> AdvertiseKeys:
    evil = IDS[-1]  # signs with the wrong (but pinned) identity
    from fedrx.secagg import kex
    _, pk = kex.generate_keypair()
    msg = advertise_message(b"", ad.round, CONTEXT, ad.hospital, ad.enc_public, pk)
    return dataclasses.replace(ad, mask_public=pk, signature=evil.sign(msg))


def unmask_replies(r: Round, drop: set[str] = frozenset()) -> dict[str, UnmaskReply]:
    """Run a round up to unmask and collect the honest replies (not yet given to the server)."""
    for stage in r.params.stages[:-1]:
        r.step(stage)
    r.alive -= set(drop)
    reqs = r.server.requests("unmask", sorted(r.alive))
    return {h: r.clients[h].handle("unmask", q) for h, q in reqs.items()}


def with_wrong_self_mask_shares(reply: UnmaskReply, owners: set[str],
                                 raw: bytes | None = None) -> UnmaskReply:
    """``reply`` with the self-mask share of each of ``owners`` replaced by a wrong one (the
    value + 1 mod p: still a well-formed 33-byte field element), or by ``raw``."""
    from fedrx.secagg import shamir
    out, hit = [], set()
    for s in reply.shares:
        if s.owner in owners:
            assert s.kind == SELF_MASK
            y = (int.from_bytes(s.share, "big") + 1) % shamir.PRIME
            s = dataclasses.replace(s, share=raw if raw is not None else y.to_bytes(33, "big"))
            hit.add(s.owner)
        out.append(s)
    assert hit == owners
    return dataclasses.replace(reply, shares=tuple(out))
