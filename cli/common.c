/* common.c: see common.h. */
#include "common.h"

#include "backend/cpu_isa.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

int hc_cli_parse_int(const char *s, const char *opt, long lo, long hi, long *out) {
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (!*s || *end || errno || v < lo || v > hi) {
        fprintf(stderr, "hllm: %s expects an integer in [%ld, %ld], got '%s'\n", opt, lo, hi, s);
        return -1;
    }
    *out = v;
    return 0;
}

int hc_cli_parse_float(const char *s, const char *opt, double lo, double hi, double *out) {
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (!*s || *end || errno || !isfinite(v) || v < lo || v > hi) {
        fprintf(stderr, "hllm: %s expects a number in [%g, %g], got '%s'\n", opt, lo, hi, s);
        return -1;
    }
    *out = v;
    return 0;
}

int hc_cli_parse_ids(const char *s, const char *opt, int32_t **out, int *n) {
    *out = NULL;
    *n = 0;
    size_t cap = 16;
    int32_t *ids = malloc(cap * sizeof *ids);
    if (!ids) return -1;
    const char *p = s;
    while (*p) {
        char *end;
        errno = 0;
        long v = strtol(p, &end, 10);
        if (end != p && (errno == ERANGE || v < 0 || v > INT32_MAX) && (!*end || *end == ',')) {
            fprintf(stderr, "hllm: %s: token id %.*s is out of range (0..%d)\n", opt,
                    (int)(end - p), p, INT32_MAX);
            free(ids);
            return -1;
        }
        if (end == p || errno || (*end && *end != ',')) {
            fprintf(stderr, "hllm: %s expects comma-separated non-negative token ids, got '%s'\n",
                    opt, s);
            free(ids);
            return -1;
        }
        if ((size_t)*n == cap) {
            int32_t *t = realloc(ids, (cap *= 2) * sizeof *ids);
            if (!t) {
                free(ids);
                return -1;
            }
            ids = t;
        }
        ids[(*n)++] = (int32_t)v;
        p = *end ? end + 1 : end;
        if (*end == ',' && !*p) {
            fprintf(stderr, "hllm: %s: trailing comma in '%s'\n", opt, s);
            free(ids);
            return -1;
        }
    }
    if (*n == 0) {
        fprintf(stderr, "hllm: %s: no ids given\n", opt);
        free(ids);
        return -1;
    }
    *out = ids;
    return 0;
}

int hc_cli_parse_backend(const char *s, hc_backend_kind *out) {
    if (!strcmp(s, "auto")) *out = HC_BACKEND_AUTO;
    else if (!strcmp(s, "cpu")) *out = HC_BACKEND_CPU;
    else if (!strcmp(s, "cuda")) *out = HC_BACKEND_CUDA;
    else {
        fprintf(stderr, "hllm: --backend expects auto, cpu or cuda, got '%s'\n", s);
        return -1;
    }
    return 0;
}

int hc_cli_parse_weight_dtype(const char *s, hc_dtype *out) {
    if (!strcmp(s, "auto")) *out = HC_DTYPE_AS_STORED;
    else if (!strcmp(s, "f32")) *out = HC_DTYPE_F32;
    else if (!strcmp(s, "bf16")) *out = HC_DTYPE_BF16;
    else if (!strcmp(s, "f16")) *out = HC_DTYPE_F16;
    else {
        fprintf(stderr, "hllm: --weights expects auto, f32, bf16 or f16, got '%s'\n", s);
        return -1;
    }
    return 0;
}

int hc_cli_parse_compute(const char *s, hc_compute *out) {
    if (hc_compute_parse(s, out) == HC_OK) return 0;
    fprintf(stderr, "hllm: --compute expects f32 or bf16, got '%s'\n", s);
    return -1;
}

int hc_cli_backend_create(hc_backend **be, hc_backend_kind kind, int threads, hc_compute compute) {
    *be = NULL;
    hc_backend_params bp = hc_backend_default_params();
    bp.n_threads = threads;
    bp.compute = compute;
    if (kind != HC_BACKEND_CPU) {
        const char *lib = getenv("HC_CUDA_LIB");
        if (lib && *lib) bp.cuda_lib = lib;
        const char *dev = getenv("HC_CUDA_DEVICE");
        if (dev && *dev) {
            char *end;
            errno = 0;
            long v = strtol(dev, &end, 10);
            if (*dev < '0' || *dev > '9' || *end || errno || v > INT_MAX) {
                fprintf(stderr, "hllm: backend: HC_CUDA_DEVICE must be a CUDA device index (0, 1, "
                                "...), got '%s'\n", dev);
                return HC_ERR_INVAL;
            }
            bp.cuda_device = (int)v;
        }
    }
    /* the CPU backend's kernel level (cpu_isa.h); meaningless for --backend cuda */
    const char *isa = kind == HC_BACKEND_CUDA ? NULL : getenv("HC_CPU_ISA");
    if (isa && *isa) {
        hc_cpu_isa v;
        if (hc_cpu_isa_parse(isa, &v)) {
            fprintf(stderr, "hllm: backend: HC_CPU_ISA expects auto, portable, avx2, avx512f or "
                            "avx512bf16, got '%s'\n", isa);
            return HC_ERR_INVAL;
        }
        if (!hc_cpu_isa_supported(v)) {
            fprintf(stderr, "hllm: backend: HC_CPU_ISA=%s: this CPU lacks it (best here: %s)\n",
                    isa, hc_cpu_isa_name(hc_cpu_isa_detect()));
            return HC_ERR_UNSUPPORTED;
        }
        bp.cpu_isa = v;
    }
    /* the CPU backend's prefill GEMM library (backend.h hc_cpu_gemm), for benchmarks and tests */
    const char *gemm = kind == HC_BACKEND_CUDA ? NULL : getenv("HC_CPU_GEMM");
    if (gemm && *gemm) {
        int g = -1;
        for (int i = 0; i < HC_CPU_GEMM_COUNT; i++)
            if (!strcmp(gemm, hc_cpu_gemm_name(i))) g = i;
        if (g < 0) {
            fprintf(stderr, "hllm: backend: HC_CPU_GEMM expects auto, openblas or onednn, got "
                            "'%s'\n", gemm);
            return HC_ERR_INVAL;
        }
        if (!hc_cpu_gemm_built(g)) {
            fprintf(stderr, "hllm: backend: HC_CPU_GEMM=%s: this build has no oneDNN\n", gemm);
            return HC_ERR_UNSUPPORTED;
        }
        bp.cpu_gemm = g;
    }
    hc_errbuf eb = {{0}};
    int rc = hc_backend_create_ex(be, kind, &bp, &eb);
    if (rc) fprintf(stderr, "hllm: backend: %s\n", eb.msg[0] ? eb.msg : hc_strerror(rc));
    return rc;
}

int hc_cli_load_model(const char *dir, hc_backend_kind kind, int threads, hc_compute compute,
                      hc_dtype weight_dtype, hc_backend **be, hc_llm **m) {
    hc_errbuf eb = {{0}};
    *m = NULL;
    int rc = hc_cli_backend_create(be, kind, threads, compute);
    if (rc) return rc;
    hc_llm_params p = hc_llm_default_params();
    p.weight_dtype = weight_dtype;
    rc = hc_llm_load(m, *be, dir, &p, &eb);
    if (rc) {
        fprintf(stderr, "hllm: cannot load model '%s': %s\n", dir,
                eb.msg[0] ? eb.msg : hc_strerror(rc));
        hc_backend_free(*be);
        *be = NULL;
    }
    return rc;
}

static int output_error_reported;

int hc_cli_output_error_reported(void) { return output_error_reported; }

int hc_cli_flush_output(const char *cmd) {
    if (fflush(stdout) == 0 && !ferror(stdout)) return 0;
    int e = errno;
    if (output_error_reported) return -1;
    output_error_reported = 1;
    fprintf(stderr, "hllm %s: cannot write the output: %s\n", cmd, e ? strerror(e) : "I/O error");
    return -1;
}

double hc_cli_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}
