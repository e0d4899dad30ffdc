"""The privacy officer's report (issue 19) rendered by a real headless browser (Debian's
chromium over the DevTools protocol, tests/report_browser.py), from a real DP federation:
``fedrx simulate`` on synthetic data, 3 hospitals, mask, 3 rounds with a budget that refuses
round 3. The per-round tables are read back from the rendered DOM and compared with the
ledgers; the verdicts with the audit; the console must stay empty. A tampered ledger gives a
red verdict on top. A distributed-DP federation shows its trust assumption and survivors.

Skipped only where no chromium exists (see report_browser.needs_browser; CI installs it and
sets FEDRX_REQUIRE_BROWSER=1, so there these tests fail instead of skipping).
Set FEDRX_REPORT_SCREENSHOT=FILE to keep a full-page screenshot of the clean report.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import pytest
from report_browser import load, needs_browser

from fedrx.dp.ledger import read_entries
from fedrx.dp.report import budget_report
from fedrx.dp.report_html import fmt

pytestmark = [needs_browser, pytest.mark.slow]  # a real DP federation: ~40 s
HOSPITALS = ("hosp01", "hosp02", "hosp03")
STYLE = ("JSON.stringify({bg: getComputedStyle(document.getElementById('verdict'))"
         ".backgroundColor, visible: document.getElementById('verdict').getBoundingClientRect()"
         ".top < 200})")


@pytest.fixture(scope="module")
def real_run(tmp_path_factory) -> Path:
    """A real DP run: round 1 and 2 trained, round 3 refused by every hospital's budget."""
    from fedrx.medrx.synth.config import SynthConfig
    from fedrx.medrx.synth.writer import generate
    from fedrx.nodes.simulate import SimulationConfig, run_simulation

    root = tmp_path_factory.mktemp("report")
    generate(SynthConfig(hospitals=3, patients=150, seed=7, catalogue="builtin"),
             root / "data")
    doc = run_simulation(SimulationConfig(
        data=str(root / "data"), rounds=3, hidden=16, local_epochs=1, personalize=False,
        dp=True, accountant="rdp", epsilon=3.0, budget_epsilon=2.6, protection="mask",
        vocabulary="public", out=str(root / "run")))
    assert [r["status"] for r in doc["rounds"]][:2] == ["completed", "completed"]
    return root / "run"


class _Tables(HTMLParser):
    """The rendered DOM's round tables, verdicts and check rows."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: dict[str, list[dict[str, dict[str, str]]]] = {}
        self.verdicts: dict[str, tuple[str, str]] = {}
        self.top: tuple[str, str] = ("", "")
        self.links: list[str] = []
        self.xticks: list[str] = []
        self.refused_marks: list[tuple[str, str]] = []
        self._table: str | None = None
        self._cell: dict[str, str] | None = None
        self._row: dict[str, dict[str, str]] | None = None
        self._verdict: list | None = None
        self._tick = False

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        for k in ("src", "href"):
            if k in a:
                self.links.append(a[k])
        cls = a.get("class", "")
        if tag == "table" and "rounds" in cls:
            self._table = a["data-hospital"]
            self.rows[self._table] = []
        elif tag == "tr" and self._table:
            self._row = {"_": {"class": cls, "round": a.get("data-round", "")}}
        elif tag == "td" and self._row is not None:
            self._cell = {"col": a.get("data-col", ""), "value": a.get("data-value", ""),
                          "text": ""}
        elif tag == "div" and "verdict" in cls.split():
            self._verdict = [a.get("id") or a.get("data-hospital"), cls, ""]
        elif tag == "text" and "xtick" in cls:
            self._tick = True
        elif tag == "path" and "refused" in cls:
            self.refused_marks.append((a["data-hospital"], a["data-round"]))

    def handle_endtag(self, tag):
        if tag == "td" and self._cell is not None and self._row is not None:
            self._row[self._cell["col"]] = self._cell
            self._cell = None
        elif tag == "tr" and self._row is not None and self._table:
            if len(self._row) > 1:
                self.rows[self._table].append(self._row)
            self._row = None
        elif tag == "table":
            self._table = None
        elif tag == "div" and self._verdict is not None:
            key, cls, text = self._verdict
            if key == "verdict":
                self.top = (cls, text)
            else:
                self.verdicts[key] = (cls, text)
            self._verdict = None
        elif tag == "text":
            self._tick = False

    def handle_data(self, data):
        if self._cell is not None:
            self._cell["text"] += data
        if self._verdict is not None:
            self._verdict[2] += data
        if self._tick:
            self.xticks.append(data)


def _parse(dom: str) -> _Tables:
    p = _Tables()
    p.feed(dom)
    return p


def test_report_in_a_real_browser_matches_the_ledgers(real_run, tmp_path):
    out = tmp_path / "rep"
    budget_report(real_run, out)
    page = load(out / "budget.html", STYLE,
                screenshot=bool(os.environ.get("FEDRX_REPORT_SCREENSHOT")))
    assert page.errors() == [], page.errors()
    assert page.console == [], page.console
    if page.screenshot:
        Path(os.environ["FEDRX_REPORT_SCREENSHOT"]).write_bytes(page.screenshot)
    dom = _parse(page.dom)
    # self-contained: nothing to load but inline data
    assert all(x.startswith(("data:", "#")) for x in dom.links), dom.links
    rep = json.loads((out / "budget.json").read_text())
    for h in HOSPITALS:
        entries = read_entries(real_run / "ledger" / f"{h}.jsonl")
        rows = dom.rows[h]
        assert len(rows) == len(entries) == 3
        for row, e in zip(rows, entries, strict=True):
            assert row["round"]["text"] == str(e["round"]) == row["_"]["round"]
            assert row["status"]["text"] == e["status"]
            assert row["mechanism"]["text"] == "local"
            assert row["protection"]["text"] == "mask"
            assert row["steps"]["text"] == str(e["steps"])
            assert row["sigma"]["text"] == fmt("sigma", e["noise_multiplier"], e["status"])
            assert row["q"]["text"] == fmt("q", e["sample_rate"], e["status"])
            if e["status"] == "trained":
                assert row["sigma"]["text"] == f"{e['noise_multiplier']:.4g}" != "-"
            assert row["epsilon"]["text"] == f"{e['epsilon']:.4f}"
            assert float(row["epsilon"]["value"]) == e["epsilon"]  # the exact recorded value
            assert float(row["sigma"]["value"]) == e["noise_multiplier"]
            assert row["entry_hash"]["text"] == e["entry_hash"]
            assert ("refused" in row["_"]["class"]) == (e["status"] == "refused")
        assert [e["status"] for e in entries] == ["trained", "trained", "refused"]
        assert rows[0]["survivors"]["text"] == "3 (hosp01, hosp02, hosp03)"
        assert (h, "3") in dom.refused_marks
        # the verdict of each hospital, as the audit found it
        cls, text = dom.verdicts[h]
        assert "bad" not in cls and text.startswith(f"{h}: verified")
        assert text == next(s for s in rep["hospitals"]
                            if s["hospital"] == h)["verification"]["verdict"]
    assert dom.xticks == ["1", "2", "3"]  # integer round ticks
    cls, text = dom.top
    assert "bad" not in cls.split() and text.startswith("VERIFIED")
    style = json.loads(page.values)
    assert style["visible"] and style["bg"] != "rgb(176, 0, 32)"
    checks = {c["check"]: c["status"] for c in rep["hospitals"][0]["verification"]["checks"]}
    assert checks["signatures"] == "pass"     # against the run's pinned federation.json
    assert checks["hash chain"] == checks["recomputation"] == "pass"
    assert checks["anchors"] in ("weak", "pass")  # results.json heads: unsigned
    assert (out / "epsilon.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_tampered_ledger_gives_a_red_verdict_on_top(real_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(real_run, run)
    led = run / "ledger" / "hosp02.jsonl"
    lines = led.read_text().splitlines()
    e = json.loads(lines[1])
    e["epsilon"] = e["epsilon"] / 2  # under-report round 2
    lines[1] = json.dumps(e, sort_keys=True, separators=(",", ":"))
    led.write_text("\n".join(lines) + "\n")
    proc = subprocess.run([sys.executable, "-m", "fedrx.cli", "budget", "report", str(run),
                           "--out", str(tmp_path / "rep")], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 1, proc.stderr
    assert proc.stdout.strip().splitlines()[-1].startswith("TAMPERED OR INVALID")
    page = load(tmp_path / "rep" / "budget.html", STYLE)
    assert page.errors() == [], page.errors()
    dom = _parse(page.dom)
    cls, text = dom.top
    assert "bad" in cls.split() and "TAMPERED" in text and "hosp02" in text
    style = json.loads(page.values)
    assert style["bg"] == "rgb(176, 0, 32)" and style["visible"]  # red, at the top
    assert "AUDIT FAILED" in dom.verdicts["hosp02"][1]
    assert "bad" in dom.verdicts["hosp02"][0].split()
    assert dom.verdicts["hosp01"][1].startswith("hosp01: verified")
    # the table still shows what the ledger claims, the edited value included
    assert float(dom.rows["hosp02"][1]["epsilon"]["value"]) == e["epsilon"]


def test_distributed_run_shows_trust_assumption_and_survivors(tmp_path):
    """A real distributed-DP federation (``--dp distributed``, mask, 3 hospitals): the page
    states the trust assumption k and the survivor floor, and each round's survivors."""
    from fedrx.medrx.synth.config import SynthConfig
    from fedrx.medrx.synth.writer import generate
    from fedrx.nodes.simulate import SimulationConfig, run_simulation

    generate(SynthConfig(hospitals=3, patients=150, seed=7, catalogue="builtin"),
             tmp_path / "data")
    doc = run_simulation(SimulationConfig(
        data=str(tmp_path / "data"), rounds=2, hidden=16, local_epochs=1, personalize=False,
        dp=True, dp_mode="distributed", epsilon=3.0, protection="mask",
        vocabulary="public", out=str(tmp_path / "run")))
    assert [r["status"] for r in doc["rounds"]] == ["completed", "completed"]
    budget_report(tmp_path / "run", tmp_path / "rep")
    page = load(tmp_path / "rep" / "budget.html",
                "document.getElementById('promise').innerText")
    assert page.console == [], page.console
    assert "distributed DP: the noise is split among hospitals" in page.values
    assert "at most k = 0 hospitals collude" in page.values
    assert "released only with at least 3 survivors" in page.values
    dom = _parse(page.dom)
    for h in HOSPITALS:
        rows = dom.rows[h]
        assert [r["mechanism"]["text"] for r in rows] == ["distributed"] * 2
        assert [r["survivors"]["text"] for r in rows] == ["3 (hosp01, hosp02, hosp03)"] * 2
        entries = read_entries(tmp_path / "run" / "ledger" / f"{h}.jsonl")
        assert [float(r["sigma"]["value"]) for r in rows] == \
            [e["noise_multiplier"] for e in entries]
        assert dom.verdicts[h][1].startswith(f"{h}: verified")
