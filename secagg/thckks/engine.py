"""The HE engine behind ``ckks-threshold``: a small typed interface over OpenFHE.

:class:`HeEngine` is what the protocol code calls. Two implementations speak the same
requests (:mod:`.worker_main` defines them and the framing):

* :class:`InProcessEngine` when ``import openfhe`` works in this interpreter;
* :class:`WorkerEngine` otherwise: a child process running ``worker_main.py`` under a Python
  that has OpenFHE (``$FEDRX_HE_PYTHON``, else the repository's ``.venv-he`` made by
  ``make he-env``), spoken to over its stdin/stdout with length-prefixed frames (canonical
  JSON header + raw bytes; never pickle). The parent supervises it: a call has a deadline,
  a worker that dies or garbles a frame is killed and restarted at the next call, and its
  death is one :class:`~fedrx.errors.CryptoError`.

:func:`open_engine` returns one shared engine per parameter set and process (the workers of
an in-process simulation are shared by its parties; they hold no key between calls except
one cached decryption key of the last partial decryption).
"""

from __future__ import annotations

import atexit
import os
import select
import shutil
import subprocess
import threading
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fedrx.errors import CiphertextError, ConfigError, CryptoError
from fedrx.secagg.thckks import worker_main as wm

WORKER_SCRIPT = Path(wm.__file__).resolve()
HE_PYTHON_ENV = "FEDRX_HE_PYTHON"
HE_THREADS_ENV = "FEDRX_HE_THREADS"
#: The worker environment ``make he-env`` builds, next to the package sources.
HE_VENV = Path(__file__).resolve().parents[2] / ".venv-he"
CALL_TIMEOUT_S = 600.0


@dataclass(frozen=True)
class EngineParams:
    """The CKKS context: ring dimension N (N/2 slots per ciphertext), scale Δ = 2^scale_bits,
    RNS primes of first_mod_bits and scale_bits (Q ~ 2^(first+scale)), and whether OpenFHE
    must enforce 128-bit security (HE standard table) for N and Q."""

    ring_dim: int = 8192
    scale_bits: int = 59
    first_mod_bits: int = 60
    secure: bool = True

    def args(self) -> dict:
        return {"ring_dim": self.ring_dim, "scale_bits": self.scale_bits,
                "first_mod_bits": self.first_mod_bits, "secure": self.secure}


@dataclass
class EngineStats:
    """What the engine cost this process: calls, seconds inside calls (wall), seconds the
    engine spent in the operations themselves (wall; the rest is the worker protocol:
    framing, pipes, parsing), bytes each way."""

    calls: int = 0
    seconds: float = 0.0
    op_seconds: float = 0.0
    bytes_out: int = 0
    bytes_in: int = 0


class HeEngine(ABC):
    """Threshold CKKS operations. Secret values (key shares) are raw bytes owned by the
    caller; the engine keeps none between calls beyond a one-entry decryption-key cache."""

    def __init__(self, params: EngineParams):
        self.params = params
        self.stats = EngineStats()
        self._lock = threading.Lock()
        info, _ = self.call("setup", params.args())
        self.ring_dim = int(info["ring_dim"])
        #: real values per ciphertext (N: N/2 complex slots, real and imaginary parts)
        self.slots = int(info["values"])
        self.moduli = tuple(int(q) for q in info["moduli"])

    @abstractmethod
    def _exchange(self, header: dict, blobs: list[bytes]) -> tuple[dict, list[bytes]]: ...

    def call(self, op: str, args: dict | None = None,
             blobs: list[bytes] | tuple[bytes, ...] = ()) -> tuple[dict, list[bytes]]:
        """One request; CryptoError (CiphertextError for a bad ciphertext) if refused."""
        with self._lock:
            t0 = time.perf_counter()
            header, out = self._exchange({"op": op, "args": args or {}}, list(blobs))
            self.stats.calls += 1
            self.stats.seconds += time.perf_counter() - t0
            op_s = header.get("op_s")
            self.stats.op_seconds += float(op_s) if isinstance(op_s, int | float) else 0.0
            self.stats.bytes_out += sum(len(b) for b in blobs)
            self.stats.bytes_in += sum(len(b) for b in out)
        if header.get("ok") is not True:
            msg = str(header.get("message", "refused"))[:300]
            if header.get("kind") == "crypto":
                raise CiphertextError(f"HE engine: {msg}")
            raise CryptoError(f"HE engine refused {op}: {msg}")
        result = header.get("result")
        if not isinstance(result, dict):
            raise CryptoError(f"HE engine: malformed reply to {op}")
        return result, out

    # -- typed operations

    @property
    def share_bytes(self) -> int:
        return 8 * self.ring_dim * len(self.moduli)

    def keygen(self, seed: bytes) -> tuple[bytes, bytes]:
        """(secret s_i, public b_i) on the common reference string PRG(seed)."""
        _, out = self.call("keygen", {}, [seed])
        return out[0], out[1]

    def share(self, secret: bytes, n: int, t: int) -> list[bytes]:
        """Shamir shares f(1..n) of ``secret``, any t of which determine it."""
        _, out = self.call("share", {"n": n, "t": t}, [secret])
        if len(out) != n:
            raise CryptoError("HE engine returned the wrong number of shares")
        return out

    def combine(self, shares: list[bytes]) -> bytes:
        """The sum of key shares (mod Q)."""
        return self.call("combine", {}, shares)[1][0]

    def joint_public(self, publics: list[bytes]) -> bytes:
        """The joint public key of contributions on one common reference string."""
        return self.call("joint_public", {}, publics)[1][0]

    def encrypt(self, public: bytes, values: np.ndarray) -> list[bytes]:
        """ceil(len/N) ciphertexts of float64 ``values`` under ``public``."""
        x = np.ascontiguousarray(values, dtype="<f8")
        return self.call("encrypt", {}, [public, x.tobytes()])[1]

    def check(self, ciphertexts: list[bytes]) -> None:
        """CiphertextError unless every blob is a fresh ciphertext of these parameters."""
        self.call("check", {}, ciphertexts)

    def partial(self, share: bytes, ciphertexts: list[bytes], index: int,
                decryptors: list[int], lead: bool, flood_sigma: float) -> bytes:
        """The flooded partial decryption, by the holder of Shamir share ``index``, of the SUM
        of ``ciphertexts`` for the decryptor set ``decryptors``."""
        args = {"index": index, "decryptors": list(decryptors), "lead": lead,
                "flood_sigma": float(flood_sigma)}
        return self.call("partial", args, [share, *ciphertexts])[1][0]

    def fuse(self, partials: list[bytes], length: int) -> np.ndarray:
        """The first ``length`` values of the fused partials (float64)."""
        out = self.call("fuse", {}, partials)[1][0]
        return np.frombuffer(out, dtype="<f8")[:length].copy()

    def close(self) -> None:  # noqa: B027 - nothing to release by default
        """Release the engine's resources."""


class InProcessEngine(HeEngine):
    """OpenFHE imported in this interpreter."""

    def __init__(self, params: EngineParams):
        self._server = wm.Server()
        super().__init__(params)

    def _exchange(self, header: dict, blobs: list[bytes]) -> tuple[dict, list[bytes]]:
        t0 = time.perf_counter()
        try:
            result, out = self._server.handle(header, blobs)
        except wm.WorkerError as exc:
            return {"ok": False, "kind": exc.kind, "message": exc.message}, []
        return {"ok": True, "result": result, "op_s": time.perf_counter() - t0}, out


class WorkerEngine(HeEngine):
    """OpenFHE in a supervised child process (``python worker_main.py``)."""

    def __init__(self, params: EngineParams, python: str, timeout_s: float = CALL_TIMEOUT_S):
        self.python = python
        self.timeout_s = timeout_s
        self.proc: subprocess.Popen | None = None
        self.restarts = 0
        super().__init__(params)

    def __repr__(self) -> str:
        pid = None if self.proc is None else self.proc.pid
        return f"WorkerEngine(python={self.python!r}, pid={pid})"

    def _start(self) -> None:
        env = {k: v for k, v in os.environ.items() if k in ("PATH", "LANG", "LC_ALL", "HOME")}
        env["PYTHONDONTWRITEBYTECODE"] = "1"
        # OpenFHE's OpenMP threads spin; on a shared or busy host one thread per worker is
        # up to 100x faster (measured: encrypt 2 ms vs 200 ms at load 9 on 2 cores)
        env["OMP_NUM_THREADS"] = os.environ.get(HE_THREADS_ENV, "1")
        try:
            # our own script under the configured interpreter; no shell, fixed argv; -E -s: no
            # PYTHON* variables, no user site (its own folder stays on sys.path, for frames.py)
            self.proc = subprocess.Popen([self.python, "-E", "-s", str(WORKER_SCRIPT)],  # noqa: S603
                                         stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                         stderr=subprocess.DEVNULL, env=env, close_fds=True)
        except OSError as exc:
            raise ConfigError(f"cannot start the HE worker {self.python}: "
                              f"{exc.strerror}") from None
        header, _ = self._roundtrip({"op": "hello", "args": {}}, [])
        if header.get("result", {}).get("protocol") != wm.PROTOCOL:
            self._kill()
            raise CryptoError("the HE worker speaks another protocol")

    def _kill(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            for f in (self.proc.stdin, self.proc.stdout):
                if f is not None:
                    f.close()
            self.proc = None

    def _read_exact(self, n: int, deadline: float) -> bytes:
        assert self.proc is not None and self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        parts, got = [], 0
        while got < n:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                raise TimeoutError
            more = os.read(fd, min(n - got, 1 << 20))
            if not more:
                raise EOFError
            parts.append(more)
            got += len(more)
        return b"".join(parts)

    def _roundtrip(self, header: dict, blobs: list[bytes]) -> tuple[dict, list[bytes]]:
        assert self.proc is not None and self.proc.stdin is not None
        deadline = time.monotonic() + self.timeout_s
        try:
            self.proc.stdin.write(wm.encode_frame(header, blobs))
            self.proc.stdin.flush()
            return wm.read_frame(lambda n: self._read_exact(n, deadline))
        except (BrokenPipeError, EOFError, OSError, TimeoutError, wm.WorkerError) as exc:
            self._kill()
            what = "timed out" if isinstance(exc, TimeoutError) else "died or garbled a frame"
            raise CryptoError(f"the HE worker {what} during {header.get('op')}") from None

    def _exchange(self, header: dict, blobs: list[bytes]) -> tuple[dict, list[bytes]]:
        if self.proc is None or self.proc.poll() is not None:
            if self.proc is not None:
                self._kill()
            self._start()
            if header.get("op") != "setup":  # a restarted worker needs its context again
                self.restarts += 1
                self._roundtrip({"op": "setup", "args": self.params.args()}, [])
        return self._roundtrip(header, blobs)

    def close(self) -> None:
        with self._lock:
            self._kill()

    def worker_cpu_seconds(self) -> float:
        """CPU seconds (user + system) the live worker process has used so far (Linux)."""
        if self.proc is None:
            return 0.0
        try:
            fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return 0.0
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def openfhe_in_process() -> bool:
    """True if ``import openfhe`` works in this interpreter."""
    try:
        import openfhe  # noqa: F401
    except ImportError:
        return False
    return True


def find_he_python() -> str | None:
    """The worker's Python: ``$FEDRX_HE_PYTHON``, else ``.venv-he/bin/python`` if built."""
    env = os.environ.get(HE_PYTHON_ENV)
    if env:
        return env if os.path.isabs(env) else shutil.which(env)
    cand = HE_VENV / "bin" / "python"
    return str(cand) if cand.exists() else None


_ENGINES: dict[tuple, HeEngine] = {}
_ENGINES_LOCK = threading.Lock()


def open_engine(params: EngineParams | None = None, *, worker: bool | None = None) -> HeEngine:
    """The process's shared engine for ``params``: in-process if OpenFHE imports here (unless
    ``worker`` is True), else a worker. ConfigError (one line) if neither is available."""
    params = params or EngineParams()
    use_worker = (not openfhe_in_process()) if worker is None else worker
    key = (params, use_worker)
    with _ENGINES_LOCK:
        eng = _ENGINES.get(key)
        if eng is None:
            if use_worker:
                python = find_he_python()
                if python is None:
                    raise ConfigError(
                        "ckks-threshold needs OpenFHE: run `make he-env` (builds .venv-he with "
                        f"CPython 3.10) or set {HE_PYTHON_ENV} to a Python with `openfhe`")
                eng = WorkerEngine(params, python)
            else:
                eng = InProcessEngine(params)
            _ENGINES[key] = eng
        return eng


def _close_all() -> None:
    for eng in list(_ENGINES.values()):
        eng.close()


atexit.register(_close_all)
