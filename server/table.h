/* table.h: hllm-creatord's pre-generated title tables (proto/title-table.md, written by
 * `hllm titles`): (cluster, ad_hash) -> title, loaded at start and again on SIGHUP.
 *
 * A table set is built fully from its files and is immutable afterwards: a reload builds a new
 * set (on a libuv worker thread) and the loop thread swaps it in only when every file loaded, so
 * a broken file keeps the old set. The loader checks everything against the loaded package
 * (digest, cluster count, the daemon's default sampling and max_new_tokens, the creative
 * vocabulary, and that every title is the decoding of its ids) and names file, line and field on
 * the first problem. The same (cluster, ad_hash) twice in one file is an error; across files the
 * later file's entry wins.
 *
 * Thread-safety: building touches only its arguments (the tokenizer's decode is thread-safe);
 * lookups are for the loop thread. */
#ifndef HCD_TABLE_H
#define HCD_TABLE_H

#include <stddef.h>
#include <stdint.h>

#include "model/sampler.h"
#include "tokenizer/tokenizer.h"

typedef enum { TT_STOP, TT_LENGTH, TT_PRUNED } tt_finish;

typedef struct tt_entry {
    int32_t cluster;
    uint64_t ad_hash;
    const char *title; /* title_len bytes (may hold U+0000), NUL-terminated */
    size_t title_len;
    const int32_t *ids; /* n_ids creative ids (none when pruned) */
    int n_ids;
    tt_finish finish;
} tt_entry;

typedef struct tt_set tt_set;

/* What a table must agree with: the loaded package and the daemon's default settings. */
typedef struct tt_expect {
    uint64_t digest;
    int n_clusters;
    hc_sampler_params sampling;
    int max_new;
    int vocab; /* creative vocabulary size: ids in [0, vocab) */
    const hc_tokenizer *tok; /* the creative tokenizer: titles must decode from their ids */
} tt_expect;

/* Loads every file into a new set. Returns 0, or -1 with the reason (naming file, line and field)
 * in err; nothing is kept then. n_files 0 gives an empty set. */
int tt_build(tt_set **out, const char *const *files, int n_files, const tt_expect *x, char *err,
             size_t errn);
void tt_free(tt_set *t);
size_t tt_entries(const tt_set *t);
int tt_files(const tt_set *t);

/* 1 when a request with these effective settings may be answered from the set (they equal the
 * tables' settings: greedy ignores temperature, top_k, top_p and seed). */
int tt_settings_match(const tt_set *t, const hc_sampler_params *sp, int max_new);
/* The entry of (cluster, ad_hash) or NULL. */
const tt_entry *tt_lookup(const tt_set *t, int32_t cluster, uint64_t ad_hash);

const char *tt_finish_name(tt_finish f);

#endif
