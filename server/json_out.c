/* json_out.c: the /v1/titles answer (200, not streamed) written directly, without building a
 * jansson tree and json_dumps (which formats every number through snprintf): the cached-title
 * path's largest cost (docs/BENCHMARKS.md, "hllm-creatord (issue 9)"). The bytes are those of
 * title_json + json_dumps(JSON_COMPACT) (same keys in the same order, jansson's escaping and its
 * %.17g for the match score) except the timings, written in fixed point with up to 6 decimals
 * (nanoseconds of a millisecond count; a whole number keeps jansson's ".0"). A title that is not
 * valid UTF-8 or a number that is not finite (jansson would drop the key) returns NULL: the
 * caller takes the jansson path. */
#include "server.h"

#include <math.h>

typedef struct {
    char *b;
    size_t len, cap;
} obuf;

static void put(obuf *o, const char *s, size_t n) {
    buf_append(&o->b, &o->len, &o->cap, s, n);
}

static void puts_(obuf *o, const char *s) {
    put(o, s, strlen(s));
}

static void put_i64(obuf *o, long long v) {
    char t[24];
    int i = (int)sizeof t;
    unsigned long long u = v < 0 ? 0ull - (unsigned long long)v : (unsigned long long)v;
    do {
        t[--i] = (char)('0' + u % 10);
        u /= 10;
    } while (u);
    if (v < 0) t[--i] = '-';
    put(o, t + i, sizeof t - (size_t)i);
}

/* jansson's real: %.17g, ".0" appended when it reads as an integer */
static void put_real17(obuf *o, double x) {
    char t[40];
    int n = snprintf(t, sizeof t, "%.17g", x);
    if (n < 0 || n >= (int)sizeof t) n = 0;
    t[n] = 0;
    char *e = strchr(t, 'e');
    if (e) { /* no '+' and no leading zeros in the exponent */
        char *d = e + 1, *q = e + 1;
        if (*q == '-') *d++ = *q++;
        if (*q == '+') q++;
        while (*q == '0' && q[1]) q++;
        memmove(d, q, strlen(q) + 1);
        n = (int)strlen(t);
    }
    put(o, t, (size_t)n);
    if (!strpbrk(t, ".e")) put(o, ".0", 2);
}

/* a millisecond count: up to 6 decimals, trailing zeros dropped, at least one decimal */
static void put_ms(obuf *o, double x) {
    if (!(x > -9e12 && x < 9e12)) { /* huge (title_json_text checked finiteness) */
        put_real17(o, x);
        return;
    }
    const int neg = x < 0;
    const long long ns = (long long)((neg ? -x : x) * 1e6 + 0.5);
    if (neg && ns) put(o, "-", 1);
    put_i64(o, ns / 1000000);
    char f[8];
    long long frac = ns % 1000000;
    int n = 6;
    for (int i = 5; i >= 0; i--) {
        f[i] = (char)('0' + frac % 10);
        frac /= 10;
    }
    while (n > 1 && f[n - 1] == '0')
        n--;
    put(o, ".", 1);
    put(o, f, (size_t)n);
}

/* jansson's utf8 check: no overlong forms, surrogates or code points past U+10FFFF */
static int utf8_valid(const unsigned char *p, size_t n) {
    size_t i = 0;
    while (i < n) {
        const unsigned c = p[i];
        int k = c < 0x80 ? 1 : (c & 0xE0) == 0xC0 ? 2 : (c & 0xF0) == 0xE0 ? 3
                : (c & 0xF8) == 0xF0 ? 4 : 0;
        if (!k || i + (size_t)k > n) return 0;
        if (k > 1) {
            unsigned cp = k == 2 ? (c & 0x1Fu) : k == 3 ? (c & 0x0Fu) : (c & 0x07u);
            for (int j = 1; j < k; j++) {
                if ((p[i + (size_t)j] & 0xC0) != 0x80) return 0;
                cp = cp << 6 | (p[i + (size_t)j] & 0x3Fu);
            }
            if (!((k == 2 && cp >= 0x80) || (k == 3 && cp >= 0x800 && (cp < 0xD800 || cp > 0xDFFF))
                  || (k == 4 && cp >= 0x10000 && cp <= 0x10FFFF)))
                return 0;
        }
        i += (size_t)k;
    }
    return 1;
}

/* a JSON string as jansson's dump writes it without flags: '"' and '\\' escaped, \b \f \n \r \t,
 * other control bytes as \u00XX, everything else (UTF-8 included) as is */
static void put_str(obuf *o, const char *s, size_t n) {
    static const char hex[] = "0123456789ABCDEF";
    put(o, "\"", 1);
    size_t run = 0;
    for (size_t i = 0; i < n; i++) {
        const unsigned char c = (unsigned char)s[i];
        if (c >= 0x20 && c != '"' && c != '\\') continue;
        put(o, s + run, i - run);
        run = i + 1;
        char e[6] = {'\\', 0};
        size_t en = 2;
        switch (c) {
        case '"': e[1] = '"'; break;
        case '\\': e[1] = '\\'; break;
        case '\b': e[1] = 'b'; break;
        case '\f': e[1] = 'f'; break;
        case '\n': e[1] = 'n'; break;
        case '\r': e[1] = 'r'; break;
        case '\t': e[1] = 't'; break;
        default:
            e[1] = 'u';
            e[2] = '0';
            e[3] = '0';
            e[4] = hex[c >> 4];
            e[5] = hex[c & 15];
            en = 6;
        }
        put(o, e, en);
    }
    put(o, s + run, n - run);
    put(o, "\"", 1);
}

char *title_json_text(request *r) {
    const char *text = r->text ? r->text : "";
    if (!utf8_valid((const unsigned char *)text, r->text_len)) return NULL;
    const double te = r->t_embedded ? r->t_embedded : r->t_finished;
    if (!isfinite(r->t_recv) || !isfinite(r->t_accept) || !isfinite(te) || !isfinite(r->t_finished)
        || (r->has_mscore && !isfinite(r->mscore)))
        return NULL; /* jansson would drop those keys */
    obuf o = {0};
    o.cap = 256 + r->text_len + 12 * (size_t)r->n_ids;
    o.b = xrealloc(NULL, o.cap);
    puts_(&o, "{\"title\":");
    put_str(&o, text, r->text_len);
    puts_(&o, ",\"ids\":[");
    for (int i = 0; i < r->n_ids; i++) {
        if (i) put(&o, ",", 1);
        put_i64(&o, r->ids[i]);
    }
    puts_(&o, "],\"cluster\":");
    if (r->cluster >= 0)
        put_i64(&o, r->cluster);
    else
        puts_(&o, "null");
    puts_(&o, ",\"finish\":");
    const char *fin = r->pruned ? "pruned" : hc_finish_name(r->finish);
    put_str(&o, fin, strlen(fin));
    puts_(&o, r->tc == TC_HIT || r->tc == TC_TABLE ? ",\"cached\":true" : ",\"cached\":false");
    puts_(&o, r->pruned ? ",\"pruned\":true" : ",\"pruned\":false");
    if (r->has_mscore) {
        puts_(&o, ",\"score\":");
        put_real17(&o, r->mscore);
    }
    if (r->client_id[0]) {
        puts_(&o, ",\"request_id\":");
        put_str(&o, r->client_id, strlen(r->client_id));
    }
    puts_(&o, ",\"timings\":{\"queue\":");
    put_ms(&o, r->t_accept - r->t_recv);
    puts_(&o, ",\"embed\":");
    put_ms(&o, te - r->t_accept);
    puts_(&o, ",\"generate\":");
    put_ms(&o, r->t_finished - te);
    puts_(&o, ",\"total\":");
    put_ms(&o, r->t_finished - r->t_recv);
    puts_(&o, "}}");
    put(&o, "", 1); /* the NUL */
    return o.b;
}
