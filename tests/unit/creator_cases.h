/* creator_cases.h: the users of tests/data/creator/cases.jsonl and the PyTorch reference's outputs
 * for them (tests/data/creator/reference.safetensors, written by
 * tests/reference/make_creator_fixtures.py), shared by the tests that compare against them. */
#ifndef HC_TEST_CREATOR_CASES_H
#define HC_TEST_CREATOR_CASES_H

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>

#include "io/safetensors.h"
#include "testutil.h"

typedef struct user_case {
    json_t *root;
    const char **titles;
    size_t *lens;
    int n;
    const char *ad_title, *ad_desc;
    size_t ad_title_len, ad_desc_len;
} user_case;

static inline const hc_st_tensor *ref_get(const hc_safetensors *ref, int i, const char *key) {
    char name[96];
    snprintf(name, sizeof name, "u%d.%s", i, key);
    const hc_st_tensor *t = hc_st_find(ref, name);
    CHECKF(t != NULL, "reference lacks %s", name);
    return t;
}
static inline int64_t nelem(const hc_st_tensor *t) {
    int64_t n = 1;
    for (int d = 0; d < t->n_dims; d++) n *= t->shape[d];
    return n;
}

static inline int load_cases(const char *path, user_case **out) {
    FILE *f = fopen(path, "r");
    CHECKF(f != NULL, "cannot open %s", path);
    if (!f) return 0;
    int n = 0, cap = 0;
    user_case *cs = NULL;
    char *line = NULL;
    size_t lcap = 0;
    ssize_t len;
    while ((len = getline(&line, &lcap, f)) > 0) {
        if (n == cap) cs = realloc(cs, sizeof *cs * (size_t)(cap = cap ? cap * 2 : 16));
        user_case *u = &cs[n++];
        memset(u, 0, sizeof *u);
        json_error_t je;
        u->root = json_loadb(line, (size_t)len, JSON_ALLOW_NUL, &je);
        CHECKF(u->root != NULL, "cases line %d: %s", n, je.text);
        json_t *h = json_object_get(u->root, "history");
        u->n = (int)json_array_size(h);
        u->titles = malloc(sizeof *u->titles * (size_t)(u->n + 1));
        u->lens = malloc(sizeof *u->lens * (size_t)(u->n + 1));
        for (int k = 0; k < u->n; k++) {
            u->titles[k] = json_string_value(json_array_get(h, (size_t)k));
            u->lens[k] = json_string_length(json_array_get(h, (size_t)k));
        }
        json_t *ad = json_object_get(u->root, "ad");
        json_t *t = json_object_get(ad, "title"), *d = json_object_get(ad, "description");
        u->ad_title = json_string_value(t);
        u->ad_title_len = json_string_length(t);
        if (d && json_is_string(d)) {
            u->ad_desc = json_string_value(d);
            u->ad_desc_len = json_string_length(d);
        }
    }
    free(line);
    fclose(f);
    *out = cs;
    return n;
}

static inline void free_cases(user_case *cs, int n) {
    for (int i = 0; i < n; i++) {
        json_decref(cs[i].root);
        free(cs[i].titles);
        free(cs[i].lens);
    }
    free(cs);
}

#endif
