/* Migrations. The runner takes a session-level advisory lock, so a second service blocks
 * until the first has finished and then finds nothing left to do. Migration files hold
 * several statements, which PQexecParams cannot run: they go through PQexec, the one place
 * that does, and only with trusted files shipped with the release, never with input. */
#include "common/migrate.h"

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/crypto.h"
#include "common/log.h"
#include "common/util.h"

#define MIGRATE_LOCK_KEY "7020882263371576691" /* an arbitrary constant: "agentbus" */
#define MAX_MIGRATION_BYTES (4 * 1024 * 1024)

static int compare_names(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* NNNN_name.sql with a lower-case name: anything else in the directory is ignored. */
static bool migration_name(const char *name, int *version)
{
    size_t len = strlen(name);
    if (len < 10 || strcmp(name + len - 4, ".sql") != 0 || name[4] != '_')
        return false;
    *version = 0;
    for (int i = 0; i < 4; i++) {
        if (name[i] < '0' || name[i] > '9')
            return false;
        *version = *version * 10 + (name[i] - '0');
    }
    for (size_t i = 5; i < len - 4; i++)
        if (!((name[i] >= 'a' && name[i] <= 'z') || (name[i] >= '0' && name[i] <= '9') ||
              name[i] == '_'))
            return false;
    return *version > 0;
}

static char *read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL)
        return NULL;
    char *buf = malloc(MAX_MIGRATION_BYTES + 1);
    size_t n = buf ? fread(buf, 1, MAX_MIGRATION_BYTES + 1, f) : 0;
    fclose(f);
    if (buf == NULL || n > MAX_MIGRATION_BYTES) {
        free(buf);
        return NULL;
    }
    buf[n] = '\0';
    *len = n;
    return buf;
}

static enum ab_err apply_one(PGconn *conn, const char *dir, const char *name, int version,
                             bool *ran, char *errstr, size_t size)
{
    char path[4096], checksum[65], vtext[16];
    size_t len = 0;
    PGresult *res = NULL;
    *ran = false;
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    char *sql = read_file(path, &len);
    if (sql == NULL) {
        snprintf(errstr, size, "migration %s: cannot read it (or over 4 MiB)", path);
        return AB_ERR_CONFIG;
    }
    ab_sha256_hex(sql, len, checksum);
    snprintf(vtext, sizeof(vtext), "%d", version);
    const char *const params[] = { vtext, name, checksum };
    enum ab_err err = ab_db_exec(conn, "SELECT name, checksum FROM schema_migrations WHERE version = $1",
                                 1, params, &res, errstr, size);
    if (err)
        goto out;
    if (PQntuples(res) == 1) {
        if (strcmp(PQgetvalue(res, 0, 1), checksum) != 0) {
            snprintf(errstr, size,
                     "migration %s was changed after it was applied (as %s); add a new "
                     "migration instead of editing an applied one",
                     name, PQgetvalue(res, 0, 0));
            err = AB_ERR_CONFIG;
        }
        goto out;
    }
    err = ab_db_begin(conn, errstr, size);
    if (err == AB_OK)
        /* A schema change may rightly take long (an index on a big table): the pool's
         * statement timeout does not apply inside a migration. */
        err = ab_db_exec(conn, "SET LOCAL statement_timeout = 0", 0, NULL, NULL, errstr, size);
    if (err)
        goto out;
    PGresult *r = PQexec(conn, sql);
    /* EMPTY_QUERY: a file of comments only (a placeholder) is a migration that does nothing. */
    ExecStatusType st = PQresultStatus(r);
    if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK && st != PGRES_EMPTY_QUERY) {
        snprintf(errstr, size, "migration %s failed: %s", name, PQresultErrorMessage(r));
        errstr[strcspn(errstr, "\n")] = '\0';
        err = PQstatus(conn) == CONNECTION_OK ? AB_ERR_INTERNAL : AB_ERR_UNAVAILABLE;
        PQclear(r);
        ab_db_rollback(conn);
        goto out;
    }
    PQclear(r);
    err = ab_db_exec(conn, "INSERT INTO schema_migrations (version, name, checksum) VALUES ($1, $2, $3)",
                     3, params, NULL, errstr, size);
    if (err == AB_OK)
        err = ab_db_commit(conn, errstr, size);
    if (err)
        ab_db_rollback(conn);
    else
        *ran = true;
out:
    PQclear(res);
    free(sql);
    return err;
}

static enum ab_err list_migrations(const char *dir, char ***names, size_t *count, char *errstr,
                                   size_t size)
{
    DIR *d = opendir(dir);
    *names = NULL;
    *count = 0;
    if (d == NULL) {
        snprintf(errstr, size, "migrations directory %s cannot be opened", dir);
        return AB_ERR_CONFIG;
    }
    int version;
    for (struct dirent *de = readdir(d); de != NULL; de = readdir(d)) {
        if (!migration_name(de->d_name, &version))
            continue;
        char **grown = realloc(*names, (*count + 1) * sizeof(char *));
        if (grown == NULL)
            break;
        *names = grown;
        (*names)[(*count)++] = strdup(de->d_name);
    }
    closedir(d);
    qsort(*names, *count, sizeof(char *), compare_names);
    for (size_t i = 1; i < *count; i++) {
        if (strncmp((*names)[i - 1], (*names)[i], 4) == 0) {
            snprintf(errstr, size, "migrations %s and %s share a number", (*names)[i - 1],
                     (*names)[i]);
            return AB_ERR_CONFIG;
        }
    }
    return AB_OK;
}

enum ab_err ab_migrate(struct ab_db_pool *pool, const char *dir, int *applied, char *errstr,
                       size_t size)
{
    PGconn *conn = NULL;
    char **names = NULL;
    size_t count = 0;
    bool locked = false;
    int ran_count = 0;
    const char *const lock_params[] = { MIGRATE_LOCK_KEY };
    enum ab_err err = list_migrations(dir, &names, &count, errstr, size);
    if (err)
        goto out;
    err = ab_db_acquire(pool, 10000, &conn, errstr, size);
    if (err)
        goto out;
    err = ab_db_exec(conn, "SELECT pg_advisory_lock($1::bigint)", 1, lock_params, NULL, errstr,
                     size);
    if (err)
        goto out;
    locked = true;
    err = ab_db_exec(conn,
                     "CREATE TABLE IF NOT EXISTS schema_migrations ("
                     " version integer PRIMARY KEY, name text NOT NULL, checksum text NOT NULL,"
                     " applied_at timestamptz NOT NULL DEFAULT now())",
                     0, NULL, NULL, errstr, size);
    for (size_t i = 0; i < count && err == AB_OK; i++) {
        int version = 0;
        bool ran = false;
        migration_name(names[i], &version);
        err = apply_one(conn, dir, names[i], version, &ran, errstr, size);
        if (ran) {
            ran_count++;
            ab_info("migration %s applied", names[i]);
        }
    }
out:
    if (locked) {
        char ignored[256];
        ab_db_exec(conn, "SELECT pg_advisory_unlock($1::bigint)", 1, lock_params, NULL, ignored,
                   sizeof(ignored));
    }
    ab_db_release(pool, conn);
    for (size_t i = 0; i < count; i++)
        free(names[i]);
    free(names);
    if (applied)
        *applied = ran_count;
    return err;
}
