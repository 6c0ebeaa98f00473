/* Tests for ab_kafka_stats_lag (common/kafka_consumer.c): the consumer lag read from
 * librdkafka's statistics JSON, in the shape librdkafka 2.0 emits it for a consumer (fields
 * as in its STATISTICS.md; brokers and most counters trimmed). */
#include "test.h"

#include "common/kafka_consumer.h"

/* One partition object as librdkafka writes it. */
#define PART(id, state, lo, hi, ls, stored, committed, lag, lag_stored)                            \
    "\"" #id "\": {\"partition\": " #id ", \"broker\": 1, \"leader\": 1, \"desired\": true, "      \
    "\"unknown\": false, \"msgq_cnt\": 0, \"msgq_bytes\": 0, \"xmit_msgq_cnt\": 0, "               \
    "\"xmit_msgq_bytes\": 0, \"fetchq_cnt\": 0, \"fetchq_size\": 0, \"fetch_state\": \"" state     \
    "\", \"query_offset\": -1001, \"next_offset\": " #hi ", \"app_offset\": " #stored ", "         \
    "\"stored_offset\": " #stored ", \"commited_offset\": " #committed ", "                        \
    "\"committed_offset\": " #committed ", \"eof_offset\": -1001, \"lo_offset\": " #lo ", "        \
    "\"hi_offset\": " #hi ", \"ls_offset\": " #ls ", \"consumer_lag\": " #lag ", "                 \
    "\"consumer_lag_stored\": " #lag_stored ", \"txmsgs\": 0, \"txbytes\": 0, \"rxmsgs\": 12, "    \
    "\"rxbytes\": 4096, \"msgs\": 12, \"rx_ver_drops\": 0, \"msgs_inflight\": 0, "                 \
    "\"next_ack_seq\": 0, \"next_err_seq\": 0, \"acked_msgid\": 0}"

static const char sample[] =
    "{\"name\": \"agentbus-dispatcher-host#consumer-2\", \"client_id\": "
    "\"agentbus-dispatcher-host\", "
    "\"type\": \"consumer\", \"ts\": 5316463409, \"time\": 1718000000, \"age\": 10012345, "
    "\"replyq\": 0, \"msg_cnt\": 0, \"msg_size\": 0, \"msg_max\": 100000, "
    "\"msg_size_max\": 1073741824, \"simple_cnt\": 0, \"metadata_cache_cnt\": 2, "
    "\"brokers\": {\"127.0.0.1:39093/1\": {\"name\": \"127.0.0.1:39093/1\", \"nodeid\": 1, "
    "\"state\": \"UP\", \"toppars\": {\"x.agentbus.ingress-0\": {\"topic\": "
    "\"x.agentbus.ingress\", "
    "\"partition\": 0}}}}, "
    "\"topics\": {"
    "\"x.agentbus.ingress\": {\"topic\": \"x.agentbus.ingress\", \"age\": 10003, "
    "\"metadata_age\": 3001, \"batchsize\": {\"min\": 0, \"max\": 0}, "
    "\"batchcnt\": {\"min\": 0, \"max\": 0}, \"partitions\": {"
    /* both known: the smaller (the stored offset is ahead of the last commit) */
    PART(0, "active", 0, 120, 120, 117, 110, 10, 3) ", "
    /* only the commit known (nothing finished since the assignment) */
    PART(1, "active", 0, 40, 40, -1001, 40, 0, -1) ", "
    /* not ours: never assigned to this member */
    PART(2, "none", -1001, -1001, -1001, -1001, -1001, -1, -1) ", "
    /* empty, nothing committed yet: 0, whatever the start */
    PART(3, "active", 7, 7, 7, -1001, -1001, -1, -1) ", "
    /* messages, nothing committed or stored yet: unknown */
    PART(4, "offset-query", 0, 9, 9, -1001, -1001, -1, -1) ", "
    /* being revoked */
    PART(5, "stopping", 0, 50, 50, 20, 20, 30, 30) ", "
    /* librdkafka's internal UnAssigned partition */
    PART(
        -1, "none", -1001, -1001, -1001, -1001, -1001, -1,
        -1) "}}, "
            "\"x.agentbus.events\": {\"topic\": \"x.agentbus.events\", \"age\": 10003, "
            "\"metadata_age\": 3001, \"partitions\": {" PART(
                11, "active", 100, 250, 250, -1001, 200, 50,
                -1) "}}}, "
                    "\"cgrp\": {\"state\": \"up\", \"stateage\": 9001, \"join_state\": \"steady\", "
                    "\"rebalance_age\": 8000, \"rebalance_cnt\": 1, \"rebalance_reason\": \"\", "
                    "\"assignment_size\": 5}, "
                    "\"tx\": 40, \"tx_bytes\": 4000, \"rx\": 40, \"rx_bytes\": 9000, \"txmsgs\": "
                    "0, "
                    "\"txmsg_bytes\": 0, \"rxmsgs\": 12, \"rxmsg_bytes\": 4096}";

static const struct ab_kafka_lag *find(const struct ab_kafka_lag *lags, int n, const char *topic,
                                       int32_t partition)
{
    for (int i = 0; i < n; i++)
        if (lags[i].partition == partition && strcmp(lags[i].topic, topic) == 0)
            return &lags[i];
    return NULL;
}

TEST(kafka_stats_lag_reads_the_partitions_this_consumer_fetches)
{
    struct ab_kafka_lag *lags = NULL;
    int n = ab_kafka_stats_lag(sample, strlen(sample), &lags);
    CHECK_INT_EQ(n, 4);
    const char *in = "x.agentbus.ingress", *ev = "x.agentbus.events";
    const struct ab_kafka_lag *l = find(lags, n, in, 0);
    REQUIRE(l != NULL);
    CHECK_INT_EQ(l->lag, 3);
    REQUIRE((l = find(lags, n, in, 1)) != NULL);
    CHECK_INT_EQ(l->lag, 0);
    REQUIRE((l = find(lags, n, in, 3)) != NULL);
    CHECK_INT_EQ(l->lag, 0);
    REQUIRE((l = find(lags, n, ev, 11)) != NULL);
    CHECK_INT_EQ(l->lag, 50);
    CHECK(find(lags, n, in, 2) == NULL);  /* not fetched */
    CHECK(find(lags, n, in, 4) == NULL);  /* unknown */
    CHECK(find(lags, n, in, 5) == NULL);  /* on its way out */
    CHECK(find(lags, n, in, -1) == NULL); /* internal */
    free(lags);
}

TEST(kafka_stats_lag_without_topics_or_partitions_is_empty)
{
    static const char *const texts[] = {
        "{\"name\": \"c\", \"type\": \"consumer\"}",
        "{\"topics\": {}}",
        "{\"topics\": {\"t\": {\"topic\": \"t\"}}}",
        "{\"topics\": {\"t\": {\"partitions\": {\"0\": {\"partition\": 0}}}}}", /* no state */
        "{\"topics\": [1, 2]}",
        "{\"topics\": {\"t\": {\"partitions\": {\"0\": {\"partition\": \"0\", "
        "\"fetch_state\": \"active\", \"consumer_lag\": 4}}}}}", /* id not a number */
    };
    for (size_t i = 0; i < sizeof(texts) / sizeof(texts[0]); i++) {
        struct ab_kafka_lag *lags = (struct ab_kafka_lag *)1;
        CHECK_INT_EQ(ab_kafka_stats_lag(texts[i], strlen(texts[i]), &lags), 0);
        CHECK(lags == NULL);
    }
}

TEST(kafka_stats_lag_rejects_what_is_not_statistics)
{
    static const char *const texts[] = {"", "not json", "[]", "42", "{\"topics\": {"};
    for (size_t i = 0; i < sizeof(texts) / sizeof(texts[0]); i++) {
        struct ab_kafka_lag *lags = (struct ab_kafka_lag *)1;
        CHECK_INT_EQ(ab_kafka_stats_lag(texts[i], strlen(texts[i]), &lags), -1);
        CHECK(lags == NULL);
    }
}

TEST(kafka_stats_lag_many_partitions_and_a_long_topic_name)
{
    /* 300 partitions (the array grows), and a topic name too long for a label is left out. */
    size_t cap = 300 * 200 + 1024;
    char *json = malloc(cap);
    REQUIRE(json != NULL);
    size_t len = (size_t)snprintf(json, cap, "{\"topics\": {\"t\": {\"partitions\": {");
    for (int p = 0; p < 300; p++)
        len += (size_t)snprintf(json + len, cap - len,
                                "%s\"%d\": {\"partition\": %d, \"fetch_state\": \"active\", "
                                "\"consumer_lag\": %d, \"consumer_lag_stored\": -1}",
                                p ? ", " : "", p, p, p * 2);
    len += (size_t)snprintf(json + len, cap - len, "}}, \"");
    for (int i = 0; i < 300; i++)
        json[len++] = 'x';
    len += (size_t)snprintf(json + len, cap - len,
                            "\": {\"partitions\": {\"0\": {\"partition\": 0, "
                            "\"fetch_state\": \"active\", \"consumer_lag\": 1}}}}}");
    struct ab_kafka_lag *lags = NULL;
    int n = ab_kafka_stats_lag(json, len, &lags);
    CHECK_INT_EQ(n, 300);
    for (int i = 0; i < n && i < 300; i++)
        CHECK_INT_EQ(lags[i].lag, lags[i].partition * 2);
    free(lags);
    free(json);
}
