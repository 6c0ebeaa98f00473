/* The LLM worker's engine thread: model calls on one libcurl multi handle. */
#include "services/llm-worker/caller.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "common/http_multi.h"
#include "common/log.h"
#include "common/metrics.h"
#include "common/util.h"

/* How often calls in flight are checked for jobs the consumer abandoned (a revoked
 * partition): their next owner calls again, so ours should stop spending tokens. */
#define ABANDON_SCAN_MS 1000

/* One model's calls: its max_concurrency and the jobs waiting for a free slot, in order. */
struct slot {
    char id[AB_UUID_LEN + 1];
    int in_flight;
    int limit;
    struct llmw_job *head, *tail;
};

struct llmw_caller {
    struct llmw_caller_options o;
    pthread_t thread;
    pthread_mutex_t lock;
    pthread_cond_t started_cond;
    int started;                 /* 0 starting, 1 running, -1 failed (under lock) */
    struct llmw_job *in_head;    /* submitted, not yet taken by the thread (under lock) */
    struct llmw_job *in_tail;
    atomic_bool stop;
    struct ab_http_multi *http;  /* the engine thread's */

    /* Engine thread only. */
    struct llmw_job **timers;    /* retries waiting for their backoff */
    size_t timer_count, timer_cap;
    struct llmw_job **calls;     /* in flight */
    size_t call_count, call_cap;
    struct slot *slots;
    size_t slot_count;
    int64_t next_scan_ms;

    struct ab_metric *m_calls;   /* by model and outcome */
    struct ab_metric *m_duration;
    struct ab_metric *m_ttft;
    struct ab_metric *m_tokens;  /* by model and kind */
    struct ab_metric *m_in_flight;
    struct ab_metric *m_waiting; /* for a concurrency slot or a backoff */
};

static void try_model(struct llmw_caller *c, struct llmw_job *job);

/* ---- small lists ---------------------------------------------------------------------- */

static void list_add(struct llmw_job ***items, size_t *count, size_t *cap, struct llmw_job *job)
{
    if (*count == *cap) {
        *cap = *cap ? *cap * 2 : 16;
        *items = ab_xrealloc(*items, *cap * sizeof(**items));
    }
    (*items)[(*count)++] = job;
}

static void list_remove(struct llmw_job **items, size_t *count, struct llmw_job *job)
{
    for (size_t i = 0; i < *count; i++) {
        if (items[i] == job) {
            items[i] = items[--*count];
            return;
        }
    }
}

static struct slot *slot_of(struct llmw_caller *c, const struct llmw_model *m)
{
    for (size_t i = 0; i < c->slot_count; i++) {
        if (strcmp(c->slots[i].id, m->id) == 0) {
            c->slots[i].limit = m->max_concurrency; /* the latest row read wins */
            return &c->slots[i];
        }
    }
    c->slots = ab_xrealloc(c->slots, (c->slot_count + 1) * sizeof(*c->slots));
    struct slot *s = &c->slots[c->slot_count++];
    memset(s, 0, sizeof(*s));
    snprintf(s->id, sizeof(s->id), "%s", m->id);
    s->limit = m->max_concurrency;
    return s;
}

static void gauges(struct llmw_caller *c)
{
    size_t waiting = c->timer_count;
    for (size_t i = 0; i < c->slot_count; i++)
        for (struct llmw_job *j = c->slots[i].head; j != NULL; j = j->slot_next)
            waiting++;
    ab_metric_set(c->m_in_flight, NULL, (double)c->call_count);
    ab_metric_set(c->m_waiting, NULL, (double)waiting);
}

/* ---- the end of a job --------------------------------------------------------------------- */

static void finish(struct llmw_caller *c, struct llmw_job *job, enum llmw_status status)
{
    job->status = status;
    llmw_call_spec_cleanup(&job->spec);
    c->o.finished(c->o.ud, job);
}

static void fail(struct llmw_caller *c, struct llmw_job *job, const char *code,
                 const char *message)
{
    snprintf(job->error_code, sizeof(job->error_code), "%s", code);
    snprintf(job->error_message, sizeof(job->error_message), "%s", message);
    finish(c, job, LLMW_FAILED);
}

/* ---- one call ----------------------------------------------------------------------------- */

static enum ab_http_multi_next on_headers(void *ud, long status,
                                          const struct ab_http_header *headers, size_t count)
{
    struct llmw_job *job = ud;
    job->status_code = status;
    const char *retry_after = ab_http_header_find(headers, count, "Retry-After");
    int64_t ms;
    if (retry_after != NULL && ab_retry_after_parse(retry_after, ab_wall_ms(), &ms))
        job->retry_after_ms = ms;
    const char *type = ab_http_header_find(headers, count, "Content-Type");
    if (status >= 200 && status < 300 && type != NULL &&
        strncasecmp(type, "text/event-stream", 17) == 0)
        job->stream = llmw_openai_stream_new(NULL);
    return AB_HTTP_MULTI_CONTINUE;
}

static enum ab_http_multi_next on_data(void *ud, const char *data, size_t len, int64_t now_ms)
{
    struct llmw_job *job = ud;
    if (job->stream != NULL) {
        bool more = llmw_openai_stream_feed(job->stream, data, len, now_ms);
        /* The first-token clock stops at the first content, not at the role chunk or a
         * keep-alive comment; an outcome settled (an error object) stops it too. */
        if (more && llmw_openai_stream_peek(job->stream)->first_token_ms < 0)
            return AB_HTTP_MULTI_KEEP_WAITING;
        return AB_HTTP_MULTI_CONTINUE;
    }
    if (job->body_len + len + 1 > job->body_cap) {
        job->body_cap = (job->body_len + len + 1) * 2;
        job->body = ab_xrealloc(job->body, job->body_cap);
    }
    memcpy(job->body + job->body_len, data, len);
    job->body_len += len;
    return AB_HTTP_MULTI_CONTINUE;
}

/* The stable word for a call that did not complete: http_multi's, except that a model's
 * first byte is its first token. */
static const char *transport_code(const struct ab_http_multi_result *res)
{
    if (res->reason == AB_HTTP_MULTI_FIRST_BYTE_TIMEOUT)
        return "first_token_timeout";
    return ab_http_multi_failure_code(res);
}

/* The stable word for a call that completed without an answer (NULL: it is one). */
static const char *result_code(const struct llmw_openai_result *r, enum ab_err err)
{
    switch (r->outcome) {
    case LLMW_OPENAI_ANSWER:
        return (r->content_len > 0 || r->refusal != NULL) ? NULL : "empty_answer";
    case LLMW_OPENAI_TOOL_CALLS: return "tool_calls_unsupported";
    case LLMW_OPENAI_TRUNCATED: return "stream_truncated";
    case LLMW_OPENAI_MALFORMED: return "malformed_response";
    case LLMW_OPENAI_TOO_LARGE: return "response_too_large";
    default: break;
    }
    switch (err) {
    case AB_ERR_RATE_LIMITED: return "rate_limited";
    case AB_ERR_UNAUTHORIZED: return "unauthorized";
    case AB_ERR_FORBIDDEN: return "forbidden";
    case AB_ERR_NOT_FOUND: return "model_not_found";
    case AB_ERR_INVALID: return "bad_request";
    case AB_ERR_TIMEOUT: return "provider_timeout";
    case AB_ERR_TOO_LARGE: return "request_too_large";
    default: return "provider_error";
    }
}

static void tool_names(const struct llmw_openai_result *r, char *out, size_t size)
{
    size_t used = (size_t)snprintf(out, size, "the model asked for tools, which agent-to-agent "
                                              "replies do not run:");
    for (size_t i = 0; i < r->tool_call_count && used < size; i++)
        used += (size_t)snprintf(out + used, size - used, "%s %.60s", i ? "," : "",
                                 r->tool_calls[i].name);
}

static void record_attempt(struct llmw_caller *c, struct llmw_job *job,
                           const struct ab_http_multi_result *res, const char *code,
                           const char *detail, int64_t ttft_ms, int64_t retry_in_ms)
{
    const struct llmw_model *m = &job->models[job->model_index];
    json_t *a = json_pack("{s:s, s:s, s:i, s:s, s:I}", "model", m->name, "model_id", m->id,
                          "attempt", job->attempt, "outcome", code ? code : "answer", "ms",
                          (json_int_t)(res ? res->total_ms : 0));
    json_object_set_new(a, "status", job->status_code ? json_integer(job->status_code)
                                                      : json_null());
    if (ttft_ms >= 0)
        json_object_set_new(a, "first_token_ms", json_integer(ttft_ms));
    if (retry_in_ms >= 0)
        json_object_set_new(a, "retry_in_ms", json_integer(retry_in_ms));
    if (detail != NULL && detail[0] != '\0') {
        /* Texts here are cut by bytes (snprintf into fixed buffers); jansson takes UTF-8 only. */
        char text[512];
        snprintf(text, sizeof(text), "%s", detail);
        ab_utf8_sanitize(text);
        json_object_set_new(a, "message", json_string(text));
    }
    if (job->attempts == NULL)
        job->attempts = json_array();
    json_array_append_new(job->attempts, a);
    const char *const labels[] = { m->name, code ? code : "answer", NULL };
    ab_metric_inc(c->m_calls, labels, 1);
    if (res != NULL)
        ab_metric_observe(c->m_duration, (const char *const[]){ m->name, NULL },
                          (double)res->total_ms / 1000.0);
}

/* Frees what one call gathered and gives its slot to the next job waiting for it. */
static void end_call(struct llmw_caller *c, struct llmw_job *job)
{
    llmw_openai_stream_free(job->stream);
    job->stream = NULL;
    free(job->body);
    job->body = NULL;
    job->body_len = job->body_cap = 0;
    job->http_id = 0;
    list_remove(c->calls, &c->call_count, job);
    struct slot *s = slot_of(c, &job->models[job->model_index]);
    s->in_flight--;
    struct llmw_job *next = s->head;
    if (next != NULL && !atomic_load(&c->stop)) {
        s->head = next->slot_next;
        if (s->head == NULL)
            s->tail = NULL;
        next->slot_next = NULL;
        try_model(c, next);
    }
}

/* After a failed call: the same model again after a backoff, the next model, or the end. */
static void after_failure(struct llmw_caller *c, struct llmw_job *job,
                          const struct ab_http_multi_result *res, enum ab_err err, bool retriable,
                          const char *code, const char *detail)
{
    const struct llmw_model *m = &job->models[job->model_index];
    int64_t delay = -1;
    if (!(retriable && ab_retry_next(&c->o.retry, job->attempt, job->retry_after_ms,
                                     ab_random_unit(), &delay)))
        delay = -1;
    record_attempt(c, job, res, code, detail, -1, delay);
    snprintf(job->error_code, sizeof(job->error_code), "%s", code);
    size_t used = strnlen(job->error_message, sizeof(job->error_message));
    if (delay < 0) /* this model's last word goes into the message the error event carries */
        snprintf(job->error_message + used, sizeof(job->error_message) - used, "%smodel %s: %s",
                 used ? "; " : "", m->name, detail && detail[0] ? detail : ab_err_name(err));
    ab_trace_resume(job->traceparent); /* the caller's thread serves every job */
    ab_warn("llm request %s: model %s attempt %d failed (%s)%s: %s", job->req.event_id, m->name,
            job->attempt, code, delay >= 0 ? ", will retry" : "", detail ? detail : "");
    ab_trace_leave();
    end_call(c, job);
    if (delay >= 0) {
        job->due_ms = ab_monotonic_ms() + delay;
        list_add(&c->timers, &c->timer_count, &c->timer_cap, job);
        return;
    }
    job->model_index++;
    job->attempt = 0;
    llmw_call_spec_cleanup(&job->spec);
    try_model(c, job);
}

static void on_done(void *ud, const struct ab_http_multi_result *res)
{
    struct llmw_job *job = ud;
    struct llmw_caller *c = job->caller;
    const struct llmw_model *m = &job->models[job->model_index];
    struct llmw_openai_result out = { 0 };
    char detail[512] = "";
    const char *code;
    enum ab_err err;
    bool retriable;

    if (job->stream != NULL)
        llmw_openai_stream_finish(job->stream, &out);
    else if (res->reason == AB_HTTP_MULTI_COMPLETE)
        llmw_openai_parse_body(res->status, job->body, job->body_len, NULL, &out);
    if (res->reason == AB_HTTP_MULTI_CANCELLED || res->reason == AB_HTTP_MULTI_ABORTED) {
        llmw_openai_result_cleanup(&out);
        end_call(c, job);
        finish(c, job, LLMW_CANCELLED);
        return;
    }
    if (res->reason != AB_HTTP_MULTI_COMPLETE) { /* the transport's failure comes first */
        err = res->err;
        code = transport_code(res);
        retriable = ab_err_is_retriable(err) && res->reason != AB_HTTP_MULTI_TOO_LARGE;
        snprintf(detail, sizeof(detail), "%s", res->message);
    } else {
        err = llmw_openai_result_err(&out);
        code = result_code(&out, err);
        /* A 4xx other than 429 is the request's fault (408 included: its model timeouts
         * are ours to set): calling again would fail again. */
        bool client_error = res->status >= 400 && res->status < 500 && res->status != 429;
        retriable = code != NULL && ab_err_is_retriable(err) && !client_error &&
                    out.outcome != LLMW_OPENAI_TOO_LARGE && out.outcome != LLMW_OPENAI_ANSWER &&
                    out.outcome != LLMW_OPENAI_TOOL_CALLS;
        if (out.outcome == LLMW_OPENAI_TOOL_CALLS)
            tool_names(&out, detail, sizeof(detail));
        else if (code != NULL && res->status >= 300)
            snprintf(detail, sizeof(detail), "HTTP %ld: %s", res->status, out.detail);
        else if (code != NULL)
            snprintf(detail, sizeof(detail), "%s", out.detail[0] ? out.detail : code);
    }
    if (code != NULL) {
        ab_redact(detail, m->api_key); /* an upstream may quote the key it was sent */
        llmw_openai_result_cleanup(&out);
        after_failure(c, job, res, err, retriable, code, detail);
        return;
    }
    /* The answer. Time to first token counts from the call's start: the first content of a
     * stream, or the first byte of a whole body. */
    int64_t ttft = out.first_token_ms >= 0 ? out.first_token_ms - job->call_started_ms
                                           : res->first_byte_ms;
    job->first_token_ms = ttft;
    record_attempt(c, job, res, NULL, out.detail, ttft, -1);
    if (ttft >= 0)
        ab_metric_observe(c->m_ttft, (const char *const[]){ m->name, NULL },
                          (double)ttft / 1000.0);
    if (out.usage.prompt_tokens > 0)
        ab_metric_inc(c->m_tokens, (const char *const[]){ m->name, "prompt", NULL },
                      (double)out.usage.prompt_tokens);
    if (out.usage.completion_tokens > 0)
        ab_metric_inc(c->m_tokens, (const char *const[]){ m->name, "completion", NULL },
                      (double)out.usage.completion_tokens);
    job->answer = out; /* moved */
    job->answer_model = job->model_index;
    end_call(c, job);
    finish(c, job, LLMW_ANSWERED);
}

/* Sends the call of the job's current model (its slot is taken). */
static void launch(struct llmw_caller *c, struct llmw_job *job, struct slot *s)
{
    const struct llmw_model *m = &job->models[job->model_index];
    char errstr[320];
    job->status_code = 0;
    job->retry_after_ms = -1;
    job->http_id = 0;
    if (job->spec.url == NULL &&
        llmw_provider_request(m, job->messages, job->req.conversation_id, &job->spec, errstr,
                              sizeof(errstr)) != AB_OK) {
        s->in_flight++; /* end_call gives it back */
        list_add(&c->calls, &c->call_count, &c->call_cap, job);
        job->attempt++;
        after_failure(c, job, NULL, AB_ERR_CONFIG, false, "bad_model_config", errstr);
        return;
    }
    char traceparent[AB_TRACEPARENT_LEN + 1]; /* each attempt is a span of the job's */
    ab_trace_child_header(job->traceparent, traceparent);
    const struct ab_http_multi_request req = {
        .http = { .method = "POST",
                  .url = job->spec.url,
                  .headers = (const char *const *)job->spec.headers,
                  .body = job->spec.body,
                  .body_len = job->spec.body_len,
                  .connect_timeout_ms = m->connect_timeout_ms,
                  .timeout_ms = m->total_timeout_ms,
                  .max_response_bytes = c->o.max_response_bytes,
                  .user_agent = "agentbus-llm-worker",
                  .traceparent = traceparent },
        .first_byte_timeout_ms = m->first_token_timeout_ms,
        .idle_timeout_ms = m->idle_timeout_ms,
    };
    const struct ab_http_multi_callbacks cb = { on_headers, on_data, on_done };
    job->attempt++;
    job->call_started_ms = ab_monotonic_ms();
    s->in_flight++;
    list_add(&c->calls, &c->call_count, &c->call_cap, job);
    enum ab_err err = ab_http_multi_add(c->http, &req, &cb, job, &job->http_id, errstr,
                                        sizeof(errstr));
    if (err != AB_OK)
        after_failure(c, job, NULL, err, ab_err_is_retriable(err), "call_refused", errstr);
}

/* The job's current model: a call now if its slot is free, else in line for it. */
static void try_model(struct llmw_caller *c, struct llmw_job *job)
{
    if (atomic_load(&c->stop) || ab_consumer_job_abandoned(job->cj)) {
        finish(c, job, LLMW_CANCELLED);
        return;
    }
    if (job->model_index >= job->model_count) {
        if (job->error_code[0] == '\0')
            fail(c, job, "no_model", "no model could be called");
        else
            finish(c, job, LLMW_FAILED);
        return;
    }
    struct slot *s = slot_of(c, &job->models[job->model_index]);
    if (s->in_flight >= s->limit) {
        job->slot_next = NULL;
        if (s->tail != NULL)
            s->tail->slot_next = job;
        else
            s->head = job;
        s->tail = job;
        return;
    }
    launch(c, job, s);
}

/* ---- the thread ------------------------------------------------------------------------ */

static int run_timers(struct llmw_caller *c)
{
    int64_t now = ab_monotonic_ms(), wait = 1000;
    for (size_t i = 0; i < c->timer_count;) {
        struct llmw_job *job = c->timers[i];
        if (job->due_ms > now) {
            if (job->due_ms - now < wait)
                wait = job->due_ms - now;
            i++;
            continue;
        }
        c->timers[i] = c->timers[--c->timer_count];
        try_model(c, job);
    }
    return (int)wait;
}

static void scan_abandoned(struct llmw_caller *c)
{
    int64_t now = ab_monotonic_ms();
    if (now < c->next_scan_ms)
        return;
    c->next_scan_ms = now + ABANDON_SCAN_MS;
    for (size_t i = 0; i < c->call_count; i++)
        if (c->calls[i]->http_id != 0 && ab_consumer_job_abandoned(c->calls[i]->cj))
            ab_http_multi_cancel(c->http, c->calls[i]->http_id);
}

static struct llmw_job *take_incoming(struct llmw_caller *c)
{
    pthread_mutex_lock(&c->lock);
    struct llmw_job *list = c->in_head;
    c->in_head = c->in_tail = NULL;
    pthread_mutex_unlock(&c->lock);
    return list;
}

static void *engine_main(void *arg)
{
    struct llmw_caller *c = arg;
    const struct ab_http_multi_options mo = { .max_transfers = c->o.max_transfers };
    c->http = ab_http_multi_new(&mo);
    pthread_mutex_lock(&c->lock);
    c->started = c->http ? 1 : -1;
    pthread_cond_broadcast(&c->started_cond);
    pthread_mutex_unlock(&c->lock);
    if (c->http == NULL)
        return NULL;
    while (!atomic_load(&c->stop)) {
        for (struct llmw_job *job = take_incoming(c), *next; job != NULL; job = next) {
            next = job->next;
            job->next = NULL;
            try_model(c, job);
        }
        int wait = run_timers(c);
        scan_abandoned(c);
        gauges(c);
        ab_http_multi_run(c->http, wait);
    }
    /* Stopping: every call in flight ends as cancelled (inside free), then what waits.
     * The handle leaves c->http under the lock first, so no submit wakes a freed engine. */
    pthread_mutex_lock(&c->lock);
    struct ab_http_multi *http = c->http;
    c->http = NULL;
    pthread_mutex_unlock(&c->lock);
    ab_http_multi_free(http);
    for (size_t i = 0; i < c->timer_count; i++)
        finish(c, c->timers[i], LLMW_CANCELLED);
    c->timer_count = 0;
    for (size_t i = 0; i < c->slot_count; i++) {
        for (struct llmw_job *job = c->slots[i].head, *next; job != NULL; job = next) {
            next = job->slot_next;
            finish(c, job, LLMW_CANCELLED);
        }
        c->slots[i].head = c->slots[i].tail = NULL;
    }
    for (struct llmw_job *job = take_incoming(c), *next; job != NULL; job = next) {
        next = job->next;
        finish(c, job, LLMW_CANCELLED);
    }
    return NULL;
}

struct llmw_caller *llmw_caller_new(const struct llmw_caller_options *opts, char *errstr,
                                    size_t size)
{
    struct llmw_caller *c = ab_xcalloc(1, sizeof(*c));
    c->o = *opts;
    pthread_mutex_init(&c->lock, NULL);
    pthread_cond_init(&c->started_cond, NULL);
    struct ab_metrics *reg = ab_metrics_default();
    c->m_calls = ab_metrics_counter(reg, "agentbus_llm_calls_total",
                                    "model calls, by model and outcome (answer or the error code)",
                                    (const char *const[]){ "model", "outcome", NULL });
    c->m_duration = ab_metrics_histogram(reg, "agentbus_llm_call_duration_seconds",
                                         "one model call, from sending to its end",
                                         (const char *const[]){ "model", NULL },
                                         (const double[]){ .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 120,
                                                           300 },
                                         11);
    c->m_ttft = ab_metrics_histogram(reg, "agentbus_llm_time_to_first_token_seconds",
                                     "from sending a call to its first content",
                                     (const char *const[]){ "model", NULL },
                                     (const double[]){ .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60 },
                                     10);
    c->m_tokens = ab_metrics_counter(reg, "agentbus_llm_tokens_total",
                                     "tokens the providers reported, by model and kind",
                                     (const char *const[]){ "model", "kind", NULL });
    c->m_in_flight = ab_metrics_gauge(reg, "agentbus_llm_calls_in_flight",
                                      "model calls in flight in this process", NULL);
    c->m_waiting = ab_metrics_gauge(reg, "agentbus_llm_calls_waiting",
                                    "jobs waiting for a model's concurrency slot or a backoff",
                                    NULL);
    if (pthread_create(&c->thread, NULL, engine_main, c) != 0) {
        snprintf(errstr, size, "llm caller: cannot start its thread");
        free(c);
        return NULL;
    }
    pthread_mutex_lock(&c->lock);
    while (c->started == 0)
        pthread_cond_wait(&c->started_cond, &c->lock);
    pthread_mutex_unlock(&c->lock);
    if (c->started < 0) {
        pthread_join(c->thread, NULL);
        snprintf(errstr, size, "llm caller: libcurl's multi interface did not start");
        free(c);
        return NULL;
    }
    return c;
}

void llmw_caller_submit(struct llmw_caller *c, struct llmw_job *job)
{
    job->caller = c;
    job->next = NULL;
    pthread_mutex_lock(&c->lock);
    if (c->in_tail != NULL)
        c->in_tail->next = job;
    else
        c->in_head = job;
    c->in_tail = job;
    /* Under the lock, so the engine (freed only after the thread ends) is still there. */
    if (c->http != NULL)
        ab_http_multi_wakeup(c->http);
    pthread_mutex_unlock(&c->lock);
}

void llmw_caller_free(struct llmw_caller *c)
{
    if (c == NULL)
        return;
    pthread_mutex_lock(&c->lock);
    atomic_store(&c->stop, true);
    if (c->http != NULL)
        ab_http_multi_wakeup(c->http);
    pthread_mutex_unlock(&c->lock);
    pthread_join(c->thread, NULL);
    free(c->timers);
    free(c->calls);
    free(c->slots);
    pthread_mutex_destroy(&c->lock);
    pthread_cond_destroy(&c->started_cond);
    free(c);
}
