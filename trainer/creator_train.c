/* creator_train.c: the HLLM-Creator pipeline's forward and backward for training (see
 * creator_train.h). */
#include "creator_train.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/tensor.h"
#include "io/safetensors.h"
#include "io/weights.h"

/* Buffers of one micro-batch, grown on demand. */
struct hc_ctrain_scratch {
    /* item stage */
    int32_t *i_ids, *i_pos, *i_seg, *i_rows; /* (Ti) and (Ni) slot rows */
    float *i_inj, *e, *de, *dh_i, *dinj_i;   /* (Ni, Hi), (Ni, Hi), (Ni, Hi), (Ti, Hi), (Ni, Hi) */
    /* user stage */
    int32_t *u_ids, *u_pos, *u_seg, *u_rows, *u_out; /* (Tu), (Tu), (Tu), (Ni + n), (n) */
    float *u_inj, *u, *du, *dh_u, *dinj_u;
    /* projector + creative */
    float *U, *dU;
    int32_t *c_ids, *c_pos, *c_seg, *c_rows, *c_lab; /* (Tc) and (n) slot rows */
    float *dh_c;
    size_t cap[32];
};

static int grow(void **p, size_t *cap, size_t n, size_t elem) {
    if (n <= *cap) return HC_OK;
    void *q = realloc(*p, (n ? n : 1) * elem);
    if (!q) return HC_ERR_NOMEM;
    *p = q;
    *cap = n;
    return HC_OK;
}

static void scratch_free(hc_ctrain_scratch *s) {
    if (!s) return;
    void *ps[] = {s->i_ids, s->i_pos,  s->i_seg, s->i_rows, s->i_inj,  s->e,      s->de,
                  s->dh_i,  s->dinj_i, s->u_ids, s->u_pos,  s->u_seg,  s->u_rows, s->u_out,
                  s->u_inj, s->u,      s->du,    s->dh_u,   s->dinj_u, s->U,      s->dU,
                  s->c_ids, s->c_pos,  s->c_seg, s->c_rows, s->c_lab,  s->dh_c};
    for (size_t i = 0; i < sizeof ps / sizeof ps[0]; i++)
        free(ps[i]);
    free(s);
}

void hc_ctrain_free(hc_ctrain *tr) {
    if (!tr) return;
    hc_tmodel_free(tr->item);
    hc_tmodel_free(tr->user);
    hc_tmodel_free(tr->creative);
    hc_ptab_free(&tr->t);
    hc_creator_free(tr->c);
    hc_backend_free(tr->be);
    scratch_free(tr->s);
    free(tr->scalar);
    free(tr);
}

/* Does a tensor name belong to one of the three LLMs (registered by their tmodels)? */
static int is_llm_tensor(const char *name) {
    return !strncmp(name, "item_llm.", 9) || !strncmp(name, "user_llm.", 9) ||
           !strncmp(name, "creative_llm.", 13);
}

int hc_ctrain_create(hc_ctrain **out, const char *pkg_dir, int n_threads, hc_errbuf *eb) {
    *out = NULL;
    hc_ctrain *tr = calloc(1, sizeof *tr);
    if (!tr) return hc_seterr(eb, HC_ERR_NOMEM, "out of memory");
    hc_ptab_init(&tr->t);
    tr->max_gen = 4096;
    tr->s = calloc(1, sizeof *tr->s);
    hc_safetensors *st = NULL;
    int rc = tr->s ? HC_OK : HC_ERR_NOMEM;
    if (rc) {
        hc_seterr(eb, rc, "out of memory");
        goto fail;
    }
    if ((rc = hc_backend_cpu_create(&tr->be, n_threads > 0 ? n_threads : 1))) {
        hc_seterr(eb, rc, "CPU backend: %s", hc_strerror(rc));
        goto fail;
    }
    hc_creator_params cp = hc_creator_default_params();
    cp.item_cache_entries = 0; /* the trainer's weights change: a cache would be stale */
    if ((rc = hc_creator_load(&tr->c, tr->be, pkg_dir, &cp, eb))) goto fail;
    hc_creator *c = tr->c;
    if (!c->creative) {
        rc = hc_seterr(eb, HC_ERR_INVAL, "%s: the package has no creative LLM", pkg_dir);
        goto fail;
    }
    if (c->n_eos < 1) {
        rc = hc_seterr(eb, HC_ERR_INVAL, "%s: no end-of-sequence id for the creative LLM", pkg_dir);
        goto fail;
    }
    tr->eos = c->eos[0];
    if ((rc = hc_st_open(&st, c->pkg.weights, eb))) goto fail;
    /* the LLMs first (their tmodels register them under the HF names), then every other tensor
     * of the package in name order */
    if ((rc = hc_tmodel_add_params(&tr->item, &c->item->cfg, &tr->t, "item_llm.", 0, eb)) ||
        (rc = hc_tmodel_add_params(&tr->user, &c->user->cfg, &tr->t, "user_llm.", 0, eb)) ||
        (rc = hc_tmodel_add_params(&tr->creative, &c->creative->cfg, &tr->t, "creative_llm.", 1,
                                   eb)))
        goto fail;
    const size_t n_st = hc_st_count(st);
    for (size_t i = 0; i < n_st; i++) {
        const hc_st_tensor *x = hc_st_get(st, i);
        if (is_llm_tensor(x->name)) continue;
        if (!hc_dtype_is_float(x->dtype)) {
            rc = hc_seterr(eb, HC_ERR_UNSUPPORTED,
                           "%s: tensor '%s' has dtype %s, not a float "
                           "type",
                           c->pkg.weights, x->name, hc_dtype_name(x->dtype));
            goto fail;
        }
        int64_t one = 1;
        if ((rc = hc_ptab_add(&tr->t, x->name, x->n_dims ? x->n_dims : 1,
                              x->n_dims ? x->shape : &one, (int)x->dtype, eb)))
            goto fail;
    }
    if ((rc = hc_ptab_alloc(&tr->t, eb))) goto fail;
    tr->scalar = calloc((size_t)tr->t.n, 1);
    if (!tr->scalar) {
        rc = hc_seterr(eb, HC_ERR_NOMEM, "out of memory");
        goto fail;
    }
    if ((rc = hc_tmodel_bind(tr->item, &tr->t, eb)) ||
        (rc = hc_tmodel_bind(tr->user, &tr->t, eb)) ||
        (rc = hc_tmodel_bind(tr->creative, &tr->t, eb)) ||
        (rc = hc_tmodel_load(tr->item, st, "item_llm.", eb)) ||
        (rc = hc_tmodel_load(tr->user, st, "user_llm.", eb)) ||
        (rc = hc_tmodel_load(tr->creative, st, "creative_llm.", eb)))
        goto fail;
    for (size_t i = 0; i < n_st; i++) {
        const hc_st_tensor *x = hc_st_get(st, i);
        if (is_llm_tensor(x->name)) continue;
        int k = hc_ptab_find(&tr->t, x->name);
        hc_param *P = &tr->t.params[k];
        tr->scalar[k] = x->n_dims == 0;
        if ((rc = hc_tensor_read_converted(tr->t.w + P->offset, HC_DTYPE_F32, P->numel, x, eb)))
            goto fail;
    }
    tr->p_item_slot = hc_ptab_find(&tr->t, "item_emb_tokens");
    tr->p_user_slot = hc_ptab_find(&tr->t, "emb_tokens");
    tr->p_proj = hc_ptab_find(&tr->t, "user_projector.weight");
    /* the creator checked their shapes when it loaded the same file */
    if (tr->p_item_slot < 0 || tr->p_user_slot < 0 || tr->p_proj < 0) {
        rc = hc_seterr(eb, HC_ERR_NOTFOUND,
                       "%s: item_emb_tokens, emb_tokens or "
                       "user_projector.weight missing",
                       c->pkg.weights);
        goto fail;
    }
    hc_st_close(st);
    *out = tr;
    return HC_OK;
fail:
    hc_st_close(st);
    hc_ctrain_free(tr);
    return rc;
}

static int creative_len(const hc_ctrain *tr, const hc_ctrain_row *r, int *n_resp) {
    const int n_prompt = tr->c->n_prompt1 + 1 + r->n_prompt2;
    int room = tr->max_gen - n_prompt - 1; /* response tokens that fit beside the eos */
    *n_resp = r->n_response < room ? r->n_response : (room > 0 ? room : 0);
    return n_prompt + *n_resp + 1;
}

int hc_ctrain_check_row(const hc_ctrain *tr, const hc_ctrain_row *r, hc_errbuf *eb) {
    const hc_creator *c = tr->c;
    if (r->n_items < 0 || r->n_items > c->pkg.max_history)
        return hc_seterr(eb, HC_ERR_RANGE, "%d history titles, at most max_history (%d)",
                         r->n_items, c->pkg.max_history);
    const int Vi = c->item->cfg.vocab_size, Vc = c->creative->cfg.vocab_size;
    int k = 0;
    for (int i = 0; i < r->n_items; i++) {
        if (r->item_lens[i] < 0 || r->item_lens[i] > c->pkg.max_item_tokens)
            return hc_seterr(eb, HC_ERR_RANGE,
                             "history title %d has %d tokens, outside "
                             "0..max_item_tokens (%d)",
                             i, r->item_lens[i], c->pkg.max_item_tokens);
        for (int j = 0; j < r->item_lens[i]; j++, k++)
            if (r->item_ids[k] < 0 || r->item_ids[k] >= Vi)
                return hc_seterr(eb, HC_ERR_RANGE,
                                 "history title %d: id %d outside the item "
                                 "vocabulary (0..%d)",
                                 i, r->item_ids[k], Vi - 1);
    }
    if (r->n_prompt2 < 0 || r->n_response < 0)
        return hc_seterr(eb, HC_ERR_INVAL, "negative prompt2 or response length");
    for (int i = 0; i < r->n_prompt2; i++)
        if (r->prompt2[i] < 0 || r->prompt2[i] >= Vc)
            return hc_seterr(eb, HC_ERR_RANGE,
                             "prompt2 id %d outside the creative vocabulary "
                             "(0..%d)",
                             r->prompt2[i], Vc - 1);
    for (int i = 0; i < r->n_response; i++)
        if (r->response[i] < 0 || r->response[i] >= Vc)
            return hc_seterr(eb, HC_ERR_RANGE,
                             "response id %d outside the creative vocabulary "
                             "(0..%d)",
                             r->response[i], Vc - 1);
    const int n_prompt = c->n_prompt1 + 1 + r->n_prompt2;
    if (n_prompt + 1 > tr->max_gen)
        return hc_seterr(eb, HC_ERR_RANGE,
                         "the creative prompt has %d tokens: no room for a "
                         "response within MAX_GEN_TEXT_LENGTH (%d)",
                         n_prompt, tr->max_gen);
    return HC_OK;
}

#define G(field, n, T)                                                                             \
    do {                                                                                           \
        if ((rc = grow((void **)&s->field, &s->cap[k_++], (size_t)(n), sizeof(T)))) goto oom;      \
    } while (0)

/* Forward of items and users for rows: fills s->e, s->u (and the tmodels' activations). */
static int embed_forward(hc_ctrain *tr, const hc_ctrain_row *rows, int n, hc_errbuf *eb) {
    hc_ctrain_scratch *s = tr->s;
    hc_creator *c = tr->c;
    const int Hi = c->d_item, Hu = c->d_user, L = c->pkg.max_history, S = c->pkg.max_item_tokens;
    const int Lp = c->n_user_prompt;
    int Ni = 0, Ti = 0;
    for (int r = 0; r < n; r++) {
        Ni += rows[r].n_items;
        for (int i = 0; i < rows[r].n_items; i++)
            Ti += rows[r].item_lens[i] + 1;
    }
    const int Tu = Ni + n * (Lp + 1);
    int rc, k_ = 0;
    G(i_ids, Ti, int32_t);
    G(i_pos, Ti, int32_t);
    G(i_seg, Ti, int32_t);
    G(i_rows, Ni, int32_t);
    G(i_inj, (size_t)Ni * Hi, float);
    G(e, (size_t)Ni * Hi, float);
    G(de, (size_t)Ni * Hi, float);
    G(dh_i, (size_t)Ti * Hi, float);
    G(dinj_i, (size_t)Ni * Hi, float);
    G(u_ids, Tu, int32_t);
    G(u_pos, Tu, int32_t);
    G(u_seg, Tu, int32_t);
    G(u_rows, Ni + n, int32_t);
    G(u_out, n, int32_t);
    G(u_inj, (size_t)(Ni + n) * Hu, float);
    G(u, (size_t)n * Hu, float);
    G(du, (size_t)n * Hu, float);
    G(dh_u, (size_t)Tu * Hu, float);
    G(dinj_u, (size_t)(Ni + n) * Hu, float);
    const float *item_slot = tr->t.w + tr->t.params[tr->p_item_slot].offset;
    const float *user_slot = tr->t.w + tr->t.params[tr->p_user_slot].offset;
    /* items: one segment per history title */
    int T = 0, seg = 0;
    for (int r = 0; r < n; r++) {
        const int32_t *ids = rows[r].item_ids;
        for (int i = 0; i < rows[r].n_items; i++) {
            const int len = rows[r].item_lens[i];
            for (int j = 0; j < len; j++) {
                s->i_ids[T] = ids[j];
                s->i_pos[T] = S - len + j;
                s->i_seg[T++] = seg;
            }
            ids += len;
            s->i_ids[T] = -1;
            s->i_pos[T] = S;
            s->i_seg[T] = seg;
            memcpy(s->i_inj + (size_t)seg * Hi, item_slot, sizeof(float) * (size_t)Hi);
            s->i_rows[seg++] = T++;
        }
    }
    if (Ni > 0) {
        hc_tbatch b = {T, s->i_ids, s->i_pos, s->i_seg, Ni, s->i_rows, s->i_inj};
        if ((rc = hc_tmodel_forward(tr->item, &b, eb))) return rc;
        const float *h = hc_tmodel_hidden(tr->item);
        for (int i = 0; i < Ni; i++)
            memcpy(s->e + (size_t)i * Hi, h + (size_t)s->i_rows[i] * Hi,
                   sizeof(float) * (size_t)Hi);
    }
    /* users: the kept items' vectors, the user prompt, the [user] slot */
    T = 0;
    int n_inj = 0, item = 0;
    for (int r = 0; r < n; r++) {
        const int keep = rows[r].n_items, pad = L - keep;
        for (int j = 0; j < keep; j++, item++) {
            s->u_ids[T] = -1;
            s->u_pos[T] = pad + j;
            s->u_seg[T] = r;
            memcpy(s->u_inj + (size_t)n_inj * Hu, s->e + (size_t)item * Hi,
                   sizeof(float) * (size_t)Hu);
            s->u_rows[n_inj++] = T++;
        }
        for (int j = 0; j < Lp; j++) {
            s->u_ids[T] = c->user_prompt_ids[j];
            s->u_pos[T] = L + j;
            s->u_seg[T++] = r;
        }
        s->u_ids[T] = -1;
        s->u_pos[T] = L + Lp;
        s->u_seg[T] = r;
        memcpy(s->u_inj + (size_t)n_inj * Hu, user_slot, sizeof(float) * (size_t)Hu);
        s->u_rows[n_inj++] = T;
        s->u_out[r] = T++;
    }
    hc_tbatch b = {T, s->u_ids, s->u_pos, s->u_seg, n_inj, s->u_rows, s->u_inj};
    if ((rc = hc_tmodel_forward(tr->user, &b, eb))) return rc;
    const float *h = hc_tmodel_hidden(tr->user);
    for (int r = 0; r < n; r++)
        memcpy(s->u + (size_t)r * Hu, h + (size_t)s->u_out[r] * Hu, sizeof(float) * (size_t)Hu);
    return HC_OK;
oom:
    return hc_seterr(eb, HC_ERR_NOMEM, "out of memory (micro-batch of %d rows)", n);
}

static int check_rows(const hc_ctrain *tr, const hc_ctrain_row *rows, int n, hc_errbuf *eb) {
    if (n < 1 || !rows) return hc_seterr(eb, HC_ERR_INVAL, "an empty micro-batch");
    if (tr->c->d_item != tr->c->d_user)
        return hc_seterr(eb, HC_ERR_MISMATCH, "item and user LLM widths differ (%d, %d)",
                         tr->c->d_item, tr->c->d_user);
    for (int r = 0; r < n; r++) {
        int rc = hc_ctrain_check_row(tr, &rows[r], eb);
        if (rc) {
            char msg[sizeof eb->msg];
            snprintf(msg, sizeof msg, "%s", eb->msg);
            return hc_seterr(eb, rc, "row %d: %s", r, msg);
        }
    }
    return HC_OK;
}

int hc_ctrain_embed(hc_ctrain *tr, const hc_ctrain_row *rows, int n, float *u, float *U,
                    hc_errbuf *eb) {
    int rc = check_rows(tr, rows, n, eb);
    if (!rc) rc = embed_forward(tr, rows, n, eb);
    if (rc) return rc;
    const int Hu = tr->c->d_user, Hc = tr->c->d_creative;
    if (u) memcpy(u, tr->s->u, sizeof(float) * (size_t)n * (size_t)Hu);
    if (U)
        tr->creative->ops->matmul_fwd(U, tr->s->u, tr->t.w + tr->t.params[tr->p_proj].offset, NULL,
                                      n, Hu, Hc);
    return HC_OK;
}

int hc_ctrain_creative(hc_ctrain *tr, const hc_ctrain_row *rows, int n, float scale, int backward,
                       double *loss, int *n_tokens, hc_errbuf *eb) {
    *loss = 0;
    *n_tokens = 0;
    int rc = check_rows(tr, rows, n, eb);
    if (rc) return rc;
    if ((rc = embed_forward(tr, rows, n, eb))) return rc;
    hc_ctrain_scratch *s = tr->s;
    hc_creator *c = tr->c;
    const hc_train_ops *ops = tr->creative->ops;
    const int Hi = c->d_item, Hu = c->d_user, Hc = c->d_creative, P1 = c->n_prompt1;
    int Tc = 0;
    for (int r = 0; r < n; r++) {
        int nr;
        Tc += creative_len(tr, &rows[r], &nr);
    }
    int k_ = 19; /* scratch capacity slots: embed_forward uses cap[0..18] */
    G(U, (size_t)n * Hc, float);
    G(dU, (size_t)n * Hc, float);
    G(c_ids, Tc, int32_t);
    G(c_pos, Tc, int32_t);
    G(c_seg, Tc, int32_t);
    G(c_rows, n, int32_t);
    G(c_lab, Tc, int32_t);
    G(dh_c, (size_t)Tc * Hc, float);
    const float *Wp = tr->t.w + tr->t.params[tr->p_proj].offset;
    ops->matmul_fwd(s->U, s->u, Wp, NULL, n, Hu, Hc);
    /* creative segments: prompt1, slot(U), prompt2, response, eos */
    int T = 0, labelled = 0;
    for (int r = 0; r < n; r++) {
        int nr;
        const int len = creative_len(tr, &rows[r], &nr), t0 = T;
        for (int j = 0; j < P1; j++)
            s->c_ids[T++] = c->prompt1_ids[j];
        s->c_rows[r] = T;
        s->c_ids[T++] = -1;
        for (int j = 0; j < rows[r].n_prompt2; j++)
            s->c_ids[T++] = rows[r].prompt2[j];
        const int first_resp = T;
        for (int j = 0; j < nr; j++)
            s->c_ids[T++] = rows[r].response[j];
        s->c_ids[T++] = tr->eos;
        for (int j = 0; j < len; j++) {
            s->c_pos[t0 + j] = j;
            s->c_seg[t0 + j] = r;
            /* row t predicts row t + 1: labelled when t + 1 is a response token or the eos */
            const int nxt = t0 + j + 1;
            s->c_lab[t0 + j] = nxt < T && nxt >= first_resp ? s->c_ids[nxt] : -100;
            labelled += s->c_lab[t0 + j] != -100;
        }
    }
    hc_tbatch b = {T, s->c_ids, s->c_pos, s->c_seg, n, s->c_rows, s->U};
    if ((rc = hc_tmodel_forward(tr->creative, &b, eb))) return rc;
    *n_tokens = labelled;
    if (!backward) {
        *loss = hc_tmodel_lm_loss(tr->creative, s->c_lab, 1.0f, NULL);
        return isnan(*loss) ? hc_seterr(eb, HC_ERR_INVAL,
                                        "creative loss: no lm_head or bad "
                                        "label")
                            : HC_OK;
    }
    memset(s->dh_c, 0, sizeof(float) * (size_t)T * (size_t)Hc);
    *loss = hc_tmodel_lm_loss(tr->creative, s->c_lab, scale, s->dh_c);
    if (isnan(*loss)) return hc_seterr(eb, HC_ERR_INVAL, "creative loss: no lm_head or bad label");
    memset(s->dU, 0, sizeof(float) * (size_t)n * (size_t)Hc);
    if ((rc = hc_tmodel_backward(tr->creative, s->dh_c, s->dU, eb))) return rc;
    /* U = u Wp^T: du and dWp */
    memset(s->du, 0, sizeof(float) * (size_t)n * (size_t)Hu);
    ops->matmul_bwd(s->du, tr->t.g + tr->t.params[tr->p_proj].offset, NULL, s->dU, s->u, Wp, n, Hu,
                    Hc);
    /* the user LLM: d(hidden) only at the [user] slots */
    const int Tu = hc_tmodel_rows(tr->user);
    memset(s->dh_u, 0, sizeof(float) * (size_t)Tu * (size_t)Hu);
    for (int r = 0; r < n; r++)
        memcpy(s->dh_u + (size_t)s->u_out[r] * Hu, s->du + (size_t)r * Hu,
               sizeof(float) * (size_t)Hu);
    int Ni = 0;
    for (int r = 0; r < n; r++)
        Ni += rows[r].n_items;
    memset(s->dinj_u, 0, sizeof(float) * (size_t)(Ni + n) * (size_t)Hu);
    if ((rc = hc_tmodel_backward(tr->user, s->dh_u, s->dinj_u, eb))) return rc;
    /* injected rows in order: each row's items, then its [user] slot */
    float *g_uslot = tr->t.g + tr->t.params[tr->p_user_slot].offset;
    int inj = 0, item = 0;
    for (int r = 0; r < n; r++) {
        for (int j = 0; j < rows[r].n_items; j++, inj++, item++)
            memcpy(s->de + (size_t)item * Hi, s->dinj_u + (size_t)inj * Hu,
                   sizeof(float) * (size_t)Hi);
        for (int d = 0; d < Hu; d++)
            g_uslot[d] += s->dinj_u[(size_t)inj * Hu + d];
        inj++;
    }
    if (Ni > 0) {
        /* the item LLM: d(hidden) at each [item] slot; the slot vector's gradient sums over items
         */
        const int Ti = hc_tmodel_rows(tr->item);
        memset(s->dh_i, 0, sizeof(float) * (size_t)Ti * (size_t)Hi);
        for (int i = 0; i < Ni; i++)
            memcpy(s->dh_i + (size_t)s->i_rows[i] * Hi, s->de + (size_t)i * Hi,
                   sizeof(float) * (size_t)Hi);
        memset(s->dinj_i, 0, sizeof(float) * (size_t)Ni * (size_t)Hi);
        if ((rc = hc_tmodel_backward(tr->item, s->dh_i, s->dinj_i, eb))) return rc;
        float *g_islot = tr->t.g + tr->t.params[tr->p_item_slot].offset;
        for (int i = 0; i < Ni; i++)
            for (int d = 0; d < Hi; d++)
                g_islot[d] += s->dinj_i[(size_t)i * Hi + d];
    }
    return HC_OK;
oom:
    return hc_seterr(eb, HC_ERR_NOMEM, "out of memory (micro-batch of %d rows)", n);
}

int hc_ctrain_save_weights(const hc_ctrain *tr, const char *path, hc_dtype dtype, hc_errbuf *eb) {
    const hc_ptab *t = &tr->t;
    hc_st_write_item *items = calloc((size_t)t->n, sizeof *items);
    void **bufs = calloc((size_t)t->n, sizeof *bufs);
    int rc = items && bufs ? HC_OK : HC_ERR_NOMEM;
    for (int i = 0; !rc && i < t->n; i++) {
        const hc_param *P = &t->params[i];
        hc_dtype dt = dtype == HC_DTYPE_AS_STORED ? (hc_dtype)P->stored_dtype : dtype;
        if (dt != HC_DTYPE_F32 && dt != HC_DTYPE_BF16 && dt != HC_DTYPE_F16) dt = HC_DTYPE_F32;
        const float *w = t->w + P->offset;
        if (dt == HC_DTYPE_F32) {
            items[i].data = w;
        } else {
            uint16_t *h = malloc(sizeof(uint16_t) * (P->numel ? P->numel : 1));
            if (!h) {
                rc = HC_ERR_NOMEM;
                break;
            }
            for (size_t j = 0; j < P->numel; j++)
                h[j] = dt == HC_DTYPE_BF16 ? hc_f32_to_bf16(w[j]) : hc_f32_to_f16(w[j]);
            bufs[i] = h;
            items[i].data = h;
        }
        items[i].name = P->name;
        items[i].dtype = dt;
        items[i].n_dims = tr->scalar[i] ? 0 : P->ndim;
        for (int d = 0; d < P->ndim && d < HC_MAX_DIMS; d++)
            items[i].shape[d] = P->shape[d];
    }
    if (rc)
        hc_seterr(eb, rc, "out of memory writing %s", path);
    else
        rc = hc_st_write(path, items, (size_t)t->n, eb);
    for (int i = 0; bufs && i < t->n; i++)
        free(bufs[i]);
    free(bufs);
    free(items);
    return rc;
}
