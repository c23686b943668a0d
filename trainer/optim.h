/* optim.h: the trainer's flat parameter table, AdamW (torch.optim.AdamW semantics, fp32), the
 * cosine-with-linear-warmup schedule (transformers' get_cosine_schedule_with_warmup) and gradient
 * clipping by global norm (torch.nn.utils.clip_grad_norm_).
 *
 * Layout: every parameter is a contiguous range [offset, offset + numel) of one fp32 master buffer
 * `w`; the gradient buffer `g` and the AdamW moments `m`, `v` have the same layout. Parameters are
 * placed in the order they are added, so a layout is identified by its (name, shape) list. A rank
 * of a sharded run owns a range [lo, hi) of the flat index space (hc_ptab_shard splits it into
 * near-equal pieces at element granularity; AdamW is elementwise, so hc_adamw_step_range updates
 * exactly one shard and the union of all shards equals the unsharded step bit for bit; only the
 * global grad norm needs a sum across ranks of hc_grad_sumsq_range).
 *
 * Determinism: every loop runs in index order on one thread and sums in double, so results are a
 * function of the inputs only. */
#ifndef HC_TRAIN_OPTIM_H
#define HC_TRAIN_OPTIM_H

#include <stddef.h>
#include <stdint.h>

#include "core/error.h"

#define HC_PTAB_MAX_DIMS 4
#define HC_PTAB_NAME_MAX 160

typedef struct hc_param {
    char name[HC_PTAB_NAME_MAX];
    size_t offset;                  /* first element in the flat buffers */
    size_t numel;
    int ndim;
    int64_t shape[HC_PTAB_MAX_DIMS];
    int stored_dtype;               /* dtype of the tensor in the package (engine's dtype code) */
} hc_param;

typedef struct hc_ptab {
    hc_param *params;
    int n, cap;
    size_t total;                   /* elements over all parameters */
    float *w, *g, *m, *v;           /* NULL until hc_ptab_alloc */
} hc_ptab;

void hc_ptab_init(hc_ptab *t);
void hc_ptab_free(hc_ptab *t);
/* Appends a parameter (before hc_ptab_alloc). Duplicate names, ndim outside 1..4 or a
 * non-positive dimension are HC_ERR_INVAL with a message. */
int hc_ptab_add(hc_ptab *t, const char *name, int ndim, const int64_t *shape, int stored_dtype,
                hc_errbuf *eb);
/* Allocates w, g, m, v (zeroed, 64-byte aligned). */
int hc_ptab_alloc(hc_ptab *t, hc_errbuf *eb);
/* Index of the parameter called name, or -1. */
int hc_ptab_find(const hc_ptab *t, const char *name);
/* Shard r of nranks: [*lo, *hi) with sizes differing by at most one element. */
void hc_ptab_shard(const hc_ptab *t, int r, int nranks, size_t *lo, size_t *hi);
/* 64-bit FNV-1a over the (name, shape) list: equal layouts have equal fingerprints. */
uint64_t hc_ptab_fingerprint(const hc_ptab *t);

typedef struct hc_adamw_cfg {
    double lr;                      /* peak learning rate (reference 2e-5) */
    double beta1, beta2;            /* 0.9, 0.999 */
    double eps;                     /* 1e-8 */
    double weight_decay;            /* 0.01, on every parameter as the reference */
} hc_adamw_cfg;

/* The reference's settings (MODEL_SPEC §6.2). */
hc_adamw_cfg hc_adamw_default(void);

/* One AdamW step over elements [lo, hi) with learning rate lr at optimizer step `step` (1-based,
 * the value torch's state['step'] has after its increment). Exactly torch's single-tensor fp32
 * update: w *= 1 - lr*wd; m = lerp(m, g, 1-b1); v = b2*v + (1-b2)*g*g;
 * w -= (lr / (1-b1^t)) * m / (sqrt(v) / sqrt(1-b2^t) + eps). */
void hc_adamw_step_range(hc_ptab *t, const hc_adamw_cfg *c, double lr, int64_t step, size_t lo,
                         size_t hi);

/* Learning rate at scheduler position `step` (0-based, the number of optimizer steps already
 * taken) of transformers' get_cosine_schedule_with_warmup(num_cycles=0.5): linear ramp from 0 over
 * `warmup` steps (a float, as the reference's 0.1*total), then 0.5*(1+cos(pi*progress)). */
double hc_cosine_lr(double peak, int64_t step, double warmup, int64_t total);

/* Sum of g^2 over [lo, hi), in double. */
double hc_grad_sumsq_range(const hc_ptab *t, size_t lo, size_t hi);
/* torch's clip_grad_norm_(max_norm): norm = sqrt(sumsq); coef = min(max_norm/(norm+1e-6), 1);
 * g *= coef. Returns the norm before clipping. max_norm <= 0 disables clipping (norm still
 * returned). */
double hc_clip_grad_norm(hc_ptab *t, double max_norm);
/* g *= s (gradient accumulation: scale the sum of micro-batch gradients by 1/accum). */
void hc_grad_scale(hc_ptab *t, float s);
void hc_grad_zero(hc_ptab *t);

#endif
