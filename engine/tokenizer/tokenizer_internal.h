/* tokenizer_internal.h: data structures shared by tokenizer*.c. Not a public header.
 *
 * Layout: every string the tokenizer owns (vocabulary, added tokens, decoder/normalizer contents)
 * lives in one arena (`tok->arena`) and is referenced by (offset, length). Component lists
 * (normalizers, pre-tokenizers, decoders) are flattened: a nested Sequence applies its children in
 * order, which is exactly what applying the flattened list in order does.
 */
#ifndef HC_TOKENIZER_INTERNAL_H
#define HC_TOKENIZER_INTERNAL_H

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#include <stdint.h>
#include <stddef.h>

#include "tokenizer/tokenizer.h"

#define HC_TK_NONE UINT32_MAX

typedef struct {
    uint32_t off, len; /* into tok->arena; len == HC_TK_NONE: no string */
} hc_tk_str;

/* Growable byte buffer. */
typedef struct {
    char *p;
    size_t len, cap;
} hc_tk_buf;

int hc_tk_buf_reserve(hc_tk_buf *b, size_t extra);
int hc_tk_buf_put(hc_tk_buf *b, const void *s, size_t n);
void hc_tk_buf_free(hc_tk_buf *b);

/* Open-addressing map from a string (held elsewhere, looked up through `strs`) to an index. */
typedef struct {
    uint64_t *slots; /* (hash << 32) | (index + 1); 0 = empty */
    uint32_t mask;
} hc_tk_strmap;

/* Open-addressing map from a pair of ids to (rank, new id). */
typedef struct {
    uint64_t *keys; /* (a << 32 | b) + 1, 0 = empty */
    uint32_t *rank, *new_id;
    uint64_t mask;
} hc_tk_pairmap;

uint32_t hc_tk_hash(const char *s, size_t n);

enum { HC_TK_NORM_PREPEND, HC_TK_NORM_REPLACE, HC_TK_NORM_NFC };
typedef struct {
    int type;
    hc_tk_str pattern; /* Replace: literal pattern (when re == NULL) */
    pcre2_code *re;    /* Replace: regex pattern */
    hc_tk_str content; /* Prepend: prefix; Replace: replacement */
} hc_tk_norm;

enum { HC_TK_PRE_SPLIT, HC_TK_PRE_BYTELEVEL, HC_TK_PRE_METASPACE };
enum {
    HC_TK_SPLIT_REMOVED,
    HC_TK_SPLIT_ISOLATED,
    HC_TK_SPLIT_MERGED_PREV,
    HC_TK_SPLIT_MERGED_NEXT,
    HC_TK_SPLIT_CONTIGUOUS
};
enum { HC_TK_PREPEND_ALWAYS, HC_TK_PREPEND_FIRST, HC_TK_PREPEND_NEVER };
typedef struct {
    int type;
    pcre2_code *re; /* Split pattern, or the GPT-2 regex for ByteLevel use_regex */
    int behavior, invert;
    int add_prefix_space, use_regex; /* ByteLevel */
    uint32_t replacement;            /* Metaspace code point */
    char rep[4];
    int rep_len;
    int prepend_scheme, split; /* Metaspace */
} hc_tk_pre;

enum {
    HC_TK_DEC_REPLACE,
    HC_TK_DEC_BYTEFALLBACK,
    HC_TK_DEC_FUSE,
    HC_TK_DEC_STRIP,
    HC_TK_DEC_BYTELEVEL,
    HC_TK_DEC_METASPACE
};
typedef struct {
    int type;
    hc_tk_str pattern, content; /* Replace: literal pattern -> content (re for a regex pattern) */
    pcre2_code *re;
    uint32_t strip_char; /* Strip: the code point; start/stop counts */
    size_t start, stop;
    uint32_t replacement; /* Metaspace */
    char rep[4];
    int rep_len;
    int prepend_scheme;
} hc_tk_dec;

typedef struct {
    int32_t id;
    hc_tk_str content, norm_content; /* norm_content: content after the normalizer */
    uint8_t special, normalized, lstrip, rstrip, single_word;
} hc_tk_added;

/* Byte trie over added-token contents; node 0 is the root. */
typedef struct {
    uint32_t *child; /* first child node or 0 */
    uint32_t *next;  /* next sibling or 0 */
    uint8_t *byte;   /* edge label into this node */
    int32_t *term;   /* added-token index ending here, -1 none */
    uint32_t n, cap;
} hc_tk_trie;

struct hc_tokenizer {
    char *arena;
    size_t arena_len, arena_cap;

    size_t n_vocab;    /* max id + 1 over model and added tokens */
    hc_tk_str *id_str; /* (n_vocab) decode string per id: added token content, else model token */
    uint8_t *id_flags; /* (n_vocab) bit0 added, bit1 special */

    /* BPE model */
    size_t n_model;       /* max model id + 1 */
    hc_tk_str *model_str; /* (n_model) */
    hc_tk_strmap vocab;   /* model token -> id (looked up through model_str) */
    hc_tk_pairmap merges; /* (a, b) -> (rank, id of a+b) */
    int32_t unk_id;       /* -1: no unk token */
    int fuse_unk, byte_fallback, ignore_merges;
    int32_t byte_ids[256]; /* "<0xNN>" ids for byte_fallback, -1 when missing */

    hc_tk_added *added;
    size_t n_added;
    hc_tk_strmap added_map; /* content -> index in added */
    hc_tk_trie trie_raw, trie_norm;

    hc_tk_norm *norms;
    size_t n_norms;
    hc_tk_pre *pres;
    size_t n_pres;
    hc_tk_dec *decs;
    size_t n_decs;
    int has_decoder;

    int32_t bos_id, eos_id, pad_id;
    int add_bos, add_eos;
    int32_t *eos_ids;
    size_t n_eos_ids;
};

#define HC_TK_CACHE_MAX 16384
struct hc_tok_ctx {
    const hc_tokenizer *tok;
    pcre2_match_data *md;
    hc_tk_buf fixed, norm, norm2, pieces, pieces2, text, segs; /* per-call scratch */
    hc_tk_buf ids;                                             /* int32 output under construction */
    /* BPE */
    void *sym;
    size_t sym_cap;
    void *heap;
    size_t heap_cap;
    /* word cache: piece text -> ids, both stored in cache_data */
    uint32_t *cache_slots; /* entry index + 1 */
    uint32_t cache_mask, cache_n;
    struct hc_tk_cache_entry *cache_ent;
    hc_tk_buf cache_data;
};

static inline const char *hc_tk_s(const hc_tokenizer *t, hc_tk_str s) {
    return t->arena + s.off;
}

/* strmap: find the index whose string (strs[index]) equals s, or -1. */
int64_t hc_tk_strmap_get(const hc_tk_strmap *m, const hc_tokenizer *t, const hc_tk_str *strs,
                         const char *s, size_t n);
int hc_tk_strmap_build(hc_tk_strmap *m, const hc_tokenizer *t, const hc_tk_str *strs, size_t n);
int hc_tk_pairmap_init(hc_tk_pairmap *m, size_t n);
int hc_tk_pairmap_put(hc_tk_pairmap *m, uint32_t a, uint32_t b, uint32_t rank, uint32_t id);
int hc_tk_pairmap_get(const hc_tk_pairmap *m, uint32_t a, uint32_t b, uint32_t *rank, uint32_t *id);

/* UTF-8 helpers. */
size_t hc_tk_utf8_valid_prefix(const uint8_t *s, size_t n); /* length of the valid prefix */
/* Appends s with every maximal ill-formed subsequence replaced by U+FFFD (from_utf8_lossy). */
int hc_tk_utf8_lossy(hc_tk_buf *out, const uint8_t *s, size_t n);
/* Classifies the sequence starting at s[0] (n >= 1): HC_TK_U8_OK (a complete character of *len
 * bytes), HC_TK_U8_BAD (an ill-formed prefix of *len bytes that a lossy decoder replaces by one
 * U+FFFD) or HC_TK_U8_SHORT (all n bytes are a valid but incomplete prefix of a character). */
enum { HC_TK_U8_OK, HC_TK_U8_BAD, HC_TK_U8_SHORT };
int hc_tk_utf8_step(const uint8_t *s, size_t n, size_t *len);
size_t hc_tk_utf8_encode(uint32_t cp, char *out);
uint32_t hc_tk_utf8_decode1(const char *s, size_t n, size_t *adv); /* s is valid UTF-8 */

/* The normalizer chain on s (for added-token contents at load, and for each text segment). */
int hc_tk_normalize(const hc_tokenizer *t, const char *s, size_t n, hc_tk_buf *out, hc_tk_buf *tmp,
                    pcre2_match_data *md, hc_errbuf *eb);
/* All matches of re in s[0..n) (valid UTF-8), Rust-regex style iteration; calls fn per match.
 * Returns 0 or an error (regex engine failure). */
/* Appends s with every match of re (or, when re is NULL, every occurrence of the literal
 * pat[0..pl)) replaced by rep: the Replace normalizer and decoder. */
int hc_tk_replace(const char *s, size_t n, const pcre2_code *re, const char *pat, size_t pl,
                  const char *rep, size_t rep_len, pcre2_match_data *md, hc_tk_buf *out,
                  hc_errbuf *eb);
int hc_tk_regex_each(const pcre2_code *re, pcre2_match_data *md, const char *s, size_t n,
                     int (*fn)(void *u, size_t st, size_t en), void *u, hc_errbuf *eb);
/* Regex compile with the Oniguruma -> PCRE2 translation documented in tokenizer_encode.c. */
pcre2_code *hc_tk_regex_compile(const char *pat, size_t n, int literal, hc_errbuf *eb);
int hc_tk_trie_add(hc_tk_trie *tr, const char *s, size_t n, int32_t idx);
void hc_tk_trie_free(hc_tk_trie *tr);

/* Fast JSON readers for model.vocab / model.merges (tokenizer_json.c); -1 on malformed input. */
int hc_tk_json_find_model_spans(const char *s, size_t n, size_t vocab[2], size_t merges[2]);
int hc_tk_json_string(const char **p, const char *e, hc_tk_buf *out);
int hc_tk_json_int(const char **p, const char *e, long long *v);
const char *hc_tk_json_ws(const char *p, const char *e);

/* GPT-2 byte <-> unicode tables. */
extern const uint16_t hc_tk_byte_to_cp[256];
int hc_tk_cp_to_byte(uint32_t cp); /* -1 if cp is not a byte-level char */

/* BPE one pre-tokenized piece; appends ids to ctx->ids. */
int hc_tk_bpe(const hc_tokenizer *t, hc_tok_ctx *ctx, const char *s, size_t n);
void hc_tk_bpe_ctx_free(hc_tok_ctx *ctx);

#endif
