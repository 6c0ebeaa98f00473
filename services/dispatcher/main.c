/* agentbus-dispatcher: wiring only. Consumes agentbus.ingress, journals every event in
 * PostgreSQL (route.c) and routes agentbus.message.sent by its target (message_route.c). */
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
    dispatch_init(&ctx, &svc);
    const enum ab_topic topics[] = { AB_TOPIC_INGRESS };
    const struct ab_consumer_options opts = {
        .group_id = "agentbus-dispatcher",
        .client_id = "agentbus-dispatcher",
        .topics = topics,
        .topic_count = sizeof(topics) / sizeof(topics[0]),
        .handler = dispatch_handle,
        .handler_ud = &ctx,
    };
    rc = ab_service_run_consumer(&svc, &opts);
    ab_service_cleanup(&svc);
    return rc;
}
