/* Builds, serialises and strictly validates CloudEvents 1.0 structured-mode envelopes. */
#include "common/envelope.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/crypto.h"
#include "common/trace.h"
#include "common/util.h"

static char *dup_or_null(const char *s)
{
    return s ? ab_xstrdup(s) : NULL;
}

struct ab_event *ab_event_new(const char *type, const char *source, const char *subject,
                              json_t *data)
{
    struct ab_event *ev = ab_xcalloc(1, sizeof(*ev));
    char id[AB_UUID_LEN + 1], when[32];
    ab_uuid_v4(id);
    ab_time_rfc3339(ab_wall_ms(), when);
    ev->id = ab_xstrdup(id);
    ev->type = ab_xstrdup(type);
    ev->source = ab_xstrdup(source);
    ev->time = ab_xstrdup(when);
    ev->subject = dup_or_null(subject);
    ev->datacontenttype = ab_xstrdup("application/json");
    ev->data = data;
    char traceparent[AB_TRACEPARENT_LEN + 1];
    if (ab_trace_current_header(traceparent))
        ev->traceparent = ab_xstrdup(traceparent);
    return ev;
}

struct ab_event *ab_event_new_derived(const char *type, const char *source, const char *subject,
                                      json_t *data, const char *name_fmt, ...)
{
    struct ab_event *ev = ab_event_new(type, source, subject, data);
    va_list ap;
    va_start(ap, name_fmt);
    char *name = NULL;
    if (vasprintf(&name, name_fmt, ap) < 0)
        name = NULL;
    va_end(ap);
    if (name == NULL)
        abort(); /* out of memory: the allocation policy of util.h */
    ab_uuid_derive(name, ev->id); /* ev->id holds AB_UUID_LEN + 1 bytes already */
    free(name);
    return ev;
}

void ab_event_free(struct ab_event *ev)
{
    if (ev == NULL)
        return;
    free(ev->id);
    free(ev->type);
    free(ev->source);
    free(ev->time);
    free(ev->subject);
    free(ev->datacontenttype);
    free(ev->traceparent);
    json_decref(ev->data);
    json_decref(ev->extensions);
    free(ev);
}

void ab_event_set_traceparent(struct ab_event *ev, const char *traceparent)
{
    free(ev->traceparent);
    ev->traceparent = dup_or_null(traceparent);
}

json_t *ab_event_to_json(const struct ab_event *ev)
{
    json_t *j = json_object();
    json_object_set_new(j, "specversion", json_string("1.0"));
    json_object_set_new(j, "id", json_string(ev->id));
    json_object_set_new(j, "type", json_string(ev->type));
    json_object_set_new(j, "source", json_string(ev->source));
    if (ev->time)
        json_object_set_new(j, "time", json_string(ev->time));
    if (ev->subject)
        json_object_set_new(j, "subject", json_string(ev->subject));
    if (ev->datacontenttype)
        json_object_set_new(j, "datacontenttype", json_string(ev->datacontenttype));
    if (ev->traceparent)
        json_object_set_new(j, "traceparent", json_string(ev->traceparent));
    if (ev->extensions)
        json_object_update_missing(j, ev->extensions);
    if (ev->data)
        json_object_set(j, "data", ev->data);
    return j;
}

char *ab_event_serialize(const struct ab_event *ev, size_t *len)
{
    json_t *j = ab_event_to_json(ev);
    char *text = json_dumps(j, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(j);
    if (text && len)
        *len = strlen(text);
    return text;
}

/* CloudEvents: attribute names are lower-case ASCII letters and digits. */
static int valid_attribute_name(const char *name)
{
    if (name[0] == '\0' || strlen(name) > 20)
        return 0;
    for (const char *p = name; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9')))
            return 0;
    return 1;
}

/* Takes a string attribute: required ones must be present and non-empty. */
static enum ab_err take_string(json_t *root, const char *name, int required, char **out,
                               char *errstr, size_t size)
{
    json_t *v = json_object_get(root, name);
    if (v == NULL) {
        if (!required)
            return AB_OK;
        snprintf(errstr, size, "envelope: missing required attribute \"%s\"", name);
        return AB_ERR_INVALID;
    }
    if (!json_is_string(v) || (required && json_string_length(v) == 0) ||
        strlen(json_string_value(v)) != json_string_length(v)) {
        snprintf(errstr, size, "envelope: attribute \"%s\" must be a non-empty string", name);
        return AB_ERR_INVALID;
    }
    *out = ab_xstrdup(json_string_value(v));
    json_object_del(root, name);
    return AB_OK;
}

enum ab_err ab_event_parse(const void *buf, size_t len, struct ab_event **out, char *errstr,
                           size_t size)
{
    enum ab_err err = AB_OK;
    struct ab_event *ev = NULL;
    json_error_t jerr;
    json_t *root = NULL;
    *out = NULL;
    if (buf == NULL || len == 0) {
        snprintf(errstr, size, "envelope: empty message");
        return AB_ERR_INVALID;
    }
    if (len > AB_EVENT_MAX_BYTES) {
        snprintf(errstr, size, "envelope: %zu bytes is over the %d byte limit", len,
                 AB_EVENT_MAX_BYTES);
        return AB_ERR_TOO_LARGE;
    }
    root = json_loadb(buf, len, JSON_REJECT_DUPLICATES, &jerr);
    if (!json_is_object(root)) {
        snprintf(errstr, size, "envelope: not a JSON object (%s)", root ? "wrong type" : jerr.text);
        err = AB_ERR_INVALID;
        goto out;
    }
    json_t *spec = json_object_get(root, "specversion");
    if (!json_is_string(spec) || strcmp(json_string_value(spec), "1.0") != 0) {
        snprintf(errstr, size, "envelope: specversion must be \"1.0\"");
        err = AB_ERR_INVALID;
        goto out;
    }
    json_object_del(root, "specversion");
    ev = ab_xcalloc(1, sizeof(*ev));
    const struct {
        const char *name;
        int required;
        char **field;
    } attrs[] = {
        { "id", 1, &ev->id },
        { "type", 1, &ev->type },
        { "source", 1, &ev->source },
        { "time", 0, &ev->time },
        { "subject", 0, &ev->subject },
        { "datacontenttype", 0, &ev->datacontenttype },
        { "traceparent", 0, &ev->traceparent },
    };
    for (size_t i = 0; i < sizeof(attrs) / sizeof(attrs[0]); i++) {
        err = take_string(root, attrs[i].name, attrs[i].required, attrs[i].field, errstr, size);
        if (err)
            goto out;
    }
    int64_t ms;
    if (ev->time && !ab_time_parse_rfc3339(ev->time, &ms)) {
        snprintf(errstr, size, "envelope: time \"%.40s\" is not an RFC 3339 timestamp", ev->time);
        err = AB_ERR_INVALID;
        goto out;
    }
    ev->data = json_incref(json_object_get(root, "data"));
    json_object_del(root, "data");
    const char *key;
    json_t *value;
    json_object_foreach(root, key, value)
    {
        if (!valid_attribute_name(key)) {
            snprintf(errstr, size, "envelope: \"%.40s\" is not a valid attribute name", key);
            err = AB_ERR_INVALID;
            goto out;
        }
    }
    if (json_object_size(root) > 0)
        ev->extensions = json_incref(root);
out:
    json_decref(root);
    if (err) {
        ab_event_free(ev);
        ev = NULL;
    }
    *out = ev;
    return err;
}
