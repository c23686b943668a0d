/* lm_sched.h: continuous batching of generations over one LLM: the model runner of the serving
 * engine (vLLM v1's shape: plan on the host, run one packed forward, update).
 *
 * Requests are submitted at any time into a bounded queue (full: HC_ERR_AGAIN). Every step
 *   1. applies cancellations (a cancelled request gives back every KV block it held),
 *   2. admits queued requests while fewer than max_running run and the KV pool can hold each
 *      one's worst case (prompt + max_new tokens): admitted requests never run out of blocks, so
 *      nothing is ever preempted and memory is bounded by the pool,
 *   3. plans ONE forward within step_tokens: a decode token for every decoding request, then
 *      prompt chunks (at most prefill_chunk tokens each) of prefilling requests, oldest first,
 *      so a long prompt is prefilled across steps and never stalls running decodes,
 *   4. runs it, samples the next token of every request whose prompt is complete, and emits
 *      events (token, finished, failed) through the caller's sink.
 *
 * Shared prefixes: a request may declare that its first prefix_len prompt tokens (with any
 * injected vector among them) are a prefix shared by every request with the same prefix_key.
 * The first such request computes the prefix once into a sequence of its own; the others fork its
 * full blocks (refcounted, never written again) and compute only the rest of their prompt,
 * including the partial last block of the prefix. Prefixes are kept in a small table and evicted
 * least recently used first when the pool or the table is full.
 *
 * Determinism: a request's tokens depend only on its prompt, injections, sampling parameters and
 * seed: draw i uses hc_sample_logits(..., i, ...), a pure function, so batch mates and step
 * boundaries do not matter (up to the GEMM rounding noted in docs/ARCHITECTURE.md).
 *
 * Memory: everything the steps use (batch metadata, activations, logits, sampling scratch, the KV
 * pool) is allocated by hc_lm_sched_create; a step allocates nothing. A queued request costs one
 * allocation of its own size, made by submit (or none: hc_lm_sched_submit_in uses the caller's).
 *
 * Thread-safety: none; one thread (the engine thread) calls everything.
 */
#ifndef HC_LM_SCHED_H
#define HC_LM_SCHED_H

#include <stdint.h>

#include "model/llm.h"
#include "model/sampler.h"

typedef enum {
    HC_FINISH_NONE = 0,
    HC_FINISH_STOP,      /* a stop token was generated (it is included in the output) */
    HC_FINISH_LENGTH,    /* max_new tokens were generated */
    HC_FINISH_CANCELLED, /* cancelled by the caller */
    HC_FINISH_EMBEDDED,  /* an embed-only request of the pipeline scheduler (creator_sched.h) */
} hc_finish;

const char *hc_finish_name(hc_finish f); /* "stop", "length", "cancelled", "embedded" */

#define HC_LM_MAX_STOP 16

typedef struct hc_lm_sched_params {
    int max_running;   /* requests prefilling or decoding at once (default 64) */
    int max_queued;    /* waiting requests; past it submit returns HC_ERR_AGAIN (default 1024) */
    int step_tokens;   /* tokens in one forward: decode tokens + prefill chunks (default 512) */
    int prefill_chunk; /* most prompt tokens of one request in one step (default 256) */
    int block_size;    /* KV rows per block (default 16) */
    int kv_blocks;     /* KV pool, in blocks (0: room for max_running requests of max_prompt +
                          max_new tokens) */
    int max_prompt;    /* longest prompt accepted (default: max_position_embeddings) */
    int max_new;       /* most new tokens a request may ask for (default 256) */
    int max_inject;    /* injected vectors per request (default 4) */
    int max_prefixes;  /* shared prefixes kept (default 32; 0 disables sharing) */
} hc_lm_sched_params;

static inline hc_lm_sched_params hc_lm_sched_default_params(void) {
    hc_lm_sched_params p = {64, 1024, 512, 256, 16, 0, 0, 256, 4, 32};
    return p;
}

typedef struct hc_lm_req {
    uint64_t id;               /* the caller's; echoed in events; unique among live requests */
    const int32_t *prompt;     /* (n_prompt) ids, n_prompt >= 1 */
    int n_prompt;
    const int32_t *pos;        /* optional (n_prompt) positions; NULL = 0..n_prompt-1; new tokens
                                  continue at the last prompt position + 1 */
    int n_inject;              /* vectors replacing prompt token embeddings */
    const int32_t *inject_idx; /* (n_inject) prompt indices */
    const float *inject;       /* (n_inject, n_embd) */
    uint64_t prefix_key;       /* 0: no shared prefix */
    int prefix_len;            /* with a key: the first prefix_len prompt tokens are the prefix */
    hc_sampler_params sampling;
    int max_new;               /* >= 0 */
    const int32_t *stop;       /* at most HC_LM_MAX_STOP stop ids */
    int n_stop;
} hc_lm_req;

typedef enum { HC_LM_EV_TOKEN, HC_LM_EV_FINISHED, HC_LM_EV_FAILED } hc_lm_ev_kind;

typedef struct hc_lm_event {
    hc_lm_ev_kind kind;
    uint64_t id;
    int32_t token;      /* TOKEN: the new token */
    int n_out;          /* tokens generated so far */
    hc_finish finish;   /* FINISHED */
    int status;         /* FAILED: the error */
    const char *message;/* FAILED: why (valid during the callback) */
} hc_lm_event;

/* Receives events on the calling thread, during hc_lm_sched_step (or cancel's next step). */
typedef void (*hc_lm_sink)(void *user, const hc_lm_event *ev);

typedef struct hc_lm_sched_stats {
    uint64_t steps, forwards;
    uint64_t mixed_forwards;   /* forwards holding both prefill chunks and decode tokens */
    uint64_t prefill_tokens;   /* prompt tokens computed (shared prefixes are counted once) */
    uint64_t decode_tokens;
    uint64_t prefix_hits, prefix_misses, prefix_evictions;
    int running, queued;
} hc_lm_sched_stats;

typedef struct hc_lm_sched hc_lm_sched;

/* Creates the scheduler over m (which must outlive it) and allocates everything its steps use.
 * kv: a caller's pool to use (NULL: one is created from the params). */
int hc_lm_sched_create(hc_lm_sched **out, hc_llm *m, hc_kv_cache *kv,
                       const hc_lm_sched_params *p, hc_errbuf *eb);
void hc_lm_sched_free(hc_lm_sched *s);

/* Copies the request into the queue. HC_ERR_AGAIN: the queue is full (nothing queued changes).
 * Other errors: the request itself is invalid (message in eb, about the request's content, not
 * naming its id); it is not queued. */
int hc_lm_sched_submit(hc_lm_sched *s, const hc_lm_req *r, hc_errbuf *eb);
/* Bytes of the scheduler's copy of a request with n_prompt tokens and n_inject vectors. */
size_t hc_lm_sched_req_bytes(const hc_lm_sched *s, int n_prompt, int n_inject);
/* As submit, but the copy goes into `mem` (at least hc_lm_sched_req_bytes, aligned for
 * max_align_t), inside the caller's malloc'ed `block`; on success the scheduler owns `block` and
 * frees it when the request leaves (finished, failed, cancelled, or hc_lm_sched_free). On error
 * nothing is taken. r's arrays may point into `block` outside [mem, mem + bytes). This is how a
 * caller that already allocated a request at its own submit hands it over inside a step without
 * allocating (the creator scheduler). */
int hc_lm_sched_submit_in(hc_lm_sched *s, const hc_lm_req *r, void *block, void *mem,
                          hc_errbuf *eb);
/* The validation of submit alone: HC_OK if submit would accept r when the queue has room. */
int hc_lm_sched_check(const hc_lm_sched *s, const hc_lm_req *r, hc_errbuf *eb);
/* Cancels a queued or running request at the next step boundary (a FINISHED event with
 * HC_FINISH_CANCELLED follows). HC_ERR_NOTFOUND if no live request has this id. */
int hc_lm_sched_cancel(hc_lm_sched *s, uint64_t id);
/* One step (see the top of this file). Returns a failure of the step as a whole (a backend
 * error); the requests it concerned get FAILED events. */
int hc_lm_sched_step(hc_lm_sched *s, hc_lm_sink sink, void *user, hc_errbuf *eb);
/* 1 when nothing is queued or running. */
int hc_lm_sched_idle(const hc_lm_sched *s);
hc_lm_sched_stats hc_lm_sched_get_stats(const hc_lm_sched *s);
/* The KV pool (for tests: free blocks when idle equal the starting count). */
hc_kv_cache *hc_lm_sched_kv(hc_lm_sched *s);
/* Drops every cached prefix (their blocks return to the pool unless forks still hold them). */
void hc_lm_sched_drop_prefixes(hc_lm_sched *s);

#endif
