/* Component tests of common/db.c and common/migrate.c against a real PostgreSQL, named by
 * AGENTBUS_TEST_DATABASE_URL (scripts/pg.sh start DIR PORT prints one). Each test works in
 * a schema of its own (search_path set through the URL's options), dropped at the end, so
 * tests never see each other's tables. */
#include "test.h"

#include "common/db.h"
#include "common/log.h"
#include "common/migrate.h"
#include "common/util.h"

#include <dirent.h>
#include <pthread.h>
#include <stdbool.h>
#include <sys/stat.h>
#include <unistd.h>

#define DB_WAIT_MS 5000

struct denv {
    char schema[64];
    char url[2048];              /* the test URL with search_path = schema */
    struct ab_db_pool *admin;    /* on the plain URL: creates and drops the schema */
    struct ab_db_pool *pool;     /* on url, size 2 */
    char dir[64];                /* a temporary migrations directory, or "" */
};

/* The database under test. Missing is a failure, never a skip: a suite that passes
 * without running these tests would hide that nothing was tested. */
static const char *db_url(void)
{
    const char *url = getenv("AGENTBUS_TEST_DATABASE_URL");
    if (url == NULL || url[0] == '\0') {
        ab_test_fail(__FILE__, __LINE__,
                     "AGENTBUS_TEST_DATABASE_URL is not set: the db_ tests need a real "
                     "PostgreSQL; start one with `scripts/pg.sh start /tmp/abtest-pg 55499` and "
                     "export the URL it prints");
        exit(1);
    }
    return url;
}

static enum ab_err exec0(PGconn *conn, const char *sql)
{
    char errstr[512];
    enum ab_err err = ab_db_exec(conn, sql, 0, NULL, NULL, errstr, sizeof(errstr));
    if (err != AB_OK)
        fprintf(stderr, "    %s: %s\n", sql, errstr);
    return err;
}

/* The first column of the first row as a malloc'd string ("" for NULL), or NULL on error. */
static char *scalar(PGconn *conn, const char *sql, int nparams, const char *const *params)
{
    char errstr[512];
    PGresult *res = NULL;
    if (ab_db_exec(conn, sql, nparams, params, &res, errstr, sizeof(errstr)) != AB_OK) {
        fprintf(stderr, "    %s: %s\n", sql, errstr);
        return NULL;
    }
    char *v = PQntuples(res) > 0 ? strdup(PQgetvalue(res, 0, 0)) : NULL;
    PQclear(res);
    return v;
}

/* scalar() compared with want; frees the value. */
static bool scalar_is(PGconn *conn, const char *sql, const char *want)
{
    char *v = scalar(conn, sql, 0, NULL);
    bool ok = v != NULL && strcmp(v, want) == 0;
    if (!ok)
        fprintf(stderr, "    %s: got \"%s\", want \"%s\"\n", sql, v ? v : "(error)", want);
    free(v);
    return ok;
}

static void denv_setup(struct denv *e, const char *test)
{
    char errstr[512], sql[256];
    const char *base = db_url();
    memset(e, 0, sizeof(*e));
    ab_log_init("unit", getenv("AGENTBUS_TEST_VERBOSE") ? AB_LOG_DEBUG : AB_LOG_ERROR);
    ab_log_set_output(stderr);
    /* The name is ours ([a-z0-9_]): DDL takes no parameters, so it is formatted. */
    snprintf(e->schema, sizeof(e->schema), "abt_%s_%d", test, (int)getpid());
    snprintf(e->url, sizeof(e->url), "%s%coptions=-csearch_path%%3D%s", base,
             strchr(base, '?') ? '&' : '?', e->schema);
    REQUIRE(ab_db_pool_new(base, 1, 5, "unit-admin", &e->admin, errstr, sizeof(errstr)) ==
            AB_OK);
    PGconn *conn = NULL;
    enum ab_err err = ab_db_acquire(e->admin, DB_WAIT_MS, &conn, errstr, sizeof(errstr));
    if (err != AB_OK)
        fprintf(stderr, "    cannot reach AGENTBUS_TEST_DATABASE_URL: %s\n", errstr);
    REQUIRE(err == AB_OK);
    snprintf(sql, sizeof(sql), "DROP SCHEMA IF EXISTS %s CASCADE", e->schema);
    REQUIRE(exec0(conn, sql) == AB_OK);
    snprintf(sql, sizeof(sql), "CREATE SCHEMA %s", e->schema);
    REQUIRE(exec0(conn, sql) == AB_OK);
    ab_db_release(e->admin, conn);
    REQUIRE(ab_db_pool_new(e->url, 2, 5, "unit-test", &e->pool, errstr, sizeof(errstr)) ==
            AB_OK);
}

static void rm_dir(const char *dir)
{
    DIR *d = opendir(dir);
    if (d == NULL)
        return;
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        char path[512];
        if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
            continue;
        snprintf(path, sizeof(path), "%s/%s", dir, de->d_name);
        if (unlink(path) != 0)
            rmdir(path);
    }
    closedir(d);
    rmdir(dir);
}

static void denv_teardown(struct denv *e)
{
    char errstr[512], sql[256];
    CHECK_INT_EQ(ab_db_pool_in_use(e->pool), 0); /* every test gives back what it took */
    ab_db_pool_free(e->pool);
    PGconn *conn = NULL;
    if (ab_db_acquire(e->admin, DB_WAIT_MS, &conn, errstr, sizeof(errstr)) == AB_OK) {
        snprintf(sql, sizeof(sql), "DROP SCHEMA IF EXISTS %s CASCADE", e->schema);
        exec0(conn, sql);
        ab_db_release(e->admin, conn);
    }
    ab_db_pool_free(e->admin);
    if (e->dir[0])
        rm_dir(e->dir);
}

static PGconn *acquire(struct ab_db_pool *pool)
{
    char errstr[512];
    PGconn *conn = NULL;
    enum ab_err err = ab_db_acquire(pool, DB_WAIT_MS, &conn, errstr, sizeof(errstr));
    if (err != AB_OK)
        fprintf(stderr, "    acquire: %s\n", errstr);
    REQUIRE(err == AB_OK && conn != NULL);
    return conn;
}

/* ---- pool ---------------------------------------------------------------------------- */

TEST(db_pool_acquire_release_reuses_connections)
{
    struct denv e;
    denv_setup(&e, "pool");
    CHECK_INT_EQ(ab_db_pool_size(e.pool), 2);
    CHECK_INT_EQ(ab_db_pool_in_use(e.pool), 0);
    PGconn *a = acquire(e.pool);
    PGconn *b = acquire(e.pool);
    CHECK(a != b);
    CHECK_INT_EQ(ab_db_pool_in_use(e.pool), 2);
    char *pid_a = scalar(a, "SELECT pg_backend_pid()", 0, NULL);
    char *pid_b = scalar(b, "SELECT pg_backend_pid()", 0, NULL);
    REQUIRE(pid_a != NULL && pid_b != NULL);
    CHECK(strcmp(pid_a, pid_b) != 0);
    /* The URL's options reach the server: the search_path is this test's schema. */
    CHECK(scalar_is(a, "SELECT current_schema()", e.schema));
    CHECK(scalar_is(a, "SELECT current_setting('application_name')", "unit-test"));
    ab_db_release(e.pool, a);
    CHECK_INT_EQ(ab_db_pool_in_use(e.pool), 1);
    ab_db_release(e.pool, b);
    CHECK_INT_EQ(ab_db_pool_in_use(e.pool), 0);
    ab_db_release(e.pool, NULL); /* a no-op */

    /* The next acquire hands out an open connection again instead of a new one. */
    PGconn *c = acquire(e.pool);
    CHECK(c == a || c == b);
    char *pid_c = scalar(c, "SELECT pg_backend_pid()", 0, NULL);
    CHECK(pid_c != NULL && (strcmp(pid_c, pid_a) == 0 || strcmp(pid_c, pid_b) == 0));
    ab_db_release(e.pool, c);
    free(pid_a);
    free(pid_b);
    free(pid_c);
    char errstr[256];
    CHECK_INT_EQ(ab_db_ping(e.pool, 1000, errstr, sizeof(errstr)), AB_OK);
    denv_teardown(&e);
}

struct waiter_arg {
    struct ab_db_pool *pool;
    enum ab_err err;
    int64_t waited_ms;
};

static void *waiter(void *arg)
{
    struct waiter_arg *w = arg;
    char errstr[256];
    PGconn *conn = NULL;
    int64_t t0 = ab_monotonic_ms();
    w->err = ab_db_acquire(w->pool, 5000, &conn, errstr, sizeof(errstr));
    w->waited_ms = ab_monotonic_ms() - t0;
    if (w->err == AB_OK)
        ab_db_release(w->pool, conn);
    return NULL;
}

TEST(db_pool_exhausted_times_out_and_wakes_waiters)
{
    struct denv e;
    char errstr[256] = "";
    denv_setup(&e, "exhaust");
    PGconn *a = acquire(e.pool);
    PGconn *b = acquire(e.pool);
    PGconn *c = NULL;
    int64_t t0 = ab_monotonic_ms();
    CHECK_INT_EQ(ab_db_acquire(e.pool, 300, &c, errstr, sizeof(errstr)), AB_ERR_TIMEOUT);
    int64_t waited = ab_monotonic_ms() - t0;
    CHECK(waited >= 280);
    CHECK(waited < 2000);
    CHECK(c == NULL);
    CHECK_STR_CONTAINS(errstr, "300 ms");

    /* A waiter gets the connection as soon as one comes back. */
    struct waiter_arg w = { e.pool, AB_ERR_INTERNAL, 0 };
    pthread_t th;
    REQUIRE(pthread_create(&th, NULL, waiter, &w) == 0);
    usleep(200 * 1000);
    ab_db_release(e.pool, a);
    pthread_join(th, NULL);
    CHECK_INT_EQ(w.err, AB_OK);
    CHECK(w.waited_ms >= 150 && w.waited_ms < 2000);
    ab_db_release(e.pool, b);
    denv_teardown(&e);
}

TEST(db_unreachable_server_is_unavailable)
{
    char errstr[512] = "";
    struct ab_db_pool *pool = NULL;
    (void)db_url(); /* this test needs no server, but the suite needs the variable */
    REQUIRE(ab_db_pool_new("postgresql://agentbus@127.0.0.1:1/agentbus", 2, 2, "unit-test",
                           &pool, errstr, sizeof(errstr)) == AB_OK);
    PGconn *conn = NULL;
    int64_t t0 = ab_monotonic_ms();
    CHECK_INT_EQ(ab_db_acquire(pool, 1000, &conn, errstr, sizeof(errstr)), AB_ERR_UNAVAILABLE);
    CHECK(ab_monotonic_ms() - t0 < 3000);
    CHECK(conn == NULL);
    CHECK_STR_CONTAINS(errstr, "PostgreSQL unreachable");
    CHECK(strchr(errstr, '\n') == NULL);
    /* The failed slot went back to the pool: twice more, still not a timeout. */
    CHECK_INT_EQ(ab_db_pool_in_use(pool), 0);
    CHECK_INT_EQ(ab_db_acquire(pool, 1000, &conn, errstr, sizeof(errstr)), AB_ERR_UNAVAILABLE);
    CHECK_INT_EQ(ab_db_acquire(pool, 1000, &conn, errstr, sizeof(errstr)), AB_ERR_UNAVAILABLE);
    CHECK_INT_EQ(ab_db_pool_in_use(pool), 0);
    CHECK_INT_EQ(ab_db_ping(pool, 1000, errstr, sizeof(errstr)), AB_ERR_UNAVAILABLE);
    ab_db_pool_free(pool);
}

TEST(db_malformed_url_is_config_error)
{
    char errstr[512] = "";
    struct ab_db_pool *pool = (struct ab_db_pool *)&errstr; /* must be reset to NULL */
    (void)db_url();
    const char *bad[] = {
        "postgresql://agentbus@127.0.0.1/agentbus?no_such_option=1",
        "postgresql://%zz@127.0.0.1/agentbus",
        "host=127.0.0.1 port",
        "not a connection string",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        errstr[0] = '\0';
        pool = (struct ab_db_pool *)&errstr;
        CHECK_INT_EQ(ab_db_pool_new(bad[i], 2, 5, "unit-test", &pool, errstr, sizeof(errstr)),
                     AB_ERR_CONFIG);
        CHECK(pool == NULL);
        CHECK_STR_CONTAINS(errstr, "database.url");
    }
    /* libpq's own explanation quotes the string, password and all: it must not be passed
     * on into an error that is logged. */
    const char *secret_urls[] = { "postgresql://u:s3cret-pw@[::1/db",
                                  "postgresql://u:s3cret-pw%zz@127.0.0.1/db" };
    for (size_t i = 0; i < sizeof(secret_urls) / sizeof(secret_urls[0]); i++) {
        errstr[0] = '\0';
        CHECK_INT_EQ(ab_db_pool_new(secret_urls[i], 2, 5, "unit-test", &pool, errstr,
                                    sizeof(errstr)),
                     AB_ERR_CONFIG);
        if (strstr(errstr, "s3cret-pw") != NULL)
            ab_test_fail(__FILE__, __LINE__, "the password is in the error: %s", errstr);
    }
}

/* ---- statements ---------------------------------------------------------------------- */

TEST(db_exec_with_params_and_results)
{
    struct denv e;
    char errstr[512];
    denv_setup(&e, "exec");
    PGconn *conn = acquire(e.pool);
    REQUIRE(exec0(conn, "CREATE TABLE items (id int PRIMARY KEY, name text NOT NULL, note text)") ==
            AB_OK);
    /* Text parameters arrive verbatim: quotes and SQL in them are data. */
    const char *p1[] = { "1", "it's; DROP TABLE items; --", NULL };
    CHECK_INT_EQ(ab_db_exec(conn, "INSERT INTO items (id, name, note) VALUES ($1, $2, $3)", 3, p1,
                            NULL, errstr, sizeof(errstr)),
                 AB_OK);
    const char *p2[] = { "2", "second", "a note" };
    CHECK_INT_EQ(ab_db_exec(conn, "INSERT INTO items (id, name, note) VALUES ($1, $2, $3)", 3, p2,
                            NULL, errstr, sizeof(errstr)),
                 AB_OK);

    PGresult *res = NULL;
    const char *q[] = { "0" };
    CHECK_INT_EQ(ab_db_exec(conn, "SELECT id, name, note FROM items WHERE id > $1 ORDER BY id", 1,
                            q, &res, errstr, sizeof(errstr)),
                 AB_OK);
    REQUIRE(res != NULL);
    REQUIRE(PQntuples(res) == 2);
    CHECK_STR_EQ(PQgetvalue(res, 0, 0), "1");
    CHECK_STR_EQ(PQgetvalue(res, 0, 1), "it's; DROP TABLE items; --");
    CHECK(PQgetisnull(res, 0, 2));
    CHECK_STR_EQ(PQgetvalue(res, 1, 2), "a note");
    PQclear(res);

    /* A NULL parameter is SQL NULL. */
    res = NULL;
    const char *pn[] = { NULL };
    CHECK_INT_EQ(ab_db_exec(conn, "SELECT count(*) FROM items WHERE note IS NOT DISTINCT FROM $1",
                            1, pn, &res, errstr, sizeof(errstr)),
                 AB_OK);
    REQUIRE(res != NULL);
    CHECK_STR_EQ(PQgetvalue(res, 0, 0), "1");
    PQclear(res);

    /* A statement without rows; res untouched when not wanted. */
    const char *pu[] = { "renamed", "2" };
    CHECK_INT_EQ(ab_db_exec(conn, "UPDATE items SET name = $1 WHERE id = $2", 2, pu, NULL, errstr,
                            sizeof(errstr)),
                 AB_OK);
    CHECK(scalar_is(conn, "SELECT name FROM items WHERE id = 2", "renamed"));
    CHECK(scalar_is(conn, "SELECT count(*) FROM items", "2"));
    ab_db_release(e.pool, conn);
    denv_teardown(&e);
}

TEST(db_exec_maps_sql_errors)
{
    struct denv e;
    char errstr[512];
    denv_setup(&e, "errors");
    PGconn *conn = acquire(e.pool);
    REQUIRE(exec0(conn, "CREATE TABLE u (id int PRIMARY KEY, name text NOT NULL, "
                        "n int CHECK (n > 0))") == AB_OK);
    const char *p[] = { "1", "one", "1" };
    REQUIRE(ab_db_exec(conn, "INSERT INTO u VALUES ($1, $2, $3)", 3, p, NULL, errstr,
                       sizeof(errstr)) == AB_OK);

    PGresult *res = (PGresult *)&errstr; /* must stay untouched on failure */
    errstr[0] = '\0';
    CHECK_INT_EQ(ab_db_exec(conn, "INSERT INTO u VALUES ($1, $2, $3)", 3, p, &res, errstr,
                            sizeof(errstr)),
                 AB_ERR_CONFLICT);
    CHECK(res == (PGresult *)&errstr);
    CHECK_STR_CONTAINS(errstr, "duplicate key");
    CHECK(strchr(errstr, '\n') == NULL);

    CHECK_INT_EQ(ab_db_exec(conn, "SELECT 'x'::int", 0, NULL, NULL, errstr, sizeof(errstr)),
                 AB_ERR_INVALID);
    CHECK_STR_CONTAINS(errstr, "invalid input syntax");
    const char *bad_int[] = { "abc" };
    CHECK_INT_EQ(ab_db_exec(conn, "SELECT $1::int", 1, bad_int, NULL, errstr, sizeof(errstr)),
                 AB_ERR_INVALID);
    const char *null_name[] = { "2", NULL, "1" };
    CHECK_INT_EQ(ab_db_exec(conn, "INSERT INTO u VALUES ($1, $2, $3)", 3, null_name, NULL, errstr,
                            sizeof(errstr)),
                 AB_ERR_INVALID);
    const char *bad_check[] = { "3", "three", "-1" };
    CHECK_INT_EQ(ab_db_exec(conn, "INSERT INTO u VALUES ($1, $2, $3)", 3, bad_check, NULL, errstr,
                            sizeof(errstr)),
                 AB_ERR_INVALID);
    CHECK_INT_EQ(ab_db_exec(conn, "SELECT 1/0", 0, NULL, NULL, errstr, sizeof(errstr)),
                 AB_ERR_INVALID);
    /* A bug in our SQL is neither the caller's fault nor worth a retry. */
    enum ab_err err = ab_db_exec(conn, "SELEC 1", 0, NULL, NULL, errstr, sizeof(errstr));
    CHECK_INT_EQ(err, AB_ERR_INTERNAL);
    err = ab_db_exec(conn, "SELECT * FROM no_such_table", 0, NULL, NULL, errstr, sizeof(errstr));
    CHECK_INT_EQ(err, AB_ERR_INTERNAL);
    CHECK_STR_CONTAINS(errstr, "no_such_table");
    /* A statement cancelled by its timeout is a timeout. */
    REQUIRE(exec0(conn, "SET statement_timeout = 100") == AB_OK);
    CHECK_INT_EQ(ab_db_exec(conn, "SELECT pg_sleep(2)", 0, NULL, NULL, errstr, sizeof(errstr)),
                 AB_ERR_TIMEOUT);
    REQUIRE(exec0(conn, "RESET statement_timeout") == AB_OK);
    /* After all that the connection is fine. */
    CHECK(scalar_is(conn, "SELECT count(*) FROM u", "1"));
    ab_db_release(e.pool, conn);
    denv_teardown(&e);
}

TEST(db_server_notices_go_to_the_log_not_stderr)
{
    struct denv e;
    denv_setup(&e, "notice");
    /* Capture stderr (libpq's default notice printer) and the log. */
    char err_path[] = "/tmp/abt-stderr-XXXXXX";
    int err_fd = mkstemp(err_path);
    REQUIRE(err_fd >= 0);
    fflush(stderr);
    int saved = dup(2);
    REQUIRE(saved >= 0 && dup2(err_fd, 2) == 2);
    FILE *log = tmpfile();
    REQUIRE(log != NULL);
    ab_log_init("unit", AB_LOG_DEBUG);
    ab_log_set_output(log);

    PGconn *conn = acquire(e.pool);
    CHECK(exec0(conn, "DO $$ BEGIN RAISE NOTICE 'hello from the server'; END $$") == AB_OK);
    ab_db_release(e.pool, conn);

    fflush(stderr);
    dup2(saved, 2);
    close(saved);
    ab_log_set_output(stderr);
    ab_log_init("unit", AB_LOG_ERROR);
    char buf[4096];
    ssize_t n = pread(err_fd, buf, sizeof(buf) - 1, 0);
    buf[n > 0 ? n : 0] = '\0';
    CHECK(strstr(buf, "hello from the server") == NULL);
    close(err_fd);
    unlink(err_path);
    rewind(log);
    n = (ssize_t)fread(buf, 1, sizeof(buf) - 1, log);
    buf[n > 0 ? n : 0] = '\0';
    CHECK_STR_CONTAINS(buf, "hello from the server");
    fclose(log);
    denv_teardown(&e);
}

/* ---- transactions -------------------------------------------------------------------- */

TEST(db_transactions_commit_rollback_and_release)
{
    struct denv e;
    char errstr[512];
    denv_setup(&e, "tx");
    struct ab_db_pool *one = NULL; /* size 1: the next acquire gets the same connection */
    REQUIRE(ab_db_pool_new(e.url, 1, 5, "unit-test", &one, errstr, sizeof(errstr)) == AB_OK);
    PGconn *conn = acquire(one);
    REQUIRE(exec0(conn, "CREATE TABLE t (v int)") == AB_OK);

    CHECK_INT_EQ(ab_db_begin(conn, errstr, sizeof(errstr)), AB_OK);
    CHECK(exec0(conn, "INSERT INTO t VALUES (1)") == AB_OK);
    CHECK(PQtransactionStatus(conn) == PQTRANS_INTRANS);
    ab_db_rollback(conn);
    CHECK(PQtransactionStatus(conn) == PQTRANS_IDLE);
    CHECK(scalar_is(conn, "SELECT count(*) FROM t", "0"));

    CHECK_INT_EQ(ab_db_begin(conn, errstr, sizeof(errstr)), AB_OK);
    CHECK(exec0(conn, "INSERT INTO t VALUES (2)") == AB_OK);
    CHECK_INT_EQ(ab_db_commit(conn, errstr, sizeof(errstr)), AB_OK);
    CHECK(scalar_is(conn, "SELECT count(*) FROM t", "1"));

    /* Released inside a transaction: rolled back, and the connection comes back idle. */
    CHECK_INT_EQ(ab_db_begin(conn, errstr, sizeof(errstr)), AB_OK);
    CHECK(exec0(conn, "INSERT INTO t VALUES (3)") == AB_OK);
    ab_db_release(one, conn);
    conn = acquire(one);
    CHECK(PQtransactionStatus(conn) == PQTRANS_IDLE);
    CHECK(scalar_is(conn, "SELECT string_agg(v::text, ',') FROM t", "2"));

    /* Released inside a failed transaction: the same. */
    CHECK_INT_EQ(ab_db_begin(conn, errstr, sizeof(errstr)), AB_OK);
    CHECK(exec0(conn, "INSERT INTO t VALUES (4)") == AB_OK);
    CHECK_INT_EQ(ab_db_exec(conn, "SELECT 'x'::int", 0, NULL, NULL, errstr, sizeof(errstr)),
                 AB_ERR_INVALID);
    CHECK(PQtransactionStatus(conn) == PQTRANS_INERROR);
    ab_db_release(one, conn);
    conn = acquire(one);
    CHECK(PQtransactionStatus(conn) == PQTRANS_IDLE);
    CHECK(scalar_is(conn, "SELECT count(*) FROM t", "1"));

    /* A commit of a failed transaction does not keep anything either. */
    CHECK_INT_EQ(ab_db_begin(conn, errstr, sizeof(errstr)), AB_OK);
    CHECK(exec0(conn, "INSERT INTO t VALUES (5)") == AB_OK);
    CHECK(ab_db_exec(conn, "SELECT 'x'::int", 0, NULL, NULL, errstr, sizeof(errstr)) != AB_OK);
    ab_db_commit(conn, errstr, sizeof(errstr));
    CHECK(PQtransactionStatus(conn) == PQTRANS_IDLE);
    CHECK(scalar_is(conn, "SELECT count(*) FROM t", "1"));
    ab_db_release(one, conn);
    ab_db_pool_free(one);
    denv_teardown(&e);
}

/* ---- reconnect ----------------------------------------------------------------------- */

TEST(db_reconnects_after_backend_is_killed)
{
    struct denv e;
    char errstr[512] = "";
    denv_setup(&e, "reconnect");
    struct ab_db_pool *one = NULL;
    REQUIRE(ab_db_pool_new(e.url, 1, 5, "unit-test", &one, errstr, sizeof(errstr)) == AB_OK);
    PGconn *victim = acquire(one);
    char *pid = scalar(victim, "SELECT pg_backend_pid()", 0, NULL);
    REQUIRE(pid != NULL);

    PGconn *killer = acquire(e.pool);
    const char *params[] = { pid };
    CHECK(scalar_is(killer, "SELECT 1", "1"));
    char *killed = scalar(killer, "SELECT pg_terminate_backend($1::int)", 1, params);
    CHECK(killed != NULL && strcmp(killed, "t") == 0);
    free(killed);
    /* Wait until the backend is gone, so the next query surely meets a dead connection. */
    int64_t deadline = ab_monotonic_ms() + 5000;
    char *alive = NULL;
    while (ab_monotonic_ms() < deadline) {
        free(alive);
        alive = scalar(killer, "SELECT count(*) FROM pg_stat_activity WHERE pid = $1::int", 1,
                       params);
        if (alive != NULL && strcmp(alive, "0") == 0)
            break;
        usleep(20 * 1000);
    }
    CHECK(alive != NULL && strcmp(alive, "0") == 0);
    free(alive);
    ab_db_release(e.pool, killer);

    CHECK_INT_EQ(ab_db_exec(victim, "SELECT 1", 0, NULL, NULL, errstr, sizeof(errstr)),
                 AB_ERR_UNAVAILABLE);
    CHECK(errstr[0] != '\0');
    ab_db_release(one, victim);

    /* The broken connection was dropped; the next acquire opens a fresh one. */
    PGconn *fresh = acquire(one);
    char *pid2 = scalar(fresh, "SELECT pg_backend_pid()", 0, NULL);
    CHECK(pid2 != NULL && strcmp(pid2, pid) != 0);
    CHECK(scalar_is(fresh, "SELECT current_schema()", e.schema));
    ab_db_release(one, fresh);
    free(pid);
    free(pid2);
    ab_db_pool_free(one);
    denv_teardown(&e);
}

/* ---- migrations ---------------------------------------------------------------------- */

static void make_dir(struct denv *e)
{
    snprintf(e->dir, sizeof(e->dir), "/tmp/abt-migrations-XXXXXX");
    REQUIRE(mkdtemp(e->dir) != NULL);
}

static void write_file(const struct denv *e, const char *name, const char *text)
{
    char path[512];
    snprintf(path, sizeof(path), "%s/%s", e->dir, name);
    FILE *f = fopen(path, "w");
    REQUIRE(f != NULL);
    fputs(text, f);
    REQUIRE(fclose(f) == 0);
}

static enum ab_err migrate(struct denv *e, struct ab_db_pool *pool, int *applied, char *errstr,
                           size_t size)
{
    errstr[0] = '\0';
    *applied = -1;
    return ab_migrate(pool, e->dir, applied, errstr, size);
}

TEST(db_migrate_applies_in_order_once)
{
    struct denv e;
    char errstr[512];
    int applied = -1;
    denv_setup(&e, "mig_order");
    make_dir(&e);
    /* Written out of order; each needs the one before it. */
    write_file(&e, "0010_third.sql", "INSERT INTO steps (name) VALUES ('third');\n");
    write_file(&e, "0001_first.sql",
               "CREATE TABLE steps (seq serial PRIMARY KEY, name text NOT NULL);\n"
               "INSERT INTO steps (name) VALUES ('first');\n");
    write_file(&e, "0002_second.sql",
               "ALTER TABLE steps ADD COLUMN extra int;\n"
               "INSERT INTO steps (name) VALUES ('second');\n");

    CHECK_INT_EQ(migrate(&e, e.pool, &applied, errstr, sizeof(errstr)), AB_OK);
    CHECK_INT_EQ(applied, 3);
    PGconn *conn = acquire(e.pool);
    CHECK(scalar_is(conn, "SELECT string_agg(name, ',' ORDER BY seq) FROM steps",
                    "first,second,third"));
    CHECK(scalar_is(conn, "SELECT string_agg(version || ':' || name, ',' ORDER BY version) "
                          "FROM schema_migrations",
                    "1:0001_first.sql,2:0002_second.sql,10:0010_third.sql"));
    CHECK(scalar_is(conn, "SELECT count(*) FROM schema_migrations WHERE length(checksum) = 64",
                    "3"));
    ab_db_release(e.pool, conn);

    /* A second run has nothing to do. */
    CHECK_INT_EQ(migrate(&e, e.pool, &applied, errstr, sizeof(errstr)), AB_OK);
    CHECK_INT_EQ(applied, 0);
    /* A new file is applied alone. */
    write_file(&e, "0011_fourth.sql", "INSERT INTO steps (name) VALUES ('fourth');\n");
    CHECK_INT_EQ(migrate(&e, e.pool, &applied, errstr, sizeof(errstr)), AB_OK);
    CHECK_INT_EQ(applied, 1);
    conn = acquire(e.pool);
    CHECK(scalar_is(conn, "SELECT string_agg(name, ',' ORDER BY seq) FROM steps",
                    "first,second,third,fourth"));
    ab_db_release(e.pool, conn);
    denv_teardown(&e);
}

TEST(db_migrate_comment_only_migration_is_applied)
{
    struct denv e;
    char errstr[512];
    int applied = -1;
    denv_setup(&e, "mig_empty");
    make_dir(&e);
    /* A placeholder (a number kept free, a change reverted) is a valid migration. */
    write_file(&e, "0001_placeholder.sql", "-- nothing to do here\n");
    write_file(&e, "0002_empty.sql", "");
    write_file(&e, "0003_real.sql", "CREATE TABLE after_empty (id int);\n");
    enum ab_err err = migrate(&e, e.pool, &applied, errstr, sizeof(errstr));
    if (err != AB_OK)
        fprintf(stderr, "    %s\n", errstr);
    CHECK_INT_EQ(err, AB_OK);
    CHECK_INT_EQ(applied, 3);
    PGconn *conn = acquire(e.pool);
    CHECK(scalar_is(conn, "SELECT string_agg(version::text, ',' ORDER BY version) "
                          "FROM schema_migrations",
                    "1,2,3"));
    ab_db_release(e.pool, conn);
    CHECK_INT_EQ(migrate(&e, e.pool, &applied, errstr, sizeof(errstr)), AB_OK);
    CHECK_INT_EQ(applied, 0);
    denv_teardown(&e);
}

TEST(db_migrate_edited_migration_is_config_error)
{
    struct denv e;
    char errstr[512];
    int applied = -1;
    denv_setup(&e, "mig_edit");
    make_dir(&e);
    write_file(&e, "0001_create.sql", "CREATE TABLE edited (id int);\n");
    CHECK_INT_EQ(migrate(&e, e.pool, &applied, errstr, sizeof(errstr)), AB_OK);
    CHECK_INT_EQ(applied, 1);
    write_file(&e, "0001_create.sql", "CREATE TABLE edited (id bigint);\n");
    write_file(&e, "0002_next.sql", "CREATE TABLE after_edit (id int);\n");
    CHECK_INT_EQ(migrate(&e, e.pool, &applied, errstr, sizeof(errstr)), AB_ERR_CONFIG);
    CHECK_STR_CONTAINS(errstr, "0001_create.sql");
    CHECK_INT_EQ(applied, 0);
    PGconn *conn = acquire(e.pool);
    CHECK(scalar_is(conn, "SELECT count(*) FROM schema_migrations", "1"));
    CHECK(scalar_is(conn, "SELECT count(*) FROM pg_tables WHERE tablename = 'after_edit'", "0"));
    ab_db_release(e.pool, conn);
    denv_teardown(&e);
}

TEST(db_migrate_duplicate_numbers_are_config_error)
{
    struct denv e;
    char errstr[512];
    int applied = -1;
    denv_setup(&e, "mig_dup");
    make_dir(&e);
    write_file(&e, "0001_a.sql", "CREATE TABLE dup_a (id int);\n");
    write_file(&e, "0002_b.sql", "CREATE TABLE dup_b (id int);\n");
    write_file(&e, "0002_c.sql", "CREATE TABLE dup_c (id int);\n");
    CHECK_INT_EQ(migrate(&e, e.pool, &applied, errstr, sizeof(errstr)), AB_ERR_CONFIG);
    CHECK_STR_CONTAINS(errstr, "0002_b.sql");
    CHECK_STR_CONTAINS(errstr, "0002_c.sql");
    CHECK_INT_EQ(applied, 0);
    PGconn *conn = acquire(e.pool);
    CHECK(scalar_is(conn,
                    "SELECT count(*) FROM pg_tables WHERE tablename IN ('dup_a','dup_b','dup_c')",
                    "0"));
    ab_db_release(e.pool, conn);
    denv_teardown(&e);
}

TEST(db_migrate_failure_applies_nothing_of_it)
{
    struct denv e;
    char errstr[512];
    int applied = -1;
    denv_setup(&e, "mig_fail");
    make_dir(&e);
    write_file(&e, "0001_ok.sql", "CREATE TABLE fine (id int);\n");
    write_file(&e, "0002_broken.sql",
               "CREATE TABLE half (id int);\n"
               "INSERT INTO fine VALUES (1);\n"
               "INSERT INTO no_such_table VALUES (1);\n");
    write_file(&e, "0003_later.sql", "CREATE TABLE later (id int);\n");
    enum ab_err err = migrate(&e, e.pool, &applied, errstr, sizeof(errstr));
    CHECK(err != AB_OK);
    CHECK(!ab_err_is_retriable(err)); /* a broken file does not heal by waiting */
    CHECK_STR_CONTAINS(errstr, "0002_broken.sql");
    CHECK_STR_CONTAINS(errstr, "no_such_table");
    CHECK_INT_EQ(applied, 1);
    PGconn *conn = acquire(e.pool);
    CHECK(scalar_is(conn, "SELECT string_agg(version::text, ',') FROM schema_migrations", "1"));
    CHECK(scalar_is(conn, "SELECT count(*) FROM pg_tables WHERE schemaname = current_schema() "
                          "AND tablename IN ('half', 'later')",
                    "0"));
    CHECK(scalar_is(conn, "SELECT count(*) FROM fine", "0"));
    CHECK(PQtransactionStatus(conn) == PQTRANS_IDLE);
    ab_db_release(e.pool, conn);

    /* Fixed, it applies with what follows. */
    write_file(&e, "0002_broken.sql", "CREATE TABLE half (id int);\n");
    CHECK_INT_EQ(migrate(&e, e.pool, &applied, errstr, sizeof(errstr)), AB_OK);
    CHECK_INT_EQ(applied, 2);
    denv_teardown(&e);
}

TEST(db_migrate_ignores_other_files)
{
    struct denv e;
    char errstr[512], path[512];
    int applied = -1;
    denv_setup(&e, "mig_ignore");
    make_dir(&e);
    write_file(&e, "0001_real.sql", "CREATE TABLE real_one (id int);\n");
    const char *ignored[] = { "README.md",       "0002_backup.sql.bak", "3_short.sql",
                              "0004_Upper.sql",  "abcd_letters.sql",    "0005-dash.sql",
                              "00006_five.sql",  "0000_zero.sql",       ".0007_hidden.sql",
                              "0008_.sql~" };
    for (size_t i = 0; i < sizeof(ignored) / sizeof(ignored[0]); i++)
        write_file(&e, ignored[i], "THIS IS NOT SQL;\n");
    snprintf(path, sizeof(path), "%s/subdir", e.dir);
    REQUIRE(mkdir(path, 0700) == 0);
    CHECK_INT_EQ(migrate(&e, e.pool, &applied, errstr, sizeof(errstr)), AB_OK);
    if (errstr[0])
        fprintf(stderr, "    %s\n", errstr);
    CHECK_INT_EQ(applied, 1);
    PGconn *conn = acquire(e.pool);
    CHECK(scalar_is(conn, "SELECT string_agg(name, ',') FROM schema_migrations",
                    "0001_real.sql"));
    ab_db_release(e.pool, conn);

    /* A directory that does not exist is a configuration error. */
    CHECK_INT_EQ(ab_migrate(e.pool, "/nonexistent/abt-migrations", &applied, errstr,
                            sizeof(errstr)),
                 AB_ERR_CONFIG);
    CHECK_STR_CONTAINS(errstr, "/nonexistent/abt-migrations");
    denv_teardown(&e);
}

struct migrate_thread {
    struct denv *e;
    pthread_barrier_t *start;
    struct ab_db_pool *pool;
    enum ab_err err;
    int applied;
    char errstr[512];
};

static void *migrate_thread(void *arg)
{
    struct migrate_thread *t = arg;
    pthread_barrier_wait(t->start);
    t->err = ab_migrate(t->pool, t->e->dir, &t->applied, t->errstr, sizeof(t->errstr));
    return NULL;
}

TEST(db_migrate_concurrent_runners_apply_each_once)
{
    enum { THREADS = 4 };
    struct denv e;
    char errstr[512];
    struct migrate_thread t[THREADS];
    pthread_t th[THREADS];
    pthread_barrier_t start;
    denv_setup(&e, "mig_conc");
    make_dir(&e);
    /* Each of these fails if run twice (no IF NOT EXISTS; a unique key). */
    write_file(&e, "0001_runs.sql",
               "CREATE TABLE runs (migration text PRIMARY KEY);\n"
               "SELECT pg_sleep(0.2);\n"
               "INSERT INTO runs VALUES ('0001');\n");
    write_file(&e, "0002_more.sql",
               "CREATE TABLE more (id int);\n"
               "INSERT INTO runs VALUES ('0002');\n");
    write_file(&e, "0003_last.sql", "INSERT INTO runs VALUES ('0003');\n");
    pthread_barrier_init(&start, NULL, THREADS);
    for (int i = 0; i < THREADS; i++) {
        memset(&t[i], 0, sizeof(t[i]));
        t[i].e = &e;
        t[i].start = &start;
        REQUIRE(ab_db_pool_new(e.url, 1, 5, "unit-migrate", &t[i].pool, errstr,
                               sizeof(errstr)) == AB_OK);
        REQUIRE(pthread_create(&th[i], NULL, migrate_thread, &t[i]) == 0);
    }
    int total = 0;
    for (int i = 0; i < THREADS; i++) {
        pthread_join(th[i], NULL);
        if (t[i].err != AB_OK)
            fprintf(stderr, "    runner %d: %s\n", i, t[i].errstr);
        CHECK_INT_EQ(t[i].err, AB_OK);
        total += t[i].applied;
        ab_db_pool_free(t[i].pool);
    }
    pthread_barrier_destroy(&start);
    CHECK_INT_EQ(total, 3);
    PGconn *conn = acquire(e.pool);
    CHECK(scalar_is(conn, "SELECT count(*) FROM schema_migrations", "3"));
    CHECK(scalar_is(conn, "SELECT string_agg(migration, ',' ORDER BY migration) FROM runs",
                    "0001,0002,0003"));
    ab_db_release(e.pool, conn);
    denv_teardown(&e);
}

/* ---- a connection of its own ----------------------------------------------------------- */

/* Waits up to ms for a notification on conn; @returns it (the caller PQfreemems) or NULL. */
static PGnotify *next_notification(PGconn *conn, int ms)
{
    int64_t deadline = ab_monotonic_ms() + ms;
    PGnotify *note = NULL;
    while (note == NULL && ab_monotonic_ms() < deadline) {
        if (!PQconsumeInput(conn))
            return NULL;
        note = PQnotifies(conn);
        if (note == NULL)
            usleep(10 * 1000);
    }
    return note;
}

TEST(db_connect_opens_a_connection_outside_the_pool)
{
    struct denv e;
    char errstr[512] = "";
    denv_setup(&e, "connect");
    PGconn *own = NULL;
    REQUIRE(ab_db_connect(e.pool, "unit-listener", &own, errstr, sizeof(errstr)) == AB_OK);
    CHECK_INT_EQ(ab_db_pool_in_use(e.pool), 0); /* not a slot of the pool */
    CHECK(scalar_is(own, "SELECT current_setting('application_name')", "unit-listener"));
    CHECK(scalar_is(own, "SELECT current_schema()", e.schema)); /* the pool's URL */
    CHECK(scalar_is(own, "SELECT current_setting('statement_timeout')", "30s"));

    /* What the inbox waker relies on: a notification is delivered at commit, not before,
     * and not at all after a rollback. */
    CHECK_INT_EQ(exec0(own, "LISTEN unit_channel"), AB_OK);
    PGconn *conn = acquire(e.pool);
    const char *const params[] = { "unit_channel", "payload" };
    CHECK_INT_EQ(ab_db_begin(conn, errstr, sizeof(errstr)), AB_OK);
    CHECK_INT_EQ(ab_db_exec(conn, "SELECT pg_notify($1, 'rolled back')", 1, params, NULL, errstr,
                            sizeof(errstr)),
                 AB_OK);
    ab_db_rollback(conn);
    CHECK_INT_EQ(ab_db_begin(conn, errstr, sizeof(errstr)), AB_OK);
    CHECK_INT_EQ(ab_db_exec(conn, "SELECT pg_notify($1, $2)", 2, params, NULL, errstr,
                            sizeof(errstr)),
                 AB_OK);
    PGnotify *early = next_notification(own, 200);
    CHECK(early == NULL);
    PQfreemem(early);
    CHECK_INT_EQ(ab_db_commit(conn, errstr, sizeof(errstr)), AB_OK);
    ab_db_release(e.pool, conn);
    PGnotify *note = next_notification(own, 5000);
    CHECK(note != NULL);
    if (note != NULL) {
        CHECK_STR_EQ(note->relname, "unit_channel");
        CHECK_STR_EQ(note->extra, "payload");
    }
    PQfreemem(note);
    PQfinish(own);

    struct ab_db_pool *nowhere = NULL;
    REQUIRE(ab_db_pool_new("postgresql://agentbus@127.0.0.1:1/agentbus", 1, 2, "unit-test",
                           &nowhere, errstr, sizeof(errstr)) == AB_OK);
    own = (PGconn *)1;
    CHECK_INT_EQ(ab_db_connect(nowhere, "unit-listener", &own, errstr, sizeof(errstr)),
                 AB_ERR_UNAVAILABLE);
    CHECK(own == NULL);
    CHECK_STR_CONTAINS(errstr, "PostgreSQL unreachable");
    CHECK(strchr(errstr, '\n') == NULL);
    ab_db_pool_free(nowhere);
    denv_teardown(&e);
}
