/* error.c: status code names/messages and the errbuf helper. */
#include "core/error.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

const char *hc_strerror(int err) {
    switch (err) {
#define HC_ERR_MSG_(name, val, msg)                                                                \
    case val: return msg;
        HC_ERRNO_MAP(HC_ERR_MSG_)
#undef HC_ERR_MSG_
    default: return "unknown error";
    }
}

const char *hc_errname(int err) {
    switch (err) {
#define HC_ERR_NAME_(name, val, msg)                                                               \
    case val: return "HC_ERR_" #name;
        HC_ERRNO_MAP(HC_ERR_NAME_)
#undef HC_ERR_NAME_
    default: return "HC_ERR_UNKNOWN";
    }
}

int hc_seterr(hc_errbuf *eb, int err, const char *fmt, ...) {
    if (eb) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(eb->msg, sizeof eb->msg, fmt, ap);
        va_end(ap);
    }
    return err;
}

void hc_assert_fail(const char *expr, const char *file, int line) {
    fprintf(stderr, "hllm-creator: internal invariant failed: %s (%s:%d)\n", expr, file, line);
    abort();
}
