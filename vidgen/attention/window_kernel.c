/* Fused 3D window attention on the CPU: keys are read in place from the (T, H, W) grid, nothing is gathered.
 *
 * Layout: q, k, v, o, do, dq, dk, dv are (BH, N, D) float32, contiguous, N = T*H*W in (t, h, w) raster order.
 * A query at (t, h, w) sees keys with |t'-t| <= rt, |h'-h| <= rh, |w'-w| <= rw, and t' <= t when causal (a radius
 * of at least the axis length means the whole axis). Every call handles the frames [f0, f1) of the flattened
 * (BH * T) frames of queries (forward, dq) or keys (dk, dv), so callers split the work over threads without sharing
 * writes.
 *
 * Forward saves the log-sum-exp per query; backward recomputes probabilities from it (as flash attention does):
 *   dv_j = sum_i p_ij do_i,  ds_ij = p_ij (do_i . v_j - delta_i),  dq_i = scale sum_j ds_ij k_j,
 *   dk_j = scale sum_i ds_ij q_i,  delta_i = do_i . o_i.
 * The key pass walks, for each key, the queries whose window holds it (the window is symmetric in h and w, and in t
 * unless causal), so dk and dv are written by exactly one thread each: no atomics. (Storing p and ds from the query
 * pass instead measured no faster at 16k-32k tokens: the key pass then reads them transposed, one cache line each.)
 */
#include <float.h>
#include <math.h>
#include <string.h>

typedef struct { int T, H, W, D, rt, rh, rw, causal; float scale; } Geometry;
typedef struct { int t0, t1, h0, h1, w0, w1; } Box;

static inline int imax(int a, int b) { return a > b ? a : b; }
static inline int imin(int a, int b) { return a < b ? a : b; }

static inline float dot(const float *a, const float *b, int d) {
    float s = 0.0f;
    for (int i = 0; i < d; i++) s += a[i] * b[i];
    return s;
}

static inline void axpy(float *y, float a, const float *x, int d) {
    for (int i = 0; i < d; i++) y[i] += a * x[i];
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

TOKEN forward_token(const Geometry *g, const int D, const float *q, const float *k, const float *v, float *o,
                    float *lse, float *scratch, long bh, int t, int h, int w) {
    const int H = g->H, W = g->W;
    const long N = (long)g->T * H * W, row = bh * N + ((long)t * H + h) * W + w;
    const float *qi = q + row * D, *kb = k + bh * N * D, *vb = v + bh * N * D;
    const Box b = box(g, t, h, w, 0);
    float m = -FLT_MAX;
    int n = 0;
    for (int tt = b.t0; tt <= b.t1; tt++)
        for (int hh = b.h0; hh <= b.h1; hh++) {
            const long base = ((long)tt * H + hh) * W;
            for (int ww = b.w0; ww <= b.w1; ww++) {
                const float s = dot(qi, kb + (base + ww) * D, D) * g->scale;
                scratch[n++] = s;
                if (s > m) m = s;
            }
        }
    float l = 0.0f;
    for (int c = 0; c < n; c++) {
        scratch[c] = expf(scratch[c] - m);
        l += scratch[c];
    }
    float *oi = o + row * D;
    memset(oi, 0, sizeof(float) * D);
    const float inv = 1.0f / l;
    n = 0;
    for (int tt = b.t0; tt <= b.t1; tt++)
        for (int hh = b.h0; hh <= b.h1; hh++) {
            const long base = ((long)tt * H + hh) * W;
            for (int ww = b.w0; ww <= b.w1; ww++) axpy(oi, scratch[n++] * inv, vb + (base + ww) * D, D);
        }
    lse[row] = m + logf(l);
}

TOKEN backward_q_token(const Geometry *g, const int D, const float *q, const float *k, const float *v,
                       const float *dout, const float *lse, const float *delta, float *dq, long bh, int t, int h,
                       int w) {
    const int H = g->H, W = g->W;
    const long N = (long)g->T * H * W, row = bh * N + ((long)t * H + h) * W + w;
    const float *qi = q + row * D, *doi = dout + row * D, *kb = k + bh * N * D, *vb = v + bh * N * D;
    const float li = lse[row], di = delta[row];
    float *dqi = dq + row * D;
    memset(dqi, 0, sizeof(float) * D);
    const Box b = box(g, t, h, w, 0);
    for (int tt = b.t0; tt <= b.t1; tt++)
        for (int hh = b.h0; hh <= b.h1; hh++) {
            const long base = ((long)tt * H + hh) * W;
            for (int ww = b.w0; ww <= b.w1; ww++) {
                const float *kj = kb + (base + ww) * D, *vj = vb + (base + ww) * D;
                const float p = expf(dot(qi, kj, D) * g->scale - li);
                axpy(dqi, p * (dot(doi, vj, D) - di) * g->scale, kj, D);
            }
        }
}

TOKEN backward_kv_token(const Geometry *g, const int D, const float *q, const float *k, const float *v,
                        const float *dout, const float *lse, const float *delta, float *dk, float *dv, long bh, int t,
                        int h, int w) {
    const int H = g->H, W = g->W;
    const long N = (long)g->T * H * W, row = bh * N + ((long)t * H + h) * W + w;
    const float *kj = k + row * D, *vj = v + row * D, *qb = q + bh * N * D, *dob = dout + bh * N * D;
    const float *lb = lse + bh * N, *db = delta + bh * N;
    float *dkj = dk + row * D, *dvj = dv + row * D;
    memset(dkj, 0, sizeof(float) * D);
    memset(dvj, 0, sizeof(float) * D);
    const Box b = box(g, t, h, w, 1);
    for (int tt = b.t0; tt <= b.t1; tt++)
        for (int hh = b.h0; hh <= b.h1; hh++) {
            const long base = ((long)tt * H + hh) * W;
            for (int ww = b.w0; ww <= b.w1; ww++) {
                const long i = base + ww;
                const float *qi = qb + i * D, *doi = dob + i * D;
                const float p = expf(dot(qi, kj, D) * g->scale - lb[i]);
                axpy(dvj, p, doi, D);
                axpy(dkj, p * (dot(doi, vj, D) - db[i]) * g->scale, qi, D);
            }
        }
}

/* every token of the frames [f0, f1), in raster order; head dim 64 (the common case) compiled as a constant */
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

/* scratch: one float per key of the largest window */
void window_forward(const float *q, const float *k, const float *v, float *o, float *lse, long f0, long f1,
                    Geometry g, float *scratch) {
    FOR_EACH_TOKEN(&g, f0, f1, forward_token, q, k, v, o, lse, scratch)
}

void window_backward_q(const float *q, const float *k, const float *v, const float *dout, const float *lse,
                       const float *delta, float *dq, long f0, long f1, Geometry g) {
    FOR_EACH_TOKEN(&g, f0, f1, backward_q_token, q, k, v, dout, lse, delta, dq)
}

void window_backward_kv(const float *q, const float *k, const float *v, const float *dout, const float *lse,
                        const float *delta, float *dk, float *dv, long f0, long f1, Geometry g) {
    FOR_EACH_TOKEN(&g, f0, f1, backward_kv_token, q, k, v, dout, lse, delta, dk, dv)
}
