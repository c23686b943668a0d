/* creator.h: the HLLM-Creator pipeline (MODEL_SPEC §3–§5) over a model package.
 *
 *   history titles --item LLM--> item vectors e_k --user LLM--> u --projector--> U
 *   U --FAISS--> cluster c;  prompt1 + [slot := centroid_c or U] + prompt2(ad) --creative LLM--> title
 *
 * Item embeddings: each title's token ids (no BOS, cut to max_item_tokens) plus the [item] slot,
 * positions right-aligned so the slot sits at max_item_tokens; all items of all users in a call
 * are packed into few stateless forwards (one segment per item). Titles seen before come from the
 * item-embedding cache (keyed by token ids).
 * User embedding: the real items of the last max_history titles (padding items are never attended
 * to, so they are not computed), then the user prompt tokens, then the [user] slot, at positions
 * n_pad .. max_history + L_p (arange over the padded sequence, as the reference).
 *
 * Ownership: the creator owns its models, tokenizers, cache and cluster index; `be` must outlive
 * it. Thread-safety: one thread at a time (the engine thread).
 */
#ifndef HC_CREATOR_H
#define HC_CREATOR_H

#include <stddef.h>
#include <stdint.h>

#include "backend/backend.h"
#include "creator/cluster.h"
#include "model/generate.h"
#include "creator/item_cache.h"
#include "model/lm_sched.h"
#include "model/llm.h"
#include "io/package.h"
#include "tokenizer/tokenizer.h"

typedef struct hc_creator_params {
    hc_dtype weight_dtype;       /* as hc_llm_params (HC_DTYPE_AS_STORED = as stored) */
    size_t item_cache_entries;   /* item-embedding cache capacity; 0 disables it */
    int max_batch_tokens;        /* tokens per item/user LLM forward (bounds activation memory) */
    int n_threads;               /* FAISS/OpenMP threads; 0 = backend's */
    int load_creative;           /* 0: skip the creative LLM (embedding and clustering only) */
    int allow_outside_paths;     /* 1: creator.json may name files outside the package directory
                                    (package.h); default 0: every file must resolve inside it */
    size_t item_cache_bytes;     /* nonzero: the item cache holds as many entries as fit in these
                                    bytes (hc_item_cache_entry_bytes), instead of
                                    item_cache_entries */
} hc_creator_params;

static inline hc_creator_params hc_creator_default_params(void) {
    hc_creator_params p = {HC_DTYPE_AS_STORED, 65536, 8192, 0, 1, 0, 0};
    return p;
}

typedef struct hc_creator_stats {
    uint64_t users_embedded;
    uint64_t items_seen;      /* history items looked up */
    uint64_t items_encoded;   /* of which run through the item LLM */
} hc_creator_stats;

typedef struct hc_creator {
    hc_package pkg;
    hc_backend *be;
    hc_llm *item, *user, *creative; /* creative is NULL when not loaded */
    hc_tokenizer *item_tok, *creative_tok;
    hc_tok_ctx *item_ctx, *creative_ctx;
    int d_item, d_user, d_creative; /* hidden sizes H_i, H_u, H_c */
    float *item_slot;               /* (H_i) item_emb_tokens */
    float *user_slot;               /* (H_u) emb_tokens */
    hc_tensor projector;            /* (H_c, H_u) user_projector.weight */
    int32_t *user_prompt_ids;
    int n_user_prompt;
    int32_t *prompt1_ids;
    int n_prompt1;
    int32_t eos[HC_PACKAGE_MAX_EOS + 8];
    int n_eos;
    hc_cluster_index *clusters;     /* NULL: no centroids configured */
    struct hc_match_head *match;    /* the user-ad match head (match_head.h); NULL: the package
                                       has none */
    hc_item_cache *cache;
    struct hc_csched *sched;        /* hc_creator_generate's pipeline scheduler (creator_sched.h),
                                       made on first use */
    int max_batch_tokens;
    uint64_t digest;                /* names this package as loaded: XXH3-64 over creator.json, every
                                       tensor of the weights file (name, dtype, shape, bytes) and the
                                       centroids; title tables carry it (proto/title-table.md) */
    hc_creator_stats stats;
} hc_creator;

int hc_creator_load(hc_creator **out, hc_backend *be, const char *pkg_dir,
                    const hc_creator_params *p, hc_errbuf *eb);
void hc_creator_free(hc_creator *c);

/* One user's history, oldest first. Titles are UTF-8 with explicit lengths. */
typedef struct hc_history {
    const char *const *titles;
    const size_t *lens;
    int n;
} hc_history;

/* Item vectors for n titles: out (n, H_i). Uses and fills the cache. */
int hc_creator_embed_items(hc_creator *c, const char *const *titles, const size_t *lens, int n,
                           float *out, hc_errbuf *eb);
/* u (n_users, H_u) and U (n_users, H_c); either may be NULL. */
int hc_creator_embed_users(hc_creator *c, const hc_history *users, int n_users, float *u,
                           float *U, hc_errbuf *eb);
/* Cluster of each U row under the package's rule (needs centroids). scores may be NULL. */
int hc_creator_assign(hc_creator *c, const float *U, int n, int32_t *ids, float *scores,
                      hc_errbuf *eb);

/* The creative prompt ids for an ad (prompt1, slot, prompt2): *ids malloc'ed, *slot_pos the
 * placeholder's index. HC_ERR_RANGE (message in eb) if longer than max_prompt_tokens. */
int hc_creator_prompt(hc_creator *c, const char *title, size_t title_len, const char *desc,
                      size_t desc_len, int32_t **ids, int *n, int *slot_pos, hc_errbuf *eb);

typedef struct hc_title_request {
    /* in */
    hc_history history;
    const char *ad_title;
    size_t ad_title_len;
    const char *ad_desc;       /* NULL renders "None" */
    size_t ad_desc_len;
    int per_user;              /* 1: inject U itself; 0: the assigned cluster's centroid */
    hc_sampler_params sampling;
    int max_new;
    /* out */
    int32_t *ids;              /* malloc'ed, n_ids generated ids (stop token included) */
    int n_ids;
    char *text;                /* malloc'ed, decoded without special tokens, NUL-terminated */
    size_t text_len;           /* bytes (the text may itself contain U+0000) */
    int32_t cluster;           /* -1 when no centroids */
    float cluster_score;
    hc_finish finish;
    int status;                /* HC_OK, or this request's own error (then error holds why) */
    char error[512];
} hc_title_request;

/* Generates titles for n requests together. Per-request problems (e.g. a prompt over
 * max_prompt_tokens) set that request's status/error and the others go on; the return value is
 * non-zero only for failures of the whole call. Free outputs with hc_title_request_clear. */
int hc_creator_generate(hc_creator *c, hc_title_request *reqs, int n, hc_gen_token_cb cb,
                        void *user, hc_errbuf *eb);
void hc_title_request_clear(hc_title_request *r);

#endif
