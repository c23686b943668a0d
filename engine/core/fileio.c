/* fileio.c: see fileio.h. */
#include "core/fileio.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

const char *hc_file_kind(unsigned mode) {
    if (S_ISREG(mode)) return NULL;
    if (S_ISFIFO(mode)) return "a FIFO";
    if (S_ISDIR(mode)) return "a directory";
    if (S_ISCHR(mode) || S_ISBLK(mode)) return "a device";
    if (S_ISSOCK(mode)) return "a socket";
    return "not a regular file";
}

char *hc_path_canonical(const char *path) { return realpath(path, NULL); }

static int inside(const char *p, const char *root) {
    size_t n = strlen(root);
    if (n == 1 && root[0] == '/') return 1;
    return strncmp(p, root, n) == 0 && (p[n] == '/' || p[n] == 0);
}

static int outside_err(hc_errbuf *eb, const char *what, const char *real, const char *root) {
    return hc_seterr(eb, HC_ERR_INVAL,
                     "%s: resolves to %s, outside the model package %s (outside paths are not "
                     "allowed)",
                     what, real, root);
}

int hc_path_check_inside(const char *path, const char *root, const char *what, hc_errbuf *eb) {
    if (!root) return HC_OK;
    char *real = hc_path_canonical(path);
    if (!real) return HC_OK;
    int rc = inside(real, root) ? HC_OK : outside_err(eb, what, real, root);
    free(real);
    return rc;
}

static int errno_code(int e) { return e == ENOENT || e == ENOTDIR ? HC_ERR_NOTFOUND : HC_ERR_IO; }

int hc_open_regular(const char *path, const char *root, int *fd_out, uint64_t *size,
                    hc_errbuf *eb) {
    *fd_out = -1;
    *size = 0;
    char *real = NULL;
    if (root) {
        /* open the resolved path, so what was checked is what is read */
        real = hc_path_canonical(path);
        if (!real) {
            int e = errno;
            return hc_seterr(eb, errno_code(e), "%s: cannot open: %s", path, strerror(e));
        }
        if (!inside(real, root)) {
            int rc = outside_err(eb, path, real, root);
            free(real);
            return rc;
        }
    }
    /* O_NONBLOCK: opening a FIFO for reading would otherwise wait for a writer */
    int fd = open(real ? real : path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
    int e = errno;
    free(real);
    if (fd < 0) return hc_seterr(eb, errno_code(e), "%s: cannot open: %s", path, strerror(e));
    struct stat sb;
    if (fstat(fd, &sb) != 0) {
        e = errno;
        close(fd);
        return hc_seterr(eb, HC_ERR_IO, "%s: cannot stat: %s", path, strerror(e));
    }
    const char *kind = hc_file_kind(sb.st_mode);
    if (kind) {
        close(fd);
        if (S_ISDIR(sb.st_mode)) return hc_seterr(eb, HC_ERR_FORMAT, "%s: is a directory", path);
        return hc_seterr(eb, HC_ERR_FORMAT, "%s: is %s, not a regular file", path, kind);
    }
    int fl = fcntl(fd, F_GETFL);
    if (fl < 0 || fcntl(fd, F_SETFL, fl & ~O_NONBLOCK) != 0) {
        e = errno;
        close(fd);
        return hc_seterr(eb, HC_ERR_IO, "%s: fcntl: %s", path, strerror(e));
    }
    *fd_out = fd;
    *size = (uint64_t)sb.st_size;
    return HC_OK;
}

int hc_read_file_in(const char *path, const char *root, size_t max_bytes, char **out, size_t *len,
                    hc_errbuf *eb) {
    *out = NULL;
    *len = 0;
    int fd;
    uint64_t size;
    int rc = hc_open_regular(path, root, &fd, &size, eb);
    if (rc) return rc;
    if (size > max_bytes) {
        close(fd);
        return hc_seterr(eb, HC_ERR_FORMAT, "%s: larger than %zu bytes", path, max_bytes);
    }
    char *buf = malloc((size_t)size + 1);
    if (!buf) {
        close(fd);
        return hc_seterr(eb, HC_ERR_NOMEM, "%s: out of memory", path);
    }
    size_t n = 0;
    while (n < size) { /* a file that shrinks meanwhile is read as far as it goes */
        ssize_t got = read(fd, buf + n, (size_t)size - n);
        if (got < 0 && errno == EINTR) continue;
        if (got < 0) {
            int e = errno;
            close(fd);
            free(buf);
            return hc_seterr(eb, HC_ERR_IO, "%s: read error: %s", path, strerror(e));
        }
        if (got == 0) break;
        n += (size_t)got;
    }
    close(fd);
    buf[n] = 0;
    *out = buf;
    *len = n;
    return HC_OK;
}

int hc_read_file(const char *path, size_t max_bytes, char **out, size_t *len, hc_errbuf *eb) {
    return hc_read_file_in(path, NULL, max_bytes, out, len, eb);
}

int hc_json_seterr(hc_errbuf *eb, int err, const char *what, const json_error_t *je) {
    char reason[JSON_ERROR_TEXT_LENGTH];
    snprintf(reason, sizeof reason, "%s", je->text);
    char *near = strstr(reason, " near "); /* " near '<input>'" or " near end of file" */
    if (near) *near = 0;
    /* the lexer's messages that quote input bytes get a fixed text */
    static const char *const quoting[][2] = {
        {"unable to decode byte", "invalid UTF-8"},
        {"control character", "control character in a string"},
        {"invalid Unicode", "invalid Unicode escape"},
    };
    for (size_t i = 0; i < sizeof quoting / sizeof quoting[0]; i++)
        if (!strncmp(reason, quoting[i][0], strlen(quoting[i][0])))
            snprintf(reason, sizeof reason, "%s", quoting[i][1]);
    return hc_seterr(eb, err, "%s: invalid JSON at line %d column %d: %s", what, je->line,
                     je->column, reason);
}
