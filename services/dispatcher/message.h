/* What an agentbus.message.sent says (docs/events.md), read and checked before anything is
 * written: the ids the routes store, the route its target type selects, its keys. */
#ifndef DISPATCH_MESSAGE_H
#define DISPATCH_MESSAGE_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

#include "common/envelope.h"
#include "common/util.h"

#define DISPATCH_KEY_MAX 128

enum dispatch_route {
    DISPATCH_ROUTE_INBOX,  /* openclaw_agent: a row in the target's gateway_messages inbox */
    DISPATCH_ROUTE_LLM,    /* native_agent: an agentbus.llm.request */
    DISPATCH_ROUTE_NOTIFY, /* member: an agentbus.notify.feishu delivery job */
};

struct dispatch_message {
    json_t *data; /* the event's data, borrowed from it */
    enum dispatch_route route;
    const char *route_name;  /* "inbox", "llm" or "notify": message.received's "route" */
    const char *target_kind; /* "agent" or "member" (for reasons) */
    const char *agent_type;  /* agents.type the target must have; NULL for a member */
    /* sender.type "system": a notice from agentbus itself (the LLM worker saying a message
     * could not be answered), only ever to an OpenClaw agent's inbox. It has no id
     * (sender_id is ""), no conversation of its own and is no turn of one. */
    bool system_sender;
    /* sender.type "webhook": an incoming webhook's message (webhook_route.c), named by its
     * hook, without an id. It belongs to data.session_key: to an agent, in the session's
     * conversation (kind 'hook'). */
    bool webhook_sender;
    const char *session_key; /* borrowed from data; webhook senders only */
    /* Ids as lower-case text, whatever case the event used, so that keys, derived ids and
     * PostgreSQL's uuid order agree. */
    char event_id[AB_UUID_LEN + 1];
    char tenant_id[AB_UUID_LEN + 1];
    char sender_id[AB_UUID_LEN + 1]; /* "" for a system sender */
    char target_id[AB_UUID_LEN + 1];
    const char *sender_name; /* borrowed from data */
    const char *content;     /* borrowed from data */
    char conversation_key[DISPATCH_KEY_MAX]; /* Kafka key of the conversation */
    /* Set by the route for an agent's message; for a system notice, data.conversation_id
     * as given (checked by the route). "" when it has none. */
    char conversation_id[AB_UUID_LEN + 1];
    bool conversation_created; /* this message started its conversation */
};

/* Reads ev (an agentbus.message.sent) into m, which borrows from ev: keep ev alive.
 * @returns AB_OK, or AB_ERR_INVALID with reason naming the field and what is wrong
 * (missing, wrong type, not a UUID, unknown target type, an agent writing to itself, hops
 * out of range, a system sender writing to anyone but an OpenClaw agent, a webhook sender
 * without a session_key). */
enum ab_err dispatch_message_parse(const struct ab_event *ev, struct dispatch_message *m,
                                   char *reason, size_t reason_size);

#endif
