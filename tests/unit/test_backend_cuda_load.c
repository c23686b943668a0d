/* test_backend_cuda_load.c: the CUDA backend loads or fails cleanly.
 *
 *  - hc_backend_create(HC_BACKEND_CUDA) either succeeds (a GPU and libhc_cuda.so are present) or
 *    returns HC_ERR_NODEVICE with a non-empty message; it never crashes. Without a GPU (or in a
 *    build with HC_CUDA=OFF) the second is expected.
 *  - HC_BACKEND_AUTO gives the CUDA backend when CUDA works, else a CPU backend.
 *  - With a GPU: an alloc/upload/download round trip through the vtable, and create/free twice.
 *  - HC_EXPECT_CUDA=1 (set by tests/gpu/run_gpu_checks.sh) makes a CUDA failure a test failure.
 */
#include "backend.h"
#include "testutil.h"

#include <stdlib.h>
#include <string.h>

static void roundtrip(hc_backend *be) {
    enum { N = 1000 };
    float src[N], dst[N];
    for (int i = 0; i < N; i++) src[i] = (float)i * 0.5f - 3.0f;
    memset(dst, 0, sizeof dst);
    void *p = NULL;
    CHECK_OK(be->iface->alloc(be, &p, sizeof src));
    CHECK(p != NULL);
    if (!p) return;
    CHECK_OK(be->iface->upload(be, p, src, sizeof src));
    CHECK_OK(be->iface->synchronize(be));
    CHECK_OK(be->iface->download(be, dst, p, sizeof dst));
    CHECK(memcmp(src, dst, sizeof src) == 0);
    be->iface->free(be, p);
}

int main(int argc, char **argv) {
    (void)argc, (void)argv;
    const char *expect = getenv("HC_EXPECT_CUDA");
    const int expect_gpu = expect && *expect == '1';

    hc_backend *cuda = NULL;
    hc_errbuf eb;
    memset(&eb, 0, sizeof eb);
    int rc = hc_backend_create(&cuda, HC_BACKEND_CUDA, 2, &eb);
    const int have_gpu = rc == HC_OK;
    if (have_gpu) {
        printf("CUDA backend created: %s\n", cuda->iface->name);
        CHECK(cuda != NULL && cuda->iface != NULL);
        CHECK(strcmp(cuda->iface->name, "cuda") == 0);
        roundtrip(cuda);
        hc_backend_free(cuda);
        /* a second create after a free (the library stays loaded) */
        cuda = NULL;
        CHECK_OK(hc_backend_create(&cuda, HC_BACKEND_CUDA, 2, &eb));
        if (cuda) hc_backend_free(cuda);
    } else {
        printf("CUDA backend unavailable (%s): %s\n", hc_errname(rc), eb.msg);
        CHECKF(rc == HC_ERR_NODEVICE, "create(CUDA) returned %d (%s)", rc, hc_errname(rc));
        CHECK(cuda == NULL);
        CHECK(eb.msg[0] != 0);
        CHECKF(!expect_gpu, "HC_EXPECT_CUDA=1 but no CUDA backend: %s", eb.msg);
    }

    hc_backend *cpu = NULL;
    CHECK_OK(hc_backend_create(&cpu, HC_BACKEND_CPU, 2, NULL));
    hc_backend *any = NULL;
    memset(&eb, 0, sizeof eb);
    CHECK_OK(hc_backend_create(&any, HC_BACKEND_AUTO, 2, &eb));
    if (any && cpu) {
        CHECK(strcmp(any->iface->name, have_gpu ? "cuda" : cpu->iface->name) == 0);
        if (!have_gpu) CHECK(any->iface == cpu->iface);
        roundtrip(any);
    }
    if (any) hc_backend_free(any);
    if (cpu) hc_backend_free(cpu);
    return hc_test_finish("test_backend_cuda_load");
}
