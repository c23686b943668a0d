/* backend.c: backend selection (CPU, or the CUDA library loaded with dlopen) and tensor helpers.
 *
 * The CUDA backend lives in libhc_cuda.so so that the CPU binaries never link libcudart/libcublas:
 * they start on machines without the CUDA runtime, and pick the GPU up when both the library and a
 * device are there. Search order for the library: $HC_CUDA_LIB (a full path), the directory of the
 * running executable and its ../kernels and ../lib/hllm-creator, then the install libdir, then the
 * dynamic loader's default path.
 */
#include "backend.h"

#include <dlfcn.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#ifndef HC_CUDA_LIB_NAME
#define HC_CUDA_LIB_NAME "libhc_cuda.so"
#endif
#ifndef HC_INSTALL_LIBDIR
#define HC_INSTALL_LIBDIR "/usr/local/lib/hllm-creator"
#endif

static void *try_dlopen(const char *path, char *why, size_t why_len) {
    void *h = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (!h) {
        const char *e = dlerror();
        size_t used = strlen(why);
        const char *msg = e ? e : path;
        if (used && used + 2 < why_len) {
            why[used++] = ';';
            why[used++] = ' ';
        }
        while (*msg && used + 1 < why_len) why[used++] = *msg++;
        why[used] = 0;
    }
    return h;
}

static void *open_cuda_lib(char *why, size_t why_len) {
    why[0] = 0;
    const char *env = getenv("HC_CUDA_LIB");
    if (env && *env) return try_dlopen(env, why, why_len);
    char exe[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n > 0) {
        exe[n] = 0;
        char *slash = strrchr(exe, '/');
        if (slash) {
            *slash = 0;
            static const char *rel[] = {"", "/../kernels", "/../lib/hllm-creator"};
            for (size_t i = 0; i < sizeof rel / sizeof rel[0]; i++) {
                char path[PATH_MAX + 64];
                snprintf(path, sizeof path, "%s%s/%s", exe, rel[i], HC_CUDA_LIB_NAME);
                if (access(path, F_OK) == 0) return try_dlopen(path, why, why_len);
            }
        }
    }
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/%s", HC_INSTALL_LIBDIR, HC_CUDA_LIB_NAME);
    if (access(path, F_OK) == 0) return try_dlopen(path, why, why_len);
    return try_dlopen(HC_CUDA_LIB_NAME, why, why_len);
}

static int cuda_create(hc_backend **out, hc_errbuf *eb) {
    char why[400];
    void *h = open_cuda_lib(why, sizeof why);
    if (!h)
        return hc_seterr(eb, HC_ERR_NODEVICE, "CUDA backend library not loadable (%s)", why);
    hc_cuda_backend_create_fn fn;
    *(void **)&fn = dlsym(h, HC_CUDA_ENTRY_SYMBOL);
    if (!fn) {
        dlclose(h);
        return hc_seterr(eb, HC_ERR_NODEVICE, "%s lacks symbol %s", HC_CUDA_LIB_NAME,
                         HC_CUDA_ENTRY_SYMBOL);
    }
    int device = 0;
    const char *dev = getenv("HC_CUDA_DEVICE");
    if (dev && *dev) device = atoi(dev);
    /* The library stays loaded for the life of the process, also when creation failed: its code
     * backs the vtable, and the CUDA runtime it pulled in keeps state (reachable only from its
     * own globals) that unloading would turn into leaks. */
    return fn(out, HC_BACKEND_ABI_VERSION, device, eb);
}

/* A cheap look for an NVIDIA device node before anything loads the CUDA runtime: dlopen'ing
 * libhc_cuda.so pulls in libcudart and libcublas (about 200 MB of mappings and 0.15 s), which a
 * CPU-only machine should never pay for under --backend auto. The driver creates /dev/nvidiactl
 * and /dev/nvidia<N>; WSL exposes GPUs through /dev/dxg. */
static int nvidia_device_present(void) {
    static const char *nodes[] = {"/dev/nvidiactl", "/dev/nvidia0", "/dev/dxg"};
    for (size_t i = 0; i < sizeof nodes / sizeof nodes[0]; i++)
        if (access(nodes[i], F_OK) == 0) return 1;
    return 0;
}

int hc_backend_create(hc_backend **out, hc_backend_kind kind, int n_threads, hc_errbuf *eb) {
    *out = NULL;
    if (kind == HC_BACKEND_CPU) return hc_backend_cpu_create(out, n_threads);
    if (kind == HC_BACKEND_AUTO && !nvidia_device_present())
        return hc_backend_cpu_create(out, n_threads);
    int rc = cuda_create(out, eb);
    if (rc == HC_OK) {
        (*out)->n_threads = n_threads;
        return HC_OK;
    }
    if (kind == HC_BACKEND_CUDA) return rc;
    return hc_backend_cpu_create(out, n_threads); /* AUTO: fall back */
}

void hc_backend_free(hc_backend *be) {
    if (be) be->iface->destroy(be);
}

int hc_tensor_alloc(hc_tensor *t, hc_backend *be, hc_dtype dtype, int n_dims, const int64_t *ne) {
    memset(t, 0, sizeof *t);
    if (n_dims < 1 || n_dims > HC_MAX_DIMS) return HC_ERR_INVAL;
    t->dtype = dtype;
    t->n_dims = n_dims;
    for (int i = 0; i < HC_MAX_DIMS; i++) t->ne[i] = i < n_dims ? ne[i] : 1;
    for (int i = 0; i < n_dims; i++)
        if (ne[i] < 0) return HC_ERR_INVAL;
    t->backend = be;
    size_t nb = hc_tensor_nbytes(t);
    int rc = be->iface->alloc(be, &t->data, nb ? nb : 1);
    if (rc != HC_OK) t->data = NULL;
    return rc;
}

void hc_tensor_release(hc_tensor *t) {
    if (t->data && t->backend) t->backend->iface->free(t->backend, t->data);
    t->data = NULL;
}

hc_tensor hc_tensor_rows_view(const hc_tensor *t, int64_t row0, int64_t n_rows) {
    hc_tensor v = *t;
    int64_t cols = hc_tensor_cols(t);
    HC_ASSERT(row0 >= 0 && row0 + n_rows <= hc_tensor_rows(t));
    v.n_dims = 2;
    v.ne[0] = n_rows;
    v.ne[1] = cols;
    v.ne[2] = v.ne[3] = 1;
    v.data = (char *)t->data + (size_t)(row0 * cols) * hc_dtype_size(t->dtype);
    return v;
}

hc_tensor hc_tensor_reshape(const hc_tensor *t, int n_dims, const int64_t *ne) {
    hc_tensor v = *t;
    v.n_dims = n_dims;
    for (int i = 0; i < HC_MAX_DIMS; i++) v.ne[i] = i < n_dims ? ne[i] : 1;
    HC_ASSERT(hc_tensor_nelem(&v) == hc_tensor_nelem(t));
    return v;
}
