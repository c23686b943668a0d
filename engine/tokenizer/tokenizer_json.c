/* tokenizer_json.c: a small, strict JSON scanner for the two big arrays of a tokenizer.json
 * (model.vocab, model.merges). jansson builds a node per string, which for Qwen3's 11 MB file
 * costs ~0.6 s to parse and ~0.15 s to free; scanning those two values directly and handing
 * jansson the rest (with them replaced by {} and []) loads in well under 0.2 s.
 *
 * Everything here is bounds-checked and validates what it reads (escapes, surrogate pairs, UTF-8);
 * on malformed input it returns -1 and the caller reports HC_ERR_FORMAT.
 */
#include <stddef.h>
#include <string.h>

#include "tokenizer/tokenizer_internal.h"

static const char *ws(const char *p, const char *e) {
    while (p < e && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r'))
        p++;
    return p;
}

static int hex4(const char *p, const char *e, uint32_t *v) {
    if (e - p < 4) return -1;
    uint32_t x = 0;
    for (int i = 0; i < 4; i++) {
        char c = p[i];
        int d = c >= '0' && c <= '9'   ? c - '0'
                : c >= 'a' && c <= 'f' ? c - 'a' + 10
                : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                       : -1;
        if (d < 0) return -1;
        x = x * 16 + (uint32_t)d;
    }
    *v = x;
    return 0;
}

/* *p points at '"'. Decodes into out (appending) and advances past the closing quote. */
int hc_tk_json_string(const char **pp, const char *e, hc_tk_buf *out) {
    const char *p = *pp;
    if (p >= e || *p != '"') return -1;
    p++;
    size_t start = out->len;
    for (;;) {
        const char *q = p;
        while (q < e && *q != '"' && *q != '\\' && (uint8_t)*q >= 0x20)
            q++;
        if (hc_tk_buf_put(out, p, (size_t)(q - p))) return -1;
        p = q;
        if (p >= e || (uint8_t)*p < 0x20) return -1;
        if (*p == '"') break;
        if (++p >= e) return -1; /* backslash */
        char c = *p++, o;
        switch (c) {
        case '"':
            o = '"';
            break;
        case '\\':
            o = '\\';
            break;
        case '/':
            o = '/';
            break;
        case 'b':
            o = '\b';
            break;
        case 'f':
            o = '\f';
            break;
        case 'n':
            o = '\n';
            break;
        case 'r':
            o = '\r';
            break;
        case 't':
            o = '\t';
            break;
        case 'u': {
            uint32_t cp, lo;
            if (hex4(p, e, &cp)) return -1;
            p += 4;
            if (cp >= 0xDC00 && cp <= 0xDFFF) return -1;
            if (cp >= 0xD800 && cp <= 0xDBFF) {
                if (e - p < 6 || p[0] != '\\' || p[1] != 'u' || hex4(p + 2, e, &lo) ||
                    lo < 0xDC00 || lo > 0xDFFF)
                    return -1;
                p += 6;
                cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
            }
            char u[4];
            if (hc_tk_buf_put(out, u, hc_tk_utf8_encode(cp, u))) return -1;
            continue;
        }
        default:
            return -1;
        }
        if (hc_tk_buf_put(out, &o, 1)) return -1;
    }
    if (hc_tk_utf8_valid_prefix((const uint8_t *)out->p + start, out->len - start) !=
        out->len - start)
        return -1;
    *pp = p + 1;
    return 0;
}

static const char *skip_string(const char *p, const char *e) {
    for (p++; p < e;) {
        const char *q = memchr(p, '"', (size_t)(e - p));
        if (!q) return NULL;
        size_t bs = 0; /* an escaped quote has an odd number of backslashes before it */
        while (q - bs > p && q[-1 - (ptrdiff_t)bs] == '\\')
            bs++;
        if (!(bs & 1)) return q + 1;
        p = q + 1;
    }
    return NULL;
}

/* Skips one JSON value starting at p (after whitespace); returns its end or NULL. Structure is
 * only checked loosely (brackets balance, strings close); jansson or the strict readers below
 * validate whatever is actually used. */
static const char *skip_value(const char *p, const char *e) {
    p = ws(p, e);
    if (p >= e) return NULL;
    if (*p == '"') return skip_string(p, e);
    if (*p == '{' || *p == '[') {
        int depth = 0;
        while (p < e) {
            char c = *p;
            if (c == '"') {
                if (!(p = skip_string(p, e))) return NULL;
                continue;
            }
            if (c == '{' || c == '[') depth++;
            if ((c == '}' || c == ']') && --depth == 0) return p + 1;
            p++;
        }
        return NULL;
    }
    while (p < e && !strchr(",}] \t\r\n", *p))
        p++;
    return p;
}

/* In the object starting at p, finds the value of `key`; returns its [start, end) or -1. */
static int find_key(const char *p, const char *e, const char *key, const char **vs,
                    const char **ve) {
    hc_tk_buf k = {0};
    p = ws(p, e);
    if (p >= e || *p != '{') return -1;
    p = ws(p + 1, e);
    int found = -1;
    while (p < e && *p != '}') {
        k.len = 0;
        if (hc_tk_json_string(&p, e, &k)) break;
        p = ws(p, e);
        if (p >= e || *p != ':') break;
        const char *s = ws(p + 1, e), *v = skip_value(s, e);
        if (!v) break;
        if (k.len == strlen(key) && !memcmp(k.p, key, k.len)) {
            *vs = s;
            *ve = v;
            found = 0;
            break;
        }
        p = ws(v, e);
        if (p < e && *p == ',') p = ws(p + 1, e);
    }
    hc_tk_buf_free(&k);
    return found;
}

int hc_tk_json_find_model_spans(const char *s, size_t n, size_t vocab[2], size_t merges[2]) {
    const char *e = s + n, *ms, *me, *vs, *ve;
    if (find_key(s, e, "model", &ms, &me)) return -1;
    if (find_key(ms, me, "vocab", &vs, &ve)) return -1;
    vocab[0] = (size_t)(vs - s);
    vocab[1] = (size_t)(ve - s);
    if (find_key(ms, me, "merges", &vs, &ve)) {
        merges[0] = merges[1] = 0;
    } else {
        merges[0] = (size_t)(vs - s);
        merges[1] = (size_t)(ve - s);
    }
    return 0;
}

int hc_tk_json_int(const char **pp, const char *e, long long *v) {
    const char *p = *pp;
    int neg = 0;
    if (p < e && *p == '-') neg = 1, p++;
    if (p >= e || *p < '0' || *p > '9') return -1;
    long long x = 0;
    while (p < e && *p >= '0' && *p <= '9') {
        if (x > (1LL << 40)) return -1;
        x = x * 10 + (*p++ - '0');
    }
    if (p < e && (*p == '.' || *p == 'e' || *p == 'E')) return -1;
    *v = neg ? -x : x;
    *pp = p;
    return 0;
}

const char *hc_tk_json_ws(const char *p, const char *e) {
    return ws(p, e);
}
