/* package.c: creator.json parsing and prompt2 rendering. */
#include "io/package.h"

#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/fileio.h"

/* creator.json is a few KB; anything near this is not one */
#define HC_PACKAGE_MAX_MANIFEST ((size_t)16 * 1024 * 1024)

static char *join(const char *dir, const char *rel) {
    size_t n = strlen(dir) + strlen(rel) + 2;
    char *p = malloc(n);
    if (!p) return NULL;
    if (rel[0] == '/') snprintf(p, n, "%s", rel);
    else snprintf(p, n, "%s/%s", dir, rel);
    return p;
}

static int get_str(json_t *o, const char *key, const char *def, int required, const char **out,
                   hc_errbuf *eb) {
    json_t *v = json_object_get(o, key);
    if (!v || json_is_null(v)) {
        if (required && !def)
            return hc_seterr(eb, HC_ERR_FORMAT, "creator.json: missing field \"%s\"", key);
        *out = def;
        return HC_OK;
    }
    if (!json_is_string(v))
        return hc_seterr(eb, HC_ERR_FORMAT, "creator.json: \"%s\" must be a string", key);
    *out = json_string_value(v);
    return HC_OK;
}

static int get_int(json_t *o, const char *key, int def, int lo, int hi, int *out, hc_errbuf *eb) {
    json_t *v = json_object_get(o, key);
    if (!v || json_is_null(v)) {
        *out = def;
        return HC_OK;
    }
    if (!json_is_integer(v))
        return hc_seterr(eb, HC_ERR_FORMAT, "creator.json: \"%s\" must be an integer", key);
    json_int_t x = json_integer_value(v);
    if (x < lo || x > hi)
        return hc_seterr(eb, HC_ERR_RANGE, "creator.json: \"%s\" = %lld outside [%d, %d]", key,
                         (long long)x, lo, hi);
    *out = (int)x;
    return HC_OK;
}

static int get_num(json_t *o, const char *key, double def, double lo, double hi, double *out,
                   hc_errbuf *eb) {
    json_t *v = json_object_get(o, key);
    if (!v || json_is_null(v)) {
        *out = def;
        return HC_OK;
    }
    if (!json_is_number(v))
        return hc_seterr(eb, HC_ERR_FORMAT, "creator.json: \"%s\" must be a number", key);
    double x = json_number_value(v);
    if (!(x >= lo && x <= hi))
        return hc_seterr(eb, HC_ERR_RANGE, "creator.json: \"%s\" = %g outside [%g, %g]", key, x,
                         lo, hi);
    *out = x;
    return HC_OK;
}

/* Checks that a template only uses the given fields; `{{` and `}}` are literal braces. */
static int check_template(const char *t, const char *name, const char *const *fields, int n_fields,
                          hc_errbuf *eb) {
    for (const char *p = t; *p; p++) {
        if (p[0] == '{' && p[1] == '{') {
            p++;
            continue;
        }
        if (p[0] == '}' && p[1] == '}') {
            p++;
            continue;
        }
        if (*p == '}')
            return hc_seterr(eb, HC_ERR_FORMAT,
                             "creator.json: templates.%s: unmatched '}' (write '}}' for a literal "
                             "brace)", name);
        if (*p != '{') continue;
        const char *end = strchr(p, '}');
        int ok = 0;
        for (int i = 0; end && i < n_fields; i++)
            ok |= (size_t)(end - p - 1) == strlen(fields[i]) &&
                  !strncmp(p + 1, fields[i], (size_t)(end - p - 1));
        if (!ok)
            return hc_seterr(eb, HC_ERR_FORMAT,
                             "creator.json: templates.%s: unknown field '%.*s' (allowed: %s; write "
                             "'{{' for a literal brace)", name,
                             end ? (int)(end - p + 1) : 8, p,
                             n_fields ? "{title}, {description}" : "none");
        p = end;
    }
    return HC_OK;
}

static char *dup_or_null(const char *s) { return s ? strdup(s) : NULL; }

int hc_package_probe(const char *dir, hc_errbuf *eb) {
    struct stat sb;
    if (!dir) return hc_seterr(eb, HC_ERR_INVAL, "hc_package_probe: NULL directory");
    if (stat(dir, &sb) != 0) return hc_seterr(eb, HC_ERR_IO, "%s: %s", dir, strerror(errno));
    if (!S_ISDIR(sb.st_mode))
        return hc_seterr(eb, HC_ERR_INVAL, "%s: is not a directory (a model package or a Hugging "
                                           "Face model directory)", dir);
    if (access(dir, R_OK | X_OK) != 0)
        return hc_seterr(eb, HC_ERR_IO, "%s: cannot read the directory: %s", dir,
                         strerror(errno));
    char *path = join(dir, "creator.json");
    if (!path) return hc_seterr(eb, HC_ERR_NOMEM, "%s: out of memory", dir);
    int rc = HC_OK;
    if (lstat(path, &sb) != 0) {
        rc = errno == ENOENT ? HC_ERR_NOTFOUND
                             : hc_seterr(eb, HC_ERR_IO, "%s: %s", path, strerror(errno));
    } else if (stat(path, &sb) != 0) { /* a dangling or looping symlink */
        rc = hc_seterr(eb, HC_ERR_IO, "%s: %s", path, strerror(errno));
    } else if (hc_file_kind(sb.st_mode)) {
        rc = hc_seterr(eb, HC_ERR_FORMAT, "%s: is %s, not a regular file", path,
                       hc_file_kind(sb.st_mode));
    } else if (access(path, R_OK) != 0) {
        rc = hc_seterr(eb, HC_ERR_IO, "%s: %s", path, strerror(errno));
    }
    free(path);
    return rc;
}

int hc_package_load(hc_package *pkg, const char *dir, hc_errbuf *eb) {
    return hc_package_load_ex(pkg, dir, NULL, eb);
}

/* Joins a creator.json path to the package directory and, when confined, checks where it leads. */
static int resolve_path(const hc_package *pkg, const char *field, const char *value, char **out,
                        hc_errbuf *eb) {
    if (!(*out = join(pkg->dir, value)))
        return hc_seterr(eb, HC_ERR_NOMEM, "creator.json: out of memory");
    char what[320];
    snprintf(what, sizeof what, "creator.json: \"%s\" = \"%.200s\"", field, value);
    return hc_path_check_inside(*out, pkg->root, what, eb);
}

int hc_package_load_ex(hc_package *pkg, const char *dir, const hc_package_params *params,
                       hc_errbuf *eb) {
    memset(pkg, 0, sizeof *pkg);
    hc_package_params defp = {0};
    const hc_package_params *opt = params ? params : &defp;
    char *root_dir = NULL;
    if (!opt->allow_outside_paths && !(root_dir = hc_path_canonical(dir))) {
        int e = errno;
        return hc_seterr(eb, e == ENOENT ? HC_ERR_NOTFOUND : HC_ERR_IO, "%s: %s", dir,
                         strerror(e));
    }
    char *path = join(dir, "creator.json"), *text = NULL;
    size_t len = 0;
    int rc = path ? hc_read_file_in(path, root_dir, HC_PACKAGE_MAX_MANIFEST, &text, &len, eb)
                  : hc_seterr(eb, HC_ERR_NOMEM, "%s: out of memory", dir);
    if (rc == HC_ERR_NOTFOUND)
        hc_seterr(eb, rc, "%s: not found (is this a model package directory?)", path);
    json_t *root = NULL;
    json_error_t jerr;
    if (rc == HC_OK && !(root = json_loadb(text, len, JSON_REJECT_DUPLICATES, &jerr)))
        rc = hc_json_seterr(eb, HC_ERR_FORMAT, path, &jerr);
    free(text);
    free(path);
    if (rc) {
        free(root_dir);
        return rc;
    }
    pkg->root = root_dir;
    const char *s = NULL;
    if (!json_is_object(root)) {
        rc = hc_seterr(eb, HC_ERR_FORMAT, "creator.json: not a JSON object");
        goto done;
    }
    if ((rc = get_str(root, "format", NULL, 1, &s, eb))) goto done;
    if (strcmp(s, "hllm-creator-package") != 0) {
        rc = hc_seterr(eb, HC_ERR_UNSUPPORTED, "creator.json: format \"%s\" is not "
                                               "\"hllm-creator-package\"", s);
        goto done;
    }
    int version = -1;
    if ((rc = get_int(root, "version", -1, -1, 1 << 20, &version, eb))) goto done;
    if (version != HC_PACKAGE_VERSION) {
        rc = hc_seterr(eb, HC_ERR_UNSUPPORTED, "creator.json: package version %d; this build reads "
                                               "version %d", version, HC_PACKAGE_VERSION);
        goto done;
    }
    if (!(pkg->dir = strdup(dir))) {
        rc = HC_ERR_NOMEM;
        goto done;
    }
    static const struct {
        const char *key, *def;
        size_t off;
    } paths[] = {
        {"item_llm", "item_llm", offsetof(hc_package, item_llm_dir)},
        {"user_llm", "user_llm", offsetof(hc_package, user_llm_dir)},
        {"creative_llm", "creative_llm", offsetof(hc_package, creative_llm_dir)},
        {"item_tokenizer", "item_tokenizer", offsetof(hc_package, item_tokenizer_dir)},
        {"creative_tokenizer", "creative_tokenizer", offsetof(hc_package, creative_tokenizer_dir)},
        {"weights", "model.safetensors", offsetof(hc_package, weights)},
    };
    for (size_t i = 0; i < sizeof paths / sizeof paths[0]; i++) {
        if ((rc = get_str(root, paths[i].key, paths[i].def, 1, &s, eb))) goto done;
        char **dst = (char **)((char *)pkg + paths[i].off);
        if ((rc = resolve_path(pkg, paths[i].key, s, dst, eb))) goto done;
    }
    if ((rc = get_int(root, "max_history", 50, 1, 100000, &pkg->max_history, eb)) ||
        (rc = get_int(root, "max_item_tokens", 64, 1, 1 << 20, &pkg->max_item_tokens, eb)) ||
        (rc = get_int(root, "max_prompt_tokens", 4096, 8, 1 << 24, &pkg->max_prompt_tokens, eb)) ||
        (rc = get_int(root, "title_max_chars", 768, 1, 1 << 24, &pkg->title_max_chars, eb)) ||
        (rc = get_int(root, "description_max_chars", 4096, 0, 1 << 24,
                      &pkg->description_max_chars, eb)))
        goto done;
    int slot = 0;
    if ((rc = get_int(root, "slot_token_id", 0, 0, 1 << 30, &slot, eb))) goto done;
    pkg->slot_token_id = slot;
    json_t *tpl = json_object_get(root, "templates");
    if (!json_is_object(tpl)) {
        rc = hc_seterr(eb, HC_ERR_FORMAT, "creator.json: \"templates\" must be an object with "
                                          "user_prompt, prompt1 and prompt2");
        goto done;
    }
    static const char *const fields[] = {"title", "description"};
    const char *up, *p1, *p2, *pp;
    if ((rc = get_str(tpl, "user_prompt", NULL, 1, &up, eb)) ||
        (rc = get_str(tpl, "prompt1", NULL, 1, &p1, eb)) ||
        (rc = get_str(tpl, "prompt2", NULL, 1, &p2, eb)) ||
        (rc = get_str(tpl, "profile_prompt", NULL, 0, &pp, eb)))
        goto done;
    if ((rc = check_template(p2, "prompt2", fields, 2, eb))) goto done;
    pkg->user_prompt = strdup(up);
    pkg->prompt1 = strdup(p1);
    pkg->prompt2 = strdup(p2);
    pkg->profile_prompt = dup_or_null(pp);
    json_t *eos = json_object_get(root, "creative_eos_ids");
    if (eos && !json_is_null(eos)) {
        if (!json_is_array(eos) || json_array_size(eos) > HC_PACKAGE_MAX_EOS) {
            rc = hc_seterr(eb, HC_ERR_FORMAT, "creator.json: \"creative_eos_ids\" must be a list "
                                              "of at most %d ids", HC_PACKAGE_MAX_EOS);
            goto done;
        }
        for (size_t i = 0; i < json_array_size(eos); i++) {
            json_t *e = json_array_get(eos, i);
            if (!json_is_integer(e) || json_integer_value(e) < 0 ||
                json_integer_value(e) > INT32_MAX) {
                rc = hc_seterr(eb, HC_ERR_FORMAT, "creator.json: creative_eos_ids[%zu] is not a "
                                                  "token id", i);
                goto done;
            }
            pkg->eos_ids[pkg->n_eos++] = (int32_t)json_integer_value(e);
        }
    }
    json_t *cl = json_object_get(root, "cluster");
    pkg->assign = HC_ASSIGN_IP;
    if (cl && !json_is_null(cl)) {
        if (!json_is_object(cl)) {
            rc = hc_seterr(eb, HC_ERR_FORMAT, "creator.json: \"cluster\" must be an object");
            goto done;
        }
        const char *cpath, *rule;
        if ((rc = get_str(cl, "centroids", NULL, 0, &cpath, eb)) ||
            (rc = get_str(cl, "assign", "ip", 0, &rule, eb)))
            goto done;
        if (cpath && (rc = resolve_path(pkg, "cluster.centroids", cpath, &pkg->centroids, eb)))
            goto done;
        hc_errbuf sub;
        if (hc_assign_rule_parse(&pkg->assign, rule, &sub)) {
            rc = hc_seterr(eb, HC_ERR_FORMAT, "creator.json: cluster.assign \"%s\": expected "
                                              "\"ip\", \"cosine\" or \"l2\"", rule);
            goto done;
        }
    }
    json_t *smp = json_object_get(root, "sampling");
    double t = 0.8, tp = 0.95;
    int tk = 50, greedy = 0;
    pkg->max_new_tokens = 128;
    if (smp && !json_is_null(smp)) {
        if (!json_is_object(smp)) {
            rc = hc_seterr(eb, HC_ERR_FORMAT, "creator.json: \"sampling\" must be an object");
            goto done;
        }
        json_t *g = json_object_get(smp, "greedy");
        if (g && !json_is_boolean(g)) {
            rc = hc_seterr(eb, HC_ERR_FORMAT, "creator.json: sampling.greedy must be a boolean");
            goto done;
        }
        greedy = g && json_is_true(g);
        if ((rc = get_num(smp, "temperature", 0.8, 0, 100, &t, eb)) ||
            (rc = get_int(smp, "top_k", 50, 0, 1 << 30, &tk, eb)) ||
            (rc = get_num(smp, "top_p", 0.95, 1e-6, 1, &tp, eb)) ||
            (rc = get_int(smp, "max_new_tokens", 128, 0, 1 << 20, &pkg->max_new_tokens, eb)))
            goto done;
    }
    pkg->sampling.greedy = greedy || t == 0;
    pkg->sampling.temperature = (float)t;
    pkg->sampling.top_k = tk;
    pkg->sampling.top_p = (float)tp;
    pkg->sampling.seed = 0;
    if (!pkg->user_prompt || !pkg->prompt1 || !pkg->prompt2)
        rc = hc_seterr(eb, HC_ERR_NOMEM, "creator.json: out of memory");
done:
    json_decref(root);
    if (rc) hc_package_free(pkg);
    return rc;
}

void hc_package_free(hc_package *pkg) {
    char *ptrs[] = {pkg->dir,          pkg->root,          pkg->item_llm_dir,
                    pkg->user_llm_dir, pkg->creative_llm_dir, pkg->item_tokenizer_dir,
                    pkg->creative_tokenizer_dir, pkg->weights, pkg->centroids,
                    pkg->user_prompt,  pkg->prompt1,       pkg->prompt2,
                    pkg->profile_prompt};
    for (size_t i = 0; i < sizeof ptrs / sizeof ptrs[0]; i++) free(ptrs[i]);
    memset(pkg, 0, sizeof *pkg);
}

/* Byte length of the first max_cp code points of s (s is valid UTF-8). */
static size_t utf8_prefix(const char *s, size_t len, int max_cp) {
    size_t i = 0;
    int cp = 0;
    while (i < len && cp < max_cp) {
        unsigned char c = (unsigned char)s[i];
        size_t n = c < 0x80 ? 1 : c < 0xE0 ? 2 : c < 0xF0 ? 3 : 4;
        if (i + n > len) n = len - i;
        i += n;
        cp++;
    }
    return i;
}

char *hc_package_render_prompt2(const hc_package *pkg, const char *title, size_t title_len,
                                const char *desc, size_t desc_len, size_t *len) {
    if (!desc) {
        desc = "None";
        desc_len = 4;
    }
    title_len = utf8_prefix(title, title_len, pkg->title_max_chars);
    desc_len = utf8_prefix(desc, desc_len, pkg->description_max_chars);
    const char *t = pkg->prompt2;
    size_t cap = strlen(t) + title_len + desc_len + 1, n = 0;
    /* a template may use each field more than once: grow as needed */
    char *out = malloc(cap);
    if (!out) return NULL;
    for (const char *p = t; *p;) {
        const char *ins = NULL;
        size_t ins_len = 1, skip = 1;
        if (p[0] == '{' && p[1] == '{') {
            ins = "{";
            skip = 2;
        } else if (p[0] == '}' && p[1] == '}') {
            ins = "}";
            skip = 2;
        } else if (!strncmp(p, "{title}", 7)) {
            ins = title;
            ins_len = title_len;
            skip = 7;
        } else if (!strncmp(p, "{description}", 13)) {
            ins = desc;
            ins_len = desc_len;
            skip = 13;
        } else {
            ins = p;
        }
        if (n + ins_len + 1 > cap) {
            cap = (n + ins_len + 1) * 2;
            char *o = realloc(out, cap);
            if (!o) {
                free(out);
                return NULL;
            }
            out = o;
        }
        memcpy(out + n, ins, ins_len);
        n += ins_len;
        p += skip;
    }
    out[n] = 0;
    *len = n;
    return out;
}
