/* Shared Kafka plumbing for common/kafka_producer.c and common/kafka_consumer.c. */
#include "common/kafka.h"

#include <stdio.h>
#include <string.h>

enum ab_err ab_kafka_conf_set(rd_kafka_conf_t *conf, const char *name, const char *value,
                              char *errstr, size_t size)
{
    char why[256];
    if (rd_kafka_conf_set(conf, name, value, why, sizeof(why)) != RD_KAFKA_CONF_OK) {
        snprintf(errstr, size, "kafka property %s: %s", name, why);
        return AB_ERR_CONFIG;
    }
    return AB_OK;
}

enum ab_err ab_kafka_conf_default(rd_kafka_conf_t *conf, const struct ab_config *cfg,
                                  const char *name, const char *value, char *errstr, size_t size)
{
    if (json_object_get(ab_config_object(cfg, AB_OPT_KAFKA_PROPERTIES), name) != NULL)
        return AB_OK; /* ab_kafka_conf_new has set it already */
    return ab_kafka_conf_set(conf, name, value, errstr, size);
}

rd_kafka_conf_t *ab_kafka_conf_new(const struct ab_config *cfg, const char *client_id,
                                   char *errstr, size_t size)
{
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    if (ab_kafka_conf_set(conf, "bootstrap.servers", ab_config_str(cfg, AB_OPT_KAFKA_BOOTSTRAP),
                          errstr, size) ||
        ab_kafka_conf_set(conf, "client.id", client_id, errstr, size) ||
        /* Reconnect quickly after a broker restart, but back off to a sane ceiling. */
        ab_kafka_conf_set(conf, "reconnect.backoff.ms", "100", errstr, size) ||
        ab_kafka_conf_set(conf, "reconnect.backoff.max.ms", "2000", errstr, size))
        goto fail;
    const char *key;
    json_t *value;
    json_object_foreach(ab_config_object(cfg, AB_OPT_KAFKA_PROPERTIES), key, value)
    {
        char text[64];
        const char *v = text;
        if (json_is_string(value))
            v = json_string_value(value);
        else if (json_is_integer(value))
            snprintf(text, sizeof(text), "%" JSON_INTEGER_FORMAT, json_integer_value(value));
        else if (json_is_boolean(value))
            v = json_is_true(value) ? "true" : "false";
        else {
            snprintf(errstr, size, "kafka.properties.%s must be a string, integer or boolean",
                     key);
            goto fail;
        }
        if (ab_kafka_conf_set(conf, key, v, errstr, size))
            goto fail;
    }
    return conf;
fail:
    rd_kafka_conf_destroy(conf);
    return NULL;
}

bool ab_kafka_reachable(rd_kafka_t *rk, int timeout_ms)
{
    const struct rd_kafka_metadata *md = NULL;
    /* all_topics=0 with no topic asks only for brokers and locally known topics: cheap. */
    rd_kafka_resp_err_t err = rd_kafka_metadata(rk, 0, NULL, &md, timeout_ms);
    if (err != RD_KAFKA_RESP_ERR_NO_ERROR)
        return false;
    bool ok = md->broker_cnt > 0;
    rd_kafka_metadata_destroy(md);
    return ok;
}

enum ab_err ab_kafka_err(rd_kafka_resp_err_t err)
{
    switch (err) {
    case RD_KAFKA_RESP_ERR_NO_ERROR:
        return AB_OK;
    case RD_KAFKA_RESP_ERR__MSG_TIMED_OUT:
    case RD_KAFKA_RESP_ERR__TIMED_OUT:
    case RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT:
        return AB_ERR_TIMEOUT;
    case RD_KAFKA_RESP_ERR__QUEUE_FULL:
        return AB_ERR_RATE_LIMITED;
    case RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE:
        return AB_ERR_TOO_LARGE;
    case RD_KAFKA_RESP_ERR__INVALID_ARG:
    case RD_KAFKA_RESP_ERR_INVALID_MSG:
        return AB_ERR_INVALID;
    case RD_KAFKA_RESP_ERR__FATAL:
    case RD_KAFKA_RESP_ERR__PURGE_QUEUE:
    case RD_KAFKA_RESP_ERR__PURGE_INFLIGHT:
        return AB_ERR_UNAVAILABLE;
    case RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED:
    case RD_KAFKA_RESP_ERR_CLUSTER_AUTHORIZATION_FAILED:
        return AB_ERR_FORBIDDEN;
    default:
        return AB_ERR_UNAVAILABLE;
    }
}
