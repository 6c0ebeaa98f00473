/* The LLM worker's stages and the threads that run them. */
#include "services/llm-worker/worker.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/db.h"
#include "common/log.h"
#include "common/metrics.h"
#include "common/retry.h"
#include "services/llm-worker/caller.h"
#include "services/llm-worker/job.h"
#include "services/llm-worker/publish.h"
#include "services/llm-worker/store.h"

#define DB_ACQUIRE_TIMEOUT_MS 5000
/* Recording an answer is retried in place this many times before the request goes back to
 * the consumer (whose retry would call the model again: tokens are worth a short wait). */
#define RECORD_TRIES 6

struct llmw_worker {
    struct ab_service *svc;
    struct llmw_store_settings store;
    struct llmw_caller *caller;
    pthread_t *threads;
    int thread_count;

    pthread_mutex_t lock;
    pthread_cond_t wake;
    struct llmw_job *head, *tail; /* jobs for the database threads (under lock) */
    bool stopping;                /* under lock: no call starts any more */
    /* Under lock: the engine has ended every call (answers it got are queued to record),
     * so a database thread that finds the queue empty may end. */
    bool caller_gone;

    struct ab_metric *m_requests; /* by status and code */
    struct ab_metric *m_latency;
};

static void free_job(struct llmw_job *job)
{
    for (size_t i = 0; i < job->model_count; i++)
        llmw_model_cleanup(&job->models[i]);
    json_decref(job->messages);
    json_decref(job->attempts);
    llmw_openai_result_cleanup(&job->answer);
    llmw_call_spec_cleanup(&job->spec);
    llmw_openai_stream_free(job->stream);
    free(job->body);
    free(job);
}

/* The end of a job: the consumer takes the result, and the job is gone. */
static void end_job(struct llmw_job *job, enum ab_err err, const char *reason)
{
    struct ab_consumer_job *cj = job->cj;
    free_job(job);
    ab_consumer_job_done(cj, err, reason);
}

static void enqueue(struct llmw_worker *w, struct llmw_job *job)
{
    job->next = NULL;
    pthread_mutex_lock(&w->lock);
    if (w->tail != NULL)
        w->tail->next = job;
    else
        w->head = job;
    w->tail = job;
    pthread_cond_signal(&w->wake);
    pthread_mutex_unlock(&w->lock);
}

/* The caller's end of a job's calls (engine thread). */
static void calls_finished(void *ud, struct llmw_job *job)
{
    struct llmw_worker *w = ud;
    if (job->status == LLMW_CANCELLED) {
        end_job(job, AB_ERR_SHUTDOWN, "llm-worker: the call was cancelled (stopping, or the "
                                      "partition moved to another worker)");
        return;
    }
    job->stage = LLMW_STAGE_RECORD;
    enqueue(w, job);
}

static void log_outcome(struct llmw_worker *w, const struct llmw_job *job)
{
    int64_t ms = ab_monotonic_ms() - job->arrived_ms;
    const char *status = llmw_status_name(job->status);
    ab_metric_inc(w->m_requests,
                  (const char *const[]){ status,
                                         job->status == LLMW_ANSWERED ? "" : job->error_code,
                                         NULL },
                  1);
    ab_metric_observe(w->m_latency, (const char *const[]){ status, NULL }, (double)ms / 1000.0);
    if (job->status == LLMW_ANSWERED) {
        const struct llmw_openai_usage *u = &job->answer.usage;
        ab_info("llm request %s: %s answered %s with model %s in %lld ms (first token %lld ms, "
                "%zu calls, tokens %lld prompt / %lld completion)",
                job->req.event_id, job->agent_name, job->sender_name,
                job->models[job->answer_model].name, (long long)ms,
                (long long)job->first_token_ms, json_array_size(job->attempts),
                u->prompt_tokens, u->completion_tokens);
    } else {
        ab_warn("llm request %s: %s, not answered (%s): %s", job->req.event_id, status,
                job->error_code, job->error_message);
    }
}

/* Publishes a recorded outcome and ends the job; a failure goes back to the consumer, whose
 * retry finds the row and publishes again. */
static void publish_and_end(struct llmw_worker *w, PGconn *conn, struct llmw_job *job,
                            bool fresh)
{
    char reason[512] = "";
    enum ab_err err = llmw_publish_recorded(conn, w->svc->producer, job, reason, sizeof(reason));
    ab_db_release(w->svc->db, conn);
    if (err == AB_OK && fresh)
        log_outcome(w, job);
    else if (err == AB_OK)
        ab_info("llm request %s: recorded before; its events were published again",
                job->req.event_id);
    end_job(job, err, reason);
}

/* One try at recording: on the connection in hand, or a fresh one after a failure. */
struct record_try {
    struct llmw_worker *w;
    struct llmw_job *job;
    PGconn *conn;
};

static enum ab_err record_once(void *ud, char *reason, size_t size)
{
    struct record_try *t = ud;
    enum ab_err err = AB_OK;
    if (t->conn == NULL)
        err = ab_db_acquire(t->w->svc->db, DB_ACQUIRE_TIMEOUT_MS, &t->conn, reason, size);
    if (err == AB_OK)
        err = llmw_store_record(t->conn, t->job, reason, size);
    if (err != AB_OK) {
        ab_db_release(t->w->svc->db, t->conn);
        t->conn = NULL;
    }
    return err;
}

static void record(struct llmw_worker *w, PGconn *conn, struct llmw_job *job)
{
    char reason[512] = "", what[128];
    struct record_try t = { w, job, conn };
    snprintf(what, sizeof(what), "llm request %s: cannot record its outcome", job->req.event_id);
    enum ab_err err = ab_retry_in_place(record_once, &t, RECORD_TRIES, 200, what, reason,
                                        sizeof(reason));
    if (err != AB_OK) {
        ab_error("llm request %s: outcome not recorded: %s", job->req.event_id, reason);
        end_job(job, err, reason);
        return;
    }
    publish_and_end(w, t.conn, job, true);
}

static void prepare(struct llmw_worker *w, PGconn *conn, struct llmw_job *job)
{
    char reason[512] = "";
    bool recorded = false;
    enum ab_err err = llmw_store_prepare(conn, &w->store, job, &recorded, reason,
                                         sizeof(reason));
    if (err != AB_OK) {
        ab_db_release(w->svc->db, conn);
        end_job(job, err, reason);
    } else if (recorded) {
        publish_and_end(w, conn, job, false);
    } else if (job->status != LLMW_ANSWERED) {
        record(w, conn, job); /* failed or skipped before any call */
    } else {
        ab_db_release(w->svc->db, conn);
        job->stage = LLMW_STAGE_CALL;
        pthread_mutex_lock(&w->lock);
        bool stopping = w->stopping;
        if (!stopping)
            llmw_caller_submit(w->caller, job); /* under the lock: the caller still exists */
        pthread_mutex_unlock(&w->lock);
        if (stopping)
            end_job(job, AB_ERR_SHUTDOWN, "llm-worker: stopping");
    }
}

static void run_stage(struct llmw_worker *w, struct llmw_job *job, bool stopping)
{
    char reason[512] = "";
    PGconn *conn = NULL;
    /* While stopping, only answers already paid for are recorded; the rest is left to the
     * partition's next owner. */
    if (stopping && job->stage != LLMW_STAGE_RECORD) {
        end_job(job, AB_ERR_SHUTDOWN, "llm-worker: stopping");
        return;
    }
    enum ab_err err = ab_db_acquire(w->svc->db, DB_ACQUIRE_TIMEOUT_MS, &conn, reason,
                                    sizeof(reason));
    if (err != AB_OK) {
        if (job->stage == LLMW_STAGE_RECORD)
            ab_error("llm request %s: outcome not recorded: %s", job->req.event_id, reason);
        end_job(job, err, reason);
        return;
    }
    if (job->stage == LLMW_STAGE_PREPARE)
        prepare(w, conn, job);
    else
        record(w, conn, job);
}

static void *db_thread(void *arg)
{
    struct llmw_worker *w = arg;
    for (;;) {
        pthread_mutex_lock(&w->lock);
        while (w->head == NULL && !w->caller_gone)
            pthread_cond_wait(&w->wake, &w->lock);
        struct llmw_job *job = w->head;
        if (job != NULL) {
            w->head = job->next;
            if (w->head == NULL)
                w->tail = NULL;
        }
        bool stopping = w->stopping;
        pthread_mutex_unlock(&w->lock);
        if (job == NULL)
            return NULL; /* the engine is gone, and nothing is left */
        ab_log_set_event_id(job->req.event_id);
        ab_trace_resume(job->traceparent);
        run_stage(w, job, stopping);
        ab_trace_leave();
        ab_log_set_event_id(NULL);
    }
}

/* A conversation's key as the dispatcher gives it (docs/events.md), from the ids: the reply
 * travels in the conversation's order whatever key the request came with. A webhook's
 * conversation has no pair of agents, and no reply: its events keep the key the request came
 * with (the dispatcher's key of that conversation), or the conversation's id without one. */
static void conversation_key(const struct llmw_request *r, const struct ab_consumed *msg,
                             char out[LLMW_KEY_MAX])
{
    if (r->sender_kind == LLMW_SENDER_WEBHOOK) {
        if (msg->key != NULL && msg->key_len > 0 && msg->key_len < LLMW_KEY_MAX &&
            memchr(msg->key, '\0', msg->key_len) == NULL)
            snprintf(out, LLMW_KEY_MAX, "%.*s", (int)msg->key_len, (const char *)msg->key);
        else
            snprintf(out, LLMW_KEY_MAX, "conversation:%s", r->conversation_id);
        return;
    }
    bool sender_low = strcmp(r->sender_id, r->target_id) < 0;
    snprintf(out, LLMW_KEY_MAX, "agents:%s:%s", sender_low ? r->sender_id : r->target_id,
             sender_low ? r->target_id : r->sender_id);
}

void llmw_worker_start_job(void *ud, struct ab_consumer_job *cj)
{
    struct llmw_worker *w = ud;
    const struct ab_consumed *msg = ab_consumer_job_msg(cj);
    struct llmw_job *job = ab_xcalloc(1, sizeof(*job));
    char reason[512];
    job->w = w;
    job->cj = cj;
    job->arrived_ms = ab_monotonic_ms();
    job->first_token_ms = -1;
    job->stage = LLMW_STAGE_PREPARE;
    if (llmw_request_parse(msg->event, &job->req, reason, sizeof(reason)) != AB_OK) {
        end_job(job, AB_ERR_INVALID, reason); /* dead-lettered with the reason */
        return;
    }
    ab_trace_current_header(job->traceparent); /* the consumer's span of this message */
    conversation_key(&job->req, msg, job->key);
    enqueue(w, job);
}

struct llmw_worker *llmw_worker_new(struct ab_service *svc, char *errstr, size_t size)
{
    const struct ab_config *cfg = svc->cfg;
    struct llmw_worker *w = ab_xcalloc(1, sizeof(*w));
    w->svc = svc;
    w->store.history_turns = (int)ab_config_int(cfg, AB_OPT_LLM_HISTORY_TURNS);
    w->store.max_hops = (int)ab_config_int(cfg, AB_OPT_LLM_MAX_HOPS);
    pthread_mutex_init(&w->lock, NULL);
    pthread_cond_init(&w->wake, NULL);
    w->m_requests = ab_metrics_counter(ab_metrics_default(), "agentbus_llm_requests_total",
                                       "LLM requests finished, by status and error code",
                                       (const char *const[]){ "status", "code", NULL });
    w->m_latency = ab_metrics_histogram(ab_metrics_default(),
                                        "agentbus_llm_request_duration_seconds",
                                        "from a request's arrival to its published outcome",
                                        (const char *const[]){ "status", NULL },
                                        (const double[]){ .05, .1, .25, .5, 1, 2.5, 5, 10, 30,
                                                          60, 120, 300 },
                                        12);

    const struct llmw_caller_options co = {
        .retry = { .kind = AB_RETRY_EXPONENTIAL,
                   .base_ms = ab_config_int(cfg, AB_OPT_LLM_RETRY_BASE_MS),
                   .factor = 2,
                   .max_ms = ab_config_int(cfg, AB_OPT_LLM_RETRY_MAX_MS),
                   .max_attempts = (int)ab_config_int(cfg, AB_OPT_LLM_MAX_ATTEMPTS),
                   .retry_after_cap_ms = ab_config_int(cfg, AB_OPT_LLM_RETRY_AFTER_CAP_MS) },
        .max_response_bytes = (size_t)ab_config_int(cfg, AB_OPT_LLM_MAX_RESPONSE_BYTES),
        /* Twice the requests in hand: calls of requests the consumer abandoned (a revoked
         * partition) stay in the engine until they are cancelled, and must never make it
         * refuse the calls of the requests that replaced them. */
        .max_transfers = 2 * (size_t)ab_config_int(cfg, AB_OPT_LLM_MAX_IN_FLIGHT),
        .finished = calls_finished,
        .ud = w,
    };
    if (co.retry.max_ms < co.retry.base_ms) {
        snprintf(errstr, size, "llm_worker.retry_max_ms must be at least llm_worker.retry_base_ms");
        goto fail;
    }
    w->caller = llmw_caller_new(&co, errstr, size);
    if (w->caller == NULL)
        goto fail;
    int n = (int)ab_config_int(cfg, AB_OPT_LLM_DB_THREADS);
    w->threads = ab_xcalloc((size_t)n, sizeof(*w->threads));
    for (; w->thread_count < n; w->thread_count++) {
        if (pthread_create(&w->threads[w->thread_count], NULL, db_thread, w) != 0) {
            snprintf(errstr, size, "llm-worker: cannot start database thread %d", w->thread_count);
            llmw_worker_quiesce(w);
            goto fail;
        }
    }
    return w;
fail:
    llmw_worker_free(w);
    return NULL;
}

void llmw_worker_quiesce(void *ud)
{
    struct llmw_worker *w = ud;
    pthread_mutex_lock(&w->lock);
    w->stopping = true;
    pthread_mutex_unlock(&w->lock);
    /* No job reaches the caller now; freeing it ends its calls, and each one it ends goes
     * to the database threads (an answer, to record) or back to the consumer. */
    llmw_caller_free(w->caller);
    w->caller = NULL;
    pthread_mutex_lock(&w->lock);
    w->caller_gone = true;
    pthread_cond_broadcast(&w->wake);
    pthread_mutex_unlock(&w->lock);
    for (int i = 0; i < w->thread_count; i++)
        pthread_join(w->threads[i], NULL);
    w->thread_count = 0;
}

void llmw_worker_free(struct llmw_worker *w)
{
    if (w == NULL)
        return;
    if (w->caller != NULL || w->thread_count > 0)
        llmw_worker_quiesce(w);
    free(w->threads);
    pthread_mutex_destroy(&w->lock);
    pthread_cond_destroy(&w->wake);
    free(w);
}
