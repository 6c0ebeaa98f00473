/* Outgoing webhook endpoints, as configured in the `webhooks` option in the seed's shape:
 *
 *   {"outgoing": [{"id": "slack-notify", "url": "https://hooks.example.com/x",
 *                  "events": ["message_received", "agent_response"], "method": "POST",
 *                  "secret": "whsec_...", "retry": {"maxAttempts": 3, "backoff": "exponential"}}]}
 *
 * The dispatcher reads the list to fan events out (which endpoint wants which event), the
 * notifier to deliver (URL, method, secrets, retry schedule, timeout), ingress to answer the
 * admin API. One parser, so the three never disagree about what a configuration means. */
#ifndef AB_OUTGOING_H
#define AB_OUTGOING_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/errors.h"
#include "common/retry.h"

/* The event names an endpoint subscribes to (the seed's five, plus delivery outcomes). */
enum ab_hook_event {
    AB_OUTGOING_MESSAGE_RECEIVED = 0,
    AB_OUTGOING_AGENT_RESPONSE,
    AB_OUTGOING_SESSION_STARTED,
    AB_OUTGOING_SESSION_ENDED,
    AB_OUTGOING_ERROR,
    AB_OUTGOING_DELIVERY_SUCCEEDED,
    AB_OUTGOING_DELIVERY_FAILED,
    AB_OUTGOING_EVENT__COUNT
};

enum ab_outgoing_format {
    AB_OUTGOING_STANDARD = 0, /* JSON payload signed per Standard Webhooks */
    AB_OUTGOING_FEISHU_BOT,   /* a Feishu/Lark custom group bot: a text message, bot-signed */
};

#define AB_OUTGOING_ID_MAX        100
#define AB_OUTGOING_MAX_SECRETS   4
#define AB_OUTGOING_MAX_ENDPOINTS 1000

struct ab_outgoing_endpoint {
    char *id;
    char *url;
    char *method;    /* "POST" or "PUT" */
    unsigned events; /* bit (1u << enum ab_hook_event) per subscribed event */
    char *tenant_id; /* only this tenant's events; NULL: every tenant's */
    enum ab_outgoing_format format;
    /* Standard: whsec_ secrets, each signs (a rotation lists the new and the old). Feishu
     * bot: at most one, the bot's signing secret. */
    char *secrets[AB_OUTGOING_MAX_SECRETS];
    size_t secret_count;
    long timeout_ms;
    /* retry.schedule_ms points at schedule (owned here). */
    struct ab_retry_policy retry;
    int64_t *schedule;
};

struct ab_outgoing {
    struct ab_outgoing_endpoint *endpoints;
    size_t count;
};

/* Parses webhooks (the option's object; NULL or without "outgoing" gives no endpoint).
 *   default_schedule_ms: the waits used when an endpoint names no retry (copied);
 *   default_timeout_ms: when it names no timeoutMs.
 * Endpoint fields: id (1-100 of [A-Za-z0-9._-], unique), url (http or https, no user
 * info), events (non-empty; names above, or "*"), method (POST default, or PUT), secret
 * (a string or a list of up to 4; whsec_ + base64 of 24-64 bytes for the standard format),
 * format ("standard" default, or "feishu_bot"), tenant_id, timeoutMs (100-300000), retry
 * {maxAttempts 1-50, backoff "exponential" (5 s doubling, up to 10 h) or "schedule", or
 * scheduleMs: [waits]}. Unknown fields are refused (a typo must not silently drop a
 * secret).
 * @returns AB_OK, or AB_ERR_CONFIG with errstr naming the endpoint and field. */
enum ab_err ab_outgoing_parse(const json_t *webhooks, const int64_t *default_schedule_ms,
                              size_t default_schedule_len, long default_timeout_ms,
                              struct ab_outgoing **out, char *errstr, size_t errstr_size);
void ab_outgoing_free(struct ab_outgoing *o);

/* The endpoint with this id, or NULL. @ownership borrowed from o. */
const struct ab_outgoing_endpoint *ab_outgoing_find(const struct ab_outgoing *o, const char *id);

/* The rules the configuration holds an endpoint to, for whatever else names a URL to deliver
 * to (the notifier's forwards): an id of 1-100 of [A-Za-z0-9._-]; a URL that is http:// or
 * https://, has a host and no user info, no spaces or control characters, at most 2048
 * bytes. */
bool ab_outgoing_id_valid(const char *id);
bool ab_outgoing_url_valid(const char *url);

/* "message_received", ...: the names of the configuration and of payloads' "type". */
const char *ab_outgoing_event_name(enum ab_hook_event ev);

/* Which outgoing event a CloudEvent type is: agentbus.message.received, agentbus.agent_response,
 * agentbus.session.started, agentbus.session.ended, agentbus.error,
 * agentbus.notify.delivered, agentbus.notify.failed. @returns false for any other type. */
bool ab_outgoing_event_of_type(const char *type, enum ab_hook_event *out);

/* Parses a comma-separated list of waits in milliseconds ("5000,300000"): 1 to 50
 * entries, each 0 to AB_RETRY_DELAY_MAX_MS. @returns the count, or 0 for invalid text.
 * @ownership *out is malloc'ed. */
size_t ab_outgoing_parse_schedule(const char *text, int64_t **out);

/* Sets ep->retry to walk ep->schedule's first n waits, with the endpoints' jitter and
 * Retry-After cap: one policy for configured endpoints and a notifier's forwards. */
void ab_outgoing_use_schedule(struct ab_outgoing_endpoint *ep, size_t n);

/* Frees what an endpoint holds (not ep itself). */
void ab_outgoing_endpoint_cleanup(struct ab_outgoing_endpoint *ep);

/* A Feishu group chat's id (oc_...): 1 to AB_FEISHU_CHAT_ID_MAX of [A-Za-z0-9_-], what its
 * ids are made of and no more, since it goes into destinations, uuid names and bodies. The
 * webhook configuration and the notifier's jobs check it alike. */
#define AB_FEISHU_CHAT_ID_MAX 128
bool ab_feishu_chat_id_valid(const char *id);

#endif
