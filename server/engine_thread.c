/* engine_thread.c: the engine thread (owns the hc_creator and the hc_csched) and the job/event
 * queues. */
#include "server.h"

#include <math.h>

#include "creator/creator_internal.h"
#include "creator/match_head.h"
#include "model/kv_cache.h"
#include "model/lm_sched.h"

void post_event(server *s, event *e) {
    e->t = now_ms();
    e->next = NULL;
    pthread_mutex_lock(&s->mu);
    if (s->evs_tail)
        s->evs_tail->next = e;
    else
        s->evs_head = e;
    s->evs_tail = e;
    pthread_mutex_unlock(&s->mu);
    uv_async_send(&s->async);
}

event *new_event(ev_kind k, uint64_t id) {
    event *e = calloc(1, sizeof *e);
    if (!e) abort();
    e->kind = k;
    e->id = id;
    return e;
}

void engine_sink(void *user, const hc_cevent *ev) {
    server *s = user;
    event *e;
    switch (ev->kind) {
    case HC_CEV_EMBEDDED:
        for (int i = 0; i < s->n_drop_emb; i++)
            if (s->drop_emb[i] == ev->id) { /* prune_job reported this user already */
                s->drop_emb[i] = s->drop_emb[--s->n_drop_emb];
                return;
            }
        e = new_event(EV_EMBEDDED, ev->id);
        e->cluster = ev->cluster;
        e->score = ev->cluster_score;
        if (ev->u && ev->U) {
            e->n_u = s->creator->d_user;
            e->n_U = s->creator->d_creative;
            e->u = malloc(sizeof(float) * (size_t)e->n_u);
            e->U = malloc(sizeof(float) * (size_t)e->n_U);
            if (!e->u || !e->U) abort();
            memcpy(e->u, ev->u, sizeof(float) * (size_t)e->n_u);
            memcpy(e->U, ev->U, sizeof(float) * (size_t)e->n_U);
        }
        break;
    case HC_CEV_TOKEN:
        s->step_tok_events++; /* one per request that generated a token in this step */
        e = new_event(EV_TOKEN, ev->id);
        e->token = ev->token;
        break;
    case HC_CEV_FINISHED:
        for (int i = 0; i < s->n_drop_emb; i++) /* ended before its embed stage (cancelled) */
            if (s->drop_emb[i] == ev->id) s->drop_emb[i] = s->drop_emb[--s->n_drop_emb];
        e = new_event(EV_FINISHED, ev->id);
        e->finish = ev->finish;
        break;
    default:
        e = new_event(EV_FAILED, ev->id);
        e->status = ev->status;
        snprintf(e->msg, sizeof e->msg, "%s", ev->message ? ev->message : hc_strerror(ev->status));
        break;
    }
    post_event(s, e);
}

int backend_kind(const char *b) {
    if (!strcmp(b, "cuda")) return HC_BACKEND_CUDA;
    if (!strcmp(b, "auto")) return HC_BACKEND_AUTO;
    return HC_BACKEND_CPU;
}

int load_model(server *s, hc_errbuf *eb) {
    hc_backend_params bp = hc_backend_default_params();
    bp.n_threads = s->cfg.threads;
    hc_compute cm;
    if (hc_compute_parse(s->cfg.compute, &cm))
        return hc_seterr(eb, HC_ERR_INVAL, "compute: '%s' is not f32 or bf16", s->cfg.compute);
    bp.compute = (int)cm;
    int rc = hc_backend_create_ex(&s->be, backend_kind(s->cfg.backend), &bp, eb);
    if (rc) return rc;
    rc = hc_package_probe(s->cfg.model, eb);
    if (rc == HC_ERR_NOTFOUND)
        return hc_seterr(eb, rc,
                         "%s is not a model package (no creator.json; see "
                         "proto/model-package.md)",
                         s->cfg.model);
    if (rc) return rc;
    hc_creator_params p = hc_creator_default_params();
    p.n_threads = s->cfg.threads;
    p.item_cache_entries = 0; /* item-cache-bytes 0: off */
    p.item_cache_bytes = (size_t)s->cfg.item_cache_bytes;
    rc = hc_creator_load(&s->creator, s->be, s->cfg.model, &p, eb);
    if (rc) return rc;
    if (!s->creator->creative)
        return hc_seterr(eb, HC_ERR_FORMAT, "the package has no creative LLM");
    hc_csched_params sp = hc_csched_default_params();
    sp.max_queued = s->cfg.max_queued;
    return hc_csched_create(&s->sched, s->creator, &sp, eb);
}

/* ---- pruning (MODEL_SPEC §7): the match head before generating ------------------------------ */

/* u, U, cluster and cluster score of j's user, embedded here (hc_csched has no stage that
 * stops between embedding and generating): the same item and user LLM passes as its embed
 * stage, one user. */
static int embed_now(server *s, const job *j, float *u, float *U, int32_t *cluster, float *cscore,
                     hc_errbuf *eb) {
    hc_creator *c = s->creator;
    const int n = j->req.n_items;
    hc_item_key *keys = calloc((size_t)(n ? n : 1), sizeof *keys);
    float *vec = malloc(sizeof(float) * (size_t)(n ? n : 1) * (size_t)c->d_item);
    int rc = keys && vec ? HC_OK : hc_seterr(eb, HC_ERR_NOMEM, "pruning: out of memory");
    const int32_t *p = j->req.item_ids;
    for (int i = 0; !rc && i < n; i++) {
        keys[i].ids = (int32_t *)p;
        keys[i].n = j->req.item_lens[i];
        p += keys[i].n;
    }
    if (!rc && n) rc = hc_creator_encode_items_(c, keys, n, vec, NULL, eb);
    if (!rc) rc = hc_creator_user_forward_(c, vec, &n, 1, u, U, NULL, eb);
    *cluster = -1;
    *cscore = 0.0f;
    if (!rc && c->clusters) rc = hc_creator_assign(c, U, 1, cluster, cscore, eb);
    free(keys);
    free(vec);
    return rc;
}

/* With pruning on and the match head, scores j's (centroid or U, ad) before it is submitted:
 * p = sigmoid(match logit), posted as EV_SCORED (status 1: pruned). Returns 1 when j is pruned
 * (not to be submitted), 0 to submit it (then it may carry the user it embedded as pre_U). */
static int prune_job(server *s, job *j) {
    hc_creator *c = s->creator;
    if (!j->ad_title || s->cfg.prune_threshold < 0 || !c->match || j->req.mode == HC_CREQ_EMBED)
        return 0;
    if (j->req.mode == HC_CREQ_CLUSTER && !c->clusters) return 0; /* submit refuses it */
    hc_errbuf eb = {{0}};
    const int Hc = c->d_creative;
    float *u = NULL, *U = NULL, *e_ad = malloc(sizeof(float) * (size_t)c->d_item);
    int32_t cluster = j->req.pre_cluster;
    float cscore = j->req.pre_score, logit = 0.0f;
    int rc = HC_OK, embedded = 0;
    const float *x = j->req.pre_U;
    if (!x) {
        u = malloc(sizeof(float) * (size_t)c->d_user);
        U = malloc(sizeof(float) * (size_t)Hc);
        rc = u && U ? embed_now(s, j, u, U, &cluster, &cscore, &eb) : HC_ERR_NOMEM;
        x = U;
        embedded = rc == HC_OK;
    }
    if (!rc && j->req.mode == HC_CREQ_CLUSTER) {
        if (cluster < 0 || cluster >= hc_cluster_index_k(c->clusters)) rc = HC_ERR_RANGE;
        else x = hc_cluster_index_centroids(c->clusters) + (size_t)cluster * (size_t)Hc;
    }
    const char *t = j->ad_title;
    if (!rc) rc = e_ad ? hc_creator_embed_items(c, &t, &j->ad_title_len, 1, e_ad, &eb) : HC_ERR_NOMEM;
    if (!rc) rc = hc_creator_match_scores(c, x, e_ad, 1, &logit, &eb);
    if (rc) { /* generate as without pruning; say why */
        event *e = new_event(EV_FAILED, 0);
        e->status = rc;
        snprintf(e->msg, sizeof e->msg, "request %" PRIu64 ": pruning skipped: %s", j->id,
                 eb.msg[0] ? eb.msg : hc_strerror(rc));
        post_event(s, e);
        free(u);
        free(U);
        free(e_ad);
        return 0;
    }
    const float p = 1.0f / (1.0f + expf(-logit));
    const int pruned = p < s->cfg.prune_threshold;
    if (embedded) {
        if (pruned) post_event(s, new_event(EV_ACCEPTED, j->id));
        event *e = new_event(EV_EMBEDDED, j->id); /* what the embed stage would have said */
        e->cluster = cluster;
        e->score = cscore;
        e->n_u = c->d_user;
        e->n_U = Hc;
        e->u = u;
        e->U = U;
        u = NULL;
        post_event(s, e);
        if (!pruned) { /* generate from this U: the scheduler's own EMBEDDED is dropped */
            j->buf.pre_U = xrealloc(j->buf.pre_U, sizeof(float) * (size_t)Hc);
            memcpy(j->buf.pre_U, U, sizeof(float) * (size_t)Hc);
            j->req.pre_U = j->buf.pre_U;
            j->req.pre_cluster = cluster;
            j->req.pre_score = cscore;
            if (s->n_drop_emb == s->cap_drop_emb) {
                s->cap_drop_emb = s->cap_drop_emb ? 2 * s->cap_drop_emb : 16;
                s->drop_emb = xrealloc(s->drop_emb, sizeof(uint64_t) * (size_t)s->cap_drop_emb);
            }
            s->drop_emb[s->n_drop_emb++] = j->id;
        }
        U = NULL; /* owned by the event */
    } else if (pruned) {
        post_event(s, new_event(EV_ACCEPTED, j->id));
    }
    event *e = new_event(EV_SCORED, j->id);
    e->score = p;
    e->status = pruned;
    e->cluster = cluster;
    post_event(s, e);
    free(u);
    free(U);
    free(e_ad);
    return pruned;
}

/* The scheduler's counters and the creative LLM's KV pool into s->snap (under mu); after a
 * step (st0: the counters before it, t0 its start) also its tokens, requests and time. */
static void snapshot(server *s, const hc_csched_stats *st0, double t0) {
    const hc_csched_stats st = hc_csched_get_stats(s->sched);
    hc_lm_sched *g = hc_csched_gen(s->sched);
    hc_kv_cache *kv = g ? hc_lm_sched_kv(g) : NULL;
    const double now = now_ms();
    pthread_mutex_lock(&s->mu);
    s->snap.queued = st.queued;
    s->snap.embedded_waiting = st.embedded_waiting;
    s->snap.generating = st.generating;
    s->snap.prefill_tokens = st.gen.prefill_tokens;
    s->snap.decode_tokens = st.gen.decode_tokens;
    s->snap.prefix_hits = st.gen.prefix_hits;
    s->snap.users_embedded = st.users_embedded;
    if (s->creator && s->creator->cache) {
        const hc_item_cache_stats ic = hc_item_cache_get_stats(s->creator->cache);
        s->item_cache.max_bytes = (size_t)s->cfg.item_cache_bytes;
        s->item_cache.bytes = ic.bytes;
        s->item_cache.entries = ic.size;
        s->item_cache.hits = ic.hits;
        s->item_cache.misses = ic.misses;
        s->item_cache.evictions = ic.evictions;
    }
    s->kv_blocks_total = kv ? kv->n_blocks : 0;
    s->kv_blocks_used = kv ? kv->n_blocks - hc_kv_n_free_blocks(kv) : 0;
    if (st0) {
        const uint64_t tok = (st.gen.prefill_tokens + st.gen.decode_tokens) -
                             (st0->gen.prefill_tokens + st0->gen.decode_tokens);
        hist_observe(&s->h_step_tokens, (double)tok);
        hist_observe(&s->h_step_reqs, (double)s->step_tok_events);
        hist_observe(&s->h_step_time, (now - t0) / 1000.0);
        s->eng_beat = now;
    }
    pthread_mutex_unlock(&s->mu);
}

void *engine_main(void *arg) {
    server *s = arg;
    hc_errbuf eb = {{0}};
    int rc = load_model(s, &eb);
    if (rc) {
        event *e = new_event(EV_LOAD_FAILED, 0);
        e->status = rc;
        snprintf(e->msg, sizeof e->msg, "%s", eb.msg[0] ? eb.msg : hc_strerror(rc));
        post_event(s, e);
    } else {
        snapshot(s, NULL, 0); /* the KV pool's size */
        post_event(s, new_event(EV_READY, 0));
    }
    pthread_mutex_lock(&s->mu);
    s->eng_loading = 0;
    s->eng_beat = now_ms();
    pthread_mutex_unlock(&s->mu);
    for (;;) {
        pthread_mutex_lock(&s->mu);
        /* waiting for work counts as alive for the watchdog (daemon.c: on_watchdog) */
        s->eng_idle = 1;
        while (!s->stop_engine && !s->jobs_head && (!s->sched || hc_csched_idle(s->sched)))
            pthread_cond_wait(&s->cv, &s->mu);
        s->eng_idle = 0;
        s->eng_beat = now_ms();
        job *j = s->jobs_head;
        const int had_jobs = j != NULL;
        s->jobs_head = s->jobs_tail = NULL;
        int stop = s->stop_engine;
        pthread_mutex_unlock(&s->mu);
        while (j) {
            job *nx = j->next;
            if (j->kind == JOB_CANCEL) {
                if (s->sched) hc_csched_cancel(s->sched, j->id);
            } else if (s->sched && prune_job(s, j)) {
                hc_creq_buf_free(&j->buf); /* answered with its original title */
            } else {
                hc_errbuf reb = {{0}};
                int src = s->sched ? hc_csched_submit(s->sched, &j->req, &reb) : HC_ERR_INVAL;
                for (int i = 0; src && i < s->n_drop_emb; i++) /* no EMBEDDED will come */
                    if (s->drop_emb[i] == j->id) s->drop_emb[i] = s->drop_emb[--s->n_drop_emb];
                event *e = new_event(src ? EV_REJECTED : EV_ACCEPTED, j->id);
                e->status = src;
                if (src)
                    snprintf(e->msg, sizeof e->msg, "%s", reb.msg[0] ? reb.msg : hc_strerror(src));
                post_event(s, e);
                hc_creq_buf_free(&j->buf);
            }
            free(j->ad_title);
            free(j);
            j = nx;
        }
        if (stop) break;
        if (s->sched && had_jobs) snapshot(s, NULL, 0); /* submissions show at once */
        if (s->sched && !hc_csched_idle(s->sched)) {
            const hc_csched_stats st0 = hc_csched_get_stats(s->sched);
            const double t0 = now_ms();
            s->step_tok_events = 0;
            hc_errbuf seb = {{0}};
            int src = hc_csched_step(s->sched, engine_sink, s, &seb);
            if (src) {
                event *e = new_event(EV_FAILED, 0);
                e->status = src;
                snprintf(e->msg, sizeof e->msg, "engine step: %s",
                         seb.msg[0] ? seb.msg : hc_strerror(src));
                post_event(s, e);
            }
            snapshot(s, &st0, t0);
        }
    }
    return NULL;
}

void push_job(server *s, job *j) {
    j->next = NULL;
    pthread_mutex_lock(&s->mu);
    if (s->jobs_tail)
        s->jobs_tail->next = j;
    else
        s->jobs_head = j;
    s->jobs_tail = j;
    pthread_cond_signal(&s->cv);
    pthread_mutex_unlock(&s->mu);
}

/* ---- HTTP helpers (loop thread) --------------------------------------------------------- */
