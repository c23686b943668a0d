/* item_cache.c: open hash table (chaining through entry indices) + doubly linked LRU list over a
 * fixed array of entries. */
#include "item_cache.h"

#include <stdlib.h>
#include <string.h>

typedef struct entry {
    uint64_t hash;
    int32_t *ids;
    int n_ids;
    int32_t next_in_bucket; /* -1 ends the chain */
    int32_t prev, next;     /* LRU list; -1 ends */
    int used;
} entry;

struct hc_item_cache {
    size_t capacity, size;
    int dim;
    entry *entries;   /* (capacity) */
    float *vecs;      /* (capacity, dim) */
    int32_t *buckets; /* (n_buckets) head entry index or -1 */
    size_t n_buckets;
    int32_t head, tail; /* most / least recently used */
    int32_t free_head;  /* unused entries chained through next */
    uint64_t hits, misses, evictions;
};

static uint64_t hash_ids(const int32_t *ids, int n) {
    uint64_t h = 0xcbf29ce484222325ULL ^ (uint64_t)n;
    for (int i = 0; i < n; i++) {
        h ^= (uint32_t)ids[i];
        h *= 0x100000001b3ULL;
        h ^= h >> 29;
    }
    return h;
}

int hc_item_cache_create(hc_item_cache **out, size_t capacity, int dim) {
    *out = NULL;
    if (dim < 1 || capacity > (size_t)INT32_MAX / 2) return HC_ERR_INVAL;
    hc_item_cache *c = calloc(1, sizeof *c);
    if (!c) return HC_ERR_NOMEM;
    c->capacity = capacity;
    c->dim = dim;
    c->n_buckets = 1;
    while (c->n_buckets < capacity * 2) c->n_buckets <<= 1;
    if (capacity) {
        c->entries = calloc(capacity, sizeof *c->entries);
        c->vecs = malloc(capacity * (size_t)dim * sizeof *c->vecs);
        c->buckets = malloc(c->n_buckets * sizeof *c->buckets);
        if (!c->entries || !c->vecs || !c->buckets) {
            hc_item_cache_free(c);
            return HC_ERR_NOMEM;
        }
    }
    hc_item_cache_clear(c);
    c->hits = c->misses = c->evictions = 0;
    *out = c;
    return HC_OK;
}

void hc_item_cache_clear(hc_item_cache *c) {
    for (size_t i = 0; i < c->capacity; i++) {
        free(c->entries[i].ids);
        c->entries[i].ids = NULL;
        c->entries[i].used = 0;
        c->entries[i].next = i + 1 < c->capacity ? (int32_t)(i + 1) : -1;
    }
    if (c->buckets)
        for (size_t i = 0; i < c->n_buckets; i++) c->buckets[i] = -1;
    c->free_head = c->capacity ? 0 : -1;
    c->head = c->tail = -1;
    c->size = 0;
}

void hc_item_cache_free(hc_item_cache *c) {
    if (!c) return;
    if (c->entries)
        for (size_t i = 0; i < c->capacity; i++) free(c->entries[i].ids);
    free(c->entries);
    free(c->vecs);
    free(c->buckets);
    free(c);
}

static void lru_unlink(hc_item_cache *c, int32_t i) {
    entry *e = &c->entries[i];
    if (e->prev >= 0) c->entries[e->prev].next = e->next;
    else c->head = e->next;
    if (e->next >= 0) c->entries[e->next].prev = e->prev;
    else c->tail = e->prev;
    e->prev = e->next = -1;
}

static void lru_push_front(hc_item_cache *c, int32_t i) {
    entry *e = &c->entries[i];
    e->prev = -1;
    e->next = c->head;
    if (c->head >= 0) c->entries[c->head].prev = i;
    c->head = i;
    if (c->tail < 0) c->tail = i;
}

static int32_t find(const hc_item_cache *c, uint64_t h, const int32_t *ids, int n) {
    for (int32_t i = c->buckets[h & (c->n_buckets - 1)]; i >= 0; i = c->entries[i].next_in_bucket) {
        const entry *e = &c->entries[i];
        if (e->hash == h && e->n_ids == n && (n == 0 || !memcmp(e->ids, ids, (size_t)n * 4)))
            return i;
    }
    return -1;
}

static void bucket_remove(hc_item_cache *c, int32_t i) {
    int32_t *p = &c->buckets[c->entries[i].hash & (c->n_buckets - 1)];
    while (*p != i) p = &c->entries[*p].next_in_bucket;
    *p = c->entries[i].next_in_bucket;
}

const float *hc_item_cache_get(hc_item_cache *c, const int32_t *ids, int n_ids) {
    if (!c->capacity) {
        c->misses++;
        return NULL;
    }
    int32_t i = find(c, hash_ids(ids, n_ids), ids, n_ids);
    if (i < 0) {
        c->misses++;
        return NULL;
    }
    c->hits++;
    lru_unlink(c, i);
    lru_push_front(c, i);
    return c->vecs + (size_t)i * (size_t)c->dim;
}

int hc_item_cache_put(hc_item_cache *c, const int32_t *ids, int n_ids, const float *vec) {
    if (!c->capacity) return HC_OK;
    uint64_t h = hash_ids(ids, n_ids);
    int32_t i = find(c, h, ids, n_ids);
    if (i < 0) {
        int32_t *key = malloc((size_t)(n_ids > 0 ? n_ids : 1) * sizeof *key);
        if (!key) return HC_ERR_NOMEM;
        if (n_ids) memcpy(key, ids, (size_t)n_ids * sizeof *key);
        if (c->free_head >= 0) {
            i = c->free_head;
            c->free_head = c->entries[i].next;
            c->size++;
        } else { /* evict the least recently used */
            i = c->tail;
            lru_unlink(c, i);
            bucket_remove(c, i);
            free(c->entries[i].ids);
            c->evictions++;
        }
        entry *e = &c->entries[i];
        e->hash = h;
        e->ids = key;
        e->n_ids = n_ids;
        e->used = 1;
        size_t b = h & (c->n_buckets - 1);
        e->next_in_bucket = c->buckets[b];
        c->buckets[b] = i;
    } else {
        lru_unlink(c, i);
    }
    lru_push_front(c, i);
    memcpy(c->vecs + (size_t)i * (size_t)c->dim, vec, (size_t)c->dim * sizeof *vec);
    return HC_OK;
}

hc_item_cache_stats hc_item_cache_get_stats(const hc_item_cache *c) {
    hc_item_cache_stats s = {c->capacity, c->size, c->hits, c->misses, c->evictions};
    return s;
}
