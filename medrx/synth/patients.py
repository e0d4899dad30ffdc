"""The generative model of patients and visits (see :mod:`fedrx.medrx.synth`): latent
disease clusters emitting diagnoses, procedures and drug classes, chronic clusters that
drift, acute clusters, indications, routine drugs and persistence of the previous
visit's drugs. Probabilities are kept as ``log(1 - p)`` so noisy-OR is a matrix product.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from fedrx.medrx.synth.catalogue import Sources
from fedrx.medrx.synth.config import SynthConfig
from fedrx.medrx.synth.hospitals import Hospital

# Routine ward drug classes (MIMIC's most frequent ATC-3 labels), used when available.
_ROUTINE = ("N02B", "A02B", "B01A", "A06A", "N02A", "C07A", "A04A", "C03C", "N05B", "J01D")


@dataclass
class Model:
    dx_logq: np.ndarray  # (C, D) log(1 - P[dx | cluster])
    px_logq: np.ndarray  # (C, P)
    ind_dx: np.ndarray  # (D, L) log(1 - P[drug | dx])
    ind_px: np.ndarray  # (P, L)
    clus_drug: np.ndarray  # (C, L)
    base: np.ndarray  # (L,) log(1 - P[routine / background drug])
    dx_pop: np.ndarray  # (D,) noise distribution
    px_pop: np.ndarray
    lab_pop: np.ndarray
    cluster_pop: np.ndarray  # (C,)


def build_model(rng: np.random.Generator, cfg: SynthConfig, src: Sources) -> Model:
    n_c, n_d, n_p, n_l = cfg.n_clusters, len(src.dx_codes), len(src.px_codes), len(src.labels)
    dx_pop = np.asarray(src.dx_freq)
    dx_pop = dx_pop / dx_pop.sum()
    lab_pop = np.asarray(src.label_freq) ** 0.4  # flattened: real usage is very skewed
    lab_pop = lab_pop / lab_pop.sum()
    px_pop = 1.0 / np.arange(1, n_p + 1) ** 0.7
    px_pop /= px_pop.sum()
    common = np.argsort(-dx_pop, kind="stable")[:30]
    by_code = np.argsort(np.asarray(src.dx_codes), kind="stable")  # chapter order
    p_dx = np.zeros((n_c, n_d))
    p_px = np.zeros((n_c, n_p))
    k_drug = np.zeros((n_c, n_l))
    owner_drugs: list[np.ndarray] = []
    for c in range(n_c):
        # Chapter-coherent block of codes plus a few common comorbidities.
        width = min(int(rng.integers(6, 10)), n_d // 3)
        start = int(rng.integers(0, n_d - 2 * width + 1))
        block = by_code[start : start + 2 * width]
        core = rng.choice(block, size=width, replace=False)
        comorb = rng.choice(common, size=int(rng.integers(2, 5)), replace=False)
        p_dx[c, core] = rng.beta(1.2, 3.0, size=core.size) * 0.8 + 0.05
        p_dx[c, core[:2]] = rng.uniform(0.6, 0.9, size=2)  # defining codes
        p_dx[c, comorb] = np.maximum(p_dx[c, comorb], rng.uniform(0.1, 0.35, comorb.size))
        pxs = rng.choice(n_p, size=int(rng.integers(2, 6)), replace=False, p=px_pop)
        p_px[c, pxs] = rng.uniform(0.1, 0.5, size=pxs.size)
        drugs = rng.choice(n_l, size=int(rng.integers(6, 10)), replace=False, p=lab_pop)
        owner_drugs.append(drugs)
        k_drug[c, drugs[:3]] = rng.uniform(0.1, 0.3, size=3)  # latent, not explained by codes
    # Indications: each diagnosis/procedure triggers 0-2 drug classes of a cluster using it.
    ind_dx = np.zeros((n_d, n_l))
    for d in range(n_d):
        users = np.flatnonzero(p_dx[:, d] > 0)
        if users.size == 0:
            if rng.random() < 0.3:
                ind_dx[d, rng.choice(n_l, p=lab_pop)] = rng.uniform(0.3, 0.7)
            continue
        for c in rng.choice(users, size=min(users.size, 2), replace=False):
            k = 1 + int(rng.random() < 0.4)
            labs = rng.choice(owner_drugs[c], size=k, replace=False)
            ind_dx[d, labs] = np.maximum(ind_dx[d, labs], rng.uniform(0.35, 0.75, size=k))
    ind_px = np.zeros((n_p, n_l))
    periop = rng.choice(n_l, size=6, replace=False, p=lab_pop)
    for p in range(n_p):
        users = np.flatnonzero(p_px[:, p] > 0)
        pool = owner_drugs[int(users[0])] if users.size else periop
        labs = np.unique(np.concatenate([
            rng.choice(pool, size=1), rng.choice(periop, size=int(rng.integers(0, 2)))
        ]))
        ind_px[p, labs] = rng.uniform(0.35, 0.7, size=labs.size)
    base = np.full(n_l, 0.004)
    routine = [src.labels.index(x) for x in _ROUTINE if x in src.labels]
    if len(routine) < 5:
        routine += [int(i) for i in np.argsort(-lab_pop, kind="stable")[:8] if i not in routine]
    routine = routine[:8]
    base[routine] = rng.uniform(0.15, 0.45, size=len(routine))
    cluster_pop = rng.dirichlet(np.full(n_c, 2.0))
    with np.errstate(divide="ignore"):
        return Model(
            np.log1p(-p_dx), np.log1p(-p_px), np.log1p(-ind_dx), np.log1p(-ind_px),
            np.log1p(-k_drug), np.log1p(-base), dx_pop, px_pop, lab_pop, cluster_pop,
        )


def _gumbel_pick(rng: np.random.Generator, logp: np.ndarray, exclude: np.ndarray) -> np.ndarray:
    """One category per row from rows of log-probabilities, never an excluded one."""
    g = logp - np.log(-np.log(rng.random(logp.shape)))
    g[exclude] = -np.inf
    return np.argmax(g, axis=1)


def _noise(rng: np.random.Generator, mat: np.ndarray, mean: float, pop: np.ndarray) -> None:
    counts = np.asarray(rng.poisson(mean, size=mat.shape[0]))
    total = int(counts.sum())
    if total:
        rows = np.repeat(np.arange(mat.shape[0]), counts)
        mat[rows, rng.choice(mat.shape[1], size=total, p=pop)] = True


def simulate_visits(rng: np.random.Generator, cfg: SynthConfig, model: Model,
              hosps: list[Hospital], hosp_of: np.ndarray, n_visits: np.ndarray
              ) -> list[list[tuple[np.ndarray, np.ndarray, np.ndarray]]]:
    """Per patient, per visit: (dx indices, px indices, label indices), vectorised by step."""
    n = hosp_of.size
    n_c = cfg.n_clusters
    log_mix = np.log(np.stack([h.case_mix for h in hosps]))[hosp_of]  # (N, C)
    shift = np.stack([h.shift for h in hosps])
    # Chronic clusters: 1-3 per patient, drawn without replacement from the case mix.
    k = rng.choice(3, size=n, p=[0.6, 0.3, 0.1]) + 1
    chronic = np.zeros((n, n_c), dtype=bool)
    for j in range(3):
        pick = _gumbel_pick(rng, log_mix, chronic)
        rows = np.flatnonzero(k > j)
        chronic[rows, pick[rows]] = True
    prev = np.zeros((n, len(model.base)), dtype=bool)
    out: list[list[tuple[np.ndarray, np.ndarray, np.ndarray]]] = [[] for _ in range(n)]
    log_persist = math.log1p(-cfg.persistence) if cfg.persistence < 1 else -50.0
    for t in range(int(n_visits.max())):
        idx = np.flatnonzero(n_visits > t)
        m = idx.size
        if t > 0:  # drift: replace one chronic cluster by a new draw from the case mix
            drift = idx[rng.random(m) < cfg.drift]
            if drift.size:
                sub = chronic[drift]
                g = np.where(sub, rng.random(sub.shape), -1.0)
                drop = np.argmax(g, axis=1)
                new = _gumbel_pick(rng, log_mix[drift], sub)
                chronic[drift, drop] = False
                chronic[drift, new] = True
        active = chronic[idx].copy()
        u = rng.random(m)
        for cut in (cfg.acute_prob, 0.4 * cfg.acute_prob):  # 0-2 acute clusters
            acute_rows = np.flatnonzero(u < cut)
            if acute_rows.size:
                acute = _gumbel_pick(rng, log_mix[idx[acute_rows]], active[acute_rows])
                active[acute_rows, acute] = True
        act = active.astype(float)
        p_dx = -np.expm1(act @ model.dx_logq)
        dx = rng.random(p_dx.shape) < p_dx
        _noise(rng, dx, cfg.noise_diagnoses, model.dx_pop)
        empty = ~dx.any(axis=1)
        dx[empty, np.argmax(p_dx[empty], axis=1)] = True
        p_px = -np.expm1(act @ model.px_logq)
        px = rng.random(p_px.shape) < p_px
        _noise(rng, px, cfg.noise_procedures, model.px_pop)
        empty = ~px.any(axis=1)
        px[empty, np.argmax(p_px[empty], axis=1)] = True
        logq = (dx.astype(float) @ model.ind_dx + px.astype(float) @ model.ind_px
                + act @ model.clus_drug + model.base + prev[idx] * log_persist)
        p = np.clip(-np.expm1(logq), 1e-6, 1 - 1e-6)
        logit = np.log(p) - np.log1p(-p) + shift[hosp_of[idx]]
        p = 1.0 / (1.0 + np.exp(-logit))
        drugs = rng.random(p.shape) < p
        _noise(rng, drugs, cfg.noise_labels, model.lab_pop)
        empty = ~drugs.any(axis=1)
        drugs[empty, np.argmax(p[empty], axis=1)] = True
        recorded = np.zeros_like(drugs)
        for h, hosp in enumerate(hosps):
            rows = np.flatnonzero(hosp_of[idx] == h)
            if rows.size:
                sub = drugs[rows]
                rec = np.zeros_like(sub)
                r, c = np.nonzero(sub)
                rec[r, hosp.subst[c]] = True
                recorded[rows] = rec
        prev[idx] = recorded
        for j, i in enumerate(idx.tolist()):
            d = np.flatnonzero(dx[j])
            out[i].append((rng.permutation(d), np.flatnonzero(px[j]),
                           np.flatnonzero(recorded[j])))
    return out
