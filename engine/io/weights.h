/* weights.h: the one path by which a stored checkpoint tensor becomes engine memory.
 *
 * Every stored dtype (F32, BF16, F16) loads into every in-memory float dtype: equal dtypes are
 * copied as stored, widening is exact, narrowing rounds to nearest even as torch's `.to(dtype)`
 * (f16 overflow becomes +-inf). Source data may sit at any alignment (it points into an mmap'ed
 * safetensors file whose header length may be odd) and is only read through hc_convert.
 *
 * Thread-safety: as the backend's upload; the source checkpoint is only read.
 */
#ifndef HC_WEIGHTS_H
#define HC_WEIGHTS_H

#include "backend/backend.h"
#include "io/safetensors.h"

/* Checks a wanted in-memory weight dtype: HC_DTYPE_AS_STORED (keep the stored dtype),
 * HC_DTYPE_F32, HC_DTYPE_BF16 or HC_DTYPE_F16 are HC_OK. HC_DTYPE_I32 (a tensor dtype, but not a
 * float one) is HC_ERR_UNSUPPORTED; anything else (HC_DTYPE_COUNT, an out-of-range value) is
 * HC_ERR_INVAL. The message names the value and the accepted ones. */
int hc_weight_dtype_check(hc_dtype want, hc_errbuf *eb);

/* Allocates *dst on `be` with dtype `want` (HC_DTYPE_AS_STORED keeps src's dtype) and shape
 * (n_dims, shape), which must hold exactly src's element count, and fills it from src.
 * Converting goes through a bounded host buffer (a few MB), never a full-size copy.
 * Errors name the tensor: `want` refused by hc_weight_dtype_check (HC_ERR_INVAL for a value that
 * is no dtype, HC_ERR_UNSUPPORTED for I32), HC_ERR_UNSUPPORTED (integer source),
 * HC_ERR_MISMATCH (element count), HC_ERR_NOMEM, backend errors. On failure *dst holds no
 * memory. */
int hc_tensor_load_converted(hc_tensor *dst, hc_backend *be, const hc_st_tensor *src,
                             hc_dtype want, int n_dims, const int64_t *shape, hc_errbuf *eb);

/* Converts all of src into host memory at dst (any alignment) as dtype `want`: n elements, which
 * must be src's element count. Errors as hc_tensor_load_converted. */
int hc_tensor_read_converted(void *dst, hc_dtype want, size_t n, const hc_st_tensor *src,
                             hc_errbuf *eb);

#endif
