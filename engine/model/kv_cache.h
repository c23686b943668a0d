/* kv_cache.h: a paged K/V cache. One arena per layer holds n_blocks blocks of block_size token
 * rows (K and V separately, each row n_kv_heads * head_dim floats, post-RoPE keys). Sequences own
 * lists of blocks (block tables); blocks carry refcounts, and a sequence can be forked from the
 * full blocks of another (a shared prompt prefix): such blocks are only ever read, since a
 * sequence writes only past its committed entries and forks share full blocks only. Allocation
 * never touches the backend after creation: blocks come from a free list, and running out is
 * HC_ERR_AGAIN ("try again"), not a failure.
 *
 * Sequence handles carry a generation counter: after hc_kv_seq_free the old handle is stale and
 * every call with it fails (or hc_kv_seq_get returns NULL); it never names the sequence that
 * later reuses the slot. The sequence table has a fixed capacity set at creation.
 *
 * Thread-safety: none; the engine thread owns the cache.
 */
#ifndef HC_KV_CACHE_H
#define HC_KV_CACHE_H

#include <stdint.h>

#include "backend/backend.h"

typedef struct hc_kv_seq {
    int in_use;
    int gen;          /* generation of the slot: part of the handle */
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
    hc_kv_seq *seqs;  /* (n_seqs_cap), fixed at creation */
    int n_seqs_cap;
    int32_t *free_slots; /* stack of free sequence slots */
    int n_free_slots;
} hc_kv_cache;

#define HC_KV_SLOT_BITS 20 /* a handle is (generation << HC_KV_SLOT_BITS) | slot */

/* Allocates the arenas in be's memory: 2 * n_layers * n_blocks * block_size * kv_dim floats. */
int hc_kv_create(hc_kv_cache **out, hc_backend *be, int n_layers, int kv_dim, int block_size,
                 int n_blocks);
void hc_kv_free(hc_kv_cache *kv);
/* Blocks needed to hold n tokens. */
static inline int hc_kv_blocks_for(const hc_kv_cache *kv, int n_tokens) {
    return (n_tokens + kv->block_size - 1) / kv->block_size;
}

/* Gives the block tables of the first n_slots sequence slots room for max_blocks blocks now, so
 * sequences up to that length never grow their table later. Slots are reused last-freed first
 * and a fresh slot is taken only when every used one is busy, so the slots ever used are the
 * lowest ones up to the peak number of live sequences: a caller that bounds that (lm_sched)
 * makes table growth impossible after creation. HC_ERR_NOMEM leaves tables as they were. */
int hc_kv_reserve_tables(hc_kv_cache *kv, int n_slots, int max_blocks);
/* A new empty sequence; *seq_id is its handle. HC_ERR_AGAIN when every slot (n_blocks + 64 of
 * them) is taken. */
int hc_kv_seq_new(hc_kv_cache *kv, int *seq_id);
/* A new sequence holding the first n_blocks blocks of src, shared (their refcounts go up): they
 * must be full, committed blocks (n_blocks * block_size <= committed entries of src). */
int hc_kv_seq_fork(hc_kv_cache *kv, int *seq_id, int src, int n_blocks);
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
/* The sequence behind a handle; NULL for a stale or invalid one. The pointer stays valid until
 * the sequence is freed (the table never moves). */
static inline hc_kv_seq *hc_kv_seq_get(hc_kv_cache *kv, int seq_id) {
    if (seq_id < 0) return 0;
    int slot = seq_id & ((1 << HC_KV_SLOT_BITS) - 1), gen = seq_id >> HC_KV_SLOT_BITS;
    if (slot >= kv->n_seqs_cap) return 0;
    hc_kv_seq *s = &kv->seqs[slot];
    return s->in_use && s->gen == gen ? s : 0;
}
/* 1 when block `blk` is shared by more than one sequence (it must not be written). */
static inline int hc_kv_block_shared(const hc_kv_cache *kv, int32_t blk) {
    return kv->refcnt[blk] > 1;
}
int hc_kv_n_free_blocks(const hc_kv_cache *kv);

#endif
