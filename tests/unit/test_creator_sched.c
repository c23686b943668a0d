/* test_creator_sched.c: the pipeline scheduler (engine/creator/creator_sched.h) on the demo package.
 *
 *  - N requests (1000; 24 under valgrind) of every mode, submitted a few at a time at random
 *    steps (seeded), with invalid requests among them: every valid one gets exactly the cluster,
 *    U (within 1e-4 relative) and greedy ids that one request at a time through
 *    hc_creator_generate / hc_creator_embed_users gives; invalid ones are refused at submit with
 *    a message and disturb nobody; events come in lifecycle order, one end per request; steps mix
 *    prefill chunks and decode tokens; prompt1 and each cluster's prefix were computed once.
 *  - cancel in every stage (queued, embedded, decoding) ends the request with "cancelled" and
 *    the KV pool returns to its starting free-block count;
 *  - a full queue gives AGAIN and loses nothing already queued;
 *  - an embed-only request gets u, U and cluster equal to hc_creator_embed_users'.
 *  - after warm-up (titles in the item cache), steps allocate nothing but the creative
 *    scheduler's copy of each request handed over to it.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "creator/creator_sched.h"
#include "creator/title_key.h"
#include "testutil.h"

#if __has_include(<valgrind/valgrind.h>)
#include <valgrind/valgrind.h>
#define ON_VALGRIND RUNNING_ON_VALGRIND
#else
#define ON_VALGRIND 0
#endif

#define MAX_NEW 8
#define MAX_HIST 12

static const char *WORDS[] = {"The Hobbit", "Dune", "Emma", "Dracula", "Middlemarch",
                              "The Name of the Wind", "Beloved", "Ulysses", "Solaris",
                              "A Wizard of Earthsea", "Persuasion", "Kindred", "Neuromancer",
                              "The Left Hand of Darkness", "Frankenstein", "Ficciones"};
static const char *ADS[][2] = {{"Night Flight", "A pilot crosses the Andes at night."},
                               {"The Sea Wolf", "A ship, a captain, a storm."},
                               {"Kokoro", NULL},
                               {"Ice", "Cold."},
                               {"The Dispossessed", "Two worlds, one wall."},
                               {"Howards End", "A house and the families who want it."},
                               {"Rebecca", "Last night I dreamt I went to Manderley again."},
                               {"Piranesi", "A house of endless halls."}};

/* allocation counting (the test links with -Wl,--wrap=malloc,--wrap=calloc,--wrap=realloc) */
#include "alloc_count.h"

static uint64_t rng_state = 0x243f6a8885a308d3ULL;
static uint32_t rnd(uint32_t n) {
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (uint32_t)(rng_state % n);
}

typedef struct req {
    /* input */
    const char *titles[MAX_HIST];
    size_t lens[MAX_HIST];
    int n_hist, ad, max_new;
    hc_creq_mode mode;
    int invalid; /* 0 valid; 1 an item longer than max_item_tokens; 2 a prompt2 too long */
    /* reference (one at a time) */
    int32_t ref_ids[MAX_NEW], ref_n, ref_cluster;
    float *ref_U, *ref_u;
    /* through the scheduler */
    int32_t ids[MAX_NEW], n, cluster;
    float *U, *u;
    int embedded, finished, failed, order_bad, tokens_before_embedded;
    hc_finish finish;
    int cancel_on; /* cancel tests: 1 cancel on EMBEDDED, 2 on the first TOKEN */
    const int32_t *stop; /* extra stop ids (hc_creq.stop) */
    int n_stop;
    const float *pre_U; /* hc_creq.pre_U / pre_cluster */
    int32_t pre_cluster;
} req;

typedef struct run {
    req *reqs;
    hc_csched *s;
    int Hu, Hc;
} run;

static void sink(void *user, const hc_cevent *ev) {
    run *R = user;
    req *r = &R->reqs[ev->id];
    if (r->finished || r->failed) r->order_bad = 1; /* nothing after the end */
    switch (ev->kind) {
    case HC_CEV_EMBEDDED:
        if (r->embedded) r->order_bad = 1;
        r->embedded = 1;
        r->cluster = ev->cluster;
        memcpy(r->U, ev->U, sizeof(float) * (size_t)R->Hc);
        if (ev->u) memcpy(r->u, ev->u, sizeof(float) * (size_t)R->Hu);
        else if (!r->pre_U) r->order_bad = 1; /* only a request that brought its U has no u */
        if (r->cancel_on == 1) hc_csched_cancel(R->s, ev->id);
        break;
    case HC_CEV_TOKEN:
        if (!r->embedded) r->tokens_before_embedded = 1;
        if (r->n < MAX_NEW) r->ids[r->n] = ev->token;
        r->n++;
        if (ev->n_out != r->n) r->order_bad = 1;
        if (r->cancel_on == 2 && r->n == 1) hc_csched_cancel(R->s, ev->id);
        break;
    case HC_CEV_FINISHED:
        r->finished = 1;
        r->finish = ev->finish;
        break;
    default: r->failed = 1; break;
    }
}

static void make_req(req *r, int Hu, int Hc) {
    memset(r, 0, sizeof *r);
    r->n_hist = (int)rnd(MAX_HIST + 1);
    for (int j = 0; j < r->n_hist; j++) {
        r->titles[j] = WORDS[rnd(sizeof WORDS / sizeof WORDS[0])];
        r->lens[j] = strlen(r->titles[j]);
    }
    r->ad = (int)rnd(8);
    r->max_new = 1 + (int)rnd(MAX_NEW);
    r->mode = (hc_creq_mode)rnd(3);
    r->U = calloc((size_t)Hc, sizeof(float));
    r->u = calloc((size_t)Hu, sizeof(float));
    r->ref_U = calloc((size_t)Hc, sizeof(float));
    r->ref_u = calloc((size_t)Hu, sizeof(float));
    r->cluster = r->ref_cluster = -1;
}

static void free_req(req *r) {
    free(r->U);
    free(r->u);
    free(r->ref_U);
    free(r->ref_u);
}

/* One at a time through the closed calls. */
static void reference(hc_creator *c, req *r) {
    hc_errbuf eb = {{0}};
    hc_history h = {r->titles, r->lens, r->n_hist};
    CHECK_OK(hc_creator_embed_users(c, &h, 1, r->ref_u, r->ref_U, &eb));
    float score;
    CHECK_OK(hc_creator_assign(c, r->ref_U, 1, &r->ref_cluster, &score, &eb));
    if (r->mode == HC_CREQ_EMBED) return;
    hc_title_request t = {.history = h, .ad_title = ADS[r->ad][0],
                          .ad_title_len = strlen(ADS[r->ad][0]), .ad_desc = ADS[r->ad][1],
                          .ad_desc_len = ADS[r->ad][1] ? strlen(ADS[r->ad][1]) : 0,
                          .per_user = r->mode == HC_CREQ_PER_USER,
                          .sampling = hc_sampler_greedy(), .max_new = r->max_new};
    int rc = hc_creator_generate(c, &t, 1, NULL, NULL, &eb);
    CHECKF(rc == 0 && t.status == 0, "reference generate: %s %s", eb.msg, t.error);
    r->ref_n = t.n_ids;
    memcpy(r->ref_ids, t.ids, sizeof(int32_t) * (size_t)t.n_ids);
    CHECK(t.cluster == r->ref_cluster);
    hc_title_request_clear(&t);
}

/* Tokenizes and submits r (id = index); returns submit's code. */
static int submit(hc_creator *c, hc_csched *s, req *r, uint64_t id, char *msg, size_t msg_len) {
    hc_errbuf eb = {{0}};
    hc_creq q = {.id = id, .mode = r->mode, .sampling = hc_sampler_greedy(), .max_new = r->max_new,
                 .stop = r->stop, .n_stop = r->n_stop};
    hc_creq_buf buf;
    int rc = hc_creator_tokenize_request(c, c->item_ctx, c->creative_ctx,
                                         &(hc_history){r->titles, r->lens, r->n_hist},
                                         r->mode == HC_CREQ_EMBED ? NULL : ADS[r->ad][0],
                                         strlen(ADS[r->ad][0]), ADS[r->ad][1],
                                         ADS[r->ad][1] ? strlen(ADS[r->ad][1]) : 0, &q, &buf, &eb);
    CHECKF(rc == 0, "tokenize: %s", eb.msg);
    int32_t long_item[512], long_p2[4096];
    if (r->invalid == 1) { /* one item over max_item_tokens */
        for (int j = 0; j < 512; j++) long_item[j] = 5;
        q.item_ids = long_item;
        q.n_items = 1;
        static int32_t len;
        len = c->pkg.max_item_tokens + 1;
        q.item_lens = &len;
    } else if (r->invalid == 2) { /* a prompt over max_prompt_tokens */
        for (int j = 0; j < 4096; j++) long_p2[j] = 7;
        q.prompt2 = long_p2;
        q.n_prompt2 = c->pkg.max_prompt_tokens;
    }
    q.pre_U = r->pre_U;
    q.pre_cluster = r->pre_cluster;
    rc = hc_csched_submit(s, &q, &eb);
    snprintf(msg, msg_len, "%s", eb.msg);
    hc_creq_buf_free(&buf);
    return rc;
}

static void test_random_arrivals(hc_creator *c, int N) {
    const int Hu = c->d_user, Hc = c->d_creative;
    req *reqs = calloc((size_t)N, sizeof *reqs);
    int n_invalid = 0;
    for (int i = 0; i < N; i++) {
        make_req(&reqs[i], Hu, Hc);
        if (i % 37 == 5) reqs[i].invalid = 1 + (int)rnd(2);
        if (reqs[i].invalid == 2 && reqs[i].mode == HC_CREQ_EMBED) reqs[i].mode = HC_CREQ_CLUSTER;
        n_invalid += reqs[i].invalid != 0;
    }
    for (int i = 0; i < N; i++)
        if (!reqs[i].invalid) reference(c, &reqs[i]);

    hc_errbuf eb = {{0}};
    hc_csched_params p = hc_csched_default_params();
    p.max_queued = 16;     /* small bounds: AGAIN, chunking and hand-over waits all happen */
    p.max_embed = 5;
    p.embed_tokens = 300;
    p.gen.max_running = 6;
    p.gen.max_queued = 4;
    p.gen.step_tokens = 40;
    p.gen.prefill_chunk = 13;
    hc_csched *s = NULL;
    CHECK_OK(hc_csched_create(&s, c, &p, &eb));
    if (!s) return;
    run R = {reqs, s, Hu, Hc};
    const int free0 = hc_kv_n_free_blocks(hc_lm_sched_kv(hc_csched_gen(s)));
    int next = 0, again = 0, refused = 0, steps = 0;
    while (next < N || !hc_csched_idle(s)) {
        int k = rnd(10) == 0 ? 20 : (int)rnd(4); /* now and then a burst past the queue bound */
        for (int j = 0; j < k && next < N; j++) {
            char msg[512];
            int rc = submit(c, s, &reqs[next], (uint64_t)next, msg, sizeof msg);
            if (rc == HC_ERR_AGAIN) {
                again++;
                break;
            }
            if (reqs[next].invalid) {
                CHECKF(rc == HC_ERR_RANGE && strstr(msg, reqs[next].invalid == 1
                                                             ? "max_item_tokens"
                                                             : "max_prompt_tokens"),
                       "request %d (invalid %d): rc %d, '%s'", next, reqs[next].invalid, rc, msg);
                refused++;
            } else {
                CHECKF(rc == 0, "request %d refused: %s", next, msg);
            }
            next++;
        }
        CHECK_OK(hc_csched_step(s, sink, &R, &eb));
        if (++steps > 100 * N) break;
    }
    CHECK(refused == n_invalid);
    CHECKF(again > 0, "the queue bound was never reached (%d)", again);
    int bad = 0;
    float worst = 0;
    for (int i = 0; i < N; i++) {
        req *r = &reqs[i];
        if (r->invalid) {
            bad += r->embedded || r->finished || r->failed || r->n;
            continue;
        }
        float e = (float)hc_test_rel_err(r->U, r->ref_U, (size_t)Hc);
        if (e > worst) worst = e;
        int ok = r->embedded && r->finished && !r->failed && !r->order_bad &&
                 !r->tokens_before_embedded && r->cluster == r->ref_cluster && e < 1e-4f;
        if (r->mode == HC_CREQ_EMBED)
            ok = ok && r->finish == HC_FINISH_EMBEDDED && r->n == 0 &&
                 hc_test_rel_err(r->u, r->ref_u, (size_t)Hu) < 1e-4;
        else
            ok = ok && r->n == r->ref_n &&
                 !memcmp(r->ids, r->ref_ids, sizeof(int32_t) * (size_t)r->n) &&
                 (r->finish == HC_FINISH_STOP ||
                  (r->finish == HC_FINISH_LENGTH && r->n == r->max_new));
        if (!ok && bad++ < 5)
            fprintf(stderr, "request %d (mode %d): embedded %d finished %d (%s) failed %d order %d "
                            "cluster %d/%d U err %g, %d ids vs %d\n",
                    i, r->mode, r->embedded, r->finished, hc_finish_name(r->finish), r->failed,
                    r->order_bad, r->cluster, r->ref_cluster, e, r->n, r->ref_n);
    }
    CHECKF(bad == 0, "%d of %d requests differ from one at a time", bad, N);
    hc_csched_stats st = hc_csched_get_stats(s);
    printf("%d requests (%d refused), %llu steps, %llu embed passes, %llu forwards (%llu mixed), "
           "prefill %llu tokens, prefix hits %llu misses %llu evictions %llu, U err %.2g\n",
           N, refused, (unsigned long long)st.steps, (unsigned long long)st.embed_passes,
           (unsigned long long)st.gen.forwards, (unsigned long long)st.gen.mixed_forwards,
           (unsigned long long)st.gen.prefill_tokens, (unsigned long long)st.gen.prefix_hits,
           (unsigned long long)st.gen.prefix_misses, (unsigned long long)st.gen.prefix_evictions,
           worst);
    CHECK(st.gen.mixed_forwards > 0);
    CHECK(st.embed_passes > 1);
    /* prompt1 (per-user) and prompt1 + slot (per cluster) are computed once per key unless
     * evicted: misses = distinct keys + evictions at most */
    int keys[64] = {0}, n_keys = 0, n_gen = 0;
    for (int i = 0; i < N; i++) {
        const req *r = &reqs[i];
        if (r->invalid || r->mode == HC_CREQ_EMBED) continue;
        n_gen++;
        int key = r->mode == HC_CREQ_PER_USER ? 0 : 1 + r->cluster;
        if (key < 64 && !keys[key]) {
            keys[key] = 1;
            n_keys++;
        }
    }
    CHECKF(st.gen.prefix_misses <= (uint64_t)n_keys + st.gen.prefix_evictions,
           "%llu prefix misses for %d keys and %llu evictions",
           (unsigned long long)st.gen.prefix_misses, n_keys,
           (unsigned long long)st.gen.prefix_evictions);
    /* every generation forked its prefix (hits), and the prefill tokens computed are exactly
     * each prompt minus the full blocks of its prefix, plus each prefix once */
    CHECKF(st.gen.prefix_hits == (uint64_t)n_gen, "%llu prefix hits for %d generations",
           (unsigned long long)st.gen.prefix_hits, n_gen);
    if (st.gen.prefix_evictions == 0) {
        const int bs = p.gen.block_size, n1 = c->n_prompt1;
        uint64_t want = 0;
        for (int key = 0; key < 64; key++)
            if (keys[key]) want += (uint64_t)(key == 0 ? n1 : n1 + 1);
        for (int i = 0; i < N; i++) {
            const req *r = &reqs[i];
            if (r->invalid || r->mode == HC_CREQ_EMBED) continue;
            int32_t *ids = NULL;
            int n = 0, slot = 0;
            CHECK_OK(hc_creator_prompt(c, ADS[r->ad][0], strlen(ADS[r->ad][0]), ADS[r->ad][1],
                                       ADS[r->ad][1] ? strlen(ADS[r->ad][1]) : 0, &ids, &n,
                                       &slot, &eb));
            free(ids);
            int plen = r->mode == HC_CREQ_PER_USER ? n1 : n1 + 1;
            want += (uint64_t)(n - plen / bs * bs);
        }
        CHECKF(st.gen.prefill_tokens == want, "%llu prefill tokens computed, expected %llu",
               (unsigned long long)st.gen.prefill_tokens, (unsigned long long)want);
    }
    hc_lm_sched_drop_prefixes(hc_csched_gen(s));
    CHECK(hc_kv_n_free_blocks(hc_lm_sched_kv(hc_csched_gen(s))) == free0);
    hc_csched_free(s);
    for (int i = 0; i < N; i++) free_req(&reqs[i]);
    free(reqs);
}

static void test_cancel_and_queue(hc_creator *c) {
    const int Hu = c->d_user, Hc = c->d_creative;
    enum { N = 8 };
    req reqs[N];
    for (int i = 0; i < N; i++) {
        make_req(&reqs[i], Hu, Hc);
        reqs[i].n_hist = 3;
        reqs[i].mode = i % 2 ? HC_CREQ_PER_USER : HC_CREQ_CLUSTER;
        reqs[i].max_new = MAX_NEW;
    }
    hc_errbuf eb = {{0}};
    hc_csched_params p = hc_csched_default_params();
    p.max_queued = 4;
    hc_csched *s = NULL;
    CHECK_OK(hc_csched_create(&s, c, &p, &eb));
    if (!s) return;
    run R = {reqs, s, Hu, Hc};
    hc_kv_cache *kv = hc_lm_sched_kv(hc_csched_gen(s));
    const int free0 = hc_kv_n_free_blocks(kv);
    char msg[512];
    /* a full queue: AGAIN, and the 4 queued all finish */
    for (int i = 0; i < 4; i++) CHECK_OK(submit(c, s, &reqs[i], (uint64_t)i, msg, sizeof msg));
    CHECK(submit(c, s, &reqs[4], 4, msg, sizeof msg) == HC_ERR_AGAIN);
    CHECK(hc_csched_get_stats(s).queued == 4);
    /* cancel while queued (before any step): no EMBEDDED, "cancelled" */
    CHECK_OK(hc_csched_cancel(s, 0));
    CHECK(hc_csched_cancel(s, 0) == HC_ERR_NOTFOUND);
    CHECK(hc_csched_cancel(s, 99) == HC_ERR_NOTFOUND);
    reqs[1].cancel_on = 1; /* on EMBEDDED */
    reqs[2].cancel_on = 2; /* on the first token */
    while (!hc_csched_idle(s)) CHECK_OK(hc_csched_step(s, sink, &R, &eb));
    CHECK(reqs[0].finished && reqs[0].finish == HC_FINISH_CANCELLED && !reqs[0].embedded &&
          reqs[0].n == 0);
    CHECK(reqs[1].finished && reqs[1].finish == HC_FINISH_CANCELLED && reqs[1].embedded &&
          reqs[1].n == 0);
    CHECKF(reqs[2].finished && reqs[2].finish == HC_FINISH_CANCELLED && reqs[2].n == 1,
           "cancel on first token: finished %d (%s), %d tokens", reqs[2].finished,
           hc_finish_name(reqs[2].finish), reqs[2].n);
    CHECK(reqs[3].finished && !reqs[3].failed && reqs[3].finish != HC_FINISH_CANCELLED &&
          reqs[3].n >= 1);
    for (int i = 0; i < 4; i++) CHECK(!reqs[i].order_bad && !reqs[i].failed);
    /* nothing leaked: the pool is back to its starting count once prefixes are dropped */
    hc_lm_sched_drop_prefixes(hc_csched_gen(s));
    CHECK(hc_kv_n_free_blocks(kv) == free0);
    /* cancel mid-decode of many at once, then the pool again */
    for (int i = 4; i < N; i++) CHECK_OK(submit(c, s, &reqs[i], (uint64_t)i, msg, sizeof msg));
    for (int k = 0; k < 3; k++) CHECK_OK(hc_csched_step(s, sink, &R, &eb));
    for (int i = 4; i < N; i++) hc_csched_cancel(s, (uint64_t)i);
    while (!hc_csched_idle(s)) CHECK_OK(hc_csched_step(s, sink, &R, &eb));
    for (int i = 4; i < N; i++) CHECK(reqs[i].finished && !reqs[i].order_bad);
    hc_lm_sched_drop_prefixes(hc_csched_gen(s));
    CHECK(hc_kv_n_free_blocks(kv) == free0);
    /* bad parameters and requests */
    hc_csched *bad = NULL;
    hc_csched_params bp = p;
    bp.max_embed = 0;
    CHECK(hc_csched_create(&bad, c, &bp, &eb) == HC_ERR_INVAL && !bad);
    hc_creq q = {.id = 1, .mode = (hc_creq_mode)7};
    CHECK(hc_csched_submit(s, &q, &eb) == HC_ERR_INVAL);
    int32_t id = c->item->cfg.vocab_size, len = 1;
    hc_creq q2 = {.id = 1, .mode = HC_CREQ_EMBED, .n_items = 1, .item_lens = &len, .item_ids = &id};
    CHECK(hc_csched_submit(s, &q2, &eb) == HC_ERR_RANGE && strstr(eb.msg, "vocabulary"));
    hc_creq q3 = {.id = 1, .mode = HC_CREQ_EMBED, .n_items = c->pkg.max_history + 1};
    CHECK(hc_csched_submit(s, &q3, &eb) == HC_ERR_RANGE && strstr(eb.msg, "max_history"));
    hc_creq q4 = {.id = 1, .mode = HC_CREQ_PER_USER, .max_new = -1};
    CHECK(hc_csched_submit(s, &q4, &eb) == HC_ERR_INVAL);
    CHECK(hc_csched_idle(s));
    hc_csched_free(s);
    for (int i = 0; i < N; i++) free_req(&reqs[i]);
}

/* Per-request stop ids: a request told to stop at the k-th token of its own greedy title ends
 * there with "stop" (the stop token included), its neighbours are untouched; bad stop lists are
 * refused at submit. */
static void test_stop_ids(hc_creator *c) {
    const int Hu = c->d_user, Hc = c->d_creative;
    enum { N = 6 };
    req reqs[N];
    int32_t stops[N];
    for (int i = 0; i < N; i++) {
        make_req(&reqs[i], Hu, Hc);
        reqs[i].n_hist = 2 + i;
        reqs[i].mode = i % 2 ? HC_CREQ_PER_USER : HC_CREQ_CLUSTER;
        reqs[i].max_new = MAX_NEW;
        reference(c, &reqs[i]);
    }
    hc_errbuf eb = {{0}};
    hc_csched *s = NULL;
    CHECK_OK(hc_csched_create(&s, c, NULL, &eb));
    if (!s) return;
    run R = {reqs, s, Hu, Hc};
    char msg[512];
    int want[N];
    for (int i = 0; i < N; i++) {
        want[i] = reqs[i].ref_n;
        if (i % 3 != 2 && reqs[i].ref_n > 2) { /* stop at the first occurrence of token 2 */
            stops[i] = reqs[i].ref_ids[2];
            reqs[i].stop = &stops[i];
            reqs[i].n_stop = 1;
            for (want[i] = 1; reqs[i].ref_ids[want[i] - 1] != stops[i]; want[i]++) {}
        }
        CHECK_OK(submit(c, s, &reqs[i], (uint64_t)i, msg, sizeof msg));
    }
    while (!hc_csched_idle(s)) CHECK_OK(hc_csched_step(s, sink, &R, &eb));
    for (int i = 0; i < N; i++) {
        req *r = &reqs[i];
        CHECKF(r->finished && !r->failed && r->n == want[i] &&
                   !memcmp(r->ids, r->ref_ids, sizeof(int32_t) * (size_t)r->n) &&
                   (!r->n_stop || r->finish == HC_FINISH_STOP),
               "request %d: %d ids (want %d), finish %s", i, r->n, want[i],
               hc_finish_name(r->finish));
    }
    /* refused at submit: an id outside the vocabulary, more than the room beside the EOS ids,
     * a count without ids */
    int32_t bad_id = c->creative->cfg.vocab_size, many[HC_LM_MAX_STOP + 1] = {0};
    req b;
    make_req(&b, Hu, Hc);
    b.mode = HC_CREQ_PER_USER;
    b.stop = &bad_id;
    b.n_stop = 1;
    CHECK(submit(c, s, &b, 100, msg, sizeof msg) == HC_ERR_RANGE && strstr(msg, "vocabulary"));
    b.stop = many;
    b.n_stop = HC_LM_MAX_STOP - c->n_eos + 1;
    CHECK(submit(c, s, &b, 101, msg, sizeof msg) == HC_ERR_RANGE && strstr(msg, "stop ids"));
    b.n_stop = HC_LM_MAX_STOP - c->n_eos; /* exactly the room: accepted */
    CHECK(submit(c, s, &b, 102, msg, sizeof msg) == 0);
    CHECK_OK(hc_csched_cancel(s, 102));
    while (!hc_csched_idle(s)) CHECK_OK(hc_csched_step(s, NULL, NULL, &eb));
    hc_creq q = {.id = 103, .mode = HC_CREQ_PER_USER, .n_stop = 1};
    CHECK(hc_csched_submit(s, &q, &eb) == HC_ERR_RANGE);
    free_req(&b);
    hc_csched_free(s);
    for (int i = 0; i < N; i++) free_req(&reqs[i]);
}

/* seed_by_cluster: sampled cluster-mode titles of two users of one cluster are identical, and
 * equal a request seeded by hand with hc_title_seed(base, cluster, ad_hash). */
typedef struct seedrun {
    int32_t ids[4][MAX_NEW];
    int n[4], cluster[4], done[4];
} seedrun;
static void seed_sink(void *user, const hc_cevent *ev) {
    seedrun *R = user;
    if (ev->kind == HC_CEV_EMBEDDED) R->cluster[ev->id] = ev->cluster;
    if (ev->kind == HC_CEV_TOKEN && R->n[ev->id] < MAX_NEW) R->ids[ev->id][R->n[ev->id]++] = ev->token;
    if (ev->kind == HC_CEV_FINISHED || ev->kind == HC_CEV_FAILED) R->done[ev->id] = 1 + (ev->kind == HC_CEV_FAILED);
}
static void test_seed_by_cluster(hc_creator *c) {
    hc_errbuf eb = {{0}};
    /* two different histories assigned to one cluster */
    const int n_try = 16;
    const int Hc = c->d_creative;
    float *U = calloc((size_t)Hc, sizeof(float));
    int32_t first_of[64];
    for (int k = 0; k < 64; k++) first_of[k] = -1;
    int a = -1, b = -1, cl = -1;
    for (int i = 0; i < n_try && a < 0; i++) {
        hc_history h = {WORDS + i, (size_t[]){strlen(WORDS[i])}, 1};
        float score;
        int32_t k = -1;
        CHECK_OK(hc_creator_embed_users(c, &h, 1, NULL, U, &eb));
        CHECK_OK(hc_creator_assign(c, U, 1, &k, &score, &eb));
        if (k < 0 || k >= 64) continue;
        if (first_of[k] >= 0) {
            a = first_of[k];
            b = i;
            cl = k;
        } else {
            first_of[k] = i;
        }
    }
    free(U);
    CHECKF(a >= 0, "no two of %d one-title histories share a cluster", n_try);
    if (a < 0) return;
    hc_csched *s = NULL;
    CHECK_OK(hc_csched_create(&s, c, NULL, &eb));
    if (!s) return;
    const char *ad = ADS[1][0], *desc = ADS[1][1];
    const uint64_t base = 42, ah = hc_ad_hash(ad, strlen(ad), desc, strlen(desc));
    const int user[4] = {a, b, a, a};
    seedrun R = {0};
    for (int r = 0; r < 4; r++) {
        size_t len = strlen(WORDS[user[r]]);
        hc_creq q = {.id = (uint64_t)r, .mode = HC_CREQ_CLUSTER, .max_new = MAX_NEW};
        q.sampling = (hc_sampler_params){.greedy = 0, .temperature = 1.5f, .top_k = 0,
                                         .top_p = 1.0f, .seed = base};
        if (r < 2) { /* by cluster */
            q.seed_by_cluster = 1;
            q.ad_hash = ah;
        } else if (r == 2) { /* by hand */
            q.sampling.seed = hc_title_seed(base, cl, ah);
        } /* r == 3: the base seed itself */
        hc_creq_buf buf;
        CHECK_OK(hc_creator_tokenize_request(c, c->item_ctx, c->creative_ctx,
                                             &(hc_history){&WORDS[user[r]], &len, 1}, ad,
                                             strlen(ad), desc, strlen(desc), &q, &buf, &eb));
        CHECK_OK(hc_csched_submit(s, &q, &eb));
        hc_creq_buf_free(&buf);
    }
    while (!hc_csched_idle(s)) CHECK_OK(hc_csched_step(s, seed_sink, &R, &eb));
    for (int r = 0; r < 4; r++) CHECK(R.done[r] == 1 && R.cluster[r] == cl && R.n[r] > 0);
    int same01 = R.n[0] == R.n[1] && !memcmp(R.ids[0], R.ids[1], sizeof(int32_t) * (size_t)R.n[0]);
    int same02 = R.n[0] == R.n[2] && !memcmp(R.ids[0], R.ids[2], sizeof(int32_t) * (size_t)R.n[0]);
    int same03 = R.n[0] == R.n[3] && !memcmp(R.ids[0], R.ids[3], sizeof(int32_t) * (size_t)R.n[0]);
    CHECKF(same01, "two users of cluster %d got different sampled titles", cl);
    CHECKF(same02, "seed_by_cluster differs from hc_title_seed by hand");
    CHECKF(!same03, "the base seed gave the cluster seed's title: seed_by_cluster had no effect");
    hc_csched_free(s);
}

/* An embed-only request needs no room in the creative scheduler: queued behind generations that
 * must wait for it, it is embedded in the next step; the generations keep their order. */
typedef struct orderrun {
    uint64_t embedded[32];
    int n_embedded, finished[32];
} orderrun;
static void order_sink(void *user, const hc_cevent *ev) {
    orderrun *R = user;
    if (ev->kind == HC_CEV_EMBEDDED && R->n_embedded < 32) R->embedded[R->n_embedded++] = ev->id;
    if ((ev->kind == HC_CEV_FINISHED || ev->kind == HC_CEV_FAILED) && ev->id < 32)
        R->finished[ev->id] = 1 + (ev->kind == HC_CEV_FAILED);
}
static void test_embed_passes_generations(hc_creator *c) {
    hc_errbuf eb = {{0}};
    hc_csched_params p = hc_csched_default_params();
    p.gen.max_running = 2;
    p.gen.max_queued = 1;
    p.max_embed = 4;
    hc_csched *s = NULL;
    CHECK_OK(hc_csched_create(&s, c, &p, &eb));
    if (!s) return;
    enum { NG = 8 };
    orderrun R = {0};
    for (int r = 0; r <= NG; r++) { /* 8 generations, then one embed-only request */
        size_t len = strlen(WORDS[r]);
        hc_creq q = {.id = (uint64_t)r, .mode = r < NG ? HC_CREQ_PER_USER : HC_CREQ_EMBED,
                     .sampling = hc_sampler_greedy(), .max_new = MAX_NEW};
        hc_creq_buf buf;
        CHECK_OK(hc_creator_tokenize_request(c, c->item_ctx, c->creative_ctx,
                                             &(hc_history){&WORDS[r], &len, 1},
                                             r < NG ? ADS[0][0] : NULL, strlen(ADS[0][0]),
                                             ADS[0][1], strlen(ADS[0][1]), &q, &buf, &eb));
        CHECK_OK(hc_csched_submit(s, &q, &eb));
        hc_creq_buf_free(&buf);
    }
    CHECK_OK(hc_csched_step(s, order_sink, &R, &eb));
    int embed_done = 0;
    for (int i = 0; i < R.n_embedded; i++) embed_done |= R.embedded[i] == NG;
    CHECKF(embed_done && R.finished[NG] == 1, "the embed-only request waited behind generations "
                                              "(%d embedded in the first step)", R.n_embedded);
    CHECKF(R.n_embedded < NG + 1, "the first step embedded all %d: the creative room was ignored",
           R.n_embedded);
    while (!hc_csched_idle(s)) CHECK_OK(hc_csched_step(s, order_sink, &R, &eb));
    CHECK(R.n_embedded == NG + 1);
    uint64_t last = 0;
    int in_order = 1;
    for (int i = 0; i < R.n_embedded; i++) {
        if (R.embedded[i] == NG) continue;
        if (i > 0 && R.embedded[i] < last) in_order = 0;
        last = R.embedded[i];
    }
    CHECK(in_order);
    for (int r = 0; r <= NG; r++) CHECK(R.finished[r] == 1);
    hc_csched_free(s);
}

/* Allocations inside steps after warm-up: none (the hand-over to the creative scheduler reuses the
 * request's own allocation from submit, hc_lm_sched_submit_in; item-cache inserts store keys in
 * the cache's table, which has room). The second round's requests each bring a title never seen,
 * so its steps run the item LLM and insert into the cache too. */
static void test_step_allocations(hc_creator *c) {
    const int Hu = c->d_user, Hc = c->d_creative;
    enum { N = 24 };
    static char fresh[N][32];
    req reqs[N];
    for (int i = 0; i < N; i++) {
        make_req(&reqs[i], Hu, Hc);
        reqs[i].n_hist = 2 + i % 3;
        for (int j = 0; j < reqs[i].n_hist; j++) { /* 3 titles: in the item cache after round 0 */
            reqs[i].titles[j] = WORDS[j];
            reqs[i].lens[j] = strlen(WORDS[j]);
        }
        if (i >= N / 2) { /* a new title first: an item-cache miss inside a measured step */
            snprintf(fresh[i], sizeof fresh[i], "Unseen Title %d", i);
            reqs[i].titles[0] = fresh[i];
            reqs[i].lens[0] = strlen(fresh[i]);
        }
    }
    const uint64_t enc0 = c->stats.items_encoded;
    hc_errbuf eb = {{0}};
    hc_csched *s = NULL;
    CHECK_OK(hc_csched_create(&s, c, NULL, &eb));
    if (!s) return;
    run R = {reqs, s, Hu, Hc};
    char msg[512];
    long in_steps = 0;
    for (int round = 0; round < 2; round++) {
        const int a = round * N / 2, b = a + N / 2;
        for (int i = a; i < b; i++) CHECK_OK(submit(c, s, &reqs[i], (uint64_t)i, msg, sizeof msg));
        while (!hc_csched_idle(s)) {
            long before = n_allocs;
            alloc_measuring = round == 1;
            CHECK_OK(hc_csched_step(s, sink, &R, &eb));
            alloc_measuring = 0;
            in_steps += n_allocs - before;
        }
        if (round == 0) in_steps = 0; /* warm-up: scratch growth, prefixes, item cache */
    }
    int handed = 0;
    for (int i = N / 2; i < N; i++) {
        CHECK(reqs[i].finished && !reqs[i].failed);
        handed += reqs[i].mode != HC_CREQ_EMBED;
    }
    CHECK(handed > 0); /* the second round really hands generations over */
    CHECK(c->stats.items_encoded > enc0); /* ... and really encodes new titles */
    CHECK(n_allocs > 0); /* the wrappers are really in the path */
    CHECKF(in_steps == 0, "%ld allocations in steps after warm-up (%d hand-overs)", in_steps,
           handed);
    hc_csched_free(s);
    for (int i = 0; i < N; i++) free_req(&reqs[i]);
}

/* Requests that bring their user's U (hc_creq.pre_U, from an earlier EMBEDDED event) skip the embed
 * stage, with an empty history, and give the titles of requests that embed the history. */
static void test_pre_embedded(hc_creator *c) {
    const int Hu = c->d_user, Hc = c->d_creative;
    enum { N = 8 };
    req reqs[2 * N];
    for (int i = 0; i < N; i++) {
        make_req(&reqs[i], Hu, Hc);
        if (reqs[i].n_hist == 0) reqs[i].n_hist = 1;
        reqs[i].mode = i % 2 || !c->clusters ? HC_CREQ_PER_USER : HC_CREQ_CLUSTER;
        reference(c, &reqs[i]);
    }
    hc_errbuf eb = {{0}};
    hc_csched *s = NULL;
    CHECK_OK(hc_csched_create(&s, c, NULL, &eb));
    if (!s) return;
    run R = {reqs, s, Hu, Hc};
    char msg[512];
    for (int i = 0; i < N; i++) CHECK_OK(submit(c, s, &reqs[i], (uint64_t)i, msg, sizeof msg));
    while (!hc_csched_idle(s)) CHECK_OK(hc_csched_step(s, sink, &R, &eb));
    const hc_csched_stats st0 = hc_csched_get_stats(s);
    /* the cached prompt prefixes stay: the same ones serve the second round */
    const int free0 = hc_kv_n_free_blocks(hc_lm_sched_kv(hc_csched_gen(s)));
    for (int i = N; i < 2 * N; i++) {
        const req *o = &reqs[i - N];
        make_req(&reqs[i], Hu, Hc);
        reqs[i].n_hist = 0; /* not used */
        reqs[i].mode = o->mode;
        reqs[i].ad = o->ad;
        reqs[i].max_new = o->max_new;
        reqs[i].pre_U = o->U;
        reqs[i].pre_cluster = o->cluster;
        reqs[i].cancel_on = i == 2 * N - 1; /* the last one: cancelled from its EMBEDDED event */
        CHECK_OK(submit(c, s, &reqs[i], (uint64_t)i, msg, sizeof msg));
    }
    while (!hc_csched_idle(s)) CHECK_OK(hc_csched_step(s, sink, &R, &eb));
    const hc_csched_stats st1 = hc_csched_get_stats(s);
    CHECKF(st1.users_embedded == st0.users_embedded && st1.items_seen == st0.items_seen,
           "requests with their own U were embedded: %llu -> %llu users",
           (unsigned long long)st0.users_embedded, (unsigned long long)st1.users_embedded);
    for (int i = 0; i < 2 * N; i++) {
        const req *r = &reqs[i], *o = &reqs[i % N];
        CHECKF(r->embedded && r->finished && !r->failed && !r->order_bad, "request %d: embedded "
               "%d finished %d failed %d order %d", i, r->embedded, r->finished, r->failed,
               r->order_bad);
        if (i == 2 * N - 1) {
            CHECK(r->finish == HC_FINISH_CANCELLED && r->n == 0);
            continue;
        }
        CHECKF(r->n == o->ref_n && !memcmp(r->ids, o->ref_ids, sizeof(int32_t) * (size_t)r->n),
               "request %d: titles differ from embedding the history", i);
        if (r->mode == HC_CREQ_CLUSTER) CHECK(r->cluster == o->ref_cluster);
    }
    CHECK(hc_kv_n_free_blocks(hc_lm_sched_kv(hc_csched_gen(s))) == free0);
    /* refused: an embed-only request with a U, a cluster that is not the package's */
    req bad;
    make_req(&bad, Hu, Hc);
    bad.pre_U = reqs[0].U;
    bad.mode = HC_CREQ_EMBED;
    CHECK(submit(c, s, &bad, 0, msg, sizeof msg) == HC_ERR_INVAL && strstr(msg, "own U"));
    if (c->clusters) {
        bad.mode = HC_CREQ_CLUSTER;
        bad.pre_cluster = hc_cluster_index_k(c->clusters);
        CHECK(submit(c, s, &bad, 0, msg, sizeof msg) == HC_ERR_RANGE && strstr(msg, "pre_cluster"));
        bad.pre_cluster = -1;
        CHECK(submit(c, s, &bad, 0, msg, sizeof msg) == HC_ERR_RANGE);
    }
    CHECK(hc_csched_idle(s));
    free_req(&bad);
    hc_csched_free(s);
    for (int i = 0; i < 2 * N; i++) free_req(&reqs[i]);
}

int main(int argc, char **argv) {
    const char *tests = argc > 1 ? argv[1] : "tests";
    char pkg[1024];
    snprintf(pkg, sizeof pkg, "%s/data/creator/tiny", tests);
    hc_backend *be = NULL;
    CHECK_OK(hc_backend_cpu_create(&be, 2));
    hc_errbuf eb = {{0}};
    hc_creator_params p = hc_creator_default_params();
    p.item_cache_entries = 64; /* small: hits, misses and evictions all happen */
    hc_creator *c = NULL;
    int rc = hc_creator_load(&c, be, pkg, &p, &eb);
    CHECKF(rc == 0, "load %s: %s", pkg, eb.msg);
    if (!c) return hc_test_finish("test_creator_sched");
    /* argv[2]: another request count (by hand) */
    int N = argc > 2 ? atoi(argv[2]) : ON_VALGRIND ? 24 : 1000;
    test_random_arrivals(c, N > 0 ? N : 1000);
    test_cancel_and_queue(c);
    test_stop_ids(c);
    test_seed_by_cluster(c);
    test_embed_passes_generations(c);
    test_pre_embedded(c);
    test_step_allocations(c);
    hc_creator_free(c);
    hc_backend_free(be);
    return hc_test_finish("test_creator_sched");
}
