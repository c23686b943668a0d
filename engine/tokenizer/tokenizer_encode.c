/* tokenizer_encode.c: text -> ids. UTF-8 repair, added-token extraction, normalizers,
 * pre-tokenizers, then the BPE model per piece, in the order of tokenizers'
 * `Tokenizer::encode` (AddedVocabulary::extract_and_normalize, do_pre_tokenize, do_tokenize).
 *
 * Regexes: tokenizer.json patterns are Oniguruma (Ruby syntax) in the `tokenizers` library; we
 * run them on PCRE2 with PCRE2_UTF | PCRE2_UCP and JIT. The two differ in one place that matters
 * for the supported families: Oniguruma's \s is Unicode White_Space (includes U+0085), PCRE2's
 * is not; hc_tk_regex_compile rewrites \s (and \S outside classes) to the White_Space set.
 * Text is made valid UTF-8 once per call (lossy repair), so every match runs with
 * PCRE2_NO_UTF_CHECK: linear, and never JIT on invalid UTF-8.
 */
#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

#include "tokenizer/tokenizer_internal.h"

#if defined(__has_include)
#if __has_include(<valgrind/valgrind.h>)
#include <valgrind/valgrind.h>
#define HC_RUNNING_ON_VALGRIND RUNNING_ON_VALGRIND
#endif
#endif
#ifndef HC_RUNNING_ON_VALGRIND
#define HC_RUNNING_ON_VALGRIND 0
#endif

/* ---- UTF-8 ----------------------------------------------------------------------------------- */

int hc_tk_utf8_step(const uint8_t *s, size_t n, size_t *len) {
    uint8_t b = s[0];
    if (b < 0x80) {
        *len = 1;
        return HC_TK_U8_OK;
    }
    size_t need;
    uint8_t lo = 0x80, hi = 0xBF; /* allowed range of the second byte */
    if (b >= 0xC2 && b <= 0xDF)
        need = 2;
    else if (b == 0xE0)
        need = 3, lo = 0xA0;
    else if (b == 0xED)
        need = 3, hi = 0x9F;
    else if (b >= 0xE1 && b <= 0xEF)
        need = 3;
    else if (b == 0xF0)
        need = 4, lo = 0x90;
    else if (b >= 0xF1 && b <= 0xF3)
        need = 4;
    else if (b == 0xF4)
        need = 4, hi = 0x8F;
    else {
        *len = 1;
        return HC_TK_U8_BAD;
    }
    for (size_t k = 1; k < need; k++) {
        if (k >= n) {
            *len = k;
            return HC_TK_U8_SHORT;
        }
        uint8_t c = s[k];
        if (k == 1 ? (c < lo || c > hi) : (c < 0x80 || c > 0xBF)) {
            *len = k;
            return HC_TK_U8_BAD;
        }
    }
    *len = need;
    return HC_TK_U8_OK;
}

size_t hc_tk_utf8_valid_prefix(const uint8_t *s, size_t n) {
    size_t i = 0;
    while (i < n) {
        if (s[i] < 0x80) {
            i++;
            continue;
        }
        size_t l;
        if (hc_tk_utf8_step(s + i, n - i, &l) != HC_TK_U8_OK) return i;
        i += l;
    }
    return n;
}

int hc_tk_utf8_lossy(hc_tk_buf *out, const uint8_t *s, size_t n) {
    size_t i = 0;
    while (i < n) {
        size_t v = hc_tk_utf8_valid_prefix(s + i, n - i);
        if (hc_tk_buf_put(out, s + i, v)) return HC_ERR_NOMEM;
        i += v;
        if (i >= n) break;
        size_t l;
        hc_tk_utf8_step(s + i, n - i, &l); /* BAD, or SHORT at the end of input */
        if (hc_tk_buf_put(out, "\xEF\xBF\xBD", 3)) return HC_ERR_NOMEM;
        i += l;
    }
    return 0;
}

size_t hc_tk_utf8_encode(uint32_t cp, char *o) {
    if (cp < 0x80) {
        o[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        o[0] = (char)(0xC0 | cp >> 6);
        o[1] = (char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        o[0] = (char)(0xE0 | cp >> 12);
        o[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        o[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    o[0] = (char)(0xF0 | cp >> 18);
    o[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
    o[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
    o[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

uint32_t hc_tk_utf8_decode1(const char *s, size_t n, size_t *adv) {
    const uint8_t *u = (const uint8_t *)s;
    if (u[0] < 0x80 || n < 2) {
        *adv = 1;
        return u[0];
    }
    if (u[0] < 0xE0) {
        *adv = 2;
        return (uint32_t)(u[0] & 0x1F) << 6 | (u[1] & 0x3F);
    }
    if (u[0] < 0xF0 && n >= 3) {
        *adv = 3;
        return (uint32_t)(u[0] & 0x0F) << 12 | (uint32_t)(u[1] & 0x3F) << 6 | (u[2] & 0x3F);
    }
    if (n >= 4) {
        *adv = 4;
        return (uint32_t)(u[0] & 0x07) << 18 | (uint32_t)(u[1] & 0x3F) << 12 |
               (uint32_t)(u[2] & 0x3F) << 6 | (u[3] & 0x3F);
    }
    *adv = n;
    return 0xFFFD;
}

/* Unicode White_Space (what Rust's char::is_whitespace and Oniguruma's \s use). */
static int is_white_space(uint32_t c) {
    return (c >= 0x09 && c <= 0x0D) || c == 0x20 || c == 0x85 || c == 0xA0 || c == 0x1680 ||
           (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F ||
           c == 0x205F || c == 0x3000;
}

/* Approximation of the regex crate's Unicode \w (Alphabetic, M, Nd, Pc, Join_Control) used by
 * single_word added tokens; exact for letters, marks, digits and connector punctuation. */
static int is_word_char(uint32_t c) {
    if (c == 0x200C || c == 0x200D || (c >= 0x24B6 && c <= 0x24E9)) return 1;
    switch (utf8proc_category((utf8proc_int32_t)c)) {
    case UTF8PROC_CATEGORY_LU:
    case UTF8PROC_CATEGORY_LL:
    case UTF8PROC_CATEGORY_LT:
    case UTF8PROC_CATEGORY_LM:
    case UTF8PROC_CATEGORY_LO:
    case UTF8PROC_CATEGORY_MN:
    case UTF8PROC_CATEGORY_MC:
    case UTF8PROC_CATEGORY_ME:
    case UTF8PROC_CATEGORY_ND:
    case UTF8PROC_CATEGORY_NL:
    case UTF8PROC_CATEGORY_PC:
        return 1;
    default:
        return 0;
    }
}

static uint32_t last_cp(const char *s, size_t n) {
    size_t i = n;
    while (i > 0 && ((uint8_t)s[i - 1] & 0xC0) == 0x80)
        i--;
    if (i > 0) i--;
    size_t adv;
    return hc_tk_utf8_decode1(s + i, n - i, &adv);
}

/* ---- GPT-2 byte-level alphabet --------------------------------------------------------------- */

#define B2C(b)                                                                                     \
    ((b) >= 0x21 && (b) <= 0x7E) || ((b) >= 0xA1 && (b) <= 0xAC) || ((b) >= 0xAE && (b) <= 0xFF)
/* Printable bytes map to themselves; the other 68 map to 256.. in byte order. */
const uint16_t hc_tk_byte_to_cp[256] = {
    256, 257, 258, 259, 260, 261, 262, 263, 264, 265, 266, 267, 268, 269, 270, 271, 272, 273, 274,
    275, 276, 277, 278, 279, 280, 281, 282, 283, 284, 285, 286, 287, 288, 33,  34,  35,  36,  37,
    38,  39,  40,  41,  42,  43,  44,  45,  46,  47,  48,  49,  50,  51,  52,  53,  54,  55,  56,
    57,  58,  59,  60,  61,  62,  63,  64,  65,  66,  67,  68,  69,  70,  71,  72,  73,  74,  75,
    76,  77,  78,  79,  80,  81,  82,  83,  84,  85,  86,  87,  88,  89,  90,  91,  92,  93,  94,
    95,  96,  97,  98,  99,  100, 101, 102, 103, 104, 105, 106, 107, 108, 109, 110, 111, 112, 113,
    114, 115, 116, 117, 118, 119, 120, 121, 122, 123, 124, 125, 126, 289, 290, 291, 292, 293, 294,
    295, 296, 297, 298, 299, 300, 301, 302, 303, 304, 305, 306, 307, 308, 309, 310, 311, 312, 313,
    314, 315, 316, 317, 318, 319, 320, 321, 322, 161, 162, 163, 164, 165, 166, 167, 168, 169, 170,
    171, 172, 323, 174, 175, 176, 177, 178, 179, 180, 181, 182, 183, 184, 185, 186, 187, 188, 189,
    190, 191, 192, 193, 194, 195, 196, 197, 198, 199, 200, 201, 202, 203, 204, 205, 206, 207, 208,
    209, 210, 211, 212, 213, 214, 215, 216, 217, 218, 219, 220, 221, 222, 223, 224, 225, 226, 227,
    228, 229, 230, 231, 232, 233, 234, 235, 236, 237, 238, 239, 240, 241, 242, 243, 244, 245, 246,
    247, 248, 249, 250, 251, 252, 253, 254, 255};

int hc_tk_cp_to_byte(uint32_t cp) {
    if (cp < 256) return (B2C(cp)) ? (int)cp : -1;
    if (cp > 323) return -1;
    /* cp - 256 is the rank of the byte among the non-printable ones */
    int k = (int)(cp - 256);
    for (int b = 0; b < 256; b++)
        if (!(B2C(b)) && k-- == 0) return b;
    return -1;
}

/* ---- regex ----------------------------------------------------------------------------------- */

#define WS_CLASS "\\x{9}-\\x{d}\\x{85}\\p{Z}"

pcre2_code *hc_tk_regex_compile(const char *pat, size_t n, int literal, hc_errbuf *eb) {
    hc_tk_buf b = {0};
    uint32_t opts = PCRE2_UTF | PCRE2_UCP;
    if (literal) {
        if (hc_tk_buf_put(&b, pat, n)) return NULL;
        opts |= PCRE2_LITERAL;
    } else {
        int in_class = 0;
        for (size_t i = 0; i < n; i++) {
            char c = pat[i];
            int rc = 0;
            if (c == '\\' && i + 1 < n) {
                char e = pat[i + 1];
                if (e == 's')
                    rc = in_class ? hc_tk_buf_put(&b, WS_CLASS, strlen(WS_CLASS))
                                  : hc_tk_buf_put(&b, "[" WS_CLASS "]", strlen(WS_CLASS) + 2);
                else if (e == 'S' && !in_class)
                    rc = hc_tk_buf_put(&b, "[^" WS_CLASS "]", strlen(WS_CLASS) + 3);
                else
                    rc = hc_tk_buf_put(&b, pat + i, 2);
                i++;
            } else if (c == '[' && !in_class) {
                in_class = 1;
                rc = hc_tk_buf_put(&b, "[", 1);
                if (i + 1 < n && pat[i + 1] == '^') rc |= hc_tk_buf_put(&b, "^", 1), i++;
                if (i + 1 < n && pat[i + 1] == ']') rc |= hc_tk_buf_put(&b, "]", 1), i++;
            } else if (c == ']' && in_class) {
                in_class = 0;
                rc = hc_tk_buf_put(&b, "]", 1);
            } else {
                rc = hc_tk_buf_put(&b, &c, 1);
            }
            if (rc) {
                hc_tk_buf_free(&b);
                return NULL;
            }
        }
    }
    int err;
    PCRE2_SIZE erroff;
    pcre2_code *re = pcre2_compile((PCRE2_SPTR)(b.p ? b.p : ""), b.len, opts, &err, &erroff, NULL);
    if (!re) {
        PCRE2_UCHAR msg[160];
        pcre2_get_error_message(err, msg, sizeof msg);
        hc_seterr(eb, HC_ERR_FORMAT, "regex '%.*s': %s at offset %zu", (int)(n > 200 ? 200 : n),
                  pat, (const char *)msg, (size_t)erroff);
    } else {
        /* JIT failure is fine: the interpreter is used. Under valgrind, which cannot see through
         * JIT-generated code (false "uninitialised" reports), the interpreter is used too. */
        if (!HC_RUNNING_ON_VALGRIND) pcre2_jit_compile(re, PCRE2_JIT_COMPLETE);
    }
    hc_tk_buf_free(&b);
    return re;
}

int hc_tk_regex_each(const pcre2_code *re, pcre2_match_data *md, const char *s, size_t n,
                     int (*fn)(void *u, size_t st, size_t en), void *u, hc_errbuf *eb) {
    size_t off = 0, last_end = (size_t)-1;
    while (off <= n) {
        int rc = pcre2_match(re, (PCRE2_SPTR)s, n, off, PCRE2_NO_UTF_CHECK, md, NULL);
        if (rc == PCRE2_ERROR_JIT_STACKLIMIT)
            rc =
                pcre2_match(re, (PCRE2_SPTR)s, n, off, PCRE2_NO_UTF_CHECK | PCRE2_NO_JIT, md, NULL);
        if (rc == PCRE2_ERROR_NOMATCH) break;
        if (rc < 0) {
            PCRE2_UCHAR msg[160];
            pcre2_get_error_message(rc, msg, sizeof msg);
            return hc_seterr(eb, HC_ERR_INVAL, "regex match failed: %s", (const char *)msg);
        }
        PCRE2_SIZE *ov = pcre2_get_ovector_pointer(md);
        size_t st = ov[0], en = ov[1];
        if (st == en) {
            /* Rust-regex iteration: no empty match right after the previous match */
            if (st != last_end) {
                int r = fn(u, st, en);
                if (r) return r;
                last_end = en;
            }
            if (st >= n) break;
            size_t adv;
            hc_tk_utf8_decode1(s + st, n - st, &adv);
            off = st + adv;
            continue;
        }
        int r = fn(u, st, en);
        if (r) return r;
        off = last_end = en;
    }
    return 0;
}

/* ---- trie of added tokens -------------------------------------------------------------------- */

static int trie_node(hc_tk_trie *tr, uint8_t byte) {
    if (tr->n == tr->cap) {
        uint32_t cap = tr->cap ? tr->cap * 2 : 64;
        uint32_t *c = realloc(tr->child, cap * sizeof *c);
        if (c) tr->child = c;
        uint32_t *x = realloc(tr->next, cap * sizeof *x);
        if (x) tr->next = x;
        uint8_t *by = realloc(tr->byte, cap);
        if (by) tr->byte = by;
        int32_t *t = realloc(tr->term, cap * sizeof *t);
        if (t) tr->term = t;
        if (!c || !x || !by || !t) return -1;
        tr->cap = cap;
    }
    uint32_t i = tr->n++;
    tr->child[i] = tr->next[i] = 0;
    tr->byte[i] = byte;
    tr->term[i] = -1;
    return (int)i;
}

int hc_tk_trie_add(hc_tk_trie *tr, const char *s, size_t n, int32_t idx) {
    if (n == 0) return 0; /* an empty token never matches */
    if (tr->n == 0 && trie_node(tr, 0) < 0) return HC_ERR_NOMEM;
    uint32_t node = 0;
    for (size_t i = 0; i < n; i++) {
        uint8_t c = (uint8_t)s[i];
        uint32_t ch = tr->child[node];
        while (ch && tr->byte[ch] != c)
            ch = tr->next[ch];
        if (!ch) {
            int nn = trie_node(tr, c);
            if (nn < 0) return HC_ERR_NOMEM;
            ch = (uint32_t)nn;
            tr->next[ch] = tr->child[node];
            tr->child[node] = ch;
        }
        node = ch;
    }
    tr->term[node] = idx; /* a repeated content: the later token wins */
    return 0;
}

void hc_tk_trie_free(hc_tk_trie *tr) {
    free(tr->child);
    free(tr->next);
    free(tr->byte);
    free(tr->term);
    memset(tr, 0, sizeof *tr);
}

/* Longest token starting at s[0]; returns its length (0: none) and the added index. */
static size_t trie_longest(const hc_tk_trie *tr, const char *s, size_t n, int32_t *idx) {
    uint32_t node = 0;
    size_t best = 0;
    for (size_t i = 0; i < n; i++) {
        uint32_t ch = tr->child[node];
        while (ch && tr->byte[ch] != (uint8_t)s[i])
            ch = tr->next[ch];
        if (!ch) break;
        node = ch;
        if (tr->term[node] >= 0) {
            best = i + 1;
            *idx = tr->term[node];
        }
    }
    return best;
}

/* A segment: text s[off..off+len) (id < 0) or an added token id. */
typedef struct {
    size_t off, len;
    int32_t id;
} seg_t;

/* tokenizers' AddedVocabulary::find_matches: leftmost-longest, non-overlapping matches, then the
 * single_word / lstrip / rstrip rules. Appends segments to out (empty text segments omitted). */
static int split_added(const hc_tokenizer *t, const hc_tk_trie *tr, const char *s, size_t n,
                       hc_tk_buf *out) {
    size_t start_off = 0;
    seg_t g;
    if (tr->n > 1) {
        for (size_t i = 0; i < n;) {
            int32_t idx = -1;
            size_t ml = trie_longest(tr, s + i, n - i, &idx);
            if (!ml) {
                i++;
                continue;
            }
            const hc_tk_added *a = &t->added[idx];
            size_t start = i, stop = i + ml;
            i = stop;
            if (a->single_word) {
                int start_space = start == 0 || !is_word_char(last_cp(s, start));
                size_t adv;
                int stop_space =
                    stop == n || !is_word_char(hc_tk_utf8_decode1(s + stop, n - stop, &adv));
                if (!start_space || !stop_space) continue;
            }
            if (a->lstrip) {
                size_t ns = start;
                while (ns > 0) {
                    size_t k = ns;
                    while (k > 0 && ((uint8_t)s[k - 1] & 0xC0) == 0x80)
                        k--;
                    if (k > 0) k--;
                    size_t adv;
                    if (!is_white_space(hc_tk_utf8_decode1(s + k, ns - k, &adv))) break;
                    ns = k;
                }
                start = ns > start_off ? ns : start_off;
            }
            if (a->rstrip) {
                while (stop < n) {
                    size_t adv;
                    if (!is_white_space(hc_tk_utf8_decode1(s + stop, n - stop, &adv))) break;
                    stop += adv;
                }
                i = stop;
            }
            if (start_off < start) {
                g = (seg_t){start_off, start - start_off, -1};
                if (hc_tk_buf_put(out, &g, sizeof g)) return HC_ERR_NOMEM;
            }
            g = (seg_t){start, stop - start, a->id};
            if (hc_tk_buf_put(out, &g, sizeof g)) return HC_ERR_NOMEM;
            start_off = stop;
        }
    }
    if (start_off < n) {
        g = (seg_t){start_off, n - start_off, -1};
        if (hc_tk_buf_put(out, &g, sizeof g)) return HC_ERR_NOMEM;
    }
    return 0;
}

/* ---- normalizers ----------------------------------------------------------------------------- */

typedef struct {
    hc_tk_buf *out;
    const char *s;
    size_t prev;
    const char *rep;
    size_t rep_len;
} repl_state;

static int repl_cb(void *u, size_t st, size_t en) {
    repl_state *r = u;
    if (hc_tk_buf_put(r->out, r->s + r->prev, st - r->prev) ||
        hc_tk_buf_put(r->out, r->rep, r->rep_len))
        return HC_ERR_NOMEM;
    r->prev = en;
    return 0;
}

int hc_tk_replace(const char *s, size_t n, const pcre2_code *re, const char *pat, size_t pl,
                  const char *rep, size_t rep_len, pcre2_match_data *md, hc_tk_buf *out,
                  hc_errbuf *eb) {
    if (re) {
        repl_state r = {out, s, 0, rep, rep_len};
        int rc = hc_tk_regex_each(re, md, s, n, repl_cb, &r, eb);
        if (rc) return rc;
        return hc_tk_buf_put(out, s + r.prev, n - r.prev);
    }
    size_t i = 0, prev = 0;
    if (pl == 0) return hc_tk_buf_put(out, s, n);
    while (i + pl <= n) {
        const char *p = memchr(s + i, pat[0], n - i - pl + 1);
        if (!p) break;
        i = (size_t)(p - s);
        if (!memcmp(p, pat, pl)) {
            if (hc_tk_buf_put(out, s + prev, i - prev) || hc_tk_buf_put(out, rep, rep_len))
                return HC_ERR_NOMEM;
            i += pl;
            prev = i;
        } else {
            i++;
        }
    }
    return hc_tk_buf_put(out, s + prev, n - prev);
}

static int norm_replace(const hc_tokenizer *t, const hc_tk_norm *nm, const char *s, size_t n,
                        hc_tk_buf *out, pcre2_match_data *md, hc_errbuf *eb) {
    return hc_tk_replace(s, n, nm->re, hc_tk_s(t, nm->pattern), nm->pattern.len,
                         hc_tk_s(t, nm->content), nm->content.len, md, out, eb);
}

static int norm_nfc(const char *s, size_t n, hc_tk_buf *out, hc_errbuf *eb) {
    size_t i = 0;
    while (i < n && !((uint8_t)s[i] & 0x80))
        i++;
    if (i == n) return hc_tk_buf_put(out, s, n); /* ASCII is already NFC */
    utf8proc_uint8_t *res = NULL;
    utf8proc_ssize_t r = utf8proc_map((const utf8proc_uint8_t *)s, (utf8proc_ssize_t)n, &res,
                                      UTF8PROC_STABLE | UTF8PROC_COMPOSE);
    if (r < 0) return hc_seterr(eb, HC_ERR_INVAL, "NFC: %s", utf8proc_errmsg(r));
    int rc = hc_tk_buf_put(out, res, (size_t)r);
    free(res);
    return rc;
}

int hc_tk_normalize(const hc_tokenizer *t, const char *s, size_t n, hc_tk_buf *out, hc_tk_buf *tmp,
                    pcre2_match_data *md, hc_errbuf *eb) {
    out->len = 0;
    if (hc_tk_buf_put(out, s, n)) return HC_ERR_NOMEM;
    for (size_t k = 0; k < t->n_norms; k++) {
        const hc_tk_norm *nm = &t->norms[k];
        tmp->len = 0;
        int rc = 0;
        switch (nm->type) {
        case HC_TK_NORM_PREPEND:
            if (out->len == 0) continue; /* Prepend leaves an empty string empty */
            rc = hc_tk_buf_put(tmp, hc_tk_s(t, nm->content), nm->content.len);
            rc = rc ? rc : hc_tk_buf_put(tmp, out->p, out->len);
            break;
        case HC_TK_NORM_REPLACE:
            rc = norm_replace(t, nm, out->p, out->len, tmp, md, eb);
            break;
        case HC_TK_NORM_NFC:
            rc = norm_nfc(out->p ? out->p : "", out->len, tmp, eb);
            break;
        default:
            HC_ASSERT(0);
        }
        if (rc) return rc;
        hc_tk_buf swap = *out;
        *out = *tmp;
        *tmp = swap;
    }
    return 0;
}

/* ---- pre-tokenizers -------------------------------------------------------------------------- */

/* A piece: text ctx->text.p[off..off+len); first: starts at original offset 0 (Metaspace "first").
 */
typedef struct {
    size_t off, len;
    int first;
} piece_t;

typedef struct {
    size_t st, en;
    int is_match;
} span_t;

typedef struct {
    hc_tk_buf *spans;
    size_t prev;
} find_state;

static int find_cb(void *u, size_t st, size_t en) {
    find_state *f = u;
    span_t sp;
    if (f->prev != st) {
        sp = (span_t){f->prev, st, 0};
        if (hc_tk_buf_put(f->spans, &sp, sizeof sp)) return HC_ERR_NOMEM;
    }
    sp = (span_t){st, en, 1};
    if (hc_tk_buf_put(f->spans, &sp, sizeof sp)) return HC_ERR_NOMEM;
    f->prev = en;
    return 0;
}

/* NormalizedString::split with a regex and a SplitDelimiterBehavior; pushes non-empty pieces. */
static int split_piece(hc_tok_ctx *ctx, const pcre2_code *re, int behavior, int invert, piece_t pc,
                       hc_tk_buf *out, hc_errbuf *eb) {
    hc_tk_buf *spans = &ctx->segs;
    spans->len = 0;
    find_state f = {spans, 0};
    int rc = hc_tk_regex_each(re, ctx->md, ctx->text.p + pc.off, pc.len, find_cb, &f, eb);
    if (rc) return rc;
    span_t sp;
    if (f.prev != pc.len) {
        sp = (span_t){f.prev, pc.len, 0};
        if (hc_tk_buf_put(spans, &sp, sizeof sp)) return HC_ERR_NOMEM;
    }
    span_t *v = (span_t *)spans->p;
    size_t nv = spans->len / sizeof(span_t), m = 0;
    if (invert)
        for (size_t i = 0; i < nv; i++)
            v[i].is_match = !v[i].is_match;
    /* merge in place; is_match becomes "remove" */
    int prev_match = 0;
    switch (behavior) {
    case HC_TK_SPLIT_ISOLATED:
        for (size_t i = 0; i < nv; i++)
            v[i].is_match = 0;
        m = nv;
        break;
    case HC_TK_SPLIT_REMOVED:
        m = nv;
        break;
    case HC_TK_SPLIT_CONTIGUOUS:
        for (size_t i = 0; i < nv; i++) {
            int im = v[i].is_match;
            if (im == prev_match && m > 0)
                v[m - 1].en = v[i].en;
            else
                v[m++] = (span_t){v[i].st, v[i].en, 0};
            prev_match = im;
        }
        break;
    case HC_TK_SPLIT_MERGED_PREV:
        for (size_t i = 0; i < nv; i++) {
            int im = v[i].is_match;
            if (im && !prev_match && m > 0)
                v[m - 1].en = v[i].en;
            else
                v[m++] = (span_t){v[i].st, v[i].en, 0};
            prev_match = im;
        }
        break;
    case HC_TK_SPLIT_MERGED_NEXT: {
        /* walk backwards, then the kept spans are v[nv-m..nv) in order */
        size_t w = nv;
        for (size_t i = nv; i-- > 0;) {
            int im = v[i].is_match;
            if (im && !prev_match && w < nv)
                v[w].st = v[i].st;
            else
                v[--w] = (span_t){v[i].st, v[i].en, 0};
            prev_match = im;
        }
        memmove(v, v + w, (nv - w) * sizeof *v);
        m = nv - w;
        break;
    }
    default:
        HC_ASSERT(0);
    }
    for (size_t i = 0; i < m; i++) {
        if (v[i].is_match || v[i].en == v[i].st) continue;
        piece_t p = {pc.off + v[i].st, v[i].en - v[i].st, pc.first && v[i].st == 0};
        if (hc_tk_buf_put(out, &p, sizeof p)) return HC_ERR_NOMEM;
    }
    return 0;
}

static int pre_bytelevel(hc_tok_ctx *ctx, const hc_tk_pre *pr, piece_t pc, hc_tk_buf *out,
                         hc_errbuf *eb) {
    hc_tk_buf *tx = &ctx->text;
    if (pr->add_prefix_space && ctx->text.p[pc.off] != ' ') {
        size_t o = tx->len;
        if (hc_tk_buf_put(tx, " ", 1) || hc_tk_buf_reserve(tx, pc.len)) return HC_ERR_NOMEM;
        memcpy(tx->p + tx->len, tx->p + pc.off, pc.len);
        tx->len += pc.len;
        pc.off = o;
        pc.len += 1;
    }
    size_t first_new = out->len;
    if (pr->use_regex) {
        int rc = split_piece(ctx, pr->re, HC_TK_SPLIT_ISOLATED, 0, pc, out, eb);
        if (rc) return rc;
    } else if (hc_tk_buf_put(out, &pc, sizeof pc)) {
        return HC_ERR_NOMEM;
    }
    for (size_t k = first_new; k < out->len; k += sizeof(piece_t)) {
        piece_t *p = (piece_t *)(out->p + k);
        if (hc_tk_buf_reserve(tx, p->len * 2)) return HC_ERR_NOMEM;
        size_t o = tx->len;
        char *d = tx->p + tx->len;
        const uint8_t *src = (const uint8_t *)tx->p + p->off;
        for (size_t i = 0; i < p->len; i++)
            d += hc_tk_utf8_encode(hc_tk_byte_to_cp[src[i]], d);
        tx->len = (size_t)(d - tx->p);
        p->off = o;
        p->len = tx->len - o;
    }
    return 0;
}

static int pre_metaspace(hc_tok_ctx *ctx, const hc_tk_pre *pr, piece_t pc, hc_tk_buf *out) {
    hc_tk_buf *tx = &ctx->text;
    size_t n_sp = 0;
    for (size_t i = 0; i < pc.len; i++)
        n_sp += tx->p[pc.off + i] == ' ';
    if (hc_tk_buf_reserve(tx, pc.len + n_sp * 3 + 4)) return HC_ERR_NOMEM;
    size_t o = tx->len;
    char *d = tx->p + o;
    const char *src = tx->p + pc.off;
    size_t rl = (size_t)pr->rep_len;
    int starts_rep = (pc.len > 0 && src[0] == ' ') || (pc.len >= rl && !memcmp(src, pr->rep, rl));
    if ((pr->prepend_scheme == HC_TK_PREPEND_ALWAYS ||
         (pr->prepend_scheme == HC_TK_PREPEND_FIRST && pc.first)) &&
        !starts_rep) {
        memcpy(d, pr->rep, rl);
        d += rl;
    }
    for (size_t i = 0; i < pc.len; i++) {
        if (src[i] == ' ') {
            memcpy(d, pr->rep, rl);
            d += rl;
        } else {
            *d++ = src[i];
        }
    }
    tx->len = (size_t)(d - tx->p);
    piece_t np = {o, tx->len - o, pc.first};
    if (!pr->split) return hc_tk_buf_put(out, &np, sizeof np);
    /* split MergedWithNext on the replacement: each piece starts at a replacement char */
    const char *s = tx->p + np.off;
    size_t st = 0;
    for (size_t i = 0; i + rl <= np.len;) {
        if (!memcmp(s + i, pr->rep, rl)) {
            if (i > st) {
                piece_t p = {np.off + st, i - st, np.first && st == 0};
                if (hc_tk_buf_put(out, &p, sizeof p)) return HC_ERR_NOMEM;
            }
            st = i;
            i += rl;
        } else {
            i++;
        }
    }
    if (np.len > st) {
        piece_t p = {np.off + st, np.len - st, np.first && st == 0};
        if (hc_tk_buf_put(out, &p, sizeof p)) return HC_ERR_NOMEM;
    }
    return 0;
}

/* Pre-tokenize one normalized text segment and run the model on each piece. */
static int encode_segment(const hc_tokenizer *t, hc_tok_ctx *ctx, size_t off, size_t len, int first,
                          hc_errbuf *eb) {
    hc_tk_buf *in = &ctx->pieces, *out = &ctx->pieces2;
    in->len = 0;
    piece_t p0 = {off, len, first};
    if (hc_tk_buf_put(in, &p0, sizeof p0)) return HC_ERR_NOMEM;
    for (size_t k = 0; k < t->n_pres; k++) {
        const hc_tk_pre *pr = &t->pres[k];
        out->len = 0;
        for (size_t i = 0; i < in->len; i += sizeof(piece_t)) {
            piece_t pc = *(piece_t *)(in->p + i);
            int rc = 0;
            switch (pr->type) {
            case HC_TK_PRE_SPLIT:
                rc = split_piece(ctx, pr->re, pr->behavior, pr->invert, pc, out, eb);
                break;
            case HC_TK_PRE_BYTELEVEL:
                rc = pre_bytelevel(ctx, pr, pc, out, eb);
                break;
            case HC_TK_PRE_METASPACE:
                rc = pre_metaspace(ctx, pr, pc, out);
                break;
            default:
                HC_ASSERT(0);
            }
            if (rc) return rc;
        }
        hc_tk_buf sw = *in;
        *in = *out;
        *out = sw;
    }
    for (size_t i = 0; i < in->len; i += sizeof(piece_t)) {
        piece_t pc = *(piece_t *)(in->p + i);
        int rc = hc_tk_bpe(t, ctx, ctx->text.p + pc.off, pc.len);
        if (rc) return rc == HC_ERR_NOMEM ? hc_seterr(eb, rc, "out of memory") : rc;
    }
    return 0;
}

static int push_id(hc_tok_ctx *ctx, int32_t id) {
    return hc_tk_buf_put(&ctx->ids, &id, sizeof id);
}

hc_tok_ctx *hc_tok_ctx_new(const hc_tokenizer *tok) {
    hc_tok_ctx *ctx = calloc(1, sizeof *ctx);
    if (!ctx) return NULL;
    ctx->tok = tok;
    ctx->md = pcre2_match_data_create(16, NULL);
    if (!ctx->md) {
        free(ctx);
        return NULL;
    }
    return ctx;
}

void hc_tok_ctx_free(hc_tok_ctx *ctx) {
    if (!ctx) return;
    pcre2_match_data_free(ctx->md);
    hc_tk_buf *bufs[] = {&ctx->fixed,   &ctx->norm, &ctx->norm2, &ctx->pieces,
                         &ctx->pieces2, &ctx->text, &ctx->segs,  &ctx->ids};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++)
        hc_tk_buf_free(bufs[i]);
    hc_tk_bpe_ctx_free(ctx);
    free(ctx);
}

static int encode_text(const hc_tokenizer *t, hc_tok_ctx *ctx, const char *s, size_t n,
                       hc_errbuf *eb) {
    /* 1. non-normalized added tokens on the raw text */
    hc_tk_buf raw_segs = {0};
    int rc = split_added(t, &t->trie_raw, s, n, &raw_segs);
    for (size_t i = 0; !rc && i < raw_segs.len; i += sizeof(seg_t)) {
        seg_t g = *(seg_t *)(raw_segs.p + i);
        if (g.id >= 0) {
            rc = push_id(ctx, g.id);
            continue;
        }
        /* 2. normalize the text between, then the normalized added tokens */
        rc = hc_tk_normalize(t, s + g.off, g.len, &ctx->norm, &ctx->norm2, ctx->md, eb);
        if (rc) break;
        ctx->text.len = 0;
        rc = hc_tk_buf_put(&ctx->text, ctx->norm.p, ctx->norm.len);
        if (rc) break;
        size_t nlen = ctx->norm.len;
        hc_tk_buf nsegs = {0};
        rc = split_added(t, &t->trie_norm, ctx->text.p, nlen, &nsegs);
        for (size_t j = 0; !rc && j < nsegs.len; j += sizeof(seg_t)) {
            seg_t h = *(seg_t *)(nsegs.p + j);
            if (h.id >= 0)
                rc = push_id(ctx, h.id);
            else
                rc = encode_segment(t, ctx, h.off, h.len, g.off == 0 && h.off == 0, eb);
        }
        hc_tk_buf_free(&nsegs);
    }
    hc_tk_buf_free(&raw_segs);
    if (rc == HC_ERR_NOMEM) hc_seterr(eb, rc, "out of memory");
    return rc;
}

int hc_tokenizer_encode(const hc_tokenizer *tok, hc_tok_ctx *ctx, const char *text, size_t len,
                        int add_special, int32_t **ids_out, size_t *n_out, hc_errbuf *eb) {
    *ids_out = NULL;
    *n_out = 0;
    if (!tok || (!text && len)) return hc_seterr(eb, HC_ERR_INVAL, "encode: NULL argument");
    hc_tok_ctx *own = NULL;
    if (!ctx) {
        ctx = own = hc_tok_ctx_new(tok);
        if (!ctx) return hc_seterr(eb, HC_ERR_NOMEM, "out of memory");
    }
    if (ctx->tok != tok)
        return hc_seterr(eb, HC_ERR_INVAL, "encode: context belongs to another tokenizer");
    ctx->ids.len = 0;
    int rc = 0;
    if (add_special && tok->add_bos && tok->bos_id >= 0) rc = push_id(ctx, tok->bos_id);
    const char *s = text ? text : "";
    if (!rc && hc_tk_utf8_valid_prefix((const uint8_t *)s, len) != len) {
        ctx->fixed.len = 0;
        rc = hc_tk_utf8_lossy(&ctx->fixed, (const uint8_t *)s, len);
        s = ctx->fixed.p;
        len = ctx->fixed.len;
    }
    if (!rc) rc = encode_text(tok, ctx, s, len, eb);
    if (!rc && add_special && tok->add_eos && tok->eos_id >= 0) rc = push_id(ctx, tok->eos_id);
    if (!rc) {
        size_t n = ctx->ids.len / sizeof(int32_t);
        if (n) {
            *ids_out = malloc(n * sizeof(int32_t));
            if (!*ids_out)
                rc = HC_ERR_NOMEM;
            else
                memcpy(*ids_out, ctx->ids.p, n * sizeof(int32_t));
        }
        if (!rc) *n_out = n;
    }
    if (rc == HC_ERR_NOMEM) hc_seterr(eb, rc, "out of memory");
    hc_tok_ctx_free(own);
    return rc;
}
