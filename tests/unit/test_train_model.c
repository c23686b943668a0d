/* test_train_model: the trainer's decoder model (trainer/model/tmodel.h), whole-model level.
 *
 *  1. forward parity with the engine: tests/data/llm/{llama_gqa_f32, qwen3_gqa_f32,
 *     llama_mha_bf16_tied, qwen3_tied_bf16} loaded by both hc_llm (CPU backend, stateless packed
 *     forward, 3 segments, 2 injected rows) and hc_tmodel: final hidden states within 1e-5
 *     relative (max-abs over max), the fused lm_head CE against a double CE of the engine's logits;
 *     a second forward of the same or a smaller batch allocates no scratch;
 *  2. backward against PyTorch autograd (tests/data/train/model_{llama,qwen3}, written by
 *     tests/reference/make_train_model_fixture.py): loss and the gradient of every parameter and
 *     of the injected vector within 1e-4 relative (norm-wise per tensor); then 5 AdamW steps
 *     (optim.h) on that loss: each step's loss within 1e-5 and the weights after them within
 *     1e-5 relative per tensor;
 *  3. central finite differences on random coordinates (and one random direction) of tiny random
 *     models built here (Llama GQA untied, Qwen3 MQA tied);
 *  4. export: bf16 export loaded by hc_llm_load_from gives the tmodel's hidden states with
 *     bf16-rounded weights; f32 export reloads bit for bit; missing, misshaped and integer
 *     tensors and malformed batches are clear errors;
 *  5. activation checkpointing: the same gradients bit for bit, a smaller arena.
 * HC_UNDER_VALGRIND=1 checks fewer finite-difference coordinates. */
#include "model/tmodel.h"

#include "backend/backend.h"
#include "io/hfconfig.h"
#include "model/llm.h"
#include "testutil.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static uint64_t rng = 0x2545F4914F6CDD1Dull;
static float frand(void) { /* uniform in [-1, 1) */
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (float)((rng >> 40) * (1.0 / 8388608.0)) - 1.0f;
}
static uint32_t urand(uint32_t n) {
    frand();
    return (uint32_t)((rng >> 20) % n);
}

static int under_valgrind(void) {
    const char *v = getenv("HC_UNDER_VALGRIND");
    return v && v[0] == '1';
}

/* norm-wise relative error ||a - b|| / max(||b||, tiny) */
static double rel_norm(const float *a, const float *b, size_t n) {
    double d = 0.0, r = 0.0;
    for (size_t i = 0; i < n; i++) {
        d += ((double)a[i] - b[i]) * ((double)a[i] - b[i]);
        r += (double)b[i] * b[i];
    }
    return sqrt(d) / (sqrt(r) > 1e-30 ? sqrt(r) : 1e-30);
}

/* A model over its own table: registered, allocated, bound. */
typedef struct tm {
    hc_ptab t;
    hc_tmodel *m;
} tm;

static int tm_make(tm *x, const hc_llm_config *cfg, const char *prefix, int with_lm_head) {
    hc_errbuf eb = {{0}};
    hc_ptab_init(&x->t);
    x->m = NULL;
    int rc = hc_tmodel_add_params(&x->m, cfg, &x->t, prefix, with_lm_head, &eb);
    if (!rc) rc = hc_ptab_alloc(&x->t, &eb);
    if (!rc) rc = hc_tmodel_bind(x->m, &x->t, &eb);
    CHECKF(rc == 0, "model setup: %s", eb.msg);
    return rc;
}
static void tm_free(tm *x) {
    hc_tmodel_free(x->m);
    hc_ptab_free(&x->t);
}

/* A packed batch of 3 segments (5, 1 and 6 rows) with 2 injected rows, labels on most rows. */
typedef struct pbatch {
    int T;
    int32_t ids[12], eng_ids[12], pos[12], seg[12], labels[12], out[12], rows[2];
    float *inject; /* (2, C) */
} pbatch;

static void make_batch(pbatch *p, int V, int C) {
    static const int32_t pos[12] = {0, 1, 2, 3, 4, 7, 2, 3, 4, 5, 6, 7};
    static const int32_t seg[12] = {0, 0, 0, 0, 0, 1, 2, 2, 2, 2, 2, 2};
    p->T = 12;
    p->rows[0] = 5; /* the one-row segment */
    p->rows[1] = 8;
    for (int t = 0; t < p->T; t++) {
        p->pos[t] = pos[t];
        p->seg[t] = seg[t];
        p->eng_ids[t] = (int32_t)urand((uint32_t)V);
        p->ids[t] = p->eng_ids[t];
        p->labels[t] = t % 4 == 2 ? -100 : (int32_t)urand((uint32_t)V);
        p->out[t] = t;
    }
    p->ids[5] = p->ids[8] = -1;
    p->inject = malloc(sizeof(float) * 2 * (size_t)C);
    for (int i = 0; i < 2 * C; i++) p->inject[i] = 0.5f * frand();
}

static hc_tbatch tbatch_of(const pbatch *p) {
    hc_tbatch b = {p->T, p->ids, p->pos, p->seg, 2, p->rows, p->inject};
    return b;
}

/* engine hidden (T, C) and logits (T, V) for the batch; 0 on success */
static int engine_forward(hc_llm *llm, const pbatch *p, float *hid, float *lg) {
    hc_batch b = {.n_tokens = p->T, .token = p->eng_ids, .n_inject = 2, .inject_idx = p->rows,
                  .inject = p->inject, .pos = p->pos, .seg = p->seg, .n_out = p->T,
                  .out_idx = p->out};
    hc_errbuf eb = {{0}};
    int rc = hc_llm_forward(llm, &b, NULL, NULL, hid, lg, &eb);
    CHECKF(rc == 0, "engine forward: %s", eb.msg);
    return rc;
}

/* ---- 1. forward parity with the engine -------------------------------------------------------- */

static void test_parity(hc_backend *be, const char *tests, const char *fx) {
    char dir[1200];
    snprintf(dir, sizeof dir, "%s/data/llm/%s", tests, fx);
    hc_errbuf eb = {{0}};
    hc_llm_config cfg;
    hc_safetensors *st = NULL;
    int rc = hc_hfconfig_load(&cfg, dir, &eb);
    if (!rc) rc = hc_st_open(&st, dir, &eb);
    CHECKF(rc == 0, "%s: %s", fx, eb.msg);
    if (rc) return;
    hc_llm *llm = NULL;
    rc = hc_llm_load_from(&llm, be, &cfg, st, "", NULL, &eb);
    CHECKF(rc == 0, "%s: engine load: %s", fx, eb.msg);
    tm x;
    if (rc || tm_make(&x, &cfg, "creative_llm.", 1)) {
        hc_llm_free(llm);
        hc_st_close(st);
        return;
    }
    rc = hc_tmodel_load(x.m, st, "", &eb);
    CHECKF(rc == 0, "%s: tmodel load: %s", fx, eb.msg);
    const int C = cfg.hidden_size, V = cfg.vocab_size;
    pbatch p;
    make_batch(&p, V, C);
    float *hid = malloc(sizeof(float) * (size_t)p.T * C);
    float *lg = malloc(sizeof(float) * (size_t)p.T * V);
    hc_tbatch b = tbatch_of(&p);
    if (rc == 0 && engine_forward(llm, &p, hid, lg) == 0) {
        rc = hc_tmodel_forward(x.m, &b, &eb);
        CHECKF(rc == 0, "%s: tmodel forward: %s", fx, eb.msg);
        const float *h = hc_tmodel_hidden(x.m);
        if (rc == 0 && h) {
            double e = hc_test_rel_err(h, hid, (size_t)p.T * C);
            printf("  %-22s hidden vs engine: rel err %.2e\n", fx, e);
            CHECKF(e <= 1e-5, "%s: hidden differs from the engine: %.3g", fx, e);
            /* the fused CE against a double CE over the engine's logits */
            double ref = 0.0;
            int n_lab = 0;
            for (int t = 0; t < p.T; t++) {
                if (p.labels[t] == -100) continue;
                const float *r = lg + (size_t)t * V;
                double mx = r[0], s = 0.0;
                for (int v = 1; v < V; v++) mx = r[v] > mx ? r[v] : mx;
                for (int v = 0; v < V; v++) s += exp(r[v] - mx);
                ref += mx + log(s) - r[p.labels[t]];
                n_lab++;
            }
            ref /= n_lab;
            double got = hc_tmodel_lm_loss(x.m, p.labels, 1.0f, NULL);
            CHECKF(fabs(got - ref) <= 1e-5 * fabs(ref), "%s: CE %.8g, engine logits give %.8g", fx,
                   got, ref);
        }
        /* the same and a smaller batch again: no new scratch, same result */
        int64_t grow = x.m->n_grow;
        float *h1 = malloc(sizeof(float) * (size_t)p.T * C);
        if (h) memcpy(h1, h, sizeof(float) * (size_t)p.T * C);
        CHECK_OK(hc_tmodel_forward(x.m, &b, &eb));
        h = hc_tmodel_hidden(x.m);
        CHECK(h && !memcmp(h, h1, sizeof(float) * (size_t)p.T * C));
        hc_tbatch small = {5, p.ids, p.pos, p.seg, 0, NULL, NULL};
        CHECK_OK(hc_tmodel_forward(x.m, &small, &eb));
        CHECK(hc_tmodel_rows(x.m) == 5);
        /* segment 0 alone equals its rows of the packed batch */
        h = hc_tmodel_hidden(x.m);
        CHECK(h && hc_test_rel_err(h, h1, (size_t)5 * C) <= 1e-6);
        CHECKF(x.m->n_grow == grow, "%s: scratch reallocated for a batch no larger", fx);
        free(h1);
    }
    free(hid);
    free(lg);
    free(p.inject);
    tm_free(&x);
    hc_llm_free(llm);
    hc_st_close(st);
}

/* ---- 2. backward against PyTorch autograd ----------------------------------------------------- */

static const void *ref_tensor(const hc_safetensors *st, const char *name, hc_dtype dt, size_t n) {
    const hc_st_tensor *t = hc_st_find(st, name);
    CHECKF(t != NULL, "reference lacks %s", name);
    if (!t) return NULL;
    size_t ne = 1;
    for (int i = 0; i < t->n_dims; i++) ne *= (size_t)t->shape[i];
    CHECKF(t->dtype == dt && ne == n, "reference %s: dtype/size mismatch", name);
    return t->dtype == dt && ne == n ? t->data : NULL;
}

/* the fixture's tensors are f32/i32 at any alignment: copy them out */
static void *copy_ref(const hc_safetensors *st, const char *name, hc_dtype dt, size_t n) {
    const void *p = ref_tensor(st, name, dt, n);
    void *q = malloc(4 * (n ? n : 1));
    if (p) memcpy(q, p, 4 * n);
    else memset(q, 0, 4 * (n ? n : 1));
    return q;
}

static void test_vs_torch(const char *tests, const char *fx) {
    char dir[1200], gp[1300];
    snprintf(dir, sizeof dir, "%s/data/train/%s", tests, fx);
    snprintf(gp, sizeof gp, "%s/grads.safetensors", dir);
    hc_errbuf eb = {{0}};
    hc_llm_config cfg;
    hc_safetensors *st = NULL, *ref = NULL;
    int rc = hc_hfconfig_load(&cfg, dir, &eb);
    if (!rc) rc = hc_st_open(&st, dir, &eb);
    if (!rc) rc = hc_st_open(&ref, gp, &eb);
    CHECKF(rc == 0, "%s: %s", fx, eb.msg);
    tm x;
    if (rc || tm_make(&x, &cfg, "creative_llm.", 1)) {
        hc_st_close(st);
        hc_st_close(ref);
        return;
    }
    rc = hc_tmodel_load(x.m, st, "", &eb);
    CHECKF(rc == 0, "%s: load: %s", fx, eb.msg);
    const hc_st_tensor *ti = hc_st_find(ref, "input.ids");
    CHECKF(ti != NULL, "%s: reference lacks input.ids", fx);
    if (rc || !ti) goto out;
    const int T = (int)ti->shape[0], C = cfg.hidden_size;
    int32_t *ids = copy_ref(ref, "input.ids", HC_DTYPE_I32, (size_t)T);
    int32_t *pos = copy_ref(ref, "input.pos", HC_DTYPE_I32, (size_t)T);
    int32_t *seg = copy_ref(ref, "input.seg", HC_DTYPE_I32, (size_t)T);
    int32_t *lab = copy_ref(ref, "input.labels", HC_DTYPE_I32, (size_t)T);
    int32_t *rows = copy_ref(ref, "input.inject_rows", HC_DTYPE_I32, 1);
    float *inj = copy_ref(ref, "input.inject", HC_DTYPE_F32, (size_t)C);
    float *R = copy_ref(ref, "input.R", HC_DTYPE_F32, (size_t)T * C);
    float *loss_ref = copy_ref(ref, "loss", HC_DTYPE_F32, 1);
    float *ce_ref = copy_ref(ref, "loss_ce", HC_DTYPE_F32, 1);
    float *ginj_ref = copy_ref(ref, "grad.inject", HC_DTYPE_F32, (size_t)C);
    float *dh = calloc((size_t)T * C, sizeof(float)), *dinj = calloc((size_t)C, sizeof(float));
    hc_tbatch b = {T, ids, pos, seg, 1, rows, inj};
    hc_grad_zero(&x.t);
    rc = hc_tmodel_forward(x.m, &b, &eb);
    CHECKF(rc == 0, "%s: forward: %s", fx, eb.msg);
    if (rc == 0) {
        double ce = hc_tmodel_lm_loss(x.m, lab, 1.0f, dh);
        const float *h = hc_tmodel_hidden(x.m);
        double loss = ce;
        for (size_t i = 0; i < (size_t)T * C; i++) {
            loss += (double)h[i] * R[i];
            dh[i] += R[i];
        }
        CHECK_OK(hc_tmodel_backward(x.m, dh, dinj, &eb));
        CHECKF(fabs(ce - ce_ref[0]) <= 1e-5 * fabs(ce_ref[0]), "%s: CE %.8g, torch %.8g", fx, ce,
               (double)ce_ref[0]);
        CHECKF(fabs(loss - loss_ref[0]) <= 1e-5 * fabs(loss_ref[0]), "%s: loss %.8g, torch %.8g",
               fx, loss, (double)loss_ref[0]);
        double worst = rel_norm(dinj, ginj_ref, (size_t)C);
        const char *worst_name = "inject";
        CHECKF(worst <= 1e-4, "%s: grad.inject rel err %.3g", fx, worst);
        size_t plen = strlen("creative_llm.");
        int n_grad = 0;
        for (size_t i = 0; i < hc_st_count(ref); i++)
            n_grad += !strncmp(hc_st_get(ref, i)->name, "grad.model.", 11) ||
                      !strncmp(hc_st_get(ref, i)->name, "grad.lm_head.", 13);
        CHECKF(n_grad == x.t.n, "%s: torch has %d parameter gradients, the table %d parameters",
               fx, n_grad, x.t.n);
        for (int p = 0; p < x.t.n; p++) {
            const hc_param *P = &x.t.params[p];
            char name[HC_PTAB_NAME_MAX + 8];
            snprintf(name, sizeof name, "grad.%s", P->name + plen);
            float *g = copy_ref(ref, name, HC_DTYPE_F32, P->numel);
            double e = rel_norm(x.t.g + P->offset, g, P->numel);
            CHECKF(e <= 1e-4, "%s: %s rel err %.3g", fx, name, e);
            if (e > worst) {
                worst = e;
                worst_name = P->name + plen;
            }
            free(g);
        }
        printf("  %-22s loss %.7f (torch %.7f), worst gradient rel err %.2e (%s)\n", fx, loss,
               (double)loss_ref[0], worst, worst_name);
        /* 5 AdamW steps on the same batch, as the fixture's torch.optim.AdamW */
        enum { STEPS = 5 };
        float *lref = copy_ref(ref, "adamw.losses", HC_DTYPE_F32, STEPS);
        hc_adamw_cfg ac = {1e-2, 0.9, 0.999, 1e-8, 0.01};
        double worst_l = 0.0, worst_w = 0.0;
        for (int step = 1; step <= STEPS; step++) {
            hc_grad_zero(&x.t);
            memset(dh, 0, sizeof(float) * (size_t)T * C);
            if (hc_tmodel_forward(x.m, &b, &eb)) break;
            double l = hc_tmodel_lm_loss(x.m, lab, 1.0f, dh);
            h = hc_tmodel_hidden(x.m);
            for (size_t i = 0; i < (size_t)T * C; i++) {
                l += (double)h[i] * R[i];
                dh[i] += R[i];
            }
            CHECK_OK(hc_tmodel_backward(x.m, dh, NULL, &eb));
            double e = fabs(l - lref[step - 1]) / fabs(lref[step - 1]);
            worst_l = e > worst_l ? e : worst_l;
            CHECKF(e <= 1e-5, "%s: AdamW step %d loss %.8g, torch %.8g", fx, step, l,
                   (double)lref[step - 1]);
            hc_adamw_step_range(&x.t, &ac, ac.lr, step, 0, x.t.total);
        }
        for (int p = 0; p < x.t.n; p++) {
            const hc_param *P = &x.t.params[p];
            char name[HC_PTAB_NAME_MAX + 8];
            snprintf(name, sizeof name, "adamw.%s", P->name + plen);
            float *w = copy_ref(ref, name, HC_DTYPE_F32, P->numel);
            double e = rel_norm(x.t.w + P->offset, w, P->numel);
            CHECKF(e <= 1e-5, "%s: %s after %d steps: rel err %.3g", fx, name, STEPS, e);
            worst_w = e > worst_w ? e : worst_w;
            free(w);
        }
        printf("  %-22s %d AdamW steps: losses %.7g .. %.7g, worst loss rel err %.2e, worst "
               "weight rel err %.2e\n", fx, STEPS, (double)lref[0], (double)lref[STEPS - 1],
               worst_l, worst_w);
        free(lref);
    }
    free(ids), free(pos), free(seg), free(lab), free(rows), free(inj), free(R);
    free(loss_ref), free(ce_ref), free(ginj_ref), free(dh), free(dinj);
out:
    tm_free(&x);
    hc_st_close(st);
    hc_st_close(ref);
}

/* Activation checkpointing gives the same gradients bit for bit with a smaller arena, also for a
 * second backward of the same checkpointed forward. */
static void test_checkpoint(const char *tests, const char *fx) {
    char dir[1200], gp[1300];
    snprintf(dir, sizeof dir, "%s/data/train/%s", tests, fx);
    snprintf(gp, sizeof gp, "%s/grads.safetensors", dir);
    hc_errbuf eb = {{0}};
    hc_llm_config cfg;
    hc_safetensors *st = NULL, *ref = NULL;
    int rc = hc_hfconfig_load(&cfg, dir, &eb);
    if (!rc) rc = hc_st_open(&st, dir, &eb);
    if (!rc) rc = hc_st_open(&ref, gp, &eb);
    CHECKF(rc == 0, "%s: %s", fx, eb.msg);
    tm x;
    const hc_st_tensor *ti = rc ? NULL : hc_st_find(ref, "input.ids");
    if (rc || !ti || tm_make(&x, &cfg, "", 1)) {
        hc_st_close(st);
        hc_st_close(ref);
        return;
    }
    CHECK_OK(hc_tmodel_load(x.m, st, "", &eb));
    const int T = (int)ti->shape[0], C = cfg.hidden_size;
    int32_t *ids = copy_ref(ref, "input.ids", HC_DTYPE_I32, (size_t)T);
    int32_t *pos = copy_ref(ref, "input.pos", HC_DTYPE_I32, (size_t)T);
    int32_t *seg = copy_ref(ref, "input.seg", HC_DTYPE_I32, (size_t)T);
    int32_t *lab = copy_ref(ref, "input.labels", HC_DTYPE_I32, (size_t)T);
    int32_t *rows = copy_ref(ref, "input.inject_rows", HC_DTYPE_I32, 1);
    float *inj = copy_ref(ref, "input.inject", HC_DTYPE_F32, (size_t)C);
    float *dh = malloc(sizeof(float) * (size_t)T * C), *dinj[2], *g0 = NULL;
    hc_tbatch b = {T, ids, pos, seg, 1, rows, inj};
    size_t bytes[2] = {0, 0};
    /* dh from the lm loss once; then each mode runs forward + backward from it */
    memset(dh, 0, sizeof(float) * (size_t)T * C);
    CHECK_OK(hc_tmodel_forward(x.m, &b, &eb));
    hc_tmodel_lm_loss(x.m, lab, 1.0f, dh);
    for (int ck = 0; ck < 2; ck++) {
        x.m->checkpoint = ck;
        dinj[ck] = calloc((size_t)C, sizeof(float));
        CHECK_OK(hc_tmodel_forward(x.m, &b, &eb));
        bytes[ck] = hc_tmodel_scratch_bytes(x.m);
        hc_grad_zero(&x.t);
        CHECK_OK(hc_tmodel_backward(x.m, dh, dinj[ck], &eb));
        if (!ck) {
            g0 = malloc(sizeof(float) * x.t.total);
            memcpy(g0, x.t.g, sizeof(float) * x.t.total);
        }
    }
    CHECKF(!memcmp(g0, x.t.g, sizeof(float) * x.t.total) &&
               !memcmp(dinj[0], dinj[1], sizeof(float) * (size_t)C),
           "%s: checkpointed gradients differ", fx);
    CHECKF(bytes[1] < bytes[0], "%s: checkpointed arena %zu bytes, not below %zu", fx, bytes[1],
           bytes[0]);
    /* a second backward of the same forward (the shared buffers now hold layer 0: the last
     * layer must be recomputed too) gives the same gradients again */
    hc_grad_zero(&x.t);
    CHECK_OK(hc_tmodel_backward(x.m, dh, NULL, &eb));
    CHECKF(!memcmp(g0, x.t.g, sizeof(float) * x.t.total),
           "%s: second checkpointed backward differs", fx);
    printf("  %-22s checkpointing: same gradients, arena %zu -> %zu bytes\n", fx, bytes[0],
           bytes[1]);
    free(ids), free(pos), free(seg), free(lab), free(rows), free(inj), free(dh), free(g0);
    free(dinj[0]), free(dinj[1]);
    tm_free(&x);
    hc_st_close(st);
    hc_st_close(ref);
}

/* ---- 3. finite differences on a tiny random model --------------------------------------------- */

typedef struct fd_ctx {
    tm *x;
    pbatch p;
    float *R;
} fd_ctx;

static double fd_loss(fd_ctx *c) {
    hc_tbatch b = tbatch_of(&c->p);
    hc_errbuf eb = {{0}};
    if (hc_tmodel_forward(c->x->m, &b, &eb)) return NAN;
    double l = hc_tmodel_lm_loss(c->x->m, c->p.labels, 1.0f, NULL);
    const float *h = hc_tmodel_hidden(c->x->m);
    for (size_t i = 0; i < (size_t)c->p.T * c->x->m->cfg.hidden_size; i++)
        l += (double)h[i] * c->R[i];
    return l;
}

static void test_fd(const char *json, const char *what) {
    hc_llm_config cfg;
    hc_errbuf eb = {{0}};
    int rc = hc_hfconfig_parse(&cfg, json, strlen(json), &eb);
    CHECKF(rc == 0, "%s: config: %s", what, eb.msg);
    tm x;
    if (rc || tm_make(&x, &cfg, "", 1)) return;
    for (int p = 0; p < x.t.n; p++) {
        const hc_param *P = &x.t.params[p];
        int is_norm = P->ndim == 1;
        for (size_t i = 0; i < P->numel; i++)
            x.t.w[P->offset + i] = is_norm ? 1.0f + 0.2f * frand() : 0.3f * frand();
    }
    const int C = cfg.hidden_size;
    fd_ctx c = {&x, {0}, NULL};
    make_batch(&c.p, cfg.vocab_size, C);
    c.R = malloc(sizeof(float) * (size_t)c.p.T * C);
    for (int i = 0; i < c.p.T * C; i++) c.R[i] = 0.2f * frand();
    float *dh = calloc((size_t)c.p.T * C, sizeof(float)), *dinj = calloc(2 * (size_t)C, 4);
    hc_tbatch b = tbatch_of(&c.p);
    hc_grad_zero(&x.t);
    CHECK_OK(hc_tmodel_forward(x.m, &b, &eb));
    hc_tmodel_lm_loss(x.m, c.p.labels, 1.0f, dh);
    for (int i = 0; i < c.p.T * C; i++) dh[i] += c.R[i];
    CHECK_OK(hc_tmodel_backward(x.m, dh, dinj, &eb));
    const float h = 1e-2f;
    int per = under_valgrind() ? 1 : 3, bad = 0, n = 0;
    double worst = 0.0;
    for (int p = -1; p < x.t.n; p++) { /* p = -1: the injected vectors */
        size_t numel = p < 0 ? 2 * (size_t)C : x.t.params[p].numel;
        float *w = p < 0 ? c.p.inject : x.t.w + x.t.params[p].offset;
        const float *g = p < 0 ? dinj : x.t.g + x.t.params[p].offset;
        for (int k = 0; k < per; k++) {
            size_t i = urand((uint32_t)numel);
            float keep = w[i];
            w[i] = keep + h;
            double fp = fd_loss(&c);
            w[i] = keep - h;
            double fm = fd_loss(&c);
            w[i] = keep;
            double num = (fp - fm) / (2.0 * h), err = fabs(num - g[i]);
            double tol = 2e-3 + 2e-2 * fabs(num);
            worst = err / tol > worst ? err / tol : worst;
            n++;
            if (err > tol && bad++ < 5)
                fprintf(stderr, "  %s %s[%zu]: numeric %.6g analytic %.6g\n", what,
                        p < 0 ? "inject" : x.t.params[p].name, i, num, (double)g[i]);
        }
    }
    CHECKF(bad == 0, "%s: %d of %d coordinates off", what, bad, n);
    /* one random direction over every parameter at once */
    float *u = malloc(sizeof(float) * x.t.total), *w0 = malloc(sizeof(float) * x.t.total);
    double gu = 0.0;
    for (size_t i = 0; i < x.t.total; i++) {
        u[i] = frand();
        w0[i] = x.t.w[i];
        gu += (double)u[i] * x.t.g[i];
    }
    /* central differences at h and 3h, Richardson-extrapolated (error O(h^4)); f32 round-off
     * of the loss (~1e-7) over 2h stays below the tolerance */
    double dd[2];
    for (int r = 0; r < 2; r++) {
        const float hd = r ? 3e-3f : 1e-3f;
        for (size_t i = 0; i < x.t.total; i++) x.t.w[i] = w0[i] + hd * u[i];
        double fp = fd_loss(&c);
        for (size_t i = 0; i < x.t.total; i++) x.t.w[i] = w0[i] - hd * u[i];
        double fm = fd_loss(&c);
        dd[r] = (fp - fm) / (2.0 * hd);
    }
    memcpy(x.t.w, w0, sizeof(float) * x.t.total);
    double num = dd[0] + (dd[0] - dd[1]) / 8.0;
    CHECKF(fabs(num - gu) <= 2e-4 * fabs(gu) + 5e-4, "%s: directional derivative %.6g vs g.u %.6g",
           what, num, gu);
    printf("  %-22s FD: %d coordinates, worst err/tol %.2f; direction %.7g vs g.u %.7g\n", what, n,
           worst, num, gu);
    free(u), free(w0), free(dh), free(dinj), free(c.R), free(c.p.inject);
    tm_free(&x);
}

/* ---- 4. export round trip and errors ---------------------------------------------------------- */

static void test_export(hc_backend *be, const char *tests, const char *fx) {
    char dir[1200], path[256];
    snprintf(dir, sizeof dir, "%s/data/llm/%s", tests, fx);
    snprintf(path, sizeof path, "/tmp/hc_test_tmodel_%d.safetensors", (int)getpid());
    hc_errbuf eb = {{0}};
    hc_llm_config cfg;
    hc_safetensors *st = NULL, *out = NULL;
    int rc = hc_hfconfig_load(&cfg, dir, &eb);
    if (!rc) rc = hc_st_open(&st, dir, &eb);
    CHECKF(rc == 0, "%s: %s", fx, eb.msg);
    tm x;
    if (rc || tm_make(&x, &cfg, "creative_llm.", 1)) {
        hc_st_close(st);
        return;
    }
    CHECK_OK(hc_tmodel_load(x.m, st, "", &eb));
    /* as stored: every item in its checkpoint tensor's dtype */
    hc_st_write_item *it = NULL;
    size_t n_it = 0;
    CHECK_OK(hc_tmodel_export(x.m, &x.t, HC_DTYPE_AS_STORED, &it, &n_it, &eb));
    int same_dt = n_it == (size_t)x.t.n;
    for (size_t i = 0; same_dt && i < n_it; i++) {
        const hc_st_tensor *src = hc_st_find(st, it[i].name + strlen("creative_llm."));
        same_dt = src && src->dtype == it[i].dtype;
    }
    CHECKF(same_dt, "%s: as-stored export changed a dtype", fx);
    hc_tmodel_export_free(it, n_it);
    /* f32 export reloads bit for bit, under the package prefix */
    rc = hc_tmodel_save(x.m, &x.t, HC_DTYPE_F32, path, &eb);
    CHECKF(rc == 0, "%s: save f32: %s", fx, eb.msg);
    if (!rc && !(rc = hc_st_open(&out, path, &eb))) {
        CHECK(hc_st_count(out) == (size_t)x.t.n);
        tm y;
        if (!tm_make(&y, &cfg, "", 1)) {
            CHECK_OK(hc_tmodel_load(y.m, out, "creative_llm.", &eb));
            CHECK(y.t.total == x.t.total &&
                  !memcmp(y.t.w, x.t.w, sizeof(float) * x.t.total));
            tm_free(&y);
        }
        hc_st_close(out);
        out = NULL;
    }
    /* bf16: round the master weights as the export does, then the engine must agree */
    rc = hc_tmodel_save(x.m, &x.t, HC_DTYPE_BF16, path, &eb);
    CHECKF(rc == 0, "%s: save bf16: %s", fx, eb.msg);
    int changed = 0;
    for (size_t i = 0; i < x.t.total; i++) {
        float r = hc_bf16_to_f32(hc_f32_to_bf16(x.t.w[i]));
        changed += r != x.t.w[i];
        x.t.w[i] = r;
    }
    CHECKF(cfg.torch_dtype == HC_DTYPE_BF16 ? changed == 0 : changed > 0,
           "%s: %d weights changed by bf16 rounding", fx, changed);
    hc_llm *llm = NULL;
    if (!rc && !(rc = hc_st_open(&out, path, &eb))) {
        const hc_st_tensor *e = hc_st_find(out, "creative_llm.model.embed_tokens.weight");
        CHECK(e && e->dtype == HC_DTYPE_BF16);
        CHECK(hc_st_find(out, "creative_llm.lm_head.weight") ? !cfg.tie_word_embeddings
                                                             : cfg.tie_word_embeddings);
        rc = hc_llm_load_from(&llm, be, &cfg, out, "creative_llm.", NULL, &eb);
        CHECKF(rc == 0, "%s: engine load of the export: %s", fx, eb.msg);
    }
    if (llm) {
        pbatch p;
        make_batch(&p, cfg.vocab_size, cfg.hidden_size);
        size_t n = (size_t)p.T * cfg.hidden_size;
        float *hid = malloc(sizeof(float) * n);
        float *lg = malloc(sizeof(float) * (size_t)p.T * cfg.vocab_size);
        hc_tbatch b = tbatch_of(&p);
        if (!engine_forward(llm, &p, hid, lg) && !hc_tmodel_forward(x.m, &b, &eb)) {
            double e = hc_test_rel_err(hc_tmodel_hidden(x.m), hid, n);
            printf("  %-22s bf16 export: engine vs tmodel hidden rel err %.2e\n", fx, e);
            CHECKF(e <= 1e-5, "%s: bf16 export hidden rel err %.3g", fx, e);
        }
        free(hid), free(lg), free(p.inject);
        hc_llm_free(llm);
    }
    hc_st_close(out);
    unlink(path);
    tm_free(&x);
    hc_st_close(st);
}

/* tensors dropped, reshaped or retyped in a written checkpoint: clear load errors */
static void test_load_errors(const char *tests) {
    char dir[1200], path[256];
    snprintf(dir, sizeof dir, "%s/data/train/model_qwen3", tests);
    snprintf(path, sizeof path, "/tmp/hc_test_tmodel_err_%d.safetensors", (int)getpid());
    hc_errbuf eb = {{0}};
    hc_llm_config cfg;
    if (hc_hfconfig_load(&cfg, dir, &eb)) {
        CHECKF(0, "config: %s", eb.msg);
        return;
    }
    tm x;
    if (tm_make(&x, &cfg, "", 1)) return;
    hc_st_write_item *it = NULL;
    size_t n = 0;
    CHECK_OK(hc_tmodel_export(x.m, &x.t, HC_DTYPE_F32, &it, &n, &eb));
    const char *victim = "model.layers.1.mlp.up_proj.weight";
    int vi = -1;
    for (size_t i = 0; i < n; i++)
        if (!strcmp(it[i].name, victim)) vi = (int)i;
    CHECK(vi >= 0);
    for (int mode = 0; vi >= 0 && mode < 3; mode++) {
        hc_st_write_item *w = malloc(sizeof *w * n);
        memcpy(w, it, sizeof *w * n);
        size_t nw = n;
        if (mode == 0) { /* missing */
            w[vi] = w[n - 1];
            nw--;
        } else if (mode == 1) { /* misshaped */
            w[vi].shape[0] -= 1;
        } else { /* integer */
            w[vi].dtype = HC_DTYPE_I32;
        }
        hc_safetensors *st = NULL;
        int rc = hc_st_write(path, w, nw, &eb);
        if (!rc) rc = hc_st_open(&st, path, &eb);
        CHECKF(rc == 0, "writing the broken checkpoint: %s", eb.msg);
        if (!rc) {
            eb.msg[0] = 0;
            rc = hc_tmodel_load(x.m, st, "", &eb);
            int want = mode == 0 ? HC_ERR_NOTFOUND : mode == 1 ? HC_ERR_MISMATCH
                                                               : HC_ERR_UNSUPPORTED;
            CHECKF(rc == want && strstr(eb.msg, victim), "mode %d: rc %d, message '%s'", mode, rc,
                   eb.msg);
            if (mode == 1) CHECKF(strstr(eb.msg, "[47, 32]") && strstr(eb.msg, "[48, 32]"),
                                  "misshape message lacks both shapes: %s", eb.msg);
            printf("  load error %d: %s\n", mode, eb.msg);
            hc_st_close(st);
        }
        free(w);
    }
    hc_tmodel_export_free(it, n);
    unlink(path);
    tm_free(&x);
}

static void test_batch_errors(void) {
    static const char json[] =
        "{\"architectures\":[\"LlamaForCausalLM\"],\"model_type\":\"llama\",\"vocab_size\":20,"
        "\"hidden_size\":8,\"intermediate_size\":16,\"num_hidden_layers\":1,"
        "\"num_attention_heads\":2,\"num_key_value_heads\":1}";
    hc_llm_config cfg;
    hc_errbuf eb = {{0}};
    CHECK_OK(hc_hfconfig_parse(&cfg, json, strlen(json), &eb));
    tm x;
    float dh[4 * 8] = {0}, inj[2 * 8] = {0};
    /* before binding / before any forward */
    hc_ptab t0;
    hc_ptab_init(&t0);
    hc_tmodel *m0 = NULL;
    CHECK_OK(hc_tmodel_add_params(&m0, &cfg, &t0, "", 1, &eb));
    hc_tbatch b0 = {1, (int32_t[]){1}, (int32_t[]){0}, NULL, 0, NULL, NULL};
    CHECK(hc_tmodel_forward(m0, &b0, &eb) == HC_ERR_INVAL);
    CHECK(hc_tmodel_bind(m0, &t0, &eb) == HC_ERR_INVAL && strstr(eb.msg, "not allocated"));
    hc_tmodel_free(m0);
    hc_ptab_free(&t0);
    if (tm_make(&x, &cfg, "", 1)) return;
    CHECK(hc_tmodel_backward(x.m, dh, NULL, &eb) == HC_ERR_INVAL);
    CHECK(isnan(hc_tmodel_lm_loss(x.m, (int32_t[]){1}, 1.0f, NULL)));
    struct {
        int T;
        int32_t ids[4], pos[4], seg[4];
        int ninj;
        int32_t rows[2];
        int want;
        const char *msg;
    } cases[] = {
        {0, {0}, {0}, {0}, 0, {0}, HC_ERR_INVAL, "empty"},
        {3, {1, 2, 3}, {0, 1, 2}, {0, 2, 2}, 0, {0}, HC_ERR_INVAL, "segment"},
        {3, {1, 2, 3}, {0, 1, 2}, {1, 1, 1}, 0, {0}, HC_ERR_INVAL, "segment"},
        {3, {1, 20, 3}, {0, 1, 2}, {0, 0, 0}, 0, {0}, HC_ERR_RANGE, "vocabulary"},
        {3, {1, -2, 3}, {0, 1, 2}, {0, 0, 0}, 0, {0}, HC_ERR_RANGE, "vocabulary"},
        {3, {1, 2, 3}, {0, -1, 2}, {0, 0, 0}, 0, {0}, HC_ERR_RANGE, "negative position"},
        {3, {1, -1, 3}, {0, 1, 2}, {0, 0, 0}, 0, {0}, HC_ERR_INVAL, "no injected vector"},
        {3, {1, 2, 3}, {0, 1, 2}, {0, 0, 0}, 1, {1}, HC_ERR_INVAL, "must have id -1"},
        {3, {1, -1, 3}, {0, 1, 2}, {0, 0, 0}, 2, {1, 1}, HC_ERR_INVAL, "injected twice"},
        {3, {1, -1, 3}, {0, 1, 2}, {0, 0, 0}, 1, {3}, HC_ERR_RANGE, "outside the batch"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        hc_tbatch b = {cases[i].T, cases[i].ids, cases[i].pos, cases[i].seg, cases[i].ninj,
                       cases[i].rows, inj};
        eb.msg[0] = 0;
        int rc = hc_tmodel_forward(x.m, &b, &eb);
        CHECKF(rc == cases[i].want && strstr(eb.msg, cases[i].msg), "case %zu: rc %d, '%s'", i,
               rc, eb.msg);
        CHECK(hc_tmodel_hidden(x.m) == NULL && hc_tmodel_rows(x.m) == 0);
    }
    /* a valid batch, then a label out of range */
    hc_tbatch ok = {2, (int32_t[]){4, -1}, (int32_t[]){3, 4}, NULL, 1, (int32_t[]){1}, inj};
    CHECK_OK(hc_tmodel_forward(x.m, &ok, &eb));
    CHECK(isnan(hc_tmodel_lm_loss(x.m, (int32_t[]){3, 20}, 1.0f, NULL)));
    CHECK(hc_tmodel_lm_loss(x.m, (int32_t[]){-100, -100}, 1.0f, NULL) == 0.0);
    CHECK(hc_tmodel_backward(x.m, NULL, NULL, &eb) == HC_ERR_INVAL);
    CHECK_OK(hc_tmodel_backward(x.m, dh, inj, &eb));
    /* bad config and export dtype */
    hc_llm_config bad = cfg;
    bad.n_kv_heads = 3;
    hc_tmodel *mb = NULL;
    hc_ptab tb;
    hc_ptab_init(&tb);
    CHECK(hc_tmodel_add_params(&mb, &bad, &tb, "", 1, &eb) == HC_ERR_INVAL && !mb &&
          strstr(eb.msg, "kv heads"));
    CHECK(hc_tmodel_add_params(&mb, &cfg, &x.t, "", 1, &eb) == HC_ERR_INVAL && !mb);
    hc_ptab_free(&tb);
    hc_st_write_item *it = NULL;
    size_t n = 0;
    CHECK(hc_tmodel_export(x.m, &x.t, HC_DTYPE_I32, &it, &n, &eb) == HC_ERR_INVAL && !it);
    tm_free(&x);
}

int main(int argc, char **argv) {
    const char *tests = argc > 1 ? argv[1] : "tests";
    hc_backend *be = NULL;
    CHECK_OK(hc_backend_cpu_create(&be, 2));
    if (!be) return hc_test_finish("test_train_model");
    static const char *parity[] = {"llama_gqa_f32", "qwen3_gqa_f32", "llama_mha_bf16_tied",
                                   "qwen3_tied_bf16"};
    for (size_t i = 0; i < sizeof parity / sizeof parity[0]; i++) test_parity(be, tests, parity[i]);
    test_vs_torch(tests, "model_llama");
    test_vs_torch(tests, "model_qwen3");
    test_checkpoint(tests, "model_llama");
    test_checkpoint(tests, "model_qwen3");
    test_fd("{\"architectures\":[\"LlamaForCausalLM\"],\"model_type\":\"llama\","
            "\"vocab_size\":30,\"hidden_size\":16,\"intermediate_size\":24,"
            "\"num_hidden_layers\":2,\"num_attention_heads\":4,\"num_key_value_heads\":2,"
            "\"rms_norm_eps\":1e-5,\"tie_word_embeddings\":false}",
            "llama gqa untied");
    test_fd("{\"architectures\":[\"Qwen3ForCausalLM\"],\"model_type\":\"qwen3\","
            "\"vocab_size\":25,\"hidden_size\":16,\"intermediate_size\":20,"
            "\"num_hidden_layers\":2,\"num_attention_heads\":2,\"num_key_value_heads\":1,"
            "\"head_dim\":6,\"rms_norm_eps\":1e-6,\"rope_theta\":1000000.0,"
            "\"tie_word_embeddings\":true}",
            "qwen3 mqa tied");
    test_export(be, tests, "llama_gqa_f32");
    test_export(be, tests, "qwen3_tied_bf16");
    test_load_errors(tests);
    test_batch_errors();
    hc_backend_free(be);
    return hc_test_finish("test_train_model");
}
