/* faiss_c_shim.cpp: the subset of the FAISS C API (the headers in faiss/c_api/) that hllm-creator calls,
 * implemented over the C++ library. The only C++ in the project.
 *
 * Why: Debian 12's libfaiss-dev ships the C API headers and a static libfaiss.a but no compiled
 * libfaiss_c. The build compiles this file only when find_library(faiss_c) fails; where a real
 * libfaiss_c exists it is linked instead and this file is not built. So every function here has
 * exactly the name and signature the installed headers declare (the headers are included, so the
 * compiler checks that), and nothing else is exported.
 *
 * Contract (same as the upstream c_api sources): C++ exceptions never cross the C boundary. A
 * function returning int returns 0 on success, -2 for a faiss::FaissException, -4 for any other
 * std::exception, -1 for anything else, and stores the message for faiss_get_last_error(), which
 * is thread-local (each thread sees the last error of its own calls). Upstream keeps the message
 * until the next failure; so does this file.
 *
 * Implemented: faiss_get_last_error; faiss_ClusteringParameters_init, faiss_Clustering_new,
 * faiss_Clustering_new_with_params, faiss_Clustering_train, faiss_Clustering_centroids,
 * faiss_Clustering_iteration_stats, faiss_ClusteringIterationStats_obj, faiss_Clustering_d,
 * faiss_Clustering_k, faiss_Clustering_free, faiss_kmeans_clustering; faiss_IndexFlat_new_with,
 * faiss_IndexFlatIP_new_with, faiss_IndexFlatL2_new_with; faiss_Index_d, faiss_Index_ntotal,
 * faiss_Index_metric_type, faiss_Index_add, faiss_Index_search, faiss_Index_reconstruct_n,
 * faiss_Index_free; faiss_write_index_fname, faiss_read_index_fname.
 */
#include <faiss/Clustering.h>
#include <faiss/IndexFlat.h>
#include <faiss/impl/FaissException.h>
#include <faiss/index_io.h>

#include <exception>
#include <stdexcept>
#include <string>
#include <vector>

#include <faiss/c_api/Clustering_c.h>
#include <faiss/c_api/IndexFlat_c.h>
#include <faiss/c_api/Index_c.h>
#include <faiss/c_api/error_c.h>
#include <faiss/c_api/index_io_c.h>

namespace {

thread_local std::string g_last_error;

/* Runs f(); converts any exception to the C API's status codes. */
template <typename F> int guarded(F &&f) noexcept {
    try {
        f();
        return 0;
    } catch (const faiss::FaissException &e) {
        g_last_error = e.what();
        return -2;
    } catch (const std::exception &e) {
        g_last_error = e.what();
        return -4;
    } catch (...) {
        g_last_error = "Unknown error";
        return -1;
    }
}

faiss::Index *to_cpp(FaissIndex *p) { return reinterpret_cast<faiss::Index *>(p); }
const faiss::Index *to_cpp(const FaissIndex *p) { return reinterpret_cast<const faiss::Index *>(p); }
faiss::Clustering *to_cpp(FaissClustering *p) { return reinterpret_cast<faiss::Clustering *>(p); }
const faiss::Clustering *to_cpp(const FaissClustering *p) {
    return reinterpret_cast<const faiss::Clustering *>(p);
}

/* The C struct uses int where C++ uses bool: copy field by field, never memcpy. */
faiss::ClusteringParameters params_from_c(const FaissClusteringParameters *cp) {
    faiss::ClusteringParameters p;
    p.niter = cp->niter;
    p.nredo = cp->nredo;
    p.verbose = cp->verbose != 0;
    p.spherical = cp->spherical != 0;
    p.int_centroids = cp->int_centroids != 0;
    p.update_index = cp->update_index != 0;
    p.frozen_centroids = cp->frozen_centroids != 0;
    p.min_points_per_centroid = cp->min_points_per_centroid;
    p.max_points_per_centroid = cp->max_points_per_centroid;
    p.seed = cp->seed;
    p.decode_block_size = cp->decode_block_size;
    return p;
}

} // namespace

extern "C" {

const char *faiss_get_last_error() { return g_last_error.empty() ? nullptr : g_last_error.c_str(); }

/* ---- Clustering ------------------------------------------------------------------------------ */

void faiss_ClusteringParameters_init(FaissClusteringParameters *params) {
    faiss::ClusteringParameters d;
    params->niter = d.niter;
    params->nredo = d.nredo;
    params->verbose = d.verbose ? 1 : 0;
    params->spherical = d.spherical ? 1 : 0;
    params->int_centroids = d.int_centroids ? 1 : 0;
    params->update_index = d.update_index ? 1 : 0;
    params->frozen_centroids = d.frozen_centroids ? 1 : 0;
    params->min_points_per_centroid = d.min_points_per_centroid;
    params->max_points_per_centroid = d.max_points_per_centroid;
    params->seed = d.seed;
    params->decode_block_size = d.decode_block_size;
}

int faiss_Clustering_new(FaissClustering **p_clustering, int d, int k) {
    return guarded([&] {
        *p_clustering = reinterpret_cast<FaissClustering *>(new faiss::Clustering(d, k));
    });
}

int faiss_Clustering_new_with_params(FaissClustering **p_clustering, int d, int k,
                                     const FaissClusteringParameters *cp) {
    return guarded([&] {
        *p_clustering =
                reinterpret_cast<FaissClustering *>(new faiss::Clustering(d, k, params_from_c(cp)));
    });
}

int faiss_Clustering_train(FaissClustering *clustering, idx_t n, const float *x, FaissIndex *index) {
    return guarded([&] { to_cpp(clustering)->train(n, x, *to_cpp(index)); });
}

void faiss_Clustering_centroids(FaissClustering *clustering, float **centroids, size_t *size) {
    std::vector<float> &v = to_cpp(clustering)->centroids;
    if (centroids) *centroids = v.data();
    if (size) *size = v.size();
}

void faiss_Clustering_iteration_stats(FaissClustering *clustering,
                                      FaissClusteringIterationStats **iteration_stats,
                                      size_t *size) {
    std::vector<faiss::ClusteringIterationStats> &v = to_cpp(clustering)->iteration_stats;
    if (iteration_stats) *iteration_stats = reinterpret_cast<FaissClusteringIterationStats *>(v.data());
    if (size) *size = v.size();
}

float faiss_ClusteringIterationStats_obj(const FaissClusteringIterationStats *s) {
    return reinterpret_cast<const faiss::ClusteringIterationStats *>(s)->obj;
}

size_t faiss_Clustering_d(const FaissClustering *c) { return to_cpp(c)->d; }
size_t faiss_Clustering_k(const FaissClustering *c) { return to_cpp(c)->k; }

void faiss_Clustering_free(FaissClustering *clustering) { delete to_cpp(clustering); }

int faiss_kmeans_clustering(size_t d, size_t n, size_t k, const float *x, float *centroids,
                            float *q_error) {
    return guarded([&] {
        float out = faiss::kmeans_clustering(d, n, k, x, centroids);
        if (q_error) *q_error = out;
    });
}

/* ---- Flat indexes ---------------------------------------------------------------------------- */

int faiss_IndexFlat_new_with(FaissIndexFlat **p_index, idx_t d, FaissMetricType metric) {
    return guarded([&] {
        *p_index = reinterpret_cast<FaissIndexFlat *>(
                new faiss::IndexFlat(d, static_cast<faiss::MetricType>(metric)));
    });
}

int faiss_IndexFlatIP_new_with(FaissIndexFlatIP **p_index, idx_t d) {
    return guarded([&] { *p_index = reinterpret_cast<FaissIndexFlatIP *>(new faiss::IndexFlatIP(d)); });
}

int faiss_IndexFlatL2_new_with(FaissIndexFlatL2 **p_index, idx_t d) {
    return guarded([&] { *p_index = reinterpret_cast<FaissIndexFlatL2 *>(new faiss::IndexFlatL2(d)); });
}

/* ---- Index ----------------------------------------------------------------------------------- */

int faiss_Index_d(const FaissIndex *index) { return static_cast<int>(to_cpp(index)->d); }
idx_t faiss_Index_ntotal(const FaissIndex *index) { return to_cpp(index)->ntotal; }
FaissMetricType faiss_Index_metric_type(const FaissIndex *index) {
    return static_cast<FaissMetricType>(to_cpp(index)->metric_type);
}

void faiss_Index_free(FaissIndex *obj) { delete to_cpp(obj); }

int faiss_Index_add(FaissIndex *index, idx_t n, const float *x) {
    return guarded([&] { to_cpp(index)->add(n, x); });
}

int faiss_Index_search(const FaissIndex *index, idx_t n, const float *x, idx_t k, float *distances,
                       idx_t *labels) {
    return guarded([&] { to_cpp(index)->search(n, x, k, distances, labels); });
}

int faiss_Index_reconstruct_n(const FaissIndex *index, idx_t i0, idx_t ni, float *recons) {
    return guarded([&] { to_cpp(index)->reconstruct_n(i0, ni, recons); });
}

/* ---- I/O ------------------------------------------------------------------------------------- */

int faiss_write_index_fname(const FaissIndex *idx, const char *fname) {
    return guarded([&] { faiss::write_index(to_cpp(idx), fname); });
}

int faiss_read_index_fname(const char *fname, int io_flags, FaissIndex **p_out) {
    return guarded([&] {
        *p_out = reinterpret_cast<FaissIndex *>(faiss::read_index(fname, io_flags));
    });
}

} // extern "C"
