/*
 * fedrx.secagg._bitpack_native: compiled kernels for m-bit packing (1 <= m <= 64).
 *
 * Wire format (the contract, identical to fedrx.secagg.bitpack's numpy code): element i
 * occupies bits [i*m, (i+1)*m) of a little-endian bit stream (LSB first), in exactly
 * ceil(count*m/8) bytes; the padding bits of the last byte are zero.
 *
 *   pack(values, m) -> bytes          values: aligned uint64 buffer (count*8 bytes, native
 *                                     order); returns ceil(count*m/8) bytes; raises
 *                                     ValueError if a value is >= 2**m.
 *   unpack_add(data, m, count, acc[, level])
 *                                     acc[i] += element i (uint64, wrapping), for i < count;
 *                                     data must hold exactly ceil(count*m/8) bytes, acc at
 *                                     least count*8 bytes. Padding is NOT checked here (the
 *                                     Python caller checks it before calling). level: -1
 *                                     the best this CPU has (default), 0 scalar, 1 AVX2,
 *                                     2 AVX-512 VBMI, capped at what the CPU has (tests
 *                                     compare them all).
 *   SIMD                              the best kernel unpack_add uses for m <= 57 on this
 *                                     CPU: "avx512vbmi", "avx2" or "none".
 *
 * Memory safety: every size is checked against the buffers before any access; the fast
 * loops only run over groups whose widest 8-byte (9-byte for m >= 58) window lies inside
 * the data, the rest goes through a byte-wise path. The GIL is released while looping
 * (the Py_buffer views keep the memory alive). Hand-written; no generated code.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

static inline uint64_t load_le64(const uint8_t *p)
{
    uint64_t v;
    memcpy(&v, p, 8);
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
    v = __builtin_bswap64(v);
#endif
    return v;
}

static inline void store_le64(uint8_t *p, uint64_t v)
{
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
    v = __builtin_bswap64(v);
#endif
    memcpy(p, &v, 8);
}

static inline uint64_t mask_of(unsigned m)
{
    return m >= 64 ? UINT64_MAX : ((UINT64_C(1) << m) - 1);
}

/* Element i read byte by byte (never touches a byte at or past ceil((i+1)*m/8)). */
static inline uint64_t extract_slow(const uint8_t *p, size_t i, unsigned m)
{
    uint64_t bit = (uint64_t)i * m;
    size_t byte = (size_t)(bit >> 3);
    unsigned sh = (unsigned)(bit & 7);
    size_t last = (size_t)((bit + m - 1) >> 3);
    uint64_t v = (uint64_t)p[byte] >> sh;
    unsigned have = 8 - sh;
    for (size_t b = byte + 1; b <= last; b++) {
        v |= (uint64_t)p[b] << have; /* have < 64 here: m <= 64 */
        have += 8;
    }
    return v & mask_of(m);
}

/* acc[i] += element i for group0*8 <= i < count (the groups before group0 were done by the
 * SIMD kernel). M is a compile-time constant in each instance. */
static inline __attribute__((always_inline)) void
unpack_add_impl(const uint8_t *p, size_t len, size_t count, uint64_t *acc, size_t group0,
                const unsigned M)
{
    const uint64_t mask = mask_of(M);
    size_t groups = count / 8, g = group0;
    /* group g reads bytes [g*M, g*M + off_7 + 9) with off_7 = (7M)/8 <= M - 1 */
    size_t fast = len >= (size_t)M + 9 ? (len - M - 9) / M + 1 : 0;
    if (fast > groups) fast = groups;
    for (; g < fast; g++) {
        const uint8_t *b = p + g * (size_t)M;
        uint64_t *a = acc + g * 8;
        for (unsigned j = 0; j < 8; j++) {
            const unsigned off = (j * M) >> 3, sh = (j * M) & 7;
            uint64_t v = load_le64(b + off) >> sh;
            if (sh + M > 64)
                v |= (uint64_t)b[off + 8] << (64 - sh);
            a[j] += v & mask;
        }
    }
    for (size_t i = g * 8; i < count; i++)
        acc[i] += extract_slow(p, i, M);
}

/* Sequential bit writer: whole 64-bit words, then the tail bytes. */
static inline __attribute__((always_inline)) int
pack_impl(const uint64_t *v, size_t count, uint8_t *out, const unsigned M)
{
    uint64_t word = 0, seen = 0;
    unsigned nb = 0; /* bits pending in word, < 64 */
    uint8_t *o = out;
    for (size_t i = 0; i < count; i++) {
        uint64_t x = v[i];
        seen |= x;
        word |= x << nb; /* nb < 64 */
        nb += M;
        if (nb >= 64) {
            store_le64(o, word);
            o += 8;
            nb -= 64;
            word = nb ? x >> (M - nb) : 0; /* M - nb in [1, M) when nb > 0 */
        }
    }
    size_t tail = (nb + 7) / 8;
    for (size_t k = 0; k < tail; k++)
        o[k] = (uint8_t)(word >> (8 * k));
    return M >= 64 || (seen >> (M % 64)) == 0;
}

typedef void (*unpack_fn)(const uint8_t *, size_t, size_t, uint64_t *, size_t);
typedef int (*pack_fn)(const uint64_t *, size_t, uint8_t *);

#define DEF(M)                                                                       \
    static void unpack_add_##M(const uint8_t *p, size_t len, size_t c, uint64_t *a,  \
                               size_t g0)                                            \
    {                                                                                \
        unpack_add_impl(p, len, c, a, g0, M);                                        \
    }                                                                                \
    static int pack_##M(const uint64_t *v, size_t c, uint8_t *o)                     \
    {                                                                                \
        return pack_impl(v, c, o, M);                                                \
    }
/* X-macro over every width 1..64: one specialised instance of each kernel per width. */
#define FOR_EACH_WIDTH(X)                                                                \
    X(1) X(2) X(3) X(4) X(5) X(6) X(7) X(8) X(9) X(10) X(11) X(12) X(13) X(14) X(15)     \
    X(16) X(17) X(18) X(19) X(20) X(21) X(22) X(23) X(24) X(25) X(26) X(27) X(28) X(29) \
    X(30) X(31) X(32) X(33) X(34) X(35) X(36) X(37) X(38) X(39) X(40) X(41) X(42) X(43) \
    X(44) X(45) X(46) X(47) X(48) X(49) X(50) X(51) X(52) X(53) X(54) X(55) X(56) X(57) \
    X(58) X(59) X(60) X(61) X(62) X(63) X(64)

FOR_EACH_WIDTH(DEF)
#undef DEF

#define UNPACK_ROW(M) unpack_add_##M,
#define PACK_ROW(M) pack_##M,
static const unpack_fn UNPACK[65] = {NULL, FOR_EACH_WIDTH(UNPACK_ROW)};
static const pack_fn PACK[65] = {NULL, FOR_EACH_WIDTH(PACK_ROW)};
#undef UNPACK_ROW
#undef PACK_ROW

/* AVX-512 VBMI kernel (x86-64 with GCC or clang; used only when the CPU and OS support it,
 * checked at run time). For m <= 57 every element of a group of 8 lies inside one 8-byte
 * window at byte off_j = (j*m)/8 with its low bit at s_j = (j*m)%8 and s_j + m <= 64, and
 * the 8 windows lie inside the group's first 64 bytes. One 64-byte load, one byte
 * permutation (vpermb) into 8 lanes, one variable shift, one AND and one 8-lane add handle
 * a whole group. Returns the number of groups done (those whose 64-byte load is in bounds);
 * the scalar code finishes the rest. */
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
#define FEDRX_HAVE_VBMI_KERNEL 1
__attribute__((target("avx512f,avx512bw,avx512vbmi"))) static size_t
unpack_add_vbmi(const uint8_t *p, size_t len, size_t groups, uint64_t *acc, unsigned m)
{
    uint8_t idx[64];
    uint64_t shift[8];
    for (unsigned j = 0; j < 8; j++) {
        unsigned off = (j * m) >> 3;
        shift[j] = (j * m) & 7;
        for (unsigned k = 0; k < 8; k++)
            idx[8 * j + k] = (uint8_t)(off + k);
    }
    const __m512i vidx = _mm512_loadu_si512((const void *)idx);
    const __m512i vshift = _mm512_loadu_si512((const void *)shift);
    const __m512i vmask = _mm512_set1_epi64((long long)mask_of(m));
    size_t fast = len >= 64 ? (len - 64) / m + 1 : 0;
    if (fast > groups)
        fast = groups;
    for (size_t g = 0; g < fast; g++) {
        __m512i w = _mm512_loadu_si512((const void *)(p + g * (size_t)m));
        w = _mm512_permutexvar_epi8(vidx, w);
        w = _mm512_and_si512(_mm512_srlv_epi64(w, vshift), vmask);
        __m512i a = _mm512_loadu_si512((const void *)(acc + 8 * g));
        _mm512_storeu_si512((void *)(acc + 8 * g), _mm512_add_epi64(a, w));
    }
    return fast;
}

/* AVX2 kernel (the same idea for CPUs without AVX-512 VBMI): a group of 8 elements as two
 * halves of 4. For m <= 57, elements 2i and 2i+1 lie inside 16 bytes starting at off_{2i}
 * (off_{2i+1} - off_{2i} + 8 <= 16), so two 16-byte loads fill one 256-bit vector, one
 * in-lane byte shuffle (vpshufb) puts each element's 8-byte window in its 64-bit lane,
 * then a variable shift, an AND and a 4-lane add. Returns the groups done (those whose
 * last 16-byte load, at off_6, is in bounds). */
__attribute__((target("avx2"))) static size_t
unpack_add_avx2(const uint8_t *p, size_t len, size_t groups, uint64_t *acc, unsigned m)
{
    unsigned off[8];
    uint64_t shift[8];
    uint8_t idx[2][32];
    for (unsigned j = 0; j < 8; j++) {
        off[j] = (j * m) >> 3;
        shift[j] = (j * m) & 7;
    }
    for (unsigned h = 0; h < 2; h++)       /* half: elements 4h .. 4h+3 */
        for (unsigned l = 0; l < 2; l++)   /* 128-bit lane: elements 4h+2l, 4h+2l+1 */
            for (unsigned k = 0; k < 8; k++) {
                unsigned a = 4 * h + 2 * l;
                idx[h][16 * l + k] = (uint8_t)k;
                idx[h][16 * l + 8 + k] = (uint8_t)(off[a + 1] - off[a] + k);
            }
    const __m256i vidx0 = _mm256_loadu_si256((const void *)idx[0]);
    const __m256i vidx1 = _mm256_loadu_si256((const void *)idx[1]);
    const __m256i vsh0 = _mm256_loadu_si256((const void *)shift);
    const __m256i vsh1 = _mm256_loadu_si256((const void *)(shift + 4));
    const __m256i vmask = _mm256_set1_epi64x((long long)mask_of(m));
    size_t fast = len >= off[6] + 16 ? (len - off[6] - 16) / m + 1 : 0;
    if (fast > groups)
        fast = groups;
    for (size_t g = 0; g < fast; g++) {
        const uint8_t *b = p + g * (size_t)m;
        uint64_t *a = acc + 8 * g;
        __m256i x = _mm256_inserti128_si256(
            _mm256_castsi128_si256(_mm_loadu_si128((const void *)(b + off[0]))),
            _mm_loadu_si128((const void *)(b + off[2])), 1);
        __m256i y = _mm256_inserti128_si256(
            _mm256_castsi128_si256(_mm_loadu_si128((const void *)(b + off[4]))),
            _mm_loadu_si128((const void *)(b + off[6])), 1);
        x = _mm256_and_si256(_mm256_srlv_epi64(_mm256_shuffle_epi8(x, vidx0), vsh0), vmask);
        y = _mm256_and_si256(_mm256_srlv_epi64(_mm256_shuffle_epi8(y, vidx1), vsh1), vmask);
        _mm256_storeu_si256((void *)a,
                            _mm256_add_epi64(_mm256_loadu_si256((const void *)a), x));
        _mm256_storeu_si256((void *)(a + 4),
                            _mm256_add_epi64(_mm256_loadu_si256((const void *)(a + 4)), y));
    }
    return fast;
}

static int cpu_simd_level(void)
{
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
        __builtin_cpu_supports("avx512vbmi"))
        return 2;
    return __builtin_cpu_supports("avx2") ? 1 : 0;
}
#else
static int cpu_simd_level(void) { return 0; }
#endif

static int simd_level = 0; /* 0 scalar, 1 AVX2, 2 AVX-512 VBMI; set at import */
static const char *const SIMD_NAMES[3] = {"none", "avx2", "avx512vbmi"};

/* want: -1 = the best this CPU has, else the level to use (0 scalar, 1 AVX2, 2 VBMI),
 * never above what the CPU has. */
static void unpack_add_dispatch(const uint8_t *p, size_t len, size_t count, uint64_t *acc,
                                unsigned m, int want)
{
    size_t g0 = 0;
    int level = (want < 0 || want > simd_level) ? simd_level : want;
#ifdef FEDRX_HAVE_VBMI_KERNEL
    if (m <= 57 && level == 2)
        g0 = unpack_add_vbmi(p, len, count / 8, acc, m);
    else if (m <= 57 && level == 1)
        g0 = unpack_add_avx2(p, len, count / 8, acc, m);
#else
    (void)level;
#endif
    UNPACK[m](p, len, count, acc, g0);
}

static int packed_size(size_t count, unsigned m, size_t *out)
{
    /* ceil(count*m/8) without overflow */
    if (count > (SIZE_MAX - 7) / 64) return -1;
    *out = (count * m + 7) / 8;
    return 0;
}

static PyObject *py_pack(PyObject *self, PyObject *args)
{
    Py_buffer vals;
    int m, ok;
    size_t need;
    (void)self;
    if (!PyArg_ParseTuple(args, "y*i", &vals, &m))
        return NULL;
    PyObject *ret = NULL;
    if (m < 1 || m > 64) {
        PyErr_SetString(PyExc_ValueError, "modulus bits must be in [1, 64]");
        goto done;
    }
    if (vals.len % 8 || !PyBuffer_IsContiguous(&vals, 'C') || ((uintptr_t)vals.buf) % 8) {
        PyErr_SetString(PyExc_ValueError, "values must be an aligned contiguous uint64 buffer");
        goto done;
    }
    size_t count = (size_t)vals.len / 8;
    if (packed_size(count, (unsigned)m, &need) || need > (size_t)PY_SSIZE_T_MAX) {
        PyErr_SetString(PyExc_ValueError, "too many values");
        goto done;
    }
    ret = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)need);
    if (!ret)
        goto done;
    uint8_t *o = (uint8_t *)PyBytes_AS_STRING(ret);
    Py_BEGIN_ALLOW_THREADS
    ok = PACK[m]((const uint64_t *)vals.buf, count, o);
    Py_END_ALLOW_THREADS
    if (!ok) {
        Py_CLEAR(ret);
        PyErr_Format(PyExc_ValueError, "value does not fit in %d bits", m);
    }
done:
    PyBuffer_Release(&vals);
    return ret;
}

static PyObject *py_unpack_add(PyObject *self, PyObject *args)
{
    Py_buffer data, acc;
    int m;
    Py_ssize_t count;
    size_t need;
    int want = -1;
    (void)self;
    if (!PyArg_ParseTuple(args, "y*inw*|i", &data, &m, &count, &acc, &want))
        return NULL;
    PyObject *ret = NULL;
    if (m < 1 || m > 64) {
        PyErr_SetString(PyExc_ValueError, "modulus bits must be in [1, 64]");
        goto done;
    }
    if (count < 0 || packed_size((size_t)count, (unsigned)m, &need) ||
        (size_t)data.len != need || !PyBuffer_IsContiguous(&data, 'C')) {
        PyErr_SetString(PyExc_ValueError, "packed data has the wrong size");
        goto done;
    }
    if ((size_t)acc.len / 8 < (size_t)count || !PyBuffer_IsContiguous(&acc, 'C') ||
        ((uintptr_t)acc.buf) % 8) {
        PyErr_SetString(PyExc_ValueError, "accumulator must be an aligned uint64 buffer "
                                          "of at least count elements");
        goto done;
    }
    Py_BEGIN_ALLOW_THREADS
    unpack_add_dispatch((const uint8_t *)data.buf, (size_t)data.len, (size_t)count,
                        (uint64_t *)acc.buf, (unsigned)m, want);
    Py_END_ALLOW_THREADS
    Py_INCREF(Py_None);
    ret = Py_None;
done:
    PyBuffer_Release(&data);
    PyBuffer_Release(&acc);
    return ret;
}

static PyMethodDef methods[] = {
    {"pack", py_pack, METH_VARARGS,
     "pack(values, m) -> bytes: pack uint64 values (< 2**m) into ceil(n*m/8) bytes."},
    {"unpack_add", py_unpack_add, METH_VARARGS,
     "unpack_add(data, m, count, acc, level=-1): acc[i] += element i of the m-bit packed "
     "data; level -1 = the best SIMD this CPU has, 0 scalar, 1 AVX2, 2 AVX-512 VBMI (never "
     "above what the CPU has)."},
    {NULL, NULL, 0, NULL}};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_bitpack_native",
                                    "Compiled m-bit packing kernels (see bitpack.py).", -1,
                                    methods, NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit__bitpack_native(void)
{
    PyObject *mod = PyModule_Create(&module);
    simd_level = cpu_simd_level();
    if (mod && (PyModule_AddIntConstant(mod, "API_VERSION", 2) < 0 ||
                PyModule_AddStringConstant(mod, "SIMD", SIMD_NAMES[simd_level]) < 0)) {
        Py_DECREF(mod);
        return NULL;
    }
    return mod;
}
