/* agentbus-notifier: wiring only. Consumes agentbus.notify and agentbus.notify.retry
 * asynchronously and delivers to Feishu/Lark and outgoing webhooks (notifier.h). */
#include <stdio.h>

#include "common/log.h"
#include "common/service.h"
#include "services/notifier/notifier.h"

int main(int argc, char **argv)
{
    struct ab_service svc;
    char errstr[512];
    int rc =
        ab_service_init(&svc, "notifier", AB_SVC_NOTIFIER, AB_OPT_NOTIFIER_OPS_PORT, argc, argv);
    if (rc >= 0)
        return rc;
    struct notify_notifier *notifier = notify_notifier_new(&svc, errstr, sizeof(errstr));
    if (notifier == NULL) {
        ab_error("%s", errstr);
        ab_service_cleanup(&svc);
        return 2;
    }
    /* On SIGTERM the deliveries in hand get half the shutdown time to finish; what is still
     * in flight then is abandoned (redone by the partition's next owner or the schedule). */
    long long shutdown_ms = ab_config_int(svc.cfg, AB_OPT_SHUTDOWN_TIMEOUT_S) * 1000;
    const enum ab_topic topics[] = {AB_TOPIC_NOTIFY, AB_TOPIC_NOTIFY_RETRY};
    const struct ab_consumer_options opts = {
        .group_id = "agentbus-notifier",
        .client_id = "agentbus-notifier",
        .topics = topics,
        .topic_count = sizeof(topics) / sizeof(topics[0]),
        .start = notify_notifier_start_job,
        .quiesce = notify_notifier_quiesce,
        .handler_ud = notifier,
        .max_in_flight = (size_t)ab_config_int(svc.cfg, AB_OPT_NOTIFIER_MAX_IN_FLIGHT),
        .drain_timeout_ms = (int)(shutdown_ms / 2),
        .unordered_keys = true,
    };
    rc = ab_service_run_consumer(&svc, &opts);
    notify_notifier_free(notifier);
    ab_service_cleanup(&svc);
    return rc;
}
