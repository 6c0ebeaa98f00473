/* The consumer loop. One thread per consumer polls, parses the envelope, calls the
 * handler, and stores the offset only after the handler reports durable work; auto-commit
 * then commits stored offsets every second and on close.
 *
 * Retries: when the handler fails with a retriable error, the partition is paused and the
 * message is kept in hand; the loop goes on polling (so the consumer stays in its group
 * and other partitions keep flowing) and hands the same message to the handler again once
 * its backoff has passed. Pausing purges what librdkafka had prefetched for the partition,
 * and resuming fetches again from the position after the kept message, so nothing is
 * skipped and the partition's order is kept.
 *
 * Asynchronous handling (options.start): the loop hands messages over and goes on polling.
 * Each partition keeps its messages in hand in offset order, and its offset moves only
 * past the longest finished prefix, so a fast message behind a slow one waits to be
 * committed, never the other way round. A message whose key is already in hand waits
 * behind it (a conversation's turns stay in order); a retriable failure waits out its
 * backoff without pausing anything. Handlers end jobs from their own threads through a
 * locked queue and rd_kafka_queue_yield, which wakes the loop's poll at once. */
#include "common/kafka_consumer.h"

#include <jansson.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "common/metrics.h"
#include "common/trace.h"
#include "common/util.h"

#define RETRY_BACKOFF_MIN_MS 200

struct retry {
    rd_kafka_message_t *rkm; /* owned: the message being retried */
    int attempt;             /* attempts made so far */
    int64_t due_ms;          /* monotonic time of the next attempt */
};

enum job_state {
    JOB_WAITING,  /* behind an earlier message with the same key */
    JOB_RUNNING,  /* handed to start, done not yet taken */
    JOB_BACKOFF,  /* failed retriably (or its dead letter did): waits for due_ms */
    JOB_FINISHED, /* done; waits only for the messages before it in its partition */
};

struct part;

struct ab_consumer_job {
    struct ab_consumer *c;
    struct part *part;       /* consumer thread only; NULL once abandoned */
    rd_kafka_message_t *rkm; /* owned */
    struct ab_event *ev;     /* owned; NULL when the envelope did not parse */
    struct ab_consumed msg;
    enum job_state state;    /* consumer thread only */
    atomic_bool abandoned;
    bool dead_letter_due;    /* BACKOFF is for the dead letter, not for start */
    int64_t started_ms;
    int64_t due_ms;
    enum ab_err result; /* set by done */
    char reason[512];
    struct ab_consumer_job *next_done;
};

/* The messages in hand of one partition, in offset order. */
struct part {
    char *topic;
    int32_t partition;
    struct ab_consumer_job **jobs;
    size_t count;
    size_t cap;
};

struct ab_consumer {
    rd_kafka_t *rk;
    struct ab_producer *producer; /* borrowed: writes dead letters */
    char *group_id;
    char *prefix;
    ab_consumer_handler handler;
    void *handler_ud;
    int64_t backoff_max_ms;
    pthread_t thread;
    bool started;
    atomic_bool stop;
    atomic_int assigned;
    atomic_bool joined;
    /* Touched only by the consumer thread (the rebalance callback runs inside its poll). */
    struct retry *retries;
    size_t retry_count;
    struct ab_metric *m_messages; /* by group, topic and outcome */
    struct ab_metric *m_duration; /* handler time, by group and topic */
    struct ab_metric *m_lag;      /* by group, topic and partition, from the statistics */
    struct ab_kafka_lag *lag_series; /* the partitions m_lag has a sample of */
    size_t lag_count;

    /* Async mode (start != NULL). parts and paused_all: consumer thread only. */
    ab_consumer_start_fn start;
    ab_consumer_quiesce_fn quiesce;
    size_t max_in_flight;
    int drain_timeout_ms;
    bool unordered_keys;
    char **from_end; /* full names of options.from_end_topics */
    size_t from_end_count;
    struct part **parts;
    size_t part_count;
    atomic_size_t tracked; /* jobs in parts */
    bool paused_all;
    rd_kafka_queue_t *cq;  /* the consumer queue, to yield its poll */
    pthread_mutex_t done_lock;
    struct ab_consumer_job *done_head; /* jobs done, not yet taken by the loop */
    struct ab_consumer_job *done_tail;
    struct ab_metric *m_in_flight;
};

static void async_revoke(struct ab_consumer *c, const rd_kafka_topic_partition_list_t *parts);
static void forget_lag(struct ab_consumer *c, const rd_kafka_topic_partition_list_t *parts);
static void set_all_paused(struct ab_consumer *c, const rd_kafka_topic_partition_list_t *parts,
                           bool paused);

static struct retry *find_retry(struct ab_consumer *c, const char *topic, int32_t partition)
{
    for (size_t i = 0; i < c->retry_count; i++) {
        rd_kafka_message_t *m = c->retries[i].rkm;
        if (m->partition == partition && strcmp(rd_kafka_topic_name(m->rkt), topic) == 0)
            return &c->retries[i];
    }
    return NULL;
}

static void drop_retry(struct ab_consumer *c, struct retry *r)
{
    rd_kafka_message_destroy(r->rkm);
    *r = c->retries[--c->retry_count];
}

static void set_paused(struct ab_consumer *c, const rd_kafka_message_t *rkm, bool paused)
{
    rd_kafka_topic_partition_list_t *parts = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(parts, rd_kafka_topic_name(rkm->rkt), rkm->partition);
    rd_kafka_resp_err_t err = paused ? rd_kafka_pause_partitions(c->rk, parts)
                                     : rd_kafka_resume_partitions(c->rk, parts);
    if (err)
        ab_warn("kafka consumer: cannot %s %s[%d]: %s", paused ? "pause" : "resume",
                rd_kafka_topic_name(rkm->rkt), (int)rkm->partition, rd_kafka_err2str(err));
    rd_kafka_topic_partition_list_destroy(parts);
}

static bool starts_at_end(const struct ab_consumer *c, const char *topic)
{
    for (size_t i = 0; i < c->from_end_count; i++)
        if (strcmp(c->from_end[i], topic) == 0)
            return true;
    return false;
}

/* Newly assigned partitions of from_end topics with no committed offset start at their end.
 * Asking the group coordinator blocks the poll briefly, once per assignment; should it not
 * answer, the partitions start as auto.offset.reset says (nothing skipped, maybe replayed). */
static void start_new_at_end(struct ab_consumer *c, rd_kafka_t *rk,
                             rd_kafka_topic_partition_list_t *parts)
{
    rd_kafka_topic_partition_list_t *ask = rd_kafka_topic_partition_list_new(parts->cnt);
    for (int i = 0; i < parts->cnt; i++)
        if (starts_at_end(c, parts->elems[i].topic))
            rd_kafka_topic_partition_list_add(ask, parts->elems[i].topic,
                                              parts->elems[i].partition);
    rd_kafka_resp_err_t err = ask->cnt ? rd_kafka_committed(rk, ask, 10000)
                                       : RD_KAFKA_RESP_ERR_NO_ERROR;
    if (err != RD_KAFKA_RESP_ERR_NO_ERROR)
        ab_warn("kafka consumer %s: cannot read committed offsets: %s", c->group_id,
                rd_kafka_err2str(err));
    for (int i = 0; err == RD_KAFKA_RESP_ERR_NO_ERROR && i < ask->cnt; i++) {
        if (ask->elems[i].err == RD_KAFKA_RESP_ERR_NO_ERROR && ask->elems[i].offset < 0) {
            rd_kafka_topic_partition_t *p = rd_kafka_topic_partition_list_find(
                parts, ask->elems[i].topic, ask->elems[i].partition);
            if (p != NULL)
                p->offset = RD_KAFKA_OFFSET_END;
        }
    }
    rd_kafka_topic_partition_list_destroy(ask);
}

static void on_rebalance(rd_kafka_t *rk, rd_kafka_resp_err_t err,
                         rd_kafka_topic_partition_list_t *parts, void *opaque)
{
    struct ab_consumer *c = opaque;
    bool cooperative = strcmp(rd_kafka_rebalance_protocol(rk), "COOPERATIVE") == 0;
    rd_kafka_error_t *error = NULL;
    if (err == RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS) {
        if (c->from_end_count > 0)
            start_new_at_end(c, rk, parts);
        if (cooperative)
            error = rd_kafka_incremental_assign(rk, parts);
        else
            rd_kafka_assign(rk, parts);
        /* Async: a partition joins paused exactly when the consumer is full. The pause is
         * ours and outlives an assignment (librdkafka keeps it across unassign and assign),
         * so a partition revoked while the consumer was full would come back paused for
         * good if it were not resumed here. */
        if (c->start != NULL)
            set_all_paused(c, parts, c->paused_all);
        atomic_fetch_add(&c->assigned, parts->cnt);
        atomic_store(&c->joined, true);
        ab_info("kafka consumer %s: assigned %d partitions (%d in all)", c->group_id, parts->cnt,
                atomic_load(&c->assigned));
    } else if (err == RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS) {
        /* Commit what is done before another member takes over, unless the partitions were
         * lost (then another member may already own them and our commit would be stale). */
        if (!rd_kafka_assignment_lost(rk))
            rd_kafka_commit(rk, NULL, 0);
        for (int i = 0; i < parts->cnt; i++) {
            struct retry *r = find_retry(c, parts->elems[i].topic, parts->elems[i].partition);
            if (r != NULL) {
                /* The pause is ours, not librdkafka's: it outlives the assignment, and the
                 * partition would come back to us paused for good. */
                set_paused(c, r->rkm, false);
                drop_retry(c, r); /* the next owner will handle the message again */
            }
        }
        if (c->start != NULL)
            async_revoke(c, parts);
        forget_lag(c, parts);
        if (cooperative)
            error = rd_kafka_incremental_unassign(rk, parts);
        else
            rd_kafka_assign(rk, NULL);
        atomic_fetch_sub(&c->assigned, cooperative ? parts->cnt : atomic_load(&c->assigned));
        ab_info("kafka consumer %s: revoked %d partitions", c->group_id, parts->cnt);
    } else {
        ab_error("kafka consumer %s: rebalance error %s", c->group_id, rd_kafka_err2str(err));
        if (c->start != NULL)
            async_revoke(c, NULL);
        forget_lag(c, NULL);
        rd_kafka_assign(rk, NULL);
        atomic_store(&c->assigned, 0);
    }
    if (error != NULL) {
        ab_error("kafka consumer %s: %s", c->group_id, rd_kafka_error_string(error));
        rd_kafka_error_destroy(error);
    }
}

static void on_error(rd_kafka_t *rk, int err, const char *reason, void *opaque)
{
    struct ab_consumer *c = opaque;
    (void)rk;
    if (err == RD_KAFKA_RESP_ERR__ALL_BROKERS_DOWN || err == RD_KAFKA_RESP_ERR__FATAL)
        ab_warn("kafka consumer %s: %s", c->group_id, reason);
    else
        ab_debug("kafka consumer %s: %s: %s", c->group_id, rd_kafka_err2name(err), reason);
}

/* ---- consumer lag, from librdkafka's statistics ------------------------------------------ */

static int64_t stats_int(const json_t *obj, const char *name)
{
    const json_t *v = json_object_get(obj, name);
    return json_is_integer(v) ? (int64_t)json_integer_value(v) : -1;
}

/* Not fetched by this client: never assigned, or on its way out. */
static bool stats_not_fetched(const json_t *part)
{
    const char *state = json_string_value(json_object_get(part, "fetch_state"));
    return state == NULL || strcmp(state, "none") == 0 || strcmp(state, "stopping") == 0 ||
           strcmp(state, "stopped") == 0;
}

/* The partition's lag in messages, or -1 when it is unknown (see ab_kafka_stats_lag). */
static int64_t stats_partition_lag(const json_t *part)
{
    int64_t stored = stats_int(part, "consumer_lag_stored");
    int64_t committed = stats_int(part, "consumer_lag");
    if (stored >= 0 && committed >= 0)
        return stored < committed ? stored : committed;
    if (stored >= 0 || committed >= 0)
        return stored >= 0 ? stored : committed;
    int64_t lo = stats_int(part, "lo_offset"), hi = stats_int(part, "hi_offset");
    return lo >= 0 && lo == hi ? 0 : -1; /* nothing to read, whatever the start */
}

int ab_kafka_stats_lag(const char *json, size_t len, struct ab_kafka_lag **out)
{
    *out = NULL;
    json_t *root = json_loadb(json, len, 0, NULL);
    if (!json_is_object(root)) {
        json_decref(root);
        return -1;
    }
    const json_t *topics = json_object_get(root, "topics");
    const char *topic_name, *key;
    json_t *topic, *part;
    size_t count = 0, cap = 0;
    json_object_foreach((json_t *)topics, topic_name, topic)
    {
        json_object_foreach(json_object_get(topic, "partitions"), key, part)
        {
            const json_t *id = json_object_get(part, "partition");
            if (!json_is_integer(id) || json_integer_value(id) < 0 ||
                json_integer_value(id) > INT32_MAX || stats_not_fetched(part))
                continue; /* -1: librdkafka's internal UnAssigned partition */
            int64_t lag = stats_partition_lag(part);
            if (lag < 0 || strlen(topic_name) >= sizeof((*out)->topic))
                continue;
            if (count == cap) {
                cap = cap ? cap * 2 : 16;
                *out = ab_xrealloc(*out, cap * sizeof(**out));
            }
            struct ab_kafka_lag *l = &(*out)[count++];
            snprintf(l->topic, sizeof(l->topic), "%s", topic_name);
            l->partition = (int32_t)json_integer_value(id);
            l->lag = lag;
        }
    }
    json_decref(root);
    return (int)count;
}

static const struct ab_kafka_lag *find_lag(const struct ab_kafka_lag *lags, size_t n,
                                           const char *topic, int32_t partition)
{
    for (size_t i = 0; i < n; i++)
        if (lags[i].partition == partition && strcmp(lags[i].topic, topic) == 0)
            return &lags[i];
    return NULL;
}

static void remove_lag_sample(struct ab_consumer *c, const struct ab_kafka_lag *l)
{
    char partition[16];
    snprintf(partition, sizeof(partition), "%d", (int)l->partition);
    ab_metric_remove(c->m_lag, (const char *const[]){c->group_id, l->topic, partition, NULL});
}

/* Takes the lag samples of the revoked partitions (parts NULL: of all) off /metrics: a
 * stale number would keep an autoscaler or an alert going for a partition another member
 * now owns. Consumer thread, or after it was joined. */
static void forget_lag(struct ab_consumer *c, const rd_kafka_topic_partition_list_t *parts)
{
    for (size_t i = 0; i < c->lag_count;) {
        struct ab_kafka_lag *l = &c->lag_series[i];
        if (parts != NULL &&
            rd_kafka_topic_partition_list_find(parts, l->topic, l->partition) == NULL) {
            i++;
            continue;
        }
        remove_lag_sample(c, l);
        *l = c->lag_series[--c->lag_count];
    }
}

/* librdkafka's statistics, every statistics.interval.ms; served by the consumer's poll, so
 * on its thread (like the rebalance callback). Only partitions assigned now get a sample:
 * the statistics may have been gathered before a revoke this thread has already handled. */
static int on_stats(rd_kafka_t *rk, char *json, size_t json_len, void *opaque)
{
    struct ab_consumer *c = opaque;
    struct ab_kafka_lag *lags = NULL;
    int n = ab_kafka_stats_lag(json, json_len, &lags);
    if (n < 0) {
        ab_debug("kafka consumer %s: unreadable statistics", c->group_id);
        return 0;
    }
    rd_kafka_topic_partition_list_t *assigned = NULL;
    if (rd_kafka_assignment(rk, &assigned) != RD_KAFKA_RESP_ERR_NO_ERROR)
        assigned = NULL;
    size_t kept = 0;
    for (int i = 0; i < n; i++) {
        if (assigned == NULL ||
            rd_kafka_topic_partition_list_find(assigned, lags[i].topic, lags[i].partition) == NULL)
            continue;
        char partition[16];
        snprintf(partition, sizeof(partition), "%d", (int)lags[i].partition);
        ab_metric_set(c->m_lag, (const char *const[]){c->group_id, lags[i].topic, partition, NULL},
                      (double)lags[i].lag);
        lags[kept++] = lags[i];
    }
    for (size_t i = 0; i < c->lag_count; i++)
        if (find_lag(lags, kept, c->lag_series[i].topic, c->lag_series[i].partition) == NULL)
            remove_lag_sample(c, &c->lag_series[i]); /* gone, or its lag is unknown now */
    free(c->lag_series);
    c->lag_series = lags;
    c->lag_count = kept;
    if (assigned != NULL)
        rd_kafka_topic_partition_list_destroy(assigned);
    return 0; /* librdkafka frees json */
}

enum ab_err ab_consumer_new(const struct ab_config *cfg, struct ab_producer *producer,
                            const struct ab_consumer_options *opts, struct ab_consumer **out,
                            char *errstr, size_t size)
{
    char num[32], why[512];
    enum ab_err err = AB_OK;
    *out = NULL;
    rd_kafka_conf_t *conf = ab_kafka_conf_new(cfg, opts->client_id, errstr, size);
    if (conf == NULL)
        return AB_ERR_CONFIG;
    struct ab_consumer *c = ab_xcalloc(1, sizeof(*c));
    c->producer = producer;
    c->group_id = ab_xstrdup(opts->group_id);
    c->prefix = ab_xstrdup(ab_config_str(cfg, AB_OPT_KAFKA_TOPIC_PREFIX));
    c->from_end = ab_xcalloc(opts->from_end_count + 1, sizeof(char *));
    for (size_t i = 0; i < opts->from_end_count; i++) {
        char name[256];
        ab_topic_name(c->prefix, opts->from_end_topics[i], name, sizeof(name));
        c->from_end[c->from_end_count++] = ab_xstrdup(name);
    }
    c->handler = opts->handler;
    c->start = opts->start;
    c->quiesce = opts->quiesce;
    c->handler_ud = opts->handler_ud;
    c->max_in_flight = opts->max_in_flight ? opts->max_in_flight : 64;
    c->drain_timeout_ms = opts->drain_timeout_ms > 0 ? opts->drain_timeout_ms : 10000;
    c->unordered_keys = opts->unordered_keys;
    pthread_mutex_init(&c->done_lock, NULL);
    if ((opts->handler == NULL) == (opts->start == NULL) ||
        (opts->start != NULL && opts->quiesce == NULL)) {
        snprintf(errstr, size, "kafka consumer: give either handler, or start and quiesce");
        rd_kafka_conf_destroy(conf);
        err = AB_ERR_CONFIG;
        goto fail;
    }
    c->backoff_max_ms = ab_config_int(cfg, AB_OPT_KAFKA_RETRY_BACKOFF_MAX_MS);
    c->m_messages = ab_metrics_counter(
        ab_metrics_default(), "agentbus_kafka_consumed_total",
        "messages taken from Kafka, by outcome: done, retry, dead_letter, dead_letter_failed",
        (const char *const[]){ "group", "topic", "outcome", NULL });
    c->m_duration = ab_metrics_histogram(ab_metrics_default(),
                                         "agentbus_kafka_handle_duration_seconds",
                                         "time spent handling one message",
                                         (const char *const[]){ "group", "topic", NULL }, NULL, 0);
    c->m_in_flight = ab_metrics_gauge(ab_metrics_default(), "agentbus_kafka_in_flight",
                                      "messages in hand of an asynchronous consumer",
                                      (const char *const[]){ "group", NULL });
    c->m_lag = ab_metrics_gauge(
        ab_metrics_default(), "agentbus_kafka_consumer_lag",
        "messages of an assigned partition not yet handled (its end minus the offset stored or "
        "committed), from librdkafka's statistics; no sample while unknown",
        (const char *const[]){"group", "topic", "partition", NULL});

    struct {
        const char *name;
        long long value; /* -1: use text */
        const char *text;
    } props[] = {
        { "group.id", -1, opts->group_id },
        { "partition.assignment.strategy", -1, "cooperative-sticky" },
        { "enable.auto.commit", -1, "true" },
        { "auto.commit.interval.ms", -1, "1000" },
        { "enable.auto.offset.store", -1, "false" }, /* we store after durable work */
        { "auto.offset.reset", -1, "earliest" },
        { "allow.auto.create.topics", -1, "true" },
        { "enable.partition.eof", -1, "false" },
        { "session.timeout.ms", ab_config_int(cfg, AB_OPT_KAFKA_SESSION_TIMEOUT_MS), NULL },
        { "max.poll.interval.ms", ab_config_int(cfg, AB_OPT_KAFKA_MAX_POLL_INTERVAL_MS), NULL },
        { "fetch.wait.max.ms", ab_config_int(cfg, AB_OPT_KAFKA_FETCH_WAIT_MAX_MS), NULL },
    };
    for (size_t i = 0; i < sizeof(props) / sizeof(props[0]) && !err; i++) {
        snprintf(num, sizeof(num), "%lld", props[i].value);
        err = ab_kafka_conf_set(conf, props[i].name, props[i].text ? props[i].text : num, errstr,
                                size);
    }
    /* The consumer lag gauge's refresh; kafka.properties may change it (0: no gauge). */
    if (!err)
        err = ab_kafka_conf_default(conf, cfg, "statistics.interval.ms", "5000", errstr, size);
    if (err) {
        rd_kafka_conf_destroy(conf);
        goto fail;
    }
    rd_kafka_conf_set_opaque(conf, c);
    rd_kafka_conf_set_rebalance_cb(conf, on_rebalance);
    rd_kafka_conf_set_error_cb(conf, on_error);
    rd_kafka_conf_set_stats_cb(conf, on_stats);
    c->rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, why, sizeof(why));
    if (c->rk == NULL) {
        rd_kafka_conf_destroy(conf);
        snprintf(errstr, size, "kafka consumer: %s", why);
        err = AB_ERR_CONFIG;
        goto fail;
    }
    rd_kafka_poll_set_consumer(c->rk);
    c->cq = rd_kafka_queue_get_consumer(c->rk);

    rd_kafka_topic_partition_list_t *topics = rd_kafka_topic_partition_list_new(
        (int)opts->topic_count);
    for (size_t i = 0; i < opts->topic_count; i++) {
        char name[256];
        if (ab_topic_name(c->prefix, opts->topics[i], name, sizeof(name)) == 0)
            rd_kafka_topic_partition_list_add(topics, name, RD_KAFKA_PARTITION_UA);
    }
    rd_kafka_resp_err_t kerr = rd_kafka_subscribe(c->rk, topics);
    rd_kafka_topic_partition_list_destroy(topics);
    if (kerr) {
        snprintf(errstr, size, "kafka subscribe: %s", rd_kafka_err2str(kerr));
        err = AB_ERR_CONFIG;
        goto fail;
    }
    *out = c;
    return AB_OK;
fail:
    ab_consumer_free(c);
    return err;
}

enum ab_err ab_consumer_dead_letter(struct ab_producer *producer, const struct ab_consumed *msg,
                                    const char *service, const char *reason, char *errstr,
                                    size_t size)
{
    char dlq[300], partition[16], offset[24], when[32];
    if (ab_topic_dlq_name(ab_producer_topic_prefix(producer), msg->topic, dlq, sizeof(dlq)) != 0) {
        snprintf(errstr, size, "dead-letter topic name too long");
        return AB_ERR_INVALID;
    }
    snprintf(partition, sizeof(partition), "%d", (int)msg->partition);
    snprintf(offset, sizeof(offset), "%lld", (long long)msg->offset);
    ab_time_rfc3339(ab_wall_ms(), when);

    /* The original headers travel on (trace context above all), then ours. */
    struct ab_kafka_header headers[32];
    size_t n = 0;
    rd_kafka_headers_t *orig = NULL;
    if (msg->rkm != NULL && rd_kafka_message_headers(msg->rkm, &orig) == RD_KAFKA_RESP_ERR_NO_ERROR) {
        const char *name;
        const void *value;
        size_t len;
        for (size_t i = 0; n < 26 && rd_kafka_header_get_all(orig, i, &name, &value, &len) ==
                                         RD_KAFKA_RESP_ERR_NO_ERROR;
             i++) {
            if (strncmp(name, "x-agentbus-dlq-", 15) != 0)
                headers[n++] = (struct ab_kafka_header){ name, value, len };
        }
    }
    const struct ab_kafka_header ours[] = {
        { "x-agentbus-dlq-reason", reason, strlen(reason) },
        { "x-agentbus-dlq-topic", msg->topic, strlen(msg->topic) },
        { "x-agentbus-dlq-partition", partition, strlen(partition) },
        { "x-agentbus-dlq-offset", offset, strlen(offset) },
        { "x-agentbus-dlq-service", service, strlen(service) },
        { "x-agentbus-dlq-time", when, strlen(when) },
    };
    for (size_t i = 0; i < sizeof(ours) / sizeof(ours[0]); i++)
        headers[n++] = ours[i];
    return ab_producer_send(producer, dlq, msg->key, msg->key_len, msg->value, msg->value_len,
                            headers, n, errstr, size);
}

static void store_offset(struct ab_consumer *c, const rd_kafka_message_t *rkm)
{
    rd_kafka_topic_partition_list_t *parts = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(parts, rd_kafka_topic_name(rkm->rkt), rkm->partition)
        ->offset = rkm->offset + 1; /* the offset of the next message to read */
    rd_kafka_resp_err_t err = rd_kafka_offsets_store(c->rk, parts);
    if (err == RD_KAFKA_RESP_ERR_NO_ERROR)
        err = parts->elems[0].err;
    /* ERR__STATE: the partition was revoked meanwhile; its next owner handles it again. */
    if (err)
        ab_warn("kafka consumer %s: offset of %s[%d]@%lld not stored: %s", c->group_id,
                rd_kafka_topic_name(rkm->rkt), (int)rkm->partition, (long long)rkm->offset,
                rd_kafka_err2str(err));
    rd_kafka_topic_partition_list_destroy(parts);
}

static int64_t backoff_ms(const struct ab_consumer *c, int attempt)
{
    int64_t ms = RETRY_BACKOFF_MIN_MS;
    for (int i = 1; i < attempt && ms < c->backoff_max_ms; i++)
        ms *= 2;
    if (ms > c->backoff_max_ms)
        ms = c->backoff_max_ms;
    /* Full jitter on the upper half, so replicas that failed together do not retry together. */
    return ms / 2 + (int64_t)(ab_random_unit() * (double)(ms / 2));
}

/* Dead-letters msg with reason. @returns false when Kafka did not take it (to try again). */
static bool dead_letter_message(struct ab_consumer *c, const struct ab_consumed *msg,
                                const char *reason)
{
    char errstr[512];
    enum ab_err dlq_err = ab_consumer_dead_letter(c->producer, msg, c->group_id, reason, errstr,
                                                  sizeof(errstr));
    if (dlq_err == AB_ERR_TOO_LARGE || dlq_err == AB_ERR_INVALID) {
        /* Kafka will never take the message as it is (with our headers it is over the
         * size limit): dead-letter a reference to it (key, origin, reason, no value) so
         * the partition moves on and the loss is on record, rather than blocking the
         * partition for ever. Other refusals (authorization, say) may heal: retried. */
        char why[1100];
        struct ab_consumed ref = *msg;
        ref.value = NULL;
        ref.value_len = 0;
        snprintf(why, sizeof(why), "%s; value dropped: %s", reason, errstr);
        dlq_err = ab_consumer_dead_letter(c->producer, &ref, c->group_id, why, errstr,
                                          sizeof(errstr));
    }
    if (dlq_err == AB_OK) {
        ab_warn("kafka consumer %s: %s[%d]@%lld dead-lettered: %s", c->group_id, msg->topic,
                (int)msg->partition, (long long)msg->offset, reason);
        return true;
    }
    ab_error("kafka consumer %s: cannot dead-letter %s[%d]@%lld (%s): %s", c->group_id,
             msg->topic, (int)msg->partition, (long long)msg->offset, reason, errstr);
    return false;
}

/* What a handler sees of rkm (borrowed from it; the event is set once parsed). */
static struct ab_consumed consumed_of(rd_kafka_message_t *rkm, int attempt)
{
    return (struct ab_consumed){
        .topic = rd_kafka_topic_name(rkm->rkt),
        .partition = rkm->partition,
        .offset = rkm->offset,
        .key = rkm->key,
        .key_len = rkm->key_len,
        .value = rkm->payload,
        .value_len = rkm->len,
        .attempt = attempt,
        .rkm = rkm,
    };
}

/* Runs one message through the envelope check and the handler. @returns true when the
 * message is finished (offset stored), false when it must be tried again. */
static bool handle(struct ab_consumer *c, rd_kafka_message_t *rkm, int attempt)
{
    char reason[512] = "";
    struct ab_event *ev = NULL;
    struct ab_consumed msg = consumed_of(rkm, attempt);
    int64_t started = ab_monotonic_ms();
    const char *outcome = "done";
    enum ab_err err = ab_event_parse(rkm->payload, rkm->len, &ev, reason, sizeof(reason));
    if (err == AB_OK) {
        ab_log_set_event_id(ev->id);
        ab_trace_enter(ev->traceparent); /* this service's span of the event's trace */
        msg.event = ev;
        err = c->handler(c->handler_ud, &msg, reason, sizeof(reason));
        if (err && reason[0] == '\0')
            snprintf(reason, sizeof(reason), "%s", ab_err_name(err));
    } else {
        err = AB_ERR_INVALID; /* a bad envelope never gets better: dead-letter it */
    }
    bool finished = true;
    if (err != AB_OK && !ab_err_is_retriable(err)) {
        finished = dead_letter_message(c, &msg, reason);
        outcome = finished ? "dead_letter" : "dead_letter_failed";
    } else if (err != AB_OK) {
        ab_warn("kafka consumer %s: %s[%d]@%lld attempt %d failed, will retry: %s", c->group_id,
                msg.topic, (int)msg.partition, (long long)msg.offset, attempt, reason);
        outcome = "retry";
        finished = false;
    }
    if (finished)
        store_offset(c, rkm);
    ab_metric_inc(c->m_messages, (const char *const[]){ c->group_id, msg.topic, outcome, NULL }, 1);
    ab_metric_observe(c->m_duration, (const char *const[]){ c->group_id, msg.topic, NULL },
                      (double)(ab_monotonic_ms() - started) / 1000.0);
    ab_log_set_event_id(NULL);
    ab_trace_leave();
    ab_event_free(ev);
    return finished;
}

/* Hands messages whose backoff has passed to the handler again. */
static void run_due_retries(struct ab_consumer *c)
{
    int64_t now = ab_monotonic_ms();
    for (size_t i = 0; i < c->retry_count && !atomic_load(&c->stop);) {
        struct retry *r = &c->retries[i];
        if (r->due_ms > now) {
            i++;
            continue;
        }
        r->attempt++;
        if (handle(c, r->rkm, r->attempt)) {
            set_paused(c, r->rkm, false);
            drop_retry(c, r); /* moves the last record into slot i */
        } else {
            r->due_ms = ab_monotonic_ms() + backoff_ms(c, r->attempt);
            i++;
        }
    }
}

static void keep_for_retry(struct ab_consumer *c, rd_kafka_message_t *rkm)
{
    struct retry *grown = realloc(c->retries, (c->retry_count + 1) * sizeof(*grown));
    if (grown == NULL) {
        /* Dropping the message would let the next offset commit past it: out of memory
         * aborts (STYLE.md), the offset stays uncommitted, and a restart reads it again. */
        ab_error("kafka consumer %s: out of memory keeping a message for retry", c->group_id);
        abort();
    }
    c->retries = grown;
    c->retries[c->retry_count++] = (struct retry){ rkm, 1, ab_monotonic_ms() + backoff_ms(c, 1) };
    set_paused(c, rkm, true);
}

/* The next message within wait_ms, or NULL: none came, or an error did (logged). */
static rd_kafka_message_t *poll_message(struct ab_consumer *c, int wait_ms)
{
    rd_kafka_message_t *rkm = rd_kafka_consumer_poll(c->rk, wait_ms);
    if (rkm != NULL && rkm->err) {
        if (rkm->err != RD_KAFKA_RESP_ERR__PARTITION_EOF)
            ab_warn("kafka consumer %s: %s", c->group_id, rd_kafka_message_errstr(rkm));
        rd_kafka_message_destroy(rkm);
        return NULL;
    }
    return rkm;
}

static void *consume_loop(void *arg)
{
    struct ab_consumer *c = arg;
    while (!atomic_load(&c->stop)) {
        run_due_retries(c);
        rd_kafka_message_t *rkm = poll_message(c, 100);
        if (rkm == NULL)
            continue;
        /* A message of a partition waiting on a retry was fetched before the pause took
         * effect: drop it, it is fetched again after the kept message succeeds. */
        if (find_retry(c, rd_kafka_topic_name(rkm->rkt), rkm->partition) != NULL) {
            rd_kafka_message_destroy(rkm);
            continue;
        }
        if (handle(c, rkm, 1))
            rd_kafka_message_destroy(rkm);
        else
            keep_for_retry(c, rkm);
    }
    while (c->retry_count > 0)
        drop_retry(c, &c->retries[0]);
    /* Commits the stored offsets and leaves the group, so the partitions move at once. */
    rd_kafka_resp_err_t err = rd_kafka_consumer_close(c->rk);
    if (err)
        ab_warn("kafka consumer %s: close: %s", c->group_id, rd_kafka_err2str(err));
    atomic_store(&c->assigned, 0);
    return NULL;
}

/* ---- asynchronous mode ------------------------------------------------------------------ */

const struct ab_consumed *ab_consumer_job_msg(const struct ab_consumer_job *job)
{
    return &job->msg;
}

bool ab_consumer_job_abandoned(const struct ab_consumer_job *job)
{
    return atomic_load(&((struct ab_consumer_job *)job)->abandoned);
}

size_t ab_consumer_in_flight(const struct ab_consumer *c)
{
    return atomic_load(&((struct ab_consumer *)c)->tracked);
}

void ab_consumer_job_done(struct ab_consumer_job *job, enum ab_err err, const char *reason)
{
    struct ab_consumer *c = job->c;
    job->result = err;
    snprintf(job->reason, sizeof(job->reason), "%s",
             reason && reason[0] ? reason : ab_err_name(err));
    job->next_done = NULL;
    pthread_mutex_lock(&c->done_lock);
    if (c->done_tail != NULL)
        c->done_tail->next_done = job;
    else
        c->done_head = job;
    c->done_tail = job;
    pthread_mutex_unlock(&c->done_lock);
    rd_kafka_queue_yield(c->cq); /* the loop takes it now, not at its next poll timeout */
}

static void free_job(struct ab_consumer_job *job)
{
    rd_kafka_message_destroy(job->rkm);
    ab_event_free(job->ev);
    free(job);
}

static struct ab_consumer_job *take_done_list(struct ab_consumer *c)
{
    pthread_mutex_lock(&c->done_lock);
    struct ab_consumer_job *list = c->done_head;
    c->done_head = c->done_tail = NULL;
    pthread_mutex_unlock(&c->done_lock);
    return list;
}

static void set_all_paused(struct ab_consumer *c, const rd_kafka_topic_partition_list_t *parts,
                           bool paused)
{
    rd_kafka_topic_partition_list_t *copy = rd_kafka_topic_partition_list_copy(parts);
    rd_kafka_resp_err_t err = paused ? rd_kafka_pause_partitions(c->rk, copy)
                                     : rd_kafka_resume_partitions(c->rk, copy);
    if (err)
        ab_warn("kafka consumer %s: cannot %s partitions: %s", c->group_id,
                paused ? "pause" : "resume", rd_kafka_err2str(err));
    rd_kafka_topic_partition_list_destroy(copy);
}

/* Pauses every assigned partition while the jobs in hand are at max_in_flight (or while
 * draining), and resumes them below it. Resuming fetches from the position after the last
 * message taken, so nothing is skipped. */
static void set_full(struct ab_consumer *c, bool full)
{
    if (full == c->paused_all)
        return;
    rd_kafka_topic_partition_list_t *assigned = NULL;
    if (rd_kafka_assignment(c->rk, &assigned) == RD_KAFKA_RESP_ERR_NO_ERROR) {
        set_all_paused(c, assigned, full);
        rd_kafka_topic_partition_list_destroy(assigned);
    }
    c->paused_all = full;
}

static struct part *find_part(struct ab_consumer *c, const char *topic, int32_t partition,
                              size_t *index)
{
    for (size_t i = 0; i < c->part_count; i++) {
        struct part *p = c->parts[i];
        if (p->partition == partition && strcmp(p->topic, topic) == 0) {
            if (index != NULL)
                *index = i;
            return p;
        }
    }
    return NULL;
}

static struct part *get_part(struct ab_consumer *c, const char *topic, int32_t partition)
{
    struct part *p = find_part(c, topic, partition, NULL);
    if (p != NULL)
        return p;
    p = ab_xcalloc(1, sizeof(*p));
    p->topic = ab_xstrdup(topic);
    p->partition = partition;
    c->parts = ab_xrealloc(c->parts, (c->part_count + 1) * sizeof(*c->parts));
    c->parts[c->part_count++] = p;
    return p;
}

/* Forgets the jobs of the revoked partitions (parts NULL: of all): their next owner
 * handles the messages again. A running job stays the handler's until done, which then
 * only frees it. */
static void async_revoke(struct ab_consumer *c, const rd_kafka_topic_partition_list_t *parts)
{
    for (size_t i = 0; i < c->part_count;) {
        struct part *p = c->parts[i];
        bool revoked = parts == NULL;
        for (int k = 0; parts != NULL && k < parts->cnt && !revoked; k++)
            revoked = parts->elems[k].partition == p->partition &&
                      strcmp(parts->elems[k].topic, p->topic) == 0;
        if (!revoked) {
            i++;
            continue;
        }
        size_t abandoned = 0;
        for (size_t j = 0; j < p->count; j++) {
            struct ab_consumer_job *job = p->jobs[j];
            if (job->state == JOB_RUNNING) {
                job->part = NULL;
                atomic_store(&job->abandoned, true);
                abandoned++;
            } else {
                free_job(job);
            }
        }
        if (p->count > 0)
            ab_info("kafka consumer %s: %s[%d] left with %zu messages in hand (%zu still "
                    "running, abandoned)", c->group_id, p->topic, (int)p->partition, p->count,
                    abandoned);
        atomic_fetch_sub(&c->tracked, p->count);
        free(p->jobs);
        free(p->topic);
        free(p);
        c->parts[i] = c->parts[--c->part_count];
    }
    ab_metric_set(c->m_in_flight, (const char *const[]){ c->group_id, NULL },
                  (double)atomic_load(&c->tracked));
}

static bool same_key(const struct ab_consumer_job *a, const struct ab_consumer_job *b)
{
    return a->msg.key_len > 0 && a->msg.key_len == b->msg.key_len &&
           memcmp(a->msg.key, b->msg.key, a->msg.key_len) == 0;
}

static void start_job(struct ab_consumer *c, struct ab_consumer_job *job)
{
    job->state = JOB_RUNNING;
    job->started_ms = ab_monotonic_ms();
    ab_log_set_event_id(job->ev->id);
    ab_trace_enter(job->ev->traceparent); /* the start hook copies the span if it needs it */
    c->start(c->handler_ud, job);
    ab_trace_leave();
    ab_log_set_event_id(NULL);
}

/* Stores the offset past the partition's longest finished prefix and drops that prefix. */
static void advance(struct ab_consumer *c, struct part *p)
{
    size_t n = 0;
    while (n < p->count && p->jobs[n]->state == JOB_FINISHED)
        n++;
    if (n == 0)
        return;
    store_offset(c, p->jobs[n - 1]->rkm);
    for (size_t i = 0; i < n; i++)
        free_job(p->jobs[i]);
    memmove(p->jobs, p->jobs + n, (p->count - n) * sizeof(*p->jobs));
    p->count -= n;
    atomic_fetch_sub(&c->tracked, n);
}

/* Takes a job's result: finished, retried after a backoff, or dead-lettered. */
static void settle(struct ab_consumer *c, struct ab_consumer_job *job)
{
    const char *outcome = "done";
    enum ab_err err = job->result;
    struct ab_consumed *msg = &job->msg;
    if (err == AB_OK) {
        job->state = JOB_FINISHED;
    } else if (ab_err_is_retriable(err) && !job->dead_letter_due) {
        ab_warn("kafka consumer %s: %s[%d]@%lld attempt %d failed, will retry: %s", c->group_id,
                msg->topic, (int)msg->partition, (long long)msg->offset, msg->attempt,
                job->reason);
        outcome = "retry";
        job->state = JOB_BACKOFF;
        job->due_ms = ab_monotonic_ms() + backoff_ms(c, msg->attempt);
    } else if (dead_letter_message(c, msg, job->reason)) {
        outcome = "dead_letter";
        job->state = JOB_FINISHED;
    } else {
        outcome = "dead_letter_failed";
        job->dead_letter_due = true;
        job->state = JOB_BACKOFF;
        job->due_ms = ab_monotonic_ms() + backoff_ms(c, msg->attempt++);
    }
    ab_metric_inc(c->m_messages, (const char *const[]){ c->group_id, msg->topic, outcome, NULL },
                  1);
    if (job->started_ms > 0)
        ab_metric_observe(c->m_duration, (const char *const[]){ c->group_id, msg->topic, NULL },
                          (double)(ab_monotonic_ms() - job->started_ms) / 1000.0);
    if (job->state != JOB_FINISHED)
        return;
    struct part *p = job->part;
    size_t i = 0;
    while (p->jobs[i] != job)
        i++;
    /* The next message with the same key, if one waits, goes now. */
    for (size_t k = i + 1; k < p->count; k++) {
        if (same_key(p->jobs[k], job)) {
            if (p->jobs[k]->state == JOB_WAITING)
                start_job(c, p->jobs[k]);
            break;
        }
    }
    advance(c, p);
}

static void settle_done(struct ab_consumer *c)
{
    struct ab_consumer_job *job = take_done_list(c);
    while (job != NULL) {
        struct ab_consumer_job *next = job->next_done;
        if (job->part == NULL)
            free_job(job); /* abandoned: its partition has moved on without it */
        else
            settle(c, job);
        job = next;
    }
}

/* Hands over again the jobs whose backoff has passed (or dead-letters them again).
 * @returns the milliseconds until the next one is due, at most 100. */
static int run_backoffs(struct ab_consumer *c)
{
    int64_t now = ab_monotonic_ms(), wait = 100;
    for (size_t i = 0; i < c->part_count; i++) {
        struct part *p = c->parts[i];
        for (size_t j = 0; j < p->count; j++) {
            struct ab_consumer_job *job = p->jobs[j];
            if (job->state != JOB_BACKOFF)
                continue;
            if (job->due_ms > now) {
                if (job->due_ms - now < wait)
                    wait = job->due_ms - now;
                continue;
            }
            if (job->dead_letter_due) {
                job->state = JOB_RUNNING; /* settle tries the dead letter again */
                settle(c, job);
                return 0; /* settle may have reshaped p: look again from the top */
            }
            job->msg.attempt++;
            start_job(c, job);
        }
    }
    return (int)wait;
}

/* Takes a message into its partition's jobs and hands it over, unless its key is busy. */
static void accept_message(struct ab_consumer *c, rd_kafka_message_t *rkm)
{
    struct ab_consumer_job *job = ab_xcalloc(1, sizeof(*job));
    job->c = c;
    job->rkm = rkm;
    job->msg = consumed_of(rkm, 1);
    struct part *p = get_part(c, job->msg.topic, rkm->partition);
    job->part = p;
    if (p->count == p->cap) {
        p->cap = p->cap ? p->cap * 2 : 16;
        p->jobs = ab_xrealloc(p->jobs, p->cap * sizeof(*p->jobs));
    }
    p->jobs[p->count++] = job;
    atomic_fetch_add(&c->tracked, 1);
    if (ab_event_parse(rkm->payload, rkm->len, &job->ev, job->reason, sizeof(job->reason)) !=
        AB_OK) {
        job->result = AB_ERR_INVALID; /* a bad envelope never gets better: dead-letter it */
        settle(c, job);
        return;
    }
    job->msg.event = job->ev;
    for (size_t i = 0; !c->unordered_keys && i + 1 < p->count; i++) {
        if (p->jobs[i]->state != JOB_FINISHED && same_key(p->jobs[i], job)) {
            job->state = JOB_WAITING;
            return;
        }
    }
    start_job(c, job);
}

static void *consume_loop_async(void *arg)
{
    struct ab_consumer *c = arg;
    int64_t drain_until = -1;
    for (;;) {
        settle_done(c);
        int wait = run_backoffs(c);
        if (atomic_load(&c->stop)) {
            if (drain_until < 0) {
                drain_until = ab_monotonic_ms() + c->drain_timeout_ms;
                set_full(c, true);
                ab_info("kafka consumer %s: stopping; %zu messages in hand", c->group_id,
                        atomic_load(&c->tracked));
            }
            if (atomic_load(&c->tracked) == 0 || ab_monotonic_ms() >= drain_until)
                break;
        } else {
            set_full(c, atomic_load(&c->tracked) >= c->max_in_flight);
        }
        ab_metric_set(c->m_in_flight, (const char *const[]){ c->group_id, NULL },
                      (double)atomic_load(&c->tracked));
        rd_kafka_message_t *rkm = poll_message(c, wait);
        if (rkm == NULL)
            continue;
        if (drain_until >= 0) {
            /* Fetched before the pause took hold: its offset is never stored (it is past
             * everything in hand), so the next owner reads it. */
            rd_kafka_message_destroy(rkm);
        } else {
            accept_message(c, rkm);
        }
    }
    if (atomic_load(&c->tracked) > 0)
        ab_warn("kafka consumer %s: %zu messages still in hand after %d ms; their partitions' "
                "next owners handle them again", c->group_id, atomic_load(&c->tracked),
                c->drain_timeout_ms);
    async_revoke(c, NULL);
    rd_kafka_resp_err_t err = rd_kafka_consumer_close(c->rk);
    if (err)
        ab_warn("kafka consumer %s: close: %s", c->group_id, rd_kafka_err2str(err));
    atomic_store(&c->assigned, 0);
    return NULL;
}

enum ab_err ab_consumer_start(struct ab_consumer *c)
{
    if (pthread_create(&c->thread, NULL, c->start ? consume_loop_async : consume_loop, c) != 0)
        return AB_ERR_INTERNAL;
    c->started = true;
    return AB_OK;
}

void ab_consumer_stop(struct ab_consumer *c)
{
    if (c == NULL || !c->started)
        return;
    atomic_store(&c->stop, true);
    pthread_join(c->thread, NULL);
    c->started = false;
    if (c->quiesce != NULL) {
        c->quiesce(c->handler_ud);
        for (struct ab_consumer_job *job = take_done_list(c), *next; job != NULL; job = next) {
            next = job->next_done;
            free_job(job); /* abandoned when the consumer closed */
        }
    }
}

void ab_consumer_free(struct ab_consumer *c)
{
    if (c == NULL)
        return;
    ab_consumer_stop(c);
    if (c->start != NULL)
        async_revoke(c, NULL); /* a consumer never started may hold nothing; be sure */
    free(c->parts);
    if (c->cq)
        rd_kafka_queue_destroy(c->cq);
    if (c->rk)
        rd_kafka_destroy(c->rk);
    forget_lag(c, NULL);
    free(c->lag_series);
    pthread_mutex_destroy(&c->done_lock);
    free(c->retries);
    free(c->group_id);
    free(c->prefix);
    for (size_t i = 0; i < c->from_end_count; i++)
        free(c->from_end[i]);
    free(c->from_end);
    free(c);
}

bool ab_consumer_ready(const struct ab_consumer *c)
{
    return atomic_load(&((struct ab_consumer *)c)->assigned) > 0;
}

int ab_consumer_assigned_count(const struct ab_consumer *c)
{
    return atomic_load(&((struct ab_consumer *)c)->assigned);
}

rd_kafka_t *ab_consumer_handle(const struct ab_consumer *c)
{
    return c->rk;
}
