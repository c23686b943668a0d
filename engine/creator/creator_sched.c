/* creator_sched.c: the pipeline scheduler (see creator_sched.h for the contract). */
#include "creator/creator_sched.h"

#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "creator/creator_internal.h"
#include "creator/title_key.h"

/* A request between submit and its hand-over to the creative scheduler (or its end), in one
 * allocation: this struct, then U, item_lens, item_ids, the creative prompt and (generation
 * modes) room for the creative scheduler's copy, so the hand-over inside a step allocates
 * nothing: hc_lm_sched_submit_in takes the whole block, which lives until the title ends. */
typedef struct csreq {
    hc_creq r;       /* pointers into this allocation */
    int32_t *prompt; /* prompt1 + slot + prompt2 (generation modes) */
    int n_prompt, slot_pos;
    float *U; /* (H_c): filled by the embed stage */
    int32_t cluster;
    float pre_score; /* pre_U requests: the EMBEDDED event's score */
    int pre;         /* 1: U given at submit (no embed stage) */
    int cancelled;
    int32_t stop[HC_LM_MAX_STOP]; /* the package's end-of-sequence ids, then the request's */
    int n_stop;
    void *lm_mem; /* hc_lm_sched_req_bytes of room for the hand-over (generation modes) */
} csreq;

struct hc_csched {
    hc_creator *c;
    hc_csched_params p;
    hc_lm_sched *gen; /* NULL without a creative LLM */
    /* waiting for the embed stage: a ring of max_queued */
    csreq **queue;
    int q_head, q_len;
    /* embedded, waiting for room in the creative scheduler (at most max_embed) */
    csreq **ready;
    int n_ready;
    /* embed-stage scratch, sized from max_embed and max_history at create */
    hc_item_key *keys;
    float *vec, *u, *U, *score;
    int32_t *cl;
    int *n_keep;
    csreq **batch;
    csreq **skip;           /* (max_queued) generations the embed stage passed over, in order */
    csreq **pre;            /* (max_embed) requests with their own U taken by the embed stage */
    hc_creator_scratch scr; /* the item and user forwards' */
    int n_batch; /* requests of the embed stage whose EMBEDDED events are being delivered */
    /* stats */
    uint64_t steps, embed_passes, users_embedded, items_seen0, items_encoded0;
    /* the sink of the step in progress (for lm_sched's events) */
    hc_csink sink;
    void *sink_user;
};

hc_csched_params hc_csched_default_params(void) {
    hc_csched_params p;
    p.max_queued = 1024;
    p.max_embed = 64;
    p.embed_tokens = 8192;
    p.gen = hc_lm_sched_default_params();
    p.gen.max_running = 32;
    p.gen.max_queued = 256;
    p.gen.step_tokens = 2048;
    p.gen.prefill_chunk = 512;
    p.gen.max_prompt = 0; /* from the package */
    p.gen.max_new = 0;
    p.gen.max_inject = 0;
    p.gen.kv_blocks = 0;
    return p;
}

/* The creative scheduler's parameters: zeros filled from the package and the model. */
static hc_lm_sched_params gen_params(const hc_creator *c, hc_lm_sched_params p) {
    const hc_llm_config *cfg = &c->creative->cfg;
    if (p.max_prompt <= 0)
        p.max_prompt = c->pkg.max_prompt_tokens < cfg->max_position_embeddings
                           ? c->pkg.max_prompt_tokens
                           : cfg->max_position_embeddings;
    if (p.max_new <= 0) p.max_new = cfg->max_position_embeddings - 1;
    if (p.max_inject <= 0) p.max_inject = 1;
    if (p.kv_blocks <= 0) {
        /* 512 MiB of K/V at most, never more than max_running worst cases, at least one */
        const int64_t row_bytes = 2LL * cfg->n_layers * cfg->n_kv_heads * cfg->head_dim * 4;
        const int bs = p.block_size > 0 ? p.block_size : 16;
        const int64_t per_req = (p.max_prompt + 256 + bs - 1) / bs;
        int64_t nb = (512LL << 20) / (row_bytes * bs);
        if (nb > per_req * p.max_running) nb = per_req * p.max_running;
        if (nb < per_req) nb = per_req;
        p.kv_blocks = (int)(nb < (1 << 24) ? nb : (1 << 24));
    }
    return p;
}

int hc_csched_create(hc_csched **out, hc_creator *c, const hc_csched_params *params,
                     hc_errbuf *eb) {
    *out = NULL;
    hc_csched_params p = params ? *params : hc_csched_default_params();
    if (p.max_queued < 1 || p.max_embed < 1 || p.embed_tokens < 1)
        return hc_seterr(eb, HC_ERR_INVAL,
                         "scheduler: max_queued, max_embed and embed_tokens "
                         "must be >= 1");
    hc_csched *s = calloc(1, sizeof *s);
    if (!s) return HC_ERR_NOMEM;
    s->c = c;
    s->p = p;
    const size_t E = (size_t)p.max_embed, L = (size_t)c->pkg.max_history;
    s->queue = calloc((size_t)p.max_queued, sizeof *s->queue);
    s->ready = calloc(E, sizeof *s->ready);
    s->batch = calloc(E, sizeof *s->batch);
    s->pre = calloc(E, sizeof *s->pre);
    s->skip = calloc((size_t)p.max_queued, sizeof *s->skip);
    s->keys = calloc(E * (L ? L : 1), sizeof *s->keys);
    s->vec = malloc(sizeof(float) * E * (L ? L : 1) * (size_t)c->d_item);
    s->u = malloc(sizeof(float) * E * (size_t)c->d_user);
    s->U = malloc(sizeof(float) * E * (size_t)c->d_creative);
    s->score = malloc(sizeof(float) * E);
    s->cl = malloc(sizeof(int32_t) * E);
    s->n_keep = malloc(sizeof(int) * E);
    if (!s->queue || !s->ready || !s->batch || !s->pre || !s->skip || !s->keys || !s->vec ||
        !s->u || !s->U || !s->score || !s->cl || !s->n_keep) {
        hc_csched_free(s);
        return hc_seterr(eb, HC_ERR_NOMEM, "scheduler: out of memory");
    }
    int rc0 =
        hc_creator_scratch_init(&s->scr, c, p.max_embed * c->pkg.max_history, p.max_embed, eb);
    /* the item and user forwards of the embed stage never exceed the scratch's token bound: their
     * activations are allocated now, so no step grows them */
    const int T = s->scr.max_tok, max_items = p.max_embed * c->pkg.max_history;
    if (!rc0) rc0 = hc_llm_reserve(c->item, T, max_items < T ? max_items : T, NULL, eb);
    if (!rc0) rc0 = hc_llm_reserve(c->user, T, p.max_embed < T ? p.max_embed : T, NULL, eb);
    if (rc0) {
        hc_csched_free(s);
        return rc0;
    }
    if (c->creative) {
        s->p.gen = gen_params(c, p.gen);
        int rc = hc_lm_sched_create(&s->gen, c->creative, NULL, &s->p.gen, eb);
        if (rc) {
            hc_csched_free(s);
            return rc;
        }
    }
    s->items_seen0 = c->stats.items_seen;
    s->items_encoded0 = c->stats.items_encoded;
    *out = s;
    return HC_OK;
}

void hc_csched_free(hc_csched *s) {
    if (!s) return;
    for (int i = 0; s->queue && i < s->q_len; i++)
        free(s->queue[(s->q_head + i) % s->p.max_queued]);
    for (int i = 0; s->ready && i < s->n_ready; i++)
        free(s->ready[i]);
    hc_lm_sched_free(s->gen);
    hc_creator_scratch_free(&s->scr);
    free(s->queue);
    free(s->ready);
    free(s->batch);
    free(s->pre);
    free(s->skip);
    free(s->keys);
    free(s->vec);
    free(s->u);
    free(s->U);
    free(s->score);
    free(s->cl);
    free(s->n_keep);
    free(s);
}

static int item_total(const hc_creq *r) {
    int t = 0;
    for (int i = 0; i < r->n_items; i++)
        t += r->item_lens[i];
    return t;
}

int hc_csched_submit(hc_csched *s, const hc_creq *r, hc_errbuf *eb) {
    hc_creator *c = s->c;
    if (!r) return hc_seterr(eb, HC_ERR_INVAL, "no request");
    if (r->mode != HC_CREQ_CLUSTER && r->mode != HC_CREQ_PER_USER && r->mode != HC_CREQ_EMBED)
        return hc_seterr(eb, HC_ERR_INVAL, "unknown request mode %d", (int)r->mode);
    if (r->n_items < 0 || r->n_items > c->pkg.max_history)
        return hc_seterr(eb, HC_ERR_RANGE, "%d history items, at most max_history (%d)", r->n_items,
                         c->pkg.max_history);
    if (r->n_items && !r->item_lens) return hc_seterr(eb, HC_ERR_INVAL, "no item lengths");
    int n_ids = 0;
    for (int i = 0; i < r->n_items; i++) {
        if (r->item_lens[i] < 0 || r->item_lens[i] > c->pkg.max_item_tokens)
            return hc_seterr(eb, HC_ERR_RANGE,
                             "history item %d has %d tokens, outside "
                             "0..max_item_tokens (%d)",
                             i, r->item_lens[i], c->pkg.max_item_tokens);
        n_ids += r->item_lens[i];
    }
    if (n_ids && !r->item_ids) return hc_seterr(eb, HC_ERR_INVAL, "no item ids");
    for (int i = 0; i < n_ids; i++)
        if (r->item_ids[i] < 0 || r->item_ids[i] >= c->item->cfg.vocab_size)
            return hc_seterr(eb, HC_ERR_RANGE,
                             "item tokenizer id %d outside the item LLM's "
                             "vocabulary",
                             r->item_ids[i]);
    const int gen = r->mode != HC_CREQ_EMBED;
    int n_prompt = 0;
    if (r->pre_U && !gen)
        return hc_seterr(eb, HC_ERR_INVAL, "an embed-only request cannot bring its own U");
    if (r->pre_U && r->mode == HC_CREQ_CLUSTER &&
        (!c->clusters || r->pre_cluster < 0 || r->pre_cluster >= hc_cluster_index_k(c->clusters)))
        return hc_seterr(eb, HC_ERR_RANGE, "pre_cluster %d is not a cluster of the package",
                         (int)r->pre_cluster);
    if (gen) {
        if (!s->gen) return hc_seterr(eb, HC_ERR_INVAL, "the creative LLM is not loaded");
        if (r->mode == HC_CREQ_CLUSTER && !c->clusters)
            return hc_seterr(eb, HC_ERR_NOTFOUND,
                             "the model package has no cluster centroids; "
                             "use per-user mode");
        if (r->n_prompt2 < 0 || (r->n_prompt2 && !r->prompt2))
            return hc_seterr(eb, HC_ERR_INVAL, "bad prompt2");
        if (r->max_new < 0) return hc_seterr(eb, HC_ERR_INVAL, "max_new must be >= 0");
        if (r->n_stop < 0 || (r->n_stop && !r->stop) || r->n_stop > HC_LM_MAX_STOP - c->n_eos)
            return hc_seterr(eb, HC_ERR_RANGE,
                             "%d stop ids, at most %d beside the package's %d "
                             "end-of-sequence ids",
                             r->n_stop, HC_LM_MAX_STOP - c->n_eos, c->n_eos);
        for (int i = 0; i < r->n_stop; i++)
            if (r->stop[i] < 0 || r->stop[i] >= c->creative->cfg.vocab_size)
                return hc_seterr(eb, HC_ERR_RANGE,
                                 "stop id %d outside the creative LLM's "
                                 "vocabulary (0..%d)",
                                 r->stop[i], c->creative->cfg.vocab_size - 1);
        n_prompt = c->n_prompt1 + 1 + r->n_prompt2;
        if (n_prompt > c->pkg.max_prompt_tokens)
            return hc_seterr(eb, HC_ERR_RANGE,
                             "the creative prompt has %d tokens, more than "
                             "max_prompt_tokens (%d)",
                             n_prompt, c->pkg.max_prompt_tokens);
    }
    const size_t Hc = (size_t)c->d_creative, A = _Alignof(max_align_t);
    size_t bytes = sizeof(csreq) + sizeof(float) * Hc +
                   sizeof(int32_t) * ((size_t)r->n_items + (size_t)n_ids + (size_t)n_prompt);
    const size_t lm_off = (bytes + A - 1) / A * A;
    if (gen) bytes = lm_off + hc_lm_sched_req_bytes(s->gen, n_prompt, 1);
    csreq *q = malloc(bytes);
    if (!q) return hc_seterr(eb, HC_ERR_NOMEM, "out of memory");
    memset(q, 0, sizeof *q);
    q->r = *r;
    q->U = (float *)(q + 1);
    int32_t *lens = (int32_t *)(q->U + Hc), *ids = lens + r->n_items, *prompt = ids + n_ids;
    if (r->n_items) memcpy(lens, r->item_lens, sizeof(int32_t) * (size_t)r->n_items);
    if (n_ids) memcpy(ids, r->item_ids, sizeof(int32_t) * (size_t)n_ids);
    q->r.item_lens = lens;
    q->r.item_ids = ids;
    q->r.prompt2 = NULL;
    q->r.n_prompt2 = 0;
    q->r.stop = NULL;
    q->r.n_stop = 0;
    q->r.pre_U = NULL;
    q->cluster = -1;
    if (gen) {
        memcpy(q->stop, c->eos, sizeof(int32_t) * (size_t)c->n_eos);
        if (r->n_stop) memcpy(q->stop + c->n_eos, r->stop, sizeof(int32_t) * (size_t)r->n_stop);
        q->n_stop = c->n_eos + r->n_stop;
    }
    if (gen) {
        if (c->n_prompt1) memcpy(prompt, c->prompt1_ids, sizeof(int32_t) * (size_t)c->n_prompt1);
        prompt[c->n_prompt1] = c->pkg.slot_token_id;
        if (r->n_prompt2)
            memcpy(prompt + c->n_prompt1 + 1, r->prompt2, sizeof(int32_t) * (size_t)r->n_prompt2);
        q->prompt = prompt;
        q->n_prompt = n_prompt;
        q->lm_mem = (char *)q + lm_off;
        q->slot_pos = c->n_prompt1;
        if (r->pre_U) {
            memcpy(q->U, r->pre_U, sizeof(float) * Hc);
            q->pre = 1;
            q->cluster = r->mode == HC_CREQ_CLUSTER ? r->pre_cluster : -1;
            q->pre_score = r->pre_score;
        } else {
            memset(q->U, 0, sizeof(float) * Hc);
        }
        /* everything the creative scheduler will check, now, so a bad request never queues */
        hc_lm_req lr = {.id = r->id,
                        .prompt = prompt,
                        .n_prompt = n_prompt,
                        .n_inject = 1,
                        .inject_idx = &q->slot_pos,
                        .inject = q->U,
                        .sampling = r->sampling,
                        .max_new = r->max_new,
                        .stop = q->stop,
                        .n_stop = q->n_stop};
        int rc = hc_lm_sched_check(s->gen, &lr, eb);
        if (rc) {
            free(q);
            return rc;
        }
    }
    if (s->q_len == s->p.max_queued) {
        free(q);
        return HC_ERR_AGAIN;
    }
    s->queue[(s->q_head + s->q_len++) % s->p.max_queued] = q;
    return HC_OK;
}

int hc_csched_cancel(hc_csched *s, uint64_t id) {
    for (int i = 0; i < s->q_len; i++) {
        csreq *q = s->queue[(s->q_head + i) % s->p.max_queued];
        if (q->r.id == id && !q->cancelled) {
            q->cancelled = 1;
            return HC_OK;
        }
    }
    for (int i = 0; i < s->n_ready; i++)
        if (s->ready[i]->r.id == id && !s->ready[i]->cancelled) {
            s->ready[i]->cancelled = 1;
            return HC_OK;
        }
    for (int i = 0; i < s->n_batch; i++) /* from inside the sink, during the embed stage */
        if (s->batch[i] && s->batch[i]->r.id == id && !s->batch[i]->cancelled &&
            s->batch[i]->r.mode != HC_CREQ_EMBED) {
            s->batch[i]->cancelled = 1;
            return HC_OK;
        }
    return s->gen ? hc_lm_sched_cancel(s->gen, id) : HC_ERR_NOTFOUND;
}

static void emit_finished(hc_csched *s, uint64_t id, hc_finish f) {
    hc_cevent ev = {.kind = HC_CEV_FINISHED, .id = id, .finish = f, .cluster = -1};
    if (s->sink) s->sink(s->sink_user, &ev);
}

static void emit_failed(hc_csched *s, uint64_t id, int status, const char *msg) {
    hc_cevent ev = {.kind = HC_CEV_FAILED,
                    .id = id,
                    .status = status,
                    .cluster = -1,
                    .message = msg && *msg ? msg : hc_strerror(status)};
    if (s->sink) s->sink(s->sink_user, &ev);
}

/* lm_sched's events, passed on. */
static void gen_sink(void *user, const hc_lm_event *lev) {
    hc_csched *s = user;
    hc_cevent ev = {.id = lev->id, .cluster = -1};
    switch (lev->kind) {
    case HC_LM_EV_TOKEN:
        ev.kind = HC_CEV_TOKEN;
        ev.token = lev->token;
        ev.n_out = lev->n_out;
        break;
    case HC_LM_EV_FINISHED:
        ev.kind = HC_CEV_FINISHED;
        ev.finish = lev->finish;
        ev.n_out = lev->n_out;
        break;
    default:
        ev.kind = HC_CEV_FAILED;
        ev.status = lev->status;
        ev.message = lev->message;
        break;
    }
    if (s->sink) s->sink(s->sink_user, &ev);
}

/* 1. cancellations of requests the creative scheduler does not hold yet */
static void apply_cancels(hc_csched *s) {
    int kept = 0;
    const int Q = s->p.max_queued;
    for (int i = 0; i < s->q_len; i++) {
        csreq *q = s->queue[(s->q_head + i) % Q];
        if (q->cancelled) {
            emit_finished(s, q->r.id, HC_FINISH_CANCELLED);
            free(q);
        } else {
            s->queue[(s->q_head + kept++) % Q] = q;
        }
    }
    s->q_len = kept;
    kept = 0;
    for (int i = 0; i < s->n_ready; i++) {
        csreq *q = s->ready[i];
        if (q->cancelled) {
            emit_finished(s, q->r.id, HC_FINISH_CANCELLED);
            free(q);
        } else {
            s->ready[kept++] = q;
        }
    }
    s->n_ready = kept;
}

/* 3. embedded generations into the creative scheduler, oldest first, while it has room */
static void hand_over(hc_csched *s) {
    hc_creator *c = s->c;
    const float *cent = c->clusters ? hc_cluster_index_centroids(c->clusters) : NULL;
    int done = 0;
    for (; done < s->n_ready; done++) {
        csreq *q = s->ready[done];
        if (q->cancelled) { /* marked from inside a sink during this step's embed stage */
            emit_finished(s, q->r.id, HC_FINISH_CANCELLED);
            free(q);
            continue;
        }
        hc_lm_req lr = {.id = q->r.id,
                        .prompt = q->prompt,
                        .n_prompt = q->n_prompt,
                        .n_inject = 1,
                        .inject_idx = &q->slot_pos,
                        .inject = q->r.mode == HC_CREQ_PER_USER
                                      ? q->U
                                      : cent + (size_t)q->cluster * (size_t)c->d_creative,
                        .sampling = q->r.sampling,
                        .max_new = q->r.max_new,
                        .stop = q->stop,
                        .n_stop = q->n_stop};
        if (q->r.mode == HC_CREQ_CLUSTER && q->r.seed_by_cluster)
            lr.sampling.seed = hc_title_seed(q->r.sampling.seed, q->cluster, q->r.ad_hash);
        /* prompt1 (+ the slot holding cluster k's centroid) is the same for every request of
         * the package (of cluster k): computed once, its full KV blocks shared */
        if (q->r.mode == HC_CREQ_CLUSTER) {
            lr.prefix_key = 2 + (uint64_t)q->cluster;
            lr.prefix_len = c->n_prompt1 + 1;
        } else if (c->n_prompt1 > 0) {
            lr.prefix_key = 1;
            lr.prefix_len = c->n_prompt1;
        }
        hc_errbuf reb = {{0}};
        int rc = hc_lm_sched_submit_in(s->gen, &lr, q, q->lm_mem, &reb);
        if (rc == HC_ERR_AGAIN) break;
        if (rc) { /* checked at submit: not expected */
            emit_failed(s, q->r.id, rc, reb.msg);
            free(q);
        } /* else the creative scheduler owns q now */
    }
    memmove(s->ready, s->ready + done, sizeof *s->ready * (size_t)(s->n_ready - done));
    s->n_ready -= done;
}

/* 2. the embed stage over the oldest queued requests that fit the step */
static int embed_stage(hc_csched *s, hc_errbuf *eb) {
    hc_creator *c = s->c;
    const int Lp = c->n_user_prompt;
    int n = 0, tokens = 0, n_keys = 0, n_gen = 0, n_pre = 0;
    int gen_room = s->p.max_embed - s->n_ready;
    if (s->gen) {
        /* embed generations only as far ahead as the creative scheduler can run: with a backlog,
         * embedding everything first would delay every generation (and its first token) */
        hc_lm_sched_stats g = hc_lm_sched_get_stats(s->gen);
        int ahead = s->p.gen.max_running - (g.running + g.queued + s->n_ready);
        if (gen_room > ahead) gen_room = ahead;
    }
    /* oldest first; embed-only requests need no creative room, so they go past generations
     * that must wait (which keep their order at the head of the queue) */
    int scanned = 0, kept = 0;
    const int Q = s->p.max_queued;
    for (; scanned < s->q_len && n < s->p.max_embed; scanned++) {
        csreq *q = s->queue[(s->q_head + scanned) % Q];
        const int gen = q->r.mode != HC_CREQ_EMBED;
        int t = item_total(&q->r) + 2 * q->r.n_items + Lp + 1;
        if (n > 0 && tokens + t > s->p.embed_tokens) break;
        if (gen && n_gen >= gen_room) {
            s->skip[kept++] = q; /* stays queued */
            continue;
        }
        if (q->pre) { /* embedded before: straight to the creative stage, no compute */
            n_gen++;
            s->pre[n_pre++] = q;
            continue;
        }
        tokens += t;
        n_gen += gen;
        s->batch[n] = q;
        s->n_keep[n] = q->r.n_items;
        const int32_t *ids = q->r.item_ids;
        for (int j = 0; j < q->r.n_items; j++) {
            s->keys[n_keys].ids = (int32_t *)ids;
            s->keys[n_keys++].n = q->r.item_lens[j];
            ids += q->r.item_lens[j];
        }
        n++;
    }
    /* the skipped generations, in order, become the new head of the queue */
    for (int i = 0; i < kept; i++)
        s->queue[(s->q_head + n + n_pre + i) % Q] = s->skip[i];
    s->q_head = (s->q_head + n + n_pre) % s->p.max_queued;
    s->q_len -= n + n_pre;
    for (int i = 0; i < n_pre; i++) { /* n_gen <= gen_room keeps ready within max_embed */
        csreq *q = s->pre[i];
        s->ready[s->n_ready++] = q; /* there, cancellable from inside the sink */
        hc_cevent ev = {.kind = HC_CEV_EMBEDDED,
                        .id = q->r.id,
                        .u = NULL,
                        .U = q->U,
                        .cluster = q->cluster,
                        .cluster_score = q->pre_score};
        if (s->sink) s->sink(s->sink_user, &ev);
        if (q->cancelled) { /* still the last of ready: the sink can only mark it */
            s->n_ready--;
            emit_finished(s, q->r.id, HC_FINISH_CANCELLED);
            free(q);
        }
    }
    if (n == 0) return HC_OK;
    s->embed_passes++;
    int rc = hc_creator_encode_items_(c, s->keys, n_keys, s->vec, &s->scr, eb);
    if (!rc) rc = hc_creator_user_forward_(c, s->vec, s->n_keep, n, s->u, s->U, &s->scr, eb);
    if (!rc && c->clusters) rc = hc_cluster_assign(c->clusters, s->U, n, s->cl, s->score, eb);
    if (rc) {
        for (int i = 0; i < n; i++) {
            emit_failed(s, s->batch[i]->r.id, rc, eb ? eb->msg : NULL);
            free(s->batch[i]);
        }
        return rc;
    }
    s->users_embedded += (uint64_t)n;
    const size_t Hu = (size_t)c->d_user, Hc = (size_t)c->d_creative;
    s->n_batch = n;
    for (int i = 0; i < n; i++) {
        csreq *q = s->batch[i];
        q->cluster = c->clusters ? s->cl[i] : -1;
        memcpy(q->U, s->U + (size_t)i * Hc, sizeof(float) * Hc);
        hc_cevent ev = {.kind = HC_CEV_EMBEDDED,
                        .id = q->r.id,
                        .u = s->u + (size_t)i * Hu,
                        .U = q->U,
                        .cluster = q->cluster,
                        .cluster_score = c->clusters ? s->score[i] : 0.0f};
        if (s->sink) s->sink(s->sink_user, &ev);
        if (q->r.mode == HC_CREQ_EMBED) {
            emit_finished(s, q->r.id, HC_FINISH_EMBEDDED);
            free(q);
        } else if (q->cancelled) { /* cancelled from inside the sink */
            emit_finished(s, q->r.id, HC_FINISH_CANCELLED);
            free(q);
        } else {
            s->ready[s->n_ready++] = q;
        }
        s->batch[i] = NULL; /* owned elsewhere or freed: no longer cancellable through batch */
    }
    s->n_batch = 0;
    return HC_OK;
}

int hc_csched_step(hc_csched *s, hc_csink sink, void *user, hc_errbuf *eb) {
    s->sink = sink;
    s->sink_user = user;
    s->steps++;
    apply_cancels(s);
    if (s->gen) hand_over(s);
    int rc = embed_stage(s, eb);
    if (!rc && s->gen) {
        hand_over(s);
        if (!hc_lm_sched_idle(s->gen)) rc = hc_lm_sched_step(s->gen, gen_sink, s, eb);
    }
    s->sink = NULL;
    s->sink_user = NULL;
    return rc;
}

int hc_csched_idle(const hc_csched *s) {
    return s->q_len == 0 && s->n_ready == 0 && (!s->gen || hc_lm_sched_idle(s->gen));
}

hc_csched_stats hc_csched_get_stats(const hc_csched *s) {
    hc_csched_stats st;
    memset(&st, 0, sizeof st);
    st.steps = s->steps;
    st.embed_passes = s->embed_passes;
    st.users_embedded = s->users_embedded;
    st.items_seen = s->c->stats.items_seen - s->items_seen0;
    st.items_encoded = s->c->stats.items_encoded - s->items_encoded0;
    st.queued = s->q_len;
    st.embedded_waiting = s->n_ready;
    if (s->gen) {
        st.gen = hc_lm_sched_get_stats(s->gen);
        st.generating = st.gen.running + st.gen.queued;
    }
    return st;
}

hc_lm_sched *hc_csched_gen(hc_csched *s) {
    return s->gen;
}
