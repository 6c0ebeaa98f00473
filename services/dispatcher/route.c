/* Event handling in the dispatcher. The journal write is the durable step: only once it
 * committed does the consumer store the offset, and ON CONFLICT makes a redelivery a
 * no-op, so every event lands exactly once however often Kafka hands it over. */
#include "services/dispatcher/route.h"

#include <stdio.h>
#include <stdlib.h>

#include "common/db.h"
#include "common/log.h"
#include "common/metrics.h"

void dispatch_init(struct dispatch_ctx *ctx, struct ab_service *svc)
{
    ctx->svc = svc;
    ctx->m_events = ab_metrics_counter(ab_metrics_default(), "agentbus_dispatcher_events_total",
                                       "events handled by the dispatcher, by outcome",
                                       (const char *const[]){ "outcome", NULL });
}

enum ab_err dispatch_handle(void *ud, const struct ab_consumed *msg, char *reason, size_t size)
{
    struct dispatch_ctx *ctx = ud;
    const struct ab_event *ev = msg->event;
    PGconn *conn = NULL;
    char partition[16], offset[24];
    snprintf(partition, sizeof(partition), "%d", (int)msg->partition);
    snprintf(offset, sizeof(offset), "%lld", (long long)msg->offset);
    char *data = ev->data ? json_dumps(ev->data, JSON_COMPACT | JSON_ENCODE_ANY) : NULL;
    if (ev->data != NULL && data == NULL) {
        snprintf(reason, size, "event data cannot be serialised");
        return AB_ERR_UNAVAILABLE; /* only memory can make this fail: try again */
    }

    enum ab_err err = ab_db_acquire(ctx->svc->db, 5000, &conn, reason, size);
    if (err == AB_OK) {
        const char *const params[] = { ev->id, ev->type, ev->source, ev->subject, ev->time,
                                       data, msg->topic, partition, offset };
        err = ab_db_exec(conn,
                         "INSERT INTO event_log (id, type, source, subject, event_time, data,"
                         " topic, partition, kafka_offset)"
                         " VALUES ($1, $2, $3, $4, $5::timestamptz, $6::jsonb, $7, $8, $9)"
                         " ON CONFLICT (id) DO NOTHING",
                         9, params, NULL, reason, size);
        ab_db_release(ctx->svc->db, conn);
    }
    free(data);
    /* Only bad data is final; anything else (server gone, a deploy without the table yet)
     * may heal, so the event waits rather than going to the dead-letter topic. */
    if (err != AB_OK && err != AB_ERR_INVALID)
        err = AB_ERR_UNAVAILABLE;
    ab_metric_inc(ctx->m_events, (const char *const[]){ err ? ab_err_name(err) : "journaled", NULL }, 1);
    if (err == AB_OK)
        ab_debug("event %s (%s) journaled", ev->id, ev->type);
    return err;
}
