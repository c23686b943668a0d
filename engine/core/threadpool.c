/* threadpool.c: workers wait on a condition variable for a new "generation" of work, then grab
 * task indices from an atomic counter until they run out. The caller participates, then waits
 * for the last worker to finish. Ops on the decode path are small, so workers spin briefly on the
 * generation counter before sleeping, which saves a futex wake per op. */
#include "core/threadpool.h"

#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>

#include "core/error.h"

#if defined(__has_include)
#if __has_include(<valgrind/valgrind.h>)
#include <valgrind/valgrind.h>
#define HC_RUNNING_ON_VALGRIND RUNNING_ON_VALGRIND
#endif
#endif
#ifndef HC_RUNNING_ON_VALGRIND
#define HC_RUNNING_ON_VALGRIND 0
#endif

struct hc_pool {
    int n_threads;
    pthread_t *threads;
    pthread_mutex_t mu;
    pthread_cond_t cv_work;
    pthread_cond_t cv_done;
    atomic_uint generation;
    atomic_int next_task;
    atomic_int n_active; /* workers still inside the current generation */
    int n_tasks;
    hc_pool_fn fn;
    void *ctx;
    int stop;
    int spin; /* iterations to spin before sleeping (0 under valgrind, which runs one thread at a
                 time: spinning there only burns the other threads' turns) */
};

static void run_tasks(hc_pool *p) {
    for (;;) {
        int i = atomic_fetch_add_explicit(&p->next_task, 1, memory_order_relaxed);
        if (i >= p->n_tasks) break;
        p->fn(p->ctx, i);
    }
}

static void *worker(void *arg) {
    hc_pool *p = arg;
    unsigned seen = 0;
    for (;;) {
        /* spin a little before sleeping */
        for (int spin = 0; spin < p->spin; spin++) {
            if (atomic_load_explicit(&p->generation, memory_order_acquire) != seen) break;
            if ((spin & 63) == 63) sched_yield();
        }
        pthread_mutex_lock(&p->mu);
        while (!p->stop && atomic_load(&p->generation) == seen) pthread_cond_wait(&p->cv_work, &p->mu);
        if (p->stop) {
            pthread_mutex_unlock(&p->mu);
            return NULL;
        }
        seen = atomic_load(&p->generation);
        pthread_mutex_unlock(&p->mu);
        run_tasks(p);
        if (atomic_fetch_sub_explicit(&p->n_active, 1, memory_order_acq_rel) == 1) {
            pthread_mutex_lock(&p->mu);
            pthread_cond_signal(&p->cv_done);
            pthread_mutex_unlock(&p->mu);
        }
    }
}

int hc_pool_create(hc_pool **out, int n_threads) {
    *out = NULL;
    if (n_threads < 1) n_threads = 1;
    hc_pool *p = calloc(1, sizeof *p);
    if (!p) return HC_ERR_NOMEM;
    p->n_threads = n_threads;
    p->spin = HC_RUNNING_ON_VALGRIND ? 0 : 2000;
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->cv_work, NULL);
    pthread_cond_init(&p->cv_done, NULL);
    atomic_init(&p->generation, 0);
    atomic_init(&p->next_task, 0);
    atomic_init(&p->n_active, 0);
    if (n_threads > 1) {
        p->threads = calloc((size_t)n_threads - 1, sizeof *p->threads);
        if (!p->threads) {
            hc_pool_free(p);
            return HC_ERR_NOMEM;
        }
        for (int i = 0; i < n_threads - 1; i++) {
            if (pthread_create(&p->threads[i], NULL, worker, p) != 0) {
                p->n_threads = i + 1; /* only i workers exist */
                hc_pool_free(p);
                return HC_ERR_NOMEM;
            }
        }
    }
    *out = p;
    return HC_OK;
}

void hc_pool_free(hc_pool *p) {
    if (!p) return;
    pthread_mutex_lock(&p->mu);
    p->stop = 1;
    pthread_cond_broadcast(&p->cv_work);
    pthread_mutex_unlock(&p->mu);
    if (p->threads)
        for (int i = 0; i < p->n_threads - 1; i++) pthread_join(p->threads[i], NULL);
    free(p->threads);
    pthread_mutex_destroy(&p->mu);
    pthread_cond_destroy(&p->cv_work);
    pthread_cond_destroy(&p->cv_done);
    free(p);
}

int hc_pool_size(const hc_pool *p) { return p->n_threads; }

void hc_pool_run(hc_pool *p, int n_tasks, hc_pool_fn fn, void *ctx) {
    if (n_tasks <= 0) return;
    if (p->n_threads == 1 || n_tasks == 1) {
        for (int i = 0; i < n_tasks; i++) fn(ctx, i);
        return;
    }
    pthread_mutex_lock(&p->mu);
    p->fn = fn;
    p->ctx = ctx;
    p->n_tasks = n_tasks;
    atomic_store(&p->next_task, 0);
    atomic_store(&p->n_active, p->n_threads - 1);
    atomic_fetch_add_explicit(&p->generation, 1, memory_order_release);
    pthread_cond_broadcast(&p->cv_work);
    pthread_mutex_unlock(&p->mu);
    run_tasks(p);
    /* wait for the workers: brief spin, then sleep */
    for (int spin = 0; spin < 2 * p->spin && atomic_load_explicit(&p->n_active, memory_order_acquire);
         spin++)
        if ((spin & 63) == 63) sched_yield();
    pthread_mutex_lock(&p->mu);
    while (atomic_load(&p->n_active) != 0) pthread_cond_wait(&p->cv_done, &p->mu);
    pthread_mutex_unlock(&p->mu);
}
