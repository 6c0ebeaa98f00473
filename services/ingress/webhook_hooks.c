/* The hook registry and its admin API (webhook_hooks.h). */
#include "services/ingress/webhook_hooks.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/db.h"
#include "common/log.h"
#include "common/util.h"
#include "services/ingress/routes_gateway.h"

#define DB_WAIT_MS         5000
#define RELOAD_INTERVAL_MS 1000
#define PURGE_INTERVAL_MS  60000
#define PURGE_ROUNDS       100
#define PURGE_BATCH        "10000"

static struct ingress_hook_set *set_new(size_t capacity)
{
    struct ingress_hook_set *set = ab_xcalloc(1, sizeof(*set));
    atomic_init(&set->refs, 1);
    set->hooks = ab_xcalloc(capacity > 0 ? capacity : 1, sizeof(*set->hooks));
    return set;
}

void ingress_hooks_put(struct ingress_hook_set *set)
{
    if (set == NULL || atomic_fetch_sub(&set->refs, 1) != 1)
        return;
    for (size_t i = 0; i < set->owned_count; i++)
        ab_hook_cleanup(&set->owned[i]);
    free(set->owned);
    free(set->hooks);
    free(set);
}

struct ingress_hook_set *ingress_hooks_get(struct ingress_hooks *hk)
{
    pthread_mutex_lock(&hk->lock);
    struct ingress_hook_set *set = hk->current;
    atomic_fetch_add(&set->refs, 1);
    pthread_mutex_unlock(&hk->lock);
    return set;
}

static void publish_set(struct ingress_hooks *hk, struct ingress_hook_set *set)
{
    pthread_mutex_lock(&hk->lock);
    struct ingress_hook_set *old = hk->current;
    hk->current = set;
    pthread_mutex_unlock(&hk->lock);
    ingress_hooks_put(old);
}

const struct ab_hook *ingress_hooks_find(const struct ingress_hook_set *set, const char *path)
{
    if (path == NULL)
        return NULL;
    bool by_id = strncmp(path, "/webhook/", 9) == 0;
    for (size_t i = 0; i < set->count; i++) {
        const struct ab_hook *h = set->hooks[i];
        if (by_id ? strcmp(path + 9, h->id) == 0 : h->path != NULL && strcmp(path, h->path) == 0)
            return h;
    }
    return NULL;
}

/* Whether a table hook may join the set: its id and path must be free. */
static const char *clash(const struct ingress_hook_set *set, const struct ab_hook *h)
{
    for (size_t i = 0; i < set->count; i++) {
        if (strcmp(set->hooks[i]->id, h->id) == 0)
            return "id";
        if (h->path != NULL && set->hooks[i]->path != NULL &&
            strcmp(set->hooks[i]->path, h->path) == 0)
            return "path";
    }
    return NULL;
}

/* The configuration's hooks plus the rows (definition) of res, parsed; a row that does
 * not parse (the parser got stricter) or clashes is left out with a warning. */
static struct ingress_hook_set *build_set(struct ingress_hooks *hk, PGresult *res)
{
    int rows = res != NULL ? PQntuples(res) : 0;
    struct ingress_hook_set *set = set_new(hk->incoming->count + (size_t)rows);
    for (size_t i = 0; i < hk->incoming->count; i++)
        set->hooks[set->count++] = &hk->incoming->hooks[i];
    set->table_loaded = res != NULL;
    if (rows > 0)
        set->owned = ab_xcalloc((size_t)rows, sizeof(*set->owned));
    for (int r = 0; r < rows; r++) {
        char errstr[512];
        struct ab_hook *h = &set->owned[set->owned_count];
        json_t *def = json_loads(PQgetvalue(res, r, 0), 0, NULL);
        enum ab_err err = ab_hook_parse(def, hk->incoming, h, errstr, sizeof(errstr));
        json_decref(def);
        const char *what = err ? NULL : clash(set, h);
        if (err || what != NULL) {
            ab_warn("webhook hook \"%s\" of the database is left out: %s%s", PQgetvalue(res, r, 1),
                    err ? errstr : "its ", err ? "" : what);
            if (!err)
                ab_hook_cleanup(h);
            continue;
        }
        set->owned_count++;
        set->hooks[set->count++] = h;
    }
    return set;
}

/* One pass of the reload thread: the generation, and the hooks if it moved. */
static void reload(struct ingress_hooks *hk)
{
    char errstr[512];
    PGconn *conn = NULL;
    PGresult *res = NULL;
    if (ab_service_db_acquire(hk->svc, DB_WAIT_MS, &conn, errstr, sizeof(errstr)) != AB_OK)
        return; /* not migrated yet, or PostgreSQL away: the file's hooks keep working */
    enum ab_err err = ab_db_exec(conn, "SELECT n FROM webhook_hooks_generation", 0, NULL, &res,
                                 errstr, sizeof(errstr));
    long long gen =
        err == AB_OK && PQntuples(res) == 1 ? strtoll(PQgetvalue(res, 0, 0), NULL, 10) : -1;
    PQclear(res);
    res = NULL;
    if (gen >= 0 && gen != hk->generation) {
        err = ab_db_exec(conn, "SELECT definition::text, id FROM webhook_hooks ORDER BY id", 0,
                         NULL, &res, errstr, sizeof(errstr));
        if (err == AB_OK) {
            publish_set(hk, build_set(hk, res));
            if (hk->generation >= 0)
                ab_info("webhook hooks reloaded: %d from the database", PQntuples(res));
            hk->generation = gen;
        }
        PQclear(res);
    }
    if (err)
        ab_warn("webhook hooks: cannot reload: %s", errstr);
    ab_db_release(hk->svc->db, conn);
}

/* Idempotency records older than the window are of no more use. */
static void purge(struct ingress_hooks *hk)
{
    char errstr[512], window[32];
    PGconn *conn = NULL;
    snprintf(window, sizeof(window), "%lld seconds", hk->incoming->idempotency_window_s);
    const char *const params[] = {window, PURGE_BATCH};
    if (ab_service_db_acquire(hk->svc, DB_WAIT_MS, &conn, errstr, sizeof(errstr)) != AB_OK)
        return;
    /* Batches until one comes back short (at most PURGE_ROUNDS a pass): short
     * transactions, and a pass keeps up with any rate the listener can take. */
    for (int round = 0; round < PURGE_ROUNDS; round++) {
        PGresult *res = NULL;
        if (ab_db_exec(conn,
                       "WITH gone AS (DELETE FROM webhook_deliveries WHERE ctid IN (SELECT ctid"
                       " FROM webhook_deliveries WHERE created_at < now() - $1::interval"
                       " LIMIT $2::int) RETURNING 1) SELECT count(*) FROM gone",
                       2, params, &res, errstr, sizeof(errstr)) != AB_OK) {
            ab_warn("webhook idempotency records: cannot purge: %s", errstr);
            break;
        }
        bool more = strtol(PQgetvalue(res, 0, 0), NULL, 10) == strtol(PURGE_BATCH, NULL, 10);
        PQclear(res);
        if (!more)
            break;
    }
    ab_db_release(hk->svc->db, conn);
}

static void *reload_loop(void *arg)
{
    struct ingress_hooks *hk = arg;
    int64_t next_purge = ab_monotonic_ms() + RELOAD_INTERVAL_MS * 5;
    pthread_mutex_lock(&hk->wait_lock);
    while (!hk->stop) {
        pthread_mutex_unlock(&hk->wait_lock);
        reload(hk);
        if (ab_monotonic_ms() >= next_purge) {
            purge(hk);
            next_purge = ab_monotonic_ms() + PURGE_INTERVAL_MS;
        }
        pthread_mutex_lock(&hk->wait_lock);
        if (!hk->stop) {
            struct timespec until;
            clock_gettime(CLOCK_MONOTONIC, &until);
            until.tv_sec += RELOAD_INTERVAL_MS / 1000;
            pthread_cond_timedwait(&hk->wake, &hk->wait_lock, &until);
        }
    }
    pthread_mutex_unlock(&hk->wait_lock);
    return NULL;
}

/* Wakes the reload thread now (after an admin change on this replica). */
static void poke(struct ingress_hooks *hk)
{
    pthread_mutex_lock(&hk->wait_lock);
    pthread_cond_signal(&hk->wake);
    pthread_mutex_unlock(&hk->wait_lock);
}

enum ab_err ingress_hooks_init(struct ingress_hooks *hk, struct ab_service *svc,
                               struct ingress_admin *admin)
{
    char errstr[1024];
    memset(hk, 0, sizeof(*hk));
    hk->svc = svc;
    hk->admin = admin;
    hk->generation = -1;
    if (ab_incoming_parse(ab_config_object(svc->cfg, AB_OPT_WEBHOOKS), &hk->incoming, errstr,
                          sizeof(errstr)) != AB_OK) {
        ab_error("configuration: %s", errstr);
        return AB_ERR_CONFIG;
    }
    pthread_mutex_init(&hk->lock, NULL);
    pthread_mutex_init(&hk->wait_lock, NULL);
    pthread_condattr_t attr;
    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    pthread_cond_init(&hk->wake, &attr);
    pthread_condattr_destroy(&attr);
    hk->current = build_set(hk, NULL);
    hk->initialized = true;
    return AB_OK;
}

enum ab_err ingress_hooks_start(struct ingress_hooks *hk)
{
    if (pthread_create(&hk->thread, NULL, reload_loop, hk) != 0) {
        ab_error("cannot start the webhook hooks thread");
        return AB_ERR_INTERNAL;
    }
    hk->started = true;
    return AB_OK;
}

void ingress_hooks_stop(struct ingress_hooks *hk)
{
    if (!hk->started)
        return;
    pthread_mutex_lock(&hk->wait_lock);
    hk->stop = true;
    pthread_cond_signal(&hk->wake);
    pthread_mutex_unlock(&hk->wait_lock);
    pthread_join(hk->thread, NULL);
    hk->started = false;
}

void ingress_hooks_cleanup(struct ingress_hooks *hk)
{
    if (!hk->initialized) {
        ab_incoming_free(hk->incoming);
        return;
    }
    ingress_hooks_stop(hk);
    ingress_hooks_put(hk->current);
    ab_incoming_free(hk->incoming);
    pthread_mutex_destroy(&hk->lock);
    pthread_mutex_destroy(&hk->wait_lock);
    pthread_cond_destroy(&hk->wake);
    hk->initialized = false;
}

/* ---- the admin API ---- */

/* One statement on a pool connection borrowed for it (ab_db_exec's contract). */
static enum ab_err query(struct ingress_hooks *hk, const char *sql, int n,
                         const char *const *params, PGresult **res, char *errstr, size_t size)
{
    PGconn *conn = NULL;
    enum ab_err err = ab_service_db_acquire(hk->svc, DB_WAIT_MS, &conn, errstr, size);
    if (err)
        return err;
    err = ab_db_exec(conn, sql, n, params, res, errstr, size);
    ab_db_release(hk->svc->db, conn);
    return err;
}

static const struct ab_hook *config_hook(const struct ingress_hooks *hk, const char *id)
{
    for (size_t i = 0; i < hk->incoming->count; i++)
        if (strcmp(hk->incoming->hooks[i].id, id) == 0)
            return &hk->incoming->hooks[i];
    return NULL;
}

/* A stored hook as the API shows it (secrets redacted). @ownership new reference. */
static json_t *row_json(const struct ingress_hooks *hk, const char *definition,
                        const char *created_at, const char *updated_at)
{
    char errstr[512];
    struct ab_hook h;
    json_t *def = json_loads(definition, 0, NULL), *out;
    if (ab_hook_parse(def, hk->incoming, &h, errstr, sizeof(errstr)) == AB_OK) {
        out = ab_hook_redacted(&h);
        ab_hook_cleanup(&h);
    } else { /* stored under an older, looser parser: shown, marked, never its secrets */
        out = json_pack("{s:O?,s:s}", "id", json_object_get(def, "id"), "invalid", errstr);
    }
    json_decref(def);
    json_object_set_new(out, "created_at", json_string(created_at));
    json_object_set_new(out, "updated_at", json_string(updated_at));
    return out;
}

#define ROW_COLUMNS                                                                                \
    "definition::text, to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'),"  \
    " to_char(updated_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"')"

static void list_hooks(const struct _u_request *req, struct _u_response *resp, void *ud)
{
    struct ingress_hooks *hk = ud;
    char errstr[512];
    PGresult *res = NULL;
    if (!ingress_admin_authorized(hk->admin, req, resp))
        return;
    enum ab_err err = query(hk, "SELECT " ROW_COLUMNS " FROM webhook_hooks ORDER BY id", 0, NULL,
                            &res, errstr, sizeof(errstr));
    if (err) {
        ab_http_error(resp, err, "%s", errstr);
        return;
    }
    json_t *items = json_array();
    for (size_t i = 0; i < hk->incoming->count; i++)
        json_array_append_new(items, ab_hook_redacted(&hk->incoming->hooks[i]));
    for (int r = 0; r < PQntuples(res); r++)
        json_array_append_new(items, row_json(hk, PQgetvalue(res, r, 0), PQgetvalue(res, r, 1),
                                              PQgetvalue(res, r, 2)));
    PQclear(res);
    ab_http_json(resp, 200, json_pack("{s:o}", "hooks", items));
}

static void get_hook(const struct _u_request *req, struct _u_response *resp, void *ud)
{
    struct ingress_hooks *hk = ud;
    const char *id = u_map_get(req->map_url, "id");
    char errstr[512];
    PGresult *res = NULL;
    if (!ingress_admin_authorized(hk->admin, req, resp))
        return;
    const struct ab_hook *fixed = config_hook(hk, id);
    if (fixed != NULL) {
        ab_http_json(resp, 200, ab_hook_redacted(fixed));
        return;
    }
    const char *const params[] = {id};
    enum ab_err err = query(hk, "SELECT " ROW_COLUMNS " FROM webhook_hooks WHERE id = $1", 1,
                            params, &res, errstr, sizeof(errstr));
    if (!err && PQntuples(res) == 0)
        ab_http_error(resp, AB_ERR_NOT_FOUND, "no hook \"%s\"", id);
    else if (!err)
        ab_http_json(
            resp, 200,
            row_json(hk, PQgetvalue(res, 0, 0), PQgetvalue(res, 0, 1), PQgetvalue(res, 0, 2)));
    else
        ab_http_error(resp, err, "%s", errstr);
    PQclear(res);
}

/* Checks a definition for create (id_in_path NULL) or replace. On success *h is parsed
 * (clean it) and *tenant_id is the tenant's id. Answers the error itself. */
static bool check_definition(struct ingress_hooks *hk, const struct _u_request *req,
                             struct _u_response *resp, const char *id_in_path, json_t **def,
                             struct ab_hook *h)
{
    char errstr[1024];
    if (ab_http_json_body(req, def, errstr, sizeof(errstr)) != AB_OK) {
        ab_http_error(resp, AB_ERR_INVALID, "%s", errstr);
        return false;
    }
    if (!json_is_object(*def)) {
        ab_http_error(resp, AB_ERR_INVALID, "the body must be a hook definition (an object)");
        return false;
    }
    if (id_in_path != NULL && json_object_get(*def, "id") == NULL)
        json_object_set_new(*def, "id", json_string(id_in_path));
    const char *tenant = json_string_value(json_object_get(*def, "tenant"));
    if (!ab_uuid_valid(tenant)) {
        ab_http_error(resp, AB_ERR_INVALID,
                      "\"tenant\" must be the id of the tenant the hook acts for");
        return false;
    }
    if (ab_hook_parse(*def, hk->incoming, h, errstr, sizeof(errstr)) != AB_OK) {
        ab_http_error(resp, AB_ERR_INVALID, "%s", errstr);
        return false;
    }
    if (id_in_path != NULL && strcmp(h->id, id_in_path) != 0) {
        ab_http_error(resp, AB_ERR_INVALID, "\"id\" cannot change (it is in hooks' URLs)");
        ab_hook_cleanup(h);
        return false;
    }
    const struct ab_hook *fixed = config_hook(hk, h->id);
    for (size_t i = 0; fixed == NULL && h->path != NULL && i < hk->incoming->count; i++)
        if (hk->incoming->hooks[i].path != NULL &&
            strcmp(hk->incoming->hooks[i].path, h->path) == 0)
            fixed = &hk->incoming->hooks[i];
    if (fixed != NULL) {
        ab_http_error(resp, AB_ERR_CONFLICT,
                      "the configuration file's hook \"%s\" has this %s; change the file "
                      "to change it",
                      fixed->id, strcmp(fixed->id, h->id) == 0 ? "id" : "path");
        ab_hook_cleanup(h);
        return false;
    }
    return true;
}

/* Writes a definition (insert or replace) and answers. */
static void store(struct ingress_hooks *hk, struct _u_response *resp, const json_t *def,
                  const struct ab_hook *h, bool create)
{
    char errstr[512];
    PGresult *res = NULL;
    char *text = json_dumps(def, JSON_COMPACT);
    const char *const params[] = {h->id, json_string_value(json_object_get(def, "tenant")), text,
                                  h->path};
    /* A path must be free among the table's other hooks: checked in the same statement. */
    const char *sql =
        create ? "INSERT INTO webhook_hooks (id, tenant_id, definition)"
                 " SELECT $1, $2, $3::jsonb WHERE NOT EXISTS (SELECT 1 FROM webhook_hooks"
                 " WHERE $4::text IS NOT NULL AND definition->>'path' = $4)"
                 " ON CONFLICT (id) DO NOTHING RETURNING " ROW_COLUMNS
               : "UPDATE webhook_hooks SET tenant_id = $2, definition = $3::jsonb,"
                 " updated_at = now() WHERE id = $1 AND NOT EXISTS (SELECT 1 FROM webhook_hooks"
                 " WHERE id <> $1 AND $4::text IS NOT NULL AND definition->>'path' = $4)"
                 " RETURNING " ROW_COLUMNS;
    enum ab_err err = query(hk, sql, 4, params, &res, errstr, sizeof(errstr));
    free(text);
    if (err == AB_ERR_INVALID) /* the tenant's foreign key */
        ab_http_error(resp, AB_ERR_INVALID, "no tenant %s", params[1]);
    else if (err)
        ab_http_error(resp, err, "%s", errstr);
    else if (PQntuples(res) == 1) {
        ab_http_json(
            resp, create ? 201 : 200,
            row_json(hk, PQgetvalue(res, 0, 0), PQgetvalue(res, 0, 1), PQgetvalue(res, 0, 2)));
        ab_info("webhook hook %s %s", h->id, create ? "created" : "replaced");
        poke(hk);
    } else if (!create) {
        ab_http_error(resp, AB_ERR_NOT_FOUND, "no hook \"%s\" (or its path is taken)", h->id);
    } else {
        ab_http_error(resp, AB_ERR_CONFLICT, "a hook with this id or path exists");
    }
    PQclear(res);
}

/* POST creates (no id in the path), PUT replaces the hook the path names. */
static void write_hook(const struct _u_request *req, struct _u_response *resp, void *ud)
{
    struct ingress_hooks *hk = ud;
    /* by the method: a query's ?id= must not turn a create into a replace */
    const char *id = strcmp(req->http_verb, "PUT") == 0 ? u_map_get(req->map_url, "id") : NULL;
    json_t *def = NULL;
    struct ab_hook h;
    if (ingress_admin_authorized(hk->admin, req, resp) &&
        check_definition(hk, req, resp, id, &def, &h)) {
        store(hk, resp, def, &h, id == NULL);
        ab_hook_cleanup(&h);
    }
    json_decref(def);
}

static void delete_hook(const struct _u_request *req, struct _u_response *resp, void *ud)
{
    struct ingress_hooks *hk = ud;
    const char *id = u_map_get(req->map_url, "id");
    char errstr[512];
    PGresult *res = NULL;
    if (!ingress_admin_authorized(hk->admin, req, resp))
        return;
    if (config_hook(hk, id) != NULL) {
        ab_http_error(resp, AB_ERR_CONFLICT,
                      "hook \"%s\" is defined in the configuration file; remove it there", id);
        return;
    }
    const char *const params[] = {id};
    enum ab_err err = query(hk, "DELETE FROM webhook_hooks WHERE id = $1 RETURNING id", 1, params,
                            &res, errstr, sizeof(errstr));
    if (err)
        ab_http_error(resp, err, "%s", errstr);
    else if (PQntuples(res) == 0)
        ab_http_error(resp, AB_ERR_NOT_FOUND, "no hook \"%s\"", id);
    else {
        ulfius_set_empty_body_response(resp, 204);
        ab_info("webhook hook %s deleted", id);
        poke(hk);
    }
    PQclear(res);
}

enum ab_err ingress_hooks_admin_routes(struct ingress_hooks *hk, struct ab_http_server *api)
{
    enum ab_err err = ab_http_server_route(api, "GET", "/api/admin/hooks", list_hooks, hk);
    if (!err)
        err = ab_http_server_route(api, "POST", "/api/admin/hooks", write_hook, hk);
    if (!err)
        err = ab_http_server_route(api, "GET", "/api/admin/hooks/:id", get_hook, hk);
    if (!err)
        err = ab_http_server_route(api, "PUT", "/api/admin/hooks/:id", write_hook, hk);
    if (!err)
        err = ab_http_server_route(api, "DELETE", "/api/admin/hooks/:id", delete_hook, hk);
    return err;
}
