/* The life of a service process, shared by the four services so that each main.c only
 * wires its own parts: configuration, logging, the PostgreSQL pool and its migrations, the
 * Kafka producer, the ops listener (/livez /readyz /metrics), signals, and an orderly
 * shutdown with a time limit. */
#ifndef AB_SERVICE_H
#define AB_SERVICE_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>

#include "common/config.h"
#include "common/db.h"
#include "common/health.h"
#include "common/http_server.h"
#include "common/kafka_consumer.h"
#include "common/kafka_producer.h"

struct ab_service {
    const char *name;      /* "ingress", "dispatcher", ... */
    unsigned bit;          /* enum ab_service_kind */
    struct ab_config *cfg;
    struct ab_db_pool *db;
    struct ab_producer *producer;
    struct ab_http_server *ops;
    struct ab_health *health;

    /* private */
    atomic_bool db_ready; /* migrations applied (or not ours to apply) and PG answered */
    atomic_bool stopping;
    atomic_int exit_code;
    pthread_mutex_t lock;
    pthread_cond_t changed;
    pthread_t signal_thread;
    pthread_t bootstrap_thread;
    bool bootstrap_started;
};

/* Parses the command line (--help, --config-table, --migrate: apply the migrations and
 * exit), loads and prints the configuration,
 * creates the pool, the producer and the ops listener, and starts the migration thread
 * (which retries with backoff while PostgreSQL is down). Blocks SIGTERM and SIGINT in every
 * thread and watches them on a thread of its own.
 * @returns -1 when the service should go on; otherwise the process exit code (0 after
 * --help, 2 for a bad configuration, 1 for other start-up failures), already reported. */
int ab_service_init(struct ab_service *svc, const char *name, unsigned bit,
                    enum ab_opt ops_port_opt, int argc, char **argv);

/* Adds /livez /readyz /metrics and starts the ops listener; add checks before this. */
int ab_service_start(struct ab_service *svc);

/* Blocks until the schema is migrated and PostgreSQL answered once (true), or a stop was
 * requested first (false). Consumers start only after this: their work needs the tables. */
bool ab_service_wait_db(struct ab_service *svc);

/* Borrows a PostgreSQL connection for request handling: AB_ERR_UNAVAILABLE ("starting")
 * until the schema is migrated, so a request in the first moments after start gets a
 * retriable 503 rather than a missing-table 500. Release with ab_db_release(svc->db, ...). */
enum ab_err ab_service_db_acquire(struct ab_service *svc, int timeout_ms, PGconn **conn,
                                  char *errstr, size_t errstr_size);

/* Blocks until SIGTERM/SIGINT or ab_service_request_stop; then readiness turns to
 * "draining". @returns the exit code requested. */
int ab_service_wait(struct ab_service *svc);

/* Asks the service to stop with exit_code (a fatal error asks with 1). @thread safe. */
void ab_service_request_stop(struct ab_service *svc, int exit_code);
bool ab_service_stopping(struct ab_service *svc);

/* The main loop of a consumer service: creates the consumer, adds its readiness check,
 * starts the ops listener, starts consuming once the schema is there, waits for the stop,
 * then stops the consumer (the message in hand finishes, offsets are committed, the group
 * is left). @returns the exit code. */
int ab_service_run_consumer(struct ab_service *svc, const struct ab_consumer_options *opts);

/* Flushes the producer, stops the ops listener, frees what init created. */
void ab_service_cleanup(struct ab_service *svc);

#endif
