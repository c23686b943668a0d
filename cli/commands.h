/* commands.h: the `hllm` subcommands. Each takes the arguments after its name (argv[0] is the
 * subcommand name) and returns the process exit code: 0 ok, 1 runtime failure, 2 usage error. */
#ifndef HC_CLI_COMMANDS_H
#define HC_CLI_COMMANDS_H

#include "core/error.h"

int hc_cmd_generate(int argc, char **argv);
int hc_cmd_bench(int argc, char **argv);
int hc_cmd_inspect(int argc, char **argv);
int hc_cmd_tokenize(int argc, char **argv);
int hc_cmd_embed(int argc, char **argv);
int hc_cmd_cluster(int argc, char **argv);
/* `hllm titles`: the pre-generated title table (proto/title-table.md). */
int hc_cmd_titles(int argc, char **argv);
/* Package mode of `hllm generate` (the model directory holds creator.json). */
int hc_cmd_generate_package(int argc, char **argv);
/* What --model names: 1 a model package (dir/creator.json exists), 0 a directory without
 * creator.json (a Hugging Face model directory), -1 unusable (missing, not a directory, a symlink
 * loop, unreadable, ...; the reason is printed on stderr, prefixed with "hllm <cmd>: "). */
int hc_cli_model_kind(const char *dir, const char *cmd);
/* Prints "hllm <cmd>: <what>: <message>" for a failed package load, and when the package was
 * refused for naming a file outside itself, how to allow that (--allow-outside-paths). */
void hc_cli_print_load_error(const char *cmd, const char *what, const hc_errbuf *eb, int rc);

#endif
