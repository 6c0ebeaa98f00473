/* The event envelope: every Kafka value is a CloudEvents 1.0 JSON object in structured
 * mode (specversion, id, type, source, time, subject, datacontenttype, data, and
 * traceparent where a trace exists). `id` is the idempotency key downstream. */
#ifndef AB_ENVELOPE_H
#define AB_ENVELOPE_H

#include <jansson.h>
#include <stddef.h>

#include "common/errors.h"

#define AB_EVENT_MAX_BYTES (1024 * 1024) /* a larger value is not an envelope we accept */

struct ab_event {
    char *id;              /* required, unique per event */
    char *type;            /* required, e.g. "agentbus.message.received" */
    char *source;          /* required, URI-reference of the producer, e.g. "/ingress" */
    char *time;            /* RFC 3339; set by ab_event_new */
    char *subject;         /* optional */
    char *datacontenttype; /* "application/json" unless data is text */
    char *traceparent;     /* optional W3C trace context */
    json_t *data;          /* optional; owned */
    json_t *extensions;    /* other attributes, kept so a relay never drops them; owned */
};

/* A new event with a fresh UUID id and the current time, in the trace of the thread's
 * current span (common/trace.h) when it has one. data is stolen (may be NULL); subject may
 * be NULL. @ownership free with ab_event_free. */
struct ab_event *ab_event_new(const char *type, const char *source, const char *subject,
                              json_t *data);
void ab_event_free(struct ab_event *ev);

/* ab_event_new with an id derived from a name (ab_uuid_derive of the printf-formatted
 * name, e.g. "<event id>:notify"): producing it again after a redelivery is the same
 * event, which is what makes every consumer's work idempotent downstream. */
struct ab_event *ab_event_new_derived(const char *type, const char *source, const char *subject,
                                      json_t *data, const char *name_fmt, ...)
    __attribute__((format(printf, 5, 6)));

/* Sets or replaces a string attribute (copied). NULL removes an optional one. */
void ab_event_set_traceparent(struct ab_event *ev, const char *traceparent);

/* The envelope as compact JSON. @ownership the caller frees the string. */
char *ab_event_serialize(const struct ab_event *ev, size_t *len);
/* The envelope as a JSON object. @ownership the caller decrefs. */
json_t *ab_event_to_json(const struct ab_event *ev);

/* Parses and validates an envelope; errstr says what is wrong (missing or mistyped
 * attribute, wrong specversion, invalid time, not JSON, too large).
 * @returns AB_OK or AB_ERR_INVALID / AB_ERR_TOO_LARGE.
 * @ownership *out is freed with ab_event_free. */
enum ab_err ab_event_parse(const void *buf, size_t len, struct ab_event **out, char *errstr,
                           size_t errstr_size);

#endif
