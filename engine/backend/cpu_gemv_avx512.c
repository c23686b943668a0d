/* cpu_gemv_avx512.c: the AVX-512F small-M matmul (decode GEMV and batched GEMV, cpu_isa.h).
 * Compiled with -mavx512f (CMakeLists.txt) and called only when hc_cpu_isa_supported says the CPU
 * has AVX-512F. Only AVX-512F instructions are used (no BW/DQ/VL), so any AVX-512 CPU runs it.
 *
 * Micro-tile: R <= 6 rows of x times J <= 4 weight rows, R*J 16-lane accumulators (24 of the 32
 * zmm registers), k swept 16 at a time. Each weight vector is loaded (BF16/F16 widened exactly)
 * once per tile and used for all R rows; each x vector once and used for all J outputs. When m
 * needs more than one row block, a BF16/F16 weight tile is first widened into scratch (exact), so
 * the widening is done once per weight tile, not once per row block.
 *
 * Per output the operation sequence is fixed: acc = 0; acc = fma(x[i..i+15], w[i..i+15], acc) for
 * i = 0, 16, ...; a last chunk of k % 16 with the missing lanes zero in both x and w (an exact
 * +0 added: acc starts at +0 and so is never -0); then hsum16 below. Hence row r's result does not
 * depend on m, on the tile shape that computed it, nor on widened-in-scratch vs in-registers. */
#include "backend/cpu_isa.h"
#include "core/tensor.h"

#if defined(__AVX512F__)
#include <immintrin.h>

#define RB 6 /* rows of x per micro-tile */
#define JB 4 /* weight rows (outputs) per micro-tile */
#define AI static inline __attribute__((always_inline))

AI __m512 load16_w(const void *w, hc_dtype t, size_t i) {
    const __m256i *p = (const __m256i *)((const uint16_t *)w + i);
    if (t == HC_DTYPE_BF16)
        return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_loadu_si256(p)), 16));
    if (t == HC_DTYPE_F16) return _mm512_cvtph_ps(_mm256_loadu_si256(p));
    return _mm512_loadu_ps((const float *)w + i);
}

/* the last rem (1..15) weights at element i, widened, lanes rem..15 zero */
AI __m512 load16_w_tail(const void *w, hc_dtype t, size_t i, int rem) {
    if (t == HC_DTYPE_F32) return _mm512_maskz_loadu_ps((__mmask16)((1u << rem) - 1), (const float *)w + i);
    float buf[16] = {0};
    for (int q = 0; q < rem; q++)
        buf[q] = t == HC_DTYPE_BF16 ? hc_bf16_to_f32(((const uint16_t *)w)[i + (size_t)q])
                                    : hc_f16_to_f32(((const uint16_t *)w)[i + (size_t)q]);
    return _mm512_loadu_ps(buf);
}

/* Horizontal sum in a fixed order: lanes (i, i+8), then (i, i+4), (i, i+2), (i, i+1). */
AI float hsum16(__m512 v) {
    __m256 lo = _mm512_castps512_ps256(v);
    __m256 hi = _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1));
    __m256 a = _mm256_add_ps(lo, hi);
    __m128 b = _mm_add_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
    b = _mm_add_ps(b, _mm_movehl_ps(b, b));
    b = _mm_add_ss(b, _mm_movehdup_ps(b));
    return _mm_cvtss_f32(b);
}

/* out[r * ldo + j] for r < R, j < J; x rows r * k, weight row j at element (w0 + j) * k. */
AI void tile(float *out, int64_t ldo, const float *x, int64_t k, const void *w, hc_dtype t,
             size_t w0, const int R, const int J) {
    __m512 acc[RB][JB];
    for (int r = 0; r < R; r++)
        for (int j = 0; j < J; j++) acc[r][j] = _mm512_setzero_ps();
    int64_t i = 0;
    for (; i + 16 <= k; i += 16) {
        __m512 wv[JB];
        for (int j = 0; j < J; j++) wv[j] = load16_w(w, t, (w0 + (size_t)j) * (size_t)k + (size_t)i);
        for (int r = 0; r < R; r++) {
            __m512 xv = _mm512_loadu_ps(x + r * k + i);
            for (int j = 0; j < J; j++) acc[r][j] = _mm512_fmadd_ps(xv, wv[j], acc[r][j]);
        }
    }
    if (i < k) {
        const int rem = (int)(k - i);
        const __mmask16 mk = (__mmask16)((1u << rem) - 1);
        __m512 wv[JB];
        for (int j = 0; j < J; j++)
            wv[j] = load16_w_tail(w, t, (w0 + (size_t)j) * (size_t)k + (size_t)i, rem);
        for (int r = 0; r < R; r++) {
            __m512 xv = _mm512_maskz_loadu_ps(mk, x + r * k + i);
            for (int j = 0; j < J; j++) acc[r][j] = _mm512_fmadd_ps(xv, wv[j], acc[r][j]);
        }
    }
    for (int r = 0; r < R; r++)
        for (int j = 0; j < J; j++) out[r * ldo + j] = hsum16(acc[r][j]);
}

/* One instantiation per (R, J, dtype): the compiler keeps acc[][] in registers. */
#define TILE_CASE(R, J)                                                                            \
    case (R) * 8 + (J):                                                                           \
        if (t == HC_DTYPE_BF16) tile(out, ldo, x, k, w, HC_DTYPE_BF16, w0, R, J);                  \
        else if (t == HC_DTYPE_F16) tile(out, ldo, x, k, w, HC_DTYPE_F16, w0, R, J);               \
        else tile(out, ldo, x, k, w, HC_DTYPE_F32, w0, R, J);                                      \
        break;

static void tile_any(float *out, int64_t ldo, const float *x, int64_t k, const void *w, hc_dtype t,
                     size_t w0, int R, int J) {
    switch (R * 8 + J) {
        TILE_CASE(1, 1) TILE_CASE(2, 1) TILE_CASE(3, 1) TILE_CASE(4, 1) TILE_CASE(5, 1)
        TILE_CASE(6, 1) TILE_CASE(1, 4) TILE_CASE(2, 4) TILE_CASE(3, 4) TILE_CASE(4, 4)
        TILE_CASE(5, 4) TILE_CASE(6, 4)
    default: break; /* unreachable: R in 1..RB, J in {1, JB} */
    }
}

/* J weight rows from row j, widened into dst (J x k floats; exact). */
static void widen_rows(float *dst, const void *w, hc_dtype t, int64_t j, int J, int64_t k) {
    for (int q = 0; q < J; q++) {
        size_t off = (size_t)(j + q) * (size_t)k;
        float *d = dst + (size_t)q * (size_t)k;
        int64_t i = 0;
        if (t == HC_DTYPE_BF16)
            for (; i + 16 <= k; i += 16) _mm512_storeu_ps(d + i, load16_w(w, HC_DTYPE_BF16, off + (size_t)i));
        else
            for (; i + 16 <= k; i += 16) _mm512_storeu_ps(d + i, load16_w(w, HC_DTYPE_F16, off + (size_t)i));
        for (; i < k; i++)
            d[i] = t == HC_DTYPE_BF16 ? hc_bf16_to_f32(((const uint16_t *)w)[off + (size_t)i])
                                      : hc_f16_to_f32(((const uint16_t *)w)[off + (size_t)i]);
    }
}

void hc_cpu_gemm_avx512(float *out, int64_t ldo, const float *x, int64_t m, const void *w,
                        hc_dtype t, int64_t j0, int64_t j1, int64_t k, float *scratch) {
    const int widen = t != HC_DTYPE_F32 && m > RB && scratch;
    for (int64_t j = j0; j < j1;) {
        const int J = j1 - j >= JB ? JB : 1;
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
#error "cpu_gemv_avx512.c must be compiled with -mavx512f (CMakeLists.txt)"
#endif
