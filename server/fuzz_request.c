/* fuzz_request.c: the request parser and validator of hllm-creatord (api.c build_job for
 * /v1/titles and /v1/users:embed, http.c build_batch for /v1/titles:batch) under a fuzzer,
 * without an engine: a tiny model package is loaded once for its tokenizers and settings, and
 * every input is parsed as the body of each of the three POST endpoints. Checked on every input:
 * the status is 0 or 400 (never another), an accepted body has its job(s) (a batch: one child
 * per valid item, a result for every other), an error message is non-empty and makes a JSON
 * error body (queue_body would send it), and everything allocated is freed (LeakSanitizer in
 * the sanitizer builds).
 *
 * Two programs from this file (server/CMakeLists.txt):
 *   fuzz_request      libFuzzer (clang -fsanitize=fuzzer,address; -DHC_FUZZ=ON with CC=clang):
 *                     fuzz_request tests/fuzz/request -max_total_time=3600
 *   fuzz_request_run  a standalone driver (any compiler, always built; -DHC_FUZZ_DRIVER):
 *                     fuzz_request_run CORPUS_DIR [--seconds N] [--seed S] [--model PKG]
 *                     replays every file of CORPUS_DIR, then random mutations of them for N
 *                     seconds; the suite runs it (ctest server_fuzz_request).
 * The package: $HLLM_FUZZ_MODEL, --model, or HC_FUZZ_MODEL (tests/data/creator/tiny). */
#include "server.h"

#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>

/* ---- what the parser links against but never calls here: the engine and the daemon ---- */

void push_job(server *s, job *j) { /* the engine submission: dropped */
    (void)s;
    j->next = NULL;
    free_jobs(j);
}
void maybe_finish_drain(server *s) {
    (void)s;
}
void notify(const char *state) {
    (void)state;
}
int tables_load_start(server *s) {
    (void)s;
    return 0;
}

/* ---- the server the parser sees ---------------------------------------------------------- */

static server S;
static const char *model_dir;

static void setup(void) {
    static int done;
    if (done) return;
    done = 1;
    hcd_config_defaults(&S.cfg);
    /* small limits so that inputs of a few hundred bytes reach every limit check */
    S.cfg.max_history_titles = 12;
    S.cfg.max_title_bytes = 48;
    S.cfg.max_batch = 6;
    S.cfg.max_queued = 6;
    S.cfg.request_timeout_ms = 0;
    S.cfg.log_level = 0;
    const char *m = model_dir ? model_dir : getenv("HLLM_FUZZ_MODEL");
    if (!m || !*m) m = HC_FUZZ_MODEL;
    snprintf(S.cfg.model, sizeof S.cfg.model, "%s", m);
    hc_errbuf eb = {{0}};
    if (hc_backend_create(&S.be, HC_BACKEND_CPU, 1, &eb) ||
        hc_creator_load(&S.creator, S.be, S.cfg.model, NULL, &eb)) {
        fprintf(stderr, "fuzz_request: cannot load the package %s: %s\n", S.cfg.model, eb.msg);
        exit(2);
    }
    hc_creator *c = S.creator;
    S.item_ctx = hc_tok_ctx_new(c->item_tok);
    S.creative_ctx = c->creative_tok ? hc_tok_ctx_new(c->creative_tok) : NULL;
    if (!S.item_ctx || !S.creative_ctx) {
        fprintf(stderr, "fuzz_request: %s has no creative tokenizer\n", S.cfg.model);
        exit(2);
    }
    S.d_item = c->d_item;
    S.d_user = c->d_user;
    S.d_creative = c->d_creative;
    S.max_history = c->pkg.max_history;
    S.max_new_default = c->pkg.max_new_tokens;
    S.sampling_default = c->pkg.sampling;
    S.n_clusters = c->clusters ? hc_cluster_index_k(c->clusters) : 0;
    S.cfg.user_cache_bytes = 1 << 16;
    if (caches_create(&S)) abort();
    metrics_init(&S);
}


#define FUZZ_CHECK(c)                                                                              \
    do {                                                                                           \
        if (!(c)) {                                                                                \
            fprintf(stderr, "fuzz_request: %s:%d: check failed: %s\n", __FILE__, __LINE__, #c);   \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

static request *new_request(req_type t, const uint8_t *data, size_t size) {
    request *r = calloc(1, sizeof *r);
    FUZZ_CHECK(r);
    r->srv = &S;
    r->type = t;
    r->cluster = -1;
    r->t_recv = now_ms();
    r->id = ++S.next_id;
    r->body = malloc(size ? size : 1);
    FUZZ_CHECK(r->body);
    if (size) memcpy(r->body, data, size);
    r->body_len = size;
    return r;
}

static void check_error(int code, const char *err) {
    FUZZ_CHECK(code == 400);
    FUZZ_CHECK(err[0]);
    char *t = json_error("%s", err); /* the body queue_body would send */
    if (!t) fprintf(stderr, "fuzz_request: no JSON error body for the message '%s'\n", err);
    FUZZ_CHECK(t);
    free(t);
}

static void one(req_type t, const uint8_t *data, size_t size) {
    request *r = new_request(t, data, size);
    char err[1024] = "";
    if (t == RT_TBATCH) {
        request **chs;
        job **jobs;
        int code = build_batch(&S, r, &chs, &jobs, err, sizeof err);
        if (code) {
            check_error(code, err);
            FUZZ_CHECK(!chs && !jobs);
        } else {
            size_t n = json_array_size(r->results), pending = 0;
            FUZZ_CHECK(r->n_children >= 0 && (size_t)r->n_children <= n);
            for (size_t i = 0; i < n; i++) {
                json_t *o = json_array_get(r->results, i);
                if (json_is_null(o)) {
                    pending++;
                    continue;
                }
                FUZZ_CHECK(json_integer_value(json_object_get(o, "status")) == 400);
                FUZZ_CHECK(json_string_length(json_object_get(o, "error")) > 0);
            }
            FUZZ_CHECK(pending == (size_t)r->n_children);
            for (int i = 0; i < r->n_children; i++) {
                FUZZ_CHECK(chs[i]->parent == r && jobs[i] && !jobs[i]->next);
                FUZZ_CHECK(json_is_null(json_array_get(r->results, (size_t)chs[i]->slot)));
                free_jobs(jobs[i]);
                request_free(chs[i]);
            }
            /* the answer of a batch whose items are all bad */
            json_t *o = json_pack("{s:O}", "results", r->results);
            FUZZ_CHECK(o);
            char *txt = json_dumps(o, JSON_COMPACT);
            FUZZ_CHECK(txt);
            free(txt);
            json_decref(o);
        }
        free(chs);
        free(jobs);
        request_free(r);
        return;
    }
    job *j = NULL;
    int code = build_job(&S, r, &j, err, sizeof err);
    if (code) {
        check_error(code, err);
        FUZZ_CHECK(!j);
    } else {
        FUZZ_CHECK(j);
        int n = 0;
        for (job *q = j; q; q = q->next) {
            FUZZ_CHECK(q->req.n_items > 0 && q->req.n_items <= S.cfg.max_history_titles);
            n++;
        }
        FUZZ_CHECK(r->n_children ? n == r->n_children : n == 1);
        if (!r->n_children) {
            user_key(r, &j->req);
            if (t == RT_TITLES && r->mode == HC_CREQ_CLUSTER) {
                job *e = embed_job_of(j); /* the cluster-first path's embed job */
                FUZZ_CHECK(e->req.n_items == j->req.n_items);
                free_jobs(e);
            }
        }
        free_jobs(j);
    }
    request_free(r);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    setup();
    one(RT_TITLES, data, size);
    one(RT_EMBED, data, size);
    one(RT_TBATCH, data, size);
    return 0;
}

#ifdef HC_FUZZ_DRIVER
static void teardown(void) {
    caches_free(&S);
    hc_tok_ctx_free(S.item_ctx);
    hc_tok_ctx_free(S.creative_ctx);
    hc_creator_free(S.creator);
    hc_backend_free(S.be);
}

/* ---- the standalone driver: the corpus, then random mutations for a bounded time -------- */

typedef struct {
    uint8_t *p;
    size_t n;
} blob;

/* the input being run: written to crash-fuzz_request.bin when a check aborts */
static const blob *current;
static void on_abort(int sig) {
    if (current) {
        int fd = open("crash-fuzz_request.bin", O_WRONLY | O_CREAT | O_TRUNC, 0644);
        if (fd >= 0) {
            if (write(fd, current->p, current->n) < 0) { /* nothing more to do */
            }
            close(fd);
            static const char m[] = "fuzz_request_run: the input is in crash-fuzz_request.bin\n";
            if (write(2, m, sizeof m - 1) < 0) {
            }
        }
    }
    signal(sig, SIG_DFL);
    raise(sig);
}

static uint64_t rng_state;
static uint64_t rnd(void) { /* xorshift64* */
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return rng_state * 2685821657736338717ull;
}
static size_t rnd_below(size_t n) {
    return n ? (size_t)(rnd() % n) : 0;
}

/* JSON pieces and awkward values to splice in */
static const char *const DICT[] = {
    "{", "}", "[", "]", ",", ":", "\"", "\\", "null", "true", "false", "0", "-0", "1e999",
    "-1", "4097", "1.5", "9007199254740993", "\"\\u0000\"", "\"\\ud800\"", "\xff", "\xc3",
    "\xe2\x82", "\"history\"", "\"user\"", "\"users\"", "\"ad\"", "\"title\"", "\"description\"",
    "\"mode\"", "\"cluster\"", "\"per_user\"", "\"stream\"", "\"sampling\"", "\"temperature\"",
    "\"top_k\"", "\"top_p\"", "\"seed\"", "\"greedy\"", "\"max_new_tokens\"", "\"request_id\"",
    "\"deadline_ms\"", "\"requests\"", "\"full\"", "[\"a\",\"b\"]", "{\"history\":[\"x\"]}",
    "\"\"", "[]", "{}", "\"\xf0\x9f\x90\x88\""};

static void mutate(blob *b, const blob *corpus, size_t n_corpus, size_t max_len) {
    int k = 1 + (int)rnd_below(8);
    for (int m = 0; m < k; m++) {
        size_t pos = rnd_below(b->n + 1);
        switch (rnd_below(7)) {
        case 0: /* flip a bit */
            if (b->n) b->p[rnd_below(b->n)] ^= (uint8_t)(1u << rnd_below(8));
            break;
        case 1: /* a random byte */
            if (b->n) b->p[rnd_below(b->n)] = (uint8_t)rnd();
            break;
        case 2: { /* delete a run */
            if (!b->n) break;
            size_t at = rnd_below(b->n), len = 1 + rnd_below(b->n - at < 16 ? b->n - at : 16);
            memmove(b->p + at, b->p + at + len, b->n - at - len);
            b->n -= len;
            break;
        }
        case 3:
        case 4: { /* insert a dictionary piece */
            const char *d = DICT[rnd_below(sizeof DICT / sizeof DICT[0])];
            size_t len = strlen(d);
            if (b->n + len > max_len) break;
            memmove(b->p + pos + len, b->p + pos, b->n - pos);
            memcpy(b->p + pos, d, len);
            b->n += len;
            break;
        }
        case 5: { /* duplicate a run (nesting, long arrays) */
            if (!b->n) break;
            size_t at = rnd_below(b->n), len = 1 + rnd_below(b->n - at < 64 ? b->n - at : 64);
            if (b->n + len > max_len) break;
            uint8_t tmp[64];
            memcpy(tmp, b->p + at, len);
            memmove(b->p + pos + len, b->p + pos, b->n - pos);
            memcpy(b->p + pos, tmp, len);
            b->n += len;
            break;
        }
        default: { /* splice: a piece of another corpus entry */
            const blob *o = &corpus[rnd_below(n_corpus)];
            if (!o->n) break;
            size_t at = rnd_below(o->n), len = 1 + rnd_below(o->n - at < 128 ? o->n - at : 128);
            if (b->n + len > max_len) break;
            memmove(b->p + pos + len, b->p + pos, b->n - pos);
            memcpy(b->p + pos, o->p + at, len);
            b->n += len;
            break;
        }
        }
    }
}

static int read_corpus(const char *dir, blob **out, size_t *n_out) {
    DIR *d = opendir(dir);
    if (!d) {
        fprintf(stderr, "fuzz_request_run: cannot open the corpus directory %s: %s\n", dir,
                strerror(errno));
        return -1;
    }
    blob *v = NULL;
    size_t n = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.') continue;
        char path[4096];
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        struct stat st;
        if (stat(path, &st) || !S_ISREG(st.st_mode)) continue;
        FILE *f = fopen(path, "rb");
        if (!f) continue;
        blob b = {malloc((size_t)st.st_size + 1), 0};
        FUZZ_CHECK(b.p);
        b.n = fread(b.p, 1, (size_t)st.st_size, f);
        fclose(f);
        v = xrealloc(v, sizeof *v * (n + 1));
        v[n++] = b;
    }
    closedir(d);
    *out = v;
    *n_out = n;
    return 0;
}

int main(int argc, char **argv) {
    const char *dir = NULL;
    double seconds = 10;
    uint64_t seed = 1;
    size_t max_len = 4096;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--seconds") && i + 1 < argc)
            seconds = atof(argv[++i]);
        else if (!strcmp(argv[i], "--seed") && i + 1 < argc)
            seed = strtoull(argv[++i], NULL, 10);
        else if (!strcmp(argv[i], "--max-len") && i + 1 < argc)
            max_len = strtoull(argv[++i], NULL, 10);
        else if (!strcmp(argv[i], "--model") && i + 1 < argc)
            model_dir = argv[++i];
        else if (argv[i][0] != '-' && !dir)
            dir = argv[i];
        else {
            fprintf(stderr, "usage: fuzz_request_run CORPUS_DIR [--seconds N] [--seed S] "
                            "[--max-len BYTES] [--model PKG]\n");
            return 2;
        }
    }
    if (!dir || !(seconds >= 0) || max_len < 16) {
        fprintf(stderr, "usage: fuzz_request_run CORPUS_DIR [--seconds N] [--seed S] "
                        "[--max-len BYTES] [--model PKG]\n");
        return 2;
    }
    blob *corpus;
    size_t n_corpus;
    if (read_corpus(dir, &corpus, &n_corpus)) return 2;
    if (!n_corpus) {
        fprintf(stderr, "fuzz_request_run: the corpus %s is empty\n", dir);
        return 2;
    }
    setup();
    rng_state = seed * 0x9E3779B97F4A7C15ull + 1;
    signal(SIGABRT, on_abort);
    for (size_t i = 0; i < n_corpus; i++) {
        current = &corpus[i];
        LLVMFuzzerTestOneInput(corpus[i].p, corpus[i].n);
    }
    uint64_t runs = 0;
    blob b = {malloc(max_len), 0};
    FUZZ_CHECK(b.p);
    current = &b;
    double t0 = now_ms(), end = t0 + seconds * 1000;
    while (now_ms() < end) {
        const blob *src = &corpus[rnd_below(n_corpus)];
        b.n = src->n < max_len ? src->n : max_len;
        memcpy(b.p, src->p, b.n);
        mutate(&b, corpus, n_corpus, max_len);
        LLVMFuzzerTestOneInput(b.p, b.n);
        runs++;
    }
    printf("fuzz_request_run: %zu corpus inputs, %" PRIu64 " mutated inputs in %.1f s (seed %" PRIu64
           "), each parsed as /v1/titles, /v1/users:embed and /v1/titles:batch; no failure\n",
           n_corpus, runs, (now_ms() - t0) / 1000, seed);
    free(b.p);
    for (size_t i = 0; i < n_corpus; i++)
        free(corpus[i].p);
    free(corpus);
    teardown();
    return 0;
}
#endif
