/* The notifier's SQL (store.h). Batches go to PostgreSQL as arrays (one statement for
 * however many attempts), so recording stays a few round trips per batch. */
#include "services/notifier/store.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/db.h"
#include "common/util.h"

/* ---- a growable PostgreSQL array literal ---- */

struct arr {
    char *s;
    size_t len, cap;
    size_t count;
};

static void arr_putc(struct arr *a, char c)
{
    if (a->len + 2 > a->cap) {
        a->cap = a->cap ? a->cap * 2 : 256;
        a->s = ab_xrealloc(a->s, a->cap);
    }
    a->s[a->len++] = c;
    a->s[a->len] = '\0';
}

/* Appends one element; NULL is SQL NULL. Elements are quoted with " and \ escaped. */
static void arr_add(struct arr *a, const char *v)
{
    arr_putc(a, a->count++ ? ',' : '{');
    if (v == NULL) {
        for (const char *p = "NULL"; *p; p++)
            arr_putc(a, *p);
        return;
    }
    arr_putc(a, '"');
    for (; *v; v++) {
        if (*v == '"' || *v == '\\')
            arr_putc(a, '\\');
        arr_putc(a, *v);
    }
    arr_putc(a, '"');
}

static void arr_addf(struct arr *a, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void arr_addf(struct arr *a, const char *fmt, ...)
{
    char buf[64];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof(buf), fmt, ap);
    va_end(ap);
    arr_add(a, buf);
}

static const char *arr_end(struct arr *a)
{
    if (a->count == 0) {
        free(a->s);
        a->s = ab_xstrdup("{}");
        return a->s;
    }
    arr_putc(a, '}');
    return a->s;
}

/* ---- Feishu ---- */

/* The member, and the app to reach them: the sending agent's own channel before the
 * tenant's default, Feishu before Lark. Everything filtered by the tenant. */
static const char *const feishu_sql =
    "SELECT m.feishu_user_id, m.feishu_open_id, c.app_id, c.app_secret, c.base_url,"
    "       c.agent_id IS NULL, a.name"
    "  FROM org_members m"
    "  LEFT JOIN LATERAL (SELECT * FROM channel_configs c"
    "                      WHERE c.tenant_id = m.tenant_id"
    "                        AND (c.agent_id = $3::uuid OR c.agent_id IS NULL)"
    "                      ORDER BY c.agent_id IS NULL, c.channel_type <> 'feishu'"
    "                      LIMIT 1) c ON true"
    "  LEFT JOIN agents a ON a.id = $3::uuid AND a.tenant_id = m.tenant_id"
    " WHERE m.id = $1 AND m.tenant_id = $2";

/* A group chat has no member: only the app, chosen the same way, and the sending agent's
 * name for the shared app's prefix. */
static const char *const feishu_chat_sql =
    "SELECT c.app_id, c.app_secret, c.base_url, c.agent_id IS NULL, a.name"
    "  FROM channel_configs c"
    "  LEFT JOIN agents a ON a.id = $2::uuid AND a.tenant_id = c.tenant_id"
    " WHERE c.tenant_id = $1 AND (c.agent_id = $2::uuid OR c.agent_id IS NULL)"
    " ORDER BY c.agent_id IS NULL, c.channel_type <> 'feishu'"
    " LIMIT 1";

static char *nonempty(PGresult *res, int col)
{
    if (PQgetisnull(res, 0, col) || PQgetvalue(res, 0, col)[0] == '\0')
        return NULL;
    return ab_xstrdup(PQgetvalue(res, 0, col));
}

/* The app and the text from a row whose columns from `col` on are app_id, app_secret,
 * base_url, "is the tenant's shared app", the sending agent's name. */
static void take_app(struct notify_delivery *d, PGresult *res, int col, const char *content)
{
    d->app_id = ab_xstrdup(PQgetvalue(res, 0, col));
    d->app_secret = ab_xstrdup(PQgetvalue(res, 0, col + 1));
    d->base_url = ab_xstrdup(PQgetvalue(res, 0, col + 2));
    size_t n = strlen(d->base_url);
    while (n > 0 && d->base_url[n - 1] == '/')
        d->base_url[--n] = '\0';
    /* The tenant's shared bot speaks for every agent: say which one. */
    bool shared = PQgetvalue(res, 0, col + 3)[0] == 't';
    const char *agent = PQgetisnull(res, 0, col + 4) ? NULL : PQgetvalue(res, 0, col + 4);
    size_t len = strlen(content ? content : "") + (agent ? strlen(agent) : 0) + 8;
    d->text = ab_xmalloc(len);
    if (shared && agent != NULL)
        snprintf(d->text, len, "[%s] %s", agent, content ? content : "");
    else
        snprintf(d->text, len, "%s", content ? content : "");
}

enum ab_err notify_store_prepare_feishu(PGconn *conn, struct notify_delivery *d, char *errstr,
                                        size_t size)
{
    const json_t *data = json_object_get(d->job, "data");
    const char *sender = json_string_value(json_object_get(json_object_get(data, "sender"), "id"));
    const char *content = json_string_value(json_object_get(data, "content"));
    const char *sender_id = sender && ab_uuid_valid(sender) ? sender : NULL;
    PGresult *res = NULL;
    enum ab_err err;

    if (d->chat_id[0]) {
        const char *const params[] = {d->tenant_id, sender_id};
        err = ab_db_exec(conn, feishu_chat_sql, 2, params, &res, errstr, size);
        if (err)
            return err;
        if (PQntuples(res) == 0) {
            d->outcome = NOTIFY_FAILED;
            notify_delivery_set_error(d, "no_channel",
                                      "no Feishu/Lark channel is configured for tenant %s",
                                      d->tenant_id);
        } else {
            take_app(d, res, 0, content);
        }
        PQclear(res);
        return AB_OK;
    }
    const char *const params[] = {d->member_id, d->tenant_id, sender_id};
    err = ab_db_exec(conn, feishu_sql, 3, params, &res, errstr, size);
    if (err)
        return err;
    if (PQntuples(res) == 0) {
        d->outcome = NOTIFY_FAILED;
        notify_delivery_set_error(d, "member_not_found", "member %s does not exist in tenant %s",
                                  d->member_id, d->tenant_id);
    } else if (PQgetisnull(res, 0, 2)) {
        d->outcome = NOTIFY_FAILED;
        notify_delivery_set_error(
            d, "no_channel", "no Feishu/Lark channel is configured for tenant %s", d->tenant_id);
    } else {
        d->user_id = nonempty(res, 0);
        d->open_id = nonempty(res, 1);
        take_app(d, res, 2, content);
        if (d->user_id == NULL && d->open_id == NULL) {
            d->outcome = NOTIFY_FAILED;
            notify_delivery_set_error(d, "no_feishu_id",
                                      "member %s has neither a Feishu user_id nor an open_id",
                                      d->member_id);
        }
    }
    PQclear(res);
    return AB_OK;
}

/* ---- recording ---- */

static const char *const attempts_sql =
    "INSERT INTO notify_attempts (delivery_id, attempt, kind, destination, outcome, code,"
    "                             status, latency_ms, response_excerpt, error, replay)"
    " SELECT * FROM unnest($1::uuid[], $2::int[], $3::text[], $4::text[], $5::text[],"
    "                      $6::text[], $7::int[], $8::int[], $9::text[], $10::text[], $11::int[])"
    " ON CONFLICT (delivery_id, replay, attempt) DO UPDATE SET outcome = EXCLUDED.outcome,"
    "   code = EXCLUDED.code, status = EXCLUDED.status, latency_ms = EXCLUDED.latency_ms,"
    "   response_excerpt = EXCLUDED.response_excerpt, error = EXCLUDED.error,"
    "   created_at = now()";

static const char *const dead_sql =
    "INSERT INTO notify_dead_letters (id, kind, destination, endpoint_id, tenant_id,"
    "                                 event_type, attempts, code, error, job)"
    " SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::uuid[],"
    "                      $6::text[], $7::int[], $8::text[], $9::text[], $10::text[])"
    " ON CONFLICT (id) DO UPDATE SET attempts = EXCLUDED.attempts, code = EXCLUDED.code,"
    "   error = EXCLUDED.error, job = EXCLUDED.job, dead_at = now(), replayed_at = NULL";

static const char *const endpoint_sql =
    "INSERT INTO webhook_endpoint_state AS s (endpoint_id, disabled_at, disabled_reason,"
    "                                        failing_since, last_failure_at, last_success_at)"
    " SELECT e, CASE WHEN w = 'gone' THEN now() END,"
    "        CASE WHEN w = 'gone' THEN 'the endpoint answered 410 Gone' ELSE '' END,"
    "        CASE WHEN w = 'failing' THEN now() END,"
    "        CASE WHEN w <> 'recovered' THEN now() END,"
    "        CASE WHEN w = 'recovered' THEN now() END"
    "   FROM (SELECT DISTINCT ON (e) e, w"
    /* one row per endpoint (ON CONFLICT may touch a row once): a 410 wins, else the
     * batch's last word */
    "           FROM unnest($1::text[], $2::text[]) WITH ORDINALITY AS t(e, w, o)"
    "          ORDER BY e, w = 'gone' DESC, o DESC) AS t"
    " ON CONFLICT (endpoint_id) DO UPDATE SET"
    "   disabled_at = COALESCE(EXCLUDED.disabled_at, s.disabled_at),"
    "   disabled_reason = CASE WHEN EXCLUDED.disabled_at IS NOT NULL"
    "                          THEN EXCLUDED.disabled_reason ELSE s.disabled_reason END,"
    "   failing_since = CASE WHEN EXCLUDED.last_success_at IS NOT NULL THEN NULL"
    "                        ELSE COALESCE(s.failing_since, EXCLUDED.failing_since) END,"
    "   last_failure_at = COALESCE(EXCLUDED.last_failure_at, s.last_failure_at),"
    "   last_success_at = COALESCE(EXCLUDED.last_success_at, s.last_success_at),"
    "   updated_at = now()";

enum ab_err notify_store_record(PGconn *conn, struct notify_delivery *const *ds, size_t n,
                                char *errstr, size_t size)
{
    struct arr at[11] = {0}, dl[10] = {0}, ep[2] = {0}, done = {0}, released = {0};
    enum ab_err err;

    for (size_t i = 0; i < n; i++) {
        const struct notify_delivery *d = ds[i];
        if (d->outcome == NOTIFY_ABANDONED) {
            if (d->scheduled_id[0])
                arr_add(&released, d->scheduled_id);
            continue;
        }
        if (d->scheduled_id[0])
            arr_add(&done, d->scheduled_id);
        arr_add(&at[0], d->id);
        arr_addf(&at[1], "%d", d->attempt);
        arr_add(&at[2], notify_kind_name(d->kind));
        arr_add(&at[3], d->destination);
        arr_add(&at[4], notify_outcome_name(d->outcome));
        arr_add(&at[5], d->code);
        if (d->status > 0)
            arr_addf(&at[6], "%ld", d->status);
        else
            arr_add(&at[6], NULL);
        arr_addf(&at[7], "%lld", (long long)d->latency_ms);
        arr_add(&at[8], d->excerpt);
        arr_add(&at[9], d->error);
        arr_addf(&at[10], "%d", d->replay);
        if (d->outcome == NOTIFY_FAILED) {
            size_t len;
            char *job = notify_job_text(d, &len);
            arr_add(&dl[0], d->id);
            arr_add(&dl[1], notify_kind_name(d->kind));
            arr_add(&dl[2], d->destination);
            arr_add(&dl[3], d->kind == NOTIFY_WEBHOOK ? notify_delivery_endpoint_id(d) : NULL);
            arr_add(&dl[4], d->tenant_id[0] ? d->tenant_id : NULL);
            arr_add(&dl[5], d->kind == NOTIFY_WEBHOOK ? d->event_type : "message");
            arr_addf(&dl[6], "%d", d->attempt);
            arr_add(&dl[7], d->code);
            arr_add(&dl[8], d->error);
            arr_add(&dl[9], job ? job : "{}");
            free(job);
        }
        if (d->kind == NOTIFY_WEBHOOK &&
            (d->endpoint_gone || d->breaker_opened || d->breaker_closed)) {
            arr_add(&ep[0], notify_delivery_endpoint_id(d));
            arr_add(&ep[1], d->endpoint_gone    ? "gone"
                            : d->breaker_opened ? "failing"
                                                : "recovered");
        }
    }
    err = ab_db_begin(conn, errstr, size);
    if (!err && at[0].count > 0) {
        const char *p[11];
        for (int k = 0; k < 11; k++)
            p[k] = arr_end(&at[k]);
        err = ab_db_exec(conn, attempts_sql, 11, p, NULL, errstr, size);
    }
    if (!err && dl[0].count > 0) {
        const char *p[10];
        for (int k = 0; k < 10; k++)
            p[k] = arr_end(&dl[k]);
        err = ab_db_exec(conn, dead_sql, 10, p, NULL, errstr, size);
    }
    if (!err && ep[0].count > 0) {
        const char *p[2] = {arr_end(&ep[0]), arr_end(&ep[1])};
        err = ab_db_exec(conn, endpoint_sql, 2, p, NULL, errstr, size);
    }
    if (!err && done.count > 0) {
        const char *p[1] = {arr_end(&done)};
        err = ab_db_exec(conn, "DELETE FROM notify_scheduled WHERE id = ANY($1::uuid[])", 1, p,
                         NULL, errstr, size);
    }
    if (!err && released.count > 0) {
        const char *p[1] = {arr_end(&released)};
        err = ab_db_exec(conn,
                         "UPDATE notify_scheduled SET lease_until = NULL"
                         " WHERE id = ANY($1::uuid[])",
                         1, p, NULL, errstr, size);
    }
    if (!err)
        err = ab_db_commit(conn, errstr, size);
    else
        ab_db_rollback(conn);
    for (int k = 0; k < 11; k++)
        free(at[k].s);
    for (int k = 0; k < 10; k++)
        free(dl[k].s);
    free(ep[0].s);
    free(ep[1].s);
    free(done.s);
    free(released.s);
    return err;
}

/* ---- the schedule ---- */

enum ab_err notify_store_schedule(PGconn *conn, const char *const *ids, const int64_t *due_ms,
                                  const char *const *events, size_t n, char *errstr, size_t size)
{
    struct arr a_ids = {0}, a_due = {0}, a_events = {0};
    for (size_t i = 0; i < n; i++) {
        arr_add(&a_ids, ids[i]);
        arr_addf(&a_due, "%lld", (long long)due_ms[i]);
        arr_add(&a_events, events[i]);
    }
    const char *const p[] = {arr_end(&a_ids), arr_end(&a_due), arr_end(&a_events)};
    enum ab_err err = ab_db_exec(conn,
                                 "INSERT INTO notify_scheduled (id, due_at, event)"
                                 " SELECT id, to_timestamp(due / 1000.0), event"
                                 "   FROM unnest($1::uuid[], $2::bigint[], $3::text[])"
                                 "        AS t(id, due, event)"
                                 " ON CONFLICT (id) DO NOTHING",
                                 3, p, NULL, errstr, size);
    free(a_ids.s);
    free(a_due.s);
    free(a_events.s);
    return err;
}

static const char *const claim_sql =
    "UPDATE notify_scheduled SET lease_until = now() + $2::bigint * interval '1 millisecond'"
    " WHERE id IN (SELECT id FROM notify_scheduled"
    "               WHERE due_at <= now() AND (lease_until IS NULL OR lease_until < now())"
    "               ORDER BY due_at LIMIT $1 FOR UPDATE SKIP LOCKED)"
    " RETURNING id, event";

static const char *const next_sql =
    "SELECT greatest(0, (extract(epoch FROM due_at - now()) * 1000)::bigint)"
    "  FROM notify_scheduled WHERE lease_until IS NULL OR lease_until < now()"
    " ORDER BY due_at LIMIT 1";

enum ab_err notify_store_claim(PGconn *conn, int limit, long lease_ms, char ***ids, char ***events,
                               size_t *n, int64_t *next_in_ms, char *errstr, size_t size)
{
    char lim[16], lease[24];
    PGresult *res = NULL;
    enum ab_err err = AB_OK;
    *n = 0;
    *ids = *events = NULL;
    snprintf(lim, sizeof(lim), "%d", limit);
    snprintf(lease, sizeof(lease), "%ld", lease_ms);
    const char *const p[] = {lim, lease};
    if (limit > 0)
        err = ab_db_exec(conn, claim_sql, 2, p, &res, errstr, size);
    if (err)
        return err;
    int rows = res ? PQntuples(res) : 0;
    *ids = ab_xcalloc((size_t)rows + 1, sizeof(char *));
    *events = ab_xcalloc((size_t)rows + 1, sizeof(char *));
    for (int r = 0; r < rows; r++) {
        (*ids)[r] = ab_xstrdup(PQgetvalue(res, r, 0));
        (*events)[r] = ab_xstrdup(PQgetvalue(res, r, 1));
    }
    *n = (size_t)rows;
    PQclear(res);
    err = ab_db_exec(conn, next_sql, 0, NULL, &res, errstr, size);
    if (err)
        return err;
    *next_in_ms = PQntuples(res) ? strtoll(PQgetvalue(res, 0, 0), NULL, 10) : -1;
    PQclear(res);
    return AB_OK;
}

/* One count(*) query's answer. */
static enum ab_err count_rows(PGconn *conn, const char *sql, int64_t *count, char *errstr,
                              size_t size)
{
    PGresult *res = NULL;
    enum ab_err err = ab_db_exec(conn, sql, 0, NULL, &res, errstr, size);
    if (err)
        return err;
    *count = strtoll(PQgetvalue(res, 0, 0), NULL, 10);
    PQclear(res);
    return AB_OK;
}

enum ab_err notify_store_backlog(PGconn *conn, int64_t *count, char *errstr, size_t size)
{
    return count_rows(conn, "SELECT count(*) FROM notify_scheduled", count, errstr, size);
}

enum ab_err notify_store_dead_letters_held(PGconn *conn, int64_t *count, char *errstr, size_t size)
{
    return count_rows(conn, "SELECT count(*) FROM notify_dead_letters WHERE replayed_at IS NULL",
                      count, errstr, size);
}

enum ab_err notify_store_disabled(PGconn *conn, char ***ids, size_t *n, char *errstr, size_t size)
{
    PGresult *res = NULL;
    *n = 0;
    *ids = NULL;
    enum ab_err err = ab_db_exec(conn,
                                 "SELECT endpoint_id FROM webhook_endpoint_state"
                                 " WHERE disabled_at IS NOT NULL",
                                 0, NULL, &res, errstr, size);
    if (err)
        return err;
    int rows = PQntuples(res);
    *ids = ab_xcalloc((size_t)rows + 1, sizeof(char *));
    for (int r = 0; r < rows; r++)
        (*ids)[r] = ab_xstrdup(PQgetvalue(res, r, 0));
    *n = (size_t)rows;
    PQclear(res);
    return AB_OK;
}

void notify_store_strings_free(char **s, size_t n)
{
    for (size_t i = 0; s != NULL && i < n; i++)
        free(s[i]);
    free(s);
}
