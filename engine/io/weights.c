/* weights.c: see weights.h. */
#include "io/weights.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Elements converted per upload: 4 MiB of f32 scratch at most, whatever the tensor's size. */
#define HC_WEIGHTS_CHUNK ((size_t)1 << 20)

static size_t src_elems(const hc_st_tensor *src) {
    size_t e = hc_dtype_size(src->dtype);
    return e ? src->nbytes / e : 0;
}

#define HC_WEIGHT_DTYPES "HC_DTYPE_AS_STORED, HC_DTYPE_F32, HC_DTYPE_BF16 or HC_DTYPE_F16"

int hc_weight_dtype_check(hc_dtype want, hc_errbuf *eb) {
    if (want == HC_DTYPE_AS_STORED || hc_dtype_is_float(want)) return HC_OK;
    if (hc_dtype_is_valid(want))
        return hc_seterr(eb, HC_ERR_UNSUPPORTED,
                         "wanted weight dtype %s is not a float dtype (expected " HC_WEIGHT_DTYPES
                         ")", hc_dtype_name(want));
    return hc_seterr(eb, HC_ERR_INVAL,
                     "invalid wanted weight dtype %d (expected " HC_WEIGHT_DTYPES ")", (int)want);
}

/* Resolves and checks the target dtype and the element count. */
static int check(const hc_st_tensor *src, hc_dtype *want, size_t n, hc_errbuf *eb) {
    int rc = hc_weight_dtype_check(*want, eb);
    if (rc) {
        char msg[sizeof eb->msg];
        snprintf(msg, sizeof msg, "%s", eb ? eb->msg : "");
        return hc_seterr(eb, rc, "tensor '%s': %s", src->name, msg);
    }
    if (*want == HC_DTYPE_AS_STORED) *want = src->dtype;
    if (!hc_dtype_is_float(src->dtype))
        return hc_seterr(eb, HC_ERR_UNSUPPORTED, "tensor '%s' has dtype %s, not a float type",
                         src->name, hc_dtype_name(src->dtype));
    size_t have = src_elems(src);
    if (have != n)
        return hc_seterr(eb, HC_ERR_MISMATCH, "tensor '%s' has %zu elements, expected %zu",
                         src->name, have, n);
    return HC_OK;
}

int hc_tensor_read_converted(void *dst, hc_dtype want, size_t n, const hc_st_tensor *src,
                             hc_errbuf *eb) {
    int rc = check(src, &want, n, eb);
    if (rc) return rc;
    return hc_convert(dst, want, src->data, src->dtype, n);
}

int hc_tensor_load_converted(hc_tensor *dst, hc_backend *be, const hc_st_tensor *src,
                             hc_dtype want, int n_dims, const int64_t *shape, hc_errbuf *eb) {
    memset(dst, 0, sizeof *dst);
    int64_t n64 = 1;
    for (int i = 0; i < n_dims; i++) n64 *= shape[i];
    size_t n = (size_t)n64;
    int rc = check(src, &want, n, eb);
    if (rc) return rc;
    if ((rc = hc_tensor_alloc(dst, be, want, n_dims, shape))) {
        hc_tensor_release(dst);
        return hc_seterr(eb, rc, "allocating tensor '%s' (%zu bytes as %s)", src->name,
                         n * hc_dtype_size(want), hc_dtype_name(want));
    }
    const size_t dsz = hc_dtype_size(want);
    if (want == src->dtype) {
        /* as stored: straight from the mapping (upload takes any host alignment) */
        rc = be->iface->upload(be, dst->data, src->data, src->nbytes);
    } else {
        size_t chunk = n < HC_WEIGHTS_CHUNK ? n : HC_WEIGHTS_CHUNK;
        unsigned char *tmp = malloc((chunk ? chunk : 1) * dsz);
        if (!tmp) {
            hc_tensor_release(dst);
            return hc_seterr(eb, HC_ERR_NOMEM, "converting tensor '%s': out of memory",
                             src->name);
        }
        const size_t ssz = hc_dtype_size(src->dtype);
        for (size_t i = 0; i < n && rc == HC_OK; i += chunk) {
            size_t m = n - i < chunk ? n - i : chunk;
            rc = hc_convert(tmp, want, (const unsigned char *)src->data + i * ssz, src->dtype, m);
            if (rc == HC_OK)
                rc = be->iface->upload(be, (unsigned char *)dst->data + i * dsz, tmp, m * dsz);
        }
        free(tmp);
    }
    if (rc) {
        hc_tensor_release(dst);
        return hc_seterr(eb, rc, "uploading tensor '%s' to the %s backend: %s", src->name,
                         be->iface->name, hc_strerror(rc));
    }
    return HC_OK;
}
