/* table.c: see table.h and proto/title-table.md. */
#include "table.h"

#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "creator/title_key.h"

typedef struct tt_node {
    tt_entry e;
    int file; /* index of the file it came from */
} tt_node;

struct tt_set {
    tt_node **slots; /* open addressing, cap a power of two, at most half full */
    size_t cap, n;
    int n_files;
    hc_sampler_params sampling;
    int max_new;
};

static uint64_t slot_hash(int32_t cluster, uint64_t ad_hash) {
    uint64_t x = ad_hash ^ ((uint64_t)(uint32_t)cluster * 0x9E3779B97F4A7C15ULL);
    x ^= x >> 30;
    x *= 0xBF58476D1CE4E5B9ULL;
    x ^= x >> 27;
    x *= 0x94D049BB133111EBULL;
    return x ^ (x >> 31);
}

static tt_node **find_slot(tt_node **slots, size_t cap, int32_t cluster, uint64_t ad_hash) {
    size_t i = (size_t)slot_hash(cluster, ad_hash) & (cap - 1);
    while (slots[i] && (slots[i]->e.cluster != cluster || slots[i]->e.ad_hash != ad_hash))
        i = (i + 1) & (cap - 1);
    return &slots[i];
}

static int grow(tt_set *t) {
    size_t cap = t->cap ? t->cap * 2 : 1024;
    tt_node **s = calloc(cap, sizeof *s);
    if (!s) return -1;
    for (size_t i = 0; i < t->cap; i++)
        if (t->slots[i]) *find_slot(s, cap, t->slots[i]->e.cluster, t->slots[i]->e.ad_hash) =
                             t->slots[i];
    free(t->slots);
    t->slots = s;
    t->cap = cap;
    return 0;
}

void tt_free(tt_set *t) {
    if (!t) return;
    for (size_t i = 0; i < t->cap; i++) free(t->slots[i]);
    free(t->slots);
    free(t);
}

size_t tt_entries(const tt_set *t) { return t ? t->n : 0; }
int tt_files(const tt_set *t) { return t ? t->n_files : 0; }

const char *tt_finish_name(tt_finish f) {
    return f == TT_STOP ? "stop" : f == TT_LENGTH ? "length" : "pruned";
}

static int is_greedy(const hc_sampler_params *p) { return p->greedy || p->temperature == 0; }

static int same_settings(const hc_sampler_params *a, int max_a, const hc_sampler_params *b,
                         int max_b) {
    if (max_a != max_b || is_greedy(a) != is_greedy(b)) return 0;
    if (is_greedy(a)) return 1;
    return a->temperature == b->temperature && a->top_k == b->top_k && a->top_p == b->top_p &&
           a->seed == b->seed;
}

int tt_settings_match(const tt_set *t, const hc_sampler_params *sp, int max_new) {
    return t && t->n && same_settings(&t->sampling, t->max_new, sp, max_new);
}

const tt_entry *tt_lookup(const tt_set *t, int32_t cluster, uint64_t ad_hash) {
    if (!t || !t->n) return NULL;
    tt_node *n = *find_slot(t->slots, t->cap, cluster, ad_hash);
    return n ? &n->e : NULL;
}

static void settings_str(const hc_sampler_params *p, int max_new, char *out, size_t n) {
    if (is_greedy(p))
        snprintf(out, n, "greedy, max_new_tokens %d", max_new);
    else
        snprintf(out, n, "temperature %g, top_k %d, top_p %g, seed %llu, max_new_tokens %d",
                 (double)p->temperature, p->top_k, (double)p->top_p,
                 (unsigned long long)p->seed, max_new);
}

/* A JSON number as an integer in [lo, hi]; -1 when it is not one. */
static int get_int(json_t *o, const char *k, long long lo, long long hi, long long *v) {
    json_t *x = json_object_get(o, k);
    if (!json_is_integer(x)) return -1;
    *v = json_integer_value(x);
    return *v >= lo && *v <= hi ? 0 : -1;
}

#define FAIL(...)                                                                                  \
    do {                                                                                           \
        int n_ = snprintf(err, errn, "title table %s:%ld: ", path, line);                         \
        if (n_ > 0 && (size_t)n_ < errn) snprintf(err + n_, errn - (size_t)n_, __VA_ARGS__);       \
        goto fail;                                                                                 \
    } while (0)

static int parse_header(const char *path, long line, json_t *h, const tt_expect *x,
                        hc_sampler_params *sp, int *max_new, char *err, size_t errn) {
    long long v;
    if (!json_is_object(h)) FAIL("the header must be a JSON object");
    if (get_int(h, "hllm_title_table", 1, 1, &v))
        FAIL("hllm_title_table: format version 1 expected (is this a title table written by "
             "hllm titles?)");
    json_t *d = json_object_get(h, "package_digest");
    uint64_t dig;
    if (!json_is_string(d) || hc_hash_parse(json_string_value(d), &dig))
        FAIL("package_digest: 16 hex digits expected");
    if (dig != x->digest) {
        char mine[17];
        hc_hash_hex(x->digest, mine);
        FAIL("package_digest %s is not the loaded package's (%s): the table was made with "
             "another package (or other weights or clusters); regenerate it with hllm titles",
             json_string_value(d), mine);
    }
    if (get_int(h, "clusters", 1, 1 << 30, &v)) FAIL("clusters: a positive integer expected");
    if (v != x->n_clusters)
        FAIL("clusters %lld, but the package has %d", v, x->n_clusters);
    json_t *s = json_object_get(h, "sampling");
    if (!json_is_object(s)) FAIL("sampling: an object expected");
    const char *num[] = {"temperature", "top_p"};
    for (int i = 0; i < 2; i++)
        if (!json_is_number(json_object_get(s, num[i]))) FAIL("sampling.%s: a number expected",
                                                              num[i]);
    memset(sp, 0, sizeof *sp);
    sp->temperature = (float)json_number_value(json_object_get(s, "temperature"));
    sp->top_p = (float)json_number_value(json_object_get(s, "top_p"));
    if (!(sp->temperature >= 0) || !(sp->top_p > 0 && sp->top_p <= 1))
        FAIL("sampling: temperature >= 0 and top_p in (0, 1] expected");
    sp->greedy = sp->temperature == 0;
    if (get_int(s, "top_k", 0, 1 << 30, &v)) FAIL("sampling.top_k: an integer >= 0 expected");
    sp->top_k = (int)v;
    if (get_int(s, "seed", 0, INT64_MAX, &v)) FAIL("sampling.seed: an integer >= 0 expected");
    sp->seed = (uint64_t)v;
    if (get_int(h, "max_new_tokens", 0, 1 << 20, &v))
        FAIL("max_new_tokens: an integer >= 0 expected");
    *max_new = (int)v;
    json_t *pt = json_object_get(h, "prune_threshold");
    if (pt && !json_is_null(pt) && !json_is_number(pt))
        FAIL("prune_threshold: a number or null expected");
    if (!same_settings(sp, *max_new, &x->sampling, x->max_new)) {
        char a[160], b[160];
        settings_str(sp, *max_new, a, sizeof a);
        settings_str(&x->sampling, x->max_new, b, sizeof b);
        FAIL("sampling: the table was generated with %s, the daemon's default is %s (the "
             "package's creator.json): regenerate it with hllm titles and those settings", a, b);
    }
    return 0;
fail:
    return -1;
}

/* One entry line into a new node (*out). */
static int parse_entry(const char *path, long line, json_t *o, const tt_expect *x, tt_node **out,
                       char *err, size_t errn) {
    long long v;
    tt_node *nd = NULL;
    char *text = NULL;
    *out = NULL;
    if (!json_is_object(o)) FAIL("an entry must be a JSON object");
    if (get_int(o, "cluster", 0, x->n_clusters - 1, &v))
        FAIL("cluster: an integer in [0, %d) expected", x->n_clusters);
    const int32_t cluster = (int32_t)v;
    json_t *h = json_object_get(o, "ad_hash");
    uint64_t ah;
    if (!json_is_string(h) || hc_hash_parse(json_string_value(h), &ah))
        FAIL("ad_hash: 16 hex digits expected");
    json_t *t = json_object_get(o, "title"), *ids = json_object_get(o, "ids");
    json_t *fin = json_object_get(o, "finish"), *pr = json_object_get(o, "pruned");
    json_t *sc = json_object_get(o, "score"), *id = json_object_get(o, "ad_id");
    if (!json_is_string(t)) FAIL("title: a string expected");
    if (!json_is_string(fin)) FAIL("finish: \"stop\", \"length\" or \"pruned\" expected");
    tt_finish f;
    const char *fs = json_string_value(fin);
    if (!strcmp(fs, "stop")) f = TT_STOP;
    else if (!strcmp(fs, "length")) f = TT_LENGTH;
    else if (!strcmp(fs, "pruned")) f = TT_PRUNED;
    else FAIL("finish: \"stop\", \"length\" or \"pruned\" expected, got \"%s\"", fs);
    if (!json_is_boolean(pr)) FAIL("pruned: a boolean expected");
    if (json_is_true(pr) != (f == TT_PRUNED))
        FAIL("pruned is %s but finish is \"%s\"", json_is_true(pr) ? "true" : "false", fs);
    if (sc && !json_is_null(sc) && !json_is_number(sc)) FAIL("score: a number or null expected");
    if (id && !json_is_null(id) && !json_is_string(id) && !json_is_integer(id))
        FAIL("ad_id: a string, an integer or null expected");
    size_t n_ids = 0;
    if (f == TT_PRUNED) {
        if (ids && !json_is_null(ids) && (!json_is_array(ids) || json_array_size(ids)))
            FAIL("ids: a pruned entry has no generated ids");
    } else {
        if (!json_is_array(ids)) FAIL("ids: an array of creative token ids expected");
        n_ids = json_array_size(ids);
    }
    const size_t tl = json_string_length(t);
    nd = malloc(sizeof *nd + sizeof(int32_t) * n_ids + tl + 1);
    if (!nd) FAIL("out of memory");
    int32_t *idv = (int32_t *)(nd + 1);
    char *title = (char *)(idv + n_ids);
    for (size_t i = 0; i < n_ids; i++) {
        json_t *e = json_array_get(ids, i);
        if (!json_is_integer(e) || json_integer_value(e) < 0 ||
            json_integer_value(e) >= x->vocab)
            FAIL("ids[%zu]: an integer in [0, %d) expected (the creative vocabulary)", i,
                 x->vocab);
        idv[i] = (int32_t)json_integer_value(e);
    }
    memcpy(title, json_string_value(t), tl);
    title[tl] = 0;
    if (f != TT_PRUNED && x->tok) {
        size_t len = 0;
        hc_errbuf eb = {{0}};
        if (hc_tokenizer_decode(x->tok, idv, n_ids, 1, &text, &len, &eb))
            FAIL("ids: cannot decode: %s", eb.msg);
        if (len != tl || memcmp(text, title, tl))
            FAIL("title: not the decoding of ids (\"%.80s\"): the entry was edited or made with "
                 "another tokenizer", text);
        free(text);
        text = NULL;
    }
    nd->e = (tt_entry){cluster, ah, title, tl, idv, (int)n_ids, f};
    *out = nd;
    return 0;
fail:
    free(text);
    free(nd);
    return -1;
}

static int load_file(tt_set *t, int fi, const char *path, const tt_expect *x, char *err,
                     size_t errn) {
    long line = 0;
    FILE *fp = fopen(path, "r");
    if (!fp) {
        snprintf(err, errn, "title table %s: cannot open: %s", path, strerror(errno));
        return -1;
    }
    char *buf = NULL;
    size_t cap = 0;
    ssize_t len;
    json_t *o = NULL;
    int rc = -1;
    hc_sampler_params sp;
    int max_new = 0;
    errno = 0;
    while ((len = getline(&buf, &cap, fp)) >= 0) {
        line++;
        while (len && (buf[len - 1] == '\n' || buf[len - 1] == '\r')) len--;
        json_error_t je;
        o = json_loadb(buf, (size_t)len, JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL, &je);
        if (!o) FAIL("invalid JSON: %s (column %d)", je.text, je.column);
        if (line == 1) {
            if (parse_header(path, line, o, x, &sp, &max_new, err, errn)) goto out;
            if (fi == 0) {
                t->sampling = sp;
                t->max_new = max_new;
            }
        } else {
            tt_node *nd;
            if (parse_entry(path, line, o, x, &nd, err, errn)) goto out;
            if ((t->n + 1) * 2 > t->cap && grow(t)) {
                free(nd);
                FAIL("out of memory");
            }
            tt_node **s = find_slot(t->slots, t->cap, nd->e.cluster, nd->e.ad_hash);
            if (*s && (*s)->file == fi) {
                free(nd);
                FAIL("cluster %d, ad_hash %016llx: the pair appears twice in this table",
                     (int)(*s)->e.cluster, (unsigned long long)(*s)->e.ad_hash);
            }
            nd->file = fi;
            if (*s) free(*s); /* an earlier file's entry: the later file wins */
            else t->n++;
            *s = nd;
        }
        json_decref(o);
        o = NULL;
        errno = 0;
    }
    if (ferror(fp)) {
        snprintf(err, errn, "title table %s: cannot read: %s", path,
                 strerror(errno ? errno : EIO));
        goto out;
    }
    if (line == 0) {
        snprintf(err, errn, "title table %s: empty (no header line)", path);
        goto out;
    }
    rc = 0;
    goto out;
fail:
out:
    json_decref(o);
    free(buf);
    fclose(fp);
    return rc;
}

int tt_build(tt_set **out, const char *const *files, int n_files, const tt_expect *x, char *err,
             size_t errn) {
    *out = NULL;
    tt_set *t = calloc(1, sizeof *t);
    if (!t) {
        snprintf(err, errn, "title tables: out of memory");
        return -1;
    }
    t->n_files = n_files;
    t->sampling = x->sampling;
    t->max_new = x->max_new;
    for (int i = 0; i < n_files; i++)
        if (load_file(t, i, files[i], x, err, errn)) {
            tt_free(t);
            return -1;
        }
    *out = t;
    return 0;
}
