/* test_weights.c: the weight loader (engine/io/weights.h) for every stored x in-memory dtype pair.
 *
 *  - torch: tests/data/dtype/conversions.safetensors (tests/reference/make_dtype_fixtures.py)
 *    holds edge-value sources in F32/BF16/F16 and torch's `.to(dtype)` of each; every source is
 *    loaded as every dtype on the CPU backend and compared bit for bit (NaN: any NaN), both
 *    through hc_tensor_load_converted (backend tensor) and hc_tensor_read_converted (host).
 *  - a tensor larger than the loader's conversion chunk, at an odd address, matches hc_convert.
 *  - misaligned data: a safetensors file whose header has odd length puts BF16/F16/F32 data at
 *    odd offsets in the mapping (the official loader accepts such files); every tensor loads as
 *    every dtype (UBSan checks the reads), and a bf16 model rewritten that way gives bit-identical
 *    outputs to the original in every weight mode.
 *  - hc_llm_load of an F32 checkpoint as bf16/f16 (a heap overflow before) runs and stays close to
 *    f32.
 *  - the wanted dtype is explicit: HC_DTYPE_AS_STORED is the default of hc_llm_params and
 *    hc_creator_params, and every entry point that takes a wanted dtype (hc_weight_dtype_check,
 *    hc_tensor_load_converted, hc_tensor_read_converted, hc_llm_load, hc_creator_load) refuses
 *    HC_DTYPE_COUNT, I32 and out-of-range values with a message; the "as stored" request is no
 *    tensor dtype for hc_tensor_alloc, hc_convert and hc_dtype_size.
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "backend/backend.h"
#include "creator/creator.h"
#include "model/llm.h"
#include "io/safetensors.h"
#include "testutil.h"
#include "io/weights.h"

static const hc_dtype DT[3] = {HC_DTYPE_F32, HC_DTYPE_BF16, HC_DTYPE_F16};

static int is_nan_bits(const void *p, hc_dtype t, size_t i) {
    if (t == HC_DTYPE_F32) {
        float f;
        memcpy(&f, (const char *)p + i * 4, 4);
        return isnan(f);
    }
    uint16_t h = hc_load_u16(p, i);
    return t == HC_DTYPE_BF16 ? (h & 0x7fff) > 0x7f80 : (h & 0x7fff) > 0x7c00;
}

/* Bit-exact comparison of n elements of dtype t; a NaN matches any NaN. Returns mismatches. */
static int compare_bits(const char *what, const void *got, const void *want, hc_dtype t, size_t n) {
    size_t es = hc_dtype_size(t);
    int bad = 0;
    for (size_t i = 0; i < n; i++) {
        if (is_nan_bits(want, t, i) && is_nan_bits(got, t, i)) continue;
        if (memcmp((const char *)got + i * es, (const char *)want + i * es, es) != 0) {
            if (bad++ < 5) {
                uint32_t g = 0, w = 0;
                memcpy(&g, (const char *)got + i * es, es);
                memcpy(&w, (const char *)want + i * es, es);
                fprintf(stderr, "%s: element %zu: got 0x%0*x, torch 0x%0*x\n", what, i,
                        (int)es * 2, g, (int)es * 2, w);
            }
        }
    }
    return bad;
}

/* Loads src as dtype want through both entry points and compares with `want_data`. */
static void check_pair(hc_backend *be, const hc_st_tensor *src, hc_dtype want,
                       const void *want_data, const char *what) {
    hc_errbuf eb = {{0}};
    size_t n = src->nbytes / hc_dtype_size(src->dtype);
    size_t nb = n * hc_dtype_size(want);
    int64_t shape[1] = {(int64_t)n};
    hc_tensor t;
    int rc = hc_tensor_load_converted(&t, be, src, want, 1, shape, &eb);
    CHECKF(rc == HC_OK, "%s: %s", what, eb.msg);
    if (rc) return;
    CHECKF(t.dtype == want && hc_tensor_nbytes(&t) == nb, "%s: dtype %s", what,
           hc_dtype_name(t.dtype));
    unsigned char *host = malloc(nb + 1);
    CHECK_OK(be->iface->download(be, host, t.data, nb));
    CHECKF(compare_bits(what, host, want_data, want, n) == 0, "%s: differs from torch", what);
    hc_tensor_release(&t);
    /* host variant, into an odd address */
    memset(host, 0, nb + 1);
    CHECKF(hc_tensor_read_converted(host + 1, want, n, src, &eb) == HC_OK, "%s: %s", what, eb.msg);
    CHECKF(compare_bits(what, host + 1, want_data, want, n) == 0, "%s (host): differs", what);
    free(host);
}

static void test_torch_pairs(hc_backend *be, const char *tests) {
    char path[1024];
    snprintf(path, sizeof path, "%s/data/dtype/conversions.safetensors", tests);
    hc_safetensors *st = NULL;
    hc_errbuf eb = {{0}};
    int rc = hc_st_open(&st, path, &eb);
    CHECKF(rc == HC_OK, "%s", eb.msg);
    if (rc) return;
    int pairs = 0;
    for (int s = 0; s < 3; s++) {
        char name[64];
        snprintf(name, sizeof name, "src_%s", hc_dtype_name(DT[s]));
        const hc_st_tensor *src = hc_st_find(st, name);
        CHECKF(src && src->dtype == DT[s], "%s missing", name);
        if (!src) continue;
        for (int d = 0; d < 3; d++) {
            snprintf(name, sizeof name, "%s_to_%s", hc_dtype_name(DT[s]), hc_dtype_name(DT[d]));
            const hc_st_tensor *ref = hc_st_find(st, name);
            CHECKF(ref && ref->dtype == DT[d] && ref->shape[0] == src->shape[0], "%s missing",
                   name);
            if (!ref) continue;
            check_pair(be, src, DT[d], ref->data, name);
            pairs++;
        }
        /* HC_DTYPE_AS_STORED keeps the stored dtype */
        snprintf(name, sizeof name, "%s_to_%s", hc_dtype_name(DT[s]), hc_dtype_name(DT[s]));
        const hc_st_tensor *same = hc_st_find(st, name);
        if (same) {
            hc_tensor t;
            int64_t shape[1] = {src->shape[0]};
            CHECK_OK(hc_tensor_load_converted(&t, be, src, HC_DTYPE_AS_STORED, 1, shape, &eb));
            CHECK(t.dtype == DT[s]);
            hc_tensor_release(&t);
        }
    }
    CHECK(pairs == 9);
    /* refusals name the tensor */
    const hc_st_tensor *src = hc_st_find(st, "src_F32");
    if (src) {
        hc_tensor t;
        int64_t wrong[1] = {src->shape[0] + 1};
        CHECK(hc_tensor_load_converted(&t, be, src, HC_DTYPE_BF16, 1, wrong, &eb) ==
                  HC_ERR_MISMATCH &&
              strstr(eb.msg, "src_F32") && t.data == NULL);
        int64_t ok[1] = {src->shape[0]};
        CHECK(hc_tensor_load_converted(&t, be, src, HC_DTYPE_I32, 1, ok, &eb) ==
                  HC_ERR_UNSUPPORTED &&
              strstr(eb.msg, "src_F32") && t.data == NULL);
    }
    hc_st_close(st);
}

/* More elements than the loader converts per upload, at an odd address. */
static void test_chunks(hc_backend *be) {
    const size_t n = (size_t)224700 * 7; /* 1.5 chunks */
    unsigned char *buf = malloc(n * 2 + 1);
    float *want = malloc(n * 4), *got = malloc(n * 4);
    uint32_t x = 12345;
    for (size_t i = 0; i < n; i++) {
        x = x * 1664525u + 1013904223u;
        uint16_t h = (uint16_t)(x >> 16);
        memcpy(buf + 1 + i * 2, &h, 2);
    }
    hc_st_tensor src = {.name = "big", .dtype = HC_DTYPE_BF16, .n_dims = 1,
                        .shape = {(int64_t)n, 1, 1, 1}, .data = buf + 1, .nbytes = n * 2};
    CHECK_OK(hc_convert(want, HC_DTYPE_F32, buf + 1, HC_DTYPE_BF16, n));
    hc_tensor t;
    int64_t shape[2] = {224700, 7};
    hc_errbuf eb = {{0}};
    CHECKF(hc_tensor_load_converted(&t, be, &src, HC_DTYPE_F32, 2, shape, &eb) == HC_OK, "%s",
           eb.msg);
    if (t.data) {
        CHECK_OK(be->iface->download(be, got, t.data, n * 4));
        CHECK(compare_bits("chunked", got, want, HC_DTYPE_F32, n) == 0);
        hc_tensor_release(&t);
    }
    free(buf);
    free(want);
    free(got);
}

/* ---- odd-length headers -------------------------------------------------------------------- */

static int write_bytes(const char *path, const void *p, size_t n) {
    FILE *f = fopen(path, "wb");
    if (!f) return -1;
    int ok = fwrite(p, 1, n, f) == n;
    return fclose(f) == 0 && ok ? 0 : -1;
}

/* Writes `json` as the header (padded with spaces to an odd length) followed by data. */
static int write_odd(const char *path, const char *json, const void *data, size_t n_data) {
    size_t hl = strlen(json);
    size_t pad = hl % 2 ? 0 : 1;
    size_t total = 8 + hl + pad + n_data;
    unsigned char *b = malloc(total);
    uint64_t h = hl + pad;
    for (int i = 0; i < 8; i++) b[i] = (unsigned char)(h >> (8 * i));
    memcpy(b + 8, json, hl);
    if (pad) b[8 + hl] = ' ';
    memcpy(b + 8 + hl + pad, data, n_data);
    int rc = write_bytes(path, b, total);
    free(b);
    return rc;
}

static void test_odd_header_tensors(hc_backend *be, const char *tmp) {
    char path[1024];
    snprintf(path, sizeof path, "%s/odd.safetensors", tmp);
    const float vals[3] = {1.5f, -2.25f, 3.0e-3f};
    unsigned char data[12 + 6 + 6 + 6];
    memcpy(data, vals, 12);
    for (int i = 0; i < 3; i++) {
        uint16_t b = hc_f32_to_bf16(vals[i]), h = hc_f32_to_f16(vals[i]);
        memcpy(data + 12 + 2 * i, &b, 2);
        memcpy(data + 18 + 2 * i, &h, 2);
        memcpy(data + 24 + 2 * i, &b, 2);
    }
    /* the data buffer starts at 8 + odd: every tensor below lands on an odd address */
    const char *json = "{\"a\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,12]},"
                       "\"b\":{\"dtype\":\"BF16\",\"shape\":[3],\"data_offsets\":[12,18]},"
                       "\"c\":{\"dtype\":\"F16\",\"shape\":[3],\"data_offsets\":[18,24]},"
                       "\"d\":{\"dtype\":\"BF16\",\"shape\":[1,3],\"data_offsets\":[24,30]}}";
    CHECK(write_odd(path, json, data, sizeof data) == 0);
    hc_safetensors *st = NULL;
    hc_errbuf eb = {{0}};
    int rc = hc_st_open(&st, path, &eb);
    CHECKF(rc == HC_OK, "odd header: %s", eb.msg);
    if (rc) return;
    const char *names[4] = {"a", "b", "c", "d"};
    for (int i = 0; i < 4; i++) {
        const hc_st_tensor *t = hc_st_find(st, names[i]);
        CHECK(t && ((uintptr_t)t->data & 1) == 1);
        if (!t) continue;
        float f[3];
        CHECK_OK(hc_convert_to_f32(f, t->data, t->dtype, 3)); /* misaligned before the fix */
        for (int j = 0; j < 3; j++) {
            float want = t->dtype == HC_DTYPE_F32    ? vals[j]
                         : t->dtype == HC_DTYPE_BF16 ? hc_bf16_to_f32(hc_f32_to_bf16(vals[j]))
                                                     : hc_f16_to_f32(hc_f32_to_f16(vals[j]));
            CHECKF(f[j] == want, "odd header: %s[%d] = %g, want %g", names[i], j, f[j], want);
        }
        for (int d = 0; d < 3; d++) {
            unsigned char want[12];
            CHECK_OK(hc_convert(want, DT[d], f, HC_DTYPE_F32, 3));
            char what[64];
            snprintf(what, sizeof what, "odd %s as %s", names[i], hc_dtype_name(DT[d]));
            check_pair(be, t, DT[d], want, what);
        }
    }
    hc_st_close(st);
}

/* Rewrites src_dir's model.safetensors with an odd-length header into dst_dir (+ config.json). */
static int make_odd_model(const char *src_dir, const char *dst_dir) {
    char p[2048];
    size_t n = 0, cn = 0;
    snprintf(p, sizeof p, "%s/model.safetensors", src_dir);
    unsigned char *b = (unsigned char *)hc_test_read_file(p, &n);
    snprintf(p, sizeof p, "%s/config.json", src_dir);
    char *cfg = hc_test_read_file(p, &cn);
    int rc = -1;
    if (b && cfg && n >= 8) {
        uint64_t hl = 0;
        for (int i = 7; i >= 0; i--) hl = hl << 8 | b[i];
        size_t jl = (size_t)hl;
        while (jl > 0 && b[8 + jl - 1] == ' ') jl--;
        char *json = malloc(jl + 1);
        memcpy(json, b + 8, jl);
        json[jl] = 0;
        snprintf(p, sizeof p, "%s/model.safetensors", dst_dir);
        rc = write_odd(p, json, b + 8 + hl, n - 8 - (size_t)hl);
        free(json);
        snprintf(p, sizeof p, "%s/config.json", dst_dir);
        if (rc == 0) rc = write_bytes(p, cfg, cn);
    }
    free(b);
    free(cfg);
    return rc;
}

/* Final-norm hidden states and logits of a short stateless prompt. */
static int run_model(hc_llm *m, float *hid, float *logits) {
    int32_t tok[5] = {1, 17, 42, 99, 3}, pos[5] = {0, 1, 2, 3, 4}, out[2] = {2, 4};
    hc_batch b = {.n_tokens = 5, .token = tok, .pos = pos, .n_out = 2, .out_idx = out};
    hc_errbuf eb = {{0}};
    int rc = hc_llm_forward(m, &b, NULL, NULL, hid, logits, &eb);
    CHECKF(rc == HC_OK, "forward: %s", eb.msg);
    return rc;
}

static void test_odd_header_model(hc_backend *be, const char *tests, const char *tmp) {
    char src[1024], dst[1024];
    snprintf(src, sizeof src, "%s/data/llm/llama_mha_bf16_tied", tests);
    snprintf(dst, sizeof dst, "%s/oddmodel", tmp);
    CHECK(mkdir(dst, 0755) == 0);
    CHECK(make_odd_model(src, dst) == 0);
    const hc_dtype modes[4] = {HC_DTYPE_AS_STORED, HC_DTYPE_F32, HC_DTYPE_BF16, HC_DTYPE_F16};
    for (int k = 0; k < 4; k++) {
        hc_llm_params p = hc_llm_default_params();
        p.weight_dtype = modes[k];
        hc_llm *a = NULL, *o = NULL;
        hc_errbuf eb = {{0}};
        CHECKF(hc_llm_load(&a, be, src, &p, &eb) == HC_OK, "%s", eb.msg);
        CHECKF(hc_llm_load(&o, be, dst, &p, &eb) == HC_OK, "odd header model: %s", eb.msg);
        if (a && o) {
            size_t E = (size_t)a->cfg.hidden_size, V = (size_t)a->cfg.vocab_size;
            float *h1 = malloc(2 * E * 4), *h2 = malloc(2 * E * 4);
            float *l1 = malloc(2 * V * 4), *l2 = malloc(2 * V * 4);
            if (run_model(a, h1, l1) == 0 && run_model(o, h2, l2) == 0)
                CHECKF(!memcmp(h1, h2, 2 * E * 4) && !memcmp(l1, l2, 2 * V * 4),
                       "odd header model differs (mode %d)", k);
            free(h1);
            free(h2);
            free(l1);
            free(l2);
        }
        hc_llm_free(a);
        hc_llm_free(o);
    }
}

/* F32 checkpoint narrowed at load: no overflow, and the outputs stay close to f32's. */
static void test_narrowing_load(hc_backend *be, const char *tests) {
    char dir[1024];
    snprintf(dir, sizeof dir, "%s/data/llm/llama_gqa_f32", tests);
    hc_llm_params p = hc_llm_default_params();
    hc_llm *ref = NULL;
    hc_errbuf eb = {{0}};
    CHECKF(hc_llm_load(&ref, be, dir, &p, &eb) == HC_OK, "%s", eb.msg);
    if (!ref) return;
    size_t E = (size_t)ref->cfg.hidden_size, V = (size_t)ref->cfg.vocab_size;
    float *h0 = malloc(2 * E * 4), *l0 = malloc(2 * V * 4);
    float *h1 = malloc(2 * E * 4), *l1 = malloc(2 * V * 4);
    run_model(ref, h0, l0);
    const hc_dtype narrow[2] = {HC_DTYPE_BF16, HC_DTYPE_F16};
    const double tol[2] = {5e-2, 1e-2}; /* bf16 keeps 8 bits, f16 11 */
    for (int k = 0; k < 2; k++) {
        p.weight_dtype = narrow[k];
        hc_llm *m = NULL;
        CHECKF(hc_llm_load(&m, be, dir, &p, &eb) == HC_OK, "%s: %s", hc_dtype_name(narrow[k]),
               eb.msg);
        if (!m) continue;
        CHECK(m->layers[0].wq.dtype == narrow[k] && m->tok_embd.dtype == narrow[k]);
        CHECK(m->layers[0].attn_norm.dtype == HC_DTYPE_F32);
        CHECK(m->weight_bytes < ref->weight_bytes * 6 / 10);
        if (run_model(m, h1, l1) == 0) {
            double eh = hc_test_rel_err(h1, h0, 2 * E), el = hc_test_rel_err(l1, l0, 2 * V);
            CHECKF(eh < tol[k] && el < tol[k], "%s: rel err hidden %g logits %g",
                   hc_dtype_name(narrow[k]), eh, el);
            CHECKF(eh > 0, "%s weights gave exactly the f32 result", hc_dtype_name(narrow[k]));
        }
        hc_llm_free(m);
    }
    free(h0);
    free(l0);
    free(h1);
    free(l1);
    hc_llm_free(ref);
}

/* A refused wanted dtype: code rc, a message holding `part` and `name` ("" for none). */
#define CHECK_REFUSED(call, rc, eb, part, name)                                                   \
    do {                                                                                           \
        (eb).msg[0] = 0;                                                                           \
        int r_ = (call);                                                                           \
        CHECKF(r_ == (rc) && strstr((eb).msg, (part)) && strstr((eb).msg, (name)),                \
               "%s: %d (%s), '%s'", #call, r_, hc_errname(r_), (eb).msg);                         \
    } while (0)

static void test_wanted_dtype(hc_backend *be, const char *tests) {
    CHECK(hc_llm_default_params().weight_dtype == HC_DTYPE_AS_STORED);
    CHECK(hc_creator_default_params().weight_dtype == HC_DTYPE_AS_STORED);
    CHECK(!hc_dtype_is_valid(HC_DTYPE_AS_STORED) && !hc_dtype_is_valid(HC_DTYPE_COUNT));
    CHECK(!hc_dtype_is_valid((hc_dtype)-1) && hc_dtype_is_valid(HC_DTYPE_I32));
    CHECK(hc_dtype_size(HC_DTYPE_AS_STORED) == 0 && strcmp(hc_dtype_name(HC_DTYPE_AS_STORED), "?") == 0);

    hc_errbuf eb = {{0}};
    const hc_dtype good[4] = {HC_DTYPE_AS_STORED, HC_DTYPE_F32, HC_DTYPE_BF16, HC_DTYPE_F16};
    for (int i = 0; i < 4; i++) CHECK_OK(hc_weight_dtype_check(good[i], &eb));
    const hc_dtype invalid[3] = {HC_DTYPE_COUNT, (hc_dtype)-1, (hc_dtype)99};
    const char *shown[3] = {"dtype 4 ", "dtype -1 ", "dtype 99 "};
    for (int i = 0; i < 3; i++)
        CHECK_REFUSED(hc_weight_dtype_check(invalid[i], &eb), HC_ERR_INVAL, eb, shown[i], "");
    CHECK_REFUSED(hc_weight_dtype_check(HC_DTYPE_I32, &eb), HC_ERR_UNSUPPORTED, eb,
                  "I32 is not a float dtype", "");
    CHECK(hc_weight_dtype_check(HC_DTYPE_COUNT, NULL) == HC_ERR_INVAL);

    /* the loaders refuse them with the tensor's name, holding no memory */
    float v[3] = {1, 2, 3};
    hc_st_tensor src = {.name = "w", .dtype = HC_DTYPE_F32, .n_dims = 1, .shape = {3, 1, 1, 1},
                        .data = v, .nbytes = sizeof v};
    int64_t shape[1] = {3};
    hc_tensor t;
    for (int i = 0; i < 3; i++) {
        CHECK_REFUSED(hc_tensor_load_converted(&t, be, &src, invalid[i], 1, shape, &eb),
                      HC_ERR_INVAL, eb, "invalid wanted weight dtype", "tensor 'w'");
        CHECK(t.data == NULL);
        float out[3];
        CHECK_REFUSED(hc_tensor_read_converted(out, invalid[i], 3, &src, &eb), HC_ERR_INVAL, eb,
                      "invalid wanted weight dtype", "tensor 'w'");
    }
    CHECK_OK(hc_tensor_load_converted(&t, be, &src, HC_DTYPE_AS_STORED, 1, shape, &eb));
    CHECK(t.dtype == HC_DTYPE_F32);
    hc_tensor_release(&t);
    /* "as stored" is a request, never a tensor's dtype */
    CHECK(hc_tensor_alloc(&t, be, HC_DTYPE_AS_STORED, 1, shape) == HC_ERR_INVAL && !t.data);
    CHECK(hc_tensor_alloc(&t, be, HC_DTYPE_COUNT, 1, shape) == HC_ERR_INVAL && !t.data);
    uint16_t h[3];
    CHECK(hc_convert(h, HC_DTYPE_AS_STORED, v, HC_DTYPE_F32, 3) == HC_ERR_INVAL);

    /* the model and package loaders refuse before loading anything */
    char dir[1024];
    snprintf(dir, sizeof dir, "%s/data/llm/llama_gqa_f32", tests);
    hc_llm_params p = hc_llm_default_params();
    p.weight_dtype = HC_DTYPE_COUNT;
    hc_llm *m = (hc_llm *)&p; /* must come back NULL */
    CHECK_REFUSED(hc_llm_load(&m, be, dir, &p, &eb), HC_ERR_INVAL, eb,
                  "invalid wanted weight dtype 4", "");
    CHECK(m == NULL);
    p.weight_dtype = HC_DTYPE_I32;
    CHECK_REFUSED(hc_llm_load(&m, be, dir, &p, &eb), HC_ERR_UNSUPPORTED, eb, "I32", "");
    CHECK(m == NULL);
    snprintf(dir, sizeof dir, "%s/data/creator/tiny", tests);
    hc_creator_params cp = hc_creator_default_params();
    cp.weight_dtype = (hc_dtype)77;
    cp.load_creative = 0;
    hc_creator *c = NULL;
    CHECK_REFUSED(hc_creator_load(&c, be, dir, &cp, &eb), HC_ERR_INVAL, eb,
                  "invalid wanted weight dtype 77", "");
    CHECK(c == NULL);
    hc_creator_free(c);
}

int main(int argc, char **argv) {
    const char *tests = argc > 1 ? argv[1] : "tests";
    hc_backend *be = NULL;
    if (hc_backend_cpu_create(&be, 2) != HC_OK) {
        fprintf(stderr, "no CPU backend\n");
        return 1;
    }
    char tmp[] = "/tmp/hc_test_weights_XXXXXX";
    CHECK(mkdtemp(tmp) != NULL);
    test_torch_pairs(be, tests);
    test_wanted_dtype(be, tests);
    test_chunks(be);
    test_odd_header_tensors(be, tmp);
    test_odd_header_model(be, tests, tmp);
    test_narrowing_load(be, tests);
    const char *made[] = {"odd.safetensors", "oddmodel/model.safetensors", "oddmodel/config.json",
                          "oddmodel", ""};
    for (size_t i = 0; i < sizeof made / sizeof made[0]; i++) {
        char p[1100];
        snprintf(p, sizeof p, "%s/%s", tmp, made[i]);
        if (remove(p) != 0) fprintf(stderr, "could not remove %s\n", p);
    }
    hc_backend_free(be);
    return hc_test_finish("test_weights");
}
