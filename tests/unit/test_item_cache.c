/* test_item_cache.c: the LRU item-embedding cache against a simple model of what it must hold. */
#include <stdlib.h>
#include <string.h>

#include "creator/item_cache.h"
#include "testutil.h"

int main(void) {
    enum { CAP = 64, DIM = 5, KEYS = 200 };
    hc_item_cache *c = NULL;
    CHECK_OK(hc_item_cache_create(&c, CAP, DIM, 7));
    /* the model: last-use time of each key; the cache must hold exactly the CAP most recent */
    long last[KEYS];
    for (int k = 0; k < KEYS; k++) last[k] = -1;
    unsigned x = 7;
    for (long step = 0; step < 20000; step++) {
        x = x * 1103515245u + 12345u;
        int k = (int)((x >> 8) % KEYS);
        /* distinct keys of lengths 1..7, and key 0 is the empty title (no ids) */
        int n = k == 0 ? 0 : 1 + k % 7;
        int32_t ids[8];
        for (int i = 0; i < n; i++) ids[i] = k * 31 + i;
        /* is k among the CAP most recently used keys? */
        int rank = 0;
        for (int j = 0; j < KEYS; j++)
            if (last[j] > last[k]) rank++;
        int expect_hit = last[k] >= 0 && rank < CAP;
        const float *v = hc_item_cache_get(c, ids, n);
        CHECKF((v != NULL) == expect_hit, "step %ld key %d: hit %d, want %d", step, k, v != NULL,
               expect_hit);
        if (v) {
            for (int d = 0; d < DIM; d++) CHECK(v[d] == (float)(k * 10 + d));
        } else {
            float vec[DIM];
            for (int d = 0; d < DIM; d++) vec[d] = (float)(k * 10 + d);
            CHECK_OK(hc_item_cache_put(c, ids, n, vec));
        }
        last[k] = step;
    }
    hc_item_cache_stats st = hc_item_cache_get_stats(c);
    CHECK(st.size == CAP && st.hits + st.misses == 20000 && st.evictions > 0);
    /* bytes: the CAP entries' vectors and keys at least, and within the per-entry bound that a
     * byte-bounded cache is sized with (hc_creator_params.item_cache_bytes) */
    const size_t per = hc_item_cache_entry_bytes(DIM, 7);
    CHECKF(st.bytes >= (size_t)CAP * (DIM + 7) * 4 && st.bytes <= (size_t)CAP * per,
           "bytes %zu for %d entries of at most %zu", st.bytes, CAP, per);
    hc_item_cache *e = NULL;
    CHECK_OK(hc_item_cache_create(&e, 0, DIM, 7));
    CHECK(hc_item_cache_get_stats(e).bytes == 0);
    hc_item_cache_free(e);
    /* keys that differ only in length or in one id do not collide */
    int32_t a[3] = {1, 2, 3};
    float va[DIM] = {1, 1, 1, 1, 1}, vb[DIM] = {2, 2, 2, 2, 2};
    hc_item_cache_clear(c);
    CHECK_OK(hc_item_cache_put(c, a, 3, va));
    CHECK_OK(hc_item_cache_put(c, a, 2, vb));
    CHECK(hc_item_cache_get(c, a, 3) && hc_item_cache_get(c, a, 3)[0] == 1.0f);
    CHECK(hc_item_cache_get(c, a, 2) && hc_item_cache_get(c, a, 2)[0] == 2.0f);
    CHECK(hc_item_cache_get(c, a, 1) == NULL);
    /* a key longer than max_ids is refused, nothing stored; a lookup of one just misses */
    int32_t longk[8] = {9, 9, 9, 9, 9, 9, 9, 9};
    const size_t size0 = hc_item_cache_get_stats(c).size;
    CHECK(hc_item_cache_put(c, longk, 8, va) == HC_ERR_RANGE);
    CHECK(hc_item_cache_get_stats(c).size == size0 && hc_item_cache_get(c, longk, 8) == NULL);
    CHECK(hc_item_cache_get(c, a, 3) && hc_item_cache_get(c, a, 3)[0] == 1.0f);
    hc_item_cache_free(c);
    /* bad max_ids */
    CHECK(hc_item_cache_create(&c, CAP, DIM, 0) == HC_ERR_INVAL && c == NULL);
    CHECK(hc_item_cache_create(&c, CAP, DIM, (1 << 20) + 1) == HC_ERR_INVAL && c == NULL);
    /* a disabled cache never hits */
    CHECK_OK(hc_item_cache_create(&c, 0, DIM, 7));
    CHECK_OK(hc_item_cache_put(c, a, 3, va));
    CHECK(hc_item_cache_get(c, a, 3) == NULL);
    hc_item_cache_free(c);
    return hc_test_finish("test_item_cache");
}
