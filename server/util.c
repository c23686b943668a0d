/* util.c: logging (one line per event, level and request id), clocks, growable buffers. */
#include "server.h"

/* ---- logging ---------------------------------------------------------------------------- */

void hlog(const hcd_config *cfg, int level, uint64_t rid, const char *fmt, ...) {
    static const char *names[] = {"error", "warn", "info", "debug"};
    if (level > cfg->log_level) return;
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    struct tm tm;
    gmtime_r(&ts.tv_sec, &tm);
    if (rid)
        fprintf(stderr, "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ %s req=%" PRIu64 " %s\n",
                tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                ts.tv_nsec / 1000000, names[level], rid, msg);
    else
        fprintf(stderr, "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ %s %s\n", tm.tm_year + 1900,
                tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, ts.tv_nsec / 1000000,
                names[level], msg);
}

void access_log(server *s, int code, long bytes) {
    if (!s->cfg.access_log) return;
    const request *r = s->cur_req;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    struct tm tm;
    gmtime_r(&ts.tv_sec, &tm);
    char size[32], ms[32];
    if (bytes < 0) snprintf(size, sizeof size, "stream");
    else snprintf(size, sizeof size, "%ldB", bytes);
    if (r) snprintf(ms, sizeof ms, "%.2fms", now_ms() - r->t_recv);
    else snprintf(ms, sizeof ms, "-");
    /* the path as MHD decoded it; control characters would break the one-line format */
    char path[256];
    size_t n = 0;
    for (const char *p = s->cur_url ? s->cur_url : "?"; *p && n + 1 < sizeof path; p++)
        path[n++] = (unsigned char)*p < 0x20 || *p == 0x7f ? '?' : *p;
    path[n] = 0;
    fprintf(stderr,
            "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ access req=%" PRIu64 " %s %s %d %s %s\n",
            tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
            ts.tv_nsec / 1000000, r ? r->id : (uint64_t)0,
            s->cur_method ? s->cur_method : "?", path, code, size, ms);
}

double now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

void *xrealloc(void *p, size_t n) {
    void *q = realloc(p, n ? n : 1);
    if (!q) {
        fprintf(stderr, "hllm-creatord: out of memory\n");
        abort();
    }
    return q;
}

void buf_append(char **b, size_t *len, size_t *cap, const char *s, size_t n) {
    if (*len + n + 1 > *cap) {
        size_t c = *cap ? *cap * 2 : 256;
        while (c < *len + n + 1)
            c *= 2;
        *b = xrealloc(*b, c);
        *cap = c;
    }
    memcpy(*b + *len, s, n);
    *len += n;
    (*b)[*len] = 0;
}

/* ---- engine thread ---------------------------------------------------------------------- */
