/* cmd_titles.c: `hllm titles`: the pre-generated title table of a model package
 * (proto/title-table.md): the cluster-mode title of every (cluster, ad) pair, generated offline,
 * which hllm-creatord loads and answers from without touching its engine thread.
 *
 * Each pair is one request of the creative LLM's continuous-batching scheduler, built exactly as
 * the pipeline scheduler's hand-over builds a cluster-mode request once its cluster is known
 * (engine/creator/creator_sched.c): prompt1 + slot + prompt2 with the centroid at the slot,
 * prompt1 + slot shared per cluster, the package's end-of-sequence ids, and the sampling seed
 * hc_title_seed(seed, cluster, ad_hash) (what hc_creq.seed_by_cluster does). hc_csched has no
 * entry point for a request whose cluster is given, so the pairs go to the creative scheduler
 * that hc_csched_create made with the daemon's parameters (hc_csched_gen).
 *
 * Pruning (MODEL_SPEC §7): when the package has the match head (engine/creator/match_head.h)
 * every pair is scored, p = sigmoid(match logit) of (centroid, item vector of the ad title), and
 * the score written in its entry; with --prune-threshold X a pair with p < X is not generated:
 * its entry is the ad's original title with "pruned": true. */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <libgen.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "commands.h"
#include "common.h"
#include "creator/creator.h"
#include "creator/creator_sched.h"
#include "creator/match_head.h"
#include "creator/title_key.h"
#include "pipeline_io.h"

#define MAX_REPORTED 20 /* bad input lines listed before "... and N more" */
#define ADS_PER_CHUNK 64 /* ads generated (x clusters) before their entries are written */

static void titles_usage(FILE *f) {
    fprintf(f,
        "usage: hllm titles --model PKG --ads ADS.jsonl --out TABLE.jsonl [--greedy |\n"
        "                   --temperature T --top-k K --top-p P] [--seed S] [--max-new N]\n"
        "                   [--prune-threshold X]\n"
        "\n"
        "Generates the cluster-mode title of every (cluster, ad) pair of the package and writes\n"
        "the title table hllm-creatord loads (--title-table; proto/title-table.md): a header line\n"
        "with the package digest and the generation settings, then one line per pair in (ad,\n"
        "cluster) order. Each title is what the daemon generates for a user of that cluster and\n"
        "that ad with the same settings: sampled with the seed derived from (S, cluster, ad).\n"
        "ADS.jsonl holds one ad per line: {\"title\": \"...\", \"description\": \"...\" | null,\n"
        "\"id\": \"...\" | N} (description and id optional). Any bad line (reported with its line\n"
        "number) fails the command before the model loads; no table is written. An ad whose text\n"
        "repeats an earlier line's is skipped. The table is written to a temporary file in the\n"
        "directory of TABLE.jsonl, flushed to disk and renamed over it, so readers never see a\n"
        "partial table.\n\n"
        "  --model PKG        model package directory (creator.json with cluster centroids)\n"
        "  --ads FILE         the ads, JSON lines ('-' = stdin)\n"
        "  --out FILE         the table to write\n"
        "  --greedy           argmax decoding\n"
        "  --temperature T    sampling temperature (0 = greedy); default from creator.json\n"
        "  --top-k K          keep the K most likely tokens (0 = off)\n"
        "  --top-p P          nucleus threshold in (0, 1]\n"
        "  --seed S           base seed (default from creator.json, 0 there by default: the\n"
        "                     daemon's)\n"
        "  --max-new N        at most N new tokens (default from creator.json); also\n"
        "                     --max-new-tokens N\n"
        "  --prune-threshold X  skip generating the pairs whose match probability (the\n"
        "                     package's match head: sigmoid of cls_tower([user_tower(centroid),\n"
        "                     item_tower(e_ad)])) is below X in [0, 1]: their entries are the\n"
        "                     original title with \"pruned\": true. Needs the match head. With\n"
        "                     the head, every entry has its \"score\" (also without this option)\n"
        "  --max-line-bytes N longest ads line accepted (default 4194304)\n"
        "  --threads N        CPU threads (default: all cores)\n"
        "  --backend B        auto | cpu | cuda (default auto)\n"
        "  --weights W        in-memory weight dtype: auto (as stored) | f32 | bf16 | f16\n"
        HC_CLI_COMPUTE_HELP
        "  --allow-outside-paths\n"
        "                     let creator.json name files outside the package directory\n"
        "  -h, --help         this help\n");
}

typedef struct ad_in {
    json_t *root;       /* owns the strings below */
    const char *title, *desc; /* desc NULL: missing or null (the prompt renders "None") */
    size_t title_len, desc_len;
    json_t *id;         /* borrowed from root; NULL when the line has none */
    uint64_t hash;
    long line;
    int32_t *prompt;    /* prompt1 + slot + prompt2 */
    int n_prompt, slot;
} ad_in;

typedef struct pair_out {
    int32_t *ids;
    int n_ids, cap_ids;
    hc_finish finish;
    float score;        /* match probability; NAN without the match head */
    int pruned;         /* not generated: the entry is the original title */
    int failed;
    char msg[512];
} pair_out;

typedef struct gen_ctx {
    pair_out *out;  /* indexed by request id - 1 - base */
    uint64_t base;
    int done, failed;
} gen_ctx;

/* Validates one ads line into a. Returns 0, or -1 with the reason in err. */
static int parse_ad(const char *text, size_t len, ad_in *a, char *err, size_t errn) {
    json_error_t je;
    memset(a, 0, sizeof *a);
    a->root = json_loadb(text, len, JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL, &je);
    if (!a->root) {
        snprintf(err, errn, "invalid JSON: %s (column %d)", je.text, je.column);
        return -1;
    }
    if (!json_is_object(a->root)) {
        snprintf(err, errn, "expected a JSON object {\"title\": ..., \"description\": ...}");
        return -1;
    }
    const char *k;
    json_t *v;
    json_object_foreach(a->root, k, v) {
        if (strcmp(k, "title") && strcmp(k, "description") && strcmp(k, "id")) {
            snprintf(err, errn, "unknown field \"%s\" (an ad has title, description, id)", k);
            return -1;
        }
    }
    json_t *t = json_object_get(a->root, "title"), *d = json_object_get(a->root, "description");
    json_t *id = json_object_get(a->root, "id");
    if (!t || !json_is_string(t)) {
        snprintf(err, errn, "\"title\" must be a string%s", t ? "" : " (missing)");
        return -1;
    }
    if (d && !json_is_null(d) && !json_is_string(d)) {
        snprintf(err, errn, "\"description\" must be a string or null");
        return -1;
    }
    if (id && !json_is_string(id) && !json_is_integer(id)) {
        snprintf(err, errn, "\"id\" must be a string or an integer");
        return -1;
    }
    a->title = json_string_value(t);
    a->title_len = json_string_length(t);
    if (d && json_is_string(d)) {
        a->desc = json_string_value(d);
        a->desc_len = json_string_length(d);
        if (!a->desc_len) {
            /* hc_ad_hash gives "" the key of a missing description, whose prompt renders "None":
             * a table cannot tell them apart (and the daemon does not look "" up in tables) */
            snprintf(err, errn, "\"description\" is empty: omit it or give null for an ad without "
                     "one (an empty and a missing description share the ad's key, not its prompt)");
            return -1;
        }
    }
    a->id = id;
    a->hash = hc_ad_hash(a->title, a->title_len, a->desc, a->desc_len);
    return 0;
}

static void ads_free(ad_in *ads, size_t n) {
    for (size_t i = 0; i < n; i++) {
        json_decref(ads[i].root);
        free(ads[i].prompt);
    }
    free(ads);
}

/* Reads and validates every line of the ads file. Returns the ads (*n of them, duplicates
 * dropped) or NULL with the errors printed (*n_bad > 0) or a read error. */
static ad_in *read_ads(FILE *in, const char *path, size_t max_line, size_t *n, size_t *n_dup,
                       int *failed) {
    size_t cap = 256, cnt = 0, bad = 0;
    ad_in *ads = malloc(sizeof *ads * cap);
    char *buf = NULL;
    size_t bcap = 0;
    long line = 0;
    *n_dup = 0;
    *failed = 0;
    if (!ads) goto oom;
    for (;;) {
        long len = hc_cli_read_line(in, &buf, &bcap, max_line);
        if (len == HC_CLI_LINE_EOF) break;
        line++;
        if (len == HC_CLI_LINE_ERROR) {
            fprintf(stderr, "hllm titles: reading %s: %s\n", path, strerror(errno ? errno : EIO));
            *failed = 1;
            break;
        }
        char err[600] = "";
        ad_in a;
        memset(&a, 0, sizeof a);
        if (len == HC_CLI_LINE_TOO_LONG)
            snprintf(err, sizeof err, "line longer than --max-line-bytes %zu bytes", max_line);
        else if (len == 0)
            snprintf(err, sizeof err, "empty line (expected a JSON object)");
        else
            parse_ad(buf, (size_t)len, &a, err, sizeof err);
        if (err[0]) {
            if (bad < MAX_REPORTED) fprintf(stderr, "hllm titles: %s:%ld: %s\n", path, line, err);
            bad++;
            json_decref(a.root);
            continue;
        }
        a.line = line;
        /* the same text again: the same titles (the key is the text, not the id) */
        size_t j = 0;
        for (; j < cnt && ads[j].hash != a.hash; j++) {
        }
        if (j < cnt) {
            int same = ads[j].title_len == a.title_len &&
                       !memcmp(ads[j].title, a.title, a.title_len) &&
                       (ads[j].desc == NULL) == (a.desc == NULL) &&
                       ads[j].desc_len == a.desc_len &&
                       (!a.desc_len || !memcmp(ads[j].desc, a.desc, a.desc_len));
            if (!same) { /* an XXH3-64 collision: one table cannot hold both */
                if (bad < MAX_REPORTED)
                    fprintf(stderr, "hllm titles: %s:%ld: the ad's key (ad_hash %016llx) is that "
                            "of line %ld, whose text differs\n", path, line,
                            (unsigned long long)a.hash, ads[j].line);
                bad++;
            } else {
                (*n_dup)++;
            }
            json_decref(a.root);
            continue;
        }
        if (cnt == cap) {
            ad_in *t = realloc(ads, sizeof *ads * cap * 2);
            if (!t) {
                json_decref(a.root);
                goto oom;
            }
            ads = t;
            cap *= 2;
        }
        ads[cnt++] = a;
    }
    free(buf);
    if (bad > MAX_REPORTED)
        fprintf(stderr, "hllm titles: %s: ... and %zu more bad lines\n", path, bad - MAX_REPORTED);
    if (bad) {
        fprintf(stderr, "hllm titles: %s: %zu bad line%s; no table written\n", path, bad,
                bad == 1 ? "" : "s");
        *failed = 1;
    } else if (!*failed && cnt == 0) {
        fprintf(stderr, "hllm titles: %s has no ads; no table written\n", path);
        *failed = 1;
    }
    if (*failed) {
        ads_free(ads, cnt);
        return NULL;
    }
    *n = cnt;
    return ads;
oom:
    fprintf(stderr, "hllm titles: out of memory reading %s\n", path);
    free(buf);
    if (ads) ads_free(ads, cnt);
    *failed = 1;
    return NULL;
}

static void gen_sink(void *user, const hc_lm_event *ev) {
    gen_ctx *g = user;
    pair_out *p = &g->out[ev->id - 1 - g->base];
    switch (ev->kind) {
    case HC_LM_EV_TOKEN:
        if (p->n_ids == p->cap_ids) {
            int nc = p->cap_ids ? p->cap_ids * 2 : 32;
            int32_t *t = realloc(p->ids, sizeof(int32_t) * (size_t)nc);
            if (!t) {
                p->failed = 1;
                snprintf(p->msg, sizeof p->msg, "out of memory");
                return;
            }
            p->ids = t;
            p->cap_ids = nc;
        }
        p->ids[p->n_ids++] = ev->token;
        break;
    case HC_LM_EV_FINISHED:
        p->finish = ev->finish;
        g->done++;
        break;
    default:
        p->failed = 1;
        snprintf(p->msg, sizeof p->msg, "%s", ev->message ? ev->message : hc_strerror(ev->status));
        g->done++;
        g->failed++;
        break;
    }
}

/* The output: a temporary file next to the target (renamed over it at the end), or the target
 * itself when it is not a regular file (a device, a pipe: nothing to rename). */
typedef struct table_out {
    const char *path;
    char *tmp; /* NULL when writing the target directly */
    FILE *f;
} table_out;

static int out_open(table_out *o, const char *path) {
    memset(o, 0, sizeof *o);
    o->path = path;
    struct stat st;
    if (stat(path, &st) == 0 && S_ISDIR(st.st_mode)) {
        fprintf(stderr, "hllm titles: --out %s is a directory; give the table's file name\n",
                path);
        return -1;
    }
    if (stat(path, &st) == 0 && !S_ISREG(st.st_mode)) {
        o->f = fopen(path, "w");
        if (!o->f) {
            fprintf(stderr, "hllm titles: cannot open --out %s: %s\n", path, strerror(errno));
            return -1;
        }
        return 0;
    }
    char *d = strdup(path), *b = strdup(path);
    if (!d || !b) {
        free(d);
        free(b);
        fprintf(stderr, "hllm titles: out of memory\n");
        return -1;
    }
    size_t n = strlen(path) + 32;
    o->tmp = malloc(n);
    if (o->tmp) snprintf(o->tmp, n, "%s/.%s.tmp.XXXXXX", dirname(d), basename(b));
    free(d);
    free(b);
    if (!o->tmp) {
        fprintf(stderr, "hllm titles: out of memory\n");
        return -1;
    }
    int fd = mkstemp(o->tmp);
    if (fd < 0) {
        fprintf(stderr, "hllm titles: cannot create a temporary file for --out %s (%s): %s\n",
                path, o->tmp, strerror(errno));
        free(o->tmp);
        o->tmp = NULL;
        return -1;
    }
    fchmod(fd, 0644);
    o->f = fdopen(fd, "w");
    if (!o->f) {
        fprintf(stderr, "hllm titles: cannot open %s: %s\n", o->tmp, strerror(errno));
        close(fd);
        unlink(o->tmp);
        free(o->tmp);
        o->tmp = NULL;
        return -1;
    }
    return 0;
}

/* Drops the output (an error happened): the temporary file goes, the target is untouched. */
static void out_abort(table_out *o) {
    if (o->f) fclose(o->f);
    o->f = NULL;
    if (o->tmp) {
        unlink(o->tmp);
        free(o->tmp);
        o->tmp = NULL;
    }
}

static int out_write_error(table_out *o, int err) {
    fprintf(stderr, "hllm titles: cannot write the table %s: %s; no table written\n",
            o->tmp ? o->tmp : o->path, strerror(err ? err : EIO));
    out_abort(o);
    return -1;
}

static int out_line(table_out *o, json_t *obj) {
    char *t = json_dumps(obj, JSON_COMPACT);
    json_decref(obj);
    if (!t) return out_write_error(o, ENOMEM);
    errno = 0;
    int bad = fputs(t, o->f) < 0 || fputc('\n', o->f) == EOF;
    free(t);
    return bad ? out_write_error(o, errno) : 0;
}

/* Flushes, syncs and renames the temporary file over the target (then syncs the directory). */
static int out_commit(table_out *o) {
    errno = 0;
    if (fflush(o->f) || ferror(o->f)) return out_write_error(o, errno);
    if (o->tmp && fsync(fileno(o->f))) return out_write_error(o, errno);
    int e = fclose(o->f) ? errno : 0;
    o->f = NULL;
    if (e) return out_write_error(o, e);
    if (!o->tmp) return 0;
    if (rename(o->tmp, o->path)) {
        fprintf(stderr, "hllm titles: cannot rename %s to --out %s: %s; no table written\n",
                o->tmp, o->path, strerror(errno));
        out_abort(o);
        return -1;
    }
    char *d = strdup(o->path);
    if (d) {
        int dfd = open(dirname(d), O_RDONLY | O_DIRECTORY);
        if (dfd >= 0) {
            fsync(dfd);
            close(dfd);
        }
        free(d);
    }
    free(o->tmp);
    o->tmp = NULL;
    return 0;
}

static json_t *header_json(const hc_creator *c, const hc_sampler_params *sp, int max_new, int k,
                           double prune) {
    char dig[17];
    hc_hash_hex(c->digest, dig);
    json_t *smp = json_pack("{s:f,s:i,s:f,s:I}", "temperature",
                            sp->greedy ? 0.0 : (double)sp->temperature, "top_k", sp->top_k,
                            "top_p", (double)sp->top_p, "seed", (json_int_t)sp->seed);
    return json_pack("{s:i,s:s,s:i,s:o,s:i,s:o}", "hllm_title_table", 1, "package_digest", dig,
                     "clusters", k, "sampling", smp, "max_new_tokens", max_new,
                     "prune_threshold", prune >= 0 ? json_real(prune) : json_null());
}

static json_t *entry_json(const hc_creator *c, const ad_in *a, int32_t cluster, const pair_out *p,
                          hc_errbuf *eb) {
    char *text = NULL;
    size_t len = 0;
    if (!p->pruned &&
        hc_tokenizer_decode(c->creative_tok, p->ids, (size_t)p->n_ids, 1, &text, &len, eb))
        return NULL;
    char h[17];
    hc_hash_hex(a->hash, h);
    json_t *ids = json_array();
    for (int i = 0; i < p->n_ids; i++) json_array_append_new(ids, json_integer(p->ids[i]));
    json_t *o = json_object();
    json_object_set_new(o, "cluster", json_integer(cluster));
    json_object_set_new(o, "ad_hash", json_string(h));
    if (a->id) json_object_set(o, "ad_id", a->id);
    json_object_set_new(o, "title", p->pruned ? json_stringn(a->title, a->title_len)
                                              : json_stringn(text, len));
    json_object_set_new(o, "ids", ids);
    json_object_set_new(o, "finish", json_string(p->pruned ? "pruned" : hc_finish_name(p->finish)));
    json_object_set_new(o, "pruned", json_boolean(p->pruned));
    json_object_set_new(o, "score", isnan(p->score) ? json_null() : json_real(p->score));
    free(text);
    return o;
}

/* The match probability of every (cluster, ad) pair of ads[a0, a1) into out[].score (ad-major),
 * and out[].pruned where it is below prune (prune < 0: none). *n_pruned counts them. */
static int score_chunk(hc_creator *c, const ad_in *ads, size_t a0, size_t a1, int K,
                       double prune, pair_out *out, size_t *n_pruned) {
    const size_t na = a1 - a0, Hi = (size_t)c->d_item;
    const char **titles = malloc(sizeof *titles * na);
    size_t *lens = malloc(sizeof *lens * na);
    float *e = malloc(sizeof(float) * na * Hi), *erep = malloc(sizeof(float) * (size_t)K * Hi);
    float *logit = malloc(sizeof(float) * (size_t)K);
    hc_errbuf eb = {{0}};
    int rc = !titles || !lens || !e || !erep || !logit ? HC_ERR_NOMEM : HC_OK;
    for (size_t i = 0; !rc && i < na; i++) {
        titles[i] = ads[a0 + i].title;
        lens[i] = ads[a0 + i].title_len;
    }
    /* the item vector of the ad title, as a history title's (the item-embedding cache) */
    if (!rc) rc = hc_creator_embed_items(c, titles, lens, (int)na, e, &eb);
    const float *cent = hc_cluster_index_centroids(c->clusters);
    for (size_t i = 0; !rc && i < na; i++) {
        for (int k = 0; k < K; k++) memcpy(erep + (size_t)k * Hi, e + i * Hi, sizeof(float) * Hi);
        if ((rc = hc_creator_match_scores(c, cent, erep, K, logit, &eb))) break;
        for (int k = 0; k < K; k++) {
            pair_out *p = &out[i * (size_t)K + (size_t)k];
            p->score = 1.0f / (1.0f + expf(-logit[k]));
            if (prune >= 0 && p->score < prune) {
                p->pruned = 1;
                p->finish = HC_FINISH_STOP;
                (*n_pruned)++;
            }
        }
    }
    if (rc)
        fprintf(stderr, "hllm titles: scoring (cluster, ad) pairs with the match head: %s\n",
                eb.msg[0] ? eb.msg : hc_strerror(rc));
    free(titles);
    free(lens);
    free(e);
    free(erep);
    free(logit);
    return rc ? -1 : 0;
}

/* Generates ads[a0, a1) x every cluster and writes their entries in (ad, cluster) order. */
static int run_chunk(hc_creator *c, hc_lm_sched *gen, ad_in *ads, size_t a0, size_t a1, int K,
                     const hc_sampler_params *sp, int max_new, double prune, uint64_t *next_id,
                     table_out *o, uint64_t *tokens, size_t *pruned_total) {
    const size_t n = (a1 - a0) * (size_t)K;
    pair_out *out = calloc(n, sizeof *out);
    if (!out) {
        fprintf(stderr, "hllm titles: out of memory\n");
        return -1;
    }
    for (size_t i = 0; i < n; i++) out[i].score = NAN;
    size_t n_pruned = 0;
    if (hc_creator_has_match_head(c) && score_chunk(c, ads, a0, a1, K, prune, out, &n_pruned)) {
        free(out);
        return -1;
    }
    *pruned_total += n_pruned;
    const float *cent = hc_cluster_index_centroids(c->clusters);
    gen_ctx g = {out, *next_id, (int)n_pruned, 0};
    size_t submitted = 0;
    int rc = 0;
    hc_errbuf eb = {{0}};
    while (g.done < (int)n && !rc) {
        while (submitted < n) {
            if (out[submitted].pruned) {
                submitted++;
                continue;
            }
            const ad_in *a = &ads[a0 + submitted / (size_t)K];
            const int32_t k = (int32_t)(submitted % (size_t)K);
            hc_lm_req lr = {.id = *next_id + 1 + submitted, .prompt = a->prompt,
                            .n_prompt = a->n_prompt, .n_inject = 1, .inject_idx = &a->slot,
                            .inject = cent + (size_t)k * (size_t)c->d_creative,
                            .prefix_key = 2 + (uint64_t)k, .prefix_len = c->n_prompt1 + 1,
                            .sampling = *sp, .max_new = max_new, .stop = c->eos,
                            .n_stop = c->n_eos};
            lr.sampling.seed = hc_title_seed(sp->seed, k, a->hash);
            int src = hc_lm_sched_submit(gen, &lr, &eb);
            if (src == HC_ERR_AGAIN) break;
            if (src) {
                fprintf(stderr, "hllm titles: %ld: cluster %d: %s\n", a->line, k,
                        eb.msg[0] ? eb.msg : hc_strerror(src));
                rc = -1;
                break;
            }
            submitted++;
        }
        if (rc) break;
        if (hc_lm_sched_step(gen, gen_sink, &g, &eb)) {
            fprintf(stderr, "hllm titles: generation failed: %s\n",
                    eb.msg[0] ? eb.msg : "engine step error");
            rc = -1;
        }
    }
    for (size_t i = 0; !rc && i < n; i++) {
        const ad_in *a = &ads[a0 + i / (size_t)K];
        if (out[i].failed) {
            fprintf(stderr, "hllm titles: line %ld, cluster %d: generation failed: %s\n", a->line,
                    (int)(i % (size_t)K), out[i].msg);
            rc = -1;
            break;
        }
        *tokens += (uint64_t)out[i].n_ids;
        json_t *e = entry_json(c, a, (int32_t)(i % (size_t)K), &out[i], &eb);
        if (!e) {
            fprintf(stderr, "hllm titles: decoding a title: %s\n", eb.msg);
            rc = -1;
        } else if (out_line(o, e)) {
            rc = -2; /* reported; the output is gone already */
        }
    }
    for (size_t i = 0; i < n; i++) free(out[i].ids);
    free(out);
    *next_id += n;
    return rc ? -1 : 0;
}

int hc_cmd_titles(int argc, char **argv) {
    enum { O_MODEL = 1000, O_ADS, O_OUT, O_GREEDY, O_T, O_K, O_P, O_SEED, O_MAXNEW, O_MAXLINE,
           O_THREADS, O_BACKEND, O_WEIGHTS, O_OUTSIDE, O_PRUNE, O_COMPUTE };
    static const struct option opts[] = {
        {"model", required_argument, 0, O_MODEL}, {"ads", required_argument, 0, O_ADS},
        {"out", required_argument, 0, O_OUT}, {"greedy", no_argument, 0, O_GREEDY},
        {"temperature", required_argument, 0, O_T}, {"top-k", required_argument, 0, O_K},
        {"top-p", required_argument, 0, O_P}, {"seed", required_argument, 0, O_SEED},
        {"max-new", required_argument, 0, O_MAXNEW},
        {"max-new-tokens", required_argument, 0, O_MAXNEW},
        {"max-line-bytes", required_argument, 0, O_MAXLINE},
        {"threads", required_argument, 0, O_THREADS}, {"backend", required_argument, 0, O_BACKEND},
        {"weights", required_argument, 0, O_WEIGHTS},
        {"compute", required_argument, 0, O_COMPUTE},
        {"allow-outside-paths", no_argument, 0, O_OUTSIDE},
        {"prune-threshold", required_argument, 0, O_PRUNE}, {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0}};
    const char *model = NULL, *ads_path = NULL, *out_path = NULL;
    int greedy = 0, outside = 0, c;
    double T = -1, P = -1, prune = -1;
    long K = -1, seed = -1, max_new = -1, max_line = HC_CLI_DEFAULT_MAX_LINE, threads = 0;
    hc_backend_kind kind = HC_BACKEND_AUTO;
    hc_dtype wd = HC_DTYPE_AS_STORED;
    hc_compute compute = HC_COMPUTE_F32;
    optind = 1;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case O_MODEL: model = optarg; break;
        case O_ADS: ads_path = optarg; break;
        case O_OUT: out_path = optarg; break;
        case O_GREEDY: greedy = 1; break;
        case O_T: if (hc_cli_parse_float(optarg, "--temperature", 0, 1e6, &T)) return 2; break;
        case O_K: if (hc_cli_parse_int(optarg, "--top-k", 0, 1 << 30, &K)) return 2; break;
        case O_P: if (hc_cli_parse_float(optarg, "--top-p", 1e-9, 1, &P)) return 2; break;
        case O_SEED: if (hc_cli_parse_int(optarg, "--seed", 0, 0x7fffffffL, &seed)) return 2; break;
        case O_MAXNEW:
            if (hc_cli_parse_int(optarg, "--max-new", 0, 1 << 20, &max_new)) return 2;
            break;
        case O_MAXLINE:
            if (hc_cli_parse_int(optarg, "--max-line-bytes", 2, 1L << 30, &max_line)) return 2;
            break;
        case O_THREADS:
            if (hc_cli_parse_int(optarg, "--threads", 1, 1024, &threads)) return 2;
            break;
        case O_BACKEND: if (hc_cli_parse_backend(optarg, &kind)) return 2; break;
        case O_WEIGHTS: if (hc_cli_parse_weight_dtype(optarg, &wd)) return 2; break;
        case O_COMPUTE: if (hc_cli_parse_compute(optarg, &compute)) return 2; break;
        case O_OUTSIDE: outside = 1; break;
        case O_PRUNE:
            if (hc_cli_parse_float(optarg, "--prune-threshold", 0, 1, &prune)) return 2;
            break;
        case 'h': titles_usage(stdout); return 0;
        default: titles_usage(stderr); return 2;
        }
    }
    if (!model || !ads_path || !out_path || optind < argc) {
        fprintf(stderr, "hllm titles: --model, --ads and --out are required (see --help)\n");
        return 2;
    }
    if (greedy && T > 0) {
        fprintf(stderr, "hllm titles: --greedy and --temperature exclude each other\n");
        return 2;
    }
    FILE *in = strcmp(ads_path, "-") ? fopen(ads_path, "r") : stdin;
    if (!in) {
        fprintf(stderr, "hllm titles: cannot open --ads %s: %s\n", ads_path, strerror(errno));
        return 1;
    }
    struct stat ast, ost;
    if (fstat(fileno(in), &ast) == 0) {
        if (S_ISDIR(ast.st_mode)) {
            fprintf(stderr, "hllm titles: --ads %s is a directory, not a JSON-lines file\n",
                    ads_path);
            if (in != stdin) fclose(in);
            return 1;
        }
        if (S_ISREG(ast.st_mode) && stat(out_path, &ost) == 0 && ost.st_dev == ast.st_dev &&
            ost.st_ino == ast.st_ino) {
            fprintf(stderr, "hllm titles: --out %s is the --ads file; refusing to overwrite the "
                            "input\n", out_path);
            if (in != stdin) fclose(in);
            return 1;
        }
    }
    size_t n_ads = 0, n_dup = 0;
    int read_failed = 0;
    ad_in *ads = read_ads(in, ads_path, (size_t)max_line, &n_ads, &n_dup, &read_failed);
    if (in != stdin) fclose(in);
    if (!ads) return 1;

    table_out o;
    if (out_open(&o, out_path)) {
        ads_free(ads, n_ads);
        return 1;
    }
    int rc = 1, kpkg = hc_cli_model_kind(model, "titles");
    hc_backend *be = NULL;
    hc_creator *cr = NULL;
    hc_csched *cs = NULL;
    hc_errbuf eb = {{0}};
    if (kpkg <= 0) {
        if (kpkg == 0)
            fprintf(stderr, "hllm titles: --model %s is not a model package (it has no "
                            "creator.json; see proto/model-package.md)\n", model);
        goto done;
    }
    if (hc_cli_backend_create(&be, kind, (int)threads, compute)) goto done;
    hc_creator_params cp = hc_creator_default_params();
    cp.weight_dtype = wd;
    cp.allow_outside_paths = outside;
    int lrc = hc_creator_load(&cr, be, model, &cp, &eb);
    if (lrc) {
        char what[4200];
        snprintf(what, sizeof what, "cannot load model package '%s'", model);
        hc_cli_print_load_error("titles", what, &eb, lrc);
        goto done;
    }
    if (!cr->clusters) {
        fprintf(stderr, "hllm titles: the model package '%s' has no cluster centroids "
                        "(creator.json cluster.centroids; make them with hllm cluster): a title "
                        "table holds one title per (cluster, ad)\n", model);
        goto done;
    }
    if (prune >= 0 && !hc_creator_has_match_head(cr)) {
        fprintf(stderr, "hllm titles: --prune-threshold needs the match head, and the model "
                        "package '%s' has none (user_tower.weight, item_tower.weight, "
                        "cls_tower.*: proto/model-package.md)\n", model);
        goto done;
    }
    hc_sampler_params sp = cr->pkg.sampling;
    if (T >= 0) {
        sp.temperature = (float)T;
        sp.greedy = T == 0;
    }
    if (greedy) sp.greedy = 1;
    if (K >= 0) sp.top_k = (int)K;
    if (P > 0) sp.top_p = (float)P;
    if (seed >= 0) sp.seed = (uint64_t)seed;
    if (max_new < 0) max_new = cr->pkg.max_new_tokens;
    if (max_new >= cr->creative->cfg.max_position_embeddings) {
        fprintf(stderr, "hllm titles: --max-new %ld leaves no room for the prompt: the creative "
                        "LLM's max_position_embeddings is %d\n", max_new,
                cr->creative->cfg.max_position_embeddings);
        goto done;
    }
    /* every ad's prompt first: an ad too long for the package fails before any generation */
    int bad = 0;
    for (size_t i = 0; i < n_ads; i++) {
        ad_in *a = &ads[i];
        hc_errbuf pe = {{0}};
        int prc = hc_creator_prompt(cr, a->title, a->title_len, a->desc, a->desc_len, &a->prompt,
                                    &a->n_prompt, &a->slot, &pe);
        if (prc) {
            if (bad < MAX_REPORTED)
                fprintf(stderr, "hllm titles: %s:%ld: %s\n", ads_path, a->line,
                        pe.msg[0] ? pe.msg : hc_strerror(prc));
            bad++;
        }
    }
    if (bad) {
        fprintf(stderr, "hllm titles: %s: %d ad%s the package cannot take; no table written\n",
                ads_path, bad, bad == 1 ? "" : "s");
        goto done;
    }
    if (hc_csched_create(&cs, cr, NULL, &eb)) {
        fprintf(stderr, "hllm titles: cannot create the scheduler: %s\n", eb.msg);
        goto done;
    }
    const int n_k = hc_cluster_index_k(cr->clusters);
    if (out_line(&o, header_json(cr, &sp, (int)max_new, n_k, prune))) goto done;
    double t0 = hc_cli_now();
    uint64_t next_id = 0, tokens = 0;
    size_t n_pruned = 0;
    for (size_t a0 = 0; a0 < n_ads; a0 += ADS_PER_CHUNK) {
        size_t a1 = a0 + ADS_PER_CHUNK < n_ads ? a0 + ADS_PER_CHUNK : n_ads;
        if (run_chunk(cr, hc_csched_gen(cs), ads, a0, a1, n_k, &sp, (int)max_new, prune, &next_id,
                      &o, &tokens, &n_pruned))
            goto done;
    }
    if (out_commit(&o)) goto done;
    hc_cli_print_json(stdout, json_pack("{s:I,s:I,s:i,s:I,s:I,s:I,s:f,s:s}", "ads",
                                        (json_int_t)n_ads, "duplicates", (json_int_t)n_dup,
                                        "clusters", n_k, "entries",
                                        (json_int_t)(n_ads * (size_t)n_k), "pruned",
                                        (json_int_t)n_pruned, "tokens", (json_int_t)tokens,
                                        "seconds", hc_cli_now() - t0, "out", out_path));
    rc = 0;
done:
    out_abort(&o); /* nothing left after a commit */
    hc_csched_free(cs); /* frees any request still in flight after a failure */
    hc_creator_free(cr);
    hc_backend_free(be);
    ads_free(ads, n_ads);
    return rc;
}
