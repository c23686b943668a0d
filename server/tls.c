/* tls.c: optional HTTPS (--tls-cert, --tls-key): libmicrohttpd with GnuTLS (MHD_USE_TLS and the
 * PEM texts through MHD_OPTION_HTTPS_MEM_CERT / _KEY). The files are read once at start (a
 * renewed certificate needs a restart). tls_load checks everything it can before the real daemon
 * starts, so that -t reports the same errors: libmicrohttpd built with TLS
 * (MHD_is_feature_supported), both files readable, non-empty PEM, and that GnuTLS accepts the
 * pair (a throwaway MHD daemon without a listening socket is started with them; it fails on a
 * malformed certificate or key, or a key that is not the certificate's). */
#include "server.h"

#include <sys/stat.h>

#define TLS_MAX_FILE (1 << 20)

static char *read_pem(const char *what, const char *path, char *err, size_t errn) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        snprintf(err, errn, "%s '%s': cannot open: %s", what, path, strerror(errno));
        return NULL;
    }
    struct stat st;
    if (fstat(fileno(f), &st) || !S_ISREG(st.st_mode)) {
        snprintf(err, errn, "%s '%s' is not a regular file", what, path);
        fclose(f);
        return NULL;
    }
    char *b = malloc(TLS_MAX_FILE + 1);
    size_t n = b ? fread(b, 1, TLS_MAX_FILE + 1, f) : 0;
    int bad = !b || ferror(f);
    fclose(f);
    if (bad) {
        snprintf(err, errn, "%s '%s': cannot read it", what, path);
        free(b);
        return NULL;
    }
    if (n > TLS_MAX_FILE) {
        snprintf(err, errn, "%s '%s' is larger than %d bytes", what, path, TLS_MAX_FILE);
        free(b);
        return NULL;
    }
    b[n] = 0;
    if (!n || strlen(b) != n || !strstr(b, "-----BEGIN ")) {
        snprintf(err, errn, "%s '%s' is %s", what, path,
                 !n ? "empty" : "not a PEM file (no -----BEGIN line)");
        free(b);
        return NULL;
    }
    return b;
}

typedef struct {
    char msg[512];
} mhd_log_buf;

static void capture_log(void *cls, const char *fmt, va_list ap) {
    mhd_log_buf *l = cls;
    if (l->msg[0]) return; /* the first message says why */
    vsnprintf(l->msg, sizeof l->msg, fmt, ap);
    size_t n = strlen(l->msg);
    while (n && (l->msg[n - 1] == '\n' || l->msg[n - 1] == '.')) l->msg[--n] = 0;
}

static enum MHD_Result no_access(void *cls, struct MHD_Connection *c, const char *url,
                                  const char *method, const char *version, const char *data,
                                  size_t *data_size, void **con_cls) {
    (void)cls, (void)c, (void)url, (void)method, (void)version, (void)data, (void)data_size,
        (void)con_cls;
    return MHD_NO;
}

int tls_load(server *s, char *err, size_t errn) {
    s->tls_cert_pem = s->tls_key_pem = NULL;
    if (!s->cfg.tls_cert[0]) return 0; /* config.c: both or neither */
    if (MHD_is_feature_supported(MHD_FEATURE_TLS) != MHD_YES) {
        snprintf(err, errn, "tls-cert: this libmicrohttpd was built without TLS (GnuTLS) support");
        return -1;
    }
    char *cert = read_pem("tls-cert", s->cfg.tls_cert, err, errn);
    if (!cert) return -1;
    char *key = read_pem("tls-key", s->cfg.tls_key, err, errn);
    if (!key) {
        free(cert);
        return -1;
    }
    struct stat st;
    if (!stat(s->cfg.tls_key, &st) && (st.st_mode & S_IRWXO))
        hlog(&s->cfg, 1, 0, "tls-key '%s' is readable by other users (mode %04o): chmod o-rwx it",
             s->cfg.tls_key, (unsigned)(st.st_mode & 07777));
    mhd_log_buf lb = {{0}};
    struct MHD_Daemon *d = MHD_start_daemon(
        MHD_USE_TLS | MHD_USE_NO_LISTEN_SOCKET | MHD_USE_ERROR_LOG, 0, NULL, NULL, no_access, NULL,
        MHD_OPTION_EXTERNAL_LOGGER, capture_log, &lb, MHD_OPTION_HTTPS_MEM_CERT, cert,
        MHD_OPTION_HTTPS_MEM_KEY, key, MHD_OPTION_END);
    if (!d) {
        snprintf(err, errn, "tls-cert '%s' / tls-key '%s' are not a usable certificate and key%s%s",
                 s->cfg.tls_cert, s->cfg.tls_key, lb.msg[0] ? ": " : "", lb.msg);
        utf8_sanitize(err);
        free(cert);
        free(key);
        return -1;
    }
    MHD_stop_daemon(d);
    s->tls_cert_pem = cert;
    s->tls_key_pem = key;
    return 0;
}
