/* What an agentbus.llm.request says (docs/events.md): the agentbus.message.sent the
 * dispatcher routed to a native agent, plus the conversation it belongs to. Read and
 * checked before anything is written or called, so a malformed request is dead-lettered
 * with a reason instead of failing half-way.
 *
 * The sender is an agent (sender.type "agent", with its id) or an incoming webhook
 * (sender.type "webhook": a name, an optional hook_id, and no id, since no agent wrote the
 * message and nobody can be answered). */
#ifndef LLMW_LLM_REQUEST_H
#define LLMW_LLM_REQUEST_H

#include <jansson.h>
#include <stddef.h>

#include "common/envelope.h"
#include "common/errors.h"
#include "common/util.h"

#define LLMW_LLM_REQUEST_TYPE "agentbus.llm.request"
#define LLMW_MAX_HOPS_LIMIT 1000

enum llmw_sender_kind {
    LLMW_SENDER_AGENT,
    LLMW_SENDER_WEBHOOK,
};

struct llmw_request {
    /* Ids in lower case, as PostgreSQL prints them and as derived ids are built from. */
    char event_id[AB_UUID_LEN + 1];         /* the llm.request's id: our idempotency key */
    char message_event_id[AB_UUID_LEN + 1]; /* the message.sent's id: the user turn's id */
    char tenant_id[AB_UUID_LEN + 1];
    enum llmw_sender_kind sender_kind;
    char sender_id[AB_UUID_LEN + 1]; /* "" for a webhook */
    char target_id[AB_UUID_LEN + 1];
    char conversation_id[AB_UUID_LEN + 1];
    const char *sender_name; /* borrowed from the event's data */
    const char *hook_id;     /* a webhook's id, borrowed; NULL when not given or an agent */
    const char *content;     /* borrowed */
    int hops;                /* answers that led to this message (0 when absent) */
};

/* Reads ev into r, which borrows from ev: keep ev alive.
 * @returns AB_OK, or AB_ERR_INVALID with reason naming the field and what is wrong. */
enum ab_err llmw_request_parse(const struct ab_event *ev, struct llmw_request *r, char *reason,
                               size_t reason_size);

#endif
