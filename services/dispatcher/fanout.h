/* Outgoing webhooks' fan-out: the dispatcher reads agentbus.events and, for each event an
 * endpoint subscribes to (webhooks.outgoing[].events), publishes one delivery job
 * (agentbus.notify.webhook) on agentbus.notify, keyed by the endpoint. The job's id is
 * derived from the event's and the endpoint's, so a redelivered event is the same job, and
 * the same webhook-id at the receiver. */
#ifndef DISPATCH_FANOUT_H
#define DISPATCH_FANOUT_H

#include "common/kafka_consumer.h"
#include "common/outgoing.h"
#include "services/dispatcher/route.h"

/* Publishes the jobs of one event of agentbus.events (none for an event no endpoint wants,
 * and none for the outcome of a delivery that was itself about an outcome: that chain
 * ends there). @returns AB_OK, or a retriable Kafka error. */
enum ab_err dispatch_fanout(struct dispatch_ctx *ctx, const struct ab_outgoing *outgoing,
                            const struct ab_consumed *msg, char *reason, size_t reason_size);

/* The payload an endpoint receives for ev, in the seed's outgoing shape:
 * {"type", "id", "timestamp", "session", "message": {from, to, text, timestamp} for a
 * message, "data"}. @ownership the caller decrefs. */
json_t *dispatch_fanout_payload(const struct ab_event *ev, enum ab_hook_event kind);

#endif
