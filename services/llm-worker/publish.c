/* The events of a finished LLM request. */
#include "services/llm-worker/publish.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/crypto.h"
#include "common/db.h"
#include "common/log.h"

enum {
    COL_STATUS,
    COL_CONVERSATION,
    COL_AGENT_NAME,
    COL_SENDER_NAME,
    COL_SENDER_TYPE,
    COL_HOPS,
    COL_REPLY_ID,
    COL_MODEL_ID,
    COL_MODEL_NAME,
    COL_FINISH,
    COL_ATTEMPTS,
    COL_ERROR_CODE,
    COL_ERROR_MESSAGE,
    COL_LATENCY,
    COL_TTFT,
    COL_USAGE,
    COL_CONTENT,
};

static const char *const row_sql =
    "SELECT r.status, r.conversation_id, r.agent_name, r.sender_name, r.sender_type, r.hops,"
    " r.reply_message_id, r.model_id, r.model_name, r.finish_reason, r.attempts, r.error_code,"
    " r.error_message, r.latency_ms, r.first_token_ms, r.usage, c.content"
    " FROM llm_requests r LEFT JOIN chat_messages c ON c.id = r.reply_message_id"
    " WHERE r.id = $1";

/* A column as a JSON value: null when NULL, else a string, an integer or parsed JSON. */
static json_t *col(PGresult *res, int c, char kind)
{
    if (PQgetisnull(res, 0, c))
        return json_null();
    const char *v = PQgetvalue(res, 0, c);
    if (kind == 'i')
        return json_integer(strtoll(v, NULL, 10));
    if (kind == 'j') {
        json_t *parsed = json_loads(v, JSON_DECODE_ANY, NULL);
        return parsed ? parsed : json_null();
    }
    return json_string(v);
}

static const char *text(PGresult *res, int c)
{
    return PQgetisnull(res, 0, c) ? NULL : PQgetvalue(res, 0, c);
}

/* The events of one outcome, sent together: one round trip to Kafka for all of them. */
struct batch {
    struct ab_outgoing_event items[3];
    char keys[3][LLMW_KEY_MAX];
    size_t n;
};

/* Adds an event with data (taken) to b. Its id is id, or derived from the request's id and
 * id_suffix. @returns its index. */
static size_t add(struct batch *b, const struct llmw_job *job, enum ab_topic topic,
                  const char *type, const char *id_suffix, const char *id, const char *key,
                  const char *subject, json_t *data)
{
    char derived[AB_UUID_LEN + 1];
    if (id == NULL) {
        char name[AB_UUID_LEN + 32];
        snprintf(name, sizeof(name), "%s:%s", job->req.event_id, id_suffix);
        ab_uuid_derive(name, derived);
        id = derived;
    }
    struct ab_event *ev = ab_event_new(type, LLMW_EVENT_SOURCE, subject, data);
    free(ev->id);
    ev->id = ab_xstrdup(id);
    ab_event_set_traceparent(ev, job->traceparent[0] != '\0' ? job->traceparent : NULL);
    size_t i = b->n++;
    snprintf(b->keys[i], sizeof(b->keys[i]), "%s", key);
    b->items[i] = (struct ab_outgoing_event){ topic, b->keys[i], ev, AB_OK };
    return i;
}

/* Sends b's events and frees them; each item's err stays for the caller. */
static enum ab_err send_batch(struct ab_producer *producer, struct batch *b, char *reason,
                              size_t size)
{
    enum ab_err err = ab_producer_send_events(producer, b->items, b->n, reason, size);
    for (size_t i = 0; i < b->n; i++) {
        ab_event_free((struct ab_event *)b->items[i].ev);
        b->items[i].ev = NULL;
    }
    return err;
}

/* The parties as every event names them. */
static json_t *party(const char *id, const char *name, const char *type)
{
    json_t *o = json_pack("{s:s, s:s}", "id", id, "name", name);
    if (type != NULL)
        json_object_set_new(o, "type", json_string(type));
    return o;
}

/* A webhook sender as the message named it: no id, its hook_id when it had one. */
static json_t *webhook_party(const struct llmw_request *r, const char *name)
{
    json_t *o = json_pack("{s:s, s:s}", "type", "webhook", "name", name);
    if (r->hook_id != NULL)
        json_object_set_new(o, "hook_id", json_string(r->hook_id));
    return o;
}

/* The fields every event of the request shares. */
static json_t *common_data(const struct llmw_job *job, PGresult *res)
{
    const struct llmw_request *r = &job->req;
    json_t *data = json_pack("{s:s, s:s, s:s}", "tenant_id", r->tenant_id, "request_id",
                             r->event_id, "message_event_id", r->message_event_id);
    json_object_set_new(data, "conversation_id", col(res, COL_CONVERSATION, 's'));
    json_object_set_new(data, "agent", party(r->target_id, text(res, COL_AGENT_NAME), NULL));
    json_object_set_new(data, "sender",
                        r->sender_kind == LLMW_SENDER_WEBHOOK
                            ? webhook_party(r, text(res, COL_SENDER_NAME))
                            : party(r->sender_id, text(res, COL_SENDER_NAME),
                                    text(res, COL_SENDER_TYPE)));
    json_object_set_new(data, "hops", col(res, COL_HOPS, 'i'));
    return data;
}

/* The reply, an agentbus.message.sent from the native agent to the sender. It needs its
 * turn (gone only with a deleted conversation) and a sender agent that still exists: a
 * webhook's message is answered in the record and agentbus.agent_response only, as there
 * is nobody to send a reply to. @returns its index in b, or -1 when there is none. */
static int add_reply(struct batch *b, const struct llmw_job *job, PGresult *res)
{
    const struct llmw_request *r = &job->req;
    const char *content = text(res, COL_CONTENT);
    const char *sender_type = text(res, COL_SENDER_TYPE);
    if (content == NULL || sender_type == NULL ||
        (strcmp(sender_type, "openclaw") != 0 && strcmp(sender_type, "native") != 0))
        return -1;
    char target_type[32];
    snprintf(target_type, sizeof(target_type), "%s_agent", sender_type);
    json_t *data = json_pack(
        "{s:s, s:{s:s, s:s, s:s}, s:{s:s, s:s, s:s}, s:s, s:s, s:n, s:s, s:I}", "tenant_id",
        r->tenant_id, "sender", "type", "agent", "id", r->target_id, "name",
        text(res, COL_AGENT_NAME), "target", "type", target_type, "id", r->sender_id, "name",
        text(res, COL_SENDER_NAME), "channel", "agent", "content", content, "message_id",
        "in_reply_to", r->message_event_id, "hops",
        (json_int_t)strtoll(text(res, COL_HOPS), NULL, 10) + 1);
    return (int)add(b, job, AB_TOPIC_INGRESS, "agentbus.message.sent", NULL,
                    text(res, COL_REPLY_ID), job->key, r->sender_id, data);
}

static void add_response(struct batch *b, const struct llmw_job *job, PGresult *res)
{
    json_t *data = common_data(job, res);
    json_object_set_new(data, "reply_message_id", col(res, COL_REPLY_ID, 's'));
    json_object_set_new(data, "model",
                        json_pack("{s:o, s:o}", "id", col(res, COL_MODEL_ID, 's'), "name",
                                  col(res, COL_MODEL_NAME, 's')));
    json_object_set_new(data, "finish_reason", col(res, COL_FINISH, 's'));
    json_object_set_new(data, "latency_ms", col(res, COL_LATENCY, 'i'));
    json_object_set_new(data, "first_token_ms", col(res, COL_TTFT, 'i'));
    json_object_set_new(data, "usage", col(res, COL_USAGE, 'j'));
    json_object_set_new(data, "attempts", col(res, COL_ATTEMPTS, 'j'));
    add(b, job, AB_TOPIC_EVENTS, "agentbus.agent_response", "response", NULL, job->key,
        job->req.target_id, data);
}

/* The sender learns that no answer is coming, in words that carry no provider text (an
 * error message can quote a key's prefix or a prompt): the cause is the stable code. */
static void add_notice(struct batch *b, const struct llmw_job *job, PGresult *res,
                       const char *code)
{
    const struct llmw_request *r = &job->req;
    char content[512], key[AB_UUID_LEN + 16];
    snprintf(content, sizeof(content),
             "[agentbus] %s could not answer your message (%s). No reply was sent in its "
             "name; you may send the message again later.",
             text(res, COL_AGENT_NAME), code);
    snprintf(key, sizeof(key), "system:%s", r->sender_id);
    json_t *data = json_pack("{s:s, s:{s:s, s:s}, s:{s:s, s:s, s:s}, s:s, s:s, s:o}",
                             "tenant_id", r->tenant_id, "sender", "type", "system", "name",
                             "agentbus", "target", "type", "openclaw_agent", "id", r->sender_id,
                             "name", text(res, COL_SENDER_NAME), "channel", "agent", "content",
                             content, "conversation_id", col(res, COL_CONVERSATION, 's'));
    add(b, job, AB_TOPIC_INGRESS, "agentbus.message.sent", "notice", NULL, key, r->sender_id,
        data);
}

/* agentbus.error with the outcome, and to an OpenClaw sender of a failed request the notice
 * (a native agent reads no inbox, a webhook has none).
 * code and message (taken): the row's, or (a reply Kafka refused) what went wrong instead. */
static void add_error(struct batch *b, const struct llmw_job *job, PGresult *res,
                      const char *status, json_t *code, json_t *message)
{
    char code_text[64];
    snprintf(code_text, sizeof(code_text), "%s",
             json_is_string(code) ? json_string_value(code) : "unknown");
    json_t *data = common_data(job, res);
    json_object_set_new(data, "stage", json_string("llm"));
    json_object_set_new(data, "status", json_string(status));
    json_object_set_new(data, "code", code);
    json_object_set_new(data, "message", message);
    json_object_set_new(data, "model",
                        json_pack("{s:o, s:o}", "id", col(res, COL_MODEL_ID, 's'), "name",
                                  col(res, COL_MODEL_NAME, 's')));
    json_object_set_new(data, "latency_ms", col(res, COL_LATENCY, 'i'));
    json_object_set_new(data, "attempts", col(res, COL_ATTEMPTS, 'j'));
    add(b, job, AB_TOPIC_EVENTS, "agentbus.error", "error", NULL, job->key, job->req.target_id,
        data);
    const char *sender_type = text(res, COL_SENDER_TYPE);
    if (strcmp(status, "failed") == 0 && sender_type && strcmp(sender_type, "openclaw") == 0)
        add_notice(b, job, res, code_text);
}

static enum ab_err publish_answer(struct ab_producer *producer, const struct llmw_job *job,
                                  PGresult *res, char *reason, size_t size)
{
    struct batch b = { .n = 0 };
    int reply = add_reply(&b, job, res);
    add_response(&b, job, res);
    enum ab_err err = send_batch(producer, &b, reason, size);
    bool others_ok = true;
    for (size_t i = 0; i < b.n; i++)
        others_ok = others_ok && ((int)i == reply || b.items[i].err == AB_OK);
    /* Kafka will never take this answer (over message.max.bytes): the sender learns that,
     * as of any failure, rather than the request being dead-lettered unsaid. */
    if (reply >= 0 && b.items[reply].err == AB_ERR_TOO_LARGE && others_ok) {
        char message[640];
        snprintf(message, sizeof(message), "the answer (%zu bytes) is too large for Kafka: %s",
                 strlen(text(res, COL_CONTENT)), reason);
        ab_utf8_sanitize(message);
        struct batch e = { .n = 0 };
        add_error(&e, job, res, "failed", json_string("reply_too_large"), json_string(message));
        err = send_batch(producer, &e, reason, size);
    }
    return err;
}

enum ab_err llmw_publish_recorded(PGconn *conn, struct ab_producer *producer,
                                  const struct llmw_job *job, char *reason, size_t size)
{
    PGresult *res = NULL;
    const char *const params[] = { job->req.event_id };
    enum ab_err err = ab_db_exec(conn, row_sql, 1, params, &res, reason, size);
    if (err)
        return err;
    if (PQntuples(res) == 0) {
        snprintf(reason, size, "llm request %s has no outcome row", job->req.event_id);
        PQclear(res);
        return AB_ERR_NOT_FOUND;
    }
    const char *status = text(res, COL_STATUS);
    if (strcmp(status, "answered") == 0) {
        err = publish_answer(producer, job, res, reason, size);
    } else {
        struct batch b = { .n = 0 };
        add_error(&b, job, res, status, col(res, COL_ERROR_CODE, 's'),
                  col(res, COL_ERROR_MESSAGE, 's'));
        err = send_batch(producer, &b, reason, size);
    }
    PQclear(res);
    return err;
}
