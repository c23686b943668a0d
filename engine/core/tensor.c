/* tensor.c: dtype table and host-side conversions. */
#include "core/tensor.h"

#include <string.h>

#include "core/error.h"

size_t hc_dtype_size(hc_dtype t) {
    switch (t) {
    case HC_DTYPE_F32: return 4;
    case HC_DTYPE_BF16: return 2;
    case HC_DTYPE_F16: return 2;
    case HC_DTYPE_I32: return 4;
    default: return 0;
    }
}

const char *hc_dtype_name(hc_dtype t) {
    switch (t) {
    case HC_DTYPE_F32: return "F32";
    case HC_DTYPE_BF16: return "BF16";
    case HC_DTYPE_F16: return "F16";
    case HC_DTYPE_I32: return "I32";
    default: return "?";
    }
}

float hc_f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t exp = (h >> 10) & 0x1fu;
    uint32_t mant = h & 0x3ffu;
    uint32_t bits;
    if (exp == 0) {
        if (mant == 0) {
            bits = sign;
        } else { /* subnormal: normalize */
            int e = -1;
            do {
                e++;
                mant <<= 1;
            } while (!(mant & 0x400u));
            mant &= 0x3ffu;
            bits = sign | ((uint32_t)(127 - 15 - e) << 23) | (mant << 13);
        }
    } else if (exp == 31) {
        bits = sign | 0x7f800000u | (mant << 13);
    } else {
        bits = sign | ((exp + 127 - 15) << 23) | (mant << 13);
    }
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

uint16_t hc_f32_to_f16(float f) {
    uint32_t x;
    memcpy(&x, &f, 4);
    uint32_t sign = (x >> 16) & 0x8000u;
    int32_t exp = (int32_t)((x >> 23) & 0xff) - 127 + 15;
    uint32_t mant = x & 0x7fffffu;
    if (((x >> 23) & 0xff) == 0xff) return (uint16_t)(sign | 0x7c00u | (mant ? 0x200u : 0));
    if (exp >= 31) return (uint16_t)(sign | 0x7c00u);
    if (exp <= 0) {
        if (exp < -10) return (uint16_t)sign;
        mant |= 0x800000u;
        uint32_t shift = (uint32_t)(14 - exp);
        uint32_t half = mant >> shift;
        uint32_t rem = mant & ((1u << shift) - 1);
        uint32_t mid = 1u << (shift - 1);
        if (rem > mid || (rem == mid && (half & 1))) half++;
        return (uint16_t)(sign | half);
    }
    uint32_t half = sign | ((uint32_t)exp << 10) | (mant >> 13);
    uint32_t rem = mant & 0x1fffu;
    if (rem > 0x1000u || (rem == 0x1000u && (half & 1))) half++;
    return (uint16_t)half;
}

static inline float load_f32(const void *src, hc_dtype t, size_t i) {
    switch (t) {
    case HC_DTYPE_BF16: return hc_bf16_to_f32(hc_load_u16(src, i));
    case HC_DTYPE_F16: return hc_f16_to_f32(hc_load_u16(src, i));
    default: {
        float f;
        memcpy(&f, (const unsigned char *)src + i * 4, 4);
        return f;
    }
    }
}

int hc_convert(void *dst, hc_dtype dst_t, const void *src, hc_dtype src_t, size_t n) {
    if (!hc_dtype_is_float(dst_t) || !hc_dtype_is_float(src_t)) return HC_ERR_INVAL;
    if (n == 0) return HC_OK;
    if (dst_t == src_t) {
        memcpy(dst, src, n * hc_dtype_size(src_t));
        return HC_OK;
    }
    unsigned char *d = dst;
    for (size_t i = 0; i < n; i++) {
        float f = load_f32(src, src_t, i);
        if (dst_t == HC_DTYPE_F32) {
            memcpy(d + i * 4, &f, 4);
        } else {
            uint16_t h = dst_t == HC_DTYPE_BF16 ? hc_f32_to_bf16(f) : hc_f32_to_f16(f);
            memcpy(d + i * 2, &h, 2);
        }
    }
    return HC_OK;
}

int hc_convert_to_f32(float *dst, const void *src, hc_dtype src_t, size_t n) {
    return hc_convert(dst, HC_DTYPE_F32, src, src_t, n);
}
