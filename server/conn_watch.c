/* conn_watch.c: a client that hangs up while its request waits for the engine.
 *
 * libmicrohttpd does not poll a suspended connection, so a client that disconnects from a
 * request whose connection is suspended (a non-streaming request waiting for its answer, or a
 * stream between two events) would only be noticed at the next write: for a non-streaming
 * request that is after the whole generation. So while a connection is suspended its socket is
 * watched with a uv_poll for the peer's hang-up alone (UV_DISCONNECT: EPOLLRDHUP, plus
 * EPOLLHUP/EPOLLERR; pipelined data does not wake it). On a hang-up the request is marked
 * client_gone and its connection resumed; the access handler (or the stream reader) then
 * returns an error, libmicrohttpd closes the connection and calls on_completed, which cancels
 * the request's engine work or detaches it from a shared generation, as for a stream whose write
 * failed. The watch is paused (uv_poll_stop) before every resume, started again on the next
 * suspension (a stream suspends after each event), and closed when the connection's request
 * ends (on_completed, request_free), so it never outlives the connection's socket. */
#include "server.h"

static void watch_closed(uv_handle_t *h) {
    free(h);
}

void watch_stop(request *r) {
    if (!r->watch) return;
    uv_poll_stop(r->watch);
    uv_close((uv_handle_t *)r->watch, watch_closed);
    r->watch = NULL;
}

/* Before a resume: the handle stays (a stream suspends again after each event), unwatched. */
void watch_pause(request *r) {
    if (r->watch) uv_poll_stop(r->watch);
}

static void on_hangup(uv_poll_t *h, int status, int events) {
    request *r = h->data;
    server *s = r->srv;
    (void)events;
    watch_stop(r);
    if (!r->conn || r->finished) return;
    hlog(&s->cfg, 2, r->id, "client hung up while waiting (%s); closing its connection",
         status < 0 ? uv_strerror(status) : "peer closed");
    r->client_gone = 1;
    if (r->suspended) {
        r->suspended = 0;
        MHD_resume_connection(r->conn);
    }
    run_mhd(s);
}

static void watch_start(server *s, request *r) {
    if (!r->conn || !s->mhd) return;
    if (r->watch) {
        if (uv_poll_start(r->watch, UV_DISCONNECT, on_hangup)) watch_stop(r);
        return;
    }
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(r->conn, MHD_CONNECTION_INFO_CONNECTION_FD);
    if (!ci) return;
    uv_poll_t *w = malloc(sizeof *w);
    if (!w) return;
    if (uv_poll_init_socket(&s->loop, w, ci->connect_fd)) {
        free(w);
        return;
    }
    w->data = r;
    if (uv_poll_start(w, UV_DISCONNECT, on_hangup)) {
        uv_close((uv_handle_t *)w, watch_closed);
        return;
    }
    r->watch = w;
}

void suspend_req(server *s, request *r) {
    if (!r->conn || r->suspended) return;
    r->suspended = 1;
    MHD_suspend_connection(r->conn);
    watch_start(s, r);
}
