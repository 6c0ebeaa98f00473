/* The long-poll waker. The dispatcher notifies AB_DB_CHANNEL_GATEWAY_INBOX with the agent
 * id in the transaction that adds an inbox row; PostgreSQL delivers the notification at
 * commit, so a poll woken by it finds the row. One listener thread per process holds the
 * only extra connection (its own, not the pool's, since it is never given back): it polls
 * the socket with a short timeout so that it notices a stop, reads the notifications and
 * wakes the registered polls of the agent each one names.
 *
 * NOTIFY is a fast path, never the only one: notifications sent while the listener was
 * disconnected are lost, so every (re)connection wakes every waiting poll to look again,
 * and the polls themselves still look on a timer (gateway_inbox.c). The registry is a small
 * hash table of waiters keyed by agent id under one mutex; each waiter has its own
 * condition variable, so a notification wakes only the polls of its agent. */
#include "services/ingress/inbox_waker.h"

#include <errno.h>
#include <poll.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/db.h"
#include "common/log.h"
#include "common/metrics.h"
#include "common/util.h"

#define BUCKETS 256          /* registry hash buckets (waiters are few: one per open poll) */
#define SOCKET_TICK_MS 250   /* the listener notices a stop within this */
#define BACKOFF_MIN_MS 500   /* reconnect backoff, doubling with jitter ... */
#define BACKOFF_MAX_MS 10000 /* ... up to this; a connection that lived this long resets it */

struct ingress_waker {
    struct ab_service *svc;
    pthread_mutex_t lock;   /* guards the buckets and every registered waiter */
    pthread_cond_t stopped; /* on CLOCK_MONOTONIC: ends the listener's backoff sleep */
    atomic_bool stopping;   /* written under lock; read without it by the listener */
    struct ingress_waiter *buckets[BUCKETS];
    pthread_t thread;
    bool started, joined; /* touched only by the thread that starts and stops the waker */
    struct ab_metric *m_waiting, *m_notifications, *m_connected, *m_reconnects;
};

static unsigned bucket_of(const char *agent_id)
{
    uint32_t h = 2166136261u; /* FNV-1a */
    for (const unsigned char *p = (const unsigned char *)agent_id; *p; p++)
        h = (h ^ *p) * 16777619u;
    return h % BUCKETS;
}

static struct timespec monotonic_timespec(int64_t ms)
{
    struct timespec ts = { .tv_sec = (time_t)(ms / 1000), .tv_nsec = (long)(ms % 1000) * 1000000L };
    return ts;
}

static void cond_init_monotonic(pthread_cond_t *cond)
{
    pthread_condattr_t attr;
    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    pthread_cond_init(cond, &attr);
    pthread_condattr_destroy(&attr);
}

struct ingress_waker *ingress_waker_new(struct ab_service *svc)
{
    struct ingress_waker *w = ab_xcalloc(1, sizeof(*w));
    struct ab_metrics *reg = ab_metrics_default();
    w->svc = svc;
    pthread_mutex_init(&w->lock, NULL);
    cond_init_monotonic(&w->stopped);
    atomic_init(&w->stopping, false);
    w->m_waiting = ab_metrics_gauge(reg, "agentbus_gateway_polls_waiting",
                                    "long polls waiting for a message", NULL);
    w->m_notifications =
        ab_metrics_counter(reg, "agentbus_gateway_inbox_notifications_total",
                           "inbox notifications received from PostgreSQL (each wakes the "
                           "long polls of one agent)",
                           NULL);
    w->m_connected = ab_metrics_gauge(reg, "agentbus_gateway_inbox_listener_connected",
                                      "1 while the inbox listener LISTENs on PostgreSQL", NULL);
    w->m_reconnects =
        ab_metrics_counter(reg, "agentbus_gateway_inbox_listener_reconnects_total",
                           "inbox listener connections lost (each is followed by a re-check "
                           "of every waiting long poll once it is back)",
                           NULL);
    ab_metric_set(w->m_waiting, NULL, 0);
    ab_metric_set(w->m_connected, NULL, 0);
    ab_metric_inc(w->m_notifications, NULL, 0);
    ab_metric_inc(w->m_reconnects, NULL, 0);
    return w;
}

/* Wakes the waiters in one bucket: those of agent_id, or all when it is NULL. Under lock. */
static void wake_bucket(struct ingress_waiter *x, const char *agent_id)
{
    for (; x != NULL; x = x->next) {
        if (agent_id == NULL || strcmp(x->agent_id, agent_id) == 0) {
            x->woken = true;
            pthread_cond_signal(&x->cond);
        }
    }
}

/* Wakes the polls of agent_id, or every poll when agent_id is NULL. */
static void wake(struct ingress_waker *w, const char *agent_id)
{
    pthread_mutex_lock(&w->lock);
    if (agent_id != NULL)
        wake_bucket(w->buckets[bucket_of(agent_id)], agent_id);
    else
        for (unsigned b = 0; b < BUCKETS; b++)
            wake_bucket(w->buckets[b], NULL);
    pthread_mutex_unlock(&w->lock);
}

/* Sleeps ms unless the waker stops first. */
static void sleep_unless_stopping(struct ingress_waker *w, int64_t ms)
{
    struct timespec until = monotonic_timespec(ab_monotonic_ms() + ms);
    pthread_mutex_lock(&w->lock);
    if (!atomic_load(&w->stopping))
        pthread_cond_timedwait(&w->stopped, &w->lock, &until);
    pthread_mutex_unlock(&w->lock);
}

static void copy_conn_error(PGconn *conn, char *errstr, size_t size)
{
    snprintf(errstr, size, "%s", PQerrorMessage(conn));
    errstr[strcspn(errstr, "\n")] = '\0';
    if (errstr[0] == '\0')
        snprintf(errstr, size, "the server closed the connection");
}

/* Between backoff/2 and backoff, so that replicas cut off together do not return together. */
static int64_t jittered(int64_t backoff)
{
    return backoff / 2 + (int64_t)(ab_random_unit() * (double)(backoff / 2));
}

/* Reads notifications until the connection fails (errstr says why) or the waker stops. */
static void listen_until_lost(struct ingress_waker *w, PGconn *conn, char *errstr, size_t size)
{
    while (!atomic_load(&w->stopping)) {
        struct pollfd pfd = { .fd = PQsocket(conn), .events = POLLIN };
        int n = poll(&pfd, 1, SOCKET_TICK_MS);
        if (n < 0 && errno != EINTR) {
            snprintf(errstr, size, "poll on the listener socket failed (errno %d)", errno);
            return;
        }
        if (n > 0 && !PQconsumeInput(conn)) {
            copy_conn_error(conn, errstr, size);
            return;
        }
        PGnotify *note;
        while ((note = PQnotifies(conn)) != NULL) {
            if (strcmp(note->relname, AB_DB_CHANNEL_GATEWAY_INBOX) == 0) {
                ab_metric_inc(w->m_notifications, NULL, 1);
                wake(w, note->extra);
            }
            PQfreemem(note);
        }
        if (PQstatus(conn) != CONNECTION_OK) {
            copy_conn_error(conn, errstr, size);
            return;
        }
    }
}

/* The listener thread: connect, LISTEN, read until the connection is lost, reconnect. An
 * outage is logged once when it begins and once when it ends, not at every attempt. */
static void *listener_main(void *arg)
{
    struct ingress_waker *w = arg;
    int64_t backoff = BACKOFF_MIN_MS, outage_since = 0; /* 0: not in an outage */
    char errstr[512];
    while (!atomic_load(&w->stopping)) {
        PGconn *conn = NULL;
        enum ab_err err = ab_db_connect(w->svc->db, INGRESS_WAKER_APPLICATION_NAME, &conn, errstr,
                                        sizeof(errstr));
        if (err == AB_OK)
            err = ab_db_exec(conn, "LISTEN " AB_DB_CHANNEL_GATEWAY_INBOX, 0, NULL, NULL, errstr,
                             sizeof(errstr));
        if (err != AB_OK) {
            PQfinish(conn);
            if (outage_since == 0) {
                outage_since = ab_monotonic_ms();
                ab_warn("inbox listener cannot LISTEN: %s; long polls fall back to timed "
                        "re-checks until it can",
                        errstr);
            }
            sleep_unless_stopping(w, jittered(backoff));
            backoff = backoff * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : backoff * 2;
            continue;
        }
        int64_t connected_at = ab_monotonic_ms();
        if (outage_since != 0)
            ab_info("inbox listener LISTENs again after %lld ms",
                    (long long)(connected_at - outage_since));
        outage_since = 0;
        ab_metric_set(w->m_connected, NULL, 1);
        /* Whatever was notified while nobody listened is lost: every poll looks again. */
        wake(w, NULL);
        listen_until_lost(w, conn, errstr, sizeof(errstr));
        PQfinish(conn);
        ab_metric_set(w->m_connected, NULL, 0);
        if (atomic_load(&w->stopping))
            break;
        outage_since = ab_monotonic_ms();
        ab_metric_inc(w->m_reconnects, NULL, 1);
        ab_warn("inbox listener lost its PostgreSQL connection: %s; reconnecting", errstr);
        /* A connection that keeps failing soon after it opened is retried with backoff; one
         * that lived long is retried at once. */
        if (outage_since - connected_at >= BACKOFF_MAX_MS) {
            backoff = BACKOFF_MIN_MS;
        } else {
            sleep_unless_stopping(w, jittered(backoff));
            backoff = backoff * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : backoff * 2;
        }
    }
    return NULL;
}

int ingress_waker_start(struct ingress_waker *w)
{
    int rc = pthread_create(&w->thread, NULL, listener_main, w);
    if (rc != 0) {
        ab_error("cannot start the inbox listener thread (error %d)", rc);
        return 1;
    }
    w->started = true;
    return 0;
}

void ingress_waker_stop(struct ingress_waker *w)
{
    pthread_mutex_lock(&w->lock);
    atomic_store(&w->stopping, true);
    pthread_cond_broadcast(&w->stopped);
    for (unsigned b = 0; b < BUCKETS; b++)
        wake_bucket(w->buckets[b], NULL);
    pthread_mutex_unlock(&w->lock);
    /* At most SOCKET_TICK_MS, or database.connect_timeout_s when a connect is under way. */
    if (w->started && !w->joined) {
        pthread_join(w->thread, NULL);
        w->joined = true;
    }
}

void ingress_waker_free(struct ingress_waker *w)
{
    if (w == NULL)
        return;
    ingress_waker_stop(w);
    pthread_cond_destroy(&w->stopped);
    pthread_mutex_destroy(&w->lock);
    free(w);
}

void ingress_waker_register(struct ingress_waker *w, struct ingress_waiter *waiter,
                            const char *agent_id)
{
    memset(waiter, 0, sizeof(*waiter));
    snprintf(waiter->agent_id, sizeof(waiter->agent_id), "%s", agent_id);
    cond_init_monotonic(&waiter->cond);
    unsigned b = bucket_of(waiter->agent_id);
    pthread_mutex_lock(&w->lock);
    waiter->next = w->buckets[b];
    if (waiter->next != NULL)
        waiter->next->prev = waiter;
    w->buckets[b] = waiter;
    pthread_mutex_unlock(&w->lock);
    ab_metric_add(w->m_waiting, NULL, 1);
}

void ingress_waker_unregister(struct ingress_waker *w, struct ingress_waiter *waiter)
{
    pthread_mutex_lock(&w->lock);
    if (waiter->prev != NULL)
        waiter->prev->next = waiter->next;
    else
        w->buckets[bucket_of(waiter->agent_id)] = waiter->next;
    if (waiter->next != NULL)
        waiter->next->prev = waiter->prev;
    pthread_mutex_unlock(&w->lock);
    pthread_cond_destroy(&waiter->cond);
    ab_metric_add(w->m_waiting, NULL, -1);
}

enum ingress_wake ingress_waker_wait(struct ingress_waker *w, struct ingress_waiter *waiter,
                                     int64_t until_ms)
{
    struct timespec until = monotonic_timespec(until_ms);
    pthread_mutex_lock(&w->lock);
    while (!waiter->woken && !atomic_load(&w->stopping) && ab_monotonic_ms() < until_ms)
        pthread_cond_timedwait(&waiter->cond, &w->lock, &until);
    enum ingress_wake why = atomic_load(&w->stopping) ? INGRESS_WAKE_STOPPED
                            : waiter->woken           ? INGRESS_WAKE_WOKEN
                                                      : INGRESS_WAKE_TIMEOUT;
    waiter->woken = false;
    pthread_mutex_unlock(&w->lock);
    return why;
}
