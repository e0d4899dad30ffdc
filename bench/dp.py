"""DP-SGD epoch time over non-private epoch time on the medication model (target <= 2.5x).

Datasets:

* ``mimic3-demo`` (if the shared open data is found): the real demo cohort, encoded as in
  centralized training (vocabulary from all its patients; fine for timing);
* ``synthetic``: a random stand-in of realistic size: 5000 visits of ~2000 patients
  (1-5 visits each), 2000 diagnosis+procedure inputs + 130 previous labels + 1, 130 labels,
  about 15 active inputs and 13 labels per visit.

One epoch: the non-private loop (:func:`fedrx.medrx.train.train_epochs`, SGD) makes one pass
with ``batch_size = B * mean visits per patient`` visits; the DP loop makes ``round(1/q)``
Poisson steps of expected ``B`` patients (same expected visits per step), including
sampling, per-patient clipping, CSPRNG noise and the optimizer step. Times are the median
of ``--repeats`` epochs after one warm-up epoch.

Usage: ``python -m fedrx.bench.dp [--repeats 3] [--threads 2] [--methods ghost,opacus]``

The federation accuracy-vs-epsilon part (test Jaccard at epsilon in {1, 3, 8} and without
DP, :func:`fedrx.bench.sweep.federation_accuracy`): ``python -m fedrx.bench.dp --federation
[--hospitals 3 --rounds 10]``; ``fedrx bench`` runs it too (``--epsilon-sweep``).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import numpy as np
import torch

from fedrx.bench.sweep import federation_accuracy, federation_accuracy_table
from fedrx.dp.dpsgd import DPConfig, PatientDPTrainer
from fedrx.dp.examples import GroupedExamples
from fedrx.medrx.features import VisitTensors, encode, input_width
from fedrx.medrx.model import MedRecMLP
from fedrx.medrx.task import per_visit_loss
from fedrx.medrx.train import train_epochs


def synthetic_visits(n_visits: int = 5000, n_codes: int = 2000, n_labels: int = 130,
                     seed: int = 0) -> VisitTensors:
    """Random multi-hot visits grouped into patients of 1-5 visits (rows sorted by patient)."""
    rng = np.random.default_rng(seed)
    counts: list[int] = []
    while sum(counts) < n_visits:
        counts.append(int(rng.integers(1, 6)))
    counts[-1] -= sum(counts) - n_visits
    counts = [c for c in counts if c > 0]
    width = n_codes + n_labels + 1
    x = np.zeros((n_visits, width), dtype=np.uint8)
    y = np.zeros((n_visits, n_labels), dtype=np.float32)
    for r in range(n_visits):
        x[r, rng.choice(n_codes, 15, replace=False)] = 1
        y[r, rng.choice(n_labels, 13, replace=False)] = 1.0
    pid = np.repeat(np.arange(len(counts)), counts)
    return VisitTensors(x, y, np.zeros_like(y), pid, len(counts))


def mimic_demo_visits() -> VisitTensors | None:
    from fedrx.errors import DataError
    from fedrx.medrx.datasets import load_dataset
    from fedrx.medrx.vocab import build_vocabulary

    try:
        cohort = load_dataset("mimic3-demo")
    except DataError:
        return None
    vocab = build_vocabulary(cohort.patients)
    data = encode(cohort.patients, vocab)
    assert data.x.shape[1] == input_width(vocab)
    return data


def _time_epoch(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def bench(data: VisitTensors, batch_patients: int, repeats: int, methods: list[str],
          secure: bool = True) -> dict[str, float]:
    n_in, n_lab = data.x.shape[1], data.y.shape[1]
    vpp = len(data) / data.n_patients
    batch_visits = max(1, round(batch_patients * vpp))
    torch.manual_seed(0)
    model = MedRecMLP(n_in, n_lab)
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    gen = torch.Generator().manual_seed(0)
    out = {"visits": len(data), "patients": data.n_patients, "inputs": n_in,
           "labels": n_lab, "B": batch_patients, "batch_visits": batch_visits}
    out["nondp_s"] = _time_epoch(lambda: train_epochs(model, data, epochs=1,
                                                      batch_size=batch_visits, optimizer=opt,
                                                      generator=gen), repeats)
    steps = max(1, round(data.n_patients / batch_patients))
    for m in methods:
        cfg = DPConfig(target_epsilon=3.0, max_grad_norm=1.0,
                       expected_batch_patients=batch_patients, secure_noise=secure,
                       seed=None if secure else 0, method=m)
        examples = GroupedExamples(torch.from_numpy(data.x), torch.from_numpy(data.y),
                                   data.patient, data.n_patients, torch.float32)
        tr = PatientDPTrainer(model, per_visit_loss, examples, cfg, noise_multiplier=1.0)
        out[f"dp_{m}_s"] = _time_epoch(lambda tr=tr: tr.train_steps(steps, lr=0.05), repeats)
        out[f"ratio_{m}"] = out[f"dp_{m}_s"] / out["nondp_s"]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--methods", default="ghost,opacus")
    ap.add_argument("--batch-patients", type=int, default=32)
    ap.add_argument("--insecure-noise", action="store_true",
                    help="time with the seeded torch generator instead of ChaCha20")
    ap.add_argument("--federation", action="store_true",
                    help="instead: test Jaccard of the federation at epsilon 1, 3, 8 and no DP")
    ap.add_argument("--hospitals", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=10)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.federation:
        with tempfile.TemporaryDirectory() as tmp:
            rows = federation_accuracy(hospitals=args.hospitals, rounds=args.rounds,
                                             out=tmp)
        print(federation_accuracy_table(rows))
        return
    methods = [m for m in args.methods.split(",") if m]
    rows = []
    demo = mimic_demo_visits()
    if demo is not None:
        rows.append(("mimic3-demo", bench(demo, min(args.batch_patients, demo.n_patients // 3),
                                          args.repeats, methods, not args.insecure_noise)))
    else:
        print("mimic3-demo not found (set FEDRX_DATA_ROOT); skipping it")
    rows.append(("synthetic-5000", bench(synthetic_visits(), args.batch_patients, args.repeats,
                                         methods, not args.insecure_noise)))
    head = ["dataset", "visits", "patients", "inputs", "labels", "B", "non-DP s"]
    for m in methods:
        head += [f"DP {m} s", f"ratio {m}"]
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for name, r in rows:
        cells = [name, r["visits"], r["patients"], r["inputs"], r["labels"], r["B"],
                 f"{r['nondp_s']:.3f}"]
        for m in methods:
            cells += [f"{r[f'dp_{m}_s']:.3f}", f"{r[f'ratio_{m}']:.2f}x"]
        print("| " + " | ".join(str(c) for c in cells) + " |")


if __name__ == "__main__":
    main()
