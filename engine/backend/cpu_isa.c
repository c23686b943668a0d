/* cpu_isa.c: run-time ISA detection (GCC/Clang __builtin_cpu_supports, which reads cpuid and the
 * OS's XSAVE state, so AVX-512 counts only when the kernel saves the zmm registers). */
#include "backend/cpu_isa.h"

#include <string.h>

static const char *const k_names[HC_CPU_ISA_COUNT] = {"auto", "portable", "avx2", "avx512f",
                                                      "avx512bf16"};

int hc_cpu_isa_supported(hc_cpu_isa isa) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_cpu_init();
    switch (isa) {
    case HC_CPU_ISA_AUTO:
    case HC_CPU_ISA_PORTABLE: return 1;
    case HC_CPU_ISA_AVX2:
        return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") ? 1 : 0;
    case HC_CPU_ISA_AVX512F:
        return hc_cpu_isa_supported(HC_CPU_ISA_AVX2) && __builtin_cpu_supports("avx512f") ? 1 : 0;
    case HC_CPU_ISA_AVX512BF16:
        return hc_cpu_isa_supported(HC_CPU_ISA_AVX512F) && __builtin_cpu_supports("avx512bf16")
                   ? 1
                   : 0;
    default: return 0;
    }
#else
    return isa == HC_CPU_ISA_AUTO || isa == HC_CPU_ISA_PORTABLE;
#endif
}

hc_cpu_isa hc_cpu_isa_detect(void) {
    for (int i = HC_CPU_ISA_COUNT - 1; i > HC_CPU_ISA_PORTABLE; i--)
        if (hc_cpu_isa_supported((hc_cpu_isa)i)) return (hc_cpu_isa)i;
    return HC_CPU_ISA_PORTABLE;
}

const char *hc_cpu_isa_name(hc_cpu_isa isa) {
    return (int)isa >= 0 && isa < HC_CPU_ISA_COUNT ? k_names[isa] : "?";
}

int hc_cpu_isa_parse(const char *name, hc_cpu_isa *out) {
    if (!name) return HC_ERR_INVAL;
    for (int i = 0; i < HC_CPU_ISA_COUNT; i++)
        if (!strcmp(name, k_names[i])) {
            *out = (hc_cpu_isa)i;
            return HC_OK;
        }
    return HC_ERR_INVAL;
}

size_t hc_cpu_gemm_scratch_floats(int64_t k) {
    /* the widest weight tile any level widens into scratch: 4 rows of k */
    return 4 * (size_t)(k > 0 ? k : 0);
}

hc_cpu_gemm_fn hc_cpu_gemm_for(hc_cpu_isa isa) {
    if (isa == HC_CPU_ISA_AUTO) isa = hc_cpu_isa_detect();
#if defined(__x86_64__) || defined(__i386__)
    if (isa >= HC_CPU_ISA_AVX512F) return hc_cpu_gemm_avx512;
    if (isa == HC_CPU_ISA_AVX2) return hc_cpu_gemm_avx2;
#endif
    return hc_cpu_gemm_portable;
}
