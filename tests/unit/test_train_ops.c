/* test_train_ops: every backward of the trainer's op table (trainer/ops/train_ops.h) against
 * central finite differences of the same table's forward, on tiny random shapes (GQA, several
 * packed segments, a segment-leak case, chunked fused CE, the heads' ops). Forwards run in f32;
 * the scalar loss sum(R * out) is accumulated in double; FD step h = 1e-2 (f32 round-off / h and
 * h^2 truncation both stay below the tolerance |num - ana| <= 2e-3 + 2e-2 |num|). A second table
 * (a CUDA backend) gets the same checks by adding it to the tables list in main. */
#include "ops/train_ops.h"
#include "testutil.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static const hc_train_ops *O;
static uint64_t rng = 0x9E3779B97F4A7C15ull;

static float frand(void) { /* uniform in [-1, 1) */
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (float)((rng >> 40) * (1.0 / 8388608.0)) - 1.0f;
}
static float *rnd(int64_t n) {
    float *p = malloc(sizeof(float) * (size_t)(n > 0 ? n : 1));
    for (int64_t i = 0; i < n; i++) p[i] = frand();
    return p;
}
static float *zeros(int64_t n) { return calloc((size_t)(n > 0 ? n : 1), sizeof(float)); }
static double dotd(const float *a, const float *b, int64_t n) {
    double s = 0.0;
    for (int64_t i = 0; i < n; i++) s += (double)a[i] * b[i];
    return s;
}

/* Central FD of f over every element of x against the analytic gradient g. */
static void fd_check(const char *what, double (*f)(void *), void *ctx, float *x, const float *g,
                     int64_t n) {
    const float h = 1e-2f;
    double worst = 0.0;
    int bad = 0;
    for (int64_t i = 0; i < n; i++) {
        float keep = x[i];
        x[i] = keep + h;
        double fp = f(ctx);
        x[i] = keep - h;
        double fm = f(ctx);
        x[i] = keep;
        double num = (fp - fm) / (2.0 * h), err = fabs(num - g[i]);
        double tol = 2e-3 + 2e-2 * fabs(num);
        if (err / tol > worst) worst = err / tol;
        if (err > tol && bad++ < 3)
            fprintf(stderr, "  %s[%lld]: numeric %.6g analytic %.6g\n", what, (long long)i, num,
                    (double)g[i]);
    }
    CHECKF(bad == 0, "%s/%s: %d of %lld elements off (worst err/tol %.2f)", O->name, what, bad,
           (long long)n, worst);
}

/* ---- matmul ---- */
typedef struct { float *x, *w, *b, *R, *y; int T, I, Od; } mm_ctx;
static double mm_f(void *p) {
    mm_ctx *c = p;
    O->matmul_fwd(c->y, c->x, c->w, c->b, c->T, c->I, c->Od);
    return dotd(c->y, c->R, (int64_t)c->T * c->Od);
}
static void test_matmul(void) {
    mm_ctx c = {0};
    c.T = 3, c.I = 5, c.Od = 4;
    c.x = rnd(c.T * c.I), c.w = rnd(c.Od * c.I), c.b = rnd(c.Od), c.R = rnd(c.T * c.Od);
    c.y = zeros(c.T * c.Od);
    float *dx = zeros(c.T * c.I), *dw = zeros(c.Od * c.I), *db = zeros(c.Od);
    for (int i = 0; i < c.Od * c.I; i++) dw[i] = 1.0f; /* backward accumulates into dW */
    O->matmul_bwd(dx, dw, db, c.R, c.x, c.w, c.T, c.I, c.Od);
    for (int i = 0; i < c.Od * c.I; i++) dw[i] -= 1.0f;
    fd_check("matmul.dX", mm_f, &c, c.x, dx, c.T * c.I);
    fd_check("matmul.dW", mm_f, &c, c.w, dw, c.Od * c.I);
    fd_check("matmul.db", mm_f, &c, c.b, db, c.Od);
    free(c.x), free(c.w), free(c.b), free(c.R), free(c.y), free(dx), free(dw), free(db);
}

/* ---- rmsnorm (also the per-head q/k norm: rows = T*heads, C = head_dim) ---- */
typedef struct { float *x, *w, *R, *y, *rstd; int rows, C; } rn_ctx;
static double rn_f(void *p) {
    rn_ctx *c = p;
    O->rmsnorm_fwd(c->y, c->rstd, c->x, c->w, c->rows, c->C, 1e-6f);
    return dotd(c->y, c->R, (int64_t)c->rows * c->C);
}
static void test_rmsnorm(int rows, int C, const char *name) {
    rn_ctx c = {rnd(rows * C), rnd(C), rnd(rows * C), zeros(rows * C), zeros(rows), rows, C};
    float *dx = zeros(rows * C), *dw = zeros(C);
    rn_f(&c);
    O->rmsnorm_bwd(dx, dw, c.R, c.x, c.w, c.rstd, rows, C);
    char n1[64], n2[64];
    snprintf(n1, sizeof n1, "%s.dx", name), snprintf(n2, sizeof n2, "%s.dw", name);
    fd_check(n1, rn_f, &c, c.x, dx, rows * C);
    fd_check(n2, rn_f, &c, c.w, dw, C);
    free(c.x), free(c.w), free(c.R), free(c.y), free(c.rstd), free(dx), free(dw);
}

/* ---- rope ---- */
typedef struct { float *x, *R, *y; const int32_t *pos; int T, H, D; } rp_ctx;
static double rp_f(void *p) {
    rp_ctx *c = p;
    int64_t n = (int64_t)c->T * c->H * c->D;
    memcpy(c->y, c->x, sizeof(float) * n);
    O->rope_fwd(c->y, c->pos, c->T, c->H, c->D, 10000.0);
    return dotd(c->y, c->R, n);
}
static void test_rope(void) {
    const int32_t pos[4] = {0, 7, 3, 100};
    rp_ctx c = {rnd(4 * 2 * 8), rnd(4 * 2 * 8), zeros(4 * 2 * 8), pos, 4, 2, 8};
    float *dx = malloc(sizeof(float) * 64);
    memcpy(dx, c.R, sizeof(float) * 64);
    O->rope_bwd(dx, pos, 4, 2, 8, 10000.0);
    fd_check("rope.dx", rp_f, &c, c.x, dx, 64);
    /* the convention: rotate-half pairs (i, i + D/2), angle pos * theta^(-2i/D) */
    rp_f(&c);
    float a = 7.0f * powf(10000.0f, -2.0f / 8.0f);
    const float *x = c.x + 16, *y = c.y + 16; /* token 1, head 0, pair i = 1 */
    CHECK(fabsf(y[1] - (x[1] * cosf(a) - x[5] * sinf(a))) < 1e-5f);
    CHECK(fabsf(y[5] - (x[5] * cosf(a) + x[1] * sinf(a))) < 1e-5f);
    free(c.x), free(c.R), free(c.y), free(dx);
}

/* ---- attention ---- */
typedef struct { float *q, *k, *v, *R, *out, *lse; const int32_t *seg; int T, H, KVH, D; } at_ctx;
static double at_f(void *p) {
    at_ctx *c = p;
    O->attn_fwd(c->out, c->lse, c->q, c->k, c->v, c->seg, c->T, c->H, c->KVH, c->D);
    return dotd(c->out, c->R, (int64_t)c->T * c->H * c->D);
}
static void test_attention(int T, int H, int KVH, int D, const int32_t *seg, const char *name) {
    int64_t nq = (int64_t)T * H * D, nk = (int64_t)T * KVH * D;
    at_ctx c = {rnd(nq), rnd(nk), rnd(nk), rnd(nq), zeros(nq), zeros(T * H), seg, T, H, KVH, D};
    float *dq = zeros(nq), *dk = zeros(nk), *dv = zeros(nk);
    at_f(&c);
    O->attn_bwd(dq, dk, dv, c.R, c.out, c.lse, c.q, c.k, c.v, seg, T, H, KVH, D);
    char n[64];
    snprintf(n, sizeof n, "%s.dq", name), fd_check(n, at_f, &c, c.q, dq, nq);
    snprintf(n, sizeof n, "%s.dk", name), fd_check(n, at_f, &c, c.k, dk, nk);
    snprintf(n, sizeof n, "%s.dv", name), fd_check(n, at_f, &c, c.v, dv, nk);
    if (seg) {
        /* forward: each segment equals the same attention run on that segment alone */
        at_f(&c); /* out as of the unperturbed inputs */
        int s0 = 0;
        for (int t = 1; t <= T; t++) {
            if (t < T && seg[t] == seg[s0]) continue;
            int L = t - s0;
            float *o = zeros((int64_t)L * H * D), *l = zeros((int64_t)L * H);
            O->attn_fwd(o, l, c.q + (int64_t)s0 * H * D, c.k + (int64_t)s0 * KVH * D,
                        c.v + (int64_t)s0 * KVH * D, NULL, L, H, KVH, D);
            double e = 0.0;
            for (int64_t i = 0; i < (int64_t)L * H * D; i++)
                e = fmax(e, fabs(o[i] - c.out[(int64_t)s0 * H * D + i]));
            CHECKF(e < 1e-6, "%s: segment at %d differs from its solo run by %g", name, s0, e);
            free(o), free(l);
            s0 = t;
        }
        /* leak: a loss on segment s's outputs only gives every token outside s exactly zero
         * dq, dk, dv (e.g. segment 2 gets nothing from segment 1's loss) */
        float *R0 = malloc(sizeof(float) * nq);
        memcpy(R0, c.R, sizeof(float) * nq);
        for (int lo = 0, hi; lo < T; lo = hi) {
            hi = lo;
            while (hi < T && seg[hi] == seg[lo]) hi++;
            for (int64_t i = 0; i < nq; i++)
                c.R[i] = i >= (int64_t)lo * H * D && i < (int64_t)hi * H * D ? R0[i] : 0.0f;
            memset(dq, 0, sizeof(float) * nq), memset(dk, 0, sizeof(float) * nk);
            memset(dv, 0, sizeof(float) * nk);
            at_f(&c);
            O->attn_bwd(dq, dk, dv, c.R, c.out, c.lse, c.q, c.k, c.v, seg, T, H, KVH, D);
            int leak = 0, live = 0;
            for (int t = 0; t < T; t++) {
                int in = t >= lo && t < hi;
                for (int64_t i = (int64_t)t * KVH * D; i < (int64_t)(t + 1) * KVH * D; i++) {
                    if (in) live += dk[i] != 0.0f;
                    else leak += dk[i] != 0.0f || dv[i] != 0.0f;
                }
                for (int64_t i = (int64_t)t * H * D; i < (int64_t)(t + 1) * H * D; i++)
                    if (!in) leak += dq[i] != 0.0f;
            }
            CHECKF(leak == 0, "%s: %d gradient elements leaked out of the segment at %d", name,
                   leak, lo);
            CHECK(hi - lo < 2 || live > 0);
        }
        free(R0);
    }
    free(c.q), free(c.k), free(c.v), free(c.R), free(c.out), free(c.lse);
    free(dq), free(dk), free(dv);
}

/* ---- swiglu ---- */
typedef struct { float *g, *u, *R, *h; int n; } sw_ctx;
static double sw_f(void *p) {
    sw_ctx *c = p;
    O->swiglu_fwd(c->h, c->g, c->u, c->n);
    return dotd(c->h, c->R, c->n);
}
static void test_swiglu(void) {
    sw_ctx c = {rnd(24), rnd(24), rnd(24), zeros(24), 24};
    for (int i = 0; i < 24; i++) c.g[i] *= 4.0f;
    float *dg = zeros(24), *du = zeros(24);
    O->swiglu_bwd(dg, du, c.R, c.g, c.u, 24);
    fd_check("swiglu.dgate", sw_f, &c, c.g, dg, 24);
    fd_check("swiglu.dup", sw_f, &c, c.u, du, 24);
    free(c.g), free(c.u), free(c.R), free(c.h), free(dg), free(du);
}

/* ---- embedding gather + slot injection ---- */
typedef struct { float *E, *vecs, *R, *out; const int32_t *ids, *rows; int T, C, n; } em_ctx;
static double em_f(void *p) {
    em_ctx *c = p;
    memset(c->out, 0, sizeof(float) * c->T * c->C);
    O->embed_fwd(c->out, c->E, c->ids, c->T, c->C);
    O->inject_fwd(c->out, c->vecs, c->rows, c->n, c->C);
    return dotd(c->out, c->R, (int64_t)c->T * c->C);
}
static void test_embed_inject(void) {
    const int32_t ids[6] = {2, 0, -1, 2, 4, -1}, rows[2] = {2, 5};
    em_ctx c = {rnd(5 * 3), rnd(2 * 3), rnd(6 * 3), zeros(6 * 3), ids, rows, 6, 3, 2};
    float *dE = zeros(15), *dvecs = zeros(6);
    O->inject_bwd(dvecs, c.R, rows, 2, 3);
    O->embed_bwd(dE, c.R, ids, 6, 3);
    fd_check("embed.dE", em_f, &c, c.E, dE, 15);
    fd_check("inject.dvecs", em_f, &c, c.vecs, dvecs, 6);
    int unused = 1; /* ids 1 and 3 are never gathered: their rows get no gradient */
    for (int i = 0; i < 3; i++) unused &= dE[1 * 3 + i] == 0.0f && dE[3 * 3 + i] == 0.0f;
    CHECK(unused);
    CHECK(dE[2 * 3] != 0.0f); /* id 2 twice: scatter-add of both rows (checked by the FD) */
    free(c.E), free(c.vecs), free(c.R), free(c.out), free(dE), free(dvecs);
}

/* ---- lm_head + CE fused ---- */
typedef struct { float *h, *W; const int32_t *labels; int T, C, V, chunk; } ce_ctx;
static double ce_f(void *p) {
    ce_ctx *c = p;
    return O->lmhead_ce(NULL, NULL, c->h, c->W, c->labels, c->T, c->C, c->V, c->chunk, 1.0f);
}
static void test_lmhead_ce(void) {
    const int32_t labels[5] = {3, -100, 10, 0, -100};
    ce_ctx c = {rnd(5 * 4), rnd(11 * 4), labels, 5, 4, 11, 3};
    float *dh = zeros(20), *dW = zeros(44);
    double l = O->lmhead_ce(dh, dW, c.h, c.W, labels, 5, 4, 11, 3, 1.0f);
    /* the loss against a direct double evaluation over the full vocabulary */
    double ref = 0.0;
    for (int t = 0; t < 5; t++) {
        if (labels[t] == -100) continue;
        double lg[11], m = -1e300, s = 0.0;
        for (int v = 0; v < 11; v++) m = fmax(m, lg[v] = dotd(c.h + t * 4, c.W + v * 4, 4));
        for (int v = 0; v < 11; v++) s += exp(lg[v] - m);
        ref += m + log(s) - lg[labels[t]];
    }
    ref /= 3.0;
    CHECKF(fabs(l - ref) < 1e-5, "lmhead_ce loss %.8f vs reference %.8f", l, ref);
    c.chunk = 11;
    CHECK(fabs(ce_f(&c) - l) < 1e-5);
    c.chunk = 3;
    fd_check("lmhead_ce.dh", ce_f, &c, c.h, dh, 20);
    fd_check("lmhead_ce.dW", ce_f, &c, c.W, dW, 44);
    int z = 1;
    for (int i = 0; i < 4; i++) z &= dh[4 + i] == 0.0f && dh[16 + i] == 0.0f;
    CHECKF(z, "unlabelled rows must get no gradient");
    const int32_t none[2] = {-100, -100};
    CHECK(O->lmhead_ce(dh, dW, c.h, c.W, none, 2, 4, 11, 3, 1.0f) == 0.0);
    free(c.h), free(c.W), free(dh), free(dW);
}

/* ---- l2norm, layernorm, gelu ---- */
typedef struct { float *x, *w, *b, *R, *y, *m, *r; int rows, C; } hd_ctx;
static double l2_f(void *p) {
    hd_ctx *c = p;
    O->l2norm_fwd(c->y, c->x, c->rows, c->C);
    return dotd(c->y, c->R, (int64_t)c->rows * c->C);
}
static double ln_f(void *p) {
    hd_ctx *c = p;
    O->layernorm_fwd(c->y, c->m, c->r, c->x, c->w, c->b, c->rows, c->C, 1e-5f);
    return dotd(c->y, c->R, (int64_t)c->rows * c->C);
}
static double ge_f(void *p) {
    hd_ctx *c = p;
    O->gelu_fwd(c->y, c->x, (int64_t)c->rows * c->C);
    return dotd(c->y, c->R, (int64_t)c->rows * c->C);
}
static void test_heads(void) {
    const int rows = 3, C = 6, n = rows * C;
    hd_ctx c = {rnd(n), rnd(C), rnd(C), rnd(n), zeros(n), zeros(rows), zeros(rows), rows, C};
    float *dx = zeros(n), *dw = zeros(C), *db = zeros(C);
    O->l2norm_bwd(dx, c.R, c.x, rows, C);
    fd_check("l2norm.dx", l2_f, &c, c.x, dx, n);
    memset(dx, 0, sizeof(float) * n);
    ln_f(&c);
    O->layernorm_bwd(dx, dw, db, c.R, c.x, c.w, c.m, c.r, rows, C);
    fd_check("layernorm.dx", ln_f, &c, c.x, dx, n);
    fd_check("layernorm.dw", ln_f, &c, c.w, dw, C);
    fd_check("layernorm.db", ln_f, &c, c.b, db, C);
    memset(dx, 0, sizeof(float) * n);
    for (int i = 0; i < n; i++) c.x[i] *= 3.0f;
    O->gelu_bwd(dx, c.R, c.x, n);
    fd_check("gelu.dx", ge_f, &c, c.x, dx, n);
    ge_f(&c);
    CHECK(fabsf(c.y[0] - 0.5f * c.x[0] * (1.0f + erff(c.x[0] / sqrtf(2.0f)))) < 1e-6f);
    free(c.x), free(c.w), free(c.b), free(c.R), free(c.y), free(c.m), free(c.r);
    free(dx), free(dw), free(db);
}

/* ---- BCE with logits ---- */
typedef struct { float *z, *y; int n; } bc_ctx;
static double bc_f(void *p) {
    bc_ctx *c = p;
    return O->bce_logits(NULL, c->z, c->y, c->n, 1.0f);
}
static void test_bce(void) {
    bc_ctx c = {rnd(9), zeros(9), 9};
    for (int i = 0; i < 9; i++) c.z[i] *= 6.0f, c.y[i] = i % 3 == 0 ? 1.0f : 0.0f;
    c.z[0] = 40.0f, c.z[1] = -40.0f; /* large logits stay finite */
    float *dz = zeros(9);
    double l = O->bce_logits(dz, c.z, c.y, 9, 1.0f);
    CHECK(isfinite(l));
    fd_check("bce.dz", bc_f, &c, c.z, dz, 9);
    free(c.z), free(c.y), free(dz);
}

/* ---- symmetric InfoNCE with clamped learnable temperature ---- */
typedef struct { float *a, *p, *ls; int N, C; } nc_ctx;
static double nc_f(void *q) {
    nc_ctx *c = q;
    return O->infonce_sym(NULL, NULL, NULL, c->a, c->p, c->ls, c->N, c->C, 1.0f);
}
static void test_infonce(void) {
    const int N = 4, C = 5;
    float ls = logf(20.0f);
    nc_ctx c = {rnd(N * C), rnd(N * C), &ls, N, C};
    memcpy(c.p + 3 * C, c.p + 1 * C, sizeof(float) * C); /* a near-duplicate is masked */
    O->l2norm_fwd(c.a, c.a, N, C), O->l2norm_fwd(c.p, c.p, N, C);
    for (int i = 0; i < N * C; i++) c.a[i] *= 0.3f, c.p[i] *= 0.3f; /* keep s*logits moderate */
    float *da = zeros(N * C), *dp = zeros(N * C), dls = 0.0f;
    O->infonce_sym(da, dp, &dls, c.a, c.p, &ls, N, C, 1.0f);
    fd_check("infonce.da", nc_f, &c, c.a, da, N * C);
    fd_check("infonce.dp", nc_f, &c, c.p, dp, N * C);
    fd_check("infonce.dlog_scale", nc_f, &c, &ls, &dls, 1);
    ls = 9.0f;
    nc_f(&c);
    CHECK(fabsf(ls - logf(100.0f)) < 1e-6f); /* clamped in place to ln 100 */
    ls = -2.0f;
    nc_f(&c);
    CHECK(ls == 0.0f);
    free(c.a), free(c.p), free(da), free(dp);
}

/* Threads (hc_train_ops_cpu_set_threads): shapes large enough to be cut into several blocks and
 * tasks give bit-identical outputs with 1 and 3 threads, and the blocked matmul and the blocked
 * lm_head gradient equal a direct double evaluation (so a wrong block offset cannot pass just by
 * being the same for every thread count). */
static double max_rel(const float *a, const double *ref, int64_t n) {
    double m = 0.0, s = 0.0;
    for (int64_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - ref[i]);
        if (d > m) m = d;
        if (fabs(ref[i]) > s) s = fabs(ref[i]);
    }
    return m / (s > 0 ? s : 1.0);
}

typedef struct thr_out {
    float *y, *dx, *dw, *att, *lse, *dq, *dk, *dv, *dh, *dW;
    double loss;
} thr_out;

enum { TT = 300, TI = 96, TO = 80, AT = 150, AH = 4, AKV = 2, AD = 8, LT = 60, LC = 16, LV = 600 };

static void thr_run(thr_out *r, const float *x, const float *w, const float *dy, const float *q,
                    const float *k, const float *v, const float *dout, const int32_t *seg,
                    const float *h, const float *W, const int32_t *labels) {
    r->y = zeros((int64_t)TT * TO), r->dx = zeros((int64_t)TT * TI), r->dw = zeros((int64_t)TO * TI);
    O->matmul_fwd(r->y, x, w, NULL, TT, TI, TO);
    O->matmul_bwd(r->dx, r->dw, NULL, dy, x, w, TT, TI, TO);
    r->att = zeros((int64_t)AT * AH * AD), r->lse = zeros((int64_t)AT * AH);
    r->dq = zeros((int64_t)AT * AH * AD), r->dk = zeros((int64_t)AT * AKV * AD);
    r->dv = zeros((int64_t)AT * AKV * AD);
    O->attn_fwd(r->att, r->lse, q, k, v, seg, AT, AH, AKV, AD);
    O->attn_bwd(r->dq, r->dk, r->dv, dout, r->att, r->lse, q, k, v, seg, AT, AH, AKV, AD);
    r->dh = zeros((int64_t)LT * LC), r->dW = zeros((int64_t)LV * LC);
    r->loss = O->lmhead_ce(r->dh, r->dW, h, W, labels, LT, LC, LV, 100, 1.0f);
}

static void thr_free(thr_out *r) {
    free(r->y), free(r->dx), free(r->dw), free(r->att), free(r->lse), free(r->dq), free(r->dk);
    free(r->dv), free(r->dh), free(r->dW);
}

static int same(const float *a, const float *b, int64_t n) {
    return memcmp(a, b, sizeof(float) * (size_t)n) == 0;
}

static void test_threads(void) {
    if (O != hc_train_ops_cpu()) return;
    float *x = rnd((int64_t)TT * TI), *w = rnd((int64_t)TO * TI), *dy = rnd((int64_t)TT * TO);
    float *q = rnd((int64_t)AT * AH * AD), *k = rnd((int64_t)AT * AKV * AD);
    float *v = rnd((int64_t)AT * AKV * AD), *dout = rnd((int64_t)AT * AH * AD);
    int32_t seg[AT], labels[LT];
    for (int t = 0; t < AT; t++) seg[t] = t < 20 ? 0 : t < 21 ? 1 : t < 90 ? 2 : 3;
    float *h = rnd((int64_t)LT * LC), *W = rnd((int64_t)LV * LC);
    for (int t = 0; t < LT; t++) labels[t] = t % 7 == 3 ? -100 : (t * 37) % LV;
    thr_out a, b;
    CHECK(hc_train_ops_cpu_set_threads(1) == 0);
    thr_run(&a, x, w, dy, q, k, v, dout, seg, h, W, labels);
    CHECK(hc_train_ops_cpu_set_threads(3) == 0 && hc_train_ops_cpu_threads() == 3);
    thr_run(&b, x, w, dy, q, k, v, dout, seg, h, W, labels);
    CHECK(hc_train_ops_cpu_set_threads(1) == 0 && hc_train_ops_cpu_threads() == 1);
    CHECK(same(a.y, b.y, (int64_t)TT * TO) && same(a.dx, b.dx, (int64_t)TT * TI) &&
          same(a.dw, b.dw, (int64_t)TO * TI));
    CHECK(same(a.att, b.att, (int64_t)AT * AH * AD) && same(a.lse, b.lse, (int64_t)AT * AH));
    CHECK(same(a.dq, b.dq, (int64_t)AT * AH * AD) && same(a.dk, b.dk, (int64_t)AT * AKV * AD) &&
          same(a.dv, b.dv, (int64_t)AT * AKV * AD));
    CHECK(same(a.dh, b.dh, (int64_t)LT * LC) && same(a.dW, b.dW, (int64_t)LV * LC) &&
          a.loss == b.loss);
    /* the blocked results against double loops */
    double *ry = calloc((size_t)TT * TO, sizeof(double)), *rdx = calloc((size_t)TT * TI, sizeof(double));
    double *rdw = calloc((size_t)TO * TI, sizeof(double));
    for (int t = 0; t < TT; t++)
        for (int o = 0; o < TO; o++) {
            ry[t * TO + o] = dotd(x + t * TI, w + o * TI, TI);
            for (int i = 0; i < TI; i++) {
                rdx[t * TI + i] += (double)dy[t * TO + o] * w[o * TI + i];
                rdw[o * TI + i] += (double)dy[t * TO + o] * x[t * TI + i];
            }
        }
    CHECK(max_rel(a.y, ry, (int64_t)TT * TO) < 1e-5 && max_rel(a.dx, rdx, (int64_t)TT * TI) < 1e-5 &&
          max_rel(a.dw, rdw, (int64_t)TO * TI) < 1e-5);
    double *rdh = calloc((size_t)LT * LC, sizeof(double)), *rdW = calloc((size_t)LV * LC, sizeof(double));
    double *lg = malloc(sizeof(double) * LV), loss = 0.0;
    int n_lab = 0;
    for (int t = 0; t < LT; t++) n_lab += labels[t] != -100;
    for (int t = 0; t < LT; t++) {
        if (labels[t] == -100) continue;
        double m = -INFINITY, z = 0.0;
        for (int u = 0; u < LV; u++) {
            lg[u] = dotd(h + t * LC, W + u * LC, LC);
            if (lg[u] > m) m = lg[u];
        }
        for (int u = 0; u < LV; u++) z += exp(lg[u] - m);
        loss += m + log(z) - lg[labels[t]];
        for (int u = 0; u < LV; u++) {
            double d = (exp(lg[u] - m) / z - (u == labels[t])) / n_lab;
            for (int i = 0; i < LC; i++) {
                rdh[t * LC + i] += d * W[u * LC + i];
                rdW[u * LC + i] += d * h[t * LC + i];
            }
        }
    }
    CHECK(fabs(a.loss - loss / n_lab) < 1e-5 * fabs(loss / n_lab));
    CHECK(max_rel(a.dh, rdh, (int64_t)LT * LC) < 1e-4 && max_rel(a.dW, rdW, (int64_t)LV * LC) < 1e-4);
    thr_free(&a), thr_free(&b);
    free(ry), free(rdx), free(rdw), free(rdh), free(rdW), free(lg);
    free(x), free(w), free(dy), free(q), free(k), free(v), free(dout), free(h), free(W);
}

int main(int argc, char **argv) {
    (void)argc, (void)argv;
    const hc_train_ops *tables[] = {hc_train_ops_cpu()};
    const int small = getenv("HC_UNDER_VALGRIND") != NULL;
    for (size_t k = 0; k < sizeof tables / sizeof *tables; k++) {
        O = tables[k];
        test_matmul();
        test_rmsnorm(4, 16, "rmsnorm");
        test_rmsnorm(6, 8, "qk_norm");
        test_rope();
        static const int32_t seg3[7] = {0, 0, 0, 1, 1, 2, 2};
        test_attention(small ? 5 : 7, 4, 2, 4, seg3, "attn_gqa_segments");
        test_attention(small ? 3 : 5, 2, 2, 4, NULL, "attn_mha");
        static const int32_t seg2[6] = {0, 0, 0, 0, 1, 1};
        test_attention(6, 6, 1, 2, seg2, "attn_mqa_segments");
        test_swiglu();
        test_embed_inject();
        test_lmhead_ce();
        test_heads();
        test_bce();
        test_infonce();
        test_threads();
    }
    return hc_test_finish("test_train_ops");
}
