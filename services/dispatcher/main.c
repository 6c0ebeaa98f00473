/* agentbus-dispatcher: wiring only. Consumes agentbus.ingress, journals every event in
 * PostgreSQL (route.c) and routes agentbus.message.sent by its target (message_route.c). */
#include "common/log.h"
#include "common/outgoing.h"
#include "common/service.h"
#include "services/dispatcher/route.h"

int main(int argc, char **argv)
{
    struct ab_service svc;
    int rc = ab_service_init(&svc, "dispatcher", AB_SVC_DISPATCHER, AB_OPT_DISPATCHER_OPS_PORT,
                             argc, argv);
    if (rc >= 0)
        return rc;
    struct dispatch_ctx ctx;
    struct ab_outgoing *outgoing = NULL;
    char errstr[512];
    dispatch_init(&ctx, &svc);
    /* Only the endpoints' events matter here (schedules are the notifier's concern). */
    if (ab_outgoing_parse(ab_config_object(svc.cfg, AB_OPT_WEBHOOKS), NULL, 0, 15000, &outgoing,
                          errstr, sizeof(errstr)) != AB_OK) {
        ab_error("%s", errstr);
        ab_service_cleanup(&svc);
        return 2;
    }
    ctx.outgoing = outgoing;
    /* agentbus.events is read only when some endpoint wants its events. */
    const enum ab_topic topics[] = { AB_TOPIC_INGRESS, AB_TOPIC_EVENTS };
    const struct ab_consumer_options opts = {
        .group_id = "agentbus-dispatcher",
        .client_id = "agentbus-dispatcher",
        .topics = topics,
        .topic_count = outgoing->count > 0 ? 2 : 1,
        .from_end_topics = &topics[1],
        .from_end_count = outgoing->count > 0 ? 1 : 0,
        .handler = dispatch_handle,
        .handler_ud = &ctx,
    };
    rc = ab_service_run_consumer(&svc, &opts);
    ab_outgoing_free(outgoing);
    ab_service_cleanup(&svc);
    return rc;
}
