"""Tampering with the ledgers of REAL DP runs (issue 16 item 6): every tampering here passed
the audit before its fix; each test mounts it on a ledger written by ``fedrx simulate``.

One honest run (module fixture: the MIMIC-III demo, 2 hospitals, 2 rounds, DP on) is copied
for each tampering; the budget tests run the simulation again on the same patients."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from test_cli import run as cli

from fedrx.canonical import canonical_json
from fedrx.dp.audit import audit, run_audit
from fedrx.dp.audit_report import format_audit
from fedrx.dp.ledger import (
    compute_entry_hash,
    ledger_path,
    read_entries,
    signing_bytes,
    write_public_identity,
)
from fedrx.errors import BudgetExceeded, ConfigError
from fedrx.nodes.simulate import SimulationConfig, run_simulation
from fedrx.secagg.identity import Federation, Identity, PublicIdentity


def _cfg(out: Path, store: Path | str, **kw) -> SimulationConfig:
    base = dict(hospitals=2, rounds=2, hidden=16, local_epochs=1, personalize=False,
                dp=True, epsilon=4.0, out=str(out),
                budget_store=str(store))
    return SimulationConfig(**{**base, **kw})


@pytest.fixture(scope="module")
def honest(mimic_demo, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("honest")
    run_simulation(_cfg(root / "run", root / "store"))
    return root / "run"


def _copy(src: Path, tmp: Path) -> Path:
    dst = tmp / "copy"
    shutil.copytree(src, dst)
    return dst


def _kinds(findings) -> set[str]:
    return {f.kind for f in findings}


def _write_entries(p: Path, entries: list[dict]) -> None:
    p.write_bytes(b"".join(canonical_json(e) + b"\n" for e in entries))


def _resign(entries: list[dict], ident: Identity) -> list[dict]:
    """What a forger holding a key does: re-sign and re-chain every entry."""
    prev = "0" * 64
    out = []
    for e in entries:
        e = {k: v for k, v in e.items() if k not in ("signature", "entry_hash")}
        e["prev_hash"] = prev
        e["signature"] = ident.sign(signing_bytes(e)).hex()
        e["entry_hash"] = prev = compute_entry_hash(e)
        out.append(e)
    return out


def test_honest_run_audits_clean_with_pins_and_default_anchors(honest):
    res = run_audit(honest)
    assert res.exit_code == 0, format_audit(res)
    assert [h.hospital for h in res.hospitals] == ["h1", "h2"]
    for h in res.hospitals:
        assert h.signatures == "pinned" and h.key_source.endswith("federation.json")
        assert h.chain and h.anchor == "unsigned" and h.anchored_entries == h.entries == 2
        assert h.recomputed and abs(h.max_epsilon_diff) < 0.1
    assert "signatures checked against the PINNED key" in format_audit(res)
    json.dumps([h.to_json() for h in res.hospitals])  # plain data for the HTML report
    one = run_audit(ledger_path(honest, "h1"))  # one ledger file: that hospital only
    assert one.exit_code == 0 and [h.hospital for h in one.hospitals] == ["h1"]


def test_resigned_ledger_with_swapped_identity_fails_against_pin(honest, tmp_path):
    d = _copy(honest, tmp_path)
    forger = Identity.generate("h1")
    entries = read_entries(ledger_path(d, "h1"))
    for e in entries:
        e["noise_multiplier"] *= 3  # claims far more noise than was added
    _write_entries(ledger_path(d, "h1"), _resign(entries, forger))
    write_public_identity(d, forger.public)
    # the attack: trusting the identity beside the ledger, the audit passes
    assert audit(d, recompute=False, pins=None) == []
    kinds = _kinds(run_audit(d).findings)
    assert {"identity-not-pinned", "bad-signature"} <= kinds
    proc = cli("audit", str(d), "--json", str(tmp_path / "audit.json"))
    assert proc.returncode == 1 and "identity-not-pinned" in proc.stdout
    doc = json.loads((tmp_path / "audit.json").read_text())
    assert doc["format"] == "fedrx-audit/1" and doc["ok"] is False
    assert "identity-not-pinned" in {f["kind"] for f in doc["findings"]}
    assert [h["signatures"] for h in doc["hospitals"]] == ["pinned", "pinned"]


def test_hospital_outside_the_pinned_federation_fails(honest, tmp_path):
    d = _copy(honest, tmp_path)
    fed = json.loads((d / "federation.json").read_text())
    fed["members"] = [m for m in fed["members"] if m["hospital"] != "h2"]
    (d / "federation.json").write_text(json.dumps(fed))
    assert "not-pinned" in _kinds(run_audit(d).findings)


def test_unrelated_federation_file_above_an_older_run_is_ignored(honest, tmp_path):
    """An older run (no DIR/federation.json) below another deployment's federation file:
    that file pins none of its hospitals, so it is not used (and the output says NOT
    pinned) instead of failing every hospital as outside the federation."""
    d = _copy(honest, tmp_path)
    (d / "federation.json").unlink()
    other = Federation.of([Identity.generate("x1"), Identity.generate("x2")])
    (tmp_path / "certs").mkdir()
    (tmp_path / "certs" / "federation.json").write_text(json.dumps({
        "format": "fedrx-deployment/2", "federation": other.to_json(),
        "aggregator_sign_public": "00" * 32}))
    res = run_audit(d)
    assert res.exit_code == 0, format_audit(res)
    assert {h.signatures for h in res.hospitals} == {"unpinned"}
    assert "NOT pinned" in format_audit(res)


def test_deployment_federation_file_pins_node_folders(honest, tmp_path):
    """The gRPC layout: OUT/certs/federation.json (fedrx-deployment/2) pins OUT/nodes/<h>."""
    from fedrx.nodes.receipt_store import write_receipts

    out = tmp_path / "grpc"
    members = json.loads((honest / "federation.json").read_text())
    agg = Identity.generate("aggregator")
    (out / "certs").mkdir(parents=True)
    (out / "certs" / "federation.json").write_text(json.dumps({
        "format": "fedrx-deployment/2", "federation": members,
        "aggregator_sign_public": agg.public.sign_public.hex()}))
    for h in ("h1", "h2"):
        node = out / "nodes" / h
        (node / "ledger").mkdir(parents=True)
        shutil.copy(ledger_path(honest, h), ledger_path(node, h))
        write_public_identity(node, PublicIdentity.from_json(
            next(m for m in members["members"] if m["hospital"] == h)))
        (node / "state.json").write_text(json.dumps({"format": "fedrx-node/1",
                                                     "hospital": h}))
    rounds = json.loads((honest / "results.json").read_text())["rounds"]
    write_receipts(out / "aggregator", rounds, "f" * 64, b"s" * 16, agg)
    for h in ("h1", "h2"):
        res = run_audit(out / "nodes" / h)
        assert res.exit_code == 0, format_audit(res)
        (ha,) = res.hospitals
        assert ha.signatures == "pinned" and ha.anchor == "signed-receipt"
        assert res.receipts_verified
    # a node folder on its own: its verified receipts.jsonl anchors it by default
    signed = json.loads((out / "aggregator" / "receipts.json").read_text())["rounds"]
    alone = tmp_path / "alone"
    shutil.copytree(out / "nodes" / "h1", alone)
    (alone / "receipts.jsonl").write_text("".join(json.dumps(r) + "\n" for r in signed))
    res = run_audit(alone, federation_path=out / "certs" / "federation.json")
    assert res.exit_code == 0 and res.hospitals[0].anchor == "signed-receipt"
    assert res.hospitals[0].anchor_source.endswith("receipts.jsonl")
    la = ledger_path(alone, "h1")
    la.write_text(la.read_text().splitlines()[0] + "\n")
    assert "head-mismatch" in _kinds(run_audit(alone, federation_path=out / "certs" /
                                               "federation.json").findings)
    la.unlink()
    (alone / "identities" / "h1.pub.json").unlink()  # state.json still names the hospital
    assert "missing-ledger" in _kinds(run_audit(alone).findings)
    # the tail cut off a node's ledger: caught by the default (signed) anchors
    p = ledger_path(out / "nodes" / "h1", "h1")
    p.write_text(p.read_text().splitlines()[0] + "\n")
    assert "head-mismatch" in _kinds(run_audit(out / "nodes" / "h1").findings)
    # a swapped identity file in a node folder, ledger re-signed
    forger = Identity.generate("h2")
    p2 = ledger_path(out / "nodes" / "h2", "h2")
    _write_entries(p2, _resign(read_entries(p2), forger))
    write_public_identity(out / "nodes" / "h2", forger.public)
    assert "identity-not-pinned" in _kinds(run_audit(out / "nodes" / "h2").findings)


@pytest.mark.parametrize("how", ["delete", "empty", "delete-with-identity"])
def test_deleted_or_empty_ledger_fails(honest, tmp_path, how):
    d = _copy(honest, tmp_path)
    p = ledger_path(d, "h2")
    if how == "empty":
        p.write_text("")
    else:
        p.unlink()
    if how == "delete-with-identity":
        (d / "identities" / "h2.pub.json").unlink()
    if how == "delete-with-identity":  # the attack before: only h1's ledger was audited
        assert audit(d, pins=None, recompute=False) == []
    res = run_audit(d)
    want = "empty-ledger" if how == "empty" else "missing-ledger"
    assert want in _kinds(res.findings) and res.exit_code == 1
    assert "audit OK" not in format_audit(res)


def test_tail_truncation_caught_by_default_anchors_or_said_plainly(honest, tmp_path):
    d = _copy(honest, tmp_path)
    p = ledger_path(d, "h1")
    p.write_text(p.read_text().splitlines()[0] + "\n")
    assert audit(d, recompute=False) == []  # a shorter valid chain
    res = run_audit(d)  # no --anchors: the run's own round records anchor the heads
    assert "head-mismatch" in _kinds(res.findings)
    (d / "results.json").unlink()
    res = run_audit(d)
    assert res.exit_code == 0
    assert all(h.anchor == "not-anchored" for h in res.hospitals)
    assert "not anchored: truncation not detectable" in format_audit(res)


def test_duplicate_key_before_the_signed_value_fails(honest, tmp_path):
    d = _copy(honest, tmp_path)
    p = ledger_path(d, "h1")
    lines = p.read_text().splitlines()
    honest_eps = json.loads(lines[1])["epsilon"]
    # a first-key-wins reader sees epsilon 0.01; Python's json (last wins) the signed value
    lines[1] = '{"epsilon":0.01,' + lines[1][1:]
    p.write_text("".join(x + "\n" for x in lines))
    assert json.loads(lines[1])["epsilon"] == honest_eps
    kinds = _kinds(audit(d, recompute=False))
    assert {"duplicate-key", "non-canonical"} <= kinds
    assert "bad-signature" not in kinds  # the signed value itself is intact


def test_non_canonical_line_fails(honest, tmp_path):
    d = _copy(honest, tmp_path)
    p = ledger_path(d, "h2")
    entries = read_entries(p)
    p.write_text("".join(json.dumps(e, indent=None) + "\n" for e in entries))  # ", " ": "
    assert _kinds(audit(d, recompute=False)) == {"non-canonical"}


def test_delta_must_be_below_one_over_n(mimic_demo, tmp_path):
    with pytest.raises(ConfigError, match=r"delta 0.5 is not below 1/N = 1/\d+ for hospital"):
        run_simulation(_cfg(tmp_path / "run", tmp_path / "store", delta=0.5))
    assert not (tmp_path / "run").exists()
    proc = cli("simulate", "--hospitals", "2", "--rounds", "1", "--dp", "on", "--delta", "0.5",
               "--out", str(tmp_path / "cli"))
    assert proc.returncode != 0
    assert "1/N" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def test_budget_carried_across_runs_on_the_same_patients(honest, tmp_path):
    store = honest.parent / "store"  # the honest run spent epsilon 4 on these patients
    spent = {h: read_entries(ledger_path(honest, h))[-1]["epsilon"] for h in ("h1", "h2")}
    with pytest.raises(BudgetExceeded, match="earlier run.*already spent epsilon"):
        run_simulation(_cfg(tmp_path / "second", store, epsilon=3.0, rounds=1))
    assert not (tmp_path / "second" / "ledger").exists()
    doc = run_simulation(_cfg(tmp_path / "third", store, epsilon=8.0, rounds=1))
    for h in ("h1", "h2"):
        entries = read_entries(ledger_path(tmp_path / "third", h))
        assert entries[0]["carried"]["runs"] and entries[0]["epsilon"] > spent[h]
        assert doc["dp"][h]["epsilon"] <= 8.0
    res = run_audit(tmp_path / "third")
    assert res.exit_code == 0, format_audit(res)
    assert all(h.carried_runs == 1 for h in res.hospitals)
    # dropping the carried charges (re-signed by the key holder) understates epsilon
    p = ledger_path(tmp_path / "third", "h1")
    entries = read_entries(p)
    forged = [{k: v for k, v in e.items() if k != "carried"} for e in entries]
    key = Identity.generate("h1")
    _write_entries(p, _resign(forged, key))
    fed = json.loads((tmp_path / "third" / "federation.json").read_text())
    members = {m["hospital"]: PublicIdentity.from_json(m) for m in fed["members"]}
    members["h1"] = key.public
    (tmp_path / "third" / "federation.json").write_text(
        json.dumps(Federation(members).to_json()))
    write_public_identity(tmp_path / "third", key.public)
    assert "epsilon-mismatch" in _kinds(run_audit(tmp_path / "third").findings)
    # a different split of the same data is a different set of patients per hospital,
    # but shares patients: it is charged too
    with pytest.raises(BudgetExceeded):
        run_simulation(_cfg(tmp_path / "fourth", store, epsilon=4.0, rounds=1, seed=1))


def test_default_store_refuses_a_run_that_would_be_charged_on_top(mimic_demo, tmp_path,
                                                                  monkeypatch):
    """The default store of ``fedrx simulate`` ("auto", beside the run folders): a run on
    patients that earlier runs spent budget on is refused with instructions, never silently
    shrunk; the CLI uses it without being told."""
    from fedrx.dp.budget_store import STORE_ENV

    monkeypatch.delenv(STORE_ENV, raising=False)
    proc = cli("simulate", "--hospitals", "2", "--rounds", "1", "--dp", "on", "--epsilon", "2",
               "--out", str(tmp_path / "a"))
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / ".fedrx-budget" / "records").is_dir()
    with pytest.raises(BudgetExceeded, match=r"set budget_store .* or budget_store = \"off\""):
        run_simulation(_cfg(tmp_path / "b", "auto", rounds=1, epsilon=8.0))
    # a programmatic run that names no store (a benchmark arm) is not charged
    run_simulation(_cfg(tmp_path / "e", "", rounds=1, epsilon=2.0))
    assert "carried" not in read_entries(ledger_path(tmp_path / "e", "h1"))[0]
    doc = run_simulation(_cfg(tmp_path / "c", "off", rounds=1, epsilon=2.0))
    assert "carried" not in read_entries(ledger_path(tmp_path / "c", "h1"))[0]
    assert doc["dp"]["h1"]["epsilon"] <= 2.0
    monkeypatch.setenv(STORE_ENV, "off")  # the same for a harness that cannot pass settings
    run_simulation(_cfg(tmp_path / "d", "auto", rounds=1, epsilon=2.0))
    assert "carried" not in read_entries(ledger_path(tmp_path / "d", "h1"))[0]


def test_merged_small_sites_run_with_dp(tmp_path):
    from fedrx.medrx.synth.config import SynthConfig
    from fedrx.medrx.synth.writer import generate

    data = tmp_path / "synth"
    generate(SynthConfig(hospitals=3, patients=180, seed=7, catalogue="builtin"), data)
    doc = run_simulation(_cfg(tmp_path / "run", tmp_path / "store", data=str(data),
                              rounds=1, hospitals=2, min_patients=3))
    groups = [h for h in doc["dp"] if h.startswith("group-")]
    assert groups and all("-and-" in h for h in groups)
    res = run_audit(tmp_path / "run")
    assert res.exit_code == 0, format_audit(res)


def test_unusable_federation_or_anchors_file_is_one_error_line(honest, tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('{"format": "nope"}')
    for flag in ("--federation", "--anchors"):
        proc = cli("audit", str(honest), flag, str(bad))
        lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
        assert proc.returncode == 2 and len(lines) == 1, proc.stderr
        assert str(bad) in lines[0]


@pytest.mark.parametrize("value", ["NaN", "Infinity", "-Infinity"])
def test_non_json_number_is_a_finding_not_a_crash(honest, tmp_path, value):
    d = _copy(honest, tmp_path)
    p = ledger_path(d, "h1")
    lines = p.read_text().splitlines()
    e = json.loads(lines[0])
    lines[0] = lines[0].replace(f'"epsilon":{e["epsilon"]!r}', f'"epsilon":{value}')
    p.write_text("".join(x + "\n" for x in lines))
    res = run_audit(d)
    assert res.exit_code == 1 and "malformed" in _kinds(res.findings)
