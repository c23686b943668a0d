/* bench_gemm.c: prefill GEMM throughput on the CPU (issue 13 item 2), not a test.
 *
 * Times out (m, n) = x (m, k) . w (n, k)^T, f32, on the prefill shapes of the bench models
 * (n x k = 2048x768, 768x2048, 5632x2048, 2048x5632; m = 128..1024), with T threads, for:
 *   openblas, onednn  the CPU backend's matmul (T pool tasks, one single-threaded library call
 *            each on its own columns) with hc_backend_params.cpu_gemm OpenBLAS / oneDNN, f32
 *            compute, f32 and bf16 weights ("f32w", "bf16w");
 *   onednn bf16c  the same with compute bf16 (bf16 weights: oneDNN's bf16 x bf16 -> f32 matmul);
 *   dnnl-omp oneDNN matmul called directly, the whole product from the calling thread with T
 *            OpenMP threads, f32 and bf16 (src and weights bf16);
 *   blis     BLIS bli_sgemm with T threads (built where blis.h is found; libblis.so.4 is dlopen'ed
 *            with RTLD_LOCAL so that its cblas_sgemm never replaces OpenBLAS's in the backend);
 * and prints GFLOP/s and % of the fp32 FMA peak measured by an FMA loop on T threads (AVX-512 and
 * AVX2). Variants run interleaved, `--rounds R` times, each round with its own peak measurement (the
 * machine may be shared: a busy neighbour lowers both); the table shows medians of the rounds and
 * the % of the median peak of the same rounds.
 *
 *   bench_gemm [--threads T] [--rounds R] [--m 128,256,512,1024]
 */
#include "backend/backend.h"

#include <immintrin.h>
#include <omp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#ifdef HC_HAVE_DNNL
#include <oneapi/dnnl/dnnl.h>
#endif
#ifdef HC_BENCH_BLIS
#include <blis.h>
#include <dlfcn.h>
static __typeof__(bli_sgemm) *p_bli_sgemm;
static __typeof__(bli_thread_set_num_threads) *p_bli_threads;
#endif

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* ---- FMA peak ----------------------------------------------------------------------------------- */

#define PEAK_ITERS 4000000L
/* ten independent FMA chains (4-cycle latency, 2 ports: 8 in flight keep both busy) */
#define FMA10(T, FMA, SET)                                                                         \
    T a0 = SET(0.f), a1 = SET(1.f), a2 = SET(2.f), a3 = SET(3.f), a4 = SET(4.f), a5 = SET(5.f),    \
      a6 = SET(6.f), a7 = SET(7.f), a8 = SET(8.f), a9 = SET(9.f), b = SET(0.999999f),            \
      c = SET(1e-7f);                                                                              \
    for (long it = 0; it < PEAK_ITERS; it++) {                                                     \
        a0 = FMA(a0, b, c), a1 = FMA(a1, b, c), a2 = FMA(a2, b, c), a3 = FMA(a3, b, c);            \
        a4 = FMA(a4, b, c), a5 = FMA(a5, b, c), a6 = FMA(a6, b, c), a7 = FMA(a7, b, c);            \
        a8 = FMA(a8, b, c), a9 = FMA(a9, b, c);                                                    \
    }                                                                                              \
    T s = a0 + a1 + a2 + a3 + a4 + a5 + a6 + a7 + a8 + a9
__attribute__((target("avx512f"))) static double fma512(void) {
    FMA10(__m512, _mm512_fmadd_ps, _mm512_set1_ps);
    return _mm512_reduce_add_ps(s);
}
__attribute__((target("avx2,fma"))) static double fma256(void) {
    FMA10(__m256, _mm256_fmadd_ps, _mm256_set1_ps);
    float t[8];
    _mm256_storeu_ps(t, s);
    return t[0] + t[7];
}
static volatile double g_sink;
static void *peak_thread(void *arg) {
    g_sink += *(int *)arg ? fma512() : fma256();
    return NULL;
}
/* GFLOP/s of T threads running independent FMA chains (10 accumulators each). */
static double fma_peak(int n_threads, int avx512) {
    pthread_t th[64];
    double t0 = now_s();
    for (int i = 0; i < n_threads; i++) pthread_create(&th[i], NULL, peak_thread, &avx512);
    for (int i = 0; i < n_threads; i++) pthread_join(th[i], NULL);
    double dt = now_s() - t0;
    return (double)n_threads * PEAK_ITERS * 10 * (avx512 ? 16 : 8) * 2 / dt / 1e9;
}

/* ---- variants ----------------------------------------------------------------------------------- */

typedef struct problem {
    int m, n, k;
    float *x, *w, *out; /* f32 */
    uint16_t *wb;       /* bf16 copy of w */
} problem;

static hc_backend *g_be[3]; /* openblas f32, onednn f32, onednn bf16 compute */
static int g_threads = 2;

static double run_backend(problem *p, int which, int bf16w) {
    hc_backend *be = g_be[which];
    hc_tensor x = {0}, w = {0}, o = {0};
    x.dtype = HC_DTYPE_F32, x.n_dims = 2, x.ne[0] = p->m, x.ne[1] = p->k, x.data = p->x;
    w.dtype = bf16w ? HC_DTYPE_BF16 : HC_DTYPE_F32, w.n_dims = 2, w.ne[0] = p->n, w.ne[1] = p->k;
    w.data = bf16w ? (void *)p->wb : (void *)p->w;
    o.dtype = HC_DTYPE_F32, o.n_dims = 2, o.ne[0] = p->m, o.ne[1] = p->n, o.data = p->out;
    for (int i = 2; i < HC_MAX_DIMS; i++) x.ne[i] = w.ne[i] = o.ne[i] = 1;
    x.backend = w.backend = o.backend = be;
    be->iface->matmul(be, &o, &x, &w);
    int it = 0;
    double t0 = now_s(), dt;
    do {
        be->iface->matmul(be, &o, &x, &w);
        it++;
    } while ((dt = now_s() - t0) < 0.3);
    return dt / it;
}

#ifdef HC_HAVE_DNNL
static dnnl_engine_t g_eng;
#define DN(call)                                                                                   \
    do {                                                                                           \
        if ((call) != dnnl_success) {                                                              \
            fprintf(stderr, "oneDNN call failed: %s\n", #call);                                    \
            exit(1);                                                                               \
        }                                                                                          \
    } while (0)

/* a matmul primitive for columns [j0, j0 + nb) of out: src (m, k) f32, weights rows j0.. as
 * (k, nb) with strides (1, k), dst (m, nb) with row stride n. */
static dnnl_primitive_t dnnl_make(int m, int nb, int k, int ldo, dnnl_data_type_t dt) {
    dnnl_memory_desc_t smd, wmd, dmd;
    dnnl_dims_t sd = {m, k}, wd = {k, nb}, dd = {m, nb}, ws = {1, k}, ds = {ldo, 1};
    DN(dnnl_memory_desc_init_by_tag(&smd, 2, sd, dt, dnnl_ab));
    DN(dnnl_memory_desc_init_by_strides(&wmd, 2, wd, dt, ws));
    DN(dnnl_memory_desc_init_by_strides(&dmd, 2, dd, dnnl_f32, ds));
    dnnl_matmul_desc_t md;
    DN(dnnl_matmul_desc_init(&md, &smd, &wmd, NULL, &dmd));
    dnnl_primitive_desc_t pd;
    DN(dnnl_primitive_desc_create(&pd, &md, NULL, g_eng, NULL));
    dnnl_primitive_t prim;
    DN(dnnl_primitive_create(&prim, pd));
    DN(dnnl_primitive_desc_destroy(pd));
    return prim;
}
static void dnnl_exec(dnnl_primitive_t prim, const void *x, const void *w, float *out) {
    const dnnl_primitive_desc_t *pdp = NULL;
    dnnl_primitive_desc_t pd;
    (void)pdp;
    DN(dnnl_primitive_get_primitive_desc(prim, (const_dnnl_primitive_desc_t *)&pd));
    dnnl_memory_t ms, mw, mo;
    DN(dnnl_memory_create(&ms, dnnl_primitive_desc_query_md(pd, dnnl_query_src_md, 0), g_eng,
                          (void *)x));
    DN(dnnl_memory_create(&mw, dnnl_primitive_desc_query_md(pd, dnnl_query_weights_md, 0), g_eng,
                          (void *)w));
    DN(dnnl_memory_create(&mo, dnnl_primitive_desc_query_md(pd, dnnl_query_dst_md, 0), g_eng, out));
    dnnl_stream_t st;
    DN(dnnl_stream_create(&st, g_eng, dnnl_stream_default_flags));
    dnnl_exec_arg_t args[3] = {{DNNL_ARG_SRC, ms}, {DNNL_ARG_WEIGHTS, mw}, {DNNL_ARG_DST, mo}};
    DN(dnnl_primitive_execute(prim, st, 3, args));
    DN(dnnl_stream_wait(st));
    dnnl_stream_destroy(st);
    dnnl_memory_destroy(ms), dnnl_memory_destroy(mw), dnnl_memory_destroy(mo);
}

static double run_dnnl_omp(problem *p, int bf16) {
    omp_set_num_threads(g_threads);
    uint16_t *xb = NULL;
    if (bf16) {
        xb = malloc((size_t)p->m * p->k * 2);
        for (size_t i = 0; i < (size_t)p->m * p->k; i++) xb[i] = hc_f32_to_bf16(p->x[i]);
    }
    dnnl_primitive_t prim = dnnl_make(p->m, p->n, p->k, p->n, bf16 ? dnnl_bf16 : dnnl_f32);
    const void *x = bf16 ? (void *)xb : (void *)p->x, *w = bf16 ? (void *)p->wb : (void *)p->w;
    dnnl_exec(prim, x, w, p->out);
    int it = 0;
    double t0 = now_s(), dt;
    do {
        dnnl_exec(prim, x, w, p->out);
        it++;
    } while ((dt = now_s() - t0) < 0.3);
    dnnl_primitive_destroy(prim);
    free(xb);
    return dt / it;
}

#endif

#ifdef HC_BENCH_BLIS
static double run_blis(problem *p) {
    p_bli_threads(g_threads);
    float one = 1.0f, zero = 0.0f;
    int it = 0;
    double t0 = 0, dt;
    for (int warm = 1;; warm = 0) {
        if (!warm && it == 0) t0 = now_s();
        p_bli_sgemm(BLIS_NO_TRANSPOSE, BLIS_TRANSPOSE, p->m, p->n, p->k, &one, p->x, p->k, 1, p->w,
                  p->k, 1, &zero, p->out, p->n, 1);
        if (warm) continue;
        it++;
        if ((dt = now_s() - t0) >= 0.3) break;
    }
    return dt / it;
}
#endif

static int cmp_d(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

int main(int argc, char **argv) {
    int rounds = 3, ms[16] = {128, 256, 512, 1024}, n_ms = 4;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--threads") && i + 1 < argc) g_threads = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--rounds") && i + 1 < argc) rounds = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--m") && i + 1 < argc) {
            n_ms = 0;
            for (char *s = strtok(argv[++i], ","); s && n_ms < 16; s = strtok(NULL, ","))
                ms[n_ms++] = atoi(s);
        } else {
            fprintf(stderr, "usage: bench_gemm [--threads T] [--rounds R] [--m 128,256,...]\n");
            return 2;
        }
    }
    if (g_threads < 1 || g_threads > 64 || rounds < 1 || rounds > 99) return 2;
    for (int b = 0; b < 3; b++) {
        hc_backend_params bp = hc_backend_default_params();
        bp.n_threads = g_threads;
        bp.cpu_gemm = b ? HC_CPU_GEMM_DNNL : HC_CPU_GEMM_OPENBLAS;
        bp.compute = b == 2 ? HC_COMPUTE_BF16 : HC_COMPUTE_F32;
        if (b && !hc_cpu_gemm_built(HC_CPU_GEMM_DNNL)) break;
        if (hc_backend_cpu_create_ex(&g_be[b], &bp)) return 1;
    }
#ifdef HC_HAVE_DNNL
    DN(dnnl_engine_create(&g_eng, dnnl_cpu, 0));
#endif
    double pk512 = 0, pk256 = fma_peak(g_threads, 0);
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f")) pk512 = fma_peak(g_threads, 1);
    double peak = pk512 > pk256 ? pk512 : pk256;
    printf("threads %d, fp32 FMA peak: AVX2 %.1f GFLOP/s, AVX-512 %.1f GFLOP/s\n", g_threads,
           pk256, pk512);

    static const char *names[] = {"openblas f32w", "openblas bf16w", "onednn f32w",
                                  "onednn bf16w", "onednn bf16c", "dnnl-omp f32",
                                  "dnnl-omp bf16", "blis f32"};
    enum { NV = 8 };
    int have[NV] = {1, 1, 0, 0, 0, 0, 0, 0};
#ifdef HC_HAVE_DNNL
    have[2] = have[3] = have[4] = have[5] = have[6] = 1;
#endif
#ifdef HC_BENCH_BLIS
    void *hb = dlopen("libblis.so.4", RTLD_NOW | RTLD_LOCAL);
    if (hb) {
        *(void **)&p_bli_sgemm = dlsym(hb, "bli_sgemm");
        *(void **)&p_bli_threads = dlsym(hb, "bli_thread_set_num_threads");
        have[7] = p_bli_sgemm && p_bli_threads;
    }
#endif
    static const int nk[][2] = {{2048, 768}, {768, 2048}, {5632, 2048}, {2048, 5632}};
    printf("%-5s %-11s", "m", "n x k");
    for (int v = 0; v < NV; v++)
        if (have[v]) printf(" %15s", names[v]);
    printf("   (GFLOP/s, %% of the rows' FMA peak)\n");
    for (int s = 0; s < 4; s++)
        for (int mi = 0; mi < n_ms; mi++) {
            problem p = {ms[mi], nk[s][0], nk[s][1], NULL, NULL, NULL, NULL};
            size_t nx = (size_t)p.m * p.k, nw = (size_t)p.n * p.k;
            p.x = malloc(nx * 4), p.w = malloc(nw * 4), p.out = malloc((size_t)p.m * p.n * 4);
            p.wb = malloc(nw * 2);
            for (size_t i = 0; i < nx; i++) p.x[i] = (float)((i * 2654435761u) % 2001) / 1000.f - 1;
            for (size_t i = 0; i < nw; i++) {
                p.w[i] = (float)((i * 40503u) % 2001) / 1000.f - 1;
                p.wb[i] = hc_f32_to_bf16(p.w[i]);
            }
            double t[NV][99], pk[99];
            for (int r = 0; r < rounds; r++) {
                pk[r] = fma_peak(g_threads, pk512 > 0);
                for (int v = 0; v < NV; v++) {
                    if (!have[v]) continue;
                    switch (v) {
                    case 0: t[v][r] = run_backend(&p, 0, 0); break;
                    case 1: t[v][r] = run_backend(&p, 0, 1); break;
                    case 2: t[v][r] = run_backend(&p, 1, 0); break;
                    case 3: t[v][r] = run_backend(&p, 1, 1); break;
                    case 4: t[v][r] = run_backend(&p, 2, 1); break;
#ifdef HC_HAVE_DNNL
                    case 5: t[v][r] = run_dnnl_omp(&p, 0); break;
                    case 6: t[v][r] = run_dnnl_omp(&p, 1); break;
#endif
#ifdef HC_BENCH_BLIS
                    case 7: t[v][r] = run_blis(&p); break;
#endif
                    default: break;
                    }
                }
            }
            qsort(pk, (size_t)rounds, sizeof(double), cmp_d);
            peak = pk[rounds / 2];
            printf("%-5d %5dx%-5d", p.m, p.n, p.k);
            for (int v = 0; v < NV; v++) {
                if (!have[v]) continue;
                qsort(t[v], (size_t)rounds, sizeof(double), cmp_d);
                double gf = 2.0 * p.m * p.n * p.k / t[v][rounds / 2] / 1e9;
                printf(" %8.1f (%3.0f%%)", gf, 100 * gf / peak);
            }
            printf("  peak %.0f\n", peak);
            fflush(stdout);
            free(p.x), free(p.w), free(p.out), free(p.wb);
        }
    for (int b = 0; b < 3; b++) hc_backend_free(g_be[b]);
    return 0;
}
