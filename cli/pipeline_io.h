/* pipeline_io.h: JSON-lines input for the pipeline commands (hllm embed / generate / cluster).
 *
 * Each input line is one JSON object: {"history": ["title", ...]} (oldest first), and for
 * generation also "ad": {"title": "...", "description": "..." | null}. A line that is not valid
 * becomes an error string naming what is wrong; the caller prints {"error": ...} for it and goes
 * on with the next line.
 */
#ifndef HC_CLI_PIPELINE_IO_H
#define HC_CLI_PIPELINE_IO_H

#include <jansson.h>
#include <stdio.h>

#include "creator/creator.h"

#define HC_CLI_MAX_HISTORY 100000 /* titles accepted per line (the model uses the last 50) */

typedef struct hc_cli_line {
    json_t *root;                /* owned; NULL when the line did not parse */
    char error[512];             /* non-empty when the line is invalid */
    const char **titles;         /* owned array; strings point into root */
    size_t *lens;
    int n_titles;
    const char *ad_title, *ad_desc; /* generation only; ad_desc NULL = missing/null */
    size_t ad_title_len, ad_desc_len;
} hc_cli_line;

#define HC_CLI_DEFAULT_MAX_LINE (4L << 20) /* --max-line-bytes default: 4 MiB */

enum {
    HC_CLI_LINE_EOF = -1,      /* end of input */
    HC_CLI_LINE_ERROR = -2,    /* a read error (errno says which); the input cannot go on */
    HC_CLI_LINE_TOO_LONG = -3, /* the line had more than max bytes; it was consumed and dropped */
};
/* Reads one line from f into *buf (grown as needed, NUL-terminated). Returns its length without
 * the newline (a trailing "\r" is dropped too) or one of HC_CLI_LINE_*. Memory stays bounded by
 * max: the bytes of a longer line are read and discarded, so the next call starts on the next
 * line. */
long hc_cli_read_line(FILE *f, char **buf, size_t *cap, size_t max);
/* Parses a line; need_ad: the "ad" object is required. Never fails hard: invalid lines get
 * ln->error set. */
void hc_cli_parse_line(hc_cli_line *ln, const char *text, size_t len, int need_ad);
void hc_cli_line_clear(hc_cli_line *ln);
/* Prints {"error": msg} and a newline. */
void hc_cli_print_error(FILE *out, const char *msg);
/* Prints obj compactly (UTF-8 kept) followed by a newline, then releases it. */
void hc_cli_print_json(FILE *out, json_t *obj);
/* A JSON array of floats. */
json_t *hc_cli_float_array(const float *v, int n);

#endif
