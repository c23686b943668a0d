/* test_creator_parity.c: the C pipeline against the PyTorch reference of MODEL_SPEC §3–§5
 * (tests/reference/make_creator_fixtures.py), on the demo package tests/data/creator/tiny and the
 * users of tests/data/creator/cases.jsonl:
 *  - item token ids and item vectors (cosine >= 0.99999, max relative error <= 1e-4);
 *  - user vector u and projected U (same tolerances), batched and one user at a time;
 *  - cluster ids under the three assignment rules (ip, cosine, l2);
 *  - creative prompt ids and slot position; greedy title ids in cluster and per-user mode,
 *    all requests together and one at a time;
 *  - the item cache: a warm run gives the same vectors as a cold one and encodes nothing new.
 */
#include <jansson.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "creator/creator.h"
#include "creator/creator_sched.h"
#include "io/safetensors.h"
#include "testutil.h"
#include "creator_cases.h"

#define REL_TOL 1e-4
#define MAX_NEW 24 /* the reference decodes at most 24 tokens (MAX_NEW in make_creator_fixtures.py) */
#define COS_TOL 0.99999

static void compare_vec(const char *what, int user, const float *got, const float *ref, int n) {
    double dot = 0, na = 0, nb = 0;
    for (int i = 0; i < n; i++) {
        dot += (double)got[i] * ref[i];
        na += (double)got[i] * got[i];
        nb += (double)ref[i] * ref[i];
    }
    double cos = dot / (sqrt(na) * sqrt(nb) + 1e-30);
    double rel = hc_test_rel_err(got, ref, (size_t)n);
    CHECKF(cos >= COS_TOL && rel <= REL_TOL, "user %d %s: cosine %.7f, relative error %.3g", user,
           what, cos, rel);
}

static void run_titles(hc_creator *c, user_case *cs, int n, const hc_safetensors *ref,
                       int per_user) {
    const char *key = per_user ? "greedy_user" : "greedy_cluster";
    hc_title_request *all = calloc((size_t)n, sizeof *all);
    for (int i = 0; i < n; i++) {
        hc_title_request *r = &all[i];
        r->history = (hc_history){cs[i].titles, cs[i].lens, cs[i].n};
        r->ad_title = cs[i].ad_title;
        r->ad_title_len = cs[i].ad_title_len;
        r->ad_desc = cs[i].ad_desc;
        r->ad_desc_len = cs[i].ad_desc_len;
        r->per_user = per_user;
        r->sampling = hc_sampler_greedy();
        r->max_new = MAX_NEW;
    }
    hc_errbuf eb = {{0}};
    hc_lm_sched_stats st0 = c->sched ? hc_lm_sched_get_stats(hc_csched_gen(c->sched))
                                     : (hc_lm_sched_stats){0};
    int rc = hc_creator_generate(c, all, n, NULL, NULL, &eb);
    CHECKF(rc == 0, "generate (%s): %s", key, eb.msg);
    for (int i = 0; i < n && rc == 0; i++) {
        const hc_st_tensor *g = ref_get(ref, i, key);
        CHECKF(all[i].status == 0, "user %d: %s", i, all[i].error);
        int same = all[i].n_ids == nelem(g) &&
                   !memcmp(all[i].ids, g->data, sizeof(int32_t) * (size_t)all[i].n_ids);
        CHECKF(same, "user %d %s: %d ids differ from the reference's %lld", i, key, all[i].n_ids,
               (long long)nelem(g));
        CHECKF(all[i].text != NULL, "user %d: no title text", i);
        /* one at a time: the same ids */
        hc_title_request one = all[i];
        one.ids = NULL;
        one.text = NULL;
        rc = hc_creator_generate(c, &one, 1, NULL, NULL, &eb);
        CHECKF(rc == 0 && one.n_ids == all[i].n_ids &&
                   !memcmp(one.ids, all[i].ids, sizeof(int32_t) * (size_t)one.n_ids) &&
                   !strcmp(one.text, all[i].text),
               "user %d %s: alone differs from batched", i, key);
        hc_title_request_clear(&one);
    }
    /* the shared prefix (prompt1, or prompt1 + the cluster's slot) ran once per key: every one of
     * the 2n generations above forked it; per-user mode has a single key */
    hc_lm_sched_stats st1 = hc_lm_sched_get_stats(hc_csched_gen(c->sched));
    int n_keys = 1;
    if (!per_user) {
        n_keys = 0;
        for (int i = 0; i < n; i++) {
            int seen = 0;
            for (int j = 0; j < i; j++) seen |= all[j].cluster == all[i].cluster;
            n_keys += !seen;
        }
    }
    CHECKF(st1.prefix_misses - st0.prefix_misses <= (uint64_t)n_keys &&
               st1.prefix_hits + st1.prefix_misses - st0.prefix_hits - st0.prefix_misses >=
                   (uint64_t)(2 * n),
           "%s: %llu prefix computations, %llu forks for %d generations over %d keys", key,
           (unsigned long long)(st1.prefix_misses - st0.prefix_misses),
           (unsigned long long)(st1.prefix_hits - st0.prefix_hits), 2 * n, n_keys);
    for (int i = 0; i < n; i++) hc_title_request_clear(&all[i]);
    free(all);
}

int main(int argc, char **argv) {
    const char *tests = argc > 1 ? argv[1] : "tests";
    char pkg[1024], refp[1024], casep[1024];
    snprintf(pkg, sizeof pkg, "%s/data/creator/tiny", tests);
    snprintf(refp, sizeof refp, "%s/data/creator/reference.safetensors", tests);
    snprintf(casep, sizeof casep, "%s/data/creator/cases.jsonl", tests);
    hc_backend *be = NULL;
    CHECK_OK(hc_backend_cpu_create(&be, 2));
    hc_errbuf eb = {{0}};
    hc_creator_params p = hc_creator_default_params();
    p.item_cache_entries = 0; /* every vector computed, never looked up */
    hc_creator *c = NULL;
    int rc = hc_creator_load(&c, be, pkg, &p, &eb);
    CHECKF(rc == 0, "load %s: %s", pkg, eb.msg);
    hc_safetensors *ref = NULL;
    CHECK_OK(hc_st_open(&ref, refp, &eb));
    user_case *cs = NULL;
    int n = load_cases(casep, &cs);
    CHECKF(n >= 10, "expected at least 10 cases, got %d", n);
    if (!c || !ref || n <= 0) return hc_test_finish("test_creator_parity");
    const int Hi = c->d_item, Hu = c->d_user, Hc = c->d_creative, L = c->pkg.max_history;

    /* items: tokenization and vectors */
    for (int i = 0; i < n; i++) {
        int keep = cs[i].n < L ? cs[i].n : L, start = cs[i].n - keep;
        const hc_st_tensor *ri = ref_get(ref, i, "items"), *rl = ref_get(ref, i, "item_lens"),
                           *rids = ref_get(ref, i, "item_ids");
        if (!ri || !rl || !rids) continue;
        CHECKF(nelem(ri) == (int64_t)keep * Hi, "user %d: reference has %lld item floats", i,
               (long long)nelem(ri));
        float *v = malloc(sizeof(float) * (size_t)(keep ? keep : 1) * Hi);
        CHECK_OK(hc_creator_embed_items(c, cs[i].titles + start, cs[i].lens + start, keep, v, &eb));
        for (int k = 0; k < keep && nelem(ri) == (int64_t)keep * Hi; k++) {
            char what[32];
            snprintf(what, sizeof what, "item %d", k);
            compare_vec(what, i, v + (size_t)k * Hi, (const float *)ri->data + (size_t)k * Hi, Hi);
        }
        /* token ids of each kept title, as the reference truncated them */
        const int32_t *lens = rl->data, *ids = rids->data;
        int off = 0;
        for (int k = 0; k < keep && k < nelem(rl); k++) {
            int32_t *got = NULL;
            size_t ng = 0;
            CHECK_OK(hc_tokenizer_encode(c->item_tok, NULL, cs[i].titles[start + k],
                                         cs[i].lens[start + k], 0, &got, &ng, &eb));
            if ((int)ng > c->pkg.max_item_tokens) ng = (size_t)c->pkg.max_item_tokens;
            CHECKF((int)ng == lens[k] && (ng == 0 || !memcmp(got, ids + off, sizeof(int32_t) * ng)),
                   "user %d item %d: token ids differ", i, k);
            off += lens[k];
            free(got);
        }
        free(v);
    }

    /* users: all together, then one at a time */
    hc_history *hist = malloc(sizeof *hist * (size_t)n);
    for (int i = 0; i < n; i++) hist[i] = (hc_history){cs[i].titles, cs[i].lens, cs[i].n};
    float *u = malloc(sizeof(float) * (size_t)n * Hu), *U = malloc(sizeof(float) * (size_t)n * Hc);
    float *u1 = malloc(sizeof(float) * Hu), *U1 = malloc(sizeof(float) * Hc);
    CHECK_OK(hc_creator_embed_users(c, hist, n, u, U, &eb));
    for (int i = 0; i < n; i++) {
        const hc_st_tensor *ru = ref_get(ref, i, "user"), *rU = ref_get(ref, i, "projected");
        if (ru) compare_vec("u", i, u + (size_t)i * Hu, ru->data, Hu);
        if (rU) compare_vec("U", i, U + (size_t)i * Hc, rU->data, Hc);
        CHECK_OK(hc_creator_embed_users(c, &hist[i], 1, u1, U1, &eb));
        double e1 = hc_test_rel_err(u1, u + (size_t)i * Hu, (size_t)Hu);
        double e2 = hc_test_rel_err(U1, U + (size_t)i * Hc, (size_t)Hc);
        CHECKF(e1 <= 1e-5 && e2 <= 1e-5, "user %d: alone vs batched differ (%.3g, %.3g)", i, e1, e2);
    }

    /* clusters under every rule */
    float *cent = NULL;
    int k = 0, d = 0;
    CHECK_OK(hc_centroids_load(&cent, &k, &d, c->pkg.centroids, &eb));
    static const char *rule_keys[] = {"cluster_ip", "cluster_cosine", "cluster_l2"};
    for (int r = 0; r < 3 && cent; r++) {
        hc_cluster_index *idx = NULL;
        CHECK_OK(hc_cluster_index_init(&idx, cent, k, d, (hc_assign_rule)r, 1, &eb));
        int32_t *ids = malloc(sizeof(int32_t) * (size_t)n);
        CHECK_OK(hc_cluster_assign(idx, U, n, ids, NULL, &eb));
        for (int i = 0; i < n; i++) {
            const hc_st_tensor *t = ref_get(ref, i, rule_keys[r]);
            if (t) CHECKF(ids[i] == *(const int32_t *)t->data, "user %d %s: %d, reference %d", i,
                          rule_keys[r], ids[i], *(const int32_t *)t->data);
        }
        free(ids);
        hc_cluster_index_free(idx);
    }
    free(cent);

    /* prompts */
    for (int i = 0; i < n; i++) {
        int32_t *ids = NULL;
        int np = 0, slot = -1;
        CHECK_OK(hc_creator_prompt(c, cs[i].ad_title, cs[i].ad_title_len, cs[i].ad_desc,
                                   cs[i].ad_desc_len, &ids, &np, &slot, &eb));
        const hc_st_tensor *rp = ref_get(ref, i, "prompt_ids"), *rs = ref_get(ref, i, "slot_pos");
        if (rp && rs && ids)
            CHECKF(np == nelem(rp) && !memcmp(ids, rp->data, sizeof(int32_t) * (size_t)np) &&
                       slot == *(const int32_t *)rs->data,
                   "user %d: creative prompt differs (%d ids vs %lld)", i, np,
                   (long long)nelem(rp));
        free(ids);
    }

    /* titles */
    run_titles(c, cs, n, ref, 0);
    run_titles(c, cs, n, ref, 1);

    /* the item cache: cold run fills it, warm run encodes nothing and gives identical vectors */
    hc_creator *cc = NULL;
    p.item_cache_entries = 4096;
    p.load_creative = 0;
    CHECK_OK(hc_creator_load(&cc, be, pkg, &p, &eb));
    if (cc) {
        float *uc = malloc(sizeof(float) * (size_t)n * Hu), *uw = malloc(sizeof(float) * (size_t)n * Hu);
        CHECK_OK(hc_creator_embed_users(cc, hist, n, uc, NULL, &eb));
        uint64_t encoded = cc->stats.items_encoded;
        CHECK(encoded > 0 && encoded < cc->stats.items_seen); /* duplicates are encoded once */
        CHECK_OK(hc_creator_embed_users(cc, hist, n, uw, NULL, &eb));
        CHECK(cc->stats.items_encoded == encoded);
        CHECK(!memcmp(uc, uw, sizeof(float) * (size_t)n * Hu));
        for (int i = 0; i < n; i++)
            CHECKF(hc_test_rel_err(uc + (size_t)i * Hu, u + (size_t)i * Hu, (size_t)Hu) <= 1e-5,
                   "user %d: cached vs uncached differ", i);
        free(uc);
        free(uw);
        hc_creator_free(cc);
    }

    free_cases(cs, n);
    free(hist);
    free(u);
    free(U);
    free(u1);
    free(U1);
    hc_st_close(ref);
    hc_creator_free(c);
    hc_backend_free(be);
    return hc_test_finish("test_creator_parity");
}
