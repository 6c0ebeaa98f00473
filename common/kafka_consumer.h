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

/* One message handed to an asynchronous handler (ab_consumer_start_fn). */
struct ab_consumer_job;

/* Asynchronous handling: the consumer hands a message over and goes on polling; the
 * handler works on it wherever it likes (other threads, an event loop) and ends it with
 * ab_consumer_job_done. Many messages are in hand at once, up to max_in_flight, so one
 * slow message (an LLM answering for minutes) neither stalls the others nor overruns
 * max.poll.interval.ms. What the synchronous handler's result means holds for done's err:
 *  AB_OK: the work is durable. A partition's offset is stored only up to the end of its
 *      longest run of finished messages, so a crash never skips an unfinished one.
 *  a retriable error: the same job is handed to start again after a backoff (attempt
 *      grows); other messages go on.
 *  any other error: dead-lettered with the reason, then finished.
 * Order: messages with the same Kafka key are handed out one at a time, in partition
 * order (the next waits until the one before it is finished); different keys run at once.
 * With options.unordered_keys, every message is handed out as it comes.
 * @thread called from the consumer's thread; it must not block. */
typedef void (*ab_consumer_start_fn)(void *ud, struct ab_consumer_job *job);

/* Async only: called by ab_consumer_stop after the consumer has closed, on the stopping
 * thread; it must return only once every job handed out has been done (cancelling what
 * it likes: the results of jobs done after the close are dropped, and their messages are
 * handled again by the partition's next owner). */
typedef void (*ab_consumer_quiesce_fn)(void *ud);

struct ab_consumer_options {
    const char *group_id;        /* e.g. "agentbus-dispatcher" */
    const char *client_id;
    const enum ab_topic *topics; /* our topics to subscribe to */
    size_t topic_count;
    /* Exactly one of handler (one message at a time) and start (asynchronous). */
    ab_consumer_handler handler;
    ab_consumer_start_fn start;
    ab_consumer_quiesce_fn quiesce; /* required with start */
    void *handler_ud;
    /* Async: messages taken and not yet finished (done, or waiting behind their key or a
     * slower message of their partition); at the limit every partition pauses until one
     * finishes. 0: 64. */
    size_t max_in_flight;
    /* Async: how long ab_consumer_stop lets the jobs in hand finish before it closes the
     * consumer anyway. 0: 10 000 ms. */
    int drain_timeout_ms;
    /* Async: hand out messages with the same key at once too (the handler keeps whatever
     * order it needs itself; the notifier's key is a destination that takes many requests
     * at once). Offsets still advance only past finished prefixes. */
    bool unordered_keys;
    /* Topics read only from the moment the group first owns them: a partition without a
     * committed offset starts at its end rather than its beginning (the dispatcher's
     * fan-out of agentbus.events must not replay the stream's history to an endpoint
     * configured today). Must be among topics. */
    const enum ab_topic *from_end_topics;
    size_t from_end_count;
};

/* The message of a job. @ownership borrowed; valid until ab_consumer_job_done. attempt
 * counts the times start was called for it. @thread any. */
const struct ab_consumed *ab_consumer_job_msg(const struct ab_consumer_job *job);

/* True once the job's result no longer matters: its partition was revoked, or the
 * consumer stopped without waiting for it. The handler should end it soon (still with
 * ab_consumer_job_done) rather than finish work whose offset will never be committed.
 * @thread any. */
bool ab_consumer_job_abandoned(const struct ab_consumer_job *job);

/* Ends a job; reason (may be NULL) is copied and says why for an error. The job must not
 * be touched afterwards. @thread any; exactly once per start. */
void ab_consumer_job_done(struct ab_consumer_job *job, enum ab_err err, const char *reason);


struct ab_consumer;

/* Creates the consumer and subscribes. The producer (borrowed, must outlive the consumer)
 * writes the dead letters. @returns AB_OK or AB_ERR_CONFIG. */
enum ab_err ab_consumer_new(const struct ab_config *cfg, struct ab_producer *producer,
                            const struct ab_consumer_options *opts, struct ab_consumer **out,
                            char *errstr, size_t errstr_size);

/* Starts the consumer's thread, which polls and calls the handler until stopped. */
enum ab_err ab_consumer_start(struct ab_consumer *c);

/* Stops taking messages, lets the message in hand finish (async: the jobs in hand, up to
 * drain_timeout_ms), commits the stored offsets, leaves the group and joins the thread;
 * async, then calls quiesce. @thread any thread except the consumer's. */
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

/* Async: messages in hand (see max_in_flight). @thread any. */
size_t ab_consumer_in_flight(const struct ab_consumer *c);

rd_kafka_t *ab_consumer_handle(const struct ab_consumer *c);

/* ---- consumer lag ----
 * Every consumer publishes agentbus_kafka_consumer_lag{group,topic,partition} from
 * librdkafka's statistics (statistics.interval.ms: 5000 unless kafka.properties sets it; 0
 * turns the gauge off) for the partitions it owns; a partition revoked or whose lag is
 * unknown has no sample, so a stale number never outlives its owner. */

/* The lag of one partition, as ab_kafka_stats_lag reads it. */
struct ab_kafka_lag {
    char topic[256];
    int32_t partition;
    int64_t lag; /* messages, >= 0 */
};

/* Reads the consumer lag of the partitions this client fetches from librdkafka's statistics
 * JSON (the stats_cb's text; fields as in librdkafka's STATISTICS.md): the smaller of
 * librdkafka's consumer_lag_stored and consumer_lag, that is the partition's end (its last
 * stable offset) minus the furthest of the offsets stored (work finished: we store only
 * after durable work) and committed. 0 for an empty partition (lo_offset == hi_offset)
 * when neither is known yet. Left out: the internal partition -1, partitions not fetched
 * (fetch_state none, stopping, stopped), and partitions whose lag is unknown (both -1 on a
 * partition with messages). *out gets a malloc'd array the caller frees (NULL when there
 * is none). @returns the number of entries, or -1 when json is not statistics JSON.
 * @thread safe (pure). */
int ab_kafka_stats_lag(const char *json, size_t len, struct ab_kafka_lag **out);

#endif
