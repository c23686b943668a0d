/* package_out.h: writing a trained model package.
 *
 * The output is a copy of the input package directory (creator.json, the sub-models' config
 * directories, the tokenizers; every regular file and directory below it except the weights and
 * the cluster centroids) with the trainer's weights as one model.safetensors (creator_train.h,
 * hc_ctrain_save_weights) and creator.json rewritten: "weights" -> "model.safetensors" and
 * "cluster.centroids" -> null, because centroids computed from the old user vectors no longer
 * fit (recompute them with `hllm cluster`; per-user mode works without). The package is built in
 * OUT.tmp-<pid>/, each file fsynced, then renamed to OUT (an existing OUT is replaced only when
 * it is itself a package or an empty directory, never another kind of directory), so a crash
 * leaves either the old OUT or the new one. */
#ifndef HC_TRAIN_PACKAGE_OUT_H
#define HC_TRAIN_PACKAGE_OUT_H

#include <stdio.h>

#include "core/error.h"
#include "core/tensor.h"
#include "creator_train.h"

int hc_ctrain_write_package(const hc_ctrain *tr, const char *in_dir, const char *out_dir,
                            hc_dtype dtype, hc_errbuf *eb);

/* Before training: may `path` (named `what` in messages) be written? Its parent must be an
 * existing writable directory; path itself missing or a directory that may be replaced (a
 * package or empty; any_dir: any directory, as a checkpoint directory); not a symbolic link; and
 * not inside the input package in_dir (its copy would copy itself). */
int hc_package_out_check(const char *path, const char *in_dir, const char *what, int any_dir,
                         hc_errbuf *eb);

/* Before training: what a run killed while writing `out_dir` left beside it. OUT.tmp-<pid> (a
 * package being built) and OUT.old-<pid> (the package being replaced) whose process is gone, or
 * is no hllm-train (/proc/<pid>/comm; the id was reused), are removed, except that an
 * OUT.old-<pid> while OUT itself is missing (killed between its two renames) is renamed back to
 * OUT. Entries of a live hllm-train are left alone. One line per entry to `log` (NULL: none).
 * Returns the number of entries handled. */
int hc_package_out_clean(const char *out_dir, FILE *log);

#endif
