/* POST /webhook/<hook-id> (and handlers' paths) on the webhook listener: checks in the
 * order that keeps guessing cheap and useless (the source's failed authentications, the
 * hook, its address allowlist, its secret or signature), reads the body (JSON, or text
 * where the hook allows it), renders the hook's template, and answers 202 with the event
 * id only once agentbus.webhook.received is acknowledged by Kafka. A delivery id seen
 * before (Idempotency-Key, X-GitHub-Delivery, webhook-id) is answered with its first
 * event, across replicas, for the idempotency window. docs/webhooks.md. */
#ifndef INGRESS_WEBHOOK_RECEIVE_H
#define INGRESS_WEBHOOK_RECEIVE_H

#include "common/metrics.h"
#include "services/ingress/webhook_hooks.h"

struct ab_auth_limiter;

struct ingress_webhooks {
    struct ab_service *svc;
    struct ingress_hooks *hooks;
    struct ab_auth_limiter *limiter;
    struct ab_metric *m_requests; /* by outcome (and hook, for hooks that exist) */
};

/* Takes every request of the webhook listener (its fallback: hooks' paths change at run
 * time). */
enum ab_err ingress_webhooks_init(struct ingress_webhooks *wh, struct ab_service *svc,
                                  struct ingress_hooks *hooks, struct ab_http_server *listener);
void ingress_webhooks_cleanup(struct ingress_webhooks *wh);

#endif
