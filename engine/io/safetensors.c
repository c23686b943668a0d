/* safetensors.c: mmap'ed, fully validated reader (single file or sharded directory) and a small
 * writer for Hugging Face safetensors files.
 *
 * File layout: u64 little-endian header length N, N bytes of JSON (an object: tensor name ->
 * {"dtype", "shape", "data_offsets": [begin, end]}, plus an optional "__metadata__" string map),
 * then the data buffer; offsets are relative to the start of the data buffer.
 *
 * Validation order per file: size >= 8, N <= HC_ST_MAX_HEADER and N <= file size - 8, JSON is an
 * object without duplicate keys, every entry well-typed, dtype supported, n_dims <= HC_MAX_DIMS,
 * begin <= end <= data size, end - begin == prod(shape) * dtype size (overflow-checked), and no
 * two non-empty ranges overlap. Across shards: no duplicate names; every weight_map entry is
 * present in the shard it names. Gaps between ranges are accepted (HF's reader rejects them).
 */
#include "io/safetensors.h"
#include "core/fileio.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

/* Same cap as the reference implementation (safetensors' MAX_HEADER_SIZE). */
#define HC_ST_MAX_HEADER ((uint64_t)100 * 1000 * 1000)
/* An index.json is a few hundred KB even for 100B-parameter models. */
#define HC_ST_MAX_INDEX ((size_t)64 * 1024 * 1024)

typedef struct st_shard {
    char *path;
    void *map;       /* whole file, PROT_READ / MAP_PRIVATE; NULL if not mapped (yet) */
    size_t map_size;
} st_shard;

struct hc_safetensors {
    st_shard *shards;
    size_t n_shards, cap_shards;
    hc_st_tensor *tensors; /* sorted by name once open completes */
    size_t n_tensors, cap_tensors;
};

/* ---- dtypes ------------------------------------------------------------------------------- */

static const struct {
    const char *name;
    int dtype; /* hc_dtype, or -1: a valid safetensors dtype the engine does not support */
} st_dtypes[] = {
    {"F32", HC_DTYPE_F32},  {"BF16", HC_DTYPE_BF16}, {"F16", HC_DTYPE_F16},
    {"I32", HC_DTYPE_I32},  {"F64", -1},             {"I64", -1},
    {"U64", -1},            {"U32", -1},             {"I16", -1},
    {"U16", -1},            {"I8", -1},              {"U8", -1},
    {"BOOL", -1},           {"F8_E4M3", -1},         {"F8_E5M2", -1},
    {"F8_E8M0", -1},        {"F6_E2M3", -1},         {"F6_E3M2", -1},
    {"F4", -1},             {"C64", -1},
};

/* Returns 1 and sets *dt for a supported dtype, 0 for a known unsupported one, -1 if unknown. */
static int st_parse_dtype(const char *s, hc_dtype *dt) {
    for (size_t i = 0; i < sizeof st_dtypes / sizeof st_dtypes[0]; i++) {
        if (strcmp(s, st_dtypes[i].name) == 0) {
            if (st_dtypes[i].dtype < 0) return 0;
            *dt = (hc_dtype)st_dtypes[i].dtype;
            return 1;
        }
    }
    return -1;
}

/* ---- small helpers ------------------------------------------------------------------------ */

static int st_errno_code(int e) { return e == ENOENT || e == ENOTDIR ? HC_ERR_NOTFOUND : HC_ERR_IO; }

static char *st_strdup(const char *s) {
    size_t n = strlen(s) + 1;
    char *p = malloc(n);
    if (p) memcpy(p, s, n);
    return p;
}

static char *st_join(const char *dir, const char *name) {
    size_t a = strlen(dir), b = strlen(name);
    char *p = malloc(a + 1 + b + 1);
    if (!p) return NULL;
    memcpy(p, dir, a);
    p[a] = '/';
    memcpy(p + a + 1, name, b + 1);
    return p;
}

/* Present in any form: a FIFO or directory in place of a file is then refused by name when opened
 * (hc_open_regular), instead of being skipped as absent. */
static int st_exists(const char *path) {
    struct stat sb;
    return stat(path, &sb) == 0;
}

static int st_ends_with(const char *s, const char *suffix) {
    size_t a = strlen(s), b = strlen(suffix);
    return a >= b && strcmp(s + a - b, suffix) == 0;
}

/* a * b into *out; returns 0 on overflow. */
static int st_mul_u64(uint64_t a, uint64_t b, uint64_t *out) {
    if (a != 0 && b > UINT64_MAX / a) return 0;
    *out = a * b;
    return 1;
}

/* ---- one shard ---------------------------------------------------------------------------- */

typedef struct st_range {
    uint64_t begin, end;
    const char *name;
} st_range;

static int st_range_cmp(const void *a, const void *b) {
    const st_range *x = a, *y = b;
    if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
    if (x->end != y->end) return x->end < y->end ? -1 : 1;
    return 0;
}

static int st_push_tensor(hc_safetensors *st, const hc_st_tensor *t) {
    if (st->n_tensors == st->cap_tensors) {
        size_t cap = st->cap_tensors ? st->cap_tensors * 2 : 64;
        hc_st_tensor *p = realloc(st->tensors, cap * sizeof *p);
        if (!p) return HC_ERR_NOMEM;
        st->tensors = p;
        st->cap_tensors = cap;
    }
    st->tensors[st->n_tensors++] = *t;
    return HC_OK;
}

static int st_add_shard(hc_safetensors *st, const char *path, st_shard **out) {
    if (st->n_shards == st->cap_shards) {
        size_t cap = st->cap_shards ? st->cap_shards * 2 : 4;
        st_shard *p = realloc(st->shards, cap * sizeof *p);
        if (!p) return HC_ERR_NOMEM;
        st->shards = p;
        st->cap_shards = cap;
    }
    st_shard *sh = &st->shards[st->n_shards];
    memset(sh, 0, sizeof *sh);
    sh->path = st_strdup(path);
    if (!sh->path) return HC_ERR_NOMEM;
    st->n_shards++;
    *out = sh;
    return HC_OK;
}

/* Parses one tensor entry of a header into *t (name not yet set). */
static int st_parse_entry(hc_st_tensor *t, uint64_t *begin, uint64_t *end, const char *file,
                          const char *name, json_t *v, uint64_t data_size, hc_errbuf *eb) {
    if (!json_is_object(v))
        return hc_seterr(eb, HC_ERR_FORMAT, "%s: tensor '%s': entry is not a JSON object", file,
                         name);
    json_t *jdt = json_object_get(v, "dtype");
    json_t *jshape = json_object_get(v, "shape");
    json_t *joff = json_object_get(v, "data_offsets");
    if (!json_is_string(jdt))
        return hc_seterr(eb, HC_ERR_FORMAT, "%s: tensor '%s': missing or non-string \"dtype\"",
                         file, name);
    if (!json_is_array(jshape))
        return hc_seterr(eb, HC_ERR_FORMAT, "%s: tensor '%s': missing or non-array \"shape\"",
                         file, name);
    if (!json_is_array(joff) || json_array_size(joff) != 2 ||
        !json_is_integer(json_array_get(joff, 0)) || !json_is_integer(json_array_get(joff, 1)))
        return hc_seterr(eb, HC_ERR_FORMAT,
                         "%s: tensor '%s': \"data_offsets\" must be an array of 2 integers", file,
                         name);

    const char *dts = json_string_value(jdt);
    int known = st_parse_dtype(dts, &t->dtype);
    if (known == 0)
        return hc_seterr(eb, HC_ERR_UNSUPPORTED, "%s: tensor '%s': dtype %s is not supported", file,
                         name, dts);
    if (known < 0)
        return hc_seterr(eb, HC_ERR_FORMAT, "%s: tensor '%s': unknown dtype '%s'", file, name,
                         dts);

    size_t nd = json_array_size(jshape);
    if (nd > HC_MAX_DIMS)
        return hc_seterr(eb, HC_ERR_UNSUPPORTED, "%s: tensor '%s': %zu dimensions (at most %d)",
                         file, name, nd, HC_MAX_DIMS);
    t->n_dims = (int)nd;
    uint64_t nelem = 1;
    int overflow = 0;
    for (int i = 0; i < HC_MAX_DIMS; i++) t->shape[i] = 1;
    for (size_t i = 0; i < nd; i++) {
        json_t *d = json_array_get(jshape, i);
        if (!json_is_integer(d) || json_integer_value(d) < 0)
            return hc_seterr(eb, HC_ERR_FORMAT,
                             "%s: tensor '%s': shape[%zu] is not a non-negative integer", file,
                             name, i);
        t->shape[i] = (int64_t)json_integer_value(d);
        if (!st_mul_u64(nelem, (uint64_t)t->shape[i], &nelem)) overflow = 1;
    }
    uint64_t nbytes = 0;
    /* A zero dimension makes the product 0 even if an earlier partial product overflowed. */
    if (nelem == 0) overflow = 0;
    if (overflow || !st_mul_u64(nelem, hc_dtype_size(t->dtype), &nbytes) || nbytes > SIZE_MAX)
        return hc_seterr(eb, HC_ERR_FORMAT, "%s: tensor '%s': shape size overflows", file, name);

    json_int_t b = json_integer_value(json_array_get(joff, 0));
    json_int_t e = json_integer_value(json_array_get(joff, 1));
    if (b < 0 || e < b)
        return hc_seterr(eb, HC_ERR_FORMAT, "%s: tensor '%s': data_offsets [%lld, %lld] invalid",
                         file, name, (long long)b, (long long)e);
    if ((uint64_t)e > data_size)
        return hc_seterr(eb, HC_ERR_FORMAT,
                         "%s: tensor '%s': data_offsets [%lld, %lld] past the end of the data "
                         "(%llu bytes; file truncated?)",
                         file, name, (long long)b, (long long)e, (unsigned long long)data_size);
    if ((uint64_t)(e - b) != nbytes)
        return hc_seterr(eb, HC_ERR_FORMAT,
                         "%s: tensor '%s': data_offsets span %lld bytes but shape and dtype %s "
                         "need %llu",
                         file, name, (long long)(e - b), dts, (unsigned long long)nbytes);
    t->nbytes = (size_t)nbytes;
    *begin = (uint64_t)b;
    *end = (uint64_t)e;
    return HC_OK;
}

/* Maps `path` and appends its tensors to st. On failure the shard stays registered (so
 * hc_st_close releases it) and a message naming the file is in eb. */
static int st_load_shard(hc_safetensors *st, const char *path, const char *fs_root,
                         hc_errbuf *eb) {
    st_shard *sh;
    int rc = st_add_shard(st, path, &sh);
    if (rc) return hc_seterr(eb, rc, "%s: out of memory", path);
    int shard_idx = (int)(st->n_shards - 1);

    int fd;
    uint64_t fsize;
    if ((rc = hc_open_regular(path, fs_root, &fd, &fsize, eb))) return rc;
    if (fsize < 8) {
        close(fd);
        return hc_seterr(eb, HC_ERR_FORMAT,
                         "%s: %llu bytes, too short for a safetensors header (need at least 8)",
                         path, (unsigned long long)fsize);
    }
    if (fsize > SIZE_MAX) {
        close(fd);
        return hc_seterr(eb, HC_ERR_RANGE, "%s: file too large to map", path);
    }
    void *map = mmap(NULL, (size_t)fsize, PROT_READ, MAP_PRIVATE, fd, 0);
    int map_errno = errno;
    close(fd); /* the mapping keeps the file referenced */
    if (map == MAP_FAILED)
        return hc_seterr(eb, HC_ERR_IO, "%s: mmap failed: %s", path, strerror(map_errno));
    sh->map = map;
    sh->map_size = (size_t)fsize;
#ifdef MADV_DONTDUMP
    (void)madvise(map, sh->map_size, MADV_DONTDUMP); /* keep core dumps small */
#endif

    const unsigned char *base = map;
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--) hlen = (hlen << 8) | base[i];
    /* The length is only printed when plausible: the first 8 bytes of a file that is not a
     * safetensors file (text, say) read as a huge number, and quoting it would echo them. */
    if (hlen > HC_ST_MAX_HEADER)
        return hc_seterr(eb, HC_ERR_FORMAT,
                         "%s: implausible header length (over the %llu-byte limit): not a "
                         "safetensors file?",
                         path, (unsigned long long)HC_ST_MAX_HEADER);
    if (hlen > fsize - 8)
        return hc_seterr(eb, HC_ERR_FORMAT,
                         "%s: header length %llu is larger than the file (%llu bytes; truncated?)",
                         path, (unsigned long long)hlen, (unsigned long long)fsize);
    if (hlen < 2)
        return hc_seterr(eb, HC_ERR_FORMAT, "%s: header length %llu too small", path,
                         (unsigned long long)hlen);
    const unsigned char *data = base + 8 + hlen;
    uint64_t data_size = fsize - 8 - hlen;

    json_error_t jerr;
    json_t *hroot = json_loadb((const char *)base + 8, (size_t)hlen, JSON_REJECT_DUPLICATES, &jerr);
    if (!hroot) {
        char what[4200];
        snprintf(what, sizeof what, "%s: header", path);
        return hc_json_seterr(eb, HC_ERR_FORMAT, what, &jerr);
    }
    if (!json_is_object(hroot)) {
        json_decref(hroot);
        return hc_seterr(eb, HC_ERR_FORMAT, "%s: header JSON is not an object", path);
    }

    size_t n_entries = json_object_size(hroot);
    st_range *ranges = malloc((n_entries ? n_entries : 1) * sizeof *ranges);
    if (!ranges) {
        json_decref(hroot);
        return hc_seterr(eb, HC_ERR_NOMEM, "%s: out of memory", path);
    }
    size_t n_ranges = 0;
    const char *key;
    json_t *val;
    rc = HC_OK;
    json_object_foreach(hroot, key, val) {
        if (strcmp(key, "__metadata__") == 0) {
            if (!json_is_object(val) && !json_is_null(val)) {
                rc = hc_seterr(eb, HC_ERR_FORMAT, "%s: \"__metadata__\" is not an object", path);
                break;
            }
            continue;
        }
        hc_st_tensor t;
        memset(&t, 0, sizeof t);
        uint64_t b = 0, e = 0;
        rc = st_parse_entry(&t, &b, &e, path, key, val, data_size, eb);
        if (rc) break;
        t.data = data + b;
        t.shard = shard_idx;
        t.name = st_strdup(key);
        if (!t.name || st_push_tensor(st, &t) != HC_OK) {
            free((char *)t.name);
            rc = hc_seterr(eb, HC_ERR_NOMEM, "%s: out of memory", path);
            break;
        }
        ranges[n_ranges].begin = b;
        ranges[n_ranges].end = e;
        ranges[n_ranges].name = t.name; /* owned by st->tensors, outlives `hroot` */
        n_ranges++;
    }
    json_decref(hroot);

    if (rc == HC_OK && n_ranges > 1) {
        qsort(ranges, n_ranges, sizeof *ranges, st_range_cmp);
        const st_range *prev = NULL;
        for (size_t i = 0; i < n_ranges; i++) {
            if (ranges[i].begin == ranges[i].end) continue; /* empty tensors occupy nothing */
            if (prev && ranges[i].begin < prev->end) {
                rc = hc_seterr(eb, HC_ERR_FORMAT,
                               "%s: tensor '%s': data_offsets [%llu, %llu] overlap tensor '%s' "
                               "[%llu, %llu]",
                               path, ranges[i].name, (unsigned long long)ranges[i].begin,
                               (unsigned long long)ranges[i].end, prev->name,
                               (unsigned long long)prev->begin, (unsigned long long)prev->end);
                break;
            }
            if (!prev || ranges[i].end > prev->end) prev = &ranges[i];
        }
    }
    free(ranges);
    if (rc) return rc;

    /* Weights are read whole (uploaded, or used in place by the CPU backend): start readahead. */
    (void)madvise(map, sh->map_size, MADV_WILLNEED);
    return HC_OK;
}

/* ---- index.json ---------------------------------------------------------------------------- */

static int st_strptr_cmp(const void *a, const void *b) {
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

static int st_tensor_cmp(const void *a, const void *b) {
    return strcmp(((const hc_st_tensor *)a)->name, ((const hc_st_tensor *)b)->name);
}

static int st_tensor_key_cmp(const void *key, const void *elem) {
    return strcmp((const char *)key, ((const hc_st_tensor *)elem)->name);
}

/* Sorts st->tensors by name and rejects duplicates (a name in two shards). */
static int st_finish(hc_safetensors *st, hc_errbuf *eb) {
    if (st->n_tensors > 1) qsort(st->tensors, st->n_tensors, sizeof *st->tensors, st_tensor_cmp);
    for (size_t i = 1; i < st->n_tensors; i++) {
        const hc_st_tensor *a = &st->tensors[i - 1], *b = &st->tensors[i];
        if (strcmp(a->name, b->name) == 0)
            return hc_seterr(eb, HC_ERR_FORMAT, "tensor '%s' appears in both %s and %s", a->name,
                             st->shards[a->shard].path, st->shards[b->shard].path);
    }
    return HC_OK;
}

static int st_open_index(hc_safetensors *st, const char *index_path, const char *fs_root,
                         hc_errbuf *eb) {
    char *text = NULL;
    size_t len = 0;
    int rc = hc_read_file_in(index_path, fs_root, HC_ST_MAX_INDEX, &text, &len, eb);
    if (rc) return rc;
    json_error_t jerr;
    json_t *root = json_loadb(text, len, JSON_REJECT_DUPLICATES, &jerr);
    free(text);
    if (!root) return hc_json_seterr(eb, HC_ERR_FORMAT, index_path, &jerr);

    const char **names = NULL; /* distinct shard file names, borrowed from root */
    char *dir = NULL;
    json_t *wm = json_object_get(root, "weight_map");
    if (!json_is_object(root) || !json_is_object(wm)) {
        rc = hc_seterr(eb, HC_ERR_FORMAT, "%s: no \"weight_map\" object", index_path);
        goto done;
    }
    size_t n_entries = json_object_size(wm);
    if (n_entries == 0) {
        rc = hc_seterr(eb, HC_ERR_FORMAT, "%s: \"weight_map\" is empty", index_path);
        goto done;
    }
    names = malloc(n_entries * sizeof *names);
    if (!names) {
        rc = hc_seterr(eb, HC_ERR_NOMEM, "%s: out of memory", index_path);
        goto done;
    }
    size_t n_names = 0;
    const char *key;
    json_t *val;
    json_object_foreach(wm, key, val) {
        const char *file = json_string_value(val);
        if (!file || !file[0] || strchr(file, '/')) {
            rc = hc_seterr(eb, HC_ERR_FORMAT,
                           "%s: weight_map['%s'] must be a shard file name in the same directory",
                           index_path, key);
            goto done;
        }
        names[n_names++] = file;
    }
    qsort(names, n_names, sizeof *names, st_strptr_cmp);
    size_t n_unique = 0;
    for (size_t i = 0; i < n_names; i++)
        if (n_unique == 0 || strcmp(names[n_unique - 1], names[i]) != 0)
            names[n_unique++] = names[i];

    const char *slash = strrchr(index_path, '/');
    if (slash) {
        size_t dl = (size_t)(slash - index_path);
        dir = malloc(dl + 2);
        if (dir) {
            memcpy(dir, index_path, dl ? dl : 1); /* "/x.json" -> "/" */
            dir[dl ? dl : 1] = 0;
        }
    } else {
        dir = st_strdup(".");
    }
    if (!dir) {
        rc = hc_seterr(eb, HC_ERR_NOMEM, "%s: out of memory", index_path);
        goto done;
    }
    for (size_t i = 0; i < n_unique; i++) {
        char *p = st_join(dir, names[i]);
        if (!p) {
            rc = hc_seterr(eb, HC_ERR_NOMEM, "%s: out of memory", index_path);
            goto done;
        }
        rc = st_load_shard(st, p, fs_root, eb);
        free(p);
        if (rc) goto done;
    }
    rc = st_finish(st, eb);
    if (rc) goto done;

    /* Every weight_map entry must be in the shard it names (shard i was loaded from names[i]). */
    json_object_foreach(wm, key, val) {
        const char *file = json_string_value(val);
        const char **pos = bsearch(&file, names, n_unique, sizeof *names, st_strptr_cmp);
        HC_ASSERT(pos != NULL);
        int want = (int)(pos - names);
        const hc_st_tensor *t = hc_st_find(st, key);
        if (!t || t->shard != want) {
            rc = hc_seterr(eb, HC_ERR_FORMAT,
                           "%s: tensor '%s' is listed in weight_map for %s but that shard does "
                           "not contain it",
                           index_path, key, file);
            goto done;
        }
    }
done:
    free(dir);
    free(names);
    json_decref(root);
    return rc;
}

/* ---- public API ---------------------------------------------------------------------------- */

int hc_st_open(hc_safetensors **out, const char *path, hc_errbuf *eb) {
    return hc_st_open_in(out, path, NULL, eb);
}

int hc_st_open_in(hc_safetensors **out, const char *path, const char *fs_root, hc_errbuf *eb) {
    if (!out || !path) return hc_seterr(eb, HC_ERR_INVAL, "hc_st_open: NULL argument");
    *out = NULL;
    struct stat sb;
    if (stat(path, &sb) != 0) {
        int e = errno;
        return hc_seterr(eb, st_errno_code(e), "%s: %s", path, strerror(e));
    }
    hc_safetensors *st = calloc(1, sizeof *st);
    if (!st) return hc_seterr(eb, HC_ERR_NOMEM, "%s: out of memory", path);

    int rc;
    if (S_ISDIR(sb.st_mode)) {
        char *index = st_join(path, "model.safetensors.index.json");
        char *single = st_join(path, "model.safetensors");
        if (!index || !single) {
            rc = hc_seterr(eb, HC_ERR_NOMEM, "%s: out of memory", path);
        } else if (st_exists(index)) {
            rc = st_open_index(st, index, fs_root, eb);
        } else if (st_exists(single)) {
            rc = st_load_shard(st, single, fs_root, eb);
            if (!rc) rc = st_finish(st, eb);
        } else {
            rc = hc_seterr(eb, HC_ERR_NOTFOUND,
                           "%s: no model.safetensors.index.json or model.safetensors in this "
                           "directory",
                           path);
        }
        free(index);
        free(single);
    } else if (st_ends_with(path, ".json")) {
        rc = st_open_index(st, path, fs_root, eb);
    } else {
        rc = st_load_shard(st, path, fs_root, eb);
        if (!rc) rc = st_finish(st, eb);
    }
    if (rc) {
        hc_st_close(st);
        return rc;
    }
    *out = st;
    return HC_OK;
}

void hc_st_close(hc_safetensors *st) {
    if (!st) return;
    for (size_t i = 0; i < st->n_tensors; i++) free((char *)st->tensors[i].name);
    free(st->tensors);
    for (size_t i = 0; i < st->n_shards; i++) {
        if (st->shards[i].map) munmap(st->shards[i].map, st->shards[i].map_size);
        free(st->shards[i].path);
    }
    free(st->shards);
    free(st);
}

size_t hc_st_count(const hc_safetensors *st) { return st ? st->n_tensors : 0; }

const hc_st_tensor *hc_st_get(const hc_safetensors *st, size_t i) {
    return st && i < st->n_tensors ? &st->tensors[i] : NULL;
}

const hc_st_tensor *hc_st_find(const hc_safetensors *st, const char *name) {
    if (!st || !name || st->n_tensors == 0) return NULL;
    return bsearch(name, st->tensors, st->n_tensors, sizeof *st->tensors, st_tensor_key_cmp);
}

size_t hc_st_n_shards(const hc_safetensors *st) { return st ? st->n_shards : 0; }

const char *hc_st_shard_path(const hc_safetensors *st, size_t i) {
    return st && i < st->n_shards ? st->shards[i].path : NULL;
}

/* ---- writer -------------------------------------------------------------------------------- */

typedef struct st_witem {
    size_t idx;
    size_t elsize;
    uint64_t nbytes;
} st_witem;

/* Larger element sizes first, then input order: with the data buffer 8-aligned this keeps every
 * tensor aligned to its element size while staying gap-free (as HF's writer does). */
static int st_witem_cmp(const void *a, const void *b) {
    const st_witem *x = a, *y = b;
    if (x->elsize != y->elsize) return x->elsize > y->elsize ? -1 : 1;
    return x->idx < y->idx ? -1 : x->idx > y->idx;
}

static int st_write_all(FILE *f, const void *p, size_t n) { return n == 0 || fwrite(p, 1, n, f) == n; }

int hc_st_write(const char *path, const hc_st_write_item *items, size_t n, hc_errbuf *eb) {
    if (!path || (n && !items)) return hc_seterr(eb, HC_ERR_INVAL, "hc_st_write: NULL argument");
    st_witem *order = malloc((n ? n : 1) * sizeof *order);
    json_t *root = json_object();
    json_t *meta = json_object();
    char *hdr = NULL, *tmp = NULL;
    FILE *f = NULL;
    int rc = HC_OK;
    if (!order || !root || !meta || json_object_set_new(root, "__metadata__", meta) != 0) {
        if (!root) json_decref(meta);
        rc = hc_seterr(eb, HC_ERR_NOMEM, "%s: out of memory", path);
        goto done;
    }
    json_object_set_new(meta, "format", json_string("pt"));

    for (size_t i = 0; i < n; i++) {
        const hc_st_write_item *it = &items[i];
        if (!it->name || !it->name[0] || strcmp(it->name, "__metadata__") == 0 ||
            !hc_dtype_is_valid(it->dtype) ||
            it->n_dims < 0 || it->n_dims > HC_MAX_DIMS) {
            rc = hc_seterr(eb, HC_ERR_INVAL, "%s: item %zu ('%s'): invalid name, dtype or n_dims",
                           path, i, it->name ? it->name : "(null)");
            goto done;
        }
        uint64_t nbytes = hc_dtype_size(it->dtype);
        for (int d = 0; d < it->n_dims; d++) {
            if (it->shape[d] < 0 || !st_mul_u64(nbytes, (uint64_t)it->shape[d], &nbytes) ||
                nbytes > (uint64_t)INT64_MAX / 2) {
                rc = hc_seterr(eb, HC_ERR_INVAL, "%s: tensor '%s': invalid shape", path, it->name);
                goto done;
            }
        }
        if (nbytes && !it->data) {
            rc = hc_seterr(eb, HC_ERR_INVAL, "%s: tensor '%s': NULL data", path, it->name);
            goto done;
        }
        if (json_object_get(root, it->name)) {
            rc = hc_seterr(eb, HC_ERR_INVAL, "%s: tensor '%s' given twice", path, it->name);
            goto done;
        }
        order[i].idx = i;
        order[i].elsize = hc_dtype_size(it->dtype);
        order[i].nbytes = nbytes;
        json_object_set_new(root, it->name, json_null()); /* placeholder, keeps the name check */
    }
    if (n > 1) qsort(order, n, sizeof *order, st_witem_cmp);

    uint64_t off = 0;
    for (size_t k = 0; k < n; k++) {
        const hc_st_write_item *it = &items[order[k].idx];
        json_t *shape = json_array();
        for (int d = 0; d < it->n_dims; d++) json_array_append_new(shape, json_integer(it->shape[d]));
        if (off > (uint64_t)INT64_MAX - order[k].nbytes) {
            json_decref(shape);
            rc = hc_seterr(eb, HC_ERR_INVAL, "%s: total size too large", path);
            goto done;
        }
        json_t *ent = json_pack("{s:s, s:o, s:[I, I]}", "dtype", hc_dtype_name(it->dtype), "shape",
                                shape, "data_offsets", (json_int_t)off,
                                (json_int_t)(off + order[k].nbytes));
        if (!ent || json_object_set_new(root, it->name, ent) != 0) {
            rc = hc_seterr(eb, HC_ERR_NOMEM, "%s: out of memory", path);
            goto done;
        }
        off += order[k].nbytes;
    }

    hdr = json_dumps(root, JSON_COMPACT);
    if (!hdr) {
        rc = hc_seterr(eb, HC_ERR_NOMEM, "%s: out of memory", path);
        goto done;
    }
    size_t hlen = strlen(hdr);
    size_t padded = (hlen + 7) / 8 * 8; /* 8 + padded is a multiple of 8: data starts aligned */
    unsigned char lenbuf[8];
    for (int i = 0; i < 8; i++) lenbuf[i] = (unsigned char)((uint64_t)padded >> (8 * i));

    /* never replace something that is not a regular file (a device, a FIFO, a directory); write
     * a temporary file beside path, fsync it and rename it over path, so a failure (full disk,
     * a killed process) leaves the old file as it was and nothing half-written */
    struct stat sb;
    if (!stat(path, &sb) && !S_ISREG(sb.st_mode)) {
        rc = hc_seterr(eb, HC_ERR_INVAL, "%s: not a regular file (%s); not replacing it", path,
                       hc_file_kind(sb.st_mode) ? hc_file_kind(sb.st_mode) : "special file");
        goto done;
    }
    tmp = malloc(strlen(path) + 32);
    if (!tmp) {
        rc = hc_seterr(eb, HC_ERR_NOMEM, "%s: out of memory", path);
        goto done;
    }
    /* unique per process and call (two threads writing one path never share a temporary); never
     * follow a link planted there */
    static _Atomic unsigned long st_tmp_seq;
    sprintf(tmp, "%s.tmp-%ld-%lu", path, (long)getpid(), ++st_tmp_seq);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0644);
    f = fd >= 0 ? fdopen(fd, "wb") : NULL;
    if (!f) {
        int e = errno;
        if (fd >= 0) close(fd);
        rc = hc_seterr(eb, st_errno_code(e), "%s: cannot create: %s", path, strerror(e));
        goto done;
    }
    int ok = st_write_all(f, lenbuf, 8) && st_write_all(f, hdr, hlen);
    for (size_t i = hlen; ok && i < padded; i++) ok = fputc(' ', f) != EOF;
    for (size_t k = 0; ok && k < n; k++)
        ok = st_write_all(f, items[order[k].idx].data, (size_t)order[k].nbytes);
    if (ok && (fflush(f) != 0 || fsync(fileno(f)) != 0)) ok = 0;
    int e = errno;
    if (fclose(f) != 0 && ok) {
        ok = 0;
        e = errno;
    }
    f = NULL;
    if (ok && rename(tmp, path) != 0) {
        ok = 0;
        e = errno;
    }
    if (ok) { /* the rename itself durable: fsync the directory */
        char *dir = strdup(path);
        if (dir) {
            char *sl = strrchr(dir, '/');
            const char *d = sl ? (sl == dir ? "/" : (*sl = 0, dir)) : ".";
            int dfd = open(d, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
            if (dfd >= 0) {
                fsync(dfd);
                close(dfd);
            }
            free(dir);
        }
    }
    if (!ok) {
        unlink(tmp);
        rc = hc_seterr(eb, HC_ERR_IO, "%s: write failed: %s", path, strerror(e));
    }
done:
    free(tmp);
    free(hdr);
    free(order);
    json_decref(root);
    return rc;
}
