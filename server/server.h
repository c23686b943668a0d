/* server.h: internal types and functions shared by the modules of hllm-creatord. */
#ifndef HC_SERVER_SERVER_H
#define HC_SERVER_SERVER_H

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

#include "cache.h"
#include "table.h"
#include "config.h"
#include "creator/creator.h"
#include "creator/creator_sched.h"
#include "creator/match_head.h"
#include "creator/title_key.h"
#include "core/error.h"
#include "tokenizer/tokenizer.h"

/* ---- queues between the threads --------------------------------------------------------- */

typedef enum { JOB_SUBMIT, JOB_CANCEL } job_kind;

typedef struct job {
    struct job *next;
    job_kind kind;
    uint64_t id;
    hc_creq req;     /* SUBMIT */
    hc_creq_buf buf; /* SUBMIT: freed by the engine thread after submit */
    char *ad_title;  /* SUBMIT with pruning on: the ad's title, scored by the engine thread with
                        the match head before generating (engine_thread.c: prune_job) */
    size_t ad_title_len;
} job;

typedef enum {
    EV_READY,
    EV_LOAD_FAILED,
    EV_ACCEPTED,
    EV_REJECTED,
    EV_EMBEDDED,
    EV_TOKEN,
    EV_FINISHED,
    EV_FAILED,
    EV_SCORED /* pruning: score = the match probability, status = 1 when pruned (not generated) */
} ev_kind;

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
    uint64_t prefill_tokens, decode_tokens, prefix_hits, users_embedded;
} stats_snapshot;

/* A Prometheus histogram (http.c): cumulative buckets at render time; values in seconds. */
#define HCD_HIST_MAX 24
typedef struct hcd_hist {
    const double *le; /* upper bounds, increasing */
    int n_le;
    uint64_t counts[HCD_HIST_MAX + 1]; /* per bucket (not cumulative); the last: +Inf */
    uint64_t count;
    double sum;
} hcd_hist;

/* API keys (auth.c): the accepted Bearer keys, each zero-padded to HCD_KEY_MAX bytes so that a
 * comparison always reads the same number of bytes */
typedef struct hcd_keys {
    int n;
    unsigned char (*key)[HCD_KEY_MAX];
    size_t *len;
} hcd_keys;

/* ---- the server ------------------------------------------------------------------------- */

typedef enum { RT_TITLES, RT_EMBED, RT_TBATCH } req_type; /* RT_TBATCH: /v1/titles:batch */
typedef enum { RS_READING, RS_WAITING, RS_DONE } req_state;

typedef struct request request;

/* One cluster-mode generation that several requests wait for (single flight, api.c): keyed by
 * the title-cache key, its engine job has its own id; each token becomes one text piece, which
 * every attached request streams (a late one first replays the pieces it missed). */
typedef struct flight {
    struct flight *next; /* in server.flights */
    uint64_t id;         /* the engine job's */
    hcd_bytes key;
    uint64_t hash;
    int32_t cluster;
    int32_t *ids;
    int n_ids, cap_ids;
    char *text;
    size_t text_len, text_cap;
    uint32_t *piece_end; /* end offset in text of each piece */
    int n_pieces, cap_pieces;
    hc_detok *detok;
    request *subs;       /* attached requests (request.fl_next) */
    int n_subs, cancel_sent;
    int uncacheable; /* embedded to another cluster than its key's */
    float mscore;    /* the match probability (has_mscore: pruning on) */
    int has_mscore;
    double t_accept, t_last_tok;
} flight;

/* How a titles request got (or gets) its title: for the response's "cached" and meta's "cache". */
typedef enum { TC_OFF, TC_HIT, TC_MISS, TC_ATTACHED, TC_TABLE } title_cache_state;

/* A title-table reload in progress on a libuv worker thread (table_reload, daemon.c). */
typedef struct reload_work {
    uv_work_t w;
    struct server *srv;
    char files[HCD_MAX_TABLES][4096];
    int n_files;
    tt_expect x;
    tt_set *result; /* NULL when it failed (err says why) */
    char err[1200];
} reload_work;

typedef struct server {
    hcd_config cfg;
    /* the on_access call in progress (every response is queued from inside one): access_log */
    const char *cur_method, *cur_url;
    const struct request *cur_req;
    uv_loop_t loop;
    uv_poll_t poll;
    uv_timer_t timer, drain_timer;
    uv_async_t async;
    uv_signal_t sigterm, sigint, sighup;
    uv_timer_t watchdog; /* sd_notify WATCHDOG=1 pings (only with $WATCHDOG_USEC) */
    uint64_t watchdog_usec;
    struct MHD_Daemon *mhd;
    /* shared with the engine thread (mu) */
    pthread_t engine;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    job *jobs_head, *jobs_tail;
    event *evs_head, *evs_tail;
    int stop_engine;
    stats_snapshot snap;
    /* the engine thread's liveness for the watchdog: loading, idle (waiting for work), or the
     * time of its last step (ms, now_ms) */
    int eng_loading, eng_idle;
    double eng_beat;
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
    const char *cpu_gemm_name; /* the CPU backend's prefill GEMM library; NULL on another backend */
    hc_sampler_params sampling_default;
    /* metrics */
    uint64_t m_status[6]; /* 2xx 4xx... by index: 200,400,404,405,413,415 handled in m_by_code */
    uint64_t m_codes[600];
    uint64_t m_tokens, m_cancelled, m_rejected, m_requests_titles, m_requests_embed;
    /* caches (loop thread, api.c): the user cache (history window -> u, U, cluster, score) and
     * the title cache ((cluster, ad, package, sampling) -> title); flights in progress */
    hcd_cache *user_cache, *title_cache;
    hcd_cache *tok_memo; /* tok_memo.c: texts -> token ids, made on first use */
    flight *flights;
    uint64_t m_attaches, m_cluster_mismatch;
    /* title tables (loop thread; table.h): the set answered from, a reload in flight */
    tt_set *tables;
    reload_work *reloading;
    int reload_again; /* a SIGHUP arrived during a reload: reload once more after it */
    uint64_t m_table_hits, m_table_reloads, m_table_reload_failures;
    /* latency histograms (http.c: metrics_init, hist_observe), deadlines (http.c) */
    hcd_hist h_ttft, h_itl, h_e2e, h_queue;
    int hists_ready;
    uint64_t m_timed_out;
    /* pruning (--prune-threshold with the package's match head): loop: match_head (set on
     * READY), m_pruned; engine thread: the ids whose next EMBEDDED event it reported itself */
    int match_head;
    uint64_t m_pruned;
    uint64_t *drop_emb;
    int n_drop_emb, cap_drop_emb;
    double next_deadline; /* the earliest deadline of a live request (now_ms), 0: none */
    /* API keys (auth.c; NULL: no auth), TLS (tls.c: the PEM texts, kept while MHD runs) */
    hcd_keys *keys;
    uint64_t m_key_reloads, m_key_reload_failures;
    char *tls_cert_pem, *tls_key_pem;
    /* scheduler metrics (engine thread writes them under mu, /metrics reads them under mu):
     * per step its tokens, requests and seconds; the creative LLM's KV pool */
    hcd_hist h_step_tokens, h_step_reqs, h_step_time;
    int kv_blocks_total, kv_blocks_used;
    hcd_cache_stats item_cache; /* the engine's item-embedding cache (same fields, under mu) */
    int step_tok_events; /* engine thread: TOKEN events of the step in progress */
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
    /* caches: the user key (the history window as tokenized), the ad, the generation job kept
     * for after the embed stage (cluster mode with the title cache), the flight attached to */
    hcd_bytes ukey;
    uint64_t uhash, ad_hash;
    hc_creq_mode mode;
    job *gen_job;
    int title_stage; /* the cluster is known: the request left its embed job behind */
    int pruned;      /* answered from a table entry made without generating (finish "pruned") */
    int ad_empty_desc; /* "description": "": its ad_hash is a missing description's, its prompt
                          is not, so title tables (keyed by ad_hash alone) are not consulted */
    title_cache_state tc;
    flight *fl;
    request *fl_next;
    /* results */
    int32_t *ids;
    int n_ids, cap_ids;
    char *text;
    size_t text_len, text_cap;
    int32_t cluster;
    float score;
    char *ad_title; /* pruning on: the ad's title (a pruned answer), its match probability */
    size_t ad_title_len;
    float mscore;
    int has_mscore;
    float *u, *U;
    int n_u, n_U, want_full;
    float *cU; /* the user's U from the user cache or its embed job: a later generation job of
                  this request brings it (hc_creq.pre_U) instead of embedding again */
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
    /* deadlines (deadline_ms / request-timeout-ms): absolute now_ms, 0 none; timed_out: expired,
     * its cancel sent (answered 504 on its engine job's end, or at once when on a flight) */
    double deadline, t_first, t_last_tok;
    int timed_out;
    /* while suspended (waiting for the engine): a watch on the socket for the client's hang-up
     * (conn_watch.c); client_gone: it hung up, the connection is resumed to be closed */
    uv_poll_t *watch;
    int client_gone;
};

/* util.c: logging, clocks, buffers */
void hlog(const hcd_config *cfg, int level, uint64_t rid, const char *fmt, ...);
/* --access-log: one line for the response being queued on connection of the current
 * on_access call (s->cur_method, s->cur_url, s->cur_req), status code and body bytes (-1: a
 * stream, its length unknown). */
void access_log(server *s, int code, long bytes);
double now_ms(void);
void *xrealloc(void *p, size_t n);
void buf_append(char **b, size_t *len, size_t *cap, const char *s, size_t n);

/* engine_thread.c: the engine thread and the queues to and from it */
void post_event(server *s, event *e);
event *new_event(ev_kind k, uint64_t id);
void engine_sink(void *user, const hc_cevent *ev);
int backend_kind(const char *b);
int load_model(server *s, hc_errbuf *eb);
void *engine_main(void *arg);
void push_job(server *s, job *j);

/* api.c: parsing, validation and responses */
enum MHD_Result queue_body(server *s, struct MHD_Connection *c, int code, const char *type,
                           const char *body, int retry_after);
enum MHD_Result queue_body_owned(server *s, struct MHD_Connection *c, int code, const char *type,
                                 char *body, int retry_after);
char *json_error(const char *fmt, ...); /* {"error": message}, the message made valid UTF-8 */
void utf8_sanitize(char *s);
enum MHD_Result send_error(server *s, struct MHD_Connection *c, int code, const char *msg);
request *find_live(server *s, uint64_t id);
void unlink_live(server *s, request *q);
void request_free(request *r);
int get_num(json_t *o, const char *k, double lo, double hi, double *out, char *err, size_t errn,
            const char *prefix);
int tokenize_embed(server *s, json_t *user, const char *field, uint64_t id, job **out, char *err,
                   size_t errn);
void free_jobs(job *j);
int build_job(server *s, request *r, job **out, char *err, size_t errn);
/* build_job over a parsed body (root: borrowed) */
int build_job_json(server *s, request *r, json_t *root, job **out, char *err, size_t errn);
/* /v1/titles:batch (http.c): validates r->body into r->n_children child requests (*chs) and
 * their jobs (*jobs, both malloc'ed); a bad item gets its result in r->results at once. 0 or an
 * HTTP status with err. */
int build_batch(server *s, request *r, request ***chs, job ***jobs, char *err, size_t errn);
int parse_deadline(server *s, request *r, json_t *root, char *err, size_t errn);
void add_timings(request *r, json_t *o);
json_t *title_json(request *r);
char *title_json_text(request *r); /* json_out.c: title_json as JSON text, or NULL */
/* tok_memo.c: hc_creator_tokenize_request with s's contexts, memoized by the texts */
int tokenize_memo(server *s, const hc_history *h, const char *at, size_t atl, const char *ad,
                  size_t adl, hc_creq *req, hc_creq_buf *buf, hc_errbuf *eb);
json_t *floats(const float *v, int n);
void sse_event(request *r, const char *name, json_t *data);
void wake(request *r);
void complete(server *s, request *r);
void handle_event(server *s, event *e);
/* api.c, the caches: see the top of api.c's cache section */
int caches_create(server *s);
void caches_free(server *s);
void user_key(request *r, const hc_creq *q);
int user_cache_answer(server *s, request *r);
void job_bring_user(server *s, request *r, job *j);
void user_cache_store(server *s, request *r, const event *e);
int start_title(server *s, request *r);
void detach_flight(server *s, request *r);
job *embed_job_of(const job *j);

/* http.c: libmicrohttpd on the libuv loop */
void on_async(uv_async_t *a);
ssize_t stream_reader(void *cls, uint64_t pos, char *buf, size_t max);
enum MHD_Result handle_get(server *s, struct MHD_Connection *c, const char *url);
enum MHD_Result on_access(void *cls, struct MHD_Connection *c, const char *url, const char *method,
                          const char *version, const char *data, size_t *data_size, void **con_cls);
void on_completed(void *cls, struct MHD_Connection *c, void **con_cls,
                  enum MHD_RequestTerminationCode toe);
void on_connection(void *cls, struct MHD_Connection *c, void **socket_context,
                   enum MHD_ConnectionNotificationCode toe);
void on_timer(uv_timer_t *t);
void run_mhd(server *s);
void metrics_init(server *s);
void sched_metrics_init(server *s); /* the step histograms: before the engine thread starts */
void hist_observe(hcd_hist *h, double seconds);
void observe_done(server *s, request *r); /* e2e and queue time of a finished request */
void expire_deadlines(server *s);
void submit_request(server *s, request *r, job *j); /* a validated titles/embed request */
void on_poll(uv_poll_t *p, int status, int events);

/* auth.c: API keys. keys_load: the keys of cfg (api-key, api-key-file) into *out (NULL when
 * neither is set); 0, or -1 with err (never quoting a key). */
int keys_load(const hcd_config *cfg, hcd_keys **out, char *err, size_t errn);
void keys_free(hcd_keys *k);
/* 1 when c may go on (no keys, /healthz, or a matching Bearer key); else queues the 401 (*ret). */
int auth_check(server *s, struct MHD_Connection *c, const char *url, enum MHD_Result *ret);
void keys_reload(server *s); /* SIGHUP: the new keys, or the old ones kept (logged) */

/* tls.c: --tls-cert / --tls-key read and checked (a throwaway MHD daemon parses them); 0 or -1
 * with err. Sets s->tls_cert_pem / tls_key_pem (NULL without TLS). */
int tls_load(server *s, char *err, size_t errn);

/* conn_watch.c: suspending a connection; the watch for its client's hang-up while suspended */
void suspend_req(server *s, request *r);
void watch_pause(request *r); /* before a resume */
void watch_stop(request *r);  /* closes it: the request's connection ends */

/* daemon.c: signals, drain, main */
void stop_all(server *s);
void maybe_finish_drain(server *s);
void on_drain_timeout(uv_timer_t *t);
void on_signal(uv_signal_t *h, int sig);
int check_only(server *s);
void notify(const char *state); /* sd_notify(3) when $NOTIFY_SOCKET is set */
tt_expect table_expect(server *s);
int tables_load_start(server *s); /* at start: 0, or -1 (logged) */
void on_sighup(uv_signal_t *h, int sig);
void on_watchdog(uv_timer_t *t);
void close_cb(uv_handle_t *h);
int main(int argc, char **argv);

#endif
