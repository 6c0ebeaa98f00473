/* The service runtime. Start-up never fails on a dependency that is merely down: the
 * PostgreSQL pool connects lazily, librdkafka reconnects on its own, and the migration
 * thread retries with backoff; until they are there, /readyz says which one is missing.
 * Shutdown runs in reverse, under a watchdog so that a stuck dependency cannot keep a
 * terminating pod alive past its grace period. */
#include "common/service.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "common/kafka.h"
#include "common/log.h"
#include "common/metrics.h"
#include "common/migrate.h"
#include "common/util.h"

#define BOOTSTRAP_BACKOFF_MAX_MS 30000

#define MIGRATE_ONLY_DEADLINE_MS 120000 /* how long --migrate waits for PostgreSQL */

static void usage(const char *name)
{
    printf("usage: agentbus-%s [--help] [--config-table] [--migrate]\n"
           "Configuration comes from environment variables and the JSON file named by\n"
           "AGENTBUS_CONFIG; `--config-table` prints every option. `--migrate` applies the\n"
           "pending migrations and exits (0 when the schema is up to date), for a one-shot\n"
           "step that runs before the services (which then may set database.migrate false).\n",
           name);
}

/* The signal thread is detached and lives as long as the process, longer than the
 * struct ab_service it serves; what the two share lives here. watch_lock guards `watched`,
 * which cleanup clears before it frees anything. */
static pthread_mutex_t watch_lock = PTHREAD_MUTEX_INITIALIZER;
static struct ab_service *watched;
static atomic_llong watch_deadline; /* monotonic ms when a stop must be over; 0: no stop yet */
static atomic_int watch_timeout_s;

/* Turns SIGTERM/SIGINT into a stop request, and is the watchdog of every stop, whatever
 * asked for it: when the stop outlives shutdown.timeout_s, or a second signal comes, the
 * process exits 1 rather than hang until Kubernetes kills it. */
static void *signal_loop(void *arg)
{
    sigset_t set;
    (void)arg;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    for (;;) {
        struct timespec tick = { .tv_sec = 0, .tv_nsec = 200 * 1000000L };
        siginfo_t info;
        /* EINTR is routine (sanitizers stop threads with signals at exit): just go on. */
        int sig = sigtimedwait(&set, &info, &tick);
        int64_t deadline = atomic_load(&watch_deadline);
        if (sig > 0 && deadline != 0) {
            ab_error("second signal during shutdown: exiting now");
            _exit(1);
        }
        if (sig > 0) {
            ab_info("received %s: stopping", sig == SIGTERM ? "SIGTERM" : "SIGINT");
            pthread_mutex_lock(&watch_lock);
            if (watched != NULL)
                ab_service_request_stop(watched, 0);
            pthread_mutex_unlock(&watch_lock);
        } else if (deadline != 0 && ab_monotonic_ms() > deadline) {
            ab_error("shutdown took longer than %d s (shutdown.timeout_s): exiting now",
                     atomic_load(&watch_timeout_s));
            _exit(1);
        }
    }
    return NULL;
}

static void sleep_unless_stopping(struct ab_service *svc, int64_t ms)
{
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += (time_t)(ms / 1000);
    until.tv_nsec += (long)(ms % 1000) * 1000000L;
    if (until.tv_nsec >= 1000000000L) {
        until.tv_sec++;
        until.tv_nsec -= 1000000000L;
    }
    pthread_mutex_lock(&svc->lock);
    if (!atomic_load(&svc->stopping))
        pthread_cond_timedwait(&svc->changed, &svc->lock, &until);
    pthread_mutex_unlock(&svc->lock);
}

/* Applies the migrations (or, when this process is not to, waits for PostgreSQL to answer),
 * retrying with exponential backoff and jitter until it works, the service stops, or
 * deadline_ms (monotonic; 0: none) would pass. @returns whether the database is ready. */
static bool db_bootstrap(struct ab_service *svc, bool migrate, int64_t deadline_ms)
{
    int64_t backoff = 500;
    const char *dir = ab_config_str(svc->cfg, AB_OPT_DATABASE_MIGRATIONS_DIR);
    while (!atomic_load(&svc->stopping)) {
        char errstr[512];
        int applied = 0;
        enum ab_err err = migrate ? ab_migrate(svc->db, dir, &applied, errstr, sizeof(errstr))
                                  : ab_db_ping(svc->db, 5000, errstr, sizeof(errstr));
        if (err == AB_OK) {
            if (migrate)
                ab_info("database schema up to date (%d migrations applied now)", applied);
            return true;
        }
        int64_t wait = backoff / 2 + (int64_t)(ab_random_unit() * (double)(backoff / 2));
        /* With a deadline (a one-shot step) a lasting error fails at once. */
        if (deadline_ms > 0 &&
            (!ab_err_is_retriable(err) || ab_monotonic_ms() + wait > deadline_ms)) {
            ab_error("database not ready, giving up: %s", errstr);
            return false;
        }
        ab_log_fields(
            AB_LOG_WARN,
            json_pack("{s:s,s:I}", "error", ab_err_name(err), "retry_in_ms", (json_int_t)wait),
            "database not ready: %s", errstr);
        sleep_unless_stopping(svc, wait);
        backoff = backoff * 2 > BOOTSTRAP_BACKOFF_MAX_MS ? BOOTSTRAP_BACKOFF_MAX_MS : backoff * 2;
    }
    return false;
}

static void *bootstrap_loop(void *arg)
{
    struct ab_service *svc = arg;
    if (db_bootstrap(svc, ab_config_bool(svc->cfg, AB_OPT_DATABASE_MIGRATE), 0)) {
        pthread_mutex_lock(&svc->lock);
        atomic_store(&svc->db_ready, true);
        pthread_cond_broadcast(&svc->changed);
        pthread_mutex_unlock(&svc->lock);
    }
    return NULL;
}

/* --migrate: one pass of the start-up migration (the same advisory lock, the same retries),
 * waiting for PostgreSQL for up to MIGRATE_ONLY_DEADLINE_MS, then the exit code. SIGTERM and
 * SIGINT are let through again: a one-shot step has nothing to drain, and a migration cut
 * short rolls back with its connection. */
static int migrate_only(struct ab_service *svc, const char *client_id, const sigset_t *signals)
{
    char errstr[512];
    pthread_sigmask(SIG_UNBLOCK, signals, NULL);
    if (ab_db_pool_new(ab_config_str(svc->cfg, AB_OPT_DATABASE_URL), 1,
                       (int)ab_config_int(svc->cfg, AB_OPT_DATABASE_CONNECT_TIMEOUT_S), client_id,
                       &svc->db, errstr, sizeof(errstr)) != AB_OK) {
        ab_error("configuration error: %s", errstr);
        return 2;
    }
    bool ok = db_bootstrap(svc, true, ab_monotonic_ms() + MIGRATE_ONLY_DEADLINE_MS);
    ab_db_pool_free(svc->db);
    svc->db = NULL;
    return ok ? 0 : 1;
}

static bool check_postgres(void *ud, char *detail, size_t size)
{
    struct ab_service *svc = ud;
    if (!atomic_load(&svc->db_ready)) {
        snprintf(detail, size, "schema not migrated yet");
        return false;
    }
    return ab_db_ping(svc->db, 2000, detail, size) == AB_OK;
}

static bool check_kafka(void *ud, char *detail, size_t size)
{
    struct ab_service *svc = ud;
    if (ab_producer_fatal(svc->producer)) {
        snprintf(detail, size, "producer hit a fatal error");
        return false;
    }
    if (!ab_kafka_reachable(ab_producer_handle(svc->producer), 2000)) {
        snprintf(detail, size, "no broker answered within 2 s");
        return false;
    }
    return true;
}

static double pool_in_use(void *ud)
{
    return ab_db_pool_in_use(ud);
}

int ab_service_init(struct ab_service *svc, const char *name, unsigned bit,
                    enum ab_opt ops_port_opt, int argc, char **argv)
{
    char errstr[1024], client_id[128], host[64];
    memset(svc, 0, sizeof(*svc));
    svc->name = name;
    svc->bit = bit;
    pthread_mutex_init(&svc->lock, NULL);
    pthread_cond_init(&svc->changed, NULL);
    bool migrate = false;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--config-table") == 0) {
            ab_config_print_table(stdout);
            return 0;
        }
        if (strcmp(argv[i], "--migrate") == 0) {
            migrate = true;
            continue;
        }
        usage(name);
        return strcmp(argv[i], "--help") == 0 ? 0 : 2;
    }

    /* Block the signals before any thread exists, so every thread inherits the mask and
     * only the signal thread ever sees them. SIGPIPE: a peer closing a socket is an error
     * return, not a reason to die. */
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    signal(SIGPIPE, SIG_IGN);

    ab_log_init(name, AB_LOG_INFO);
    if (ab_config_load(bit, NULL, &svc->cfg, errstr, sizeof(errstr)) != AB_OK) {
        fprintf(stderr, "agentbus-%s: %s\n", name, errstr);
        ab_error("configuration error: %s", errstr);
        return 2;
    }
    enum ab_log_level level = AB_LOG_INFO;
    ab_log_level_parse(ab_config_str(svc->cfg, AB_OPT_LOG_LEVEL), &level);
    ab_log_init(name, level);
    ab_log_fields(AB_LOG_INFO, json_pack("{s:o,s:s?}", "config", ab_config_effective(svc->cfg),
                                         "config_file", ab_config_file(svc->cfg)),
                  "agentbus-%s starting", name);

    if (gethostname(host, sizeof(host)) != 0)
        snprintf(host, sizeof(host), "unknown");
    snprintf(client_id, sizeof(client_id), "agentbus-%s-%s", name, host);
    if (migrate) {
        int rc = migrate_only(svc, client_id, &set);
        ab_config_free(svc->cfg);
        svc->cfg = NULL;
        return rc;
    }
    if (ab_db_pool_new(ab_config_str(svc->cfg, AB_OPT_DATABASE_URL),
                       (int)ab_config_int(svc->cfg, AB_OPT_DATABASE_POOL_SIZE),
                       (int)ab_config_int(svc->cfg, AB_OPT_DATABASE_CONNECT_TIMEOUT_S), client_id,
                       &svc->db, errstr, sizeof(errstr)) != AB_OK ||
        ab_producer_new(svc->cfg, client_id, &svc->producer, errstr, sizeof(errstr)) != AB_OK) {
        fprintf(stderr, "agentbus-%s: %s\n", name, errstr);
        ab_error("configuration error: %s", errstr);
        return 2;
    }
    ab_metrics_gauge_fn(ab_metrics_default(), "agentbus_db_pool_connections_in_use",
                        "PostgreSQL connections borrowed from the pool", pool_in_use, svc->db);
    ab_metric_set(ab_metrics_gauge(ab_metrics_default(), "agentbus_db_pool_connections_max",
                                   "PostgreSQL connections the pool may open", NULL),
                  NULL, (double)ab_config_int(svc->cfg, AB_OPT_DATABASE_POOL_SIZE));

    struct ab_http_server_options ops = {
        .name = "ops",
        .host = ab_config_str(svc->cfg, AB_OPT_LISTEN_HOST),
        .port = (int)ab_config_int(svc->cfg, ops_port_opt),
        .max_body_bytes = 64 * 1024,
        .connection_limit = 64,
        .idle_timeout_s = 30,
        .access_log = false,
    };
    svc->health = ab_health_new(2000);
    if (svc->health == NULL ||
        ab_http_server_new(&ops, &svc->ops, errstr, sizeof(errstr)) != AB_OK) {
        ab_error("cannot create the ops listener: %s", errstr);
        return 1;
    }
    ab_health_add_check(svc->health, "postgres", check_postgres, svc);
    ab_health_add_check(svc->health, "kafka", check_kafka, svc);

    atomic_store(&watch_timeout_s, (int)ab_config_int(svc->cfg, AB_OPT_SHUTDOWN_TIMEOUT_S));
    pthread_mutex_lock(&watch_lock);
    watched = svc;
    pthread_mutex_unlock(&watch_lock);
    if (pthread_create(&svc->signal_thread, NULL, signal_loop, NULL) != 0 ||
        pthread_create(&svc->bootstrap_thread, NULL, bootstrap_loop, svc) != 0) {
        ab_error("cannot start the service threads");
        return 1;
    }
    pthread_detach(svc->signal_thread); /* it ends with the process */
    svc->bootstrap_started = true;
    return -1;
}

int ab_service_start(struct ab_service *svc)
{
    char errstr[512];
    if (ab_health_start(svc->health, svc->ops) != AB_OK ||
        ab_http_server_start(svc->ops, errstr, sizeof(errstr)) != AB_OK) {
        ab_error("cannot start the ops listener: %s", errstr);
        return 1;
    }
    return 0;
}

bool ab_service_wait_db(struct ab_service *svc)
{
    pthread_mutex_lock(&svc->lock);
    while (!atomic_load(&svc->db_ready) && !atomic_load(&svc->stopping))
        pthread_cond_wait(&svc->changed, &svc->lock);
    pthread_mutex_unlock(&svc->lock);
    return atomic_load(&svc->db_ready) && !atomic_load(&svc->stopping);
}

enum ab_err ab_service_db_acquire(struct ab_service *svc, int timeout_ms, PGconn **conn,
                                  char *errstr, size_t size)
{
    *conn = NULL;
    if (!atomic_load(&svc->db_ready)) {
        snprintf(errstr, size, "starting: the database schema is not ready yet");
        return AB_ERR_UNAVAILABLE;
    }
    return ab_db_acquire(svc->db, timeout_ms, conn, errstr, size);
}

void ab_service_request_stop(struct ab_service *svc, int exit_code)
{
    long long expected = 0;
    atomic_compare_exchange_strong(&watch_deadline, &expected,
                                   ab_monotonic_ms() + 1000LL * atomic_load(&watch_timeout_s));
    pthread_mutex_lock(&svc->lock);
    if (!atomic_load(&svc->stopping))
        atomic_store(&svc->exit_code, exit_code);
    atomic_store(&svc->stopping, true);
    pthread_cond_broadcast(&svc->changed);
    pthread_mutex_unlock(&svc->lock);
}

bool ab_service_stopping(struct ab_service *svc)
{
    return atomic_load(&svc->stopping);
}

int ab_service_wait(struct ab_service *svc)
{
    pthread_mutex_lock(&svc->lock);
    while (!atomic_load(&svc->stopping)) {
        struct timespec until;
        clock_gettime(CLOCK_REALTIME, &until);
        until.tv_sec += 1;
        pthread_cond_timedwait(&svc->changed, &svc->lock, &until);
        if (ab_producer_fatal(svc->producer) && !atomic_load(&svc->stopping)) {
            pthread_mutex_unlock(&svc->lock);
            ab_error("the Kafka producer cannot recover: restarting the process");
            ab_service_request_stop(svc, 1);
            pthread_mutex_lock(&svc->lock);
        }
    }
    pthread_mutex_unlock(&svc->lock);
    ab_health_set_draining(svc->health);
    /* The checks read the consumer and the producer, which are freed next. */
    ab_health_stop(svc->health);
    return atomic_load(&svc->exit_code);
}

void ab_service_cleanup(struct ab_service *svc)
{
    /* From here a late signal no longer touches svc; the watchdog stays armed. */
    pthread_mutex_lock(&watch_lock);
    watched = NULL;
    pthread_mutex_unlock(&watch_lock);
    ab_health_stop(svc->health); /* when the service never reached ab_service_wait */
    if (svc->bootstrap_started) {
        ab_service_request_stop(svc, atomic_load(&svc->exit_code));
        pthread_join(svc->bootstrap_thread, NULL);
    }
    /* The ops listener's /readyz reads the health object: both go before what they watch. */
    ab_http_server_free(svc->ops);
    ab_health_free(svc->health);
    if (svc->producer)
        ab_producer_free(svc->producer, 10000);
    if (svc->db) {
        ab_metric_unbind_fn(ab_metrics_gauge_fn(ab_metrics_default(),
                                                "agentbus_db_pool_connections_in_use", NULL,
                                                pool_in_use, svc->db),
                            svc->db);
        ab_db_pool_free(svc->db);
    }
    ab_config_free(svc->cfg);
    pthread_cond_destroy(&svc->changed);
    pthread_mutex_destroy(&svc->lock);
    ab_info("agentbus-%s stopped", svc->name);
}

static bool check_consumer(void *ud, char *detail, size_t size)
{
    if (!ab_consumer_ready(ud)) {
        snprintf(detail, size, "no partitions assigned yet");
        return false;
    }
    return true;
}

int ab_service_run_consumer(struct ab_service *svc, const struct ab_consumer_options *opts)
{
    struct ab_consumer *consumer = NULL;
    char errstr[512];
    if (ab_consumer_new(svc->cfg, svc->producer, opts, &consumer, errstr, sizeof(errstr)) !=
        AB_OK) {
        ab_error("cannot create the consumer: %s", errstr);
        return 2;
    }
    ab_health_add_check(svc->health, "consumer", check_consumer, consumer);
    int rc = ab_service_start(svc);
    if (rc == 0) {
        /* Handlers write to tables: consume only once the schema is there. */
        if (ab_service_wait_db(svc) && ab_consumer_start(consumer) != AB_OK) {
            ab_error("cannot start the consumer");
            ab_service_request_stop(svc, 1);
        }
        rc = ab_service_wait(svc);
    }
    ab_consumer_free(consumer);
    return rc;
}
