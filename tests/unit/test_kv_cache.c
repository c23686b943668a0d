/* test_kv_cache.c: block accounting of the paged KV cache, "try again" when the pool is full
 * (with nothing changed), and that a forward refused for lack of blocks leaves every sequence as
 * it was. */
#include <string.h>

#include "model/kv_cache.h"
#include "model/llm.h"
#include "testutil.h"

int main(int argc, char **argv) {
    const char *tests = argc > 1 ? argv[1] : "tests";
    hc_backend *be = NULL;
    CHECK_OK(hc_backend_cpu_create(&be, 1));
    hc_kv_cache *kv = NULL;
    CHECK_OK(hc_kv_create(&kv, be, 2, 8, 4, 6));
    int a, b, c;
    CHECK_OK(hc_kv_seq_new(kv, &a));
    CHECK_OK(hc_kv_seq_new(kv, &b));
    CHECK(a != b);
    CHECK_OK(hc_kv_seq_reserve(kv, a, 9)); /* 3 blocks */
    CHECK(hc_kv_n_free_blocks(kv) == 3);
    hc_kv_seq_commit(kv, a, 9);
    CHECK_OK(hc_kv_seq_reserve(kv, a, 3)); /* fits in the partial block */
    CHECK(hc_kv_n_free_blocks(kv) == 3);
    CHECK(hc_kv_seq_reserve(kv, b, 13) == HC_ERR_AGAIN); /* needs 4 */
    CHECK(hc_kv_n_free_blocks(kv) == 3 && hc_kv_seq_get(kv, b)->n_blocks == 0);
    CHECK_OK(hc_kv_seq_reserve(kv, b, 12));
    CHECK(hc_kv_n_free_blocks(kv) == 0);
    /* rows of different sequences never collide */
    hc_kv_seq *sa = hc_kv_seq_get(kv, a), *sb = hc_kv_seq_get(kv, b);
    for (int i = 0; i < 12; i++)
        for (int j = 0; j < 12; j++) CHECK(hc_kv_row(kv, sa, i) != hc_kv_row(kv, sb, j));
    hc_kv_seq_free(kv, a);
    CHECK(hc_kv_n_free_blocks(kv) == 3);
    CHECK(hc_kv_seq_get(kv, a) == NULL);
    CHECK_OK(hc_kv_seq_new(kv, &c)); /* slot reuse: a new handle, the old one stays stale */
    CHECK(c != a && (c & ((1 << HC_KV_SLOT_BITS) - 1)) == (a & ((1 << HC_KV_SLOT_BITS) - 1)));
    CHECK(hc_kv_seq_get(kv, a) == NULL && hc_kv_seq_get(kv, c) != NULL);
    CHECK(hc_kv_seq_reserve(kv, a, 1) == HC_ERR_INVAL);
    hc_kv_seq_free(kv, a); /* freeing a stale handle does nothing */
    CHECK(hc_kv_seq_get(kv, c) != NULL);
    /* fork: full committed blocks are shared, refcounts go up, freeing returns them once */
    {
        int f = -1, g = -1;
        CHECK_OK(hc_kv_seq_reserve(kv, c, 8));
        hc_kv_seq_commit(kv, c, 6); /* one full block (4 rows) + a partial one */
        CHECK(hc_kv_seq_fork(kv, &f, c, 2) == HC_ERR_INVAL); /* the second block is partial */
        CHECK_OK(hc_kv_seq_fork(kv, &f, c, 1));
        hc_kv_seq *sc = hc_kv_seq_get(kv, c), *sf = hc_kv_seq_get(kv, f);
        CHECK(sf->n_tokens == 4 && sf->n_blocks == 1 && sf->blocks[0] == sc->blocks[0]);
        CHECK(hc_kv_block_shared(kv, sc->blocks[0]) && !hc_kv_block_shared(kv, sc->blocks[1]));
        CHECK_OK(hc_kv_seq_fork(kv, &g, f, 1));
        int free_before = hc_kv_n_free_blocks(kv);
        CHECK_OK(hc_kv_seq_reserve(kv, f, 3)); /* new rows go to a fresh block */
        CHECK(hc_kv_n_free_blocks(kv) == free_before - 1);
        CHECK(hc_kv_seq_get(kv, f)->blocks[1] != sc->blocks[1]);
        hc_kv_seq_free(kv, c);
        hc_kv_seq_free(kv, g);
        CHECK(hc_kv_block_shared(kv, hc_kv_seq_get(kv, f)->blocks[0]) == 0);
        hc_kv_seq_free(kv, f);
        CHECK_OK(hc_kv_seq_new(kv, &c));
    }
    hc_kv_seq_free(kv, b);
    hc_kv_seq_free(kv, c);
    CHECK(hc_kv_n_free_blocks(kv) == 6);
    CHECK(hc_kv_seq_reserve(kv, 99, 1) == HC_ERR_INVAL);
    hc_kv_free(kv);

    /* forward with a pool too small for the whole batch: AGAIN, and nothing reserved stays */
    char dir[1024];
    snprintf(dir, sizeof dir, "%s/data/llm/llama_gqa_f32", tests);
    hc_llm *m = NULL;
    hc_errbuf eb = {{0}};
    CHECK_OK(hc_llm_load(&m, be, dir, NULL, &eb));
    if (m) {
        CHECK_OK(hc_llm_kv_create(m, &kv, 4, 3));
        int s0, s1;
        CHECK_OK(hc_kv_seq_new(kv, &s0));
        CHECK_OK(hc_kv_seq_new(kv, &s1));
        int32_t tok[12], pos[12], seg[12], seqs[2] = {s0, s1};
        for (int i = 0; i < 12; i++) {
            tok[i] = i + 3;
            pos[i] = i < 6 ? i : i - 6;
            seg[i] = i < 6 ? 0 : 1;
        }
        hc_batch bt = {.n_tokens = 12, .token = tok, .pos = pos, .seg = seg};
        int rc = hc_llm_forward(m, &bt, kv, seqs, NULL, NULL, &eb);
        CHECK(rc == HC_ERR_AGAIN); /* 2 + 2 blocks needed, 3 free */
        CHECK(hc_kv_n_free_blocks(kv) == 3);
        CHECK(hc_kv_seq_get(kv, s0)->n_tokens == 0 && hc_kv_seq_get(kv, s0)->n_blocks == 0);
        bt.n_tokens = 6; /* the first sequence alone fits */
        CHECK_OK(hc_llm_forward(m, &bt, kv, seqs, NULL, NULL, &eb));
        CHECK(hc_kv_seq_get(kv, s0)->n_tokens == 6 && hc_kv_n_free_blocks(kv) == 1);
        /* bad input is an error, not a crash */
        tok[0] = 100000;
        CHECK(hc_llm_forward(m, &bt, kv, seqs, NULL, NULL, &eb) == HC_ERR_RANGE);
        CHECK(strstr(eb.msg, "vocabulary") != NULL);
        tok[0] = 3;
        seg[1] = 2;
        CHECK(hc_llm_forward(m, &bt, kv, seqs, NULL, NULL, &eb) == HC_ERR_INVAL);
        seg[1] = 0;
        int dup[2] = {s0, s0};
        bt.n_tokens = 12;
        CHECK(hc_llm_forward(m, &bt, kv, dup, NULL, NULL, &eb) == HC_ERR_INVAL);
        CHECK(hc_kv_seq_get(kv, s0)->n_tokens == 6);
        hc_kv_free(kv);
        hc_llm_free(m);
    }
    hc_backend_free(be);
    return hc_test_finish("test_kv_cache");
}
