/* LLM request handling (provider calls come with the LLM-worker issue). */
#include "services/llm-worker/llm_request.h"

#include <stdio.h>

enum ab_err llmw_handle(void *ud, const struct ab_consumed *msg, char *reason, size_t size)
{
    (void)ud;
    snprintf(reason, size, "llm-worker: event type \"%s\" is not handled by this version",
             msg->event->type);
    return AB_ERR_INVALID;
}
