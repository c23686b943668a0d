/* tokenizer_bpe.c: the BPE model (hash maps for vocabulary and merge ranks, a binary-heap merge
 * loop over a linked list of symbols) and the per-context word cache, plus the small containers
 * the other tokenizer files share.
 *
 * The merge loop mirrors tokenizers' `Word::merge_all` step for step: a min-heap ordered by
 * (rank, position); popped entries whose symbol was merged away, or whose pair no longer maps to
 * the same new id, are skipped; after a merge the new left and right pairs are pushed. That order
 * matters: it decides ties exactly the way the Rust code does.
 */
#include <stdlib.h>
#include <string.h>

#include "tokenizer/tokenizer_internal.h"

/* ---- containers ------------------------------------------------------------------------------ */

int hc_tk_buf_reserve(hc_tk_buf *b, size_t extra) {
    if (b->len + extra <= b->cap) return 0;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < b->len + extra)
        cap *= 2;
    char *p = realloc(b->p, cap);
    if (!p) return HC_ERR_NOMEM;
    b->p = p;
    b->cap = cap;
    return 0;
}

int hc_tk_buf_put(hc_tk_buf *b, const void *s, size_t n) {
    if (hc_tk_buf_reserve(b, n)) return HC_ERR_NOMEM;
    if (n) memcpy(b->p + b->len, s, n);
    b->len += n;
    return 0;
}

void hc_tk_buf_free(hc_tk_buf *b) {
    free(b->p);
    memset(b, 0, sizeof *b);
}

uint32_t hc_tk_hash(const char *s, size_t n) {
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < n; i++)
        h = (h ^ (uint8_t)s[i]) * 16777619u;
    return h ^ (h >> 15);
}

static uint32_t pow2_at_least(size_t n) {
    uint32_t c = 16;
    while (c < n)
        c <<= 1;
    return c;
}

int hc_tk_strmap_build(hc_tk_strmap *m, const hc_tokenizer *t, const hc_tk_str *strs, size_t n) {
    uint32_t cap = pow2_at_least(n * 2 + 1);
    m->slots = calloc(cap, sizeof *m->slots);
    if (!m->slots) return HC_ERR_NOMEM;
    m->mask = cap - 1;
    for (size_t i = 0; i < n; i++) {
        if (strs[i].len == HC_TK_NONE) continue;
        const char *s = hc_tk_s(t, strs[i]);
        uint32_t full = hc_tk_hash(s, strs[i].len), h = full & m->mask;
        uint64_t entry = (uint64_t)full << 32 | ((uint32_t)i + 1);
        for (;; h = (h + 1) & m->mask) {
            uint64_t v = m->slots[h];
            if (!v) {
                m->slots[h] = entry;
                break;
            }
            /* duplicate string: the later index wins (serde map semantics: last key wins) */
            uint32_t j = (uint32_t)v - 1;
            if ((uint32_t)(v >> 32) == full && strs[j].len == strs[i].len &&
                !memcmp(hc_tk_s(t, strs[j]), s, strs[i].len)) {
                m->slots[h] = entry;
                break;
            }
        }
    }
    return 0;
}

int64_t hc_tk_strmap_get(const hc_tk_strmap *m, const hc_tokenizer *t, const hc_tk_str *strs,
                         const char *s, size_t n) {
    if (!m->slots) return -1;
    uint32_t full = hc_tk_hash(s, n), h = full & m->mask;
    for (;; h = (h + 1) & m->mask) {
        uint64_t v = m->slots[h];
        if (!v) return -1;
        if ((uint32_t)(v >> 32) != full) continue;
        uint32_t j = (uint32_t)v - 1;
        if (strs[j].len == n && !memcmp(hc_tk_s(t, strs[j]), s, n)) return j;
    }
}

static inline uint64_t pair_hash(uint64_t k) {
    k ^= k >> 33;
    k *= 0xff51afd7ed558ccdULL;
    k ^= k >> 33;
    return k;
}

int hc_tk_pairmap_init(hc_tk_pairmap *m, size_t n) {
    uint64_t cap = pow2_at_least(n * 2 + 1);
    m->keys = calloc(cap, sizeof *m->keys);
    m->rank = malloc(cap * sizeof *m->rank);
    m->new_id = malloc(cap * sizeof *m->new_id);
    if (!m->keys || !m->rank || !m->new_id) return HC_ERR_NOMEM;
    m->mask = cap - 1;
    return 0;
}

int hc_tk_pairmap_put(hc_tk_pairmap *m, uint32_t a, uint32_t b, uint32_t rank, uint32_t id) {
    uint64_t key = ((uint64_t)a << 32 | b) + 1;
    for (uint64_t h = pair_hash(key) & m->mask;; h = (h + 1) & m->mask) {
        if (!m->keys[h] || m->keys[h] == key) { /* a repeated pair: the later line wins */
            m->keys[h] = key;
            m->rank[h] = rank;
            m->new_id[h] = id;
            return 0;
        }
    }
}

int hc_tk_pairmap_get(const hc_tk_pairmap *m, uint32_t a, uint32_t b, uint32_t *rank,
                      uint32_t *id) {
    uint64_t key = ((uint64_t)a << 32 | b) + 1;
    for (uint64_t h = pair_hash(key) & m->mask;; h = (h + 1) & m->mask) {
        uint64_t k = m->keys[h];
        if (!k) return 0;
        if (k == key) {
            *rank = m->rank[h];
            *id = m->new_id[h];
            return 1;
        }
    }
}

/* ---- BPE ------------------------------------------------------------------------------------- */

typedef struct {
    int32_t id;
    int32_t prev, next;
    uint32_t len; /* bytes of the original piece; 0 = merged away */
} sym_t;

typedef struct {
    uint32_t rank, pos, new_id;
} merge_t;

struct hc_tk_cache_entry {
    uint32_t hash, key_off, key_len, ids_off, n_ids;
};

static inline int merge_less(const merge_t *a, const merge_t *b) {
    return a->rank != b->rank ? a->rank < b->rank : a->pos < b->pos;
}

static void heap_push(merge_t *h, size_t *n, merge_t m) {
    size_t i = (*n)++;
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (!merge_less(&m, &h[p])) break;
        h[i] = h[p];
        i = p;
    }
    h[i] = m;
}

static merge_t heap_pop(merge_t *h, size_t *n) {
    merge_t top = h[0], last = h[--(*n)];
    size_t i = 0;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= *n) break;
        if (c + 1 < *n && merge_less(&h[c + 1], &h[c])) c++;
        if (!merge_less(&h[c], &last)) break;
        h[i] = h[c];
        i = c;
    }
    if (*n) h[i] = last;
    return top;
}

static int ensure(void **p, size_t *cap, size_t need, size_t elem) {
    if (need <= *cap) return 0;
    size_t c = *cap ? *cap : 64;
    while (c < need)
        c *= 2;
    void *q = realloc(*p, c * elem);
    if (!q) return HC_ERR_NOMEM;
    *p = q;
    *cap = c;
    return 0;
}

static int push_id(hc_tok_ctx *ctx, int32_t id) {
    return hc_tk_buf_put(&ctx->ids, &id, sizeof id);
}

static int add_sym(hc_tok_ctx *ctx, size_t *n, int32_t id, uint32_t len) {
    if (ensure(&ctx->sym, &ctx->sym_cap, *n + 1, sizeof(sym_t))) return HC_ERR_NOMEM;
    sym_t *s = (sym_t *)ctx->sym + *n;
    s->id = id;
    s->len = len;
    s->prev = (int32_t)*n - 1;
    s->next = -1;
    if (*n) ((sym_t *)ctx->sym)[*n - 1].next = (int32_t)*n;
    (*n)++;
    return 0;
}

static int bpe_word(const hc_tokenizer *t, hc_tok_ctx *ctx, const char *s, size_t n) {
    size_t ns = 0;
    int32_t unk_pending = -1; /* unk id while an unknown run is pending */
    uint32_t unk_len = 0;
    for (size_t i = 0; i < n;) {
        size_t adv;
        hc_tk_utf8_decode1(s + i, n - i, &adv);
        int64_t id = hc_tk_strmap_get(&t->vocab, t, t->model_str, s + i, adv);
        if (id >= 0) {
            if (unk_pending >= 0) {
                if (add_sym(ctx, &ns, unk_pending, unk_len)) return HC_ERR_NOMEM;
                unk_pending = -1;
            }
            if (add_sym(ctx, &ns, (int32_t)id, (uint32_t)adv)) return HC_ERR_NOMEM;
            i += adv;
            continue;
        }
        if (t->byte_fallback) {
            int all = 1;
            for (size_t k = 0; k < adv; k++)
                if (t->byte_ids[(uint8_t)s[i + k]] < 0) all = 0;
            if (all) { /* note: a pending unk is not flushed here, exactly as in tokenizers */
                for (size_t k = 0; k < adv; k++)
                    if (add_sym(ctx, &ns, t->byte_ids[(uint8_t)s[i + k]], 1)) return HC_ERR_NOMEM;
                i += adv;
                continue;
            }
        }
        if (t->unk_id >= 0) {
            if (unk_pending >= 0 && t->fuse_unk) {
                unk_len += (uint32_t)adv;
            } else {
                if (unk_pending >= 0 && add_sym(ctx, &ns, unk_pending, unk_len))
                    return HC_ERR_NOMEM;
                unk_pending = t->unk_id;
                unk_len = (uint32_t)adv;
            }
        }
        i += adv;
    }
    if (unk_pending >= 0 && add_sym(ctx, &ns, unk_pending, unk_len)) return HC_ERR_NOMEM;

    if (ensure(&ctx->heap, &ctx->heap_cap, ns * 2 + 4, sizeof(merge_t))) return HC_ERR_NOMEM;
    sym_t *sym = ctx->sym;
    merge_t *heap = ctx->heap;
    size_t nh = 0;
    for (size_t i = 0; i + 1 < ns; i++) {
        uint32_t rank, nid;
        if (hc_tk_pairmap_get(&t->merges, (uint32_t)sym[i].id, (uint32_t)sym[i + 1].id, &rank,
                              &nid))
            heap_push(heap, &nh, (merge_t){rank, (uint32_t)i, nid});
    }
    while (nh) {
        merge_t top = heap_pop(heap, &nh);
        sym_t *cur = &sym[top.pos];
        if (cur->len == 0 || cur->next == -1) continue;
        sym_t right = sym[cur->next];
        uint32_t rank, nid;
        if (!hc_tk_pairmap_get(&t->merges, (uint32_t)cur->id, (uint32_t)right.id, &rank, &nid) ||
            nid != top.new_id)
            continue;
        size_t next_pos = (size_t)cur->next;
        cur->id = (int32_t)top.new_id;
        cur->len += right.len;
        cur->next = right.next;
        sym[next_pos].len = 0;
        if (right.next > -1 && (size_t)right.next < ns) sym[right.next].prev = (int32_t)top.pos;
        /* heap capacity: each merge pops one entry and pushes at most two; grow if needed */
        if (ensure(&ctx->heap, &ctx->heap_cap, nh + 2, sizeof(merge_t))) return HC_ERR_NOMEM;
        heap = ctx->heap;
        if (cur->prev >= 0) {
            if (hc_tk_pairmap_get(&t->merges, (uint32_t)sym[cur->prev].id, (uint32_t)cur->id, &rank,
                                  &nid))
                heap_push(heap, &nh, (merge_t){rank, (uint32_t)cur->prev, nid});
        }
        if (cur->next >= 0 && (size_t)cur->next < ns) {
            if (hc_tk_pairmap_get(&t->merges, (uint32_t)cur->id, (uint32_t)sym[cur->next].id, &rank,
                                  &nid))
                heap_push(heap, &nh, (merge_t){rank, top.pos, nid});
        }
    }
    for (size_t i = 0; i < ns; i++)
        if (sym[i].len && push_id(ctx, sym[i].id)) return HC_ERR_NOMEM;
    return 0;
}

static void cache_clear(hc_tok_ctx *ctx) {
    if (ctx->cache_slots)
        memset(ctx->cache_slots, 0, ((size_t)ctx->cache_mask + 1) * sizeof(uint32_t));
    ctx->cache_n = 0;
    ctx->cache_data.len = 0;
}

int hc_tk_bpe(const hc_tokenizer *t, hc_tok_ctx *ctx, const char *s, size_t n) {
    if (n == 0) return 0;
    if (t->ignore_merges) {
        int64_t id = hc_tk_strmap_get(&t->vocab, t, t->model_str, s, n);
        if (id >= 0) return push_id(ctx, (int32_t)id);
    }
    const int cacheable = n <= 256;
    uint32_t h = 0, slot = 0;
    if (cacheable) {
        if (!ctx->cache_slots) {
            ctx->cache_mask = HC_TK_CACHE_MAX * 2 - 1;
            ctx->cache_slots = calloc((size_t)ctx->cache_mask + 1, sizeof(uint32_t));
            ctx->cache_ent = malloc(HC_TK_CACHE_MAX * sizeof *ctx->cache_ent);
            if (!ctx->cache_slots || !ctx->cache_ent) return HC_ERR_NOMEM;
        }
        h = hc_tk_hash(s, n);
        for (slot = h & ctx->cache_mask;; slot = (slot + 1) & ctx->cache_mask) {
            uint32_t v = ctx->cache_slots[slot];
            if (!v) break;
            struct hc_tk_cache_entry *e = &ctx->cache_ent[v - 1];
            if (e->hash == h && e->key_len == n && !memcmp(ctx->cache_data.p + e->key_off, s, n))
                return hc_tk_buf_put(&ctx->ids, ctx->cache_data.p + e->ids_off,
                                     e->n_ids * sizeof(int32_t));
        }
    }
    size_t before = ctx->ids.len;
    int rc = bpe_word(t, ctx, s, n);
    if (rc || !cacheable) return rc;
    if (ctx->cache_n >= HC_TK_CACHE_MAX || ctx->cache_data.len > ((size_t)8 << 20)) {
        cache_clear(ctx);
        for (slot = h & ctx->cache_mask; ctx->cache_slots[slot];
             slot = (slot + 1) & ctx->cache_mask) {
        }
    }
    size_t n_ids = (ctx->ids.len - before) / sizeof(int32_t);
    struct hc_tk_cache_entry e = {h, 0, (uint32_t)n, 0, (uint32_t)n_ids};
    e.key_off = (uint32_t)ctx->cache_data.len;
    if (hc_tk_buf_put(&ctx->cache_data, s, n)) return HC_ERR_NOMEM;
    e.ids_off = (uint32_t)ctx->cache_data.len;
    if (hc_tk_buf_put(&ctx->cache_data, ctx->ids.p + before, n_ids * sizeof(int32_t)))
        return HC_ERR_NOMEM;
    ctx->cache_ent[ctx->cache_n] = e;
    ctx->cache_slots[slot] = ++ctx->cache_n;
    return 0;
}

void hc_tk_bpe_ctx_free(hc_tok_ctx *ctx) {
    free(ctx->sym);
    free(ctx->heap);
    free(ctx->cache_slots);
    free(ctx->cache_ent);
    hc_tk_buf_free(&ctx->cache_data);
}
