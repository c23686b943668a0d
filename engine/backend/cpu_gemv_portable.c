/* cpu_gemv_portable.c: the portable small-M matmul (cpu_isa.h), the reference the tests compare
 * the vector levels against: one scalar f32 accumulator per output, products added in index
 * order, weights widened one at a time (exact). No tiling: it is the readable definition, not a
 * fast path (a weight row is re-read for each row of x). */
#include "backend/cpu_isa.h"
#include "core/tensor.h"

static float dot_portable(const float *x, const void *w, hc_dtype t, size_t off, int64_t k) {
    float sum = 0.0f;
    for (int64_t i = 0; i < k; i++) {
        size_t q = off + (size_t)i;
        float wv = t == HC_DTYPE_BF16  ? hc_bf16_to_f32(((const uint16_t *)w)[q])
                   : t == HC_DTYPE_F16 ? hc_f16_to_f32(((const uint16_t *)w)[q])
                                       : ((const float *)w)[q];
        sum += x[i] * wv;
    }
    return sum;
}

void hc_cpu_gemm_portable(float *out, int64_t ldo, const float *x, int64_t m, const void *w,
                          hc_dtype t, int64_t j0, int64_t j1, int64_t k, float *scratch) {
    (void)scratch;
    for (int64_t j = j0; j < j1; j++)
        for (int64_t r = 0; r < m; r++)
            out[r * ldo + j] = dot_portable(x + r * k, w, t, (size_t)j * (size_t)k, k);
}
