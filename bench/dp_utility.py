"""Utility of patient-level DP on the medication task: local vs distributed vs central DP.

Rows (test Jaccard of the FINAL global model, pooled over the hospitals' test patients, seed
0, the same split and vocabulary for every row):

* ``no DP``: ``fedrx simulate`` without DP (10 rounds of local training);
* ``local``: ``fedrx simulate --dp on`` (every hospital runs DP-SGD on its own patients and
  adds its own full noise; 10 rounds);
* ``distributed``: ``fedrx simulate --dp distributed --protection mask`` (every round ONE
  DP-SGD step of the whole federation, discrete Gaussian shares for ``k`` colluding or
  missing hospitals; ``ceil(epochs / q)`` steps = the same expected passes over the data as
  10 rounds of one local epoch);
* ``central``: the reference, DP-SGD on the POOLED training patients by one trusted party:
  the same sampling rate, steps, clipping norm, calibrated sigma and server optimizer as the
  distributed row, continuous Gaussian noise ``N(0, (sigma C)^2)`` added once
  (:func:`central_dp`, no secure aggregation, no shares).

Usage::

    python -m fedrx.bench.dp_utility --data PATH_OR_NAME [--hospitals N] [--eps 1,3,8]
        [--rows nodp,local,distributed,central] [--k 1] [--out runs/dp-utility]

It prints one Markdown table (and writes it with the raw figures as JSON to ``--out``).
"""

from __future__ import annotations

import argparse
import json
import math
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fedrx.dp.accountants.calibrate import calibrate_noise_multiplier
from fedrx.dp.accountants.mechanism import default_delta
from fedrx.dp.accountants.registry import DEFAULT_ACCOUNTANT
from fedrx.dp.clipping import CLIPPED_SUMS, choose_method
from fedrx.dp.noise import make_noise_source
from fedrx.medrx.prepare import prepare
from fedrx.medrx.task import DP_DEFAULTS, per_visit_loss
from fedrx.nodes.simulate import SimulationConfig, run_simulation
from fedrx.protocol.optim import ServerOptimizer
from fedrx.protocol.task import derive_seed

EPOCHS = 10  # "10 rounds-equivalent": rounds of one local epoch, or steps making 10 passes


def base_config(data: str, hospitals: int | None, out: str) -> SimulationConfig:
    return SimulationConfig(data=data, hospitals=hospitals, rounds=EPOCHS, seed=0, out=out,
                            personalize=False, budget_store="off",
                            accountant=DEFAULT_ACCOUNTANT)


def distributed_config(cfg: SimulationConfig, eps: float, n_patients: int, k: int,
                       protection: str = "mask") -> SimulationConfig:
    """The DP-aware distributed settings of :data:`fedrx.medrx.task.DP_DEFAULTS`."""
    q = DP_DEFAULTS["dp_sample_rate"]
    steps = math.ceil(EPOCHS / q)
    return replace(cfg, dp=True, dp_mode="distributed", dp_k=k, epsilon=eps,
                   protection=protection, rounds=steps, dp_sample_rate=q,
                   eval_every=DP_DEFAULTS["eval_every"], hidden=DP_DEFAULTS["hidden"],
                   max_grad_norm=DP_DEFAULTS["max_grad_norm"],
                   server_optimizer=DP_DEFAULTS["server_optimizer"],
                   server_lr=DP_DEFAULTS["server_lr"])


def central_dp(cfg: SimulationConfig, *, seed: int = 0) -> dict[str, float]:
    """DP-SGD on the pooled training patients of ``cfg``'s split (see module doc): returns
    the pooled test metrics of the final model and the sigma used."""
    prep = prepare(cfg)
    task = prep.task
    n = sum(d.train.n_patients for d in prep.hospitals.values())
    q = cfg.dp_sample_rate or min(1.0, cfg.dp_batch / n)
    delta = cfg.delta if cfg.delta is not None else default_delta(n)
    sigma = calibrate_noise_multiplier(cfg.epsilon, delta, q, cfg.rounds, cfg.accountant)
    noise = make_noise_source(False, seed)
    torch.manual_seed(derive_seed("central", seed))
    weights = task.initial_weights(cfg.seed)
    opt = ServerOptimizer(cfg.server_optimizer, lr=cfg.server_lr)
    model = task.new_model()
    method = choose_method(model, "auto")
    for _ in range(cfg.rounds):
        task.load(model, weights)
        model.train()
        total = None
        for data in prep.hospitals.values():
            t = data.train
            patients = np.flatnonzero(noise.uniform(t.n_patients) < q)
            if len(patients) == 0:
                continue
            starts = np.searchsorted(t.patient, np.arange(t.n_patients + 1))
            rows = np.concatenate([np.arange(starts[p], starts[p + 1]) for p in patients])
            local = np.repeat(np.arange(len(patients)), starts[patients + 1] - starts[patients])
            x = torch.from_numpy(t.x[rows]).float()
            y = torch.from_numpy(t.y[rows])
            sums, _ = CLIPPED_SUMS[method](model, per_visit_loss, x, y, torch.from_numpy(local),
                                           len(patients), cfg.max_grad_norm)
            flat = torch.cat([sums[k].detach().reshape(-1) for k, _ in
                              model.named_parameters()]).double()
            total = flat if total is None else total + flat
        if total is None:
            total = torch.zeros(task.spec.size, dtype=torch.float64)
        total += noise.normal((total.numel(),), sigma * cfg.max_grad_norm)
        weights = opt.step(weights, -total.numpy() / (q * n))
    sums = [{"global": task.evaluate(weights, d, "test").as_dict()}
            for d in prep.hospitals.values()]
    return task.pool_metrics(sums) | {"sigma": sigma, "q": q, "steps": cfg.rounds}


def _final(doc: dict[str, Any]) -> dict[str, float]:
    for r in reversed(doc["rounds"]):
        if r.get("metrics"):
            return r["metrics"]
    return {}


def run_row(row: str, cfg: SimulationConfig, eps: float, n_patients: int,
            k: int) -> dict[str, Any]:
    t0 = time.perf_counter()
    out = f"{cfg.out}/{row}-eps{eps:g}"
    if row == "nodp":
        doc = run_simulation(replace(cfg, out=out))
        res = _final(doc)
    elif row == "local":
        doc = run_simulation(replace(cfg, out=out, dp=True, epsilon=eps))
        res = _final(doc)
    elif row == "distributed":
        dcfg = distributed_config(cfg, eps, n_patients, k)
        doc = run_simulation(replace(dcfg, out=out))
        res = _final(doc) | {"epsilon": max(d["epsilon"] for d in doc["dp"].values()),
                             "steps": dcfg.rounds}
    elif row == "central":
        res = central_dp(distributed_config(cfg, eps, n_patients, k))
    else:
        raise SystemExit(f"unknown row {row!r}")
    return res | {"seconds": time.perf_counter() - t0}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True)
    ap.add_argument("--hospitals", type=int, default=None)
    ap.add_argument("--eps", default="1,3,8")
    ap.add_argument("--rows", default="nodp,local,distributed,central")
    ap.add_argument("--k", type=int, default=1)
    ap.add_argument("--out", default="runs/dp-utility")
    a = ap.parse_args(argv)
    cfg = base_config(a.data, a.hospitals, a.out)
    prep = prepare(cfg)
    n_patients = sum(d.train.n_patients for d in prep.hospitals.values())
    epsilons = [float(e) for e in a.eps.split(",")]
    results: dict[str, dict[str, Any]] = {}
    for row in a.rows.split(","):
        for eps in ([0.0] if row == "nodp" else epsilons):
            res = run_row(row, cfg, eps, n_patients, a.k)
            results[f"{row}/{eps:g}"] = res
            print(f"{row} eps={eps:g}: jaccard {res.get('jaccard', float('nan')):.4f} "
                  f"({res['seconds']:.0f} s)", flush=True)
    Path(a.out).mkdir(parents=True, exist_ok=True)
    (Path(a.out) / "dp_utility.json").write_text(json.dumps(results, indent=1, sort_keys=True))
    print(table(results, epsilons))


def table(results: dict[str, dict[str, Any]], epsilons: list[float]) -> str:
    head = "| row | " + " | ".join(f"eps {e:g}" for e in epsilons) + " |"
    lines = [head, "|---" * (len(epsilons) + 1) + "|"]
    for row in ("local", "distributed", "central"):
        cells = [results.get(f"{row}/{e:g}", {}).get("jaccard") for e in epsilons]
        if any(c is not None for c in cells):
            lines.append(f"| {row} | " + " | ".join("-" if c is None else f"{c:.4f}"
                                                    for c in cells) + " |")
    nodp = results.get("nodp/0", {}).get("jaccard")
    if nodp is not None:
        lines.append("| no DP | " + " | ".join(f"{nodp:.4f}" for _ in epsilons) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
