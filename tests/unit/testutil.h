/* testutil.h: the tiny assertion kit every unit test uses. A failed CHECK prints file:line and the
 * expression and marks the test failed (the test goes on, so one run reports every failure);
 * TEST_MAIN's return value is the exit code ctest reads. */
#ifndef HC_TESTUTIL_H
#define HC_TESTUTIL_H

#include <stdio.h>
#include <stdint.h>
#include <stddef.h>

extern int hc_test_failures;
extern int hc_test_checks;

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        hc_test_checks++;                                                                          \
        if (!(cond)) {                                                                             \
            hc_test_failures++;                                                                    \
            fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond);               \
        }                                                                                          \
    } while (0)

#define CHECKF(cond, ...)                                                                          \
    do {                                                                                           \
        hc_test_checks++;                                                                          \
        if (!(cond)) {                                                                             \
            hc_test_failures++;                                                                    \
            fprintf(stderr, "%s:%d: CHECK failed: %s: ", __FILE__, __LINE__, #cond);               \
            fprintf(stderr, __VA_ARGS__);                                                          \
            fputc('\n', stderr);                                                                   \
        }                                                                                          \
    } while (0)

#define CHECK_OK(expr)                                                                             \
    do {                                                                                           \
        int rc_ = (expr);                                                                          \
        CHECKF(rc_ == 0, "%s returned %d", #expr, rc_);                                            \
    } while (0)

/* Prints "name: N passed, M failed" and returns the process exit code. */
int hc_test_finish(const char *name);

/* Reads a whole file into a malloc'ed NUL-terminated buffer; NULL on failure. */
char *hc_test_read_file(const char *path, size_t *len);

/* max |a-b| / max(max|b|, tiny): the relative error the parity tests quote. */
double hc_test_rel_err(const float *a, const float *b, size_t n);

#endif
