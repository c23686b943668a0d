/* test_train_ckpt.c: the trainer's checkpoints (trainer/ckpt.h).
 *
 * ctest mode (argv[1] = tests dir): save/load round trip bit-exact for w, m, v and the state;
 * model.safetensors opens with hc_st_open, has each parameter in its stored dtype and its BF16
 * values are round-to-nearest-even of w (checked against an independent rounding, ties
 * included); another layout is refused naming the parameter; .tmp-* leftovers, incomplete and
 * misnamed directories are ignored; keep-K pruning; a re-save of a step; a full disk (a file
 * size limit), DIR being a file, a missing parent, an unsupported version, a damaged
 * trainer.json: clear errors, and the previous checkpoint still loads unchanged.
 *
 * Helper modes for tests/cli/train_ckpt_kill.sh (not run by ctest itself):
 *   test_train_ckpt TESTS --loop DIR    resumes from DIR's newest checkpoint (checking it) and
 *                                       saves step after step with keep 2 (for at most 2 min);
 *   test_train_ckpt TESTS --check DIR   loads the newest checkpoint and checks that w, m, v, the
 *                                       state and model.safetensors are those of its step;
 *                                       prints "step N"; exit 0 if consistent.
 * The contents of step s are a known function of s (fill below). */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <dirent.h>

#include "ckpt.h"
#include "core/tensor.h"
#include "io/safetensors.h"
#include "testutil.h"

static uint64_t mix(uint64_t x) {
    x += 0x9e3779b97f4a7c15ULL;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
    return x ^ (x >> 31);
}

/* A finite float with random mantissa bits, |x| in about [2^-7, 2^8). */
static float val(uint64_t step, uint64_t which, size_t i) {
    uint64_t h = mix(mix(step * 3 + which) ^ (uint64_t)i);
    uint32_t bits = (uint32_t)(h & 0x807fffffu) | ((uint32_t)(120 + (h >> 40) % 15) << 23);
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

static void fill(hc_ptab *t, uint64_t step) {
    for (size_t i = 0; i < t->total; i++) {
        t->w[i] = val(step, 0, i);
        t->m[i] = val(step, 1, i);
        t->v[i] = val(step, 2, i);
        if (t->v[i] < 0) t->v[i] = -t->v[i];
    }
}

static hc_ckpt_state state_of(int64_t step) {
    hc_ckpt_state st;
    memset(&st, 0, sizeof st);
    st.step = step;
    st.epoch = step / 5;
    st.cursor.epoch = step / 5;
    st.cursor.pos = step % 5;
    st.n_rng = 4;
    st.rng[0] = mix((uint64_t)step);
    st.rng[1] = UINT64_MAX;
    st.rng[2] = 0;
    st.rng[3] = 1ULL << 63;
    st.adamw = hc_adamw_default();
    st.adamw.lr = 1.0 / 3.0 * 1e-4;
    st.peak_lr = 2e-5;
    st.warmup = 0.1 * 777;
    st.total_steps = 777;
    snprintf(st.run, sizeof st.run, "{\"batch\":%lld,\"data\":\"/d/x.jsonl\",\"lr\":0.001}",
             (long long)step);
    return st;
}

static int state_eq(const hc_ckpt_state *a, const hc_ckpt_state *b) {
    return a->step == b->step && a->epoch == b->epoch && a->cursor.epoch == b->cursor.epoch &&
           a->cursor.pos == b->cursor.pos && a->n_rng == b->n_rng &&
           !memcmp(a->rng, b->rng, sizeof a->rng) &&
           !memcmp(&a->adamw, &b->adamw, sizeof a->adamw) &&
           !memcmp(&a->peak_lr, &b->peak_lr, sizeof(double)) &&
           !memcmp(&a->warmup, &b->warmup, sizeof(double)) && a->total_steps == b->total_steps &&
           !strcmp(a->run, b->run);
}

/* The table: a BF16 embedding with its first row set to rounding ties, an F32 norm, an F16 and a
 * BF16 matrix. big: a larger embedding (the kill test wants saves that take a while). */
static int make_table(hc_ptab *t, int big, int variant) {
    hc_errbuf eb = {{0}};
    hc_ptab_init(t);
    int64_t emb[2] = {big ? 512 : 16, 8}, norm[1] = {8}, q[3] = {3, 4, 2},
            head[2] = {variant == 1 ? 6 : 5, 8};
    int rc = hc_ptab_add(t, "model.embed_tokens.weight", 2, emb, HC_DTYPE_BF16, &eb);
    if (!rc) rc = hc_ptab_add(t, "model.norm.weight", 1, norm, HC_DTYPE_F32, &eb);
    if (!rc) rc = hc_ptab_add(t, "model.layers.0.q.weight", 3, q, HC_DTYPE_F16, &eb);
    if (!rc) rc = hc_ptab_add(t, "lm_head.weight", 2, head, HC_DTYPE_BF16, &eb);
    if (!rc && variant == 2) rc = hc_ptab_add(t, "extra.bias", 1, norm, HC_DTYPE_F32, &eb);
    if (!rc) rc = hc_ptab_alloc(t, &eb);
    CHECKF(rc == 0, "table: %s", eb.msg);
    return rc;
}

/* bf16 of f by round-to-nearest-even, written independently of the engine's converter. */
static uint16_t rne_bf16(float f) {
    uint32_t b;
    memcpy(&b, &f, 4);
    uint32_t hi = b >> 16, lo = b & 0xffffu;
    if (lo > 0x8000u || (lo == 0x8000u && (hi & 1u))) hi++;
    return (uint16_t)hi;
}

/* model.safetensors of ckpt_dir holds the table's weights (dtypes as stored or all F32). */
static int check_model_file(const char *ckpt_dir, const hc_ptab *t, int all_f32) {
    char path[1400];
    snprintf(path, sizeof path, "%s/model.safetensors", ckpt_dir);
    hc_safetensors *st = NULL;
    hc_errbuf eb = {{0}};
    int rc = hc_st_open(&st, path, &eb);
    CHECKF(rc == 0, "%s: %s", path, eb.msg);
    if (rc) return 0;
    int ok = hc_st_count(st) == (size_t)t->n;
    for (int i = 0; i < t->n && ok; i++) {
        const hc_param *p = &t->params[i];
        const hc_st_tensor *x = hc_st_find(st, p->name);
        hc_dtype want = all_f32 ? HC_DTYPE_F32 : (hc_dtype)p->stored_dtype;
        if (!x || x->dtype != want || x->n_dims != p->ndim) {
            ok = 0;
            break;
        }
        for (size_t k = 0; k < p->numel && ok; k++) {
            float w = t->w[p->offset + k];
            if (want == HC_DTYPE_BF16) {
                ok = hc_load_u16(x->data, k) == rne_bf16(w);
            } else if (want == HC_DTYPE_F16) {
                ok = hc_load_u16(x->data, k) == hc_f32_to_f16(w);
            } else {
                float g;
                memcpy(&g, (const unsigned char *)x->data + 4 * k, 4);
                ok = memcmp(&g, &w, 4) == 0;
            }
        }
    }
    hc_st_close(st);
    return ok;
}

static int tables_eq(const hc_ptab *a, const hc_ptab *b) {
    size_t n = sizeof(float) * a->total;
    return a->total == b->total && !memcmp(a->w, b->w, n) && !memcmp(a->m, b->m, n) &&
           !memcmp(a->v, b->v, n);
}

static int count_entries(const char *dir, const char *prefix) {
    DIR *d = opendir(dir);
    if (!d) return -1;
    int n = 0;
    struct dirent *de;
    while ((de = readdir(d)))
        if (!strncmp(de->d_name, prefix, strlen(prefix))) n++;
    closedir(d);
    return n;
}

static int write_text(const char *path, const char *text) {
    FILE *f = fopen(path, "w");
    if (!f) return -1;
    fputs(text, f);
    return fclose(f);
}

static void rm_rf(const char *path) {
    DIR *d = opendir(path);
    if (d) {
        struct dirent *de;
        while ((de = readdir(d))) {
            if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, "..")) continue;
            char c[1400];
            snprintf(c, sizeof c, "%s/%s", path, de->d_name);
            rm_rf(c);
        }
        closedir(d);
        rmdir(path);
    } else {
        unlink(path);
    }
}

/* trainer.json of a checkpoint with `from` replaced by `to` (first occurrence). */
static int edit_json(const char *ckpt_dir, const char *from, const char *to) {
    char path[1400];
    snprintf(path, sizeof path, "%s/trainer.json", ckpt_dir);
    char *text = hc_test_read_file(path, NULL);
    if (!text) return -1;
    char *at = strstr(text, from);
    int rc = -1;
    if (at) {
        size_t n = strlen(text) + strlen(to) + 1;
        char *out = malloc(n);
        if (out) {
            snprintf(out, n, "%.*s%s%s", (int)(at - text), text, to, at + strlen(from));
            rc = write_text(path, out);
            free(out);
        }
    }
    free(text);
    return rc;
}

static void copy_dir(const char *from, const char *to) {
    mkdir(to, 0755);
    const char *files[3] = {"model.safetensors", "optim.safetensors", "trainer.json"};
    for (int i = 0; i < 3; i++) {
        char a[1700], b[1700];
        snprintf(a, sizeof a, "%s/%s", from, files[i]);
        snprintf(b, sizeof b, "%s/%s", to, files[i]);
        size_t n = 0;
        char *data = hc_test_read_file(a, &n);
        FILE *f = fopen(b, "wb");
        if (f && data) fwrite(data, 1, n, f);
        if (f) fclose(f);
        free(data);
    }
}

static void test_round_trip(const char *root) {
    char dir[1200], got_path[1200], p[1400];
    snprintf(dir, sizeof dir, "%s/ck", root);
    hc_ptab t, u;
    if (make_table(&t, 0, 0) || make_table(&u, 0, 0)) return;
    fill(&t, 7);
    /* rounding ties in the embedding's first row: even and odd bf16 mantissas */
    const uint32_t ties[4] = {0x3f808000u, 0x3f818000u, 0xbf808000u, 0x3f80ffffu};
    for (int i = 0; i < 4; i++)
        memcpy(&t.w[i], &ties[i], 4);
    hc_ckpt_state st = state_of(7), back;
    hc_errbuf eb = {{0}};
    hc_ckpt_params cp = hc_ckpt_default_params();
    int rc = hc_ckpt_save(dir, &t, &st, &cp, got_path, sizeof got_path, &eb);
    CHECKF(rc == 0, "save: %s", eb.msg);
    snprintf(p, sizeof p, "%s/step-00000007", dir);
    CHECK(strcmp(got_path, p) == 0);
    hc_ckpt_info info;
    rc = hc_ckpt_load_latest(dir, &u, &back, &info, &eb);
    CHECKF(rc == 0, "load: %s", eb.msg);
    CHECK(tables_eq(&t, &u) && state_eq(&st, &back) && strcmp(info.path, p) == 0 &&
          info.skipped == 0);
    CHECK(check_model_file(p, &t, 0));
    /* the ties really were ties, rounded both ways */
    CHECK(rne_bf16(t.w[0]) == 0x3f80 && rne_bf16(t.w[1]) == 0x3f82 && rne_bf16(t.w[3]) == 0x3f81);
    snprintf(p, sizeof p, "%s/latest", dir);
    char *latest = hc_test_read_file(p, NULL);
    CHECK(latest && strcmp(latest, "step-00000007\n") == 0);
    free(latest);
    /* hc_ckpt_load on the directory itself */
    memset(u.w, 0, sizeof(float) * u.total);
    CHECK_OK(hc_ckpt_load(info.path, &u, &back, &eb));
    CHECK(tables_eq(&t, &u));

    /* all-F32 weights */
    char dir2[1300];
    snprintf(dir2, sizeof dir2, "%s/ck32", root);
    cp.weights_dtype = HC_DTYPE_F32;
    CHECK_OK(hc_ckpt_save(dir2, &t, &st, &cp, got_path, sizeof got_path, &eb));
    CHECK(check_model_file(got_path, &t, 1));
    cp.weights_dtype = HC_DTYPE_I32;
    CHECK(hc_ckpt_save(dir2, &t, &st, &cp, NULL, 0, &eb) == HC_ERR_INVAL);
    rm_rf(dir2);

    /* another layout: a different shape, an extra parameter */
    for (int variant = 1; variant <= 2; variant++) {
        hc_ptab x;
        if (make_table(&x, 0, variant)) continue;
        rc = hc_ckpt_load_latest(dir, &x, &back, NULL, &eb);
        CHECKF(rc == HC_ERR_MISMATCH, "variant %d: %d %s", variant, rc, eb.msg);
        if (variant == 1)
            CHECKF(strstr(eb.msg, "lm_head.weight") && strstr(eb.msg, "[5, 8]") &&
                       strstr(eb.msg, "[6, 8]"),
                   "%s", eb.msg);
        else
            CHECKF(strstr(eb.msg, "4 parameters, the model 5") && strstr(eb.msg, "extra.bias"),
                   "%s", eb.msg);
        int zero = 1;
        for (size_t i = 0; i < x.total; i++)
            zero &= x.w[i] == 0 && x.m[i] == 0;
        CHECK(zero); /* nothing loaded */
        hc_ptab_free(&x);
    }
    hc_ptab_free(&t);
    hc_ptab_free(&u);
}

static void test_leftovers_and_keep(const char *root) {
    char dir[1200], p[1400], q[1600];
    snprintf(dir, sizeof dir, "%s/ck", root);
    hc_ptab t, u;
    if (make_table(&t, 0, 0) || make_table(&u, 0, 0)) return;
    hc_errbuf eb = {{0}};
    hc_ckpt_state st, back;
    /* a half-written save, an incomplete newer directory, and names that are not checkpoints */
    snprintf(p, sizeof p, "%s/.tmp-step-00000099", dir);
    mkdir(p, 0755);
    snprintf(q, sizeof q, "%s/trainer.json", p);
    CHECK(write_text(q, "{\"format\": \"hllm-train-checkpoint\", \"version\": 1}") == 0);
    snprintf(p, sizeof p, "%s/step-00000098", dir);
    mkdir(p, 0755);
    snprintf(q, sizeof q, "%s/model.safetensors", p);
    CHECK(write_text(q, "partial") == 0);
    snprintf(p, sizeof p, "%s/step-00000097", dir);
    copy_dir(dir, p); /* no files at dir level: an empty copy, no trainer.json */
    snprintf(p, sizeof p, "%s/step-00000096", dir);
    char src[1400];
    snprintf(src, sizeof src, "%s/step-00000007", dir);
    copy_dir(src, p);
    snprintf(q, sizeof q, "%s/optim.safetensors", p);
    CHECK(truncate(q, 100) == 0); /* size differs from what trainer.json records */
    snprintf(p, sizeof p, "%s/step-12", dir);
    mkdir(p, 0755);
    snprintf(p, sizeof p, "%s/step-00000095", dir);
    CHECK(write_text(p, "a file") == 0);
    hc_ckpt_info info;
    int rc = hc_ckpt_load_latest(dir, &u, &back, &info, &eb);
    CHECKF(rc == 0, "load: %s", eb.msg);
    CHECK(back.step == 7 && info.skipped == 3);
    CHECKF(strstr(info.skipped_why, "step-00000098"), "%s", info.skipped_why);
    fill(&t, 7);
    CHECK(u.w[100] == t.w[100]);

    /* steps 8..12 with keep 3: the three newest stay; the leftovers go with the first save;
     * a directory without trainer.json is neither kept nor deleted */
    for (int s = 96; s <= 97; s++) {
        snprintf(p, sizeof p, "%s/step-%08d", dir, s);
        rm_rf(p);
    }
    snprintf(p, sizeof p, "%s/step-12", dir);
    rmdir(p);
    snprintf(p, sizeof p, "%s/step-00000095", dir);
    unlink(p);
    hc_ckpt_params cp = hc_ckpt_default_params();
    cp.keep = 3;
    for (int s = 8; s <= 12; s++) {
        fill(&t, (uint64_t)s);
        st = state_of(s);
        CHECK_OK(hc_ckpt_save(dir, &t, &st, &cp, NULL, 0, &eb));
    }
    CHECK(count_entries(dir, ".tmp-") == 0 && count_entries(dir, ".del-") == 0);
    CHECK(count_entries(dir, "step-") == 4); /* 10, 11, 12 and the incomplete 98 */
    snprintf(p, sizeof p, "%s/step-00000098", dir);
    rm_rf(p);
    for (int s = 10; s <= 12; s++) {
        snprintf(p, sizeof p, "%s/step-%08d/trainer.json", dir, s);
        CHECK(access(p, R_OK) == 0);
    }
    snprintf(p, sizeof p, "%s/latest", dir);
    char *latest = hc_test_read_file(p, NULL);
    CHECK(latest && strcmp(latest, "step-00000012\n") == 0);
    free(latest);
    CHECK_OK(hc_ckpt_load_latest(dir, &u, &back, &info, &eb));
    CHECK(back.step == 12 && tables_eq(&t, &u));

    /* a re-save of step 12 replaces it */
    fill(&t, 1012);
    st = state_of(12);
    CHECK_OK(hc_ckpt_save(dir, &t, &st, &cp, NULL, 0, &eb));
    CHECK_OK(hc_ckpt_load_latest(dir, &u, &back, &info, &eb));
    CHECK(back.step == 12 && tables_eq(&t, &u) && count_entries(dir, ".old-") == 0);
    /* a re-save interrupted between its two renames leaves .old-step-N, which still loads */
    snprintf(p, sizeof p, "%s/step-00000012", dir);
    snprintf(q, sizeof q, "%s/.old-step-00000012", dir);
    CHECK(rename(p, q) == 0);
    CHECK_OK(hc_ckpt_load_latest(dir, &u, &back, &info, &eb));
    CHECK(back.step == 12 && tables_eq(&t, &u) && strstr(info.path, ".old-step-00000012"));
    CHECK(rename(q, p) == 0);
    hc_ptab_free(&t);
    hc_ptab_free(&u);
}

static void test_errors(const char *root) {
    char dir[1200], p[1400], q[1600];
    snprintf(dir, sizeof dir, "%s/ck", root);
    hc_ptab t, u;
    if (make_table(&t, 0, 0) || make_table(&u, 0, 0)) return;
    hc_errbuf eb = {{0}};
    hc_ckpt_state st = state_of(13), back;
    fill(&t, 13);
    hc_ptab ref;
    if (make_table(&ref, 0, 0)) return;
    CHECK_OK(hc_ckpt_load_latest(dir, &ref, &back, NULL, &eb)); /* the state before the errors */
    const int64_t before = back.step;

    /* a full disk: writes past a file size limit fail (EFBIG) */
    struct rlimit old_lim, lim;
    CHECK(getrlimit(RLIMIT_FSIZE, &old_lim) == 0);
    void (*old_sig)(int) = signal(SIGXFSZ, SIG_IGN);
    lim = old_lim;
    lim.rlim_cur = 256;
    CHECK(setrlimit(RLIMIT_FSIZE, &lim) == 0);
    int rc = hc_ckpt_save(dir, &t, &st, NULL, NULL, 0, &eb);
    setrlimit(RLIMIT_FSIZE, &old_lim);
    signal(SIGXFSZ, old_sig);
    CHECKF(rc == HC_ERR_IO && strstr(eb.msg, "model.safetensors") && strstr(eb.msg, "write"),
           "%d %s", rc, eb.msg);
    CHECK(count_entries(dir, ".tmp-") == 0);
    snprintf(p, sizeof p, "%s/step-00000013", dir);
    CHECK(access(p, F_OK) != 0);
    CHECK_OK(hc_ckpt_load_latest(dir, &u, &back, NULL, &eb));
    CHECK(back.step == before && tables_eq(&ref, &u));

    /* DIR is a file; a missing parent; nothing to load */
    snprintf(p, sizeof p, "%s/afile", root);
    CHECK(write_text(p, "x") == 0);
    CHECK(hc_ckpt_save(p, &t, &st, NULL, NULL, 0, &eb) == HC_ERR_INVAL &&
          strstr(eb.msg, "is a regular file, not a directory") && strstr(eb.msg, p));
    CHECK(hc_ckpt_load_latest(p, &u, &back, NULL, &eb) == HC_ERR_INVAL &&
          strstr(eb.msg, "not a directory"));
    snprintf(q, sizeof q, "%s/afile/sub", root);
    CHECK(hc_ckpt_save(q, &t, &st, NULL, NULL, 0, &eb) != HC_OK && strstr(eb.msg, q));
    snprintf(q, sizeof q, "%s/missing/ck", root);
    CHECK(hc_ckpt_save(q, &t, &st, NULL, NULL, 0, &eb) == HC_ERR_NOTFOUND && strstr(eb.msg, q));
    CHECK(hc_ckpt_load_latest(q, &u, &back, NULL, &eb) == HC_ERR_NOTFOUND &&
          strstr(eb.msg, "no checkpoint"));
    snprintf(q, sizeof q, "%s/emptydir", root);
    mkdir(q, 0755);
    CHECK(hc_ckpt_load_latest(q, &u, &back, NULL, &eb) == HC_ERR_NOTFOUND &&
          strstr(eb.msg, "no step-N"));
    rmdir(q);
    unlink(p);
    if (geteuid() != 0) { /* root writes anywhere */
        CHECK(chmod(dir, 0555) == 0);
        rc = hc_ckpt_save(dir, &t, &st, NULL, NULL, 0, &eb);
        CHECKF(rc == HC_ERR_IO && strstr(eb.msg, "Permission denied"), "%d %s", rc, eb.msg);
        chmod(dir, 0755);
        CHECK_OK(hc_ckpt_load_latest(dir, &u, &back, NULL, &eb));
        CHECK(back.step == before && tables_eq(&ref, &u));
    }

    /* damaged or foreign trainer.json in the newest: refused, naming the field */
    snprintf(p, sizeof p, "%s/step-00000050", dir);
    snprintf(q, sizeof q, "%s/step-%08lld", dir, (long long)before);
    copy_dir(q, p);
    CHECK(edit_json(p, "\"version\": 1", "\"version\": 2") == 0);
    rc = hc_ckpt_load_latest(dir, &u, &back, NULL, &eb);
    CHECKF(rc == HC_ERR_UNSUPPORTED && strstr(eb.msg, "version 2"), "%d %s", rc, eb.msg);
    CHECK(edit_json(p, "\"version\": 2", "\"version\": 1") == 0);
    CHECK(edit_json(p, "\"step\":", "\"steps\":") == 0);
    rc = hc_ckpt_load_latest(dir, &u, &back, NULL, &eb);
    CHECKF(rc == HC_ERR_FORMAT && strstr(eb.msg, "field step") && strstr(eb.msg, "trainer.json"),
           "%d %s", rc, eb.msg);
    CHECK(edit_json(p, "\"steps\":", "\"step\":") == 0);
    CHECK(edit_json(p, "\"fingerprint\": \"", "\"fingerprint\": \"1") == 0);
    rc = hc_ckpt_load_latest(dir, &u, &back, NULL, &eb);
    CHECKF(rc == HC_ERR_MISMATCH && strstr(eb.msg, "fingerprint"), "%d %s", rc, eb.msg);
    CHECK(edit_json(p, "\"fingerprint\": \"1", "\"fingerprint\": \"") == 0);
    CHECK(edit_json(p, "\"rng\": [\n  \"", "\"rng\": [\n  \"x") == 0);
    rc = hc_ckpt_load_latest(dir, &u, &back, NULL, &eb);
    CHECKF(rc == HC_ERR_FORMAT && strstr(eb.msg, "rng[0]"), "%d %s", rc, eb.msg);
    rm_rf(p);
    CHECK_OK(hc_ckpt_load_latest(dir, &u, &back, NULL, &eb));
    CHECK(back.step == before && tables_eq(&ref, &u));
    hc_ptab_free(&ref);
    hc_ptab_free(&t);
    hc_ptab_free(&u);
}

/* ---- helper modes for tests/cli/train_ckpt_kill.sh ----------------------------------------- */

/* 0 if the newest checkpoint of dir is complete and consistent: everything is that of its step. */
static int check_consistent(const char *dir, int64_t *step_out, int quiet) {
    hc_ptab t, want;
    if (make_table(&t, 1, 0) || make_table(&want, 1, 0)) return 1;
    hc_ckpt_state st;
    hc_ckpt_info info;
    hc_errbuf eb = {{0}};
    int rc = hc_ckpt_load_latest(dir, &t, &st, &info, &eb), bad = 0;
    if (rc) {
        if (!quiet || rc != HC_ERR_NOTFOUND) fprintf(stderr, "load_latest: %s\n", eb.msg);
        bad = rc == HC_ERR_NOTFOUND ? 2 : 1;
    } else {
        fill(&want, (uint64_t)st.step);
        hc_ckpt_state ws = state_of(st.step);
        if (!tables_eq(&t, &want))
            bad = 1,
            fprintf(stderr, "%s: w/m/v are not step %lld's\n", info.path, (long long)st.step);
        if (!state_eq(&st, &ws))
            bad = 1,
            fprintf(stderr, "%s: state is not step %lld's\n", info.path, (long long)st.step);
        if (!check_model_file(info.path, &want, 0))
            bad = 1, fprintf(stderr, "%s: model.safetensors is not step %lld's\n", info.path,
                             (long long)st.step);
        if (info.skipped)
            bad = 1,
            fprintf(stderr, "%s: skipped an incomplete checkpoint: %s\n", dir, info.skipped_why);
        *step_out = st.step;
    }
    hc_ptab_free(&t);
    hc_ptab_free(&want);
    return bad;
}

static int loop_mode(const char *dir) {
    int64_t step = 0;
    int rc = check_consistent(dir, &step, 1);
    if (rc == 1) return 3; /* resuming from an inconsistent checkpoint */
    hc_ptab t;
    if (make_table(&t, 1, 0)) return 2;
    hc_ckpt_params cp = hc_ckpt_default_params();
    cp.keep = 2;
    hc_errbuf eb = {{0}};
    const time_t t0 = time(NULL);
    for (int64_t s = rc == 2 ? 1 : step + 1; time(NULL) - t0 < 120; s++) { /* killed long before */
        fill(&t, (uint64_t)s);
        hc_ckpt_state st = state_of(s);
        if (hc_ckpt_save(dir, &t, &st, &cp, NULL, 0, &eb)) {
            fprintf(stderr, "save step %lld: %s\n", (long long)s, eb.msg);
            hc_ptab_free(&t);
            return 4;
        }
    }
    hc_ptab_free(&t);
    return 0;
}

/* One trainer per directory (hc_ckpt_lock) and the leftovers of interrupted saves
 * (hc_ckpt_clean). */
static void test_lock_and_clean(const char *root) {
    char dir[1200], p[1400], pid[32];
    snprintf(dir, sizeof dir, "%s/lk", root);
    hc_errbuf eb = {{0}};
    int fd = -1, fd2 = -1;
    CHECK_OK(hc_ckpt_lock(dir, &fd, &eb)); /* creates the directory */
    CHECK(fd >= 0);
    snprintf(pid, sizeof pid, "process %ld)", (long)getpid());
    CHECK(hc_ckpt_lock(dir, &fd2, &eb) == HC_ERR_AGAIN && fd2 < 0 && strstr(eb.msg, pid) &&
          strstr(eb.msg, dir));
    close(fd);
    CHECK_OK(hc_ckpt_lock(dir, &fd2, &eb)); /* released with its descriptor */
    close(fd2);
    snprintf(p, sizeof p, "%s/x/y", root);
    CHECK(hc_ckpt_lock(p, &fd, &eb) != HC_OK && fd < 0); /* a missing parent */
    /* leftovers: removed, except an .old-step-N without its step-N (the newest copy of N) */
    const char *dirs[] = {".tmp-step-00000001", ".del-step-00000002", ".old-step-00000003",
                          "step-00000003", ".old-step-00000004"};
    for (int i = 0; i < 5; i++) {
        snprintf(p, sizeof p, "%s/%s", dir, dirs[i]);
        CHECK(mkdir(p, 0755) == 0);
    }
    snprintf(p, sizeof p, "%s/.tmp-step-00000001/model.safetensors", dir);
    CHECK(write_text(p, "x") == 0);
    snprintf(p, sizeof p, "%s/.latest.tmp", dir);
    CHECK(write_text(p, "step-00000003\n") == 0);
    CHECK(hc_ckpt_clean(dir, NULL) == 4);
    CHECK(count_entries(dir, ".tmp-") == 0 && count_entries(dir, ".del-") == 0 &&
          count_entries(dir, ".latest") == 0 && count_entries(dir, ".old-step-00000004") == 1 &&
          count_entries(dir, ".old-step-00000003") == 0 && count_entries(dir, "step-00000003") == 1 &&
          count_entries(dir, ".lock") == 1);
    CHECK(hc_ckpt_clean(dir, NULL) == 0);
    rm_rf(dir);
}

int main(int argc, char **argv) {
    if (argc == 4 && !strcmp(argv[2], "--loop")) return loop_mode(argv[3]);
    if (argc == 4 && !strcmp(argv[2], "--check")) {
        int64_t step = -1;
        int rc = check_consistent(argv[3], &step, 0);
        if (rc == 0) printf("step %lld\n", (long long)step);
        return rc ? 1 : 0;
    }
    char root[] = "/tmp/hc_train_ckpt_XXXXXX";
    CHECK(mkdtemp(root) != NULL);
    test_round_trip(root);
    test_leftovers_and_keep(root);
    test_errors(root);
    test_lock_and_clean(root);
    rm_rf(root);
    return hc_test_finish("test_train_ckpt");
}
