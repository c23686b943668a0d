/* kv_cache.c: block pool, free list and per-sequence block tables. */
#include "model/kv_cache.h"

#include <stdlib.h>
#include <string.h>

int hc_kv_create(hc_kv_cache **out, hc_backend *be, int n_layers, int kv_dim, int block_size,
                 int n_blocks) {
    *out = NULL;
    if (n_layers < 1 || kv_dim < 1 || block_size < 1 || n_blocks < 1) return HC_ERR_INVAL;
    hc_kv_cache *kv = calloc(1, sizeof *kv);
    if (!kv) return HC_ERR_NOMEM;
    kv->be = be;
    kv->n_layers = n_layers;
    kv->kv_dim = kv_dim;
    kv->block_size = block_size;
    kv->n_blocks = n_blocks;
    kv->k = calloc((size_t)n_layers, sizeof *kv->k);
    kv->v = calloc((size_t)n_layers, sizeof *kv->v);
    kv->refcnt = calloc((size_t)n_blocks, sizeof *kv->refcnt);
    kv->free_list = malloc((size_t)n_blocks * sizeof *kv->free_list);
    kv->n_seqs_cap = n_blocks + 64 < (1 << HC_KV_SLOT_BITS) ? n_blocks + 64 : (1 << HC_KV_SLOT_BITS);
    kv->seqs = calloc((size_t)kv->n_seqs_cap, sizeof *kv->seqs);
    kv->free_slots = malloc((size_t)kv->n_seqs_cap * sizeof *kv->free_slots);
    if (!kv->k || !kv->v || !kv->refcnt || !kv->free_list || !kv->seqs || !kv->free_slots) {
        hc_kv_free(kv);
        return HC_ERR_NOMEM;
    }
    int64_t ne[2] = {(int64_t)n_blocks * block_size, kv_dim};
    for (int l = 0; l < n_layers; l++) {
        int rc = hc_tensor_alloc(&kv->k[l], be, HC_DTYPE_F32, 2, ne);
        if (rc == HC_OK) rc = hc_tensor_alloc(&kv->v[l], be, HC_DTYPE_F32, 2, ne);
        if (rc != HC_OK) {
            hc_kv_free(kv);
            return rc;
        }
    }
    /* lowest block ids on top of the stack */
    for (int i = 0; i < n_blocks; i++) kv->free_list[i] = n_blocks - 1 - i;
    kv->n_free = n_blocks;
    for (int i = 0; i < kv->n_seqs_cap; i++) kv->free_slots[i] = kv->n_seqs_cap - 1 - i;
    kv->n_free_slots = kv->n_seqs_cap;
    *out = kv;
    return HC_OK;
}

void hc_kv_free(hc_kv_cache *kv) {
    if (!kv) return;
    for (int l = 0; l < kv->n_layers; l++) {
        if (kv->k) hc_tensor_release(&kv->k[l]);
        if (kv->v) hc_tensor_release(&kv->v[l]);
    }
    if (kv->seqs)
        for (int i = 0; i < kv->n_seqs_cap; i++) free(kv->seqs[i].blocks);
    free(kv->seqs);
    free(kv->free_slots);
    free(kv->k);
    free(kv->v);
    free(kv->refcnt);
    free(kv->free_list);
    free(kv);
}

int hc_kv_reserve_tables(hc_kv_cache *kv, int n_slots, int max_blocks) {
    if (n_slots > kv->n_seqs_cap) n_slots = kv->n_seqs_cap;
    for (int i = 0; i < n_slots; i++) {
        hc_kv_seq *s = &kv->seqs[i];
        if (s->cap_blocks >= max_blocks) continue;
        int32_t *b = realloc(s->blocks, (size_t)max_blocks * sizeof *b);
        if (!b) return HC_ERR_NOMEM;
        s->blocks = b;
        s->cap_blocks = max_blocks;
    }
    return HC_OK;
}

int hc_kv_seq_new(hc_kv_cache *kv, int *seq_id) {
    if (kv->n_free_slots == 0) return HC_ERR_AGAIN;
    int slot = kv->free_slots[--kv->n_free_slots];
    hc_kv_seq *s = &kv->seqs[slot];
    s->in_use = 1;
    s->n_tokens = 0;
    s->n_blocks = 0;
    *seq_id = (s->gen << HC_KV_SLOT_BITS) | slot;
    return HC_OK;
}

int hc_kv_seq_fork(hc_kv_cache *kv, int *seq_id, int src, int n_blocks) {
    hc_kv_seq *from = hc_kv_seq_get(kv, src);
    if (!from || n_blocks < 0 || n_blocks > from->n_blocks ||
        (int64_t)n_blocks * kv->block_size > from->n_tokens)
        return HC_ERR_INVAL;
    int id, rc = hc_kv_seq_new(kv, &id);
    if (rc) return rc;
    hc_kv_seq *s = hc_kv_seq_get(kv, id);
    if (n_blocks > s->cap_blocks) {
        int cap = s->cap_blocks ? s->cap_blocks : 4;
        while (cap < n_blocks) cap *= 2;
        int32_t *b = realloc(s->blocks, (size_t)cap * sizeof *b);
        if (!b) {
            hc_kv_seq_free(kv, id);
            return HC_ERR_NOMEM;
        }
        s->blocks = b;
        s->cap_blocks = cap;
    }
    from = hc_kv_seq_get(kv, src);
    for (int i = 0; i < n_blocks; i++) {
        s->blocks[i] = from->blocks[i];
        kv->refcnt[from->blocks[i]]++;
    }
    s->n_blocks = n_blocks;
    s->n_tokens = n_blocks * kv->block_size;
    *seq_id = id;
    return HC_OK;
}

void hc_kv_seq_free(hc_kv_cache *kv, int seq_id) {
    hc_kv_seq *s = hc_kv_seq_get(kv, seq_id);
    if (!s) return;
    for (int b = 0; b < s->n_blocks; b++) {
        int32_t blk = s->blocks[b];
        HC_ASSERT(kv->refcnt[blk] > 0);
        if (--kv->refcnt[blk] == 0) kv->free_list[kv->n_free++] = blk;
    }
    s->n_blocks = 0;
    s->n_tokens = 0;
    s->in_use = 0;
    s->gen = (s->gen + 1) & ((1 << (30 - HC_KV_SLOT_BITS)) - 1); /* the old handle goes stale */
    kv->free_slots[kv->n_free_slots++] = seq_id & ((1 << HC_KV_SLOT_BITS) - 1);
}

int hc_kv_seq_reserve(hc_kv_cache *kv, int seq_id, int n_more) {
    hc_kv_seq *s = hc_kv_seq_get(kv, seq_id);
    if (!s || n_more < 0 || n_more > INT32_MAX - s->n_tokens) return HC_ERR_INVAL;
    int need = hc_kv_blocks_for(kv, s->n_tokens + n_more) - s->n_blocks;
    if (need <= 0) return HC_OK;
    if (need > kv->n_free) return HC_ERR_AGAIN;
    if (s->n_blocks + need > s->cap_blocks) {
        int cap = s->cap_blocks ? s->cap_blocks : 4;
        while (cap < s->n_blocks + need) cap *= 2;
        int32_t *b = realloc(s->blocks, (size_t)cap * sizeof *b);
        if (!b) return HC_ERR_NOMEM;
        s->blocks = b;
        s->cap_blocks = cap;
    }
    for (int i = 0; i < need; i++) {
        int32_t blk = kv->free_list[--kv->n_free];
        kv->refcnt[blk] = 1;
        s->blocks[s->n_blocks++] = blk;
    }
    return HC_OK;
}

void hc_kv_seq_shrink(hc_kv_cache *kv, int seq_id, int n_blocks) {
    hc_kv_seq *s = hc_kv_seq_get(kv, seq_id);
    if (!s) return;
    int keep = hc_kv_blocks_for(kv, s->n_tokens);
    if (n_blocks < keep) n_blocks = keep;
    while (s->n_blocks > n_blocks) {
        int32_t blk = s->blocks[--s->n_blocks];
        HC_ASSERT(kv->refcnt[blk] > 0);
        if (--kv->refcnt[blk] == 0) kv->free_list[kv->n_free++] = blk;
    }
}

void hc_kv_seq_commit(hc_kv_cache *kv, int seq_id, int n) {
    hc_kv_seq *s = hc_kv_seq_get(kv, seq_id);
    HC_ASSERT(s && s->n_tokens + n <= s->n_blocks * kv->block_size);
    s->n_tokens += n;
}

int hc_kv_n_free_blocks(const hc_kv_cache *kv) { return kv->n_free; }
