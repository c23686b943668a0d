/* CPU implementation of hc_train_ops (see ops/train_ops.h): OpenBLAS sgemm for the matmuls,
 * plain C11 loops over contiguous rows for the rest, written so the inner loops auto-vectorize;
 * accumulations in f32 except reductions that feed losses (double).
 *
 * Threads (hc_train_ops_cpu_set_threads): the matmuls, the attention and the fused lm_head + CE
 * run their work as tasks on one process-wide pool. Every task computes a fixed piece of the
 * output in the serial loop order, and the pieces depend on the shapes only, never on the thread
 * count, so every result is bit-identical for any number of threads:
 *  - matmul: the sgemm is split into row blocks of the output whose size is a function of the
 *    shape (each block one single-threaded sgemm call);
 *  - attention forward: one task per range of query rows (each (row, head) is independent);
 *    backward: one task per (packed segment, kv head), which owns that segment's dk, dv rows of
 *    the kv head and the dq rows of its query heads, visiting them in the serial order;
 *  - lm_head + CE: sgemm over the labelled rows in blocks of constant size (see lmhead_ce): a
 *    task per block of 32 labelled rows for the log-sum-exp and dh, a task per 32 vocabulary rows
 *    for dW. */
#include "ops/train_ops.h"

#include <cblas.h>
#undef I /* OpenBLAS's cblas.h pulls in <complex.h>; I is a dimension here */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "core/threadpool.h"

/* ---- the pool --------------------------------------------------------------------------------- */

static hc_pool *g_pool;
static int g_threads = 1;

int hc_train_ops_cpu_set_threads(int n) {
    if (n < 1) n = 1;
    /* every sgemm block is one single-threaded call, whatever the count (OpenBLAS's own
     * threading would make a block's result depend on its thread count) */
    openblas_set_num_threads(1);
    if (n == g_threads) return HC_OK;
    hc_pool_free(g_pool);
    g_pool = NULL;
    g_threads = 1;
    if (n == 1) return HC_OK;
    int rc = hc_pool_create(&g_pool, n);
    if (rc) {
        g_pool = NULL;
        return rc;
    }
    g_threads = n;
    return HC_OK;
}

int hc_train_ops_cpu_threads(void) { return g_threads; }

static void par_run(int n_tasks, hc_pool_fn fn, void *ctx) {
    if (g_pool && n_tasks > 1) {
        hc_pool_run(g_pool, n_tasks, fn, ctx);
        return;
    }
    for (int i = 0; i < n_tasks; i++) fn(ctx, i);
}

/* How many blocks a dimension of `rows` is cut into for work of `flops`: a function of the shape
 * only (at least 32 rows and about 2^18 multiply-adds per block, at most 16 blocks). */
static int n_blocks(int64_t rows, double flops) {
    int64_t nb = rows / 32;
    const double by_work = flops / (double)(1 << 18);
    if ((double)nb > by_work) nb = (int64_t)by_work;
    if (nb > 16) nb = 16;
    return nb < 1 ? 1 : (int)nb;
}

/* ---- matmul ----------------------------------------------------------------------------------- */

/* One sgemm of the shape (M, N, K) cut into row blocks of C: block b is rows
 * [b*M/nb, (b+1)*M/nb). kind 0: C = A(M,K) B(N,K)^T (beta); 1: C += A(M,K) B(K,N);
 * 2: C(M,N) += A(K,M)^T B(K,N) (A's rows of length lda = M_total). */
typedef struct mm_args {
    int kind, M, N, K, nb;
    const float *a, *b;
    float *c;
    float beta;
} mm_args;

static void mm_task(void *ctx, int task) {
    const mm_args *g = ctx;
    const int r0 = (int)((int64_t)task * g->M / g->nb), r1 = (int)((int64_t)(task + 1) * g->M / g->nb);
    const int m = r1 - r0;
    if (m <= 0) return;
    if (g->kind == 0)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, m, g->N, g->K, 1.0f,
                    g->a + (int64_t)r0 * g->K, g->K, g->b, g->K, g->beta,
                    g->c + (int64_t)r0 * g->N, g->N);
    else if (g->kind == 1)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, m, g->N, g->K, 1.0f,
                    g->a + (int64_t)r0 * g->K, g->K, g->b, g->N, 1.0f,
                    g->c + (int64_t)r0 * g->N, g->N);
    else
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, m, g->N, g->K, 1.0f, g->a + r0,
                    g->M, g->b, g->N, 1.0f, g->c + (int64_t)r0 * g->N, g->N);
}

static void mm_run(int kind, int M, int N, int K, const float *a, const float *b, float *c,
                   float beta) {
    mm_args g = {kind, M, N, K, n_blocks(M, (double)M * N * K), a, b, c, beta};
    par_run(g.nb, mm_task, &g);
}

static void matmul_fwd(float *y, const float *x, const float *w, const float *b, int T, int I,
                       int O) {
    if (T <= 0 || O <= 0) return;
    if (b)
        for (int t = 0; t < T; t++) memcpy(y + (int64_t)t * O, b, sizeof(float) * (size_t)O);
    if (I <= 0) {
        if (!b) memset(y, 0, sizeof(float) * (size_t)T * (size_t)O);
        return;
    }
    mm_run(0, T, O, I, x, w, y, b ? 1.0f : 0.0f);
}

static void matmul_bwd(float *dx, float *dw, float *db, const float *dy, const float *x,
                       const float *w, int T, int I, int O) {
    if (T <= 0 || O <= 0 || I <= 0) return;
    if (dx) /* dX (T,I) += dY (T,O) W (O,I) */
        mm_run(1, T, I, O, dy, w, dx, 1.0f);
    /* dW (O,I) += dY^T (O,T) X (T,I) */
    mm_run(2, O, I, T, dy, x, dw, 1.0f);
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

/* Forward: tasks over ranges of query rows; each (row, head) is computed as in a serial loop. */
typedef struct attn_fwd_args {
    float *out, *lse;
    const float *q, *k, *v;
    const int32_t *seg;
    int T, H, KVH, D, n_tasks;
} attn_fwd_args;

static void attn_fwd_task(void *ctx, int task) {
    const attn_fwd_args *g = ctx;
    const int T = g->T, H = g->H, KVH = g->KVH, D = g->D, group = H / KVH;
    const int t0 = (int)((int64_t)task * T / g->n_tasks), t1 = (int)((int64_t)(task + 1) * T / g->n_tasks);
    if (t1 <= t0) return;
    const float scale = 1.0f / sqrtf((float)D);
    float *sc = malloc(sizeof(float) * (size_t)T);
    if (!sc) abort();
    const int32_t *seg = g->seg;
    int s0 = seg_start(seg, t0);
    for (int t = t0; t < t1; t++) {
        if (t > t0 && seg && seg[t] != seg[t - 1]) s0 = t;
        for (int h = 0; h < H; h++) {
            const float *qr = g->q + ((int64_t)t * H + h) * D;
            int kh = h / group;
            float m = -INFINITY;
            for (int j = s0; j <= t; j++) {
                const float *kr = g->k + ((int64_t)j * KVH + kh) * D;
                float d = 0.0f;
                for (int i = 0; i < D; i++) d += qr[i] * kr[i];
                sc[j] = d * scale;
                if (sc[j] > m) m = sc[j];
            }
            float sum = 0.0f;
            for (int j = s0; j <= t; j++) sum += (sc[j] = expf(sc[j] - m));
            float *o = g->out + ((int64_t)t * H + h) * D;
            for (int i = 0; i < D; i++) o[i] = 0.0f;
            float inv = 1.0f / sum;
            for (int j = s0; j <= t; j++) {
                const float *vr = g->v + ((int64_t)j * KVH + kh) * D;
                float pj = sc[j] * inv;
                for (int i = 0; i < D; i++) o[i] += pj * vr[i];
            }
            g->lse[(int64_t)t * H + h] = m + logf(sum);
        }
    }
    free(sc);
}

static void attn_fwd(float *out, float *lse, const float *q, const float *k, const float *v,
                     const int32_t *seg, int T, int H, int KVH, int D) {
    if (T <= 0) return;
    int nt = g_threads > 1 ? 4 * g_threads : 1;
    if (nt > T) nt = T;
    attn_fwd_args g = {out, lse, q, k, v, seg, T, H, KVH, D, nt};
    par_run(nt, attn_fwd_task, &g);
}

/* Backward: one task per (segment, kv head). dk and dv rows of a kv head get contributions only
 * from the query heads of its group within the segment; the task visits (t, h) in the serial
 * order (t ascending, then h), so each sum is the serial one. */
typedef struct attn_bwd_args {
    float *dq, *dk, *dv;
    const float *dout, *out, *lse, *q, *k, *v;
    const int32_t *bounds; /* segment s is rows [bounds[s], bounds[s + 1]) */
    int T, H, KVH, D;
} attn_bwd_args;

static void attn_bwd_task(void *ctx, int task) {
    const attn_bwd_args *g = ctx;
    const int H = g->H, KVH = g->KVH, D = g->D, group = H / KVH;
    const int sidx = task / KVH, kh = task % KVH;
    const int s0 = g->bounds[sidx], s1 = g->bounds[sidx + 1];
    const float scale = 1.0f / sqrtf((float)D);
    for (int t = s0; t < s1; t++) {
        for (int h = kh * group; h < (kh + 1) * group; h++) {
            int64_t qi = ((int64_t)t * H + h) * D;
            const float *qr = g->q + qi, *dor = g->dout + qi, *orow = g->out + qi;
            float *dqr = g->dq + qi;
            float L = g->lse[(int64_t)t * H + h], Dt = 0.0f;
            for (int i = 0; i < D; i++) Dt += dor[i] * orow[i];
            for (int j = s0; j <= t; j++) {
                int64_t ki = ((int64_t)j * KVH + kh) * D;
                const float *kr = g->k + ki, *vr = g->v + ki;
                float s = 0.0f, dp = 0.0f;
                for (int i = 0; i < D; i++) {
                    s += qr[i] * kr[i];
                    dp += dor[i] * vr[i];
                }
                float p = expf(s * scale - L);
                float ds = p * (dp - Dt) * scale;
                float *dkr = g->dk + ki, *dvr = g->dv + ki;
                for (int i = 0; i < D; i++) {
                    dvr[i] += p * dor[i];
                    dqr[i] += ds * kr[i];
                    dkr[i] += ds * qr[i];
                }
            }
        }
    }
}

static void attn_bwd(float *dq, float *dk, float *dv, const float *dout, const float *out,
                     const float *lse, const float *q, const float *k, const float *v,
                     const int32_t *seg, int T, int H, int KVH, int D) {
    if (T <= 0) return;
    int32_t *bounds = malloc(sizeof(int32_t) * ((size_t)T + 1));
    if (!bounds) abort();
    int ns = 0;
    bounds[ns++] = 0;
    for (int t = 1; t < T; t++)
        if (seg && seg[t] != seg[t - 1]) bounds[ns++] = t;
    bounds[ns] = T;
    attn_bwd_args g = {dq, dk, dv, dout, out, lse, q, k, v, bounds, T, H, KVH, D};
    par_run(ns * KVH, attn_bwd_task, &g);
    free(bounds);
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

/* lm_head + CE through sgemm over the labelled rows gathered into Hl (n_lab, C), in blocks whose
 * sizes are constants, so each block's sgemm is the same call for any thread count.
 * Pass 1 (a task per block of LM_RB rows): the logits of the block against `chunk` vocabulary
 * rows at a time (one sgemm), an online log-sum-exp per row, the label's logit.
 * Pass 2 (with dh): vocabulary blocks of LM_VB rows in order; per block, a task per row block
 * recomputes the logits (sgemm), turns them into dlogits D = g (softmax - onehot) and adds D W
 * into its rows of dHl (sgemm); then a task per LM_VSUB vocabulary rows of the block adds
 * D^T Hl into dW (sgemm). Finally dHl is added into the labelled rows of dh. */
#define LM_RB 32
#define LM_VB 256
#define LM_VSUB 32

typedef struct lm_args {
    float *dW, *Hl, *dHl, *D; /* D: (n_lab, LM_VB) dlogits of the current vocabulary block */
    const float *W;
    const int32_t *lab_id; /* per labelled row: its label */
    int n_lab, C, V, chunk, v0, nv;
    float g;
    float *lse, *lab;
} lm_args;

static void lm_lse_task(void *ctx, int task) {
    const lm_args *a = ctx;
    const int r0 = task * LM_RB, rb = a->n_lab - r0 < LM_RB ? a->n_lab - r0 : LM_RB;
    const int C = a->C, V = a->V, chunk = a->chunk;
    float *L = malloc(sizeof(float) * (size_t)rb * (size_t)chunk);
    if (!L) abort();
    float m[LM_RB], sum[LM_RB];
    for (int r = 0; r < rb; r++) m[r] = -INFINITY, sum[r] = 0.0f, a->lab[r0 + r] = 0.0f;
    for (int v0 = 0; v0 < V; v0 += chunk) {
        const int n = V - v0 < chunk ? V - v0 : chunk;
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, rb, n, C, 1.0f,
                    a->Hl + (int64_t)r0 * C, C, a->W + (int64_t)v0 * C, C, 0.0f, L, chunk);
        for (int r = 0; r < rb; r++) {
            const float *lr = L + (int64_t)r * chunk;
            float cm = -INFINITY;
            for (int j = 0; j < n; j++)
                if (lr[j] > cm) cm = lr[j];
            const int y = a->lab_id[r0 + r];
            if (y >= v0 && y < v0 + n) a->lab[r0 + r] = lr[y - v0];
            if (cm > m[r]) {
                sum[r] *= expf(m[r] - cm);
                m[r] = cm;
            }
            float s = 0.0f;
            for (int j = 0; j < n; j++) s += expf(lr[j] - m[r]);
            sum[r] += s;
        }
    }
    for (int r = 0; r < rb; r++) a->lse[r0 + r] = m[r] + logf(sum[r]);
    free(L);
}

static void lm_dh_task(void *ctx, int task) { /* the block's dlogits, added into dHl */
    const lm_args *a = ctx;
    const int r0 = task * LM_RB, rb = a->n_lab - r0 < LM_RB ? a->n_lab - r0 : LM_RB;
    const int C = a->C;
    float *D = a->D + (int64_t)r0 * LM_VB;
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, rb, a->nv, C, 1.0f,
                a->Hl + (int64_t)r0 * C, C, a->W + (int64_t)a->v0 * C, C, 0.0f, D, LM_VB);
    for (int r = 0; r < rb; r++) {
        float *d = D + (int64_t)r * LM_VB;
        const float l = a->lse[r0 + r];
        const int y = a->lab_id[r0 + r] - a->v0;
        for (int j = 0; j < a->nv; j++) d[j] = a->g * (expf(d[j] - l) - (j == y ? 1.0f : 0.0f));
    }
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, rb, C, a->nv, 1.0f, D, LM_VB,
                a->W + (int64_t)a->v0 * C, C, 1.0f, a->dHl + (int64_t)r0 * C, C);
}

static void lm_dw_task(void *ctx, int task) { /* dW rows of the block += D^T Hl */
    const lm_args *a = ctx;
    const int j0 = task * LM_VSUB, jn = a->nv - j0 < LM_VSUB ? a->nv - j0 : LM_VSUB;
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, jn, a->C, a->n_lab, 1.0f, a->D + j0,
                LM_VB, a->Hl, a->C, 1.0f, a->dW + (int64_t)(a->v0 + j0) * a->C, a->C);
}

static double lmhead_ce(float *dh, float *dW, const float *h, const float *W,
                        const int32_t *labels, int T, int C, int V, int chunk, float dloss) {
    int n_lab = 0;
    for (int t = 0; t < T; t++) n_lab += labels[t] != -100;
    if (n_lab == 0 || C <= 0) return 0.0;
    if (chunk <= 0 || chunk > V) chunk = V;
    int32_t *rows = malloc(sizeof(int32_t) * (size_t)n_lab * 2);
    float *Hl = malloc(sizeof(float) * (size_t)n_lab * (size_t)C);
    float *lse = malloc(sizeof(float) * (size_t)n_lab * 2);
    float *dHl = dh ? calloc((size_t)n_lab * (size_t)C, sizeof(float)) : NULL;
    float *D = dh ? malloc(sizeof(float) * (size_t)n_lab * LM_VB) : NULL;
    if (!rows || !Hl || !lse || (dh && (!dHl || !D))) abort();
    int32_t *lab_id = rows + n_lab;
    for (int t = 0, r = 0; t < T; t++)
        if (labels[t] != -100) {
            rows[r] = t;
            lab_id[r] = labels[t];
            memcpy(Hl + (int64_t)r * C, h + (int64_t)t * C, sizeof(float) * (size_t)C);
            r++;
        }
    lm_args a = {dW, Hl, dHl, D, W, lab_id, n_lab, C, V, chunk, 0, 0, dloss / (float)n_lab, lse,
                 lse + n_lab};
    const int n_rb = (n_lab + LM_RB - 1) / LM_RB;
    par_run(n_rb, lm_lse_task, &a);
    double loss = 0.0;
    for (int r = 0; r < n_lab; r++) loss += (double)lse[r] - (double)a.lab[r];
    if (dh) {
        for (a.v0 = 0; a.v0 < V; a.v0 += LM_VB) {
            a.nv = V - a.v0 < LM_VB ? V - a.v0 : LM_VB;
            par_run(n_rb, lm_dh_task, &a);
            par_run((a.nv + LM_VSUB - 1) / LM_VSUB, lm_dw_task, &a);
        }
        for (int r = 0; r < n_lab; r++) {
            float *d = dh + (int64_t)rows[r] * C;
            const float *s = dHl + (int64_t)r * C;
            for (int i = 0; i < C; i++) d[i] += s[i];
        }
    }
    free(rows);
    free(Hl);
    free(lse);
    free(dHl);
    free(D);
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
