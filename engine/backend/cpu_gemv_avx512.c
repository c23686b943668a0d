/* cpu_gemv_avx512.c: AVX-512F decode kernels. Compiled with -mavx512f (CMakeLists.txt) and called
 * only when hc_cpu_isa_supported(HC_CPU_ISA_AVX512F). BF16/F16 weights are widened exactly in
 * registers, so the result differs from the AVX2 path only by summation order. */
#include "backend/cpu_isa.h"
#include "core/tensor.h"

#if defined(__AVX512F__)
#include <immintrin.h>

static inline __m512 load16_w(const void *w, hc_dtype t, size_t i) {
    const __m256i *p = (const __m256i *)((const uint16_t *)w + i);
    if (t == HC_DTYPE_BF16)
        return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_loadu_si256(p)), 16));
    if (t == HC_DTYPE_F16) return _mm512_cvtph_ps(_mm256_loadu_si256(p));
    return _mm512_loadu_ps((const float *)w + i);
}

float hc_cpu_dot_avx512(const float *x, const void *w, hc_dtype t, size_t w_off, int64_t k) {
    __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
    int64_t i = 0;
    for (; i + 64 <= k; i += 64) {
        a0 = _mm512_fmadd_ps(_mm512_loadu_ps(x + i), load16_w(w, t, w_off + i), a0);
        a1 = _mm512_fmadd_ps(_mm512_loadu_ps(x + i + 16), load16_w(w, t, w_off + i + 16), a1);
        a2 = _mm512_fmadd_ps(_mm512_loadu_ps(x + i + 32), load16_w(w, t, w_off + i + 32), a2);
        a3 = _mm512_fmadd_ps(_mm512_loadu_ps(x + i + 48), load16_w(w, t, w_off + i + 48), a3);
    }
    for (; i + 16 <= k; i += 16) a0 = _mm512_fmadd_ps(_mm512_loadu_ps(x + i), load16_w(w, t, w_off + i), a0);
    float sum = _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(a0, a1), _mm512_add_ps(a2, a3)));
    for (; i < k; i++) {
        size_t j = w_off + (size_t)i;
        float wv = t == HC_DTYPE_BF16  ? hc_bf16_to_f32(((const uint16_t *)w)[j])
                   : t == HC_DTYPE_F16 ? hc_f16_to_f32(((const uint16_t *)w)[j])
                                       : ((const float *)w)[j];
        sum += x[i] * wv;
    }
    return sum;
}
#else
#error "cpu_gemv_avx512.c must be compiled with -mavx512f (CMakeLists.txt)"
#endif
