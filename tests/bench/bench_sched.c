/* bench_sched.c: the serving scheduler (creator_sched.h) on a model package: titles/s and
 * generated tokens/s with every request submitted at once vs the same requests one at a time,
 * creative prefill tokens with and without shared prefixes, time to first token under a Poisson
 * arrival stream at 50% of the measured capacity, and (--rss N, one N per process) resident
 * memory with N requests submitted at once. Not a test: prints one markdown table. See
 * tests/bench/README.md.
 *
 *   build/tests/bench_sched PKG [--threads T] [--reps R] [--requests N] [--new N] [--rss N]
 *
 * Requests: N distinct synthetic users (50 titles each, Zipf-like draws from a pool of 2000
 * titles: bench_users.h), 8 distinct ads (title + description, request i gets ad i % 8),
 * per-user mode, greedy, max_new new tokens. The package's stop ids are removed (c->n_eos = 0,
 * before the scheduler is created; hc_creq has no stop ids of its own) so every request generates
 * exactly max_new tokens unless --eos is given; the tokens actually generated are counted either
 * way and tokens/s uses that count.
 */
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include "bench_users.h"
#include "creator/creator.h"
#include "creator/creator_sched.h"

#define H_TITLES 50
#define N_ADS 8

static const char *const AD_TITLE[N_ADS] = {
    "The Lighthouse Keeper's Daughter",
    "Quantum Gardens: How Plants Compute",
    "Midnight in the Spice Market",
    "A Field Guide to Northern Storms",
    "The Accidental Emperor",
    "Recipes from a Vanishing Island",
    "Glass Cities: Architecture After Oil",
    "The Detective Who Never Slept",
};
static const char *const AD_DESC[N_ADS] = {
    "A sweeping family saga set on a windswept coast, where a young woman uncovers the secret "
    "her father kept for forty years.",
    "A popular-science tour of the hidden mathematics of leaves, roots and seeds.",
    "A love story told across one night in Istanbul's oldest bazaar.",
    "Photographs, maps and first-hand accounts of the most violent weather on the continent.",
    "A comic historical novel about a clerk mistaken for the heir to a collapsing empire.",
    "Sixty recipes and the stories of the fishing families who still cook them.",
    "How cities of glass and timber could replace concrete within one generation.",
    "A hard-boiled mystery: an insomniac investigator, a missing violinist and a city that "
    "never sleeps either.",
};

typedef struct rstat {
    double arrival, first_tok, done; /* bench_now() times */
    int n_tok, finished, failed;
    uint64_t hash;                   /* FNV-1a over the generated ids */
} rstat;

typedef struct run_ctx {
    rstat *r;
    int n;
    int n_done, n_failed;
    uint64_t tokens;
    char first_error[256];
} run_ctx;

static void sink(void *user, const hc_cevent *ev) {
    run_ctx *x = user;
    if (ev->id >= (uint64_t)x->n) return;
    rstat *r = &x->r[ev->id];
    switch (ev->kind) {
    case HC_CEV_TOKEN:
        if (r->n_tok == 0) r->first_tok = bench_now();
        r->n_tok++;
        x->tokens++;
        for (int k = 0; k < 4; k++) {
            r->hash ^= (uint8_t)((uint32_t)ev->token >> (8 * k));
            r->hash *= 1099511628211ULL;
        }
        break;
    case HC_CEV_FINISHED:
        r->finished = 1;
        r->done = bench_now();
        x->n_done++;
        break;
    case HC_CEV_FAILED:
        r->failed = 1;
        r->done = bench_now();
        x->n_done++;
        x->n_failed++;
        if (!x->first_error[0])
            snprintf(x->first_error, sizeof x->first_error, "request %llu: %s",
                     (unsigned long long)ev->id, ev->message ? ev->message : "?");
        break;
    default:
        break;
    }
}

static void ctx_reset(run_ctx *x) {
    for (int i = 0; i < x->n; i++) {
        memset(&x->r[i], 0, sizeof x->r[i]);
        x->r[i].hash = 1469598103934665603ULL;
    }
    x->n_done = x->n_failed = 0;
    x->tokens = 0;
    x->first_error[0] = 0;
}

/* resident set now and its peak, in KiB, from /proc/self/status (peak: getrusage fallback) */
static void mem_kib(long *rss, long *hwm) {
    *rss = *hwm = -1;
    FILE *f = fopen("/proc/self/status", "r");
    if (f) {
        char line[256];
        while (fgets(line, sizeof line, f)) {
            if (!strncmp(line, "VmRSS:", 6)) *rss = strtol(line + 6, NULL, 10);
            else if (!strncmp(line, "VmHWM:", 6)) *hwm = strtol(line + 6, NULL, 10);
        }
        fclose(f);
    }
    if (*hwm < 0) {
        struct rusage ru;
        if (!getrusage(RUSAGE_SELF, &ru)) *hwm = ru.ru_maxrss;
    }
}

static void die(const char *what, const hc_errbuf *eb) {
    fprintf(stderr, "bench_sched: %s: %s\n", what, eb && eb->msg[0] ? eb->msg : "failed");
    exit(1);
}

/* a deterministic history for request i of a stream: the users are drawn in order */
typedef struct reqset {
    int n;
    hc_creq *r;
    hc_creq_buf *buf;
} reqset;

static int tokenize_one(hc_creator *c, const char **t, const size_t *l, int i, int max_new,
                        hc_creq *r, hc_creq_buf *buf, hc_errbuf *eb) {
    hc_history h = {t, l, H_TITLES};
    const int a = i % N_ADS;
    memset(r, 0, sizeof *r);
    memset(buf, 0, sizeof *buf);
    int rc = hc_creator_tokenize_request(c, c->item_ctx, c->creative_ctx, &h, AD_TITLE[a],
                                         strlen(AD_TITLE[a]), AD_DESC[a], strlen(AD_DESC[a]), r,
                                         buf, eb);
    if (rc) return rc;
    r->id = (uint64_t)i;
    r->mode = HC_CREQ_PER_USER;
    r->sampling = hc_sampler_greedy();
    r->max_new = max_new;
    return HC_OK;
}

typedef struct pass_res {
    double sec;
    int done, failed;
    uint64_t tokens, items_seen, items_encoded, prefill, decode, steps, forwards, mixed;
    uint64_t prefix_hits, prefix_misses;
} pass_res;

static pass_res stats_delta(const hc_csched_stats *a, const hc_csched_stats *b) {
    pass_res d;
    memset(&d, 0, sizeof d);
    d.items_seen = b->items_seen - a->items_seen;
    d.items_encoded = b->items_encoded - a->items_encoded;
    d.prefill = b->gen.prefill_tokens - a->gen.prefill_tokens;
    d.decode = b->gen.decode_tokens - a->gen.decode_tokens;
    d.steps = b->steps - a->steps;
    d.forwards = b->gen.forwards - a->gen.forwards;
    d.mixed = b->gen.mixed_forwards - a->gen.mixed_forwards;
    d.prefix_hits = b->gen.prefix_hits - a->gen.prefix_hits;
    d.prefix_misses = b->gen.prefix_misses - a->gen.prefix_misses;
    return d;
}

static void submit_or_die(hc_csched *s, const hc_creq *r, run_ctx *x) {
    hc_errbuf eb = {{0}};
    int rc;
    while ((rc = hc_csched_submit(s, r, &eb)) == HC_ERR_AGAIN) /* queue full: make room */
        if (hc_csched_step(s, sink, x, &eb)) die("step", &eb);
    if (rc) die("submit", &eb);
}

static void run_until_idle(hc_csched *s, run_ctx *x) {
    hc_errbuf eb = {{0}};
    while (!hc_csched_idle(s))
        if (hc_csched_step(s, sink, x, &eb)) die("step", &eb);
}

/* serial = 0: all submitted, then stepped until idle; 1: submit one, step until idle, next */
static pass_res run_pass(hc_csched *s, const reqset *q, run_ctx *x, int serial) {
    ctx_reset(x);
    hc_csched_stats a = hc_csched_get_stats(s);
    double t0 = bench_now();
    for (int i = 0; i < q->n; i++) {
        x->r[i].arrival = bench_now();
        submit_or_die(s, &q->r[i], x);
        if (serial) run_until_idle(s, x);
    }
    run_until_idle(s, x);
    double t1 = bench_now();
    hc_csched_stats b = hc_csched_get_stats(s);
    pass_res d = stats_delta(&a, &b);
    d.sec = t1 - t0;
    d.done = x->n_done - x->n_failed;
    d.failed = x->n_failed;
    d.tokens = x->tokens;
    if (x->n_failed) fprintf(stderr, "bench_sched: %d failed, first: %s\n", x->n_failed,
                             x->first_error);
    return d;
}

static int parse_int(const char *opt, const char *v, long lo, long hi, int *out) {
    if (!v) {
        fprintf(stderr, "bench_sched: %s needs a value\n", opt);
        return -1;
    }
    char *end = NULL;
    errno = 0;
    long x = strtol(v, &end, 10);
    if (errno || end == v || *end || x < lo || x > hi) {
        fprintf(stderr, "bench_sched: %s: '%s' is not an integer in %ld..%ld\n", opt, v, lo, hi);
        return -1;
    }
    *out = (int)x;
    return 0;
}

static void usage(FILE *f) {
    fprintf(f,
            "usage: bench_sched PKG [--threads T] [--reps R] [--requests N] [--new N] [--rss N]\n"
            "                       [--max-running M] [--block-size B] [--pool P] [--eos]\n"
            "                       [--rss-time S]\n"
            "  --threads T      backend threads (default 2)\n"
            "  --reps R         repetitions of each timed pass; medians are printed (default 3)\n"
            "  --requests N     requests = distinct synthetic users (default 64)\n"
            "  --new N          new tokens per request (default 32)\n"
            "  --max-running M  creative scheduler's max_running (default 64)\n"
            "  --block-size B   KV block size of the creative scheduler (default 16)\n"
            "  --pool P         distinct titles the histories are drawn from (default 2000)\n"
            "  --eos            keep the package's stop ids (default: removed, so every request\n"
            "                   generates exactly --new tokens)\n"
            "  --rss N          memory mode: load, submit N requests at once, run them to\n"
            "                   completion; prints resident memory at each point (run each N in\n"
            "                   its own process)\n"
            "  --rss-time S     with --rss: stop stepping after S seconds (0: run to completion)\n");
}

typedef struct opts {
    const char *pkg;
    int threads, reps, requests, max_new, rss, max_running, block_size, pool, eos, rss_time;
} opts;

static hc_csched_params sched_params(const opts *o, int max_queued, int max_prefixes) {
    hc_csched_params p = hc_csched_default_params();
    if (max_queued > p.max_queued) p.max_queued = max_queued;
    p.gen.max_running = o->max_running;
    p.gen.block_size = o->block_size;
    p.gen.max_new = o->max_new > 0 ? o->max_new : 1;
    if (max_prefixes >= 0) p.gen.max_prefixes = max_prefixes;
    return p;
}

static double kv_mib(hc_csched *s) {
    hc_lm_sched *g = hc_csched_gen(s);
    if (!g) return 0;
    const hc_kv_cache *kv = hc_lm_sched_kv(g);
    return 2.0 * kv->n_layers * kv->n_blocks * kv->block_size * kv->kv_dim * 4 / 1048576.0;
}

static hc_creator *load(const opts *o, hc_backend **be) {
    hc_errbuf eb = {{0}};
    if (hc_backend_create(be, HC_BACKEND_AUTO, o->threads, &eb)) die("backend", &eb);
    hc_creator_params p = hc_creator_default_params();
    p.n_threads = o->threads;
    hc_creator *c = NULL;
    if (hc_creator_load(&c, *be, o->pkg, &p, &eb)) die(o->pkg, &eb);
    if (!c->creative) {
        fprintf(stderr, "bench_sched: %s has no creative LLM\n", o->pkg);
        exit(1);
    }
    if (!c->cache) {
        fprintf(stderr, "bench_sched: no item cache\n");
        exit(1);
    }
    if (!o->eos) c->n_eos = 0; /* no stop: every request generates max_new tokens */
    return c;
}

static void print_machine(const opts *o, hc_backend *be, hc_creator *c) {
    printf("package %s: item LLM %.1fM, user LLM %.1fM, creative LLM %.2fM params; %s backend, "
           "%d threads\n", o->pkg, c->item->n_params / 1e6, c->user->n_params / 1e6,
           c->creative->n_params / 1e6, be->iface->name, be->n_threads);
}

/* --rss N: one process per N */
static int rss_mode(const opts *o) {
    long r0, h0, r1, h1, r2, h2, r3, h3;
    mem_kib(&r0, &h0);
    hc_backend *be = NULL;
    hc_creator *c = load(o, &be);
    hc_errbuf eb = {{0}};
    hc_csched_params sp = sched_params(o, o->rss, -1);
    hc_csched *s = NULL;
    if (hc_csched_create(&s, c, &sp, &eb)) die("scheduler", &eb);
    mem_kib(&r1, &h1);
    bench_users g;
    if (bench_users_init(&g, o->pool, 42)) die("out of memory", NULL);
    rstat *rs = calloc((size_t)o->rss, sizeof *rs);
    if (!rs) die("out of memory", NULL);
    run_ctx x = {rs, o->rss, 0, 0, 0, {0}};
    ctx_reset(&x);
    const char *t[H_TITLES];
    size_t l[H_TITLES];
    for (int i = 0; i < o->rss; i++) { /* tokenized one at a time: the scheduler copies */
        hc_creq r;
        hc_creq_buf buf;
        bench_users_next(&g, H_TITLES, t, l);
        if (tokenize_one(c, t, l, i, o->max_new, &r, &buf, &eb)) die("tokenize", &eb);
        int rc = hc_csched_submit(s, &r, &eb);
        hc_creq_buf_free(&buf);
        if (rc == HC_ERR_AGAIN) {
            fprintf(stderr, "bench_sched: queue full at request %d\n", i);
            return 1;
        }
        if (rc) die("submit", &eb);
    }
    mem_kib(&r2, &h2);
    double t0 = bench_now();
    while (!hc_csched_idle(s)) {
        if (hc_csched_step(s, sink, &x, &eb)) die("step", &eb);
        if (o->rss_time > 0 && bench_now() - t0 > o->rss_time) break;
    }
    double dt = bench_now() - t0;
    mem_kib(&r3, &h3);
    printf("rss mode, ");
    print_machine(o, be, c);
    printf("creative KV pool %.1f MiB (allocated at create); queue bound %d; %d new tokens; "
           "VmRSS / VmHWM (peak) from /proc/self/status, MiB\n\n", kv_mib(s), sp.max_queued,
           o->max_new);
    printf("| requests | before load | after load (+scheduler) | after submitting | "
           "after running | peak (VmHWM) | (after submit - after load) / request | "
           "finished | seconds |\n|---|---|---|---|---|---|---|---|---|\n");
    printf("| %d | %.1f | %.1f | %.1f | %.1f | %.1f | %.1f KiB | %d of %d%s | %.1f |\n", o->rss,
           r0 / 1024.0, r1 / 1024.0, r2 / 1024.0, r3 / 1024.0, h3 / 1024.0,
           (double)(r2 - r1) / o->rss, x.n_done - x.n_failed, o->rss,
           hc_csched_idle(s) ? "" : " (time limit)", dt);
    if (x.n_failed) fprintf(stderr, "bench_sched: %d failed: %s\n", x.n_failed, x.first_error);
    free(rs);
    bench_users_free(&g);
    hc_csched_free(s);
    hc_creator_free(c);
    hc_backend_free(be);
    return x.n_failed ? 1 : 0;
}

static double pct(double *v, int n, double p) { /* nearest rank; v sorted */
    int k = (int)ceil(p * n) - 1;
    if (k < 0) k = 0;
    if (k >= n) k = n - 1;
    return v[k];
}

int main(int argc, char **argv) {
    opts o = {NULL, 2, 3, 64, 32, 0, 64, 16, 2000, 0, 0};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        int rc = 0;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            usage(stdout);
            return 0;
        } else if (!strcmp(a, "--eos")) {
            o.eos = 1;
            continue;
        } else if (!strcmp(a, "--threads")) rc = parse_int(a, v, 1, 1024, &o.threads);
        else if (!strcmp(a, "--reps")) rc = parse_int(a, v, 1, 100, &o.reps);
        else if (!strcmp(a, "--requests")) rc = parse_int(a, v, 1, 1000000, &o.requests);
        else if (!strcmp(a, "--new")) rc = parse_int(a, v, 1, 4096, &o.max_new);
        else if (!strcmp(a, "--rss")) rc = parse_int(a, v, 1, 10000000, &o.rss);
        else if (!strcmp(a, "--rss-time")) rc = parse_int(a, v, 0, INT_MAX, &o.rss_time);
        else if (!strcmp(a, "--max-running")) rc = parse_int(a, v, 1, 1 << 20, &o.max_running);
        else if (!strcmp(a, "--block-size")) rc = parse_int(a, v, 1, 4096, &o.block_size);
        else if (!strcmp(a, "--pool")) rc = parse_int(a, v, 1, 1 << 24, &o.pool);
        else if (a[0] == '-') {
            fprintf(stderr, "bench_sched: unknown option %s (see --help)\n", a);
            return 2;
        } else {
            if (o.pkg) {
                fprintf(stderr, "bench_sched: one package only (got %s and %s)\n", o.pkg, a);
                return 2;
            }
            o.pkg = a;
            continue;
        }
        if (rc) return 2;
        i++;
    }
    if (!o.pkg) {
        usage(stderr);
        return 2;
    }
    if (o.rss) return rss_mode(&o);

    hc_backend *be = NULL;
    hc_creator *c = load(&o, &be);
    hc_errbuf eb = {{0}};
    const int N = o.requests, R = o.reps;

    /* the requests, tokenized once (as a submitter thread would) */
    bench_users g;
    if (bench_users_init(&g, o.pool, 42)) die("out of memory", NULL);
    reqset q = {N, calloc((size_t)N, sizeof(hc_creq)), calloc((size_t)N, sizeof(hc_creq_buf))};
    rstat *rs = calloc((size_t)N, sizeof *rs);
    uint64_t *hash_b = calloc((size_t)N, sizeof *hash_b);
    if (!q.r || !q.buf || !rs || !hash_b) die("out of memory", NULL);
    const char *t[H_TITLES];
    size_t l[H_TITLES];
    for (int i = 0; i < N; i++) {
        bench_users_next(&g, H_TITLES, t, l);
        if (tokenize_one(c, t, l, i, o.max_new, &q.r[i], &q.buf[i], &eb)) die("tokenize", &eb);
    }
    run_ctx x = {rs, N, 0, 0, 0, {0}};

    hc_csched_params sp = sched_params(&o, N, -1);
    hc_csched *s = NULL;
    if (hc_csched_create(&s, c, &sp, &eb)) die("scheduler", &eb);

    /* warm-up (pages the weights in, fills the shared prefix): a few requests, untimed */
    {
        reqset w = {N < 8 ? N : 8, q.r, q.buf};
        hc_item_cache_clear(c->cache);
        run_pass(s, &w, &x, 0);
    }

    /* timed passes, interleaved: cold (item cache emptied before the pass: each distinct title
     * of the pass is encoded once on both sides) and warm (every title already cached) */
    enum { COLD_B, COLD_S, WARM_B, WARM_S, NK };
    static const char *kname[NK] = {"batched, cache cold", "one at a time, cache cold",
                                    "batched, cache warm", "one at a time, cache warm"};
    double *sec[NK], *tps[NK], *kps[NK];
    pass_res last[NK];
    int same_out = 1, n_diff = 0;
    for (int k = 0; k < NK; k++) {
        sec[k] = calloc((size_t)R, sizeof(double));
        tps[k] = calloc((size_t)R, sizeof(double));
        kps[k] = calloc((size_t)R, sizeof(double));
    }
    for (int rep = 0; rep < R; rep++) {
        for (int k = 0; k < NK; k++) {
            if (k == COLD_B || k == COLD_S) hc_item_cache_clear(c->cache);
            pass_res d = run_pass(s, &q, &x, k == COLD_S || k == WARM_S);
            sec[k][rep] = d.sec;
            tps[k][rep] = d.done / d.sec;
            kps[k][rep] = (double)d.tokens / d.sec;
            last[k] = d;
            for (int i = 0; i < N; i++) {
                if (k == COLD_B && rep == 0) hash_b[i] = rs[i].hash;
                else if (hash_b[i] != rs[i].hash) {
                    same_out = 0;
                    n_diff++;
                }
            }
            fprintf(stderr, "rep %d/%d %-26s %8.3f s  %7.2f titles/s  %8.1f tok/s  items "
                            "encoded %llu\n", rep + 1, R, kname[k], d.sec, tps[k][rep],
                    kps[k][rep], (unsigned long long)d.items_encoded);
        }
    }
    double m_sec[NK], m_tps[NK], m_kps[NK];
    for (int k = 0; k < NK; k++) {
        m_sec[k] = bench_median(sec[k], R);
        m_tps[k] = bench_median(tps[k], R);
        m_kps[k] = bench_median(kps[k], R);
    }
    /* creative prefill without prefix sharing: the same requests, batched, warm cache */
    const double kv_shared = kv_mib(s);
    hc_csched_free(s);
    hc_csched_params sp0 = sched_params(&o, N, 0);
    if (hc_csched_create(&s, c, &sp0, &eb)) die("scheduler", &eb);
    pass_res nos = run_pass(s, &q, &x, 0);
    for (int i = 0; i < N; i++)
        if (hash_b[i] != rs[i].hash) same_out = 0, n_diff++;
    hc_csched_free(s);

    /* TTFT: Poisson arrivals at 50% of the batched capacity (cache cold at the start) */
    if (hc_csched_create(&s, c, &sp, &eb)) die("scheduler", &eb);
    const double cap = m_tps[COLD_B], rate = 0.5 * cap;
    double *arr = malloc(sizeof(double) * (size_t)N), *ttft = malloc(sizeof(double) * (size_t)N);
    if (!arr || !ttft) die("out of memory", NULL);
    uint64_t xs = 7;
    double ta = 0;
    for (int i = 0; i < N; i++) {
        xs = xs * 6364136223846793005ULL + 1442695040888963407ULL;
        double u = ((double)(xs >> 11) + 0.5) * 0x1.0p-53;
        ta += -log(u) / rate;
        arr[i] = ta;
    }
    hc_item_cache_clear(c->cache);
    ctx_reset(&x);
    double t0 = bench_now();
    int next = 0;
    while (next < N || !hc_csched_idle(s)) {
        double now = bench_now() - t0;
        while (next < N && arr[next] <= now) {
            rs[next].arrival = t0 + arr[next];
            submit_or_die(s, &q.r[next], &x);
            next++;
        }
        if (hc_csched_idle(s)) {
            if (next < N) {
                double w = arr[next] - (bench_now() - t0);
                if (w > 0) {
                    struct timespec ts = {(time_t)w, (long)((w - (double)(time_t)w) * 1e9)};
                    nanosleep(&ts, NULL);
                }
            }
            continue;
        }
        if (hc_csched_step(s, sink, &x, &eb)) die("step", &eb);
    }
    const double t_stream = bench_now() - t0;
    int n_ttft = 0;
    double ttft_sum = 0;
    for (int i = 0; i < N; i++)
        if (rs[i].n_tok > 0) {
            ttft[n_ttft] = rs[i].first_tok - rs[i].arrival;
            ttft_sum += ttft[n_ttft++];
        }
    qsort(ttft, (size_t)n_ttft, sizeof(double), bench_cmp_d);
    hc_csched_free(s);

    /* the table */
    print_machine(&o, be, c);
    printf("%d requests (%d distinct users x %d titles from a pool of %d, %d ads, per-user "
           "mode, greedy, %d new tokens, stop ids %s), creative scheduler max_running %d, "
           "block %d, KV pool %.1f MiB; median of %d reps\n\n", N, N, H_TITLES, o.pool, N_ADS,
           o.max_new, o.eos ? "kept" : "removed", o.max_running, o.block_size, kv_shared, R);
    printf("| pass | seconds | titles/s | generated tokens/s | tokens generated | items "
           "encoded | creative prefill tokens | steps |\n|---|---|---|---|---|---|---|---|\n");
    for (int k = 0; k < NK; k++)
        printf("| %s | %.3f | %.2f | %.1f | %llu | %llu | %llu | %llu |\n", kname[k], m_sec[k],
               m_tps[k], m_kps[k], (unsigned long long)last[k].tokens,
               (unsigned long long)last[k].items_encoded, (unsigned long long)last[k].prefill,
               (unsigned long long)last[k].steps);
    printf("| batched, cache warm, no prefix sharing (1 pass) | %.3f | %.2f | %.1f | %llu | "
           "%llu | %llu | %llu |\n", nos.sec, nos.done / nos.sec, nos.tokens / nos.sec,
           (unsigned long long)nos.tokens, (unsigned long long)nos.items_encoded,
           (unsigned long long)nos.prefill, (unsigned long long)nos.steps);
    printf("| batched / one at a time, cache cold | | **%.2fx** | %.2fx | | | | |\n",
           m_tps[COLD_B] / m_tps[COLD_S], m_kps[COLD_B] / m_kps[COLD_S]);
    printf("| batched / one at a time, cache warm | | **%.2fx** | %.2fx | | | | |\n",
           m_tps[WARM_B] / m_tps[WARM_S], m_kps[WARM_B] / m_kps[WARM_S]);
    printf("| creative prefill tokens, shared / unshared (batched) | | | | | | %llu / %llu "
           "(prefix hits %llu, misses %llu) | |\n", (unsigned long long)last[WARM_B].prefill,
           (unsigned long long)nos.prefill, (unsigned long long)last[WARM_B].prefix_hits,
           (unsigned long long)last[WARM_B].prefix_misses);
    if (n_ttft)
        printf("| TTFT, Poisson arrivals at %.2f req/s (50%% of %.2f titles/s cold) | %.3f "
               "(stream) | p50 **%.3f s** | p99 **%.3f s** | mean %.3f s, max %.3f s | | | "
               "|\n", rate, cap, t_stream, pct(ttft, n_ttft, 0.5), pct(ttft, n_ttft, 0.99),
               ttft_sum / n_ttft, ttft[n_ttft - 1]);
    printf("\nbatched and one-at-a-time outputs identical (greedy ids of every request, every "
           "pass): %s%s\n", same_out ? "yes" : "NO", same_out ? "" : " (see stderr)");
    if (!same_out) fprintf(stderr, "bench_sched: %d request outputs differed\n", n_diff);

    for (int k = 0; k < NK; k++) free(sec[k]), free(tps[k]), free(kps[k]);
    for (int i = 0; i < N; i++) hc_creq_buf_free(&q.buf[i]);
    free(q.r);
    free(q.buf);
    free(rs);
    free(hash_b);
    free(arr);
    free(ttft);
    bench_users_free(&g);
    hc_creator_free(c);
    hc_backend_free(be);
    return 0;
}
