/* test_train_creator_ref.c: the whole HLLM-Creator training step (trainer/creator_train.h) on the
 * tiny package against PyTorch autograd.
 *
 * Fixtures tests/data/train/creator_{step,nextitem}.safetensors are written by
 * tests/reference/make_train_creator_fixture.py (float64 torch, transformers Llama/Qwen3 over the
 * package's weights, each sequence run alone at batch 1; see the script for the layouts). The
 * rows' ids come from the fixture. Checked:
 *   - the prompt ids the trainer derived from creator.json (prompt1, user prompt, profile_prompt,
 *     eos) equal the ones the fixture was computed with; the cls negatives hc_cls_pick_negatives
 *     draws from the fixture's generator state equal the Python picker's, for every step;
 *   - hc_ctrain_step with weights {1,1,1,1}: each loss term within 1e-5 relative, the labelled
 *     token counts exactly; the gradient of EVERY parameter of the table within 1e-4 relative,
 *     norm-wise per tensor (a strided sample, the full L2 norm and, for the three embedding
 *     tables, every row the batch uses; a gradient the reference has exactly 0 must be 0);
 *   - 5 steps of hc_adamw_step_range (lr 1e-3, weight decay 0.01) with a fresh step each: every
 *     step's four losses within 1e-4 relative and every parameter after them within 1e-4;
 *   - the same for hc_ctrain_nextitem (loss, pair count, gradients, 5 AdamW steps).
 * Under HC_UNDER_VALGRIND=1 (about 1.5 min): the four-term step's AdamW run is skipped and the
 * next-item's takes 2 steps, comparing their losses only (the second comes after an AdamW update;
 * the fixture stores the parameters after 5); the gradient comparisons are unchanged. HC_TEST_VERBOSE=1 prints every tensor's error. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "creator_train.h"
#include "heads.h"
#include "io/safetensors.h"
#include "testutil.h"

static size_t numel_of(const hc_st_tensor *t) {
    size_t n = 1;
    for (int i = 0; i < t->n_dims; i++)
        n *= (size_t)t->shape[i];
    return n;
}

/* A fixture tensor copied out (4-byte elements, any alignment); NULL (and a failed check) when
 * absent or of another dtype. */
static void *ref_get(const hc_safetensors *st, const char *name, hc_dtype dt, size_t *n) {
    const hc_st_tensor *t = hc_st_find(st, name);
    CHECKF(t != NULL, "fixture lacks %s", name);
    if (!t) return NULL;
    CHECKF(t->dtype == dt, "fixture %s has dtype %s", name, hc_dtype_name(t->dtype));
    if (t->dtype != dt) return NULL;
    size_t m = numel_of(t);
    void *q = calloc(m ? m : 1, 4);
    if (q && m) memcpy(q, t->data, 4 * m);
    if (n) *n = m;
    return q;
}

static double worst = 0;
static char worst_name[240];
static int verbose; /* HC_TEST_VERBOSE=1: every tensor's error */
static void track(const char *what, const char *name, double e) {
    if (verbose) printf("  %s %s: %.3g\n", what, name, e);
    if (e > worst || isnan(e)) {
        worst = isnan(e) ? INFINITY : e;
        snprintf(worst_name, sizeof worst_name, "%s %s", what, name);
    }
}

/* ||a - b|| / ||b||; with ||b|| == 0, ||a|| itself (must be 0) */
static double rel_norm(const float *a, const float *b, size_t n, size_t sa, size_t sb) {
    double d = 0, z = 0;
    for (size_t i = 0; i < n; i++) {
        const double x = a[i * sa], y = b[i * sb];
        d += (x - y) * (x - y);
        z += y * y;
    }
    return z > 0 ? sqrt(d / z) : sqrt(d);
}

/* The reference norm of parameter P in set tag (-1 when absent). */
static double ref_norm(const hc_safetensors *ref, const char *tag, const char *name) {
    char key[260];
    snprintf(key, sizeof key, "%sn.%s", tag, name);
    const hc_st_tensor *t = hc_st_find(ref, key);
    float v[2];
    if (!t || t->dtype != HC_DTYPE_F32 || numel_of(t) != 2) return -1;
    memcpy(v, t->data, sizeof v);
    return (double)v[0] + v[1];
}

/* Gradients the reference has at the rounding level only (0 < norm < ZERO_REL x the largest
 * tensor gradient norm; exactly 0 are those off the loss's path): structurally zero ones, e.g.
 * the cls_tower's token_forward.net.3.bias, whose per-token shift every later LayerNorm removes
 * (float64: ~1e-17; the C float32 sums leave ~1e-8). Their gradient (and any exactly-0 one) is
 * checked to be below ZERO_ABS x the largest norm, and as AdamW turns such noise into steps of
 * up to lr (the update is m / (sqrt(v) + eps)), after the steps those parameters are only checked
 * to lie within steps x lr of the reference, element by element. Returns the largest norm. */
#define ZERO_REL 1e-12
#define ZERO_ABS 1e-7
static double grad_scale(const hc_safetensors *ref, const hc_ptab *t, unsigned char *zero) {
    double G = 0;
    for (int i = 0; i < t->n; i++) {
        const double r = ref_norm(ref, "g", t->params[i].name);
        G = r > G ? r : G;
    }
    for (int i = 0; zero && i < t->n; i++) {
        const double r = ref_norm(ref, "g", t->params[i].name);
        zero[i] = r > 0 && r < ZERO_REL * G;
    }
    return G;
}

/* Compares one set (tag "g": t->g, "p": t->w) of the fixture with the table, every parameter:
 * ||a - b|| / ||b|| on the strided sample, the full norm's relative difference, and the rows
 * of the embedding tables the batch uses; a reference norm under floor (> 0: gradients) is a
 * zero gradient, checked as ||a|| <= floor. zero (p sets): parameters checked only to within
 * abs_bound per element (see grad_scale). */
static double cmp_set(const hc_safetensors *ref, const hc_ptab *t, const char *tag,
                      const char *what, double tol, double floor, const unsigned char *zero,
                      double abs_bound) {
    double w_set = 0, zmax = 0;
    const float *base = tag[0] == 'g' ? t->g : t->w;
    char key[260];
    for (int i = 0; i < t->n; i++) {
        const hc_param *P = &t->params[i];
        const float *x = base + P->offset;
        const size_t stride = P->numel / 97 > 1 ? P->numel / 97 : 1;
        const size_t ns = (P->numel + stride - 1) / stride;
        size_t n;
        int continue_z = 0;
        snprintf(key, sizeof key, "%ss.%s", tag, P->name);
        float *s = ref_get(ref, key, HC_DTYPE_F32, &n);
        const double rn = ref_norm(ref, tag, P->name);
        CHECKF(rn >= 0, "fixture lacks %sn.%s", tag, P->name);
        CHECKF(!s || n == ns, "%s: %zu samples, expected %zu", key, n, ns);
        if (s && n == ns && rn >= 0 && zero && zero[i]) {
            double dmax = 0;
            for (size_t j = 0; j < ns; j++) {
                const double d = fabs((double)x[j * stride] - s[j]);
                dmax = d > dmax ? d : dmax;
            }
            CHECKF(dmax <= abs_bound, "%s %s (zero gradient): |diff| %.3g > %.3g", what, P->name,
                   dmax, abs_bound);
            printf("  %s %s: zero gradient in the reference, max |diff| %.3g (bound %.3g)\n", what,
                   P->name, dmax, abs_bound);
        } else if (s && n == ns && rn >= 0) {
            double cn = 0;
            for (size_t j = 0; j < P->numel; j++)
                cn += (double)x[j] * x[j];
            cn = sqrt(cn);
            /* a zero reference gradient: |a| relative to the floor (ZERO_ABS x the largest) */
            const int z = floor > 0 && rn < floor;
            const double e_s = z ? cn / floor : rel_norm(x, s, ns, stride, 1);
            const double e_n = z ? cn / floor : fabs(cn - rn) / (rn > 0 ? rn : 1);
            const double e = e_s > e_n ? e_s : e_n;
            CHECKF(z ? e <= 1 : e <= tol, "%s %s: sample rel err %.3g, norm %.9g vs %.9g%s", what,
                   P->name, e_s, cn, rn, z ? " (a zero gradient: norm over the floor)" : "");
            if (z) {
                if (verbose) printf("  %s %s: zero gradient, |C| %.3g\n", what, P->name, cn);
                continue_z = 1;
            }
            if (!continue_z) {
                track(what, P->name, e);
                if (e > w_set) w_set = e;
            } else if (cn > zmax) {
                zmax = cn;
            }
        }
        free(s);
        /* the embedding rows of the ids the batch uses */
        snprintf(key, sizeof key, "%si.%s", tag, P->name);
        if (hc_st_find(ref, key)) {
            size_t ni, nrw;
            int32_t *ids = ref_get(ref, key, HC_DTYPE_I32, &ni);
            snprintf(key, sizeof key, "%sr.%s", tag, P->name);
            float *rows = ref_get(ref, key, HC_DTYPE_F32, &nrw);
            const size_t H = (size_t)P->shape[1];
            CHECKF(ids && rows && nrw == ni * H, "%s %s: bad embedding rows", what, P->name);
            if (ids && rows && nrw == ni * H) {
                double e = 0;
                for (size_t j = 0; j < ni; j++) {
                    double ej = rel_norm(x + (size_t)ids[j] * H, rows + j * H, H, 1, 1);
                    e = ej > e ? ej : e;
                }
                CHECKF(e <= tol, "%s %s: worst used row rel err %.3g", what, P->name, e);
                track(what, P->name, e);
                if (e > w_set) w_set = e;
            }
            free(ids);
            free(rows);
        }
    }
    if (floor > 0)
        printf("  %s: largest gradient norm of a zero reference gradient %.3g (floor %.3g)\n", what,
               zmax, floor);
    return w_set;
}

typedef struct fx_rows {
    int32_t *n_items, *item_lens, *item_ids, *f[4], *nf[4]; /* ad, prompt2, response, profile */
    hc_ctrain_row rows[16];
    int n;
} fx_rows;

static int rows_load(const hc_safetensors *ref, fx_rows *r) {
    static const char *const fn[4] = {"ad", "prompt2", "response", "profile"};
    memset(r, 0, sizeof *r);
    size_t n, ni, nt;
    char key[64];
    r->n_items = ref_get(ref, "row.n_items", HC_DTYPE_I32, &n);
    r->item_lens = ref_get(ref, "row.item_lens", HC_DTYPE_I32, &ni);
    r->item_ids = ref_get(ref, "row.item_ids", HC_DTYPE_I32, &nt);
    int ok = r->n_items && r->item_lens && r->item_ids && n >= 1 && n <= 16;
    for (int k = 0; k < 4; k++) {
        snprintf(key, sizeof key, "row.%s", fn[k]);
        r->f[k] = ref_get(ref, key, HC_DTYPE_I32, NULL);
        snprintf(key, sizeof key, "row.n_%s", fn[k]);
        size_t m;
        r->nf[k] = ref_get(ref, key, HC_DTYPE_I32, &m);
        ok = ok && r->f[k] && r->nf[k] && m == n;
    }
    CHECK(ok);
    if (!ok) return 0;
    size_t oi = 0, ot = 0, of[4] = {0};
    for (size_t i = 0; i < n; i++) {
        hc_ctrain_row *w = &r->rows[i];
        w->n_items = r->n_items[i];
        w->item_lens = r->item_lens + oi;
        w->item_ids = r->item_ids + ot;
        for (int j = 0; j < w->n_items; j++)
            ot += (size_t)r->item_lens[oi++];
        w->ad_ids = r->f[0] + of[0];
        w->n_ad = r->nf[0][i];
        w->prompt2 = r->f[1] + of[1];
        w->n_prompt2 = r->nf[1][i];
        w->response = r->f[2] + of[2];
        w->n_response = r->nf[2][i];
        w->profile_ids = r->f[3] + of[3];
        w->n_profile = r->nf[3][i];
        for (int k = 0; k < 4; k++)
            of[k] += (size_t)r->nf[k][i];
    }
    CHECK(oi == ni && ot == nt);
    r->n = (int)n;
    return (int)n;
}

static void rows_free(fx_rows *r) {
    free(r->n_items);
    free(r->item_lens);
    free(r->item_ids);
    for (int k = 0; k < 4; k++) {
        free(r->f[k]);
        free(r->nf[k]);
    }
}

static void cmp_ids(const hc_safetensors *ref, const char *name, const int32_t *got, int n) {
    size_t m;
    int32_t *want = ref_get(ref, name, HC_DTYPE_I32, &m);
    CHECKF(want && (size_t)n == m && (n == 0 || !memcmp(got, want, sizeof(int32_t) * m)),
           "%s: the trainer's ids differ from the fixture's (%d vs %zu ids)", name, n, m);
    free(want);
}

static double rel1(double a, double b) {
    return fabs(a - b) / (fabs(b) > 1e-30 ? fabs(b) : 1e-30);
}

/* AdamW as the script runs it (torch.optim.AdamW(lr 1e-3, weight_decay 0.01), betas and eps the
 * defaults); the fixture's adam.cfg must say the same. */
static hc_adamw_cfg adam_cfg(const hc_safetensors *ref) {
    hc_adamw_cfg a = hc_adamw_default();
    a.lr = 1e-3;
    a.weight_decay = 0.01;
    size_t n;
    float *c = ref_get(ref, "adam.cfg", HC_DTYPE_F32, &n);
    CHECKF(c && n == 3 && c[0] == (float)a.lr && c[1] == (float)a.weight_decay && c[2] == 5.0f,
           "the fixture's AdamW settings differ from the test's");
    free(c);
    return a;
}

static void test_step(const char *tests, const char *pkg, int vg) {
    char path[1200];
    hc_errbuf eb = {{0}};
    snprintf(path, sizeof path, "%s/data/train/creator_step.safetensors", tests);
    hc_safetensors *ref = NULL;
    CHECK_OK(hc_st_open(&ref, path, &eb));
    hc_ctrain *tr = NULL;
    CHECK_OK(hc_ctrain_create(&tr, pkg, 1, &eb));
    if (!ref || !tr) {
        hc_st_close(ref);
        hc_ctrain_free(tr);
        return;
    }
    cmp_ids(ref, "ids.prompt1", tr->c->prompt1_ids, tr->c->n_prompt1);
    cmp_ids(ref, "ids.user_prompt", tr->c->user_prompt_ids, tr->c->n_user_prompt);
    cmp_ids(ref, "ids.profile_prompt", tr->profile_prompt, tr->n_profile_prompt);
    cmp_ids(ref, "ids.eos", &tr->eos, 1);
    fx_rows fr;
    const int n = rows_load(ref, &fr);
    size_t m;
    int32_t *rng0 = ref_get(ref, "cls.rng", HC_DTYPE_I32, &m);
    int32_t *negs = ref_get(ref, "cls.neg", HC_DTYPE_I32, &m);
    const int k = hc_cls_num_negatives(n, tr->cls_neg_num);
    float *terms = ref_get(ref, "loss.terms", HC_DTYPE_F32, NULL);
    int32_t *counts = ref_get(ref, "loss.counts", HC_DTYPE_I32, NULL);
    float *adam_loss = ref_get(ref, "adam.loss", HC_DTYPE_F32, NULL);
    const int steps = negs && k > 0 ? (int)(m / ((size_t)n * (size_t)k)) : 0;
    CHECK(n >= 2 && steps == 5 && rng0 && terms && counts && adam_loss);
    if (!(n >= 2 && steps == 5 && rng0 && terms && counts && adam_loss)) goto out;
    const hc_ctrain_weights w = {1, 1, 1, 1};
    int32_t *neg = malloc(sizeof(int32_t) * (size_t)n * (size_t)k);

    /* the gradient of the four-term step */
    uint64_t probe = (uint64_t)rng0[0];
    CHECK_OK(hc_cls_pick_negatives(&probe, n, k, neg, &eb));
    CHECKF(!memcmp(neg, negs, sizeof(int32_t) * (size_t)n * (size_t)k),
           "step: the negatives differ from the fixture's draw");
    tr->cls_rng = (uint64_t)rng0[0];
    hc_grad_zero(&tr->t);
    hc_ctrain_losses l;
    CHECK_OK(hc_ctrain_step(tr, fr.rows, n, &w, 1.0f, 1, &l, &eb));
    CHECKF(tr->cls_rng == probe, "the step drew its negatives from another state");
    const double got[4] = {l.creative, l.recon, l.align, l.cls};
    static const char *const tn[4] = {"creative", "recon", "align", "cls"};
    double wl = 0;
    for (int i = 0; i < 4; i++) {
        const double e = rel1(got[i], terms[i]);
        CHECKF(e <= 1e-5, "L_%s: %.9g, reference %.9g (rel %.3g)", tn[i], got[i], terms[i], e);
        wl = e > wl ? e : wl;
    }
    CHECKF(l.n_creative == counts[0] && l.n_recon == counts[1], "token counts %d %d vs %d %d",
           l.n_creative, l.n_recon, counts[0], counts[1]);
    unsigned char *zero = calloc((size_t)tr->t.n, 1);
    const double G = grad_scale(ref, &tr->t, zero);
    const double wg = cmp_set(ref, &tr->t, "g", "step grad", 1e-4, ZERO_ABS * G, NULL, 0);
    printf("step: losses worst rel %.3g (creative %.6g recon %.6g align %.6g cls %.6g); "
           "gradients of %d tensors worst rel %.3g\n",
           wl, l.creative, l.recon, l.align, l.cls, tr->t.n, wg);

    /* 5 AdamW steps */
    const hc_adamw_cfg ac = adam_cfg(ref);
    const int n_steps = vg ? 0 : steps;
    tr->cls_rng = (uint64_t)rng0[0];
    double wa = 0;
    for (int s = 0; s < n_steps; s++) {
        probe = tr->cls_rng;
        CHECK_OK(hc_cls_pick_negatives(&probe, n, k, neg, &eb));
        CHECKF(!memcmp(neg, negs + (size_t)s * n * k, sizeof(int32_t) * (size_t)n * (size_t)k),
               "AdamW step %d: the negatives differ from the fixture's draw", s + 1);
        hc_grad_zero(&tr->t);
        CHECK_OK(hc_ctrain_step(tr, fr.rows, n, &w, 1.0f, 1, &l, &eb));
        const double g4[4] = {l.creative, l.recon, l.align, l.cls};
        for (int i = 0; i < 4; i++) {
            const double e = rel1(g4[i], adam_loss[s * 4 + i]);
            CHECKF(e <= 1e-4, "AdamW step %d: L_%s %.9g, reference %.9g (rel %.3g)", s + 1, tn[i],
                   g4[i], adam_loss[s * 4 + i], e);
            wa = e > wa ? e : wa;
        }
        hc_adamw_step_range(&tr->t, &ac, ac.lr, s + 1, 0, tr->t.total);
    }
    if (n_steps == steps) {
        const double wp = cmp_set(ref, &tr->t, "p", "step AdamW params", 1e-4, 0, zero,
                                  steps * ac.lr * 1.01);
        printf("step: %d AdamW steps: losses worst rel %.3g, parameters worst rel %.3g\n", steps,
               wa, wp);
    } else {
        printf("step: %d AdamW step(s) (valgrind): losses worst rel %.3g\n", n_steps, wa);
    }
    free(neg);
    free(zero);
out:
    free(rng0);
    free(negs);
    free(terms);
    free(counts);
    free(adam_loss);
    rows_free(&fr);
    hc_ctrain_free(tr);
    hc_st_close(ref);
}

static void test_nextitem(const char *tests, const char *pkg, int vg) {
    char path[1200];
    hc_errbuf eb = {{0}};
    snprintf(path, sizeof path, "%s/data/train/creator_nextitem.safetensors", tests);
    hc_safetensors *ref = NULL;
    CHECK_OK(hc_st_open(&ref, path, &eb));
    hc_ctrain *tr = NULL;
    CHECK_OK(hc_ctrain_create(&tr, pkg, 1, &eb));
    if (!ref || !tr) {
        hc_st_close(ref);
        hc_ctrain_free(tr);
        return;
    }
    fx_rows fr;
    const int n = rows_load(ref, &fr);
    size_t ns;
    float *lref = ref_get(ref, "loss", HC_DTYPE_F32, NULL);
    int32_t *np_ref = ref_get(ref, "n_pairs", HC_DTYPE_I32, NULL);
    float *adam_loss = ref_get(ref, "adam.loss", HC_DTYPE_F32, &ns);
    if (n < 1 || !lref || !np_ref || !adam_loss) goto out;
    hc_grad_zero(&tr->t);
    double loss;
    int np;
    CHECK_OK(hc_ctrain_nextitem(tr, fr.rows, n, 1.0f, 1, &loss, &np, &eb));
    const double el = rel1(loss, lref[0]);
    CHECKF(el <= 1e-5, "next-item loss %.9g, reference %.9g (rel %.3g)", loss, lref[0], el);
    CHECKF(np == np_ref[0], "next-item pairs %d, reference %d", np, np_ref[0]);
    unsigned char *zero = calloc((size_t)tr->t.n, 1);
    const double G = grad_scale(ref, &tr->t, zero);
    const double wg = cmp_set(ref, &tr->t, "g", "nextitem grad", 1e-4, ZERO_ABS * G, NULL, 0);
    printf("next-item: loss %.6g rel %.3g, %d pairs; gradients worst rel %.3g\n", loss, el, np,
           wg);
    const hc_adamw_cfg ac = adam_cfg(ref);
    const int steps = (int)ns, n_steps = vg ? 2 : steps;
    CHECK(steps == 5);
    double wa = 0;
    for (int s = 0; s < n_steps; s++) {
        hc_grad_zero(&tr->t);
        CHECK_OK(hc_ctrain_nextitem(tr, fr.rows, n, 1.0f, 1, &loss, &np, &eb));
        const double e = rel1(loss, adam_loss[s]);
        CHECKF(e <= 1e-4, "next-item AdamW step %d: loss %.9g, reference %.9g (rel %.3g)", s + 1,
               loss, adam_loss[s], e);
        wa = e > wa ? e : wa;
        hc_adamw_step_range(&tr->t, &ac, ac.lr, s + 1, 0, tr->t.total);
    }
    if (n_steps == steps) {
        const double wp = cmp_set(ref, &tr->t, "p", "nextitem AdamW params", 1e-4, 0, zero,
                                  steps * ac.lr * 1.01);
        printf("next-item: %d AdamW steps: losses worst rel %.3g, parameters worst rel %.3g\n",
               steps, wa, wp);
    } else {
        printf("next-item: %d AdamW step(s) (valgrind): losses worst rel %.3g\n", n_steps, wa);
    }
    free(zero);
out:
    free(lref);
    free(np_ref);
    free(adam_loss);
    rows_free(&fr);
    hc_ctrain_free(tr);
    hc_st_close(ref);
}

int main(int argc, char **argv) {
    const char *tests = argc > 1 ? argv[1] : "tests";
    const int vg = getenv("HC_UNDER_VALGRIND") != NULL;
    verbose = getenv("HC_TEST_VERBOSE") != NULL;
    char pkg[1100];
    snprintf(pkg, sizeof pkg, "%s/data/creator/tiny", tests);
    test_step(tests, pkg, vg);
    test_nextitem(tests, pkg, vg);
    printf("worst relative error: %.3g (%s)\n", worst, worst_name);
    return hc_test_finish("test_train_creator_ref");
}
