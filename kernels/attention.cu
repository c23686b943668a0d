/* attention.cu: paged attention over a packed batch, and kv_store (engine/backend/backend.h).
 *
 * attention: one block of HC_ATT_WARPS warps per (query token, head). Warp w takes kv entries
 *   j = w, w + HC_ATT_WARPS, ...: the dot q.k is split over lanes (lane owns dims lane + 32*i, so
 *   loads are coalesced) and reduced with shuffles; each warp keeps an online-softmax state
 *   (running max m, running sum l, accumulator acc over head_dim in registers). The warps' states
 *   are merged through shared memory at the end. All arithmetic is f32; expf (not __expf).
 *   head_dim <= 256 (8 dims per lane). This is the simple, correct kernel: no tiling of K/V in
 *   shared memory, one kv entry per warp step; a FlashDecoding/FlashAttention kernel is the
 *   planned replacement once it can be measured on a GPU.
 *
 * Host metadata (table_off, kv_len, tables) is validated on the host (so a bad table is an error
 * code, not a device fault that poisons the context) and staged in one copy.
 */
#include <math.h>

#include "cuda_common.cuh"

#define HC_ATT_WARPS 4
#define HC_ATT_MAX_DIM 256
#define HC_ATT_PER_LANE (HC_ATT_MAX_DIM / 32)

__global__ void __launch_bounds__(HC_ATT_WARPS * 32)
    attention_kernel(float *out, const float *q, const float *__restrict__ k_pool,
                     const float *__restrict__ v_pool, const int32_t *__restrict__ table_off,
                     const int32_t *__restrict__ kv_len, const int32_t *__restrict__ tables,
                     int n_heads, int n_kv_heads, int head_dim, float scale, int block_size) {
    __shared__ float s_m[HC_ATT_WARPS], s_l[HC_ATT_WARPS];
    __shared__ float s_acc[HC_ATT_WARPS][HC_ATT_MAX_DIM];
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const size_t th = blockIdx.x; /* token * n_heads + head */
    const int t = (int)(th / (size_t)n_heads), h = (int)(th % (size_t)n_heads);
    const int kvh = h / (n_heads / n_kv_heads);
    const float *qh = q + th * (size_t)head_dim;

    float qv[HC_ATT_PER_LANE], acc[HC_ATT_PER_LANE];
#pragma unroll
    for (int i = 0; i < HC_ATT_PER_LANE; i++) {
        const int d = lane + 32 * i;
        qv[i] = d < head_dim ? qh[d] : 0.f;
        acc[i] = 0.f;
    }
    float m = -INFINITY, l = 0.f;
    const int len = kv_len[t];
    const int32_t *tab = tables + table_off[t];
    for (int j = warp; j < len; j += HC_ATT_WARPS) {
        const size_t row = (size_t)tab[j / block_size] * (size_t)block_size + (size_t)(j % block_size);
        const size_t base = (row * (size_t)n_kv_heads + (size_t)kvh) * (size_t)head_dim;
        const float *kr = k_pool + base, *vr = v_pool + base;
        float s = 0.f;
#pragma unroll
        for (int i = 0; i < HC_ATT_PER_LANE; i++) {
            const int d = lane + 32 * i;
            if (d < head_dim) s += qv[i] * kr[d];
        }
#pragma unroll
        for (int o = 16; o > 0; o >>= 1) s += __shfl_xor_sync(0xffffffffu, s, o);
        s *= scale;
        const float m_new = fmaxf(m, s);
        const float corr = expf(m - m_new); /* 0 on the first entry (m = -inf) */
        const float p = expf(s - m_new);
        l = l * corr + p;
#pragma unroll
        for (int i = 0; i < HC_ATT_PER_LANE; i++) {
            const int d = lane + 32 * i;
            if (d < head_dim) acc[i] = acc[i] * corr + p * vr[d];
        }
        m = m_new;
    }
    if (lane == 0) {
        s_m[warp] = m;
        s_l[warp] = l;
    }
#pragma unroll
    for (int i = 0; i < HC_ATT_PER_LANE; i++) {
        const int d = lane + 32 * i;
        if (d < head_dim) s_acc[warp][d] = acc[i];
    }
    __syncthreads();
    float mx = -INFINITY;
#pragma unroll
    for (int w = 0; w < HC_ATT_WARPS; w++) mx = fmaxf(mx, s_m[w]);
    float wgt[HC_ATT_WARPS], sum = 0.f;
#pragma unroll
    for (int w = 0; w < HC_ATT_WARPS; w++) {
        wgt[w] = s_m[w] == -INFINITY ? 0.f : expf(s_m[w] - mx); /* idle warp: weight 0 */
        sum += s_l[w] * wgt[w];
    }
    const float inv = 1.f / sum;
    float *oh = out + th * (size_t)head_dim;
    for (int d = threadIdx.x; d < head_dim; d += blockDim.x) {
        float o = 0.f;
#pragma unroll
        for (int w = 0; w < HC_ATT_WARPS; w++) o += s_acc[w][d] * wgt[w];
        oh[d] = o * inv;
    }
}

/* Checks every pool row the kernel will read. Consecutive tokens of one sequence share table_off
 * with growing kv_len, so a range already checked is skipped: about O(n_tokens + n_table). */
static int validate_attn(hc_cuda_ctx *c, const hc_attn_args *a, int64_t n_rows) {
    int32_t prev_off = -1, prev_len = 0;
    for (int t = 0; t < a->n_tokens; t++) {
        const int32_t off = a->table_off[t], len = a->kv_len[t];
        if (len < 1) return HC_FAIL(c, HC_ERR_INVAL, "attention: token %d: kv_len %d", t, len);
        if (off < 0) return HC_FAIL(c, HC_ERR_RANGE, "attention: token %d: table_off %d", t, off);
        const int64_t n_blocks = ((int64_t)len + a->block_size - 1) / a->block_size;
        if ((int64_t)off + n_blocks > a->n_table)
            return HC_FAIL(c, HC_ERR_RANGE,
                           "attention: token %d: needs table entries [%d, %lld), table has %d", t,
                           off, (long long)(off + n_blocks), a->n_table);
        if (off == prev_off && len <= prev_len) continue;
        for (int64_t b = 0; b < n_blocks; b++) {
            const int64_t e = a->tables[off + b];
            const int64_t used = b + 1 < n_blocks ? a->block_size : len - b * a->block_size;
            if (e < 0 || e * a->block_size + used > n_rows)
                return HC_FAIL(c, HC_ERR_RANGE,
                               "attention: token %d: block %lld -> %lld outside a pool of %lld "
                               "rows",
                               t, (long long)b, (long long)e, (long long)n_rows);
        }
        prev_off = off;
        prev_len = len;
    }
    return HC_OK;
}

int hc_cuda_attention(hc_backend *be, hc_tensor *out, const hc_tensor *q, const hc_tensor *k_pool,
                      const hc_tensor *v_pool, const hc_attn_args *a) {
    hc_cuda_ctx *c = hc_cuda_ctx_of(be);
    if (!hc_cuda_owns(be, out) || !hc_cuda_owns(be, q) || !hc_cuda_owns(be, k_pool) ||
        !hc_cuda_owns(be, v_pool))
        return HC_FAIL(c, HC_ERR_INVAL, "attention: tensor not in CUDA backend memory");
    if (!a || !a->table_off || !a->kv_len || !a->tables)
        return HC_FAIL(c, HC_ERR_INVAL, "attention: missing metadata");
    if (out->dtype != HC_DTYPE_F32 || q->dtype != HC_DTYPE_F32 || k_pool->dtype != HC_DTYPE_F32 ||
        v_pool->dtype != HC_DTYPE_F32)
        return HC_FAIL(c, HC_ERR_UNSUPPORTED, "attention: q, out and the K/V pools must be F32");
    if (a->n_tokens < 0 || a->n_heads < 1 || a->n_kv_heads < 1 || a->head_dim < 1 ||
        a->block_size < 1 || a->n_heads % a->n_kv_heads)
        return HC_FAIL(c, HC_ERR_INVAL, "attention: n_heads %d, n_kv_heads %d, head_dim %d, "
                       "block_size %d", a->n_heads, a->n_kv_heads, a->head_dim, a->block_size);
    if (a->head_dim > HC_ATT_MAX_DIM)
        return HC_FAIL(c, HC_ERR_UNSUPPORTED, "attention: head_dim %d > %d", a->head_dim,
                       HC_ATT_MAX_DIM);
    const int64_t q_elems = (int64_t)a->n_tokens * a->n_heads * a->head_dim;
    const int64_t kv_dim = (int64_t)a->n_kv_heads * a->head_dim;
    if (hc_tensor_nelem(q) != q_elems || hc_tensor_nelem(out) != q_elems ||
        hc_tensor_nelem(k_pool) % kv_dim || hc_tensor_nelem(v_pool) != hc_tensor_nelem(k_pool))
        return HC_FAIL(c, HC_ERR_MISMATCH, "attention: q/out/pool shapes do not match args");
    if (a->n_tokens == 0) return HC_OK;
    int rc = validate_attn(c, a, hc_tensor_nelem(k_pool) / kv_dim);
    if (rc != HC_OK) return rc;
    hc_stage_item items[3] = {{a->table_off, (size_t)a->n_tokens * sizeof(int32_t), NULL},
                              {a->kv_len, (size_t)a->n_tokens * sizeof(int32_t), NULL},
                              {a->tables, (size_t)a->n_table * sizeof(int32_t), NULL}};
    rc = hc_cuda_stage(c, items, 3);
    if (rc != HC_OK) return rc;
    const int64_t n_blocks = (int64_t)a->n_tokens * a->n_heads;
    if (n_blocks > INT32_MAX) return HC_FAIL(c, HC_ERR_RANGE, "attention: grid too large");
    attention_kernel<<<(unsigned)n_blocks, HC_ATT_WARPS * 32, 0, c->stream>>>(
        (float *)out->data, (const float *)q->data, (const float *)k_pool->data,
        (const float *)v_pool->data, (const int32_t *)items[0].dev, (const int32_t *)items[1].dev,
        (const int32_t *)items[2].dev, a->n_heads, a->n_kv_heads, a->head_dim, a->scale,
        a->block_size);
    HC_LAUNCH_CHECK(c);
    return HC_OK;
}

/* ---- kv_store ----------------------------------------------------------------------------- */

__global__ void kv_store_kernel(float *__restrict__ k_pool, float *__restrict__ v_pool,
                                const float *__restrict__ k, const float *__restrict__ v,
                                const int32_t *__restrict__ rows, size_t kv_dim, size_t n) {
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x) {
        const size_t t = i / kv_dim, d = i % kv_dim;
        const size_t dst = (size_t)rows[t] * kv_dim + d;
        k_pool[dst] = k[i];
        v_pool[dst] = v[i];
    }
}

int hc_cuda_kv_store(hc_backend *be, hc_tensor *k_pool, hc_tensor *v_pool, const hc_tensor *k,
                     const hc_tensor *v, const int32_t *rows, int n_tokens) {
    hc_cuda_ctx *c = hc_cuda_ctx_of(be);
    if (!hc_cuda_owns(be, k_pool) || !hc_cuda_owns(be, v_pool) || !hc_cuda_owns(be, k) ||
        !hc_cuda_owns(be, v))
        return HC_FAIL(c, HC_ERR_INVAL, "kv_store: tensor not in CUDA backend memory");
    if (k_pool->dtype != HC_DTYPE_F32 || v_pool->dtype != HC_DTYPE_F32 ||
        k->dtype != HC_DTYPE_F32 || v->dtype != HC_DTYPE_F32)
        return HC_FAIL(c, HC_ERR_UNSUPPORTED, "kv_store: pools and k/v must be F32");
    if (n_tokens <= 0) return n_tokens == 0 ? HC_OK : HC_FAIL(c, HC_ERR_INVAL, "kv_store: n < 0");
    if (!rows) return HC_FAIL(c, HC_ERR_INVAL, "kv_store: rows is NULL");
    /* As the CPU backend: a row is cols(k) long, so k and v are (>= n_tokens, kv_dim) 2-D. */
    const int64_t kv_dim = hc_tensor_cols(k);
    if (kv_dim == 0 || hc_tensor_nelem(k) < kv_dim * n_tokens || hc_tensor_cols(v) != kv_dim ||
        hc_tensor_nelem(v) < kv_dim * n_tokens || hc_tensor_nelem(k_pool) % kv_dim ||
        hc_tensor_nelem(v_pool) != hc_tensor_nelem(k_pool))
        return HC_FAIL(c, HC_ERR_MISMATCH, "kv_store: k/v/pool shapes do not match");
    const int64_t n_rows = hc_tensor_nelem(k_pool) / kv_dim;
    for (int t = 0; t < n_tokens; t++)
        if (rows[t] < 0 || rows[t] >= n_rows)
            return HC_FAIL(c, HC_ERR_RANGE, "kv_store: row %d of token %d outside pool of %lld",
                           rows[t], t, (long long)n_rows);
    hc_stage_item item = {rows, (size_t)n_tokens * sizeof(int32_t), NULL};
    int rc = hc_cuda_stage(c, &item, 1);
    if (rc != HC_OK) return rc;
    const size_t n = (size_t)n_tokens * (size_t)kv_dim;
    kv_store_kernel<<<hc_cuda_blocks((int64_t)n, 256), 256, 0, c->stream>>>(
        (float *)k_pool->data, (float *)v_pool->data, (const float *)k->data,
        (const float *)v->data, (const int32_t *)item.dev, (size_t)kv_dim, n);
    HC_LAUNCH_CHECK(c);
    return HC_OK;
}
