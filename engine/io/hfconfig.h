/* hfconfig.h: a Hugging Face config.json for the decoder-only families the engine runs.
 *
 * Supported: "LlamaForCausalLM" (model_type "llama") and "Qwen3ForCausalLM" ("qwen3").
 * Every field that changes the math is read; anything the engine does not implement is an error
 * naming the field and value (HC_ERR_UNSUPPORTED), e.g. rope_scaling other than null,
 * hidden_act other than "silu", attention_bias/mlp_bias true, use_sliding_window true.
 * Missing required fields and wrong JSON types are HC_ERR_FORMAT naming the field.
 * Required: vocab_size, hidden_size, intermediate_size, num_hidden_layers, num_attention_heads;
 * every other absent key takes the transformers default of LlamaConfig / Qwen3Config (listed per
 * field below); an explicit JSON null means "unset", as in Python.
 */
#ifndef HC_HFCONFIG_H
#define HC_HFCONFIG_H

#include "core/error.h"
#include "core/tensor.h"

typedef enum { HC_ARCH_LLAMA = 0, HC_ARCH_QWEN3 } hc_arch;

#define HC_MAX_EOS 8

typedef struct hc_llm_config {
    hc_arch arch;
    int vocab_size;
    int hidden_size;          /* n_embd */
    int intermediate_size;    /* MLP width */
    int n_layers;             /* num_hidden_layers */
    int n_heads;              /* num_attention_heads */
    int n_kv_heads;           /* num_key_value_heads (null: n_heads; absent: Llama n_heads,
                                 Qwen3 32 as Qwen3Config) */
    int head_dim;             /* "head_dim" if present, else hidden_size / n_heads (absent
                                 in a Qwen3 config: 128, Qwen3Config's default) */
    float rms_norm_eps;       /* default 1e-6 */
    double rope_theta;        /* default 10000; also read from rope_parameters (transformers 5) */
    int max_position_embeddings; /* default: Llama 2048, Qwen3 32768 */
    int tie_word_embeddings;  /* default: Llama false, Qwen3 false (HF defaults) */
    int qk_norm;              /* Qwen3: per-head RMSNorm of q and k before RoPE */
    int bos_token_id;         /* -1 if null/negative; absent: Llama 1 (LlamaConfig), Qwen3 -1 */
    int eos_token_ids[HC_MAX_EOS]; /* config's eos_token_id (int or list); absent: Llama {2} */
    int n_eos;                /* 0 if null, or absent in a Qwen3 config */
    int pad_token_id;         /* -1 if absent/null/negative */
    hc_dtype torch_dtype;     /* "dtype" or "torch_dtype"; informational; F32 if absent */
} hc_llm_config;

/* path: a config.json file or a directory containing one (opened without blocking; a FIFO or
 * directory in its place is an error naming it). */
int hc_hfconfig_load(hc_llm_config *cfg, const char *path, hc_errbuf *eb);
/* As hc_hfconfig_load, but the file must resolve inside the canonical directory fs_root (see
 * fileio.h; NULL: anywhere). */
int hc_hfconfig_load_in(hc_llm_config *cfg, const char *path, const char *fs_root, hc_errbuf *eb);
/* Same, from a JSON text (len bytes). */
int hc_hfconfig_parse(hc_llm_config *cfg, const char *json, size_t len, hc_errbuf *eb);
const char *hc_arch_name(hc_arch a);

#endif
