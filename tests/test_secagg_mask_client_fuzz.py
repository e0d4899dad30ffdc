"""The masking state machines against malformed messages (issue 14 title: a malicious
message must not crash a hospital).

Hypothesis takes an honest round to a random stage, replaces one field of the hospital's
request (or of one item inside it) by an ill-typed or adversarial value, and checks that the
hospital either answers or refuses with ProtocolAbort (never another exception), and that a
refusal reveals nothing.
"""

from __future__ import annotations

import dataclasses

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from secagg_mask_round import Round

from fedrx.errors import ProtocolAbort

WEIRD = st.sampled_from([None, 0, 1, -1, 2**70, "x", "h01", b"", b"x" * 64, [], ["h01"], {},
                         ("h01",), ("h01", "h01"), (["a"],), ({},), (1,), ("zz",),
                         ("h00", "h01", "h02", "h03", "h04", "h05")])


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(graph=st.sampled_from(["complete", "harary"]), stage_i=st.integers(0, 4),
       which=st.integers(0, 20), inner=st.booleans(), sub=st.integers(0, 20), val=WEIRD)
def test_malformed_requests_are_refused_never_crash(graph, stage_i, which, inner, sub, val):
    r = Round(6, 4, graph=graph, k=4, sid=bytes([stage_i + 1]) * 32)
    for s in r.params.stages[:stage_i]:
        r.step(s)
    stage = r.params.stages[stage_i]
    reqs = r.server.requests(stage, sorted(r.alive))
    h, q = sorted(reqs.items())[0]
    fields = [f.name for f in dataclasses.fields(q)]
    name = fields[which % len(fields)]
    items = getattr(q, name)
    if inner and isinstance(items, tuple) and items and dataclasses.is_dataclass(items[0]):
        first = items[0]
        subs = [f.name for f in dataclasses.fields(first)]
        bad = dataclasses.replace(first, **{subs[sub % len(subs)]: val})
        q = dataclasses.replace(q, **{name: (bad, *items[1:])})
    else:
        q = dataclasses.replace(q, **{name: val})
    client = r.clients[h]
    before = dict(client.revealed)
    try:
        client.handle(stage, q)
    except ProtocolAbort:
        assert client.revealed == before
        assert client.abort_reason is not None


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(graph=st.sampled_from(["complete", "harary"]), stage_i=st.integers(0, 4),
       which=st.integers(0, 20), inner=st.booleans(), sub=st.integers(0, 20), val=WEIRD)
def test_malformed_replies_never_crash_the_aggregator(graph, stage_i, which, inner, sub, val):
    """The same for the aggregator: one hospital's reply gets an ill-typed field; collect
    rejects that hospital or aborts the round with ProtocolAbort, never another exception."""
    r = Round(6, 4, graph=graph, k=4, sid=bytes([stage_i + 7]) * 32)
    for s in r.params.stages[:stage_i]:
        r.step(s)
    stage = r.params.stages[stage_i]
    reqs = r.server.requests(stage, sorted(r.alive))
    replies = {h: r.clients[h].handle(stage, q) for h, q in reqs.items()}
    h = sorted(replies)[0]
    rep = replies[h]
    fields = [f.name for f in dataclasses.fields(rep)]
    name = fields[which % len(fields)]
    items = getattr(rep, name)
    if inner and isinstance(items, tuple) and items and dataclasses.is_dataclass(items[0]):
        subs = [f.name for f in dataclasses.fields(items[0])]
        bad = dataclasses.replace(items[0], **{subs[sub % len(subs)]: val})
        replies[h] = dataclasses.replace(rep, **{name: (bad, *items[1:])})
    else:
        replies[h] = dataclasses.replace(rep, **{name: val})
    try:
        r.server.collect(stage, replies)
    except ProtocolAbort:
        assert r.server.abort_reason is not None
