/* The topic table. Partition counts bound each consumer group's parallelism, so they are
 * also the ceiling of the autoscalers' replica counts (deploy/). */
#include "common/topics.h"

#include <stdio.h>
#include <string.h>

static const struct ab_topic_spec topics[AB_TOPIC__COUNT] = {
    [AB_TOPIC_INGRESS] = { "agentbus.ingress", 12, "agentbus.ingress.dlq" },
    [AB_TOPIC_LLM_REQUESTS] = { "agentbus.llm.requests", 12, "agentbus.llm.requests.dlq" },
    [AB_TOPIC_NOTIFY] = { "agentbus.notify", 12, "agentbus.notify.dlq" },
    [AB_TOPIC_NOTIFY_RETRY] = { "agentbus.notify.retry", 12, "agentbus.notify.retry.dlq" },
    [AB_TOPIC_NOTIFY_DLQ] = { "agentbus.notify.dlq", 3, NULL },
    [AB_TOPIC_EVENTS] = { "agentbus.events", 12, "agentbus.events.dlq" },
    [AB_TOPIC_INGRESS_DLQ] = { "agentbus.ingress.dlq", 3, NULL },
    [AB_TOPIC_LLM_REQUESTS_DLQ] = { "agentbus.llm.requests.dlq", 3, NULL },
    [AB_TOPIC_NOTIFY_RETRY_DLQ] = { "agentbus.notify.retry.dlq", 3, NULL },
    [AB_TOPIC_EVENTS_DLQ] = { "agentbus.events.dlq", 3, NULL },
};

const struct ab_topic_spec *ab_topic_spec(enum ab_topic topic)
{
    return (int)topic >= 0 && topic < AB_TOPIC__COUNT ? &topics[topic] : NULL;
}

int ab_topic_name(const char *prefix, enum ab_topic topic, char *out, size_t size)
{
    const struct ab_topic_spec *spec = ab_topic_spec(topic);
    if (spec == NULL)
        return -1;
    int n = snprintf(out, size, "%s%s", prefix ? prefix : "", spec->base);
    return n < 0 || (size_t)n >= size ? -1 : 0;
}

int ab_topic_dlq_name(const char *prefix, const char *topic, char *out, size_t size)
{
    size_t plen = prefix ? strlen(prefix) : 0;
    int n;
    for (int i = 0; i < AB_TOPIC__COUNT; i++) {
        if (topics[i].dlq && strncmp(topic, prefix ? prefix : "", plen) == 0 &&
            strcmp(topic + plen, topics[i].base) == 0) {
            n = snprintf(out, size, "%s%s", prefix ? prefix : "", topics[i].dlq);
            return n < 0 || (size_t)n >= size ? -1 : 0;
        }
    }
    n = snprintf(out, size, "%s.dlq", topic);
    return n < 0 || (size_t)n >= size ? -1 : 0;
}
