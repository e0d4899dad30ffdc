"""The compiled bit-packing kernels (secagg/_bitpack_native.c) against the numpy
implementation and a big-integer reference of the wire format, plus hostile calls."""

from __future__ import annotations

import os

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedrx.errors import ProtocolError

# Built by `pip install -e .` (setup.py); CI has a C compiler, so a missing module fails.
from fedrx.secagg import _bitpack_native as native  # noqa: E402
from fedrx.secagg import bitpack

FORCED_NUMPY = os.environ.get("FEDRX_BITPACK", "").lower() == "numpy"
uses_native = pytest.mark.skipif(FORCED_NUMPY, reason="FEDRX_BITPACK=numpy disables the kernel")


def _ref_pack(vals: np.ndarray, m: int) -> bytes:
    acc = 0
    for i, x in enumerate(int(v) for v in vals):
        acc |= x << (i * m)
    return acc.to_bytes(bitpack.packed_size(len(vals), m), "little")


def _values(rng: np.random.Generator, n: int, m: int) -> np.ndarray:
    top = (1 << m) - 1
    v = rng.integers(0, top, n, dtype=np.uint64, endpoint=True)
    if n:
        v[rng.integers(0, n)] = top  # the extreme value somewhere
    return v


def test_native_kernel_is_built_and_in_use():
    """pip install compiles the kernel; a missing or stale build would silently cost 3-10x
    in aggregation time, so this fails unless the numpy path was asked for explicitly."""
    if FORCED_NUMPY:
        assert bitpack.BACKEND == "numpy"
    else:
        assert bitpack.BACKEND == "native"
        assert native.API_VERSION == bitpack._API_VERSION
        names = ("none", "avx2", "avx512vbmi")
        cap = {"scalar": 0, "avx2": 1}.get(os.environ.get("FEDRX_BITPACK", "").lower(), 2)
        assert bitpack.SIMD == names[min(cap, names.index(native.SIMD))]


@uses_native
@pytest.mark.parametrize("m", range(1, 65))
def test_native_matches_numpy_and_reference_for_every_width(m):
    rng = np.random.default_rng(m)
    # lengths around the group size (8) and the end of the kernel's fast region
    for n in (0, 1, 2, 7, 8, 9, 15, 16, 17, 23, 24, 25, 31, 33, 63, 64, 65, 127, 1001):
        v = _values(rng, n, m)
        ref = _ref_pack(v, m)
        assert native.pack(v, m) == ref, (m, n)
        assert bitpack._pack_numpy(v, m) == ref, (m, n)
        assert bitpack.pack(v, m) == ref, (m, n)
        assert np.array_equal(bitpack.unpack(ref, m, n), v), (m, n)
        assert np.array_equal(bitpack._unpack_numpy(ref, m, n), v), (m, n)
        sums = {b: bitpack.SumAccumulator(m, n, backend=b) for b in ("native", "numpy")}
        want = np.zeros(n, dtype=np.uint64)
        for _ in range(3):
            w = _values(rng, n, m)
            for acc in sums.values():
                acc.add(bitpack.pack(w, m))
            want += w
        if m < 64:
            want &= np.uint64((1 << m) - 1)
        for b, acc in sums.items():
            assert np.array_equal(acc.total(), want), (b, m, n)


def test_simd_kernels_equal_scalar_kernel_for_every_width():
    """unpack_add's AVX-512 VBMI and AVX2 paths (those this CPU has; ``native.SIMD`` names
    the best) and the portable scalar path give identical sums, including the groups each
    SIMD path leaves to the scalar code near the end of the buffer."""
    assert native.SIMD in ("avx512vbmi", "avx2", "none")
    levels = range({"none": 0, "avx2": 1, "avx512vbmi": 2}[native.SIMD] + 1)
    rng = np.random.default_rng(99)
    for m in range(1, 65):
        for n in (*range(0, 130, 9), 517, 4099):
            v = _values(rng, n, m)
            packed = native.pack(v, m)
            start = rng.integers(0, 2**64 - 1, n, dtype=np.uint64, endpoint=True)
            for level in (-1, *levels):
                a = start.copy()
                native.unpack_add(packed, m, n, a, level)
                assert np.array_equal(a - start, v), (m, n, level)


@uses_native
@settings(max_examples=200, deadline=None)
@given(m=st.integers(1, 64), n=st.integers(0, 300), seed=st.integers(0, 2**32 - 1),
       k=st.integers(1, 6))
def test_native_sum_equals_plain_sum_mod_2m(m, n, seed, k):
    rng = np.random.default_rng(seed)
    acc = bitpack.SumAccumulator(m, n, backend="native")
    want = np.zeros(n, dtype=np.uint64)
    for _ in range(k):
        v = _values(rng, n, m)
        packed = bitpack.pack(v, m)
        assert packed == _ref_pack(v, m)
        acc.add(packed)
        want += v
    if m < 64:
        want &= np.uint64((1 << m) - 1)
    assert np.array_equal(acc.total(), want)


@uses_native
@settings(max_examples=300, deadline=None)
@given(m=st.integers(1, 64), n=st.integers(0, 200), draw=st.data())
def test_arbitrary_received_bytes_are_refused_or_equal_the_numpy_reading(m, n, draw):
    """Whatever bytes a hospital sends as its packed vector, the aggregator's native add
    either refuses them (wrong size, non-zero padding) without touching the sum or adds
    exactly what the numpy reader reads; it never reads past the buffer (the kernel only
    runs on validated sizes)."""
    size = bitpack.packed_size(n, m)
    size = draw.draw(st.sampled_from([size, size, size, max(size - 1, 0), size + 1]))
    data = draw.draw(st.binary(min_size=size, max_size=size))
    acc = bitpack.SumAccumulator(m, n, backend="native")
    try:
        acc.add(data)
    except ProtocolError:
        assert not acc.total().any()
        with pytest.raises(ProtocolError):
            bitpack._unpack_numpy(data, m, n)
        return
    assert np.array_equal(acc.total(), bitpack._unpack_numpy(data, m, n))


@uses_native
def test_native_accumulator_validates_before_adding():
    acc = bitpack.SumAccumulator(5, 11, backend="native")
    acc.add(bitpack.pack(np.arange(11, dtype=np.uint64), 5))
    before = acc.total()
    for bad in (b"\x00" * 6, b"\x00" * 8, b"\x00" * 6 + b"\x80", "x" * 7, 7):
        with pytest.raises(ProtocolError):
            acc.add(bad)  # type: ignore[arg-type]
    assert np.array_equal(acc.total(), before)
    with pytest.raises(ProtocolError, match="does not fit in 5 bits"):
        bitpack.pack(np.array([1, 32], dtype=np.uint64), 5)


def test_raw_kernel_refuses_wrong_sizes_instead_of_reading_out_of_bounds():
    v = np.arange(10, dtype=np.uint64)
    data = native.pack(v, 7)
    acc = np.zeros(10, dtype=np.uint64)
    with pytest.raises(ValueError):
        native.unpack_add(data[:-1], 7, 10, acc)  # data too short for count
    with pytest.raises(ValueError):
        native.unpack_add(data + b"\x00", 7, 10, acc)  # too long
    with pytest.raises(ValueError):
        native.unpack_add(data, 7, 10, np.zeros(9, dtype=np.uint64))  # acc too short
    with pytest.raises(ValueError):
        native.unpack_add(data, 7, -1, acc)
    for m in (0, 65, -3):
        with pytest.raises(ValueError):
            native.unpack_add(data, m, 10, acc)
        with pytest.raises(ValueError):
            native.pack(v, m)
    with pytest.raises(ValueError):
        native.pack(b"\x00" * 12, 7)  # not a whole number of uint64
    unaligned = np.zeros(11 * 8 + 1, dtype=np.uint8)[1:].view(np.uint64)
    with pytest.raises(ValueError):
        native.unpack_add(data, 7, 10, unaligned)
    with pytest.raises((TypeError, BufferError)):
        native.unpack_add(data, 7, 10, bytes(80))  # read-only accumulator
    with pytest.raises((TypeError, BufferError, ValueError)):
        native.pack(np.arange(20, dtype=np.uint64)[::2], 7)  # not contiguous
    assert not acc.any()


def test_numpy_backend_can_be_forced_and_unknown_backend_is_refused():
    with pytest.raises(ValueError, match="not available"):
        bitpack.SumAccumulator(8, 4, backend="gpu")
    acc = bitpack.SumAccumulator(8, 4, backend="numpy")
    acc.add(bytes([1, 2, 3, 4]))
    assert acc.total().tolist() == [1, 2, 3, 4]


_FUZZ = """
import random, sys
import numpy as np
sys.path.insert(0, sys.argv[1])
import _bitpack_native as N
rng = random.Random(int(sys.argv[2]))
for _ in range(2000):
    m, n = rng.randint(1, 64), rng.randint(0, 300)
    v = np.array([rng.getrandbits(m) for _ in range(n)], dtype=np.uint64)
    p = N.pack(v, m)
    acc = np.zeros(n, dtype=np.uint64)
    N.unpack_add(bytes(p), m, n, acc, rng.choice((-1, 0, 1, 2)))
    assert np.array_equal(acc, v)
print("clean", N.SIMD)
"""


def test_kernel_is_clean_under_address_and_undefined_behaviour_sanitizers(tmp_path):
    """The C file rebuilt with ASan + UBSan and exercised on exactly-sized buffers (every
    allocation through malloc, so every buffer has red zones): no out-of-bounds read or
    write and no undefined behaviour, on every path (scalar, AVX2, AVX-512 VBMI, as this CPU
    has them)."""
    import shutil
    import subprocess
    import sys
    import sysconfig
    from pathlib import Path

    cc = shutil.which("gcc")
    if cc is None:
        pytest.skip("gcc not found")
    libasan = subprocess.run([cc, "-print-file-name=libasan.so"], capture_output=True,
                             text=True, check=False).stdout.strip()
    if not libasan or not Path(libasan).is_file():
        pytest.skip("libasan not available")
    src = Path(__file__).resolve().parents[1] / "secagg" / "_bitpack_native.c"
    so = tmp_path / f"_bitpack_native{sysconfig.get_config_var('EXT_SUFFIX')}"
    build = subprocess.run(
        [cc, "-O1", "-g", "-fsanitize=address,undefined", "-fno-sanitize-recover=undefined",
         "-fno-omit-frame-pointer", "-shared", "-fPIC",
         f"-I{sysconfig.get_paths()['include']}", str(src), "-o", str(so)],
        capture_output=True, text=True, check=False)
    assert build.returncode == 0, build.stderr[-2000:]
    env = dict(os.environ, LD_PRELOAD=libasan, ASAN_OPTIONS="detect_leaks=0",
               PYTHONMALLOC="malloc")
    run = subprocess.run([sys.executable, "-c", _FUZZ, str(tmp_path), "7"], env=env,
                         capture_output=True, text=True, timeout=600, check=False)
    assert run.returncode == 0 and "clean" in run.stdout, (run.stdout + run.stderr)[-3000:]
