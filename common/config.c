/* The option table and its strict loader. Every option lives in one row of `options`
 * below (the redis habit): adding an option is adding a row, and the docs table, the
 * start-up printout, the env names and the validation all follow from it. */
#include "common/config.h"

#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "common/util.h"

#define PORT(def) AB_OPT_INT, def, 1, 65535, NULL
#define ANY_STRING(def, maxlen) AB_OPT_STRING, def, 0, maxlen, NULL

static const struct ab_option options[AB_OPT__COUNT] = {
    [AB_OPT_DATABASE_URL] = { "database.url", "AGENTBUS_DATABASE_URL", "DATABASE_URL",
                              AB_OPT_STRING, NULL, 1, 4096, NULL,
                              AB_OPT_SECRET | AB_OPT_REQUIRED, AB_SVC_ALL,
                              "PostgreSQL connection URI (postgresql://user:pass@host/db)" },
    [AB_OPT_DATABASE_POOL_SIZE] = { "database.pool_size", "AGENTBUS_DATABASE_POOL_SIZE", NULL,
                                    AB_OPT_INT, "4", 1, 64, NULL, 0, AB_SVC_ALL,
                                    "PostgreSQL connections per process (ingress opens one more, to LISTEN)" },
    [AB_OPT_DATABASE_CONNECT_TIMEOUT_S] = { "database.connect_timeout_s",
                                            "AGENTBUS_DATABASE_CONNECT_TIMEOUT_S", NULL,
                                            AB_OPT_INT, "5", 1, 60, NULL, 0,
                                            AB_SVC_ALL | AB_SVC_TOOL,
                                            "seconds to wait for a PostgreSQL connection" },
    [AB_OPT_DATABASE_MIGRATIONS_DIR] = { "database.migrations_dir",
                                         "AGENTBUS_DATABASE_MIGRATIONS_DIR", NULL,
                                         ANY_STRING("deploy/migrations", 4096), 0,
                                         AB_SVC_ALL | AB_SVC_TOOL,
                                         "directory of the numbered NNNN_name.sql migrations" },
    [AB_OPT_DATABASE_MIGRATE] = { "database.migrate", "AGENTBUS_DATABASE_MIGRATE", NULL,
                                  AB_OPT_BOOL, "true", 0, 0, NULL, 0, AB_SVC_ALL,
                                  "apply pending migrations at start (under an advisory lock)" },
    [AB_OPT_KAFKA_BOOTSTRAP] = { "kafka.bootstrap", "AGENTBUS_KAFKA_BOOTSTRAP", "KAFKA_BOOTSTRAP",
                                 AB_OPT_STRING, NULL, 1, 4096, NULL, AB_OPT_REQUIRED,
                                 AB_SVC_ALL | AB_SVC_TOOL, "Kafka bootstrap servers (host:port,...)" },
    [AB_OPT_KAFKA_TOPIC_PREFIX] = { "kafka.topic_prefix", "AGENTBUS_KAFKA_TOPIC_PREFIX", NULL,
                                    ANY_STRING("", 100), 0, AB_SVC_ALL | AB_SVC_TOOL,
                                    "prefix for every topic name (e.g. \"staging.\")" },
    [AB_OPT_KAFKA_PRODUCE_TIMEOUT_MS] = { "kafka.produce_timeout_ms",
                                          "AGENTBUS_KAFKA_PRODUCE_TIMEOUT_MS", NULL, AB_OPT_INT,
                                          "15000", 1000, 300000, NULL, 0, AB_SVC_ALL,
                                          "how long a send may wait for the broker's ack" },
    [AB_OPT_KAFKA_SESSION_TIMEOUT_MS] = { "kafka.session_timeout_ms",
                                          "AGENTBUS_KAFKA_SESSION_TIMEOUT_MS", NULL, AB_OPT_INT,
                                          "45000", 6000, 300000, NULL, 0, AB_SVC_ALL,
                                          "consumer group session timeout" },
    [AB_OPT_KAFKA_MAX_POLL_INTERVAL_MS] = { "kafka.max_poll_interval_ms",
                                            "AGENTBUS_KAFKA_MAX_POLL_INTERVAL_MS", NULL, AB_OPT_INT,
                                            "300000", 10000, 86400000, NULL, 0, AB_SVC_ALL,
                                            "longest time between two polls of a consumer" },
    [AB_OPT_KAFKA_RETRY_BACKOFF_MAX_MS] = { "kafka.retry_backoff_max_ms",
                                            "AGENTBUS_KAFKA_RETRY_BACKOFF_MAX_MS", NULL, AB_OPT_INT,
                                            "10000", 100, 600000, NULL, 0, AB_SVC_ALL,
                                            "longest pause before a failed event is retried" },
    [AB_OPT_KAFKA_FETCH_WAIT_MAX_MS] = { "kafka.fetch_wait_max_ms",
                                         "AGENTBUS_KAFKA_FETCH_WAIT_MAX_MS", NULL, AB_OPT_INT,
                                         "500", 1, 60000, NULL, 0, AB_SVC_ALL,
                                         "longest a consumer's fetch waits for data (Kafka answers "
                                         "as data arrives; the dev broker only after this)" },
    [AB_OPT_KAFKA_PROPERTIES] = { "kafka.properties", "AGENTBUS_KAFKA_PROPERTIES", NULL,
                                  AB_OPT_OBJECT, "{}", 0, 0, NULL, AB_OPT_SECRET,
                                  AB_SVC_ALL | AB_SVC_TOOL,
                                  "extra librdkafka properties (e.g. security.protocol, sasl.*)" },
    [AB_OPT_LOG_LEVEL] = { "log.level", "AGENTBUS_LOG_LEVEL", NULL, AB_OPT_STRING, "info", 0, 16,
                           "debug|info|warn|error", 0, AB_SVC_ALL | AB_SVC_TOOL,
                           "lowest level written" },
    [AB_OPT_LISTEN_HOST] = { "listen.host", "AGENTBUS_LISTEN_HOST", NULL,
                             ANY_STRING("0.0.0.0", 255), 0, AB_SVC_ALL,
                             "IPv4 address every HTTP listener binds" },
    [AB_OPT_HTTP_MAX_BODY_BYTES] = { "http.max_body_bytes", "AGENTBUS_HTTP_MAX_BODY_BYTES", NULL,
                                     AB_OPT_INT, "1048576", 1024, 67108864, NULL, 0,
                                     AB_SVC_INGRESS, "largest request body; larger gets 413" },
    [AB_OPT_HTTP_CONNECTION_LIMIT] = { "http.connection_limit", "AGENTBUS_HTTP_CONNECTION_LIMIT",
                                       NULL, AB_OPT_INT, "1000", 4, 100000, NULL, 0, AB_SVC_ALL,
                                       "concurrent connections per listener" },
    [AB_OPT_HTTP_IDLE_TIMEOUT_S] = { "http.idle_timeout_s", "AGENTBUS_HTTP_IDLE_TIMEOUT_S", NULL,
                                     AB_OPT_INT, "120", 1, 3600, NULL, 0, AB_SVC_ALL,
                                     "an idle connection is closed after this many seconds" },
    [AB_OPT_SHUTDOWN_TIMEOUT_S] = { "shutdown.timeout_s", "AGENTBUS_SHUTDOWN_TIMEOUT_S", NULL,
                                    AB_OPT_INT, "25", 1, 600, NULL, 0, AB_SVC_ALL,
                                    "on SIGTERM, how long in-flight work may take to finish" },
    [AB_OPT_ADMIN_TOKEN] = { "admin.token", "AGENTBUS_ADMIN_TOKEN", NULL, AB_OPT_STRING, NULL, 16,
                             512, NULL, AB_OPT_SECRET | AB_OPT_REQUIRED, AB_SVC_INGRESS,
                             "bearer token of the admin API (at least 16 characters)" },
    [AB_OPT_GATEWAY_LEASE_S] = { "gateway.lease_s", "AGENTBUS_GATEWAY_LEASE_S", NULL, AB_OPT_INT,
                                 "120", 5, 86400, NULL, 0, AB_SVC_INGRESS,
                                 "a polled message not reported within this is delivered again" },
    [AB_OPT_GATEWAY_POLL_BATCH] = { "gateway.poll_batch", "AGENTBUS_GATEWAY_POLL_BATCH", NULL,
                                    AB_OPT_INT, "20", 1, 500, NULL, 0, AB_SVC_INGRESS,
                                    "most messages one poll returns" },
    [AB_OPT_GATEWAY_MAX_CONTENT_BYTES] = { "gateway.max_content_bytes",
                                           "AGENTBUS_GATEWAY_MAX_CONTENT_BYTES", NULL, AB_OPT_INT,
                                           "65536", 256, 524288, NULL, 0, AB_SVC_INGRESS,
                                           "largest message content or report result" },
    [AB_OPT_GATEWAY_PUBLIC_URL] = { "gateway.public_url", "AGENTBUS_GATEWAY_PUBLIC_URL", NULL,
                                    ANY_STRING("", 2048), 0, AB_SVC_INGRESS,
                                    "base URL agents reach the gateway at, for the setup guide "
                                    "(empty: the Host the agent called)" },
    [AB_OPT_GATEWAY_OFFLINE_AFTER_S] = { "gateway.offline_after_s",
                                         "AGENTBUS_GATEWAY_OFFLINE_AFTER_S", NULL, AB_OPT_INT,
                                         "300", 10, 2592000, NULL, 0, AB_SVC_INGRESS,
                                         "an OpenClaw agent not seen for this long is offline" },
    [AB_OPT_SEED] = { "seed", "AGENTBUS_SEED", NULL, AB_OPT_OBJECT, "{}", 0, 0, NULL,
                      AB_OPT_SECRET, AB_SVC_INGRESS,
                      "records applied at start: tenants, models, agents, members, "
                      "relationships, channels (docs/seeding.md)" },
    [AB_OPT_INGRESS_API_PORT] = { "ingress.api_port", "AGENTBUS_INGRESS_API_PORT", NULL,
                                  PORT("8080"), 0, AB_SVC_INGRESS, "agent gateway and admin API" },
    [AB_OPT_INGRESS_WEBHOOK_PORT] = { "ingress.webhook_port", "AGENTBUS_INGRESS_WEBHOOK_PORT", NULL,
                                      PORT("3011"), 0, AB_SVC_INGRESS, "incoming webhooks" },
    [AB_OPT_INGRESS_WEBHOOK_HOST] = { "ingress.webhook_host", "AGENTBUS_INGRESS_WEBHOOK_HOST",
                                      NULL, ANY_STRING("", 255), 0, AB_SVC_INGRESS,
                                      "address the webhook listener binds (IPv4 or IPv6; \"::\" "
                                      "takes both); empty: listen.host" },
    [AB_OPT_INGRESS_OPS_PORT] = { "ingress.ops_port", "AGENTBUS_INGRESS_OPS_PORT", NULL,
                                  PORT("9100"), 0, AB_SVC_INGRESS, "/livez /readyz /metrics" },
    [AB_OPT_DISPATCHER_OPS_PORT] = { "dispatcher.ops_port", "AGENTBUS_DISPATCHER_OPS_PORT", NULL,
                                     PORT("9101"), 0, AB_SVC_DISPATCHER, "/livez /readyz /metrics" },
    [AB_OPT_LLM_WORKER_OPS_PORT] = { "llm_worker.ops_port", "AGENTBUS_LLM_WORKER_OPS_PORT", NULL,
                                     PORT("9102"), 0, AB_SVC_LLM_WORKER, "/livez /readyz /metrics" },
    [AB_OPT_LLM_MAX_IN_FLIGHT] = { "llm_worker.max_in_flight", "AGENTBUS_LLM_WORKER_MAX_IN_FLIGHT",
                                   NULL, AB_OPT_INT, "256", 1, 10000, NULL, 0, AB_SVC_LLM_WORKER,
                                   "LLM requests one process holds at once (calls, retries "
                                   "waiting, turns queued behind their conversation)" },
    [AB_OPT_LLM_DB_THREADS] = { "llm_worker.db_threads", "AGENTBUS_LLM_WORKER_DB_THREADS", NULL,
                                AB_OPT_INT, "4", 1, 64, NULL, 0, AB_SVC_LLM_WORKER,
                                "threads that load prompts and store results (each borrows "
                                "a database.pool_size connection)" },
    [AB_OPT_LLM_HISTORY_TURNS] = { "llm_worker.history_turns", "AGENTBUS_LLM_WORKER_HISTORY_TURNS",
                                   NULL, AB_OPT_INT, "20", 0, 500, NULL, 0, AB_SVC_LLM_WORKER,
                                   "earlier turns of the conversation sent with each request" },
    [AB_OPT_LLM_MAX_HOPS] = { "llm_worker.max_hops", "AGENTBUS_LLM_WORKER_MAX_HOPS", NULL,
                              AB_OPT_INT, "4", 0, 100, NULL, 0, AB_SVC_LLM_WORKER,
                              "native agents answer a message from a native agent only while "
                              "fewer than this many answers led to it" },
    [AB_OPT_LLM_MAX_ATTEMPTS] = { "llm_worker.max_attempts", "AGENTBUS_LLM_WORKER_MAX_ATTEMPTS",
                                  NULL, AB_OPT_INT, "3", 1, 10, NULL, 0, AB_SVC_LLM_WORKER,
                                  "calls per model (the first included) for connection errors, "
                                  "429 and 5xx; then the fallback model" },
    [AB_OPT_LLM_RETRY_BASE_MS] = { "llm_worker.retry_base_ms", "AGENTBUS_LLM_WORKER_RETRY_BASE_MS",
                                   NULL, AB_OPT_INT, "1000", 0, 600000, NULL, 0,
                                   AB_SVC_LLM_WORKER,
                                   "backoff after the first failed call (doubling, equal jitter)" },
    [AB_OPT_LLM_RETRY_MAX_MS] = { "llm_worker.retry_max_ms", "AGENTBUS_LLM_WORKER_RETRY_MAX_MS",
                                  NULL, AB_OPT_INT, "30000", 0, 3600000, NULL, 0,
                                  AB_SVC_LLM_WORKER, "the backoff never grows past this" },
    [AB_OPT_LLM_RETRY_AFTER_CAP_MS] = { "llm_worker.retry_after_cap_ms",
                                        "AGENTBUS_LLM_WORKER_RETRY_AFTER_CAP_MS", NULL,
                                        AB_OPT_INT, "60000", 0, 3600000, NULL, 0,
                                        AB_SVC_LLM_WORKER,
                                        "a provider's Retry-After is honoured up to this" },
    [AB_OPT_LLM_MAX_RESPONSE_BYTES] = { "llm_worker.max_response_bytes",
                                        "AGENTBUS_LLM_WORKER_MAX_RESPONSE_BYTES", NULL,
                                        AB_OPT_INT, "4194304", 1024, 67108864, NULL, 0,
                                        AB_SVC_LLM_WORKER,
                                        "cap on one provider response (stream or body)" },
    [AB_OPT_NOTIFIER_OPS_PORT] = { "notifier.ops_port", "AGENTBUS_NOTIFIER_OPS_PORT", NULL,
                                   PORT("9103"), 0, AB_SVC_NOTIFIER, "/livez /readyz /metrics" },
    [AB_OPT_WEBHOOKS] = { "webhooks", "AGENTBUS_WEBHOOKS", NULL, AB_OPT_OBJECT, "{}", 0, 0, NULL,
                          AB_OPT_SECRET, AB_SVC_DISPATCHER | AB_SVC_NOTIFIER | AB_SVC_INGRESS,
                          "webhooks: incoming {enabled, port, secret, secretHeader, "
                          "allowedIPs, ...}, handlers[] (docs/webhooks.md), outgoing[] "
                          "endpoints {id, url, events, method, secret, retry} "
                          "(docs/notifier.md)" },
    [AB_OPT_NOTIFIER_MAX_IN_FLIGHT] = { "notifier.max_in_flight",
                                        "AGENTBUS_NOTIFIER_MAX_IN_FLIGHT", NULL, AB_OPT_INT,
                                        "2048", 1, 100000, NULL, 0, AB_SVC_NOTIFIER,
                                        "deliveries one process holds at once (requests in "
                                        "flight, queued behind their destination, recording)" },
    [AB_OPT_NOTIFIER_DB_THREADS] = { "notifier.db_threads", "AGENTBUS_NOTIFIER_DB_THREADS", NULL,
                                     AB_OPT_INT, "2", 1, 64, NULL, 0, AB_SVC_NOTIFIER,
                                     "threads that prepare deliveries and record attempts in "
                                     "batches (each borrows a pool connection)" },
    [AB_OPT_NOTIFIER_RETRY_SCHEDULE_MS] = { "notifier.retry_schedule_ms",
                                            "AGENTBUS_NOTIFIER_RETRY_SCHEDULE_MS", NULL,
                                            AB_OPT_STRING,
                                            "5000,300000,1800000,7200000,18000000,36000000,"
                                            "36000000",
                                            1, 1000, NULL, 0, AB_SVC_NOTIFIER,
                                            "waits between attempts (ms, comma-separated) for "
                                            "Feishu and for endpoints without their own" },
    [AB_OPT_NOTIFIER_REQUEST_TIMEOUT_MS] = { "notifier.request_timeout_ms",
                                             "AGENTBUS_NOTIFIER_REQUEST_TIMEOUT_MS", NULL,
                                             AB_OPT_INT, "15000", 100, 300000, NULL, 0,
                                             AB_SVC_NOTIFIER,
                                             "one delivery request, connect to last byte" },
    [AB_OPT_NOTIFIER_ALLOW_NETWORKS] = { "notifier.allow_networks",
                                         "AGENTBUS_NOTIFIER_ALLOW_NETWORKS", NULL, AB_OPT_STRING,
                                         "", 0, 4096, NULL, 0, AB_SVC_NOTIFIER,
                                         "CIDRs outgoing webhooks may reach although private, "
                                         "loopback or link-local (refused by default)" },
    [AB_OPT_NOTIFIER_ENDPOINT_CONCURRENCY] = { "notifier.endpoint_concurrency",
                                               "AGENTBUS_NOTIFIER_ENDPOINT_CONCURRENCY", NULL,
                                               AB_OPT_INT, "32", 1, 1024, NULL, 0,
                                               AB_SVC_NOTIFIER,
                                               "requests in flight to one outgoing endpoint" },
    [AB_OPT_NOTIFIER_BREAKER_THRESHOLD] = { "notifier.breaker_threshold",
                                            "AGENTBUS_NOTIFIER_BREAKER_THRESHOLD", NULL,
                                            AB_OPT_INT, "5", 1, 1000, NULL, 0, AB_SVC_NOTIFIER,
                                            "failed attempts in a row that open an endpoint's "
                                            "circuit breaker" },
    [AB_OPT_NOTIFIER_BREAKER_COOLDOWN_MS] = { "notifier.breaker_cooldown_ms",
                                              "AGENTBUS_NOTIFIER_BREAKER_COOLDOWN_MS", NULL,
                                              AB_OPT_INT, "30000", 10, 3600000, NULL, 0,
                                              AB_SVC_NOTIFIER,
                                              "an open breaker's first wait before one probe "
                                              "(doubling while probes fail, up to 10 min)" },
    [AB_OPT_NOTIFIER_FEISHU_USER_RATE] = { "notifier.feishu_user_rate",
                                           "AGENTBUS_NOTIFIER_FEISHU_USER_RATE", NULL,
                                           AB_OPT_INT, "5", 1, 1000, NULL, 0, AB_SVC_NOTIFIER,
                                           "Feishu sends per second to one person" },
    [AB_OPT_NOTIFIER_FEISHU_APP_RATE] = { "notifier.feishu_app_rate",
                                          "AGENTBUS_NOTIFIER_FEISHU_APP_RATE", NULL, AB_OPT_INT,
                                          "50", 1, 10000, NULL, 0, AB_SVC_NOTIFIER,
                                          "Feishu sends per second through one app" },
};

struct opt_value {
    bool set;
    char *str;
    long long num;
    bool flag;
    json_t *obj;
};

struct ab_config {
    unsigned service;
    char *file;
    struct opt_value values[AB_OPT__COUNT];
};

const struct ab_option *ab_config_option(enum ab_opt opt)
{
    return (int)opt >= 0 && opt < AB_OPT__COUNT ? &options[opt] : NULL;
}

static void fail(char *errstr, size_t size, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void fail(char *errstr, size_t size, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(errstr, size, fmt, ap);
    va_end(ap);
}

static bool parse_bool_text(const char *text, bool *out)
{
    static const char *const yes[] = { "true", "1", "yes", "on" };
    static const char *const no[] = { "false", "0", "no", "off" };
    for (size_t i = 0; i < 4; i++) {
        if (strcasecmp(text, yes[i]) == 0) {
            *out = true;
            return true;
        }
        if (strcasecmp(text, no[i]) == 0) {
            *out = false;
            return true;
        }
    }
    return false;
}

static bool parse_int_text(const char *text, long long *out)
{
    char *end = NULL;
    errno = 0;
    long long v = strtoll(text, &end, 10);
    if (errno != 0 || end == text || *end != '\0' || isspace((unsigned char)text[0]))
        return false;
    *out = v;
    return true;
}

static bool in_choices(const char *choices, const char *value)
{
    size_t len = strlen(value);
    for (const char *p = choices; *p != '\0';) {
        const char *bar = strchr(p, '|');
        size_t n = bar ? (size_t)(bar - p) : strlen(p);
        if (n == len && strncmp(p, value, n) == 0)
            return true;
        p += n + (bar ? 1 : 0);
    }
    return false;
}

/* Explains, for an error message, what values the option takes. */
static void describe(const struct ab_option *o, char *buf, size_t size)
{
    switch (o->type) {
    case AB_OPT_INT:
        snprintf(buf, size, "an integer between %lld and %lld", o->min, o->max);
        break;
    case AB_OPT_BOOL:
        snprintf(buf, size, "a boolean (true or false)");
        break;
    case AB_OPT_OBJECT:
        snprintf(buf, size, "a JSON object");
        break;
    case AB_OPT_STRING:
        if (o->choices)
            snprintf(buf, size, "one of %s", o->choices);
        else
            snprintf(buf, size, "a string of %lld to %lld characters", o->min, o->max);
        break;
    }
}

static void value_clear(struct opt_value *v)
{
    free(v->str);
    json_decref(v->obj);
    memset(v, 0, sizeof(*v));
}

/* Validates and stores a string value; `text` comes from a default, the file or the env. */
static bool set_from_text(const struct ab_option *o, struct opt_value *v, const char *text)
{
    struct opt_value nv = { .set = true };
    switch (o->type) {
    case AB_OPT_INT:
        if (!parse_int_text(text, &nv.num) || nv.num < o->min || nv.num > o->max)
            return false;
        break;
    case AB_OPT_BOOL:
        if (!parse_bool_text(text, &nv.flag))
            return false;
        break;
    case AB_OPT_STRING: {
        size_t len = strlen(text);
        if ((long long)len < o->min || (long long)len > o->max)
            return false;
        if (o->choices && !in_choices(o->choices, text))
            return false;
        nv.str = ab_xstrdup(text);
        break;
    }
    case AB_OPT_OBJECT:
        nv.obj = json_loads(text, JSON_REJECT_DUPLICATES, NULL);
        if (!json_is_object(nv.obj)) {
            json_decref(nv.obj);
            return false;
        }
        break;
    }
    value_clear(v);
    *v = nv;
    return true;
}

/* Validates and stores a value taken from the JSON file, keeping JSON's own types strict:
 * a port must be a JSON integer, not a string that looks like one. */
static bool set_from_json(const struct ab_option *o, struct opt_value *v, json_t *j)
{
    char buf[32];
    switch (o->type) {
    case AB_OPT_INT:
        if (!json_is_integer(j))
            return false;
        snprintf(buf, sizeof(buf), "%" JSON_INTEGER_FORMAT, json_integer_value(j));
        return set_from_text(o, v, buf);
    case AB_OPT_BOOL:
        if (!json_is_boolean(j))
            return false;
        return set_from_text(o, v, json_is_true(j) ? "true" : "false");
    case AB_OPT_STRING:
        /* A NUL inside the JSON string would silently cut the value short. */
        if (!json_is_string(j) ||
            memchr(json_string_value(j), '\0', json_string_length(j)) != NULL)
            return false;
        return set_from_text(o, v, json_string_value(j));
    case AB_OPT_OBJECT:
        if (!json_is_object(j))
            return false;
        value_clear(v);
        v->set = true;
        v->obj = json_deep_copy(j);
        return true;
    }
    return false;
}

static int find_option(const char *name)
{
    for (int i = 0; i < AB_OPT__COUNT; i++)
        if (strcmp(options[i].name, name) == 0)
            return i;
    return -1;
}

/* True when some option's name starts with "prefix." : the path is a section. */
static bool is_section(const char *prefix)
{
    size_t len = strlen(prefix);
    for (int i = 0; i < AB_OPT__COUNT; i++)
        if (strncmp(options[i].name, prefix, len) == 0 && options[i].name[len] == '.')
            return true;
    return false;
}

static enum ab_err load_object(struct ab_config *cfg, const char *file, const char *prefix,
                               json_t *obj, char *errstr, size_t size)
{
    const char *key;
    json_t *value;
    json_object_foreach(obj, key, value)
    {
        char path[256];
        int n = snprintf(path, sizeof(path), "%s%s%s", prefix, prefix[0] ? "." : "", key);
        if (n < 0 || (size_t)n >= sizeof(path)) {
            fail(errstr, size, "config file %s: field name too long: %.64s...", file, prefix);
            return AB_ERR_CONFIG;
        }
        int idx = find_option(path);
        if (idx >= 0) {
            if (!set_from_json(&options[idx], &cfg->values[idx], value)) {
                char what[96];
                describe(&options[idx], what, sizeof(what));
                fail(errstr, size, "config file %s: field \"%s\" must be %s", file, path, what);
                return AB_ERR_CONFIG;
            }
            continue;
        }
        if (is_section(path)) {
            if (!json_is_object(value)) {
                fail(errstr, size, "config file %s: field \"%s\" must be an object", file, path);
                return AB_ERR_CONFIG;
            }
            enum ab_err err = load_object(cfg, file, path, value, errstr, size);
            if (err)
                return err;
            continue;
        }
        fail(errstr, size, "config file %s: unknown field \"%s\"", file, path);
        return AB_ERR_CONFIG;
    }
    return AB_OK;
}

static enum ab_err load_file(struct ab_config *cfg, const char *file, char *errstr, size_t size)
{
    json_error_t jerr;
    json_t *root = json_load_file(file, JSON_REJECT_DUPLICATES, &jerr);
    if (root == NULL) {
        /* jansson quotes the text near the error ("invalid token near 'hunter2'"), which can
         * be a secret that lost its quotes; the line and column locate the error anyway. */
        char *near = strstr(jerr.text, " near '");
        if (near != NULL)
            *near = '\0';
        fail(errstr, size, "config file %s: line %d column %d: %s", file, jerr.line,
             jerr.column, jerr.text);
        return AB_ERR_CONFIG;
    }
    enum ab_err err = AB_OK;
    if (!json_is_object(root)) {
        fail(errstr, size, "config file %s: the top level must be a JSON object", file);
        err = AB_ERR_CONFIG;
    } else {
        err = load_object(cfg, file, "", root, errstr, size);
    }
    json_decref(root);
    return err;
}

static const char *env_lookup(char *const *envp, const char *name)
{
    if (name == NULL)
        return NULL;
    if (envp == NULL)
        return getenv(name);
    size_t len = strlen(name);
    for (char *const *e = envp; *e != NULL; e++)
        if (strncmp(*e, name, len) == 0 && (*e)[len] == '=')
            return *e + len + 1;
    return NULL;
}

static enum ab_err load_env(struct ab_config *cfg, char *const *envp, char *errstr, size_t size)
{
    for (int i = 0; i < AB_OPT__COUNT; i++) {
        const struct ab_option *o = &options[i];
        const char *name = o->env;
        const char *text = env_lookup(envp, name);
        if (text == NULL) {
            name = o->env_alias;
            text = env_lookup(envp, name);
        }
        if (text == NULL)
            continue;
        if (!set_from_text(o, &cfg->values[i], text)) {
            char what[96];
            describe(o, what, sizeof(what));
            if (o->flags & AB_OPT_SECRET)
                fail(errstr, size, "environment variable %s (%s) must be %s", name, o->name, what);
            else
                fail(errstr, size, "environment variable %s (%s) must be %s, got \"%.64s\"", name,
                     o->name, what, text);
            return AB_ERR_CONFIG;
        }
    }
    return AB_OK;
}

enum ab_err ab_config_load(unsigned service, char *const *envp, struct ab_config **out,
                           char *errstr, size_t size)
{
    struct ab_config *cfg = ab_xcalloc(1, sizeof(*cfg));
    enum ab_err err = AB_OK;
    cfg->service = service;
    for (int i = 0; i < AB_OPT__COUNT; i++) {
        if (options[i].def != NULL && !set_from_text(&options[i], &cfg->values[i], options[i].def))
            abort(); /* a default that fails its own bounds is a bug in the table */
    }
    const char *file = env_lookup(envp, "AGENTBUS_CONFIG");
    if (file != NULL && file[0] != '\0') {
        cfg->file = ab_xstrdup(file);
        err = load_file(cfg, file, errstr, size);
        if (err)
            goto out;
    }
    err = load_env(cfg, envp, errstr, size);
    if (err)
        goto out;
    for (int i = 0; i < AB_OPT__COUNT; i++) {
        const struct ab_option *o = &options[i];
        if ((o->flags & AB_OPT_REQUIRED) && (o->services & service) && !cfg->values[i].set) {
            fail(errstr, size, "missing required setting: set the environment variable %s%s%s%s",
                 o->env, o->env_alias ? " (or " : "", o->env_alias ? o->env_alias : "",
                 o->env_alias ? ")" : "");
            if (strlen(errstr) + 40 < size)
                snprintf(errstr + strlen(errstr), size - strlen(errstr),
                         " or \"%s\" in the config file", o->name);
            err = AB_ERR_CONFIG;
            goto out;
        }
    }
out:
    if (err) {
        ab_config_free(cfg);
        cfg = NULL;
    }
    *out = cfg;
    return err;
}

void ab_config_free(struct ab_config *cfg)
{
    if (cfg == NULL)
        return;
    for (int i = 0; i < AB_OPT__COUNT; i++)
        value_clear(&cfg->values[i]);
    free(cfg->file);
    free(cfg);
}

static const struct opt_value *get(const struct ab_config *cfg, enum ab_opt opt,
                                   enum ab_opt_type type)
{
    if ((int)opt < 0 || opt >= AB_OPT__COUNT || options[opt].type != type) {
        fprintf(stderr, "ab_config: option %d read with the wrong type\n", (int)opt);
        abort();
    }
    return &cfg->values[opt];
}

const char *ab_config_str(const struct ab_config *cfg, enum ab_opt opt)
{
    return get(cfg, opt, AB_OPT_STRING)->str;
}

long long ab_config_int(const struct ab_config *cfg, enum ab_opt opt)
{
    return get(cfg, opt, AB_OPT_INT)->num;
}

bool ab_config_bool(const struct ab_config *cfg, enum ab_opt opt)
{
    return get(cfg, opt, AB_OPT_BOOL)->flag;
}

json_t *ab_config_object(const struct ab_config *cfg, enum ab_opt opt)
{
    return get(cfg, opt, AB_OPT_OBJECT)->obj;
}

const char *ab_config_file(const struct ab_config *cfg)
{
    return cfg->file;
}

/* Appends n bytes to buf (of `size`), always leaving it NUL-terminated. */
static void append(char *buf, size_t size, size_t *len, const char *s, size_t n)
{
    if (n > size - 1 - *len)
        n = size - 1 - *len;
    memcpy(buf + *len, s, n);
    *len += n;
    buf[*len] = '\0';
}

/* "postgresql://user:pw@host/db?sslmode=require" becomes
 * "postgresql://user:***@host/db?sslmode=***": user and host stay readable; the password
 * goes, and so does every query value, since libpq also takes "?password=...". The last
 * '@' before the path ends the credentials, so an unescaped '@' in a password leaves none
 * of it visible. A secret that is not a URL prints as "***". */
static json_t *redact_url(const char *url)
{
    const char *scheme = strstr(url, "://");
    if (scheme == NULL)
        return json_string("***");
    const char *auth = scheme + 3;
    /* As libpq reads it: the credentials end at the last '@' before the first '/', so a
     * password may hold '?' or '#'. */
    const char *auth_end = auth + strcspn(auth, "/");
    const char *at = NULL;
    for (const char *p = auth; p < auth_end; p++)
        if (*p == '@')
            at = p;
    const char *colon = at ? memchr(auth, ':', (size_t)(at - auth)) : NULL;
    size_t size = 4 * strlen(url) + 8, len = 0; /* each "***" replaces at least one byte */
    char *buf = malloc(size);
    if (buf == NULL)
        return json_string("***");
    buf[0] = '\0';
    const char *rest = url;
    if (colon != NULL) {
        append(buf, size, &len, url, (size_t)(colon - url));
        append(buf, size, &len, ":***", 4);
        rest = at;
    }
    const char *query = strchr(at ? at : auth, '?');
    if (query == NULL)
        query = rest + strlen(rest);
    else
        query++;
    append(buf, size, &len, rest, (size_t)(query - rest));
    for (const char *p = query; *p != '\0';) {
        size_t param = strcspn(p, "&"), name = strcspn(p, "=&");
        append(buf, size, &len, p, name);
        if (name < param)
            append(buf, size, &len, "=***", 4);
        p += param;
        if (*p == '&')
            append(buf, size, &len, p++, 1);
    }
    json_t *j = json_string(buf);
    free(buf);
    return j ? j : json_string("***");
}

/* Keys of kafka.properties whose values are credentials. */
static bool secret_key(const char *key)
{
    /* Any case: the line is logged before librdkafka gets to reject "SASL.PASSWORD". */
    return strcasestr(key, "password") || strcasestr(key, "secret") || strcasestr(key, "token") ||
           strcasestr(key, "key") || strcasestr(key, "jaas");
}

json_t *ab_config_effective(const struct ab_config *cfg)
{
    json_t *root = json_object();
    for (int i = 0; i < AB_OPT__COUNT; i++) {
        const struct ab_option *o = &options[i];
        const struct opt_value *v = &cfg->values[i];
        if (!(o->services & cfg->service))
            continue;
        json_t *j = NULL;
        if (!v->set)
            j = json_null();
        else if (o->type == AB_OPT_INT)
            j = json_integer(v->num);
        else if (o->type == AB_OPT_BOOL)
            j = json_boolean(v->flag);
        else if (o->type == AB_OPT_STRING && !(o->flags & AB_OPT_SECRET))
            j = json_string(v->str);
        else if (o->type == AB_OPT_STRING)
            /* Only the database URL is a URL; any other secret ("tok://...") is all secret. */
            j = i == AB_OPT_DATABASE_URL ? redact_url(v->str) : json_string("***");
        else {
            j = json_deep_copy(v->obj);
            const char *key;
            json_t *member;
            json_object_foreach(j, key, member)
            {
                /* librdkafka takes scalars only, so a nested value is a mistake that
                 * can hold anything, and this line is logged before Kafka rejects it. */
                if ((o->flags & AB_OPT_SECRET) &&
                    (secret_key(key) || json_is_object(member) || json_is_array(member)))
                    json_object_set_new(j, key, json_string("***"));
            }
        }
        json_object_set_new(root, o->name, j);
    }
    return root;
}

void ab_config_print_table(FILE *out)
{
    static const char *const type_names[] = { "string", "integer", "boolean", "object" };
    fprintf(out, "| option | environment | type | default | bounds | description |\n");
    fprintf(out, "|---|---|---|---|---|---|\n");
    for (int i = 0; i < AB_OPT__COUNT; i++) {
        const struct ab_option *o = &options[i];
        char bounds[64] = "";
        if (o->type == AB_OPT_INT)
            snprintf(bounds, sizeof(bounds), "%lld..%lld", o->min, o->max);
        else if (o->type == AB_OPT_STRING && o->choices) {
            /* A bare '|' would end the Markdown cell. */
            size_t n = 0;
            for (const char *p = o->choices; *p != '\0' && n + 3 < sizeof(bounds); p++) {
                if (*p == '|')
                    bounds[n++] = '\\';
                bounds[n++] = *p;
            }
            bounds[n] = '\0';
        } else if (o->type == AB_OPT_STRING)
            snprintf(bounds, sizeof(bounds), "length %lld..%lld", o->min, o->max);
        fprintf(out, "| `%s` | `%s`%s%s%s | %s | %s | %s | %s%s%s |\n", o->name, o->env,
                o->env_alias ? " or `" : "", o->env_alias ? o->env_alias : "",
                o->env_alias ? "`" : "", type_names[o->type],
                o->def ? (o->def[0] ? o->def : "(empty)") : "(required)", bounds, o->help,
                (o->flags & AB_OPT_SECRET) ? "; secret" : "",
                (o->flags & AB_OPT_REQUIRED) ? "; required" : "");
    }
}
