/* bench_users.h: the synthetic reading histories shared by the benchmarks (bench_creator.c,
 * bench_sched.c). Header-only (static functions), no engine dependency.
 *
 * A pool of P distinct book-like titles; each user draws H titles from it with a Zipf-like
 * popularity (rank r is picked with probability ~ 1/(r+10)), so popular titles recur across users
 * as they do in real reading histories. The draws come from one LCG stream in user order, so user
 * i is the same whether users are drawn all at once or one at a time (deterministic, fixed seed).
 */
#ifndef HC_BENCH_USERS_H
#define HC_BENCH_USERS_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static inline double bench_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static inline int bench_cmp_d(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* The median of v[0..n) (sorts v). */
static inline double bench_median(double *v, int n) {
    qsort(v, (size_t)n, sizeof(double), bench_cmp_d);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

typedef struct bench_users {
    char **titles; /* (pool) NUL-terminated */
    int pool;
    double *cdf;   /* (pool) cumulative popularity */
    double z;      /* cdf[pool - 1] */
    uint64_t x;    /* LCG state */
} bench_users;

static const char *const BENCH_ADJ[] = {"Silent", "Last", "Hidden", "Broken", "Golden",
                                        "Forgotten", "Dark", "Secret", "Lost", "Winter",
                                        "Burning", "Quiet", "Wild", "Glass"};
static const char *const BENCH_NOUN[] = {"Garden", "Kingdom", "River", "Library", "Empire",
                                         "Daughter", "Detective", "Ocean", "Mountain", "Letters",
                                         "Orchard", "Machine", "Storm", "Island", "Crown",
                                         "Station"};
static const char *const BENCH_TAIL[] = {"", ": A Novel", " (Book 2)", " - A Memoir",
                                         ": Stories", " and Other Tales",
                                         " (The Chronicles, #3)", ": A Thriller"};

/* 0 on success, -1 out of memory (g is then freed). */
static inline int bench_users_init(bench_users *g, int pool, uint64_t seed) {
    memset(g, 0, sizeof *g);
    g->pool = pool;
    g->x = seed;
    g->titles = calloc((size_t)pool, sizeof *g->titles);
    g->cdf = malloc(sizeof *g->cdf * (size_t)pool);
    if (!g->titles || !g->cdf) goto oom;
    for (int i = 0; i < pool; i++) {
        if (!(g->titles[i] = malloc(96))) goto oom;
        int a = i % 14, b = (i / 14) % 16, t = (i / 224) % 8;
        snprintf(g->titles[i], 96, "The %s %s%s%s", BENCH_ADJ[a], BENCH_NOUN[b], BENCH_TAIL[t],
                 i >= 1792 ? " Vol. " : "");
        if (i >= 1792) snprintf(g->titles[i] + strlen(g->titles[i]), 16, "%d", i / 1792);
    }
    double z = 0;
    for (int r = 0; r < pool; r++) g->cdf[r] = (z += 1.0 / (r + 10.0));
    g->z = z;
    return 0;
oom:
    for (int i = 0; g->titles && i < pool; i++) free(g->titles[i]);
    free(g->titles);
    free(g->cdf);
    memset(g, 0, sizeof *g);
    return -1;
}

static inline void bench_users_free(bench_users *g) {
    for (int i = 0; g->titles && i < g->pool; i++) free(g->titles[i]);
    free(g->titles);
    free(g->cdf);
    memset(g, 0, sizeof *g);
}

/* The next user's H titles (pointers into the pool) and their lengths. */
static inline void bench_users_next(bench_users *g, int H, const char **t, size_t *l) {
    for (int i = 0; i < H; i++) {
        g->x = g->x * 6364136223846793005ULL + 1442695040888963407ULL;
        double u = (double)(g->x >> 11) * 0x1.0p-53 * g->z;
        int lo = 0, hi = g->pool - 1;
        while (lo < hi) {
            int mid = (lo + hi) / 2;
            if (g->cdf[mid] < u) lo = mid + 1;
            else hi = mid;
        }
        t[i] = g->titles[lo];
        l[i] = strlen(g->titles[lo]);
    }
}

#endif
