"""Signed privacy ledger: durability, tamper detection by the audit, budget reports."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fedrx.canonical import canonical_json
from fedrx.dp.accountants.mechanism import Mechanism
from fedrx.dp.audit import audit, run_audit
from fedrx.dp.audit_report import format_audit
from fedrx.dp.ledger import (
    GENESIS_HASH,
    LedgerHead,
    PrivacyLedger,
    compute_entry_hash,
    ledger_path,
    read_entries,
    signing_bytes,
)
from fedrx.dp.report import budget_report
from fedrx.errors import LedgerError
from fedrx.secagg.identity import Identity

DELTA = 1e-5
MECH = Mechanism(0.05, 1.2, 20)


def _append(led: PrivacyLedger, rnd: int, status: str = "trained", budget: float = 8.0):
    return led.append(round=rnd, mechanism=MECH, max_grad_norm=1.0, delta=DELTA,
                      accountant="prv", model_hash=f"{rnd:064x}", budget_epsilon=budget,
                      status=status)


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> tuple[Path, dict[str, Identity]]:
    d = tmp_path_factory.mktemp("run")
    ids = {h: Identity.generate(h) for h in ("h1", "h2")}
    for ident in ids.values():
        led = PrivacyLedger.in_run_dir(d, ident)
        for r in range(1, 5):
            _append(led, r)
        _append(led, 5, status="refused")
    return d, ids


def _copy(run_dir: Path, tmp: Path) -> Path:
    import shutil

    dst = tmp / "copy"
    shutil.copytree(run_dir, dst)
    return dst


def _lines(p: Path) -> list[str]:
    return p.read_text().splitlines()


def _write(p: Path, lines: list[str]) -> None:
    p.write_text("".join(x + "\n" for x in lines))


def _kinds(findings) -> set[str]:
    return {f.kind for f in findings}


def test_clean_ledger_passes_audit(run, capsys):
    d, _ = run
    entries = read_entries(ledger_path(d, "h1"))
    assert [e["round"] for e in entries] == [1, 2, 3, 4, 5]
    assert entries[0]["prev_hash"] == GENESIS_HASH
    assert all(e["privacy_unit"] == "patient" for e in entries)
    eps = [e["epsilon"] for e in entries]
    assert eps[0] < eps[1] < eps[2] < eps[3] == eps[4]  # refused round costs nothing
    assert entries[4]["status"] == "refused" and entries[4]["steps"] == 0
    assert audit(d) == []
    result = run_audit(d)
    assert result.exit_code == 0
    assert "audit OK" in format_audit(result)
    assert capsys.readouterr().out == ""  # the audit itself prints nothing


def test_entry_format_is_canonical_and_signed(run):
    d, ids = run
    line = _lines(ledger_path(d, "h1"))[1]
    e = json.loads(line)
    assert canonical_json(e).decode() == line
    ids["h1"].public.verify(bytes.fromhex(e["signature"]), signing_bytes(e))  # raises if not
    assert compute_entry_hash(e) == e["entry_hash"]
    for k in ("round", "hospital", "privacy_unit", "sample_rate", "noise_multiplier",
              "max_grad_norm", "steps", "delta", "epsilon", "accountant", "library_versions",
              "model_hash", "prev_hash", "signature"):
        assert k in e


def _tamper(run, tmp_path, fn) -> set[str]:
    d = _copy(run[0], tmp_path)
    p = ledger_path(d, "h1")
    _write(p, fn(_lines(p)))
    return _kinds(audit(d, recompute=False))


def test_edit_detected(run, tmp_path):
    def edit(lines):
        e = json.loads(lines[1])
        e["noise_multiplier"] = 5.0
        lines[1] = canonical_json(e).decode()
        return lines
    assert {"bad-signature", "hash-mismatch"} <= _tamper(run, tmp_path, edit)


def test_edit_with_rehash_still_fails_signature(run, tmp_path):
    def edit(lines):
        e = json.loads(lines[2])
        e["epsilon"] = 0.01
        e["entry_hash"] = compute_entry_hash(e)
        lines[2] = canonical_json(e).decode()
        return lines
    kinds = _tamper(run, tmp_path, edit)
    assert "bad-signature" in kinds and "chain-break" in kinds  # next entry's prev_hash


def test_reorder_detected(run, tmp_path):
    kinds = _tamper(run, tmp_path, lambda ls: [ls[0], ls[2], ls[1], *ls[3:]])
    assert {"sequence", "chain-break", "round-order"} <= kinds


def test_delete_middle_detected(run, tmp_path):
    assert {"sequence", "chain-break"} <= _tamper(run, tmp_path, lambda ls: ls[:1] + ls[2:])


def test_insert_duplicate_detected(run, tmp_path):
    kinds = _tamper(run, tmp_path, lambda ls: ls[:2] + [ls[1]] + ls[2:])
    assert {"duplicate-round", "chain-break", "sequence"} <= kinds


def test_duplicate_round_signed_by_key_holder_detected(run, tmp_path):
    d = _copy(run[0], tmp_path)
    ident = run[1]["h1"]
    p = ledger_path(d, "h1")
    entries = read_entries(p)
    e = dict(entries[-1])
    e.update(seq=len(entries), round=entries[-1]["round"], prev_hash=entries[-1]["entry_hash"])
    e.pop("entry_hash")
    e.pop("signature")
    e["signature"] = ident.sign(signing_bytes(e)).hex()
    e["entry_hash"] = compute_entry_hash(e)
    _write(p, [*_lines(p), canonical_json(e).decode()])
    assert _kinds(audit(d, recompute=False)) == {"duplicate-round"}


def test_truncation_detected_only_against_anchor(run, tmp_path):
    d = _copy(run[0], tmp_path)
    p = ledger_path(d, "h1")
    full = read_entries(p)
    anchor = {"h1": LedgerHead(len(full), full[-1]["entry_hash"])}
    _write(p, _lines(p)[:3])
    assert audit(d, recompute=False) == []  # a shorter valid chain, as documented
    assert _kinds(audit(d, anchor, recompute=False)) == {"truncated"}


def test_forged_signature_and_missing_identity(run, tmp_path):
    d = _copy(run[0], tmp_path)
    other = Identity.generate("h1")
    (d / "identities" / "h1.pub.json").write_text(json.dumps(other.public.to_json()))
    assert "bad-signature" in _kinds(audit(d, recompute=False))
    (d / "identities" / "h1.pub.json").unlink()
    assert "missing-identity" in _kinds(audit(d, recompute=False))


def test_understated_epsilon_and_budget_overrun_detected(tmp_path):
    ident = Identity.generate("h3")
    led = PrivacyLedger.in_run_dir(tmp_path, ident)
    _append(led, 1)
    p = ledger_path(tmp_path, "h3")
    e = read_entries(p)[0]
    honest = e["epsilon"]
    # the key holder signs a too-small epsilon and a budget it has already exceeded
    e.update(epsilon=honest / 3, budget_epsilon=honest / 2)
    e.pop("entry_hash")
    e.pop("signature")
    e["signature"] = ident.sign(signing_bytes(e)).hex()
    e["entry_hash"] = compute_entry_hash(e)
    _write(p, [canonical_json(e).decode()])
    findings = audit(tmp_path)
    assert {"epsilon-understated", "budget-overrun"} <= _kinds(findings)
    assert run_audit(tmp_path).exit_code == 1


def test_crash_mid_write_leaves_valid_ledger(tmp_path, monkeypatch):
    ident = Identity.generate("h1")
    led = PrivacyLedger.in_run_dir(tmp_path, ident)
    _append(led, 1)
    p = ledger_path(tmp_path, "h1")
    before = p.read_bytes()

    real_fsync = os.fsync

    def crash_after_partial(fd):
        real_fsync(fd)
        raise KeyboardInterrupt("simulated power loss before rename")

    monkeypatch.setattr(os, "fsync", crash_after_partial)
    with pytest.raises(KeyboardInterrupt):
        _append(led, 2)
    monkeypatch.undo()
    assert p.read_bytes() == before
    # a half-written temp file left by a killed process is ignored
    (p.parent / f".{p.name}.dead").write_bytes(before + b'{"round": 2, "hosp')
    assert audit(tmp_path) == []
    led2 = PrivacyLedger(p, ident)
    _append(led2, 2)
    assert audit(tmp_path) == []
    with pytest.raises(LedgerError):
        _append(led2, 2)  # rounds must increase


_WRITER = """
import sys
from pathlib import Path
from fedrx.dp.accountants.mechanism import Mechanism
from fedrx.dp.ledger import PrivacyLedger
from fedrx.secagg.identity import Identity
ident = Identity.load(Path(sys.argv[2]))
led = PrivacyLedger.in_run_dir(Path(sys.argv[1]), ident)
r = 0
while True:
    r += 1
    led.append(round=r, mechanism=Mechanism(0.05, 1.2, 1), max_grad_norm=1.0, delta=1e-5,
               accountant="rdp", model_hash="0" * 64, budget_epsilon=100.0)
"""


def test_sigkill_during_appends_leaves_valid_ledger(tmp_path):
    ident = Identity.generate("h9")
    ident.save(tmp_path / "h9.key")
    run_dir = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-c", _WRITER, str(run_dir), str(tmp_path / "h9.key")])
    p = ledger_path(run_dir, "h9")
    try:
        deadline = time.time() + 60
        while time.time() < deadline:
            if p.exists() and len(read_entries(p)) >= 3:
                break
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()
    n = len(read_entries(p))
    assert n >= 3
    assert audit(run_dir) == []


def test_budget_report(run, tmp_path):
    d, _ = run
    paths = budget_report(d, tmp_path / "rep")
    names = {p.name for p in paths}
    assert {"budget.json", "budget.md", "budget.html", "epsilon_h1.png",
            "epsilon_h2.png"} <= names
    obj = json.loads((tmp_path / "rep" / "budget.json").read_text())
    h1 = obj["hospitals"][0]
    assert h1["hospital"] == "h1" and h1["trained_rounds"] == 4 and h1["refused_rounds"] == 1
    assert h1["final_epsilon"] == read_entries(ledger_path(d, "h1"))[-1]["epsilon"]
    assert (tmp_path / "rep" / "epsilon_h1.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    md = (tmp_path / "rep" / "budget.md").read_text()
    assert "| h1 |" in md and "epsilon_h1.png" in md
    assert "<table" in (tmp_path / "rep" / "budget.html").read_text()


def test_audit_result_rendering(run, tmp_path):
    from fedrx.dp.audit import AuditResult, Finding

    clean = run_audit(run[0])
    assert clean.ledgers == 2 and clean.entries == 10 and not clean.receipts_verified
    text = format_audit(clean).splitlines()
    # one line per hospital says what was checked; the verdict is the last line
    assert text[-1].startswith("audit OK: 2 ledger(s), 10 entries; signatures (NOT pinned)")
    assert [t.split(":")[0] for t in text[:-1]] == ["h1", "h2"]
    assert all("NOT pinned" in t and "not anchored: truncation not detectable" in t
               for t in text[:-1])
    bad = AuditResult((Finding("h1", "chain-break", "prev_hash differs", 2),), 1, None,
                      receipts_unverified=True)
    assert bad.exit_code == 1
    assert format_audit(bad).splitlines() == [
        "note: the anchors carry signed round receipts but no federation file was found "
        "(--federation FILE): receipt signatures NOT verified",
        "FINDING h1 entry 2: chain-break: prev_hash differs",
        "audit FAILED: 1 finding(s)"]
    (tmp_path / "anchors.json").write_text("{not json")
    with pytest.raises(LedgerError, match="unreadable or malformed"):
        run_audit(run[0], tmp_path / "anchors.json")
