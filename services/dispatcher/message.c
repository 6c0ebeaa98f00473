/* Validation of agentbus.message.sent data. Everything a route writes or keys by is checked
 * here, so a malformed message is dead-lettered with a precise reason instead of failing
 * half-way through a transaction (or, worse, being retried for ever). Whether the agents
 * exist and share the tenant is PostgreSQL's to say: see message_route.c. */
#include "services/dispatcher/message.h"

#include <ctype.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

/* data.hops counts the LLM-generated replies that led to a message; the LLM worker stops
 * answering long before this. The bound only keeps a nonsense value out of the events. */
#define HOPS_MAX 1000

static const struct {
    const char *target_type;
    enum dispatch_route route;
    const char *route_name;
    const char *agent_type;
} target_types[] = {
    { "openclaw_agent", DISPATCH_ROUTE_INBOX, "inbox", "openclaw" },
    { "native_agent", DISPATCH_ROUTE_LLM, "llm", "native" },
    { "member", DISPATCH_ROUTE_NOTIFY, "notify", NULL },
};

/* 8-4-4-4-12 hex digits, copied in lower case; PostgreSQL would take other spellings
 * (braces, no dashes), but the keys and derived ids built from it must be canonical. */
static bool uuid_canonical(const char *text, char out[AB_UUID_LEN + 1])
{
    if (strlen(text) != AB_UUID_LEN)
        return false;
    for (int i = 0; i < AB_UUID_LEN; i++) {
        bool dash = i == 8 || i == 13 || i == 18 || i == 23;
        if (dash ? text[i] != '-' : !isxdigit((unsigned char)text[i]))
            return false;
        out[i] = (char)tolower((unsigned char)text[i]);
    }
    out[AB_UUID_LEN] = '\0';
    return true;
}

/* A string member of obj ("data.<where><name>" in reasons). Missing and null are the same;
 * a NUL inside is refused, as PostgreSQL text cannot hold one. */
static enum ab_err get_string(const json_t *obj, const char *where, const char *name,
                              bool required, const char **out, char *reason, size_t size)
{
    const json_t *v = json_object_get(obj, name);
    *out = NULL;
    if (v == NULL || json_is_null(v)) {
        if (!required)
            return AB_OK;
        snprintf(reason, size, "message.sent: data.%s%s is missing", where, name);
        return AB_ERR_INVALID;
    }
    if (!json_is_string(v)) {
        snprintf(reason, size, "message.sent: data.%s%s must be a string", where, name);
        return AB_ERR_INVALID;
    }
    if (strlen(json_string_value(v)) != json_string_length(v)) {
        snprintf(reason, size, "message.sent: data.%s%s contains a NUL character", where, name);
        return AB_ERR_INVALID;
    }
    *out = json_string_value(v);
    return AB_OK;
}

/* A UUID member of obj, canonical into out; out is "" when an optional one is absent. */
static enum ab_err get_uuid(const json_t *obj, const char *where, const char *name,
                            bool required, char out[AB_UUID_LEN + 1], char *reason, size_t size)
{
    const char *text;
    enum ab_err err = get_string(obj, where, name, required, &text, reason, size);
    out[0] = '\0';
    if (err == AB_OK && text != NULL && !uuid_canonical(text, out)) {
        snprintf(reason, size, "message.sent: data.%s%s \"%.40s\" is not a UUID", where, name,
                 text);
        err = AB_ERR_INVALID;
    }
    return err;
}

static enum ab_err get_object(const json_t *obj, const char *name, const json_t **out,
                              char *reason, size_t size)
{
    *out = json_object_get(obj, name);
    if (json_is_object(*out))
        return AB_OK;
    snprintf(reason, size, "message.sent: data.%s must be an object", name);
    return AB_ERR_INVALID;
}

/* sender: an agent, which the routes store as sender_agent_id, agentbus itself ("system")
 * or an incoming webhook ("webhook"), which have no id and are stored by their name alone;
 * a person's message would need a route of its own. A system or webhook sender with an id
 * is refused rather than the id ignored: whoever wrote it meant something the routes
 * would silently drop. */
static enum ab_err parse_sender(const json_t *data, struct dispatch_message *m, char *reason,
                                size_t size)
{
    const json_t *sender, *id;
    const char *type;
    enum ab_err err = get_object(data, "sender", &sender, reason, size);
    if (!err)
        err = get_string(sender, "sender.", "type", true, &type, reason, size);
    if (err)
        return err;
    m->system_sender = strcmp(type, "system") == 0;
    m->webhook_sender = strcmp(type, "webhook") == 0;
    bool nameless = m->system_sender || m->webhook_sender;
    id = json_object_get(sender, "id");
    if (!nameless && strcmp(type, "agent") != 0) {
        snprintf(reason, size,
                 "message.sent: data.sender.type must be \"agent\", \"system\" or \"webhook\", "
                 "not \"%.40s\"", type);
        err = AB_ERR_INVALID;
    } else if (nameless && id != NULL && !json_is_null(id)) {
        snprintf(reason, size, "message.sent: a %s sender has no data.sender.id", type);
        err = AB_ERR_INVALID;
    } else if (m->webhook_sender) {
        err = get_string(data, "", "session_key", true, &m->session_key, reason, size);
        if (!err && (m->session_key[0] == '\0' || strlen(m->session_key) > 300)) {
            snprintf(reason, size, "message.sent: data.session_key must be 1 to 300 bytes");
            err = AB_ERR_INVALID;
        }
    } else if (!m->system_sender) {
        err = get_uuid(sender, "sender.", "id", true, m->sender_id, reason, size);
    }
    if (!err)
        err = get_string(sender, "sender.", "name", true, &m->sender_name, reason, size);
    if (!err && m->sender_name[0] == '\0') {
        snprintf(reason, size, "message.sent: data.sender.name is empty");
        err = AB_ERR_INVALID;
    }
    return err;
}

static enum ab_err parse_target(const json_t *data, struct dispatch_message *m, char *reason,
                                size_t size)
{
    const json_t *target;
    const char *type, *name;
    enum ab_err err = get_object(data, "target", &target, reason, size);
    if (!err)
        err = get_string(target, "target.", "type", true, &type, reason, size);
    if (err)
        return err;
    size_t i = 0, n = sizeof(target_types) / sizeof(target_types[0]);
    while (i < n && strcmp(type, target_types[i].target_type) != 0)
        i++;
    if (i == n) {
        snprintf(reason, size, "message.sent: data.target.type \"%.40s\" is not one of "
                               "openclaw_agent, native_agent, member", type);
        return AB_ERR_INVALID;
    }
    m->route = target_types[i].route;
    m->route_name = target_types[i].route_name;
    m->agent_type = target_types[i].agent_type;
    m->target_kind = m->agent_type ? "agent" : "member";
    err = get_uuid(target, "target.", "id", true, m->target_id, reason, size);
    if (!err) /* the name is for people reading the events; nothing depends on it */
        err = get_string(target, "target.", "name", false, &name, reason, size);
    return err;
}

/* A system notice goes to an OpenClaw agent only: a native agent's LLM or a person would
 * take it for a message from someone. It may name the conversation it is about (whether
 * the target is part of it is PostgreSQL's to say). */
static enum ab_err parse_notice(const json_t *data, struct dispatch_message *m, char *reason,
                                size_t size)
{
    if (m->route != DISPATCH_ROUTE_INBOX) {
        snprintf(reason, size, "message.sent: a system sender may only write to an openclaw_agent");
        return AB_ERR_INVALID;
    }
    return get_uuid(data, "", "conversation_id", false, m->conversation_id, reason, size);
}

/* The optional fields: typed when present, so consumers downstream can trust them. hops,
 * like the strings, is absent when null. */
static enum ab_err parse_extras(const json_t *data, char *reason, size_t size)
{
    const char *channel, *ignored;
    const json_t *hops = json_object_get(data, "hops");
    enum ab_err err = get_string(data, "", "channel", false, &channel, reason, size);
    if (!err && channel && strcmp(channel, "agent") != 0 && strcmp(channel, "feishu") != 0) {
        snprintf(reason, size, "message.sent: data.channel must be \"agent\" or \"feishu\"");
        err = AB_ERR_INVALID;
    }
    if (!err)
        err = get_string(data, "", "message_id", false, &ignored, reason, size);
    if (!err)
        err = get_string(data, "", "in_reply_to", false, &ignored, reason, size);
    if (!err && hops != NULL && !json_is_null(hops) &&
        (!json_is_integer(hops) || json_integer_value(hops) < 0 ||
         json_integer_value(hops) > HOPS_MAX)) {
        snprintf(reason, size, "message.sent: data.hops must be an integer between 0 and %d",
                 HOPS_MAX);
        err = AB_ERR_INVALID;
    }
    return err;
}

enum ab_err dispatch_message_parse(const struct ab_event *ev, struct dispatch_message *m,
                                   char *reason, size_t size)
{
    memset(m, 0, sizeof(*m));
    m->data = ev->data;
    if (!uuid_canonical(ev->id, m->event_id)) {
        /* The id becomes the inbox row's and chat message's primary key. */
        snprintf(reason, size, "message.sent: the event id \"%.40s\" is not a UUID", ev->id);
        return AB_ERR_INVALID;
    }
    if (!json_is_object(ev->data)) {
        snprintf(reason, size, "message.sent: data must be a JSON object");
        return AB_ERR_INVALID;
    }
    enum ab_err err = get_uuid(ev->data, "", "tenant_id", true, m->tenant_id, reason, size);
    if (!err)
        err = parse_sender(ev->data, m, reason, size);
    if (!err)
        err = parse_target(ev->data, m, reason, size);
    if (!err && m->system_sender)
        err = parse_notice(ev->data, m, reason, size);
    if (!err)
        err = get_string(ev->data, "", "content", true, &m->content, reason, size);
    if (!err)
        err = parse_extras(ev->data, reason, size);
    if (err)
        return err;
    if (!m->system_sender && !m->webhook_sender && m->agent_type != NULL &&
        strcmp(m->sender_id, m->target_id) == 0) {
        snprintf(reason, size, "message.sent: agent %s sends to itself", m->sender_id);
        return AB_ERR_INVALID;
    }
    /* The keys ingress gives the conversation (docs/events.md); canonical ids make the
     * text order of the pair PostgreSQL's uuid order, as in conversations. A notice has no
     * pair: it keeps the order of the notices to its target. */
    bool sender_low = strcmp(m->sender_id, m->target_id) < 0;
    if (m->system_sender)
        snprintf(m->conversation_key, sizeof(m->conversation_key), "system:%s", m->target_id);
    else if (m->webhook_sender) /* ab_fnv1a: the session key may be long */
        snprintf(m->conversation_key, sizeof(m->conversation_key), "session:%s:%016llx",
                 m->target_id, (unsigned long long)ab_fnv1a(AB_FNV1A_INIT, m->session_key,
                                                        strlen(m->session_key)));
    else if (m->agent_type != NULL)
        snprintf(m->conversation_key, sizeof(m->conversation_key), "agents:%s:%s",
                 sender_low ? m->sender_id : m->target_id,
                 sender_low ? m->target_id : m->sender_id);
    else
        snprintf(m->conversation_key, sizeof(m->conversation_key), "member:%s:%s", m->sender_id,
                 m->target_id);
    return AB_OK;
}
