/* item_cache.h: the item-embedding cache. A title seen before (same token ids after truncation)
 * is not run through the item LLM again: its final-norm [item] vector is looked up here.
 *
 * Bounded: at most `capacity` entries, least recently used evicted first. Memory grows with use:
 * the entry table (vectors and keys of up to max_ids token ids, stored inline) doubles from 64
 * entries up to `capacity`, so a large capacity costs nothing up front and a cache holding n
 * entries uses about n * (dim floats + max_ids ids + bookkeeping). Lookups never allocate; an
 * insert allocates only when the table doubles, so a cache at its working-set size or at its
 * capacity never allocates. If growing fails, the insert evicts instead (a full-size cache is
 * never required); it fails with HC_ERR_NOMEM only when nothing can be stored at all.
 *
 * Thread-safety: none; one owner (the engine thread). Counters (hits, misses, evictions) are for
 * metrics and benchmarks.
 */
#ifndef HC_ITEM_CACHE_H
#define HC_ITEM_CACHE_H

#include <stddef.h>
#include <stdint.h>

#include "core/error.h"

typedef struct hc_item_cache hc_item_cache;

/* capacity 0 creates a disabled cache (every lookup misses, inserts are ignored). max_ids: the
 * longest key (1..2^20). A capacity above INT32_MAX / 2, or whose full table would not fit in the
 * address space, is HC_ERR_INVAL. */
int hc_item_cache_create(hc_item_cache **out, size_t capacity, int dim, int max_ids);
void hc_item_cache_free(hc_item_cache *c);

/* Returns the cached vector (dim floats, valid until the next insert) or NULL; a hit makes the
 * entry most recently used. */
const float *hc_item_cache_get(hc_item_cache *c, const int32_t *ids, int n_ids);
/* Stores a copy of vec under ids (replacing an existing entry), evicting the LRU entry if full.
 * HC_ERR_RANGE: more than max_ids ids. */
int hc_item_cache_put(hc_item_cache *c, const int32_t *ids, int n_ids, const float *vec);

typedef struct hc_item_cache_stats {
    size_t capacity, size;
    uint64_t hits, misses, evictions;
    size_t bytes; /* memory of the entries allocated so far (vectors, keys, bookkeeping, buckets) */
} hc_item_cache_stats;
/* Bytes of one entry (vector, inline key of max_ids ids, bookkeeping, its hash buckets): a cache
 * bounded by B bytes holds B / hc_item_cache_entry_bytes(dim, max_ids) entries. */
size_t hc_item_cache_entry_bytes(int dim, int max_ids);
hc_item_cache_stats hc_item_cache_get_stats(const hc_item_cache *c);
void hc_item_cache_clear(hc_item_cache *c);

#endif
