/* CPU implementation of hc_train_ops (see ops/train_ops.h): OpenBLAS sgemm for the matmuls,
 * plain C11 loops over contiguous rows for the rest, written so the inner loops auto-vectorize;
 * accumulations in f32 except reductions that feed losses (double). */
#include "ops/train_ops.h"

#include <cblas.h>
#undef I /* OpenBLAS's cblas.h pulls in <complex.h>; I is a dimension here */
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* The matmuls go through OpenBLAS sgemm (whose result for a given thread count is deterministic;
 * the engine's CPU backend keeps OpenBLAS single-threaded by default). */
static void matmul_fwd(float *y, const float *x, const float *w, const float *b, int T, int I,
                       int O) {
    if (T <= 0 || O <= 0) return;
    if (b)
        for (int t = 0; t < T; t++) memcpy(y + (int64_t)t * O, b, sizeof(float) * (size_t)O);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, T, O, I, 1.0f, x, I, w, I,
                b ? 1.0f : 0.0f, y, O);
}

static void matmul_bwd(float *dx, float *dw, float *db, const float *dy, const float *x,
                       const float *w, int T, int I, int O) {
    if (T <= 0 || O <= 0 || I <= 0) return;
    if (dx) /* dX (T,I) += dY (T,O) W (O,I) */
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, T, I, O, 1.0f, dy, O, w, I, 1.0f,
                    dx, I);
    /* dW (O,I) += dY^T (O,T) X (T,I) */
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, O, I, T, 1.0f, dy, O, x, I, 1.0f, dw, I);
    if (db)
        for (int t = 0; t < T; t++)
            for (int o = 0; o < O; o++) db[o] += dy[(int64_t)t * O + o];
}

static void rmsnorm_fwd(float *y, float *rstd, const float *x, const float *w, int rows, int C,
                        float eps) {
    for (int r = 0; r < rows; r++) {
        const float *xr = x + (int64_t)r * C;
        float ss = 0.0f;
        for (int i = 0; i < C; i++) ss += xr[i] * xr[i];
        float inv = 1.0f / sqrtf(ss / (float)C + eps);
        rstd[r] = inv;
        float *yr = y + (int64_t)r * C;
        for (int i = 0; i < C; i++) yr[i] = w[i] * (xr[i] * inv);
    }
}

static void rmsnorm_bwd(float *dx, float *dw, const float *dy, const float *x, const float *w,
                        const float *rstd, int rows, int C) {
    for (int r = 0; r < rows; r++) {
        const float *xr = x + (int64_t)r * C, *dyr = dy + (int64_t)r * C;
        float inv = rstd[r], dot = 0.0f;
        for (int i = 0; i < C; i++) dot += w[i] * dyr[i] * xr[i];
        float k = dot * inv * inv * inv / (float)C;
        float *dxr = dx + (int64_t)r * C;
        for (int i = 0; i < C; i++) {
            dxr[i] += inv * w[i] * dyr[i] - k * xr[i];
            dw[i] += dyr[i] * xr[i] * inv;
        }
    }
}

static void rope_apply(float *x, const int32_t *pos, int T, int H, int D, double theta,
                       float sign) {
    int half = D / 2;
    for (int t = 0; t < T; t++) {
        float p = (float)pos[t];
        for (int i = 0; i < half; i++) {
            /* as the engine (and transformers): inv_freq and the angle in f32 */
            float inv_freq = 1.0f / powf((float)theta, (float)(2 * i) / (float)D);
            float ang = p * inv_freq;
            float c = cosf(ang), s = sign * sinf(ang);
            for (int h = 0; h < H; h++) {
                float *v = x + ((int64_t)t * H + h) * D;
                float x1 = v[i], x2 = v[i + half];
                v[i] = x1 * c - x2 * s;
                v[i + half] = x2 * c + x1 * s;
            }
        }
    }
}

static void rope_fwd(float *x, const int32_t *pos, int T, int H, int D, double theta) {
    rope_apply(x, pos, T, H, D, theta, 1.0f);
}

/* The rotation is orthogonal, so the backward is the inverse rotation (angle -> -angle). */
static void rope_bwd(float *dx, const int32_t *pos, int T, int H, int D, double theta) {
    rope_apply(dx, pos, T, H, D, theta, -1.0f);
}

/* First token of t's segment. */
static int seg_start(const int32_t *seg, int t) {
    if (!seg) return 0;
    int s = t;
    while (s > 0 && seg[s - 1] == seg[t]) s--;
    return s;
}

static void attn_fwd(float *out, float *lse, const float *q, const float *k, const float *v,
                     const int32_t *seg, int T, int H, int KVH, int D) {
    const int group = H / KVH;
    const float scale = 1.0f / sqrtf((float)D);
    float *sc = malloc(sizeof(float) * (size_t)(T > 0 ? T : 1));
    if (!sc) abort();
    int s0 = 0;
    for (int t = 0; t < T; t++) {
        if (t > 0 && (!seg || seg[t] != seg[t - 1])) s0 = seg ? t : 0;
        for (int h = 0; h < H; h++) {
            const float *qr = q + ((int64_t)t * H + h) * D;
            int kh = h / group;
            float m = -INFINITY;
            for (int j = s0; j <= t; j++) {
                const float *kr = k + ((int64_t)j * KVH + kh) * D;
                float d = 0.0f;
                for (int i = 0; i < D; i++) d += qr[i] * kr[i];
                sc[j] = d * scale;
                if (sc[j] > m) m = sc[j];
            }
            float sum = 0.0f;
            for (int j = s0; j <= t; j++) sum += (sc[j] = expf(sc[j] - m));
            float *o = out + ((int64_t)t * H + h) * D;
            for (int i = 0; i < D; i++) o[i] = 0.0f;
            float inv = 1.0f / sum;
            for (int j = s0; j <= t; j++) {
                const float *vr = v + ((int64_t)j * KVH + kh) * D;
                float pj = sc[j] * inv;
                for (int i = 0; i < D; i++) o[i] += pj * vr[i];
            }
            lse[(int64_t)t * H + h] = m + logf(sum);
        }
    }
    free(sc);
}

static void attn_bwd(float *dq, float *dk, float *dv, const float *dout, const float *out,
                     const float *lse, const float *q, const float *k, const float *v,
                     const int32_t *seg, int T, int H, int KVH, int D) {
    const int group = H / KVH;
    const float scale = 1.0f / sqrtf((float)D);
    for (int t = 0; t < T; t++) {
        int s0 = seg_start(seg, t);
        for (int h = 0; h < H; h++) {
            int64_t qi = ((int64_t)t * H + h) * D;
            const float *qr = q + qi, *dor = dout + qi, *orow = out + qi;
            float *dqr = dq + qi;
            int kh = h / group;
            float L = lse[(int64_t)t * H + h], Dt = 0.0f;
            for (int i = 0; i < D; i++) Dt += dor[i] * orow[i];
            for (int j = s0; j <= t; j++) {
                int64_t ki = ((int64_t)j * KVH + kh) * D;
                const float *kr = k + ki, *vr = v + ki;
                float s = 0.0f, dp = 0.0f;
                for (int i = 0; i < D; i++) {
                    s += qr[i] * kr[i];
                    dp += dor[i] * vr[i];
                }
                float p = expf(s * scale - L);
                float ds = p * (dp - Dt) * scale;
                float *dkr = dk + ki, *dvr = dv + ki;
                for (int i = 0; i < D; i++) {
                    dvr[i] += p * dor[i];
                    dqr[i] += ds * kr[i];
                    dkr[i] += ds * qr[i];
                }
            }
        }
    }
}

static void swiglu_fwd(float *h, const float *g, const float *u, int64_t n) {
    for (int64_t i = 0; i < n; i++) h[i] = g[i] / (1.0f + expf(-g[i])) * u[i];
}

static void swiglu_bwd(float *dg, float *du, const float *dh, const float *g, const float *u,
                       int64_t n) {
    for (int64_t i = 0; i < n; i++) {
        float sg = 1.0f / (1.0f + expf(-g[i]));
        float silu = g[i] * sg;
        dg[i] += dh[i] * u[i] * sg * (1.0f + g[i] * (1.0f - sg));
        du[i] += dh[i] * silu;
    }
}

static void embed_fwd(float *out, const float *E, const int32_t *ids, int T, int C) {
    for (int t = 0; t < T; t++)
        if (ids[t] >= 0) memcpy(out + (int64_t)t * C, E + (int64_t)ids[t] * C, sizeof(float) * C);
}

static void embed_bwd(float *dE, const float *dout, const int32_t *ids, int T, int C) {
    for (int t = 0; t < T; t++) {
        if (ids[t] < 0) continue;
        float *d = dE + (int64_t)ids[t] * C;
        const float *g = dout + (int64_t)t * C;
        for (int i = 0; i < C; i++) d[i] += g[i];
    }
}

static void inject_fwd(float *x, const float *vecs, const int32_t *rows, int n, int C) {
    for (int k = 0; k < n; k++)
        memcpy(x + (int64_t)rows[k] * C, vecs + (int64_t)k * C, sizeof(float) * C);
}

static void inject_bwd(float *dvecs, const float *dx, const int32_t *rows, int n, int C) {
    for (int k = 0; k < n; k++) {
        const float *g = dx + (int64_t)rows[k] * C;
        float *d = dvecs + (int64_t)k * C;
        for (int i = 0; i < C; i++) d[i] += g[i];
    }
}

static double lmhead_ce(float *dh, float *dW, const float *h, const float *W,
                        const int32_t *labels, int T, int C, int V, int chunk, float dloss) {
    int n_lab = 0;
    for (int t = 0; t < T; t++) n_lab += labels[t] != -100;
    if (n_lab == 0) return 0.0;
    if (chunk <= 0 || chunk > V) chunk = V;
    float *lg = malloc(sizeof(float) * (size_t)chunk);
    if (!lg) abort();
    double loss = 0.0;
    const float g = dloss / (float)n_lab;
    for (int t = 0; t < T; t++) {
        if (labels[t] == -100) continue;
        const float *hr = h + (int64_t)t * C;
        /* pass 1: online log-sum-exp over vocabulary chunks, and the label's logit */
        float m = -INFINITY, sum = 0.0f, lab = 0.0f;
        for (int v0 = 0; v0 < V; v0 += chunk) {
            int n = V - v0 < chunk ? V - v0 : chunk;
            float cm = -INFINITY;
            for (int j = 0; j < n; j++) {
                const float *wr = W + (int64_t)(v0 + j) * C;
                float s = 0.0f;
                for (int i = 0; i < C; i++) s += hr[i] * wr[i];
                lg[j] = s;
                if (s > cm) cm = s;
                if (v0 + j == labels[t]) lab = s;
            }
            if (cm > m) {
                sum *= expf(m - cm);
                m = cm;
            }
            for (int j = 0; j < n; j++) sum += expf(lg[j] - m);
        }
        float lse = m + logf(sum);
        loss += (double)lse - (double)lab;
        if (!dh) continue;
        /* pass 2: recompute each chunk's logits, dlogit = g * (softmax - onehot) */
        float *dhr = dh + (int64_t)t * C;
        for (int v0 = 0; v0 < V; v0 += chunk) {
            int n = V - v0 < chunk ? V - v0 : chunk;
            for (int j = 0; j < n; j++) {
                const float *wr = W + (int64_t)(v0 + j) * C;
                float s = 0.0f;
                for (int i = 0; i < C; i++) s += hr[i] * wr[i];
                float d = g * (expf(s - lse) - (v0 + j == labels[t] ? 1.0f : 0.0f));
                float *dwr = dW + (int64_t)(v0 + j) * C;
                for (int i = 0; i < C; i++) {
                    dhr[i] += d * wr[i];
                    dwr[i] += d * hr[i];
                }
            }
        }
    }
    free(lg);
    return loss / n_lab;
}

static void l2norm_fwd(float *y, const float *x, int rows, int C) {
    for (int r = 0; r < rows; r++) {
        const float *xr = x + (int64_t)r * C;
        float ss = 0.0f;
        for (int i = 0; i < C; i++) ss += xr[i] * xr[i];
        float n = fmaxf(sqrtf(ss), 1e-12f);
        for (int i = 0; i < C; i++) y[(int64_t)r * C + i] = xr[i] / n;
    }
}

static void l2norm_bwd(float *dx, const float *dy, const float *x, int rows, int C) {
    for (int r = 0; r < rows; r++) {
        const float *xr = x + (int64_t)r * C, *dyr = dy + (int64_t)r * C;
        float ss = 0.0f, dot = 0.0f;
        for (int i = 0; i < C; i++) {
            ss += xr[i] * xr[i];
            dot += xr[i] * dyr[i];
        }
        float n = sqrtf(ss);
        float *dxr = dx + (int64_t)r * C;
        if (n <= 1e-12f) { /* clamped: y = x / 1e-12, a constant scale */
            for (int i = 0; i < C; i++) dxr[i] += dyr[i] / 1e-12f;
            continue;
        }
        float inv = 1.0f / n, k = dot * inv * inv * inv;
        for (int i = 0; i < C; i++) dxr[i] += dyr[i] * inv - k * xr[i];
    }
}

static void layernorm_fwd(float *y, float *mean, float *rstd, const float *x, const float *w,
                          const float *b, int rows, int C, float eps) {
    for (int r = 0; r < rows; r++) {
        const float *xr = x + (int64_t)r * C;
        float mu = 0.0f, var = 0.0f;
        for (int i = 0; i < C; i++) mu += xr[i];
        mu /= (float)C;
        for (int i = 0; i < C; i++) var += (xr[i] - mu) * (xr[i] - mu);
        float inv = 1.0f / sqrtf(var / (float)C + eps);
        mean[r] = mu;
        rstd[r] = inv;
        for (int i = 0; i < C; i++) y[(int64_t)r * C + i] = (xr[i] - mu) * inv * w[i] + b[i];
    }
}

static void layernorm_bwd(float *dx, float *dw, float *db, const float *dy, const float *x,
                          const float *w, const float *mean, const float *rstd, int rows, int C) {
    for (int r = 0; r < rows; r++) {
        const float *xr = x + (int64_t)r * C, *dyr = dy + (int64_t)r * C;
        float mu = mean[r], inv = rstd[r], sg = 0.0f, sgx = 0.0f;
        for (int i = 0; i < C; i++) {
            float xh = (xr[i] - mu) * inv, gi = dyr[i] * w[i];
            sg += gi;
            sgx += gi * xh;
            dw[i] += dyr[i] * xh;
            db[i] += dyr[i];
        }
        sg /= (float)C;
        sgx /= (float)C;
        float *dxr = dx + (int64_t)r * C;
        for (int i = 0; i < C; i++) {
            float xh = (xr[i] - mu) * inv;
            dxr[i] += inv * (dyr[i] * w[i] - sg - xh * sgx);
        }
    }
}

static void gelu_fwd(float *y, const float *x, int64_t n) {
    for (int64_t i = 0; i < n; i++) y[i] = 0.5f * x[i] * (1.0f + erff(x[i] * (float)M_SQRT1_2));
}

static void gelu_bwd(float *dx, const float *dy, const float *x, int64_t n) {
    const float k = 0.3989422804014327f; /* 1/sqrt(2 pi) */
    for (int64_t i = 0; i < n; i++) {
        float cdf = 0.5f * (1.0f + erff(x[i] * (float)M_SQRT1_2));
        dx[i] += dy[i] * (cdf + x[i] * k * expf(-0.5f * x[i] * x[i]));
    }
}

static double bce_logits(float *dz, const float *z, const float *y, int n, float dloss) {
    if (n <= 0) return 0.0;
    double loss = 0.0;
    for (int i = 0; i < n; i++) {
        float zi = z[i];
        loss += (double)(fmaxf(zi, 0.0f) - zi * y[i] + log1pf(expf(-fabsf(zi))));
        if (dz) dz[i] += dloss * (1.0f / (1.0f + expf(-zi)) - y[i]) / (float)n;
    }
    return loss / n;
}

/* nce(x, y) with scale s: adds dloss*dL/dx, dL/dy to dx, dy and dL/ds to *ds. */
static double nce(float *dx, float *dy, double *ds, const float *x, const float *y, float s,
                  int N, int C, float dloss) {
    float *lg = malloc(sizeof(float) * (size_t)(N + 1));
    char *keep = malloc((size_t)N + 1);
    if (!lg || !keep) abort();
    double loss = 0.0;
    const float g = dloss / (float)N;
    for (int i = 0; i < N; i++) {
        const float *xi = x + (int64_t)i * C, *yi = y + (int64_t)i * C;
        float m = -INFINITY;
        for (int j = -1; j < N; j++) { /* j = -1: the positive */
            const float *yj = j < 0 ? yi : y + (int64_t)j * C;
            float d = 0.0f, yy = 0.0f;
            for (int c = 0; c < C; c++) d += xi[c] * yj[c];
            if (j >= 0)
                for (int c = 0; c < C; c++) yy += yi[c] * yj[c];
            keep[j + 1] = j < 0 || yy <= 0.99f;
            lg[j + 1] = d;
            if (keep[j + 1] && s * d > m) m = s * d;
        }
        float sum = 0.0f;
        for (int j = 0; j <= N; j++)
            if (keep[j]) sum += expf(s * lg[j] - m);
        float lse = m + logf(sum);
        loss += (double)lse - (double)(s * lg[0]);
        if (!dx) continue;
        float *dxi = dx + (int64_t)i * C;
        for (int j = 0; j <= N; j++) {
            if (!keep[j]) continue;
            float dl = g * (expf(s * lg[j] - lse) - (j == 0 ? 1.0f : 0.0f)); /* d/d logit */
            *ds += (double)dl * lg[j];
            const float *yj = j == 0 ? y + (int64_t)i * C : y + (int64_t)(j - 1) * C;
            float *dyj = j == 0 ? dy + (int64_t)i * C : dy + (int64_t)(j - 1) * C;
            for (int c = 0; c < C; c++) {
                dxi[c] += dl * s * yj[c];
                dyj[c] += dl * s * xi[c];
            }
        }
    }
    free(lg);
    free(keep);
    return loss / N;
}

static double infonce_sym(float *da, float *dp, float *dlog_scale, const float *a, const float *p,
                          float *log_scale, int N, int C, float dloss) {
    if (N <= 0) return 0.0;
    const float hi = logf(100.0f);
    if (*log_scale < 0.0f) *log_scale = 0.0f;
    if (*log_scale > hi) *log_scale = hi;
    float s = expf(*log_scale);
    double ds = 0.0;
    double l = 0.5 * nce(da, dp, &ds, a, p, s, N, C, 0.5f * dloss) +
               0.5 * nce(dp, da, &ds, p, a, s, N, C, 0.5f * dloss);
    if (da && dlog_scale) *dlog_scale += (float)(ds * s); /* ds/dlog_scale = s */
    return l;
}

static const hc_train_ops cpu_ops = {
    "cpu",       matmul_fwd, matmul_bwd,    rmsnorm_fwd,   rmsnorm_bwd, rope_fwd,   rope_bwd,
    attn_fwd,    attn_bwd,   swiglu_fwd,    swiglu_bwd,    embed_fwd,   embed_bwd,  inject_fwd,
    inject_bwd,  lmhead_ce,  l2norm_fwd,    l2norm_bwd,    layernorm_fwd, layernorm_bwd,
    gelu_fwd,    gelu_bwd,   bce_logits,    infonce_sym,
};

const hc_train_ops *hc_train_ops_cpu(void) { return &cpu_ops; }
