/* tokenizer.h: Hugging Face tokenizer.json tokenizers (BPE family) in C, id-for-id identical to the
 * `tokenizers` library (Rust core, 0.23.x) for the components listed in docs/TOKENIZER.md.
 *
 * Supported: added/special tokens (special, normalized, lstrip, rstrip, single_word); normalizers
 * Prepend, Replace, NFC, Sequence; pre-tokenizers Split, ByteLevel, Metaspace, Sequence; model BPE
 * (merge ranks, byte_fallback, fuse_unk, ignore_merges); decoders Replace, ByteFallback, Fuse,
 * Strip, ByteLevel, Metaspace, Sequence. Anything else in tokenizer.json is a load error that
 * names the component (HC_ERR_UNSUPPORTED).
 *
 * Text is always passed with a length (it may contain NUL bytes). Invalid UTF-8 input is not an
 * error: each maximal ill-formed subsequence is replaced by U+FFFD before tokenization, exactly as
 * Rust's String::from_utf8_lossy and Python's bytes.decode("utf-8", "replace") do.
 *
 * Thread-safety: a loaded hc_tokenizer is immutable; every function taking a `const hc_tokenizer *`
 * may be called from any number of threads at once. Mutable scratch (regex match data, buffers, the
 * per-word BPE cache) lives in an hc_tok_ctx, which belongs to one thread at a time; passing NULL
 * makes the call allocate and free a temporary one (correct, a little slower).
 */
#ifndef HC_TOKENIZER_H
#define HC_TOKENIZER_H

#include <stddef.h>
#include <stdint.h>

#include "core/error.h"

typedef struct hc_tokenizer hc_tokenizer;
typedef struct hc_tok_ctx hc_tok_ctx;
typedef struct hc_detok hc_detok;

/* Loads DIR/tokenizer.json and, when present, DIR/tokenizer_config.json (bos/eos/pad tokens,
 * add_bos_token, add_eos_token) and DIR/generation_config.json (extra eos_token_id values).
 * On success *out owns everything (free with hc_tokenizer_free). Errors: HC_ERR_IO (missing or
 * unreadable tokenizer.json), HC_ERR_FORMAT (malformed JSON or fields), HC_ERR_UNSUPPORTED (a
 * component type this implementation does not have), HC_ERR_NOMEM; eb gets the detail. */
int hc_tokenizer_load(hc_tokenizer **out, const char *dir, hc_errbuf *eb);
/* As hc_tokenizer_load; every message names the file at fault (DIR/tokenizer.json, ...), files
 * are opened without blocking and must be regular files, and with fs_root non-NULL (a canonical
 * directory, fileio.h) they must resolve inside it (else HC_ERR_INVAL). */
int hc_tokenizer_load_in(hc_tokenizer **out, const char *dir, const char *fs_root, hc_errbuf *eb);
/* Same, from an in-memory tokenizer.json (json need not be NUL-terminated) and an optional
 * tokenizer_config.json text (NULL: none). Copies what it needs. */
int hc_tokenizer_load_json(hc_tokenizer **out, const char *json, size_t json_len,
                           const char *config, size_t config_len, hc_errbuf *eb);
void hc_tokenizer_free(hc_tokenizer *tok);

/* A per-thread scratch context for encode. Owned by the caller; use it from one thread at a time.
 * It may be reused across calls (its word cache makes repeated words cheap) but only with the
 * tokenizer it was created for. */
hc_tok_ctx *hc_tok_ctx_new(const hc_tokenizer *tok);
void hc_tok_ctx_free(hc_tok_ctx *ctx);

/* Encodes text[0..len) to ids. add_special != 0 adds BOS (if tokenizer_config add_bos_token) and
 * EOS (if add_eos_token) like transformers' fast tokenizers; 0 adds nothing (HLLM-Creator's mode).
 * *ids_out is malloc'ed and owned by the caller (free()); it may be NULL when *n_out == 0.
 * ctx may be NULL. Thread-safe for distinct ctx. */
int hc_tokenizer_encode(const hc_tokenizer *tok, hc_tok_ctx *ctx, const char *text, size_t len,
                        int add_special, int32_t **ids_out, size_t *n_out, hc_errbuf *eb);

/* Decodes ids to UTF-8 text (always valid UTF-8, NUL-terminated; *len_out excludes the NUL).
 * skip_special != 0 drops added tokens marked special. Ids that are not in the vocabulary are
 * dropped, as in the `tokenizers` library. *text_out is malloc'ed, owned by the caller (free()). */
int hc_tokenizer_decode(const hc_tokenizer *tok, const int32_t *ids, size_t n, int skip_special,
                        char **text_out, size_t *len_out, hc_errbuf *eb);

/* Vocabulary size: one more than the largest id (model vocab and added tokens). */
size_t hc_tokenizer_n_vocab(const hc_tokenizer *tok);
/* The token string for id (not NUL-terminated; *len set), or NULL if id is unknown. The pointer
 * stays valid until hc_tokenizer_free. Added tokens take precedence over the model vocabulary. */
const char *hc_tokenizer_id_to_token(const hc_tokenizer *tok, int32_t id, size_t *len);
/* The id of a token string (added tokens first, then the model vocabulary), or -1. */
int32_t hc_tokenizer_token_to_id(const hc_tokenizer *tok, const char *token, size_t len);
/* 1 if id is an added token marked special, else 0. */
int hc_tokenizer_is_special(const hc_tokenizer *tok, int32_t id);
/* BOS/EOS/PAD ids from tokenizer_config.json, -1 when absent. */
int32_t hc_tokenizer_bos_id(const hc_tokenizer *tok);
int32_t hc_tokenizer_eos_id(const hc_tokenizer *tok);
int32_t hc_tokenizer_pad_id(const hc_tokenizer *tok);
/* Every id that ends generation: eos_token plus generation_config.json eos_token_id entries, no
 * duplicates. The array belongs to the tokenizer. */
const int32_t *hc_tokenizer_eos_ids(const hc_tokenizer *tok, size_t *n);
/* add_bos_token / add_eos_token from tokenizer_config.json (0 when absent). */
int hc_tokenizer_add_bos(const hc_tokenizer *tok);
int hc_tokenizer_add_eos(const hc_tokenizer *tok);

/* Streaming detokenizer: feed ids one at a time and get back only text that can no longer change
 * (complete UTF-8; a character split over byte-fallback or byte-level tokens is held back until it
 * is complete, and a byte-fallback run is held until it ends, since one bad byte turns the whole
 * run into U+FFFD). The concatenation of every piece returned by hc_detok_feed followed by
 * hc_detok_finish equals hc_tokenizer_decode(all ids, skip_special).
 * The detok keeps a pointer to tok (which must outlive it) and is used by one thread at a time. */
hc_detok *hc_detok_new(const hc_tokenizer *tok, int skip_special);
void hc_detok_free(hc_detok *d);
/* Feeds one id. *text is set to the new complete text (may be empty, never NULL; NUL-terminated,
 * *len excludes the NUL); it points into d and is valid until the next call on d. */
int hc_detok_feed(hc_detok *d, int32_t id, const char **text, size_t *len);
/* Ends the stream: returns the held-back remainder (incomplete bytes become U+FFFD, as decode
 * does). Afterwards d is reset and may start a new stream. Same ownership as hc_detok_feed. */
int hc_detok_finish(hc_detok *d, const char **text, size_t *len);

#endif
