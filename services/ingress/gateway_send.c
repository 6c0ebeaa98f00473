/* send-message. The target is resolved inside the caller's tenant only: an exact name
 * (whatever the case) among its agents and members first, then a unique partial match
 * among the caller's own relationships; never a substring search across agents (Clawith's
 * cross-tenant bug S3). The answer comes only once the event is acknowledged by Kafka.
 * A message to an OpenClaw agent that is offline is accepted all the same (it waits in
 * that agent's inbox), and the answer says so. */
#include "services/ingress/gateway_send.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/crypto.h"
#include "common/db.h"
#include "common/envelope.h"
#include "common/log.h"
#include "common/util.h"

#define DB_WAIT_MS 2000
#define MESSAGE_ID_MAX 128
#define TARGET_MAX 200

struct target {
    char kind[8]; /* "agent" or "member" */
    char id[37];
    char name[512]; /* 100 characters of UTF-8 */
    char type[16]; /* agents: "openclaw" or "native" */
    bool reachable; /* members: has a Feishu id */
    char status[16]; /* agents: "online", "offline" or "never_seen" (routes_gateway.h) */
    char last_seen[32]; /* agents seen once: RFC 3339, UTC; else "" */
    long long seen_ago_s; /* seconds since last_seen */
};

/* A copy of text without leading and trailing white space. @ownership the caller frees. */
static char *trim_dup(const char *text)
{
    while (isspace((unsigned char)*text))
        text++;
    size_t len = strlen(text);
    while (len > 0 && isspace((unsigned char)text[len - 1]))
        len--;
    char *copy = ab_xmalloc(len + 1);
    memcpy(copy, text, len);
    copy[len] = '\0';
    return copy;
}

/* An agent's status (with $5 = gateway.offline_after_s), when it was last seen and how
 * many seconds ago: the last columns of a candidate agent. */
#define AGENT_SEEN_COLUMNS(a)                                                              \
    ", " INGRESS_AGENT_STATUS_SQL(a, "$5::integer") ", coalesce(to_char(" a ".last_seen_at"     \
    " AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'), ''),"                            \
    " coalesce(floor(extract(epoch FROM now() - " a ".last_seen_at))::bigint::text, '')"

/* Candidates, exact names first; then, only if there is none, the caller's relationships.
 * strpos instead of LIKE: the caller's text is never a pattern. */
static const char *const exact_sql =
    "SELECT 'agent', id::text, name, type, true" AGENT_SEEN_COLUMNS("agents") " FROM agents"
    " WHERE tenant_id = $1 AND lower(name) = lower($2) AND id <> $3 AND $4 <> 'feishu'"
    " UNION ALL SELECT 'member', id::text, name, '',"
    " coalesce(nullif(feishu_user_id, ''), nullif(feishu_open_id, '')) IS NOT NULL, '', '', ''"
    " FROM org_members"
    " WHERE tenant_id = $1 AND lower(name) = lower($2) AND $4 <> 'agent'"
    " ORDER BY 3 LIMIT 11";
static const char *const related_sql =
    "SELECT 'agent', a.id::text, a.name, a.type, true" AGENT_SEEN_COLUMNS("a")
    " FROM agent_agent_relationships r"
    " JOIN agents a ON a.id = r.target_agent_id"
    " WHERE r.agent_id = $3 AND a.tenant_id = $1 AND strpos(lower(a.name), lower($2)) > 0"
    " AND $4 <> 'feishu'"
    " UNION ALL SELECT 'member', m.id::text, m.name, '',"
    " coalesce(nullif(m.feishu_user_id, ''), nullif(m.feishu_open_id, '')) IS NOT NULL,"
    " '', '', '' FROM agent_member_relationships r"
    " JOIN org_members m ON m.id = r.member_id"
    " WHERE r.agent_id = $3 AND m.tenant_id = $1 AND strpos(lower(m.name), lower($2)) > 0"
    " AND $4 <> 'agent' ORDER BY 3 LIMIT 11";

/* @returns AB_OK with *t, AB_ERR_NOT_FOUND, or AB_ERR_CONFLICT with *candidates (a JSON
 * array the caller decrefs). */
static enum ab_err resolve_target(PGconn *conn, const struct ingress_agent *me,
                                  const char *name, const char *channel,
                                  const char *offline_after_s, struct target *t,
                                  json_t **candidates, char *errstr, size_t size)
{
    const char *const params[] = { me->tenant_id, name, me->id, channel, offline_after_s };
    const char *const queries[] = { exact_sql, related_sql };
    for (int q = 0; q < 2; q++) {
        PGresult *res = NULL;
        enum ab_err err = ab_db_exec(conn, queries[q], 5, params, &res, errstr, size);
        if (err)
            return err;
        int n = PQntuples(res);
        if (n == 1) {
            snprintf(t->kind, sizeof(t->kind), "%s", PQgetvalue(res, 0, 0));
            snprintf(t->id, sizeof(t->id), "%s", PQgetvalue(res, 0, 1));
            snprintf(t->name, sizeof(t->name), "%s", PQgetvalue(res, 0, 2));
            snprintf(t->type, sizeof(t->type), "%s", PQgetvalue(res, 0, 3));
            t->reachable = strcmp(PQgetvalue(res, 0, 4), "t") == 0;
            snprintf(t->status, sizeof(t->status), "%s", PQgetvalue(res, 0, 5));
            snprintf(t->last_seen, sizeof(t->last_seen), "%s", PQgetvalue(res, 0, 6));
            t->seen_ago_s = strtoll(PQgetvalue(res, 0, 7), NULL, 10);
        } else if (n > 1) {
            *candidates = json_array();
            for (int i = 0; i < n; i++)
                json_array_append_new(*candidates,
                                      json_pack("{s:s,s:s}", "name", PQgetvalue(res, i, 2),
                                                "type", strcmp(PQgetvalue(res, i, 0), "agent") == 0
                                                            ? "agent" : "human"));
        }
        PQclear(res);
        if (n == 1)
            return AB_OK;
        if (n > 1)
            return AB_ERR_CONFLICT;
    }
    return AB_ERR_NOT_FOUND;
}

/* A message_id makes a retry the same event: the first send under an id is remembered,
 * and another message under it is refused. event_id receives the event's id. */
static enum ab_err remember_send(PGconn *conn, const struct ingress_agent *me,
                                 const char *message_id, const struct target *t,
                                 const char *content, char event_id[AB_UUID_LEN + 1],
                                 char *errstr, size_t size)
{
    char name[256], hash[65];
    PGresult *res = NULL;
    snprintf(name, sizeof(name), "send:%s:%s", me->id, message_id);
    ab_uuid_derive(name, event_id);
    ab_sha256_hex(content, strlen(content), hash);
    const char *const params[] = { me->id, message_id, event_id, t->id, hash };
    enum ab_err err = ab_db_exec(conn,
                                 "INSERT INTO gateway_sends (agent_id, message_id, event_id,"
                                 " target_id, content_sha256) VALUES ($1, $2, $3, $4, $5)"
                                 " ON CONFLICT (agent_id, message_id) DO NOTHING",
                                 5, params, NULL, errstr, size);
    if (err == AB_OK)
        err = ab_db_exec(conn,
                         "SELECT target_id::text = $4 AND content_sha256 = $5 FROM gateway_sends"
                         " WHERE agent_id = $1 AND message_id = $2 AND $3::uuid IS NOT NULL",
                         5, params, &res, errstr, size);
    if (err == AB_OK && (PQntuples(res) != 1 || strcmp(PQgetvalue(res, 0, 0), "t") != 0)) {
        snprintf(errstr, size, "message_id \"%s\" was used for a different message", message_id);
        err = AB_ERR_CONFLICT;
    }
    PQclear(res);
    return err;
}

enum ab_err ingress_publish_message(struct ingress_admin *admin, const char *event_id,
                                    const struct ingress_agent *sender, const char *target_type,
                                    const char *target_id, const char *target_name,
                                    const char *channel, const char *content,
                                    const char *message_id, const char *in_reply_to,
                                    char *errstr, size_t size)
{
    char key[128];
    bool to_agent = strcmp(target_type, "member") != 0;
    if (to_agent)
        snprintf(key, sizeof(key), "agents:%s:%s",
                 strcmp(sender->id, target_id) < 0 ? sender->id : target_id,
                 strcmp(sender->id, target_id) < 0 ? target_id : sender->id);
    else
        snprintf(key, sizeof(key), "member:%s:%s", sender->id, target_id);
    json_t *data = json_pack("{s:s,s:{s:s,s:s,s:s},s:{s:s,s:s,s:s},s:s,s:s,s:s?,s:s?}",
                             "tenant_id", sender->tenant_id, "sender", "type", "agent", "id",
                             sender->id, "name", sender->name, "target", "type", target_type,
                             "id", target_id, "name", target_name, "channel", channel, "content",
                             content, "message_id", message_id, "in_reply_to", in_reply_to);
    if (data == NULL) {
        snprintf(errstr, size, "the message is not valid UTF-8");
        return AB_ERR_INVALID;
    }
    struct ab_event *ev = ab_event_new("agentbus.message.sent", "/agentbus/ingress/gateway",
                                       target_id, data);
    if (event_id != NULL) {
        free(ev->id);
        ev->id = ab_xstrdup(event_id);
    }
    enum ab_err err = ab_producer_send_event(admin->svc->producer, AB_TOPIC_INGRESS, key, ev,
                                             errstr, size);
    if (err == AB_OK)
        ab_info("message %s from %s to %s %s accepted", ev->id, sender->name, target_type,
                target_name);
    ab_event_free(ev);
    return err;
}

/* Reads and checks the body; answers the error itself and returns false when it is bad. */
static bool parse_send(struct ingress_admin *admin, const struct _u_request *req,
                       struct _u_response *resp, json_t **body, char **target, char **content,
                       const char **channel, const char **message_id)
{
    char errstr[512];
    size_t max = (size_t)ab_config_int(admin->svc->cfg, AB_OPT_GATEWAY_MAX_CONTENT_BYTES);
    if (ab_http_json_body(req, body, errstr, sizeof(errstr)) != AB_OK) {
        ab_http_error(resp, AB_ERR_INVALID, "%s", errstr);
        return false;
    }
    json_t *j_target = json_object_get(*body, "target");
    json_t *j_content = json_object_get(*body, "content");
    json_t *j_channel = json_object_get(*body, "channel");
    json_t *j_id = json_object_get(*body, "message_id");
    const char *problem = NULL;
    if (!json_is_object(*body))
        problem = "the body must be a JSON object";
    else if (!json_is_string(j_target) || json_string_length(j_target) == 0 ||
             json_string_length(j_target) > TARGET_MAX)
        problem = "\"target\" must be a name of 1 to 200 characters";
    else if (!json_is_string(j_content))
        problem = "\"content\" must be a string";
    else if (j_channel && !json_is_null(j_channel) && !json_is_string(j_channel))
        problem = "\"channel\" must be a string";
    else if (j_id && !json_is_null(j_id) &&
             (!json_is_string(j_id) || json_string_length(j_id) == 0 ||
              json_string_length(j_id) > MESSAGE_ID_MAX))
        problem = "\"message_id\" must be a string of 1 to 128 characters";
    if (problem != NULL) {
        ab_http_error(resp, AB_ERR_INVALID, "%s", problem);
        return false;
    }
    if (json_string_length(j_content) > max) {
        ab_http_error(resp, AB_ERR_TOO_LARGE, "\"content\" is longer than %zu bytes", max);
        return false;
    }
    *content = trim_dup(json_string_value(j_content));
    if ((*content)[0] == '\0') {
        ab_http_error(resp, AB_ERR_INVALID, "\"content\" is empty");
        return false;
    }
    *target = trim_dup(json_string_value(j_target));
    if ((*target)[0] == '\0') {
        ab_http_error(resp, AB_ERR_INVALID, "\"target\" is empty");
        return false;
    }
    /* Clawith's channel hints: none, "agent" or "feishu" ("lark" is Feishu abroad). */
    *channel = json_is_string(j_channel) ? json_string_value(j_channel) : "";
    if (strcasecmp(*channel, "lark") == 0 || strcasecmp(*channel, "feishu") == 0)
        *channel = "feishu";
    else if (strcasecmp(*channel, "agent") == 0)
        *channel = "agent";
    else if ((*channel)[0] != '\0') {
        ab_http_error(resp, AB_ERR_INVALID, "\"channel\" must be \"agent\" or \"feishu\"");
        return false;
    }
    *message_id = json_is_string(j_id) ? json_string_value(j_id) : NULL;
    return true;
}

/* "5 minutes": a duration the way a person says it, rounded down. Each unit starts at 2 of
 * it, so it is never "1 minutes". */
static void say_duration(long long s, char *out, size_t size)
{
    static const struct {
        long long below, unit;
        const char *name;
    } units[] = { { 120, 1, "seconds" }, { 7200, 60, "minutes" }, { 172800, 3600, "hours" },
                  { -1, 86400, "days" } };
    size_t i = 0;
    while (units[i].below >= 0 && s >= units[i].below)
        i++;
    snprintf(out, size, "%lld %s", s / units[i].unit, units[i].name);
}

/* Answers a resolved send the way Clawith's gateway does (status, target, type, message);
 * the message says when the target is an OpenClaw agent that is not online. */
static void answer_sent(struct _u_response *resp, const struct target *t)
{
    char message[1024], ago[48];
    bool agent = strcmp(t->kind, "agent") == 0;
    bool openclaw = agent && strcmp(t->type, "openclaw") == 0;
    if (openclaw && strcmp(t->status, "offline") == 0) {
        say_duration(t->seen_ago_s, ago, sizeof(ago));
        snprintf(message, sizeof(message),
                 "Message queued. %s is offline (last seen %s, %s ago); it will get the "
                 "message when it next polls.", t->name, t->last_seen, ago);
    } else if (openclaw && strcmp(t->status, "never_seen") == 0) {
        snprintf(message, sizeof(message),
                 "Message queued. %s has never connected to the gateway; it will get the "
                 "message when it first polls.", t->name);
    } else {
        snprintf(message, sizeof(message), "%s",
                 agent ? "Message queued. The reply will appear in your next poll."
                       : "Message queued for delivery on Feishu.");
    }
    ab_http_json(resp, 200,
                 json_pack("{s:s,s:s,s:s,s:s}", "status", "accepted", "target", t->name, "type",
                           openclaw ? "openclaw_agent" : agent ? "agent" : "human", "message",
                           message));
}

/* Resolves the target and, with a message_id, remembers the send; one connection, released
 * before Kafka is waited on. @returns AB_OK with *t and event_id ("" for a fresh id). */
static enum ab_err prepare_send(struct ingress_admin *admin, const struct ingress_agent *me,
                                const char *target, const char *channel, const char *content,
                                const char *message_id, struct target *t, json_t **candidates,
                                char event_id[AB_UUID_LEN + 1], char *errstr, size_t size)
{
    PGconn *conn = NULL;
    char offline_after_s[24];
    event_id[0] = '\0';
    snprintf(offline_after_s, sizeof(offline_after_s), "%lld",
             ab_config_int(admin->svc->cfg, AB_OPT_GATEWAY_OFFLINE_AFTER_S));
    enum ab_err err = ab_service_db_acquire(admin->svc, DB_WAIT_MS, &conn, errstr, size);
    if (err)
        return err;
    err = resolve_target(conn, me, target, channel, offline_after_s, t, candidates, errstr,
                         size);
    if (err == AB_OK && strcmp(t->kind, "member") == 0 && !t->reachable) {
        snprintf(errstr, size, "no available channel to reach %.400s: no Feishu user_id or open_id",
                 t->name);
        err = AB_ERR_INVALID;
    }
    if (err == AB_OK && message_id != NULL)
        err = remember_send(conn, me, message_id, t, content, event_id, errstr, size);
    ab_db_release(admin->svc->db, conn);
    return err;
}

static void send_message(const struct _u_request *req, struct _u_response *resp, void *ud)
{
    struct ingress_admin *admin = ud;
    struct ingress_agent me;
    struct target t;
    json_t *body = NULL, *candidates = NULL;
    char *target = NULL, *content = NULL, errstr[512], event_id[AB_UUID_LEN + 1];
    const char *channel = "", *message_id = NULL;
    if (!ingress_gateway_authenticate(admin, req, resp, &me) ||
        !parse_send(admin, req, resp, &body, &target, &content, &channel, &message_id))
        goto out;
    enum ab_err err = prepare_send(admin, &me, target, channel, content, message_id, &t,
                                   &candidates, event_id, errstr, sizeof(errstr));
    if (err == AB_OK) {
        const char *type = strcmp(t.kind, "member") == 0 ? "member"
                           : strcmp(t.type, "openclaw") == 0 ? "openclaw_agent" : "native_agent";
        err = ingress_publish_message(admin, event_id[0] ? event_id : NULL, &me, type, t.id,
                                      t.name, strcmp(t.kind, "member") == 0 ? "feishu" : "agent",
                                      content, message_id, NULL, errstr, sizeof(errstr));
    }
    if (err == AB_OK)
        answer_sent(resp, &t);
    else if (err == AB_ERR_NOT_FOUND)
        ab_http_error(resp, err, "Target '%s' not found. Check your relationships list.", target);
    else if (err == AB_ERR_CONFLICT && candidates != NULL)
        ab_http_json(resp, 409,
                     json_pack("{s:{s:s,s:s,s:O}}", "error", "code", "conflict", "message",
                               "the target is ambiguous: name one of the candidates exactly",
                               "candidates", candidates));
    else if (err == AB_ERR_CONFLICT || err == AB_ERR_INVALID || err == AB_ERR_TOO_LARGE)
        ab_http_error(resp, err, "%s", errstr);
    else /* until now this path answered without logging why */
        ingress_answer_failure(resp, err, "the message was not accepted; retry later", errstr);
out:
    json_decref(candidates);
    json_decref(body);
    free(target);
    free(content);
}

enum ab_err ingress_send_routes(struct ingress_admin *admin, struct ab_http_server *api)
{
    return ab_http_server_route(api, "POST", "/api/gateway/send-message", send_message, admin);
}
