/* hllm-train: fine-tunes an HLLM-Creator model package on JSON-lines training data (the
 * reference's schema; tools/synth writes it), on the CPU. See docs/TRAINING.md. */
#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ckpt.h"
#include "core/fileio.h"
#include "creator_train.h"
#include "data.h"
#include "ops/train_ops.h"
#include "optim.h"
#include "package_out.h"
#include "progress.h"

#include <sys/stat.h>
#include <unistd.h>

typedef struct opts {
    const char *package, *data, *out, *ckpt_dir, *metrics, *items, *task;
    int resume, epochs, batch, accum, threads, save_every, keep, quiet, row_prompts, shuffle;
    char out_buf[4096];
    long stop_after;
    long steps;
    double lr, warmup_ratio, weight_decay, clip, beta1, beta2, eps;
    double w_creative, w_recon, w_align, w_cls;
    uint64_t seed;
    int max_item_list_length, max_text_length, max_gen_text_length, max_user_profile_text_length;
    hc_dtype weights_dtype;
    char ckpt_buf[4200];
} opts;

static volatile sig_atomic_t g_stop;
/* The config file's JSON: its strings are the option values until exit. */
static json_t *g_cfg;
static void free_config(void) {
    json_decref(g_cfg);
    g_cfg = NULL;
}
static void on_signal(int sig) { g_stop = sig; }

static void usage(FILE *f) {
    fprintf(f,
"usage: hllm-train --package DIR --data TRAIN.jsonl --out DIR [options]\n"
"       hllm-train --config FILE [options]   (options override the file)\n"
"\n"
"Fine-tunes an HLLM-Creator model package on the CPU with its losses (MODEL_SPEC 6.1: creative,\n"
"recon, align, cls) through item LLM -> user LLM -> projectors -> creative LLM, every parameter\n"
"trained, AdamW with a cosine schedule. Writes a model package to --out (cluster centroids\n"
"removed: recompute them with `hllm cluster`) and checkpoints to --checkpoint-dir.\n"
"\n"
"  --config FILE            JSON object whose keys are these option names without '--'\n"
"  --package DIR            the starting model package (required)\n"
"  --data FILE              training rows, JSON lines (required)\n"
"  --task T                 creator (default): the HLLM-Creator losses on reference-schema rows;\n"
"                           nextitem: HLLM next-item pre-training of the item and user LLMs on\n"
"                           a next-item split (--data its train.jsonl, --items its items.jsonl)\n"
"  --items FILE             the next-item split's items.jsonl (with --task nextitem)\n"
"  --out DIR                the trained package (required; replaces an existing package)\n"
"  --checkpoint-dir DIR     checkpoints (default: OUT.ckpt)\n"
"  --resume                 continue from the newest complete checkpoint there; the settings\n"
"                           that define the run (task, package, data, items, epochs, steps,\n"
"                           batch, accum, lr, warmup-ratio, weight-decay, betas, eps, clip,\n"
"                           seed, no-shuffle, row-prompts, loss weights, max-* lengths) must\n"
"                           equal the checkpoint's, else exit 2 naming each difference\n"
"  --epochs N               passes over the data (default 1)\n"
"  --steps N                optimizer steps (default: epochs x rows / (batch x accum))\n"
"  --batch N                rows per micro-batch (default 2, the reference's)\n"
"  --accum N                micro-batches per optimizer step (default 1)\n"
"  --lr X                   peak learning rate (default 2e-5)\n"
"  --warmup-ratio X         linear warm-up over this share of the steps (default 0.1)\n"
"  --weight-decay X         AdamW weight decay on every parameter (default 0.01)\n"
"  --beta1 X, --beta2 X, --eps X   AdamW (0.9, 0.999, 1e-8)\n"
"  --clip X                 clip the gradient norm at X (default 0: no clipping)\n"
"  --creative-weight X, --recon-weight X, --align-weight X, --cls-weight X\n"
"                           loss weights (default 1 each, the reference's; 0 turns a term off;\n"
"                           align and cls need --batch >= 2, recon the package's profile_prompt)\n"
"  --seed N                 shuffle seed (default 2020)\n"
"  --no-shuffle             visit rows in file order\n"
"  --row-prompts            use each row's prompt1/prompt2 instead of the package's templates\n"
"  --max-item-list-length N, --max-text-length N, --max-gen-text-length N,\n"
"  --max-user-profile-text-length N   the reference's MAX_* limits (50, 64, 4096, 1024)\n"
"  --save-every N           checkpoint every N steps (default 0: at the end only)\n"
"  --keep N                 checkpoints kept (default 3; 0 keeps all)\n"
"  --weights-dtype D        as-stored (default), f32, bf16 or f16 for the written weights\n"
"  --metrics FILE           per-step metrics, JSON lines (appended; --resume first cuts it\n"
"                           after the checkpoint's step and drops a torn last line)\n"
"  --threads N              CPU threads (default 1): the trainer's matmuls, attention and\n"
"                           lm_head + loss, and the package's engine; results are bit-identical\n"
"                           for every N\n"
"  --quiet                  no progress line\n"
"  --stop-after N           stop as SIGINT does after N steps of this run (checkpoint, exit\n"
"                           130); for testing --resume\n"
"  -h, --help               this text\n"
"\n"
"SIGINT or SIGTERM: the step in progress finishes, a checkpoint is written, exit status 130.\n"
"One run per checkpoint directory (a lock; a second run is refused). Leftovers of killed runs\n"
"(OUT.tmp-PID, OUT.old-PID of a process that is gone, .tmp-step-N in the checkpoint directory)\n"
"are removed, or restored as OUT, with a notice.\n");
}

static int fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int fail(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "hllm-train: ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
    return 2;
}

static int parse_long(const char *opt, const char *s, long lo, long hi, long *v) {
    char *end;
    errno = 0;
    long x = strtol(s, &end, 10);
    if (!*s || *end || errno || x < lo || x > hi)
        return fail("%s: '%s' is not an integer in %ld..%ld", opt, s, lo, hi), -1;
    *v = x;
    return 0;
}

static int parse_double(const char *opt, const char *s, double lo, double hi, double *v) {
    char *end;
    errno = 0;
    double x = strtod(s, &end);
    if (!*s || *end || errno || !(x >= lo && x <= hi))
        return fail("%s: '%s' is not a number in %g..%g", opt, s, lo, hi), -1;
    *v = x;
    return 0;
}

static int get_long(const char *opt, const char *val, long lo, long hi, long *v) {
    if (!val) return fail("%s needs a value", opt), -1;
    return parse_long(opt, val, lo, hi, v);
}

/* Applies one option (name without "--", value NULL for flags). Returns 0, or -1 after a
 * message. from: where it came from, for messages. */
static int apply(opts *o, const char *name, const char *val, const char *from) {
    char opt[96];
    snprintf(opt, sizeof opt, "%s%s", from, name);
    long l;
    double d;
    static const struct { const char *name; size_t off; } strs[] = {
        {"package", offsetof(opts, package)}, {"data", offsetof(opts, data)},
        {"out", offsetof(opts, out)},         {"checkpoint-dir", offsetof(opts, ckpt_dir)},
        {"metrics", offsetof(opts, metrics)},  {"items", offsetof(opts, items)},
        {"task", offsetof(opts, task)}};
    for (size_t i = 0; i < sizeof strs / sizeof strs[0]; i++)
        if (!strcmp(name, strs[i].name)) {
            if (!val || !*val) return fail("%s needs a value", opt), -1;
            *(const char **)((char *)o + strs[i].off) = val;
            return 0;
        }
    static const struct { const char *name; size_t off; long lo, hi; } ints[] = {
        {"epochs", offsetof(opts, epochs), 1, 1000000},
        {"batch", offsetof(opts, batch), 1, 4096},
        {"accum", offsetof(opts, accum), 1, 4096},
        {"threads", offsetof(opts, threads), 1, 1024},
        {"save-every", offsetof(opts, save_every), 0, 1000000000},
        {"keep", offsetof(opts, keep), 0, 1000000},
        {"max-item-list-length", offsetof(opts, max_item_list_length), 0, 100000},
        {"max-text-length", offsetof(opts, max_text_length), 0, 100000},
        {"max-gen-text-length", offsetof(opts, max_gen_text_length), 2, 1 << 20},
        {"max-user-profile-text-length", offsetof(opts, max_user_profile_text_length), 2,
         1 << 20}};
    for (size_t i = 0; i < sizeof ints / sizeof ints[0]; i++)
        if (!strcmp(name, ints[i].name)) {
            if (!val) return fail("%s needs a value", opt), -1;
            if (parse_long(opt, val, ints[i].lo, ints[i].hi, &l)) return -1;
            *(int *)((char *)o + ints[i].off) = (int)l;
            return 0;
        }
    static const struct { const char *name; size_t off; double lo, hi; } dbls[] = {
        {"lr", offsetof(opts, lr), 0, 10},
        {"warmup-ratio", offsetof(opts, warmup_ratio), 0, 1},
        {"weight-decay", offsetof(opts, weight_decay), 0, 10},
        {"clip", offsetof(opts, clip), 0, 1e30},
        {"beta1", offsetof(opts, beta1), 0, 0.999999},
        {"beta2", offsetof(opts, beta2), 0, 0.999999999},
        {"eps", offsetof(opts, eps), 1e-30, 1},
        {"creative-weight", offsetof(opts, w_creative), 0, 1e6},
        {"recon-weight", offsetof(opts, w_recon), 0, 1e6},
        {"align-weight", offsetof(opts, w_align), 0, 1e6},
        {"cls-weight", offsetof(opts, w_cls), 0, 1e6}};
    for (size_t i = 0; i < sizeof dbls / sizeof dbls[0]; i++)
        if (!strcmp(name, dbls[i].name)) {
            if (!val) return fail("%s needs a value", opt), -1;
            if (parse_double(opt, val, dbls[i].lo, dbls[i].hi, &d)) return -1;
            *(double *)((char *)o + dbls[i].off) = d;
            return 0;
        }
    if (!strcmp(name, "steps")) {
        if (get_long(opt, val, 1, 1000000000, &l)) return -1;
        o->steps = l;
        return 0;
    }
    if (!strcmp(name, "stop-after")) {
        if (get_long(opt, val, 1, 1000000000, &l)) return -1;
        o->stop_after = l;
        return 0;
    }
    if (!strcmp(name, "seed")) {
        if (get_long(opt, val, 0, 0x7fffffffffffffffL, &l)) return -1;
        o->seed = (uint64_t)l;
        return 0;
    }
    if (!strcmp(name, "weights-dtype")) {
        if (!val) return fail("%s needs a value", opt), -1;
        if (!strcmp(val, "as-stored")) o->weights_dtype = HC_DTYPE_AS_STORED;
        else if (!strcmp(val, "f32")) o->weights_dtype = HC_DTYPE_F32;
        else if (!strcmp(val, "bf16")) o->weights_dtype = HC_DTYPE_BF16;
        else if (!strcmp(val, "f16")) o->weights_dtype = HC_DTYPE_F16;
        else return fail("%s: '%s' is not as-stored, f32, bf16 or f16", opt, val), -1;
        return 0;
    }
    static const struct { const char *name; size_t off; int v; } flags[] = {
        {"resume", offsetof(opts, resume), 1}, {"quiet", offsetof(opts, quiet), 1},
        {"no-shuffle", offsetof(opts, shuffle), 0},
        {"row-prompts", offsetof(opts, row_prompts), 1}};
    for (size_t i = 0; i < sizeof flags / sizeof flags[0]; i++)
        if (!strcmp(name, flags[i].name)) {
            if (val && strcmp(val, "true") && strcmp(val, "false"))
                return fail("%s is a flag (true or false in a config file)", opt), -1;
            *(int *)((char *)o + flags[i].off) = !val || !strcmp(val, "true") ? flags[i].v
                                                                               : !flags[i].v;
            return 0;
        }
    return fail("unknown option %s (see --help)", opt), -1;
}

/* Config file: a JSON object of option names; numbers, strings and booleans. The JSON stays
 * alive (its strings are referenced) until exit. */
static int load_config(opts *o, const char *path, json_t **keep) {
    json_error_t je;
    json_t *root = json_load_file(path, JSON_REJECT_DUPLICATES, &je);
    if (!root) return fail("%s: line %d: %s", path, je.line, je.text), -1;
    if (!json_is_object(root)) {
        json_decref(root);
        return fail("%s: the config must be a JSON object", path), -1;
    }
    *keep = root;
    const char *k;
    json_t *v;
    char from[1100];
    snprintf(from, sizeof from, "%s: ", path);
    json_object_foreach(root, k, v) {
        char num[64];
        const char *val;
        if (json_is_string(v)) val = json_string_value(v);
        else if (json_is_integer(v))
            snprintf(num, sizeof num, "%" JSON_INTEGER_FORMAT, json_integer_value(v)), val = num;
        else if (json_is_real(v))
            snprintf(num, sizeof num, "%.17g", json_real_value(v)), val = num;
        else if (json_is_boolean(v)) val = json_is_true(v) ? "true" : "false";
        else return fail("%s: key '%s' must be a string, number or boolean", path, k), -1;
        if (!strcmp(k, "config")) return fail("%s: a config cannot name another config", path), -1;
        if (apply(o, k, val, from)) return -1;
    }
    return 0;
}

/* "dir/" and "dir//" name dir. */
static void strip_slashes(char *p) {
    size_t n = strlen(p);
    while (n > 1 && p[n - 1] == '/')
        p[--n] = 0;
}

static double now_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static int save(const char *dir, hc_ctrain *tr, const hc_ckpt_state *st, const opts *o) {
    hc_ckpt_params cp = hc_ckpt_default_params();
    cp.keep = o->keep;
    cp.weights_dtype = o->weights_dtype;
    char path[1400];
    hc_errbuf eb = {{0}};
    if (hc_ckpt_save(dir, &tr->t, st, &cp, path, sizeof path, &eb))
        return fail("checkpoint: %s", eb.msg), -1;
    if (!o->quiet) fprintf(stderr, "hllm-train: checkpoint %s\n", path);
    return 0;
}

/* The settings that define a run's schedule and losses, as a JSON object stored in every
 * checkpoint; --resume refuses other values (see docs/TRAINING.md "Resume"). Paths canonical. */
static json_t *run_settings(const opts *o, int64_t rows) {
    json_t *r = json_object();
    const char *paths[][2] = {{"package", o->package}, {"data", o->data}, {"items", o->items}};
    for (size_t i = 0; i < 3; i++) {
        if (!paths[i][1]) {
            json_object_set_new(r, paths[i][0], json_null());
            continue;
        }
        char *c = hc_path_canonical(paths[i][1]);
        json_object_set_new(r, paths[i][0], json_string(c ? c : paths[i][1]));
        free(c);
    }
    json_object_set_new(r, "task", json_string(o->task));
    json_object_set_new(r, "data-rows", json_integer(rows));
    const struct { const char *k; long long v; } ints[] = {
        {"epochs", o->epochs}, {"steps", o->steps}, {"batch", o->batch}, {"accum", o->accum},
        {"seed", (long long)o->seed}, {"no-shuffle", !o->shuffle}, {"row-prompts", o->row_prompts},
        {"max-item-list-length", o->max_item_list_length},
        {"max-text-length", o->max_text_length},
        {"max-gen-text-length", o->max_gen_text_length},
        {"max-user-profile-text-length", o->max_user_profile_text_length}};
    for (size_t i = 0; i < sizeof ints / sizeof ints[0]; i++)
        json_object_set_new(r, ints[i].k, json_integer(ints[i].v));
    const struct { const char *k; double v; } dbls[] = {
        {"lr", o->lr}, {"warmup-ratio", o->warmup_ratio}, {"weight-decay", o->weight_decay},
        {"beta1", o->beta1}, {"beta2", o->beta2}, {"eps", o->eps}, {"clip", o->clip},
        {"creative-weight", o->w_creative}, {"recon-weight", o->w_recon},
        {"align-weight", o->w_align}, {"cls-weight", o->w_cls}};
    for (size_t i = 0; i < sizeof dbls / sizeof dbls[0]; i++)
        json_object_set_new(r, dbls[i].k, json_real(dbls[i].v));
    return r;
}

static void show_value(char *buf, size_t n, json_t *v, json_t *other) {
    if (json_is_string(v)) snprintf(buf, n, "%s", json_string_value(v));
    else if (json_is_integer(v)) snprintf(buf, n, "%" JSON_INTEGER_FORMAT, json_integer_value(v));
    else if (json_is_real(v)) {
        snprintf(buf, n, "%g", json_real_value(v));
        char b2[64];
        if (json_is_real(other) && (snprintf(b2, sizeof b2, "%g", json_real_value(other)), !strcmp(buf, b2)))
            snprintf(buf, n, "%.17g", json_real_value(v));
    } else if (json_is_null(v)) snprintf(buf, n, "(none)");
    else snprintf(buf, n, "?");
}

/* Compares the checkpoint's run settings (JSON text; "" for an older checkpoint: nothing to
 * compare) with this run's; prints one line per difference; returns their number. */
static int resume_mismatches(const char *saved_text, json_t *now, const char *ckpt) {
    if (!saved_text[0]) return 0;
    json_t *saved = json_loads(saved_text, 0, NULL);
    if (!saved) return 0;
    int n = 0;
    const char *k;
    json_t *v;
    json_object_foreach(now, k, v) {
        json_t *was = json_object_get(saved, k);
        if (!was || json_equal(was, v)) continue;
        char a[1200], b[1200];
        show_value(a, sizeof a, was, v);
        show_value(b, sizeof b, v, was);
        if (!strcmp(k, "data-rows"))
            fprintf(stderr, "hllm-train: --resume: the usable rows of --data: %s in the checkpoint, "
                    "%s now (was the data file changed?)\n", a, b);
        else if (!strcmp(k, "steps"))
            fprintf(stderr, "hllm-train: --resume: --steps: %s in the checkpoint, %s now\n",
                    strcmp(a, "0") ? a : "not set", strcmp(b, "0") ? b : "not set");
        else if (!strcmp(k, "no-shuffle") || !strcmp(k, "row-prompts"))
            fprintf(stderr, "hllm-train: --resume: --%s: %s in the checkpoint, %s now\n", k,
                    strcmp(a, "0") ? "set" : "not set", strcmp(b, "0") ? "set" : "not set");
        else
            fprintf(stderr, "hllm-train: --resume: --%s: %s in the checkpoint, %s now\n", k, a, b);
        n++;
    }
    json_decref(saved);
    if (n)
        fprintf(stderr, "hllm-train: --resume: %s was made with other settings: resume with the "
                "same ones (only --out, --checkpoint-dir, --save-every, --keep, --metrics, "
                "--threads, --quiet, --weights-dtype and --stop-after may change), or start a new "
                "run with another --checkpoint-dir\n", ckpt);
    return n;
}

int main(int argc, char **argv) {
    opts o;
    memset(&o, 0, sizeof o);
    o.epochs = 1;
    o.batch = 2;
    o.accum = 1;
    o.threads = 1;
    o.keep = 3;
    o.shuffle = 1;
    o.weights_dtype = HC_DTYPE_AS_STORED;
    hc_adamw_cfg ad = hc_adamw_default();
    o.lr = ad.lr;
    o.weight_decay = ad.weight_decay;
    o.beta1 = ad.beta1;
    o.beta2 = ad.beta2;
    o.eps = ad.eps;
    o.warmup_ratio = 0.1;
    o.w_creative = o.w_recon = o.w_align = o.w_cls = 1;
    hc_data_params dp0 = hc_data_default_params();
    o.seed = dp0.seed;
    o.max_item_list_length = dp0.max_item_list_length;
    o.max_text_length = dp0.max_text_length;
    o.max_gen_text_length = dp0.max_gen_text_length;
    o.max_user_profile_text_length = dp0.max_user_profile_text_length;
    atexit(free_config);
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
            usage(stdout);
            return 0;
        }
        const char *cf = !strcmp(argv[i], "--config")       ? (i + 1 < argc ? argv[i + 1] : NULL)
                         : !strncmp(argv[i], "--config=", 9) ? argv[i] + 9
                                                             : "";
        if (!cf) return fail("--config needs a file");
        if (*cf) {
            if (g_cfg) return fail("--config given twice");
            if (load_config(&o, cf, &g_cfg)) return 2;
        }
    }
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--config")) {
            i++;
            continue;
        }
        if (!strncmp(a, "--config=", 9)) continue;
        if (strncmp(a, "--", 2) || !a[2]) return fail("unexpected argument '%s' (see --help)", a);
        const char *name = a + 2, *eq = strchr(name, '=');
        char nb[64];
        const char *val = NULL;
        if (eq) {
            snprintf(nb, sizeof nb, "%.*s", (int)(eq - name), name);
            name = nb;
            val = eq + 1;
        } else if (strcmp(name, "resume") && strcmp(name, "quiet") && strcmp(name, "no-shuffle") &&
                   strcmp(name, "row-prompts")) {
            if (i + 1 >= argc) return fail("--%s needs a value", name);
            val = argv[++i];
        }
        if (apply(&o, name, val, "--")) return 2;
    }
    if (!o.package || !o.data || !o.out)
        return fail("--package, --data and --out are required (see --help)");
    if (!o.task) o.task = "creator";
    const int nextitem = !strcmp(o.task, "nextitem");
    if (!nextitem && strcmp(o.task, "creator"))
        return fail("--task: '%s' is not creator or nextitem", o.task);
    if (nextitem != (o.items != NULL))
        return fail(nextitem ? "--task nextitem needs --items (the split's items.jsonl)"
                             : "--items is for --task nextitem");
    /* the output paths, checked before any training: a run must not end unable to save */
    snprintf(o.out_buf, sizeof o.out_buf, "%s", o.out);
    strip_slashes(o.out_buf);
    o.out = o.out_buf;
    if (!o.ckpt_dir) {
        snprintf(o.ckpt_buf, sizeof o.ckpt_buf, "%s.ckpt", o.out);
    } else {
        snprintf(o.ckpt_buf, sizeof o.ckpt_buf, "%s", o.ckpt_dir);
        strip_slashes(o.ckpt_buf);
    }
    o.ckpt_dir = o.ckpt_buf;
    {
        hc_errbuf pe = {{0}};
        if (hc_package_out_check(o.out, o.package, "--out", 0, &pe) ||
            hc_package_out_check(o.ckpt_dir, o.package, "--checkpoint-dir", 1, &pe)) {
            fail("%s", pe.msg);
            return 1;
        }
        struct stat ms;
        if (o.metrics && !stat(o.metrics, &ms) &&
            (S_ISFIFO(ms.st_mode) || S_ISSOCK(ms.st_mode) || S_ISDIR(ms.st_mode))) {
            fail("--metrics %s: not a regular file (a FIFO, socket or directory)", o.metrics);
            return 1;
        }
    }

    hc_errbuf eb = {{0}};
    hc_ctrain *tr = NULL;
    hc_data *data = NULL;
    hc_progress prog = {0};
    int status = 1, lock_fd = -1;
    json_t *run = NULL;
    if (hc_train_ops_cpu_set_threads(o.threads)) {
        fail("--threads %d: cannot start the threads", o.threads);
        goto done;
    }
    if (hc_ctrain_create(&tr, o.package, o.threads, &eb)) {
        fail("%s", eb.msg);
        goto done;
    }
    tr->max_gen = o.max_gen_text_length;
    tr->max_profile = o.max_user_profile_text_length;
    tr->cls_rng = o.seed;
    const hc_ctrain_weights w = {(float)o.w_creative, (float)o.w_recon, (float)o.w_align,
                                 (float)o.w_cls};
    if (!nextitem && w.creative + w.recon + w.align + w.cls <= 0) {
        fail("every loss weight is 0: nothing to train");
        goto done;
    }
    if (!nextitem && (w.align > 0 || w.cls > 0) && o.batch < 2) {
        fail("--align-weight and --cls-weight need --batch >= 2 (their negatives are the other "
             "rows of the micro-batch); set them to 0 for --batch 1");
        goto done;
    }
    if (!nextitem && w.recon > 0 && !tr->profile_prompt) {
        fail("%s has no profile_prompt template: the recon loss cannot be computed "
             "(--recon-weight 0)", o.package);
        goto done;
    }
    hc_data_params dp = hc_data_default_params();
    dp.seed = o.seed;
    dp.shuffle = o.shuffle;
    dp.row_prompts = o.row_prompts;
    dp.max_item_list_length = o.max_item_list_length;
    dp.max_text_length = o.max_text_length;
    dp.max_gen_text_length = o.max_gen_text_length;
    dp.max_user_profile_text_length = o.max_user_profile_text_length;
    if (nextitem ? hc_data_open_nextitem(&data, tr->c, o.items, o.data, &dp, &eb)
                 : hc_data_open(&data, tr->c, o.data, &dp, &eb)) {
        fail("%s", eb.msg);
        goto done;
    }
    char summary[2048];
    hc_data_summary(data, summary, sizeof summary);
    if (!o.quiet) fprintf(stderr, "hllm-train: %s\n", summary);
    const int64_t rows = hc_data_rows(data), per_step = (int64_t)o.batch * o.accum;
    hc_ckpt_state st;
    memset(&st, 0, sizeof st);
    st.total_steps = o.steps ? o.steps : (rows * o.epochs + per_step - 1) / per_step;
    if (st.total_steps < 1) st.total_steps = 1;
    st.adamw = ad;
    st.adamw.lr = o.lr;
    st.adamw.weight_decay = o.weight_decay;
    st.adamw.beta1 = o.beta1;
    st.adamw.beta2 = o.beta2;
    st.adamw.eps = o.eps;
    st.peak_lr = o.lr;
    st.warmup = o.warmup_ratio * (double)st.total_steps;
    run = run_settings(&o, rows);
    {
        char *text = run ? json_dumps(run, JSON_COMPACT | JSON_SORT_KEYS | JSON_REAL_PRECISION(17))
                         : NULL;
        if (!text || strlen(text) >= sizeof st.run) {
            free(text);
            fail("the run's settings do not fit in a checkpoint (paths too long?)");
            goto done;
        }
        snprintf(st.run, sizeof st.run, "%s", text);
        free(text);
    }
    if (o.resume) {
        hc_ckpt_info info;
        int rc = hc_ckpt_load_latest(o.ckpt_dir, &tr->t, &st, &info, &eb);
        if (rc == HC_ERR_NOTFOUND) {
            if (!o.quiet) fprintf(stderr, "hllm-train: no checkpoint in %s: starting fresh\n",
                                  o.ckpt_dir);
        } else if (rc) {
            fail("resume: %s", eb.msg);
            goto done;
        } else {
            char ckpt_run[HC_CKPT_RUN_MAX];
            snprintf(ckpt_run, sizeof ckpt_run, "%s", st.run);
            if (resume_mismatches(ckpt_run, run, info.path)) {
                status = 2;
                goto done;
            }
            if (!ckpt_run[0])
                fprintf(stderr, "hllm-train: --resume: %s records no settings (an older "
                        "checkpoint): its schedule (%lld steps, lr %g) is used\n", info.path,
                        (long long)st.total_steps, st.peak_lr);
            /* the checkpoint's own settings are this run's from here on (equal where recorded) */
            char *text = json_dumps(run, JSON_COMPACT | JSON_SORT_KEYS | JSON_REAL_PRECISION(17));
            snprintf(st.run, sizeof st.run, "%s", text ? text : "");
            free(text);
            if (st.n_rng >= 1) tr->cls_rng = st.rng[0];
            if (hc_data_seek(data, st.cursor, &eb)) {
                fail("resume: %s (was the data file changed?)", eb.msg);
                goto done;
            }
            if (!o.quiet)
                fprintf(stderr, "hllm-train: resumed %s at step %lld of %lld%s%s\n", info.path,
                        (long long)st.step, (long long)st.total_steps,
                        info.skipped ? "; skipped incomplete: " : "",
                        info.skipped ? info.skipped_why : "");
        }
    }
    if (o.batch > rows) {
        fail("--batch %d is more than the %lld usable rows of %s (a row would be its own "
             "negative)", o.batch, (long long)rows, o.data);
        goto done;
    }
    /* one run per checkpoint directory; then what killed runs left behind goes */
    if (hc_ckpt_lock(o.ckpt_dir, &lock_fd, &eb)) {
        fail("--checkpoint-dir: %s", eb.msg);
        goto done;
    }
    hc_ckpt_clean(o.ckpt_dir, stderr);
    hc_package_out_clean(o.out, stderr);
    if (o.resume && o.metrics) { /* the steps after the checkpoint run again: their lines go */
        int64_t cut = 0;
        if (hc_metrics_cut(o.metrics, st.step, &cut, &eb)) {
            fail("%s", eb.msg);
            goto done;
        }
        if (cut > 0)
            fprintf(stderr, "hllm-train: --metrics %s: removed %lld line%s after step %lld (they "
                    "are written again)\n", o.metrics, (long long)cut, cut == 1 ? "" : "s",
                    (long long)st.step);
    }
    if (hc_progress_open(&prog, o.metrics, st.total_steps, &eb)) {
        fail("%s", eb.msg);
        goto done;
    }
    if (o.quiet) prog.tty = 0;
    /* the first SIGINT / SIGTERM stops at the next micro-batch boundary with a checkpoint; a
     * second one ends the process at once (SA_RESETHAND); a closed metrics pipe is an error */
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sa.sa_flags = SA_RESETHAND;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);

    hc_data_sample *smp = calloc((size_t)o.batch, sizeof *smp);
    hc_ctrain_row *rw = calloc((size_t)o.batch, sizeof *rw);
    if (!smp || !rw) {
        fail("out of memory");
        free(smp);
        free(rw);
        goto done;
    }
    const double t0 = now_s();
    int64_t done_here = 0;
    int rc = HC_OK, nonfinite = 0;
    while (st.step < st.total_steps && !g_stop) {
        hc_grad_zero(&tr->t);
        double loss = 0, terms[4] = {0, 0, 0, 0};
        int64_t tokens = 0;
        const double ts = now_s();
        int interrupted = 0;
        for (int a = 0; a < o.accum && !rc; a++) {
            if (g_stop) { /* between micro-batches: this step is dropped, its rows re-read */
                interrupted = 1;
                break;
            }
            for (int b = 0; b < o.batch && !rc; b++) {
                hc_data_sample_free(&smp[b]);
                if ((rc = hc_data_next(data, &smp[b], &eb))) break;
                const hc_data_sample *s = &smp[b];
                rw[b] = (hc_ctrain_row){s->n_items,
                                        s->item_lens,
                                        s->item_tok,
                                        s->ids + s->slot_pos + 1,
                                        s->n_prompt - s->slot_pos - 1,
                                        s->ids + s->n_prompt,
                                        s->n_ids - s->n_prompt - 1,
                                        s->ad_tok,
                                        s->n_ad_tok,
                                        s->profile_tok,
                                        s->n_profile_tok};
                if (nextitem) /* a next-item sample has only its items */
                    rw[b] = (hc_ctrain_row){.n_items = s->n_items,
                                            .item_lens = s->item_lens,
                                            .item_ids = s->item_tok};
            }
            hc_ctrain_losses l;
            memset(&l, 0, sizeof l);
            if (!rc && nextitem) {
                rc = hc_ctrain_nextitem(tr, rw, o.batch, 1.0f / (float)o.accum, 1, &l.total,
                                        &l.n_creative, &eb);
                l.creative = l.total;
            } else if (!rc) {
                rc = hc_ctrain_step(tr, rw, o.batch, &w, 1.0f / (float)o.accum, 1, &l, &eb);
            }
            if (rc) break;
            loss += l.total / o.accum;
            terms[0] += l.creative / o.accum;
            terms[1] += l.recon / o.accum;
            terms[2] += l.align / o.accum;
            terms[3] += l.cls / o.accum;
            tokens += l.n_creative + l.n_recon;
        }
        if (rc) {
            fail("step %lld: %s", (long long)st.step + 1, eb.msg);
            break;
        }
        if (interrupted) { /* the reader goes back to the step's first row for --resume */
            hc_data_seek(data, st.cursor, &eb);
            break;
        }
        const double gn = o.clip > 0 ? hc_clip_grad_norm(&tr->t, o.clip)
                                     : sqrt(hc_grad_sumsq_range(&tr->t, 0, tr->t.total));
        const double lr = hc_cosine_lr(st.peak_lr, st.step, st.warmup, st.total_steps);
        hc_adamw_step_range(&tr->t, &st.adamw, lr, st.step + 1, 0, tr->t.total);
        st.step++;
        done_here++;
        st.cursor = hc_data_tell(data);
        st.epoch = st.cursor.epoch;
        st.n_rng = 1;
        st.rng[0] = tr->cls_rng;
        const char *all[] = {"creative", "recon", "align", "cls"};
        const float ws[] = {w.creative, w.recon, w.align, w.cls};
        const char *names[4];
        double vals[4];
        int nterms = 0;
        if (nextitem) all[0] = "nextitem";
        for (int k = 0; k < (nextitem ? 1 : 4); k++)
            if (nextitem || ws[k] > 0) {
                names[nterms] = all[k];
                vals[nterms++] = terms[k];
            }
        const double el = now_s() - t0;
        if (hc_progress_step(&prog, st.step, lr, loss, nterms, names, vals, gn,
                             (double)tokens / (now_s() - ts), el, done_here, &eb)) {
            fail("%s: %s", o.metrics ? o.metrics : "progress", eb.msg);
            rc = HC_ERR_IO;
            break;
        }
        if (!isfinite(loss)) {
            fail("step %lld: the loss is not finite (%g): stopping; lower --lr", (long long)st.step,
                 loss);
            rc = HC_ERR_RANGE;
            nonfinite = 1;
            break;
        }
        if (o.stop_after && done_here == o.stop_after && st.step < st.total_steps)
            g_stop = SIGINT;
        if (o.save_every && st.step % o.save_every == 0 && st.step < st.total_steps && !g_stop &&
            save(o.ckpt_dir, tr, &st, &o)) {
            rc = HC_ERR_IO;
            break;
        }
    }
    for (int b = 0; b < o.batch; b++) hc_data_sample_free(&smp[b]);
    free(smp);
    free(rw);
    if (prog.tty) fputc('\n', stderr);
    if (rc) {
        /* keep what the finished steps did (not after a non-finite loss: those weights are
         * garbage, the previous checkpoint stays the newest) */
        if (!nonfinite && done_here > 0 && !save(o.ckpt_dir, tr, &st, &o))
            fprintf(stderr, "hllm-train: the %lld finished steps are in the checkpoint; continue "
                    "with --resume\n", (long long)st.step);
        goto done;
    }
    if (save(o.ckpt_dir, tr, &st, &o)) goto done;
    if (g_stop) {
        fprintf(stderr, "hllm-train: stopped by signal %d at step %lld of %lld; continue with "
                "--resume\n", (int)g_stop, (long long)st.step, (long long)st.total_steps);
        status = 130;
        goto done;
    }
    if (hc_ctrain_write_package(tr, o.package, o.out, o.weights_dtype, &eb)) {
        fail("writing the package: %s", eb.msg);
        goto done;
    }
    if (!o.quiet)
        fprintf(stderr, "hllm-train: %lld steps in %.1f s; package %s (recompute cluster "
                "centroids with `hllm cluster`)\n", (long long)done_here, now_s() - t0, o.out);
    status = 0;
done:
    if (prog.metrics || prog.tty) {
        hc_errbuf eb2 = {{0}};
        if (hc_progress_close(&prog, &eb2) && status == 0) {
            fail("%s: %s", o.metrics ? o.metrics : "progress", eb2.msg);
            status = 1;
        }
    }
    hc_data_free(data);
    hc_ctrain_free(tr);
    hc_train_ops_cpu_set_threads(1);
    if (lock_fd >= 0) close(lock_fd);
    json_decref(run);
    return status;
}
