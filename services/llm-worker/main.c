/* agentbus-llm-worker: wiring only. Consumes agentbus.llm.requests (llm_request.c). */
#include "common/service.h"
#include "services/llm-worker/llm_request.h"

int main(int argc, char **argv)
{
    struct ab_service svc;
    int rc = ab_service_init(&svc, "llm-worker", AB_SVC_LLM_WORKER, AB_OPT_LLM_WORKER_OPS_PORT,
                             argc, argv);
    if (rc >= 0)
        return rc;
    const enum ab_topic topics[] = { AB_TOPIC_LLM_REQUESTS };
    const struct ab_consumer_options opts = {
        .group_id = "agentbus-llm-worker",
        .client_id = "agentbus-llm-worker",
        .topics = topics,
        .topic_count = sizeof(topics) / sizeof(topics[0]),
        .handler = llmw_handle,
        .handler_ud = &svc,
    };
    rc = ab_service_run_consumer(&svc, &opts);
    ab_service_cleanup(&svc);
    return rc;
}
