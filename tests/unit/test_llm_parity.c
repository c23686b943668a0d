/* test_llm_parity.c: the C engine against transformers, on every fixture in tests/data/llm/
 * (written by tests/reference/make_llm_fixtures.py).
 *
 * For each fixture and each in-memory weight mode (as stored, and widened to f32):
 *  - stateless packed forward: cases "single", "packed" (3 segments, right-aligned positions) and
 *    "embd" (injected vectors): final-norm hidden states and logits within 1e-4 relative error;
 *  - the same "single" and "packed" cases through the paged KV cache, fed in uneven chunks
 *    (prefill part, then token by token), with a small block size so sequences span blocks;
 *  - 32-token greedy continuation identical to transformers';
 *  - batched == unbatched: several prompts generated together (greedy and seeded sampling) give
 *    exactly the tokens each gives alone.
 */
#include <dirent.h>
#include <stdlib.h>
#include <string.h>

#include "model/generate.h"
#include "model/llm.h"
#include "io/safetensors.h"
#include "testutil.h"

#define TOL 1e-4

typedef struct ref_case {
    int n;
    const int32_t *ids, *pos, *seg, *is_embd;
    const float *embd, *hidden, *logits;
} ref_case;

static const void *find(const hc_safetensors *st, const char *cs, const char *key, hc_dtype dt,
                        int64_t rows, int64_t cols) {
    char name[128];
    snprintf(name, sizeof name, "%s.%s", cs, key);
    const hc_st_tensor *t = hc_st_find(st, name);
    if (!t) return NULL;
    int64_t ne = 1;
    for (int i = 0; i < t->n_dims; i++) ne *= t->shape[i];
    CHECKF(t->dtype == dt && ne == rows * cols, "%s: unexpected dtype/shape", name);
    return t->data;
}

static int load_case(const hc_safetensors *st, const char *cs, int E, int V, ref_case *rc) {
    char name[128];
    snprintf(name, sizeof name, "%s.ids", cs);
    const hc_st_tensor *t = hc_st_find(st, name);
    if (!t) return -1;
    rc->n = (int)t->shape[0];
    rc->ids = t->data;
    rc->pos = find(st, cs, "pos", HC_DTYPE_I32, rc->n, 1);
    rc->seg = find(st, cs, "seg", HC_DTYPE_I32, rc->n, 1);
    rc->is_embd = find(st, cs, "is_embd", HC_DTYPE_I32, rc->n, 1);
    rc->embd = find(st, cs, "embd", HC_DTYPE_F32, rc->n, E);
    rc->hidden = find(st, cs, "hidden", HC_DTYPE_F32, rc->n, E);
    rc->logits = find(st, cs, "logits", HC_DTYPE_F32, rc->n, V);
    CHECKF(rc->pos && rc->seg && rc->hidden && rc->logits, "case %s incomplete", cs);
    return rc->pos && rc->seg && rc->hidden && rc->logits ? 0 : -1;
}

static void compare(const char *what, const char *fx, const float *got, const float *ref, size_t n) {
    double e = hc_test_rel_err(got, ref, n);
    CHECKF(e <= TOL, "%s %s: relative error %.3g > %g", fx, what, e, TOL);
}

/* stateless: the whole case as one packed batch */
static void run_stateless(hc_llm *m, const char *fx, const char *cs, const ref_case *c) {
    const int E = m->cfg.hidden_size, V = m->cfg.vocab_size, n = c->n;
    int32_t *out_idx = malloc(sizeof(int32_t) * (size_t)n), *inj_idx = malloc(sizeof(int32_t) * (size_t)n);
    float *inj = malloc(sizeof(float) * (size_t)n * E);
    int n_inj = 0;
    float *hid = malloc(sizeof(float) * (size_t)n * E), *lg = malloc(sizeof(float) * (size_t)n * V);
    for (int i = 0; i < n; i++) {
        out_idx[i] = i;
        if (c->is_embd && c->is_embd[i]) {
            inj_idx[n_inj] = i;
            memcpy(inj + (size_t)n_inj++ * E, c->embd + (size_t)i * E, sizeof(float) * (size_t)E);
        }
    }
    CHECKF(strcmp(cs, "embd") != 0 || n_inj == 2, "%s %s: expected 2 injected rows", fx, cs);
    hc_batch b = {.n_tokens = n, .token = c->ids, .n_inject = n_inj, .inject_idx = inj_idx,
                  .inject = inj, .pos = c->pos, .seg = c->seg, .n_out = n, .out_idx = out_idx};
    hc_errbuf eb = {{0}};
    int rc = hc_llm_forward(m, &b, NULL, NULL, hid, lg, &eb);
    CHECKF(rc == 0, "%s %s: forward failed: %s", fx, cs, eb.msg);
    if (rc == 0) {
        char what[64];
        snprintf(what, sizeof what, "%s hidden", cs);
        compare(what, fx, hid, c->hidden, (size_t)n * E);
        snprintf(what, sizeof what, "%s logits", cs);
        compare(what, fx, lg, c->logits, (size_t)n * V);
    }
    free(out_idx);
    free(inj_idx);
    free(inj);
    free(hid);
    free(lg);
}

/* cached: each segment is its own KV sequence; tokens go in chunks of 5, 1, 1, ... so the
 * prefill path and the decode path both see every segment. */
static void run_cached(hc_llm *m, const char *fx, const char *cs, const ref_case *c) {
    const int V = m->cfg.vocab_size, n = c->n;
    hc_kv_cache *kv = NULL;
    CHECK_OK(hc_llm_kv_create(m, &kv, 4, 64));
    if (!kv) return;
    int n_seg = c->seg[n - 1] + 1;
    int *seq = malloc(sizeof(int) * (size_t)n_seg);
    for (int s = 0; s < n_seg; s++) CHECK_OK(hc_kv_seq_new(kv, &seq[s]));
    float *lg = malloc(sizeof(float) * (size_t)n * V);
    hc_errbuf eb = {{0}};
    int seg_start = 0;
    for (int s = 0; s < n_seg; s++) {
        int seg_end = seg_start;
        while (seg_end < n && c->seg[seg_end] == s) seg_end++;
        for (int t = seg_start; t < seg_end;) {
            int chunk = t == seg_start ? 5 : 1;
            if (t + chunk > seg_end) chunk = seg_end - t;
            int32_t seg0[8] = {0}, idx[8];
            for (int i = 0; i < chunk; i++) idx[i] = i;
            hc_batch b = {.n_tokens = chunk, .token = c->ids + t, .pos = c->pos + t, .seg = seg0,
                          .n_out = chunk, .out_idx = idx};
            int rc = hc_llm_forward(m, &b, kv, &seq[s], NULL, lg + (size_t)t * V, &eb);
            CHECKF(rc == 0, "%s %s cached: %s", fx, cs, eb.msg);
            if (rc) goto out;
            t += chunk;
        }
        seg_start = seg_end;
    }
    char what[64];
    snprintf(what, sizeof what, "%s logits (KV cache)", cs);
    compare(what, fx, lg, c->logits, (size_t)n * V);
out:
    for (int s = 0; s < n_seg; s++) hc_kv_seq_free(kv, seq[s]);
    CHECK(hc_kv_n_free_blocks(kv) == 64);
    free(seq);
    free(lg);
    hc_kv_free(kv);
}

static void run_greedy(hc_llm *m, const char *fx, const hc_safetensors *ref) {
    const hc_st_tensor *p = hc_st_find(ref, "greedy.prompt"), *g = hc_st_find(ref, "greedy.tokens");
    CHECKF(p && g, "%s: greedy case missing", fx);
    if (!p || !g) return;
    int np = (int)p->shape[0], ng = (int)g->shape[0];
    int32_t *out = malloc(sizeof(int32_t) * (size_t)ng);
    hc_gen_seq s = {.prompt = p->data, .n_prompt = np, .sampling = hc_sampler_greedy(),
                    .max_new = ng, .out = out};
    hc_errbuf eb = {{0}};
    int rc = hc_generate(m, NULL, &s, 1, NULL, NULL, &eb);
    CHECKF(rc == 0, "%s greedy: %s", fx, eb.msg);
    CHECKF(s.n_out == ng, "%s greedy: %d tokens, want %d", fx, s.n_out, ng);
    int same = rc == 0 && s.n_out == ng && !memcmp(out, g->data, sizeof(int32_t) * (size_t)ng);
    CHECKF(same, "%s greedy: tokens differ from transformers", fx);
    free(out);
}

/* several prompts of different lengths, generated together and one by one */
static void run_batched_vs_single(hc_llm *m, const char *fx) {
    enum { NS = 4, MAXNEW = 24 };
    int32_t prompts[NS][12];
    int lens[NS] = {3, 12, 7, 1};
    for (int i = 0; i < NS; i++)
        for (int j = 0; j < lens[i]; j++)
            prompts[i][j] = (int32_t)((i * 37 + j * 11 + 5) % m->cfg.vocab_size);
    for (int mode = 0; mode < 2; mode++) {
        hc_gen_seq batch[NS], one;
        int32_t out_b[NS][MAXNEW], out_1[MAXNEW];
        for (int i = 0; i < NS; i++) {
            hc_gen_seq s = {.prompt = prompts[i], .n_prompt = lens[i], .max_new = MAXNEW - i,
                            .out = out_b[i]};
            s.sampling = hc_sampler_greedy();
            if (mode == 1) {
                hc_sampler_params sp = {0, 0.9f, 20, 0.9f, (uint64_t)(1000 + i)};
                s.sampling = sp;
            }
            batch[i] = s;
        }
        hc_errbuf eb = {{0}};
        int rc = hc_generate(m, NULL, batch, NS, NULL, NULL, &eb);
        CHECKF(rc == 0, "%s batched: %s", fx, eb.msg);
        for (int i = 0; i < NS && rc == 0; i++) {
            one = batch[i];
            one.out = out_1;
            rc = hc_generate(m, NULL, &one, 1, NULL, NULL, &eb);
            CHECKF(rc == 0, "%s single: %s", fx, eb.msg);
            int same = one.n_out == batch[i].n_out &&
                       !memcmp(out_1, out_b[i], sizeof(int32_t) * (size_t)one.n_out);
            CHECKF(same, "%s %s: prompt %d decoded in a batch differs from alone", fx,
                   mode ? "sampled" : "greedy", i);
        }
    }
}

static void run_fixture(hc_backend *be, const char *root, const char *fx) {
    char dir[1400], refp[1500];
    snprintf(dir, sizeof dir, "%s/%s", root, fx);
    snprintf(refp, sizeof refp, "%s/reference.safetensors", dir);
    hc_errbuf eb = {{0}};
    hc_safetensors *ref = NULL;
    int rc = hc_st_open(&ref, refp, &eb);
    CHECKF(rc == 0, "%s: %s", fx, eb.msg);
    if (rc) return;
    for (int mode = 0; mode < 2; mode++) {
        hc_llm_params p = hc_llm_default_params();
        if (mode) p.weight_dtype = HC_DTYPE_F32;
        hc_llm *m = NULL;
        rc = hc_llm_load(&m, be, dir, &p, &eb);
        CHECKF(rc == 0, "%s: load: %s", fx, eb.msg);
        if (rc) continue;
        const int E = m->cfg.hidden_size, V = m->cfg.vocab_size;
        static const char *cases[] = {"single", "packed", "embd"};
        for (size_t i = 0; i < 3; i++) {
            ref_case c = {0};
            int have = load_case(ref, cases[i], E, V, &c) == 0;
            CHECKF(have, "%s: case %s missing", fx, cases[i]);
            if (!have) continue;
            run_stateless(m, fx, cases[i], &c);
            if (!c.embd) run_cached(m, fx, cases[i], &c);
        }
        run_greedy(m, fx, ref);
        if (mode == 0) run_batched_vs_single(m, fx);
        hc_llm_free(m);
    }
    hc_st_close(ref);
}

static int cmp_str(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

int main(int argc, char **argv) {
    const char *tests = argc > 1 ? argv[1] : "tests";
    char root[1024];
    snprintf(root, sizeof root, "%s/data/llm", tests);
    hc_backend *be = NULL;
    CHECK_OK(hc_backend_cpu_create(&be, 2));
    DIR *d = opendir(root);
    CHECKF(d != NULL, "cannot open %s", root);
    char *names[64];
    int n = 0;
    struct dirent *e;
    while (d && (e = readdir(d)) && n < 64)
        if (e->d_name[0] != '.') names[n++] = strdup(e->d_name);
    if (d) closedir(d);
    qsort(names, (size_t)n, sizeof *names, cmp_str);
    CHECKF(n >= 5, "expected at least 5 fixtures, found %d", n);
    for (int i = 0; i < n; i++) {
        int before = hc_test_failures;
        run_fixture(be, root, names[i]);
        printf("%-24s %s\n", names[i], hc_test_failures == before ? "ok" : "FAILED");
        free(names[i]);
    }
    hc_backend_free(be);
    return hc_test_finish("test_llm_parity");
}
