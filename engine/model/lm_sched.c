/* lm_sched.c: continuous batching over one LLM (see lm_sched.h for the contract).
 *
 * Jobs are the running entities: a request being prefilled or decoded, or the computation of a
 * shared prefix (which samples nothing and, once complete, leaves its sequence to the prefix
 * table). Every array a step touches is sized at creation; a step allocates nothing.
 */
#include "model/lm_sched.h"

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

const char *hc_finish_name(hc_finish f) {
    switch (f) {
    case HC_FINISH_STOP: return "stop";
    case HC_FINISH_LENGTH: return "length";
    case HC_FINISH_CANCELLED: return "cancelled";
    case HC_FINISH_EMBEDDED: return "embedded";
    default: return "none";
    }
}

/* A submitted request: one allocation holding the request and copies of its arrays. */
typedef struct lm_req {
    hc_lm_req r; /* pointers into this allocation */
    void *block; /* what to free when the request leaves: itself, or the block of submit_in */
    int cancelled;
    int32_t stop[HC_LM_MAX_STOP];
} lm_req;

typedef enum { J_FREE = 0, J_WAIT_PREFIX, J_PREFILL, J_DECODE } job_state;

typedef struct job {
    job_state state;
    int is_prefix;      /* computes prefix table entry `pfx` */
    int pfx;            /* prefix waited on or computed; -1 */
    lm_req *q;          /* the request (NULL for a prefix job) */
    const int32_t *ids, *pos; /* prompt being prefilled (request's or prefix's) */
    int n_prompt, n_inject;
    const int32_t *inj_idx;
    const float *inj;
    int seq;            /* KV handle */
    int n_done;         /* prompt tokens whose K/V are committed (forked ones included) */
    int n_out;          /* tokens generated */
    int32_t last;       /* last generated token */
    int32_t last_pos;   /* position of the last prompt token */
    int blocks;         /* KV blocks reserved for this job's worst case */
    uint64_t order;     /* admission order: older first */
} job;

typedef enum { P_EMPTY = 0, P_COMPUTING, P_READY } prefix_state;

typedef struct prefix {
    prefix_state state;
    uint64_t key;
    int len, seq, blocks, n_inject;
    uint64_t last_used;
    int32_t *ids, *pos, *inj_idx; /* preallocated: max_prompt, max_prompt, max_inject */
    float *inj;                   /* (max_inject, n_embd) */
} prefix;

struct hc_lm_sched {
    hc_llm *m;
    hc_kv_cache *kv;
    int own_kv;
    hc_lm_sched_params p;
    int V, E, max_pos;
    /* queue: ring of max_queued */
    lm_req **queue;
    int q_head, q_len;
    /* jobs */
    job *jobs;
    int n_jobs_cap, n_running; /* running = request jobs (not prefix jobs) */
    int *order_idx;            /* (n_jobs_cap) scratch */
    uint64_t next_order, clock;
    int blocks_reserved;
    prefix *pfx;
    /* batch buffers (step_tokens) */
    int32_t *tok, *pos, *seg, *out_idx, *inj_idx, *seq_ids;
    int *seg_job, *out_job;
    float *inj, *logits; /* (inj_cap, E), (out_cap, V) */
    int inj_cap, out_cap;
    int32_t *samp_idx;
    float *samp_val;
    int pending_cancel;
    hc_lm_sched_stats st;
};

static int blocks_for(const hc_lm_sched *s, int64_t n) {
    return (int)((n + s->kv->block_size - 1) / s->kv->block_size);
}

/* ---- create / free ---------------------------------------------------------------------------- */

void hc_lm_sched_free(hc_lm_sched *s) {
    if (!s) return;
    if (s->queue)
        for (int i = 0; i < s->q_len; i++)
            free(s->queue[(s->q_head + i) % s->p.max_queued]->block);
    if (s->jobs)
        for (int i = 0; i < s->n_jobs_cap; i++) {
            if (s->jobs[i].state != J_FREE && s->kv) hc_kv_seq_free(s->kv, s->jobs[i].seq);
            if (s->jobs[i].q) free(s->jobs[i].q->block);
        }
    if (s->pfx)
        for (int i = 0; i < s->p.max_prefixes; i++) {
            prefix *x = &s->pfx[i];
            if (x->state != P_EMPTY && s->kv) hc_kv_seq_free(s->kv, x->seq);
            free(x->ids);
            free(x->pos);
            free(x->inj_idx);
            free(x->inj);
        }
    if (s->own_kv) hc_kv_free(s->kv);
    free(s->queue);
    free(s->jobs);
    free(s->order_idx);
    free(s->pfx);
    free(s->tok);
    free(s->pos);
    free(s->seg);
    free(s->out_idx);
    free(s->inj_idx);
    free(s->seq_ids);
    free(s->seg_job);
    free(s->out_job);
    free(s->inj);
    free(s->logits);
    free(s->samp_idx);
    free(s->samp_val);
    free(s);
}

int hc_lm_sched_create(hc_lm_sched **out, hc_llm *m, hc_kv_cache *kv,
                       const hc_lm_sched_params *params, hc_errbuf *eb) {
    *out = NULL;
    hc_lm_sched_params p = params ? *params : hc_lm_sched_default_params();
    const int max_pos = m->cfg.max_position_embeddings > 0 ? m->cfg.max_position_embeddings
                                                           : (1 << 20);
    if (p.max_prompt <= 0 || p.max_prompt > max_pos) p.max_prompt = max_pos;
    if (p.max_running < 1 || p.max_queued < 1 || p.step_tokens < 1 || p.prefill_chunk < 1 ||
        p.block_size < 1 || p.max_new < 0 || p.max_inject < 0 || p.max_prefixes < 0 ||
        p.kv_blocks < 0)
        return hc_seterr(eb, HC_ERR_INVAL, "scheduler: every limit must be positive (running %d, "
                         "queued %d, step tokens %d, chunk %d, block size %d)", p.max_running,
                         p.max_queued, p.step_tokens, p.prefill_chunk, p.block_size);
    if (p.step_tokens < p.max_running)
        return hc_seterr(eb, HC_ERR_INVAL, "scheduler: step_tokens %d is below max_running %d "
                         "(every running request decodes one token per step)", p.step_tokens,
                         p.max_running);
    if (!m->lm_head.data)
        return hc_seterr(eb, HC_ERR_INVAL, "scheduler: the model was loaded without lm_head");
    hc_lm_sched *s = calloc(1, sizeof *s);
    if (!s) return HC_ERR_NOMEM;
    s->m = m;
    s->V = m->cfg.vocab_size;
    s->E = m->cfg.hidden_size;
    s->max_pos = max_pos;
    int rc = HC_OK;
    if (kv) {
        s->kv = kv;
    } else {
        int64_t per = ((int64_t)p.max_prompt + p.max_new + p.block_size - 1) / p.block_size;
        int64_t nb = p.kv_blocks ? p.kv_blocks : per * p.max_running;
        if (nb > (1 << 24)) nb = 1 << 24;
        rc = hc_llm_kv_create(m, &s->kv, p.block_size, (int)nb);
        if (rc) {
            hc_lm_sched_free(s);
            return hc_seterr(eb, rc, "scheduler: allocating a KV pool of %lld blocks of %d rows",
                             (long long)nb, p.block_size);
        }
        s->own_kv = 1;
    }
    p.block_size = s->kv->block_size;
    p.kv_blocks = s->kv->n_blocks;
    s->p = p;
    const int T = p.step_tokens, J = p.max_running + p.max_prefixes;
    s->n_jobs_cap = J;
    s->out_cap = J < T ? J : T;
    s->inj_cap = (int)((int64_t)J * p.max_inject < T ? (int64_t)J * p.max_inject : T);
    if (s->inj_cap < 1) s->inj_cap = 1;
    s->queue = calloc((size_t)p.max_queued, sizeof *s->queue);
    s->jobs = calloc((size_t)J, sizeof *s->jobs);
    s->order_idx = malloc(sizeof(int) * (size_t)J);
    s->pfx = calloc((size_t)(p.max_prefixes ? p.max_prefixes : 1), sizeof *s->pfx);
    s->tok = malloc(sizeof(int32_t) * (size_t)T);
    s->pos = malloc(sizeof(int32_t) * (size_t)T);
    s->seg = malloc(sizeof(int32_t) * (size_t)T);
    s->out_idx = malloc(sizeof(int32_t) * (size_t)T);
    s->inj_idx = malloc(sizeof(int32_t) * (size_t)s->inj_cap);
    s->seq_ids = malloc(sizeof(int32_t) * (size_t)T);
    s->seg_job = malloc(sizeof(int) * (size_t)T);
    s->out_job = malloc(sizeof(int) * (size_t)T);
    s->inj = malloc(sizeof(float) * (size_t)s->inj_cap * (size_t)s->E);
    s->logits = malloc(sizeof(float) * (size_t)s->out_cap * (size_t)s->V);
    s->samp_idx = malloc(sizeof(int32_t) * (size_t)s->V);
    s->samp_val = malloc(sizeof(float) * (size_t)s->V);
    int ok = s->queue && s->jobs && s->order_idx && s->pfx && s->tok && s->pos && s->seg &&
             s->out_idx && s->inj_idx && s->seq_ids && s->seg_job && s->out_job && s->inj &&
             s->logits && s->samp_idx && s->samp_val;
    for (int i = 0; ok && i < p.max_prefixes; i++) {
        prefix *x = &s->pfx[i];
        x->ids = malloc(sizeof(int32_t) * (size_t)p.max_prompt);
        x->pos = malloc(sizeof(int32_t) * (size_t)p.max_prompt);
        x->inj_idx = malloc(sizeof(int32_t) * (size_t)(p.max_inject ? p.max_inject : 1));
        x->inj = malloc(sizeof(float) * (size_t)(p.max_inject ? p.max_inject : 1) * (size_t)s->E);
        ok = x->ids && x->pos && x->inj_idx && x->inj;
    }
    if (ok) rc = hc_llm_reserve(m, T, s->out_cap, s->kv, eb);
    /* live sequences: one per job, one per prefix, one in flight while a job forks */
    if (ok && !rc &&
        hc_kv_reserve_tables(s->kv, J + p.max_prefixes + 2, blocks_for(s, (int64_t)max_pos)))
        ok = 0;
    if (!ok || rc) {
        hc_lm_sched_free(s);
        return ok ? rc : hc_seterr(eb, HC_ERR_NOMEM, "scheduler: out of memory");
    }
    *out = s;
    return HC_OK;
}

hc_kv_cache *hc_lm_sched_kv(hc_lm_sched *s) { return s->kv; }

int hc_lm_sched_idle(const hc_lm_sched *s) {
    if (s->q_len) return 0;
    for (int i = 0; i < s->n_jobs_cap; i++)
        if (s->jobs[i].state != J_FREE && !s->jobs[i].is_prefix) return 0;
    return 1;
}

hc_lm_sched_stats hc_lm_sched_get_stats(const hc_lm_sched *s) {
    hc_lm_sched_stats st = s->st;
    st.running = s->n_running;
    st.queued = s->q_len;
    return st;
}

/* ---- submit / cancel ---------------------------------------------------------------------------- */

int hc_lm_sched_check(const hc_lm_sched *s, const hc_lm_req *r, hc_errbuf *eb) {
    const hc_lm_sched_params *p = &s->p;
    if (!r || !r->prompt || r->n_prompt < 1)
        return hc_seterr(eb, HC_ERR_INVAL, "empty prompt");
    if (r->max_new < 0) return hc_seterr(eb, HC_ERR_RANGE, "max_new < 0");
    for (int i = 0; r->pos && i < r->n_prompt; i++)
        if (r->pos[i] < 0) return hc_seterr(eb, HC_ERR_RANGE, "negative position");
    const int64_t last = r->pos ? r->pos[r->n_prompt - 1] : r->n_prompt - 1;
    if (last + 1 + (int64_t)r->max_new > s->max_pos)
        return hc_seterr(eb, HC_ERR_RANGE, "prompt of %d tokens + max_new %d "
                         "exceeds the model's max_position_embeddings %d", r->n_prompt,
                         r->max_new, s->max_pos);
    if (r->n_prompt > p->max_prompt)
        return hc_seterr(eb, HC_ERR_RANGE, "prompt of %d tokens, more than the %d "
                         "accepted", r->n_prompt, p->max_prompt);
    if (r->max_new < 0 || r->max_new > p->max_new)
        return hc_seterr(eb, HC_ERR_RANGE, "max_new %d outside 0..%d",
                         r->max_new, p->max_new);
    if (r->n_stop < 0 || r->n_stop > HC_LM_MAX_STOP || (r->n_stop && !r->stop))
        return hc_seterr(eb, HC_ERR_RANGE, "at most %d stop ids",
                         HC_LM_MAX_STOP);
    if (r->n_inject < 0 || r->n_inject > p->max_inject ||
        (r->n_inject && (!r->inject_idx || !r->inject)))
        return hc_seterr(eb, HC_ERR_RANGE, "%d injected vectors, at most %d",
                         r->n_inject, p->max_inject);
    for (int i = 0; i < r->n_prompt; i++) {
        if (r->prompt[i] < 0 || r->prompt[i] >= s->V)
            return hc_seterr(eb, HC_ERR_RANGE, "token %d = %d outside the "
                             "vocabulary (0..%d)", i, r->prompt[i], s->V - 1);
    }
    for (int i = 0; i < r->n_inject; i++) {
        if (r->inject_idx[i] < 0 || r->inject_idx[i] >= r->n_prompt)
            return hc_seterr(eb, HC_ERR_RANGE, "injection at %d outside the prompt",
                             r->inject_idx[i]);
        for (int j = 0; j < i; j++)
            if (r->inject_idx[j] == r->inject_idx[i])
                return hc_seterr(eb, HC_ERR_INVAL, "two injections at %d",
                                 r->inject_idx[i]);
    }
    if (r->prefix_key && (r->prefix_len < 1 || r->prefix_len > r->n_prompt))
        return hc_seterr(eb, HC_ERR_RANGE, "prefix_len %d outside 1..%d",
                         r->prefix_len, r->n_prompt);
    if (blocks_for(s, (int64_t)r->n_prompt + r->max_new) > s->kv->n_blocks)
        return hc_seterr(eb, HC_ERR_RANGE, "%d tokens need more than the KV pool's "
                         "%d blocks of %d", r->n_prompt + r->max_new, s->kv->n_blocks,
                         s->kv->block_size);
    return hc_sampler_check(&r->sampling, s->V, eb);
}

size_t hc_lm_sched_req_bytes(const hc_lm_sched *s, int n_prompt, int n_inject) {
    const size_t n = n_prompt > 0 ? (size_t)n_prompt : 0, ni = n_inject > 0 ? (size_t)n_inject : 0;
    return sizeof(lm_req) + sizeof(float) * ni * (size_t)s->E + sizeof(int32_t) * (2 * n + ni);
}

/* Copies r into q (hc_lm_sched_req_bytes of room) and queues it. The caller checked it. */
static void enqueue(hc_lm_sched *s, const hc_lm_req *r, lm_req *q, void *block) {
    const size_t n = (size_t)r->n_prompt, ni = (size_t)r->n_inject, E = (size_t)s->E;
    memset(q, 0, sizeof *q);
    q->block = block;
    float *inj = (float *)(q + 1);
    int32_t *ids = (int32_t *)(inj + ni * E), *pos = ids + n, *iidx = pos + n;
    memcpy(ids, r->prompt, sizeof(int32_t) * n);
    for (size_t i = 0; i < n; i++) pos[i] = r->pos ? r->pos[i] : (int32_t)i;
    if (ni) {
        memcpy(iidx, r->inject_idx, sizeof(int32_t) * ni);
        memcpy(inj, r->inject, sizeof(float) * ni * E);
    }
    if (r->n_stop) memcpy(q->stop, r->stop, sizeof(int32_t) * (size_t)r->n_stop);
    q->r = *r;
    q->r.prompt = ids;
    q->r.pos = pos;
    q->r.inject_idx = iidx;
    q->r.inject = inj;
    q->r.stop = q->stop;
    s->queue[(s->q_head + s->q_len++) % s->p.max_queued] = q;
}

int hc_lm_sched_submit(hc_lm_sched *s, const hc_lm_req *r, hc_errbuf *eb) {
    int rc = hc_lm_sched_check(s, r, eb);
    if (rc) return rc;
    if (s->q_len == s->p.max_queued) return HC_ERR_AGAIN;
    lm_req *q = malloc(hc_lm_sched_req_bytes(s, r->n_prompt, r->n_inject));
    if (!q) return hc_seterr(eb, HC_ERR_NOMEM, "out of memory");
    enqueue(s, r, q, q);
    return HC_OK;
}

int hc_lm_sched_submit_in(hc_lm_sched *s, const hc_lm_req *r, void *block, void *mem,
                          hc_errbuf *eb) {
    if (!block || !mem || ((uintptr_t)mem % _Alignof(max_align_t)))
        return hc_seterr(eb, HC_ERR_INVAL, "submit_in: no block or misaligned memory");
    int rc = hc_lm_sched_check(s, r, eb);
    if (rc) return rc;
    if (s->q_len == s->p.max_queued) return HC_ERR_AGAIN;
    enqueue(s, r, (lm_req *)mem, block);
    return HC_OK;
}

int hc_lm_sched_cancel(hc_lm_sched *s, uint64_t id) {
    for (int i = 0; i < s->q_len; i++) {
        lm_req *q = s->queue[(s->q_head + i) % s->p.max_queued];
        if (q->r.id == id && !q->cancelled) {
            q->cancelled = 1;
            s->pending_cancel = 1;
            return HC_OK;
        }
    }
    for (int i = 0; i < s->n_jobs_cap; i++) {
        job *j = &s->jobs[i];
        if (j->state != J_FREE && j->q && j->q->r.id == id && !j->q->cancelled) {
            j->q->cancelled = 1;
            s->pending_cancel = 1;
            return HC_OK;
        }
    }
    return HC_ERR_NOTFOUND;
}

/* ---- internals ---------------------------------------------------------------------------------- */

static void emit_finished(hc_lm_sink sink, void *user, const lm_req *q, int n_out, hc_finish f) {
    hc_lm_event ev = {.kind = HC_LM_EV_FINISHED, .id = q->r.id, .n_out = n_out, .finish = f};
    if (sink) sink(user, &ev);
}

static void emit_failed(hc_lm_sink sink, void *user, const lm_req *q, int status,
                        const char *msg) {
    hc_lm_event ev = {.kind = HC_LM_EV_FAILED, .id = q->r.id, .status = status,
                      .message = msg && *msg ? msg : hc_strerror(status)};
    if (sink) sink(user, &ev);
}

/* Ends a job: its sequence, its block reservation and its request go. */
static void job_end(hc_lm_sched *s, job *j) {
    if (j->state != J_FREE) hc_kv_seq_free(s->kv, j->seq);
    s->blocks_reserved -= j->blocks;
    if (!j->is_prefix) s->n_running--;
    if (j->q) free(j->q->block);
    memset(j, 0, sizeof *j);
    j->pfx = -1;
}

static void prefix_drop(hc_lm_sched *s, prefix *x) {
    if (x->state == P_EMPTY) return;
    hc_kv_seq_free(s->kv, x->seq);
    s->blocks_reserved -= x->blocks;
    x->state = P_EMPTY;
    x->key = 0;
    s->st.prefix_evictions++;
}

void hc_lm_sched_drop_prefixes(hc_lm_sched *s) {
    for (int i = 0; i < s->p.max_prefixes; i++)
        if (s->pfx[i].state == P_READY) prefix_drop(s, &s->pfx[i]);
}

/* Evicts the least recently used ready prefix; 0 if none. */
static int evict_one(hc_lm_sched *s) {
    prefix *best = NULL;
    for (int i = 0; i < s->p.max_prefixes; i++) {
        prefix *x = &s->pfx[i];
        if (x->state == P_READY && (!best || x->last_used < best->last_used)) best = x;
    }
    if (!best) return 0;
    prefix_drop(s, best);
    return 1;
}

static job *free_job(hc_lm_sched *s) {
    for (int i = 0; i < s->n_jobs_cap; i++)
        if (s->jobs[i].state == J_FREE) return &s->jobs[i];
    return NULL;
}

static void job_plain(hc_lm_sched *s, job *j) {
    j->state = J_PREFILL;
    j->n_done = 0;
    j->pfx = -1;
}

/* Starts prefilling a waiting job from its (now ready) prefix: fork the full blocks. */
static int job_fork(hc_lm_sched *s, job *j, prefix *x) {
    int nb = x->len / s->kv->block_size, seq;
    int rc = hc_kv_seq_fork(s->kv, &seq, x->seq, nb);
    if (rc) return rc;
    hc_kv_seq_free(s->kv, j->seq);
    j->seq = seq;
    j->n_done = nb * s->kv->block_size;
    j->state = J_PREFILL;
    j->pfx = -1;
    x->last_used = ++s->clock;
    s->st.prefix_hits++;
    return HC_OK;
}

static prefix *find_prefix(hc_lm_sched *s, uint64_t key) {
    for (int i = 0; i < s->p.max_prefixes; i++)
        if (s->pfx[i].state != P_EMPTY && s->pfx[i].key == key) return &s->pfx[i];
    return NULL;
}

/* A new prefix entry for q (copying its first prefix_len tokens) and the job computing it.
 * NULL when the table, the job slots or the pool have no room (the request then runs unshared). */
static prefix *start_prefix(hc_lm_sched *s, const lm_req *q) {
    const int len = q->r.prefix_len, nb = blocks_for(s, len);
    prefix *x = NULL;
    for (int tries = 0; tries < 2 && !x; tries++) {
        for (int i = 0; i < s->p.max_prefixes && !x; i++)
            if (s->pfx[i].state == P_EMPTY) x = &s->pfx[i];
        if (!x && !evict_one(s)) break;
    }
    job *j = free_job(s);
    if (!x || !j) return NULL;
    while (s->blocks_reserved + nb > s->kv->n_blocks)
        if (!evict_one(s)) return NULL;
    int seq;
    if (hc_kv_seq_new(s->kv, &seq)) return NULL;
    memcpy(x->ids, q->r.prompt, sizeof(int32_t) * (size_t)len);
    memcpy(x->pos, q->r.pos, sizeof(int32_t) * (size_t)len);
    x->n_inject = 0;
    for (int i = 0; i < q->r.n_inject; i++)
        if (q->r.inject_idx[i] < len) {
            x->inj_idx[x->n_inject] = q->r.inject_idx[i];
            memcpy(x->inj + (size_t)x->n_inject * s->E, q->r.inject + (size_t)i * s->E,
                   sizeof(float) * (size_t)s->E);
            x->n_inject++;
        }
    x->state = P_COMPUTING;
    x->key = q->r.prefix_key;
    x->len = len;
    x->seq = seq;
    x->blocks = nb;
    x->last_used = ++s->clock;
    s->blocks_reserved += nb;
    memset(j, 0, sizeof *j);
    j->state = J_PREFILL;
    j->is_prefix = 1;
    j->pfx = (int)(x - s->pfx);
    j->ids = x->ids;
    j->pos = x->pos;
    j->n_prompt = len;
    j->n_inject = x->n_inject;
    j->inj_idx = x->inj_idx;
    j->inj = x->inj;
    j->seq = -1; /* the prefix owns the sequence */
    j->order = s->next_order++;
    s->st.prefix_misses++;
    return x;
}

static void apply_cancels(hc_lm_sched *s, hc_lm_sink sink, void *user) {
    if (!s->pending_cancel) return;
    s->pending_cancel = 0;
    int kept = 0;
    for (int i = 0; i < s->q_len; i++) {
        lm_req *q = s->queue[(s->q_head + i) % s->p.max_queued];
        if (q->cancelled) {
            emit_finished(sink, user, q, 0, HC_FINISH_CANCELLED);
            free(q->block);
        } else {
            s->queue[(s->q_head + kept++) % s->p.max_queued] = q;
        }
    }
    s->q_len = kept;
    for (int i = 0; i < s->n_jobs_cap; i++) {
        job *j = &s->jobs[i];
        if (j->state != J_FREE && j->q && j->q->cancelled) {
            emit_finished(sink, user, j->q, j->n_out, HC_FINISH_CANCELLED);
            job_end(s, j);
        }
    }
}

/* Admits queued requests while there is room (see lm_sched.h). */
static void admit(hc_lm_sched *s, hc_lm_sink sink, void *user) {
    while (s->q_len && s->n_running < s->p.max_running) {
        lm_req *q = s->queue[s->q_head];
        const int need = blocks_for(s, (int64_t)q->r.n_prompt + q->r.max_new);
        while (s->blocks_reserved + need > s->kv->n_blocks)
            if (!evict_one(s)) return; /* wait for running requests to finish */
        job *j = free_job(s);
        if (!j) return;
        int seq;
        if (hc_kv_seq_new(s->kv, &seq)) return;
        s->q_head = (s->q_head + 1) % s->p.max_queued;
        s->q_len--;
        memset(j, 0, sizeof *j);
        j->q = q;
        j->ids = q->r.prompt;
        j->pos = q->r.pos;
        j->n_prompt = q->r.n_prompt;
        j->n_inject = q->r.n_inject;
        j->inj_idx = q->r.inject_idx;
        j->inj = q->r.inject;
        j->last_pos = q->r.pos[q->r.n_prompt - 1];
        j->seq = seq;
        j->blocks = need;
        j->order = s->next_order++;
        j->pfx = -1;
        s->blocks_reserved += need;
        s->n_running++;
        if (q->r.max_new == 0) { /* nothing to generate: done without computing anything */
            j->state = J_PREFILL;
            emit_finished(sink, user, q, 0, HC_FINISH_LENGTH);
            job_end(s, j);
            continue;
        }
        job_plain(s, j);
        if (q->r.prefix_key && s->p.max_prefixes > 0) {
            prefix *x = find_prefix(s, q->r.prefix_key);
            if (x && x->state == P_READY) {
                if (job_fork(s, j, x)) job_plain(s, j);
            } else if (x) {
                j->state = J_WAIT_PREFIX;
                j->pfx = (int)(x - s->pfx);
            } else if ((x = start_prefix(s, q))) {
                j->state = J_WAIT_PREFIX;
                j->pfx = (int)(x - s->pfx);
            }
        }
    }
}

/* Waiting jobs whose prefix is ready fork it; those whose prefix went away run unshared. */
static void resume_waiting(hc_lm_sched *s) {
    for (int i = 0; i < s->n_jobs_cap; i++) {
        job *j = &s->jobs[i];
        if (j->state != J_WAIT_PREFIX) continue;
        prefix *x = &s->pfx[j->pfx];
        if (x->state == P_READY && x->key == j->q->r.prefix_key) {
            if (job_fork(s, j, x)) job_plain(s, j);
        } else if (x->state != P_COMPUTING || x->key != j->q->r.prefix_key) {
            job_plain(s, j);
        }
    }
}

static int by_order(const void *a, const void *b, void *ctx) {
    const job *jobs = ctx;
    uint64_t x = jobs[*(const int *)a].order, y = jobs[*(const int *)b].order;
    return (x > y) - (x < y);
}

static int is_stop(const lm_req *q, int32_t t) {
    for (int i = 0; i < q->r.n_stop; i++)
        if (q->r.stop[i] == t) return 1;
    return 0;
}

/* ---- the step ----------------------------------------------------------------------------------- */

int hc_lm_sched_step(hc_lm_sched *s, hc_lm_sink sink, void *user, hc_errbuf *eb) {
    s->st.steps++;
    apply_cancels(s, sink, user);
    resume_waiting(s);
    admit(s, sink, user);
    resume_waiting(s);

    int n = 0;
    for (int i = 0; i < s->n_jobs_cap; i++)
        if (s->jobs[i].state == J_PREFILL || s->jobs[i].state == J_DECODE) s->order_idx[n++] = i;
    qsort_r(s->order_idx, (size_t)n, sizeof(int), by_order, s->jobs);

    /* plan: decode tokens first, then prompt chunks, within the token budget */
    int T = 0, n_seg = 0, n_out = 0, n_inj = 0, n_dec = 0, budget = s->p.step_tokens;
    for (int pass = 0; pass < 2; pass++) {
        for (int k = 0; k < n && budget > 0; k++) {
            job *j = &s->jobs[s->order_idx[k]];
            const int ji = s->order_idx[k];
            if (pass == 0 && j->state == J_DECODE) {
                s->tok[T] = j->last;
                s->pos[T] = j->last_pos + j->n_out;
                s->seg[T] = n_seg;
                s->out_idx[n_out] = T;
                s->out_job[n_out++] = ji;
                T++;
                n_dec++;
                budget--;
            } else if (pass == 1 && j->state == J_PREFILL) {
                int chunk = j->n_prompt - j->n_done;
                if (chunk > s->p.prefill_chunk) chunk = s->p.prefill_chunk;
                if (chunk > budget) chunk = budget;
                int need_inj = 0;
                for (int i = 0; i < j->n_inject; i++)
                    need_inj += j->inj_idx[i] >= j->n_done && j->inj_idx[i] < j->n_done + chunk;
                if (n_inj + need_inj > s->inj_cap) continue;
                for (int t = 0; t < chunk; t++) {
                    s->tok[T + t] = j->ids[j->n_done + t];
                    s->pos[T + t] = j->pos[j->n_done + t];
                    s->seg[T + t] = n_seg;
                }
                for (int i = 0; i < j->n_inject; i++) {
                    int at = j->inj_idx[i] - j->n_done;
                    if (at < 0 || at >= chunk) continue;
                    s->inj_idx[n_inj] = T + at;
                    memcpy(s->inj + (size_t)n_inj++ * s->E, j->inj + (size_t)i * s->E,
                           sizeof(float) * (size_t)s->E);
                }
                T += chunk;
                budget -= chunk;
                if (!j->is_prefix && j->n_done + chunk == j->n_prompt) {
                    s->out_idx[n_out] = T - 1;
                    s->out_job[n_out++] = ji;
                }
            } else {
                continue;
            }
            s->seq_ids[n_seg] = j->is_prefix ? s->pfx[j->pfx].seq : j->seq;
            s->seg_job[n_seg++] = ji;
        }
    }
    if (T == 0) return HC_OK;

    hc_batch b = {.n_tokens = T, .token = s->tok, .n_inject = n_inj, .inject_idx = s->inj_idx,
                  .inject = s->inj, .pos = s->pos, .seg = s->seg, .n_out = n_out,
                  .out_idx = s->out_idx};
    s->st.forwards++;
    if (n_dec > 0 && T > n_dec) s->st.mixed_forwards++;
    int rc = hc_llm_forward(s->m, &b, s->kv, s->seq_ids, NULL, n_out ? s->logits : NULL, eb);
    if (rc) {
        /* a failure of the whole forward: every request in it fails, the rest go on */
        for (int g = 0; g < n_seg; g++) {
            job *j = &s->jobs[s->seg_job[g]];
            if (j->is_prefix) {
                prefix_drop(s, &s->pfx[j->pfx]);
                job_end(s, j);
            } else {
                emit_failed(sink, user, j->q, rc, eb ? eb->msg : NULL);
                job_end(s, j);
            }
        }
        return rc;
    }

    /* update: progress, then sampling in the order of the outputs */
    for (int g = 0, t = 0; g < n_seg; g++) {
        job *j = &s->jobs[s->seg_job[g]];
        int cnt = 0;
        while (t < T && s->seg[t] == g) {
            cnt++;
            t++;
        }
        if (j->state != J_PREFILL) continue;
        j->n_done += cnt;
        s->st.prefill_tokens += (uint64_t)cnt;
        if (j->is_prefix && j->n_done == j->n_prompt) {
            prefix *x = &s->pfx[j->pfx];
            x->state = P_READY;
            x->last_used = ++s->clock;
            j->state = J_FREE; /* the sequence stays with the prefix; the job slot is free */
            memset(j, 0, sizeof *j);
            j->pfx = -1;
        }
    }
    for (int o = 0; o < n_out; o++) {
        job *j = &s->jobs[s->out_job[o]];
        lm_req *q = j->q;
        if (j->state == J_DECODE) s->st.decode_tokens++;
        int32_t tok = hc_sample_logits(&q->r.sampling, (uint64_t)j->n_out,
                                       s->logits + (size_t)o * s->V, s->V, s->samp_idx,
                                       s->samp_val);
        j->n_out++;
        j->last = tok;
        j->state = J_DECODE;
        hc_lm_event ev = {.kind = HC_LM_EV_TOKEN, .id = q->r.id, .token = tok, .n_out = j->n_out};
        if (sink) sink(user, &ev);
        hc_finish f = is_stop(q, tok) ? HC_FINISH_STOP
                      : j->n_out >= q->r.max_new ? HC_FINISH_LENGTH : HC_FINISH_NONE;
        if (f != HC_FINISH_NONE) {
            emit_finished(sink, user, q, j->n_out, f);
            job_end(s, j);
        }
    }
    return HC_OK;
}
