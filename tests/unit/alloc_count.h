/* alloc_count.h: counts every malloc/calloc/realloc of the process, for the tests that check a
 * scheduler step allocates nothing. Include it in exactly one file of a test that links with
 * -Wl,--wrap=malloc,--wrap=calloc,--wrap=realloc (tests/CMakeLists.txt). */
#ifndef HC_TEST_ALLOC_COUNT_H
#define HC_TEST_ALLOC_COUNT_H

#include <stddef.h>
#include <stdlib.h>

void *__real_malloc(size_t n);
void *__real_calloc(size_t a, size_t b);
void *__real_realloc(void *p, size_t n);
static long n_allocs;
/* Set by a test around the calls it measures: with HC_ALLOC_ABORT=1 in the environment the
 * first allocation there aborts, so `gdb -ex run -ex bt` shows who allocated. */
static int alloc_measuring;
static void alloc_seen(void) {
    n_allocs++;
    if (alloc_measuring && getenv("HC_ALLOC_ABORT")) abort();
}
void *__wrap_malloc(size_t n);
void *__wrap_calloc(size_t a, size_t b);
void *__wrap_realloc(void *p, size_t n);
void *__wrap_malloc(size_t n) {
    alloc_seen();
    return __real_malloc(n);
}
void *__wrap_calloc(size_t a, size_t b) {
    alloc_seen();
    return __real_calloc(a, b);
}
void *__wrap_realloc(void *p, size_t n) {
    alloc_seen();
    return __real_realloc(p, n);
}

#endif
