/* test_cluster.c: the FAISS path (engine/creator/cluster.h).
 *  (a) k-means on 8 well-separated Gaussian blobs (d = 32, 100 points each) recovers them: every
 *      centroid is near a true center and the partition equals the truth up to relabeling;
 *  (b) assignment under IP / COSINE / L2 equals a brute-force argmax (argmin for L2) written here,
 *      ties going to the lowest index (integer-valued data makes IP and L2 scores exact, so ties
 *      are real ties), for 7 and for 500 queries at once; batched equals one query at a time;
 *  (c) centroids save/load round trip (safetensors, "centroids" F32 (k, d));
 *  (d) bad arguments give errors, not crashes.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "creator/cluster.h"
#include "io/safetensors.h"
#include "testutil.h"

static uint64_t g_rng = 0x9E3779B97F4A7C15ull;
static uint32_t rnd_u32(void) {
    g_rng ^= g_rng << 13;
    g_rng ^= g_rng >> 7;
    g_rng ^= g_rng << 17;
    return (uint32_t)(g_rng >> 32);
}
static double rnd_unif(void) { return (rnd_u32() + 0.5) / 4294967296.0; }
static double rnd_gauss(void) {
    return sqrt(-2.0 * log(rnd_unif())) * cos(6.283185307179586 * rnd_unif());
}

static double dist2(const float *a, const float *b, int d) {
    double s = 0;
    for (int j = 0; j < d; j++) s += ((double)a[j] - b[j]) * ((double)a[j] - b[j]);
    return s;
}
static double dot(const float *a, const float *b, int d) {
    double s = 0;
    for (int j = 0; j < d; j++) s += (double)a[j] * b[j];
    return s;
}

/* ---- (a) --------------------------------------------------------------------------------------- */
static void test_kmeans_blobs(void) {
    enum { K = 8, D = 32, PER = 100, N = K * PER };
    float *centers = malloc(sizeof(float) * K * D);
    float *x = malloc(sizeof(float) * N * D);
    float *found = malloc(sizeof(float) * K * D);
    int truth[N];
    for (int c = 0; c < K; c++)
        for (int j = 0; j < D; j++) centers[c * D + j] = (float)(20.0 * rnd_unif() - 10.0);
    for (int i = 0; i < N; i++) {
        int c = (i * 7 + 3) % K; /* interleaved, so the order carries no hint */
        truth[i] = c;
        for (int j = 0; j < D; j++) x[i * D + j] = centers[c * D + j] + (float)(0.1 * rnd_gauss());
    }
    hc_kmeans_params p;
    hc_kmeans_params_init(&p);
    CHECK(p.niter == 40 && p.nredo == 2 && p.seed == 1234 && p.max_points_per_centroid == 256);
    p.nredo = 10; /* random init + Lloyd can merge two blobs; keep the best of 10 (deterministic) */
    hc_errbuf eb = {{0}};
    double obj = -1;
    int rc = hc_kmeans(found, x, N, D, K, &p, &obj, &eb);
    CHECKF(rc == 0, "%s", eb.msg);
    if (rc == 0) {
        int map[K]; /* found -> true */
        int used[K] = {0};
        for (int f = 0; f < K; f++) {
            int best = -1;
            double bd = 1e30;
            for (int c = 0; c < K; c++) {
                double dd = dist2(found + f * D, centers + c * D, D);
                if (dd < bd) bd = dd, best = c;
            }
            map[f] = best;
            used[best]++;
            CHECKF(sqrt(bd) < 0.1, "centroid %d is %.4f from the nearest true center", f, sqrt(bd));
        }
        for (int c = 0; c < K; c++) CHECKF(used[c] == 1, "true center %d matched %d times", c, used[c]);
        /* Objective: N points with per-coordinate noise 0.1 -> about N * D * 0.01. */
        CHECKF(obj > 0 && obj < 1.5 * N * D * 0.01, "objective %g", obj);

        hc_cluster_index *ci = NULL;
        CHECK_OK(hc_cluster_index_init(&ci, found, K, D, HC_ASSIGN_L2, 0, &eb));
        int32_t ids[N];
        CHECK_OK(hc_cluster_assign(ci, x, N, ids, NULL, &eb));
        int wrong = 0;
        for (int i = 0; i < N; i++) wrong += map[ids[i]] != truth[i];
        CHECKF(wrong == 0, "%d of %d points in the wrong cluster", wrong, N);
        hc_cluster_index_free(ci);
    }
    /* No subsampling (max_points_per_centroid = 0) and one thread give the same clusters. */
    p.max_points_per_centroid = 0;
    p.n_threads = 1;
    double obj2 = -1;
    CHECK_OK(hc_kmeans(found, x, N, D, K, &p, &obj2, &eb));
    CHECKF(fabs(obj2 - obj) < 1e-3 * obj, "objective %g vs %g", obj2, obj);
    free(centers);
    free(x);
    free(found);
}

/* ---- (b) --------------------------------------------------------------------------------------- */
static void brute(const float *c, int k, int d, const float *q, hc_assign_rule rule, int32_t *id,
                  double *score) {
    double qn = sqrt(dot(q, q, d));
    int best = -1;
    double bs = 0;
    for (int j = 0; j < k; j++) {
        double s;
        if (rule == HC_ASSIGN_L2) s = dist2(q, c + j * d, d);
        else if (rule == HC_ASSIGN_IP) s = dot(q, c + j * d, d);
        else s = dot(q, c + j * d, d) / (qn * sqrt(dot(c + j * d, c + j * d, d)));
        int better = best < 0 || (rule == HC_ASSIGN_L2 ? s < bs : s > bs); /* strict: lowest wins */
        if (better) best = j, bs = s;
    }
    *id = best;
    *score = bs;
}

static void assign_case(hc_assign_rule rule, int n, int integer_data) {
    enum { K = 13, D = 16 };
    float c[K * D];
    float *q = malloc(sizeof(float) * (size_t)n * D);
    int32_t *ids = malloc(sizeof(int32_t) * (size_t)n);
    float *sc = malloc(sizeof(float) * (size_t)n);
    for (int i = 0; i < K * D; i++)
        c[i] = integer_data ? (float)((int)(rnd_u32() % 5) - 2) : (float)rnd_gauss();
    memcpy(c + 9 * D, c + 4 * D, sizeof(float) * D);  /* duplicate: 4 must win over 9 */
    memcpy(c + 12 * D, c + 0 * D, sizeof(float) * D); /* duplicate: 0 must win over 12 */
    for (int j = 0; j < K; j++) /* no zero centroid (cosine) */
        if (dot(c + j * D, c + j * D, D) == 0) c[j * D] = 1;
    for (int i = 0; i < n * D; i++)
        q[i] = integer_data ? (float)((int)(rnd_u32() % 5) - 2) : (float)rnd_gauss();
    for (int i = 0; i < n; i++) /* a few queries equal to a duplicated centroid: exact ties */
        if (i % 10 == 3) memcpy(q + i * D, c + ((i / 10) % 2 ? 4 : 0) * D, sizeof(float) * D);
    for (int i = 0; i < n; i++)
        if (dot(q + i * D, q + i * D, D) == 0) q[i * D] = 1;

    hc_cluster_index *ci = NULL;
    hc_errbuf eb = {{0}};
    int rc = hc_cluster_index_init(&ci, c, K, D, rule, 0, &eb);
    CHECKF(rc == 0, "%s", eb.msg);
    if (rc) goto out;
    CHECK(hc_cluster_index_k(ci) == K && hc_cluster_index_d(ci) == D && hc_cluster_index_rule(ci) == rule);
    CHECK(memcmp(hc_cluster_index_centroids(ci), c, sizeof c) == 0);
    rc = hc_cluster_assign(ci, q, n, ids, sc, &eb);
    CHECKF(rc == 0, "%s", eb.msg);
    int mism = 0;
    for (int i = 0; i < n && rc == 0; i++) {
        int32_t bid;
        double bs;
        brute(c, K, D, q + i * D, rule, &bid, &bs);
        CHECKF(fabs(sc[i] - bs) <= 1e-4 * (1 + fabs(bs)), "%s n=%d row %d: score %g vs %g",
               hc_assign_rule_name(rule), n, i, sc[i], bs);
        if (ids[i] == bid) continue;
        /* Only float rounding may reorder two candidates, and only if their true scores are
         * within rounding of each other; integer data must match exactly. */
        int32_t j = ids[i];
        double sj = rule == HC_ASSIGN_L2   ? dist2(q + i * D, c + j * D, D)
                    : rule == HC_ASSIGN_IP ? dot(q + i * D, c + j * D, D)
                                           : dot(q + i * D, c + j * D, D) /
                                                     sqrt(dot(q + i * D, q + i * D, D) * dot(c + j * D, c + j * D, D));
        if (integer_data || fabs(sj - bs) > 1e-5) mism++;
    }
    CHECKF(mism == 0, "%s n=%d integer=%d: %d assignments differ from brute force",
           hc_assign_rule_name(rule), n, integer_data, mism);
    /* Batched equals one query at a time, bit for bit. */
    for (int i = 0; i < n && rc == 0; i++) {
        int32_t id1 = -1;
        float s1 = 0;
        CHECK_OK(hc_cluster_assign(ci, q + i * D, 1, &id1, &s1, &eb));
        CHECKF(id1 == ids[i] && memcmp(&s1, &sc[i], sizeof s1) == 0, "%s row %d: batched %d, alone %d",
               hc_assign_rule_name(rule), i, ids[i], id1);
    }
    /* The duplicated centroids: the higher copy never wins. */
    for (int i = 0; i < n && rc == 0; i++) CHECK(ids[i] != 9 && ids[i] != 12);
out:
    hc_cluster_index_free(ci);
    free(q);
    free(ids);
    free(sc);
}

static void test_assign(void) {
    const hc_assign_rule rules[] = {HC_ASSIGN_IP, HC_ASSIGN_COSINE, HC_ASSIGN_L2};
    for (int r = 0; r < 3; r++) {
        assign_case(rules[r], 7, 1);   /* FAISS's direct path */
        assign_case(rules[r], 500, 1); /* FAISS's BLAS path */
        assign_case(rules[r], 7, 0);
        assign_case(rules[r], 500, 0);
    }
    hc_assign_rule rr;
    CHECK(hc_assign_rule_parse(&rr, "cosine", NULL) == 0 && rr == HC_ASSIGN_COSINE);
    CHECK(hc_assign_rule_parse(&rr, "inner_product", NULL) == 0 && rr == HC_ASSIGN_IP);
    CHECK(hc_assign_rule_parse(&rr, "l2", NULL) == 0 && rr == HC_ASSIGN_L2);
    CHECK(hc_assign_rule_parse(&rr, "dot", NULL) == HC_ERR_INVAL);
}

/* ---- (c) --------------------------------------------------------------------------------------- */
static void test_save_load(void) {
    enum { K = 5, D = 7 };
    float c[K * D];
    for (int i = 0; i < K * D; i++) c[i] = (float)rnd_gauss();
    char path[] = "/tmp/hc_test_centroids_XXXXXX";
    int fd = mkstemp(path);
    CHECK(fd >= 0);
    if (fd < 0) return;
    close(fd);
    hc_errbuf eb = {{0}};
    CHECK_OK(hc_centroids_save(path, c, K, D, &eb));
    float *back = NULL;
    int k = 0, d = 0;
    int rc = hc_centroids_load(&back, &k, &d, path, &eb);
    CHECKF(rc == 0, "%s", eb.msg);
    CHECK(k == K && d == D);
    if (back) CHECK(memcmp(back, c, sizeof c) == 0);
    free(back);
    /* The file is plain safetensors: one tensor "centroids" F32 (K, D). */
    hc_safetensors *st = NULL;
    CHECK_OK(hc_st_open(&st, path, &eb));
    if (st) {
        const hc_st_tensor *t = hc_st_find(st, "centroids");
        CHECK(t && t->dtype == HC_DTYPE_F32 && t->n_dims == 2 && t->shape[0] == K && t->shape[1] == D);
        CHECK(hc_st_count(st) == 1);
        hc_st_close(st);
    }
    /* A safetensors file without "centroids" is a format error naming it. */
    hc_st_write_item item = {.name = "other", .dtype = HC_DTYPE_F32, .n_dims = 2, .shape = {K, D}, .data = c};
    CHECK_OK(hc_st_write(path, &item, 1, &eb));
    back = NULL;
    CHECK(hc_centroids_load(&back, &k, &d, path, &eb) == HC_ERR_FORMAT && back == NULL);
    CHECK(strstr(eb.msg, "centroids") != NULL);
    /* Wrong rank. */
    item.name = "centroids";
    item.n_dims = 1;
    item.shape[0] = K * D;
    CHECK_OK(hc_st_write(path, &item, 1, &eb));
    CHECK(hc_centroids_load(&back, &k, &d, path, &eb) == HC_ERR_FORMAT && back == NULL);
    unlink(path);
    CHECK(hc_centroids_load(&back, &k, &d, path, &eb) < 0 && back == NULL);
}

/* ---- (d) --------------------------------------------------------------------------------------- */
static void test_bad_args(void) {
    enum { N = 10, D = 4 };
    float x[N * D], c[3 * D];
    for (int i = 0; i < N * D; i++) x[i] = (float)rnd_gauss();
    hc_errbuf eb = {{0}};
    CHECK(hc_kmeans(c, x, N, D, N + 1, NULL, NULL, &eb) == HC_ERR_INVAL); /* k > n */
    CHECK(strstr(eb.msg, "at least") != NULL);
    CHECK(hc_kmeans(c, x, N, 0, 3, NULL, NULL, &eb) == HC_ERR_INVAL);
    CHECK(hc_kmeans(c, x, N, -1, 3, NULL, NULL, &eb) == HC_ERR_INVAL);
    CHECK(hc_kmeans(c, x, N, D, 0, NULL, NULL, &eb) == HC_ERR_INVAL);
    CHECK(hc_kmeans(NULL, x, N, D, 3, NULL, NULL, &eb) == HC_ERR_INVAL);
    CHECK(hc_kmeans(c, x, N, D, 3, NULL, NULL, NULL) == HC_ERR_INVAL ||
          hc_kmeans(c, x, N, D, 3, NULL, NULL, NULL) == 0); /* NULL eb allowed */
    x[5] = NAN;
    CHECK(hc_kmeans(c, x, N, D, 3, NULL, NULL, &eb) == HC_ERR_INVAL);
    CHECK(strstr(eb.msg, "NaN") != NULL);
    x[5] = 0.5f;
    hc_kmeans_params p;
    hc_kmeans_params_init(&p);
    p.niter = 0;
    CHECK(hc_kmeans(c, x, N, D, 3, &p, NULL, &eb) == HC_ERR_INVAL);
    hc_kmeans_params_init(&p);
    CHECK_OK(hc_kmeans(c, x, N, D, 3, &p, NULL, &eb)); /* n < 39 k: still trains */
    CHECK_OK(hc_kmeans(c, x, 3, D, 3, &p, NULL, &eb)); /* k == n */

    hc_cluster_index *ci = NULL;
    CHECK(hc_cluster_index_init(&ci, c, 3, 0, HC_ASSIGN_IP, 0, &eb) == HC_ERR_INVAL && !ci);
    CHECK(hc_cluster_index_init(&ci, c, 0, D, HC_ASSIGN_IP, 0, &eb) == HC_ERR_INVAL && !ci);
    CHECK(hc_cluster_index_init(&ci, c, 3, D, (hc_assign_rule)7, 0, &eb) == HC_ERR_INVAL && !ci);
    float zc[3 * D] = {0};
    zc[0] = 1;
    CHECK(hc_cluster_index_init(&ci, zc, 3, D, HC_ASSIGN_COSINE, 0, &eb) == HC_ERR_INVAL && !ci);
    CHECK(strstr(eb.msg, "zero norm") != NULL);
    float cnan[3 * D];
    memcpy(cnan, c, sizeof cnan);
    cnan[2] = INFINITY;
    CHECK(hc_cluster_index_init(&ci, cnan, 3, D, HC_ASSIGN_L2, 0, &eb) == HC_ERR_INVAL && !ci);

    CHECK_OK(hc_cluster_index_init(&ci, c, 3, D, HC_ASSIGN_COSINE, 0, &eb));
    int32_t ids[N];
    float q[2 * D] = {0};
    q[D] = 1;
    CHECK(hc_cluster_assign(ci, q, 2, ids, NULL, &eb) == HC_ERR_INVAL); /* zero query row */
    q[0] = NAN;
    CHECK(hc_cluster_assign(ci, q, 2, ids, NULL, &eb) == HC_ERR_INVAL);
    CHECK(hc_cluster_assign(ci, x, -1, ids, NULL, &eb) == HC_ERR_INVAL);
    CHECK(hc_cluster_assign(ci, NULL, 2, ids, NULL, &eb) == HC_ERR_INVAL);
    CHECK_OK(hc_cluster_assign(ci, x, 0, ids, NULL, &eb));
    hc_cluster_index_free(ci);
    hc_cluster_index_free(NULL);
    CHECK(hc_centroids_save("/nonexistent-dir/c.safetensors", c, 3, D, &eb) < 0);
    CHECK(hc_centroids_save("/tmp/x.safetensors", c, 0, D, &eb) == HC_ERR_INVAL);
}

int main(int argc, char **argv) {
    (void)argc;
    (void)argv;
    test_kmeans_blobs();
    test_assign();
    test_save_load();
    test_bad_args();
    return hc_test_finish("test_cluster");
}
