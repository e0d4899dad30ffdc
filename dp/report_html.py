"""The privacy officer's page: one self-contained HTML file (inline CSS, inline SVG chart, no
script, no external asset; a Content-Security-Policy forbids loading anything), readable
from a file: URL, in a mail client and on paper.

Order: the verdict on top (red when the audit found anything), then the promise, the
spending (chart, per-hospital summary, one table per hospital with a row per ledger entry),
the verification per hospital, and how to reproduce it. Table cells carry ``data-col`` and
the exact recorded value in ``data-value`` so a reader's script (or a test) can compare them
with the ledger.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from html import escape
from typing import Any

from fedrx.dp.report_svg import svg_chart

CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:"
CSS = """
body{font-family:system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;margin:24px auto;
max-width:1180px;color:#1a1a1a;line-height:1.4;padding:0 16px}
h1{font-size:1.6em;margin:.4em 0}h2{border-bottom:2px solid #ddd;padding-bottom:4px;
margin-top:1.6em}h3{margin-bottom:.3em}
.verdict{padding:14px 18px;border-radius:6px;font-size:1.1em;margin:8px 0 16px}
.verdict.bad{background:#b00020;color:#fff}.verdict.ok{background:#e6f4ea;color:#0b5d1e;
border:1px solid #0b5d1e}.verdict.warn{background:#fff4e5;color:#663c00;border:1px solid
#b26a00}.verdict ul{margin:6px 0 0;padding-left:20px;font-size:.9em}
table{border-collapse:collapse;margin:6px 0 12px;font-size:.9em}
th,td{border:1px solid #ccc;padding:3px 7px;text-align:left;vertical-align:top}
th{background:#f3f3f3}td.num{text-align:right;font-variant-numeric:tabular-nums}
tr.refused td{background:#fde8e8}code,.hash{font-family:ui-monospace,Menlo,Consolas,
monospace;font-size:.85em}.hash{word-break:break-all}
.pass{color:#0b5d1e;font-weight:bold}.fail{color:#b00020;font-weight:bold}
.notchecked,.weak{color:#8a5300;font-weight:bold}dl{display:grid;grid-template-columns:max-content
auto;gap:4px 14px}dt{font-weight:bold}dd{margin:0}.small{font-size:.85em;color:#444}
pre{background:#f6f6f6;padding:8px;overflow-x:auto}
td.extra{max-width:26em;font-size:.8em;overflow-wrap:anywhere}
@media print{.verdict.bad{-webkit-print-color-adjust:exact;print-color-adjust:exact}}
"""
COLUMNS = ("round", "status", "mechanism", "protection", "sigma", "q", "steps", "survivors",
           "epsilon", "entry_hash")
HEADINGS = {"round": "round", "status": "status", "mechanism": "mechanism",
            "protection": "protection", "sigma": "sigma (noise multiplier)",
            "q": "q (sampling rate)", "steps": "steps", "survivors": "survivors",
            "epsilon": "epsilon after the round", "entry_hash": "ledger entry hash"}


def _e(v: Any) -> str:
    return escape(str(v), quote=True)


def fmt(col: str, v: Any, status: str = "trained") -> str:
    """How a round-table cell shows a value (the test reads the same function); a refused
    round charged nothing, so it shows no sigma or q."""
    if v is None or (status == "refused" and col in ("sigma", "q")):
        return "-"
    if col == "survivors":
        return (f"{len(v)} ({', '.join(v)})" if v else "0") if isinstance(v, list) \
            else str(v)
    if col == "epsilon" and isinstance(v, (int, float)):
        return f"{v:.4f}"
    if col in ("sigma", "q") and isinstance(v, (int, float)):
        return f"{v:.4g}"
    return str(v)


def _value(v: Any) -> str:
    return json.dumps(v, sort_keys=True) if isinstance(v, (list, dict)) else str(v)


def _show_extra(extra: Mapping[str, Any]) -> str:
    """``key=value; ...`` with a mechanism object's prefix dropped, floats to 6 digits."""
    def val(v: Any) -> str:
        return f"{v:.6g}" if isinstance(v, float) else _value(v)

    parts = [f"{k.split('.', 1)[-1]}={val(v)}" for k, v in extra.items()
             if k != "mechanism from"]
    if "mechanism from" in extra:
        parts.append(f"(from {extra['mechanism from']})")
    return "; ".join(parts)


def split_extras(rows: list[Mapping[str, Any]]) -> tuple[dict[str, Any], list[dict]]:
    """The extra fields every trained round records with the same value (shown once per
    hospital) and, per row, the rest (shown in the table)."""
    trained = [r["extra"] for r in rows if r["status"] == "trained"]
    same: dict[str, Any] = {}
    if trained:
        same = {k: v for k, v in trained[0].items()
                if all(k in x and x[k] == v for x in trained)}
    return same, [{k: v for k, v in r["extra"].items() if k not in same} for r in rows]


def rounds_table(s: Mapping[str, Any]) -> str:
    same, per_row = split_extras(s["rounds"])
    extra = any(per_row)
    cols = list(COLUMNS) + (["extra"] if extra else [])
    head = "".join(f"<th>{_e(HEADINGS.get(c, 'other recorded fields'))}</th>" for c in cols)
    rows = []
    for r, mine in zip(s["rounds"], per_row, strict=True):
        cells = []
        for c in COLUMNS:
            v = r[c]
            cls = " class=\"num\"" if c in ("round", "sigma", "q", "steps", "epsilon") else \
                " class=\"hash\"" if c == "entry_hash" else ""
            note = (f" title=\"from {_e(r['survivors_source'])}\""
                    if c == "survivors" and r["survivors_source"] not in (None, "ledger")
                    else "")
            cells.append(f"<td data-col=\"{c}\" data-value=\"{_e(_value(v))}\"{cls}{note}>"
                         f"{_e(fmt(c, v, str(r['status'])))}</td>")
        if extra:
            cells.append(f"<td data-col=\"extra\" class=\"extra\">"
                         f"{_e(_show_extra(mine) or '-')}</td>")
        cls = ' class="refused"' if r["status"] == "refused" else ""
        rows.append(f"<tr{cls} data-round=\"{_e(r['round'])}\">{''.join(cells)}</tr>")
    params = (f"<p class=\"small mech-params\" data-hospital=\"{_e(s['hospital'])}\">"
              f"Mechanism parameters of every trained round: {_e(_show_extra(same))}</p>"
              if same else "")
    src = sorted({str(r["survivors_source"]) for r in s["rounds"]
                  if r["survivors_source"] not in (None, "ledger")})
    note = (f"<p class=\"small\">Survivors: the round's contributors as recorded in "
            f"{_e(', '.join(src))} (not part of the signed ledger).</p>" if src else "")
    return (f"{params}<table class=\"rounds\" data-hospital=\"{_e(s['hospital'])}\"><thead><tr>"
            f"{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>{note}")


def _summary(rep: Mapping[str, Any]) -> str:
    cols = ("hospital", "mechanism", "accountant", "delta", "trained rounds",
            "refused rounds", "epsilon spent", "budget", "used", "verdict")
    out = ["<table id=\"summary\"><thead><tr>"
           + "".join(f"<th>{c}</th>" for c in cols) + "</tr></thead><tbody>"]
    for s in rep["hospitals"]:
        used = "-" if s["budget_used"] is None else f"{s['budget_used']:.0%}"
        ver = s["verification"]
        vcls = "pass" if ver["ok"] else "fail"
        cells = [s["hospital"], ", ".join(s["mechanisms"]) or "-", s["accountant"] or "-",
                 "-" if s["delta"] is None else f"{s['delta']:g}", s["trained_rounds"],
                 s["refused_rounds"], f"{s['final_epsilon']:.4f}",
                 "-" if s["budget_epsilon"] is None else f"{s['budget_epsilon']:g}", used]
        out.append(f"<tr data-hospital=\"{_e(s['hospital'])}\">"
                   + "".join(f"<td>{_e(c)}</td>" for c in cells)
                   + f"<td class=\"{vcls}\">{'verified' if ver['ok'] else 'FAILED'}</td></tr>")
    out.append("</tbody></table>")
    return "".join(out)


def _promise(rep: Mapping[str, Any]) -> str:
    p = rep["promise"]
    items = [
        ("Privacy unit", f"{p['privacy_unit']}: {p['neighbouring']}"),
        ("Mechanism", ", ".join(p["mechanisms"])),
        ("Trust assumption", " ".join(p["trust"])),
        ("Accountant and delta", f"{', '.join(p['accountants']) or '-'}; delta "
         f"{', '.join(f'{d:g}' for d in p['deltas']) or '-'} (epsilon is cumulative over "
         "every round, recomputed from the whole history)"),
        ("Budget (epsilon)", ", ".join(f"{b:g}" for b in p["budgets"]) or "-"),
        ("Protection of each round", (", ".join(p["protections"]) or "not recorded")
         + f" (per round in the tables below; {p['protection_note']})"),
    ]
    dl = "".join(f"<dt>{_e(k)}</dt><dd>{_e(v)}</dd>" for k, v in items)
    rows = "".join(f"<tr><td>{_e(o['what'])}</td><td>{_e(o['consequence'])}</td></tr>"
                   for o in p["outside_dp"])
    sent = "".join(f"<tr><td>{_e(x['what'])}</td><td>{_e(x['when'])}</td>"
                   f"<td>{_e(x['reveals'])}</td></tr>" for x in p["sent_by_hospital"])
    return (f"<section id=\"promise\"><h2>1. The promise</h2><dl>{dl}</dl>"
            "<h3>What leaves a hospital, and what it reveals outside DP</h3>"
            "<table id=\"sent-by-hospital\"><thead><tr><th>what</th><th>when</th>"
            f"<th>reveals (outside epsilon unless said)</th></tr></thead><tbody>{sent}"
            f"</tbody></table><p class=\"small\">Source: {_e(p['sent_source'])}.</p>"
            "<h3>What DP does not cover</h3><table id=\"outside-dp\"><thead><tr>"
            "<th>what</th><th>consequence</th></tr></thead><tbody>"
            f"{rows}</tbody></table><p class=\"small\">Source: {_e(p['outside_dp_source'])}"
            ".</p></section>")


def _verification(rep: Mapping[str, Any]) -> str:
    out = ["<section id=\"verification\"><h2>3. The verification</h2><p class=\"small\">"
           "What <code>fedrx audit</code> checked for each hospital. The ledger is a signed "
           "self-report of parameters: the audit cannot prove that the noise was added."
           "</p>"]
    for s in rep["hospitals"]:
        v = s["verification"]
        cls = "ok" if v["complete"] else "warn" if v["ok"] else "bad"
        out.append(f"<h3>{_e(s['hospital'])}</h3><div class=\"verdict {cls} hospital-verdict\""
                   f" data-hospital=\"{_e(s['hospital'])}\">{_e(v['verdict'])}</div>")
        out.append("<table class=\"checks\"><thead><tr><th>check</th><th>what</th>"
                   "<th>result</th><th>found</th></tr></thead><tbody>")
        for c in v["checks"]:
            st = c["status"]
            out.append(f"<tr data-check=\"{_e(c['check'])}\"><td>{_e(c['check'])}</td>"
                       f"<td>{_e(c['what'])}</td><td class=\"{st.replace(' ', '')}\">"
                       f"{_e(st)}</td><td>{_e(c['detail'])}</td></tr>")
        out.append(f"</tbody></table><p class=\"small\">Repeat: <code>{_e(v['command'])}"
                   f"</code>; ledger <code>{_e(s['ledger'])}</code></p>")
    if rep["folder_findings"]:
        out.append("<h3>Other findings</h3><ul class=\"fail\">" + "".join(
            f"<li>{_e(f)}</li>" for f in rep["folder_findings"]) + "</ul>")
    out.append("</section>")
    return "".join(out)


def render_html(rep: Mapping[str, Any]) -> str:
    """The whole page (a str ending in a newline)."""
    v = rep["verdict"]
    cls = "bad" if not v["ok"] else "ok" if v["complete"] else "warn"
    lines = "".join(f"<li>{_e(x)}</li>" for x in v["lines"])
    tables = "".join(f"<h3>{_e(s['hospital'])}</h3>{rounds_table(s)}"
                     for s in rep["hospitals"])
    cmds = "\n".join(rep["verify_commands"])
    return (
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f"<meta http-equiv=\"Content-Security-Policy\" content=\"{CSP}\">"
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
        "<title>Privacy budget report</title>"
        f"<style>{CSS}</style></head><body>"
        f"<div id=\"verdict\" class=\"verdict {cls}\" role=\"alert\"><strong>"
        f"{_e(v['line'])}</strong><ul>{lines}</ul></div>"
        "<h1>Privacy budget report</h1>"
        f"<p class=\"small\">fedrx {_e(rep['fedrx_version'])}; inputs: "
        f"{_e(', '.join(rep['inputs']))}; {len(rep['hospitals'])} hospital(s). Report "
        f"format {_e(rep['format'])}.</p>"
        f"{_promise(rep)}"
        "<section id=\"spending\"><h2>2. The spending</h2>"
        f"<figure>{svg_chart(rep['hospitals'])}<figcaption class=\"small\">Cumulative epsilon "
        "after each round (dots), the budget (dashed) and refused rounds (crosses); the same "
        "chart is epsilon.png beside budget.json.</figcaption></figure>"
        f"{_summary(rep)}{tables}</section>"
        f"{_verification(rep)}"
        "<section id=\"reproduce\"><h2>4. Reproduce</h2>"
        f"<p>Made by fedrx {_e(rep['fedrx_version'])} with:</p><pre id=\"report-command\">"
        f"{_e(rep['report_command'])}</pre><p>Re-verify the ledgers independently:</p>"
        f"<pre id=\"verify-commands\">{_e(cmds)}</pre><p class=\"small\">The same inputs "
        "give the same bytes: the page holds no time but the ledgers' own.</p></section>"
        "</body></html>\n")
