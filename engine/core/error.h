/* error.h: the one table of status codes used by every hllm-creator library function.
 *
 * Contract: library functions return 0 (HC_OK) on success or a negative hc_err value; they never
 * exit() and never print to stdout. HC_ERR_AGAIN means "try again later" (queue full, no free KV
 * block); every other negative code means the operation failed. hc_strerror()/hc_errname() are
 * thread-safe and return static strings.
 *
 * Detailed messages: functions that can fail on user input (files, JSON, configs) also take an
 * hc_errbuf so the caller can show *what* was wrong (which field, which tensor, which byte).
 */
#ifndef HC_ERROR_H
#define HC_ERROR_H

#include <stddef.h>

/* X(name, value, message) */
#define HC_ERRNO_MAP(X)                                                                            \
    X(OK, 0, "success")                                                                            \
    X(AGAIN, -1, "resource temporarily unavailable, try again")                                    \
    X(NOMEM, -2, "out of memory")                                                                  \
    X(INVAL, -3, "invalid argument")                                                               \
    X(IO, -4, "input/output error")                                                                \
    X(FORMAT, -5, "malformed or corrupt input")                                                    \
    X(UNSUPPORTED, -6, "unsupported feature")                                                      \
    X(RANGE, -7, "value out of range")                                                             \
    X(NOTFOUND, -8, "not found")                                                                   \
    X(BACKEND, -9, "compute backend failure")                                                      \
    X(MISMATCH, -10, "shape or type mismatch")                                                     \
    X(NODEVICE, -11, "no usable device")

typedef enum {
#define HC_ERR_ENUM_(name, val, msg) HC_ERR_##name = (val),
    HC_ERRNO_MAP(HC_ERR_ENUM_)
#undef HC_ERR_ENUM_
} hc_err;

#define HC_OK HC_ERR_OK

/* Human-readable message for a status code ("unknown error" for values outside the table). */
const char *hc_strerror(int err);
/* Symbolic name, e.g. "HC_ERR_FORMAT". */
const char *hc_errname(int err);

/* A caller-owned buffer for a detailed message. Functions write a single line, no trailing
 * newline; a NULL hc_errbuf pointer is allowed and means "caller does not want details". */
typedef struct hc_errbuf {
    char msg[512];
} hc_errbuf;

/* printf-style: writes into eb (if non-NULL) and returns err, so callers can
 * `return hc_seterr(eb, HC_ERR_FORMAT, "tensor %s: ...", name);` */
int hc_seterr(hc_errbuf *eb, int err, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;

/* Broken internal invariant: print file:line and abort. Never used for bad user input. */
#define HC_ASSERT(cond)                                                                            \
    do {                                                                                           \
        if (!(cond)) hc_assert_fail(#cond, __FILE__, __LINE__);                                    \
    } while (0)
void hc_assert_fail(const char *expr, const char *file, int line)
#if defined(__GNUC__)
    __attribute__((noreturn))
#endif
    ;

#endif
