/* http.c: libmicrohttpd in external epoll mode on the libuv loop; routing, GET endpoints,
 * streaming. */
#include "server.h"

void on_async(uv_async_t *a) {
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
    expire_deadlines(s);
    run_mhd(s);
    maybe_finish_drain(s);
}

/* ---- latency histograms ----------------------------------------------------------------- *
 * In seconds, vLLM's names with the hllm: prefix. ttft: from the request's arrival to its first
 * token (a cached or table title: to its answer), once per title answered (a batch item too);
 * itl: between two tokens of one generation (a shared generation counts once); e2e and queue:
 * once per HTTP request validated and answered (any outcome), queue = until the engine accepted
 * its first job (a cache answer: 0). */

static const double LE_TTFT[] = {0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5,
                                 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0};
static const double LE_ITL[] = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1,
                                0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5};
static const double LE_E2E[] = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
                                1.0, 2.5, 5.0, 10.0, 20.0, 40.0, 60.0, 120.0};

/* the engine's steps (engine_thread.c: snapshot): creative-LLM tokens (prefill + decode) and
 * requests that generated a token, per step; the step's wall time */
static const double LE_STEP_TOK[] = {1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096,
                                     8192, 16384};
static const double LE_STEP_REQ[] = {0, 1, 2, 4, 8, 16, 32, 64, 128, 256, 512};
static const double LE_STEP_TIME[] = {0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025,
                                      0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0};

static void hist_set(hcd_hist *h, const double *le, int n) {
    memset(h, 0, sizeof *h);
    h->le = le;
    h->n_le = n;
}

void metrics_init(server *s) {
    if (s->hists_ready) return;
    hist_set(&s->h_ttft, LE_TTFT, (int)(sizeof LE_TTFT / sizeof LE_TTFT[0]));
    hist_set(&s->h_itl, LE_ITL, (int)(sizeof LE_ITL / sizeof LE_ITL[0]));
    hist_set(&s->h_e2e, LE_E2E, (int)(sizeof LE_E2E / sizeof LE_E2E[0]));
    hist_set(&s->h_queue, LE_E2E, (int)(sizeof LE_E2E / sizeof LE_E2E[0]));
    s->hists_ready = 1;
}

void sched_metrics_init(server *s) {
    hist_set(&s->h_step_tokens, LE_STEP_TOK, (int)(sizeof LE_STEP_TOK / sizeof LE_STEP_TOK[0]));
    hist_set(&s->h_step_reqs, LE_STEP_REQ, (int)(sizeof LE_STEP_REQ / sizeof LE_STEP_REQ[0]));
    hist_set(&s->h_step_time, LE_STEP_TIME, (int)(sizeof LE_STEP_TIME / sizeof LE_STEP_TIME[0]));
}

void hist_observe(hcd_hist *h, double x) {
    if (!h->le) return; /* metrics_init not run (the fuzz driver) */
    if (!(x >= 0)) x = 0;
    int i = 0;
    while (i < h->n_le && x > h->le[i])
        i++;
    h->counts[i]++;
    h->count++;
    h->sum += x;
}

void observe_done(server *s, request *r) {
    double now = now_ms();
    hist_observe(&s->h_e2e, (now - r->t_recv) / 1000.0);
    hist_observe(&s->h_queue, ((r->t_accept ? r->t_accept : r->t_recv) - r->t_recv) / 1000.0);
}

static void hist_render(char **b, size_t *len, size_t *cap, const char *name, const char *help,
                        const hcd_hist *h) {
    char line[256];
    int n = snprintf(line, sizeof line, "# HELP %s %s\n# TYPE %s histogram\n", name, help, name);
    buf_append(b, len, cap, line, (size_t)n);
    uint64_t cum = 0;
    for (int i = 0; i <= h->n_le; i++) {
        cum += h->counts[i];
        if (i < h->n_le)
            n = snprintf(line, sizeof line, "%s_bucket{le=\"%g\"} %" PRIu64 "\n", name, h->le[i],
                         cum);
        else
            n = snprintf(line, sizeof line, "%s_bucket{le=\"+Inf\"} %" PRIu64 "\n", name, cum);
        buf_append(b, len, cap, line, (size_t)n);
    }
    n = snprintf(line, sizeof line, "%s_sum %.9g\n%s_count %" PRIu64 "\n", name, h->sum, name,
                 h->count);
    buf_append(b, len, cap, line, (size_t)n);
}

/* ---- deadlines ---------------------------------------------------------------------------- *
 * A live request past its deadline: on a shared generation it leaves it (cancelled when nobody
 * is left) and is answered 504 at once; with its own engine job that job is cancelled and the
 * request answered 504 on the job's end (so the KV blocks are back before the answer). */

static void expire(server *s, request *r) {
    r->timed_out = 1;
    s->m_timed_out++;
    r->fail_status = 504;
    r->retry_after = 0;
    snprintf(r->fail_msg, sizeof r->fail_msg,
             "the deadline passed (%.0f ms after the request arrived; deadline_ms or "
             "request-timeout-ms); its work was cancelled",
             r->deadline - r->t_recv);
    hlog(&s->cfg, 2, r->id, "deadline passed; cancelling");
    if (r->fl) {
        flight *f = r->fl;
        r->text_len = 0;
        if (f->text_len) buf_append(&r->text, &r->text_len, &r->text_cap, f->text, f->text_len);
        r->cluster = f->cluster;
        r->t_finished = now_ms();
        complete(s, r); /* detaches it from the flight */
        return;
    }
    job *j = calloc(1, sizeof *j);
    if (!j) abort();
    j->kind = JOB_CANCEL;
    j->id = r->id;
    push_job(s, j);
}

static void note_deadline(server *s, const request *r) {
    if (r->deadline && (!s->next_deadline || r->deadline < s->next_deadline))
        s->next_deadline = r->deadline;
}

void expire_deadlines(server *s) {
    if (!s->next_deadline) return;
    double now = now_ms();
    if (now < s->next_deadline) return;
    double next = 0;
    for (request *r = s->live, *nx; r; r = nx) {
        nx = r->next; /* complete() of r frees no other live request */
        if (!r->deadline || r->timed_out) continue;
        if (r->deadline <= now)
            expire(s, r);
        else if (!next || r->deadline < next)
            next = r->deadline;
    }
    s->next_deadline = next;
}

/* ---- the MHD handlers ------------------------------------------------------------------- */

ssize_t stream_reader(void *cls, uint64_t pos, char *buf, size_t max) {
    request *r = cls;
    if (r->sse_off < r->sse_len) {
        size_t n = r->sse_len - r->sse_off;
        if (n > max) n = max;
        memcpy(buf, r->sse + r->sse_off, n);
        r->sse_off += n;
        return (ssize_t)n;
    }
    if (r->sse_end) return MHD_CONTENT_READER_END_OF_STREAM;
    if (r->client_gone) return MHD_CONTENT_READER_END_WITH_ERROR; /* conn_watch.c */
    suspend_req(r->srv, r);
    return 0;
}

enum MHD_Result handle_get(server *s, struct MHD_Connection *c, const char *url) {
    if (!strcmp(url, "/healthz"))
        return queue_body(s, c, 200, "application/json", "{\"status\":\"ok\"}", 0);
    if (!strcmp(url, "/readyz")) {
        if (s->ready && !s->draining)
            return queue_body(s, c, 200, "application/json", "{\"status\":\"ready\"}", 0);
        return queue_body(s, c, 503, "application/json",
                          s->draining ? "{\"status\":\"draining\"}" : "{\"status\":\"loading\"}",
                          1);
    }
    if (!strcmp(url, "/v1/model")) {
        if (!s->ready) return send_error(s, c, 503, "the model is loading");
        json_t *o = json_pack(
            "{s:s,s:{s:i,s:i,s:i},s:i,s:i,s:i,s:i,s:{s:b,s:f,s:i,s:f}}", "package", s->cfg.model,
            "dims", "item", s->d_item, "user", s->d_user, "creative", s->d_creative, "clusters",
            s->n_clusters, "max_history", s->max_history, "max_item_tokens", s->max_item_tokens,
            "max_new_tokens", s->max_new_default, "sampling", "greedy", s->sampling_default.greedy,
            "temperature", (double)s->sampling_default.temperature, "top_k",
            s->sampling_default.top_k, "top_p", (double)s->sampling_default.top_p);
        json_object_set_new(o, "compute", json_string(s->cfg.compute));
        json_object_set_new(o, "cpu_gemm",
                            s->cpu_gemm_name ? json_string(s->cpu_gemm_name) : json_null());
        json_object_set_new(o, "limits",
                            json_pack("{s:i,s:I,s:i,s:i}", "max_queued", s->cfg.max_queued,
                                      "max_body_bytes", (json_int_t)s->cfg.max_body_bytes,
                                      "max_history_titles", s->cfg.max_history_titles,
                                      "max_title_bytes", s->cfg.max_title_bytes));
        json_t *caches = json_object();
        const char *names[] = {"user", "title", "item"};
        hcd_cache *cs[] = {s->user_cache, s->title_cache, NULL};
        pthread_mutex_lock(&s->mu);
        const hcd_cache_stats item_st = s->item_cache;
        pthread_mutex_unlock(&s->mu);
        for (int i = 0; i < 3; i++) {
            hcd_cache_stats st = cs[i] ? hcd_cache_get_stats(cs[i]) : item_st;
            json_object_set_new(caches, names[i],
                                json_pack("{s:I,s:I,s:I}", "max_bytes", (json_int_t)st.max_bytes,
                                          "bytes", (json_int_t)st.bytes, "entries",
                                          (json_int_t)st.entries));
        }
        json_object_set_new(o, "caches", caches);
        json_object_set_new(o, "match_head", json_boolean(s->match_head));
        json_object_set_new(o, "prune_threshold", s->cfg.prune_threshold >= 0
                                                      ? json_real(s->cfg.prune_threshold)
                                                      : json_null());
        json_t *files = json_array();
        for (int i = 0; i < s->cfg.n_title_tables; i++)
            json_array_append_new(files, json_string(s->cfg.title_tables[i]));
        json_object_set_new(o, "title_tables",
                            json_pack("{s:o,s:I}", "files", files, "entries",
                                      (json_int_t)tt_entries(s->tables)));
        char *t = json_dumps(o, JSON_COMPACT);
        json_decref(o);
        enum MHD_Result r = queue_body(s, c, 200, "application/json", t, 0);
        free(t);
        return r;
    }
    if (!strcmp(url, "/metrics")) {
        stats_snapshot sn;
        hcd_hist hst[3];
        int kv_total, kv_used;
        pthread_mutex_lock(&s->mu);
        sn = s->snap;
        hst[0] = s->h_step_tokens;
        hst[1] = s->h_step_reqs;
        hst[2] = s->h_step_time;
        kv_total = s->kv_blocks_total;
        kv_used = s->kv_blocks_used;
        const hcd_cache_stats item_st = s->item_cache;
        pthread_mutex_unlock(&s->mu);
        char *b = NULL;
        size_t len = 0, cap = 0;
        char line[256];
        int n;
#define MLINE(...)                                                                                 \
    do {                                                                                           \
        n = snprintf(line, sizeof line, __VA_ARGS__);                                              \
        buf_append(&b, &len, &cap, line, (size_t)n);                                               \
    } while (0)
        MLINE("# TYPE hllm:requests_total counter\n");
        for (int code = 100; code < 600; code++)
            if (s->m_codes[code])
                MLINE("hllm:requests_total{status=\"%d\"} %" PRIu64 "\n", code, s->m_codes[code]);
        MLINE("# TYPE hllm:requests_running gauge\nhllm:requests_running %d\n", sn.generating);
        MLINE("# TYPE hllm:requests_waiting gauge\nhllm:requests_waiting %d\n",
              sn.queued + sn.embedded_waiting);
        MLINE("# TYPE hllm:generated_tokens_total counter\nhllm:generated_tokens_total %" PRIu64
              "\n",
              s->m_tokens);
        MLINE("# TYPE hllm:prefill_tokens_total counter\nhllm:prefill_tokens_total %" PRIu64 "\n",
              sn.prefill_tokens);
        MLINE("# TYPE hllm:prefix_hits_total counter\nhllm:prefix_hits_total %" PRIu64 "\n",
              sn.prefix_hits);
        MLINE("# TYPE hllm:users_embedded_total counter\nhllm:users_embedded_total %" PRIu64 "\n",
              sn.users_embedded);
        MLINE("# TYPE hllm:cancelled_total counter\nhllm:cancelled_total %" PRIu64 "\n",
              s->m_cancelled);
        MLINE("# TYPE hllm:rejected_total counter\nhllm:rejected_total %" PRIu64 "\n",
              s->m_rejected);
        MLINE("# TYPE hllm:pruned_total counter\nhllm:pruned_total %" PRIu64 "\n", s->m_pruned);
        MLINE("# TYPE hllm:timed_out_total counter\nhllm:timed_out_total %" PRIu64 "\n",
              s->m_timed_out);
        hist_render(&b, &len, &cap, "hllm:time_to_first_token_seconds",
                    "arrival to the first token (a cached title: to its answer)", &s->h_ttft);
        hist_render(&b, &len, &cap, "hllm:inter_token_latency_seconds",
                    "between two tokens of one generation", &s->h_itl);
        hist_render(&b, &len, &cap, "hllm:e2e_request_latency_seconds",
                    "arrival to the answer of a validated request", &s->h_e2e);
        hist_render(&b, &len, &cap, "hllm:request_queue_time_seconds",
                    "arrival to the engine's acceptance of its first job", &s->h_queue);
        hist_render(&b, &len, &cap, "hllm:iteration_tokens_total",
                    "creative-LLM tokens (prefill + decode) computed per engine step", &hst[0]);
        hist_render(&b, &len, &cap, "hllm:scheduler_batch_size",
                    "requests that generated a token per engine step", &hst[1]);
        hist_render(&b, &len, &cap, "hllm:scheduler_step_seconds",
                    "wall time of one engine step (hc_csched_step)", &hst[2]);
        MLINE("# TYPE hllm:kv_blocks_total gauge\nhllm:kv_blocks_total %d\n", kv_total);
        MLINE("# TYPE hllm:kv_blocks_in_use gauge\nhllm:kv_blocks_in_use %d\n", kv_used);
        MLINE("# TYPE hllm:kv_cache_usage_perc gauge\nhllm:kv_cache_usage_perc %.6f\n",
              kv_total ? (double)kv_used / kv_total : 0.0);
        MLINE("# TYPE hllm:api_key_reloads_total counter\nhllm:api_key_reloads_total %" PRIu64
              "\n", s->m_key_reloads);
        MLINE("# TYPE hllm:api_key_reload_failures_total counter\n"
              "hllm:api_key_reload_failures_total %" PRIu64 "\n", s->m_key_reload_failures);
        const char *cname[] = {"user", "title", "item"};
        hcd_cache *cs[] = {s->user_cache, s->title_cache, NULL};
        for (int i = 0; i < 3; i++) {
            hcd_cache_stats st = cs[i] ? hcd_cache_get_stats(cs[i]) : item_st;
            const char *k = cname[i];
            MLINE("# TYPE hllm:%s_cache_hits_total counter\nhllm:%s_cache_hits_total %" PRIu64
                  "\n", k, k, st.hits);
            MLINE("# TYPE hllm:%s_cache_misses_total counter\nhllm:%s_cache_misses_total %" PRIu64
                  "\n", k, k, st.misses);
            MLINE("# TYPE hllm:%s_cache_evictions_total counter\nhllm:%s_cache_evictions_total "
                  "%" PRIu64 "\n", k, k, st.evictions);
            MLINE("# TYPE hllm:%s_cache_bytes gauge\nhllm:%s_cache_bytes %zu\n", k, k, st.bytes);
            MLINE("# TYPE hllm:%s_cache_max_bytes gauge\nhllm:%s_cache_max_bytes %zu\n", k, k,
                  st.max_bytes);
            MLINE("# TYPE hllm:%s_cache_entries gauge\nhllm:%s_cache_entries %zu\n", k, k,
                  st.entries);
        }
        MLINE("# TYPE hllm:title_single_flight_attaches_total counter\n"
              "hllm:title_single_flight_attaches_total %" PRIu64 "\n", s->m_attaches);
        int n_fl = 0;
        for (flight *f = s->flights; f; f = f->next)
            n_fl++;
        MLINE("# TYPE hllm:title_generations_in_flight gauge\nhllm:title_generations_in_flight "
              "%d\n", n_fl);
        MLINE("# TYPE hllm:title_table_entries gauge\nhllm:title_table_entries %zu\n",
              tt_entries(s->tables));
        MLINE("# TYPE hllm:title_table_hits_total counter\nhllm:title_table_hits_total %" PRIu64
              "\n", s->m_table_hits);
        MLINE("# TYPE hllm:title_table_reloads_total counter\nhllm:title_table_reloads_total %"
              PRIu64 "\n", s->m_table_reloads);
        MLINE("# TYPE hllm:title_table_reload_failures_total counter\n"
              "hllm:title_table_reload_failures_total %" PRIu64 "\n", s->m_table_reload_failures);
#undef MLINE
        enum MHD_Result r = queue_body(s, c, 200, "text/plain; version=0.0.4", b, 0);
        free(b);
        return r;
    }
    return send_error(s, c, 404, "no such path");
}

/* ---- submission and /v1/titles:batch --------------------------------------------------- */

/* r validated (its job j): live, then the user cache, the cluster-first path (title tables and
 * the title cache) or the engine. r may be complete when this returns. */
void submit_request(server *s, request *r, job *j) {
    r->state = RS_WAITING;
    r->submitted = 1;
    if (!r->detok) r->detok = hc_detok_new(s->creator->creative_tok, 1);
    if (!r->detok) abort();
    r->next = s->live;
    s->live = r;
    note_deadline(s, r);
    user_key(r, &j->req);
    if (r->type == RT_EMBED && user_cache_answer(s, r)) {
        free_jobs(j);
        r->t_finished = r->t_embedded;
        complete(s, r);
    } else if (r->type == RT_TITLES && r->mode == HC_CREQ_CLUSTER &&
               (hcd_cache_enabled(s->title_cache) || tt_entries(s->tables)) &&
               s->n_clusters > 0) {
        /* the cluster first (the user cache, or an embed-only job), then the title tables
         * and the title cache */
        r->gen_job = j;
        if (user_cache_answer(s, r))
            start_title(s, r);
        else
            push_job(s, embed_job_of(j));
    } else {
        /* a user the user cache holds: the generation brings its U (no embed stage) */
        if (r->type == RT_TITLES && user_cache_answer(s, r)) job_bring_user(s, r, j);
        push_job(s, j);
    }
}

/* {"requests": [titles bodies without stream], "request_id"?, "deadline_ms"?}: one child
 * request per valid item (*chs, their jobs in *jobs, r->n_children of them, ids taken here);
 * an invalid item gets its {"status", "error"} result in r->results at once. Returns 0, or an
 * HTTP status (400) with err for the batch as a whole. */
int build_batch(server *s, request *r, request ***chs, job ***jobs, char *err, size_t errn) {
    *chs = NULL;
    *jobs = NULL;
    r->n_children = 0;
    json_error_t je;
    json_t *root = json_loadb(r->body ? r->body : "", r->body_len, JSON_REJECT_DUPLICATES, &je);
    if (!root) {
        snprintf(err, errn, "invalid JSON body: %s (line %d, column %d)", je.text, je.line,
                 je.column);
        utf8_sanitize(err); /* je.text quotes the body */
        return 400;
    }
    int code = 400;
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
    if (parse_deadline(s, r, root, err, errn)) goto out;
    json_t *items = json_object_get(root, "requests");
    if (!json_is_array(items)) {
        snprintf(err, errn, "requests must be an array of /v1/titles bodies");
        goto out;
    }
    size_t n = json_array_size(items);
    if (n > (size_t)s->cfg.max_batch) {
        snprintf(err, errn, "requests has %zu items; the limit is %d (max-batch)", n,
                 s->cfg.max_batch);
        goto out;
    }
    r->results = json_array();
    for (size_t i = 0; i < n; i++)
        json_array_append_new(r->results, json_null());
    *chs = calloc(n ? n : 1, sizeof **chs);
    *jobs = calloc(n ? n : 1, sizeof **jobs);
    if (!*chs || !*jobs) abort();
    int k = 0;
    for (size_t i = 0; i < n; i++) {
        request *ch = calloc(1, sizeof *ch);
        if (!ch) abort();
        ch->srv = s;
        ch->type = RT_TITLES;
        ch->parent = r;
        ch->slot = (int)i;
        ch->cluster = -1;
        ch->t_recv = r->t_recv;
        ch->id = ++s->next_id;
        job *j = NULL;
        char e2[1024];
        int c = build_job_json(s, ch, json_array_get(items, i), &j, e2, sizeof e2);
        if (c) {
            char m[1100];
            snprintf(m, sizeof m, "requests[%zu]: %s", i, e2);
            utf8_sanitize(m);
            json_array_set_new(r->results, i, json_pack("{s:i,s:s}", "status", c, "error", m));
            request_free(ch);
            continue;
        }
        (*chs)[k] = ch;
        (*jobs)[k] = j;
        k++;
    }
    r->n_children = k;
    code = 0;
out:
    json_decref(root);
    return code;
}

/* A batch with no valid item: its results now. */
static void batch_answer_now(server *s, request *r) {
    r->t_accept = r->t_embedded = r->t_finished = now_ms();
    json_t *o = json_pack("{s:O}", "results", r->results);
    if (r->client_id[0]) json_object_set_new(o, "request_id", json_string(r->client_id));
    add_timings(r, o);
    r->resp = json_dumps(o, JSON_COMPACT);
    json_decref(o);
    r->code = 200;
    r->finished = 1;
    r->state = RS_DONE;
    observe_done(s, r);
}

/* r's response is ready (r->resp): queue it. */
static enum MHD_Result respond_now(server *s, struct MHD_Connection *c, request *r) {
    char *b = r->resp;
    r->resp = NULL;
    return queue_body_owned(s, c, r->code, "application/json", b, r->retry_after);
}

enum MHD_Result on_access(void *cls, struct MHD_Connection *c, const char *url, const char *method,
                          const char *version, const char *data, size_t *data_size,
                          void **con_cls) {
    server *s = cls;
    request *r = *con_cls;
    s->cur_method = method;
    s->cur_url = url;
    s->cur_req = r;
    metrics_init(s);
    if (r && r->client_gone) return MHD_NO; /* conn_watch.c: close it, on_completed cancels */
    if (!r) {
        enum MHD_Result aret;
        if (!auth_check(s, c, url, &aret)) return aret;
        int is_post_path = !strcmp(url, "/v1/titles") || !strcmp(url, "/v1/users:embed") ||
                           !strcmp(url, "/v1/titles:batch");
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
        if (!ct || strncasecmp(ct, "application/json", 16) ||
            (ct[16] && ct[16] != ';' && ct[16] != ' '))
            return send_error(s, c, 415, "Content-Type must be application/json");
        r = calloc(1, sizeof *r);
        if (!r) return MHD_NO;
        r->srv = s;
        r->conn = c;
        r->type = !strcmp(url, "/v1/titles")         ? RT_TITLES
                  : !strcmp(url, "/v1/titles:batch") ? RT_TBATCH
                                                     : RT_EMBED;
        r->cluster = -1;
        r->t_recv = now_ms();
        *con_cls = r;
        s->cur_req = r;
        return MHD_YES;
    }
    if (r->state == RS_READING) {
        if (*data_size) {
            if (r->body_len + *data_size > (size_t)s->cfg.max_body_bytes)
                r->too_large = 1;
            else
                buf_append(&r->body, &r->body_len, &r->body_cap, data, *data_size);
            *data_size = 0;
            return MHD_YES;
        }
        /* the whole body is here */
        if (r->too_large) {
            char m[128];
            snprintf(m, sizeof m, "the body is larger than %ld bytes (max-body-bytes)",
                     s->cfg.max_body_bytes);
            r->state = RS_DONE;
            return send_error(s, c, 413, m);
        }
        if (!s->ready || s->draining) {
            r->state = RS_DONE;
            return send_error(s, c, 503,
                              s->draining ? "the server is shutting down" : "the model is loading");
        }
        r->id = ++s->next_id;
        job *j = NULL;
        char err[1024];
        if (r->type == RT_TBATCH) {
            request **chs;
            job **jobs;
            int code = build_batch(s, r, &chs, &jobs, err, sizeof err);
            free(r->body);
            r->body = NULL;
            if (code) {
                r->state = RS_DONE;
                hlog(&s->cfg, 2, r->id, "%d: %s", code, err);
                return send_error(s, c, code, err);
            }
            s->m_requests_titles++;
            hlog(&s->cfg, 3, r->id, "%s %s: %d valid of %zu%s%s", method, url, r->n_children,
                 json_array_size(r->results), r->client_id[0] ? " request_id=" : "",
                 r->client_id);
            r->state = RS_WAITING;
            r->submitted = 1;
            r->pending = r->n_children;
            for (int i = 0; i < r->n_children; i++)
                submit_request(s, chs[i], jobs[i]); /* the last one may complete r */
            free(chs);
            free(jobs);
            if (!r->n_children) batch_answer_now(s, r);
            if (r->state == RS_DONE) return respond_now(s, c, r);
            suspend_req(s, r);
            return MHD_YES;
        }
        int code = build_job(s, r, &j, err, sizeof err);
        free(r->body);
        r->body = NULL;
        if (code) {
            r->state = RS_DONE;
            hlog(&s->cfg, 2, r->id, "%d: %s", code, err);
            return send_error(s, c, code, err);
        }
        if (r->type == RT_TITLES)
            s->m_requests_titles++;
        else
            s->m_requests_embed++;
        r->detok = hc_detok_new(s->creator->creative_tok, 1);
        if (!r->detok) abort();
        hlog(&s->cfg, 3, r->id, "%s %s%s%s", method, url, r->client_id[0] ? " request_id=" : "",
             r->client_id);
        if (r->n_children) {
            r->state = RS_WAITING;
            r->submitted = 1;
            /* a batch: the children are live (but those the user cache answers), the parent
             * waits for all of them */
            r->pending = r->n_children;
            r->results = json_array();
            for (int i = 0; i < r->n_children; i++)
                json_array_append_new(r->results, json_null());
            for (int i = 0; i < r->n_children; i++) {
                job *cj = j;
                j = j->next;
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
                ch->deadline = r->deadline;
                note_deadline(s, ch);
                cj->id = cj->req.id = ch->id;
                user_key(ch, &cj->req);
                if (user_cache_answer(s, ch)) {
                    cj->next = NULL;
                    free_jobs(cj);
                    ch->t_finished = ch->t_embedded;
                    complete(s, ch); /* frees ch; the last one completes r */
                    continue;
                }
                ch->next = s->live;
                s->live = ch;
                push_job(s, cj);
            }
            if (r->state == RS_DONE) return respond_now(s, c, r);
            suspend_req(s, r);
            return MHD_YES;
        }
        submit_request(s, r, j);
        if (r->stream) {
            struct MHD_Response *resp =
                MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 4096, stream_reader, r, NULL);
            MHD_add_response_header(resp, "Content-Type", "text/event-stream");
            MHD_add_response_header(resp, "Cache-Control", "no-cache");
            enum MHD_Result ret = MHD_queue_response(c, 200, resp);
            MHD_destroy_response(resp);
            s->m_codes[200]++;
            access_log(s, 200, -1);
            return ret;
        }
        if (r->state == RS_DONE) return respond_now(s, c, r);
        suspend_req(s, r);
        return MHD_YES;
    }
    if (r->state == RS_DONE && r->resp) return respond_now(s, c, r);
    return MHD_YES;
}

static const char *toe_name(enum MHD_RequestTerminationCode toe) {
    switch (toe) {
    case MHD_REQUEST_TERMINATED_COMPLETED_OK: return "completed";
    case MHD_REQUEST_TERMINATED_WITH_ERROR: return "closed on an error";
    case MHD_REQUEST_TERMINATED_TIMEOUT_REACHED: return "timed out";
    case MHD_REQUEST_TERMINATED_DAEMON_SHUTDOWN: return "daemon shutdown";
    case MHD_REQUEST_TERMINATED_READ_ERROR: return "read error";
    case MHD_REQUEST_TERMINATED_CLIENT_ABORT: return "client aborted";
    default: return "unknown";
    }
}

/* The connection of r ended (any termination code). Unfinished work: a request on a shared
 * generation leaves it; one with its own engine jobs (a batch: its children's) has them
 * cancelled and is freed on their end; batch children on shared generations leave them. */
void on_completed(void *cls, struct MHD_Connection *c, void **con_cls,
                  enum MHD_RequestTerminationCode toe) {
    server *s = cls;
    request *r = *con_cls;
    *con_cls = NULL;
    if (!r) return;
    watch_stop(r);
    r->conn = NULL;
    if (r->fl) {
        /* waiting on a shared generation: leave it (it goes on for the others, or is cancelled
         * when nobody is left); r's own embed job, if any, has ended or ends harmlessly */
        hlog(&s->cfg, 2, r->id, "client disconnected (%s); leaving the shared generation",
             toe_name(toe));
        detach_flight(s, r);
        unlink_live(s, r);
        request_free(r);
        return;
    }
    if (r->submitted && !r->finished) {
        /* the client went away before the end: cancel; freed on its FINISHED event */
        hlog(&s->cfg, 2, r->id, "client disconnected (%s); cancelling", toe_name(toe));
        int on_flights = 0;
        for (request *q = s->live; q; q = q->next) {
            if (q != r && q->parent != r) continue;
            if (q->fl) {
                on_flights++;
                continue;
            }
            job *j = calloc(1, sizeof *j);
            if (!j) abort();
            j->kind = JOB_CANCEL;
            j->id = q->id;
            push_job(s, j);
        }
        /* batch items on shared generations leave them now; the last one to complete frees r
         * (r->conn is NULL) when no item of its own is left */
        while (on_flights--) {
            request *q = s->live;
            while (q && !(q->parent == r && q->fl)) q = q->next;
            if (!q) break;
            const int last = r->pending == 1;
            q->fail_status = 499;
            snprintf(q->fail_msg, sizeof q->fail_msg, "the client disconnected");
            q->t_finished = now_ms();
            complete(s, q);
            if (last) return;
        }
        return;
    }
    request_free(r);
}

void on_connection(void *cls, struct MHD_Connection *c, void **socket_context,
                   enum MHD_ConnectionNotificationCode toe) {
    server *s = cls;
    if (toe == MHD_CONNECTION_NOTIFY_STARTED)
        s->n_connections++;
    else
        s->n_connections--;
}

/* ---- the loop's MHD driving ------------------------------------------------------------- */

void on_timer(uv_timer_t *t) {
    expire_deadlines(t->data);
    run_mhd(t->data);
}

void run_mhd(server *s) {
    if (!s->mhd) return;
    MHD_run(s->mhd);
    MHD_UNSIGNED_LONG_LONG to;
    uv_timer_stop(&s->timer);
    uint64_t ms = MHD_get_timeout(s->mhd, &to) == MHD_YES ? (uint64_t)to : 1000;
    if (s->next_deadline) { /* wake for the earliest deadline too */
        double d = s->next_deadline - now_ms();
        uint64_t dl = d <= 0 ? 0 : (uint64_t)d + 1;
        if (dl < ms) ms = dl;
    }
    uv_timer_start(&s->timer, on_timer, ms, 0);
}

void on_poll(uv_poll_t *p, int status, int events) {
    server *s = p->data;
    run_mhd(s);
    maybe_finish_drain(s);
}
