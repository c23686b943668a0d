/* cache.h: hllm-creatord's byte-bounded LRU caches (the user cache and the title cache).
 *
 * A cache maps a key (bytes) to a value (bytes). Each entry is one allocation holding both; its
 * cost is hcd_cache_entry_bytes(key_len, val_len) (the bookkeeping included), and the sum of the
 * costs never exceeds max_bytes: an insert evicts least recently used entries until the new one
 * fits. An entry larger than the whole cache is not stored (counted in too_large). Lookups hash
 * the key with XXH3-64 (the caller passes the hash, see hcd_hash) and then compare the whole key,
 * so a hash collision is a miss, never a wrong answer. The bucket table doubles as entries are
 * added (from 64 buckets); max_bytes 0 makes a disabled cache (every lookup misses uncounted,
 * inserts are ignored).
 *
 * Thread-safety: none; one owner (the daemon's loop thread).
 */
#ifndef HCD_CACHE_H
#define HCD_CACHE_H

#include <stddef.h>
#include <stdint.h>

typedef struct hcd_cache hcd_cache;

typedef struct hcd_cache_stats {
    size_t max_bytes, bytes, entries;
    uint64_t hits, misses, evictions, inserts, too_large;
} hcd_cache_stats;

/* 0, or -1 when out of memory. */
int hcd_cache_create(hcd_cache **out, size_t max_bytes);
void hcd_cache_free(hcd_cache *c);
int hcd_cache_enabled(const hcd_cache *c);

uint64_t hcd_hash(const void *p, size_t n);
size_t hcd_cache_entry_bytes(size_t key_len, size_t val_len);

/* The value (val_len bytes, aligned for 8-byte fields, valid until the next put) or NULL; a hit
 * makes the entry most recently used. Counts a hit or a miss (not when disabled). */
const void *hcd_cache_get(hcd_cache *c, uint64_t hash, const void *key, size_t key_len,
                          size_t *val_len);
/* Stores copies of key and value, replacing an entry with the same key. Returns 1 stored, 0 not
 * stored (disabled, or larger than max_bytes), -1 out of memory (the cache is unchanged but for
 * the old entry of the key, which is gone). */
int hcd_cache_put(hcd_cache *c, uint64_t hash, const void *key, size_t key_len, const void *val,
                  size_t val_len);
hcd_cache_stats hcd_cache_get_stats(const hcd_cache *c);

/* A growable byte string for building keys and values field by field (no struct padding). */
typedef struct hcd_bytes {
    unsigned char *b;
    size_t len, cap;
} hcd_bytes;

void hcd_bytes_add(hcd_bytes *k, const void *p, size_t n);
void hcd_bytes_i32(hcd_bytes *k, int32_t v);
void hcd_bytes_u64(hcd_bytes *k, uint64_t v);
void hcd_bytes_free(hcd_bytes *k);

#endif
