/* The chat messages one LLM request sends: the answering agent's role description as the
 * system prompt, the last turns of its conversation with the sender (as seen by the
 * answering agent: its own turns are "assistant", the sender's "user"; nothing else, so
 * no row can carry a role a provider refuses, Clawith's tool_call bug), and the new message
 * with the agent-to-agent notice that the reply goes straight back to the sender (or, from
 * an incoming webhook, the notice that nobody is answered: the reply is only recorded). Pure. */
#ifndef LLMW_PROMPT_H
#define LLMW_PROMPT_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

struct llmw_turn {
    bool from_agent;     /* written by the answering agent (role "assistant") */
    const char *content;
};

struct llmw_prompt {
    const char *agent_name;       /* the native agent that answers */
    const char *role_description; /* may be "" */
    const char *sender_name;      /* the agent (or webhook) whose message this is */
    bool from_webhook;            /* an incoming webhook's message: no agent to reply to */
    const struct llmw_turn *history; /* oldest first; the new message not included */
    size_t history_count;
    const char *content;          /* the new message */
};

/* The "messages" array of a chat completion request. @ownership the caller owns it;
 * allocation failure aborts. */
json_t *llmw_prompt_messages(const struct llmw_prompt *p);

#endif
