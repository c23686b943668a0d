/* kv_cache.h: a paged K/V cache. One arena per layer holds n_blocks blocks of block_size token
 * rows (K and V separately, each row n_kv_heads * head_dim floats, post-RoPE keys). Sequences own
 * lists of blocks (block tables); blocks carry refcounts so a later prefix-sharing change can let
 * sequences share full blocks. Allocation never touches the backend after creation: blocks come
 * from a free list, and running out is HC_ERR_AGAIN ("try again"), not a failure.
 *
 * Thread-safety: none; the engine thread owns the cache.
 */
#ifndef HC_KV_CACHE_H
#define HC_KV_CACHE_H

#include <stdint.h>

#include "backend.h"

typedef struct hc_kv_seq {
    int in_use;
    int n_tokens;     /* committed K/V entries */
    int n_blocks;     /* blocks held */
    int cap_blocks;   /* capacity of `blocks` */
    int32_t *blocks;  /* block table, host */
} hc_kv_seq;

typedef struct hc_kv_cache {
    hc_backend *be;
    int n_layers;
    int kv_dim;       /* n_kv_heads * head_dim */
    int block_size;   /* token rows per block */
    int n_blocks;
    hc_tensor *k;     /* (n_layers) each (n_blocks * block_size, kv_dim) */
    hc_tensor *v;     /* (n_layers) same */
    int32_t *refcnt;  /* (n_blocks) */
    int32_t *free_list; /* stack of free block ids */
    int n_free;
    hc_kv_seq *seqs;
    int n_seqs_cap;
} hc_kv_cache;

/* Allocates the arenas in be's memory: 2 * n_layers * n_blocks * block_size * kv_dim floats. */
int hc_kv_create(hc_kv_cache **out, hc_backend *be, int n_layers, int kv_dim, int block_size,
                 int n_blocks);
void hc_kv_free(hc_kv_cache *kv);
/* Blocks needed to hold n tokens. */
static inline int hc_kv_blocks_for(const hc_kv_cache *kv, int n_tokens) {
    return (n_tokens + kv->block_size - 1) / kv->block_size;
}

/* A new empty sequence; *seq_id is its handle. */
int hc_kv_seq_new(hc_kv_cache *kv, int *seq_id);
/* Releases the sequence and drops its block references. */
void hc_kv_seq_free(hc_kv_cache *kv, int seq_id);
/* Makes room for n_more tokens after the committed ones; HC_ERR_AGAIN (nothing changed) if the
 * pool lacks free blocks. */
int hc_kv_seq_reserve(hc_kv_cache *kv, int seq_id, int n_more);
/* Drops blocks beyond the first n_blocks (never below what committed tokens need). */
void hc_kv_seq_shrink(hc_kv_cache *kv, int seq_id, int n_blocks);
/* Marks n entries as written (after a forward pass stored them). */
void hc_kv_seq_commit(hc_kv_cache *kv, int seq_id, int n);
/* Pool row of entry j of the sequence (must be reserved). */
static inline int32_t hc_kv_row(const hc_kv_cache *kv, const hc_kv_seq *s, int j) {
    return s->blocks[j / kv->block_size] * kv->block_size + j % kv->block_size;
}
static inline hc_kv_seq *hc_kv_seq_get(hc_kv_cache *kv, int seq_id) {
    return (seq_id >= 0 && seq_id < kv->n_seqs_cap && kv->seqs[seq_id].in_use) ? &kv->seqs[seq_id]
                                                                               : 0;
}
int hc_kv_n_free_blocks(const hc_kv_cache *kv);

#endif
