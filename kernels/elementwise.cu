/* elementwise.cu: swiglu, add, embed, get_rows, set_rows (engine/backend/backend.h).
 *
 * All grid-stride loops over f32 elements; row ops index with host-validated, staged row ids.
 * silu(g) = g / (1 + exp(-g)) in f32 with expf (accurate), as torch's F.silu.
 */
#include <math.h>

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "cuda_common.cuh"

#define GRID_STRIDE(i, n)                                                                          \
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < (n);                        \
         i += (size_t)gridDim.x * blockDim.x)

__global__ void swiglu_kernel(float *out, const float *gate, const float *up, size_t n) {
    GRID_STRIDE(i, n) {
        const float g = gate[i];
        out[i] = (g / (1.f + expf(-g))) * up[i];
    }
}

__global__ void add_kernel(float *x, const float *y, size_t n) {
    GRID_STRIDE(i, n) x[i] += y[i];
}

__device__ __forceinline__ float load_f32(const float *p, size_t i) { return p[i]; }
__device__ __forceinline__ float load_f32(const __nv_bfloat16 *p, size_t i) {
    return __bfloat162float(p[i]);
}
__device__ __forceinline__ float load_f32(const __half *p, size_t i) { return __half2float(p[i]); }

/* out row r = src row idx[r] converted to f32 (embed and get_rows). */
template <typename T>
__global__ void gather_rows_kernel(float *__restrict__ out, const T *__restrict__ src,
                                   const int32_t *__restrict__ idx, size_t cols, size_t n) {
    GRID_STRIDE(i, n) {
        const size_t r = i / cols, col = i % cols;
        out[i] = load_f32(src, (size_t)idx[r] * cols + col);
    }
}

/* dst row idx[r] = src row r. */
__global__ void scatter_rows_kernel(float *__restrict__ dst, const float *__restrict__ src,
                                    const int32_t *__restrict__ idx, size_t cols, size_t n) {
    GRID_STRIDE(i, n) {
        const size_t r = i / cols, col = i % cols;
        dst[(size_t)idx[r] * cols + col] = src[i];
    }
}

static int check_same_f32(hc_backend *be, const char *op, const hc_tensor *a, const hc_tensor *b,
                          const hc_tensor *c3) {
    hc_cuda_ctx *c = hc_cuda_ctx_of(be);
    const hc_tensor *ts[3] = {a, b, c3};
    for (int i = 0; i < 3; i++) {
        if (!ts[i]) continue;
        if (!hc_cuda_owns(be, ts[i]))
            return HC_FAIL(c, HC_ERR_INVAL, "%s: tensor not in CUDA backend memory", op);
        if (ts[i]->dtype != HC_DTYPE_F32)
            return HC_FAIL(c, HC_ERR_MISMATCH, "%s: tensors must be F32", op);
        if (hc_tensor_nelem(ts[i]) != hc_tensor_nelem(a))
            return HC_FAIL(c, HC_ERR_MISMATCH, "%s: element counts differ", op);
    }
    return HC_OK;
}

int hc_cuda_swiglu(hc_backend *be, hc_tensor *out, const hc_tensor *gate, const hc_tensor *up) {
    hc_cuda_ctx *c = hc_cuda_ctx_of(be);
    int rc = check_same_f32(be, "swiglu", out, gate, up);
    if (rc != HC_OK) return rc;
    const size_t n = (size_t)hc_tensor_nelem(out);
    if (!n) return HC_OK;
    swiglu_kernel<<<hc_cuda_blocks((int64_t)n, 256), 256, 0, c->stream>>>(
        (float *)out->data, (const float *)gate->data, (const float *)up->data, n);
    HC_LAUNCH_CHECK(c);
    return HC_OK;
}

int hc_cuda_add(hc_backend *be, hc_tensor *x, const hc_tensor *y) {
    hc_cuda_ctx *c = hc_cuda_ctx_of(be);
    int rc = check_same_f32(be, "add", x, y, NULL);
    if (rc != HC_OK) return rc;
    const size_t n = (size_t)hc_tensor_nelem(x);
    if (!n) return HC_OK;
    add_kernel<<<hc_cuda_blocks((int64_t)n, 256), 256, 0, c->stream>>>(
        (float *)x->data, (const float *)y->data, n);
    HC_LAUNCH_CHECK(c);
    return HC_OK;
}

/* Shared by embed (any table dtype) and get_rows (F32 src). */
static int gather(hc_backend *be, const char *op, hc_tensor *out, const hc_tensor *src,
                  const int32_t *idx) {
    hc_cuda_ctx *c = hc_cuda_ctx_of(be);
    if (!hc_cuda_owns(be, out) || !hc_cuda_owns(be, src))
        return HC_FAIL(c, HC_ERR_INVAL, "%s: tensor not in CUDA backend memory", op);
    if (out->dtype != HC_DTYPE_F32) return HC_FAIL(c, HC_ERR_MISMATCH, "%s: out must be F32", op);
    const int64_t n = hc_tensor_rows(out), cols = hc_tensor_cols(out);
    const int64_t src_rows = hc_tensor_rows(src);
    if (hc_tensor_cols(src) != cols)
        return HC_FAIL(c, HC_ERR_MISMATCH, "%s: row lengths %lld and %lld differ", op,
                       (long long)hc_tensor_cols(src), (long long)cols);
    if (n == 0 || cols == 0) return HC_OK;
    if (!idx) return HC_FAIL(c, HC_ERR_INVAL, "%s: index array is NULL", op);
    for (int64_t r = 0; r < n; r++)
        if (idx[r] < 0 || idx[r] >= src_rows)
            return HC_FAIL(c, HC_ERR_RANGE, "%s: index %d (row %lld) outside [0, %lld)", op,
                           idx[r], (long long)r, (long long)src_rows);
    hc_stage_item item = {idx, (size_t)n * sizeof(int32_t), NULL};
    int rc = hc_cuda_stage(c, &item, 1);
    if (rc != HC_OK) return rc;
    const size_t total = (size_t)n * (size_t)cols;
    const unsigned blocks = hc_cuda_blocks((int64_t)total, 256);
    const int32_t *di = (const int32_t *)item.dev;
    float *o = (float *)out->data;
    switch (src->dtype) {
    case HC_DTYPE_F32:
        gather_rows_kernel<<<blocks, 256, 0, c->stream>>>(o, (const float *)src->data, di,
                                                          (size_t)cols, total);
        break;
    case HC_DTYPE_BF16:
        gather_rows_kernel<<<blocks, 256, 0, c->stream>>>(o, (const __nv_bfloat16 *)src->data, di,
                                                          (size_t)cols, total);
        break;
    case HC_DTYPE_F16:
        gather_rows_kernel<<<blocks, 256, 0, c->stream>>>(o, (const __half *)src->data, di,
                                                          (size_t)cols, total);
        break;
    default:
        return HC_FAIL(c, HC_ERR_UNSUPPORTED, "%s: source dtype %s", op,
                       hc_dtype_name(src->dtype));
    }
    HC_LAUNCH_CHECK(c);
    return HC_OK;
}

int hc_cuda_embed(hc_backend *be, hc_tensor *out, const hc_tensor *table, const int32_t *ids) {
    return gather(be, "embed", out, table, ids);
}

int hc_cuda_get_rows(hc_backend *be, hc_tensor *out, const hc_tensor *src, const int32_t *idx) {
    if (src && src->dtype != HC_DTYPE_F32)
        return HC_FAIL(hc_cuda_ctx_of(be), HC_ERR_MISMATCH, "get_rows: src must be F32");
    return gather(be, "get_rows", out, src, idx);
}

int hc_cuda_set_rows(hc_backend *be, hc_tensor *dst, const float *src_host, const int32_t *idx,
                     int n) {
    hc_cuda_ctx *c = hc_cuda_ctx_of(be);
    if (!hc_cuda_owns(be, dst))
        return HC_FAIL(c, HC_ERR_INVAL, "set_rows: tensor not in CUDA backend memory");
    if (dst->dtype != HC_DTYPE_F32) return HC_FAIL(c, HC_ERR_MISMATCH, "set_rows: dst must be F32");
    if (n < 0) return HC_FAIL(c, HC_ERR_INVAL, "set_rows: n < 0");
    const int64_t cols = hc_tensor_cols(dst), rows = hc_tensor_rows(dst);
    if (n == 0 || cols == 0) return HC_OK;
    if (!src_host || !idx) return HC_FAIL(c, HC_ERR_INVAL, "set_rows: NULL source or index");
    for (int r = 0; r < n; r++)
        if (idx[r] < 0 || idx[r] >= rows)
            return HC_FAIL(c, HC_ERR_RANGE, "set_rows: index %d (row %d) outside [0, %lld)",
                           idx[r], r, (long long)rows);
    const size_t total = (size_t)n * (size_t)cols;
    /* The rows travel with the indices through the pinned staging ring: one async copy. */
    hc_stage_item items[2] = {{idx, (size_t)n * sizeof(int32_t), NULL},
                              {src_host, total * sizeof(float), NULL}};
    int rc = hc_cuda_stage(c, items, 2);
    if (rc != HC_OK) return rc;
    scatter_rows_kernel<<<hc_cuda_blocks((int64_t)total, 256), 256, 0, c->stream>>>(
        (float *)dst->data, (const float *)items[1].dev, (const int32_t *)items[0].dev,
        (size_t)cols, total);
    HC_LAUNCH_CHECK(c);
    return HC_OK;
}
