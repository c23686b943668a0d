/* pipeline_io.c: see pipeline_io.h. */
#include "pipeline_io.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

long hc_cli_read_line(FILE *f, char **buf, size_t *cap, size_t max) {
    size_t n = 0;
    int c, any = 0, too_long = 0;
    flockfile(f);
    while ((c = getc_unlocked(f)) != EOF) {
        any = 1;
        if (c == '\n') break;
        if (too_long) continue;
        if (n >= max) { /* keep reading to the end of the line, storing nothing */
            too_long = 1;
            continue;
        }
        if (n + 2 > *cap) {
            size_t nc = *cap ? *cap * 2 : 4096;
            while (nc < n + 2) nc *= 2;
            char *t = realloc(*buf, nc);
            if (!t) {
                funlockfile(f);
                errno = ENOMEM;
                return HC_CLI_LINE_ERROR;
            }
            *buf = t;
            *cap = nc;
        }
        (*buf)[n++] = (char)c;
    }
    int err = ferror_unlocked(f);
    funlockfile(f);
    if (err) return HC_CLI_LINE_ERROR;
    if (!any) return HC_CLI_LINE_EOF;
    if (too_long) return HC_CLI_LINE_TOO_LONG;
    if (n > 0 && (*buf)[n - 1] == '\r') n--;
    if (!*buf) { /* an empty first line: still hand back a valid string */
        if (!(*buf = malloc(1))) return HC_CLI_LINE_ERROR;
        *cap = 1;
    }
    (*buf)[n] = 0;
    return (long)n;
}

void hc_cli_parse_line(hc_cli_line *ln, const char *text, size_t len, int need_ad) {
    memset(ln, 0, sizeof *ln);
    size_t i = 0;
    while (i < len && (text[i] == ' ' || text[i] == '\t')) i++;
    if (i == len) {
        snprintf(ln->error, sizeof ln->error, "empty line: expected a JSON object");
        return;
    }
    json_error_t je;
    /* JSON_ALLOW_NUL: titles may contain U+0000 (handled by length) */
    ln->root = json_loadb(text, len, JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL, &je);
    if (!ln->root) {
        snprintf(ln->error, sizeof ln->error, "invalid JSON at column %d: %s", je.column, je.text);
        return;
    }
    if (!json_is_object(ln->root)) {
        snprintf(ln->error, sizeof ln->error, "expected a JSON object with a \"history\" array");
        return;
    }
    json_t *h = json_object_get(ln->root, "history");
    if (!h) {
        snprintf(ln->error, sizeof ln->error, "missing field \"history\" (a list of titles, oldest "
                                              "first)");
        return;
    }
    if (!json_is_array(h)) {
        snprintf(ln->error, sizeof ln->error, "\"history\" must be a list of title strings");
        return;
    }
    size_t n = json_array_size(h);
    if (n > HC_CLI_MAX_HISTORY) {
        snprintf(ln->error, sizeof ln->error, "\"history\" has %zu titles; at most %d are accepted "
                 "(the model reads the most recent ones)", n, HC_CLI_MAX_HISTORY);
        return;
    }
    ln->titles = malloc(sizeof *ln->titles * (n ? n : 1));
    ln->lens = malloc(sizeof *ln->lens * (n ? n : 1));
    if (!ln->titles || !ln->lens) {
        snprintf(ln->error, sizeof ln->error, "out of memory");
        return;
    }
    for (size_t k = 0; k < n; k++) {
        json_t *t = json_array_get(h, k);
        if (!json_is_string(t)) {
            snprintf(ln->error, sizeof ln->error, "history[%zu] is not a string", k);
            return;
        }
        ln->titles[k] = json_string_value(t);
        ln->lens[k] = json_string_length(t);
    }
    ln->n_titles = (int)n;
    if (!need_ad) return;
    json_t *ad = json_object_get(ln->root, "ad");
    if (!ad || !json_is_object(ad)) {
        snprintf(ln->error, sizeof ln->error, "missing object \"ad\" with \"title\" and "
                                              "\"description\"");
        return;
    }
    json_t *t = json_object_get(ad, "title");
    if (!t || !json_is_string(t)) {
        snprintf(ln->error, sizeof ln->error, "\"ad.title\" must be a string");
        return;
    }
    ln->ad_title = json_string_value(t);
    ln->ad_title_len = json_string_length(t);
    json_t *d = json_object_get(ad, "description");
    if (d && !json_is_null(d)) {
        if (!json_is_string(d)) {
            snprintf(ln->error, sizeof ln->error, "\"ad.description\" must be a string or null");
            return;
        }
        ln->ad_desc = json_string_value(d);
        ln->ad_desc_len = json_string_length(d);
    }
}

void hc_cli_line_clear(hc_cli_line *ln) {
    json_decref(ln->root);
    free(ln->titles);
    free(ln->lens);
    memset(ln, 0, sizeof *ln);
}

void hc_cli_print_json(FILE *out, json_t *obj) {
    char *s = json_dumps(obj, JSON_COMPACT);
    if (s) {
        fputs(s, out);
        free(s);
    } else {
        fputs("{\"error\":\"cannot serialize the result\"}", out);
    }
    fputc('\n', out);
    json_decref(obj);
}

void hc_cli_print_error(FILE *out, const char *msg) {
    hc_cli_print_json(out, json_pack("{s:s}", "error", msg));
}

json_t *hc_cli_float_array(const float *v, int n) {
    json_t *a = json_array();
    /* JSON has no NaN/Inf: such a value is written as null rather than silently dropped */
    for (int i = 0; i < n; i++)
        json_array_append_new(a, isfinite(v[i]) ? json_real((double)v[i]) : json_null());
    return a;
}
