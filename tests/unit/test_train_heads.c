/* test_train_heads: the trainer's loss heads (trainer/heads.h) against PyTorch autograd.
 *
 * Fixtures tests/data/train/heads_{cls,align,recon,nextitem}.safetensors are written by
 * tests/reference/make_train_heads_fixture.py (float64 torch over the tiny package
 * tests/data/creator/tiny: its projectors, towers, align_temp, dec_emb_tokens and its creative
 * Qwen3 as the decoder). For each head:
 *   - the loss within 1e-5 relative and every stored gradient (inputs, head parameters, decoder
 *     parameters as a strided sample + the full norm + the embedding rows of the ids used) within
 *     1e-4 relative, norm-wise per tensor; the worst is printed;
 *   - central finite differences of the C loss itself on a few coordinates of inputs and
 *     parameters (fewer under HC_UNDER_VALGRIND=1);
 *   - weight scales the gradients, backward == 0 accumulates nothing, the in-place clamps;
 *   - bad inputs: n = 1 for cls/align, a bad negative, no room for the recon profile, missing or
 *     misshaped parameters (a dim-16 cls_tower does not fit the tiny package's towers'
 *     output 64) are clear errors.
 * Plus the negative picker: deterministic for a seed, distinct, never the row itself, uniform. */
#include "heads.h"

#include "io/hfconfig.h"
#include "io/safetensors.h"
#include "testutil.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int under_valgrind(void) {
    const char *v = getenv("HC_UNDER_VALGRIND");
    return v && v[0] == '1';
}

static double rel_norm(const float *a, const float *b, size_t n) {
    double d = 0.0, r = 0.0;
    for (size_t i = 0; i < n; i++) {
        d += ((double)a[i] - b[i]) * ((double)a[i] - b[i]);
        r += (double)b[i] * b[i];
    }
    return sqrt(d) / (sqrt(r) > 1e-30 ? sqrt(r) : 1e-30);
}

/* the same with a floor under the reference norm (a tensor whose gradient is nearly 0) */
static double rel_norm_floor(const float *a, const float *b, size_t n, double floor) {
    double d = 0.0, r = 0.0;
    for (size_t i = 0; i < n; i++) {
        d += ((double)a[i] - b[i]) * ((double)a[i] - b[i]);
        r += (double)b[i] * b[i];
    }
    return sqrt(d) / (sqrt(r) > floor ? sqrt(r) : floor);
}

static size_t numel_of(const hc_st_tensor *t) {
    size_t n = 1;
    for (int i = 0; i < t->n_dims; i++) n *= (size_t)t->shape[i];
    return n;
}

/* a fixture tensor copied out (any alignment); n == 0: whatever size it has (*n_out) */
static void *copy_ref(const hc_safetensors *st, const char *name, hc_dtype dt, size_t n,
                      size_t *n_out) {
    const hc_st_tensor *t = hc_st_find(st, name);
    CHECKF(t != NULL, "fixture lacks %s", name);
    size_t ne = t ? numel_of(t) : 0;
    int ok = t && t->dtype == dt && (n == 0 || ne == n);
    CHECKF(!t || ok, "fixture %s: dtype/size mismatch (%zu elements, expected %zu)", name, ne, n);
    size_t m = n ? n : ne;
    void *q = calloc(m ? m : 1, 4);
    if (ok) memcpy(q, t->data, 4 * m);
    if (n_out) *n_out = ok ? m : 0;
    return q;
}

static float *ptr(hc_ptab *t, const char *name, int grad) {
    int i = hc_ptab_find(t, name);
    CHECKF(i >= 0, "table lacks %s", name);
    if (i < 0) return NULL;
    return (grad ? t->g : t->w) + t->params[i].offset;
}

/* worst relative error: of the head under test (reset per head) and over all heads */
static double worst_err = 0.0, all_err = 0.0;
static char worst_name[200], all_name[200];
static void track(const char *head, const char *name, double e) {
    if (e > worst_err) {
        worst_err = e;
        snprintf(worst_name, sizeof worst_name, "%s %s", head, name);
    }
    if (e > all_err) {
        all_err = e;
        snprintf(all_name, sizeof all_name, "%s %s", head, name);
    }
}

/* compare the table's gradient of `name` (or a buffer) with the fixture's grad.<name> */
static double cmp_grad(const char *head, const hc_safetensors *ref, const char *rname,
                       const float *got, size_t n) {
    float *r = copy_ref(ref, rname, HC_DTYPE_F32, n, NULL);
    double e = rel_norm_floor(got, r, n, 1e-6);
    CHECKF(e <= 1e-4, "%s: %s rel err %.3g", head, rname, e);
    track(head, rname, e);
    free(r);
    return e;
}

/* ---- the table: the tiny package's heads + decoder ------------------------------------------- */

typedef struct env {
    hc_ptab t;
    hc_tmodel *dec;
    hc_safetensors *pkg;
    hc_llm_config cfg;
} env;

/* Heads from the package (cls_tower.* from `cls` instead when given), the next-item scale, the
 * creative LLM as decoder under "creative_llm.". */
static int env_make(env *x, const char *tests, const hc_safetensors *cls) {
    char path[1200];
    hc_errbuf eb = {{0}};
    memset(x, 0, sizeof *x);
    hc_ptab_init(&x->t);
    snprintf(path, sizeof path, "%s/data/creator/tiny/model.safetensors", tests);
    int rc = hc_st_open(&x->pkg, path, &eb);
    snprintf(path, sizeof path, "%s/data/creator/tiny/creative_llm", tests);
    if (!rc) rc = hc_hfconfig_load(&x->cfg, path, &eb);
    CHECKF(rc == 0, "package: %s", eb.msg);
    if (rc) return rc;
    for (int pass = 0; pass < 2 && !rc; pass++) {
        const hc_safetensors *src = pass ? cls : x->pkg;
        if (!src) continue;
        for (size_t i = 0; i < hc_st_count(src) && !rc; i++) {
            const hc_st_tensor *T = hc_st_get(src, i);
            int is_cls = !strncmp(T->name, "cls_tower.", 10);
            if (!strncmp(T->name, "item_llm.", 9) || !strncmp(T->name, "user_llm.", 9) ||
                !strncmp(T->name, "creative_llm.", 13) || (pass == 0 && cls && is_cls) ||
                (pass == 1 && !is_cls))
                continue;
            int64_t one = 1;
            rc = hc_ptab_add(&x->t, T->name, T->n_dims ? T->n_dims : 1,
                             T->n_dims ? T->shape : &one, T->dtype, &eb);
        }
    }
    if (!rc) rc = hc_nextitem_add_param(&x->t, &eb);
    if (!rc) rc = hc_tmodel_add_params(&x->dec, &x->cfg, &x->t, "creative_llm.", 1, &eb);
    if (!rc) rc = hc_ptab_alloc(&x->t, &eb);
    if (!rc) rc = hc_tmodel_bind(x->dec, &x->t, &eb);
    if (!rc) rc = hc_tmodel_load(x->dec, x->pkg, "creative_llm.", &eb);
    if (!rc) rc = hc_nextitem_init_param(&x->t, &eb);
    for (int p = 0; p < x->t.n && !rc; p++) {
        const hc_param *P = &x->t.params[p];
        if (!strncmp(P->name, "creative_llm.", 13) || !strcmp(P->name, HC_NEXTITEM_SCALE_NAME))
            continue;
        const hc_st_tensor *T = hc_st_find(!strncmp(P->name, "cls_tower.", 10) && cls ? cls
                                           : x->pkg, P->name);
        CHECK(T && T->dtype == HC_DTYPE_F32 && numel_of(T) == P->numel);
        if (T && T->dtype == HC_DTYPE_F32 && numel_of(T) == P->numel)
            memcpy(x->t.w + P->offset, T->data, 4 * P->numel);
    }
    CHECKF(rc == 0, "table setup: %s", eb.msg);
    return rc;
}

static void env_free(env *x) {
    hc_tmodel_free(x->dec);
    hc_ptab_free(&x->t);
    hc_st_close(x->pkg);
}

static int all_zero(const float *g, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (g[i] != 0.0f) return 0;
    return 1;
}

/* Decoder gradients against the fixture's gsub/gnorm/gemb (see the fixture script). */
static void cmp_decoder(const char *head, env *x, const hc_safetensors *ref) {
    for (int p = 0; p < x->t.n; p++) {
        const hc_param *P = &x->t.params[p];
        if (strncmp(P->name, "creative_llm.", 13)) continue;
        const float *g = x->t.g + P->offset;
        size_t stride = P->numel / 97 > 1 ? P->numel / 97 : 1, m = (P->numel + stride - 1) / stride;
        float *sub = malloc(sizeof(float) * m);
        for (size_t k = 0; k < m; k++) sub[k] = g[k * stride];
        char name[HC_PTAB_NAME_MAX + 16];
        snprintf(name, sizeof name, "gsub.%s", P->name);
        cmp_grad(head, ref, name, sub, m);
        snprintf(name, sizeof name, "gnorm.%s", P->name);
        float *nr = copy_ref(ref, name, HC_DTYPE_F32, 1, NULL);
        double s = 0.0;
        for (size_t i = 0; i < P->numel; i++) s += (double)g[i] * g[i];
        double e = nr[0] > 0 ? fabs(sqrt(s) - nr[0]) / nr[0] : sqrt(s);
        CHECKF(nr[0] > 0 ? e <= 1e-4 : s == 0.0, "%s: %s: |grad| %.8g, torch %.8g", head, name,
               sqrt(s), (double)nr[0]);
        track(head, name, nr[0] > 0 ? e : 0.0);
        free(nr);
        free(sub);
    }
    size_t n_ids = 0;
    int32_t *ids = copy_ref(ref, "gemb.ids", HC_DTYPE_I32, 0, &n_ids);
    const int C = x->cfg.hidden_size;
    float *rows = copy_ref(ref, "gemb.rows", HC_DTYPE_F32, n_ids * C, NULL);
    float *got = malloc(sizeof(float) * (n_ids * C + 1));
    const float *ge = ptr(&x->t, "creative_llm.model.embed_tokens.weight", 1);
    for (size_t i = 0; ge && i < n_ids; i++)
        memcpy(got + i * C, ge + (size_t)ids[i] * C, sizeof(float) * C);
    double e = rel_norm(got, rows, n_ids * C);
    CHECKF(e <= 1e-4 && n_ids > 0, "%s: embedding rows rel err %.3g (%zu ids)", head, e, n_ids);
    track(head, "gemb.rows", e);
    free(ids), free(rows), free(got);
}

/* ---- finite differences ------------------------------------------------------------------------ */

typedef double (*loss_fn)(void *ctx);

/* central difference of f at *x against the analytic gradient `an` */
static double fd_floor = 2e-5; /* absolute slack: the decoder heads' f32 loss is noisier */
static void fd_check(const char *head, const char *what, loss_fn f, void *ctx, float *x,
                     double an, double h) {
    float x0 = *x;
    *x = x0 + (float)h;
    double lp = f(ctx);
    *x = x0 - (float)h;
    double lm = f(ctx);
    *x = x0;
    double fd = (lp - lm) / (2.0 * h);
    double tol = 3e-2 * fabs(an) + fd_floor;
    CHECKF(fabs(fd - an) <= tol, "%s: finite difference of %s: %.6g, analytic %.6g", head, what,
           fd, an);
}

static uint64_t rs = 0x9E3779B97F4A7C15ull;
static uint32_t urand(uint32_t n) {
    rs ^= rs << 13;
    rs ^= rs >> 7;
    rs ^= rs << 17;
    return (uint32_t)((rs >> 20) % n);
}

/* ---- picker ------------------------------------------------------------------------------------ */

static void test_picker(void) {
    hc_errbuf eb = {{0}};
    CHECK(hc_cls_num_negatives(6, 8) == 5);
    CHECK(hc_cls_num_negatives(20, 8) == 8);
    CHECK(hc_cls_num_negatives(1, 8) == 0);
    enum { N = 7, K = 4, REP = 3000 };
    int32_t a[N * K], b[N * K];
    uint64_t s1 = 42, s2 = 42;
    CHECK_OK(hc_cls_pick_negatives(&s1, N, K, a, &eb));
    CHECK_OK(hc_cls_pick_negatives(&s2, N, K, b, &eb));
    CHECK(!memcmp(a, b, sizeof a) && s1 == s2 && s1 != 42);
    int ok = 1;
    for (int i = 0; i < N; i++)
        for (int j = 0; j < K; j++) {
            int v = a[i * K + j];
            ok &= v >= 0 && v < N && v != i;
            for (int l = 0; l < j; l++) ok &= a[i * K + l] != v;
        }
    CHECK(ok);
    CHECK_OK(hc_cls_pick_negatives(&s1, N, K, b, &eb)); /* the state moved on: new draws */
    CHECK(memcmp(a, b, sizeof a) != 0);
    /* uniform: every other row equally often, at every slot */
    static int cnt[N][N];
    memset(cnt, 0, sizeof cnt);
    uint64_t s = 7;
    ok = 1;
    for (int r = 0; r < REP; r++) {
        hc_cls_pick_negatives(&s, N, K, a, NULL);
        for (int i = 0; i < N; i++)
            for (int j = 0; j < K; j++) {
                cnt[i][a[i * K + j]]++;
                for (int l = 0; l < j; l++) ok &= a[i * K + l] != a[i * K + j];
                ok &= a[i * K + j] != i;
            }
    }
    CHECK(ok);
    double expect = (double)REP * K / (N - 1), worst = 0.0;
    for (int i = 0; i < N; i++)
        for (int j = 0; j < N; j++) {
            if (i == j) {
                CHECK(cnt[i][j] == 0);
                continue;
            }
            double d = fabs(cnt[i][j] - expect) / expect;
            worst = d > worst ? d : worst;
        }
    CHECKF(worst < 0.08, "picker: a count is %.1f%% off uniform", 100 * worst);
    CHECK(hc_cls_pick_negatives(&s, 1, 1, a, &eb) == HC_ERR_INVAL && strstr(eb.msg, "at least 2"));
    CHECK(hc_cls_pick_negatives(&s, N, N, a, &eb) == HC_ERR_INVAL);
    CHECK(hc_cls_pick_negatives(&s, N, 0, a, &eb) == HC_ERR_INVAL);
    printf("  picker: deterministic, distinct, never self; %d draws: worst count %.1f%% off "
           "uniform\n", REP, 100 * worst);
}

/* ---- cls --------------------------------------------------------------------------------------- */

typedef struct cls_ctx {
    hc_ptab *t;
    float *U, *E;
    int32_t *neg;
    int n, k;
} cls_ctx;

static double cls_eval(void *p) {
    cls_ctx *c = p;
    double l = NAN;
    hc_cls_loss(c->t, NULL, c->U, c->E, c->n, c->neg, c->k, 1.0f, 0, NULL, NULL, &l, NULL);
    return l;
}

static void test_cls(const char *tests) {
    char path[1200];
    snprintf(path, sizeof path, "%s/data/train/heads_cls.safetensors", tests);
    hc_errbuf eb = {{0}};
    hc_safetensors *ref = NULL;
    int rc = hc_st_open(&ref, path, &eb);
    CHECKF(rc == 0, "cls fixture: %s", eb.msg);
    env x;
    if (rc || env_make(&x, tests, ref)) {
        hc_st_close(ref);
        return;
    }
    const hc_st_tensor *tn = hc_st_find(ref, "input.neg");
    const int N = tn ? (int)tn->shape[0] : 0, K = tn ? (int)tn->shape[1] : 0;
    const int HC = x.cfg.hidden_size, HI = (int)hc_st_find(x.pkg, "item_tower.weight")->shape[1];
    float *U = copy_ref(ref, "input.U", HC_DTYPE_F32, (size_t)N * HC, NULL);
    float *E = copy_ref(ref, "input.e_ad", HC_DTYPE_F32, (size_t)N * HI, NULL);
    int32_t *neg = copy_ref(ref, "input.neg", HC_DTYPE_I32, (size_t)N * K, NULL);
    float *lref = copy_ref(ref, "loss", HC_DTYPE_F32, 1, NULL);
    float *dU = calloc((size_t)N * HC, sizeof(float)), *dE = calloc((size_t)N * HI, sizeof(float));
    double loss = NAN;
    worst_err = 0.0;
    hc_grad_zero(&x.t);
    CHECK_OK(rc = hc_cls_loss(&x.t, NULL, U, E, N, neg, K, 1.0f, 1, dU, dE, &loss, &eb));
    CHECKF(rc == 0, "cls: %s", eb.msg);
    CHECKF(fabs(loss - lref[0]) <= 1e-5 * fabs(lref[0]), "cls loss %.8g, torch %.8g", loss,
           (double)lref[0]);
    cmp_grad("cls", ref, "grad.U", dU, (size_t)N * HC);
    cmp_grad("cls", ref, "grad.e_ad", dE, (size_t)N * HI);
    int n_par = 0;
    for (int p = 0; p < x.t.n; p++) {
        const hc_param *P = &x.t.params[p];
        if (strncmp(P->name, "cls_tower.", 10) && strcmp(P->name, "user_tower.weight") &&
            strcmp(P->name, "item_tower.weight")) {
            CHECKF(all_zero(x.t.g + P->offset, P->numel), "cls touched the gradient of %s",
                   P->name);
            continue;
        }
        char name[HC_PTAB_NAME_MAX + 8];
        snprintf(name, sizeof name, "grad.%s", P->name);
        n_par++;
        if (strstr(P->name, "token_forward.net.3.bias")) {
            /* adds one constant to every channel of a token, which the next LayerNorm removes:
             * the exact gradient is 0, both sides hold rounding noise only */
            float *r = copy_ref(ref, name, HC_DTYPE_F32, P->numel, NULL);
            float mc = 0.0f, mr = 0.0f;
            for (size_t i = 0; i < P->numel; i++) {
                mc = fmaxf(mc, fabsf(x.t.g[P->offset + i]));
                mr = fmaxf(mr, fabsf(r[i]));
            }
            CHECKF(mc <= 1e-7f && mr <= 1e-12f, "cls: %s should be 0: %.3g (torch %.3g)", name,
                   (double)mc, (double)mr);
            free(r);
            continue;
        }
        cmp_grad("cls", ref, name, x.t.g + P->offset, P->numel);
    }
    CHECK(n_par == 2 + 2 * 12 + 4);
    printf("  cls: N=%d K=%d loss %.7f (torch %.7f), %d parameter gradients + dU, de_ad: worst "
           "rel err %.2e (%s)\n", N, K, loss, (double)lref[0], n_par, worst_err, worst_name);
    /* the score function: the positive pairs' logits */
    float *sref = copy_ref(ref, "score", HC_DTYPE_F32, (size_t)N, NULL), sc[64];
    CHECK_OK(hc_match_score(&x.t, U, E, N, sc, &eb));
    double es = rel_norm(sc, sref, (size_t)N);
    CHECKF(es <= 1e-5, "match score rel err %.3g", es);
    /* weight scales, backward == 0 accumulates nothing */
    float *g1 = malloc(sizeof(float) * x.t.total);
    memcpy(g1, x.t.g, sizeof(float) * x.t.total);
    hc_grad_zero(&x.t);
    double l2 = NAN;
    CHECK_OK(hc_cls_loss(&x.t, NULL, U, E, N, neg, K, 1.0f, 0, NULL, NULL, &l2, &eb));
    CHECK(l2 == loss && all_zero(x.t.g, x.t.total));
    CHECK_OK(hc_cls_loss(&x.t, NULL, U, E, N, neg, K, 0.25f, 1, NULL, NULL, &l2, &eb));
    for (size_t i = 0; i < x.t.total; i++) g1[i] *= 0.25f;
    CHECK(rel_norm(x.t.g, g1, x.t.total) <= 1e-6 && l2 == loss);
    /* finite differences */
    cls_ctx c = {&x.t, U, E, neg, N, K};
    const char *pn[] = {"cls_tower.mixer_blocks.1.token_forward.net.0.weight",
                        "cls_tower.mixer_blocks.0.channel_mix.1.net.0.bias",
                        "cls_tower.mixer_blocks.0.token_norm.weight", "cls_tower.layer_norm.bias",
                        "cls_tower.mlp_head.0.weight", "user_tower.weight", "item_tower.weight"};
    int nfd = under_valgrind() ? 2 : 4;
    for (int r = 0; r < nfd; r++) {
        int i = (int)urand((uint32_t)(N * HC)), j = (int)urand((uint32_t)(N * HI));
        fd_check("cls", "U", cls_eval, &c, &U[i], dU[i], 1e-2);
        fd_check("cls", "e_ad", cls_eval, &c, &E[j], dE[j], 1e-2);
    }
    for (size_t q = 0; q < sizeof pn / sizeof *pn; q++) {
        int p = hc_ptab_find(&x.t, pn[q]);
        if (p < 0 || (under_valgrind() && q % 2)) continue;
        size_t o = x.t.params[p].offset + urand((uint32_t)x.t.params[p].numel);
        fd_check("cls", pn[q], cls_eval, &c, &x.t.w[o], g1[o] * 4.0f, 1e-2);
    }
    /* bad inputs */
    CHECK(hc_cls_loss(&x.t, NULL, U, E, 1, neg, 0, 1.0f, 1, dU, dE, &l2, &eb) == HC_ERR_INVAL &&
          strstr(eb.msg, "at least 2"));
    int32_t save = neg[1];
    neg[1] = 0; /* row 0's own ad */
    CHECK(hc_cls_loss(&x.t, NULL, U, E, N, neg, K, 1.0f, 1, dU, dE, &l2, &eb) == HC_ERR_RANGE &&
          strstr(eb.msg, "row 0"));
    neg[1] = save;
    CHECK(hc_cls_loss(&x.t, NULL, U, E, N, neg, N, 1.0f, 1, dU, dE, &l2, &eb) == HC_ERR_INVAL);
    free(U), free(E), free(neg), free(lref), free(dU), free(dE), free(g1), free(sref);
    env_free(&x);
    hc_st_close(ref);

    /* the tiny package's own cls_tower (dim 64 = its towers' outputs) scores; a dim-16 cls_tower
     * does not fit the towers (64 outputs): refused naming the tower */
    env y;
    if (env_make(&y, tests, NULL)) return;
    float u1[2 * 96] = {0}, e1[2 * 64] = {0}, sc1[2];
    for (int i = 0; i < 2 * 96; i++) u1[i] = 0.01f * (float)(i % 7);
    for (int i = 0; i < 2 * 64; i++) e1[i] = 0.02f * (float)(i % 5);
    CHECK_OK(hc_match_score(&y.t, u1, e1, 2, sc1, &eb));
    CHECK(isfinite(sc1[0]) && isfinite(sc1[1]));
    env_free(&y);
    static float z[16 * 48];
    const char *bn[] = {"channel_mix.0.bias", "channel_mix.0.weight", "channel_mix.1.net.0.bias",
                        "channel_mix.1.net.0.weight", "channel_mix.1.net.3.bias",
                        "channel_mix.1.net.3.weight", "token_forward.net.0.bias",
                        "token_forward.net.0.weight", "token_forward.net.3.bias",
                        "token_forward.net.3.weight", "token_norm.bias", "token_norm.weight"};
    const int64_t bs[][2] = {{16, 0}, {16, 0}, {48, 0}, {48, 16}, {16, 0}, {16, 48},
                             {8, 0},  {8, 2},  {2, 0},  {2, 8},   {16, 0}, {16, 0}};
    hc_st_write_item it[2 * 12 + 4];
    char names[2 * 12][96];
    int ni = 0;
    for (int blk = 0; blk < 2; blk++)
        for (int j = 0; j < 12; j++, ni++) {
            snprintf(names[ni], sizeof names[ni], "cls_tower.mixer_blocks.%d.%s", blk, bn[j]);
            it[ni] = (hc_st_write_item){names[ni], HC_DTYPE_F32, bs[j][1] ? 2 : 1,
                                        {bs[j][0], bs[j][1]}, z};
        }
    it[ni++] = (hc_st_write_item){"cls_tower.layer_norm.bias", HC_DTYPE_F32, 1, {16}, z};
    it[ni++] = (hc_st_write_item){"cls_tower.layer_norm.weight", HC_DTYPE_F32, 1, {16}, z};
    it[ni++] = (hc_st_write_item){"cls_tower.mlp_head.0.bias", HC_DTYPE_F32, 1, {1}, z};
    it[ni++] = (hc_st_write_item){"cls_tower.mlp_head.0.weight", HC_DTYPE_F32, 2, {1, 16}, z};
    char path16[] = "/tmp/hc_cls16_XXXXXX";
    int fd16 = mkstemp(path16);
    CHECK(fd16 >= 0);
    if (fd16 >= 0) close(fd16);
    CHECK_OK(hc_st_write(path16, it, (size_t)ni, &eb));
    hc_safetensors *c16 = NULL;
    CHECK_OK(hc_st_open(&c16, path16, &eb));
    if (c16 && !env_make(&y, tests, c16)) {
        rc = hc_match_score(&y.t, u1, e1, 2, sc1, &eb);
        CHECKF(rc == HC_ERR_MISMATCH && strstr(eb.msg, "user_tower.weight"), "rc %d: %s", rc,
               eb.msg);
        printf("  cls: a dim-16 cls_tower with 64-wide towers: %s\n", eb.msg);
        env_free(&y);
    }
    hc_st_close(c16);
    unlink(path16);
}

/* ---- align ------------------------------------------------------------------------------------- */

typedef struct dec_ctx {
    env *x;
    float *u;
    int n, max_len;
    hc_tok_rows rows;
    int32_t *prompt;
    int n_prompt;
    int32_t eos;
} dec_ctx;

static double align_eval(void *p) {
    dec_ctx *c = p;
    double l = NAN;
    hc_align_loss(&c->x->t, c->x->dec, c->u, c->n, &c->rows, c->max_len, 1.0f, 0, NULL, &l, NULL);
    return l;
}

static double recon_eval(void *p) {
    dec_ctx *c = p;
    double l = NAN;
    hc_recon_loss(&c->x->t, c->x->dec, c->u, c->n, c->prompt, c->n_prompt, &c->rows, c->eos,
                  c->max_len, 1.0f, 0, NULL, &l, NULL, NULL);
    return l;
}

static void test_decoder_head(const char *tests, int recon) {
    const char *head = recon ? "recon" : "align";
    char path[1200];
    snprintf(path, sizeof path, "%s/data/train/heads_%s.safetensors", tests, head);
    hc_errbuf eb = {{0}};
    hc_safetensors *ref = NULL;
    int rc = hc_st_open(&ref, path, &eb);
    CHECKF(rc == 0, "%s fixture: %s", head, eb.msg);
    env x;
    if (rc || env_make(&x, tests, NULL)) {
        hc_st_close(ref);
        return;
    }
    const char *proj = recon ? "user_profile_projector.weight" : "user_profile_align_projector.weight";
    const hc_st_tensor *tl = hc_st_find(ref, "input.profile_lens");
    const int N = tl ? (int)tl->shape[0] : 0;
    const int HU = (int)hc_st_find(x.pkg, proj)->shape[1], C = x.cfg.hidden_size;
    dec_ctx c = {&x, NULL, N, 0, {N, NULL, NULL}, NULL, 0, 0};
    size_t n_ids = 0, n_prompt = 0;
    c.u = copy_ref(ref, "input.u", HC_DTYPE_F32, (size_t)N * HU, NULL);
    int32_t *lens = copy_ref(ref, "input.profile_lens", HC_DTYPE_I32, (size_t)N, NULL);
    int32_t *ids = copy_ref(ref, "input.profile_ids", HC_DTYPE_I32, 0, &n_ids);
    int32_t *ml = copy_ref(ref, "input.max_len", HC_DTYPE_I32, 1, NULL);
    c.rows.lens = lens, c.rows.ids = ids, c.max_len = ml[0];
    int32_t *eos = NULL, *ntok = NULL;
    if (recon) {
        c.prompt = copy_ref(ref, "input.prompt", HC_DTYPE_I32, 0, &n_prompt);
        c.n_prompt = (int)n_prompt;
        eos = copy_ref(ref, "input.eos", HC_DTYPE_I32, 1, NULL);
        ntok = copy_ref(ref, "n_tokens", HC_DTYPE_I32, 1, NULL);
        c.eos = eos[0];
    }
    float *lref = copy_ref(ref, "loss", HC_DTYPE_F32, 1, NULL);
    float *du = calloc((size_t)N * HU, sizeof(float));
    double loss = NAN;
    int nt = -1;
    worst_err = 0.0;
    hc_grad_zero(&x.t);
    if (recon)
        rc = hc_recon_loss(&x.t, x.dec, c.u, N, c.prompt, c.n_prompt, &c.rows, c.eos, c.max_len,
                           1.0f, 1, du, &loss, &nt, &eb);
    else
        rc = hc_align_loss(&x.t, x.dec, c.u, N, &c.rows, c.max_len, 1.0f, 1, du, &loss, &eb);
    CHECKF(rc == 0, "%s: %s", head, eb.msg);
    CHECKF(fabs(loss - lref[0]) <= 1e-5 * fabs(lref[0]), "%s loss %.8g, torch %.8g", head, loss,
           (double)lref[0]);
    if (recon) CHECKF(nt == ntok[0], "recon: %d labelled tokens, torch %d", nt, ntok[0]);
    cmp_grad(head, ref, "grad.u", du, (size_t)N * HU);
    char name[200];
    snprintf(name, sizeof name, "grad.%s", proj);
    cmp_grad(head, ref, name, ptr(&x.t, proj, 1), (size_t)C * HU);
    if (!recon) {
        cmp_grad(head, ref, "grad.dec_emb_tokens", ptr(&x.t, "dec_emb_tokens", 1), (size_t)C);
        cmp_grad(head, ref, "grad.align_temp", ptr(&x.t, "align_temp", 1), 1);
    }
    cmp_decoder(head, &x, ref);
    /* nothing else touched */
    for (int p = 0; p < x.t.n; p++) {
        const char *nm = x.t.params[p].name;
        if (!strncmp(nm, "creative_llm.", 13) || !strcmp(nm, proj) ||
            (!recon && (!strcmp(nm, "dec_emb_tokens") || !strcmp(nm, "align_temp"))))
            continue;
        CHECKF(all_zero(x.t.g + x.t.params[p].offset, x.t.params[p].numel),
               "%s touched the gradient of %s", head, nm);
    }
    printf("  %s: N=%d loss %.7f (torch %.7f)%s, gradients: worst rel err %.2e (%s)\n", head, N,
           loss, (double)lref[0], recon ? " over the labelled tokens" : "", worst_err, worst_name);
    /* weight and backward == 0 */
    float *g1 = malloc(sizeof(float) * x.t.total);
    memcpy(g1, x.t.g, sizeof(float) * x.t.total);
    hc_grad_zero(&x.t);
    double l2 = recon ? recon_eval(&c) : align_eval(&c);
    CHECK(l2 == loss && all_zero(x.t.g, x.t.total));
    float *du2 = calloc((size_t)N * HU, sizeof(float));
    if (recon)
        rc = hc_recon_loss(&x.t, x.dec, c.u, N, c.prompt, c.n_prompt, &c.rows, c.eos, c.max_len,
                           0.5f, 1, du2, &l2, NULL, &eb);
    else
        rc = hc_align_loss(&x.t, x.dec, c.u, N, &c.rows, c.max_len, 0.5f, 1, du2, &l2, &eb);
    CHECK(rc == 0 && l2 == loss);
    for (size_t i = 0; i < x.t.total; i++) g1[i] *= 0.5f;
    for (int i = 0; i < N * HU; i++) du[i] *= 0.5f;
    CHECK(rel_norm(x.t.g, g1, x.t.total) <= 1e-6 && rel_norm(du2, du, (size_t)N * HU) <= 1e-6);
    /* finite differences (g1 is the gradient at weight 0.5) */
    loss_fn f = recon ? recon_eval : align_eval;
    fd_floor = 3e-4;
    int nfd = under_valgrind() ? 2 : 4;
    float *wp = ptr(&x.t, proj, 0);
    int pidx = hc_ptab_find(&x.t, proj);
    for (int r = 0; r < nfd; r++) {
        int i = (int)urand((uint32_t)(N * HU)), j = (int)urand((uint32_t)(C * HU));
        fd_check(head, "u", f, &c, &c.u[i], 2.0 * du[i], 1e-2);
        fd_check(head, proj, f, &c, &wp[j], 2.0 * g1[x.t.params[pidx].offset + j], 1e-2);
    }
    const char *dn[] = {"creative_llm.model.layers.1.self_attn.q_norm.weight",
                        "creative_llm.model.norm.weight",
                        "creative_llm.model.layers.0.mlp.down_proj.weight",
                        recon ? "creative_llm.lm_head.weight" : "dec_emb_tokens",
                        recon ? "creative_llm.model.layers.0.self_attn.k_proj.weight" : "align_temp"};
    for (size_t q = 0; q < sizeof dn / sizeof *dn; q++) {
        int p = hc_ptab_find(&x.t, dn[q]);
        if (p < 0 || (under_valgrind() && q < 2)) continue;
        size_t o = x.t.params[p].offset + urand((uint32_t)x.t.params[p].numel);
        fd_check(head, dn[q], f, &c, &x.t.w[o], 2.0 * g1[o], recon ? 3e-3 : 1e-2);
    }
    fd_floor = 2e-5;
    /* bad inputs */
    if (recon) {
        int n_p = c.n_prompt;
        rc = hc_recon_loss(&x.t, x.dec, c.u, N, c.prompt, n_p, &c.rows, c.eos, n_p + 1, 1.0f, 1,
                           du, &l2, NULL, &eb);
        CHECKF(rc == HC_ERR_RANGE && strstr(eb.msg, "no room"), "rc %d: %s", rc, eb.msg);
        rc = hc_recon_loss(&x.t, x.dec, c.u, N, c.prompt, n_p, &c.rows, 100000, c.max_len, 1.0f,
                           1, du, &l2, NULL, &eb);
        CHECKF(rc == HC_ERR_RANGE, "recon with eos outside the vocabulary: rc %d: %s", rc, eb.msg);
    } else {
        rc = hc_align_loss(&x.t, x.dec, c.u, 1, &c.rows, c.max_len, 1.0f, 1, du, &l2, &eb);
        CHECKF(rc == HC_ERR_INVAL && strstr(eb.msg, "at least 2"), "rc %d: %s", rc, eb.msg);
        /* the in-place clamp of align_temp */
        float *temp = ptr(&x.t, "align_temp", 0);
        *temp = 5.0f;
        align_eval(&c);
        CHECK(*temp == logf(100.0f));
        *temp = -1.0f;
        align_eval(&c);
        CHECK(*temp == 0.0f);
    }
    /* an empty profile row: the slot alone (align), prompt and eos only (recon) */
    int32_t lens0[16];
    memcpy(lens0, lens, sizeof(int32_t) * (size_t)(N < 16 ? N : 16));
    lens0[0] = 0;
    hc_tok_rows r0 = {N, lens0, ids + lens[0]};
    l2 = NAN;
    rc = recon ? hc_recon_loss(&x.t, x.dec, c.u, N, c.prompt, c.n_prompt, &r0, c.eos, c.max_len,
                               1.0f, 1, du, &l2, &nt, &eb)
               : hc_align_loss(&x.t, x.dec, c.u, N, &r0, c.max_len, 1.0f, 1, du, &l2, &eb);
    CHECKF(rc == 0 && isfinite(l2) && l2 > 0, "%s with an empty profile row: rc %d (%s), loss %g",
           head, rc, eb.msg, l2);
    hc_tok_rows bad = {N - 1, lens, ids};
    rc = recon ? hc_recon_loss(&x.t, x.dec, c.u, N, c.prompt, c.n_prompt, &bad, c.eos, c.max_len,
                               1.0f, 1, du, &l2, NULL, &eb)
               : hc_align_loss(&x.t, x.dec, c.u, N, &bad, c.max_len, 1.0f, 1, du, &l2, &eb);
    CHECK(rc == HC_ERR_INVAL);
    free(c.u), free(lens), free(ids), free(ml), free(c.prompt), free(eos), free(ntok);
    free(lref), free(du), free(du2), free(g1);
    env_free(&x);
    hc_st_close(ref);
}

/* ---- next-item --------------------------------------------------------------------------------- */

typedef struct ni_ctx {
    hc_ptab *t;
    float *o, *e, *neg;
    uint8_t *mask;
    int n, S, H, M;
} ni_ctx;

static double ni_eval(void *p) {
    ni_ctx *c = p;
    double l = NAN;
    hc_nextitem_loss(c->t, NULL, c->o, c->e, c->mask, c->n, c->S, c->H, c->neg, c->M, 1.0f, 0,
                     NULL, NULL, NULL, &l, NULL, NULL);
    return l;
}

static void test_nextitem(const char *tests) {
    char path[1200];
    snprintf(path, sizeof path, "%s/data/train/heads_nextitem.safetensors", tests);
    hc_errbuf eb = {{0}};
    hc_safetensors *ref = NULL;
    int rc = hc_st_open(&ref, path, &eb);
    CHECKF(rc == 0, "next-item fixture: %s", eb.msg);
    const hc_st_tensor *to = rc ? NULL : hc_st_find(ref, "input.o");
    const hc_st_tensor *tn = rc ? NULL : hc_st_find(ref, "input.neg");
    if (!to || !tn) {
        CHECK(0);
        hc_st_close(ref);
        return;
    }
    hc_ptab t;
    hc_ptab_init(&t);
    CHECK_OK(hc_nextitem_add_param(&t, &eb));
    CHECK(hc_nextitem_init_param(&t, &eb) == HC_ERR_INVAL); /* not allocated yet */
    CHECK_OK(hc_ptab_alloc(&t, &eb));
    CHECK_OK(hc_nextitem_init_param(&t, &eb));
    CHECK(fabsf(t.w[0] - logf(1.0f / 0.07f)) < 1e-6f);
    ni_ctx c = {&t, NULL, NULL, NULL, NULL, (int)to->shape[0], (int)to->shape[1],
                (int)to->shape[2], (int)tn->shape[0]};
    const int N = c.n, S = c.S, H = c.H, M = c.M;
    const size_t NO = (size_t)N * S * H, NE = (size_t)N * (S + 1) * H, NM = (size_t)M * H;
    c.o = copy_ref(ref, "input.o", HC_DTYPE_F32, NO, NULL);
    c.e = copy_ref(ref, "input.e", HC_DTYPE_F32, NE, NULL);
    c.neg = copy_ref(ref, "input.neg", HC_DTYPE_F32, NM, NULL);
    int32_t *m32 = copy_ref(ref, "input.mask", HC_DTYPE_I32, (size_t)N * S, NULL);
    float *ls = copy_ref(ref, "input.logit_scale", HC_DTYPE_F32, 1, NULL);
    float *lref = copy_ref(ref, "loss", HC_DTYPE_F32, 1, NULL);
    int32_t *npref = copy_ref(ref, "n_pairs", HC_DTYPE_I32, 1, NULL);
    c.mask = malloc((size_t)N * S);
    for (int i = 0; i < N * S; i++) c.mask[i] = (uint8_t)(m32[i] != 0);
    float *d_o = calloc(NO, sizeof(float)), *d_e = calloc(NE, sizeof(float));
    float *d_n = calloc(NM, sizeof(float));
    t.w[0] = ls[0];
    hc_grad_zero(&t);
    double loss = NAN;
    int np = -1;
    worst_err = 0.0;
    rc = hc_nextitem_loss(&t, NULL, c.o, c.e, c.mask, N, S, H, c.neg, M, 1.0f, 1, d_o, d_e, d_n,
                          &loss, &np, &eb);
    CHECKF(rc == 0, "next-item: %s", eb.msg);
    CHECKF(fabs(loss - lref[0]) <= 1e-5 * fabs(lref[0]), "next-item loss %.8g, torch %.8g", loss,
           (double)lref[0]);
    CHECK(np == npref[0]);
    cmp_grad("next-item", ref, "grad.o", d_o, NO);
    cmp_grad("next-item", ref, "grad.e", d_e, NE);
    cmp_grad("next-item", ref, "grad.neg", d_n, NM);
    cmp_grad("next-item", ref, "grad.logit_scale", t.g, 1);
    printf("  next-item: N=%d S=%d H=%d negatives=%d pairs=%d loss %.7f (torch %.7f), gradients: "
           "worst rel err %.2e (%s)\n", N, S, H, M, np, loss, (double)lref[0], worst_err,
           worst_name);
    int nfd = under_valgrind() ? 2 : 5;
    for (int r = 0; r < nfd; r++) {
        int i = (int)urand((uint32_t)NO), j = (int)urand((uint32_t)NE), k = (int)urand((uint32_t)NM);
        fd_check("next-item", "o", ni_eval, &c, &c.o[i], d_o[i], 1e-2);
        fd_check("next-item", "e", ni_eval, &c, &c.e[j], d_e[j], 1e-2);
        fd_check("next-item", "neg", ni_eval, &c, &c.neg[k], d_n[k], 1e-2);
    }
    fd_check("next-item", "logit_scale", ni_eval, &c, &t.w[0], t.g[0], 1e-3);
    /* position 0 of row 0 is masked: its output gets no gradient; the first item is no target */
    CHECK(all_zero(d_o, (size_t)H) && all_zero(d_e, (size_t)H));
    /* nothing counted: loss 0, nothing accumulated; the clamp */
    uint8_t *none = calloc((size_t)N * S, 1);
    hc_grad_zero(&t);
    memset(d_o, 0, NO * sizeof(float));
    t.w[0] = 7.0f;
    CHECK_OK(hc_nextitem_loss(&t, NULL, c.o, c.e, none, N, S, H, c.neg, M, 1.0f, 1, d_o, d_e, d_n,
                              &loss, &np, &eb));
    CHECK(loss == 0.0 && np == 0 && t.g[0] == 0.0f && all_zero(d_o, NO));
    CHECK(t.w[0] == logf(100.0f));
    CHECK(hc_nextitem_loss(&t, NULL, c.o, c.e, c.mask, N, 0, H, c.neg, M, 1.0f, 1, d_o, d_e, d_n,
                           &loss, &np, &eb) == HC_ERR_INVAL);
    hc_ptab empty;
    hc_ptab_init(&empty);
    CHECK(hc_nextitem_loss(&empty, NULL, c.o, c.e, c.mask, N, S, H, c.neg, M, 1.0f, 1, d_o, d_e,
                           d_n, &loss, &np, &eb) == HC_ERR_NOTFOUND &&
          strstr(eb.msg, HC_NEXTITEM_SCALE_NAME));
    free(c.o), free(c.e), free(c.neg), free(m32), free(ls), free(lref), free(npref), free(c.mask);
    free(d_o), free(d_e), free(d_n), free(none);
    hc_ptab_free(&t);
    hc_st_close(ref);
}

int main(int argc, char **argv) {
    const char *tests = argc > 1 ? argv[1] : "tests";
    test_picker();
    test_cls(tests);
    test_decoder_head(tests, 0);
    test_decoder_head(tests, 1);
    test_nextitem(tests);
    printf("  worst gradient rel err over all heads: %.2e (%s)\n", all_err, all_name);
    return hc_test_finish("test_train_heads");
}
