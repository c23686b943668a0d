/* safetensors.h: read-only access to Hugging Face safetensors checkpoints, mmap'ed.
 *
 * Opens a single `.safetensors` file, or a model directory holding either `model.safetensors` or
 * a sharded set described by `model.safetensors.index.json` (weight_map: tensor name -> shard).
 * Every header is validated: JSON well-formed, dtypes known (F32, BF16, F16, I32; any other
 * safetensors dtype, or more than HC_MAX_DIMS dims, is HC_ERR_UNSUPPORTED naming the tensor),
 * shapes consistent with the byte ranges, ranges inside the file and not overlapping, no tensor
 * in two shards, index entries present in the named shard. Corrupt, truncated or mismatched
 * files yield HC_ERR_FORMAT (HC_ERR_NOTFOUND for a missing file or shard, HC_ERR_IO for read
 * failures) with a one-line message in eb naming the file and tensor; never a crash.
 * Tensors present in a shard but absent from weight_map are kept (transformers loads them too).
 *
 * Thread-safety: an opened hc_safetensors is immutable; lookups are safe from any thread.
 * Lifetime: tensor data pointers stay valid until hc_st_close().
 */
#ifndef HC_SAFETENSORS_H
#define HC_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

#include "core/error.h"
#include "core/tensor.h"

typedef struct hc_st_tensor {
    const char *name;
    hc_dtype dtype;
    int n_dims;                   /* 0..HC_MAX_DIMS (a 0-dim tensor is a scalar) */
    int64_t shape[HC_MAX_DIMS];
    const void *data;             /* into the mmap'ed file (may be unaligned for F32) */
    size_t nbytes;
    int shard;                    /* index of the file it came from */
} hc_st_tensor;

typedef struct hc_safetensors hc_safetensors;

/* path: a .safetensors file, a model.safetensors.index.json file, or a directory. Files are
 * opened without blocking and must be regular files (a FIFO or directory in their place is
 * HC_ERR_FORMAT naming it). */
int hc_st_open(hc_safetensors **out, const char *path, hc_errbuf *eb);
/* As hc_st_open, confined: every file opened (index, shards) must resolve inside the canonical
 * directory fs_root (fileio.h), else HC_ERR_INVAL naming it. fs_root NULL: anywhere. */
int hc_st_open_in(hc_safetensors **out, const char *path, const char *fs_root, hc_errbuf *eb);
void hc_st_close(hc_safetensors *st);

size_t hc_st_count(const hc_safetensors *st);
const hc_st_tensor *hc_st_get(const hc_safetensors *st, size_t i); /* sorted by name */
const hc_st_tensor *hc_st_find(const hc_safetensors *st, const char *name); /* NULL if absent */
size_t hc_st_n_shards(const hc_safetensors *st);
const char *hc_st_shard_path(const hc_safetensors *st, size_t i);

/* Writes a single-file safetensors (used by tests, tools and the trainer): tensors are given as
 * host arrays. The file is written as path.tmp-PID, fsynced and renamed over path, so a failure
 * (full disk, a killed process) leaves an existing path as it was; a path that exists and is not
 * a regular file (a device such as /dev/full, a FIFO, a directory) is refused (HC_ERR_INVAL). */
typedef struct hc_st_write_item {
    const char *name;
    hc_dtype dtype;
    int n_dims;
    int64_t shape[HC_MAX_DIMS];
    const void *data;
} hc_st_write_item;
int hc_st_write(const char *path, const hc_st_write_item *items, size_t n, hc_errbuf *eb);

#endif
