/* cmd_tokenize.c: `hllm tokenize`: JSON lines in, JSON lines out, through a Hugging Face
 * tokenizer.json (engine/tokenizer/tokenizer.h). One output line per input line, always: a line that cannot
 * be processed gets {"error": "..."} and the rest go on. `--bench` times encoding instead. */
#include <errno.h>
#include <getopt.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "commands.h"
#include "common.h"
#include "pipeline_io.h"
#include "tokenizer/tokenizer.h"

static void usage(FILE *f) {
    fprintf(
        f, "usage: hllm tokenize --tokenizer DIR [--decode] [--add-special] [--skip-special]\n"
           "       hllm tokenize --tokenizer DIR --bench ROUNDS\n"
           "\n"
           "Reads JSON lines on stdin and writes one JSON line per input line on stdout.\n"
           "  encode (default):  {\"text\": \"...\"}  ->  {\"text\": \"...\", \"ids\": [...]}\n"
           "  --decode:          {\"ids\": [...]}    ->  {\"ids\": [...], \"text\": \"...\"}\n"
           "Texts may contain any Unicode, including \\u0000. A line that cannot be processed\n"
           "gets {\"error\": \"...\"} on its output line; processing continues and the exit code\n"
           "is then 1.\n"
           "\n"
           "  --tokenizer DIR   directory with tokenizer.json (and tokenizer_config.json)\n"
           "  --decode          decode ids instead of encoding text\n"
           "  --add-special     encode: add BOS/EOS as tokenizer_config.json says (default: none)\n"
           "  --skip-special    decode: drop special tokens\n"
           "  --max-line-bytes N  longest input line accepted (default 4194304); a longer line\n"
           "                    gets an error and the others go on\n"
           "  --bench ROUNDS    read {\"text\"} lines, encode all of them ROUNDS times, print one\n"
           "                    JSON line of timings (load_ms, median_us per pass over all lines\n"
           "                    with a reused context, median_us_cold with a fresh one per pass)\n"
           "  -h, --help        this help\n"
           "\n"
           "Exit codes: 0 ok, 1 runtime failure (tokenizer load, a bad line), 2 usage.\n");
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void print_json(json_t *o) {
    char *s = json_dumps(o, JSON_COMPACT);
    if (s) {
        fputs(s, stdout);
        fputc('\n', stdout);
        free(s);
    } else {
        fputs("{\"error\":\"cannot serialize output\"}\n", stdout);
    }
}

static void print_error(const char *msg) {
    json_t *o = json_object();
    json_object_set_new(o, "error", json_string(msg));
    print_json(o);
    json_decref(o);
}

static int do_encode_line(const hc_tokenizer *tok, hc_tok_ctx *ctx, json_t *in, int add_special) {
    json_t *text = json_object_get(in, "text");
    if (!json_is_string(text)) {
        print_error("expected {\"text\": string}");
        return 1;
    }
    int32_t *ids = NULL;
    size_t n = 0;
    hc_errbuf eb = {{0}};
    int rc = hc_tokenizer_encode(tok, ctx, json_string_value(text), json_string_length(text),
                                 add_special, &ids, &n, &eb);
    if (rc) {
        print_error(eb.msg[0] ? eb.msg : hc_strerror(rc));
        return 1;
    }
    json_t *arr = json_array();
    for (size_t i = 0; i < n; i++)
        json_array_append_new(arr, json_integer(ids[i]));
    free(ids);
    json_t *o = json_object();
    json_object_set(o, "text", text);
    json_object_set_new(o, "ids", arr);
    print_json(o);
    json_decref(o);
    return 0;
}

static int do_decode_line(const hc_tokenizer *tok, json_t *in, int skip_special) {
    json_t *arr = json_object_get(in, "ids");
    if (!json_is_array(arr)) {
        print_error("expected {\"ids\": [int, ...]}");
        return 1;
    }
    size_t n = json_array_size(arr);
    int32_t *ids = malloc((n ? n : 1) * sizeof *ids);
    if (!ids) {
        print_error("out of memory");
        return 1;
    }
    for (size_t i = 0; i < n; i++) {
        json_t *v = json_array_get(arr, i);
        if (!json_is_integer(v)) {
            free(ids);
            char msg[96];
            snprintf(msg, sizeof msg, "ids[%zu] is not an integer", i);
            print_error(msg);
            return 1;
        }
        json_int_t id = json_integer_value(v);
        if (id < 0 || (uint64_t)id >= (uint64_t)hc_tokenizer_n_vocab(tok)) {
            free(ids);
            char msg[160];
            snprintf(msg, sizeof msg, "ids[%zu] = %lld is outside the vocabulary (0..%zu)", i,
                     (long long)id, hc_tokenizer_n_vocab(tok) - 1);
            print_error(msg);
            return 1;
        }
        ids[i] = (int32_t)json_integer_value(v);
    }
    char *text = NULL;
    size_t len = 0;
    hc_errbuf eb = {{0}};
    int rc = hc_tokenizer_decode(tok, ids, n, skip_special, &text, &len, &eb);
    free(ids);
    if (rc) {
        print_error(eb.msg[0] ? eb.msg : hc_strerror(rc));
        return 1;
    }
    json_t *o = json_object();
    json_object_set(o, "ids", arr);
    json_object_set_new(o, "text", json_stringn(text, len));
    free(text);
    print_json(o);
    json_decref(o);
    return 0;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static int run_bench(const hc_tokenizer *tok, double load_s, long rounds) {
    /* read every {"text"} line first */
    char **texts = NULL;
    size_t *lens = NULL, n = 0;
    char *line = NULL;
    size_t cap = 0;
    ssize_t got;
    while ((got = getline(&line, &cap, stdin)) > 0) {
        json_t *o = json_loadb(line, (size_t)got, JSON_ALLOW_NUL, NULL);
        json_t *t = json_object_get(o, "text");
        if (json_is_string(t)) {
            texts = realloc(texts, (n + 1) * sizeof *texts);
            lens = realloc(lens, (n + 1) * sizeof *lens);
            if (!texts || !lens) return 1;
            lens[n] = json_string_length(t);
            texts[n] = malloc(lens[n] + 1);
            if (!texts[n]) return 1;
            memcpy(texts[n], json_string_value(t), lens[n] + 1);
            n++;
        }
        json_decref(o);
    }
    free(line);
    double *warm = malloc((size_t)rounds * sizeof *warm),
           *cold = malloc((size_t)rounds * sizeof *cold);
    hc_tok_ctx *ctx = hc_tok_ctx_new(tok);
    if (!warm || !cold || !ctx) return 1;
    size_t n_tokens = 0;
    int rc = 0;
    for (int pass = 0; pass < 2 && !rc; pass++) {
        for (long r = 0; r < rounds && !rc; r++) {
            hc_tok_ctx *c = pass == 0 ? ctx : hc_tok_ctx_new(tok);
            double t0 = now_s();
            size_t nt = 0;
            for (size_t i = 0; i < n && !rc; i++) {
                int32_t *ids;
                size_t k;
                rc = hc_tokenizer_encode(tok, c, texts[i], lens[i], 0, &ids, &k, NULL);
                nt += k;
                free(ids);
            }
            (pass == 0 ? warm : cold)[r] = (now_s() - t0) * 1e6;
            n_tokens = nt;
            if (pass == 1) hc_tok_ctx_free(c);
        }
    }
    hc_tok_ctx_free(ctx);
    if (!rc) {
        qsort(warm, (size_t)rounds, sizeof *warm, cmp_double);
        qsort(cold, (size_t)rounds, sizeof *cold, cmp_double);
        printf(
            "{\"load_ms\":%.2f,\"n_texts\":%zu,\"n_tokens\":%zu,\"rounds\":%ld,\"median_us\":%.2f,"
            "\"min_us\":%.2f,\"median_us_cold\":%.2f}\n",
            load_s * 1e3, n, n_tokens, rounds, warm[rounds / 2], warm[0], cold[rounds / 2]);
    }
    for (size_t i = 0; i < n; i++)
        free(texts[i]);
    free(texts);
    free(lens);
    free(warm);
    free(cold);
    return rc ? 1 : 0;
}

int hc_cmd_tokenize(int argc, char **argv) {
    enum { OPT_DECODE = 256, OPT_ADD, OPT_SKIP, OPT_BENCH, OPT_MAXLINE };
    static const struct option opts[] = {{"tokenizer", required_argument, 0, 't'},
                                         {"decode", no_argument, 0, OPT_DECODE},
                                         {"add-special", no_argument, 0, OPT_ADD},
                                         {"skip-special", no_argument, 0, OPT_SKIP},
                                         {"bench", required_argument, 0, OPT_BENCH},
                                         {"max-line-bytes", required_argument, 0, OPT_MAXLINE},
                                         {"help", no_argument, 0, 'h'},
                                         {0, 0, 0, 0}};
    const char *dir = NULL;
    int decode = 0, add_special = 0, skip_special = 0, c;
    long rounds = 0, max_line = HC_CLI_DEFAULT_MAX_LINE;
    optind = 1;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case 't':
            dir = optarg;
            break;
        case OPT_DECODE:
            decode = 1;
            break;
        case OPT_ADD:
            add_special = 1;
            break;
        case OPT_SKIP:
            skip_special = 1;
            break;
        case OPT_BENCH: {
            char *end;
            rounds = strtol(optarg, &end, 10);
            if (*end || rounds < 1 || rounds > 1000000) {
                fprintf(stderr, "hllm tokenize: --bench needs a round count in 1..1000000\n");
                return 2;
            }
            break;
        }
        case OPT_MAXLINE:
            if (hc_cli_parse_int(optarg, "--max-line-bytes", 2, 1L << 30, &max_line)) return 2;
            break;
        case 'h':
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }
    if (!dir || optind < argc) {
        fprintf(stderr, "hllm tokenize: --tokenizer DIR is required (see --help)\n");
        return 2;
    }
    hc_tokenizer *tok;
    hc_errbuf eb = {{0}};
    double t0 = now_s();
    int rc = hc_tokenizer_load(&tok, dir, &eb);
    double load_s = now_s() - t0;
    if (rc) {
        fprintf(stderr, "hllm tokenize: %s\n", eb.msg[0] ? eb.msg : hc_strerror(rc));
        return 1;
    }
    if (rounds) {
        rc = run_bench(tok, load_s, rounds);
        hc_tokenizer_free(tok);
        return rc;
    }
    hc_tok_ctx *ctx = hc_tok_ctx_new(tok);
    if (!ctx) {
        hc_tokenizer_free(tok);
        fprintf(stderr, "hllm tokenize: out of memory\n");
        return 1;
    }
    int failed = 0;
    char *line = NULL;
    size_t cap = 0;
    long got;
    while ((got = hc_cli_read_line(stdin, &line, &cap, (size_t)max_line)) != HC_CLI_LINE_EOF) {
        if (got == HC_CLI_LINE_ERROR) {
            fprintf(stderr, "hllm tokenize: reading stdin: %s\n", strerror(errno ? errno : EIO));
            failed = 1;
            break;
        }
        if (got == HC_CLI_LINE_TOO_LONG) {
            char msg[128];
            snprintf(msg, sizeof msg, "line longer than --max-line-bytes %ld bytes (skipped)",
                     max_line);
            print_error(msg);
            failed = 1;
        } else {
            json_error_t je;
            json_t *in = json_loadb(line, (size_t)got, JSON_ALLOW_NUL, &je);
            if (!json_is_object(in)) {
                char msg[300];
                snprintf(msg, sizeof msg, "invalid JSON: %s", in ? "not an object" : je.text);
                print_error(msg);
                failed = 1;
            } else {
                failed |= decode ? do_decode_line(tok, in, skip_special)
                                 : do_encode_line(tok, ctx, in, add_special);
            }
            json_decref(in);
        }
        if (hc_cli_flush_output("tokenize")) {
            failed = 1;
            break;
        }
    }
    free(line);
    hc_tok_ctx_free(ctx);
    hc_tokenizer_free(tok);
    return failed;
}
