/* creator_internal.h: the pipeline stages of creator.c that the scheduler (creator_sched.c)
 * drives directly. Not part of the public API. */
#ifndef HC_CREATOR_INTERNAL_H
#define HC_CREATOR_INTERNAL_H

#include "creator/creator.h"

/* One history title's item-tokenizer ids, already cut to max_item_tokens. */
typedef struct hc_item_key {
    int32_t *ids;
    int n;
} hc_item_key;

/* Everything the two stages below use, allocated once (the scheduler keeps one sized from its
 * per-step bounds, so a step allocates none of it). */
typedef struct hc_creator_scratch {
    int max_items, max_users, max_tok;
    size_t table_size;
    int *src, *todo, *table;
    int32_t *tok, *pos, *seg, *outi, *inj_idx;
    float *slots, *hid; /* (max_tok, H_i): the [item] slot rows, the item forward's outputs */
    float *inj, *u;     /* (max_tok, H_u), (max_users, H_u) */
    hc_tensor tu, tU;   /* (max_users, H_u), (max_users, H_c) on the backend */
} hc_creator_scratch;

int hc_creator_scratch_init(hc_creator_scratch *s, hc_creator *c, int max_items, int max_users,
                            hc_errbuf *eb);
void hc_creator_scratch_free(hc_creator_scratch *s);

/* Item vectors for n titles into out (n, H_i): item-cache hits are copied, the rest
 * (deduplicated) run through the item LLM in packed forwards of at most max_batch_tokens
 * tokens and are added to the cache. scr: a scratch with room for n items (NULL, or too small: a
 * temporary one is made). */
int hc_creator_encode_items_(hc_creator *c, const hc_item_key *items, int n, float *out,
                             hc_creator_scratch *scr, hc_errbuf *eb);
/* The user LLM over n_users users whose kept item vectors are concatenated in vec (user i has
 * n_keep[i] <= max_history of them, oldest first): u (n_users, H_u) and U (n_users, H_c); either
 * output may be NULL. scr: a scratch with room for n_users (NULL, or too small: a temporary
 * one is made). */
int hc_creator_user_forward_(hc_creator *c, const float *vec, const int *n_keep, int n_users,
                             float *u, float *U, hc_creator_scratch *scr, hc_errbuf *eb);

#endif
