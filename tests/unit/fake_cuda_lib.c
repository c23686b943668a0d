/* fake_cuda_lib.c: a stand-in for libhc_cuda.so, built as a loadable module for
 * test_backend_cuda_load, which hands its path to hc_backend_create_ex as
 * hc_backend_params.cuda_lib. It exports the real entry point and reports what it was given: for
 * device 7 it returns a backend named "fake-cuda" (destroy is its only working op; the test calls
 * nothing else), for any other device HC_ERR_NODEVICE with "fake CUDA library: ABI <v>, device
 * <d>" in eb, so the test sees that the library path, the ABI version and the device index reached
 * it. No engine code is linked in: hc_backend and hc_errbuf are plain structs. */
#include <stdio.h>
#include <stdlib.h>

#include "backend/backend.h"

#define FAKE_DEVICE_OK 7

static void fake_destroy(hc_backend *be) { free(be); }

static const hc_backend_i fake_iface = {.name = "fake-cuda", .destroy = fake_destroy};

__attribute__((visibility("default"))) int hc_cuda_backend_create(hc_backend **out,
                                                                  int abi_version, int device,
                                                                  hc_errbuf *eb) {
    *out = NULL;
    if (abi_version == HC_BACKEND_ABI_VERSION && device == FAKE_DEVICE_OK) {
        hc_backend *be = calloc(1, sizeof *be);
        if (!be) return HC_ERR_NOMEM;
        be->iface = &fake_iface;
        *out = be;
        return HC_OK;
    }
    if (eb)
        snprintf(eb->msg, sizeof eb->msg, "fake CUDA library: ABI %d, device %d", abi_version,
                 device);
    return HC_ERR_NODEVICE;
}
