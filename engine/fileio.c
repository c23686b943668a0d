/* fileio.c: see fileio.h. */
#include "fileio.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int hc_read_file(const char *path, size_t max_bytes, char **out, size_t *len, hc_errbuf *eb) {
    *out = NULL;
    *len = 0;
    FILE *f = fopen(path, "rb");
    if (!f) {
        int e = errno;
        return hc_seterr(eb, e == ENOENT || e == ENOTDIR ? HC_ERR_NOTFOUND : HC_ERR_IO,
                         "%s: cannot open: %s", path, strerror(e));
    }
    size_t cap = 0, n = 0;
    char *buf = NULL;
    int rc = HC_OK;
    for (;;) {
        if (n + 1 >= cap) { /* keep room for the terminating NUL */
            if (cap > max_bytes) {
                rc = hc_seterr(eb, HC_ERR_FORMAT, "%s: larger than %zu bytes", path, max_bytes);
                break;
            }
            size_t ncap = cap ? cap * 2 : 65536;
            char *p = realloc(buf, ncap);
            if (!p) {
                rc = hc_seterr(eb, HC_ERR_NOMEM, "%s: out of memory", path);
                break;
            }
            buf = p;
            cap = ncap;
        }
        size_t got = fread(buf + n, 1, cap - 1 - n, f);
        n += got;
        if (got == 0) {
            if (ferror(f)) rc = hc_seterr(eb, HC_ERR_IO, "%s: read error", path);
            break;
        }
    }
    fclose(f);
    if (rc == HC_OK && n > max_bytes)
        rc = hc_seterr(eb, HC_ERR_FORMAT, "%s: larger than %zu bytes", path, max_bytes);
    if (rc) {
        free(buf);
        return rc;
    }
    buf[n] = 0;
    *out = buf;
    *len = n;
    return HC_OK;
}
