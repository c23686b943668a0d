/* generate.h: batched autoregressive generation over one model and a paged KV cache.
 *
 * A closed loop over the scheduler (lm_sched.h): every sequence is submitted, the prompts are
 * prefilled as one packed batch (one segment each), then every step decodes one token for each
 * unfinished sequence in a single forward. Sequence i's tokens depend only on its
 * own prompt, sampler and seed, never on its batch mates: decoding a set of requests together
 * gives the same tokens as decoding each alone (tests/unit/test_llm_parity.c checks this).
 *
 * Thread-safety: as the model (one thread at a time).
 */
#ifndef HC_GENERATE_H
#define HC_GENERATE_H

#include "model/llm.h"
#include "model/lm_sched.h"
#include "model/sampler.h"

typedef struct hc_gen_seq {
    /* in */
    const int32_t *prompt;  /* (n_prompt) ids */
    int n_prompt;           /* >= 1 */
    int n_inject;           /* vectors replacing prompt token embeddings (0 = none) */
    const int32_t *inject_idx; /* (n_inject) prompt indices */
    const float *inject;    /* (n_inject, n_embd) */
    const int32_t *pos;     /* optional (n_prompt) positions; NULL = 0..n_prompt-1. Generated
                               tokens continue at last prompt position + 1 */
    hc_sampler_params sampling;
    int max_new;            /* >= 0 */
    const int32_t *stop;    /* stop ids (e.g. the tokenizer's eos ids) */
    int n_stop;
    /* out */
    int32_t *out;           /* caller-owned, capacity max_new */
    int n_out;
    hc_finish finish;
} hc_gen_seq;

/* Called after each generated token (for streaming); may be NULL. */
typedef void (*hc_gen_token_cb)(void *user, int seq_index, int32_t token);

/* Generates for n sequences. kv may be NULL: a cache sized for the request is created and freed
 * inside. With a caller's cache, HC_ERR_AGAIN means it had too few free blocks. */
int hc_generate(hc_llm *m, hc_kv_cache *kv, hc_gen_seq *seqs, int n, hc_gen_token_cb cb,
                void *user, hc_errbuf *eb);

#endif
