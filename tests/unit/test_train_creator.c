/* test_train_creator.c: the trainer's HLLM-Creator pipeline (trainer/creator_train.h) on the tiny
 * package, against the inference engine and against finite differences of itself:
 *  - u and U equal the engine's hc_creator_embed_users for the same histories;
 *  - L_creative equals the cross-entropy computed from the engine's creative-LLM logits with the
 *    engine's U injected (token mean over every row's response + eos);
 *  - the gradient of every stage (item LLM, [item] slot, user LLM, [user] slot, projector, creative
 *    LLM) agrees with central differences of the loss at the coordinates of largest gradient;
 *  - AdamW on one micro-batch lowers the loss; the saved weights load in the engine, whose U then
 *    equals the trainer's; bad rows are refused with a message naming the row and field. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "creator/creator_sched.h"
#include "creator_cases.h"
#include "creator_train.h"
#include "testutil.h"

typedef struct trow {
    hc_creq r;
    hc_creq_buf buf;
    int32_t *resp, *ad, *prof;
    size_t n_resp, n_ad, n_prof;
} trow;

static double engine_loss_row(hc_creator *c, const float *U, const hc_ctrain_row *row, int32_t eos,
                              int *n_lab) {
    const int P1 = c->n_prompt1, T = P1 + 1 + row->n_prompt2 + row->n_response + 1;
    int32_t *tok = malloc(sizeof(int32_t) * (size_t)T), *pos = malloc(sizeof(int32_t) * (size_t)T),
            *outi = malloc(sizeof(int32_t) * (size_t)T);
    const int V = c->creative->cfg.vocab_size;
    float *logits = malloc(sizeof(float) * (size_t)T * (size_t)V);
    int t = 0;
    for (int j = 0; j < P1; j++)
        tok[t++] = c->prompt1_ids[j];
    const int32_t slot = t;
    tok[t++] = c->pkg.slot_token_id;
    for (int j = 0; j < row->n_prompt2; j++)
        tok[t++] = row->prompt2[j];
    const int first = t;
    for (int j = 0; j < row->n_response; j++)
        tok[t++] = row->response[j];
    tok[t++] = eos;
    for (int j = 0; j < T; j++)
        pos[j] = outi[j] = j;
    hc_batch b = {.n_tokens = T,
                  .token = tok,
                  .n_inject = 1,
                  .inject_idx = &slot,
                  .inject = U,
                  .pos = pos,
                  .n_out = T,
                  .out_idx = outi};
    hc_errbuf eb = {{0}};
    CHECK_OK(hc_llm_forward(c->creative, &b, NULL, NULL, NULL, logits, &eb));
    double sum = 0;
    *n_lab = 0;
    for (int j = first - 1; j < T - 1; j++) { /* row j predicts row j + 1 */
        const float *l = logits + (size_t)j * V;
        double mx = l[0], z = 0;
        for (int v = 1; v < V; v++)
            mx = l[v] > mx ? l[v] : mx;
        for (int v = 0; v < V; v++)
            z += exp(l[v] - mx);
        sum += log(z) + mx - l[tok[j + 1]];
        (*n_lab)++;
    }
    free(tok);
    free(pos);
    free(outi);
    free(logits);
    return sum;
}

static int rows_from_cases(hc_creator *c, user_case *cs, int n, trow *tr, hc_ctrain_row *rows) {
    hc_tok_ctx *ic = hc_tok_ctx_new(c->item_tok), *cc = hc_tok_ctx_new(c->creative_tok);
    hc_errbuf eb = {{0}};
    for (int i = 0; i < n; i++) {
        memset(&tr[i], 0, sizeof tr[i]);
        hc_history h = {cs[i].titles, cs[i].lens, cs[i].n};
        CHECK_OK(hc_creator_tokenize_request(c, ic, cc, &h, cs[i].ad_title, cs[i].ad_title_len,
                                             cs[i].ad_desc, cs[i].ad_desc_len, &tr[i].r, &tr[i].buf,
                                             &eb));
        /* a target title: the ad's title with the newest history title in front */
        char resp[512];
        if (cs[i].n > 0)
            snprintf(resp, sizeof resp, "%.*s: %s", (int)cs[i].lens[cs[i].n - 1],
                     cs[i].titles[cs[i].n - 1], cs[i].ad_title ? cs[i].ad_title : "");
        else
            snprintf(resp, sizeof resp, "New: %s", cs[i].ad_title ? cs[i].ad_title : "");
        CHECK_OK(hc_tokenizer_encode(c->creative_tok, cc, resp, strlen(resp), 0, &tr[i].resp,
                                     &tr[i].n_resp, &eb));
        /* the ad title for L_cls, a profile for L_recon / L_align */
        CHECK_OK(hc_tokenizer_encode(c->item_tok, ic, cs[i].ad_title, cs[i].ad_title_len, 0,
                                     &tr[i].ad, &tr[i].n_ad, &eb));
        if (tr[i].n_ad > (size_t)c->pkg.max_item_tokens)
            tr[i].n_ad = (size_t)c->pkg.max_item_tokens;
        char prof[600];
        snprintf(prof, sizeof prof, "{\"Long-term Interest\": \"%.*s\", \"n\": %d}",
                 cs[i].n ? (int)cs[i].lens[0] : 0, cs[i].n ? cs[i].titles[0] : "", cs[i].n);
        CHECK_OK(hc_tokenizer_encode(c->creative_tok, cc, prof, strlen(prof), 0, &tr[i].prof,
                                     &tr[i].n_prof, &eb));
        rows[i] = (hc_ctrain_row){tr[i].r.n_items,   tr[i].r.item_lens, tr[i].r.item_ids,
                                  tr[i].r.prompt2,   tr[i].r.n_prompt2, tr[i].resp,
                                  (int)tr[i].n_resp, tr[i].ad,          (int)tr[i].n_ad,
                                  tr[i].prof,        (int)tr[i].n_prof};
    }
    hc_tok_ctx_free(ic);
    hc_tok_ctx_free(cc);
    return n;
}

/* ||a - b|| / ||b|| */
static double rel_err(const float *a, const float *b, size_t n) {
    double d = 0, z = 0;
    for (size_t i = 0; i < n; i++) {
        d += ((double)a[i] - b[i]) * ((double)a[i] - b[i]);
        z += (double)b[i] * b[i];
    }
    return sqrt(d / (z > 0 ? z : 1));
}

/* The loss terms of the checks (creative only, or all four) and the cls negatives' generator
 * state every evaluation starts from, so finite differences see the same negatives. */
static hc_ctrain_weights g_w = {1, 0, 0, 0};
static const uint64_t RNG0 = 77;
static int g_nextitem; /* 1: the checks are of the next-item loss */

static double loss_of(hc_ctrain *t, const hc_ctrain_row *rows, int n) {
    hc_ctrain_losses l;
    hc_errbuf eb = {{0}};
    if (g_nextitem) {
        double li;
        int np;
        CHECK_OK(hc_ctrain_nextitem(t, rows, n, 1.0f, 0, &li, &np, &eb));
        return li;
    }
    t->cls_rng = RNG0;
    CHECK_OK(hc_ctrain_step(t, rows, n, &g_w, 1.0f, 0, &l, &eb));
    return l.total;
}

/* Central differences at the k coordinates of largest |g| of parameter `name`. */
static void fd_check(hc_ctrain *t, const hc_ctrain_row *rows, int n, const char *name, int k,
                     double *worst) {
    int p = hc_ptab_find(&t->t, name);
    CHECKF(p >= 0, "no parameter %s", name);
    if (p < 0) return;
    const hc_param *P = &t->t.params[p];
    float *w = t->t.w + P->offset, *g = t->t.g + P->offset;
    for (int r = 0; r < k; r++) {
        size_t best = 0;
        for (size_t i = 1; i < P->numel; i++)
            if (fabsf(g[i]) > fabsf(g[best])) best = i;
        const float w0 = w[best], gi = g[best];
        const float eps = 1e-2f * (fabsf(w0) > 1.0f ? fabsf(w0) : 1.0f);
        w[best] = w0 + eps;
        double lp = loss_of(t, rows, n);
        w[best] = w0 - eps;
        double lm = loss_of(t, rows, n);
        w[best] = w0;
        double fd = (lp - lm) / (2.0 * (double)eps), err = fabs(fd - gi) / (fabs(gi) + 1e-3);
        CHECKF(fabs(fd - gi) <= 2e-3 + 3e-2 * fabs(gi),
               "%s[%zu]: backward %.6g, finite "
               "differences %.6g",
               name, best, gi, fd);
        if (err > *worst) *worst = err;
        g[best] = 0; /* next: the next largest */
    }
}

int main(int argc, char **argv) {
    const char *tests = argc > 1 ? argv[1] : "tests";
    const int vg = getenv("HC_UNDER_VALGRIND") != NULL;
    char pkg[1024], path[1100];
    snprintf(pkg, sizeof pkg, "%s/data/creator/tiny", tests);
    snprintf(path, sizeof path, "%s/data/creator/cases.jsonl", tests);
    user_case *cs = NULL;
    int n_cases = load_cases(path, &cs);
    enum { N = 4 };
    CHECK(n_cases >= N + 5); /* cases 5.. under valgrind */
    if (n_cases < N + 5) return hc_test_finish("test_train_creator");
    hc_errbuf eb = {{0}};
    hc_ctrain *t = NULL;
    CHECK_OK(hc_ctrain_create(&t, pkg, 1, &eb));
    if (!t) return hc_test_finish("test_train_creator");
    hc_creator *c = t->c;
    const int n = vg ? 2 : N, Hu = c->d_user, Hc = c->d_creative;
    trow tr[N];
    hc_ctrain_row rows[N];
    /* under valgrind: two users with short histories (cases 5 and 6: 6 and 4 titles) */
    user_case *cu = cs + (vg ? 5 : 0);
    rows_from_cases(c, cu, n, tr, rows);

    /* --- u, U against the engine ----------------------------------------------------------- */
    float *u = malloc(sizeof(float) * N * (size_t)Hu), *U = malloc(sizeof(float) * N * (size_t)Hc);
    float *ue = malloc(sizeof(float) * N * (size_t)Hu),
          *Ue = malloc(sizeof(float) * N * (size_t)Hc);
    CHECK_OK(hc_ctrain_embed(t, rows, n, u, U, &eb));
    hc_history hs[N];
    for (int i = 0; i < n; i++)
        hs[i] = (hc_history){cu[i].titles, cu[i].lens, cu[i].n};
    CHECK_OK(hc_creator_embed_users(c, hs, n, ue, Ue, &eb));
    double eu = rel_err(u, ue, (size_t)n * Hu), eU = rel_err(U, Ue, (size_t)n * Hc);
    CHECKF(eu < 1e-5 && eU < 1e-5, "u/U differ from the engine: %.3g %.3g", eu, eU);

    /* --- L_creative against the engine's logits ---------------------------------------------- */
    double sum = 0;
    int lab = 0;
    for (int i = 0; i < n; i++) {
        int nl;
        sum += engine_loss_row(c, Ue + (size_t)i * Hc, &rows[i], t->eos, &nl);
        lab += nl;
    }
    double l0;
    int nt;
    hc_grad_zero(&t->t);
    CHECK_OK(hc_ctrain_creative(t, rows, n, 1.0f, 1, &l0, &nt, &eb));
    CHECKF(nt == lab && fabs(l0 - sum / lab) < 1e-5 * fabs(l0),
           "loss %.8f (%d tokens), engine "
           "%.8f (%d tokens)",
           l0, nt, sum / lab, lab);

    /* --- gradients of every stage against finite differences --------------------------------- */
    const char *names[] = {"item_llm.model.embed_tokens.weight",
                           "item_llm.model.layers.0.self_attn.q_proj.weight",
                           "item_emb_tokens",
                           "user_llm.model.layers.0.mlp.down_proj.weight",
                           "emb_tokens",
                           "user_projector.weight",
                           "creative_llm.model.layers.0.self_attn.k_norm.weight",
                           "creative_llm.lm_head.weight"};
    double worst = 0;
    /* under valgrind (memory checking, each evaluation slow): every sixth tensor, one coordinate */
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i += vg ? 6 : 1)
        fd_check(t, rows, n, names[i], vg ? 1 : 2, &worst);
    printf("u err %.2e, U err %.2e, loss %.6f vs engine %.6f, worst finite-difference rel err "
           "%.2e\n",
           eu, eU, l0, sum / lab, worst);

    /* --- all four terms (the reference's weights 1): every head's gradient reaches the chain ---
     */
    g_w = (hc_ctrain_weights){1, 1, 1, 1};
    hc_grad_zero(&t->t);
    hc_ctrain_losses la;
    t->cls_rng = RNG0;
    CHECK_OK(hc_ctrain_step(t, rows, n, &g_w, 1.0f, 1, &la, &eb));
    CHECKF(la.recon > 0 && la.align > 0 && la.cls > 0 && la.n_recon > 0 &&
               fabs(la.total - (la.creative + la.recon + la.align + la.cls)) < 1e-9 * la.total,
           "losses: creative %.4f recon %.4f align %.4f cls %.4f total %.4f", la.creative, la.recon,
           la.align, la.cls, la.total);
    const char *names4[] = {"user_profile_projector.weight",
                            "user_profile_align_projector.weight",
                            "dec_emb_tokens",
                            "user_tower.weight",
                            "item_tower.weight",
                            "cls_tower.mlp_head.0.weight",
                            "emb_tokens",
                            "item_llm.model.layers.0.self_attn.q_proj.weight",
                            "creative_llm.model.layers.0.self_attn.k_norm.weight"};
    double worst4 = 0;
    /* under valgrind the finite differences of the four terms and of the next-item loss are
     * skipped (minutes there): test_train_creator_ref checks those gradients against PyTorch
     * under valgrind too */
    for (size_t i = 0; !vg && i < sizeof names4 / sizeof names4[0]; i++)
        fd_check(t, rows, n, names4[i], 2, &worst4);
    printf("all terms: creative %.4f recon %.4f align %.4f cls %.4f; worst finite-difference rel "
           "err %.2e\n",
           la.creative, la.recon, la.align, la.cls, worst4);
    /* the heads' own refusals: a batch of one for align/cls; recon without a profile prompt */
    hc_ctrain_losses lh;
    CHECK(hc_ctrain_step(t, rows, 1, &g_w, 1.0f, 1, &lh, &eb) == HC_ERR_INVAL &&
          strstr(eb.msg, "at least 2"));
    int32_t *pp = t->profile_prompt;
    t->profile_prompt = NULL;
    CHECK(hc_ctrain_step(t, rows, n, &g_w, 1.0f, 1, &lh, &eb) == HC_ERR_INVAL &&
          strstr(eb.msg, "profile_prompt"));
    t->profile_prompt = pp;
    g_w = (hc_ctrain_weights){1, 0, 0, 0};

    /* --- HLLM next-item pre-training: gradients of the item and user LLMs, the scale ---------- */
    g_nextitem = 1;
    hc_ctrain_row nr[N];
    int nn = 0;
    for (int i = 0; i < n; i++)
        if (rows[i].n_items >= 2) nr[nn++] = rows[i];
    CHECK(nn >= 1);
    hc_grad_zero(&t->t);
    double lni;
    int npairs, want_pairs = 0;
    for (int i = 0; i < nn; i++)
        want_pairs += nr[i].n_items - 1;
    CHECKF(hc_ctrain_nextitem(t, nr, nn, 1.0f, 1, &lni, &npairs, &eb) == HC_OK, "next-item: %s",
           eb.msg);
    CHECKF(npairs == want_pairs && lni > 0, "next-item: %d pairs (want %d), loss %.4f", npairs,
           want_pairs, lni);
    const char *names_ni[] = {"item_llm.model.embed_tokens.weight",
                              "item_llm.model.layers.0.mlp.up_proj.weight",
                              "item_emb_tokens",
                              "user_llm.model.layers.0.self_attn.v_proj.weight",
                              "user_llm.model.norm.weight",
                              "nextitem_logit_scale"};
    double worst_ni = 0;
    for (size_t i = 0; !vg && i < sizeof names_ni / sizeof names_ni[0]; i++)
        fd_check(t, nr, nn, names_ni[i], 1, &worst_ni);
    printf("next-item: loss %.4f over %d pairs; worst finite-difference rel err %.2e\n", lni,
           npairs, worst_ni);
    hc_ctrain_row one = rows[0];
    one.n_items = 1;
    CHECK(hc_ctrain_nextitem(t, &one, 1, 1.0f, 1, &lni, &npairs, &eb) == HC_ERR_INVAL &&
          strstr(eb.msg, "at least 2"));
    g_nextitem = 0;

    /* --- a few AdamW steps on this batch lower the loss -------------------------------------- */
    hc_adamw_cfg ac = hc_adamw_default();
    ac.lr = 3e-3;
    double l = l0;
    const int steps = vg ? 3 : 12;
    for (int s = 0; s < steps; s++) {
        hc_grad_zero(&t->t);
        CHECK_OK(hc_ctrain_creative(t, rows, n, 1.0f, 1, &l, &nt, &eb));
        hc_adamw_step_range(&t->t, &ac, ac.lr, s + 1, 0, t->t.total);
    }
    double l1 = loss_of(t, rows, n);
    CHECKF(l1 < 0.8 * l0, "loss %.4f after %d steps, %.4f before", l1, steps, l0);
    printf("AdamW lr %.0e: loss %.4f -> %.4f in %d steps\n", ac.lr, l0, l1, steps);

    /* --- saved weights serve: the engine's U from them equals the trainer's ------------------ */
    char dir[] = "/tmp/hc_train_creator_XXXXXX";
    CHECK(mkdtemp(dir) != NULL);
    char cmd[2400];
    snprintf(cmd, sizeof cmd, "cp -r '%s/.' '%s/'", pkg, dir);
    CHECK(system(cmd) == 0);
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    CHECK_OK(hc_ctrain_save_weights(t, path, HC_DTYPE_AS_STORED, &eb));
    hc_creator *c2 = NULL;
    hc_creator_params cp = hc_creator_default_params();
    CHECK_OK(hc_creator_load(&c2, t->be, dir, &cp, &eb));
    if (c2) {
        CHECK_OK(hc_ctrain_embed(t, rows, n, u, U, &eb));
        CHECK_OK(hc_creator_embed_users(c2, hs, n, ue, Ue, &eb));
        eU = rel_err(U, Ue, (size_t)n * Hc);
        CHECKF(eU < 1e-5, "U of the saved package differs from the trainer's: %.3g", eU);
        hc_creator_free(c2);
    }
    /* a bf16 export rounds to nearest even and still loads */
    CHECK_OK(hc_ctrain_save_weights(t, path, HC_DTYPE_BF16, &eb));
    hc_safetensors *st = NULL;
    CHECK_OK(hc_st_open(&st, path, &eb));
    if (st) {
        const hc_st_tensor *x = hc_st_find(st, "user_projector.weight");
        const hc_param *P = &t->t.params[t->p_proj];
        CHECK(x && x->dtype == HC_DTYPE_BF16);
        if (x)
            for (size_t i = 0; i < P->numel; i++)
                CHECK(((const uint16_t *)x->data)[i] == hc_f32_to_bf16(t->t.w[P->offset + i]));
        const hc_st_tensor *a = hc_st_find(st, "align_temp");
        CHECK(a && a->n_dims == 0); /* a scalar stays a scalar */
        hc_st_close(st);
    }
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    CHECK(system(cmd) == 0);
    /* unwritable destination: an error naming it */
    CHECK(hc_ctrain_save_weights(t, "/nonexistent-dir/model.safetensors", HC_DTYPE_AS_STORED,
                                 &eb) != HC_OK &&
          strstr(eb.msg, "nonexistent-dir"));

    /* --- bad rows are refused, naming the row and the field; nothing computed ------------------
     */
    hc_ctrain_row bad[2] = {rows[0], rows[1]};
    int32_t big = c->creative->cfg.vocab_size + 3;
    bad[1].response = &big;
    bad[1].n_response = 1;
    double lb = 0;
    CHECK(hc_ctrain_creative(t, bad, 2, 1.0f, 1, &lb, &nt, &eb) == HC_ERR_RANGE &&
          strstr(eb.msg, "row 1") && strstr(eb.msg, "response"));
    bad[1] = rows[1];
    bad[1].n_items = c->pkg.max_history + 1;
    CHECK(hc_ctrain_creative(t, bad, 2, 1.0f, 1, &lb, &nt, &eb) == HC_ERR_RANGE &&
          strstr(eb.msg, "max_history"));
    CHECK(hc_ctrain_creative(t, bad, 0, 1.0f, 1, &lb, &nt, &eb) == HC_ERR_INVAL);
    /* a bad package: a clear error */
    hc_ctrain *t2 = NULL;
    CHECK(hc_ctrain_create(&t2, "/nonexistent-package", 1, &eb) != HC_OK && t2 == NULL &&
          strstr(eb.msg, "nonexistent-package"));

    for (int i = 0; i < n; i++) {
        hc_creq_buf_free(&tr[i].buf);
        free(tr[i].resp);
        free(tr[i].ad);
        free(tr[i].prof);
    }
    free(u);
    free(U);
    free(ue);
    free(Ue);
    hc_ctrain_free(t);
    free_cases(cs, n_cases);
    return hc_test_finish("test_train_creator");
}
