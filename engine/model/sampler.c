/* sampler.c: see sampler.h. */
#include "model/sampler.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static inline uint64_t mix64(uint64_t z) {
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

/* Counter-based: draw i of a request is a pure function of (seed, i), so a request's tokens do
 * not depend on how its steps were batched or interleaved, and a device can compute the same
 * value in place. Two rounds of the splitmix64 finalizer over seed and counter. */
double hc_sample_uniform(uint64_t seed, uint64_t i) {
    uint64_t z = mix64(seed + 0x9e3779b97f4a7c15ULL);
    z = mix64(z ^ (i * 0xd1b54a32d192ed03ULL + 0x8cb92ba72f3d8dd7ULL));
    return (double)(z >> 11) * 0x1.0p-53;
}

double hc_sampler_uniform(hc_sampler *s) { return hc_sample_uniform(s->p.seed, s->n_drawn++); }

int hc_sampler_check(const hc_sampler_params *p, int vocab, hc_errbuf *eb) {
    if (vocab < 1) return hc_seterr(eb, HC_ERR_INVAL, "vocabulary size must be positive");
    if (!p->greedy) {
        if (!(p->temperature >= 0.0f) || !isfinite(p->temperature))
            return hc_seterr(eb, HC_ERR_INVAL, "temperature must be >= 0 (got %g)", p->temperature);
        if (p->top_k < 0)
            return hc_seterr(eb, HC_ERR_INVAL, "top_k must be >= 0 (got %d)", p->top_k);
        if (!(p->top_p > 0.0f && p->top_p <= 1.0f))
            return hc_seterr(eb, HC_ERR_INVAL, "top_p must be in (0, 1] (got %g)", p->top_p);
    }
    return HC_OK;
}

int hc_sampler_init(hc_sampler *s, const hc_sampler_params *p, int vocab, hc_errbuf *eb) {
    memset(s, 0, sizeof *s);
    int rc = hc_sampler_check(p, vocab, eb);
    if (rc) return rc;
    s->p = *p;
    s->vocab = vocab;
    s->idx = malloc((size_t)vocab * sizeof *s->idx);
    s->val = malloc((size_t)vocab * sizeof *s->val);
    if (!s->idx || !s->val) {
        hc_sampler_free(s);
        return HC_ERR_NOMEM;
    }
    return HC_OK;
}

void hc_sampler_free(hc_sampler *s) {
    free(s->idx);
    free(s->val);
    s->idx = NULL;
    s->val = NULL;
}

static int32_t argmax(const float *x, int n) {
    int32_t best = 0;
    for (int i = 1; i < n; i++)
        if (x[i] > x[best]) best = i;
    return best;
}

/* k-th largest value of v[0..n) (k >= 1), by quickselect on a scratch copy. */
static float kth_largest(float *v, int n, int k) {
    int lo = 0, hi = n - 1, want = k - 1; /* descending order index */
    while (lo < hi) {
        float pivot = v[lo + (hi - lo) / 2];
        int i = lo, j = hi;
        while (i <= j) {
            while (v[i] > pivot) i++;
            while (v[j] < pivot) j--;
            if (i <= j) {
                float t = v[i];
                v[i] = v[j];
                v[j] = t;
                i++;
                j--;
            }
        }
        if (want <= j) hi = j;
        else if (want >= i) lo = i;
        else return v[want];
    }
    return v[want];
}

/* candidates by value descending, lower index first on ties (a total order: reproducible) */
static int cmp_desc(const void *a, const void *b, void *vals) {
    int32_t ia = *(const int32_t *)a, ib = *(const int32_t *)b;
    float va = ((const float *)vals)[ia], vb = ((const float *)vals)[ib];
    if (va > vb) return -1;
    if (va < vb) return 1;
    return (ia > ib) - (ia < ib);
}

int32_t hc_sample_logits(const hc_sampler_params *p, uint64_t draw, const float *logits, int n,
                         int32_t *idx, float *val) {
    /* temperature 0 is greedy (transformers too); so is one so small that logits / T overflows */
    if (p->greedy || !isfinite(1.0f / p->temperature)) return argmax(logits, n);
    const float inv_t = 1.0f / p->temperature;
    for (int i = 0; i < n; i++) val[i] = logits[i] * inv_t;
    /* top-k: threshold at the k-th largest value; values equal to it survive */
    float thresh = -INFINITY;
    if (p->top_k > 0 && p->top_k < n) {
        float *tmp = (float *)idx; /* same size as val; reused as float scratch */
        memcpy(tmp, val, (size_t)n * sizeof(float));
        thresh = kth_largest(tmp, n, p->top_k);
    }
    int m = 0;
    for (int i = 0; i < n; i++)
        if (val[i] >= thresh && val[i] > -INFINITY) idx[m++] = i;
    if (m == 0) return argmax(logits, n);
    qsort_r(idx, (size_t)m, sizeof *idx, cmp_desc, val);
    /* softmax over the candidates, in descending order */
    const float mx = val[idx[0]];
    double total = 0;
    for (int i = 0; i < m; i++) total += exp((double)(val[idx[i]] - mx));
    if (!(total >= 1.0) || !isfinite(total) || !isfinite(mx)) return argmax(logits, n); /* inf/NaN */
    int keep = m;
    if (p->top_p < 1.0f) {
        /* transformers: ascending cumulative probability; remove while cum <= 1 - top_p */
        double cum = 0, limit = 1.0 - (double)p->top_p;
        keep = m;
        for (int i = m - 1; i > 0; i--) {
            cum += exp((double)(val[idx[i]] - mx)) / total;
            if (cum <= limit) keep = i;
            else break;
        }
    }
    double kept_total = 0;
    for (int i = 0; i < keep; i++) kept_total += exp((double)(val[idx[i]] - mx));
    double r = hc_sample_uniform(p->seed, draw) * kept_total, acc = 0;
    for (int i = 0; i < keep; i++) {
        acc += exp((double)(val[idx[i]] - mx));
        if (r < acc) return idx[i];
    }
    return idx[keep - 1];
}

int32_t hc_sampler_sample(hc_sampler *s, const float *logits) {
    return hc_sample_logits(&s->p, s->n_drawn++, logits, s->vocab, s->idx, s->val);
}
