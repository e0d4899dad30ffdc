"""The privacy officer's report (issue 19) on signed ledgers written by the real
PrivacyLedger (no training, so fast): a distributed-DP entry rendered generically with its
trust assumption and survivors, reproducible bytes, the one list of what DP does not cover
kept in step with threat_model.md, a tampered ledger's red verdict, the CLI's bad input;
and one render in a real headless browser (skipped only without chromium)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from report_browser import load, needs_browser
from test_cli import assert_one_line_error, run

from fedrx.canonical import canonical_json
from fedrx.dp.accountants.mechanism import Mechanism
from fedrx.dp.ledger import (
    PrivacyLedger,
    compute_entry_hash,
    ledger_path,
    read_entries,
    signing_bytes,
)
from fedrx.dp.report import budget_report
from fedrx.dp.report_promise import OUTSIDE_DP, SENT_BY_HOSPITAL
from fedrx.dp.report_svg import eps_ticks, round_ticks
from fedrx.secagg.identity import Identity

ROOT = Path(__file__).resolve().parents[1]
MECH = Mechanism(0.05, 1.2, 20)
DIST = {"mechanism": "distributed", "shares": 3, "k": 1, "survivors": ["h1", "h2", "h3"]}


def _append(led: PrivacyLedger, rnd: int, status: str = "trained", budget: float = 8.0):
    return led.append(round=rnd, mechanism=MECH, max_grad_norm=1.0, delta=1e-5,
                      accountant="rdp", model_hash=f"{rnd:064x}", budget_epsilon=budget,
                      status=status)


def _resign_last(path: Path, ident: Identity, extra: dict) -> dict:
    """Add ``extra`` signed fields to the last entry (what a distributed-DP hospital writes)."""
    entries = read_entries(path)
    e = {k: v for k, v in entries[-1].items() if k not in ("signature", "entry_hash")}
    e.update(extra)
    e["signature"] = ident.sign(signing_bytes(e)).hex()
    e["entry_hash"] = compute_entry_hash(e)
    entries[-1] = e
    path.write_bytes(b"".join(canonical_json(x) + b"\n" for x in entries))
    return e


@pytest.fixture(scope="module")
def ledgers(tmp_path_factory) -> Path:
    """h1: 3 local rounds and a refused round 4; h2: 2 local rounds, then a distributed one."""
    d = tmp_path_factory.mktemp("ledgers") / "run"
    ids = {h: Identity.generate(h) for h in ("h1", "h2")}
    led = PrivacyLedger.in_run_dir(d, ids["h1"])
    for r in (1, 2, 3):
        _append(led, r, budget=2.5)
    _append(led, 4, status="refused", budget=2.5)
    led = PrivacyLedger.in_run_dir(d, ids["h2"])
    for r in (1, 2, 3):
        _append(led, r, budget=2.5)
    _resign_last(ledger_path(d, "h2"), ids["h2"], DIST)
    return d


def test_distributed_entry_shows_trust_assumption_and_survivors(ledgers, tmp_path):
    budget_report(ledgers, tmp_path / "rep")
    rep = json.loads((tmp_path / "rep" / "budget.json").read_text())
    assert rep["format"] == "fedrx-budget-report/2" and rep["verdict"]["ok"], rep["verdict"]
    h1, h2 = rep["hospitals"]
    assert [r["status"] for r in h1["rounds"]] == ["trained"] * 3 + ["refused"]
    assert h1["mechanisms"] == ["local"] and h1["refused_rounds"] == 1
    row = h2["rounds"][2]
    assert row["mechanism"] == "distributed" and row["survivors"] == ["h1", "h2", "h3"]
    assert row["survivors_source"] == "ledger" and row["extra"] == {"k": 1, "shares": 3}
    assert h2["mechanisms"] == ["distributed", "local"]
    trust = " ".join(rep["promise"]["trust"])
    assert "at most k = 1 hospitals collude" in trust
    assert "survivors seen per round: 3" in trust
    assert rep["promise"]["mechanisms"] == ["distributed", "local"]
    html = (tmp_path / "rep" / "budget.html").read_text()
    assert "k=1; shares=3" in html and "3 (h1, h2, h3)" in html
    # nothing anchors these ledgers: the report says a cut tail would go unseen
    assert all("not anchored: truncation not detectable" in line
               for line in rep["verdict"]["lines"])
    assert rep["verify_commands"] == [f"fedrx audit {ledgers}"]


def test_same_inputs_give_the_same_bytes(ledgers, tmp_path):
    out = tmp_path / "rep"
    first = {p.name: p.read_bytes() for p in budget_report(ledgers, out)}
    second = {p.name: p.read_bytes() for p in budget_report(ledgers, out)}
    assert first == second
    assert set(first) == {"budget.json", "budget.md", "budget.html", "epsilon.png",
                          "epsilon_h1.png", "epsilon_h2.png"}
    rep = json.loads(first["budget.json"])
    assert rep["report_command"] == f"fedrx budget report {ledgers} --out {out}"
    assert rep["fedrx_version"] in first["budget.html"].decode()


def test_outside_dp_list_follows_threat_model():
    doc = (ROOT / "threat_model.md").read_text(encoding="utf-8")
    section5 = doc[doc.index("**What DP does not cover.**"):
                   doc.index("**Budget enforcement before noise is drawn.**")]
    for o in OUTSIDE_DP:
        assert o.doc_row in doc, o.doc_row
    rows = [ln.split("|")[1].strip() for ln in section5.splitlines()
            if ln.startswith("| ") and not ln.startswith("| Gap")]
    # every row of the threat model's table is in the report's list
    missing = [r for r in rows if not any(r.startswith(o.doc_row) for o in OUTSIDE_DP)]
    assert rows and not missing, missing
    # §5.2: everything a hospital sends, row by row, both ways
    sent = doc[doc.index("### 5.2 Everything a hospital sends"):doc.index("## 6. Network")]
    rows = [ln.split(" | ")[0].removeprefix("| ").strip() for ln in sent.splitlines()
            if ln.startswith("| ") and not ln.startswith("| What |")]
    missing = [r for r in rows if not any(r.startswith(x.doc_row) for x in SENT_BY_HOSPITAL)]
    assert rows and not missing, missing
    gone = [x.doc_row for x in SENT_BY_HOSPITAL if not any(r.startswith(x.doc_row)
                                                           for r in rows)]
    assert not gone, gone


def test_tampered_ledger_is_red_on_top(ledgers, tmp_path):
    import shutil

    d = tmp_path / "run"
    shutil.copytree(ledgers, d)
    p = ledger_path(d, "h1")
    lines = p.read_text().splitlines()
    del lines[1]  # drop round 2: a cheaper history
    p.write_text("\n".join(lines) + "\n")
    budget_report(d, tmp_path / "rep")
    rep = json.loads((tmp_path / "rep" / "budget.json").read_text())
    assert not rep["verdict"]["ok"] and rep["verdict"]["line"].startswith("TAMPERED")
    h1 = rep["hospitals"][0]["verification"]
    assert not h1["ok"] and any(c["status"] == "fail" for c in h1["checks"])
    assert rep["hospitals"][1]["verification"]["ok"]
    html = (tmp_path / "rep" / "budget.html").read_text()
    assert '<div id="verdict" class="verdict bad"' in html


def test_ticks_are_integers_and_nice():
    assert round_ticks(1, 3) == [1, 2, 3]
    t = round_ticks(1, 40)
    assert len(t) <= 12 and all(isinstance(x, int) for x in t) and t[0] >= 1
    assert round_ticks(5, 5) == [5]
    assert eps_ticks(7.3)[-1] >= 7.3 and eps_ticks(7.3)[0] == 0


def test_cli_bad_input_is_one_line(tmp_path):
    (tmp_path / "empty").mkdir()
    assert_one_line_error(run("budget", "report", str(tmp_path / "empty"), "--out",
                              str(tmp_path / "rep")), "no ledgers")


@needs_browser
def test_distributed_report_in_a_real_browser(ledgers, tmp_path):
    budget_report(ledgers, tmp_path / "rep")
    page = load(tmp_path / "rep" / "budget.html",
                "JSON.stringify([...document.querySelectorAll('table.rounds[data-hospital=h2]"
                " tbody tr')].map(r => [...r.cells].map(c => c.textContent)))")
    assert page.console == [], page.console
    rows = json.loads(page.values)
    entries = read_entries(ledger_path(ledgers, "h2"))
    assert [r[0] for r in rows] == [str(e["round"]) for e in entries]
    assert [r[8] for r in rows] == [f"{e['epsilon']:.4f}" for e in entries]
    assert [r[9] for r in rows] == [e["entry_hash"] for e in entries]
    assert rows[2][2] == "distributed" and rows[2][7] == "3 (h1, h2, h3)"
    assert rows[2][10] == "k=1; shares=3" and rows[0][2] == "local"
    assert 'class="verdict warn"' in page.dom  # passes the audit, but not anchored


def test_distributed_key_of_the_ledger_is_read_like_a_mechanism():
    """The ledger's signed ``distributed`` object (ShareSizing.describe) names the mechanism,
    its k and the survivor floor; its fields show as ``distributed.<key>``."""
    from fedrx.dp.report_promise import mechanism_extras, mechanism_name, trust_assumption

    e = {"status": "trained", "noise_multiplier": 2.4, "distributed": {
        "mechanism": "distributed", "share_kind": "discrete", "shares": 5, "k": 2,
        "honest_shares": 3, "min_survivors": 3}}
    assert mechanism_name(e) == "distributed"
    assert mechanism_extras(e) == {"distributed.honest_shares": 3, "distributed.k": 2,
                                   "distributed.min_survivors": 3,
                                   "distributed.share_kind": "discrete",
                                   "distributed.shares": 5}
    t = trust_assumption([e])
    assert "at most k = 2 hospitals" in t and "at least 3 survivors" in t
    assert mechanism_name({"status": "trained"}) == "local"


@pytest.mark.parametrize("garbage", [
    '{"round": "<script>x</script>", "status": 7, "epsilon": "lots", "entry_hash": null}',
    "not json at all",
    '{"round": 2, "round": 3}',
])
def test_hostile_ledger_lines_give_a_red_report_not_a_crash(ledgers, tmp_path, garbage):
    import shutil

    d = tmp_path / "run"
    shutil.copytree(ledgers, d)
    p = ledger_path(d, "h1")
    p.write_text(p.read_text() + garbage + "\n")
    budget_report(d, tmp_path / "rep")
    rep = json.loads((tmp_path / "rep" / "budget.json").read_text())
    assert not rep["verdict"]["ok"] and not rep["hospitals"][0]["verification"]["ok"]
    html = (tmp_path / "rep" / "budget.html").read_text()
    assert "<script>" not in html and 'class="verdict bad"' in html


def test_finding_kinds_fall_under_the_check_that_failed():
    from fedrx.dp.report_verify import check_of

    assert {k: check_of(k) for k in (
        "bad-signature", "identity-not-pinned", "not-pinned", "missing-identity",
        "chain-break", "hash-mismatch", "non-canonical", "duplicate-key", "missing-ledger",
        "empty-ledger", "head-mismatch", "truncated", "receipt-bad-signature",
        "epsilon-understated", "budget-overrun", "distributed", "carried-changed")} == {
        "bad-signature": "signatures", "identity-not-pinned": "signatures",
        "not-pinned": "signatures", "missing-identity": "signatures",
        "chain-break": "hash chain", "hash-mismatch": "hash chain",
        "non-canonical": "hash chain", "duplicate-key": "hash chain",
        "missing-ledger": "hash chain", "empty-ledger": "hash chain",
        "head-mismatch": "anchors", "truncated": "anchors",
        "receipt-bad-signature": "anchors", "epsilon-understated": "recomputation",
        "budget-overrun": "recomputation", "distributed": "recomputation",
        "carried-changed": "recomputation"}


@needs_browser
def test_tampered_report_is_red_on_top_in_a_real_browser(ledgers, tmp_path):
    import shutil

    d = tmp_path / "run"
    shutil.copytree(ledgers, d)
    p = ledger_path(d, "h2")
    e = json.loads(p.read_text().splitlines()[0])
    lines = p.read_text().splitlines()
    e["noise_multiplier"] = e["noise_multiplier"] * 2  # claim twice the noise
    lines[0] = canonical_json(e).decode()
    p.write_text("\n".join(lines) + "\n")
    budget_report(d, tmp_path / "rep")
    page = load(tmp_path / "rep" / "budget.html",
                "(() => { const v = document.getElementById('verdict'); return JSON.stringify("
                "{bg: getComputedStyle(v).backgroundColor, top: v.getBoundingClientRect().top,"
                " text: v.innerText, first: document.body.firstElementChild.id}); })()")
    assert page.console == [], page.console
    v = json.loads(page.values)
    assert v["bg"] == "rgb(176, 0, 32)" and v["first"] == "verdict" and v["top"] < 50
    assert v["text"].startswith("TAMPERED OR INVALID") and "h2: AUDIT FAILED" in v["text"]
    assert "h1: verified" in v["text"]
