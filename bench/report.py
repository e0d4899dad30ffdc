"""``OUT/bench.md`` from the results document, and the machine it ran on."""

from __future__ import annotations

import os
import platform
import subprocess
from typing import Any

from fedrx.bench.tables import arms_table, nbytes, ratio, sweep_table


def machine_info() -> dict[str, Any]:
    """CPU model, usable cores, platform and the versions of the packages that matter."""
    from importlib.metadata import PackageNotFoundError, version

    model = platform.processor() or platform.machine()
    try:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10,  # noqa: S607
                               check=False).stdout
        for line in lscpu.splitlines():
            if line.strip().startswith("Model name:"):
                model = line.split(":", 1)[1].strip()
                break
    except (OSError, subprocess.SubprocessError):
        pass
    versions = {"python": platform.python_version()}
    for pkg in ("torch", "tenseal", "cryptography", "numpy", "opacus", "fedrx"):
        try:
            versions[pkg] = version(pkg)
        except PackageNotFoundError:
            versions[pkg] = None
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {"cpu": model, "cores": cores, "platform": platform.platform(),
            "versions": versions}


def transport_text(doc: dict[str, Any]) -> str:
    """How the arms' hospitals were reached: gRPC, in-process, or the Ray cluster."""
    b = doc.get("backend") or {}
    if doc["config"].get("deploy"):
        return "gRPC on loopback"
    if b.get("name") == "ray":
        return (f"Ray ({b.get('cluster_cpus')} cluster CPUs, {b.get('nodes')} node(s), "
                f"{b.get('address')}; Ray {b.get('ray_version')}; hospitals in Ray worker "
                "actors)")
    return "in-process"


def bench_markdown(doc: dict[str, Any]) -> str:
    """``bench.md``: settings, the arms table, headline, sweep, micro and scaling tables."""
    c, mi = doc["config"], doc["machine"]
    first = doc["arms"][0] if doc["arms"] else {}
    v = mi["versions"]
    lines = [
        f"# fedrx bench: {doc['dataset']}",
        "",
        f"{doc['date']}; {mi['cpu']}, {mi['cores']} cores; python {v['python']}, torch "
        f"{v['torch']}, tenseal {v['tenseal']}, cryptography {v['cryptography']}, numpy "
        f"{v['numpy']}.",
        "",
        f"Preset **{c['preset']}**: {c['hospitals']} hospitals, {c['rounds']} rounds, "
        f"hidden {c['hidden']} ({doc['parameters']} parameters), seed {c['seed']}, DP target "
        f"epsilon {c['epsilon']:g} (patient level, per hospital), transport "
        f"{transport_text(doc)}; total "
        f"{doc['seconds']:.0f} s ("
        + ", ".join(f"{k} {v:.0f} s" for k, v in doc.get("phase_seconds", {}).items()) + ").",
        "",
        "## Arms",
        "",
        "Final global model on the pooled test patients (and the model of the round with the "
        "best pooled validation Jaccard, its test Jaccard and round); means over rounds; "
        "ratios to the "
        "`none` arm with the same DP setting. s/round excludes the evaluation stage.",
        "",
        *arms_table(doc["arms"]),
    ]
    if (doc.get("backend") or {}).get("name") == "ray":
        lines += ["", "Ray backend: hospital CPU n/a (hospitals run in Ray actors, not "
                  "measurable from the driver); aggregator CPU is the driver process's CPU "
                  "per round (aggregator, wire codec, Ray client threads); peak RSS is the "
                  "driver's only. Micro-benchmarks, scaling and the epsilon sweep run in "
                  "this process."]
    if doc.get("headline"):
        lines += ["", *[f"* {h}" for h in doc["headline"]]]
    if doc.get("sweep"):
        lines += ["", "## Test Jaccard against epsilon (protection none)", "",
                  *sweep_table(doc["sweep"])]
    if doc.get("micro"):
        mc = doc["micro"]
        fl = mc["floors"]
        lines += ["", f"## Micro-benchmarks (d = {mc['d']}, m = {mc['modulus_bits']} bits)", "",
                  f"Floors on this machine: AES-256-CTR {fl['aes_ctr_bytes_per_s'] / 1e9:.2f} "
                  f"GB/s, numpy uint64 add {fl['numpy_add_bytes_per_s'] / 1e9:.2f} GB/s "
                  "(24 bytes moved per element). CKKS upload "
                  f"{mc['ckks_upload_bytes_per_param']:.2f} bytes/parameter.", "",
                  "| operation | s | ns/parameter | floor | floor s | x floor |",
                  "|---|---|---|---|---|---|"]
        for r in mc["rows"]:
            lines.append(f"| {r['operation']} | {r['seconds']:.3g} | {r['ns_per_param']:.2f} | "
                         f"{r['floor']} | {r['floor_seconds']:.3g} | {ratio(r['x_floor'])} |")
    if doc.get("scaling"):
        sc = doc["scaling"]
        lines += ["", "## Scaling with hospitals", "",
                  "| scheme | n | d | degree | hospital s | aggregator s | bytes/param/hospital |",
                  "|---|---|---|---|---|---|---|"]
        for r in sc["hospitals"]:
            if "skipped" in r:
                lines.append(f"| {r['scheme']} | {r['n']} | {r['d']} | - | skipped: "
                             f"{r['skipped']} | - | - |")
            else:
                lines.append(f"| {r['scheme']} | {r['n']} | {r['d']} | "
                             f"{r['degree'] if r['degree'] is not None else '-'} | "
                             f"{r['hospital_s']:.4f} | {r['aggregator_s']:.4f} | "
                             f"{r['bytes_per_param_per_hospital']:.2f} |")
        lines += ["", "## Scaling with model size", "",
                  "| scheme | n | d | hospital s | aggregator s | aggregator peak memory "
                  "| bytes/param | memory at other n |", "|---|---|---|---|---|---|---|---|"]
        for r in sc["model"]:
            pk = r["aggregator_peak_bytes"]
            other = "; ".join(f"n={k}: {nbytes(x['rss_peak_bytes'])}"
                              for k, x in (r.get("memory_by_n") or {}).items())
            per = "-" if not pk else format(pk / r["d"], ".1f")
            lines.append(f"| {r['scheme']} | {r['n']} | {r['d']:.0e} | {r['hospital_s']:.4f} | "
                         f"{r['aggregator_s']:.4f} | {nbytes(pk)} | {per} | {other or '-'} |")
        if doc.get("fits"):
            lines += ["", "Log-log slopes (1 = linear): " + ", ".join(
                f"{k} {v:.2f}" for k, v in sorted(doc["fits"].items())) + "."]
        lines += ["", *[f"* {n}" for n in sc["notes"]]]
    lines += ["", "## Files", "", "`results.json` (every number above, per round), "
              "`arms/<arm>/` (each run's own results, summary and ledgers), plots: "
              + ", ".join(f"`{p}`" for p in doc["plots"]) + ".",
              "", "What is measured: see the docstring of `fedrx.bench` "
              "(CPU: " + (first.get("cpu_method")
                          or "process_time around each hospital's exchange and each round, "
                          "by a transport wrapper") + "; memory: " +
              first.get("memory_method", "-") + ")."]
    return "\n".join(lines) + "\n"
