"""``fedrx bench``: the price of each protection level, side by side, and how it scales.

Three parts, one process, one output folder ``OUT``:

1. **Arms.** Every (protection x DP) arm runs :func:`fedrx.nodes.simulate.run_simulation`
   on the SAME data split, vocabulary, initial model and seed (``OUT/arms/<arm>/``). Per
   round: utility (Jaccard, PRAUC, F1, DDI rate of the global model on the pooled test
   patients), epsilon (DP arms: the largest over hospitals), bytes up and down per
   hospital (the transport's per-stage payload accounting,
   :func:`fedrx.protocol.transport.payload_bytes`), round wall time, hospital and
   aggregator CPU time and the process's peak memory (see "What is measured").
2. **Micro-benchmarks** of the hot paths against this machine's floors, measured in the
   same run: mask expansion and raw AES-256-CTR, modular addition and a numpy uint64 add,
   bit packing and the same add floor, CKKS encrypt/decrypt against AES-CTR of the float32
   update and CKKS add against a float64 numpy add (``benchmarks/bench_masking.py``,
   ``benchmarks/bench_ckks.py``).
3. **Scaling**: masking (complete graph and SecAgg+'s k-regular Harary graph) and CKKS
   aggregation as hospitals grow (small model) and as the model grows (fixed hospitals),
   and the aggregator's peak memory against model size.

What is measured
----------------
* ``round_s``: wall time of :meth:`RoundMachine.run` (train, protection stages, update,
  evaluation). ``s_per_round`` excludes the evaluation stage (identical in every arm and
  inflated in the last round by personalisation); both are in ``results.json``.
* CPU time: ``time.process_time`` (all threads of this process, so torch's intra-op
  threads count) around every :meth:`HospitalParty.handle` call, attributed to that
  hospital and stage, and around every :meth:`RoundMachine.run`. Aggregator CPU = round CPU
  minus all hospital CPU of the round (so it includes the in-process transport's
  accounting). Hospitals run one after another in this process, so the split is exact.
  The two methods are wrapped for the duration of :func:`run_bench` only.
* Peak memory per arm: the process's peak RSS (Linux ``VmHWM``, reset through
  ``/proc/self/clear_refs`` before each arm, freed heap trimmed first). It covers every
  hospital, the aggregator, the data and torch together. Where the reset is not possible
  it falls back to ``ru_maxrss`` (monotone over the whole run; flagged in the output).
* Bytes: per round, the sum over stages of request (down) and reply (up) payload bytes,
  divided by the round's participants; ``protection`` variants exclude the train and
  evaluate stages (the model download and metric sums, the same in every arm).
* Aggregator memory in the scaling part: masking, tracemalloc over the aggregator's own
  calls (numpy buffers are traced; replies handed to it are the transport's and not
  counted); CKKS, a FRESH process per point (SEAL pools freed memory) reporting the growth
  of peak RSS while adding n uploads, the ciphertexts retained and the whole process's
  peak RSS.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import math
import os
import platform
import resource
import shutil
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from fedrx.errors import ConfigError
from fedrx.medrx.records import atomic_write_text

UTILITY = ("jaccard", "prauc", "f1", "ddi_rate")
DP_VALUES = {"on": True, "off": False}

PRESETS: dict[str, dict[str, Any]] = {
    # CI: seconds. Tiny model, one round, micro sizes only.
    "ci": {"rounds": 1, "hidden": 8, "hospitals": 2, "micro_d": 10_000,
           "scale_ns": (3, 5), "scale_small_d": 1_000, "scale_ds": (1_000, 10_000),
           "scale_n": 3, "complete_max_n": 100, "ckks_memory_ns": (3,), "sweep": ()},
    # --quick: under 3 minutes on 2 cores.
    "quick": {"rounds": 2, "hidden": 16, "hospitals": 3, "micro_d": 100_000,
              "scale_ns": (10, 50), "scale_small_d": 1_000, "scale_ds": (10_000, 100_000),
              "scale_n": 10, "complete_max_n": 100, "ckks_memory_ns": (10,), "sweep": ()},
    # default: the recorded full run.
    "full": {"rounds": 10, "hidden": 128, "hospitals": 3, "micro_d": 1_000_000,
             "scale_ns": (10, 100, 500), "scale_small_d": 10_000,
             "scale_ds": (10_000, 100_000, 1_000_000), "scale_n": 10, "complete_max_n": 100,
             "ckks_memory_ns": (10, 50), "sweep": (1.0, 3.0, 8.0)},
}


@dataclass
class BenchConfig:
    """``fedrx bench`` settings. ``None`` fields take the preset's value."""

    protections: tuple[str, ...] = ("none", "mask", "ckks")
    dp: tuple[bool, ...] = (False, True)
    data: str = "mimic3-demo"
    hospitals: int | None = None
    rounds: int | None = None
    hidden: int | None = None
    seed: int = 0
    epsilon: float = 8.0
    out: str = "runs/bench"
    preset: str = "full"
    deploy: bool = False
    micro: bool = True
    scaling: bool = True
    sweep: tuple[float, ...] | None = None
    overwrite: bool = False
    settings: dict[str, Any] = field(default_factory=dict)

    def resolve(self) -> BenchConfig:
        """Validate and fill preset values; ConfigError (one line) on bad input."""
        if self.preset not in PRESETS:
            raise ConfigError(f"unknown preset {self.preset!r}")
        p = PRESETS[self.preset]
        if not self.protections:
            raise ConfigError("--protection: give at least one of none, mask, ckks")
        from fedrx.protocol.registry import PROTECTIONS

        for prot in self.protections:
            if prot not in PROTECTIONS:
                raise ConfigError(f"--protection: unknown protection {prot!r} "
                                  f"(expected a comma-separated list of: "
                                  f"{', '.join(PROTECTIONS)})")
        if len(set(self.protections)) != len(self.protections):
            raise ConfigError("--protection: a protection is listed twice")
        if not self.dp or len(set(self.dp)) != len(self.dp):
            raise ConfigError("--dp: give off, on or off,on (each once)")
        self.hospitals = p["hospitals"] if self.hospitals is None else self.hospitals
        self.rounds = p["rounds"] if self.rounds is None else self.rounds
        self.hidden = p["hidden"] if self.hidden is None else self.hidden
        self.sweep = tuple(p["sweep"]) if self.sweep is None else tuple(self.sweep)
        if self.hospitals < 1:
            raise ConfigError(f"--hospitals must be >= 1, got {self.hospitals}")
        if "mask" in self.protections and self.hospitals < 2:
            raise ConfigError("--protection mask needs --hospitals >= 2")
        if self.rounds < 1:
            raise ConfigError(f"--rounds must be >= 1, got {self.rounds}")
        if self.hidden < 1:
            raise ConfigError(f"--hidden must be >= 1, got {self.hidden}")
        if not self.epsilon > 0 or any(not e > 0 for e in self.sweep):
            raise ConfigError("--epsilon and --epsilon-sweep values must be > 0")
        if self.deploy:
            _deploy_launcher()
            if self.sweep:
                raise ConfigError("--deploy: the epsilon sweep runs in one process; pass "
                                  "--epsilon-sweep none")
        out = Path(self.out)
        if out.exists() and not out.is_dir():
            raise ConfigError(f"--out {out} exists and is not a folder")
        if out.is_dir() and any(out.iterdir()) and not self.overwrite:
            raise ConfigError(f"--out {out} is not empty (privacy ledgers are never "
                              "overwritten): choose a new folder or pass --overwrite")
        self.settings = dict(p)
        return self

    def arms(self) -> list[tuple[str, str, bool]]:
        """(arm name, protection, dp) for every arm, DP-off arms first."""
        return [(prot + ("+dp" if dp else ""), prot, dp)
                for dp in sorted(self.dp) for prot in self.protections]


def parse_protections(text: str) -> tuple[str, ...]:
    return tuple(p.strip() for p in text.split(",") if p.strip())


def parse_dp(text: str) -> tuple[bool, ...]:
    vals = [v.strip().lower() for v in text.split(",") if v.strip()]
    bad = [v for v in vals if v not in DP_VALUES]
    if bad or not vals:
        raise ConfigError(f"--dp: expected off, on or off,on; got {text!r}")
    return tuple(DP_VALUES[v] for v in vals)


def parse_epsilons(text: str) -> tuple[float, ...]:
    if text.strip().lower() in ("", "none", "off"):
        return ()
    try:
        return tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise ConfigError(f"--epsilon-sweep: expected numbers like 1,3,8; got {text!r}") from None


# ------------------------------------------------------------------------ helpers


def _deploy_launcher() -> Callable[..., Any]:
    try:
        from fedrx.nodes.launcher import run_demo
    except ImportError as exc:
        raise ConfigError(f"--deploy is not available yet (fedrx.nodes: {exc})") from None
    return run_demo


def benchmarks_dir() -> Path:
    return Path(__file__).resolve().parent.parent / "benchmarks"


def load_benchmark(name: str) -> Any:
    """Import ``benchmarks/<name>.py`` of the source checkout (not an installed package)."""
    path = benchmarks_dir() / f"{name}.py"
    if not path.is_file():
        raise ConfigError(f"{path} not found: micro-benchmarks and scaling need the source "
                          "checkout's benchmarks/ folder (or pass --no-micro --no-scaling)")
    mod_name = f"fedrx_benchmarks_{name}"
    if mod_name in sys.modules:
        return sys.modules[mod_name]
    spec = importlib.util.spec_from_file_location(mod_name, path)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[mod_name] = mod
    spec.loader.exec_module(mod)
    return mod


def _status_kb(field_name: str) -> int | None:
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith(field_name + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def reset_peak_memory() -> str:
    """Reset the process's peak RSS; returns the method used for :func:`peak_memory`."""
    with contextlib.suppress(OSError, AttributeError):
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        if _status_kb("VmHWM") is not None:
            return "VmHWM (reset per arm)"
    except OSError:
        pass
    return "ru_maxrss (cumulative over the run)"


def peak_memory(method: str) -> int:
    if method.startswith("VmHWM"):
        kb = _status_kb("VmHWM")
        if kb is not None:
            return kb * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


@dataclass
class _Meter:
    hospital: dict[tuple[str, str], float] = field(default_factory=lambda: defaultdict(float))
    round_cpu: float = 0.0

    def take(self) -> tuple[dict[tuple[str, str], float], float]:
        out = (dict(self.hospital), self.round_cpu)
        self.hospital = defaultdict(float)
        self.round_cpu = 0.0
        return out


@contextlib.contextmanager
def _instrument(meter: _Meter) -> Iterator[None]:
    """Time HospitalParty.handle (per hospital and stage) and RoundMachine.run (CPU)."""
    from fedrx.protocol.aggregator import RoundMachine
    from fedrx.protocol.hospital import HospitalParty

    orig_handle, orig_run = HospitalParty.handle, RoundMachine.run

    def handle(self: Any, stage: str, request: Any) -> Any:
        t0 = time.process_time()
        try:
            return orig_handle(self, stage, request)
        finally:
            meter.hospital[(self.hospital, stage)] += time.process_time() - t0

    def run(self: Any, *args: Any, **kwargs: Any) -> Any:
        t0 = time.process_time()
        try:
            return orig_run(self, *args, **kwargs)
        finally:
            meter.round_cpu += time.process_time() - t0

    HospitalParty.handle, RoundMachine.run = handle, run  # type: ignore[method-assign]
    try:
        yield
    finally:
        HospitalParty.handle, RoundMachine.run = orig_handle, orig_run  # type: ignore


def round_record(rec: dict[str, Any], cpu: dict[tuple[str, str], float] | None,
                 round_cpu: float | None) -> dict[str, Any]:
    """The bench's per-round numbers from one run_simulation round record."""
    n = max(1, len(rec["participants"]))
    stages = rec.get("stages", [])
    outer = ("train", "evaluate")
    up = sum(s["received_bytes"] for s in stages)
    down = sum(s["sent_bytes"] for s in stages)
    p_up = sum(s["received_bytes"] for s in stages if s["stage"] not in outer)
    p_down = sum(s["sent_bytes"] for s in stages if s["stage"] not in outer)
    eval_s = sum(s["seconds"] for s in stages if s["stage"] == "evaluate")
    m = rec.get("metrics", {})
    out: dict[str, Any] = {
        "round": rec["round"], "status": rec["status"],
        "participants": len(rec["participants"]), "contributors": len(rec["contributors"]),
        "dropped": sorted(rec.get("dropped", {})),
        **{k: m.get(k) for k in UTILITY},
        "bytes_up_per_hospital": up / n, "bytes_down_per_hospital": down / n,
        "protection_bytes_up_per_hospital": p_up / n,
        "protection_bytes_down_per_hospital": p_down / n,
        "round_s": rec["seconds"], "evaluate_s": eval_s,
        "train_stage_s": sum(s["seconds"] for s in stages if s["stage"] == "train"),
        "epsilon": None, "epsilon_by_hospital": None,
        "hospital_cpu_s": None, "hospital_cpu_max_s": None, "hospital_eval_cpu_s": None,
        "aggregator_cpu_s": None,
    }
    if rec.get("privacy"):
        eps = {h: p["epsilon"] for h, p in rec["privacy"].items()}
        out["epsilon_by_hospital"] = eps
        out["epsilon"] = max(eps.values())
    if cpu is not None and round_cpu is not None:
        per_h: dict[str, float] = defaultdict(float)
        per_h_eval: dict[str, float] = defaultdict(float)
        for (h, stage), sec in cpu.items():
            (per_h_eval if stage == "evaluate" else per_h)[h] += sec
        hs = rec["participants"] or sorted(per_h)
        vals = [per_h.get(h, 0.0) for h in hs]
        out["hospital_cpu_s"] = sum(vals) / max(1, len(vals))
        out["hospital_cpu_max_s"] = max(vals, default=0.0)
        out["hospital_eval_cpu_s"] = sum(per_h_eval.values()) / max(1, len(hs))
        out["aggregator_cpu_s"] = max(0.0, round_cpu - sum(cpu.values()))
    return out


def _mean(xs: list[float | None]) -> float | None:
    v = [x for x in xs if x is not None]
    return sum(v) / len(v) if v else None


def summarize_arm(name: str, protection: str, dp: bool, doc: dict[str, Any],
                  rounds: list[dict[str, Any]], peak: int | None) -> dict[str, Any]:
    final = doc["final"]["global"]
    up = _mean([r["bytes_up_per_hospital"] for r in rounds])
    down = _mean([r["bytes_down_per_hospital"] for r in rounds])
    return {
        "arm": name, "protection": protection, "dp": dp,
        "final": {k: final.get(k) for k in UTILITY},
        "selected": ({"round": doc["selected"]["round"],
                      **{k: doc["selected"]["global"].get(k) for k in UTILITY}}
                     if doc.get("selected") else None),
        "epsilon": rounds[-1]["epsilon"] if dp else None,
        "bytes_up_per_hospital_round": up, "bytes_down_per_hospital_round": down,
        "bytes_per_hospital_round": (up or 0.0) + (down or 0.0),
        "protection_bytes_per_hospital_round": _mean(
            [r["protection_bytes_up_per_hospital"] + r["protection_bytes_down_per_hospital"]
             for r in rounds]),
        "s_per_round": _mean([r["round_s"] - r["evaluate_s"] for r in rounds]),
        "s_per_round_with_eval": _mean([r["round_s"] for r in rounds]),
        "hospital_cpu_s_per_round": _mean([r["hospital_cpu_s"] for r in rounds]),
        "aggregator_cpu_s_per_round": _mean([r["aggregator_cpu_s"] for r in rounds]),
        "peak_memory_bytes": peak, "parameters": doc.get("parameters"),
        "seconds": doc.get("seconds"), "stopped": doc.get("stopped", ""),
        "time_ratio": None, "bytes_ratio": None, "cpu_ratio": None,
    }


def add_ratios(arms: list[dict[str, Any]]) -> None:
    """Time, bytes and hospital-CPU ratios to the ``none`` arm with the same DP setting."""
    base = {a["dp"]: a for a in arms if a["protection"] == "none"}
    for a in arms:
        b = base.get(a["dp"])
        if b is None:
            continue
        for key, src in (("time_ratio", "s_per_round"), ("bytes_ratio",
                                                          "bytes_per_hospital_round"),
                         ("cpu_ratio", "hospital_cpu_s_per_round")):
            if a.get(src) is not None and b.get(src):
                a[key] = a[src] / b[src]


# ----------------------------------------------------------------------- the arms


def _sim_config(cfg: BenchConfig, protection: str, dp: bool, out: Path,
                epsilon: float | None = None) -> Any:
    from fedrx.nodes.simulate import SimulationConfig

    return SimulationConfig(data=cfg.data, hospitals=cfg.hospitals, rounds=cfg.rounds,
                            protection=protection, seed=cfg.seed, out=str(out),
                            hidden=cfg.hidden, dp=dp,
                            epsilon=cfg.epsilon if epsilon is None else epsilon)


def run_arm(cfg: BenchConfig, name: str, protection: str, dp: bool, out: Path,
            tick: Callable[[str], None]) -> dict[str, Any]:
    from fedrx.nodes.simulate import run_simulation

    if cfg.deploy:
        return _run_arm_deployed(cfg, name, protection, dp, out, tick)
    meter = _Meter()
    rounds: list[dict[str, Any]] = []

    def progress(rec: dict[str, Any]) -> None:
        cpu, round_cpu = meter.take()
        rounds.append(round_record(rec, cpu, round_cpu))
        tick(f"{name}: round {rec['round']}/{cfg.rounds}")

    method = reset_peak_memory()
    with _instrument(meter):
        doc = run_simulation(_sim_config(cfg, protection, dp, out), progress)
    arm = summarize_arm(name, protection, dp, doc, rounds, peak_memory(method))
    arm["memory_method"] = method
    arm["rounds"] = rounds
    arm["out"] = str(out)
    arm["results_json"] = str(out / "results.json")
    return arm


def _run_arm_deployed(cfg: BenchConfig, name: str, protection: str, dp: bool, out: Path,
                      tick: Callable[[str], None]) -> dict[str, Any]:
    from fedrx.dp.ledger import read_entries
    from fedrx.nodes.launcher import DemoSpec

    run_demo = _deploy_launcher()
    spec = DemoSpec(out=out, data=cfg.data, hospitals=int(cfg.hospitals or 1),
                    rounds=int(cfg.rounds or 1), protection=protection,
                    hidden=int(cfg.hidden or 1), local_epochs=1, seed=cfg.seed,
                    dp=dp, epsilon=cfg.epsilon, timeout=1800.0)
    doc = run_demo(spec, echo=lambda _m: None)
    if dp:
        # epsilon lives in each hospital's own ledger (never at the aggregator)
        for rec in doc["rounds"]:
            privacy = {}
            for h in rec["participants"]:
                led = Path(out) / "nodes" / h / "ledger" / f"{h}.jsonl"
                entries = [e for e in read_entries(led) if e["round"] <= rec["round"]]
                if entries:
                    privacy[h] = {"epsilon": entries[-1]["epsilon"]}
            rec["privacy"] = privacy
    rounds = [round_record(r, None, None) for r in doc["rounds"]]
    for r in rounds:
        tick(f"{name} (gRPC): round {r['round']}/{cfg.rounds}")
    arm = summarize_arm(name, protection, dp, doc, rounds, None)
    arm.update(memory_method="not measured (separate processes)", rounds=rounds,
               out=str(out), transport="grpc",
               results_json=str(out / "aggregator" / "results.json"))
    return arm


# ------------------------------------------------------------------ micro + scaling


def run_micro(d: int, tick: Callable[[str], None]) -> dict[str, Any]:
    """Hot paths against the floors, d elements / parameters."""
    import numpy as np

    from fedrx.protocol.protections.mask import MaskConfig
    from fedrx.secagg import quantize

    bm = load_benchmark("bench_masking")
    bc = load_benchmark("bench_ckks")
    m = quantize.modulus_bits(MaskConfig().quant, 10, d)
    mk = bm.micro(d, m)
    tick("micro: masking")
    key, pub, _params = bc.setup()
    ck = bc.measure(key, pub, _params, d, (10,), reps=2)[0]
    aes32 = bm.aes_ctr_floor(4 * d)
    a = np.ones(d)
    b = np.ones(d)
    a += b
    f_add = float("inf")
    for _ in range(5):
        t0 = time.perf_counter()
        a += b
        f_add = min(f_add, time.perf_counter() - t0)
    tick("micro: ckks")
    rows = [
        ("mask expansion (AES-CTR -> Z_2^m)", mk["mask_expansion"], "AES-256-CTR, same bytes",
         mk["aes_floor"]),
        ("modular addition (+=, &= 2^m-1)", mk["modular_add"], "numpy uint64 add",
         mk["add_floor"]),
        (f"bit packing, pack ({m} bits)", mk["pack"], "numpy uint64 add", mk["add_floor"]),
        (f"bit packing, unpack ({m} bits)", mk["unpack"], "numpy uint64 add", mk["add_floor"]),
        (f"aggregator packed add ({m} bits, {mk['backend']})", mk["packed_add"],
         "numpy uint64 add", mk["add_floor"]),
        ("CKKS encrypt (1 hospital)", ck["encrypt"], "AES-256-CTR of the float32 update",
         aes32),
        ("CKKS add (per upload)", ck["add"] / ck["n"], "numpy float64 add", f_add),
        ("CKKS decrypt + release", ck["decrypt"], "AES-256-CTR of the float32 update", aes32),
    ]
    floors = {"aes_ctr_bytes_per_s": mk["keystream_bytes"] / mk["aes_floor"],
              "numpy_add_bytes_per_s": 24 * d / mk["add_floor"]}
    return {"d": d, "modulus_bits": m, "floors": floors,
            "ckks_upload_bytes_per_param": ck["upload_bytes"] / d,
            "rows": [{"operation": op, "seconds": s, "floor": fl, "floor_seconds": fs,
                      "ns_per_param": s / d * 1e9, "x_floor": s / fs if fs > 0 else None}
                     for op, s, fl, fs in rows]}


def _ckks_memory_child(d: int, n: int) -> dict[str, Any]:
    path = benchmarks_dir() / "bench_ckks.py"
    proc = subprocess.run([sys.executable, str(path), "--aggregator-memory", str(d), str(n)],  # noqa: S603
                          capture_output=True, text=True, timeout=900, check=False)
    if proc.returncode != 0:
        tail = (proc.stderr.strip().splitlines() or ["?"])[-1]
        raise ConfigError(f"CKKS memory measurement failed: {tail}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def run_scaling(s: dict[str, Any], tick: Callable[[str], None]) -> dict[str, Any]:
    from fedrx.secagg.identity import Federation, Identity

    bm = load_benchmark("bench_masking")
    bc = load_benchmark("bench_ckks")
    n_max = max(max(s["scale_ns"]), s["scale_n"])
    ids = [Identity.generate(f"h{i:04d}") for i in range(n_max)]
    fed = Federation.of(ids)
    key, pub, params = bc.setup()
    hosp: list[dict[str, Any]] = []
    d0 = s["scale_small_d"]
    for n in s["scale_ns"]:
        for graph in ("complete", "harary"):
            if graph == "complete" and n > s["complete_max_n"]:
                hosp.append({"scheme": "mask-complete", "n": n, "d": d0, "skipped":
                             f"n > {s['complete_max_n']}: O(n^2) key agreements and shares"})
                continue
            r = bm.run(n, d0, ids, fed, None, graph=graph)
            hosp.append({"scheme": f"mask-{graph}", "n": n, "d": d0, "degree": r["degree"],
                         "hospital_s": sum(r["stages"].values()) + r["quant"],
                         "aggregator_s": r["server"],
                         "bytes_per_param_per_hospital": r["bytes_per_param"]})
            tick(f"scaling: mask {graph} n={n}")
    for r in bc.measure(key, pub, params, d0, tuple(s["scale_ns"]), reps=2):
        hosp.append({"scheme": "ckks", "n": r["n"], "d": d0, "degree": None,
                     "hospital_s": r["encrypt"] + r["decrypt"], "aggregator_s": r["add"],
                     "bytes_per_param_per_hospital": r["upload_bytes"] / d0})
    tick("scaling: ckks vs hospitals")
    model: list[dict[str, Any]] = []
    n = s["scale_n"]
    for d in s["scale_ds"]:
        r = bm.run(n, d, ids, fed, None)
        mem = bm.run(n, d, ids, fed, None, trace=True)["server_peak_bytes"]
        model.append({"scheme": "mask-complete", "n": n, "d": d,
                      "hospital_s": sum(r["stages"].values()) + r["quant"],
                      "aggregator_s": r["server"], "aggregator_peak_bytes": mem,
                      "memory_method": "tracemalloc (aggregator calls)"})
        tick(f"scaling: mask d={d:.0e}")
        c = bc.measure(key, pub, params, d, (n,))[0]
        cm = [_ckks_memory_child(d, k) for k in s["ckks_memory_ns"]]
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
                "aggregator memory: see 'What is measured' in fedrx.medrx.bench."]}


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


# ---------------------------------------------------------------------- the sweep


def run_sweep(cfg: BenchConfig, arms: list[dict[str, Any]], out: Path,
              tick: Callable[[str], None]) -> list[dict[str, Any]]:
    """Issue 8's table: test Jaccard at each epsilon and without DP (protection none),
    reusing the none and none+dp arms where they match."""
    bd = load_benchmark("bench_dp")
    have = {a["arm"]: a for a in arms}
    rows: list[dict[str, Any]] = []
    if "none" in have:
        rows.append(bd.accuracy_row(None, _arm_doc(have["none"])))
    todo = [e for e in cfg.sweep if not ("none+dp" in have and e == cfg.epsilon)]
    rows += bd.bench_federation_accuracy(
        tuple(todo), data=cfg.data, hospitals=cfg.hospitals, rounds=cfg.rounds,
        hidden=cfg.hidden, seed=cfg.seed, out=out, include_no_dp="none" not in have,
        progress=lambda rec: tick(f"epsilon sweep: round {rec['round']}/{cfg.rounds}"))
    if "none+dp" in have and cfg.epsilon in cfg.sweep:
        rows.append(bd.accuracy_row(cfg.epsilon, _arm_doc(have["none+dp"])))
    rows.sort(key=lambda r: (r["epsilon_target"] is None, r["epsilon_target"] or 0.0))
    return rows


def _arm_doc(arm: dict[str, Any]) -> dict[str, Any]:
    return json.loads(Path(arm["results_json"]).read_text())


# ------------------------------------------------------------------------- output


def machine_info() -> dict[str, Any]:
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


def _fmt(v: Any, spec: str = ".4f") -> str:
    return "-" if v is None else format(v, spec)


def _bytes(v: float | None) -> str:
    if v is None:
        return "-"
    for unit, div in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if v >= div:
            return f"{v / div:.2f} {unit}"
    return f"{v:.0f} B"


def _ratio(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f}x"


ARM_HEADER = ("| arm | jaccard | prauc | f1 | ddi rate | selected (val) jaccard, round "
              "| epsilon | bytes/hospital/round "
              "| up | down | s/round | time x none | bytes x none | hospital CPU s/round "
              "| aggregator CPU s/round | peak RSS |")


def _selected(sel: dict[str, Any] | None) -> str:
    return "-" if not sel else f"{_fmt(sel.get('jaccard'))}, {sel['round']}"


def arms_table(arms: list[dict[str, Any]]) -> list[str]:
    lines = [ARM_HEADER, "|" + "---|" * ARM_HEADER.count(" | ") + "---|"]
    for a in arms:
        f = a["final"]
        lines.append(
            f"| {a['arm']} | {_fmt(f['jaccard'])} | {_fmt(f['prauc'])} | {_fmt(f['f1'])} | "
            f"{_fmt(f['ddi_rate'])} | {_selected(a.get('selected'))} | "
            f"{_fmt(a['epsilon'], '.3f')} | "
            f"{_bytes(a['bytes_per_hospital_round'])} | "
            f"{_bytes(a['bytes_up_per_hospital_round'])} | "
            f"{_bytes(a['bytes_down_per_hospital_round'])} | {_fmt(a['s_per_round'], '.3f')} "
            f"| {_ratio(a['time_ratio'])} | {_ratio(a['bytes_ratio'])} | "
            f"{_fmt(a['hospital_cpu_s_per_round'], '.3f')} | "
            f"{_fmt(a['aggregator_cpu_s_per_round'], '.3f')} | "
            f"{_bytes(a['peak_memory_bytes'])} |")
    return lines


def sweep_table(rows: list[dict[str, Any]]) -> list[str]:
    lines = ["| target epsilon | epsilon spent (max over hospitals) | noise multiplier (mean) "
             "| test jaccard | prauc | f1 | s |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        target = "no DP" if r["epsilon_target"] is None else format(r["epsilon_target"], "g")
        lines.append(f"| {target} | {_fmt(r['epsilon_spent'], '.3f')} | "
                     f"{_fmt(r['noise_multiplier'], '.3f')} | {_fmt(r['jaccard'])} | "
                     f"{_fmt(r['prauc'])} | {_fmt(r['f1'])} | {_fmt(r['seconds'], '.1f')} |")
    return lines


def bench_markdown(doc: dict[str, Any]) -> str:
    c, mi = doc["config"], doc["machine"]
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
        f"{'gRPC on loopback' if c['deploy'] else 'in-process'}; total "
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
                         f"{r['floor']} | {r['floor_seconds']:.3g} | {_ratio(r['x_floor'])} |")
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
            other = "; ".join(f"n={k}: {_bytes(x['rss_peak_bytes'])}"
                              for k, x in (r.get("memory_by_n") or {}).items())
            per = "-" if not pk else format(pk / r["d"], ".1f")
            lines.append(f"| {r['scheme']} | {r['n']} | {r['d']:.0e} | {r['hospital_s']:.4f} | "
                         f"{r['aggregator_s']:.4f} | {_bytes(pk)} | {per} | {other or '-'} |")
        if doc.get("fits"):
            lines += ["", "Log-log slopes (1 = linear): " + ", ".join(
                f"{k} {v:.2f}" for k, v in sorted(doc["fits"].items())) + "."]
        lines += ["", *[f"* {n}" for n in sc["notes"]]]
    lines += ["", "## Files", "", "`results.json` (every number above, per round), "
              "`arms/<arm>/` (each run's own results, summary and ledgers), plots: "
              + ", ".join(f"`{p}`" for p in doc["plots"]) + ".",
              "", "What is measured: see the docstring of `fedrx.medrx.bench` "
              "(CPU: process_time around hospital and aggregator calls; memory: " +
              (doc["arms"][0].get("memory_method", "-") if doc["arms"] else "-") + ")."]
    return "\n".join(lines) + "\n"


def make_plots(doc: dict[str, Any], out: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    written: list[str] = []

    def save(fig: Any, name: str) -> None:
        fig.tight_layout()
        fig.savefig(out / name, dpi=110)
        plt.close(fig)
        written.append(f"plots/{name}")

    arms = doc["arms"]
    fig, axes = plt.subplots(2, 2, figsize=(10, 7))
    for ax, k in zip(axes.flat, UTILITY, strict=True):
        for a in arms:
            ax.plot([r["round"] for r in a["rounds"]], [r[k] for r in a["rounds"]],
                    marker="o", label=a["arm"])
        ax.set_title(k)
        ax.set_xlabel("round")
    axes.flat[0].legend(fontsize=8)
    save(fig, "utility.png")

    fig, ax = plt.subplots(figsize=(6, 4))
    for a in arms:
        if a["dp"]:
            ax.plot([r["round"] for r in a["rounds"]], [r["epsilon"] for r in a["rounds"]],
                    marker="o", label=a["arm"])
    ax.axhline(doc["config"]["epsilon"], color="grey", ls="--", label="target")
    ax.set_xlabel("round")
    ax.set_ylabel("epsilon (max over hospitals)")
    ax.legend(fontsize=8)
    save(fig, "epsilon.png")

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, k, title in ((axes[0], "bytes_up_per_hospital", "up"),
                         (axes[1], "bytes_down_per_hospital", "down")):
        for a in arms:
            ax.plot([r["round"] for r in a["rounds"]], [r[k] for r in a["rounds"]],
                    marker="o", label=a["arm"])
        ax.set_yscale("log")
        ax.set_title(f"bytes {title} per hospital per round")
        ax.set_xlabel("round")
    axes[0].legend(fontsize=8)
    save(fig, "bytes.png")

    fig, ax = plt.subplots(figsize=(6, 4))
    for a in arms:
        ax.plot([r["round"] for r in a["rounds"]],
                [r["round_s"] - r["evaluate_s"] for r in a["rounds"]], marker="o",
                label=a["arm"])
    ax.set_xlabel("round")
    ax.set_ylabel("round wall time without evaluation (s)")
    ax.legend(fontsize=8)
    save(fig, "round_time.png")

    sc = doc.get("scaling")
    if sc:
        for part, xkey, xlabel, name in (("hospitals", "n", "hospitals", "scaling_hospitals.png"),
                                         ("model", "d", "parameters", "scaling_model.png")):
            fig, ax = plt.subplots(figsize=(7, 5))
            by: dict[str, list[dict[str, Any]]] = defaultdict(list)
            for r in sc[part]:
                if "skipped" not in r:
                    by[r["scheme"]].append(r)
            for scheme, rows in by.items():
                xs = [r[xkey] for r in rows]
                ax.plot(xs, [r["hospital_s"] for r in rows], marker="o",
                        label=f"{scheme}: hospital")
                ax.plot(xs, [r["aggregator_s"] for r in rows], marker="s", ls="--",
                        label=f"{scheme}: aggregator")
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.set_xlabel(xlabel)
            ax.set_ylabel("seconds per round")
            ax.legend(fontsize=7)
            save(fig, name)
        fig, ax = plt.subplots(figsize=(6, 4))
        by = defaultdict(list)
        for r in sc["model"]:
            if r.get("aggregator_peak_bytes"):
                by[r["scheme"]].append(r)
        for scheme, rows in by.items():
            ax.plot([r["d"] for r in rows], [r["aggregator_peak_bytes"] for r in rows],
                    marker="o", label=f"{scheme} aggregator peak")
        ds = sorted({r["d"] for r in sc["model"]})
        if ds:
            ax.plot(ds, [100 * d for d in ds], color="grey", ls=":", label="100 bytes x d")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("parameters")
        ax.set_ylabel("bytes")
        ax.legend(fontsize=8)
        save(fig, "memory_model.png")
    return written


# --------------------------------------------------------------------------- main


def plan_units(cfg: BenchConfig) -> int:
    """Progress units of :func:`run_bench` (for a progress bar)."""
    s = cfg.settings
    units = len(cfg.arms()) * int(cfg.rounds or 1)
    units += len(cfg.sweep or ()) * int(cfg.rounds or 1) + (1 if cfg.sweep else 0) * int(
        cfg.rounds or 1)
    if cfg.micro:
        units += 2
    if cfg.scaling:
        units += 2 * len(s["scale_ns"]) + 1 + 2 * len(s["scale_ds"])
    return units


def run_bench(cfg: BenchConfig, tick: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Run everything; write ``OUT/results.json``, ``OUT/bench.md`` and ``OUT/plots``."""
    cfg.resolve()
    step = tick or (lambda _d: None)
    out = Path(cfg.out)
    if cfg.overwrite:
        for sub in ("arms", "sweep", "plots"):
            if (out / sub).is_dir():
                shutil.rmtree(out / sub)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    phases: dict[str, float] = {}
    if not cfg.deploy:
        warmup(cfg, out / "warmup")
    phases["warmup"] = time.perf_counter() - t0
    arms = []
    for name, prot, dp in cfg.arms():
        arms.append(run_arm(cfg, name, prot, dp, out / "arms" / name.replace("+", "_"), step))
    add_ratios(arms)
    phases["arms"] = time.perf_counter() - t0 - sum(phases.values())
    first = _arm_doc(arms[0]) if arms else {}
    doc: dict[str, Any] = {
        "format": "fedrx-bench/1",
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),  # noqa: UP017
        "machine": machine_info(),
        "config": {k: v for k, v in asdict(cfg).items() if k != "settings"},
        "preset_settings": {k: list(v) if isinstance(v, tuple) else v
                            for k, v in cfg.settings.items()},
        "dataset": first.get("dataset", cfg.data),
        "parameters": first.get("parameters"),
        "arms": arms,
        "headline": headline(arms),
    }
    for part, fn in (("sweep", lambda: run_sweep(cfg, arms, out / "sweep", step)),
                     ("micro", lambda: run_micro(cfg.settings["micro_d"], step)),
                     ("scaling", lambda: run_scaling(cfg.settings, step))):
        t1 = time.perf_counter()
        doc[part] = fn() if (cfg.sweep if part == "sweep" else getattr(cfg, part)) else None
        phases[part] = time.perf_counter() - t1
    doc["phase_seconds"] = phases
    doc["fits"] = scaling_fits(doc["scaling"]) if doc["scaling"] else {}
    doc["seconds"] = time.perf_counter() - t0
    doc["plots"] = make_plots(doc, out / "plots")
    atomic_write_text(out / "results.json", json.dumps(doc, indent=1, default=str) + "\n")
    atomic_write_text(out / "bench.md", bench_markdown(doc))
    return doc


def warmup(cfg: BenchConfig, out: Path) -> None:
    """One unreported round (protection none, no DP) so that the first arm does not pay
    for torch's and the data loader's first-call costs; its folder is removed."""
    from fedrx.nodes.simulate import run_simulation

    c = _sim_config(cfg, "none", False, out)
    c.rounds = 1
    c.personalize = False
    try:
        run_simulation(c)
    finally:
        shutil.rmtree(out, ignore_errors=True)


def headline(arms: list[dict[str, Any]]) -> list[str]:
    """One line per protected arm: round time, bytes and Jaccard against none."""
    base = {a["dp"]: a for a in arms if a["protection"] == "none"}
    lines = []
    for a in arms:
        b = base.get(a["dp"])
        if a["protection"] == "none" or b is None:
            continue
        dj = (a["final"]["jaccard"] or 0.0) - (b["final"]["jaccard"] or 0.0)
        lines.append(f"{a['arm']} over {b['arm']}: round time {_ratio(a['time_ratio'])} "
                     f"(with evaluation "
                     f"{_ratio(a['s_per_round_with_eval'] / b['s_per_round_with_eval'])}), "
                     f"bytes {_ratio(a['bytes_ratio'])}, hospital CPU "
                     f"{_ratio(a['cpu_ratio'])}, final Jaccard {dj:+.4f}")
    return lines
