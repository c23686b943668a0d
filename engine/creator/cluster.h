/* cluster.h: k-means training and nearest-centroid assignment, through the FAISS C API.
 *
 * hc_kmeans() trains k centroids on n vectors of dimension d (FAISS Clustering + a flat index:
 * L2 k-means, or spherical k-means with an inner-product index, as python faiss.Kmeans does).
 * hc_cluster_index assigns vectors to the nearest centroid under one of three rules (see
 * hc_assign_rule). Centroids are stored as a safetensors file with one tensor "centroids",
 * F32, shape (k, d): the file creator.json points to.
 *
 * Errors: bad arguments (k > n, k < 1, d <= 0, NaN/Inf in any input, NULL pointers) return
 * HC_ERR_INVAL / HC_ERR_RANGE with a message in eb, before FAISS is called; a FAISS failure is
 * HC_ERR_BACKEND with FAISS's message. Never a crash, never exit().
 *
 * Threads: FAISS parallelizes with OpenMP and calls BLAS (OpenBLAS, itself threaded). n_threads
 * in the params sets the OpenMP thread count for the duration of the call, from the calling thread
 * (omp_set_num_threads, restored afterwards); 0 leaves OpenMP's default (OMP_NUM_THREADS or all
 * cores). See docs/CLUSTERING.md for the OpenMP/OpenBLAS oversubscription note.
 */
#ifndef HC_CLUSTER_H
#define HC_CLUSTER_H

#include <stdint.h>

#include "core/error.h"

/* Which centroid a vector belongs to. Ties (equal scores) go to the lowest centroid index. */
typedef enum hc_assign_rule {
    HC_ASSIGN_IP = 0,     /* argmax <x, c>: raw inner product, the reference's default */
    HC_ASSIGN_COSINE = 1, /* argmax <x/|x|, c/|c|>: score is the cosine similarity */
    HC_ASSIGN_L2 = 2,     /* argmin |x - c|^2: score is the squared L2 distance */
    HC_ASSIGN_COUNT
} hc_assign_rule;

/* "ip", "cosine", "l2". */
const char *hc_assign_rule_name(hc_assign_rule rule);
/* Parses the names above (also "inner_product"); HC_ERR_INVAL for anything else. */
int hc_assign_rule_parse(hc_assign_rule *out, const char *name, hc_errbuf *eb);

typedef struct hc_kmeans_params {
    int niter;     /* k-means iterations per run (40, the reference) */
    int nredo;     /* independent runs, the best objective is kept (2, the reference) */
    int seed;      /* seed of FAISS's initialization and subsampling (1234) */
    /* FAISS silently trains on a random subsample of k * max_points_per_centroid points when
     * n is larger (the default 256 is FAISS's own). Centroids are then fitted to that subsample
     * only. Set to 0 to always train on all n points. */
    int max_points_per_centroid;
    int spherical; /* 1: centroids normalized to unit length after each iteration (IP index) */
    int verbose;   /* 1: FAISS prints progress -- to stdout, so keep 0 in JSON-streaming CLIs */
    int n_threads; /* OpenMP threads for this call; 0 = OpenMP's default */
} hc_kmeans_params;

/* niter 40, nredo 2, seed 1234, max_points_per_centroid 256, spherical 0, verbose 0,
 * n_threads 0. */
void hc_kmeans_params_init(hc_kmeans_params *p);

/* Trains k centroids on x.
 *   centroids_out: (k, d), caller-owned.  x: (n, d), row-major.  p: NULL means the defaults.
 *   objective_out (may be NULL): over all n points (not FAISS's subsample), the sum of squared L2
 *   distances to the nearest centroid; for spherical, the sum of the best inner products.
 * Requires 1 <= k <= n and d >= 1. Thread-safe for distinct outputs (FAISS itself uses OpenMP). */
int hc_kmeans(float *centroids_out, const float *x, int64_t n, int d, int k,
              const hc_kmeans_params *p, double *objective_out, hc_errbuf *eb);

/* ---- assignment ------------------------------------------------------------------------------ */

typedef struct hc_cluster_index hc_cluster_index;

/* Builds an assignment index over k centroids (k, d); copies them (for COSINE, normalized).
 * A zero-norm centroid under COSINE is HC_ERR_INVAL. n_threads as in hc_kmeans_params. */
int hc_cluster_index_init(hc_cluster_index **out, const float *centroids, int k, int d,
                          hc_assign_rule rule, int n_threads, hc_errbuf *eb);
void hc_cluster_index_free(hc_cluster_index *idx);

int hc_cluster_index_k(const hc_cluster_index *idx);
int hc_cluster_index_d(const hc_cluster_index *idx);
hc_assign_rule hc_cluster_index_rule(const hc_cluster_index *idx);
/* The centroids as given to init (not normalized), (k, d); valid until free. */
const float *hc_cluster_index_centroids(const hc_cluster_index *idx);

/* For each of the n rows of x (n, d): ids_out[i] = the assigned centroid, scores_out[i] (may be
 * NULL) = its inner product, cosine or squared L2 distance per the rule. Ties go to the lowest
 * index. Under COSINE a zero query row is HC_ERR_INVAL. Safe to call from several threads at once
 * on one index (the index is not modified). */
int hc_cluster_assign(const hc_cluster_index *idx, const float *x, int64_t n, int32_t *ids_out,
                      float *scores_out, hc_errbuf *eb);

/* ---- storage --------------------------------------------------------------------------------- */

/* Writes a safetensors file with one tensor "centroids", F32, shape (k, d). */
int hc_centroids_save(const char *path, const float *centroids, int k, int d, hc_errbuf *eb);
/* Reads such a file: *out is malloc'ed (k, d), caller free()s it. A missing "centroids" tensor,
 * another dtype or rank, or non-finite values are HC_ERR_FORMAT. */
int hc_centroids_load(float **out, int *k_out, int *d_out, const char *path, hc_errbuf *eb);
/* As hc_centroids_load, the file confined to the canonical directory fs_root (safetensors.h's
 * hc_st_open_in; NULL: anywhere). */
int hc_centroids_load_in(float **out, int *k_out, int *d_out, const char *path,
                         const char *fs_root, hc_errbuf *eb);

#endif
