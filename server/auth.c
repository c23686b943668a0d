/* auth.c: API keys (--api-key, --api-key-file): every endpoint but /healthz needs
 * `Authorization: Bearer KEY`; a missing or wrong key is answered 401 with WWW-Authenticate.
 *
 * A key is 16 to 256 visible ASCII characters (0x21..0x7e). The key file holds one key per line;
 * blank lines and lines starting with '#' are ignored, spaces around a key too. It must be a
 * regular file, hold at least one key, and not be accessible by other users (mode o-rwx: systemd's
 * LoadCredential= gives 0400). A key file that breaks these rules fails the start (and -t, exit
 * 1); on SIGHUP it is re-read and a failure keeps the previous keys (logged). --api-key and the
 * file's keys are all accepted. Keys are compared in constant time: each presented token is
 * zero-padded to HCD_KEY_MAX bytes and XOR-compared with every key in full, no early exit. No
 * key, or part of one, is ever logged or echoed. */
#include "server.h"

#include <fcntl.h>
#include <sys/stat.h>

void keys_free(hcd_keys *k) {
    if (!k) return;
    if (k->key) memset(k->key, 0, sizeof *k->key * (size_t)k->n);
    free(k->key);
    free(k->len);
    free(k);
}

/* A key's syntax; what is wrong with it, or NULL. */
static const char *key_problem(const char *v, size_t n) {
    if (n < HCD_KEY_MIN) return "is shorter than 16 characters";
    if (n > HCD_KEY_MAX) return "is longer than 256 characters";
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)v[i] < 0x21 || (unsigned char)v[i] > 0x7e)
            return "holds a character that is not visible ASCII (0x21..0x7e)";
    return NULL;
}

static int keys_add(hcd_keys *k, const char *v, size_t n) {
    void *a = realloc(k->key, sizeof *k->key * (size_t)(k->n + 1));
    if (!a) return -1;
    k->key = a;
    void *b = realloc(k->len, sizeof *k->len * (size_t)(k->n + 1));
    if (!b) return -1;
    k->len = b;
    memset(k->key[k->n], 0, HCD_KEY_MAX);
    memcpy(k->key[k->n], v, n);
    k->len[k->n++] = n;
    return 0;
}

static int read_key_file(const char *path, hcd_keys *k, char *err, size_t errn) {
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
    if (fd < 0) {
        snprintf(err, errn, "api-key-file '%s': cannot open: %s", path, strerror(errno));
        return -1;
    }
    struct stat st;
    if (fstat(fd, &st)) {
        snprintf(err, errn, "api-key-file '%s': cannot stat: %s", path, strerror(errno));
        close(fd);
        return -1;
    }
    if (!S_ISREG(st.st_mode)) {
        snprintf(err, errn, "api-key-file '%s' is %s, not a regular file", path,
                 S_ISDIR(st.st_mode) ? "a directory" : "a special file");
        close(fd);
        return -1;
    }
    if (st.st_mode & S_IRWXO) {
        snprintf(err, errn, "api-key-file '%s' is accessible by other users (mode %04o): "
                 "chmod o-rwx it", path, (unsigned)(st.st_mode & 07777));
        close(fd);
        return -1;
    }
    FILE *f = fdopen(fd, "r");
    if (!f) {
        snprintf(err, errn, "api-key-file '%s': %s", path, strerror(errno));
        close(fd);
        return -1;
    }
    char line[HCD_KEY_MAX + 64];
    int ln = 0, rc = 0, before = k->n;
    while (!rc && fgets(line, sizeof line, f)) {
        ln++;
        size_t n = strlen(line);
        if (n == sizeof line - 1 && line[n - 1] != '\n' && !feof(f)) {
            const char *q = line;
            while (*q == ' ' || *q == '\t') q++;
            if (*q == '#') { /* a long comment: skip the rest of its line */
                int ch;
                while ((ch = fgetc(f)) != EOF && ch != '\n') {
                }
                continue;
            }
            snprintf(err, errn, "api-key-file '%s' line %d: the key is longer than %d "
                     "characters", path, ln, HCD_KEY_MAX);
            rc = -1;
            break;
        }
        char *p = line;
        while (*p == ' ' || *p == '\t') p++;
        size_t len = strlen(p);
        while (len && (p[len - 1] == '\n' || p[len - 1] == '\r' || p[len - 1] == ' ' ||
                       p[len - 1] == '\t'))
            len--;
        if (!len || *p == '#') continue;
        const char *why = key_problem(p, len);
        if (why) {
            snprintf(err, errn, "api-key-file '%s' line %d: the key %s", path, ln, why);
            rc = -1;
        } else if (keys_add(k, p, len)) {
            snprintf(err, errn, "api-key-file '%s': out of memory", path);
            rc = -1;
        }
    }
    if (!rc && ferror(f)) {
        snprintf(err, errn, "api-key-file '%s': read error", path);
        rc = -1;
    }
    memset(line, 0, sizeof line);
    fclose(f);
    if (!rc && k->n == before) {
        snprintf(err, errn, "api-key-file '%s' holds no key (only blank or # lines)", path);
        rc = -1;
    }
    return rc;
}

int keys_load(const hcd_config *cfg, hcd_keys **out, char *err, size_t errn) {
    *out = NULL;
    if (!cfg->api_key[0] && !cfg->api_key_file[0]) return 0;
    hcd_keys *k = calloc(1, sizeof *k);
    if (!k) {
        snprintf(err, errn, "out of memory");
        return -1;
    }
    if (cfg->api_key[0]) {
        const char *why = key_problem(cfg->api_key, strlen(cfg->api_key));
        if (why) {
            snprintf(err, errn, "api-key %s", why);
            keys_free(k);
            return -1;
        }
        if (keys_add(k, cfg->api_key, strlen(cfg->api_key))) {
            snprintf(err, errn, "out of memory");
            keys_free(k);
            return -1;
        }
    }
    if (cfg->api_key_file[0] && read_key_file(cfg->api_key_file, k, err, errn)) {
        keys_free(k);
        return -1;
    }
    *out = k;
    return 0;
}

/* 1 when tok (n bytes) equals one of the keys: every key is compared over HCD_KEY_MAX bytes. */
static int key_matches(const hcd_keys *k, const char *tok, size_t n) {
    unsigned char t[HCD_KEY_MAX];
    memset(t, 0, sizeof t);
    const size_t m = n > HCD_KEY_MAX ? HCD_KEY_MAX : n;
    memcpy(t, tok, m);
    unsigned ok = 0;
    for (int i = 0; i < k->n; i++) {
        unsigned d = (unsigned)(k->len[i] ^ m); /* both <= HCD_KEY_MAX: lengths differ, d != 0 */
        for (size_t j = 0; j < HCD_KEY_MAX; j++)
            d |= (unsigned)(k->key[i][j] ^ t[j]);
        ok |= (unsigned)(d == 0);
    }
    memset(t, 0, sizeof t);
    return (int)ok & (n <= HCD_KEY_MAX);
}

static enum MHD_Result send_401(server *s, struct MHD_Connection *c, int had_token) {
    const char *msg = had_token ? "{\"error\":\"the bearer token is not a valid API key\"}"
                                : "{\"error\":\"an API key is required: Authorization: Bearer "
                                  "KEY\"}";
    struct MHD_Response *r =
        MHD_create_response_from_buffer(strlen(msg), (void *)msg, MHD_RESPMEM_PERSISTENT);
    if (!r) return MHD_NO;
    MHD_add_response_header(r, "Content-Type", "application/json");
    MHD_add_response_header(r, "WWW-Authenticate",
                            had_token ? "Bearer realm=\"hllm-creatord\", error=\"invalid_token\""
                                      : "Bearer realm=\"hllm-creatord\"");
    enum MHD_Result ret = MHD_queue_response(c, 401, r);
    MHD_destroy_response(r);
    s->m_codes[401]++;
    access_log(s, 401, (long)strlen(msg));
    return ret;
}

int auth_check(server *s, struct MHD_Connection *c, const char *url, enum MHD_Result *ret) {
    if (!s->keys || !strcmp(url, "/healthz")) return 1;
    const char *h = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Authorization");
    int had = 0;
    if (h) {
        while (*h == ' ' || *h == '\t') h++;
        if (!strncasecmp(h, "Bearer", 6) && (h[6] == ' ' || h[6] == '\t')) {
            const char *t = h + 6;
            while (*t == ' ' || *t == '\t') t++;
            size_t n = strlen(t);
            while (n && (t[n - 1] == ' ' || t[n - 1] == '\t')) n--;
            had = n > 0;
            if (had && key_matches(s->keys, t, n)) return 1;
        } else {
            had = 1; /* another scheme */
        }
    }
    hlog(&s->cfg, 2, 0, "401 %s: %s", url, had ? "the credentials match no API key"
                                                : "no Authorization: Bearer header");
    *ret = send_401(s, c, had);
    return 0;
}

void keys_reload(server *s) {
    if (!s->cfg.api_key_file[0]) return;
    hcd_keys *k = NULL;
    char err[4400];
    if (keys_load(&s->cfg, &k, err, sizeof err)) {
        s->m_key_reload_failures++;
        hlog(&s->cfg, 0, 0, "SIGHUP: API keys not reloaded, keeping the previous %d: %s",
             s->keys ? s->keys->n : 0, err);
        return;
    }
    keys_free(s->keys);
    s->keys = k;
    s->m_key_reloads++;
    hlog(&s->cfg, 2, 0, "SIGHUP: API keys reloaded: %d key%s", k->n, k->n == 1 ? "" : "s");
}
