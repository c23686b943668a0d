/* item_cache.c: open hash table (chaining through entry indices) + doubly linked LRU list over an
 * array of entries that grows on demand up to the capacity. */
#include "creator/item_cache.h"

#include <stdlib.h>
#include <string.h>

#define HC_ITEM_CACHE_FIRST 64 /* entries allocated by the first insert */

typedef struct entry {
    uint64_t hash;
    int n_ids;
    int32_t next_in_bucket; /* -1 ends the chain */
    int32_t prev, next;     /* LRU list; -1 ends */
    int used;
} entry;

struct hc_item_cache {
    size_t capacity, size;
    size_t n_alloc;   /* entries allocated so far (<= capacity) */
    int dim, max_ids;
    entry *entries;   /* (n_alloc) */
    float *vecs;      /* (n_alloc, dim) */
    int32_t *keys;    /* (n_alloc, max_ids): entry i's ids at keys + i * max_ids */
    int32_t *buckets; /* (n_buckets) head entry index or -1; NULL until the first insert */
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

int hc_item_cache_create(hc_item_cache **out, size_t capacity, int dim, int max_ids) {
    *out = NULL;
    if (dim < 1 || max_ids < 1 || max_ids > (1 << 20) || capacity > (size_t)INT32_MAX / 2 ||
        capacity > SIZE_MAX / ((size_t)dim * sizeof(float) + (size_t)max_ids * sizeof(int32_t) +
                               sizeof(entry)))
        return HC_ERR_INVAL;
    hc_item_cache *c = calloc(1, sizeof *c);
    if (!c) return HC_ERR_NOMEM;
    c->capacity = capacity;
    c->dim = dim;
    c->max_ids = max_ids;
    hc_item_cache_clear(c);
    c->hits = c->misses = c->evictions = 0;
    *out = c;
    return HC_OK;
}

/* Links every entry of [from, n_alloc) into the free list. */
static void free_list_add(hc_item_cache *c, size_t from) {
    for (size_t i = c->n_alloc; i-- > from;) {
        c->entries[i].used = 0;
        c->entries[i].next = c->free_head;
        c->free_head = (int32_t)i;
    }
}

void hc_item_cache_clear(hc_item_cache *c) {
    c->free_head = -1;
    free_list_add(c, 0);
    if (c->buckets)
        for (size_t i = 0; i < c->n_buckets; i++) c->buckets[i] = -1;
    c->head = c->tail = -1;
    c->size = 0;
}

void hc_item_cache_free(hc_item_cache *c) {
    if (!c) return;
    free(c->entries);
    free(c->vecs);
    free(c->keys);
    free(c->buckets);
    free(c);
}

/* Doubles the table (up to the capacity), keeping at least 2 buckets per entry. HC_ERR_NOMEM
 * leaves the cache as it was. */
static int grow(hc_item_cache *c) {
    size_t n = c->n_alloc ? c->n_alloc * 2 : HC_ITEM_CACHE_FIRST;
    if (n > c->capacity) n = c->capacity;
    size_t nb = c->n_buckets ? c->n_buckets : 1;
    while (nb < n * 2) nb <<= 1;
    entry *e = realloc(c->entries, n * sizeof *e);
    if (!e) return HC_ERR_NOMEM;
    c->entries = e;
    float *v = realloc(c->vecs, n * (size_t)c->dim * sizeof *v);
    if (!v) return HC_ERR_NOMEM;
    c->vecs = v;
    int32_t *k = realloc(c->keys, n * (size_t)c->max_ids * sizeof *k);
    if (!k) return HC_ERR_NOMEM;
    c->keys = k;
    if (nb != c->n_buckets) {
        int32_t *b = malloc(nb * sizeof *b);
        if (!b) return HC_ERR_NOMEM;
        for (size_t i = 0; i < nb; i++) b[i] = -1;
        for (size_t i = 0; i < c->n_alloc; i++) { /* rehash */
            if (!c->entries[i].used) continue;
            size_t h = c->entries[i].hash & (nb - 1);
            c->entries[i].next_in_bucket = b[h];
            b[h] = (int32_t)i;
        }
        free(c->buckets);
        c->buckets = b;
        c->n_buckets = nb;
    }
    size_t old = c->n_alloc;
    c->n_alloc = n;
    free_list_add(c, old);
    return HC_OK;
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
    if (!c->buckets) return -1;
    for (int32_t i = c->buckets[h & (c->n_buckets - 1)]; i >= 0; i = c->entries[i].next_in_bucket) {
        const entry *e = &c->entries[i];
        if (e->hash == h && e->n_ids == n &&
            (n == 0 || !memcmp(c->keys + (size_t)i * (size_t)c->max_ids, ids, (size_t)n * 4)))
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
    if (n_ids < 0 || n_ids > c->max_ids) return HC_ERR_RANGE;
    if (!c->capacity) return HC_OK;
    uint64_t h = hash_ids(ids, n_ids);
    int32_t i = find(c, h, ids, n_ids);
    if (i < 0) {
        /* a full table grows before anything is evicted; if it cannot, evict */
        if (c->free_head < 0 && c->n_alloc < c->capacity && grow(c) != HC_OK && c->size == 0)
            return HC_ERR_NOMEM;
        if (c->free_head >= 0) {
            i = c->free_head;
            c->free_head = c->entries[i].next;
            c->size++;
        } else { /* evict the least recently used */
            i = c->tail;
            lru_unlink(c, i);
            bucket_remove(c, i);
            c->evictions++;
        }
        entry *e = &c->entries[i];
        e->hash = h;
        if (n_ids) memcpy(c->keys + (size_t)i * (size_t)c->max_ids, ids, (size_t)n_ids * 4);
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

size_t hc_item_cache_entry_bytes(int dim, int max_ids) {
    /* buckets: a power of two >= the entries, so at most 2 per entry */
    return (size_t)(dim > 0 ? dim : 1) * sizeof(float) +
           (size_t)(max_ids > 0 ? max_ids : 1) * sizeof(int32_t) + sizeof(entry) +
           2 * sizeof(int32_t);
}

hc_item_cache_stats hc_item_cache_get_stats(const hc_item_cache *c) {
    hc_item_cache_stats s = {c->capacity, c->size, c->hits, c->misses, c->evictions, 0};
    s.bytes = c->n_alloc * ((size_t)c->dim * sizeof(float) + (size_t)c->max_ids * sizeof(int32_t) +
                            sizeof(entry)) +
              c->n_buckets * sizeof(int32_t);
    return s;
}
