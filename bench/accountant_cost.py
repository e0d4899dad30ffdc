"""What privacy accounting costs: share of a DP round, calibration time, audit time per entry.

Measured on whichever fedrx code ``--code ROOT`` names (default: this checkout), each in its
own process, so an older commit can be timed beside the current one::

    git worktree add /tmp/wt_old dd4ffc7        # the code before issue 16 item 4
    .venv/bin/python bench/accountant_cost.py --compare /tmp/wt_old

Figures (all with the code's DEFAULT accountant, delta 1e-5, seeded noise, 2 torch threads):

* ``calibrate_1000``: :func:`~fedrx.dp.accountants.calibrate.calibrate_noise_multiplier`
  for 1,000 planned steps, cold caches, for (target eps, q) in (8, 0.5), (3, 0.05), (1, 0.01);
* per hospital scenario, a real :class:`~fedrx.dp.federated.HospitalDP` (signed ledger,
  medication MLP, patient-level DP-SGD on synthetic visits): ``enroll_s`` (calibration at
  enrolment), and per round ``round_s`` (``begin_round`` + ``train``: budget check, charge,
  ledger entry, DP-SGD) with ``accountant_s``, the time spent inside the accountant API
  (``compute_epsilon`` and ``calibrate_noise_multiplier``, wherever fedrx calls them;
  nested calls counted once); ``share`` = accountant / round, in wall time and in CPU time
  (``time.process_time``, all threads: steadier on a shared machine). Scenarios: ``demo`` (33
  patients, ~130 visits, 2 rounds: a MIMIC-III-demo hospital of ``fedrx simulate --data
  mimic3-demo --hospitals 3 --rounds 2 --dp on``) and ``large`` (1,000 patients, 6 rounds
  of 16 steps);
* ``audit_own_per_entry_s``: ``fedrx.dp.audit.audit`` (signatures, chain, independent
  epsilon recomputation) of a signed 20-entry ledger (q 0.05, sigma 1.1, 25 steps a round)
  the same tree wrote, divided by 20; with ``--compare`` the current tree also audits the
  older tree's ledger (``audit_other_*``: existing ledgers must still verify).

Not a timed test: the machine's load moves these numbers; compare runs made side by side.
"""

from __future__ import annotations

import argparse
import importlib.abc
import importlib.util
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

PACKAGES = {"fedrx": "core", "fedrx.secagg": "secagg", "fedrx.dp": "dp",
            "fedrx.protocol": "protocol", "fedrx.proto": "proto", "fedrx.nodes": "nodes",
            "fedrx.cli": "cli", "fedrx.medrx": "medrx", "fedrx.bench": "bench"}
DELTA = 1e-5
CALIBRATIONS = [(8.0, 0.5), (3.0, 0.05), (1.0, 0.01)]
AUDIT_ENTRIES = 20


class _Remap(importlib.abc.MetaPathFinder):
    """Import ``fedrx.*`` from the source tree ``root`` (its setuptools ``package-dir``)."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def find_spec(self, name: str, path: Any, target: Any = None) -> Any:
        if name not in PACKAGES:
            return None  # sub-modules are found through the remapped parent's __path__
        d = self.root / PACKAGES[name]
        return importlib.util.spec_from_file_location(name, d / "__init__.py",
                                                      submodule_search_locations=[str(d)])


class _Clock:
    """Wall time inside the accountant API, re-entrant calls counted once."""

    def __init__(self) -> None:
        self.total = 0.0
        self.cpu = 0.0
        self.calls = 0
        self._depth = 0

    def wrap(self, fn: Any) -> Any:
        def timed(*a: Any, **k: Any) -> Any:
            self._depth += 1
            t, c = time.perf_counter(), time.process_time()
            try:
                return fn(*a, **k)
            finally:
                self._depth -= 1
                if self._depth == 0:
                    self.total += time.perf_counter() - t
                    self.cpu += time.process_time() - c
                    self.calls += 1
        return timed

    def install(self) -> None:
        """Replace ``compute_epsilon`` / ``calibrate_noise_multiplier`` in every loaded
        fedrx module that holds them."""
        from fedrx.dp.accountants import calibrate, registry

        originals = {"compute_epsilon": registry.compute_epsilon,
                     "calibrate_noise_multiplier": calibrate.calibrate_noise_multiplier}
        wrapped = {k: self.wrap(f) for k, f in originals.items()}
        for mod in list(sys.modules.values()):
            if not getattr(mod, "__name__", "").startswith("fedrx"):
                continue
            for k, f in originals.items():
                if getattr(mod, k, None) is f:
                    setattr(mod, k, wrapped[k])


def _visits(n_patients: int, n_codes: int, n_labels: int, seed: int) -> Any:
    import numpy as np

    rng = np.random.default_rng(seed)
    counts = rng.integers(1, 8, n_patients)
    n = int(counts.sum())
    x = np.zeros((n, n_codes + n_labels + 1), dtype=np.float32)
    y = np.zeros((n, n_labels), dtype=np.float32)
    for r in range(n):
        x[r, rng.choice(n_codes, 15, replace=False)] = 1
        y[r, rng.choice(n_labels, 13, replace=False)] = 1
    return x, y, np.repeat(np.arange(n_patients), counts)


def _scenario(name: str, n_patients: int, batch: int, rounds: int, run_dir: Path,
              clock: _Clock) -> dict[str, Any]:
    import torch

    from fedrx.dp.dpsgd import DPConfig
    from fedrx.dp.federated import DPPlan, HospitalDP
    from fedrx.medrx.model import MedRecMLP
    from fedrx.medrx.task import per_visit_loss
    from fedrx.secagg.identity import Identity

    x, y, groups = _visits(n_patients, 1000, 130, seed=0)
    cfg = DPConfig(target_epsilon=8.0, expected_batch_patients=batch, secure_noise=False,
                   seed=0)
    clock.total, clock.calls = 0.0, 0
    t = time.perf_counter()
    dp = HospitalDP(f"h-{name}", Identity.generate(f"h-{name}"), cfg, DPPlan(rounds),
                    n_patients, run_dir)
    out: dict[str, Any] = {"patients": n_patients, "visits": len(x), "rounds": rounds,
                           "q": dp.sample_rate, "steps_per_round": dp.steps_per_round,
                           "accountant": cfg.accountant, "sigma": dp.noise_multiplier,
                           "enroll_s": time.perf_counter() - t, "enroll_calls": clock.calls}
    model = MedRecMLP(x.shape[1], y.shape[1])
    rows = []
    for rnd in range(1, rounds + 1):
        clock.total, clock.cpu, clock.calls = 0.0, 0.0, 0
        t, c = time.perf_counter(), time.process_time()
        refusal = dp.begin_round(rnd, f"{rnd:064x}")
        if refusal:
            raise RuntimeError(refusal)
        rec = dp.train(model, per_visit_loss, torch.from_numpy(x), torch.from_numpy(y), groups,
                       n_groups=n_patients, lr=0.1,
                       optimizer_factory=lambda p, lr: torch.optim.SGD(p, lr=lr),
                       input_dtype=torch.float32)
        rows.append({"round_s": time.perf_counter() - t, "accountant_s": clock.total,
                     "round_cpu_s": time.process_time() - c, "accountant_cpu_s": clock.cpu,
                     "calls": clock.calls, "epsilon": rec["epsilon"]})
    out["round_s"] = sum(r["round_s"] for r in rows) / rounds
    out["accountant_s"] = sum(r["accountant_s"] for r in rows) / rounds
    out["share"] = out["accountant_s"] / out["round_s"]
    out["round_cpu_s"] = sum(r["round_cpu_s"] for r in rows) / rounds
    out["accountant_cpu_s"] = sum(r["accountant_cpu_s"] for r in rows) / rounds
    out["cpu_share"] = out["accountant_cpu_s"] / out["round_cpu_s"]
    out["calls_per_round"] = sum(r["calls"] for r in rows) / rounds
    out["final_epsilon"] = rows[-1]["epsilon"]
    return out


def _warm_imports() -> None:
    """Pay the one-off imports (dp_accounting, Opacus, torch's optimizer machinery) before
    any clock runs: a node pays them once per process, not per round."""
    import dp_accounting  # noqa: F401
    import opacus.accountants  # noqa: F401
    import torch

    torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1).step()


def measure(ledger_dir: Path, other: Path | None = None) -> dict[str, Any]:
    """Every figure of the module doc on the code this process imports; ``other``: a
    ledger folder written by another tree, audited too (old ledgers must verify)."""
    import torch

    import fedrx.dp.federated  # noqa: F401  (load every module that calls the accountant)
    from fedrx.dp.accountants import calibrate
    from fedrx.dp.audit import audit

    torch.set_num_threads(2)
    _warm_imports()
    res: dict[str, Any] = {"code": str(Path(calibrate.__file__).parents[2])}
    res["calibrate_1000"] = []
    for target, q in CALIBRATIONS:
        t = time.perf_counter()
        sigma = calibrate.calibrate_noise_multiplier(target, DELTA, q, 1000)
        res["calibrate_1000"].append({"target": target, "q": q, "sigma": sigma,
                                      "s": time.perf_counter() - t})
    clock = _Clock()
    clock.install()
    res["demo"] = _scenario("demo", 33, 128, 2, ledger_dir / "demo", clock)
    res["large"] = _scenario("large", 1000, 64, 6, ledger_dir / "large", clock)
    kind = res["demo"]["accountant"]
    t = time.perf_counter()
    _audit_ledger(ledger_dir / "audit", kind)
    res["write_audit_ledger_s"] = time.perf_counter() - t
    for name, folder in [("own", ledger_dir / "audit"), ("other", other)]:
        if folder is None:
            continue
        _cold_audit_caches()
        t = time.perf_counter()
        findings = audit(folder)
        res[f"audit_{name}_per_entry_s"] = (time.perf_counter() - t) / AUDIT_ENTRIES
        res[f"audit_{name}_findings"] = [str(f) for f in findings]
    return res


def _cold_audit_caches() -> None:
    """Each audit starts cold: no PLD left over from the other ledger's audit."""
    try:
        from fedrx.dp.accountants.independent import clear_caches
    except ImportError:  # a tree from before the incremental audit: nothing cached
        return
    clear_caches()


def _audit_ledger(run_dir: Path, kind: str) -> None:
    """A signed ledger of ``AUDIT_ENTRIES`` rounds of 25 steps at q 0.05, sigma 1.1."""
    from fedrx.dp.accountants.mechanism import Mechanism
    from fedrx.dp.ledger import PrivacyLedger
    from fedrx.secagg.identity import Identity

    led = PrivacyLedger.in_run_dir(run_dir, Identity.generate("h-audit"))
    for rnd in range(1, AUDIT_ENTRIES + 1):
        led.append(round=rnd, mechanism=Mechanism(0.05, 1.1, 25), max_grad_norm=1.0,
                   delta=DELTA, accountant=kind, model_hash=f"{rnd:064x}",
                   budget_epsilon=100.0)


def _run(code: Path | None, out: Path, ledger_dir: Path, other: Path | None = None
         ) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--json", str(out), "--ledgers", str(ledger_dir)]
    if code is not None:
        cmd += ["--code", str(code)]
    if other is not None:
        cmd += ["--also-audit", str(other)]
    subprocess.run(cmd, check=True)  # noqa: S603  (our own interpreter and script)
    return json.loads(out.read_text())


def _table(rows: dict[str, dict[str, Any]]) -> str:
    names = list(rows)
    lines = ["| figure | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]

    def add(label: str, fn: Any) -> None:
        lines.append(f"| {label} | " + " | ".join(fn(rows[n]) for n in names) + " |")

    add("default accountant", lambda r: r["demo"]["accountant"])
    for i, (target, q) in enumerate(CALIBRATIONS):
        add(f"calibration, 1,000 steps, eps {target:g}, q {q:g} (s)",
            lambda r, i=i: f"{r['calibrate_1000'][i]['s']:.2f}")
    for sc in ("demo", "large"):
        add(f"{sc}: enrolment incl. calibration (s)", lambda r, sc=sc: f"{r[sc]['enroll_s']:.2f}")
        add(f"{sc}: DP round (s)", lambda r, sc=sc: f"{r[sc]['round_s']:.3f}")
        add(f"{sc}: accountant per round (s, calls)",
            lambda r, sc=sc: f"{r[sc]['accountant_s']:.3f} ({r[sc]['calls_per_round']:g})")
        add(f"{sc}: accountant share of the round, wall",
            lambda r, sc=sc: f"{100 * r[sc]['share']:.1f}%")
        add(f"{sc}: DP round, CPU (s)", lambda r, sc=sc: f"{r[sc]['round_cpu_s']:.3f}")
        add(f"{sc}: accountant per round, CPU (s)",
            lambda r, sc=sc: f"{r[sc]['accountant_cpu_s']:.4f}")
        add(f"{sc}: accountant share of the round, CPU",
            lambda r, sc=sc: f"{100 * r[sc]['cpu_share']:.1f}%")
        add(f"{sc}: final epsilon", lambda r, sc=sc: f"{r[sc]['final_epsilon']:.3f}")
    add(f"write a {AUDIT_ENTRIES}-entry ledger (s)", lambda r: f"{r['write_audit_ledger_s']:.2f}")
    add("audit per ledger entry, own ledger (s)", lambda r: f"{r['audit_own_per_entry_s']:.3f}")
    add("audit findings, own ledger", lambda r: str(len(r["audit_own_findings"])))
    add("audit per entry, the before-tree's ledger (s)",
        lambda r: f"{r['audit_other_per_entry_s']:.3f}" if "audit_other_per_entry_s" in r else "-")
    add("audit findings, the before-tree's ledger",
        lambda r: str(len(r["audit_other_findings"])) if "audit_other_findings" in r else "-")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--code", type=Path, help="fedrx source tree to time (default: this one)")
    ap.add_argument("--compare", type=Path, help="time this older tree, then the current one")
    ap.add_argument("--json", type=Path, help="write the figures here (one tree)")
    ap.add_argument("--ledgers", type=Path, help="folder for the scenarios' run dirs")
    ap.add_argument("--also-audit", type=Path, help="audit this ledger folder too")
    args = ap.parse_args()
    if args.compare is not None:
        with tempfile.TemporaryDirectory() as tmp:
            t = Path(tmp)
            rows = {"before": _run(args.compare, t / "old.json", t / "old"),
                    "after": _run(None, t / "new.json", t / "new", t / "old" / "audit")}
        print(_table(rows))
        print(json.dumps(rows, indent=1))
        return
    if args.code is not None:
        sys.meta_path.insert(0, _Remap(args.code.resolve()))
    with tempfile.TemporaryDirectory() as tmp:
        res = measure(args.ledgers or Path(tmp), args.also_audit)
    if args.json is not None:
        args.json.write_text(json.dumps(res))
    else:
        print(_table({"this tree": res}))


if __name__ == "__main__":
    if sys.path and Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
        sys.path.pop(0)  # run as a script: the bench folder's modules must not shadow others
    main()
