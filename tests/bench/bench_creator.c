/* bench_creator.c: users embedded per second (item LLM + user LLM + projector) with the item
 * cache disabled, cold (empty at the start of the pass) and warm (a second pass over the same
 * users). Not a test: prints one table. See tests/bench/README.md.
 *
 *   build/tests/bench_creator PKG [--users N] [--pool P] [--batch B] [--reps R] [--threads T]
 *
 * Users are synthetic: 50 titles each, drawn from a pool of P distinct titles with a Zipf-like
 * popularity (rank r is picked with probability ~ 1/(r+10)), so popular titles recur across users
 * as they do in real reading histories. Deterministic (fixed seed).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench_users.h"
#include "creator/creator.h"

int main(int argc, char **argv) {
    if (argc < 2 || !strcmp(argv[1], "--help")) {
        fprintf(stderr, "usage: bench_creator PKG [--users N] [--pool P] [--batch B] [--reps R] "
                        "[--threads T]\n");
        return 2;
    }
    const char *pkg = argv[1];
    int n_users = 64, pool = 2000, batch = 16, reps = 3, threads = 0;
    for (int i = 2; i + 1 < argc; i += 2) {
        int v = atoi(argv[i + 1]);
        if (!strcmp(argv[i], "--users")) n_users = v;
        else if (!strcmp(argv[i], "--pool")) pool = v;
        else if (!strcmp(argv[i], "--batch")) batch = v;
        else if (!strcmp(argv[i], "--reps")) reps = v;
        else if (!strcmp(argv[i], "--threads")) threads = v;
        else {
            fprintf(stderr, "bench_creator: unknown option %s\n", argv[i]);
            return 2;
        }
    }
    if (n_users < 1 || pool < 1 || batch < 1 || reps < 1) return 2;
    /* users: 50 Zipf-drawn titles each from the pool (bench_users.h) */
    const int H = 50;
    bench_users g;
    if (bench_users_init(&g, pool, 42)) return 1;
    const char **hist_t = malloc(sizeof *hist_t * (size_t)n_users * H);
    size_t *hist_l = malloc(sizeof *hist_l * (size_t)n_users * H);
    if (!hist_t || !hist_l) return 1;
    for (int i = 0; i < n_users; i++)
        bench_users_next(&g, H, hist_t + (size_t)i * H, hist_l + (size_t)i * H);
    hc_history *users = malloc(sizeof *users * (size_t)n_users);
    for (int i = 0; i < n_users; i++)
        users[i] = (hc_history){hist_t + (size_t)i * H, hist_l + (size_t)i * H, H};

    hc_errbuf eb = {{0}};
    hc_backend *be = NULL;
    if (hc_backend_create(&be, HC_BACKEND_AUTO, threads, &eb)) {
        fprintf(stderr, "bench_creator: %s\n", eb.msg);
        return 1;
    }
    double t_none[64], t_cold[64], t_warm[64];
    uint64_t enc_none = 0, enc_cold = 0, enc_warm = 0, seen = 0;
    if (reps > 64) reps = 64;
    for (int mode = 0; mode < 2; mode++) {
        hc_creator_params p = hc_creator_default_params();
        p.load_creative = 0;
        p.item_cache_entries = mode == 0 ? 0 : 65536;
        hc_creator *c = NULL;
        if (hc_creator_load(&c, be, pkg, &p, &eb)) {
            fprintf(stderr, "bench_creator: %s\n", eb.msg);
            return 1;
        }
        float *U = malloc(sizeof(float) * (size_t)batch * (size_t)c->d_creative);
        for (int r = 0; r < reps; r++) {
            for (int pass = 0; pass < (mode ? 2 : 1); pass++) {
                if (mode && pass == 0) hc_item_cache_clear(c->cache);
                uint64_t e0 = c->stats.items_encoded, s0 = c->stats.items_seen;
                double t0 = bench_now();
                for (int a = 0; a < n_users; a += batch) {
                    int nb = n_users - a < batch ? n_users - a : batch;
                    if (hc_creator_embed_users(c, users + a, nb, NULL, U, &eb)) {
                        fprintf(stderr, "bench_creator: %s\n", eb.msg);
                        return 1;
                    }
                }
                double dt = bench_now() - t0;
                uint64_t enc = c->stats.items_encoded - e0;
                seen = c->stats.items_seen - s0;
                if (mode == 0) t_none[r] = dt, enc_none = enc;
                else if (pass == 0) t_cold[r] = dt, enc_cold = enc;
                else t_warm[r] = dt, enc_warm = enc;
            }
        }
        if (mode == 0)
            printf("package %s: item/user LLM %lld params each, %s backend, %d threads\n", pkg,
                   (long long)c->item->n_params, be->iface->name, be->n_threads);
        free(U);
        hc_creator_free(c);
    }
    qsort(t_none, (size_t)reps, sizeof(double), bench_cmp_d);
    qsort(t_cold, (size_t)reps, sizeof(double), bench_cmp_d);
    qsort(t_warm, (size_t)reps, sizeof(double), bench_cmp_d);
    double mn = t_none[reps / 2], mc = t_cold[reps / 2], mw = t_warm[reps / 2];
    printf("%d users x %d titles (pool %d titles, %llu lookups/pass), batch %d, median of %d\n",
           n_users, H, pool, (unsigned long long)seen, batch, reps);
    printf("%-12s %14s %12s %12s\n", "item cache", "items encoded", "seconds", "users/s");
    printf("%-12s %14llu %12.3f %12.2f\n", "disabled", (unsigned long long)enc_none, mn, n_users / mn);
    printf("%-12s %14llu %12.3f %12.2f\n", "cold", (unsigned long long)enc_cold, mc, n_users / mc);
    printf("%-12s %14llu %12.3f %12.2f\n", "warm", (unsigned long long)enc_warm, mw, n_users / mw);
    printf("warm/disabled speed-up: %.1fx, cold/disabled: %.1fx\n", mn / mw, mn / mc);
    hc_backend_free(be);
    bench_users_free(&g);
    free(hist_t);
    free(hist_l);
    free(users);
    return 0;
}
