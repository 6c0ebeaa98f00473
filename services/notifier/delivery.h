/* One delivery attempt as it moves through the notifier: taken from agentbus.notify or
 * agentbus.notify.retry (or claimed from the schedule), prepared by a database thread,
 * sent by the engine, recorded and published by a database thread, then ended.
 *
 * The delivery's identity is its job: the event first published to agentbus.notify
 * (`agentbus.notify.feishu` or `agentbus.notify.webhook`). Its id is the delivery id: the
 * webhook-id an outgoing webhook carries on every attempt, the seed of a Feishu send's
 * uuid, the key of its attempt rows and of its dead letter. A retry is an
 * `agentbus.notify.retry` event wrapping the job with the attempt number it is for.
 *
 * A webhook job goes to a configured outgoing endpoint ("endpoint_id"), or is a forward
 * ("forward": an incoming webhook's body sent on to the URL its handler names): the job
 * then carries its own endpoint, built for the delivery and owned by it, so everything
 * that follows (signing, the SSRF guard, the breaker, retries, dead letters, replays) is
 * the same for both. Its id, "forward:<hook id>", cannot be a configured endpoint's (a
 * colon is not allowed there). */
#ifndef NOTIFY_DELIVERY_H
#define NOTIFY_DELIVERY_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/envelope.h"
#include "common/errors.h"
#include "common/kafka_consumer.h"
#include "common/outgoing.h"
#include "common/util.h"

#define NOTIFY_TYPE_FEISHU  "agentbus.notify.feishu"
#define NOTIFY_TYPE_WEBHOOK "agentbus.notify.webhook"
#define NOTIFY_TYPE_RETRY   "agentbus.notify.retry"
#define NOTIFY_EXCERPT_MAX  512
#define NOTIFY_CHAT_ID_MAX  AB_FEISHU_CHAT_ID_MAX
/* A forward's timeout_ms, as an endpoint's timeoutMs. */
#define NOTIFY_FORWARD_TIMEOUT_MIN_MS 100
#define NOTIFY_FORWARD_TIMEOUT_MAX_MS 300000

enum notify_kind { NOTIFY_FEISHU = 0, NOTIFY_WEBHOOK };

enum notify_outcome {
    NOTIFY_DELIVERED = 0,
    NOTIFY_RETRY,    /* failed, another attempt is scheduled */
    NOTIFY_FAILED,   /* failed for good (permanent, or the last attempt): a dead letter */
    NOTIFY_DEFERRED, /* not attempted (the endpoint's breaker is open): rescheduled */
    NOTIFY_ABANDONED /* the notifier is stopping: nothing recorded, redone later */
};

struct notify_delivery {
    struct notify_delivery *next; /* in whichever queue holds it */

    /* Where it came from: a consumer job, or a row of notify_scheduled (cj NULL). A retry
     * has the id of its schedule row (its event's), removed when the attempt is recorded. */
    struct ab_consumer_job *cj;
    char scheduled_id[AB_UUID_LEN + 1];
    int64_t due_ms;   /* a retry not due yet: when it is (wall clock) */
    char *retry_text; /* ... and its event, as consumed, for its schedule row */

    json_t *job; /* the job event as JSON (an envelope object) */
    char id[AB_UUID_LEN + 1];
    char *key; /* the job's Kafka key (the destination) */
    char *traceparent;
    int attempt;         /* this attempt, 1-based */
    int deferrals;       /* times a breaker pushed this attempt back */
    int replay;          /* 0, or the number of the operator's replay this run comes from */
    int64_t job_time_ms; /* the job's event time: delivery latency is measured from it */
    bool about_outcome;  /* the job is about a delivery outcome: its own is not fanned out */

    enum notify_kind kind;
    /* "webhook:<endpoint id>", "forward:<hook id>", "feishu:<member id>",
     * "feishu:chat:<chat id>" */
    char destination[160];
    char tenant_id[AB_UUID_LEN + 1];
    char event_type[48]; /* webhook: the outgoing event name */

    /* webhook: the endpoint, borrowed from the notifier's config, or for a forward the
     * delivery's own (forward, owned, freed with it) */
    const struct ab_outgoing_endpoint *endpoint;
    struct ab_outgoing_endpoint *forward;
    char *body; /* the payload, as sent */
    size_t body_len;

    /* feishu: a person (member_id) or a group chat (chat_id); the rest filled by prepare */
    char member_id[AB_UUID_LEN + 1];
    char chat_id[NOTIFY_CHAT_ID_MAX + 1];
    char *app_id, *app_secret, *base_url;
    char *user_id, *open_id;
    char *text;
    char uuid[AB_UUID_LEN + 1];

    /* the attempt's result, filled by the engine */
    enum notify_outcome outcome;
    char code[64];      /* "http_503", "feishu_230013", "timeout", "address_refused", ... */
    long status;        /* the last HTTP status, 0 if none */
    int64_t latency_ms; /* this attempt's requests, first to last byte */
    char excerpt[NOTIFY_EXCERPT_MAX + 1];
    char error[512];
    int64_t retry_after_ms;   /* what the receiver asked for, -1 if nothing */
    int64_t next_due_ms;      /* RETRY/DEFERRED: when the next try is due (wall clock) */
    bool endpoint_gone;       /* webhook answered 410: the endpoint is disabled */
    bool breaker_opened;      /* this failure opened the endpoint's breaker */
    bool breaker_closed;      /* this success closed a breaker that had been open */
    char receive_id_type[16]; /* feishu: the id type the message went to */
    bool token_refreshed;     /* feishu: this attempt already fetched a new token */
    bool tried_open_id;       /* feishu: the user_id was refused; the open_id is used */
    char message_id[80];      /* feishu: Feishu's message id */
};

/* What reading a job takes from the notifier's configuration (all borrowed). */
struct notify_job_config {
    const struct ab_outgoing *outgoing; /* the configured endpoints */
    /* A forward's retry schedule (notifier.retry_schedule_ms; copied into its endpoint)
     * and its timeout when the job names none (notifier.request_timeout_ms). */
    const int64_t *default_schedule_ms;
    size_t default_schedule_len;
    long default_timeout_ms;
};

/* Reads a job event (from agentbus.notify) into d: kind, destination, tenant; for a webhook
 * its endpoint (looked up in the configuration, or built from the job's forward) and
 * payload; for Feishu the member or the chat. attempt is set to 1.
 * @returns AB_OK; AB_ERR_INVALID (a malformed job: reason says why, it is dead-lettered);
 *          AB_ERR_NOT_FOUND for a webhook whose endpoint is no longer configured. */
enum ab_err notify_delivery_from_job(struct notify_delivery *d, const struct ab_event *ev,
                                     const char *key, const struct notify_job_config *cfg,
                                     char *reason, size_t reason_size);

/* Reads a retry event: the job it wraps (as notify_delivery_from_job), the attempt it is
 * for, and *due_ms, when it is due (wall clock). */
enum ab_err notify_delivery_from_retry(struct notify_delivery *d, const struct ab_event *ev,
                                       const struct notify_job_config *cfg, int64_t *due_ms,
                                       char *reason, size_t reason_size);

/* The id a webhook delivery's endpoint goes by in dead letters, endpoint state, outcome
 * events and metrics: the configured endpoint's id, or "forward:<hook id>". */
const char *notify_delivery_endpoint_id(const struct notify_delivery *d);

/* The retry event that carries d's next try: attempt + 1 for RETRY, the same attempt for
 * DEFERRED, due at d->next_due_ms. Its id is derived from the delivery id, the attempt and
 * the deferrals, so publishing it twice is one event.
 * @ownership the caller frees it with ab_event_free. */
struct ab_event *notify_retry_event(const struct notify_delivery *d);

/* The job event of d, rebuilt from d->job (for the dead-letter topic and replays).
 * @ownership malloc'ed text. */
char *notify_job_text(const struct notify_delivery *d, size_t *len);

/* Sets the attempt's code and its error message (printf-style). */
void notify_delivery_set_error(struct notify_delivery *d, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

void notify_delivery_free(struct notify_delivery *d);

const char *notify_outcome_name(enum notify_outcome o);
const char *notify_kind_name(enum notify_kind k);

#endif
