/* The routes of agentbus.message.sent. Each runs in two steps:
 *
 *  1. One PostgreSQL transaction: the journal entry, the check that sender and target are
 *     agents (or a member) of the event's tenant, and the route's own rows (conversation,
 *     chat message, inbox row). Either all of it commits or none. A system notice has no
 *     sender to check and writes only the inbox row: it is no turn of a conversation.
 *  2. Only after the commit, the events the route produces, each with an id derived from
 *     the message's id and acknowledged by Kafka before the offset is stored.
 *
 * A crash between or inside the steps makes Kafka hand the message over again; step 1
 * then writes nothing new (ON CONFLICT, the upsert lands on the same conversation) and
 * step 2 produces the same ids again, which consumers deduplicate. So a message is routed
 * at least once and counted once, and never produced for a transaction that rolled back. */
#include "services/dispatcher/message_route.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/crypto.h"
#include "common/db.h"
#include "common/log.h"
#include "services/dispatcher/conversation.h"
#include "services/dispatcher/message.h"

#define DB_WAIT_MS 5000
#define SOURCE "/agentbus/dispatcher"
#define PARTY_TYPE_MAX 16 /* "openclaw", "native", "member" */

/* FOR KEY SHARE holds the rows until commit: an agent deleted meanwhile waits for us
 * rather than leaving an inbox row that points nowhere. */
static const char *const agent_sql =
    "SELECT type FROM agents WHERE id = $1 AND tenant_id = $2 FOR KEY SHARE";
static const char *const member_sql =
    "SELECT 'member' FROM org_members WHERE id = $1 AND tenant_id = $2 FOR KEY SHARE";
/* A conversation of tenant $2 that agent $3 takes part in; locked like the agents, so the
 * inbox row never points at a conversation deleted meanwhile. */
static const char *const conversation_sql =
    "SELECT 1 FROM conversations WHERE id = $1 AND tenant_id = $2"
    " AND $3::uuid IN (agent_low, agent_high) FOR KEY SHARE";

/* The type of the agent (or "member") id in tenant_id, or "" when there is none. */
static enum ab_err party_type(PGconn *conn, const char *sql, const char *id,
                              const char *tenant_id, char type[PARTY_TYPE_MAX], char *reason,
                              size_t size)
{
    PGresult *res = NULL;
    const char *const params[] = { id, tenant_id };
    enum ab_err err = ab_db_exec(conn, sql, 2, params, &res, reason, size);
    if (err)
        return err;
    snprintf(type, PARTY_TYPE_MAX, "%s", PQntuples(res) == 1 ? PQgetvalue(res, 0, 0) : "");
    PQclear(res);
    return AB_OK;
}

/* Agents write only within their tenant (Clawith's cross-tenant bugs S3/S4): an event that
 * says otherwise, or names someone deleted since, can never be routed. */
static enum ab_err check_parties(PGconn *conn, const struct dispatch_message *m, char *reason,
                                 size_t size)
{
    char type[PARTY_TYPE_MAX];
    enum ab_err err = AB_OK;
    if (!m->system_sender && !m->webhook_sender) { /* neither is an agent of any tenant */
        err = party_type(conn, agent_sql, m->sender_id, m->tenant_id, type, reason, size);
        if (!err && type[0] == '\0') {
            snprintf(reason, size, "message.sent: sender agent %s does not exist in tenant %s",
                     m->sender_id, m->tenant_id);
            return AB_ERR_INVALID;
        }
    }
    if (!err)
        err = party_type(conn, m->agent_type ? agent_sql : member_sql, m->target_id,
                         m->tenant_id, type, reason, size);
    if (!err && type[0] == '\0') {
        snprintf(reason, size, "message.sent: target %s %s does not exist in tenant %s",
                 m->target_kind, m->target_id, m->tenant_id);
        return AB_ERR_INVALID;
    }
    if (!err && m->agent_type && strcmp(type, m->agent_type) != 0) {
        snprintf(reason, size, "message.sent: target agent %s is a %s agent, not %s",
                 m->target_id, type, m->agent_type);
        return AB_ERR_INVALID;
    }
    return err;
}

/* The conversation a system notice names must be one its target is part of, in the
 * event's tenant: the notice shows up in that conversation of the target's inbox. */
static enum ab_err check_notice_conversation(PGconn *conn, const struct dispatch_message *m,
                                             char *reason, size_t size)
{
    PGresult *res = NULL;
    const char *const params[] = { m->conversation_id, m->tenant_id, m->target_id };
    enum ab_err err = ab_db_exec(conn, conversation_sql, 3, params, &res, reason, size);
    if (err)
        return err;
    if (PQntuples(res) == 0) {
        snprintf(reason, size,
                 "message.sent: data.conversation_id %s is not a conversation of agent %s in "
                 "tenant %s",
                 m->conversation_id, m->target_id, m->tenant_id);
        err = AB_ERR_INVALID;
    }
    PQclear(res);
    return err;
}

/* The agent's message as a turn of the agents' conversation, keyed by the event id, so a
 * redelivery inserts nothing. */
static enum ab_err write_chat_message(PGconn *conn, const struct dispatch_message *m,
                                      char *reason, size_t size)
{
    const char *sender_id = m->webhook_sender ? NULL : m->sender_id;
    const char *const chat[] = { m->event_id, m->tenant_id,   m->conversation_id,
                                 sender_id,   m->sender_name, m->content };
    return ab_db_exec(conn,
                      "INSERT INTO chat_messages (id, tenant_id, conversation_id, role,"
                      " sender_agent_id, sender_name, content)"
                      " VALUES ($1, $2, $3, 'user', $4, $5, $6)"
                      " ON CONFLICT (id) DO NOTHING",
                      6, chat, NULL, reason, size);
}

/* The inbox row the target finds at its next poll, keyed by the event id, so a redelivery
 * inserts nothing (and a row already leased or completed stays as it is). A system notice
 * has no sender id (NULL, which ingress's poll shows as an agent's message named by
 * sender_name) and perhaps no conversation. A new row also notifies
 * AB_DB_CHANNEL_GATEWAY_INBOX with the target's id, which wakes its long polls in ingress:
 * PostgreSQL sends the notification at commit, and not at all on a rollback, so a woken
 * poll always finds the row (a redelivery inserts nothing and so notifies nothing). */
static enum ab_err write_inbox(PGconn *conn, const struct dispatch_message *m, char *reason,
                               size_t size)
{
    const char *sender_id = m->system_sender || m->webhook_sender ? NULL : m->sender_id;
    const char *conversation_id = m->conversation_id[0] ? m->conversation_id : NULL;
    const char *const inbox[] = { m->event_id, m->tenant_id,   m->target_id,
                                  sender_id,   m->sender_name, conversation_id,
                                  m->content,  AB_DB_CHANNEL_GATEWAY_INBOX };
    return ab_db_exec(conn,
                      "WITH added AS (INSERT INTO gateway_messages (id, tenant_id, agent_id,"
                      " sender_agent_id, sender_name, conversation_id, content, status)"
                      " VALUES ($1, $2, $3, $4, $5, $6, $7, 'pending')"
                      " ON CONFLICT (id) DO NOTHING RETURNING agent_id)"
                      " SELECT pg_notify($8, agent_id::text) FROM added",
                      8, inbox, NULL, reason, size);
}

/* The journal entry and the route's rows (for a native agent: only the conversation,
 * whose id the LLM request carries; for a system notice: only the inbox row, in the
 * conversation it named, which it neither creates nor moves on). */
static enum ab_err write_route(PGconn *conn, const struct ab_consumed *msg,
                               struct dispatch_message *m, char *reason, size_t size)
{
    enum ab_err err = dispatch_journal(conn, msg, reason, size);
    if (!err && m->agent_type != NULL && m->webhook_sender)
        err = dispatch_conversation_of_session(conn, m->tenant_id, m->target_id, m->session_key,
                                               msg->event->time, m->event_id, m->conversation_id,
                                               &m->conversation_created, reason, size);
    else if (!err && m->agent_type != NULL && !m->system_sender)
        err = dispatch_conversation_of_agents(conn, m->tenant_id, m->sender_id, m->target_id,
                                              msg->event->time, m->event_id, m->conversation_id,
                                              &m->conversation_created, reason,
                                              size);
    if (!err && m->route == DISPATCH_ROUTE_INBOX && !m->system_sender)
        err = write_chat_message(conn, m, reason, size);
    if (!err && m->route == DISPATCH_ROUTE_INBOX)
        err = write_inbox(conn, m, reason, size);
    return err;
}

/* Step 1. PostgreSQL refusing a write after the checks passed (a constraint, a foreign
 * key) is as final as a failed check; the dead letter's reason says it was the write. */
static enum ab_err store(PGconn *conn, const struct ab_consumed *msg, struct dispatch_message *m,
                         char *reason, size_t size)
{
    enum ab_err err = ab_db_begin(conn, reason, size);
    if (!err)
        err = check_parties(conn, m, reason, size);
    if (!err && m->system_sender && m->conversation_id[0] != '\0')
        err = check_notice_conversation(conn, m, reason, size);
    if (!err) {
        err = write_route(conn, msg, m, reason, size);
        if (err == AB_ERR_INVALID) {
            char why[512];
            snprintf(why, sizeof(why), "%s", reason);
            snprintf(reason, size, "message.sent: cannot be stored: %s", why);
        }
    }
    if (!err)
        return ab_db_commit(conn, reason, size);
    ab_db_rollback(conn);
    return err;
}

/* Produces one event derived from the message: its id is a function of the message's id
 * and `suffix`, so producing it again after a redelivery is the same event. data is
 * stolen. Kafka refusing the event as such (too large, invalid) is final; anything else
 * is retried. */
static enum ab_err publish(struct dispatch_ctx *ctx, const struct dispatch_message *m,
                           enum ab_topic topic, const char *type, const char *suffix,
                           const char *key, json_t *data, char *reason, size_t size)
{
    if (data == NULL) {
        snprintf(reason, size, "out of memory building %s", type);
        return AB_ERR_NOMEM;
    }
    struct ab_event *ev =
        ab_event_new_derived(type, SOURCE, m->target_id, data, "%s:%s", m->event_id, suffix);
    enum ab_err err = ab_producer_send_event(ctx->svc->producer, topic, key, ev, reason, size);
    ab_event_free(ev);
    return dispatch_kafka_outcome(err);
}

/* A shallow copy of the message's data plus one field (the copy shares the values). */
static json_t *data_with(const struct dispatch_message *m, const char *name, json_t *value)
{
    json_t *copy = json_copy(m->data);
    if (copy != NULL)
        json_object_set_new(copy, name, value);
    else
        json_decref(value);
    return copy;
}

/* Step 2: the route's own event, then agentbus.message.received for everyone else. The
 * LLM request names the message it answers (message_event_id): the worker stores the user
 * turn under that id, so a message is in the history once however often it is answered. */
static enum ab_err publish_all(struct dispatch_ctx *ctx, const struct dispatch_message *m,
                               char *reason, size_t size)
{
    enum ab_err err = AB_OK;
    const char *conv = m->conversation_id[0] ? m->conversation_id : NULL;
    if (m->route == DISPATCH_ROUTE_LLM) {
        json_t *request = data_with(m, "conversation_id", json_string(conv));
        if (request != NULL)
            json_object_set_new(request, "message_event_id", json_string(m->event_id));
        err = publish(ctx, m, AB_TOPIC_LLM_REQUESTS, "agentbus.llm.request", "llm",
                      m->conversation_key, request, reason, size);
    } else if (m->route == DISPATCH_ROUTE_NOTIFY) {
        char key[DISPATCH_KEY_MAX];
        snprintf(key, sizeof(key), "member:%s", m->target_id);
        err = publish(ctx, m, AB_TOPIC_NOTIFY, "agentbus.notify.feishu", "notify", key,
                      json_incref(m->data), reason, size);
    }
    if (!err && m->conversation_created) {
        /* A session (outgoing webhooks' session_started) is a conversation's first message. */
        json_t *started = json_pack("{s:s, s:s, s:s, s:s, s:[O,O]}", "tenant_id", m->tenant_id,
                                    "conversation_id", conv, "kind",
                                    m->webhook_sender ? "hook" : "agent_agent",
                                    "first_message_event_id", m->event_id, "agents",
                                    json_object_get(m->data, "sender"),
                                    json_object_get(m->data, "target"));
        if (started != NULL && m->webhook_sender)
            json_object_set_new(started, "session_key", json_string(m->session_key));
        err = publish(ctx, m, AB_TOPIC_EVENTS, "agentbus.session.started", "session_started",
                      m->conversation_key, started, reason, size);
    }
    if (err)
        return err;
    json_t *received = data_with(m, "route", json_string(m->route_name));
    if (received != NULL)
        json_object_set_new(received, "conversation_id", conv ? json_string(conv) : json_null());
    return publish(ctx, m, AB_TOPIC_EVENTS, "agentbus.message.received", "received",
                   m->conversation_key, received, reason, size);
}

enum ab_err dispatch_message_sent(struct dispatch_ctx *ctx, const struct ab_consumed *msg,
                                  char *reason, size_t size)
{
    struct dispatch_message m;
    PGconn *conn = NULL;
    enum ab_err err = dispatch_message_parse(msg->event, &m, reason, size);
    if (err)
        return err;
    err = ab_db_acquire(ctx->svc->db, DB_WAIT_MS, &conn, reason, size);
    if (err == AB_OK) {
        err = store(conn, msg, &m, reason, size);
        ab_db_release(ctx->svc->db, conn);
    }
    err = dispatch_db_outcome(err);
    if (err == AB_OK)
        err = publish_all(ctx, &m, reason, size);
    if (err == AB_OK) {
        ab_metric_inc(ctx->m_routed, (const char *const[]){ m.route_name, NULL }, 1);
        ab_debug("message %s from %s routed to %s %s (%s)", m.event_id,
                 m.system_sender ? "the system" : m.sender_id, m.target_kind, m.target_id,
                 m.route_name);
    }
    return err;
}
