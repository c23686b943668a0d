/* threadpool.h: a fixed pool of worker threads for the CPU backend's parallel loops.
 *
 * hc_pool_run(pool, n_tasks, fn, ctx) calls fn(ctx, i) for i in [0, n_tasks) across the workers
 * and the calling thread, and returns when all calls are done. Calls into one pool must not
 * overlap (one engine thread drives it); fn must not call hc_pool_run on the same pool.
 */
#ifndef HC_THREADPOOL_H
#define HC_THREADPOOL_H

typedef struct hc_pool hc_pool;
typedef void (*hc_pool_fn)(void *ctx, int task);

/* n_threads total, including the caller (n_threads - 1 workers are started). */
int hc_pool_create(hc_pool **out, int n_threads);
void hc_pool_free(hc_pool *pool);
int hc_pool_size(const hc_pool *pool);
void hc_pool_run(hc_pool *pool, int n_tasks, hc_pool_fn fn, void *ctx);

#endif
