/* data.h: the trainer's data reader. JSON lines in the reference's training schema (MODEL_SPEC
 * §9.1 "Final parquet schema", as tools/synth/generate.py writes {train,valid,test}.jsonl), or
 * the HLLM next-item split (tools/synth: nextitem/items.jsonl + nextitem/{train,...}.jsonl),
 * tokenized through the engine's creator package.
 *
 * Creator rows: an object with user_profile (string holding JSON), original_title (string),
 * original_description (string or null), prompt1, prompt2, response (strings), title_list (array
 * of strings) and item_id_list (array of integers, as long as title_list); other keys are ignored.
 * A sample holds
 *   - the history: the last MAX_ITEM_LIST_LENGTH titles, each tokenized by the item tokenizer
 *     (hc_creator_tokenize_request: no BOS) and cut to MAX_TEXT_LENGTH tokens, with their ids;
 *   - the creative sequence prompt1 + [slot] + prompt2 + response[: R - 1] + [eos] (MODEL_SPEC
 *     §5.2, unpadded), R = MAX_GEN_TEXT_LENGTH - prompt part; prompt1 and prompt2 are the
 *     package's (prompt2 rendered from original_title/original_description, as the engine serves)
 *     or, with row_prompts, the row's own strings; eos = the package's first end-of-sequence id
 *     (creative_eos_ids, else the creative tokenizer's eos_token first), as hc_ctrain uses;
 *   - the ad title for the match loss: item-tokenizer ids of original_title cut to
 *     MAX_TEXT_LENGTH (§6.1 L_cls);
 *   - profile_json = json.dumps(json.loads(user_profile), ensure_ascii=False) (compact, ", " and
 *     ": " separators, key order kept, Python's float repr), its creative ids cut to
 *     MAX_USER_PROFILE_TEXT_LENGTH (L_align), and the recon sequence [slot] +
 *     enc(profile_prompt) + enc(profile_json)[: R - 1] + [eos], R = MAX_USER_PROFILE_TEXT_LENGTH
 *     - (1 + |enc(profile_prompt)|) (L_recon; empty when the package has no profile_prompt).
 * Next-item rows: {"user_id": ..., "item_ids": [int, ...]}; titles come from items.jsonl
 * ({"item_id": int, "title": string}); a sample is the last MAX_ITEM_LIST_LENGTH items with their
 * title tokens as above (at least 2 items: one predicts the next).
 *
 * Bad rows are skipped and counted by reason, with the first HC_DATA_BAD_LINES line numbers and
 * the first message ("line 7: field response: empty string"); blank lines are ignored. Where the
 * reference truncates (history, titles, response, profile) this truncates; a creative prompt part
 * that leaves no room for one response token and the eos is dropped (the reference drops it too).
 * Structural checks (JSON, fields, UTF-8, empty response, line length) run when the file is
 * indexed; token-length drops are found when the row is read and counted then (once per row).
 *
 * Memory: the file is indexed by byte offsets (24 bytes per usable row); rows are read and parsed
 * on demand with pread. Items of the next-item split are kept in memory (id -> title).
 *
 * Order: with shuffle, epoch e visits the usable rows in a permutation that depends only on
 * (seed, e) (splitmix64 + Fisher-Yates); without, in file order. The cursor (epoch, pos) is the
 * next row to visit; a reader restored with hc_data_seek yields exactly the same rows as the one it
 * was taken from.
 *
 * Thread-safety: one thread at a time per reader; the reader has its own tokenizer contexts, so it
 * may run beside the engine thread. The creator must outlive the reader. */
#ifndef HC_TRAIN_DATA_H
#define HC_TRAIN_DATA_H

#include <stddef.h>
#include <stdint.h>

#include "core/error.h"
#include "creator/creator.h"

typedef struct hc_data_params {
    int max_item_list_length;         /* MAX_ITEM_LIST_LENGTH (50): history titles kept */
    int max_text_length;              /* MAX_TEXT_LENGTH (64): item tokens per title */
    int max_gen_text_length;          /* MAX_GEN_TEXT_LENGTH (4096): creative sequence */
    int max_user_profile_text_length; /* MAX_USER_PROFILE_TEXT_LENGTH (1024): profile sequences */
    int row_prompts;                  /* 1: the row's prompt1/prompt2; 0: the package's (0) */
    int shuffle;                      /* 1: a permutation per epoch (1) */
    uint64_t seed;                    /* shuffle seed (2020, the reference's) */
    size_t max_line_bytes;            /* longer lines are bad rows (64 MiB) */
} hc_data_params;

hc_data_params hc_data_default_params(void);

typedef enum hc_data_bad {
    HC_DATA_BAD_JSON = 0, /* not a JSON object */
    HC_DATA_BAD_UTF8,     /* invalid UTF-8 */
    HC_DATA_BAD_FIELD,    /* missing or mistyped field (or user_profile not JSON, unknown item) */
    HC_DATA_BAD_EMPTY,    /* empty response / fewer than 2 items */
    HC_DATA_BAD_LIMIT,    /* over a limit that is not truncated (line bytes, prompt tokens) */
    HC_DATA_BAD_TOKENS,   /* the tokenizer refused it (an id outside the model's vocabulary) */
    HC_DATA_BAD_COUNT
} hc_data_bad;

#define HC_DATA_BAD_LINES 8

typedef struct hc_data_badstat {
    uint64_t count;
    int n_lines;
    uint64_t lines[HC_DATA_BAD_LINES]; /* the first ones, 1-based */
    char first[240];                   /* the first one's message */
} hc_data_badstat;

typedef struct hc_data_cursor {
    int64_t epoch; /* 0-based */
    int64_t pos;   /* next position in the epoch's order, 0..rows-1 */
} hc_data_cursor;

typedef struct hc_data_sample {
    uint64_t line; /* 1-based line of the row in its file */
    /* history (both kinds), oldest first */
    int n_items;
    int32_t *item_lens;    /* (n_items) */
    int32_t *item_tok;     /* (sum of item_lens) item-tokenizer ids, concatenated */
    int64_t *item_id_list; /* (n_items) the items' ids */
    /* creator rows only (zero / NULL for next-item rows) */
    /* An hc_ctrain_row (creator_train.h) is a view of this: prompt2 = ids + slot_pos + 1,
     * n_prompt2 = n_prompt - slot_pos - 1, response = ids + n_prompt, n_response =
     * n_ids - n_prompt - 1 (its prompt1 is the package's: row_prompts 0). */
    int32_t *ids; /* (n_ids) prompt1 + slot + prompt2 + response + eos */
    int n_ids;
    int slot_pos;    /* index of the slot in ids */
    int n_prompt;    /* labels are ids[n_prompt .. n_ids) */
    int32_t *ad_tok; /* (n_ad_tok) item-tokenizer ids of original_title */
    int n_ad_tok;
    char *profile_json; /* NUL-terminated, profile_json_len bytes */
    size_t profile_json_len;
    int32_t *profile_tok; /* (n_profile_tok) creative ids of profile_json, cut */
    int n_profile_tok;
    int32_t *recon_ids; /* (n_recon) slot + profile prompt + profile + eos; NULL without a
                           package profile_prompt */
    int n_recon;
    int recon_n_prompt; /* labels are recon_ids[recon_n_prompt .. n_recon) */
} hc_data_sample;

typedef struct hc_data hc_data;

/* Indexes a creator-rows file. p NULL: defaults. Errors name the path: missing, a directory or
 * FIFO, unreadable, no usable row (the message then counts the bad ones), limits above the
 * package's (max_history, max_item_tokens), the creative LLM not loaded. */
int hc_data_open(hc_data **out, hc_creator *c, const char *path, const hc_data_params *p,
                 hc_errbuf *eb);
/* Indexes a next-item split: items_path (items.jsonl; a bad line there, a duplicate id, is an
 * error naming file:line) and seq_path (train.jsonl rows; bad rows are counted). */
int hc_data_open_nextitem(hc_data **out, hc_creator *c, const char *items_path,
                          const char *seq_path, const hc_data_params *p, hc_errbuf *eb);
void hc_data_free(hc_data *d);

/* Usable rows (one epoch's length). */
int64_t hc_data_rows(const hc_data *d);
const hc_data_badstat *hc_data_bad_stat(const hc_data *d, hc_data_bad reason);
uint64_t hc_data_bad_total(const hc_data *d);
const char *hc_data_bad_name(hc_data_bad reason);
/* "PATH: N rows, M skipped: 2 not JSON (lines 3, 9), ..." into buf; returns its length. */
int hc_data_summary(const hc_data *d, char *buf, size_t n);

hc_data_cursor hc_data_tell(const hc_data *d);
/* HC_ERR_RANGE if epoch < 0 or pos is outside 0..rows-1. */
int hc_data_seek(hc_data *d, hc_data_cursor cur, hc_errbuf *eb);
/* Row index (0-based among the usable rows, file order) at position pos of epoch. */
int64_t hc_data_order_at(hc_data *d, int64_t epoch, int64_t pos);

/* The next sample at the cursor (s is overwritten: free it with hc_data_sample_free first when
 * reusing); rows dropped for token length are skipped (and counted). Advances the cursor, going
 * on to the next epoch after the last row. Errors: the file changed since it was indexed
 * (HC_ERR_IO / HC_ERR_FORMAT), every row dropped, out of memory. */
int hc_data_next(hc_data *d, hc_data_sample *s, hc_errbuf *eb);
void hc_data_sample_free(hc_data_sample *s);

/* json.dumps(json.loads(text), ensure_ascii=False) of Python: malloc'ed into *out (NUL
 * terminated, *len bytes). HC_ERR_FORMAT if text is not JSON (message in eb). */
int hc_data_py_compact_json(const char *text, size_t len, char **out, size_t *outlen,
                            hc_errbuf *eb);
/* 1 if s[0..n) is valid UTF-8 (no overlongs, surrogates or code points above U+10FFFF). */
int hc_data_utf8_valid(const char *s, size_t n);

#endif
