/* Keys that the daemon's caches and `hllm titles` tables share (proto/title-table.md): the hash
 * of an ad's content, the seed of the title generated for a (cluster, ad) pair, and the digest
 * that names one loaded model package. All are XXH3-64 (libxxhash): stable across machines,
 * builds and runs, so a table written by one process is valid in another. */
#ifndef HC_TITLE_KEY_H
#define HC_TITLE_KEY_H

#include <stddef.h>
#include <stdint.h>

/* The ad's content: XXH3-64 over title bytes, one 0x00 byte, description bytes (desc NULL or
 * empty hash the same). Ids are not part of it: two ads with the same text share titles. */
uint64_t hc_ad_hash(const char *title, size_t title_len, const char *desc, size_t desc_len);

/* The sampling seed of the title for (cluster, ad): the same whichever user asked first, so a
 * cached or pre-generated title is reproducible. base_seed: the operator's configured seed. */
uint64_t hc_title_seed(uint64_t base_seed, int32_t cluster, uint64_t ad_hash);

/* 16 lower-case hex digits and a NUL. */
void hc_hash_hex(uint64_t h, char out[17]);
/* Parses exactly 16 hex digits; 0 on success, -1 otherwise. */
int hc_hash_parse(const char *s, uint64_t *out);

#endif
