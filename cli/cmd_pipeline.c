/* cmd_pipeline.c: the HLLM-Creator commands over a model package:
 *   hllm embed     history -> cluster (and with --full the vectors u and U)
 *   hllm generate  history + ad -> personalized title (package mode of `hllm generate`)
 *   hllm cluster   users -> k-means centroids
 * JSON lines in (stdin or --users), JSON lines out, one result per input line, in order. */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "commands.h"
#include "common.h"
#include "creator/creator.h"
#include "pipeline_io.h"

int hc_cli_model_kind(const char *dir, const char *cmd) {
    hc_errbuf eb = {{0}};
    int rc = hc_package_probe(dir, &eb);
    if (rc == HC_OK) return 1;
    if (rc == HC_ERR_NOTFOUND) return 0;
    fprintf(stderr, "hllm %s: --model %s\n", cmd, eb.msg[0] ? eb.msg : hc_strerror(rc));
    return -1;
}

void hc_cli_print_load_error(const char *cmd, const char *what, const hc_errbuf *eb, int rc) {
    const char *msg = eb->msg[0] ? eb->msg : hc_strerror(rc);
    fprintf(stderr, "hllm %s: %s: %s\n", cmd, what, msg);
    if (strstr(msg, "outside the model package"))
        fprintf(stderr, "hllm %s: a package that links or points to files elsewhere loads with "
                        "--allow-outside-paths\n", cmd);
}

typedef struct pipe_opts {
    const char *model;
    hc_backend_kind kind;
    hc_dtype wd;
    hc_compute compute;
    long threads, batch, cache, max_line;
    int allow_outside; /* --allow-outside-paths */
} pipe_opts;

static int open_creator(const pipe_opts *o, const char *cmd, int need_creative, hc_backend **be,
                        hc_creator **c) {
    hc_errbuf eb = {{0}};
    *c = NULL;
    *be = NULL;
    int kind = hc_cli_model_kind(o->model, cmd);
    if (kind < 0) return HC_ERR_IO;
    if (kind == 0) {
        fprintf(stderr, "hllm %s: --model %s is not a model package (it has no creator.json; "
                        "see proto/model-package.md)\n", cmd, o->model);
        return HC_ERR_NOTFOUND;
    }
    int rc = hc_cli_backend_create(be, o->kind, (int)o->threads, o->compute);
    if (rc) return rc;
    hc_creator_params p = hc_creator_default_params();
    p.weight_dtype = o->wd;
    p.item_cache_entries = (size_t)o->cache;
    p.load_creative = need_creative;
    p.allow_outside_paths = o->allow_outside;
    rc = hc_creator_load(c, *be, o->model, &p, &eb);
    if (rc) {
        char what[4200];
        snprintf(what, sizeof what, "cannot load model package '%s'", o->model);
        hc_cli_print_load_error(cmd, what, &eb, rc);
        hc_backend_free(*be);
        *be = NULL;
    }
    return rc;
}

/* Reads up to `batch` lines; returns how many were read (0 at end of input). A line over
 * max_line bytes becomes an error line. On a read error *read_err is set (errno kept) and the
 * lines read before it are returned for processing; the caller then stops. */
static int read_batch(FILE *in, hc_cli_line *lines, int batch, int need_ad, size_t max_line,
                      char **buf, size_t *cap, int *read_err) {
    int n = 0;
    while (n < batch) {
        long len = hc_cli_read_line(in, buf, cap, max_line);
        if (len == HC_CLI_LINE_EOF) break;
        if (len == HC_CLI_LINE_ERROR) {
            *read_err = errno ? errno : EIO;
            break;
        }
        if (len == HC_CLI_LINE_TOO_LONG) {
            memset(&lines[n], 0, sizeof lines[n]);
            snprintf(lines[n].error, sizeof lines[n].error,
                     "line longer than --max-line-bytes %zu bytes (skipped)", max_line);
            n++;
            continue;
        }
        hc_cli_parse_line(&lines[n++], *buf, (size_t)len, need_ad);
    }
    return n;
}

/* Reports a read error of the input named `what`; returns 1 (the exit code). */
static int report_read_error(const char *cmd, const char *what, int err) {
    fprintf(stderr, "hllm %s: reading %s: %s\n", cmd, what, strerror(err));
    return 1;
}

static const char *COMMON_HELP =
    "  --model PKG        model package directory (creator.json; see proto/model-package.md)\n"
    "  --batch N          input lines processed together (default 16)\n"
    "  --item-cache N     item-embedding cache entries (default 65536; 0 disables)\n"
    "  --max-line-bytes N longest input line accepted (default 4194304); a longer line gets\n"
    "                     an error and the others go on\n"
    "  --threads N        CPU threads (default: all cores)\n"
    "  --backend B        auto | cpu | cuda (default auto)\n"
    "  --weights W        in-memory weight dtype: auto (as stored) | f32 | bf16 | f16\n"
    HC_CLI_COMPUTE_HELP
    "  --allow-outside-paths\n"
    "                     let creator.json name (or symlink to) files outside the package\n"
    "                     directory (default: refused)\n"
    "  -h, --help         this help\n";

enum { OPT_MODEL = 1000, OPT_BATCH, OPT_CACHE, OPT_THREADS, OPT_BACKEND, OPT_WEIGHTS, OPT_MAXLINE,
       OPT_OUTSIDE, OPT_COMPUTE };
#define COMMON_LONGOPTS                                                                            \
    {"model", required_argument, 0, OPT_MODEL}, {"batch", required_argument, 0, OPT_BATCH},        \
        {"item-cache", required_argument, 0, OPT_CACHE},                                           \
        {"threads", required_argument, 0, OPT_THREADS},                                            \
        {"backend", required_argument, 0, OPT_BACKEND},                                            \
        {"weights", required_argument, 0, OPT_WEIGHTS},                                            \
        {"compute", required_argument, 0, OPT_COMPUTE},                                            \
        {"max-line-bytes", required_argument, 0, OPT_MAXLINE},                                     \
        {"allow-outside-paths", no_argument, 0, OPT_OUTSIDE}, {"help", no_argument, 0, 'h'}

/* Handles a common option; returns 1 if handled, -1 on a bad value, 0 if not common. */
static int common_opt(int c, pipe_opts *o) {
    switch (c) {
    case OPT_MODEL: o->model = optarg; return 1;
    case OPT_BATCH: return hc_cli_parse_int(optarg, "--batch", 1, 4096, &o->batch) ? -1 : 1;
    case OPT_CACHE: return hc_cli_parse_int(optarg, "--item-cache", 0, 1L << 28, &o->cache) ? -1 : 1;
    case OPT_THREADS: return hc_cli_parse_int(optarg, "--threads", 1, 1024, &o->threads) ? -1 : 1;
    case OPT_BACKEND: return hc_cli_parse_backend(optarg, &o->kind) ? -1 : 1;
    case OPT_WEIGHTS: return hc_cli_parse_weight_dtype(optarg, &o->wd) ? -1 : 1;
    case OPT_COMPUTE: return hc_cli_parse_compute(optarg, &o->compute) ? -1 : 1;
    case OPT_MAXLINE:
        return hc_cli_parse_int(optarg, "--max-line-bytes", 2, 1L << 30, &o->max_line) ? -1 : 1;
    case OPT_OUTSIDE: o->allow_outside = 1; return 1;
    default: return 0;
    }
}

static void pipe_opts_init(pipe_opts *o) {
    memset(o, 0, sizeof *o);
    o->kind = HC_BACKEND_AUTO;
    o->wd = HC_DTYPE_AS_STORED;
    o->batch = 16;
    o->cache = 65536;
    o->max_line = HC_CLI_DEFAULT_MAX_LINE;
}

/* ---- embed ---------------------------------------------------------------------------------- */

static void embed_usage(FILE *f) {
    fprintf(f, "usage: hllm embed --model PKG [--full] < users.jsonl\n"
               "\n"
               "Reads one JSON object per line, {\"history\": [\"title\", ...]} (oldest first), and\n"
               "writes one line per input line: {\"cluster\": k, \"cluster_score\": s} (null when\n"
               "the package has no centroids); with --full also \"user\" (u) and \"projected\" (U).\n"
               "A bad line gets {\"error\": \"...\"} and the others go on; the exit code is then 1.\n\n"
               "  --full             also print the user vector u and the projected vector U\n%s",
            COMMON_HELP);
}

/* Embeds m users and assigns their clusters (when the package has centroids). */
static int embed_some(hc_creator *cr, const hc_history *hist, int m, float *u, float *U,
                      int32_t *cl, float *sc, hc_errbuf *eb) {
    int rc = hc_creator_embed_users(cr, hist, m, u, U, eb);
    if (!rc && cr->clusters) rc = hc_creator_assign(cr, U, m, cl, sc, eb);
    return rc;
}

int hc_cmd_embed(int argc, char **argv) {
    static const struct option opts[] = {COMMON_LONGOPTS, {"full", no_argument, 0, 'f'}, {0, 0, 0, 0}};
    pipe_opts o;
    pipe_opts_init(&o);
    int full = 0, c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        int r = common_opt(c, &o);
        if (r < 0) return 2;
        if (r) continue;
        if (c == 'f') full = 1;
        else if (c == 'h') {
            embed_usage(stdout);
            return 0;
        } else {
            embed_usage(stderr);
            return 2;
        }
    }
    if (!o.model || optind < argc) {
        fprintf(stderr, "hllm embed: --model PKG is required; input comes from stdin (see --help)\n");
        return 2;
    }
    hc_backend *be;
    hc_creator *cr;
    if (open_creator(&o, "embed", 0, &be, &cr)) return 1;
    int rc = 0, B = (int)o.batch;
    hc_cli_line *lines = calloc((size_t)B, sizeof *lines);
    hc_history *hist = malloc(sizeof *hist * (size_t)B);
    int *which = malloc(sizeof(int) * (size_t)B);
    int32_t *cl = malloc(sizeof(int32_t) * (size_t)B);
    float *sc = malloc(sizeof(float) * (size_t)B);
    float *u = malloc(sizeof(float) * (size_t)B * (size_t)cr->d_user);
    float *U = malloc(sizeof(float) * (size_t)B * (size_t)cr->d_creative);
    char *buf = NULL;
    size_t cap = 0;
    if (!lines || !hist || !which || !cl || !sc || !u || !U) {
        fprintf(stderr, "hllm embed: out of memory\n");
        rc = 1;
        goto done;
    }
    int n, read_err = 0;
    while (!read_err &&
           (n = read_batch(stdin, lines, B, 0, (size_t)o.max_line, &buf, &cap, &read_err)) > 0) {
        int m = 0;
        for (int i = 0; i < n; i++) {
            if (lines[i].error[0]) continue;
            hist[m] = (hc_history){lines[i].titles, lines[i].lens, lines[i].n_titles};
            which[m++] = i;
        }
        hc_errbuf eb = {{0}};
        int erc = m ? embed_some(cr, hist, m, u, U, cl, sc, &eb) : 0;
        if (erc) {
            /* Something in the batch failed. Run each line alone so that only the line at fault
             * gets the error (the item cache keeps the others cheap). */
            for (int k = 0; k < m; k++) {
                hc_errbuf e1 = {{0}};
                int r1 = embed_some(cr, &hist[k], 1, u + (size_t)k * cr->d_user,
                                    U + (size_t)k * cr->d_creative, cl + k, sc + k, &e1);
                if (r1)
                    snprintf(lines[which[k]].error, sizeof lines[0].error, "%s",
                             e1.msg[0] ? e1.msg : hc_strerror(r1));
            }
        }
        for (int i = 0, k = 0; i < n; i++) {
            int mine = k < m && which[k] == i;
            if (lines[i].error[0]) {
                hc_cli_print_error(stdout, lines[i].error);
                rc = 1;
            } else {
                json_t *obj = json_object();
                json_object_set_new(obj, "cluster", cr->clusters ? json_integer(cl[k]) : json_null());
                json_object_set_new(obj, "cluster_score",
                                    cr->clusters ? json_real((double)sc[k]) : json_null());
                if (full) {
                    json_object_set_new(obj, "user",
                                        hc_cli_float_array(u + (size_t)k * cr->d_user, cr->d_user));
                    json_object_set_new(obj, "projected",
                                        hc_cli_float_array(U + (size_t)k * cr->d_creative,
                                                           cr->d_creative));
                }
                hc_cli_print_json(stdout, obj);
            }
            k += mine;
            hc_cli_line_clear(&lines[i]);
        }
        if (hc_cli_flush_output("embed")) {
            rc = 1;
            goto done;
        }
    }
    if (read_err) rc = report_read_error("embed", "stdin", read_err);
done:
    free(buf);
    free(lines);
    free(hist);
    free(which);
    free(cl);
    free(sc);
    free(u);
    free(U);
    hc_creator_free(cr);
    hc_backend_free(be);
    return rc;
}

/* ---- generate (package mode) ------------------------------------------------------------------ */

static void gen_usage(FILE *f) {
    fprintf(f, "usage: hllm generate --model PKG [--per-user] [--greedy | --temperature T --top-k K\n"
               "                     --top-p P --seed S] [--max-new N] < requests.jsonl\n"
               "\n"
               "Package mode of hllm generate (PKG holds creator.json). Reads one JSON object per\n"
               "line, {\"history\": [\"title\", ...], \"ad\": {\"title\": \"...\", \"description\": \"...\"}},\n"
               "and writes {\"title\": \"...\", \"ids\": [...], \"cluster\": k, \"finish\": \"stop|length\"}\n"
               "per line, in order. A bad line gets {\"error\": \"...\"} and the others go on; the\n"
               "exit code is then 1.\n"
               "Sampling defaults come from creator.json; line i (from 0) is sampled with seed S + i.\n\n"
               "  --per-user         inject the user's own projected vector U (default: the centroid\n"
               "                     of the user's cluster, as the reference)\n"
               "  --greedy           argmax decoding\n"
               "  --temperature T    sampling temperature (0 = greedy)\n"
               "  --top-k K          keep the K most likely tokens (0 = off)\n"
               "  --top-p P          nucleus threshold in (0, 1]\n"
               "  --seed S           base seed (default 0)\n"
               "  --max-new N        at most N new tokens (default from creator.json)\n%s",
            COMMON_HELP);
}

int hc_cmd_generate_package(int argc, char **argv) {
    enum { O_PER_USER = 2000, O_GREEDY, O_T, O_K, O_P, O_SEED, O_MAXNEW };
    static const struct option opts[] = {
        COMMON_LONGOPTS,
        {"per-user", no_argument, 0, O_PER_USER},  {"greedy", no_argument, 0, O_GREEDY},
        {"temperature", required_argument, 0, O_T}, {"top-k", required_argument, 0, O_K},
        {"top-p", required_argument, 0, O_P},       {"seed", required_argument, 0, O_SEED},
        {"max-new", required_argument, 0, O_MAXNEW}, {0, 0, 0, 0}};
    pipe_opts o;
    pipe_opts_init(&o);
    int per_user = 0, greedy = 0, c;
    double T = -1, P = -1;
    long K = -1, seed = 0, max_new = -1;
    optind = 1;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        int r = common_opt(c, &o);
        if (r < 0) return 2;
        if (r) continue;
        switch (c) {
        case O_PER_USER: per_user = 1; break;
        case O_GREEDY: greedy = 1; break;
        case O_T: if (hc_cli_parse_float(optarg, "--temperature", 0, 1e6, &T)) return 2; break;
        case O_K: if (hc_cli_parse_int(optarg, "--top-k", 0, 1 << 30, &K)) return 2; break;
        case O_P: if (hc_cli_parse_float(optarg, "--top-p", 1e-9, 1, &P)) return 2; break;
        case O_SEED: if (hc_cli_parse_int(optarg, "--seed", 0, 0x7fffffffL, &seed)) return 2; break;
        case O_MAXNEW: if (hc_cli_parse_int(optarg, "--max-new", 0, 1 << 20, &max_new)) return 2; break;
        case 'h': gen_usage(stdout); return 0;
        default: gen_usage(stderr); return 2;
        }
    }
    if (!o.model || optind < argc) {
        fprintf(stderr, "hllm generate: --model PKG is required; requests come from stdin "
                        "(see --help)\n");
        return 2;
    }
    if (greedy && T > 0) {
        fprintf(stderr, "hllm generate: --greedy and --temperature exclude each other\n");
        return 2;
    }
    hc_backend *be;
    hc_creator *cr;
    if (open_creator(&o, "generate", 1, &be, &cr)) return 1;
    hc_sampler_params sp = cr->pkg.sampling;
    if (T >= 0) {
        sp.temperature = (float)T;
        sp.greedy = T == 0;
    }
    if (greedy) sp.greedy = 1;
    if (K >= 0) sp.top_k = (int)K;
    if (P > 0) sp.top_p = (float)P;
    if (max_new < 0) max_new = cr->pkg.max_new_tokens;
    if (max_new >= cr->creative->cfg.max_position_embeddings) {
        fprintf(stderr, "hllm generate: --max-new %ld leaves no room for the prompt: the creative "
                        "LLM's max_position_embeddings is %d\n", max_new,
                cr->creative->cfg.max_position_embeddings);
        hc_creator_free(cr);
        hc_backend_free(be);
        return 2;
    }
    int rc = 0, B = (int)o.batch;
    long line_no = 0;
    hc_cli_line *lines = calloc((size_t)B, sizeof *lines);
    hc_title_request *reqs = calloc((size_t)B, sizeof *reqs);
    int *which = malloc(sizeof(int) * (size_t)B);
    char *buf = NULL;
    size_t cap = 0;
    if (!lines || !reqs || !which) {
        fprintf(stderr, "hllm generate: out of memory\n");
        rc = 1;
        goto done;
    }
    int n, read_err = 0;
    while (!read_err &&
           (n = read_batch(stdin, lines, B, 1, (size_t)o.max_line, &buf, &cap, &read_err)) > 0) {
        int m = 0;
        for (int i = 0; i < n; i++) {
            long this_line = line_no + i;
            if (lines[i].error[0]) continue;
            hc_title_request *r = &reqs[m];
            memset(r, 0, sizeof *r);
            r->history = (hc_history){lines[i].titles, lines[i].lens, lines[i].n_titles};
            r->ad_title = lines[i].ad_title;
            r->ad_title_len = lines[i].ad_title_len;
            r->ad_desc = lines[i].ad_desc;
            r->ad_desc_len = lines[i].ad_desc_len;
            r->per_user = per_user;
            r->sampling = sp;
            r->sampling.seed = (uint64_t)seed + (uint64_t)this_line;
            r->max_new = (int)max_new;
            which[m++] = i;
        }
        line_no += n;
        hc_errbuf eb = {{0}};
        int grc = m ? hc_creator_generate(cr, reqs, m, NULL, NULL, &eb) : 0;
        if (grc) {
            /* A failure of the whole call: run each request alone so that only the one at fault
             * fails (its tokens do not depend on its batch mates, so the others are unchanged). */
            for (int k = 0; k < m; k++) {
                hc_title_request_clear(&reqs[k]);
                hc_errbuf e1 = {{0}};
                int r1 = hc_creator_generate(cr, &reqs[k], 1, NULL, NULL, &e1);
                if (r1) {
                    reqs[k].status = r1;
                    snprintf(reqs[k].error, sizeof reqs[k].error, "%s",
                             e1.msg[0] ? e1.msg : hc_strerror(r1));
                }
            }
        }
        for (int k = 0; k < m; k++)
            if (reqs[k].status)
                snprintf(lines[which[k]].error, sizeof lines[0].error, "%s", reqs[k].error);
        for (int i = 0, k = 0; i < n; i++) {
            if (k < m && which[k] == i) {
                hc_title_request *r = &reqs[k++];
                if (!lines[i].error[0]) {
                    json_t *ids = json_array();
                    for (int j = 0; j < r->n_ids; j++) json_array_append_new(ids, json_integer(r->ids[j]));
                    json_t *obj = json_object();
                    json_object_set_new(obj, "title", json_stringn(r->text ? r->text : "", r->text_len));
                    json_object_set_new(obj, "ids", ids);
                    json_object_set_new(obj, "cluster", r->cluster >= 0 ? json_integer(r->cluster) : json_null());
                    json_object_set_new(obj, "finish", json_string(r->finish == HC_FINISH_STOP ? "stop" : "length"));
                    hc_cli_print_json(stdout, obj);
                }
                hc_title_request_clear(r);
            }
            if (lines[i].error[0]) {
                hc_cli_print_error(stdout, lines[i].error);
                rc = 1;
            }
            hc_cli_line_clear(&lines[i]);
        }
        if (hc_cli_flush_output("generate")) {
            rc = 1;
            goto done;
        }
    }
    if (read_err) rc = report_read_error("generate", "stdin", read_err);
done:
    free(buf);
    free(lines);
    free(reqs);
    free(which);
    hc_creator_free(cr);
    hc_backend_free(be);
    return rc;
}

/* ---- cluster ---------------------------------------------------------------------------------- */

static void cluster_usage(FILE *f) {
    fprintf(f, "usage: hllm cluster --model PKG --users users.jsonl --k K --out FILE [options]\n"
               "\n"
               "Embeds every user of users.jsonl ({\"history\": [...]} per line; bad lines are\n"
               "reported on stderr and skipped), runs FAISS k-means on the projected vectors U and\n"
               "writes the centroids to FILE (safetensors, key \"centroids\", F32 (K, H_c)): the\n"
               "file creator.json's cluster.centroids points to. The reference uses K 256,\n"
               "40 iterations, 2 redos.\n\n"
               "  --users FILE       users, JSON lines ('-' = stdin)\n"
               "  --k K              number of clusters\n"
               "  --out FILE         where to write the centroids\n"
               "  --niter N          k-means iterations (default 40)\n"
               "  --nredo N          independent runs, best kept (default 2)\n"
               "  --seed S           k-means seed (default 1234)\n"
               "  --max-points-per-centroid N\n"
               "                     FAISS trains on a random subsample of K*N points when there\n"
               "                     are more (default 256, FAISS's own; 0 = use all points)\n%s",
            COMMON_HELP);
}

int hc_cmd_cluster(int argc, char **argv) {
    enum { O_USERS = 3000, O_K, O_OUT, O_NITER, O_NREDO, O_SEED, O_MPPC };
    static const struct option opts[] = {
        COMMON_LONGOPTS,
        {"users", required_argument, 0, O_USERS}, {"k", required_argument, 0, O_K},
        {"out", required_argument, 0, O_OUT},     {"niter", required_argument, 0, O_NITER},
        {"nredo", required_argument, 0, O_NREDO}, {"seed", required_argument, 0, O_SEED},
        {"max-points-per-centroid", required_argument, 0, O_MPPC}, {0, 0, 0, 0}};
    pipe_opts o;
    pipe_opts_init(&o);
    const char *users = NULL, *outp = NULL;
    long k = 0, niter = 40, nredo = 2, seed = 1234, mppc = 256;
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        int r = common_opt(c, &o);
        if (r < 0) return 2;
        if (r) continue;
        switch (c) {
        case O_USERS: users = optarg; break;
        case O_K: if (hc_cli_parse_int(optarg, "--k", 1, 1 << 20, &k)) return 2; break;
        case O_OUT: outp = optarg; break;
        case O_NITER: if (hc_cli_parse_int(optarg, "--niter", 1, 100000, &niter)) return 2; break;
        case O_NREDO: if (hc_cli_parse_int(optarg, "--nredo", 1, 1000, &nredo)) return 2; break;
        case O_SEED: if (hc_cli_parse_int(optarg, "--seed", 0, 0x7fffffffL, &seed)) return 2; break;
        case O_MPPC: if (hc_cli_parse_int(optarg, "--max-points-per-centroid", 0, 1 << 30, &mppc)) return 2; break;
        case 'h': cluster_usage(stdout); return 0;
        default: cluster_usage(stderr); return 2;
        }
    }
    if (!o.model || !users || !outp || k < 1 || optind < argc) {
        fprintf(stderr, "hllm cluster: --model, --users, --k and --out are required (see --help)\n");
        return 2;
    }
    FILE *in = strcmp(users, "-") ? fopen(users, "r") : stdin;
    if (!in) {
        fprintf(stderr, "hllm cluster: cannot open %s: %s\n", users, strerror(errno));
        return 1;
    }
    struct stat ust, ost;
    if (fstat(fileno(in), &ust) == 0) {
        if (S_ISDIR(ust.st_mode)) {
            fprintf(stderr, "hllm cluster: --users %s is a directory, not a JSON-lines file\n",
                    users);
            if (in != stdin) fclose(in);
            return 1;
        }
        if (stat(outp, &ost) == 0 && ost.st_dev == ust.st_dev && ost.st_ino == ust.st_ino) {
            fprintf(stderr, "hllm cluster: --out %s is the --users file; refusing to overwrite "
                            "the input\n", outp);
            if (in != stdin) fclose(in);
            return 1;
        }
    }
    hc_backend *be;
    hc_creator *cr;
    if (open_creator(&o, "cluster", 0, &be, &cr)) {
        if (in != stdin) fclose(in);
        return 1;
    }
    int rc = 1, B = (int)o.batch, H = cr->d_creative;
    size_t n_users = 0, cap_users = 1024, bad = 0, line_no = 0;
    float *U = malloc(sizeof(float) * cap_users * (size_t)H), *cent = NULL;
    hc_cli_line *lines = calloc((size_t)B, sizeof *lines);
    hc_history *hist = malloc(sizeof *hist * (size_t)B);
    int *which = malloc(sizeof(int) * (size_t)B);
    char *buf = NULL;
    size_t cap = 0;
    if (!U || !lines || !hist || !which) goto oom;
    int n, read_err = 0;
    while (!read_err &&
           (n = read_batch(in, lines, B, 0, (size_t)o.max_line, &buf, &cap, &read_err)) > 0) {
        int m = 0;
        for (int i = 0; i < n; i++) {
            if (lines[i].error[0]) {
                fprintf(stderr, "hllm cluster: %s line %zu: %s (skipped)\n", users,
                        line_no + (size_t)i + 1, lines[i].error);
                bad++;
                continue;
            }
            hist[m] = (hc_history){lines[i].titles, lines[i].lens, lines[i].n_titles};
            which[m++] = i;
        }
        if (n_users + (size_t)m > cap_users) {
            cap_users = (n_users + (size_t)m) * 2;
            float *t = realloc(U, sizeof(float) * cap_users * (size_t)H);
            if (!t) goto oom;
            U = t;
        }
        hc_errbuf eb = {{0}};
        if (m && hc_creator_embed_users(cr, hist, m, NULL, U + n_users * (size_t)H, &eb)) {
            /* one line at a time, so that only the failing ones are skipped */
            for (int j = 0; j < m; j++) {
                hc_errbuf e1 = {{0}};
                int r1 = hc_creator_embed_users(cr, &hist[j], 1, NULL, U + n_users * (size_t)H, &e1);
                if (r1) {
                    fprintf(stderr, "hllm cluster: %s line %zu: %s (skipped)\n", users,
                            line_no + (size_t)which[j] + 1, e1.msg[0] ? e1.msg : hc_strerror(r1));
                    bad++;
                } else {
                    n_users++;
                }
            }
        } else {
            n_users += (size_t)m;
        }
        line_no += (size_t)n;
        for (int i = 0; i < n; i++) hc_cli_line_clear(&lines[i]);
    }
    if (read_err) {
        report_read_error("cluster", users, read_err);
        goto done;
    }
    if (n_users < (size_t)k) {
        fprintf(stderr, "hllm cluster: %zu valid users, fewer than --k %ld\n", n_users, k);
        goto done;
    }
    cent = malloc(sizeof(float) * (size_t)k * (size_t)H);
    if (!cent) goto oom;
    hc_kmeans_params kp;
    hc_kmeans_params_init(&kp);
    kp.niter = (int)niter;
    kp.nredo = (int)nredo;
    kp.seed = (int)seed;
    kp.max_points_per_centroid = (int)mppc;
    kp.n_threads = be->n_threads;
    double obj = 0;
    hc_errbuf eb = {{0}};
    if (hc_kmeans(cent, U, (int64_t)n_users, H, (int)k, &kp, &obj, &eb) ||
        hc_centroids_save(outp, cent, (int)k, H, &eb)) {
        fprintf(stderr, "hllm cluster: %s\n", eb.msg);
        goto done;
    }
    hc_cli_print_json(stdout, json_pack("{s:I, s:I, s:I, s:i, s:f, s:s}", "users",
                                        (json_int_t)n_users, "skipped_lines", (json_int_t)bad, "k",
                                        (json_int_t)k, "dim", H, "objective", obj, "out", outp));
    if (n_users > (size_t)k * (size_t)mppc && mppc > 0)
        fprintf(stderr, "hllm cluster: note: FAISS trained on a random subsample of %ld of the %zu "
                        "users (--max-points-per-centroid 0 uses all)\n", k * mppc, n_users);
    rc = 0;
    goto done;
oom:
    fprintf(stderr, "hllm cluster: out of memory\n");
done:
    if (lines)
        for (int i = 0; i < B; i++) hc_cli_line_clear(&lines[i]);
    if (in != stdin) fclose(in);
    free(buf);
    free(U);
    free(cent);
    free(lines);
    free(hist);
    free(which);
    hc_creator_free(cr);
    hc_backend_free(be);
    return rc;
}
