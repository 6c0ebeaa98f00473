/* What the Kafka producer and consumer share: client configuration from our config,
 * message headers, broker reachability, and the conversion of librdkafka's codes. */
#ifndef AB_KAFKA_H
#define AB_KAFKA_H

#include <librdkafka/rdkafka.h>
#include <stddef.h>

#include "common/config.h"
#include "common/errors.h"

struct ab_kafka_header {
    const char *name;
    const void *value;
    size_t len;
};

/* A librdkafka configuration with bootstrap servers, client.id and the extra properties
 * of kafka.properties applied. @returns NULL with errstr set on an invalid property.
 * @ownership passed to rd_kafka_new, or freed with rd_kafka_conf_destroy. */
rd_kafka_conf_t *ab_kafka_conf_new(const struct ab_config *cfg, const char *client_id,
                                   char *errstr, size_t errstr_size);

/* Sets one property; @returns AB_OK or AB_ERR_CONFIG with errstr naming it. */
enum ab_err ab_kafka_conf_set(rd_kafka_conf_t *conf, const char *name, const char *value,
                              char *errstr, size_t errstr_size);

/* Sets one property unless kafka.properties names it: our default, the operator's word.
 * @returns AB_OK or AB_ERR_CONFIG with errstr naming it. */
enum ab_err ab_kafka_conf_default(rd_kafka_conf_t *conf, const struct ab_config *cfg,
                                  const char *name, const char *value, char *errstr,
                                  size_t errstr_size);

/* Asks a broker for metadata: true when a broker answered within timeout_ms. Used by the
 * readiness check. @thread safe (any thread, any handle). */
bool ab_kafka_reachable(rd_kafka_t *rk, int timeout_ms);

/* librdkafka error -> project error. */
enum ab_err ab_kafka_err(rd_kafka_resp_err_t err);

#endif
