/* norm_rope.cu: RMSNorm and rotate-half RoPE (engine/backend/backend.h).
 *
 * rmsnorm: one block per row; sum of squares in f32 (per-thread partials, then a tree), then
 *   out = (x * (1 / sqrt(mean + eps))) * w, the order transformers' LlamaRMSNorm uses. In-place
 *   (out == x) is allowed: each element is read and written by the same thread.
 * rope: in place on x (n_tokens, n_heads, head_dim). The inv_freq table is computed on the host
 *   exactly as the CPU backend and transformers do (f32: 1 / powf(theta, (2i)/d)) once per
 *   (theta, head_dim) and staged with the positions; the angle is the f32 product pos * inv_freq (as transformers computes it in
 *   f32), and cos/sin are the accurate f32 functions (no fast-math intrinsics: positions reach the
 *   thousands, where __sinf's range reduction is poor).
 */
#include <math.h>
#include <stdlib.h>

#include "cuda_common.cuh"

#define HC_NORM_THREADS 256

__global__ void __launch_bounds__(HC_NORM_THREADS)
    rmsnorm_kernel(float *out, const float *x, const float *__restrict__ w, int dim, float eps) {
    __shared__ float partial[HC_NORM_THREADS / 32];
    const size_t row = blockIdx.x;
    const float *xr = x + row * (size_t)dim;
    float *orow = out + row * (size_t)dim;
    float ss = 0.f;
    for (int i = threadIdx.x; i < dim; i += blockDim.x) ss += xr[i] * xr[i];
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) ss += __shfl_xor_sync(0xffffffffu, ss, o);
    if ((threadIdx.x & 31) == 0) partial[threadIdx.x >> 5] = ss;
    __syncthreads();
    if (threadIdx.x < 32) {
        float v = threadIdx.x < blockDim.x / 32 ? partial[threadIdx.x] : 0.f;
#pragma unroll
        for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
        if (threadIdx.x == 0) partial[0] = v;
    }
    __syncthreads();
    const float inv = 1.f / sqrtf(partial[0] / (float)dim + eps);
    for (int i = threadIdx.x; i < dim; i += blockDim.x) orow[i] = (xr[i] * inv) * w[i];
}

int hc_cuda_rmsnorm(hc_backend *be, hc_tensor *out, const hc_tensor *x, const hc_tensor *w,
                    float eps) {
    hc_cuda_ctx *c = hc_cuda_ctx_of(be);
    if (!hc_cuda_owns(be, out) || !hc_cuda_owns(be, x) || !hc_cuda_owns(be, w))
        return HC_FAIL(c, HC_ERR_INVAL, "rmsnorm: tensor not in CUDA backend memory");
    if (out->dtype != HC_DTYPE_F32 || x->dtype != HC_DTYPE_F32 || w->dtype != HC_DTYPE_F32)
        return HC_FAIL(c, HC_ERR_MISMATCH, "rmsnorm: x, w and out must be F32");
    const int64_t rows = hc_tensor_rows(x), dim = hc_tensor_cols(x);
    if (hc_tensor_nelem(w) != dim || hc_tensor_nelem(out) != hc_tensor_nelem(x))
        return HC_FAIL(c, HC_ERR_MISMATCH, "rmsnorm: w has %lld elements, rows have %lld",
                       (long long)hc_tensor_nelem(w), (long long)dim);
    if (rows == 0 || dim == 0) return HC_OK;
    if (rows > INT32_MAX || dim > INT32_MAX)
        return HC_FAIL(c, HC_ERR_RANGE, "rmsnorm: too many rows");
    rmsnorm_kernel<<<(unsigned)rows, HC_NORM_THREADS, 0, c->stream>>>(
        (float *)out->data, (const float *)x->data, (const float *)w->data, (int)dim, eps);
    HC_LAUNCH_CHECK(c);
    return HC_OK;
}

/* One thread per (token, head, i < half): rotates the pair (i, i + half). */
__global__ void rope_kernel(float *x, const int32_t *__restrict__ pos,
                            const float *__restrict__ inv_freq, int n_heads, int half,
                            size_t n_pairs) {
    for (size_t p = (size_t)blockIdx.x * blockDim.x + threadIdx.x; p < n_pairs;
         p += (size_t)gridDim.x * blockDim.x) {
        const int i = (int)(p % (size_t)half);
        const size_t th = p / (size_t)half; /* token * n_heads + head */
        const size_t t = th / (size_t)n_heads;
        const float angle = __fmul_rn((float)pos[t], inv_freq[i]);
        float s, co;
        sincosf(angle, &s, &co);
        float *xh = x + th * (size_t)(2 * half);
        const float x0 = xh[i], x1 = xh[i + half];
        xh[i] = __fsub_rn(__fmul_rn(x0, co), __fmul_rn(x1, s));
        xh[i + half] = __fadd_rn(__fmul_rn(x1, co), __fmul_rn(x0, s));
    }
}

int hc_cuda_rope(hc_backend *be, hc_tensor *x, const int32_t *pos, double theta) {
    hc_cuda_ctx *c = hc_cuda_ctx_of(be);
    if (!hc_cuda_owns(be, x)) return HC_FAIL(c, HC_ERR_INVAL, "rope: tensor not in CUDA memory");
    if (x->dtype != HC_DTYPE_F32) return HC_FAIL(c, HC_ERR_MISMATCH, "rope: x must be F32");
    if (x->n_dims < 2) return HC_FAIL(c, HC_ERR_MISMATCH, "rope: x must be (n_tokens, ..., d)");
    const int64_t n_tokens = x->ne[0], head_dim = hc_tensor_cols(x);
    if (n_tokens == 0 || head_dim == 0) return HC_OK;
    const int64_t n_heads = hc_tensor_nelem(x) / (n_tokens * head_dim);
    if (head_dim % 2 || head_dim > 65536 || n_tokens > INT32_MAX || n_heads > INT32_MAX)
        return HC_FAIL(c, HC_ERR_MISMATCH, "rope: head_dim %lld must be even",
                       (long long)head_dim);
    if (!pos) return HC_FAIL(c, HC_ERR_INVAL, "rope: pos is NULL");
    const int half = (int)(head_dim / 2);
    if (!c->rope_inv_freq || c->rope_head_dim != (int)head_dim || c->rope_theta != theta) {
        float *t = (float *)realloc(c->rope_inv_freq, (size_t)half * sizeof(float));
        if (!t) return HC_FAIL(c, HC_ERR_NOMEM, "rope: out of host memory");
        for (int i = 0; i < half; i++)
            t[i] = 1.0f / powf((float)theta, (float)(2 * i) / (float)head_dim);
        c->rope_inv_freq = t;
        c->rope_head_dim = (int)head_dim;
        c->rope_theta = theta;
    }
    hc_stage_item items[2] = {{pos, (size_t)n_tokens * sizeof(int32_t), NULL},
                              {c->rope_inv_freq, (size_t)half * sizeof(float), NULL}};
    int rc = hc_cuda_stage(c, items, 2);
    if (rc != HC_OK) return rc;
    const size_t n_pairs = (size_t)n_tokens * (size_t)n_heads * (size_t)half;
    rope_kernel<<<hc_cuda_blocks((int64_t)n_pairs, 256), 256, 0, c->stream>>>(
        (float *)x->data, (const int32_t *)items[0].dev, (const float *)items[1].dev,
        (int)n_heads, half, n_pairs);
    HC_LAUNCH_CHECK(c);
    return HC_OK;
}
