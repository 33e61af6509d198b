/* The per-dtype body of window_kernel.c, included once per element type: ELEM is the storage type of q, k, v, o
 * and the gradients (float, or uint16_t holding bfloat16), SFX the suffix of the exported names. Scores,
 * probabilities, the log-sum-exp, delta and every accumulator are float32 in both. See window_kernel.c. */
#define CAT_(a, b) a##_##b
#define CAT(a, b) CAT_(a, b)
#define FN(name) CAT(name, SFX)

TOKEN FN(forward_token)(const Geometry *g, const int D, const ELEM *q, const ELEM *k, const ELEM *v, ELEM *o,
                        float *lse, float *scratch, long bh, int t, int h, int w) {
    const int H = g->H, W = g->W;
    const long N = (long)g->T * H * W, row = bh * N + ((long)t * H + h) * W + w;
    const ELEM *qi = q + row * D, *kb = k + bh * N * D, *vb = v + bh * N * D;
    const Box b = box(g, t, h, w, 0);
    int n = 0;
    for (int tt = b.t0; tt <= b.t1; tt++)
        for (int hh = b.h0; hh <= b.h1; hh++) {
            const long base = ((long)tt * H + hh) * W;
            FN(dots)(qi, kb + (base + b.w0) * D, b.w1 - b.w0 + 1, D, scratch + n);
            n += b.w1 - b.w0 + 1;
        }
    for (int c = 0; c < n; c++) scratch[c] *= g->scale;
    float m = -FLT_MAX, l = 0.0f;
    for (int c = 0; c < n; c++) m = scratch[c] > m ? scratch[c] : m;
    for (int c = 0; c < n; c++) {  /* a separate loop so that expf vectorises */
        scratch[c] = expf(scratch[c] - m);
        l += scratch[c];
    }
    float buf[D];
    FN(acc) acc;
    FN(acc_init)(&acc, buf, D);
    const float inv = 1.0f / l;
    n = 0;
    for (int tt = b.t0; tt <= b.t1; tt++)
        for (int hh = b.h0; hh <= b.h1; hh++) {
            const long base = ((long)tt * H + hh) * W;
            for (int ww = b.w0; ww <= b.w1; ww++) FN(acc_add)(&acc, scratch[n++] * inv, vb + (base + ww) * D, D);
        }
    FN(acc_store)(&acc, o + row * D, D);
    lse[row] = m + logf(l);
}

/* Both backward passes in three steps per token: the two dot products of every pair into scratch, then the
 * probabilities and ds in one vectorisable loop (expf per pair inside the pair loop was scalar), then the sums. */
TOKEN FN(backward_q_token)(const Geometry *g, const int D, const ELEM *q, const ELEM *k, const ELEM *v,
                           const ELEM *o, const ELEM *dout, const float *lse, float *delta, ELEM *dq, float *s,
                           float *u, long bh, int t, int h, int w) {
    const int H = g->H, W = g->W;
    const long N = (long)g->T * H * W, row = bh * N + ((long)t * H + h) * W + w;
    const ELEM *qi = q + row * D, *doi = dout + row * D, *kb = k + bh * N * D, *vb = v + bh * N * D;
    /* delta_i = do_i . o_i, in float32, written for the key pass (which runs after every query's row is done) */
    const float li = lse[row], di = FN(dot)(doi, o + row * D, D), scale = g->scale;
    delta[row] = di;
    const Box b = box(g, t, h, w, 0);
    int n = 0;
    for (int tt = b.t0; tt <= b.t1; tt++)
        for (int hh = b.h0; hh <= b.h1; hh++) {
            const long base = ((long)tt * H + hh) * W;
            FN(dots)(qi, kb + (base + b.w0) * D, b.w1 - b.w0 + 1, D, s + n);
            FN(dots)(doi, vb + (base + b.w0) * D, b.w1 - b.w0 + 1, D, u + n);
            n += b.w1 - b.w0 + 1;
        }
    for (int c = 0; c < n; c++) s[c] = expf(s[c] * scale - li) * (u[c] - di) * scale;
    float buf[D];
    FN(acc) acc;
    FN(acc_init)(&acc, buf, D);
    n = 0;
    for (int tt = b.t0; tt <= b.t1; tt++)
        for (int hh = b.h0; hh <= b.h1; hh++) {
            const long base = ((long)tt * H + hh) * W;
            for (int ww = b.w0; ww <= b.w1; ww++) FN(acc_add)(&acc, s[n++], kb + (base + ww) * D, D);
        }
    FN(acc_store)(&acc, dq + row * D, D);
}

TOKEN FN(backward_kv_token)(const Geometry *g, const int D, const ELEM *q, const ELEM *k, const ELEM *v,
                            const ELEM *dout, const float *lse, const float *delta, ELEM *dk, ELEM *dv, float *s,
                            float *u, long bh, int t, int h, int w) {
    const int H = g->H, W = g->W;
    const long N = (long)g->T * H * W, row = bh * N + ((long)t * H + h) * W + w;
    const ELEM *kj = k + row * D, *vj = v + row * D, *qb = q + bh * N * D, *dob = dout + bh * N * D;
    const float *lb = lse + bh * N, *db = delta + bh * N, scale = g->scale;
    const Box b = box(g, t, h, w, 1);
    int n = 0;
    for (int tt = b.t0; tt <= b.t1; tt++)
        for (int hh = b.h0; hh <= b.h1; hh++) {
            const long base = ((long)tt * H + hh) * W;
            const int count = b.w1 - b.w0 + 1;
            FN(dots)(kj, qb + (base + b.w0) * D, count, D, s + n);
            FN(dots)(vj, dob + (base + b.w0) * D, count, D, u + n);
            for (int c = 0; c < count; c++, n++) {
                s[n] = s[n] * scale - lb[base + b.w0 + c];
                u[n] -= db[base + b.w0 + c];
            }
        }
    for (int c = 0; c < n; c++) {
        s[c] = expf(s[c]);    /* p */
        u[c] *= s[c] * scale; /* ds * scale */
    }
    float buf_k[D], buf_v[D];
    FN(acc) acc_k, acc_v;
    FN(acc_init)(&acc_k, buf_k, D);
    FN(acc_init)(&acc_v, buf_v, D);
    n = 0;
    for (int tt = b.t0; tt <= b.t1; tt++)
        for (int hh = b.h0; hh <= b.h1; hh++) {
            const long base = ((long)tt * H + hh) * W;
            for (int ww = b.w0; ww <= b.w1; ww++, n++) {
                const long i = base + ww;
                FN(acc_add)(&acc_v, s[n], dob + i * D, D);
                FN(acc_add)(&acc_k, u[n], qb + i * D, D);
            }
        }
    FN(acc_store)(&acc_k, dk + row * D, D);
    FN(acc_store)(&acc_v, dv + row * D, D);
}

/* scratch: one float per key of the largest window (forward), two (backward) */
void FN(window_forward)(const ELEM *q, const ELEM *k, const ELEM *v, ELEM *o, float *lse, long f0, long f1,
                        Geometry g, float *scratch) {
    FOR_EACH_TOKEN(&g, f0, f1, FN(forward_token), q, k, v, o, lse, scratch)
}

/* also writes delta (BH, N) float32, which window_backward_kv then reads */
void FN(window_backward_q)(const ELEM *q, const ELEM *k, const ELEM *v, const ELEM *o, const ELEM *dout,
                           const float *lse, float *delta, ELEM *dq, long f0, long f1, Geometry g, float *scratch) {
    const long keys = window_keys(&g);
    FOR_EACH_TOKEN(&g, f0, f1, FN(backward_q_token), q, k, v, o, dout, lse, delta, dq, scratch, scratch + keys)
}

void FN(window_backward_kv)(const ELEM *q, const ELEM *k, const ELEM *v, const ELEM *dout, const float *lse,
                            const float *delta, ELEM *dk, ELEM *dv, long f0, long f1, Geometry g, float *scratch) {
    const long keys = window_keys(&g);
    FOR_EACH_TOKEN(&g, f0, f1, FN(backward_kv_token), q, k, v, dout, lse, delta, dk, dv, scratch, scratch + keys)
}

#undef FN
#undef CAT
#undef CAT_
