/* progress.h: the trainer's per-step metrics file (JSON lines) and terminal progress line.
 *
 * Metrics file: one JSON object per optimizer step, appended (a resumed run continues the file):
 *   {"step":12,"lr":1.5e-05,"loss":0.91,"loss_creative":0.7,"loss_align":0.21,
 *    "grad_norm":3.2,"tokens_per_s":5120.4}
 * "loss" is the weighted total; each term is "loss_<name>" (names: [a-z0-9_], 1..31 bytes);
 * numbers are printed with %.9g (fp32 values round-trip); a non-finite value is written as null.
 * The line is flushed after every step so a killed run keeps every finished step.
 * Progress line (stderr, only when it is a terminal): "step 12/100  loss 0.91 (creative 0.7 ...)
 *   5120 tok/s  ETA 3m12s", rewritten in place with '\r'. */
#ifndef HC_TRAIN_PROGRESS_H
#define HC_TRAIN_PROGRESS_H

#include <stdint.h>
#include <stdio.h>

#include "core/error.h"

typedef struct hc_progress {
    FILE *metrics;   /* NULL: no metrics file */
    int tty;         /* stderr is a terminal */
    int64_t total;   /* optimizer steps of the whole run */
} hc_progress;

/* metrics_path NULL: no file. Errors (cannot open, e.g. a directory or a missing parent) are
 * HC_ERR_IO with the path and strerror. */
int hc_progress_open(hc_progress *p, const char *metrics_path, int64_t total, hc_errbuf *eb);
/* Writes the metrics line and, on a terminal, the progress line. elapsed_s and steps_done measure
 * the speed for the ETA (steps taken in this process). Bad term names are HC_ERR_INVAL; a failed
 * write (e.g. ENOSPC) is HC_ERR_IO. */
int hc_progress_step(hc_progress *p, int64_t step, double lr, double loss, int nterms,
                     const char *const *names, const double *terms, double grad_norm,
                     double tokens_per_s, double elapsed_s, int64_t steps_done, hc_errbuf *eb);
/* Formats the progress line (no '\r'/newline) into buf; returns its length. */
int hc_progress_format(char *buf, size_t n, int64_t step, int64_t total, double loss, int nterms,
                       const char *const *names, const double *terms, double tokens_per_s,
                       double eta_s);
/* For --resume from a checkpoint at `step`: cuts the metrics file at its first line whose "step"
 * is beyond `step`, or at a last line without its newline (a write torn by a kill), so the resumed
 * run's lines follow the checkpoint's without duplicates. Lines before the cut stay as they are
 * (only complete JSON objects with an integer "step" can stop it). One truncate(2): the file is
 * never rewritten. A missing file or one that is not a regular file is left alone. *cut_lines
 * (may be NULL) gets the number of lines removed (a torn one counts). HC_ERR_IO names the file. */
int hc_metrics_cut(const char *path, int64_t step, int64_t *cut_lines, hc_errbuf *eb);
/* Closes the file; HC_ERR_IO if the final flush/close failed. */
int hc_progress_close(hc_progress *p, hc_errbuf *eb);

#endif
