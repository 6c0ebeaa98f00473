/* The Kafka consumer: one consumer group per service, cooperative-sticky assignment,
 * at-least-once processing (an offset is stored only after the handler says the work is
 * durable), a dead-letter topic for poison messages, and retries that never block other
 * partitions or overrun max.poll.interval.ms. */
#ifndef AB_KAFKA_CONSUMER_H
#define AB_KAFKA_CONSUMER_H

#include <stdbool.h>
#include <stdint.h>

#include "common/envelope.h"
#include "common/kafka_producer.h"

struct ab_consumed {
    const char *topic;
    int32_t partition;
    int64_t offset;
    const void *key;
    size_t key_len;
    const void *value;
    size_t value_len;
    const struct ab_event *event; /* the parsed envelope; borrowed for the call */
    int attempt;                  /* 1 the first time this offset is handled */
    const rd_kafka_message_t *rkm; /* the raw message, borrowed (headers, timestamp) */
};

/* Handles one event. Its result decides what happens to the message:
 *  AB_OK: the work is durable; the offset is stored and committed.
 *  a retriable error (ab_err_is_retriable): the partition pauses and the same message is
 *      handled again after an exponential backoff; other partitions go on.
 *  any other error: the message goes to the dead-letter topic with `reason`, and the
 *      partition moves on.
 * @thread called from the consumer's own thread only. */
typedef enum ab_err (*ab_consumer_handler)(void *ud, const struct ab_consumed *msg,
                                           char *reason, size_t reason_size);

struct ab_consumer_options {
    const char *group_id;        /* e.g. "agentbus-dispatcher" */
    const char *client_id;
    const enum ab_topic *topics; /* our topics to subscribe to */
    size_t topic_count;
    ab_consumer_handler handler;
    void *handler_ud;
};

struct ab_consumer;

/* Creates the consumer and subscribes. The producer (borrowed, must outlive the consumer)
 * writes the dead letters. @returns AB_OK or AB_ERR_CONFIG. */
enum ab_err ab_consumer_new(const struct ab_config *cfg, struct ab_producer *producer,
                            const struct ab_consumer_options *opts, struct ab_consumer **out,
                            char *errstr, size_t errstr_size);

/* Starts the consumer's thread, which polls and calls the handler until stopped. */
enum ab_err ab_consumer_start(struct ab_consumer *c);

/* Stops taking messages, lets the message in hand finish, commits the stored offsets,
 * leaves the group and joins the thread. @thread any thread except the consumer's. */
void ab_consumer_stop(struct ab_consumer *c);
void ab_consumer_free(struct ab_consumer *c);

/* Readiness: the consumer has joined its group and owns at least one partition. */
bool ab_consumer_ready(const struct ab_consumer *c);
int ab_consumer_assigned_count(const struct ab_consumer *c);

/* Sends a message to its topic's dead-letter topic, value and key unchanged, with headers
 * saying where it came from and why (x-agentbus-dlq-*). Blocks until acknowledged.
 * @thread safe. */
enum ab_err ab_consumer_dead_letter(struct ab_producer *producer, const struct ab_consumed *msg,
                                    const char *service, const char *reason, char *errstr,
                                    size_t errstr_size);

rd_kafka_t *ab_consumer_handle(const struct ab_consumer *c);

#endif
