/* Tests for common/config: defaults, the JSON file, the environment on top, the strict
 * errors (each naming the file or variable and the field), and secrets kept out of both
 * error messages and the effective configuration a service logs at start. Every test
 * passes its own envp, so the real environment is never read (except in the one test
 * that checks envp == NULL, which clears its forked copy first). */
#include "test.h"

#include "common/config.h"

#include <signal.h>
#include <stdint.h>
#include <sys/wait.h>
#include <unistd.h>

#define DB_URL "AGENTBUS_DATABASE_URL=postgresql://agent:pw@localhost/agentbus"
#define BOOTSTRAP "AGENTBUS_KAFKA_BOOTSTRAP=localhost:9092"
#define ADMIN "AGENTBUS_ADMIN_TOKEN=admin-token-0123456789"

/* The path of a new temporary file holding text, under /tmp; the caller unlinks and frees. */
static char *write_config(const char *text)
{
    char *path = strdup("/tmp/agentbus-test-config-XXXXXX");
    REQUIRE(path != NULL);
    int fd = mkstemp(path);
    REQUIRE(fd >= 0);
    size_t len = strlen(text);
    REQUIRE(write(fd, text, len) == (ssize_t)len);
    REQUIRE(close(fd) == 0);
    return path;
}

static void remove_config(char *path)
{
    unlink(path);
    free(path);
}

/* "AGENTBUS_CONFIG=<path>" in a buffer the caller frees. */
static char *config_var(const char *path)
{
    size_t size = strlen("AGENTBUS_CONFIG=") + strlen(path) + 1;
    char *var = malloc(size);
    REQUIRE(var != NULL);
    snprintf(var, size, "AGENTBUS_CONFIG=%s", path);
    return var;
}

/* Loads with the NULL-terminated envp; on failure errstr says why and cfg is NULL. */
static enum ab_err load(unsigned service, const char *const *envp, struct ab_config **cfg,
                        char *errstr, size_t size)
{
    *cfg = (struct ab_config *)(uintptr_t)1; /* must be overwritten either way */
    errstr[0] = '\0';
    enum ab_err err = ab_config_load(service, (char *const *)envp, cfg, errstr, size);
    if (err == AB_OK)
        CHECK(*cfg != NULL);
    else
        CHECK(*cfg == NULL);
    return err;
}

/* Loads `service` with the file text plus the extra variables (NULL-terminated); expects
 * failure and returns the error text in err. */
static void load_file_expect_error(unsigned service, const char *text, const char *const *extra,
                                   char *err, size_t size, char **path_out)
{
    char *path = write_config(text);
    char *var = config_var(path);
    const char *envp[16] = { var };
    int n = 1;
    for (int i = 0; extra && extra[i]; i++)
        envp[n++] = extra[i];
    envp[n] = NULL;
    struct ab_config *cfg;
    CHECK_INT_EQ(load(service, envp, &cfg, err, size), AB_ERR_CONFIG);
    ab_config_free(cfg);
    free(var);
    *path_out = path;
}

static const char *const dispatcher_env[] = { DB_URL, BOOTSTRAP, NULL };
static const char *const ingress_env[] = { DB_URL, BOOTSTRAP, ADMIN, NULL };

TEST(config_defaults)
{
    struct ab_config *cfg;
    char err[512];
    REQUIRE(load(AB_SVC_DISPATCHER, (const char *const[]){ DB_URL, BOOTSTRAP, NULL }, &cfg, err,
                 sizeof(err)) == AB_OK);
    CHECK_STR_EQ(ab_config_str(cfg, AB_OPT_DATABASE_URL),
                 "postgresql://agent:pw@localhost/agentbus");
    CHECK_STR_EQ(ab_config_str(cfg, AB_OPT_KAFKA_BOOTSTRAP), "localhost:9092");
    CHECK_INT_EQ(ab_config_int(cfg, AB_OPT_DATABASE_POOL_SIZE), 4);
    CHECK_INT_EQ(ab_config_int(cfg, AB_OPT_DATABASE_CONNECT_TIMEOUT_S), 5);
    CHECK_STR_EQ(ab_config_str(cfg, AB_OPT_DATABASE_MIGRATIONS_DIR), "deploy/migrations");
    CHECK(ab_config_bool(cfg, AB_OPT_DATABASE_MIGRATE));
    CHECK_STR_EQ(ab_config_str(cfg, AB_OPT_KAFKA_TOPIC_PREFIX), "");
    CHECK_INT_EQ(ab_config_int(cfg, AB_OPT_KAFKA_PRODUCE_TIMEOUT_MS), 15000);
    CHECK_INT_EQ(ab_config_int(cfg, AB_OPT_KAFKA_SESSION_TIMEOUT_MS), 45000);
    CHECK_INT_EQ(ab_config_int(cfg, AB_OPT_KAFKA_MAX_POLL_INTERVAL_MS), 300000);
    CHECK_INT_EQ(ab_config_int(cfg, AB_OPT_KAFKA_RETRY_BACKOFF_MAX_MS), 10000);
    json_t *props = ab_config_object(cfg, AB_OPT_KAFKA_PROPERTIES);
    CHECK(json_is_object(props) && json_object_size(props) == 0);
    CHECK_STR_EQ(ab_config_str(cfg, AB_OPT_LOG_LEVEL), "info");
    CHECK_STR_EQ(ab_config_str(cfg, AB_OPT_LISTEN_HOST), "0.0.0.0");
    CHECK_INT_EQ(ab_config_int(cfg, AB_OPT_HTTP_MAX_BODY_BYTES), 1048576);
    CHECK_INT_EQ(ab_config_int(cfg, AB_OPT_HTTP_CONNECTION_LIMIT), 1000);
    CHECK_INT_EQ(ab_config_int(cfg, AB_OPT_HTTP_IDLE_TIMEOUT_S), 120);
    CHECK_INT_EQ(ab_config_int(cfg, AB_OPT_SHUTDOWN_TIMEOUT_S), 25);
    CHECK(ab_config_str(cfg, AB_OPT_ADMIN_TOKEN) == NULL);
    CHECK_INT_EQ(ab_config_int(cfg, AB_OPT_INGRESS_API_PORT), 8080);
    CHECK_INT_EQ(ab_config_int(cfg, AB_OPT_INGRESS_WEBHOOK_PORT), 3011);
    CHECK_INT_EQ(ab_config_int(cfg, AB_OPT_INGRESS_OPS_PORT), 9100);
    CHECK_INT_EQ(ab_config_int(cfg, AB_OPT_DISPATCHER_OPS_PORT), 9101);
    CHECK_INT_EQ(ab_config_int(cfg, AB_OPT_LLM_WORKER_OPS_PORT), 9102);
    CHECK_INT_EQ(ab_config_int(cfg, AB_OPT_NOTIFIER_OPS_PORT), 9103);
    CHECK(ab_config_file(cfg) == NULL);
    ab_config_free(cfg);
    ab_config_free(NULL);
}

TEST(config_table_is_consistent)
{
    CHECK(ab_config_option(AB_OPT__COUNT) == NULL);
    CHECK(ab_config_option((enum ab_opt)-1) == NULL);
    for (int i = 0; i < AB_OPT__COUNT; i++) {
        const struct ab_option *o = ab_config_option((enum ab_opt)i);
        REQUIRE(o != NULL && o->name != NULL && o->env != NULL && o->help != NULL);
        /* The variable is the dotted name upper-cased under AGENTBUS_. */
        char env[128] = "AGENTBUS_";
        size_t n = strlen(env);
        for (const char *p = o->name; *p && n + 1 < sizeof(env); p++)
            env[n++] = *p == '.' ? '_' : (char)(*p >= 'a' && *p <= 'z' ? *p - 32 : *p);
        env[n] = '\0';
        CHECK_STR_EQ(o->env, env);
        CHECK(o->services != 0);
        CHECK((o->def == NULL) == ((o->flags & AB_OPT_REQUIRED) != 0));
        if (o->type == AB_OPT_INT)
            CHECK(o->min <= o->max);
        for (int k = i + 1; k < AB_OPT__COUNT; k++)
            CHECK(strcmp(o->name, ab_config_option((enum ab_opt)k)->name) != 0);
    }
}

TEST(config_file_sets_values)
{
    char *path = write_config("{\n"
                              "  \"database\": {\"url\": \"postgresql://file@db/agentbus\",\n"
                              "                 \"pool_size\": 16, \"migrate\": false,\n"
                              "                 \"migrations_dir\": \"/opt/migrations\"},\n"
                              "  \"kafka\": {\"bootstrap\": \"k1:9092,k2:9092\",\n"
                              "              \"topic_prefix\": \"staging.\",\n"
                              "              \"properties\": {\"acks\": \"all\",\n"
                              "                             \"linger.ms\": 5}},\n"
                              "  \"log\": {\"level\": \"debug\"},\n"
                              "  \"listen\": {\"host\": \"127.0.0.1\"},\n"
                              "  \"http\": {\"max_body_bytes\": 2048},\n"
                              "  \"admin\": {\"token\": \"file-admin-token-0123\"},\n"
                              "  \"ingress\": {\"api_port\": 18080},\n"
                              "  \"dispatcher\": {\"ops_port\": 19101}\n"
                              "}\n");
    char *var = config_var(path);
    struct ab_config *cfg;
    char err[512];
    enum ab_err rc = load(AB_SVC_INGRESS, (const char *const[]){ var, NULL }, &cfg, err,
                          sizeof(err));
    CHECK_STR_EQ(err, "");
    REQUIRE(rc == AB_OK);
    CHECK_STR_EQ(ab_config_file(cfg), path);
    CHECK_STR_EQ(ab_config_str(cfg, AB_OPT_DATABASE_URL), "postgresql://file@db/agentbus");
    CHECK_INT_EQ(ab_config_int(cfg, AB_OPT_DATABASE_POOL_SIZE), 16);
    CHECK(!ab_config_bool(cfg, AB_OPT_DATABASE_MIGRATE));
    CHECK_STR_EQ(ab_config_str(cfg, AB_OPT_DATABASE_MIGRATIONS_DIR), "/opt/migrations");
    CHECK_STR_EQ(ab_config_str(cfg, AB_OPT_KAFKA_BOOTSTRAP), "k1:9092,k2:9092");
    CHECK_STR_EQ(ab_config_str(cfg, AB_OPT_KAFKA_TOPIC_PREFIX), "staging.");
    json_t *props = ab_config_object(cfg, AB_OPT_KAFKA_PROPERTIES);
    CHECK_INT_EQ(json_object_size(props), 2);
    CHECK_STR_EQ(json_string_value(json_object_get(props, "acks")), "all");
    CHECK_INT_EQ(json_integer_value(json_object_get(props, "linger.ms")), 5);
    CHECK_STR_EQ(ab_config_str(cfg, AB_OPT_LOG_LEVEL), "debug");
    CHECK_STR_EQ(ab_config_str(cfg, AB_OPT_LISTEN_HOST), "127.0.0.1");
    CHECK_INT_EQ(ab_config_int(cfg, AB_OPT_HTTP_MAX_BODY_BYTES), 2048);
    CHECK_STR_EQ(ab_config_str(cfg, AB_OPT_ADMIN_TOKEN), "file-admin-token-0123");
    CHECK_INT_EQ(ab_config_int(cfg, AB_OPT_INGRESS_API_PORT), 18080);
    /* Another service's section is accepted: one file can serve every program. */
    CHECK_INT_EQ(ab_config_int(cfg, AB_OPT_DISPATCHER_OPS_PORT), 19101);
    /* Untouched options keep their defaults. */
    CHECK_INT_EQ(ab_config_int(cfg, AB_OPT_INGRESS_WEBHOOK_PORT), 3011);
    ab_config_free(cfg);
    free(var);
    remove_config(path);
}

TEST(config_empty_file_object_and_empty_path)
{
    char *path = write_config("{}");
    char *var = config_var(path);
    struct ab_config *cfg;
    char err[512];
    REQUIRE(load(AB_SVC_DISPATCHER, (const char *const[]){ var, DB_URL, BOOTSTRAP, NULL }, &cfg,
                 err, sizeof(err)) == AB_OK);
    CHECK_STR_EQ(ab_config_file(cfg), path);
    CHECK_INT_EQ(ab_config_int(cfg, AB_OPT_DATABASE_POOL_SIZE), 4);
    ab_config_free(cfg);
    /* An empty AGENTBUS_CONFIG means no file. */
    REQUIRE(load(AB_SVC_DISPATCHER,
                 (const char *const[]){ "AGENTBUS_CONFIG=", DB_URL, BOOTSTRAP, NULL }, &cfg, err,
                 sizeof(err)) == AB_OK);
    CHECK(ab_config_file(cfg) == NULL);
    ab_config_free(cfg);
    free(var);
    remove_config(path);
}

TEST(config_env_overrides_file)
{
    char *path = write_config("{\"log\": {\"level\": \"debug\"}, \"database\": {\"pool_size\": 8, "
                              "\"url\": \"postgresql://from-file@db/x\"}, "
                              "\"kafka\": {\"bootstrap\": \"file:9092\"}}");
    char *var = config_var(path);
    struct ab_config *cfg;
    char err[512];
    REQUIRE(load(AB_SVC_DISPATCHER,
                 (const char *const[]){ "AGENTBUS_LOG_LEVEL=error", var,
                                        "AGENTBUS_KAFKA_BOOTSTRAP=env:9092",
                                        "AGENTBUS_DATABASE_MIGRATE=off", NULL },
                 &cfg, err, sizeof(err)) == AB_OK);
    CHECK_STR_EQ(ab_config_str(cfg, AB_OPT_LOG_LEVEL), "error");
    CHECK_STR_EQ(ab_config_str(cfg, AB_OPT_KAFKA_BOOTSTRAP), "env:9092");
    CHECK_INT_EQ(ab_config_int(cfg, AB_OPT_DATABASE_POOL_SIZE), 8); /* file, not default */
    CHECK_STR_EQ(ab_config_str(cfg, AB_OPT_DATABASE_URL), "postgresql://from-file@db/x");
    CHECK(!ab_config_bool(cfg, AB_OPT_DATABASE_MIGRATE));
    ab_config_free(cfg);
    free(var);
    remove_config(path);
}

TEST(config_env_value_forms)
{
    struct ab_config *cfg;
    char err[512];
    static const struct {
        const char *text;
        bool value;
    } bools[] = { { "true", true },  { "TRUE", true },   { "1", true },  { "yes", true },
                  { "on", true },    { "false", false }, { "0", false }, { "No", false },
                  { "off", false } };
    for (size_t i = 0; i < sizeof(bools) / sizeof(bools[0]); i++) {
        char var[64];
        snprintf(var, sizeof(var), "AGENTBUS_DATABASE_MIGRATE=%s", bools[i].text);
        REQUIRE(load(AB_SVC_DISPATCHER, (const char *const[]){ DB_URL, BOOTSTRAP, var, NULL }, &cfg,
                     err, sizeof(err)) == AB_OK);
        CHECK_INT_EQ(ab_config_bool(cfg, AB_OPT_DATABASE_MIGRATE), bools[i].value);
        ab_config_free(cfg);
    }
    REQUIRE(load(AB_SVC_DISPATCHER,
                 (const char *const[]){ DB_URL, BOOTSTRAP, "AGENTBUS_DATABASE_POOL_SIZE=64",
                                        "AGENTBUS_KAFKA_PROPERTIES={\"acks\":\"1\"}",
                                        "AGENTBUS_KAFKA_TOPIC_PREFIX=", "AGENTBUS_LOG_LEVEL=warn",
                                        NULL },
                 &cfg, err, sizeof(err)) == AB_OK);
    CHECK_INT_EQ(ab_config_int(cfg, AB_OPT_DATABASE_POOL_SIZE), 64);
    CHECK_STR_EQ(json_string_value(json_object_get(ab_config_object(cfg, AB_OPT_KAFKA_PROPERTIES),
                                                   "acks")),
                 "1");
    CHECK_STR_EQ(ab_config_str(cfg, AB_OPT_KAFKA_TOPIC_PREFIX), "");
    CHECK_STR_EQ(ab_config_str(cfg, AB_OPT_LOG_LEVEL), "warn");
    ab_config_free(cfg);

    /* A variable name that merely starts like ours is not ours. */
    REQUIRE(load(AB_SVC_DISPATCHER,
                 (const char *const[]){ DB_URL, BOOTSTRAP, "AGENTBUS_LOG_LEVELX=nonsense",
                                        "AGENTBUS_LOG_LEVEL", NULL },
                 &cfg, err, sizeof(err)) == AB_OK);
    CHECK_STR_EQ(ab_config_str(cfg, AB_OPT_LOG_LEVEL), "info");
    ab_config_free(cfg);
}

TEST(config_alias_names)
{
    struct ab_config *cfg;
    char err[512];
    REQUIRE(load(AB_SVC_DISPATCHER,
                 (const char *const[]){ "DATABASE_URL=postgresql://alias@db/x",
                                        "KAFKA_BOOTSTRAP=alias:9092", NULL },
                 &cfg, err, sizeof(err)) == AB_OK);
    CHECK_STR_EQ(ab_config_str(cfg, AB_OPT_DATABASE_URL), "postgresql://alias@db/x");
    CHECK_STR_EQ(ab_config_str(cfg, AB_OPT_KAFKA_BOOTSTRAP), "alias:9092");
    ab_config_free(cfg);
    /* The AGENTBUS_ name wins over the conventional one, in either order. */
    REQUIRE(load(AB_SVC_DISPATCHER,
                 (const char *const[]){ "DATABASE_URL=postgresql://alias@db/x",
                                        "AGENTBUS_DATABASE_URL=postgresql://primary@db/x",
                                        "AGENTBUS_KAFKA_BOOTSTRAP=primary:9092",
                                        "KAFKA_BOOTSTRAP=alias:9092", NULL },
                 &cfg, err, sizeof(err)) == AB_OK);
    CHECK_STR_EQ(ab_config_str(cfg, AB_OPT_DATABASE_URL), "postgresql://primary@db/x");
    CHECK_STR_EQ(ab_config_str(cfg, AB_OPT_KAFKA_BOOTSTRAP), "primary:9092");
    ab_config_free(cfg);
    /* An alias overrides the file too. */
    char *path = write_config("{\"kafka\": {\"bootstrap\": \"file:9092\"}}");
    char *var = config_var(path);
    REQUIRE(load(AB_SVC_DISPATCHER,
                 (const char *const[]){ var, DB_URL, "KAFKA_BOOTSTRAP=alias:1", NULL }, &cfg, err,
                 sizeof(err)) == AB_OK);
    CHECK_STR_EQ(ab_config_str(cfg, AB_OPT_KAFKA_BOOTSTRAP), "alias:1");
    ab_config_free(cfg);
    free(var);
    remove_config(path);
}

TEST(config_malformed_json_names_file_and_line)
{
    char err[512], *path;
    load_file_expect_error(AB_SVC_DISPATCHER,
                           "{\n  \"log\": {\n    \"level\": \"info\",\n  }\n}\n", dispatcher_env,
                           err, sizeof(err), &path);
    CHECK_STR_CONTAINS(err, path);
    CHECK_STR_CONTAINS(err, "line 4");
    remove_config(path);

    load_file_expect_error(AB_SVC_DISPATCHER, "", dispatcher_env, err, sizeof(err), &path);
    CHECK_STR_CONTAINS(err, path);
    remove_config(path);

    load_file_expect_error(AB_SVC_DISPATCHER, "{\"log\": {\"level\": \"info\"}", dispatcher_env,
                           err, sizeof(err), &path);
    CHECK_STR_CONTAINS(err, path);
    remove_config(path);
}

TEST(config_missing_file_is_an_error)
{
    struct ab_config *cfg;
    char err[512];
    CHECK_INT_EQ(load(AB_SVC_DISPATCHER,
                      (const char *const[]){ "AGENTBUS_CONFIG=/tmp/agentbus-no-such-config.json",
                                             DB_URL, BOOTSTRAP, NULL },
                      &cfg, err, sizeof(err)),
                 AB_ERR_CONFIG);
    CHECK_STR_CONTAINS(err, "/tmp/agentbus-no-such-config.json");
}

TEST(config_unknown_field_names_dotted_path)
{
    char err[512], *path;
    load_file_expect_error(AB_SVC_DISPATCHER, "{\"kafka\": {\"bootstrapp\": \"k:9092\"}}",
                           dispatcher_env, err, sizeof(err), &path);
    CHECK_STR_CONTAINS(err, path);
    CHECK_STR_CONTAINS(err, "unknown field");
    CHECK_STR_CONTAINS(err, "\"kafka.bootstrapp\"");
    remove_config(path);

    load_file_expect_error(AB_SVC_DISPATCHER, "{\"kafak\": {\"bootstrap\": \"k:9092\"}}",
                           dispatcher_env, err, sizeof(err), &path);
    CHECK_STR_CONTAINS(err, "\"kafak\"");
    remove_config(path);

    /* An option's name is not a section. */
    load_file_expect_error(AB_SVC_DISPATCHER, "{\"log\": {\"level\": {\"min\": \"info\"}}}",
                           dispatcher_env, err, sizeof(err), &path);
    CHECK_STR_CONTAINS(err, "\"log.level\"");
    remove_config(path);

    /* A very long key is reported, not overflowed. */
    char text[1200];
    snprintf(text, sizeof(text), "{\"kafka\": {\"%0900d\": 1}}", 7);
    load_file_expect_error(AB_SVC_DISPATCHER, text, dispatcher_env, err, sizeof(err), &path);
    CHECK_STR_CONTAINS(err, path);
    CHECK_STR_CONTAINS(err, "kafka");
    remove_config(path);
}

TEST(config_wrong_json_type_says_what_it_must_be)
{
    char err[512], *path;
    load_file_expect_error(AB_SVC_INGRESS, "{\"ingress\": {\"api_port\": \"8080\"}}", ingress_env,
                           err, sizeof(err), &path);
    CHECK_STR_CONTAINS(err, path);
    CHECK_STR_CONTAINS(err, "\"ingress.api_port\"");
    CHECK_STR_CONTAINS(err, "must be an integer between 1 and 65535");
    remove_config(path);

    load_file_expect_error(AB_SVC_INGRESS, "{\"ingress\": {\"api_port\": 8080.0}}", ingress_env,
                           err, sizeof(err), &path);
    CHECK_STR_CONTAINS(err, "must be an integer");
    remove_config(path);

    load_file_expect_error(AB_SVC_DISPATCHER, "{\"database\": {\"migrate\": \"true\"}}",
                           dispatcher_env, err, sizeof(err), &path);
    CHECK_STR_CONTAINS(err, "\"database.migrate\"");
    CHECK_STR_CONTAINS(err, "boolean");
    remove_config(path);

    load_file_expect_error(AB_SVC_DISPATCHER, "{\"log\": {\"level\": 3}}", dispatcher_env, err,
                           sizeof(err), &path);
    CHECK_STR_CONTAINS(err, "\"log.level\"");
    CHECK_STR_CONTAINS(err, "one of debug|info|warn|error");
    remove_config(path);

    load_file_expect_error(AB_SVC_DISPATCHER, "{\"kafka\": {\"properties\": [\"acks=all\"]}}",
                           dispatcher_env, err, sizeof(err), &path);
    CHECK_STR_CONTAINS(err, "\"kafka.properties\"");
    CHECK_STR_CONTAINS(err, "a JSON object");
    remove_config(path);

    load_file_expect_error(AB_SVC_DISPATCHER, "{\"kafka\": \"localhost:9092\"}", dispatcher_env,
                           err, sizeof(err), &path);
    CHECK_STR_CONTAINS(err, "\"kafka\" must be an object");
    remove_config(path);

    load_file_expect_error(AB_SVC_DISPATCHER, "{\"listen\": {\"host\": null}}", dispatcher_env,
                           err, sizeof(err), &path);
    CHECK_STR_CONTAINS(err, "\"listen.host\"");
    remove_config(path);

    /* A string with an embedded NUL would be silently cut short. */
    load_file_expect_error(AB_SVC_DISPATCHER, "{\"listen\": {\"host\": \"127.0.0.1\\u0000x\"}}",
                           dispatcher_env, err, sizeof(err), &path);
    CHECK_STR_CONTAINS(err, path);
    CHECK_STR_CONTAINS(err, "line 1");
    remove_config(path);
}

TEST(config_integer_bounds)
{
    static const struct {
        const char *text;
        bool ok;
    } cases[] = {
        { "{\"ingress\": {\"api_port\": 0}}", false },
        { "{\"ingress\": {\"api_port\": 1}}", true },
        { "{\"ingress\": {\"api_port\": 65535}}", true },
        { "{\"ingress\": {\"api_port\": 65536}}", false },
        { "{\"ingress\": {\"api_port\": -8080}}", false },
        { "{\"ingress\": {\"api_port\": 9223372036854775807}}", false },
        { "{\"database\": {\"pool_size\": 65}}", false },
        { "{\"kafka\": {\"max_poll_interval_ms\": 86400000}}", true },
        { "{\"kafka\": {\"max_poll_interval_ms\": 86400001}}", false },
        { "{\"http\": {\"max_body_bytes\": 1023}}", false },
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char *path = write_config(cases[i].text);
        char *var = config_var(path);
        struct ab_config *cfg;
        char err[512];
        enum ab_err rc = load(AB_SVC_INGRESS,
                              (const char *const[]){ var, DB_URL, BOOTSTRAP, ADMIN, NULL }, &cfg,
                              err, sizeof(err));
        if (cases[i].ok) {
            CHECK_INT_EQ(rc, AB_OK);
        } else {
            CHECK_INT_EQ(rc, AB_ERR_CONFIG);
            CHECK_STR_CONTAINS(err, path);
            CHECK_STR_CONTAINS(err, "must be an integer between");
        }
        if (rc != (cases[i].ok ? AB_OK : AB_ERR_CONFIG))
            fprintf(stderr, "    case %zu: %s\n", i, cases[i].text);
        ab_config_free(cfg);
        free(var);
        remove_config(path);
    }

    struct ab_config *cfg;
    char err[512];
    CHECK_INT_EQ(load(AB_SVC_DISPATCHER,
                      (const char *const[]){ DB_URL, BOOTSTRAP, "AGENTBUS_DATABASE_POOL_SIZE=65",
                                             NULL },
                      &cfg, err, sizeof(err)),
                 AB_ERR_CONFIG);
    CHECK_STR_CONTAINS(err, "AGENTBUS_DATABASE_POOL_SIZE");
    CHECK_STR_CONTAINS(err, "between 1 and 64");
    CHECK_STR_CONTAINS(err, "\"65\"");
}

TEST(config_string_choices_and_lengths)
{
    char err[512], *path;
    load_file_expect_error(AB_SVC_DISPATCHER, "{\"log\": {\"level\": \"verbose\"}}",
                           dispatcher_env, err, sizeof(err), &path);
    CHECK_STR_CONTAINS(err, path);
    CHECK_STR_CONTAINS(err, "\"log.level\"");
    CHECK_STR_CONTAINS(err, "one of debug|info|warn|error");
    remove_config(path);

    struct ab_config *cfg;
    CHECK_INT_EQ(load(AB_SVC_DISPATCHER,
                      (const char *const[]){ DB_URL, BOOTSTRAP, "AGENTBUS_LOG_LEVEL=verbose",
                                             NULL },
                      &cfg, err, sizeof(err)),
                 AB_ERR_CONFIG);
    CHECK_STR_CONTAINS(err, "AGENTBUS_LOG_LEVEL");
    CHECK_STR_CONTAINS(err, "one of debug|info|warn|error");
    CHECK_STR_CONTAINS(err, "verbose");
    /* Choices are whole words, exact case. */
    static const char *const near_misses[] = { "AGENTBUS_LOG_LEVEL=inf", "AGENTBUS_LOG_LEVEL=infoo",
                                               "AGENTBUS_LOG_LEVEL=INFO", "AGENTBUS_LOG_LEVEL=",
                                               "AGENTBUS_LOG_LEVEL=debug|info" };
    for (size_t i = 0; i < sizeof(near_misses) / sizeof(near_misses[0]); i++) {
        CHECK_INT_EQ(load(AB_SVC_DISPATCHER,
                          (const char *const[]){ DB_URL, BOOTSTRAP, near_misses[i], NULL }, &cfg,
                          err, sizeof(err)),
                     AB_ERR_CONFIG);
        CHECK_STR_CONTAINS(err, "AGENTBUS_LOG_LEVEL");
    }
    /* A string over its length bound. */
    char host[300] = "AGENTBUS_LISTEN_HOST=";
    memset(host + strlen(host), 'h', 256);
    CHECK_INT_EQ(load(AB_SVC_DISPATCHER, (const char *const[]){ DB_URL, BOOTSTRAP, host, NULL },
                      &cfg, err, sizeof(err)),
                 AB_ERR_CONFIG);
    CHECK_STR_CONTAINS(err, "AGENTBUS_LISTEN_HOST");
    CHECK_STR_CONTAINS(err, "a string of 0 to 255 characters");
}

TEST(config_bad_env_integer_names_variable)
{
    static const char *const bad[] = {
        "AGENTBUS_INGRESS_API_PORT=80x0",  "AGENTBUS_INGRESS_API_PORT= 8080",
        "AGENTBUS_INGRESS_API_PORT=8080 ", "AGENTBUS_INGRESS_API_PORT=",
        "AGENTBUS_INGRESS_API_PORT=0x50",  "AGENTBUS_INGRESS_API_PORT=99999999999999999999999",
        "AGENTBUS_INGRESS_API_PORT=80.5",  "AGENTBUS_INGRESS_API_PORT=-1",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        struct ab_config *cfg;
        char err[512];
        CHECK_INT_EQ(load(AB_SVC_INGRESS,
                          (const char *const[]){ DB_URL, BOOTSTRAP, ADMIN, bad[i], NULL }, &cfg,
                          err, sizeof(err)),
                     AB_ERR_CONFIG);
        CHECK_STR_CONTAINS(err, "environment variable AGENTBUS_INGRESS_API_PORT");
        CHECK_STR_CONTAINS(err, "ingress.api_port");
        CHECK_STR_CONTAINS(err, "an integer between 1 and 65535");
    }
    /* Bad booleans and objects too. */
    struct ab_config *cfg;
    char err[512];
    CHECK_INT_EQ(load(AB_SVC_DISPATCHER,
                      (const char *const[]){ DB_URL, BOOTSTRAP, "AGENTBUS_DATABASE_MIGRATE=maybe",
                                             NULL },
                      &cfg, err, sizeof(err)),
                 AB_ERR_CONFIG);
    CHECK_STR_CONTAINS(err, "AGENTBUS_DATABASE_MIGRATE");
    CHECK_STR_CONTAINS(err, "boolean");
    CHECK_INT_EQ(load(AB_SVC_DISPATCHER,
                      (const char *const[]){ DB_URL, BOOTSTRAP, "AGENTBUS_KAFKA_PROPERTIES=[1]",
                                             NULL },
                      &cfg, err, sizeof(err)),
                 AB_ERR_CONFIG);
    CHECK_STR_CONTAINS(err, "AGENTBUS_KAFKA_PROPERTIES");
    CHECK_STR_CONTAINS(err, "a JSON object");
}

TEST(config_missing_required_names_variable)
{
    struct ab_config *cfg;
    char err[512];
    CHECK_INT_EQ(load(AB_SVC_DISPATCHER, (const char *const[]){ BOOTSTRAP, NULL }, &cfg, err,
                      sizeof(err)),
                 AB_ERR_CONFIG);
    CHECK_STR_CONTAINS(err, "missing required setting");
    CHECK_STR_CONTAINS(err, "AGENTBUS_DATABASE_URL");
    CHECK_STR_CONTAINS(err, "(or DATABASE_URL)");
    CHECK_STR_CONTAINS(err, "\"database.url\"");

    CHECK_INT_EQ(load(AB_SVC_DISPATCHER, (const char *const[]){ DB_URL, NULL }, &cfg, err,
                      sizeof(err)),
                 AB_ERR_CONFIG);
    CHECK_STR_CONTAINS(err, "AGENTBUS_KAFKA_BOOTSTRAP");
    CHECK_STR_CONTAINS(err, "KAFKA_BOOTSTRAP)");

    CHECK_INT_EQ(load(AB_SVC_INGRESS, (const char *const[]){ DB_URL, BOOTSTRAP, NULL }, &cfg, err,
                      sizeof(err)),
                 AB_ERR_CONFIG);
    CHECK_STR_CONTAINS(err, "AGENTBUS_ADMIN_TOKEN");
    CHECK(strstr(err, "DATABASE_URL") == NULL);

    /* Only the ingress needs the admin token. */
    static const unsigned others[] = { AB_SVC_DISPATCHER, AB_SVC_LLM_WORKER, AB_SVC_NOTIFIER,
                                       AB_SVC_TOOL };
    for (size_t i = 0; i < sizeof(others) / sizeof(others[0]); i++) {
        err[0] = '\0';
        CHECK_INT_EQ(load(others[i], (const char *const[]){ DB_URL, BOOTSTRAP, NULL }, &cfg, err,
                          sizeof(err)),
                     AB_OK);
        CHECK_STR_EQ(err, "");
        ab_config_free(cfg);
    }
    CHECK_INT_EQ(load(AB_SVC_INGRESS, ingress_env, &cfg, err, sizeof(err)), AB_OK);
    ab_config_free(cfg);

    /* With nothing set, the first missing option is the one named. */
    CHECK_INT_EQ(load(AB_SVC_NOTIFIER, (const char *const[]){ NULL }, &cfg, err, sizeof(err)),
                 AB_ERR_CONFIG);
    CHECK_STR_CONTAINS(err, "AGENTBUS_DATABASE_URL");
}

TEST(config_required_from_file)
{
    char *path = write_config("{\"database\": {\"url\": \"postgresql://f@db/x\"}, "
                              "\"kafka\": {\"bootstrap\": \"f:9092\"}, "
                              "\"admin\": {\"token\": \"file-token-0123456789\"}}");
    char *var = config_var(path);
    struct ab_config *cfg;
    char err[512];
    CHECK_INT_EQ(load(AB_SVC_INGRESS, (const char *const[]){ var, NULL }, &cfg, err, sizeof(err)),
                 AB_OK);
    ab_config_free(cfg);
    free(var);
    remove_config(path);
}

TEST(config_small_error_buffer_is_truncated_safely)
{
    struct ab_config *cfg;
    char err[16];
    CHECK_INT_EQ(load(AB_SVC_DISPATCHER, (const char *const[]){ NULL }, &cfg, err, sizeof(err)),
                 AB_ERR_CONFIG);
    CHECK_INT_EQ(strlen(err), sizeof(err) - 1);
    CHECK_INT_EQ(load(AB_SVC_DISPATCHER,
                      (const char *const[]){ DB_URL, BOOTSTRAP, "AGENTBUS_LOG_LEVEL=verbose",
                                             NULL },
                      &cfg, err, sizeof(err)),
                 AB_ERR_CONFIG);
    CHECK_INT_EQ(strlen(err), sizeof(err) - 1);
}

/* Secret values that must never show up in an error message. */
TEST(config_secrets_never_in_error_messages)
{
    struct ab_config *cfg;
    char err[1024];
    /* Too short an admin token. */
    CHECK_INT_EQ(load(AB_SVC_INGRESS,
                      (const char *const[]){ DB_URL, BOOTSTRAP, "AGENTBUS_ADMIN_TOKEN=shortsecret",
                                             NULL },
                      &cfg, err, sizeof(err)),
                 AB_ERR_CONFIG);
    CHECK_STR_CONTAINS(err, "AGENTBUS_ADMIN_TOKEN");
    CHECK_STR_CONTAINS(err, "16 to 512 characters");
    CHECK(strstr(err, "shortsecret") == NULL);

    /* Malformed kafka.properties holding a password. */
    CHECK_INT_EQ(load(AB_SVC_DISPATCHER,
                      (const char *const[]){ DB_URL, BOOTSTRAP,
                                             "AGENTBUS_KAFKA_PROPERTIES={\"sasl.password\": "
                                             "\"hunter2hunter2\"",
                                             NULL },
                      &cfg, err, sizeof(err)),
                 AB_ERR_CONFIG);
    CHECK_STR_CONTAINS(err, "AGENTBUS_KAFKA_PROPERTIES");
    CHECK(strstr(err, "hunter2") == NULL);

    /* A database URL over its length bound. */
    char url[4200] = "DATABASE_URL=postgresql://agent:pw-SECRET-1@db/";
    size_t n = strlen(url);
    memset(url + n, 'x', 4100);
    url[n + 4100] = '\0';
    CHECK_INT_EQ(load(AB_SVC_DISPATCHER, (const char *const[]){ BOOTSTRAP, url, NULL }, &cfg, err,
                      sizeof(err)),
                 AB_ERR_CONFIG);
    CHECK_STR_CONTAINS(err, "DATABASE_URL");
    CHECK(strstr(err, "AGENTBUS_DATABASE_URL") == NULL); /* names the variable actually set */
    CHECK(strstr(err, "SECRET") == NULL);

    /* The same through the file: wrong length, wrong type. */
    char *path;
    load_file_expect_error(AB_SVC_INGRESS, "{\"admin\": {\"token\": \"shortsecret\"}}",
                           dispatcher_env, err, sizeof(err), &path);
    CHECK_STR_CONTAINS(err, "\"admin.token\"");
    CHECK(strstr(err, "shortsecret") == NULL);
    remove_config(path);

    /* A malformed file whose bad token is the secret itself (a forgotten pair of quotes, an
     * invalid escape): the parser's "near '...'" must not carry it into the message. */
    load_file_expect_error(AB_SVC_INGRESS,
                           "{\n\"admin\": {\"token\": supersecretvalue123}}", dispatcher_env, err,
                           sizeof(err), &path);
    CHECK_STR_CONTAINS(err, path);
    CHECK_STR_CONTAINS(err, "line 2");
    CHECK(strstr(err, "supersecret") == NULL);
    remove_config(path);
    load_file_expect_error(AB_SVC_INGRESS,
                           "{\"admin\": {\"token\": \"supersecret\\xvalue123\"}}", dispatcher_env,
                           err, sizeof(err), &path);
    CHECK(strstr(err, "supersecret") == NULL);
    remove_config(path);
}

/* The effective configuration, as a string, for searching. */
static char *effective_text(const struct ab_config *cfg)
{
    json_t *eff = ab_config_effective(cfg);
    REQUIRE(json_is_object(eff));
    char *text = json_dumps(eff, JSON_COMPACT | JSON_SORT_KEYS);
    json_decref(eff);
    REQUIRE(text != NULL);
    return text;
}

TEST(config_effective_masks_secrets)
{
    struct ab_config *cfg;
    char err[512];
    REQUIRE(load(AB_SVC_INGRESS,
                 (const char *const[]){
                     "AGENTBUS_DATABASE_URL=postgresql://agent:s3cr3t-pw@db.internal:5432/agentbus",
                     BOOTSTRAP, "AGENTBUS_ADMIN_TOKEN=admin-token-0123456789",
                     "AGENTBUS_KAFKA_PROPERTIES={\"sasl.username\": \"bus\", "
                     "\"sasl.password\": \"kpw-1\", \"ssl.key.password\": \"kpw-2\", "
                     "\"sasl.oauthbearer.client.secret\": \"kpw-3\", "
                     "\"SASL.PASSWORD\": \"kpw-4\", \"ssl.keystore.password\": 12345, "
                     "\"sasl\": {\"password\": \"kpw-5\"}, \"sasl.list\": [\"kpw-6\"], "
                     "\"linger.ms\": 5, \"enable.idempotence\": true, "
                     "\"security.protocol\": \"SASL_SSL\"}",
                     NULL },
                 &cfg, err, sizeof(err)) == AB_OK);
    json_t *eff = ab_config_effective(cfg);
    REQUIRE(json_is_object(eff));
    CHECK_STR_EQ(json_string_value(json_object_get(eff, "database.url")),
                 "postgresql://agent:***@db.internal:5432/agentbus");
    json_t *token = json_object_get(eff, "admin.token");
    CHECK(token == NULL || json_is_null(token) ||
          strcmp(json_string_value(token) ? json_string_value(token) : "", "***") == 0);
    json_t *props = json_object_get(eff, "kafka.properties");
    CHECK_STR_EQ(json_string_value(json_object_get(props, "sasl.username")), "bus");
    CHECK_STR_EQ(json_string_value(json_object_get(props, "security.protocol")), "SASL_SSL");
    CHECK_STR_EQ(json_string_value(json_object_get(props, "sasl.password")), "***");
    CHECK_INT_EQ(json_object_size(props), 11);
    CHECK_INT_EQ(json_integer_value(json_object_get(props, "linger.ms")), 5);
    CHECK(json_is_true(json_object_get(props, "enable.idempotence")));
    /* The configuration itself is untouched by the redaction. */
    CHECK_STR_EQ(json_string_value(json_object_get(ab_config_object(cfg, AB_OPT_KAFKA_PROPERTIES),
                                                   "sasl.password")),
                 "kpw-1");
    json_decref(eff);

    char *text = effective_text(cfg);
    CHECK(strstr(text, "s3cr3t") == NULL);
    CHECK(strstr(text, "admin-token-0123456789") == NULL);
    CHECK(strstr(text, "kpw-") == NULL);
    CHECK(strstr(text, "12345") == NULL);
    free(text);
    ab_config_free(cfg);
}

TEST(config_effective_admin_token_never_shown)
{
    static const char *const tokens[] = { "admin-token-0123456789", "tok://abcdefghijklmnop",
                                           "postgresql://u:pw@hostname-as-token" };
    for (size_t i = 0; i < sizeof(tokens) / sizeof(tokens[0]); i++) {
        char var[128];
        snprintf(var, sizeof(var), "AGENTBUS_ADMIN_TOKEN=%s", tokens[i]);
        struct ab_config *cfg;
        char err[512];
        REQUIRE(load(AB_SVC_INGRESS, (const char *const[]){ DB_URL, BOOTSTRAP, var, NULL }, &cfg,
                     err, sizeof(err)) == AB_OK);
        CHECK_STR_EQ(ab_config_str(cfg, AB_OPT_ADMIN_TOKEN), tokens[i]);
        char *text = effective_text(cfg);
        if (strstr(text, tokens[i] + 6) != NULL)
            ab_test_fail(__FILE__, __LINE__, "token %zu is shown: %s", i, text);
        CHECK_STR_CONTAINS(text, "\"admin.token\":\"***\"");
        free(text);
        ab_config_free(cfg);
    }
}

TEST(config_effective_database_url_forms)
{
    static const struct {
        const char *url;
        const char *shown;  /* exact, or NULL to only check for the secret */
        const char *secret; /* must not appear */
    } cases[] = {
        { "postgresql://agent@db/agentbus", "postgresql://agent@db/agentbus", NULL },
        { "postgresql://db/agentbus", "postgresql://db/agentbus", NULL },
        { "postgres://u:p4ss@h/d", "postgres://u:***@h/d", "p4ss" },
        { "postgresql://u:@h/d", "postgresql://u:***@h/d", NULL },
        /* libpq takes the password from the query string too. */
        { "postgresql://agent@db/agentbus?password=q-s3cret&sslmode=require",
          "postgresql://agent@db/agentbus?password=***&sslmode=***", "q-s3cret" },
        { "postgresql:///agentbus?host=/run/pg&password=q-s3cret",
          "postgresql:///agentbus?host=***&password=***", "q-s3cret" },
        { "postgresql://u:pw1@h/d?&flag&pass%77ord=pw2&",
          "postgresql://u:***@h/d?&flag&pass%77ord=***&", "pw" },
        /* An '@' inside the password (should be %40 but is not always). */
        { "postgresql://agent:pa@ss-word@db/agentbus", "postgresql://agent:***@db/agentbus",
          "ss-word" },
        /* An '@' after the host is not a credentials separator. */
        { "postgresql://db:5432/agentbus?user=me@corp", "postgresql://db:5432/agentbus?user=***",
          NULL },
        /* libpq ends the credentials at the last '@' before the first '/': a password may
         * hold '?' or '#'. */
        { "postgresql://u:s3cr?et@h/d", "postgresql://u:***@h/d", "et@" },
        { "postgresql://u:s3cr#et@h/d?sslmode=require", "postgresql://u:***@h/d?sslmode=***",
          "s3cr" },
        /* Not a URL: a key=value connection string is all secret. */
        { "host=db user=agent password=kv-s3cret", "***", "kv-s3cret" },
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char var[512];
        snprintf(var, sizeof(var), "AGENTBUS_DATABASE_URL=%s", cases[i].url);
        struct ab_config *cfg;
        char err[512];
        REQUIRE(load(AB_SVC_DISPATCHER, (const char *const[]){ var, BOOTSTRAP, NULL }, &cfg, err,
                     sizeof(err)) == AB_OK);
        json_t *eff = ab_config_effective(cfg);
        const char *shown = json_string_value(json_object_get(eff, "database.url"));
        REQUIRE(shown != NULL);
        if (cases[i].shown)
            CHECK_STR_EQ(shown, cases[i].shown);
        if (cases[i].secret && strstr(shown, cases[i].secret) != NULL)
            ab_test_fail(__FILE__, __LINE__, "case %zu shows its secret: %s", i, shown);
        json_decref(eff);
        ab_config_free(cfg);
    }
}

/* How many options the table gives to `service`. */
static size_t options_of(unsigned service)
{
    size_t n = 0;
    for (int i = 0; i < AB_OPT__COUNT; i++)
        if (ab_config_option((enum ab_opt)i)->services & service)
            n++;
    return n;
}

TEST(config_effective_lists_only_service_options)
{
    struct ab_config *cfg;
    char err[512];
    REQUIRE(load(AB_SVC_DISPATCHER, dispatcher_env, &cfg, err, sizeof(err)) == AB_OK);
    json_t *eff = ab_config_effective(cfg);
    CHECK_INT_EQ(json_object_size(eff), options_of(AB_SVC_DISPATCHER));
    CHECK_INT_EQ(json_integer_value(json_object_get(eff, "dispatcher.ops_port")), 9101);
    CHECK_INT_EQ(json_integer_value(json_object_get(eff, "database.pool_size")), 4);
    CHECK(json_is_true(json_object_get(eff, "database.migrate")));
    CHECK_STR_EQ(json_string_value(json_object_get(eff, "log.level")), "info");
    CHECK_STR_EQ(json_string_value(json_object_get(eff, "kafka.bootstrap")), "localhost:9092");
    CHECK(json_is_object(json_object_get(eff, "kafka.properties")));
    CHECK(json_object_get(eff, "ingress.api_port") == NULL);
    CHECK(json_object_get(eff, "notifier.ops_port") == NULL);
    CHECK(json_object_get(eff, "http.max_body_bytes") == NULL);
    CHECK(json_object_get(eff, "admin.token") == NULL);
    json_decref(eff);
    ab_config_free(cfg);

    REQUIRE(load(AB_SVC_INGRESS, ingress_env, &cfg, err, sizeof(err)) == AB_OK);
    eff = ab_config_effective(cfg);
    CHECK_INT_EQ(json_object_size(eff), options_of(AB_SVC_INGRESS));
    CHECK_INT_EQ(json_integer_value(json_object_get(eff, "ingress.api_port")), 8080);
    CHECK_INT_EQ(json_integer_value(json_object_get(eff, "http.max_body_bytes")), 1048576);
    CHECK(json_object_get(eff, "dispatcher.ops_port") == NULL);
    json_decref(eff);
    ab_config_free(cfg);

    REQUIRE(load(AB_SVC_TOOL, dispatcher_env, &cfg, err, sizeof(err)) == AB_OK);
    eff = ab_config_effective(cfg);
    CHECK_INT_EQ(json_object_size(eff), options_of(AB_SVC_TOOL));
    CHECK(json_object_get(eff, "kafka.bootstrap") != NULL);
    CHECK(json_object_get(eff, "database.pool_size") == NULL);
    CHECK(json_object_get(eff, "listen.host") == NULL);
    json_decref(eff);
    ab_config_free(cfg);
}

TEST(config_duplicate_keys_rejected)
{
    char err[512], *path;
    load_file_expect_error(AB_SVC_DISPATCHER,
                           "{\"log\": {\"level\": \"info\",\n \"level\": \"debug\"}}",
                           dispatcher_env, err, sizeof(err), &path);
    CHECK_STR_CONTAINS(err, path);
    CHECK_STR_CONTAINS(err, "line 2");
    CHECK_STR_CONTAINS(err, "duplicate");
    remove_config(path);

    load_file_expect_error(AB_SVC_DISPATCHER,
                           "{\"log\": {\"level\": \"info\"}, \"log\": {\"level\": \"debug\"}}",
                           dispatcher_env, err, sizeof(err), &path);
    CHECK_STR_CONTAINS(err, "duplicate");
    remove_config(path);

    load_file_expect_error(AB_SVC_DISPATCHER,
                           "{\"kafka\": {\"properties\": {\"acks\": \"1\", \"acks\": \"all\"}}}",
                           dispatcher_env, err, sizeof(err), &path);
    CHECK_STR_CONTAINS(err, "duplicate");
    remove_config(path);

    struct ab_config *cfg;
    CHECK_INT_EQ(load(AB_SVC_DISPATCHER,
                      (const char *const[]){ DB_URL, BOOTSTRAP,
                                             "AGENTBUS_KAFKA_PROPERTIES="
                                             "{\"acks\":\"1\",\"acks\":\"all\"}",
                                             NULL },
                      &cfg, err, sizeof(err)),
                 AB_ERR_CONFIG);
    CHECK_STR_CONTAINS(err, "AGENTBUS_KAFKA_PROPERTIES");
}

TEST(config_top_level_must_be_object)
{
    static const char *const texts[] = { "[1, 2]", "[]", "\"log\"", "42", "null" };
    for (size_t i = 0; i < sizeof(texts) / sizeof(texts[0]); i++) {
        char err[512], *path;
        load_file_expect_error(AB_SVC_DISPATCHER, texts[i], dispatcher_env, err, sizeof(err),
                               &path);
        CHECK_STR_CONTAINS(err, path);
        remove_config(path);
    }
    char err[512], *path;
    load_file_expect_error(AB_SVC_DISPATCHER, "[{\"log\": {\"level\": \"info\"}}]", dispatcher_env,
                           err, sizeof(err), &path);
    CHECK_STR_CONTAINS(err, "top level must be a JSON object");
    remove_config(path);
}

TEST(config_null_envp_reads_process_environment)
{
    /* This runs in a forked child, so changing its environment touches nothing else. */
    REQUIRE(clearenv() == 0);
    REQUIRE(setenv("AGENTBUS_DATABASE_URL", "postgresql://env@db/x", 1) == 0);
    REQUIRE(setenv("KAFKA_BOOTSTRAP", "procenv:9092", 1) == 0);
    REQUIRE(setenv("AGENTBUS_DISPATCHER_OPS_PORT", "19999", 1) == 0);
    struct ab_config *cfg;
    char err[512];
    REQUIRE(load(AB_SVC_DISPATCHER, NULL, &cfg, err, sizeof(err)) == AB_OK);
    CHECK_STR_EQ(ab_config_str(cfg, AB_OPT_KAFKA_BOOTSTRAP), "procenv:9092");
    CHECK_INT_EQ(ab_config_int(cfg, AB_OPT_DISPATCHER_OPS_PORT), 19999);
    ab_config_free(cfg);
}

/* Runs fn in a child and reports whether the child aborted. */
static bool aborts(void (*fn)(void))
{
    fflush(NULL);
    pid_t pid = fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
        if (freopen("/dev/null", "w", stderr) == NULL)
            _exit(2);
        fn();
        _exit(0);
    }
    int status = 0;
    REQUIRE(waitpid(pid, &status, 0) == pid);
    return WIFSIGNALED(status) && WTERMSIG(status) == SIGABRT;
}

static struct ab_config *loaded_for_abort;

static void read_string_as_int(void)
{
    ab_config_int(loaded_for_abort, AB_OPT_LOG_LEVEL);
}

static void read_int_as_string(void)
{
    ab_config_str(loaded_for_abort, AB_OPT_DATABASE_POOL_SIZE);
}

static void read_out_of_range(void)
{
    ab_config_bool(loaded_for_abort, AB_OPT__COUNT);
}

static void read_right_type(void)
{
    ab_config_bool(loaded_for_abort, AB_OPT_DATABASE_MIGRATE);
}

TEST(config_wrong_getter_type_aborts)
{
    char err[512];
    REQUIRE(load(AB_SVC_DISPATCHER, dispatcher_env, &loaded_for_abort, err, sizeof(err)) ==
            AB_OK);
    CHECK(aborts(read_string_as_int));
    CHECK(aborts(read_int_as_string));
    CHECK(aborts(read_out_of_range));
    CHECK(!aborts(read_right_type));
    ab_config_free(loaded_for_abort);
}

TEST(config_print_table_lists_every_option)
{
    char *text = NULL;
    size_t size = 0;
    FILE *out = open_memstream(&text, &size);
    REQUIRE(out != NULL);
    ab_config_print_table(out);
    REQUIRE(fclose(out) == 0);
    REQUIRE(text != NULL);
    size_t lines = 0;
    for (const char *p = text; *p; p++)
        if (*p == '\n')
            lines++;
    CHECK_INT_EQ(lines, 2 + AB_OPT__COUNT);
    CHECK(strncmp(text, "| option | environment |", 24) == 0);
    for (int i = 0; i < AB_OPT__COUNT; i++) {
        const struct ab_option *o = ab_config_option((enum ab_opt)i);
        char cell[160];
        snprintf(cell, sizeof(cell), "\n| `%s` | `%s`", o->name, o->env);
        CHECK_STR_CONTAINS(text, cell);
    }
    CHECK_STR_CONTAINS(text, "| `database.url` | `AGENTBUS_DATABASE_URL` or `DATABASE_URL` | "
                             "string | (required) |");
    CHECK_STR_CONTAINS(text, "| `ingress.api_port` | `AGENTBUS_INGRESS_API_PORT` | integer | "
                             "8080 | 1..65535 |");
    CHECK_STR_CONTAINS(text, "| `log.level` | `AGENTBUS_LOG_LEVEL` | string | info | "
                             "debug\\|info\\|warn\\|error |");
    CHECK_STR_CONTAINS(text, "| `kafka.topic_prefix` | `AGENTBUS_KAFKA_TOPIC_PREFIX` | string | "
                             "(empty) | length 0..100 |");
    CHECK_STR_CONTAINS(text, "; secret; required |\n");
    /* Every row has its 6 cells: a '|' inside a cell (the choices) must be escaped. */
    for (const char *line = text; *line;) {
        const char *end = strchr(line, '\n');
        REQUIRE(end != NULL);
        int bars = 0;
        for (const char *p = line; p < end; p++)
            if (*p == '|' && (p == line || p[-1] != '\\'))
                bars++;
        if (bars != 7)
            ab_test_fail(__FILE__, __LINE__, "row with %d cells: %.*s", bars - 1,
                         (int)(end - line), line);
        line = end + 1;
    }
    free(text);
}
