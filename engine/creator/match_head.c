/* match_head.c: the MLP-Mixer user-ad match head (see match_head.h), f32 on the host through
 * OpenBLAS sgemm; pairs are scored in chunks so the activations stay small whatever n is. */
#include "creator/match_head.h"

#include <cblas.h>
#undef I /* OpenBLAS's cblas.h may pull in <complex.h> */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "io/weights.h"

#define LN_EPS 1e-5f    /* nn.LayerNorm default (MODEL_SPEC §2) */
#define MAX_DEPTH 64
#define CHUNK 32        /* pairs per forward */

enum { TN_W, TN_B, T1_W, T1_B, T2_W, T2_B, CN_W, CN_B, C1_W, C1_B, C2_W, C2_B, BLK_NP };
static const char *const blk_names[BLK_NP] = {
    "token_norm.weight",          "token_norm.bias",
    "token_forward.net.0.weight", "token_forward.net.0.bias",
    "token_forward.net.3.weight", "token_forward.net.3.bias",
    "channel_mix.0.weight",       "channel_mix.0.bias",
    "channel_mix.1.net.0.weight", "channel_mix.1.net.0.bias",
    "channel_mix.1.net.3.weight", "channel_mix.1.net.3.bias",
};

struct hc_match_head {
    hc_match_dims d;
    float *wu, *wi;                    /* (D, H_c), (D, H_i) */
    float *w[MAX_DEPTH][BLK_NP];
    float *fw, *fb, *hw, *hb;          /* final LayerNorm, mlp_head.0 */
};

static void shape_str(char *buf, size_t cap, int ndim, const int64_t *shape) {
    size_t o = (size_t)snprintf(buf, cap, "(");
    for (int i = 0; i < ndim && o < cap; i++)
        o += (size_t)snprintf(buf + o, cap - o, i ? ", %lld" : "%lld", (long long)shape[i]);
    if (o < cap) snprintf(buf + o, cap - o, ")");
}

/* Tensor `name` with ndim dims equal to shape[k] where shape[k] >= 0 (the others are filled in),
 * converted to a malloc'ed f32 array in *out. */
static int get(const hc_safetensors *st, const char *name, int ndim, int64_t *shape, float **out,
               hc_errbuf *eb) {
    const hc_st_tensor *t = hc_st_find(st, name);
    if (!t)
        return hc_seterr(eb, HC_ERR_NOTFOUND, "match head: package weights lack tensor '%s' (the "
                                              "package has other match-head tensors)", name);
    int ok = t->n_dims == ndim && t->dtype != HC_DTYPE_I32;
    for (int k = 0; ok && k < ndim; k++) ok = t->shape[k] > 0 && (shape[k] < 0 || shape[k] == t->shape[k]);
    if (!ok) {
        char got[96], want[96];
        shape_str(got, sizeof got, t->n_dims, t->shape);
        shape_str(want, sizeof want, ndim, shape);
        return hc_seterr(eb, HC_ERR_MISMATCH, "match head: tensor '%s' is %s %s, expected floats "
                                              "of shape %s (-1: any)", name,
                         hc_dtype_name(t->dtype), got, want);
    }
    size_t n = 1;
    for (int k = 0; k < ndim; k++) {
        shape[k] = t->shape[k];
        if (shape[k] > (int64_t)1 << 30 || n > ((size_t)1 << 34) / (size_t)shape[k])
            return hc_seterr(eb, HC_ERR_RANGE, "match head: tensor '%s' is too large", name);
        n *= (size_t)shape[k];
    }
    if (!(*out = malloc(sizeof(float) * n)))
        return hc_seterr(eb, HC_ERR_NOMEM, "match head: tensor '%s': out of memory", name);
    return hc_tensor_read_converted(*out, HC_DTYPE_F32, n, t, eb);
}

/* Appends "; <why>" to the message in eb. */
#if defined(__GNUC__)
__attribute__((format(printf, 2, 3)))
#endif
static void note(hc_errbuf *eb, const char *fmt, ...) {
    if (!eb) return;
    size_t o = strlen(eb->msg);
    if (o + 3 >= sizeof eb->msg) return;
    memcpy(eb->msg + o, "; ", 3);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(eb->msg + o + 2, sizeof eb->msg - o - 2, fmt, ap);
    va_end(ap);
}

static int has_head_tensor(const hc_safetensors *st) {
    if (hc_st_find(st, "user_tower.weight") || hc_st_find(st, "item_tower.weight")) return 1;
    for (size_t i = 0, n = hc_st_count(st); i < n; i++)
        if (!strncmp(hc_st_get(st, i)->name, "cls_tower.", 10)) return 1;
    return 0;
}

void hc_match_head_free(hc_match_head *m) {
    if (!m) return;
    free(m->wu);
    free(m->wi);
    for (int b = 0; b < MAX_DEPTH; b++)
        for (int k = 0; k < BLK_NP; k++) free(m->w[b][k]);
    free(m->fw);
    free(m->fb);
    free(m->hw);
    free(m->hb);
    free(m);
}

hc_match_dims hc_match_head_dims(const hc_match_head *m) {
    hc_match_dims z = {0, 0, 0, 0, 0, 0};
    return m ? m->d : z;
}

int hc_match_head_load(hc_match_head **out, const hc_safetensors *st, int d_U, int d_item,
                       hc_errbuf *eb) {
    *out = NULL;
    if (!has_head_tensor(st)) return HC_OK;
    hc_match_head *m = calloc(1, sizeof *m);
    if (!m) return hc_seterr(eb, HC_ERR_NOMEM, "match head: out of memory");
    int rc;
    int64_t s[2] = {-1, -1};
    if ((rc = get(st, "cls_tower.layer_norm.weight", 1, s, &m->fw, eb))) goto fail;
    const int64_t D = s[0];
    int64_t sb[1] = {D}, sh[2] = {1, D}, sh1[1] = {1}, su[2] = {D, d_U}, si[2] = {D, d_item};
    if ((rc = get(st, "cls_tower.layer_norm.bias", 1, sb, &m->fb, eb)) ||
        (rc = get(st, "cls_tower.mlp_head.0.weight", 2, sh, &m->hw, eb)) ||
        (rc = get(st, "cls_tower.mlp_head.0.bias", 1, sh1, &m->hb, eb)))
        goto fail;
    if ((rc = get(st, "user_tower.weight", 2, su, &m->wu, eb))) {
        if (rc == HC_ERR_MISMATCH) note(eb, "user_tower maps U (H_c = %d) to cls_dim %lld (from "
                                            "cls_tower.layer_norm.weight)", d_U, (long long)D);
        goto fail;
    }
    if ((rc = get(st, "item_tower.weight", 2, si, &m->wi, eb))) {
        if (rc == HC_ERR_MISMATCH) note(eb, "item_tower maps e_ad (H_i = %d) to cls_dim %lld "
                                            "(from cls_tower.layer_norm.weight)", d_item,
                                        (long long)D);
        goto fail;
    }
    int64_t Ht = -1, Hc = -1;
    char name[160];
    for (int b = 0;; b++) {
        snprintf(name, sizeof name, "cls_tower.mixer_blocks.%d.token_norm.weight", b);
        if (!hc_st_find(st, name)) {
            if (b == 0) {
                rc = hc_seterr(eb, HC_ERR_NOTFOUND, "match head: package weights lack tensor '%s' "
                                                    "(a cls_tower needs at least one mixer block)",
                               name);
                goto fail;
            }
            break;
        }
        if (b == MAX_DEPTH) {
            rc = hc_seterr(eb, HC_ERR_UNSUPPORTED, "match head: cls_tower has more than %d mixer "
                                                   "blocks", MAX_DEPTH);
            goto fail;
        }
        int64_t shp[BLK_NP][2] = {{D}, {D}, {Ht, 2}, {-1}, {2, -1}, {2},
                                  {D}, {D}, {Hc, D}, {-1}, {D, -1}, {D}};
        static const int nd[BLK_NP] = {1, 1, 2, 1, 2, 1, 1, 1, 2, 1, 2, 1};
        for (int k = 0; k < BLK_NP; k++) {
            if (k == T1_B) shp[k][0] = Ht; /* from net.0.weight just above */
            if (k == T2_W) shp[k][1] = Ht;
            if (k == C1_B) shp[k][0] = Hc;
            if (k == C2_W) shp[k][1] = Hc;
            snprintf(name, sizeof name, "cls_tower.mixer_blocks.%d.%s", b, blk_names[k]);
            if ((rc = get(st, name, nd[k], shp[k], &m->w[b][k], eb))) goto fail;
            if (k == T1_W) Ht = shp[k][0];
            if (k == C1_W) Hc = shp[k][0];
        }
        m->d.depth = b + 1;
    }
    m->d.cls_dim = (int)D;
    m->d.token_hidden = (int)Ht;
    m->d.channel_hidden = (int)Hc;
    m->d.d_U = d_U;
    m->d.d_item = d_item;
    *out = m;
    return HC_OK;
fail:
    hc_match_head_free(m);
    return rc;
}

/* y (T, O) = x (T, I) · w (O, I)^T (+ b) */
static void matmul(float *y, const float *x, const float *w, const float *b, int T, int I, int O) {
    if (b)
        for (int t = 0; t < T; t++) memcpy(y + (int64_t)t * O, b, sizeof(float) * (size_t)O);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, T, O, I, 1.0f, x, I, w, I,
                b ? 1.0f : 0.0f, y, O);
}

static void layernorm(float *y, const float *x, const float *w, const float *b, int rows, int C) {
    for (int r = 0; r < rows; r++) {
        const float *xr = x + (int64_t)r * C;
        float mu = 0.0f, var = 0.0f;
        for (int i = 0; i < C; i++) mu += xr[i];
        mu /= (float)C;
        for (int i = 0; i < C; i++) var += (xr[i] - mu) * (xr[i] - mu);
        float inv = 1.0f / sqrtf(var / (float)C + LN_EPS);
        for (int i = 0; i < C; i++) y[(int64_t)r * C + i] = (xr[i] - mu) * inv * w[i] + b[i];
    }
}

static void gelu(float *x, int64_t n) {
    for (int64_t i = 0; i < n; i++) x[i] = 0.5f * x[i] * (1.0f + erff(x[i] * (float)M_SQRT1_2));
}

int hc_match_head_scores(const hc_match_head *m, const float *U, const float *e_ad, int n,
                         float *logits, hc_errbuf *eb) {
    if (!m || !U || !e_ad || !logits)
        return hc_seterr(eb, HC_ERR_INVAL, "match scores: NULL argument");
    if (n < 1) return hc_seterr(eb, HC_ERR_INVAL, "match scores: %d pairs", n);
    const int D = m->d.cls_dim, Ht = m->d.token_hidden, Hc = m->d.channel_hidden;
    const size_t B = CHUNK, X = 2 * B * (size_t)D;
    const size_t TH = B * (size_t)D * (size_t)Ht, CH = 2 * B * (size_t)Hc;
    float *mem = malloc(sizeof(float) * (2 * B * (size_t)D + 4 * X + (TH > CH ? TH : CH) + B * (size_t)D));
    if (!mem) return hc_seterr(eb, HC_ERR_NOMEM, "match scores: out of memory");
    float *vu = mem, *va = vu + B * D, *x = va + B * D, *y = x + X, *yt = y + X, *tt = yt + X;
    float *h = tt + X, *z = h + (TH > CH ? TH : CH);
    for (int p0 = 0; p0 < n; p0 += CHUNK) {
        const int nb = n - p0 < CHUNK ? n - p0 : CHUNK, R = 2 * nb;
        matmul(vu, U + (size_t)p0 * m->d.d_U, m->wu, NULL, nb, m->d.d_U, D);
        matmul(va, e_ad + (size_t)p0 * m->d.d_item, m->wi, NULL, nb, m->d.d_item, D);
        for (int p = 0; p < nb; p++) {
            memcpy(x + (size_t)2 * p * D, vu + (size_t)p * D, sizeof(float) * (size_t)D);
            memcpy(x + (size_t)(2 * p + 1) * D, va + (size_t)p * D, sizeof(float) * (size_t)D);
        }
        for (int b = 0; b < m->d.depth; b++) {
            float *const *W = m->w[b];
            /* token mixing over the 2 tokens, per channel: (nb*D, 2) layout */
            layernorm(y, x, W[TN_W], W[TN_B], R, D);
            for (int p = 0; p < nb; p++)
                for (int s = 0; s < 2; s++)
                    for (int d = 0; d < D; d++)
                        yt[((size_t)p * D + d) * 2 + s] = y[((size_t)p * 2 + s) * D + d];
            matmul(h, yt, W[T1_W], W[T1_B], nb * D, 2, Ht);
            gelu(h, (int64_t)nb * D * Ht);
            matmul(tt, h, W[T2_W], W[T2_B], nb * D, Ht, 2);
            for (int p = 0; p < nb; p++)
                for (int s = 0; s < 2; s++)
                    for (int d = 0; d < D; d++)
                        x[((size_t)p * 2 + s) * D + d] += tt[((size_t)p * D + d) * 2 + s];
            /* channel mixing, per token */
            layernorm(y, x, W[CN_W], W[CN_B], R, D);
            matmul(h, y, W[C1_W], W[C1_B], R, D, Hc);
            gelu(h, (int64_t)R * Hc);
            matmul(tt, h, W[C2_W], W[C2_B], R, Hc, D);
            for (size_t i = 0; i < (size_t)R * D; i++) x[i] += tt[i];
        }
        layernorm(y, x, m->fw, m->fb, R, D);
        for (int p = 0; p < nb; p++)
            for (int d = 0; d < D; d++)
                z[(size_t)p * D + d] = 0.5f * (y[(size_t)2 * p * D + d] + y[(size_t)(2 * p + 1) * D + d]);
        matmul(logits + p0, z, m->hw, m->hb, nb, D, 1);
    }
    free(mem);
    return HC_OK;
}

int hc_creator_has_match_head(const hc_creator *c) {
    return c && c->match != NULL;
}

int hc_creator_match_scores(hc_creator *c, const float *U, const float *e_ad, int n,
                            float *logits, hc_errbuf *eb) {
    if (!c) return hc_seterr(eb, HC_ERR_INVAL, "match scores: NULL creator");
    if (!c->match)
        return hc_seterr(eb, HC_ERR_NOTFOUND, "match scores: the package %s has no match head "
                                              "(user_tower, item_tower, cls_tower.*)",
                         c->pkg.dir ? c->pkg.dir : "");
    return hc_match_head_scores(c->match, U, e_ad, n, logits, eb);
}
