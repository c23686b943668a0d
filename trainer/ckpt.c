/* ckpt.c: see ckpt.h. */
#include "ckpt.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/fileio.h"
#include "io/safetensors.h"

#define CKPT_FORMAT "hllm-train-checkpoint"
#define CKPT_JSON_MAX ((size_t)64 << 20)
#define PATH_N 1200

hc_ckpt_params hc_ckpt_default_params(void) {
    hc_ckpt_params p = {3, HC_DTYPE_AS_STORED};
    return p;
}

/* ---- file system helpers -------------------------------------------------------------------- */

static int sys_err(hc_errbuf *eb, const char *path, const char *what, int e) {
    int code = e == ENOENT || e == ENOTDIR ? HC_ERR_NOTFOUND : HC_ERR_IO;
    return hc_seterr(eb, code, "%s: cannot %s: %s", path, what, strerror(e));
}

static int join(char *out, size_t n, const char *a, const char *b) {
    int k = snprintf(out, n, "%s/%s", a, b);
    return k >= 0 && (size_t)k < n ? 0 : -1;
}

static int fsync_path(const char *path, int is_dir, hc_errbuf *eb) {
    int fd = open(path, O_RDONLY | O_CLOEXEC | (is_dir ? O_DIRECTORY : 0));
    if (fd < 0) return sys_err(eb, path, "open for fsync", errno);
    int rc = HC_OK;
    if (fsync(fd) != 0 && !(is_dir && (errno == EINVAL || errno == EROFS)))
        rc = sys_err(eb, path, "fsync", errno);
    close(fd);
    return rc;
}

static int write_file_sync(const char *path, const char *data, size_t n, hc_errbuf *eb) {
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) return sys_err(eb, path, "create", errno);
    size_t done = 0;
    while (done < n) {
        ssize_t w = write(fd, data + done, n - done);
        if (w < 0 && errno == EINTR) continue;
        if (w < 0) {
            int e = errno;
            close(fd);
            unlink(path);
            return sys_err(eb, path, "write", e);
        }
        done += (size_t)w;
    }
    if (fsync(fd) != 0) {
        int e = errno;
        close(fd);
        unlink(path);
        return sys_err(eb, path, "fsync", e);
    }
    if (close(fd) != 0) {
        int e = errno;
        unlink(path);
        return sys_err(eb, path, "close", e);
    }
    return HC_OK;
}

/* Removes a file or a directory tree (checkpoint directories hold files only; depth-limited). */
static int rm_tree(const char *path, int depth) {
    struct stat sb;
    if (lstat(path, &sb) != 0) return errno == ENOENT ? 0 : -1;
    if (!S_ISDIR(sb.st_mode)) return unlink(path);
    if (depth > 3) return -1;
    DIR *d = opendir(path);
    if (!d) return -1;
    struct dirent *de;
    int rc = 0;
    char child[PATH_N];
    while ((de = readdir(d))) {
        if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, "..")) continue;
        if (join(child, sizeof child, path, de->d_name) || rm_tree(child, depth + 1)) rc = -1;
    }
    closedir(d);
    if (rmdir(path) != 0) rc = -1;
    return rc;
}

/* "step-NNNNNNNN" (8 or more digits) -> step; with allow_old also ".old-step-...". */
static int parse_step_name(const char *name, int allow_old, int64_t *step, int *old) {
    *old = 0;
    if (allow_old && !strncmp(name, ".old-", 5)) {
        name += 5;
        *old = 1;
    }
    if (strncmp(name, "step-", 5)) return 0;
    const char *p = name + 5;
    size_t nd = strlen(p);
    if (nd < 8 || nd > 18 || strspn(p, "0123456789") != nd) return 0;
    *step = strtoll(p, NULL, 10);
    return 1;
}

typedef struct cand {
    int64_t step;
    int old;
    char name[64];
} cand;

static int cand_cmp(const void *x, const void *y) { /* newest first; step-N before .old-step-N */
    const cand *a = x, *b = y;
    if (a->step != b->step) return a->step > b->step ? -1 : 1;
    return a->old - b->old;
}

/* Checkpoint directories of dir, newest first (*out malloc'ed). */
static int list_cands(const char *dir, int allow_old, cand **out, int *n, hc_errbuf *eb) {
    *out = NULL;
    *n = 0;
    DIR *d = opendir(dir);
    if (!d) return sys_err(eb, dir, "list", errno);
    cand *v = NULL;
    int cap = 0, rc = HC_OK;
    struct dirent *de;
    while ((de = readdir(d))) {
        int64_t step;
        int old;
        if (!parse_step_name(de->d_name, allow_old, &step, &old) ||
            strlen(de->d_name) >= sizeof v->name)
            continue;
        char p[PATH_N];
        struct stat sb;
        if (join(p, sizeof p, dir, de->d_name) || lstat(p, &sb) != 0 || !S_ISDIR(sb.st_mode))
            continue;
        if (*n == cap) {
            int nc = cap ? cap * 2 : 16;
            cand *q = realloc(v, sizeof *q * (size_t)nc);
            if (!q) {
                rc = hc_seterr(eb, HC_ERR_NOMEM, "%s: out of memory", dir);
                break;
            }
            v = q;
            cap = nc;
        }
        v[*n].step = step;
        v[*n].old = old;
        memcpy(v[*n].name, de->d_name, strlen(de->d_name) + 1); /* length checked above */
        (*n)++;
    }
    closedir(d);
    if (rc) {
        free(v);
        *n = 0;
        return rc;
    }
    if (*n > 1) qsort(v, (size_t)*n, sizeof *v, cand_cmp);
    *out = v;
    return HC_OK;
}

/* ---- save ----------------------------------------------------------------------------------- */

static hc_dtype saved_dtype(const hc_param *p, hc_dtype want) {
    if (want != HC_DTYPE_AS_STORED) return want;
    hc_dtype s = (hc_dtype)p->stored_dtype;
    return s == HC_DTYPE_BF16 || s == HC_DTYPE_F16 ? s : HC_DTYPE_F32;
}

static void set_shape(hc_st_write_item *it, const hc_param *p) {
    it->n_dims = p->ndim;
    for (int d = 0; d < p->ndim && d < HC_MAX_DIMS; d++)
        it->shape[d] = p->shape[d];
}

static int write_model(const char *path, const hc_ptab *t, hc_dtype want, hc_errbuf *eb) {
    hc_st_write_item *items = calloc((size_t)(t->n ? t->n : 1), sizeof *items);
    size_t conv = 0;
    for (int i = 0; i < t->n; i++)
        if (saved_dtype(&t->params[i], want) != HC_DTYPE_F32) conv += t->params[i].numel * 2;
    unsigned char *buf = conv ? malloc(conv) : NULL;
    if (!items || (conv && !buf)) {
        free(items);
        free(buf);
        return hc_seterr(eb, HC_ERR_NOMEM, "%s: out of memory", path);
    }
    size_t off = 0;
    for (int i = 0; i < t->n; i++) {
        const hc_param *p = &t->params[i];
        hc_st_write_item *it = &items[i];
        it->name = p->name;
        it->dtype = saved_dtype(p, want);
        set_shape(it, p);
        if (it->dtype == HC_DTYPE_F32) {
            it->data = t->w + p->offset;
        } else {
            hc_convert(buf + off, it->dtype, t->w + p->offset, HC_DTYPE_F32, p->numel);
            it->data = buf + off;
            off += p->numel * 2;
        }
    }
    int rc = hc_st_write(path, items, (size_t)t->n, eb);
    free(items);
    free(buf);
    return rc ? rc : fsync_path(path, 0, eb);
}

static const char *const OPTIM_PREFIX[3] = {"master.", "exp_avg.", "exp_avg_sq."};

static int write_optim(const char *path, const hc_ptab *t, hc_errbuf *eb) {
    const size_t n = (size_t)t->n * 3;
    hc_st_write_item *items = calloc(n ? n : 1, sizeof *items);
    char *names = malloc((n ? n : 1) * (HC_PTAB_NAME_MAX + 16));
    if (!items || !names) {
        free(items);
        free(names);
        return hc_seterr(eb, HC_ERR_NOMEM, "%s: out of memory", path);
    }
    const float *bufs[3] = {t->w, t->m, t->v};
    for (int i = 0; i < t->n; i++)
        for (int k = 0; k < 3; k++) {
            size_t j = (size_t)i * 3 + (size_t)k;
            char *nm = names + j * (HC_PTAB_NAME_MAX + 16);
            snprintf(nm, HC_PTAB_NAME_MAX + 16, "%s%s", OPTIM_PREFIX[k], t->params[i].name);
            items[j].name = nm;
            items[j].dtype = HC_DTYPE_F32;
            set_shape(&items[j], &t->params[i]);
            items[j].data = bufs[k] + t->params[i].offset;
        }
    int rc = hc_st_write(path, items, n, eb);
    free(items);
    free(names);
    return rc ? rc : fsync_path(path, 0, eb);
}

static char *u64_str(char *buf, size_t n, uint64_t x) {
    snprintf(buf, n, "%llu", (unsigned long long)x);
    return buf;
}

static int file_size(const char *path, int64_t *size, hc_errbuf *eb) {
    struct stat sb;
    if (stat(path, &sb) != 0) return sys_err(eb, path, "stat", errno);
    *size = (int64_t)sb.st_size;
    return HC_OK;
}

static int write_trainer_json(const char *path, const hc_ptab *t, const hc_ckpt_state *st,
                              hc_dtype want, int64_t model_size, int64_t optim_size,
                              hc_errbuf *eb) {
    char tmp[32];
    const double reals[8] = {
        st->adamw.lr,           st->adamw.beta1, st->adamw.beta2, st->adamw.eps,
        st->adamw.weight_decay, st->peak_lr,     st->warmup,      0};
    for (int i = 0; i < 7; i++)
        if (!(reals[i] == reals[i]) || reals[i] > 1e308 || reals[i] < -1e308)
            return hc_seterr(eb, HC_ERR_INVAL,
                             "%s: the AdamW config or schedule has a "
                             "non-finite value",
                             path);
    json_t *root = json_object(), *rng = json_array(), *params = json_array();
    int bad = !root || !rng || !params;
    bad |= json_object_set_new(root, "format", json_string(CKPT_FORMAT));
    bad |= json_object_set_new(root, "version", json_integer(HC_CKPT_VERSION));
    bad |= json_object_set_new(root, "step", json_integer(st->step));
    bad |= json_object_set_new(root, "epoch", json_integer(st->epoch));
    bad |= json_object_set_new(root, "cursor",
                               json_pack("{s:I, s:I}", "epoch", (json_int_t)st->cursor.epoch, "pos",
                                         (json_int_t)st->cursor.pos));
    for (int i = 0; i < st->n_rng; i++)
        bad |= json_array_append_new(rng, json_string(u64_str(tmp, sizeof tmp, st->rng[i])));
    bad |= json_object_set(root, "rng", rng);
    bad |= json_object_set_new(root, "fingerprint",
                               json_string(u64_str(tmp, sizeof tmp, hc_ptab_fingerprint(t))));
    bad |= json_object_set_new(root, "adamw",
                               json_pack("{s:f, s:f, s:f, s:f, s:f}", "lr", st->adamw.lr, "beta1",
                                         st->adamw.beta1, "beta2", st->adamw.beta2, "eps",
                                         st->adamw.eps, "weight_decay", st->adamw.weight_decay));
    bad |= json_object_set_new(root, "schedule",
                               json_pack("{s:f, s:f, s:I}", "peak_lr", st->peak_lr, "warmup",
                                         st->warmup, "total_steps", (json_int_t)st->total_steps));
    for (int i = 0; i < t->n && !bad; i++) {
        const hc_param *p = &t->params[i];
        json_t *shape = json_array();
        for (int d = 0; d < p->ndim; d++)
            json_array_append_new(shape, json_integer(p->shape[d]));
        bad |= json_array_append_new(params,
                                     json_pack("{s:s, s:o, s:s}", "name", p->name, "shape", shape,
                                               "dtype", hc_dtype_name(saved_dtype(p, want))));
    }
    if (st->run[0]) {
        json_t *run = json_loads(st->run, 0, NULL);
        if (!json_is_object(run)) {
            json_decref(run);
            json_decref(rng);
            json_decref(params);
            json_decref(root);
            return hc_seterr(eb, HC_ERR_INVAL, "%s: the run settings are not a JSON object", path);
        }
        bad |= json_object_set_new(root, "run", run);
    }
    bad |= json_object_set(root, "params", params);
    bad |= json_object_set_new(root, "files",
                               json_pack("{s:I, s:I}", "model.safetensors", (json_int_t)model_size,
                                         "optim.safetensors", (json_int_t)optim_size));
    char *text = bad ? NULL : json_dumps(root, JSON_INDENT(1) | JSON_REAL_PRECISION(17));
    json_decref(rng);
    json_decref(params);
    json_decref(root);
    if (!text) return hc_seterr(eb, HC_ERR_NOMEM, "%s: out of memory", path);
    size_t len = strlen(text);
    text[len] = 0;
    char *withnl = realloc(text, len + 2);
    if (!withnl) {
        free(text);
        return hc_seterr(eb, HC_ERR_NOMEM, "%s: out of memory", path);
    }
    withnl[len] = '\n';
    withnl[len + 1] = 0;
    int rc = write_file_sync(path, withnl, len + 1, eb);
    free(withnl);
    return rc;
}

static const char *kind_of(unsigned mode) {
    const char *k = hc_file_kind(mode);
    return k ? k : "a regular file";
}

static int ensure_dir(const char *dir, hc_errbuf *eb) {
    struct stat sb;
    if (stat(dir, &sb) == 0) {
        if (!S_ISDIR(sb.st_mode))
            return hc_seterr(eb, HC_ERR_INVAL,
                             "%s: checkpoint directory: exists and is %s, not "
                             "a directory",
                             dir, kind_of((unsigned)sb.st_mode));
        return HC_OK;
    }
    if (errno != ENOENT) return sys_err(eb, dir, "use as checkpoint directory", errno);
    if (mkdir(dir, 0755) != 0) return sys_err(eb, dir, "create checkpoint directory", errno);
    char parent[PATH_N];
    snprintf(parent, sizeof parent, "%s", dir);
    char *slash = strrchr(parent, '/');
    if (slash == parent)
        parent[1] = 0;
    else if (slash)
        *slash = 0;
    else
        snprintf(parent, sizeof parent, ".");
    return fsync_path(parent, 1, eb);
}

/* Deletes checkpoints beyond the newest keep (directories without trainer.json, which no save
 * of ours leaves, are neither counted nor deleted), and leftovers of earlier saves. */
static void prune(const char *dir, int keep) {
    cand *v = NULL;
    int n = 0;
    if (keep > 0 && list_cands(dir, 0, &v, &n, NULL) == HC_OK)
        for (int i = 0, kept = 0; i < n; i++) {
            char from[PATH_N], to[PATH_N], tj[PATH_N], del[96];
            snprintf(del, sizeof del, ".del-%s", v[i].name);
            if (join(from, sizeof from, dir, v[i].name) || join(to, sizeof to, dir, del) ||
                join(tj, sizeof tj, from, "trainer.json") || access(tj, F_OK) != 0)
                continue;
            if (kept++ < keep) continue;
            rm_tree(to, 0);
            if (rename(from, to) == 0) rm_tree(to, 0);
        }
    free(v);
    DIR *d = opendir(dir);
    if (!d) return;
    struct dirent *de;
    char p[PATH_N];
    while ((de = readdir(d)))
        if ((!strncmp(de->d_name, ".tmp-step-", 10) || !strncmp(de->d_name, ".del-step-", 10) ||
             !strncmp(de->d_name, ".old-step-", 10)) &&
            !join(p, sizeof p, dir, de->d_name))
            rm_tree(p, 0);
    closedir(d);
}

int hc_ckpt_save(const char *dir, const hc_ptab *t, const hc_ckpt_state *st,
                 const hc_ckpt_params *pp, char *path_out, size_t path_n, hc_errbuf *eb) {
    if (!dir || !t || !st) return hc_seterr(eb, HC_ERR_INVAL, "hc_ckpt_save: NULL argument");
    hc_ckpt_params p = pp ? *pp : hc_ckpt_default_params();
    if (!t->w || !t->m || !t->v)
        return hc_seterr(eb, HC_ERR_INVAL, "hc_ckpt_save: the parameter table is not allocated");
    if (st->step < 0 || st->n_rng < 0 || st->n_rng > HC_CKPT_MAX_RNG || p.keep < 0)
        return hc_seterr(eb, HC_ERR_INVAL,
                         "hc_ckpt_save: step %lld, %d RNG words or keep %d out "
                         "of range",
                         (long long)st->step, st->n_rng, p.keep);
    if (p.weights_dtype != HC_DTYPE_AS_STORED && p.weights_dtype != HC_DTYPE_F32 &&
        p.weights_dtype != HC_DTYPE_BF16 && p.weights_dtype != HC_DTYPE_F16)
        return hc_seterr(eb, HC_ERR_INVAL,
                         "hc_ckpt_save: weights dtype %d is not F32, BF16, F16 "
                         "or as stored",
                         (int)p.weights_dtype);
    int rc = ensure_dir(dir, eb);
    if (rc) return rc;
    char name[40], tmpname[56], oldname[56];
    snprintf(name, sizeof name, "step-%08lld", (long long)st->step);
    snprintf(tmpname, sizeof tmpname, ".tmp-%s", name);
    snprintf(oldname, sizeof oldname, ".old-%s", name);
    char fin[PATH_N], tmp[PATH_N], old[PATH_N], f_model[PATH_N], f_optim[PATH_N], f_json[PATH_N];
    if (join(fin, sizeof fin, dir, name) || join(tmp, sizeof tmp, dir, tmpname) ||
        join(old, sizeof old, dir, oldname) ||
        join(f_model, sizeof f_model, tmp, "model.safetensors") ||
        join(f_optim, sizeof f_optim, tmp, "optim.safetensors") ||
        join(f_json, sizeof f_json, tmp, "trainer.json"))
        return hc_seterr(eb, HC_ERR_INVAL, "%s: path too long", dir);
    if (rm_tree(tmp, 0) != 0) return sys_err(eb, tmp, "remove the leftover", errno);
    if (mkdir(tmp, 0755) != 0) return sys_err(eb, tmp, "create", errno);
    int64_t ms = 0, os = 0;
    if ((rc = write_model(f_model, t, p.weights_dtype, eb)) || (rc = write_optim(f_optim, t, eb)) ||
        (rc = file_size(f_model, &ms, eb)) || (rc = file_size(f_optim, &os, eb)) ||
        (rc = write_trainer_json(f_json, t, st, p.weights_dtype, ms, os, eb)) ||
        (rc = fsync_path(tmp, 1, eb)))
        goto fail;
    struct stat sb;
    int had_old = 0;
    if (lstat(fin, &sb) == 0) { /* a re-save of this step: keep the old one until replaced */
        if (rm_tree(old, 0) != 0 || rename(fin, old) != 0) {
            rc = sys_err(eb, fin, "move aside the existing checkpoint", errno);
            goto fail;
        }
        had_old = 1;
    }
    if (rename(tmp, fin) != 0) {
        rc = sys_err(eb, fin, "rename the new checkpoint into place", errno);
        if (had_old) rename(old, fin);
        goto fail;
    }
    if ((rc = fsync_path(dir, 1, eb))) return rc;
    if (had_old) rm_tree(old, 0);
    if (path_out && path_n) snprintf(path_out, path_n, "%s", fin);
    /* latest: temp file, fsync, rename, fsync the directory */
    char lt[PATH_N], lf[PATH_N], line[64];
    if (join(lt, sizeof lt, dir, ".latest.tmp") || join(lf, sizeof lf, dir, "latest"))
        return hc_seterr(eb, HC_ERR_INVAL, "%s: path too long", dir);
    int ll = snprintf(line, sizeof line, "%s\n", name);
    if ((rc = write_file_sync(lt, line, (size_t)ll, eb))) return rc;
    if (rename(lt, lf) != 0) {
        rc = sys_err(eb, lf, "rename into place", errno);
        unlink(lt);
        return rc;
    }
    if ((rc = fsync_path(dir, 1, eb))) return rc;
    prune(dir, p.keep);
    return HC_OK;
fail:
    rm_tree(tmp, 0);
    return rc;
}

/* ---- load ----------------------------------------------------------------------------------- */

typedef struct jctx {
    const char *path;
    hc_errbuf *eb;
} jctx;

static int jfield_err(const jctx *j, const char *field, const char *want) {
    return hc_seterr(j->eb, HC_ERR_FORMAT, "%s: field %s: missing or not %s", j->path, field, want);
}

static int j_int(const jctx *j, json_t *o, const char *k, const char *field, int64_t *out) {
    json_t *v = json_object_get(o, k);
    if (!json_is_integer(v)) return jfield_err(j, field, "an integer");
    *out = (int64_t)json_integer_value(v);
    return HC_OK;
}

static int j_num(const jctx *j, json_t *o, const char *k, const char *field, double *out) {
    json_t *v = json_object_get(o, k);
    if (!json_is_number(v)) return jfield_err(j, field, "a number");
    *out = json_number_value(v);
    return HC_OK;
}

static int j_u64(const jctx *j, json_t *v, const char *field, uint64_t *out) {
    const char *s = json_string_value(v);
    if (!s || !*s || strspn(s, "0123456789") != strlen(s) || strlen(s) > 20)
        return jfield_err(j, field, "a decimal string of an unsigned 64-bit integer");
    errno = 0;
    unsigned long long x = strtoull(s, NULL, 10);
    if (errno == ERANGE) return jfield_err(j, field, "an unsigned 64-bit integer");
    *out = (uint64_t)x;
    return HC_OK;
}

static void shape_str(char *buf, size_t n, int ndim, const int64_t *shape) {
    size_t k = (size_t)snprintf(buf, n, "[");
    for (int d = 0; d < ndim && k < n; d++)
        k += (size_t)snprintf(buf + k, n - k, "%s%lld", d ? ", " : "", (long long)shape[d]);
    if (k < n) snprintf(buf + k, n - k, "]");
}

/* The checkpoint's (name, shape) list against the table: HC_ERR_MISMATCH naming the first
 * difference. */
static int check_layout(const jctx *j, json_t *root, const hc_ptab *t) {
    json_t *ps = json_object_get(root, "params");
    if (!json_is_array(ps)) return jfield_err(j, "params", "an array");
    const int n = (int)json_array_size(ps);
    char a[200], b[200];
    for (int i = 0; i < n && i < t->n; i++) {
        json_t *e = json_array_get(ps, (size_t)i), *sh = json_object_get(e, "shape");
        const char *nm = json_string_value(json_object_get(e, "name"));
        if (!nm || !json_is_array(sh) || json_array_size(sh) > HC_PTAB_MAX_DIMS)
            return hc_seterr(j->eb, HC_ERR_FORMAT,
                             "%s: field params[%d]: needs a name and a "
                             "shape of 1..%d dimensions",
                             j->path, i, HC_PTAB_MAX_DIMS);
        int64_t shape[HC_PTAB_MAX_DIMS] = {0};
        int nd = (int)json_array_size(sh);
        for (int d = 0; d < nd; d++)
            shape[d] = (int64_t)json_integer_value(json_array_get(sh, (size_t)d));
        const hc_param *p = &t->params[i];
        if (strcmp(nm, p->name) || nd != p->ndim ||
            memcmp(shape, p->shape, sizeof(int64_t) * (size_t)nd)) {
            shape_str(a, sizeof a, nd, shape);
            shape_str(b, sizeof b, p->ndim, p->shape);
            return hc_seterr(j->eb, HC_ERR_MISMATCH,
                             "%s: another model layout: parameter %d is "
                             "'%s' %s in the checkpoint but '%s' %s in the model",
                             j->path, i, nm, a, p->name, b);
        }
    }
    if (n != t->n) {
        const char *extra =
            n > t->n ? json_string_value(json_object_get(json_array_get(ps, (size_t)t->n), "name"))
                     : t->params[n].name;
        return hc_seterr(j->eb, HC_ERR_MISMATCH,
                         "%s: another model layout: the checkpoint has %d "
                         "parameters, the model %d (first extra: '%s')",
                         j->path, n, t->n, extra ? extra : "?");
    }
    uint64_t fp = 0;
    int rc = j_u64(j, json_object_get(root, "fingerprint"), "fingerprint", &fp);
    if (rc) return rc;
    if (fp != hc_ptab_fingerprint(t))
        return hc_seterr(j->eb, HC_ERR_MISMATCH,
                         "%s: fingerprint %llu differs from the model's "
                         "%llu though the parameter list matches (edited file?)",
                         j->path, (unsigned long long)fp,
                         (unsigned long long)hc_ptab_fingerprint(t));
    return HC_OK;
}

static int parse_state(const jctx *j, json_t *root, hc_ckpt_state *st) {
    memset(st, 0, sizeof *st);
    int rc;
    json_t *cur = json_object_get(root, "cursor"), *ad = json_object_get(root, "adamw"),
           *sc = json_object_get(root, "schedule"), *rng = json_object_get(root, "rng");
    if ((rc = j_int(j, root, "step", "step", &st->step)) ||
        (rc = j_int(j, root, "epoch", "epoch", &st->epoch)) ||
        (rc = j_int(j, cur, "epoch", "cursor.epoch", &st->cursor.epoch)) ||
        (rc = j_int(j, cur, "pos", "cursor.pos", &st->cursor.pos)) ||
        (rc = j_num(j, ad, "lr", "adamw.lr", &st->adamw.lr)) ||
        (rc = j_num(j, ad, "beta1", "adamw.beta1", &st->adamw.beta1)) ||
        (rc = j_num(j, ad, "beta2", "adamw.beta2", &st->adamw.beta2)) ||
        (rc = j_num(j, ad, "eps", "adamw.eps", &st->adamw.eps)) ||
        (rc = j_num(j, ad, "weight_decay", "adamw.weight_decay", &st->adamw.weight_decay)) ||
        (rc = j_num(j, sc, "peak_lr", "schedule.peak_lr", &st->peak_lr)) ||
        (rc = j_num(j, sc, "warmup", "schedule.warmup", &st->warmup)) ||
        (rc = j_int(j, sc, "total_steps", "schedule.total_steps", &st->total_steps)))
        return rc;
    if (!json_is_array(rng) || json_array_size(rng) > HC_CKPT_MAX_RNG)
        return jfield_err(j, "rng", "an array of at most 8 strings");
    json_t *run = json_object_get(root, "run");
    if (run) {
        char *text = json_is_object(run) ? json_dumps(run, JSON_COMPACT | JSON_SORT_KEYS |
                                                                JSON_REAL_PRECISION(17))
                                         : NULL;
        size_t n = text ? strlen(text) : 0;
        if (!text || n >= sizeof st->run) {
            free(text);
            return jfield_err(j, "run", "a JSON object of the run's settings");
        }
        memcpy(st->run, text, n + 1);
        free(text);
    }
    st->n_rng = (int)json_array_size(rng);
    for (int i = 0; i < st->n_rng; i++) {
        char f[32];
        snprintf(f, sizeof f, "rng[%d]", i);
        if ((rc = j_u64(j, json_array_get(rng, (size_t)i), f, &st->rng[i]))) return rc;
    }
    if (st->step < 0 || st->cursor.epoch < 0 || st->cursor.pos < 0)
        return hc_seterr(j->eb, HC_ERR_FORMAT, "%s: step or cursor is negative", j->path);
    return HC_OK;
}

static int check_tensor(const hc_safetensors *st, const char *file, const char *name,
                        const hc_param *p, int need_f32, const hc_st_tensor **out, hc_errbuf *eb) {
    const hc_st_tensor *x = hc_st_find(st, name);
    if (!x) return hc_seterr(eb, HC_ERR_FORMAT, "%s: tensor '%s' is missing", file, name);
    int ok = x->n_dims == p->ndim;
    for (int d = 0; ok && d < p->ndim; d++)
        ok = x->shape[d] == p->shape[d];
    if (!ok) {
        char a[200], b[200];
        shape_str(a, sizeof a, x->n_dims, x->shape);
        shape_str(b, sizeof b, p->ndim, p->shape);
        return hc_seterr(eb, HC_ERR_MISMATCH, "%s: tensor '%s' has shape %s, the model %s", file,
                         name, a, b);
    }
    if (need_f32 ? x->dtype != HC_DTYPE_F32 : !hc_dtype_is_float(x->dtype))
        return hc_seterr(eb, HC_ERR_FORMAT, "%s: tensor '%s' is %s, not %s", file, name,
                         hc_dtype_name(x->dtype), need_f32 ? "F32" : "a float dtype");
    *out = x;
    return HC_OK;
}

/* One directory. *incomplete set: files missing or of the wrong size (the caller may try an older
 * one); other errors concern a checkpoint that is there but unusable here. */
static int load_dir(const char *cdir, hc_ptab *t, hc_ckpt_state *out, int *incomplete,
                    hc_errbuf *eb) {
    *incomplete = 0;
    if (!t || !t->w || !t->m || !t->v)
        return hc_seterr(eb, HC_ERR_INVAL, "hc_ckpt_load: the parameter table is not allocated");
    char fj[PATH_N], fm[PATH_N], fo[PATH_N];
    if (join(fj, sizeof fj, cdir, "trainer.json") ||
        join(fm, sizeof fm, cdir, "model.safetensors") ||
        join(fo, sizeof fo, cdir, "optim.safetensors"))
        return hc_seterr(eb, HC_ERR_INVAL, "%s: path too long", cdir);
    char *text = NULL;
    size_t len = 0;
    int rc = hc_read_file(fj, CKPT_JSON_MAX, &text, &len, eb);
    if (rc) {
        *incomplete = 1;
        return rc;
    }
    json_error_t je;
    json_t *root = json_loadb(text, len, 0, &je);
    free(text);
    if (!root || !json_is_object(root)) {
        *incomplete = 1;
        rc = root ? hc_seterr(eb, HC_ERR_FORMAT, "%s: not a JSON object", fj)
                  : hc_json_seterr(eb, HC_ERR_FORMAT, fj, &je);
        json_decref(root);
        return rc;
    }
    jctx j = {fj, eb};
    hc_safetensors *so = NULL, *sm = NULL;
    const char *fmt = json_string_value(json_object_get(root, "format"));
    int64_t ver = 0, want_m = 0, want_o = 0, have_m = 0, have_o = 0;
    hc_ckpt_state st;
    json_t *files = json_object_get(root, "files");
    if (!fmt || strcmp(fmt, CKPT_FORMAT)) {
        rc = hc_seterr(eb, HC_ERR_FORMAT, "%s: field format: not \"%s\"", fj, CKPT_FORMAT);
        goto done;
    }
    if ((rc = j_int(&j, root, "version", "version", &ver))) goto done;
    if (ver != HC_CKPT_VERSION) {
        rc = hc_seterr(eb, HC_ERR_UNSUPPORTED,
                       "%s: checkpoint format version %lld; this build "
                       "reads version %d",
                       fj, (long long)ver, HC_CKPT_VERSION);
        goto done;
    }
    if ((rc = check_layout(&j, root, t)) || (rc = parse_state(&j, root, &st)) ||
        (rc = j_int(&j, files, "model.safetensors", "files.model.safetensors", &want_m)) ||
        (rc = j_int(&j, files, "optim.safetensors", "files.optim.safetensors", &want_o)))
        goto done;
    if ((rc = file_size(fm, &have_m, eb)) || (rc = file_size(fo, &have_o, eb))) {
        *incomplete = 1;
        goto done;
    }
    if (have_m != want_m || have_o != want_o) {
        *incomplete = 1;
        rc = hc_seterr(eb, HC_ERR_FORMAT,
                       "%s: incomplete: %s is %lld bytes and %s %lld, "
                       "trainer.json records %lld and %lld",
                       cdir, "model.safetensors", (long long)have_m, "optim.safetensors",
                       (long long)have_o, (long long)want_m, (long long)want_o);
        goto done;
    }
    if ((rc = hc_st_open(&so, fo, eb)) || (rc = hc_st_open(&sm, fm, eb))) goto done;
    /* validate everything before changing the table */
    for (int i = 0; i < t->n && rc == HC_OK; i++) {
        const hc_st_tensor *x;
        char nm[HC_PTAB_NAME_MAX + 16];
        for (int k = 0; k < 3 && rc == HC_OK; k++) {
            snprintf(nm, sizeof nm, "%s%s", OPTIM_PREFIX[k], t->params[i].name);
            rc = check_tensor(so, fo, nm, &t->params[i], 1, &x, eb);
        }
        if (rc == HC_OK) rc = check_tensor(sm, fm, t->params[i].name, &t->params[i], 0, &x, eb);
    }
    if (rc) goto done;
    float *bufs[3] = {t->w, t->m, t->v};
    for (int i = 0; i < t->n; i++) {
        char nm[HC_PTAB_NAME_MAX + 16];
        for (int k = 0; k < 3; k++) {
            snprintf(nm, sizeof nm, "%s%s", OPTIM_PREFIX[k], t->params[i].name);
            const hc_st_tensor *x = hc_st_find(so, nm);
            memcpy(bufs[k] + t->params[i].offset, x->data, sizeof(float) * t->params[i].numel);
        }
    }
    *out = st;
done:
    hc_st_close(so);
    hc_st_close(sm);
    json_decref(root);
    return rc;
}

int hc_ckpt_load(const char *ckpt_dir, hc_ptab *t, hc_ckpt_state *st, hc_errbuf *eb) {
    int incomplete = 0;
    if (!ckpt_dir || !st) return hc_seterr(eb, HC_ERR_INVAL, "hc_ckpt_load: NULL argument");
    return load_dir(ckpt_dir, t, st, &incomplete, eb);
}

int hc_ckpt_load_latest(const char *dir, hc_ptab *t, hc_ckpt_state *st, hc_ckpt_info *info,
                        hc_errbuf *eb) {
    if (!dir || !st) return hc_seterr(eb, HC_ERR_INVAL, "hc_ckpt_load_latest: NULL argument");
    hc_ckpt_info dummy;
    if (!info) info = &dummy;
    memset(info, 0, sizeof *info);
    struct stat sb;
    if (stat(dir, &sb) != 0) {
        int e = errno;
        if (e == ENOENT)
            return hc_seterr(eb, HC_ERR_NOTFOUND, "%s: no checkpoint (no such directory)", dir);
        return sys_err(eb, dir, "use as checkpoint directory", e);
    }
    if (!S_ISDIR(sb.st_mode))
        return hc_seterr(eb, HC_ERR_INVAL, "%s: checkpoint directory: is %s, not a directory", dir,
                         kind_of((unsigned)sb.st_mode));
    cand *v = NULL;
    int n = 0;
    int rc = list_cands(dir, 1, &v, &n, eb);
    if (rc) return rc;
    if (n == 0) {
        free(v);
        return hc_seterr(eb, HC_ERR_NOTFOUND, "%s: no checkpoint (no step-N directory)", dir);
    }
    rc = HC_ERR_NOTFOUND;
    for (int i = 0; i < n; i++) {
        char p[PATH_N];
        if (join(p, sizeof p, dir, v[i].name)) continue;
        int incomplete = 0;
        hc_errbuf e = {{0}};
        rc = load_dir(p, t, st, &incomplete, &e);
        if (rc == HC_OK) {
            snprintf(info->path, sizeof info->path, "%s", p);
            break;
        }
        if (!incomplete) {
            hc_seterr(eb, rc, "%s", e.msg);
            break;
        }
        if (info->skipped++ == 0)
            snprintf(info->skipped_why, sizeof info->skipped_why, "%s", e.msg);
    }
    if (rc && info->skipped == n)
        rc = hc_seterr(eb, HC_ERR_NOTFOUND, "%s: no complete checkpoint (%d incomplete; first: %s)",
                       dir, n, info->skipped_why);
    free(v);
    return rc;
}

/* ---- lock and leftovers --------------------------------------------------------------------- */

int hc_ckpt_lock(const char *dir, int *fd, hc_errbuf *eb) {
    *fd = -1;
    int rc = ensure_dir(dir, eb);
    if (rc) return rc;
    char p[PATH_N];
    if (join(p, sizeof p, dir, ".lock")) return hc_seterr(eb, HC_ERR_INVAL, "%s: path too long", dir);
    int f = open(p, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (f < 0) return sys_err(eb, p, "open the lock file", errno);
    if (flock(f, LOCK_EX | LOCK_NB) != 0) {
        int e = errno;
        char buf[32] = {0};
        ssize_t n = pread(f, buf, sizeof buf - 1, 0);
        close(f);
        if (e != EWOULDBLOCK) return sys_err(eb, p, "lock", e);
        long pid = n > 0 ? strtol(buf, NULL, 10) : 0;
        return hc_seterr(eb, HC_ERR_AGAIN,
                         "%s is in use by another hllm-train (process %ld): one run per checkpoint "
                         "directory",
                         dir, pid);
    }
    char buf[32];
    int n = snprintf(buf, sizeof buf, "%ld\n", (long)getpid());
    if (ftruncate(f, 0) != 0 || pwrite(f, buf, (size_t)n, 0) != n) {
        int e = errno;
        close(f);
        return sys_err(eb, p, "write the lock file", e);
    }
    *fd = f;
    return HC_OK;
}

int hc_ckpt_clean(const char *dir, FILE *log) {
    DIR *d = opendir(dir);
    if (!d) return 0;
    int removed = 0;
    struct dirent *de;
    char p[PATH_N], fin[PATH_N];
    while ((de = readdir(d))) {
        const char *nm = de->d_name;
        int64_t step;
        int old = 0, gone = !strncmp(nm, ".tmp-step-", 10) || !strncmp(nm, ".del-step-", 10) ||
                            !strcmp(nm, ".latest.tmp");
        if (!gone && parse_step_name(nm, 1, &step, &old) && old) {
            struct stat sb;
            gone = !join(fin, sizeof fin, dir, nm + 5) && lstat(fin, &sb) == 0;
        }
        if (!gone || join(p, sizeof p, dir, nm)) continue;
        if (rm_tree(p, 0) == 0) {
            removed++;
            if (log) fprintf(log, "hllm-train: removed %s, left by an interrupted save\n", p);
        } else if (log) {
            fprintf(log, "hllm-train: cannot remove %s, left by an interrupted save: %s\n", p,
                    strerror(errno));
        }
    }
    closedir(d);
    return removed;
}
