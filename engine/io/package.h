/* package.h: the HLLM-Creator model package manifest (creator.json, proto/model-package.md).
 *
 * hc_package_load reads and validates creator.json; every path is resolved against the package
 * directory. It does not load weights or tokenizers (engine/creator/creator.h does).
 * Errors name the field: HC_ERR_FORMAT (wrong type, bad template), HC_ERR_UNSUPPORTED (format or
 * version), HC_ERR_NOTFOUND/HC_ERR_IO (files), HC_ERR_INVAL (a path outside the package).
 *
 * Confinement: unless allow_outside_paths is set, every path in creator.json must resolve
 * (symlinks followed) inside the package directory: absolute paths elsewhere, `../` escapes and
 * symlinks that leave the package are refused, naming the field. `root` then holds the canonical
 * package directory, and the loaders (hc_creator_load) confine every file they open to it, so a
 * symlinked file inside a sub-directory (item_llm/config.json -> /etc/passwd) is refused too.
 */
#ifndef HC_PACKAGE_H
#define HC_PACKAGE_H

#include <stdint.h>

#include "creator/cluster.h"
#include "core/error.h"
#include "model/sampler.h"

#define HC_PACKAGE_VERSION 1
#define HC_PACKAGE_MAX_EOS 8

typedef struct hc_package {
    char *dir;                /* the package directory */
    char *root;               /* its canonical path when paths are confined; NULL when outside
                                 paths are allowed */
    char *item_llm_dir;       /* absolute or package-relative paths, resolved */
    char *user_llm_dir;
    char *creative_llm_dir;
    char *item_tokenizer_dir;
    char *creative_tokenizer_dir;
    char *weights;
    char *centroids;          /* NULL: no clusters configured */
    int max_history;          /* 50 */
    int max_item_tokens;      /* 64 */
    int max_prompt_tokens;    /* 4096 */
    int title_max_chars;      /* 768 */
    int description_max_chars;/* 4096 */
    int32_t slot_token_id;    /* 0 */
    char *user_prompt;
    char *prompt1;
    char *prompt2;            /* template with {title} and {description} */
    char *profile_prompt;     /* NULL if absent */
    int32_t eos_ids[HC_PACKAGE_MAX_EOS];
    int n_eos;                /* 0: use the creative tokenizer's eos ids */
    hc_assign_rule assign;
    hc_sampler_params sampling;
    int max_new_tokens;       /* 128 */
} hc_package;

typedef struct hc_package_params {
    int allow_outside_paths; /* 1: creator.json may name files anywhere (default 0) */
} hc_package_params;

/* Confined load (hc_package_load_ex with default params). */
int hc_package_load(hc_package *pkg, const char *dir, hc_errbuf *eb);
/* p NULL: defaults. */
int hc_package_load_ex(hc_package *pkg, const char *dir, const hc_package_params *p,
                       hc_errbuf *eb);

/* What `dir` is, for callers choosing between a model package and a Hugging Face model
 * directory: HC_OK if it is a readable directory holding a regular file creator.json;
 * HC_ERR_NOTFOUND if it is a readable directory without creator.json (no message: not an error
 * for such callers); any other code, with a message naming the path and the reason, if dir cannot
 * be used at all (missing, a symlink loop, permission denied, not a directory) or its
 * creator.json is unusable (a dangling or looping symlink, a FIFO, a directory, unreadable).
 * Opens nothing; never blocks. */
int hc_package_probe(const char *dir, hc_errbuf *eb);
void hc_package_free(hc_package *pkg);

/* Fills prompt2: `{title}` and `{description}` replaced, `{{`/`}}` unescaped. title/description
 * are cut to the package's limits in Unicode code points first; description NULL renders "None".
 * Returns a malloc'ed NUL-terminated string (*len bytes) or NULL on allocation failure. */
char *hc_package_render_prompt2(const hc_package *pkg, const char *title, size_t title_len,
                                const char *desc, size_t desc_len, size_t *len);

#endif
