/* cmd_inspect.c: `hllm inspect`: a model's config (as the engine reads it) and tensor table. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/cpu_isa.h"
#include "commands.h"
#include "creator/creator.h"
#include "io/hfconfig.h"
#include "io/package.h"
#include "io/safetensors.h"

static void usage(FILE *f) {
    fprintf(f, "usage: hllm inspect --model DIR\n"
               "\n"
               "Prints the configuration the engine derives from DIR/config.json and the tensor\n"
               "table of its safetensors files (name, dtype, shape, shard). For a model package\n"
               "(DIR/creator.json) it prints the package settings, each sub-model's configuration\n"
               "and the weights' tensor table. Exits non-zero with the reason when the directory\n"
               "cannot be loaded.\n"
               "After printing, it loads the model as hllm generate would (on the CPU, every\n"
               "tensor checked against the configuration) and exits 1 when that fails.\n"
               "\n"
               "  --model DIR     Hugging Face model directory or model package\n"
               "  --no-load       print only; skip the load check (fast on very large models)\n"
               "  --allow-outside-paths\n"
               "                  let a package's creator.json name (or symlink to) files outside\n"
               "                  its directory (default: refused, as by the other commands)\n"
               "  -h, --help      this help\n");
}

static int print_config(const char *dir, const char *title, hc_errbuf *eb) {
    hc_llm_config cfg;
    int rc = hc_hfconfig_load(&cfg, dir, eb);
    if (rc) return rc;
    if (title) printf("\n[%s] %s\n", title, dir);
    printf("architecture             %s\n", hc_arch_name(cfg.arch));
    printf("vocab_size               %d\n", cfg.vocab_size);
    printf("hidden_size              %d\n", cfg.hidden_size);
    printf("intermediate_size        %d\n", cfg.intermediate_size);
    printf("num_hidden_layers        %d\n", cfg.n_layers);
    printf("num_attention_heads      %d\n", cfg.n_heads);
    printf("num_key_value_heads      %d\n", cfg.n_kv_heads);
    printf("head_dim                 %d\n", cfg.head_dim);
    printf("rms_norm_eps             %g\n", cfg.rms_norm_eps);
    printf("rope_theta               %g\n", cfg.rope_theta);
    printf("max_position_embeddings  %d\n", cfg.max_position_embeddings);
    printf("tie_word_embeddings      %s\n", cfg.tie_word_embeddings ? "true" : "false");
    printf("qk_norm                  %s\n", cfg.qk_norm ? "true" : "false");
    printf("bos_token_id             %d\n", cfg.bos_token_id);
    printf("eos_token_id            ");
    for (int i = 0; i < cfg.n_eos; i++) printf(" %d", cfg.eos_token_ids[i]);
    printf("%s\n", cfg.n_eos ? "" : " (none)");
    printf("pad_token_id             %d\n", cfg.pad_token_id);
    printf("torch_dtype              %s\n", hc_dtype_name(cfg.torch_dtype));
    return HC_OK;
}

/* The tensor table of a safetensors file, index or directory. */
static int print_tensors(const char *path_in) {
    hc_errbuf eb = {{0}};
    hc_safetensors *st = NULL;
    int rc = hc_st_open(&st, path_in, &eb);
    if (rc) {
        fprintf(stderr, "hllm inspect: %s\n", eb.msg[0] ? eb.msg : hc_strerror(rc));
        return 1;
    }
    size_t n = hc_st_count(st);
    long long total = 0, bytes = 0;
    printf("\n%-56s %-5s %-20s %s\n", "tensor", "dtype", "shape", "shard");
    for (size_t i = 0; i < n; i++) {
        const hc_st_tensor *t = hc_st_get(st, i);
        char shape[64] = "[";
        long long ne = 1;
        for (int d = 0; d < t->n_dims; d++) {
            snprintf(shape + strlen(shape), sizeof shape - strlen(shape), "%s%lld", d ? ", " : "",
                     (long long)t->shape[d]);
            ne *= t->shape[d];
        }
        strncat(shape, "]", sizeof shape - strlen(shape) - 1);
        const char *path = hc_st_shard_path(st, (size_t)t->shard);
        const char *base = strrchr(path, '/');
        printf("%-56s %-5s %-20s %s\n", t->name, hc_dtype_name(t->dtype), shape,
               base ? base + 1 : path);
        total += ne;
        bytes += (long long)t->nbytes;
    }
    printf("\n%zu tensors, %lld parameters, %.2f MiB in %zu file(s)\n", n, total,
           (double)bytes / (1 << 20), hc_st_n_shards(st));
    hc_st_close(st);
    return 0;
}

/* The load check: the model (or package) as the other commands load it. */
static int check_load(const char *dir, int package, int allow_outside) {
    hc_backend *be = NULL;
    hc_errbuf eb = {{0}};
    int rc = hc_backend_create(&be, HC_BACKEND_CPU, 1, &eb);
    if (!rc) {
        if (package) {
            hc_creator *c = NULL;
            hc_creator_params p = hc_creator_default_params();
            p.allow_outside_paths = allow_outside;
            rc = hc_creator_load(&c, be, dir, &p, &eb);
            hc_creator_free(c);
        } else {
            hc_llm *m = NULL;
            rc = hc_llm_load(&m, be, dir, NULL, &eb);
            hc_llm_free(m);
        }
    }
    hc_backend_free(be);
    if (rc) {
        char what[4200];
        snprintf(what, sizeof what, "%s does not load", dir);
        hc_cli_print_load_error("inspect", what, &eb, rc);
        return 1;
    }
    printf("\nload check               ok\n");
    return 0;
}

/* The CPU backend's kernel level here: what this CPU supports, what the backend would pick
 * ($HC_CPU_ISA overrides it; `hllm bench` prints the level a run used). */
static void print_cpu_isa(void) {
    printf("cpu kernels              %s (this CPU:", hc_cpu_isa_name(hc_cpu_isa_detect()));
    for (int i = HC_CPU_ISA_PORTABLE; i < HC_CPU_ISA_COUNT; i++)
        if (hc_cpu_isa_supported((hc_cpu_isa)i)) printf(" %s", hc_cpu_isa_name((hc_cpu_isa)i));
    printf("; HC_CPU_ISA overrides)\n");
}

static int inspect_package(const char *dir, int allow_outside) {
    hc_errbuf eb = {{0}};
    hc_package pkg;
    hc_package_params pp = {.allow_outside_paths = allow_outside};
    int rc = hc_package_load_ex(&pkg, dir, &pp, &eb);
    if (rc) {
        hc_cli_print_load_error("inspect", dir, &eb, rc);
        return 1;
    }
    printf("model package            %s (format version %d)\n", dir, HC_PACKAGE_VERSION);
    printf("max_history              %d\n", pkg.max_history);
    printf("max_item_tokens          %d\n", pkg.max_item_tokens);
    printf("max_prompt_tokens        %d\n", pkg.max_prompt_tokens);
    printf("title/description chars  %d / %d\n", pkg.title_max_chars, pkg.description_max_chars);
    printf("slot_token_id            %d\n", pkg.slot_token_id);
    printf("templates (bytes)        user_prompt %zu, prompt1 %zu, prompt2 %zu\n",
           strlen(pkg.user_prompt), strlen(pkg.prompt1), strlen(pkg.prompt2));
    printf("creative_eos_ids        ");
    for (int i = 0; i < pkg.n_eos; i++) printf(" %d", pkg.eos_ids[i]);
    printf("%s\n", pkg.n_eos ? "" : " (the creative tokenizer's)");
    printf("cluster                  %s, assign %s\n", pkg.centroids ? pkg.centroids : "(none)",
           hc_assign_rule_name(pkg.assign));
    if (pkg.sampling.greedy)
        printf("sampling                 greedy, max_new_tokens %d\n", pkg.max_new_tokens);
    else
        printf("sampling                 temperature %g, top_k %d, top_p %g, max_new_tokens %d\n",
               pkg.sampling.temperature, pkg.sampling.top_k, pkg.sampling.top_p,
               pkg.max_new_tokens);
    const char *dirs[3] = {pkg.item_llm_dir, pkg.user_llm_dir, pkg.creative_llm_dir};
    const char *names[3] = {"item_llm", "user_llm", "creative_llm"};
    for (int i = 0; i < 3 && !rc; i++) rc = print_config(dirs[i], names[i], &eb);
    if (!rc && pkg.centroids) {
        float *c = NULL;
        int k = 0, d = 0;
        rc = hc_centroids_load(&c, &k, &d, pkg.centroids, &eb);
        if (!rc) printf("\ncentroids                %d x %d\n", k, d);
        free(c);
    }
    if (rc) {
        fprintf(stderr, "hllm inspect: %s\n", eb.msg[0] ? eb.msg : hc_strerror(rc));
        hc_package_free(&pkg);
        return 1;
    }
    char *weights = strdup(pkg.weights);
    hc_package_free(&pkg);
    int ret = weights ? print_tensors(weights) : 1;
    free(weights);
    return ret;
}

int hc_cmd_inspect(int argc, char **argv) {
    static const struct option opts[] = {{"model", required_argument, 0, 'm'},
                                         {"no-load", no_argument, 0, 'n'},
                                         {"allow-outside-paths", no_argument, 0, 'o'},
                                         {"help", no_argument, 0, 'h'},
                                         {0, 0, 0, 0}};
    const char *model = NULL;
    int c, no_load = 0, allow_outside = 0;
    optind = 1;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case 'm': model = optarg; break;
        case 'n': no_load = 1; break;
        case 'o': allow_outside = 1; break;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
    }
    if (!model || optind < argc) {
        fprintf(stderr, "hllm inspect: --model DIR is required (see --help)\n");
        return 2;
    }
    int kind = hc_cli_model_kind(model, "inspect");
    if (kind < 0) return 1;
    if (kind == 1) {
        if (inspect_package(model, allow_outside)) return 1;
    } else {
        hc_errbuf eb = {{0}};
        int rc = print_config(model, NULL, &eb);
        if (rc) {
            fprintf(stderr, "hllm inspect: %s\n", eb.msg[0] ? eb.msg : hc_strerror(rc));
            return 1;
        }
        if (print_tensors(model)) return 1;
    }
    if (no_load) return 0;
    int rc = check_load(model, kind == 1, allow_outside);
    if (!rc) print_cpu_isa();
    return rc;
}
