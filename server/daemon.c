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
#include <errno.h>
#include <inttypes.h>
#include <microhttpd.h>
#include <jansson.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <strings.h>
#include <uv.h>
#include <arpa/inet.h>
#include <netinet/in.h>

#include "config.h"
#include "creator/creator.h"
#include "creator/creator_sched.h"
#include "core/error.h"
#include "tokenizer/tokenizer.h"

/* ---- logging ---------------------------------------------------------------------------- */

static void hlog(const hcd_config *cfg, int level, uint64_t rid, const char *fmt, ...) {
    static const char *names[] = {"error", "warn", "info", "debug"};
    if (level > cfg->log_level) return;
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    struct tm tm;
    gmtime_r(&ts.tv_sec, &tm);
    if (rid)
        fprintf(stderr, "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ %s req=%" PRIu64 " %s\n",
                tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                ts.tv_nsec / 1000000, names[level], rid, msg);
    else
        fprintf(stderr, "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ %s %s\n", tm.tm_year + 1900,
                tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, ts.tv_nsec / 1000000,
                names[level], msg);
}

static double now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

/* ---- queues between the threads --------------------------------------------------------- */

typedef enum { JOB_SUBMIT, JOB_CANCEL } job_kind;

typedef struct job {
    struct job *next;
    job_kind kind;
    uint64_t id;
    hc_creq req;     /* SUBMIT */
    hc_creq_buf buf; /* SUBMIT: freed by the engine thread after submit */
} job;

typedef enum { EV_READY, EV_LOAD_FAILED, EV_ACCEPTED, EV_REJECTED, EV_EMBEDDED, EV_TOKEN,
               EV_FINISHED, EV_FAILED } ev_kind;

typedef struct event {
    struct event *next;
    ev_kind kind;
    uint64_t id;
    double t;
    int status;
    int32_t token, cluster;
    float score;
    hc_finish finish;
    int n_u, n_U;
    float *u, *U; /* EMBEDDED of an embed request with "full" */
    char msg[768];
} event;

typedef struct stats_snapshot {
    int queued, embedded_waiting, generating;
    uint64_t prefill_tokens, decode_tokens, prefix_hits;
} stats_snapshot;

/* ---- the server ------------------------------------------------------------------------- */

typedef enum { RT_TITLES, RT_EMBED } req_type;
typedef enum { RS_READING, RS_WAITING, RS_DONE } req_state;

typedef struct request request;

typedef struct server {
    hcd_config cfg;
    uv_loop_t loop;
    uv_poll_t poll;
    uv_timer_t timer, drain_timer;
    uv_async_t async;
    uv_signal_t sigterm, sigint;
    struct MHD_Daemon *mhd;
    /* shared with the engine thread (mu) */
    pthread_t engine;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    job *jobs_head, *jobs_tail;
    event *evs_head, *evs_tail;
    int stop_engine;
    stats_snapshot snap;
    int full_embed_wanted; /* unused by the engine; kept for clarity */
    /* engine-thread only */
    hc_backend *be;
    hc_creator *creator;
    hc_csched *sched;
    /* loop-thread only */
    int ready, load_failed, draining, exit_code;
    hc_tok_ctx *item_ctx, *creative_ctx; /* the loop's own tokenizer contexts */
    request *live;                       /* requests waiting for the engine */
    uint64_t next_id;
    int n_connections;
    /* model info (set on READY, read-only afterwards) */
    int d_item, d_user, d_creative, n_clusters, max_history, max_item_tokens, max_new_default;
    hc_sampler_params sampling_default;
    /* metrics */
    uint64_t m_status[6]; /* 2xx 4xx... by index: 200,400,404,405,413,415 handled in m_by_code */
    uint64_t m_codes[600];
    uint64_t m_tokens, m_cancelled, m_rejected, m_requests_titles, m_requests_embed;
} server;

struct request {
    request *next; /* in server.live */
    server *srv;
    struct MHD_Connection *conn;
    uint64_t id;
    char client_id[128];
    req_type type;
    req_state state;
    char *body;
    size_t body_len, body_cap;
    int too_large;
    int stream, submitted, finished, suspended, closed, cancel_sent;
    /* results */
    int32_t *ids;
    int n_ids, cap_ids;
    char *text;
    size_t text_len, text_cap;
    int32_t cluster;
    float score;
    float *u, *U;
    int n_u, n_U, want_full;
    /* a users:embed batch ("users": [...]): one child request per user */
    request *parent;
    int slot, n_children, pending;
    json_t *results; /* the parent's per-user results, in order */
    hc_finish finish;
    int fail_status;
    char fail_msg[800];
    hc_detok *detok;
    double t_recv, t_accept, t_embedded, t_finished;
    /* streaming output */
    char *sse;
    size_t sse_len, sse_cap, sse_off;
    int sse_end;
    /* final response */
    int code;
    char *resp;
    const char *resp_type;
    int retry_after;
};

static void *xrealloc(void *p, size_t n) {
    void *q = realloc(p, n ? n : 1);
    if (!q) {
        fprintf(stderr, "hllm-creatord: out of memory\n");
        abort();
    }
    return q;
}

static void buf_append(char **b, size_t *len, size_t *cap, const char *s, size_t n) {
    if (*len + n + 1 > *cap) {
        size_t c = *cap ? *cap * 2 : 256;
        while (c < *len + n + 1) c *= 2;
        *b = xrealloc(*b, c);
        *cap = c;
    }
    memcpy(*b + *len, s, n);
    *len += n;
    (*b)[*len] = 0;
}

/* ---- engine thread ---------------------------------------------------------------------- */

static void post_event(server *s, event *e) {
    e->t = now_ms();
    e->next = NULL;
    pthread_mutex_lock(&s->mu);
    if (s->evs_tail) s->evs_tail->next = e;
    else s->evs_head = e;
    s->evs_tail = e;
    pthread_mutex_unlock(&s->mu);
    uv_async_send(&s->async);
}

static event *new_event(ev_kind k, uint64_t id) {
    event *e = calloc(1, sizeof *e);
    if (!e) abort();
    e->kind = k;
    e->id = id;
    return e;
}

static void engine_sink(void *user, const hc_cevent *ev) {
    server *s = user;
    event *e;
    switch (ev->kind) {
    case HC_CEV_EMBEDDED:
        e = new_event(EV_EMBEDDED, ev->id);
        e->cluster = ev->cluster;
        e->score = ev->cluster_score;
        if (ev->u && ev->U) {
            e->n_u = s->creator->d_user;
            e->n_U = s->creator->d_creative;
            e->u = malloc(sizeof(float) * (size_t)e->n_u);
            e->U = malloc(sizeof(float) * (size_t)e->n_U);
            if (!e->u || !e->U) abort();
            memcpy(e->u, ev->u, sizeof(float) * (size_t)e->n_u);
            memcpy(e->U, ev->U, sizeof(float) * (size_t)e->n_U);
        }
        break;
    case HC_CEV_TOKEN:
        e = new_event(EV_TOKEN, ev->id);
        e->token = ev->token;
        break;
    case HC_CEV_FINISHED:
        e = new_event(EV_FINISHED, ev->id);
        e->finish = ev->finish;
        break;
    default:
        e = new_event(EV_FAILED, ev->id);
        e->status = ev->status;
        snprintf(e->msg, sizeof e->msg, "%s", ev->message ? ev->message : hc_strerror(ev->status));
        break;
    }
    post_event(s, e);
}

static int backend_kind(const char *b) {
    if (!strcmp(b, "cuda")) return HC_BACKEND_CUDA;
    if (!strcmp(b, "auto")) return HC_BACKEND_AUTO;
    return HC_BACKEND_CPU;
}

static int load_model(server *s, hc_errbuf *eb) {
    hc_backend_params bp = hc_backend_default_params();
    bp.n_threads = s->cfg.threads;
    int rc = hc_backend_create_ex(&s->be, backend_kind(s->cfg.backend), &bp, eb);
    if (rc) return rc;
    rc = hc_package_probe(s->cfg.model, eb);
    if (rc == HC_ERR_NOTFOUND)
        return hc_seterr(eb, rc, "%s is not a model package (no creator.json; see "
                                 "proto/model-package.md)", s->cfg.model);
    if (rc) return rc;
    hc_creator_params p = hc_creator_default_params();
    p.n_threads = s->cfg.threads;
    rc = hc_creator_load(&s->creator, s->be, s->cfg.model, &p, eb);
    if (rc) return rc;
    if (!s->creator->creative)
        return hc_seterr(eb, HC_ERR_FORMAT, "the package has no creative LLM");
    hc_csched_params sp = hc_csched_default_params();
    sp.max_queued = s->cfg.max_queued;
    return hc_csched_create(&s->sched, s->creator, &sp, eb);
}

static void *engine_main(void *arg) {
    server *s = arg;
    hc_errbuf eb = {{0}};
    int rc = load_model(s, &eb);
    if (rc) {
        event *e = new_event(EV_LOAD_FAILED, 0);
        e->status = rc;
        snprintf(e->msg, sizeof e->msg, "%s", eb.msg[0] ? eb.msg : hc_strerror(rc));
        post_event(s, e);
    } else {
        post_event(s, new_event(EV_READY, 0));
    }
    for (;;) {
        pthread_mutex_lock(&s->mu);
        while (!s->stop_engine && !s->jobs_head && (!s->sched || hc_csched_idle(s->sched)))
            pthread_cond_wait(&s->cv, &s->mu);
        job *j = s->jobs_head;
        s->jobs_head = s->jobs_tail = NULL;
        int stop = s->stop_engine;
        pthread_mutex_unlock(&s->mu);
        while (j) {
            job *nx = j->next;
            if (j->kind == JOB_CANCEL) {
                if (s->sched) hc_csched_cancel(s->sched, j->id);
            } else {
                hc_errbuf reb = {{0}};
                int src = s->sched ? hc_csched_submit(s->sched, &j->req, &reb) : HC_ERR_INVAL;
                event *e = new_event(src ? EV_REJECTED : EV_ACCEPTED, j->id);
                e->status = src;
                if (src) snprintf(e->msg, sizeof e->msg, "%s", reb.msg[0] ? reb.msg : hc_strerror(src));
                post_event(s, e);
                hc_creq_buf_free(&j->buf);
            }
            free(j);
            j = nx;
        }
        if (stop) break;
        if (s->sched && !hc_csched_idle(s->sched)) {
            hc_errbuf seb = {{0}};
            int src = hc_csched_step(s->sched, engine_sink, s, &seb);
            if (src) {
                event *e = new_event(EV_FAILED, 0);
                e->status = src;
                snprintf(e->msg, sizeof e->msg, "engine step: %s", seb.msg[0] ? seb.msg : hc_strerror(src));
                post_event(s, e);
            }
            hc_csched_stats st = hc_csched_get_stats(s->sched);
            pthread_mutex_lock(&s->mu);
            s->snap.queued = st.queued;
            s->snap.embedded_waiting = st.embedded_waiting;
            s->snap.generating = st.generating;
            s->snap.prefill_tokens = st.gen.prefill_tokens;
            s->snap.decode_tokens = st.gen.decode_tokens;
            s->snap.prefix_hits = st.gen.prefix_hits;
            pthread_mutex_unlock(&s->mu);
        }
    }
    return NULL;
}

static void push_job(server *s, job *j) {
    j->next = NULL;
    pthread_mutex_lock(&s->mu);
    if (s->jobs_tail) s->jobs_tail->next = j;
    else s->jobs_head = j;
    s->jobs_tail = j;
    pthread_cond_signal(&s->cv);
    pthread_mutex_unlock(&s->mu);
}

/* ---- HTTP helpers (loop thread) --------------------------------------------------------- */

static void run_mhd(server *s);

static enum MHD_Result queue_body(server *s, struct MHD_Connection *c, int code, const char *type,
                                  const char *body, int retry_after) {
    struct MHD_Response *r =
        MHD_create_response_from_buffer(strlen(body), (void *)body, MHD_RESPMEM_MUST_COPY);
    if (!r) return MHD_NO;
    MHD_add_response_header(r, "Content-Type", type);
    if (retry_after > 0) {
        char ra[16];
        snprintf(ra, sizeof ra, "%d", retry_after);
        MHD_add_response_header(r, "Retry-After", ra);
    }
    if (code == 405) MHD_add_response_header(r, "Allow", "see proto/openapi.yaml");
    enum MHD_Result ret = MHD_queue_response(c, (unsigned)code, r);
    MHD_destroy_response(r);
    if (code >= 0 && code < 600) s->m_codes[code]++;
    return ret;
}

static char *json_error(const char *fmt, ...) {
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    json_t *o = json_pack("{s:s}", "error", msg);
    char *t = json_dumps(o, JSON_COMPACT);
    json_decref(o);
    return t;
}

static enum MHD_Result send_error(server *s, struct MHD_Connection *c, int code, const char *msg) {
    char *t = json_error("%s", msg);
    enum MHD_Result r = queue_body(s, c, code, "application/json", t, code == 429 || code == 503 ? 1 : 0);
    free(t);
    return r;
}

static request *find_live(server *s, uint64_t id) {
    for (request *r = s->live; r; r = r->next)
        if (r->id == id) return r;
    return NULL;
}

static void unlink_live(server *s, request *q) {
    for (request **p = &s->live; *p; p = &(*p)->next)
        if (*p == q) {
            *p = q->next;
            return;
        }
}

static void request_free(request *r) {
    free(r->body);
    free(r->ids);
    free(r->text);
    free(r->u);
    free(r->U);
    free(r->sse);
    free(r->resp);
    if (r->results) json_decref(r->results);
    if (r->detok) hc_detok_free(r->detok);
    free(r);
}

/* ---- request parsing (loop thread) ------------------------------------------------------ */

typedef struct parsed {
    const char **titles;
    size_t *lens;
    int n;
} parsed_hist;

/* Validates a history array; fills p (arrays malloc'ed). Returns NULL or an error message in err. */
static int parse_history(server *s, json_t *h, const char *field, parsed_hist *p, char *err,
                         size_t errn) {
    memset(p, 0, sizeof *p);
    if (!json_is_array(h)) {
        snprintf(err, errn, "%s must be an array of strings", field);
        return -1;
    }
    size_t n = json_array_size(h);
    if (n == 0) {
        snprintf(err, errn, "%s must not be empty", field);
        return -1;
    }
    if (n > (size_t)s->cfg.max_history_titles) {
        snprintf(err, errn, "%s has %zu titles; the limit is %d (max-history-titles)", field, n,
                 s->cfg.max_history_titles);
        return -1;
    }
    p->titles = calloc(n, sizeof *p->titles);
    p->lens = calloc(n, sizeof *p->lens);
    if (!p->titles || !p->lens) abort();
    for (size_t i = 0; i < n; i++) {
        json_t *t = json_array_get(h, i);
        if (!json_is_string(t)) {
            snprintf(err, errn, "%s[%zu] must be a string", field, i);
            return -1;
        }
        size_t len = json_string_length(t);
        if (len > (size_t)s->cfg.max_title_bytes) {
            snprintf(err, errn, "%s[%zu] is %zu bytes; the limit is %d (max-title-bytes)", field,
                     i, len, s->cfg.max_title_bytes);
            return -1;
        }
        p->titles[i] = json_string_value(t);
        p->lens[i] = len;
    }
    p->n = (int)n;
    return 0;
}

static void hist_free(parsed_hist *p) {
    free(p->titles);
    free(p->lens);
}

static int get_num(json_t *o, const char *k, double lo, double hi, double *out, char *err,
                   size_t errn, const char *prefix) {
    json_t *v = json_object_get(o, k);
    if (!v || json_is_null(v)) return 0;
    if (!json_is_number(v)) {
        snprintf(err, errn, "%s%s must be a number", prefix, k);
        return -1;
    }
    double x = json_number_value(v);
    if (!(x >= lo && x <= hi)) {
        snprintf(err, errn, "%s%s must be in [%g, %g]", prefix, k, lo, hi);
        return -1;
    }
    *out = x;
    return 1;
}

/* Parses and tokenizes a titles/embed body into a job. Returns 0, or an HTTP status with err. */
static int tokenize_embed(server *s, json_t *user, const char *field, uint64_t id, job **out,
                          char *err, size_t errn) {
    char f[64];
    snprintf(f, sizeof f, "%s.history", field);
    if (!json_is_object(user)) {
        snprintf(err, errn, "%s must be an object with a history array", field);
        return 400;
    }
    parsed_hist ph;
    if (parse_history(s, json_object_get(user, "history"), f, &ph, err, errn)) {
        hist_free(&ph);
        return 400;
    }
    hc_history h = {ph.titles, ph.lens, ph.n};
    hc_errbuf eb = {{0}};
    job *j = calloc(1, sizeof *j);
    if (!j) abort();
    int rc = hc_creator_tokenize_request(s->creator, s->item_ctx, s->creative_ctx, &h, NULL, 0,
                                         NULL, 0, &j->req, &j->buf, &eb);
    hist_free(&ph);
    if (rc) {
        free(j);
        snprintf(err, errn, "%s: %s", field, eb.msg[0] ? eb.msg : hc_strerror(rc));
        return 400;
    }
    j->kind = JOB_SUBMIT;
    j->id = j->req.id = id;
    j->req.mode = HC_CREQ_EMBED;
    j->req.sampling = s->sampling_default;
    *out = j;
    return 0;
}

static void free_jobs(job *j) {
    while (j) {
        job *nx = j->next;
        hc_creq_buf_free(&j->buf);
        free(j);
        j = nx;
    }
}

/* Parses and tokenizes a body into jobs (*out: one, or one per user of a users:embed batch, whose
 * child requests are made here). Returns 0, or an HTTP status with err. */
static int build_job(server *s, request *r, job **out, char *err, size_t errn) {
    job *j = NULL;
    *out = NULL;
    json_error_t je;
    json_t *root = json_loadb(r->body ? r->body : "", r->body_len, JSON_REJECT_DUPLICATES, &je);
    if (!root) {
        snprintf(err, errn, "invalid JSON body: %s (line %d, column %d)", je.text, je.line,
                 je.column);
        return 400;
    }
    int code = 400;
    parsed_hist ph = {0};
    if (!json_is_object(root)) {
        snprintf(err, errn, "the body must be a JSON object");
        goto out;
    }
    json_t *rid = json_object_get(root, "request_id");
    if (rid && !json_is_null(rid)) {
        if (!json_is_string(rid) || json_string_length(rid) > 100) {
            snprintf(err, errn, "request_id must be a string of at most 100 bytes");
            goto out;
        }
        snprintf(r->client_id, sizeof r->client_id, "%s", json_string_value(rid));
    }
    json_t *full = json_object_get(root, "full");
    if (full && !json_is_boolean(full)) {
        snprintf(err, errn, "full must be a boolean");
        goto out;
    }
    r->want_full = full && json_is_true(full);
    json_t *users = json_object_get(root, "users");
    if (r->type == RT_EMBED && users) {
        if (!json_is_array(users) || !json_array_size(users)) {
            snprintf(err, errn, "users must be a non-empty array of {\"history\": [...]} objects");
            goto out;
        }
        if (json_array_size(users) > (size_t)s->cfg.max_queued) {
            snprintf(err, errn, "users has %zu entries; the limit is %d (max-queued)",
                     json_array_size(users), s->cfg.max_queued);
            goto out;
        }
        job *head = NULL, **tail = &head;
        for (size_t i = 0; i < json_array_size(users); i++) {
            char field[32];
            snprintf(field, sizeof field, "users[%zu]", i);
            job *cj;
            if (tokenize_embed(s, json_array_get(users, i), field, r->id + 1 + i, &cj, err, errn)) {
                free_jobs(head);
                goto out;
            }
            *tail = cj;
            tail = &cj->next;
        }
        r->n_children = (int)json_array_size(users);
        *out = head;
        code = 0;
        goto out;
    }
    json_t *user = json_object_get(root, "user");
    if (!json_is_object(user)) {
        snprintf(err, errn, "user must be an object with a history array");
        goto out;
    }
    if (parse_history(s, json_object_get(user, "history"), "user.history", &ph, err, errn)) goto out;
    const char *at = NULL, *ad = NULL;
    size_t atl = 0, adl = 0;
    hc_creq_mode mode = HC_CREQ_EMBED;
    hc_sampler_params sp = s->sampling_default;
    int max_new = s->max_new_default;
    if (r->type == RT_TITLES) {
        json_t *a = json_object_get(root, "ad");
        if (!json_is_object(a)) {
            snprintf(err, errn, "ad must be an object with a title string");
            goto out;
        }
        json_t *t = json_object_get(a, "title"), *d = json_object_get(a, "description");
        if (!json_is_string(t)) {
            snprintf(err, errn, "ad.title must be a string");
            goto out;
        }
        if (d && !json_is_null(d) && !json_is_string(d)) {
            snprintf(err, errn, "ad.description must be a string");
            goto out;
        }
        at = json_string_value(t);
        atl = json_string_length(t);
        if (atl > (size_t)s->cfg.max_title_bytes) {
            snprintf(err, errn, "ad.title is %zu bytes; the limit is %d (max-title-bytes)", atl,
                     s->cfg.max_title_bytes);
            goto out;
        }
        if (json_is_string(d)) {
            ad = json_string_value(d);
            adl = json_string_length(d);
            if (adl > (size_t)s->cfg.max_title_bytes * 4) {
                snprintf(err, errn, "ad.description is %zu bytes; the limit is %d "
                                    "(4 x max-title-bytes)", adl, s->cfg.max_title_bytes * 4);
                goto out;
            }
        }
        json_t *m = json_object_get(root, "mode");
        mode = HC_CREQ_CLUSTER;
        if (m && !json_is_null(m)) {
            if (!json_is_string(m) || (strcmp(json_string_value(m), "cluster") &&
                                       strcmp(json_string_value(m), "per_user"))) {
                snprintf(err, errn, "mode must be \"cluster\" or \"per_user\"");
                goto out;
            }
            if (!strcmp(json_string_value(m), "per_user")) mode = HC_CREQ_PER_USER;
        }
        json_t *st = json_object_get(root, "stream");
        if (st && !json_is_null(st) && !json_is_boolean(st)) {
            snprintf(err, errn, "stream must be a boolean");
            goto out;
        }
        r->stream = st && json_is_true(st);
        double x;
        int g = get_num(root, "max_new_tokens", 0, 4096, &x, err, errn, "");
        if (g < 0) goto out;
        if (g) {
            if (x != (double)(int)x) {
                snprintf(err, errn, "max_new_tokens must be an integer");
                goto out;
            }
            max_new = (int)x;
        }
        json_t *smp = json_object_get(root, "sampling");
        if (smp && !json_is_null(smp)) {
            if (!json_is_object(smp)) {
                snprintf(err, errn, "sampling must be an object");
                goto out;
            }
            if ((g = get_num(smp, "temperature", 0, 100, &x, err, errn, "sampling.")) < 0) goto out;
            if (g) {
                sp.temperature = (float)x;
                sp.greedy = x == 0;
            }
            if ((g = get_num(smp, "top_k", 0, 1e9, &x, err, errn, "sampling.")) < 0) goto out;
            if (g) sp.top_k = (int)x;
            if ((g = get_num(smp, "top_p", 1e-9, 1, &x, err, errn, "sampling.")) < 0) goto out;
            if (g) sp.top_p = (float)x;
            if ((g = get_num(smp, "seed", 0, 9007199254740992.0, &x, err, errn, "sampling.")) < 0)
                goto out;
            if (g) sp.seed = (uint64_t)x;
            json_t *gr = json_object_get(smp, "greedy");
            if (gr && !json_is_null(gr)) {
                if (!json_is_boolean(gr)) {
                    snprintf(err, errn, "sampling.greedy must be a boolean");
                    goto out;
                }
                if (json_is_true(gr)) sp.greedy = 1;
                else if (sp.temperature > 0) sp.greedy = 0;
            }
        }
    }
    hc_history h = {ph.titles, ph.lens, ph.n};
    hc_errbuf eb = {{0}};
    j = calloc(1, sizeof *j);
    if (!j) abort();
    int rc = hc_creator_tokenize_request(s->creator, s->item_ctx, s->creative_ctx, &h,
                                         r->type == RT_TITLES ? at : NULL, atl, ad, adl, &j->req,
                                         &j->buf, &eb);
    if (rc) {
        free(j);
        snprintf(err, errn, "%s", eb.msg[0] ? eb.msg : hc_strerror(rc));
        goto out;
    }
    *out = j;
    j->kind = JOB_SUBMIT;
    j->id = r->id;
    j->req.id = r->id;
    j->req.mode = mode;
    j->req.sampling = sp;
    j->req.max_new = max_new;
    code = 0;
out:
    hist_free(&ph);
    json_decref(root);
    return code;
}

/* ---- responses from events -------------------------------------------------------------- */

static void add_timings(request *r, json_t *o) {
    double te = r->t_embedded ? r->t_embedded : r->t_finished;
    json_object_set_new(o, "timings",
                        json_pack("{s:f,s:f,s:f,s:f}", "queue", r->t_accept - r->t_recv, "embed",
                                  te - r->t_accept, "generate", r->t_finished - te, "total",
                                  r->t_finished - r->t_recv));
}

static json_t *title_json(request *r) {
    json_t *ids = json_array();
    for (int i = 0; i < r->n_ids; i++) json_array_append_new(ids, json_integer(r->ids[i]));
    json_t *o = json_object();
    json_object_set_new(o, "title", json_stringn(r->text ? r->text : "", r->text_len));
    json_object_set_new(o, "ids", ids);
    json_object_set_new(o, "cluster", r->cluster >= 0 ? json_integer(r->cluster) : json_null());
    json_object_set_new(o, "finish", json_string(hc_finish_name(r->finish)));
    if (r->client_id[0]) json_object_set_new(o, "request_id", json_string(r->client_id));
    add_timings(r, o);
    return o;
}

static json_t *floats(const float *v, int n) {
    json_t *a = json_array();
    for (int i = 0; i < n; i++) json_array_append_new(a, json_real(v[i]));
    return a;
}

static void sse_event(request *r, const char *name, json_t *data) {
    char *d = json_dumps(data, JSON_COMPACT);
    json_decref(data);
    char head[64];
    int n = snprintf(head, sizeof head, "event: %s\ndata: ", name);
    buf_append(&r->sse, &r->sse_len, &r->sse_cap, head, (size_t)n);
    buf_append(&r->sse, &r->sse_len, &r->sse_cap, d, strlen(d));
    buf_append(&r->sse, &r->sse_len, &r->sse_cap, "\n\n", 2);
    free(d);
}

static void wake(request *r) {
    if (r->suspended && r->conn) {
        r->suspended = 0;
        MHD_resume_connection(r->conn);
    }
}

/* The request got its last event: build the response (or the stream's last event). */
static void complete(server *s, request *r) {
    r->finished = 1;
    unlink_live(s, r);
    if (r->parent) {
        request *p = r->parent;
        json_t *o;
        if (r->fail_status) {
            o = json_pack("{s:i,s:s}", "status", r->fail_status, "error", r->fail_msg);
        } else {
            o = json_object();
            json_object_set_new(o, "cluster", r->cluster >= 0 ? json_integer(r->cluster) : json_null());
            json_object_set_new(o, "score", r->cluster >= 0 ? json_real(r->score) : json_null());
            if (r->want_full && r->u) {
                json_object_set_new(o, "u", floats(r->u, r->n_u));
                json_object_set_new(o, "U", floats(r->U, r->n_U));
            }
        }
        json_array_set_new(p->results, (size_t)r->slot, o);
        if (r->t_finished > p->t_finished) p->t_finished = r->t_finished;
        if (!p->t_accept || r->t_accept < p->t_accept) p->t_accept = r->t_accept;
        request_free(r);
        if (--p->pending) return;
        p->finished = 1;
        if (!p->conn) {
            request_free(p);
            return;
        }
        /* all failed alike (e.g. 429): that status; otherwise 200 with per-user results */
        size_t i, n = json_array_size(p->results);
        json_t *first = json_array_get(p->results, 0);
        json_t *st = json_object_get(first, "status");
        for (i = 1; st && i < n; i++) {
            json_t *si = json_object_get(json_array_get(p->results, i), "status");
            if (!si || json_integer_value(si) != json_integer_value(st)) break;
        }
        if (st && i == n) {
            p->code = (int)json_integer_value(st);
            p->resp = json_error("%s", json_string_value(json_object_get(first, "error")));
            p->retry_after = p->code == 429;
        } else {
            json_t *o2 = json_pack("{s:O}", "results", p->results);
            if (p->client_id[0]) json_object_set_new(o2, "request_id", json_string(p->client_id));
            p->t_embedded = p->t_finished;
            add_timings(p, o2);
            p->resp = json_dumps(o2, JSON_COMPACT);
            json_decref(o2);
            p->code = 200;
        }
        p->state = RS_DONE;
        wake(p);
        return;
    }
    if (!r->conn) { /* the client went away */
        request_free(r);
        return;
    }
    if (r->stream) {
        if (r->fail_status) {
            sse_event(r, "error", json_pack("{s:s}", "error", r->fail_msg));
        } else {
            json_t *o = title_json(r);
            json_object_del(o, "ids");
            sse_event(r, "done", o);
        }
        r->sse_end = 1;
    } else if (r->fail_status) {
        r->code = r->fail_status;
        r->resp = json_error("%s", r->fail_msg);
    } else if (r->type == RT_TITLES) {
        json_t *o = title_json(r);
        r->resp = json_dumps(o, JSON_COMPACT);
        json_decref(o);
        r->code = 200;
    } else {
        json_t *o = json_object();
        json_object_set_new(o, "cluster", r->cluster >= 0 ? json_integer(r->cluster) : json_null());
        json_object_set_new(o, "score", r->cluster >= 0 ? json_real(r->score) : json_null());
        if (r->want_full && r->u) {
            json_object_set_new(o, "u", floats(r->u, r->n_u));
            json_object_set_new(o, "U", floats(r->U, r->n_U));
        }
        if (r->client_id[0]) json_object_set_new(o, "request_id", json_string(r->client_id));
        add_timings(r, o);
        r->resp = json_dumps(o, JSON_COMPACT);
        json_decref(o);
        r->code = 200;
    }
    r->state = RS_DONE;
    wake(r);
}

static void handle_event(server *s, event *e) {
    if (e->kind == EV_READY) {
        hc_creator *c = s->creator;
        s->item_ctx = hc_tok_ctx_new(c->item_tok);
        s->creative_ctx = hc_tok_ctx_new(c->creative_tok);
        if (!s->item_ctx || !s->creative_ctx) {
            hlog(&s->cfg, 0, 0, "cannot create tokenizer contexts");
            s->load_failed = 1;
            return;
        }
        s->d_item = c->d_item;
        s->d_user = c->d_user;
        s->d_creative = c->d_creative;
        s->max_history = c->pkg.max_history;
        s->max_item_tokens = c->pkg.max_item_tokens;
        s->max_new_default = c->pkg.max_new_tokens;
        s->sampling_default = c->pkg.sampling;
        s->n_clusters = c->clusters ? hc_cluster_index_k(c->clusters) : 0;
        s->ready = 1;
        hlog(&s->cfg, 2, 0, "model package %s loaded; ready", s->cfg.model);
        return;
    }
    if (e->kind == EV_LOAD_FAILED) {
        hlog(&s->cfg, 0, 0, "cannot load model package '%s': %s", s->cfg.model, e->msg);
        s->load_failed = 1;
        s->exit_code = 1;
        uv_stop(&s->loop);
        return;
    }
    if (e->kind == EV_FAILED && e->id == 0) {
        hlog(&s->cfg, 0, 0, "%s", e->msg);
        return;
    }
    request *r = find_live(s, e->id);
    if (!r) return;
    switch (e->kind) {
    case EV_ACCEPTED:
        r->t_accept = e->t;
        break;
    case EV_REJECTED:
        r->t_accept = r->t_finished = e->t;
        if (e->status == HC_ERR_AGAIN) {
            s->m_rejected++;
            r->fail_status = 429;
            snprintf(r->fail_msg, sizeof r->fail_msg, "the queue is full (max-queued %d); retry later",
                     s->cfg.max_queued);
            r->retry_after = 1;
        } else {
            r->fail_status = 400;
            snprintf(r->fail_msg, sizeof r->fail_msg, "%s", e->msg);
        }
        hlog(&s->cfg, 2, r->id, "rejected: %s", r->fail_msg);
        complete(s, r);
        break;
    case EV_EMBEDDED:
        r->t_embedded = e->t;
        r->cluster = e->cluster;
        r->score = e->score;
        if (r->want_full && e->u) {
            r->u = e->u;
            r->U = e->U;
            r->n_u = e->n_u;
            r->n_U = e->n_U;
            e->u = e->U = NULL;
        }
        if (r->stream && r->conn) {
            sse_event(r, "meta", json_pack("{s:o}", "cluster", r->cluster >= 0 ? json_integer(r->cluster) : json_null()));
            wake(r);
        }
        break;
    case EV_TOKEN: {
        s->m_tokens++;
        if (r->n_ids == r->cap_ids) {
            r->cap_ids = r->cap_ids ? r->cap_ids * 2 : 32;
            r->ids = xrealloc(r->ids, sizeof(int32_t) * (size_t)r->cap_ids);
        }
        r->ids[r->n_ids++] = e->token;
        const char *t;
        size_t n;
        if (!hc_detok_feed(r->detok, e->token, &t, &n) && n) {
            buf_append(&r->text, &r->text_len, &r->text_cap, t, n);
            if (r->stream && r->conn) {
                sse_event(r, "token", json_pack("{s:s%}", "text", t, n));
                wake(r);
            }
        }
        break;
    }
    case EV_FINISHED: {
        r->t_finished = e->t;
        r->finish = e->finish;
        const char *t;
        size_t n;
        if (r->detok && !hc_detok_finish(r->detok, &t, &n) && n) {
            buf_append(&r->text, &r->text_len, &r->text_cap, t, n);
            if (r->stream && r->conn) sse_event(r, "token", json_pack("{s:s%}", "text", t, n));
        }
        if (e->finish == HC_FINISH_CANCELLED) s->m_cancelled++;
        hlog(&s->cfg, 2, r->id, "finished: %s, %d tokens, %.1f ms", hc_finish_name(e->finish),
             r->n_ids, r->t_finished - r->t_recv);
        complete(s, r);
        break;
    }
    case EV_FAILED:
        r->t_finished = e->t;
        r->fail_status = 500;
        snprintf(r->fail_msg, sizeof r->fail_msg, "%s", e->msg);
        hlog(&s->cfg, 0, r->id, "failed: %s", e->msg);
        complete(s, r);
        break;
    default:
        break;
    }
}

static void maybe_finish_drain(server *s);

static void on_async(uv_async_t *a) {
    server *s = a->data;
    pthread_mutex_lock(&s->mu);
    event *e = s->evs_head;
    s->evs_head = s->evs_tail = NULL;
    pthread_mutex_unlock(&s->mu);
    while (e) {
        event *nx = e->next;
        handle_event(s, e);
        free(e->u);
        free(e->U);
        free(e);
        e = nx;
    }
    run_mhd(s);
    maybe_finish_drain(s);
}

/* ---- the MHD handlers ------------------------------------------------------------------- */

static ssize_t stream_reader(void *cls, uint64_t pos, char *buf, size_t max) {
    request *r = cls;
    if (r->sse_off < r->sse_len) {
        size_t n = r->sse_len - r->sse_off;
        if (n > max) n = max;
        memcpy(buf, r->sse + r->sse_off, n);
        r->sse_off += n;
        return (ssize_t)n;
    }
    if (r->sse_end) return MHD_CONTENT_READER_END_OF_STREAM;
    if (r->conn && !r->suspended) {
        r->suspended = 1;
        MHD_suspend_connection(r->conn);
    }
    return 0;
}

static enum MHD_Result handle_get(server *s, struct MHD_Connection *c, const char *url) {
    if (!strcmp(url, "/healthz")) return queue_body(s, c, 200, "application/json", "{\"status\":\"ok\"}", 0);
    if (!strcmp(url, "/readyz")) {
        if (s->ready && !s->draining)
            return queue_body(s, c, 200, "application/json", "{\"status\":\"ready\"}", 0);
        return queue_body(s, c, 503, "application/json",
                          s->draining ? "{\"status\":\"draining\"}" : "{\"status\":\"loading\"}", 1);
    }
    if (!strcmp(url, "/v1/model")) {
        if (!s->ready) return send_error(s, c, 503, "the model is loading");
        json_t *o = json_pack("{s:s,s:{s:i,s:i,s:i},s:i,s:i,s:i,s:i,s:{s:b,s:f,s:i,s:f}}",
                              "package", s->cfg.model, "dims", "item", s->d_item, "user", s->d_user,
                              "creative", s->d_creative, "clusters", s->n_clusters, "max_history",
                              s->max_history, "max_item_tokens", s->max_item_tokens,
                              "max_new_tokens", s->max_new_default, "sampling", "greedy",
                              s->sampling_default.greedy, "temperature",
                              (double)s->sampling_default.temperature, "top_k",
                              s->sampling_default.top_k, "top_p", (double)s->sampling_default.top_p);
        json_object_set_new(o, "limits", json_pack("{s:i,s:I,s:i,s:i}", "max_queued", s->cfg.max_queued,
                                                   "max_body_bytes", (json_int_t)s->cfg.max_body_bytes,
                                                   "max_history_titles", s->cfg.max_history_titles,
                                                   "max_title_bytes", s->cfg.max_title_bytes));
        char *t = json_dumps(o, JSON_COMPACT);
        json_decref(o);
        enum MHD_Result r = queue_body(s, c, 200, "application/json", t, 0);
        free(t);
        return r;
    }
    if (!strcmp(url, "/metrics")) {
        stats_snapshot sn;
        pthread_mutex_lock(&s->mu);
        sn = s->snap;
        pthread_mutex_unlock(&s->mu);
        char *b = NULL;
        size_t len = 0, cap = 0;
        char line[256];
        int n;
#define MLINE(...) do { n = snprintf(line, sizeof line, __VA_ARGS__); buf_append(&b, &len, &cap, line, (size_t)n); } while (0)
        MLINE("# TYPE hllm:requests_total counter\n");
        for (int code = 100; code < 600; code++)
            if (s->m_codes[code]) MLINE("hllm:requests_total{status=\"%d\"} %" PRIu64 "\n", code, s->m_codes[code]);
        MLINE("# TYPE hllm:requests_running gauge\nhllm:requests_running %d\n", sn.generating);
        MLINE("# TYPE hllm:requests_waiting gauge\nhllm:requests_waiting %d\n", sn.queued + sn.embedded_waiting);
        MLINE("# TYPE hllm:generated_tokens_total counter\nhllm:generated_tokens_total %" PRIu64 "\n", s->m_tokens);
        MLINE("# TYPE hllm:prefill_tokens_total counter\nhllm:prefill_tokens_total %" PRIu64 "\n", sn.prefill_tokens);
        MLINE("# TYPE hllm:prefix_hits_total counter\nhllm:prefix_hits_total %" PRIu64 "\n", sn.prefix_hits);
        MLINE("# TYPE hllm:cancelled_total counter\nhllm:cancelled_total %" PRIu64 "\n", s->m_cancelled);
        MLINE("# TYPE hllm:rejected_total counter\nhllm:rejected_total %" PRIu64 "\n", s->m_rejected);
#undef MLINE
        enum MHD_Result r = queue_body(s, c, 200, "text/plain; version=0.0.4", b, 0);
        free(b);
        return r;
    }
    return send_error(s, c, 404, "no such path");
}

static enum MHD_Result on_access(void *cls, struct MHD_Connection *c, const char *url,
                                 const char *method, const char *version, const char *data,
                                 size_t *data_size, void **con_cls) {
    server *s = cls;
    request *r = *con_cls;
    if (!r) {
        int is_post_path = !strcmp(url, "/v1/titles") || !strcmp(url, "/v1/users:embed");
        int is_get_path = !strcmp(url, "/healthz") || !strcmp(url, "/readyz") ||
                          !strcmp(url, "/v1/model") || !strcmp(url, "/metrics");
        if (!is_post_path && !is_get_path) return send_error(s, c, 404, "no such path");
        if (is_get_path) {
            if (strcmp(method, "GET") && strcmp(method, "HEAD"))
                return send_error(s, c, 405, "this path takes GET");
            return handle_get(s, c, url);
        }
        if (strcmp(method, "POST")) return send_error(s, c, 405, "this path takes POST");
        const char *ct = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Content-Type");
        if (!ct || strncasecmp(ct, "application/json", 16) || (ct[16] && ct[16] != ';' && ct[16] != ' '))
            return send_error(s, c, 415, "Content-Type must be application/json");
        r = calloc(1, sizeof *r);
        if (!r) return MHD_NO;
        r->srv = s;
        r->conn = c;
        r->type = !strcmp(url, "/v1/titles") ? RT_TITLES : RT_EMBED;
        r->cluster = -1;
        r->t_recv = now_ms();
        *con_cls = r;
        return MHD_YES;
    }
    if (r->state == RS_READING) {
        if (*data_size) {
            if (r->body_len + *data_size > (size_t)s->cfg.max_body_bytes) r->too_large = 1;
            else buf_append(&r->body, &r->body_len, &r->body_cap, data, *data_size);
            *data_size = 0;
            return MHD_YES;
        }
        /* the whole body is here */
        if (r->too_large) {
            char m[128];
            snprintf(m, sizeof m, "the body is larger than %ld bytes (max-body-bytes)", s->cfg.max_body_bytes);
            r->state = RS_DONE;
            return send_error(s, c, 413, m);
        }
        if (!s->ready || s->draining) {
            r->state = RS_DONE;
            return send_error(s, c, 503, s->draining ? "the server is shutting down" : "the model is loading");
        }
        r->id = ++s->next_id;
        job *j = NULL;
        char err[1024];
        int code = build_job(s, r, &j, err, sizeof err);
        free(r->body);
        r->body = NULL;
        if (code) {
            r->state = RS_DONE;
            hlog(&s->cfg, 2, r->id, "%d: %s", code, err);
            return send_error(s, c, code, err);
        }
        if (r->type == RT_TITLES) s->m_requests_titles++;
        else s->m_requests_embed++;
        r->detok = hc_detok_new(s->creator->creative_tok, 1);
        if (!r->detok) abort();
        hlog(&s->cfg, 3, r->id, "%s %s%s%s", method, url, r->client_id[0] ? " request_id=" : "", r->client_id);
        r->state = RS_WAITING;
        r->submitted = 1;
        if (r->n_children) {
            /* a batch: the children are live, the parent waits for all of them */
            r->pending = r->n_children;
            r->results = json_array();
            for (int i = 0; i < r->n_children; i++) {
                request *ch = calloc(1, sizeof *ch);
                if (!ch) abort();
                ch->srv = s;
                ch->type = RT_EMBED;
                ch->id = ++s->next_id;
                ch->parent = r;
                ch->slot = i;
                ch->cluster = -1;
                ch->want_full = r->want_full;
                ch->submitted = 1;
                ch->state = RS_WAITING;
                ch->t_recv = r->t_recv;
                ch->next = s->live;
                s->live = ch;
                json_array_append_new(r->results, json_null());
            }
            while (j) {
                job *nx = j->next;
                push_job(s, j);
                j = nx;
            }
            r->suspended = 1;
            MHD_suspend_connection(c);
            return MHD_YES;
        }
        r->next = s->live;
        s->live = r;
        push_job(s, j);
        if (r->stream) {
            struct MHD_Response *resp =
                MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 4096, stream_reader, r, NULL);
            MHD_add_response_header(resp, "Content-Type", "text/event-stream");
            MHD_add_response_header(resp, "Cache-Control", "no-cache");
            enum MHD_Result ret = MHD_queue_response(c, 200, resp);
            MHD_destroy_response(resp);
            s->m_codes[200]++;
            return ret;
        }
        r->suspended = 1;
        MHD_suspend_connection(c);
        return MHD_YES;
    }
    if (r->state == RS_DONE && r->resp) {
        enum MHD_Result ret;
        ret = queue_body(s, c, r->code, "application/json", r->resp, r->retry_after);
        free(r->resp);
        r->resp = NULL;
        return ret;
    }
    return MHD_YES;
}

static void on_completed(void *cls, struct MHD_Connection *c, void **con_cls,
                         enum MHD_RequestTerminationCode toe) {
    server *s = cls;
    request *r = *con_cls;
    *con_cls = NULL;
    if (!r) return;
    r->conn = NULL;
    if (r->submitted && !r->finished) {
        /* the client went away before the end: cancel; freed on its FINISHED event */
        hlog(&s->cfg, 2, r->id, "client disconnected; cancelling");
        for (request *q = s->live; q; q = q->next) {
            if (q != r && q->parent != r) continue;
            job *j = calloc(1, sizeof *j);
            if (!j) abort();
            j->kind = JOB_CANCEL;
            j->id = q->id;
            push_job(s, j);
        }
        return;
    }
    request_free(r);
}

static void on_connection(void *cls, struct MHD_Connection *c, void **socket_context,
                          enum MHD_ConnectionNotificationCode toe) {
    server *s = cls;
    if (toe == MHD_CONNECTION_NOTIFY_STARTED) s->n_connections++;
    else s->n_connections--;
}

/* ---- the loop's MHD driving ------------------------------------------------------------- */

static void on_timer(uv_timer_t *t) { run_mhd(t->data); }

static void run_mhd(server *s) {
    if (!s->mhd) return;
    MHD_run(s->mhd);
    MHD_UNSIGNED_LONG_LONG to;
    uv_timer_stop(&s->timer);
    if (MHD_get_timeout(s->mhd, &to) == MHD_YES)
        uv_timer_start(&s->timer, on_timer, to, 0);
    else
        uv_timer_start(&s->timer, on_timer, 1000, 0);
}

static void on_poll(uv_poll_t *p, int status, int events) {
    server *s = p->data;
    run_mhd(s);
    maybe_finish_drain(s);
}

static void stop_all(server *s) {
    uv_stop(&s->loop);
}

static void maybe_finish_drain(server *s) {
    if (s->draining && !s->live) {
        hlog(&s->cfg, 2, 0, "drained; exiting");
        stop_all(s);
    }
}

static void on_drain_timeout(uv_timer_t *t) {
    server *s = t->data;
    hlog(&s->cfg, 1, 0, "drain timeout (%d s): exiting with requests in flight", s->cfg.drain_timeout_s);
    stop_all(s);
}

static void on_signal(uv_signal_t *h, int sig) {
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

static int check_only(server *s) {
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

static void close_cb(uv_handle_t *h) { (void)h; }

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
        fprintf(stderr, "hllm-creatord: --listen expects an IPv4 address, got '%s'\n", s->cfg.listen);
        free(s);
        return 2;
    }
    if (s->cfg.check_only) {
        int rc = check_only(s);
        free(s);
        return rc;
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
        free(s);
        return 1;
    }
    const union MHD_DaemonInfo *bi = MHD_get_daemon_info(s->mhd, MHD_DAEMON_INFO_BIND_PORT);
    hlog(&s->cfg, 2, 0, "listening on %s:%u", s->cfg.listen, bi ? (unsigned)bi->port : (unsigned)s->cfg.port);
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
    while (uv_run(&s->loop, UV_RUN_DEFAULT)) {}
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
