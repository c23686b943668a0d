/* package.h: the HLLM-Creator model package manifest (creator.json, proto/model-package.md).
 *
 * hc_package_load reads and validates creator.json; every path is resolved against the package
 * directory. It does not load weights or tokenizers (engine/creator.h does).
 * Errors name the field: HC_ERR_FORMAT (wrong type, bad template), HC_ERR_UNSUPPORTED (format or
 * version), HC_ERR_NOTFOUND/HC_ERR_IO (files).
 */
#ifndef HC_PACKAGE_H
#define HC_PACKAGE_H

#include <stdint.h>

#include "cluster.h"
#include "error.h"
#include "sampler.h"

#define HC_PACKAGE_VERSION 1
#define HC_PACKAGE_MAX_EOS 8

typedef struct hc_package {
    char *dir;                /* the package directory */
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

int hc_package_load(hc_package *pkg, const char *dir, hc_errbuf *eb);
void hc_package_free(hc_package *pkg);

/* Fills prompt2: `{title}` and `{description}` replaced, `{{`/`}}` unescaped. title/description
 * are cut to the package's limits in Unicode code points first; description NULL renders "None".
 * Returns a malloc'ed NUL-terminated string (*len bytes) or NULL on allocation failure. */
char *hc_package_render_prompt2(const hc_package *pkg, const char *title, size_t title_len,
                                const char *desc, size_t desc_len, size_t *len);

#endif
