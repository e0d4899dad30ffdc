"""fedrx's HE worker: OpenFHE threshold CKKS behind a typed, length-prefixed stdio protocol.

STANDALONE: runs under a Python that has the ``openfhe`` wheel (CPython 3.10 in ``.venv-he``),
where fedrx is not installed; imports the standard library, ``openfhe`` and its dependency
``numpy`` (lazily), and :mod:`.frames` (from fedrx, or from its own folder when standalone).
Run ``python -E -s worker_main.py``, then speak frames (:mod:`.frames`) on stdin/stdout.
Request header: ``{"op": NAME, "args": {...}, "blobs": [...]}``; reply: ``{"ok": true,
"result": {...}, "op_s": SECONDS, "blobs": [...]}`` or ``{"ok": false, "kind": KIND,
"message": TEXT}``. Never pickle or eval; no secret in a header or an error text.

Key material and the threshold (t-of-n) scheme, all in the ring R_Q, Q = q_0 q_1 (RNS):

* Collective public key: a = PRG(seed) (common reference string; SHAKE-256, rejection
  sampled per RNS prime), each party i draws s_i, e_i and publishes b_i = -a s_i + e_i
  (OpenFHE ``MultipartyKeyGen(crs, fresh=True)``); the joint key is (Σ b_i, a) (OpenFHE
  ``MultiAddPubKeys``), under the joint secret s = Σ s_i, which nobody holds.
* t-of-n: each party Shamir-shares ITS s_i with a random degree-(t-1) polynomial, value by
  value over Z_{q_k} (the key's RNS/NTT values; Shamir is linear, so sharing the evaluation
  representation shares the key), evaluated at x = 1..n. Party j sums what it receives:
  S_j = Σ_i f_i(j), a Shamir share of s. Any t of them give s by Lagrange interpolation;
  t-1 of them are independent of s. OpenFHE's own ShareKeys/RecoverSharedKey re-create a
  dropped party's whole key at one party; this scheme never re-creates any key.
* Partial decryption by party j of the decryptor set T: key k_j = λ_j^T S_j
  (Σ_{j∈T} k_j = s), then OpenFHE ``MultipartyDecryptLead`` (the lead, c0 + c1 k_j + e) or
  ``MultipartyDecryptMain`` (c1 k_j + e), then the flooding noise (below) added to the
  partial, then ``MultipartyDecryptFusion`` sums the t partials to Δ·m + noise.
* Flooding: the partial gets a fresh Gaussian polynomial of coefficient standard deviation
  ``flood_sigma`` (chosen by the caller, see fedrx.secagg.thckks.params). It is sampled in
  the slot domain (isotropic complex Gaussian of std σ·sqrt(N/2)/Δ per real/imaginary part,
  from os.urandom through Box-Muller) and encoded: the canonical embedding is a scaled
  unitary map, so the encoded coefficients are i.i.d. Gaussian of std σ.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import struct
import sys
import time

try:  # imported by fedrx
    from fedrx.secagg.thckks.frames import (
        MAX_BLOB_BYTES,
        MAX_FRAME_BLOBS,
        MAX_HEADER_BYTES,
        PROTOCOL,
        WorkerError,
        encode_frame,
        read_frame,
    )
except ImportError:  # the standalone worker: its folder is on sys.path
    from frames import (  # type: ignore[no-redef]
        MAX_BLOB_BYTES,
        MAX_FRAME_BLOBS,
        MAX_HEADER_BYTES,
        PROTOCOL,
        WorkerError,
        encode_frame,
        read_frame,
    )

__all__ = ["MAX_BLOB_BYTES", "MAX_FRAME_BLOBS", "MAX_HEADER_BYTES", "PROTOCOL", "Ops", "Server",
           "WorkerError", "encode_frame", "read_frame"]

_CRS_DOMAIN = b"fedrx-thckks-crs/1\x00"


# ------------------------------------------------------------------------------ engine ops


def _arg(args: dict, name: str, kind: type, lo=None, hi=None):
    v = args.get(name)
    if kind is int and (not isinstance(v, int) or isinstance(v, bool)):
        raise WorkerError("bad-request", f"argument {name!r} must be an integer")
    if kind is float and (not isinstance(v, int | float) or isinstance(v, bool)
                          or not math.isfinite(v)):
        raise WorkerError("bad-request", f"argument {name!r} must be a finite number")
    if kind is bool and not isinstance(v, bool):
        raise WorkerError("bad-request", f"argument {name!r} must be a boolean")
    if (lo is not None and v < lo) or (hi is not None and v > hi):
        raise WorkerError("bad-request", f"argument {name!r} out of range")
    return v


def _towers(key_json: dict) -> list:
    """The RNS towers (dicts holding "v": values and "m": modulus) of a serialised key."""
    data = key_json["value0"]["ptr_wrapper"]["data"]
    polys = [data["s"]] if "s" in data else list(data["h"])
    return [[t["v"]["ptr_wrapper"]["data"] for t in p["v"]] for p in polys]


class Ops:
    """The engine operations over one OpenFHE CKKS context (one per worker)."""

    def __init__(self, ring_dim: int, scale_bits: int, first_mod_bits: int, secure: bool):
        import numpy as np
        import openfhe as o

        self.np, self.o = np, o
        p = o.CCParamsCKKSRNS()
        p.SetMultiplicativeDepth(1)
        p.SetScalingModSize(scale_bits)
        p.SetFirstModSize(first_mod_bits)
        p.SetScalingTechnique(o.FIXEDMANUAL)
        p.SetKeySwitchTechnique(o.BV)
        p.SetSecurityLevel(o.HEStd_128_classic if secure else o.HEStd_NotSet)
        p.SetRingDim(ring_dim)
        p.SetBatchSize(ring_dim // 2)
        p.SetCKKSDataType(o.COMPLEX)  # two real values per slot (real and imaginary part)
        try:
            cc = o.GenCryptoContext(p)
        except RuntimeError as exc:
            raise WorkerError("bad-request", f"OpenFHE refused the parameters: "
                              f"{str(exc).splitlines()[-1][-200:]}") from None
        for feature in (o.PKE, o.LEVELEDSHE, o.MULTIPARTY):
            cc.Enable(feature)
        self.cc = cc
        self.ring_dim = cc.GetRingDimension()
        self.slots = self.ring_dim // 2
        self.values = self.ring_dim  # real values per ciphertext: N/2 complex slots
        self.scale = float(2 ** scale_bits)
        kp = cc.KeyGen()
        self._sk_template = json.loads(o.Serialize(kp.secretKey, o.JSON))
        self._pk_template = json.loads(o.Serialize(kp.publicKey, o.JSON))
        self.moduli = [int(t["m"]["v"]) for t in _towers(self._sk_template)[0]]
        self._key_cache: dict = {}

    # -- raw polynomial values: towers concatenated, uint64 little-endian

    def _unpack(self, blob: bytes) -> list:
        np = self.np
        want = 8 * self.ring_dim * len(self.moduli)
        if len(blob) != want:
            raise WorkerError("bad-request", f"key values of {len(blob)} bytes, expected {want}")
        arr = np.frombuffer(blob, dtype="<u8").reshape(len(self.moduli), self.ring_dim)
        out = []
        for row, q in zip(arr, self.moduli, strict=True):
            if int(row.max()) >= q:
                raise WorkerError("bad-request", "key value out of range")
            out.append(row.astype(object))
        return out

    def _pack(self, towers: list) -> bytes:
        np = self.np
        return b"".join(np.asarray([int(v) for v in t], dtype="<u8").tobytes() for t in towers)

    def _uniform(self, q: int, count: int, stream) -> object:
        """``count`` values uniform in [0, q) from ``stream(nbytes)`` (rejection sampling)."""
        np = self.np
        mask = (1 << q.bit_length()) - 1
        got = np.zeros(0, dtype=np.uint64)
        while got.size < count:
            words = np.frombuffer(stream(8 * 2 * count), dtype="<u8") & np.uint64(mask)
            got = np.concatenate([got, words[words < np.uint64(q)]])
        return got[:count].astype(object)

    def _secret_key(self, towers: list):
        d = json.loads(json.dumps(self._sk_template))
        for dst, vals in zip(_towers(d)[0], towers, strict=True):
            dst["v"] = [int(v) for v in vals]
        return self.o.DeserializePrivateKeyString(json.dumps(d), self.o.JSON)

    def _public(self, blob: bytes):
        try:
            return self.o.DeserializePublicKeyString(blob, self.o.BINARY)
        except Exception:  # OpenFHE raises RuntimeError (or worse) on garbage
            raise WorkerError("crypto", "public key does not parse") from None

    def _ciphertext(self, blob: bytes):
        try:
            ct = self.o.DeserializeCiphertextString(blob, self.o.BINARY)
            ok = (ct.NumberCiphertextElements() == 2 and ct.GetLevel() == 0
                  and ct.GetNoiseScaleDeg() == 1 and ct.GetSlots() == self.slots
                  and abs(ct.GetScalingFactor() - self.scale) <= 1e-6 * self.scale
                  and ct.GetCryptoContext().GetRingDimension() == self.ring_dim)
        except Exception:  # garbage: OpenFHE raises, or returns None
            raise WorkerError("crypto", "ciphertext does not parse") from None
        if not ok:
            raise WorkerError("crypto", "ciphertext is not a fresh full-slot level-0 CKKS "
                              "ciphertext of these parameters")
        return ct

    # -- operations

    def op_info(self, args: dict, blobs: list) -> tuple:
        return {"ring_dim": self.ring_dim, "slots": self.slots, "values": self.values,
                "moduli": [str(q) for q in self.moduli]}, []

    def op_keygen(self, args: dict, blobs: list) -> tuple:
        """blobs [seed (32 B)] -> [secret s_i (raw values), public key b_i (binary)]."""
        if len(blobs) != 1 or len(blobs[0]) != 32:
            raise WorkerError("bad-request", "keygen takes one 32-byte seed")
        crs = json.loads(json.dumps(self._pk_template))
        b_poly, a_poly = _towers(crs)
        for k, (bt, at, q) in enumerate(zip(b_poly, a_poly, self.moduli, strict=True)):
            shake = hashlib.shake_256(_CRS_DOMAIN + blobs[0] + struct.pack(">I", k))
            state = {"off": 0}

            def stream(n: int, shake=shake, state=state) -> bytes:
                state["off"] += n
                return shake.digest(state["off"])[state["off"] - n:]

            at["v"] = [int(v) for v in self._uniform(q, self.ring_dim, stream)]
            bt["v"] = [0] * self.ring_dim
        pk_crs = self.o.DeserializePublicKeyString(json.dumps(crs), self.o.JSON)
        kp = self.cc.MultipartyKeyGen(pk_crs, False, True)
        secret = json.loads(self.o.Serialize(kp.secretKey, self.o.JSON))
        towers = [t["v"] for t in _towers(secret)[0]]
        return {}, [self._pack(towers), bytes(self.o.Serialize(kp.publicKey, self.o.BINARY))]

    def op_share(self, args: dict, blobs: list) -> tuple:
        """blobs [secret] -> [f(1), ..., f(n)]: Shamir shares of degree t-1 per value."""
        n = _arg(args, "n", int, 2, 1000)
        t = _arg(args, "t", int, 2, n)
        if len(blobs) != 1:
            raise WorkerError("bad-request", "share takes one secret")
        secret = self._unpack(blobs[0])
        shares = [[None] * len(self.moduli) for _ in range(n)]
        for k, (s, q) in enumerate(zip(secret, self.moduli, strict=True)):
            coeffs = [self._uniform(q, self.ring_dim, os.urandom) for _ in range(t - 1)]
            for x in range(1, n + 1):
                acc = coeffs[-1]
                for c in reversed(coeffs[:-1]):
                    acc = (acc * x + c) % q
                shares[x - 1][k] = (acc * x + s) % q
        return {}, [self._pack(sh) for sh in shares]

    def op_combine(self, args: dict, blobs: list) -> tuple:
        """blobs [share, share, ...] -> [their sum] (mod each q_k)."""
        if not blobs:
            raise WorkerError("bad-request", "combine takes at least one share")
        total = self._unpack(blobs[0])
        for b in blobs[1:]:
            total = [(x + y) % q for x, y, q in
                     zip(total, self._unpack(b), self.moduli, strict=True)]
        return {}, [self._pack(total)]

    def op_joint_public(self, args: dict, blobs: list) -> tuple:
        """blobs [b_1, ..., b_n] (binary public keys on one CRS) -> [joint public key]."""
        if not blobs:
            raise WorkerError("bad-request", "joint_public takes at least one key")
        keys = [self._public(b) for b in blobs]
        a_ref = _towers(json.loads(self.o.Serialize(keys[0], self.o.JSON)))[1]
        for k in keys[1:]:
            if _towers(json.loads(self.o.Serialize(k, self.o.JSON)))[1] != a_ref:
                raise WorkerError("crypto", "public keys do not share the common reference")
        joint = keys[0]
        for k in keys[1:]:
            joint = self.cc.MultiAddPubKeys(joint, k)
        return {}, [bytes(self.o.Serialize(joint, self.o.BINARY))]

    def op_encrypt(self, args: dict, blobs: list) -> tuple:
        """blobs [public key, float64 LE values] -> one ciphertext per N values (value 2k in
        the real part of slot k, value 2k+1 in its imaginary part)."""
        np = self.np
        if len(blobs) != 2 or len(blobs[1]) % 8:
            raise WorkerError("bad-request", "encrypt takes a key and float64 values")
        pk = self._public(blobs[0])
        x = np.frombuffer(blobs[1], dtype="<f8")
        if not np.all(np.isfinite(x)):
            raise WorkerError("bad-request", "values must be finite")
        out = []
        for start in range(0, max(len(x), 1), self.values):
            chunk = np.zeros(self.values)
            part = x[start:start + self.values]
            chunk[:len(part)] = part
            z = chunk[0::2] + 1j * chunk[1::2]
            ct = self.cc.Encrypt(pk, self.cc.MakeCKKSPackedPlaintext(z))
            out.append(bytes(self.o.Serialize(ct, self.o.BINARY)))
        return {}, out

    def op_check(self, args: dict, blobs: list) -> tuple:
        """blobs [ciphertext, ...]: each parses as a fresh ciphertext of these parameters."""
        for b in blobs:
            self._ciphertext(b)
        return {"checked": len(blobs)}, []

    def op_partial(self, args: dict, blobs: list) -> tuple:
        """blobs [share S_j, ct_1, ..., ct_m] -> [flooded partial decryption of Σ ct_i].

        args: ``index`` j (1-based), ``decryptors`` T (distinct indexes incl. j), ``lead``,
        ``flood_sigma`` (coefficient std of the flooding noise, >= 0)."""
        np = self.np
        j = _arg(args, "index", int, 1, 1000)
        dec = args.get("decryptors")
        if (not isinstance(dec, list) or j not in dec or len(set(dec)) != len(dec)
                or not all(isinstance(i, int) and not isinstance(i, bool) and 1 <= i <= 1000
                           for i in dec)):
            raise WorkerError("bad-request", "decryptors must be distinct indexes including ours")
        lead = _arg(args, "lead", bool)
        sigma = _arg(args, "flood_sigma", float, 0.0, 2.0 ** 50)
        if len(blobs) < 2:
            raise WorkerError("bad-request", "partial takes a share and at least one ciphertext")
        cache_key = (hashlib.sha256(blobs[0]).digest(), j, tuple(sorted(dec)))
        key = self._key_cache.get(cache_key)
        if key is None:
            share = self._unpack(blobs[0])
            towers = []
            for s, q in zip(share, self.moduli, strict=True):
                num, den = 1, 1
                for m in dec:
                    if m != j:
                        num, den = num * m % q, den * (m - j) % q
                towers.append((s * (num * pow(den, -1, q) % q)) % q)
            key = self._secret_key(towers)
            self._key_cache = {cache_key: key}
        total = self._ciphertext(blobs[1])
        for b in blobs[2:]:
            total = self.cc.EvalAdd(total, self._ciphertext(b))
        if lead:
            part = self.cc.MultipartyDecryptLead([total], key)[0]
        else:
            part = self.cc.MultipartyDecryptMain([total], key)[0]
        if sigma > 0:
            std = sigma * math.sqrt(self.ring_dim / 2) / self.scale
            noise = (_gaussian(np, self.slots) + 1j * _gaussian(np, self.slots)) * std
            part = self.cc.EvalAdd(part, self.cc.MakeCKKSPackedPlaintext(noise, 1, 0))
        return {}, [bytes(self.o.Serialize(part, self.o.BINARY))]

    def op_fuse(self, args: dict, blobs: list) -> tuple:
        """blobs [partial, ...] -> [the N float64 LE values of their fusion]."""
        np = self.np
        if not blobs:
            raise WorkerError("bad-request", "fuse takes at least one partial")
        parts = []
        for b in blobs:
            try:
                parts.append(self.o.DeserializeCiphertextString(b, self.o.BINARY))
            except Exception:
                raise WorkerError("crypto", "partial decryption does not parse") from None
        try:
            pt = self.cc.MultipartyDecryptFusion(parts)
        except RuntimeError:  # OpenFHE's CKKS decoder: "approximation error is too high"
            raise WorkerError("crypto", "the fused partials do not decode to a CKKS plaintext "
                              "(approximation error too high: not a decryption)") from None
        pt.SetLength(self.slots)
        z = np.asarray(pt.GetCKKSPackedValue(), dtype=np.complex128)
        vals = np.empty(self.values, dtype="<f8")
        vals[0::2], vals[1::2] = z.real, z.imag
        return {}, [vals.tobytes()]


def _gaussian(np, count: int):
    """``count`` standard normal values from the OS CSPRNG (Box-Muller on 53-bit uniforms)."""
    words = np.frombuffer(os.urandom(16 * count), dtype="<u8").reshape(2, count) >> np.uint64(11)
    u1 = (words[0].astype(np.float64) + 1.0) / 2.0 ** 53  # (0, 1]
    u2 = words[1].astype(np.float64) / 2.0 ** 53
    return np.sqrt(-2.0 * np.log(u1)) * np.cos(2.0 * np.pi * u2)


class Server:
    """Dispatches requests to :class:`Ops`; the first request must be ``setup``."""

    def __init__(self) -> None:
        self.ops: Ops | None = None

    def handle(self, header: dict, blobs: list) -> tuple:
        op = header.get("op")
        args = header.get("args", {})
        if not isinstance(op, str) or not isinstance(args, dict):
            raise WorkerError("bad-request", "request needs a string op and an args object")
        if op == "hello":
            import openfhe

            return {"protocol": PROTOCOL, "openfhe": getattr(openfhe, "__version__", "?"),
                    "python": sys.version.split()[0]}, []
        if op == "setup":
            self.ops = Ops(_arg(args, "ring_dim", int, 1024, 1 << 17),
                           _arg(args, "scale_bits", int, 20, 59),
                           _arg(args, "first_mod_bits", int, 21, 60),
                           _arg(args, "secure", bool))
            return self.ops.op_info({}, [])
        if self.ops is None:
            raise WorkerError("bad-request", "setup must come first")
        fn = getattr(self.ops, "op_" + op, None) if op.isidentifier() else None
        if fn is None:
            raise WorkerError("bad-request", f"unknown op {op[:40]!r}")
        return fn(args, blobs)


def main() -> int:
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer

    def read_exact(n: int) -> bytes:
        buf = b""
        while len(buf) < n:
            more = stdin.read(n - len(buf))
            if not more:
                raise EOFError
            buf += more
        return buf

    server = Server()
    while True:
        try:
            header, blobs = read_frame(read_exact)
        except EOFError:
            return 0
        except WorkerError as exc:  # framing lost: answer once, then stop
            stdout.write(encode_frame({"ok": False, "kind": exc.kind, "message": exc.message}, []))
            stdout.flush()
            return 2
        try:
            t0 = time.perf_counter()
            result, out = server.handle(header, blobs)
            frame = encode_frame({"ok": True, "result": result,
                                  "op_s": time.perf_counter() - t0}, out)
        except WorkerError as exc:
            frame = encode_frame({"ok": False, "kind": exc.kind, "message": exc.message}, [])
        except Exception as exc:  # noqa: BLE001 - no request may kill the worker silently
            frame = encode_frame({"ok": False, "kind": "internal",
                                  "message": type(exc).__name__}, [])
        stdout.write(frame)
        stdout.flush()


if __name__ == "__main__":
    sys.exit(main())
