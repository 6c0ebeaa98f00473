/* The provider-specific parts of a chat completion request. */
#include "services/llm-worker/provider.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_HEADERS 8

void llmw_model_cleanup(struct llmw_model *m)
{
    if (m == NULL)
        return;
    free(m->name);
    free(m->provider);
    free(m->base_url);
    free(m->model);
    free(m->api_key);
    memset(m, 0, sizeof(*m));
}

void llmw_call_spec_cleanup(struct llmw_call_spec *s)
{
    if (s == NULL)
        return;
    free(s->url);
    for (size_t i = 0; s->headers != NULL && s->headers[i] != NULL; i++)
        free(s->headers[i]);
    free(s->headers);
    free(s->body);
    memset(s, 0, sizeof(*s));
}

/* asprintf that aborts on failure (util.h's policy). */
__attribute__((format(printf, 1, 2))) static char *xprintf(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char *out = NULL;
    int n = vasprintf(&out, fmt, ap);
    va_end(ap);
    if (n < 0)
        abort();
    return out;
}

/* The agent id inside an OpenClaw model name: "main", "openclaw/main", "openclaw:main" and
 * "agent:main" all say "main"; plain "openclaw" is the gateway's default agent, "main". */
static bool openclaw_agent(const char *model, char out[LLMW_OPENCLAW_AGENT_MAX + 1])
{
    static const char *const prefixes[] = { "openclaw/", "openclaw:", "agent:" };
    const char *id = model;
    for (size_t i = 0; i < sizeof(prefixes) / sizeof(prefixes[0]); i++)
        if (strncmp(model, prefixes[i], strlen(prefixes[i])) == 0)
            id = model + strlen(prefixes[i]);
    if (strcmp(model, "openclaw") == 0)
        id = "main";
    size_t len = strlen(id);
    if (len == 0 || len > LLMW_OPENCLAW_AGENT_MAX || strspn(id, "abcdefghijklmnopqrstuvwxyz"
                                                                "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
                                                                "0123456789_-") != len)
        return false;
    memcpy(out, id, len + 1);
    return true;
}

enum ab_err llmw_provider_request(const struct llmw_model *m, const json_t *messages,
                                  const char *conversation_id, struct llmw_call_spec *out,
                                  char *errstr, size_t size)
{
    char agent[LLMW_OPENCLAW_AGENT_MAX + 1];
    bool openclaw = strcmp(m->provider, "openclaw") == 0;
    memset(out, 0, sizeof(*out));
    if (!openclaw && strcmp(m->provider, "openai") != 0) {
        snprintf(errstr, size, "model %s: unknown provider \"%.40s\"", m->name, m->provider);
        ab_utf8_sanitize(errstr); /* %.40s cuts by bytes */
        return AB_ERR_INVALID;
    }
    if (openclaw && !openclaw_agent(m->model, agent)) {
        snprintf(errstr, size, "model %s: \"%.80s\" names no OpenClaw agent (1-64 letters, "
                 "digits, _ or -, optionally after openclaw/)", m->name, m->model);
        ab_utf8_sanitize(errstr);
        return AB_ERR_INVALID;
    }
    if (strpbrk(m->api_key, "\r\n") != NULL) {
        snprintf(errstr, size, "model %s: the API key contains a line break", m->name);
        ab_utf8_sanitize(errstr);
        return AB_ERR_INVALID;
    }

    size_t base_len = strlen(m->base_url);
    while (base_len > 0 && m->base_url[base_len - 1] == '/')
        base_len--;
    char *base = strndup(m->base_url, base_len);
    if (base == NULL)
        abort();
    bool has_v1 = base_len >= 3 && strcmp(base + base_len - 3, "/v1") == 0;
    out->url = xprintf("%s%s", base, has_v1 ? "/chat/completions" : "/v1/chat/completions");
    free(base);

    size_t n = 0;
    out->headers = ab_xcalloc(MAX_HEADERS + 1, sizeof(char *));
    out->headers[n++] = ab_xstrdup("Content-Type: application/json");
    out->headers[n++] = ab_xstrdup(m->stream ? "Accept: text/event-stream"
                                             : "Accept: application/json");
    if (m->api_key[0] != '\0')
        out->headers[n++] = xprintf("Authorization: Bearer %s", m->api_key);
    if (openclaw) {
        out->headers[n++] = xprintf("x-openclaw-agent-id: %s", agent);
        char *key = xprintf("agent:%s:%s", agent, conversation_id);
        out->headers[n++] = xprintf("x-openclaw-session-key: %s", key);
        free(key);
    }

    char model_name[LLMW_OPENCLAW_AGENT_MAX + 16];
    const char *model = m->model;
    if (openclaw) {
        snprintf(model_name, sizeof(model_name), "openclaw/%s", agent);
        model = model_name;
    }
    json_t *body = json_pack("{s:s, s:O, s:b, s:i}", "model", model,
                             "messages", messages, "stream", m->stream, "n", 1);
    if (body == NULL)
        abort();
    if (m->stream)
        json_object_set_new(body, "stream_options", json_pack("{s:b}", "include_usage", 1));
    out->body = json_dumps(body, JSON_COMPACT);
    json_decref(body);
    if (out->body == NULL)
        abort();
    out->body_len = strlen(out->body);
    return AB_OK;
}
