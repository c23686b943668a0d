/* test_match_head: the engine's user-ad match head (engine/creator/match_head.h).
 *
 *   - the tiny package (tests/data/creator/tiny) loads with its head; sizes derived from the
 *     tensors; engine scores of (U, e_ad) pairs, e_ad from hc_creator_embed_items on ad titles,
 *     equal the trainer's hc_match_score (trainer/heads.h) on the same tensors to 1e-6, over
 *     more pairs than one chunk too;
 *   - against PyTorch: tests/data/train/heads_cls.safetensors (make_train_heads_fixture.py) holds
 *     a cls_tower, inputs U / e_ad and the torch logits ("score") of a forward with the tiny
 *     package's towers: the engine head over those tensors within 1e-5;
 *   - cls_dim != H_i (a consistent head of width 16) loads and equals the trainer;
 *   - a package copy without any head tensor: has_match_head 0, scores HC_ERR_NOTFOUND;
 *   - copies with a misshaped item_tower, a missing mixer tensor, a misshaped token-mixing
 *     weight: hc_creator_load fails naming the tensor. */
#include "creator/creator.h"
#include "creator/match_head.h"
#include "heads.h"
#include "io/safetensors.h"
#include "testutil.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static uint32_t rng = 12345u;
static float frand(void) {
    rng = rng * 1664525u + 1013904223u;
    return (float)((rng >> 8) & 0xffff) / 32768.0f - 1.0f;
}

static double max_rel(const float *a, const float *b, int n) {
    double m = 0.0, s = 1e-30;
    for (int i = 0; i < n; i++) s = fmax(s, fabs((double)b[i]));
    for (int i = 0; i < n; i++) m = fmax(m, fabs((double)a[i] - (double)b[i]));
    return m / s;
}

static int is_head(const char *name) {
    return !strncmp(name, "cls_tower.", 10) || !strcmp(name, "user_tower.weight") ||
           !strcmp(name, "item_tower.weight");
}

/* A trainer parameter table of the head tensors: from `a`, with cls_tower.* from `b` when given. */
static int table_of(hc_ptab *t, const hc_safetensors *a, const hc_safetensors *b) {
    hc_errbuf eb = {{0}};
    hc_ptab_init(t);
    int rc = 0;
    for (int pass = 0; pass < 2 && !rc; pass++) {
        const hc_safetensors *src = pass ? b : a;
        if (!src) continue;
        for (size_t i = 0; i < hc_st_count(src) && !rc; i++) {
            const hc_st_tensor *T = hc_st_get(src, i);
            int cls = !strncmp(T->name, "cls_tower.", 10);
            if (!is_head(T->name) || (b && pass == 0 && cls) || (pass == 1 && !cls)) continue;
            rc = hc_ptab_add(t, T->name, T->n_dims, T->shape, T->dtype, &eb);
        }
    }
    if (!rc) rc = hc_ptab_alloc(t, &eb);
    for (int p = 0; p < t->n && !rc; p++) {
        const hc_param *P = &t->params[p];
        const hc_st_tensor *T = hc_st_find(b && !strncmp(P->name, "cls_tower.", 10) ? b : a, P->name);
        if (!T || T->dtype != HC_DTYPE_F32 || T->nbytes != 4 * P->numel) rc = HC_ERR_FORMAT;
        else memcpy(t->w + P->offset, T->data, 4 * P->numel);
    }
    CHECKF(rc == 0, "trainer table: %d %s", rc, eb.msg);
    return rc;
}

/* ---- package copies ----------------------------------------------------------------------- */

typedef enum { EDIT_NO_HEAD, EDIT_ITEM_TOWER, EDIT_DROP_MIXER, EDIT_TOKEN_W } edit;

/* dir: a copy of the tiny package whose weights have `e` applied. 0 on success. */
static int make_copy(const char *tests, char *dir, edit e) {
    char cmd[2600], path[1300];
    strcpy(dir, "/tmp/hc_match_XXXXXX");
    if (!mkdtemp(dir)) return -1;
    snprintf(cmd, sizeof cmd, "cp -r '%s/data/creator/tiny/.' '%s/'", tests, dir);
    if (system(cmd) != 0) return -1;
    snprintf(path, sizeof path, "%s/data/creator/tiny/model.safetensors", tests);
    hc_safetensors *st = NULL;
    hc_errbuf eb = {{0}};
    if (hc_st_open(&st, path, &eb)) return -1;
    size_t n = hc_st_count(st), k = 0;
    hc_st_write_item *it = calloc(n, sizeof *it);
    static float z[64 * 32];
    for (size_t i = 0; i < n; i++) {
        const hc_st_tensor *T = hc_st_get(st, i);
        if (e == EDIT_NO_HEAD && is_head(T->name)) continue;
        if (e == EDIT_DROP_MIXER && !strcmp(T->name, "cls_tower.mixer_blocks.1.channel_mix.1.net.3.bias"))
            continue;
        it[k] = (hc_st_write_item){T->name, T->dtype, T->n_dims, {0}, T->data};
        memcpy(it[k].shape, T->shape, sizeof T->shape);
        if (e == EDIT_ITEM_TOWER && !strcmp(T->name, "item_tower.weight")) {
            it[k].shape[1] = 32; /* (cls_dim 64, 32): not the item LLM's 64 */
            it[k].data = z;
        }
        if (e == EDIT_TOKEN_W && !strcmp(T->name, "cls_tower.mixer_blocks.0.token_forward.net.3.weight")) {
            it[k].shape[1] = 7; /* (2, 7) while net.0 has 8 outputs */
            it[k].data = z;
        }
        k++;
    }
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    unlink(path);
    int rc = hc_st_write(path, it, k, &eb);
    CHECKF(rc == 0, "write %s: %s", path, eb.msg);
    free(it);
    hc_st_close(st);
    return rc;
}

static void remove_copy(const char *dir) {
    char cmd[1200];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", dir);
}

static void test_bad_packages(const char *tests, hc_backend *be) {
    hc_creator_params p = hc_creator_default_params();
    p.load_creative = 0;
    static const struct {
        edit e;
        int rc;
        const char *name;
    } cases[] = {
        {EDIT_ITEM_TOWER, HC_ERR_MISMATCH, "'item_tower.weight'"},
        {EDIT_DROP_MIXER, HC_ERR_NOTFOUND, "'cls_tower.mixer_blocks.1.channel_mix.1.net.3.bias'"},
        {EDIT_TOKEN_W, HC_ERR_MISMATCH, "'cls_tower.mixer_blocks.0.token_forward.net.3.weight'"},
    };
    char dir[64];
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        if (make_copy(tests, dir, cases[i].e)) {
            CHECKF(0, "package copy %zu", i);
            continue;
        }
        hc_creator *c = NULL;
        hc_errbuf eb = {{0}};
        int rc = hc_creator_load(&c, be, dir, &p, &eb);
        CHECKF(rc == cases[i].rc && !c && strstr(eb.msg, cases[i].name), "case %zu: rc %d: %s",
               i, rc, eb.msg);
        printf("  bad head %zu: %s\n", i, eb.msg);
        hc_creator_free(c);
        remove_copy(dir);
    }
    /* no head at all: loads, has none, scoring says so */
    if (make_copy(tests, dir, EDIT_NO_HEAD)) {
        CHECKF(0, "package copy without the head");
        return;
    }
    hc_creator *c = NULL;
    hc_errbuf eb = {{0}};
    int rc = hc_creator_load(&c, be, dir, &p, &eb);
    CHECKF(rc == 0 && c, "load without the head: %s", eb.msg);
    if (c) {
        CHECK(hc_creator_has_match_head(c) == 0);
        float U[96] = {0}, E[64] = {0}, l = 0.0f;
        rc = hc_creator_match_scores(c, U, E, 1, &l, &eb);
        CHECKF(rc == HC_ERR_NOTFOUND && strstr(eb.msg, "no match head"), "rc %d: %s", rc, eb.msg);
    }
    hc_creator_free(c);
    remove_copy(dir);
}

/* ---- the head against the trainer and PyTorch --------------------------------------------------- */

static void test_tiny(const char *tests, hc_backend *be) {
    char pkg[1100], path[1200];
    snprintf(pkg, sizeof pkg, "%s/data/creator/tiny", tests);
    hc_creator_params p = hc_creator_default_params();
    p.load_creative = 0;
    hc_creator *c = NULL;
    hc_errbuf eb = {{0}};
    int rc = hc_creator_load(&c, be, pkg, &p, &eb);
    CHECKF(rc == 0, "load %s: %s", pkg, eb.msg);
    if (rc) return;
    CHECK(hc_creator_has_match_head(c) == 1);
    hc_match_dims d = hc_match_head_dims(c->match);
    CHECKF(d.cls_dim == 64 && d.token_hidden == 8 && d.channel_hidden == 192 && d.depth == 2 &&
           d.d_U == c->d_creative && d.d_item == c->d_item,
           "dims %d %d %d %d %d %d", d.cls_dim, d.token_hidden, d.channel_hidden, d.depth, d.d_U,
           d.d_item);
    snprintf(path, sizeof path, "%s/model.safetensors", pkg);
    hc_safetensors *st = NULL;
    CHECK_OK(hc_st_open(&st, path, &eb));
    hc_ptab t;
    if (!st || table_of(&t, st, NULL)) {
        hc_st_close(st);
        hc_creator_free(c);
        return;
    }
    enum { N = 45 }; /* more than one chunk */
    const int HC = c->d_creative, HI = c->d_item;
    float *U = malloc(sizeof(float) * N * HC), *E = malloc(sizeof(float) * N * HI);
    float le[N], lt[N];
    for (int i = 0; i < N * HC; i++) U[i] = frand();
    const char *titles[3] = {"The Silent Harbor", "A Field Guide to Moths", "Cooking for Two"};
    size_t lens[3];
    for (int i = 0; i < 3; i++) lens[i] = strlen(titles[i]);
    float *e3 = malloc(sizeof(float) * 3 * HI);
    CHECK_OK(hc_creator_embed_items(c, titles, lens, 3, e3, &eb));
    for (int i = 0; i < N; i++) memcpy(E + (size_t)i * HI, e3 + (size_t)(i % 3) * HI, sizeof(float) * HI);
    CHECK_OK(hc_creator_match_scores(c, U, E, N, le, &eb));
    CHECK_OK(hc_match_score(&t, U, E, N, lt, &eb));
    double err = max_rel(le, lt, N);
    CHECKF(err <= 1e-6, "engine vs trainer: rel err %.3g", err);
    double spread = 0.0;
    for (int i = 1; i < N; i++) spread = fmax(spread, fabs((double)le[i] - le[0]));
    CHECKF(spread > 1e-4, "the scores do not depend on the inputs (spread %.3g)", spread);
    printf("  tiny: cls_dim %d, token %d, channel %d, depth %d; %d pairs engine vs trainer rel "
           "err %.2e (logit[0] %.5f)\n", d.cls_dim, d.token_hidden, d.channel_hidden, d.depth, N,
           err, (double)le[0]);
    /* one pair at a time gives the same logits as the batch */
    float one;
    CHECK_OK(hc_creator_match_scores(c, U + (size_t)40 * HC, E + (size_t)40 * HI, 1, &one, &eb));
    CHECKF(fabs(one - le[40]) <= 1e-6 * fmax(1.0, fabs(le[40])), "single %g batch %g", one, le[40]);
    CHECK(hc_creator_match_scores(c, U, E, 0, le, &eb) == HC_ERR_INVAL);
    hc_ptab_free(&t);

    /* PyTorch: the fixture's cls_tower with the package's towers, its inputs and torch logits */
    snprintf(path, sizeof path, "%s/data/train/heads_cls.safetensors", tests);
    hc_safetensors *ref = NULL;
    CHECK_OK(hc_st_open(&ref, path, &eb));
    const hc_st_tensor *tu = ref ? hc_st_find(ref, "input.U") : NULL;
    const hc_st_tensor *te = ref ? hc_st_find(ref, "input.e_ad") : NULL;
    const hc_st_tensor *ts = ref ? hc_st_find(ref, "score") : NULL;
    CHECK(tu && te && ts && tu->shape[1] == HC && te->shape[1] == HI);
    if (tu && te && ts && tu->shape[1] == HC && te->shape[1] == HI) {
        size_t n = hc_st_count(ref), k = 0;
        hc_st_write_item *it = calloc(n + 2, sizeof *it);
        for (size_t i = 0; i < n; i++) {
            const hc_st_tensor *T = hc_st_get(ref, i);
            if (strncmp(T->name, "cls_tower.", 10)) continue;
            it[k] = (hc_st_write_item){T->name, T->dtype, T->n_dims, {0}, T->data};
            memcpy(it[k++].shape, T->shape, sizeof T->shape);
        }
        for (int w = 0; w < 2; w++) {
            const hc_st_tensor *T = hc_st_find(st, w ? "item_tower.weight" : "user_tower.weight");
            it[k] = (hc_st_write_item){T->name, T->dtype, T->n_dims, {0}, T->data};
            memcpy(it[k++].shape, T->shape, sizeof T->shape);
        }
        char tmp[] = "/tmp/hc_match_ref_XXXXXX";
        int fd = mkstemp(tmp);
        if (fd >= 0) close(fd);
        CHECK_OK(hc_st_write(tmp, it, k, &eb));
        hc_safetensors *hst = NULL;
        hc_match_head *m = NULL;
        CHECK_OK(hc_st_open(&hst, tmp, &eb));
        if (hst) CHECK_OK(hc_match_head_load(&m, hst, HC, HI, &eb));
        const int nr = (int)tu->shape[0];
        float *sc = malloc(sizeof(float) * (size_t)nr);
        if (m) {
            hc_match_dims dm = hc_match_head_dims(m);
            CHECK(dm.channel_hidden == 40 && dm.cls_dim == 64);
            CHECK_OK(hc_match_head_scores(m, (const float *)tu->data, (const float *)te->data, nr,
                                          sc, &eb));
            double et = max_rel(sc, (const float *)ts->data, nr);
            CHECKF(et <= 1e-5, "engine vs torch: rel err %.3g", et);
            printf("  torch fixture: %d pairs, channel hidden %d, engine vs torch rel err %.2e\n",
                   nr, dm.channel_hidden, et);
        }
        free(sc);
        hc_match_head_free(m);
        hc_st_close(hst);
        unlink(tmp);
        free(it);
    }
    hc_st_close(ref);

    /* cls_dim 16 != H_i 64: towers (16, H_c) / (16, H_i), a dim-16 mixer with 3 blocks */
    {
        enum { D = 16, T = 5, C = 24, DEPTH = 3 };
        static float w[DEPTH * 12 + 6][96 * D];
        static char names[DEPTH * 12][96];
        hc_st_write_item it[DEPTH * 12 + 6];
        const int64_t bs[12][2] = {{D, 0}, {D, 0}, {T, 2}, {T, 0}, {2, T}, {2, 0},
                                   {D, 0}, {D, 0}, {C, D}, {C, 0}, {D, C}, {D, 0}};
        static const char *bn[12] = {"token_norm.weight", "token_norm.bias",
                                     "token_forward.net.0.weight", "token_forward.net.0.bias",
                                     "token_forward.net.3.weight", "token_forward.net.3.bias",
                                     "channel_mix.0.weight", "channel_mix.0.bias",
                                     "channel_mix.1.net.0.weight", "channel_mix.1.net.0.bias",
                                     "channel_mix.1.net.3.weight", "channel_mix.1.net.3.bias"};
        int ni = 0;
        for (int b = 0; b < DEPTH; b++)
            for (int j = 0; j < 12; j++, ni++) {
                snprintf(names[ni], sizeof names[ni], "cls_tower.mixer_blocks.%d.%s", b, bn[j]);
                it[ni] = (hc_st_write_item){names[ni], HC_DTYPE_F32, bs[j][1] ? 2 : 1,
                                            {bs[j][0], bs[j][1]}, w[ni]};
            }
        it[ni] = (hc_st_write_item){"cls_tower.layer_norm.weight", HC_DTYPE_F32, 1, {D}, w[ni]}, ni++;
        it[ni] = (hc_st_write_item){"cls_tower.layer_norm.bias", HC_DTYPE_F32, 1, {D}, w[ni]}, ni++;
        it[ni] = (hc_st_write_item){"cls_tower.mlp_head.0.weight", HC_DTYPE_F32, 2, {1, D}, w[ni]}, ni++;
        it[ni] = (hc_st_write_item){"cls_tower.mlp_head.0.bias", HC_DTYPE_F32, 1, {1}, w[ni]}, ni++;
        it[ni] = (hc_st_write_item){"user_tower.weight", HC_DTYPE_F32, 2, {D, HC}, w[ni]}, ni++;
        it[ni] = (hc_st_write_item){"item_tower.weight", HC_DTYPE_F32, 2, {D, HI}, w[ni]}, ni++;
        for (int i = 0; i < ni; i++)
            for (int j = 0; j < 96 * D; j++) w[i][j] = 0.3f * frand() + (strstr(it[i].name, "norm.weight") ? 1.0f : 0.0f);
        char tmp[] = "/tmp/hc_match16_XXXXXX";
        int fd = mkstemp(tmp);
        if (fd >= 0) close(fd);
        CHECK_OK(hc_st_write(tmp, it, (size_t)ni, &eb));
        hc_safetensors *s16 = NULL;
        hc_match_head *m = NULL;
        CHECK_OK(hc_st_open(&s16, tmp, &eb));
        if (s16) CHECK_OK(hc_match_head_load(&m, s16, HC, HI, &eb));
        hc_ptab t16;
        if (m && !table_of(&t16, s16, NULL)) {
            hc_match_dims dm = hc_match_head_dims(m);
            CHECK(dm.cls_dim == D && dm.token_hidden == T && dm.channel_hidden == C &&
                  dm.depth == DEPTH);
            CHECK_OK(hc_match_head_scores(m, U, E, N, le, &eb));
            CHECK_OK(hc_match_score(&t16, U, E, N, lt, &eb));
            double e16 = max_rel(le, lt, N);
            CHECKF(e16 <= 1e-6, "cls_dim 16: engine vs trainer rel err %.3g", e16);
            printf("  cls_dim %d != H_i %d, depth %d: engine vs trainer rel err %.2e\n", D, HI,
                   DEPTH, e16);
            hc_ptab_free(&t16);
        }
        /* the towers must fit: a head for H_c 96 refused for U of width 64, naming user_tower */
        hc_match_head *bad = NULL;
        rc = s16 ? hc_match_head_load(&bad, s16, 64, HI, &eb) : -1;
        CHECKF(rc == HC_ERR_MISMATCH && !bad && strstr(eb.msg, "'user_tower.weight'"), "rc %d: %s",
               rc, eb.msg);
        hc_match_head_free(m);
        hc_st_close(s16);
        unlink(tmp);
    }
    free(U);
    free(E);
    free(e3);
    hc_st_close(st);
    hc_creator_free(c);
}

int main(int argc, char **argv) {
    const char *tests = argc > 1 ? argv[1] : "tests";
    hc_backend *be = NULL;
    CHECK_OK(hc_backend_cpu_create(&be, 2));
    if (be) {
        test_tiny(tests, be);
        test_bad_packages(tests, be);
    }
    hc_backend_free(be);
    return hc_test_finish("test_match_head");
}
