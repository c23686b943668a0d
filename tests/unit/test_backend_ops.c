/* test_backend_ops.c: every backend op, on every backend that can be created here (CPU always;
 * CUDA when hc_backend_create(HC_BACKEND_CUDA) succeeds), against a naive double-precision
 * reference written in this file.
 *
 * Each output buffer is allocated with HC_GUARD extra bytes filled with a sentinel and poisoned
 * with NaN before the op; after it, the whole buffer is downloaded: the guard must be intact (no
 * out-of-bounds write) and every element finite (every element written). Tolerances are relative
 * to the largest reference magnitude: 1e-5 for elementwise ops, rmsnorm and rope; 1e-4 for matmul
 * and attention (f32 accumulation order differs between backends).
 *
 * Where the contract fixes f32 steps (rope: inv_freq = 1/powf(theta, 2i/d) and angle = pos * inv
 * in f32, as transformers), the reference computes those steps in f32 and the rest in double.
 *
 * Env: HC_TEST_SEED=N   another random draw (default fixed, printed);
 *      HC_TEST_BACKEND=cpu|cuda  test only that backend (e.g. under compute-sanitizer);
 *      HC_EXPECT_CUDA=1 fail when the CUDA backend cannot be created (GPU machines);
 *      HC_BENCH=1       after the checks, time matmul and attention on each backend and print a
 *                       table (HC_BENCH_BACKEND=cuda|cpu restricts it to one backend);
 *      HC_BENCH=smallm  instead, the CPU matmul over m = 1..64 (small-M kernel vs sgemm crossover).
 * (Prefill GEMM libraries vs the FMA peak: tests/bench/bench_gemm.c.)
 *
 * The CPU backend runs at every kernel level this CPU has (hc_cpu_isa), with each prefill GEMM
 * library the build has (OpenBLAS; oneDNN when found) and in both compute modes (f32, bf16:
 * test_matmul_prefill, whose tolerance is a per-element error bound, documented there).
 */
#include "backend/backend.h"
#include "backend/cpu_isa.h"
#include "testutil.h"

#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define HC_GUARD 256
#define HC_GUARD_BYTE 0xA5

/* ---- random numbers ----------------------------------------------------------------------------- */

static uint64_t g_rng = 0x9E3779B97F4A7C15ull;

static uint32_t rnd_u32(void) {
    g_rng ^= g_rng << 13;
    g_rng ^= g_rng >> 7;
    g_rng ^= g_rng << 17;
    return (uint32_t)(g_rng >> 16);
}
static float rnd_f(float lo, float hi) { return lo + (hi - lo) * (float)(rnd_u32() / 4294967296.0); }
static int rnd_i(int lo, int hi) { return lo + (int)(rnd_u32() % (uint32_t)(hi - lo + 1)); } /* [lo,hi] */
static void rnd_fill(float *x, size_t n, float lo, float hi) {
    for (size_t i = 0; i < n; i++) x[i] = rnd_f(lo, hi);
}
/* n distinct values from [0, range), range >= n. */
static void rnd_distinct(int32_t *out, int n, int range) {
    int32_t *perm = malloc((size_t)range * sizeof *perm);
    for (int i = 0; i < range; i++) perm[i] = i;
    for (int i = 0; i < n; i++) {
        int j = i + (int)(rnd_u32() % (uint32_t)(range - i));
        int32_t t = perm[i];
        perm[i] = perm[j];
        perm[j] = t;
        out[i] = perm[i];
    }
    free(perm);
}

/* ---- device buffers with guards ----------------------------------------------------------------- */

typedef struct tbuf {
    hc_tensor t;
    size_t nbytes; /* payload, without the guard */
} tbuf;

/* Allocates (n_dims, ne) of dtype in be with a guard; uploads `host` (NULL: NaN poison). */
static int tb_make(tbuf *b, hc_backend *be, hc_dtype dt, int n_dims, const int64_t *ne,
                   const void *host) {
    memset(b, 0, sizeof *b);
    b->t.dtype = dt;
    b->t.n_dims = n_dims;
    for (int i = 0; i < HC_MAX_DIMS; i++) b->t.ne[i] = i < n_dims ? ne[i] : 1;
    b->t.backend = be;
    b->nbytes = hc_tensor_nbytes(&b->t);
    int rc = be->iface->alloc(be, &b->t.data, b->nbytes + HC_GUARD);
    if (rc != HC_OK) return rc;
    unsigned char *img = malloc(b->nbytes + HC_GUARD);
    if (host)
        memcpy(img, host, b->nbytes);
    else
        memset(img, 0xFF, b->nbytes); /* all-ones: NaN for f32 */
    memset(img + b->nbytes, HC_GUARD_BYTE, HC_GUARD);
    rc = be->iface->upload(be, b->t.data, img, b->nbytes + HC_GUARD);
    free(img);
    return rc;
}

/* Downloads the payload into host (may be NULL) and checks the guard; returns 1 when intact. */
static int tb_read(tbuf *b, void *host) {
    hc_backend *be = b->t.backend;
    unsigned char *img = malloc(b->nbytes + HC_GUARD);
    int rc = be->iface->download(be, img, b->t.data, b->nbytes + HC_GUARD);
    CHECK_OK(rc);
    int ok = rc == HC_OK;
    for (size_t i = 0; i < HC_GUARD && ok; i++) ok = img[b->nbytes + i] == HC_GUARD_BYTE;
    if (host) memcpy(host, img, b->nbytes);
    free(img);
    return ok;
}

static void tb_free(tbuf *b) {
    if (b->t.data) b->t.backend->iface->free(b->t.backend, b->t.data);
    b->t.data = NULL;
}

/* ---- comparison ----------------------------------------------------------------------------------- */

static double g_worst[32];
static const char *g_worst_name[32];
static int g_n_worst;

static void note_err(const char *op, double err) {
    for (int i = 0; i < g_n_worst; i++)
        if (!strcmp(g_worst_name[i], op)) {
            if (err > g_worst[i]) g_worst[i] = err;
            return;
        }
    if (g_n_worst < 32) {
        g_worst_name[g_n_worst] = op;
        g_worst[g_n_worst++] = err;
    }
}

/* Checks finiteness, guard and max|got-ref|/max|ref| <= tol; prints the case on failure. */
static void expect_close(const char *be_name, const char *op, const char *what, const float *got,
                         const double *ref, size_t n, double tol, int guard_ok) {
    double maxdiff = 0, maxref = 0;
    size_t bad = 0, first_bad = 0;
    for (size_t i = 0; i < n; i++) {
        if (!isfinite(got[i])) {
            if (!bad++) first_bad = i;
            continue;
        }
        double d = fabs((double)got[i] - ref[i]);
        if (d > maxdiff) maxdiff = d;
        if (fabs(ref[i]) > maxref) maxref = fabs(ref[i]);
    }
    double err = maxdiff / (maxref > 1e-30 ? maxref : 1e-30);
    note_err(op, bad ? INFINITY : err);
    CHECKF(guard_ok, "[%s] %s %s: write past the end of the output (guard bytes changed)", be_name,
           op, what);
    CHECKF(bad == 0, "[%s] %s %s: %zu non-finite outputs (first at %zu: %g)", be_name, op, what,
           bad, first_bad, bad ? (double)got[first_bad] : 0.0);
    CHECKF(err <= tol, "[%s] %s %s: rel err %.3g > %.1g", be_name, op, what, err, tol);
}

static float *to_f32_host(const void *src, hc_dtype dt, size_t n) {
    float *f = malloc(n * sizeof *f);
    hc_convert_to_f32(f, src, dt, n);
    return f;
}

/* Rounds f32 data to dtype's storage (returns a malloc'ed buffer of that dtype). */
static void *from_f32_host(const float *src, hc_dtype dt, size_t n) {
    if (dt == HC_DTYPE_F32) {
        float *o = malloc(n * 4);
        memcpy(o, src, n * 4);
        return o;
    }
    uint16_t *o = malloc(n * 2);
    for (size_t i = 0; i < n; i++)
        o[i] = dt == HC_DTYPE_BF16 ? hc_f32_to_bf16(src[i]) : hc_f32_to_f16(src[i]);
    return o;
}

/* ---- ops ------------------------------------------------------------------------------------------ */

static void test_matmul(hc_backend *be) {
    static const int ms[] = {1, 2, 3, 5, 8, 13, 17, 32, 33, 64};
    static const int nk[][2] = {{80, 256}, {33, 199}};
    static const hc_dtype dts[] = {HC_DTYPE_F32, HC_DTYPE_BF16, HC_DTYPE_F16};
    for (size_t di = 0; di < 3; di++)
        for (size_t si = 0; si < 2; si++)
            for (size_t mi = 0; mi < sizeof ms / sizeof ms[0]; mi++) {
                const int m = ms[mi], n = nk[si][0], k = nk[si][1];
                const hc_dtype dt = dts[di];
                float *x = malloc((size_t)m * k * 4), *wf = malloc((size_t)n * k * 4);
                rnd_fill(x, (size_t)m * k, -1, 1);
                rnd_fill(wf, (size_t)n * k, -1, 1);
                void *w = from_f32_host(wf, dt, (size_t)n * k);
                float *wr = to_f32_host(w, dt, (size_t)n * k); /* the values actually stored */
                double *ref = malloc((size_t)m * n * sizeof *ref);
                for (int r = 0; r < m; r++)
                    for (int j = 0; j < n; j++) {
                        double s = 0;
                        for (int i = 0; i < k; i++) s += (double)x[r * k + i] * wr[j * k + i];
                        ref[r * n + j] = s;
                    }
                tbuf tx, tw, to;
                int64_t nex[2] = {m, k}, new_[2] = {n, k}, neo[2] = {m, n};
                CHECK_OK(tb_make(&tx, be, HC_DTYPE_F32, 2, nex, x));
                CHECK_OK(tb_make(&tw, be, dt, 2, new_, w));
                CHECK_OK(tb_make(&to, be, HC_DTYPE_F32, 2, neo, NULL));
                CHECK_OK(be->iface->matmul(be, &to.t, &tx.t, &tw.t));
                float *got = malloc((size_t)m * n * 4);
                int g = tb_read(&to, got);
                char what[64];
                snprintf(what, sizeof what, "%s m=%d n=%d k=%d", hc_dtype_name(dt), m, n, k);
                expect_close(be->iface->name, "matmul", what, got, ref, (size_t)m * n, 1e-4, g);
                tb_free(&tx), tb_free(&tw), tb_free(&to);
                free(x), free(wf), free(w), free(wr), free(ref), free(got);
            }
}

/* The CPU small-M matmul kernel (cpu_isa.h) of level isa, called directly and through backends of
 * that level with 1 and 3 threads (other column splits), f32 / bf16 / f16 weights, m rows around
 * the kernel's row blocks and HC_CPU_SMALLM_MAX, k not a multiple of any vector width:
 *  - vs the portable kernel: |got - portable| <= (k + 4) * FLT_EPSILON * sum|x*w| per element (both
 *    are f32 sums of the same k products in different orders; each is within k * u of exact);
 *    both vs the double reference within the same bound;
 *  - batch invariance: row r of the m-row product is bit-identical to row r computed alone (m = 1),
 *    to products over other column ranges (other tile shapes at the edges), to the product without
 *    scratch (weights widened in registers instead of once into scratch), and to the backends'
 *    results at 1 and 3 threads for m <= HC_CPU_SMALLM_MAX (above it, OpenBLAS: bound only). */
static void test_matmul_smallm(hc_cpu_isa isa) {
    static const int ms[] = {1, 2, 3, 5, 6, 7, 8, 13, 32, 33};
    static const int nk[][2] = {{33, 199}, {80, 256}, {7, 17}, {5, 1}, {130, 70}, {12, 15}};
    static const hc_dtype dts[] = {HC_DTYPE_F32, HC_DTYPE_BF16, HC_DTYPE_F16};
    const char *iname = hc_cpu_isa_name(isa);
    hc_cpu_gemm_fn kern = hc_cpu_gemm_for(isa);
    hc_backend *bes[2] = {NULL, NULL};
    for (int b = 0; b < 2; b++) {
        hc_backend_params p = hc_backend_default_params();
        p.cpu_isa = isa;
        p.n_threads = b ? 3 : 1;
        CHECK_OK(hc_backend_cpu_create_ex(&bes[b], &p));
        if (!bes[b]) return;
    }
    long n_cases = 0, n_bad_bits = 0;
    double worst = 0;
    for (size_t di = 0; di < 3; di++)
        for (size_t si = 0; si < sizeof nk / sizeof nk[0]; si++)
            for (size_t mi = 0; mi < sizeof ms / sizeof ms[0]; mi++) {
                const int m = ms[mi], n = nk[si][0], k = nk[si][1];
                const hc_dtype dt = dts[di];
                const size_t mn = (size_t)m * n;
                float *x = malloc((size_t)m * k * 4), *wf = malloc((size_t)n * k * 4);
                rnd_fill(x, (size_t)m * k, -1, 1);
                rnd_fill(wf, (size_t)n * k, -1, 1);
                void *w = from_f32_host(wf, dt, (size_t)n * k);
                float *wr = to_f32_host(w, dt, (size_t)n * k);
                float *scratch = malloc(hc_cpu_gemm_scratch_floats(k) * 4);
                float *got = malloc(mn * 4), *port = malloc(mn * 4), *alt = malloc(mn * 4);
                double *ref = malloc(mn * sizeof *ref), *bound = malloc(mn * sizeof *bound);
                for (int r = 0; r < m; r++)
                    for (int j = 0; j < n; j++) {
                        double sum = 0, sabs = 0;
                        for (int i = 0; i < k; i++) {
                            double pr = (double)x[r * k + i] * wr[(size_t)j * k + i];
                            sum += pr;
                            sabs += fabs(pr);
                        }
                        ref[r * n + j] = sum;
                        bound[r * n + j] = (k + 4) * (double)FLT_EPSILON * sabs + 1e-30;
                    }
                char what[96];
                snprintf(what, sizeof what, "isa %s %s m=%d n=%d k=%d", iname, hc_dtype_name(dt), m,
                         n, k);
                kern(got, n, x, m, w, dt, 0, n, k, scratch);
                hc_cpu_gemm_portable(port, n, x, m, w, dt, 0, n, k, NULL);
                size_t far = 0;
                for (size_t e = 0; e < mn; e++) {
                    double d = fabs((double)got[e] - port[e]);
                    if (d / bound[e] > worst) worst = d / bound[e];
                    if (!(d <= bound[e]) || !(fabs(got[e] - ref[e]) <= bound[e]) ||
                        !(fabs(port[e] - ref[e]) <= bound[e]))
                        far++;
                }
                CHECKF(far == 0, "smallm %s: %zu outputs outside the error bound", what, far);
                /* each row alone */
                size_t diff = 0;
                for (int r = 0; r < m; r++) {
                    kern(alt + (size_t)r * n, n, x + (size_t)r * k, 1, w, dt, 0, n, k, scratch);
                    diff += memcmp(alt + (size_t)r * n, got + (size_t)r * n, (size_t)n * 4) != 0;
                }
                CHECKF(diff == 0, "smallm %s: %zu rows differ from the row computed alone", what, diff);
                n_bad_bits += (long)diff;
                /* other column ranges: pieces of 1, 5 and the rest; and no scratch */
                int cuts[4] = {0, n > 1 ? 1 : n, n > 6 ? 6 : n, n};
                for (int c = 0; c < 3; c++)
                    if (cuts[c] < cuts[c + 1]) kern(alt, n, x, m, w, dt, cuts[c], cuts[c + 1], k, scratch);
                CHECKF(!memcmp(alt, got, mn * 4), "smallm %s: column pieces differ", what);
                n_bad_bits += memcmp(alt, got, mn * 4) != 0;
                kern(alt, n, x, m, w, dt, 0, n, k, NULL);
                CHECKF(!memcmp(alt, got, mn * 4), "smallm %s: without scratch differs", what);
                n_bad_bits += memcmp(alt, got, mn * 4) != 0;
                /* through the backends */
                for (int b = 0; b < 2; b++) {
                    tbuf tx, tw, to;
                    int64_t nex[2] = {m, k}, new_[2] = {n, k}, neo[2] = {m, n};
                    CHECK_OK(tb_make(&tx, bes[b], HC_DTYPE_F32, 2, nex, x));
                    CHECK_OK(tb_make(&tw, bes[b], dt, 2, new_, w));
                    CHECK_OK(tb_make(&to, bes[b], HC_DTYPE_F32, 2, neo, NULL));
                    CHECK_OK(bes[b]->iface->matmul(bes[b], &to.t, &tx.t, &tw.t));
                    int g = tb_read(&to, alt);
                    CHECKF(g, "smallm %s threads %d: guard bytes changed", what, bes[b]->n_threads);
                    if (m <= HC_CPU_SMALLM_MAX) {
                        CHECKF(!memcmp(alt, got, mn * 4), "smallm %s threads %d: backend differs from the kernel",
                               what, bes[b]->n_threads);
                    } else {
                        size_t out_of = 0;
                        for (size_t e = 0; e < mn; e++) out_of += !(fabs(alt[e] - ref[e]) <= bound[e]);
                        CHECKF(out_of == 0, "smallm %s threads %d (sgemm): %zu outside the bound", what,
                               bes[b]->n_threads, out_of);
                    }
                    tb_free(&tx), tb_free(&tw), tb_free(&to);
                }
                n_cases++;
                free(x), free(wf), free(w), free(wr), free(scratch), free(got), free(port), free(alt);
                free(ref), free(bound);
            }
    printf("smallm matmul isa %-10s: %ld cases, worst |got - portable| / bound %.3g, %ld not "
           "bit-identical\n",
           iname, n_cases, worst, n_bad_bits);
    hc_backend_free(bes[0]);
    hc_backend_free(bes[1]);
}

/* The prefill matmul (m > HC_CPU_SMALLM_MAX) of one GEMM library (hc_cpu_gemm: OpenBLAS, and
 * oneDNN when built) in one compute mode, at 1, 2 and 3 threads, f32 / bf16 / f16 weights, n and
 * k not multiples of any block size, against the double reference of the products actually
 * formed: x (f32 compute) or bf16(x) (bf16 compute: round to nearest even, the mode's contract)
 * times the stored weights. Bound per element: (k + 4) * FLT_EPSILON * sum|x*w| (any f32
 * summation order of k exact-or-rounded products is within it). Also: the same call twice, and a
 * second backend of the same thread count, are bit-identical (deterministic for a fixed thread
 * count); in bf16 compute the small-M path (m <= HC_CPU_SMALLM_MAX) gives exactly the f32 kernel's
 * result on bf16-rounded x, so the mode means the same at every m. */
static void test_matmul_prefill(hc_cpu_gemm lib, hc_compute compute) {
    static const int ms[] = {33, 64, 100, 161};
    static const int nk[][2] = {{80, 256}, {300, 199}, {17, 1000}, {129, 64}};
    static const hc_dtype dts[] = {HC_DTYPE_F32, HC_DTYPE_BF16, HC_DTYPE_F16};
    const char *lname = hc_cpu_gemm_name(lib), *cname = hc_compute_name(compute);
    hc_backend *bes[4] = {NULL, NULL, NULL, NULL}; /* 1, 2, 3 threads; another 3 */
    for (int b = 0; b < 4; b++) {
        hc_backend_params p = hc_backend_default_params();
        p.n_threads = b < 3 ? b + 1 : 3;
        p.cpu_gemm = lib;
        p.compute = compute;
        CHECK_OK(hc_backend_cpu_create_ex(&bes[b], &p));
        if (!bes[b]) return;
        CHECK(hc_backend_cpu_gemm(bes[b]) == (int)lib && hc_backend_cpu_compute(bes[b]) == (int)compute);
    }
    long n_cases = 0;
    double worst = 0;
    /* under memcheck (HC_UNDER_VALGRIND, tests/CMakeLists.txt) two shapes and two m per dtype:
     * the same library calls and code paths, a quarter of the cases (4 min -> 1) */
    const int vg = getenv("HC_UNDER_VALGRIND") != NULL;
    const size_t n_nk = vg ? 2 : sizeof nk / sizeof nk[0];
    for (size_t di = 0; di < 3; di++)
        for (size_t si = 0; si < n_nk; si++)
            for (size_t mi = 0; mi < sizeof ms / sizeof ms[0]; mi += vg ? 2 : 1) {
                const int m = ms[mi], n = nk[si][0], k = nk[si][1];
                const hc_dtype dt = dts[di];
                const size_t mn = (size_t)m * n;
                float *x = malloc((size_t)m * k * 4), *xr = malloc((size_t)m * k * 4);
                float *wf = malloc((size_t)n * k * 4);
                rnd_fill(x, (size_t)m * k, -1, 1);
                rnd_fill(wf, (size_t)n * k, -1, 1);
                for (size_t i = 0; i < (size_t)m * k; i++)
                    xr[i] = compute == HC_COMPUTE_BF16 ? hc_bf16_to_f32(hc_f32_to_bf16(x[i])) : x[i];
                void *w = from_f32_host(wf, dt, (size_t)n * k);
                float *wr = to_f32_host(w, dt, (size_t)n * k);
                double *ref = malloc(mn * sizeof *ref), *bound = malloc(mn * sizeof *bound);
                for (int r = 0; r < m; r++)
                    for (int j = 0; j < n; j++) {
                        double sum = 0, sabs = 0;
                        for (int i = 0; i < k; i++) {
                            double pr = (double)xr[r * k + i] * wr[(size_t)j * k + i];
                            sum += pr;
                            sabs += fabs(pr);
                        }
                        ref[r * n + j] = sum;
                        bound[r * n + j] = (k + 4) * (double)FLT_EPSILON * sabs + 1e-30;
                    }
                char what[128];
                snprintf(what, sizeof what, "%s compute %s %s m=%d n=%d k=%d", lname, cname,
                         hc_dtype_name(dt), m, n, k);
                float *got[4], *again = malloc(mn * 4);
                for (int b = 0; b < 4; b++) {
                    got[b] = malloc(mn * 4);
                    tbuf tx, tw, to;
                    int64_t nex[2] = {m, k}, new_[2] = {n, k}, neo[2] = {m, n};
                    CHECK_OK(tb_make(&tx, bes[b], HC_DTYPE_F32, 2, nex, x));
                    CHECK_OK(tb_make(&tw, bes[b], dt, 2, new_, w));
                    CHECK_OK(tb_make(&to, bes[b], HC_DTYPE_F32, 2, neo, NULL));
                    CHECK_OK(bes[b]->iface->matmul(bes[b], &to.t, &tx.t, &tw.t));
                    int g = tb_read(&to, got[b]);
                    CHECKF(g, "prefill %s threads %d: guard bytes changed", what, bes[b]->n_threads);
                    size_t out_of = 0, nonfin = 0;
                    for (size_t e = 0; e < mn; e++) {
                        double d = fabs((double)got[b][e] - ref[e]);
                        nonfin += !isfinite(got[b][e]);
                        out_of += !(d <= bound[e]);
                        if (d / bound[e] > worst) worst = d / bound[e];
                    }
                    CHECKF(out_of == 0 && nonfin == 0,
                           "prefill %s threads %d: %zu outside the bound, %zu not finite", what,
                           bes[b]->n_threads, out_of, nonfin);
                    if (b == 2) { /* the same call again */
                        CHECK_OK(bes[b]->iface->matmul(bes[b], &to.t, &tx.t, &tw.t));
                        tb_read(&to, again);
                        CHECKF(!memcmp(again, got[b], mn * 4), "prefill %s: a second call differs",
                               what);
                    }
                    tb_free(&tx), tb_free(&tw), tb_free(&to);
                }
                CHECKF(!memcmp(got[2], got[3], mn * 4),
                       "prefill %s: two backends of 3 threads differ", what);
                for (int b = 0; b < 4; b++) free(got[b]);
                n_cases++;
                free(x), free(xr), free(wf), free(w), free(wr), free(ref), free(bound), free(again);
            }
    /* bf16 compute at small m: exactly the f32 small-M kernel on the rounded x */
    if (compute == HC_COMPUTE_BF16) {
        const int m = 7, n = 45, k = 130;
        float *x = malloc((size_t)m * k * 4), *xr = malloc((size_t)m * k * 4);
        float *wf = malloc((size_t)n * k * 4), *got = malloc((size_t)m * n * 4);
        float *exp_ = malloc((size_t)m * n * 4), *scratch = malloc(hc_cpu_gemm_scratch_floats(k) * 4);
        rnd_fill(x, (size_t)m * k, -1, 1);
        rnd_fill(wf, (size_t)n * k, -1, 1);
        for (size_t i = 0; i < (size_t)m * k; i++) xr[i] = hc_bf16_to_f32(hc_f32_to_bf16(x[i]));
        void *w = from_f32_host(wf, HC_DTYPE_BF16, (size_t)n * k);
        hc_cpu_gemm_for((hc_cpu_isa)hc_backend_cpu_isa(bes[0]))(exp_, n, xr, m, w, HC_DTYPE_BF16, 0,
                                                                 n, k, scratch);
        tbuf tx, tw, to;
        int64_t nex[2] = {m, k}, new_[2] = {n, k}, neo[2] = {m, n};
        CHECK_OK(tb_make(&tx, bes[0], HC_DTYPE_F32, 2, nex, x));
        CHECK_OK(tb_make(&tw, bes[0], HC_DTYPE_BF16, 2, new_, w));
        CHECK_OK(tb_make(&to, bes[0], HC_DTYPE_F32, 2, neo, NULL));
        CHECK_OK(bes[0]->iface->matmul(bes[0], &to.t, &tx.t, &tw.t));
        tb_read(&to, got);
        CHECKF(!memcmp(got, exp_, (size_t)m * n * 4),
               "%s compute bf16 m=%d: not the f32 small-M kernel on bf16-rounded x", lname, m);
        tb_free(&tx), tb_free(&tw), tb_free(&to);
        free(x), free(xr), free(wf), free(got), free(exp_), free(scratch), free(w);
    }
    printf("prefill matmul %-8s compute %-4s: %ld cases x 4 backends, worst |got - ref| / bound "
           "%.3g\n", lname, cname, n_cases, worst);
    for (int b = 0; b < 4; b++) hc_backend_free(bes[b]);
}

static void test_rmsnorm(hc_backend *be) {
    static const int shapes[][2] = {{5, 300}, {3, 4096}, {1, 64}};
    for (int si = 0; si < 3; si++)
        for (int inplace = 0; inplace < 2; inplace++) {
            const int rows = shapes[si][0], dim = shapes[si][1];
            const float eps = 1e-6f;
            float *x = malloc((size_t)rows * dim * 4), *w = malloc((size_t)dim * 4);
            rnd_fill(x, (size_t)rows * dim, -3, 3);
            rnd_fill(w, (size_t)dim, 0.5f, 1.5f);
            double *ref = malloc((size_t)rows * dim * sizeof *ref);
            for (int r = 0; r < rows; r++) {
                double ss = 0;
                for (int i = 0; i < dim; i++) ss += (double)x[r * dim + i] * x[r * dim + i];
                double inv = 1.0 / sqrt(ss / dim + eps);
                for (int i = 0; i < dim; i++) ref[r * dim + i] = x[r * dim + i] * inv * w[i];
            }
            tbuf tx, tw, to;
            int64_t nex[2] = {rows, dim}, new_[1] = {dim};
            CHECK_OK(tb_make(&tx, be, HC_DTYPE_F32, 2, nex, x));
            CHECK_OK(tb_make(&tw, be, HC_DTYPE_F32, 1, new_, w));
            if (!inplace) CHECK_OK(tb_make(&to, be, HC_DTYPE_F32, 2, nex, NULL));
            tbuf *out = inplace ? &tx : &to;
            CHECK_OK(be->iface->rmsnorm(be, &out->t, &tx.t, &tw.t, eps));
            float *got = malloc((size_t)rows * dim * 4);
            int g = tb_read(out, got);
            char what[64];
            snprintf(what, sizeof what, "%dx%d%s", rows, dim, inplace ? " in-place" : "");
            expect_close(be->iface->name, "rmsnorm", what, got, ref, (size_t)rows * dim, 1e-5, g);
            tb_free(&tx), tb_free(&tw);
            if (!inplace) tb_free(&to);
            free(x), free(w), free(ref), free(got);
        }
}

static void test_rope(hc_backend *be) {
    static const int hds[] = {32, 64, 128};
    static const double thetas[] = {1e4, 1e6};
    static const int32_t pos[] = {0, 1, 7, 100, 1023, 4000, 32767};
    const int n_tokens = (int)(sizeof pos / sizeof pos[0]), n_heads = 3;
    for (int hi = 0; hi < 3; hi++)
        for (int ti = 0; ti < 2; ti++) {
            const int hd = hds[hi], half = hd / 2;
            const size_t n = (size_t)n_tokens * n_heads * hd;
            float *x = malloc(n * 4);
            rnd_fill(x, n, -2, 2);
            double *ref = malloc(n * sizeof *ref);
            for (int t = 0; t < n_tokens; t++)
                for (int i = 0; i < half; i++) {
                    /* contract (transformers): inv_freq and the angle are f32 */
                    float inv = 1.0f / powf((float)thetas[ti], (float)(2 * i) / (float)hd);
                    float ang = (float)pos[t] * inv;
                    double c = cos((double)ang), s = sin((double)ang);
                    for (int h = 0; h < n_heads; h++) {
                        const float *v = x + ((size_t)t * n_heads + h) * hd;
                        double *o = ref + ((size_t)t * n_heads + h) * hd;
                        o[i] = v[i] * c - v[i + half] * s;
                        o[i + half] = v[i + half] * c + v[i] * s;
                    }
                }
            tbuf tx;
            int64_t ne[3] = {n_tokens, n_heads, hd};
            CHECK_OK(tb_make(&tx, be, HC_DTYPE_F32, 3, ne, x));
            CHECK_OK(be->iface->rope(be, &tx.t, pos, thetas[ti]));
            float *got = malloc(n * 4);
            int g = tb_read(&tx, got);
            char what[64];
            snprintf(what, sizeof what, "head_dim=%d theta=%g", hd, thetas[ti]);
            expect_close(be->iface->name, "rope", what, got, ref, n, 1e-5, g);
            tb_free(&tx);
            free(x), free(ref), free(got);
        }
}

/* One attention case. block_size 1 = scratch mode (tables are pool rows); otherwise each
 * sequence gets a random block table over a shared pool. Query tokens of a sequence see kv_len
 * = a causal prefix (the last few positions and a random earlier one). */
static void attn_case(hc_backend *be, int n_heads, int n_kv_heads, int hd, int block_size) {
    enum { N_SEQ = 3, Q_PER_SEQ = 4 };
    int seq_len[N_SEQ], seq_off[N_SEQ];
    const int max_blocks_per_seq = (70 + block_size - 1) / block_size;
    const int n_pool_blocks = N_SEQ * max_blocks_per_seq + 5;
    const int n_rows = n_pool_blocks * block_size;
    int32_t *pool_blocks = malloc((size_t)n_pool_blocks * sizeof *pool_blocks);
    rnd_distinct(pool_blocks, n_pool_blocks, n_pool_blocks); /* a random permutation */
    int32_t *tables = malloc((size_t)n_pool_blocks * sizeof *tables);
    int n_table = 0;
    for (int s = 0; s < N_SEQ; s++) {
        seq_len[s] = rnd_i(1, 70);
        if (s == 0) seq_len[s] = 70;
        if (s == 1) seq_len[s] = 1;
        seq_off[s] = n_table;
        int nb = (seq_len[s] + block_size - 1) / block_size;
        for (int b = 0; b < nb; b++) tables[n_table++] = pool_blocks[seq_off[s] + b];
    }
    const int n_tokens = N_SEQ * Q_PER_SEQ;
    int32_t table_off[N_SEQ * Q_PER_SEQ], kv_len[N_SEQ * Q_PER_SEQ];
    for (int s = 0; s < N_SEQ; s++)
        for (int j = 0; j < Q_PER_SEQ; j++) {
            int t = s * Q_PER_SEQ + j, len = seq_len[s] - (Q_PER_SEQ - 1 - j);
            if (j == 0) len = rnd_i(1, seq_len[s]);
            table_off[t] = seq_off[s];
            kv_len[t] = len < 1 ? 1 : len;
        }
    const size_t kv_dim = (size_t)n_kv_heads * hd, q_dim = (size_t)n_heads * hd;
    float *q = malloc((size_t)n_tokens * q_dim * 4);
    float *kp = malloc((size_t)n_rows * kv_dim * 4), *vp = malloc((size_t)n_rows * kv_dim * 4);
    rnd_fill(q, (size_t)n_tokens * q_dim, -1, 1);
    rnd_fill(kp, (size_t)n_rows * kv_dim, -1, 1);
    rnd_fill(vp, (size_t)n_rows * kv_dim, -1, 1);
    const float scale = 1.0f / sqrtf((float)hd);
    double *ref = calloc((size_t)n_tokens * q_dim, sizeof *ref);
    double *sc = malloc(70 * sizeof *sc);
    for (int t = 0; t < n_tokens; t++)
        for (int h = 0; h < n_heads; h++) {
            const int kvh = h / (n_heads / n_kv_heads);
            const float *qh = q + (size_t)t * q_dim + (size_t)h * hd;
            double mx = -INFINITY, sum = 0;
            for (int j = 0; j < kv_len[t]; j++) {
                int64_t row = (int64_t)tables[table_off[t] + j / block_size] * block_size +
                              j % block_size;
                const float *k = kp + (size_t)row * kv_dim + (size_t)kvh * hd;
                double s = 0;
                for (int d = 0; d < hd; d++) s += (double)qh[d] * k[d];
                sc[j] = s * scale;
                if (sc[j] > mx) mx = sc[j];
            }
            for (int j = 0; j < kv_len[t]; j++) sum += (sc[j] = exp(sc[j] - mx));
            double *o = ref + (size_t)t * q_dim + (size_t)h * hd;
            for (int j = 0; j < kv_len[t]; j++) {
                int64_t row = (int64_t)tables[table_off[t] + j / block_size] * block_size +
                              j % block_size;
                const float *v = vp + (size_t)row * kv_dim + (size_t)kvh * hd;
                for (int d = 0; d < hd; d++) o[d] += sc[j] / sum * v[d];
            }
        }
    tbuf tq, tk, tv, to;
    int64_t neq[2] = {n_tokens, (int64_t)q_dim}, nep[3] = {n_rows, n_kv_heads, hd};
    CHECK_OK(tb_make(&tq, be, HC_DTYPE_F32, 2, neq, q));
    CHECK_OK(tb_make(&tk, be, HC_DTYPE_F32, 3, nep, kp));
    CHECK_OK(tb_make(&tv, be, HC_DTYPE_F32, 3, nep, vp));
    CHECK_OK(tb_make(&to, be, HC_DTYPE_F32, 2, neq, NULL));
    hc_attn_args a = {n_tokens, n_heads, n_kv_heads, hd, scale, block_size,
                      table_off, kv_len, tables, n_table};
    CHECK_OK(be->iface->attention(be, &to.t, &tq.t, &tk.t, &tv.t, &a));
    float *got = malloc((size_t)n_tokens * q_dim * 4);
    int g = tb_read(&to, got);
    char what[96];
    snprintf(what, sizeof what, "heads=%d kv_heads=%d head_dim=%d block_size=%d", n_heads,
             n_kv_heads, hd, block_size);
    expect_close(be->iface->name, "attention", what, got, ref, (size_t)n_tokens * q_dim, 1e-4, g);

    /* A block id outside the pool is an error code, not a crash. */
    int32_t saved = tables[0];
    tables[0] = n_pool_blocks;
    int rc = be->iface->attention(be, &to.t, &tq.t, &tk.t, &tv.t, &a);
    CHECKF(rc == HC_ERR_RANGE, "[%s] attention with a bad block id returned %d", be->iface->name,
           rc);
    tables[0] = saved;

    tb_free(&tq), tb_free(&tk), tb_free(&tv), tb_free(&to);
    free(pool_blocks), free(tables), free(q), free(kp), free(vp), free(ref), free(sc), free(got);
}

static void test_attention(hc_backend *be) {
    static const int heads[][2] = {{8, 2}, {4, 4}};
    static const int hds[] = {64, 128, 48};
    static const int bss[] = {1, 16};
    for (int hi = 0; hi < 2; hi++)
        for (int di = 0; di < 3; di++)
            for (int bi = 0; bi < 2; bi++) attn_case(be, heads[hi][0], heads[hi][1], hds[di], bss[bi]);
}

static void test_kv_store(hc_backend *be) {
    const int n_rows = 50, n_kv = 2, hd = 12, n_tokens = 7, kv_dim = n_kv * hd;
    float *kp = malloc((size_t)n_rows * kv_dim * 4), *vp = malloc((size_t)n_rows * kv_dim * 4);
    float *k = malloc((size_t)n_tokens * kv_dim * 4), *v = malloc((size_t)n_tokens * kv_dim * 4);
    rnd_fill(kp, (size_t)n_rows * kv_dim, -1, 1);
    rnd_fill(vp, (size_t)n_rows * kv_dim, -1, 1);
    rnd_fill(k, (size_t)n_tokens * kv_dim, -1, 1);
    rnd_fill(v, (size_t)n_tokens * kv_dim, -1, 1);
    int32_t rows[7];
    rnd_distinct(rows, n_tokens, n_rows);
    rows[0] = n_rows - 1; /* the last row too */
    if (rows[1] == n_rows - 1) rows[1] = 0;
    double *rk = malloc((size_t)n_rows * kv_dim * sizeof *rk);
    double *rv = malloc((size_t)n_rows * kv_dim * sizeof *rv);
    for (int i = 0; i < n_rows * kv_dim; i++) rk[i] = kp[i], rv[i] = vp[i];
    for (int t = 0; t < n_tokens; t++)
        for (int d = 0; d < kv_dim; d++) {
            rk[(size_t)rows[t] * kv_dim + d] = k[t * kv_dim + d];
            rv[(size_t)rows[t] * kv_dim + d] = v[t * kv_dim + d];
        }
    tbuf tkp, tvp, tk, tv;
    int64_t nep[3] = {n_rows, n_kv, hd}, nek[2] = {n_tokens, kv_dim};
    CHECK_OK(tb_make(&tkp, be, HC_DTYPE_F32, 3, nep, kp));
    CHECK_OK(tb_make(&tvp, be, HC_DTYPE_F32, 3, nep, vp));
    CHECK_OK(tb_make(&tk, be, HC_DTYPE_F32, 2, nek, k));
    CHECK_OK(tb_make(&tv, be, HC_DTYPE_F32, 2, nek, v));
    CHECK_OK(be->iface->kv_store(be, &tkp.t, &tvp.t, &tk.t, &tv.t, rows, n_tokens));
    float *got = malloc((size_t)n_rows * kv_dim * 4);
    int g = tb_read(&tkp, got);
    expect_close(be->iface->name, "kv_store", "k pool", got, rk, (size_t)n_rows * kv_dim, 0, g);
    g = tb_read(&tvp, got);
    expect_close(be->iface->name, "kv_store", "v pool", got, rv, (size_t)n_rows * kv_dim, 0, g);
    tb_free(&tkp), tb_free(&tvp), tb_free(&tk), tb_free(&tv);
    free(kp), free(vp), free(k), free(v), free(rk), free(rv), free(got);
}

static void test_swiglu_add(hc_backend *be) {
    const int n = 1000;
    float *a = malloc(n * 4), *b = malloc(n * 4), *got = malloc(n * 4);
    double *ref = malloc(n * sizeof *ref);
    rnd_fill(a, n, -10, 10);
    rnd_fill(b, n, -3, 3);
    int64_t ne[2] = {10, 100};
    tbuf ta, tb, to;
    CHECK_OK(tb_make(&ta, be, HC_DTYPE_F32, 2, ne, a));
    CHECK_OK(tb_make(&tb, be, HC_DTYPE_F32, 2, ne, b));
    CHECK_OK(tb_make(&to, be, HC_DTYPE_F32, 2, ne, NULL));
    for (int i = 0; i < n; i++) ref[i] = a[i] / (1.0 + exp(-(double)a[i])) * b[i];
    CHECK_OK(be->iface->swiglu(be, &to.t, &ta.t, &tb.t));
    int g = tb_read(&to, got);
    expect_close(be->iface->name, "swiglu", "10x100", got, ref, n, 1e-5, g);
    for (int i = 0; i < n; i++) ref[i] = (double)a[i] + b[i];
    CHECK_OK(be->iface->add(be, &ta.t, &tb.t));
    g = tb_read(&ta, got);
    expect_close(be->iface->name, "add", "10x100", got, ref, n, 1e-7, g);
    tb_free(&ta), tb_free(&tb), tb_free(&to);
    free(a), free(b), free(got), free(ref);
}

static void test_rows(hc_backend *be) {
    /* embed from F32, BF16 and F16 tables */
    static const hc_dtype dts[] = {HC_DTYPE_F32, HC_DTYPE_BF16, HC_DTYPE_F16};
    const int vocab = 50, dim = 40, n_ids = 9;
    int32_t ids[9] = {0, 49, 3, 3, 17, 25, 1, 48, 10};
    for (int di = 0; di < 3; di++) {
        float *tf = malloc((size_t)vocab * dim * 4);
        rnd_fill(tf, (size_t)vocab * dim, -2, 2);
        void *tab = from_f32_host(tf, dts[di], (size_t)vocab * dim);
        float *tr = to_f32_host(tab, dts[di], (size_t)vocab * dim);
        double *ref = malloc((size_t)n_ids * dim * sizeof *ref);
        for (int t = 0; t < n_ids; t++)
            for (int d = 0; d < dim; d++) ref[t * dim + d] = tr[ids[t] * dim + d];
        tbuf tt, to;
        int64_t net[2] = {vocab, dim}, neo[2] = {n_ids, dim};
        CHECK_OK(tb_make(&tt, be, dts[di], 2, net, tab));
        CHECK_OK(tb_make(&to, be, HC_DTYPE_F32, 2, neo, NULL));
        CHECK_OK(be->iface->embed(be, &to.t, &tt.t, ids));
        float *got = malloc((size_t)n_ids * dim * 4);
        int g = tb_read(&to, got);
        expect_close(be->iface->name, "embed", hc_dtype_name(dts[di]), got, ref,
                     (size_t)n_ids * dim, 0, g);
        int32_t bad[1] = {vocab};
        hc_tensor one = hc_tensor_rows_view(&to.t, 0, 1);
        int rc = be->iface->embed(be, &one, &tt.t, bad);
        CHECKF(rc == HC_ERR_RANGE, "[%s] embed with id = vocab returned %d", be->iface->name, rc);
        tb_free(&tt), tb_free(&to);
        free(tf), free(tab), free(tr), free(ref), free(got);
    }

    /* get_rows */
    {
        const int rows = 30, cols = 17, n = 11;
        float *src = malloc((size_t)rows * cols * 4), *got = malloc((size_t)n * cols * 4);
        rnd_fill(src, (size_t)rows * cols, -5, 5);
        int32_t idx[11];
        for (int i = 0; i < n; i++) idx[i] = rnd_i(0, rows - 1);
        idx[0] = rows - 1;
        double *ref = malloc((size_t)n * cols * sizeof *ref);
        for (int i = 0; i < n; i++)
            for (int c = 0; c < cols; c++) ref[i * cols + c] = src[idx[i] * cols + c];
        tbuf ts, to;
        int64_t nes[2] = {rows, cols}, neo[2] = {n, cols};
        CHECK_OK(tb_make(&ts, be, HC_DTYPE_F32, 2, nes, src));
        CHECK_OK(tb_make(&to, be, HC_DTYPE_F32, 2, neo, NULL));
        CHECK_OK(be->iface->get_rows(be, &to.t, &ts.t, idx));
        int g = tb_read(&to, got);
        expect_close(be->iface->name, "get_rows", "30x17 -> 11", got, ref, (size_t)n * cols, 0, g);
        tb_free(&ts), tb_free(&to);
        free(src), free(got), free(ref);
    }

    /* set_rows */
    {
        const int rows = 20, cols = 17, n = 5;
        float *dst = malloc((size_t)rows * cols * 4), *src = malloc((size_t)n * cols * 4);
        float *got = malloc((size_t)rows * cols * 4);
        rnd_fill(dst, (size_t)rows * cols, -5, 5);
        rnd_fill(src, (size_t)n * cols, -5, 5);
        int32_t idx[5];
        rnd_distinct(idx, n, rows);
        double *ref = malloc((size_t)rows * cols * sizeof *ref);
        for (int i = 0; i < rows * cols; i++) ref[i] = dst[i];
        for (int i = 0; i < n; i++)
            for (int c = 0; c < cols; c++) ref[idx[i] * cols + c] = src[i * cols + c];
        tbuf td;
        int64_t ne[2] = {rows, cols};
        CHECK_OK(tb_make(&td, be, HC_DTYPE_F32, 2, ne, dst));
        CHECK_OK(be->iface->set_rows(be, &td.t, src, idx, n));
        memset(src, 0, (size_t)n * cols * 4); /* the op must not read the host rows later */
        int g = tb_read(&td, got);
        expect_close(be->iface->name, "set_rows", "5 into 20x17", got, ref, (size_t)rows * cols,
                     0, g);
        tb_free(&td);
        free(dst), free(src), free(got), free(ref);
    }
}

/* Host metadata must be consumed at call time: several staged ops in flight with the host arrays
 * overwritten between calls (exercises a device backend's staging ring). */
static void test_staging(hc_backend *be) {
    const int rows = 64, cols = 33, n_ops = 12;
    float *src = malloc((size_t)rows * cols * 4), *got = malloc((size_t)cols * 4);
    rnd_fill(src, (size_t)rows * cols, -1, 1);
    tbuf ts, to;
    int64_t nes[2] = {rows, cols}, neo[2] = {n_ops, cols};
    CHECK_OK(tb_make(&ts, be, HC_DTYPE_F32, 2, nes, src));
    CHECK_OK(tb_make(&to, be, HC_DTYPE_F32, 2, neo, NULL));
    int32_t idx[1], want[12];
    for (int i = 0; i < n_ops; i++) {
        idx[0] = want[i] = rnd_i(0, rows - 1);
        hc_tensor row = hc_tensor_rows_view(&to.t, i, 1);
        CHECK_OK(be->iface->get_rows(be, &row, &ts.t, idx));
        idx[0] = -12345; /* clobber: the backend must have copied it */
    }
    float *all = malloc((size_t)n_ops * cols * 4);
    int g = tb_read(&to, all);
    double *ref = malloc((size_t)n_ops * cols * sizeof *ref);
    for (int i = 0; i < n_ops; i++)
        for (int c = 0; c < cols; c++) ref[i * cols + c] = src[want[i] * cols + c];
    expect_close(be->iface->name, "staging", "12 get_rows in flight", all, ref,
                 (size_t)n_ops * cols, 0, g);
    tb_free(&ts), tb_free(&to);
    free(src), free(got), free(all), free(ref);
}

/* ---- benchmark (HC_BENCH=1) ------------------------------------------------------------------------ */

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void bench_matmul(hc_backend *be, hc_dtype dt, int m, int n, int k, int iters) {
    tbuf tx, tw, to;
    int64_t nex[2] = {m, k}, new_[2] = {n, k}, neo[2] = {m, n};
    float *x = malloc((size_t)m * k * 4), *wf = malloc((size_t)n * k * 4);
    rnd_fill(x, (size_t)m * k, -1, 1);
    rnd_fill(wf, (size_t)n * k, -1, 1);
    void *w = from_f32_host(wf, dt, (size_t)n * k);
    if (tb_make(&tx, be, HC_DTYPE_F32, 2, nex, x) || tb_make(&tw, be, dt, 2, new_, w) ||
        tb_make(&to, be, HC_DTYPE_F32, 2, neo, NULL)) {
        printf("  matmul alloc failed\n");
        return;
    }
    be->iface->matmul(be, &to.t, &tx.t, &tw.t); /* warm-up */
    be->iface->synchronize(be);
    double t0 = now_s();
    for (int i = 0; i < iters; i++) be->iface->matmul(be, &to.t, &tx.t, &tw.t);
    be->iface->synchronize(be);
    double dt_s = (now_s() - t0) / iters;
    double gb = ((double)n * k * hc_dtype_size(dt) + (double)m * k * 4 + (double)m * n * 4) / 1e9;
    printf("%-6s matmul     %-5s m=%-5d n=%-6d k=%-6d %10.3f ms %9.1f GFLOP/s %8.1f GB/s\n",
           be->iface->name, hc_dtype_name(dt), m, n, k, dt_s * 1e3,
           2.0 * m * n * k / dt_s / 1e9, gb / dt_s);
    tb_free(&tx), tb_free(&tw), tb_free(&to);
    free(x), free(wf), free(w);
}

/* n_seq sequences, each with n_q query tokens at the end of a kv_len-long context, paged bs 16. */
static void bench_attention(hc_backend *be, int n_seq, int n_q, int kv_len, int iters) {
    const int n_heads = 32, n_kv = 8, hd = 128, bs = 16;
    const int nb = (kv_len + bs - 1) / bs, n_rows = n_seq * nb * bs, n_tokens = n_seq * n_q;
    int32_t *tables = malloc((size_t)n_seq * nb * 4);
    rnd_distinct(tables, n_seq * nb, n_seq * nb);
    int32_t *off = malloc((size_t)n_tokens * 4), *len = malloc((size_t)n_tokens * 4);
    for (int s = 0; s < n_seq; s++)
        for (int j = 0; j < n_q; j++) {
            off[s * n_q + j] = s * nb;
            len[s * n_q + j] = kv_len - (n_q - 1 - j);
        }
    const size_t kv_dim = (size_t)n_kv * hd, q_dim = (size_t)n_heads * hd;
    float *q = malloc((size_t)n_tokens * q_dim * 4), *kv = malloc((size_t)n_rows * kv_dim * 4);
    rnd_fill(q, (size_t)n_tokens * q_dim, -1, 1);
    rnd_fill(kv, (size_t)n_rows * kv_dim, -1, 1);
    tbuf tq, tk, tv, to;
    int64_t neq[2] = {n_tokens, (int64_t)q_dim}, nep[3] = {n_rows, n_kv, hd};
    if (tb_make(&tq, be, HC_DTYPE_F32, 2, neq, q) || tb_make(&tk, be, HC_DTYPE_F32, 3, nep, kv) ||
        tb_make(&tv, be, HC_DTYPE_F32, 3, nep, kv) || tb_make(&to, be, HC_DTYPE_F32, 2, neq, NULL)) {
        printf("  attention alloc failed\n");
        return;
    }
    hc_attn_args a = {n_tokens, n_heads, n_kv, hd, 1.0f / sqrtf((float)hd), bs, off, len, tables,
                      n_seq * nb};
    be->iface->attention(be, &to.t, &tq.t, &tk.t, &tv.t, &a);
    be->iface->synchronize(be);
    double t0 = now_s();
    for (int i = 0; i < iters; i++) be->iface->attention(be, &to.t, &tq.t, &tk.t, &tv.t, &a);
    be->iface->synchronize(be);
    double dt_s = (now_s() - t0) / iters;
    /* bytes if each sequence's K/V is read once per kv head (the floor for decode) */
    double gb = (double)n_seq * kv_len * kv_dim * 4 * 2 / 1e9;
    printf("%-6s attention  seqs=%-3d q/seq=%-4d kv_len=%-5d h=32/8 d=128 %10.3f ms %8.1f GB/s "
           "(K/V once)\n",
           be->iface->name, n_seq, n_q, kv_len, dt_s * 1e3, gb / dt_s);
    tb_free(&tq), tb_free(&tk), tb_free(&tv), tb_free(&to);
    free(tables), free(off), free(len), free(q), free(kv);
}

/* HC_BENCH=smallm: matmul time over m, the shapes of the ~100M bench model (2048 x 768, 768 x
 * 2048) and TinyLlama (5632 x 2048), to place the small-M kernel / sgemm crossover (run one build
 * with the default HC_CPU_SMALLM_MAX and one with -DHC_CPU_SMALLM_MAX=0, interleaved). */
static void bench_smallm(hc_backend *be) {
    static const int ms[] = {1, 2, 4, 8, 16, 24, 32, 40, 48, 64};
    static const int nk[][2] = {{2048, 768}, {768, 2048}, {5632, 2048}};
    printf("\nsmallm sweep, HC_CPU_SMALLM_MAX %d\n", HC_CPU_SMALLM_MAX);
    for (int s = 0; s < 3; s++)
        for (int d = 0; d < 2; d++)
            for (size_t i = 0; i < sizeof ms / sizeof ms[0]; i++)
                bench_matmul(be, d ? HC_DTYPE_F32 : HC_DTYPE_BF16, ms[i], nk[s][0], nk[s][1],
                             ms[i] <= 8 ? 20 : 8);
}

static void bench(hc_backend *be) {
    const int gpu = strcmp(be->iface->name, "cpu") != 0;
    const int it = gpu ? 50 : 3;
    printf("\n");
    bench_matmul(be, HC_DTYPE_BF16, 1, 4096, 4096, it);
    bench_matmul(be, HC_DTYPE_BF16, 8, 4096, 4096, it);
    bench_matmul(be, HC_DTYPE_F32, 1, 4096, 4096, it);
    bench_matmul(be, HC_DTYPE_BF16, gpu ? 2048 : 128, 4096, 4096, gpu ? 10 : 1);
    bench_matmul(be, HC_DTYPE_F32, gpu ? 2048 : 128, 4096, 4096, gpu ? 10 : 1);
    bench_attention(be, gpu ? 32 : 2, 1, gpu ? 4096 : 512, it);
    bench_attention(be, 1, gpu ? 512 : 32, gpu ? 2048 : 256, gpu ? 10 : 1);
}

/* ---- main ------------------------------------------------------------------------------------------ */

static void run_all(hc_backend *be) {
    int before = hc_test_failures;
    test_matmul(be);
    test_rmsnorm(be);
    test_rope(be);
    test_attention(be);
    test_kv_store(be);
    test_swiglu_add(be);
    test_rows(be);
    test_staging(be);
    printf("backend %-5s: %s; worst rel err per op:", be->iface->name,
           hc_test_failures == before ? "all ops agree" : "FAILURES");
    for (int i = 0; i < g_n_worst; i++) printf(" %s %.2g", g_worst_name[i], g_worst[i]);
    printf("\n");
    g_n_worst = 0;
}

int main(int argc, char **argv) {
    (void)argc, (void)argv;
    const char *seed = getenv("HC_TEST_SEED");
    if (seed && *seed) g_rng = strtoull(seed, NULL, 0) * 0x9E3779B97F4A7C15ull + 1;
    printf("test_backend_ops: seed %s\n", seed && *seed ? seed : "default");
    const char *bench_env = getenv("HC_BENCH"), *bench_only = getenv("HC_BENCH_BACKEND");
    const int do_bench = bench_env && *bench_env && strcmp(bench_env, "0") != 0;

    const char *only = getenv("HC_TEST_BACKEND"); /* "cpu" or "cuda": test just that one */
    hc_backend *cpu = NULL;
    if (!only || strcmp(only, "cuda") != 0)
        CHECK_OK(hc_backend_create(&cpu, HC_BACKEND_CPU, 0, NULL));
    if (cpu) {
        run_all(cpu);
        if (do_bench && !strcmp(bench_env, "smallm")) bench_smallm(cpu);
        else if (do_bench && (!bench_only || !strcmp(bench_only, "cpu"))) bench(cpu);
        hc_backend_free(cpu);
        /* every kernel level this CPU supports (cpu_isa.h), each against the same reference */
        for (int isa = HC_CPU_ISA_PORTABLE; isa < HC_CPU_ISA_COUNT; isa++) {
            if (!hc_cpu_isa_supported((hc_cpu_isa)isa)) continue;
            hc_backend_params p = hc_backend_default_params();
            p.cpu_isa = isa;
            hc_backend *be = NULL;
            CHECK_OK(hc_backend_cpu_create_ex(&be, &p));
            CHECK(hc_backend_cpu_isa(be) == isa);
            printf("test_backend_ops: cpu isa %s\n", hc_cpu_isa_name((hc_cpu_isa)isa));
            run_all(be);
            hc_backend_free(be);
            test_matmul_smallm((hc_cpu_isa)isa);
        }
        /* each prefill GEMM library this build has (OpenBLAS always, oneDNN when found), both
         * compute modes; a library the build lacks is refused */
        for (int lib = HC_CPU_GEMM_OPENBLAS; lib < HC_CPU_GEMM_COUNT; lib++) {
            hc_backend_params p = hc_backend_default_params();
            p.cpu_gemm = lib;
            hc_backend *be = NULL;
            int rc = hc_backend_cpu_create_ex(&be, &p);
            if (!hc_cpu_gemm_built(lib)) {
                CHECKF(rc == HC_ERR_UNSUPPORTED && !be, "cpu_gemm %s not built, yet create gave %d",
                       hc_cpu_gemm_name(lib), rc);
                printf("test_backend_ops: cpu gemm %s not in this build\n", hc_cpu_gemm_name(lib));
                continue;
            }
            CHECK_OK(rc);
            if (!be) continue;
            printf("test_backend_ops: cpu gemm %s\n", hc_cpu_gemm_name(lib));
            run_all(be);
            hc_backend_free(be);
            test_matmul_prefill((hc_cpu_gemm)lib, HC_COMPUTE_F32);
            test_matmul_prefill((hc_cpu_gemm)lib, HC_COMPUTE_BF16);
        }
#ifdef HC_HAVE_DNNL
        CHECK(hc_cpu_gemm_built(HC_CPU_GEMM_DNNL));
#else
        CHECK(!hc_cpu_gemm_built(HC_CPU_GEMM_DNNL));
#endif
        {
            hc_backend *be = NULL;
            CHECK_OK(hc_backend_cpu_create(&be, 1));
            CHECK(hc_backend_cpu_gemm(be) ==
                  (hc_cpu_gemm_built(HC_CPU_GEMM_DNNL) ? HC_CPU_GEMM_DNNL : HC_CPU_GEMM_OPENBLAS));
            CHECK(hc_backend_cpu_compute(be) == HC_COMPUTE_F32);
            hc_backend_free(be);
            hc_backend_params p = hc_backend_default_params();
            p.compute = HC_COMPUTE_COUNT;
            CHECK(hc_backend_cpu_create_ex(&be, &p) == HC_ERR_INVAL && !be);
            p.compute = HC_COMPUTE_BF16;
            hc_errbuf eb = {{0}};
            CHECK(hc_backend_create_ex(&be, HC_BACKEND_CUDA, &p, &eb) == HC_ERR_UNSUPPORTED && !be);
            hc_compute cm;
            CHECK(hc_compute_parse("bf16", &cm) == HC_OK && cm == HC_COMPUTE_BF16);
            CHECK(hc_compute_parse("fp8", &cm) == HC_ERR_INVAL);
        }
    }

    hc_backend *cuda = NULL;
    hc_errbuf eb = {{0}};
    int rc = only && !strcmp(only, "cpu")
                 ? hc_seterr(&eb, HC_ERR_NODEVICE, "HC_TEST_BACKEND=cpu")
                 : hc_backend_create(&cuda, HC_BACKEND_CUDA, 0, &eb);
    const char *expect = getenv("HC_EXPECT_CUDA");
    if (rc == HC_OK) {
        run_all(cuda);
        if (do_bench && (!bench_only || !strcmp(bench_only, "cuda"))) bench(cuda);
        hc_backend_free(cuda);
    } else {
        printf("backend cuda : not available (%s: %s), skipped\n", hc_errname(rc), eb.msg);
        CHECKF(!(expect && *expect == '1'), "HC_EXPECT_CUDA=1 but the CUDA backend failed: %s",
               eb.msg);
    }
    return hc_test_finish("test_backend_ops");
}
