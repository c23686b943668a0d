#include "creator/title_key.h"

#include <stdio.h>
#include <string.h>
#define XXH_STATIC_LINKING_ONLY /* XXH3_state_t on the stack */
#include <xxhash.h>

uint64_t hc_ad_hash(const char *title, size_t title_len, const char *desc, size_t desc_len) {
    XXH3_state_t st;
    XXH3_64bits_reset(&st);
    if (title_len) XXH3_64bits_update(&st, title, title_len);
    const unsigned char sep = 0;
    XXH3_64bits_update(&st, &sep, 1);
    if (desc && desc_len) XXH3_64bits_update(&st, desc, desc_len);
    return XXH3_64bits_digest(&st);
}

uint64_t hc_title_seed(uint64_t base_seed, int32_t cluster, uint64_t ad_hash) {
    unsigned char b[20];
    memcpy(b, &base_seed, 8); /* little-endian hosts only build this project (x86-64, aarch64) */
    memcpy(b + 8, &ad_hash, 8);
    memcpy(b + 16, &cluster, 4);
    return XXH3_64bits(b, sizeof b);
}

void hc_hash_hex(uint64_t h, char out[17]) { snprintf(out, 17, "%016llx", (unsigned long long)h); }

int hc_hash_parse(const char *s, uint64_t *out) {
    uint64_t v = 0;
    for (int i = 0; i < 16; i++) {
        char ch = s[i];
        int d = ch >= '0' && ch <= '9' ? ch - '0' : ch >= 'a' && ch <= 'f' ? ch - 'a' + 10
              : ch >= 'A' && ch <= 'F' ? ch - 'A' + 10 : -1;
        if (d < 0) return -1;
        v = v << 4 | (uint64_t)d;
    }
    if (s[16]) return -1;
    *out = v;
    return 0;
}
