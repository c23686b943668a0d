/* optim.c: flat parameter table, AdamW, cosine schedule, global-norm clipping (see optim.h). */
#include "optim.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

void hc_ptab_init(hc_ptab *t) { memset(t, 0, sizeof(*t)); }

void hc_ptab_free(hc_ptab *t) {
    free(t->params);
    free(t->w);
    free(t->g);
    free(t->m);
    free(t->v);
    memset(t, 0, sizeof(*t));
}

int hc_ptab_find(const hc_ptab *t, const char *name) {
    for (int i = 0; i < t->n; i++)
        if (strcmp(t->params[i].name, name) == 0) return i;
    return -1;
}

int hc_ptab_add(hc_ptab *t, const char *name, int ndim, const int64_t *shape, int stored_dtype,
                hc_errbuf *eb) {
    if (t->w) return hc_seterr(eb, HC_ERR_INVAL, "parameter %s: table already allocated", name);
    if (!name || !*name || strlen(name) >= HC_PTAB_NAME_MAX)
        return hc_seterr(eb, HC_ERR_INVAL, "parameter name empty or longer than %d bytes",
                         HC_PTAB_NAME_MAX - 1);
    if (ndim < 1 || ndim > HC_PTAB_MAX_DIMS)
        return hc_seterr(eb, HC_ERR_INVAL, "parameter %s: %d dimensions (1..%d)", name, ndim,
                         HC_PTAB_MAX_DIMS);
    if (hc_ptab_find(t, name) >= 0)
        return hc_seterr(eb, HC_ERR_INVAL, "parameter %s added twice", name);
    size_t numel = 1;
    for (int d = 0; d < ndim; d++) {
        if (shape[d] <= 0 || (uint64_t)shape[d] > (SIZE_MAX / 16) / numel)
            return hc_seterr(eb, HC_ERR_INVAL, "parameter %s: dimension %d is %lld", name, d,
                             (long long)shape[d]);
        numel *= (size_t)shape[d];
    }
    if (t->n == t->cap) {
        int nc = t->cap ? 2 * t->cap : 16;
        hc_param *p = realloc(t->params, sizeof(*p) * (size_t)nc);
        if (!p) return hc_seterr(eb, HC_ERR_NOMEM, "parameter table: out of memory");
        t->params = p;
        t->cap = nc;
    }
    hc_param *p = &t->params[t->n++];
    memset(p, 0, sizeof(*p));
    strcpy(p->name, name);
    p->offset = t->total;
    p->numel = numel;
    p->ndim = ndim;
    memcpy(p->shape, shape, sizeof(int64_t) * (size_t)ndim);
    p->stored_dtype = stored_dtype;
    t->total += numel;
    return HC_OK;
}

static float *zalloc_f32(size_t n) {
    size_t bytes = (n * sizeof(float) + 63) & ~(size_t)63;
    if (bytes == 0) bytes = 64;
    float *p = aligned_alloc(64, bytes);
    if (p) memset(p, 0, bytes);
    return p;
}

int hc_ptab_alloc(hc_ptab *t, hc_errbuf *eb) {
    if (t->w) return HC_OK;
    t->w = zalloc_f32(t->total);
    t->g = zalloc_f32(t->total);
    t->m = zalloc_f32(t->total);
    t->v = zalloc_f32(t->total);
    if (!t->w || !t->g || !t->m || !t->v) {
        free(t->w), free(t->g), free(t->m), free(t->v);
        t->w = t->g = t->m = t->v = NULL;
        return hc_seterr(eb, HC_ERR_NOMEM, "parameter table: cannot allocate 4 x %zu floats",
                         t->total);
    }
    return HC_OK;
}

void hc_ptab_shard(const hc_ptab *t, int r, int nranks, size_t *lo, size_t *hi) {
    size_t n = t->total, q = n / (size_t)nranks, rem = n % (size_t)nranks, ur = (size_t)r;
    *lo = ur * q + (ur < rem ? ur : rem);
    *hi = *lo + q + (ur < rem ? 1 : 0);
}

static uint64_t fnv(uint64_t h, const void *p, size_t n) {
    const unsigned char *b = p;
    for (size_t i = 0; i < n; i++) h = (h ^ b[i]) * 1099511628211ull;
    return h;
}

uint64_t hc_ptab_fingerprint(const hc_ptab *t) {
    uint64_t h = 14695981039346656037ull;
    for (int i = 0; i < t->n; i++) {
        const hc_param *p = &t->params[i];
        h = fnv(h, p->name, strlen(p->name) + 1);
        h = fnv(h, &p->ndim, sizeof(p->ndim));
        for (int d = 0; d < p->ndim; d++) {
            int64_t s = p->shape[d];
            h = fnv(h, &s, sizeof(s));
        }
    }
    return h;
}

hc_adamw_cfg hc_adamw_default(void) {
    hc_adamw_cfg c = {2e-5, 0.9, 0.999, 1e-8, 0.01};
    return c;
}

void hc_adamw_step_range(hc_ptab *t, const hc_adamw_cfg *c, double lr, int64_t step, size_t lo,
                         size_t hi) {
    /* torch computes these scalars as Python floats (double) and passes them to fp32 kernels. */
    double bc1 = 1.0 - pow(c->beta1, (double)step);
    double bc2 = 1.0 - pow(c->beta2, (double)step);
    const float decay = (float)(1.0 - lr * c->weight_decay);
    const float w1 = (float)(1.0 - c->beta1);
    const float b2 = (float)c->beta2, omb2 = (float)(1.0 - c->beta2);
    const float step_size = (float)(lr / bc1);
    const float bc2_sqrt = (float)sqrt(bc2);
    const float eps = (float)c->eps;
    float *w = t->w, *g = t->g, *m = t->m, *v = t->v;
    if (hi > t->total) hi = t->total;
    for (size_t i = lo; i < hi; i++) {
        float wi = w[i] * decay;
        float gi = g[i];
        float mi = m[i] + w1 * (gi - m[i]); /* torch lerp, weight < 0.5 branch */
        float vi = v[i] * b2 + omb2 * gi * gi;
        float denom = sqrtf(vi) / bc2_sqrt + eps;
        w[i] = wi + (-step_size) * (mi / denom);
        m[i] = mi;
        v[i] = vi;
    }
}

double hc_cosine_lr(double peak, int64_t step, double warmup, int64_t total) {
    double s = (double)step;
    if (s < warmup) return peak * s / fmax(1.0, warmup);
    double progress = (s - warmup) / fmax(1.0, (double)total - warmup);
    double f = 0.5 * (1.0 + cos(3.14159265358979323846 * 0.5 * 2.0 * progress));
    return peak * fmax(0.0, f);
}

double hc_grad_sumsq_range(const hc_ptab *t, size_t lo, size_t hi) {
    double s = 0;
    if (hi > t->total) hi = t->total;
    for (size_t i = lo; i < hi; i++) s += (double)t->g[i] * (double)t->g[i];
    return s;
}

void hc_grad_scale(hc_ptab *t, float s) {
    for (size_t i = 0; i < t->total; i++) t->g[i] *= s;
}

void hc_grad_zero(hc_ptab *t) { memset(t->g, 0, sizeof(float) * t->total); }

double hc_clip_grad_norm(hc_ptab *t, double max_norm) {
    double norm = sqrt(hc_grad_sumsq_range(t, 0, t->total));
    if (max_norm > 0) {
        float coef = (float)(max_norm / (norm + 1e-6));
        if (coef > 1.0f) coef = 1.0f;
        hc_grad_scale(t, coef);
    }
    return norm;
}
