"""Threshold CKKS (``--protection ckks-threshold``): no coalition of the aggregator with
fewer than t hospitals can decrypt anything but the sum.

Engine: :mod:`.engine` (the :class:`~.engine.HeEngine` interface, in-process or a supervised
worker process) over :mod:`.worker_main` (the standalone OpenFHE worker and its stdio
framing). Parameters and the flooding/precision bound: :mod:`.params`. Protocol: :mod:`.messages`
(stage messages and signed statements), :mod:`.keys` (a hospital's key share, stored 0600),
:mod:`.hospital` and :mod:`.aggregator` (one round per side). The binding to the
``Protection`` interface is :mod:`fedrx.protocol.protections.ckks_threshold`.
"""
