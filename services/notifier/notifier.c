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
#include "services/notifier/delivery.h"
#include "services/notifier/engine.h"
#include "services/notifier/store.h"

#define SOURCE "/agentbus/notifier"
#define DB_ACQUIRE_TIMEOUT_MS 5000
#define RECORD_BATCH 256
#define RECORD_TRIES 6
#define DUE_SLACK_MS 20           /* a retry due this soon is run, not scheduled */
#define SCHEDULER_MAX_WAIT_MS 1000
#define DISABLED_REFRESH_MS 2000
#define CLAIM_BATCH 256

enum stage { STAGE_PREPARE, STAGE_SCHEDULE, STAGE_RECORD };

struct item {
    struct item *next;
    enum stage stage;
    struct notify_delivery *d;
    int64_t due_ms;   /* STAGE_SCHEDULE */
    char *retry_text; /* STAGE_SCHEDULE: the retry event as consumed */
};

struct notify_notifier {
    struct ab_service *svc;
    struct ab_outgoing *outgoing;
    struct ab_netguard *guard;
    int64_t *feishu_schedule;
    size_t max_in_flight;
    struct notify_engine *engine;

    pthread_mutex_t lock;
    pthread_cond_t wake;            /* database threads */
    struct item *prep_head, *prep_tail; /* prepare and schedule */
    struct item *rec_head, *rec_tail;   /* record */
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
    atomic_llong backlog;

    struct ab_metric *m_attempts, *m_delivery, *m_attempt_time, *m_dead, *m_failing;
    struct ab_metric *m_backlog, *m_in_flight;
};

/* ---- queues ---- */

static void push(struct item **head, struct item **tail, struct item *it)
{
    it->next = NULL;
    if (*tail)
        (*tail)->next = it;
    else
        *head = it;
    *tail = it;
}

static void enqueue(struct notify_notifier *n, struct item *it)
{
    pthread_mutex_lock(&n->lock);
    if (it->stage == STAGE_RECORD)
        push(&n->rec_head, &n->rec_tail, it);
    else
        push(&n->prep_head, &n->prep_tail, it);
    pthread_cond_signal(&n->wake);
    pthread_mutex_unlock(&n->lock);
}

static void to_record(struct notify_notifier *n, struct notify_delivery *d)
{
    struct item *it = ab_xcalloc(1, sizeof(*it));
    it->stage = STAGE_RECORD;
    it->d = d;
    enqueue(n, it);
}

/* The engine's end of an attempt (engine thread). */
static void engine_finished(void *ud, struct notify_delivery *d)
{
    to_record(ud, d);
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
    char name[AB_UUID_LEN + 64], id[AB_UUID_LEN + 1];
    struct ab_event *ev = ab_event_new(type, SOURCE, d->destination, data);
    snprintf(name, sizeof(name), "%s:%s:%d", d->id, suffix, d->replay);
    ab_uuid_derive(name, id);
    free(ev->id);
    ev->id = ab_xstrdup(id);
    ab_event_set_traceparent(ev, d->traceparent);
    return ev;
}

/* What every outcome event says about its delivery. */
static json_t *outcome_data(const struct notify_delivery *d)
{
    const json_t *data = json_object_get(d->job, "data");
    const json_t *source = json_object_get(data, "source_event");
    json_t *o = json_pack("{s:s, s:s, s:s, s:i, s:I, s:b}", "delivery_id", d->id, "kind",
                          notify_kind_name(d->kind), "destination", d->destination, "attempt",
                          d->attempt, "latency_ms", (json_int_t)d->latency_ms, "about_outcome",
                          d->about_outcome);
    json_object_set_new(o, "tenant_id", d->tenant_id[0] ? json_string(d->tenant_id) : json_null());
    json_object_set_new(o, "status", d->status > 0 ? json_integer(d->status) : json_null());
    if (d->kind == NOTIFY_WEBHOOK) {
        json_object_set_new(o, "endpoint_id", json_string(d->destination + strlen("webhook:")));
        json_object_set_new(o, "event", json_string(d->event_type));
        json_object_set(o, "source_event", (json_t *)source);
    } else {
        json_object_set_new(o, "member_id", json_string(d->member_id));
        json_object_set(o, "message_event_id",
                        json_object_get(json_object_get(data, "source_event"), "id") ?: json_null());
        json_object_set_new(o, "receive_id_type", json_string(d->receive_id_type));
        if (d->message_id[0])
            json_object_set_new(o, "message_id", json_string(d->message_id));
    }
    return o;
}

/* The Kafka side of a finished attempt, appended to evs (events owned by evs). */
static void outcome_events(struct notify_notifier *n, struct notify_delivery *d,
                           struct ab_outgoing_event *evs, size_t *count)
{
    (void)n;
#define ADD(t, k, e) (evs[(*count)++] = (struct ab_outgoing_event){ .topic = (t), .key = (k), .ev = (e) })
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
        ADD(AB_TOPIC_EVENTS, d->key, outcome_event(d, "agentbus.notify.failed", "failed", json_deep_copy(o)));
        json_object_set_new(o, "stage", json_string("notify"));
        json_object_set_new(o, "status", json_string("failed"));
        json_object_set_new(o, "http_status", d->status > 0 ? json_integer(d->status) : json_null());
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
        json_t *o = json_pack("{s:s, s:s, s:s}", "endpoint_id",
                              d->destination + strlen("webhook:"), "code", d->code, "message",
                              d->error);
        ADD(AB_TOPIC_EVENTS, d->key, outcome_event(d, type, type + strlen("agentbus.notify."), o));
    }
#undef ADD
}

static void observe(struct notify_notifier *n, const struct notify_delivery *d)
{
    const char *kind = notify_kind_name(d->kind);
    ab_metric_inc(n->m_attempts,
                  (const char *const[]){ kind, notify_outcome_name(d->outcome), NULL }, 1);
    if (d->outcome != NOTIFY_DEFERRED)
        ab_metric_observe(n->m_attempt_time, (const char *const[]){ kind, NULL },
                          (double)d->latency_ms / 1000.0);
    if (d->outcome == NOTIFY_DELIVERED)
        ab_metric_observe(n->m_delivery, (const char *const[]){ kind, NULL },
                          (double)(ab_wall_ms() - d->job_time_ms) / 1000.0);
    if (d->outcome == NOTIFY_FAILED)
        ab_metric_inc(n->m_dead, (const char *const[]){ kind, NULL }, 1);
    if (d->breaker_opened || d->breaker_closed)
        ab_metric_set(n->m_failing,
                      (const char *const[]){ d->destination + strlen("webhook:"), NULL },
                      d->breaker_opened ? 1 : 0);
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
        ab_warn("delivery %s to %s: dead-lettered after attempt %d (%s: %s)", d->id,
                d->destination, d->attempt, d->code, d->error);
        break;
    default:
        break;
    }
    if (d->breaker_opened)
        ab_warn("endpoint %s is failing: its breaker is open", d->destination);
    if (d->breaker_closed)
        ab_info("endpoint %s answers again: its breaker is closed", d->destination);
}

/* Records a batch of finished attempts: Kafka first (the next retry must exist before the
 * offset moves), then PostgreSQL, each retried in place a few times; then the consumer's
 * jobs end. A batch that cannot be recorded goes back to the consumer (redone: same ids). */
static void record_batch(struct notify_notifier *n, struct notify_delivery **ds, size_t count)
{
    struct ab_outgoing_event *evs = ab_xcalloc(count * 5 + 1, sizeof(*evs));
    size_t nev = 0;
    char reason[512] = "";
    enum ab_err err = AB_OK;
    PGconn *conn = NULL;

    for (size_t i = 0; i < count; i++)
        outcome_events(n, ds[i], evs, &nev);
    for (int t = 0; t < RECORD_TRIES; t++) {
        if (t > 0)
            usleep((useconds_t)(100000u << (t - 1)));
        err = nev ? ab_producer_send_events(n->svc->producer, evs, nev, reason, sizeof(reason))
                  : AB_OK;
        if (err == AB_OK || !ab_err_is_retriable(err))
            break;
        ab_warn("notifier: cannot publish %zu outcome events (%s), try %d", nev, reason, t + 1);
    }
    for (int t = 0; err == AB_OK && t < RECORD_TRIES; t++) {
        if (t > 0)
            usleep((useconds_t)(100000u << (t - 1)));
        err = ab_db_acquire(n->svc->db, DB_ACQUIRE_TIMEOUT_MS, &conn, reason, sizeof(reason));
        if (err == AB_OK)
            err = notify_store_record(conn, ds, count, reason, sizeof(reason));
        ab_db_release(n->svc->db, conn);
        conn = NULL;
        if (err == AB_OK || !ab_err_is_retriable(err))
            break;
        ab_warn("notifier: cannot record %zu attempts (%s), try %d", count, reason, t + 1);
    }
    if (err != AB_OK)
        ab_error("notifier: %zu attempts not recorded: %s", count, reason);
    for (size_t i = 0; i < nev; i++)
        ab_event_free((struct ab_event *)evs[i].ev);
    free(evs);
    for (size_t i = 0; i < count; i++) {
        struct notify_delivery *d = ds[i];
        if (err == AB_OK)
            observe(n, d);
        if (d->outcome == NOTIFY_ABANDONED)
            drop(n, d, AB_ERR_SHUTDOWN, "notifier: stopping; the delivery is redone later");
        else
            drop(n, d, err == AB_OK ? AB_OK : AB_ERR_UNAVAILABLE, reason);
    }
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
    if (!stopping)
        notify_engine_submit(n->engine, d); /* under the lock: the engine still exists */
    pthread_mutex_unlock(&n->lock);
    if (stopping)
        drop(n, d, AB_ERR_SHUTDOWN, "notifier: stopping");
}

static void prepare(struct notify_notifier *n, struct notify_delivery *d)
{
    char reason[512] = "";
    PGconn *conn = NULL;
    d->started_ms = ab_monotonic_ms();
    if (d->kind == NOTIFY_WEBHOOK) {
        if (endpoint_disabled(n, d->endpoint->id)) {
            d->outcome = NOTIFY_FAILED;
            snprintf(d->code, sizeof(d->code), "endpoint_disabled");
            snprintf(d->error, sizeof(d->error), "endpoint %s is disabled", d->endpoint->id);
            to_record(n, d);
        } else {
            submit(n, d);
        }
        return;
    }
    enum ab_err err = ab_db_acquire(n->svc->db, DB_ACQUIRE_TIMEOUT_MS, &conn, reason,
                                    sizeof(reason));
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

static void schedule(struct notify_notifier *n, struct item *it)
{
    char reason[512] = "";
    PGconn *conn = NULL;
    enum ab_err err = ab_db_acquire(n->svc->db, DB_ACQUIRE_TIMEOUT_MS, &conn, reason,
                                    sizeof(reason));
    if (err == AB_OK)
        err = notify_store_schedule(conn, ab_consumer_job_msg(it->d->cj)->event->id, it->due_ms,
                                    it->retry_text, reason, sizeof(reason));
    ab_db_release(n->svc->db, conn);
    if (err == AB_OK) {
        pthread_mutex_lock(&n->lock);
        if (n->sched_hint_ms < 0 || it->due_ms < n->sched_hint_ms)
            n->sched_hint_ms = it->due_ms;
        pthread_cond_signal(&n->sched_wake);
        pthread_mutex_unlock(&n->lock);
    }
    drop(n, it->d, err == AB_OK ? AB_OK : (ab_err_is_retriable(err) ? err : AB_ERR_UNAVAILABLE),
         reason);
}

static void *db_thread(void *arg)
{
    struct notify_notifier *n = arg;
    struct notify_delivery *batch[RECORD_BATCH];
    for (;;) {
        pthread_mutex_lock(&n->lock);
        while (n->rec_head == NULL && n->prep_head == NULL && !n->engine_gone)
            pthread_cond_wait(&n->wake, &n->lock);
        size_t count = 0;
        struct item *prep = NULL;
        /* Finished attempts first: they free capacity and end jobs. */
        while (n->rec_head != NULL && count < RECORD_BATCH) {
            struct item *it = n->rec_head;
            n->rec_head = it->next;
            batch[count++] = it->d;
            free(it);
        }
        if (n->rec_head == NULL)
            n->rec_tail = NULL;
        if (count == 0 && n->prep_head != NULL) {
            prep = n->prep_head;
            n->prep_head = prep->next;
            if (n->prep_head == NULL)
                n->prep_tail = NULL;
        }
        bool done = count == 0 && prep == NULL; /* the engine is gone, nothing is left */
        pthread_mutex_unlock(&n->lock);
        if (done)
            return NULL;
        if (count > 0)
            record_batch(n, batch, count);
        if (prep != NULL) {
            if (prep->stage == STAGE_SCHEDULE)
                schedule(n, prep);
            else
                prepare(n, prep->d);
            free(prep->retry_text);
            free(prep);
        }
    }
}

/* ---- the consumer's side ---- */

void notify_notifier_start_job(void *ud, struct ab_consumer_job *cj)
{
    struct notify_notifier *n = ud;
    const struct ab_consumed *msg = ab_consumer_job_msg(cj);
    struct notify_delivery *d = ab_xcalloc(1, sizeof(*d));
    struct item *it = ab_xcalloc(1, sizeof(*it));
    char reason[512] = "", key[256];
    enum ab_err err;

    d->cj = cj;
    it->d = d;
    it->stage = STAGE_PREPARE;
    snprintf(key, sizeof(key), "%.*s", (int)(msg->key_len < 255 ? msg->key_len : 255),
             msg->key ? (const char *)msg->key : "");
    if (strcmp(msg->event->type, NOTIFY_TYPE_RETRY) == 0) {
        err = notify_delivery_from_retry(d, msg->event, n->outgoing, &it->due_ms, reason,
                                         sizeof(reason));
        if (err == AB_OK && it->due_ms > ab_wall_ms() + DUE_SLACK_MS) {
            it->stage = STAGE_SCHEDULE;
            it->retry_text = ab_xmalloc(msg->value_len + 1);
            memcpy(it->retry_text, msg->value, msg->value_len);
            it->retry_text[msg->value_len] = '\0';
        }
    } else {
        err = notify_delivery_from_job(d, msg->event, key, n->outgoing, reason, sizeof(reason));
    }
    if (err == AB_ERR_NOT_FOUND) {
        /* A webhook for an endpoint that is no longer configured: a dead letter with its
         * reason, replayable once the endpoint is back. */
        d->outcome = NOTIFY_FAILED;
        snprintf(d->code, sizeof(d->code), "endpoint_unknown");
        snprintf(d->error, sizeof(d->error), "%s", reason);
        it->stage = STAGE_RECORD;
    } else if (err != AB_OK) {
        free(it);
        notify_delivery_free(d);
        ab_consumer_job_done(cj, err == AB_ERR_NOMEM ? err : AB_ERR_INVALID, reason);
        return;
    }
    enqueue(n, it);
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

/* Claims due retries and hands them to the database threads as deliveries. */
static int64_t claim(struct notify_notifier *n, PGconn *conn)
{
    char **ids = NULL, **events = NULL, reason[512];
    size_t count = 0;
    int64_t next = -1, backlog = 0;
    size_t in_hand = atomic_load(&n->scheduled_in_hand) + notify_engine_pending(n->engine);
    int limit = in_hand >= n->max_in_flight ? 0
                : n->max_in_flight - in_hand < CLAIM_BATCH ? (int)(n->max_in_flight - in_hand)
                                                           : CLAIM_BATCH;
    /* A lease outlasts any attempt: the longest request, the recording's retries. */
    long lease_ms = 5L * 60 * 1000;
    if (notify_store_claim(conn, limit, lease_ms, &ids, &events, &count, &next, &backlog, reason,
                           sizeof(reason)) != AB_OK) {
        ab_warn("notifier: cannot claim due retries: %s", reason);
        return ab_wall_ms() + SCHEDULER_MAX_WAIT_MS;
    }
    atomic_store(&n->backlog, backlog + (long long)count);
    for (size_t i = 0; i < count; i++) {
        struct ab_event *ev = NULL;
        struct notify_delivery *d = ab_xcalloc(1, sizeof(*d));
        int64_t due;
        enum ab_err err = ab_event_parse(events[i], strlen(events[i]), &ev, reason, sizeof(reason));
        if (err == AB_OK)
            err = notify_delivery_from_retry(d, ev, n->outgoing, &due, reason, sizeof(reason));
        ab_event_free(ev);
        snprintf(d->scheduled_id, sizeof(d->scheduled_id), "%s", ids[i]);
        atomic_fetch_add(&n->scheduled_in_hand, 1);
        if (err == AB_ERR_NOT_FOUND) {
            d->outcome = NOTIFY_FAILED;
            snprintf(d->code, sizeof(d->code), "endpoint_unknown");
            snprintf(d->error, sizeof(d->error), "%s", reason);
            to_record(n, d);
        } else if (err != AB_OK) {
            /* Cannot be a delivery: recorded nowhere else, so say it loudly and drop it. */
            ab_error("notifier: scheduled retry %s is unreadable (%s): removed", ids[i], reason);
            const char *const p[] = { ids[i] };
            ab_db_exec(conn, "DELETE FROM notify_scheduled WHERE id = $1", 1, p, NULL, reason,
                       sizeof(reason));
            drop(n, d, AB_OK, NULL);
        } else {
            struct item *it = ab_xcalloc(1, sizeof(*it));
            it->stage = STAGE_PREPARE;
            it->d = d;
            enqueue(n, it);
        }
    }
    notify_store_strings_free(ids, count);
    notify_store_strings_free(events, count);
    if (count == (size_t)CLAIM_BATCH || (limit > 0 && next >= 0 && next <= ab_wall_ms()))
        return ab_wall_ms(); /* more are due now */
    return next;
}

static void *scheduler_main(void *arg)
{
    struct notify_notifier *n = arg;
    PGconn *conn = NULL;
    int64_t next_refresh = 0, next_due = 0;
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
        if (ab_db_acquire(n->svc->db, DB_ACQUIRE_TIMEOUT_MS, &conn, reason, sizeof(reason)) !=
            AB_OK) {
            next_due = ab_wall_ms() + SCHEDULER_MAX_WAIT_MS;
            continue;
        }
        if (ab_wall_ms() >= next_refresh) {
            refresh_disabled(n, conn);
            next_refresh = ab_wall_ms() + DISABLED_REFRESH_MS;
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
    struct notify_notifier *n = ud;
    return n->engine ? (double)notify_engine_pending(n->engine) : 0;
}

static void metrics(struct notify_notifier *n)
{
    struct ab_metrics *reg = ab_metrics_default();
    const char *const kind[] = { "kind", NULL };
    n->m_attempts = ab_metrics_counter(reg, "agentbus_notify_attempts_total",
                                       "delivery attempts, by destination kind and outcome",
                                       (const char *const[]){ "kind", "outcome", NULL });
    n->m_delivery = ab_metrics_histogram(
        reg, "agentbus_notify_delivery_seconds",
        "from the delivery's event to its successful attempt (retries included)", kind,
        (const double[]){ .005, .01, .025, .05, .1, .25, .5, 1, 5, 30, 300, 3600, 36000 }, 13);
    n->m_attempt_time = ab_metrics_histogram(
        reg, "agentbus_notify_attempt_seconds", "one attempt's requests, first to last byte",
        kind, (const double[]){ .001, .005, .01, .025, .05, .1, .25, .5, 1, 5, 15, 30 }, 12);
    n->m_dead = ab_metrics_counter(reg, "agentbus_notify_dead_letters_total",
                                   "deliveries dead-lettered (no attempt left, or permanent)",
                                   kind);
    n->m_failing = ab_metrics_gauge(reg, "agentbus_notify_endpoint_failing",
                                    "1 while an endpoint's circuit breaker is open",
                                    (const char *const[]){ "endpoint", NULL });
    n->m_backlog = ab_metrics_gauge_fn(reg, "agentbus_notify_retry_backlog",
                                       "retries waiting for their time (all notifiers)",
                                       gauge_backlog, n);
    n->m_in_flight = ab_metrics_gauge_fn(reg, "agentbus_notify_in_flight",
                                         "deliveries in this process's engine", gauge_in_flight,
                                         n);
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
        snprintf(errstr, size, "notifier.retry_schedule_ms: expected 1 to 50 waits in ms, "
                               "comma-separated");
        goto fail;
    }
    long timeout = (long)ab_config_int(cfg, AB_OPT_NOTIFIER_REQUEST_TIMEOUT_MS);
    if (ab_outgoing_parse(ab_config_object(cfg, AB_OPT_WEBHOOKS), n->feishu_schedule,
                          schedule_len, timeout, &n->outgoing, err, sizeof(err)) != AB_OK) {
        snprintf(errstr, size, "%s", err);
        goto fail;
    }
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
        .feishu_retry = { .kind = AB_RETRY_SCHEDULE,
                          .schedule_ms = n->feishu_schedule,
                          .schedule_len = schedule_len,
                          .jitter = 0.1,
                          .retry_after_cap_ms = 3600 * 1000 },
        /* Token fetches and abandoned requests come on top of the deliveries in hand. */
        .max_transfers = 2 * n->max_in_flight + 64,
        .finished = engine_finished,
        .ud = n,
    };
    n->engine = notify_engine_new(&eo, errstr, size);
    if (n->engine == NULL)
        goto fail;
    int threads = (int)ab_config_int(cfg, AB_OPT_NOTIFIER_DB_THREADS);
    n->threads = ab_xcalloc((size_t)threads, sizeof(*n->threads));
    for (; n->thread_count < threads; n->thread_count++)
        if (pthread_create(&n->threads[n->thread_count], NULL, db_thread, n) != 0) {
            snprintf(errstr, size, "notifier: cannot start database thread %d", n->thread_count);
            notify_notifier_quiesce(n);
            goto fail;
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
