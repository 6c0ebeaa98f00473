/* The routes of agentbus.webhook.received, the events ingress publishes for incoming
 * webhooks (docs/events.md), by the hook's action:
 *
 *   run_agent, send_message to "agent" or "feishu": an agentbus.message.sent from the
 *       webhook (sender.type "webhook", the session's key) to the named agent or person,
 *       routed by message_route.c like any message;
 *   send_message to "chat": an agentbus.notify.feishu job for the Feishu group chat;
 *   forward: an agentbus.notify.webhook job with the hook's URL and the payload;
 *   custom: the event as received on the hook's own Kafka topic.
 *
 * Each produced event's id is derived from the webhook event's, so a redelivery produces
 * the same events again, which their consumers deduplicate. */
#ifndef DISPATCH_WEBHOOK_ROUTE_H
#define DISPATCH_WEBHOOK_ROUTE_H

#include "services/dispatcher/route.h"

#define DISPATCH_WEBHOOK_RECEIVED "agentbus.webhook.received"

/* Journals the event and routes it. @returns as dispatch_handle. */
enum ab_err dispatch_webhook_received(struct dispatch_ctx *ctx, const struct ab_consumed *msg,
                                      char *reason, size_t reason_size);

#endif
