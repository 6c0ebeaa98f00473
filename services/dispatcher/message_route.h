/* agentbus.message.sent in the dispatcher: checks the message, then routes it by its
 * target's type (docs/events.md): an OpenClaw agent's inbox, an LLM request for a native
 * agent, a Feishu notification for a member; then announces it as
 * agentbus.message.received. */
#ifndef DISPATCH_MESSAGE_ROUTE_H
#define DISPATCH_MESSAGE_ROUTE_H

#include <stddef.h>

#include "common/kafka_consumer.h"
#include "services/dispatcher/route.h"

#define DISPATCH_MESSAGE_SENT "agentbus.message.sent"

/* Handles one agentbus.message.sent. Every step is idempotent on the event id: the
 * PostgreSQL writes by ON CONFLICT, the produced events by ids derived from it, so a
 * redelivery after a crash anywhere repeats nothing that downstream would count twice.
 * @returns AB_OK once the journal, the route's writes and its events are durable;
 * AB_ERR_INVALID (dead-letter) for a message that can never be routed, `reason` saying why;
 * a retriable error while PostgreSQL or Kafka cannot be reached. */
enum ab_err dispatch_message_sent(struct dispatch_ctx *ctx, const struct ab_consumed *msg,
                                  char *reason, size_t reason_size);

#endif
