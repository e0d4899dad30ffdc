"""A malicious aggregator (and a malicious hospital) against the single-key ``ckks`` protection
(issue 14 items 1, 6, 7): the hospital-side code is driven with crafted decrypt requests.

Every attack is mounted against EVERY decryptor (each hospital, fresh for the round) and must
be refused. :func:`test_without_the_sum_check_the_attacks_work` removes the sum check and shows
the same forged aggregates then decrypt to the victim's update: the refusals are the defence's.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import pytest

from fedrx.errors import ProtocolAbort
from fedrx.protocol.protection import RoundContext
from fedrx.protocol.protections.ckks import CkksProtection, round_context
from fedrx.secagg.ckks import client as ckks_client
from fedrx.secagg.ckks.client import ClientReady
from fedrx.secagg.ckks.messages import (
    CkksConfirmation,
    CkksConfirmRequest,
    CkksDecryption,
    CkksDecryptRequest,
    CkksUpload,
    UploadHeader,
    confirm_statement,
    upload_statement,
)
from fedrx.secagg.ckks.params import CkksConfig

HOSPITALS = ("a", "b", "c", "d", "e")
LENGTH = 4096 + 51  # two ciphertexts; the last entry is the example count
VICTIM, OTHER = "c", "d"
SESSION = b"s" * 32


@pytest.fixture(scope="module")
def prot() -> CkksProtection:
    return CkksProtection.simulated(HOSPITALS)


def _ctx(rnd: int, participants=HOSPITALS, model: str = "m" * 64) -> RoundContext:
    return RoundContext(SESSION, rnd, tuple(participants), LENGTH, model_hash=model)


def _inputs(participants, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    out = {}
    for h in participants:
        count = float(rng.integers(50, 500))
        out[h] = np.concatenate([count * rng.normal(0, 0.05, LENGTH - 1), [count]])
    return out


@dataclass
class Round:
    """What a malicious aggregator holds after an honest upload stage."""

    ctx: RoundContext
    inputs: dict[str, np.ndarray]
    uploads: dict[str, CkksUpload]
    honest: CkksDecryptRequest


def _upload_round(prot: CkksProtection, rnd: int, contexts=None, confirm=True) -> Round:
    """Run keys + upload. ``contexts``: per-hospital round contexts (a model-inconsistency
    attacker gives hospitals different ones); the uploads are collected as sent."""
    ctx = _ctx(rnd)
    contexts = contexts or {}
    xs = _inputs(HOSPITALS, rnd)
    clients = {h: prot.new_client(contexts.get(h, ctx), h) for h in HOSPITALS}
    for h in HOSPITALS:
        clients[h].set_input(xs[h])
    server = prot.new_server(ctx)
    server.collect("keys", {h: clients[h].handle("keys", q)
                            for h, q in server.requests("keys", HOSPITALS).items()})
    reqs = server.requests("upload", HOSPITALS)
    uploads = {h: clients[h].handle("upload", reqs[h]) for h in HOSPITALS}
    pub = prot.aggregator.public_context()
    listed = tuple(uploads[h].header for h in HOSPITALS)
    honest = CkksDecryptRequest(SESSION, rnd, pub.key_id, listed,
                                _serialise(_sum(prot, [uploads[h] for h in HOSPITALS])),
                                _confirmations(prot, ctx, listed) if confirm else ())
    return Round(ctx, xs, uploads, honest)


def _confirmations(prot, ctx: RoundContext, listed, who=HOSPITALS
                   ) -> tuple[CkksConfirmation, ...]:
    """The confirm stage for ``listed`` (each attack is its own round: fresh hospitals, who
    confirm any list of valid signed uploads of their round)."""
    req = CkksConfirmRequest(SESSION, ctx.round, prot.aggregator.public_context().key_id,
                             tuple(listed))
    return tuple(prot.new_client(ctx, h).handle("confirm", req) for h in who)


def _with_list(prot, r: Round, listed, aggregate) -> CkksDecryptRequest:
    """A decrypt request for ``listed`` whose list the majority confirmed."""
    return replace(r.honest, contributors=tuple(listed), aggregate=tuple(aggregate),
                   confirmations=_confirmations(prot, r.ctx, listed))


def _load(prot: CkksProtection, up: CkksUpload):
    pub = prot.aggregator.public_context()
    sizes = pub.params.chunk_sizes(LENGTH)
    return [pub.load_chunk(c, s) for c, s in zip(up.chunks, sizes, strict=True)]


def _sum(prot, uploads):
    total = _load(prot, uploads[0])
    for up in uploads[1:]:
        for acc, v in zip(total, _load(prot, up), strict=True):
            acc.add_(v)
    return total


def _serialise(vecs) -> tuple[bytes, ...]:
    return tuple(v.serialize() for v in vecs)


def _scaled(prot, up: CkksUpload, doublings: int) -> tuple[bytes, ...]:
    vecs = _load(prot, up)
    for _ in range(doublings):
        vecs = [v + v for v in vecs]
    return _serialise(vecs)


def _plus_offset(prot, up: CkksUpload, offset: np.ndarray) -> tuple[bytes, ...]:
    s = prot.aggregator.public_context().params.slots
    return _serialise([v + list(offset[i * s:(i + 1) * s]) for i, v in
                       enumerate(_load(prot, up))])


def _headers(r: Round, *names: str) -> tuple[UploadHeader, ...]:
    return tuple(r.uploads[h].header for h in names)


def _forgeries(prot: CkksProtection, r: Round) -> dict[str, CkksDecryptRequest]:
    """The issue's attacks, each a decrypt request naming >= min_contributors valid headers."""
    v = r.uploads[VICTIM]
    offset = np.linspace(-3, 3, LENGTH)
    reframed = tuple(c + b"\x38\x00" for c in v.chunks)  # same ciphertext, other bytes
    two = _headers(r, VICTIM, OTHER)
    return {
        # the victim's upload added to itself 4096 times, with 2 headers: noise / 4096
        "scaled_x4096": _with_list(prot, r, two, _scaled(prot, v, 12)),
        # the victim's upload plus a plaintext offset the aggregator knows (and subtracts)
        "known_offset": _with_list(prot, r, two, _plus_offset(prot, v, offset)),
        # the victim's upload alone, re-framed so it is not byte-identical to the upload
        "alone_reframed": _with_list(prot, r, two, reframed),
        # a duplicated upload: the victim twice (2 x victim under two headers)
        "duplicated": _with_list(prot, r, two, _scaled(prot, v, 1)),
        # all five headers, the honest sum plus 4095 x the victim: / 4096 ~ the victim
        "sum_plus_scaled_victim": replace(r.honest,
                                          aggregate=_serialise(_sum_plus(prot, r, v, 12))),
        # the other listed hospital's upload swapped for a second copy of the victim's
        "other_swapped": _with_list(prot, r, _headers(r, VICTIM, OTHER),
                                    _serialise(_sum(prot, [v, v]))),
    }


def _sum_plus(prot, r: Round, v: CkksUpload, doublings: int):
    total = _sum(prot, [r.uploads[h] for h in HOSPITALS])
    big = _load(prot, v)
    for _ in range(doublings):
        big = [x + x for x in big]
    return [t + b - x for t, b, x in zip(total, big, _load(prot, v), strict=True)]


ATTACKS = ("scaled_x4096", "known_offset", "alone_reframed", "duplicated",
           "sum_plus_scaled_victim", "other_swapped")


@pytest.fixture(scope="module")
def attacked(prot) -> tuple[Round, dict[str, CkksDecryptRequest]]:
    r = _upload_round(prot, 1)
    return r, _forgeries(prot, r)


def _victim_recovered(prot, r: Round, total: np.ndarray, factor: float,
                      offset: np.ndarray | None = None) -> float:
    """Relative error of the aggregator's estimate of the victim's input from ``total``."""
    est = (total - (0 if offset is None else offset)) / factor
    x = r.inputs[VICTIM]
    return float(np.linalg.norm(est - x) / np.linalg.norm(x))


def test_forged_aggregates_carry_the_victims_update(prot, attacked):
    """The forgeries are real attacks: decrypted with the key (as a decryptor would), each
    gives the aggregator the victim's update."""
    r, forged = attacked
    key = prot.hospitals["a"].held()
    assert _victim_recovered(prot, r, key.decrypt(forged["scaled_x4096"].aggregate, LENGTH),
                             4096) < 1e-6
    offset = np.linspace(-3, 3, LENGTH)
    assert _victim_recovered(prot, r, key.decrypt(forged["known_offset"].aggregate, LENGTH),
                             1, offset) < 1e-6
    assert _victim_recovered(prot, r, key.decrypt(forged["alone_reframed"].aggregate,
                                                  LENGTH), 1) < 1e-6


@pytest.mark.parametrize("attack", ATTACKS)
def test_every_decryptor_refuses_a_forged_aggregate(prot, attacked, attack):
    r, forged = attacked
    for h in HOSPITALS:
        with pytest.raises(ProtocolAbort, match="not the sum of the listed uploads"):
            prot.new_client(r.ctx, h).handle("decrypt", forged[attack])


def test_the_honest_aggregate_is_decrypted_by_every_decryptor(prot, attacked):
    r, _ = attacked
    want = sum(r.inputs.values())
    outs = [prot.new_client(r.ctx, h).handle("decrypt", r.honest) for h in HOSPITALS]
    for out in outs:
        assert isinstance(out, CkksDecryption)
        assert np.max(np.abs(out.total - want)) <= out.error_bound
        assert np.array_equal(out.total, outs[0].total)


def test_a_refused_aggregate_ends_the_decryptors_round(prot, attacked):
    """No second try: after a forged aggregate the decryptor answers nothing this round."""
    r, forged = attacked
    c = prot.new_client(r.ctx, "a")
    with pytest.raises(ProtocolAbort, match="not the sum"):
        c.handle("decrypt", forged["scaled_x4096"])
    with pytest.raises(ProtocolAbort, match="already decrypted"):
        c.handle("decrypt", r.honest)


def test_without_the_sum_check_the_attacks_work(prot, attacked, monkeypatch):
    """Control: with the sum check removed the decryptors release the forged aggregates,
    and the aggregator reads the victim's update off them (the flooding noise is sized for
    the 2 listed headers, then divided by the scale factor)."""
    r, forged = attacked
    monkeypatch.setattr(ckks_client, "check_tagged_sum", lambda *a, **k: None)
    # x 4096 would also break the count bound here (4096 x the victim's count > 2 x
    # max_count); x 1024 passes every other check: the range check is not what stops it
    req = replace(forged["scaled_x4096"], aggregate=_scaled(prot, r.uploads[VICTIM], 10))
    out = prot.new_client(r.ctx, "a").handle("decrypt", req)
    assert _victim_recovered(prot, r, out.total, 1024) < 1e-4
    out = prot.new_client(r.ctx, "b").handle("decrypt", forged["known_offset"])
    # the flooding noise of a 2-upload sum is ~1e-3 of an update: the victim's, released
    assert _victim_recovered(prot, r, out.total, 1, np.linspace(-3, 3, LENGTH)) < 1e-2
    out = prot.new_client(r.ctx, "e").handle("decrypt", forged["alone_reframed"])
    assert _victim_recovered(prot, r, out.total, 1) < 1e-2


def test_an_older_rounds_ciphertext_is_refused(prot, attacked):
    """The victim's upload of another round (tags are keyed per round) is not this round's."""
    r, _ = attacked
    r2 = _upload_round(prot, 2)
    req = replace(r2.honest, aggregate=_serialise(_sum(prot, [r.uploads[VICTIM]]
                                                       + [r2.uploads[h] for h in HOSPITALS
                                                          if h != VICTIM])))
    for h in HOSPITALS:
        with pytest.raises(ProtocolAbort, match="not the sum"):
            prot.new_client(r2.ctx, h).handle("decrypt", req)


# ----------------------------------------------------------------- the listed uploads


def test_one_hospitals_upload_alone_is_refused(prot, attacked):
    r, _ = attacked
    with pytest.raises(ProtocolAbort, match="refusing to decrypt an aggregate of 1"):
        _confirmations(prot, r.ctx, _headers(r, VICTIM))  # nobody confirms such a list
    req = replace(r.honest, contributors=_headers(r, VICTIM),
                  aggregate=r.uploads[VICTIM].chunks)
    for h in HOSPITALS:
        with pytest.raises(ProtocolAbort, match="refusing to decrypt an aggregate of 1"):
            prot.new_client(r.ctx, h).handle("decrypt", req)


def test_a_duplicated_header_is_refused(prot, attacked):
    r, _ = attacked
    req = replace(r.honest, contributors=_headers(r, VICTIM, VICTIM),
                  aggregate=_scaled(prot, r.uploads[VICTIM], 1))
    for h in HOSPITALS:
        with pytest.raises(ProtocolAbort, match="repeated"):
            prot.new_client(r.ctx, h).handle("decrypt", req)


def _signed_by(prot, signer: str, r: Round, hdr: UploadHeader, name: str) -> UploadHeader:
    key_id = prot.aggregator.public_context().key_id
    stmt = upload_statement(SESSION, r.ctx.round, key_id, name, hdr.digests, b"", hdr.tags)
    return replace(hdr, hospital=name,
                   signature=prot.hospitals[signer].identity.sign(stmt))


@pytest.mark.parametrize("how", ["unsigned", "relabelled", "signed_by_another",
                                 "no_context", "tags_changed"])
def test_an_upload_not_signed_by_its_hospital_is_refused(prot, attacked, how):
    r, _ = attacked
    v = r.uploads[VICTIM].header
    bad = {
        "unsigned": replace(v, signature=bytes(64)),
        "relabelled": replace(v, hospital="a"),  # a's slot, the victim's signature
        "signed_by_another": _signed_by(prot, OTHER, r, v, VICTIM),
        # the victim's own key, but over a statement without this round's context
        "no_context": _signed_by(prot, VICTIM, r, v, VICTIM),
        "tags_changed": replace(v, tags=(v.tags[0] ^ 1,) + v.tags[1:]),
    }[how]
    contributors = (bad,) + tuple(h for h in r.honest.contributors
                                  if h.hospital not in (VICTIM, bad.hospital))
    req = replace(r.honest, contributors=contributors)
    for h in HOSPITALS:
        with pytest.raises(ProtocolAbort, match="does not verify"):
            prot.new_client(r.ctx, h).handle("decrypt", req)


# ------------------------------------------- one contributor list per round (differencing)


def test_two_lists_cannot_both_be_decrypted_in_one_round(prot, attacked):
    """The aggregator wants sum(all five) and sum(all but the victim) from two decryptors
    (their difference is the victim's update). Hospitals confirm one list per round and a
    decryptor needs a majority's confirmations of ITS list: the second list gets none."""
    r, _ = attacked
    everyone = _headers(r, *HOSPITALS)
    others = tuple(hd for hd in everyone if hd.hospital != VICTIM)
    agg_others = _serialise(_sum(prot, [r.uploads[h] for h in HOSPITALS if h != VICTIM]))
    clients = {h: prot.new_client(r.ctx, h) for h in HOSPITALS}
    key_id = prot.aggregator.public_context().key_id
    first = tuple(clients[h].handle("confirm", CkksConfirmRequest(SESSION, 1, key_id,
                                                                  everyone))
                  for h in ("a", "b", "c"))  # a majority confirms the full list
    for h in ("a", "b", "c"):  # ... and will not confirm a second one
        with pytest.raises(ProtocolAbort, match="already confirmed another contributor list"):
            clients[h].handle("confirm", CkksConfirmRequest(SESSION, 1, key_id, others))
    second = tuple(clients[h].handle("confirm", CkksConfirmRequest(SESSION, 1, key_id,
                                                                   others))
                   for h in ("d", "e"))  # the two left: a minority
    out = clients["b"].handle("decrypt", replace(r.honest, confirmations=first))
    assert isinstance(out, CkksDecryption)  # the majority's list decrypts
    with pytest.raises(ProtocolAbort, match="another contributor list than this hospital"):
        clients["d"].handle("decrypt", replace(r.honest, confirmations=first))
    for attempt in (first, second, first + second):
        req = replace(r.honest, contributors=others, aggregate=agg_others,
                      confirmations=attempt)
        with pytest.raises(ProtocolAbort, match="confirmed by [0-2] of 5 participants"):
            prot.new_client(r.ctx, "e").handle("decrypt", req)
    with pytest.raises(ProtocolAbort, match="another contributor list than this hospital"):
        clients["a"].handle("decrypt", replace(r.honest, contributors=others,
                                               aggregate=agg_others, confirmations=first))


def test_forged_confirmations_do_not_count(prot, attacked):
    r, _ = attacked
    conf = r.honest.confirmations
    forged = (replace(conf[0], signature=bytes(64)), replace(conf[1], hospital="c"),
              replace(conf[2], round=2), conf[3], conf[3])
    with pytest.raises(ProtocolAbort, match="confirmed by 1 of 5 participants"):
        prot.new_client(r.ctx, "a").handle("decrypt", replace(r.honest, confirmations=forged))


# ------------------------------------------------- item 1: model inconsistency under CKKS


@pytest.mark.parametrize("change", ["model", "participants"])
def test_hospitals_given_different_round_contexts_are_never_decrypted_together(prot, change):
    """The victim is given another model (or participant list) than the rest; every hospital
    uploads, the aggregator lists all five uploads with their honest sum; no decryptor (with
    either context) decrypts: each upload statement names the context its hospital verified."""
    ctx = _ctx(3)
    if change == "model":
        victim_ctx = replace(ctx, model_hash="t" * 64)
    else:
        victim_ctx = replace(ctx, participants=("a", "b", VICTIM))
    r = _upload_round(prot, 3, {VICTIM: victim_ctx}, confirm=False)
    listed = r.honest.contributors
    conf_req = CkksConfirmRequest(SESSION, 3, r.honest.key_id, listed)
    for h in HOSPITALS:  # no hospital even confirms the list
        own = victim_ctx if h == VICTIM else r.ctx
        with pytest.raises(ProtocolAbort, match="does not verify for this session, round, "
                                                "key epoch and round context|not a "
                                                "participant|tags, expected"):
            prot.new_client(own, h).handle("confirm", conf_req)
    # nor decrypts it, even with confirmations (had they been obtained)
    r.honest = replace(r.honest, confirmations=_sign_confirmations(prot, r.ctx, listed))
    for h in HOSPITALS:
        own = victim_ctx if h == VICTIM else r.ctx
        with pytest.raises(ProtocolAbort, match="does not verify for this session, round, "
                                                "key epoch and round context|not a "
                                                "participant|tags, expected"):
            prot.new_client(own, h).handle("decrypt", r.honest)
    # the same aggregate with the victim left out is an honest sum of four: decrypted
    rest = tuple(hd for hd in r.honest.contributors if hd.hospital != VICTIM)
    agg = _serialise(_sum(prot, [r.uploads[h] for h in HOSPITALS if h != VICTIM]))
    out = prot.new_client(r.ctx, "a").handle("decrypt", _with_list(prot, r, rest, agg))
    assert isinstance(out, CkksDecryption)


def _sign_confirmations(prot, ctx, listed) -> tuple[CkksConfirmation, ...]:
    """Confirmations as if every hospital had signed (bypassing their checks)."""
    key_id = prot.aggregator.public_context().key_id
    stmt = confirm_statement(SESSION, ctx.round, key_id, round_context(ctx, prot.config),
                             listed)
    return tuple(CkksConfirmation(h, ctx.round, prot.hospitals[h].identity.sign(stmt))
                 for h in HOSPITALS)


# ------------------------------------------------------------ item 7: range of the sum


def _malicious_input(prot_: CkksProtection, ctx: RoundContext, h: str, x: np.ndarray):
    """A hospital running modified code: its input skips set_input's bounds."""
    c = prot_.new_client(ctx, h)
    c.state = ClientReady(c._round, np.asarray(x, dtype=np.float64))
    return c


def _drive(prot_: CkksProtection, ctx: RoundContext, clients, on_decrypt=None):
    server = prot_.new_server(ctx)
    for stage in server.stages:
        replies = {}
        for h, req in server.requests(stage, list(ctx.participants)).items():
            try:
                replies[h] = clients[h].handle(stage, req)
            except ProtocolAbort:
                pass
        if stage == "decrypt" and on_decrypt is not None:
            replies = on_decrypt(replies)
        server.collect(stage, replies)
    return server.result()


def test_a_huge_example_count_is_refused_by_the_decryptors(prot):
    ctx = _ctx(4)
    xs = _inputs(HOSPITALS, 4)
    clients = {h: prot.new_client(ctx, h) for h in HOSPITALS}
    for h in HOSPITALS:
        clients[h].set_input(xs[h])
    bad = xs["e"].copy()
    bad[-1] = 6 * prot.config.max_count  # the sum's count > 5 x max_count
    with pytest.raises(ProtocolAbort, match="max_count"):
        prot.new_client(ctx, "e").set_input(bad)  # an honest node refuses it itself
    clients["e"] = _malicious_input(prot, ctx, "e", bad)
    for h in HOSPITALS:  # every decryptor refuses to release it
        with pytest.raises(ProtocolAbort, match="outside \\[1, 5 x max_count"):
            _decrypt_honest_sum(prot, ctx, clients, h)
    with pytest.raises(ProtocolAbort, match="no key-holding hospital"):
        _drive(prot, ctx, clients)


def _decrypt_honest_sum(prot_, ctx, clients, decryptor: str):
    server = prot_.new_server(ctx)
    server.collect("keys", {})
    reqs = server.requests("upload", list(ctx.participants))
    server.collect("upload", {h: clients[h].handle("upload", q) for h, q in reqs.items()})
    conf = server.requests("confirm", list(ctx.participants))
    server.collect("confirm", {h: prot_.new_client(ctx, h).handle("confirm", q)
                               for h, q in conf.items()})
    req = next(iter(server.requests("decrypt", list(ctx.participants)).values()))
    return prot_.new_client(ctx, decryptor).handle("decrypt", req)


def test_a_garbage_decryption_is_refused_by_the_aggregator(prot):
    """E.g. a wrong sum decoding to a count of -9e8: the round aborts, no update."""
    ctx = _ctx(5)
    xs = _inputs(HOSPITALS, 5)
    clients = {h: prot.new_client(ctx, h) for h in HOSPITALS}
    for h in HOSPITALS:
        clients[h].set_input(xs[h])

    def garbage(replies):
        out = {}
        for h, rep in replies.items():
            t = rep.total.copy()
            t[-1] = -9e8
            out[h] = replace(rep, total=t)
        return out

    with pytest.raises(ProtocolAbort, match="example count .* outside"):
        _drive(prot, ctx, clients, garbage)


@pytest.fixture(scope="module")
def clipped() -> CkksProtection:
    return CkksProtection.simulated(HOSPITALS, config=CkksConfig(clip_norm=0.5))


def test_clip_norm_clips_honest_inputs_and_bounds_the_sum(clipped):
    ctx = _ctx(6)
    xs = _inputs(HOSPITALS, 6)
    for x in xs.values():
        x[:-1] *= 40  # unweighted delta norm ~ 0.05 * 40 * 64 = 128 > 0.5
    clients = {h: clipped.new_client(ctx, h) for h in HOSPITALS}
    for h in HOSPITALS:
        clients[h].set_input(xs[h])
    res = _drive(clipped, ctx, clients)
    count = res.total[-1]
    assert np.linalg.norm(res.total[:-1]) <= count * 0.5 * (1 + 1e-6)
    assert abs(count - sum(x[-1] for x in xs.values())) <= res.stats["error_bound"]


def test_an_unclipped_malicious_input_is_refused_by_the_decryptors(clipped):
    ctx = _ctx(7)
    xs = _inputs(HOSPITALS, 7)
    clients = {h: clipped.new_client(ctx, h) for h in HOSPITALS}
    for h in HOSPITALS:
        clients[h].set_input(xs[h])
    bad = xs["e"].copy()
    bad[:-1] *= 1e3  # ||c * delta|| far above (sum of counts) x clip_norm
    clients["e"] = _malicious_input(clipped, ctx, "e", bad)
    decrypted: list[str] = []

    def record(replies):
        decrypted.extend(replies)
        return replies

    with pytest.raises(ProtocolAbort, match="no key-holding hospital"):
        _drive(clipped, ctx, clients, record)
    assert decrypted == []


# ------------------------------------------------------------ fuzzed malicious aggregator


def _request_pool(prot, r: Round, forged) -> list[tuple[str, object]]:
    """Well-typed but adversarial (stage, request) pairs for round 1."""
    from fedrx.secagg.ckks.messages import CkksKeyringRequest, CkksUploadRequest

    key_id = prot.aggregator.public_context().key_id
    two = _headers(r, VICTIM, OTHER)
    up = CkksUploadRequest(SESSION, 1, 1, key_id, LENGTH)
    pool: list[tuple[str, object]] = [
        ("upload", up), ("upload", replace(up, round=2)),
        ("upload", replace(up, session_id=b"x" * 32)),
        ("upload", replace(up, vector_length=LENGTH - 1)),
        ("upload", replace(up, key_id=b"k" * 32)),
        ("keys", CkksKeyringRequest(SESSION, 2, 1)),
        ("confirm", CkksConfirmRequest(SESSION, 1, key_id, r.honest.contributors)),
        ("confirm", CkksConfirmRequest(SESSION, 1, key_id, two)),
        ("confirm", CkksConfirmRequest(SESSION, 1, key_id, two[:1])),
        ("confirm", CkksConfirmRequest(SESSION, 2, key_id, two)),
        ("decrypt", r.honest), ("decrypt", replace(r.honest, confirmations=())),
        ("decrypt", replace(r.honest, round=2)), ("decrypt", replace(r.honest, aggregate=())),
        ("upload", r.honest), ("decrypt", up), ("bogus", up), ("confirm", None),
    ]
    pool += [("decrypt", req) for req in forged.values()]
    return pool


@pytest.mark.parametrize("seed", range(3))
def test_fuzzed_requests_only_ever_get_refusals_and_one_release(prot, attacked, seed):
    """Random sequences of adversarial requests to one hospital: every answer is a reply or a
    ProtocolAbort (never another exception); it signs at most one contributor list and
    releases at most one decryption, which is the honest sum; nothing forged is released."""
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    r, forged = attacked
    pool = _request_pool(prot, r, forged)
    want = sum(r.inputs.values())

    @settings(max_examples=8, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))
    @given(st.lists(st.integers(0, len(pool) - 1), min_size=1, max_size=12),
           st.sampled_from(HOSPITALS))
    def run(picks, h):
        c = prot.new_client(r.ctx, h)
        c.set_input(r.inputs[h])
        lists, released = set(), []
        for i in [(p + seed) % len(pool) for p in picks]:
            stage, req = pool[i]
            try:
                out = c.handle(stage, req)
            except ProtocolAbort:
                continue
            if isinstance(out, CkksConfirmation):
                lists.add(out.signature)
            if isinstance(out, CkksDecryption):
                released.append(out)
        assert len(lists) <= 1 and len(released) <= 1
        for out in released:
            assert np.max(np.abs(out.total - want)) <= out.error_bound

    run()


def test_the_aggregator_rejects_uploads_with_bad_tags_or_another_context(prot):
    """An honest aggregator drops (with the reason in stats) an upload whose tags were cut or
    that was signed over another round context; the round completes without it."""
    ctx = _ctx(8)
    xs = _inputs(HOSPITALS, 8)
    clients = {h: prot.new_client(ctx, h) for h in HOSPITALS}
    clients["e"] = prot.new_client(replace(ctx, model_hash="t" * 64), "e")
    for h in HOSPITALS:
        clients[h].set_input(xs[h])

    class Cut:
        def __init__(self, inner):
            self.inner = inner

        def handle(self, stage, req):
            out = self.inner.handle(stage, req)
            if stage == "upload":
                out = replace(out, header=replace(out.header, tags=out.header.tags[:-1]))
            return out

    clients["d"] = Cut(clients["d"])
    res = _drive(prot, ctx, clients)
    rejected = res.stats["rejected"]
    assert set(res.contributors) == {"a", "b", "c"}
    assert "sum tags" in rejected["d"] and "signature" in rejected["e"]
    want = sum(xs[h] for h in ("a", "b", "c"))
    assert np.max(np.abs(res.total - want)) <= res.stats["error_bound"]
