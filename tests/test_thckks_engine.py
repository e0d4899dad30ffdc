"""The threshold-CKKS engine: the stdio framing, the supervised worker process (real OpenFHE
under the CPython 3.10 ``.venv-he``), the common reference string, key files, restarts."""

from __future__ import annotations

import hashlib
import io
import os
import stat

import numpy as np
import pytest

from fedrx.errors import CiphertextError, ConfigError, CryptoError
from fedrx.secagg.identity import Federation, Identity
from fedrx.secagg.thckks import messages as m
from fedrx.secagg.thckks import worker_main as wm
from fedrx.secagg.thckks.engine import EngineParams, WorkerEngine, find_he_python, open_engine
from fedrx.secagg.thckks.hospital import HospitalKeyState
from fedrx.secagg.thckks.keys import EpochKeys, load_keys, save_keys
from fedrx.secagg.thckks.params import ThresholdConfig, error_bound, flood_sigma


def _reader(data: bytes):
    buf = io.BytesIO(data)

    def read_exact(n: int) -> bytes:
        out = buf.read(n)
        if len(out) != n:
            raise EOFError
        return out
    return read_exact


def test_frame_roundtrip_and_canonical_header():
    frame = wm.encode_frame({"op": "x", "args": {"b": 1, "a": [2]}}, [b"\x00\x01", b""])
    head = b'{"args":{"a":[2],"b":1},"blobs":[2,0],"op":"x"}'
    assert frame == len(head).to_bytes(4, "big") + head + b"\x00\x01"
    header, blobs = wm.read_frame(_reader(frame))
    assert header["op"] == "x" and blobs == [b"\x00\x01", b""]


@pytest.mark.parametrize("frame", [
    (2**31).to_bytes(4, "big"),                                  # header too large
    (3).to_bytes(4, "big") + b"{x}",                             # not JSON
    (12).to_bytes(4, "big") + b'{"blobs":[-1]}'[:12],            # truncated / malformed
    (14).to_bytes(4, "big") + b'{"blobs":[-1]}',                 # negative length
    (21).to_bytes(4, "big") + b'{"blobs":[2000000000]}'[:21],    # blob over the cap
])
def test_malformed_frames_are_refused(frame):
    with pytest.raises((wm.WorkerError, EOFError)):
        wm.read_frame(_reader(frame))


@pytest.fixture(scope="module")
def eng():
    return open_engine()


def test_worker_is_a_supervised_310_process(eng):
    assert find_he_python() is not None
    if isinstance(eng, WorkerEngine):
        hello, _ = eng.call("hello")
        assert hello["python"].startswith("3.10") and hello["protocol"] == wm.PROTOCOL


def test_bad_requests_are_typed_errors_and_the_worker_survives(eng):
    with pytest.raises(CryptoError, match="unknown op"):
        eng.call("__import__")
    with pytest.raises(CiphertextError, match="does not parse"):
        eng.check([b"\x00" * 100])
    with pytest.raises(CryptoError, match="32-byte seed"):
        eng.keygen(b"short")
    eng.call("info")  # still alive


def test_killed_worker_restarts_at_next_call():
    eng = WorkerEngine(EngineParams(), find_he_python())
    try:
        pid = eng.proc.pid
        eng.proc.kill()
        eng.proc.wait()
        info, _ = eng.call("info")  # restarted, context set up again
        assert info["ring_dim"] == 8192 and eng.proc.pid != pid and eng.restarts == 1
    finally:
        eng.close()


def test_crs_is_a_deterministic_function_of_the_seed(eng):
    seed = bytes(range(32))
    (_, p1), (_, p2) = eng.keygen(seed), eng.keygen(seed)
    eng.joint_public([p1, p2])  # same a: accepted
    _, p3 = eng.keygen(bytes(32))
    with pytest.raises(CiphertextError, match="common reference"):
        eng.joint_public([p1, p3])


def test_crs_seed_known_answer():
    seed = m.crs_seed(b"\x01" * 32, b"\x02" * 32, 1, ("a", "b", "c"), [b"\x03" * 32] * 3)
    assert seed.hex() == hashlib.sha256(m.statement(
        "crs-seed", b"\x01" * 32, b"\x02" * 32, 1, ("a", "b", "c"), b"\x03" * 96)).hexdigest()
    assert m.statement("x", 1, "ab", b"\x00") == (
        b"fedrx-thckks/1\x00x\x00" + b"\x00\x00\x00\x08" + (1).to_bytes(8, "big")
        + b"\x00\x00\x00\x02ab" + b"\x00\x00\x00\x01\x00")


def test_threshold_reconstruction_and_t_minus_1_shares(eng):
    """Shamir over the key's RNS values: any t shares decrypt, and the sum is right."""
    n, t = 4, 3
    seed = os.urandom(32)
    keys = [eng.keygen(seed) for _ in range(n)]
    shares = [eng.share(s, n, t) for s, _ in keys]
    S = [eng.combine([shares[i][j] for i in range(n)]) for j in range(n)]
    pk = eng.joint_public([p for _, p in keys])
    x = np.linspace(-5, 5, 3000)
    ct = eng.encrypt(pk, x)
    for dec in ([1, 2, 3], [2, 3, 4], [1, 3, 4]):
        parts = [eng.partial(S[j - 1], ct, j, dec, j == dec[0], 0.0) for j in dec]
        assert np.max(np.abs(eng.fuse(parts, 3000) - x)) < 1e-6


def test_flooding_size_and_bound_known_answer():
    cfg = ThresholdConfig()
    # sqrt(24 * 4096) * 2^15 * 8 * sqrt(10 * (4/3 * 10 * 8192 * 3.19^2 + 3.19^2))
    # = 313.5 * 32768 * 26670.8
    assert flood_sigma(cfg, 8192, 10, 10) == pytest.approx(2.7402e11, rel=1e-4)
    # 8 * sqrt(4096) * sqrt(6 * (sigma_f^2 + 2^40) + (B/8)^2) / 2^59
    assert error_bound(cfg, 8192, 10, 10, 6) == pytest.approx(5.9615e-4, rel=1e-4)


def test_flooding_noise_matches_its_stated_size(eng):
    """The slot error of a flooded decryption has the std the bound assumes."""
    seed = os.urandom(32)
    keys = [eng.keygen(seed) for _ in range(3)]
    shares = [eng.share(s, 3, 2) for s, _ in keys]
    S = [eng.combine([shares[i][j] for i in range(3)]) for j in range(3)]
    ct = eng.encrypt(eng.joint_public([p for _, p in keys]), np.zeros(eng.slots))
    sigma = 2.0 ** 40
    parts = [eng.partial(S[j - 1], ct, j, [1, 2], j == 1, sigma) for j in (1, 2)]
    err = eng.fuse(parts, eng.slots)
    want = np.sqrt(2) * sigma * np.sqrt(eng.ring_dim / 2) / 2.0 ** 59
    assert np.std(err) == pytest.approx(want, rel=0.1)


def test_key_file_is_0600_never_in_repr_and_survives_a_restart(tmp_path):
    k = EpochKeys("a", 1, ("a", "b", "c"), 2, b"\x07" * 32, b"pub", b"SECRET-SHARE")
    assert "SECRET" not in repr(k)
    save_keys(tmp_path, k)
    path = tmp_path / "a.thckks.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_keys(tmp_path, "a") == k
    ident = Identity.generate("a")
    state = HospitalKeyState(ident, Federation.of([ident]), ThresholdConfig(), None, tmp_path)
    assert state.current == k  # a restarted hospital has its epoch back
    os.chmod(path, 0o644)
    with pytest.raises(ConfigError, match="0600"):
        load_keys(tmp_path, "a")
    os.chmod(path, 0o600)
    path.write_text("{}")
    with pytest.raises(ConfigError, match="malformed"):
        load_keys(tmp_path, "a")


def test_t_minus_1_colluders_with_their_own_key_parts_get_noise(eng):
    """Colluders who also KEPT their additive key parts s_i (the protocol deletes them) and
    their Shamir shares still decrypt one upload to noise ~1e18 x the signal."""
    n, t = 5, 3
    seed = os.urandom(32)
    keys = [eng.keygen(seed) for _ in range(n)]
    shares = [eng.share(s, n, t) for s, _ in keys]
    S = [eng.combine([shares[i][j] for i in range(n)]) for j in range(n)]
    x = np.random.default_rng(0).normal(0, 5, eng.slots)
    ct = eng.encrypt(eng.joint_public([p for _, p in keys]), x)
    signal = float(np.max(np.abs(x)))
    for how in ([(keys[0][0], 1, [1]), (keys[1][0], 1, [1])],          # s_1 + s_2
                [(S[0], 1, [1, 2]), (S[1], 2, [1, 2])],                # Lagrange on 2 shares
                [(keys[0][0], 1, [1]), (S[0], 1, [1])]):               # mixed
        parts = [eng.partial(k, ct, i, dec, j == 0, 0.0) for j, (k, i, dec) in enumerate(how)]
        assert np.max(np.abs(eng.fuse(parts, eng.slots) - x)) > 1e3 * signal
