/* cmd_bench.c: `hllm bench`: prefill and decode throughput of a model on this machine. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/cpu_isa.h"
#include "commands.h"
#include "common.h"
#include "model/generate.h"

static void usage(FILE *f) {
    fprintf(f,
            "usage: hllm bench --model DIR [options]\n"
            "\n"
            "Measures prefill tokens/s (one prompt of --prompt-len random tokens) and decode\n"
            "tokens/s (--gen greedy steps after that prompt, --batch sequences at once), each the\n"
            "median over --reps runs after one warm-up run.\n"
            "\n"
            "  --model DIR        Hugging Face model directory\n"
            "  --prompt-len P     prompt tokens (default 128)\n"
            "  --gen N            decode steps (default 64)\n"
            "  --batch B          sequences decoded together (default 1)\n"
            "  --reps R           measured repetitions (default 5)\n"
            "  --threads N        CPU threads (default: all cores)\n"
            "  --backend B        auto | cpu | cuda (default auto)\n"
            "  --weights W        auto (as stored) | f32 | bf16 (default auto)\n"
            HC_CLI_COMPUTE_HELP
            "  --json             one JSON line instead of the table\n"
            "  -h, --help         this help\n");
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}
static double median(double *v, int n) {
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

int hc_cmd_bench(int argc, char **argv) {
    static const struct option opts[] = {
        {"model", required_argument, 0, 'm'},   {"prompt-len", required_argument, 0, 'P'},
        {"gen", required_argument, 0, 'n'},     {"batch", required_argument, 0, 'B'},
        {"reps", required_argument, 0, 'r'},    {"threads", required_argument, 0, 't'},
        {"backend", required_argument, 0, 'b'}, {"weights", required_argument, 0, 'w'},
        {"json", no_argument, 0, 'j'},          {"help", no_argument, 0, 'h'},
        {"compute", required_argument, 0, 'C'}, {0, 0, 0, 0}};
    const char *model = NULL;
    hc_compute compute = HC_COMPUTE_F32;
    long P = 128, N = 64, B = 1, R = 5, threads = 0;
    int json = 0, c;
    hc_backend_kind kind = HC_BACKEND_AUTO;
    hc_dtype wd = HC_DTYPE_AS_STORED;
    optind = 1;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case 'm': model = optarg; break;
        case 'P': if (hc_cli_parse_int(optarg, "--prompt-len", 1, 1 << 16, &P)) return 2; break;
        case 'n': if (hc_cli_parse_int(optarg, "--gen", 1, 1 << 16, &N)) return 2; break;
        case 'B': if (hc_cli_parse_int(optarg, "--batch", 1, 1024, &B)) return 2; break;
        case 'r': if (hc_cli_parse_int(optarg, "--reps", 1, 1000, &R)) return 2; break;
        case 't': if (hc_cli_parse_int(optarg, "--threads", 1, 1024, &threads)) return 2; break;
        case 'b': if (hc_cli_parse_backend(optarg, &kind)) return 2; break;
        case 'w': if (hc_cli_parse_weight_dtype(optarg, &wd)) return 2; break;
        case 'C': if (hc_cli_parse_compute(optarg, &compute)) return 2; break;
        case 'j': json = 1; break;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
    }
    if (!model || optind < argc) {
        fprintf(stderr, "hllm bench: --model is required and takes no positional arguments\n");
        return 2;
    }
    hc_backend *be;
    hc_llm *m;
    if (hc_cli_load_model(model, kind, (int)threads, compute, wd, &be, &m)) return 1;
    const int V = m->cfg.vocab_size;
    int rc = 1;
    hc_kv_cache *kv = NULL;
    hc_errbuf eb = {{0}};
    int blocks = (int)B * (int)((P + N + 15) / 16) + 1;
    int32_t *tok = malloc(sizeof(int32_t) * (size_t)(P > B ? P : B));
    int32_t *pos = malloc(sizeof(int32_t) * (size_t)(P > B ? P : B));
    int32_t *seg = malloc(sizeof(int32_t) * (size_t)(P > B ? P : B));
    int32_t *last = malloc(sizeof(int32_t) * (size_t)B);
    int *seqs = malloc(sizeof(int) * (size_t)B);
    float *logits = malloc(sizeof(float) * (size_t)V * (size_t)B);
    double *t_pre = malloc(sizeof(double) * (size_t)(R + 1)), *t_dec = malloc(sizeof(double) * (size_t)(R + 1));
    if (!tok || !pos || !seg || !last || !seqs || !logits || !t_pre || !t_dec ||
        hc_llm_kv_create(m, &kv, 16, blocks)) {
        fprintf(stderr, "hllm bench: out of memory\n");
        goto done;
    }
    uint64_t x = 12345;
    for (long i = 0; i < P; i++) {
        x = x * 6364136223846793005ULL + 1442695040888963407ULL;
        tok[i] = (int32_t)((x >> 33) % (uint64_t)V);
        pos[i] = (int32_t)i;
        seg[i] = 0;
    }
    for (long r = 0; r <= R; r++) { /* r == 0 is the warm-up */
        for (long s = 0; s < B; s++) hc_kv_seq_new(kv, &seqs[s]);
        /* prefill: each sequence's prompt separately (the time of sequence 0 is reported) */
        double t0 = hc_cli_now();
        int32_t out_idx = (int32_t)P - 1;
        for (long s = 0; s < B; s++) {
            hc_batch b = {.n_tokens = (int)P, .token = tok, .pos = pos, .seg = seg, .n_out = 1,
                          .out_idx = &out_idx};
            if (hc_llm_forward(m, &b, kv, &seqs[s], NULL, logits + s * V, &eb)) goto fail;
            if (s == 0) t_pre[r] = hc_cli_now() - t0;
        }
        hc_sampler_params gp = hc_sampler_greedy();
        hc_sampler smp;
        if (hc_sampler_init(&smp, &gp, V, &eb)) goto fail;
        for (long s = 0; s < B; s++) last[s] = hc_sampler_sample(&smp, logits + s * V);
        double t1 = hc_cli_now();
        for (long step = 0; step < N; step++) {
            int32_t dpos[1024], dseg[1024], didx[1024];
            for (long s = 0; s < B; s++) {
                dpos[s] = (int32_t)(P + step);
                dseg[s] = (int32_t)s;
                didx[s] = (int32_t)s;
            }
            hc_batch d = {.n_tokens = (int)B, .token = last, .pos = dpos, .seg = dseg,
                          .n_out = (int)B, .out_idx = didx};
            if (hc_llm_forward(m, &d, kv, seqs, NULL, logits, &eb)) {
                hc_sampler_free(&smp);
                goto fail;
            }
            for (long s = 0; s < B; s++) last[s] = hc_sampler_sample(&smp, logits + s * V);
        }
        t_dec[r] = hc_cli_now() - t1;
        hc_sampler_free(&smp);
        for (long s = 0; s < B; s++) hc_kv_seq_free(kv, seqs[s]);
    }
    double pre = median(t_pre + 1, (int)R), dec = median(t_dec + 1, (int)R);
    double pre_tps = (double)P / pre, dec_tps = (double)(N * B) / dec;
    if (json) {
        printf("{\"backend\": \"%s\", \"threads\": %d, \"compute\": \"%s\", \"cpu_gemm\": \"%s\", "
               "\"params\": %lld, \"weight_bytes\": %zu, "
               "\"prompt_len\": %ld, \"gen\": %ld, \"batch\": %ld, \"reps\": %ld, "
               "\"prefill_tok_s\": %.2f, \"decode_tok_s\": %.2f, \"prefill_ms\": %.3f, "
               "\"decode_ms_per_step\": %.3f}\n",
               be->iface->name, be->n_threads, hc_compute_name(compute),
               hc_backend_cpu_gemm(be) >= 0 ? hc_cpu_gemm_name(hc_backend_cpu_gemm(be)) : "none",
               (long long)m->n_params, m->weight_bytes, P, N, B, R,
               pre_tps, dec_tps, pre * 1e3, dec * 1e3 / (double)N);
    } else {
        printf("model      %s (%lld params, %.1f MiB of weights, %s backend, %d threads)\n", model,
               (long long)m->n_params, (double)m->weight_bytes / (1 << 20), be->iface->name,
               be->n_threads);
        if (hc_backend_cpu_isa(be) >= 0)
            printf("cpu isa    %s\ncpu gemm   %s (prefill, m > %d)\n",
                   hc_cpu_isa_name((hc_cpu_isa)hc_backend_cpu_isa(be)),
                   hc_cpu_gemm_name(hc_backend_cpu_gemm(be)), HC_CPU_SMALLM_MAX);
        printf("compute    %s\n", hc_compute_name(compute));
        printf("%-8s %10s %12s %14s\n", "phase", "tokens", "median ms", "tokens/s");
        printf("%-8s %10ld %12.2f %14.1f\n", "prefill", P, pre * 1e3, pre_tps);
        printf("%-8s %10ld %12.2f %14.1f\n", "decode", N * B, dec * 1e3, dec_tps);
    }
    rc = 0;
    goto done;
fail:
    fprintf(stderr, "hllm bench: %s\n", eb.msg[0] ? eb.msg : "forward failed");
done:
    hc_kv_free(kv);
    free(tok);
    free(pos);
    free(seg);
    free(last);
    free(seqs);
    free(logits);
    free(t_pre);
    free(t_dec);
    hc_llm_free(m);
    hc_backend_free(be);
    return rc;
}
