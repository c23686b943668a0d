/* tokenizer.c: loading a Hugging Face tokenizer.json (+ tokenizer_config.json,
 * generation_config.json) into an immutable hc_tokenizer, and the vocabulary lookups.
 *
 * Every component is checked at load: an unknown or unsupported `type` is HC_ERR_UNSUPPORTED
 * with the component named ("pre_tokenizer type 'Digits' is not supported"), a missing or
 * ill-typed field is HC_ERR_FORMAT naming the field. After a successful load nothing is ever
 * written again, which is what makes the tokenizer shareable between threads.
 */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tokenizer/tokenizer_internal.h"
#include "core/fileio.h"

/* ---- arena ----------------------------------------------------------------------------------- */

static int arena_add(hc_tokenizer *t, const char *s, size_t n, hc_tk_str *out) {
    if (t->arena_len + n + 1 > t->arena_cap) {
        size_t cap = t->arena_cap ? t->arena_cap : 1 << 16;
        while (cap < t->arena_len + n + 1)
            cap *= 2;
        if (cap > UINT32_MAX) return HC_ERR_NOMEM;
        char *p = realloc(t->arena, cap);
        if (!p) return HC_ERR_NOMEM;
        t->arena = p;
        t->arena_cap = cap;
    }
    if (n) memcpy(t->arena + t->arena_len, s, n);
    t->arena[t->arena_len + n] = 0;
    out->off = (uint32_t)t->arena_len;
    out->len = (uint32_t)n;
    t->arena_len += n + 1;
    return 0;
}

/* ---- JSON helpers ---------------------------------------------------------------------------- */

static const char *jstr(json_t *o, const char *key, size_t *len) {
    json_t *v = json_object_get(o, key);
    if (!json_is_string(v)) return NULL;
    if (len) *len = json_string_length(v);
    return json_string_value(v);
}

static int jbool(json_t *o, const char *key, int def) {
    json_t *v = json_object_get(o, key);
    return json_is_boolean(v) ? json_is_true(v) : def;
}

static const char *jtype(json_t *o) {
    const char *s = jstr(o, "type", NULL);
    return s ? s : "(none)";
}

/* One code point string (Strip content, Metaspace replacement). */
static int one_char(const char *s, size_t n, uint32_t *cp) {
    if (!s || n == 0 || hc_tk_utf8_valid_prefix((const uint8_t *)s, n) != n) return -1;
    size_t adv;
    *cp = hc_tk_utf8_decode1(s, n, &adv);
    return adv == n ? 0 : -1;
}

/* {"String": s} or {"Regex": r}: literal into *lit, or a compiled regex into *re. */
static int parse_pattern(hc_tokenizer *t, json_t *pat, const char *what, int split_literal_as_regex,
                         hc_tk_str *lit, pcre2_code **re, hc_errbuf *eb) {
    size_t n = 0;
    const char *s;
    *re = NULL;
    lit->off = 0;
    lit->len = HC_TK_NONE;
    if ((s = jstr(pat, "String", &n))) {
        if (split_literal_as_regex) {
            *re = hc_tk_regex_compile(s, n, 1, eb);
            return *re ? 0 : HC_ERR_FORMAT;
        }
        return arena_add(t, s, n, lit);
    }
    if ((s = jstr(pat, "Regex", &n))) {
        *re = hc_tk_regex_compile(s, n, 0, eb);
        return *re ? 0 : HC_ERR_FORMAT;
    }
    return hc_seterr(eb, HC_ERR_FORMAT, "%s: pattern must be {\"String\": ...} or {\"Regex\": ...}",
                     what);
}

static int prepend_scheme(json_t *o, int *scheme) {
    const char *ps = jstr(o, "prepend_scheme", NULL);
    if (ps) {
        if (!strcmp(ps, "always"))
            *scheme = HC_TK_PREPEND_ALWAYS;
        else if (!strcmp(ps, "first"))
            *scheme = HC_TK_PREPEND_FIRST;
        else if (!strcmp(ps, "never"))
            *scheme = HC_TK_PREPEND_NEVER;
        else
            return -1;
        return 0;
    }
    /* legacy form */
    *scheme = jbool(o, "add_prefix_space", 1) ? HC_TK_PREPEND_ALWAYS : HC_TK_PREPEND_NEVER;
    return 0;
}

/* ---- components ------------------------------------------------------------------------------ */

static int grow(void **p, size_t n, size_t elem) {
    void *q = realloc(*p, (n + 1) * elem);
    if (!q) return HC_ERR_NOMEM;
    *p = q;
    return 0;
}

static int parse_normalizer(hc_tokenizer *t, json_t *o, hc_errbuf *eb) {
    if (json_is_null(o) || !o) return 0;
    if (!json_is_object(o))
        return hc_seterr(eb, HC_ERR_FORMAT, "normalizer must be an object or null");
    const char *ty = jtype(o);
    if (!strcmp(ty, "Sequence")) {
        json_t *arr = json_object_get(o, "normalizers");
        if (!json_is_array(arr))
            return hc_seterr(eb, HC_ERR_FORMAT, "normalizer Sequence: 'normalizers' missing");
        size_t i;
        json_t *c;
        json_array_foreach(arr, i, c) {
            int rc = parse_normalizer(t, c, eb);
            if (rc) return rc;
        }
        return 0;
    }
    hc_tk_norm nm;
    memset(&nm, 0, sizeof nm);
    nm.pattern.len = nm.content.len = HC_TK_NONE;
    size_t n = 0;
    const char *s;
    int rc = 0;
    if (!strcmp(ty, "Prepend")) {
        nm.type = HC_TK_NORM_PREPEND;
        if (!(s = jstr(o, "prepend", &n)))
            return hc_seterr(eb, HC_ERR_FORMAT, "normalizer Prepend: 'prepend' missing");
        rc = arena_add(t, s, n, &nm.content);
    } else if (!strcmp(ty, "Replace")) {
        nm.type = HC_TK_NORM_REPLACE;
        if (!(s = jstr(o, "content", &n)))
            return hc_seterr(eb, HC_ERR_FORMAT, "normalizer Replace: 'content' missing");
        rc = arena_add(t, s, n, &nm.content);
        if (!rc)
            rc = parse_pattern(t, json_object_get(o, "pattern"), "normalizer Replace", 0,
                               &nm.pattern, &nm.re, eb);
    } else if (!strcmp(ty, "NFC")) {
        nm.type = HC_TK_NORM_NFC;
    } else {
        return hc_seterr(eb, HC_ERR_UNSUPPORTED, "normalizer type '%s' is not supported", ty);
    }
    if (rc) return rc == HC_ERR_NOMEM ? hc_seterr(eb, rc, "out of memory") : rc;
    if (grow((void **)&t->norms, t->n_norms, sizeof nm)) {
        pcre2_code_free(nm.re);
        return hc_seterr(eb, HC_ERR_NOMEM, "out of memory");
    }
    t->norms[t->n_norms++] = nm;
    return 0;
}

#define GPT2_REGEX                                                                                 \
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+"

static int parse_pre(hc_tokenizer *t, json_t *o, hc_errbuf *eb) {
    if (json_is_null(o) || !o) return 0;
    if (!json_is_object(o))
        return hc_seterr(eb, HC_ERR_FORMAT, "pre_tokenizer must be an object or null");
    const char *ty = jtype(o);
    if (!strcmp(ty, "Sequence")) {
        json_t *arr = json_object_get(o, "pretokenizers");
        if (!json_is_array(arr))
            return hc_seterr(eb, HC_ERR_FORMAT, "pre_tokenizer Sequence: 'pretokenizers' missing");
        size_t i;
        json_t *c;
        json_array_foreach(arr, i, c) {
            int rc = parse_pre(t, c, eb);
            if (rc) return rc;
        }
        return 0;
    }
    hc_tk_pre pr;
    memset(&pr, 0, sizeof pr);
    if (!strcmp(ty, "Split")) {
        pr.type = HC_TK_PRE_SPLIT;
        hc_tk_str lit;
        int rc = parse_pattern(t, json_object_get(o, "pattern"), "pre_tokenizer Split", 1, &lit,
                               &pr.re, eb);
        if (rc) return rc;
        const char *b = jstr(o, "behavior", NULL);
        if (!b) b = "";
        if (!strcmp(b, "Removed"))
            pr.behavior = HC_TK_SPLIT_REMOVED;
        else if (!strcmp(b, "Isolated"))
            pr.behavior = HC_TK_SPLIT_ISOLATED;
        else if (!strcmp(b, "MergedWithPrevious"))
            pr.behavior = HC_TK_SPLIT_MERGED_PREV;
        else if (!strcmp(b, "MergedWithNext"))
            pr.behavior = HC_TK_SPLIT_MERGED_NEXT;
        else if (!strcmp(b, "Contiguous"))
            pr.behavior = HC_TK_SPLIT_CONTIGUOUS;
        else {
            pcre2_code_free(pr.re);
            return hc_seterr(eb, HC_ERR_FORMAT, "pre_tokenizer Split: bad behavior '%s'", b);
        }
        pr.invert = jbool(o, "invert", 0);
    } else if (!strcmp(ty, "ByteLevel")) {
        pr.type = HC_TK_PRE_BYTELEVEL;
        pr.add_prefix_space = jbool(o, "add_prefix_space", 1);
        pr.use_regex = jbool(o, "use_regex", 1);
        if (pr.use_regex && !(pr.re = hc_tk_regex_compile(GPT2_REGEX, strlen(GPT2_REGEX), 0, eb)))
            return HC_ERR_FORMAT;
    } else if (!strcmp(ty, "Metaspace")) {
        pr.type = HC_TK_PRE_METASPACE;
        size_t n = 0;
        const char *s = jstr(o, "replacement", &n);
        if (one_char(s, n, &pr.replacement))
            return hc_seterr(eb, HC_ERR_FORMAT, "pre_tokenizer Metaspace: bad 'replacement'");
        pr.rep_len = (int)hc_tk_utf8_encode(pr.replacement, pr.rep);
        if (prepend_scheme(o, &pr.prepend_scheme))
            return hc_seterr(eb, HC_ERR_FORMAT, "pre_tokenizer Metaspace: bad 'prepend_scheme'");
        pr.split = jbool(o, "split", 1);
    } else {
        return hc_seterr(eb, HC_ERR_UNSUPPORTED, "pre_tokenizer type '%s' is not supported", ty);
    }
    if (grow((void **)&t->pres, t->n_pres, sizeof pr)) {
        pcre2_code_free(pr.re);
        return hc_seterr(eb, HC_ERR_NOMEM, "out of memory");
    }
    t->pres[t->n_pres++] = pr;
    return 0;
}

static int parse_decoder(hc_tokenizer *t, json_t *o, hc_errbuf *eb) {
    if (json_is_null(o) || !o) return 0;
    if (!json_is_object(o))
        return hc_seterr(eb, HC_ERR_FORMAT, "decoder must be an object or null");
    t->has_decoder = 1;
    const char *ty = jtype(o);
    if (!strcmp(ty, "Sequence")) {
        json_t *arr = json_object_get(o, "decoders");
        if (!json_is_array(arr))
            return hc_seterr(eb, HC_ERR_FORMAT, "decoder Sequence: 'decoders' missing");
        size_t i;
        json_t *c;
        json_array_foreach(arr, i, c) {
            int rc = parse_decoder(t, c, eb);
            if (rc) return rc;
        }
        return 0;
    }
    hc_tk_dec d;
    memset(&d, 0, sizeof d);
    d.pattern.len = d.content.len = HC_TK_NONE;
    size_t n = 0;
    const char *s;
    if (!strcmp(ty, "Replace")) {
        d.type = HC_TK_DEC_REPLACE;
        if (!(s = jstr(o, "content", &n)))
            return hc_seterr(eb, HC_ERR_FORMAT, "decoder Replace: 'content' missing");
        int rc = arena_add(t, s, n, &d.content);
        if (!rc)
            rc = parse_pattern(t, json_object_get(o, "pattern"), "decoder Replace", 0, &d.pattern,
                               &d.re, eb);
        if (rc) return rc == HC_ERR_NOMEM ? hc_seterr(eb, rc, "out of memory") : rc;
    } else if (!strcmp(ty, "ByteFallback")) {
        d.type = HC_TK_DEC_BYTEFALLBACK;
    } else if (!strcmp(ty, "Fuse")) {
        d.type = HC_TK_DEC_FUSE;
    } else if (!strcmp(ty, "Strip")) {
        d.type = HC_TK_DEC_STRIP;
        s = jstr(o, "content", &n);
        json_t *st = json_object_get(o, "start"), *sp = json_object_get(o, "stop");
        if (one_char(s, n, &d.strip_char) || !json_is_integer(st) || !json_is_integer(sp) ||
            json_integer_value(st) < 0 || json_integer_value(sp) < 0)
            return hc_seterr(eb, HC_ERR_FORMAT,
                             "decoder Strip: needs one-char 'content', 'start', 'stop'");
        d.start = (size_t)json_integer_value(st);
        d.stop = (size_t)json_integer_value(sp);
    } else if (!strcmp(ty, "ByteLevel")) {
        d.type = HC_TK_DEC_BYTELEVEL;
    } else if (!strcmp(ty, "Metaspace")) {
        d.type = HC_TK_DEC_METASPACE;
        s = jstr(o, "replacement", &n);
        if (one_char(s, n, &d.replacement))
            return hc_seterr(eb, HC_ERR_FORMAT, "decoder Metaspace: bad 'replacement'");
        d.rep_len = (int)hc_tk_utf8_encode(d.replacement, d.rep);
        if (prepend_scheme(o, &d.prepend_scheme))
            return hc_seterr(eb, HC_ERR_FORMAT, "decoder Metaspace: bad 'prepend_scheme'");
    } else {
        return hc_seterr(eb, HC_ERR_UNSUPPORTED, "decoder type '%s' is not supported", ty);
    }
    if (grow((void **)&t->decs, t->n_decs, sizeof d)) {
        pcre2_code_free(d.re);
        return hc_seterr(eb, HC_ERR_NOMEM, "out of memory");
    }
    t->decs[t->n_decs++] = d;
    return 0;
}

/* ---- model ----------------------------------------------------------------------------------- */

static int64_t model_id(const hc_tokenizer *t, const char *s, size_t n) {
    return hc_tk_strmap_get(&t->vocab, t, t->model_str, s, n);
}

static int grow_pairmap(hc_tk_pairmap *m) {
    hc_tk_pairmap n;
    if (hc_tk_pairmap_init(&n, (size_t)m->mask + 1)) return HC_ERR_NOMEM;
    for (uint64_t i = 0; i <= m->mask; i++)
        if (m->keys[i]) {
            uint64_t k = m->keys[i] - 1;
            hc_tk_pairmap_put(&n, (uint32_t)(k >> 32), (uint32_t)k, m->rank[i], m->new_id[i]);
        }
    free(m->keys);
    free(m->rank);
    free(m->new_id);
    *m = n;
    return 0;
}

static int parse_model(hc_tokenizer *t, json_t *m, const char *doc, const size_t vspan[2],
                       const size_t mspan[2], hc_errbuf *eb) {
    if (!json_is_object(m)) return hc_seterr(eb, HC_ERR_FORMAT, "'model' missing or not an object");
    const char *ty = jstr(m, "type", NULL);
    if (!ty && json_object_get(m, "merges")) ty = "BPE"; /* type may be omitted for BPE */
    if (!ty || strcmp(ty, "BPE"))
        return hc_seterr(eb, HC_ERR_UNSUPPORTED, "model type '%s' is not supported (only BPE)",
                         ty ? ty : "(none)");
    json_t *dr = json_object_get(m, "dropout");
    if (json_is_number(dr) && json_number_value(dr) > 0.0)
        return hc_seterr(eb, HC_ERR_UNSUPPORTED, "model BPE: dropout is not supported");
    const char *aff[] = {"continuing_subword_prefix", "end_of_word_suffix"};
    for (int i = 0; i < 2; i++) {
        json_t *v = json_object_get(m, aff[i]);
        if (v && !json_is_null(v) && !(json_is_string(v) && json_string_length(v) == 0))
            return hc_seterr(eb, HC_ERR_UNSUPPORTED, "model BPE: non-empty %s is not supported",
                             aff[i]);
    }
    /* model.vocab and model.merges come from the fast scanner (tokenizer_json.c) */
    const char *e = doc + vspan[1], *p = hc_tk_json_ws(doc + vspan[0], e);
    hc_tk_buf key = {0}, pairs = {0}; /* pairs: (hc_tk_str, int32 id) */
    long long max_id = -1;
    int rc = 0;
    if (p >= e || *p != '{')
        return hc_seterr(eb, HC_ERR_FORMAT, "model.vocab missing or not an object");
    p = hc_tk_json_ws(p + 1, e);
    while (!rc && p < e && *p != '}') {
        key.len = 0;
        long long id;
        hc_tk_str str;
        if (hc_tk_json_string(&p, e, &key) || (p = hc_tk_json_ws(p, e)) >= e || *p != ':' ||
            hc_tk_json_int((p = hc_tk_json_ws(p + 1, e), &p), e, &id)) {
            rc = hc_seterr(eb, HC_ERR_FORMAT, "model.vocab: malformed entry near byte %zu",
                           (size_t)(p - doc));
            break;
        }
        if (id < 0 || id >= (1 << 30)) {
            rc = hc_seterr(eb, HC_ERR_FORMAT, "model.vocab: id %lld of '%.*s' is out of range",
                           id, (int)(key.len > 100 ? 100 : key.len), key.p);
            break;
        }
        if (id > max_id) max_id = id;
        int32_t id32 = (int32_t)id;
        if (arena_add(t, key.p ? key.p : "", key.len, &str) ||
            hc_tk_buf_put(&pairs, &str, sizeof str) || hc_tk_buf_put(&pairs, &id32, sizeof id32)) {
            rc = hc_seterr(eb, HC_ERR_NOMEM, "out of memory");
            break;
        }
        p = hc_tk_json_ws(p, e);
        if (p < e && *p == ',')
            p = hc_tk_json_ws(p + 1, e);
        else if (p >= e || *p != '}')
            rc = hc_seterr(eb, HC_ERR_FORMAT, "model.vocab: expected ',' or '}'");
    }
    t->n_model = (size_t)(max_id + 1);
    t->model_str = rc ? NULL : malloc((t->n_model ? t->n_model : 1) * sizeof *t->model_str);
    if (!rc && !t->model_str) rc = hc_seterr(eb, HC_ERR_NOMEM, "out of memory");
    if (!rc) {
        for (size_t i = 0; i < t->n_model; i++)
            t->model_str[i] = (hc_tk_str){0, HC_TK_NONE};
        for (size_t o = 0; o < pairs.len; o += sizeof(hc_tk_str) + sizeof(int32_t)) {
            hc_tk_str str;
            int32_t id32;
            memcpy(&str, pairs.p + o, sizeof str);
            memcpy(&id32, pairs.p + o + sizeof str, sizeof id32);
            t->model_str[id32] = str;
        }
        if (hc_tk_strmap_build(&t->vocab, t, t->model_str, t->n_model))
            rc = hc_seterr(eb, HC_ERR_NOMEM, "out of memory");
    }
    hc_tk_buf_free(&pairs);
    if (rc) {
        hc_tk_buf_free(&key);
        return rc;
    }

    /* merges: ["a b", ...] or [["a", "b"], ...]; rank = position */
    hc_tk_buf a = {0}, b = {0};
    size_t n_merges = 0;
    if (mspan[1] > mspan[0]) {
        e = doc + mspan[1];
        p = hc_tk_json_ws(doc + mspan[0], e);
        if (p >= e || *p != '[') rc = hc_seterr(eb, HC_ERR_FORMAT, "model.merges is not an array");
        size_t guess = (mspan[1] - mspan[0]) / 8;
        if (!rc && hc_tk_pairmap_init(&t->merges, guess))
            rc = hc_seterr(eb, HC_ERR_NOMEM, "out of memory");
        if (!rc) p = hc_tk_json_ws(p + 1, e);
        while (!rc && p < e && *p != ']') {
            a.len = b.len = 0;
            size_t al, i = n_merges;
            const char *bs;
            if (*p == '"') {
                if (hc_tk_json_string(&p, e, &a)) {
                    rc = hc_seterr(eb, HC_ERR_FORMAT, "model.merges[%zu]: malformed string", i);
                    break;
                }
                const char *sp = memchr(a.p ? a.p : "", ' ', a.len);
                if (!sp) {
                    rc = hc_seterr(eb, HC_ERR_FORMAT, "model.merges[%zu]: '%.*s' is not 'a b'", i,
                                   (int)(a.len > 100 ? 100 : a.len), a.p ? a.p : "");
                    break;
                }
                al = (size_t)(sp - a.p);
                if (hc_tk_buf_put(&b, sp + 1, a.len - al - 1)) rc = HC_ERR_NOMEM;
            } else if (*p == '[') {
                p = hc_tk_json_ws(p + 1, e);
                if (hc_tk_json_string(&p, e, &a) || (p = hc_tk_json_ws(p, e)) >= e || *p != ',' ||
                    hc_tk_json_string((p = hc_tk_json_ws(p + 1, e), &p), e, &b) ||
                    (p = hc_tk_json_ws(p, e)) >= e || *p != ']') {
                    rc = hc_seterr(eb, HC_ERR_FORMAT, "model.merges[%zu] is not [string, string]",
                                   i);
                    break;
                }
                p++;
                al = a.len;
            } else {
                rc = hc_seterr(eb, HC_ERR_FORMAT, "model.merges[%zu] is neither \"a b\" nor [a, b]",
                               i);
                break;
            }
            if (rc ||
                (n_merges + 1) * 2 > (size_t)t->merges.mask) { /* keep the load factor <= 1/2 */
                if (!rc) rc = grow_pairmap(&t->merges);
                if (rc) {
                    rc = hc_seterr(eb, HC_ERR_NOMEM, "out of memory");
                    break;
                }
            }
            bs = b.p ? b.p : "";
            int64_t ia = model_id(t, a.p, al), ib = model_id(t, bs, b.len);
            a.len = al;
            if (hc_tk_buf_put(&a, bs, b.len)) {
                rc = hc_seterr(eb, HC_ERR_NOMEM, "out of memory");
                break;
            }
            int64_t ic = model_id(t, a.p, a.len);
            if (ia < 0 || ib < 0 || ic < 0) {
                rc = hc_seterr(eb, HC_ERR_FORMAT,
                               "model.merges[%zu]: '%.*s' + '%.*s' is not in the vocabulary", i,
                               (int)(al > 100 ? 100 : al), a.p, (int)(b.len > 100 ? 100 : b.len),
                               bs);
                break;
            }
            hc_tk_pairmap_put(&t->merges, (uint32_t)ia, (uint32_t)ib, (uint32_t)i, (uint32_t)ic);
            n_merges++;
            p = hc_tk_json_ws(p, e);
            if (p < e && *p == ',')
                p = hc_tk_json_ws(p + 1, e);
            else if (p >= e || *p != ']')
                rc = hc_seterr(eb, HC_ERR_FORMAT, "model.merges: expected ',' or ']'");
        }
    } else if (hc_tk_pairmap_init(&t->merges, 0)) {
        rc = hc_seterr(eb, HC_ERR_NOMEM, "out of memory");
    }
    hc_tk_buf_free(&key);
    hc_tk_buf_free(&a);
    hc_tk_buf_free(&b);
    if (rc) return rc;

    t->unk_id = -1;
    size_t ul;
    const char *unk = jstr(m, "unk_token", &ul);
    if (unk) {
        int64_t id = model_id(t, unk, ul);
        if (id < 0)
            return hc_seterr(eb, HC_ERR_FORMAT, "model.unk_token '%.100s' is not in the vocabulary",
                             unk);
        t->unk_id = (int32_t)id;
    }
    t->fuse_unk = jbool(m, "fuse_unk", 0);
    t->byte_fallback = jbool(m, "byte_fallback", 0);
    t->ignore_merges = jbool(m, "ignore_merges", 0);
    for (int by = 0; by < 256; by++) {
        char name[8];
        snprintf(name, sizeof name, "<0x%02X>", by);
        int64_t id = model_id(t, name, 6);
        t->byte_ids[by] = id < 0 ? -1 : (int32_t)id;
    }
    return 0;
}

/* ---- added tokens ---------------------------------------------------------------------------- */

static int parse_added(hc_tokenizer *t, json_t *arr, hc_errbuf *eb) {
    if (!arr || json_is_null(arr)) return 0;
    if (!json_is_array(arr)) return hc_seterr(eb, HC_ERR_FORMAT, "added_tokens is not an array");
    size_t n = json_array_size(arr);
    t->added = calloc(n ? n : 1, sizeof *t->added);
    if (!t->added) return hc_seterr(eb, HC_ERR_NOMEM, "out of memory");
    for (size_t i = 0; i < n; i++) {
        json_t *o = json_array_get(arr, i), *id = json_object_get(o, "id");
        size_t cl;
        const char *c = jstr(o, "content", &cl);
        if (!c || !json_is_integer(id) || json_integer_value(id) < 0 ||
            json_integer_value(id) >= (1 << 30))
            return hc_seterr(eb, HC_ERR_FORMAT, "added_tokens[%zu]: needs 'id' and 'content'", i);
        hc_tk_added *a = &t->added[i];
        a->id = (int32_t)json_integer_value(id);
        a->special = (uint8_t)jbool(o, "special", 0);
        a->normalized = (uint8_t)jbool(o, "normalized", !a->special);
        a->lstrip = (uint8_t)jbool(o, "lstrip", 0);
        a->rstrip = (uint8_t)jbool(o, "rstrip", 0);
        a->single_word = (uint8_t)jbool(o, "single_word", 0);
        if (arena_add(t, c, cl, &a->content)) return hc_seterr(eb, HC_ERR_NOMEM, "out of memory");
        a->norm_content = a->content;
        t->n_added++;
    }
    return 0;
}

/* Tries and maps that need the normalizer (normalized added tokens match the normalized text). */
static int build_added_index(hc_tokenizer *t, hc_errbuf *eb) {
    hc_tk_str *contents = malloc((t->n_added ? t->n_added : 1) * sizeof *contents);
    if (!contents) return hc_seterr(eb, HC_ERR_NOMEM, "out of memory");
    for (size_t i = 0; i < t->n_added; i++)
        contents[i] = t->added[i].content;
    int rc = hc_tk_strmap_build(&t->added_map, t, contents, t->n_added);
    free(contents);
    if (rc) return hc_seterr(eb, HC_ERR_NOMEM, "out of memory");
    hc_tk_buf out = {0}, tmp = {0};
    pcre2_match_data *md = pcre2_match_data_create(16, NULL);
    if (!md) return hc_seterr(eb, HC_ERR_NOMEM, "out of memory");
    /* special tokens first, then the others, like tokenizers' refresh_added_tokens (only matters
     * when two tokens have the same content) */
    for (int pass = 0; pass < 2 && !rc; pass++) {
        for (size_t i = 0; i < t->n_added && !rc; i++) {
            hc_tk_added *a = &t->added[i];
            if (a->special != (pass == 0)) continue;
            if (a->normalized) {
                rc = hc_tk_normalize(t, hc_tk_s(t, a->content), a->content.len, &out, &tmp, md, eb);
                if (!rc) rc = arena_add(t, out.p ? out.p : "", out.len, &a->norm_content);
                if (!rc)
                    rc = hc_tk_trie_add(&t->trie_norm, hc_tk_s(t, a->norm_content),
                                        a->norm_content.len, (int32_t)i);
            } else {
                rc = hc_tk_trie_add(&t->trie_raw, hc_tk_s(t, a->content), a->content.len,
                                    (int32_t)i);
            }
        }
    }
    hc_tk_buf_free(&out);
    hc_tk_buf_free(&tmp);
    pcre2_match_data_free(md);
    if (rc == HC_ERR_NOMEM) return hc_seterr(eb, rc, "out of memory");
    return rc;
}

/* ---- config files ---------------------------------------------------------------------------- */

static int32_t config_token(const hc_tokenizer *t, json_t *cfg, const char *key) {
    json_t *v = json_object_get(cfg, key);
    if (json_is_object(v)) v = json_object_get(v, "content");
    if (!json_is_string(v)) return -1;
    return hc_tokenizer_token_to_id(t, json_string_value(v), json_string_length(v));
}

static int add_eos_id(hc_tokenizer *t, json_int_t id) {
    if (id < 0 || (size_t)id >= t->n_vocab) return 0;
    for (size_t i = 0; i < t->n_eos_ids; i++)
        if (t->eos_ids[i] == id) return 0;
    if (grow((void **)&t->eos_ids, t->n_eos_ids, sizeof(int32_t))) return HC_ERR_NOMEM;
    t->eos_ids[t->n_eos_ids++] = (int32_t)id;
    return 0;
}

static int parse_config(hc_tokenizer *t, const char *cfg_text, size_t cfg_len, hc_errbuf *eb) {
    t->bos_id = t->eos_id = t->pad_id = -1;
    if (!cfg_text) return 0;
    json_error_t je;
    json_t *cfg = json_loadb(cfg_text, cfg_len, 0, &je);
    if (!cfg) return hc_json_seterr(eb, HC_ERR_FORMAT, "tokenizer_config.json", &je);
    if (!json_is_object(cfg)) {
        json_decref(cfg);
        return hc_seterr(eb, HC_ERR_FORMAT, "tokenizer_config.json: not a JSON object");
    }
    t->bos_id = config_token(t, cfg, "bos_token");
    t->eos_id = config_token(t, cfg, "eos_token");
    t->pad_id = config_token(t, cfg, "pad_token");
    t->add_bos = jbool(cfg, "add_bos_token", 0);
    t->add_eos = jbool(cfg, "add_eos_token", 0);
    json_decref(cfg);
    return add_eos_id(t, t->eos_id) ? hc_seterr(eb, HC_ERR_NOMEM, "out of memory") : 0;
}

/* ---- load ------------------------------------------------------------------------------------ */

static int load_json(hc_tokenizer *t, json_t *root, const char *doc, const size_t vspan[2],
                     const size_t mspan[2], hc_errbuf *eb) {
    if (!json_is_object(root))
        return hc_seterr(eb, HC_ERR_FORMAT, "tokenizer.json: top level is not an object");
    const char *opt[] = {"truncation", "padding"};
    for (int i = 0; i < 2; i++) {
        json_t *v = json_object_get(root, opt[i]);
        if (v && !json_is_null(v))
            return hc_seterr(eb, HC_ERR_UNSUPPORTED,
                             "tokenizer.json: '%s' is not supported (must be null)", opt[i]);
    }
    int rc = parse_model(t, json_object_get(root, "model"), doc, vspan, mspan, eb);
    if (!rc) rc = parse_added(t, json_object_get(root, "added_tokens"), eb);
    if (!rc) rc = parse_normalizer(t, json_object_get(root, "normalizer"), eb);
    if (!rc) rc = parse_pre(t, json_object_get(root, "pre_tokenizer"), eb);
    if (!rc) rc = parse_decoder(t, json_object_get(root, "decoder"), eb);
    if (rc) return rc;
    size_t nv = t->n_model;
    for (size_t i = 0; i < t->n_added; i++)
        if ((size_t)t->added[i].id + 1 > nv) nv = (size_t)t->added[i].id + 1;
    t->n_vocab = nv;
    t->id_str = malloc((nv ? nv : 1) * sizeof *t->id_str);
    t->id_flags = calloc(nv ? nv : 1, 1);
    if (!t->id_str || !t->id_flags) return hc_seterr(eb, HC_ERR_NOMEM, "out of memory");
    for (size_t i = 0; i < nv; i++)
        t->id_str[i] = i < t->n_model ? t->model_str[i] : (hc_tk_str){0, HC_TK_NONE};
    for (size_t i = 0; i < t->n_added; i++) {
        t->id_str[t->added[i].id] = t->added[i].content;
        t->id_flags[t->added[i].id] = (uint8_t)(1 | (t->added[i].special ? 2 : 0));
    }
    return build_added_index(t, eb);
}

int hc_tokenizer_load_json(hc_tokenizer **out, const char *json, size_t json_len,
                           const char *config, size_t config_len, hc_errbuf *eb) {
    *out = NULL;
    hc_tokenizer *t = calloc(1, sizeof *t);
    if (!t) return hc_seterr(eb, HC_ERR_NOMEM, "out of memory");
    t->unk_id = t->bos_id = t->eos_id = t->pad_id = -1;
    json_error_t je;
    size_t vspan[2], mspan[2];
    int rc = 0;
    json_t *root = NULL;
    if (hc_tk_json_find_model_spans(json, json_len, vspan, mspan)) {
        /* no model.vocab found: let jansson say what is wrong with the document */
        root = json_loadb(json, json_len, JSON_ALLOW_NUL, &je);
        if (!root)
            rc = hc_json_seterr(eb, HC_ERR_FORMAT, "tokenizer.json", &je);
        else
            rc = hc_seterr(eb, HC_ERR_FORMAT, "tokenizer.json: model.vocab missing");
    } else {
        /* jansson parses the document with the two big values blanked out */
        char *small = malloc(json_len + 4);
        if (!small) rc = hc_seterr(eb, HC_ERR_NOMEM, "out of memory");
        size_t cuts[2][2] = {{vspan[0], vspan[1]}, {mspan[0], mspan[1]}};
        const char *fill[2] = {"{}", "[]"};
        int order = mspan[1] > mspan[0] && mspan[0] < vspan[0]; /* process spans left to right */
        size_t o = 0, pos = 0;
        for (int k = 0; small && k < 2; k++) {
            int c = order ? 1 - k : k;
            if (cuts[c][1] <= cuts[c][0]) continue;
            memcpy(small + o, json + pos, cuts[c][0] - pos);
            o += cuts[c][0] - pos;
            memcpy(small + o, fill[c], 2);
            o += 2;
            pos = cuts[c][1];
        }
        if (small) {
            memcpy(small + o, json + pos, json_len - pos);
            o += json_len - pos;
            root = json_loadb(small, o, JSON_ALLOW_NUL, &je);
            free(small);
            if (!root)
                rc = hc_json_seterr(eb, HC_ERR_FORMAT,
                                    "tokenizer.json (outside model.vocab/merges)", &je);
            else
                rc = load_json(t, root, json, vspan, mspan, eb);
        }
    }
    json_decref(root);
    if (!rc) rc = parse_config(t, config, config_len, eb);
    if (rc) {
        hc_tokenizer_free(t);
        return rc;
    }
    *out = t;
    return 0;
}

/* Optional side files (tokenizer_config.json, generation_config.json): NULL when absent, and
 * then eb is left as it was (a stale "cannot open" must not outlive the call). */
static int read_optional(const char *path, const char *fs_root, char **buf, size_t *len,
                         hc_errbuf *eb) {
    hc_errbuf sub = {{0}};
    int rc = hc_read_file_in(path, fs_root, (size_t)1 << 24, buf, len, &sub);
    if (rc == HC_ERR_NOTFOUND) return HC_OK;
    return rc ? hc_seterr(eb, rc, "%s", sub.msg) : HC_OK;
}

/* Rewrites a message of hc_tokenizer_load_json to name the file: "tokenizer.json: x" and bare
 * messages get the tokenizer.json path, "tokenizer_config.json: x" the config's. */
static void name_file(hc_errbuf *eb, int rc, const char *dir) {
    if (!eb) return;
    char msg[sizeof eb->msg];
    snprintf(msg, sizeof msg, "%s", eb->msg[0] ? eb->msg : hc_strerror(rc));
    static const char *const files[] = {"tokenizer_config.json", "tokenizer.json"};
    const char *file = files[1], *rest = msg;
    for (int i = 0; i < 2; i++) {
        size_t n = strlen(files[i]);
        if (!strncmp(msg, files[i], n) && (msg[n] == ':' || msg[n] == ' ')) {
            file = files[i];
            rest = msg + n + (msg[n] == ':' ? 2 : 1);
            break;
        }
    }
    hc_seterr(eb, rc, "%s/%s: %s", dir, file, rest);
}

int hc_tokenizer_load(hc_tokenizer **out, const char *dir, hc_errbuf *eb) {
    return hc_tokenizer_load_in(out, dir, NULL, eb);
}

int hc_tokenizer_load_in(hc_tokenizer **out, const char *dir, const char *fs_root, hc_errbuf *eb) {
    *out = NULL;
    char path[4096];
    size_t jl = 0, cl = 0, gl = 0;
    snprintf(path, sizeof path, "%s/tokenizer.json", dir);
    char *json = NULL, *cfg = NULL, *gen = NULL;
    int rc = hc_read_file_in(path, fs_root, (size_t)1 << 30, &json, &jl, eb);
    if (rc) return rc == HC_ERR_NOMEM || rc == HC_ERR_INVAL ? rc : HC_ERR_IO; /* eb names it */
    snprintf(path, sizeof path, "%s/tokenizer_config.json", dir);
    if ((rc = read_optional(path, fs_root, &cfg, &cl, eb))) {
        free(json);
        return rc;
    }
    rc = hc_tokenizer_load_json(out, json, jl, cfg, cl, eb);
    free(json);
    free(cfg);
    if (rc) {
        name_file(eb, rc, dir);
        return rc;
    }
    snprintf(path, sizeof path, "%s/generation_config.json", dir);
    if ((rc = read_optional(path, fs_root, &gen, &gl, eb))) {
        hc_tokenizer_free(*out);
        *out = NULL;
        return rc;
    }
    if (gen) {
        json_t *g = json_loadb(gen, gl, 0, NULL);
        json_t *e = json_object_get(g, "eos_token_id");
        if (json_is_integer(e)) rc = add_eos_id(*out, json_integer_value(e));
        size_t i;
        json_t *v;
        if (json_is_array(e))
            json_array_foreach(e, i, v) if (!rc && json_is_integer(v)) rc =
                add_eos_id(*out, json_integer_value(v));
        json_decref(g);
        free(gen);
        if (rc) {
            hc_tokenizer_free(*out);
            *out = NULL;
            return hc_seterr(eb, rc, "out of memory");
        }
    }
    return 0;
}

void hc_tokenizer_free(hc_tokenizer *t) {
    if (!t) return;
    for (size_t i = 0; i < t->n_norms; i++)
        pcre2_code_free(t->norms[i].re);
    for (size_t i = 0; i < t->n_pres; i++)
        pcre2_code_free(t->pres[i].re);
    for (size_t i = 0; i < t->n_decs; i++)
        pcre2_code_free(t->decs[i].re);
    free(t->norms);
    free(t->pres);
    free(t->decs);
    free(t->arena);
    free(t->id_str);
    free(t->id_flags);
    free(t->model_str);
    free(t->vocab.slots);
    free(t->merges.keys);
    free(t->merges.rank);
    free(t->merges.new_id);
    free(t->added);
    free(t->added_map.slots);
    hc_tk_trie_free(&t->trie_raw);
    hc_tk_trie_free(&t->trie_norm);
    free(t->eos_ids);
    free(t);
}

/* ---- lookups --------------------------------------------------------------------------------- */

size_t hc_tokenizer_n_vocab(const hc_tokenizer *t) {
    return t->n_vocab;
}

const char *hc_tokenizer_id_to_token(const hc_tokenizer *t, int32_t id, size_t *len) {
    if (id < 0 || (size_t)id >= t->n_vocab || t->id_str[id].len == HC_TK_NONE) return NULL;
    if (len) *len = t->id_str[id].len;
    return hc_tk_s(t, t->id_str[id]);
}

int32_t hc_tokenizer_token_to_id(const hc_tokenizer *t, const char *s, size_t n) {
    if (t->n_added) {
        /* added_map indexes t->added[].content; look it up through a view of those strings */
        uint32_t full = hc_tk_hash(s, n), h = full & t->added_map.mask;
        for (;; h = (h + 1) & t->added_map.mask) {
            uint64_t v = t->added_map.slots[h];
            if (!v) break;
            const hc_tk_added *a = &t->added[(uint32_t)v - 1];
            if ((uint32_t)(v >> 32) == full && a->content.len == n &&
                !memcmp(hc_tk_s(t, a->content), s, n))
                return a->id;
        }
    }
    int64_t id = model_id(t, s, n);
    return id < 0 ? -1 : (int32_t)id;
}

int hc_tokenizer_is_special(const hc_tokenizer *t, int32_t id) {
    return id >= 0 && (size_t)id < t->n_vocab && (t->id_flags[id] & 2);
}
int32_t hc_tokenizer_bos_id(const hc_tokenizer *t) {
    return t->bos_id;
}
int32_t hc_tokenizer_eos_id(const hc_tokenizer *t) {
    return t->eos_id;
}
int32_t hc_tokenizer_pad_id(const hc_tokenizer *t) {
    return t->pad_id;
}
int hc_tokenizer_add_bos(const hc_tokenizer *t) {
    return t->add_bos;
}
int hc_tokenizer_add_eos(const hc_tokenizer *t) {
    return t->add_eos;
}
const int32_t *hc_tokenizer_eos_ids(const hc_tokenizer *t, size_t *n) {
    *n = t->n_eos_ids;
    return t->eos_ids;
}
