/* Delivery jobs and retries as events (delivery.h). */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/crypto.h"
#include "common/trace.h"
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

/* A Feishu job: the message.sent data the dispatcher routed to a member, or a message a
 * webhook handler sends to a group chat (target.type "chat"; no type is a member). */
static enum ab_err read_feishu(struct notify_delivery *d, const json_t *data, char *reason,
                               size_t size)
{
    const char *type = str_at(data, "target", "type");
    const char *target = str_at(data, "target", "id");
    const char *tenant = str_at(data, "tenant_id", NULL);
    const char *content = str_at(data, "content", NULL);
    bool chat = type != NULL && strcmp(type, "chat") == 0;

    if (type != NULL && !chat && strcmp(type, "member") != 0)
        return bad(reason, size, NOTIFY_TYPE_FEISHU,
                   "data.target.type must be \"member\" or \"chat\"");
    if (chat && !ab_feishu_chat_id_valid(target))
        return bad(reason, size, NOTIFY_TYPE_FEISHU,
                   "data.target.id must be a chat id (1 to 128 of A-Z a-z 0-9 _ -)");
    if (!chat && (target == NULL || !ab_uuid_valid(target)))
        return bad(reason, size, NOTIFY_TYPE_FEISHU, "data.target.id must be a member's UUID");
    if (tenant == NULL || !ab_uuid_valid(tenant))
        return bad(reason, size, NOTIFY_TYPE_FEISHU, "data.tenant_id must be a UUID");
    if (content == NULL || content[0] == '\0')
        return bad(reason, size, NOTIFY_TYPE_FEISHU, "data.content must be a non-empty string");
    d->kind = NOTIFY_FEISHU;
    snprintf(d->tenant_id, sizeof(d->tenant_id), "%s", tenant);
    if (chat) {
        snprintf(d->chat_id, sizeof(d->chat_id), "%s", target);
        snprintf(d->destination, sizeof(d->destination), "feishu:chat:%s", target);
    } else {
        snprintf(d->member_id, sizeof(d->member_id), "%s", target);
        snprintf(d->destination, sizeof(d->destination), "feishu:%s", target);
    }
    /* Feishu keeps a uuid for an hour and posts a message for it at most once: derived
     * from the delivery and the receiver, every attempt of this delivery carries the same
     * one, and a send that timed out after Feishu took it cannot post twice. */
    char name[AB_UUID_LEN + NOTIFY_CHAT_ID_MAX + 32];
    if (chat)
        snprintf(name, sizeof(name), "feishu:%s:chat:%s", d->id, target);
    else
        snprintf(name, sizeof(name), "feishu:%s:%s", d->id, target);
    ab_uuid_derive(name, d->uuid);
    return AB_OK;
}

static void forward_free(struct ab_outgoing_endpoint *ep)
{
    if (ep == NULL)
        return;
    ab_outgoing_endpoint_cleanup(ep);
    free(ep);
}

/* A forward's endpoint, from data.forward: {"hook_id", "url", "method"?, "secret"?,
 * "timeout_ms"?}, held to an endpoint's rules (common/outgoing.c). Unknown fields are
 * refused, as in the configuration: a misspelt "secret" must not send the body unsigned. */
static enum ab_err read_forward(struct notify_delivery *d, const json_t *fwd,
                                const struct notify_job_config *cfg, char *reason, size_t size)
{
    const char *hook = NULL, *url = NULL, *method = "POST", *secret = NULL;
    long timeout = cfg != NULL ? cfg->default_timeout_ms : 15000;
    const char *key;
    json_t *v;

    if (!json_is_object(fwd))
        return bad(reason, size, NOTIFY_TYPE_WEBHOOK, "data.forward must be an object");
    json_object_foreach((json_t *)fwd, key, v)
    {
        if (strcmp(key, "hook_id") == 0) {
            hook = json_string_value(v);
            if (hook == NULL || !ab_outgoing_id_valid(hook))
                return bad(reason, size, NOTIFY_TYPE_WEBHOOK,
                           "data.forward.hook_id must be 1 to 100 of A-Z a-z 0-9 . _ -");
        } else if (strcmp(key, "url") == 0) {
            url = json_string_value(v);
            if (url == NULL || !ab_outgoing_url_valid(url))
                return bad(reason, size, NOTIFY_TYPE_WEBHOOK,
                           "data.forward.url must be an http:// or https:// URL without user "
                           "info or spaces");
        } else if (strcmp(key, "method") == 0) {
            method = json_string_value(v);
            if (method == NULL || (strcmp(method, "POST") != 0 && strcmp(method, "PUT") != 0))
                return bad(reason, size, NOTIFY_TYPE_WEBHOOK,
                           "data.forward.method must be POST or PUT");
        } else if (strcmp(key, "secret") == 0) {
            if (json_is_null(v))
                continue;
            secret = json_string_value(v);
            if (secret == NULL || !ab_webhook_secret_valid(secret))
                return bad(reason, size, NOTIFY_TYPE_WEBHOOK,
                           "data.forward.secret must be whsec_ followed by the base64 of 24 to "
                           "64 bytes");
        } else if (strcmp(key, "timeout_ms") == 0) {
            if (json_is_null(v))
                continue;
            if (!json_is_integer(v) || json_integer_value(v) < NOTIFY_FORWARD_TIMEOUT_MIN_MS ||
                json_integer_value(v) > NOTIFY_FORWARD_TIMEOUT_MAX_MS)
                return bad(reason, size, NOTIFY_TYPE_WEBHOOK,
                           "data.forward.timeout_ms must be an integer from 100 to 300000");
            timeout = (long)json_integer_value(v);
        } else {
            snprintf(reason, size, "%s: unknown field data.forward.%s", NOTIFY_TYPE_WEBHOOK, key);
            ab_utf8_sanitize(reason);
            return AB_ERR_INVALID;
        }
    }
    if (hook == NULL || url == NULL)
        return bad(reason, size, NOTIFY_TYPE_WEBHOOK, "data.forward needs hook_id and url");

    struct ab_outgoing_endpoint *ep = ab_xcalloc(1, sizeof(*ep));
    size_t len = cfg != NULL ? cfg->default_schedule_len : 0;
    char id[AB_OUTGOING_ID_MAX + 16];
    snprintf(id, sizeof(id), "forward:%s", hook);
    ep->id = ab_xstrdup(id);
    ep->url = ab_xstrdup(url);
    ep->method = ab_xstrdup(method);
    ep->format = AB_OUTGOING_STANDARD;
    ep->timeout_ms = timeout;
    if (secret != NULL)
        ep->secrets[ep->secret_count++] = ab_xstrdup(secret);
    /* The schedule is copied: the delivery owns everything its endpoint points at. */
    ep->schedule = ab_xcalloc(len > 0 ? len : 1, sizeof(*ep->schedule));
    if (len > 0)
        memcpy(ep->schedule, cfg->default_schedule_ms, len * sizeof(*ep->schedule));
    ab_outgoing_use_schedule(ep, len);
    d->forward = ep;
    d->endpoint = ep;
    snprintf(d->destination, sizeof(d->destination), "%s", id);
    return AB_OK;
}

/* An outgoing webhook job: the dispatcher's fan-out of one event to one endpoint, or an
 * incoming webhook's body forwarded to the URL its handler names. */
static enum ab_err read_webhook(struct notify_delivery *d, const json_t *data,
                                const struct notify_job_config *cfg, char *reason, size_t size)
{
    const char *endpoint = str_at(data, "endpoint_id", NULL);
    const json_t *forward = json_object_get(data, "forward");
    const char *event = str_at(data, "event", NULL);
    const char *tenant = str_at(data, "tenant_id", NULL);
    const json_t *payload = json_object_get(data, "payload");
    enum ab_err err;

    if (json_is_null(forward))
        forward = NULL;
    if (forward != NULL && endpoint != NULL)
        return bad(reason, size, NOTIFY_TYPE_WEBHOOK,
                   "data has both endpoint_id and forward: one or the other");
    if (forward == NULL && (endpoint == NULL || endpoint[0] == '\0'))
        return bad(reason, size, NOTIFY_TYPE_WEBHOOK, "data.endpoint_id is required");
    /* An endpoint's payload is the seed's outgoing object; a forward's is whatever body
     * the incoming webhook received. */
    if (event == NULL || (forward == NULL && !json_is_object(payload)))
        return bad(reason, size, NOTIFY_TYPE_WEBHOOK,
                   "data.event and data.payload (an object) are required");
    if (forward != NULL && payload == NULL)
        return bad(reason, size, NOTIFY_TYPE_WEBHOOK,
                   "data.event and data.payload (any JSON value) are required");
    d->kind = NOTIFY_WEBHOOK;
    if (forward != NULL) {
        err = read_forward(d, forward, cfg, reason, size);
        if (err != AB_OK)
            return err;
    } else {
        snprintf(d->destination, sizeof(d->destination), "webhook:%s", endpoint);
    }
    snprintf(d->event_type, sizeof(d->event_type), "%s", event);
    /* Cut to size, text from a job could end inside a character. */
    ab_utf8_sanitize(d->destination);
    ab_utf8_sanitize(d->event_type);
    if (tenant != NULL && ab_uuid_valid(tenant))
        snprintf(d->tenant_id, sizeof(d->tenant_id), "%s", tenant);
    d->about_outcome = json_is_true(json_object_get(data, "about_outcome"));
    d->body = json_dumps(payload, JSON_COMPACT | JSON_ENCODE_ANY);
    if (d->body == NULL)
        return bad(reason, size, NOTIFY_TYPE_WEBHOOK, "data.payload cannot be serialized");
    d->body_len = strlen(d->body);
    if (forward != NULL)
        return AB_OK;
    d->endpoint = ab_outgoing_find(cfg != NULL ? cfg->outgoing : NULL, endpoint);
    if (d->endpoint == NULL) {
        snprintf(reason, size, "%s: endpoint \"%s\" is not configured (any more)",
                 NOTIFY_TYPE_WEBHOOK, endpoint);
        return AB_ERR_NOT_FOUND;
    }
    return AB_OK;
}

const char *notify_delivery_endpoint_id(const struct notify_delivery *d)
{
    if (d->forward != NULL)
        return d->forward->id;
    if (strncmp(d->destination, "webhook:", 8) == 0)
        return d->destination + 8;
    return d->destination;
}

enum ab_err notify_delivery_from_job(struct notify_delivery *d, const struct ab_event *ev,
                                     const char *key, const struct notify_job_config *cfg,
                                     char *reason, size_t size)
{
    if (!ab_uuid_valid(ev->id))
        return bad(reason, size, ev->type, "a delivery's id must be a UUID");
    snprintf(d->id, sizeof(d->id), "%s", ev->id);
    d->job = ab_event_to_json(ev);
    d->key = ab_xstrdup(key != NULL ? key : "");
    /* The delivery's span: the notifier's, when it is working on the message in its
     * consumer's span; else (a retry read back from its schedule) the job's own. */
    char span[AB_TRACEPARENT_LEN + 1];
    d->traceparent = ab_xstrdup(ab_trace_current_header(span) ? span : ev->traceparent);
    d->attempt = 1;
    d->retry_after_ms = -1;
    if (!ab_time_parse_rfc3339(ev->time, &d->job_time_ms))
        d->job_time_ms = ab_wall_ms();
    if (!json_is_object(ev->data))
        return bad(reason, size, ev->type, "data must be an object");
    if (strcmp(ev->type, NOTIFY_TYPE_FEISHU) == 0)
        return read_feishu(d, ev->data, reason, size);
    if (strcmp(ev->type, NOTIFY_TYPE_WEBHOOK) == 0)
        return read_webhook(d, ev->data, cfg, reason, size);
    snprintf(reason, size, "notifier: unknown delivery type \"%s\"", ev->type);
    return AB_ERR_INVALID;
}

enum ab_err notify_delivery_from_retry(struct notify_delivery *d, const struct ab_event *ev,
                                       const struct notify_job_config *cfg, int64_t *due_ms,
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
    err = notify_delivery_from_job(d, inner, str_at(ev->data, "key", NULL), cfg, reason, size);
    ab_event_free(inner);
    if (ab_trace_current() == NULL && ev->traceparent != NULL) {
        /* Read back from its schedule: the retry names the delivery's own span. */
        free(d->traceparent);
        d->traceparent = ab_xstrdup(ev->traceparent);
    }
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
    forward_free(d->forward);
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
