/* The idempotent producer. Callers block on a per-send waiter; one background thread runs
 * rd_kafka_poll, which is where librdkafka calls the delivery-report callback that wakes
 * them. Waiters wait without a deadline of their own: librdkafka guarantees a report for
 * every message within message.timeout.ms, and the waiter lives on the caller's stack, so
 * returning before the report would leave the callback writing to a dead frame. */
#include "common/kafka_producer.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/log.h"
#include "common/metrics.h"
#include "common/util.h"

struct ab_producer {
    rd_kafka_t *rk;
    char *prefix;
    pthread_t poller;
    atomic_bool stop;
    atomic_bool fatal;
    pthread_mutex_t lock;
    pthread_cond_t delivered;
    struct ab_metric *m_produced; /* by topic and outcome */
};

struct send_waiter {
    bool done;
    rd_kafka_resp_err_t err;
    rd_kafka_msg_status_t status;
};

static void on_delivery(rd_kafka_t *rk, const rd_kafka_message_t *rkm, void *opaque)
{
    struct ab_producer *p = opaque;
    struct send_waiter *w = rkm->_private;
    (void)rk;
    if (w == NULL)
        return;
    pthread_mutex_lock(&p->lock);
    w->err = rkm->err;
    w->status = rd_kafka_message_status(rkm);
    w->done = true;
    pthread_cond_broadcast(&p->delivered);
    pthread_mutex_unlock(&p->lock);
}

static void on_error(rd_kafka_t *rk, int err, const char *reason, void *opaque)
{
    struct ab_producer *p = opaque;
    if (err == RD_KAFKA_RESP_ERR__FATAL) {
        char why[512];
        rd_kafka_fatal_error(rk, why, sizeof(why));
        atomic_store(&p->fatal, true);
        ab_error("kafka producer fatal error: %s", why);
        return;
    }
    /* Transport errors repeat while a broker is down; librdkafka retries on its own. */
    if (err == RD_KAFKA_RESP_ERR__ALL_BROKERS_DOWN)
        ab_warn("kafka producer: all brokers down (%s)", reason);
    else
        ab_debug("kafka producer: %s: %s", rd_kafka_err2name(err), reason);
}

static void *poll_loop(void *arg)
{
    struct ab_producer *p = arg;
    while (!atomic_load(&p->stop))
        rd_kafka_poll(p->rk, 100);
    return NULL;
}

enum ab_err ab_producer_new(const struct ab_config *cfg, const char *client_id,
                            struct ab_producer **out, char *errstr, size_t size)
{
    char timeout[32], why[512];
    *out = NULL;
    rd_kafka_conf_t *conf = ab_kafka_conf_new(cfg, client_id, errstr, size);
    if (conf == NULL)
        return AB_ERR_CONFIG;
    snprintf(timeout, sizeof(timeout), "%lld", ab_config_int(cfg, AB_OPT_KAFKA_PRODUCE_TIMEOUT_MS));
    /* Batching against latency is the operator's to tune in kafka.properties (linger.ms 0
     * saves each send its 5 ms wait for company); the delivery guarantees are not theirs to
     * weaken, so those are set after, over whatever kafka.properties said. */
    const json_t *props = ab_config_object(cfg, AB_OPT_KAFKA_PROPERTIES);
    bool linger_set = json_object_get(props, "linger.ms") != NULL ||
                      json_object_get(props, "queue.buffering.max.ms") != NULL;
    bool codec_set = json_object_get(props, "compression.codec") != NULL ||
                     json_object_get(props, "compression.type") != NULL;
    if ((!linger_set && ab_kafka_conf_set(conf, "linger.ms", "5", errstr, size)) ||
        (!codec_set && ab_kafka_conf_set(conf, "compression.codec", "lz4", errstr, size)) ||
        ab_kafka_conf_set(conf, "enable.idempotence", "true", errstr, size) ||
        ab_kafka_conf_set(conf, "acks", "all", errstr, size) ||
        ab_kafka_conf_set(conf, "message.timeout.ms", timeout, errstr, size)) {
        rd_kafka_conf_destroy(conf);
        return AB_ERR_CONFIG;
    }
    struct ab_producer *p = ab_xcalloc(1, sizeof(*p));
    pthread_mutex_init(&p->lock, NULL);
    pthread_cond_init(&p->delivered, NULL);
    p->prefix = ab_xstrdup(ab_config_str(cfg, AB_OPT_KAFKA_TOPIC_PREFIX));
    p->m_produced = ab_metrics_counter(ab_metrics_default(), "agentbus_kafka_produced_total",
                                       "messages sent to Kafka, by outcome (acked or the error)",
                                       (const char *const[]){ "topic", "outcome", NULL });
    rd_kafka_conf_set_opaque(conf, p);
    rd_kafka_conf_set_dr_msg_cb(conf, on_delivery);
    rd_kafka_conf_set_error_cb(conf, on_error);
    p->rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, why, sizeof(why));
    if (p->rk == NULL) {
        snprintf(errstr, size, "kafka producer: %s", why);
        rd_kafka_conf_destroy(conf);
        free(p->prefix);
        free(p);
        return AB_ERR_CONFIG;
    }
    if (pthread_create(&p->poller, NULL, poll_loop, p) != 0) {
        rd_kafka_destroy(p->rk);
        free(p->prefix);
        free(p);
        snprintf(errstr, size, "kafka producer: cannot start its thread");
        return AB_ERR_INTERNAL;
    }
    *out = p;
    return AB_OK;
}

void ab_producer_free(struct ab_producer *p, int flush_timeout_ms)
{
    if (p == NULL)
        return;
    if (ab_producer_flush(p, flush_timeout_ms) != AB_OK)
        ab_warn("kafka producer: %d messages not acknowledged at shutdown", rd_kafka_outq_len(p->rk));
    atomic_store(&p->stop, true);
    pthread_join(p->poller, NULL);
    rd_kafka_destroy(p->rk);
    pthread_cond_destroy(&p->delivered);
    pthread_mutex_destroy(&p->lock);
    free(p->prefix);
    free(p);
}

/* Queues one message whose delivery report will land in *w. */
static enum ab_err enqueue(struct ab_producer *p, const char *topic, const void *key,
                           size_t key_len, const void *value, size_t value_len,
                           const struct ab_kafka_header *headers, size_t header_count,
                           struct send_waiter *w, char *errstr, size_t size)
{
    rd_kafka_headers_t *hdrs = header_count ? rd_kafka_headers_new(header_count) : NULL;
    for (size_t i = 0; i < header_count; i++)
        rd_kafka_header_add(hdrs, headers[i].name, -1, headers[i].value, (ssize_t)headers[i].len);

    rd_kafka_resp_err_t err;
    for (;;) {
        err = rd_kafka_producev(p->rk, RD_KAFKA_V_TOPIC(topic),
                                RD_KAFKA_V_KEY((void *)key, key ? key_len : 0),
                                RD_KAFKA_V_VALUE((void *)value, value_len),
                                RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
                                RD_KAFKA_V_HEADERS(hdrs), RD_KAFKA_V_OPAQUE(w), RD_KAFKA_V_END);
        if (err != RD_KAFKA_RESP_ERR__QUEUE_FULL)
            break;
        /* The local queue is full: the poll thread drains it as acks arrive. */
        usleep(10 * 1000);
    }
    if (err != RD_KAFKA_RESP_ERR_NO_ERROR) {
        if (hdrs != NULL) /* not taken by librdkafka on failure; destroy(NULL) crashes */
            rd_kafka_headers_destroy(hdrs);
        snprintf(errstr, size, "kafka produce to %s: %s", topic, rd_kafka_err2str(err));
        return ab_kafka_err(err);
    }
    return AB_OK;
}

/* Waits for the delivery report of a queued message and says what it was. */
static enum ab_err await(struct ab_producer *p, const char *topic, struct send_waiter *w,
                         char *errstr, size_t size)
{
    pthread_mutex_lock(&p->lock);
    while (!w->done)
        pthread_cond_wait(&p->delivered, &p->lock);
    pthread_mutex_unlock(&p->lock);
    ab_metric_inc(p->m_produced,
                  (const char *const[]){ topic,
                                         w->err ? ab_err_name(ab_kafka_err(w->err)) : "acked",
                                         NULL },
                  1);
    if (w->err != RD_KAFKA_RESP_ERR_NO_ERROR) {
        snprintf(errstr, size, "kafka delivery to %s: %s%s", topic, rd_kafka_err2str(w->err),
                 w->status == RD_KAFKA_MSG_STATUS_POSSIBLY_PERSISTED ? " (may have been written)"
                                                                     : "");
        return ab_kafka_err(w->err);
    }
    return AB_OK;
}

enum ab_err ab_producer_send(struct ab_producer *p, const char *topic, const void *key,
                             size_t key_len, const void *value, size_t value_len,
                             const struct ab_kafka_header *headers, size_t header_count,
                             char *errstr, size_t size)
{
    struct send_waiter w = { 0 };
    enum ab_err err = enqueue(p, topic, key, key_len, value, value_len, headers, header_count,
                              &w, errstr, size);
    return err ? err : await(p, topic, &w, errstr, size);
}

/* An event's value, headers and topic name, ready to queue. @returns AB_OK or
 * AB_ERR_INVALID (errstr says why); on AB_OK the caller frees *value. */
static enum ab_err prepare_event(struct ab_producer *p, enum ab_topic topic,
                                 const struct ab_event *ev, char name[256], char **value,
                                 size_t *len, struct ab_kafka_header headers[3], size_t *count,
                                 char *errstr, size_t size)
{
    if (ab_topic_name(p->prefix, topic, name, 256) != 0) {
        snprintf(errstr, size, "topic name too long");
        return AB_ERR_INVALID;
    }
    *value = ab_event_serialize(ev, len);
    if (*value == NULL) {
        snprintf(errstr, size, "event %s cannot be serialised", ev->id);
        return AB_ERR_INVALID;
    }
    headers[0] = (struct ab_kafka_header){ "ce_id", ev->id, strlen(ev->id) };
    headers[1] = (struct ab_kafka_header){ "ce_type", ev->type, strlen(ev->type) };
    headers[2] = (struct ab_kafka_header){ "traceparent", ev->traceparent,
                                           ev->traceparent ? strlen(ev->traceparent) : 0 };
    *count = ev->traceparent ? 3 : 2;
    return AB_OK;
}

enum ab_err ab_producer_send_event(struct ab_producer *p, enum ab_topic topic, const char *key,
                                   const struct ab_event *ev, char *errstr, size_t size)
{
    struct ab_outgoing_event one = { topic, key, ev, AB_OK };
    return ab_producer_send_events(p, &one, 1, errstr, size);
}

enum ab_err ab_producer_send_events(struct ab_producer *p, struct ab_outgoing_event *events,
                                    size_t n, char *errstr, size_t size)
{
    enum { ON_STACK = 16 };
    struct send_waiter w_stack[ON_STACK], *w = w_stack;
    char names_stack[ON_STACK][256], (*names)[256] = names_stack;
    bool queued_stack[ON_STACK], *queued = queued_stack;
    enum ab_err first = AB_OK;
    char why[512];
    if (n > ON_STACK) { /* a notifier's batch of outcomes: hundreds */
        w = ab_xcalloc(n, sizeof(*w));
        names = ab_xcalloc(n, sizeof(*names));
        queued = ab_xcalloc(n, sizeof(*queued));
    }
    /* All queued first, then all awaited: one round trip to the broker for the batch. */
    for (size_t i = 0; i < n; i++) {
        struct ab_kafka_header headers[3];
        char *value = NULL;
        size_t len = 0, count = 0;
        memset(&w[i], 0, sizeof(w[i]));
        const char *key = events[i].key;
        events[i].err = prepare_event(p, events[i].topic, events[i].ev, names[i], &value, &len,
                                      headers, &count, why, sizeof(why));
        if (events[i].err == AB_OK)
            events[i].err = enqueue(p, names[i], key, key ? strlen(key) : 0, value, len, headers,
                                    count, &w[i], why, sizeof(why));
        free(value);
        queued[i] = events[i].err == AB_OK;
        if (events[i].err != AB_OK && first == AB_OK) {
            first = events[i].err;
            snprintf(errstr, size, "%s", why);
        }
    }
    for (size_t i = 0; i < n; i++) {
        if (!queued[i])
            continue; /* never handed to librdkafka: no report will come */
        events[i].err = await(p, names[i], &w[i], why, sizeof(why));
        if (events[i].err != AB_OK && first == AB_OK) {
            first = events[i].err;
            snprintf(errstr, size, "%s", why);
        }
    }
    if (n > ON_STACK) {
        free(w);
        free(names);
        free(queued);
    }
    return first;
}

enum ab_err ab_producer_flush(struct ab_producer *p, int timeout_ms)
{
    /* rd_kafka_flush polls too; the poll thread may serve the reports meanwhile: harmless. */
    rd_kafka_resp_err_t err = rd_kafka_flush(p->rk, timeout_ms);
    return err == RD_KAFKA_RESP_ERR_NO_ERROR ? AB_OK : AB_ERR_TIMEOUT;
}

bool ab_producer_fatal(const struct ab_producer *p)
{
    return atomic_load(&((struct ab_producer *)p)->fatal);
}

const char *ab_producer_topic_prefix(const struct ab_producer *p)
{
    return p->prefix;
}

rd_kafka_t *ab_producer_handle(const struct ab_producer *p)
{
    return p->rk;
}
