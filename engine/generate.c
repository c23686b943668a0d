/* generate.c: prefill + batched decode loop (see generate.h). */
#include "generate.h"

#include <stdlib.h>
#include <string.h>

#define HC_GEN_BLOCK 16

static int is_stop(const hc_gen_seq *s, int32_t tok) {
    for (int i = 0; i < s->n_stop; i++)
        if (s->stop[i] == tok) return 1;
    return 0;
}

int hc_generate(hc_llm *m, hc_kv_cache *kv, hc_gen_seq *seqs, int n, hc_gen_token_cb cb,
                void *user, hc_errbuf *eb) {
    if (n <= 0) return hc_seterr(eb, HC_ERR_INVAL, "no sequences to generate");
    const int V = m->cfg.vocab_size, E = m->cfg.hidden_size;
    int total_prompt = 0, total_blocks = 0;
    for (int i = 0; i < n; i++) {
        hc_gen_seq *s = &seqs[i];
        if (s->n_prompt < 1 || !s->prompt)
            return hc_seterr(eb, HC_ERR_INVAL, "sequence %d: empty prompt", i);
        if (s->max_new < 0) return hc_seterr(eb, HC_ERR_INVAL, "sequence %d: max_new < 0", i);
        if (s->max_new > 0 && !s->out)
            return hc_seterr(eb, HC_ERR_INVAL, "sequence %d: no output buffer", i);
        s->n_out = 0;
        s->finish = HC_FINISH_NONE;
        /* Generated tokens continue after the last prompt position; the whole sequence must fit
         * the model's context (nothing beyond max_position_embeddings was trained, and a
         * runaway max_new would otherwise run for hours at quadratic cost). */
        const int64_t last = s->pos ? s->pos[s->n_prompt - 1] : s->n_prompt - 1;
        const int max_pos = m->cfg.max_position_embeddings;
        if (max_pos > 0 && last + 1 + (int64_t)s->max_new > max_pos)
            return hc_seterr(eb, HC_ERR_RANGE, "sequence %d: prompt of %d tokens + max_new %d "
                             "exceeds the model's max_position_embeddings %d", i, s->n_prompt,
                             s->max_new, max_pos);
        int64_t blocks = ((int64_t)s->n_prompt + s->max_new + HC_GEN_BLOCK - 1) / HC_GEN_BLOCK;
        if ((int64_t)total_prompt + s->n_prompt > INT32_MAX / 2 ||
            (int64_t)total_blocks + blocks > INT32_MAX / 2)
            return hc_seterr(eb, HC_ERR_RANGE, "sequence %d: prompt + max_new too large", i);
        total_prompt += s->n_prompt;
        total_blocks += (int)blocks;
    }
    int rc = HC_OK;
    hc_kv_cache *own_kv = NULL;
    if (!kv) {
        rc = hc_llm_kv_create(m, &own_kv, HC_GEN_BLOCK, total_blocks);
        if (rc) return hc_seterr(eb, rc, "allocating a KV cache of %d blocks", total_blocks);
        kv = own_kv;
    }
    int *seq_ids = malloc((size_t)n * sizeof *seq_ids), *dseq = malloc((size_t)n * sizeof *dseq);
    int *active = malloc((size_t)n * sizeof *active);
    int32_t *next_pos = malloc((size_t)n * sizeof *next_pos);
    hc_sampler *samplers = calloc((size_t)n, sizeof *samplers);
    int cap = total_prompt > n ? total_prompt : n;
    int32_t *tok = malloc((size_t)cap * sizeof *tok), *pos = malloc((size_t)cap * sizeof *pos);
    int32_t *seg = malloc((size_t)cap * sizeof *seg), *out_idx = malloc((size_t)n * sizeof *out_idx);
    int n_inj = 0;
    for (int i = 0; i < n; i++) n_inj += seqs[i].n_inject > 0 ? seqs[i].n_inject : 0;
    int32_t *inj_idx = malloc((size_t)(n_inj ? n_inj : 1) * sizeof *inj_idx);
    float *inj = malloc((size_t)(n_inj ? n_inj : 1) * (size_t)E * sizeof *inj);
    float *logits = malloc((size_t)n * (size_t)V * sizeof *logits);
    int n_open = 0;
    if (!seq_ids || !dseq || !active || !next_pos || !samplers || !tok || !pos || !seg || !out_idx ||
        !inj_idx || !inj || !logits) {
        rc = hc_seterr(eb, HC_ERR_NOMEM, "generation buffers");
        goto done;
    }
    for (int i = 0; i < n; i++) {
        rc = hc_sampler_init(&samplers[i], &seqs[i].sampling, V, eb);
        if (rc) goto done;
    }
    for (; n_open < n; n_open++) {
        rc = hc_kv_seq_new(kv, &seq_ids[n_open]);
        if (rc) {
            hc_seterr(eb, rc, "opening KV sequence");
            goto done;
        }
    }
    /* prefill: one packed batch, one segment per sequence */
    int t = 0, k = 0;
    for (int i = 0; i < n; i++) {
        const hc_gen_seq *s = &seqs[i];
        if (s->n_inject > 0 && (!s->inject_idx || !s->inject)) {
            rc = hc_seterr(eb, HC_ERR_INVAL, "sequence %d: injected vectors missing", i);
            goto done;
        }
        for (int j = 0; j < s->n_inject; j++, k++) {
            if (s->inject_idx[j] < 0 || s->inject_idx[j] >= s->n_prompt) {
                rc = hc_seterr(eb, HC_ERR_RANGE, "sequence %d: injection at %d outside the prompt",
                               i, s->inject_idx[j]);
                goto done;
            }
            inj_idx[k] = t + s->inject_idx[j];
            memcpy(inj + (size_t)k * E, s->inject + (size_t)j * E, (size_t)E * sizeof *inj);
        }
        for (int j = 0; j < s->n_prompt; j++, t++) {
            tok[t] = s->prompt[j];
            pos[t] = s->pos ? s->pos[j] : j;
            seg[t] = i;
        }
        out_idx[i] = t - 1;
        next_pos[i] = pos[t - 1] + 1;
    }
    hc_batch b = {.n_tokens = total_prompt, .token = tok, .n_inject = n_inj, .inject_idx = inj_idx,
                  .inject = inj, .pos = pos, .seg = seg, .n_out = n, .out_idx = out_idx};
    rc = hc_llm_forward(m, &b, kv, seq_ids, NULL, logits, eb);
    if (rc) goto done;
    int n_active = 0;
    for (int i = 0; i < n; i++) active[n_active++] = i;
    for (;;) {
        /* sample for every active sequence from its row of logits */
        int still = 0;
        for (int a = 0; a < n_active; a++) {
            int i = active[a];
            hc_gen_seq *s = &seqs[i];
            if (s->max_new == 0) {
                s->finish = HC_FINISH_LENGTH;
                continue;
            }
            int32_t nt = hc_sampler_sample(&samplers[i], logits + (size_t)a * V);
            s->out[s->n_out++] = nt;
            if (cb) cb(user, i, nt);
            if (is_stop(s, nt)) s->finish = HC_FINISH_STOP;
            else if (s->n_out >= s->max_new) s->finish = HC_FINISH_LENGTH;
            else active[still++] = i;
        }
        n_active = still;
        if (n_active == 0) break;
        for (int a = 0; a < n_active; a++) {
            int i = active[a];
            tok[a] = seqs[i].out[seqs[i].n_out - 1];
            pos[a] = next_pos[i]++;
            seg[a] = a;
            out_idx[a] = a;
            dseq[a] = seq_ids[i];
        }
        hc_batch d = {.n_tokens = n_active, .token = tok, .pos = pos, .seg = seg,
                      .n_out = n_active, .out_idx = out_idx};
        rc = hc_llm_forward(m, &d, kv, dseq, NULL, logits, eb);
        if (rc) goto done;
    }
done:
    for (int i = 0; i < n_open; i++) hc_kv_seq_free(kv, seq_ids[i]);
    if (samplers)
        for (int i = 0; i < n; i++) hc_sampler_free(&samplers[i]);
    hc_kv_free(own_kv);
    free(seq_ids);
    free(dseq);
    free(active);
    free(next_pos);
    free(samplers);
    free(tok);
    free(pos);
    free(seg);
    free(out_idx);
    free(inj_idx);
    free(inj);
    free(logits);
    return rc;
}
