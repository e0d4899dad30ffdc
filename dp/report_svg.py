"""The spending chart as inline SVG: cumulative epsilon of every hospital against round on
one chart, integer round ticks, one dashed budget line per distinct budget, refused rounds
marked with a cross. Written by hand (a few dozen elements) so the page needs no script, no
external asset and gives the same bytes for the same ledgers; coordinates are rounded to
0.1 px. The PNG beside the report (:mod:`fedrx.dp.report_png`) draws the same series.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from html import escape
from typing import Any

#: one colour per hospital, in report order (colour-blind-safe Okabe-Ito, then greys)
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442",
           "#000000", "#666666", "#999999")
REFUSED = "#C00000"
BUDGET = "#C00000"


def series(hospitals: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Per hospital ``{"hospital", "colour", "points": [(round, eps)], "refused": [...]}``
    from the report rows (rows without a numeric round or epsilon are left out)."""
    out = []
    for i, s in enumerate(hospitals):
        pts, ref = [], []
        for r in s["rounds"]:
            if not isinstance(r["round"], int) or r["epsilon"] is None:
                continue
            pts.append((r["round"], float(r["epsilon"])))
            if r["status"] == "refused":
                ref.append((r["round"], float(r["epsilon"])))
        out.append({"hospital": s["hospital"], "colour": PALETTE[i % len(PALETTE)],
                    "points": pts, "refused": ref, "budget": s["budget_epsilon"]})
    return out


def round_ticks(lo: int, hi: int, most: int = 12) -> list[int]:
    """Integer ticks from ``lo`` to ``hi`` (both included when possible), at most ``most``."""
    if hi <= lo:
        return [lo]
    step = 1
    for s in (1, 2, 5, 10, 20, 25, 50, 100, 200, 250, 500, 1000, 2000, 5000):
        step = s
        if (hi - lo) / s + 1 <= most:
            break
    first = math.ceil(lo / step) * step
    ticks = list(range(first, hi + 1, step))
    return ticks if ticks else [lo]


def eps_ticks(top: float) -> list[float]:
    """About 5 'nice' epsilon ticks from 0 to at least ``top``."""
    if top <= 0:
        return [0.0, 1.0]
    raw = top / 5
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    n = math.ceil(top / step - 1e-9)
    return [round(i * step, 10) for i in range(n + 1)]


def svg_chart(hospitals: Sequence[Mapping[str, Any]], width: int = 760,
              height: int = 340) -> str:
    """The chart as an ``<svg>`` element (role img, titled, with a legend)."""
    ser = series(hospitals)
    rounds = [p[0] for s in ser for p in s["points"]]
    lo, hi = (min(rounds), max(rounds)) if rounds else (1, 1)
    budgets = sorted({float(s["budget"]) for s in ser if s["budget"]})
    top = max([p[1] for s in ser for p in s["points"]] + budgets + [0.0]) * 1.08
    yt = eps_ticks(top)
    ymax = yt[-1]
    xt = round_ticks(lo, hi)
    ml, mr, mt, mb = 58, 180, 16, 44
    pw, ph = width - ml - mr, height - mt - mb

    def x(r: float) -> float:
        return ml + (pw / 2 if hi == lo else (r - lo) / (hi - lo) * pw)

    def y(e: float) -> float:
        return mt + ph - (e / ymax) * ph

    def f(v: float) -> str:
        return f"{v:.1f}"

    el = [f'<svg xmlns="http://www.w3.org/2000/svg" id="chart" role="img" width="{width}" '
          f'height="{height}" viewBox="0 0 {width} {height}" font-family="sans-serif" '
          'font-size="12">',
          "<title>Cumulative epsilon per hospital by round</title>",
          f'<rect x="{ml}" y="{mt}" width="{pw}" height="{ph}" fill="#fff" stroke="#999"/>']
    for t in yt:
        el.append(f'<line x1="{ml}" x2="{ml + pw}" y1="{f(y(t))}" y2="{f(y(t))}" '
                  'stroke="#e5e5e5"/>')
        el.append(f'<text x="{ml - 6}" y="{f(y(t) + 4)}" text-anchor="end">{t:g}</text>')
    for t in xt:
        el.append(f'<line x1="{f(x(t))}" x2="{f(x(t))}" y1="{mt + ph}" y2="{mt + ph + 5}" '
                  'stroke="#333"/>')
        el.append(f'<text class="xtick" x="{f(x(t))}" y="{mt + ph + 18}" '
                  f'text-anchor="middle">{t}</text>')
    el.append(f'<text x="{ml + pw / 2:.1f}" y="{height - 6}" text-anchor="middle">'
              "round</text>")
    el.append(f'<text transform="translate(14 {mt + ph / 2:.1f}) rotate(-90)" '
              'text-anchor="middle">cumulative epsilon</text>')
    legend: list[tuple[str, str, str]] = []
    for b in budgets:
        el.append(f'<line class="budget" x1="{ml}" x2="{ml + pw}" y1="{f(y(b))}" '
                  f'y2="{f(y(b))}" stroke="{BUDGET}" stroke-width="1.5" '
                  'stroke-dasharray="6 4"/>')
        legend.append(("dash", BUDGET, f"budget {b:g}"))
    for s in ser:
        c = s["colour"]
        if s["points"]:
            pts = " ".join(f"{f(x(r))},{f(y(e))}" for r, e in s["points"])
            el.append(f'<polyline class="eps" data-hospital="{escape(s["hospital"])}" '
                      f'points="{pts}" fill="none" stroke="{c}" stroke-width="2"/>')
            refused = set(s["refused"])
            for r, e in s["points"]:
                if (r, e) not in refused:
                    el.append(f'<circle cx="{f(x(r))}" cy="{f(y(e))}" r="3" fill="{c}"/>')
        for r, e in s["refused"]:
            cx, cy = x(r), y(e)
            el.append(f'<path class="refused" data-hospital="{escape(s["hospital"])}" '
                      f'data-round="{r}" d="M{f(cx - 5)} {f(cy - 5)}L{f(cx + 5)} '
                      f'{f(cy + 5)}M{f(cx - 5)} {f(cy + 5)}L{f(cx + 5)} {f(cy - 5)}" '
                      f'stroke="{REFUSED}" stroke-width="2.5"/>')
        legend.append(("line", c, s["hospital"]))
    if any(s["refused"] for s in ser):
        legend.append(("cross", REFUSED, "refused round"))
    lx = ml + pw + 14
    for i, (kind, c, label) in enumerate(legend):
        ly = mt + 10 + i * 18
        if kind == "cross":
            el.append(f'<path d="M{lx + 5} {ly - 5}L{lx + 15} {ly + 5}M{lx + 5} {ly + 5}'
                      f'L{lx + 15} {ly - 5}" stroke="{c}" stroke-width="2.5"/>')
        else:
            dash = ' stroke-dasharray="6 4"' if kind == "dash" else ""
            el.append(f'<line x1="{lx}" x2="{lx + 20}" y1="{ly}" y2="{ly}" stroke="{c}" '
                      f'stroke-width="2"{dash}/>')
        el.append(f'<text x="{lx + 26}" y="{ly + 4}">{escape(label)}</text>')
    el.append("</svg>")
    return "\n".join(el)
