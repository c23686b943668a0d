#include "testutil.h"

#include <math.h>
#include <stdlib.h>

int hc_test_failures = 0;
int hc_test_checks = 0;

int hc_test_finish(const char *name) {
    printf("%s: %d passed, %d failed\n", name, hc_test_checks - hc_test_failures, hc_test_failures);
    return hc_test_failures ? 1 : 0;
}

char *hc_test_read_file(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    if (fseek(f, 0, SEEK_END) != 0) {
        fclose(f);
        return NULL;
    }
    long n = ftell(f);
    rewind(f);
    char *buf = malloc((size_t)n + 1);
    if (buf && fread(buf, 1, (size_t)n, f) != (size_t)n) {
        free(buf);
        buf = NULL;
    }
    fclose(f);
    if (buf) {
        buf[n] = 0;
        if (len) *len = (size_t)n;
    }
    return buf;
}

double hc_test_rel_err(const float *a, const float *b, size_t n) {
    double maxdiff = 0, maxref = 0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - (double)b[i]);
        if (!(d <= maxdiff)) maxdiff = d; /* NaN propagates as failure */
        if (fabs(b[i]) > maxref) maxref = fabs(b[i]);
    }
    if (maxref < 1e-30) maxref = 1e-30;
    return maxdiff / maxref;
}
