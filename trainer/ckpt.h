/* ckpt.h: the trainer's checkpoints: crash-safe save, newest-complete load, keep-K pruning.
 *
 * Layout: DIR/step-NNNNNNNN/ (the optimizer step, 8 digits or more) holding
 *   model.safetensors  the weights as model-package tensors: the table's names, dtype each
 *                      parameter's stored dtype (F32, BF16 or F16; an I32 stored dtype is saved
 *                      as F32) or the one given in hc_ckpt_params.weights_dtype, narrowed from the
 *                      fp32 master weights by round-to-nearest-even (hc_convert, as torch);
 *   optim.safetensors  fp32 "master.<name>", "exp_avg.<name>", "exp_avg_sq.<name>" per parameter
 *                      (w, m, v; torch's AdamW state names);
 *   trainer.json       format "hllm-train-checkpoint", version, step, epoch, data cursor, RNG
 *                      words (uint64 as decimal strings), the ptab fingerprint (decimal string)
 *                      and its (name, shape, dtype) list, the AdamW config, the schedule, and the
 *                      byte size of both safetensors files;
 * and DIR/latest, one line "step-NNNNNNNN" naming the newest (for people and tools; loading does
 * not trust it).
 *
 * Atomicity: a save writes DIR/.tmp-step-N/, fsyncs every file and the directory, renames it to
 * step-N and fsyncs DIR; only then it rewrites latest (temp file, fsync, rename, fsync DIR) and
 * prunes. A re-save of an existing step moves the old directory to .old-step-N first (a crash in
 * between leaves it loadable). Pruned directories are renamed to .del-step-N before their files
 * are removed. So at every instant the previous checkpoints are complete, whatever kills the
 * process (tests/cli/train_ckpt_kill.sh kills a saving loop with SIGKILL). A failed save (full
 * disk, permission, DIR not a directory) returns a clear error, removes its temp directory and
 * never touches an existing checkpoint.
 *
 * Loading: hc_ckpt_load_latest scans DIR for step-N (and .old-step-N) directories, newest step
 * first, skips incomplete ones (no trainer.json, a safetensors file missing or of another size
 * than trainer.json records) and loads the first complete one. A checkpoint of another format
 * version or of another parameter layout is refused (HC_ERR_MISMATCH / HC_ERR_UNSUPPORTED) with a
 * message naming the first differing parameter; nothing in the table is changed unless the whole
 * load succeeds. w, m, v, step, epoch, cursor, RNG, AdamW and schedule come back bit for bit.
 *
 * Memory: optim.safetensors is written straight from the table's buffers; model.safetensors
 * needs one converted copy of the parameters whose saved dtype is not F32.
 *
 * Thread-safety: none; one saver per DIR. */
#ifndef HC_TRAIN_CKPT_H
#define HC_TRAIN_CKPT_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "core/error.h"
#include "core/tensor.h"
#include "data.h"
#include "optim.h"

#define HC_CKPT_VERSION 1
#define HC_CKPT_MAX_RNG 8
#define HC_CKPT_RUN_MAX 4096

typedef struct hc_ckpt_state {
    int64_t step; /* optimizer steps taken */
    int64_t epoch;
    hc_data_cursor cursor; /* the data reader's next row */
    int n_rng;             /* 0..HC_CKPT_MAX_RNG words used */
    uint64_t rng[HC_CKPT_MAX_RNG];
    hc_adamw_cfg adamw;
    double peak_lr; /* schedule: hc_cosine_lr(peak_lr, step, warmup, total_steps) */
    double warmup;
    int64_t total_steps;
    /* the run's settings as a compact JSON object (trainer.json "run"; "" = none), for --resume
     * to compare with its own; written and read back as is (an older checkpoint has none) */
    char run[HC_CKPT_RUN_MAX];
} hc_ckpt_state;

typedef struct hc_ckpt_params {
    int keep;               /* keep the newest `keep` checkpoints, delete older (0: all) */
    hc_dtype weights_dtype; /* model.safetensors dtype: HC_DTYPE_AS_STORED (each parameter's
                               stored dtype), HC_DTYPE_F32, HC_DTYPE_BF16 or HC_DTYPE_F16 */
} hc_ckpt_params;

hc_ckpt_params hc_ckpt_default_params(void); /* keep 3, as stored */

/* What a load found. */
typedef struct hc_ckpt_info {
    char path[1200];       /* the checkpoint directory loaded */
    int skipped;           /* newer incomplete directories passed over */
    char skipped_why[512]; /* the first one's reason */
} hc_ckpt_info;

/* Saves table t (w, m, v allocated) and st as DIR/step-<st->step>. DIR is created if missing
 * (its parent must exist). p NULL: defaults. path_out (may be NULL) gets the directory written. */
int hc_ckpt_save(const char *dir, const hc_ptab *t, const hc_ckpt_state *st,
                 const hc_ckpt_params *p, char *path_out, size_t path_n, hc_errbuf *eb);

/* Loads the newest complete checkpoint under dir into t (same layout, allocated) and st.
 * HC_ERR_NOTFOUND (with a message) when dir has none; info may be NULL. */
int hc_ckpt_load_latest(const char *dir, hc_ptab *t, hc_ckpt_state *st, hc_ckpt_info *info,
                        hc_errbuf *eb);
/* Loads one checkpoint directory (DIR/step-N). An incomplete one is HC_ERR_FORMAT. */
int hc_ckpt_load(const char *ckpt_dir, hc_ptab *t, hc_ckpt_state *st, hc_errbuf *eb);

/* One trainer per checkpoint directory: creates DIR if missing (its parent must exist) and takes
 * an exclusive flock(2) on DIR/.lock (holding this process's id, for the message), kept until the
 * process ends (*fd stays open). Another live holder is HC_ERR_AGAIN naming its process id. */
int hc_ckpt_lock(const char *dir, int *fd, hc_errbuf *eb);

/* With the lock held: removes what an interrupted save left in DIR (.tmp-step-N, .del-step-N,
 * .latest.tmp, and .old-step-N where step-N exists: an .old-step-N without it is the newest
 * complete copy of that step and is kept), printing one line per entry to `log` (NULL: none).
 * Returns the number of entries removed. */
int hc_ckpt_clean(const char *dir, FILE *log);

#endif
