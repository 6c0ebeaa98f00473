/* Configuration: one table of every option (name, type, default, bounds), filled from
 * defaults, then one JSON config file (path in AGENTBUS_CONFIG), then environment
 * variables. Parsing is strict: an unknown field, a wrong type or a value out of bounds
 * is an error that names the file (or variable) and the field. */
#ifndef AB_CONFIG_H
#define AB_CONFIG_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

#include "common/errors.h"

/* Which programs use an option: a program prints and requires only its own options. */
enum ab_service_kind {
    AB_SVC_INGRESS = 1 << 0,
    AB_SVC_DISPATCHER = 1 << 1,
    AB_SVC_LLM_WORKER = 1 << 2,
    AB_SVC_NOTIFIER = 1 << 3,
    AB_SVC_TOOL = 1 << 4,
};
#define AB_SVC_ALL (AB_SVC_INGRESS | AB_SVC_DISPATCHER | AB_SVC_LLM_WORKER | AB_SVC_NOTIFIER)

enum ab_opt {
    AB_OPT_DATABASE_URL,
    AB_OPT_DATABASE_POOL_SIZE,
    AB_OPT_DATABASE_CONNECT_TIMEOUT_S,
    AB_OPT_DATABASE_MIGRATIONS_DIR,
    AB_OPT_DATABASE_MIGRATE,
    AB_OPT_KAFKA_BOOTSTRAP,
    AB_OPT_KAFKA_TOPIC_PREFIX,
    AB_OPT_KAFKA_PRODUCE_TIMEOUT_MS,
    AB_OPT_KAFKA_SESSION_TIMEOUT_MS,
    AB_OPT_KAFKA_MAX_POLL_INTERVAL_MS,
    AB_OPT_KAFKA_RETRY_BACKOFF_MAX_MS,
    AB_OPT_KAFKA_FETCH_WAIT_MAX_MS,
    AB_OPT_KAFKA_PROPERTIES,
    AB_OPT_LOG_LEVEL,
    AB_OPT_LISTEN_HOST,
    AB_OPT_HTTP_MAX_BODY_BYTES,
    AB_OPT_HTTP_CONNECTION_LIMIT,
    AB_OPT_HTTP_IDLE_TIMEOUT_S,
    AB_OPT_SHUTDOWN_TIMEOUT_S,
    AB_OPT_ADMIN_TOKEN,
    AB_OPT_GATEWAY_LEASE_S,
    AB_OPT_GATEWAY_POLL_BATCH,
    AB_OPT_GATEWAY_MAX_CONTENT_BYTES,
    AB_OPT_GATEWAY_PUBLIC_URL,
    AB_OPT_GATEWAY_OFFLINE_AFTER_S,
    AB_OPT_SEED,
    AB_OPT_INGRESS_API_PORT,
    AB_OPT_INGRESS_WEBHOOK_PORT,
    AB_OPT_INGRESS_WEBHOOK_HOST,
    AB_OPT_INGRESS_OPS_PORT,
    AB_OPT_DISPATCHER_OPS_PORT,
    AB_OPT_LLM_WORKER_OPS_PORT,
    AB_OPT_LLM_MAX_IN_FLIGHT,
    AB_OPT_LLM_DB_THREADS,
    AB_OPT_LLM_HISTORY_TURNS,
    AB_OPT_LLM_MAX_HOPS,
    AB_OPT_LLM_MAX_ATTEMPTS,
    AB_OPT_LLM_RETRY_BASE_MS,
    AB_OPT_LLM_RETRY_MAX_MS,
    AB_OPT_LLM_RETRY_AFTER_CAP_MS,
    AB_OPT_LLM_MAX_RESPONSE_BYTES,
    AB_OPT_NOTIFIER_OPS_PORT,
    AB_OPT_WEBHOOKS,
    AB_OPT_NOTIFIER_MAX_IN_FLIGHT,
    AB_OPT_NOTIFIER_DB_THREADS,
    AB_OPT_NOTIFIER_RETRY_SCHEDULE_MS,
    AB_OPT_NOTIFIER_REQUEST_TIMEOUT_MS,
    AB_OPT_NOTIFIER_ALLOW_NETWORKS,
    AB_OPT_NOTIFIER_ENDPOINT_CONCURRENCY,
    AB_OPT_NOTIFIER_BREAKER_THRESHOLD,
    AB_OPT_NOTIFIER_BREAKER_COOLDOWN_MS,
    AB_OPT_NOTIFIER_FEISHU_USER_RATE,
    AB_OPT_NOTIFIER_FEISHU_APP_RATE,
    AB_OPT__COUNT
};

enum ab_opt_type { AB_OPT_STRING, AB_OPT_INT, AB_OPT_BOOL, AB_OPT_OBJECT };

#define AB_OPT_SECRET 0x1u   /* value never printed; URLs print with the password masked */
#define AB_OPT_REQUIRED 0x2u /* no default: the programs in .services must be given it */

struct ab_option {
    const char *name;      /* dotted path in the config file, e.g. "kafka.bootstrap" */
    const char *env;       /* environment variable, e.g. "AGENTBUS_KAFKA_BOOTSTRAP" */
    const char *env_alias; /* a conventional second name (DATABASE_URL) or NULL */
    enum ab_opt_type type;
    const char *def;       /* default, as text; NULL when there is none */
    long long min, max;    /* bounds of an integer; length bounds of a string */
    const char *choices;   /* for strings: "a|b|c", or NULL for any */
    unsigned flags;
    unsigned services;     /* mask of enum ab_service_kind */
    const char *help;
};

struct ab_config;

/* The table, indexed by enum ab_opt. */
const struct ab_option *ab_config_option(enum ab_opt opt);

/* Builds the configuration of `service` (one enum ab_service_kind bit) from the defaults, the
 * JSON file named by AGENTBUS_CONFIG in envp (if any), and the variables in envp (NULL
 * means the process environment). On failure errstr names the file or variable and the
 * field. @returns AB_OK or AB_ERR_CONFIG. @ownership *cfg is freed by ab_config_free. */
enum ab_err ab_config_load(unsigned service, char *const *envp, struct ab_config **cfg,
                           char *errstr, size_t errstr_size);
void ab_config_free(struct ab_config *cfg);

/* Typed getters. A getter of the wrong type for opt is a bug and aborts.
 * @ownership strings and JSON are borrowed from cfg. */
const char *ab_config_str(const struct ab_config *cfg, enum ab_opt opt);
long long ab_config_int(const struct ab_config *cfg, enum ab_opt opt);
bool ab_config_bool(const struct ab_config *cfg, enum ab_opt opt);
json_t *ab_config_object(const struct ab_config *cfg, enum ab_opt opt);
/* The config file path in use, or NULL. */
const char *ab_config_file(const struct ab_config *cfg);

/* The effective configuration of this service as a JSON object, secrets redacted: what a
 * service logs at start. @ownership the caller decrefs. */
json_t *ab_config_effective(const struct ab_config *cfg);

/* Writes the option table as a Markdown table (for the docs; `<binary> --config-table`). */
void ab_config_print_table(FILE *out);

#endif
