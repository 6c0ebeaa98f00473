/* agentbus-devbroker: the embedded default Kafka. Hosts librdkafka's mock cluster, which
 * speaks the Kafka protocol on loopback, creates agentbus' topics with their partition
 * counts, writes the bootstrap address to a file, and runs until SIGTERM/SIGINT.
 * Fault injection for tests: SIGUSR1 takes every broker down (connections drop, requests
 * fail), SIGUSR2 brings them back. The mock keeps its data in memory, for this process's
 * life only: it is a development and test broker, never a production one. */
#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/config.h"
#include "common/log.h"
#include "common/topics.h"

static void usage(void)
{
    fprintf(stderr, "usage: agentbus-devbroker [--brokers N] [--bootstrap-file PATH]\n"
                    "  Topic names take AGENTBUS_KAFKA_TOPIC_PREFIX (or kafka.topic_prefix).\n"
                    "  SIGUSR1: all brokers down; SIGUSR2: all brokers up; SIGTERM: exit.\n");
}

static int write_bootstrap(const char *path, const char *bootstraps)
{
    char tmp[4096];
    snprintf(tmp, sizeof(tmp), "%s.tmp", path);
    FILE *f = fopen(tmp, "w");
    if (f == NULL)
        return -1;
    fprintf(f, "%s\n", bootstraps);
    if (fclose(f) != 0)
        return -1;
    return rename(tmp, path); /* readers never see a half-written file */
}

int main(int argc, char **argv)
{
    int brokers = 1;
    const char *bootstrap_file = NULL;
    char errstr[512];
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--brokers") == 0 && i + 1 < argc) {
            brokers = (int)strtol(argv[++i], NULL, 10);
        } else if (strcmp(argv[i], "--bootstrap-file") == 0 && i + 1 < argc) {
            bootstrap_file = argv[++i];
        } else {
            usage();
            return strcmp(argv[i], "--help") == 0 ? 0 : 2;
        }
    }
    if (brokers < 1 || brokers > 9) {
        fprintf(stderr, "agentbus-devbroker: --brokers must be 1 to 9\n");
        return 2;
    }
    ab_log_init("devbroker", AB_LOG_INFO);
    struct ab_config *cfg = NULL;
    if (ab_config_load(0, NULL, &cfg, errstr, sizeof(errstr)) != AB_OK) {
        fprintf(stderr, "agentbus-devbroker: %s\n", errstr);
        return 2;
    }
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGUSR1);
    sigaddset(&set, SIGUSR2);
    pthread_sigmask(SIG_BLOCK, &set, NULL);

    /* The mock cluster hangs off a client handle; this one is never used to produce. */
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    rd_kafka_conf_set(conf, "client.id", "agentbus-devbroker", NULL, 0);
    rd_kafka_conf_set(conf, "log_level", "3", NULL, 0); /* it has no bootstrap.servers: quiet */
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof(errstr));
    if (rk == NULL) {
        fprintf(stderr, "agentbus-devbroker: %s\n", errstr);
        return 1;
    }
    rd_kafka_mock_cluster_t *mc = rd_kafka_mock_cluster_new(rk, brokers);
    if (mc == NULL) {
        fprintf(stderr, "agentbus-devbroker: cannot create the mock cluster\n");
        return 1;
    }
    const char *prefix = ab_config_str(cfg, AB_OPT_KAFKA_TOPIC_PREFIX);
    for (int t = 0; t < AB_TOPIC__COUNT; t++) {
        char name[256];
        ab_topic_name(prefix, (enum ab_topic)t, name, sizeof(name));
        rd_kafka_resp_err_t err = rd_kafka_mock_topic_create(
            mc, name, ab_topic_spec((enum ab_topic)t)->partitions, brokers < 3 ? brokers : 3);
        if (err)
            ab_warn("topic %s: %s", name, rd_kafka_err2str(err));
    }
    const char *bootstraps = rd_kafka_mock_cluster_bootstraps(mc);
    if (bootstrap_file && write_bootstrap(bootstrap_file, bootstraps) != 0) {
        fprintf(stderr, "agentbus-devbroker: cannot write %s\n", bootstrap_file);
        return 1;
    }
    ab_info("mock Kafka cluster of %d broker(s) at %s", brokers, bootstraps);
    printf("%s\n", bootstraps);
    fflush(stdout);

    for (;;) {
        int sig = 0;
        sigwait(&set, &sig);
        if (sig == SIGUSR1 || sig == SIGUSR2) {
            for (int id = 1; id <= brokers; id++) {
                if (sig == SIGUSR1)
                    rd_kafka_mock_broker_set_down(mc, id);
                else
                    rd_kafka_mock_broker_set_up(mc, id);
            }
            ab_info("brokers %s", sig == SIGUSR1 ? "down" : "up");
            continue;
        }
        break;
    }
    ab_info("stopping");
    rd_kafka_mock_cluster_destroy(mc);
    rd_kafka_destroy(rk);
    ab_config_free(cfg);
    return 0;
}
