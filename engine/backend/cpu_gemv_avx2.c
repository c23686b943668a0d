/* cpu_gemv_avx2.c: the AVX2+FMA small-M matmul (decode GEMV and batched GEMV, cpu_isa.h). Built
 * with the project's baseline flags (-mavx2 -mfma -mf16c, CMakeLists.txt); called only when
 * hc_cpu_isa_supported says the CPU has AVX2 and FMA.
 *
 * Micro-tile: R <= 4 rows of x times J <= 2 weight rows (J = 4 when m = 1, for more independent
 * accumulators on the memory-bound decode), 8-lane accumulators, k swept 8 at a time; BF16/F16
 * weights widened exactly in registers, or once per weight tile into scratch when m needs more
 * than one row block. The per-output operation sequence is fixed exactly as in
 * cpu_gemv_avx512.c (with 8 lanes): row r's result does not depend on m or on the tiling. */
#include "backend/cpu_isa.h"
#include "core/tensor.h"

#if defined(__AVX2__) && defined(__FMA__) && defined(__F16C__)
#include <immintrin.h>

#define RB 4  /* rows of x per micro-tile */
#define JB 2  /* weight rows per micro-tile when m > 1 */
#define JB1 4 /* weight rows per micro-tile when m == 1 */
#define AI static inline __attribute__((always_inline))

AI __m256 load8_w(const void *w, hc_dtype t, size_t i) {
    const __m128i *p = (const __m128i *)((const uint16_t *)w + i);
    if (t == HC_DTYPE_BF16)
        return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm_loadu_si128(p)), 16));
    if (t == HC_DTYPE_F16) return _mm256_cvtph_ps(_mm_loadu_si128(p));
    return _mm256_loadu_ps((const float *)w + i);
}

/* the last rem (1..7) weights at element i, widened, lanes rem..7 zero */
AI __m256 load8_w_tail(const void *w, hc_dtype t, size_t i, int rem) {
    float buf[8] = {0};
    for (int q = 0; q < rem; q++)
        buf[q] = t == HC_DTYPE_BF16  ? hc_bf16_to_f32(((const uint16_t *)w)[i + (size_t)q])
                 : t == HC_DTYPE_F16 ? hc_f16_to_f32(((const uint16_t *)w)[i + (size_t)q])
                                     : ((const float *)w)[i + (size_t)q];
    return _mm256_loadu_ps(buf);
}

AI __m256i tail_mask(int rem) {
    const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    return _mm256_cmpgt_epi32(_mm256_set1_epi32(rem), lane);
}

/* Horizontal sum in a fixed order: lanes (i, i+4), then (i, i+2), (i, i+1). */
AI float hsum8(__m256 v) {
    __m128 b = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    b = _mm_add_ps(b, _mm_movehl_ps(b, b));
    b = _mm_add_ss(b, _mm_movehdup_ps(b));
    return _mm_cvtss_f32(b);
}

AI void tile(float *out, int64_t ldo, const float *x, int64_t k, const void *w, hc_dtype t,
             size_t w0, const int R, const int J) {
    __m256 acc[RB][JB1];
    for (int r = 0; r < R; r++)
        for (int j = 0; j < J; j++) acc[r][j] = _mm256_setzero_ps();
    int64_t i = 0;
    for (; i + 8 <= k; i += 8) {
        __m256 wv[JB1];
        for (int j = 0; j < J; j++) wv[j] = load8_w(w, t, (w0 + (size_t)j) * (size_t)k + (size_t)i);
        for (int r = 0; r < R; r++) {
            __m256 xv = _mm256_loadu_ps(x + r * k + i);
            for (int j = 0; j < J; j++) acc[r][j] = _mm256_fmadd_ps(xv, wv[j], acc[r][j]);
        }
    }
    if (i < k) {
        const int rem = (int)(k - i);
        const __m256i mk = tail_mask(rem);
        __m256 wv[JB1];
        for (int j = 0; j < J; j++)
            wv[j] = load8_w_tail(w, t, (w0 + (size_t)j) * (size_t)k + (size_t)i, rem);
        for (int r = 0; r < R; r++) {
            __m256 xv = _mm256_maskload_ps(x + r * k + i, mk);
            for (int j = 0; j < J; j++) acc[r][j] = _mm256_fmadd_ps(xv, wv[j], acc[r][j]);
        }
    }
    for (int r = 0; r < R; r++)
        for (int j = 0; j < J; j++) out[r * ldo + j] = hsum8(acc[r][j]);
}

#define TILE_CASE(R, J)                                                                            \
    case (R) * 8 + (J):                                                                           \
        if (t == HC_DTYPE_BF16) tile(out, ldo, x, k, w, HC_DTYPE_BF16, w0, R, J);                  \
        else if (t == HC_DTYPE_F16) tile(out, ldo, x, k, w, HC_DTYPE_F16, w0, R, J);               \
        else tile(out, ldo, x, k, w, HC_DTYPE_F32, w0, R, J);                                      \
        break;

static void tile_any(float *out, int64_t ldo, const float *x, int64_t k, const void *w, hc_dtype t,
                     size_t w0, int R, int J) {
    switch (R * 8 + J) {
        TILE_CASE(1, 1) TILE_CASE(2, 1) TILE_CASE(3, 1) TILE_CASE(4, 1) TILE_CASE(1, 4)
        TILE_CASE(1, 2) TILE_CASE(2, 2) TILE_CASE(3, 2) TILE_CASE(4, 2)
    default: break; /* unreachable: R in 1..RB, J in {1, JB, JB1 (R = 1)} */
    }
}

static void widen_rows(float *dst, const void *w, hc_dtype t, int64_t j, int J, int64_t k) {
    for (int q = 0; q < J; q++) {
        size_t off = (size_t)(j + q) * (size_t)k;
        float *d = dst + (size_t)q * (size_t)k;
        int64_t i = 0;
        if (t == HC_DTYPE_BF16)
            for (; i + 8 <= k; i += 8) _mm256_storeu_ps(d + i, load8_w(w, HC_DTYPE_BF16, off + (size_t)i));
        else
            for (; i + 8 <= k; i += 8) _mm256_storeu_ps(d + i, load8_w(w, HC_DTYPE_F16, off + (size_t)i));
        for (; i < k; i++)
            d[i] = t == HC_DTYPE_BF16 ? hc_bf16_to_f32(((const uint16_t *)w)[off + (size_t)i])
                                      : hc_f16_to_f32(((const uint16_t *)w)[off + (size_t)i]);
    }
}

void hc_cpu_gemm_avx2(float *out, int64_t ldo, const float *x, int64_t m, const void *w, hc_dtype t,
                      int64_t j0, int64_t j1, int64_t k, float *scratch) {
    const int widen = t != HC_DTYPE_F32 && m > RB && scratch;
    const int jb = m == 1 ? JB1 : JB;
    for (int64_t j = j0; j < j1;) {
        const int J = j1 - j >= jb ? jb : 1;
        const void *ws = w;
        hc_dtype ts = t;
        size_t w0 = (size_t)j;
        if (widen) {
            widen_rows(scratch, w, t, j, J, k);
            ws = scratch, ts = HC_DTYPE_F32, w0 = 0;
        }
        for (int64_t r = 0; r < m; r += RB) {
            const int R = m - r >= RB ? RB : (int)(m - r);
            tile_any(out + r * ldo + j, ldo, x + r * k, k, ws, ts, w0, R, J);
        }
        j += J;
    }
}
#else
#error "cpu_gemv_avx2.c needs -mavx2 -mfma -mf16c (the project's baseline flags, CMakeLists.txt)"
#endif
