/* PostgreSQL: a small connection pool (a thread holds at most one connection at a time;
 * a broken connection is replaced on the next acquire), parameterised queries only, and
 * transactions. libpq's result codes become enum ab_err here. */
#ifndef AB_DB_H
#define AB_DB_H

#include <libpq-fe.h>
#include <stddef.h>

#include "common/errors.h"

struct ab_db_pool;

/* Creates a pool of up to `size` connections to conninfo (a URI or key=value string).
 * Connections open lazily, so this succeeds while PostgreSQL is down.
 * @ownership free with ab_db_pool_free, after every connection is released. */
enum ab_err ab_db_pool_new(const char *conninfo, int size, int connect_timeout_s,
                           const char *application_name, struct ab_db_pool **out,
                           char *errstr, size_t errstr_size);
void ab_db_pool_free(struct ab_db_pool *pool);

/* Every connection opened from now on runs with these statement_timeout and lock_timeout
 * (defaults 30 s and 10 s); 0 turns one off. Call before the pool is shared. */
void ab_db_pool_set_timeouts(struct ab_db_pool *pool, int statement_timeout_ms,
                             int lock_timeout_ms);

/* Borrows a connection, waiting up to timeout_ms for a free one, opening or reopening it
 * when needed. @returns AB_OK, AB_ERR_TIMEOUT (pool exhausted), AB_ERR_UNAVAILABLE
 * (cannot connect). @thread safe; do not acquire twice in one thread (deadlock risk). */
enum ab_err ab_db_acquire(struct ab_db_pool *pool, int timeout_ms, PGconn **conn, char *errstr,
                          size_t errstr_size);
/* Gives the connection back. A connection left inside a transaction is rolled back; a
 * broken one is closed. NULL is a no-op. */
void ab_db_release(struct ab_db_pool *pool, PGconn *conn);

/* Runs one statement with text parameters through PQexecParams. res may be NULL when the
 * rows are not wanted; otherwise the caller PQclears *res (set only on AB_OK).
 * @returns AB_OK; AB_ERR_CONFLICT (unique violation); AB_ERR_INVALID (bad data or
 * constraint); AB_ERR_UNAVAILABLE (connection lost, serialization failure, deadlock: retry);
 * AB_ERR_TIMEOUT (statement cancelled); AB_ERR_INTERNAL. */
enum ab_err ab_db_exec(PGconn *conn, const char *sql, int nparams, const char *const *params,
                       PGresult **res, char *errstr, size_t errstr_size);

enum ab_err ab_db_begin(PGconn *conn, char *errstr, size_t errstr_size);
enum ab_err ab_db_commit(PGconn *conn, char *errstr, size_t errstr_size);
void ab_db_rollback(PGconn *conn);

/* Readiness: acquires a connection and runs SELECT 1. */
enum ab_err ab_db_ping(struct ab_db_pool *pool, int timeout_ms, char *errstr, size_t errstr_size);

/* Connections in use and pool size (metrics). */
int ab_db_pool_in_use(struct ab_db_pool *pool);
int ab_db_pool_size(const struct ab_db_pool *pool);

/* Opens a connection of its own, outside the pool, with the pool's URL, timeouts and
 * keepalives, for a thread that keeps one for long (a LISTEN). application_name names it in
 * pg_stat_activity. @returns AB_OK or AB_ERR_UNAVAILABLE (cannot connect).
 * @ownership the caller PQfinishes *out. @thread safe. */
enum ab_err ab_db_connect(struct ab_db_pool *pool, const char *application_name, PGconn **out,
                          char *errstr, size_t errstr_size);

/* The NOTIFY channel of the gateway inbox. The dispatcher notifies it, with the agent id as
 * the payload, in the transaction that adds a row to gateway_messages (PostgreSQL delivers
 * it at commit, so whoever is woken finds the row); ingress LISTENs to wake that agent's
 * long polls. */
#define AB_DB_CHANNEL_GATEWAY_INBOX "agentbus_gateway_inbox"

#endif
