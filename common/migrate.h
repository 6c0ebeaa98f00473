/* The schema migration runner: numbered SQL files applied once, in order, by whichever
 * service starts first. */
#ifndef AB_MIGRATE_H
#define AB_MIGRATE_H

#include "common/db.h"

/* Applies, in order, the migrations NNNN_name.sql of dir that are not applied yet, each in
 * its own transaction, under a PostgreSQL advisory lock so that services starting together
 * apply each file once. A migration changed after it was applied is an error (its SHA-256
 * is recorded in schema_migrations). applied (may be NULL) receives how many ran.
 * @returns AB_OK, AB_ERR_UNAVAILABLE (PostgreSQL down: retry), AB_ERR_CONFIG (a bad or
 * changed file, a missing directory), AB_ERR_INTERNAL (a migration failed). */
enum ab_err ab_migrate(struct ab_db_pool *pool, const char *dir, int *applied, char *errstr,
                       size_t errstr_size);

#endif
