/* agentbus-topics: creates agentbus' topics, with their partition counts, on a real Kafka
 * cluster through the Admin API (the mock cluster of agentbus-devbroker creates its own).
 * Idempotent: topics that exist are left as they are. Used by `make kafka`, CI and the
 * Kubernetes topic Job. */
#include <librdkafka/rdkafka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/config.h"
#include "common/kafka.h"
#include "common/log.h"
#include "common/topics.h"

int main(int argc, char **argv)
{
    char errstr[512];
    int replication = 1, partitions = 0;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--replication-factor") == 0 && i + 1 < argc) {
            replication = (int)strtol(argv[++i], NULL, 10);
        } else if (strcmp(argv[i], "--partitions") == 0 && i + 1 < argc) {
            partitions = (int)strtol(argv[++i], NULL, 10); /* tests: fewer, faster topics */
        } else {
            fprintf(stderr, "usage: agentbus-topics [--replication-factor N] [--partitions N]\n"
                            "  Needs KAFKA_BOOTSTRAP (or kafka.bootstrap in AGENTBUS_CONFIG).\n");
            return strcmp(argv[i], "--help") == 0 ? 0 : 2;
        }
    }
    if (replication < 1 || replication > 32 || partitions < 0 || partitions > 10000) {
        fprintf(stderr, "agentbus-topics: --replication-factor must be 1 to 32 and "
                        "--partitions 1 to 10000\n");
        return 2;
    }
    ab_log_init("topics", AB_LOG_INFO);
    struct ab_config *cfg = NULL;
    if (ab_config_load(AB_SVC_TOOL, NULL, &cfg, errstr, sizeof(errstr)) != AB_OK) {
        fprintf(stderr, "agentbus-topics: %s\n", errstr);
        return 2;
    }
    rd_kafka_conf_t *conf = ab_kafka_conf_new(cfg, "agentbus-topics", errstr, sizeof(errstr));
    rd_kafka_t *rk = conf ? rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof(errstr)) : NULL;
    if (rk == NULL) {
        fprintf(stderr, "agentbus-topics: %s\n", errstr);
        return 2;
    }
    rd_kafka_NewTopic_t *topics[AB_TOPIC__COUNT];
    for (int t = 0; t < AB_TOPIC__COUNT; t++) {
        char name[256];
        ab_topic_name(ab_config_str(cfg, AB_OPT_KAFKA_TOPIC_PREFIX), (enum ab_topic)t, name,
                      sizeof(name));
        int count = partitions > 0 ? partitions : ab_topic_spec((enum ab_topic)t)->partitions;
        topics[t] = rd_kafka_NewTopic_new(name, count,
                                          replication, errstr, sizeof(errstr));
        if (topics[t] == NULL) {
            fprintf(stderr, "agentbus-topics: topic %s: %s\n", name, errstr);
            return 2;
        }
    }
    rd_kafka_queue_t *queue = rd_kafka_queue_new(rk);
    rd_kafka_AdminOptions_t *opts = rd_kafka_AdminOptions_new(rk, RD_KAFKA_ADMIN_OP_CREATETOPICS);
    rd_kafka_AdminOptions_set_operation_timeout(opts, 30000, errstr, sizeof(errstr));
    rd_kafka_AdminOptions_set_request_timeout(opts, 60000, errstr, sizeof(errstr));
    rd_kafka_CreateTopics(rk, topics, AB_TOPIC__COUNT, opts, queue);
    rd_kafka_event_t *ev = rd_kafka_queue_poll(queue, 90000);
    int rc = 0;
    if (ev == NULL || rd_kafka_event_error(ev)) {
        fprintf(stderr, "agentbus-topics: %s\n",
                ev ? rd_kafka_event_error_string(ev) : "no answer from the cluster in 90 s");
        rc = 1;
    } else {
        size_t n = 0;
        const rd_kafka_topic_result_t **res =
            rd_kafka_CreateTopics_result_topics(rd_kafka_event_CreateTopics_result(ev), &n);
        for (size_t i = 0; i < n; i++) {
            rd_kafka_resp_err_t err = rd_kafka_topic_result_error(res[i]);
            const char *name = rd_kafka_topic_result_name(res[i]);
            if (err == RD_KAFKA_RESP_ERR_NO_ERROR)
                ab_info("topic %s created", name);
            else if (err == RD_KAFKA_RESP_ERR_TOPIC_ALREADY_EXISTS)
                ab_info("topic %s exists", name);
            else {
                ab_error("topic %s: %s", name, rd_kafka_topic_result_error_string(res[i]));
                rc = 1;
            }
        }
    }
    if (ev)
        rd_kafka_event_destroy(ev);
    rd_kafka_AdminOptions_destroy(opts);
    rd_kafka_NewTopic_destroy_array(topics, AB_TOPIC__COUNT);
    rd_kafka_queue_destroy(queue);
    rd_kafka_destroy(rk);
    ab_config_free(cfg);
    return rc;
}
