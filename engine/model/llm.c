/* llm.c: weight loading and the packed-batch forward pass (see llm.h for the contract).
 *
 * Layer (pre-norm):  h = x + o_proj(attn(rope(qk_norm(q_proj(n1))), rope(qk_norm(k_proj(n1))),
 *                    v_proj(n1)))  with n1 = rmsnorm(x);  x' = h + down(silu(gate(n2)) * up(n2))
 *                    with n2 = rmsnorm(h).
 * Attention always goes through the paged op: stateless batches use the freshly computed K/V as a
 * "pool" with block_size 1 whose table is the identity, so segment isolation and causality are the
 * same code path as cached decoding.
 */
#include "model/llm.h"
#include "io/weights.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct hc_llm_scratch {
    int cap;            /* tokens the activation buffers hold */
    hc_tensor x, xn;    /* (cap, n_embd) residual stream, normed input */
    hc_tensor q, att;   /* (cap, n_heads * head_dim) */
    hc_tensor k, v;     /* (cap, kv_dim) */
    hc_tensor gate, up; /* (cap, n_ff) */
    int out_cap;        /* rows of the output buffers */
    hc_tensor out_x, out_h; /* (out_cap, n_embd) */
    hc_tensor logits;   /* (out_cap, vocab) */
    /* host metadata, grown on demand */
    int meta_cap;
    int32_t *table_off, *kv_len, *tables, *rows;
    int seg_cap;            /* per-segment scratch of hc_llm_forward (table offsets, counts, */
    int *seg_a, *seg_b;     /* blocks held before the call), grown on demand like the rest */
    int tables_cap;
};

/* ---- loading ----------------------------------------------------------------------------------- */

static int load_tensor(hc_llm *m, hc_tensor *dst, const hc_safetensors *st, const char *prefix,
                       const char *name, int n_dims, const int64_t *shape, hc_dtype want,
                       hc_errbuf *eb) {
    char full[256];
    snprintf(full, sizeof full, "%s%s", prefix, name);
    const hc_st_tensor *t = hc_st_find(st, full);
    if (!t) return hc_seterr(eb, HC_ERR_NOTFOUND, "checkpoint lacks tensor '%s'", full);
    int ok = t->n_dims == n_dims;
    for (int i = 0; ok && i < n_dims; i++) ok = t->shape[i] == shape[i];
    if (!ok) {
        char got[96] = "", exp[96] = "";
        for (int i = 0; i < t->n_dims; i++)
            snprintf(got + strlen(got), sizeof got - strlen(got), "%s%lld", i ? ", " : "",
                     (long long)t->shape[i]);
        for (int i = 0; i < n_dims; i++)
            snprintf(exp + strlen(exp), sizeof exp - strlen(exp), "%s%lld", i ? ", " : "",
                     (long long)shape[i]);
        return hc_seterr(eb, HC_ERR_MISMATCH, "tensor '%s' has shape [%s], config.json implies [%s]",
                         full, got, exp);
    }
    int rc = hc_tensor_load_converted(dst, m->be, t, want, n_dims, shape, eb);
    if (rc) return rc;
    size_t n = (size_t)hc_tensor_nelem(dst);
    m->weight_bytes += hc_tensor_nbytes(dst);
    m->n_params += (int64_t)n;
    return HC_OK;
}

int hc_llm_load_from(hc_llm **out, hc_backend *be, const hc_llm_config *cfg,
                     const hc_safetensors *st, const char *prefix, const hc_llm_params *p,
                     hc_errbuf *eb) {
    *out = NULL;
    hc_llm_params defp = hc_llm_default_params();
    if (!p) p = &defp;
    int rc = hc_weight_dtype_check(p->weight_dtype, eb);
    if (rc) return rc;
    hc_llm *m = calloc(1, sizeof *m);
    if (!m) return HC_ERR_NOMEM;
    m->cfg = *cfg;
    m->be = be;
    m->layers = calloc((size_t)cfg->n_layers, sizeof *m->layers);
    m->scratch = calloc(1, sizeof *m->scratch);
    if (!m->layers || !m->scratch) {
        hc_llm_free(m);
        return HC_ERR_NOMEM;
    }
    const int64_t E = cfg->hidden_size, V = cfg->vocab_size, F = cfg->intermediate_size;
    const int64_t QD = (int64_t)cfg->n_heads * cfg->head_dim;
    const int64_t KD = (int64_t)cfg->n_kv_heads * cfg->head_dim;
    const hc_dtype wd = p->weight_dtype, f32 = HC_DTYPE_F32;
#define LOAD(dst, name, nd, dt, ...)                                                               \
    do {                                                                                           \
        const int64_t shp_[] = {__VA_ARGS__};                                                      \
        rc = load_tensor(m, dst, st, prefix, name, nd, shp_, dt, eb);                              \
        if (rc) goto fail;                                                                         \
    } while (0)
    LOAD(&m->tok_embd, "model.embed_tokens.weight", 2, wd, V, E);
    LOAD(&m->out_norm, "model.norm.weight", 1, f32, E);
    if (p->skip_lm_head) {
        /* no logits from this model */
    } else if (cfg->tie_word_embeddings) {
        m->lm_head = m->tok_embd;
        m->lm_head_tied = 1;
    } else {
        LOAD(&m->lm_head, "lm_head.weight", 2, wd, V, E);
    }
    for (int l = 0; l < cfg->n_layers; l++) {
        hc_llm_layer *L = &m->layers[l];
        char nm[160];
#define LNAME(suffix) (snprintf(nm, sizeof nm, "model.layers.%d.%s", l, suffix), nm)
        LOAD(&L->attn_norm, LNAME("input_layernorm.weight"), 1, f32, E);
        LOAD(&L->wq, LNAME("self_attn.q_proj.weight"), 2, wd, QD, E);
        LOAD(&L->wk, LNAME("self_attn.k_proj.weight"), 2, wd, KD, E);
        LOAD(&L->wv, LNAME("self_attn.v_proj.weight"), 2, wd, KD, E);
        LOAD(&L->wo, LNAME("self_attn.o_proj.weight"), 2, wd, E, QD);
        if (cfg->qk_norm) {
            LOAD(&L->q_norm, LNAME("self_attn.q_norm.weight"), 1, f32, cfg->head_dim);
            LOAD(&L->k_norm, LNAME("self_attn.k_norm.weight"), 1, f32, cfg->head_dim);
        }
        LOAD(&L->mlp_norm, LNAME("post_attention_layernorm.weight"), 1, f32, E);
        LOAD(&L->w_gate, LNAME("mlp.gate_proj.weight"), 2, wd, F, E);
        LOAD(&L->w_up, LNAME("mlp.up_proj.weight"), 2, wd, F, E);
        LOAD(&L->w_down, LNAME("mlp.down_proj.weight"), 2, wd, E, F);
#undef LNAME
    }
#undef LOAD
    *out = m;
    return HC_OK;
fail:
    hc_llm_free(m);
    return rc;
}

int hc_llm_load(hc_llm **out, hc_backend *be, const char *dir, const hc_llm_params *p,
                hc_errbuf *eb) {
    *out = NULL;
    hc_llm_config cfg;
    int rc = hc_hfconfig_load(&cfg, dir, eb);
    if (rc) return rc;
    hc_safetensors *st = NULL;
    rc = hc_st_open(&st, dir, eb);
    if (rc) return rc;
    rc = hc_llm_load_from(out, be, &cfg, st, "", p, eb);
    hc_st_close(st); /* weights were copied into backend memory */
    return rc;
}

static void scratch_release(hc_llm_scratch *s) {
    hc_tensor *ts[] = {&s->x, &s->xn, &s->q, &s->att, &s->k, &s->v, &s->gate, &s->up,
                       &s->out_x, &s->out_h, &s->logits};
    for (size_t i = 0; i < sizeof ts / sizeof ts[0]; i++) hc_tensor_release(ts[i]);
    s->cap = s->out_cap = 0;
}

void hc_llm_free(hc_llm *m) {
    if (!m) return;
    hc_tensor_release(&m->tok_embd);
    hc_tensor_release(&m->out_norm);
    if (!m->lm_head_tied) hc_tensor_release(&m->lm_head);
    if (m->layers) {
        for (int l = 0; l < m->cfg.n_layers; l++) {
            hc_llm_layer *L = &m->layers[l];
            hc_tensor *ts[] = {&L->attn_norm, &L->wq,       &L->wk,   &L->wv,
                               &L->wo,        &L->q_norm,   &L->k_norm, &L->mlp_norm,
                               &L->w_gate,    &L->w_up,     &L->w_down};
            for (size_t i = 0; i < sizeof ts / sizeof ts[0]; i++) hc_tensor_release(ts[i]);
        }
    }
    if (m->scratch) {
        hc_llm_scratch *s = m->scratch;
        scratch_release(s);
        free(s->table_off);
        free(s->kv_len);
        free(s->tables);
        free(s->rows);
        free(s->seg_a);
        free(s->seg_b);
        free(s);
    }
    free(m->layers);
    free(m);
}

/* ---- scratch ------------------------------------------------------------------------------------ */

static int ensure_act(hc_llm *m, int n_tokens, int n_out) {
    hc_llm_scratch *s = m->scratch;
    const hc_llm_config *c = &m->cfg;
    if (n_tokens > s->cap) {
        int cap = s->cap ? s->cap : 64;
        while (cap < n_tokens) cap *= 2;
        hc_tensor *ts[] = {&s->x, &s->xn, &s->q, &s->att, &s->k, &s->v, &s->gate, &s->up};
        for (size_t i = 0; i < sizeof ts / sizeof ts[0]; i++) hc_tensor_release(ts[i]);
        s->cap = 0;
        int64_t E = c->hidden_size, QD = (int64_t)c->n_heads * c->head_dim,
                KD = (int64_t)c->n_kv_heads * c->head_dim, F = c->intermediate_size;
        int64_t shp[][2] = {{cap, E}, {cap, E}, {cap, QD}, {cap, QD},
                            {cap, KD}, {cap, KD}, {cap, F}, {cap, F}};
        for (size_t i = 0; i < sizeof ts / sizeof ts[0]; i++) {
            int rc = hc_tensor_alloc(ts[i], m->be, HC_DTYPE_F32, 2, shp[i]);
            if (rc) return rc;
        }
        s->cap = cap;
    }
    if (n_out > s->out_cap) {
        int cap = s->out_cap ? s->out_cap : 16;
        while (cap < n_out) cap *= 2;
        hc_tensor_release(&s->out_x);
        hc_tensor_release(&s->out_h);
        hc_tensor_release(&s->logits);
        s->out_cap = 0;
        int64_t a[2] = {cap, c->hidden_size}, b[2] = {cap, c->vocab_size};
        int rc = hc_tensor_alloc(&s->out_x, m->be, HC_DTYPE_F32, 2, a);
        if (!rc) rc = hc_tensor_alloc(&s->out_h, m->be, HC_DTYPE_F32, 2, a);
        /* a model without lm_head (skip_lm_head) never computes logits */
        if (!rc && m->lm_head.data) rc = hc_tensor_alloc(&s->logits, m->be, HC_DTYPE_F32, 2, b);
        if (rc) return rc;
        s->out_cap = cap;
    }
    return HC_OK;
}

static int grow_i32(int32_t **p, int n) {
    int32_t *q = realloc(*p, (size_t)(n > 0 ? n : 1) * sizeof **p);
    if (!q) return HC_ERR_NOMEM;
    *p = q;
    return HC_OK;
}

static int ensure_meta(hc_llm_scratch *s, int n_tokens, int n_tables) {
    if (n_tokens > s->meta_cap) {
        int cap = n_tokens * 2;
        if (grow_i32(&s->table_off, cap) || grow_i32(&s->kv_len, cap) || grow_i32(&s->rows, cap))
            return HC_ERR_NOMEM;
        s->meta_cap = cap;
    }
    if (n_tables > s->tables_cap) {
        int cap = n_tables * 2;
        if (grow_i32(&s->tables, cap)) return HC_ERR_NOMEM;
        s->tables_cap = cap;
    }
    return HC_OK;
}

static int ensure_seg(hc_llm_scratch *s, int n_seg) {
    if (n_seg <= s->seg_cap) return HC_OK;
    int cap = n_seg * 2;
    int *a = realloc(s->seg_a, sizeof(int) * (size_t)cap);
    if (a) s->seg_a = a;
    int *b = a ? realloc(s->seg_b, sizeof(int) * (size_t)cap) : NULL;
    if (b) s->seg_b = b;
    if (!a || !b) return HC_ERR_NOMEM;
    s->seg_cap = cap;
    return HC_OK;
}

int hc_llm_reserve(hc_llm *m, int n_tokens, int n_out, const hc_kv_cache *kv, hc_errbuf *eb) {
    if (n_tokens < 1 || n_out < 0) return hc_seterr(eb, HC_ERR_INVAL, "reserve: bad sizes");
    hc_llm_scratch *s = m->scratch;
    int64_t tables = (int64_t)n_tokens + (kv ? 2 * (int64_t)kv->n_blocks : 0);
    if (tables > INT32_MAX / 4) tables = INT32_MAX / 4;
    int rc = ensure_act(m, n_tokens, n_out > 0 ? n_out : 1);
    if (!rc) rc = ensure_meta(s, n_tokens, (int)tables);
    if (!rc) rc = ensure_seg(s, n_tokens);
    if (rc) return hc_seterr(eb, rc, "reserving activations and metadata for %d tokens", n_tokens);
    return HC_OK;
}

int hc_llm_kv_create(hc_llm *m, hc_kv_cache **out, int block_size, int n_blocks) {
    return hc_kv_create(out, m->be, m->cfg.n_layers, m->cfg.n_kv_heads * m->cfg.head_dim,
                        block_size, n_blocks);
}

/* ---- forward ------------------------------------------------------------------------------------- */

#define CALL(expr)                                                                                 \
    do {                                                                                           \
        int rc_ = (expr);                                                                          \
        if (rc_) return hc_seterr(eb, rc_, "%s failed in %s: %s", #expr, be->iface->name,          \
                                  hc_strerror(rc_));                                               \
    } while (0)

/* The computation proper, once every segment has room in the cache (see hc_llm_forward). */
static int forward_compute(hc_llm *m, const hc_batch *b, hc_kv_cache *kv, const int *seq_ids,
                           int n_seg, int n_tables, float *hidden, float *logits, hc_errbuf *eb) {
    const hc_llm_config *c = &m->cfg;
    hc_backend *be = m->be;
    const hc_backend_i *ops = be->iface;
    const int T = b->n_tokens;
    hc_llm_scratch *s = m->scratch;
    int rc;
    rc = ensure_meta(s, T, n_tables);
    if (rc) return hc_seterr(eb, rc, "allocating batch metadata");
    if (!kv) {
        int start = 0;
        for (int t = 0; t < T; t++) {
            if (t > 0 && b->seg && b->seg[t] != b->seg[t - 1]) start = t;
            s->tables[t] = t;
            s->table_off[t] = start;
            s->kv_len[t] = t - start + 1;
        }
    } else {
        int off = 0, start = 0;
        int *seg_off = s->seg_a; /* sized by hc_llm_forward */
        for (int sg = 0; sg < n_seg; sg++) {
            hc_kv_seq *q = hc_kv_seq_get(kv, seq_ids[sg]);
            memcpy(s->tables + off, q->blocks, (size_t)q->n_blocks * sizeof(int32_t));
            seg_off[sg] = off;
            off += q->n_blocks;
        }
        for (int t = 0; t < T; t++) {
            int sg = b->seg ? b->seg[t] : 0;
            if (t > 0 && b->seg && b->seg[t] != b->seg[t - 1]) start = t;
            hc_kv_seq *q = hc_kv_seq_get(kv, seq_ids[sg]);
            int j = q->n_tokens + (t - start);
            s->table_off[t] = seg_off[sg];
            s->kv_len[t] = j + 1;
            s->rows[t] = hc_kv_row(kv, q, j);
            /* a block shared with another sequence (a forked prefix) is never written */
            HC_ASSERT(!hc_kv_block_shared(kv, q->blocks[j / kv->block_size]));
        }
    }

    hc_tensor x = hc_tensor_rows_view(&s->x, 0, T), xn = hc_tensor_rows_view(&s->xn, 0, T);
    hc_tensor q = hc_tensor_rows_view(&s->q, 0, T), att = hc_tensor_rows_view(&s->att, 0, T);
    hc_tensor k = hc_tensor_rows_view(&s->k, 0, T), v = hc_tensor_rows_view(&s->v, 0, T);
    hc_tensor gate = hc_tensor_rows_view(&s->gate, 0, T), up = hc_tensor_rows_view(&s->up, 0, T);
    int64_t q3[3] = {T, c->n_heads, c->head_dim}, k3[3] = {T, c->n_kv_heads, c->head_dim};
    int64_t qh[2] = {(int64_t)T * c->n_heads, c->head_dim};
    int64_t kh[2] = {(int64_t)T * c->n_kv_heads, c->head_dim};
    hc_tensor q_heads = hc_tensor_reshape(&q, 3, q3), k_heads = hc_tensor_reshape(&k, 3, k3);
    hc_tensor q_rows = hc_tensor_reshape(&q, 2, qh), k_rows = hc_tensor_reshape(&k, 2, kh);

    CALL(ops->embed(be, &x, &m->tok_embd, b->token));
    if (b->n_inject) CALL(ops->set_rows(be, &x, b->inject, b->inject_idx, b->n_inject));
    hc_attn_args aa = {
        .n_tokens = T,
        .n_heads = c->n_heads,
        .n_kv_heads = c->n_kv_heads,
        .head_dim = c->head_dim,
        .scale = 1.0f / sqrtf((float)c->head_dim),
        .block_size = kv ? kv->block_size : 1,
        .table_off = s->table_off,
        .kv_len = s->kv_len,
        .tables = s->tables,
        .n_table = n_tables,
    };
    for (int l = 0; l < c->n_layers; l++) {
        const hc_llm_layer *L = &m->layers[l];
        CALL(ops->rmsnorm(be, &xn, &x, &L->attn_norm, c->rms_norm_eps));
        CALL(ops->matmul(be, &q, &xn, &L->wq));
        CALL(ops->matmul(be, &k, &xn, &L->wk));
        CALL(ops->matmul(be, &v, &xn, &L->wv));
        if (c->qk_norm) {
            CALL(ops->rmsnorm(be, &q_rows, &q_rows, &L->q_norm, c->rms_norm_eps));
            CALL(ops->rmsnorm(be, &k_rows, &k_rows, &L->k_norm, c->rms_norm_eps));
        }
        CALL(ops->rope(be, &q_heads, b->pos, c->rope_theta));
        CALL(ops->rope(be, &k_heads, b->pos, c->rope_theta));
        if (kv) {
            CALL(ops->kv_store(be, &kv->k[l], &kv->v[l], &k, &v, s->rows, T));
            CALL(ops->attention(be, &att, &q, &kv->k[l], &kv->v[l], &aa));
        } else {
            CALL(ops->attention(be, &att, &q, &k, &v, &aa));
        }
        CALL(ops->matmul(be, &xn, &att, &L->wo));
        CALL(ops->add(be, &x, &xn));
        CALL(ops->rmsnorm(be, &xn, &x, &L->mlp_norm, c->rms_norm_eps));
        CALL(ops->matmul(be, &gate, &xn, &L->w_gate));
        CALL(ops->matmul(be, &up, &xn, &L->w_up));
        CALL(ops->swiglu(be, &gate, &gate, &up));
        CALL(ops->matmul(be, &xn, &gate, &L->w_down));
        CALL(ops->add(be, &x, &xn));
    }
    if (b->n_out > 0 && (hidden || logits)) {
        hc_tensor ox = hc_tensor_rows_view(&s->out_x, 0, b->n_out);
        hc_tensor oh = hc_tensor_rows_view(&s->out_h, 0, b->n_out);
        CALL(ops->get_rows(be, &ox, &x, b->out_idx));
        CALL(ops->rmsnorm(be, &oh, &ox, &m->out_norm, c->rms_norm_eps));
        if (hidden) CALL(ops->download(be, hidden, oh.data, hc_tensor_nbytes(&oh)));
        if (logits) {
            hc_tensor lg = hc_tensor_rows_view(&s->logits, 0, b->n_out);
            CALL(ops->matmul(be, &lg, &oh, &m->lm_head));
            CALL(ops->download(be, logits, lg.data, hc_tensor_nbytes(&lg)));
        }
    }
    return HC_OK;
}

int hc_llm_forward(hc_llm *m, const hc_batch *b, hc_kv_cache *kv, const int *seq_ids,
                   float *hidden, float *logits, hc_errbuf *eb) {
    const hc_llm_config *c = &m->cfg;
    const int T = b->n_tokens;
    if (T <= 0) return hc_seterr(eb, HC_ERR_INVAL, "empty batch");
    if (b->n_out < 0 || (b->n_out > 0 && !b->out_idx))
        return hc_seterr(eb, HC_ERR_INVAL, "bad output request");
    if (logits && !m->lm_head.data)
        return hc_seterr(eb, HC_ERR_INVAL, "this model was loaded without lm_head: no logits");
    for (int i = 0; i < b->n_out; i++)
        if (b->out_idx[i] < 0 || b->out_idx[i] >= T)
            return hc_seterr(eb, HC_ERR_RANGE, "output index %d outside the batch of %d tokens",
                             b->out_idx[i], T);
    /* validate segments and inputs */
    int n_seg = 1;
    for (int t = 0; t < T; t++) {
        int sg = b->seg ? b->seg[t] : 0;
        int prev = t ? (b->seg ? b->seg[t - 1] : 0) : 0;
        if ((t == 0 && sg != 0) || (t > 0 && sg != prev && sg != prev + 1))
            return hc_seterr(eb, HC_ERR_INVAL,
                             "token %d: segment ids must start at 0 and form contiguous runs", t);
        n_seg = sg + 1;
        /* ids at injected positions are looked up too (then overwritten): they must be valid */
        if (b->token[t] < 0 || b->token[t] >= c->vocab_size)
            return hc_seterr(eb, HC_ERR_RANGE, "token %d: id %d outside the vocabulary (0..%d)", t,
                             b->token[t], c->vocab_size - 1);
        if (b->pos[t] < 0)
            return hc_seterr(eb, HC_ERR_RANGE, "token %d: negative position %d", t, b->pos[t]);
    }
    if (b->n_inject < 0 || (b->n_inject > 0 && (!b->inject_idx || !b->inject)))
        return hc_seterr(eb, HC_ERR_INVAL, "bad injected-vector request");
    for (int i = 0; i < b->n_inject; i++)
        if (b->inject_idx[i] < 0 || b->inject_idx[i] >= T)
            return hc_seterr(eb, HC_ERR_RANGE, "injected vector %d targets token %d outside the "
                                               "batch of %d", i, b->inject_idx[i], T);
    int rc = ensure_act(m, T, b->n_out > 0 ? b->n_out : 1);
    if (rc) return hc_seterr(eb, rc, "allocating activations for %d tokens", T);

    /* reserve room for every segment of a cached batch first; on any failure (a full pool, or a
     * failing op later) every sequence is shrunk back to what it held, so nothing changes */
    int n_tables = kv ? 0 : T;
    int *had = NULL;
    if (kv) {
        for (int sg = 0; sg < n_seg; sg++) {
            hc_kv_seq *q = hc_kv_seq_get(kv, seq_ids[sg]);
            if (!q) return hc_seterr(eb, HC_ERR_INVAL, "segment %d: KV sequence %d not open", sg,
                                     seq_ids[sg]);
            for (int o = 0; o < sg; o++)
                if (seq_ids[o] == seq_ids[sg])
                    return hc_seterr(eb, HC_ERR_INVAL, "segments %d and %d share KV sequence %d",
                                     o, sg, seq_ids[sg]);
        }
        if (ensure_seg(m->scratch, n_seg))
            return hc_seterr(eb, HC_ERR_NOMEM, "allocating batch metadata");
        int *cnt = m->scratch->seg_a;
        had = m->scratch->seg_b;
        memset(cnt, 0, sizeof(int) * (size_t)n_seg);
        for (int t = 0; t < T; t++) cnt[b->seg ? b->seg[t] : 0]++;
        int sg = 0;
        for (; sg < n_seg && rc == HC_OK; sg++) {
            had[sg] = hc_kv_seq_get(kv, seq_ids[sg])->n_blocks;
            rc = hc_kv_seq_reserve(kv, seq_ids[sg], cnt[sg]);
        }
        if (rc) {
            /* reserve is all-or-nothing per sequence: undo the ones before the failing one */
            for (int i = 0; i < sg - 1; i++) hc_kv_seq_shrink(kv, seq_ids[i], had[i]);
            return hc_seterr(eb, rc, "KV cache: not enough free blocks for this batch");
        }
        for (int i = 0; i < n_seg; i++) n_tables += hc_kv_seq_get(kv, seq_ids[i])->n_blocks;
    }
    rc = forward_compute(m, b, kv, seq_ids, n_seg, n_tables, hidden, logits, eb);
    if (kv) {
        for (int sg = 0, t = 0; sg < n_seg; sg++) {
            int n = 0;
            while (t < T && (b->seg ? b->seg[t] : 0) == sg) {
                n++;
                t++;
            }
            if (rc == HC_OK) hc_kv_seq_commit(kv, seq_ids[sg], n);
            else hc_kv_seq_shrink(kv, seq_ids[sg], had[sg]);
        }
    }
    return rc;
}
