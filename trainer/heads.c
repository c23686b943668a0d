/* heads.c: cls (MLP-Mixer match head), align, recon and next-item losses with their backward
 * passes, assembled from the op table (ops/train_ops.h). See heads.h for the contract. */
#include "heads.h"

#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define LN_EPS 1e-5f /* nn.LayerNorm default, the cls_tower's norms */

/* ---- parameter lookup -------------------------------------------------------------------------- */

static void shape_str(char *buf, size_t cap, int ndim, const int64_t *shape) {
    size_t o = 0;
    o += (size_t)snprintf(buf + o, cap - o, "(");
    for (int i = 0; i < ndim && o < cap; i++)
        o += (size_t)snprintf(buf + o, cap - o, i ? ", %lld" : "%lld", (long long)shape[i]);
    if (o < cap) snprintf(buf + o, cap - o, ")");
}

/* The parameter `name`: with ndim > 0 its shape must be ndim-dimensional and equal shape[k]
 * wherever shape[k] >= 0 (the others are filled in); with ndim == 0 it must have shape[0]
 * elements, in any shape. *w, *g (g may be NULL) point into the table. */
static int getp(const hc_ptab *t, const char *name, int ndim, int64_t *shape, float **w, float **g,
                hc_errbuf *eb) {
    int i = hc_ptab_find(t, name);
    if (i < 0) return hc_seterr(eb, HC_ERR_NOTFOUND, "parameter %s is not in the table", name);
    const hc_param *P = &t->params[i];
    if (!t->w || !t->g) return hc_seterr(eb, HC_ERR_INVAL, "parameter table is not allocated");
    char got[96], want[96];
    if (ndim > 0) {
        int ok = P->ndim == ndim;
        for (int k = 0; ok && k < ndim; k++) ok = shape[k] < 0 || shape[k] == P->shape[k];
        if (!ok) {
            shape_str(got, sizeof got, P->ndim, P->shape);
            shape_str(want, sizeof want, ndim, shape);
            return hc_seterr(eb, HC_ERR_MISMATCH, "parameter %s has shape %s, expected %s "
                             "(-1: any)", name, got, want);
        }
        for (int k = 0; k < ndim; k++) shape[k] = P->shape[k];
    } else if ((int64_t)P->numel != shape[0]) {
        shape_str(got, sizeof got, P->ndim, P->shape);
        return hc_seterr(eb, HC_ERR_MISMATCH, "parameter %s has shape %s, expected %lld elements",
                         name, got, (long long)shape[0]);
    }
    *w = t->w + P->offset;
    if (g) *g = t->g + P->offset;
    return 0;
}

static const hc_train_ops *ops_or_cpu(const hc_train_ops *ops) {
    return ops ? ops : hc_train_ops_cpu();
}

/* Offsets into one float arena: pass 1 (base NULL) counts, pass 2 hands out pointers. */
typedef struct arena {
    float *base;
    size_t off;
} arena;
static float *take(arena *a, size_t n) {
    float *p = a->base ? a->base + a->off : NULL;
    a->off += (n + 15) & ~(size_t)15; /* 64-byte granules */
    return p;
}

static int check_rows(const hc_tok_rows *r, int n, const char *what, int64_t *total,
                      hc_errbuf *eb) {
    if (!r || (n > 0 && !r->lens)) return hc_seterr(eb, HC_ERR_INVAL, "%s: rows missing", what);
    if (r->n != n) return hc_seterr(eb, HC_ERR_INVAL, "%s: %d rows for %d users", what, r->n, n);
    int64_t s = 0;
    for (int i = 0; i < n; i++) {
        if (r->lens[i] < 0)
            return hc_seterr(eb, HC_ERR_INVAL, "%s: row %d has length %d", what, i, r->lens[i]);
        s += r->lens[i];
    }
    if (s > 0 && !r->ids) return hc_seterr(eb, HC_ERR_INVAL, "%s: no ids", what);
    *total = s;
    return 0;
}

/* ---- cls: negatives ---------------------------------------------------------------------------- */

int hc_cls_num_negatives(int n, int cls_neg_num) {
    if (n < 2 || cls_neg_num <= 0) return 0;
    return cls_neg_num < n - 1 ? cls_neg_num : n - 1;
}

static uint64_t splitmix64(uint64_t *s) {
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

/* uniform in [0, m), m >= 1, by rejection (no modulo bias) */
static uint64_t uniform_below(uint64_t *s, uint64_t m) {
    uint64_t lim = UINT64_MAX - UINT64_MAX % m, r;
    do r = splitmix64(s);
    while (r >= lim);
    return r % m;
}

int hc_cls_pick_negatives(uint64_t *rng, int n, int k, int32_t *neg, hc_errbuf *eb) {
    if (!rng || !neg) return hc_seterr(eb, HC_ERR_INVAL, "cls negatives: NULL argument");
    if (n < 2) return hc_seterr(eb, HC_ERR_INVAL, "cls negatives: %d row(s); in-batch negatives "
                                "need at least 2", n);
    if (k < 1 || k > n - 1)
        return hc_seterr(eb, HC_ERR_INVAL, "cls negatives: k = %d outside 1..%d (n - 1)", k, n - 1);
    int32_t *pool = malloc(sizeof(int32_t) * (size_t)(n - 1));
    if (!pool) return hc_seterr(eb, HC_ERR_NOMEM, "cls negatives: out of memory");
    for (int i = 0; i < n; i++) {
        for (int j = 0, m = 0; j < n; j++)
            if (j != i) pool[m++] = j;
        for (int j = 0; j < k; j++) { /* partial Fisher-Yates */
            int r = j + (int)uniform_below(rng, (uint64_t)(n - 1 - j));
            int32_t x = pool[j];
            pool[j] = pool[r];
            pool[r] = x;
            neg[(int64_t)i * k + j] = pool[j];
        }
    }
    free(pool);
    return 0;
}

/* ---- cls: the MLP-Mixer match head ------------------------------------------------------------- */

#define CLS_MAXB 16
enum { TN_W, TN_B, T1_W, T1_B, T2_W, T2_B, CN_W, CN_B, C1_W, C1_B, C2_W, C2_B, BLK_NP };
static const char *const blk_names[BLK_NP] = {
    "token_norm.weight",          "token_norm.bias",
    "token_forward.net.0.weight", "token_forward.net.0.bias",
    "token_forward.net.3.weight", "token_forward.net.3.bias",
    "channel_mix.0.weight",       "channel_mix.0.bias",
    "channel_mix.1.net.0.weight", "channel_mix.1.net.0.bias",
    "channel_mix.1.net.3.weight", "channel_mix.1.net.3.bias",
};

typedef struct cls_net {
    int D, Ht, Hc, depth; /* mixer dim, token-mixing hidden, channel-mixing hidden, blocks */
    int HU, HI;           /* widths of U (H_c) and e_ad (H_i) */
    float *wu, *gu, *wi, *gi;
    float *w[CLS_MAXB][BLK_NP], *g[CLS_MAXB][BLK_NP];
    float *fw, *fb, *hw, *hb, *gfw, *gfb, *ghw, *ghb;
} cls_net;

static int cls_bind(const hc_ptab *t, cls_net *c, hc_errbuf *eb) {
    memset(c, 0, sizeof *c);
    int rc;
    int64_t s[2] = {-1, -1};
    if ((rc = getp(t, "cls_tower.layer_norm.weight", 1, s, &c->fw, &c->gfw, eb))) return rc;
    c->D = (int)s[0];
    if ((rc = getp(t, "cls_tower.layer_norm.bias", 1, s, &c->fb, &c->gfb, eb))) return rc;
    int64_t sh[2] = {1, c->D}, sb[1] = {1};
    if ((rc = getp(t, "cls_tower.mlp_head.0.weight", 2, sh, &c->hw, &c->ghw, eb))) return rc;
    if ((rc = getp(t, "cls_tower.mlp_head.0.bias", 1, sb, &c->hb, &c->ghb, eb))) return rc;
    int64_t su[2] = {c->D, -1}, si[2] = {c->D, -1};
    if ((rc = getp(t, "user_tower.weight", 2, su, &c->wu, &c->gu, eb))) return rc;
    if ((rc = getp(t, "item_tower.weight", 2, si, &c->wi, &c->gi, eb))) return rc;
    c->HU = (int)su[1];
    c->HI = (int)si[1];
    char name[128];
    int64_t Ht = -1, Hc = -1;
    for (int b = 0;; b++) {
        snprintf(name, sizeof name, "cls_tower.mixer_blocks.%d.token_norm.weight", b);
        if (hc_ptab_find(t, name) < 0) {
            if (b == 0)
                return hc_seterr(eb, HC_ERR_NOTFOUND, "parameter %s is not in the table", name);
            break;
        }
        if (b == CLS_MAXB)
            return hc_seterr(eb, HC_ERR_UNSUPPORTED, "cls_tower: more than %d mixer blocks",
                             CLS_MAXB);
        int64_t shapes[BLK_NP][2] = {{c->D}, {c->D}, {Ht, 2}, {Ht}, {2, Ht}, {2},
                                     {c->D}, {c->D}, {Hc, c->D}, {Hc}, {c->D, Hc}, {c->D}};
        static const int nd[BLK_NP] = {1, 1, 2, 1, 2, 1, 1, 1, 2, 1, 2, 1};
        for (int k = 0; k < BLK_NP; k++) {
            if (k == T1_B) shapes[k][0] = Ht; /* derived from net.0.weight just above */
            if (k == T2_W) shapes[k][1] = Ht;
            if (k == C1_B) shapes[k][0] = Hc;
            if (k == C2_W) shapes[k][1] = Hc;
            snprintf(name, sizeof name, "cls_tower.mixer_blocks.%d.%s", b, blk_names[k]);
            if ((rc = getp(t, name, nd[k], shapes[k], &c->w[b][k], &c->g[b][k], eb))) return rc;
            if (k == T1_W) Ht = shapes[k][0];
            if (k == C1_W) Hc = shapes[k][0];
        }
        c->depth = b + 1;
    }
    c->Ht = (int)Ht;
    c->Hc = (int)Hc;
    return 0;
}

/* Saved activations of a forward over B pairs (x: (B, 2, D) row-major; token-mixing runs on the
 * transposed (B*D, 2) layout) and the backward's buffers. */
typedef struct cls_ws {
    float *vu, *va;
    float *xin[CLS_MAXB], *y1[CLS_MAXB], *m1[CLS_MAXB], *r1[CLS_MAXB], *yt[CLS_MAXB];
    float *h1[CLS_MAXB], *g1[CLS_MAXB], *xmid[CLS_MAXB], *y2[CLS_MAXB], *m2[CLS_MAXB];
    float *r2[CLS_MAXB], *h2[CLS_MAXB], *g2[CLS_MAXB];
    float *xfin, *yf, *mf, *rf, *z, *logit, *tt, *tc;
    /* backward */
    float *dlogit, *dz, *dx, *dy, *dg2, *dh2, *dtt, *dg1, *dh1, *dyt, *dvu, *dva, *label;
    float *mem;
} cls_ws;

static size_t cls_layout(cls_ws *w, float *base, const cls_net *c, int N, int B, int backward) {
    arena a = {base, 0};
    size_t X = (size_t)2 * B * c->D, R = (size_t)2 * B;
    size_t TH = (size_t)B * c->D * c->Ht, CH = (size_t)2 * B * c->Hc;
    w->vu = take(&a, (size_t)N * c->D);
    w->va = take(&a, (size_t)N * c->D);
    for (int b = 0; b < c->depth; b++) {
        w->xin[b] = take(&a, X), w->y1[b] = take(&a, X), w->m1[b] = take(&a, R);
        w->r1[b] = take(&a, R), w->yt[b] = take(&a, X), w->h1[b] = take(&a, TH);
        w->g1[b] = take(&a, TH), w->xmid[b] = take(&a, X), w->y2[b] = take(&a, X);
        w->m2[b] = take(&a, R), w->r2[b] = take(&a, R), w->h2[b] = take(&a, CH);
        w->g2[b] = take(&a, CH);
    }
    w->xfin = take(&a, X), w->yf = take(&a, X), w->mf = take(&a, R), w->rf = take(&a, R);
    w->z = take(&a, (size_t)B * c->D), w->logit = take(&a, (size_t)B);
    w->tt = take(&a, X), w->tc = take(&a, X);
    if (backward) {
        w->dlogit = take(&a, (size_t)B), w->dz = take(&a, (size_t)B * c->D);
        w->dx = take(&a, X), w->dy = take(&a, X), w->dg2 = take(&a, CH), w->dh2 = take(&a, CH);
        w->dtt = take(&a, X), w->dg1 = take(&a, TH), w->dh1 = take(&a, TH), w->dyt = take(&a, X);
        w->dvu = take(&a, (size_t)N * c->D), w->dva = take(&a, (size_t)N * c->D);
        w->label = take(&a, (size_t)B);
    }
    return a.off;
}

static int cls_alloc(cls_ws *w, const cls_net *c, int N, int B, int backward, hc_errbuf *eb) {
    memset(w, 0, sizeof *w);
    size_t n = cls_layout(w, NULL, c, N, B, backward);
    w->mem = calloc(n, sizeof(float));
    if (!w->mem) return hc_seterr(eb, HC_ERR_NOMEM, "cls: out of memory (%zu floats)", n);
    cls_layout(w, w->mem, c, N, B, backward);
    return 0;
}

/* (B, 2, D) <-> (B*D, 2) */
static void to_tok(float *dst, const float *src, int B, int D) {
    for (int p = 0; p < B; p++)
        for (int s = 0; s < 2; s++)
            for (int d = 0; d < D; d++)
                dst[((int64_t)p * D + d) * 2 + s] = src[((int64_t)p * 2 + s) * D + d];
}
static void from_tok(float *dst, const float *src, int B, int D, int add) {
    for (int p = 0; p < B; p++)
        for (int s = 0; s < 2; s++)
            for (int d = 0; d < D; d++) {
                float v = src[((int64_t)p * D + d) * 2 + s];
                float *o = &dst[((int64_t)p * 2 + s) * D + d];
                *o = add ? *o + v : v;
            }
}

/* Logits of the B pairs [v_u[pu[p]], v_a[pa[p]]] into w->logit. */
static void cls_forward(const hc_train_ops *ops, const cls_net *c, cls_ws *w, const float *U,
                        const float *E, int N, const int32_t *pu, const int32_t *pa, int B) {
    const int D = c->D, Ht = c->Ht, Hc = c->Hc, R = 2 * B;
    ops->matmul_fwd(w->vu, U, c->wu, NULL, N, c->HU, D);
    ops->matmul_fwd(w->va, E, c->wi, NULL, N, c->HI, D);
    for (int p = 0; p < B; p++) {
        memcpy(w->xin[0] + (int64_t)2 * p * D, w->vu + (int64_t)pu[p] * D, sizeof(float) * D);
        memcpy(w->xin[0] + (int64_t)(2 * p + 1) * D, w->va + (int64_t)pa[p] * D,
               sizeof(float) * D);
    }
    for (int b = 0; b < c->depth; b++) {
        float *const *W = c->w[b];
        const float *xin = w->xin[b];
        ops->layernorm_fwd(w->y1[b], w->m1[b], w->r1[b], xin, W[TN_W], W[TN_B], R, D, LN_EPS);
        to_tok(w->yt[b], w->y1[b], B, D);
        ops->matmul_fwd(w->h1[b], w->yt[b], W[T1_W], W[T1_B], B * D, 2, Ht);
        ops->gelu_fwd(w->g1[b], w->h1[b], (int64_t)B * D * Ht);
        ops->matmul_fwd(w->tt, w->g1[b], W[T2_W], W[T2_B], B * D, Ht, 2);
        memcpy(w->xmid[b], xin, sizeof(float) * (size_t)R * D);
        from_tok(w->xmid[b], w->tt, B, D, 1);
        ops->layernorm_fwd(w->y2[b], w->m2[b], w->r2[b], w->xmid[b], W[CN_W], W[CN_B], R, D,
                           LN_EPS);
        ops->matmul_fwd(w->h2[b], w->y2[b], W[C1_W], W[C1_B], R, D, Hc);
        ops->gelu_fwd(w->g2[b], w->h2[b], (int64_t)R * Hc);
        ops->matmul_fwd(w->tc, w->g2[b], W[C2_W], W[C2_B], R, Hc, D);
        float *xout = b + 1 < c->depth ? w->xin[b + 1] : w->xfin;
        for (int64_t i = 0; i < (int64_t)R * D; i++) xout[i] = w->xmid[b][i] + w->tc[i];
    }
    ops->layernorm_fwd(w->yf, w->mf, w->rf, w->xfin, c->fw, c->fb, R, D, LN_EPS);
    for (int p = 0; p < B; p++)
        for (int d = 0; d < D; d++)
            w->z[(int64_t)p * D + d] =
                0.5f * (w->yf[(int64_t)2 * p * D + d] + w->yf[(int64_t)(2 * p + 1) * D + d]);
    ops->matmul_fwd(w->logit, w->z, c->hw, c->hb, B, D, 1);
}

/* Backward from w->dlogit (B): every cls parameter gradient, dU / dE (may be NULL). */
static void cls_backward(const hc_train_ops *ops, const cls_net *c, cls_ws *w, const float *U,
                         const float *E, int N, const int32_t *pu, const int32_t *pa, int B,
                         float *dU, float *dE) {
    const int D = c->D, Ht = c->Ht, Hc = c->Hc, R = 2 * B;
    const size_t X = (size_t)R * D;
    memset(w->dz, 0, sizeof(float) * (size_t)B * D);
    ops->matmul_bwd(w->dz, c->ghw, c->ghb, w->dlogit, w->z, c->hw, B, D, 1);
    for (int p = 0; p < B; p++)
        for (int d = 0; d < D; d++)
            w->dy[(int64_t)2 * p * D + d] = w->dy[(int64_t)(2 * p + 1) * D + d] =
                0.5f * w->dz[(int64_t)p * D + d];
    memset(w->dx, 0, sizeof(float) * X);
    ops->layernorm_bwd(w->dx, c->gfw, c->gfb, w->dy, w->xfin, c->fw, w->mf, w->rf, R, D);
    for (int b = c->depth - 1; b >= 0; b--) {
        float *const *W = c->w[b], *const *G = c->g[b];
        /* channel mixing: dx is d(block output) */
        memset(w->dg2, 0, sizeof(float) * (size_t)R * Hc);
        ops->matmul_bwd(w->dg2, G[C2_W], G[C2_B], w->dx, w->g2[b], W[C2_W], R, Hc, D);
        memset(w->dh2, 0, sizeof(float) * (size_t)R * Hc);
        ops->gelu_bwd(w->dh2, w->dg2, w->h2[b], (int64_t)R * Hc);
        memset(w->dy, 0, sizeof(float) * X);
        ops->matmul_bwd(w->dy, G[C1_W], G[C1_B], w->dh2, w->y2[b], W[C1_W], R, D, Hc);
        ops->layernorm_bwd(w->dx, G[CN_W], G[CN_B], w->dy, w->xmid[b], W[CN_W], w->m2[b],
                           w->r2[b], R, D); /* dx: d(xmid) */
        /* token mixing */
        to_tok(w->dtt, w->dx, B, D);
        size_t th = (size_t)B * D * Ht;
        memset(w->dg1, 0, sizeof(float) * th);
        ops->matmul_bwd(w->dg1, G[T2_W], G[T2_B], w->dtt, w->g1[b], W[T2_W], B * D, Ht, 2);
        memset(w->dh1, 0, sizeof(float) * th);
        ops->gelu_bwd(w->dh1, w->dg1, w->h1[b], (int64_t)th);
        memset(w->dyt, 0, sizeof(float) * X);
        ops->matmul_bwd(w->dyt, G[T1_W], G[T1_B], w->dh1, w->yt[b], W[T1_W], B * D, 2, Ht);
        from_tok(w->dy, w->dyt, B, D, 0);
        ops->layernorm_bwd(w->dx, G[TN_W], G[TN_B], w->dy, w->xin[b], W[TN_W], w->m1[b],
                           w->r1[b], R, D); /* dx: d(block input) */
    }
    memset(w->dvu, 0, sizeof(float) * (size_t)N * D);
    memset(w->dva, 0, sizeof(float) * (size_t)N * D);
    for (int p = 0; p < B; p++)
        for (int d = 0; d < D; d++) {
            w->dvu[(int64_t)pu[p] * D + d] += w->dx[(int64_t)2 * p * D + d];
            w->dva[(int64_t)pa[p] * D + d] += w->dx[(int64_t)(2 * p + 1) * D + d];
        }
    ops->matmul_bwd(dU, c->gu, NULL, w->dvu, U, c->wu, N, c->HU, D);
    ops->matmul_bwd(dE, c->gi, NULL, w->dva, E, c->wi, N, c->HI, D);
}

int hc_cls_loss(hc_ptab *t, const hc_train_ops *ops, const float *U, const float *e_ad, int n,
                const int32_t *neg, int k, float weight, int backward, float *dU, float *de_ad,
                double *loss, hc_errbuf *eb) {
    if (!t || !U || !e_ad || !loss || (k > 0 && !neg))
        return hc_seterr(eb, HC_ERR_INVAL, "cls: NULL argument");
    if (n < 2)
        return hc_seterr(eb, HC_ERR_INVAL, "cls: %d row(s) in the batch; its negatives come from "
                         "the other rows, so it needs at least 2 (disable the cls term or use a "
                         "larger batch)", n);
    if (k < 0 || k > n - 1)
        return hc_seterr(eb, HC_ERR_INVAL, "cls: %d negatives per row with %d rows (0..%d)", k, n,
                         n - 1);
    for (int i = 0; i < n; i++)
        for (int j = 0; j < k; j++) {
            int32_t v = neg[(int64_t)i * k + j];
            if (v < 0 || v >= n || v == i)
                return hc_seterr(eb, HC_ERR_RANGE, "cls: negative %d of row %d is %d (must be "
                                 "another row in 0..%d)", j, i, (int)v, n - 1);
        }
    ops = ops_or_cpu(ops);
    cls_net c;
    int rc = cls_bind(t, &c, eb);
    if (rc) return rc;
    const int B = n * (k + 1);
    int32_t *pu = malloc(sizeof(int32_t) * (size_t)B * 2);
    cls_ws w;
    if (!pu) return hc_seterr(eb, HC_ERR_NOMEM, "cls: out of memory");
    if ((rc = cls_alloc(&w, &c, n, B, backward, eb))) {
        free(pu);
        return rc;
    }
    int32_t *pa = pu + B;
    float *label = backward ? w.label : malloc(sizeof(float) * (size_t)B);
    if (!label) {
        free(pu);
        free(w.mem);
        return hc_seterr(eb, HC_ERR_NOMEM, "cls: out of memory");
    }
    for (int i = 0; i < n; i++)
        for (int j = 0; j <= k; j++) {
            int p = i * (k + 1) + j;
            pu[p] = i;
            pa[p] = j == 0 ? i : neg[(int64_t)i * k + j - 1];
            label[p] = j == 0 ? 1.0f : 0.0f;
        }
    cls_forward(ops, &c, &w, U, e_ad, n, pu, pa, B);
    if (backward) {
        memset(w.dlogit, 0, sizeof(float) * (size_t)B);
        *loss = ops->bce_logits(w.dlogit, w.logit, label, B, weight);
        cls_backward(ops, &c, &w, U, e_ad, n, pu, pa, B, dU, de_ad);
    } else {
        *loss = ops->bce_logits(NULL, w.logit, label, B, 0.0f);
        free(label);
    }
    free(pu);
    free(w.mem);
    return 0;
}

int hc_match_score(const hc_ptab *t, const float *U, const float *e_ad, int n, float *logits,
                   hc_errbuf *eb) {
    if (!t || !U || !e_ad || !logits) return hc_seterr(eb, HC_ERR_INVAL, "match score: NULL argument");
    if (n < 1) return hc_seterr(eb, HC_ERR_INVAL, "match score: %d pairs", n);
    cls_net c;
    int rc = cls_bind(t, &c, eb);
    if (rc) return rc;
    int32_t *pu = malloc(sizeof(int32_t) * (size_t)n);
    cls_ws w;
    if (!pu) return hc_seterr(eb, HC_ERR_NOMEM, "match score: out of memory");
    if ((rc = cls_alloc(&w, &c, n, n, 0, eb))) {
        free(pu);
        return rc;
    }
    for (int i = 0; i < n; i++) pu[i] = i;
    cls_forward(hc_train_ops_cpu(), &c, &w, U, e_ad, n, pu, pu, n);
    memcpy(logits, w.logit, sizeof(float) * (size_t)n);
    free(pu);
    free(w.mem);
    return 0;
}

/* ---- decoder heads: common --------------------------------------------------------------------- */

static int check_dec(const hc_ptab *t, const hc_tmodel *dec, const char *what, hc_errbuf *eb) {
    if (!dec) return hc_seterr(eb, HC_ERR_INVAL, "%s: no decoder", what);
    if (dec->t != t)
        return hc_seterr(eb, HC_ERR_INVAL, "%s: the decoder is not bound to this parameter table",
                         what);
    return 0;
}

/* One packed batch: ids/pos/seg (T), inject rows (n), labels (T) and the float buffers. */
typedef struct pack {
    int T;
    int32_t *ids, *pos, *seg, *rows, *labels;
} pack;

static int pack_alloc(pack *p, int64_t T, int n, const char *what, hc_errbuf *eb) {
    memset(p, 0, sizeof *p);
    if (T > INT_MAX / 2) return hc_seterr(eb, HC_ERR_RANGE, "%s: %lld rows in one batch", what,
                                          (long long)T);
    p->T = (int)T;
    p->ids = malloc(sizeof(int32_t) * ((size_t)T * 4 + (size_t)n));
    if (!p->ids) return hc_seterr(eb, HC_ERR_NOMEM, "%s: out of memory", what);
    p->pos = p->ids + T, p->seg = p->pos + T, p->labels = p->seg + T, p->rows = p->labels + T;
    return 0;
}

/* ---- align ------------------------------------------------------------------------------------- */

int hc_align_loss(hc_ptab *t, hc_tmodel *dec, const float *u, int n, const hc_tok_rows *profile,
                  int max_len, float weight, int backward, float *du, double *loss,
                  hc_errbuf *eb) {
    if (!t || !u || !loss) return hc_seterr(eb, HC_ERR_INVAL, "align: NULL argument");
    int rc = check_dec(t, dec, "align", eb);
    if (rc) return rc;
    if (n < 2)
        return hc_seterr(eb, HC_ERR_INVAL, "align: %d row(s) in the batch; its negatives are the "
                         "other rows, so it needs at least 2 (disable the align term or use a "
                         "larger batch)", n);
    int64_t tot;
    if ((rc = check_rows(profile, n, "align profile", &tot, eb))) return rc;
    const int C = dec->cfg.hidden_size;
    float *W, *gW, *slot, *gslot, *temp, *gtemp;
    int64_t sw[2] = {C, -1}, sslot[1] = {C}, stemp[1] = {1};
    if ((rc = getp(t, "user_profile_align_projector.weight", 2, sw, &W, &gW, eb))) return rc;
    if ((rc = getp(t, "dec_emb_tokens", 0, sslot, &slot, &gslot, eb))) return rc;
    if ((rc = getp(t, "align_temp", 0, stemp, &temp, &gtemp, eb))) return rc;
    const int Hu = (int)sw[1];
    int64_t T = 0;
    for (int i = 0; i < n; i++)
        T += (max_len > 0 && profile->lens[i] > max_len ? max_len : profile->lens[i]) + 1;
    pack p;
    if ((rc = pack_alloc(&p, T, n, "align", eb))) return rc;
    /* inject, a_raw, p_raw, a, p, da, dp, d a_raw, d p_raw (n, C) each; dhidden (T, C) */
    float *mem = calloc((size_t)n * C * 9 + (backward ? (size_t)T * C : 0), sizeof(float));
    if (!mem) {
        free(p.ids);
        return hc_seterr(eb, HC_ERR_NOMEM, "align: out of memory");
    }
    float *inj = mem, *a_raw = inj + (size_t)n * C, *p_raw = a_raw + (size_t)n * C;
    float *an = p_raw + (size_t)n * C, *pn = an + (size_t)n * C, *da = pn + (size_t)n * C;
    float *dp = da + (size_t)n * C, *da_raw = dp + (size_t)n * C, *dp_raw = da_raw + (size_t)n * C;
    float *dh = backward ? dp_raw + (size_t)n * C : NULL;
    /* rows: profile[:max_len] then the slot, one segment per user, positions from 0 */
    int r = 0;
    int64_t off = 0;
    for (int i = 0; i < n; i++) {
        int L = max_len > 0 && profile->lens[i] > max_len ? max_len : profile->lens[i];
        for (int j = 0; j <= L; j++, r++) {
            p.ids[r] = j < L ? profile->ids[off + j] : -1;
            p.pos[r] = j;
            p.seg[r] = i;
        }
        p.rows[i] = r - 1;
        memcpy(inj + (size_t)i * C, slot, sizeof(float) * C);
        off += profile->lens[i];
    }
    hc_tbatch b = {p.T, p.ids, p.pos, p.seg, n, p.rows, inj};
    rc = hc_tmodel_forward(dec, &b, eb);
    if (rc) goto out;
    const float *hid = hc_tmodel_hidden(dec);
    const hc_train_ops *ops = dec->ops;
    for (int i = 0; i < n; i++)
        memcpy(p_raw + (size_t)i * C, hid + (size_t)p.rows[i] * C, sizeof(float) * C);
    ops->matmul_fwd(a_raw, u, W, NULL, n, Hu, C);
    ops->l2norm_fwd(an, a_raw, n, C);
    ops->l2norm_fwd(pn, p_raw, n, C);
    *loss = ops->infonce_sym(backward ? da : NULL, backward ? dp : NULL, backward ? gtemp : NULL, an, pn, temp, n,
                             C, weight);
    if (!backward) goto out;
    ops->l2norm_bwd(da_raw, da, a_raw, n, C);
    ops->l2norm_bwd(dp_raw, dp, p_raw, n, C);
    ops->matmul_bwd(du, gW, NULL, da_raw, u, W, n, Hu, C);
    for (int i = 0; i < n; i++)
        memcpy(dh + (size_t)p.rows[i] * C, dp_raw + (size_t)i * C, sizeof(float) * C);
    memset(inj, 0, sizeof(float) * (size_t)n * C); /* reused as d(inject) */
    if ((rc = hc_tmodel_backward(dec, dh, inj, eb))) goto out;
    for (int i = 0; i < n; i++)
        for (int c = 0; c < C; c++) gslot[c] += inj[(size_t)i * C + c];
out:
    free(mem);
    free(p.ids);
    return rc;
}

/* ---- recon ------------------------------------------------------------------------------------- */

int hc_recon_loss(hc_ptab *t, hc_tmodel *dec, const float *u, int n, const int32_t *prompt,
                  int n_prompt, const hc_tok_rows *profile, int32_t eos, int max_len, float weight,
                  int backward, float *du, double *loss, int *n_tokens, hc_errbuf *eb) {
    if (!t || !u || !loss || (n_prompt > 0 && !prompt) || n_prompt < 0)
        return hc_seterr(eb, HC_ERR_INVAL, "recon: NULL argument");
    int rc = check_dec(t, dec, "recon", eb);
    if (rc) return rc;
    if (n < 1) return hc_seterr(eb, HC_ERR_INVAL, "recon: %d rows", n);
    int64_t tot;
    if ((rc = check_rows(profile, n, "recon profile", &tot, eb))) return rc;
    const int C = dec->cfg.hidden_size;
    float *W, *gW;
    int64_t sw[2] = {C, -1};
    if ((rc = getp(t, "user_profile_projector.weight", 2, sw, &W, &gW, eb))) return rc;
    const int Hu = (int)sw[1];
    int64_t Rmax = max_len > 0 ? (int64_t)max_len - (1 + n_prompt) : INT64_MAX / 4;
    if (Rmax < 1)
        return hc_seterr(eb, HC_ERR_RANGE, "recon: the slot and the %d-token profile prompt leave "
                         "no room in %d tokens", n_prompt, max_len);
    int64_t T = 0;
    for (int i = 0; i < n; i++) {
        int64_t q = profile->lens[i] < Rmax - 1 ? profile->lens[i] : Rmax - 1;
        T += 1 + n_prompt + q + 1;
    }
    pack p;
    if ((rc = pack_alloc(&p, T, n, "recon", eb))) return rc;
    float *buf = calloc((size_t)n * C * 2 + (backward ? (size_t)T * C : 0), sizeof(float));
    if (!buf) {
        free(p.ids);
        return hc_seterr(eb, HC_ERR_NOMEM, "recon: out of memory");
    }
    float *inj = buf, *dinj = buf + (size_t)n * C, *dh = backward ? dinj + (size_t)n * C : NULL;
    int r = 0;
    int64_t off = 0;
    for (int i = 0; i < n; i++) {
        int q = (int)(profile->lens[i] < Rmax - 1 ? profile->lens[i] : Rmax - 1);
        int len = 1 + n_prompt + q + 1, r0 = r;
        for (int j = 0; j < len; j++, r++) {
            p.ids[r] = j == 0 ? -1 : j <= n_prompt ? prompt[j - 1] : j < len - 1
                     ? profile->ids[off + j - 1 - n_prompt] : eos;
            p.pos[r] = j;
            p.seg[r] = i;
            p.labels[r] = -100;
        }
        for (int j = n_prompt; j < len - 1; j++) /* row j predicts the profile token or eos at j+1 */
            p.labels[r0 + j] = p.ids[r0 + j + 1];
        p.rows[i] = r0;
        off += profile->lens[i];
    }
    const hc_train_ops *ops = dec->ops;
    ops->matmul_fwd(inj, u, W, NULL, n, Hu, C);
    hc_tbatch b = {p.T, p.ids, p.pos, p.seg, n, p.rows, inj};
    rc = hc_tmodel_forward(dec, &b, eb);
    if (rc) goto out;
    double l = hc_tmodel_lm_loss(dec, p.labels, weight, dh);
    if (isnan(l)) {
        rc = hc_seterr(eb, HC_ERR_INVAL, "recon: the decoder has no lm_head (registered without "
                       "one?)");
        goto out;
    }
    *loss = l;
    if (n_tokens) {
        int nt = 0;
        for (int j = 0; j < p.T; j++) nt += p.labels[j] != -100;
        *n_tokens = nt;
    }
    if (!backward) goto out;
    if ((rc = hc_tmodel_backward(dec, dh, dinj, eb))) goto out;
    ops->matmul_bwd(du, gW, NULL, dinj, u, W, n, Hu, C);
out:
    free(buf);
    free(p.ids);
    return rc;
}

/* ---- next-item InfoNCE ------------------------------------------------------------------------- */

int hc_nextitem_add_param(hc_ptab *t, hc_errbuf *eb) {
    int64_t shape[1] = {1};
    return hc_ptab_add(t, HC_NEXTITEM_SCALE_NAME, 1, shape, HC_DTYPE_F32, eb);
}

int hc_nextitem_init_param(hc_ptab *t, hc_errbuf *eb) {
    float *w = NULL;
    int64_t s[1] = {1};
    int rc = getp(t, HC_NEXTITEM_SCALE_NAME, 0, s, &w, NULL, eb);
    if (!rc) *w = logf(1.0f / 0.07f);
    return rc;
}

int hc_nextitem_loss(hc_ptab *t, const hc_train_ops *ops, const float *o, const float *e,
                     const uint8_t *mask, int n, int S, int H, const float *neg, int n_neg,
                     float weight, int backward, float *d_o, float *d_e, float *d_neg,
                     double *loss, int *n_pairs, hc_errbuf *eb) {
    if (!t || !o || !e || !mask || !loss || (n_neg > 0 && !neg))
        return hc_seterr(eb, HC_ERR_INVAL, "next-item: NULL argument");
    if (n < 1 || S < 1 || H < 1 || n_neg < 0)
        return hc_seterr(eb, HC_ERR_INVAL, "next-item: bad sizes n=%d S=%d H=%d negatives=%d", n,
                         S, H, n_neg);
    float *ls, *gls;
    int64_t s1[1] = {1};
    int rc = getp(t, HC_NEXTITEM_SCALE_NAME, 0, s1, &ls, &gls, eb);
    if (rc) return rc;
    ops = ops_or_cpu(ops);
    const float hi = logf(100.0f);
    if (*ls < 0.0f) *ls = 0.0f; /* the reference's in-place no-grad clamp */
    if (*ls > hi) *ls = hi;
    const float s = expf(*ls);
    const int64_t NO = (int64_t)n * S, NE = (int64_t)n * (S + 1);
    int np = 0;
    for (int64_t i = 0; i < NO; i++) np += mask[i] != 0;
    if (n_pairs) *n_pairs = np;
    *loss = 0.0;
    if (np == 0) return 0;
    arena a = {NULL, 0};
    float *on = NULL, *en = NULL, *mn = NULL, *don = NULL, *den = NULL, *dmn = NULL, *lg = NULL;
    for (int pass = 0; pass < 2; pass++) {
        a.off = 0;
        on = take(&a, (size_t)NO * H), en = take(&a, (size_t)NE * H);
        mn = take(&a, (size_t)n_neg * H), lg = take(&a, (size_t)n_neg + 1);
        if (backward) {
            don = take(&a, (size_t)NO * H), den = take(&a, (size_t)NE * H);
            dmn = take(&a, (size_t)n_neg * H);
        }
        if (pass == 0 && !(a.base = calloc(a.off, sizeof(float))))
            return hc_seterr(eb, HC_ERR_NOMEM, "next-item: out of memory");
    }
    char *keep = malloc((size_t)n_neg + 1);
    if (!keep) {
        free(a.base);
        return hc_seterr(eb, HC_ERR_NOMEM, "next-item: out of memory");
    }
    ops->l2norm_fwd(on, o, (int)NO, H);
    ops->l2norm_fwd(en, e, (int)NE, H);
    if (n_neg) ops->l2norm_fwd(mn, neg, n_neg, H);
    const float g = weight / (float)np;
    double total = 0.0, ds = 0.0;
    for (int i = 0; i < n; i++)
        for (int tt = 0; tt < S; tt++) {
            if (!mask[(int64_t)i * S + tt]) continue;
            const float *x = on + ((int64_t)i * S + tt) * H;
            const float *y = en + ((int64_t)i * (S + 1) + tt + 1) * H;
            double m = -INFINITY;
            for (int j = -1; j < n_neg; j++) { /* j = -1: the positive */
                const float *v = j < 0 ? y : mn + (int64_t)j * H;
                float d = 0.0f, fx = 0.0f;
                for (int c = 0; c < H; c++) d += x[c] * v[c];
                if (j >= 0)
                    for (int c = 0; c < H; c++) fx += y[c] * v[c];
                keep[j + 1] = j < 0 || fx <= 0.99f;
                lg[j + 1] = d;
                if (keep[j + 1] && (double)s * d > m) m = (double)s * d;
            }
            double sum = 0.0;
            for (int j = 0; j <= n_neg; j++)
                if (keep[j]) sum += exp((double)s * lg[j] - m);
            total += m + log(sum) - (double)s * lg[0];
            if (!backward) continue;
            float *dx = don + ((int64_t)i * S + tt) * H;
            float *dy = den + ((int64_t)i * (S + 1) + tt + 1) * H;
            for (int j = 0; j <= n_neg; j++) {
                if (!keep[j]) continue;
                float pj = (float)(exp((double)s * lg[j] - m) / sum) - (j == 0 ? 1.0f : 0.0f);
                ds += (double)pj * lg[j];
                const float *v = j == 0 ? y : mn + (int64_t)(j - 1) * H;
                float *dv = j == 0 ? dy : dmn + (int64_t)(j - 1) * H;
                const float k = g * s * pj;
                for (int c = 0; c < H; c++) {
                    dx[c] += k * v[c];
                    dv[c] += k * x[c];
                }
            }
        }
    *loss = total / np;
    if (backward) {
        *gls += (float)((double)g * ds * s); /* d/d logit_scale = s * d/ds */
        if (d_o) ops->l2norm_bwd(d_o, don, o, (int)NO, H);
        if (d_e) ops->l2norm_bwd(d_e, den, e, (int)NE, H);
        if (d_neg && n_neg) ops->l2norm_bwd(d_neg, dmn, neg, n_neg, H);
    }
    free(keep);
    free(a.base);
    return 0;
}
