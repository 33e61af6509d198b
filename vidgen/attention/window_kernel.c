/* Fused 3D window attention on the CPU: keys are read in place from the (T, H, W) grid, nothing is gathered.
 *
 * Layout: q, k, v, o, do, dq, dk, dv are (BH, N, D), contiguous, N = T*H*W in (t, h, w) raster order, stored as
 * float32 (functions *_f32) or bfloat16 (*_bf16, raw uint16_t). lse and delta are float32 (BH, N) in both, and
 * every sum is accumulated in float32: bf16 is only the storage format, rounded once when a row is written.
 * A query at (t, h, w) sees keys with |t'-t| <= rt, |h'-h| <= rh, |w'-w| <= rw, and t' <= t when causal (a radius
 * of at least the axis length means the whole axis). Every call handles the frames [f0, f1) of the flattened
 * (BH * T) frames of queries (forward, dq) or keys (dk, dv), so callers split the work over threads without sharing
 * writes.
 *
 * Forward saves the log-sum-exp per query; backward recomputes probabilities from it (as flash attention does):
 *   dv_j = sum_i p_ij do_i,  ds_ij = p_ij (do_i . v_j - delta_i),  dq_i = scale sum_j ds_ij k_j,
 *   dk_j = scale sum_i ds_ij q_i,  delta_i = do_i . o_i (computed by the query pass, which runs first).
 * The key pass walks, for each key, the queries whose window holds it (the window is symmetric in h and w, and in t
 * unless causal), so dk and dv are written by exactly one thread each: no atomics. (Storing p and ds from the query
 * pass instead measured no faster at 16k-32k tokens: the key pass then reads them transposed, one cache line each.)
 *
 * bf16 dot products use AVX512-BF16 (vdpbf16ps: pairs of bf16 products summed into float32 lanes) when the
 * compiler targets it (-march=native on a CPU that has it), else a float32 loop over converted values.
 */
#include <float.h>
#include <math.h>
#include <stdint.h>
#include <string.h>
#if defined(__AVX512F__)
#include <immintrin.h>
#endif

typedef struct { int T, H, W, D, rt, rh, rw, causal; float scale; } Geometry;
typedef struct { int t0, t1, h0, h1, w0, w1; } Box;

static inline int imax(int a, int b) { return a > b ? a : b; }
static inline int imin(int a, int b) { return a < b ? a : b; }

/* keys of the largest window: the size of each scratch array */
static inline long window_keys(const Geometry *g) {
    return (long)imin(2 * g->rt + 1, g->T) * imin(2 * g->rh + 1, g->H) * imin(2 * g->rw + 1, g->W);
}

/* ---- float32 storage ---- */
static inline float dot_f32(const float *restrict a, const float *restrict b, int d) {
    float s = 0.0f;
    for (int i = 0; i < d; i++) s += a[i] * b[i];
    return s;
}

static inline void axpy_f32(float *restrict y, float a, const float *restrict x, int d) {
    for (int i = 0; i < d; i++) y[i] += a * x[i];
}

static inline void store_f32(float *restrict dst, const float *restrict acc, int d) {
    memcpy(dst, acc, sizeof(float) * d);
}

/* ---- bfloat16 storage (the upper half of a float32) ---- */
static inline float bf16_to_f32(uint16_t x) {
    union { uint32_t u; float f; } c = {(uint32_t)x << 16};
    return c.f;
}

static inline uint16_t f32_to_bf16(float f) {  /* round to nearest even, as torch's .to(torch.bfloat16) */
    union { float f; uint32_t u; } c = {f};
    if ((c.u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((c.u >> 16) | 0x40);  /* NaN stays NaN */
    return (uint16_t)((c.u + 0x7fffu + ((c.u >> 16) & 1u)) >> 16);
}

static inline float dot_bf16(const uint16_t *restrict a, const uint16_t *restrict b, int d) {
#if defined(__AVX512BF16__) && defined(__AVX512F__)
    if (d % 32 == 0) {
        __m512 acc = _mm512_setzero_ps();
        for (int i = 0; i < d; i += 32)
            acc = _mm512_dpbf16_ps(acc, (__m512bh)_mm512_loadu_si512(a + i), (__m512bh)_mm512_loadu_si512(b + i));
        return _mm512_reduce_add_ps(acc);
    }
#endif
    float s = 0.0f;
    for (int i = 0; i < d; i++) s += bf16_to_f32(a[i]) * bf16_to_f32(b[i]);
    return s;
}

static inline void axpy_bf16(float *restrict y, float a, const uint16_t *restrict x, int d) {
    for (int i = 0; i < d; i++) y[i] += a * bf16_to_f32(x[i]);
}

static inline void store_bf16(uint16_t *restrict dst, const float *restrict acc, int d) {
    for (int i = 0; i < d; i++) dst[i] = f32_to_bf16(acc[i]);
}

/* out[c] = x . rows[c] for `count` consecutive rows (a window's keys along w are adjacent in memory). With AVX-512
 * and D = 64, four dot products share one horizontal reduction (a transpose-and-add of four accumulators) instead of
 * paying one full reduction each: the reductions, not the multiply-adds, dominated the per-pair cost. */
#if defined(__AVX512F__)
static inline __m128 reduce4(__m512 a0, __m512 a1, __m512 a2, __m512 a3) {
    const __m512 s01 = _mm512_add_ps(_mm512_unpacklo_ps(a0, a1), _mm512_unpackhi_ps(a0, a1));
    const __m512 s23 = _mm512_add_ps(_mm512_unpacklo_ps(a2, a3), _mm512_unpackhi_ps(a2, a3));
    const __m512d d01 = _mm512_castps_pd(s01), d23 = _mm512_castps_pd(s23);
    const __m512 s = _mm512_add_ps(_mm512_castpd_ps(_mm512_unpacklo_pd(d01, d23)),
                                   _mm512_castpd_ps(_mm512_unpackhi_pd(d01, d23)));  /* lane l: [a0 a1 a2 a3] */
    const __m256 h = _mm256_add_ps(_mm512_castps512_ps256(s),
                                   _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(s), 1)));
    return _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1));
}

static inline void store_upto4(float *out, __m128 r, int n) {
    if (n == 4) { _mm_storeu_ps(out, r); return; }
    float tmp[4];
    _mm_storeu_ps(tmp, r);
    for (int j = 0; j < n; j++) out[j] = tmp[j];
}
#endif

static inline void dots_f32(const float *restrict x, const float *restrict rows, int count, int d,
                            float *restrict out) {
#if defined(__AVX512F__)
    if (d == 64) {
        const __m512 x0 = _mm512_loadu_ps(x), x1 = _mm512_loadu_ps(x + 16), x2 = _mm512_loadu_ps(x + 32),
                     x3 = _mm512_loadu_ps(x + 48);
        for (int c = 0; c < count; c += 4) {
            __m512 a[4];
            for (int j = 0; j < 4; j++) {
                if (c + j >= count) { a[j] = _mm512_setzero_ps(); continue; }
                const float *r = rows + (long)(c + j) * 64;
                __m512 acc = _mm512_mul_ps(x0, _mm512_loadu_ps(r));
                acc = _mm512_fmadd_ps(x1, _mm512_loadu_ps(r + 16), acc);
                acc = _mm512_fmadd_ps(x2, _mm512_loadu_ps(r + 32), acc);
                a[j] = _mm512_fmadd_ps(x3, _mm512_loadu_ps(r + 48), acc);
            }
            store_upto4(out + c, reduce4(a[0], a[1], a[2], a[3]), imin(4, count - c));
        }
        return;
    }
#endif
    for (int c = 0; c < count; c++) out[c] = dot_f32(x, rows + (long)c * d, d);
}

static inline void dots_bf16(const uint16_t *restrict x, const uint16_t *restrict rows, int count, int d,
                             float *restrict out) {
#if defined(__AVX512BF16__) && defined(__AVX512F__)
    if (d == 64) {
        const __m512bh x0 = (__m512bh)_mm512_loadu_si512(x), x1 = (__m512bh)_mm512_loadu_si512(x + 32);
        for (int c = 0; c < count; c += 4) {
            __m512 a[4];
            for (int j = 0; j < 4; j++) {
                if (c + j >= count) { a[j] = _mm512_setzero_ps(); continue; }
                const uint16_t *r = rows + (long)(c + j) * 64;
                a[j] = _mm512_dpbf16_ps(_mm512_dpbf16_ps(_mm512_setzero_ps(), x0, (__m512bh)_mm512_loadu_si512(r)),
                                        x1, (__m512bh)_mm512_loadu_si512(r + 32));
            }
            store_upto4(out + c, reduce4(a[0], a[1], a[2], a[3]), imin(4, count - c));
        }
        return;
    }
#endif
    for (int c = 0; c < count; c++) out[c] = dot_bf16(x, rows + (long)c * d, d);
}

/* Weighted row sums, sum_c p_c row_c, accumulated in float32: acc_init, acc_add per row, acc_store rounds once.
 * float32: an axpy per row into buf. bf16 with AVX512-BF16 and D = 64: rows are taken in pairs, their words interleaved
 * (row a, row b) so that one vdpbf16ps adds p_a a_d + p_b b_d into each float32 lane; the pair of weights is rounded
 * to bf16 for it (as flash attention rounds P to bf16 before P @ V), the sum stays float32. That is 5 instructions per
 * row where converting each bf16 row to float32 for an axpy took 12 and made bf16 slower than float32 here. */
typedef struct { float *buf; } acc_f32;

static inline void acc_init_f32(acc_f32 *a, float *buf, int d) { a->buf = buf; memset(buf, 0, sizeof(float) * d); }
static inline void acc_add_f32(acc_f32 *a, float p, const float *row, int d) { axpy_f32(a->buf, p, row, d); }
static inline void acc_store_f32(acc_f32 *a, float *dst, int d) { store_f32(dst, a->buf, d); }

#if defined(__AVX512BF16__) && defined(__AVX512F__)
#define BF16_PAIRS 1
#endif

typedef struct {
    float *buf;
#ifdef BF16_PAIRS
    __m512 a0, a1, a2, a3;  /* d = 8l+i, 8l+4+i, 32+8l+i, 36+8l+i for lane l, element i */
    const uint16_t *row;    /* the first row of an unfinished pair, or NULL */
    float p;
#endif
} acc_bf16;

static inline void acc_init_bf16(acc_bf16 *a, float *buf, int d) {
    a->buf = buf;
    memset(buf, 0, sizeof(float) * d);
#ifdef BF16_PAIRS
    a->a0 = a->a1 = a->a2 = a->a3 = _mm512_setzero_ps();
    a->row = NULL;
    a->p = 0.0f;
#endif
}

static inline void acc_add_bf16(acc_bf16 *a, float p, const uint16_t *row, int d) {
#ifdef BF16_PAIRS
    if (d == 64) {
        if (!a->row) {
            a->row = row;
            a->p = p;
            return;
        }
        /* (p_a, p_b) rounded to bf16 by vcvtneps2bf16 and broadcast as one 32-bit pair */
        const __m128bh pair = _mm_cvtneps_pbh(_mm_set_ps(0.0f, 0.0f, p, a->p));
        const __m512bh w = (__m512bh)_mm512_broadcastd_epi32((__m128i)pair);
        const __m512i x0 = _mm512_loadu_si512(a->row), y0 = _mm512_loadu_si512(row);
        const __m512i x1 = _mm512_loadu_si512(a->row + 32), y1 = _mm512_loadu_si512(row + 32);
        a->a0 = _mm512_dpbf16_ps(a->a0, (__m512bh)_mm512_unpacklo_epi16(x0, y0), w);
        a->a1 = _mm512_dpbf16_ps(a->a1, (__m512bh)_mm512_unpackhi_epi16(x0, y0), w);
        a->a2 = _mm512_dpbf16_ps(a->a2, (__m512bh)_mm512_unpacklo_epi16(x1, y1), w);
        a->a3 = _mm512_dpbf16_ps(a->a3, (__m512bh)_mm512_unpackhi_epi16(x1, y1), w);
        a->row = NULL;
        return;
    }
#endif
    axpy_bf16(a->buf, p, row, d);
}

static inline void acc_store_bf16(acc_bf16 *a, uint16_t *dst, int d) {
#ifdef BF16_PAIRS
    if (d == 64) {
        if (a->row) acc_add_bf16(a, 0.0f, a->row, d);  /* an odd row out: pair it with itself at weight 0 */
        float tmp[64];
        _mm512_storeu_ps(tmp, a->a0);
        _mm512_storeu_ps(tmp + 16, a->a1);
        _mm512_storeu_ps(tmp + 32, a->a2);
        _mm512_storeu_ps(tmp + 48, a->a3);
        for (int e = 0; e < 16; e++) {
            const int dd = 8 * (e / 4) + e % 4;
            a->buf[dd] = tmp[e];
            a->buf[dd + 4] = tmp[16 + e];
            a->buf[dd + 32] = tmp[32 + e];
            a->buf[dd + 36] = tmp[48 + e];
        }
    }
#endif
    store_bf16(dst, a->buf, d);
}

/* keys seen by the query at (t, h, w), or (key_side) queries that see the key at (t, h, w) */
static inline Box box(const Geometry *g, int t, int h, int w, int key_side) {
    Box b = {imax(0, t - g->rt), imin(g->T - 1, t + g->rt), imax(0, h - g->rh), imin(g->H - 1, h + g->rh),
             imax(0, w - g->rw), imin(g->W - 1, w + g->rw)};
    if (g->causal) {
        if (key_side) b.t0 = t;
        else b.t1 = t;
    }
    return b;
}

#define TOKEN static inline __attribute__((always_inline)) void

/* every token of the frames [f0, f1), in raster order; head dim 64 (the common case) compiled as a constant.
 * (Column strips of 8 or 16 tokens, to keep consecutive queries' keys in L1, measured no faster in f32 or bf16.) */
#define FOR_EACH_TOKEN(g, f0, f1, token, ...)                                       \
    for (long f = (f0); f < (f1); f++) {                                            \
        const long bh = f / (g)->T;                                                 \
        const int t = (int)(f % (g)->T);                                            \
        for (int h = 0; h < (g)->H; h++)                                            \
            for (int w = 0; w < (g)->W; w++) {                                      \
                if ((g)->D == 64) token(g, 64, __VA_ARGS__, bh, t, h, w);           \
                else token(g, (g)->D, __VA_ARGS__, bh, t, h, w);                    \
            }                                                                       \
    }

#define ELEM float
#define SFX f32
#include "window_kernel_body.h"
#undef ELEM
#undef SFX

#define ELEM uint16_t
#define SFX bf16
#include "window_kernel_body.h"
#undef ELEM
#undef SFX

/* 1 when the bf16 dot products run on AVX512-BF16 instructions (reported by the Python side) */
int window_bf16_native(void) {
#if defined(__AVX512BF16__) && defined(__AVX512F__)
    return 1;
#else
    return 0;
#endif
}
