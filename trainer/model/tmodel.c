/* tmodel.c: the trainer's decoder model (see model/tmodel.h for the contract).
 *
 * Layer (pre-norm, as engine/model/llm.c):
 *   n1 = rmsnorm(x); q, k, v = n1 Wq^T, n1 Wk^T, n1 Wv^T; [Qwen3: q, k = per-head rmsnorm];
 *   q, k = rope(q, k); a = attn(q, k, v); h = x + a Wo^T;
 *   n2 = rmsnorm(h); f = silu(n2 Wg^T) * (n2 Wu^T); x' = h + f Wd^T.
 * Final: hidden = rmsnorm(x_L). The backward walks the same list in reverse; the residual
 * gradient lives in one buffer that every branch accumulates into.
 */
#include "model/tmodel.h"

#include "io/weights.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Saved activations of one layer (pointers into the arena). */
typedef struct tm_layer_act {
    float *x;            /* (T, C) layer input */
    float *xn1, *rstd1;  /* (T, C), (T) */
    float *qp, *kp;      /* (T, QD), (T, KD) before the q/k norm (Qwen3 only) */
    float *qr, *kr;      /* (T*H), (T*KVH) rstd of the q/k norm (Qwen3 only) */
    float *q, *k, *v;    /* after norm and RoPE */
    float *att, *lse;    /* (T, QD), (T*H) */
    float *h;            /* (T, C) mid-layer residual */
    float *xn2, *rstd2;  /* (T, C), (T) */
    float *gate, *up, *act; /* (T, F) */
} tm_layer_act;

struct hc_tmodel_scratch {
    int cap;             /* rows the arena holds */
    float *arena;
    int32_t *iarena;     /* ids, pos, seg, inject rows (4 * cap) */
    unsigned char *mark; /* (cap) injected-row marks for validation */
    tm_layer_act *L;     /* (n_layers) */
    float *xf, *rstdf, *hidden; /* final residual (T, C), its rstd (T), final-norm hidden */
    float *tmp;          /* (T, C) branch output */
    /* backward */
    float *dx, *dxn, *datt, *dq, *dk, *dv, *dqp, *dkp, *dact, *dgate, *dup;
    /* the last forward */
    int ck;              /* the arena is carved for activation checkpointing */
    size_t arena_floats;
    int resident;        /* checkpointed: the layer whose activations the shared buffers hold */
    int T, n_inject, has_seg, done;
    int32_t *ids, *pos, *seg, *rows;
};

static const char *const layer_names[HC_TM_LAYER_NP] = {
    "input_layernorm.weight",        "self_attn.q_proj.weight", "self_attn.k_proj.weight",
    "self_attn.v_proj.weight",       "self_attn.o_proj.weight", "self_attn.q_norm.weight",
    "self_attn.k_norm.weight",       "post_attention_layernorm.weight",
    "mlp.gate_proj.weight",          "mlp.up_proj.weight",      "mlp.down_proj.weight",
};
static const char *const global_names[HC_TM_GLOBAL_NP] = {
    "model.embed_tokens.weight", "model.norm.weight", "lm_head.weight"};

/* HF name (without prefix) and shape of slot i; 0 if the slot does not exist in this model. */
static int slot_info(const hc_tmodel *m, int i, char *name, size_t cap, int *nd, int64_t *shape) {
    const hc_llm_config *c = &m->cfg;
    const int64_t E = c->hidden_size, V = c->vocab_size, F = c->intermediate_size;
    const int64_t QD = (int64_t)c->n_heads * c->head_dim, KD = (int64_t)c->n_kv_heads * c->head_dim;
    const int nl = c->n_layers * HC_TM_LAYER_NP;
    if (i >= nl) {
        int k = i - nl;
        if (k == HC_TM_LM_HEAD && !m->has_lm_head) return 0;
        snprintf(name, cap, "%s", global_names[k]);
        *nd = k == HC_TM_NORM ? 1 : 2;
        shape[0] = k == HC_TM_NORM ? E : V;
        shape[1] = E;
        return 1;
    }
    int l = i / HC_TM_LAYER_NP, k = i % HC_TM_LAYER_NP;
    if ((k == HC_TM_Q_NORM || k == HC_TM_K_NORM) && !c->qk_norm) return 0;
    snprintf(name, cap, "model.layers.%d.%s", l, layer_names[k]);
    static const int rows_of[HC_TM_LAYER_NP] = {0, 1, 2, 2, 3, 4, 4, 0, 5, 5, 3};
    int64_t r[6] = {E, QD, KD, E, c->head_dim, F};
    *nd = 2;
    shape[0] = r[rows_of[k]];
    switch (k) {
    case HC_TM_ATTN_NORM: case HC_TM_MLP_NORM: case HC_TM_Q_NORM: case HC_TM_K_NORM:
        *nd = 1;
        break;
    case HC_TM_WO: shape[1] = QD; break;
    case HC_TM_W_DOWN: shape[1] = F; break;
    default: shape[1] = E; break;
    }
    return 1;
}

static int check_config(const hc_llm_config *c, hc_errbuf *eb) {
    if (c->vocab_size <= 0 || c->hidden_size <= 0 || c->intermediate_size <= 0 ||
        c->n_layers <= 0 || c->n_heads <= 0 || c->n_kv_heads <= 0 || c->head_dim <= 0)
        return hc_seterr(eb, HC_ERR_INVAL,
                         "model config: vocab %d, hidden %d, intermediate %d, layers %d, heads %d, "
                         "kv heads %d, head_dim %d must all be positive",
                         c->vocab_size, c->hidden_size, c->intermediate_size, c->n_layers,
                         c->n_heads, c->n_kv_heads, c->head_dim);
    if (c->n_heads % c->n_kv_heads)
        return hc_seterr(eb, HC_ERR_INVAL, "model config: %d heads not a multiple of %d kv heads",
                         c->n_heads, c->n_kv_heads);
    if (c->head_dim & 1)
        return hc_seterr(eb, HC_ERR_INVAL, "model config: RoPE needs an even head_dim, not %d",
                         c->head_dim);
    return HC_OK;
}

int hc_tmodel_add_params(hc_tmodel **out, const hc_llm_config *cfg, hc_ptab *t, const char *prefix,
                         int with_lm_head, hc_errbuf *eb) {
    *out = NULL;
    if (!prefix) prefix = "";
    int rc = check_config(cfg, eb);
    if (rc) return rc;
    if (t->w) return hc_seterr(eb, HC_ERR_INVAL, "parameter table already allocated");
    hc_tmodel *m = calloc(1, sizeof *m);
    if (!m) return hc_seterr(eb, HC_ERR_NOMEM, "allocating the model");
    if (strlen(prefix) >= sizeof m->prefix) {
        free(m);
        return hc_seterr(eb, HC_ERR_INVAL, "parameter prefix '%s' longer than %zu bytes", prefix,
                         sizeof m->prefix - 1);
    }
    m->cfg = *cfg;
    m->ops = hc_train_ops_cpu();
    snprintf(m->prefix, sizeof m->prefix, "%s", prefix);
    m->has_lm_head = with_lm_head && !cfg->tie_word_embeddings;
    m->lm_chunk = 4096;
    m->n_slots = cfg->n_layers * HC_TM_LAYER_NP + HC_TM_GLOBAL_NP;
    m->pidx = malloc(sizeof(int) * (size_t)m->n_slots);
    m->w = calloc((size_t)m->n_slots, sizeof(float *));
    m->g = calloc((size_t)m->n_slots, sizeof(float *));
    m->s = calloc(1, sizeof *m->s);
    if (!m->pidx || !m->w || !m->g || !m->s) {
        hc_tmodel_free(m);
        return hc_seterr(eb, HC_ERR_NOMEM, "allocating the model");
    }
    const int nl = cfg->n_layers * HC_TM_LAYER_NP;
    /* registration order: embedding, layers, final norm, lm_head (the checkpoint's order) */
    int order_n = 0;
    int *order = malloc(sizeof(int) * (size_t)m->n_slots);
    if (!order) {
        hc_tmodel_free(m);
        return hc_seterr(eb, HC_ERR_NOMEM, "allocating the model");
    }
    order[order_n++] = nl + HC_TM_EMBED;
    for (int i = 0; i < nl; i++) order[order_n++] = i;
    order[order_n++] = nl + HC_TM_NORM;
    order[order_n++] = nl + HC_TM_LM_HEAD;
    for (int j = 0; j < order_n; j++) {
        int i = order[j];
        char hf[HC_PTAB_NAME_MAX], full[HC_PTAB_NAME_MAX + 64];
        int nd;
        int64_t shape[2];
        m->pidx[i] = -1;
        if (!slot_info(m, i, hf, sizeof hf, &nd, shape)) continue;
        snprintf(full, sizeof full, "%s%s", m->prefix, hf);
        m->pidx[i] = t->n;
        rc = hc_ptab_add(t, full, nd, shape, (int)cfg->torch_dtype, eb);
        if (rc) {
            free(order);
            hc_tmodel_free(m);
            return rc;
        }
    }
    free(order);
    *out = m;
    return HC_OK;
}

int hc_tmodel_bind(hc_tmodel *m, hc_ptab *t, hc_errbuf *eb) {
    if (!t->w || !t->g)
        return hc_seterr(eb, HC_ERR_INVAL, "bind: parameter table not allocated (hc_ptab_alloc)");
    for (int i = 0; i < m->n_slots; i++) {
        m->w[i] = m->g[i] = NULL;
        if (m->pidx[i] < 0) continue;
        char hf[HC_PTAB_NAME_MAX], full[HC_PTAB_NAME_MAX + 64];
        int nd;
        int64_t shape[2];
        slot_info(m, i, hf, sizeof hf, &nd, shape);
        snprintf(full, sizeof full, "%s%s", m->prefix, hf);
        int p = m->pidx[i];
        const hc_param *P = p < t->n ? &t->params[p] : NULL;
        int ok = P && !strcmp(P->name, full) && P->ndim == nd;
        for (int d = 0; ok && d < nd; d++) ok = P->shape[d] == shape[d];
        if (!ok)
            return hc_seterr(eb, HC_ERR_MISMATCH,
                             "bind: parameter %d of the table is not '%s' as registered", p, full);
        m->w[i] = t->w + P->offset;
        m->g[i] = t->g + P->offset;
    }
    m->t = t;
    return HC_OK;
}

static void shape_str(char *buf, size_t cap, int nd, const int64_t *s) {
    buf[0] = 0;
    for (int i = 0; i < nd; i++)
        snprintf(buf + strlen(buf), cap - strlen(buf), "%s%lld", i ? ", " : "", (long long)s[i]);
}

int hc_tmodel_load(hc_tmodel *m, const hc_safetensors *st, const char *prefix, hc_errbuf *eb) {
    if (!m->t) return hc_seterr(eb, HC_ERR_INVAL, "load: model not bound to a parameter table");
    if (!prefix) prefix = "";
    for (int i = 0; i < m->n_slots; i++) {
        if (m->pidx[i] < 0) continue;
        char hf[HC_PTAB_NAME_MAX], full[HC_PTAB_NAME_MAX + 256];
        int nd;
        int64_t shape[2];
        slot_info(m, i, hf, sizeof hf, &nd, shape);
        snprintf(full, sizeof full, "%s%s", prefix, hf);
        const hc_st_tensor *s = hc_st_find(st, full);
        if (!s) return hc_seterr(eb, HC_ERR_NOTFOUND, "checkpoint lacks tensor '%s'", full);
        int ok = s->n_dims == nd;
        for (int d = 0; ok && d < nd; d++) ok = s->shape[d] == shape[d];
        if (!ok) {
            char got[96], exp[96];
            shape_str(got, sizeof got, s->n_dims, s->shape);
            shape_str(exp, sizeof exp, nd, shape);
            return hc_seterr(eb, HC_ERR_MISMATCH,
                             "tensor '%s' has shape [%s], the model config implies [%s]", full, got,
                             exp);
        }
        if (!hc_dtype_is_float(s->dtype))
            return hc_seterr(eb, HC_ERR_UNSUPPORTED, "tensor '%s' has dtype %s, not a float type",
                             full, hc_dtype_name(s->dtype));
        hc_param *P = &m->t->params[m->pidx[i]];
        int rc = hc_tensor_read_converted(m->w[i], HC_DTYPE_F32, P->numel, s, eb);
        if (rc) return rc;
        P->stored_dtype = (int)s->dtype;
    }
    return HC_OK;
}

void hc_tmodel_free(hc_tmodel *m) {
    if (!m) return;
    if (m->s) {
        free(m->s->arena);
        free(m->s->iarena);
        free(m->s->mark);
        free(m->s->L);
        free(m->s);
    }
    free(m->pidx);
    free(m->w);
    free(m->g);
    free(m);
}

/* ---- scratch ---------------------------------------------------------------------------------- */

/* Carves the arena for T rows; base NULL only counts. Returns the number of floats. */
static size_t carve(hc_tmodel *m, float *base, int T) {
    const hc_llm_config *c = &m->cfg;
    hc_tmodel_scratch *s = m->s;
    const size_t C = (size_t)c->hidden_size, F = (size_t)c->intermediate_size;
    const size_t QD = (size_t)c->n_heads * c->head_dim, KD = (size_t)c->n_kv_heads * c->head_dim;
    const size_t H = (size_t)c->n_heads, KVH = (size_t)c->n_kv_heads, R = (size_t)T;
    size_t off = 0;
    /* 16-float (64-byte) aligned pieces */
#define TAKE(ptr, nfl)                                                                             \
    do {                                                                                           \
        if (base) (ptr) = base + off;                                                              \
        off += ((size_t)(nfl) + 15) & ~(size_t)15;                                                 \
    } while (0)
    float *dummy = NULL;
    /* checkpointing: every layer keeps its own input x; the rest is one set of buffers that each
     * layer overwrites (the backward recomputes the layer into it) */
    const int ck = m->checkpoint != 0;
    for (int l = 0; l < c->n_layers; l++) {
        tm_layer_act *a = base ? &s->L[l] : NULL;
#define LT(field, nfl) TAKE(*(a ? &a->field : &dummy), nfl)
        LT(x, R * C);
        if (ck && l > 0) {
            if (a) {
                float *x = a->x;
                *a = s->L[0];
                a->x = x;
            }
            continue;
        }
        LT(xn1, R * C);
        LT(rstd1, R);
        if (c->qk_norm) {
            LT(qp, R * QD);
            LT(kp, R * KD);
            LT(qr, R * H);
            LT(kr, R * KVH);
        }
        LT(q, R * QD);
        LT(k, R * KD);
        LT(v, R * KD);
        LT(att, R * QD);
        LT(lse, R * H);
        LT(h, R * C);
        LT(xn2, R * C);
        LT(rstd2, R);
        LT(gate, R * F);
        LT(up, R * F);
        LT(act, R * F);
#undef LT
    }
    TAKE(s->xf, R * C);
    TAKE(s->rstdf, R);
    TAKE(s->hidden, R * C);
    TAKE(s->tmp, R * C);
    TAKE(s->dx, R * C);
    TAKE(s->dxn, R * C);
    TAKE(s->datt, R * QD);
    TAKE(s->dq, R * QD);
    TAKE(s->dk, R * KD);
    TAKE(s->dv, R * KD);
    TAKE(s->dqp, R * QD);
    TAKE(s->dkp, R * KD);
    TAKE(s->dact, R * F);
    TAKE(s->dgate, R * F);
    TAKE(s->dup, R * F);
#undef TAKE
    return off;
}

static int ensure_scratch(hc_tmodel *m, int T) {
    hc_tmodel_scratch *s = m->s;
    const int ck = m->checkpoint != 0;
    if (T <= s->cap && ck == s->ck) return HC_OK;
    int cap = s->cap ? s->cap : 16;
    while (cap < T) cap = cap > INT32_MAX / 2 ? T : cap * 2;
    free(s->arena);
    free(s->iarena);
    free(s->mark);
    s->arena = NULL;
    s->iarena = NULL;
    s->mark = NULL;
    s->cap = 0;
    s->done = 0;
    if (!s->L) s->L = calloc((size_t)m->cfg.n_layers, sizeof *s->L);
    size_t n = carve(m, NULL, cap);
    s->arena = aligned_alloc(64, n * sizeof(float));
    s->iarena = malloc(sizeof(int32_t) * 4 * (size_t)cap);
    s->mark = malloc((size_t)cap);
    if (!s->L || !s->arena || !s->iarena || !s->mark) return HC_ERR_NOMEM;
    carve(m, s->arena, cap);
    s->arena_floats = n;
    s->ids = s->iarena;
    s->pos = s->iarena + cap;
    s->seg = s->iarena + 2 * (size_t)cap;
    s->rows = s->iarena + 3 * (size_t)cap;
    s->cap = cap;
    s->ck = ck;
    m->n_grow++;
    return HC_OK;
}

/* ---- forward ---------------------------------------------------------------------------------- */

static int check_batch(hc_tmodel *m, const hc_tbatch *b, hc_errbuf *eb) {
    const int T = b->T, V = m->cfg.vocab_size;
    if (T <= 0) return hc_seterr(eb, HC_ERR_INVAL, "forward: empty batch (T = %d)", T);
    if (!b->ids || !b->pos) return hc_seterr(eb, HC_ERR_INVAL, "forward: ids and pos are required");
    if (b->n_inject < 0 || b->n_inject > T || (b->n_inject > 0 && (!b->inject_rows || !b->inject)))
        return hc_seterr(eb, HC_ERR_INVAL, "forward: bad injected-vector request (%d vectors)",
                         b->n_inject);
    for (int t = 0; t < T; t++) {
        if (b->seg) {
            int sg = b->seg[t], prev = t ? b->seg[t - 1] : 0;
            if ((t == 0 && sg != 0) || (t > 0 && sg != prev && sg != prev + 1))
                return hc_seterr(eb, HC_ERR_INVAL,
                                 "forward: row %d: segment ids must start at 0 and form "
                                 "contiguous runs (got %d after %d)", t, sg, prev);
        }
        if (b->ids[t] < -1 || b->ids[t] >= V)
            return hc_seterr(eb, HC_ERR_RANGE,
                             "forward: row %d: id %d outside the vocabulary (0..%d, -1 = injected)",
                             t, b->ids[t], V - 1);
        if (b->pos[t] < 0)
            return hc_seterr(eb, HC_ERR_RANGE, "forward: row %d: negative position %d", t,
                             b->pos[t]);
    }
    unsigned char *mark = m->s->mark;
    memset(mark, 0, (size_t)T);
    for (int k = 0; k < b->n_inject; k++) {
        int r = b->inject_rows[k];
        if (r < 0 || r >= T)
            return hc_seterr(eb, HC_ERR_RANGE,
                             "forward: injected vector %d targets row %d outside the batch of %d",
                             k, r, T);
        if (mark[r])
            return hc_seterr(eb, HC_ERR_INVAL, "forward: row %d injected twice", r);
        if (b->ids[r] != -1)
            return hc_seterr(eb, HC_ERR_INVAL,
                             "forward: injected row %d must have id -1, not %d", r, b->ids[r]);
        mark[r] = 1;
    }
    for (int t = 0; t < T; t++)
        if (b->ids[t] == -1 && !mark[t])
            return hc_seterr(eb, HC_ERR_INVAL, "forward: row %d has id -1 but no injected vector",
                             t);
    return HC_OK;
}

/* Layer l from its saved input s->L[l].x: fills the layer's activations and writes the layer
 * output to xnext (the backward of a checkpointed model reruns it with xnext = tmp). */
static void layer_fwd(hc_tmodel *m, int l, float *xnext) {
    const hc_llm_config *c = &m->cfg;
    const hc_train_ops *o = m->ops;
    hc_tmodel_scratch *s = m->s;
    const int T = s->T, C = c->hidden_size, F = c->intermediate_size, H = c->n_heads,
              KVH = c->n_kv_heads, D = c->head_dim, QD = H * D, KD = KVH * D;
    const float eps = c->rms_norm_eps;
    const int32_t *seg = s->has_seg ? s->seg : NULL;
    tm_layer_act *a = &s->L[l];
    float *const *W = m->w + (size_t)l * HC_TM_LAYER_NP;
    o->rmsnorm_fwd(a->xn1, a->rstd1, a->x, W[HC_TM_ATTN_NORM], T, C, eps);
    float *q = c->qk_norm ? a->qp : a->q, *k = c->qk_norm ? a->kp : a->k;
    o->matmul_fwd(q, a->xn1, W[HC_TM_WQ], NULL, T, C, QD);
    o->matmul_fwd(k, a->xn1, W[HC_TM_WK], NULL, T, C, KD);
    o->matmul_fwd(a->v, a->xn1, W[HC_TM_WV], NULL, T, C, KD);
    if (c->qk_norm) {
        o->rmsnorm_fwd(a->q, a->qr, a->qp, W[HC_TM_Q_NORM], T * H, D, eps);
        o->rmsnorm_fwd(a->k, a->kr, a->kp, W[HC_TM_K_NORM], T * KVH, D, eps);
    }
    o->rope_fwd(a->q, s->pos, T, H, D, c->rope_theta);
    o->rope_fwd(a->k, s->pos, T, KVH, D, c->rope_theta);
    o->attn_fwd(a->att, a->lse, a->q, a->k, a->v, seg, T, H, KVH, D);
    o->matmul_fwd(s->tmp, a->att, W[HC_TM_WO], NULL, T, QD, C);
    for (size_t i = 0; i < (size_t)T * C; i++) a->h[i] = a->x[i] + s->tmp[i];
    o->rmsnorm_fwd(a->xn2, a->rstd2, a->h, W[HC_TM_MLP_NORM], T, C, eps);
    o->matmul_fwd(a->gate, a->xn2, W[HC_TM_W_GATE], NULL, T, C, F);
    o->matmul_fwd(a->up, a->xn2, W[HC_TM_W_UP], NULL, T, C, F);
    o->swiglu_fwd(a->act, a->gate, a->up, (int64_t)T * F);
    o->matmul_fwd(s->tmp, a->act, W[HC_TM_W_DOWN], NULL, T, F, C);
    for (size_t i = 0; i < (size_t)T * C; i++) xnext[i] = a->h[i] + s->tmp[i];
    s->resident = l;
}

int hc_tmodel_forward(hc_tmodel *m, const hc_tbatch *b, hc_errbuf *eb) {
    if (!m->t) return hc_seterr(eb, HC_ERR_INVAL, "forward: model not bound to a parameter table");
    const int T = b->T;
    if (T > 0) {
        int rc = ensure_scratch(m, T);
        if (rc) return hc_seterr(eb, rc, "forward: allocating activations for %d rows", T);
    }
    hc_tmodel_scratch *s = m->s;
    s->done = 0;
    int rc = check_batch(m, b, eb);
    if (rc) return rc;
    const hc_llm_config *c = &m->cfg;
    const hc_train_ops *o = m->ops;
    const int C = c->hidden_size, nl = c->n_layers * HC_TM_LAYER_NP;
    memcpy(s->ids, b->ids, sizeof(int32_t) * (size_t)T);
    memcpy(s->pos, b->pos, sizeof(int32_t) * (size_t)T);
    if (b->seg) memcpy(s->seg, b->seg, sizeof(int32_t) * (size_t)T);
    if (b->n_inject) memcpy(s->rows, b->inject_rows, sizeof(int32_t) * (size_t)b->n_inject);
    s->T = T;
    s->n_inject = b->n_inject;
    s->has_seg = b->seg != NULL;

    float *x0 = s->L[0].x;
    o->embed_fwd(x0, m->w[nl + HC_TM_EMBED], s->ids, T, C);
    if (b->n_inject) o->inject_fwd(x0, b->inject, s->rows, b->n_inject, C);
    for (int l = 0; l < c->n_layers; l++)
        layer_fwd(m, l, l + 1 < c->n_layers ? s->L[l + 1].x : s->xf);
    o->rmsnorm_fwd(s->hidden, s->rstdf, s->xf, m->w[nl + HC_TM_NORM], T, C, c->rms_norm_eps);
    s->done = 1;
    return HC_OK;
}

const float *hc_tmodel_hidden(const hc_tmodel *m) { return m->s->done ? m->s->hidden : NULL; }

int hc_tmodel_rows(const hc_tmodel *m) { return m->s->done ? m->s->T : 0; }

size_t hc_tmodel_scratch_bytes(const hc_tmodel *m) {
    return m->s->arena ? m->s->arena_floats * sizeof(float) : 0;
}

double hc_tmodel_lm_loss(hc_tmodel *m, const int32_t *labels, float dloss, float *dhidden) {
    hc_tmodel_scratch *s = m->s;
    const int nl = m->cfg.n_layers * HC_TM_LAYER_NP, V = m->cfg.vocab_size;
    if (!s->done || !labels) return NAN;
    int slot = m->has_lm_head ? nl + HC_TM_LM_HEAD
                              : (m->cfg.tie_word_embeddings ? nl + HC_TM_EMBED : -1);
    if (slot < 0) return NAN;
    for (int t = 0; t < s->T; t++)
        if (labels[t] != -100 && (labels[t] < 0 || labels[t] >= V)) return NAN;
    return m->ops->lmhead_ce(dhidden, m->g[slot], s->hidden, m->w[slot], labels, s->T,
                             m->cfg.hidden_size, V, m->lm_chunk, dloss);
}

/* ---- backward --------------------------------------------------------------------------------- */

int hc_tmodel_backward(hc_tmodel *m, const float *dhidden, float *dinject, hc_errbuf *eb) {
    hc_tmodel_scratch *s = m->s;
    if (!s->done) return hc_seterr(eb, HC_ERR_INVAL, "backward: no forward to differentiate");
    if (!dhidden) return hc_seterr(eb, HC_ERR_INVAL, "backward: dhidden is required");
    const hc_llm_config *c = &m->cfg;
    const hc_train_ops *o = m->ops;
    const int T = s->T, C = c->hidden_size, F = c->intermediate_size, H = c->n_heads,
              KVH = c->n_kv_heads, D = c->head_dim, QD = H * D, KD = KVH * D;
    const int nl = c->n_layers * HC_TM_LAYER_NP;
    const int32_t *seg = s->has_seg ? s->seg : NULL;
    const size_t TC = (size_t)T * C, TF = (size_t)T * F, TQ = (size_t)T * QD, TK = (size_t)T * KD;
#define ZERO(p, n) memset((p), 0, sizeof(float) * (n))
    float *dx = s->dx;
    ZERO(dx, TC);
    o->rmsnorm_bwd(dx, m->g[nl + HC_TM_NORM], dhidden, s->xf, m->w[nl + HC_TM_NORM], s->rstdf, T,
                   C);
    for (int l = c->n_layers - 1; l >= 0; l--) {
        /* checkpointed: rerun the layer into the shared buffers (the output goes to tmp;
         * the recomputation is the same arithmetic, so the gradients are bit for bit those of
         * the stored activations) */
        if (s->ck && s->resident != l) layer_fwd(m, l, s->tmp);
        const tm_layer_act *a = &s->L[l];
        float *const *W = m->w + (size_t)l * HC_TM_LAYER_NP;
        float *const *G = m->g + (size_t)l * HC_TM_LAYER_NP;
        /* MLP branch: x' = h + down(swiglu(gate(n2), up(n2))); dx holds dx' and becomes dh */
        ZERO(s->dact, TF);
        o->matmul_bwd(s->dact, G[HC_TM_W_DOWN], NULL, dx, a->act, W[HC_TM_W_DOWN], T, F, C);
        ZERO(s->dgate, TF);
        ZERO(s->dup, TF);
        o->swiglu_bwd(s->dgate, s->dup, s->dact, a->gate, a->up, (int64_t)TF);
        ZERO(s->dxn, TC);
        o->matmul_bwd(s->dxn, G[HC_TM_W_GATE], NULL, s->dgate, a->xn2, W[HC_TM_W_GATE], T, C, F);
        o->matmul_bwd(s->dxn, G[HC_TM_W_UP], NULL, s->dup, a->xn2, W[HC_TM_W_UP], T, C, F);
        o->rmsnorm_bwd(dx, G[HC_TM_MLP_NORM], s->dxn, a->h, W[HC_TM_MLP_NORM], a->rstd2, T, C);
        /* attention branch: h = x + o(attn(...)); dx holds dh and becomes d(layer input) */
        ZERO(s->datt, TQ);
        o->matmul_bwd(s->datt, G[HC_TM_WO], NULL, dx, a->att, W[HC_TM_WO], T, QD, C);
        ZERO(s->dq, TQ);
        ZERO(s->dk, TK);
        ZERO(s->dv, TK);
        o->attn_bwd(s->dq, s->dk, s->dv, s->datt, a->att, a->lse, a->q, a->k, a->v, seg, T, H, KVH,
                    D);
        o->rope_bwd(s->dq, s->pos, T, H, D, c->rope_theta);
        o->rope_bwd(s->dk, s->pos, T, KVH, D, c->rope_theta);
        float *dq = s->dq, *dk = s->dk;
        if (c->qk_norm) {
            ZERO(s->dqp, TQ);
            ZERO(s->dkp, TK);
            o->rmsnorm_bwd(s->dqp, G[HC_TM_Q_NORM], s->dq, a->qp, W[HC_TM_Q_NORM], a->qr, T * H,
                           D);
            o->rmsnorm_bwd(s->dkp, G[HC_TM_K_NORM], s->dk, a->kp, W[HC_TM_K_NORM], a->kr,
                           T * KVH, D);
            dq = s->dqp;
            dk = s->dkp;
        }
        ZERO(s->dxn, TC);
        o->matmul_bwd(s->dxn, G[HC_TM_WQ], NULL, dq, a->xn1, W[HC_TM_WQ], T, C, QD);
        o->matmul_bwd(s->dxn, G[HC_TM_WK], NULL, dk, a->xn1, W[HC_TM_WK], T, C, KD);
        o->matmul_bwd(s->dxn, G[HC_TM_WV], NULL, s->dv, a->xn1, W[HC_TM_WV], T, C, KD);
        o->rmsnorm_bwd(dx, G[HC_TM_ATTN_NORM], s->dxn, a->x, W[HC_TM_ATTN_NORM], a->rstd1, T, C);
    }
#undef ZERO
    /* dx = d(embedding output): injected rows go to their vectors, the rest to the embedding
     * (rows with id -1 are skipped by embed_bwd) */
    if (dinject && s->n_inject) o->inject_bwd(dinject, dx, s->rows, s->n_inject, C);
    o->embed_bwd(m->g[nl + HC_TM_EMBED], dx, s->ids, T, C);
    return HC_OK;
}

/* ---- export ----------------------------------------------------------------------------------- */

void hc_tmodel_export_free(hc_st_write_item *items, size_t n) {
    if (!items) return;
    for (size_t i = 0; i < n; i++) {
        free((void *)items[i].name);
        free((void *)items[i].data);
    }
    free(items);
}

int hc_tmodel_export(const hc_tmodel *m, const hc_ptab *t, hc_dtype dtype, hc_st_write_item **items,
                     size_t *n, hc_errbuf *eb) {
    *items = NULL;
    *n = 0;
    if (dtype != HC_DTYPE_AS_STORED && !hc_dtype_is_float(dtype))
        return hc_seterr(eb, HC_ERR_INVAL, "export: dtype %s is not F32, BF16, F16 or as-stored",
                         hc_dtype_name(dtype));
    if (!t->w) return hc_seterr(eb, HC_ERR_INVAL, "export: parameter table not allocated");
    hc_st_write_item *it = calloc((size_t)m->n_slots, sizeof *it);
    if (!it) return hc_seterr(eb, HC_ERR_NOMEM, "export: out of memory");
    size_t k = 0;
    for (int i = 0; i < m->n_slots; i++) {
        int p = m->pidx[i];
        if (p < 0) continue;
        if (p >= t->n) {
            hc_tmodel_export_free(it, k);
            return hc_seterr(eb, HC_ERR_MISMATCH, "export: table has no parameter %d", p);
        }
        const hc_param *P = &t->params[p];
        hc_dtype dt = dtype == HC_DTYPE_AS_STORED ? (hc_dtype)P->stored_dtype : dtype;
        if (!hc_dtype_is_float(dt)) dt = HC_DTYPE_F32;
        hc_st_write_item *w = &it[k];
        w->name = strdup(P->name);
        w->dtype = dt;
        w->n_dims = P->ndim;
        for (int d = 0; d < P->ndim; d++) w->shape[d] = P->shape[d];
        w->data = malloc(P->numel * hc_dtype_size(dt));
        k++;
        if (!w->name || !w->data) {
            hc_tmodel_export_free(it, k);
            return hc_seterr(eb, HC_ERR_NOMEM, "export: out of memory for '%s'", P->name);
        }
        int rc = hc_convert((void *)w->data, dt, t->w + P->offset, HC_DTYPE_F32, P->numel);
        if (rc) {
            hc_tmodel_export_free(it, k);
            return hc_seterr(eb, rc, "export: converting '%s' to %s", P->name, hc_dtype_name(dt));
        }
    }
    *items = it;
    *n = k;
    return HC_OK;
}

int hc_tmodel_save(const hc_tmodel *m, const hc_ptab *t, hc_dtype dtype, const char *path,
                   hc_errbuf *eb) {
    hc_st_write_item *items;
    size_t n;
    int rc = hc_tmodel_export(m, t, dtype, &items, &n, eb);
    if (rc) return rc;
    rc = hc_st_write(path, items, n, eb);
    hc_tmodel_export_free(items, n);
    return rc;
}
