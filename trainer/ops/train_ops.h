/* Per-op forward/backward pairs of the trainer (llm.c manner, no generic autograd), f32, row-major.
 * A backend supplies one hc_train_ops table; tests/unit/test_train_ops.c checks every backward of a
 * table against central finite differences of its own forward, so another backend (CUDA) that
 * fills the same table inherits the checks. Backward functions ACCUMULATE (+=) into parameter
 * gradients (dW, db, dE, dgamma, ...) and into input gradients unless noted. See docs/TRAINING.md
 * "Backward ops" for what each forward saves. */
#ifndef HC_TRAIN_OPS_H
#define HC_TRAIN_OPS_H

#include <stdint.h>

typedef struct hc_train_ops {
    const char *name;
    /* Y(T,O) = X(T,I) W(O,I)^T (+ b(O), b may be NULL). */
    void (*matmul_fwd)(float *y, const float *x, const float *w, const float *b, int T, int I, int O);
    /* dx += dY W; dw += dY^T X; db += sum_t dY (db may be NULL). dx may be NULL. */
    void (*matmul_bwd)(float *dx, float *dw, float *db, const float *dy, const float *x,
                       const float *w, int T, int I, int O);
    /* RMSNorm over rows of length C (also per-head q/k norm: rows = T*heads, C = head_dim):
     * y = w * x / sqrt(mean(x^2) + eps); saves rstd(rows). y may alias x only if the caller keeps
     * a copy of x for the backward. */
    void (*rmsnorm_fwd)(float *y, float *rstd, const float *x, const float *w, int rows, int C,
                        float eps);
    void (*rmsnorm_bwd)(float *dx, float *dw, const float *dy, const float *x, const float *w,
                        const float *rstd, int rows, int C);
    /* RoPE in place on x(T, H, D) (rotate-half, engine convention); backward rotates dx back. */
    void (*rope_fwd)(float *x, const int32_t *pos, int T, int H, int D, double theta);
    void (*rope_bwd)(float *dx, const int32_t *pos, int T, int H, int D, double theta);
    /* Causal attention over packed segments with GQA. q(T,H,D), k,v(T,KVH,D), seg(T) contiguous
     * segment ids (NULL = one segment); out(T,H,D); saves lse(T,H) (log-sum-exp of the scaled
     * scores). Scale 1/sqrt(D). */
    void (*attn_fwd)(float *out, float *lse, const float *q, const float *k, const float *v,
                     const int32_t *seg, int T, int H, int KVH, int D);
    void (*attn_bwd)(float *dq, float *dk, float *dv, const float *dout, const float *out,
                     const float *lse, const float *q, const float *k, const float *v,
                     const int32_t *seg, int T, int H, int KVH, int D);
    /* h = silu(g) * u, elementwise over n. */
    void (*swiglu_fwd)(float *h, const float *g, const float *u, int64_t n);
    void (*swiglu_bwd)(float *dg, float *du, const float *dh, const float *g, const float *u,
                       int64_t n);
    /* out(T,C) = E[ids[t]]; backward scatter-adds into dE(V,C). Rows with ids[t] < 0 are left
     * untouched by both (the slot rows of embed_inject). */
    void (*embed_fwd)(float *out, const float *E, const int32_t *ids, int T, int C);
    void (*embed_bwd)(float *dE, const float *dout, const int32_t *ids, int T, int C);
    /* Slot injection: x[rows[k]] = vecs[k] (k < n); backward: dvecs[k] += dx[rows[k]]. */
    void (*inject_fwd)(float *x, const float *vecs, const int32_t *rows, int n, int C);
    void (*inject_bwd)(float *dvecs, const float *dx, const int32_t *rows, int n, int C);
    /* lm_head + cross-entropy fused: logits = h(T,C) W(V,C)^T evaluated in vocabulary chunks of
     * `chunk` rows of W, only at rows with labels[t] != -100; loss = mean over labelled rows of
     * -log softmax[label]. Returns the loss (0 and no gradient when no row is labelled).
     * dh (T,C) += dloss * dL/dh (NULL: forward only), dW (V,C) += dloss * dL/dW. */
    double (*lmhead_ce)(float *dh, float *dW, const float *h, const float *W,
                        const int32_t *labels, int T, int C, int V, int chunk, float dloss);
    /* L2 normalize rows: y = x / max(|x|, 1e-12) (F.normalize). */
    void (*l2norm_fwd)(float *y, const float *x, int rows, int C);
    void (*l2norm_bwd)(float *dx, const float *dy, const float *x, int rows, int C);
    /* LayerNorm with bias over rows of C: saves mean, rstd (rows). */
    void (*layernorm_fwd)(float *y, float *mean, float *rstd, const float *x, const float *w,
                          const float *b, int rows, int C, float eps);
    void (*layernorm_bwd)(float *dx, float *dw, float *db, const float *dy, const float *x,
                          const float *w, const float *mean, const float *rstd, int rows, int C);
    /* GELU with erf, elementwise. */
    void (*gelu_fwd)(float *y, const float *x, int64_t n);
    void (*gelu_bwd)(float *dx, const float *dy, const float *x, int64_t n);
    /* BCE with logits, mean over n: returns loss; dz += dloss * dL/dz (NULL: forward only). */
    double (*bce_logits)(float *dz, const float *z, const float *y, int n, float dloss);
    /* Symmetric InfoNCE (MODEL_SPEC 6.1): 0.5*(nce(a,p) + nce(p,a)) with a, p (N,C) already
     * L2-normalized rows, s = exp(clamp(*log_scale, 0, ln 100)); the clamp is applied in place to
     * *log_scale (no grad) as the reference does. nce(x,y): logits_i = s*[x_i.y_i, x_i.y_j for j
     * with y_i.y_j <= 0.99], target 0, mean CE. Returns the loss; da, dp (N,C) and *dlog_scale
     * += dloss * gradient (da == NULL: forward only). */
    double (*infonce_sym)(float *da, float *dp, float *dlog_scale, const float *a, const float *p,
                          float *log_scale, int N, int C, float dloss);
} hc_train_ops;

/* The CPU implementation. */
const hc_train_ops *hc_train_ops_cpu(void);

/* Threads of the CPU table's matmul, attention and lm_head + CE (process-wide; default 1; 1 frees
 * the pool). Results are bit-identical for every thread count (ops_cpu.c says how). Not to be
 * called while an op runs; the ops must be driven from one thread. Returns HC_OK or an error
 * code (the count is then 1). */
int hc_train_ops_cpu_set_threads(int n);
int hc_train_ops_cpu_threads(void);

#endif
