/* cuda_backend.cu: the CUDA backend's vtable, memory, metadata staging, create and destroy.
 *
 * Contract: engine/backend/backend.h. The only exported symbol is hc_cuda_backend_create (the engine
 * resolves it with dlsym). Without a driver or a device, create returns HC_ERR_NODEVICE with a
 * message and frees everything it made; it never aborts.
 *
 * Memory: alloc/free are cudaMalloc/cudaFree (cudaFree synchronizes the device, so freeing a
 * buffer that queued work still reads is safe). upload and download are stream-ordered copies that
 * return only when the copy is complete, so the caller may reuse or free its host buffer at once.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cuda_common.cuh"

/* ---- staging ------------------------------------------------------------------------------ */

static size_t align_up(size_t n, size_t a) { return (n + a - 1) / a * a; }

/* Grows the slots to hold `need` bytes. Synchronizes the stream first: queued kernels may still
 * read the old device buffer. */
static int stage_grow(hc_cuda_ctx *c, size_t need) {
    size_t cap = c->stage_slot_cap ? c->stage_slot_cap : 64 * 1024;
    while (cap < need) cap *= 2;
    HC_CU_CHECK(c, cudaStreamSynchronize(c->stream));
    if (c->stage_host) cudaFreeHost(c->stage_host);
    if (c->stage_dev) cudaFree(c->stage_dev);
    c->stage_host = NULL;
    c->stage_dev = NULL;
    c->stage_slot_cap = 0;
    HC_CU_CHECK(c, cudaMallocHost((void **)&c->stage_host, cap * HC_CUDA_STAGE_SLOTS));
    HC_CU_CHECK(c, cudaMalloc((void **)&c->stage_dev, cap));
    c->stage_slot_cap = cap;
    return HC_OK;
}

int hc_cuda_stage(hc_cuda_ctx *c, hc_stage_item *items, int n_items) {
    size_t total = 0;
    for (int i = 0; i < n_items; i++) total += align_up(items[i].nbytes ? items[i].nbytes : 1, 256);
    if (total > c->stage_slot_cap) {
        int rc = stage_grow(c, total);
        if (rc != HC_OK) return rc;
    }
    int slot = c->stage_next;
    /* The copy that last read this host slot must be done before we overwrite it. Four slots let
     * the host run up to three staged ops ahead of the device. */
    HC_CU_CHECK(c, cudaEventSynchronize(c->slot_done[slot]));
    unsigned char *host = c->stage_host + (size_t)slot * c->stage_slot_cap;
    size_t off = 0;
    for (int i = 0; i < n_items; i++) {
        if (items[i].nbytes) memcpy(host + off, items[i].src, items[i].nbytes);
        items[i].dev = c->stage_dev + off;
        off += align_up(items[i].nbytes ? items[i].nbytes : 1, 256);
    }
    /* The device buffer is shared by all slots: this copy is ordered after every kernel already
     * enqueued (which may read the previous contents), and before the kernel about to be. */
    HC_CU_CHECK(c, cudaMemcpyAsync(c->stage_dev, host, off, cudaMemcpyHostToDevice, c->stream));
    HC_CU_CHECK(c, cudaEventRecord(c->slot_done[slot], c->stream));
    c->stage_next = (slot + 1) % HC_CUDA_STAGE_SLOTS;
    return HC_OK;
}

/* ---- memory ------------------------------------------------------------------------------- */

static int cu_alloc(hc_backend *be, void **out, size_t nbytes) {
    hc_cuda_ctx *c = hc_cuda_ctx_of(be);
    *out = NULL;
    cudaError_t e = cudaMalloc(out, nbytes ? nbytes : 1);
    if (e != cudaSuccess) {
        *out = NULL;
        cudaGetLastError(); /* clear the sticky-free error state */
        return hc_seterr(&c->err, HC_ERR_NOMEM, "%s:%d: cudaMalloc(%zu): %s", __FILE__, __LINE__,
                         nbytes, cudaGetErrorString(e));
    }
    return HC_OK;
}

/* Waits for queued work first: the engine may free a buffer right after enqueuing its last use. */
static void cu_free(hc_backend *be, void *p) {
    if (!p) return;
    cudaStreamSynchronize(hc_cuda_ctx_of(be)->stream);
    cudaFree(p);
}

static int cu_upload(hc_backend *be, void *dst, const void *src_host, size_t nbytes) {
    hc_cuda_ctx *c = hc_cuda_ctx_of(be);
    if (!nbytes) return HC_OK;
    HC_CU_CHECK(c, cudaMemcpyAsync(dst, src_host, nbytes, cudaMemcpyHostToDevice, c->stream));
    HC_CU_CHECK(c, cudaStreamSynchronize(c->stream));
    return HC_OK;
}

static int cu_download(hc_backend *be, void *dst_host, const void *src, size_t nbytes) {
    hc_cuda_ctx *c = hc_cuda_ctx_of(be);
    if (!nbytes) return HC_OK;
    HC_CU_CHECK(c, cudaMemcpyAsync(dst_host, src, nbytes, cudaMemcpyDeviceToHost, c->stream));
    HC_CU_CHECK(c, cudaStreamSynchronize(c->stream));
    return HC_OK;
}

static int cu_synchronize(hc_backend *be) {
    hc_cuda_ctx *c = hc_cuda_ctx_of(be);
    HC_CU_CHECK(c, cudaStreamSynchronize(c->stream));
    return HC_OK;
}

/* ---- create / destroy --------------------------------------------------------------------- */

static void ctx_free(hc_cuda_ctx *c) {
    if (!c) return;
    if (c->stream) cudaStreamSynchronize(c->stream);
    if (c->cublas) cublasDestroy(c->cublas);
    for (int i = 0; i < HC_CUDA_STAGE_SLOTS; i++)
        if (c->slot_done[i]) cudaEventDestroy(c->slot_done[i]);
    if (c->stage_host) cudaFreeHost(c->stage_host);
    if (c->stage_dev) cudaFree(c->stage_dev);
    if (c->wscratch) cudaFree(c->wscratch);
    if (c->stream) cudaStreamDestroy(c->stream);
    free(c->rope_inv_freq);
    free(c);
}

static void cu_destroy(hc_backend *be) {
    if (!be) return;
    ctx_free(hc_cuda_ctx_of(be));
    free(be);
}

static const hc_backend_i cuda_iface = {
    "cuda",
    cu_destroy,
    cu_alloc,
    cu_free,
    cu_upload,
    cu_download,
    cu_synchronize,
    hc_cuda_matmul,
    hc_cuda_rmsnorm,
    hc_cuda_rope,
    hc_cuda_attention,
    hc_cuda_kv_store,
    hc_cuda_swiglu,
    hc_cuda_add,
    hc_cuda_embed,
    hc_cuda_get_rows,
    hc_cuda_set_rows,
};

#define CREATE_CHECK(call, code)                                                                   \
    do {                                                                                           \
        cudaError_t e_ = (call);                                                                   \
        if (e_ != cudaSuccess) {                                                                   \
            rc = hc_seterr(eb, (code), "%s:%d: %s: %s", __FILE__, __LINE__, #call,                 \
                           cudaGetErrorString(e_));                                                \
            goto fail;                                                                             \
        }                                                                                          \
    } while (0)

extern "C" __attribute__((visibility("default"))) int
hc_cuda_backend_create(hc_backend **out, int abi_version, int device, hc_errbuf *eb) {
    int rc = HC_OK;
    hc_cuda_ctx *c = NULL;
    hc_backend *be = NULL;
    int n_dev = 0;
    cudaError_t e;
    cublasStatus_t s;

    if (!out) return hc_seterr(eb, HC_ERR_INVAL, "hc_cuda_backend_create: out is NULL");
    *out = NULL;
    if (abi_version != HC_BACKEND_ABI_VERSION)
        return hc_seterr(eb, HC_ERR_UNSUPPORTED,
                         "libhc_cuda.so was built for backend ABI %d, the engine uses %d",
                         HC_BACKEND_ABI_VERSION, abi_version);

    e = cudaGetDeviceCount(&n_dev);
    if (e != cudaSuccess || n_dev <= 0) {
        cudaGetLastError();
        return hc_seterr(eb, HC_ERR_NODEVICE, "no usable CUDA device (cudaGetDeviceCount: %s)",
                         e != cudaSuccess ? cudaGetErrorString(e) : "0 devices");
    }
    if (device < 0 || device >= n_dev)
        return hc_seterr(eb, HC_ERR_NODEVICE, "CUDA device %d requested, %d present", device,
                         n_dev);

    c = (hc_cuda_ctx *)calloc(1, sizeof *c);
    be = (hc_backend *)calloc(1, sizeof *be);
    if (!c || !be) {
        rc = hc_seterr(eb, HC_ERR_NOMEM, "hc_cuda_backend_create: out of host memory");
        goto fail;
    }
    c->device = device;
    CREATE_CHECK(cudaSetDevice(device), HC_ERR_NODEVICE);
    CREATE_CHECK(cudaStreamCreateWithFlags(&c->stream, cudaStreamNonBlocking), HC_ERR_BACKEND);
    for (int i = 0; i < HC_CUDA_STAGE_SLOTS; i++)
        CREATE_CHECK(cudaEventCreateWithFlags(&c->slot_done[i], cudaEventDisableTiming),
                     HC_ERR_BACKEND);
    s = cublasCreate(&c->cublas);
    if (s != CUBLAS_STATUS_SUCCESS) {
        c->cublas = NULL;
        rc = hc_seterr(eb, HC_ERR_BACKEND, "cublasCreate: %s", cublasGetStatusString(s));
        goto fail;
    }
    /* f32 parity with the CPU reference: no TF32 (CUBLAS_DEFAULT_MATH never picks it unless the
     * handle asks for it). */
    s = cublasSetMathMode(c->cublas, CUBLAS_DEFAULT_MATH);
    if (s == CUBLAS_STATUS_SUCCESS) s = cublasSetStream(c->cublas, c->stream);
    if (s != CUBLAS_STATUS_SUCCESS) {
        rc = hc_seterr(eb, HC_ERR_BACKEND, "cublas setup: %s", cublasGetStatusString(s));
        goto fail;
    }
    rc = stage_grow(c, 64 * 1024);
    if (rc != HC_OK) {
        hc_seterr(eb, rc, "%s", c->err.msg);
        goto fail;
    }

    be->iface = &cuda_iface;
    be->ctx = c;
    be->n_threads = 1;
    *out = be;
    return HC_OK;

fail:
    ctx_free(c);
    free(be);
    return rc;
}
