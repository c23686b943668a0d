/* test_sampler.c: sampler semantics (transformers' temperature -> top-k -> top-p order), seeding,
 * and the empirical distribution of draws against the probabilities the filters imply. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "model/sampler.h"
#include "testutil.h"

/* Reference: the set of tokens transformers would keep, computed the slow, obvious way. */
static void reference_probs(const float *logits, int n, float T, int top_k, float top_p,
                            double *p) {
    double *v = malloc(sizeof(double) * (size_t)n);
    for (int i = 0; i < n; i++) v[i] = (double)(logits[i] / T);
    if (top_k > 0 && top_k < n) {
        /* k-th largest */
        double *s = malloc(sizeof(double) * (size_t)n);
        memcpy(s, v, sizeof(double) * (size_t)n);
        for (int i = 0; i < top_k; i++) /* partial selection sort, descending */
            for (int j = i + 1; j < n; j++)
                if (s[j] > s[i]) {
                    double t = s[i];
                    s[i] = s[j];
                    s[j] = t;
                }
        double kth = s[top_k - 1];
        for (int i = 0; i < n; i++)
            if (v[i] < kth) v[i] = -INFINITY;
        free(s);
    }
    double mx = -INFINITY, z = 0;
    for (int i = 0; i < n; i++) mx = v[i] > mx ? v[i] : mx;
    for (int i = 0; i < n; i++) z += exp(v[i] - mx);
    for (int i = 0; i < n; i++) p[i] = exp(v[i] - mx) / z;
    if (top_p < 1.0f) {
        /* ascending order; remove while cumulative <= 1 - top_p, keep the largest */
        int *idx = malloc(sizeof(int) * (size_t)n);
        for (int i = 0; i < n; i++) idx[i] = i;
        for (int i = 0; i < n; i++)
            for (int j = i + 1; j < n; j++)
                if (p[idx[j]] < p[idx[i]] || (p[idx[j]] == p[idx[i]] && idx[j] > idx[i])) {
                    int t = idx[i];
                    idx[i] = idx[j];
                    idx[j] = t;
                }
        double cum = 0;
        for (int i = 0; i < n - 1; i++) {
            cum += p[idx[i]];
            if (cum <= 1.0 - top_p) p[idx[i]] = 0;
        }
        free(idx);
        z = 0;
        for (int i = 0; i < n; i++) z += p[i];
        for (int i = 0; i < n; i++) p[i] /= z;
    }
    free(v);
}

static void check_distribution(const float *logits, int n, float T, int k, float top_p) {
    hc_sampler s;
    hc_sampler_params sp = {0, T, k, top_p, 42};
    CHECK_OK(hc_sampler_init(&s, &sp, n, NULL));
    double *p = malloc(sizeof(double) * (size_t)n);
    reference_probs(logits, n, T, k, top_p, p);
    enum { DRAWS = 200000 };
    int *cnt = calloc((size_t)n, sizeof *cnt);
    for (int i = 0; i < DRAWS; i++) cnt[hc_sampler_sample(&s, logits)]++;
    for (int i = 0; i < n; i++) {
        double f = (double)cnt[i] / DRAWS;
        if (p[i] == 0) {
            CHECKF(cnt[i] == 0, "T=%g k=%d p=%g: token %d filtered out but drawn %d times", T, k,
                   top_p, i, cnt[i]);
        } else {
            double sd = sqrt(p[i] * (1 - p[i]) / DRAWS);
            CHECKF(fabs(f - p[i]) < 5 * sd + 1e-4, "T=%g k=%d p=%g: token %d freq %.4f want %.4f",
                   T, k, top_p, i, f, p[i]);
        }
    }
    free(cnt);
    free(p);
    hc_sampler_free(&s);
}

int main(void) {
    enum { N = 12 };
    const float logits[N] = {1.0f, 2.5f, -0.5f, 2.5f, 0.3f, 3.1f, -2.0f, 1.7f, 0.0f, 2.2f, -1.0f, 0.9f};
    /* greedy: argmax, first index on ties */
    hc_sampler s;
    hc_sampler_params g = hc_sampler_greedy();
    CHECK_OK(hc_sampler_init(&s, &g, N, NULL));
    CHECK(hc_sampler_sample(&s, logits) == 5);
    const float tie[4] = {1, 3, 3, 0};
    hc_sampler_free(&s);
    CHECK_OK(hc_sampler_init(&s, &g, 4, NULL));
    CHECK(hc_sampler_sample(&s, tie) == 1);
    hc_sampler_free(&s);
    /* temperature 0 means greedy */
    hc_sampler_params t0 = {0, 0.0f, 0, 1.0f, 7};
    CHECK_OK(hc_sampler_init(&s, &t0, N, NULL));
    for (int i = 0; i < 50; i++) CHECK(hc_sampler_sample(&s, logits) == 5);
    hc_sampler_free(&s);
    /* a temperature so small that logits / T overflows float behaves as greedy, never as NaN */
    hc_sampler_params tiny = {0, 1e-39f, 5, 0.9f, 7};
    CHECK_OK(hc_sampler_init(&s, &tiny, N, NULL));
    for (int i = 0; i < 50; i++) CHECK(hc_sampler_sample(&s, logits) == 5);
    hc_sampler_free(&s);
    /* top_k = 1 is greedy whatever the temperature */
    hc_sampler_params k1 = {0, 5.0f, 1, 1.0f, 7};
    CHECK_OK(hc_sampler_init(&s, &k1, N, NULL));
    for (int i = 0; i < 50; i++) CHECK(hc_sampler_sample(&s, logits) == 5);
    hc_sampler_free(&s);
    /* distributions after each filter combination */
    check_distribution(logits, N, 1.0f, 0, 1.0f);
    check_distribution(logits, N, 0.8f, 0, 1.0f);
    check_distribution(logits, N, 1.3f, 4, 1.0f); /* ties at the k-th value (2.5, 2.5) */
    check_distribution(logits, N, 1.3f, 3, 1.0f); /* k-th value tied: both 2.5s survive */
    check_distribution(logits, N, 1.0f, 0, 0.7f);
    check_distribution(logits, N, 0.8f, 6, 0.95f);
    check_distribution(logits, N, 0.7f, 50, 0.5f);
    /* same seed, same stream; different seeds differ */
    hc_sampler a, b;
    hc_sampler_params pa = {0, 1.0f, 0, 1.0f, 123}, pb = pa;
    CHECK_OK(hc_sampler_init(&a, &pa, N, NULL));
    CHECK_OK(hc_sampler_init(&b, &pb, N, NULL));
    int same = 1;
    for (int i = 0; i < 100; i++) same &= hc_sampler_sample(&a, logits) == hc_sampler_sample(&b, logits);
    CHECK(same);
    hc_sampler_free(&b);
    pb.seed = 124;
    CHECK_OK(hc_sampler_init(&b, &pb, N, NULL));
    int diff = 0;
    for (int i = 0; i < 100; i++) diff += hc_sampler_sample(&a, logits) != hc_sampler_sample(&b, logits);
    CHECK(diff > 0);
    hc_sampler_free(&a);
    hc_sampler_free(&b);
    /* invalid parameters are errors with a message */
    hc_errbuf eb = {{0}};
    hc_sampler_params bad1 = {0, -1.0f, 0, 1.0f, 0}, bad2 = {0, 1.0f, -3, 1.0f, 0},
                      bad3 = {0, 1.0f, 0, 0.0f, 0}, bad4 = {0, 1.0f, 0, 1.5f, 0};
    CHECK(hc_sampler_init(&s, &bad1, N, &eb) == HC_ERR_INVAL && strstr(eb.msg, "temperature"));
    CHECK(hc_sampler_init(&s, &bad2, N, &eb) == HC_ERR_INVAL && strstr(eb.msg, "top_k"));
    CHECK(hc_sampler_init(&s, &bad3, N, &eb) == HC_ERR_INVAL && strstr(eb.msg, "top_p"));
    CHECK(hc_sampler_init(&s, &bad4, N, &eb) == HC_ERR_INVAL && strstr(eb.msg, "top_p"));
    return hc_test_finish("test_sampler");
}
