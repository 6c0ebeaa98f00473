/* agentbus-llm-worker: wiring only. Consumes agentbus.llm.requests asynchronously and
 * answers them through the models of the agents asked (worker.h). */
#include <stdio.h>

#include "common/log.h"
#include "common/service.h"
#include "services/llm-worker/worker.h"

int main(int argc, char **argv)
{
    struct ab_service svc;
    char errstr[512];
    int rc = ab_service_init(&svc, "llm-worker", AB_SVC_LLM_WORKER, AB_OPT_LLM_WORKER_OPS_PORT,
                             argc, argv);
    if (rc >= 0)
        return rc;
    struct llmw_worker *worker = llmw_worker_new(&svc, errstr, sizeof(errstr));
    if (worker == NULL) {
        ab_error("%s", errstr);
        ab_service_cleanup(&svc);
        return 1;
    }
    /* On SIGTERM the requests in hand get half the shutdown time to finish; then the calls
     * still running are cancelled (their partitions' next owners call again), within the
     * watchdog's limit. */
    long long shutdown_ms = ab_config_int(svc.cfg, AB_OPT_SHUTDOWN_TIMEOUT_S) * 1000;
    const enum ab_topic topics[] = { AB_TOPIC_LLM_REQUESTS };
    const struct ab_consumer_options opts = {
        .group_id = "agentbus-llm-worker",
        .client_id = "agentbus-llm-worker",
        .topics = topics,
        .topic_count = sizeof(topics) / sizeof(topics[0]),
        .start = llmw_worker_start_job,
        .quiesce = llmw_worker_quiesce,
        .handler_ud = worker,
        .max_in_flight = (size_t)ab_config_int(svc.cfg, AB_OPT_LLM_MAX_IN_FLIGHT),
        .drain_timeout_ms = (int)(shutdown_ms / 2),
    };
    rc = ab_service_run_consumer(&svc, &opts);
    llmw_worker_free(worker);
    ab_service_cleanup(&svc);
    return rc;
}
