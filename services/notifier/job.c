/* Delivery jobs and retries as events (delivery.h). */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/crypto.h"
#include "common/util.h"
#include "services/notifier/delivery.h"

#define SOURCE "/agentbus/notifier"

static const char *const outcome_names[] = {
    [NOTIFY_DELIVERED] = "delivered", [NOTIFY_RETRY] = "retry",         [NOTIFY_FAILED] = "failed",
    [NOTIFY_DEFERRED] = "deferred",   [NOTIFY_ABANDONED] = "abandoned",
};

const char *notify_outcome_name(enum notify_outcome o)
{
    return (unsigned)o <= NOTIFY_ABANDONED ? outcome_names[o] : "unknown";
}

const char *notify_kind_name(enum notify_kind k)
{
    return k == NOTIFY_FEISHU ? "feishu" : "webhook";
}

static const char *str_at(const json_t *obj, const char *a, const char *b)
{
    const json_t *v = json_object_get(obj, a);
    if (b != NULL)
        v = json_object_get(v, b);
    return json_string_value(v);
}

static enum ab_err bad(char *reason, size_t size, const char *type, const char *what)
{
    snprintf(reason, size, "%s: %s", type, what);
    return AB_ERR_INVALID;
}

/* A Feishu job: the message.sent data the dispatcher routed to a member. */
static enum ab_err read_feishu(struct notify_delivery *d, const json_t *data, char *reason,
                               size_t size)
{
    const char *member = str_at(data, "target", "id");
    const char *tenant = str_at(data, "tenant_id", NULL);
    const char *content = str_at(data, "content", NULL);

    if (member == NULL || !ab_uuid_valid(member))
        return bad(reason, size, NOTIFY_TYPE_FEISHU, "data.target.id must be a member's UUID");
    if (tenant == NULL || !ab_uuid_valid(tenant))
        return bad(reason, size, NOTIFY_TYPE_FEISHU, "data.tenant_id must be a UUID");
    if (content == NULL || content[0] == '\0')
        return bad(reason, size, NOTIFY_TYPE_FEISHU, "data.content must be a non-empty string");
    d->kind = NOTIFY_FEISHU;
    snprintf(d->member_id, sizeof(d->member_id), "%s", member);
    snprintf(d->tenant_id, sizeof(d->tenant_id), "%s", tenant);
    snprintf(d->destination, sizeof(d->destination), "feishu:%s", member);
    /* Feishu keeps a uuid for an hour and posts a message for it at most once: derived
     * from the delivery and the person, every attempt of this delivery carries the same
     * one, and a send that timed out after Feishu took it cannot post twice. */
    char name[2 * AB_UUID_LEN + 16];
    snprintf(name, sizeof(name), "feishu:%s:%s", d->id, member);
    ab_uuid_derive(name, d->uuid);
    return AB_OK;
}

/* An outgoing webhook job: the dispatcher's fan-out of one event to one endpoint. */
static enum ab_err read_webhook(struct notify_delivery *d, const json_t *data,
                                const struct ab_outgoing *outgoing, char *reason, size_t size)
{
    const char *endpoint = str_at(data, "endpoint_id", NULL);
    const char *event = str_at(data, "event", NULL);
    const char *tenant = str_at(data, "tenant_id", NULL);
    const json_t *payload = json_object_get(data, "payload");

    if (endpoint == NULL || endpoint[0] == '\0')
        return bad(reason, size, NOTIFY_TYPE_WEBHOOK, "data.endpoint_id is required");
    if (event == NULL || !json_is_object(payload))
        return bad(reason, size, NOTIFY_TYPE_WEBHOOK,
                   "data.event and data.payload (an object) are required");
    d->kind = NOTIFY_WEBHOOK;
    snprintf(d->destination, sizeof(d->destination), "webhook:%s", endpoint);
    snprintf(d->event_type, sizeof(d->event_type), "%s", event);
    /* Cut to size, text from a job could end inside a character. */
    ab_utf8_sanitize(d->destination);
    ab_utf8_sanitize(d->event_type);
    if (tenant != NULL && ab_uuid_valid(tenant))
        snprintf(d->tenant_id, sizeof(d->tenant_id), "%s", tenant);
    d->about_outcome = json_is_true(json_object_get(data, "about_outcome"));
    d->body = json_dumps(payload, JSON_COMPACT);
    if (d->body == NULL)
        return bad(reason, size, NOTIFY_TYPE_WEBHOOK, "data.payload cannot be serialized");
    d->body_len = strlen(d->body);
    d->endpoint = ab_outgoing_find(outgoing, endpoint);
    if (d->endpoint == NULL) {
        snprintf(reason, size, "%s: endpoint \"%s\" is not configured (any more)",
                 NOTIFY_TYPE_WEBHOOK, endpoint);
        return AB_ERR_NOT_FOUND;
    }
    return AB_OK;
}

enum ab_err notify_delivery_from_job(struct notify_delivery *d, const struct ab_event *ev,
                                     const char *key, const struct ab_outgoing *outgoing,
                                     char *reason, size_t size)
{
    if (!ab_uuid_valid(ev->id))
        return bad(reason, size, ev->type, "a delivery's id must be a UUID");
    snprintf(d->id, sizeof(d->id), "%s", ev->id);
    d->job = ab_event_to_json(ev);
    d->key = ab_xstrdup(key != NULL ? key : "");
    d->traceparent = ab_xstrdup(ev->traceparent);
    d->attempt = 1;
    d->retry_after_ms = -1;
    if (!ab_time_parse_rfc3339(ev->time, &d->job_time_ms))
        d->job_time_ms = ab_wall_ms();
    if (!json_is_object(ev->data))
        return bad(reason, size, ev->type, "data must be an object");
    if (strcmp(ev->type, NOTIFY_TYPE_FEISHU) == 0)
        return read_feishu(d, ev->data, reason, size);
    if (strcmp(ev->type, NOTIFY_TYPE_WEBHOOK) == 0)
        return read_webhook(d, ev->data, outgoing, reason, size);
    snprintf(reason, size, "notifier: unknown delivery type \"%s\"", ev->type);
    return AB_ERR_INVALID;
}

enum ab_err notify_delivery_from_retry(struct notify_delivery *d, const struct ab_event *ev,
                                       const struct ab_outgoing *outgoing, int64_t *due_ms,
                                       char *reason, size_t size)
{
    const json_t *job = json_object_get(ev->data, "job");
    const json_t *attempt = json_object_get(ev->data, "attempt");
    const char *due = str_at(ev->data, "due_at", NULL);
    struct ab_event *inner = NULL;
    enum ab_err err;

    if (!json_is_object(job) || !json_is_integer(attempt) || json_integer_value(attempt) < 1 ||
        json_integer_value(attempt) > 1000 || due == NULL || !ab_time_parse_rfc3339(due, due_ms))
        return bad(reason, size, NOTIFY_TYPE_RETRY,
                   "data needs job (an event), attempt (1-1000) and due_at (RFC 3339)");
    char *text = json_dumps(job, JSON_COMPACT);
    err = text ? ab_event_parse(text, strlen(text), &inner, reason, size) : AB_ERR_NOMEM;
    free(text);
    if (err)
        return err == AB_ERR_NOMEM ? err : AB_ERR_INVALID;
    err = notify_delivery_from_job(d, inner, str_at(ev->data, "key", NULL), outgoing, reason, size);
    ab_event_free(inner);
    d->attempt = (int)json_integer_value(attempt);
    d->deferrals = (int)json_integer_value(json_object_get(ev->data, "deferrals"));
    d->replay = (int)json_integer_value(json_object_get(ev->data, "replay"));
    return err;
}

struct ab_event *notify_retry_event(const struct notify_delivery *d)
{
    int attempt = d->outcome == NOTIFY_DEFERRED ? d->attempt : d->attempt + 1;
    int deferrals = d->outcome == NOTIFY_DEFERRED ? d->deferrals + 1 : 0;
    char due[32];

    ab_time_rfc3339(d->next_due_ms, due);
    json_t *data =
        json_pack("{s:O, s:s, s:i, s:i, s:i, s:s}", "job", d->job, "key", d->key, "attempt",
                  attempt, "deferrals", deferrals, "replay", d->replay, "due_at", due);
    struct ab_event *ev =
        ab_event_new_derived(NOTIFY_TYPE_RETRY, SOURCE, d->destination, data, "%s:retry:%d:%d:%d",
                             d->id, d->replay, attempt, deferrals);
    ab_event_set_traceparent(ev, d->traceparent);
    return ev;
}

char *notify_job_text(const struct notify_delivery *d, size_t *len)
{
    char *text = json_dumps(d->job, JSON_COMPACT);
    *len = text != NULL ? strlen(text) : 0;
    return text;
}

void notify_delivery_set_error(struct notify_delivery *d, const char *code, const char *fmt, ...)
{
    va_list ap;
    snprintf(d->code, sizeof(d->code), "%s", code);
    va_start(ap, fmt);
    vsnprintf(d->error, sizeof(d->error), fmt, ap);
    va_end(ap);
    /* Cut by bytes, a receiver's text may end inside a character: PostgreSQL and JSON
     * refuse that. */
    ab_utf8_sanitize(d->error);
}

void notify_delivery_free(struct notify_delivery *d)
{
    if (d == NULL)
        return;
    json_decref(d->job);
    free(d->key);
    free(d->traceparent);
    free(d->body);
    free(d->app_id);
    free(d->app_secret);
    free(d->base_url);
    free(d->user_id);
    free(d->open_id);
    free(d->text);
    free(d->retry_text);
    free(d);
}
