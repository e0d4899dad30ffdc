"""Round latency and bytes per hospital of the gRPC deployment on loopback.

For 3 and 10 hospital PROCESSES (plus the aggregator process, mutual TLS, 127.0.0.1) and
each protection level, runs a short federation on the MIMIC-III demo (hidden 16, 1 local
epoch) and reports, from the aggregator's results.json, the median round latency (s,
rounds after the first, which includes connection warm-up) and the gRPC bytes per hospital
per round (serialised frames, both directions). DP off (it changes training cost, not the
wire). ckks: round 1 also creates and relays the key epoch (excluded from the median).
Prints a Markdown table.

    .venv/bin/python -m fedrx.bench.deploy [--rounds 3] [--hospitals 3,10] [--hidden 16]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from fedrx.nodes.launcher import DemoSpec, run_demo


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--hospitals", default="3,10")
    ap.add_argument("--protections", default="none,mask,ckks")
    ap.add_argument("--hidden", type=int, default=16)
    args = ap.parse_args()
    rows = []
    for n in (int(x) for x in args.hospitals.split(",")):
        for prot in args.protections.split(","):
            with tempfile.TemporaryDirectory(prefix="fedrx-bench-") as tmp:
                t0 = time.monotonic()
                spec = DemoSpec(out=Path(tmp), protection=prot, hospitals=n,
                                rounds=args.rounds, hidden=args.hidden, timeout=600,
                                task={"min_patients": 3, "personalize": False}, dp=False)
                doc = run_demo(spec, echo=lambda m: None)
                wall = time.monotonic() - t0
            rs = doc["rounds"]
            warm = rs[1:] or rs
            lat = statistics.median(r["seconds"] for r in warm)
            per_h = statistics.median(
                sum(s["sent_bytes"] + s["received_bytes"] for s in r["stages"])
                / len(r["participants"]) for r in warm)
            up = statistics.median(sum(s["received_bytes"] for s in r["stages"])
                                   / len(r["participants"]) for r in warm)
            ok = sum(r["status"] == "completed" for r in rs)
            rows.append((n, prot, doc["parameters"], lat, per_h, up, ok, len(rs), wall))
            print(f"done: {n} hospitals, {prot}: {lat:.2f} s/round", flush=True)
    print("\n| hospitals | protection | parameters | round latency (s, median) | "
          "bytes/hospital/round (both ways) | of which upload | rounds ok | wall (s) |")
    print("|---:|---|---:|---:|---:|---:|---:|---:|")
    for n, prot, p, lat, per_h, up, ok, total, wall in rows:
        print(f"| {n} | {prot} | {p} | {lat:.2f} | {per_h / 1e3:.1f} kB | {up / 1e3:.1f} kB "
              f"| {ok}/{total} | {wall:.0f} |")


if __name__ == "__main__":
    main()
