/* test_safetensors.c: hc_st_write -> hc_st_open round trips (all dtypes, 0-d to 4-d, single file,
 * model directory, sharded index), a battery of corrupt files each with its expected error code,
 * and a deterministic byte-flip / truncation fuzz loop (must never crash; run under ASan). */
#include "io/safetensors.h"
#include "testutil.h"

#include <dirent.h>
#include <ftw.h>
#include <signal.h>
#include <sys/resource.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static char g_dir[64];

static int rm_cb(const char *p, const struct stat *sb, int flag, struct FTW *ftw) {
    (void)sb, (void)flag, (void)ftw;
    return remove(p);
}

static void path_in(char *out, size_t cap, const char *name) {
    snprintf(out, cap, "%s/%s", g_dir, name);
}

static void write_bytes(const char *path, const void *p, size_t n) {
    remove(path); /* create afresh: truncating a file in place is slow on ext4 (auto_da_alloc) */
    FILE *f = fopen(path, "wb");
    CHECK(f != NULL);
    if (!f) return;
    CHECK(n == 0 || fwrite(p, 1, n, f) == n);
    fclose(f);
}

/* A file with an arbitrary header string (not padded) and `data_len` bytes of data. */
static void write_raw(const char *path, const char *header, size_t data_len) {
    size_t hl = strlen(header);
    size_t total = 8 + hl + data_len;
    unsigned char *buf = calloc(1, total);
    for (int i = 0; i < 8; i++) buf[i] = (unsigned char)((uint64_t)hl >> (8 * i));
    memcpy(buf + 8, header, hl);
    for (size_t i = 0; i < data_len; i++) buf[8 + hl + i] = (unsigned char)i;
    write_bytes(path, buf, total);
    free(buf);
}

/* Opens path, expects rc; on error also a one-line message containing `needle` (if given). */
static void expect_open(const char *path, int want, const char *needle, int line) {
    hc_safetensors *st = (hc_safetensors *)0x1;
    hc_errbuf eb;
    eb.msg[0] = 0;
    int rc = hc_st_open(&st, path, &eb);
    CHECKF(rc == want, "line %d: %s: got %s, want %s (%s)", line, path, hc_errname(rc),
           hc_errname(want), eb.msg);
    if (rc == HC_OK) {
        CHECK(st != NULL);
        hc_st_close(st);
        return;
    }
    CHECKF(st == NULL, "line %d: out not NULL on error", line);
    CHECKF(eb.msg[0] != 0 && strchr(eb.msg, '\n') == NULL, "line %d: bad message '%s'", line,
           eb.msg);
    if (needle) CHECKF(strstr(eb.msg, needle) != NULL, "line %d: '%s' not in '%s'", line, needle,
                       eb.msg);
}
#define EXPECT_OPEN(path, want, needle) expect_open(path, want, needle, __LINE__)

/* ---- round trips ---------------------------------------------------------------------------- */

static float g_f32[6] = {1.5f, -2.0f, 3.25f, 0.0f, 1e-3f, -7.0f};
static uint16_t g_bf16[4] = {0x3f80, 0xbf80, 0x4000, 0x0000};
static uint16_t g_f16[8] = {0x3c00, 0x4000, 0x4200, 0x4400, 0xbc00, 0x0000, 0x7bff, 0x0001};
static int32_t g_i32 = -123456;

static void make_items(hc_st_write_item *it) {
    memset(it, 0, 5 * sizeof *it);
    it[0] = (hc_st_write_item){"z.bf16", HC_DTYPE_BF16, 1, {4}, g_bf16};
    it[1] = (hc_st_write_item){"a.f32", HC_DTYPE_F32, 2, {2, 3}, g_f32};
    it[2] = (hc_st_write_item){"m.f16.4d", HC_DTYPE_F16, 4, {1, 2, 2, 2}, g_f16};
    it[3] = (hc_st_write_item){"scalar.i32", HC_DTYPE_I32, 0, {0}, &g_i32};
    it[4] = (hc_st_write_item){"empty", HC_DTYPE_F32, 2, {0, 5}, NULL};
}

static void check_items(const hc_safetensors *st, const hc_st_write_item *it, size_t n,
                        int shard) {
    for (size_t i = 0; i < n; i++) {
        const hc_st_tensor *t = hc_st_find(st, it[i].name);
        CHECKF(t != NULL, "tensor %s missing", it[i].name);
        if (!t) continue;
        CHECK(strcmp(t->name, it[i].name) == 0);
        CHECK(t->dtype == it[i].dtype);
        CHECK(t->n_dims == it[i].n_dims);
        size_t nb = hc_dtype_size(it[i].dtype);
        for (int d = 0; d < t->n_dims; d++) {
            CHECK(t->shape[d] == it[i].shape[d]);
            nb *= (size_t)it[i].shape[d];
        }
        for (int d = t->n_dims; d < HC_MAX_DIMS; d++) CHECK(t->shape[d] == 1);
        CHECKF(t->nbytes == nb, "%s nbytes %zu want %zu", t->name, t->nbytes, nb);
        if (nb) CHECK(memcmp(t->data, it[i].data, nb) == 0);
        /* the writer orders data so each tensor is aligned to its element size */
        CHECKF((uintptr_t)t->data % hc_dtype_size(t->dtype) == 0, "%s misaligned", t->name);
        if (shard >= 0) CHECK(t->shard == shard);
    }
}

static void test_roundtrip(void) {
    hc_st_write_item it[5];
    make_items(it);
    char path[256];
    path_in(path, sizeof path, "rt.safetensors");
    hc_errbuf eb;
    CHECK_OK(hc_st_write(path, it, 5, &eb));

    /* header is padded with spaces so the data buffer starts 8-aligned */
    size_t len;
    char *raw = hc_test_read_file(path, &len);
    CHECK(raw != NULL && len > 8);
    if (raw) {
        uint64_t hl = 0;
        for (int i = 7; i >= 0; i--) hl = (hl << 8) | (unsigned char)raw[i];
        CHECK(hl % 8 == 0);
        CHECK(8 + hl + 24 + 8 + 16 + 4 == len);
        CHECK(strstr(raw + 8, "\"format\":\"pt\"") != NULL);
        free(raw);
    }

    hc_safetensors *st = NULL;
    CHECK_OK(hc_st_open(&st, path, &eb));
    if (!st) return;
    CHECK(hc_st_count(st) == 5);
    CHECK(hc_st_n_shards(st) == 1);
    CHECK(strcmp(hc_st_shard_path(st, 0), path) == 0);
    CHECK(hc_st_shard_path(st, 1) == NULL);
    for (size_t i = 1; i < hc_st_count(st); i++)
        CHECK(strcmp(hc_st_get(st, i - 1)->name, hc_st_get(st, i)->name) < 0);
    CHECK(strcmp(hc_st_get(st, 0)->name, "a.f32") == 0);
    CHECK(hc_st_get(st, 5) == NULL);
    check_items(st, it, 5, 0);
    CHECK(hc_st_find(st, "nope") == NULL);
    CHECK(hc_st_find(st, "") == NULL);
    const hc_st_tensor *s = hc_st_find(st, "scalar.i32");
    CHECK(s && s->n_dims == 0 && s->nbytes == 4 && *(const int32_t *)s->data == g_i32);
    const hc_st_tensor *bf = hc_st_find(st, "z.bf16");
    CHECK(bf && hc_bf16_to_f32(((const uint16_t *)bf->data)[1]) == -1.0f);
    hc_st_close(st);

    /* a directory holding model.safetensors */
    char sub[256], mpath[300];
    path_in(sub, sizeof sub, "single");
    CHECK(mkdir(sub, 0700) == 0);
    snprintf(mpath, sizeof mpath, "%s/model.safetensors", sub);
    CHECK_OK(hc_st_write(mpath, it, 5, &eb));
    st = NULL;
    CHECK_OK(hc_st_open(&st, sub, &eb));
    if (st) {
        CHECK(hc_st_count(st) == 5);
        CHECK(strcmp(hc_st_shard_path(st, 0), mpath) == 0);
        check_items(st, it, 5, 0);
        hc_st_close(st);
    }

    /* zero tensors is a valid (if useless) file */
    path_in(path, sizeof path, "none.safetensors");
    CHECK_OK(hc_st_write(path, NULL, 0, &eb));
    st = NULL;
    CHECK_OK(hc_st_open(&st, path, &eb));
    CHECK(st && hc_st_count(st) == 0 && hc_st_find(st, "x") == NULL && hc_st_get(st, 0) == NULL);
    hc_st_close(st);
    hc_st_close(NULL);
    CHECK(hc_st_count(NULL) == 0);
}

static void test_writer_errors(void) {
    hc_st_write_item it[2];
    memset(it, 0, sizeof it);
    it[0] = (hc_st_write_item){"a", HC_DTYPE_F32, 1, {2}, g_f32};
    it[1] = (hc_st_write_item){"a", HC_DTYPE_F32, 1, {2}, g_f32};
    char path[256];
    path_in(path, sizeof path, "werr.safetensors");
    hc_errbuf eb;
    CHECK(hc_st_write(path, it, 2, &eb) == HC_ERR_INVAL);
    CHECK(strstr(eb.msg, "'a'") != NULL);
    it[1].name = "b";
    it[1].n_dims = 5;
    CHECK(hc_st_write(path, it, 2, &eb) == HC_ERR_INVAL);
    it[1].n_dims = 1;
    it[1].shape[0] = -1;
    CHECK(hc_st_write(path, it, 2, &eb) == HC_ERR_INVAL);
    it[1].shape[0] = 2;
    it[1].data = NULL;
    CHECK(hc_st_write(path, it, 2, &eb) == HC_ERR_INVAL);
    it[1].data = g_f32;
    /* "as stored" is a load request, not a dtype a file can hold; nor is the count */
    it[1].dtype = HC_DTYPE_AS_STORED;
    CHECK(hc_st_write(path, it, 2, &eb) == HC_ERR_INVAL && strstr(eb.msg, "dtype"));
    it[1].dtype = HC_DTYPE_COUNT;
    CHECK(hc_st_write(path, it, 2, &eb) == HC_ERR_INVAL);
    it[1].dtype = HC_DTYPE_F32;
    it[1].name = "__metadata__";
    CHECK(hc_st_write(path, it, 2, &eb) == HC_ERR_INVAL);
    CHECK(hc_st_write("/nonexistent-dir/x.safetensors", it, 1, &eb) == HC_ERR_NOTFOUND);
    /* a device, a FIFO or a directory where the file belongs: refused, left alone (a failed
     * write once removed the path it could not write: /dev/full itself, as root) */
    struct stat sb;
    CHECK(hc_st_write("/dev/full", it, 1, &eb) == HC_ERR_INVAL && strstr(eb.msg, "not a regular"));
    CHECK(stat("/dev/full", &sb) == 0 && S_ISCHR(sb.st_mode));
    char fifo[256], dir[256];
    path_in(fifo, sizeof fifo, "fifo.safetensors");
    CHECK(mkfifo(fifo, 0644) == 0);
    CHECK(hc_st_write(fifo, it, 1, &eb) == HC_ERR_INVAL && strstr(eb.msg, "FIFO"));
    CHECK(stat(fifo, &sb) == 0 && S_ISFIFO(sb.st_mode));
    unlink(fifo);
    path_in(dir, sizeof dir, "adir.safetensors");
    CHECK(mkdir(dir, 0755) == 0);
    CHECK(hc_st_write(dir, it, 1, &eb) == HC_ERR_INVAL);
    rmdir(dir);
    /* a write that fails (here: past a file-size limit, as a full disk) keeps the old file and
     * leaves no temporary beside it */
    path_in(path, sizeof path, "keep.safetensors");
    CHECK_OK(hc_st_write(path, it, 1, &eb));
    static float big[1 << 16];
    hc_st_write_item bi = {"big", HC_DTYPE_F32, 1, {1 << 16}, big};
    struct rlimit old_lim, lim;
    void (*old_sig)(int) = signal(SIGXFSZ, SIG_IGN);
    CHECK(getrlimit(RLIMIT_FSIZE, &old_lim) == 0);
    lim = old_lim;
    lim.rlim_cur = 4096; /* the soft limit only, so it can be raised back */
    CHECK(setrlimit(RLIMIT_FSIZE, &lim) == 0);
    CHECK(hc_st_write(path, &bi, 1, &eb) == HC_ERR_IO && strstr(eb.msg, "write failed"));
    CHECK(setrlimit(RLIMIT_FSIZE, &old_lim) == 0);
    signal(SIGXFSZ, old_sig);
    hc_safetensors *st = NULL;
    CHECK_OK(hc_st_open(&st, path, &eb));
    CHECK(st && hc_st_count(st) == 1 && hc_st_find(st, "a") != NULL);
    hc_st_close(st);
    /* no temporary left beside it */
    char dirp[256], *sl;
    snprintf(dirp, sizeof dirp, "%s", path);
    sl = strrchr(dirp, '/');
    if (sl) *sl = 0;
    DIR *dd = opendir(dirp);
    CHECK(dd != NULL);
    for (struct dirent *de; dd && (de = readdir(dd));)
        CHECKF(strncmp(de->d_name, "keep.safetensors.tmp-", 21) != 0, "left over: %s", de->d_name);
    if (dd) closedir(dd);
}

/* ---- sharded ------------------------------------------------------------------------------- */

static void write_index(const char *dir, const char *body) {
    char p[300];
    snprintf(p, sizeof p, "%s/model.safetensors.index.json", dir);
    write_bytes(p, body, strlen(body));
}

static void make_shards(const char *dir, int dup) {
    hc_st_write_item a[2], b[2];
    memset(a, 0, sizeof a);
    memset(b, 0, sizeof b);
    a[0] = (hc_st_write_item){"model.embed_tokens.weight", HC_DTYPE_F32, 2, {3, 2}, g_f32};
    a[1] = (hc_st_write_item){"model.layers.0.w", HC_DTYPE_BF16, 1, {4}, g_bf16};
    b[0] = (hc_st_write_item){"model.norm.weight", HC_DTYPE_F16, 1, {8}, g_f16};
    b[1] = (hc_st_write_item){dup ? "model.layers.0.w" : "lm_head.weight", HC_DTYPE_F32, 1, {6},
                              g_f32};
    char p[300];
    hc_errbuf eb;
    snprintf(p, sizeof p, "%s/model-00001-of-00002.safetensors", dir);
    CHECK_OK(hc_st_write(p, a, 2, &eb));
    snprintf(p, sizeof p, "%s/model-00002-of-00002.safetensors", dir);
    CHECK_OK(hc_st_write(p, b, 2, &eb));
}

static const char *k_index =
    "{\"metadata\": {\"total_size\": 80}, \"weight_map\": {\n"
    "  \"lm_head.weight\": \"model-00002-of-00002.safetensors\",\n"
    "  \"model.embed_tokens.weight\": \"model-00001-of-00002.safetensors\",\n"
    "  \"model.layers.0.w\": \"model-00001-of-00002.safetensors\",\n"
    "  \"model.norm.weight\": \"model-00002-of-00002.safetensors\"}}\n";

static void test_sharded(void) {
    char dir[256];
    path_in(dir, sizeof dir, "sharded");
    CHECK(mkdir(dir, 0700) == 0);
    make_shards(dir, 0);
    /* a stray model.safetensors must be ignored when the index exists */
    char stray[300];
    snprintf(stray, sizeof stray, "%s/model.safetensors", dir);
    write_bytes(stray, "junk", 4);
    write_index(dir, k_index);

    hc_safetensors *st = NULL;
    hc_errbuf eb;
    CHECK_OK(hc_st_open(&st, dir, &eb));
    if (st) {
        CHECK(hc_st_count(st) == 4);
        CHECK(hc_st_n_shards(st) == 2);
        CHECK(strstr(hc_st_shard_path(st, 0), "model-00001-of-00002.safetensors") != NULL);
        CHECK(strstr(hc_st_shard_path(st, 1), "model-00002-of-00002.safetensors") != NULL);
        const hc_st_tensor *t = hc_st_find(st, "model.norm.weight");
        CHECK(t && t->shard == 1 && t->dtype == HC_DTYPE_F16 && t->nbytes == 16);
        CHECK(t && memcmp(t->data, g_f16, 16) == 0);
        t = hc_st_find(st, "model.embed_tokens.weight");
        CHECK(t && t->shard == 0 && t->shape[0] == 3 && t->shape[1] == 2);
        CHECK(strcmp(hc_st_get(st, 0)->name, "lm_head.weight") == 0);
        hc_st_close(st);
    }
    /* the index file given directly */
    char ip[300];
    snprintf(ip, sizeof ip, "%s/model.safetensors.index.json", dir);
    EXPECT_OPEN(ip, HC_OK, NULL);

    /* index naming a tensor the shard lacks */
    write_index(dir, "{\"weight_map\": {\"model.norm.weight\": \"model-00002-of-00002.safetensors\","
                     "\"model.ghost\": \"model-00001-of-00002.safetensors\"}}");
    EXPECT_OPEN(dir, HC_ERR_FORMAT, "model.ghost");
    /* index naming the wrong shard for a tensor */
    write_index(dir, "{\"weight_map\": {\"model.norm.weight\": \"model-00001-of-00002.safetensors\","
                     "\"lm_head.weight\": \"model-00002-of-00002.safetensors\"}}");
    EXPECT_OPEN(dir, HC_ERR_FORMAT, "model.norm.weight");
    /* index referencing a shard that is not there */
    write_index(dir, "{\"weight_map\": {\"model.norm.weight\": \"model-00003-of-00003.safetensors\"}}");
    EXPECT_OPEN(dir, HC_ERR_NOTFOUND, "model-00003-of-00003.safetensors");
    /* malformed indexes */
    write_index(dir, "{\"weight_map\": {}}");
    EXPECT_OPEN(dir, HC_ERR_FORMAT, "weight_map");
    write_index(dir, "{\"metadata\": {}}");
    EXPECT_OPEN(dir, HC_ERR_FORMAT, "weight_map");
    write_index(dir, "{\"weight_map\": {\"a\": 5}}");
    EXPECT_OPEN(dir, HC_ERR_FORMAT, "weight_map['a']");
    write_index(dir, "{\"weight_map\": {\"a\": \"../x.safetensors\"}}");
    EXPECT_OPEN(dir, HC_ERR_FORMAT, "weight_map['a']");
    write_index(dir, "[1, 2");
    EXPECT_OPEN(dir, HC_ERR_FORMAT, "index.json");

    /* duplicate tensor across shards */
    char dir2[256];
    path_in(dir2, sizeof dir2, "dup");
    CHECK(mkdir(dir2, 0700) == 0);
    make_shards(dir2, 1);
    write_index(dir2, "{\"weight_map\": {"
                      "\"model.layers.0.w\": \"model-00001-of-00002.safetensors\","
                      "\"model.norm.weight\": \"model-00002-of-00002.safetensors\"}}");
    EXPECT_OPEN(dir2, HC_ERR_FORMAT, "model.layers.0.w");

    /* a directory with neither file, and a path that does not exist */
    char empty[256];
    path_in(empty, sizeof empty, "emptydir");
    CHECK(mkdir(empty, 0700) == 0);
    EXPECT_OPEN(empty, HC_ERR_NOTFOUND, "model.safetensors.index.json");
    path_in(empty, sizeof empty, "does-not-exist.safetensors");
    EXPECT_OPEN(empty, HC_ERR_NOTFOUND, "does-not-exist");
}

/* ---- corrupt single files ------------------------------------------------------------------ */

static void test_corrupt(void) {
    char p[256];
    path_in(p, sizeof p, "bad.safetensors");

    write_bytes(p, "", 0);
    EXPECT_OPEN(p, HC_ERR_FORMAT, "bad.safetensors");
    write_bytes(p, "\x02\0\0\0\0", 5);
    EXPECT_OPEN(p, HC_ERR_FORMAT, "too short");

    /* header length larger than the file, and absurd (2^63, 2^64-1) */
    unsigned char hdr[16] = {64, 0, 0, 0, 0, 0, 0, 0, '{', '}'};
    write_bytes(p, hdr, 10);
    EXPECT_OPEN(p, HC_ERR_FORMAT, "larger than the file");
    memset(hdr, 0, 8);
    hdr[7] = 0x80;
    write_bytes(p, hdr, 10);
    EXPECT_OPEN(p, HC_ERR_FORMAT, "header length");
    memset(hdr, 0xff, 8);
    write_bytes(p, hdr, 10);
    EXPECT_OPEN(p, HC_ERR_FORMAT, "header length");
    memset(hdr, 0, 8); /* zero-length header */
    write_bytes(p, hdr, 10);
    EXPECT_OPEN(p, HC_ERR_FORMAT, NULL);

    write_raw(p, "{\"a\": {\"dtype\": \"F32\", ", 0);
    EXPECT_OPEN(p, HC_ERR_FORMAT, "JSON");
    write_raw(p, "[1, 2, 3]", 0);
    EXPECT_OPEN(p, HC_ERR_FORMAT, "not an object");
    write_raw(p, "{} garbage", 0);
    EXPECT_OPEN(p, HC_ERR_FORMAT, "JSON");
    /* trailing spaces and metadata are fine */
    write_raw(p, "{\"__metadata__\": {\"format\": \"pt\"}, \"a\": {\"dtype\": \"F32\", "
                 "\"shape\": [2], \"data_offsets\": [0, 8]}}      ", 8);
    EXPECT_OPEN(p, HC_OK, NULL);

    write_raw(p, "{\"w\": {\"dtype\": \"Q7\", \"shape\": [2], \"data_offsets\": [0, 8]}}", 8);
    EXPECT_OPEN(p, HC_ERR_FORMAT, "'w'");
    write_raw(p, "{\"w\": {\"dtype\": \"F64\", \"shape\": [1], \"data_offsets\": [0, 8]}}", 8);
    EXPECT_OPEN(p, HC_ERR_UNSUPPORTED, "F64");
    write_raw(p, "{\"w\": {\"dtype\": \"F8_E4M3\", \"shape\": [8], \"data_offsets\": [0, 8]}}", 8);
    EXPECT_OPEN(p, HC_ERR_UNSUPPORTED, "'w'");
    write_raw(p, "{\"w\": {\"dtype\": 7, \"shape\": [2], \"data_offsets\": [0, 8]}}", 8);
    EXPECT_OPEN(p, HC_ERR_FORMAT, "dtype");

    /* shape / byte count mismatch */
    write_raw(p, "{\"w\": {\"dtype\": \"F32\", \"shape\": [3], \"data_offsets\": [0, 8]}}", 16);
    EXPECT_OPEN(p, HC_ERR_FORMAT, "'w'");
    /* offsets past the end of the data */
    write_raw(p, "{\"w\": {\"dtype\": \"F32\", \"shape\": [4], \"data_offsets\": [0, 16]}}", 8);
    EXPECT_OPEN(p, HC_ERR_FORMAT, "past the end");
    /* begin > end */
    write_raw(p, "{\"model.norm.weight\": {\"dtype\": \"F32\", \"shape\": [0], "
                 "\"data_offsets\": [100, 90]}}",
              128);
    EXPECT_OPEN(p, HC_ERR_FORMAT, "tensor 'model.norm.weight': data_offsets [100, 90] invalid");
    write_raw(p, "{\"w\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [-8, 0]}}", 8);
    EXPECT_OPEN(p, HC_ERR_FORMAT, "'w'");
    write_raw(p, "{\"w\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [0.0, 8]}}", 8);
    EXPECT_OPEN(p, HC_ERR_FORMAT, "data_offsets");
    write_raw(p, "{\"w\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [0]}}", 8);
    EXPECT_OPEN(p, HC_ERR_FORMAT, "data_offsets");
    write_raw(p, "{\"w\": {\"dtype\": \"F32\", \"shape\": [2]}}", 8);
    EXPECT_OPEN(p, HC_ERR_FORMAT, "data_offsets");
    write_raw(p, "{\"w\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": "
                 "[0, 99999999999999999999]}}",
              8);
    EXPECT_OPEN(p, HC_ERR_FORMAT, NULL);
    /* shapes: negative, non-integer, 5-D, overflowing product */
    write_raw(p, "{\"w\": {\"dtype\": \"F32\", \"shape\": [-2], \"data_offsets\": [0, 8]}}", 8);
    EXPECT_OPEN(p, HC_ERR_FORMAT, "shape");
    write_raw(p, "{\"w\": {\"dtype\": \"F32\", \"shape\": [\"2\"], \"data_offsets\": [0, 8]}}", 8);
    EXPECT_OPEN(p, HC_ERR_FORMAT, "shape");
    write_raw(p, "{\"w\": {\"dtype\": \"F32\", \"shape\": 2, \"data_offsets\": [0, 8]}}", 8);
    EXPECT_OPEN(p, HC_ERR_FORMAT, "shape");
    write_raw(p, "{\"w5\": {\"dtype\": \"F32\", \"shape\": [1, 1, 1, 1, 2], "
                 "\"data_offsets\": [0, 8]}}",
              8);
    EXPECT_OPEN(p, HC_ERR_UNSUPPORTED, "'w5'");
    write_raw(p, "{\"w\": {\"dtype\": \"F32\", \"shape\": [4294967296, 4294967296, 16], "
                 "\"data_offsets\": [0, 0]}}",
              8);
    EXPECT_OPEN(p, HC_ERR_FORMAT, "overflow");
    write_raw(p, "{\"w\": {\"dtype\": \"F32\", \"shape\": [4294967296, 4294967296, 0], "
                 "\"data_offsets\": [0, 0]}}",
              8);
    EXPECT_OPEN(p, HC_OK, NULL);
    /* overlapping ranges (and an empty tensor inside another's range is fine) */
    write_raw(p, "{\"a\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [0, 8]},"
                 " \"b\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [4, 12]}}",
              12);
    EXPECT_OPEN(p, HC_ERR_FORMAT, "overlap");
    write_raw(p, "{\"a\": {\"dtype\": \"F32\", \"shape\": [4], \"data_offsets\": [0, 16]},"
                 " \"b\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [4, 8]}}",
              16);
    EXPECT_OPEN(p, HC_ERR_FORMAT, "overlap");
    write_raw(p, "{\"a\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [0, 8]},"
                 " \"e\": {\"dtype\": \"F32\", \"shape\": [0], \"data_offsets\": [4, 4]},"
                 " \"b\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [8, 16]}}",
              16);
    EXPECT_OPEN(p, HC_OK, NULL);
    /* duplicate key in one header */
    write_raw(p, "{\"a\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [0, 8]},"
                 " \"a\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [8, 16]}}",
              16);
    EXPECT_OPEN(p, HC_ERR_FORMAT, NULL);
    write_raw(p, "{\"a\": 3}", 0);
    EXPECT_OPEN(p, HC_ERR_FORMAT, "'a'");
    write_raw(p, "{\"__metadata__\": 3}", 0);
    EXPECT_OPEN(p, HC_ERR_FORMAT, "__metadata__");

    /* truncated data: a valid file cut short */
    hc_st_write_item it[5];
    make_items(it);
    char good[256];
    path_in(good, sizeof good, "good.safetensors");
    hc_errbuf eb;
    CHECK_OK(hc_st_write(good, it, 5, &eb));
    size_t len;
    char *raw = hc_test_read_file(good, &len);
    CHECK(raw != NULL);
    if (raw) {
        write_bytes(p, raw, len - 3);
        EXPECT_OPEN(p, HC_ERR_FORMAT, "past the end");
        free(raw);
    }
    /* a directory is not a file */
    char d[256];
    path_in(d, sizeof d, "notafile.safetensors");
    CHECK(mkdir(d, 0700) == 0);
    EXPECT_OPEN(d, HC_ERR_NOTFOUND, NULL);
}

/* ---- fuzz ---------------------------------------------------------------------------------- */

static uint64_t g_rng = 0x9e3779b97f4a7c15ull;
static uint32_t rnd(void) {
    g_rng ^= g_rng << 13;
    g_rng ^= g_rng >> 7;
    g_rng ^= g_rng << 17;
    return (uint32_t)(g_rng >> 16);
}

/* Open must return OK or an error; on OK every tensor must be readable and self-consistent. */
static void fuzz_one(const char *p, const void *buf, size_t n, int *n_ok) {
    write_bytes(p, buf, n);
    hc_safetensors *st = NULL;
    hc_errbuf eb;
    eb.msg[0] = 0;
    int rc = hc_st_open(&st, p, &eb);
    CHECKF(rc <= 0 && rc >= HC_ERR_NODEVICE, "rc %d", rc);
    if (rc != HC_OK) {
        CHECKF(st == NULL && eb.msg[0] != 0, "rc %d without message", rc);
        return;
    }
    (*n_ok)++;
    unsigned sum = 0;
    for (size_t i = 0; i < hc_st_count(st); i++) {
        const hc_st_tensor *t = hc_st_get(st, i);
        size_t nb = hc_dtype_size(t->dtype);
        for (int d = 0; d < t->n_dims; d++) nb *= (size_t)t->shape[d];
        CHECK(nb == t->nbytes);
        CHECK(t->n_dims >= 0 && t->n_dims <= HC_MAX_DIMS);
        const unsigned char *q = t->data;
        for (size_t k = 0; k < t->nbytes; k++) sum += q[k]; /* touches every byte */
    }
    (void)sum;
    hc_st_close(st);
}

static void test_fuzz(void) {
    hc_st_write_item it[5];
    make_items(it);
    char good[256], p[256];
    path_in(good, sizeof good, "fuzz-src.safetensors");
    path_in(p, sizeof p, "fuzz.safetensors");
    hc_errbuf eb;
    CHECK_OK(hc_st_write(good, it, 5, &eb));
    size_t len;
    unsigned char *src = (unsigned char *)hc_test_read_file(good, &len);
    CHECK(src != NULL);
    if (!src) return;
    unsigned char *buf = malloc(len);
    int n_ok = 0, n_runs = 0;

    /* every single position, a few interesting values each */
    static const unsigned char vals[] = {0x00, 0xff, '"', '}', '9', '-', ' ', 0x80};
    for (size_t pos = 0; pos < len; pos++) {
        for (size_t v = 0; v < sizeof vals; v++) {
            memcpy(buf, src, len);
            buf[pos] = vals[v];
            fuzz_one(p, buf, len, &n_ok);
            n_runs++;
        }
    }
    /* every truncation length */
    for (size_t cut = 0; cut < len; cut++) {
        fuzz_one(p, src, cut, &n_ok);
        n_runs++;
    }
    /* random multi-byte flips, sometimes plus a truncation */
    for (int iter = 0; iter < 3000; iter++) {
        memcpy(buf, src, len);
        int flips = 1 + (int)(rnd() % 4);
        for (int k = 0; k < flips; k++) buf[rnd() % len] ^= (unsigned char)(1u << (rnd() % 8));
        size_t n = (rnd() % 4 == 0) ? rnd() % (len + 1) : len;
        fuzz_one(p, buf, n, &n_ok);
        n_runs++;
    }
    printf("fuzz: %d opens, %d accepted\n", n_runs, n_ok);
    CHECK(n_ok > 0 && n_ok < n_runs);
    free(buf);
    free(src);
}

int main(int argc, char **argv) {
    (void)argc, (void)argv;
    snprintf(g_dir, sizeof g_dir, "/tmp/hc_test_st_XXXXXX");
    if (!mkdtemp(g_dir)) {
        perror("mkdtemp");
        return 1;
    }
    test_roundtrip();
    test_writer_errors();
    test_sharded();
    test_corrupt();
    test_fuzz();
    nftw(g_dir, rm_cb, 16, FTW_DEPTH | FTW_PHYS);
    return hc_test_finish("test_safetensors");
}
