/* The dispatcher's handling of one event from agentbus.ingress: every event is journaled;
 * agentbus.message.sent is also routed by its target's type (message_route.c). */
#ifndef DISPATCH_ROUTE_H
#define DISPATCH_ROUTE_H

#include <libpq-fe.h>

#include "common/kafka_consumer.h"
#include "common/metrics.h"
#include "common/service.h"

struct ab_outgoing;

struct dispatch_ctx {
    struct ab_service *svc;
    const struct ab_outgoing *outgoing; /* outgoing webhooks; agentbus.events fans out to them */
    char events_topic[256];             /* agentbus.events with the prefix */
    struct ab_metric *m_events; /* by outcome: journaled, or the error's name */
    struct ab_metric *m_routed; /* message.sent routed, by route: inbox, llm, notify */
};

void dispatch_init(struct dispatch_ctx *ctx, struct ab_service *svc);

/* Journals the event (idempotent on its id) and routes it. A PostgreSQL or Kafka outage is
 * retriable; an event that can never be stored or routed is dead-lettered with a reason.
 * @thread the consumer's thread. */
enum ab_err dispatch_handle(void *ud, const struct ab_consumed *msg, char *reason,
                            size_t reason_size);

/* Writes the event into event_log on conn, inside whatever transaction the caller has open
 * (a route's writes and the journal entry commit together). ON CONFLICT makes a redelivery
 * a no-op. @returns AB_OK or ab_db_exec's error; AB_ERR_NOMEM if data cannot be serialised. */
enum ab_err dispatch_journal(PGconn *conn, const struct ab_consumed *msg, char *reason,
                             size_t reason_size);

/* The journal entry alone, on a connection of its own: for an event that is not a message,
 * all there is to do; for a webhook's, the last step once it is routed. */
enum ab_err dispatch_journal_only(struct dispatch_ctx *ctx, const struct ab_consumed *msg,
                                  char *reason, size_t reason_size);

/* Bad data is final (dead-lettered); anything else PostgreSQL reports (server gone, a lock
 * wait that timed out, a deploy without the table yet) may heal, so the event waits. */
enum ab_err dispatch_db_outcome(enum ab_err err);

/* What a failed produce means for the event being handled: Kafka refusing the produced
 * event as such (too large, invalid) is final, like bad data; anything else may heal and
 * is retried. */
enum ab_err dispatch_kafka_outcome(enum ab_err err);

#endif
