/* test_creator_sched_ref.c: the pipeline scheduler against the PyTorch reference itself.
 *
 * N requests (1000; 250 under ASan, whose 1000 took 6 min of a 2-core CI run; 12 under valgrind)
 * drawn from the users of tests/data/creator/cases.jsonl in
 * random modes (cluster, per-user, embed-only), submitted a few at a time at random steps
 * (seeded) under small queue, chunk and step bounds, must each get exactly the reference's
 * cluster and greedy title ids (tests/data/creator/reference.safetensors, written by
 * tests/reference/make_creator_fixtures.py), and U within 1e-4 relative, whatever their batch
 * mates and wherever the step boundaries fall. test_creator_sched does the same against
 * hc_creator_generate one request at a time on random histories.
 */
#include <stdlib.h>
#include <string.h>

#include "creator/creator.h"
#include "creator/creator_sched.h"
#include "creator_cases.h"
#include "testutil.h"

#if defined(__SANITIZE_ADDRESS__)
#define SANITIZED 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define SANITIZED 1
#endif
#endif
#ifndef SANITIZED
#define SANITIZED 0
#endif

#define MAX_NEW 24 /* the reference decodes at most 24 tokens (MAX_NEW in make_creator_fixtures.py) */

static uint64_t rng_state = 0x9e3779b97f4a7c15ULL;
static uint32_t rnd(uint32_t n) {
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (uint32_t)(rng_state % n);
}

typedef struct req {
    int user;
    hc_creq_mode mode;
    int32_t ids[MAX_NEW + 1];
    int n, cluster, embedded, finished, failed, bad_order;
    float U_err;
} req;

typedef struct run {
    req *reqs;
    const hc_safetensors *ref;
    int Hc;
} run;

static void sink(void *user, const hc_cevent *ev) {
    run *R = user;
    req *r = &R->reqs[ev->id];
    if (r->finished || r->failed) r->bad_order = 1;
    switch (ev->kind) {
    case HC_CEV_EMBEDDED: {
        r->bad_order |= r->embedded;
        r->embedded = 1;
        r->cluster = ev->cluster;
        const hc_st_tensor *rU = ref_get(R->ref, r->user, "projected");
        r->U_err = rU ? (float)hc_test_rel_err(ev->U, rU->data, (size_t)R->Hc) : 1.0f;
        break;
    }
    case HC_CEV_TOKEN:
        r->bad_order |= !r->embedded || ev->n_out != r->n + 1;
        if (r->n < MAX_NEW + 1) r->ids[r->n] = ev->token;
        r->n++;
        break;
    case HC_CEV_FINISHED: r->finished = 1; break;
    default: r->failed = 1; break;
    }
}

int main(int argc, char **argv) {
    const char *tests = argc > 1 ? argv[1] : "tests";
    char pkg[1024], refp[1024], casep[1024];
    snprintf(pkg, sizeof pkg, "%s/data/creator/tiny", tests);
    snprintf(refp, sizeof refp, "%s/data/creator/reference.safetensors", tests);
    snprintf(casep, sizeof casep, "%s/data/creator/cases.jsonl", tests);
    const int N = argc > 2 ? atoi(argv[2]) : getenv("HC_UNDER_VALGRIND") ? 12 : SANITIZED ? 250 : 1000;
    hc_backend *be = NULL;
    CHECK_OK(hc_backend_cpu_create(&be, 2));
    hc_errbuf eb = {{0}};
    hc_creator_params cp = hc_creator_default_params();
    cp.item_cache_entries = 48; /* fewer than the cases' titles: misses and evictions too */
    hc_creator *c = NULL;
    CHECKF(hc_creator_load(&c, be, pkg, &cp, &eb) == 0, "load %s: %s", pkg, eb.msg);
    hc_safetensors *ref = NULL;
    CHECK_OK(hc_st_open(&ref, refp, &eb));
    user_case *cs = NULL;
    int n_cases = load_cases(casep, &cs);
    CHECKF(n_cases >= 10, "expected at least 10 cases, got %d", n_cases);
    if (!c || !ref || n_cases <= 0 || N <= 0) return hc_test_finish("test_creator_sched_ref");
    static const char *rule_key[] = {"cluster_ip", "cluster_cosine", "cluster_l2"};
    const char *ckey = rule_key[c->pkg.assign];

    /* every case tokenized once (the submitter's work), submitted many times */
    hc_creq *tok = calloc((size_t)n_cases, sizeof *tok);
    hc_creq_buf *bufs = calloc((size_t)n_cases, sizeof *bufs);
    for (int i = 0; i < n_cases; i++)
        CHECKF(hc_creator_tokenize_request(c, c->item_ctx, c->creative_ctx,
                                           &(hc_history){cs[i].titles, cs[i].lens, cs[i].n},
                                           cs[i].ad_title, cs[i].ad_title_len, cs[i].ad_desc,
                                           cs[i].ad_desc_len, &tok[i], &bufs[i], &eb) == 0,
               "case %d: %s", i, eb.msg);
    req *reqs = calloc((size_t)N, sizeof *reqs);
    for (int i = 0; i < N; i++) {
        reqs[i].user = (int)rnd((uint32_t)n_cases);
        reqs[i].mode = (hc_creq_mode)rnd(3);
        reqs[i].cluster = -2;
    }
    hc_csched_params p = hc_csched_default_params();
    p.max_queued = N < 40 ? 3 : 12; /* the bound is reached (AGAIN) with few requests too */
    p.max_embed = 4;
    p.embed_tokens = 512;
    p.gen.max_running = 5;
    p.gen.max_queued = 3;
    p.gen.step_tokens = 48;
    p.gen.prefill_chunk = 17;
    hc_csched *s = NULL;
    CHECK_OK(hc_csched_create(&s, c, &p, &eb));
    if (!s) return hc_test_finish("test_creator_sched_ref");
    run R = {reqs, ref, c->d_creative};
    int next = 0, again = 0;
    long steps = 0;
    while (next < N || !hc_csched_idle(s)) {
        int k = rnd(8) == 0 ? 16 : (int)rnd(3);
        for (int j = 0; j < k && next < N; j++) {
            hc_creq q = tok[reqs[next].user];
            q.id = (uint64_t)next;
            q.mode = reqs[next].mode;
            q.sampling = hc_sampler_greedy();
            q.max_new = MAX_NEW;
            int rc = hc_csched_submit(s, &q, &eb);
            if (rc == HC_ERR_AGAIN) {
                again++;
                break;
            }
            CHECKF(rc == 0, "request %d refused: %s", next, eb.msg);
            next++;
        }
        CHECK_OK(hc_csched_step(s, sink, &R, &eb));
        if (++steps > 200L * N) break;
    }
    CHECKF(again > 0, "the queue bound was never reached");
    int bad = 0, by_mode[3] = {0};
    float worst = 0;
    for (int i = 0; i < N; i++) {
        req *r = &reqs[i];
        const hc_st_tensor *cl = ref_get(ref, r->user, ckey);
        int want_cluster = cl ? (int)((const int32_t *)cl->data)[0] : -3;
        int ok = r->embedded && r->finished && !r->failed && !r->bad_order &&
                 r->cluster == want_cluster && r->U_err < 1e-4f;
        if (r->U_err > worst) worst = r->U_err;
        if (r->mode == HC_CREQ_EMBED) {
            ok = ok && r->n == 0;
        } else {
            const hc_st_tensor *g = ref_get(ref, r->user, r->mode == HC_CREQ_PER_USER
                                                              ? "greedy_user" : "greedy_cluster");
            ok = ok && g && r->n == (int)(g->nbytes / sizeof(int32_t)) &&
                 !memcmp(r->ids, g->data, g->nbytes);
        }
        by_mode[r->mode]++;
        if (!ok && bad++ < 5)
            fprintf(stderr, "request %d (user %d, mode %d): embedded %d finished %d failed %d "
                            "order %d cluster %d (reference %d) U err %g, %d ids\n",
                    i, r->user, r->mode, r->embedded, r->finished, r->failed, r->bad_order,
                    r->cluster, want_cluster, r->U_err, r->n);
    }
    CHECKF(bad == 0, "%d of %d requests differ from the reference", bad, N);
    hc_csched_stats st = hc_csched_get_stats(s);
    printf("%d requests (%d cluster, %d per-user, %d embed), %ld steps, %d AGAIN, prefill %llu "
           "tokens, prefix hits %llu misses %llu, worst U err %g\n",
           N, by_mode[HC_CREQ_CLUSTER], by_mode[HC_CREQ_PER_USER], by_mode[HC_CREQ_EMBED], steps,
           again, (unsigned long long)st.gen.prefill_tokens,
           (unsigned long long)st.gen.prefix_hits, (unsigned long long)st.gen.prefix_misses,
           worst);
    hc_csched_free(s);
    for (int i = 0; i < n_cases; i++) hc_creq_buf_free(&bufs[i]);
    free(bufs);
    free(tok);
    free(reqs);
    free_cases(cs, n_cases);
    hc_st_close(ref);
    hc_creator_free(c);
    hc_backend_free(be);
    return hc_test_finish("test_creator_sched_ref");
}
