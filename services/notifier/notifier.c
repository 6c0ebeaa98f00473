/* The notifier's stages and threads (notifier.h). */
#include "services/notifier/notifier.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "common/crypto.h"
#include "common/db.h"
#include "common/log.h"
#include "common/metrics.h"
#include "common/netguard.h"
#include "common/outgoing.h"
#include "common/trace.h"
#include "services/notifier/delivery.h"
#include "services/notifier/engine.h"
#include "services/notifier/store.h"

#define SOURCE                "/agentbus/notifier"
#define DB_ACQUIRE_TIMEOUT_MS 5000
#define RECORD_BATCH          256 /* attempts recorded, or retries kept, in one transaction */
#define RECORD_TRIES          6
#define FULL_WAIT_MS          100 /* the schedule has due retries but this process is full */
#define DUE_SLACK_MS          20  /* a retry due this soon is run, not scheduled */
#define SCHEDULER_MAX_WAIT_MS 1000
#define DISABLED_REFRESH_MS   2000
#define CLAIM_BATCH           256
/* How often the dead letters held are counted (a scan of notify_dead_letters), besides
 * right after this process dead-letters a delivery. */
#define DEAD_LETTERS_REFRESH_MS 10000

/* The database threads' queues of deliveries (linked by their next). */
enum queue { Q_PREPARE, Q_SCHEDULE, Q_RECORD, Q__COUNT };

struct queue_list {
    struct notify_delivery *head, *tail;
};

struct notify_notifier {
    struct ab_service *svc;
    struct ab_outgoing *outgoing;
    struct ab_netguard *guard;
    int64_t *feishu_schedule;
    struct notify_job_config jobs; /* what reading a job needs: the three above, the timeout */
    size_t max_in_flight;
    long lease_ms;
    struct notify_engine *engine;

    pthread_mutex_t lock;
    pthread_cond_t wake; /* database threads */
    /* Q_PREPARE: Feishu deliveries, served by the first database thread alone, so a
     * person's messages reach the engine in the order they came; Q_SCHEDULE: retries to
     * keep until due; Q_RECORD: finished attempts. */
    struct queue_list q[Q__COUNT];
    bool stopping;
    bool engine_gone;
    pthread_t *threads;
    int thread_count;

    /* The scheduler, and the endpoints disabled (under lock). */
    pthread_t scheduler;
    bool scheduler_started;
    pthread_cond_t sched_wake;
    int64_t sched_hint_ms; /* a retry kept by this process is due then (wall) */
    char **disabled;
    size_t disabled_count;
    atomic_size_t scheduled_in_hand; /* claimed, not yet recorded */
    atomic_size_t in_engine;         /* submitted, not yet finished */
    atomic_llong backlog;
    atomic_llong dead_held;           /* agentbus_notify_dead_letters_held */
    atomic_bool dead_letters_changed; /* this process recorded a dead letter: count again */

    struct ab_metric *m_attempts, *m_delivery, *m_attempt_time, *m_dead, *m_failing;
    struct ab_metric *m_backlog, *m_in_flight;
    /* Registered by the scheduler thread once the first count is in (no made-up 0 before
     * it); read by notify_notifier_free after that thread is joined. */
    struct ab_metric *m_dead_held;
};

/* ---- queues ---- */

static void enqueue(struct notify_notifier *n, enum queue q, struct notify_delivery *d)
{
    struct queue_list *l = &n->q[q];
    d->next = NULL;
    pthread_mutex_lock(&n->lock);
    if (l->tail != NULL)
        l->tail->next = d;
    else
        l->head = d;
    l->tail = d;
    pthread_cond_broadcast(&n->wake); /* Q_PREPARE waits for one thread in particular */
    pthread_mutex_unlock(&n->lock);
}

static void to_record(struct notify_notifier *n, struct notify_delivery *d)
{
    enqueue(n, Q_RECORD, d);
}

/* The engine's end of an attempt (engine thread). */
static void engine_finished(void *ud, struct notify_delivery *d)
{
    struct notify_notifier *n = ud;
    atomic_fetch_sub(&n->in_engine, 1);
    to_record(n, d);
}

/* Ends a delivery that never reached recording: back to the consumer with err (a
 * retriable one redoes it; a permanent one dead-letters the message), or, from the
 * schedule, its lease runs out and another claim redoes it. */
static void drop(struct notify_notifier *n, struct notify_delivery *d, enum ab_err err,
                 const char *reason)
{
    if (d->cj != NULL)
        ab_consumer_job_done(d->cj, err, reason);
    else
        atomic_fetch_sub(&n->scheduled_in_hand, 1);
    notify_delivery_free(d);
}

/* ---- outcome events ---- */

static struct ab_event *outcome_event(const struct notify_delivery *d, const char *type,
                                      const char *suffix, json_t *data)
{
    /* The attempt is in the name: an endpoint's breaker may open and close again within
     * one delivery's run. */
    struct ab_event *ev = ab_event_new_derived(type, SOURCE, d->destination, data, "%s:%s:%d:%d",
                                               d->id, suffix, d->replay, d->attempt);
    ab_event_set_traceparent(ev, d->traceparent);
    return ev;
}

/* What every outcome event says about its delivery. */
static json_t *outcome_data(const struct notify_delivery *d)
{
    const json_t *source = json_object_get(json_object_get(d->job, "data"), "source_event");
    json_t *o =
        json_pack("{s:s, s:s, s:s, s:i, s:I, s:b}", "delivery_id", d->id, "kind",
                  notify_kind_name(d->kind), "destination", d->destination, "attempt", d->attempt,
                  "latency_ms", (json_int_t)d->latency_ms, "about_outcome", d->about_outcome);
    json_object_set_new(o, "tenant_id", d->tenant_id[0] ? json_string(d->tenant_id) : json_null());
    json_object_set_new(o, "status", d->status > 0 ? json_integer(d->status) : json_null());
    if (d->kind == NOTIFY_WEBHOOK) {
        json_object_set_new(o, "endpoint_id", json_string(notify_delivery_endpoint_id(d)));
        json_object_set_new(o, "event", json_string(d->event_type));
        if (source != NULL)
            json_object_set(o, "source_event", (json_t *)source);
        if (d->forward != NULL)
            json_object_set_new(o, "hook_id", json_string(d->forward->id + strlen("forward:")));
    } else {
        if (d->chat_id[0])
            json_object_set_new(o, "chat_id", json_string(d->chat_id));
        else
            json_object_set_new(o, "member_id", json_string(d->member_id));
        json_object_set_new(o, "receive_id_type", json_string(d->receive_id_type));
        if (d->message_id[0])
            json_object_set_new(o, "message_id", json_string(d->message_id));
    }
    return o;
}

/* The Kafka side of a finished attempt, appended to evs (events owned by evs), each
 * marked pending (AB_ERR_UNAVAILABLE) with its delivery's index in owners. */
static void outcome_events(struct notify_delivery *d, size_t index, struct ab_outgoing_event *evs,
                           size_t *owners, size_t *count)
{
#define ADD(t, k, e)                                                                               \
    (owners[*count] = index, evs[(*count)++] = (struct ab_outgoing_event){                         \
                                 .topic = (t), .key = (k), .ev = (e), .err = AB_ERR_UNAVAILABLE})
    switch (d->outcome) {
    case NOTIFY_RETRY:
    case NOTIFY_DEFERRED:
        ADD(AB_TOPIC_NOTIFY_RETRY, d->key, notify_retry_event(d));
        break;
    case NOTIFY_DELIVERED: {
        json_t *o = outcome_data(d);
        json_object_set_new(o, "delivery_ms",
                            json_integer((json_int_t)(ab_wall_ms() - d->job_time_ms)));
        ADD(AB_TOPIC_EVENTS, d->key, outcome_event(d, "agentbus.notify.delivered", "delivered", o));
        break;
    }
    case NOTIFY_FAILED: {
        size_t len;
        char *text = notify_job_text(d, &len);
        struct ab_event *job = NULL;
        char err[128];
        if (text != NULL && ab_event_parse(text, len, &job, err, sizeof(err)) == AB_OK)
            ADD(AB_TOPIC_NOTIFY_DLQ, d->key, job);
        free(text);
        json_t *o = outcome_data(d);
        json_object_set_new(o, "code", json_string(d->code));
        json_object_set_new(o, "message", json_string(d->error));
        ADD(AB_TOPIC_EVENTS, d->key,
            outcome_event(d, "agentbus.notify.failed", "failed", json_deep_copy(o)));
        json_object_set_new(o, "stage", json_string("notify"));
        json_object_set_new(o, "status", json_string("failed"));
        json_object_set_new(o, "http_status",
                            d->status > 0 ? json_integer(d->status) : json_null());
        ADD(AB_TOPIC_EVENTS, d->key, outcome_event(d, "agentbus.error", "error", o));
        break;
    }
    case NOTIFY_ABANDONED:
        break;
    }
    if (d->kind == NOTIFY_WEBHOOK && (d->breaker_opened || d->breaker_closed || d->endpoint_gone)) {
        const char *type = d->endpoint_gone    ? "agentbus.notify.endpoint_disabled"
                           : d->breaker_opened ? "agentbus.notify.endpoint_failing"
                                               : "agentbus.notify.endpoint_recovered";
        json_t *o = json_pack("{s:s, s:s, s:s}", "endpoint_id", notify_delivery_endpoint_id(d),
                              "code", d->code, "message", d->error);
        ADD(AB_TOPIC_EVENTS, d->key, outcome_event(d, type, type + strlen("agentbus.notify."), o));
    }
#undef ADD
}

static void observe(struct notify_notifier *n, const struct notify_delivery *d)
{
    const char *kind = notify_kind_name(d->kind);
    ab_metric_inc(n->m_attempts, (const char *const[]){kind, notify_outcome_name(d->outcome), NULL},
                  1);
    if (d->outcome != NOTIFY_DEFERRED)
        ab_metric_observe(n->m_attempt_time, (const char *const[]){kind, NULL},
                          (double)d->latency_ms / 1000.0);
    if (d->outcome == NOTIFY_DELIVERED)
        ab_metric_observe(n->m_delivery, (const char *const[]){kind, NULL},
                          (double)(ab_wall_ms() - d->job_time_ms) / 1000.0);
    if (d->outcome == NOTIFY_FAILED) {
        ab_metric_inc(n->m_dead, (const char *const[]){kind, NULL}, 1);
        atomic_store(&n->dead_letters_changed, true);
    }
    if (d->breaker_opened || d->breaker_closed)
        ab_metric_set(n->m_failing, (const char *const[]){notify_delivery_endpoint_id(d), NULL},
                      d->breaker_opened ? 1 : 0);
    /* The lines below are the delivery's, whichever thread reports it. */
    struct ab_trace outer;
    bool had_outer = ab_trace_current() != NULL;
    if (had_outer)
        outer = *ab_trace_current();
    ab_trace_resume(d->traceparent);
    switch (d->outcome) {
    case NOTIFY_DELIVERED:
        ab_debug("delivery %s to %s: delivered (attempt %d, HTTP %ld, %lld ms)", d->id,
                 d->destination, d->attempt, d->status, (long long)d->latency_ms);
        break;
    case NOTIFY_RETRY:
        ab_info("delivery %s to %s: attempt %d failed (%s: %s); next in %lld ms", d->id,
                d->destination, d->attempt, d->code, d->error,
                (long long)(d->next_due_ms - ab_wall_ms()));
        break;
    case NOTIFY_FAILED:
        ab_warn("delivery %s to %s: dead-lettered after attempt %d (%s: %s)", d->id, d->destination,
                d->attempt, d->code, d->error);
        break;
    default:
        break;
    }
    if (d->breaker_opened)
        ab_warn("endpoint %s is failing: its breaker is open", d->destination);
    if (d->breaker_closed)
        ab_info("endpoint %s answers again: its breaker is closed", d->destination);
    ab_trace_set_current(had_outer ? &outer : NULL);
}

/* The events of a batch: each try sends those still pending (never acknowledged, failed
 * retriably) and leaves alone those Kafka refused for good. */
struct publish_try {
    struct ab_producer *producer;
    struct ab_outgoing_event *evs;
    size_t count;
};

static bool pending(const struct ab_outgoing_event *ev)
{
    return ev->err != AB_OK && ab_err_is_retriable(ev->err);
}

static enum ab_err publish_once(void *ud, char *reason, size_t size)
{
    struct publish_try *t = ud;
    struct ab_outgoing_event *send = ab_xcalloc(t->count + 1, sizeof(*send));
    size_t *from = ab_xcalloc(t->count + 1, sizeof(*from)), n = 0;
    enum ab_err err = AB_OK;
    for (size_t i = 0; i < t->count; i++)
        if (pending(&t->evs[i])) {
            from[n] = i;
            send[n++] = t->evs[i];
        }
    if (n > 0)
        ab_producer_send_events(t->producer, send, n, reason, size);
    for (size_t k = 0; k < n; k++) {
        t->evs[from[k]].err = send[k].err;
        if (pending(&send[k]) && err == AB_OK)
            err = send[k].err;
    }
    free(send);
    free(from);
    return err;
}

struct store_try {
    struct notify_notifier *n;
    struct notify_delivery **ds;
    size_t count;
};

static enum ab_err store_once(void *ud, char *reason, size_t size)
{
    struct store_try *t = ud;
    PGconn *conn = NULL;
    enum ab_err err = ab_db_acquire(t->n->svc->db, DB_ACQUIRE_TIMEOUT_MS, &conn, reason, size);
    if (err == AB_OK)
        err = notify_store_record(conn, t->ds, t->count, reason, size);
    ab_db_release(t->n->svc->db, conn);
    return err;
}

/* Ends the deliveries of a batch: recorded (err AB_OK), or back to where they came from. A
 * consumer's job then comes again (redone: the same ids); PostgreSQL refusing a row for
 * good dead-letters the message with the reason rather than retrying it for ever. */
static void end_batch(struct notify_notifier *n, struct notify_delivery **ds, size_t count,
                      enum ab_err err, const char *reason)
{
    for (size_t i = 0; i < count; i++) {
        struct notify_delivery *d = ds[i];
        if (err == AB_OK)
            observe(n, d);
        if (d->outcome == NOTIFY_ABANDONED)
            drop(n, d, AB_ERR_SHUTDOWN, "notifier: stopping; the delivery is redone later");
        else
            drop(n, d, err == AB_OK || !ab_err_is_retriable(err) ? err : AB_ERR_UNAVAILABLE,
                 reason);
    }
}

/* Records a batch of finished attempts: Kafka first (the next retry must exist before the
 * offset moves), then PostgreSQL in one transaction, each retried in place a few times;
 * then the deliveries end. A delivery whose event Kafka refuses for good (too large) ends
 * with that error alone; should PostgreSQL refuse the batch for good, each delivery is
 * recorded alone, so one bad row never holds the others. */
static void record_batch(struct notify_notifier *n, struct notify_delivery **ds, size_t count)
{
    struct ab_outgoing_event *evs = ab_xcalloc(count * 5 + 1, sizeof(*evs));
    size_t *owners = ab_xcalloc(count * 5 + 1, sizeof(*owners));
    enum ab_err *derr = ab_xcalloc(count, sizeof(*derr));
    struct notify_delivery **ok = ab_xcalloc(count, sizeof(*ok));
    struct publish_try pub = {n->svc->producer, evs, 0};
    size_t nok = 0;
    char reason[512] = "";

    for (size_t i = 0; i < count; i++)
        outcome_events(ds[i], i, evs, owners, &pub.count);
    ab_retry_in_place(publish_once, &pub, RECORD_TRIES, 100,
                      "notifier: cannot publish outcome events", reason, sizeof(reason));
    for (size_t i = 0; i < pub.count; i++) {
        enum ab_err *e = &derr[owners[i]];
        if (evs[i].err != AB_OK && (*e == AB_OK || ab_err_is_retriable(*e)))
            *e = evs[i].err; /* a permanent refusal wins over a retriable one */
        ab_event_free((struct ab_event *)evs[i].ev);
    }
    for (size_t i = 0; i < count; i++) {
        if (derr[i] == AB_OK) {
            ok[nok++] = ds[i];
        } else {
            ab_error("delivery %s: outcome events not published: %s", ds[i]->id,
                     ab_err_name(derr[i]));
            end_batch(n, &ds[i], 1, derr[i], reason);
        }
    }
    struct store_try st = {n, ok, nok};
    enum ab_err err =
        nok ? ab_retry_in_place(store_once, &st, RECORD_TRIES, 100,
                                "notifier: cannot record attempts", reason, sizeof(reason))
            : AB_OK;
    if (err != AB_OK && !ab_err_is_retriable(err) && nok > 1) {
        for (size_t i = 0; i < nok; i++) {
            struct store_try one = {n, &ok[i], 1};
            enum ab_err e1 = store_once(&one, reason, sizeof(reason));
            if (e1 != AB_OK)
                ab_error("delivery %s: attempt not recorded: %s", ok[i]->id, reason);
            end_batch(n, &ok[i], 1, e1, reason);
        }
    } else {
        if (err != AB_OK)
            ab_error("notifier: %zu attempts not recorded: %s", nok, reason);
        end_batch(n, ok, nok, err, reason);
    }
    free(evs);
    free(owners);
    free(derr);
    free(ok);
}

/* ---- prepare ---- */

static bool endpoint_disabled(struct notify_notifier *n, const char *id)
{
    bool found = false;
    pthread_mutex_lock(&n->lock);
    for (size_t i = 0; i < n->disabled_count && !found; i++)
        found = strcmp(n->disabled[i], id) == 0;
    pthread_mutex_unlock(&n->lock);
    return found;
}

static void submit(struct notify_notifier *n, struct notify_delivery *d)
{
    pthread_mutex_lock(&n->lock);
    bool stopping = n->stopping;
    if (!stopping) {
        atomic_fetch_add(&n->in_engine, 1);
        notify_engine_submit(n->engine, d); /* under the lock: the engine still exists */
    }
    pthread_mutex_unlock(&n->lock);
    if (stopping) {
        d->outcome = NOTIFY_ABANDONED; /* recording gives a scheduled row its lease back */
        to_record(n, d);
    }
}

/* A delivery read from Kafka or the schedule goes on: a webhook straight to the engine (or,
 * to a disabled endpoint, to its dead letter; a forward has no endpoint to disable); a
 * Feishu delivery first to a database thread, which reads the person (or the chat's
 * tenant) and the app. */
static void take(struct notify_notifier *n, struct notify_delivery *d)
{
    if (d->outcome == NOTIFY_FAILED) {
        to_record(n, d);
    } else if (d->kind == NOTIFY_FEISHU) {
        enqueue(n, Q_PREPARE, d);
    } else if (d->forward == NULL && endpoint_disabled(n, d->endpoint->id)) {
        d->outcome = NOTIFY_FAILED;
        notify_delivery_set_error(d, "endpoint_disabled", "endpoint %s is disabled",
                                  d->endpoint->id);
        to_record(n, d);
    } else {
        submit(n, d);
    }
}

/* A webhook for an endpoint that is no longer configured: a dead letter with the reason,
 * replayable once the endpoint is back. */
static void endpoint_unknown(struct notify_delivery *d, const char *reason)
{
    d->outcome = NOTIFY_FAILED;
    notify_delivery_set_error(d, "endpoint_unknown", "%s", reason);
}

static void prepare_feishu(struct notify_notifier *n, struct notify_delivery *d)
{
    char reason[512] = "";
    PGconn *conn = NULL;
    enum ab_err err =
        ab_db_acquire(n->svc->db, DB_ACQUIRE_TIMEOUT_MS, &conn, reason, sizeof(reason));
    if (err == AB_OK)
        err = notify_store_prepare_feishu(conn, d, reason, sizeof(reason));
    ab_db_release(n->svc->db, conn);
    if (err != AB_OK)
        drop(n, d, ab_err_is_retriable(err) ? err : AB_ERR_UNAVAILABLE, reason);
    else if (d->outcome == NOTIFY_FAILED)
        to_record(n, d);
    else
        submit(n, d);
}

/* Keeps retries not yet due as rows of notify_scheduled, all in one statement, and wakes
 * the scheduler for the earliest. A failure hands them back to the consumer; PostgreSQL
 * refusing the batch for good, each is tried alone. */
static void schedule_batch(struct notify_notifier *n, struct notify_delivery **ds, size_t count)
{
    char reason[512] = "";
    PGconn *conn = NULL;
    const char **ids = ab_xcalloc(count, sizeof(*ids));
    const char **events = ab_xcalloc(count, sizeof(*events));
    int64_t *due = ab_xcalloc(count, sizeof(*due)), earliest = -1;
    for (size_t i = 0; i < count; i++) {
        ids[i] = ds[i]->scheduled_id;
        events[i] = ds[i]->retry_text;
        due[i] = ds[i]->due_ms;
        if (earliest < 0 || due[i] < earliest)
            earliest = due[i];
    }
    enum ab_err err =
        ab_db_acquire(n->svc->db, DB_ACQUIRE_TIMEOUT_MS, &conn, reason, sizeof(reason));
    if (err == AB_OK)
        err = notify_store_schedule(conn, ids, due, events, count, reason, sizeof(reason));
    ab_db_release(n->svc->db, conn);
    free(ids);
    free(events);
    free(due);
    if (err != AB_OK && !ab_err_is_retriable(err) && count > 1) {
        for (size_t i = 0; i < count; i++)
            schedule_batch(n, &ds[i], 1);
        return;
    }
    if (err == AB_OK) {
        pthread_mutex_lock(&n->lock);
        if (n->sched_hint_ms < 0 || earliest < n->sched_hint_ms)
            n->sched_hint_ms = earliest;
        pthread_cond_signal(&n->sched_wake);
        pthread_mutex_unlock(&n->lock);
    }
    for (size_t i = 0; i < count; i++)
        drop(n, ds[i], err, reason); /* AB_OK, retried, or dead-lettered with the reason */
}

/* Takes up to max deliveries off a queue (under the lock). */
static size_t take_some(struct queue_list *l, struct notify_delivery **out, size_t max)
{
    size_t count = 0;
    while (l->head != NULL && count < max) {
        out[count++] = l->head;
        l->head = l->head->next;
    }
    if (l->head == NULL)
        l->tail = NULL;
    return count;
}

struct db_thread_arg {
    struct notify_notifier *n;
    bool preparer; /* the one thread that prepares Feishu deliveries, in order */
};

static void *db_thread(void *arg)
{
    struct notify_notifier *n = ((struct db_thread_arg *)arg)->n;
    bool preparer = ((struct db_thread_arg *)arg)->preparer;
    struct notify_delivery *batch[RECORD_BATCH];
    free(arg);
    for (;;) {
        pthread_mutex_lock(&n->lock);
        while (n->q[Q_RECORD].head == NULL && n->q[Q_SCHEDULE].head == NULL &&
               (!preparer || n->q[Q_PREPARE].head == NULL) && !n->engine_gone)
            pthread_cond_wait(&n->wake, &n->lock);
        /* Finished attempts first (they free capacity and end jobs), then retries to keep,
         * then one Feishu delivery to prepare. */
        enum queue q = Q_RECORD;
        size_t count = take_some(&n->q[Q_RECORD], batch, RECORD_BATCH);
        if (count == 0) {
            q = Q_SCHEDULE;
            count = take_some(&n->q[Q_SCHEDULE], batch, RECORD_BATCH);
        }
        if (count == 0 && preparer) {
            q = Q_PREPARE;
            count = take_some(&n->q[Q_PREPARE], batch, 1);
        }
        pthread_mutex_unlock(&n->lock);
        if (count == 0)
            return NULL; /* the engine is gone, and nothing is left for this thread */
        if (q == Q_RECORD)
            record_batch(n, batch, count);
        else if (q == Q_SCHEDULE)
            schedule_batch(n, batch, count);
        else
            prepare_feishu(n, batch[0]);
    }
}

/* ---- the consumer's side ---- */

void notify_notifier_start_job(void *ud, struct ab_consumer_job *cj)
{
    struct notify_notifier *n = ud;
    const struct ab_consumed *msg = ab_consumer_job_msg(cj);
    struct notify_delivery *d = ab_xcalloc(1, sizeof(*d));
    char reason[512] = "", key[256];
    int64_t due = 0;
    enum ab_err err;

    d->cj = cj;
    snprintf(key, sizeof(key), "%.*s", (int)(msg->key_len < 255 ? msg->key_len : 255),
             msg->key ? (const char *)msg->key : "");
    if (strcmp(msg->event->type, NOTIFY_TYPE_RETRY) == 0) {
        err = notify_delivery_from_retry(d, msg->event, &n->jobs, &due, reason, sizeof(reason));
        /* Its id names its schedule row: kept there until due, or (after a crash, Kafka
         * handing it over again) removed when this attempt is recorded. */
        if (err != AB_ERR_INVALID && !ab_uuid_valid(msg->event->id)) {
            err = AB_ERR_INVALID;
            snprintf(reason, sizeof(reason), "%s: the id must be a UUID", NOTIFY_TYPE_RETRY);
        } else {
            snprintf(d->scheduled_id, sizeof(d->scheduled_id), "%s", msg->event->id);
        }
    } else {
        err = notify_delivery_from_job(d, msg->event, key, &n->jobs, reason, sizeof(reason));
    }
    if (err == AB_ERR_NOT_FOUND) {
        endpoint_unknown(d, reason);
    } else if (err != AB_OK) {
        notify_delivery_free(d);
        ab_consumer_job_done(cj, err == AB_ERR_NOMEM ? err : AB_ERR_INVALID, reason);
        return;
    } else if (due > ab_wall_ms() + DUE_SLACK_MS) {
        d->due_ms = due;
        d->retry_text = ab_xmalloc(msg->value_len + 1);
        memcpy(d->retry_text, msg->value, msg->value_len);
        d->retry_text[msg->value_len] = '\0';
        enqueue(n, Q_SCHEDULE, d);
        return;
    }
    take(n, d);
}

/* ---- the scheduler ---- */

static void refresh_disabled(struct notify_notifier *n, PGconn *conn)
{
    char **ids = NULL, reason[256];
    size_t count = 0;
    if (notify_store_disabled(conn, &ids, &count, reason, sizeof(reason)) != AB_OK)
        return;
    pthread_mutex_lock(&n->lock);
    char **old = n->disabled;
    size_t old_count = n->disabled_count;
    n->disabled = ids;
    n->disabled_count = count;
    pthread_mutex_unlock(&n->lock);
    notify_store_strings_free(old, old_count);
}

static double gauge_dead_held(void *ud)
{
    return (double)atomic_load(&((struct notify_notifier *)ud)->dead_held);
}

/* Counts the dead letters held, for agentbus_notify_dead_letters_held (scheduler thread). */
static void count_dead_letters(struct notify_notifier *n, PGconn *conn)
{
    int64_t held;
    char reason[256];
    if (notify_store_dead_letters_held(conn, &held, reason, sizeof(reason)) != AB_OK) {
        ab_debug("notifier: cannot count the dead letters: %s", reason);
        return;
    }
    atomic_store(&n->dead_held, held);
    if (n->m_dead_held == NULL)
        n->m_dead_held = ab_metrics_gauge_fn(
            ab_metrics_default(), "agentbus_notify_dead_letters_held",
            "dead letters kept and not replayed (all notifiers'; counted every 10 s and after "
            "each dead letter)",
            gauge_dead_held, n);
}

/* Claims due retries and hands them to the database threads as deliveries. */
static int64_t claim(struct notify_notifier *n, PGconn *conn)
{
    char **ids = NULL, **events = NULL, reason[512];
    size_t count = 0;
    int64_t next_in = -1;
    /* The consumer bounds what it takes; this bounds what the schedule adds. */
    size_t in_hand = atomic_load(&n->scheduled_in_hand);
    size_t room = in_hand < n->max_in_flight ? n->max_in_flight - in_hand : 0;
    int limit = room < CLAIM_BATCH ? (int)room : CLAIM_BATCH;
    if (notify_store_claim(conn, limit, n->lease_ms, &ids, &events, &count, &next_in, reason,
                           sizeof(reason)) != AB_OK) {
        ab_warn("notifier: cannot claim due retries: %s", reason);
        return ab_wall_ms() + SCHEDULER_MAX_WAIT_MS;
    }
    for (size_t i = 0; i < count; i++) {
        struct ab_event *ev = NULL;
        struct notify_delivery *d = ab_xcalloc(1, sizeof(*d));
        int64_t due;
        enum ab_err err = ab_event_parse(events[i], strlen(events[i]), &ev, reason, sizeof(reason));
        if (err == AB_OK)
            err = notify_delivery_from_retry(d, ev, &n->jobs, &due, reason, sizeof(reason));
        ab_event_free(ev);
        snprintf(d->scheduled_id, sizeof(d->scheduled_id), "%s", ids[i]);
        atomic_fetch_add(&n->scheduled_in_hand, 1);
        if (err == AB_ERR_NOT_FOUND) {
            endpoint_unknown(d, reason);
            take(n, d);
        } else if (err != AB_OK) {
            /* Cannot be a delivery: recorded nowhere else, so say it loudly and drop it. */
            ab_error("notifier: scheduled retry %s is unreadable (%s): removed", ids[i], reason);
            const char *const p[] = {ids[i]};
            ab_db_exec(conn, "DELETE FROM notify_scheduled WHERE id = $1", 1, p, NULL, reason,
                       sizeof(reason));
            drop(n, d, AB_OK, NULL);
        } else {
            take(n, d);
        }
    }
    notify_store_strings_free(ids, count);
    notify_store_strings_free(events, count);
    if (next_in < 0)
        return -1;
    if (limit == 0 && next_in < FULL_WAIT_MS)
        next_in = FULL_WAIT_MS; /* due, but no room: not a busy loop */
    return ab_wall_ms() + next_in;
}

static void *scheduler_main(void *arg)
{
    struct notify_notifier *n = arg;
    PGconn *conn = NULL;
    int64_t next_refresh = 0, next_due = 0, next_dead_count = 0;
    char reason[256];

    for (;;) {
        pthread_mutex_lock(&n->lock);
        for (;;) {
            int64_t now = ab_wall_ms();
            int64_t wake = now + SCHEDULER_MAX_WAIT_MS;
            if (n->sched_hint_ms >= 0 && n->sched_hint_ms < wake)
                wake = n->sched_hint_ms;
            if (next_due >= 0 && next_due < wake)
                wake = next_due;
            if (next_refresh < wake)
                wake = next_refresh;
            if (n->stopping || wake <= now)
                break;
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME, &ts);
            int64_t wait = wake - now;
            ts.tv_sec += wait / 1000;
            ts.tv_nsec += (long)(wait % 1000) * 1000000L;
            if (ts.tv_nsec >= 1000000000L) {
                ts.tv_sec++;
                ts.tv_nsec -= 1000000000L;
            }
            pthread_cond_timedwait(&n->sched_wake, &n->lock, &ts);
        }
        bool stopping = n->stopping;
        n->sched_hint_ms = -1;
        pthread_mutex_unlock(&n->lock);
        if (stopping)
            break;
        /* "starting" until the schema is migrated: the tables may not exist yet */
        if (ab_service_db_acquire(n->svc, DB_ACQUIRE_TIMEOUT_MS, &conn, reason, sizeof(reason)) !=
            AB_OK) {
            next_due = ab_wall_ms() + SCHEDULER_MAX_WAIT_MS;
            continue;
        }
        if (ab_wall_ms() >= next_refresh) {
            int64_t backlog;
            refresh_disabled(n, conn);
            if (notify_store_backlog(conn, &backlog, reason, sizeof(reason)) == AB_OK)
                atomic_store(&n->backlog, backlog);
            next_refresh = ab_wall_ms() + DISABLED_REFRESH_MS;
        }
        if (atomic_exchange(&n->dead_letters_changed, false) || ab_wall_ms() >= next_dead_count) {
            count_dead_letters(n, conn);
            next_dead_count = ab_wall_ms() + DEAD_LETTERS_REFRESH_MS;
        }
        next_due = claim(n, conn);
        ab_db_release(n->svc->db, conn);
        conn = NULL;
    }
    return NULL;
}

/* ---- life ---- */

static double gauge_backlog(void *ud)
{
    return (double)atomic_load(&((struct notify_notifier *)ud)->backlog);
}

static double gauge_in_flight(void *ud)
{
    return (double)atomic_load(&((struct notify_notifier *)ud)->in_engine);
}

static void metrics(struct notify_notifier *n)
{
    struct ab_metrics *reg = ab_metrics_default();
    const char *const kind[] = {"kind", NULL};
    n->m_attempts = ab_metrics_counter(reg, "agentbus_notify_attempts_total",
                                       "delivery attempts, by destination kind and outcome",
                                       (const char *const[]){"kind", "outcome", NULL});
    n->m_delivery = ab_metrics_histogram(
        reg, "agentbus_notify_delivery_seconds",
        "from the delivery's event to its successful attempt (retries included)", kind,
        (const double[]){.005, .01, .025, .05, .1, .25, .5, 1, 5, 30, 300, 3600, 36000}, 13);
    n->m_attempt_time = ab_metrics_histogram(
        reg, "agentbus_notify_attempt_seconds", "one attempt's requests, first to last byte", kind,
        (const double[]){.001, .005, .01, .025, .05, .1, .25, .5, 1, 5, 15, 30}, 12);
    n->m_dead =
        ab_metrics_counter(reg, "agentbus_notify_dead_letters_total",
                           "deliveries dead-lettered (no attempt left, or permanent)", kind);
    n->m_failing = ab_metrics_gauge(reg, "agentbus_notify_endpoint_failing",
                                    "1 while an endpoint's circuit breaker is open",
                                    (const char *const[]){"endpoint", NULL});
    n->m_backlog =
        ab_metrics_gauge_fn(reg, "agentbus_notify_retry_backlog",
                            "retries waiting for their time (all notifiers)", gauge_backlog, n);
    n->m_in_flight = ab_metrics_gauge_fn(reg, "agentbus_notify_in_flight",
                                         "deliveries in this process's engine", gauge_in_flight, n);
}

struct notify_notifier *notify_notifier_new(struct ab_service *svc, char *errstr, size_t size)
{
    const struct ab_config *cfg = svc->cfg;
    struct notify_notifier *n = ab_xcalloc(1, sizeof(*n));
    size_t schedule_len;
    char err[512];

    n->svc = svc;
    n->sched_hint_ms = -1;
    n->max_in_flight = (size_t)ab_config_int(cfg, AB_OPT_NOTIFIER_MAX_IN_FLIGHT);
    pthread_mutex_init(&n->lock, NULL);
    pthread_cond_init(&n->wake, NULL);
    pthread_cond_init(&n->sched_wake, NULL);
    schedule_len = ab_outgoing_parse_schedule(ab_config_str(cfg, AB_OPT_NOTIFIER_RETRY_SCHEDULE_MS),
                                              &n->feishu_schedule);
    if (schedule_len == 0) {
        snprintf(errstr, size,
                 "notifier.retry_schedule_ms: expected 1 to 50 waits in ms, "
                 "comma-separated");
        goto fail;
    }
    long timeout = (long)ab_config_int(cfg, AB_OPT_NOTIFIER_REQUEST_TIMEOUT_MS);
    if (ab_outgoing_parse(ab_config_object(cfg, AB_OPT_WEBHOOKS), n->feishu_schedule, schedule_len,
                          timeout, &n->outgoing, err, sizeof(err)) != AB_OK) {
        snprintf(errstr, size, "%s", err);
        goto fail;
    }
    n->jobs = (struct notify_job_config){.outgoing = n->outgoing,
                                         .default_schedule_ms = n->feishu_schedule,
                                         .default_schedule_len = schedule_len,
                                         .default_timeout_ms = timeout};
    if (ab_netguard_new(ab_config_str(cfg, AB_OPT_NOTIFIER_ALLOW_NETWORKS), &n->guard, err,
                        sizeof(err)) != AB_OK) {
        snprintf(errstr, size, "notifier.allow_networks: %s", err);
        goto fail;
    }
    metrics(n);
    const struct notify_engine_options eo = {
        .guard = n->guard,
        .request_timeout_ms = timeout,
        .endpoint_concurrency = (int)ab_config_int(cfg, AB_OPT_NOTIFIER_ENDPOINT_CONCURRENCY),
        .breaker_threshold = (int)ab_config_int(cfg, AB_OPT_NOTIFIER_BREAKER_THRESHOLD),
        .breaker_cooldown_ms = ab_config_int(cfg, AB_OPT_NOTIFIER_BREAKER_COOLDOWN_MS),
        .feishu_user_rate = (int)ab_config_int(cfg, AB_OPT_NOTIFIER_FEISHU_USER_RATE),
        .feishu_app_rate = (int)ab_config_int(cfg, AB_OPT_NOTIFIER_FEISHU_APP_RATE),
        .feishu_retry = {.kind = AB_RETRY_SCHEDULE,
                         .schedule_ms = n->feishu_schedule,
                         .schedule_len = schedule_len,
                         .jitter = 0.1,
                         .retry_after_cap_ms = 3600 * 1000},
        /* Token fetches and abandoned requests come on top of the deliveries in hand. */
        .max_transfers = 2 * n->max_in_flight + 64,
        .finished = engine_finished,
        .ud = n,
    };
    /* A claimed retry's lease outlasts its attempt: a wait behind the deliveries in hand of
     * its endpoint (each up to the longest timeout), then the recording's retries. A
     * forward naming a longer timeout_ms than any configured one is not planned for: deep
     * in a queue of slow forwards, its lease may run out and another notifier make the
     * attempt too (the same webhook-id, a duplicate the receiver can drop). */
    long longest = timeout;
    for (size_t i = 0; i < n->outgoing->count; i++)
        if (n->outgoing->endpoints[i].timeout_ms > longest)
            longest = n->outgoing->endpoints[i].timeout_ms;
    n->lease_ms =
        5L * 60 * 1000 + (long)(n->max_in_flight / (size_t)eo.endpoint_concurrency + 1) * longest;
    n->engine = notify_engine_new(&eo, errstr, size);
    if (n->engine == NULL)
        goto fail;
    int threads = (int)ab_config_int(cfg, AB_OPT_NOTIFIER_DB_THREADS);
    n->threads = ab_xcalloc((size_t)threads, sizeof(*n->threads));
    for (; n->thread_count < threads; n->thread_count++) {
        struct db_thread_arg *arg = ab_xmalloc(sizeof(*arg));
        *arg = (struct db_thread_arg){n, n->thread_count == 0};
        if (pthread_create(&n->threads[n->thread_count], NULL, db_thread, arg) != 0) {
            free(arg);
            snprintf(errstr, size, "notifier: cannot start database thread %d", n->thread_count);
            notify_notifier_quiesce(n);
            goto fail;
        }
    }
    if (pthread_create(&n->scheduler, NULL, scheduler_main, n) != 0) {
        snprintf(errstr, size, "notifier: cannot start the scheduler thread");
        notify_notifier_quiesce(n);
        goto fail;
    }
    n->scheduler_started = true;
    ab_info("notifier: %zu outgoing endpoint(s) configured; Feishu retries after %zu waits",
            n->outgoing->count, schedule_len);
    return n;
fail:
    notify_notifier_free(n);
    return NULL;
}

void notify_notifier_quiesce(void *ud)
{
    struct notify_notifier *n = ud;
    pthread_mutex_lock(&n->lock);
    n->stopping = true;
    pthread_cond_broadcast(&n->sched_wake);
    pthread_mutex_unlock(&n->lock);
    if (n->scheduler_started) {
        pthread_join(n->scheduler, NULL);
        n->scheduler_started = false;
    }
    /* Nothing reaches the engine now; freeing it ends what it holds, abandoned, and each
     * goes to the database threads, which give scheduled rows their lease back. */
    notify_engine_free(n->engine);
    n->engine = NULL;
    pthread_mutex_lock(&n->lock);
    n->engine_gone = true;
    pthread_cond_broadcast(&n->wake);
    pthread_mutex_unlock(&n->lock);
    for (int i = 0; i < n->thread_count; i++)
        pthread_join(n->threads[i], NULL);
    n->thread_count = 0;
}

void notify_notifier_free(struct notify_notifier *n)
{
    if (n == NULL)
        return;
    if (n->engine != NULL || n->thread_count > 0 || n->scheduler_started)
        notify_notifier_quiesce(n);
    if (n->m_backlog)
        ab_metric_unbind_fn(n->m_backlog, n);
    if (n->m_in_flight)
        ab_metric_unbind_fn(n->m_in_flight, n);
    if (n->m_dead_held)
        ab_metric_unbind_fn(n->m_dead_held, n);
    free(n->threads);
    ab_outgoing_free(n->outgoing);
    ab_netguard_free(n->guard);
    free(n->feishu_schedule);
    notify_store_strings_free(n->disabled, n->disabled_count);
    pthread_mutex_destroy(&n->lock);
    pthread_cond_destroy(&n->wake);
    pthread_cond_destroy(&n->sched_wake);
    free(n);
}
