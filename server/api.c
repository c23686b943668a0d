/* api.c: request parsing and validation (jansson), tokenization into jobs, responses from engine
 * events. */
#include "server.h"

static enum MHD_Result queue_mem(server *s, struct MHD_Connection *c, int code, const char *type,
                                  char *body, enum MHD_ResponseMemoryMode mode, int retry_after) {
    const size_t len = strlen(body);
    struct MHD_Response *r = MHD_create_response_from_buffer(len, body, mode);
    if (!r) {
        if (mode == MHD_RESPMEM_MUST_FREE) free(body);
        return MHD_NO;
    }
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
    access_log(s, code, (long)len);
    return ret;
}

enum MHD_Result queue_body(server *s, struct MHD_Connection *c, int code, const char *type,
                           const char *body, int retry_after) {
    return queue_mem(s, c, code, type, (char *)body, MHD_RESPMEM_MUST_COPY, retry_after);
}

/* queue_body taking body (malloc'ed): MHD frees it with the response, no copy */
enum MHD_Result queue_body_owned(server *s, struct MHD_Connection *c, int code, const char *type,
                                 char *body, int retry_after) {
    return queue_mem(s, c, code, type, body, MHD_RESPMEM_MUST_FREE, retry_after);
}

/* Replaces each byte of s that is not part of a valid UTF-8 sequence by '?' (jansson's parse
 * errors quote the body, which may be anything; a message truncated by snprintf may end inside a
 * sequence): a JSON string must be valid UTF-8. */
void utf8_sanitize(char *s) {
    unsigned char *p = (unsigned char *)s;
    while (*p) {
        int n = *p < 0x80 ? 1 : (*p & 0xE0) == 0xC0 ? 2 : (*p & 0xF0) == 0xE0 ? 3
                : (*p & 0xF8) == 0xF0 ? 4 : 0;
        int ok = n > 0;
        for (int i = 1; ok && i < n; i++)
            ok = (p[i] & 0xC0) == 0x80;
        if (ok && n > 1) { /* overlong forms, surrogates, past U+10FFFF */
            unsigned cp = n == 2 ? (p[0] & 0x1Fu) : n == 3 ? (p[0] & 0x0Fu) : (p[0] & 0x07u);
            for (int i = 1; i < n; i++)
                cp = cp << 6 | (p[i] & 0x3Fu);
            ok = (n == 2 && cp >= 0x80) || (n == 3 && cp >= 0x800 && (cp < 0xD800 || cp > 0xDFFF))
                 || (n == 4 && cp >= 0x10000 && cp <= 0x10FFFF);
        }
        if (!ok) {
            *p++ = '?';
            continue;
        }
        p += n;
    }
}

char *json_error(const char *fmt, ...) {
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    utf8_sanitize(msg);
    json_t *o = json_pack("{s:s}", "error", msg);
    char *t = json_dumps(o, JSON_COMPACT);
    json_decref(o);
    return t;
}

enum MHD_Result send_error(server *s, struct MHD_Connection *c, int code, const char *msg) {
    char *t = json_error("%s", msg);
    enum MHD_Result r =
        queue_body(s, c, code, "application/json", t, code == 429 || code == 503 ? 1 : 0);
    free(t);
    return r;
}

request *find_live(server *s, uint64_t id) {
    for (request *r = s->live; r; r = r->next)
        if (r->id == id) return r;
    return NULL;
}

void unlink_live(server *s, request *q) {
    for (request **p = &s->live; *p; p = &(*p)->next)
        if (*p == q) {
            *p = q->next;
            return;
        }
}

void request_free(request *r) {
    watch_stop(r);
    free(r->body);
    free(r->ids);
    free(r->text);
    free(r->u);
    free(r->U);
    free(r->cU);
    free(r->sse);
    free(r->resp);
    if (r->results) json_decref(r->results);
    if (r->detok) hc_detok_free(r->detok);
    hcd_bytes_free(&r->ukey);
    free_jobs(r->gen_job);
    free(r->ad_title);
    free(r);
}

/* ---- request parsing (loop thread) ------------------------------------------------------ */

typedef struct parsed {
    const char **titles;
    size_t *lens;
    int n;
} parsed_hist;

/* Validates a history array; fills p (arrays malloc'ed). Returns NULL or an error message in err.
 */
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
            snprintf(err, errn, "%s[%zu] is %zu bytes; the limit is %d (max-title-bytes)", field, i,
                     len, s->cfg.max_title_bytes);
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

int get_num(json_t *o, const char *k, double lo, double hi, double *out, char *err, size_t errn,
            const char *prefix) {
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
int tokenize_embed(server *s, json_t *user, const char *field, uint64_t id, job **out, char *err,
                   size_t errn) {
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
    int rc = tokenize_memo(s, &h, NULL, 0, NULL, 0, &j->req, &j->buf, &eb);
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

void free_jobs(job *j) {
    while (j) {
        job *nx = j->next;
        hc_creq_buf_free(&j->buf);
        free(j->ad_title);
        free(j);
        j = nx;
    }
}

/* Parses and tokenizes a body into jobs (*out: one, or one per user of a users:embed batch, whose
 * child requests are made here). Returns 0, or an HTTP status with err. */
int build_job(server *s, request *r, job **out, char *err, size_t errn) {
    *out = NULL;
    json_error_t je;
    json_t *root = json_loadb(r->body ? r->body : "", r->body_len, JSON_REJECT_DUPLICATES, &je);
    if (!root) {
        snprintf(err, errn, "invalid JSON body: %s (line %d, column %d)", je.text, je.line,
                 je.column);
        utf8_sanitize(err); /* je.text quotes the body */
        return 400;
    }
    int code = build_job_json(s, r, root, out, err, errn);
    json_decref(root);
    return code;
}

/* "deadline_ms" of root (else a batch item inherits its batch's, else request-timeout-ms):
 * r->deadline. 0 or -1 with err. */
int parse_deadline(server *s, request *r, json_t *root, char *err, size_t errn) {
    double x;
    int g = get_num(root, "deadline_ms", 1, 86400000, &x, err, errn, "");
    if (g < 0) return -1;
    if (g && x != (double)(long)x) {
        snprintf(err, errn, "deadline_ms must be an integer");
        return -1;
    }
    if (g)
        r->deadline = r->t_recv + x;
    else if (r->parent)
        r->deadline = r->parent->deadline;
    else
        r->deadline = s->cfg.request_timeout_ms ? r->t_recv + (double)s->cfg.request_timeout_ms : 0;
    return 0;
}

int build_job_json(server *s, request *r, json_t *root, job **out, char *err, size_t errn) {
    job *j = NULL;
    *out = NULL;
    int code = 400;
    parsed_hist ph = {0};
    if (!json_is_object(root)) {
        snprintf(err, errn, "the body must be a JSON object");
        goto out;
    }
    if (parse_deadline(s, r, root, err, errn)) goto out;
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
    if (parse_history(s, json_object_get(user, "history"), "user.history", &ph, err, errn))
        goto out;
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
                snprintf(err, errn,
                         "ad.description is %zu bytes; the limit is %d "
                         "(4 x max-title-bytes)",
                         adl, s->cfg.max_title_bytes * 4);
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
        if (r->stream && r->parent) {
            snprintf(err, errn, "stream is not allowed in a batch item");
            goto out;
        }
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
                if (json_is_true(gr))
                    sp.greedy = 1;
                else if (sp.temperature > 0)
                    sp.greedy = 0;
            }
        }
    }
    hc_history h = {ph.titles, ph.lens, ph.n};
    hc_errbuf eb = {{0}};
    j = calloc(1, sizeof *j);
    if (!j) abort();
    int rc = tokenize_memo(s, &h, r->type == RT_TITLES ? at : NULL, atl, ad, adl, &j->req, &j->buf,
                           &eb);
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
    r->mode = mode;
    if (mode == HC_CREQ_CLUSTER) {
        /* the title of (cluster, ad) is the same whichever user asked (title cache, tables) */
        r->ad_hash = hc_ad_hash(at, atl, ad, adl);
        r->ad_empty_desc = ad && adl == 0;
        j->req.seed_by_cluster = 1;
        j->req.ad_hash = r->ad_hash;
    }
    j->req.sampling = sp;
    j->req.max_new = max_new;
    if (r->type == RT_TITLES && s->match_head && s->cfg.prune_threshold >= 0) {
        /* pruning: the engine thread scores the ad's title; a pruned answer is that title */
        j->ad_title = xrealloc(NULL, atl + 1);
        memcpy(j->ad_title, at, atl);
        j->ad_title[atl] = 0;
        j->ad_title_len = atl;
        r->ad_title = xrealloc(r->ad_title, atl + 1);
        memcpy(r->ad_title, at, atl + 1);
        r->ad_title_len = atl;
    }
    code = 0;
out:
    hist_free(&ph);
    return code;
}

/* ---- responses from events -------------------------------------------------------------- */

static void meta_event(request *r);
static void flight_event(server *s, const event *e);

void add_timings(request *r, json_t *o) {
    double te = r->t_embedded ? r->t_embedded : r->t_finished;
    json_object_set_new(o, "timings",
                        json_pack("{s:f,s:f,s:f,s:f}", "queue", r->t_accept - r->t_recv, "embed",
                                  te - r->t_accept, "generate", r->t_finished - te, "total",
                                  r->t_finished - r->t_recv));
}

json_t *title_json(request *r) {
    json_t *ids = json_array();
    for (int i = 0; i < r->n_ids; i++)
        json_array_append_new(ids, json_integer(r->ids[i]));
    json_t *o = json_object();
    json_object_set_new(o, "title", json_stringn(r->text ? r->text : "", r->text_len));
    json_object_set_new(o, "ids", ids);
    json_object_set_new(o, "cluster", r->cluster >= 0 ? json_integer(r->cluster) : json_null());
    json_object_set_new(o, "finish", json_string(r->pruned ? "pruned" : hc_finish_name(r->finish)));
    json_object_set_new(o, "cached", json_boolean(r->tc == TC_HIT || r->tc == TC_TABLE));
    json_object_set_new(o, "pruned", json_boolean(r->pruned));
    if (r->has_mscore) json_object_set_new(o, "score", json_real(r->mscore));
    if (r->client_id[0]) json_object_set_new(o, "request_id", json_string(r->client_id));
    add_timings(r, o);
    return o;
}

json_t *floats(const float *v, int n) {
    json_t *a = json_array();
    for (int i = 0; i < n; i++)
        json_array_append_new(a, json_real(v[i]));
    return a;
}

void sse_event(request *r, const char *name, json_t *data) {
    char *d = json_dumps(data, JSON_COMPACT);
    json_decref(data);
    char head[64];
    int n = snprintf(head, sizeof head, "event: %s\ndata: ", name);
    buf_append(&r->sse, &r->sse_len, &r->sse_cap, head, (size_t)n);
    buf_append(&r->sse, &r->sse_len, &r->sse_cap, d, strlen(d));
    buf_append(&r->sse, &r->sse_len, &r->sse_cap, "\n\n", 2);
    free(d);
}

void wake(request *r) {
    watch_pause(r);
    if (r->suspended && r->conn) {
        r->suspended = 0;
        MHD_resume_connection(r->conn);
    }
}

/* The request got its last event: build the response (or the stream's last event). */
void complete(server *s, request *r) {
    r->finished = 1;
    utf8_sanitize(r->fail_msg); /* it may quote the engine's or the body's bytes */
    unlink_live(s, r);
    if (r->fl) detach_flight(s, r);
    if (r->type == RT_TITLES && !r->fail_status)
        hist_observe(&s->h_ttft, ((r->t_first ? r->t_first : now_ms()) - r->t_recv) / 1000.0);
    if (!r->parent) observe_done(s, r);
    if (r->parent) {
        request *p = r->parent;
        json_t *o;
        if (r->fail_status) {
            o = json_pack("{s:i,s:s}", "status", r->fail_status, "error", r->fail_msg);
        } else if (r->type == RT_TITLES) { /* an item of /v1/titles:batch */
            o = title_json(r);
            json_object_set_new(o, "status", json_integer(200));
        } else {
            o = json_object();
            json_object_set_new(o, "cluster",
                                r->cluster >= 0 ? json_integer(r->cluster) : json_null());
            json_object_set_new(o, "score", r->cluster >= 0 ? json_real(r->score) : json_null());
            json_object_set_new(o, "cached", json_boolean(r->tc == TC_HIT));
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
        observe_done(s, p);
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
        if (st && i == n && p->type != RT_TBATCH) {
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
            json_t *o = json_pack("{s:s,s:i}", "error", r->fail_msg, "status", r->fail_status);
            if (r->timed_out) { /* the title so far, flagged */
                json_object_set_new(o, "title", json_stringn(r->text ? r->text : "", r->text_len));
                json_object_set_new(o, "partial", json_true());
            }
            sse_event(r, "error", o);
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
        r->resp = title_json_text(r); /* json_out.c; NULL: what only jansson writes alike */
        if (!r->resp) {
            json_t *o = title_json(r);
            r->resp = json_dumps(o, JSON_COMPACT);
            json_decref(o);
        }
        r->code = 200;
    } else {
        json_t *o = json_object();
        json_object_set_new(o, "cluster", r->cluster >= 0 ? json_integer(r->cluster) : json_null());
        json_object_set_new(o, "score", r->cluster >= 0 ? json_real(r->score) : json_null());
        json_object_set_new(o, "cached", json_boolean(r->tc == TC_HIT));
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

void handle_event(server *s, event *e) {
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
        const int gemm = hc_backend_cpu_gemm(s->be);
        s->cpu_gemm_name = gemm >= 0 ? hc_cpu_gemm_name(gemm) : NULL;
        s->d_user = c->d_user;
        s->d_creative = c->d_creative;
        s->max_history = c->pkg.max_history;
        s->max_item_tokens = c->pkg.max_item_tokens;
        s->max_new_default = c->pkg.max_new_tokens;
        s->sampling_default = c->pkg.sampling;
        s->n_clusters = c->clusters ? hc_cluster_index_k(c->clusters) : 0;
        s->match_head = hc_creator_has_match_head(c);
        if (s->cfg.prune_threshold >= 0 && !s->match_head)
            hlog(&s->cfg, 1, 0, "prune-threshold %g: the package has no match head; nothing is "
                 "pruned", s->cfg.prune_threshold);
        if (tables_load_start(s)) {
            s->load_failed = 1;
            s->exit_code = 1;
            uv_stop(&s->loop);
            return;
        }
        s->ready = 1;
        hlog(&s->cfg, 2, 0, "model package %s loaded; ready", s->cfg.model);
        char st[4400];
        snprintf(st, sizeof st, "READY=1\nSTATUS=serving %s (%d clusters, %zu title-table "
                 "entries)", s->cfg.model, s->n_clusters, tt_entries(s->tables));
        notify(st);
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
    if (!r) {
        flight_event(s, e);
        return;
    }
    switch (e->kind) {
    case EV_ACCEPTED:
        r->t_accept = e->t;
        break;
    case EV_REJECTED:
        r->t_accept = r->t_finished = e->t;
        if (e->status == HC_ERR_AGAIN) {
            s->m_rejected++;
            r->fail_status = 429;
            snprintf(r->fail_msg, sizeof r->fail_msg,
                     "the queue is full (max-queued %d); retry later", s->cfg.max_queued);
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
        if (e->cluster >= 0 || !r->cU) { /* a per-user job given a cached U reports none */
            r->cluster = e->cluster;
            r->score = e->score;
        }
        user_cache_store(s, r, e);
        if (r->gen_job && !r->title_stage && e->U && e->n_U == s->d_creative) {
            r->cU = xrealloc(r->cU, sizeof(float) * (size_t)e->n_U);
            memcpy(r->cU, e->U, sizeof(float) * (size_t)e->n_U);
        }
        if (r->gen_job && !r->title_stage) {
            /* the embed job of a cluster-mode request: now the title cache or a flight (a
             * request whose client left just waits for its embed job's end) */
            if ((r->conn || r->parent) && !r->timed_out) start_title(s, r);
            break;
        }
        if (r->want_full && e->u) {
            r->u = e->u;
            r->U = e->U;
            r->n_u = e->n_u;
            r->n_U = e->n_U;
            e->u = e->U = NULL;
        }
        if (r->stream && r->conn) {
            meta_event(r);
            wake(r);
        }
        break;
    case EV_TOKEN: {
        s->m_tokens++;
        if (!r->t_first) r->t_first = e->t;
        if (r->t_last_tok) hist_observe(&s->h_itl, (e->t - r->t_last_tok) / 1000.0);
        r->t_last_tok = e->t;
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
        if (r->title_stage) break; /* the end of its embed job; the title comes from elsewhere */
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
    case EV_SCORED: /* pruning (engine_thread.c: prune_job) */
        r->mscore = e->score;
        r->has_mscore = 1;
        if (!e->status) break;
        s->m_pruned++;
        r->t_finished = e->t;
        if (!r->t_embedded || r->t_embedded < r->t_accept) r->t_embedded = e->t;
        if (e->cluster >= 0) r->cluster = e->cluster;
        r->pruned = 1;
        r->finish = HC_FINISH_STOP;
        r->n_ids = 0;
        r->text_len = 0;
        if (r->ad_title_len) buf_append(&r->text, &r->text_len, &r->text_cap, r->ad_title, r->ad_title_len);
        if (r->stream && r->conn && r->ad_title_len)
            sse_event(r, "token", json_pack("{s:s%}", "text", r->ad_title, r->ad_title_len));
        hlog(&s->cfg, 2, r->id, "pruned: match probability %.4f below %g", (double)e->score,
             s->cfg.prune_threshold);
        complete(s, r);
        break;
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

/* ---- the caches ------------------------------------------------------------------------- *
 *
 * User cache: key = the history window the model sees, as tokenized (n_items, item_lens,
 * item_ids of the hc_creq), value = cluster, score, u, U. Filled from every EMBEDDED event of a
 * request with a key; it answers /v1/users:embed (single and batch entries) and gives a
 * cluster-mode titles request its cluster without the engine. hc_csched has no entry point for a
 * precomputed user, so a generation (per-user mode, or a cluster-mode title miss) is still
 * embedded by the engine.
 *
 * Title cache (cluster mode, when title-cache-bytes > 0): key = (cluster, hc_ad_hash of the ad,
 * package digest, sampling parameters (all but `greedy` ignored when greedy), max_new_tokens,
 * stop ids, the prompt2 ids), value = cluster, finish, token ids and the text pieces the
 * streaming detokenizer produced. A cluster-mode request first needs its cluster: from the user
 * cache, or from an embed-only job (EMBED mode: no creative work at all). With the cluster
 * known (start_title): a hit answers at once (a stream replays the cached pieces); a key with a
 * flight in progress attaches to it (replaying the pieces so far); otherwise a new flight submits
 * the generation job (seed_by_cluster, so the title is the same whichever user triggered it).
 * A request whose client disconnects leaves its flight; a flight left by every request is
 * cancelled (and no longer attachable). Titles that finished with stop or length are stored;
 * cancelled or failed ones are not. Per-user titles depend on the user: never title-cached.
 *
 * Title tables (table.h, --title-table): consulted first once the cluster is known, for requests
 * whose effective settings are the tables' (the daemon's defaults): a hit answers like a cache
 * hit ("cached": true, meta cache "table"). With tables loaded, cluster-mode requests take the
 * cluster-first path even when the title cache is off (then misses share flights, uncached).
 */

int caches_create(server *s) {
    if (hcd_cache_create(&s->user_cache, (size_t)s->cfg.user_cache_bytes) ||
        hcd_cache_create(&s->title_cache, (size_t)s->cfg.title_cache_bytes))
        return -1;
    return 0;
}

static void flight_free(flight *f) {
    hcd_bytes_free(&f->key);
    free(f->ids);
    free(f->text);
    free(f->piece_end);
    if (f->detok) hc_detok_free(f->detok);
    free(f);
}

void caches_free(server *s) {
    while (s->flights) {
        flight *f = s->flights;
        s->flights = f->next;
        flight_free(f);
    }
    hcd_cache_free(s->user_cache);
    hcd_cache_free(s->title_cache);
    hcd_cache_free(s->tok_memo);
    s->user_cache = s->title_cache = s->tok_memo = NULL;
}

void user_key(request *r, const hc_creq *q) {
    if (!hcd_cache_enabled(r->srv->user_cache)) return;
    int n_ids = 0;
    for (int i = 0; i < q->n_items; i++)
        n_ids += q->item_lens[i];
    hcd_bytes_i32(&r->ukey, q->n_items);
    hcd_bytes_add(&r->ukey, q->item_lens, sizeof(int32_t) * (size_t)q->n_items);
    hcd_bytes_add(&r->ukey, q->item_ids, sizeof(int32_t) * (size_t)n_ids);
    r->uhash = hcd_hash(r->ukey.b, r->ukey.len);
}

/* value: int32 cluster, float score, int32 n_u, int32 n_U, n_u + n_U floats */
void user_cache_store(server *s, request *r, const event *e) {
    if (!r->ukey.len || !e->u || !e->U) return;
    hcd_bytes v = {0};
    hcd_bytes_i32(&v, e->cluster);
    hcd_bytes_add(&v, &e->score, sizeof e->score);
    hcd_bytes_i32(&v, e->n_u);
    hcd_bytes_i32(&v, e->n_U);
    hcd_bytes_add(&v, e->u, sizeof(float) * (size_t)e->n_u);
    hcd_bytes_add(&v, e->U, sizeof(float) * (size_t)e->n_U);
    if (hcd_cache_put(s->user_cache, r->uhash, r->ukey.b, r->ukey.len, v.b, v.len) < 0)
        hlog(&s->cfg, 1, r->id, "user cache: out of memory; entry not stored");
    hcd_bytes_free(&v);
}

/* A hit fills r's cluster and score (and u, U when it wants them): returns 1. */
int user_cache_answer(server *s, request *r) {
    size_t n;
    const unsigned char *v =
        r->ukey.len ? hcd_cache_get(s->user_cache, r->uhash, r->ukey.b, r->ukey.len, &n) : NULL;
    if (!v) return 0;
    int32_t nu, nU;
    memcpy(&r->cluster, v, 4);
    memcpy(&r->score, v + 4, 4);
    memcpy(&nu, v + 8, 4);
    memcpy(&nU, v + 12, 4);
    if (n != 16 + sizeof(float) * ((size_t)nu + (size_t)nU)) abort(); /* written above */
    if (nU == s->d_creative) {
        r->cU = xrealloc(r->cU, sizeof(float) * (size_t)nU);
        memcpy(r->cU, v + 16 + sizeof(float) * (size_t)nu, sizeof(float) * (size_t)nU);
    }
    if (r->want_full) {
        r->n_u = nu;
        r->n_U = nU;
        r->u = xrealloc(NULL, sizeof(float) * (size_t)nu);
        r->U = xrealloc(NULL, sizeof(float) * (size_t)nU);
        memcpy(r->u, v + 16, sizeof(float) * (size_t)nu);
        memcpy(r->U, v + 16 + sizeof(float) * (size_t)nu, sizeof(float) * (size_t)nU);
    }
    if (r->type == RT_EMBED) r->tc = TC_HIT;
    r->t_accept = r->t_embedded = now_ms();
    return 1;
}

/* A generation job of r brings r's known U (and cluster) so the engine skips the embed stage:
 * hc_creq.pre_U, its copy owned by the job's buffers. */
void job_bring_user(server *s, request *r, job *j) {
    if (!r->cU || j->req.mode == HC_CREQ_EMBED) return;
    if (j->req.mode == HC_CREQ_CLUSTER && (r->cluster < 0 || r->cluster >= s->n_clusters)) return;
    j->buf.pre_U = xrealloc(j->buf.pre_U, sizeof(float) * (size_t)s->d_creative);
    memcpy(j->buf.pre_U, r->cU, sizeof(float) * (size_t)s->d_creative);
    j->req.pre_U = j->buf.pre_U;
    j->req.pre_cluster = r->cluster;
    j->req.pre_score = r->score;
}

/* The embed-only job that finds a cluster-mode request's cluster: a copy of j's history. */
job *embed_job_of(const job *j) {
    job *e = calloc(1, sizeof *e);
    if (!e) abort();
    e->kind = JOB_SUBMIT;
    e->id = j->id;
    e->req = j->req;
    e->req.mode = HC_CREQ_EMBED;
    e->req.prompt2 = NULL;
    e->req.n_prompt2 = 0;
    e->req.stop = NULL;
    e->req.n_stop = 0;
    e->req.seed_by_cluster = 0;
    e->req.pre_U = NULL; /* an embed-only job embeds */
    int n_ids = 0;
    for (int i = 0; i < j->req.n_items; i++)
        n_ids += j->req.item_lens[i];
    e->buf.item_lens = xrealloc(NULL, sizeof(int32_t) * (size_t)j->req.n_items);
    e->buf.item_ids = xrealloc(NULL, sizeof(int32_t) * (size_t)n_ids);
    memcpy(e->buf.item_lens, j->req.item_lens, sizeof(int32_t) * (size_t)j->req.n_items);
    memcpy(e->buf.item_ids, j->req.item_ids, sizeof(int32_t) * (size_t)n_ids);
    e->req.item_lens = e->buf.item_lens;
    e->req.item_ids = e->buf.item_ids;
    return e;
}

static void title_key(server *s, int32_t cluster, uint64_t ad_hash, const hc_creq *q,
                      hcd_bytes *k) {
    hcd_bytes_i32(k, cluster);
    hcd_bytes_u64(k, ad_hash);
    hcd_bytes_u64(k, s->creator->digest);
    const hc_sampler_params *p = &q->sampling;
    hcd_bytes_i32(k, p->greedy ? 1 : 0);
    if (!p->greedy) { /* the sampler ignores the rest when greedy */
        hcd_bytes_add(k, &p->temperature, sizeof p->temperature);
        hcd_bytes_i32(k, p->top_k);
        hcd_bytes_add(k, &p->top_p, sizeof p->top_p);
        hcd_bytes_u64(k, p->seed);
    }
    hcd_bytes_i32(k, q->max_new);
    hcd_bytes_i32(k, q->n_stop);
    hcd_bytes_add(k, q->stop, sizeof(int32_t) * (size_t)q->n_stop);
    hcd_bytes_i32(k, q->n_prompt2);
    hcd_bytes_add(k, q->prompt2, sizeof(int32_t) * (size_t)q->n_prompt2);
}

static const char *tc_name(title_cache_state t) {
    static const char *n[] = {"off", "hit", "miss", "attached", "table"};
    return n[t];
}

static void meta_event(request *r) {
    sse_event(r, "meta",
              json_pack("{s:o,s:b,s:s}", "cluster",
                        r->cluster >= 0 ? json_integer(r->cluster) : json_null(), "cached",
                        r->tc == TC_HIT || r->tc == TC_TABLE, "cache", tc_name(r->tc)));
}

static void piece_event(request *r, const char *t, size_t n) {
    sse_event(r, "token", json_pack("{s:s%}", "text", t, n));
}

/* r's result from a finished title: ids, pieces (streamed when r streams), finish. */
static void fill_title(request *r, const int32_t *ids, int n_ids, const char *text,
                       const uint32_t *piece_end, int n_pieces, hc_finish finish) {
    r->n_ids = r->cap_ids = n_ids;
    r->ids = xrealloc(r->ids, sizeof(int32_t) * (size_t)(n_ids ? n_ids : 1));
    if (n_ids) memcpy(r->ids, ids, sizeof(int32_t) * (size_t)n_ids);
    r->text_len = 0;
    size_t len = n_pieces ? piece_end[n_pieces - 1] : 0;
    if (len) buf_append(&r->text, &r->text_len, &r->text_cap, text, len);
    r->finish = finish;
}

/* value: int32 cluster, finish, n_ids, n_pieces; ids; piece ends; text; float match probability,
 * int32 flags (1: it has one, 2: pruned: the text is the original title, no ids) */
static void title_cache_store(server *s, flight *f, hc_finish finish, int pruned) {
    hcd_bytes v = {0};
    hcd_bytes_i32(&v, f->cluster);
    hcd_bytes_i32(&v, (int32_t)finish);
    hcd_bytes_i32(&v, f->n_ids);
    hcd_bytes_i32(&v, f->n_pieces);
    hcd_bytes_add(&v, f->ids, sizeof(int32_t) * (size_t)f->n_ids);
    hcd_bytes_add(&v, f->piece_end, sizeof(uint32_t) * (size_t)f->n_pieces);
    hcd_bytes_add(&v, f->text, f->n_pieces ? f->piece_end[f->n_pieces - 1] : 0);
    hcd_bytes_add(&v, &f->mscore, sizeof f->mscore);
    hcd_bytes_i32(&v, (f->has_mscore ? 1 : 0) | (pruned ? 2 : 0));
    if (hcd_cache_put(s->title_cache, f->hash, f->key.b, f->key.len, v.b, v.len) < 0)
        hlog(&s->cfg, 1, f->id, "title cache: out of memory; entry not stored");
    hcd_bytes_free(&v);
}

/* A cached title: answers r (replaying the pieces on a stream). */
static void title_hit(server *s, request *r, const unsigned char *v, size_t n) {
    int32_t hd[4];
    memcpy(hd, v, sizeof hd);
    const int n_ids = hd[2], n_pieces = hd[3];
    int32_t *ids = xrealloc(NULL, sizeof(int32_t) * (size_t)(n_ids ? n_ids : 1));
    uint32_t *ends = xrealloc(NULL, sizeof(uint32_t) * (size_t)(n_pieces ? n_pieces : 1));
    memcpy(ids, v + 16, sizeof(int32_t) * (size_t)n_ids);
    memcpy(ends, v + 16 + 4 * (size_t)n_ids, sizeof(uint32_t) * (size_t)n_pieces);
    const char *text = (const char *)v + 16 + 4 * ((size_t)n_ids + (size_t)n_pieces);
    const size_t tail = 16 + 4 * ((size_t)n_ids + (size_t)n_pieces) + (n_pieces ? ends[n_pieces - 1] : 0);
    if (tail + 8 != n) abort(); /* written by title_cache_store */
    int32_t flags;
    memcpy(&r->mscore, v + tail, 4);
    memcpy(&flags, v + tail + 4, 4);
    r->has_mscore = flags & 1;
    r->pruned = (flags & 2) != 0;
    r->tc = TC_HIT;
    r->cluster = hd[0];
    fill_title(r, ids, n_ids, text, ends, n_pieces, (hc_finish)hd[1]);
    if (r->stream) {
        meta_event(r);
        for (int i = 0; i < n_pieces; i++) {
            uint32_t a = i ? ends[i - 1] : 0;
            piece_event(r, text + a, ends[i] - a);
        }
    }
    free(ids);
    free(ends);
    r->t_finished = now_ms();
    hlog(&s->cfg, 3, r->id, "title cache hit: cluster %d, %d tokens", r->cluster, n_ids);
    complete(s, r);
}

/* A title-table entry for r's (cluster, ad) with r's settings: answers r (a stream gets the
 * pieces of the streaming detokenizer over the entry's ids, which decode to its title: checked
 * when the table loaded). Returns 1 when r is complete. */
static int table_answer(server *s, request *r) {
    const hc_creq *q = &r->gen_job->req;
    if (r->ad_empty_desc || q->n_stop || !tt_settings_match(s->tables, &q->sampling, q->max_new))
        return 0;
    const tt_entry *e = tt_lookup(s->tables, r->cluster, r->ad_hash);
    if (!e) return 0;
    free_jobs(r->gen_job);
    r->gen_job = NULL;
    r->tc = TC_TABLE;
    s->m_table_hits++;
    r->pruned = e->finish == TT_PRUNED;
    r->finish = e->finish == TT_LENGTH ? HC_FINISH_LENGTH : HC_FINISH_STOP;
    r->n_ids = r->cap_ids = e->n_ids;
    r->ids = xrealloc(r->ids, sizeof(int32_t) * (size_t)(e->n_ids ? e->n_ids : 1));
    if (e->n_ids) memcpy(r->ids, e->ids, sizeof(int32_t) * (size_t)e->n_ids);
    r->text_len = 0;
    if (e->title_len) buf_append(&r->text, &r->text_len, &r->text_cap, e->title, e->title_len);
    if (r->stream) {
        meta_event(r);
        const char *t;
        size_t n;
        if (r->pruned) {
            if (e->title_len) piece_event(r, e->title, e->title_len);
        } else {
            for (int i = 0; i < e->n_ids; i++)
                if (!hc_detok_feed(r->detok, e->ids[i], &t, &n) && n) piece_event(r, t, n);
            if (!hc_detok_finish(r->detok, &t, &n) && n) piece_event(r, t, n);
        }
    }
    r->t_finished = now_ms();
    hlog(&s->cfg, 3, r->id, "title table hit: cluster %d, %d tokens%s", r->cluster, e->n_ids,
         r->pruned ? " (pruned)" : "");
    complete(s, r);
    return 1;
}

static void attach(server *s, flight *f, request *r) {
    r->fl = f;
    r->fl_next = f->subs;
    f->subs = r;
    f->n_subs++;
    if (f->n_ids && !r->t_first) r->t_first = now_ms();
    if (!r->stream) return;
    meta_event(r);
    for (int i = 0; i < f->n_pieces; i++) {
        uint32_t a = i ? f->piece_end[i - 1] : 0;
        piece_event(r, f->text + a, f->piece_end[i] - a);
    }
    wake(r);
}

void detach_flight(server *s, request *r) {
    flight *f = r->fl;
    for (request **p = &f->subs; *p; p = &(*p)->fl_next)
        if (*p == r) {
            *p = r->fl_next;
            f->n_subs--;
            break;
        }
    r->fl = NULL;
    r->fl_next = NULL;
    if (f->n_subs == 0 && !f->cancel_sent) {
        /* nobody waits for it any more: cancel (it is not attachable from now on) */
        job *j = calloc(1, sizeof *j);
        if (!j) abort();
        j->kind = JOB_CANCEL;
        j->id = f->id;
        push_job(s, j);
        f->cancel_sent = 1;
        hlog(&s->cfg, 2, f->id, "every client of the generation left; cancelling");
    }
}

/* r (live, cluster mode, its cluster known, its generation job in r->gen_job): the title from
 * a title table, the cache, a flight in progress, or a new flight. Returns 1 when r is
 * complete. */
int start_title(server *s, request *r) {
    r->title_stage = 1;
    if (table_answer(s, r)) return 1;
    hcd_bytes k = {0};
    title_key(s, r->cluster, r->ad_hash, &r->gen_job->req, &k);
    uint64_t h = hcd_hash(k.b, k.len);
    size_t n;
    const unsigned char *v = hcd_cache_get(s->title_cache, h, k.b, k.len, &n);
    if (v) {
        hcd_bytes_free(&k);
        free_jobs(r->gen_job);
        r->gen_job = NULL;
        title_hit(s, r, v, n);
        return 1;
    }
    flight *f = s->flights;
    for (; f; f = f->next)
        if (!f->cancel_sent && f->hash == h && f->key.len == k.len && !memcmp(f->key.b, k.b, k.len))
            break;
    if (f) {
        hcd_bytes_free(&k);
        free_jobs(r->gen_job);
        r->gen_job = NULL;
        r->tc = TC_ATTACHED;
        s->m_attaches++;
        hlog(&s->cfg, 3, r->id, "attached to generation %" PRIu64 " (cluster %d, %d tokens so far)",
             f->id, r->cluster, f->n_ids);
        attach(s, f, r);
        return 0;
    }
    f = calloc(1, sizeof *f);
    if (!f) abort();
    f->id = ++s->next_id;
    f->key = k;
    f->hash = h;
    f->cluster = r->cluster;
    f->detok = hc_detok_new(s->creator->creative_tok, 1);
    if (!f->detok) abort();
    f->next = s->flights;
    s->flights = f;
    job *j = r->gen_job;
    r->gen_job = NULL;
    job_bring_user(s, r, j); /* the cluster was found from this U: generate from it too */
    j->id = j->req.id = f->id;
    j->next = NULL;
    push_job(s, j);
    r->tc = TC_MISS;
    hlog(&s->cfg, 3, r->id, "title cache miss: generation %" PRIu64 " for cluster %d", f->id,
         r->cluster);
    attach(s, f, r);
    return 0;
}

static void flight_piece(flight *f, const char *t, size_t n) {
    buf_append(&f->text, &f->text_len, &f->text_cap, t, n);
    if (f->n_pieces == f->cap_pieces) {
        f->cap_pieces = f->cap_pieces ? f->cap_pieces * 2 : 32;
        f->piece_end = xrealloc(f->piece_end, sizeof(uint32_t) * (size_t)f->cap_pieces);
    }
    f->piece_end[f->n_pieces++] = (uint32_t)f->text_len;
    for (request *r = f->subs; r; r = r->fl_next)
        if (r->stream && r->conn) {
            piece_event(r, t, n);
            wake(r);
        }
}

/* The end of a flight: every attached request completes (with the title, or failing alike). */
static void flight_end(server *s, flight *f, const event *e) {
    for (flight **p = &s->flights; *p; p = &(*p)->next)
        if (*p == f) {
            *p = f->next;
            break;
        }
    int fail = 0, retry = 0, pruned = e->kind == EV_SCORED;
    hc_finish finish = pruned ? HC_FINISH_STOP : e->finish;
    char msg[800] = "";
    if (pruned) { /* not generated: the original title, cached like a title */
        s->m_pruned++;
        for (request *q = f->subs; q; q = q->fl_next)
            if (q->ad_title) {
                if (q->ad_title_len) flight_piece(f, q->ad_title, q->ad_title_len);
                title_cache_store(s, f, finish, 1);
                break;
            }
        hlog(&s->cfg, 2, f->id, "pruned: cluster %d, match probability %.4f below %g, %d clients",
             f->cluster, (double)f->mscore, s->cfg.prune_threshold, f->n_subs);
    } else if (e->kind == EV_FINISHED) {
        if (e->finish == HC_FINISH_STOP || e->finish == HC_FINISH_LENGTH) {
            if (f->uncacheable)
                hlog(&s->cfg, 1, f->id, "not cached: the generation embedded to another cluster");
            else
                title_cache_store(s, f, e->finish, 0);
        }
        if (e->finish == HC_FINISH_CANCELLED) s->m_cancelled++;
        hlog(&s->cfg, 2, f->id, "generation finished: %s, %d tokens, %d clients",
             hc_finish_name(e->finish), f->n_ids, f->n_subs);
    } else if (e->kind == EV_REJECTED && e->status == HC_ERR_AGAIN) {
        fail = 429;
        retry = 1;
        snprintf(msg, sizeof msg, "the queue is full (max-queued %d); retry later",
                 s->cfg.max_queued);
    } else {
        fail = e->kind == EV_REJECTED ? 400 : 500;
        snprintf(msg, sizeof msg, "%s", e->msg);
        hlog(&s->cfg, 0, f->id, "generation failed: %s", e->msg);
    }
    while (f->subs) {
        request *r = f->subs;
        f->subs = r->fl_next;
        f->n_subs--;
        r->fl = NULL;
        r->fl_next = NULL;
        r->cluster = f->cluster;
        r->t_finished = e->t;
        if (!r->t_embedded) r->t_embedded = f->t_accept;
        if (fail) {
            r->fail_status = fail;
            r->retry_after = retry;
            snprintf(r->fail_msg, sizeof r->fail_msg, "%s", msg);
            if (fail == 429) s->m_rejected++;
        } else {
            fill_title(r, f->ids, f->n_ids, f->text, f->piece_end, f->n_pieces, finish);
            r->pruned = pruned;
            r->mscore = f->mscore;
            r->has_mscore = f->has_mscore;
        }
        complete(s, r);
    }
    flight_free(f);
}

static void flight_event(server *s, const event *e) {
    flight *f = s->flights;
    while (f && f->id != e->id)
        f = f->next;
    if (!f) return; /* the embed job of a request answered already */
    switch (e->kind) {
    case EV_ACCEPTED:
        f->t_accept = e->t;
        break;
    case EV_EMBEDDED:
        if (e->cluster != f->cluster) {
            /* the same history embedded again (GEMM rounding of another batch) */
            s->m_cluster_mismatch++;
            f->uncacheable = 1;
            hlog(&s->cfg, 1, f->id, "generation for cluster %d embedded to cluster %d",
                 f->cluster, e->cluster);
            f->cluster = e->cluster;
        }
        break;
    case EV_TOKEN: {
        s->m_tokens++;
        if (f->t_last_tok) hist_observe(&s->h_itl, (e->t - f->t_last_tok) / 1000.0);
        f->t_last_tok = e->t;
        for (request *q = f->subs; q; q = q->fl_next)
            if (!q->t_first) q->t_first = e->t;
        if (f->n_ids == f->cap_ids) {
            f->cap_ids = f->cap_ids ? f->cap_ids * 2 : 32;
            f->ids = xrealloc(f->ids, sizeof(int32_t) * (size_t)f->cap_ids);
        }
        f->ids[f->n_ids++] = e->token;
        const char *t;
        size_t n;
        if (!hc_detok_feed(f->detok, e->token, &t, &n) && n) flight_piece(f, t, n);
        break;
    }
    case EV_FINISHED: {
        const char *t;
        size_t n;
        if (!hc_detok_finish(f->detok, &t, &n) && n) flight_piece(f, t, n);
        flight_end(s, f, e);
        break;
    }
    case EV_SCORED:
        f->mscore = e->score;
        f->has_mscore = 1;
        if (e->status) flight_end(s, f, e);
        break;
    case EV_REJECTED:
    case EV_FAILED:
        flight_end(s, f, e);
        break;
    default:
        break;
    }
}
