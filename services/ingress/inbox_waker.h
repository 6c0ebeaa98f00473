/* Wakes the gateway's long polls when a message arrives: one thread per process LISTENs on
 * AB_DB_CHANNEL_GATEWAY_INBOX, on a PostgreSQL connection of its own, and wakes the polls
 * waiting for the agent a notification names. A waiting poll holds no database connection,
 * only a registry entry (its own condition variable). */
#ifndef INGRESS_INBOX_WAKER_H
#define INGRESS_INBOX_WAKER_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "common/service.h"

/* The application_name of the listener's connection in pg_stat_activity. */
#define INGRESS_WAKER_APPLICATION_NAME "agentbus-ingress-listener"

struct ingress_waker;

/* One long poll's entry in the registry. It lives on the poll handler's stack, from
 * ingress_waker_register to ingress_waker_unregister; its fields are the waker's (guarded
 * by the waker's lock). */
struct ingress_waiter {
    char agent_id[37];
    bool woken;           /* a wake-up not yet consumed by ingress_waker_wait */
    pthread_cond_t cond;  /* on CLOCK_MONOTONIC */
    struct ingress_waiter *prev, *next; /* in the agent's bucket */
};

/* What ended an ingress_waker_wait. */
enum ingress_wake {
    INGRESS_WAKE_TIMEOUT = 0, /* `until` passed */
    INGRESS_WAKE_WOKEN,       /* a message for the agent, or the listener reconnected */
    INGRESS_WAKE_STOPPED,     /* the waker is stopping: answer now */
};

/* @ownership free with ingress_waker_free. svc (its pool and its configuration) must
 * outlive the waker. */
struct ingress_waker *ingress_waker_new(struct ab_service *svc);

/* Starts the listener thread. It connects (and reconnects, with backoff) by itself, so this
 * succeeds while PostgreSQL is down; meanwhile polls rely on their timed re-checks.
 * @returns 0, or 1 (the process exit code) when no thread could be started, logged. */
int ingress_waker_start(struct ingress_waker *waker);

/* Wakes every waiting poll for good (a wait from now on returns INGRESS_WAKE_STOPPED at
 * once) and joins the listener thread, which closes its connection. Call before the API
 * listener is stopped, so that long polls in flight answer at once; idempotent. */
void ingress_waker_stop(struct ingress_waker *waker);

/* Stops the waker if needed and frees it; no poll may still use it. NULL is a no-op. */
void ingress_waker_free(struct ingress_waker *waker);

/* Registers a poll of agent_id. Register before the first look at the inbox: a
 * notification that arrives between a look and the next wait is then kept in the entry
 * and ends that wait at once, rather than being lost. @thread safe. */
void ingress_waker_register(struct ingress_waker *waker, struct ingress_waiter *waiter,
                            const char *agent_id);
void ingress_waker_unregister(struct ingress_waker *waker, struct ingress_waiter *waiter);

/* Waits until the waiter is woken (consuming the wake-up), the waker stops, or the
 * monotonic clock reaches until_ms (ab_monotonic_ms). @thread safe. */
enum ingress_wake ingress_waker_wait(struct ingress_waker *waker, struct ingress_waiter *waiter,
                                     int64_t until_ms);

#endif
