/* agentbus-notifier: wiring only. Consumes agentbus.notify and agentbus.notify.retry
 * (delivery.c). */
#include "common/service.h"
#include "services/notifier/delivery.h"

int main(int argc, char **argv)
{
    struct ab_service svc;
    int rc = ab_service_init(&svc, "notifier", AB_SVC_NOTIFIER, AB_OPT_NOTIFIER_OPS_PORT, argc,
                             argv);
    if (rc >= 0)
        return rc;
    const enum ab_topic topics[] = { AB_TOPIC_NOTIFY, AB_TOPIC_NOTIFY_RETRY };
    const struct ab_consumer_options opts = {
        .group_id = "agentbus-notifier",
        .client_id = "agentbus-notifier",
        .topics = topics,
        .topic_count = sizeof(topics) / sizeof(topics[0]),
        .handler = notify_handle,
        .handler_ud = &svc,
    };
    rc = ab_service_run_consumer(&svc, &opts);
    ab_service_cleanup(&svc);
    return rc;
}
