/* Component tests of common/kafka_producer.c and common/kafka_consumer.c against
 * librdkafka's in-process mock cluster: real protocol, real consumer groups and offset
 * commits, and broker faults on demand. Each test runs in its own process with its own
 * cluster, topic prefix and group id. */
#include "test.h"

#include "common/config.h"
#include "common/kafka_consumer.h"
#include "common/kafka_producer.h"
#include "common/log.h"
#include "common/util.h"

#include <librdkafka/rdkafka_mock.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <unistd.h>

#define MAX_SEEN 512

struct kenv {
    rd_kafka_t *mock_rk; /* owns the mock cluster */
    rd_kafka_mock_cluster_t *mc;
    char prefix[96];
    char topic[256]; /* prefix + agentbus.ingress */
    char dlq[256];   /* its dead-letter topic */
    struct ab_config *cfg;
    struct ab_producer *producer;
};

static bool verbose(void)
{
    return getenv("AGENTBUS_TEST_VERBOSE") != NULL;
}

/* Starts a one-broker mock cluster with the ingress topic (partitions) and its DLQ, loads a
 * dispatcher configuration pointing at it (plus extra_env, NULL-terminated), and creates
 * the producer. */
static void kenv_setup(struct kenv *e, const char *test, int partitions,
                       const char *const *extra_env)
{
    char errstr[512];
    memset(e, 0, sizeof(*e));
    ab_log_init("unit", verbose() ? AB_LOG_DEBUG : AB_LOG_ERROR);
    ab_log_set_output(stderr);

    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    rd_kafka_conf_set(conf, "client.id", "MOCK", NULL, 0);
    if (!verbose())
        rd_kafka_conf_set(conf, "log_level", "2", NULL, 0);
    e->mock_rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof(errstr));
    REQUIRE(e->mock_rk != NULL);
    e->mc = rd_kafka_mock_cluster_new(e->mock_rk, 1);
    REQUIRE(e->mc != NULL);

    snprintf(e->prefix, sizeof(e->prefix), "t%d.%s.", (int)getpid(), test);
    REQUIRE(ab_topic_name(e->prefix, AB_TOPIC_INGRESS, e->topic, sizeof(e->topic)) == 0);
    REQUIRE(ab_topic_dlq_name(e->prefix, e->topic, e->dlq, sizeof(e->dlq)) == 0);
    REQUIRE(rd_kafka_mock_topic_create(e->mc, e->topic, partitions, 1) == 0);
    REQUIRE(rd_kafka_mock_topic_create(e->mc, e->dlq, 1, 1) == 0);

    char bootstrap[512], prefix[160];
    snprintf(bootstrap, sizeof(bootstrap), "KAFKA_BOOTSTRAP=%s",
             rd_kafka_mock_cluster_bootstraps(e->mc));
    snprintf(prefix, sizeof(prefix), "AGENTBUS_KAFKA_TOPIC_PREFIX=%s", e->prefix);
    const char *envp[32] = {
        bootstrap,
        "DATABASE_URL=postgresql://x@127.0.0.1/x",
        prefix,
        "AGENTBUS_KAFKA_RETRY_BACKOFF_MAX_MS=400",
        "AGENTBUS_KAFKA_SESSION_TIMEOUT_MS=6000",
    };
    size_t n = 5;
    bool own_properties = false;
    for (size_t i = 0; extra_env != NULL && extra_env[i] != NULL; i++)
        own_properties |= strncmp(extra_env[i], "AGENTBUS_KAFKA_PROPERTIES=", 26) == 0;
    /* librdkafka logs to stderr; keep test output readable unless asked. */
    if (!own_properties)
        envp[n++] = verbose() ? "AGENTBUS_KAFKA_PROPERTIES={}"
                              : "AGENTBUS_KAFKA_PROPERTIES={\"log_level\":2}";
    for (size_t i = 0; extra_env != NULL && extra_env[i] != NULL && n < 31; i++)
        envp[n++] = extra_env[i];
    envp[n] = NULL;
    enum ab_err err = ab_config_load(AB_SVC_DISPATCHER, (char *const *)envp, &e->cfg, errstr,
                                     sizeof(errstr));
    if (err != AB_OK)
        fprintf(stderr, "    config: %s\n", errstr);
    REQUIRE(err == AB_OK);
    err = ab_producer_new(e->cfg, "test-producer", &e->producer, errstr, sizeof(errstr));
    if (err != AB_OK)
        fprintf(stderr, "    producer: %s\n", errstr);
    REQUIRE(err == AB_OK);
}

static void kenv_teardown(struct kenv *e)
{
    ab_producer_free(e->producer, 2000);
    ab_config_free(e->cfg);
    rd_kafka_mock_cluster_destroy(e->mc);
    rd_kafka_destroy(e->mock_rk);
}

static struct ab_event *make_event(int n)
{
    return ab_event_new("agentbus.test.event", "/unit-test", NULL, json_pack("{s:i}", "n", n));
}

/* Sends event n with key and keeps its id in id_out (AB_UUID_LEN + 1 bytes). */
static enum ab_err send_event(struct kenv *e, const char *key, int n, char *id_out)
{
    char errstr[512];
    struct ab_event *ev = make_event(n);
    REQUIRE(ev != NULL);
    enum ab_err err = ab_producer_send_event(e->producer, AB_TOPIC_INGRESS, key, ev, errstr,
                                             sizeof(errstr));
    if (err != AB_OK)
        fprintf(stderr, "    send_event: %s\n", errstr);
    if (id_out != NULL)
        snprintf(id_out, AB_UUID_LEN + 1, "%s", ev->id);
    ab_event_free(ev);
    return err;
}

/* A message read back, copied: librdkafka's handle cannot be destroyed while its messages
 * live. */
struct msg {
    char *key; /* NULL when the message had none */
    size_t key_len;
    char *value;
    size_t len;
    int32_t partition;
    int64_t offset;
    rd_kafka_headers_t *headers; /* owned (detached from the message), may be NULL */
};

/* Reads up to max messages of topic (partitions 0..partitions-1, from the beginning) with a
 * plain assigned consumer, until `want` arrived or timeout_ms passed. @returns the count;
 * the caller frees out[] with free_msgs. */
static int read_topic(const struct kenv *e, const char *topic, int partitions, struct msg *out,
                      int max, int want, int timeout_ms)
{
    char errstr[512];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    rd_kafka_conf_set(conf, "bootstrap.servers", rd_kafka_mock_cluster_bootstraps(e->mc), NULL,
                      0);
    rd_kafka_conf_set(conf, "group.id", "test-reader", NULL, 0);
    rd_kafka_conf_set(conf, "enable.auto.commit", "false", NULL, 0);
    if (!verbose())
        rd_kafka_conf_set(conf, "log_level", "2", NULL, 0);
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, errstr, sizeof(errstr));
    REQUIRE(rk != NULL);
    rd_kafka_poll_set_consumer(rk);
    rd_kafka_topic_partition_list_t *parts = rd_kafka_topic_partition_list_new(partitions);
    for (int i = 0; i < partitions; i++)
        rd_kafka_topic_partition_list_add(parts, topic, i)->offset = RD_KAFKA_OFFSET_BEGINNING;
    REQUIRE(rd_kafka_assign(rk, parts) == RD_KAFKA_RESP_ERR_NO_ERROR);
    rd_kafka_topic_partition_list_destroy(parts);
    int n = 0;
    int64_t deadline = ab_monotonic_ms() + timeout_ms;
    while (n < want && n < max && ab_monotonic_ms() < deadline) {
        rd_kafka_message_t *rkm = rd_kafka_consumer_poll(rk, 100);
        if (rkm == NULL)
            continue;
        if (rkm->err == RD_KAFKA_RESP_ERR_NO_ERROR) {
            struct msg *m = &out[n++];
            memset(m, 0, sizeof(*m));
            if (rkm->key != NULL) {
                m->key = malloc(rkm->key_len + 1);
                memcpy(m->key, rkm->key, rkm->key_len);
                m->key[rkm->key_len] = '\0';
                m->key_len = rkm->key_len;
            }
            m->value = malloc(rkm->len + 1);
            if (rkm->len)
                memcpy(m->value, rkm->payload, rkm->len);
            m->value[rkm->len] = '\0';
            m->len = rkm->len;
            m->partition = rkm->partition;
            m->offset = rkm->offset;
            if (rd_kafka_message_detach_headers(rkm, &m->headers) != RD_KAFKA_RESP_ERR_NO_ERROR)
                m->headers = NULL;
        }
        rd_kafka_message_destroy(rkm);
    }
    rd_kafka_consumer_close(rk);
    rd_kafka_destroy(rk);
    return n;
}

static void free_msgs(struct msg *msgs, int n)
{
    for (int i = 0; i < n; i++) {
        free(msgs[i].key);
        free(msgs[i].value);
        if (msgs[i].headers)
            rd_kafka_headers_destroy(msgs[i].headers);
    }
}

/* A header's value as a string (copied into out), or NULL when absent. */
static const char *header(const struct msg *m, const char *name, char *out, size_t size)
{
    const void *value = NULL;
    size_t len = 0;
    if (m->headers == NULL ||
        rd_kafka_header_get_last(m->headers, name, &value, &len) != RD_KAFKA_RESP_ERR_NO_ERROR)
        return NULL;
    snprintf(out, size, "%.*s", (int)len, value ? (const char *)value : "");
    return out;
}

/* ---- a handler that records what it sees ------------------------------------------ */

struct seen {
    char id[AB_UUID_LEN + 1];
    int32_t partition;
    int64_t offset;
    int attempt;
    enum ab_err result;
};

struct recorder {
    pthread_mutex_t lock;
    struct seen items[MAX_SEEN];
    int count;
    /* Behaviour, set before the consumer starts (blocked may change while it runs). */
    char fail_id[AB_UUID_LEN + 1]; /* AB_ERR_UNAVAILABLE while attempt <= fail_attempts */
    int fail_attempts;
    char invalid_id[AB_UUID_LEN + 1]; /* AB_ERR_INVALID */
    char block_id[AB_UUID_LEN + 1];   /* AB_ERR_UNAVAILABLE while blocked is set */
    atomic_bool blocked;
    atomic_bool block_all; /* every event: AB_ERR_UNAVAILABLE while set */
};

static void recorder_init(struct recorder *r)
{
    memset(r, 0, sizeof(*r));
    pthread_mutex_init(&r->lock, NULL);
}

static enum ab_err record_handler(void *ud, const struct ab_consumed *msg, char *reason,
                                  size_t reason_size)
{
    struct recorder *r = ud;
    const char *id = msg->event->id;
    enum ab_err result = AB_OK;
    if (r->fail_id[0] && strcmp(id, r->fail_id) == 0 && msg->attempt <= r->fail_attempts)
        result = AB_ERR_UNAVAILABLE;
    else if (r->invalid_id[0] && strcmp(id, r->invalid_id) == 0) {
        result = AB_ERR_INVALID;
        snprintf(reason, reason_size, "the test rejects %s", id);
    } else if (r->block_id[0] && strcmp(id, r->block_id) == 0 && atomic_load(&r->blocked))
        result = AB_ERR_UNAVAILABLE;
    else if (atomic_load(&r->block_all))
        result = AB_ERR_UNAVAILABLE;
    pthread_mutex_lock(&r->lock);
    if (r->count < MAX_SEEN) {
        struct seen *s = &r->items[r->count++];
        snprintf(s->id, sizeof(s->id), "%s", id);
        s->partition = msg->partition;
        s->offset = msg->offset;
        s->attempt = msg->attempt;
        s->result = result;
    }
    pthread_mutex_unlock(&r->lock);
    return result;
}

static int recorder_count(struct recorder *r)
{
    pthread_mutex_lock(&r->lock);
    int n = r->count;
    pthread_mutex_unlock(&r->lock);
    return n;
}

/* How many handler calls saw id (with result AB_OK when ok_only). */
static int times_seen(struct recorder *r, const char *id, bool ok_only)
{
    int n = 0;
    pthread_mutex_lock(&r->lock);
    for (int i = 0; i < r->count; i++)
        if (strcmp(r->items[i].id, id) == 0 && (!ok_only || r->items[i].result == AB_OK))
            n++;
    pthread_mutex_unlock(&r->lock);
    return n;
}

static bool wait_count(struct recorder *r, int n, int timeout_ms)
{
    int64_t deadline = ab_monotonic_ms() + timeout_ms;
    while (recorder_count(r) < n) {
        if (ab_monotonic_ms() > deadline)
            return false;
        usleep(20 * 1000);
    }
    return true;
}

static struct ab_consumer *new_consumer(struct kenv *e, const char *group, struct recorder *r)
{
    char errstr[512];
    static const enum ab_topic topics[] = { AB_TOPIC_INGRESS };
    struct ab_consumer_options opts = {
        .group_id = group,
        .client_id = "test-consumer",
        .topics = topics,
        .topic_count = 1,
        .handler = record_handler,
        .handler_ud = r,
    };
    struct ab_consumer *c = NULL;
    enum ab_err err = ab_consumer_new(e->cfg, e->producer, &opts, &c, errstr, sizeof(errstr));
    if (err != AB_OK)
        fprintf(stderr, "    consumer: %s\n", errstr);
    REQUIRE(err == AB_OK);
    return c;
}

static struct ab_consumer *start_consumer(struct kenv *e, const char *group, struct recorder *r)
{
    struct ab_consumer *c = new_consumer(e, group, r);
    REQUIRE(ab_consumer_start(c) == AB_OK);
    return c;
}

static void group_name(const struct kenv *e, char *out, size_t size)
{
    snprintf(out, size, "%sgroup", e->prefix);
}

/* ---- producer ------------------------------------------------------------------------ */

TEST(kafka_send_event_acked_and_readable)
{
    struct kenv e;
    char id[AB_UUID_LEN + 1], errstr[512], buf[256];
    kenv_setup(&e, "send", 1, NULL);

    CHECK_INT_EQ(send_event(&e, "key-1", 1, id), AB_OK);

    /* With a slow broker the send blocks for the produce round trip: it waits for the ack
     * instead of returning when the message is queued. */
    struct ab_event *ev = make_event(2);
    ab_event_set_traceparent(ev, "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01");
    rd_kafka_mock_broker_set_rtt(e.mc, 1, 600);
    int64_t t0 = ab_monotonic_ms();
    CHECK_INT_EQ(ab_producer_send_event(e.producer, AB_TOPIC_INGRESS, NULL, ev, errstr,
                                        sizeof(errstr)),
                 AB_OK);
    int64_t elapsed = ab_monotonic_ms() - t0;
    CHECK(elapsed >= 550);
    rd_kafka_mock_broker_set_rtt(e.mc, 1, 0);

    struct msg msgs[4];
    int n = read_topic(&e, e.topic, 1, msgs, 4, 2, 10000);
    REQUIRE(n == 2);
    CHECK_STR_EQ(header(&msgs[0], "ce_id", buf, sizeof(buf)), id);
    CHECK_STR_EQ(header(&msgs[0], "ce_type", buf, sizeof(buf)), "agentbus.test.event");
    CHECK(header(&msgs[0], "traceparent", buf, sizeof(buf)) == NULL);
    CHECK_INT_EQ(msgs[0].key_len, 5);
    CHECK(msgs[0].key_len == 5 && memcmp(msgs[0].key, "key-1", 5) == 0);
    struct ab_event *parsed = NULL;
    CHECK_INT_EQ(ab_event_parse(msgs[0].value, msgs[0].len, &parsed, errstr, sizeof(errstr)),
                 AB_OK);
    if (parsed != NULL) {
        CHECK_STR_EQ(parsed->id, id);
        CHECK_INT_EQ(json_integer_value(json_object_get(parsed->data, "n")), 1);
    }
    ab_event_free(parsed);

    CHECK_STR_EQ(header(&msgs[1], "ce_id", buf, sizeof(buf)), ev->id);
    CHECK_STR_EQ(header(&msgs[1], "traceparent", buf, sizeof(buf)), ev->traceparent);
    CHECK(msgs[1].key == NULL);
    free_msgs(msgs, n);
    ab_event_free(ev);
    kenv_teardown(&e);
}

TEST(kafka_send_times_out_while_broker_down_then_recovers)
{
    struct kenv e;
    char errstr[512];
    const char *extra[] = { "AGENTBUS_KAFKA_PRODUCE_TIMEOUT_MS=1000", NULL };
    kenv_setup(&e, "down", 1, extra);

    /* The first send of a producer also connects, gets a producer id and metadata; on a
     * loaded machine that can take longer than the 1 s this test is about. Warm it up on
     * another topic first, as often as it takes within 15 tries. */
    for (int i = 0; i < 15; i++)
        if (ab_producer_send(e.producer, e.dlq, NULL, 0, "warm", 4, NULL, 0, errstr,
                             sizeof(errstr)) == AB_OK)
            break;
    CHECK_INT_EQ(ab_producer_send(e.producer, e.topic, "k", 1, "before", 6, NULL, 0, errstr,
                                  sizeof(errstr)),
                 AB_OK);

    rd_kafka_mock_broker_set_down(e.mc, 1);
    int64_t t0 = ab_monotonic_ms();
    enum ab_err err = ab_producer_send(e.producer, e.topic, "k", 1, "during", 6, NULL, 0, errstr,
                                       sizeof(errstr));
    int64_t elapsed = ab_monotonic_ms() - t0;
    CHECK_INT_EQ(err, AB_ERR_TIMEOUT);
    CHECK(elapsed >= 900);
    CHECK(elapsed <= 3500);
    if (elapsed < 900 || elapsed > 3500)
        fprintf(stderr, "    send took %lld ms\n", (long long)elapsed);
    CHECK_STR_CONTAINS(errstr, e.topic);

    /* A producer that never reached the broker (no producer id yet) times out the same. */
    struct ab_producer *fresh = NULL;
    REQUIRE(ab_producer_new(e.cfg, "test-fresh", &fresh, errstr, sizeof(errstr)) == AB_OK);
    t0 = ab_monotonic_ms();
    err = ab_producer_send(fresh, e.topic, NULL, 0, "fresh", 5, NULL, 0, errstr, sizeof(errstr));
    elapsed = ab_monotonic_ms() - t0;
    CHECK_INT_EQ(err, AB_ERR_TIMEOUT);
    CHECK(elapsed >= 900 && elapsed <= 3500);
    ab_producer_free(fresh, 100);

    rd_kafka_mock_broker_set_up(e.mc, 1);
    /* Once the broker answers again, a send succeeds at its first try. */
    int64_t deadline = ab_monotonic_ms() + 10000;
    while (!ab_kafka_reachable(ab_producer_handle(e.producer), 500) &&
           ab_monotonic_ms() < deadline)
        usleep(100 * 1000);
    err = ab_producer_send(e.producer, e.topic, "k", 1, "after", 5, NULL, 0, errstr,
                           sizeof(errstr));
    if (err != AB_OK)
        fprintf(stderr, "    after set_up: %s\n", errstr);
    CHECK_INT_EQ(err, AB_OK);
    CHECK(!ab_producer_fatal(e.producer));

    struct msg msgs[4];
    int n = read_topic(&e, e.topic, 1, msgs, 4, 3, 1500);
    CHECK_INT_EQ(n, 2); /* "during" timed out before it was sent: never written */
    if (n == 2) {
        CHECK(msgs[0].len == 6 && memcmp(msgs[0].value, "before", 6) == 0);
        CHECK(msgs[1].len == 5 && memcmp(msgs[1].value, "after", 5) == 0);
    }
    free_msgs(msgs, n);
    kenv_teardown(&e);
}

TEST(kafka_send_too_large_without_headers_fails_cleanly)
{
    struct kenv e;
    char errstr[512] = "";
    kenv_setup(&e, "large", 1, NULL);
    size_t len = 2 * 1024 * 1024; /* over message.max.bytes (1000000) */
    char *big = calloc(1, len);
    REQUIRE(big != NULL);
    /* Rejected by librdkafka before it is queued, with no header list to hand over. */
    CHECK_INT_EQ(ab_producer_send(e.producer, e.topic, NULL, 0, big, len, NULL, 0, errstr,
                                  sizeof(errstr)),
                 AB_ERR_TOO_LARGE);
    CHECK_STR_CONTAINS(errstr, e.topic);
    const struct ab_kafka_header h = { "x", "y", 1 };
    CHECK_INT_EQ(ab_producer_send(e.producer, e.topic, NULL, 0, big, len, &h, 1, errstr,
                                  sizeof(errstr)),
                 AB_ERR_TOO_LARGE);
    /* The producer still works. */
    CHECK_INT_EQ(ab_producer_send(e.producer, e.topic, NULL, 0, "ok", 2, &h, 1, errstr,
                                  sizeof(errstr)),
                 AB_OK);
    free(big);
    kenv_teardown(&e);
}

/* ---- consumer ------------------------------------------------------------------------ */

TEST(kafka_consumer_ready_after_assignment)
{
    struct kenv e;
    struct recorder r;
    char group[160];
    kenv_setup(&e, "ready", 3, NULL);
    recorder_init(&r);
    group_name(&e, group, sizeof(group));
    struct ab_consumer *c = new_consumer(&e, group, &r);
    /* Assignment happens inside the consumer thread's poll: not before start. */
    CHECK(!ab_consumer_ready(c));
    CHECK_INT_EQ(ab_consumer_assigned_count(c), 0);
    REQUIRE(ab_consumer_start(c) == AB_OK);
    int64_t deadline = ab_monotonic_ms() + 15000;
    while (!ab_consumer_ready(c) && ab_monotonic_ms() < deadline)
        usleep(50 * 1000);
    CHECK(ab_consumer_ready(c));
    /* Give a late second assignment a moment: one member owns all three partitions. */
    usleep(300 * 1000);
    CHECK_INT_EQ(ab_consumer_assigned_count(c), 3);
    ab_consumer_stop(c);
    CHECK(!ab_consumer_ready(c));
    CHECK_INT_EQ(ab_consumer_assigned_count(c), 0);
    ab_consumer_free(c);
    kenv_teardown(&e);
}

TEST(kafka_consumer_handles_every_event_once_in_partition_order)
{
    struct kenv e;
    struct recorder r;
    char group[160];
    enum { N = 40, KEYS = 5 };
    char ids[N][AB_UUID_LEN + 1];
    kenv_setup(&e, "order", 3, NULL);
    recorder_init(&r);
    for (int i = 0; i < N; i++) {
        char key[16];
        snprintf(key, sizeof(key), "key-%d", i % KEYS);
        REQUIRE(send_event(&e, key, i, ids[i]) == AB_OK);
    }
    group_name(&e, group, sizeof(group));
    struct ab_consumer *c = start_consumer(&e, group, &r);
    CHECK(wait_count(&r, N, 15000));
    usleep(500 * 1000); /* anything extra (a duplicate) would arrive now */
    ab_consumer_stop(c);

    CHECK_INT_EQ(recorder_count(&r), N);
    for (int i = 0; i < N; i++)
        CHECK_INT_EQ(times_seen(&r, ids[i], true), 1);
    /* Per partition, offsets increase; per key (one partition each), production order. */
    int last_seen_index[KEYS];
    int64_t last_offset[8];
    for (int k = 0; k < KEYS; k++)
        last_seen_index[k] = -1;
    for (int p = 0; p < 8; p++)
        last_offset[p] = -1;
    for (int s = 0; s < r.count; s++) {
        int idx = -1;
        for (int i = 0; i < N && idx < 0; i++)
            if (strcmp(ids[i], r.items[s].id) == 0)
                idx = i;
        REQUIRE(idx >= 0);
        REQUIRE(r.items[s].partition >= 0 && r.items[s].partition < 3);
        CHECK(r.items[s].offset > last_offset[r.items[s].partition]);
        last_offset[r.items[s].partition] = r.items[s].offset;
        CHECK(idx > last_seen_index[idx % KEYS]);
        last_seen_index[idx % KEYS] = idx;
        CHECK_INT_EQ(r.items[s].attempt, 1);
    }
    ab_consumer_free(c);
    kenv_teardown(&e);
}

TEST(kafka_consumer_poison_message_goes_to_dlq_and_partition_moves_on)
{
    struct kenv e;
    struct recorder r;
    char group[160], errstr[512], buf[512];
    char id1[AB_UUID_LEN + 1], id2[AB_UUID_LEN + 1], id3[AB_UUID_LEN + 1];
    kenv_setup(&e, "poison", 1, NULL);
    recorder_init(&r);
    REQUIRE(send_event(&e, "k", 1, id1) == AB_OK);
    const struct ab_kafka_header trace = { "traceparent", "00-abc-def-01", 13 };
    REQUIRE(ab_producer_send(e.producer, e.topic, "pk", 2, "this is not an envelope", 23, &trace,
                             1, errstr, sizeof(errstr)) == AB_OK);
    REQUIRE(send_event(&e, "k", 2, id2) == AB_OK);
    REQUIRE(send_event(&e, "k", 3, id3) == AB_OK);

    group_name(&e, group, sizeof(group));
    struct ab_consumer *c = start_consumer(&e, group, &r);
    CHECK(wait_count(&r, 3, 15000));
    usleep(300 * 1000);
    ab_consumer_stop(c);
    REQUIRE(recorder_count(&r) == 3);
    CHECK_STR_EQ(r.items[0].id, id1);
    CHECK_STR_EQ(r.items[1].id, id2);
    CHECK_STR_EQ(r.items[2].id, id3);
    CHECK_INT_EQ(r.items[1].offset, 2);

    struct msg msgs[4];
    int n = read_topic(&e, e.dlq, 1, msgs, 4, 2, 1500);
    REQUIRE(n == 1);
    CHECK(msgs[0].len == 23 && memcmp(msgs[0].value, "this is not an envelope", 23) == 0);
    CHECK(msgs[0].key_len == 2 && memcmp(msgs[0].key, "pk", 2) == 0);
    const char *reason = header(&msgs[0], "x-agentbus-dlq-reason", buf, sizeof(buf));
    CHECK(reason != NULL && reason[0] != '\0');
    CHECK_STR_EQ(header(&msgs[0], "x-agentbus-dlq-topic", buf, sizeof(buf)), e.topic);
    CHECK_STR_EQ(header(&msgs[0], "x-agentbus-dlq-offset", buf, sizeof(buf)), "1");
    CHECK_STR_EQ(header(&msgs[0], "x-agentbus-dlq-service", buf, sizeof(buf)), group);
    CHECK_STR_EQ(header(&msgs[0], "traceparent", buf, sizeof(buf)), "00-abc-def-01");
    free_msgs(msgs, n);
    ab_consumer_free(c);
    kenv_teardown(&e);
}

TEST(kafka_consumer_invalid_result_dead_letters)
{
    struct kenv e;
    struct recorder r;
    char group[160], buf[512];
    char id1[AB_UUID_LEN + 1], id2[AB_UUID_LEN + 1], id3[AB_UUID_LEN + 1];
    kenv_setup(&e, "invalid", 1, NULL);
    recorder_init(&r);
    REQUIRE(send_event(&e, "k", 1, id1) == AB_OK);
    REQUIRE(send_event(&e, "k", 2, id2) == AB_OK);
    REQUIRE(send_event(&e, "k", 3, id3) == AB_OK);
    snprintf(r.invalid_id, sizeof(r.invalid_id), "%s", id2);

    group_name(&e, group, sizeof(group));
    struct ab_consumer *c = start_consumer(&e, group, &r);
    CHECK(wait_count(&r, 3, 15000));
    usleep(500 * 1000);
    ab_consumer_stop(c);
    REQUIRE(recorder_count(&r) == 3);
    CHECK_STR_EQ(r.items[0].id, id1);
    CHECK_STR_EQ(r.items[1].id, id2);
    CHECK_INT_EQ(r.items[1].attempt, 1); /* not retried */
    CHECK_STR_EQ(r.items[2].id, id3);

    struct msg msgs[4];
    int n = read_topic(&e, e.dlq, 1, msgs, 4, 2, 1500);
    REQUIRE(n == 1);
    CHECK_STR_EQ(header(&msgs[0], "ce_id", buf, sizeof(buf)), id2);
    CHECK_STR_CONTAINS(header(&msgs[0], "x-agentbus-dlq-reason", buf, sizeof(buf)),
                       "the test rejects");
    CHECK_STR_EQ(header(&msgs[0], "x-agentbus-dlq-offset", buf, sizeof(buf)), "1");
    free_msgs(msgs, n);
    ab_consumer_free(c);
    kenv_teardown(&e);
}

TEST(kafka_consumer_retriable_error_retries_in_order)
{
    struct kenv e;
    struct recorder r;
    char group[160];
    char ids[5][AB_UUID_LEN + 1];
    kenv_setup(&e, "retry", 1, NULL);
    recorder_init(&r);
    for (int i = 0; i < 5; i++)
        REQUIRE(send_event(&e, "k", i, ids[i]) == AB_OK);
    snprintf(r.fail_id, sizeof(r.fail_id), "%s", ids[1]);
    r.fail_attempts = 2;

    group_name(&e, group, sizeof(group));
    struct ab_consumer *c = start_consumer(&e, group, &r);
    CHECK(wait_count(&r, 7, 15000));
    usleep(1000 * 1000); /* a duplicate or a skipped retry would show up now */
    ab_consumer_stop(c);

    /* ids[1] three times (attempts 1, 2, 3), everything after it only after it succeeded. */
    const struct {
        int idx, attempt;
    } want[] = { { 0, 1 }, { 1, 1 }, { 1, 2 }, { 1, 3 }, { 2, 1 }, { 3, 1 }, { 4, 1 } };
    CHECK_INT_EQ(recorder_count(&r), 7);
    for (int i = 0; i < 7 && i < r.count; i++) {
        CHECK_STR_EQ(r.items[i].id, ids[want[i].idx]);
        CHECK_INT_EQ(r.items[i].attempt, want[i].attempt);
        CHECK_INT_EQ(r.items[i].offset, want[i].idx);
    }
    for (int i = 0; i < 5; i++)
        CHECK_INT_EQ(times_seen(&r, ids[i], true), 1);

    /* Nothing went to the dead-letter topic. */
    struct msg msgs[2];
    int n = read_topic(&e, e.dlq, 1, msgs, 2, 1, 1500);
    CHECK_INT_EQ(n, 0);
    free_msgs(msgs, n);
    ab_consumer_free(c);
    kenv_teardown(&e);
}

TEST(kafka_consumer_retry_does_not_block_other_partitions)
{
    struct kenv e;
    struct recorder r;
    char group[160];
    enum { N = 30 };
    char blocked_id[AB_UUID_LEN + 1], ids[N][AB_UUID_LEN + 1];
    kenv_setup(&e, "noblock", 2, NULL);
    recorder_init(&r);
    REQUIRE(send_event(&e, "blocked-key", 0, blocked_id) == AB_OK);
    snprintf(r.block_id, sizeof(r.block_id), "%s", blocked_id);
    atomic_store(&r.blocked, true);
    for (int i = 0; i < N; i++) {
        char key[16];
        snprintf(key, sizeof(key), "key-%d", i);
        REQUIRE(send_event(&e, key, i + 1, ids[i]) == AB_OK);
    }
    group_name(&e, group, sizeof(group));
    struct ab_consumer *c = start_consumer(&e, group, &r);

    /* Wait until the blocked event failed at least twice; by then the other partition has
     * had plenty of time. */
    int64_t deadline = ab_monotonic_ms() + 15000;
    while (times_seen(&r, blocked_id, false) < 3 && ab_monotonic_ms() < deadline)
        usleep(50 * 1000);
    usleep(300 * 1000);
    pthread_mutex_lock(&r.lock);
    int32_t blocked_partition = -1;
    for (int i = 0; i < r.count; i++)
        if (strcmp(r.items[i].id, blocked_id) == 0)
            blocked_partition = r.items[i].partition;
    int other_done = 0;
    for (int i = 0; i < r.count; i++)
        if (r.items[i].partition != blocked_partition)
            other_done++;
    int same_done = 0;
    for (int i = 0; i < r.count; i++)
        if (r.items[i].partition == blocked_partition && strcmp(r.items[i].id, blocked_id) != 0)
            same_done++;
    pthread_mutex_unlock(&r.lock);
    REQUIRE(blocked_partition >= 0);
    CHECK(other_done > 0);      /* the other partition flowed */
    CHECK_INT_EQ(same_done, 0); /* nothing overtook the blocked event on its partition */

    atomic_store(&r.blocked, false);
    deadline = ab_monotonic_ms() + 15000;
    bool all = false;
    while (!all && ab_monotonic_ms() < deadline) {
        all = times_seen(&r, blocked_id, true) == 1;
        for (int i = 0; i < N && all; i++)
            all = times_seen(&r, ids[i], true) == 1;
        if (!all)
            usleep(50 * 1000);
    }
    CHECK(all);
    usleep(500 * 1000);
    ab_consumer_stop(c);
    for (int i = 0; i < N; i++)
        CHECK_INT_EQ(times_seen(&r, ids[i], false), 1);
    /* On the blocked partition, the blocked event's success precedes everything else. */
    bool blocked_ok = false;
    for (int i = 0; i < r.count; i++) {
        if (r.items[i].partition != blocked_partition)
            continue;
        if (strcmp(r.items[i].id, blocked_id) == 0)
            blocked_ok = r.items[i].result == AB_OK;
        else
            CHECK(blocked_ok);
    }
    ab_consumer_free(c);
    kenv_teardown(&e);
}

TEST(kafka_consumer_commits_offsets_for_the_next_member)
{
    struct kenv e;
    struct recorder r1, r2;
    char group[160];
    char ids[4][AB_UUID_LEN + 1];
    kenv_setup(&e, "commit", 1, NULL);
    recorder_init(&r1);
    recorder_init(&r2);
    for (int i = 0; i < 3; i++)
        REQUIRE(send_event(&e, "k", i, ids[i]) == AB_OK);
    group_name(&e, group, sizeof(group));
    struct ab_consumer *c1 = start_consumer(&e, group, &r1);
    CHECK(wait_count(&r1, 3, 15000));
    ab_consumer_stop(c1);
    ab_consumer_free(c1);
    CHECK_INT_EQ(recorder_count(&r1), 3);

    REQUIRE(send_event(&e, "k", 3, ids[3]) == AB_OK);
    struct ab_consumer *c2 = start_consumer(&e, group, &r2);
    CHECK(wait_count(&r2, 1, 15000));
    usleep(1000 * 1000); /* a redelivery of 0..2 would come before or right after 3 */
    ab_consumer_stop(c2);
    CHECK_INT_EQ(recorder_count(&r2), 1);
    CHECK_INT_EQ(times_seen(&r2, ids[3], true), 1);
    for (int i = 0; i < 3; i++)
        CHECK_INT_EQ(times_seen(&r2, ids[i], false), 0);
    ab_consumer_free(c2);
    kenv_teardown(&e);
}

TEST(kafka_consumer_stop_during_retry_leaves_the_message_for_the_next_member)
{
    struct kenv e;
    struct recorder r1, r2;
    char group[160];
    char ids[3][AB_UUID_LEN + 1];
    kenv_setup(&e, "stopretry", 1, NULL);
    recorder_init(&r1);
    recorder_init(&r2);
    for (int i = 0; i < 3; i++)
        REQUIRE(send_event(&e, "k", i, ids[i]) == AB_OK);
    snprintf(r1.fail_id, sizeof(r1.fail_id), "%s", ids[1]);
    r1.fail_attempts = 1000; /* never succeeds in the first member */
    group_name(&e, group, sizeof(group));
    struct ab_consumer *c1 = start_consumer(&e, group, &r1);
    int64_t deadline = ab_monotonic_ms() + 15000;
    while (times_seen(&r1, ids[1], false) < 2 && ab_monotonic_ms() < deadline)
        usleep(20 * 1000);
    CHECK(times_seen(&r1, ids[1], false) >= 2);
    ab_consumer_stop(c1);
    ab_consumer_free(c1);
    CHECK_INT_EQ(times_seen(&r1, ids[0], true), 1);
    CHECK_INT_EQ(times_seen(&r1, ids[2], false), 0);

    /* The failed message was not committed: the next member starts at it, not after. */
    struct ab_consumer *c2 = start_consumer(&e, group, &r2);
    CHECK(wait_count(&r2, 2, 15000));
    usleep(500 * 1000);
    ab_consumer_stop(c2);
    CHECK_INT_EQ(recorder_count(&r2), 2);
    if (recorder_count(&r2) == 2) {
        CHECK_STR_EQ(r2.items[0].id, ids[1]);
        CHECK_STR_EQ(r2.items[1].id, ids[2]);
    }
    ab_consumer_free(c2);
    kenv_teardown(&e);
}

TEST(kafka_consumer_dead_letter_failure_holds_the_partition)
{
    struct kenv e;
    struct recorder r;
    char group[160], errstr[512], buf[256];
    char id1[AB_UUID_LEN + 1], id2[AB_UUID_LEN + 1];
    kenv_setup(&e, "dlqfail", 1, NULL);
    FILE *devnull = NULL;
    if (!verbose()) /* the consumer logs each failed dead letter as an error: expected here */
        ab_log_set_output(devnull = fopen("/dev/null", "w"));
    recorder_init(&r);
    REQUIRE(send_event(&e, "k", 1, id1) == AB_OK);
    REQUIRE(ab_producer_send(e.producer, e.topic, NULL, 0, "poison", 6, NULL, 0, errstr,
                             sizeof(errstr)) == AB_OK);
    REQUIRE(send_event(&e, "k", 2, id2) == AB_OK);
    /* The next produce (the dead letter) is refused by the broker, once. */
    rd_kafka_mock_push_request_errors(e.mc, 0 /* Produce */, 1,
                                      RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED);
    group_name(&e, group, sizeof(group));
    struct ab_consumer *c = start_consumer(&e, group, &r);
    CHECK(wait_count(&r, 2, 15000));
    usleep(500 * 1000);
    ab_consumer_stop(c);
    CHECK_INT_EQ(recorder_count(&r), 2);
    CHECK_INT_EQ(times_seen(&r, id1, true), 1);
    CHECK_INT_EQ(times_seen(&r, id2, true), 1);
    /* The poison message was not lost: its dead letter went out on a later attempt. */
    struct msg msgs[2];
    int n = read_topic(&e, e.dlq, 1, msgs, 2, 2, 1500);
    CHECK_INT_EQ(n, 1);
    if (n >= 1) {
        CHECK(msgs[0].len == 6 && memcmp(msgs[0].value, "poison", 6) == 0);
        CHECK_STR_EQ(header(&msgs[0], "x-agentbus-dlq-offset", buf, sizeof(buf)), "1");
    }
    free_msgs(msgs, n);
    CHECK(!ab_producer_fatal(e.producer));
    ab_consumer_free(c);
    kenv_teardown(&e);
    ab_log_set_output(stderr);
    if (devnull != NULL)
        fclose(devnull);
}

/* A poison message so large that its dead letter (the value plus our headers) is over the
 * producer's size limit must not block its partition for ever: a reference record (no
 * value, the origin and the reason) goes to the DLQ instead, and the partition moves on. */
TEST(kafka_consumer_oversized_dead_letter_leaves_a_reference)
{
    struct kenv e;
    struct recorder r;
    char group[160], errstr[512], buf[1200];
    char id1[AB_UUID_LEN + 1];
    kenv_setup(&e, "dlqhuge", 1, NULL);
    recorder_init(&r);
    size_t len = 999800; /* under message.max.bytes alone, over it with the DLQ headers */
    char *huge = malloc(len);
    REQUIRE(huge != NULL);
    memset(huge, 'x', len);
    REQUIRE(ab_producer_send(e.producer, e.topic, "big", 3, huge, len, NULL, 0, errstr,
                             sizeof(errstr)) == AB_OK);
    free(huge);
    REQUIRE(send_event(&e, "k", 1, id1) == AB_OK);
    group_name(&e, group, sizeof(group));
    struct ab_consumer *c = start_consumer(&e, group, &r);
    CHECK(wait_count(&r, 1, 15000));
    ab_consumer_stop(c);
    CHECK_INT_EQ(times_seen(&r, id1, true), 1);
    struct msg msgs[2];
    int n = read_topic(&e, e.dlq, 1, msgs, 2, 1, 3000);
    CHECK_INT_EQ(n, 1);
    if (n >= 1) {
        CHECK_INT_EQ(msgs[0].len, 0);
        CHECK(msgs[0].key_len == 3 && memcmp(msgs[0].key, "big", 3) == 0);
        CHECK_STR_EQ(header(&msgs[0], "x-agentbus-dlq-offset", buf, sizeof(buf)), "0");
        CHECK_STR_CONTAINS(header(&msgs[0], "x-agentbus-dlq-reason", buf, sizeof(buf)),
                           "value dropped");
    }
    free_msgs(msgs, n);
    ab_consumer_free(c);
    kenv_teardown(&e);
}

/* Partitions waiting on a retry are paused. When one moves to another member and later
 * comes back, it must flow again: nothing may stay paused from the earlier ownership. */
/* How long a member joining or leaving may take to show in the assignment: a rebalance of
 * the mock cluster takes seconds (the coordinator waits for the members to rejoin, and
 * cooperative-sticky takes two rounds), and under ASan, beside the other tests the runner
 * runs at once on a 2-core machine, a join has taken more than 20 s. */
#define REBALANCE_WAIT_MS 45000

TEST(kafka_consumer_partition_returning_after_rebalance_is_not_stuck)
{
    struct kenv e;
    struct recorder r;
    char group[160];
    enum { N = 10 };
    char ids[N][AB_UUID_LEN + 1];
    const char *extra[] = {
        verbose() ? "AGENTBUS_KAFKA_PROPERTIES={\"heartbeat.interval.ms\":300}"
                  : "AGENTBUS_KAFKA_PROPERTIES={\"heartbeat.interval.ms\":300,\"log_level\":2}",
        NULL,
    };
    kenv_setup(&e, "rebalance", 2, extra);
    FILE *devnull = NULL;
    if (!verbose()) /* retries and rebalances log warnings and errors: expected here */
        ab_log_set_output(devnull = fopen("/dev/null", "w"));
    recorder_init(&r);
    for (int i = 0; i < N; i++) {
        char key[16];
        snprintf(key, sizeof(key), "key-%d", i);
        REQUIRE(send_event(&e, key, i, ids[i]) == AB_OK);
    }
    atomic_store(&r.block_all, true);
    group_name(&e, group, sizeof(group));
    struct ab_consumer *c1 = start_consumer(&e, group, &r);
    int64_t deadline = ab_monotonic_ms() + 15000;
    while (ab_consumer_assigned_count(c1) < 2 && ab_monotonic_ms() < deadline)
        usleep(20 * 1000);
    REQUIRE(ab_consumer_assigned_count(c1) == 2);
    usleep(500 * 1000); /* both partitions now wait on a retry, paused */

    /* A second member takes one partition, then leaves: it returns to the first. */
    struct ab_consumer *c2 = start_consumer(&e, group, &r);
    deadline = ab_monotonic_ms() + REBALANCE_WAIT_MS;
    while ((ab_consumer_assigned_count(c2) < 1 || ab_consumer_assigned_count(c1) != 1) &&
           ab_monotonic_ms() < deadline)
        usleep(20 * 1000);
    CHECK_INT_EQ(ab_consumer_assigned_count(c2), 1);
    CHECK_INT_EQ(ab_consumer_assigned_count(c1), 1);
    ab_consumer_stop(c2);
    ab_consumer_free(c2);
    deadline = ab_monotonic_ms() + REBALANCE_WAIT_MS;
    while (ab_consumer_assigned_count(c1) < 2 && ab_monotonic_ms() < deadline)
        usleep(20 * 1000);
    CHECK_INT_EQ(ab_consumer_assigned_count(c1), 2);

    atomic_store(&r.block_all, false);
    deadline = ab_monotonic_ms() + 15000;
    bool all = false;
    while (!all && ab_monotonic_ms() < deadline) {
        all = true;
        for (int i = 0; i < N && all; i++)
            all = times_seen(&r, ids[i], true) == 1;
        if (!all)
            usleep(50 * 1000);
    }
    CHECK(all);
    usleep(300 * 1000);
    ab_consumer_stop(c1);
    for (int i = 0; i < N; i++)
        CHECK_INT_EQ(times_seen(&r, ids[i], true), 1);
    ab_consumer_free(c1);
    kenv_teardown(&e);
    ab_log_set_output(stderr);
    if (devnull != NULL)
        fclose(devnull);
}

/* The producer's setting of a property, as librdkafka holds it. */
static void producer_conf(struct kenv *e, const char *name, char *out, size_t size)
{
    const rd_kafka_conf_t *conf = rd_kafka_conf(ab_producer_handle(e->producer));
    REQUIRE(rd_kafka_conf_get(conf, name, out, &size) == RD_KAFKA_CONF_OK);
}

/* kafka.properties may tune batching (linger, compression), never weaken the guarantees. */
TEST(kafka_producer_properties_tune_batching_not_guarantees)
{
    struct kenv e;
    char v[64];
    const char *extra[] = { "AGENTBUS_KAFKA_PROPERTIES={\"linger.ms\":0,\"compression.codec\":"
                            "\"none\",\"acks\":\"1\",\"enable.idempotence\":false,"
                            "\"log_level\":2}",
                            NULL };
    kenv_setup(&e, "props", 1, extra);
    producer_conf(&e, "linger.ms", v, sizeof(v));
    CHECK_STR_EQ(v, "0");
    producer_conf(&e, "compression.codec", v, sizeof(v));
    CHECK_STR_EQ(v, "none");
    producer_conf(&e, "acks", v, sizeof(v));
    CHECK_STR_EQ(v, "-1"); /* all */
    producer_conf(&e, "enable.idempotence", v, sizeof(v));
    CHECK_STR_EQ(v, "true");
    kenv_teardown(&e);

    kenv_setup(&e, "props-default", 1, NULL); /* and our defaults otherwise */
    producer_conf(&e, "linger.ms", v, sizeof(v));
    CHECK_STR_EQ(v, "5");
    producer_conf(&e, "compression.codec", v, sizeof(v));
    CHECK_STR_EQ(v, "lz4");
    kenv_teardown(&e);
}

/* A batch is queued at once and awaited at once; each event has its own result, and one
 * Kafka refuses (over message.max.bytes) does not keep the others from being written. */
TEST(kafka_send_events_batch_with_one_refused)
{
    struct kenv e;
    char errstr[512], buf[128];
    kenv_setup(&e, "batch", 1, NULL);
    char *big = malloc(2 << 20); /* over librdkafka's default message.max.bytes (1 MB) */
    REQUIRE(big != NULL);
    memset(big, 'x', (2 << 20) - 1);
    big[(2 << 20) - 1] = '\0';
    struct ab_event *evs[3] = {
        make_event(1),
        ab_event_new("agentbus.test.event", "/unit-test", NULL, json_pack("{s:s}", "big", big)),
        make_event(3),
    };
    free(big);
    struct ab_outgoing_event batch[3] = {
        { AB_TOPIC_INGRESS, "k1", evs[0], AB_OK },
        { AB_TOPIC_INGRESS, "k2", evs[1], AB_OK },
        { AB_TOPIC_INGRESS, NULL, evs[2], AB_OK },
    };
    CHECK_INT_EQ(ab_producer_send_events(e.producer, batch, 3, errstr, sizeof(errstr)),
                 AB_ERR_TOO_LARGE);
    CHECK_STR_CONTAINS(errstr, "too large");
    CHECK_INT_EQ(batch[0].err, AB_OK);
    CHECK_INT_EQ(batch[1].err, AB_ERR_TOO_LARGE);
    CHECK_INT_EQ(batch[2].err, AB_OK);
    struct msg msgs[4];
    int n = read_topic(&e, e.topic, 1, msgs, 4, 2, 5000);
    CHECK_INT_EQ(n, 2);
    if (n == 2) {
        CHECK_STR_EQ(header(&msgs[0], "ce_id", buf, sizeof(buf)), evs[0]->id);
        CHECK_STR_EQ(header(&msgs[1], "ce_id", buf, sizeof(buf)), evs[2]->id);
    }
    free_msgs(msgs, n);

    /* All acknowledged: AB_OK, each AB_OK. */
    struct ab_outgoing_event two[2] = { { AB_TOPIC_INGRESS, "k1", evs[0], AB_ERR_INTERNAL },
                                        { AB_TOPIC_EVENTS, "k3", evs[2], AB_ERR_INTERNAL } };
    CHECK_INT_EQ(ab_producer_send_events(e.producer, two, 2, errstr, sizeof(errstr)), AB_OK);
    CHECK_INT_EQ(two[0].err, AB_OK);
    CHECK_INT_EQ(two[1].err, AB_OK);
    for (int i = 0; i < 3; i++)
        ab_event_free(evs[i]);
    kenv_teardown(&e);
}

/* ---- asynchronous consumer ------------------------------------------------------------ */

/* A handler that only records the jobs it is given; the test decides when each ends. */
struct jobs {
    pthread_mutex_t lock;
    struct ab_consumer_job *items[MAX_SEEN];
    int attempts[MAX_SEEN];
    char ids[MAX_SEEN][AB_UUID_LEN + 1];
    int count;
    atomic_int quiesced;
    atomic_int abandoned_at_quiesce;
    atomic_int running; /* started and not yet done */
};

static void jobs_start(void *ud, struct ab_consumer_job *job)
{
    struct jobs *j = ud;
    pthread_mutex_lock(&j->lock);
    if (j->count < MAX_SEEN) {
        j->items[j->count] = job;
        j->attempts[j->count] = ab_consumer_job_msg(job)->attempt;
        snprintf(j->ids[j->count], AB_UUID_LEN + 1, "%s", ab_consumer_job_msg(job)->event->id);
        j->count++;
    }
    pthread_mutex_unlock(&j->lock);
    atomic_fetch_add(&j->running, 1);
}

/* Ends the job started n-th (0-based). */
static void jobs_done(struct jobs *j, int n, enum ab_err err)
{
    pthread_mutex_lock(&j->lock);
    struct ab_consumer_job *job = j->items[n];
    pthread_mutex_unlock(&j->lock);
    atomic_fetch_sub(&j->running, 1);
    ab_consumer_job_done(job, err, err ? "the test says so" : NULL);
}

/* These tests end every job before they stop: nothing is left to end. */
static void jobs_quiesce(void *ud)
{
    struct jobs *j = ud;
    atomic_store(&j->quiesced, 1);
}

static int jobs_count(struct jobs *j)
{
    pthread_mutex_lock(&j->lock);
    int n = j->count;
    pthread_mutex_unlock(&j->lock);
    return n;
}

static bool jobs_wait(struct jobs *j, int n, int timeout_ms)
{
    int64_t deadline = ab_monotonic_ms() + timeout_ms;
    while (jobs_count(j) < n) {
        if (ab_monotonic_ms() > deadline)
            return false;
        usleep(10 * 1000);
    }
    return true;
}

static struct ab_consumer *start_async(struct kenv *e, struct jobs *j, size_t max_in_flight,
                                       int drain_ms)
{
    char errstr[512], group[160];
    static const enum ab_topic topics[] = { AB_TOPIC_INGRESS };
    memset(j, 0, sizeof(*j));
    pthread_mutex_init(&j->lock, NULL);
    group_name(e, group, sizeof(group));
    struct ab_consumer_options opts = {
        .group_id = group,
        .client_id = "test-async",
        .topics = topics,
        .topic_count = 1,
        .start = jobs_start,
        .quiesce = jobs_quiesce,
        .handler_ud = j,
        .max_in_flight = max_in_flight,
        .drain_timeout_ms = drain_ms,
    };
    struct ab_consumer *c = NULL;
    enum ab_err err = ab_consumer_new(e->cfg, e->producer, &opts, &c, errstr, sizeof(errstr));
    if (err != AB_OK)
        fprintf(stderr, "    consumer: %s\n", errstr);
    REQUIRE(err == AB_OK);
    REQUIRE(ab_consumer_start(c) == AB_OK);
    return c;
}

/* The group's committed offset of partition 0, read through the consumer's own handle. */
static int64_t committed(struct ab_consumer *c, const struct kenv *e)
{
    rd_kafka_topic_partition_list_t *parts = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(parts, e->topic, 0);
    int64_t offset = -2;
    if (rd_kafka_committed(ab_consumer_handle(c), parts, 5000) == RD_KAFKA_RESP_ERR_NO_ERROR)
        offset = parts->elems[0].offset;
    rd_kafka_topic_partition_list_destroy(parts);
    return offset;
}

static bool wait_committed(struct ab_consumer *c, const struct kenv *e, int64_t want,
                           int timeout_ms)
{
    int64_t deadline = ab_monotonic_ms() + timeout_ms;
    while (committed(c, e) != want) {
        if (ab_monotonic_ms() > deadline)
            return false;
        usleep(100 * 1000);
    }
    return true;
}

TEST(kafka_async_runs_many_at_once_and_commits_only_the_finished_prefix)
{
    struct kenv e;
    struct jobs j;
    char keys[4][16], ids[4][AB_UUID_LEN + 1];
    kenv_setup(&e, "async-prefix", 1, NULL);
    for (int i = 0; i < 4; i++) {
        snprintf(keys[i], sizeof(keys[i]), "k%d", i);
        REQUIRE(send_event(&e, keys[i], i, ids[i]) == AB_OK);
    }
    struct ab_consumer *c = start_async(&e, &j, 0, 0);
    /* All four are in hand at once: none has been finished yet. */
    CHECK(jobs_wait(&j, 4, 15000));
    CHECK_INT_EQ(ab_consumer_in_flight(c), 4);
    for (int i = 0; i < 4 && i < jobs_count(&j); i++)
        CHECK_STR_EQ(j.ids[i], ids[i]);
    /* The three after the first finish: nothing may be committed past the first. */
    jobs_done(&j, 1, AB_OK);
    jobs_done(&j, 2, AB_OK);
    jobs_done(&j, 3, AB_OK);
    usleep(1600 * 1000); /* auto-commit runs every second */
    int64_t before = committed(c, &e);
    CHECK(before < 1); /* nothing committed (a negative logical offset) */
    CHECK_INT_EQ(ab_consumer_in_flight(c), 4);
    jobs_done(&j, 0, AB_OK);
    CHECK(wait_committed(c, &e, 4, 5000));
    CHECK_INT_EQ(ab_consumer_in_flight(c), 0);
    ab_consumer_stop(c);
    CHECK_INT_EQ(atomic_load(&j.quiesced), 1);
    ab_consumer_free(c);
    kenv_teardown(&e);
}

TEST(kafka_async_same_key_one_at_a_time_and_retried_in_place)
{
    struct kenv e;
    struct jobs j;
    char ids[4][AB_UUID_LEN + 1];
    kenv_setup(&e, "async-key", 1, NULL);
    REQUIRE(send_event(&e, "conv", 0, ids[0]) == AB_OK);
    REQUIRE(send_event(&e, "conv", 1, ids[1]) == AB_OK);
    REQUIRE(send_event(&e, "other", 2, ids[2]) == AB_OK);
    REQUIRE(send_event(&e, "conv", 3, ids[3]) == AB_OK);
    struct ab_consumer *c = start_async(&e, &j, 0, 0);
    /* "conv" #0 and "other" run; "conv" #1 and #3 wait behind #0. */
    CHECK(jobs_wait(&j, 2, 15000));
    usleep(300 * 1000);
    REQUIRE(jobs_count(&j) == 2);
    CHECK_STR_EQ(j.ids[0], ids[0]);
    CHECK_STR_EQ(j.ids[1], ids[2]);
    /* #0 fails retriably: it comes back (attempt 2) before #1 may start. */
    jobs_done(&j, 0, AB_ERR_UNAVAILABLE);
    CHECK(jobs_wait(&j, 3, 5000));
    CHECK_STR_EQ(j.ids[2], ids[0]);
    CHECK_INT_EQ(j.attempts[2], 2);
    usleep(200 * 1000);
    CHECK_INT_EQ(jobs_count(&j), 3);
    jobs_done(&j, 2, AB_OK);
    CHECK(jobs_wait(&j, 4, 5000));
    CHECK_STR_EQ(j.ids[3], ids[1]);
    jobs_done(&j, 3, AB_OK);
    CHECK(jobs_wait(&j, 5, 5000));
    CHECK_STR_EQ(j.ids[4], ids[3]);
    jobs_done(&j, 4, AB_OK);
    CHECK(wait_committed(c, &e, 2, 5000)); /* "other" (offset 2) still in hand */
    jobs_done(&j, 1, AB_OK);
    CHECK(wait_committed(c, &e, 4, 5000));
    ab_consumer_stop(c);
    ab_consumer_free(c);
    kenv_teardown(&e);
}

TEST(kafka_async_permanent_failure_dead_letters_and_moves_on)
{
    struct kenv e;
    struct jobs j;
    char ids[2][AB_UUID_LEN + 1], errstr[512], buf[512];
    kenv_setup(&e, "async-dlq", 1, NULL);
    REQUIRE(send_event(&e, "a", 0, ids[0]) == AB_OK);
    REQUIRE(ab_producer_send(e.producer, e.topic, "b", 1, "not an envelope", 15, NULL, 0, errstr,
                             sizeof(errstr)) == AB_OK);
    REQUIRE(send_event(&e, "c", 1, ids[1]) == AB_OK);
    struct ab_consumer *c = start_async(&e, &j, 0, 0);
    CHECK(jobs_wait(&j, 2, 15000)); /* the bad envelope never reaches the handler */
    jobs_done(&j, 0, AB_ERR_INVALID);
    jobs_done(&j, 1, AB_OK);
    CHECK(wait_committed(c, &e, 3, 5000));
    struct msg msgs[4];
    int n = read_topic(&e, e.dlq, 1, msgs, 4, 2, 1500);
    CHECK_INT_EQ(n, 2);
    /* The bad envelope is dead-lettered when it is taken, before job 0 ends. */
    if (n == 2) {
        CHECK_STR_EQ(header(&msgs[0], "x-agentbus-dlq-offset", buf, sizeof(buf)), "1");
        CHECK_STR_CONTAINS(header(&msgs[0], "x-agentbus-dlq-reason", buf, sizeof(buf)),
                           "envelope");
        CHECK_STR_EQ(header(&msgs[1], "x-agentbus-dlq-offset", buf, sizeof(buf)), "0");
        CHECK_STR_CONTAINS(header(&msgs[1], "x-agentbus-dlq-reason", buf, sizeof(buf)),
                           "the test says so");
    }
    free_msgs(msgs, n);
    ab_consumer_stop(c);
    ab_consumer_free(c);
    kenv_teardown(&e);
}

TEST(kafka_async_pauses_at_max_in_flight)
{
    struct kenv e;
    struct jobs j;
    kenv_setup(&e, "async-full", 1, NULL);
    for (int i = 0; i < 5; i++) {
        char key[16];
        snprintf(key, sizeof(key), "k%d", i);
        REQUIRE(send_event(&e, key, i, NULL) == AB_OK);
    }
    struct ab_consumer *c = start_async(&e, &j, 2, 0);
    CHECK(jobs_wait(&j, 2, 15000));
    usleep(800 * 1000);
    CHECK_INT_EQ(jobs_count(&j), 2);
    jobs_done(&j, 0, AB_OK);
    CHECK(jobs_wait(&j, 3, 5000));
    usleep(500 * 1000);
    CHECK_INT_EQ(jobs_count(&j), 3);
    for (int i = 1; i < 5; i++) {
        jobs_done(&j, i, AB_OK);
        if (i + 1 < 5)
            CHECK(jobs_wait(&j, i + 2 < 5 ? i + 2 : 5, 5000));
    }
    CHECK(wait_committed(c, &e, 5, 5000));
    ab_consumer_stop(c);
    ab_consumer_free(c);
    kenv_teardown(&e);
}

/* A job still running when the drain time is up is abandoned, and its message goes to the
 * next member; the jobs finished before are committed. */
static void quiesce_ending_all(void *ud)
{
    struct jobs *j = ud;
    atomic_store(&j->quiesced, 1);
    pthread_mutex_lock(&j->lock);
    int n = j->count;
    pthread_mutex_unlock(&j->lock);
    for (int i = 1; i < n; i++) { /* job 0 was done by the test */
        if (ab_consumer_job_abandoned(j->items[i]))
            atomic_fetch_add(&j->abandoned_at_quiesce, 1);
        ab_consumer_job_done(j->items[i], AB_OK, NULL); /* too late: dropped */
    }
}

TEST(kafka_async_stop_drains_then_abandons)
{
    struct kenv e;
    struct jobs j;
    char errstr[512], group[160];
    char ids[2][AB_UUID_LEN + 1];
    static const enum ab_topic topics[] = { AB_TOPIC_INGRESS };
    kenv_setup(&e, "async-stop", 1, NULL);
    REQUIRE(send_event(&e, "a", 0, ids[0]) == AB_OK);
    REQUIRE(send_event(&e, "b", 1, ids[1]) == AB_OK);
    memset(&j, 0, sizeof(j));
    pthread_mutex_init(&j.lock, NULL);
    group_name(&e, group, sizeof(group));
    struct ab_consumer_options opts = {
        .group_id = group, .client_id = "test-async", .topics = topics, .topic_count = 1,
        .start = jobs_start, .quiesce = quiesce_ending_all, .handler_ud = &j,
        .drain_timeout_ms = 600,
    };
    struct ab_consumer *c = NULL;
    REQUIRE(ab_consumer_new(e.cfg, e.producer, &opts, &c, errstr, sizeof(errstr)) == AB_OK);
    REQUIRE(ab_consumer_start(c) == AB_OK);
    CHECK(jobs_wait(&j, 2, 15000));
    jobs_done(&j, 0, AB_OK);
    int64_t t0 = ab_monotonic_ms();
    ab_consumer_stop(c);
    int64_t took = ab_monotonic_ms() - t0;
    CHECK(took >= 550);
    CHECK_INT_EQ(atomic_load(&j.quiesced), 1);
    CHECK_INT_EQ(atomic_load(&j.abandoned_at_quiesce), 1);
    ab_consumer_free(c);

    /* The next member gets only the abandoned message. */
    struct recorder r;
    recorder_init(&r);
    struct ab_consumer *c2 = start_consumer(&e, group, &r);
    CHECK(wait_count(&r, 1, 15000));
    usleep(800 * 1000);
    ab_consumer_stop(c2);
    CHECK_INT_EQ(recorder_count(&r), 1);
    CHECK_INT_EQ(times_seen(&r, ids[1], true), 1);
    ab_consumer_free(c2);
    kenv_teardown(&e);
}

/* Ends, successfully, every job started since *next (the ones abandoned too: done drops
 * those), and counts the distinct messages of the jobs not abandoned in done_ids. */
static void jobs_finish_new(struct jobs *j, int *next, char done_ids[][AB_UUID_LEN + 1],
                            int *done_count)
{
    int n = jobs_count(j);
    for (; *next < n; (*next)++) {
        bool abandoned = ab_consumer_job_abandoned(j->items[*next]);
        bool known = false;
        for (int k = 0; k < *done_count && !known; k++)
            known = strcmp(done_ids[k], j->ids[*next]) == 0;
        if (!abandoned && !known)
            snprintf(done_ids[(*done_count)++], AB_UUID_LEN + 1, "%s", j->ids[*next]);
        jobs_done(j, *next, AB_OK);
    }
}

/* A full consumer pauses every partition it has. A partition revoked then, and given back
 * after the consumer stopped being full, must come back resumed: librdkafka keeps an
 * application's pause across unassign and assign, so a paused partition would otherwise
 * never be fetched again. */
TEST(kafka_async_partition_revoked_while_full_comes_back_resumed)
{
    struct kenv e;
    struct jobs j;
    struct recorder r;
    char group[160];
    enum { N = 12 };
    char ids[N][AB_UUID_LEN + 1], done_ids[N][AB_UUID_LEN + 1];
    int next = 0, done_count = 0;
    const char *extra[] = {
        verbose() ? "AGENTBUS_KAFKA_PROPERTIES={\"heartbeat.interval.ms\":300}"
                  : "AGENTBUS_KAFKA_PROPERTIES={\"heartbeat.interval.ms\":300,\"log_level\":2}",
        NULL,
    };
    kenv_setup(&e, "async-rebalance", 2, extra);
    FILE *devnull = NULL;
    if (!verbose()) /* the blocked member's retries log warnings: expected here */
        ab_log_set_output(devnull = fopen("/dev/null", "w"));
    for (int i = 0; i < N; i++) {
        char key[16];
        snprintf(key, sizeof(key), "key-%d", i);
        REQUIRE(send_event(&e, key, i, ids[i]) == AB_OK);
    }
    /* One job in hand fills the consumer: both partitions pause. */
    struct ab_consumer *c1 = start_async(&e, &j, 1, 0);
    CHECK(jobs_wait(&j, 1, 15000));
    int64_t deadline = ab_monotonic_ms() + 15000;
    while (ab_consumer_assigned_count(c1) < 2 && ab_monotonic_ms() < deadline)
        usleep(20 * 1000);
    REQUIRE(ab_consumer_assigned_count(c1) == 2);

    /* A second member (whose handler fails every message, so it commits nothing) takes a
     * partition; while it holds it, the first member's job ends and it is no longer full. */
    recorder_init(&r);
    atomic_store(&r.block_all, true);
    group_name(&e, group, sizeof(group));
    struct ab_consumer *c2 = start_consumer(&e, group, &r);
    deadline = ab_monotonic_ms() + REBALANCE_WAIT_MS;
    while ((ab_consumer_assigned_count(c2) < 1 || ab_consumer_assigned_count(c1) != 1) &&
           ab_monotonic_ms() < deadline)
        usleep(20 * 1000);
    CHECK_INT_EQ(ab_consumer_assigned_count(c1), 1);
    jobs_finish_new(&j, &next, done_ids, &done_count);
    usleep(500 * 1000);

    /* The second member leaves: its partition comes back, and every message gets done. */
    ab_consumer_stop(c2);
    ab_consumer_free(c2);
    deadline = ab_monotonic_ms() + REBALANCE_WAIT_MS;
    while (done_count < N && ab_monotonic_ms() < deadline) {
        jobs_finish_new(&j, &next, done_ids, &done_count);
        usleep(20 * 1000);
    }
    CHECK_INT_EQ(done_count, N);
    for (int i = 0; i < N; i++) {
        bool found = false;
        for (int k = 0; k < done_count && !found; k++)
            found = strcmp(done_ids[k], ids[i]) == 0;
        CHECK(found);
    }
    ab_consumer_stop(c1);
    ab_consumer_free(c1);
    kenv_teardown(&e);
    ab_log_set_output(stderr);
    if (devnull != NULL)
        fclose(devnull);
}
