/* agentbus-kafka: produce to or read from any topic, for operators watching the bus and
 * for the end-to-end tests (which use it to inject poison messages and read dead
 * letters). Talks to KAFKA_BOOTSTRAP (or kafka.bootstrap in AGENTBUS_CONFIG).
 *   agentbus-kafka produce TOPIC [--key K] [--header NAME=VALUE]... [--value V]  (else stdin)
 *   agentbus-kafka produce TOPIC --lines [--key K]
 *       every line of stdin a message, produced as it is read (a benchmark's load, or a
 *       file of events); at the end, on stderr, how many were acknowledged
 *   agentbus-kafka consume TOPIC [--count N] [--timeout-ms T] [--idle-ms I]
 *       from the beginning, one JSON line a message: topic, partition, offset, timestamp,
 *       key, value, headers
 */
#include <librdkafka/rdkafka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/config.h"
#include "common/kafka.h"
#include "common/log.h"
#include "common/util.h"

#define MAX_STDIN_BYTES (16 * 1024 * 1024)

static int usage(void)
{
    fprintf(stderr,
            "usage: agentbus-kafka produce TOPIC [--key K] [--header NAME=VALUE]... [--value V]\n"
            "       agentbus-kafka produce TOPIC --lines [--key K]\n"
            "       agentbus-kafka consume TOPIC [--count N] [--timeout-ms T] [--idle-ms I]\n"
            "  (consume stops after N messages, after T ms, or I ms after the last message)\n");
    return 2;
}

/* The whole of stdin, or NULL when it is over MAX_STDIN_BYTES (never cut silently). */
static char *read_stdin(size_t *len)
{
    char *buf = ab_xmalloc(MAX_STDIN_BYTES + 1);
    size_t n = fread(buf, 1, MAX_STDIN_BYTES + 1, stdin);
    if (n > MAX_STDIN_BYTES) {
        free(buf);
        return NULL;
    }
    *len = n;
    return buf;
}

/* The delivery report: librdkafka's flush succeeding says nothing about the message. */
static void on_delivery(rd_kafka_t *rk, const rd_kafka_message_t *rkm, void *opaque)
{
    (void)rk;
    *(rd_kafka_resp_err_t *)opaque = rkm->err;
}

static void on_line_delivery(rd_kafka_t *rk, const rd_kafka_message_t *rkm, void *opaque)
{
    size_t *counts = opaque; /* [acknowledged, failed] */
    (void)rk;
    counts[rkm->err ? 1 : 0]++;
}

/* --lines: each line of stdin (up to 1 MiB, without its newline) is a message, handed to
 * librdkafka as soon as it is read, so a writer pacing its lines paces the messages. */
static int produce_lines(const struct ab_config *cfg, const char *topic, const char *key)
{
    char errstr[512];
    size_t counts[2] = { 0, 0 }, sent = 0, cap = 1 << 20;
    rd_kafka_conf_t *conf = ab_kafka_conf_new(cfg, "agentbus-kafka", errstr, sizeof(errstr));
    if (conf) {
        rd_kafka_conf_set(conf, "acks", "all", NULL, 0);
        rd_kafka_conf_set(conf, "linger.ms", "2", NULL, 0);
        rd_kafka_conf_set_dr_msg_cb(conf, on_line_delivery);
        rd_kafka_conf_set_opaque(conf, counts);
    }
    rd_kafka_t *rk = conf ? rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof(errstr)) : NULL;
    if (rk == NULL) {
        fprintf(stderr, "agentbus-kafka: %s\n", errstr);
        return 2;
    }
    char *line = ab_xmalloc(cap + 2);
    while (fgets(line, (int)cap + 2, stdin) != NULL) {
        size_t len = strlen(line);
        if (len > 0 && line[len - 1] == '\n')
            line[--len] = '\0';
        if (len == 0)
            continue;
        rd_kafka_resp_err_t err;
        while ((err = rd_kafka_producev(rk, RD_KAFKA_V_TOPIC(topic),
                                        RD_KAFKA_V_KEY(key, key ? strlen(key) : 0),
                                        RD_KAFKA_V_VALUE(line, len),
                                        RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
                                        RD_KAFKA_V_END)) == RD_KAFKA_RESP_ERR__QUEUE_FULL)
            rd_kafka_poll(rk, 10);
        if (err) {
            fprintf(stderr, "agentbus-kafka: produce to %s: %s\n", topic, rd_kafka_err2str(err));
            counts[1]++;
        } else {
            sent++;
        }
        rd_kafka_poll(rk, 0);
    }
    free(line);
    rd_kafka_flush(rk, 60000);
    fprintf(stderr, "agentbus-kafka: %zu lines sent, %zu acknowledged, %zu failed\n", sent,
            counts[0], counts[1]);
    rd_kafka_destroy(rk);
    return counts[1] == 0 && counts[0] == sent ? 0 : 1;
}

static int produce(const struct ab_config *cfg, const char *topic, int argc, char **argv)
{
    char errstr[512];
    const char *key = NULL, *value = NULL;
    bool lines = false;
    rd_kafka_headers_t *hdrs = rd_kafka_headers_new(4);
    for (int i = 0; i < argc; i++) {
        if (strcmp(argv[i], "--key") == 0 && i + 1 < argc)
            key = argv[++i];
        else if (strcmp(argv[i], "--lines") == 0)
            lines = true;
        else if (strcmp(argv[i], "--value") == 0 && i + 1 < argc)
            value = argv[++i];
        else if (strcmp(argv[i], "--header") == 0 && i + 1 < argc && strchr(argv[i + 1], '=')) {
            const char *h = argv[++i];
            const char *eq = strchr(h, '=');
            rd_kafka_header_add(hdrs, h, eq - h, eq + 1, -1);
        } else {
            rd_kafka_headers_destroy(hdrs);
            return usage();
        }
    }
    if (lines) {
        rd_kafka_headers_destroy(hdrs);
        return value ? usage() : produce_lines(cfg, topic, key);
    }
    size_t len = value ? strlen(value) : 0;
    char *owned = value ? NULL : read_stdin(&len);
    if (value == NULL && owned == NULL) {
        fprintf(stderr, "agentbus-kafka: the value on stdin is over %d bytes\n", MAX_STDIN_BYTES);
        rd_kafka_headers_destroy(hdrs);
        return 2;
    }
    rd_kafka_resp_err_t delivered = RD_KAFKA_RESP_ERR__IN_PROGRESS;
    rd_kafka_conf_t *conf = ab_kafka_conf_new(cfg, "agentbus-kafka", errstr, sizeof(errstr));
    if (conf) {
        rd_kafka_conf_set(conf, "acks", "all", NULL, 0);
        rd_kafka_conf_set_dr_msg_cb(conf, on_delivery);
        rd_kafka_conf_set_opaque(conf, &delivered);
    }
    rd_kafka_t *rk = conf ? rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof(errstr)) : NULL;
    if (rk == NULL) {
        fprintf(stderr, "agentbus-kafka: %s\n", errstr);
        return 2;
    }
    rd_kafka_resp_err_t err = rd_kafka_producev(
        rk, RD_KAFKA_V_TOPIC(topic), RD_KAFKA_V_KEY(key, key ? strlen(key) : 0),
        RD_KAFKA_V_VALUE(value ? (void *)value : owned, len),
        RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_HEADERS(hdrs), RD_KAFKA_V_END);
    if (err) {
        rd_kafka_headers_destroy(hdrs);
    } else if (rd_kafka_flush(rk, 30000) != RD_KAFKA_RESP_ERR_NO_ERROR) {
        err = RD_KAFKA_RESP_ERR__TIMED_OUT;
    } else {
        err = delivered;
    }
    if (err)
        fprintf(stderr, "agentbus-kafka: produce to %s: %s\n", topic, rd_kafka_err2str(err));
    rd_kafka_destroy(rk);
    free(owned);
    return err ? 1 : 0;
}

static void print_message(const rd_kafka_message_t *rkm)
{
    json_t *headers = json_object();
    rd_kafka_headers_t *hdrs = NULL;
    if (rd_kafka_message_headers(rkm, &hdrs) == RD_KAFKA_RESP_ERR_NO_ERROR) {
        const char *name;
        const void *value;
        size_t size;
        for (size_t i = 0; rd_kafka_header_get_all(hdrs, i, &name, &value, &size) ==
                           RD_KAFKA_RESP_ERR_NO_ERROR;
             i++)
            json_object_set_new(headers, name, ab_json_text_or_hex(value, size));
    }
    /* The message's timestamp (ms since the epoch; the producer's clock when it is
     * CreateTime, Kafka's default), or null. */
    rd_kafka_timestamp_type_t ts_type;
    int64_t ts = rd_kafka_message_timestamp(rkm, &ts_type);
    json_t *line = json_pack("{s:s,s:i,s:I,s:o,s:o,s:o,s:o}", "topic",
                             rd_kafka_topic_name(rkm->rkt), "partition", (int)rkm->partition,
                             "offset", (json_int_t)rkm->offset, "timestamp",
                             ts >= 0 ? json_integer(ts) : json_null(), "key",
                             ab_json_text_or_hex(rkm->key, rkm->key_len), "value",
                             ab_json_text_or_hex(rkm->payload, rkm->len), "headers", headers);
    char *text = json_dumps(line, JSON_COMPACT | JSON_PRESERVE_ORDER);
    puts(text);
    fflush(stdout);
    free(text);
    json_decref(line);
}

static int consume(const struct ab_config *cfg, const char *topic, int argc, char **argv)
{
    char errstr[512], group[64];
    long count = -1, timeout_ms = 10000, idle_ms = -1;
    for (int i = 0; i < argc; i++) {
        if (strcmp(argv[i], "--count") == 0 && i + 1 < argc)
            count = strtol(argv[++i], NULL, 10);
        else if (strcmp(argv[i], "--timeout-ms") == 0 && i + 1 < argc)
            timeout_ms = strtol(argv[++i], NULL, 10);
        else if (strcmp(argv[i], "--idle-ms") == 0 && i + 1 < argc)
            idle_ms = strtol(argv[++i], NULL, 10);
        else
            return usage();
    }
    /* A fresh group that never commits: reads from the start, disturbs no real consumer. */
    char id[AB_UUID_LEN + 1];
    ab_uuid_v4(id);
    snprintf(group, sizeof(group), "agentbus-kafka-%s", id);
    rd_kafka_conf_t *conf = ab_kafka_conf_new(cfg, "agentbus-kafka", errstr, sizeof(errstr));
    if (conf == NULL || ab_kafka_conf_set(conf, "group.id", group, errstr, sizeof(errstr)) ||
        ab_kafka_conf_set(conf, "enable.auto.commit", "false", errstr, sizeof(errstr)) ||
        ab_kafka_conf_set(conf, "auto.offset.reset", "earliest", errstr, sizeof(errstr))) {
        fprintf(stderr, "agentbus-kafka: %s\n", errstr);
        return 2;
    }
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, errstr, sizeof(errstr));
    if (rk == NULL) {
        fprintf(stderr, "agentbus-kafka: %s\n", errstr);
        return 2;
    }
    rd_kafka_poll_set_consumer(rk);
    rd_kafka_topic_partition_list_t *topics = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(topics, topic, RD_KAFKA_PARTITION_UA);
    rd_kafka_subscribe(rk, topics);
    rd_kafka_topic_partition_list_destroy(topics);
    long seen = 0;
    int64_t deadline = ab_monotonic_ms() + timeout_ms, last_ms = 0;
    /* --idle-ms: what the topic holds now, without waiting out the timeout (the first message
     * comes once the group has joined, the rest right behind it). */
    while ((count < 0 || seen < count) && ab_monotonic_ms() < deadline &&
           !(idle_ms >= 0 && seen > 0 && ab_monotonic_ms() - last_ms >= idle_ms)) {
        rd_kafka_message_t *rkm = rd_kafka_consumer_poll(rk, 100);
        if (rkm == NULL)
            continue;
        if (rkm->err == RD_KAFKA_RESP_ERR_NO_ERROR) {
            print_message(rkm);
            seen++;
            last_ms = ab_monotonic_ms();
        }
        rd_kafka_message_destroy(rkm);
    }
    rd_kafka_consumer_close(rk);
    rd_kafka_destroy(rk);
    return count < 0 || seen >= count || (idle_ms >= 0 && seen > 0) ? 0 : 1;
}

int main(int argc, char **argv)
{
    char errstr[512];
    if (argc < 3)
        return usage();
    ab_log_init("kafka-tool", AB_LOG_WARN);
    struct ab_config *cfg = NULL;
    if (ab_config_load(AB_SVC_TOOL, NULL, &cfg, errstr, sizeof(errstr)) != AB_OK) {
        fprintf(stderr, "agentbus-kafka: %s\n", errstr);
        return 2;
    }
    int rc;
    if (strcmp(argv[1], "produce") == 0)
        rc = produce(cfg, argv[2], argc - 3, argv + 3);
    else if (strcmp(argv[1], "consume") == 0)
        rc = consume(cfg, argv[2], argc - 3, argv + 3);
    else
        rc = usage();
    ab_config_free(cfg);
    return rc;
}
