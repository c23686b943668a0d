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

/* dot of k floats x with k weights of dtype t starting at element w_off. */
typedef float (*hc_cpu_dot_fn)(const float *x, const void *w, hc_dtype t, size_t w_off, int64_t k);
/* AVX-512F: 4 interleaved 16-lane accumulators, then a scalar tail (cpu_gemv_avx512.c). */
float hc_cpu_dot_avx512(const float *x, const void *w, hc_dtype t, size_t w_off, int64_t k);

#endif
