/* tmodel.h: the trainer's decoder model (Llama / Qwen3, the same math as engine/model/llm.c):
 * one forward over a packed batch that saves what its backward needs, and the backward beside it,
 * assembled from the per-op table (ops/train_ops.h). Weights and gradients live in the caller's
 * flat parameter table (optim.h) under the Hugging Face names, so a checkpoint or a package's
 * "creative_llm." tensors map 1:1 and the engine's hc_llm_load_from reads what
 * hc_tmodel_export writes.
 *
 * Use: hc_tmodel_add_params (registers the parameters, before hc_ptab_alloc), hc_ptab_alloc,
 * hc_tmodel_bind, hc_tmodel_load (or any initialization of t->w), then per micro-batch
 * hc_tmodel_forward, a loss giving d(final hidden) (hc_tmodel_lm_loss or the caller's own),
 * hc_tmodel_backward. Gradients accumulate (+=) into t->g as the ops do; the caller zeroes them
 * once per optimizer step.
 *
 * Saved activations: per layer the layer input, both normed inputs and their rstd, q/k before the
 * Qwen3 q/k norm and their rstd, q, k (after RoPE), v, the attention output and its log-sum-exp,
 * the mid-layer residual, gate, up and silu(gate)*up; plus the final residual, its rstd and the
 * final-norm hidden. With m->checkpoint set (activation checkpointing), only each layer's input
 * is kept per layer and one layer's worth of the rest is shared: the backward recomputes each
 * layer's forward from its input first (one more forward's compute; the gradients are bit for
 * bit the same). All in one scratch arena owned by the model, grown on demand: a forward of a
 * batch no larger than an earlier one, in the same checkpoint mode, allocates nothing (the op
 * table's attention may use its own temporary buffer).
 *
 * Thread-safety: one thread at a time per model. */
#ifndef HC_TRAIN_TMODEL_H
#define HC_TRAIN_TMODEL_H

#include <stddef.h>
#include <stdint.h>

#include "core/error.h"
#include "io/hfconfig.h"
#include "io/safetensors.h"
#include "ops/train_ops.h"
#include "optim.h"

/* A packed batch: T rows; row t has input ids[t] (a token id, or -1 at an injected slot row),
 * RoPE position pos[t] >= 0 and segment seg[t] (starting at 0, each row equal to or one more
 * than the previous: contiguous runs; NULL = one segment). Rows attend causally within their
 * segment only. inject (n_inject, C) replaces rows inject_rows[k] (distinct). Every row with id -1
 * must be injected and every injected row must have id -1 (so no embedding gradient goes to a
 * row whose embedding was replaced). */
typedef struct hc_tbatch {
    int T;
    const int32_t *ids;
    const int32_t *pos;
    const int32_t *seg;
    int n_inject;
    const int32_t *inject_rows;
    const float *inject;
} hc_tbatch;

/* Parameters of one layer, in registration order. */
enum {
    HC_TM_ATTN_NORM = 0,
    HC_TM_WQ,
    HC_TM_WK,
    HC_TM_WV,
    HC_TM_WO,
    HC_TM_Q_NORM, /* Qwen3 only */
    HC_TM_K_NORM, /* Qwen3 only */
    HC_TM_MLP_NORM,
    HC_TM_W_GATE,
    HC_TM_W_UP,
    HC_TM_W_DOWN,
    HC_TM_LAYER_NP
};
/* Model-level parameters, after the layers' (index n_layers * HC_TM_LAYER_NP + k). */
enum { HC_TM_EMBED = 0, HC_TM_NORM, HC_TM_LM_HEAD, HC_TM_GLOBAL_NP };

typedef struct hc_tmodel_scratch hc_tmodel_scratch;

typedef struct hc_tmodel {
    hc_llm_config cfg;
    const hc_train_ops *ops;  /* the math; hc_train_ops_cpu() by default, swappable */
    char prefix[64];          /* parameter-name prefix in the table */
    int has_lm_head;          /* an lm_head.weight parameter exists (untied and with_lm_head) */
    int n_slots;              /* n_layers * HC_TM_LAYER_NP + HC_TM_GLOBAL_NP */
    int *pidx;                /* (n_slots) index into the table's params, -1 = none */
    float **w, **g;           /* (n_slots) bound pointers into t->w / t->g (NULL = none) */
    hc_ptab *t;               /* the bound table (not owned) */
    int lm_chunk;             /* vocabulary chunk of the fused lm_head + CE (default 4096) */
    int checkpoint;           /* activation checkpointing (default 0); read by each forward */
    int64_t n_grow;           /* times the scratch arena was (re)allocated */
    hc_tmodel_scratch *s;
} hc_tmodel;

/* Creates the model for cfg and registers its parameters in t (which must not be allocated yet)
 * as prefix + HF name, in the order model.embed_tokens.weight, then per layer
 * input_layernorm, self_attn.{q,k,v,o}_proj, [self_attn.{q,k}_norm], post_attention_layernorm,
 * mlp.{gate,up,down}_proj (".weight"), then model.norm.weight and lm_head.weight (only when the
 * embeddings are not tied and with_lm_head != 0). stored_dtype is cfg->torch_dtype. Errors:
 * HC_ERR_INVAL for a bad config (non-positive sizes, heads not a multiple of kv heads, odd
 * head_dim) or an allocated table, name clashes from hc_ptab_add. */
int hc_tmodel_add_params(hc_tmodel **out, const hc_llm_config *cfg, hc_ptab *t, const char *prefix,
                         int with_lm_head, hc_errbuf *eb);
/* Points the model at t's buffers (after hc_ptab_alloc; again after any reallocation). */
int hc_tmodel_bind(hc_tmodel *m, hc_ptab *t, hc_errbuf *eb);
/* Copies the checkpoint tensors prefix + HF name into the master weights (F32/BF16/F16 upcast
 * exactly) and records each one's dtype as the parameter's stored_dtype. A missing tensor is
 * HC_ERR_NOTFOUND naming it; a shape other than the config implies is HC_ERR_MISMATCH naming the
 * tensor and both shapes; an integer tensor is HC_ERR_UNSUPPORTED. A tied model ignores a stored
 * lm_head.weight. */
int hc_tmodel_load(hc_tmodel *m, const hc_safetensors *st, const char *prefix, hc_errbuf *eb);
void hc_tmodel_free(hc_tmodel *m);

/* Forward over b; the activations stay in the model until the next forward. Errors (nothing is
 * computed): HC_ERR_INVAL for an unbound model or malformed batch layout, HC_ERR_RANGE for ids,
 * positions or injected rows out of range, HC_ERR_NOMEM; the message names the row. */
int hc_tmodel_forward(hc_tmodel *m, const hc_tbatch *b, hc_errbuf *eb);
/* The final-norm hidden states (T, C) of the last forward (NULL before any). */
const float *hc_tmodel_hidden(const hc_tmodel *m);
/* Rows of the last forward (0 before any). */
int hc_tmodel_rows(const hc_tmodel *m);
/* Bytes of the activation arena now allocated (saved activations and backward workspace). */
size_t hc_tmodel_scratch_bytes(const hc_tmodel *m);

/* Token-mean cross-entropy of the lm_head logits (tied: the embedding matrix) at the rows of the
 * last forward with labels[t] != -100 (labels has T entries), through ops->lmhead_ce in
 * vocabulary chunks of m->lm_chunk rows. With dhidden != NULL, accumulates dloss * gradient into
 * dhidden (T, C) and into the lm_head (or, tied, embedding) gradient; dhidden == NULL computes
 * the loss only and accumulates nothing. Returns the loss (0 with no labelled row), or NAN when
 * there is no forward, the model has no lm_head (untied, registered with with_lm_head == 0), or
 * a label is outside [0, vocab) (nothing is accumulated then). */
double hc_tmodel_lm_loss(hc_tmodel *m, const int32_t *labels, float dloss, float *dhidden);

/* Backward of the last forward from dhidden = dL/d(final hidden) (T, C): accumulates every
 * parameter gradient into t->g and, if dinject != NULL, dL/d(inject) into dinject
 * (n_inject, C) (+=). HC_ERR_INVAL without a forward. */
int hc_tmodel_backward(hc_tmodel *m, const float *dhidden, float *dinject, hc_errbuf *eb);

/* The weights as safetensors items named as in the table (prefix + HF name), converted to dtype
 * (HC_DTYPE_F32, HC_DTYPE_BF16 / HC_DTYPE_F16 rounded to nearest even, or HC_DTYPE_AS_STORED:
 * each parameter's stored_dtype). The items and their name/data buffers are malloc'ed: release
 * with hc_tmodel_export_free. Pass them to hc_st_write. */
int hc_tmodel_export(const hc_tmodel *m, const hc_ptab *t, hc_dtype dtype, hc_st_write_item **items,
                     size_t *n, hc_errbuf *eb);
void hc_tmodel_export_free(hc_st_write_item *items, size_t n);
/* hc_tmodel_export + hc_st_write to path. */
int hc_tmodel_save(const hc_tmodel *m, const hc_ptab *t, hc_dtype dtype, const char *path,
                   hc_errbuf *eb);

#endif
