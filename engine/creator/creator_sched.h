/* creator_sched.h: the serving engine's scheduler over the whole HLLM-Creator pipeline.
 *
 * Requests arrive at any time (submit, bounded queue) already tokenized by the submitter (any
 * thread, its own tokenizer context: hc_creator_tokenize_request); the engine thread only calls
 * hc_csched_step, which does:
 *   1. cancellations: a cancelled request leaves whatever stage it is in at this step boundary,
 *      every KV block it held goes back, and it gets FINISHED (HC_FINISH_CANCELLED);
 *   2. the embed stage for the oldest queued requests that fit the step's budget
 *      (embed_tokens history tokens, max_embed requests): ONE pass of item-LLM segments for every
 *      history title that is not in the item cache (deduplicated across those requests), then the
 *      user-LLM segments, the projector and the cluster assignment; each request gets EMBEDDED
 *      (u, U, cluster, score); embed-only requests then get FINISHED (HC_FINISH_EMBEDDED);
 *   3. generation requests move to the creative LLM's continuous-batching scheduler (lm_sched.h)
 *      with prompt1 + slot + prompt2 as prompt and the centroid (cluster mode) or U (per-user
 *      mode) injected at the slot; prompt1 (per-user) and prompt1 + slot (per cluster) are shared
 *      prefixes whose full KV blocks are computed once and shared;
 *   4. ONE creative forward holding prefill chunks of new generations and decode tokens of
 *      running ones; TOKEN events, then FINISHED (stop / length) or FAILED.
 * Lifecycle: queued -> embedded -> (waiting for room in the creative scheduler) -> prefill ->
 * decode -> finished | cancelled | failed.
 *
 * A request's own problem (a title id outside the item vocabulary, a prompt over
 * max_prompt_tokens, cluster mode without centroids) is refused by submit and never queued; a
 * failure of a whole step (the backend) fails the requests it concerned and is returned.
 *
 * Determinism: a request's cluster and tokens depend only on its content, mode, sampling
 * parameters and seed, not on its batch mates or step boundaries (up to the GEMM rounding noted
 * in docs/ARCHITECTURE.md: vectors agree to ~1e-6, clusters and greedy titles are identical in
 * every test).
 *
 * Memory: the creative scheduler's KV pool and scratch, the embed stage's scratch and the item
 * and user LLMs' activations are allocated by hc_csched_create; a step allocates nothing after
 * warm-up. A queued request costs one allocation of its own size (its ids, its prompt, room for
 * U and for the creative scheduler's copy), made by submit and freed when it ends.
 *
 * Thread-safety: none; one thread (the engine thread) calls everything except
 * hc_creator_tokenize_request, which any thread may call with its own contexts.
 */
#ifndef HC_CREATOR_SCHED_H
#define HC_CREATOR_SCHED_H

#include <stdint.h>

#include "creator/creator.h"

typedef enum {
    HC_CREQ_CLUSTER = 0, /* title for the user's cluster: the centroid at the slot */
    HC_CREQ_PER_USER,    /* title for the user: U itself at the slot */
    HC_CREQ_EMBED,       /* u, U, cluster only; no title */
} hc_creq_mode;

typedef struct hc_csched_params {
    int max_queued;    /* requests waiting for the embed stage; past it submit gives AGAIN
                          (default 1024) */
    int max_embed;     /* requests entering the embed stage in one step (default 64) */
    int embed_tokens;  /* history tokens (ids + slots) embedded in one step; the oldest request
                          always enters even if it alone exceeds it (default 8192) */
    hc_lm_sched_params gen; /* the creative scheduler (lm_sched.h); zeros in max_prompt / max_new /
                               max_inject / kv_blocks are filled from the package */
} hc_csched_params;

hc_csched_params hc_csched_default_params(void);

/* One request, tokenized. The scheduler copies everything it needs at submit. */
typedef struct hc_creq {
    uint64_t id;                /* the caller's; echoed in events; unique among live requests */
    hc_creq_mode mode;
    int n_items;                /* history titles kept (0..max_history), oldest first */
    const int32_t *item_lens;   /* (n_items) token counts, each 0..max_item_tokens */
    const int32_t *item_ids;    /* (sum of item_lens) item-tokenizer ids, concatenated */
    const int32_t *prompt2;     /* creative ids of the rendered prompt2 (not for EMBED) */
    int n_prompt2;
    hc_sampler_params sampling;
    int max_new;                /* >= 0 */
    const int32_t *stop;        /* (n_stop) stop ids beyond the package's end-of-sequence ids;
                                   together at most HC_LM_MAX_STOP (lm_sched.h) */
    int n_stop;
    /* Cluster mode only: 1 = sample with hc_title_seed(sampling.seed, cluster, ad_hash)
     * (creator/title_key.h) once the cluster is known, so the title of (cluster, ad) is the same
     * whichever user asked (what the daemon's title cache and `hllm titles` tables rely on). */
    int seed_by_cluster;
    uint64_t ad_hash;           /* hc_ad_hash of the ad (with seed_by_cluster) */
    /* Generation modes: a user embedded before (an earlier EMBEDDED event, a cache). pre_U
     * (d_creative floats, copied at submit) is used as U and the embed stage is skipped: the
     * request's EMBEDDED event comes in its first step with u = NULL, U = its copy, cluster =
     * pre_cluster, score = pre_score. Cluster mode needs pre_cluster in 0..k-1; per-user mode
     * ignores it. The history (n_items...) may then be empty; it is not used. NULL: embed. */
    const float *pre_U;
    int32_t pre_cluster;
    float pre_score;
} hc_creq;

/* Owned buffers behind an hc_creq made by hc_creator_tokenize_request. */
typedef struct hc_creq_buf {
    int32_t *item_lens, *item_ids, *prompt2;
    float *pre_U; /* the caller's copy behind hc_creq.pre_U, if it keeps one here (or NULL) */
} hc_creq_buf;

/* Tokenizes a history (the last max_history titles, each cut to max_item_tokens) and, unless
 * ad_title is NULL, the ad's prompt2, into r (whose id, mode, sampling and max_new the caller
 * sets) with buffers in buf (free with hc_creq_buf_free). item_ctx / creative_ctx are the
 * caller's contexts of c->item_tok / c->creative_tok (hc_tok_ctx_new), so any thread may call
 * this while the engine thread steps. Errors: the request's own (message in eb). */
int hc_creator_tokenize_request(const hc_creator *c, hc_tok_ctx *item_ctx, hc_tok_ctx *creative_ctx,
                                const hc_history *h, const char *ad_title, size_t ad_title_len,
                                const char *ad_desc, size_t ad_desc_len, hc_creq *r,
                                hc_creq_buf *buf, hc_errbuf *eb);
void hc_creq_buf_free(hc_creq_buf *buf);

typedef enum { HC_CEV_EMBEDDED, HC_CEV_TOKEN, HC_CEV_FINISHED, HC_CEV_FAILED } hc_cev_kind;

typedef struct hc_cevent {
    hc_cev_kind kind;
    uint64_t id;
    /* EMBEDDED (pointers valid during the callback) */
    const float *u;       /* (H_u) */
    const float *U;       /* (H_c) */
    int32_t cluster;      /* -1 without centroids */
    float cluster_score;
    /* TOKEN */
    int32_t token;
    int n_out;            /* tokens generated so far */
    /* FINISHED */
    hc_finish finish;
    /* FAILED */
    int status;
    const char *message;  /* valid during the callback */
} hc_cevent;

typedef void (*hc_csink)(void *user, const hc_cevent *ev);

typedef struct hc_csched_stats {
    uint64_t steps;
    uint64_t embed_passes;     /* steps that ran the embed stage */
    uint64_t users_embedded;
    uint64_t items_seen, items_encoded;
    int queued, embedded_waiting, generating;
    hc_lm_sched_stats gen;     /* the creative scheduler's */
} hc_csched_stats;

typedef struct hc_csched hc_csched;

/* c outlives s; without a creative LLM only HC_CREQ_EMBED requests are accepted. Schedulers of one
 * creator (hc_creator_generate keeps its own) share its models and item cache: call them all from
 * the same thread. p NULL: hc_csched_default_params(). */
int hc_csched_create(hc_csched **out, hc_creator *c, const hc_csched_params *p, hc_errbuf *eb);
void hc_csched_free(hc_csched *s);

/* Validates and copies r into the queue. HC_ERR_AGAIN: the queue is full (nothing changes).
 * Other errors concern the request itself (message in eb); it is not queued. */
int hc_csched_submit(hc_csched *s, const hc_creq *r, hc_errbuf *eb);
/* Cancels a live request at the next step boundary. HC_ERR_NOTFOUND: no live request has id. */
int hc_csched_cancel(hc_csched *s, uint64_t id);
/* One step (see the top of this file). Events are delivered through sink during the call. */
int hc_csched_step(hc_csched *s, hc_csink sink, void *user, hc_errbuf *eb);
int hc_csched_idle(const hc_csched *s);
hc_csched_stats hc_csched_get_stats(const hc_csched *s);
/* The creative scheduler (its KV pool: hc_lm_sched_kv); NULL when created without a creative
 * LLM. */
hc_lm_sched *hc_csched_gen(hc_csched *s);

#endif
