/* cpu_dnnl.h: the CPU backend's prefill GEMM through oneDNN (libdnnl) matmul, when the build
 * found it (HC_HAVE_DNNL; CMakeLists.txt). oneDNN picks its kernels at run time from its own
 * cpuid (AVX2, AVX-512, AVX-512-BF16, AMX), independent of the backend's hc_cpu_isa level.
 *
 * Threading: the backend keeps its own pool; each pool task calls hc_cpu_dnnl_gemm on its own
 * range of output columns and oneDNN runs that call single-threaded in the calling thread (its
 * OpenMP thread count is set to 1 around creation and execution, then restored, so the caller's
 * other OpenMP users, e.g. FAISS, keep theirs). The result therefore depends only on the shape of
 * each call, i.e. on the thread count: deterministic for a fixed one.
 *
 * Primitives are cached per (m, nb, k, ldo, dtype) in the handle (least recently used entry
 * evicted; one matmul uses at most 4 shapes, far below the capacity, so an entry in use is never
 * evicted). Each task slot has its own stream and scratchpad. */
#ifndef HC_CPU_DNNL_H
#define HC_CPU_DNNL_H

#include <stdint.h>

typedef struct hc_cpu_dnnl hc_cpu_dnnl;

/* 1 when this build has oneDNN, else 0 (then create fails HC_ERR_UNSUPPORTED). */
int hc_cpu_dnnl_built(void);
/* A handle for n_slots concurrent callers (pool tasks 0..n_slots-1). */
int hc_cpu_dnnl_create(hc_cpu_dnnl **out, int n_slots);
void hc_cpu_dnnl_free(hc_cpu_dnnl *d);
/* out[r * ldo + j] = sum_i x[r * k + i] * w[j * k + i] for r in [0, m), j in [0, nb), f32
 * accumulation; x and w both f32 (bf16 = 0) or both bf16 (bf16 = 1, raw uint16_t bits).
 * Single-threaded; concurrent calls must use distinct slots. HC_ERR_* when oneDNN refuses the
 * shape or fails (the caller falls back to OpenBLAS). */
int hc_cpu_dnnl_gemm(hc_cpu_dnnl *d, int slot, int bf16, float *out, int64_t ldo, const void *x,
                     int64_t m, const void *w, int64_t nb, int64_t k);
/* 1 if oneDNN has a bf16 x bf16 -> f32 matmul on this CPU (AVX-512-BF16 / AMX; probed once at
 * create with a small primitive), else 0: then hc_cpu_dnnl_gemm(bf16 = 1) fails and the caller
 * keeps to f32 calls (e.g. AVX2-only CPUs, or valgrind's emulated CPU). */
int hc_cpu_dnnl_has_bf16(const hc_cpu_dnnl *d);
/* oneDNN's name for the ISA it dispatches to here ("avx512_core_amx", ...); "" without oneDNN. */
const char *hc_cpu_dnnl_isa_name(void);

#endif
