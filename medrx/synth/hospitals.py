"""Hospital heterogeneity: sizes (``size_skew``), case mix (``case_mix_skew``), label
propensity (``label_skew``) and prescribing habits (``prescribing_skew``) of each
synthetic hospital (see :class:`~fedrx.medrx.synth.config.SynthConfig`)."""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass

import numpy as np

from fedrx.medrx.synth.catalogue import Sources
from fedrx.medrx.synth.config import MIN_PATIENTS_PER_HOSPITAL, SynthConfig


def hospital_sizes(cfg: SynthConfig) -> list[int]:
    h = cfg.hospitals
    w = np.arange(1, h + 1, dtype=float) ** -cfg.size_skew
    w /= w.sum()
    spare = cfg.patients - h * MIN_PATIENTS_PER_HOSPITAL
    raw = spare * w
    sizes = np.floor(raw).astype(int)
    rem = spare - int(sizes.sum())
    order = np.argsort(-(raw - sizes), kind="stable")
    sizes[order[:rem]] += 1
    return [int(s) + MIN_PATIENTS_PER_HOSPITAL for s in sizes]


@dataclass
class Hospital:
    case_mix: np.ndarray  # (C,)
    shift: np.ndarray  # (L,) logit shifts
    subst: np.ndarray  # (L,) label -> recorded label
    ndc_pref: np.ndarray  # (L,) preferred drug index per label


def build_hospitals(rng: np.random.Generator, cfg: SynthConfig, cluster_pop: np.ndarray,
                    src: Sources) -> list[Hospital]:
    n_l = len(src.labels)
    groups: dict[str, list[int]] = defaultdict(list)
    for i, lab in enumerate(src.labels):
        groups[lab[:3]].append(i)
    out = []
    for _ in range(cfg.hospitals):
        if math.isinf(cfg.case_mix_skew):
            mix = cluster_pop.copy()
        else:
            alpha = cfg.case_mix_skew * cfg.n_clusters * cluster_pop
            mix = rng.dirichlet(np.maximum(alpha, 1e-3))
            mix = np.maximum(mix, 1e-12)
            mix /= mix.sum()
        shift = rng.normal(0.0, 1.0, size=n_l) * cfg.label_skew
        subst = np.arange(n_l)
        sources: set[int] = set()
        targets: set[int] = set()
        for li in rng.permutation(n_l).tolist():
            alts = [a for a in groups[src.labels[li][:3]]
                    if a != li and a not in sources and a not in targets]
            if li in targets or not alts or rng.random() >= cfg.prescribing_skew:
                continue
            a = int(rng.choice(alts))
            subst[li] = a
            sources.add(li)
            targets.add(a)
        pref = np.array([int(rng.integers(len(d))) for d in src.drugs])
        out.append(Hospital(mix, shift, subst, pref))
    return out
