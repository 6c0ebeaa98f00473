/* Incoming webhooks' configuration (incoming.h). */
#include "common/incoming.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "common/crypto.h"
#include "common/outgoing.h"
#include "common/template.h"
#include "common/util.h"
#include "common/webhook_auth.h"

#define DEFAULT_SECRET_HEADER "X-Webhook-Secret"
#define DEFAULT_PREFIX        "hook:"
#define SESSION_KEY_MAX       200
#define TOPIC_MAX             249
#define SECRET_MAX            512
#define URL_MAX               2048 /* ab_outgoing_url_valid's limit */

static const char *const action_names[] = {
    [AB_HOOK_SEND_MESSAGE] = "send_message",
    [AB_HOOK_RUN_AGENT] = "run_agent",
    [AB_HOOK_FORWARD] = "forward",
    [AB_HOOK_CUSTOM] = "custom",
};

const char *ab_hook_action_name(enum ab_hook_action a)
{
    return (unsigned)a <= AB_HOOK_CUSTOM ? action_names[a] : "unknown";
}

struct parse {
    char *errstr;
    size_t errstr_size;
    const char *where; /* "webhooks.handlers[3] (\"github\")", "webhooks.incoming", ... */
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
    snprintf(ps->errstr, ps->errstr_size, "%s: %s", ps->where, what);
    return AB_ERR_CONFIG;
}

/* [A-Za-z0-9._-]{1,max}: path segments and Kafka topic names. */
static bool name_valid(const char *s, size_t max)
{
    size_t n = strlen(s);
    if (n == 0 || n > max)
        return false;
    for (size_t i = 0; i < n; i++)
        if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= 'A' && s[i] <= 'Z') ||
              (s[i] >= '0' && s[i] <= '9') || s[i] == '.' || s[i] == '_' || s[i] == '-'))
            return false;
    return true;
}

/* "/a/b": segments of [A-Za-z0-9._-], no "." or ".." segment, not under /webhook/ (the
 * hooks' own prefix) and not the root. */
static bool path_valid(const char *p)
{
    size_t n = strlen(p);
    if (n < 2 || n > 200 || p[0] != '/' || p[n - 1] == '/' || strncmp(p, "/webhook/", 9) == 0 ||
        strcmp(p, "/webhook") == 0)
        return false;
    for (const char *seg = p + 1; seg <= p + n;) {
        size_t len = strcspn(seg, "/");
        char part[201];
        memcpy(part, seg, len);
        part[len] = '\0';
        if (!name_valid(part, 200) || strcmp(part, ".") == 0 || strcmp(part, "..") == 0)
            return false;
        seg += len + 1;
    }
    return true;
}

/* A string field: *out is a copy, or stays NULL when absent. */
static enum ab_err get_str(struct parse *ps, const json_t *obj, const char *name, size_t max,
                           char **out)
{
    const json_t *v = json_object_get(obj, name);
    if (v == NULL || json_is_null(v))
        return AB_OK;
    if (!json_is_string(v) || json_string_length(v) == 0 || json_string_length(v) > max ||
        strlen(json_string_value(v)) != json_string_length(v))
        return fail(ps, "\"%s\" must be a string of 1 to %zu bytes", name, max);
    free(*out);
    *out = ab_xstrdup(json_string_value(v));
    return AB_OK;
}

static enum ab_err get_bool(struct parse *ps, const json_t *obj, const char *name, bool *out)
{
    const json_t *v = json_object_get(obj, name);
    if (v == NULL || json_is_null(v))
        return AB_OK;
    if (!json_is_boolean(v))
        return fail(ps, "\"%s\" must be true or false", name);
    *out = json_is_true(v);
    return AB_OK;
}

static enum ab_err get_int(struct parse *ps, const json_t *obj, const char *name, long long lo,
                           long long hi, long long *out)
{
    const json_t *v = json_object_get(obj, name);
    if (v == NULL || json_is_null(v))
        return AB_OK;
    if (!json_is_integer(v) || json_integer_value(v) < lo || json_integer_value(v) > hi)
        return fail(ps, "\"%s\" must be an integer from %lld to %lld", name, lo, hi);
    *out = json_integer_value(v);
    return AB_OK;
}

/* A secret given as a string or a list of up to AB_HOOK_MAX_SECRETS (a rotation). */
static enum ab_err get_secrets(struct parse *ps, const json_t *obj, const char *name, char **out,
                               size_t *count)
{
    const json_t *v = json_object_get(obj, name);
    if (v == NULL || json_is_null(v))
        return AB_OK;
    size_t n = json_is_array(v) ? json_array_size(v) : 1;
    if ((!json_is_string(v) && !json_is_array(v)) || n == 0 || n > AB_HOOK_MAX_SECRETS)
        return fail(ps, "\"%s\" must be a string or a list of 1 to %d strings", name,
                    AB_HOOK_MAX_SECRETS);
    for (size_t i = 0; i < *count; i++) {
        free(out[i]);
        out[i] = NULL;
    }
    *count = 0;
    for (size_t i = 0; i < n; i++) {
        const json_t *s = json_is_array(v) ? json_array_get(v, i) : v;
        if (!json_is_string(s) || json_string_length(s) < 8 || json_string_length(s) > SECRET_MAX ||
            strlen(json_string_value(s)) != json_string_length(s))
            return fail(ps, "\"%s\": a secret must be a string of 8 to %d bytes", name, SECRET_MAX);
        out[(*count)++] = ab_xstrdup(json_string_value(s));
    }
    return AB_OK;
}

static enum ab_err refuse_unknown(struct parse *ps, const json_t *obj, const char *prefix,
                                  const char *const *known)
{
    const char *key;
    const json_t *value;
    json_object_foreach((json_t *)obj, key, value)
    {
        size_t i = 0;
        while (known[i] != NULL && strcmp(known[i], key) != 0)
            i++;
        if (known[i] == NULL)
            return fail(ps, "unknown field \"%s%s\"", prefix, key);
    }
    return AB_OK;
}

static enum ab_err parse_target(struct parse *ps, const json_t *def, struct ab_hook *h)
{
    static const char *const send_fields[] = {"channel", "peer", NULL};
    static const char *const forward_fields[] = {"url", "method", NULL};
    static const char *const custom_fields[] = {"topic", NULL};
    const json_t *t = json_object_get(def, "target");
    enum ab_err err = AB_OK;
    if (h->action == AB_HOOK_RUN_AGENT) {
        if (t != NULL && !json_is_null(t))
            return fail(ps, "run_agent takes \"agentId\", not \"target\"");
        err = get_str(ps, def, "agentId", 200, &h->agent);
        if (!err && h->agent == NULL)
            err = fail(ps, "run_agent needs \"agentId\" (an agent's name or id)");
        return err;
    }
    if (json_object_get(def, "agentId") != NULL)
        return fail(ps, "\"agentId\" belongs to run_agent; %s takes \"target\"",
                    ab_hook_action_name(h->action));
    if (!json_is_object(t))
        return fail(ps, "%s needs \"target\", an object", ab_hook_action_name(h->action));
    struct parse sub = *ps;
    char where[300];
    snprintf(where, sizeof(where), "%s target", ps->where);
    sub.where = where;
    switch (h->action) {
    case AB_HOOK_SEND_MESSAGE:
        err = refuse_unknown(&sub, t, "", send_fields);
        if (!err)
            err = get_str(&sub, t, "channel", 16, &h->channel);
        if (!err)
            err = get_str(&sub, t, "peer", 200, &h->peer);
        if (!err && h->channel != NULL && strcasecmp(h->channel, "lark") == 0) {
            free(h->channel);
            h->channel = ab_xstrdup("feishu");
        }
        if (!err && (h->channel == NULL ||
                     (strcmp(h->channel, "feishu") != 0 && strcmp(h->channel, "chat") != 0 &&
                      strcmp(h->channel, "agent") != 0)))
            err = fail(&sub, "\"channel\" must be \"feishu\" (a person), \"chat\" (a Feishu "
                             "group chat id) or \"agent\"");
        if (!err && h->peer == NULL)
            err = fail(&sub, "\"peer\" is required: whom the message is for");
        if (!err && strcmp(h->channel, "chat") == 0 && !ab_feishu_chat_id_valid(h->peer))
            err = fail(&sub, "\"peer\" of a chat is a Feishu chat_id (1-128 of [A-Za-z0-9_-])");
        return err;
    case AB_HOOK_FORWARD:
        err = refuse_unknown(&sub, t, "", forward_fields);
        if (!err)
            err = get_str(&sub, t, "url", URL_MAX, &h->forward_url);
        if (!err && (h->forward_url == NULL || !ab_outgoing_url_valid(h->forward_url)))
            err = fail(&sub, "\"url\" must be an http or https URL without user info");
        if (!err)
            err = get_str(&sub, t, "method", 8, &h->forward_method);
        if (!err && h->forward_method == NULL)
            h->forward_method = ab_xstrdup("POST");
        if (!err && strcmp(h->forward_method, "POST") != 0 && strcmp(h->forward_method, "PUT") != 0)
            err = fail(&sub, "\"method\" must be POST or PUT");
        return err;
    case AB_HOOK_CUSTOM:
        err = refuse_unknown(&sub, t, "", custom_fields);
        if (!err)
            err = get_str(&sub, t, "topic", TOPIC_MAX, &h->topic);
        if (!err && (h->topic == NULL || !name_valid(h->topic, TOPIC_MAX) ||
                     strcmp(h->topic, ".") == 0 || strcmp(h->topic, "..") == 0))
            err = fail(&sub, "\"topic\" must be a Kafka topic name ([A-Za-z0-9._-], 1-249)");
        /* Not agentbus' own (under any prefix: the dispatcher would consume its own copy
         * again) nor Kafka's internal ones. */
        if (!err && (strstr(h->topic, "agentbus.") != NULL || strncmp(h->topic, "__", 2) == 0))
            err = fail(&sub, "\"topic\" must not be one of agentbus' own topics or Kafka's "
                             "internal ones");
        return err;
    case AB_HOOK_RUN_AGENT:
        break;
    }
    return err;
}

static enum ab_err parse_session(struct parse *ps, const json_t *def, struct ab_hook *h)
{
    char *mode = NULL;
    enum ab_err err = get_str(ps, def, "sessionMode", 16, &mode);
    if (!err && mode != NULL && strcmp(mode, "persistent") != 0 && strcmp(mode, "isolated") != 0)
        err = fail(ps, "\"sessionMode\" must be \"isolated\" or \"persistent\"");
    h->persistent = mode != NULL && strcmp(mode, "persistent") == 0;
    free(mode);
    if (!err)
        err = get_str(ps, def, "sessionKey", SESSION_KEY_MAX, &h->session_key);
    if (!err && h->persistent && h->session_key == NULL)
        err = fail(ps, "sessionMode \"persistent\" needs \"sessionKey\"");
    if (!err && !h->persistent && h->session_key != NULL)
        err = fail(ps, "\"sessionKey\" needs sessionMode \"persistent\"");
    if (!err)
        err = get_bool(ps, def, "allowRequestSessionKey", &h->allow_request_session_key);
    const json_t *prefixes = json_object_get(def, "allowedSessionKeyPrefixes");
    if (!err && prefixes != NULL && !json_is_null(prefixes)) {
        if (!json_is_array(prefixes) || json_array_size(prefixes) == 0 ||
            json_array_size(prefixes) > AB_HOOK_MAX_PREFIXES)
            return fail(ps, "\"allowedSessionKeyPrefixes\" must be a list of 1 to %d strings",
                        AB_HOOK_MAX_PREFIXES);
        for (size_t i = 0; i < json_array_size(prefixes); i++) {
            const json_t *p = json_array_get(prefixes, i);
            if (!json_is_string(p) || json_string_length(p) == 0 ||
                json_string_length(p) > SESSION_KEY_MAX)
                return fail(ps, "\"allowedSessionKeyPrefixes\"[%zu] must be a non-empty string", i);
            h->session_prefixes[h->prefix_count++] = ab_xstrdup(json_string_value(p));
        }
    }
    if (!err && h->prefix_count == 0)
        h->session_prefixes[h->prefix_count++] = ab_xstrdup(DEFAULT_PREFIX);
    return err;
}

static enum ab_err parse_signature(struct parse *ps, const json_t *def, struct ab_hook *h)
{
    static const char *const fields[] = {"scheme", "secret", "toleranceS", NULL};
    const json_t *sig = json_object_get(def, "signature");
    char *scheme = NULL;
    h->tolerance_s = 300;
    if (sig == NULL || json_is_null(sig))
        return AB_OK;
    if (!json_is_object(sig))
        return fail(ps, "\"signature\" must be an object {scheme, secret}");
    struct parse sub = *ps;
    char where[300];
    snprintf(where, sizeof(where), "%s signature", ps->where);
    sub.where = where;
    enum ab_err err = refuse_unknown(&sub, sig, "", fields);
    if (!err)
        err = get_str(&sub, sig, "scheme", 16, &scheme);
    if (!err && scheme != NULL && strcmp(scheme, "github") == 0)
        h->scheme = AB_HOOK_SIG_GITHUB;
    else if (!err && scheme != NULL && strcmp(scheme, "standard") == 0)
        h->scheme = AB_HOOK_SIG_STANDARD;
    else if (!err)
        err = fail(&sub, "\"scheme\" must be \"github\" or \"standard\" (Standard Webhooks)");
    free(scheme);
    if (!err)
        err = get_secrets(&sub, sig, "secret", h->signature_secrets, &h->signature_secret_count);
    if (!err && h->signature_secret_count == 0)
        err = fail(&sub, "\"secret\" is required");
    for (size_t i = 0; !err && h->scheme == AB_HOOK_SIG_STANDARD && i < h->signature_secret_count;
         i++)
        if (!ab_webhook_secret_valid(h->signature_secrets[i]))
            err = fail(&sub, "a Standard Webhooks secret is whsec_ and the base64 of 24 to 64 "
                             "bytes");
    if (!err)
        err = get_int(&sub, sig, "toleranceS", 10, 3600, &h->tolerance_s);
    return err;
}

static enum ab_err parse_allowlist(struct parse *ps, const json_t *list, struct ab_cidr_list **out)
{
    char why[256];
    if (list == NULL || json_is_null(list))
        return AB_OK;
    if (!json_is_array(list))
        return fail(ps, "\"allowedIPs\" must be a list of addresses and CIDRs");
    if (ab_cidr_list_new(list, out, why, sizeof(why)) != AB_OK)
        return fail(ps, "\"allowedIPs\": %s", why);
    return AB_OK;
}

static const char *const hook_fields[] = {
    "id",
    "path",
    "tenant",
    "action",
    "agentId",
    "target",
    "template",
    "sessionMode",
    "sessionKey",
    "allowRequestSessionKey",
    "allowedSessionKeyPrefixes",
    "secret",
    "secretHeader",
    "signature",
    "allowedIPs",
    "acceptText",
    "allowUnsafeExternalContent",
    "enabled",
    NULL,
};

static enum ab_err parse_hook(struct parse *ps, const json_t *def, const struct ab_incoming *in,
                              struct ab_hook *h)
{
    char *action = NULL, why[256];
    enum ab_err err = refuse_unknown(ps, def, "", hook_fields);
    if (!err)
        err = get_str(ps, def, "id", AB_HOOK_ID_MAX, &h->id);
    if (!err && (h->id == NULL || !ab_outgoing_id_valid(h->id)))
        err = fail(ps, "\"id\" must be 1 to %d of [A-Za-z0-9._-]", AB_HOOK_ID_MAX);
    if (!err)
        err = get_str(ps, def, "path", 200, &h->path);
    if (!err && h->path != NULL && !path_valid(h->path))
        err = fail(ps, "\"path\" must look like /github: segments of [A-Za-z0-9._-], not "
                       "under /webhook");
    if (!err)
        err = get_str(ps, def, "tenant", 200, &h->tenant);
    if (!err)
        err = get_str(ps, def, "action", 16, &action);
    if (!err && action == NULL)
        err = fail(ps, "\"action\" is required: send_message, run_agent, forward or custom");
    for (int a = AB_HOOK_SEND_MESSAGE; !err && a <= AB_HOOK_CUSTOM + 1; a++) {
        if (a == AB_HOOK_CUSTOM + 1)
            err = fail(ps, "\"action\" must be send_message, run_agent, forward or custom");
        else if (strcmp(action, action_names[a]) == 0) {
            h->action = (enum ab_hook_action)a;
            break;
        }
    }
    free(action);
    if (!err)
        err = parse_target(ps, def, h);
    if (!err)
        err = get_str(ps, def, "template", 65536, &h->template);
    if (!err && h->template != NULL && !ab_template_check(h->template, why, sizeof(why)))
        err = fail(ps, "\"template\": %s", why);
    if (!err)
        err = parse_session(ps, def, h);
    if (!err)
        err = parse_signature(ps, def, h);
    if (!err)
        err = get_secrets(ps, def, "secret", h->secrets, &h->secret_count);
    /* The shared secret is inherited only by hooks without a signature of their own: a
     * signed hook (GitHub cannot send a custom header) wants its own secret, if any. */
    if (!err && h->secret_count == 0 && h->scheme == AB_HOOK_SIG_NONE && in != NULL &&
        in->secret != NULL) {
        h->secrets[0] = ab_xstrdup(in->secret);
        h->secret_count = 1;
    }
    if (!err)
        err = get_str(ps, def, "secretHeader", 100, &h->secret_header);
    if (!err && h->secret_header == NULL)
        h->secret_header =
            ab_xstrdup(in != NULL && in->secret_header ? in->secret_header : DEFAULT_SECRET_HEADER);
    if (!err && h->secret_count == 0 && h->scheme == AB_HOOK_SIG_NONE)
        err = fail(ps, "no secret and no signature: give \"secret\" (or webhooks.incoming."
                       "secret) or \"signature\"; an unauthenticated hook is refused");
    if (!err) {
        const json_t *list = json_object_get(def, "allowedIPs");
        err = parse_allowlist(ps,
                              list != NULL ? list
                              : in != NULL ? in->allowed_ips
                                           : NULL,
                              &h->allowed);
    }
    h->enabled = true;
    if (!err)
        err = get_bool(ps, def, "acceptText", &h->accept_text);
    if (!err)
        err = get_bool(ps, def, "allowUnsafeExternalContent", &h->unsafe_external_content);
    if (!err)
        err = get_bool(ps, def, "enabled", &h->enabled);
    if (!err)
        h->definition = json_deep_copy(def);
    return err;
}

enum ab_err ab_hook_parse(const json_t *def, const struct ab_incoming *in, struct ab_hook *h,
                          char *errstr, size_t errstr_size)
{
    char where[160];
    const char *id = json_string_value(json_object_get(def, "id"));
    snprintf(where, sizeof(where), "webhook handler \"%.100s\"", id ? id : "?");
    struct parse ps = {errstr, errstr_size, where};
    memset(h, 0, sizeof(*h));
    if (!json_is_object(def))
        return fail(&ps, "must be an object");
    enum ab_err err = parse_hook(&ps, def, in, h);
    if (err)
        ab_hook_cleanup(h);
    return err;
}

static void free_list(char **list, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(list[i]);
}

void ab_hook_cleanup(struct ab_hook *h)
{
    if (h == NULL)
        return;
    free(h->id);
    free(h->path);
    free(h->tenant);
    free(h->agent);
    free(h->channel);
    free(h->peer);
    free(h->forward_url);
    free(h->forward_method);
    free(h->topic);
    free(h->template);
    free(h->session_key);
    free_list(h->session_prefixes, h->prefix_count);
    free(h->secret_header);
    free_list(h->secrets, h->secret_count);
    free_list(h->signature_secrets, h->signature_secret_count);
    ab_cidr_list_free(h->allowed);
    json_decref(h->definition);
    memset(h, 0, sizeof(*h));
}

json_t *ab_hook_redacted(const struct ab_hook *h)
{
    json_t *d = json_deep_copy(h->definition);
    json_t *sig = json_object_get(d, "signature");
    if (json_object_get(d, "secret") != NULL)
        json_object_set_new(d, "secret", json_string("(set)"));
    if (json_object_get(sig, "secret") != NULL)
        json_object_set_new(sig, "secret", json_string("(set)"));
    json_object_set_new(d, "source", json_string(h->from_config ? "config" : "admin"));
    return d;
}

static enum ab_err parse_incoming(struct parse *ps, const json_t *obj, struct ab_incoming *in)
{
    static const char *const fields[] = {"enabled",
                                         "port",
                                         "secret",
                                         "secretHeader",
                                         "allowedIPs",
                                         "maxBodyBytes",
                                         "idempotencyWindowS",
                                         "authFailures",
                                         NULL};
    static const char *const auth_fields[] = {"max", "windowS", NULL};
    long long port = 0, max_body = 262144, window = 86400, fails = 10, fail_window = 60;
    struct ab_cidr_list *check = NULL;
    enum ab_err err = AB_OK;
    in->enabled = true;
    if (obj != NULL && !json_is_null(obj)) {
        if (!json_is_object(obj))
            return fail(ps, "must be an object");
        const json_t *auth = json_object_get(obj, "authFailures");
        err = refuse_unknown(ps, obj, "", fields);
        if (!err)
            err = get_bool(ps, obj, "enabled", &in->enabled);
        if (!err)
            err = get_int(ps, obj, "port", 0, 65535, &port);
        if (!err)
            err = get_str(ps, obj, "secret", SECRET_MAX, &in->secret);
        if (!err && in->secret != NULL && strlen(in->secret) < 8)
            err = fail(ps, "\"secret\" must be at least 8 bytes");
        if (!err)
            err = get_str(ps, obj, "secretHeader", 100, &in->secret_header);
        if (!err) {
            in->allowed_ips = json_object_get(obj, "allowedIPs");
            err = parse_allowlist(ps, in->allowed_ips, &check); /* checked once, here */
            ab_cidr_list_free(check);
        }
        if (!err)
            err = get_int(ps, obj, "maxBodyBytes", 1024, 512 << 10, &max_body);
        if (!err)
            err = get_int(ps, obj, "idempotencyWindowS", 3600, 604800, &window);
        if (!err && auth != NULL && !json_is_object(auth))
            err = fail(ps, "\"authFailures\" must be an object {max, windowS}");
        if (!err && auth != NULL)
            err = refuse_unknown(ps, auth, "authFailures.", auth_fields);
        if (!err && auth != NULL)
            err = get_int(ps, auth, "max", 1, 1000000, &fails);
        if (!err && auth != NULL)
            err = get_int(ps, auth, "windowS", 1, 86400, &fail_window);
    }
    if (in->secret_header == NULL)
        in->secret_header = ab_xstrdup(DEFAULT_SECRET_HEADER);
    in->port = (int)port;
    in->max_body_bytes = (size_t)max_body;
    in->idempotency_window_s = window;
    in->auth_max_failures = (int)fails;
    in->auth_window_ms = fail_window * 1000;
    return err;
}

enum ab_err ab_incoming_parse(const json_t *webhooks, struct ab_incoming **out, char *errstr,
                              size_t errstr_size)
{
    struct ab_incoming *in = ab_xcalloc(1, sizeof(*in));
    struct parse ps = {errstr, errstr_size, "webhooks.incoming"};
    const json_t *handlers = webhooks != NULL ? json_object_get(webhooks, "handlers") : NULL;
    enum ab_err err =
        parse_incoming(&ps, webhooks ? json_object_get(webhooks, "incoming") : NULL, in);
    *out = NULL;
    if (!err && handlers != NULL && !json_is_null(handlers) &&
        (!json_is_array(handlers) || json_array_size(handlers) > AB_HOOK_MAX_HANDLERS))
        err = fail(&ps, "webhooks.handlers must be a list of at most %d handlers",
                   AB_HOOK_MAX_HANDLERS);
    size_t n = json_is_array(handlers) ? json_array_size(handlers) : 0;
    if (!err && n > 0)
        in->hooks = ab_xcalloc(n, sizeof(*in->hooks));
    for (size_t i = 0; !err && i < n; i++) {
        char why[512];
        err = ab_hook_parse(json_array_get(handlers, i), in, &in->hooks[i], why, sizeof(why));
        if (err) {
            snprintf(errstr, errstr_size, "webhooks.handlers[%zu]: %s", i, why);
            break;
        }
        in->hooks[i].from_config = true;
        in->count++;
        for (size_t j = 0; j < i; j++) {
            const struct ab_hook *a = &in->hooks[j], *b = &in->hooks[i];
            if (strcmp(a->id, b->id) == 0 ||
                (a->path != NULL && b->path != NULL && strcmp(a->path, b->path) == 0)) {
                snprintf(errstr, errstr_size,
                         "webhooks.handlers[%zu] (\"%s\"): its %s is "
                         "also handlers[%zu]'s",
                         i, b->id, strcmp(a->id, b->id) == 0 ? "id" : "path", j);
                err = AB_ERR_CONFIG;
            }
        }
    }
    if (err) {
        ab_incoming_free(in);
        return err;
    }
    *out = in;
    return AB_OK;
}

void ab_incoming_free(struct ab_incoming *in)
{
    if (in == NULL)
        return;
    for (size_t i = 0; i < in->count; i++)
        ab_hook_cleanup(&in->hooks[i]);
    free(in->hooks);
    free(in->secret_header);
    free(in->secret);
    free(in);
}
