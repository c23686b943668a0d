/* daemon.c: hllm-creatord.
 *
 * Threads: the libuv loop thread owns HTTP (libmicrohttpd in external epoll mode, its epoll fd
 * watched by uv_poll, a one-shot uv_timer re-armed from MHD_get_timeout after every MHD_run; every
 * MHD call happens on that thread), parses and validates requests (jansson) and tokenizes them
 * with its own tokenizer contexts; it hands jobs (submit / cancel) to ONE engine thread through a
 * mutex-protected queue. The engine thread loads the package, owns the hc_creator and an
 * hc_csched and runs hc_csched_step; its events come back through a second queue and
 * uv_async_send, drained in full on each wake. Signals (SIGTERM/SIGINT) via uv_signal: stop
 * accepting, drain in-flight requests up to --drain-timeout, exit 0. SIGHUP re-reads the title
 * tables on a libuv worker thread and swaps the new set in only when every file loaded.
 * systemd (sd_notify, when $NOTIFY_SOCKET is set): READY=1 once the model and the tables are
 * loaded, RELOADING=1 ... READY=1 around a SIGHUP reload, STOPPING=1 on SIGTERM, and with
 * $WATCHDOG_USEC a WATCHDOG=1 ping every half period while the engine thread is loading, idle,
 * or finished a step within the period (a stuck engine stops the pings and systemd restarts it).
 * The messages are sent by a notifier thread (below), never by the loop thread itself.
 */

#include <systemd/sd-daemon.h>

#include "server.h"

/* ---- sd_notify on its own thread ------------------------------------------------------------
 * A datagram to $NOTIFY_SOCKET blocks while the receiver's queue is full (net.unix.max_dgram_qlen,
 * 10 by default): a PID 1 that is slow to read, or a test that does not read, would stop the
 * loop thread, and with it every HTTP answer and the SIGTERM handling. notify() only queues the
 * message; the notifier thread sends the queue in order with sd_notify. A WATCHDOG=1 already
 * waiting is not queued again (one pending ping says the same). The queue is static and the
 * thread detached: a send blocked at exit holds nothing (notify_flush waits a bounded time). */
#define NOTIFY_Q 32
#define NOTIFY_LEN 4400
static struct {
    pthread_mutex_t mu;
    pthread_cond_t cv, done;
    char msg[NOTIFY_Q][NOTIFY_LEN];
    int head, n, sending, started, disabled;
} nq = {.mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER, .done = PTHREAD_COND_INITIALIZER};

static void *notifier_main(void *arg) {
    (void)arg;
    static char m[NOTIFY_LEN];
    pthread_mutex_lock(&nq.mu);
    for (;;) {
        while (!nq.n) pthread_cond_wait(&nq.cv, &nq.mu);
        memcpy(m, nq.msg[nq.head], NOTIFY_LEN);
        nq.head = (nq.head + 1) % NOTIFY_Q;
        nq.n--;
        nq.sending = 1;
        pthread_mutex_unlock(&nq.mu);
        sd_notify(0, m); /* may block: only this thread waits */
        pthread_mutex_lock(&nq.mu);
        nq.sending = 0;
        pthread_cond_broadcast(&nq.done);
    }
    return NULL;
}

void notify(const char *state) {
    pthread_mutex_lock(&nq.mu);
    if (!nq.started && !nq.disabled) {
        const char *ns = getenv("NOTIFY_SOCKET");
        pthread_t t;
        pthread_attr_t a;
        nq.disabled = !ns || !*ns || pthread_attr_init(&a);
        if (!nq.disabled) {
            pthread_attr_setdetachstate(&a, PTHREAD_CREATE_DETACHED);
            nq.disabled = pthread_create(&t, &a, notifier_main, NULL) != 0;
            pthread_attr_destroy(&a);
        }
        nq.started = !nq.disabled;
    }
    if (nq.disabled) {
        pthread_mutex_unlock(&nq.mu);
        return;
    }
    const int ping = !strcmp(state, "WATCHDOG=1");
    int dup = 0;
    for (int i = 0; ping && i < nq.n; i++)
        dup |= !strcmp(nq.msg[(nq.head + i) % NOTIFY_Q], state);
    const int full = nq.n == NOTIFY_Q;
    if (!dup && !full) {
        snprintf(nq.msg[(nq.head + nq.n) % NOTIFY_Q], NOTIFY_LEN, "%s", state);
        nq.n++;
        pthread_cond_signal(&nq.cv);
    }
    pthread_mutex_unlock(&nq.mu);
    if (full && !ping)
        fprintf(stderr, "hllm-creatord: $NOTIFY_SOCKET is not read: %d messages wait; '%.40s' "
                        "dropped\n", NOTIFY_Q, state);
}

/* Waits up to ms for the queued messages to be sent (STOPPING=1 before the process exits). */
static void notify_flush(int ms) {
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += ms / 1000;
    until.tv_nsec += (long)(ms % 1000) * 1000000L;
    if (until.tv_nsec >= 1000000000L) until.tv_sec++, until.tv_nsec -= 1000000000L;
    pthread_mutex_lock(&nq.mu);
    while (nq.started && (nq.n || nq.sending))
        if (pthread_cond_timedwait(&nq.done, &nq.mu, &until)) break;
    pthread_mutex_unlock(&nq.mu);
}

/* ---- title tables ----------------------------------------------------------------------- */

tt_expect table_expect(server *s) {
    const hc_creator *c = s->creator;
    tt_expect x = {c->digest, c->clusters ? hc_cluster_index_k(c->clusters) : 0, c->pkg.sampling,
                   c->pkg.max_new_tokens, c->creative->cfg.vocab_size, c->creative_tok};
    return x;
}

static const char *const *table_files(const hcd_config *c, const char **v) {
    for (int i = 0; i < c->n_title_tables; i++) v[i] = c->title_tables[i];
    return v;
}

int tables_load_start(server *s) {
    const char *v[HCD_MAX_TABLES];
    char err[1200];
    tt_expect x = table_expect(s);
    if (s->cfg.n_title_tables && !x.n_clusters) {
        hlog(&s->cfg, 0, 0, "title tables need a package with cluster centroids; %s has none",
             s->cfg.model);
        return -1;
    }
    if (tt_build(&s->tables, table_files(&s->cfg, v), s->cfg.n_title_tables, &x, err, sizeof err)) {
        hlog(&s->cfg, 0, 0, "%s", err);
        return -1;
    }
    if (s->cfg.n_title_tables)
        hlog(&s->cfg, 2, 0, "title tables: %d file%s, %zu entries", s->cfg.n_title_tables,
             s->cfg.n_title_tables == 1 ? "" : "s", tt_entries(s->tables));
    return 0;
}

static void reload_run(uv_work_t *w) {
    reload_work *rw = w->data;
    const char *v[HCD_MAX_TABLES];
    for (int i = 0; i < rw->n_files; i++) v[i] = rw->files[i];
    if (tt_build(&rw->result, v, rw->n_files, &rw->x, rw->err, sizeof rw->err)) rw->result = NULL;
}

static void reload_start(server *s);

static void reload_done(uv_work_t *w, int status) {
    reload_work *rw = w->data;
    server *s = rw->srv;
    s->reloading = NULL;
    if (status == 0 && rw->result) {
        tt_free(s->tables);
        s->tables = rw->result;
        s->m_table_reloads++;
        hlog(&s->cfg, 2, 0, "SIGHUP: title tables reloaded: %d file%s, %zu entries", rw->n_files,
             rw->n_files == 1 ? "" : "s", tt_entries(s->tables));
    } else {
        tt_free(rw->result);
        s->m_table_reload_failures++;
        hlog(&s->cfg, 0, 0, "SIGHUP: reload failed, keeping the previous title tables (%zu "
             "entries): %s", tt_entries(s->tables), status ? uv_strerror(status) : rw->err);
    }
    char st[4400];
    snprintf(st, sizeof st, "READY=1\nSTATUS=serving %s (%d clusters, %zu title-table entries)",
             s->cfg.model, s->n_clusters, tt_entries(s->tables));
    notify(st);
    free(rw);
    if (s->reload_again && !s->draining) {
        s->reload_again = 0;
        reload_start(s);
    }
}

static void reload_start(server *s) {
    reload_work *rw = calloc(1, sizeof *rw);
    if (!rw) {
        hlog(&s->cfg, 0, 0, "SIGHUP: out of memory; title tables not reloaded");
        s->m_table_reload_failures++;
        return;
    }
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    char st[96];
    snprintf(st, sizeof st, "RELOADING=1\nMONOTONIC_USEC=%llu",
             (unsigned long long)ts.tv_sec * 1000000ULL + (unsigned long long)ts.tv_nsec / 1000);
    notify(st);
    rw->srv = s;
    rw->n_files = s->cfg.n_title_tables;
    memcpy(rw->files, s->cfg.title_tables, sizeof rw->files);
    rw->x = table_expect(s);
    rw->w.data = rw;
    int rc = uv_queue_work(&s->loop, &rw->w, reload_run, reload_done);
    if (rc) {
        hlog(&s->cfg, 0, 0, "SIGHUP: cannot start the reload: %s", uv_strerror(rc));
        s->m_table_reload_failures++;
        free(rw);
        notify("READY=1");
        return;
    }
    s->reloading = rw;
    hlog(&s->cfg, 2, 0, "SIGHUP: reloading %d title table%s", rw->n_files,
         rw->n_files == 1 ? "" : "s");
}

void on_sighup(uv_signal_t *h, int sig) {
    server *s = h->data;
    (void)sig;
    if (!s->draining) keys_reload(s); /* auth.c: the old keys stay when the file fails */
    if (!s->ready || s->draining) {
        hlog(&s->cfg, 1, 0, "SIGHUP ignored: %s", s->draining ? "draining" : "still loading");
        return;
    }
    if (s->reloading) { /* once more after the one in progress (the files may have changed) */
        s->reload_again = 1;
        return;
    }
    reload_start(s);
}

/* ---- watchdog ---------------------------------------------------------------------------- */

void on_watchdog(uv_timer_t *t) {
    server *s = t->data;
    pthread_mutex_lock(&s->mu);
    const double limit = (double)s->watchdog_usec / 1000.0, age = now_ms() - s->eng_beat;
    const int alive = s->eng_loading || s->eng_idle || age < limit;
    pthread_mutex_unlock(&s->mu);
    if (alive)
        notify("WATCHDOG=1");
    else
        hlog(&s->cfg, 0, 0, "watchdog: the engine thread has made no progress for %.0f ms; "
             "not sending WATCHDOG=1", age);
}

void stop_all(server *s) {
    uv_stop(&s->loop);
}

void maybe_finish_drain(server *s) {
    if (s->draining && !s->live) {
        hlog(&s->cfg, 2, 0, "drained; exiting");
        stop_all(s);
    }
}

void on_drain_timeout(uv_timer_t *t) {
    server *s = t->data;
    hlog(&s->cfg, 1, 0, "drain timeout (%d s): exiting with requests in flight",
         s->cfg.drain_timeout_s);
    stop_all(s);
}

void on_signal(uv_signal_t *h, int sig) {
    server *s = h->data;
    if (s->draining) return;
    s->draining = 1;
    hlog(&s->cfg, 2, 0, "%s: stop accepting, draining in-flight requests",
         sig == SIGTERM ? "SIGTERM" : "SIGINT");
    notify("STOPPING=1");
    if (s->mhd) {
        MHD_socket fd = MHD_quiesce_daemon(s->mhd);
        if (fd != MHD_INVALID_SOCKET) close(fd);
    }
    if (s->load_failed || !s->ready) {
        stop_all(s);
        return;
    }
    uv_timer_start(&s->drain_timer, on_drain_timeout, (uint64_t)s->cfg.drain_timeout_s * 1000, 0);
    maybe_finish_drain(s);
}

/* ---- main ------------------------------------------------------------------------------- */

int check_only(server *s) {
    hc_errbuf eb = {{0}};
    int rc = load_model(s, &eb);
    if (rc) {
        fprintf(stderr, "hllm-creatord: -t: cannot load model package '%s': %s\n", s->cfg.model,
                eb.msg[0] ? eb.msg : hc_strerror(rc));
    } else if (tables_load_start(s)) {
        fprintf(stderr, "hllm-creatord: -t: the title tables do not load (above)\n");
        rc = 1;
    } else {
        fprintf(stderr, "hllm-creatord: -t: configuration, model package '%s' and %d title "
                        "table%s (%zu entries) are OK%s%s\n", s->cfg.model, s->cfg.n_title_tables,
                s->cfg.n_title_tables == 1 ? "" : "s", tt_entries(s->tables),
                s->keys ? "; API keys required" : "", s->tls_cert_pem ? "; HTTPS" : "");
    }
    tt_free(s->tables);
    s->tables = NULL;
    hc_csched_free(s->sched);
    hc_creator_free(s->creator);
    hc_backend_free(s->be);
    return rc ? 1 : 0;
}

void close_cb(uv_handle_t *h) {
    (void)h;
}

int main(int argc, char **argv) {
    server *s = calloc(1, sizeof *s);
    if (!s) return 1;
    hcd_config_defaults(&s->cfg);
    int pr = hcd_config_parse(&s->cfg, argc, argv);
    if (pr) {
        free(s);
        return pr > 0 ? 0 : 2;
    }
    struct sockaddr_in sa;
    memset(&sa, 0, sizeof sa);
    sa.sin_family = AF_INET;
    sa.sin_port = htons((uint16_t)s->cfg.port);
    if (inet_pton(AF_INET, s->cfg.listen, &sa.sin_addr) != 1) { /* checked by -t too */
        fprintf(stderr, "hllm-creatord: --listen expects an IPv4 address, got '%s'\n",
                s->cfg.listen);
        free(s);
        return 2;
    }
    char err[4400];
    if (keys_load(&s->cfg, &s->keys, err, sizeof err) || tls_load(s, err, sizeof err)) {
        fprintf(stderr, "hllm-creatord: %s%s\n", s->cfg.check_only ? "-t: " : "", err);
        keys_free(s->keys);
        free(s->tls_cert_pem);
        free(s->tls_key_pem);
        free(s);
        return 1;
    }
    if (s->keys)
        hlog(&s->cfg, 2, 0, "API keys: %d accepted (every path but /healthz needs one)",
             s->keys->n);
    if (s->cfg.check_only) {
        int rc = check_only(s);
        keys_free(s->keys);
        free(s->tls_cert_pem);
        free(s->tls_key_pem);
        free(s);
        return rc;
    }
    if (caches_create(s)) {
        fprintf(stderr, "hllm-creatord: out of memory creating the caches\n");
        caches_free(s);
        free(s);
        return 1;
    }
    uv_loop_init(&s->loop);
    pthread_mutex_init(&s->mu, NULL);
    pthread_cond_init(&s->cv, NULL);
    /* TLS (tls.c): the PEM texts checked by tls_load */
    struct MHD_OptionItem tls_opts[] = {
        {MHD_OPTION_HTTPS_MEM_CERT, 0, s->tls_cert_pem},
        {MHD_OPTION_HTTPS_MEM_KEY, 0, s->tls_key_pem},
        {MHD_OPTION_END, 0, NULL}};
    const int tls = s->tls_cert_pem != NULL;
    s->mhd = MHD_start_daemon(MHD_USE_EPOLL | MHD_ALLOW_SUSPEND_RESUME | (tls ? MHD_USE_TLS : 0),
                              (uint16_t)s->cfg.port, NULL, NULL, on_access, s,
                              MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&sa,
                              MHD_OPTION_NOTIFY_COMPLETED, on_completed, s,
                              MHD_OPTION_NOTIFY_CONNECTION, on_connection, s,
                              MHD_OPTION_CONNECTION_LIMIT, (unsigned)s->cfg.max_connections,
                              MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)60, MHD_OPTION_ARRAY,
                              tls ? tls_opts : tls_opts + 2, MHD_OPTION_END);
    if (!s->mhd) {
        fprintf(stderr, "hllm-creatord: cannot listen on %s:%d%s: %s\n", s->cfg.listen,
                s->cfg.port, tls ? " (HTTPS)" : "", strerror(errno));
        uv_loop_close(&s->loop);
        caches_free(s);
        keys_free(s->keys);
        free(s->tls_cert_pem);
        free(s->tls_key_pem);
        free(s);
        return 1;
    }
    const union MHD_DaemonInfo *bi = MHD_get_daemon_info(s->mhd, MHD_DAEMON_INFO_BIND_PORT);
    hlog(&s->cfg, 2, 0, "listening on %s:%u (%s)", s->cfg.listen,
         bi ? (unsigned)bi->port : (unsigned)s->cfg.port, tls ? "HTTPS" : "HTTP");
    const union MHD_DaemonInfo *ei = MHD_get_daemon_info(s->mhd, MHD_DAEMON_INFO_EPOLL_FD);
    uv_poll_init(&s->loop, &s->poll, ei->epoll_fd);
    s->poll.data = s;
    uv_poll_start(&s->poll, UV_READABLE, on_poll);
    uv_timer_init(&s->loop, &s->timer);
    s->timer.data = s;
    uv_timer_init(&s->loop, &s->drain_timer);
    s->drain_timer.data = s;
    uv_async_init(&s->loop, &s->async, on_async);
    s->async.data = s;
    uv_signal_init(&s->loop, &s->sigterm);
    s->sigterm.data = s;
    uv_signal_start(&s->sigterm, on_signal, SIGTERM);
    uv_signal_init(&s->loop, &s->sigint);
    s->sigint.data = s;
    uv_signal_start(&s->sigint, on_signal, SIGINT);
    uv_signal_init(&s->loop, &s->sighup);
    s->sighup.data = s;
    uv_signal_start(&s->sighup, on_sighup, SIGHUP);
    uv_timer_init(&s->loop, &s->watchdog);
    s->watchdog.data = s;
    if (sd_watchdog_enabled(0, &s->watchdog_usec) > 0 && s->watchdog_usec > 0) {
        uint64_t every = s->watchdog_usec / 2000 ? s->watchdog_usec / 2000 : 1;
        hlog(&s->cfg, 2, 0, "watchdog: WATCHDOG=1 every %" PRIu64 " ms", every);
        uv_timer_start(&s->watchdog, on_watchdog, every, every);
    }
    s->eng_loading = 1;
    hlog(&s->cfg, 2, 0, "loading model package %s (backend %s)", s->cfg.model, s->cfg.backend);
    sched_metrics_init(s);
    pthread_create(&s->engine, NULL, engine_main, s);
    run_mhd(s);
    uv_run(&s->loop, UV_RUN_DEFAULT);

    /* shutdown: stop the engine thread, then HTTP, then free */
    pthread_mutex_lock(&s->mu);
    s->stop_engine = 1;
    pthread_cond_signal(&s->cv);
    pthread_mutex_unlock(&s->mu);
    pthread_join(s->engine, NULL);
    on_async(&s->async); /* events posted before the stop */
    /* requests still live (drain timeout): drop their connections' state */
    while (s->live) {
        request *r = s->live;
        r->fail_status = 503;
        snprintf(r->fail_msg, sizeof r->fail_msg, "the server shut down (drain timeout)");
        r->t_finished = now_ms();
        complete(s, r); /* unlinks r */
    }
    uv_poll_stop(&s->poll);
    MHD_stop_daemon(s->mhd); /* calls on_completed for each connection */
    s->mhd = NULL;
    uv_close((uv_handle_t *)&s->poll, close_cb);
    uv_close((uv_handle_t *)&s->timer, close_cb);
    uv_close((uv_handle_t *)&s->drain_timer, close_cb);
    uv_close((uv_handle_t *)&s->async, close_cb);
    uv_close((uv_handle_t *)&s->sigterm, close_cb);
    uv_close((uv_handle_t *)&s->sigint, close_cb);
    uv_close((uv_handle_t *)&s->sighup, close_cb);
    uv_close((uv_handle_t *)&s->watchdog, close_cb);
    /* a uv_stop from the drained events above makes one uv_run return at once: run until the
     * close callbacks have all run, so that uv_loop_close frees the loop */
    while (uv_run(&s->loop, UV_RUN_DEFAULT)) {
    }
    if (uv_loop_close(&s->loop)) hlog(&s->cfg, 1, 0, "the event loop did not close cleanly");
    /* jobs never taken, events never drained */
    while (s->jobs_head) {
        job *j = s->jobs_head;
        s->jobs_head = j->next;
        if (j->kind == JOB_SUBMIT) hc_creq_buf_free(&j->buf);
        free(j);
    }
    while (s->evs_head) {
        event *e = s->evs_head;
        s->evs_head = e->next;
        free(e->u);
        free(e->U);
        free(e);
    }
    caches_free(s); /* after the requests: none is attached to a flight any more */
    tt_free(s->tables); /* after the loop: a reload in flight has finished */
    if (s->item_ctx) hc_tok_ctx_free(s->item_ctx);
    if (s->creative_ctx) hc_tok_ctx_free(s->creative_ctx);
    hc_csched_free(s->sched);
    free(s->drop_emb);
    keys_free(s->keys);
    free(s->tls_cert_pem);
    free(s->tls_key_pem);
    hc_creator_free(s->creator);
    hc_backend_free(s->be);
    pthread_mutex_destroy(&s->mu);
    pthread_cond_destroy(&s->cv);
    int code = s->exit_code;
    free(s);
    notify_flush(1000);
    return code;
}
