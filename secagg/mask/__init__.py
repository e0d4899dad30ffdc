"""Pairwise-mask secure aggregation (SecAgg / SecAgg+): messages and per-party state machines."""
