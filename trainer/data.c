/* data.c: see data.h. */
#include "data.h"

#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/fileio.h"
#include "creator/creator_sched.h"

typedef enum { KIND_CREATOR, KIND_NEXTITEM } data_kind;

typedef struct data_row {
    uint64_t off;   /* byte offset of the line in the file */
    uint64_t line;  /* 1-based line number */
    uint32_t len;   /* bytes, without the newline (and a trailing '\r') */
    uint32_t flags; /* ROW_DROP_COUNTED */
} data_row;

#define ROW_DROP_COUNTED 1u

typedef struct item_ent {
    int64_t id;
    size_t off, len; /* title bytes in items_blob */
    uint64_t line;
} item_ent;

struct hc_data {
    hc_creator *c;
    data_kind kind;
    hc_data_params p;
    char *path;
    int fd;
    data_row *rows;
    int64_t n, cap;
    uint32_t *perm;     /* (n) order of epoch perm_epoch */
    int64_t perm_epoch; /* -1: none computed */
    hc_data_cursor cur;
    hc_data_badstat bad[HC_DATA_BAD_COUNT];
    hc_tok_ctx *item_ctx, *cre_ctx;
    int32_t eos;
    int32_t *pp_ids; /* (n_pp) the package's profile_prompt, creative ids */
    int n_pp, have_pp;
    char *buf; /* line buffer */
    size_t bufcap;
    item_ent *items; /* next-item split: sorted by id */
    size_t n_items;
    char *items_blob;
    struct items_acc *acc; /* while items.jsonl is read */
};

hc_data_params hc_data_default_params(void) {
    hc_data_params p;
    memset(&p, 0, sizeof p);
    p.max_item_list_length = 50;
    p.max_text_length = 64;
    p.max_gen_text_length = 4096;
    p.max_user_profile_text_length = 1024;
    p.row_prompts = 0;
    p.shuffle = 1;
    p.seed = 2020;
    p.max_line_bytes = (size_t)64 << 20;
    return p;
}

const char *hc_data_bad_name(hc_data_bad r) {
    switch (r) {
    case HC_DATA_BAD_JSON:
        return "not a JSON object";
    case HC_DATA_BAD_UTF8:
        return "invalid UTF-8";
    case HC_DATA_BAD_FIELD:
        return "missing or mistyped field";
    case HC_DATA_BAD_EMPTY:
        return "empty";
    case HC_DATA_BAD_LIMIT:
        return "over a length limit";
    case HC_DATA_BAD_TOKENS:
        return "refused by the tokenizer";
    default:
        return "?";
    }
}

/* ---- UTF-8 and Python's compact JSON ------------------------------------------------------- */

int hc_data_utf8_valid(const char *str, size_t n) {
    const unsigned char *s = (const unsigned char *)str;
    size_t i = 0;
    while (i < n) {
        unsigned c = s[i];
        if (c < 0x80) {
            i++;
            continue;
        }
        int k;
        unsigned cp, min;
        if (c >= 0xc2 && c <= 0xdf)
            k = 1, cp = c & 0x1f, min = 0x80;
        else if (c >= 0xe0 && c <= 0xef)
            k = 2, cp = c & 0x0f, min = 0x800;
        else if (c >= 0xf0 && c <= 0xf4)
            k = 3, cp = c & 0x07, min = 0x10000;
        else
            return 0;
        if (n - i <= (size_t)k) return 0;
        for (int j = 1; j <= k; j++) {
            if ((s[i + j] & 0xc0) != 0x80) return 0;
            cp = (cp << 6) | (s[i + j] & 0x3f);
        }
        if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return 0;
        i += (size_t)k + 1;
    }
    return 1;
}

typedef struct sbuf {
    char *p;
    size_t n, cap;
    int oom;
} sbuf;

static void sb_put(sbuf *b, const char *s, size_t n) {
    if (b->oom) return;
    if (b->n + n + 1 > b->cap) {
        size_t nc = b->cap ? b->cap : 256;
        while (nc < b->n + n + 1)
            nc *= 2;
        char *q = realloc(b->p, nc);
        if (!q) {
            b->oom = 1;
            return;
        }
        b->p = q;
        b->cap = nc;
    }
    memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = 0;
}
static void sb_str(sbuf *b, const char *s) {
    sb_put(b, s, strlen(s));
}

/* Python's json.dumps string escaping with ensure_ascii=False. */
static void py_string(sbuf *b, const char *s, size_t n) {
    sb_put(b, "\"", 1);
    size_t run = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        const char *esc = NULL;
        char tmp[8];
        switch (c) {
        case '"':
            esc = "\\\"";
            break;
        case '\\':
            esc = "\\\\";
            break;
        case '\n':
            esc = "\\n";
            break;
        case '\r':
            esc = "\\r";
            break;
        case '\t':
            esc = "\\t";
            break;
        case '\b':
            esc = "\\b";
            break;
        case '\f':
            esc = "\\f";
            break;
        default:
            if (c < 0x20) {
                snprintf(tmp, sizeof tmp, "\\u%04x", c);
                esc = tmp;
            }
        }
        if (esc) {
            sb_put(b, s + i - run, run);
            run = 0;
            sb_str(b, esc);
        } else {
            run++;
        }
    }
    sb_put(b, s + n - run, run);
    sb_put(b, "\"", 1);
}

/* repr(float) of Python: the shortest digits that round-trip, fixed notation for exponents in
 * [-4, 16), else d.ddde+XX. */
static void py_float(sbuf *b, double x) {
    char tmp[64];
    if (x == 0) {
        sb_str(b, signbit(x) ? "-0.0" : "0.0");
        return;
    }
    int prec = 1;
    for (; prec <= 17; prec++) {
        snprintf(tmp, sizeof tmp, "%.*e", prec - 1, x);
        if (strtod(tmp, NULL) == x) break;
    }
    if (prec > 17) prec = 17;
    snprintf(tmp, sizeof tmp, "%.*e", prec - 1, x);
    const char *p = tmp;
    if (*p == '-') {
        sb_put(b, "-", 1);
        p++;
    }
    char dig[32];
    int nd = 0;
    for (; *p && *p != 'e'; p++)
        if (*p != '.' && nd < (int)sizeof dig - 1) dig[nd++] = *p;
    while (nd > 1 && dig[nd - 1] == '0')
        nd--;
    dig[nd] = 0;
    int e = *p == 'e' ? atoi(p + 1) : 0;
    if (e >= -4 && e < 16) {
        if (e >= 0) {
            for (int i = 0; i <= e; i++)
                sb_put(b, i < nd ? &dig[i] : "0", 1);
            sb_put(b, ".", 1);
            if (nd > e + 1)
                sb_put(b, dig + e + 1, (size_t)(nd - e - 1));
            else
                sb_put(b, "0", 1);
        } else {
            sb_str(b, "0.");
            for (int i = 0; i < -e - 1; i++)
                sb_put(b, "0", 1);
            sb_put(b, dig, (size_t)nd);
        }
    } else {
        sb_put(b, dig, 1);
        if (nd > 1) {
            sb_put(b, ".", 1);
            sb_put(b, dig + 1, (size_t)(nd - 1));
        }
        snprintf(tmp, sizeof tmp, "e%c%02d", e < 0 ? '-' : '+', e < 0 ? -e : e);
        sb_str(b, tmp);
    }
}

static void py_dump(sbuf *b, json_t *v, int depth) {
    char tmp[32];
    if (depth > 2048) {
        b->oom = 1;
        return;
    }
    switch (json_typeof(v)) {
    case JSON_OBJECT: {
        const char *k;
        json_t *x;
        int first = 1;
        sb_put(b, "{", 1);
        json_object_foreach(v, k, x) {
            if (!first) sb_put(b, ", ", 2);
            first = 0;
            py_string(b, k, strlen(k));
            sb_put(b, ": ", 2);
            py_dump(b, x, depth + 1);
        }
        sb_put(b, "}", 1);
        break;
    }
    case JSON_ARRAY: {
        sb_put(b, "[", 1);
        for (size_t i = 0; i < json_array_size(v); i++) {
            if (i) sb_put(b, ", ", 2);
            py_dump(b, json_array_get(v, i), depth + 1);
        }
        sb_put(b, "]", 1);
        break;
    }
    case JSON_STRING:
        py_string(b, json_string_value(v), json_string_length(v));
        break;
    case JSON_INTEGER:
        snprintf(tmp, sizeof tmp, "%lld", (long long)json_integer_value(v));
        sb_str(b, tmp);
        break;
    case JSON_REAL:
        py_float(b, json_real_value(v));
        break;
    case JSON_TRUE:
        sb_str(b, "true");
        break;
    case JSON_FALSE:
        sb_str(b, "false");
        break;
    default:
        sb_str(b, "null");
        break;
    }
}

int hc_data_py_compact_json(const char *text, size_t len, char **out, size_t *outlen,
                            hc_errbuf *eb) {
    *out = NULL;
    *outlen = 0;
    json_error_t je;
    json_t *v = json_loadb(text, len, JSON_DECODE_ANY | JSON_ALLOW_NUL, &je);
    if (!v) return hc_json_seterr(eb, HC_ERR_FORMAT, "user_profile", &je);
    sbuf b = {0};
    py_dump(&b, v, 0);
    json_decref(v);
    if (b.oom) {
        free(b.p);
        return hc_seterr(eb, HC_ERR_NOMEM, "user_profile: out of memory (or nested too deep)");
    }
    if (!b.p) sb_put(&b, "", 0);
    if (b.oom) return hc_seterr(eb, HC_ERR_NOMEM, "out of memory");
    *out = b.p;
    *outlen = b.n;
    return HC_OK;
}

/* ---- bad rows ------------------------------------------------------------------------------- */

static void bad_add(hc_data *d, hc_data_bad r, uint64_t line, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 4, 5)))
#endif
    ;
static void bad_add(hc_data *d, hc_data_bad r, uint64_t line, const char *fmt, ...) {
    hc_data_badstat *b = &d->bad[r];
    if (b->count == 0) {
        int k = snprintf(b->first, sizeof b->first, "line %llu: ", (unsigned long long)line);
        if (k < 0) k = 0;
        if ((size_t)k < sizeof b->first) {
            va_list ap;
            va_start(ap, fmt);
            vsnprintf(b->first + k, sizeof b->first - (size_t)k, fmt, ap);
            va_end(ap);
        }
    }
    if (b->n_lines < HC_DATA_BAD_LINES) b->lines[b->n_lines++] = line;
    b->count++;
}

const hc_data_badstat *hc_data_bad_stat(const hc_data *d, hc_data_bad r) {
    return (int)r >= 0 && r < HC_DATA_BAD_COUNT ? &d->bad[r] : NULL;
}

uint64_t hc_data_bad_total(const hc_data *d) {
    uint64_t t = 0;
    for (int r = 0; r < HC_DATA_BAD_COUNT; r++)
        t += d->bad[r].count;
    return t;
}

int hc_data_summary(const hc_data *d, char *buf, size_t n) {
    sbuf b = {0};
    char tmp[320];
    snprintf(tmp, sizeof tmp, "%s: %lld rows, %llu skipped", d->path, (long long)d->n,
             (unsigned long long)hc_data_bad_total(d));
    sb_str(&b, tmp);
    const char *sep = ": ";
    for (int r = 0; r < HC_DATA_BAD_COUNT; r++) {
        const hc_data_badstat *s = &d->bad[r];
        if (!s->count) continue;
        snprintf(tmp, sizeof tmp, "%s%llu %s (line%s", sep, (unsigned long long)s->count,
                 hc_data_bad_name((hc_data_bad)r), s->n_lines > 1 ? "s" : "");
        sb_str(&b, tmp);
        for (int i = 0; i < s->n_lines; i++) {
            snprintf(tmp, sizeof tmp, "%s%llu", i ? ", " : " ", (unsigned long long)s->lines[i]);
            sb_str(&b, tmp);
        }
        if (s->count > (uint64_t)s->n_lines) sb_str(&b, ", ...");
        snprintf(tmp, sizeof tmp, "; first: %s)", s->first);
        sb_str(&b, tmp);
        sep = ", ";
    }
    int len = 0;
    if (b.p && n) {
        snprintf(buf, n, "%s", b.p);
        len = (int)strlen(buf);
    } else if (n) {
        buf[0] = 0;
    }
    free(b.p);
    return len;
}

/* ---- row checks ----------------------------------------------------------------------------- */

static const char *json_kind(const json_t *v) {
    switch (json_typeof(v)) {
    case JSON_OBJECT:
        return "an object";
    case JSON_ARRAY:
        return "an array";
    case JSON_STRING:
        return "a string";
    case JSON_INTEGER:
        return "an integer";
    case JSON_REAL:
        return "a real";
    case JSON_TRUE:
    case JSON_FALSE:
        return "a boolean";
    default:
        return "null";
    }
}

/* Parses one line into an object; on a bad row returns NULL with *why and msg set. */
static json_t *parse_line(const char *text, size_t len, hc_data_bad *why, char *msg, size_t n) {
    if (!hc_data_utf8_valid(text, len)) {
        *why = HC_DATA_BAD_UTF8;
        snprintf(msg, n, "invalid UTF-8");
        return NULL;
    }
    json_error_t je;
    json_t *root = json_loadb(text, len, JSON_ALLOW_NUL, &je);
    if (!root) {
        hc_errbuf e;
        hc_json_seterr(&e, HC_ERR_FORMAT, "row", &je); /* its reason never quotes the input */
        *why = HC_DATA_BAD_JSON;
        const char *col = strstr(e.msg, " column ");
        if (je.line == 1 && col)
            snprintf(msg, n, "invalid JSON at%s", col);
        else
            snprintf(msg, n, "%s", e.msg);
        return NULL;
    }
    if (!json_is_object(root)) {
        *why = HC_DATA_BAD_JSON;
        snprintf(msg, n, "not a JSON object but %s", json_kind(root));
        json_decref(root);
        return NULL;
    }
    return root;
}

static int want_type(json_t *o, const char *key, json_type t, int nullable, hc_data_bad *why,
                     char *msg, size_t n) {
    json_t *v = json_object_get(o, key);
    if (!v) {
        *why = HC_DATA_BAD_FIELD;
        snprintf(msg, n, "field %s: missing", key);
        return 0;
    }
    if (json_typeof(v) == t || (nullable && json_is_null(v))) return 1;
    *why = HC_DATA_BAD_FIELD;
    snprintf(msg, n, "field %s: %s, not %s", key, json_kind(v),
             t == JSON_STRING  ? "a string"
             : t == JSON_ARRAY ? "an array"
                               : "an integer");
    return 0;
}

/* The structural checks of a creator row (data.h). */
static int check_creator(json_t *o, hc_data_bad *why, char *msg, size_t n) {
    static const char *const strs[] = {"user_profile", "original_title", "prompt1", "prompt2",
                                       "response"};
    for (size_t i = 0; i < sizeof strs / sizeof strs[0]; i++)
        if (!want_type(o, strs[i], JSON_STRING, 0, why, msg, n)) return 0;
    if (!want_type(o, "original_description", JSON_STRING, 1, why, msg, n)) return 0;
    if (!want_type(o, "title_list", JSON_ARRAY, 0, why, msg, n)) return 0;
    if (!want_type(o, "item_id_list", JSON_ARRAY, 0, why, msg, n)) return 0;
    if (json_string_length(json_object_get(o, "response")) == 0) {
        *why = HC_DATA_BAD_EMPTY;
        snprintf(msg, n, "field response: empty string");
        return 0;
    }
    json_t *tl = json_object_get(o, "title_list"), *il = json_object_get(o, "item_id_list");
    for (size_t i = 0; i < json_array_size(tl); i++)
        if (!json_is_string(json_array_get(tl, i))) {
            *why = HC_DATA_BAD_FIELD;
            snprintf(msg, n, "field title_list[%zu]: %s, not a string", i,
                     json_kind(json_array_get(tl, i)));
            return 0;
        }
    for (size_t i = 0; i < json_array_size(il); i++)
        if (!json_is_integer(json_array_get(il, i))) {
            *why = HC_DATA_BAD_FIELD;
            snprintf(msg, n, "field item_id_list[%zu]: %s, not an integer", i,
                     json_kind(json_array_get(il, i)));
            return 0;
        }
    if (json_array_size(tl) != json_array_size(il)) {
        *why = HC_DATA_BAD_FIELD;
        snprintf(msg, n, "fields title_list and item_id_list: %zu titles but %zu ids",
                 json_array_size(tl), json_array_size(il));
        return 0;
    }
    json_t *up = json_object_get(o, "user_profile");
    json_error_t je;
    json_t *pv = json_loadb(json_string_value(up), json_string_length(up),
                            JSON_DECODE_ANY | JSON_ALLOW_NUL, &je);
    if (!pv) {
        hc_errbuf e;
        hc_json_seterr(&e, HC_ERR_FORMAT, "field user_profile: not JSON", &je);
        *why = HC_DATA_BAD_FIELD;
        snprintf(msg, n, "%s", e.msg);
        return 0;
    }
    json_decref(pv);
    return 1;
}

static const item_ent *find_item(const hc_data *d, int64_t id) {
    size_t lo = 0, hi = d->n_items;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (d->items[mid].id < id)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo < d->n_items && d->items[lo].id == id ? &d->items[lo] : NULL;
}

static int check_nextitem(const hc_data *d, json_t *o, hc_data_bad *why, char *msg, size_t n) {
    if (!want_type(o, "item_ids", JSON_ARRAY, 0, why, msg, n)) return 0;
    json_t *a = json_object_get(o, "item_ids");
    for (size_t i = 0; i < json_array_size(a); i++) {
        json_t *v = json_array_get(a, i);
        if (!json_is_integer(v)) {
            *why = HC_DATA_BAD_FIELD;
            snprintf(msg, n, "field item_ids[%zu]: %s, not an integer", i, json_kind(v));
            return 0;
        }
        if (!find_item(d, (int64_t)json_integer_value(v))) {
            *why = HC_DATA_BAD_FIELD;
            snprintf(msg, n, "field item_ids[%zu]: item %lld is not in the items file", i,
                     (long long)json_integer_value(v));
            return 0;
        }
    }
    if (json_array_size(a) < 2) {
        *why = HC_DATA_BAD_EMPTY;
        snprintf(msg, n, "field item_ids: %zu item(s), at least 2 are needed", json_array_size(a));
        return 0;
    }
    return 1;
}

/* Parses and checks a line of the data file: the object, or NULL (bad row; why/msg set). */
static json_t *check_line(const hc_data *d, const char *text, size_t len, hc_data_bad *why,
                          char *msg, size_t n) {
    json_t *o = parse_line(text, len, why, msg, n);
    if (!o) return NULL;
    int ok =
        d->kind == KIND_CREATOR ? check_creator(o, why, msg, n) : check_nextitem(d, o, why, msg, n);
    if (!ok) {
        json_decref(o);
        return NULL;
    }
    return o;
}

/* ---- indexing ------------------------------------------------------------------------------- */

typedef int (*line_fn)(hc_data *d, const char *text, size_t len, uint64_t off, uint64_t line,
                       int too_long, hc_errbuf *eb);

static int blank(const char *s, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (s[i] != ' ' && s[i] != '\t' && s[i] != '\r') return 0;
    return 1;
}

static int buf_reserve(hc_data *d, size_t need) {
    if (need <= d->bufcap) return HC_OK;
    size_t nc = d->bufcap ? d->bufcap : 4096;
    while (nc < need)
        nc *= 2;
    char *q = realloc(d->buf, nc);
    if (!q) return HC_ERR_NOMEM;
    d->buf = q;
    d->bufcap = nc;
    return HC_OK;
}

/* Calls fn for every line of fd (lines longer than max_line_bytes with too_long set and only
 * their first bytes). */
static int scan_lines(hc_data *d, int fd, const char *path, line_fn fn, hc_errbuf *eb) {
    enum { CHUNK = 1 << 16 };
    char *chunk = malloc(CHUNK);
    if (!chunk) return hc_seterr(eb, HC_ERR_NOMEM, "%s: out of memory", path);
    uint64_t off = 0, start = 0, line = 1;
    size_t have = 0;
    int too_long = 0, rc = HC_OK;
    const size_t max = d->p.max_line_bytes;
    for (;;) {
        ssize_t r = read(fd, chunk, CHUNK);
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) {
            rc = hc_seterr(eb, HC_ERR_IO, "%s: read failed: %s", path, strerror(errno));
            break;
        }
        if (r == 0) break;
        size_t i = 0;
        while (i < (size_t)r && rc == HC_OK) {
            char *nl = memchr(chunk + i, '\n', (size_t)r - i);
            size_t seg = nl ? (size_t)(nl - (chunk + i)) : (size_t)r - i;
            if (!too_long) {
                if (have + seg > max) {
                    too_long = 1;
                } else {
                    if (buf_reserve(d, have + seg + 1)) {
                        rc = hc_seterr(eb, HC_ERR_NOMEM, "%s: out of memory", path);
                        break;
                    }
                    memcpy(d->buf + have, chunk + i, seg);
                    have += seg;
                }
            }
            i += seg;
            if (nl) {
                size_t len = have;
                if (!too_long && len && d->buf[len - 1] == '\r') len--;
                rc = fn(d, d->buf, len, start, line, too_long, eb);
                i++;
                start = off + i;
                line++;
                have = 0;
                too_long = 0;
            }
        }
        off += (uint64_t)r;
        if (rc) break;
    }
    if (rc == HC_OK && (have || too_long || start < off)) {
        size_t len = have;
        if (!too_long && len && d->buf[len - 1] == '\r') len--;
        rc = fn(d, d->buf, len, start, line, too_long, eb);
    }
    free(chunk);
    return rc;
}

static int index_line(hc_data *d, const char *text, size_t len, uint64_t off, uint64_t line,
                      int too_long, hc_errbuf *eb) {
    if (too_long) {
        bad_add(d, HC_DATA_BAD_LIMIT, line, "longer than max_line_bytes (%zu)",
                d->p.max_line_bytes);
        return HC_OK;
    }
    if (blank(text, len)) return HC_OK;
    hc_data_bad why = HC_DATA_BAD_JSON;
    char msg[600];
    json_t *o = check_line(d, text, len, &why, msg, sizeof msg);
    if (!o) {
        bad_add(d, why, line, "%s", msg);
        return HC_OK;
    }
    json_decref(o);
    if (d->n == d->cap) {
        int64_t nc = d->cap ? d->cap * 2 : 1024;
        if (nc > (int64_t)UINT32_MAX) nc = (int64_t)UINT32_MAX;
        if (d->n >= nc)
            return hc_seterr(eb, HC_ERR_RANGE, "%s: more than %u rows", d->path, UINT32_MAX - 1);
        data_row *q = realloc(d->rows, sizeof *q * (size_t)nc);
        if (!q) return hc_seterr(eb, HC_ERR_NOMEM, "%s: out of memory", d->path);
        d->rows = q;
        d->cap = nc;
    }
    data_row *r = &d->rows[d->n++];
    r->off = off;
    r->line = line;
    r->len = (uint32_t)len;
    r->flags = 0;
    return HC_OK;
}

/* items.jsonl: {"item_id": int, "title": string} per line; any bad line is an error. */
typedef struct items_acc {
    sbuf blob;
    item_ent *v;
    size_t n, cap;
    const char *path;
} items_acc;

static int items_line(hc_data *d, const char *text, size_t len, uint64_t off, uint64_t line,
                      int too_long, hc_errbuf *eb) {
    (void)off;
    items_acc *a = d->acc;
    if (too_long)
        return hc_seterr(eb, HC_ERR_FORMAT, "%s:%llu: longer than max_line_bytes (%zu)", a->path,
                         (unsigned long long)line, d->p.max_line_bytes);
    if (blank(text, len)) return HC_OK;
    hc_data_bad why;
    char msg[600];
    json_t *o = parse_line(text, len, &why, msg, sizeof msg);
    if (!o)
        return hc_seterr(eb, HC_ERR_FORMAT, "%s:%llu: %s", a->path, (unsigned long long)line, msg);
    if (!want_type(o, "item_id", JSON_INTEGER, 0, &why, msg, sizeof msg) ||
        !want_type(o, "title", JSON_STRING, 0, &why, msg, sizeof msg)) {
        json_decref(o);
        return hc_seterr(eb, HC_ERR_FORMAT, "%s:%llu: %s", a->path, (unsigned long long)line, msg);
    }
    json_t *t = json_object_get(o, "title");
    if (a->n == a->cap) {
        size_t nc = a->cap ? a->cap * 2 : 1024;
        item_ent *q = realloc(a->v, sizeof *q * nc);
        if (!q) {
            json_decref(o);
            return hc_seterr(eb, HC_ERR_NOMEM, "%s: out of memory", a->path);
        }
        a->v = q;
        a->cap = nc;
    }
    item_ent *e = &a->v[a->n++];
    e->id = (int64_t)json_integer_value(json_object_get(o, "item_id"));
    e->off = a->blob.n;
    e->len = json_string_length(t);
    e->line = line;
    sb_put(&a->blob, json_string_value(t), e->len);
    json_decref(o);
    if (a->blob.oom) return hc_seterr(eb, HC_ERR_NOMEM, "%s: out of memory", a->path);
    return HC_OK;
}

static int item_cmp(const void *x, const void *y) {
    const item_ent *a = x, *b = y;
    if (a->id != b->id) return a->id < b->id ? -1 : 1;
    return a->line < b->line ? -1 : a->line > b->line;
}

/* ---- open / free ---------------------------------------------------------------------------- */

void hc_data_free(hc_data *d) {
    if (!d) return;
    if (d->fd >= 0) close(d->fd);
    free(d->path);
    free(d->rows);
    free(d->perm);
    if (d->item_ctx) hc_tok_ctx_free(d->item_ctx);
    if (d->cre_ctx) hc_tok_ctx_free(d->cre_ctx);
    free(d->pp_ids);
    free(d->buf);
    free(d->items);
    free(d->items_blob);
    free(d);
}

static int check_params(const hc_creator *c, const hc_data_params *p, hc_errbuf *eb) {
    if (p->max_item_list_length < 0 || p->max_text_length < 0 || p->max_gen_text_length < 3 ||
        p->max_user_profile_text_length < 1 || p->max_line_bytes < 2 ||
        p->max_line_bytes > UINT32_MAX)
        return hc_seterr(eb, HC_ERR_INVAL,
                         "data params: MAX_ITEM_LIST_LENGTH %d, "
                         "MAX_TEXT_LENGTH %d, MAX_GEN_TEXT_LENGTH %d, "
                         "MAX_USER_PROFILE_TEXT_LENGTH %d or max_line_bytes %zu out of range",
                         p->max_item_list_length, p->max_text_length, p->max_gen_text_length,
                         p->max_user_profile_text_length, p->max_line_bytes);
    if (p->max_item_list_length > c->pkg.max_history)
        return hc_seterr(eb, HC_ERR_INVAL,
                         "data params: MAX_ITEM_LIST_LENGTH %d is more than the "
                         "model package's max_history %d",
                         p->max_item_list_length, c->pkg.max_history);
    if (p->max_text_length > c->pkg.max_item_tokens)
        return hc_seterr(eb, HC_ERR_INVAL,
                         "data params: MAX_TEXT_LENGTH %d is more than the "
                         "model package's max_item_tokens %d",
                         p->max_text_length, c->pkg.max_item_tokens);
    return HC_OK;
}

static int open_common(hc_data **out, hc_creator *c, const char *path, data_kind kind,
                       const hc_data_params *p, hc_errbuf *eb) {
    *out = NULL;
    if (!c || !path) return hc_seterr(eb, HC_ERR_INVAL, "hc_data_open: NULL argument");
    hc_data_params pp = p ? *p : hc_data_default_params();
    int rc = check_params(c, &pp, eb);
    if (rc) return rc;
    if (kind == KIND_CREATOR && !c->creative)
        return hc_seterr(eb, HC_ERR_INVAL,
                         "%s: creator rows need the creative LLM, which is not "
                         "loaded",
                         path);
    hc_data *d = calloc(1, sizeof *d);
    if (!d) return hc_seterr(eb, HC_ERR_NOMEM, "out of memory");
    d->fd = -1;
    d->c = c;
    d->kind = kind;
    d->p = pp;
    d->perm_epoch = -1;
    d->path = strdup(path);
    d->item_ctx = hc_tok_ctx_new(c->item_tok);
    if (c->creative_tok) d->cre_ctx = hc_tok_ctx_new(c->creative_tok);
    if (!d->path || !d->item_ctx || (c->creative_tok && !d->cre_ctx)) {
        hc_data_free(d);
        return hc_seterr(eb, HC_ERR_NOMEM, "out of memory");
    }
    *out = d;
    return HC_OK;
}

/* eos and the profile prompt (creator rows). */
static int prepare_creative(hc_data *d, hc_errbuf *eb) {
    const hc_creator *c = d->c;
    d->eos = c->n_eos > 0 ? c->eos[0] : hc_tokenizer_eos_id(c->creative_tok);
    if (d->eos < 0)
        return hc_seterr(eb, HC_ERR_FORMAT,
                         "%s: the creative tokenizer has no eos_token and the "
                         "package no creative_eos_ids",
                         d->path);
    if (c->pkg.profile_prompt) {
        size_t n = 0;
        int rc = hc_tokenizer_encode(c->creative_tok, d->cre_ctx, c->pkg.profile_prompt,
                                     strlen(c->pkg.profile_prompt), 0, &d->pp_ids, &n, eb);
        if (rc) return rc;
        d->n_pp = (int)n;
        d->have_pp = 1;
        if (1 + d->n_pp + 2 > d->p.max_user_profile_text_length)
            return hc_seterr(eb, HC_ERR_RANGE,
                             "the package's profile_prompt has %d tokens: no "
                             "room for the profile under MAX_USER_PROFILE_TEXT_LENGTH %d",
                             d->n_pp, d->p.max_user_profile_text_length);
    }
    return HC_OK;
}

static int open_and_index(hc_data *d, hc_errbuf *eb) {
    uint64_t size = 0;
    int rc = hc_open_regular(d->path, NULL, &d->fd, &size, eb);
    if (rc) return rc;
    if (size == 0) return hc_seterr(eb, HC_ERR_FORMAT, "%s: empty file (no rows)", d->path);
    rc = scan_lines(d, d->fd, d->path, index_line, eb);
    if (rc) return rc;
    if (d->n == 0) {
        char sum[400];
        hc_data_summary(d, sum, sizeof sum);
        return hc_seterr(eb, HC_ERR_FORMAT, "no usable rows: %s", sum);
    }
    d->perm = malloc(sizeof *d->perm * (size_t)d->n);
    if (!d->perm) return hc_seterr(eb, HC_ERR_NOMEM, "%s: out of memory", d->path);
    return HC_OK;
}

int hc_data_open(hc_data **out, hc_creator *c, const char *path, const hc_data_params *p,
                 hc_errbuf *eb) {
    hc_data *d = NULL;
    int rc = open_common(&d, c, path, KIND_CREATOR, p, eb);
    if (rc) return rc;
    if ((rc = prepare_creative(d, eb)) || (rc = open_and_index(d, eb))) {
        hc_data_free(d);
        return rc;
    }
    *out = d;
    return HC_OK;
}

int hc_data_open_nextitem(hc_data **out, hc_creator *c, const char *items_path,
                          const char *seq_path, const hc_data_params *p, hc_errbuf *eb) {
    *out = NULL;
    if (!items_path) return hc_seterr(eb, HC_ERR_INVAL, "hc_data_open_nextitem: NULL argument");
    hc_data *d = NULL;
    int rc = open_common(&d, c, seq_path, KIND_NEXTITEM, p, eb);
    if (rc) return rc;
    int fd = -1;
    uint64_t size = 0;
    items_acc acc = {0};
    acc.path = items_path;
    rc = hc_open_regular(items_path, NULL, &fd, &size, eb);
    if (rc == HC_OK && size == 0)
        rc = hc_seterr(eb, HC_ERR_FORMAT, "%s: empty file (no items)", items_path);
    if (rc == HC_OK) {
        d->acc = &acc; /* items_line's accumulator, during the scan only */
        rc = scan_lines(d, fd, items_path, items_line, eb);
        d->acc = NULL;
    }
    if (fd >= 0) close(fd);
    if (rc == HC_OK && acc.n == 0) rc = hc_seterr(eb, HC_ERR_FORMAT, "%s: no items", items_path);
    if (rc == HC_OK) {
        qsort(acc.v, acc.n, sizeof *acc.v, item_cmp);
        for (size_t i = 1; i < acc.n && rc == HC_OK; i++)
            if (acc.v[i].id == acc.v[i - 1].id)
                rc = hc_seterr(eb, HC_ERR_FORMAT,
                               "%s:%llu: item_id %lld already given on line "
                               "%llu",
                               items_path, (unsigned long long)acc.v[i].line,
                               (long long)acc.v[i].id, (unsigned long long)acc.v[i - 1].line);
    }
    if (rc) {
        free(acc.v);
        free(acc.blob.p);
        hc_data_free(d);
        return rc;
    }
    d->items = acc.v;
    d->n_items = acc.n;
    d->items_blob = acc.blob.p;
    if ((rc = open_and_index(d, eb))) {
        hc_data_free(d);
        return rc;
    }
    *out = d;
    return HC_OK;
}

int64_t hc_data_rows(const hc_data *d) {
    return d->n;
}

/* ---- order ---------------------------------------------------------------------------------- */

static uint64_t splitmix64(uint64_t *s) {
    uint64_t z = (*s += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

/* Uniform in [0, n), n >= 1 (rejection: no modulo bias). */
static uint64_t below(uint64_t *s, uint64_t n) {
    uint64_t lim = UINT64_MAX - UINT64_MAX % n;
    for (;;) {
        uint64_t x = splitmix64(s);
        if (x < lim) return x % n;
    }
}

static void make_perm(hc_data *d, int64_t epoch) {
    for (int64_t i = 0; i < d->n; i++)
        d->perm[i] = (uint32_t)i;
    if (d->p.shuffle) {
        uint64_t s = d->p.seed;
        uint64_t e = (uint64_t)epoch;
        s = splitmix64(&s) ^ splitmix64(&e); /* the state depends on (seed, epoch) only */
        for (int64_t i = d->n - 1; i > 0; i--) {
            int64_t j = (int64_t)below(&s, (uint64_t)i + 1);
            uint32_t t = d->perm[i];
            d->perm[i] = d->perm[j];
            d->perm[j] = t;
        }
    }
    d->perm_epoch = epoch;
}

int64_t hc_data_order_at(hc_data *d, int64_t epoch, int64_t pos) {
    if (epoch < 0 || pos < 0 || pos >= d->n) return -1;
    if (d->perm_epoch != epoch) make_perm(d, epoch);
    return d->perm[pos];
}

hc_data_cursor hc_data_tell(const hc_data *d) {
    return d->cur;
}

int hc_data_seek(hc_data *d, hc_data_cursor cur, hc_errbuf *eb) {
    if (cur.epoch < 0 || cur.pos < 0 || cur.pos >= d->n)
        return hc_seterr(eb, HC_ERR_RANGE,
                         "%s: data cursor (epoch %lld, position %lld) outside "
                         "the %lld rows of the file",
                         d->path, (long long)cur.epoch, (long long)cur.pos, (long long)d->n);
    d->cur = cur;
    return HC_OK;
}

/* ---- samples -------------------------------------------------------------------------------- */

void hc_data_sample_free(hc_data_sample *s) {
    if (!s) return;
    free(s->item_lens);
    free(s->item_tok);
    free(s->item_id_list);
    free(s->ids);
    free(s->ad_tok);
    free(s->profile_json);
    free(s->profile_tok);
    free(s->recon_ids);
    memset(s, 0, sizeof *s);
}

typedef enum { LOAD_OK, LOAD_DROPPED } load_result;

/* Cuts every title of a tokenized history to max_text_length tokens (in place). */
static void cut_titles(int32_t *lens, int32_t *ids, int n, int max) {
    size_t src = 0, dst = 0;
    for (int i = 0; i < n; i++) {
        int keep = lens[i] < max ? lens[i] : max;
        if (keep && dst != src) memmove(ids + dst, ids + src, sizeof(int32_t) * (size_t)keep);
        src += (size_t)lens[i];
        dst += (size_t)keep;
        lens[i] = keep;
    }
}

/* Drop of a row found when it is read: counted the first time. */
static load_result drop(hc_data *d, data_row *r, hc_data_bad why, const char *msg) {
    if (!(r->flags & ROW_DROP_COUNTED)) {
        r->flags |= ROW_DROP_COUNTED;
        bad_add(d, why, r->line, "%s", msg);
    }
    return LOAD_DROPPED;
}

/* The history of a sample from its titles (the last max_item_list_length). */
static int tokenize_history(hc_data *d, data_row *r, const char *const *titles, const size_t *lens,
                            int n, hc_data_sample *s, load_result *res, hc_errbuf *eb) {
    hc_history h = {titles, lens, n};
    hc_creq q;
    memset(&q, 0, sizeof q);
    hc_creq_buf qb;
    hc_errbuf e = {{0}};
    int rc = hc_creator_tokenize_request(d->c, d->item_ctx, d->cre_ctx, &h, NULL, 0, NULL, 0, &q,
                                         &qb, &e);
    if (rc == HC_ERR_NOMEM) return hc_seterr(eb, rc, "%s: out of memory", d->path);
    if (rc) {
        char msg[600];
        snprintf(msg, sizeof msg, "history: %s", e.msg[0] ? e.msg : hc_strerror(rc));
        *res = drop(d, r, HC_DATA_BAD_TOKENS, msg);
        return HC_OK;
    }
    cut_titles(qb.item_lens, qb.item_ids, q.n_items, d->p.max_text_length);
    s->n_items = q.n_items;
    s->item_lens = qb.item_lens;
    s->item_tok = qb.item_ids;
    free(qb.prompt2);
    return HC_OK;
}

static int encode_cre(hc_data *d, const char *text, size_t len, int32_t **ids, int *n,
                      const char *what, data_row *r, load_result *res, hc_errbuf *eb) {
    size_t nn = 0;
    hc_errbuf e = {{0}};
    *ids = NULL;
    *n = 0;
    int rc = hc_tokenizer_encode(d->c->creative_tok, d->cre_ctx, text, len, 0, ids, &nn, &e);
    if (rc == HC_ERR_NOMEM) return hc_seterr(eb, rc, "%s: out of memory", d->path);
    if (rc == HC_OK && nn > (size_t)INT32_MAX / 2) rc = HC_ERR_RANGE;
    if (rc) {
        char msg[600];
        snprintf(msg, sizeof msg, "%s: %s", what, e.msg[0] ? e.msg : hc_strerror(rc));
        free(*ids);
        *ids = NULL;
        *res = drop(d, r, HC_DATA_BAD_TOKENS, msg);
        return HC_OK;
    }
    *n = (int)nn;
    const int32_t V = d->c->creative->cfg.vocab_size;
    for (size_t i = 0; i < nn; i++)
        if ((*ids)[i] < 0 || (*ids)[i] >= V) {
            char msg[600];
            snprintf(msg, sizeof msg,
                     "%s: creative tokenizer id %d outside the creative LLM's "
                     "vocabulary (%d)",
                     what, (*ids)[i], V);
            free(*ids);
            *ids = NULL;
            *n = 0;
            *res = drop(d, r, HC_DATA_BAD_TOKENS, msg);
            return HC_OK;
        }
    return HC_OK;
}

static int32_t *cat_ids(const int32_t *a, int na, int32_t mid, int has_mid, const int32_t *b,
                        int nb, int extra) {
    size_t n = (size_t)na + (has_mid ? 1 : 0) + (size_t)nb + (size_t)extra;
    int32_t *v = malloc(sizeof(int32_t) * (n ? n : 1));
    if (!v) return NULL;
    if (na) memcpy(v, a, sizeof(int32_t) * (size_t)na);
    if (has_mid) v[na] = mid;
    if (nb) memcpy(v + na + (has_mid ? 1 : 0), b, sizeof(int32_t) * (size_t)nb);
    return v;
}

/* A creator row's sample (o: the parsed row). */
static int load_creator(hc_data *d, data_row *r, json_t *o, hc_data_sample *s, load_result *res,
                        hc_errbuf *eb) {
    const hc_creator *c = d->c;
    const int32_t slot = c->pkg.slot_token_id;
    json_t *tl = json_object_get(o, "title_list"), *il = json_object_get(o, "item_id_list");
    const int n_all = (int)json_array_size(tl);
    const int keep = n_all < d->p.max_item_list_length ? n_all : d->p.max_item_list_length;
    const char **titles = malloc(sizeof(char *) * (size_t)(keep ? keep : 1));
    size_t *lens = malloc(sizeof(size_t) * (size_t)(keep ? keep : 1));
    s->item_id_list = malloc(sizeof(int64_t) * (size_t)(keep ? keep : 1));
    int32_t *p2 = NULL, *p1 = NULL, *resp = NULL;
    int n2 = 0, n1 = 0, nr = 0, rc = HC_OK;
    if (!titles || !lens || !s->item_id_list) {
        rc = hc_seterr(eb, HC_ERR_NOMEM, "%s: out of memory", d->path);
        goto done;
    }
    for (int i = 0; i < keep; i++) {
        json_t *t = json_array_get(tl, (size_t)(n_all - keep + i));
        titles[i] = json_string_value(t);
        lens[i] = json_string_length(t);
        json_t *id = json_array_get(il, (size_t)(n_all - keep + i));
        s->item_id_list[i] = (int64_t)json_integer_value(id);
    }
    rc = tokenize_history(d, r, titles, lens, keep, s, res, eb);
    if (rc || *res != LOAD_OK) goto done;

    /* the ad title, item tokenizer (L_cls) */
    json_t *ot = json_object_get(o, "original_title");
    json_t *od = json_object_get(o, "original_description");
    {
        hc_data_sample ad;
        memset(&ad, 0, sizeof ad);
        const char *t0 = json_string_value(ot);
        size_t l0 = json_string_length(ot);
        rc = tokenize_history(d, r, &t0, &l0, 1, &ad, res, eb);
        if (rc || *res != LOAD_OK) {
            hc_data_sample_free(&ad);
            goto done;
        }
        s->ad_tok = ad.item_tok;
        s->n_ad_tok = ad.item_lens[0];
        ad.item_tok = NULL;
        hc_data_sample_free(&ad);
    }

    /* prompt1 + slot + prompt2 */
    if (d->p.row_prompts) {
        json_t *j1 = json_object_get(o, "prompt1"), *j2 = json_object_get(o, "prompt2");
        rc = encode_cre(d, json_string_value(j1), json_string_length(j1), &p1, &n1, "prompt1", r,
                        res, eb);
        if (rc || *res != LOAD_OK) goto done;
        rc = encode_cre(d, json_string_value(j2), json_string_length(j2), &p2, &n2, "prompt2", r,
                        res, eb);
        if (rc || *res != LOAD_OK) goto done;
    } else {
        hc_history h0 = {NULL, NULL, 0};
        hc_creq q;
        memset(&q, 0, sizeof q);
        hc_creq_buf qb;
        hc_errbuf e = {{0}};
        const char *desc = json_is_string(od) ? json_string_value(od) : NULL;
        size_t dlen = json_is_string(od) ? json_string_length(od) : 0;
        rc = hc_creator_tokenize_request(c, d->item_ctx, d->cre_ctx, &h0, json_string_value(ot),
                                         json_string_length(ot), desc, dlen, &q, &qb, &e);
        if (rc == HC_ERR_NOMEM) {
            rc = hc_seterr(eb, rc, "%s: out of memory", d->path);
            goto done;
        }
        if (rc) {
            char msg[600];
            snprintf(msg, sizeof msg, "prompt2: %s", e.msg[0] ? e.msg : hc_strerror(rc));
            *res = drop(d, r,
                        strstr(e.msg, "max_prompt_tokens") ? HC_DATA_BAD_LIMIT : HC_DATA_BAD_TOKENS,
                        msg);
            rc = HC_OK;
            goto done;
        }
        p2 = qb.prompt2;
        n2 = q.n_prompt2;
        qb.prompt2 = NULL;
        hc_creq_buf_free(&qb);
        n1 = c->n_prompt1;
        p1 = cat_ids(c->prompt1_ids, n1, 0, 0, NULL, 0, 0);
        if (!p1) {
            rc = hc_seterr(eb, HC_ERR_NOMEM, "%s: out of memory", d->path);
            goto done;
        }
    }
    const int n_prompt = n1 + 1 + n2;
    if (n_prompt + 2 > d->p.max_gen_text_length) {
        char msg[600];
        snprintf(msg, sizeof msg,
                 "the creative prompt has %d tokens: no room for the response "
                 "under MAX_GEN_TEXT_LENGTH %d",
                 n_prompt, d->p.max_gen_text_length);
        *res = drop(d, r, HC_DATA_BAD_LIMIT, msg);
        goto done;
    }
    json_t *jr = json_object_get(o, "response");
    rc = encode_cre(d, json_string_value(jr), json_string_length(jr), &resp, &nr, "response", r,
                    res, eb);
    if (rc || *res != LOAD_OK) goto done;
    const int room = d->p.max_gen_text_length - n_prompt - 1; /* response[: R - 1] */
    if (nr > room) nr = room;
    if (nr == 0) {
        *res = drop(d, r, HC_DATA_BAD_EMPTY, "response: no tokens");
        goto done;
    }
    int32_t *pre = cat_ids(p1, n1, slot, 1, p2, n2, 0);
    s->ids = pre ? cat_ids(pre, n_prompt, 0, 0, resp, nr, 1) : NULL;
    free(pre);
    if (!s->ids) {
        rc = hc_seterr(eb, HC_ERR_NOMEM, "%s: out of memory", d->path);
        goto done;
    }
    s->ids[n_prompt + nr] = d->eos;
    s->n_ids = n_prompt + nr + 1;
    s->slot_pos = n1;
    s->n_prompt = n_prompt;

    /* the profile (L_align, L_recon) */
    {
        json_t *up = json_object_get(o, "user_profile");
        hc_errbuf e = {{0}};
        rc = hc_data_py_compact_json(json_string_value(up), json_string_length(up),
                                     &s->profile_json, &s->profile_json_len, &e);
        if (rc == HC_ERR_NOMEM) {
            rc =
                hc_seterr(eb, rc, "%s: line %llu: %s", d->path, (unsigned long long)r->line, e.msg);
            goto done;
        }
        if (rc) { /* checked when indexed: the file changed */
            rc = hc_seterr(eb, HC_ERR_FORMAT,
                           "%s: line %llu changed since the file was "
                           "indexed: %s",
                           d->path, (unsigned long long)r->line, e.msg);
            goto done;
        }
        int32_t *pt = NULL;
        int np = 0;
        rc = encode_cre(d, s->profile_json, s->profile_json_len, &pt, &np, "user_profile", r, res,
                        eb);
        if (rc || *res != LOAD_OK) goto done;
        const int U = d->p.max_user_profile_text_length;
        s->profile_tok = pt;
        s->n_profile_tok = np < U ? np : U;
        if (d->have_pp) {
            const int pre_n = 1 + d->n_pp, rmax = U - pre_n;
            const int keep_p = np < rmax - 1 ? np : rmax - 1;
            s->recon_ids = cat_ids(&slot, 1, 0, 0, d->pp_ids, d->n_pp, keep_p + 1);
            if (!s->recon_ids) {
                rc = hc_seterr(eb, HC_ERR_NOMEM, "%s: out of memory", d->path);
                goto done;
            }
            if (keep_p) memcpy(s->recon_ids + pre_n, pt, sizeof(int32_t) * (size_t)keep_p);
            s->recon_ids[pre_n + keep_p] = d->eos;
            s->n_recon = pre_n + keep_p + 1;
            s->recon_n_prompt = pre_n;
        }
    }
done:
    free(titles);
    free(lens);
    free(p1);
    free(p2);
    free(resp);
    return rc;
}

static int load_nextitem(hc_data *d, data_row *r, json_t *o, hc_data_sample *s, load_result *res,
                         hc_errbuf *eb) {
    json_t *a = json_object_get(o, "item_ids");
    const int n_all = (int)json_array_size(a);
    const int keep = n_all < d->p.max_item_list_length ? n_all : d->p.max_item_list_length;
    const char **titles = malloc(sizeof(char *) * (size_t)(keep ? keep : 1));
    size_t *lens = malloc(sizeof(size_t) * (size_t)(keep ? keep : 1));
    s->item_id_list = malloc(sizeof(int64_t) * (size_t)(keep ? keep : 1));
    int rc = HC_OK;
    if (!titles || !lens || !s->item_id_list) {
        rc = hc_seterr(eb, HC_ERR_NOMEM, "%s: out of memory", d->path);
    } else {
        for (int i = 0; i < keep; i++) {
            int64_t id = (int64_t)json_integer_value(json_array_get(a, (size_t)(n_all - keep + i)));
            const item_ent *e = find_item(d, id);
            if (!e) { /* checked when indexed */
                rc = hc_seterr(eb, HC_ERR_FORMAT,
                               "%s: line %llu changed since the file was "
                               "indexed (item %lld)",
                               d->path, (unsigned long long)r->line, (long long)id);
                break;
            }
            titles[i] = d->items_blob + e->off;
            lens[i] = e->len;
            s->item_id_list[i] = id;
        }
        if (rc == HC_OK) rc = tokenize_history(d, r, titles, lens, keep, s, res, eb);
    }
    free(titles);
    free(lens);
    return rc;
}

/* Reads row idx and fills s; *res tells a drop. */
static int load_row(hc_data *d, int64_t idx, hc_data_sample *s, load_result *res, hc_errbuf *eb) {
    data_row *r = &d->rows[idx];
    *res = LOAD_OK;
    if (buf_reserve(d, (size_t)r->len + 1)) return hc_seterr(eb, HC_ERR_NOMEM, "out of memory");
    size_t got = 0;
    while (got < r->len) {
        ssize_t k = pread(d->fd, d->buf + got, r->len - got, (off_t)(r->off + got));
        if (k < 0 && errno == EINTR) continue;
        if (k < 0)
            return hc_seterr(eb, HC_ERR_IO, "%s: line %llu: read failed: %s", d->path,
                             (unsigned long long)r->line, strerror(errno));
        if (k == 0)
            return hc_seterr(eb, HC_ERR_IO,
                             "%s: line %llu: the file is shorter than when it "
                             "was indexed",
                             d->path, (unsigned long long)r->line);
        got += (size_t)k;
    }
    d->buf[r->len] = 0;
    hc_data_bad why;
    char msg[600];
    json_t *o = check_line(d, d->buf, r->len, &why, msg, sizeof msg);
    if (!o)
        return hc_seterr(eb, HC_ERR_FORMAT,
                         "%s: line %llu changed since the file was indexed: "
                         "%s",
                         d->path, (unsigned long long)r->line, msg);
    s->line = r->line;
    int rc = d->kind == KIND_CREATOR ? load_creator(d, r, o, s, res, eb)
                                     : load_nextitem(d, r, o, s, res, eb);
    json_decref(o);
    if (rc || *res != LOAD_OK) hc_data_sample_free(s);
    return rc;
}

int hc_data_next(hc_data *d, hc_data_sample *s, hc_errbuf *eb) {
    memset(s, 0, sizeof *s);
    for (int64_t tries = 0; tries < d->n; tries++) {
        int64_t idx = hc_data_order_at(d, d->cur.epoch, d->cur.pos);
        load_result res = LOAD_OK;
        int rc = load_row(d, idx, s, &res, eb);
        if (rc) return rc;
        if (++d->cur.pos == d->n) {
            d->cur.pos = 0;
            d->cur.epoch++;
        }
        if (res == LOAD_OK) return HC_OK;
    }
    char sum[400];
    hc_data_summary(d, sum, sizeof sum);
    return hc_seterr(eb, HC_ERR_FORMAT, "every row was dropped: %s", sum);
}
