/* test_llm_parity_bf16.c: the bf16 compute mode (hc_backend_params.compute = HC_COMPUTE_BF16:
 * matmul activations rounded to bf16, f32 accumulation; everything else f32) against the
 * transformers fixtures in tests/data/llm/ (the f32 reference; tests/reference/make_llm_fixtures.py),
 * for every fixture, weights as stored, with each prefill GEMM library the build has.
 *
 * bf16 rounding changes each activation by up to 2^-9 relative, so the f32 tolerances of
 * test_llm_parity do not apply; the documented ones here are:
 *  - final-norm hidden states of the "single" and "packed" cases: per token, cosine with the
 *    reference >= 1 - 1e-3 (COS_TOL);
 *  - next-token ids where the reference is decided: at every position of those cases whose
 *    reference logit margin (top-1 minus top-2) is at least MARGIN_TOL = 0.1, the bf16 argmax is
 *    the reference's (at least one such position per fixture, so the check always runs);
 *  - the same positions through the paged KV cache (prefill chunk, then token by token: both
 *    matmul paths);
 *  - the mode does round: the bf16 hidden states are not bit-identical to the f32 mode's.
 * Measured when written (both libraries, this machine): worst cosine 1 - 1.3e-4, 224 of 224
 * decided positions agree; the tolerances leave room for another summation order (library, ISA,
 * thread count). A mode that does not round at all is caught by the last check. */
#include <dirent.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "backend/backend.h"
#include "io/safetensors.h"
#include "model/llm.h"
#include "testutil.h"

#define COS_TOL 1e-3
#define MARGIN_TOL 0.1

static double g_worst_cos = 1.0;
static long g_margin_pos, g_margin_agree;

static int argmax(const float *v, int n, float *margin) {
    int best = 0;
    for (int i = 1; i < n; i++)
        if (v[i] > v[best]) best = i;
    float second = -INFINITY;
    for (int i = 0; i < n; i++)
        if (i != best && v[i] > second) second = v[i];
    if (margin) *margin = v[best] - second;
    return best;
}

static double cosine(const float *a, const float *b, int n) {
    double ab = 0, aa = 0, bb = 0;
    for (int i = 0; i < n; i++) {
        ab += (double)a[i] * b[i];
        aa += (double)a[i] * a[i];
        bb += (double)b[i] * b[i];
    }
    return ab / (sqrt(aa * bb) + 1e-300);
}

/* next-token agreement at the decided positions; returns how many positions were decided */
static int check_ids(const char *what, const float *lg, const float *ref, int n, int V) {
    int decided = 0;
    for (int t = 0; t < n; t++) {
        float margin;
        int want = argmax(ref + (size_t)t * V, V, &margin);
        if (margin < MARGIN_TOL) continue;
        decided++;
        int got = argmax(lg + (size_t)t * V, V, NULL);
        g_margin_pos++;
        g_margin_agree += got == want;
        CHECKF(got == want, "%s: position %d (reference margin %.3f): bf16 argmax %d, want %d",
               what, t, margin, got, want);
    }
    return decided;
}

static const hc_st_tensor *need(const hc_safetensors *st, const char *cs, const char *key) {
    char name[128];
    snprintf(name, sizeof name, "%s.%s", cs, key);
    const hc_st_tensor *t = hc_st_find(st, name);
    CHECKF(t != NULL, "fixture tensor %s missing", name);
    return t;
}

static void run_case(hc_llm *m, hc_llm *m32, const hc_safetensors *ref, const char *fx,
                     const char *cs, int *decided) {
    const int E = m->cfg.hidden_size, V = m->cfg.vocab_size;
    const hc_st_tensor *ti = need(ref, cs, "ids"), *tp = need(ref, cs, "pos"),
                       *ts = need(ref, cs, "seg"), *th = need(ref, cs, "hidden"),
                       *tl = need(ref, cs, "logits");
    if (!ti || !tp || !ts || !th || !tl) return;
    const int n = (int)ti->shape[0];
    const int32_t *ids = ti->data, *pos = tp->data, *seg = ts->data;
    int32_t *out_idx = malloc(sizeof(int32_t) * (size_t)n);
    for (int i = 0; i < n; i++) out_idx[i] = i;
    float *hid = malloc(sizeof(float) * (size_t)n * E), *hid32 = malloc(sizeof(float) * (size_t)n * E);
    float *lg = malloc(sizeof(float) * (size_t)n * V);
    hc_batch b = {.n_tokens = n, .token = ids, .pos = pos, .seg = seg, .n_out = n,
                  .out_idx = out_idx};
    hc_errbuf eb = {{0}};
    char what[160];
    snprintf(what, sizeof what, "%s %s", fx, cs);
    int rc = hc_llm_forward(m, &b, NULL, NULL, hid, lg, &eb);
    CHECKF(rc == 0, "%s: forward failed: %s", what, eb.msg);
    rc = rc ? rc : hc_llm_forward(m32, &b, NULL, NULL, hid32, NULL, &eb);
    CHECKF(rc == 0, "%s: f32 forward failed: %s", what, eb.msg);
    if (rc == 0) {
        for (int t = 0; t < n; t++) {
            double c = cosine(hid + (size_t)t * E, (const float *)th->data + (size_t)t * E, E);
            if (c < g_worst_cos) g_worst_cos = c;
            CHECKF(c >= 1 - COS_TOL, "%s: token %d hidden cosine %.6f < 1 - %g", what, t, c, COS_TOL);
        }
        CHECKF(memcmp(hid, hid32, sizeof(float) * (size_t)n * E) != 0,
               "%s: bf16 compute gave exactly the f32 hidden states (no rounding?)", what);
        *decided += check_ids(what, lg, tl->data, n, V);
    }
    /* the same case through the KV cache, one sequence per segment: a 5-token chunk (prefill
     * GEMM when the model is wide enough, else small-M) and then single tokens (small-M) */
    hc_kv_cache *kv = NULL;
    CHECK_OK(hc_llm_kv_create(m, &kv, 4, 64));
    int n_seg = seg[n - 1] + 1, s_id = -1;
    for (int s = 0, t0 = 0; s < n_seg && kv; s++) {
        CHECK_OK(hc_kv_seq_new(kv, &s_id));
        int t1 = t0;
        while (t1 < n && seg[t1] == s) t1++;
        for (int t = t0; t < t1;) {
            int chunk = t == t0 ? 5 : 1;
            if (t + chunk > t1) chunk = t1 - t;
            int32_t seg0[8] = {0}, idx[8];
            for (int i = 0; i < chunk; i++) idx[i] = i;
            hc_batch bc = {.n_tokens = chunk, .token = ids + t, .pos = pos + t, .seg = seg0,
                           .n_out = chunk, .out_idx = idx};
            rc = hc_llm_forward(m, &bc, kv, &s_id, NULL, lg + (size_t)t * V, &eb);
            CHECKF(rc == 0, "%s cached: %s", what, eb.msg);
            if (rc) break;
            t += chunk;
        }
        hc_kv_seq_free(kv, s_id);
        t0 = t1;
    }
    if (rc == 0) {
        snprintf(what, sizeof what, "%s %s (KV cache)", fx, cs);
        check_ids(what, lg, tl->data, n, V);
    }
    hc_kv_free(kv);
    free(out_idx), free(hid), free(hid32), free(lg);
}

static void run_fixture(hc_backend *be, hc_backend *be32, const char *root, const char *fx) {
    char dir[1400], refp[1500];
    snprintf(dir, sizeof dir, "%s/%s", root, fx);
    snprintf(refp, sizeof refp, "%s/reference.safetensors", dir);
    hc_errbuf eb = {{0}};
    hc_safetensors *ref = NULL;
    int rc = hc_st_open(&ref, refp, &eb);
    CHECKF(rc == 0, "%s: %s", fx, eb.msg);
    if (rc) return;
    hc_llm_params p = hc_llm_default_params();
    hc_llm *m = NULL, *m32 = NULL;
    rc = hc_llm_load(&m, be, dir, &p, &eb);
    CHECKF(rc == 0, "%s: load: %s", fx, eb.msg);
    if (rc == 0) rc = hc_llm_load(&m32, be32, dir, &p, &eb);
    CHECKF(rc == 0, "%s: load (f32): %s", fx, eb.msg);
    if (rc == 0) {
        int decided = 0;
        run_case(m, m32, ref, fx, "single", &decided);
        run_case(m, m32, ref, fx, "packed", &decided);
        CHECKF(decided > 0, "%s: no position with a reference margin >= %g", fx, MARGIN_TOL);
    }
    hc_llm_free(m);
    hc_llm_free(m32);
    hc_st_close(ref);
}

static int cmp_str(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

int main(int argc, char **argv) {
    const char *tests = argc > 1 ? argv[1] : "tests";
    char root[1024];
    snprintf(root, sizeof root, "%s/data/llm", tests);
    DIR *d = opendir(root);
    CHECKF(d != NULL, "cannot open %s", root);
    char *names[64];
    int n = 0;
    struct dirent *e;
    while (d && (e = readdir(d)) && n < 64)
        if (e->d_name[0] != '.') names[n++] = strdup(e->d_name);
    if (d) closedir(d);
    qsort(names, (size_t)n, sizeof *names, cmp_str);
    CHECKF(n >= 5, "expected at least 5 fixtures, found %d", n);
    for (int lib = HC_CPU_GEMM_OPENBLAS; lib < HC_CPU_GEMM_COUNT; lib++) {
        if (!hc_cpu_gemm_built(lib)) continue;
        hc_backend_params bp = hc_backend_default_params();
        bp.n_threads = 2;
        bp.cpu_gemm = lib;
        hc_backend *be32 = NULL, *be = NULL;
        CHECK_OK(hc_backend_cpu_create_ex(&be32, &bp));
        bp.compute = HC_COMPUTE_BF16;
        CHECK_OK(hc_backend_cpu_create_ex(&be, &bp));
        if (!be || !be32) break;
        g_worst_cos = 1.0;
        g_margin_pos = g_margin_agree = 0;
        for (int i = 0; i < n; i++) {
            int before = hc_test_failures;
            run_fixture(be, be32, root, names[i]);
            printf("%-8s %-24s %s\n", hc_cpu_gemm_name(lib), names[i],
                   hc_test_failures == before ? "ok" : "FAILED");
        }
        printf("bf16 compute, %s: worst hidden cosine 1 - %.3g (tolerance 1 - %g); %ld/%ld decided "
               "positions agree\n", hc_cpu_gemm_name(lib), 1 - g_worst_cos, COS_TOL, g_margin_agree,
               g_margin_pos);
        hc_backend_free(be);
        hc_backend_free(be32);
    }
    for (int i = 0; i < n; i++) free(names[i]);
    return hc_test_finish("test_llm_parity_bf16");
}
