/* test_tokenizer_unit.c: the tokenizer's contracts that the reference fixtures do not cover:
 * malformed and unsupported tokenizer.json files fail with a named error (never a crash), invalid
 * UTF-8 and NUL bytes, 1 MB inputs in linear time, several threads sharing one tokenizer, the
 * lookup API, and the streaming detokenizer against batch decode for decoder chains the two
 * fixture families do not use.
 */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "testutil.h"
#include "tokenizer/tokenizer.h"

#if __has_include(<valgrind/valgrind.h>)
#include <valgrind/valgrind.h>
#define ON_VALGRIND RUNNING_ON_VALGRIND
#else
#define ON_VALGRIND 0
#endif

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static int load_str(const char *json, hc_tokenizer **tok, hc_errbuf *eb) {
    return hc_tokenizer_load_json(tok, json, strlen(json), NULL, 0, eb);
}

/* A tiny BPE vocabulary the synthetic tokenizers share. */
#define VOCAB                                                                                      \
    "\"vocab\":{\"<unk>\":0,\"a\":1,\"b\":2,\"ab\":3,\"\\u2581\":4,\"<0x41>\":5,\"<0xE4>\":6,"     \
    "\"<0xB8>\":7,\"<0xAD>\":8,\"c\":9,\"\\u2581a\":10,\"x\":11,\"\\u0120\":12,\"\\u00e4\":13,"    \
    "\"\\u00b8\":14,\"\\u0143\":15,\"\\u2581\\u2581\":16},\"merges\":[\"a "                        \
    "b\",[\"\\u2581\",\"a\"]]"
#define MODEL                                                                                      \
    "\"model\":{\"type\":\"BPE\",\"unk_token\":\"<unk>\",\"byte_fallback\":true," VOCAB "}"

static void expect_load_error(const char *json, int want_rc, const char *want_substr) {
    hc_tokenizer *tok = NULL;
    hc_errbuf eb = {{0}};
    int rc = load_str(json, &tok, &eb);
    CHECKF(rc == want_rc && tok == NULL, "load of %.80s: rc %d (%s), want %d", json, rc, eb.msg,
           want_rc);
    if (want_substr)
        CHECKF(strstr(eb.msg, want_substr) != NULL, "error '%s' lacks '%s'", eb.msg, want_substr);
    hc_tokenizer_free(tok);
}

static void test_malformed(const char *tests_dir) {
    expect_load_error("", HC_ERR_FORMAT, NULL);
    expect_load_error("{", HC_ERR_FORMAT, NULL);
    expect_load_error("[]", HC_ERR_FORMAT, NULL);
    expect_load_error("{\"model\":{}}", HC_ERR_FORMAT, "vocab");
    expect_load_error("{\"model\":{\"type\":\"BPE\",\"vocab\":[1,2],\"merges\":[]}}", HC_ERR_FORMAT,
                      "vocab");
    expect_load_error("{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":\"x\"},\"merges\":[]}}",
                      HC_ERR_FORMAT, "vocab");
    expect_load_error("{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":-1},\"merges\":[]}}",
                      HC_ERR_FORMAT, "vocab");
    expect_load_error("{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0},\"merges\":[\"a q\"]}}",
                      HC_ERR_FORMAT, "merges[0]");
    expect_load_error("{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0},\"merges\":[7]}}",
                      HC_ERR_FORMAT, "merges[0]");
    expect_load_error("{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0},\"merges\":[\"nospace\"]}}",
                      HC_ERR_FORMAT, "merges[0]");
    expect_load_error("{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\\ud800\":0},\"merges\":[]}}",
                      HC_ERR_FORMAT, NULL);
    expect_load_error("{\"model\":{\"type\":\"Unigram\",\"vocab\":{}}}", HC_ERR_UNSUPPORTED,
                      "Unigram");
    expect_load_error("{\"normalizer\":{\"type\":\"Lowercase\"}," MODEL "}", HC_ERR_UNSUPPORTED,
                      "Lowercase");
    expect_load_error("{\"pre_tokenizer\":{\"type\":\"Sequence\",\"pretokenizers\":[{\"type\":"
                      "\"Digits\"}]}," MODEL "}",
                      HC_ERR_UNSUPPORTED, "Digits");
    expect_load_error("{\"decoder\":{\"type\":\"WordPiece\"}," MODEL "}", HC_ERR_UNSUPPORTED,
                      "WordPiece");
    expect_load_error("{\"truncation\":{\"max_length\":5}," MODEL "}", HC_ERR_UNSUPPORTED,
                      "truncation");
    expect_load_error("{\"pre_tokenizer\":{\"type\":\"Split\",\"pattern\":{\"Regex\":\"(\"},"
                      "\"behavior\":\"Isolated\"}," MODEL "}",
                      HC_ERR_FORMAT, "regex");
    expect_load_error(
        "{\"decoder\":{\"type\":\"Strip\",\"content\":\"ab\",\"start\":1,\"stop\":0}," MODEL "}",
        HC_ERR_FORMAT, "Strip");
    expect_load_error("{\"model\":{\"type\":\"BPE\",\"unk_token\":\"<nope>\"," VOCAB "}}",
                      HC_ERR_FORMAT, "unk_token");
    expect_load_error("{\"added_tokens\":[{\"content\":\"x\"}]," MODEL "}", HC_ERR_FORMAT,
                      "added_tokens[0]");
    expect_load_error(
        "{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0},\"merges\":[]},\"normalizer\":7}",
        HC_ERR_FORMAT, "normalizer");

    hc_tokenizer *tok = NULL;
    hc_errbuf eb = {{0}};
    CHECK(hc_tokenizer_load(&tok, "/nonexistent/dir", &eb) == HC_ERR_IO && tok == NULL);

    /* every prefix-truncation of a real file (at many cut points) is an error, never a crash */
    char path[1024];
    snprintf(path, sizeof path, "%s/data/tokenizers/llama2/tokenizer.json", tests_dir);
    size_t len;
    char *json = hc_test_read_file(path, &len);
    CHECK(json != NULL);
    int n_err = 0, n_cut = 0;
    for (size_t k = 1; json && k < 64; k++) {
        size_t cut = len * k / 64 + k; /* not aligned to anything in particular */
        if (cut >= len) break;
        tok = NULL;
        int rc = hc_tokenizer_load_json(&tok, json, cut, NULL, 0, &eb);
        n_cut++;
        n_err += rc != 0 && tok == NULL;
        hc_tokenizer_free(tok);
    }
    CHECKF(n_err == n_cut, "truncated tokenizer.json: %d of %d cuts failed cleanly", n_err, n_cut);
    /* byte flips inside the document: any outcome but a crash; loads that succeed must encode */
    srand(7);
    for (int k = 0; json && k < 40; k++) {
        char *copy = malloc(len);
        memcpy(copy, json, len);
        for (int f = 0; f < 3; f++)
            copy[(size_t)rand() % len] = "\"{}[],:\\ax\xff"[rand() % 12];
        tok = NULL;
        if (hc_tokenizer_load_json(&tok, copy, len, NULL, 0, &eb) == 0) {
            int32_t *ids;
            size_t n;
            CHECK_OK(hc_tokenizer_encode(tok, NULL, "Hello world", 11, 0, &ids, &n, NULL));
            free(ids);
        }
        hc_tokenizer_free(tok);
        free(copy);
    }
    free(json);
    /* a bad tokenizer_config.json is an error too */
    const char *ok = "{" MODEL "}";
    tok = NULL;
    CHECK(hc_tokenizer_load_json(&tok, ok, strlen(ok), "{bad", 4, &eb) == HC_ERR_FORMAT && !tok);
}

static int32_t *enc(const hc_tokenizer *tok, const char *s, size_t n, size_t *nout) {
    int32_t *ids = NULL;
    int rc = hc_tokenizer_encode(tok, NULL, s, n, 0, &ids, nout, NULL);
    CHECKF(rc == 0, "encode failed: %d", rc);
    return ids;
}

static void test_utf8_and_nul(const hc_tokenizer *llama, const hc_tokenizer *qwen) {
    /* invalid UTF-8 is replaced by U+FFFD per maximal ill-formed subsequence: same ids as the
     * repaired text (the differential corpus checks this against the reference too) */
    struct {
        const char *bad, *fixed;
    } cases[] = {
        {"a\x80"
         "b",
         "a\xEF\xBF\xBD"
         "b"},
        {"\xE4\xB8", "\xEF\xBF\xBD"},                             /* truncated 3-byte: one U+FFFD */
        {"\xED\xA0\x80", "\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD"}, /* surrogate: three */
        {"\xF0\x9F\x98"
         "x",
         "\xEF\xBF\xBD"
         "x"},
        {"\xC0\xAF", "\xEF\xBF\xBD\xEF\xBF\xBD"}, /* overlong */
        {"\xFF\xFE", "\xEF\xBF\xBD\xEF\xBF\xBD"},
    };
    const hc_tokenizer *toks[] = {llama, qwen};
    for (int k = 0; k < 2; k++) {
        for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
            size_t na, nb;
            int32_t *a = enc(toks[k], cases[i].bad, strlen(cases[i].bad), &na);
            int32_t *b = enc(toks[k], cases[i].fixed, strlen(cases[i].fixed), &nb);
            CHECKF(na == nb && (na == 0 || !memcmp(a, b, na * sizeof *a)),
                   "invalid UTF-8 case %zu (tok %d)", i, k);
            free(a);
            free(b);
        }
        /* NUL bytes are text like any other: "a\0b" is not "a" */
        size_t n1, n2;
        int32_t *x = enc(toks[k], "a\0b", 3, &n1), *y = enc(toks[k], "a", 1, &n2);
        CHECK(n1 > n2);
        char *dec;
        size_t dl;
        CHECK_OK(hc_tokenizer_decode(toks[k], x, n1, 0, &dec, &dl, NULL));
        CHECKF(dl == 3 && !memcmp(dec, "a\0b", 3), "NUL round trip (tok %d)", k);
        free(dec);
        free(x);
        free(y);
        /* empty text: no ids, no allocation needed */
        size_t n0 = 99;
        int32_t *z = enc(toks[k], "", 0, &n0);
        CHECK(n0 == 0);
        free(z);
    }
    /* add_special follows tokenizer_config.json: llama adds <s>, qwen adds nothing */
    int32_t *ids;
    size_t n;
    CHECK_OK(hc_tokenizer_encode(llama, NULL, "Hi", 2, 1, &ids, &n, NULL));
    CHECK(n >= 2 && ids[0] == 1);
    free(ids);
    size_t n_plain;
    int32_t *plain = enc(qwen, "Hi", 2, &n_plain);
    CHECK_OK(hc_tokenizer_encode(qwen, NULL, "Hi", 2, 1, &ids, &n, NULL));
    CHECK(n == n_plain && !memcmp(ids, plain, n * sizeof *ids));
    free(ids);
    free(plain);
}

static void test_lookups(const hc_tokenizer *llama, const hc_tokenizer *qwen) {
    size_t len;
    const char *s = hc_tokenizer_id_to_token(llama, 1, &len);
    CHECK(s && len == 3 && !memcmp(s, "<s>", 3));
    CHECK(hc_tokenizer_token_to_id(llama, "</s>", 4) == 2);
    CHECK(hc_tokenizer_token_to_id(llama, "<0x0A>", 6) == 13);
    CHECK(hc_tokenizer_token_to_id(llama, "no such token", 13) == -1);
    CHECK(hc_tokenizer_id_to_token(llama, 32000, &len) == NULL &&
          hc_tokenizer_id_to_token(llama, -1, &len) == NULL);
    CHECK(hc_tokenizer_n_vocab(llama) == 32000 && hc_tokenizer_n_vocab(qwen) == 151669);
    CHECK(hc_tokenizer_bos_id(llama) == 1 && hc_tokenizer_eos_id(llama) == 2 &&
          hc_tokenizer_pad_id(llama) == -1);
    CHECK(hc_tokenizer_add_bos(llama) == 1 && hc_tokenizer_add_bos(qwen) == 0);
    CHECK(hc_tokenizer_bos_id(qwen) == -1 && hc_tokenizer_eos_id(qwen) == 151645 &&
          hc_tokenizer_pad_id(qwen) == 151643);
    CHECK(hc_tokenizer_token_to_id(qwen, "<|im_start|>", 12) == 151644);
    CHECK(hc_tokenizer_is_special(qwen, 151644) && !hc_tokenizer_is_special(qwen, 151667) &&
          !hc_tokenizer_is_special(qwen, 100));
    size_t ne;
    const int32_t *eos = hc_tokenizer_eos_ids(qwen, &ne);
    CHECK(ne == 1 && eos[0] == 151645);
    /* skip_special drops special tokens but keeps non-special added ones (<think>) */
    int32_t ids[] = {151644, 151667, 9707, 151645};
    char *t;
    CHECK_OK(hc_tokenizer_decode(qwen, ids, 4, 1, &t, &len, NULL));
    CHECKF(!strcmp(t, "<think>Hello"), "skip_special decode gave '%s'", t);
    free(t);
}

/* 1 MB inputs must be linear: a quadratic regex scan or merge loop would take minutes. Under
 * valgrind (30-50x slower, and timing there says nothing about the code) the same texts are
 * 32 KB: the memory checks cover the same paths; the time bound is the native run's. */
static void test_large(const hc_tokenizer *llama, const hc_tokenizer *qwen) {
    const size_t N = ON_VALGRIND ? (size_t)1 << 15 : (size_t)1 << 20;
    char *buf = malloc(N);
    const char *unit = "The Name of the Wind (Kingkiller Chronicle, #1) — 中文書名 2024!\n  ";
    size_t ul = strlen(unit);
    const char *kinds[] = {"mixed", "spaces", "one word", "digits", "invalid"};
    const hc_tokenizer *toks[] = {llama, qwen};
    for (int kind = 0; kind < 5; kind++) {
        for (size_t i = 0; i < N; i++) {
            switch (kind) {
            case 0:
                buf[i] = unit[i % ul];
                break;
            case 1:
                buf[i] = ' ';
                break;
            case 2:
                buf[i] = "abcdefgh"[i % 8];
                break;
            case 3:
                buf[i] = (char)('0' + i % 10);
                break;
            default:
                buf[i] = (char)(i % 3 ? 'a' : 0xC3 + (i % 7 == 0));
                break;
            }
        }
        for (int k = 0; k < 2; k++) {
            double t0 = now_s();
            size_t n;
            int32_t *ids = enc(toks[k], buf, N, &n);
            double dt = now_s() - t0;
            CHECK(n > 0);
            /* generous bound (sanitizers, slow CI); quadratic behaviour would take minutes */
            CHECKF(dt < 20.0, "%zu KB %s text took %.1f s (tok %d)", N >> 10, kinds[kind], dt, k);
            printf("%zu KB %-8s -> %7zu ids in %6.1f ms (%s)\n", N >> 10, kinds[kind], n,
                   dt * 1e3, k ? "qwen3" : "llama2");
            free(ids);
        }
    }
    free(buf);
}

typedef struct {
    const hc_tokenizer *tok;
    const char **texts;
    size_t n;
    int32_t **ref;
    size_t *ref_n;
    int use_ctx, failures;
} thread_arg;

static void *thread_main(void *p) {
    thread_arg *a = p;
    hc_tok_ctx *ctx = a->use_ctx ? hc_tok_ctx_new(a->tok) : NULL;
    for (int round = 0; round < 20; round++) {
        for (size_t i = 0; i < a->n; i++) {
            int32_t *ids;
            size_t n;
            if (hc_tokenizer_encode(a->tok, ctx, a->texts[i], strlen(a->texts[i]), 0, &ids, &n,
                                    NULL) ||
                n != a->ref_n[i] || (n && memcmp(ids, a->ref[i], n * sizeof *ids)))
                a->failures++;
            free(ids);
        }
    }
    hc_tok_ctx_free(ctx);
    return NULL;
}

static void test_threads(const hc_tokenizer *qwen) {
    const char *texts[] = {"Dune",
                           "The Left Hand of Darkness",
                           "Привет, мир",
                           "東京タワー 🗼",
                           "  spaced  out  ",
                           "<|im_start|>user\nhi<|im_end|>",
                           "don't stop 1234567",
                           "naïve café"};
    size_t n = sizeof texts / sizeof texts[0];
    int32_t *ref[8];
    size_t ref_n[8];
    for (size_t i = 0; i < n; i++)
        ref[i] = enc(qwen, texts[i], strlen(texts[i]), &ref_n[i]);
    pthread_t th[4];
    thread_arg args[4];
    for (int k = 0; k < 4; k++) {
        args[k] = (thread_arg){qwen, texts, n, ref, ref_n, k % 2, 0};
        pthread_create(&th[k], NULL, thread_main, &args[k]);
    }
    for (int k = 0; k < 4; k++) {
        pthread_join(th[k], NULL);
        CHECKF(args[k].failures == 0, "thread %d: %d mismatches", k, args[k].failures);
    }
    for (size_t i = 0; i < n; i++)
        free(ref[i]);
}

/* Streaming == batch on random ids for decoder chains beyond the two fixture families. */
static void test_stream_chains(void) {
    const char *decoders[] = {
        "{\"type\":\"Sequence\",\"decoders\":[{\"type\":\"Replace\",\"pattern\":{\"String\":"
        "\"\\u2581\"},"
        "\"content\":\" "
        "\"},{\"type\":\"ByteFallback\"},{\"type\":\"Fuse\"},{\"type\":\"Strip\",\"content\":\" \","
        "\"start\":1,\"stop\":1}]}",
        "{\"type\":\"Metaspace\",\"replacement\":\"\\u2581\",\"prepend_scheme\":\"always\","
        "\"split\":true}",
        "{\"type\":\"Sequence\",\"decoders\":[{\"type\":\"ByteLevel\"},{\"type\":\"Replace\","
        "\"pattern\":"
        "{\"Regex\":\"a+\"},\"content\":\"<A>\"},{\"type\":\"Metaspace\",\"replacement\":"
        "\"\\u2581\","
        "\"add_prefix_space\":true}]}",
        "{\"type\":\"Sequence\",\"decoders\":[{\"type\":\"Fuse\"},{\"type\":\"Replace\","
        "\"pattern\":"
        "{\"String\":\"ab\"},\"content\":\"[ab]\"},{\"type\":\"ByteFallback\"},{\"type\":\"Strip\","
        "\"content\":"
        "\"\\u2581\",\"start\":2,\"stop\":2}]}",
        "{\"type\":\"Sequence\",\"decoders\":[{\"type\":\"ByteFallback\"},{\"type\":\"ByteLevel\"},"
        "{\"type\":\"Fuse\"}]}",
        "null",
    };
    srand(12345);
    for (size_t k = 0; k < sizeof decoders / sizeof decoders[0]; k++) {
        char json[2048];
        snprintf(json, sizeof json,
                 "{\"added_tokens\":[{\"id\":17,\"content\":\"<s>\",\"special\":true},{\"id\":18,"
                 "\"content\":"
                 "\"\\u00e4\\u00b8\",\"special\":false}],\"decoder\":%s," MODEL "}",
                 decoders[k]);
        hc_tokenizer *tok = NULL;
        hc_errbuf eb = {{0}};
        CHECKF(load_str(json, &tok, &eb) == 0, "chain %zu: %s", k, eb.msg);
        if (!tok) continue;
        int bad = 0;
        for (int iter = 0; iter < 3000; iter++) {
            int32_t ids[24];
            size_t n = (size_t)(rand() % 24);
            for (size_t i = 0; i < n; i++)
                ids[i] = rand() % 21; /* includes unknown ids 19, 20 */
            int skip = rand() % 2;
            char *full;
            size_t fl;
            CHECK_OK(hc_tokenizer_decode(tok, ids, n, skip, &full, &fl, NULL));
            hc_detok *d = hc_detok_new(tok, skip);
            char acc[4096];
            size_t al = 0;
            for (size_t i = 0; i <= n; i++) {
                const char *p;
                size_t pl;
                CHECK_OK(i < n ? hc_detok_feed(d, ids[i], &p, &pl) : hc_detok_finish(d, &p, &pl));
                if (al + pl < sizeof acc) memcpy(acc + al, p, pl);
                al += pl;
            }
            if (al != fl || memcmp(acc, full, fl)) {
                if (bad++ < 3)
                    fprintf(stderr, "chain %zu: stream '%.*s' != decode '%s'\n", k, (int)al, acc,
                            full);
            }
            hc_detok_free(d);
            free(full);
        }
        CHECKF(bad == 0, "decoder chain %zu: %d stream/batch mismatches", k, bad);
        hc_tokenizer_free(tok);
    }
}

/* The detok holds a character split over byte tokens and releases it when complete. */
static void test_stream_holds(const hc_tokenizer *llama, const hc_tokenizer *qwen) {
    /* qwen: "中" is one byte-level token; "中" via bytes e4 b8 ad in byte-level chars */
    int32_t hello = hc_tokenizer_token_to_id(qwen, "Hello", 5);
    int32_t b1 = hc_tokenizer_token_to_id(qwen, "\xC3\xA4", 2);        /* 'ä' = byte 0xE4 */
    int32_t b2 = hc_tokenizer_token_to_id(qwen, "\xC2\xB8", 2);        /* '¸' = byte 0xB8 */
    int32_t b3 = hc_tokenizer_token_to_id(qwen, "\xC2\xAD", 2);        /* soft hyphen maps to? */
    b3 = b3 >= 0 ? b3 : hc_tokenizer_token_to_id(qwen, "\xC5\x83", 2); /* byte 0xAD -> U+0143 */
    CHECK(hello >= 0 && b1 >= 0 && b2 >= 0 && b3 >= 0);
    hc_detok *d = hc_detok_new(qwen, 0);
    const char *p;
    size_t n;
    CHECK_OK(hc_detok_feed(d, hello, &p, &n));
    CHECK(n == 5 && !memcmp(p, "Hello", 5));
    CHECK_OK(hc_detok_feed(d, b1, &p, &n));
    CHECK(n == 0);
    CHECK_OK(hc_detok_feed(d, b2, &p, &n));
    CHECK(n == 0);
    CHECK_OK(hc_detok_feed(d, b3, &p, &n));
    CHECKF(n == 3 && !memcmp(p, "\xE4\xB8\xAD", 3), "expected 中, got %zu bytes", n);
    CHECK_OK(hc_detok_feed(d, b1, &p, &n));
    CHECK(n == 0);
    CHECK_OK(hc_detok_finish(d, &p, &n)); /* an incomplete tail becomes U+FFFD, like decode */
    CHECK(n == 3 && !memcmp(p, "\xEF\xBF\xBD", 3));
    hc_detok_free(d);

    /* llama: <0xE4><0xB8><0xAD> then a word; the run is released when the word arrives */
    d = hc_detok_new(llama, 0);
    int32_t seq[] = {hc_tokenizer_token_to_id(llama, "<0xE4>", 6),
                     hc_tokenizer_token_to_id(llama, "<0xB8>", 6),
                     hc_tokenizer_token_to_id(llama, "<0xAD>", 6),
                     hc_tokenizer_token_to_id(llama, "\xE2\x96\x81the", 6)};
    for (int i = 0; i < 3; i++) {
        CHECK_OK(hc_detok_feed(d, seq[i], &p, &n));
        CHECK(n == 0);
    }
    CHECK_OK(hc_detok_feed(d, seq[3], &p, &n));
    CHECKF(n == 7 && !memcmp(p, "\xE4\xB8\xAD the", 7), "llama stream gave '%.*s'", (int)n, p);
    hc_detok_free(d);
}

int main(int argc, char **argv) {
    const char *tests_dir = argc > 1 ? argv[1] : "tests";
    test_malformed(tests_dir);
    char dir[1024];
    hc_tokenizer *llama = NULL, *qwen = NULL;
    hc_errbuf eb = {{0}};
    snprintf(dir, sizeof dir, "%s/data/tokenizers/llama2", tests_dir);
    CHECKF(hc_tokenizer_load(&llama, dir, &eb) == 0, "%s", eb.msg);
    snprintf(dir, sizeof dir, "%s/data/tokenizers/qwen3", tests_dir);
    double t0 = now_s();
    CHECKF(hc_tokenizer_load(&qwen, dir, &eb) == 0, "%s", eb.msg);
    printf("qwen3 tokenizer.json load: %.1f ms\n", (now_s() - t0) * 1e3);
    if (llama && qwen) {
        test_utf8_and_nul(llama, qwen);
        test_lookups(llama, qwen);
        test_stream_holds(llama, qwen);
        test_threads(qwen);
        test_large(llama, qwen);
    }
    test_stream_chains();
    hc_tokenizer_free(llama);
    hc_tokenizer_free(qwen);
    return hc_test_finish("test_tokenizer_unit");
}
