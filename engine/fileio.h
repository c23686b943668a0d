/* fileio.h: reading whole (small) files: configs, index files, tokenizer.json. */
#ifndef HC_FILEIO_H
#define HC_FILEIO_H

#include <stddef.h>

#include "error.h"

/* Reads all of path into a malloc'ed buffer with a NUL after the last byte (*len excludes it).
 * Files larger than max_bytes are refused (HC_ERR_FORMAT). A missing file is HC_ERR_NOTFOUND,
 * other open/read failures HC_ERR_IO; eb names the path and the reason. */
int hc_read_file(const char *path, size_t max_bytes, char **out, size_t *len, hc_errbuf *eb);

#endif
