/* daemon.c: hllm-creatord.
 *
 * Threads: the libuv loop thread owns HTTP (libmicrohttpd in external epoll mode, its epoll fd
 * watched by uv_poll, a one-shot uv_timer re-armed from MHD_get_timeout after every MHD_run; every
 * MHD call happens on that thread), parses and validates requests (jansson) and tokenizes them
 * with its own tokenizer contexts; it hands jobs (submit / cancel) to ONE engine thread through a
 * mutex-protected queue. The engine thread loads the package, owns the hc_creator and an
 * hc_csched and runs hc_csched_step; its events come back through a second queue and
 * uv_async_send, drained in full on each wake. Signals (SIGTERM/SIGINT) via uv_signal: stop
 * accepting, drain in-flight requests up to --drain-timeout, exit 0.
 */

#include "server.h"

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
    if (rc)
        fprintf(stderr, "hllm-creatord: -t: cannot load model package '%s': %s\n", s->cfg.model,
                eb.msg[0] ? eb.msg : hc_strerror(rc));
    else
        fprintf(stderr, "hllm-creatord: -t: configuration and model package '%s' are OK\n",
                s->cfg.model);
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
    if (s->cfg.check_only) {
        int rc = check_only(s);
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
    s->mhd = MHD_start_daemon(MHD_USE_EPOLL | MHD_ALLOW_SUSPEND_RESUME, (uint16_t)s->cfg.port, NULL,
                              NULL, on_access, s, MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&sa,
                              MHD_OPTION_NOTIFY_COMPLETED, on_completed, s,
                              MHD_OPTION_NOTIFY_CONNECTION, on_connection, s,
                              MHD_OPTION_CONNECTION_LIMIT, (unsigned)s->cfg.max_connections,
                              MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)60, MHD_OPTION_END);
    if (!s->mhd) {
        fprintf(stderr, "hllm-creatord: cannot listen on %s:%d: %s\n", s->cfg.listen, s->cfg.port,
                strerror(errno));
        uv_loop_close(&s->loop);
        caches_free(s);
        free(s);
        return 1;
    }
    const union MHD_DaemonInfo *bi = MHD_get_daemon_info(s->mhd, MHD_DAEMON_INFO_BIND_PORT);
    hlog(&s->cfg, 2, 0, "listening on %s:%u", s->cfg.listen,
         bi ? (unsigned)bi->port : (unsigned)s->cfg.port);
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
    hlog(&s->cfg, 2, 0, "loading model package %s (backend %s)", s->cfg.model, s->cfg.backend);
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
    if (s->item_ctx) hc_tok_ctx_free(s->item_ctx);
    if (s->creative_ctx) hc_tok_ctx_free(s->creative_ctx);
    hc_csched_free(s->sched);
    hc_creator_free(s->creator);
    hc_backend_free(s->be);
    pthread_mutex_destroy(&s->mu);
    pthread_cond_destroy(&s->cv);
    int code = s->exit_code;
    free(s);
    return code;
}
