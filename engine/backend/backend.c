/* backend.c: backend selection (CPU, or the CUDA library loaded with dlopen) and tensor helpers.
 *
 * The CUDA backend lives in libhc_cuda.so so that the CPU binaries never link libcudart/libcublas:
 * they start on machines without the CUDA runtime, and pick the GPU up when both the library and a
 * device are there. Which library: hc_backend_params.cuda_lib when set (only that one; the hllm
 * CLI fills it from $HC_CUDA_LIB), else the first that exists of the directory of the running
 * executable and its ../kernels and ../lib/hllm-creator, then the install libdir, else the name
 * through the dynamic loader's default path. Nothing here reads the environment.
 */
#include "backend/backend.h"

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

/* Opens the CUDA library (see the top of the file); *tried names it (`path`, a static buffer,
 * or `lib`) for messages. */
static void *open_cuda_lib(const char *lib, char *path, size_t path_len, const char **tried,
                           char *why, size_t why_len) {
    why[0] = 0;
    if (lib && *lib) {
        *tried = lib;
        return try_dlopen(lib, why, why_len);
    }
    char exe[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n > 0) {
        exe[n] = 0;
        char *slash = strrchr(exe, '/');
        if (slash) {
            *slash = 0;
            static const char *rel[] = {"", "/../kernels", "/../lib/hllm-creator"};
            for (size_t i = 0; i < sizeof rel / sizeof rel[0]; i++) {
                snprintf(path, path_len, "%s%s/%s", exe, rel[i], HC_CUDA_LIB_NAME);
                if (access(path, F_OK) == 0) {
                    *tried = path;
                    return try_dlopen(path, why, why_len);
                }
            }
        }
    }
    snprintf(path, path_len, "%s/%s", HC_INSTALL_LIBDIR, HC_CUDA_LIB_NAME);
    *tried = path;
    if (access(path, F_OK) == 0) return try_dlopen(path, why, why_len);
    *tried = HC_CUDA_LIB_NAME;
    return try_dlopen(HC_CUDA_LIB_NAME, why, why_len);
}

static int cuda_create(hc_backend **out, const hc_backend_params *p, hc_errbuf *eb) {
    char why[400], path[PATH_MAX + 64];
    const char *tried = HC_CUDA_LIB_NAME;
    void *h = open_cuda_lib(p->cuda_lib, path, sizeof path, &tried, why, sizeof why);
    if (!h)
        return hc_seterr(eb, HC_ERR_NODEVICE, "CUDA backend library %s not loadable (%s)", tried,
                         why);
    hc_cuda_backend_create_fn fn;
    *(void **)&fn = dlsym(h, HC_CUDA_ENTRY_SYMBOL);
    if (!fn) {
        dlclose(h);
        return hc_seterr(eb, HC_ERR_NODEVICE, "CUDA backend library %s lacks symbol %s", tried,
                         HC_CUDA_ENTRY_SYMBOL);
    }
    /* The library stays loaded for the life of the process, also when creation failed: its code
     * backs the vtable, and the CUDA runtime it pulled in keeps state (reachable only from its
     * own globals) that unloading would turn into leaks. */
    return fn(out, HC_BACKEND_ABI_VERSION, p->cuda_device, eb);
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

int hc_backend_create_ex(hc_backend **out, hc_backend_kind kind, const hc_backend_params *p,
                         hc_errbuf *eb) {
    *out = NULL;
    hc_backend_params defp = hc_backend_default_params();
    if (!p) p = &defp;
    if (kind != HC_BACKEND_AUTO && kind != HC_BACKEND_CPU && kind != HC_BACKEND_CUDA)
        return hc_seterr(eb, HC_ERR_INVAL, "unknown backend kind %d", (int)kind);
    if (p->cuda_device < 0)
        return hc_seterr(eb, HC_ERR_INVAL, "CUDA device index %d is negative", p->cuda_device);
    if (p->compute < 0 || p->compute >= HC_COMPUTE_COUNT)
        return hc_seterr(eb, HC_ERR_INVAL, "unknown compute mode %d", p->compute);
    if (p->cpu_gemm < 0 || p->cpu_gemm >= HC_CPU_GEMM_COUNT)
        return hc_seterr(eb, HC_ERR_INVAL, "unknown CPU GEMM library %d", p->cpu_gemm);
    /* bf16 compute is a CPU-backend mode: auto then means the CPU, cuda is refused */
    if (p->compute != HC_COMPUTE_F32 && kind == HC_BACKEND_CUDA)
        return hc_seterr(eb, HC_ERR_UNSUPPORTED,
                         "bf16 compute is implemented by the CPU backend only (use --backend cpu)");
    if (p->compute != HC_COMPUTE_F32) kind = HC_BACKEND_CPU;
    if (kind == HC_BACKEND_CPU) {
        int rc = hc_backend_cpu_create_ex(out, p);
        if (rc == HC_ERR_UNSUPPORTED && p->cpu_gemm == HC_CPU_GEMM_DNNL && !hc_cpu_gemm_built(p->cpu_gemm))
            return hc_seterr(eb, rc, "this build has no oneDNN (libdnnl) for the CPU GEMM");
        if (rc == HC_ERR_UNSUPPORTED)
            return hc_seterr(eb, rc, "CPU backend: unsupported CPU kernel level %d", p->cpu_isa);
        return rc;
    }
    if (kind == HC_BACKEND_AUTO && !nvidia_device_present()) return hc_backend_cpu_create_ex(out, p);
    int rc = cuda_create(out, p, eb);
    if (rc == HC_OK) {
        (*out)->n_threads = p->n_threads;
        return HC_OK;
    }
    if (kind == HC_BACKEND_CUDA) return rc;
    return hc_backend_cpu_create_ex(out, p); /* AUTO: fall back */
}

int hc_backend_create(hc_backend **out, hc_backend_kind kind, int n_threads, hc_errbuf *eb) {
    hc_backend_params p = hc_backend_default_params();
    p.n_threads = n_threads;
    return hc_backend_create_ex(out, kind, &p, eb);
}

void hc_backend_free(hc_backend *be) {
    if (be) be->iface->destroy(be);
}

int hc_tensor_alloc(hc_tensor *t, hc_backend *be, hc_dtype dtype, int n_dims, const int64_t *ne) {
    memset(t, 0, sizeof *t);
    if (n_dims < 1 || n_dims > HC_MAX_DIMS || !hc_dtype_is_valid(dtype)) return HC_ERR_INVAL;
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
