/* creator_train.c: the HLLM-Creator pipeline's forward and backward for training (see
 * creator_train.h). */
#include "creator_train.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/tensor.h"
#include "heads.h"
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
    /* heads */
    int32_t *neg, *prof_lens, *prof_ids; /* (n * HC_CTRAIN_CLS_NEG), (n), (profile ids) */
    /* next-item: o (n, S, H), e (n, S + 1, H), their gradients, mask (n, S) */
    float *ni_o, *ni_e, *ni_do, *ni_de;
    uint8_t *ni_mask;
    size_t cap[40]; /* capacities, by position: embed_forward 0..18, the step 19..29,
                       next-item 30..34 */
};

/* Never leaves *p NULL, so an empty batch part (a history of no titles) still memsets a valid
 * pointer. */
static int grow(void **p, size_t *cap, size_t n, size_t elem) {
    if (n <= *cap && *p) return HC_OK;
    void *q = realloc(*p, (n ? n : 1) * elem);
    if (!q) return HC_ERR_NOMEM;
    *p = q;
    *cap = n;
    return HC_OK;
}

static void scratch_free(hc_ctrain_scratch *s) {
    if (!s) return;
    void *ps[] = {s->i_ids,     s->i_pos,    s->i_seg, s->i_rows, s->i_inj,  s->e,      s->de,
                  s->dh_i,      s->dinj_i,   s->u_ids, s->u_pos,  s->u_seg,  s->u_rows, s->u_out,
                  s->u_inj,     s->u,        s->du,    s->dh_u,   s->dinj_u, s->U,      s->dU,
                  s->c_ids,     s->c_pos,    s->c_seg, s->c_rows, s->c_lab,  s->dh_c,   s->neg,
                  s->prof_lens, s->prof_ids, s->ni_o,  s->ni_e,   s->ni_do,  s->ni_de,  s->ni_mask};
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
    free(tr->profile_prompt);
    for (int i = 0; i < tr->n_keep; i++) {
        free(tr->keep[i].name);
        free(tr->keep[i].data);
    }
    free(tr->keep);
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
    tr->max_profile = 1024;
    tr->cls_neg_num = HC_CTRAIN_CLS_NEG;
    tr->cls_rng = 2020;
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
        if (is_llm_tensor(x->name)) {
            /* an LLM tensor the models do not use (an item/user lm_head of a CausalLM export):
             * not trained, written back unchanged */
            if (hc_ptab_find(&tr->t, x->name) >= 0) continue;
            hc_ctrain_keep *kp = realloc(tr->keep, sizeof *kp * (size_t)(tr->n_keep + 1));
            if (!kp) {
                rc = hc_seterr(eb, HC_ERR_NOMEM, "out of memory");
                goto fail;
            }
            tr->keep = kp;
            hc_ctrain_keep *k = &tr->keep[tr->n_keep];
            memset(k, 0, sizeof *k);
            k->name = strdup(x->name);
            k->data = malloc(x->nbytes ? x->nbytes : 1);
            if (!k->name || !k->data) {
                free(k->name);
                free(k->data);
                rc = hc_seterr(eb, HC_ERR_NOMEM, "out of memory");
                goto fail;
            }
            memcpy(k->data, x->data, x->nbytes);
            k->dtype = x->dtype;
            k->n_dims = x->n_dims;
            for (int d = 0; d < x->n_dims; d++)
                k->shape[d] = x->shape[d];
            tr->n_keep++;
            continue;
        }
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
    /* the HLLM next-item loss's learnable scale, if the package does not carry one yet */
    const int new_scale = hc_ptab_find(&tr->t, HC_NEXTITEM_SCALE_NAME) < 0;
    if (new_scale && (rc = hc_nextitem_add_param(&tr->t, eb))) goto fail;
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
    if (c->pkg.profile_prompt) { /* the recon loss's instruction, in the creative tokenizer */
        size_t np = 0;
        if ((rc = hc_tokenizer_encode(c->creative_tok, NULL, c->pkg.profile_prompt,
                                      strlen(c->pkg.profile_prompt), 0, &tr->profile_prompt, &np,
                                      eb)))
            goto fail;
        tr->n_profile_prompt = (int)np;
        if (!tr->profile_prompt) tr->profile_prompt = calloc(1, sizeof(int32_t));
    }
    if (new_scale && (rc = hc_nextitem_init_param(&tr->t, eb))) goto fail;
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

/* One item segment: title ids right-aligned before the [item] slot at max_item_tokens. */
static void item_segment(hc_ctrain_scratch *s, const int32_t *ids, int len, int S, int *T, int seg,
                         const float *slot, int Hi) {
    for (int j = 0; j < len; j++) {
        s->i_ids[*T] = ids[j];
        s->i_pos[*T] = S - len + j;
        s->i_seg[(*T)++] = seg;
    }
    s->i_ids[*T] = -1;
    s->i_pos[*T] = S;
    s->i_seg[*T] = seg;
    memcpy(s->i_inj + (size_t)seg * Hi, slot, sizeof(float) * (size_t)Hi);
    s->i_rows[seg] = (*T)++;
}

/* Forward of items and users for rows: fills s->e (the history items' vectors, then with ads
 * each row's ad title vector, for L_cls), s->u (and the tmodels' activations). */
static int embed_forward(hc_ctrain *tr, const hc_ctrain_row *rows, int n, int ads, hc_errbuf *eb) {
    hc_ctrain_scratch *s = tr->s;
    hc_creator *c = tr->c;
    const int Hi = c->d_item, Hu = c->d_user, L = c->pkg.max_history, S = c->pkg.max_item_tokens;
    const int Lp = c->n_user_prompt;
    int Ni = 0, Ti = 0;
    for (int r = 0; r < n; r++) {
        Ni += rows[r].n_items;
        for (int i = 0; i < rows[r].n_items; i++)
            Ti += rows[r].item_lens[i] + 1;
        if (ads) Ti += rows[r].n_ad + 1;
    }
    const int Ne = Ni + (ads ? n : 0); /* item segments */
    const int Tu = Ni + n * (Lp + 1);
    int rc, k_ = 0;
    G(i_ids, Ti, int32_t);
    G(i_pos, Ti, int32_t);
    G(i_seg, Ti, int32_t);
    G(i_rows, Ne, int32_t);
    G(i_inj, (size_t)Ne * Hi, float);
    G(e, (size_t)Ne * Hi, float);
    G(de, (size_t)Ne * Hi, float);
    G(dh_i, (size_t)Ti * Hi, float);
    G(dinj_i, (size_t)Ne * Hi, float);
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
    /* items: one segment per history title, then (ads) one per row's ad title */
    int T = 0, seg = 0;
    for (int r = 0; r < n; r++) {
        const int32_t *ids = rows[r].item_ids;
        for (int i = 0; i < rows[r].n_items; i++) {
            item_segment(s, ids, rows[r].item_lens[i], S, &T, seg++, item_slot, Hi);
            ids += rows[r].item_lens[i];
        }
    }
    for (int r = 0; ads && r < n; r++)
        item_segment(s, rows[r].ad_ids, rows[r].n_ad, S, &T, seg++, item_slot, Hi);
    if (Ne > 0) {
        hc_tbatch b = {T, s->i_ids, s->i_pos, s->i_seg, Ne, s->i_rows, s->i_inj};
        if ((rc = hc_tmodel_forward(tr->item, &b, eb))) return rc;
        const float *h = hc_tmodel_hidden(tr->item);
        for (int i = 0; i < Ne; i++)
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
    if (!rc) rc = embed_forward(tr, rows, n, 0, eb);
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
    hc_ctrain_weights w = {1, 0, 0, 0};
    hc_ctrain_losses l;
    int rc = hc_ctrain_step(tr, rows, n, &w, scale, backward, &l, eb);
    *loss = l.creative;
    *n_tokens = l.n_creative;
    return rc;
}

static int check_heads(const hc_ctrain *tr, const hc_ctrain_row *rows, int n,
                       const hc_ctrain_weights *w, hc_errbuf *eb) {
    if (!(w->creative >= 0 && w->recon >= 0 && w->align >= 0 && w->cls >= 0))
        return hc_seterr(eb, HC_ERR_INVAL, "loss weights must be >= 0");
    if ((w->align > 0 || w->cls > 0) && n < 2)
        return hc_seterr(eb, HC_ERR_INVAL,
                         "the align and cls losses take their negatives from "
                         "the other rows of the micro-batch: a batch of at least 2 rows is needed");
    if (w->recon > 0 && !tr->profile_prompt)
        return hc_seterr(eb, HC_ERR_INVAL,
                         "the package has no profile_prompt template: the recon "
                         "loss cannot be computed (set its weight to 0)");
    const int Vi = tr->c->item->cfg.vocab_size, Vc = tr->c->creative->cfg.vocab_size;
    for (int r = 0; r < n; r++) {
        if (w->cls > 0) {
            if (rows[r].n_ad < 0 || rows[r].n_ad > tr->c->pkg.max_item_tokens ||
                (rows[r].n_ad && !rows[r].ad_ids))
                return hc_seterr(eb, HC_ERR_RANGE,
                                 "row %d: the ad title has %d tokens, outside "
                                 "0..max_item_tokens (%d)",
                                 r, rows[r].n_ad, tr->c->pkg.max_item_tokens);
            for (int j = 0; j < rows[r].n_ad; j++)
                if (rows[r].ad_ids[j] < 0 || rows[r].ad_ids[j] >= Vi)
                    return hc_seterr(eb, HC_ERR_RANGE,
                                     "row %d: ad title id %d outside the item "
                                     "vocabulary",
                                     r, rows[r].ad_ids[j]);
        }
        if (w->recon > 0 || w->align > 0) {
            if (rows[r].n_profile < 0 || (rows[r].n_profile && !rows[r].profile_ids))
                return hc_seterr(eb, HC_ERR_INVAL, "row %d: no profile ids", r);
            for (int j = 0; j < rows[r].n_profile; j++)
                if (rows[r].profile_ids[j] < 0 || rows[r].profile_ids[j] >= Vc)
                    return hc_seterr(eb, HC_ERR_RANGE,
                                     "row %d: profile id %d outside the "
                                     "creative vocabulary",
                                     r, rows[r].profile_ids[j]);
        }
    }
    return HC_OK;
}

/* Appends a row's message to a head's error. */
static int head_err(hc_errbuf *eb, int rc, const char *head) {
    char msg[sizeof eb->msg];
    snprintf(msg, sizeof msg, "%s", eb->msg);
    return hc_seterr(eb, rc, "%s loss: %s", head, msg);
}

int hc_ctrain_step(hc_ctrain *tr, const hc_ctrain_row *rows, int n, const hc_ctrain_weights *w,
                   float scale, int backward, hc_ctrain_losses *out, hc_errbuf *eb) {
    memset(out, 0, sizeof *out);
    int rc = check_rows(tr, rows, n, eb);
    if (!rc) rc = check_heads(tr, rows, n, w, eb);
    if (rc) return rc;
    const int ads = w->cls > 0;
    if ((rc = embed_forward(tr, rows, n, ads, eb))) return rc;
    hc_ctrain_scratch *s = tr->s;
    hc_creator *c = tr->c;
    const hc_train_ops *ops = tr->creative->ops;
    const int Hi = c->d_item, Hu = c->d_user, Hc = c->d_creative, P1 = c->n_prompt1;
    int Ni = 0;
    for (int r = 0; r < n; r++)
        Ni += rows[r].n_items;
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
    const int k_neg = w->cls > 0 ? hc_cls_num_negatives(n, tr->cls_neg_num) : 0;
    G(neg, (size_t)n * (size_t)(k_neg > 0 ? k_neg : 1), int32_t);
    G(prof_lens, n, int32_t);
    G(prof_ids, 1, int32_t);
    const float *Wp = tr->t.w + tr->t.params[tr->p_proj].offset;
    ops->matmul_fwd(s->U, s->u, Wp, NULL, n, Hu, Hc);
    if (backward) {
        memset(s->dU, 0, sizeof(float) * (size_t)n * (size_t)Hc);
        memset(s->du, 0, sizeof(float) * (size_t)n * (size_t)Hu);
        memset(s->de, 0, sizeof(float) * (size_t)(Ni + (ads ? n : 0)) * (size_t)Hi);
    }
    /* L_creative: prompt1, slot(U), prompt2, response, eos */
    if (w->creative > 0) {
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
        out->n_creative = labelled;
        if (backward) memset(s->dh_c, 0, sizeof(float) * (size_t)T * (size_t)Hc);
        out->creative = hc_tmodel_lm_loss(tr->creative, s->c_lab, w->creative * scale,
                                          backward ? s->dh_c : NULL);
        if (isnan(out->creative))
            return hc_seterr(eb, HC_ERR_INVAL, "creative loss: no lm_head or bad label");
        if (backward && (rc = hc_tmodel_backward(tr->creative, s->dh_c, s->dU, eb))) return rc;
    }
    /* L_cls on the projected U and the ad vectors (negatives from the other rows) */
    if (ads) {
        const int k = k_neg;
        if ((rc = hc_cls_pick_negatives(&tr->cls_rng, n, k, s->neg, eb)) ||
            (rc = hc_cls_loss(&tr->t, ops, s->U, s->e + (size_t)Ni * Hi, n, s->neg, k,
                              w->cls * scale, backward, backward ? s->dU : NULL,
                              backward ? s->de + (size_t)Ni * Hi : NULL, &out->cls, eb)))
            return head_err(eb, rc, "cls");
    }
    /* U = u Wp^T: du and dWp */
    if (backward)
        ops->matmul_bwd(s->du, tr->t.g + tr->t.params[tr->p_proj].offset, NULL, s->dU, s->u, Wp, n,
                        Hu, Hc);
    /* L_recon and L_align on the unprojected u, through the decoder (= the creative LLM) */
    if (w->recon > 0 || w->align > 0) {
        int tot = 0;
        for (int r = 0; r < n; r++)
            tot += rows[r].n_profile;
        if ((rc = grow((void **)&s->prof_ids, &s->cap[k_ - 1], (size_t)(tot ? tot : 1),
                       sizeof(int32_t))))
            goto oom;
        tot = 0;
        for (int r = 0; r < n; r++) {
            s->prof_lens[r] = rows[r].n_profile;
            if (rows[r].n_profile)
                memcpy(s->prof_ids + tot, rows[r].profile_ids,
                       sizeof(int32_t) * (size_t)rows[r].n_profile);
            tot += rows[r].n_profile;
        }
        hc_tok_rows prof = {n, s->prof_lens, s->prof_ids};
        if (w->recon > 0 &&
            (rc = hc_recon_loss(&tr->t, tr->creative, s->u, n, tr->profile_prompt,
                                tr->n_profile_prompt, &prof, tr->eos, tr->max_profile,
                                w->recon * scale, backward, backward ? s->du : NULL, &out->recon,
                                &out->n_recon, eb)))
            return head_err(eb, rc, "recon");
        if (w->align > 0 && (rc = hc_align_loss(&tr->t, tr->creative, s->u, n, &prof,
                                                tr->max_profile, w->align * scale, backward,
                                                backward ? s->du : NULL, &out->align, eb)))
            return head_err(eb, rc, "align");
    }
    out->total = w->creative * out->creative + w->recon * out->recon + w->align * out->align +
                 w->cls * out->cls;
    if (!backward) return HC_OK;
    /* the user LLM: d(hidden) only at the [user] slots */
    const int Tu = hc_tmodel_rows(tr->user);
    memset(s->dh_u, 0, sizeof(float) * (size_t)Tu * (size_t)Hu);
    for (int r = 0; r < n; r++)
        memcpy(s->dh_u + (size_t)s->u_out[r] * Hu, s->du + (size_t)r * Hu,
               sizeof(float) * (size_t)Hu);
    memset(s->dinj_u, 0, sizeof(float) * (size_t)(Ni + n) * (size_t)Hu);
    if ((rc = hc_tmodel_backward(tr->user, s->dh_u, s->dinj_u, eb))) return rc;
    /* injected rows in order: each row's items, then its [user] slot */
    float *g_uslot = tr->t.g + tr->t.params[tr->p_user_slot].offset;
    int inj = 0, item = 0;
    for (int r = 0; r < n; r++) {
        for (int j = 0; j < rows[r].n_items; j++, inj++, item++)
            for (int d = 0; d < Hi; d++)
                s->de[(size_t)item * Hi + d] += s->dinj_u[(size_t)inj * Hu + d];
        for (int d = 0; d < Hu; d++)
            g_uslot[d] += s->dinj_u[(size_t)inj * Hu + d];
        inj++;
    }
    const int Ne = Ni + (ads ? n : 0);
    if (Ne > 0) {
        /* the item LLM: d(hidden) at each [item] slot; the slot vector's gradient sums over items
         */
        const int Ti = hc_tmodel_rows(tr->item);
        memset(s->dh_i, 0, sizeof(float) * (size_t)Ti * (size_t)Hi);
        for (int i = 0; i < Ne; i++)
            memcpy(s->dh_i + (size_t)s->i_rows[i] * Hi, s->de + (size_t)i * Hi,
                   sizeof(float) * (size_t)Hi);
        memset(s->dinj_i, 0, sizeof(float) * (size_t)Ne * (size_t)Hi);
        if ((rc = hc_tmodel_backward(tr->item, s->dh_i, s->dinj_i, eb))) return rc;
        float *g_islot = tr->t.g + tr->t.params[tr->p_item_slot].offset;
        for (int i = 0; i < Ne; i++)
            for (int d = 0; d < Hi; d++)
                g_islot[d] += s->dinj_i[(size_t)i * Hi + d];
    }
    return HC_OK;
oom:
    return hc_seterr(eb, HC_ERR_NOMEM, "out of memory (micro-batch of %d rows)", n);
}

int hc_ctrain_nextitem(hc_ctrain *tr, const hc_ctrain_row *rows, int n, float scale, int backward,
                       double *loss, int *n_pairs, hc_errbuf *eb) {
    *loss = 0;
    *n_pairs = 0;
    int rc = check_rows(tr, rows, n, eb);
    if (rc) return rc;
    hc_ctrain_scratch *s = tr->s;
    hc_creator *c = tr->c;
    const hc_train_ops *ops = tr->user->ops;
    const int Hi = c->d_item, Hu = c->d_user, S_item = c->pkg.max_item_tokens;
    int Ni = 0, Ti = 0, S = 0, Tu = 0;
    for (int r = 0; r < n; r++) {
        if (rows[r].n_items < 2)
            return hc_seterr(eb, HC_ERR_INVAL,
                             "row %d: %d history items; the next-item loss "
                             "needs at least 2",
                             r, rows[r].n_items);
        Ni += rows[r].n_items;
        Tu += rows[r].n_items - 1;
        if (rows[r].n_items - 1 > S) S = rows[r].n_items - 1;
        for (int i = 0; i < rows[r].n_items; i++)
            Ti += rows[r].item_lens[i] + 1;
    }
    int k_ = 0;
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
    G(u_rows, Tu, int32_t);
    k_++; /* u_out unused */
    G(u_inj, (size_t)Tu * Hu, float);
    k_ += 2; /* u, du unused */
    G(dh_u, (size_t)Tu * Hu, float);
    G(dinj_u, (size_t)Tu * Hu, float);
    k_ = 30;
    G(ni_o, (size_t)n * S * Hu, float);
    G(ni_e, (size_t)n * (S + 1) * Hi, float);
    G(ni_do, (size_t)n * S * Hu, float);
    G(ni_de, (size_t)n * (S + 1) * Hi, float);
    G(ni_mask, (size_t)n * S, uint8_t);
    const float *item_slot = tr->t.w + tr->t.params[tr->p_item_slot].offset;
    /* item LLM over every item of every row */
    int T = 0, seg = 0;
    for (int r = 0; r < n; r++) {
        const int32_t *ids = rows[r].item_ids;
        for (int i = 0; i < rows[r].n_items; i++) {
            item_segment(s, ids, rows[r].item_lens[i], S_item, &T, seg++, item_slot, Hi);
            ids += rows[r].item_lens[i];
        }
    }
    hc_tbatch bi = {T, s->i_ids, s->i_pos, s->i_seg, Ni, s->i_rows, s->i_inj};
    if ((rc = hc_tmodel_forward(tr->item, &bi, eb))) return rc;
    const float *hi = hc_tmodel_hidden(tr->item);
    for (int i = 0; i < Ni; i++)
        memcpy(s->e + (size_t)i * Hi, hi + (size_t)s->i_rows[i] * Hi, sizeof(float) * (size_t)Hi);
    /* user LLM over the first m - 1 item vectors of each row (no prompt, no slot; positions 0..) */
    T = 0;
    int item = 0;
    for (int r = 0; r < n; r++) {
        for (int j = 0; j < rows[r].n_items; j++, item++) {
            if (j == rows[r].n_items - 1) continue; /* the last item is only a target */
            s->u_ids[T] = -1;
            s->u_pos[T] = j;
            s->u_seg[T] = r;
            memcpy(s->u_inj + (size_t)T * Hu, s->e + (size_t)item * Hi, sizeof(float) * (size_t)Hu);
            s->u_rows[T] = T;
            T++;
        }
    }
    hc_tbatch bu = {T, s->u_ids, s->u_pos, s->u_seg, T, s->u_rows, s->u_inj};
    if ((rc = hc_tmodel_forward(tr->user, &bu, eb))) return rc;
    const float *hu = hc_tmodel_hidden(tr->user);
    /* the head's layout: o (n, S), e (n, S + 1), left-aligned, mask on the real positions */
    memset(s->ni_o, 0, sizeof(float) * (size_t)n * S * Hu);
    memset(s->ni_e, 0, sizeof(float) * (size_t)n * (S + 1) * Hi);
    memset(s->ni_mask, 0, (size_t)n * S);
    T = 0;
    item = 0;
    for (int r = 0; r < n; r++) {
        const int m = rows[r].n_items;
        for (int j = 0; j < m; j++, item++) {
            memcpy(s->ni_e + ((size_t)r * (S + 1) + j) * Hi, s->e + (size_t)item * Hi,
                   sizeof(float) * (size_t)Hi);
            if (j < m - 1) {
                memcpy(s->ni_o + ((size_t)r * S + j) * Hu, hu + (size_t)T++ * Hu,
                       sizeof(float) * (size_t)Hu);
                s->ni_mask[(size_t)r * S + j] = 1;
            }
        }
    }
    if (backward) {
        memset(s->ni_do, 0, sizeof(float) * (size_t)n * S * Hu);
        memset(s->ni_de, 0, sizeof(float) * (size_t)n * (S + 1) * Hi);
        memset(s->de, 0, sizeof(float) * (size_t)Ni * Hi);
    }
    /* negatives: every item vector of the micro-batch (the 0.99 rule masks each target itself and
     * duplicates of it; the reference samples random catalog items and all-gathers them) */
    if ((rc = hc_nextitem_loss(&tr->t, ops, s->ni_o, s->ni_e, s->ni_mask, n, S, Hu, s->e, Ni, scale,
                               backward, backward ? s->ni_do : NULL, backward ? s->ni_de : NULL,
                               backward ? s->de : NULL, loss, n_pairs, eb)))
        return head_err(eb, rc, "next-item");
    if (!backward) return HC_OK;
    /* the user LLM: d(hidden) at every input row */
    T = 0;
    for (int r = 0; r < n; r++)
        for (int j = 0; j < rows[r].n_items - 1; j++)
            memcpy(s->dh_u + (size_t)T++ * Hu, s->ni_do + ((size_t)r * S + j) * Hu,
                   sizeof(float) * (size_t)Hu);
    memset(s->dinj_u, 0, sizeof(float) * (size_t)T * (size_t)Hu);
    if ((rc = hc_tmodel_backward(tr->user, s->dh_u, s->dinj_u, eb))) return rc;
    /* each item's gradient: as a user-LLM input, as a target, as a negative (already in de) */
    T = 0;
    item = 0;
    for (int r = 0; r < n; r++) {
        const int m = rows[r].n_items;
        for (int j = 0; j < m; j++, item++) {
            float *d = s->de + (size_t)item * Hi;
            const float *dt = s->ni_de + ((size_t)r * (S + 1) + j) * Hi;
            for (int k = 0; k < Hi; k++)
                d[k] += dt[k];
            if (j < m - 1) {
                const float *dinp = s->dinj_u + (size_t)T++ * Hu;
                for (int k = 0; k < Hi; k++)
                    d[k] += dinp[k];
            }
        }
    }
    const int Ti2 = hc_tmodel_rows(tr->item);
    memset(s->dh_i, 0, sizeof(float) * (size_t)Ti2 * (size_t)Hi);
    for (int i = 0; i < Ni; i++)
        memcpy(s->dh_i + (size_t)s->i_rows[i] * Hi, s->de + (size_t)i * Hi,
               sizeof(float) * (size_t)Hi);
    memset(s->dinj_i, 0, sizeof(float) * (size_t)Ni * (size_t)Hi);
    if ((rc = hc_tmodel_backward(tr->item, s->dh_i, s->dinj_i, eb))) return rc;
    float *g_islot = tr->t.g + tr->t.params[tr->p_item_slot].offset;
    for (int i = 0; i < Ni; i++)
        for (int d = 0; d < Hi; d++)
            g_islot[d] += s->dinj_i[(size_t)i * Hi + d];
    return HC_OK;
oom:
    return hc_seterr(eb, HC_ERR_NOMEM, "out of memory (micro-batch of %d rows)", n);
}

int hc_ctrain_save_weights(const hc_ctrain *tr, const char *path, hc_dtype dtype, hc_errbuf *eb) {
    const hc_ptab *t = &tr->t;
    hc_st_write_item *items = calloc((size_t)(t->n + tr->n_keep), sizeof *items);
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
    for (int i = 0; !rc && i < tr->n_keep; i++) { /* the untouched LLM tensors, as they were */
        const hc_ctrain_keep *k = &tr->keep[i];
        hc_st_write_item *it = &items[t->n + i];
        it->name = k->name;
        it->dtype = k->dtype;
        it->n_dims = k->n_dims;
        for (int d = 0; d < k->n_dims; d++)
            it->shape[d] = k->shape[d];
        it->data = k->data;
    }
    if (rc)
        hc_seterr(eb, rc, "out of memory writing %s", path);
    else
        rc = hc_st_write(path, items, (size_t)(t->n + tr->n_keep), eb);
    for (int i = 0; bufs && i < t->n; i++)
        free(bufs[i]);
    free(bufs);
    free(items);
    return rc;
}
