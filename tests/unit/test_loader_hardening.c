/* test_loader_hardening.c: loading model packages and Hugging Face model directories that are
 * hostile or broken (issue 7), on a real-file copy of tests/data/creator/tiny.
 *
 *  - FIFOs (and directories) in place of every file a load opens fail at once with a message
 *    naming the file ("is a FIFO, not a regular file"), never block (a watchdog alarm fails the
 *    test if a load hangs);
 *  - paths in creator.json that leave the package (absolute, `../`, a symlink inside the package,
 *    a symlinked file inside a sub-directory) are refused for weights, configs, tokenizers and
 *    centroids unless allow_outside_paths is set; errors never quote the bytes of a file that is
 *    not what it should be (safetensors header length, JSON parse errors);
 *  - hc_package_probe tells a package from a plain directory and says what is wrong otherwise;
 *  - tokenizer errors say which tokenizer (item or creative) and which file; a failing item-cache
 *    creation reports itself, not a stale message from an optional file;
 *  - the item cache grows lazily: capacity 268435456 costs little memory, LRU stays exact across
 *    growth;
 *  - an empty templates.prompt1 generates (a NULL memcpy under UBSan before).
 */
#include <errno.h>
#include <ftw.h>
#include <jansson.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "backend/backend.h"
#include "creator/creator.h"
#include "creator/item_cache.h"
#include "model/llm.h"
#include "io/package.h"
#include "testutil.h"

static const char *PKG_FILES[] = {
    "creator.json",
    "model.safetensors",
    "clusters.safetensors",
    "item_llm/config.json",
    "user_llm/config.json",
    "creative_llm/config.json",
    "creative_llm/generation_config.json",
    "item_tokenizer/tokenizer.json",
    "item_tokenizer/tokenizer_config.json",
    "creative_tokenizer/tokenizer.json",
    "creative_tokenizer/tokenizer_config.json",
};
#define N_PKG_FILES (sizeof PKG_FILES / sizeof PKG_FILES[0])

static char TMP[64];
static hc_backend *BE;

static void on_alarm(int sig) {
    (void)sig;
    static const char msg[] = "test_loader_hardening: a load blocked (watchdog)\n";
    if (write(2, msg, sizeof msg - 1) < 0) _exit(3);
    _exit(2);
}

/* A path for immediate use (one of 8 rotating buffers); PATH() for one that must last. */
#define PATH(var, ...)                                                                             \
    char var[2048];                                                                                \
    path_into(var, sizeof var, __VA_ARGS__)
static char *path_into(char *p, size_t n, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static char *path_into(char *p, size_t n, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    if ((size_t)vsnprintf(p, n, fmt, ap) >= n) {
        fprintf(stderr, "path too long\n");
        exit(1);
    }
    va_end(ap);
    return p;
}
static char *next_pathbuf(void) {
    static char buf[8][2048];
    static int k;
    return buf[k++ % 8];
}
#define pathf(...) path_into(next_pathbuf(), 2048, __VA_ARGS__)

static int copy_file(const char *from, const char *to) {
    size_t n = 0;
    char *b = hc_test_read_file(from, &n);
    if (!b) return -1;
    FILE *f = fopen(to, "wb");
    int ok = f && fwrite(b, 1, n, f) == n;
    if (f && fclose(f) != 0) ok = 0;
    free(b);
    return ok ? 0 : -1;
}

static int write_text(const char *path, const char *text) {
    FILE *f = fopen(path, "wb");
    if (!f) return -1;
    int ok = fputs(text, f) >= 0;
    return fclose(f) == 0 && ok ? 0 : -1;
}

/* A real-file copy of the demo package at dst. */
static void copy_package(const char *src, const char *dst) {
    const char *dirs[] = {"", "/item_llm", "/user_llm", "/creative_llm", "/item_tokenizer",
                          "/creative_tokenizer"};
    for (size_t i = 0; i < sizeof dirs / sizeof dirs[0]; i++)
        CHECK(mkdir(pathf("%s%s", dst, dirs[i]), 0755) == 0 || errno == EEXIST);
    for (size_t i = 0; i < N_PKG_FILES; i++)
        CHECKF(copy_file(pathf("%s/%s", src, PKG_FILES[i]), pathf("%s/%s", dst, PKG_FILES[i])) == 0,
               "copy %s", PKG_FILES[i]);
}

/* Rewrites dst/creator.json from src's with one string field replaced (field "a.b" = nested). */
static void set_field(const char *pkg, const char *field, const char *value) {
    json_error_t je;
    char *path = pathf("%s/creator.json", pkg);
    json_t *root = json_load_file(path, 0, &je), *obj = root;
    char key[64];
    snprintf(key, sizeof key, "%s", field);
    char *dot = strchr(key, '.');
    if (dot) {
        *dot = 0;
        obj = json_object_get(root, key);
    }
    CHECK(obj && json_object_set_new(obj, dot ? dot + 1 : key, json_string(value)) == 0);
    CHECK(json_dump_file(root, path, JSON_INDENT(2)) == 0);
    json_decref(root);
}

static hc_creator_params params(int load_creative, int outside) {
    hc_creator_params p = hc_creator_default_params();
    p.load_creative = load_creative;
    p.allow_outside_paths = outside;
    p.item_cache_entries = 64;
    p.n_threads = 1;
    return p;
}

/* Loads pkg; returns rc with the message in eb (the creator freed). */
static int load(const char *pkg, const hc_creator_params *p, hc_errbuf *eb) {
    hc_creator *c = NULL;
    memset(eb, 0, sizeof *eb);
    alarm(60);
    int rc = hc_creator_load(&c, BE, pkg, p, eb);
    alarm(0);
    CHECK((rc == HC_OK) == (c != NULL));
    hc_creator_free(c);
    return rc;
}

static int rm_entry(const char *p, const struct stat *sb, int flag, struct FTW *ftw) {
    (void)sb;
    (void)flag;
    (void)ftw;
    if (remove(p) != 0) fprintf(stderr, "could not remove %s\n", p);
    return 0;
}

/* ---- 3. FIFOs and directories in place of files ------------------------------------------ */

static void expect_refused(int rc, const hc_errbuf *eb, const char *file, const char *what) {
    CHECKF(rc != HC_OK && strstr(eb->msg, file) && strstr(eb->msg, what),
           "%s: rc %d, message '%s' (want '%s' and '%s')", file, rc, eb->msg, file, what);
}

static void test_fifos(const char *pkg, const char *tests) {
    hc_creator_params p = params(1, 0);
    hc_errbuf eb;
    CHECKF(load(pkg, &p, &eb) == HC_OK, "the copy loads: %s", eb.msg);
    /* every file, and the optional generation_config.json the tokenizer looks for */
    const char *files[N_PKG_FILES + 1];
    for (size_t i = 0; i < N_PKG_FILES; i++) files[i] = PKG_FILES[i];
    files[N_PKG_FILES] = "creative_tokenizer/generation_config.json";
    for (size_t i = 0; i < N_PKG_FILES + 1; i++) {
        PATH(f, "%s/%s", pkg, files[i]);
        PATH(aside, "%s.aside", f);
        int had = access(f, F_OK) == 0;
        if (had) CHECK(rename(f, aside) == 0);
        CHECK(mkfifo(f, 0644) == 0);
        int rc = load(pkg, &p, &eb);
        if (!strcmp(files[i], "creative_llm/generation_config.json")) {
            CHECKF(rc == HC_OK, "generation_config.json of the LLM is never read: %s", eb.msg);
        } else {
            expect_refused(rc, &eb, files[i], "is a FIFO, not a regular file");
        }
        if (!strcmp(files[i], "creator.json")) {
            hc_errbuf pe = {{0}};
            CHECK(hc_package_probe(pkg, &pe) != HC_OK && strstr(pe.msg, "is a FIFO"));
        }
        CHECK(unlink(f) == 0);
        /* a directory in its place */
        CHECK(mkdir(f, 0755) == 0);
        rc = load(pkg, &p, &eb);
        /* a checkpoint path may name a directory (of shards): it then lacks model.safetensors */
        const char *st_dir = "no model.safetensors.index.json or model.safetensors";
        if (strstr(files[i], ".safetensors"))
            expect_refused(rc, &eb, files[i], st_dir);
        else if (strcmp(files[i], "creative_llm/generation_config.json") != 0)
            expect_refused(rc, &eb, files[i], "is a directory");
        CHECK(rmdir(f) == 0);
        if (had) CHECK(rename(aside, f) == 0);
    }
    /* a Hugging Face model directory: config.json, model.safetensors, the shard index */
    PATH(hf, "%s/hf", TMP);
    CHECK(mkdir(hf, 0755) == 0);
    PATH(m, "%s/data/llm/llama_gqa_f32", tests);
    CHECK(copy_file(pathf("%s/config.json", m), pathf("%s/config.json", hf)) == 0);
    CHECK(copy_file(pathf("%s/model.safetensors", m), pathf("%s/model.safetensors", hf)) == 0);
    const char *hf_files[] = {"config.json", "model.safetensors", "model.safetensors.index.json"};
    for (size_t i = 0; i < 3; i++) {
        PATH(f, "%s/%s", hf, hf_files[i]);
        PATH(aside, "%s.aside", f);
        int had = access(f, F_OK) == 0;
        if (had) CHECK(rename(f, aside) == 0);
        CHECK(mkfifo(f, 0644) == 0);
        hc_llm *llm = NULL;
        memset(&eb, 0, sizeof eb);
        alarm(60);
        int rc = hc_llm_load(&llm, BE, hf, NULL, &eb);
        alarm(0);
        hc_llm_free(llm);
        expect_refused(rc, &eb, hf_files[i], "is a FIFO, not a regular file");
        CHECK(unlink(f) == 0);
        if (had) CHECK(rename(aside, f) == 0);
    }
}

/* ---- 4. paths that leave the package ----------------------------------------------------- */

#define SECRET "root:x:0:0:SECRET-CONTENT:/root:/bin/bash\n"

static void expect_clean(const hc_errbuf *eb, const char *what) {
    CHECKF(!strstr(eb->msg, "SECRET") && !strstr(eb->msg, "root:x") &&
               !strstr(eb->msg, "3475222254926655346") && !strstr(eb->msg, "near"),
           "%s: the message quotes the foreign file: %s", what, eb->msg);
}

static void test_confinement(const char *src, const char *pkg) {
    /* outside/: a "secret" file and directories whose files are that secret */
    PATH(out, "%s/outside", TMP);
    CHECK(mkdir(out, 0755) == 0);
    CHECK(write_text(pathf("%s/secret", out), SECRET) == 0);
    CHECK(mkdir(pathf("%s/dir", out), 0755) == 0);
    const char *dir_files[] = {"config.json", "tokenizer.json", "tokenizer_config.json"};
    for (int i = 0; i < 3; i++)
        CHECK(write_text(pathf("%s/dir/%s", out, dir_files[i]), SECRET) == 0);
    CHECK(symlink(pathf("%s/secret", out), pathf("%s/link_file", pkg)) == 0);
    CHECK(symlink(pathf("%s/dir", out), pathf("%s/link_dir", pkg)) == 0);

    static const struct {
        const char *field;
        int is_dir;
    } fields[] = {{"weights", 0},          {"item_llm", 1},          {"user_llm", 1},
                  {"creative_llm", 1},     {"item_tokenizer", 1},    {"creative_tokenizer", 1},
                  {"cluster.centroids", 0}};
    PATH(orig, "%s/creator.json.orig", TMP);
    CHECK(copy_file(pathf("%s/creator.json", pkg), orig) == 0);
    hc_creator_params confined = params(1, 0), open = params(1, 1);
    hc_errbuf eb;
    for (size_t f = 0; f < sizeof fields / sizeof fields[0]; f++) {
        const char *target = fields[f].is_dir ? "dir" : "secret";
        PATH(abs_value, "%s/%s", out, target);
        PATH(up_value, "../outside/%s", target);
        const char *values[3] = {abs_value, up_value, fields[f].is_dir ? "link_dir" : "link_file"};
        const char *kinds[3] = {"absolute", "../", "symlink"};
        for (int k = 0; k < 3; k++) {
            CHECK(copy_file(orig, pathf("%s/creator.json", pkg)) == 0);
            set_field(pkg, fields[f].field, values[k]);
            int rc = load(pkg, &confined, &eb);
            CHECKF(rc == HC_ERR_INVAL && strstr(eb.msg, "outside the model package") &&
                       strstr(eb.msg, fields[f].field),
                   "%s %s: rc %d: %s", fields[f].field, kinds[k], rc, eb.msg);
            expect_clean(&eb, fields[f].field);
            /* allowed: it is followed, and the error about the foreign file quotes nothing */
            rc = load(pkg, &open, &eb);
            CHECKF(rc != HC_OK && !strstr(eb.msg, "outside the model package"),
                   "%s %s allowed: rc %d: %s",
                   fields[f].field, kinds[k], rc, eb.msg);
            expect_clean(&eb, fields[f].field);
        }
    }
    CHECK(copy_file(orig, pathf("%s/creator.json", pkg)) == 0);
    /* symlinked files inside the package's own directories */
    const char *inner[] = {"item_llm/config.json", "creative_tokenizer/tokenizer_config.json",
                           "item_tokenizer/tokenizer.json", "clusters.safetensors",
                           "model.safetensors", "creator.json"};
    for (size_t i = 0; i < sizeof inner / sizeof inner[0]; i++) {
        PATH(f, "%s/%s", pkg, inner[i]);
        PATH(aside, "%s.aside", f);
        CHECK(rename(f, aside) == 0);
        CHECK(symlink(pathf("%s/secret", out), f) == 0);
        int rc = load(pkg, &confined, &eb);
        CHECKF(rc == HC_ERR_INVAL && strstr(eb.msg, inner[i]) &&
                   strstr(eb.msg, "outside the model package"),
               "%s -> outside: rc %d: %s", inner[i], rc, eb.msg);
        rc = load(pkg, &open, &eb);
        CHECKF(rc != HC_OK && strstr(eb.msg, inner[i]), "%s allowed: rc %d: %s", inner[i], rc,
               eb.msg);
        expect_clean(&eb, inner[i]);
        CHECK(unlink(f) == 0 && rename(aside, f) == 0);
    }
    /* paths that stay inside are fine in any spelling; outside ones work when allowed */
    set_field(pkg, "weights", pathf("%s/item_llm/../model.safetensors", pkg));
    CHECKF(load(pkg, &confined, &eb) == HC_OK, "absolute path inside: %s", eb.msg);
    set_field(pkg, "weights", pathf("%s/model.safetensors", src));
    set_field(pkg, "item_tokenizer", pathf("%s/item_tokenizer", src));
    CHECK(load(pkg, &confined, &eb) == HC_ERR_INVAL);
    CHECKF(load(pkg, &open, &eb) == HC_OK, "outside allowed: %s", eb.msg);
    CHECK(copy_file(orig, pathf("%s/creator.json", pkg)) == 0);
    CHECK(unlink(pathf("%s/link_file", pkg)) == 0 && unlink(pathf("%s/link_dir", pkg)) == 0);
}

/* ---- 5. probe, messages --------------------------------------------------------------------- */

static void test_probe(const char *pkg, const char *tests) {
    hc_errbuf eb = {{0}};
    CHECKF(hc_package_probe(pkg, &eb) == HC_OK, "%s", eb.msg);
    CHECK(hc_package_probe(pathf("%s/data/llm/llama_gqa_f32", tests), &eb) == HC_ERR_NOTFOUND);
    CHECK(symlink("loop", pathf("%s/loop", TMP)) == 0);
    int rc = hc_package_probe(pathf("%s/loop", TMP), &eb);
    CHECKF(rc != HC_OK && rc != HC_ERR_NOTFOUND && strstr(eb.msg, "loop: Too many levels of symbolic links"),
           "loop: %s", eb.msg);
    rc = hc_package_probe(pathf("%s/nothing", TMP), &eb);
    CHECKF(rc != HC_OK && rc != HC_ERR_NOTFOUND && strstr(eb.msg, "No such file"), "%s", eb.msg);
    rc = hc_package_probe(pathf("%s/creator.json", pkg), &eb);
    CHECKF(rc != HC_OK && rc != HC_ERR_NOTFOUND && strstr(eb.msg, "is not a directory"), "%s",
           eb.msg);
    PATH(lp, "%s/lpkg", TMP);
    CHECK(mkdir(lp, 0755) == 0);
    CHECK(symlink("creator.json", pathf("%s/creator.json", lp)) == 0);
    rc = hc_package_probe(lp, &eb);
    CHECKF(rc != HC_OK && rc != HC_ERR_NOTFOUND &&
               strstr(eb.msg, "creator.json: Too many levels of symbolic links"),
           "%s", eb.msg);
    if (geteuid() != 0) { /* root reads everything */
        PATH(locked, "%s/locked", TMP);
        CHECK(mkdir(locked, 0755) == 0 && write_text(pathf("%s/creator.json", locked), "{}") == 0);
        CHECK(chmod(locked, 0) == 0);
        rc = hc_package_probe(locked, &eb);
        CHECKF(rc != HC_OK && rc != HC_ERR_NOTFOUND && strstr(eb.msg, "Permission denied"), "%s",
               eb.msg);
        CHECK(chmod(locked, 0755) == 0);
    }
}

static void test_messages(const char *pkg) {
    hc_creator_params p = params(1, 0);
    hc_errbuf eb;
    /* which tokenizer, which file */
    const char *which[2][2] = {{"item_tokenizer/tokenizer.json", "item tokenizer: "},
                               {"creative_tokenizer/tokenizer.json", "creative tokenizer: "}};
    for (int i = 0; i < 2; i++) {
        PATH(f, "%s/%s", pkg, which[i][0]);
        PATH(aside, "%s.aside", f);
        CHECK(rename(f, aside) == 0 && write_text(f, "{\"model\": [1, 2,\n  oops]}") == 0);
        int rc = load(pkg, &p, &eb);
        CHECKF(rc == HC_ERR_FORMAT && !strncmp(eb.msg, which[i][1], strlen(which[i][1])) &&
                   strstr(eb.msg, which[i][0]) && strstr(eb.msg, "line 2") && !strstr(eb.msg, "oops"),
               "%s: rc %d: %s", which[i][0], rc, eb.msg);
        CHECK(rename(aside, f) == 0);
    }
    PATH(cfg, "%s/creative_tokenizer/tokenizer_config.json", pkg);
    PATH(aside, "%s.aside", cfg);
    CHECK(rename(cfg, aside) == 0 && write_text(cfg, "{\"bos_token\": nope}") == 0);
    int rc = load(pkg, &p, &eb);
    CHECKF(rc == HC_ERR_FORMAT && !strncmp(eb.msg, "creative tokenizer: ", 20) &&
               strstr(eb.msg, "creative_tokenizer/tokenizer_config.json") && !strstr(eb.msg, "nope"),
           "tokenizer_config: %s", eb.msg);
    CHECK(rename(aside, cfg) == 0);
    /* an item cache that cannot be made says so, not "generation_config.json: cannot open" */
    p.item_cache_entries = (size_t)INT32_MAX;
    rc = load(pkg, &p, &eb);
    CHECKF(rc != HC_OK && strstr(eb.msg, "item-embedding cache") &&
               !strstr(eb.msg, "generation_config"),
           "item cache: %s", eb.msg);
    /* the documented maximum works */
    p.item_cache_entries = 268435456;
    p.load_creative = 0;
    hc_creator *c = NULL;
    CHECKF(hc_creator_load(&c, BE, pkg, &p, &eb) == HC_OK, "cache 268435456: %s", eb.msg);
    if (c) {
        const char *titles[2] = {"The Hobbit", "Dune"};
        size_t lens[2] = {10, 4};
        hc_history h = {titles, lens, 2};
        float *u = malloc(sizeof(float) * (size_t)c->d_user);
        CHECKF(hc_creator_embed_users(c, &h, 1, u, NULL, &eb) == HC_OK, "%s", eb.msg);
        free(u);
        hc_creator_free(c);
    }
    /* a byte bound instead of an entry count: as many entries as fit (the daemon's
     * item-cache-bytes) */
    p.item_cache_entries = 7; /* ignored when item_cache_bytes is set */
    p.item_cache_bytes = 1000000;
    c = NULL;
    CHECKF(hc_creator_load(&c, BE, pkg, &p, &eb) == HC_OK, "cache of 1000000 bytes: %s", eb.msg);
    if (c) {
        const size_t per = hc_item_cache_entry_bytes(
            c->d_item, c->pkg.max_item_tokens > 0 ? c->pkg.max_item_tokens : 1);
        hc_item_cache_stats st = hc_item_cache_get_stats(c->cache);
        CHECKF(st.capacity == 1000000 / per && st.capacity > 7, "capacity %zu, want %zu",
               st.capacity, 1000000 / per);
        hc_creator_free(c);
    }
    p.item_cache_bytes = 0;
}

/* ---- 5. the item cache grows lazily ---------------------------------------------------------- */

static long rss_kb(void) {
    long pages = 0, rss = 0;
    FILE *f = fopen("/proc/self/statm", "r");
    if (!f) return -1;
    if (fscanf(f, "%ld %ld", &pages, &rss) != 2) rss = -1;
    fclose(f);
    return rss < 0 ? -1 : rss * (sysconf(_SC_PAGESIZE) / 1024);
}

static void test_item_cache_lazy(void) {
    enum { DIM = 96 };
    long before = rss_kb();
    hc_item_cache *c = NULL;
    CHECK_OK(hc_item_cache_create(&c, 268435456, DIM, 1));
    if (!c) return;
    float v[DIM];
    for (int32_t k = 0; k < 3000; k++) {
        for (int d = 0; d < DIM; d++) v[d] = (float)(k + d);
        CHECK_OK(hc_item_cache_put(c, &k, 1, v));
    }
    long after = rss_kb();
    hc_item_cache_stats st = hc_item_cache_get_stats(c);
    CHECK(st.capacity == 268435456 && st.size == 3000 && st.evictions == 0);
    for (int32_t k = 0; k < 3000; k += 7) {
        const float *g = hc_item_cache_get(c, &k, 1);
        CHECK(g && g[0] == (float)k && g[DIM - 1] == (float)(k + DIM - 1));
    }
    if (before > 0 && after > 0)
        CHECKF(after - before < 64 * 1024, "3000 entries of a 268435456-entry cache cost %ld KiB",
               after - before);
    hc_item_cache_free(c);
    /* exact LRU across growth: capacity 300 (64 -> 128 -> 256 -> 300), 1000 keys */
    CHECK_OK(hc_item_cache_create(&c, 300, 2, 1));
    for (int32_t k = 0; k < 1000; k++) {
        float w[2] = {(float)k, 1};
        CHECK_OK(hc_item_cache_put(c, &k, 1, w));
        if (k == 299) CHECK(hc_item_cache_get_stats(c).evictions == 0);
    }
    st = hc_item_cache_get_stats(c);
    CHECK(st.size == 300 && st.evictions == 700);
    for (int32_t k = 0; k < 1000; k++) {
        const float *g = hc_item_cache_get(c, &k, 1);
        CHECKF((g != NULL) == (k >= 700) && (!g || g[0] == (float)k), "key %d", k);
    }
    hc_item_cache_clear(c);
    int32_t k0 = 5;
    float w[2] = {5, 5};
    CHECK(hc_item_cache_get(c, &k0, 1) == NULL);
    CHECK_OK(hc_item_cache_put(c, &k0, 1, w));
    CHECK(hc_item_cache_get(c, &k0, 1) != NULL && hc_item_cache_get_stats(c).size == 1);
    hc_item_cache_free(c);
    CHECK(hc_item_cache_create(&c, (size_t)INT32_MAX, 2, 1) == HC_ERR_INVAL && c == NULL);
}

/* ---- 6. empty prompt1 --------------------------------------------------------------------- */

static void test_empty_prompt1(const char *pkg) {
    json_error_t je;
    PATH(path, "%s/creator.json", pkg);
    PATH(orig, "%s/creator.json.p1", TMP);
    CHECK(copy_file(path, orig) == 0);
    json_t *root = json_load_file(path, 0, &je);
    CHECK(root && json_object_set_new(json_object_get(root, "templates"), "prompt1",
                                      json_string("")) == 0);
    CHECK(json_dump_file(root, path, 0) == 0);
    json_decref(root);
    hc_creator_params p = params(1, 0);
    hc_creator *c = NULL;
    hc_errbuf eb = {{0}};
    CHECKF(hc_creator_load(&c, BE, pkg, &p, &eb) == HC_OK, "empty prompt1: %s", eb.msg);
    if (c) {
        CHECK(c->n_prompt1 == 0);
        const char *titles[1] = {"The Hobbit"};
        size_t lens[1] = {10};
        for (int per_user = 0; per_user < 2; per_user++) {
            hc_title_request r;
            memset(&r, 0, sizeof r);
            r.history = (hc_history){titles, lens, 1};
            r.ad_title = "Dune";
            r.ad_title_len = 4;
            r.per_user = per_user;
            r.sampling = hc_sampler_greedy();
            r.max_new = 3;
            CHECKF(hc_creator_generate(c, &r, 1, NULL, NULL, &eb) == HC_OK, "%s", eb.msg);
            CHECKF(r.status == HC_OK && r.n_ids > 0, "empty prompt1: status %d: %s", r.status,
                   r.error);
            int32_t *ids = NULL;
            int n = 0, slot = -1;
            CHECK_OK(hc_creator_prompt(c, "Dune", 4, NULL, 0, &ids, &n, &slot, &eb));
            CHECK(slot == 0 && n > 1 && ids && ids[0] == c->pkg.slot_token_id);
            free(ids);
            hc_title_request_clear(&r);
        }
        hc_creator_free(c);
    }
    CHECK(copy_file(orig, path) == 0);
}

int main(int argc, char **argv) {
    const char *tests = argc > 1 ? argv[1] : "tests";
    signal(SIGALRM, on_alarm);
    snprintf(TMP, sizeof TMP, "/tmp/hc_test_loader_XXXXXX");
    if (!mkdtemp(TMP) || hc_backend_cpu_create(&BE, 2) != HC_OK) {
        fprintf(stderr, "setup failed\n");
        return 1;
    }
    char *src = realpath(pathf("%s/data/creator/tiny", tests), NULL);
    PATH(pkg_copy, "%s/pkg", TMP);
    if (src) {
        copy_package(src, pkg_copy);
        test_fifos(pkg_copy, tests);
        test_confinement(src, pkg_copy);
        test_probe(pkg_copy, tests);
        test_messages(pkg_copy);
        test_empty_prompt1(pkg_copy);
    } else {
        CHECKF(0, "no demo package under %s", tests);
    }
    test_item_cache_lazy();
    free(src);
    nftw(TMP, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    hc_backend_free(BE);
    return hc_test_finish("test_loader_hardening");
}
