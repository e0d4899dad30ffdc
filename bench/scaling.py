"""Scaling of masking (complete graph and SecAgg+'s Harary graph) and CKKS aggregation with
the number of hospitals (small model) and the model size (fixed hospitals), and the
aggregator's peak memory against model size. Times in CPU seconds (masking: one real
round, every party in this process) or wall seconds (CKKS); memory in bytes.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from collections import defaultdict
from collections.abc import Callable
from typing import Any

from fedrx.bench import ckks, masking
from fedrx.errors import ConfigError
from fedrx.secagg.identity import Federation, Identity


def ckks_memory_child(d: int, n: int) -> dict[str, Any]:
    """:func:`fedrx.bench.ckks.memory_child` in a FRESH process (SEAL pools freed memory)."""
    cmd = [sys.executable, "-m", "fedrx.bench.ckks", "--aggregator-memory", str(d), str(n)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900,  # noqa: S603
                          check=False)
    if proc.returncode != 0:
        tail = (proc.stderr.strip().splitlines() or ["?"])[-1]
        raise ConfigError(f"CKKS memory measurement failed: {tail}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def run_scaling(s: dict[str, Any], tick: Callable[[str], None]) -> dict[str, Any]:
    n_max = max(max(s["scale_ns"]), s["scale_n"])
    ids = [Identity.generate(f"h{i:04d}") for i in range(n_max)]
    fed = Federation.of(ids)
    key, pub, params = ckks.setup()
    hosp: list[dict[str, Any]] = []
    d0 = s["scale_small_d"]
    for n in s["scale_ns"]:
        for graph in ("complete", "harary"):
            if graph == "complete" and n > s["complete_max_n"]:
                hosp.append({"scheme": "mask-complete", "n": n, "d": d0, "skipped":
                             f"n > {s['complete_max_n']}: O(n^2) key agreements and shares"})
                continue
            r = masking.run(n, d0, ids, fed, None, graph=graph)
            hosp.append({"scheme": f"mask-{graph}", "n": n, "d": d0, "degree": r["degree"],
                         "hospital_s": sum(r["stages"].values()) + r["quant"],
                         "aggregator_s": r["server"],
                         "bytes_per_param_per_hospital": r["bytes_per_param"]})
            tick(f"scaling: mask {graph} n={n}")
    for r in ckks.measure(key, pub, params, d0, tuple(s["scale_ns"]), reps=2):
        hosp.append({"scheme": "ckks", "n": r["n"], "d": d0, "degree": None,
                     "hospital_s": r["encrypt"] + r["decrypt"], "aggregator_s": r["add"],
                     "bytes_per_param_per_hospital": r["upload_bytes"] / d0})
    tick("scaling: ckks vs hospitals")
    model: list[dict[str, Any]] = []
    n = s["scale_n"]
    for d in s["scale_ds"]:
        r = masking.run(n, d, ids, fed, None)
        mem = masking.run(n, d, ids, fed, None, trace=True)["server_peak_bytes"]
        model.append({"scheme": "mask-complete", "n": n, "d": d,
                      "hospital_s": sum(r["stages"].values()) + r["quant"],
                      "aggregator_s": r["server"], "aggregator_peak_bytes": mem,
                      "memory_method": "tracemalloc (aggregator calls)"})
        tick(f"scaling: mask d={d:.0e}")
        c = ckks.measure(key, pub, params, d, (n,))[0]
        cm = [ckks_memory_child(d, k) for k in s["ckks_memory_ns"]]
        model.append({"scheme": "ckks", "n": n, "d": d,
                      "hospital_s": c["encrypt"] + c["decrypt"], "aggregator_s": c["add"],
                      "aggregator_peak_bytes": cm[0]["rss_peak_bytes"],
                      "memory_method": "peak RSS growth while adding (fresh process)",
                      "memory_by_n": {str(x["n"]): {"rss_peak_bytes": x["rss_peak_bytes"],
                                                    "retained_ciphertexts":
                                                        x["retained_ciphertexts"],
                                                    "process_peak_rss_bytes":
                                                        x["process_peak_rss_bytes"]}
                                      for x in cm}})
        tick(f"scaling: ckks d={d:.0e}")
    return {"hospitals": hosp, "model": model,
            "notes": [
                f"vs hospitals: d = {d0} parameters; every masking point is the real protocol "
                "(all parties in this process, no dropout); hospital_s is the mean CPU time "
                "of one hospital over all stages including quantisation, aggregator_s the "
                "aggregator's CPU time.",
                f"mask-complete is run up to n = {s['complete_max_n']} only; beyond, the "
                "per-hospital cost grows linearly with n (n-1 key agreements, shares and "
                "masks) and the total quadratically: use the Harary graph (SecAgg+) rows.",
                "ckks: hospital_s = one encryption + one decryption/release (a hospital's "
                "cost does not depend on n); aggregator_s = checked incremental addition of "
                "n uploads (the reps distinct encryptions cycled).",
                "aggregator memory: see 'What is measured' in fedrx.bench."]}


def scaling_fits(scaling: dict[str, Any]) -> dict[str, float]:
    """Log-log slopes (least squares) per scheme and cost, vs n and vs d."""
    out: dict[str, float] = {}
    for part, xkey in (("hospitals", "n"), ("model", "d")):
        by: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for r in scaling[part]:
            if "skipped" not in r:
                by[r["scheme"]].append(r)
        for scheme, rows in by.items():
            metrics = ["hospital_s", "aggregator_s"]
            if part == "model":
                metrics.append("aggregator_peak_bytes")
            for metric in metrics:
                pts = [(math.log(r[xkey]), math.log(r[metric])) for r in rows
                       if r.get(metric) and r[metric] > 0]
                if len(pts) >= 2:
                    mx = sum(p[0] for p in pts) / len(pts)
                    my = sum(p[1] for p in pts) / len(pts)
                    den = sum((p[0] - mx) ** 2 for p in pts)
                    if den > 0:
                        out[f"{scheme} {metric} vs {xkey}"] = sum(
                            (p[0] - mx) * (p[1] - my) for p in pts) / den
    return out
