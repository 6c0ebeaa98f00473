/* Outgoing webhooks' fan-out (fanout.h). */
#include "services/dispatcher/fanout.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/crypto.h"
#include "common/log.h"

#define SOURCE "/agentbus/dispatcher"

static json_t *str_or_null(const char *s)
{
    return s != NULL ? json_string(s) : json_null();
}

json_t *dispatch_fanout_payload(const struct ab_event *ev, enum ab_hook_event kind)
{
    const json_t *data = ev->data;
    json_t *p = json_pack("{s:s, s:s, s:s}", "type", ab_outgoing_event_name(kind), "id", ev->id,
                          "timestamp", ev->time);
    json_object_set_new(p, "session",
                        str_or_null(json_string_value(json_object_get(data, "conversation_id"))));
    if (kind == AB_OUTGOING_MESSAGE_RECEIVED) {
        const json_t *sender = json_object_get(data, "sender");
        const json_t *target = json_object_get(data, "target");
        json_t *m = json_object();
        json_object_set_new(m, "from",
                            str_or_null(json_string_value(json_object_get(sender, "name"))));
        json_object_set_new(m, "to",
                            str_or_null(json_string_value(json_object_get(target, "name"))));
        json_object_set_new(m, "text",
                            str_or_null(json_string_value(json_object_get(data, "content"))));
        json_object_set_new(m, "timestamp", json_string(ev->time));
        json_object_set_new(p, "message", m);
    }
    json_object_set(p, "data", data != NULL ? (json_t *)data : json_null());
    return p;
}

/* An outcome of a delivery, or an error of the notifier's: a delivery made for it says
 * about_outcome, so its own outcome goes to no endpoint (no endless chain). */
static bool is_outcome(enum ab_hook_event kind, const json_t *data)
{
    return kind == AB_OUTGOING_DELIVERY_SUCCEEDED || kind == AB_OUTGOING_DELIVERY_FAILED ||
           (kind == AB_OUTGOING_ERROR &&
            json_string_value(json_object_get(data, "stage")) != NULL &&
            strcmp(json_string_value(json_object_get(data, "stage")), "notify") == 0);
}

enum ab_err dispatch_fanout(struct dispatch_ctx *ctx, const struct ab_outgoing *outgoing,
                            const struct ab_consumed *msg, char *reason, size_t size)
{
    const struct ab_event *ev = msg->event;
    enum ab_hook_event kind;
    enum ab_err err = AB_OK;

    if (outgoing == NULL || !ab_outgoing_event_of_type(ev->type, &kind))
        return AB_OK;
    if (json_is_true(json_object_get(ev->data, "about_outcome")))
        return AB_OK;
    const char *tenant = json_string_value(json_object_get(ev->data, "tenant_id"));
    struct ab_outgoing_event *jobs = ab_xcalloc(outgoing->count + 1, sizeof(*jobs));
    char **keys = ab_xcalloc(outgoing->count + 1, sizeof(char *));
    size_t n = 0;
    json_t *payload = NULL;

    for (size_t i = 0; i < outgoing->count; i++) {
        const struct ab_outgoing_endpoint *ep = &outgoing->endpoints[i];
        if (!(ep->events & (1u << kind)))
            continue;
        if (ep->tenant_id != NULL && (tenant == NULL || strcmp(ep->tenant_id, tenant) != 0))
            continue;
        if (payload == NULL)
            payload = dispatch_fanout_payload(ev, kind);
        json_t *source = json_pack("{s:s, s:s, s:s, s:s}", "id", ev->id, "type", ev->type, "source",
                                   ev->source, "time", ev->time);
        json_t *data = json_pack("{s:s, s:s, s:o, s:O, s:b}", "endpoint_id", ep->id, "event",
                                 ab_outgoing_event_name(kind), "source_event", source, "payload",
                                 payload, "about_outcome", is_outcome(kind, ev->data));
        json_object_set_new(data, "tenant_id", str_or_null(tenant));
        struct ab_event *job = ab_event_new_derived("agentbus.notify.webhook", SOURCE, ep->id, data,
                                                    "%s:webhook:%s", ev->id, ep->id);
        size_t key_size = strlen(ep->id) + 16;
        keys[n] = ab_xmalloc(key_size);
        snprintf(keys[n], key_size, "webhook:%s", ep->id);
        jobs[n] = (struct ab_outgoing_event){.topic = AB_TOPIC_NOTIFY, .key = keys[n], .ev = job};
        n++;
    }
    if (n > 0)
        err = ab_producer_send_events(ctx->svc->producer, jobs, n, reason, size);
    /* A job Kafka refuses for good (too large) never gets better: it is logged and left;
     * any other failure sends the event's jobs again (the same ids). */
    bool again = false;
    for (size_t i = 0; i < n; i++) {
        if (jobs[i].err != AB_OK && !ab_err_is_retriable(jobs[i].err))
            ab_warn("event %s: webhook job for %s refused by Kafka: %s", ev->id,
                    keys[i] + strlen("webhook:"), ab_err_name(jobs[i].err));
        again = again || (jobs[i].err != AB_OK && ab_err_is_retriable(jobs[i].err));
        ab_event_free((struct ab_event *)jobs[i].ev);
        free(keys[i]);
    }
    json_decref(payload);
    free(jobs);
    free(keys);
    if (err != AB_OK && !again)
        return AB_OK;
    if (err == AB_OK && n > 0) {
        ab_metric_inc(ctx->m_routed, (const char *const[]){"webhook", NULL}, (double)n);
        ab_debug("event %s (%s): %zu webhook job(s)", ev->id, ev->type, n);
    }
    return err;
}
