/* cpu_isa.h: run-time instruction-set detection and the CPU backend's per-ISA kernels.
 *
 * The backend picks one hc_cpu_isa (backend.h) at creation: the best this CPU supports, or the
 * one hc_backend_params.cpu_isa asks for (an unsupported request is an error, never a silent
 * downgrade). Kernels of a level live in their own file, compiled with that level's flags only
 * (CMakeLists.txt), and are called only after detection says the CPU has the level. */
#ifndef HC_CPU_ISA_H
#define HC_CPU_ISA_H

#include <stddef.h>
#include <stdint.h>

#include "backend/backend.h"

/* The best level this CPU supports (never HC_CPU_ISA_AUTO). */
hc_cpu_isa hc_cpu_isa_detect(void);
/* 1 if this CPU can run isa's kernels (AUTO and PORTABLE: always), else 0. */
int hc_cpu_isa_supported(hc_cpu_isa isa);
/* "auto", "portable", "avx2", "avx512f", "avx512bf16"; "?" for a value out of range. */
const char *hc_cpu_isa_name(hc_cpu_isa isa);
/* Parses a name above (case-sensitive) into *out; HC_ERR_INVAL for anything else. */
int hc_cpu_isa_parse(const char *name, hc_cpu_isa *out);
/* The level a CPU backend runs (never AUTO); -1 if be is not a CPU backend. */
int hc_backend_cpu_isa(const hc_backend *be);

/* The most rows (m) the CPU backend's matmul gives the small-M kernel below; larger m goes to
 * OpenBLAS sgemm. Set from the measured crossover (docs/BENCHMARKS.md, "CPU backend vs llama.cpp
 * (issue 13)"); a build may override it (-DHC_CPU_SMALLM_MAX=N) to measure. */
#ifndef HC_CPU_SMALLM_MAX
#define HC_CPU_SMALLM_MAX 32
#endif

/* The small-M matmul kernel of one level ("batched GEMV": decode of 1..HC_CPU_SMALLM_MAX rows):
 *   out[r * ldo + j] = sum_i x[r * k + i] * w[j * k + i]   for r in [0, m), j in [j0, j1)
 * with x f32 (m x k), w of dtype t (F32, BF16 or F16; n x k, row-major), f32 accumulation.
 * Register-tiled: a tile of a few weight rows is loaded (BF16/F16 widened exactly in registers,
 * or once into scratch when there are several row blocks) and used for every row of x.
 * Every output element is computed by the same operation sequence whatever m, j0, j1 and the
 * tiling are (lane l of its accumulator sums x*w at i = l, l + W, l + 2W, ... in order; the tail
 * lanes are zero; then one fixed horizontal reduction), so row r of a batch is bit-identical to
 * the same row computed alone (m = 1). Levels differ from each other in summation order only.
 * scratch: hc_cpu_gemm_scratch_floats(k) floats owned by the caller (one per concurrent call). */
typedef void (*hc_cpu_gemm_fn)(float *out, int64_t ldo, const float *x, int64_t m, const void *w,
                               hc_dtype t, int64_t j0, int64_t j1, int64_t k, float *scratch);
/* Floats of scratch one call needs for rows of length k (any level). */
size_t hc_cpu_gemm_scratch_floats(int64_t k);
/* Portable C: one scalar accumulator per output, in index order (the tests' reference path;
 * cpu_gemv_portable.c). */
void hc_cpu_gemm_portable(float *out, int64_t ldo, const float *x, int64_t m, const void *w,
                          hc_dtype t, int64_t j0, int64_t j1, int64_t k, float *scratch);
/* AVX2+FMA: 8-lane accumulators, tiles of up to 4 rows x 2 outputs (4 outputs at m = 1)
 * (cpu_gemv_avx2.c). */
void hc_cpu_gemm_avx2(float *out, int64_t ldo, const float *x, int64_t m, const void *w, hc_dtype t,
                      int64_t j0, int64_t j1, int64_t k, float *scratch);
/* AVX-512F: 16-lane accumulators, tiles of up to 6 rows x 4 outputs; also the avx512bf16 level's
 * kernel, since f32 compute has no bf16 activations for vdpbf16ps (cpu_gemv_avx512.c). */
void hc_cpu_gemm_avx512(float *out, int64_t ldo, const float *x, int64_t m, const void *w,
                        hc_dtype t, int64_t j0, int64_t j1, int64_t k, float *scratch);
/* The kernel of level isa (AUTO: the detected one). The caller must check hc_cpu_isa_supported. */
hc_cpu_gemm_fn hc_cpu_gemm_for(hc_cpu_isa isa);

#endif
