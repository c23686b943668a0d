/* common.h: helpers shared by the hllm subcommands (option values, model loading). */
#ifndef HC_CLI_COMMON_H
#define HC_CLI_COMMON_H

#include <stdint.h>

#include "backend/backend.h"
#include "model/llm.h"

/* Parses "1,2,3" into a malloc'ed array; prints an error naming `opt` and returns -1 on bad
 * input. */
int hc_cli_parse_ids(const char *s, const char *opt, int32_t **out, int *n);
/* Strict number parsing: the whole string must be a number in range; prints an error naming
 * `opt` and returns -1 otherwise. */
int hc_cli_parse_int(const char *s, const char *opt, long lo, long hi, long *out);
int hc_cli_parse_float(const char *s, const char *opt, double lo, double hi, double *out);
int hc_cli_parse_backend(const char *s, hc_backend_kind *out);
int hc_cli_parse_weight_dtype(const char *s, hc_dtype *out);
/* --compute f32|bf16 (hc_compute, backend.h); prints an error and returns -1 otherwise. */
int hc_cli_parse_compute(const char *s, hc_compute *out);
/* The help line every model-running subcommand prints for --compute. */
#define HC_CLI_COMPUTE_HELP                                                                        \
    "  --compute C        matmul compute: f32 (default) | bf16 (activations rounded to bf16,\n"   \
    "                     f32 accumulation; CPU backend only)\n"

/* Creates the backend for --backend `kind`, --threads `threads` and --compute `compute`. The environment is read here,
 * in the CLI, and passed to the library explicitly (hc_backend_params): $HC_CUDA_LIB (the CUDA
 * library to load instead of searching) and $HC_CUDA_DEVICE (the CUDA device index, default 0),
 * both ignored under --backend cpu; $HC_CPU_ISA (the CPU kernel level) and $HC_CPU_GEMM (the CPU
 * prefill GEMM library: auto, openblas, onednn), both ignored under --backend cuda. Prints "hllm: backend: <why>" on failure, including a
 * $HC_CUDA_DEVICE that is not a device index (HC_ERR_INVAL). */
int hc_cli_backend_create(hc_backend **be, hc_backend_kind kind, int threads, hc_compute compute);

/* Creates the backend (hc_cli_backend_create) and loads the model from dir; prints a clear
 * message on failure. */
int hc_cli_load_model(const char *dir, hc_backend_kind kind, int threads, hc_compute compute,
                      hc_dtype weight_dtype, hc_backend **be, hc_llm **m);

/* Flushes stdout; on a write error (full disk, closed pipe, ...) prints why, naming the command,
 * and returns -1. Commands call it after each batch of output and stop on failure. */
int hc_cli_flush_output(const char *cmd);
/* 1 once hc_cli_flush_output has reported a write error (main() then does not repeat it). */
int hc_cli_output_error_reported(void);

/* Wall-clock seconds (monotonic). */
double hc_cli_now(void);

#endif
