/* test_train_data.c: the trainer's data reader (trainer/data.h) over
 * tests/data/train/data_rows.jsonl and data_nextitem/ (written by
 * tests/data/train/data_make_fixture.py from tools/synth rows plus deliberate bad rows) and the
 * tiny creator package:
 *   - every usable row's sample equals tokenizing the same strings directly (history titles, the
 *     package's or the row's prompts, the response + eos, the ad title, the profile in Python's
 *     compact re-serialization, which the fixture carries as _profile_json, and the recon
 *     sequence); a history of 55 titles keeps the last 50;
 *   - bad rows are counted per reason at the line numbers data_bad.json lists;
 *   - limits: MAX_GEN_TEXT_LENGTH drops rows and cuts responses, MAX_ITEM_LIST_LENGTH /
 *     MAX_TEXT_LENGTH / MAX_USER_PROFILE_TEXT_LENGTH cut, max_line_bytes rejects lines, limits
 *     above the package's are refused;
 *   - the shuffle is a permutation, differs between epochs and seeds, is equal for equal seeds;
 *     a reader restored from a mid-epoch cursor yields the identical remaining sequence;
 *   - missing path, directory, FIFO, empty file, all-bad file, a file changed after indexing,
 *     and the next-item split (its bad rows, its items file's errors). */
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "creator/creator.h"
#include "data.h"
#include "testutil.h"

static char g_tests[1024];
static char g_tmp[256];

static int ids_eq(const int32_t *a, int na, const int32_t *b, int nb) {
    return na == nb && (na == 0 || memcmp(a, b, sizeof(int32_t) * (size_t)na) == 0);
}

static int32_t *enc(const hc_tokenizer *tok, const char *s, size_t n, int *out_n) {
    int32_t *ids = NULL;
    size_t k = 0;
    hc_errbuf eb = {{0}};
    int rc = hc_tokenizer_encode(tok, NULL, s, n, 0, &ids, &k, &eb);
    CHECKF(rc == 0, "encode: %s", eb.msg);
    *out_n = (int)k;
    return ids;
}

/* Line `line` (1-based) of a file as a malloc'ed string. */
static char *file_line(const char *path, uint64_t line) {
    char *text = hc_test_read_file(path, NULL);
    if (!text) return NULL;
    char *p = text;
    for (uint64_t i = 1; i < line && p; i++) {
        p = strchr(p, '\n');
        if (p) p++;
    }
    char *r = NULL;
    if (p) {
        size_t n = strcspn(p, "\n");
        if (n && p[n - 1] == '\r') n--;
        r = malloc(n + 1);
        if (r) {
            memcpy(r, p, n);
            r[n] = 0;
        }
    }
    free(text);
    return r;
}

static const char *jstr(json_t *o, const char *k, size_t *n) {
    json_t *v = json_object_get(o, k);
    *n = json_string_length(v);
    return json_string_value(v);
}

/* The package's first end-of-sequence id, else the creative tokenizer's eos (data.h). */
static int32_t want_eos(const hc_creator *c) {
    return c->n_eos > 0 ? c->eos[0] : hc_tokenizer_eos_id(c->creative_tok);
}

/* Checks a creator sample against the row's strings tokenized directly. */
static void check_sample(hc_creator *c, const hc_data_params *p, const char *path,
                         const hc_data_sample *s) {
    char *text = file_line(path, s->line);
    CHECK(text != NULL);
    if (!text) return;
    json_error_t je;
    json_t *o = json_loads(text, JSON_ALLOW_NUL, &je);
    CHECKF(o != NULL, "line %llu: %s", (unsigned long long)s->line, je.text);
    free(text);
    if (!o) return;
    const int item_max =
        p->max_text_length < c->pkg.max_item_tokens ? p->max_text_length : c->pkg.max_item_tokens;
    /* history */
    json_t *tl = json_object_get(o, "title_list"), *il = json_object_get(o, "item_id_list");
    int n_all = (int)json_array_size(tl);
    int keep = n_all < p->max_item_list_length ? n_all : p->max_item_list_length;
    CHECKF(s->n_items == keep, "line %llu: %d items, want %d", (unsigned long long)s->line,
           s->n_items, keep);
    size_t off = 0;
    for (int i = 0; i < keep && i < s->n_items; i++) {
        json_t *t = json_array_get(tl, (size_t)(n_all - keep + i));
        int n = 0;
        int32_t *ids = enc(c->item_tok, json_string_value(t), json_string_length(t), &n);
        if (n > item_max) n = item_max;
        CHECKF(ids_eq(s->item_tok + off, s->item_lens[i], ids, n), "line %llu title %d",
               (unsigned long long)s->line, i);
        CHECK(s->item_id_list[i] ==
              (int64_t)json_integer_value(json_array_get(il, (size_t)(n_all - keep + i))));
        off += (size_t)s->item_lens[i];
        free(ids);
    }
    /* ad title */
    size_t n1, n2, nt, nd, nr, npj;
    const char *title = jstr(o, "original_title", &nt);
    int na = 0;
    int32_t *ad = enc(c->item_tok, title, nt, &na);
    if (na > item_max) na = item_max;
    CHECK(ids_eq(s->ad_tok, s->n_ad_tok, ad, na));
    free(ad);
    /* creative sequence */
    int k1 = 0, k2 = 0, kr = 0;
    int32_t *e1, *e2;
    if (p->row_prompts) {
        const char *p1 = jstr(o, "prompt1", &n1), *p2 = jstr(o, "prompt2", &n2);
        e1 = enc(c->creative_tok, p1, n1, &k1);
        e2 = enc(c->creative_tok, p2, n2, &k2);
    } else {
        json_t *dv = json_object_get(o, "original_description");
        const char *desc = json_is_string(dv) ? jstr(o, "original_description", &nd) : NULL;
        if (!desc) nd = 0;
        size_t plen = 0;
        char *r2 = hc_package_render_prompt2(&c->pkg, title, nt, desc, nd, &plen);
        e1 = enc(c->creative_tok, c->pkg.prompt1, strlen(c->pkg.prompt1), &k1);
        e2 = enc(c->creative_tok, r2, plen, &k2);
        free(r2);
    }
    const char *resp = jstr(o, "response", &nr);
    int32_t *er = enc(c->creative_tok, resp, nr, &kr);
    int np = k1 + 1 + k2;
    int room = p->max_gen_text_length - np - 1;
    if (kr > room) kr = room;
    CHECK(s->n_prompt == np && s->slot_pos == k1);
    CHECKF(s->n_ids == np + kr + 1, "line %llu: %d ids, want %d", (unsigned long long)s->line,
           s->n_ids, np + kr + 1);
    if (s->n_ids == np + kr + 1) {
        CHECK(ids_eq(s->ids, k1, e1, k1));
        CHECK(s->ids[k1] == c->pkg.slot_token_id);
        CHECK(ids_eq(s->ids + k1 + 1, k2, e2, k2));
        CHECK(ids_eq(s->ids + np, kr, er, kr));
        CHECK(s->ids[s->n_ids - 1] == want_eos(c));
    }
    free(e1);
    free(e2);
    free(er);
    /* profile */
    const char *pj = jstr(o, "_profile_json", &npj);
    CHECKF(pj && s->profile_json_len == npj && memcmp(s->profile_json, pj, npj) == 0,
           "line %llu: profile_json\n got %s\nwant %s", (unsigned long long)s->line,
           s->profile_json, pj ? pj : "(none)");
    int kp = 0, kq = 0;
    int32_t *ep = enc(c->creative_tok, pj, npj, &kp);
    const int U = p->max_user_profile_text_length;
    CHECK(ids_eq(s->profile_tok, s->n_profile_tok, ep, kp < U ? kp : U));
    int32_t *eq = enc(c->creative_tok, c->pkg.profile_prompt, strlen(c->pkg.profile_prompt), &kq);
    int pre = 1 + kq, keep_p = kp < U - pre - 1 ? kp : U - pre - 1;
    CHECK(s->n_recon == pre + keep_p + 1 && s->recon_n_prompt == pre);
    if (s->n_recon == pre + keep_p + 1) {
        CHECK(s->recon_ids[0] == c->pkg.slot_token_id);
        CHECK(ids_eq(s->recon_ids + 1, kq, eq, kq));
        CHECK(ids_eq(s->recon_ids + pre, keep_p, ep, keep_p));
        CHECK(s->recon_ids[s->n_recon - 1] == want_eos(c));
    }
    free(ep);
    free(eq);
    json_decref(o);
}

static json_t *g_bad; /* data_bad.json */

static void check_bad(const hc_data *d, hc_data_bad r, const char *key) {
    json_t *want = json_object_get(g_bad, key);
    const hc_data_badstat *b = hc_data_bad_stat(d, r);
    size_t n = json_array_size(want);
    CHECKF(b->count == n, "%s: %llu bad rows, want %zu", key, (unsigned long long)b->count, n);
    for (size_t i = 0; i < n && (int)i < b->n_lines; i++)
        CHECK(b->lines[i] == (uint64_t)json_integer_value(json_array_get(want, i)));
    if (n) {
        char lead[32];
        json_t *first = json_array_get(want, 0);
        snprintf(lead, sizeof lead, "line %lld: ", (long long)json_integer_value(first));
        CHECKF(strncmp(b->first, lead, strlen(lead)) == 0, "%s: first message %s", key, b->first);
    }
}

static size_t count_usable_lines(const char *path) {
    char *text = hc_test_read_file(path, NULL);
    size_t n = 0, bad = 0, line = 0;
    for (char *p = text; p && *p; line++) {
        char *nl = strchr(p, '\n');
        size_t len = nl ? (size_t)(nl - p) : strlen(p);
        if (len > 0) n++;
        p = nl ? nl + 1 : p + len;
    }
    const char *k;
    json_t *v;
    json_object_foreach(g_bad, k, v) if (strncmp(k, "nextitem", 8)) bad += json_array_size(v);
    free(text);
    (void)line;
    return n - bad;
}

static void test_rows(hc_creator *c, const char *path) {
    hc_data_params p = hc_data_default_params();
    p.shuffle = 0;
    hc_data *d = NULL;
    hc_errbuf eb = {{0}};
    int rc = hc_data_open(&d, c, path, &p, &eb);
    CHECKF(rc == 0, "open: %s", eb.msg);
    if (!d) return;
    const int64_t n = hc_data_rows(d);
    CHECKF(n == (int64_t)count_usable_lines(path), "%lld rows", (long long)n);
    check_bad(d, HC_DATA_BAD_JSON, "json");
    check_bad(d, HC_DATA_BAD_FIELD, "field");
    check_bad(d, HC_DATA_BAD_EMPTY, "empty");
    check_bad(d, HC_DATA_BAD_UTF8, "utf8");
    CHECK(hc_data_bad_stat(d, HC_DATA_BAD_LIMIT)->count == 0);
    CHECK(strstr(hc_data_bad_stat(d, HC_DATA_BAD_FIELD)->first, "field response: missing"));
    CHECK(strstr(hc_data_bad_stat(d, HC_DATA_BAD_JSON)->first, "line 3: invalid JSON at column"));
    char sum[2048];
    hc_data_summary(d, sum, sizeof sum);
    CHECKF(strstr(sum, "lines 6, 8, 12, 13, 14") && strstr(sum, path), "summary: %s", sum);
    int saw_long = 0, saw_null_desc = 0;
    for (int64_t i = 0; i < n; i++) {
        hc_data_sample s;
        rc = hc_data_next(d, &s, &eb);
        CHECKF(rc == 0, "next: %s", eb.msg);
        if (rc) break;
        CHECK(i == 0 || s.line > 1); /* file order */
        check_sample(c, &p, path, &s);
        if (s.n_items == 50) saw_long = 1;
        char *line = file_line(path, s.line);
        if (line && strstr(line, "\"original_description\": null")) saw_null_desc = 1;
        free(line);
        hc_data_sample_free(&s);
    }
    CHECK(saw_long && saw_null_desc);
    hc_data_cursor cur = hc_data_tell(d);
    CHECK(cur.epoch == 1 && cur.pos == 0);
    hc_data_free(d);

    /* the row's own prompts */
    p.row_prompts = 1;
    CHECK_OK(hc_data_open(&d, c, path, &p, &eb));
    for (int64_t i = 0; d && i < n; i++) {
        hc_data_sample s;
        CHECK_OK(hc_data_next(d, &s, &eb));
        check_sample(c, &p, path, &s);
        hc_data_sample_free(&s);
    }
    hc_data_free(d);
}

static void test_limits(hc_creator *c, const char *path) {
    hc_data_params p = hc_data_default_params();
    p.shuffle = 0;
    hc_errbuf eb = {{0}};
    hc_data *d = NULL;
    /* prompt lengths of every row, then a MAX_GEN_TEXT_LENGTH that drops the longer ones */
    CHECK_OK(hc_data_open(&d, c, path, &p, &eb));
    if (!d) return;
    const int64_t n = hc_data_rows(d);
    int minp = 1 << 30, maxp = 0;
    for (int64_t i = 0; i < n; i++) {
        hc_data_sample s;
        if (hc_data_next(d, &s, &eb)) break;
        if (s.n_prompt < minp) minp = s.n_prompt;
        if (s.n_prompt > maxp) maxp = s.n_prompt;
        hc_data_sample_free(&s);
    }
    hc_data_free(d);
    CHECK(minp < maxp);
    hc_data *d2 = NULL;
    p.max_gen_text_length = minp + 4;
    p.max_item_list_length = 3;
    p.max_text_length = 2;
    p.max_user_profile_text_length = 40;
    CHECK_OK(hc_data_open(&d2, c, path, &p, &eb));
    if (!d2) return;
    /* two epochs: a dropped row is skipped each time and counted once */
    uint64_t lines_seen[64];
    int got = 0;
    while (hc_data_tell(d2).epoch < 2) {
        hc_data_sample s;
        int rc = hc_data_next(d2, &s, &eb);
        CHECKF(rc == 0, "next: %s", eb.msg);
        if (rc) break;
        CHECK(s.n_ids <= p.max_gen_text_length && s.n_items <= 3);
        for (int k = 0; k < s.n_items; k++)
            CHECK(s.item_lens[k] <= 2);
        CHECK(s.n_profile_tok <= 40 && s.n_recon <= 40);
        check_sample(c, &p, path, &s);
        if (s.n_prompt == minp) CHECK(s.n_ids == p.max_gen_text_length);
        int k = 0;
        while (k < got && lines_seen[k] != s.line)
            k++;
        if (k == got && got < 64) lines_seen[got++] = s.line;
        hc_data_sample_free(&s);
    }
    const hc_data_badstat *lim = hc_data_bad_stat(d2, HC_DATA_BAD_LIMIT);
    CHECKF(lim->count > 0 && (int64_t)lim->count + got == n, "%llu dropped, %d read of %lld",
           (unsigned long long)lim->count, got, (long long)n);
    CHECK(strstr(lim->first, "MAX_GEN_TEXT_LENGTH") != NULL);
    hc_data_free(d2);

    /* a MAX_GEN_TEXT_LENGTH no row fits: the reader says so instead of spinning */
    p.max_gen_text_length = 3;
    CHECK_OK(hc_data_open(&d2, c, path, &p, &eb));
    if (d2) {
        hc_data_sample s;
        int rc = hc_data_next(d2, &s, &eb);
        CHECKF(rc == HC_ERR_FORMAT && strstr(eb.msg, "every row was dropped"), "%d %s", rc, eb.msg);
        CHECK(hc_data_bad_stat(d2, HC_DATA_BAD_LIMIT)->count == (uint64_t)n);
        hc_data_free(d2);
    }

    /* limits above the package's, a line limit */
    p = hc_data_default_params();
    p.max_item_list_length = c->pkg.max_history + 1;
    CHECK(hc_data_open(&d2, c, path, &p, &eb) == HC_ERR_INVAL &&
          strstr(eb.msg, "MAX_ITEM_LIST_LENGTH"));
    p = hc_data_default_params();
    p.max_text_length = c->pkg.max_item_tokens + 1;
    CHECK(hc_data_open(&d2, c, path, &p, &eb) == HC_ERR_INVAL && strstr(eb.msg, "MAX_TEXT_LENGTH"));
    p = hc_data_default_params();
    p.max_line_bytes = 64;
    CHECK(hc_data_open(&d2, c, path, &p, &eb) == HC_ERR_FORMAT &&
          strstr(eb.msg, "no usable rows") && strstr(eb.msg, "over a length limit"));
}

static int write_file(const char *path, const char *text, size_t n) {
    FILE *f = fopen(path, "wb");
    if (!f) return -1;
    size_t w = fwrite(text, 1, n, f);
    return fclose(f) == 0 && w == n ? 0 : -1;
}

/* A file of the fixture's usable rows repeated `times` times. */
static int write_repeated(hc_creator *c, const char *src, const char *dst, int times) {
    char *text = hc_test_read_file(src, NULL);
    if (!text) return -1;
    FILE *f = fopen(dst, "wb");
    if (!f) {
        free(text);
        return -1;
    }
    for (int t = 0; t < times; t++)
        fputs(text, f);
    free(text);
    (void)c;
    return fclose(f);
}

static void test_order(hc_creator *c, const char *path) {
    char big[512];
    snprintf(big, sizeof big, "%s/big.jsonl", g_tmp);
    CHECK(write_repeated(c, path, big, 20) == 0);
    hc_data_params p = hc_data_default_params();
    hc_errbuf eb = {{0}};
    hc_data *a = NULL, *b = NULL, *x = NULL;
    CHECK_OK(hc_data_open(&a, c, big, &p, &eb));
    CHECK_OK(hc_data_open(&b, c, big, &p, &eb));
    p.seed = 7;
    CHECK_OK(hc_data_open(&x, c, big, &p, &eb));
    if (!a || !b || !x) goto done;
    const int64_t n = hc_data_rows(a);
    CHECK(n > 100);
    char *seen = calloc((size_t)n, 1);
    int64_t moved = 0, diff_epoch = 0, diff_seed = 0, same_seed = 0;
    for (int64_t i = 0; i < n; i++) {
        int64_t r0 = hc_data_order_at(a, 0, i);
        CHECK(r0 >= 0 && r0 < n);
        if (r0 >= 0 && r0 < n) {
            CHECK(!seen[r0]);
            seen[r0] = 1;
        }
        moved += r0 != i;
    }
    for (int64_t i = 0; i < n; i++) {
        int64_t r0 = hc_data_order_at(a, 0, i);
        diff_epoch += r0 != hc_data_order_at(a, 1, i);
        same_seed += r0 == hc_data_order_at(b, 0, i);
        diff_seed += r0 != hc_data_order_at(x, 0, i);
    }
    CHECK(moved > n / 2 && diff_epoch > n / 2 && diff_seed > n / 2 && same_seed == n);
    CHECK(hc_data_order_at(a, 0, n) == -1 && hc_data_order_at(a, -1, 0) == -1);
    /* epoch 1 is a permutation too */
    memset(seen, 0, (size_t)n);
    int perm1 = 1;
    for (int64_t i = 0; i < n; i++) {
        int64_t r = hc_data_order_at(a, 1, i);
        if (r < 0 || r >= n || seen[r])
            perm1 = 0;
        else
            seen[r] = 1;
    }
    CHECK(perm1);
    free(seen);

    /* cursor: a reader restored mid-epoch yields the same rows and ids, across the epoch end */
    hc_data_cursor cur = {0, n - 4};
    CHECK_OK(hc_data_seek(a, cur, &eb));
    hc_data_sample s;
    for (int k = 0; k < 2; k++) {
        CHECK_OK(hc_data_next(a, &s, &eb));
        hc_data_sample_free(&s);
    }
    cur = hc_data_tell(a);
    CHECK(cur.epoch == 0 && cur.pos == n - 2);
    CHECK_OK(hc_data_seek(b, cur, &eb));
    for (int k = 0; k < 6; k++) {
        hc_data_sample sa, sb;
        CHECK_OK(hc_data_next(a, &sa, &eb));
        CHECK_OK(hc_data_next(b, &sb, &eb));
        CHECK(sa.line == sb.line && ids_eq(sa.ids, sa.n_ids, sb.ids, sb.n_ids) &&
              ids_eq(sa.item_tok, sa.n_items ? 1 : 0, sb.item_tok, sb.n_items ? 1 : 0));
        hc_data_sample_free(&sa);
        hc_data_sample_free(&sb);
    }
    cur = hc_data_tell(a);
    CHECK(cur.epoch == 1 && cur.pos == 4);
    hc_data_cursor bad = {0, n};
    CHECK(hc_data_seek(b, bad, &eb) == HC_ERR_RANGE && strstr(eb.msg, "cursor"));
    bad.epoch = -1;
    bad.pos = 0;
    CHECK(hc_data_seek(b, bad, &eb) == HC_ERR_RANGE);
done:
    hc_data_free(a);
    hc_data_free(b);
    hc_data_free(x);
    unlink(big);
}

static void test_errors(hc_creator *c, const char *path) {
    hc_errbuf eb = {{0}};
    hc_data *d = NULL;
    char p[512];
    snprintf(p, sizeof p, "%s/missing.jsonl", g_tmp);
    CHECK(hc_data_open(&d, c, p, NULL, &eb) == HC_ERR_NOTFOUND && strstr(eb.msg, p));
    CHECK(hc_data_open(&d, c, g_tmp, NULL, &eb) == HC_ERR_FORMAT && strstr(eb.msg, "directory"));
    snprintf(p, sizeof p, "%s/fifo", g_tmp);
    if (mkfifo(p, 0600) == 0) {
        CHECK(hc_data_open(&d, c, p, NULL, &eb) == HC_ERR_FORMAT && strstr(eb.msg, "FIFO"));
        unlink(p);
    }
    snprintf(p, sizeof p, "%s/empty.jsonl", g_tmp);
    CHECK(write_file(p, "", 0) == 0);
    CHECK(hc_data_open(&d, c, p, NULL, &eb) == HC_ERR_FORMAT && strstr(eb.msg, "empty"));
    const char bad[] = "{\"a\": 1}\nnot json\n\n[]\n";
    CHECK(write_file(p, bad, sizeof bad - 1) == 0);
    CHECK(hc_data_open(&d, c, p, NULL, &eb) == HC_ERR_FORMAT && strstr(eb.msg, "no usable rows") &&
          strstr(eb.msg, "3 skipped") && strstr(eb.msg, "lines 2, 4"));
    if (geteuid() != 0) { /* root reads anything */
        CHECK(write_file(p, "x\n", 2) == 0 && chmod(p, 0) == 0);
        CHECK(hc_data_open(&d, c, p, NULL, &eb) == HC_ERR_IO && strstr(eb.msg, p));
        chmod(p, 0600);
    }
    unlink(p);
    CHECK(d == NULL);

    /* the file changes under an open reader */
    snprintf(p, sizeof p, "%s/changing.jsonl", g_tmp);
    CHECK(write_repeated(c, path, p, 1) == 0);
    hc_data_params dp = hc_data_default_params();
    dp.shuffle = 0;
    CHECK_OK(hc_data_open(&d, c, p, &dp, &eb));
    if (d) {
        CHECK(truncate(p, 10) == 0);
        hc_data_sample s;
        int rc = hc_data_next(d, &s, &eb);
        CHECKF((rc == HC_ERR_IO || rc == HC_ERR_FORMAT) && strstr(eb.msg, "line 1"), "%d %s", rc,
               eb.msg);
        hc_data_free(d);
    }
    unlink(p);

    /* UTF-8 rules */
    const char good[] = "caf\xc3\xa9 \xe4\xb9\xa6 \xf0\x9f\x93\x9a";
    CHECK(hc_data_utf8_valid(good, sizeof good - 1));
    CHECK(!hc_data_utf8_valid("\xc0\xaf", 2));         /* overlong */
    CHECK(!hc_data_utf8_valid("\xed\xa0\x80", 3));     /* surrogate */
    CHECK(!hc_data_utf8_valid("\xf4\x90\x80\x80", 4)); /* above U+10FFFF */
    CHECK(!hc_data_utf8_valid("\xe4\xb9", 2));         /* truncated */
    char *js = NULL;
    size_t jn = 0;
    CHECK(hc_data_py_compact_json("{\"a\": [1,", 9, &js, &jn, &eb) == HC_ERR_FORMAT &&
          strstr(eb.msg, "user_profile"));
}

static void test_nextitem(hc_creator *c) {
    char items[1200], seqs[1200], tmp[600];
    snprintf(items, sizeof items, "%s/data/train/data_nextitem/items.jsonl", g_tests);
    snprintf(seqs, sizeof seqs, "%s/data/train/data_nextitem/train.jsonl", g_tests);
    hc_data_params p = hc_data_default_params();
    p.shuffle = 0;
    p.max_item_list_length = 20;
    hc_errbuf eb = {{0}};
    hc_data *d = NULL;
    int rc = hc_data_open_nextitem(&d, c, items, seqs, &p, &eb);
    CHECKF(rc == 0, "open: %s", eb.msg);
    if (!d) return;
    check_bad(d, HC_DATA_BAD_EMPTY, "nextitem_empty");
    check_bad(d, HC_DATA_BAD_FIELD, "nextitem_field");
    CHECK(strstr(hc_data_bad_stat(d, HC_DATA_BAD_FIELD)->first, "999999"));
    /* titles by id, straight from items.jsonl */
    json_t *byid = json_object();
    char *text = hc_test_read_file(items, NULL);
    for (char *l = text ? strtok(text, "\n") : NULL; l; l = strtok(NULL, "\n")) {
        json_t *o = json_loads(l, 0, NULL);
        char key[32];
        json_t *id = json_object_get(o, "item_id");
        snprintf(key, sizeof key, "%lld", (long long)json_integer_value(id));
        json_object_set(byid, key, json_object_get(o, "title"));
        json_decref(o);
    }
    free(text);
    int saw_cut = 0;
    for (int64_t i = 0; i < hc_data_rows(d); i++) {
        hc_data_sample s;
        CHECK_OK(hc_data_next(d, &s, &eb));
        char *line = file_line(seqs, s.line);
        json_t *o = line ? json_loads(line, 0, NULL) : NULL;
        free(line);
        json_t *a = json_object_get(o, "item_ids");
        int n_all = (int)json_array_size(a), keep = n_all < 20 ? n_all : 20;
        saw_cut |= n_all > 20;
        CHECK(s.n_items == keep && s.ids == NULL && s.n_ids == 0);
        size_t off = 0;
        for (int k = 0; k < keep && k < s.n_items; k++) {
            json_t *jid = json_array_get(a, (size_t)(n_all - keep + k));
            long long id = (long long)json_integer_value(jid);
            CHECK(s.item_id_list[k] == id);
            char key[32];
            snprintf(key, sizeof key, "%lld", id);
            json_t *t = json_object_get(byid, key);
            int n = 0;
            int32_t *ids = enc(c->item_tok, json_string_value(t), json_string_length(t), &n);
            if (n > p.max_text_length) n = p.max_text_length;
            CHECK(ids_eq(s.item_tok + off, s.item_lens[k], ids, n));
            off += (size_t)s.item_lens[k];
            free(ids);
        }
        json_decref(o);
        hc_data_sample_free(&s);
    }
    CHECK(saw_cut);
    json_decref(byid);
    hc_data_free(d);

    /* the items file's own errors name file:line */
    snprintf(tmp, sizeof tmp, "%s/items.jsonl", g_tmp);
    const char dup[] = "{\"item_id\": 1, \"title\": \"A\"}\n{\"item_id\": 1, \"title\": \"B\"}\n";
    CHECK(write_file(tmp, dup, sizeof dup - 1) == 0);
    CHECK(hc_data_open_nextitem(&d, c, tmp, seqs, &p, &eb) == HC_ERR_FORMAT &&
          strstr(eb.msg, ":2:") && strstr(eb.msg, "already given on line 1"));
    const char bad[] = "{\"item_id\": 1, \"title\": \"A\"}\n"
                       "{\"item_id\": \"2\", \"title\": \"B\"}\n";
    CHECK(write_file(tmp, bad, sizeof bad - 1) == 0);
    CHECK(hc_data_open_nextitem(&d, c, tmp, seqs, &p, &eb) == HC_ERR_FORMAT &&
          strstr(eb.msg, ":2:") && strstr(eb.msg, "field item_id"));
    unlink(tmp);
}

int main(int argc, char **argv) {
    snprintf(g_tests, sizeof g_tests, "%s", argc > 1 ? argv[1] : "tests");
    char pkg[1200], rows[1200], badp[1200];
    snprintf(pkg, sizeof pkg, "%s/data/creator/tiny", g_tests);
    snprintf(rows, sizeof rows, "%s/data/train/data_rows.jsonl", g_tests);
    snprintf(badp, sizeof badp, "%s/data/train/data_bad.json", g_tests);
    snprintf(g_tmp, sizeof g_tmp, "/tmp/hc_train_data_XXXXXX");
    CHECK(mkdtemp(g_tmp) != NULL);
    g_bad = json_load_file(badp, 0, NULL);
    CHECK(g_bad != NULL);
    hc_backend *be = NULL;
    CHECK_OK(hc_backend_cpu_create(&be, 1));
    hc_errbuf eb = {{0}};
    hc_creator_params cp = hc_creator_default_params();
    cp.item_cache_entries = 0;
    hc_creator *c = NULL;
    int rc = hc_creator_load(&c, be, pkg, &cp, &eb);
    CHECKF(rc == 0, "load %s: %s", pkg, eb.msg);
    if (c && g_bad) {
        CHECK(c->pkg.profile_prompt != NULL);
        test_rows(c, rows);
        test_limits(c, rows);
        test_order(c, rows);
        test_errors(c, rows);
        test_nextitem(c);
    }
    hc_creator_free(c);
    hc_backend_free(be);
    json_decref(g_bad);
    rmdir(g_tmp);
    return hc_test_finish("test_train_data");
}
