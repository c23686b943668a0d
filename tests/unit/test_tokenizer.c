/* test_tokenizer.c: the C tokenizer against Hugging Face `tokenizers`, on committed fixtures.
 *
 *  - tests/data/tokenizers/<name>/vectors.jsonl (from ../shared/fixtures): encode ids and decode
 *    text must match exactly;
 *  - tests/data/tokenizers/diff_<name>.jsonl (tests/reference/tokenizer_diff.py): >= 20,000
 *    random and adversarial strings per tokenizer, invalid UTF-8 inputs, add_special inputs and
 *    random id sequences to decode; 0 mismatches allowed;
 *  - streaming property: for every id sequence above (both skip_special settings for the decode
 *    lines), the concatenated hc_detok pieces equal hc_tokenizer_decode, and each piece is valid
 *    UTF-8.
 */
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "testutil.h"
#include "tokenizer/tokenizer.h"

static int valid_utf8(const char *s, size_t n) {
    /* strict: what a JSON encoder or a client would accept */
    json_t *j = json_stringn(s, n);
    int ok = j != NULL;
    json_decref(j);
    return ok;
}

static int n_stream_checked;

/* Streams ids through a detok and compares with decode; returns 0 on agreement. */
static int check_stream(const hc_tokenizer *tok, const int32_t *ids, size_t n, int skip,
                        const char *what) {
    char *full = NULL;
    size_t full_len = 0;
    if (hc_tokenizer_decode(tok, ids, n, skip, &full, &full_len, NULL)) {
        CHECKF(0, "%s: decode failed", what);
        return -1;
    }
    hc_detok *d = hc_detok_new(tok, skip);
    char *acc = malloc(full_len * 2 + 64);
    size_t acc_len = 0, cap = full_len * 2 + 64;
    int bad_piece = 0, rc = 0;
    for (size_t i = 0; i <= n && !rc; i++) {
        const char *p;
        size_t pl;
        rc = i < n ? hc_detok_feed(d, ids[i], &p, &pl) : hc_detok_finish(d, &p, &pl);
        if (rc) break;
        if (pl && !valid_utf8(p, pl)) bad_piece = 1;
        if (acc_len + pl > cap) {
            cap = (acc_len + pl) * 2;
            acc = realloc(acc, cap);
        }
        memcpy(acc + acc_len, p, pl);
        acc_len += pl;
    }
    int same = !rc && acc_len == full_len && !memcmp(acc, full, full_len);
    CHECKF(same && !bad_piece, "%s: stream (skip=%d) gave '%.*s', decode '%s'%s", what, skip,
           (int)acc_len, acc, full, bad_piece ? " (invalid UTF-8 piece)" : "");
    n_stream_checked++;
    hc_detok_free(d);
    free(acc);
    free(full);
    return same ? 0 : -1;
}

static int32_t *json_ids(json_t *arr, size_t *n) {
    *n = json_array_size(arr);
    int32_t *ids = malloc((*n ? *n : 1) * sizeof *ids);
    for (size_t i = 0; i < *n; i++)
        ids[i] = (int32_t)json_integer_value(json_array_get(arr, i));
    return ids;
}

static int same_ids(const int32_t *a, size_t na, const int32_t *b, size_t nb) {
    return na == nb && (na == 0 || !memcmp(a, b, na * sizeof *a));
}

static void print_ids(const char *label, const int32_t *ids, size_t n) {
    fprintf(stderr, "    %s:", label);
    for (size_t i = 0; i < n && i < 40; i++)
        fprintf(stderr, " %d", ids[i]);
    fprintf(stderr, "%s\n", n > 40 ? " ..." : "");
}

/* Iterates over the lines of a file; returns parsed objects (caller decrefs), NULL at the end. */
typedef struct {
    char *buf, *p, *end;
} lines_t;

static json_t *next_line(lines_t *L) {
    while (L->p < L->end) {
        char *nl = memchr(L->p, '\n', (size_t)(L->end - L->p));
        char *e = nl ? nl : L->end;
        char *s = L->p;
        L->p = nl ? nl + 1 : L->end;
        if (e == s) continue;
        json_error_t je;
        json_t *o = json_loadb(s, (size_t)(e - s), JSON_ALLOW_NUL, &je);
        if (!o) {
            CHECKF(0, "bad fixture line: %s", je.text);
            continue;
        }
        return o;
    }
    return NULL;
}

static void test_vectors(const char *tests_dir, const char *name, const hc_tokenizer *tok) {
    char path[1024];
    snprintf(path, sizeof path, "%s/data/tokenizers/%s/vectors.jsonl", tests_dir, name);
    lines_t L = {0};
    size_t len;
    L.buf = hc_test_read_file(path, &len);
    CHECKF(L.buf != NULL, "cannot read %s", path);
    if (!L.buf) return;
    L.p = L.buf;
    L.end = L.buf + len;
    hc_tok_ctx *ctx = hc_tok_ctx_new(tok);
    int n = 0, enc_bad = 0, dec_bad = 0;
    json_t *o;
    while ((o = next_line(&L))) {
        json_t *text = json_object_get(o, "text");
        size_t ne, ng;
        int32_t *exp = json_ids(json_object_get(o, "ids"), &ne), *got = NULL;
        CHECK_OK(hc_tokenizer_encode(tok, ctx, json_string_value(text), json_string_length(text), 0,
                                     &got, &ng, NULL));
        if (!same_ids(exp, ne, got, ng)) {
            enc_bad++;
            fprintf(stderr, "%s vectors: encode mismatch for %s\n", name,
                    json_dumps(text, JSON_ENCODE_ANY));
            print_ids("expected", exp, ne);
            print_ids("got     ", got, ng);
        }
        char *dec = NULL;
        size_t dl;
        json_t *want = json_object_get(o, "decoded");
        CHECK_OK(hc_tokenizer_decode(tok, exp, ne, 0, &dec, &dl, NULL));
        if (!dec || dl != json_string_length(want) || memcmp(dec, json_string_value(want), dl)) {
            dec_bad++;
            fprintf(stderr, "%s vectors: decode mismatch: got '%s' want '%s'\n", name, dec,
                    json_string_value(want));
        }
        check_stream(tok, exp, ne, 0, name);
        check_stream(tok, exp, ne, 1, name);
        free(dec);
        free(exp);
        free(got);
        json_decref(o);
        n++;
    }
    CHECKF(n >= 100, "%s: only %d vectors", name, n);
    CHECKF(enc_bad == 0 && dec_bad == 0, "%s vectors: %d encode, %d decode mismatches of %d", name,
           enc_bad, dec_bad, n);
    printf("%s vectors: %d lines, %d encode / %d decode mismatches\n", name, n, enc_bad, dec_bad);
    hc_tok_ctx_free(ctx);
    free(L.buf);
}

static int hexbytes(const char *hex, char *out) {
    size_t n = strlen(hex) / 2;
    for (size_t i = 0; i < n; i++) {
        unsigned v;
        if (sscanf(hex + 2 * i, "%2x", &v) != 1) return -1;
        out[i] = (char)v;
    }
    return (int)n;
}

static void test_diff(const char *tests_dir, const char *name, const hc_tokenizer *tok) {
    char path[1024];
    snprintf(path, sizeof path, "%s/data/tokenizers/diff_%s.jsonl", tests_dir, name);
    lines_t L = {0};
    size_t len;
    L.buf = hc_test_read_file(path, &len);
    CHECKF(L.buf != NULL, "cannot read %s", path);
    if (!L.buf) return;
    L.p = L.buf;
    L.end = L.buf + len;
    hc_tok_ctx *ctx = hc_tok_ctx_new(tok);
    int n_text = 0, n_special = 0, n_bytes = 0, n_dec = 0, bad = 0;
    json_t *o;
    while ((o = next_line(&L))) {
        json_t *t = json_object_get(o, "t"), *b = json_object_get(o, "b"),
               *d = json_object_get(o, "d");
        if (d) { /* decode line */
            size_t n;
            int32_t *ids = json_ids(d, &n);
            int skip = (int)json_integer_value(json_object_get(o, "k"));
            json_t *want = json_object_get(o, "o");
            char *dec = NULL;
            size_t dl = 0;
            CHECK_OK(hc_tokenizer_decode(tok, ids, n, skip, &dec, &dl, NULL));
            if (!dec || dl != json_string_length(want) ||
                memcmp(dec, json_string_value(want), dl)) {
                if (bad++ < 20) {
                    fprintf(stderr, "%s diff: decode mismatch (skip=%d): got '%s' want '%s'\n",
                            name, skip, dec, json_string_value(want));
                    print_ids("ids", ids, n);
                }
            }
            check_stream(tok, ids, n, skip, name);
            free(dec);
            free(ids);
            n_dec++;
            json_decref(o);
            continue;
        }
        char *raw = NULL;
        size_t rl = 0;
        if (b) {
            raw = malloc(strlen(json_string_value(b)) / 2 + 1);
            int k = hexbytes(json_string_value(b), raw);
            CHECK(k >= 0);
            rl = k < 0 ? 0 : (size_t)k;
            n_bytes++;
        } else {
            rl = json_string_length(t);
            raw = malloc(rl + 1);
            memcpy(raw, json_string_value(t), rl);
        }
        int add_special = json_object_get(o, "s") != NULL;
        n_special += add_special;
        n_text += !b && !add_special;
        size_t ne, ng;
        int32_t *exp = json_ids(json_object_get(o, "i"), &ne), *got = NULL;
        CHECK_OK(hc_tokenizer_encode(tok, ctx, raw, rl, add_special, &got, &ng, NULL));
        if (!same_ids(exp, ne, got, ng)) {
            if (bad++ < 20) {
                fprintf(stderr, "%s diff: encode mismatch for %s%s\n", name,
                        b ? json_string_value(b) : json_dumps(t, JSON_ENCODE_ANY),
                        b ? " (hex)" : "");
                print_ids("expected", exp, ne);
                print_ids("got     ", got, ng);
            }
        }
        if (!b) check_stream(tok, exp, ne, 0, name);
        free(raw);
        free(exp);
        free(got);
        json_decref(o);
    }
    CHECKF(n_text >= 20000, "%s diff: only %d plain strings (need >= 20000)", name, n_text);
    CHECKF(n_special > 0 && n_bytes > 0 && n_dec > 0, "%s diff: missing line kinds", name);
    CHECKF(bad == 0, "%s diff: %d mismatches", name, bad);
    printf(
        "%s diff: %d strings, %d add_special, %d invalid-UTF-8, %d decode lines: %d mismatches\n",
        name, n_text, n_special, n_bytes, n_dec, bad);
    hc_tok_ctx_free(ctx);
    free(L.buf);
}

int main(int argc, char **argv) {
    const char *tests_dir = argc > 1 ? argv[1] : "tests";
    const char *names[] = {"llama2", "qwen3"};
    for (int k = 0; k < 2; k++) {
        char dir[1024];
        snprintf(dir, sizeof dir, "%s/data/tokenizers/%s", tests_dir, names[k]);
        hc_tokenizer *tok = NULL;
        hc_errbuf eb = {{0}};
        int rc = hc_tokenizer_load(&tok, dir, &eb);
        CHECKF(rc == 0, "load %s: %s", dir, eb.msg);
        if (rc) continue;
        test_vectors(tests_dir, names[k], tok);
        test_diff(tests_dir, names[k], tok);
        hc_tokenizer_free(tok);
    }
    printf("streaming property checked on %d id sequences\n", n_stream_checked);
    return hc_test_finish("test_tokenizer");
}
