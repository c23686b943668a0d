/* creator_train.h: the HLLM-Creator pipeline as the trainer computes it (MODEL_SPEC §3-§6):
 * item LLM over every history title with its [item] slot -> user LLM over the item vectors, the
 * user prompt and the [user] slot -> U = user_projector(u) -> creative LLM over
 * prompt1 + slot(U) + prompt2 + response + eos, with the token-mean causal-LM loss L_creative on
 * the response and eos; and the backward of all of it, down to the item LLM's embeddings:
 * creative loss -> U -> projector -> user LLM -> every item vector of the history -> item LLM.
 *
 * All parameters of the package (the three LLMs under their prefixes, the slots, the projectors,
 * the training-only heads) live in one flat table (optim.h) in package order, so AdamW, the
 * checkpoints and the package export see one list. The package's config, tokenizers and prompt
 * ids come from an hc_creator loaded from the same directory (its inference weights are the
 * starting point; the trainer never changes them).
 *
 * Layouts (the engine's, so a trained package serves as it trained):
 *   item segment: title ids at positions max_item_tokens - L .. max_item_tokens - 1, then the slot
 *     at position max_item_tokens, its input replaced by item_emb_tokens; e = final-norm hidden at
 *     the slot.
 *   user segment: the kept items' vectors at positions (max_history - n) .. max_history - 1, the
 *     user prompt ids after them, the [user] slot (emb_tokens) last; u = final-norm hidden there.
 *   creative segment: positions 0..; labels: the logit at row t predicts row t + 1, labelled
 *     only where row t + 1 is a response token or the eos.
 *
 * Thread-safety: one thread at a time per trainer. */
#ifndef HC_TRAIN_CREATOR_TRAIN_H
#define HC_TRAIN_CREATOR_TRAIN_H

#include <stddef.h>
#include <stdint.h>

#include "core/error.h"
#include "creator/creator.h"
#include "model/tmodel.h"
#include "optim.h"

/* One tokenized training row (the data reader makes these). */
typedef struct hc_ctrain_row {
    int n_items;              /* history titles kept, oldest first, 0..max_history */
    const int32_t *item_lens; /* (n_items) item-tokenizer ids per title, 0..max_item_tokens */
    const int32_t *item_ids;  /* concatenated */
    const int32_t *prompt2;   /* creative ids of the rendered prompt2 */
    int n_prompt2;
    const int32_t *response; /* creative ids of the target title (the eos is appended) */
    int n_response;
    /* for the auxiliary losses (hc_ctrain_step) */
    const int32_t *ad_ids;      /* item-tokenizer ids of the ad title, <= max_item_tokens (cls) */
    int n_ad;
    const int32_t *profile_ids; /* creative ids of the user's profile JSON (recon, align) */
    int n_profile;
} hc_ctrain_row;

/* Weights of the loss terms (MODEL_SPEC §6.1: all 1 in the reference); 0 skips a term. */
typedef struct hc_ctrain_weights {
    float creative, recon, align, cls;
} hc_ctrain_weights;

/* Unweighted loss values of one micro-batch; total = the weighted sum. */
typedef struct hc_ctrain_losses {
    double creative, recon, align, cls, total;
    int n_creative, n_recon; /* labelled tokens */
} hc_ctrain_losses;

#define HC_CTRAIN_CLS_NEG 8 /* cls_neg_num of the reference */

typedef struct hc_ctrain_scratch hc_ctrain_scratch;

/* A package tensor the trainer does not use, written back unchanged. */
typedef struct hc_ctrain_keep {
    char *name;
    hc_dtype dtype;
    int n_dims;
    int64_t shape[HC_MAX_DIMS];
    void *data;
} hc_ctrain_keep;

typedef struct hc_ctrain {
    hc_creator *c;  /* config, tokenizers, prompt ids; its own weights are not trained */
    hc_backend *be; /* the creator's CPU backend */
    hc_ptab t;      /* every parameter of the package */
    hc_tmodel *item, *user, *creative;
    int p_item_slot, p_user_slot, p_proj; /* table indices of item_emb_tokens, emb_tokens,
                                             user_projector.weight */
    int32_t eos;           /* appended to every response: the package's first end-of-sequence id */
    int max_gen;           /* MAX_GEN_TEXT_LENGTH: longest creative sequence (default 4096) */
    unsigned char *scalar; /* (t.n) 1: the package stores this parameter as a 0-dim tensor */
    int32_t *profile_prompt; /* creative ids of the package's profile_prompt (NULL: none) */
    int n_profile_prompt;
    int max_profile;  /* MAX_USER_PROFILE_TEXT_LENGTH (1024) */
    int cls_neg_num;  /* negatives per user for L_cls (8) */
    uint64_t cls_rng; /* the negatives' generator state (checkpointed by the caller) */
    hc_ctrain_keep *keep; /* (n_keep) LLM tensors no model uses (e.g. an item lm_head) */
    int n_keep;
    hc_ctrain_scratch *s;
} hc_ctrain;

/* Loads the package at pkg_dir: hc_creator (CPU backend, n_threads) for config and tokenizers,
 * and every tensor of its weights into the table as f32 master weights (each parameter keeps
 * the dtype it is stored in, for the export). The package must have a creative LLM. */
int hc_ctrain_create(hc_ctrain **out, const char *pkg_dir, int n_threads, hc_errbuf *eb);
void hc_ctrain_free(hc_ctrain *tr);

/* Checks a row against the package's limits (history length, title lengths, vocabularies,
 * sequence length against max_gen; a response that does not fit is cut, as the reference cuts
 * it to R_max - 1, so only a prompt over max_gen is an error). Message names the field. */
int hc_ctrain_check_row(const hc_ctrain *tr, const hc_ctrain_row *r, hc_errbuf *eb);

/* Forward of the embedding part only: u (n, H_u) and U (n, H_c), either may be NULL. */
int hc_ctrain_embed(hc_ctrain *tr, const hc_ctrain_row *rows, int n, float *u, float *U,
                    hc_errbuf *eb);

/* The creative loss over a micro-batch of n rows, forward and backward: accumulates
 * scale * dL/dθ into tr->t.g for every parameter on the path (scale = 1 / accumulation steps)
 * and returns the token-mean loss in *loss and the labelled token count in *n_tokens.
 * backward == 0: loss only, nothing accumulated. Rows are checked first (nothing is computed if
 * one is bad; the message names its index). */
int hc_ctrain_creative(hc_ctrain *tr, const hc_ctrain_row *rows, int n, float scale, int backward,
                       double *loss, int *n_tokens, hc_errbuf *eb);

/* One micro-batch of the weighted HLLM-Creator loss (MODEL_SPEC §6.1), forward and (backward != 0)
 * backward: L_creative as hc_ctrain_creative; L_cls on U = user_projector(u) and the item-LLM
 * vector of each row's ad title (packed into the same item forward), with
 * min(cls_neg_num, n - 1) negatives per row drawn from the other rows (trainer/heads.h; the
 * reference gathers them across ranks); L_recon and L_align on the unprojected u through the
 * decoder (the creative LLM), from each row's profile ids. Their gradients meet in dU / du
 * before the user and item LLMs' backward, so every term trains the whole chain. Gradients are
 * weight * scale * dL/dθ; losses in *out are unweighted. align and cls need n >= 2, recon the
 * package's profile_prompt. */
int hc_ctrain_step(hc_ctrain *tr, const hc_ctrain_row *rows, int n, const hc_ctrain_weights *w,
                   float scale, int backward, hc_ctrain_losses *out, hc_errbuf *eb);

/* HLLM next-item pre-training of the item and user LLMs (MODEL_SPEC §6.3), forward and backward:
 * each row's history (at least 2 items) through the item LLM (the serving layout, [item] slot),
 * the user LLM over the first m - 1 item vectors only (no prompt, no [user] slot; positions
 * 0..), and the InfoNCE of heads.h between each output and the next item's vector with the
 * learnable nextitem_logit_scale (added to the table, ln(1/0.07), when the package lacks it).
 * Negatives: every item vector of the micro-batch (the reference draws random catalog items and
 * all-gathers them across ranks). Only the rows' item fields are used. */
int hc_ctrain_nextitem(hc_ctrain *tr, const hc_ctrain_row *rows, int n, float scale, int backward,
                       double *loss, int *n_pairs, hc_errbuf *eb);

/* Writes every parameter as a single safetensors file at path, each in the dtype it was stored
 * in (bf16/f16 rounded to nearest even) unless dtype is HC_DTYPE_F32 / HC_DTYPE_BF16 /
 * HC_DTYPE_F16 (all in that). Names and shapes are the package's, so the result replaces the
 * package's model.safetensors. */
int hc_ctrain_save_weights(const hc_ctrain *tr, const char *path, hc_dtype dtype, hc_errbuf *eb);

#endif
