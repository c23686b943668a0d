/* test_lm_sched.c: the continuous-batching scheduler over one LLM (engine/model/lm_sched.h).
 *
 *  - requests submitted at random steps, prefilled in chunks while others decode (mixed steps),
 *    give every request the same greedy and seeded-sampled tokens as running it alone;
 *  - shared prefixes: forked generation == unshared (tokens identical; logits of a forked KV
 *    sequence within 1e-5 relative of an unshared one) and the prefill-token count proves the
 *    prefix ran once;
 *  - cancel at every stage (queued, waiting for a prefix, mid-prefill, decoding) ends the request
 *    and the pool returns to its starting free-block count;
 *  - a full queue answers HC_ERR_AGAIN and loses nothing queued; an invalid request is refused
 *    alone;
 *  - zero allocations inside steps after warm-up (malloc/calloc/realloc wrapped at link time).
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model/lm_sched.h"
#include "testutil.h"

/* allocation counting (the test links with -Wl,--wrap=malloc,--wrap=calloc,--wrap=realloc) */
#include "alloc_count.h"

enum { MAXR = 24, MAXOUT = 40 };

typedef struct result {
    int32_t out[MAXOUT];
    int n_out;
    hc_finish finish;
    int failed, finished;
} result;

static result res[MAXR];

static void sink(void *user, const hc_lm_event *ev) {
    (void)user;
    result *r = &res[ev->id];
    if (ev->kind == HC_LM_EV_TOKEN) {
        if (r->n_out < MAXOUT) r->out[r->n_out++] = ev->token;
    } else if (ev->kind == HC_LM_EV_FINISHED) {
        r->finish = ev->finish;
        r->finished++;
    } else {
        r->failed++;
    }
}

typedef struct reqdef {
    int32_t prompt[64];
    int n_prompt, max_new;
    hc_sampler_params sp;
} reqdef;

static uint64_t rng = 88172645463325252ULL;
static uint32_t rnd(void) {
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (uint32_t)(rng >> 11);
}

static hc_lm_req mkreq(const reqdef *d, uint64_t id) {
    hc_lm_req r = {.id = id, .prompt = d->prompt, .n_prompt = d->n_prompt, .sampling = d->sp,
                   .max_new = d->max_new};
    return r;
}

/* Runs one request alone in a fresh scheduler with no chunking; returns its tokens in res[id]. */
static void run_alone(hc_llm *m, const reqdef *d, uint64_t id) {
    hc_lm_sched_params p = hc_lm_sched_default_params();
    p.max_running = 1;
    p.step_tokens = 128;
    p.prefill_chunk = 128;
    p.max_new = MAXOUT;
    p.max_prefixes = 0;
    hc_lm_sched *s = NULL;
    hc_errbuf eb = {{0}};
    CHECK_OK(hc_lm_sched_create(&s, m, NULL, &p, &eb));
    if (!s) return;
    hc_lm_req r = mkreq(d, id);
    CHECK_OK(hc_lm_sched_submit(s, &r, &eb));
    while (!hc_lm_sched_idle(s)) CHECK_OK(hc_lm_sched_step(s, sink, NULL, &eb));
    hc_lm_sched_free(s);
}

static double max_rel(const float *a, const float *b, int n) {
    double num = 0, den = 0;
    for (int i = 0; i < n; i++) {
        double d = fabs((double)a[i] - b[i]);
        if (d > num) num = d;
        if (fabs((double)b[i]) > den) den = fabs((double)b[i]);
    }
    return den > 0 ? num / den : num;
}

/* KV level: logits after [prefix fork + rest] equal those of the unshared prompt. */
static void check_fork_logits(hc_llm *m) {
    hc_kv_cache *kv = NULL;
    CHECK_OK(hc_llm_kv_create(m, &kv, 4, 64));
    if (!kv) return;
    enum { N = 23, PL = 10 };
    int32_t ids[N], pos[N];
    for (int i = 0; i < N; i++) ids[i] = (int32_t)(3 + (i * 37) % 200), pos[i] = i;
    const int V = m->cfg.vocab_size;
    float *a = malloc(sizeof(float) * (size_t)V), *b = malloc(sizeof(float) * (size_t)V);
    int sa, sp, sf;
    hc_errbuf eb = {{0}};
    CHECK_OK(hc_kv_seq_new(kv, &sa));
    CHECK_OK(hc_kv_seq_new(kv, &sp));
    int32_t last = N - 1, lastp = N - 1 - 8;
    hc_batch ba = {.n_tokens = N, .token = ids, .pos = pos, .n_out = 1, .out_idx = &last};
    CHECK_OK(hc_llm_forward(m, &ba, kv, &sa, NULL, a, &eb));
    hc_batch bp = {.n_tokens = PL, .token = ids, .pos = pos, .n_out = 0};
    CHECK_OK(hc_llm_forward(m, &bp, kv, &sp, NULL, NULL, &eb));
    CHECK_OK(hc_kv_seq_fork(kv, &sf, sp, PL / 4)); /* 2 full blocks: 8 tokens */
    hc_batch bf = {.n_tokens = N - 8, .token = ids + 8, .pos = pos + 8, .n_out = 1,
                   .out_idx = &lastp};
    CHECK_OK(hc_llm_forward(m, &bf, kv, &sf, NULL, b, &eb));
    double e = max_rel(b, a, V);
    CHECKF(e < 1e-5, "forked logits differ from unshared: %g", e);
    hc_kv_seq_free(kv, sa);
    hc_kv_seq_free(kv, sp);
    hc_kv_seq_free(kv, sf);
    CHECK(hc_kv_n_free_blocks(kv) == 64);
    free(a);
    free(b);
    hc_kv_free(kv);
}

int main(int argc, char **argv) {
    const char *tests = argc > 1 ? argv[1] : "tests";
    char dir[1024];
    snprintf(dir, sizeof dir, "%s/data/llm/llama_gqa_f32", tests);
    hc_backend *be = NULL;
    CHECK_OK(hc_backend_cpu_create(&be, 2));
    hc_llm *m = NULL;
    hc_errbuf eb = {{0}};
    CHECK_OK(hc_llm_load(&m, be, dir, NULL, &eb));
    if (!m) return hc_test_finish("test_lm_sched");
    const int V = m->cfg.vocab_size;

    /* requests: prompts of 3..45 tokens, greedy and sampled */
    static reqdef defs[MAXR];
    for (int i = 0; i < MAXR; i++) {
        reqdef *d = &defs[i];
        d->n_prompt = 3 + (int)(rnd() % 43);
        for (int j = 0; j < d->n_prompt; j++) d->prompt[j] = (int32_t)(rnd() % (uint32_t)V);
        d->max_new = 1 + (int)(rnd() % (MAXOUT - 1));
        d->sp = hc_sampler_greedy();
        if (i % 3 == 1) d->sp = (hc_sampler_params){0, 0.9f, 20, 0.95f, 1000 + (uint64_t)i};
    }
    static result alone[MAXR];
    for (int i = 0; i < MAXR; i++) {
        memset(&res[i], 0, sizeof res[i]);
        run_alone(m, &defs[i], (uint64_t)i);
        alone[i] = res[i];
        CHECK(alone[i].finished == 1 && alone[i].n_out >= 1);
    }

    /* --- mixed steps: random arrival, small chunks, a tight token budget ----------------------- */
    hc_lm_sched_params p = hc_lm_sched_default_params();
    p.max_running = 6;
    p.max_queued = MAXR;
    p.step_tokens = 24;
    p.prefill_chunk = 7;
    p.block_size = 4;
    p.max_new = MAXOUT;
    p.max_prefixes = 0;
    hc_lm_sched *s = NULL;
    CHECK_OK(hc_lm_sched_create(&s, m, NULL, &p, &eb));
    if (!s) return hc_test_finish("test_lm_sched");
    const int free0 = hc_kv_n_free_blocks(hc_lm_sched_kv(s));
    memset(res, 0, sizeof res);
    int next = 0, steps = 0;
    while (next < MAXR || !hc_lm_sched_idle(s)) {
        int k = next < MAXR ? (int)(rnd() % 3) : 0;
        for (; k > 0 && next < MAXR; k--, next++) {
            hc_lm_req r = mkreq(&defs[next], (uint64_t)next);
            CHECK_OK(hc_lm_sched_submit(s, &r, &eb));
        }
        CHECK_OK(hc_lm_sched_step(s, sink, NULL, &eb));
        CHECK(++steps < 10000);
        if (steps >= 10000) break;
    }
    hc_lm_sched_stats st = hc_lm_sched_get_stats(s);
    CHECK(st.forwards > 0 && st.decode_tokens > 0);
    CHECKF(st.mixed_forwards > 0, "no forward mixed prefill chunks and decode tokens");
    CHECK(n_allocs > 0); /* the wrappers are really in the path */
    for (int i = 0; i < MAXR; i++) {
        CHECKF(res[i].finished == 1 && !res[i].failed, "request %d finished %d failed %d", i,
               res[i].finished, res[i].failed);
        CHECKF(res[i].n_out == alone[i].n_out &&
                   !memcmp(res[i].out, alone[i].out, sizeof(int32_t) * (size_t)res[i].n_out),
               "request %d: tokens differ from running alone", i);
        CHECK(res[i].finish == alone[i].finish);
    }
    CHECK(hc_kv_n_free_blocks(hc_lm_sched_kv(s)) == free0);

    /* --- zero allocations inside steps after warm-up ---------------------------------------- */
    for (int round = 0; round < 2; round++) {
        memset(res, 0, sizeof res);
        for (int i = 0; i < 6; i++) {
            hc_lm_req r = mkreq(&defs[i], (uint64_t)i);
            CHECK_OK(hc_lm_sched_submit(s, &r, &eb));
        }
        long before = n_allocs;
        alloc_measuring = round == 1;
        while (!hc_lm_sched_idle(s)) CHECK_OK(hc_lm_sched_step(s, sink, NULL, &eb));
        alloc_measuring = 0;
        if (round == 1) CHECKF(n_allocs == before, "%ld allocations in steps after warm-up",
                               n_allocs - before);
        for (int i = 0; i < 6; i++) CHECK(!memcmp(res[i].out, alone[i].out, sizeof(int32_t) * 4));
    }

    /* --- a full queue: AGAIN, nothing queued lost; an invalid request fails alone ----------- */
    hc_lm_sched_params pq = p;
    pq.max_queued = 3;
    pq.max_running = 2;
    hc_lm_sched *sq = NULL;
    CHECK_OK(hc_lm_sched_create(&sq, m, NULL, &pq, &eb));
    memset(res, 0, sizeof res);
    for (int i = 0; i < 3; i++) {
        hc_lm_req r = mkreq(&defs[i], (uint64_t)i);
        CHECK_OK(hc_lm_sched_submit(sq, &r, &eb));
    }
    hc_lm_req r3 = mkreq(&defs[3], 3);
    CHECK(hc_lm_sched_submit(sq, &r3, &eb) == HC_ERR_AGAIN);
    /* submit_in takes nothing on AGAIN or on an error (the test frees the block; ASan/valgrind
     * would see a double free or a leak otherwise) */
    const size_t nb3 = hc_lm_sched_req_bytes(sq, r3.n_prompt, r3.n_inject);
    char *blk = malloc(64 + nb3);
    CHECK(hc_lm_sched_submit_in(sq, &r3, blk, blk + 64, &eb) == HC_ERR_AGAIN);
    CHECK(hc_lm_sched_submit_in(sq, &r3, blk, blk + 1, &eb) == HC_ERR_INVAL);
    free(blk);
    reqdef badd = defs[4];
    badd.prompt[1] = V + 5;
    hc_lm_req rb = mkreq(&badd, 4);
    hc_errbuf eb2 = {{0}};
    CHECK_OK(hc_lm_sched_step(sq, sink, NULL, &eb)); /* two admitted: the queue has room */
    /* ... and the request handed over in the caller's block (which the scheduler frees) runs
     * like a copied one */
    hc_lm_req r6 = mkreq(&defs[3], 6);
    blk = malloc(64 + nb3);
    CHECK_OK(hc_lm_sched_submit_in(sq, &r6, blk, blk + 64, &eb));
    CHECK(hc_lm_sched_submit(sq, &rb, &eb2) == HC_ERR_RANGE && strstr(eb2.msg, "vocabulary"));
    reqdef longd = defs[5];
    longd.max_new = 260; /* past max_new of the scheduler (and the model's 256 positions) */
    hc_lm_req rl = mkreq(&longd, 5);
    CHECK(hc_lm_sched_submit(sq, &rl, &eb2) == HC_ERR_RANGE);
    while (!hc_lm_sched_idle(sq)) CHECK_OK(hc_lm_sched_step(sq, sink, NULL, &eb));
    for (int i = 0; i < 3; i++)
        CHECK(res[i].finished == 1 && res[i].n_out == alone[i].n_out &&
              !memcmp(res[i].out, alone[i].out, sizeof(int32_t) * (size_t)res[i].n_out));
    CHECK(res[3].finished == 0 && res[4].finished == 0 && res[5].finished == 0);
    CHECK(res[6].finished == 1 && res[6].n_out == alone[3].n_out &&
          !memcmp(res[6].out, alone[3].out, sizeof(int32_t) * (size_t)res[6].n_out));
    hc_lm_sched_free(sq);

    /* --- shared prefixes ---------------------------------------------------------------------- */
    check_fork_logits(m);
    enum { NP = 8, PL = 11 };
    static reqdef pdefs[NP];
    for (int i = 0; i < NP; i++) {
        reqdef *d = &pdefs[i];
        d->n_prompt = PL + 2 + i * 3;
        for (int j = 0; j < d->n_prompt; j++)
            d->prompt[j] = j < PL ? (int32_t)(7 + j * 11 % V) : (int32_t)(rnd() % (uint32_t)V);
        d->max_new = 6 + i;
        d->sp = i % 2 ? (hc_sampler_params){0, 0.8f, 30, 0.9f, 77 + (uint64_t)i}
                      : hc_sampler_greedy();
    }
    static result unshared[NP];
    uint64_t prefill_unshared = 0;
    for (int share = 0; share < 2; share++) {
        hc_lm_sched_params pp = p;
        pp.max_prefixes = share ? 4 : 0;
        hc_lm_sched *sp = NULL;
        CHECK_OK(hc_lm_sched_create(&sp, m, NULL, &pp, &eb));
        if (!sp) break;
        const int f0 = hc_kv_n_free_blocks(hc_lm_sched_kv(sp));
        memset(res, 0, sizeof res);
        for (int i = 0; i < NP; i++) {
            hc_lm_req r = mkreq(&pdefs[i], (uint64_t)i);
            r.prefix_key = 42;
            r.prefix_len = PL;
            CHECK_OK(hc_lm_sched_submit(sp, &r, &eb));
        }
        while (!hc_lm_sched_idle(sp)) CHECK_OK(hc_lm_sched_step(sp, sink, NULL, &eb));
        hc_lm_sched_stats ps = hc_lm_sched_get_stats(sp);
        uint64_t total_prompt = 0;
        for (int i = 0; i < NP; i++) total_prompt += (uint64_t)pdefs[i].n_prompt;
        if (!share) {
            memcpy(unshared, res, sizeof unshared);
            prefill_unshared = ps.prefill_tokens;
            CHECK(prefill_unshared == total_prompt);
        } else {
            /* the prefix once, then each request its prompt past the 2 full shared blocks */
            const uint64_t shared = (PL / 4) * 4;
            CHECKF(ps.prefill_tokens == PL + total_prompt - NP * shared,
                   "prefill tokens %llu, want %llu", (unsigned long long)ps.prefill_tokens,
                   (unsigned long long)(PL + total_prompt - NP * shared));
            CHECK(ps.prefix_misses == 1 && ps.prefix_hits == NP);
            for (int i = 0; i < NP; i++)
                CHECKF(res[i].n_out == unshared[i].n_out &&
                           !memcmp(res[i].out, unshared[i].out,
                                   sizeof(int32_t) * (size_t)res[i].n_out),
                       "prefix-shared request %d differs from unshared", i);
            /* the prefix stays cached; dropping it returns every block */
            CHECK(hc_kv_n_free_blocks(hc_lm_sched_kv(sp)) < f0);
            hc_lm_sched_drop_prefixes(sp);
        }
        CHECK(hc_kv_n_free_blocks(hc_lm_sched_kv(sp)) == f0);
        hc_lm_sched_free(sp);
    }

    /* --- cancel at every stage ---------------------------------------------------------------- */
    {
        hc_lm_sched_params pc = p;
        pc.max_running = 3;
        pc.prefill_chunk = 4;
        pc.max_prefixes = 4;
        hc_lm_sched *sc = NULL;
        CHECK_OK(hc_lm_sched_create(&sc, m, NULL, &pc, &eb));
        const int f0 = hc_kv_n_free_blocks(hc_lm_sched_kv(sc));
        memset(res, 0, sizeof res);
        /* 0: decoding, 1: mid-prefill (long prompt, chunk 4), 2: waiting for its prefix (still
         * being computed), 3: still queued (max_running 3) */
        reqdef d0 = defs[0];
        d0.n_prompt = 3;
        d0.max_new = 30;
        reqdef d1 = pdefs[7]; /* 32 tokens: 8 steps of prefill */
        hc_lm_req c0 = mkreq(&d0, 0), c1 = mkreq(&d1, 1), c2 = mkreq(&pdefs[2], 2),
                  c3 = mkreq(&pdefs[3], 3);
        c2.prefix_key = 9;
        c2.prefix_len = PL;
        CHECK_OK(hc_lm_sched_submit(sc, &c0, &eb));
        CHECK_OK(hc_lm_sched_submit(sc, &c1, &eb));
        CHECK_OK(hc_lm_sched_submit(sc, &c2, &eb));
        CHECK_OK(hc_lm_sched_submit(sc, &c3, &eb));
        CHECK_OK(hc_lm_sched_step(sc, sink, NULL, &eb));
        CHECK_OK(hc_lm_sched_step(sc, sink, NULL, &eb));
        hc_lm_sched_stats cs = hc_lm_sched_get_stats(sc);
        CHECK(cs.running == 3 && cs.queued == 1);
        CHECK(res[0].n_out >= 1 && res[1].n_out == 0 && res[2].n_out == 0);
        for (uint64_t id = 0; id < 4; id++) CHECK_OK(hc_lm_sched_cancel(sc, id));
        CHECK(hc_lm_sched_cancel(sc, 99) == HC_ERR_NOTFOUND);
        CHECK_OK(hc_lm_sched_step(sc, sink, NULL, &eb));
        CHECK(hc_lm_sched_idle(sc));
        for (int i = 0; i < 4; i++)
            CHECKF(res[i].finished == 1 && res[i].finish == HC_FINISH_CANCELLED,
                   "request %d: finished %d (%s)", i, res[i].finished,
                   hc_finish_name(res[i].finish));
        hc_lm_sched_drop_prefixes(sc);
        /* the prefix job itself may still be computing: let it finish, then drop it */
        for (int i = 0; i < 20; i++) CHECK_OK(hc_lm_sched_step(sc, sink, NULL, &eb));
        hc_lm_sched_drop_prefixes(sc);
        CHECK(hc_kv_n_free_blocks(hc_lm_sched_kv(sc)) == f0);
        hc_lm_sched_free(sc);
    }

    hc_lm_sched_free(s);
    hc_llm_free(m);
    hc_backend_free(be);
    return hc_test_finish("test_lm_sched");
}
