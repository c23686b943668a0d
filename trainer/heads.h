/* heads.h: the auxiliary losses of HLLM-Creator (MODEL_SPEC §6.1: cls, align, recon) and the HLLM
 * next-item InfoNCE (§6.3), each one self-contained function over arrays, the flat parameter
 * table (optim.h) and, for align and recon, the decoder (the creative LLM, model/tmodel.h).
 *
 * Common contract of every loss function here:
 *   - *loss receives the (unweighted) loss value;
 *   - with backward != 0, weight * dloss/dθ is accumulated (+=) into t->g for the head's own
 *     parameters (and, for the decoder heads, every decoder parameter on the path), and
 *     weight * dloss/d(input) into the caller's input-gradient buffers (+=; any of them may be
 *     NULL when that gradient is not wanted); backward == 0 computes the loss only and touches
 *     no gradient;
 *   - a head that runs the decoder finishes its forward AND backward inside the call (the model
 *     keeps only its last forward's activations), so the caller may run the decoder for another
 *     loss before or after;
 *   - inputs are validated first (shapes against the table, ids, sizes); on error nothing is
 *     computed or accumulated and eb names what was wrong. Scratch is malloc'ed per call.
 *
 * Parameters are looked up by name in the table (the package's names, MODEL_SPEC §2); a 0-dim
 * tensor of the package (align_temp) is a 1-element parameter. The cls_tower sizes (dim,
 * token hidden, channel hidden, depth) are derived from the tensors and checked against each
 * other and against user_tower / item_tower.
 *
 * Differences from the reference, by design (see docs/TRAINING.md "Loss heads"):
 *   - cls and align take their negatives from the other rows of the batch (one process); the
 *     reference all-gathers them across ranks (cls: only from the other ranks). Both need n >= 2.
 *   - Sequences are packed segments with positions from 0 instead of left-padded rows with
 *     positions 0..len-1 over the padding: RoPE attention depends only on position differences,
 *     and padding is masked, so this is the same function (up to rounding). */
#ifndef HC_TRAIN_HEADS_H
#define HC_TRAIN_HEADS_H

#include <stdint.h>

#include "core/error.h"
#include "model/tmodel.h"
#include "ops/train_ops.h"
#include "optim.h"

/* Token rows: n rows, row i is ids[off_i .. off_i + lens[i]) with off_i = sum of earlier lens. */
typedef struct hc_tok_rows {
    int n;
    const int32_t *lens;
    const int32_t *ids;
} hc_tok_rows;

/* ---- cls: user-ad matching (§6.1 L_cls) ------------------------------------------------------ */

/* Number of negatives per row: min(cls_neg_num, n - 1) (0 when n < 2). */
int hc_cls_num_negatives(int n, int cls_neg_num);

/* Draws k distinct negatives per row for n rows: neg[i*k + j] in [0, n) \ {i}, distinct within
 * row i, uniformly (a partial Fisher-Yates over the n - 1 other rows). *rng is a splitmix64
 * state, advanced; the result is a function of (*rng, n, k) only. Errors: n < 2, k < 1 or
 * k > n - 1 (HC_ERR_INVAL). */
int hc_cls_pick_negatives(uint64_t *rng, int n, int k, int32_t *neg, hc_errbuf *eb);

/* L_cls over n rows: v_u = user_tower(U[i]) (U (n, H_c): the projected user vectors),
 * v_a = item_tower(e_ad[i]) (e_ad (n, H_i): the item-LLM vectors of each row's ad title); per row
 * the pair [v_u, v_a(i)] labelled 1 and the k pairs [v_u, v_a(neg[i*k + j])] labelled 0, each a
 * 2-token sequence through cls_tower (MLP-Mixer) to one logit; BCE with logits, mean over
 * n*(k+1). neg comes from hc_cls_pick_negatives (or the caller), k >= 0 (k == 0: positives
 * only). Gradients: cls_tower.*, user_tower.weight, item_tower.weight; dU (n, H_c), de_ad (n, H_i).
 * ops NULL = hc_train_ops_cpu(). n < 2 is HC_ERR_INVAL (no in-batch negative exists). */
int hc_cls_loss(hc_ptab *t, const hc_train_ops *ops, const float *U, const float *e_ad, int n,
                const int32_t *neg, int k, float weight, int backward, float *dU, float *de_ad,
                double *loss, hc_errbuf *eb);

/* Forward only, the same math: logits[i] = cls_tower([user_tower(U[i]), item_tower(e_ad[i])])
 * for n >= 1 pairs (the match score the daemon's pruning ranks ads by; sigmoid = probability). */
int hc_match_score(const hc_ptab *t, const float *U, const float *e_ad, int n, float *logits,
                   hc_errbuf *eb);

/* ---- align: semantic alignment (§6.1 L_align) ------------------------------------------------- */

/* L_align over n >= 2 rows: p_i = final-norm decoder hidden at a dec_emb_tokens slot appended to
 * profile row i (its first max_len tokens; max_len <= 0: all), one packed segment per row with
 * positions 0..L; a_i = user_profile_align_projector(u_i) (u (n, H_u): the unprojected user
 * vectors); L = 0.5 * (nce(a, p) + nce(p, a)) on the L2-normalized rows through
 * ops->infonce_sym with s = exp(clamp(align_temp, 0, ln 100)); the clamp is applied to the
 * parameter in place (no gradient), as the reference, also when backward == 0. Gradients:
 * user_profile_align_projector.weight, dec_emb_tokens, align_temp, the decoder's parameters;
 * du (n, H_u). */
int hc_align_loss(hc_ptab *t, hc_tmodel *dec, const float *u, int n, const hc_tok_rows *profile,
                  int max_len, float weight, int backward, float *du, double *loss,
                  hc_errbuf *eb);

/* ---- recon: user-interest decoding (§6.1 L_recon) --------------------------------------------- */

/* L_recon over n >= 1 rows: the decoder over [slot, prompt (n_prompt ids), profile_i[:R - 1],
 * eos] per row, one packed segment each (positions from 0), the slot's input replaced by
 * user_profile_projector(u_i); R = max_len - (1 + n_prompt) (max_len = MAX_USER_PROFILE_TEXT_LENGTH;
 * max_len <= 0: no cut), so a row is at most max_len long; R < 1 is HC_ERR_RANGE. Labels on the
 * profile tokens and the eos only, shifted (the logit at row t predicts row t + 1); token-mean CE
 * over all rows together (*n_tokens = labelled tokens, may be NULL). The decoder must have an
 * lm_head (or tied embeddings). Gradients: user_profile_projector.weight, the decoder's
 * parameters; du (n, H_u). */
int hc_recon_loss(hc_ptab *t, hc_tmodel *dec, const float *u, int n, const int32_t *prompt,
                  int n_prompt, const hc_tok_rows *profile, int32_t eos, int max_len, float weight,
                  int backward, float *du, double *loss, int *n_tokens, hc_errbuf *eb);

/* ---- next-item InfoNCE (§6.3, HLLM pre-training) ---------------------------------------------- */

/* The learnable scale's parameter name and initial value ln(1/0.07). */
#define HC_NEXTITEM_SCALE_NAME "nextitem_logit_scale"
/* Registers HC_NEXTITEM_SCALE_NAME (shape (1)) in t (before hc_ptab_alloc) */
int hc_nextitem_add_param(hc_ptab *t, hc_errbuf *eb);
/* Sets it to ln(1/0.07) (after hc_ptab_alloc). HC_ERR_NOTFOUND without the parameter. */
int hc_nextitem_init_param(hc_ptab *t, hc_errbuf *eb);

/* The reference layout: a user's sequence has S + 1 items, e (n, S + 1, H); the user LLM ran over
 * the first S and gave o (n, S, H); mask (n, S) marks the counted positions (reference:
 * logits[user_attention_mask]). For each (i, t) with mask != 0: x = o_it/|o_it|,
 * y = e_i,t+1/|e_i,t+1|, logits = s * [x.y, x.m_j for every negative j with y.m_j <= 0.99]
 * (m_j = neg_j/|neg_j|, neg (n_neg, H), shared by all positions as the all-gathered negatives),
 * CE with target 0, mean over the counted pairs (*n_pairs, may be NULL); s = exp(clamp(
 * nextitem_logit_scale, 0, ln 100)) with the clamp applied in place (no gradient). No counted
 * pair: loss 0, nothing accumulated. Gradients: the scale; d_o (n, S, H), d_e (n, S + 1, H; only
 * the target rows 1..S get gradient here, the caller adds the user-LLM input path), d_neg
 * (n_neg, H). ops NULL = CPU. */
int hc_nextitem_loss(hc_ptab *t, const hc_train_ops *ops, const float *o, const float *e,
                     const uint8_t *mask, int n, int S, int H, const float *neg, int n_neg,
                     float weight, int backward, float *d_o, float *d_e, float *d_neg,
                     double *loss, int *n_pairs, hc_errbuf *eb);

#endif
