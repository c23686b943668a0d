/* cuda_common.cuh: private state and helpers shared by the CUDA backend's translation units.
 *
 * The CUDA backend is libhc_cuda.so; the engine dlopen()s it and calls hc_cuda_backend_create
 * (the only exported symbol). Everything here is internal (hidden visibility).
 *
 * Execution model: every op is enqueued on one stream (ctx->stream) in call order; ops never
 * synchronize the host except where the contract says so (download, synchronize, upload) or when a
 * staging buffer must grow. Small host metadata (ids, positions, row indices, block tables) is
 * staged by hc_cuda_stage(): packed into a slot of a pinned host ring, copied asynchronously into a
 * persistent device buffer, and read there by the op's kernel (see cuda_backend.cu).
 *
 * Errors: every CUDA/cuBLAS call goes through HC_CU_CHECK / HC_CUBLAS_CHECK, which return
 * HC_ERR_BACKEND and write "file:line: call: reason" into ctx->err (the vtable has no errbuf, so
 * the last message is kept in the context; it is never printed).
 */
#ifndef HC_CUDA_COMMON_CUH
#define HC_CUDA_COMMON_CUH

#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <stddef.h>
#include <stdint.h>

extern "C" {
#include "backend/backend.h"
#include "core/error.h"
#include "core/tensor.h"
}

#define HC_CUDA_STAGE_SLOTS 4

typedef struct hc_cuda_ctx {
    int device;
    cudaStream_t stream;
    cublasHandle_t cublas;

    /* metadata staging: HC_CUDA_STAGE_SLOTS pinned host slots of stage_slot_cap bytes each (a
     * ring; slot_done[i] is recorded after slot i's copy so the host waits before reusing it) and
     * one device buffer of stage_slot_cap bytes (reuse is ordered by the stream). */
    unsigned char *stage_host; /* (HC_CUDA_STAGE_SLOTS * stage_slot_cap) pinned */
    unsigned char *stage_dev;  /* (stage_slot_cap) device */
    size_t stage_slot_cap;
    int stage_next;
    cudaEvent_t slot_done[HC_CUDA_STAGE_SLOTS];

    /* matmul: f32 copy of a chunk of a BF16/F16 weight (see matmul.cu) */
    float *wscratch;
    size_t wscratch_elems;

    /* rope: cached inv_freq table (host, f32) for the last (theta, head_dim) */
    float *rope_inv_freq;
    int rope_head_dim;
    double rope_theta;

    hc_errbuf err; /* last failure message */
} hc_cuda_ctx;

static inline hc_cuda_ctx *hc_cuda_ctx_of(hc_backend *be) { return (hc_cuda_ctx *)be->ctx; }

#define HC_CU_CHECK(c, call)                                                                       \
    do {                                                                                           \
        cudaError_t e_ = (call);                                                                   \
        if (e_ != cudaSuccess)                                                                     \
            return hc_seterr(&(c)->err, HC_ERR_BACKEND, "%s:%d: %s: %s", __FILE__, __LINE__,       \
                             #call, cudaGetErrorString(e_));                                       \
    } while (0)

#define HC_CUBLAS_CHECK(c, call)                                                                   \
    do {                                                                                           \
        cublasStatus_t s_ = (call);                                                                \
        if (s_ != CUBLAS_STATUS_SUCCESS)                                                           \
            return hc_seterr(&(c)->err, HC_ERR_BACKEND, "%s:%d: %s: %s", __FILE__, __LINE__,       \
                             #call, cublasGetStatusString(s_));                                    \
    } while (0)

/* After every kernel launch: catches bad launch configurations (asynchronous faults surface at
 * the next synchronizing call). */
#define HC_LAUNCH_CHECK(c) HC_CU_CHECK(c, cudaGetLastError())

/* Validation failure with a message. */
#define HC_FAIL(c, code, ...) hc_seterr(&(c)->err, (code), __VA_ARGS__)

/* One host array to stage; `dev` receives its device address (valid for kernels enqueued on
 * ctx->stream until the next hc_cuda_stage call). */
typedef struct hc_stage_item {
    const void *src;
    size_t nbytes;
    void *dev;
} hc_stage_item;

int hc_cuda_stage(hc_cuda_ctx *c, hc_stage_item *items, int n_items);

/* A tensor is usable by the CUDA ops when it lives in this backend's memory. */
static inline int hc_cuda_owns(hc_backend *be, const hc_tensor *t) {
    return t && t->data && t->backend == be;
}

static inline unsigned hc_cuda_blocks(int64_t n, unsigned threads) {
    int64_t b = (n + threads - 1) / threads;
    return (unsigned)(b < 1 ? 1 : (b > 65535 * 32 ? 65535 * 32 : b));
}

/* ---- ops (one .cu per family) ------------------------------------------------------------- */
int hc_cuda_matmul(hc_backend *be, hc_tensor *out, const hc_tensor *x, const hc_tensor *w);
int hc_cuda_rmsnorm(hc_backend *be, hc_tensor *out, const hc_tensor *x, const hc_tensor *w,
                    float eps);
int hc_cuda_rope(hc_backend *be, hc_tensor *x, const int32_t *pos, double theta);
int hc_cuda_attention(hc_backend *be, hc_tensor *out, const hc_tensor *q, const hc_tensor *k_pool,
                      const hc_tensor *v_pool, const hc_attn_args *args);
int hc_cuda_kv_store(hc_backend *be, hc_tensor *k_pool, hc_tensor *v_pool, const hc_tensor *k,
                     const hc_tensor *v, const int32_t *rows, int n_tokens);
int hc_cuda_swiglu(hc_backend *be, hc_tensor *out, const hc_tensor *gate, const hc_tensor *up);
int hc_cuda_add(hc_backend *be, hc_tensor *x, const hc_tensor *y);
int hc_cuda_embed(hc_backend *be, hc_tensor *out, const hc_tensor *table, const int32_t *ids);
int hc_cuda_get_rows(hc_backend *be, hc_tensor *out, const hc_tensor *src, const int32_t *idx);
int hc_cuda_set_rows(hc_backend *be, hc_tensor *dst, const float *src_host, const int32_t *idx,
                     int n);

#endif
