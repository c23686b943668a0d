/* cmd_generate.c: `hllm generate`: token ids in, generated token ids out. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "commands.h"
#include "common.h"
#include "model/generate.h"

static void usage(FILE *f) {
    fprintf(f,
            "usage: hllm generate --model DIR --ids 1,2,3 [--ids ...] [options]\n"
            "       hllm generate --model PKG [options] < requests.jsonl   (model package; see\n"
            "                                 'hllm generate --model PKG --help')\n"
            "\n"
            "Generates a continuation of each prompt (given as token ids) and prints the generated\n"
            "ids, one line per prompt, comma-separated, in the order the prompts were given.\n"
            "Several --ids are decoded together as one batch (same tokens as one by one).\n"
            "\n"
            "  --model DIR          Hugging Face model directory (config.json + *.safetensors)\n"
            "  --ids LIST           prompt token ids; repeat for a batch\n"
            "  --max-new N          tokens to generate at most (default 32)\n"
            "  --greedy             argmax decoding (the default unless --temperature is given)\n"
            "  --temperature T      sample with temperature T > 0 (T = 0 means greedy)\n"
            "  --top-k K            keep the K most likely tokens when sampling (default 50; 0 = off)\n"
            "  --top-p P            nucleus sampling threshold in (0, 1] (default 1 = off)\n"
            "  --seed S             random seed for sampling (default 0); prompt i uses S + i\n"
            "  --stop LIST          stop token ids (default: eos_token_id from config.json)\n"
            "  --no-stop            ignore stop tokens, always generate --max-new tokens\n"
            "  --json               print {\"ids\": [...], \"finish\": \"stop|length\"} per prompt\n"
            "  --threads N          CPU threads (default: all cores)\n"
            "  --backend B          auto | cpu | cuda (default auto)\n"
            "  --weights W          in-memory weight dtype: auto (as stored) | f32 | bf16\n"
            "  --compute C          matmul compute: f32 (default) | bf16 (activations rounded to\n"
            "                       bf16, f32 accumulation; CPU backend only)\n"
            "  -h, --help           this help\n");
}

int hc_cmd_generate(int argc, char **argv) {
    static const struct option opts[] = {
        {"model", required_argument, 0, 'm'},   {"ids", required_argument, 0, 'i'},
        {"max-new", required_argument, 0, 'n'}, {"greedy", no_argument, 0, 'g'},
        {"temperature", required_argument, 0, 'T'}, {"top-k", required_argument, 0, 'k'},
        {"top-p", required_argument, 0, 'p'},   {"seed", required_argument, 0, 's'},
        {"stop", required_argument, 0, 'S'},    {"no-stop", no_argument, 0, 'N'},
        {"json", no_argument, 0, 'j'},          {"threads", required_argument, 0, 't'},
        {"backend", required_argument, 0, 'b'}, {"weights", required_argument, 0, 'w'},
        {"help", no_argument, 0, 'h'},          {"compute", required_argument, 0, 'C'},
        {0, 0, 0, 0}};
    /* a model package (creator.json) switches to the HLLM-Creator pipeline */
    for (int i = 1; i < argc; i++) {
        const char *dir = NULL;
        if (!strcmp(argv[i], "--model") && i + 1 < argc) dir = argv[i + 1];
        else if (!strncmp(argv[i], "--model=", 8)) dir = argv[i] + 8;
        if (!dir) continue;
        int kind = hc_cli_model_kind(dir, "generate");
        if (kind < 0) return 1;
        if (kind == 1) return hc_cmd_generate_package(argc, argv);
    }
    const char *model = NULL;
    int n_prompts = 0, n_stop = -1, no_stop = 0, json = 0, greedy_flag = 0;
    int32_t *prompts[256];
    int prompt_len[256];
    int32_t *stop = NULL;
    long max_new = 32, top_k = 50, seed = 0, threads = 0;
    double temperature = -1, top_p = 1.0;
    hc_backend_kind kind = HC_BACKEND_AUTO;
    hc_dtype wd = HC_DTYPE_AS_STORED;
    hc_compute compute = HC_COMPUTE_F32;
    int rc = 2, c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case 'm': model = optarg; break;
        case 'i':
            if (n_prompts == 256) {
                fprintf(stderr, "hllm generate: at most 256 prompts\n");
                goto out;
            }
            if (hc_cli_parse_ids(optarg, "--ids", &prompts[n_prompts], &prompt_len[n_prompts]))
                goto out;
            n_prompts++;
            break;
        case 'n':
            if (hc_cli_parse_int(optarg, "--max-new", 0, 1 << 20, &max_new)) goto out;
            break;
        case 'g': greedy_flag = 1; break;
        case 'T':
            if (hc_cli_parse_float(optarg, "--temperature", 0, 1e6, &temperature)) goto out;
            break;
        case 'k':
            if (hc_cli_parse_int(optarg, "--top-k", 0, 1 << 30, &top_k)) goto out;
            break;
        case 'p':
            if (hc_cli_parse_float(optarg, "--top-p", 1e-9, 1.0, &top_p)) goto out;
            break;
        case 's':
            if (hc_cli_parse_int(optarg, "--seed", 0, 0x7fffffffL, &seed)) goto out;
            break;
        case 'S':
            free(stop);
            if (hc_cli_parse_ids(optarg, "--stop", &stop, &n_stop)) goto out;
            break;
        case 'N': no_stop = 1; break;
        case 'j': json = 1; break;
        case 't':
            if (hc_cli_parse_int(optarg, "--threads", 1, 1024, &threads)) goto out;
            break;
        case 'b':
            if (hc_cli_parse_backend(optarg, &kind)) goto out;
            break;
        case 'w':
            if (hc_cli_parse_weight_dtype(optarg, &wd)) goto out;
            break;
        case 'C':
            if (hc_cli_parse_compute(optarg, &compute)) goto out;
            break;
        case 'h': usage(stdout); rc = 0; goto out;
        default: usage(stderr); goto out;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "hllm generate: unexpected argument '%s'\n", argv[optind]);
        goto out;
    }
    if (!model || n_prompts == 0) {
        fprintf(stderr, "hllm generate: --model and at least one --ids are required "
                        "(see --help)\n");
        goto out;
    }
    if (greedy_flag && temperature > 0) {
        fprintf(stderr, "hllm generate: --greedy and --temperature exclude each other\n");
        goto out;
    }
    hc_backend *be = NULL;
    hc_llm *m = NULL;
    rc = 1;
    if (hc_cli_load_model(model, kind, (int)threads, compute, wd, &be, &m)) goto out;
    for (int i = 0; i < n_prompts; i++)
        for (int j = 0; j < prompt_len[i]; j++)
            if (prompts[i][j] >= m->cfg.vocab_size) {
                fprintf(stderr, "hllm generate: prompt %d: token id %d is outside the vocabulary "
                                "(size %d)\n", i + 1, prompts[i][j], m->cfg.vocab_size);
                goto free_model;
            }
    if (n_stop < 0) {
        n_stop = m->cfg.n_eos;
        stop = malloc(sizeof(int32_t) * (size_t)(n_stop ? n_stop : 1));
        if (!stop) goto free_model;
        for (int i = 0; i < n_stop; i++) stop[i] = m->cfg.eos_token_ids[i];
    }
    hc_gen_seq seqs[256];
    memset(seqs, 0, sizeof seqs);
    for (int i = 0; i < n_prompts; i++) {
        hc_gen_seq *s = &seqs[i];
        s->prompt = prompts[i];
        s->n_prompt = prompt_len[i];
        s->max_new = (int)max_new;
        s->stop = stop;
        s->n_stop = no_stop ? 0 : n_stop;
        s->out = malloc(sizeof(int32_t) * (size_t)(max_new ? max_new : 1));
        if (!s->out) goto free_seqs;
        if (temperature > 0) {
            s->sampling.greedy = 0;
            s->sampling.temperature = (float)temperature;
            s->sampling.top_k = (int)top_k;
            s->sampling.top_p = (float)top_p;
            s->sampling.seed = (uint64_t)seed + (uint64_t)i;
        } else {
            s->sampling = hc_sampler_greedy();
        }
    }
    hc_errbuf eb = {{0}};
    int grc = hc_generate(m, NULL, seqs, n_prompts, NULL, NULL, &eb);
    if (grc) {
        fprintf(stderr, "hllm generate: %s\n", eb.msg[0] ? eb.msg : hc_strerror(grc));
        goto free_seqs;
    }
    for (int i = 0; i < n_prompts; i++) {
        const hc_gen_seq *s = &seqs[i];
        if (json) printf("{\"ids\": [");
        for (int j = 0; j < s->n_out; j++) printf(j ? (json ? ", %d" : ",%d") : "%d", s->out[j]);
        if (json)
            printf("], \"finish\": \"%s\"}", s->finish == HC_FINISH_STOP ? "stop" : "length");
        printf("\n");
    }
    rc = 0;
free_seqs:
    for (int i = 0; i < n_prompts; i++) free(seqs[i].out);
free_model:
    hc_llm_free(m);
    hc_backend_free(be);
out:
    for (int i = 0; i < n_prompts; i++) free(prompts[i]);
    free(stop);
    return rc;
}
