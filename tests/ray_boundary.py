"""What crosses a Ray actor boundary, recorded, and each actor's secrets, fetched test-only.

:class:`BoundaryWatch` wraps the driver's only two doors into the actors
(:func:`fedrx.nodes.ray_transport.call_actor`, :func:`~fedrx.nodes.ray_transport.fetch`,
both as the transport and the backend see them): every argument sent and every value
received is kept. Before round 1 it installs probes INSIDE every actor (through Ray's
``__ray_call__``, test only) that keep each hospital's protected input (the update with its
DP noise, before masking), its quantised ring encoding (raw, and bit-packed the way a
``MaskedInput`` carries its masked vector), every noise draw (the Gaussian of
DP-SGD, the discrete Gaussian of distributed DP) and every masking secret of the round (the
two X25519 private keys of ``advertise_keys``, the self-mask seed ``b`` of ``share_keys``);
before the actors are killed it fetches
those and the hospitals' private keys (identity, ledger signing key) and encoded records.
:meth:`BoundaryWatch.check` then asserts that none of them, raw or hex/base64, occurs in
anything that crossed, and that every byte string that crossed is a wire-codec protocol
message and every JSON text a public document.
"""

from __future__ import annotations

import base64
import dataclasses
import json
from typing import Any

import numpy as np
import ray

from fedrx.nodes import codec, ray_backend, ray_transport
from fedrx.nodes.ray_privacy import FIGURES
from fedrx.nodes.simulate import SimulationConfig

PRIVATE_TYPES = {"Identity", "HospitalData", "Patient", "Visit", "Ed25519PrivateKey",
                 "X25519PrivateKey", "HospitalDP", "DistributedDP", "PrivacyLedger",
                 "PreQuantised"}
"""No decoded message may hold one of these."""
WINDOW = 256
"""Bytes of a long secret vector also searched on their own (a partial leak)."""


def walk(obj: Any, seen_types: set[str]):
    """Every value inside a decoded protocol message (dataclasses, containers)."""
    seen_types.add(type(obj).__name__)
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        for f in dataclasses.fields(obj):
            yield from walk(getattr(obj, f.name), seen_types)
    elif isinstance(obj, dict):
        for k, v in obj.items():
            yield from walk(k, seen_types)
            yield from walk(v, seen_types)
    elif isinstance(obj, list | tuple):
        for v in obj:
            yield from walk(v, seen_types)
    else:
        yield obj


def _probes():
    """The two functions run inside an actor; nested so that Ray ships them by value (this
    module is not importable in a worker)."""

    def install(worker):
        """Keep every protected input, its ring encoding and every noise draw."""
        import numpy as np

        import fedrx.dp.distributed.hospital as dd
        import fedrx.dp.noise as noise
        import fedrx.secagg.bitpack as bitpack
        import fedrx.secagg.quantize as quantize

        cap = worker.__dict__.setdefault("_test_capture", {"input": [], "encoded": [],
                                                           "packed": [], "noise": [],
                                                           "mask_secret": []})
        import os as real_os

        import fedrx.secagg.kex as kex
        import fedrx.secagg.mask.client_shares as client_shares

        real_keypair = kex.generate_keypair

        def keypair():  # the round's X25519 secrets (share encryption, pairwise masks)
            sk, pk = real_keypair()
            cap["mask_secret"].append(kex.private_bytes(sk))
            return sk, pk

        class _Os:  # the self-mask seed b, drawn in share_keys
            def __getattr__(self, name):
                return getattr(real_os, name)

            @staticmethod
            def urandom(n):
                out = real_os.urandom(n)
                cap["mask_secret"].append(out)
                return out

        kex.generate_keypair = keypair
        client_shares.os = _Os()

        def keep(kind, fn, pick):
            def wrapped(*a, **kw):
                out = fn(*a, **kw)
                cap[kind].append(np.array(pick(out)).tobytes())
                return out
            return wrapped

        def encoding(fn, pick):  # the ring vector, and bit-packed as a MaskedInput packs
            def wrapped(vector, qcfg, m, *a, **kw):
                out = fn(vector, qcfg, m, *a, **kw)
                cap["encoded"].append(np.asarray(pick(out)).tobytes())
                cap["packed"].append(bitpack.pack(np.asarray(pick(out)), m))
                return out
            return wrapped

        quantize.encode = encoding(quantize.encode, lambda o: o[0])
        quantize.encode_prequantised = encoding(quantize.encode_prequantised, lambda o: o)
        noise.SecureNoise.normal = keep("noise", noise.SecureNoise.normal,
                                        lambda o: o.numpy())
        dd.discrete_gaussian = keep("noise", dd.discrete_gaussian, lambda o: o)
        for party in worker.parties.values():
            party = getattr(party, "party", party)  # a FaultyParty's inner party
            party._train = keep("input", party._train,
                                lambda o: getattr(o[0], "values", o[0]))
        return len(worker.parties)

    def view(worker):
        """The hospitals' raw private keys (identity signing and sealing, the ledger's
        signing key), their encoded training records and what the probes kept."""
        keys, records = [], []
        for h, ident in worker.identities.items():
            keys.append(ident._sign.private_bytes_raw())
            keys.append(ident.seal_private().private_bytes_raw())
            dp = worker.dps.get(h)
            if dp is not None:
                keys.append(dp.ledger.identity._sign.private_bytes_raw())
        for data in worker.data.values():
            records.extend([data.train.x.tobytes(), data.train.y.tobytes()])
        return keys, records, dict(worker.__dict__.get("_test_capture", {}))

    return install, view


class BoundaryWatch:
    """Install with :meth:`install` before ``run_simulation``; :meth:`check` after."""

    def __init__(self) -> None:
        self.sent: list[Any] = []
        self.received: list[Any] = []
        self.actors: list[Any] = []
        self.keys: list[bytes] = []
        self.records: list[bytes] = []
        self.captured: dict[str, list[bytes]] = {"input": [], "encoded": [], "packed": [],
                                                 "noise": [], "mask_secret": []}

    def install(self, monkeypatch: Any, then: Any = None) -> None:
        """``then``: a function run inside every actor after the probes (a test's mutant)."""
        real_call, real_fetch = ray_transport.call_actor, ray_transport.fetch
        install, view = _probes()

        def call(method, verb, *args):
            self.sent.extend(ray.get(a) if isinstance(a, ray.ObjectRef) else a for a in args)
            out = real_call(method, verb, *args)
            if verb == "remote" and method is not None and hasattr(out, "handle_stage"):
                self.actors.append(out)
            return out

        def fetch(refs):
            out = real_fetch(refs)
            self.received.extend(out)
            return out

        for mod in (ray_transport, ray_backend):
            monkeypatch.setattr(mod, "call_actor", call)
            monkeypatch.setattr(mod, "fetch", fetch)
        real_runner, real_close = ray_backend.RayProcess.runner, ray_backend.RayProcess.close

        def runner(proc, *a, **kw):  # before round 1: the probes inside every actor
            ray.get([actor.__ray_call__.remote(install) for actor in proc.actors])
            if then is not None:
                ray.get([actor.__ray_call__.remote(then) for actor in proc.actors])
            return real_runner(proc, *a, **kw)

        def close(proc):  # before the actors are killed: what the test must not find
            for actor in proc.actors:
                keys, records, captured = ray.get(actor.__ray_call__.remote(view))
                self.keys.extend(keys)
                self.records.extend(records)
                for kind, blobs in captured.items():
                    self.captured[kind].extend(blobs)
            real_close(proc)

        monkeypatch.setattr(ray_backend.RayProcess, "runner", runner)
        monkeypatch.setattr(ray_backend.RayProcess, "close", close)

    def crossed(self, params: set[str]) -> tuple[list[bytes], int]:
        """Every byte string / text that crossed (decoded messages' leaves included), and
        how many protocol messages; asserts each is a message or a public JSON document."""
        flat: list[Any] = []
        for v in self.sent + self.received:
            assert isinstance(v, str | bytes | int | tuple), type(v)
            flat.extend(v if isinstance(v, tuple) else (v,))
        messages, blobs = 0, []
        for v in flat:
            assert isinstance(v, str | bytes | int), type(v)
            if isinstance(v, bytes) and v:
                msg = codec.from_bytes(v)  # every byte string is a wire-codec message
                messages += 1
                types: set[str] = set()
                for leaf in walk(msg, types):
                    if isinstance(leaf, bytes):
                        blobs.append(leaf)
                    elif isinstance(leaf, np.ndarray):
                        blobs.append(leaf.tobytes())
                assert not types & PRIVATE_TYPES, types
                blobs.append(v)
            elif isinstance(v, str) and v.startswith("{"):
                doc = json.loads(v)
                if "config" in doc:  # the build description: settings and hospital ids only
                    assert set(doc) == {"config", "hospitals", "params", "run_dir"}
                    assert set(doc["params"]) <= params, doc["params"]
                    assert set(doc["config"]) == {f.name for f in
                                                  dataclasses.fields(SimulationConfig)}
                elif doc and all(isinstance(f, dict) and "epsilon" in f
                                 for f in doc.values()):  # privacy figures: public only
                    assert all(set(f) == set(FIGURES) for f in doc.values()), doc
                blobs.append(v.encode())
        return blobs, messages

    def check(self, params: set[str], *, hospitals: int, dp: bool) -> int:
        """Assert nothing private crossed (see module doc); the number of messages."""
        assert len(self.actors) == 2
        assert len(self.keys) == hospitals * (3 if dp else 2)
        assert len(self.records) == hospitals * 2
        blobs, messages = self.crossed(params)
        # every hospital drew 2 round key pairs and a self-mask seed b per masked round
        assert len(self.captured["mask_secret"]) >= 3 * hospitals
        for key in self.keys + self.captured["mask_secret"]:  # raw, hex or base64 (JSON
            assert len(key) == 32                              # would carry it encoded)
            forms = (key, key.hex().encode(), base64.b64encode(key)[:40],
                     base64.urlsafe_b64encode(key)[:40])
            assert not any(f in b for f in forms for b in blobs), \
                "a private key crossed an actor boundary"
        for rec in self.records:
            assert not any(rec in b for b in blobs), "a hospital's records crossed"
        if dp:
            for kind in ("input", "encoded", "packed", "noise"):
                assert self.captured[kind], f"no {kind} was captured inside the actors"
        for kind, secrets in self.captured.items():
            for s in secrets:
                parts = [s] + ([s[:WINDOW]] if len(s) > WINDOW and any(s[:WINDOW]) else [])
                assert not any(p in b for p in parts for b in blobs), \
                    f"a hospital's {kind} (DP noise / unmasked update) crossed"
        return messages
