/* tokenizer_decode.c: ids -> text, in two independent implementations that must agree.
 *
 * hc_tokenizer_decode follows tokenizers' `Tokenizer::decode` literally: ids -> token strings
 * (added tokens first, unknown ids dropped, special ones dropped on request), then each decoder's
 * `decode_chain` over the whole list of strings, then join.
 *
 * hc_detok is the streaming form: every decoder becomes an operator over a stream of pieces, a
 * piece being part of a token (flags: starts a token / ends a token). Operators that can act on
 * part of a token (Replace of a one-character literal, Metaspace, Strip with stop == 0, Fuse) do;
 * the others hold a token until it is complete. ByteFallback holds a run of byte tokens until a
 * non-byte token ends it (one invalid byte turns the whole run into U+FFFD, so no prefix of the
 * run is final before that); ByteLevel holds only an incomplete UTF-8 tail. The test suite checks
 * that the concatenated stream equals hc_tokenizer_decode on every fixture and on random ids.
 */
#include <stdlib.h>
#include <string.h>

#include "tokenizer/tokenizer_internal.h"

static const char REPL[] = "\xEF\xBF\xBD"; /* U+FFFD */

/* ---- shared helpers -------------------------------------------------------------------------- */

/* Replace decoder on one string, appended to out. */
static int dec_replace(const hc_tokenizer *t, const hc_tk_dec *d, pcre2_match_data *md,
                       const char *s, size_t n, hc_tk_buf *out) {
    return hc_tk_replace(s, n, d->re, hc_tk_s(t, d->pattern), d->pattern.len,
                         hc_tk_s(t, d->content), d->content.len, md, out, NULL);
}

static int hexval(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/* "<0xNN>" -> byte (Rust's u8::from_str_radix on the two characters, which also takes "+N"). */
static int byte_token(const char *s, size_t n) {
    if (n != 6 || memcmp(s, "<0x", 3) || s[5] != '>') return -1;
    if (s[3] == '+') return hexval(s[4]);
    int hi = hexval(s[3]), lo = hexval(s[4]);
    return hi < 0 || lo < 0 ? -1 : hi * 16 + lo;
}

/* ByteLevel decoder's per-token bytes: every char mapped back to its byte, or, if any char is not
 * in the byte alphabet, the token's own UTF-8 bytes. */
static int bytelevel_bytes(const char *s, size_t n, hc_tk_buf *out) {
    size_t start = out->len;
    for (size_t i = 0; i < n;) {
        size_t adv;
        uint32_t cp = hc_tk_utf8_decode1(s + i, n - i, &adv);
        int b = hc_tk_cp_to_byte(cp);
        if (b < 0) {
            out->len = start;
            return hc_tk_buf_put(out, s, n);
        }
        uint8_t c = (uint8_t)b;
        if (hc_tk_buf_put(out, &c, 1)) return HC_ERR_NOMEM;
        i += adv;
    }
    return 0;
}

static int metaspace_chars(const hc_tk_dec *d, size_t index, const char *s, size_t n,
                           hc_tk_buf *out) {
    size_t rl = (size_t)d->rep_len, prev = 0;
    int drop = index == 0 && d->prepend_scheme != HC_TK_PREPEND_NEVER;
    for (size_t i = 0; i + rl <= n;) {
        if (!memcmp(s + i, d->rep, rl)) {
            if (hc_tk_buf_put(out, s + prev, i - prev) || (!drop && hc_tk_buf_put(out, " ", 1)))
                return HC_ERR_NOMEM;
            i += rl;
            prev = i;
        } else {
            i++;
        }
    }
    return hc_tk_buf_put(out, s + prev, n - prev);
}

/* Strip on a whole token: up to `start` leading and `stop` trailing occurrences of the char. */
static int strip_whole(const hc_tk_dec *d, const char *s, size_t n, hc_tk_buf *out) {
    char c[4];
    size_t cl = hc_tk_utf8_encode(d->strip_char, c), b = 0, e = n;
    for (size_t k = 0; k < d->start && b + cl <= e && !memcmp(s + b, c, cl); k++)
        b += cl;
    for (size_t k = 0; k < d->stop && e >= b + cl && !memcmp(s + e - cl, c, cl); k++)
        e -= cl;
    return hc_tk_buf_put(out, s + b, e - b);
}

/* ---- batch decode ---------------------------------------------------------------------------- */

typedef struct {
    hc_tk_buf data;  /* token bytes */
    hc_tk_buf spans; /* size_t pairs (off, len) */
} toklist;

static int tl_add(toklist *l, const char *s, size_t n) {
    size_t sp[2] = {l->data.len, n};
    if (hc_tk_buf_put(&l->data, s, n) || hc_tk_buf_put(&l->spans, sp, sizeof sp))
        return HC_ERR_NOMEM;
    return 0;
}
/* Closes a token whose bytes were appended to data since `off`. */
static int tl_close(toklist *l, size_t off) {
    size_t sp[2] = {off, l->data.len - off};
    return hc_tk_buf_put(&l->spans, sp, sizeof sp);
}
static size_t tl_n(const toklist *l) {
    return l->spans.len / (2 * sizeof(size_t));
}
static const char *tl_get(const toklist *l, size_t i, size_t *n) {
    const size_t *sp = (const size_t *)l->spans.p + 2 * i;
    *n = sp[1];
    return l->data.p + sp[0];
}
static void tl_free(toklist *l) {
    hc_tk_buf_free(&l->data);
    hc_tk_buf_free(&l->spans);
}

static int flush_bytes(toklist *out, hc_tk_buf *bytes) {
    int rc = 0;
    if (!bytes->len) return 0;
    if (hc_tk_utf8_valid_prefix((const uint8_t *)bytes->p, bytes->len) == bytes->len)
        rc = tl_add(out, bytes->p, bytes->len);
    else
        for (size_t i = 0; i < bytes->len && !rc; i++)
            rc = tl_add(out, REPL, 3);
    bytes->len = 0;
    return rc;
}

static int decode_step(const hc_tokenizer *t, const hc_tk_dec *d, pcre2_match_data *md,
                       const toklist *in, toklist *out) {
    size_t nt = tl_n(in), n;
    int rc = 0;
    hc_tk_buf bytes = {0};
    switch (d->type) {
    case HC_TK_DEC_REPLACE:
        for (size_t i = 0; i < nt && !rc; i++) {
            const char *s = tl_get(in, i, &n);
            size_t off = out->data.len;
            rc = dec_replace(t, d, md, s, n, &out->data);
            if (!rc) rc = tl_close(out, off);
        }
        break;
    case HC_TK_DEC_BYTEFALLBACK:
        for (size_t i = 0; i < nt && !rc; i++) {
            const char *s = tl_get(in, i, &n);
            int b = byte_token(s, n);
            if (b >= 0) {
                uint8_t c = (uint8_t)b;
                rc = hc_tk_buf_put(&bytes, &c, 1);
            } else {
                rc = flush_bytes(out, &bytes);
                if (!rc) rc = tl_add(out, s, n);
            }
        }
        if (!rc) rc = flush_bytes(out, &bytes);
        break;
    case HC_TK_DEC_FUSE: {
        size_t off = out->data.len;
        for (size_t i = 0; i < nt && !rc; i++) {
            const char *s = tl_get(in, i, &n);
            rc = hc_tk_buf_put(&out->data, s, n);
        }
        if (!rc) rc = tl_close(out, off);
        break;
    }
    case HC_TK_DEC_STRIP:
        for (size_t i = 0; i < nt && !rc; i++) {
            const char *s = tl_get(in, i, &n);
            size_t off = out->data.len;
            rc = strip_whole(d, s, n, &out->data);
            if (!rc) rc = tl_close(out, off);
        }
        break;
    case HC_TK_DEC_BYTELEVEL: {
        for (size_t i = 0; i < nt && !rc; i++) {
            const char *s = tl_get(in, i, &n);
            rc = bytelevel_bytes(s, n, &bytes);
        }
        size_t off = out->data.len;
        if (!rc) rc = hc_tk_utf8_lossy(&out->data, (const uint8_t *)bytes.p, bytes.len);
        if (!rc) rc = tl_close(out, off);
        break;
    }
    case HC_TK_DEC_METASPACE:
        for (size_t i = 0; i < nt && !rc; i++) {
            const char *s = tl_get(in, i, &n);
            size_t off = out->data.len;
            rc = metaspace_chars(d, i, s, n, &out->data);
            if (!rc) rc = tl_close(out, off);
        }
        break;
    default:
        HC_ASSERT(0);
    }
    hc_tk_buf_free(&bytes);
    return rc;
}

static int keep_id(const hc_tokenizer *t, int32_t id, int skip_special) {
    if (id < 0 || (size_t)id >= t->n_vocab || t->id_str[id].len == HC_TK_NONE) return 0;
    return !(skip_special && (t->id_flags[id] & 2));
}

int hc_tokenizer_decode(const hc_tokenizer *t, const int32_t *ids, size_t n, int skip_special,
                        char **text_out, size_t *len_out, hc_errbuf *eb) {
    *text_out = NULL;
    if (len_out) *len_out = 0;
    toklist a = {0}, b = {0};
    hc_tk_buf out = {0};
    pcre2_match_data *md = pcre2_match_data_create(16, NULL);
    int rc = md ? 0 : HC_ERR_NOMEM;
    for (size_t i = 0; i < n && !rc; i++)
        if (keep_id(t, ids[i], skip_special))
            rc = tl_add(&a, hc_tk_s(t, t->id_str[ids[i]]), t->id_str[ids[i]].len);
    for (size_t k = 0; k < t->n_decs && !rc; k++) {
        b.data.len = b.spans.len = 0;
        rc = decode_step(t, &t->decs[k], md, &a, &b);
        toklist sw = a;
        a = b;
        b = sw;
    }
    for (size_t i = 0; i < tl_n(&a) && !rc; i++) {
        size_t sl;
        const char *s = tl_get(&a, i, &sl);
        if (!t->has_decoder && i > 0) rc = hc_tk_buf_put(&out, " ", 1);
        if (!rc) rc = hc_tk_buf_put(&out, s, sl);
    }
    if (!rc) rc = hc_tk_buf_put(&out, "", 1);
    tl_free(&a);
    tl_free(&b);
    pcre2_match_data_free(md);
    if (rc) {
        hc_tk_buf_free(&out);
        return hc_seterr(eb, rc, "decode: %s", hc_strerror(rc));
    }
    *text_out = out.p;
    if (len_out) *len_out = out.len - 1;
    return 0;
}

/* ---- streaming ------------------------------------------------------------------------------- */

enum { PIECE_START = 1, PIECE_END = 2 };

typedef struct {
    hc_tk_buf hold;  /* a token being collected by a whole-token operator */
    int holding;     /* hold holds a started, unfinished token (possibly empty) */
    hc_tk_buf bytes; /* ByteFallback run / ByteLevel undecided tail */
    hc_tk_buf tmp;
    size_t n_tokens; /* tokens started at this operator's input */
    int out_started; /* Fuse / ByteLevel: the single output token has started */
    size_t strip_k;  /* Strip: leading chars examined in the current token */
    int strip_done;
} op_state;

struct hc_detok {
    const hc_tokenizer *tok;
    int skip_special;
    size_t n_fed; /* tokens kept so far (no-decoder case: joined with spaces) */
    op_state *ops;
    pcre2_match_data *md;
    hc_tk_buf out;
};

static int op_push(hc_detok *d, size_t k, const char *s, size_t n, int flags);

static int piecewise(const hc_tokenizer *t, const hc_tk_dec *dc) {
    switch (dc->type) {
    case HC_TK_DEC_REPLACE: {
        if (dc->re || dc->pattern.len == 0) return 0;
        size_t adv;
        hc_tk_utf8_decode1(hc_tk_s(t, dc->pattern), dc->pattern.len, &adv);
        return adv == dc->pattern.len; /* one character never straddles two pieces */
    }
    case HC_TK_DEC_METASPACE:
    case HC_TK_DEC_FUSE:
        return 1;
    case HC_TK_DEC_STRIP:
        return dc->stop == 0;
    default:
        return 0;
    }
}

static int flush_run(hc_detok *d, size_t k) {
    op_state *st = &d->ops[k];
    int rc = 0;
    if (!st->bytes.len) return 0;
    if (hc_tk_utf8_valid_prefix((const uint8_t *)st->bytes.p, st->bytes.len) == st->bytes.len) {
        /* copy: the next operator may not touch this op's buffers, but be safe against reentry */
        st->tmp.len = 0;
        rc = hc_tk_buf_put(&st->tmp, st->bytes.p, st->bytes.len);
        size_t n = st->tmp.len;
        st->bytes.len = 0;
        return rc ? rc : op_push(d, k + 1, st->tmp.p, n, PIECE_START | PIECE_END);
    }
    size_t nb = st->bytes.len;
    st->bytes.len = 0;
    for (size_t i = 0; i < nb && !rc; i++)
        rc = op_push(d, k + 1, REPL, 3, PIECE_START | PIECE_END);
    return rc;
}

/* Emit the decided prefix of the ByteLevel byte tail (all of it when at_end). */
static int bytelevel_emit(hc_detok *d, size_t k, int at_end) {
    op_state *st = &d->ops[k];
    const uint8_t *b = (const uint8_t *)st->bytes.p;
    size_t n = st->bytes.len, i = 0;
    while (i < n) {
        size_t l;
        if (hc_tk_utf8_step(b + i, n - i, &l) == HC_TK_U8_SHORT && !at_end) break;
        i += l;
    }
    st->tmp.len = 0;
    int rc = hc_tk_utf8_lossy(&st->tmp, b, i);
    if (rc) return rc;
    if (n > i) memmove(st->bytes.p, st->bytes.p + i, n - i);
    st->bytes.len = n - i;
    if (!st->tmp.len && !at_end) return 0;
    int flags = (st->out_started ? 0 : PIECE_START) | (at_end ? PIECE_END : 0);
    st->out_started = 1;
    return op_push(d, k + 1, st->tmp.p ? st->tmp.p : "", st->tmp.len, flags);
}

/* The operator on one complete token. */
static int op_whole(hc_detok *d, size_t k, const char *s, size_t n) {
    const hc_tokenizer *t = d->tok;
    const hc_tk_dec *dc = &t->decs[k];
    op_state *st = &d->ops[k];
    int rc;
    switch (dc->type) {
    case HC_TK_DEC_REPLACE:
        st->tmp.len = 0;
        rc = dec_replace(t, dc, d->md, s, n, &st->tmp);
        return rc ? rc
                  : op_push(d, k + 1, st->tmp.p ? st->tmp.p : "", st->tmp.len,
                            PIECE_START | PIECE_END);
    case HC_TK_DEC_STRIP:
        st->tmp.len = 0;
        rc = strip_whole(dc, s, n, &st->tmp);
        return rc ? rc
                  : op_push(d, k + 1, st->tmp.p ? st->tmp.p : "", st->tmp.len,
                            PIECE_START | PIECE_END);
    case HC_TK_DEC_BYTEFALLBACK: {
        int b = byte_token(s, n);
        if (b >= 0) {
            uint8_t c = (uint8_t)b;
            return hc_tk_buf_put(&st->bytes, &c, 1);
        }
        rc = flush_run(d, k);
        return rc ? rc : op_push(d, k + 1, s, n, PIECE_START | PIECE_END);
    }
    case HC_TK_DEC_BYTELEVEL:
        rc = bytelevel_bytes(s, n, &st->bytes);
        return rc ? rc : bytelevel_emit(d, k, 0);
    default:
        HC_ASSERT(0);
    }
    return 0;
}

/* The operator on part of a token (only for piecewise operators). */
static int op_piece(hc_detok *d, size_t k, const char *s, size_t n, int flags) {
    const hc_tokenizer *t = d->tok;
    const hc_tk_dec *dc = &t->decs[k];
    op_state *st = &d->ops[k];
    int rc;
    switch (dc->type) {
    case HC_TK_DEC_REPLACE:
        st->tmp.len = 0;
        rc = dec_replace(t, dc, d->md, s, n, &st->tmp);
        return rc ? rc : op_push(d, k + 1, st->tmp.p ? st->tmp.p : "", st->tmp.len, flags);
    case HC_TK_DEC_METASPACE:
        st->tmp.len = 0;
        rc = metaspace_chars(dc, st->n_tokens - 1, s, n, &st->tmp);
        return rc ? rc : op_push(d, k + 1, st->tmp.p ? st->tmp.p : "", st->tmp.len, flags);
    case HC_TK_DEC_STRIP: { /* stop == 0: only the leading side */
        char c[4];
        size_t cl = hc_tk_utf8_encode(dc->strip_char, c), i = 0;
        while (!st->strip_done && st->strip_k < dc->start && i < n) {
            if (i + cl <= n && !memcmp(s + i, c, cl)) {
                i += cl;
                st->strip_k++;
            } else {
                st->strip_done = 1;
            }
        }
        return op_push(d, k + 1, s + i, n - i, flags);
    }
    case HC_TK_DEC_FUSE: {
        int f = st->out_started ? 0 : PIECE_START;
        st->out_started = 1;
        return op_push(d, k + 1, s, n, f);
    }
    default:
        HC_ASSERT(0);
    }
    return 0;
}

static int op_push(hc_detok *d, size_t k, const char *s, size_t n, int flags) {
    const hc_tokenizer *t = d->tok;
    if (k == t->n_decs) return hc_tk_buf_put(&d->out, s, n);
    op_state *st = &d->ops[k];
    if (flags & PIECE_START) {
        st->n_tokens++;
        st->strip_k = 0;
        st->strip_done = 0;
        st->hold.len = 0;
        st->holding = 0;
    }
    if (piecewise(t, &t->decs[k])) return op_piece(d, k, s, n, flags);
    if ((flags & (PIECE_START | PIECE_END)) == (PIECE_START | PIECE_END))
        return op_whole(d, k, s, n);
    if (hc_tk_buf_put(&st->hold, s, n)) return HC_ERR_NOMEM;
    st->holding = 1;
    if (!(flags & PIECE_END)) return 0;
    /* op_whole reads hold while pushing downstream, which never touches this op's hold */
    st->holding = 0;
    int rc = op_whole(d, k, st->hold.p ? st->hold.p : "", st->hold.len);
    st->hold.len = 0;
    return rc;
}

static int op_finish(hc_detok *d, size_t k) {
    const hc_tokenizer *t = d->tok;
    if (k == t->n_decs) return 0;
    const hc_tk_dec *dc = &t->decs[k];
    op_state *st = &d->ops[k];
    int rc = 0;
    if (!piecewise(t, dc) && st->holding) { /* a partial token ends with the stream */
        st->holding = 0;
        rc = op_whole(d, k, st->hold.p ? st->hold.p : "", st->hold.len);
        st->hold.len = 0;
    }
    if (!rc && dc->type == HC_TK_DEC_BYTEFALLBACK) rc = flush_run(d, k);
    if (!rc && dc->type == HC_TK_DEC_BYTELEVEL) rc = bytelevel_emit(d, k, 1);
    if (!rc && dc->type == HC_TK_DEC_FUSE)
        rc = op_push(d, k + 1, "", 0, (st->out_started ? 0 : PIECE_START) | PIECE_END);
    st->n_tokens = 0;
    st->out_started = 0;
    st->bytes.len = 0;
    st->hold.len = 0;
    st->holding = 0;
    return rc ? rc : op_finish(d, k + 1);
}

hc_detok *hc_detok_new(const hc_tokenizer *tok, int skip_special) {
    hc_detok *d = calloc(1, sizeof *d);
    if (!d) return NULL;
    d->tok = tok;
    d->skip_special = skip_special;
    d->ops = calloc(tok->n_decs ? tok->n_decs : 1, sizeof *d->ops);
    d->md = pcre2_match_data_create(16, NULL);
    if (!d->ops || !d->md || hc_tk_buf_reserve(&d->out, 64)) {
        hc_detok_free(d);
        return NULL;
    }
    return d;
}

void hc_detok_free(hc_detok *d) {
    if (!d) return;
    for (size_t k = 0; d->ops && k < d->tok->n_decs; k++) {
        hc_tk_buf_free(&d->ops[k].hold);
        hc_tk_buf_free(&d->ops[k].bytes);
        hc_tk_buf_free(&d->ops[k].tmp);
    }
    free(d->ops);
    pcre2_match_data_free(d->md);
    hc_tk_buf_free(&d->out);
    free(d);
}

static int finish_out(hc_detok *d, int rc, const char **text, size_t *len) {
    if (!rc) rc = hc_tk_buf_put(&d->out, "", 1);
    if (rc) {
        d->out.len = 0;
        *text = "";
        *len = 0;
        return rc;
    }
    *text = d->out.p;
    *len = d->out.len - 1;
    return 0;
}

int hc_detok_feed(hc_detok *d, int32_t id, const char **text, size_t *len) {
    const hc_tokenizer *t = d->tok;
    d->out.len = 0;
    int rc = 0;
    if (keep_id(t, id, d->skip_special)) {
        const char *s = hc_tk_s(t, t->id_str[id]);
        size_t n = t->id_str[id].len;
        if (!t->has_decoder && d->n_fed > 0) rc = hc_tk_buf_put(&d->out, " ", 1);
        if (!rc) rc = op_push(d, 0, s, n, PIECE_START | PIECE_END);
        d->n_fed++;
    }
    return finish_out(d, rc, text, len);
}

int hc_detok_finish(hc_detok *d, const char **text, size_t *len) {
    d->out.len = 0;
    int rc = op_finish(d, 0);
    d->n_fed = 0;
    return finish_out(d, rc, text, len);
}
