/* test_hfconfig.c: real TinyLlama-1.1B and Qwen3-8B config.json files (MODEL_SPEC §1.1, §1.2)
 * parse to the expected hc_llm_config; transformers' defaults apply to absent keys; every
 * unsupported feature and wrong JSON type is rejected with the right code and a message naming
 * the field. Variants are made by editing the parsed JSON (jansson) and re-serialising it. */
#include "io/hfconfig.h"
#include "testutil.h"

#include <ftw.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static const char *k_tinyllama =
    "{\n"
    "  \"architectures\": [\"LlamaForCausalLM\"],\n"
    "  \"attention_bias\": false,\n"
    "  \"bos_token_id\": 1,\n"
    "  \"eos_token_id\": 2,\n"
    "  \"hidden_act\": \"silu\",\n"
    "  \"hidden_size\": 2048,\n"
    "  \"initializer_range\": 0.02,\n"
    "  \"intermediate_size\": 5632,\n"
    "  \"max_position_embeddings\": 2048,\n"
    "  \"model_type\": \"llama\",\n"
    "  \"num_attention_heads\": 32,\n"
    "  \"num_hidden_layers\": 22,\n"
    "  \"num_key_value_heads\": 4,\n"
    "  \"pretraining_tp\": 1,\n"
    "  \"rms_norm_eps\": 1e-05,\n"
    "  \"rope_scaling\": null,\n"
    "  \"rope_theta\": 10000.0,\n"
    "  \"tie_word_embeddings\": false,\n"
    "  \"torch_dtype\": \"bfloat16\",\n"
    "  \"transformers_version\": \"4.35.0\",\n"
    "  \"use_cache\": true,\n"
    "  \"vocab_size\": 32000\n"
    "}\n";

static const char *k_qwen3_8b =
    "{\n"
    "  \"architectures\": [\"Qwen3ForCausalLM\"],\n"
    "  \"attention_bias\": false,\n"
    "  \"attention_dropout\": 0.0,\n"
    "  \"bos_token_id\": 151643,\n"
    "  \"eos_token_id\": 151645,\n"
    "  \"head_dim\": 128,\n"
    "  \"hidden_act\": \"silu\",\n"
    "  \"hidden_size\": 4096,\n"
    "  \"initializer_range\": 0.02,\n"
    "  \"intermediate_size\": 12288,\n"
    "  \"max_position_embeddings\": 40960,\n"
    "  \"max_window_layers\": 36,\n"
    "  \"model_type\": \"qwen3\",\n"
    "  \"num_attention_heads\": 32,\n"
    "  \"num_hidden_layers\": 36,\n"
    "  \"num_key_value_heads\": 8,\n"
    "  \"rms_norm_eps\": 1e-06,\n"
    "  \"rope_scaling\": null,\n"
    "  \"rope_theta\": 1000000,\n"
    "  \"sliding_window\": null,\n"
    "  \"tie_word_embeddings\": false,\n"
    "  \"torch_dtype\": \"bfloat16\",\n"
    "  \"transformers_version\": \"4.51.0\",\n"
    "  \"use_cache\": true,\n"
    "  \"use_sliding_window\": false,\n"
    "  \"vocab_size\": 151936\n"
    "}\n";

/* Parses `base` with up to two edits: key -> value (JSON text), or value NULL to delete key. */
static int parse_edit2(hc_llm_config *cfg, const char *base, const char *k1, const char *v1,
                       const char *k2, const char *v2, hc_errbuf *eb) {
    json_t *root = json_loads(base, 0, NULL);
    CHECK(root != NULL);
    if (!root) return -100;
    const char *ks[2] = {k1, k2}, *vs[2] = {v1, v2};
    for (int i = 0; i < 2; i++) {
        if (!ks[i]) continue;
        if (!vs[i]) {
            json_object_del(root, ks[i]);
            continue;
        }
        json_t *v = json_loads(vs[i], JSON_DECODE_ANY, NULL);
        CHECKF(v != NULL, "bad test JSON %s", vs[i]);
        json_object_set_new(root, ks[i], v);
    }
    char *text = json_dumps(root, 0);
    json_decref(root);
    eb->msg[0] = 0;
    int rc = hc_hfconfig_parse(cfg, text, strlen(text), eb);
    free(text);
    return rc;
}

static int parse_edit(hc_llm_config *cfg, const char *base, const char *k, const char *v,
                      hc_errbuf *eb) {
    return parse_edit2(cfg, base, k, v, NULL, NULL, eb);
}

/* Edit must fail with `want` and a message containing `field`. */
static void expect_err(const char *base, const char *k1, const char *v1, const char *k2,
                       const char *v2, int want, const char *field, int line) {
    hc_llm_config cfg;
    hc_errbuf eb;
    int rc = parse_edit2(&cfg, base, k1, v1, k2, v2, &eb);
    CHECKF(rc == want, "line %d: %s=%s: got %s want %s (%s)", line, k1, v1 ? v1 : "(deleted)",
           hc_errname(rc), hc_errname(want), eb.msg);
    CHECKF(strstr(eb.msg, field) != NULL && strchr(eb.msg, '\n') == NULL,
           "line %d: '%s' not named in '%s'", line, field, eb.msg);
}
#define EXPECT_ERR(base, k, v, want, field) expect_err(base, k, v, NULL, NULL, want, field, __LINE__)
#define EXPECT_ERR2(base, k1, v1, k2, v2, want, field)                                            \
    expect_err(base, k1, v1, k2, v2, want, field, __LINE__)

static void test_tinyllama(void) {
    hc_llm_config c;
    hc_errbuf eb;
    CHECK_OK(hc_hfconfig_parse(&c, k_tinyllama, strlen(k_tinyllama), &eb));
    CHECK(c.arch == HC_ARCH_LLAMA);
    CHECK(strcmp(hc_arch_name(c.arch), "llama") == 0);
    CHECK(c.vocab_size == 32000);
    CHECK(c.hidden_size == 2048);
    CHECK(c.intermediate_size == 5632);
    CHECK(c.n_layers == 22);
    CHECK(c.n_heads == 32);
    CHECK(c.n_kv_heads == 4);
    CHECK(c.head_dim == 64);
    CHECK(c.rms_norm_eps == 1e-5f);
    CHECK(c.rope_theta == 10000.0);
    CHECK(c.max_position_embeddings == 2048);
    CHECK(c.tie_word_embeddings == 0);
    CHECK(c.qk_norm == 0);
    CHECK(c.bos_token_id == 1);
    CHECK(c.n_eos == 1 && c.eos_token_ids[0] == 2);
    CHECK(c.pad_token_id == -1);
    CHECK(c.torch_dtype == HC_DTYPE_BF16);
}

static void test_qwen3(void) {
    hc_llm_config c;
    hc_errbuf eb;
    CHECK_OK(hc_hfconfig_parse(&c, k_qwen3_8b, strlen(k_qwen3_8b), &eb));
    CHECK(c.arch == HC_ARCH_QWEN3);
    CHECK(strcmp(hc_arch_name(c.arch), "qwen3") == 0);
    CHECK(c.vocab_size == 151936);
    CHECK(c.hidden_size == 4096);
    CHECK(c.intermediate_size == 12288);
    CHECK(c.n_layers == 36);
    CHECK(c.n_heads == 32);
    CHECK(c.n_kv_heads == 8);
    CHECK(c.head_dim == 128);
    CHECK(c.rms_norm_eps == 1e-6f);
    CHECK(c.rope_theta == 1000000.0);
    CHECK(c.max_position_embeddings == 40960);
    CHECK(c.tie_word_embeddings == 0);
    CHECK(c.qk_norm == 1);
    CHECK(c.bos_token_id == 151643);
    CHECK(c.n_eos == 1 && c.eos_token_ids[0] == 151645);
    CHECK(c.pad_token_id == -1);
    CHECK(c.torch_dtype == HC_DTYPE_BF16);
}

static void test_defaults_and_variants(void) {
    hc_llm_config c;
    hc_errbuf eb;
    const char *L = k_tinyllama, *Q = k_qwen3_8b;

    /* num_key_value_heads absent or null -> num_attention_heads (Llama) */
    CHECK_OK(parse_edit(&c, L, "num_key_value_heads", NULL, &eb));
    CHECK(c.n_kv_heads == 32);
    CHECK_OK(parse_edit(&c, L, "num_key_value_heads", "null", &eb));
    CHECK(c.n_kv_heads == 32);
    /* Qwen3Config: absent -> 32 (signature default), null -> num_attention_heads */
    CHECK_OK(parse_edit2(&c, Q, "num_key_value_heads", NULL, "num_attention_heads", "64", &eb));
    CHECK(c.n_kv_heads == 32 && c.n_heads == 64);
    CHECK_OK(parse_edit2(&c, Q, "num_key_value_heads", "null", "num_attention_heads", "64", &eb));
    CHECK(c.n_kv_heads == 64);
    /* head_dim: explicit wins; Llama derives; Qwen3Config defaults to 128; null derives */
    CHECK_OK(parse_edit(&c, L, "head_dim", "128", &eb));
    CHECK(c.head_dim == 128);
    CHECK_OK(parse_edit(&c, L, "head_dim", "null", &eb));
    CHECK(c.head_dim == 64);
    CHECK_OK(parse_edit2(&c, Q, "head_dim", NULL, "hidden_size", "1024", &eb));
    CHECK(c.head_dim == 128);
    CHECK_OK(parse_edit2(&c, Q, "head_dim", "null", "hidden_size", "1024", &eb));
    CHECK(c.head_dim == 32);
    /* optional keys absent -> transformers defaults */
    CHECK_OK(parse_edit(&c, L, "rope_theta", NULL, &eb));
    CHECK(c.rope_theta == 10000.0);
    CHECK_OK(parse_edit(&c, L, "rms_norm_eps", NULL, &eb));
    CHECK(c.rms_norm_eps == 1e-6f);
    CHECK_OK(parse_edit(&c, L, "max_position_embeddings", NULL, &eb));
    CHECK(c.max_position_embeddings == 2048);
    CHECK_OK(parse_edit(&c, Q, "max_position_embeddings", NULL, &eb));
    CHECK(c.max_position_embeddings == 32768);
    CHECK_OK(parse_edit(&c, L, "tie_word_embeddings", NULL, &eb));
    CHECK(c.tie_word_embeddings == 0);
    CHECK_OK(parse_edit(&c, Q, "tie_word_embeddings", "true", &eb));
    CHECK(c.tie_word_embeddings == 1);
    CHECK_OK(parse_edit(&c, L, "torch_dtype", NULL, &eb));
    CHECK(c.torch_dtype == HC_DTYPE_F32);
    CHECK_OK(parse_edit(&c, L, "torch_dtype", "\"float16\"", &eb));
    CHECK(c.torch_dtype == HC_DTYPE_F16);
    CHECK_OK(parse_edit2(&c, L, "torch_dtype", NULL, "dtype", "\"float32\"", &eb));
    CHECK(c.torch_dtype == HC_DTYPE_F32);
    CHECK_OK(parse_edit(&c, L, "dtype", "\"float16\"", &eb)); /* "dtype" wins over torch_dtype */
    CHECK(c.torch_dtype == HC_DTYPE_F16);
    CHECK_OK(parse_edit(&c, L, "hidden_act", NULL, &eb));
    CHECK_OK(parse_edit(&c, L, "hidden_act", "\"swish\"", &eb));
    /* token ids: LlamaConfig defaults bos 1, eos 2; Qwen3Config none; null -> none */
    CHECK_OK(parse_edit2(&c, L, "bos_token_id", NULL, "eos_token_id", NULL, &eb));
    CHECK(c.bos_token_id == 1 && c.n_eos == 1 && c.eos_token_ids[0] == 2);
    CHECK_OK(parse_edit2(&c, Q, "bos_token_id", NULL, "eos_token_id", NULL, &eb));
    CHECK(c.bos_token_id == -1 && c.n_eos == 0);
    CHECK_OK(parse_edit2(&c, L, "bos_token_id", "null", "eos_token_id", "null", &eb));
    CHECK(c.bos_token_id == -1 && c.n_eos == 0);
    CHECK_OK(parse_edit2(&c, Q, "eos_token_id", "[151645, 151643]", "pad_token_id", "151643",
                         &eb));
    CHECK(c.n_eos == 2 && c.eos_token_ids[0] == 151645 && c.eos_token_ids[1] == 151643);
    CHECK(c.pad_token_id == 151643);
    CHECK_OK(parse_edit(&c, L, "pad_token_id", "-1", &eb)); /* old LLaMA conversions */
    CHECK(c.pad_token_id == -1);
    /* architectures absent: model_type decides */
    CHECK_OK(parse_edit(&c, Q, "architectures", NULL, &eb));
    CHECK(c.arch == HC_ARCH_QWEN3 && c.qk_norm == 1);
    CHECK_OK(parse_edit(&c, L, "architectures", NULL, &eb));
    CHECK(c.arch == HC_ARCH_LLAMA);
    CHECK_OK(parse_edit(&c, Q, "model_type", NULL, &eb));
    CHECK(c.arch == HC_ARCH_QWEN3);
    /* RoPE: the unscaled "default" type is accepted in both spellings */
    CHECK_OK(parse_edit(&c, L, "rope_scaling", "{\"rope_type\": \"default\"}", &eb));
    CHECK_OK(parse_edit2(&c, Q, "rope_theta", NULL, "rope_parameters",
                         "{\"rope_type\": \"default\", \"rope_theta\": 500000.0}", &eb));
    CHECK(c.rope_theta == 500000.0);
    CHECK_OK(parse_edit(&c, Q, "rope_parameters",
                        "{\"rope_type\": \"default\", \"rope_theta\": 1000000}", &eb));
    CHECK(c.rope_theta == 1000000.0);
    CHECK_OK(parse_edit(&c, Q, "use_sliding_window", NULL, &eb));
    CHECK_OK(parse_edit(&c, Q, "layer_types", "[\"full_attention\", \"full_attention\"]", &eb));
    CHECK_OK(parse_edit(&c, Q, "mlp_bias", "true", &eb)); /* Qwen3 ignores it, as transformers */
    CHECK_OK(parse_edit(&c, L, "use_sliding_window", "true", &eb)); /* Llama ignores it */
    CHECK(strcmp(hc_arch_name((hc_arch)99), "?") == 0);
}

static void test_errors(void) {
    const char *L = k_tinyllama, *Q = k_qwen3_8b;
    const int U = HC_ERR_UNSUPPORTED, F = HC_ERR_FORMAT;

    /* unsupported features */
    EXPECT_ERR(L, "rope_scaling", "{\"type\": \"linear\", \"factor\": 2.0}", U, "rope_scaling");
    EXPECT_ERR(L, "rope_scaling",
               "{\"rope_type\": \"llama3\", \"factor\": 8.0, \"original_max_position_embeddings\": "
               "8192}",
               U, "rope_scaling");
    EXPECT_ERR(Q, "rope_scaling", "{\"rope_type\": \"yarn\", \"factor\": 4.0}", U, "rope_scaling");
    EXPECT_ERR(Q, "rope_parameters", "{\"rope_type\": \"yarn\", \"rope_theta\": 1000000}", U,
               "rope_parameters");
    EXPECT_ERR(Q, "rope_scaling", "7", F, "rope_scaling");
    EXPECT_ERR(Q, "rope_parameters", "{\"rope_type\": \"default\", \"rope_theta\": 5}", F,
               "rope_theta");
    EXPECT_ERR(L, "hidden_act", "\"gelu\"", U, "hidden_act");
    EXPECT_ERR(Q, "hidden_act", "\"relu\"", U, "hidden_act");
    EXPECT_ERR(L, "attention_bias", "true", U, "attention_bias");
    EXPECT_ERR(Q, "attention_bias", "true", U, "attention_bias");
    EXPECT_ERR(L, "mlp_bias", "true", U, "mlp_bias");
    EXPECT_ERR(Q, "use_sliding_window", "true", U, "use_sliding_window");
    EXPECT_ERR(Q, "layer_types", "[\"full_attention\", \"sliding_attention\"]", U, "layer_types");
    EXPECT_ERR(L, "architectures", "[\"MistralForCausalLM\"]", U, "architectures");
    EXPECT_ERR(Q, "architectures", "[\"Qwen2ForCausalLM\"]", U, "architectures");
    EXPECT_ERR2(L, "architectures", NULL, "model_type", "\"mistral\"", U, "model_type");
    EXPECT_ERR(L, "model_type", "\"qwen3\"", U, "model_type");
    EXPECT_ERR2(L, "architectures", NULL, "model_type", NULL, F, "model_type");
    EXPECT_ERR(L, "num_key_value_heads", "5", U, "num_key_value_heads");
    EXPECT_ERR(L, "num_key_value_heads", "0", U, "num_key_value_heads");
    EXPECT_ERR(L, "hidden_size", "0", U, "hidden_size");
    EXPECT_ERR(L, "vocab_size", "-1", U, "vocab_size");
    EXPECT_ERR(L, "num_hidden_layers", "0", U, "num_hidden_layers");
    EXPECT_ERR(L, "num_attention_heads", "-4", U, "num_attention_heads");
    EXPECT_ERR(L, "intermediate_size", "0", U, "intermediate_size");
    EXPECT_ERR(Q, "head_dim", "0", U, "head_dim");
    EXPECT_ERR(Q, "head_dim", "127", U, "head_dim");
    EXPECT_ERR(L, "hidden_size", "2050", U, "hidden_size"); /* 2050 / 32 does not divide */
    EXPECT_ERR(L, "rms_norm_eps", "0", U, "rms_norm_eps");
    EXPECT_ERR(L, "rope_theta", "-1", U, "rope_theta");
    EXPECT_ERR(L, "max_position_embeddings", "0", U, "max_position_embeddings");
    EXPECT_ERR(L, "torch_dtype", "\"float64\"", U, "torch_dtype");
    EXPECT_ERR(L, "quantization_config", "{\"quant_method\": \"gptq\"}", U,
               "quantization_config");
    EXPECT_ERR(L, "eos_token_id", "[1,2,3,4,5,6,7,8,9]", U, "eos_token_id");
    EXPECT_ERR(L, "hidden_size", "3000000000", HC_ERR_RANGE, "hidden_size");

    /* wrong JSON types and missing required fields */
    EXPECT_ERR(L, "hidden_size", "\"64\"", F, "hidden_size");
    EXPECT_ERR(L, "vocab_size", "32000.0", F, "vocab_size");
    EXPECT_ERR(L, "num_hidden_layers", "true", F, "num_hidden_layers");
    EXPECT_ERR(L, "num_key_value_heads", "[4]", F, "num_key_value_heads");
    EXPECT_ERR(Q, "head_dim", "\"128\"", F, "head_dim");
    EXPECT_ERR(L, "rms_norm_eps", "\"1e-5\"", F, "rms_norm_eps");
    EXPECT_ERR(L, "rope_theta", "\"10000\"", F, "rope_theta");
    EXPECT_ERR(L, "max_position_embeddings", "2048.5", F, "max_position_embeddings");
    EXPECT_ERR(L, "tie_word_embeddings", "\"false\"", F, "tie_word_embeddings");
    EXPECT_ERR(L, "tie_word_embeddings", "0", F, "tie_word_embeddings");
    EXPECT_ERR(L, "attention_bias", "\"no\"", F, "attention_bias");
    EXPECT_ERR(Q, "use_sliding_window", "0", F, "use_sliding_window");
    EXPECT_ERR(L, "bos_token_id", "\"1\"", F, "bos_token_id");
    EXPECT_ERR(L, "eos_token_id", "\"2\"", F, "eos_token_id");
    EXPECT_ERR(L, "eos_token_id", "[2, \"3\"]", F, "eos_token_id");
    EXPECT_ERR(L, "pad_token_id", "1.5", F, "pad_token_id");
    EXPECT_ERR(L, "torch_dtype", "5", F, "torch_dtype");
    EXPECT_ERR(L, "hidden_act", "1", F, "hidden_act");
    EXPECT_ERR(L, "architectures", "\"LlamaForCausalLM\"", F, "architectures");
    EXPECT_ERR(L, "architectures", "[]", F, "architectures");
    EXPECT_ERR(L, "model_type", "3", F, "model_type");
    EXPECT_ERR(L, "vocab_size", NULL, F, "vocab_size");
    EXPECT_ERR(L, "hidden_size", "null", F, "hidden_size");
    EXPECT_ERR(Q, "intermediate_size", NULL, F, "intermediate_size");
    EXPECT_ERR(Q, "num_attention_heads", NULL, F, "num_attention_heads");
    EXPECT_ERR(Q, "num_hidden_layers", NULL, F, "num_hidden_layers");

    /* not JSON / not an object */
    hc_llm_config c;
    hc_errbuf eb;
    CHECK(hc_hfconfig_parse(&c, "{\"vocab_size\": ", 15, &eb) == F);
    CHECK(strstr(eb.msg, "JSON") != NULL);
    CHECK(hc_hfconfig_parse(&c, "[1]", 3, &eb) == F);
    CHECK(hc_hfconfig_parse(&c, "", 0, &eb) == F);
    CHECK(hc_hfconfig_parse(&c, k_tinyllama, strlen(k_tinyllama), NULL) == HC_OK);
    CHECK(hc_hfconfig_parse(&c, "[1]", 3, NULL) == F); /* NULL errbuf is allowed */
}

static int rm_cb(const char *p, const struct stat *sb, int flag, struct FTW *ftw) {
    (void)sb, (void)flag, (void)ftw;
    return remove(p);
}

static void test_load(void) {
    char dir[64] = "/tmp/hc_test_cfg_XXXXXX";
    if (!mkdtemp(dir)) {
        CHECK(0);
        return;
    }
    char p[128];
    snprintf(p, sizeof p, "%s/config.json", dir);
    FILE *f = fopen(p, "wb");
    CHECK(f != NULL);
    if (f) {
        fputs(k_qwen3_8b, f);
        fclose(f);
    }
    hc_llm_config c;
    hc_errbuf eb;
    CHECK_OK(hc_hfconfig_load(&c, dir, &eb));
    CHECK(c.arch == HC_ARCH_QWEN3 && c.n_layers == 36);
    CHECK_OK(hc_hfconfig_load(&c, p, &eb));
    CHECK(c.hidden_size == 4096);

    f = fopen(p, "wb");
    if (f) {
        fputs("{\"architectures\": [\"MistralForCausalLM\"]}", f);
        fclose(f);
    }
    CHECK(hc_hfconfig_load(&c, dir, &eb) == HC_ERR_UNSUPPORTED);
    CHECKF(strstr(eb.msg, p) != NULL && strstr(eb.msg, "architectures") != NULL, "%s", eb.msg);
    remove(p);
    CHECK(hc_hfconfig_load(&c, dir, &eb) == HC_ERR_NOTFOUND);
    CHECK(strstr(eb.msg, "config.json") != NULL);
    CHECK(hc_hfconfig_load(&c, "/nonexistent/config.json", &eb) == HC_ERR_NOTFOUND);
    nftw(dir, rm_cb, 8, FTW_DEPTH | FTW_PHYS);
}

int main(int argc, char **argv) {
    (void)argc, (void)argv;
    test_tinyllama();
    test_qwen3();
    test_defaults_and_variants();
    test_errors();
    test_load();
    return hc_test_finish("test_hfconfig");
}
