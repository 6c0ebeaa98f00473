/* The routes of agentbus.webhook.received (webhook_route.h). The event says everything the
 * route needs (ingress rendered the template and chose the session when it accepted the
 * webhook), so a hook changed or deleted since routes its accepted events as they were.
 * Names are resolved here, in the hook's tenant: the agent of run_agent, the person or
 * agent of send_message. What a name does not resolve to (no such agent, two of them, no
 * tenant) is final: the event is dead-lettered with the reason. */
#include "services/dispatcher/webhook_route.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/db.h"
#include "common/log.h"
#include "common/util.h"

#define DB_WAIT_MS      5000
#define SOURCE          "/agentbus/dispatcher"
#define CUSTOM_ATTEMPTS 10 /* then a custom topic that cannot be written dead-letters */

struct webhook {
    const json_t *data;
    const char *hook_id, *action, *tenant, *agent, *session_key, *text;
    const json_t *target, *payload;
    const char *channel, *peer; /* send_message */
};

static const char *str(const json_t *obj, const char *name)
{
    return json_string_value(json_object_get(obj, name));
}

static enum ab_err bad(char *reason, size_t size, const char *what)
{
    snprintf(reason, size, "webhook.received: %s", what);
    return AB_ERR_INVALID;
}

static enum ab_err parse(const struct ab_event *ev, struct webhook *w, char *reason, size_t size)
{
    memset(w, 0, sizeof(*w));
    w->data = ev->data;
    w->hook_id = str(json_object_get(ev->data, "hook"), "id");
    w->action = str(ev->data, "action");
    w->tenant = str(ev->data, "tenant");
    w->agent = str(ev->data, "agent");
    w->session_key = str(ev->data, "session_key");
    w->text = str(ev->data, "text");
    w->target = json_object_get(ev->data, "target");
    w->payload = json_object_get(ev->data, "payload");
    w->channel = str(w->target, "channel");
    w->peer = str(w->target, "peer");
    if (!ab_uuid_valid(ev->id))
        return bad(reason, size, "the event id must be a UUID");
    if (w->hook_id == NULL || w->action == NULL)
        return bad(reason, size, "data.hook.id and data.action are required");
    bool message = strcmp(w->action, "run_agent") == 0 || strcmp(w->action, "send_message") == 0;
    if (message && (w->text == NULL || w->text[0] == '\0'))
        return bad(reason, size, "the rendered text (data.text) is empty: nothing to send");
    if (message && (w->session_key == NULL || w->session_key[0] == '\0'))
        return bad(reason, size, "data.session_key is required");
    if (strcmp(w->action, "run_agent") == 0 && w->agent == NULL)
        return bad(reason, size, "run_agent needs data.agent");
    if (strcmp(w->action, "send_message") == 0 && (w->channel == NULL || w->peer == NULL))
        return bad(reason, size, "send_message needs data.target.channel and .peer");
    if (strcmp(w->action, "forward") == 0 && str(w->target, "url") == NULL)
        return bad(reason, size, "forward needs data.target.url");
    if (strcmp(w->action, "custom") == 0 && str(w->target, "topic") == NULL)
        return bad(reason, size, "custom needs data.target.topic");
    if (!message && strcmp(w->action, "forward") != 0 && strcmp(w->action, "custom") != 0)
        return bad(reason, size, "data.action must be send_message, run_agent, forward or custom");
    return AB_OK;
}

/* One row of a lookup by id or name (whatever the case); two rows are ambiguous. */
static enum ab_err lookup(PGconn *conn, const char *sql, int nparams, const char *const *params,
                          const char *what, const char *name, PGresult **out, char *reason,
                          size_t size)
{
    enum ab_err err = ab_db_exec(conn, sql, nparams, params, out, reason, size);
    if (err)
        return err;
    int n = PQntuples(*out);
    if (n == 1)
        return AB_OK;
    snprintf(reason, size, "webhook.received: %s %s%.200s%s", n == 0 ? "no" : "more than one", what,
             name ? " named " : "",
             name ? name
                  : " (the hook names none and there is "
                    "not exactly one)");
    PQclear(*out);
    *out = NULL;
    return AB_ERR_INVALID;
}

static enum ab_err resolve_tenant(PGconn *conn, const struct webhook *w, char id[AB_UUID_LEN + 1],
                                  char *reason, size_t size)
{
    PGresult *res = NULL;
    const char *const params[] = {w->tenant};
    enum ab_err err = lookup(conn,
                             "SELECT id::text FROM tenants WHERE $1::text IS NULL"
                             " OR id::text = lower($1) OR lower(name) = lower($1) LIMIT 2",
                             1, params, "tenant", w->tenant, &res, reason, size);
    if (err == AB_OK)
        snprintf(id, AB_UUID_LEN + 1, "%s", PQgetvalue(res, 0, 0));
    PQclear(res);
    return err;
}

/* The message's target: an agent (run_agent, send_message to "agent") or a member. */
static enum ab_err resolve_target(PGconn *conn, const struct webhook *w, const char *tenant_id,
                                  json_t **target, char *reason, size_t size)
{
    PGresult *res = NULL;
    bool member = strcmp(w->action, "send_message") == 0 && strcmp(w->channel, "feishu") == 0;
    const char *name = strcmp(w->action, "run_agent") == 0 ? w->agent : w->peer;
    const char *const params[] = {tenant_id, name};
    enum ab_err err =
        member ? lookup(conn,
                        "SELECT id::text, name, 'member' FROM org_members WHERE tenant_id = $1"
                        " AND (id::text = lower($2) OR lower(name) = lower($2)) LIMIT 2",
                        2, params, "member", name, &res, reason, size)
               : lookup(conn,
                        "SELECT id::text, name, type || '_agent' FROM agents WHERE tenant_id = $1"
                        " AND (id::text = lower($2) OR lower(name) = lower($2)) LIMIT 2",
                        2, params, "agent", name, &res, reason, size);
    if (err == AB_OK)
        *target = json_pack("{s:s,s:s,s:s}", "type", PQgetvalue(res, 0, 2), "id",
                            PQgetvalue(res, 0, 0), "name", PQgetvalue(res, 0, 1));
    PQclear(res);
    return err;
}

/* Resolves the names the action needs (read only). */
static enum ab_err prepare(struct dispatch_ctx *ctx, const struct webhook *w,
                           char tenant_id[AB_UUID_LEN + 1], json_t **target, char *reason,
                           size_t size)
{
    PGconn *conn = NULL;
    bool message = strcmp(w->action, "forward") != 0 && strcmp(w->action, "custom") != 0;
    if (!message && w->tenant == NULL)
        return AB_OK; /* a forward or custom event names nobody: nothing to look up */
    enum ab_err err = ab_db_acquire(ctx->svc->db, DB_WAIT_MS, &conn, reason, size);
    if (err)
        return err;
    err = resolve_tenant(conn, w, tenant_id, reason, size);
    if (!err && message && strcmp(w->channel ? w->channel : "", "chat") != 0)
        err = resolve_target(conn, w, tenant_id, target, reason, size);
    ab_db_release(ctx->svc->db, conn);
    return dispatch_db_outcome(err);
}

static enum ab_err produce(struct dispatch_ctx *ctx, const struct ab_event *in, enum ab_topic topic,
                           const char *type, const char *suffix, const char *key, json_t *data,
                           char *reason, size_t size)
{
    struct ab_event *ev =
        ab_event_new_derived(type, SOURCE, in->subject, data, "%s:%s", in->id, suffix);
    enum ab_err err = ab_producer_send_event(ctx->svc->producer, topic, key, ev, reason, size);
    ab_event_free(ev);
    return dispatch_kafka_outcome(err);
}

/* run_agent and send_message to an agent or a person: an agentbus.message.sent from the
 * webhook, which the message routes take on (inbox, LLM, Feishu), in the session's
 * conversation for an agent. */
static enum ab_err send_message(struct dispatch_ctx *ctx, const struct ab_event *in,
                                const struct webhook *w, const char *tenant_id, json_t *target,
                                char *reason, size_t size)
{
    char name[160], key[128];
    snprintf(name, sizeof(name), "webhook %s", w->hook_id);
    bool member = strcmp(json_string_value(json_object_get(target, "type")), "member") == 0;
    json_t *data =
        json_pack("{s:s,s:{s:s,s:s,s:s},s:O,s:s,s:s,s:s,s:i,s:s}", "tenant_id", tenant_id, "sender",
                  "type", "webhook", "name", name, "hook_id", w->hook_id, "target", target,
                  "channel", member ? "feishu" : "agent", "content", w->text, "session_key",
                  w->session_key, "hops", 0, "webhook_event_id", in->id);
    if (data == NULL)
        return bad(reason, size, "the message cannot be built");
    snprintf(key, sizeof(key), "session:%s:%016llx",
             json_string_value(json_object_get(target, "id")),
             (unsigned long long)ab_fnv1a(AB_FNV1A_INIT, w->session_key, strlen(w->session_key)));
    return produce(ctx, in, AB_TOPIC_INGRESS, "agentbus.message.sent", "message", key, data, reason,
                   size);
}

/* send_message to a Feishu group chat: a delivery job straight to the notifier. */
static enum ab_err send_to_chat(struct dispatch_ctx *ctx, const struct ab_event *in,
                                const struct webhook *w, const char *tenant_id, char *reason,
                                size_t size)
{
    char name[160], key[300];
    snprintf(name, sizeof(name), "webhook %s", w->hook_id);
    snprintf(key, sizeof(key), "feishu:chat:%.250s", w->peer);
    json_t *data =
        json_pack("{s:s,s:{s:s,s:s},s:{s:s,s:s,s:s},s:s,s:s,s:s}", "tenant_id", tenant_id, "sender",
                  "type", "webhook", "name", name, "target", "type", "chat", "id", w->peer, "name",
                  w->peer, "channel", "feishu", "content", w->text, "webhook_event_id", in->id);
    if (data == NULL)
        return bad(reason, size, "the message cannot be built");
    return produce(ctx, in, AB_TOPIC_NOTIFY, "agentbus.notify.feishu", "notify", key, data, reason,
                   size);
}

/* forward: the payload to the hook's URL, as an outgoing-webhook job of the notifier (its
 * SSRF guard, retries, dead letters). */
static enum ab_err forward(struct dispatch_ctx *ctx, const struct ab_event *in,
                           const struct webhook *w, const char *tenant_id, char *reason,
                           size_t size)
{
    char key[160];
    snprintf(key, sizeof(key), "forward:%s", w->hook_id);
    json_t *data =
        json_pack("{s:{s:s,s:O,s:O},s:s,s:O,s:s}", "forward", "hook_id", w->hook_id, "url",
                  json_object_get(w->target, "url"), "method", json_object_get(w->target, "method"),
                  "event", "webhook_forward", "payload", w->payload ? w->payload : json_null(),
                  "webhook_event_id", in->id);
    if (data != NULL && tenant_id[0] != '\0')
        json_object_set_new(data, "tenant_id", json_string(tenant_id));
    if (data == NULL)
        return bad(reason, size, "the forward job cannot be built");
    return produce(ctx, in, AB_TOPIC_NOTIFY, "agentbus.notify.webhook", "forward", key, data,
                   reason, size);
}

/* custom: the event itself, as received, on the team's topic (named as configured, without
 * agentbus' prefix: it is theirs). */
static enum ab_err custom(struct dispatch_ctx *ctx, const struct ab_consumed *msg,
                          const struct webhook *w, char *reason, size_t size)
{
    const char *topic = str(w->target, "topic");
    enum ab_err err = ab_producer_send(ctx->svc->producer, topic, msg->key, msg->key_len,
                                       msg->value, msg->value_len, NULL, 0, reason, size);
    if (err == AB_ERR_FORBIDDEN || err == AB_ERR_NOT_FOUND)
        err = AB_ERR_INVALID; /* not the team's topic to write, or none: it will stay so */
    err = dispatch_kafka_outcome(err);
    /* A topic that does not come (auto-creation off, a typo) must not hold the partition,
     * and every agent's message behind this event, for ever. */
    if (err != AB_OK && err != AB_ERR_INVALID && err != AB_ERR_TOO_LARGE &&
        msg->attempt >= CUSTOM_ATTEMPTS) {
        char why[512];
        snprintf(why, sizeof(why), "%s", reason);
        snprintf(reason, size, "webhook.received: topic %.250s not written after %d attempts: %s",
                 topic, msg->attempt, why);
        err = AB_ERR_INVALID;
    }
    return err;
}

enum ab_err dispatch_webhook_received(struct dispatch_ctx *ctx, const struct ab_consumed *msg,
                                      char *reason, size_t size)
{
    struct webhook w;
    char tenant_id[AB_UUID_LEN + 1] = "";
    json_t *target = NULL;
    const struct ab_event *ev = msg->event;
    enum ab_err err = parse(ev, &w, reason, size);
    if (!err)
        err = prepare(ctx, &w, tenant_id, &target, reason, size);
    if (!err && strcmp(w.action, "forward") == 0)
        err = forward(ctx, ev, &w, tenant_id, reason, size);
    else if (!err && strcmp(w.action, "custom") == 0)
        err = custom(ctx, msg, &w, reason, size);
    else if (!err && target == NULL)
        err = send_to_chat(ctx, ev, &w, tenant_id, reason, size);
    else if (!err)
        err = send_message(ctx, ev, &w, tenant_id, target, reason, size);
    json_decref(target);
    /* Journaled once routed: a dead letter is not in the journal (as for messages). */
    if (!err)
        err = dispatch_journal_only(ctx, msg, reason, size);
    if (!err) {
        ab_metric_inc(ctx->m_routed, (const char *const[]){"webhook", NULL}, 1);
        ab_debug("webhook event %s of hook %s routed (%s)", ev->id, w.hook_id, w.action);
    }
    return err;
}
