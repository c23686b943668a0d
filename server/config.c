/* config.c: see config.h. */
#include "config.h"

#include "backend/backend.h"

#include <ctype.h>
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void hcd_config_defaults(hcd_config *c) {
    memset(c, 0, sizeof *c);
    snprintf(c->listen, sizeof c->listen, "127.0.0.1");
    c->port = 8080;
    c->threads = 0;
    snprintf(c->backend, sizeof c->backend, "cpu");
    snprintf(c->compute, sizeof c->compute, "f32");
    c->max_queued = 256;
    c->max_body_bytes = 1 << 20;
    c->max_history_titles = 1000;
    c->max_title_bytes = 4096;
    c->max_connections = 256;
    c->drain_timeout_s = 30;
    c->request_timeout_ms = 0;
    c->max_batch = 64;
    c->user_cache_bytes = 256L << 20;
    c->item_cache_bytes = 256L << 20;
    c->title_cache_bytes = 64L << 20;
    c->prune_threshold = -1;
    c->log_level = 2;
}

int hcd_log_level_parse(const char *s) {
    static const char *names[] = {"error", "warn", "info", "debug"};
    for (int i = 0; i < 4; i++)
        if (!strcmp(s, names[i])) return i;
    return -1;
}

static int parse_long(const char *key, const char *v, long lo, long hi, long *out) {
    char *end;
    errno = 0;
    long x = strtol(v, &end, 10);
    if (!*v || *end || errno || x < lo || x > hi) {
        fprintf(stderr, "hllm-creatord: %s expects an integer in [%ld, %ld], got '%s'\n", key, lo,
                hi, v);
        return -1;
    }
    *out = x;
    return 0;
}

static int copy_str(const char *key, const char *v, char *dst, size_t cap) {
    if (strlen(v) >= cap) {
        fprintf(stderr, "hllm-creatord: %s is too long (at most %zu bytes)\n", key, cap - 1);
        return -1;
    }
    memcpy(dst, v, strlen(v) + 1);
    return 0;
}

/* Appends the comma-separated file names of v to the title tables. */
static int add_tables(hcd_config *c, const char *key, const char *v) {
    const char *p = v;
    for (;;) {
        const char *e = strchr(p, ',');
        size_t n = e ? (size_t)(e - p) : strlen(p);
        while (n && isspace((unsigned char)*p)) p++, n--;
        while (n && isspace((unsigned char)p[n - 1])) n--;
        if (!n) {
            fprintf(stderr, "hllm-creatord: %s: an empty file name in '%s'\n", key, v);
            return -1;
        }
        if (c->n_title_tables == HCD_MAX_TABLES) {
            fprintf(stderr, "hllm-creatord: %s: at most %d title tables\n", key, HCD_MAX_TABLES);
            return -1;
        }
        if (n >= sizeof c->title_tables[0]) {
            fprintf(stderr, "hllm-creatord: %s: a file name is too long (at most %zu bytes)\n",
                    key, sizeof c->title_tables[0] - 1);
            return -1;
        }
        memcpy(c->title_tables[c->n_title_tables], p, n);
        c->title_tables[c->n_title_tables++][n] = 0;
        if (!e) return 0;
        p = e + 1;
    }
}

/* One setting by name (config key = long option name). */
static int set_key(hcd_config *c, const char *key, const char *v) {
    long x;
    /* title-table = FILE (repeatable) and title-tables = FILE, FILE, ... add to one list */
    if (!strcmp(key, "title-table") || !strcmp(key, "title-tables")) return add_tables(c, key, v);
    if (!strcmp(key, "model")) return copy_str(key, v, c->model, sizeof c->model);
    if (!strcmp(key, "api-key")) { /* the value itself is never printed */
        if (strlen(v) > HCD_KEY_MAX) {
            fprintf(stderr, "hllm-creatord: api-key is too long (at most %d characters)\n",
                    HCD_KEY_MAX);
            return -1;
        }
        memcpy(c->api_key, v, strlen(v) + 1);
        return 0;
    }
    if (!strcmp(key, "api-key-file"))
        return copy_str(key, v, c->api_key_file, sizeof c->api_key_file);
    if (!strcmp(key, "tls-cert")) return copy_str(key, v, c->tls_cert, sizeof c->tls_cert);
    if (!strcmp(key, "tls-key")) return copy_str(key, v, c->tls_key, sizeof c->tls_key);
    if (!strcmp(key, "listen")) return copy_str(key, v, c->listen, sizeof c->listen);
    if (!strcmp(key, "backend")) {
        if (strcmp(v, "auto") && strcmp(v, "cpu") && strcmp(v, "cuda")) {
            fprintf(stderr, "hllm-creatord: backend expects auto, cpu or cuda, got '%s'\n", v);
            return -1;
        }
        return copy_str(key, v, c->backend, sizeof c->backend);
    }
    if (!strcmp(key, "compute")) {
        hc_compute m;
        if (hc_compute_parse(v, &m)) {
            fprintf(stderr, "hllm-creatord: compute expects f32 or bf16, got '%s'\n", v);
            return -1;
        }
        return copy_str(key, v, c->compute, sizeof c->compute);
    }
    if (!strcmp(key, "prune-threshold")) {
        char *end;
        errno = 0;
        double px = strtod(v, &end);
        if (!strcmp(v, "none") || !strcmp(v, "off")) {
            c->prune_threshold = -1;
            return 0;
        }
        if (!*v || *end || errno || !(px >= 0 && px <= 1)) {
            fprintf(stderr, "hllm-creatord: prune-threshold expects a probability in [0, 1] (or "
                            "none), got '%s'\n", v);
            return -1;
        }
        c->prune_threshold = px;
        return 0;
    }
    if (!strcmp(key, "log-level")) {
        int l = hcd_log_level_parse(v);
        if (l < 0) {
            fprintf(stderr, "hllm-creatord: log-level expects error, warn, info or debug, got "
                            "'%s'\n", v);
            return -1;
        }
        c->log_level = l;
        return 0;
    }
    struct { const char *k; long lo, hi; void *dst; int is_long; } ints[] = {
        {"port", 0, 65535, &c->port, 0},
        {"threads", 0, 1024, &c->threads, 0},
        {"max-queued", 1, 1000000, &c->max_queued, 0},
        {"max-body-bytes", 16, 1L << 30, &c->max_body_bytes, 1},
        {"max-history-titles", 1, 1000000, &c->max_history_titles, 0},
        {"max-title-bytes", 1, 1 << 24, &c->max_title_bytes, 0},
        {"max-connections", 1, 100000, &c->max_connections, 0},
        {"drain-timeout", 0, 86400, &c->drain_timeout_s, 0},
        {"request-timeout-ms", 0, 86400000, &c->request_timeout_ms, 1},
        {"max-batch", 1, 100000, &c->max_batch, 0},
        {"access-log", 0, 1, &c->access_log, 0},
        {"user-cache-bytes", 0, 1L << 40, &c->user_cache_bytes, 1},
        {"item-cache-bytes", 0, 1L << 40, &c->item_cache_bytes, 1},
        {"title-cache-bytes", 0, 1L << 40, &c->title_cache_bytes, 1},
    };
    for (size_t i = 0; i < sizeof ints / sizeof ints[0]; i++) {
        if (strcmp(key, ints[i].k)) continue;
        if (parse_long(key, v, ints[i].lo, ints[i].hi, &x)) return -1;
        if (ints[i].is_long) *(long *)ints[i].dst = x;
        else *(int *)ints[i].dst = (int)x;
        return 0;
    }
    fprintf(stderr, "hllm-creatord: unknown setting '%s'\n", key);
    return -1;
}

static char *trim(char *s) {
    while (isspace((unsigned char)*s)) s++;
    size_t n = strlen(s);
    while (n && isspace((unsigned char)s[n - 1])) s[--n] = 0;
    return s;
}

static int read_file(hcd_config *c, const char *path) {
    FILE *f = fopen(path, "r");
    if (!f) {
        fprintf(stderr, "hllm-creatord: cannot open config file '%s': %s\n", path, strerror(errno));
        return -1;
    }
    char line[8192];
    int ln = 0, rc = 0;
    while (fgets(line, sizeof line, f)) {
        ln++;
        char *s = trim(line);
        if (!*s || *s == '#') continue;
        char *eq = strchr(s, '=');
        if (!eq) {
            fprintf(stderr, "hllm-creatord: %s:%d: expected 'key = value'\n", path, ln);
            rc = -1;
            break;
        }
        *eq = 0;
        char *k = trim(s), *v = trim(eq + 1);
        if (set_key(c, k, v)) {
            fprintf(stderr, "hllm-creatord: in %s:%d\n", path, ln);
            rc = -1;
            break;
        }
    }
    if (!rc && ferror(f)) {
        fprintf(stderr, "hllm-creatord: cannot read config file '%s'\n", path);
        rc = -1;
    }
    fclose(f);
    return rc;
}

static void usage(FILE *o) {
    fprintf(o,
        "usage: hllm-creatord [--config FILE] [options]\n"
        "HLLM-Creator HTTP daemon: personalized ad titles (see README.md, proto/openapi.yaml).\n"
        "  --config FILE            key = value settings (deploy/hllm-creatord.conf); options win\n"
        "  --model DIR              model package (required)\n"
        "  --listen ADDR            IPv4 address to bind (default 127.0.0.1)\n"
        "  --port N                 TCP port (default 8080; 0 = any free port, logged)\n"
        "  --threads N              CPU backend threads (0 = backend default)\n"
        "  --backend auto|cpu|cuda  compute backend (default cpu)\n"
        "  --compute f32|bf16       GEMM activations: f32, or rounded to bf16 with f32\n"
        "                           accumulation (CPU backend; default f32)\n"
        "  --max-queued N           requests waiting for the engine; past it 429 (default 256)\n"
        "  --max-body-bytes N       request body limit; past it 413 (default 1048576)\n"
        "  --max-history-titles N   history length limit; past it 400 (default 1000)\n"
        "  --max-title-bytes N      bytes per title / ad field; past it 400 (default 4096)\n"
        "  --max-connections N      concurrent connections; more wait until one closes (default 256)\n"
        "  --drain-timeout S        seconds to finish in-flight work on SIGTERM (default 30)\n"
        "  --request-timeout-ms N   deadline of a request without deadline_ms; past it the\n"
        "                           work is cancelled and answered 504 (default 0 = none)\n"
        "  --max-batch N            items of one /v1/titles:batch; past it 400 (default 64)\n"
        "  --user-cache-bytes N     user cache (history -> u, U, cluster) bound; 0 = off\n"
        "                           (default 268435456)\n"
        "  --item-cache-bytes N     item-embedding cache (title ids -> item vector) bound;\n"
        "                           0 = off (default 268435456)\n"
        "  --title-cache-bytes N    cluster-mode title cache bound; 0 = off, and no single\n"
        "                           flight (default 67108864)\n"
        "  --title-table FILE       a title table made by hllm titles (proto/title-table.md),\n"
        "                           answered from before the title cache; repeatable, or a\n"
        "                           comma-separated list; re-read on SIGHUP (default none)\n"
        "  --prune-threshold X      with the package's match head: a title whose match\n"
        "                           probability for (cluster or user, ad) is below X in [0, 1]\n"
        "                           is not generated; the original title answers, \"pruned\":\n"
        "                           true (default none = off)\n"
        "  --api-key KEY            require Authorization: Bearer KEY on every endpoint but\n"
        "                           /healthz (16 to 256 visible ASCII characters; visible in\n"
        "                           ps: prefer --api-key-file) (default none = no auth)\n"
        "  --api-key-file FILE      accepted keys, one per line (# comments, blank lines);\n"
        "                           must not be accessible by other users; re-read on SIGHUP\n"
        "                           (default none)\n"
        "  --tls-cert FILE          PEM certificate (chain) for HTTPS; needs --tls-key\n"
        "                           (default none = plain HTTP)\n"
        "  --tls-key FILE           PEM private key of --tls-cert (unencrypted)\n"
        "  --log-level L            error|warn|info|debug (default info)\n"
        "  --access-log 0|1         1: a line per answered request (method, path, status,\n"
        "                           bytes, ms, request id) whatever --log-level (default 0)\n"
        "  -t                       check the config and the package, then exit 0 or 1\n"
        "  --help, --version\n");
}

int hcd_config_parse(hcd_config *c, int argc, char **argv) {
    static const struct option opts[] = {
        {"config", required_argument, 0, 'c'}, {"model", required_argument, 0, 1},
        {"listen", required_argument, 0, 1}, {"port", required_argument, 0, 1},
        {"threads", required_argument, 0, 1}, {"backend", required_argument, 0, 1},
        {"compute", required_argument, 0, 1},
        {"max-queued", required_argument, 0, 1}, {"max-body-bytes", required_argument, 0, 1},
        {"max-history-titles", required_argument, 0, 1},
        {"max-title-bytes", required_argument, 0, 1},
        {"max-connections", required_argument, 0, 1},
        {"drain-timeout", required_argument, 0, 1}, {"log-level", required_argument, 0, 1},
        {"request-timeout-ms", required_argument, 0, 1}, {"max-batch", required_argument, 0, 1},
        {"access-log", required_argument, 0, 1},
        {"user-cache-bytes", required_argument, 0, 1},
        {"item-cache-bytes", required_argument, 0, 1},
        {"title-cache-bytes", required_argument, 0, 1},
        {"title-table", required_argument, 0, 1}, {"title-tables", required_argument, 0, 1},
        {"prune-threshold", required_argument, 0, 1},
        {"api-key", required_argument, 0, 1}, {"api-key-file", required_argument, 0, 1},
        {"tls-cert", required_argument, 0, 1}, {"tls-key", required_argument, 0, 1},
        {"help", no_argument, 0, 'h'}, {"version", no_argument, 0, 'V'}, {0, 0, 0, 0}};
    /* First pass: --config, -t, --help, --version. */
    int idx, o;
    const char *cfg = NULL;
    opterr = 1;
    optind = 1;
    while ((o = getopt_long(argc, argv, "t", opts, &idx)) != -1) {
        if (o == 'c') cfg = optarg;
        else if (o == 't') c->check_only = 1;
        else if (o == 'h') { usage(stdout); return 1; }
        else if (o == 'V') { printf("hllm-creatord %s\n", HC_VERSION); return 1; }
        else if (o == '?') { usage(stderr); return -1; }
    }
    if (optind < argc) {
        fprintf(stderr, "hllm-creatord: unexpected argument '%s'\n", argv[optind]);
        return -1;
    }
    if (cfg && read_file(c, cfg)) return -1;
    optind = 1;
    opterr = 0;
    int tables_from_options = 0;
    while ((o = getopt_long(argc, argv, "t", opts, &idx)) != -1) {
        if (o != 1) continue;
        /* options override the file: the first --title-table replaces the file's list */
        if (!strncmp(opts[idx].name, "title-table", 11) && !tables_from_options++)
            c->n_title_tables = 0;
        if (set_key(c, opts[idx].name, optarg)) return -1;
    }
    if (!c->tls_cert[0] != !c->tls_key[0]) {
        fprintf(stderr, "hllm-creatord: %s without %s: HTTPS needs both a certificate and its "
                        "key\n", c->tls_cert[0] ? "tls-cert" : "tls-key",
                c->tls_cert[0] ? "tls-key" : "tls-cert");
        return -1;
    }
    if (!c->model[0]) {
        fprintf(stderr, "hllm-creatord: no model package: give --model DIR or model = DIR in the "
                        "config file\n");
        return -1;
    }
    return 0;
}
