/* cpu_dnnl.c: oneDNN matmul for the CPU backend's prefill GEMM (see cpu_dnnl.h). Built with
 * oneDNN when CMake found it (HC_HAVE_DNNL), else the stubs at the end report it absent. */
#include "backend/cpu_dnnl.h"

#include "core/error.h"

#ifdef HC_HAVE_DNNL
#include <omp.h>
#include <oneapi/dnnl/dnnl.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#define HC_DNNL_CACHE 64

typedef struct prim_entry {
    int64_t m, nb, k, ldo;
    int bf16;
    dnnl_primitive_t prim; /* NULL: free slot */
    const_dnnl_primitive_desc_t pd;
    size_t scratch_bytes;
    uint64_t last_use;
} prim_entry;

typedef struct task_slot {
    dnnl_stream_t stream;
    void *scratch;
    size_t scratch_cap;
} task_slot;

struct hc_cpu_dnnl {
    dnnl_engine_t eng;
    pthread_mutex_t mu; /* guards cache and tick */
    prim_entry cache[HC_DNNL_CACHE];
    uint64_t tick;
    int n_slots;
    task_slot *slots;
    int has_bf16; /* a bf16 matmul primitive can be created here */
};

static dnnl_primitive_t make_prim(dnnl_engine_t eng, int64_t m, int64_t nb, int64_t k,
                                  int64_t ldo, int bf16);

int hc_cpu_dnnl_built(void) { return 1; }

int hc_cpu_dnnl_create(hc_cpu_dnnl **out, int n_slots) {
    *out = NULL;
    if (n_slots < 1) return HC_ERR_INVAL;
    hc_cpu_dnnl *d = calloc(1, sizeof *d);
    if (!d) return HC_ERR_NOMEM;
    d->slots = calloc((size_t)n_slots, sizeof *d->slots);
    if (!d->slots || pthread_mutex_init(&d->mu, NULL)) {
        free(d->slots);
        free(d);
        return HC_ERR_NOMEM;
    }
    d->n_slots = n_slots;
    if (dnnl_engine_create(&d->eng, dnnl_cpu, 0) != dnnl_success) {
        hc_cpu_dnnl_free(d);
        return HC_ERR_UNSUPPORTED;
    }
    for (int i = 0; i < n_slots; i++)
        if (dnnl_stream_create(&d->slots[i].stream, d->eng, dnnl_stream_default_flags) !=
            dnnl_success) {
            hc_cpu_dnnl_free(d);
            return HC_ERR_UNSUPPORTED;
        }
    /* probe the bf16 matmul once, planned for one thread as every call here */
    int saved = omp_get_max_threads();
    if (saved != 1) omp_set_num_threads(1);
    dnnl_primitive_t probe = make_prim(d->eng, 64, 64, 64, 64, 1);
    if (saved != 1) omp_set_num_threads(saved);
    d->has_bf16 = probe != NULL;
    if (probe) dnnl_primitive_destroy(probe);
    *out = d;
    return HC_OK;
}

int hc_cpu_dnnl_has_bf16(const hc_cpu_dnnl *d) { return d ? d->has_bf16 : 0; }

void hc_cpu_dnnl_free(hc_cpu_dnnl *d) {
    if (!d) return;
    for (int i = 0; i < HC_DNNL_CACHE; i++)
        if (d->cache[i].prim) dnnl_primitive_destroy(d->cache[i].prim);
    for (int i = 0; i < d->n_slots; i++) {
        if (d->slots[i].stream) dnnl_stream_destroy(d->slots[i].stream);
        free(d->slots[i].scratch);
    }
    if (d->eng) dnnl_engine_destroy(d->eng);
    pthread_mutex_destroy(&d->mu);
    free(d->slots);
    free(d);
}

/* A matmul primitive for src (m, k) row-major, weights = nb rows of k (as the (k, nb) matrix with
 * strides (1, k)), dst (m, nb) with row stride ldo; user-managed scratchpad (one per slot, so two
 * tasks may run the same primitive at once). Called with OpenMP at one thread (see create's
 * caller), so oneDNN plans a single-threaded kernel. */
static dnnl_primitive_t make_prim(dnnl_engine_t eng, int64_t m, int64_t nb, int64_t k,
                                  int64_t ldo, int bf16) {
    dnnl_data_type_t dt = bf16 ? dnnl_bf16 : dnnl_f32;
    dnnl_memory_desc_t smd, wmd, dmd;
    dnnl_dims_t sd = {m, k}, wd = {k, nb}, dd = {m, nb}, ws = {1, k}, ds = {ldo, 1};
    dnnl_matmul_desc_t md;
    dnnl_primitive_attr_t attr = NULL;
    dnnl_primitive_desc_t pd = NULL;
    dnnl_primitive_t prim = NULL;
    if (dnnl_memory_desc_init_by_tag(&smd, 2, sd, dt, dnnl_ab) != dnnl_success ||
        dnnl_memory_desc_init_by_strides(&wmd, 2, wd, dt, ws) != dnnl_success ||
        dnnl_memory_desc_init_by_strides(&dmd, 2, dd, dnnl_f32, ds) != dnnl_success ||
        dnnl_matmul_desc_init(&md, &smd, &wmd, NULL, &dmd) != dnnl_success ||
        dnnl_primitive_attr_create(&attr) != dnnl_success)
        return NULL;
    if (dnnl_primitive_attr_set_scratchpad_mode(attr, dnnl_scratchpad_mode_user) == dnnl_success &&
        dnnl_primitive_desc_create(&pd, &md, attr, eng, NULL) == dnnl_success) {
        if (dnnl_primitive_create(&prim, pd) != dnnl_success) prim = NULL;
        dnnl_primitive_desc_destroy(pd);
    }
    dnnl_primitive_attr_destroy(attr);
    return prim;
}

/* The cached primitive for a shape (created on a miss); copies the entry into *e. */
static int lookup(hc_cpu_dnnl *d, int64_t m, int64_t nb, int64_t k, int64_t ldo, int bf16,
                  prim_entry *e) {
    pthread_mutex_lock(&d->mu);
    int victim = 0;
    for (int i = 0; i < HC_DNNL_CACHE; i++) {
        prim_entry *c = &d->cache[i];
        if (c->prim && c->m == m && c->nb == nb && c->k == k && c->ldo == ldo && c->bf16 == bf16) {
            c->last_use = ++d->tick;
            *e = *c;
            pthread_mutex_unlock(&d->mu);
            return HC_OK;
        }
        if (!c->prim || (d->cache[victim].prim && c->last_use < d->cache[victim].last_use))
            victim = i;
    }
    /* a miss: creation under the lock (rare: once per shape) keeps the cache simple */
    dnnl_primitive_t prim = make_prim(d->eng, m, nb, k, ldo, bf16);
    const_dnnl_primitive_desc_t pd = NULL;
    if (!prim || dnnl_primitive_get_primitive_desc(prim, &pd) != dnnl_success) {
        if (prim) dnnl_primitive_destroy(prim);
        pthread_mutex_unlock(&d->mu);
        return HC_ERR_UNSUPPORTED;
    }
    prim_entry *c = &d->cache[victim];
    if (c->prim) dnnl_primitive_destroy(c->prim);
    c->m = m, c->nb = nb, c->k = k, c->ldo = ldo, c->bf16 = bf16;
    c->prim = prim;
    c->pd = pd;
    c->scratch_bytes = dnnl_memory_desc_get_size(
        dnnl_primitive_desc_query_md(pd, dnnl_query_scratchpad_md, 0));
    c->last_use = ++d->tick;
    *e = *c;
    pthread_mutex_unlock(&d->mu);
    return HC_OK;
}

static int execute(hc_cpu_dnnl *d, task_slot *s, const prim_entry *e, float *out, const void *x,
                   const void *w) {
    if (s->scratch_cap < e->scratch_bytes) {
        free(s->scratch);
        size_t n = (e->scratch_bytes + 63) & ~(size_t)63;
        s->scratch = aligned_alloc(64, n);
        s->scratch_cap = s->scratch ? n : 0;
        if (!s->scratch) return HC_ERR_NOMEM;
    }
    dnnl_memory_t mem[4] = {NULL, NULL, NULL, NULL};
    static const dnnl_query_t q[4] = {dnnl_query_src_md, dnnl_query_weights_md, dnnl_query_dst_md,
                                      dnnl_query_scratchpad_md};
    static const int arg[4] = {DNNL_ARG_SRC, DNNL_ARG_WEIGHTS, DNNL_ARG_DST, DNNL_ARG_SCRATCHPAD};
    void *ptr[4] = {(void *)x, (void *)w, out, s->scratch};
    dnnl_exec_arg_t args[4];
    int rc = HC_OK, n = 0;
    for (int i = 0; i < 4; i++) {
        if (i == 3 && !e->scratch_bytes) break;
        if (dnnl_memory_create(&mem[i], dnnl_primitive_desc_query_md(e->pd, q[i], 0), d->eng,
                               ptr[i]) != dnnl_success) {
            rc = HC_ERR_NOMEM;
            break;
        }
        args[n].arg = arg[i];
        args[n].memory = mem[i];
        n++;
    }
    if (rc == HC_OK && (dnnl_primitive_execute(e->prim, s->stream, n, args) != dnnl_success ||
                        dnnl_stream_wait(s->stream) != dnnl_success))
        rc = HC_ERR_UNSUPPORTED;
    for (int i = 0; i < 4; i++)
        if (mem[i]) dnnl_memory_destroy(mem[i]);
    return rc;
}

int hc_cpu_dnnl_gemm(hc_cpu_dnnl *d, int slot, int bf16, float *out, int64_t ldo, const void *x,
                     int64_t m, const void *w, int64_t nb, int64_t k) {
    if (!d || slot < 0 || slot >= d->n_slots || m < 1 || nb < 1 || k < 1) return HC_ERR_INVAL;
    /* oneDNN (OpenMP runtime) plans and runs on omp_get_max_threads() threads of the calling
     * thread: one, here, so the pool's tasks never start OpenMP teams of their own. */
    int saved = omp_get_max_threads();
    if (saved != 1) omp_set_num_threads(1);
    prim_entry e;
    int rc = lookup(d, m, nb, k, ldo, bf16, &e);
    if (rc == HC_OK) rc = execute(d, &d->slots[slot], &e, out, x, w);
    if (saved != 1) omp_set_num_threads(saved);
    return rc;
}

const char *hc_cpu_dnnl_isa_name(void) {
    switch (dnnl_get_effective_cpu_isa()) {
    case dnnl_cpu_isa_sse41: return "sse41";
    case dnnl_cpu_isa_avx: return "avx";
    case dnnl_cpu_isa_avx2: return "avx2";
    case dnnl_cpu_isa_avx2_vnni: return "avx2_vnni";
    case dnnl_cpu_isa_avx512_core: return "avx512_core";
    case dnnl_cpu_isa_avx512_core_vnni: return "avx512_core_vnni";
    case dnnl_cpu_isa_avx512_core_bf16: return "avx512_core_bf16";
    case dnnl_cpu_isa_avx512_core_amx: return "avx512_core_amx";
    default: return "other";
    }
}

#else /* !HC_HAVE_DNNL */

int hc_cpu_dnnl_built(void) { return 0; }
int hc_cpu_dnnl_create(hc_cpu_dnnl **out, int n_slots) {
    (void)n_slots;
    *out = NULL;
    return HC_ERR_UNSUPPORTED;
}
void hc_cpu_dnnl_free(hc_cpu_dnnl *d) { (void)d; }
int hc_cpu_dnnl_has_bf16(const hc_cpu_dnnl *d) {
    (void)d;
    return 0;
}
int hc_cpu_dnnl_gemm(hc_cpu_dnnl *d, int slot, int bf16, float *out, int64_t ldo, const void *x,
                     int64_t m, const void *w, int64_t nb, int64_t k) {
    (void)d, (void)slot, (void)bf16, (void)out, (void)ldo, (void)x, (void)m, (void)w, (void)nb,
        (void)k;
    return HC_ERR_UNSUPPORTED;
}
const char *hc_cpu_dnnl_isa_name(void) { return ""; }

#endif
