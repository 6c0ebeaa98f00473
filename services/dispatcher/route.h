/* The dispatcher's handling of one event from agentbus.ingress. */
#ifndef DISPATCH_ROUTE_H
#define DISPATCH_ROUTE_H

#include "common/kafka_consumer.h"
#include "common/metrics.h"
#include "common/service.h"

struct dispatch_ctx {
    struct ab_service *svc;
    struct ab_metric *m_events;
};

void dispatch_init(struct dispatch_ctx *ctx, struct ab_service *svc);

/* Journals the event (idempotent on its id) and routes it. A PostgreSQL outage is
 * retriable; an event that can never be stored is dead-lettered. */
enum ab_err dispatch_handle(void *ud, const struct ab_consumed *msg, char *reason,
                            size_t reason_size);

#endif
