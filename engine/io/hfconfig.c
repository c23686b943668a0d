/* hfconfig.c: Hugging Face config.json -> hc_llm_config for Llama and Qwen3, with the defaults
 * transformers (4.51 .. 5.x) applies when a key is absent.
 *
 * Policy: the core sizes (vocab_size, hidden_size, intermediate_size, num_hidden_layers,
 * num_attention_heads) are required; every other key falls back to the default of the matching
 * transformers config class (LlamaConfig / Qwen3Config). An explicit JSON null means "unset" as
 * it does in Python. Anything that would change the math in a way the engine does not implement
 * is HC_ERR_UNSUPPORTED naming the key; a wrong JSON type is HC_ERR_FORMAT naming the key.
 */
#include "io/hfconfig.h"
#include "core/fileio.h"

#include <errno.h>
#include <jansson.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define HC_CFG_MAX_BYTES ((size_t)16 * 1024 * 1024)

const char *hc_arch_name(hc_arch a) {
    switch (a) {
    case HC_ARCH_LLAMA: return "llama";
    case HC_ARCH_QWEN3: return "qwen3";
    default: return "?";
    }
}

/* NULL when absent or JSON null. */
static json_t *cfg_get(json_t *root, const char *key) {
    json_t *v = json_object_get(root, key);
    return json_is_null(v) ? NULL : v;
}

/* Integer field: *out = value, or def when absent/null (required: absent is an error). Values
 * must be > 0 when `positive`. */
static int cfg_int(json_t *root, const char *key, int *out, int def, int required, int positive,
                   hc_errbuf *eb) {
    json_t *v = cfg_get(root, key);
    if (!v) {
        if (required)
            return hc_seterr(eb, HC_ERR_FORMAT, "config.json: required field '%s' is missing",
                             key);
        *out = def;
        return HC_OK;
    }
    if (!json_is_integer(v))
        return hc_seterr(eb, HC_ERR_FORMAT, "config.json: field '%s' must be an integer", key);
    json_int_t x = json_integer_value(v);
    if (positive && x <= 0)
        return hc_seterr(eb, HC_ERR_UNSUPPORTED, "config.json: field '%s' = %lld must be positive",
                         key, (long long)x);
    if (x > INT_MAX || x < INT_MIN)
        return hc_seterr(eb, HC_ERR_RANGE, "config.json: field '%s' = %lld is out of range", key,
                         (long long)x);
    *out = (int)x;
    return HC_OK;
}

static int cfg_bool(json_t *root, const char *key, int *out, int def, hc_errbuf *eb) {
    json_t *v = cfg_get(root, key);
    if (!v) {
        *out = def;
        return HC_OK;
    }
    if (!json_is_boolean(v))
        return hc_seterr(eb, HC_ERR_FORMAT, "config.json: field '%s' must be true or false", key);
    *out = json_is_true(v);
    return HC_OK;
}

/* A positive finite number (integer or real). *present reports whether the key was given. */
static int cfg_number(json_t *obj, const char *what, const char *key, double *out, int *present,
                      hc_errbuf *eb) {
    json_t *v = cfg_get(obj, key);
    *present = v != NULL;
    if (!v) return HC_OK;
    if (!json_is_number(v))
        return hc_seterr(eb, HC_ERR_FORMAT, "config.json: field '%s%s' must be a number", what,
                         key);
    double x = json_number_value(v);
    if (!(x > 0) || !isfinite(x))
        return hc_seterr(eb, HC_ERR_UNSUPPORTED, "config.json: field '%s%s' = %g must be positive",
                         what, key, x);
    *out = x;
    return HC_OK;
}

/* A token id: absent -> def, null -> -1; negative values (old conversions use -1) mean none. */
static int cfg_token(json_t *root, const char *key, int *out, int def, hc_errbuf *eb) {
    json_t *v = json_object_get(root, key);
    if (!v) {
        *out = def;
        return HC_OK;
    }
    if (json_is_null(v)) {
        *out = -1;
        return HC_OK;
    }
    if (!json_is_integer(v))
        return hc_seterr(eb, HC_ERR_FORMAT, "config.json: field '%s' must be an integer or null",
                         key);
    json_int_t x = json_integer_value(v);
    if (x > INT_MAX)
        return hc_seterr(eb, HC_ERR_RANGE, "config.json: field '%s' = %lld is out of range", key,
                         (long long)x);
    *out = x < 0 ? -1 : (int)x;
    return HC_OK;
}

static int cfg_eos(hc_llm_config *cfg, json_t *root, int def, hc_errbuf *eb) {
    json_t *v = json_object_get(root, "eos_token_id");
    cfg->n_eos = 0;
    if (!v) {
        if (def >= 0) cfg->eos_token_ids[cfg->n_eos++] = def;
        return HC_OK;
    }
    if (json_is_null(v)) return HC_OK;
    if (json_is_integer(v)) {
        json_int_t x = json_integer_value(v);
        if (x > INT_MAX)
            return hc_seterr(eb, HC_ERR_RANGE, "config.json: field 'eos_token_id' out of range");
        if (x >= 0) cfg->eos_token_ids[cfg->n_eos++] = (int)x;
        return HC_OK;
    }
    if (!json_is_array(v))
        return hc_seterr(eb, HC_ERR_FORMAT,
                         "config.json: field 'eos_token_id' must be an integer, a list of "
                         "integers or null");
    if (json_array_size(v) > HC_MAX_EOS)
        return hc_seterr(eb, HC_ERR_UNSUPPORTED,
                         "config.json: field 'eos_token_id' lists %zu ids (at most %d)",
                         json_array_size(v), HC_MAX_EOS);
    size_t i;
    json_t *e;
    json_array_foreach(v, i, e) {
        if (!json_is_integer(e) || json_integer_value(e) < 0 || json_integer_value(e) > INT_MAX)
            return hc_seterr(eb, HC_ERR_FORMAT,
                             "config.json: field 'eos_token_id'[%zu] must be a non-negative "
                             "integer",
                             i);
        cfg->eos_token_ids[cfg->n_eos++] = (int)json_integer_value(e);
    }
    return HC_OK;
}

/* rope_scaling / rope_parameters: only the "default" (unscaled) RoPE is implemented. */
static int cfg_rope_type_default(json_t *obj, const char *key, hc_errbuf *eb) {
    if (!json_is_object(obj))
        return hc_seterr(eb, HC_ERR_FORMAT, "config.json: field '%s' must be an object or null",
                         key);
    json_t *t = json_object_get(obj, "rope_type");
    if (!t) t = json_object_get(obj, "type"); /* older spelling */
    const char *s = json_string_value(t);
    if (!s || strcmp(s, "default") != 0)
        return hc_seterr(eb, HC_ERR_UNSUPPORTED,
                         "config.json: field '%s' with rope_type '%s' is not supported (only "
                         "unscaled RoPE)",
                         key, s ? s : "(missing)");
    return HC_OK;
}

static int cfg_dtype(hc_llm_config *cfg, json_t *root, hc_errbuf *eb) {
    const char *key = "dtype"; /* transformers >= 4.56 writes "dtype", older "torch_dtype" */
    json_t *v = cfg_get(root, key);
    if (!v) {
        key = "torch_dtype";
        v = cfg_get(root, key);
    }
    cfg->torch_dtype = HC_DTYPE_F32;
    if (!v) return HC_OK;
    const char *s = json_string_value(v);
    if (!s) return hc_seterr(eb, HC_ERR_FORMAT, "config.json: field '%s' must be a string", key);
    if (strcmp(s, "float32") == 0)
        cfg->torch_dtype = HC_DTYPE_F32;
    else if (strcmp(s, "bfloat16") == 0)
        cfg->torch_dtype = HC_DTYPE_BF16;
    else if (strcmp(s, "float16") == 0)
        cfg->torch_dtype = HC_DTYPE_F16;
    else
        return hc_seterr(eb, HC_ERR_UNSUPPORTED, "config.json: field '%s' = '%s' is not supported",
                         key, s);
    return HC_OK;
}

static int cfg_arch(hc_llm_config *cfg, json_t *root, hc_errbuf *eb) {
    json_t *archs = cfg_get(root, "architectures");
    json_t *mt = cfg_get(root, "model_type");
    if (mt && !json_is_string(mt))
        return hc_seterr(eb, HC_ERR_FORMAT, "config.json: field 'model_type' must be a string");
    const char *model_type = json_string_value(mt);
    if (archs) {
        if (!json_is_array(archs) || json_array_size(archs) == 0 ||
            !json_is_string(json_array_get(archs, 0)))
            return hc_seterr(eb, HC_ERR_FORMAT,
                             "config.json: field 'architectures' must be a non-empty list of "
                             "strings");
        const char *a = json_string_value(json_array_get(archs, 0));
        if (strcmp(a, "LlamaForCausalLM") == 0)
            cfg->arch = HC_ARCH_LLAMA;
        else if (strcmp(a, "Qwen3ForCausalLM") == 0)
            cfg->arch = HC_ARCH_QWEN3;
        else
            return hc_seterr(eb, HC_ERR_UNSUPPORTED,
                             "config.json: field 'architectures' = '%s' is not supported (only "
                             "LlamaForCausalLM, Qwen3ForCausalLM)",
                             a);
        /* model_type picks the transformers config class (and so the defaults): must agree. */
        if (model_type && strcmp(model_type, hc_arch_name(cfg->arch)) != 0)
            return hc_seterr(eb, HC_ERR_UNSUPPORTED,
                             "config.json: field 'model_type' = '%s' does not match "
                             "architectures '%s'",
                             model_type, a);
        return HC_OK;
    }
    if (!model_type)
        return hc_seterr(eb, HC_ERR_FORMAT,
                         "config.json: neither 'architectures' nor 'model_type' is given");
    if (strcmp(model_type, "llama") == 0)
        cfg->arch = HC_ARCH_LLAMA;
    else if (strcmp(model_type, "qwen3") == 0)
        cfg->arch = HC_ARCH_QWEN3;
    else
        return hc_seterr(eb, HC_ERR_UNSUPPORTED,
                         "config.json: field 'model_type' = '%s' is not supported (only llama, "
                         "qwen3)",
                         model_type);
    return HC_OK;
}

/* Keys whose non-default values the engine does not implement. */
static int cfg_unsupported(const hc_llm_config *cfg, json_t *root, hc_errbuf *eb) {
    int rc, b = 0;
    json_t *act = cfg_get(root, "hidden_act");
    if (act) {
        const char *s = json_string_value(act);
        if (!s)
            return hc_seterr(eb, HC_ERR_FORMAT, "config.json: field 'hidden_act' must be a string");
        /* transformers maps both names to SiLU */
        if (strcmp(s, "silu") != 0 && strcmp(s, "swish") != 0)
            return hc_seterr(eb, HC_ERR_UNSUPPORTED,
                             "config.json: field 'hidden_act' = '%s' is not supported (only silu)",
                             s);
    }
    if ((rc = cfg_bool(root, "attention_bias", &b, 0, eb))) return rc;
    if (b)
        return hc_seterr(eb, HC_ERR_UNSUPPORTED,
                         "config.json: field 'attention_bias' = true is not supported");
    /* Qwen3's MLP never has a bias (transformers ignores the key there). */
    if (cfg->arch == HC_ARCH_LLAMA) {
        if ((rc = cfg_bool(root, "mlp_bias", &b, 0, eb))) return rc;
        if (b)
            return hc_seterr(eb, HC_ERR_UNSUPPORTED,
                             "config.json: field 'mlp_bias' = true is not supported");
    }
    if (cfg->arch == HC_ARCH_QWEN3) {
        if ((rc = cfg_bool(root, "use_sliding_window", &b, 0, eb))) return rc;
        if (b)
            return hc_seterr(eb, HC_ERR_UNSUPPORTED,
                             "config.json: field 'use_sliding_window' = true is not supported");
    }
    json_t *lt = cfg_get(root, "layer_types"); /* transformers >= 4.54 */
    if (lt) {
        if (!json_is_array(lt))
            return hc_seterr(eb, HC_ERR_FORMAT, "config.json: field 'layer_types' must be a list");
        size_t i;
        json_t *e;
        json_array_foreach(lt, i, e) {
            const char *s = json_string_value(e);
            if (!s || strcmp(s, "full_attention") != 0)
                return hc_seterr(eb, HC_ERR_UNSUPPORTED,
                                 "config.json: field 'layer_types'[%zu] = '%s' is not supported "
                                 "(only full_attention)",
                                 i, s ? s : "(non-string)");
        }
    }
    if (cfg_get(root, "quantization_config"))
        return hc_seterr(eb, HC_ERR_UNSUPPORTED,
                         "config.json: field 'quantization_config': quantized checkpoints are not "
                         "supported");
    return HC_OK;
}

int hc_hfconfig_parse(hc_llm_config *cfg, const char *json, size_t len, hc_errbuf *eb) {
    if (!cfg || (!json && len)) return hc_seterr(eb, HC_ERR_INVAL, "hc_hfconfig_parse: NULL");
    memset(cfg, 0, sizeof *cfg);
    json_error_t jerr;
    json_t *root = json_loadb(json ? json : "", len, 0, &jerr);
    if (!root) return hc_json_seterr(eb, HC_ERR_FORMAT, "config.json", &jerr);
    int rc = HC_OK;
    if (!json_is_object(root)) {
        rc = hc_seterr(eb, HC_ERR_FORMAT, "config.json: not a JSON object");
        goto done;
    }
    if ((rc = cfg_arch(cfg, root, eb))) goto done;
    const int qwen = cfg->arch == HC_ARCH_QWEN3;

    if ((rc = cfg_int(root, "vocab_size", &cfg->vocab_size, 0, 1, 1, eb))) goto done;
    if ((rc = cfg_int(root, "hidden_size", &cfg->hidden_size, 0, 1, 1, eb))) goto done;
    if ((rc = cfg_int(root, "intermediate_size", &cfg->intermediate_size, 0, 1, 1, eb))) goto done;
    if ((rc = cfg_int(root, "num_hidden_layers", &cfg->n_layers, 0, 1, 1, eb))) goto done;
    if ((rc = cfg_int(root, "num_attention_heads", &cfg->n_heads, 0, 1, 1, eb))) goto done;
    /* Qwen3Config's signature default is 32; an explicit null falls back to n_heads (both). */
    int kv_def = qwen && !json_object_get(root, "num_key_value_heads") ? 32 : cfg->n_heads;
    if ((rc = cfg_int(root, "num_key_value_heads", &cfg->n_kv_heads, kv_def, 0, 1, eb))) goto done;
    if (cfg->n_heads % cfg->n_kv_heads != 0) {
        rc = hc_seterr(eb, HC_ERR_UNSUPPORTED,
                       "config.json: num_attention_heads %d is not a multiple of "
                       "num_key_value_heads %d",
                       cfg->n_heads, cfg->n_kv_heads);
        goto done;
    }

    /* head_dim: LlamaConfig derives it when absent/null; Qwen3Config defaults to 128 when the
     * key is absent (an explicit null is derived, as in Llama). */
    if (cfg_get(root, "head_dim") || (qwen && !json_object_get(root, "head_dim"))) {
        if ((rc = cfg_int(root, "head_dim", &cfg->head_dim, 128, 0, 1, eb))) goto done;
    } else {
        if (cfg->hidden_size % cfg->n_heads != 0) {
            rc = hc_seterr(eb, HC_ERR_UNSUPPORTED,
                           "config.json: head_dim not given and hidden_size %d is not divisible "
                           "by num_attention_heads %d",
                           cfg->hidden_size, cfg->n_heads);
            goto done;
        }
        cfg->head_dim = cfg->hidden_size / cfg->n_heads;
    }
    if (cfg->head_dim % 2 != 0) {
        rc = hc_seterr(eb, HC_ERR_UNSUPPORTED, "config.json: head_dim %d must be even for RoPE",
                       cfg->head_dim);
        goto done;
    }

    double eps = 1e-6; /* LlamaConfig and Qwen3Config default */
    int present;
    if ((rc = cfg_number(root, "", "rms_norm_eps", &eps, &present, eb))) goto done;
    cfg->rms_norm_eps = (float)eps;

    /* RoPE: top-level rope_theta (<= 4.x) and/or rope_parameters (5.x); rope_scaling must be
     * null or the unscaled "default" type. */
    double theta = 10000.0, theta_p = 0;
    int have_theta, have_theta_p = 0;
    if ((rc = cfg_number(root, "", "rope_theta", &theta, &have_theta, eb))) goto done;
    json_t *rs = cfg_get(root, "rope_scaling");
    if (rs && (rc = cfg_rope_type_default(rs, "rope_scaling", eb))) goto done;
    json_t *rp = cfg_get(root, "rope_parameters");
    if (rp) {
        if ((rc = cfg_rope_type_default(rp, "rope_parameters", eb))) goto done;
        if ((rc = cfg_number(rp, "rope_parameters.", "rope_theta", &theta_p, &have_theta_p, eb)))
            goto done;
    }
    if (have_theta_p) {
        if (have_theta && theta != theta_p) {
            rc = hc_seterr(eb, HC_ERR_FORMAT,
                           "config.json: rope_theta %g disagrees with rope_parameters.rope_theta "
                           "%g",
                           theta, theta_p);
            goto done;
        }
        theta = theta_p;
    }
    cfg->rope_theta = theta;

    if ((rc = cfg_int(root, "max_position_embeddings", &cfg->max_position_embeddings,
                      qwen ? 32768 : 2048, 0, 1, eb)))
        goto done;
    if ((rc = cfg_bool(root, "tie_word_embeddings", &cfg->tie_word_embeddings, 0, eb))) goto done;
    cfg->qk_norm = qwen;

    /* LlamaConfig defaults bos 1 / eos 2 / pad None; Qwen3Config leaves all three unset. */
    if ((rc = cfg_token(root, "bos_token_id", &cfg->bos_token_id, qwen ? -1 : 1, eb))) goto done;
    if ((rc = cfg_token(root, "pad_token_id", &cfg->pad_token_id, -1, eb))) goto done;
    if ((rc = cfg_eos(cfg, root, qwen ? -1 : 2, eb))) goto done;
    if ((rc = cfg_dtype(cfg, root, eb))) goto done;
    if ((rc = cfg_unsupported(cfg, root, eb))) goto done;
done:
    json_decref(root);
    return rc;
}

int hc_hfconfig_load(hc_llm_config *cfg, const char *path, hc_errbuf *eb) {
    return hc_hfconfig_load_in(cfg, path, NULL, eb);
}

int hc_hfconfig_load_in(hc_llm_config *cfg, const char *path, const char *fs_root, hc_errbuf *eb) {
    if (!cfg || !path) return hc_seterr(eb, HC_ERR_INVAL, "hc_hfconfig_load: NULL argument");
    struct stat sb;
    char *file = NULL;
    if (stat(path, &sb) == 0 && S_ISDIR(sb.st_mode)) {
        size_t n = strlen(path);
        file = malloc(n + sizeof "/config.json");
        if (!file) return hc_seterr(eb, HC_ERR_NOMEM, "%s: out of memory", path);
        memcpy(file, path, n);
        memcpy(file + n, "/config.json", sizeof "/config.json");
    }
    const char *p = file ? file : path;
    char *buf = NULL;
    size_t n = 0;
    int rc = hc_read_file_in(p, fs_root, HC_CFG_MAX_BYTES, &buf, &n, eb);
    if (rc) goto done;
    hc_errbuf inner;
    inner.msg[0] = 0;
    rc = hc_hfconfig_parse(cfg, buf, n, &inner);
    if (rc) {
        /* Replace the generic "config.json:" prefix with the actual path. */
        const char *m = inner.msg;
        if (strncmp(m, "config.json: ", 13) == 0) m += 13;
        rc = hc_seterr(eb, rc, "%s: %s", p, m);
    }
done:
    free(buf);
    free(file);
    return rc;
}
