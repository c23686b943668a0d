/* progress.c: metrics JSON lines and the terminal progress line (see progress.h). */
#define _POSIX_C_SOURCE 200809L
#include "progress.h"

#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

int hc_progress_open(hc_progress *p, const char *metrics_path, int64_t total, hc_errbuf *eb) {
    memset(p, 0, sizeof(*p));
    p->total = total;
    p->tty = isatty(2);
    if (metrics_path) {
        p->metrics = fopen(metrics_path, "a");
        if (!p->metrics)
            return hc_seterr(eb, HC_ERR_IO, "metrics file %s: %s", metrics_path, strerror(errno));
    }
    return HC_OK;
}

static int name_ok(const char *s) {
    size_t n = strlen(s);
    if (n < 1 || n > 31) return 0;
    for (size_t i = 0; i < n; i++)
        if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= '0' && s[i] <= '9') || s[i] == '_'))
            return 0;
    return 1;
}

static void put_num(FILE *f, const char *key, double v) {
    if (isfinite(v)) fprintf(f, ",\"%s\":%.9g", key, v);
    else fprintf(f, ",\"%s\":null", key);
}

static void fmt_dur(char *b, size_t n, double s) {
    if (!isfinite(s) || s < 0) snprintf(b, n, "?");
    else if (s < 60) snprintf(b, n, "%ds", (int)s);
    else if (s < 3600) snprintf(b, n, "%dm%02ds", (int)(s / 60), (int)fmod(s, 60));
    else snprintf(b, n, "%dh%02dm", (int)(s / 3600), (int)fmod(s / 60, 60));
}

int hc_progress_format(char *buf, size_t n, int64_t step, int64_t total, double loss, int nterms,
                       const char *const *names, const double *terms, double tokens_per_s,
                       double eta_s) {
    size_t k = 0;
#define APPEND(...)                                                                                \
    do {                                                                                           \
        int w_ = snprintf(buf + k, k < n ? n - k : 0, __VA_ARGS__);                                \
        if (w_ > 0) k += (size_t)w_;                                                               \
    } while (0)
    APPEND("step %lld/%lld  loss %.4g", (long long)step, (long long)total, loss);
    if (nterms > 0) {
        APPEND(" (");
        for (int i = 0; i < nterms; i++) APPEND("%s%s %.4g", i ? " " : "", names[i], terms[i]);
        APPEND(")");
    }
    char eta[32];
    fmt_dur(eta, sizeof eta, eta_s);
    APPEND("  %.0f tok/s  ETA %s", tokens_per_s, eta);
#undef APPEND
    if (n > 0 && k >= n) k = n - 1;
    return (int)k;
}

int hc_progress_step(hc_progress *p, int64_t step, double lr, double loss, int nterms,
                     const char *const *names, const double *terms, double grad_norm,
                     double tokens_per_s, double elapsed_s, int64_t steps_done, hc_errbuf *eb) {
    for (int i = 0; i < nterms; i++)
        if (!name_ok(names[i]))
            return hc_seterr(eb, HC_ERR_INVAL, "loss term name '%s': use [a-z0-9_], 1..31 bytes",
                             names[i]);
    if (p->metrics) {
        FILE *f = p->metrics;
        fprintf(f, "{\"step\":%lld", (long long)step);
        put_num(f, "lr", lr);
        put_num(f, "loss", loss);
        for (int i = 0; i < nterms; i++) {
            char key[40];
            snprintf(key, sizeof key, "loss_%s", names[i]);
            put_num(f, key, terms[i]);
        }
        put_num(f, "grad_norm", grad_norm);
        put_num(f, "tokens_per_s", tokens_per_s);
        fputs("}\n", f);
        if (fflush(f) != 0 || ferror(f))
            return hc_seterr(eb, HC_ERR_IO, "metrics file: write failed: %s", strerror(errno));
    }
    if (p->tty) {
        double eta = steps_done > 0 ? elapsed_s / (double)steps_done * (double)(p->total - step)
                                    : NAN;
        char line[512];
        hc_progress_format(line, sizeof line, step, p->total, loss, nterms, names, terms,
                           tokens_per_s, eta);
        fprintf(stderr, "\r%s\033[K", line);
        if (step >= p->total) fputc('\n', stderr);
    }
    return HC_OK;
}

int hc_progress_close(hc_progress *p, hc_errbuf *eb) {
    int rc = HC_OK;
    if (p->metrics && fclose(p->metrics) != 0)
        rc = hc_seterr(eb, HC_ERR_IO, "metrics file: close failed: %s", strerror(errno));
    p->metrics = NULL;
    return rc;
}

int hc_metrics_cut(const char *path, int64_t step, int64_t *cut_lines, hc_errbuf *eb) {
    if (cut_lines) *cut_lines = 0;
    struct stat sb;
    if (stat(path, &sb) != 0) {
        if (errno == ENOENT) return HC_OK;
        return hc_seterr(eb, HC_ERR_IO, "metrics file %s: %s", path, strerror(errno));
    }
    if (!S_ISREG(sb.st_mode)) return HC_OK;
    FILE *f = fopen(path, "r");
    if (!f) return hc_seterr(eb, HC_ERR_IO, "metrics file %s: %s", path, strerror(errno));
    char *line = NULL;
    size_t cap = 0;
    ssize_t n;
    off_t off = 0, cut = -1;
    int64_t lines = 0;
    while ((n = getline(&line, &cap, f)) > 0) {
        if (cut >= 0) {
            lines++;
            continue;
        }
        int stop = line[n - 1] != '\n'; /* torn: the last line, without its newline */
        if (!stop) {
            json_t *o = json_loadb(line, (size_t)n, 0, NULL);
            json_t *s = json_is_object(o) ? json_object_get(o, "step") : NULL;
            stop = json_is_integer(s) && json_integer_value(s) > step;
            json_decref(o);
        }
        if (stop) {
            cut = off;
            lines++;
        }
        off += n;
    }
    int rerr = ferror(f);
    free(line);
    fclose(f);
    if (rerr) return hc_seterr(eb, HC_ERR_IO, "metrics file %s: read failed", path);
    if (cut < 0) return HC_OK;
    if (truncate(path, cut) != 0)
        return hc_seterr(eb, HC_ERR_IO, "metrics file %s: cannot cut it at step %lld: %s", path,
                         (long long)step, strerror(errno));
    if (cut_lines) *cut_lines = lines;
    return HC_OK;
}
