/* main.c: `hllm`, offline tools over the hllm-creator engine. Dispatches to one subcommand. */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "commands.h"
#include "common.h"

static const struct {
    const char *name;
    int (*fn)(int, char **);
    const char *summary;
} commands[] = {
    {"generate", hc_cmd_generate, "personalized titles from a model package, or token ids from a "
                                  "Hugging Face model"},
    {"embed", hc_cmd_embed, "user histories -> cluster (and user vectors) with a model package"},
    {"cluster", hc_cmd_cluster, "k-means centroids of users' projected vectors"},
    {"titles", hc_cmd_titles, "the title table of every (cluster, ad) pair, for hllm-creatord"},
    {"bench", hc_cmd_bench, "measure prefill and decode tokens/s"},
    {"inspect", hc_cmd_inspect, "print a model's config and tensor table"},
    {"tokenize", hc_cmd_tokenize, "encode/decode JSON lines with a Hugging Face tokenizer"},
};

static void usage(FILE *f) {
    fprintf(f, "usage: hllm <command> [options]\n\ncommands:\n");
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        fprintf(f, "  %-10s %s\n", commands[i].name, commands[i].summary);
    fprintf(f, "\n'hllm <command> --help' describes each command.\n");
}

/* Output that did not reach its file is a failure, whatever the command thought: check the
 * last flush and the close (a full disk may only show here). */
static int finish(const char *cmd, int rc) {
    errno = 0;
    if (fflush(stdout) != 0 || ferror(stdout) || fclose(stdout) != 0) {
        int e = errno;
        if (hc_cli_output_error_reported()) return 1;
        fprintf(stderr, "hllm%s%s: cannot write the output: %s\n", cmd ? " " : "", cmd ? cmd : "",
                e ? strerror(e) : "I/O error");
        return 1;
    }
    return rc;
}

int main(int argc, char **argv) {
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help")) {
        usage(stdout);
        return finish(NULL, 0);
    }
    if (!strcmp(argv[1], "--version")) {
        printf("hllm 0.1.0\n");
        return finish(NULL, 0);
    }
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        if (!strcmp(argv[1], commands[i].name))
            return finish(argv[1], commands[i].fn(argc - 1, argv + 1));
    fprintf(stderr, "hllm: unknown command '%s'\n\n", argv[1]);
    usage(stderr);
    return 2;
}
