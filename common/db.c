/* The PostgreSQL pool. Slots are handed out under one mutex; connecting happens outside it
 * so a slow or dead server never blocks threads that only want to release. */
#include "common/db.h"

#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/log.h"
#include "common/util.h"

struct slot {
    PGconn *conn;
    bool in_use;
};

struct ab_db_pool {
    char *conninfo;
    char connect_timeout[16];
    char *application_name;
    int size;
    char statement_timeout_ms[16];
    char lock_timeout_ms[16];
    struct slot *slots;
    pthread_mutex_t lock;
    pthread_cond_t freed;
};

enum ab_err ab_db_pool_new(const char *conninfo, int size, int connect_timeout_s,
                           const char *application_name, struct ab_db_pool **out, char *errstr,
                           size_t errstr_size)
{
    char *why = NULL;
    *out = NULL;
    /* Parse once up front so a malformed DATABASE_URL fails at start, not at first use. */
    PQconninfoOption *opts = PQconninfoParse(conninfo, &why);
    if (opts == NULL) {
        /* libpq's explanation quotes the string, password included: it is not repeated. */
        snprintf(errstr, errstr_size,
                 "database.url is not a valid connection string (expected "
                 "postgresql://user:password@host:port/database or key=value pairs)");
        PQfreemem(why);
        return AB_ERR_CONFIG;
    }
    PQconninfoFree(opts);
    struct ab_db_pool *pool = ab_xcalloc(1, sizeof(*pool));
    pool->conninfo = ab_xstrdup(conninfo);
    pool->application_name = ab_xstrdup(application_name);
    snprintf(pool->connect_timeout, sizeof(pool->connect_timeout), "%d", connect_timeout_s);
    ab_db_pool_set_timeouts(pool, 30000, 10000);
    pool->size = size;
    pool->slots = ab_xcalloc((size_t)size, sizeof(*pool->slots));
    pthread_mutex_init(&pool->lock, NULL);
    pthread_cond_init(&pool->freed, NULL);
    *out = pool;
    return AB_OK;
}

void ab_db_pool_set_timeouts(struct ab_db_pool *pool, int statement_timeout_ms,
                             int lock_timeout_ms)
{
    snprintf(pool->statement_timeout_ms, sizeof(pool->statement_timeout_ms), "%d",
             statement_timeout_ms);
    snprintf(pool->lock_timeout_ms, sizeof(pool->lock_timeout_ms), "%d", lock_timeout_ms);
}

void ab_db_pool_free(struct ab_db_pool *pool)
{
    if (pool == NULL)
        return;
    for (int i = 0; i < pool->size; i++)
        if (pool->slots[i].conn)
            PQfinish(pool->slots[i].conn);
    pthread_cond_destroy(&pool->freed);
    pthread_mutex_destroy(&pool->lock);
    free(pool->slots);
    free(pool->conninfo);
    free(pool->application_name);
    free(pool);
}

/* Server notices ("relation ... already exists, skipping" at every migration run) would go
 * to stderr as raw text, past the JSON log: log them as debug lines instead. */
static void on_notice(void *arg, const char *message)
{
    (void)arg;
    ab_debug("postgresql: %.*s", (int)strcspn(message, "\n"), message);
}

static PGconn *connect_db(struct ab_db_pool *pool, const char *application_name)
{
    /* expand_dbname=1: "dbname" may hold a full URI or key=value string; the keywords after
     * it override what it says. */
    /* TCP keepalives and a user timeout notice a server that vanished without closing the
     * connection (a node lost, a network cut) in about half a minute, instead of the
     * quarter of an hour TCP retransmission would take. */
    const char *const keys[] = { "dbname", "connect_timeout", "application_name", "keepalives",
                                 "keepalives_idle", "keepalives_interval", "keepalives_count",
                                 "tcp_user_timeout", NULL };
    const char *const values[] = { pool->conninfo, pool->connect_timeout,
                                   application_name, "1", "15", "5", "3", "30000", NULL };
    PGconn *conn = PQconnectdbParams(keys, values, 1);
    if (conn != NULL)
        PQsetNoticeProcessor(conn, on_notice, NULL);
    if (conn != NULL && PQstatus(conn) == CONNECTION_OK) {
        /* No statement or lock wait may hold a thread (and a consumer's partition) for ever. */
        char why[256];
        const char *const params[] = { pool->statement_timeout_ms, pool->lock_timeout_ms };
        /* If this fails the connection is broken, which the caller sees in its status. */
        if (ab_db_exec(conn, "SELECT set_config('statement_timeout', $1, false),"
                             " set_config('lock_timeout', $2, false)",
                       2, params, NULL, why, sizeof(why)) != AB_OK)
            ab_warn("PostgreSQL: cannot set the session timeouts: %s", why);
    }
    return conn;
}

enum ab_err ab_db_acquire(struct ab_db_pool *pool, int timeout_ms, PGconn **conn, char *errstr,
                          size_t errstr_size)
{
    struct timespec deadline;
    clock_gettime(CLOCK_REALTIME, &deadline);
    deadline.tv_sec += timeout_ms / 1000;
    deadline.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
    if (deadline.tv_nsec >= 1000000000L) {
        deadline.tv_sec++;
        deadline.tv_nsec -= 1000000000L;
    }
    *conn = NULL;
    struct slot *slot = NULL;
    pthread_mutex_lock(&pool->lock);
    while (slot == NULL) {
        for (int i = 0; i < pool->size && slot == NULL; i++)
            if (!pool->slots[i].in_use)
                slot = &pool->slots[i];
        if (slot != NULL)
            break;
        if (pthread_cond_timedwait(&pool->freed, &pool->lock, &deadline) == ETIMEDOUT) {
            pthread_mutex_unlock(&pool->lock);
            snprintf(errstr, errstr_size, "no free PostgreSQL connection within %d ms",
                     timeout_ms);
            return AB_ERR_TIMEOUT;
        }
    }
    slot->in_use = true;
    pthread_mutex_unlock(&pool->lock);

    if (slot->conn != NULL && PQstatus(slot->conn) != CONNECTION_OK) {
        PQfinish(slot->conn);
        slot->conn = NULL;
    }
    if (slot->conn == NULL) {
        PGconn *c = connect_db(pool, pool->application_name);
        if (PQstatus(c) != CONNECTION_OK) {
            snprintf(errstr, errstr_size, "PostgreSQL unreachable: %s", PQerrorMessage(c));
            /* libpq messages end with a newline; keep log lines clean. */
            errstr[strcspn(errstr, "\n")] = '\0';
            PQfinish(c);
            pthread_mutex_lock(&pool->lock);
            slot->in_use = false;
            pthread_cond_signal(&pool->freed);
            pthread_mutex_unlock(&pool->lock);
            return AB_ERR_UNAVAILABLE;
        }
        slot->conn = c;
    }
    *conn = slot->conn;
    return AB_OK;
}

void ab_db_release(struct ab_db_pool *pool, PGconn *conn)
{
    if (conn == NULL)
        return;
    if (PQstatus(conn) == CONNECTION_OK && PQtransactionStatus(conn) != PQTRANS_IDLE)
        ab_db_rollback(conn);
    pthread_mutex_lock(&pool->lock);
    for (int i = 0; i < pool->size; i++) {
        if (pool->slots[i].conn == conn) {
            if (PQstatus(conn) != CONNECTION_OK) {
                PQfinish(conn);
                pool->slots[i].conn = NULL;
            }
            pool->slots[i].in_use = false;
            break;
        }
    }
    pthread_cond_signal(&pool->freed);
    pthread_mutex_unlock(&pool->lock);
}

static enum ab_err classify(PGconn *conn, const PGresult *res)
{
    if (PQstatus(conn) != CONNECTION_OK)
        return AB_ERR_UNAVAILABLE;
    const char *state = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
    if (state == NULL)
        return AB_ERR_UNAVAILABLE; /* no result at all: the connection failed mid-way */
    if (strcmp(state, "23505") == 0)
        return AB_ERR_CONFLICT;
    if (strncmp(state, "23", 2) == 0 || strncmp(state, "22", 2) == 0)
        return AB_ERR_INVALID;
    if (strcmp(state, "40001") == 0 || strcmp(state, "40P01") == 0 ||
        strncmp(state, "08", 2) == 0 || strncmp(state, "57P", 3) == 0 ||
        strcmp(state, "53300") == 0)
        return AB_ERR_UNAVAILABLE;
    /* A statement cancelled by statement_timeout, or a lock not granted within
     * lock_timeout: both may well work on the next try. */
    if (strcmp(state, "57014") == 0 || strcmp(state, "55P03") == 0)
        return AB_ERR_TIMEOUT;
    return AB_ERR_INTERNAL;
}

enum ab_err ab_db_exec(PGconn *conn, const char *sql, int nparams, const char *const *params,
                       PGresult **res, char *errstr, size_t errstr_size)
{
    PGresult *r = PQexecParams(conn, sql, nparams, NULL, params, NULL, NULL, 0);
    ExecStatusType st = r ? PQresultStatus(r) : PGRES_FATAL_ERROR;
    if (st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK) {
        if (res)
            *res = r;
        else
            PQclear(r);
        return AB_OK;
    }
    enum ab_err err = classify(conn, r);
    snprintf(errstr, errstr_size, "%s", r ? PQresultErrorMessage(r) : PQerrorMessage(conn));
    errstr[strcspn(errstr, "\n")] = '\0';
    PQclear(r);
    return err;
}

enum ab_err ab_db_begin(PGconn *conn, char *errstr, size_t errstr_size)
{
    return ab_db_exec(conn, "BEGIN", 0, NULL, NULL, errstr, errstr_size);
}

enum ab_err ab_db_commit(PGconn *conn, char *errstr, size_t errstr_size)
{
    return ab_db_exec(conn, "COMMIT", 0, NULL, NULL, errstr, errstr_size);
}

void ab_db_rollback(PGconn *conn)
{
    char ignored[128];
    ab_db_exec(conn, "ROLLBACK", 0, NULL, NULL, ignored, sizeof(ignored));
}

enum ab_err ab_db_ping(struct ab_db_pool *pool, int timeout_ms, char *errstr, size_t errstr_size)
{
    PGconn *conn = NULL;
    enum ab_err err = ab_db_acquire(pool, timeout_ms, &conn, errstr, errstr_size);
    if (err)
        return err;
    err = ab_db_exec(conn, "SELECT 1", 0, NULL, NULL, errstr, errstr_size);
    ab_db_release(pool, conn);
    return err;
}

int ab_db_pool_in_use(struct ab_db_pool *pool)
{
    int n = 0;
    pthread_mutex_lock(&pool->lock);
    for (int i = 0; i < pool->size; i++)
        n += pool->slots[i].in_use ? 1 : 0;
    pthread_mutex_unlock(&pool->lock);
    return n;
}

int ab_db_pool_size(const struct ab_db_pool *pool)
{
    return pool->size;
}

enum ab_err ab_db_connect(struct ab_db_pool *pool, const char *application_name, PGconn **out,
                          char *errstr, size_t errstr_size)
{
    PGconn *conn = connect_db(pool, application_name);
    *out = NULL;
    if (PQstatus(conn) != CONNECTION_OK) {
        snprintf(errstr, errstr_size, "PostgreSQL unreachable: %s", PQerrorMessage(conn));
        errstr[strcspn(errstr, "\n")] = '\0';
        PQfinish(conn);
        return AB_ERR_UNAVAILABLE;
    }
    *out = conn;
    return AB_OK;
}
