/* What the LLM worker tells the rest of the bus about a finished request, always read back
 * from its llm_requests row, so that the first delivery and any redelivery publish the
 * same events with the same ids (derived from the request's id):
 *
 *   answered  the reply, an agentbus.message.sent from the native agent to the sender on
 *             agentbus.ingress, routed like any message (an OpenClaw sender finds it in its
 *             next poll, a native one answers it: hops + 1); then agentbus.agent_response
 *             on agentbus.events with the model, latency, time to first token and usage.
 *             A webhook's message (no agent sent it) gets agentbus.agent_response only.
 *   failed    agentbus.error on agentbus.events with the cause and every call made, and,
 *             to an OpenClaw sender, a short system notice in its inbox. Never a reply.
 *   skipped   agentbus.error (hop limit reached, sender gone); no notice.
 *
 * @thread any database thread. */
#ifndef LLMW_PUBLISH_H
#define LLMW_PUBLISH_H

#include <libpq-fe.h>

#include "common/kafka_producer.h"
#include "services/llm-worker/job.h"

#define LLMW_EVENT_SOURCE "/agentbus/llm-worker"

/* Loads the request's row and publishes its events, together (one wait for Kafka's acks).
 * @returns AB_OK; AB_ERR_NOT_FOUND when there is no row; the database's or Kafka's error
 *          (retriable ones: publish again later, the ids stay the same). */
enum ab_err llmw_publish_recorded(PGconn *conn, struct ab_producer *producer,
                                  const struct llmw_job *job, char *reason, size_t reason_size);

#endif
