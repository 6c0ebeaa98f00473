/* The llm-worker's handling of one event from agentbus.llm.requests. */
#ifndef LLMW_LLM_REQUEST_H
#define LLMW_LLM_REQUEST_H

#include "common/kafka_consumer.h"

/* Handles an LLM request event. The provider calls arrive with the LLM-worker issue; until
 * then every request is refused with a reason and so kept, replayable, in the
 * dead-letter topic rather than dropped. */
enum ab_err llmw_handle(void *ud, const struct ab_consumed *msg, char *reason,
                        size_t reason_size);

#endif
