"""``fedrx bench`` (:mod:`fedrx.bench.run`): the price of each protection level, side by side,
and how it scales. Only the CLI (``fedrx bench``) imports this package; nothing in the
federation does.

Three parts, one process, one output folder ``OUT``:

1. **Arms** (:mod:`~fedrx.bench.arms`). Every (protection x DP) arm runs
   :func:`fedrx.nodes.simulate.run_simulation` on the SAME data split, vocabulary, initial
   model and seed (``OUT/arms/<arm>/``). Per round: utility (Jaccard, PRAUC, F1, DDI rate
   of the global model on the pooled test patients), epsilon (DP arms: the largest over
   hospitals), bytes up and down per hospital (the transport's per-stage payload
   accounting, :func:`fedrx.protocol.transport.payload_bytes`), round wall time, hospital
   and aggregator CPU time and the process's peak memory (see "What is measured").
2. **Micro-benchmarks** (:mod:`~fedrx.bench.micro`) of the hot paths against this
   machine's floors, measured in the same run: mask expansion and raw AES-256-CTR, modular
   addition and a numpy uint64 add, bit packing and the same add floor, CKKS
   encrypt/decrypt against AES-CTR of the float32 update and CKKS add against a float64
   numpy add (:mod:`~fedrx.bench.masking`, :mod:`~fedrx.bench.ckks`).
3. **Scaling** (:mod:`~fedrx.bench.scaling`): masking (complete graph and SecAgg+'s
   k-regular Harary graph) and CKKS aggregation as hospitals grow (small model) and as the
   model grows (fixed hospitals), and the aggregator's peak memory against model size.

Stand-alone scripts: ``python -m fedrx.bench.masking``, ``python -m fedrx.bench.ckks``,
``python -m fedrx.bench.dp`` and ``python -m fedrx.bench.deploy`` (see their docstrings).

What is measured
----------------
* ``round_s``: wall time of one round (train, protection stages, update, evaluation).
  ``s_per_round`` excludes the evaluation stage (identical in every arm and inflated in
  the last round by personalisation); both are in ``results.json``.
* CPU time: ``time.process_time`` (all threads of this process, so torch's intra-op
  threads count), measured by :class:`~fedrx.bench.metering.MeteredTransport`, a wrapper
  around the simulation's in-process transport (nothing is patched): it delivers each
  hospital's request of a stage on its own and times it (attributed to that hospital and
  stage), and times the round from its first exchange to the end of the round (the
  transport's ``take_stats``). Aggregator CPU = round CPU minus all hospital CPU of the
  round. Hospitals run one after another in this process, so the split is exact.
* Peak memory per arm: the process's peak RSS (Linux ``VmHWM``, reset through
  ``/proc/self/clear_refs`` before each arm, freed heap trimmed first;
  :mod:`~fedrx.bench.memory`). It covers every hospital, the aggregator, the data and
  torch together. Where the reset is not possible it falls back to ``ru_maxrss``
  (monotone over the whole run; flagged in the output).
* ``--backend ray``: hospitals run in Ray actors, so hospital CPU is not measured ("n/a"):
  :class:`~fedrx.bench.ray_bench.DriverMeteredTransport` hands each stage to the Ray
  transport whole (one-at-a-time delivery would serialise the actors), aggregator CPU is
  the driver's process CPU (aggregator, wire codec, Ray client threads) and peak memory is
  the driver's peak RSS; bytes are the wire codec's.
* Bytes: per round, the sum over stages of request (down) and reply (up) payload bytes,
  divided by the round's participants; ``protection`` variants exclude the train and
  evaluate stages (the model download and metric sums, the same in every arm).
* Aggregator memory in the scaling part: masking, tracemalloc over the aggregator's own
  calls (numpy buffers are traced; replies handed to it are the transport's and not
  counted); CKKS, a FRESH process per point (SEAL pools freed memory) reporting the growth
  of peak RSS while adding n uploads, the ciphertexts retained and the whole process's
  peak RSS.
"""
