/* cluster.c: k-means and nearest-centroid assignment over the FAISS C API (see cluster.h).
 *
 * Plain C11: the only FAISS entry points used are the C API's (faiss/c_api/ headers), served either by
 * a system libfaiss_c or by engine/creator/faiss_c_shim.cpp. Every argument is validated here, before
 * FAISS sees it, because FAISS's own checks throw (turned into codes by the C API) or, for NaN
 * input, silently return label -1.
 */
#include "creator/cluster.h"

#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <omp.h>

#include <faiss/c_api/Clustering_c.h>
#include <faiss/c_api/IndexFlat_c.h>
#include <faiss/c_api/Index_c.h>
#include <faiss/c_api/error_c.h>

#include "io/safetensors.h"

/* Queries go to faiss_Index_search this many rows at a time. FAISS scores fewer than
 * distance_compute_blas_threshold (20) queries with its direct kernel, one query at a time, and
 * more with a BLAS matrix product whose rounding depends on where a centroid falls in the product's
 * blocking. Staying under 20 makes a query's result independent of the batch it came in (batched
 * equals one-at-a-time) and makes bit-identical scores tie exactly, so the lowest index wins (the
 * direct kernel replaces its best only on a strictly better score). Cost: no BLAS for assignment,
 * n * k * d multiply-adds, small next to the LLMs that produce the vectors. */
#define HC_CLUSTER_CHUNK 16

struct hc_cluster_index {
    FaissIndex *index;       /* flat IP (IP, COSINE) or flat L2 over the (normalized) centroids */
    float *centroids;        /* (k, d) as given */
    int k, d;
    hc_assign_rule rule;
    int n_threads;
};

static int faiss_fail(hc_errbuf *eb, const char *what, int rc) {
    const char *msg = faiss_get_last_error();
    return hc_seterr(eb, HC_ERR_BACKEND, "faiss %s failed (%d): %s", what, rc, msg ? msg : "?");
}

/* omp_set_num_threads affects parallel regions started from the calling thread only. */
static int threads_push(int n_threads) {
    int prev = omp_get_max_threads();
    if (n_threads > 0) omp_set_num_threads(n_threads);
    return prev;
}
static void threads_pop(int n_threads, int prev) {
    if (n_threads > 0) omp_set_num_threads(prev);
}

static int check_finite(const float *x, int64_t n, int d, const char *what, hc_errbuf *eb) {
    for (int64_t i = 0; i < n; i++)
        for (int j = 0; j < d; j++)
            if (!isfinite(x[i * d + j]))
                return hc_seterr(eb, HC_ERR_INVAL, "%s: row %lld, column %d is %s", what,
                                 (long long)i, j, isnan(x[i * d + j]) ? "NaN" : "infinite");
    return HC_OK;
}

/* Normalizes rows of src (n, d) into dst; a zero row is an error. */
static int normalize_rows(float *dst, const float *src, int64_t n, int d, int64_t row0,
                          const char *what, hc_errbuf *eb) {
    for (int64_t i = 0; i < n; i++) {
        double s = 0.0;
        for (int j = 0; j < d; j++) s += (double)src[i * d + j] * src[i * d + j];
        if (!(s > 0.0))
            return hc_seterr(eb, HC_ERR_INVAL, "%s: row %lld has zero norm (cosine undefined)",
                             what, (long long)(row0 + i));
        float inv = (float)(1.0 / sqrt(s));
        for (int j = 0; j < d; j++) dst[i * d + j] = src[i * d + j] * inv;
    }
    return HC_OK;
}

const char *hc_assign_rule_name(hc_assign_rule rule) {
    switch (rule) {
    case HC_ASSIGN_IP: return "ip";
    case HC_ASSIGN_COSINE: return "cosine";
    case HC_ASSIGN_L2: return "l2";
    default: return "?";
    }
}

int hc_assign_rule_parse(hc_assign_rule *out, const char *name, hc_errbuf *eb) {
    if (!out || !name) return hc_seterr(eb, HC_ERR_INVAL, "assignment rule: NULL argument");
    if (!strcmp(name, "ip") || !strcmp(name, "inner_product")) *out = HC_ASSIGN_IP;
    else if (!strcmp(name, "cosine")) *out = HC_ASSIGN_COSINE;
    else if (!strcmp(name, "l2")) *out = HC_ASSIGN_L2;
    else
        return hc_seterr(eb, HC_ERR_INVAL,
                         "unknown assignment rule \"%s\" (expected ip, cosine or l2)", name);
    return HC_OK;
}

void hc_kmeans_params_init(hc_kmeans_params *p) {
    p->niter = 40;
    p->nredo = 2;
    p->seed = 1234;
    p->max_points_per_centroid = 256;
    p->spherical = 0;
    p->verbose = 0;
    p->n_threads = 0;
}

int hc_kmeans(float *centroids_out, const float *x, int64_t n, int d, int k,
              const hc_kmeans_params *p, double *objective_out, hc_errbuf *eb) {
    hc_kmeans_params defaults;
    if (!p) {
        hc_kmeans_params_init(&defaults);
        p = &defaults;
    }
    if (!centroids_out || !x) return hc_seterr(eb, HC_ERR_INVAL, "kmeans: NULL argument");
    if (d <= 0) return hc_seterr(eb, HC_ERR_INVAL, "kmeans: d = %d, must be >= 1", d);
    if (k <= 0) return hc_seterr(eb, HC_ERR_INVAL, "kmeans: k = %d, must be >= 1", k);
    if (n < k)
        return hc_seterr(eb, HC_ERR_INVAL, "kmeans: k = %d centroids need at least k points, got %lld",
                         k, (long long)n);
    if (p->niter < 1 || p->nredo < 1)
        return hc_seterr(eb, HC_ERR_INVAL, "kmeans: niter = %d, nredo = %d, both must be >= 1",
                         p->niter, p->nredo);
    if (p->max_points_per_centroid < 0)
        return hc_seterr(eb, HC_ERR_INVAL, "kmeans: max_points_per_centroid = %d, must be >= 0",
                         p->max_points_per_centroid);
    int rc = check_finite(x, n, d, "kmeans input", eb);
    if (rc) return rc;

    FaissClusteringParameters cp;
    faiss_ClusteringParameters_init(&cp);
    cp.niter = p->niter;
    cp.nredo = p->nredo;
    cp.seed = p->seed;
    cp.spherical = p->spherical ? 1 : 0;
    cp.verbose = p->verbose ? 1 : 0;
    if (p->max_points_per_centroid == 0) {
        int64_t per = (n + k - 1) / k; /* ceil(n / k): no subsampling */
        cp.max_points_per_centroid = per > INT_MAX ? INT_MAX : (int)per;
    } else {
        cp.max_points_per_centroid = p->max_points_per_centroid;
    }
    /* FAISS prints a warning to stderr below min_points_per_centroid * k points; the reference
     * runs with the default (39), and a warning is not an error: keep it quiet for small n. */
    if (n < (int64_t)k * cp.min_points_per_centroid) cp.min_points_per_centroid = 1;

    FaissClustering *cl = NULL;
    FaissIndex *index = NULL;
    int prev = threads_push(p->n_threads);
    rc = faiss_Clustering_new_with_params(&cl, d, k, &cp);
    if (rc) {
        rc = faiss_fail(eb, "Clustering_new", rc);
        goto done;
    }
    if (p->spherical) rc = faiss_IndexFlatIP_new_with((FaissIndexFlatIP **)&index, d);
    else rc = faiss_IndexFlatL2_new_with((FaissIndexFlatL2 **)&index, d);
    if (rc) {
        rc = faiss_fail(eb, "IndexFlat_new", rc);
        goto done;
    }
    rc = faiss_Clustering_train(cl, n, x, index);
    if (rc) {
        rc = faiss_fail(eb, "Clustering_train", rc);
        goto done;
    }
    float *cent = NULL;
    size_t size = 0;
    faiss_Clustering_centroids(cl, &cent, &size);
    if (!cent || size != (size_t)k * (size_t)d) {
        rc = hc_seterr(eb, HC_ERR_BACKEND, "kmeans: faiss returned %zu centroid values, expected %zu",
                       size, (size_t)k * (size_t)d);
        goto done;
    }
    memcpy(centroids_out, cent, size * sizeof(float));

    if (objective_out) {
        /* Over all n points (FAISS's own objective covers only its subsample). */
        hc_cluster_index *ci = NULL;
        rc = hc_cluster_index_init(&ci, centroids_out, k, d, p->spherical ? HC_ASSIGN_IP : HC_ASSIGN_L2,
                                   p->n_threads, eb);
        if (rc) goto done;
        int32_t ids[256];
        float sc[256];
        double obj = 0.0;
        for (int64_t i0 = 0; i0 < n && !rc; i0 += 256) {
            int64_t m = n - i0 < 256 ? n - i0 : 256;
            rc = hc_cluster_assign(ci, x + i0 * d, m, ids, sc, eb);
            for (int64_t i = 0; i < m && !rc; i++) obj += sc[i];
        }
        hc_cluster_index_free(ci);
        if (rc) goto done;
        *objective_out = obj;
    }
    rc = HC_OK;
done:
    if (index) faiss_Index_free(index);
    if (cl) faiss_Clustering_free(cl);
    threads_pop(p->n_threads, prev);
    return rc;
}

int hc_cluster_index_init(hc_cluster_index **out, const float *centroids, int k, int d,
                          hc_assign_rule rule, int n_threads, hc_errbuf *eb) {
    if (!out || !centroids) return hc_seterr(eb, HC_ERR_INVAL, "cluster index: NULL argument");
    *out = NULL;
    if (k <= 0 || d <= 0)
        return hc_seterr(eb, HC_ERR_INVAL, "cluster index: k = %d, d = %d, both must be >= 1", k, d);
    if ((int)rule < 0 || rule >= HC_ASSIGN_COUNT)
        return hc_seterr(eb, HC_ERR_INVAL, "cluster index: unknown assignment rule %d", (int)rule);
    int rc = check_finite(centroids, k, d, "centroids", eb);
    if (rc) return rc;

    hc_cluster_index *ci = calloc(1, sizeof(*ci));
    size_t nbytes = (size_t)k * (size_t)d * sizeof(float);
    float *search_c = NULL;
    if (!ci || !(ci->centroids = malloc(nbytes))) {
        rc = hc_seterr(eb, HC_ERR_NOMEM, "cluster index: out of memory for %d x %d centroids", k, d);
        goto fail;
    }
    memcpy(ci->centroids, centroids, nbytes);
    ci->k = k;
    ci->d = d;
    ci->rule = rule;
    ci->n_threads = n_threads;

    const float *add = ci->centroids;
    if (rule == HC_ASSIGN_COSINE) {
        if (!(search_c = malloc(nbytes))) {
            rc = hc_seterr(eb, HC_ERR_NOMEM, "cluster index: out of memory");
            goto fail;
        }
        rc = normalize_rows(search_c, centroids, k, d, 0, "centroids", eb);
        if (rc) goto fail;
        add = search_c;
    }
    if (rule == HC_ASSIGN_L2) rc = faiss_IndexFlatL2_new_with((FaissIndexFlatL2 **)&ci->index, d);
    else rc = faiss_IndexFlatIP_new_with((FaissIndexFlatIP **)&ci->index, d);
    if (rc) {
        rc = faiss_fail(eb, "IndexFlat_new", rc);
        goto fail;
    }
    rc = faiss_Index_add(ci->index, k, add);
    if (rc) {
        rc = faiss_fail(eb, "Index_add", rc);
        goto fail;
    }
    free(search_c);
    *out = ci;
    return HC_OK;
fail:
    free(search_c);
    hc_cluster_index_free(ci);
    return rc;
}

void hc_cluster_index_free(hc_cluster_index *ci) {
    if (!ci) return;
    if (ci->index) faiss_Index_free(ci->index);
    free(ci->centroids);
    free(ci);
}

int hc_cluster_index_k(const hc_cluster_index *ci) { return ci->k; }
int hc_cluster_index_d(const hc_cluster_index *ci) { return ci->d; }
hc_assign_rule hc_cluster_index_rule(const hc_cluster_index *ci) { return ci->rule; }
const float *hc_cluster_index_centroids(const hc_cluster_index *ci) { return ci->centroids; }

int hc_cluster_assign(const hc_cluster_index *ci, const float *x, int64_t n, int32_t *ids_out,
                      float *scores_out, hc_errbuf *eb) {
    if (!ci || (!x && n > 0) || (!ids_out && n > 0))
        return hc_seterr(eb, HC_ERR_INVAL, "cluster assign: NULL argument");
    if (n < 0) return hc_seterr(eb, HC_ERR_INVAL, "cluster assign: n = %lld", (long long)n);
    if (n == 0) return HC_OK;
    const int d = ci->d;
    int rc = check_finite(x, n, d, "cluster assign input", eb);
    if (rc) return rc;

    int64_t chunk = n < HC_CLUSTER_CHUNK ? n : HC_CLUSTER_CHUNK;
    /* results on the stack: an assignment allocates nothing (the serving engine's steps call it)
     * except the normalized queries of the cosine rule */
    idx_t labels[HC_CLUSTER_CHUNK];
    float dist[HC_CLUSTER_CHUNK];
    float *qn = ci->rule == HC_ASSIGN_COSINE ? malloc((size_t)chunk * (size_t)d * sizeof(float)) : NULL;
    if (ci->rule == HC_ASSIGN_COSINE && !qn) {
        rc = hc_seterr(eb, HC_ERR_NOMEM, "cluster assign: out of memory");
        goto done;
    }
    int prev = threads_push(ci->n_threads);
    for (int64_t i0 = 0; i0 < n && !rc; i0 += chunk) {
        int64_t m = n - i0 < chunk ? n - i0 : chunk;
        const float *q = x + i0 * d;
        if (qn) {
            rc = normalize_rows(qn, q, m, d, i0, "cluster assign input", eb);
            if (rc) break;
            q = qn;
        }
        rc = faiss_Index_search(ci->index, m, q, 1, dist, labels);
        if (rc) {
            rc = faiss_fail(eb, "Index_search", rc);
            break;
        }
        for (int64_t i = 0; i < m; i++) {
            if (labels[i] < 0 || labels[i] >= ci->k) {
                rc = hc_seterr(eb, HC_ERR_BACKEND, "cluster assign: faiss returned label %lld for row %lld",
                               (long long)labels[i], (long long)(i0 + i));
                break;
            }
            ids_out[i0 + i] = (int32_t)labels[i];
            if (scores_out) scores_out[i0 + i] = dist[i];
        }
    }
    threads_pop(ci->n_threads, prev);
done:
    free(qn);
    return rc;
}

int hc_centroids_save(const char *path, const float *centroids, int k, int d, hc_errbuf *eb) {
    if (!path || !centroids) return hc_seterr(eb, HC_ERR_INVAL, "centroids save: NULL argument");
    if (k <= 0 || d <= 0)
        return hc_seterr(eb, HC_ERR_INVAL, "centroids save: k = %d, d = %d, both must be >= 1", k, d);
    int rc = check_finite(centroids, k, d, "centroids", eb);
    if (rc) return rc;
    hc_st_write_item item = {.name = "centroids", .dtype = HC_DTYPE_F32, .n_dims = 2,
                             .shape = {k, d}, .data = centroids};
    return hc_st_write(path, &item, 1, eb);
}

int hc_centroids_load(float **out, int *k_out, int *d_out, const char *path, hc_errbuf *eb) {
    return hc_centroids_load_in(out, k_out, d_out, path, NULL, eb);
}

int hc_centroids_load_in(float **out, int *k_out, int *d_out, const char *path,
                         const char *fs_root, hc_errbuf *eb) {
    if (!out || !k_out || !d_out || !path)
        return hc_seterr(eb, HC_ERR_INVAL, "centroids load: NULL argument");
    *out = NULL;
    hc_safetensors *st = NULL;
    int rc = hc_st_open_in(&st, path, fs_root, eb);
    if (rc) return rc;
    const hc_st_tensor *t = hc_st_find(st, "centroids");
    if (!t) {
        rc = hc_seterr(eb, HC_ERR_FORMAT, "%s: no tensor \"centroids\"", path);
        goto done;
    }
    if (t->dtype != HC_DTYPE_F32 || t->n_dims != 2 || t->shape[0] < 1 || t->shape[1] < 1 ||
        t->shape[0] > INT_MAX || t->shape[1] > INT_MAX) {
        rc = hc_seterr(eb, HC_ERR_FORMAT, "%s: \"centroids\" must be F32 (k, d) with k, d >= 1, got %s rank %d",
                       path, hc_dtype_name(t->dtype), t->n_dims);
        goto done;
    }
    int k = (int)t->shape[0], d = (int)t->shape[1];
    float *c = malloc(t->nbytes);
    if (!c) {
        rc = hc_seterr(eb, HC_ERR_NOMEM, "%s: out of memory", path);
        goto done;
    }
    memcpy(c, t->data, t->nbytes); /* the mapping may be unaligned for F32 */
    rc = check_finite(c, k, d, "centroids", eb);
    if (rc) {
        free(c);
        rc = HC_ERR_FORMAT;
        goto done;
    }
    *out = c;
    *k_out = k;
    *d_out = d;
done:
    hc_st_close(st);
    return rc;
}
