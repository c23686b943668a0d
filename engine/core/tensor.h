/* tensor.h: dtypes and the tensor descriptor every backend op takes.
 *
 * A tensor is a view: dtype, shape (row-major, torch order: ne[n_dims-1] is contiguous) and a
 * pointer into memory owned by `backend` (NULL backend = host memory, e.g. an mmap'ed file).
 * Code above the backend never dereferences `data` of a backend tensor on the hot path; it moves
 * data with hc_backend_upload/download.
 */
#ifndef HC_TENSOR_H
#define HC_TENSOR_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

typedef enum {
    HC_DTYPE_F32 = 0,
    HC_DTYPE_BF16,
    HC_DTYPE_F16,
    HC_DTYPE_I32,
    /* How many tensor dtypes there are (the values above, 0..HC_DTYPE_COUNT-1): a count for
     * tables and range checks, never a value. */
    HC_DTYPE_COUNT,
    /* Not a dtype: a request, valid only where a *wanted* in-memory weight dtype is asked for
     * (hc_llm_params.weight_dtype, hc_creator_params.weight_dtype, hc_tensor_load_converted,
     * hc_tensor_read_converted), meaning "keep each tensor's dtype as stored in the checkpoint".
     * No tensor ever has it; everything else (hc_dtype_size, hc_convert, hc_tensor_alloc, file
     * writers) treats it as invalid. */
    HC_DTYPE_AS_STORED,
} hc_dtype;

/* Size and name of a tensor dtype; 0 and "?" for anything else (HC_DTYPE_AS_STORED included). */
size_t hc_dtype_size(hc_dtype t);
const char *hc_dtype_name(hc_dtype t);
/* 1 for the tensor dtypes F32, BF16, F16, I32; 0 for HC_DTYPE_AS_STORED and out-of-range values. */
static inline int hc_dtype_is_valid(hc_dtype t) {
    return (int)t >= 0 && (int)t < (int)HC_DTYPE_COUNT;
}
static inline int hc_dtype_is_float(hc_dtype t) {
    return t == HC_DTYPE_F32 || t == HC_DTYPE_BF16 || t == HC_DTYPE_F16;
}

#define HC_MAX_DIMS 4

struct hc_backend;

typedef struct hc_tensor {
    hc_dtype dtype;
    int n_dims;
    int64_t ne[HC_MAX_DIMS];     /* shape, outermost first; unused dims are 1 */
    void *data;                  /* element 0, in `backend`'s memory */
    struct hc_backend *backend;  /* owner of `data`; NULL = host */
} hc_tensor;

static inline int64_t hc_tensor_nelem(const hc_tensor *t) {
    int64_t n = 1;
    for (int i = 0; i < t->n_dims; i++) n *= t->ne[i];
    return n;
}
static inline size_t hc_tensor_nbytes(const hc_tensor *t) {
    return (size_t)hc_tensor_nelem(t) * hc_dtype_size(t->dtype);
}
/* Number of rows when viewed as a matrix (all dims but the last) and row length. */
static inline int64_t hc_tensor_rows(const hc_tensor *t) {
    return t->n_dims ? hc_tensor_nelem(t) / t->ne[t->n_dims - 1] : 1;
}
static inline int64_t hc_tensor_cols(const hc_tensor *t) {
    return t->n_dims ? t->ne[t->n_dims - 1] : 1;
}

/* Scalar conversions (exact for bf16 -> f32; round-to-nearest-even for f32 -> bf16, as torch). */
static inline float hc_bf16_to_f32(uint16_t h) {
    union { uint32_t u; float f; } v;
    v.u = (uint32_t)h << 16;
    return v.f;
}
static inline uint16_t hc_f32_to_bf16(float f) {
    union { uint32_t u; float f; } v;
    v.f = f;
    if ((v.u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((v.u >> 16) | 0x40); /* quiet NaN */
    uint32_t rounding = 0x7fffu + ((v.u >> 16) & 1u);
    return (uint16_t)((v.u + rounding) >> 16);
}
float hc_f16_to_f32(uint16_t h);
/* Round to nearest even as torch; values that round past the f16 range become +-inf. */
uint16_t hc_f32_to_f16(float f);

/* Element i of a 16-bit array at any alignment: tensor data mmap'ed from a safetensors file
 * starts wherever the header ends (an odd-length header is valid), so file data is never read
 * through a uint16_t or float pointer. The memcpy compiles to one load. */
static inline uint16_t hc_load_u16(const void *p, size_t i) {
    uint16_t v;
    memcpy(&v, (const unsigned char *)p + i * 2, 2);
    return v;
}

/* Converts n elements of dtype src_t at src to dtype dst_t at dst (host memory, any alignment,
 * not overlapping). Every pair of F32, BF16 and F16 is supported: widening is exact, narrowing
 * goes through f32 and rounds to nearest even as torch's `.to(dtype)` does (f16 overflow gives
 * +-inf, NaN stays NaN); equal dtypes are copied. I32 on either side is HC_ERR_INVAL. */
int hc_convert(void *dst, hc_dtype dst_t, const void *src, hc_dtype src_t, size_t n);
/* hc_convert to F32. */
int hc_convert_to_f32(float *dst, const void *src, hc_dtype src_t, size_t n);

#endif
