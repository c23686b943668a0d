/* match_head.h: the user-ad match head of HLLM-Creator (MODEL_SPEC §2 user_tower / item_tower /
 * cls_tower, §6.1 L_cls, §7 pruning), forward only, f32 on the host.
 *
 *   v_u = user_tower(U)       (cls_dim, H_c) · U      U: the projected user vector (or a centroid)
 *   v_a = item_tower(e_ad)    (cls_dim, H_i) · e_ad   e_ad: the item-LLM vector of the ad title
 *   logit = cls_tower([v_u, v_a])                    a 2-token sequence through the MLP-Mixer:
 *     per block  x += token_mix(LN(x)^T)^T;  x += channel_mix(LN(x))   (LN eps 1e-5, GELU erf)
 *     then LN, mean over the 2 tokens, mlp_head.0 (1, cls_dim) → one logit (sigmoid = p(match))
 *
 * Every size comes from the tensors: cls_dim from cls_tower.layer_norm.weight, the token hidden
 * size (8 in the reference) from token_forward.net.0.weight, the channel hidden size (6144) from
 * channel_mix.1.net.0.weight, depth from the mixer_blocks.{b} present; they are checked against
 * each other and against the towers. */
#ifndef HC_MATCH_HEAD_H
#define HC_MATCH_HEAD_H

#include "core/error.h"
#include "creator/creator.h"
#include "io/safetensors.h"

typedef struct hc_match_head hc_match_head;

typedef struct hc_match_dims {
    int cls_dim, token_hidden, channel_hidden, depth;
    int d_U, d_item; /* input widths: H_c (U), H_i (e_ad) */
} hc_match_dims;

/* From the package's tensors. No tensor of the head at all (neither tower nor any cls_tower.*):
 * *out = NULL and HC_OK (a package without the match head). Some present but missing others,
 * misshaped, or not fitting d_U (H_c) / d_item (H_i): an error naming the tensor. Weights are
 * converted to f32 and owned by the head (st may be closed afterwards). */
int hc_match_head_load(hc_match_head **out, const hc_safetensors *st, int d_U, int d_item,
                       hc_errbuf *eb);
void hc_match_head_free(hc_match_head *m);
hc_match_dims hc_match_head_dims(const hc_match_head *m);

/* logits[i] = cls_tower([user_tower(U[i]), item_tower(e_ad[i])]) for n >= 1 pairs; U (n, d_U),
 * e_ad (n, d_item), row-major. */
int hc_match_head_scores(const hc_match_head *m, const float *U, const float *e_ad, int n,
                         float *logits, hc_errbuf *eb);

/* ---- on the creator (the head loaded by hc_creator_load, creator.c) ------------------------- */

/* 1 when the package has the match head. */
int hc_creator_has_match_head(const hc_creator *c);
/* hc_match_head_scores with the creator's head; HC_ERR_NOTFOUND (message in eb) without one. The
 * item vector of an ad comes from hc_creator_embed_items over its title (as a history title). */
int hc_creator_match_scores(hc_creator *c, const float *U, const float *e_ad, int n,
                            float *logits, hc_errbuf *eb);

#endif
