/* llm.h: one decoder-only transformer for the Llama and Qwen3 families (Qwen3 = Llama + per-head
 * q/k RMSNorm before RoPE), with a single forward over a packed batch.
 *
 * Packed batch: a flat list of tokens; each has an input (a token id, or an injected embedding
 * vector), an explicit RoPE position and a segment index. Tokens attend causally, only within
 * their own segment. Without a KV cache a segment is self-contained (the item and user LLMs of
 * HLLM-Creator: many short segments, arbitrary positions). With a cache, segment s continues KV
 * sequence seq_ids[s]: its tokens attend to everything that sequence already holds, and their
 * K/V are appended to it (prefill and decode are the same call).
 *
 * Ownership: the model keeps its weights in the backend's memory; `be` must outlive it.
 * Thread-safety: one thread at a time per model (the forward reuses scratch buffers).
 */
#ifndef HC_LLM_H
#define HC_LLM_H

#include <stdint.h>

#include "backend/backend.h"
#include "io/hfconfig.h"
#include "model/kv_cache.h"
#include "io/safetensors.h"

typedef struct hc_llm_layer {
    hc_tensor attn_norm; /* (n_embd) F32 */
    hc_tensor wq;        /* (n_heads * head_dim, n_embd) */
    hc_tensor wk;        /* (n_kv_heads * head_dim, n_embd) */
    hc_tensor wv;        /* (n_kv_heads * head_dim, n_embd) */
    hc_tensor wo;        /* (n_embd, n_heads * head_dim) */
    hc_tensor q_norm;    /* (head_dim) F32, Qwen3 only */
    hc_tensor k_norm;    /* (head_dim) F32, Qwen3 only */
    hc_tensor mlp_norm;  /* (n_embd) F32 */
    hc_tensor w_gate;    /* (n_ff, n_embd) */
    hc_tensor w_up;      /* (n_ff, n_embd) */
    hc_tensor w_down;    /* (n_embd, n_ff) */
} hc_llm_layer;

typedef struct hc_llm_params {
    /* In-memory dtype of the matrices: HC_DTYPE_AS_STORED (the default) keeps each as stored in
     * the checkpoint (BF16 stays BF16, computed in f32), HC_DTYPE_F32 widens everything at load,
     * HC_DTYPE_BF16/HC_DTYPE_F16 narrow (round to nearest even). Any other value fails the load
     * as hc_weight_dtype_check (weights.h) says: HC_ERR_INVAL, or HC_ERR_UNSUPPORTED for I32. */
    hc_dtype weight_dtype;
    /* 1: do not load lm_head (embedding-only models such as HLLM's item and user LLMs, whose
     * lm_head is never used and may be absent); asking such a model for logits is an error. */
    int skip_lm_head;
} hc_llm_params;

static inline hc_llm_params hc_llm_default_params(void) {
    hc_llm_params p = {HC_DTYPE_AS_STORED, 0};
    return p;
}

typedef struct hc_llm_scratch hc_llm_scratch;

typedef struct hc_llm {
    hc_llm_config cfg;
    hc_backend *be;
    hc_tensor tok_embd;   /* (vocab, n_embd) */
    hc_tensor out_norm;   /* (n_embd) F32 */
    hc_tensor lm_head;    /* (vocab, n_embd); shares tok_embd's memory when tied; no data when
                             loaded with skip_lm_head */
    int lm_head_tied;
    hc_llm_layer *layers; /* (n_layers) */
    size_t weight_bytes;  /* backend memory held by weights */
    int64_t n_params;
    hc_llm_scratch *scratch;
} hc_llm;

/* Loads config.json and the safetensors weights from a Hugging Face model directory. */
int hc_llm_load(hc_llm **out, hc_backend *be, const char *dir, const hc_llm_params *p,
                hc_errbuf *eb);
/* Loads from an opened checkpoint whose tensor names carry `prefix` (e.g. "item_llm." in a
 * model package; "" for a plain HF checkpoint). */
int hc_llm_load_from(hc_llm **out, hc_backend *be, const hc_llm_config *cfg,
                     const hc_safetensors *st, const char *prefix, const hc_llm_params *p,
                     hc_errbuf *eb);
void hc_llm_free(hc_llm *m);

typedef struct hc_batch {
    int n_tokens;
    const int32_t *token;   /* (n_tokens) ids; at injected positions still a valid id (its
                               embedding is looked up, then replaced) */
    int n_inject;           /* injected input vectors (e.g. HLLM's [item] and [user] slots) */
    const int32_t *inject_idx; /* (n_inject) token indices, distinct */
    const float *inject;    /* (n_inject, n_embd) host rows replacing those tokens' embeddings */
    const int32_t *pos;     /* (n_tokens) RoPE positions */
    const int32_t *seg;     /* (n_tokens) segment index: starts at 0, each token equal to or one
                               more than the previous (segments are contiguous runs); NULL = one
                               segment */
    int n_out;
    const int32_t *out_idx; /* (n_out) token indices whose outputs are wanted */
} hc_batch;

/* Runs the batch. Outputs (host, may be NULL): hidden (n_out, n_embd) final-norm hidden states,
 * logits (n_out, vocab). kv == NULL: stateless. Otherwise seq_ids[s] is the KV sequence of
 * segment s; room is reserved for every segment first. HC_ERR_AGAIN means the pool is full. On
 * any error the sequences are left as they were (their new entries are not committed and blocks
 * reserved by this call are given back). */
int hc_llm_forward(hc_llm *m, const hc_batch *b, hc_kv_cache *kv, const int *seq_ids,
                   float *hidden, float *logits, hc_errbuf *eb);

/* Allocates the activation and metadata buffers for forwards of up to n_tokens tokens and n_out
 * outputs over kv (NULL: stateless), so that such forwards allocate nothing. Buffers still grow
 * on demand for bigger batches. */
int hc_llm_reserve(hc_llm *m, int n_tokens, int n_out, const hc_kv_cache *kv, hc_errbuf *eb);
/* A KV cache shaped for this model. */
int hc_llm_kv_create(hc_llm *m, hc_kv_cache **out, int block_size, int n_blocks);

#endif
