/* generate.c: hc_generate, a closed loop over the scheduler (see generate.h and lm_sched.h). */
#include "model/generate.h"

#include <stdlib.h>
#include <string.h>

#define HC_GEN_BLOCK 16

typedef struct gen_ctx {
    hc_gen_seq *seqs;
    hc_gen_token_cb cb;
    void *user;
    int failed;
} gen_ctx;

static void gen_sink(void *user, const hc_lm_event *ev) {
    gen_ctx *g = user;
    hc_gen_seq *s = &g->seqs[ev->id];
    if (ev->kind == HC_LM_EV_TOKEN) {
        s->out[s->n_out++] = ev->token;
        if (g->cb) g->cb(g->user, (int)ev->id, ev->token);
    } else if (ev->kind == HC_LM_EV_FINISHED) {
        s->finish = ev->finish;
    } else {
        g->failed = 1;
    }
}

int hc_generate(hc_llm *m, hc_kv_cache *kv, hc_gen_seq *seqs, int n, hc_gen_token_cb cb,
                void *user, hc_errbuf *eb) {
    if (n <= 0) return hc_seterr(eb, HC_ERR_INVAL, "no sequences to generate");
    hc_lm_sched_params p = hc_lm_sched_default_params();
    int64_t total_prompt = 0, total_blocks = 0;
    int max_prompt = 1, max_new = 0, max_inject = 0;
    for (int i = 0; i < n; i++) {
        hc_gen_seq *s = &seqs[i];
        if (s->n_prompt < 1 || !s->prompt)
            return hc_seterr(eb, HC_ERR_INVAL, "sequence %d: empty prompt", i);
        if (s->max_new < 0) return hc_seterr(eb, HC_ERR_INVAL, "sequence %d: max_new < 0", i);
        if (s->max_new > 0 && !s->out)
            return hc_seterr(eb, HC_ERR_INVAL, "sequence %d: no output buffer", i);
        if (s->n_inject > 0 && (!s->inject_idx || !s->inject))
            return hc_seterr(eb, HC_ERR_INVAL, "sequence %d: injected vectors missing", i);
        s->n_out = 0;
        s->finish = HC_FINISH_NONE;
        total_prompt += s->n_prompt;
        total_blocks += ((int64_t)s->n_prompt + s->max_new + HC_GEN_BLOCK - 1) / HC_GEN_BLOCK;
        if (s->n_prompt > max_prompt) max_prompt = s->n_prompt;
        if (s->max_new > max_new) max_new = s->max_new;
        if (s->n_inject > max_inject) max_inject = s->n_inject;
    }
    if (total_prompt + n > INT32_MAX / 2 || total_blocks > INT32_MAX / 2)
        return hc_seterr(eb, HC_ERR_RANGE, "prompts + max_new too large");
    /* one forward prefills every prompt, then each step decodes every unfinished sequence */
    p.max_running = n;
    p.max_queued = n;
    p.step_tokens = (int)total_prompt + n;
    p.prefill_chunk = max_prompt;
    p.block_size = HC_GEN_BLOCK;
    p.kv_blocks = kv ? 0 : (int)total_blocks;
    p.max_prompt = 0; /* the model's max_position_embeddings */
    p.max_new = max_new;
    p.max_inject = max_inject;
    p.max_prefixes = 0;
    hc_lm_sched *sch = NULL;
    int rc = hc_lm_sched_create(&sch, m, kv, &p, eb);
    if (rc) return rc;
    for (int i = 0; i < n && rc == HC_OK; i++) {
        const hc_gen_seq *s = &seqs[i];
        hc_lm_req r = {.id = (uint64_t)i, .prompt = s->prompt, .n_prompt = s->n_prompt,
                       .pos = s->pos, .n_inject = s->n_inject, .inject_idx = s->inject_idx,
                       .inject = s->inject, .sampling = s->sampling, .max_new = s->max_new,
                       .stop = s->stop, .n_stop = s->n_stop};
        hc_errbuf e1 = {{0}};
        rc = hc_lm_sched_submit(sch, &r, &e1);
        if (rc) {
            rc = hc_seterr(eb, rc == HC_ERR_AGAIN ? HC_ERR_NOMEM : rc, "sequence %d: %s", i,
                           e1.msg[0] ? e1.msg : hc_strerror(rc));
        }
    }
    gen_ctx g = {seqs, cb, user, 0};
    while (rc == HC_OK && !hc_lm_sched_idle(sch)) rc = hc_lm_sched_step(sch, gen_sink, &g, eb);
    if (rc == HC_OK && g.failed) rc = hc_seterr(eb, HC_ERR_BACKEND, "generation failed");
    hc_lm_sched_free(sch);
    return rc;
}
