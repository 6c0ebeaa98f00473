/* The topics agentbus uses, with their partition counts, and their names under the
 * configurable prefix ("staging." + "agentbus.ingress"). */
#ifndef AB_TOPICS_H
#define AB_TOPICS_H

#include <stddef.h>

enum ab_topic {
    AB_TOPIC_INGRESS,      /* everything ingress accepted, for the dispatcher */
    AB_TOPIC_LLM_REQUESTS, /* LLM calls, keyed by conversation */
    AB_TOPIC_NOTIFY,       /* deliveries (Feishu, outgoing webhooks), keyed by destination */
    AB_TOPIC_NOTIFY_RETRY, /* deliveries waiting for their next attempt */
    AB_TOPIC_NOTIFY_DLQ,   /* deliveries that used up their attempts, and poison notify msgs */
    AB_TOPIC_EVENTS,       /* the public lifecycle stream */
    AB_TOPIC_INGRESS_DLQ,  /* poison messages of agentbus.ingress */
    AB_TOPIC_LLM_REQUESTS_DLQ,
    AB_TOPIC_NOTIFY_RETRY_DLQ,
    AB_TOPIC_EVENTS_DLQ,
    AB_TOPIC__COUNT
};

struct ab_topic_spec {
    const char *base;   /* name without prefix */
    int partitions;     /* partitions when agentbus creates the topic */
    const char *dlq;    /* base name of its dead-letter topic, or NULL */
};

const struct ab_topic_spec *ab_topic_spec(enum ab_topic topic);

/* Writes prefix + base name into out. @returns 0, or -1 when it does not fit. */
int ab_topic_name(const char *prefix, enum ab_topic topic, char *out, size_t size);

/* The dead-letter topic of a full topic name: the name of its DLQ when it is one of ours
 * ("x.agentbus.notify" -> "x.agentbus.notify.dlq"), else name + ".dlq". */
int ab_topic_dlq_name(const char *prefix, const char *topic, char *out, size_t size);

#endif
