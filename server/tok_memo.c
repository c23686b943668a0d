/* tok_memo.c: the loop's tokenization memo. hc_creator_tokenize_request is a pure function of
 * its texts (the history titles, the ad's title and description) for the daemon's lifetime (the
 * package and its tokenizers never change under it), and the history tokens are needed by every
 * request, a cached one included (the user-cache key is made of them): the same texts are
 * tokenized once and their ids kept in a byte-bounded LRU (cache.c) of TOK_MEMO_BYTES. Only
 * successful tokenizations are kept; a failure is recomputed (and reported) each time. The answer
 * is the same hc_creq fields and hc_creq_buf buffers hc_creator_tokenize_request gives (freed
 * with hc_creq_buf_free). Loop thread only. */
#include "server.h"

#define TOK_MEMO_BYTES ((size_t)8 << 20)

static void key_text(hcd_bytes *k, const char *t, size_t n) {
    hcd_bytes_u64(k, (uint64_t)n);
    hcd_bytes_add(k, t, n);
}

static int32_t *dup_i32(const unsigned char *p, int n) {
    int32_t *d = xrealloc(NULL, sizeof(int32_t) * (size_t)(n ? n : 1));
    if (n) memcpy(d, p, sizeof(int32_t) * (size_t)n);
    return d;
}

int tokenize_memo(server *s, const hc_history *h, const char *at, size_t atl, const char *ad,
                  size_t adl, hc_creq *req, hc_creq_buf *buf, hc_errbuf *eb) {
    if (!s->tok_memo && hcd_cache_create(&s->tok_memo, TOK_MEMO_BYTES)) s->tok_memo = NULL;
    if (!s->tok_memo || !h || h->n < 0 || (h->n > 0 && (!h->titles || !h->lens)))
        return hc_creator_tokenize_request(s->creator, s->item_ctx, s->creative_ctx, h, at, atl,
                                           ad, adl, req, buf, eb);
    hcd_bytes k = {0};
    hcd_bytes_i32(&k, (at ? 1 : 0) | (ad ? 2 : 0));
    hcd_bytes_i32(&k, h->n);
    for (int i = 0; i < h->n; i++)
        key_text(&k, h->titles[i], h->lens[i]);
    if (at) key_text(&k, at, atl);
    if (ad) key_text(&k, ad, adl);
    const uint64_t hash = hcd_hash(k.b, k.len);
    size_t n;
    const unsigned char *v = hcd_cache_get(s->tok_memo, hash, k.b, k.len, &n);
    if (v) {
        int32_t c[3]; /* n_items, item ids, prompt2 ids */
        memcpy(c, v, sizeof c);
        if (n != sizeof c + sizeof(int32_t) * ((size_t)c[0] + (size_t)c[1] + (size_t)c[2]))
            abort(); /* written below */
        memset(buf, 0, sizeof *buf);
        const unsigned char *p = v + sizeof c;
        buf->item_lens = dup_i32(p, c[0]);
        p += sizeof(int32_t) * (size_t)c[0];
        buf->item_ids = dup_i32(p, c[1]);
        p += sizeof(int32_t) * (size_t)c[1];
        buf->prompt2 = dup_i32(p, c[2]);
        req->n_items = c[0];
        req->item_lens = buf->item_lens;
        req->item_ids = buf->item_ids;
        req->prompt2 = buf->prompt2;
        req->n_prompt2 = c[2];
        hcd_bytes_free(&k);
        return HC_OK;
    }
    int rc = hc_creator_tokenize_request(s->creator, s->item_ctx, s->creative_ctx, h, at, atl, ad,
                                         adl, req, buf, eb);
    if (rc == HC_OK) {
        int32_t n_ids = 0;
        for (int i = 0; i < req->n_items; i++)
            n_ids += req->item_lens[i];
        hcd_bytes val = {0};
        hcd_bytes_i32(&val, req->n_items);
        hcd_bytes_i32(&val, n_ids);
        hcd_bytes_i32(&val, req->n_prompt2);
        hcd_bytes_add(&val, req->item_lens, sizeof(int32_t) * (size_t)req->n_items);
        hcd_bytes_add(&val, req->item_ids, sizeof(int32_t) * (size_t)n_ids);
        hcd_bytes_add(&val, req->prompt2, sizeof(int32_t) * (size_t)req->n_prompt2);
        (void)hcd_cache_put(s->tok_memo, hash, k.b, k.len, val.b, val.len); /* not kept: recomputed */
        hcd_bytes_free(&val);
    }
    hcd_bytes_free(&k);
    return rc;
}
