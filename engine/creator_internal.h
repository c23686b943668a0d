/* creator_internal.h: the pipeline stages of creator.c that the scheduler (creator_sched.c)
 * drives directly. Not part of the public API. */
#ifndef HC_CREATOR_INTERNAL_H
#define HC_CREATOR_INTERNAL_H

#include "creator.h"

/* One history title's item-tokenizer ids, already cut to max_item_tokens. */
typedef struct hc_item_key {
    int32_t *ids;
    int n;
} hc_item_key;

/* Item vectors for n titles into out (n, H_i): item-cache hits are copied, the rest
 * (deduplicated) run through the item LLM in packed forwards of at most max_batch_tokens
 * tokens and are added to the cache. */
int hc_creator_encode_items_(hc_creator *c, const hc_item_key *items, int n, float *out,
                             hc_errbuf *eb);
/* The user LLM over n_users users whose kept item vectors are concatenated in vec (user i has
 * n_keep[i] <= max_history of them, oldest first): u (n_users, H_u) and U (n_users, H_c); either
 * output may be NULL. */
int hc_creator_user_forward_(hc_creator *c, const float *vec, const int *n_keep, int n_users,
                             float *u, float *U, hc_errbuf *eb);

#endif
