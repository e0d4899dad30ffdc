"""Assign patients to federation hospitals.

* Single-site data (the MIMIC-III demo) is split into ``n`` simulated hospitals
  ``h1..hn`` by a seeded shuffle of patients: ``iid`` (equal sizes) or ``skew`` (sizes
  proportional to ``1/i``, like real consortia with one large and many small sites).
* Multi-site data (eICU, ``fedrx data synth`` output) keeps its REAL hospitals. Sites
  with fewer than ``min_patients`` patients are merged, smallest first, into groups named
  ``group-<first>-and-<k>``. If ``n`` is given and smaller than the number of sites, the
  two smallest are merged repeatedly until ``n`` remain, so no patient is thrown away;
  ``n`` larger than the number of sites is an error.

``min_patients`` is at least 1. ``min_patients = 1`` (with ``n`` None) merges nothing: every
site that has a patient is its own hospital, however small, and no ``group-...`` name
appears. A site of 1 or 2 patients trains on all of them and has no validation or test
patient (:func:`fedrx.medrx.prepare.split_hospital`); its evaluation reports zero-count
metric sums, which add nothing to the pooled (count-weighted) metrics. A site with no
patient left after the cohort's filters (e.g. an eICU site that records no medication) is
not in the cohort, so it is no hospital and nothing is merged for it.
"""

from __future__ import annotations

import hashlib
import re

import numpy as np

from fedrx.errors import ConfigError
from fedrx.medrx.records import Cohort, Patient

_SAFE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


def _rng(seed: int, tag: str) -> np.random.Generator:
    d = hashlib.sha256(f"{tag}:{seed}".encode()).digest()
    return np.random.default_rng(int.from_bytes(d[:8], "big"))


def _relabel(patients: list[Patient], hospital: str) -> list[Patient]:
    return [Patient(p.patient_id, hospital, p.visits) for p in patients]


def partition(cohort: Cohort, n: int | None, *, seed: int = 0, scheme: str = "iid",
              min_patients: int = 20) -> dict[str, list[Patient]]:
    """Hospital id -> its patients. Every patient goes to exactly one hospital; every
    hospital has at least one patient (module doc: ``min_patients``, merging)."""
    if n is not None and n < 1:
        raise ConfigError(f"--hospitals must be >= 1, got {n}")
    if min_patients < 1:
        raise ConfigError(f"--min-patients must be >= 1, got {min_patients}")
    if scheme not in ("iid", "skew"):
        raise ConfigError(f"unknown partition scheme {scheme!r} (iid or skew)")
    sites = cohort.by_hospital()
    if len(sites) == 1:
        n = n or 1
        pats = sorted(next(iter(sites.values())), key=lambda p: p.patient_id)
        if n > len(pats) // 3:
            raise ConfigError(f"{cohort.name} has {len(pats)} patients: too few for {n} "
                              f"hospitals (need >= 3 patients per hospital)")
        order = _rng(seed, "partition").permutation(len(pats))
        if scheme == "iid":
            cuts = np.linspace(0, len(pats), n + 1).round().astype(int)
        else:
            w = 1.0 / np.arange(1, n + 1)
            sizes = np.maximum(3, np.floor(w / w.sum() * len(pats))).astype(int)
            sizes[0] += len(pats) - sizes.sum()
            cuts = np.r_[0, np.cumsum(sizes)]
        return {f"h{i + 1}": _relabel([pats[j] for j in order[cuts[i]:cuts[i + 1]]],
                                      f"h{i + 1}") for i in range(n)}
    # multi-site: merge tiny sites, then merge down to n
    groups: list[tuple[str, list[Patient]]] = sorted(
        ((h, list(p)) for h, p in sites.items()), key=lambda t: (len(t[1]), t[0]))
    big = [g for g in groups if len(g[1]) >= min_patients]
    small = [g for g in groups if len(g[1]) < min_patients]
    merged: list[tuple[str, list[Patient]]] = []
    cur: list[tuple[str, list[Patient]]] = []
    for g in small:
        cur.append(g)
        if sum(len(x[1]) for x in cur) >= min_patients:
            merged.append(_merge(cur))
            cur = []
    if cur:
        if merged:
            merged[-1] = _merge([merged[-1], *cur])
        elif big:
            big[0] = _merge([big[0], *cur])
        else:
            merged.append(_merge(cur))
    groups = sorted(big + merged, key=lambda t: (len(t[1]), t[0]))
    if n is not None:
        if n > len(groups):
            raise ConfigError(f"{cohort.name} has {len(groups)} hospitals with >= "
                              f"{min_patients} patients (after merging small ones); "
                              f"asked for {n}")
        while len(groups) > n:
            a, b, *rest = groups
            groups = sorted([*rest, _merge([a, b])], key=lambda t: (len(t[1]), t[0]))
    return {h: _relabel(p, h) for h, p in sorted(groups)}


def _merge(parts: list[tuple[str, list[Patient]]]) -> tuple[str, list[Patient]]:
    if len(parts) == 1:
        return parts[0]
    names = sorted(p[0] for p in parts)
    # a hospital id is a file name everywhere (ledger, identity, certificates): only
    # [A-Za-z0-9._-], at most 64 characters
    name = f"group-{names[0]}-and-{len(names) - 1}"
    if not _SAFE_ID.match(name):  # a long or unusual site name: a stable digest instead
        name = "group-" + hashlib.sha256("\0".join(names).encode()).hexdigest()[:16]
    return name, [pt for _, ps in parts for pt in ps]
