/* How a model is called: the HTTP request of a chat completion for each provider.
 *
 *  openai    POST {base_url}/v1/chat/completions (or {base_url}/chat/completions when the
 *            base URL already ends in /v1, as OpenAI's own docs write it), a bearer key
 *            when one is set, "stream" as the model says with stream_options.include_usage
 *            so the usage chunk comes, and n = 1 (only choice 0 is read).
 *  openclaw  the same endpoint on an OpenClaw gateway, addressed to an agent: model
 *            "openclaw/<agentId>", x-openclaw-agent-id: <agentId>, and a session key
 *            scoped to that agent and the conversation, "agent:<agentId>:<conversation>",
 *            in x-openclaw-session-key. An unscoped key would land on the default agent
 *            (the Home Assistant client's bug #8/#28). The agent id is the model's "model"
 *            field, with or without an "openclaw/", "openclaw:" or "agent:" prefix. Pure. */
#ifndef LLMW_PROVIDER_H
#define LLMW_PROVIDER_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

#include "common/errors.h"
#include "common/util.h"

#define LLMW_OPENCLAW_AGENT_MAX 64

/* A row of llm_models. Strings are owned (llmw_model_cleanup). */
struct llmw_model {
    char id[AB_UUID_LEN + 1];
    char *name;
    char *provider; /* "openai" or "openclaw" */
    char *base_url;
    char *model;
    char *api_key; /* a secret: never logged, never in an event */
    long connect_timeout_ms;
    long first_token_timeout_ms;
    long idle_timeout_ms;
    long total_timeout_ms;
    int max_concurrency;
    bool stream;
};

void llmw_model_cleanup(struct llmw_model *m);

/* One HTTP request, owned: free with llmw_call_spec_cleanup. */
struct llmw_call_spec {
    char *url;
    char **headers; /* "Name: value" lines, NULL-terminated */
    char *body;
    size_t body_len;
};

/* Builds the request of model m for messages (borrowed) in conversation_id.
 * @returns AB_OK; AB_ERR_INVALID when the model's configuration cannot make a request
 *          (an unknown provider, an OpenClaw agent id that is not 1-64 of [A-Za-z0-9_-],
 *          a key with a line break), errstr saying which. */
enum ab_err llmw_provider_request(const struct llmw_model *m, const json_t *messages,
                                  const char *conversation_id, struct llmw_call_spec *out,
                                  char *errstr, size_t errstr_size);

void llmw_call_spec_cleanup(struct llmw_call_spec *s);

#endif
