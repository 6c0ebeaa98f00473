/* The inbox. A poll leases messages instead of handing them out for good: the rows it
 * takes (FOR UPDATE SKIP LOCKED, so concurrent polls split them) stay leased until
 * gateway.lease_s has passed, and come back in a later poll unless reported by then
 * (Clawith marks them delivered at once, and a lost answer loses them: bug D1). A report
 * completes a message once; the same report again changes nothing, a different one is 409.
 *
 * A long poll (wait=N) that finds nothing waits without holding a database connection,
 * registered with the inbox waker (inbox_waker.c) from before its first look, so nothing
 * that arrives between a look and the wait is missed. The dispatcher's NOTIFY, sent at the
 * commit of the inbox row, wakes it to look again at once. Correctness never rests on
 * NOTIFY alone; a poll also looks again
 *  - every POLL_RECHECK_MS: for notifications lost while the listener was reconnecting
 *    (it also wakes every poll once it is back), and rows skipped because another
 *    transaction held them at the time;
 *  - when the earliest lease of its agent runs out: an expiry is no event and nothing
 *    notifies it, so each look also says when that will be and the wait ends then (plus
 *    LEASE_MARGIN_MS for the clocks), and an expired lease reaches a waiting poll at once.
 * At shutdown the waker ends every wait, and the poll answers 200 with what it has. */
#include "services/ingress/gateway_inbox.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/crypto.h"
#include "common/db.h"
#include "common/log.h"
#include "common/util.h"
#include "services/ingress/gateway_send.h"
#include "services/ingress/inbox_waker.h"

#define DB_WAIT_MS 2000
#define POLL_WAIT_MAX_S 30
#define POLL_RECHECK_MS 2000 /* the safety net under NOTIFY (see the top) */
#define LEASE_MARGIN_MS 20   /* wake this long after a lease runs out by PostgreSQL's clock */

/* Leases up to $2 messages of agent $1 for $3 seconds and returns them, oldest first, in
 * Clawith's shape, each with the 10 turns of its conversation before it (the message
 * itself is "content", not history), each labelled by its real sender. The second column
 * is the milliseconds until the agent's earliest running lease ends (NULL: none); it is
 * exact only when nothing was leased (the UPDATE's rows are invisible to the rest of its
 * statement), which is the only time it is used. */
static const char *const lease_sql =
    "WITH picked AS ("
    "  SELECT id FROM gateway_messages"
    "  WHERE agent_id = $1 AND (status = 'pending' OR (status = 'leased' AND lease_until < now()))"
    "  ORDER BY created_at, id LIMIT $2 FOR UPDATE SKIP LOCKED),"
    " leased AS ("
    "  UPDATE gateway_messages g SET status = 'leased',"
    "   lease_until = now() + make_interval(secs => $3::int),"
    "   delivery_count = g.delivery_count + 1, delivered_at = coalesce(g.delivered_at, now())"
    "  FROM picked WHERE g.id = picked.id RETURNING g.*)"
    " SELECT coalesce(json_agg(json_build_object("
    "  'id', l.id, 'conversation_id', l.conversation_id,"
    "  'sender_agent_name', CASE WHEN l.sender_member_id IS NULL THEN l.sender_name END,"
    "  'sender_user_name', CASE WHEN l.sender_member_id IS NOT NULL THEN l.sender_name END,"
    "  'sender_user_id', l.sender_member_id, 'content', l.content, 'created_at', l.created_at,"
    "  'history', coalesce((SELECT json_agg(json_build_object("
    "    'role', CASE WHEN h.sender_agent_id = $1 THEN 'assistant' ELSE 'user' END,"
    "    'content', h.content, 'sender_name', h.sender_name, 'created_at', h.created_at)"
    "    ORDER BY h.created_at, h.id) FROM (SELECT * FROM chat_messages c"
    "    WHERE c.conversation_id = l.conversation_id AND c.id <> l.id"
    "    AND c.created_at <= l.created_at ORDER BY c.created_at DESC, c.id DESC"
    "    LIMIT 10) h), '[]'::json)) ORDER BY l.created_at, l.id), '[]'::json),"
    " (SELECT ceil(extract(epoch FROM min(lease_until) - now()) * 1000)::bigint"
    "  FROM gateway_messages WHERE agent_id = $1 AND status = 'leased' AND lease_until >= now())"
    " FROM leased l";

/* Whom agent $1 may address, in Clawith's shape, agents with their status (online after
 * $2 = gateway.offline_after_s; routes_gateway.h has the rule). Feishu is offered only for
 * people with a Feishu id; e-mail is not offered because nothing delivers it. */
static const char *const relationships_sql =
    "SELECT coalesce(json_agg(r.item ORDER BY r.type, r.name), '[]'::json) FROM ("
    " SELECT m.name, 'human' AS type, json_build_object('name', m.name, 'type', 'human',"
    "  'role', x.relation, 'description', x.description, 'channels',"
    "  CASE WHEN coalesce(nullif(m.feishu_user_id, ''), nullif(m.feishu_open_id, '')) IS NOT NULL"
    "   THEN '[\"feishu\"]'::json ELSE '[]'::json END) AS item"
    " FROM agent_member_relationships x JOIN org_members m ON m.id = x.member_id"
    " WHERE x.agent_id = $1"
    " UNION ALL SELECT a.name, 'agent', json_build_object('name', a.name, 'type', 'agent',"
    "  'role', x.relation, 'description', x.description, 'channels', '[\"agent\"]'::json,"
    "  'status', " INGRESS_AGENT_STATUS_SQL("a", "$2::integer") ")"
    " FROM agent_agent_relationships x JOIN agents a ON a.id = x.target_agent_id"
    " WHERE x.agent_id = $1) r";

/* The JSON text in the first column of res into *out. */
static enum ab_err json_column(PGresult *res, json_t **out, char *errstr, size_t size)
{
    *out = json_loads(PQgetvalue(res, 0, 0), 0, NULL);
    if (*out != NULL)
        return AB_OK;
    snprintf(errstr, size, "PostgreSQL answered JSON jansson cannot read");
    return AB_ERR_INTERNAL;
}

/* The relationships of agent_id (relationships_sql) into *out, on conn. */
static enum ab_err read_relationships(struct ingress_admin *admin, PGconn *conn,
                                      const char *agent_id, json_t **out, char *errstr,
                                      size_t size)
{
    char offline_text[24];
    PGresult *res = NULL;
    snprintf(offline_text, sizeof(offline_text), "%lld",
             ab_config_int(admin->svc->cfg, AB_OPT_GATEWAY_OFFLINE_AFTER_S));
    const char *const params[] = { agent_id, offline_text };
    enum ab_err err = ab_db_exec(conn, relationships_sql, 2, params, &res, errstr, size);
    if (err == AB_OK)
        err = json_column(res, out, errstr, size);
    PQclear(res);
    return err;
}

/* One look: leases up to limit messages; *lease_ms is lease_sql's second column (-1 for
 * NULL). relationships is read (and last_seen_at set) only when it is not NULL. */
static enum ab_err lease(struct ingress_admin *admin, const struct ingress_agent *me, int limit,
                         json_t **messages, json_t **relationships, int64_t *lease_ms,
                         char *errstr, size_t size)
{
    char limit_text[16], lease_text[16];
    PGconn *conn = NULL;
    PGresult *res = NULL;
    snprintf(limit_text, sizeof(limit_text), "%d", limit);
    snprintf(lease_text, sizeof(lease_text), "%lld",
             ab_config_int(admin->svc->cfg, AB_OPT_GATEWAY_LEASE_S));
    const char *const params[] = { me->id, limit_text, lease_text };
    enum ab_err err = ab_service_db_acquire(admin->svc, DB_WAIT_MS, &conn, errstr, size);
    if (err)
        return err;
    err = ab_db_exec(conn, lease_sql, 3, params, &res, errstr, size);
    if (err == AB_OK) {
        err = json_column(res, messages, errstr, size);
        *lease_ms = PQgetisnull(res, 0, 1) ? -1 : strtoll(PQgetvalue(res, 0, 1), NULL, 10);
        PQclear(res);
        res = NULL;
    }
    /* Once per request (the first look), not on every look of a long poll. */
    if (err == AB_OK && relationships != NULL)
        err = ab_db_exec(conn, "UPDATE agents SET last_seen_at = now() WHERE id = $1", 1, params,
                         NULL, errstr, size);
    if (err == AB_OK && relationships != NULL)
        err = read_relationships(admin, conn, me->id, relationships, errstr, size);
    PQclear(res);
    ab_db_release(admin->svc->db, conn);
    return err;
}

/* A query parameter as an integer in [min, max]; absent gives def. @returns false if bad. */
static bool query_int(const struct _u_request *req, const char *name, long min, long max,
                      long def, long *out)
{
    const char *text = u_map_get(req->map_url, name);
    char *end = NULL;
    if (text == NULL) {
        *out = def;
        return true;
    }
    *out = strtol(text, &end, 10);
    return end != text && *end == '\0' && *out >= min && *out <= max;
}

static void poll_inbox(const struct _u_request *req, struct _u_response *resp, void *ud)
{
    struct ingress_admin *admin = ud;
    struct ingress_agent me;
    json_t *messages = NULL, *relationships = NULL;
    char errstr[512];
    long batch = ab_config_int(admin->svc->cfg, AB_OPT_GATEWAY_POLL_BATCH), limit, wait_s;
    if (!ingress_gateway_authenticate(admin, req, resp, &me))
        return;
    if (!query_int(req, "limit", 1, batch, batch, &limit) ||
        !query_int(req, "wait", 0, POLL_WAIT_MAX_S, 0, &wait_s)) {
        ab_http_error(resp, AB_ERR_INVALID, "limit must be 1 to %ld and wait 0 to %d seconds",
                      batch, POLL_WAIT_MAX_S);
        return;
    }
    /* A long poll: see the top of the file for when it looks again. */
    struct ingress_waiter waiter;
    int64_t deadline = ab_monotonic_ms() + wait_s * 1000, lease_ms = -1;
    if (wait_s > 0)
        ingress_waker_register(admin->waker, &waiter, me.id);
    enum ab_err err = lease(admin, &me, (int)limit, &messages, &relationships, &lease_ms, errstr,
                            sizeof(errstr));
    while (err == AB_OK && json_array_size(messages) == 0 && !ab_service_stopping(admin->svc)) {
        int64_t now = ab_monotonic_ms(), until = now + POLL_RECHECK_MS;
        if (now >= deadline)
            break;
        if (lease_ms >= 0 && now + lease_ms + LEASE_MARGIN_MS < until)
            until = now + lease_ms + LEASE_MARGIN_MS;
        if (ingress_waker_wait(admin->waker, &waiter, until < deadline ? until : deadline) ==
            INGRESS_WAKE_STOPPED)
            break;
        json_decref(messages);
        messages = NULL;
        err = lease(admin, &me, (int)limit, &messages, NULL, &lease_ms, errstr, sizeof(errstr));
    }
    if (wait_s > 0)
        ingress_waker_unregister(admin->waker, &waiter);
    if (err == AB_OK && messages != NULL && relationships != NULL) {
        ab_http_json(resp, 200, json_pack("{s:o,s:o}", "messages", messages, "relationships",
                                          relationships));
        return;
    }
    json_decref(messages);
    json_decref(relationships);
    ingress_answer_failure(resp, err, "the inbox cannot be read now; retry later", errstr);
}

/* What report needs of the message it completes. */
struct reported {
    char sender_agent_id[37];  /* "" if the sender was a person */
    char sender_member_id[37]; /* "" if the sender was an agent */
    char sender_name[512]; /* 100 characters of UTF-8 */
    char sender_type[16];      /* the sending agent's type */
    char *stored_result;       /* on a conflict: the result reported first; owned */
};

/* Completes message_id with result, in one transaction, and stores the result as the
 * agent's turn in the conversation. @returns AB_OK (also when the same result was
 * reported before), AB_ERR_NOT_FOUND, or AB_ERR_CONFLICT for a different result. */
static enum ab_err complete(PGconn *conn, const struct ingress_agent *me, const char *message_id,
                            const char *result, struct reported *out, char *errstr, size_t size)
{
    char turn_id[AB_UUID_LEN + 1], name[128];
    PGresult *res = NULL;
    snprintf(name, sizeof(name), "result:%s", message_id);
    ab_uuid_derive(name, turn_id);
    const char *const params[] = { message_id, me->id, result, turn_id, me->name };
    enum ab_err err = ab_db_begin(conn, errstr, size);
    if (err == AB_OK)
        err = ab_db_exec(conn,
                         "SELECT g.status, g.result = $3, coalesce(g.sender_agent_id::text, ''),"
                         " coalesce(g.sender_member_id::text, ''), g.sender_name,"
                         " coalesce(a.type, ''), g.result FROM gateway_messages g"
                         " LEFT JOIN agents a ON a.id = g.sender_agent_id"
                         " WHERE g.id = $1 AND g.agent_id = $2 FOR UPDATE OF g",
                         3, params, &res, errstr, size);
    if (err == AB_OK && PQntuples(res) == 0) {
        snprintf(errstr, size, "Message not found");
        err = AB_ERR_NOT_FOUND;
    } else if (err == AB_OK) {
        snprintf(out->sender_agent_id, sizeof(out->sender_agent_id), "%s", PQgetvalue(res, 0, 2));
        snprintf(out->sender_member_id, sizeof(out->sender_member_id), "%s",
                 PQgetvalue(res, 0, 3));
        snprintf(out->sender_name, sizeof(out->sender_name), "%s", PQgetvalue(res, 0, 4));
        snprintf(out->sender_type, sizeof(out->sender_type), "%s", PQgetvalue(res, 0, 5));
        if (strcmp(PQgetvalue(res, 0, 0), "completed") == 0 &&
            strcmp(PQgetvalue(res, 0, 1), "t") != 0) {
            snprintf(errstr, size, "message %s was already reported with a different result",
                     message_id);
            out->stored_result = ab_xstrdup(PQgetvalue(res, 0, 6));
            err = AB_ERR_CONFLICT;
        }
    }
    PQclear(res);
    if (err == AB_OK)
        err = ab_db_exec(conn,
                         "UPDATE gateway_messages SET status = 'completed', result = $3,"
                         " completed_at = coalesce(completed_at, now()), lease_until = NULL"
                         " WHERE id = $1 AND agent_id = $2 AND status <> 'completed'",
                         3, params, NULL, errstr, size);
    if (err == AB_OK)
        err = ab_db_exec(conn,
                         "INSERT INTO chat_messages (id, tenant_id, conversation_id, role,"
                         " sender_agent_id, sender_name, content)"
                         " SELECT $4, g.tenant_id, g.conversation_id, 'assistant', $2, $5, $3"
                         " FROM gateway_messages g WHERE g.id = $1 AND g.conversation_id IS NOT NULL"
                         " ON CONFLICT (id) DO NOTHING",
                         5, params, NULL, errstr, size);
    if (err == AB_OK)
        err = ab_db_commit(conn, errstr, size);
    if (err)
        ab_db_rollback(conn);
    return err;
}

/* Sends the result back to whoever sent the message: an OpenClaw agent finds it in its
 * next poll, a person gets it on Feishu. A native sender's conversation already holds the
 * result; answering it again would let two agents reply to each other for ever (the LLM
 * worker's hop limit governs that exchange). The event id is derived from the message, so
 * a retried report re-sends the same event and nothing is delivered twice. */
static enum ab_err route_reply(struct ingress_admin *admin, const struct ingress_agent *me,
                               const char *message_id, const char *result,
                               const struct reported *r, char *errstr, size_t size)
{
    char event_id[AB_UUID_LEN + 1], name[128];
    /* The same id as the result's chat turn (complete()): the dispatcher's chat message for
     * this event is then that row, not a second copy of it. */
    snprintf(name, sizeof(name), "result:%s", message_id);
    ab_uuid_derive(name, event_id);
    if (r->sender_member_id[0] != '\0')
        return ingress_publish_message(admin, event_id, me, "member", r->sender_member_id,
                                       r->sender_name, "feishu", result, NULL, message_id,
                                       errstr, size);
    if (r->sender_agent_id[0] != '\0' && strcmp(r->sender_type, "openclaw") == 0)
        return ingress_publish_message(admin, event_id, me, "openclaw_agent", r->sender_agent_id,
                                       r->sender_name, "agent", result, NULL, message_id, errstr,
                                       size);
    return AB_OK;
}

static void report(const struct _u_request *req, struct _u_response *resp, void *ud)
{
    struct ingress_admin *admin = ud;
    struct ingress_agent me;
    struct reported r = { 0 };
    json_t *body = NULL;
    char errstr[512];
    PGconn *conn = NULL;
    size_t max = (size_t)ab_config_int(admin->svc->cfg, AB_OPT_GATEWAY_MAX_CONTENT_BYTES);
    if (!ingress_gateway_authenticate(admin, req, resp, &me))
        return;
    enum ab_err err = ab_http_json_body(req, &body, errstr, sizeof(errstr));
    json_t *j_id = json_object_get(body, "message_id"), *j_result = json_object_get(body, "result");
    const char *message_id = json_string_value(j_id), *result = json_string_value(j_result);
    if (err == AB_OK && (!ab_uuid_valid(message_id) || !json_is_string(j_result))) {
        snprintf(errstr, sizeof(errstr), "the body must be {\"message_id\": UUID, \"result\": text}");
        err = AB_ERR_INVALID;
    } else if (err == AB_OK && json_string_length(j_result) > max) {
        snprintf(errstr, sizeof(errstr), "\"result\" is longer than %zu bytes", max);
        err = AB_ERR_TOO_LARGE;
    } else if (err == AB_OK && strspn(result, " \t\r\n") == strlen(result)) {
        snprintf(errstr, sizeof(errstr), "\"result\" is empty");
        err = AB_ERR_INVALID;
    }
    /* One spelling of the id, so a retry in other letter case derives the same ids. */
    char id[AB_UUID_LEN + 1] = "?";
    for (int i = 0; err == AB_OK && i <= AB_UUID_LEN; i++)
        id[i] = (char)tolower((unsigned char)message_id[i]);
    if (err == AB_OK)
        err = ab_service_db_acquire(admin->svc, DB_WAIT_MS, &conn, errstr, sizeof(errstr));
    if (err == AB_OK) {
        err = complete(conn, &me, id, result, &r, errstr, sizeof(errstr));
        ab_db_release(admin->svc->db, conn);
    }
    bool stored = err == AB_OK;
    if (err == AB_OK)
        err = route_reply(admin, &me, id, result, &r, errstr, sizeof(errstr));
    if (err == AB_ERR_CONFLICT && r.stored_result != NULL) {
        /* The reply of the first report may never have left (its answer was a 503): send
         * it now, under its own derived id, before refusing this one. */
        char why[512];
        if (route_reply(admin, &me, id, r.stored_result, &r, why, sizeof(why)) != AB_OK)
            ab_warn("reply of %s not re-sent: %s", id, why);
    }
    if (err == AB_OK)
        ab_http_json(resp, 200, json_pack("{s:s}", "status", "ok"));
    else if (!ab_err_is_retriable(err) && err != AB_ERR_INTERNAL)
        ab_http_error(resp, err, "%s", errstr);
    else
        ingress_answer_failure(resp, err,
                               stored ? "the result is stored but its reply is not sent yet: "
                                        "retry the same report"
                                      : "the report was not stored; retry it",
                               errstr);
    free(r.stored_result);
    json_decref(body);
}

enum ab_err ingress_inbox_routes(struct ingress_admin *admin, struct ab_http_server *api)
{
    enum ab_err err = ab_http_server_route(api, "GET", "/api/gateway/poll", poll_inbox, admin);
    if (err == AB_OK)
        err = ab_http_server_route(api, "POST", "/api/gateway/report", report, admin);
    return err;
}
