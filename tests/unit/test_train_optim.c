/* test_train_optim.c: trainer/optim.c against PyTorch (tests/data/train/adamw.txt, written by
 * tests/reference/make_adamw_fixture.py: torch.optim.AdamW + transformers'
 * get_cosine_schedule_with_warmup + clip_grad_norm_ + gradient accumulation, 5 steps), plus the
 * parameter table's layout rules, sharding and determinism. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "optim.h"
#include "testutil.h"

#define NP 17 /* [3,4] + [5] */

typedef struct {
    double cfg[6];
    float init[NP], final[NP];
    float grad[5][4][NP];
    double norm[5], lr[5];
} fx_case;

/* Reads `n v1..vn` into out (at most cap values); returns n or -1. */
static int read_vals(char **s, double *out, int cap) {
    char *e;
    long n = strtol(*s, &e, 10);
    if (e == *s || n < 0 || n > cap) return -1;
    *s = e;
    for (long i = 0; i < n; i++) {
        out[i] = strtod(*s, &e);
        if (e == *s) return -1;
        *s = e;
    }
    return (int)n;
}

static int parse_fixture(char *text, fx_case *cs, int maxc) {
    int nc = -1;
    double tmp[64];
    for (char *line = strtok(text, "\n"); line; line = strtok(NULL, "\n")) {
        char key[16];
        int off = 0;
        if (sscanf(line, "%15s%n", key, &off) != 1) return -1;
        char *s = line + off;
        if (strcmp(key, "case") == 0) {
            if (++nc >= maxc) return -1;
            memset(&cs[nc], 0, sizeof(cs[nc]));
            continue;
        }
        if (nc < 0) return -1;
        fx_case *c = &cs[nc];
        long a = 0, b = 0;
        char *e;
        if (strcmp(key, "grad") == 0 || strcmp(key, "norm") == 0 || strcmp(key, "lr") == 0) {
            a = strtol(s, &e, 10), s = e;
            if (a < 0 || a >= 5) return -1;
        }
        if (strcmp(key, "grad") == 0) {
            b = strtol(s, &e, 10), s = e;
            if (b < 0 || b >= 4) return -1;
        }
        int n = read_vals(&s, tmp, 64);
        if (n < 0) return -1;
        if (strcmp(key, "cfg") == 0 && n == 6) memcpy(c->cfg, tmp, sizeof(c->cfg));
        else if (strcmp(key, "norm") == 0 && n == 1) c->norm[a] = tmp[0];
        else if (strcmp(key, "lr") == 0 && n == 1) c->lr[a] = tmp[0];
        else if (n == NP) {
            float *dst = strcmp(key, "init") == 0    ? c->init
                         : strcmp(key, "final") == 0 ? c->final
                         : strcmp(key, "grad") == 0  ? c->grad[a][b]
                                                     : NULL;
            if (!dst) return -1;
            for (int i = 0; i < NP; i++) dst[i] = (float)tmp[i];
        } else
            return -1;
    }
    return nc + 1;
}

static void make_table(hc_ptab *t) {
    hc_ptab_init(t);
    int64_t s0[2] = {3, 4}, s1[1] = {5};
    CHECK_OK(hc_ptab_add(t, "a.weight", 2, s0, 0, NULL));
    CHECK_OK(hc_ptab_add(t, "b.weight", 1, s1, 0, NULL));
    CHECK_OK(hc_ptab_alloc(t, NULL));
}

static void run_case(const fx_case *c, float *out_w, double *out_norm, double *out_lr) {
    hc_ptab t;
    make_table(&t);
    hc_adamw_cfg cfg = hc_adamw_default();
    cfg.lr = c->cfg[0];
    cfg.weight_decay = c->cfg[1];
    double warmup = c->cfg[2], clip = c->cfg[4];
    int total = (int)c->cfg[3], accum = (int)c->cfg[5];
    memcpy(t.w, c->init, sizeof(float) * NP);
    for (int s = 0; s < total; s++) {
        hc_grad_zero(&t);
        for (int mb = 0; mb < accum; mb++)
            for (int i = 0; i < NP; i++) t.g[i] += c->grad[s][mb][i];
        if (accum > 1) hc_grad_scale(&t, 1.0f / (float)accum);
        out_norm[s] = hc_clip_grad_norm(&t, clip);
        out_lr[s] = hc_cosine_lr(cfg.lr, s, warmup, total);
        hc_adamw_step_range(&t, &cfg, out_lr[s], s + 1, 0, t.total);
    }
    memcpy(out_w, t.w, sizeof(float) * NP);
    hc_ptab_free(&t);
}

static void test_fixture(const char *dir) {
    char path[1024];
    snprintf(path, sizeof path, "%s/data/train/adamw.txt", dir);
    char *text = hc_test_read_file(path, NULL);
    CHECKF(text != NULL, "cannot read %s", path);
    if (!text) return;
    fx_case cs[4];
    int nc = parse_fixture(text, cs, 4);
    free(text);
    CHECKF(nc == 3, "fixture parse: %d cases", nc);
    for (int k = 0; k < nc; k++) {
        float w[NP];
        double norm[5], lr[5];
        run_case(&cs[k], w, norm, lr);
        double e = hc_test_rel_err(w, cs[k].final, NP);
        CHECKF(e < 1e-6, "case %d: params after 5 steps rel err %.3g", k, e);
        /* the run really moved the parameters (else the check above could not fail) */
        CHECK(hc_test_rel_err(cs[k].init, cs[k].final, NP) > 1e-4);
        for (int s = 0; s < (int)cs[k].cfg[3]; s++) {
            CHECKF(fabs(norm[s] - cs[k].norm[s]) <= 1e-6 * cs[k].norm[s], "case %d step %d norm", k,
                   s);
            CHECKF(fabs(lr[s] - cs[k].lr[s]) <= 1e-7 * cs[k].cfg[0], "case %d step %d lr %.9g vs %.9g",
                   k, s, lr[s], cs[k].lr[s]);
        }
        /* the clipping case really clipped: the same run without clipping ends elsewhere */
        if (cs[k].cfg[4] > 0 && cs[k].norm[0] > cs[k].cfg[4]) {
            fx_case u = cs[k];
            u.cfg[4] = 0;
            float w2[NP];
            run_case(&u, w2, norm, lr);
            CHECK(hc_test_rel_err(w2, cs[k].final, NP) > 1e-4);
        }
    }
}

static void test_table(void) {
    hc_ptab t;
    hc_ptab_init(&t);
    int64_t s[2] = {3, 4}, bad[2] = {3, 0};
    hc_errbuf eb = {{0}};
    CHECK_OK(hc_ptab_add(&t, "x", 2, s, 0, &eb));
    CHECK(hc_ptab_add(&t, "x", 2, s, 0, &eb) == HC_ERR_INVAL && strstr(eb.msg, "twice"));
    CHECK(hc_ptab_add(&t, "y", 2, bad, 0, &eb) == HC_ERR_INVAL);
    CHECK(hc_ptab_add(&t, "y", 0, s, 0, &eb) == HC_ERR_INVAL);
    CHECK(hc_ptab_add(&t, "", 1, s, 0, &eb) == HC_ERR_INVAL);
    CHECK_OK(hc_ptab_add(&t, "y", 1, s, 0, &eb));
    CHECK(t.total == 15 && t.params[1].offset == 12 && hc_ptab_find(&t, "y") == 1);
    CHECK(hc_ptab_find(&t, "z") == -1);
    uint64_t f1 = hc_ptab_fingerprint(&t);
    CHECK_OK(hc_ptab_alloc(&t, &eb));
    CHECK(hc_ptab_add(&t, "z", 1, s, 0, &eb) == HC_ERR_INVAL);
    hc_ptab u;
    hc_ptab_init(&u);
    int64_t s2[2] = {4, 3};
    CHECK_OK(hc_ptab_add(&u, "x", 2, s2, 0, NULL));
    CHECK_OK(hc_ptab_add(&u, "y", 1, s, 0, NULL));
    CHECK(hc_ptab_fingerprint(&u) != f1);
    /* shards tile [0, total) */
    for (int nr = 1; nr <= 7; nr++) {
        size_t prev = 0;
        for (int r = 0; r < nr; r++) {
            size_t lo, hi;
            hc_ptab_shard(&t, r, nr, &lo, &hi);
            CHECK(lo == prev && hi >= lo && hi - lo <= t.total / (size_t)nr + 1);
            prev = hi;
        }
        CHECK(prev == t.total);
    }
    hc_ptab_free(&u);
    hc_ptab_free(&t);
}

/* A step over 3 shards equals the unsharded step bit for bit. */
static void test_sharded_step(void) {
    hc_ptab a, b;
    make_table(&a);
    make_table(&b);
    uint32_t x = 12345;
    for (size_t i = 0; i < a.total; i++) {
        x = x * 1664525u + 1013904223u;
        a.w[i] = b.w[i] = (float)(x >> 8) / 16777216.0f - 0.5f;
        a.g[i] = b.g[i] = (float)(x & 0xffff) / 65536.0f - 0.5f;
    }
    hc_adamw_cfg c = hc_adamw_default();
    for (int s = 1; s <= 3; s++) {
        hc_adamw_step_range(&a, &c, 1e-3, s, 0, a.total);
        for (int r = 0; r < 3; r++) {
            size_t lo, hi;
            hc_ptab_shard(&b, r, 3, &lo, &hi);
            hc_adamw_step_range(&b, &c, 1e-3, s, lo, hi);
        }
    }
    CHECK(memcmp(a.w, b.w, sizeof(float) * a.total) == 0);
    CHECK(memcmp(a.m, b.m, sizeof(float) * a.total) == 0);
    CHECK(memcmp(a.v, b.v, sizeof(float) * a.total) == 0);
    double full = hc_grad_sumsq_range(&a, 0, a.total);
    double parts = hc_grad_sumsq_range(&a, 0, 5) + hc_grad_sumsq_range(&a, 5, a.total);
    CHECK(fabs(full - parts) <= 1e-12 * full);
    hc_ptab_free(&a);
    hc_ptab_free(&b);
}

static void test_schedule(void) {
    /* shape: 0 at start, peak at the end of warmup, half at the middle of the decay, 0 at end */
    CHECK(hc_cosine_lr(1.0, 0, 10, 110) == 0.0);
    CHECK(fabs(hc_cosine_lr(1.0, 5, 10, 110) - 0.5) < 1e-15);
    CHECK(fabs(hc_cosine_lr(1.0, 10, 10, 110) - 1.0) < 1e-15);
    CHECK(fabs(hc_cosine_lr(1.0, 60, 10, 110) - 0.5) < 1e-15);
    CHECK(fabs(hc_cosine_lr(1.0, 110, 10, 110)) < 1e-15);
    CHECK(hc_cosine_lr(1.0, 200, 10, 110) >= 0.0);
    CHECK(fabs(hc_cosine_lr(2.0, 0, 0, 10) - 2.0) < 1e-15); /* no warmup */
}

int main(int argc, char **argv) {
    const char *dir = argc > 1 ? argv[1] : "tests";
    test_table();
    test_schedule();
    test_sharded_step();
    test_fixture(dir);
    return hc_test_finish("test_train_optim");
}
