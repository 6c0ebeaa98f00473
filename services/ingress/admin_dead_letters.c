/* The dead letters' admin API (admin_dead_letters.h). */
#include "services/ingress/admin_dead_letters.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/crypto.h"
#include "common/db.h"
#include "common/envelope.h"
#include "common/log.h"
#include "common/util.h"

#define DB_WAIT_MS 5000
#define LIST_MAX   1000
#define REPLAY_MAX 10000

static const char *query(const struct _u_request *req, const char *name)
{
    const char *v = u_map_get(req->map_url, name);
    return v != NULL && v[0] != '\0' ? v : NULL;
}

static bool time_param(struct _u_response *resp, const char *name, const char *value)
{
    int64_t ms;
    if (value == NULL || ab_time_parse_rfc3339(value, &ms))
        return true;
    ab_http_error(resp, AB_ERR_INVALID, "%s must be an RFC 3339 time", name);
    return false;
}

static void list(const struct _u_request *req, struct _u_response *resp, void *ud)
{
    struct ingress_admin *admin = ud;
    const char *endpoint = query(req, "endpoint"), *kind = query(req, "kind");
    const char *since = query(req, "since"), *limit = query(req, "limit");
    char errstr[512], lim[16];
    PGconn *conn = NULL;
    PGresult *res = NULL;

    if (!ingress_admin_authorized(admin, req, resp) || !time_param(resp, "since", since))
        return;
    long n = limit ? strtol(limit, NULL, 10) : 100;
    if (n < 1 || n > LIST_MAX) {
        ab_http_error(resp, AB_ERR_INVALID, "limit must be 1 to %d", LIST_MAX);
        return;
    }
    snprintf(lim, sizeof(lim), "%ld", n);
    const char *const p[] = {endpoint, kind, since, lim};
    enum ab_err err = ab_service_db_acquire(admin->svc, DB_WAIT_MS, &conn, errstr, sizeof(errstr));
    if (!err)
        err = ab_db_exec(conn,
                         "SELECT coalesce(json_agg(json_build_object('id', id, 'kind', kind,"
                         " 'destination', destination, 'endpoint_id', endpoint_id,"
                         " 'tenant_id', tenant_id, 'event_type', event_type, 'attempts', attempts,"
                         " 'code', code, 'error', error, 'dead_at', dead_at,"
                         " 'replayed_at', replayed_at, 'replays', replays) ORDER BY dead_at DESC),"
                         " '[]')::text FROM (SELECT * FROM notify_dead_letters"
                         "  WHERE ($1::text IS NULL OR endpoint_id = $1)"
                         "    AND ($2::text IS NULL OR kind = $2)"
                         "    AND ($3::timestamptz IS NULL OR dead_at >= $3)"
                         "  ORDER BY dead_at DESC LIMIT $4::int) d",
                         4, p, &res, errstr, sizeof(errstr));
    ab_db_release(admin->svc->db, conn);
    if (err) {
        ab_http_error(resp, err, "%s", errstr);
        return;
    }
    json_t *items = json_loads(PQgetvalue(res, 0, 0), 0, NULL);
    PQclear(res);
    ab_http_json(resp, 200, json_pack("{s:o}", "dead_letters", items ? items : json_array()));
}

/* Publishes the replay of one dead letter (its job and replay number). */
static enum ab_err publish_replay(struct ingress_admin *admin, const char *id, const char *job,
                                  const char *destination, int replay, char *errstr, size_t size)
{
    json_t *job_json = json_loads(job, 0, NULL);
    char due[32];
    if (!json_is_object(job_json)) {
        json_decref(job_json);
        snprintf(errstr, size, "dead letter %s holds no readable job", id);
        return AB_ERR_INTERNAL;
    }
    ab_time_rfc3339(ab_wall_ms(), due);
    json_t *data = json_pack("{s:o, s:s, s:i, s:i, s:i, s:s}", "job", job_json, "key", destination,
                             "attempt", 1, "deferrals", 0, "replay", replay, "due_at", due);
    struct ab_event *ev = ab_event_new_derived("agentbus.notify.retry", "/agentbus/ingress/admin",
                                               destination, data, "%s:replay:%d", id, replay);
    enum ab_err err = ab_producer_send_event(admin->svc->producer, AB_TOPIC_NOTIFY_RETRY,
                                             destination, ev, errstr, size);
    ab_event_free(ev);
    return err;
}

/* Replays the dead letters the WHERE clause selects, each marked replayed only once Kafka
 * took its replay: a failure midway leaves the rest as they were, for the next call. */
static enum ab_err replay_where(struct ingress_admin *admin, const char *where, int nparams,
                                const char *const *params, int *count, char *errstr, size_t size)
{
    char sql[1024], number[16];
    PGconn *conn = NULL;
    PGresult *res = NULL;
    snprintf(sql, sizeof(sql),
             "SELECT id, job, destination, replays + 1 FROM notify_dead_letters WHERE %s"
             " ORDER BY dead_at LIMIT %d",
             where, REPLAY_MAX);
    *count = 0;
    enum ab_err err = ab_service_db_acquire(admin->svc, DB_WAIT_MS, &conn, errstr, size);
    if (!err)
        err = ab_db_exec(conn, sql, nparams, params, &res, errstr, size);
    for (int r = 0; !err && r < PQntuples(res); r++) {
        const char *id = PQgetvalue(res, r, 0);
        int replay = (int)strtol(PQgetvalue(res, r, 3), NULL, 10);
        err = publish_replay(admin, id, PQgetvalue(res, r, 1), PQgetvalue(res, r, 2), replay,
                             errstr, size);
        snprintf(number, sizeof(number), "%d", replay);
        const char *const p[] = {id, number};
        if (!err)
            err = ab_db_exec(conn,
                             "UPDATE notify_dead_letters SET replayed_at = now(), replays = $2"
                             " WHERE id = $1",
                             2, p, NULL, errstr, size);
        if (!err) {
            (*count)++;
            ab_info("dead letter %s replayed (replay %d)", id, replay);
        }
    }
    PQclear(res);
    ab_db_release(admin->svc->db, conn);
    return err;
}

static void replay_one(const struct _u_request *req, struct _u_response *resp, void *ud)
{
    struct ingress_admin *admin = ud;
    const char *id = u_map_get(req->map_url, "id");
    char errstr[512];
    int count = 0;
    if (!ingress_admin_authorized(admin, req, resp))
        return;
    if (!ab_uuid_valid(id)) {
        ab_http_error(resp, AB_ERR_INVALID,
                      "the id in /api/admin/dead-letters/<id>/replay must "
                      "be a UUID");
        return;
    }
    const char *const p[] = {id};
    enum ab_err err = replay_where(admin, "id = $1", 1, p, &count, errstr, sizeof(errstr));
    if (!err && count == 0)
        ab_http_error(resp, AB_ERR_NOT_FOUND, "no dead letter %s", id);
    else if (err)
        ab_http_error(resp, err, "%s", errstr);
    else
        ab_http_json(resp, 202, json_pack("{s:s, s:s}", "status", "replaying", "id", id));
}

static void replay_many(const struct _u_request *req, struct _u_response *resp, void *ud)
{
    struct ingress_admin *admin = ud;
    json_t *body = NULL;
    char errstr[512];
    int count = 0;
    if (!ingress_admin_authorized(admin, req, resp))
        return;
    enum ab_err err = ab_http_json_body(req, &body, errstr, sizeof(errstr));
    const char *endpoint = json_string_value(json_object_get(body, "endpoint"));
    const char *since = json_string_value(json_object_get(body, "since"));
    if (!err && (endpoint == NULL || since == NULL)) {
        err = AB_ERR_INVALID;
        snprintf(errstr, sizeof(errstr),
                 "the body needs \"endpoint\" (an endpoint id) and "
                 "\"since\" (RFC 3339)");
    }
    if (!err && !time_param(resp, "since", since)) {
        json_decref(body);
        return;
    }
    if (!err) {
        const char *const p[] = {endpoint, since};
        err = replay_where(
            admin, "endpoint_id = $1 AND dead_at >= $2::timestamptz AND replayed_at IS NULL", 2, p,
            &count, errstr, sizeof(errstr));
    }
    if (err)
        ab_http_error(resp, err, "%s", errstr);
    else
        ab_http_json(resp, 202, json_pack("{s:s, s:i}", "status", "replaying", "replayed", count));
    json_decref(body);
}

static void purge(const struct _u_request *req, struct _u_response *resp, void *ud)
{
    struct ingress_admin *admin = ud;
    const char *endpoint = query(req, "endpoint"), *before = query(req, "before");
    char errstr[512];
    PGconn *conn = NULL;
    PGresult *res = NULL;
    if (!ingress_admin_authorized(admin, req, resp) || !time_param(resp, "before", before))
        return;
    const char *const p[] = {endpoint, before};
    enum ab_err err = ab_service_db_acquire(admin->svc, DB_WAIT_MS, &conn, errstr, sizeof(errstr));
    if (!err)
        err = ab_db_exec(conn,
                         "WITH gone AS (DELETE FROM notify_dead_letters"
                         " WHERE ($1::text IS NULL OR endpoint_id = $1)"
                         "   AND ($2::timestamptz IS NULL OR dead_at < $2) RETURNING 1)"
                         " SELECT count(*) FROM gone",
                         2, p, &res, errstr, sizeof(errstr));
    ab_db_release(admin->svc->db, conn);
    if (err) {
        ab_http_error(resp, err, "%s", errstr);
        return;
    }
    ab_http_json(resp, 200, json_pack("{s:I}", "purged", (json_int_t)strtoll(PQgetvalue(res, 0, 0), NULL, 10)));
    PQclear(res);
}

static void enable_endpoint(const struct _u_request *req, struct _u_response *resp, void *ud)
{
    struct ingress_admin *admin = ud;
    const char *id = u_map_get(req->map_url, "id");
    char errstr[512];
    PGconn *conn = NULL;
    PGresult *res = NULL;
    if (!ingress_admin_authorized(admin, req, resp))
        return;
    const char *const p[] = {id};
    enum ab_err err = ab_service_db_acquire(admin->svc, DB_WAIT_MS, &conn, errstr, sizeof(errstr));
    if (!err)
        err = ab_db_exec(conn,
                         "UPDATE webhook_endpoint_state SET disabled_at = NULL,"
                         " disabled_reason = '', updated_at = now()"
                         " WHERE endpoint_id = $1 AND disabled_at IS NOT NULL RETURNING 1",
                         1, p, &res, errstr, sizeof(errstr));
    ab_db_release(admin->svc->db, conn);
    if (err)
        ab_http_error(resp, err, "%s", errstr);
    else if (PQntuples(res) == 0)
        ab_http_error(resp, AB_ERR_NOT_FOUND, "endpoint \"%.100s\" is not disabled", id);
    else
        ab_http_json(resp, 200, json_pack("{s:s, s:b}", "id", id, "enabled", 1));
    PQclear(res);
}

enum ab_err ingress_dead_letter_routes(struct ingress_admin *admin, struct ab_http_server *api)
{
    enum ab_err err = ab_http_server_route(api, "GET", "/api/admin/dead-letters", list, admin);
    if (!err)
        err =
            ab_http_server_route(api, "POST", "/api/admin/dead-letters/replay", replay_many, admin);
    if (!err)
        err = ab_http_server_route(api, "POST", "/api/admin/dead-letters/:id/replay", replay_one,
                                   admin);
    if (!err)
        err = ab_http_server_route(api, "DELETE", "/api/admin/dead-letters", purge, admin);
    if (!err)
        err = ab_http_server_route(api, "POST", "/api/admin/webhooks/:id/enable", enable_endpoint,
                                   admin);
    return err;
}
