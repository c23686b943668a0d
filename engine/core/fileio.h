/* fileio.h: opening the files a model is loaded from (configs, index files, tokenizer.json,
 * safetensors shards, centroids) and reading small ones whole, with clear errors.
 *
 * Every loader in the engine opens user-supplied paths through hc_open_regular: it never blocks
 * (a FIFO in place of a file would otherwise wait for a writer forever) and refuses anything but
 * a regular file, naming the path ("x: is a FIFO, not a regular file", "x: is a directory").
 *
 * Confinement: a non-NULL `root` is a canonical directory (hc_path_canonical). A path that
 * resolves outside it, symlinks followed, is refused (HC_ERR_INVAL), so a model package cannot
 * make the engine read files elsewhere. NULL means anywhere.
 *
 * Thread-safe (no shared state).
 */
#ifndef HC_FILEIO_H
#define HC_FILEIO_H

#include <stddef.h>
#include <stdint.h>

#include "core/error.h"

/* Opens path read-only (close-on-exec, blocking mode) into *fd; *size is its length. Errors name
 * the path: HC_ERR_NOTFOUND (missing), HC_ERR_IO (permission, symlink loop, other failures),
 * HC_ERR_FORMAT (a FIFO, directory, device or socket), HC_ERR_INVAL (outside root). */
int hc_open_regular(const char *path, const char *root, int *fd, uint64_t *size, hc_errbuf *eb);

/* Reads all of path into a malloc'ed buffer with a NUL after the last byte (*len excludes it).
 * Files larger than max_bytes are refused (HC_ERR_FORMAT); other errors as hc_open_regular. */
int hc_read_file(const char *path, size_t max_bytes, char **out, size_t *len, hc_errbuf *eb);
int hc_read_file_in(const char *path, const char *root, size_t max_bytes, char **out, size_t *len,
                    hc_errbuf *eb);

/* realpath(path) as a malloc'ed string, or NULL with errno set. */
char *hc_path_canonical(const char *path);
/* HC_OK if path resolves inside root (or root is NULL, or path does not resolve: a missing path
 * is left for the open to report). Otherwise HC_ERR_INVAL with "<what>: ... outside ..." in eb. */
int hc_path_check_inside(const char *path, const char *root, const char *what, hc_errbuf *eb);

/* What a non-regular file is, for messages: "a FIFO", "a directory", ...; NULL for a regular
 * file. `mode` is a struct stat st_mode. */
const char *hc_file_kind(unsigned mode);

/* A JSON parse error as one line: "<what>: invalid JSON at line L column C: <reason>". The reason
 * is jansson's message without the text it quotes from the input ("near '...'", byte values),
 * so an error never echoes the bytes of a file that is not what it was supposed to be. */
struct json_error_t;
int hc_json_seterr(hc_errbuf *eb, int err, const char *what, const struct json_error_t *je);

#endif
