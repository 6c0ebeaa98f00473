/* The Kafka producer: idempotent, acks=all, and a send is done only when the broker has
 * acknowledged it (the delivery report). One producer per process, shared by all threads. */
#ifndef AB_KAFKA_PRODUCER_H
#define AB_KAFKA_PRODUCER_H

#include <stdbool.h>

#include "common/envelope.h"
#include "common/kafka.h"
#include "common/topics.h"

struct ab_producer;

/* Creates the producer and starts its thread, which serves delivery reports. It does not
 * wait for a broker: sends made while none is reachable wait up to kafka.produce_timeout_ms.
 * @returns AB_OK or AB_ERR_CONFIG (errstr says why). @ownership free with ab_producer_free. */
enum ab_err ab_producer_new(const struct ab_config *cfg, const char *client_id,
                            struct ab_producer **out, char *errstr, size_t errstr_size);

/* Flushes what is queued (up to timeout_ms), stops the thread, destroys the handle.
 * NULL is a no-op. */
void ab_producer_free(struct ab_producer *p, int flush_timeout_ms);

/* Sends one message and blocks until the broker acknowledged it (acks=all) or it failed.
 * key may be NULL. @returns AB_OK once acknowledged; AB_ERR_TIMEOUT when the broker did not
 * ack in time (the message may still have been written: retry with the same event id);
 * AB_ERR_UNAVAILABLE, AB_ERR_TOO_LARGE, AB_ERR_INVALID. @thread safe. */
enum ab_err ab_producer_send(struct ab_producer *p, const char *topic, const void *key,
                             size_t key_len, const void *value, size_t value_len,
                             const struct ab_kafka_header *headers, size_t header_count,
                             char *errstr, size_t errstr_size);

/* Serialises ev and sends it to one of our topics (prefix applied), with the ce_id, ce_type
 * and (when set) traceparent headers. key may be NULL. @thread safe. */
enum ab_err ab_producer_send_event(struct ab_producer *p, enum ab_topic topic, const char *key,
                                   const struct ab_event *ev, char *errstr, size_t errstr_size);

/* One event of a batch (ab_producer_send_events). */
struct ab_outgoing_event {
    enum ab_topic topic;
    const char *key;          /* may be NULL */
    const struct ab_event *ev; /* borrowed */
    enum ab_err err;          /* set by the send: this event's own result */
};

/* Sends events at once and blocks until the broker acknowledged each of them (or it
 * failed): one round trip for the batch instead of one per event. Their order is kept only
 * where it always is (the same partition). @returns AB_OK when every event was acknowledged,
 * else the first failure (errstr says which; each event's err says its own): events of the
 * batch may have been written, so retry the batch with the same event ids. @thread safe. */
enum ab_err ab_producer_send_events(struct ab_producer *p, struct ab_outgoing_event *events,
                                    size_t n, char *errstr, size_t errstr_size);

/* Waits until every queued message is acknowledged or failed. @returns AB_ERR_TIMEOUT if
 * some are still in flight after timeout_ms. */
enum ab_err ab_producer_flush(struct ab_producer *p, int timeout_ms);

/* True once librdkafka reported a fatal error: the producer can send no more and the
 * process should restart. */
bool ab_producer_fatal(const struct ab_producer *p);

const char *ab_producer_topic_prefix(const struct ab_producer *p);

/* The librdkafka handle, borrowed (for reachability checks and metrics). */
rd_kafka_t *ab_producer_handle(const struct ab_producer *p);

#endif
