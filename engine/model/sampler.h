/* sampler.h: next-token selection, reproducible per request.
 *
 * Order and semantics follow transformers' logits processors for do_sample=True:
 * temperature (logits / T), then top-k (keep the k largest; ties with the k-th value are kept),
 * then top-p (sort ascending, drop tokens whose cumulative probability is <= 1 - top_p, always
 * keeping the most likely one), then softmax and a multinomial draw. greedy (or temperature 0)
 * is argmax, first index on ties, as torch.argmax.
 * Randomness is counter-based: draw i of a request is a pure function of (seed, i) (two rounds of
 * the splitmix64 finalizer), so the same seed and logits give the same tokens on every run and
 * platform whatever the batching or step order (not the same stream as torch), and a device
 * backend can reproduce it without carrying generator state.
 *
 * Thread-safety: one sampler per request; none shared.
 */
#ifndef HC_SAMPLER_H
#define HC_SAMPLER_H

#include <stdint.h>

#include "core/error.h"

typedef struct hc_sampler_params {
    int greedy;        /* 1: argmax, the other fields are ignored */
    float temperature; /* > 0; 0 means greedy */
    int top_k;         /* 0 = off */
    float top_p;       /* 1.0 = off; (0, 1] */
    uint64_t seed;
} hc_sampler_params;

static inline hc_sampler_params hc_sampler_greedy(void) {
    hc_sampler_params p = {1, 1.0f, 0, 1.0f, 0};
    return p;
}

typedef struct hc_sampler {
    hc_sampler_params p;
    int vocab;
    uint64_t n_drawn; /* draws so far: the counter of the next one */
    int32_t *idx;    /* (vocab) scratch */
    float *val;      /* (vocab) scratch */
} hc_sampler;

/* Validates params for a vocabulary of `vocab` (clear message in eb); allocates nothing. */
int hc_sampler_check(const hc_sampler_params *p, int vocab, hc_errbuf *eb);
/* Draw number `draw` of a request: a token from logits (n floats, not modified). idx and val are
 * caller scratch of n elements each. Stateless: equal arguments give equal tokens. */
int32_t hc_sample_logits(const hc_sampler_params *p, uint64_t draw, const float *logits, int n,
                         int32_t *idx, float *val);
/* The uniform double in [0, 1) of draw i of a request seeded with `seed`. */
double hc_sample_uniform(uint64_t seed, uint64_t i);

/* Validates params (clear message in eb) and allocates scratch for `vocab` logits. */
int hc_sampler_init(hc_sampler *s, const hc_sampler_params *p, int vocab, hc_errbuf *eb);
void hc_sampler_free(hc_sampler *s);
/* Picks a token from logits (vocab floats, not modified). */
int32_t hc_sampler_sample(hc_sampler *s, const float *logits);
/* Uniform double in [0, 1) from the sampler's stream (exposed for tests). */
double hc_sampler_uniform(hc_sampler *s);

#endif
