/* cache.c: see cache.h. */
#include "cache.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

typedef struct ent {
    struct ent *hnext;       /* bucket chain */
    struct ent *prev, *next; /* LRU list: head most recent */
    uint64_t hash;
    size_t key_len, val_len, val_off, bytes;
    unsigned char data[];    /* key, padding to 8, value */
} ent;

struct hcd_cache {
    size_t max_bytes, bytes, entries, n_buckets;
    ent **buckets;
    ent *head, *tail;
    uint64_t hits, misses, evictions, inserts, too_large;
};

uint64_t hcd_hash(const void *p, size_t n) {
    return XXH3_64bits(p, n);
}

static size_t val_offset(size_t key_len) {
    return (key_len + 7) / 8 * 8;
}

size_t hcd_cache_entry_bytes(size_t key_len, size_t val_len) {
    /* the entry itself, and its share of the bucket table (one pointer per entry at most) */
    return sizeof(ent) + val_offset(key_len) + val_len + sizeof(ent *);
}

int hcd_cache_create(hcd_cache **out, size_t max_bytes) {
    *out = NULL;
    hcd_cache *c = calloc(1, sizeof *c);
    if (!c) return -1;
    c->max_bytes = max_bytes;
    if (max_bytes) {
        c->n_buckets = 64;
        c->buckets = calloc(c->n_buckets, sizeof *c->buckets);
        if (!c->buckets) {
            free(c);
            return -1;
        }
    }
    *out = c;
    return 0;
}

void hcd_cache_free(hcd_cache *c) {
    if (!c) return;
    for (ent *e = c->head; e;) {
        ent *nx = e->next;
        free(e);
        e = nx;
    }
    free(c->buckets);
    free(c);
}

int hcd_cache_enabled(const hcd_cache *c) {
    return c && c->max_bytes > 0;
}

static void lru_unlink(hcd_cache *c, ent *e) {
    if (e->prev) e->prev->next = e->next;
    else c->head = e->next;
    if (e->next) e->next->prev = e->prev;
    else c->tail = e->prev;
    e->prev = e->next = NULL;
}

static void lru_push_front(hcd_cache *c, ent *e) {
    e->prev = NULL;
    e->next = c->head;
    if (c->head) c->head->prev = e;
    c->head = e;
    if (!c->tail) c->tail = e;
}

static ent **find_slot(hcd_cache *c, uint64_t hash, const void *key, size_t key_len) {
    ent **p = &c->buckets[hash & (c->n_buckets - 1)];
    for (; *p; p = &(*p)->hnext)
        if ((*p)->hash == hash && (*p)->key_len == key_len && !memcmp((*p)->data, key, key_len))
            return p;
    return p;
}

/* Removes the entry at *slot from the table and the list and frees it. */
static void remove_at(hcd_cache *c, ent **slot) {
    ent *e = *slot;
    *slot = e->hnext;
    lru_unlink(c, e);
    c->bytes -= e->bytes;
    c->entries--;
    free(e);
}

static void evict_lru(hcd_cache *c) {
    ent *e = c->tail;
    ent **p = &c->buckets[e->hash & (c->n_buckets - 1)];
    while (*p != e)
        p = &(*p)->hnext;
    remove_at(c, p);
    c->evictions++;
}

/* Doubles the bucket table (best effort: on failure the chains just get longer). */
static void grow(hcd_cache *c) {
    size_t nb = c->n_buckets * 2;
    ent **b = calloc(nb, sizeof *b);
    if (!b) return;
    for (size_t i = 0; i < c->n_buckets; i++)
        for (ent *e = c->buckets[i]; e;) {
            ent *nx = e->hnext;
            e->hnext = b[e->hash & (nb - 1)];
            b[e->hash & (nb - 1)] = e;
            e = nx;
        }
    free(c->buckets);
    c->buckets = b;
    c->n_buckets = nb;
}

const void *hcd_cache_get(hcd_cache *c, uint64_t hash, const void *key, size_t key_len,
                          size_t *val_len) {
    if (!hcd_cache_enabled(c)) return NULL;
    ent *e = *find_slot(c, hash, key, key_len);
    if (!e) {
        c->misses++;
        return NULL;
    }
    c->hits++;
    if (c->head != e) {
        lru_unlink(c, e);
        lru_push_front(c, e);
    }
    if (val_len) *val_len = e->val_len;
    return e->data + e->val_off;
}

int hcd_cache_put(hcd_cache *c, uint64_t hash, const void *key, size_t key_len, const void *val,
                  size_t val_len) {
    if (!hcd_cache_enabled(c)) return 0;
    ent **slot = find_slot(c, hash, key, key_len);
    if (*slot) remove_at(c, slot);
    size_t bytes = hcd_cache_entry_bytes(key_len, val_len);
    if (bytes > c->max_bytes) {
        c->too_large++;
        return 0;
    }
    ent *e = malloc(sizeof(ent) + val_offset(key_len) + val_len);
    if (!e) return -1;
    e->hash = hash;
    e->key_len = key_len;
    e->val_len = val_len;
    e->val_off = val_offset(key_len);
    e->bytes = bytes;
    memcpy(e->data, key, key_len);
    if (val_len) memcpy(e->data + e->val_off, val, val_len);
    while (c->bytes + bytes > c->max_bytes)
        evict_lru(c);
    if (c->entries + 1 > c->n_buckets) grow(c);
    slot = &c->buckets[hash & (c->n_buckets - 1)];
    e->hnext = *slot;
    *slot = e;
    lru_push_front(c, e);
    c->bytes += bytes;
    c->entries++;
    c->inserts++;
    return 1;
}

hcd_cache_stats hcd_cache_get_stats(const hcd_cache *c) {
    hcd_cache_stats st = {c->max_bytes, c->bytes,     c->entries, c->hits,
                          c->misses,    c->evictions, c->inserts, c->too_large};
    return st;
}

/* ---- key and value building ------------------------------------------------------------- */

void hcd_bytes_add(hcd_bytes *k, const void *p, size_t n) {
    if (k->len + n > k->cap) {
        size_t cap = k->cap ? k->cap * 2 : 256;
        while (cap < k->len + n)
            cap *= 2;
        unsigned char *b = realloc(k->b, cap);
        if (!b) {
            fprintf(stderr, "hllm-creatord: out of memory\n");
            abort();
        }
        k->b = b;
        k->cap = cap;
    }
    if (n) memcpy(k->b + k->len, p, n);
    k->len += n;
}

void hcd_bytes_i32(hcd_bytes *k, int32_t v) {
    hcd_bytes_add(k, &v, sizeof v);
}

void hcd_bytes_u64(hcd_bytes *k, uint64_t v) {
    hcd_bytes_add(k, &v, sizeof v);
}

void hcd_bytes_free(hcd_bytes *k) {
    free(k->b);
    memset(k, 0, sizeof *k);
}
