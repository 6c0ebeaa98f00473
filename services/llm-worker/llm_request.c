/* Validation of agentbus.llm.request data. */
#include "services/llm-worker/llm_request.h"

#include <ctype.h>
#include <stdio.h>
#include <string.h>

/* A UUID member of obj, copied in lower case ("data.<name>" in reasons). */
static enum ab_err get_uuid(const json_t *obj, const char *where, const char *name,
                            char out[AB_UUID_LEN + 1], char *reason, size_t size)
{
    const char *text = json_string_value(json_object_get(obj, name));
    if (!ab_uuid_valid(text)) {
        snprintf(reason, size, "llm.request: data.%s%s must be a UUID", where, name);
        return AB_ERR_INVALID;
    }
    for (int i = 0; i <= AB_UUID_LEN; i++)
        out[i] = (char)tolower((unsigned char)text[i]);
    return AB_OK;
}

/* A non-empty string without NUL (PostgreSQL text cannot hold one). */
static enum ab_err get_text(const json_t *obj, const char *where, const char *name,
                            const char **out, char *reason, size_t size)
{
    const json_t *v = json_object_get(obj, name);
    *out = json_string_value(v);
    if (*out == NULL || (*out)[0] == '\0' || strlen(*out) != json_string_length(v)) {
        snprintf(reason, size, "llm.request: data.%s%s must be a non-empty string without NUL",
                 where, name);
        return AB_ERR_INVALID;
    }
    return AB_OK;
}

/* The sender: an agent (its id and name), or an incoming webhook (its name and optional
 * hook_id). A webhook has no id: one given is refused rather than ignored, whoever wrote it
 * meant an agent the worker would silently drop. A null id is none, as the dispatcher
 * reads it (its parse_sender), so what it routes is never dead-lettered here. */
static enum ab_err get_sender(const json_t *sender, const char *type, struct llmw_request *r,
                              char *reason, size_t size)
{
    enum ab_err err;
    if (strcmp(type, "agent") == 0) {
        r->sender_kind = LLMW_SENDER_AGENT;
        err = get_uuid(sender, "sender.", "id", r->sender_id, reason, size);
        if (!err)
            err = get_text(sender, "sender.", "name", &r->sender_name, reason, size);
        return err;
    }
    if (strcmp(type, "webhook") != 0) {
        snprintf(reason, size, "llm.request: data.sender.type must be \"agent\" or \"webhook\"");
        return AB_ERR_INVALID;
    }
    r->sender_kind = LLMW_SENDER_WEBHOOK;
    const json_t *id = json_object_get(sender, "id");
    if (id != NULL && !json_is_null(id)) {
        snprintf(reason, size, "llm.request: data.sender.id must be absent for a webhook sender");
        return AB_ERR_INVALID;
    }
    err = get_text(sender, "sender.", "name", &r->sender_name, reason, size);
    const json_t *hook_id = json_object_get(sender, "hook_id");
    if (!err && hook_id != NULL && !json_is_null(hook_id))
        err = get_text(sender, "sender.", "hook_id", &r->hook_id, reason, size);
    return err;
}

enum ab_err llmw_request_parse(const struct ab_event *ev, struct llmw_request *r, char *reason,
                               size_t size)
{
    memset(r, 0, sizeof(*r));
    const json_t *data = ev->data;
    const json_t *sender = json_object_get(data, "sender");
    const json_t *target = json_object_get(data, "target");
    const char *type;
    if (strcmp(ev->type, LLMW_LLM_REQUEST_TYPE) != 0) {
        snprintf(reason, size, "llm-worker: event type \"%.80s\" is not %s", ev->type,
                 LLMW_LLM_REQUEST_TYPE);
        return AB_ERR_INVALID;
    }
    if (!json_is_object(data) || !json_is_object(sender) || !json_is_object(target)) {
        snprintf(reason, size, "llm.request: data, data.sender and data.target must be objects");
        return AB_ERR_INVALID;
    }
    enum ab_err err = get_uuid(ev->data, "", "tenant_id", r->tenant_id, reason, size);
    if (!err)
        err = get_uuid(data, "", "conversation_id", r->conversation_id, reason, size);
    if (!err)
        err = get_uuid(data, "", "message_event_id", r->message_event_id, reason, size);
    if (!err)
        err = get_text(sender, "sender.", "type", &type, reason, size);
    if (!err)
        err = get_sender(sender, type, r, reason, size);
    if (!err)
        err = get_uuid(target, "target.", "id", r->target_id, reason, size);
    if (!err)
        err = get_text(data, "", "content", &r->content, reason, size);
    const json_t *hops = json_object_get(data, "hops");
    if (!err && hops != NULL && !json_is_null(hops)) {
        if (!json_is_integer(hops) || json_integer_value(hops) < 0 ||
            json_integer_value(hops) > LLMW_MAX_HOPS_LIMIT) {
            snprintf(reason, size, "llm.request: data.hops must be an integer between 0 and %d",
                     LLMW_MAX_HOPS_LIMIT);
            err = AB_ERR_INVALID;
        } else {
            r->hops = (int)json_integer_value(hops);
        }
    }
    if (!err && ab_uuid_valid(ev->id)) {
        for (int i = 0; i <= AB_UUID_LEN; i++)
            r->event_id[i] = (char)tolower((unsigned char)ev->id[i]);
    } else if (!err) {
        snprintf(reason, size, "llm.request: the event id must be a UUID");
        err = AB_ERR_INVALID;
    }
    return err;
}
