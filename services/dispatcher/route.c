/* Event handling in the dispatcher. The journal write is the durable step: only once it
 * committed does the consumer store the offset, and ON CONFLICT makes a redelivery a
 * no-op, so every event lands exactly once however often Kafka hands it over. Messages
 * (agentbus.message.sent) go on to message_route.c, which journals them in the same
 * transaction as the route's own writes. */
#include "services/dispatcher/route.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/db.h"
#include "common/topics.h"
#include "common/log.h"
#include "common/metrics.h"
#include "services/dispatcher/fanout.h"
#include "services/dispatcher/message_route.h"
#include "services/dispatcher/webhook_route.h"

#define DB_WAIT_MS 5000

void dispatch_init(struct dispatch_ctx *ctx, struct ab_service *svc)
{
    ctx->svc = svc;
    ab_topic_name(ab_producer_topic_prefix(svc->producer), AB_TOPIC_EVENTS, ctx->events_topic,
                  sizeof(ctx->events_topic));
    ctx->m_events = ab_metrics_counter(ab_metrics_default(), "agentbus_dispatcher_events_total",
                                       "events handled by the dispatcher, by outcome",
                                       (const char *const[]){ "outcome", NULL });
    ctx->m_routed = ab_metrics_counter(ab_metrics_default(), "agentbus_dispatcher_routed_total",
                                       "agentbus.message.sent events routed, by route",
                                       (const char *const[]){ "route", NULL });
}

enum ab_err dispatch_db_outcome(enum ab_err err)
{
    return err == AB_OK || err == AB_ERR_INVALID ? err : AB_ERR_UNAVAILABLE;
}

enum ab_err dispatch_kafka_outcome(enum ab_err err)
{
    if (err == AB_OK || err == AB_ERR_INVALID || err == AB_ERR_TOO_LARGE)
        return err;
    return ab_err_is_retriable(err) ? err : AB_ERR_UNAVAILABLE;
}

enum ab_err dispatch_journal(PGconn *conn, const struct ab_consumed *msg, char *reason,
                             size_t size)
{
    const struct ab_event *ev = msg->event;
    char partition[16], offset[24];
    snprintf(partition, sizeof(partition), "%d", (int)msg->partition);
    snprintf(offset, sizeof(offset), "%lld", (long long)msg->offset);
    char *data = ev->data ? json_dumps(ev->data, JSON_COMPACT | JSON_ENCODE_ANY) : NULL;
    if (ev->data != NULL && data == NULL) {
        snprintf(reason, size, "event data cannot be serialised");
        return AB_ERR_NOMEM; /* only memory can make this fail: try again */
    }
    const char *const params[] = { ev->id,  ev->type,   ev->source, ev->subject, ev->time,
                                   data,    msg->topic, partition,  offset };
    enum ab_err err = ab_db_exec(conn,
                                 "INSERT INTO event_log (id, type, source, subject, event_time,"
                                 " data, topic, partition, kafka_offset)"
                                 " VALUES ($1, $2, $3, $4, $5::timestamptz, $6::jsonb, $7, $8,"
                                 " $9) ON CONFLICT (id) DO NOTHING",
                                 9, params, NULL, reason, size);
    free(data);
    return err;
}

enum ab_err dispatch_journal_only(struct dispatch_ctx *ctx, const struct ab_consumed *msg,
                                  char *reason, size_t size)
{
    PGconn *conn = NULL;
    enum ab_err err = ab_db_acquire(ctx->svc->db, DB_WAIT_MS, &conn, reason, size);
    if (err == AB_OK) {
        err = dispatch_journal(conn, msg, reason, size);
        ab_db_release(ctx->svc->db, conn);
    }
    return dispatch_db_outcome(err);
}

enum ab_err dispatch_handle(void *ud, const struct ab_consumed *msg, char *reason, size_t size)
{
    struct dispatch_ctx *ctx = ud;
    const struct ab_event *ev = msg->event;
    if (strcmp(msg->topic, ctx->events_topic) == 0)
        return dispatch_fanout(ctx, ctx->outgoing, msg, reason, size); /* not journaled */
    enum ab_err err = strcmp(ev->type, DISPATCH_MESSAGE_SENT) == 0
                          ? dispatch_message_sent(ctx, msg, reason, size)
                      : strcmp(ev->type, DISPATCH_WEBHOOK_RECEIVED) == 0
                          ? dispatch_webhook_received(ctx, msg, reason, size)
                          : dispatch_journal_only(ctx, msg, reason, size);
    ab_metric_inc(ctx->m_events, (const char *const[]){ err ? ab_err_name(err) : "journaled", NULL },
                  1);
    if (err == AB_OK)
        ab_debug("event %s (%s) journaled", ev->id, ev->type);
    return err;
}
