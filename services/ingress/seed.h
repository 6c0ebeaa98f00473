/* Declarative setup: the `seed` section of the configuration names tenants and, inside each,
 * LLM models, agents (with their API keys), members, relationships and channel configs, by
 * name. Ingress applies it at every start, after the migrations, in one transaction: what
 * does not exist is created, what exists is updated with the fields the seed gives, nothing
 * is ever deleted. docs/seeding.md describes the shape. */
#ifndef INGRESS_SEED_H
#define INGRESS_SEED_H

#include <jansson.h>
#include <libpq-fe.h>
#include <pthread.h>
#include <stdatomic.h>

#include "services/ingress/routes_admin.h"

/* How many records a seed application created and updated. */
struct ingress_seed_counts {
    int created;
    int updated;
};

/* Checks the seed's shape and every record against the admin API's rules, without a
 * database, so that a wrong seed stops the start with a message naming the record and the
 * field. Environment references ({"env": "NAME"}) must be set. @returns AB_OK or
 * AB_ERR_CONFIG. */
enum ab_err ingress_seed_check(const json_t *seed, char *errstr, size_t errstr_size);

/* Applies the seed on conn in one transaction (under an advisory lock, so that replicas
 * starting together apply it one after the other). @returns AB_OK, AB_ERR_INVALID or
 * AB_ERR_CONFLICT for a seed the database refuses (errstr names the record), or a database
 * error (retriable ones are worth retrying). */
enum ab_err ingress_seed_apply(PGconn *conn, const json_t *seed, struct ingress_seed_counts *counts,
                               char *errstr, size_t errstr_size);

/* The thread that applies the seed once the schema is ready, retrying while PostgreSQL is
 * away, and the readiness check "seed" that holds /readyz until it is applied. A seed the
 * database refuses stops the service with exit code 1. */
struct ingress_seeder {
    struct ingress_admin *admin;
    pthread_t thread;
    bool started;
    atomic_int state; /* 0 pending, 1 applied, -1 refused */
};

/* Validates the configured seed (ingress_seed_check), adds the readiness check, and starts
 * the thread when the seed names anything. Call before ab_service_start.
 * @returns AB_OK or AB_ERR_CONFIG (already logged). */
enum ab_err ingress_seeder_start(struct ingress_seeder *seeder, struct ingress_admin *admin);

/* Joins the thread (it notices the service stopping). Safe on a seeder never started. */
void ingress_seeder_stop(struct ingress_seeder *seeder);

#endif
