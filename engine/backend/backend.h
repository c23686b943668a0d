/* backend.h: the compute backend interface. All math in the engine goes through this vtable, so a
 * model written once runs on the CPU backend (always built; the readable reference for every op)
 * and on the CUDA backend (kernels/, dlopen'ed) without changes.
 *
 * Conventions (every op):
 *  - destination first, then sources, then sizes;
 *  - activation tensors are F32 and live in the backend's memory; weight tensors may be F32, BF16
 *    or F16 (compute is f32 with f32 accumulation; the CPU backend's bf16 compute mode,
 *    hc_backend_params.compute, rounds matmul inputs to bf16, still accumulating in f32);
 *  - small integer metadata (token ids, positions, row indices, KV block tables) is passed as HOST
 *    arrays; a device backend stages it itself;
 *  - ops are enqueued in order on the backend's single stream; download() and synchronize() wait.
 *  - return HC_OK or a negative hc_err; they never print.
 *
 * Thread-safety: one backend instance is used by one thread at a time (the engine thread).
 */
#ifndef HC_BACKEND_H
#define HC_BACKEND_H

#include <stddef.h>
#include <stdint.h>

#include "core/error.h"
#include "core/tensor.h"

typedef struct hc_backend hc_backend;

/* Attention over a packed batch with paged K/V (see docs/ARCHITECTURE.md, "Attention").
 * Query token t (0..n_tokens-1) attends to the first kv_len[t] entries of its own sequence's K/V.
 * Entry j of that sequence lives at pool row  tables[table_off[t] + j / block_size] * block_size
 * + j % block_size  of k_pool / v_pool, shaped (n_rows, n_kv_heads, head_dim). Causality and
 * segment isolation are therefore expressed entirely by table_off and kv_len.
 * GQA: query head h reads kv head h / (n_heads / n_kv_heads). Softmax in f32 with max-subtraction. */
typedef struct hc_attn_args {
    int n_tokens;
    int n_heads;
    int n_kv_heads;
    int head_dim;
    float scale;              /* usually 1/sqrt(head_dim) */
    int block_size;           /* pool rows per block (1 = "scratch" mode: tables are row indices) */
    const int32_t *table_off; /* (n_tokens) host */
    const int32_t *kv_len;    /* (n_tokens) host, >= 1 */
    const int32_t *tables;    /* flattened block tables, host */
    int n_table;              /* length of `tables` */
} hc_attn_args;

typedef struct hc_backend_i {
    const char *name;
    void (*destroy)(hc_backend *be);

    /* memory */
    int (*alloc)(hc_backend *be, void **out, size_t nbytes);
    void (*free)(hc_backend *be, void *p);
    int (*upload)(hc_backend *be, void *dst, const void *src_host, size_t nbytes);
    int (*download)(hc_backend *be, void *dst_host, const void *src, size_t nbytes);
    int (*synchronize)(hc_backend *be);

    /* out (m, n) = x (m, k) . w (n, k)^T.  w: F32/BF16/F16 weight; x, out: F32 rows. */
    int (*matmul)(hc_backend *be, hc_tensor *out, const hc_tensor *x, const hc_tensor *w);
    /* out[r] = x[r] / sqrt(mean(x[r]^2) + eps) * w, rows of length dim = cols(x); w F32 (dim). */
    int (*rmsnorm)(hc_backend *be, hc_tensor *out, const hc_tensor *x, const hc_tensor *w,
                   float eps);
    /* In place on x (n_tokens, n_heads, head_dim): rotate-half RoPE at position pos[t],
     * inv_freq[i] = theta^(-2i/head_dim). */
    int (*rope)(hc_backend *be, hc_tensor *x, const int32_t *pos, double theta);
    /* out (n_tokens, n_heads*head_dim) = attention(q (n_tokens, n_heads*head_dim), pools). */
    int (*attention)(hc_backend *be, hc_tensor *out, const hc_tensor *q, const hc_tensor *k_pool,
                     const hc_tensor *v_pool, const hc_attn_args *args);
    /* pool row rows[t] := src row t, for k and v together (src: (n_tokens, kv_dim)). */
    int (*kv_store)(hc_backend *be, hc_tensor *k_pool, hc_tensor *v_pool, const hc_tensor *k,
                    const hc_tensor *v, const int32_t *rows, int n_tokens);
    /* out = silu(gate) * up, elementwise (same shapes). */
    int (*swiglu)(hc_backend *be, hc_tensor *out, const hc_tensor *gate, const hc_tensor *up);
    /* x += y, elementwise. */
    int (*add)(hc_backend *be, hc_tensor *x, const hc_tensor *y);
    /* out row t = table row ids[t] (converted to f32); ids are host. */
    int (*embed)(hc_backend *be, hc_tensor *out, const hc_tensor *table, const int32_t *ids);
    /* out row i = src row idx[i] (gather), F32; idx host, n = rows(out). */
    int (*get_rows)(hc_backend *be, hc_tensor *out, const hc_tensor *src, const int32_t *idx);
    /* dst row idx[i] = host row i of src_host (scatter of injected embeddings), n rows. */
    int (*set_rows)(hc_backend *be, hc_tensor *dst, const float *src_host, const int32_t *idx,
                    int n);
} hc_backend_i;

struct hc_backend {
    const hc_backend_i *iface;
    void *ctx;      /* backend-private state */
    int n_threads;  /* CPU threads the backend may use */
};

/* ---- creation ------------------------------------------------------------------------------ */

typedef enum {
    HC_BACKEND_AUTO = 0, /* CUDA when the CUDA library loads and a GPU is present, else CPU */
    HC_BACKEND_CPU,
    HC_BACKEND_CUDA,
} hc_backend_kind;

/* Everything backend creation depends on, passed explicitly: the library reads no environment
 * variables (the hllm CLI maps $HC_CUDA_LIB and $HC_CUDA_DEVICE onto cuda_lib and cuda_device).
 *
 * OpenBLAS: the CPU backend's prefill matmul calls cblas_sgemm from its own thread-pool tasks,
 * each on its own columns, and wants every call to run single-threaded (OpenBLAS threads started
 * underneath would compete with the pool's for the same cores). OpenBLAS keeps one thread count
 * for the whole process, so no backend can set it for itself alone; blas_single_thread says who
 * owns it:
 *  - 1 (the default): creating a CPU backend calls openblas_set_num_threads(1). That is a
 *    process-wide change, not undone by hc_backend_free: every BLAS user in the process (FAISS
 *    k-means in cluster.c, the application's own calls) runs single-threaded from then on.
 *  - 0: the backend leaves the count alone and the caller owns it (OPENBLAS_NUM_THREADS=1, or its
 *    own openblas_set_num_threads(1) before inference). Results do not depend on it; with more
 *    than one BLAS thread, prefill only gets slower (pool and BLAS threads oversubscribe).
 * The CUDA backend never touches it. */
/* Instruction-set levels of the CPU backend's kernels (engine/backend/cpu_isa.h), chosen once at
 * backend creation. PORTABLE is plain C with a fixed summation order (the tests' reference path);
 * AVX512BF16 runs the AVX512F kernels in f32 compute (vdpbf16ps needs bf16 activations). */
typedef enum hc_cpu_isa {
    HC_CPU_ISA_AUTO = 0,
    HC_CPU_ISA_PORTABLE,
    HC_CPU_ISA_AVX2,
    HC_CPU_ISA_AVX512F,
    HC_CPU_ISA_AVX512BF16,
    HC_CPU_ISA_COUNT
} hc_cpu_isa;

/* Compute mode (hc_backend_params.compute). F32: every op in f32 (the default and the parity
 * reference). BF16 (CPU backend only): matmul rounds its activations x to bf16 (round to nearest
 * even) at every m and multiplies them with the weights as stored, accumulating in f32 -- what the
 * reference runs under bf16 autocast for a bf16 checkpoint (MODEL_SPEC section 10); on the prefill
 * path with bf16 weights that is oneDNN's bf16 matmul (AMX / AVX-512-BF16 where the CPU has them).
 * Residual stream, norms, softmax, attention and every other op stay f32. */
typedef enum hc_compute {
    HC_COMPUTE_F32 = 0,
    HC_COMPUTE_BF16,
    HC_COMPUTE_COUNT
} hc_compute;

/* The library behind the CPU backend's prefill matmul (m > HC_CPU_SMALLM_MAX rows,
 * hc_backend_params.cpu_gemm). AUTO: oneDNN when the build has it (cpu_dnnl.h), else OpenBLAS.
 * DNNL on a build without oneDNN: create fails HC_ERR_UNSUPPORTED. */
typedef enum hc_cpu_gemm {
    HC_CPU_GEMM_AUTO = 0,
    HC_CPU_GEMM_OPENBLAS,
    HC_CPU_GEMM_DNNL,
    HC_CPU_GEMM_COUNT
} hc_cpu_gemm;

typedef struct hc_backend_params {
    int n_threads;          /* CPU threads the backend may use; <= 0: all online CPUs */
    const char *cuda_lib;   /* libhc_cuda.so to dlopen, as given (a full path, or a name the loader
                               resolves), and nothing else; NULL or "": search (backend.c) */
    int cuda_device;        /* CUDA device index, >= 0 (a negative one is HC_ERR_INVAL) */
    int blas_single_thread; /* 1: the CPU backend sets OpenBLAS to one thread (above); 0: not */
    int cpu_isa;            /* hc_cpu_isa the CPU backend's kernels use; HC_CPU_ISA_AUTO (0): the
                               best this CPU supports. One it lacks: create fails HC_ERR_UNSUPPORTED */
    int compute;            /* hc_compute (above); BF16 on a CUDA backend: HC_ERR_UNSUPPORTED */
    int cpu_gemm;           /* hc_cpu_gemm: the CPU backend's prefill matmul library */
} hc_backend_params;

static inline hc_backend_params hc_backend_default_params(void) {
    hc_backend_params p = {0, NULL, 0, 1, 0, HC_COMPUTE_F32, HC_CPU_GEMM_AUTO};
    return p;
}

/* Creates a backend of the given kind with parameters p (NULL: hc_backend_default_params()).
 * HC_BACKEND_CUDA fails with HC_ERR_NODEVICE (message in eb, naming the library that was tried)
 * if the CUDA library does not load or lacks its entry point, or if the library finds no usable
 * device p->cuda_device. HC_BACKEND_AUTO tries CUDA only when an NVIDIA device node exists and
 * falls back to the CPU backend on any CUDA failure. */
int hc_backend_create_ex(hc_backend **out, hc_backend_kind kind, const hc_backend_params *p,
                         hc_errbuf *eb);
/* hc_backend_create_ex with default parameters and the given n_threads. */
int hc_backend_create(hc_backend **out, hc_backend_kind kind, int n_threads, hc_errbuf *eb);
void hc_backend_free(hc_backend *be);

/* The CPU backend: p->n_threads, blas_single_thread, cpu_isa, compute and cpu_gemm are used
 * (NULL: defaults). */
int hc_backend_cpu_create_ex(hc_backend **out, const hc_backend_params *p);
/* hc_backend_cpu_create_ex with default parameters and the given n_threads. */
int hc_backend_cpu_create(hc_backend **out, int n_threads);
/* "f32", "bf16"; "?" out of range. hc_compute_parse: the inverse (case-sensitive), HC_ERR_INVAL
 * for anything else. */
const char *hc_compute_name(int compute);
int hc_compute_parse(const char *name, hc_compute *out);
/* "auto", "openblas", "onednn"; "?" out of range. 1 if this build has library g (AUTO,
 * OPENBLAS: always; DNNL: when built with oneDNN). */
const char *hc_cpu_gemm_name(int g);
int hc_cpu_gemm_built(int g);
/* What a CPU backend runs: its compute mode and its prefill GEMM library (never AUTO); -1 for a
 * backend that is not a CPU backend. */
int hc_backend_cpu_compute(const hc_backend *be);
int hc_backend_cpu_gemm(const hc_backend *be);

/* The ABI the CUDA shared library exports (resolved with dlsym). */
#define HC_CUDA_ENTRY_SYMBOL "hc_cuda_backend_create"
#define HC_BACKEND_ABI_VERSION 1
typedef int (*hc_cuda_backend_create_fn)(hc_backend **out, int abi_version, int device,
                                         hc_errbuf *eb);

/* ---- tensor helpers (allocate/copy through the vtable) ---------------------------------------- */

/* Allocates a contiguous tensor of the given shape in be's memory. HC_ERR_INVAL for a dtype that
 * is no tensor dtype (HC_DTYPE_AS_STORED, HC_DTYPE_COUNT, ...) or a bad shape. */
int hc_tensor_alloc(hc_tensor *t, hc_backend *be, hc_dtype dtype, int n_dims, const int64_t *ne);
void hc_tensor_release(hc_tensor *t);
/* A view of rows [row0, row0 + n_rows) of a contiguous tensor, as a 2-D (n_rows, cols) tensor. */
hc_tensor hc_tensor_rows_view(const hc_tensor *t, int64_t row0, int64_t n_rows);
/* A view of the same memory with a new shape (element counts must match). */
hc_tensor hc_tensor_reshape(const hc_tensor *t, int n_dims, const int64_t *ne);

#endif
