/* matmul.cu: out (m, n) = x (m, k) . w (n, k)^T with f32 activations, F32/BF16/F16 weights and
 * f32 accumulation (engine/backend/backend.h).
 *
 * Paths:
 *  - m <= 8 (decode), any weight dtype: a GEMV kernel that reads the weight directly (16-byte
 *    loads, 8 weights per lane per step), converts in registers and accumulates in f32. One warp
 *    per output column; bandwidth bound on the weight, which is read once. Each output element is
 *    computed by the same instruction sequence whatever m is (acc[r] are independent), so a
 *    sequence decoded inside a batch of <= 8 gets the same logits as decoded alone (the CPU
 *    backend makes the same promise; cuBLAS picks different kernels per m and would not).
 *  - F32 weight, m > 8: cublasSgemm with CUBLAS_DEFAULT_MATH (no TF32), so results match the CPU
 *    reference to f32 rounding.
 *  - BF16/F16 weight, m > 8 (prefill): cuBLAS has no "A 16-bit, B f32" GEMM, and converting x down
 *    to bf16 would lose precision against the f32 reference. So the weight is converted to f32 in
 *    row chunks of at most HC_WSCRATCH_ELEMS elements into a scratch buffer, and each chunk is one
 *    cublasSgemm writing its column block of out (ldc = n). Cost: an extra read of the weight plus
 *    a write and read of the f32 chunk (about 5x the weight's bytes), amortized over m rows;
 *    the scratch is bounded (64 MiB), not a full f32 copy of every weight.
 *
 * Row-major to cuBLAS (column-major): out^T (n x m, ld n) = W^T' . x^T where W as stored is the
 * column-major (k x n, ld k) matrix, used with CUBLAS_OP_T; x is column-major (k x m, ld k).
 */
#include "cuda_common.cuh"

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#define HC_GEMV_MAX_M 8
#define HC_GEMV_WARPS 8
#define HC_WSCRATCH_ELEMS ((size_t)16 << 20) /* 16 Mi floats = 64 MiB */

/* Loads 8 consecutive weights (16-byte aligned) as f32: one 16-byte load for 16-bit types, two
 * for f32. */
__device__ __forceinline__ void load8(const __nv_bfloat16 *p, float *f) {
    const uint4 raw = __ldg(reinterpret_cast<const uint4 *>(p));
    const unsigned int u[4] = {raw.x, raw.y, raw.z, raw.w};
#pragma unroll
    for (int i = 0; i < 4; i++) {
        f[2 * i] = __uint_as_float(u[i] << 16);
        f[2 * i + 1] = __uint_as_float(u[i] & 0xffff0000u);
    }
}
__device__ __forceinline__ void load8(const __half *p, float *f) {
    const uint4 raw = __ldg(reinterpret_cast<const uint4 *>(p));
    const unsigned int u[4] = {raw.x, raw.y, raw.z, raw.w};
#pragma unroll
    for (int i = 0; i < 4; i++) {
        __half2 h;
        memcpy(&h, &u[i], 4);
        const float2 v = __half22float2(h);
        f[2 * i] = v.x;
        f[2 * i + 1] = v.y;
    }
}
__device__ __forceinline__ void load8(const float *p, float *f) {
    const float4 a = __ldg(reinterpret_cast<const float4 *>(p));
    const float4 b = __ldg(reinterpret_cast<const float4 *>(p) + 1);
    f[0] = a.x, f[1] = a.y, f[2] = a.z, f[3] = a.w, f[4] = b.x, f[5] = b.y, f[6] = b.z, f[7] = b.w;
}
__device__ __forceinline__ float to_f32(float v) { return v; }
__device__ __forceinline__ float to_f32(__nv_bfloat16 v) { return __bfloat162float(v); }
__device__ __forceinline__ float to_f32(__half v) { return __half2float(v); }

/* One warp per output column `col`: acc[r] = sum_i x[r, i] * w[col, i] for r < M.
 * vec: k % 8 == 0 and x, w 16-byte aligned (then every row is too). */
template <typename T, int M>
__global__ void __launch_bounds__(HC_GEMV_WARPS * 32)
    gemv_kernel(float *__restrict__ out, const float *__restrict__ x, const T *__restrict__ w,
                int n, int k, int vec) {
    const int lane = threadIdx.x & 31;
    const int col = blockIdx.x * HC_GEMV_WARPS + (threadIdx.x >> 5);
    if (col >= n) return;
    const T *wr = w + (size_t)col * k;
    float acc[M];
#pragma unroll
    for (int r = 0; r < M; r++) acc[r] = 0.f;
    if (vec) {
        for (int i = lane * 8; i < k; i += 32 * 8) {
            float wf[8];
            load8(wr + i, wf);
#pragma unroll
            for (int r = 0; r < M; r++) {
                const float4 *xp = reinterpret_cast<const float4 *>(x + (size_t)r * k + i);
                const float4 a = __ldg(xp), b = __ldg(xp + 1);
                acc[r] += a.x * wf[0] + a.y * wf[1] + a.z * wf[2] + a.w * wf[3] + b.x * wf[4] +
                          b.y * wf[5] + b.z * wf[6] + b.w * wf[7];
            }
        }
    } else {
        for (int i = lane; i < k; i += 32) {
            const float wv = to_f32(wr[i]);
#pragma unroll
            for (int r = 0; r < M; r++) acc[r] += x[(size_t)r * k + i] * wv;
        }
    }
#pragma unroll
    for (int r = 0; r < M; r++) {
        float v = acc[r];
#pragma unroll
        for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
        if (lane == 0) out[(size_t)r * n + col] = v;
    }
}

template <typename T>
__global__ void convert_to_f32_kernel(float *__restrict__ dst, const T *__restrict__ src,
                                      size_t n) {
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x)
        dst[i] = to_f32(src[i]);
}

template <typename T, int M>
static void launch_gemv_m(float *out, const float *x, const T *w, int n, int k, int vec,
                          cudaStream_t s) {
    const unsigned blocks = (unsigned)((n + HC_GEMV_WARPS - 1) / HC_GEMV_WARPS);
    gemv_kernel<T, M><<<blocks, HC_GEMV_WARPS * 32, 0, s>>>(out, x, w, n, k, vec);
}

template <typename T>
static void launch_gemv(float *out, const float *x, const T *w, int m, int n, int k,
                        cudaStream_t s) {
    const int vec = (k % 8 == 0) && ((((uintptr_t)x) | ((uintptr_t)w)) % 16 == 0);
    switch (m) {
    case 1: launch_gemv_m<T, 1>(out, x, w, n, k, vec, s); break;
    case 2: launch_gemv_m<T, 2>(out, x, w, n, k, vec, s); break;
    case 3: launch_gemv_m<T, 3>(out, x, w, n, k, vec, s); break;
    case 4: launch_gemv_m<T, 4>(out, x, w, n, k, vec, s); break;
    case 5: launch_gemv_m<T, 5>(out, x, w, n, k, vec, s); break;
    case 6: launch_gemv_m<T, 6>(out, x, w, n, k, vec, s); break;
    case 7: launch_gemv_m<T, 7>(out, x, w, n, k, vec, s); break;
    default: launch_gemv_m<T, 8>(out, x, w, n, k, vec, s); break;
    }
}

/* Converts the weight in row chunks and runs one Sgemm per chunk. */
template <typename T>
static int matmul_converted(hc_cuda_ctx *c, float *out, const float *x, const T *w, int m, int n,
                            int k) {
    size_t chunk_rows = HC_WSCRATCH_ELEMS / (size_t)k;
    if (chunk_rows < 1) chunk_rows = 1;
    if (chunk_rows > (size_t)n) chunk_rows = (size_t)n;
    const size_t need = chunk_rows * (size_t)k;
    if (c->wscratch_elems < need) {
        HC_CU_CHECK(c, cudaStreamSynchronize(c->stream)); /* queued Sgemms may read it */
        if (c->wscratch) HC_CU_CHECK(c, cudaFree(c->wscratch));
        c->wscratch = NULL;
        c->wscratch_elems = 0;
        HC_CU_CHECK(c, cudaMalloc((void **)&c->wscratch, need * sizeof(float)));
        c->wscratch_elems = need;
    }
    const float one = 1.f, zero = 0.f;
    for (size_t n0 = 0; n0 < (size_t)n; n0 += chunk_rows) {
        const size_t nc = (size_t)n - n0 < chunk_rows ? (size_t)n - n0 : chunk_rows;
        const size_t ne = nc * (size_t)k;
        convert_to_f32_kernel<T><<<hc_cuda_blocks((int64_t)ne, 256), 256, 0, c->stream>>>(
            c->wscratch, w + n0 * (size_t)k, ne);
        HC_LAUNCH_CHECK(c);
        HC_CUBLAS_CHECK(c, cublasSgemm(c->cublas, CUBLAS_OP_T, CUBLAS_OP_N, (int)nc, m, k, &one,
                                       c->wscratch, k, x, k, &zero, out + n0, n));
    }
    return HC_OK;
}

int hc_cuda_matmul(hc_backend *be, hc_tensor *out, const hc_tensor *x, const hc_tensor *w) {
    hc_cuda_ctx *c = hc_cuda_ctx_of(be);
    if (!hc_cuda_owns(be, out) || !hc_cuda_owns(be, x) || !hc_cuda_owns(be, w))
        return HC_FAIL(c, HC_ERR_INVAL, "matmul: tensor not in CUDA backend memory");
    if (out->dtype != HC_DTYPE_F32 || x->dtype != HC_DTYPE_F32)
        return HC_FAIL(c, HC_ERR_MISMATCH, "matmul: x and out must be F32");
    const int64_t m = hc_tensor_rows(x), k = hc_tensor_cols(x);
    const int64_t n = hc_tensor_rows(w);
    if (hc_tensor_cols(w) != k || hc_tensor_rows(out) != m || hc_tensor_cols(out) != n)
        return HC_FAIL(c, HC_ERR_MISMATCH,
                       "matmul: shapes x(%lld,%lld) w(%lld,%lld) out(%lld,%lld)", (long long)m,
                       (long long)k, (long long)n, (long long)hc_tensor_cols(w),
                       (long long)hc_tensor_rows(out), (long long)hc_tensor_cols(out));
    if (m > INT32_MAX || n > INT32_MAX || k > INT32_MAX)
        return HC_FAIL(c, HC_ERR_RANGE, "matmul: dimension over INT32_MAX");
    if (m == 0 || n == 0) return HC_OK;
    float *o = (float *)out->data;
    const float *xf = (const float *)x->data;
    const float one = 1.f, zero = 0.f;
    if (k == 0) {
        HC_CU_CHECK(c, cudaMemsetAsync(o, 0, (size_t)(m * n) * sizeof(float), c->stream));
        return HC_OK;
    }
    switch (w->dtype) {
    case HC_DTYPE_F32:
        if (m <= HC_GEMV_MAX_M) {
            launch_gemv(o, xf, (const float *)w->data, (int)m, (int)n, (int)k, c->stream);
            HC_LAUNCH_CHECK(c);
            return HC_OK;
        }
        HC_CUBLAS_CHECK(c, cublasSgemm(c->cublas, CUBLAS_OP_T, CUBLAS_OP_N, (int)n, (int)m, (int)k,
                                       &one, (const float *)w->data, (int)k, xf, (int)k, &zero, o,
                                       (int)n));
        return HC_OK;
    case HC_DTYPE_BF16:
        if (m <= HC_GEMV_MAX_M) {
            launch_gemv(o, xf, (const __nv_bfloat16 *)w->data, (int)m, (int)n, (int)k, c->stream);
            HC_LAUNCH_CHECK(c);
            return HC_OK;
        }
        return matmul_converted(c, o, xf, (const __nv_bfloat16 *)w->data, (int)m, (int)n, (int)k);
    case HC_DTYPE_F16:
        if (m <= HC_GEMV_MAX_M) {
            launch_gemv(o, xf, (const __half *)w->data, (int)m, (int)n, (int)k, c->stream);
            HC_LAUNCH_CHECK(c);
            return HC_OK;
        }
        return matmul_converted(c, o, xf, (const __half *)w->data, (int)m, (int)n, (int)k);
    default:
        return HC_FAIL(c, HC_ERR_UNSUPPORTED, "matmul: weight dtype %s", hc_dtype_name(w->dtype));
    }
}
