/* backend_cpu.c: the CPU backend, the readable reference for every op.
 *
 * Compute is f32 with f32 accumulation. Weights may be F32, BF16 or F16; BF16/F16 are widened on
 * the fly (exact), so keeping a bf16 checkpoint in bf16 halves the memory traffic of decoding
 * without changing the math.
 *
 * matmul has two paths:
 *  - m <= HC_CPU_SMALLM_MAX rows (decode, one row per running sequence): our own register-tiled
 *    kernel (cpu_isa.h, "batched GEMV"), parallel over output columns, each weight tile read once
 *    for all m rows. Each output element is computed by the same instruction sequence whatever m
 *    is, so a sequence decoded inside a batch of up to HC_CPU_SMALLM_MAX gets bit-identical logits
 *    to the same sequence decoded alone.
 *  - larger m (prefill): oneDNN matmul (cpu_dnnl.h) when the build has it, else OpenBLAS sgemm
 *    (hc_backend_params.cpu_gemm picks), single-threaded, one call per pool task on its own range
 *    of output columns; in f32 compute BF16/F16 weights are widened a panel of rows at a time
 *    into the task's scratch buffer first. Single-threaded is OpenBLAS's process-wide setting:
 *    create sets it only when hc_backend_params.blas_single_thread says so (the default; see
 *    backend.h); oneDNN's is set per call (cpu_dnnl.h).
 * bf16 compute (hc_backend_params.compute): x is rounded to bf16 once per matmul (every m); with
 * bf16 weights on the oneDNN path, where this CPU has oneDNN's bf16 matmul (AVX-512-BF16, AMX:
 * hc_cpu_dnnl_has_bf16), the product is that matmul (no widening), otherwise
 * the f32 path runs on the rounded x (the same math: bf16 x bf16 products are exact in f32).
 * Everything else is parallelized over rows with the engine's thread pool.
 *
 * The small-M kernel is chosen once at creation by ISA level (cpu_isa.h): portable C (fixed
 * scalar order, the tests' reference), AVX2+FMA, or AVX-512F (also used for AVX512BF16 in f32
 * compute). Levels differ only in summation order; within one backend a row's result still does
 * not depend on m.
 */
#include <cblas.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#if defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
#define HC_HAVE_AVX2 1
#endif

#include "backend/backend.h"
#include "backend/cpu_dnnl.h"
#include "backend/cpu_isa.h"
#include "core/threadpool.h"

#define HC_CPU_PANEL_ROWS 256

typedef struct cpu_ctx {
    hc_pool *pool;
    hc_cpu_isa isa;    /* kernel level chosen at creation (cpu_isa.h), never AUTO */
    hc_cpu_gemm_fn gemm; /* the small-M matmul kernel for isa */
    float *gscratch;     /* its per-task scratch: n_threads * gscratch_cap */
    size_t gscratch_cap; /* floats per task */
    float *panel;      /* widened weight panels (one per task) for sgemm on BF16/F16 weights */
    size_t panel_cap;  /* floats */
    float *scores;     /* attention scratch: n_threads * scores_cap */
    size_t scores_cap; /* floats per thread */
    hc_compute compute;  /* F32 or BF16 (backend.h) */
    hc_cpu_gemm gemm_lib; /* prefill GEMM library, never AUTO */
    hc_cpu_dnnl *dnnl;    /* when gemm_lib is DNNL */
    void *xr;             /* bf16 compute: x rounded (m * k floats, or m * k bf16 for oneDNN) */
    size_t xr_cap;        /* bytes */
} cpu_ctx;

static cpu_ctx *CTX(hc_backend *be) { return be->ctx; }

/* ---- memory --------------------------------------------------------------------------------- */

static int cpu_alloc(hc_backend *be, void **out, size_t nbytes) {
    size_t n = (nbytes + 63) & ~(size_t)63;
    *out = aligned_alloc(64, n ? n : 64);
    return *out ? HC_OK : HC_ERR_NOMEM;
}
static void cpu_free(hc_backend *be, void *p) { free(p); }
static int cpu_copy(hc_backend *be, void *dst, const void *src, size_t nbytes) {
    if (nbytes) memmove(dst, src, nbytes);
    return HC_OK;
}
static int cpu_sync(hc_backend *be) { return HC_OK; }

/* ---- small helpers ---------------------------------------------------------------------------- */

static inline float load_w(const void *w, hc_dtype t, size_t i) {
    switch (t) {
    case HC_DTYPE_BF16: return hc_bf16_to_f32(((const uint16_t *)w)[i]);
    case HC_DTYPE_F16: return hc_f16_to_f32(((const uint16_t *)w)[i]);
    default: return ((const float *)w)[i];
    }
}

/* Splits [0, n) into chunks so that each pool task gets a contiguous range. */
static inline void task_range(int64_t n, int n_tasks, int task, int64_t *lo, int64_t *hi) {
    int64_t per = (n + n_tasks - 1) / n_tasks;
    *lo = per * task;
    *hi = *lo + per < n ? *lo + per : n;
    if (*lo > n) *lo = n;
}
static int n_tasks_for(hc_backend *be, int64_t work, int64_t min_per_task) {
    int nt = hc_pool_size(CTX(be)->pool);
    int64_t want = work / (min_per_task > 0 ? min_per_task : 1);
    if (want < 1) want = 1;
    return want < nt ? (int)want : nt;
}

/* ---- matmul ----------------------------------------------------------------------------------- */

#ifdef HC_HAVE_AVX2
static inline float hsum256(__m256 v) {
    __m128 lo = _mm256_castps256_ps128(v), hi = _mm256_extractf128_ps(v, 1);
    lo = _mm_add_ps(lo, hi);
    lo = _mm_add_ps(lo, _mm_movehl_ps(lo, lo));
    lo = _mm_add_ss(lo, _mm_movehdup_ps(lo));
    return _mm_cvtss_f32(lo);
}
static inline __m256 load8_w(const void *w, hc_dtype t, size_t i) {
    if (t == HC_DTYPE_BF16) {
        __m128i h = _mm_loadu_si128((const __m128i *)((const uint16_t *)w + i));
        return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
    }
    if (t == HC_DTYPE_F16)
        return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)((const uint16_t *)w + i)));
    return _mm256_loadu_ps((const float *)w + i);
}
#endif

/* dot of k floats x with k weights (any dtype) starting at element offset w_off. Fixed summation
 * order: 4 interleaved 8-lane accumulators, then a scalar tail. */
static float dot_xw(const float *x, const void *w, hc_dtype t, size_t w_off, int64_t k) {
    int64_t i = 0;
    float sum = 0.0f;
#ifdef HC_HAVE_AVX2
    __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
    for (; i + 32 <= k; i += 32) {
        a0 = _mm256_fmadd_ps(_mm256_loadu_ps(x + i), load8_w(w, t, w_off + i), a0);
        a1 = _mm256_fmadd_ps(_mm256_loadu_ps(x + i + 8), load8_w(w, t, w_off + i + 8), a1);
        a2 = _mm256_fmadd_ps(_mm256_loadu_ps(x + i + 16), load8_w(w, t, w_off + i + 16), a2);
        a3 = _mm256_fmadd_ps(_mm256_loadu_ps(x + i + 24), load8_w(w, t, w_off + i + 24), a3);
    }
    for (; i + 8 <= k; i += 8) a0 = _mm256_fmadd_ps(_mm256_loadu_ps(x + i), load8_w(w, t, w_off + i), a0);
    sum = hsum256(_mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3)));
#endif
    for (; i < k; i++) sum += x[i] * load_w(w, t, w_off + (size_t)i);
    return sum;
}

typedef struct gemv_args {
    float *out;
    const float *x;
    const void *w;
    hc_dtype wt;
    int64_t m, n, k;
    int n_tasks;
    hc_cpu_gemm_fn gemm;
    float *scratch; /* n_tasks * scratch_cap */
    size_t scratch_cap;
} gemv_args;

/* Each task owns a contiguous range of output columns, a multiple of 4 (the widest weight tile)
 * except the last, so tiles never straddle two tasks. */
static void gemv_task(void *p, int task) {
    const gemv_args *a = p;
    int64_t per = (a->n + a->n_tasks - 1) / a->n_tasks;
    per = (per + 3) & ~(int64_t)3;
    int64_t lo = per * task, hi = lo + per < a->n ? lo + per : a->n;
    if (lo >= hi) return;
    a->gemm(a->out, a->n, a->x, a->m, a->w, a->wt, lo, hi, a->k,
            a->scratch + (size_t)task * a->scratch_cap);
}

/* Prefill GEMM: each pool task owns a contiguous range of output columns (weight rows) and runs
 * a single-threaded oneDNN matmul or OpenBLAS sgemm on it; F32 weights in one call, BF16/F16 ones
 * (f32 compute) widened one panel of rows at a time into the task's own scratch, which stays in
 * L2 while the library sweeps x over it. x16: x as bf16 (bf16 compute with bf16 weights on
 * oneDNN; then the weights go in as they are). Keeping the libraries single-threaded means their
 * threads never compete with the pool's. */
typedef struct gemm_args {
    float *out;
    const float *x;      /* f32 x (already rounded to bf16 values in bf16 compute) */
    const uint16_t *x16; /* non-NULL: bf16 x for oneDNN's bf16 matmul on bf16 weights */
    const void *w;
    hc_dtype wt;
    int64_t m, n, k;
    float *panels; /* n_tasks * HC_CPU_PANEL_ROWS * k floats */
    int n_tasks;
    hc_cpu_dnnl *dnnl; /* NULL: OpenBLAS */
    int *failed;       /* set by a task whose bf16 x bf16 call failed (no fallback for it) */
} gemm_args;

/* out[:, j0 .. j0 + nb) from f32 weight rows w32 (nb x k) */
static void gemm_f32(const gemm_args *a, int task, const float *w32, int64_t j0, int64_t nb) {
    if (a->dnnl && hc_cpu_dnnl_gemm(a->dnnl, task, 0, a->out + j0, a->n, a->x, a->m, w32, nb,
                                    a->k) == HC_OK)
        return;
    /* OpenBLAS, also where oneDNN refused the shape */
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)a->m, (int)nb, (int)a->k, 1.0f, a->x,
                (int)a->k, w32, (int)a->k, 0.0f, a->out + j0, (int)a->n);
}

static void gemm_task(void *p, int task) {
    const gemm_args *a = p;
    int64_t lo, hi;
    task_range(a->n, a->n_tasks, task, &lo, &hi);
    if (lo >= hi) return;
    const uint16_t *w16 = a->w;
    if (a->x16) {
        if (hc_cpu_dnnl_gemm(a->dnnl, task, 1, a->out + lo, a->n, a->x16, a->m,
                             w16 + (size_t)(lo * a->k), hi - lo, a->k) != HC_OK)
            __atomic_store_n(a->failed, 1, __ATOMIC_RELAXED);
        return;
    }
    if (a->wt == HC_DTYPE_F32) {
        gemm_f32(a, task, (const float *)a->w + (size_t)(lo * a->k), lo, hi - lo);
        return;
    }
    float *panel = a->panels + (size_t)task * HC_CPU_PANEL_ROWS * (size_t)a->k;
    for (int64_t j0 = lo; j0 < hi; j0 += HC_CPU_PANEL_ROWS) {
        int64_t nb = hi - j0 < HC_CPU_PANEL_ROWS ? hi - j0 : HC_CPU_PANEL_ROWS;
        size_t off = (size_t)(j0 * a->k), cnt = (size_t)(nb * a->k);
        if (a->wt == HC_DTYPE_BF16)
            for (size_t i = 0; i < cnt; i++) panel[i] = hc_bf16_to_f32(w16[off + i]);
        else
            for (size_t i = 0; i < cnt; i++) panel[i] = hc_f16_to_f32(w16[off + i]);
        gemm_f32(a, task, panel, j0, nb);
    }
}

/* bf16 compute: x rounded to bf16 (round to nearest even), as bf16 bits or as f32 values */
typedef struct round_args {
    const float *x;
    void *dst;
    int to_bits;
    int64_t n;
    int n_tasks;
} round_args;

static void round_task(void *p, int task) {
    const round_args *r = p;
    int64_t lo, hi;
    task_range(r->n, r->n_tasks, task, &lo, &hi);
    if (r->to_bits)
        for (int64_t i = lo; i < hi; i++) ((uint16_t *)r->dst)[i] = hc_f32_to_bf16(r->x[i]);
    else
        for (int64_t i = lo; i < hi; i++)
            ((float *)r->dst)[i] = hc_bf16_to_f32(hc_f32_to_bf16(r->x[i]));
}

static int grow(void **buf, size_t *cap, size_t bytes) {
    if (*cap >= bytes) return HC_OK;
    free(*buf);
    *buf = aligned_alloc(64, (bytes + 63) & ~(size_t)63);
    *cap = *buf ? bytes : 0;
    return *buf ? HC_OK : HC_ERR_NOMEM;
}

static int cpu_matmul(hc_backend *be, hc_tensor *out, const hc_tensor *x, const hc_tensor *w) {
    int64_t m = hc_tensor_rows(x), k = hc_tensor_cols(x), n = hc_tensor_rows(w);
    if (hc_tensor_cols(w) != k || hc_tensor_rows(out) != m || hc_tensor_cols(out) != n)
        return HC_ERR_MISMATCH;
    if (x->dtype != HC_DTYPE_F32 || out->dtype != HC_DTYPE_F32 || w->dtype == HC_DTYPE_I32)
        return HC_ERR_UNSUPPORTED;
    cpu_ctx *c = CTX(be);
    const float *xf = x->data;
    const uint16_t *x16 = NULL;
    if (c->compute == HC_COMPUTE_BF16 && m * k > 0) {
        /* bf16 bits for oneDNN's bf16 x bf16 matmul, else bf16-rounded f32 for the f32 kernels */
        int bits = m > HC_CPU_SMALLM_MAX && hc_cpu_dnnl_has_bf16(c->dnnl) &&
                   w->dtype == HC_DTYPE_BF16;
        if (grow(&c->xr, &c->xr_cap, (size_t)(m * k) * (bits ? 2 : 4))) return HC_ERR_NOMEM;
        round_args r = {x->data, c->xr, bits, m * k, n_tasks_for(be, m * k, 1 << 15)};
        hc_pool_run(c->pool, r.n_tasks, round_task, &r);
        if (bits) x16 = c->xr;
        else xf = c->xr;
    }
    if (m <= HC_CPU_SMALLM_MAX) {
        size_t per = hc_cpu_gemm_scratch_floats(k);
        if (c->gscratch_cap < per) {
            free(c->gscratch);
            size_t bytes = per * 4 * (size_t)hc_pool_size(c->pool);
            c->gscratch = aligned_alloc(64, (bytes + 63) & ~(size_t)63);
            c->gscratch_cap = c->gscratch ? per : 0;
            if (!c->gscratch) return HC_ERR_NOMEM;
        }
        gemv_args a = {out->data, xf, w->data, w->dtype, m, n, k, 0, c->gemm, c->gscratch,
                       c->gscratch_cap};
        a.n_tasks = n_tasks_for(be, n * m * k, 1 << 15);
        hc_pool_run(c->pool, a.n_tasks, gemv_task, &a);
        return HC_OK;
    }
    int failed = 0;
    gemm_args a = {out->data, xf, x16, w->data, w->dtype, m, n, k, NULL, 0, c->dnnl, &failed};
    /* at least 64 output columns per task so each library call has some width */
    a.n_tasks = n_tasks_for(be, n, 64);
    if (w->dtype != HC_DTYPE_F32 && !x16) {
        size_t need = (size_t)a.n_tasks * HC_CPU_PANEL_ROWS * (size_t)k;
        if (c->panel_cap < need) {
            free(c->panel);
            c->panel = aligned_alloc(64, (need * 4 + 63) & ~(size_t)63);
            c->panel_cap = c->panel ? need : 0;
            if (!c->panel) return HC_ERR_NOMEM;
        }
        a.panels = c->panel;
    }
    hc_pool_run(c->pool, a.n_tasks, gemm_task, &a);
    return failed ? HC_ERR_UNSUPPORTED : HC_OK;
}

/* ---- rmsnorm ------------------------------------------------------------------------------------ */

typedef struct rows_args {
    float *out;
    const float *x;
    const float *w;
    int64_t rows, cols;
    float eps;
    int n_tasks;
} rows_args;

static void rmsnorm_task(void *p, int task) {
    const rows_args *a = p;
    int64_t lo, hi;
    task_range(a->rows, a->n_tasks, task, &lo, &hi);
    for (int64_t r = lo; r < hi; r++) {
        const float *xr = a->x + r * a->cols;
        float *o = a->out + r * a->cols;
        float ss = dot_xw(xr, xr, HC_DTYPE_F32, 0, a->cols);
        float inv = 1.0f / sqrtf(ss / (float)a->cols + a->eps);
        for (int64_t i = 0; i < a->cols; i++) o[i] = a->w[i] * (xr[i] * inv);
    }
}

static int cpu_rmsnorm(hc_backend *be, hc_tensor *out, const hc_tensor *x, const hc_tensor *w,
                       float eps) {
    int64_t rows = hc_tensor_rows(x), cols = hc_tensor_cols(x);
    if (hc_tensor_nelem(w) != cols || hc_tensor_nelem(out) != rows * cols) return HC_ERR_MISMATCH;
    if (w->dtype != HC_DTYPE_F32 || x->dtype != HC_DTYPE_F32) return HC_ERR_UNSUPPORTED;
    rows_args a = {out->data, x->data, w->data, rows, cols, eps, 0};
    a.n_tasks = n_tasks_for(be, rows * cols, 1 << 14);
    hc_pool_run(CTX(be)->pool, a.n_tasks, rmsnorm_task, &a);
    return HC_OK;
}

/* ---- rope --------------------------------------------------------------------------------------- */

typedef struct rope_args {
    float *x;
    const int32_t *pos;
    int64_t n_tokens, n_heads, head_dim;
    float *inv_freq; /* (head_dim / 2) */
    int n_tasks;
} rope_args;

static void rope_task(void *p, int task) {
    const rope_args *a = p;
    int64_t lo, hi, half = a->head_dim / 2;
    task_range(a->n_tokens, a->n_tasks, task, &lo, &hi);
    for (int64_t t = lo; t < hi; t++) {
        float pos = (float)a->pos[t];
        for (int64_t i = 0; i < half; i++) {
            /* as transformers: angle = pos * inv_freq in f32, then cos/sin in f32 */
            float ang = pos * a->inv_freq[i];
            float c = cosf(ang), s = sinf(ang);
            for (int64_t h = 0; h < a->n_heads; h++) {
                float *v = a->x + (t * a->n_heads + h) * a->head_dim;
                float x1 = v[i], x2 = v[i + half];
                v[i] = x1 * c - x2 * s;
                v[i + half] = x2 * c + x1 * s;
            }
        }
    }
}

static int cpu_rope(hc_backend *be, hc_tensor *x, const int32_t *pos, double theta) {
    if (x->n_dims != 3 || (x->ne[2] & 1) || x->dtype != HC_DTYPE_F32) return HC_ERR_MISMATCH;
    int64_t hd = x->ne[2];
    float inv_freq[1024];
    if (hd / 2 > 1024) return HC_ERR_UNSUPPORTED;
    for (int64_t i = 0; i < hd / 2; i++)
        inv_freq[i] = 1.0f / powf((float)theta, (float)(2 * i) / (float)hd);
    rope_args a = {x->data, pos, x->ne[0], x->ne[1], hd, inv_freq, 0};
    a.n_tasks = n_tasks_for(be, x->ne[0] * x->ne[1] * hd, 1 << 13);
    hc_pool_run(CTX(be)->pool, a.n_tasks, rope_task, &a);
    return HC_OK;
}

/* ---- attention ---------------------------------------------------------------------------------- */

typedef struct attn_task_args {
    float *out;
    const float *q, *k, *v;
    const hc_attn_args *a;
    float *scores; /* n_tasks * scores_cap */
    size_t scores_cap;
    int n_tasks;
} attn_task_args;

static void attn_task(void *p, int task) {
    const attn_task_args *t = p;
    const hc_attn_args *a = t->a;
    const int hd = a->head_dim, group = a->n_heads / a->n_kv_heads;
    const int64_t kv_dim = (int64_t)a->n_kv_heads * hd, q_dim = (int64_t)a->n_heads * hd;
    float *sc = t->scores + (size_t)task * t->scores_cap;
    int64_t lo, hi;
    task_range((int64_t)a->n_tokens * a->n_heads, t->n_tasks, task, &lo, &hi);
    for (int64_t th = lo; th < hi; th++) {
        int64_t tok = th / a->n_heads;
        int h = (int)(th % a->n_heads), kvh = h / group;
        const float *q = t->q + tok * q_dim + (int64_t)h * hd;
        const int32_t *table = a->tables + a->table_off[tok];
        int n = a->kv_len[tok];
        float mx = -INFINITY;
        for (int j = 0; j < n; j++) {
            int64_t row = (int64_t)table[j / a->block_size] * a->block_size + j % a->block_size;
            const float *k = t->k + row * kv_dim + (int64_t)kvh * hd;
            float s = dot_xw(q, k, HC_DTYPE_F32, 0, hd) * a->scale;
            sc[j] = s;
            if (s > mx) mx = s;
        }
        float sum = 0.0f;
        for (int j = 0; j < n; j++) {
            sc[j] = expf(sc[j] - mx);
            sum += sc[j];
        }
        float inv = 1.0f / sum;
        float *o = t->out + tok * q_dim + (int64_t)h * hd;
        for (int d = 0; d < hd; d++) o[d] = 0.0f;
        for (int j = 0; j < n; j++) {
            int64_t row = (int64_t)table[j / a->block_size] * a->block_size + j % a->block_size;
            const float *v = t->v + row * kv_dim + (int64_t)kvh * hd;
            float pj = sc[j] * inv;
            for (int d = 0; d < hd; d++) o[d] += pj * v[d];
        }
    }
}

static int cpu_attention(hc_backend *be, hc_tensor *out, const hc_tensor *q, const hc_tensor *k_pool,
                         const hc_tensor *v_pool, const hc_attn_args *a) {
    if (a->n_heads <= 0 || a->n_kv_heads <= 0 || a->n_heads % a->n_kv_heads || a->block_size < 1)
        return HC_ERR_INVAL;
    int64_t q_dim = (int64_t)a->n_heads * a->head_dim, kv_dim = (int64_t)a->n_kv_heads * a->head_dim;
    if (hc_tensor_nelem(q) != a->n_tokens * q_dim || hc_tensor_nelem(out) != a->n_tokens * q_dim)
        return HC_ERR_MISMATCH;
    int64_t pool_rows = hc_tensor_nelem(k_pool) / kv_dim;
    int max_len = 0;
    for (int t = 0; t < a->n_tokens; t++) {
        int n = a->kv_len[t];
        if (n < 1) return HC_ERR_INVAL;
        int64_t nb = (n + a->block_size - 1) / a->block_size;
        if (a->table_off[t] < 0 || a->table_off[t] + nb > a->n_table) return HC_ERR_RANGE;
        for (int64_t b = 0; b < nb; b++) {
            int64_t blk = a->tables[a->table_off[t] + b];
            if (blk < 0 || (blk + 1) * a->block_size > pool_rows) return HC_ERR_RANGE;
        }
        if (n > max_len) max_len = n;
    }
    cpu_ctx *c = CTX(be);
    int nt = n_tasks_for(be, (int64_t)a->n_tokens * a->n_heads * max_len * a->head_dim, 1 << 12);
    if (c->scores_cap < (size_t)max_len) {
        free(c->scores);
        size_t per = max_len > 1024 ? (size_t)max_len : 1024;
        c->scores = malloc(per * (size_t)hc_pool_size(c->pool) * sizeof(float));
        c->scores_cap = c->scores ? per : 0;
        if (!c->scores) return HC_ERR_NOMEM;
    }
    attn_task_args t = {out->data, q->data, k_pool->data, v_pool->data, a, c->scores, c->scores_cap, nt};
    hc_pool_run(c->pool, nt, attn_task, &t);
    return HC_OK;
}

static int cpu_kv_store(hc_backend *be, hc_tensor *k_pool, hc_tensor *v_pool, const hc_tensor *k,
                        const hc_tensor *v, const int32_t *rows, int n_tokens) {
    int64_t dim = hc_tensor_cols(k);
    int64_t pool_rows = hc_tensor_nelem(k_pool) / dim;
    if (hc_tensor_nelem(k) < n_tokens * dim || hc_tensor_nelem(v_pool) != hc_tensor_nelem(k_pool))
        return HC_ERR_MISMATCH;
    for (int t = 0; t < n_tokens; t++) {
        if (rows[t] < 0 || rows[t] >= pool_rows) return HC_ERR_RANGE;
        memcpy((float *)k_pool->data + (int64_t)rows[t] * dim, (const float *)k->data + t * dim,
               (size_t)dim * 4);
        memcpy((float *)v_pool->data + (int64_t)rows[t] * dim, (const float *)v->data + t * dim,
               (size_t)dim * 4);
    }
    return HC_OK;
}

/* ---- elementwise -------------------------------------------------------------------------------- */

typedef struct ew_args {
    float *out;
    const float *a, *b;
    int64_t n;
    int n_tasks;
} ew_args;

static void swiglu_task(void *p, int task) {
    const ew_args *e = p;
    int64_t lo, hi;
    task_range(e->n, e->n_tasks, task, &lo, &hi);
    for (int64_t i = lo; i < hi; i++) {
        float g = e->a[i];
        e->out[i] = g / (1.0f + expf(-g)) * e->b[i];
    }
}
static void add_task(void *p, int task) {
    const ew_args *e = p;
    int64_t lo, hi;
    task_range(e->n, e->n_tasks, task, &lo, &hi);
    for (int64_t i = lo; i < hi; i++) e->out[i] += e->a[i];
}

static int cpu_swiglu(hc_backend *be, hc_tensor *out, const hc_tensor *gate, const hc_tensor *up) {
    int64_t n = hc_tensor_nelem(gate);
    if (hc_tensor_nelem(up) != n || hc_tensor_nelem(out) != n) return HC_ERR_MISMATCH;
    ew_args e = {out->data, gate->data, up->data, n, n_tasks_for(be, n, 1 << 14)};
    hc_pool_run(CTX(be)->pool, e.n_tasks, swiglu_task, &e);
    return HC_OK;
}

static int cpu_add(hc_backend *be, hc_tensor *x, const hc_tensor *y) {
    int64_t n = hc_tensor_nelem(x);
    if (hc_tensor_nelem(y) != n) return HC_ERR_MISMATCH;
    ew_args e = {x->data, y->data, NULL, n, n_tasks_for(be, n, 1 << 15)};
    hc_pool_run(CTX(be)->pool, e.n_tasks, add_task, &e);
    return HC_OK;
}

static int cpu_embed(hc_backend *be, hc_tensor *out, const hc_tensor *table, const int32_t *ids) {
    int64_t n = hc_tensor_rows(out), dim = hc_tensor_cols(out), vocab = hc_tensor_rows(table);
    if (hc_tensor_cols(table) != dim) return HC_ERR_MISMATCH;
    for (int64_t t = 0; t < n; t++) {
        if (ids[t] < 0 || ids[t] >= vocab) return HC_ERR_RANGE;
        int rc = hc_convert_to_f32((float *)out->data + t * dim,
                                   (const char *)table->data +
                                       (size_t)ids[t] * (size_t)dim * hc_dtype_size(table->dtype),
                                   table->dtype, (size_t)dim);
        if (rc) return rc;
    }
    return HC_OK;
}

static int cpu_get_rows(hc_backend *be, hc_tensor *out, const hc_tensor *src, const int32_t *idx) {
    int64_t n = hc_tensor_rows(out), dim = hc_tensor_cols(out), rows = hc_tensor_rows(src);
    if (hc_tensor_cols(src) != dim) return HC_ERR_MISMATCH;
    for (int64_t i = 0; i < n; i++) {
        if (idx[i] < 0 || idx[i] >= rows) return HC_ERR_RANGE;
        memcpy((float *)out->data + i * dim, (const float *)src->data + (int64_t)idx[i] * dim,
               (size_t)dim * 4);
    }
    return HC_OK;
}

static int cpu_set_rows(hc_backend *be, hc_tensor *dst, const float *src, const int32_t *idx, int n) {
    int64_t dim = hc_tensor_cols(dst), rows = hc_tensor_rows(dst);
    for (int i = 0; i < n; i++) {
        if (idx[i] < 0 || idx[i] >= rows) return HC_ERR_RANGE;
        memcpy((float *)dst->data + (int64_t)idx[i] * dim, src + (int64_t)i * dim, (size_t)dim * 4);
    }
    return HC_OK;
}

static void cpu_destroy(hc_backend *be) {
    cpu_ctx *c = CTX(be);
    hc_pool_free(c->pool);
    free(c->panel);
    free(c->gscratch);
    free(c->scores);
    free(c->xr);
    hc_cpu_dnnl_free(c->dnnl);
    free(c);
    free(be);
}

static const hc_backend_i cpu_iface = {
    .name = "cpu",
    .destroy = cpu_destroy,
    .alloc = cpu_alloc,
    .free = cpu_free,
    .upload = cpu_copy,
    .download = cpu_copy,
    .synchronize = cpu_sync,
    .matmul = cpu_matmul,
    .rmsnorm = cpu_rmsnorm,
    .rope = cpu_rope,
    .attention = cpu_attention,
    .kv_store = cpu_kv_store,
    .swiglu = cpu_swiglu,
    .add = cpu_add,
    .embed = cpu_embed,
    .get_rows = cpu_get_rows,
    .set_rows = cpu_set_rows,
};

int hc_backend_cpu_create_ex(hc_backend **out, const hc_backend_params *p) {
    *out = NULL;
    hc_backend_params defp = hc_backend_default_params();
    if (!p) p = &defp;
    hc_cpu_isa isa = (hc_cpu_isa)p->cpu_isa;
    if ((int)isa < 0 || isa >= HC_CPU_ISA_COUNT) return HC_ERR_INVAL;
    if (p->compute < 0 || p->compute >= HC_COMPUTE_COUNT || p->cpu_gemm < 0 ||
        p->cpu_gemm >= HC_CPU_GEMM_COUNT)
        return HC_ERR_INVAL;
    if (!hc_cpu_isa_supported(isa) || !hc_cpu_gemm_built(p->cpu_gemm)) return HC_ERR_UNSUPPORTED;
    hc_cpu_gemm lib = (hc_cpu_gemm)p->cpu_gemm;
    if (lib == HC_CPU_GEMM_AUTO) lib = hc_cpu_dnnl_built() ? HC_CPU_GEMM_DNNL : HC_CPU_GEMM_OPENBLAS;
    if (isa == HC_CPU_ISA_AUTO) isa = hc_cpu_isa_detect();
    int n_threads = p->n_threads;
    if (n_threads <= 0) {
        long n = sysconf(_SC_NPROCESSORS_ONLN);
        n_threads = n > 0 ? (int)n : 1;
    }
    hc_backend *be = calloc(1, sizeof *be);
    cpu_ctx *c = calloc(1, sizeof *c);
    if (!be || !c || hc_pool_create(&c->pool, n_threads) != HC_OK) {
        free(be);
        free(c);
        return HC_ERR_NOMEM;
    }
    /* Parallelism comes from the pool: each task calls sgemm on its own columns, and wants it
     * single-threaded. OpenBLAS's thread count is process-wide; who sets it is the caller's
     * explicit choice (hc_backend_params.blas_single_thread, backend.h). */
    if (p->blas_single_thread) openblas_set_num_threads(1);
    if (lib == HC_CPU_GEMM_DNNL) {
        int rc = hc_cpu_dnnl_create(&c->dnnl, n_threads);
        if (rc && p->cpu_gemm == HC_CPU_GEMM_AUTO) lib = HC_CPU_GEMM_OPENBLAS; /* auto: fall back */
        else if (rc) {
            hc_pool_free(c->pool);
            free(be);
            free(c);
            return rc;
        }
    }
    c->isa = isa;
    c->gemm = hc_cpu_gemm_for(isa);
    c->compute = (hc_compute)p->compute;
    c->gemm_lib = lib;
    be->iface = &cpu_iface;
    be->ctx = c;
    be->n_threads = n_threads;
    *out = be;
    return HC_OK;
}

int hc_backend_cpu_create(hc_backend **out, int n_threads) {
    hc_backend_params p = hc_backend_default_params();
    p.n_threads = n_threads;
    return hc_backend_cpu_create_ex(out, &p);
}

int hc_backend_cpu_isa(const hc_backend *be) {
    return be && be->iface == &cpu_iface ? (int)((const cpu_ctx *)be->ctx)->isa : -1;
}

int hc_backend_cpu_compute(const hc_backend *be) {
    return be && be->iface == &cpu_iface ? (int)((const cpu_ctx *)be->ctx)->compute : -1;
}

int hc_backend_cpu_gemm(const hc_backend *be) {
    return be && be->iface == &cpu_iface ? (int)((const cpu_ctx *)be->ctx)->gemm_lib : -1;
}

static const char *const k_compute_names[HC_COMPUTE_COUNT] = {"f32", "bf16"};
static const char *const k_gemm_names[HC_CPU_GEMM_COUNT] = {"auto", "openblas", "onednn"};

const char *hc_compute_name(int compute) {
    return compute >= 0 && compute < HC_COMPUTE_COUNT ? k_compute_names[compute] : "?";
}

int hc_compute_parse(const char *name, hc_compute *out) {
    for (int i = 0; name && i < HC_COMPUTE_COUNT; i++)
        if (!strcmp(name, k_compute_names[i])) {
            *out = (hc_compute)i;
            return HC_OK;
        }
    return HC_ERR_INVAL;
}

const char *hc_cpu_gemm_name(int g) {
    return g >= 0 && g < HC_CPU_GEMM_COUNT ? k_gemm_names[g] : "?";
}

int hc_cpu_gemm_built(int g) {
    if (g == HC_CPU_GEMM_AUTO || g == HC_CPU_GEMM_OPENBLAS) return 1;
    return g == HC_CPU_GEMM_DNNL ? hc_cpu_dnnl_built() : 0;
}
