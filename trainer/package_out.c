/* package_out.c: see package_out.h. */
#define _XOPEN_SOURCE 700
#include "package_out.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <jansson.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/fileio.h"
#include "io/safetensors.h"

typedef struct skiplist {
    char **paths; /* canonical */
    int n;
} skiplist;

static int skip_add(skiplist *s, const char *path) {
    char *c = hc_path_canonical(path);
    if (!c) return HC_OK; /* nothing there to skip */
    char **p = realloc(s->paths, sizeof *p * (size_t)(s->n + 1));
    if (!p) {
        free(c);
        return HC_ERR_NOMEM;
    }
    s->paths = p;
    s->paths[s->n++] = c;
    return HC_OK;
}

static int skipped(const skiplist *s, const char *path) {
    char *c = hc_path_canonical(path);
    int hit = 0;
    for (int i = 0; c && i < s->n && !hit; i++)
        hit = !strcmp(c, s->paths[i]);
    free(c);
    return hit;
}

static int fsync_path(const char *path, int dir, hc_errbuf *eb) {
    int fd = open(path, (dir ? O_RDONLY | O_DIRECTORY : O_WRONLY) | O_CLOEXEC);
    if (fd < 0) return hc_seterr(eb, HC_ERR_IO, "%s: %s", path, strerror(errno));
    int rc = fsync(fd) ? hc_seterr(eb, HC_ERR_IO, "fsync %s: %s", path, strerror(errno)) : HC_OK;
    if (close(fd) && !rc) rc = hc_seterr(eb, HC_ERR_IO, "close %s: %s", path, strerror(errno));
    return rc;
}

static int copy_file(const char *src, const char *dst, hc_errbuf *eb) {
    int in = open(src, O_RDONLY | O_CLOEXEC);
    if (in < 0) return hc_seterr(eb, HC_ERR_IO, "%s: %s", src, strerror(errno));
    int out = open(dst, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (out < 0) {
        int e = errno;
        close(in);
        return hc_seterr(eb, HC_ERR_IO, "%s: %s", dst, strerror(e));
    }
    char buf[1 << 16];
    int rc = HC_OK;
    for (;;) {
        ssize_t n = read(in, buf, sizeof buf);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) {
            rc = hc_seterr(eb, HC_ERR_IO, "reading %s: %s", src, strerror(errno));
            break;
        }
        if (n == 0) break;
        for (ssize_t off = 0; off < n;) {
            ssize_t w = write(out, buf + off, (size_t)(n - off));
            if (w < 0 && errno == EINTR) continue;
            if (w < 0) {
                rc = hc_seterr(eb, HC_ERR_IO, "writing %s: %s", dst, strerror(errno));
                break;
            }
            off += w;
        }
        if (rc) break;
    }
    if (!rc && fsync(out)) rc = hc_seterr(eb, HC_ERR_IO, "fsync %s: %s", dst, strerror(errno));
    if (close(out) && !rc) rc = hc_seterr(eb, HC_ERR_IO, "close %s: %s", dst, strerror(errno));
    close(in);
    return rc;
}

/* Copies the tree below src into dst (which exists), leaving out skipped paths and hidden
 * entries; symbolic links are followed (a package may link its tokenizers). depth bounds
 * recursion. */
static int copy_tree(const char *src, const char *dst, const skiplist *skip, int depth,
                     hc_errbuf *eb) {
    if (depth > 16) return hc_seterr(eb, HC_ERR_RANGE, "%s: directories nested too deep", src);
    DIR *d = opendir(src);
    if (!d) return hc_seterr(eb, HC_ERR_IO, "%s: %s", src, strerror(errno));
    int rc = HC_OK;
    struct dirent *e;
    while (!rc && (e = readdir(d))) {
        if (e->d_name[0] == '.') continue;
        char s[PATH_MAX], t[PATH_MAX];
        if (snprintf(s, sizeof s, "%s/%s", src, e->d_name) >= (int)sizeof s ||
            snprintf(t, sizeof t, "%s/%s", dst, e->d_name) >= (int)sizeof t) {
            rc = hc_seterr(eb, HC_ERR_RANGE, "%s/%s: path too long", src, e->d_name);
            break;
        }
        if (skipped(skip, s)) continue;
        struct stat sb;
        if (stat(s, &sb)) {
            rc = hc_seterr(eb, HC_ERR_IO, "%s: %s", s, strerror(errno));
        } else if (S_ISDIR(sb.st_mode)) {
            if (mkdir(t, 0755)) rc = hc_seterr(eb, HC_ERR_IO, "mkdir %s: %s", t, strerror(errno));
            if (!rc) rc = copy_tree(s, t, skip, depth + 1, eb);
            if (!rc) rc = fsync_path(t, 1, eb);
        } else if (S_ISREG(sb.st_mode)) {
            rc = copy_file(s, t, eb);
        } /* FIFOs, sockets, devices: not part of a package */
    }
    closedir(d);
    return rc;
}

static int remove_tree(const char *path, int depth) {
    struct stat sb;
    if (lstat(path, &sb)) return errno == ENOENT ? 0 : -1;
    if (!S_ISDIR(sb.st_mode)) return unlink(path);
    if (depth > 32) return -1;
    DIR *d = opendir(path);
    if (!d) return -1;
    struct dirent *e;
    int rc = 0;
    while ((e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        char p[PATH_MAX];
        if (snprintf(p, sizeof p, "%s/%s", path, e->d_name) >= (int)sizeof p) {
            rc = -1;
            continue;
        }
        if (remove_tree(p, depth + 1)) rc = -1;
    }
    closedir(d);
    return rmdir(path) || rc ? -1 : 0;
}

/* May out_dir be replaced? Missing, an empty directory, or a directory with creator.json. */
static int replaceable(const char *out_dir, int *exists, hc_errbuf *eb) {
    struct stat sb;
    *exists = 0;
    if (lstat(out_dir, &sb)) {
        if (errno == ENOENT) return HC_OK;
        return hc_seterr(eb, HC_ERR_IO, "%s: %s", out_dir, strerror(errno));
    }
    if (!S_ISDIR(sb.st_mode))
        return hc_seterr(eb, HC_ERR_INVAL, "%s exists and is not a directory", out_dir);
    *exists = 1;
    char p[PATH_MAX];
    snprintf(p, sizeof p, "%s/creator.json", out_dir);
    if (!access(p, F_OK)) return HC_OK;
    DIR *d = opendir(out_dir);
    if (!d) return hc_seterr(eb, HC_ERR_IO, "%s: %s", out_dir, strerror(errno));
    struct dirent *e;
    int empty = 1;
    while ((e = readdir(d)))
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) empty = 0;
    closedir(d);
    return empty ? HC_OK
                 : hc_seterr(eb, HC_ERR_INVAL,
                             "%s is a non-empty directory that is not a model "
                             "package: not replacing it",
                             out_dir);
}

int hc_package_out_check(const char *path, const char *in_dir, const char *what, int any_dir,
                         hc_errbuf *eb) {
    char parent[PATH_MAX], base[PATH_MAX];
    if (!*path || snprintf(parent, sizeof parent, "%s", path) >= (int)sizeof parent)
        return hc_seterr(eb, HC_ERR_INVAL, "%s '%s': empty or too long", what, path);
    char *slash = strrchr(parent, '/');
    if (!slash) {
        snprintf(base, sizeof base, "%s", parent);
        snprintf(parent, sizeof parent, ".");
    } else {
        snprintf(base, sizeof base, "%s", slash + 1);
        if (slash == parent) slash[1] = 0;
        else *slash = 0;
    }
    if (!strcmp(base, ".") || !strcmp(base, "..") || !*base)
        return hc_seterr(eb, HC_ERR_INVAL, "%s '%s': name a directory to create, not . or ..", what,
                         path);
    struct stat sb;
    if (stat(parent, &sb) || !S_ISDIR(sb.st_mode))
        return hc_seterr(eb, HC_ERR_NOTFOUND, "%s '%s': its parent %s is not an existing directory",
                         what, path, parent);
    if (access(parent, W_OK))
        return hc_seterr(eb, HC_ERR_IO, "%s '%s': cannot write in %s: %s", what, path, parent,
                         strerror(errno));
    if (!lstat(path, &sb) && S_ISLNK(sb.st_mode))
        return hc_seterr(eb, HC_ERR_INVAL, "%s '%s' is a symbolic link: name the directory itself",
                         what, path);
    int exists, rc = HC_OK;
    if (any_dir) {
        if (!stat(path, &sb) && !S_ISDIR(sb.st_mode))
            rc = hc_seterr(eb, HC_ERR_INVAL, "%s exists and is not a directory", path);
    } else {
        rc = replaceable(path, &exists, eb);
    }
    if (rc) {
        char msg[sizeof eb->msg];
        snprintf(msg, sizeof msg, "%s", eb->msg);
        return hc_seterr(eb, rc, "%s: %s", what, msg);
    }
    char *cin = hc_path_canonical(in_dir), *cpar = hc_path_canonical(parent);
    int inside = 0;
    if (cin && cpar) {
        char full[2 * PATH_MAX + 2];
        snprintf(full, sizeof full, "%s/%s", strcmp(cpar, "/") ? cpar : "", base);
        const size_t n = strlen(cin);
        inside = !strncmp(full, cin, n) && full[n] == '/';
    }
    free(cin);
    free(cpar);
    if (inside)
        return hc_seterr(eb, HC_ERR_INVAL, "%s '%s' is inside the input package %s: choose a "
                         "place outside it", what, path, in_dir);
    return HC_OK;
}

static int write_creator_json(const char *in_dir, const char *path, hc_errbuf *eb) {
    char src[PATH_MAX];
    snprintf(src, sizeof src, "%s/creator.json", in_dir);
    json_error_t je;
    json_t *root = json_load_file(src, JSON_REJECT_DUPLICATES, &je);
    if (!root || !json_is_object(root)) {
        json_decref(root);
        return hc_seterr(eb, HC_ERR_FORMAT, "%s: %s", src, root ? "not an object" : je.text);
    }
    json_object_set_new(root, "weights", json_string("model.safetensors"));
    json_t *cl = json_object_get(root, "cluster");
    if (json_is_object(cl)) json_object_set_new(cl, "centroids", json_null());
    char *text = json_dumps(root, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
    json_decref(root);
    if (!text) return hc_seterr(eb, HC_ERR_NOMEM, "out of memory");
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    int rc = HC_OK;
    if (fd < 0) {
        rc = hc_seterr(eb, HC_ERR_IO, "%s: %s", path, strerror(errno));
    } else {
        size_t n = strlen(text);
        char nl = '\n';
        if (write(fd, text, n) != (ssize_t)n || write(fd, &nl, 1) != 1 || fsync(fd))
            rc = hc_seterr(eb, HC_ERR_IO, "writing %s: %s", path, strerror(errno));
        if (close(fd) && !rc) rc = hc_seterr(eb, HC_ERR_IO, "close %s: %s", path, strerror(errno));
    }
    free(text);
    return rc;
}

int hc_ctrain_write_package(const hc_ctrain *tr, const char *in_dir, const char *out_dir,
                            hc_dtype dtype, hc_errbuf *eb) {
    int exists = 0;
    int rc = replaceable(out_dir, &exists, eb);
    if (rc) return rc;
    char tmp[PATH_MAX], old[PATH_MAX], p[PATH_MAX + 32];
    if (snprintf(tmp, sizeof tmp, "%s.tmp-%ld", out_dir, (long)getpid()) >= (int)sizeof tmp ||
        snprintf(old, sizeof old, "%s.old-%ld", out_dir, (long)getpid()) >= (int)sizeof old)
        return hc_seterr(eb, HC_ERR_RANGE, "%s: path too long", out_dir);
    remove_tree(tmp, 0);
    if (mkdir(tmp, 0755)) return hc_seterr(eb, HC_ERR_IO, "mkdir %s: %s", tmp, strerror(errno));
    skiplist skip = {NULL, 0};
    const hc_package *pkg = &tr->c->pkg;
    char cj[PATH_MAX];
    snprintf(cj, sizeof cj, "%s/creator.json", in_dir);
    rc = skip_add(&skip, cj);
    if (!rc) rc = skip_add(&skip, pkg->weights);
    if (!rc && pkg->centroids) rc = skip_add(&skip, pkg->centroids);
    hc_safetensors *st = NULL;
    if (!rc && hc_st_open(&st, pkg->weights, eb) == HC_OK) { /* the shards of an index */
        for (size_t i = 0; !rc && i < hc_st_n_shards(st); i++)
            rc = skip_add(&skip, hc_st_shard_path(st, i));
        hc_st_close(st);
    }
    if (rc == HC_ERR_NOMEM) hc_seterr(eb, rc, "out of memory");
    if (!rc) rc = copy_tree(in_dir, tmp, &skip, 0, eb);
    snprintf(p, sizeof p, "%s/creator.json", tmp);
    if (!rc) rc = write_creator_json(in_dir, p, eb);
    snprintf(p, sizeof p, "%s/model.safetensors", tmp);
    if (!rc) rc = hc_ctrain_save_weights(tr, p, dtype, eb);
    if (!rc) rc = fsync_path(p, 0, eb);
    if (!rc) rc = fsync_path(tmp, 1, eb);
    if (!rc && exists && rename(out_dir, old))
        rc = hc_seterr(eb, HC_ERR_IO, "rename %s: %s", out_dir, strerror(errno));
    if (!rc && rename(tmp, out_dir)) {
        rc = hc_seterr(eb, HC_ERR_IO, "rename %s -> %s: %s", tmp, out_dir, strerror(errno));
        if (exists) rename(old, out_dir); /* put the old package back */
    }
    if (!rc) {
        char parent[PATH_MAX];
        snprintf(parent, sizeof parent, "%s", out_dir);
        char *slash = strrchr(parent, '/');
        if (slash == parent)
            slash[1] = 0;
        else if (slash)
            *slash = 0;
        else
            snprintf(parent, sizeof parent, ".");
        rc = fsync_path(parent, 1, eb);
        if (exists) remove_tree(old, 0);
    } else {
        remove_tree(tmp, 0);
    }
    for (int i = 0; i < skip.n; i++)
        free(skip.paths[i]);
    free(skip.paths);
    return rc;
}

/* Is pid a running hllm-train? A process that exists but whose /proc comm is another program is
 * not (its id was reused); without /proc an existing process counts as one. */
static int live_trainer(long pid) {
    if (pid <= 0 || pid == (long)getpid()) return 0;
    if (kill((pid_t)pid, 0) != 0 && errno != EPERM) return 0;
    char p[64], comm[64] = {0};
    snprintf(p, sizeof p, "/proc/%ld/comm", pid);
    FILE *f = fopen(p, "r");
    if (!f) return 1;
    size_t n = fread(comm, 1, sizeof comm - 1, f);
    fclose(f);
    comm[n] = 0;
    return !strncmp(comm, "hllm-train", 10);
}

int hc_package_out_clean(const char *out_dir, FILE *log) {
    char parent[PATH_MAX], base[PATH_MAX];
    snprintf(parent, sizeof parent, "%s", out_dir);
    char *slash = strrchr(parent, '/');
    if (!slash) {
        snprintf(base, sizeof base, "%s", parent);
        snprintf(parent, sizeof parent, ".");
    } else {
        snprintf(base, sizeof base, "%s", slash + 1);
        if (slash == parent) slash[1] = 0;
        else *slash = 0;
    }
    const size_t nb = strlen(base);
    if (!nb) return 0;
    DIR *d = opendir(parent);
    if (!d) return 0;
    int handled = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        const char *nm = e->d_name;
        if (strncmp(nm, base, nb) || (strncmp(nm + nb, ".tmp-", 5) && strncmp(nm + nb, ".old-", 5)))
            continue;
        const char *digits = nm + nb + 5;
        const size_t nd = strlen(digits);
        if (nd < 1 || nd > 10 || strspn(digits, "0123456789") != nd) continue;
        const long pid = strtol(digits, NULL, 10);
        if (live_trainer(pid)) continue;
        char p[PATH_MAX + 2];
        if (snprintf(p, sizeof p, "%s/%s", strcmp(parent, ".") ? parent : ".", nm) >= (int)sizeof p)
            continue;
        struct stat sb;
        if (!strncmp(nm + nb, ".old-", 5) && lstat(out_dir, &sb) != 0 && errno == ENOENT &&
            lstat(p, &sb) == 0 && S_ISDIR(sb.st_mode)) {
            if (rename(p, out_dir) == 0) {
                handled++;
                if (log)
                    fprintf(log, "hllm-train: restored %s from %s, left by a run (process %ld) "
                            "killed while replacing it\n", out_dir, p, pid);
                continue;
            }
        }
        if (remove_tree(p, 0) == 0) {
            handled++;
            if (log)
                fprintf(log, "hllm-train: removed %s, left by an interrupted run (process %ld)\n",
                        p, pid);
        } else if (log) {
            fprintf(log, "hllm-train: cannot remove %s, left by process %ld: %s\n", p, pid,
                    strerror(errno));
        }
    }
    closedir(d);
    return handled;
}
