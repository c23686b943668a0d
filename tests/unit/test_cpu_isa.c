/* test_cpu_isa.c: run-time ISA selection of the CPU backend (cpu_isa.h): names round-trip,
 * detection picks a supported level, an explicit level is honoured, an unsupported or invalid
 * request fails with a clear code; each level maps to its small-M kernel. (test_backend_ops runs
 * every op on every supported level.) */
#include "backend/backend.h"
#include "backend/cpu_isa.h"
#include "testutil.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

int main(int argc, char **argv) {
    (void)argc, (void)argv;
    for (int i = 0; i < HC_CPU_ISA_COUNT; i++) {
        hc_cpu_isa got = HC_CPU_ISA_COUNT;
        CHECK_OK(hc_cpu_isa_parse(hc_cpu_isa_name((hc_cpu_isa)i), &got));
        CHECK(got == (hc_cpu_isa)i);
    }
    hc_cpu_isa dummy;
    CHECK(hc_cpu_isa_parse("avx9000", &dummy) == HC_ERR_INVAL);
    CHECK(hc_cpu_isa_parse("", &dummy) == HC_ERR_INVAL);
    CHECK(hc_cpu_isa_parse(NULL, &dummy) == HC_ERR_INVAL);
    CHECK(!strcmp(hc_cpu_isa_name(HC_CPU_ISA_COUNT), "?"));

    hc_cpu_isa best = hc_cpu_isa_detect();
    CHECK(best != HC_CPU_ISA_AUTO && hc_cpu_isa_supported(best));
    CHECK(hc_cpu_isa_supported(HC_CPU_ISA_PORTABLE));
    printf("test_cpu_isa: detected %s\n", hc_cpu_isa_name(best));
    /* levels are cumulative: a supported level implies every lower one */
    for (int i = HC_CPU_ISA_PORTABLE; i <= (int)best; i++) CHECK(hc_cpu_isa_supported((hc_cpu_isa)i));

    hc_backend *be = NULL;
    CHECK_OK(hc_backend_cpu_create(&be, 1));
    CHECK(hc_backend_cpu_isa(be) == (int)best); /* AUTO -> best */
    hc_backend_free(be);
    CHECK(hc_backend_cpu_isa(NULL) == -1);

    hc_backend_params p = hc_backend_default_params();
    p.cpu_isa = HC_CPU_ISA_COUNT;
    be = (hc_backend *)&p; /* create must set *out = NULL on failure */
    CHECK(hc_backend_cpu_create_ex(&be, &p) == HC_ERR_INVAL && be == NULL);
    p.cpu_isa = -1;
    CHECK(hc_backend_cpu_create_ex(&be, &p) == HC_ERR_INVAL && be == NULL);
    for (int i = HC_CPU_ISA_PORTABLE; i < HC_CPU_ISA_COUNT; i++) {
        p.cpu_isa = i;
        int rc = hc_backend_cpu_create_ex(&be, &p);
        if (hc_cpu_isa_supported((hc_cpu_isa)i)) {
            CHECK_OK(rc);
            CHECK(hc_backend_cpu_isa(be) == i);
            hc_backend_free(be);
        } else {
            CHECK(rc == HC_ERR_UNSUPPORTED && be == NULL);
        }
    }
    /* each level's small-M kernel (cpu_isa.h); AUTO is the detected level's */
    CHECK(hc_cpu_gemm_for(HC_CPU_ISA_PORTABLE) == hc_cpu_gemm_portable);
    CHECK(hc_cpu_gemm_for(HC_CPU_ISA_AVX2) == hc_cpu_gemm_avx2);
    CHECK(hc_cpu_gemm_for(HC_CPU_ISA_AVX512F) == hc_cpu_gemm_avx512);
    CHECK(hc_cpu_gemm_for(HC_CPU_ISA_AVX512BF16) == hc_cpu_gemm_avx512);
    CHECK(hc_cpu_gemm_for(HC_CPU_ISA_AUTO) == hc_cpu_gemm_for(best));
    CHECK(hc_cpu_gemm_scratch_floats(199) >= 4 * 199 && hc_cpu_gemm_scratch_floats(0) == 0);
    printf("test_cpu_isa: ok\n");
    return 0;
}
