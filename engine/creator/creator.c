/* creator.c: loading a model package and running MODEL_SPEC §3–§5 (see creator.h). */
#include "creator/creator.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

#include "creator/creator_internal.h"
#include "creator/creator_sched.h"
#include "creator/match_head.h"
#include "core/fileio.h"
#include "io/hfconfig.h"
#include "io/safetensors.h"
#include "io/weights.h"

/* ---- loading ----------------------------------------------------------------------------------- */

/* A small F32 vector tensor from the checkpoint, any of the allowed shapes (e.g. (1,1,H) or (H)). */
static int load_vector(const hc_safetensors *st, const char *name, int dim, float **out,
                       hc_errbuf *eb) {
    const hc_st_tensor *t = hc_st_find(st, name);
    if (!t) return hc_seterr(eb, HC_ERR_NOTFOUND, "package weights lack tensor '%s'", name);
    int64_t ne = 1;
    for (int i = 0; i < t->n_dims; i++) ne *= t->shape[i];
    if (ne != dim || t->dtype == HC_DTYPE_I32)
        return hc_seterr(eb, HC_ERR_MISMATCH, "tensor '%s' has %lld elements of %s, expected %d "
                                              "floats", name, (long long)ne,
                         hc_dtype_name(t->dtype), dim);
    *out = malloc(sizeof(float) * (size_t)dim);
    if (!*out) return hc_seterr(eb, HC_ERR_NOMEM, "tensor '%s': out of memory", name);
    return hc_tensor_read_converted(*out, HC_DTYPE_F32, (size_t)dim, t, eb);
}

static int encode_text(const hc_tokenizer *tok, hc_tok_ctx *ctx, const char *text, size_t len,
                       int32_t **ids, int *n, hc_errbuf *eb) {
    size_t nn = 0;
    int rc = hc_tokenizer_encode(tok, ctx, text, len, 0, ids, &nn, eb);
    *n = (int)nn;
    return rc;
}

/* Puts "<what>: " before the message in eb (what failed: "item tokenizer", ...). */
static int prefix_err(hc_errbuf *eb, int rc, const char *what) {
    if (!eb) return rc;
    char msg[sizeof eb->msg];
    snprintf(msg, sizeof msg, "%s", eb->msg[0] ? eb->msg : hc_strerror(rc));
    return hc_seterr(eb, rc, "%s: %s", what, msg);
}

static int load_tokenizer(hc_creator *c, const char *dir, const char *what, hc_tokenizer **tok,
                          hc_tok_ctx **ctx, hc_errbuf *eb) {
    int rc = hc_tokenizer_load_in(tok, dir, c->pkg.root, eb);
    if (rc) return prefix_err(eb, rc, what);
    if (!(*ctx = hc_tok_ctx_new(*tok)))
        return hc_seterr(eb, HC_ERR_NOMEM, "%s: out of memory", what);
    return HC_OK;
}

static int load_llm(hc_creator *c, const char *cfg_dir, const hc_safetensors *st,
                    const char *prefix, const hc_creator_params *p, int need_logits,
                    hc_llm **out, hc_errbuf *eb) {
    hc_llm_config cfg;
    int rc = hc_hfconfig_load_in(&cfg, cfg_dir, c->pkg.root, eb);
    if (rc) return rc;
    hc_llm_params lp = hc_llm_default_params();
    lp.weight_dtype = p->weight_dtype;
    lp.skip_lm_head = !need_logits; /* the item and user lm_heads are never used (§1.1) */
    return hc_llm_load_from(out, c->be, &cfg, st, prefix, &lp, eb);
}

/* The package's identity as loaded (hc_creator.digest): the manifest, then every tensor. */
static int digest_package(XXH3_state_t *dg, const hc_creator *c, const hc_safetensors *st,
                          hc_errbuf *eb) {
    XXH3_64bits_reset(dg);
    char path[4096];
    snprintf(path, sizeof path, "%s/creator.json", c->pkg.dir);
    char *man = NULL;
    size_t len = 0;
    int rc = hc_read_file_in(path, c->pkg.root, (size_t)64 << 20, &man, &len, eb);
    if (rc) return rc;
    XXH3_64bits_update(dg, man, len);
    free(man);
    for (size_t i = 0, n = hc_st_count(st); i < n; i++) {
        const hc_st_tensor *t = hc_st_get(st, i);
        int32_t meta[2 + HC_MAX_DIMS] = {(int32_t)t->dtype, t->n_dims};
        for (int d = 0; d < t->n_dims; d++) meta[2 + d] = (int32_t)t->shape[d];
        XXH3_64bits_update(dg, t->name, strlen(t->name) + 1);
        XXH3_64bits_update(dg, meta, sizeof meta);
        if (t->nbytes) XXH3_64bits_update(dg, t->data, t->nbytes);
    }
    return HC_OK;
}

int hc_creator_load(hc_creator **out, hc_backend *be, const char *pkg_dir,
                    const hc_creator_params *params, hc_errbuf *eb) {
    *out = NULL;
    if (eb) eb->msg[0] = 0; /* whatever fails below says so itself; nothing stale survives */
    hc_creator_params defp = hc_creator_default_params();
    const hc_creator_params *p = params ? params : &defp;
    hc_creator *c = calloc(1, sizeof *c);
    if (!c) return hc_seterr(eb, HC_ERR_NOMEM, "%s: out of memory", pkg_dir);
    c->be = be;
    c->max_batch_tokens = p->max_batch_tokens > 0 ? p->max_batch_tokens : 8192;
    hc_safetensors *st = NULL;
    XXH3_state_t *dg = NULL;
    hc_package_params pp = {.allow_outside_paths = p->allow_outside_paths};
    int rc = hc_package_load_ex(&c->pkg, pkg_dir, &pp, eb);
    if (rc) goto fail;
    if ((rc = hc_st_open_in(&st, c->pkg.weights, c->pkg.root, eb))) goto fail;
    if (!(dg = XXH3_createState())) {
        rc = hc_seterr(eb, HC_ERR_NOMEM, "%s: out of memory", pkg_dir);
        goto fail;
    }
    if ((rc = digest_package(dg, c, st, eb))) goto fail;
    if ((rc = load_llm(c, c->pkg.item_llm_dir, st, "item_llm.", p, 0, &c->item, eb))) goto fail;
    if ((rc = load_llm(c, c->pkg.user_llm_dir, st, "user_llm.", p, 0, &c->user, eb))) goto fail;
    c->d_item = c->item->cfg.hidden_size;
    c->d_user = c->user->cfg.hidden_size;
    if (c->d_item != c->d_user) {
        rc = hc_seterr(eb, HC_ERR_MISMATCH, "item LLM hidden size %d differs from user LLM hidden "
                                            "size %d (item vectors are user-LLM inputs)",
                       c->d_item, c->d_user);
        goto fail;
    }
    hc_llm_config ccfg;
    if ((rc = hc_hfconfig_load_in(&ccfg, c->pkg.creative_llm_dir, c->pkg.root, eb))) goto fail;
    c->d_creative = ccfg.hidden_size;
    if (p->load_creative &&
        (rc = load_llm(c, c->pkg.creative_llm_dir, st, "creative_llm.", p, 1, &c->creative, eb)))
        goto fail;
    if ((rc = load_vector(st, "item_emb_tokens", c->d_item, &c->item_slot, eb)) ||
        (rc = load_vector(st, "emb_tokens", c->d_user, &c->user_slot, eb)))
        goto fail;
    {
        const hc_st_tensor *t = hc_st_find(st, "user_projector.weight");
        if (!t) {
            rc = hc_seterr(eb, HC_ERR_NOTFOUND, "package weights lack tensor "
                                                "'user_projector.weight'");
            goto fail;
        }
        if (t->n_dims != 2 || t->shape[0] != c->d_creative || t->shape[1] != c->d_user ||
            t->dtype == HC_DTYPE_I32) {
            rc = hc_seterr(eb, HC_ERR_MISMATCH, "tensor 'user_projector.weight' must be (%d, %d) "
                                                "floats (creative hidden, user hidden)",
                           c->d_creative, c->d_user);
            goto fail;
        }
        int64_t shape[2] = {c->d_creative, c->d_user};
        if ((rc = hc_tensor_load_converted(&c->projector, be, t, p->weight_dtype, 2, shape, eb)))
            goto fail;
    }
    /* the match head (pruning, MODEL_SPEC §7): optional; its sizes come from its tensors */
    if ((rc = hc_match_head_load(&c->match, st, c->d_creative, c->d_item, eb))) goto fail;
    hc_st_close(st);
    st = NULL;

    if ((rc = load_tokenizer(c, c->pkg.item_tokenizer_dir, "item tokenizer", &c->item_tok,
                             &c->item_ctx, eb)))
        goto fail;
    if ((rc = encode_text(c->item_tok, c->item_ctx, c->pkg.user_prompt, strlen(c->pkg.user_prompt),
                          &c->user_prompt_ids, &c->n_user_prompt, eb)))
        goto fail;
    if (p->load_creative) {
        if ((rc = load_tokenizer(c, c->pkg.creative_tokenizer_dir, "creative tokenizer",
                                 &c->creative_tok, &c->creative_ctx, eb)))
            goto fail;
        if ((rc = encode_text(c->creative_tok, c->creative_ctx, c->pkg.prompt1,
                              strlen(c->pkg.prompt1), &c->prompt1_ids, &c->n_prompt1, eb)))
            goto fail;
        if (c->pkg.slot_token_id >= c->creative->cfg.vocab_size) {
            rc = hc_seterr(eb, HC_ERR_RANGE, "creator.json: slot_token_id %d outside the creative "
                                             "vocabulary", c->pkg.slot_token_id);
            goto fail;
        }
        if (c->pkg.n_eos) {
            memcpy(c->eos, c->pkg.eos_ids, sizeof(int32_t) * (size_t)c->pkg.n_eos);
            c->n_eos = c->pkg.n_eos;
        } else {
            size_t n = 0;
            const int32_t *e = hc_tokenizer_eos_ids(c->creative_tok, &n);
            for (size_t i = 0; i < n && c->n_eos < (int)(sizeof c->eos / sizeof c->eos[0]); i++)
                c->eos[c->n_eos++] = e[i];
        }
    }
    for (int i = 0; i < c->n_user_prompt; i++)
        if (c->user_prompt_ids[i] >= c->user->cfg.vocab_size) {
            rc = hc_seterr(eb, HC_ERR_RANGE, "the item tokenizer produces id %d, outside the user "
                                             "LLM's vocabulary of %d", c->user_prompt_ids[i],
                           c->user->cfg.vocab_size);
            goto fail;
        }
    if (c->pkg.slot_token_id >= c->item->cfg.vocab_size ||
        c->pkg.slot_token_id >= c->user->cfg.vocab_size) {
        rc = hc_seterr(eb, HC_ERR_RANGE, "creator.json: slot_token_id %d outside the item or user "
                                         "LLM's vocabulary", c->pkg.slot_token_id);
        goto fail;
    }
    if (c->pkg.centroids) {
        float *cent = NULL;
        int k = 0, d = 0;
        if ((rc = hc_centroids_load_in(&cent, &k, &d, c->pkg.centroids, c->pkg.root, eb)))
            goto fail;
        if (d != c->d_creative) {
            free(cent);
            rc = hc_seterr(eb, HC_ERR_MISMATCH, "%s: centroids have dimension %d, the projected "
                                                "user vector has %d", c->pkg.centroids, d,
                           c->d_creative);
            goto fail;
        }
        XXH3_64bits_update(dg, cent, sizeof(float) * (size_t)k * (size_t)d);
        rc = hc_cluster_index_init(&c->clusters, cent, k, d, c->pkg.assign,
                                   p->n_threads > 0 ? p->n_threads : be->n_threads, eb);
        free(cent);
        if (rc) goto fail;
    }
    const int max_ids = c->pkg.max_item_tokens > 0 ? c->pkg.max_item_tokens : 1;
    size_t entries = p->item_cache_entries;
    if (p->item_cache_bytes) {
        entries = p->item_cache_bytes / hc_item_cache_entry_bytes(c->d_item, max_ids);
        if (entries > (size_t)INT32_MAX / 2) entries = (size_t)INT32_MAX / 2;
    }
    if ((rc = hc_item_cache_create(&c->cache, entries, c->d_item, max_ids))) {
        hc_seterr(eb, rc, "item-embedding cache of %zu entries: %s", entries, hc_strerror(rc));
        goto fail;
    }
    c->digest = XXH3_64bits_digest(dg);
    XXH3_freeState(dg);
    *out = c;
    return HC_OK;
fail:
    if (eb && !eb->msg[0]) hc_seterr(eb, rc, "loading %s: %s", pkg_dir, hc_strerror(rc));
    XXH3_freeState(dg);
    hc_st_close(st);
    hc_creator_free(c);
    return rc;
}

void hc_creator_free(hc_creator *c) {
    if (!c) return;
    hc_csched_free(c->sched);
    hc_llm_free(c->item);
    hc_llm_free(c->user);
    hc_llm_free(c->creative);
    hc_tok_ctx_free(c->item_ctx);
    hc_tok_ctx_free(c->creative_ctx);
    hc_tokenizer_free(c->item_tok);
    hc_tokenizer_free(c->creative_tok);
    hc_tensor_release(&c->projector);
    hc_cluster_index_free(c->clusters);
    hc_match_head_free(c->match);
    hc_item_cache_free(c->cache);
    free(c->item_slot);
    free(c->user_slot);
    free(c->user_prompt_ids);
    free(c->prompt1_ids);
    hc_package_free(&c->pkg);
    free(c);
}

/* ---- item embeddings ---------------------------------------------------------------------------- */

typedef hc_item_key item_key;

static int tokenize_title_ctx(const hc_creator *c, hc_tok_ctx *ctx, const char *title, size_t len,
                              item_key *k, hc_errbuf *eb) {
    int rc = encode_text(c->item_tok, ctx, title, len, &k->ids, &k->n, eb);
    if (rc) return rc;
    if (k->n > c->pkg.max_item_tokens) k->n = c->pkg.max_item_tokens;
    for (int i = 0; i < k->n; i++)
        if (k->ids[i] >= c->item->cfg.vocab_size)
            return hc_seterr(eb, HC_ERR_RANGE, "item tokenizer id %d outside the item LLM's "
                                               "vocabulary", k->ids[i]);
    return HC_OK;
}

static int tokenize_title(hc_creator *c, const char *title, size_t len, item_key *k,
                          hc_errbuf *eb) {
    return tokenize_title_ctx(c, c->item_ctx, title, len, k, eb);
}

static uint64_t key_hash(const item_key *k) {
    uint64_t h = 0x9e3779b97f4a7c15ULL ^ (uint64_t)k->n;
    for (int i = 0; i < k->n; i++) h = (h ^ (uint32_t)k->ids[i]) * 0x100000001b3ULL;
    return h;
}
static int key_eq(const item_key *a, const item_key *b) {
    return a->n == b->n && (a->n == 0 || !memcmp(a->ids, b->ids, sizeof(int32_t) * (size_t)a->n));
}

static int scratch_max_tok(const hc_creator *c) {
    int t = c->max_batch_tokens;
    if (t < c->pkg.max_item_tokens + 1) t = c->pkg.max_item_tokens + 1;
    if (t < c->pkg.max_history + c->n_user_prompt + 1) t = c->pkg.max_history + c->n_user_prompt + 1;
    return t;
}

void hc_creator_scratch_free(hc_creator_scratch *s) {
    if (!s) return;
    free(s->src);
    free(s->todo);
    free(s->table);
    free(s->tok);
    free(s->pos);
    free(s->seg);
    free(s->outi);
    free(s->inj_idx);
    free(s->slots);
    free(s->hid);
    free(s->inj);
    free(s->u);
    hc_tensor_release(&s->tu);
    hc_tensor_release(&s->tU);
    memset(s, 0, sizeof *s);
}

int hc_creator_scratch_init(hc_creator_scratch *s, hc_creator *c, int max_items, int max_users,
                            hc_errbuf *eb) {
    memset(s, 0, sizeof *s);
    const size_t Hi = (size_t)c->d_item, Hu = (size_t)c->d_user;
    s->max_items = max_items;
    s->max_users = max_users;
    s->max_tok = scratch_max_tok(c);
    const size_t T = (size_t)s->max_tok, I = (size_t)(max_items > 0 ? max_items : 1),
                 U = (size_t)(max_users > 0 ? max_users : 1);
    s->table_size = 16;
    while (s->table_size < I * 2) s->table_size <<= 1;
    s->src = malloc(sizeof(int) * I);
    s->todo = malloc(sizeof(int) * I);
    s->table = malloc(sizeof(int) * s->table_size);
    s->tok = malloc(sizeof(int32_t) * T);
    s->pos = malloc(sizeof(int32_t) * T);
    s->seg = malloc(sizeof(int32_t) * T);
    s->outi = malloc(sizeof(int32_t) * (T > U ? T : U));
    s->inj_idx = malloc(sizeof(int32_t) * T);
    int ok = s->src && s->todo && s->table && s->tok && s->pos && s->seg && s->outi && s->inj_idx;
    if (ok && max_items > 0) {
        /* every item segment injects the [item] slot vector: the rows are filled once */
        s->slots = malloc(sizeof(float) * Hi * T);
        s->hid = malloc(sizeof(float) * Hi * T);
        ok = s->slots && s->hid;
        for (size_t i = 0; ok && i < T; i++) memcpy(s->slots + i * Hi, c->item_slot, sizeof(float) * Hi);
    }
    if (ok && max_users > 0) {
        s->inj = malloc(sizeof(float) * Hu * T);
        s->u = malloc(sizeof(float) * Hu * U);
        ok = s->inj && s->u;
        int64_t su[2] = {max_users, (int64_t)Hu}, sU[2] = {max_users, c->d_creative};
        if (ok && (hc_tensor_alloc(&s->tu, c->be, HC_DTYPE_F32, 2, su) ||
                   hc_tensor_alloc(&s->tU, c->be, HC_DTYPE_F32, 2, sU)))
            ok = 0;
    }
    if (!ok) {
        hc_creator_scratch_free(s);
        return hc_seterr(eb, HC_ERR_NOMEM, "out of memory for the embedding scratch (%d items, "
                                           "%d users)", max_items, max_users);
    }
    return HC_OK;
}

int hc_creator_encode_items_(hc_creator *c, const hc_item_key *items, int n, float *out,
                             hc_creator_scratch *scr, hc_errbuf *eb) {
    hc_creator_scratch tmp;
    int rc;
    if (!scr || scr->max_items < n) {
        if ((rc = hc_creator_scratch_init(&tmp, c, n, 0, eb))) return rc;
        rc = hc_creator_encode_items_(c, items, n, out, &tmp, eb);
        hc_creator_scratch_free(&tmp);
        return rc;
    }
    const int H = c->d_item, slot_pos = c->pkg.max_item_tokens, max_tok = scr->max_tok;
    const size_t nb = scr->table_size;
    int *src = scr->src, *table = scr->table, *todo = scr->todo; /* src: -1 cached, else the
                                                                    first occurrence */
    int32_t *tok = scr->tok, *pos = scr->pos, *seg = scr->seg, *outi = scr->outi;
    float *hid = scr->hid;
    rc = HC_OK;
    for (size_t i = 0; i < nb; i++) table[i] = -1;
    int n_todo = 0;
    for (int i = 0; i < n; i++) {
        c->stats.items_seen++;
        const float *v = hc_item_cache_get(c->cache, items[i].ids, items[i].n);
        if (v) {
            memcpy(out + (size_t)i * H, v, sizeof(float) * (size_t)H);
            src[i] = -1;
            continue;
        }
        size_t h = key_hash(&items[i]) & (nb - 1);
        while (table[h] >= 0 && !key_eq(&items[table[h]], &items[i])) h = (h + 1) & (nb - 1);
        if (table[h] < 0) {
            table[h] = i;
            todo[n_todo++] = i;
        }
        src[i] = table[h];
    }
    for (int a = 0; a < n_todo;) {
        int T = 0, n_items = 0;
        while (a + n_items < n_todo && T + items[todo[a + n_items]].n + 1 <= max_tok) {
            const item_key *k = &items[todo[a + n_items]];
            for (int j = 0; j < k->n; j++) {
                tok[T] = k->ids[j];
                pos[T] = slot_pos - k->n + j;
                seg[T++] = n_items;
            }
            tok[T] = c->pkg.slot_token_id;
            pos[T] = slot_pos;
            seg[T] = n_items;
            outi[n_items++] = T++;
        }
        hc_batch b = {.n_tokens = T, .token = tok, .n_inject = n_items, .inject_idx = outi,
                      .inject = scr->slots, .pos = pos, .seg = seg, .n_out = n_items,
                      .out_idx = outi};
        if ((rc = hc_llm_forward(c->item, &b, NULL, NULL, hid, NULL, eb))) return rc;
        for (int j = 0; j < n_items; j++) {
            int i = todo[a + j];
            memcpy(out + (size_t)i * H, hid + (size_t)j * H, sizeof(float) * (size_t)H);
            if ((rc = hc_item_cache_put(c->cache, items[i].ids, items[i].n, hid + (size_t)j * H)))
                return rc;
        }
        c->stats.items_encoded += (uint64_t)n_items;
        a += n_items;
    }
    for (int i = 0; i < n; i++)
        if (src[i] >= 0 && src[i] != i)
            memcpy(out + (size_t)i * H, out + (size_t)src[i] * H, sizeof(float) * (size_t)H);
    return HC_OK;
}

int hc_creator_embed_items(hc_creator *c, const char *const *titles, const size_t *lens, int n,
                           float *out, hc_errbuf *eb) {
    item_key *keys = calloc((size_t)(n ? n : 1), sizeof *keys);
    if (!keys) return HC_ERR_NOMEM;
    int rc = HC_OK;
    for (int i = 0; i < n && rc == HC_OK; i++) rc = tokenize_title(c, titles[i], lens[i], &keys[i], eb);
    if (rc == HC_OK) rc = hc_creator_encode_items_(c, keys, n, out, NULL, eb);
    for (int i = 0; i < n; i++) free(keys[i].ids);
    free(keys);
    return rc;
}

/* ---- user embeddings ---------------------------------------------------------------------------- */

int hc_creator_user_forward_(hc_creator *c, const float *vec, const int *n_keep, int n_users,
                             float *u_out, float *U_out, hc_creator_scratch *scr, hc_errbuf *eb) {
    hc_creator_scratch tmp;
    int rc;
    if (!scr || scr->max_users < n_users) {
        if ((rc = hc_creator_scratch_init(&tmp, c, 0, n_users, eb))) return rc;
        rc = hc_creator_user_forward_(c, vec, n_keep, n_users, u_out, U_out, &tmp, eb);
        hc_creator_scratch_free(&tmp);
        return rc;
    }
    const int H = c->d_user, L = c->pkg.max_history, Lp = c->n_user_prompt, max_tok = scr->max_tok;
    float *u = scr->u, *inj = scr->inj;
    int32_t *tok = scr->tok, *pos = scr->pos, *seg = scr->seg, *inj_idx = scr->inj_idx,
            *outi = scr->outi;
    /* one segment per user, packed */
    int first_item = 0;
    for (int a = 0; a < n_users;) {
        int T = 0, n_inj = 0, nu = 0;
        for (; a + nu < n_users; nu++) {
            int keep = n_keep[a + nu], n_pad = L - keep;
            if (T + keep + Lp + 1 > max_tok) break;
            for (int j = 0; j < keep; j++) {
                tok[T] = c->pkg.slot_token_id;
                pos[T] = n_pad + j;
                seg[T] = nu;
                inj_idx[n_inj] = T++;
                memcpy(inj + (size_t)n_inj++ * H, vec + (size_t)(first_item + j) * H,
                       sizeof(float) * (size_t)H);
            }
            for (int j = 0; j < Lp; j++) {
                tok[T] = c->user_prompt_ids[j];
                pos[T] = L + j;
                seg[T++] = nu;
            }
            tok[T] = c->pkg.slot_token_id;
            pos[T] = L + Lp;
            seg[T] = nu;
            inj_idx[n_inj] = T;
            memcpy(inj + (size_t)n_inj++ * H, c->user_slot, sizeof(float) * (size_t)H);
            outi[nu] = T++;
            first_item += keep;
        }
        hc_batch b = {.n_tokens = T, .token = tok, .n_inject = n_inj, .inject_idx = inj_idx,
                      .inject = inj, .pos = pos, .seg = seg, .n_out = nu, .out_idx = outi};
        if ((rc = hc_llm_forward(c->user, &b, NULL, NULL, u + (size_t)a * H, NULL, eb))) return rc;
        a += nu;
    }
    c->stats.users_embedded += (uint64_t)n_users;
    if (u_out) memcpy(u_out, u, sizeof(float) * (size_t)H * (size_t)n_users);
    /* U = W_up u on the backend, in the first n_users rows of the scratch tensors */
    if (U_out && n_users > 0) {
        hc_backend *be = c->be;
        hc_tensor tu = scr->tu, tU = scr->tU;
        tu.ne[0] = n_users;
        tU.ne[0] = n_users;
        if ((rc = be->iface->upload(be, tu.data, u, hc_tensor_nbytes(&tu))) ||
            (rc = be->iface->matmul(be, &tU, &tu, &c->projector)) ||
            (rc = be->iface->download(be, U_out, tU.data, hc_tensor_nbytes(&tU))))
            return hc_seterr(eb, rc, "user projector on the %s backend: %s", be->iface->name,
                             hc_strerror(rc));
    }
    return HC_OK;
}

int hc_creator_embed_users(hc_creator *c, const hc_history *users, int n_users, float *u_out,
                           float *U_out, hc_errbuf *eb) {
    const int H = c->d_item, L = c->pkg.max_history;
    int total = 0;
    for (int i = 0; i < n_users; i++) {
        if (users[i].n < 0 || (users[i].n > 0 && (!users[i].titles || !users[i].lens)))
            return hc_seterr(eb, HC_ERR_INVAL, "user %d: bad history", i);
        total += users[i].n < L ? users[i].n : L;
    }
    int rc = HC_OK;
    item_key *keys = calloc((size_t)(total ? total : 1), sizeof *keys);
    float *vec = malloc(sizeof(float) * (size_t)H * (size_t)(total ? total : 1));
    int *n_keep = malloc(sizeof(int) * (size_t)(n_users ? n_users : 1));
    if (!keys || !vec || !n_keep) {
        rc = HC_ERR_NOMEM;
        goto done;
    }
    /* item vectors of every kept title (the last L of each history), then the user LLM */
    int k = 0;
    for (int i = 0; i < n_users && rc == HC_OK; i++) {
        int keep = users[i].n < L ? users[i].n : L, start = users[i].n - keep;
        n_keep[i] = keep;
        for (int j = 0; j < keep && rc == HC_OK; j++, k++)
            rc = tokenize_title(c, users[i].titles[start + j], users[i].lens[start + j], &keys[k], eb);
    }
    if (rc || (rc = hc_creator_encode_items_(c, keys, total, vec, NULL, eb))) goto done;
    rc = hc_creator_user_forward_(c, vec, n_keep, n_users, u_out, U_out, NULL, eb);
done:
    if (keys)
        for (int i = 0; i < total; i++) free(keys[i].ids);
    free(keys);
    free(vec);
    free(n_keep);
    return rc;
}

int hc_creator_assign(hc_creator *c, const float *U, int n, int32_t *ids, float *scores,
                      hc_errbuf *eb) {
    if (!c->clusters)
        return hc_seterr(eb, HC_ERR_NOTFOUND, "the model package has no cluster centroids "
                                              "(creator.json cluster.centroids)");
    return hc_cluster_assign(c->clusters, U, n, ids, scores, eb);
}

/* ---- titles -------------------------------------------------------------------------------------- */

int hc_creator_prompt(hc_creator *c, const char *title, size_t title_len, const char *desc,
                      size_t desc_len, int32_t **ids, int *n, int *slot_pos, hc_errbuf *eb) {
    *ids = NULL;
    if (!c->creative) return hc_seterr(eb, HC_ERR_INVAL, "the creative LLM is not loaded");
    size_t plen;
    char *p2 = hc_package_render_prompt2(&c->pkg, title, title_len, desc, desc_len, &plen);
    if (!p2) return HC_ERR_NOMEM;
    int32_t *p2ids = NULL;
    int n2 = 0;
    int rc = encode_text(c->creative_tok, c->creative_ctx, p2, plen, &p2ids, &n2, eb);
    free(p2);
    if (rc) return rc;
    int total = c->n_prompt1 + 1 + n2;
    if (total > c->pkg.max_prompt_tokens) {
        free(p2ids);
        return hc_seterr(eb, HC_ERR_RANGE, "the creative prompt has %d tokens, more than "
                                           "max_prompt_tokens (%d)", total,
                         c->pkg.max_prompt_tokens);
    }
    int32_t *all = malloc(sizeof(int32_t) * (size_t)total);
    if (!all) {
        free(p2ids);
        return HC_ERR_NOMEM;
    }
    if (c->n_prompt1) memcpy(all, c->prompt1_ids, sizeof(int32_t) * (size_t)c->n_prompt1);
    all[c->n_prompt1] = c->pkg.slot_token_id;
    if (n2) memcpy(all + c->n_prompt1 + 1, p2ids, sizeof(int32_t) * (size_t)n2);
    free(p2ids);
    for (int i = 0; i < total; i++)
        if (all[i] >= c->creative->cfg.vocab_size) {
            int bad = all[i];
            free(all);
            return hc_seterr(eb, HC_ERR_RANGE, "creative tokenizer id %d outside the creative "
                                               "LLM's vocabulary", bad);
        }
    *ids = all;
    *n = total;
    *slot_pos = c->n_prompt1;
    return HC_OK;
}

void hc_title_request_clear(hc_title_request *r) {
    free(r->ids);
    free(r->text);
    r->ids = NULL;
    r->text = NULL;
    r->text_len = 0;
    r->n_ids = 0;
}

void hc_creq_buf_free(hc_creq_buf *buf) {
    if (!buf) return;
    free(buf->item_lens);
    free(buf->item_ids);
    free(buf->prompt2);
    free(buf->pre_U);
    memset(buf, 0, sizeof *buf);
}

int hc_creator_tokenize_request(const hc_creator *c, hc_tok_ctx *item_ctx, hc_tok_ctx *creative_ctx,
                                const hc_history *h, const char *ad_title, size_t ad_title_len,
                                const char *ad_desc, size_t ad_desc_len, hc_creq *r,
                                hc_creq_buf *buf, hc_errbuf *eb) {
    memset(buf, 0, sizeof *buf);
    r->n_items = 0;
    r->item_lens = r->item_ids = r->prompt2 = NULL;
    r->n_prompt2 = 0;
    if (!h || h->n < 0 || (h->n > 0 && (!h->titles || !h->lens)))
        return hc_seterr(eb, HC_ERR_INVAL, "bad history");
    const int L = c->pkg.max_history, keep = h->n < L ? h->n : L, start = h->n - keep;
    int rc = HC_OK;
    size_t cap = 0, used = 0;
    buf->item_lens = malloc(sizeof(int32_t) * (size_t)(keep ? keep : 1));
    if (!buf->item_lens) return hc_seterr(eb, HC_ERR_NOMEM, "out of memory");
    for (int j = 0; j < keep && rc == HC_OK; j++) {
        item_key k = {0};
        rc = tokenize_title_ctx(c, item_ctx, h->titles[start + j], h->lens[start + j], &k, eb);
        if (rc == HC_OK && used + (size_t)k.n > cap) {
            size_t nc = cap ? cap * 2 : 256;
            while (nc < used + (size_t)k.n) nc *= 2;
            int32_t *p = realloc(buf->item_ids, sizeof(int32_t) * nc);
            if (!p) rc = hc_seterr(eb, HC_ERR_NOMEM, "out of memory");
            else {
                buf->item_ids = p;
                cap = nc;
            }
        }
        if (rc == HC_OK) {
            if (k.n) memcpy(buf->item_ids + used, k.ids, sizeof(int32_t) * (size_t)k.n);
            used += (size_t)k.n;
            buf->item_lens[j] = k.n;
        }
        free(k.ids);
    }
    if (rc == HC_OK && ad_title) {
        if (!c->creative) {
            rc = hc_seterr(eb, HC_ERR_INVAL, "the creative LLM is not loaded");
        } else {
            size_t plen;
            char *p2 = hc_package_render_prompt2(&c->pkg, ad_title, ad_title_len, ad_desc,
                                                 ad_desc_len, &plen);
            if (!p2) {
                rc = hc_seterr(eb, HC_ERR_NOMEM, "out of memory");
            } else {
                rc = encode_text(c->creative_tok, creative_ctx, p2, plen, &buf->prompt2,
                                 &r->n_prompt2, eb);
                free(p2);
            }
            for (int i = 0; rc == HC_OK && i < r->n_prompt2; i++)
                if (buf->prompt2[i] >= c->creative->cfg.vocab_size)
                    rc = hc_seterr(eb, HC_ERR_RANGE, "creative tokenizer id %d outside the "
                                   "creative LLM's vocabulary", buf->prompt2[i]);
            const int total = c->n_prompt1 + 1 + r->n_prompt2;
            if (rc == HC_OK && total > c->pkg.max_prompt_tokens)
                rc = hc_seterr(eb, HC_ERR_RANGE, "the creative prompt has %d tokens, more than "
                               "max_prompt_tokens (%d)", total, c->pkg.max_prompt_tokens);
        }
    }
    if (rc) {
        hc_creq_buf_free(buf);
        r->n_prompt2 = 0;
        return rc;
    }
    r->n_items = keep;
    r->item_lens = buf->item_lens;
    r->item_ids = buf->item_ids;
    r->prompt2 = buf->prompt2;
    return HC_OK;
}

typedef struct gen_ctx {
    hc_title_request *reqs;
    hc_gen_token_cb cb;
    void *user;
} gen_ctx;

static void req_fail(hc_title_request *r, int rc, const char *msg) {
    r->status = rc;
    snprintf(r->error, sizeof r->error, "%s", msg && *msg ? msg : hc_strerror(rc));
}

/* Events of the pipeline scheduler: request ids are indices into this call's reqs. */
static void gen_sink(void *user, const hc_cevent *ev) {
    gen_ctx *g = user;
    hc_title_request *r = &g->reqs[ev->id];
    switch (ev->kind) {
    case HC_CEV_EMBEDDED:
        r->cluster = ev->cluster;
        r->cluster_score = ev->cluster_score;
        break;
    case HC_CEV_TOKEN:
        r->ids[r->n_ids++] = ev->token;
        if (g->cb) g->cb(g->user, (int)ev->id, ev->token);
        break;
    case HC_CEV_FINISHED: r->finish = ev->finish; break;
    default: req_fail(r, ev->status, ev->message); break;
    }
}

int hc_creator_generate(hc_creator *c, hc_title_request *reqs, int n, hc_gen_token_cb cb,
                        void *user, hc_errbuf *eb) {
    if (!c->creative) return hc_seterr(eb, HC_ERR_INVAL, "the creative LLM is not loaded");
    if (n <= 0) return HC_OK;
    int rc = HC_OK;
    for (int i = 0; i < n; i++) {
        hc_title_request *r = &reqs[i];
        r->status = HC_OK;
        r->error[0] = 0;
        r->ids = NULL;
        r->text = NULL;
        r->text_len = 0;
        r->n_ids = 0;
        r->cluster = -1;
        r->cluster_score = 0;
        r->finish = HC_FINISH_NONE;
    }
    /* the scheduler is made on first use and kept: its KV pool holds the shared prefixes
     * (prompt1, prompt1 + slot per cluster) across calls */
    if (!c->sched && (rc = hc_csched_create(&c->sched, c, NULL, eb))) return rc;
    gen_ctx g = {reqs, cb, user};
    for (int i = 0; i < n && rc == HC_OK; i++) {
        hc_title_request *r = &reqs[i];
        if (r->max_new < 0) {
            req_fail(r, HC_ERR_INVAL, "max_new must be >= 0");
            continue;
        }
        hc_errbuf reb = {{0}};
        hc_creq q = {.id = (uint64_t)i, .mode = r->per_user ? HC_CREQ_PER_USER : HC_CREQ_CLUSTER,
                     .sampling = r->sampling, .max_new = r->max_new};
        hc_creq_buf buf;
        int qrc = hc_creator_tokenize_request(c, c->item_ctx, c->creative_ctx, &r->history,
                                              r->ad_title, r->ad_title_len, r->ad_desc,
                                              r->ad_desc_len, &q, &buf, &reb);
        if (qrc == HC_OK && !(r->ids = malloc(sizeof(int32_t) * (size_t)(r->max_new ? r->max_new : 1))))
            rc = HC_ERR_NOMEM;
        while (qrc == HC_OK && rc == HC_OK &&
               (qrc = hc_csched_submit(c->sched, &q, &reb)) == HC_ERR_AGAIN)
            rc = hc_csched_step(c->sched, gen_sink, &g, eb);
        hc_creq_buf_free(&buf);
        if (qrc && rc == HC_OK) {
            free(r->ids);
            r->ids = NULL;
            req_fail(r, qrc, reb.msg);
        }
    }
    while (rc == HC_OK && !hc_csched_idle(c->sched))
        rc = hc_csched_step(c->sched, gen_sink, &g, eb);
    for (int i = 0; i < n && rc == HC_OK; i++) {
        hc_title_request *r = &reqs[i];
        if (r->status) continue;
        rc = hc_tokenizer_decode(c->creative_tok, r->ids, (size_t)r->n_ids, 1, &r->text,
                                 &r->text_len, eb);
    }
    if (rc) {
        /* a failure of the whole call: nothing of it stays queued or running */
        hc_csched_free(c->sched);
        c->sched = NULL;
        for (int i = 0; i < n; i++) hc_title_request_clear(&reqs[i]);
    }
    return rc;
}
