/* Outgoing webhook endpoints: the configuration's parser and the event names (outgoing.h). */
#include "common/outgoing.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "common/crypto.h"
#include "common/util.h"

#define SCHEDULE_MAX        50
#define EXPONENTIAL_BASE_MS 5000
#define EXPONENTIAL_MAX_MS  (10LL * 3600 * 1000)

static const struct {
    const char *name;
    const char *type; /* the CloudEvent type it is made from */
} events[AB_OUTGOING_EVENT__COUNT] = {
    [AB_OUTGOING_MESSAGE_RECEIVED] = {"message_received", "agentbus.message.received"},
    [AB_OUTGOING_AGENT_RESPONSE] = {"agent_response", "agentbus.agent_response"},
    [AB_OUTGOING_SESSION_STARTED] = {"session_started", "agentbus.session.started"},
    [AB_OUTGOING_SESSION_ENDED] = {"session_ended", "agentbus.session.ended"},
    [AB_OUTGOING_ERROR] = {"error", "agentbus.error"},
    [AB_OUTGOING_DELIVERY_SUCCEEDED] = {"delivery_succeeded", "agentbus.notify.delivered"},
    [AB_OUTGOING_DELIVERY_FAILED] = {"delivery_failed", "agentbus.notify.failed"},
};

const char *ab_outgoing_event_name(enum ab_hook_event ev)
{
    return (unsigned)ev < AB_OUTGOING_EVENT__COUNT ? events[ev].name : "unknown";
}

bool ab_outgoing_event_of_type(const char *type, enum ab_hook_event *out)
{
    for (int i = 0; type != NULL && i < AB_OUTGOING_EVENT__COUNT; i++) {
        if (strcmp(events[i].type, type) == 0) {
            *out = (enum ab_hook_event)i;
            return true;
        }
    }
    return false;
}

size_t ab_outgoing_parse_schedule(const char *text, int64_t **out)
{
    int64_t *waits = ab_xcalloc(SCHEDULE_MAX, sizeof(*waits));
    size_t n = 0;
    const char *p = text;

    while (p != NULL && *p != '\0') {
        char *end;
        errno = 0;
        while (*p == ' ')
            p++;
        if (*p < '0' || *p > '9' || n == SCHEDULE_MAX)
            goto bad;
        long long v = strtoll(p, &end, 10);
        if (errno != 0 || v > AB_RETRY_DELAY_MAX_MS)
            goto bad;
        waits[n++] = v;
        while (*end == ' ')
            end++;
        if (*end == ',')
            end++;
        else if (*end != '\0')
            goto bad;
        p = end;
    }
    if (n == 0)
        goto bad;
    *out = waits;
    return n;
bad:
    free(waits);
    return 0;
}

bool ab_outgoing_id_valid(const char *id)
{
    size_t n = strlen(id);
    if (n == 0 || n > AB_OUTGOING_ID_MAX)
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = id[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '_' || c == '-'))
            return false;
    }
    return true;
}

bool ab_outgoing_url_valid(const char *url)
{
    const char *rest;
    if (strncasecmp(url, "http://", 7) == 0)
        rest = url + 7;
    else if (strncasecmp(url, "https://", 8) == 0)
        rest = url + 8;
    else
        return false;
    size_t host_len = strcspn(rest, "/?#");
    /* user info in the URL would be sent as Basic auth and logged with the URL */
    if (host_len == 0 || memchr(rest, '@', host_len) != NULL)
        return false;
    for (const char *c = url; *c; c++)
        if ((unsigned char)*c <= ' ' || *c == 0x7f)
            return false;
    return strlen(url) <= 2048;
}

struct parse {
    char *errstr;
    size_t errstr_size;
    const char *id; /* the endpoint being parsed, for messages */
    size_t index;
};

static enum ab_err fail(struct parse *ps, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static enum ab_err fail(struct parse *ps, const char *fmt, ...)
{
    char what[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof(what), fmt, ap);
    va_end(ap);
    if (ps->id != NULL)
        snprintf(ps->errstr, ps->errstr_size, "webhooks.outgoing[%zu] (\"%s\"): %s", ps->index,
                 ps->id, what);
    else
        snprintf(ps->errstr, ps->errstr_size, "webhooks.outgoing[%zu]: %s", ps->index, what);
    return AB_ERR_CONFIG;
}

static enum ab_err parse_events(struct parse *ps, const json_t *v, unsigned *mask)
{
    size_t i;
    json_t *e;

    if (!json_is_array(v) || json_array_size(v) == 0)
        return fail(ps, "%s", "events must be a non-empty list of event names");
    *mask = 0;
    json_array_foreach(v, i, e)
    {
        const char *name = json_string_value(e);
        int k;
        if (name == NULL)
            return fail(ps, "%s", "events must be strings");
        if (strcmp(name, "*") == 0) {
            *mask = (1u << AB_OUTGOING_EVENT__COUNT) - 1;
            continue;
        }
        for (k = 0; k < AB_OUTGOING_EVENT__COUNT; k++)
            if (strcmp(events[k].name, name) == 0)
                break;
        if (k == AB_OUTGOING_EVENT__COUNT)
            return fail(ps,
                        "unknown event \"%s\" (message_received, agent_response, "
                        "session_started, session_ended, error, delivery_succeeded, "
                        "delivery_failed, or *)",
                        name);
        *mask |= 1u << k;
    }
    return AB_OK;
}

static enum ab_err parse_secrets(struct parse *ps, const json_t *v, struct ab_outgoing_endpoint *ep)
{
    const json_t *list[AB_OUTGOING_MAX_SECRETS];
    size_t n = 0, i;
    json_t *e;

    if (json_is_string(v)) {
        list[n++] = v;
    } else if (json_is_array(v) && json_array_size(v) >= 1 &&
               json_array_size(v) <= AB_OUTGOING_MAX_SECRETS) {
        json_array_foreach(v, i, e) list[n++] = e;
    } else {
        return fail(ps, "%s", "secret must be a string or a list of 1 to 4 strings");
    }
    for (i = 0; i < n; i++) {
        const char *s = json_string_value(list[i]);
        if (s == NULL || s[0] == '\0')
            return fail(ps, "%s", "secret must be a non-empty string");
        if (ep->format == AB_OUTGOING_STANDARD && !ab_webhook_secret_valid(s))
            return fail(ps, "%s",
                        "secret must be whsec_ followed by the base64 of 24 to 64 "
                        "random bytes");
        if (ep->format == AB_OUTGOING_FEISHU_BOT && n > 1)
            return fail(ps, "%s", "a feishu_bot endpoint has one secret");
        ep->secrets[ep->secret_count++] = ab_xstrdup(s);
    }
    return AB_OK;
}

/* The retry object: maxAttempts, backoff, scheduleMs; see outgoing.h. */
static enum ab_err parse_retry(struct parse *ps, const json_t *v, const int64_t *def,
                               size_t def_len, struct ab_outgoing_endpoint *ep)
{
    long long max_attempts = -1;
    const char *backoff = NULL;
    const json_t *schedule = NULL;
    const char *key;
    json_t *f;
    size_t n = 0;

    if (v != NULL && !json_is_object(v))
        return fail(ps, "%s", "retry must be an object");
    if (v != NULL) {
        json_object_foreach((json_t *)v, key, f)
        {
            if (strcmp(key, "maxAttempts") == 0) {
                if (!json_is_integer(f) || json_integer_value(f) < 1 ||
                    json_integer_value(f) > SCHEDULE_MAX)
                    return fail(ps, "%s", "retry.maxAttempts must be an integer from 1 to 50");
                max_attempts = json_integer_value(f);
            } else if (strcmp(key, "backoff") == 0) {
                backoff = json_string_value(f);
                if (backoff == NULL ||
                    (strcmp(backoff, "exponential") != 0 && strcmp(backoff, "schedule") != 0))
                    return fail(ps, "%s",
                                "retry.backoff must be \"exponential\" or "
                                "\"schedule\"");
            } else if (strcmp(key, "scheduleMs") == 0) {
                schedule = f;
            } else {
                return fail(ps, "unknown field retry.%s", key);
            }
        }
    }
    ep->schedule = ab_xcalloc(SCHEDULE_MAX, sizeof(int64_t));
    if (schedule != NULL) {
        size_t i;
        json_t *e;
        if (!json_is_array(schedule) || json_array_size(schedule) > SCHEDULE_MAX)
            return fail(ps, "%s", "retry.scheduleMs must be a list of up to 50 waits in ms");
        json_array_foreach(schedule, i, e)
        {
            if (!json_is_integer(e) || json_integer_value(e) < 0 ||
                json_integer_value(e) > AB_RETRY_DELAY_MAX_MS)
                return fail(ps, "%s", "retry.scheduleMs entries must be integers >= 0");
            ep->schedule[n++] = json_integer_value(e);
        }
    } else if (backoff != NULL && strcmp(backoff, "exponential") == 0) {
        /* The seed's "exponential": 5 s, doubling, capped at 10 h; its length follows
         * maxAttempts (the default schedule's 8 attempts when not given). */
        size_t len = max_attempts > 0 ? (size_t)max_attempts - 1 : def_len;
        int64_t wait = EXPONENTIAL_BASE_MS;
        for (n = 0; n < len; n++) {
            ep->schedule[n] = wait;
            wait = wait * 2 > EXPONENTIAL_MAX_MS ? EXPONENTIAL_MAX_MS : wait * 2;
        }
    } else {
        for (n = 0; n < def_len && n < SCHEDULE_MAX; n++)
            ep->schedule[n] = def[n];
    }
    if (max_attempts > 0) {
        /* Fewer attempts cut the schedule; more repeat its last wait. */
        size_t want = (size_t)max_attempts - 1;
        for (; n < want; n++)
            ep->schedule[n] = n > 0 ? ep->schedule[n - 1] : EXPONENTIAL_BASE_MS;
        n = want;
    }
    ab_outgoing_use_schedule(ep, n);
    return AB_OK;
}

static enum ab_err parse_endpoint(struct parse *ps, const json_t *obj, const int64_t *def,
                                  size_t def_len, long def_timeout, struct ab_outgoing_endpoint *ep)
{
    const json_t *retry = NULL, *secret = NULL, *evs = NULL;
    const char *key;
    json_t *v;
    enum ab_err err;

    if (!json_is_object(obj))
        return fail(ps, "%s", "each endpoint must be an object");
    const char *id = json_string_value(json_object_get(obj, "id"));
    if (id == NULL || !ab_outgoing_id_valid(id))
        return fail(ps, "%s", "id must be 1 to 100 characters of A-Z a-z 0-9 . _ -");
    ps->id = id;
    ep->id = ab_xstrdup(id);
    ep->method = ab_xstrdup("POST");
    ep->timeout_ms = def_timeout;
    json_object_foreach((json_t *)obj, key, v)
    {
        if (strcmp(key, "id") == 0) {
            continue;
        } else if (strcmp(key, "url") == 0) {
            const char *url = json_string_value(v);
            if (url == NULL || !ab_outgoing_url_valid(url))
                return fail(ps, "%s",
                            "url must be an http:// or https:// URL without user "
                            "info or spaces");
            ep->url = ab_xstrdup(url);
        } else if (strcmp(key, "events") == 0) {
            evs = v;
        } else if (strcmp(key, "method") == 0) {
            const char *m = json_string_value(v);
            if (m == NULL || (strcmp(m, "POST") != 0 && strcmp(m, "PUT") != 0))
                return fail(ps, "%s", "method must be POST or PUT");
            free(ep->method);
            ep->method = ab_xstrdup(m);
        } else if (strcmp(key, "secret") == 0 || strcmp(key, "secrets") == 0) {
            secret = v;
        } else if (strcmp(key, "format") == 0) {
            const char *f = json_string_value(v);
            if (f != NULL && strcmp(f, "standard") == 0)
                ep->format = AB_OUTGOING_STANDARD;
            else if (f != NULL && strcmp(f, "feishu_bot") == 0)
                ep->format = AB_OUTGOING_FEISHU_BOT;
            else
                return fail(ps, "%s", "format must be \"standard\" or \"feishu_bot\"");
        } else if (strcmp(key, "tenant_id") == 0) {
            const char *t = json_string_value(v);
            if (t == NULL || !ab_uuid_valid(t))
                return fail(ps, "%s", "tenant_id must be a UUID");
            ep->tenant_id = ab_xstrdup(t);
        } else if (strcmp(key, "timeoutMs") == 0) {
            if (!json_is_integer(v) || json_integer_value(v) < 100 ||
                json_integer_value(v) > 300000)
                return fail(ps, "%s", "timeoutMs must be an integer from 100 to 300000");
            ep->timeout_ms = (long)json_integer_value(v);
        } else if (strcmp(key, "retry") == 0) {
            retry = v;
        } else {
            return fail(ps, "unknown field \"%s\"", key);
        }
    }
    if (ep->url == NULL)
        return fail(ps, "%s", "url is required");
    err = parse_events(ps, evs, &ep->events);
    if (!err && secret != NULL)
        err = parse_secrets(ps, secret, ep);
    if (!err)
        err = parse_retry(ps, retry, def, def_len, ep);
    return err;
}

enum ab_err ab_outgoing_parse(const json_t *webhooks, const int64_t *default_schedule_ms,
                              size_t default_schedule_len, long default_timeout_ms,
                              struct ab_outgoing **out, char *errstr, size_t errstr_size)
{
    struct ab_outgoing *o = ab_xcalloc(1, sizeof(*o));
    struct parse ps = {.errstr = errstr, .errstr_size = errstr_size};
    const json_t *list = webhooks != NULL ? json_object_get(webhooks, "outgoing") : NULL;
    enum ab_err err = AB_OK;
    json_t *e;

    *out = NULL;
    if (list != NULL && !json_is_array(list)) {
        snprintf(errstr, errstr_size, "webhooks.outgoing must be a list");
        ab_outgoing_free(o);
        return AB_ERR_CONFIG;
    }
    if (list != NULL && json_array_size(list) > AB_OUTGOING_MAX_ENDPOINTS) {
        snprintf(errstr, errstr_size, "webhooks.outgoing: at most %d endpoints",
                 AB_OUTGOING_MAX_ENDPOINTS);
        ab_outgoing_free(o);
        return AB_ERR_CONFIG;
    }
    size_t n = list != NULL ? json_array_size(list) : 0;
    o->endpoints = ab_xcalloc(n > 0 ? n : 1, sizeof(*o->endpoints));
    json_array_foreach(list, ps.index, e)
    {
        ps.id = NULL;
        err = parse_endpoint(&ps, e, default_schedule_ms, default_schedule_len, default_timeout_ms,
                             &o->endpoints[o->count]);
        o->count++;
        if (err)
            break;
        for (size_t k = 0; k + 1 < o->count; k++)
            if (strcmp(o->endpoints[k].id, ps.id) == 0) {
                err = fail(&ps, "%s", "id is used by an earlier endpoint");
                break;
            }
        if (err)
            break;
    }
    if (err) {
        ab_outgoing_free(o);
        return err;
    }
    *out = o;
    return AB_OK;
}

void ab_outgoing_use_schedule(struct ab_outgoing_endpoint *ep, size_t n)
{
    ep->retry = (struct ab_retry_policy){
        .kind = AB_RETRY_SCHEDULE,
        .schedule_ms = ep->schedule,
        .schedule_len = n,
        .jitter = 0.1,
        .retry_after_cap_ms = 3600 * 1000,
    };
}

void ab_outgoing_endpoint_cleanup(struct ab_outgoing_endpoint *ep)
{
    free(ep->id);
    free(ep->url);
    free(ep->method);
    free(ep->tenant_id);
    for (size_t k = 0; k < ep->secret_count; k++)
        free(ep->secrets[k]);
    free(ep->schedule);
}

void ab_outgoing_free(struct ab_outgoing *o)
{
    if (o == NULL)
        return;
    for (size_t i = 0; i < o->count; i++)
        ab_outgoing_endpoint_cleanup(&o->endpoints[i]);
    free(o->endpoints);
    free(o);
}

bool ab_feishu_chat_id_valid(const char *id)
{
    size_t n = id != NULL ? strlen(id) : 0;
    return n >= 1 && n <= AB_FEISHU_CHAT_ID_MAX &&
           strspn(id, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-") == n;
}

const struct ab_outgoing_endpoint *ab_outgoing_find(const struct ab_outgoing *o, const char *id)
{
    for (size_t i = 0; o != NULL && id != NULL && i < o->count; i++)
        if (strcmp(o->endpoints[i].id, id) == 0)
            return &o->endpoints[i];
    return NULL;
}
