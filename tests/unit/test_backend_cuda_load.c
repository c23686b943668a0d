/* test_backend_cuda_load.c: the CUDA backend loads or fails cleanly.
 *
 *  - hc_backend_create(HC_BACKEND_CUDA) either succeeds (a GPU and libhc_cuda.so are present) or
 *    returns HC_ERR_NODEVICE with a non-empty message; it never crashes. Without a GPU (or in a
 *    build with HC_CUDA=OFF) the second is expected.
 *  - HC_BACKEND_AUTO gives the CUDA backend when CUDA works, else a CPU backend.
 *  - With a GPU: an alloc/upload/download round trip through the vtable, and create/free twice.
 *  - HC_EXPECT_CUDA=1 (set by tests/gpu/run_gpu_checks.sh) makes a CUDA failure a test failure.
 *  - hc_backend_params are honoured and the library reads no environment: a cuda_lib that does
 *    not exist or lacks the entry point is HC_ERR_NODEVICE naming it (and AUTO falls back to the
 *    CPU, GPU or not); a stand-in library (fake_cuda_lib.c) receives the ABI version and
 *    cuda_device; $HC_CUDA_LIB/$HC_CUDA_DEVICE do not reach hc_backend_create; a negative device
 *    or an unknown kind is HC_ERR_INVAL; blas_single_thread 1 (default) sets OpenBLAS to one
 *    thread, 0 leaves the process's count alone.
 */
#include "backend/backend.h"
#include "testutil.h"

#include <cblas.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#ifndef HC_FAKE_CUDA_LIB
#define HC_FAKE_CUDA_LIB "libhc_fake_cuda.so"
#endif

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

/* The stand-in CUDA library: where the build put it, else next to this executable (a carried
 * bundle, tests/gpu/run_gpu_checks.sh). NULL if neither exists. */
static const char *fake_lib(void) {
    static char path[PATH_MAX + 32];
    if (access(HC_FAKE_CUDA_LIB, R_OK) == 0) return HC_FAKE_CUDA_LIB;
    ssize_t n = readlink("/proc/self/exe", path, PATH_MAX);
    if (n <= 0) return NULL;
    path[n] = 0;
    char *slash = strrchr(path, '/');
    if (!slash) return NULL;
    strcpy(slash + 1, "libhc_fake_cuda.so");
    return access(path, R_OK) == 0 ? path : NULL;
}

/* create_ex(kind, p) must fail with rc and a message containing `part`. */
static void expect_fail(hc_backend_kind kind, const hc_backend_params *p, int rc,
                        const char *part) {
    hc_backend *be = (hc_backend *)&be; /* must come back NULL */
    hc_errbuf eb;
    memset(&eb, 0, sizeof eb);
    int got = hc_backend_create_ex(&be, kind, p, &eb);
    CHECKF(got == rc && strstr(eb.msg, part) != NULL, "create_ex(kind %d): %d (%s) '%s', want %s "
           "with '%s'", (int)kind, got, hc_errname(got), eb.msg, hc_errname(rc), part);
    CHECK(be == NULL);
    if (got == HC_OK) hc_backend_free(be);
}

static void test_params(void) {
    hc_backend_params d = hc_backend_default_params();
    CHECK(d.n_threads == 0 && d.cuda_lib == NULL && d.cuda_device == 0 && d.blas_single_thread == 1);

    /* invalid parameters */
    hc_backend_params p = hc_backend_default_params();
    p.cuda_device = -1;
    expect_fail(HC_BACKEND_CUDA, &p, HC_ERR_INVAL, "device index -1");
    expect_fail(HC_BACKEND_CPU, &p, HC_ERR_INVAL, "device index -1");
    expect_fail((hc_backend_kind)42, NULL, HC_ERR_INVAL, "backend kind 42");

    /* an explicit cuda_lib is the only library tried: missing, or without the entry point */
    const char *missing = "/nonexistent-hc-test-dir/libhc_cuda_missing.so";
    p = hc_backend_default_params();
    p.cuda_lib = missing;
    expect_fail(HC_BACKEND_CUDA, &p, HC_ERR_NODEVICE, missing);
    p.cuda_lib = "libc.so.6";
    expect_fail(HC_BACKEND_CUDA, &p, HC_ERR_NODEVICE, "libc.so.6 lacks symbol "
                                                      HC_CUDA_ENTRY_SYMBOL);
    /* AUTO with a library that does not load is the CPU backend, with or without a GPU */
    p.cuda_lib = missing;
    p.n_threads = 3;
    hc_backend *be = NULL;
    hc_errbuf eb;
    memset(&eb, 0, sizeof eb);
    CHECK_OK(hc_backend_create_ex(&be, HC_BACKEND_AUTO, &p, &eb));
    if (be) {
        CHECKF(strcmp(be->iface->name, "cpu") == 0, "AUTO with a missing cuda_lib gave %s",
               be->iface->name);
        CHECK(be->n_threads == 3);
        hc_backend_free(be);
    }

    /* the stand-in library gets the ABI version and the device index */
    const char *fake = fake_lib();
    CHECKF(fake != NULL, "stand-in CUDA library %s not found", HC_FAKE_CUDA_LIB);
    if (fake) {
        p = hc_backend_default_params();
        p.cuda_lib = fake;
        p.cuda_device = 3;
        char want[64];
        snprintf(want, sizeof want, "fake CUDA library: ABI %d, device 3", HC_BACKEND_ABI_VERSION);
        expect_fail(HC_BACKEND_CUDA, &p, HC_ERR_NODEVICE, want);
        p.cuda_device = 7; /* the stand-in's "present" device */
        p.n_threads = 5;
        be = NULL;
        CHECK_OK(hc_backend_create_ex(&be, HC_BACKEND_CUDA, &p, &eb));
        if (be) {
            CHECK(strcmp(be->iface->name, "fake-cuda") == 0);
            CHECK(be->n_threads == 5);
            hc_backend_free(be);
        }
        /* the environment does not reach the library (the CLI maps it onto the params) */
        setenv("HC_CUDA_LIB", fake, 1);
        setenv("HC_CUDA_DEVICE", "7", 1);
        be = NULL;
        int rc = hc_backend_create(&be, HC_BACKEND_CUDA, 2, &eb);
        CHECKF(rc != HC_OK || strcmp(be->iface->name, "fake-cuda") != 0,
               "hc_backend_create read $HC_CUDA_LIB/$HC_CUDA_DEVICE");
        if (rc == HC_OK) hc_backend_free(be);
        unsetenv("HC_CUDA_LIB");
        unsetenv("HC_CUDA_DEVICE");
    }
}

/* OpenBLAS's process-wide thread count changes only when blas_single_thread asks for it. */
static void test_blas_threads(void) {
    openblas_set_num_threads(2);
    if (openblas_get_num_threads() != 2) {
        printf("note: OpenBLAS cannot run 2 threads here; blas_single_thread not checked\n");
        return;
    }
    hc_backend_params p = hc_backend_default_params();
    p.n_threads = 2;
    p.blas_single_thread = 0;
    hc_backend *be = NULL;
    CHECK_OK(hc_backend_create_ex(&be, HC_BACKEND_CPU, &p, NULL));
    CHECKF(openblas_get_num_threads() == 2, "blas_single_thread = 0 changed OpenBLAS to %d",
           openblas_get_num_threads());
    hc_backend_free(be);
    be = NULL;
    CHECK_OK(hc_backend_cpu_create_ex(&be, &p));
    CHECK(openblas_get_num_threads() == 2);
    hc_backend_free(be);
    /* the default (and the thin wrappers) set it to one thread */
    p.blas_single_thread = 1;
    be = NULL;
    CHECK_OK(hc_backend_create_ex(&be, HC_BACKEND_CPU, &p, NULL));
    CHECK(openblas_get_num_threads() == 1);
    hc_backend_free(be);
    openblas_set_num_threads(2);
    be = NULL;
    CHECK_OK(hc_backend_cpu_create(&be, 2));
    CHECK(openblas_get_num_threads() == 1);
    hc_backend_free(be);
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
    test_params();
    test_blas_threads();
    return hc_test_finish("test_backend_cuda_load");
}
