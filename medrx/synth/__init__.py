"""Seeded synthetic multi-hospital EHR in the MIMIC-III layout, for medication recommendation.

The task: predict a visit's set of ATC-3 drug classes from its ICD-9 diagnosis and
procedure codes (and the previous visit's drugs).
:func:`~fedrx.medrx.synth.writer.generate` writes, per hospital
``hosp01``, ``hosp02``, ... the four MIMIC-III tables the readers use (``ADMISSIONS``,
``DIAGNOSES_ICD``, ``PROCEDURES_ICD``, ``PRESCRIPTIONS``, real column layout, lower-case
headers), a ``mappings/`` folder in the GAMENet format (NDC -> RxCUI dict literal,
RxCUI -> ATC-4 CSV, DDI pairs, label vocabulary) and ``SYNTH.json``.

The codes come from one of two catalogues (``SynthConfig.catalogue``; ``"auto"``, the
default, takes the demo when it is found, else the built-in one):

* ``"demo"``: real codes. ICD-9 diagnoses/procedures from the MIMIC-III demo
  dictionaries (preferring codes the demo actually uses), ATC-3 labels from GAMENet's
  vocabulary and real 11-digit NDCs whose RxCUI maps (unambiguously) to those labels.
  Drug names come from the demo's PRESCRIPTIONS where the NDC occurs there, else a
  placeholder ``"Rx <atc4> <rxcui>"``.
* ``"builtin"``: SYNTHETIC codes, NOT real ones, needing no file outside the package
  (:mod:`~fedrx.medrx.synth.builtin`): ICD-9-shaped diagnosis and procedure codes, the
  ATC-3 classes of the shipped eICU drug lexicon, made-up NDCs and RxCUIs and a random
  DDI graph, all drawn from the seed. ``SYNTH.json`` then says ``"catalogue":
  "builtin: ..."``; with the demo catalogue it has no such key.

Generative model (all draws from one ``numpy.random.Generator(PCG64(seed))``):

* ``n_clusters`` latent disease clusters, each with a sparse distribution over
  diagnoses (a chapter-coherent block of codes plus common comorbidities), procedures
  and drug classes;
* each patient has 1-3 chronic clusters drawn from the hospital's case mix
  (``Dirichlet(case_mix_skew * n_clusters * popularity)``), which drift between visits
  (``drift``), plus an acute cluster per visit (probability ``acute_prob``);
* a visit's diagnoses/procedures are noisy-OR emissions of its active clusters plus
  uniform noise codes;
* its drugs are a noisy-OR of: indications of the present diagnoses and procedures (the
  strong, learnable signal), latent cluster drugs, routine ward drugs, persistence of the
  previous visit's drugs (``persistence``) and noise -- so copy-last-visit is a
  reasonable but clearly beatable baseline;
* hospital skew: sizes (``size_skew``, power law), case mix (``case_mix_skew``),
  prescribing habits (``prescribing_skew``: a hospital replaces a drug class by its own
  preferred class of the same ATC-2 therapeutic group), label propensity (``label_skew``:
  per-hospital logit shifts) and missing tables (``missing_tables``).

Generation is deterministic for a seed: the same config writes byte-identical files.

Modules: :mod:`~fedrx.medrx.synth.config` (the knobs, :class:`SynthConfig`),
:mod:`~fedrx.medrx.synth.catalogue` (the real code catalogues),
:mod:`~fedrx.medrx.synth.builtin` (the built-in synthetic one),
:mod:`~fedrx.medrx.synth.patients` (the generative model),
:mod:`~fedrx.medrx.synth.hospitals` (hospital heterogeneity),
:mod:`~fedrx.medrx.synth.layout` and :mod:`~fedrx.medrx.synth.writer` (the MIMIC-III
layout and :func:`generate`).
"""
