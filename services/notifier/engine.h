/* The notifier's engine thread: every delivery request of the process runs here, on one
 * libcurl multi handle, however many are in flight (no thread per delivery). A prepared
 * delivery comes in and leaves with its attempt's outcome:
 *
 *  - each destination has a queue: an outgoing endpoint takes up to endpoint_concurrency
 *    requests at once (a forward's "forward:<hook id>" is one endpoint); a person or a
 *    group chat on Feishu one at a time (so their messages arrive in order), at most
 *    feishu_user_rate per second, and an app feishu_app_rate per second;
 *  - outgoing webhooks are signed per Standard Webhooks at each attempt (webhook-id is the
 *    delivery id; the timestamp is the attempt's), sent without following redirects, with
 *    the request's address checked by the SSRF guard;
 *  - an endpoint failing breaker_threshold times in a row opens its breaker: deliveries to
 *    it are deferred (not attempted, the attempt not used up) until the cooldown ends; then
 *    one probe goes; its failure doubles the cooldown (up to 10 minutes), its success
 *    closes the breaker;
 *  - Feishu: one tenant_access_token per app, fetched when needed and kept until shortly
 *    before it expires; a send refused for its token fetches a new one and is sent again,
 *    once; a rate-limited send waits out x-ogw-ratelimit-reset and goes again (not an
 *    attempt); a send to a user_id that Feishu refuses goes again to the open_id;
 *  - the outcome: DELIVERED, RETRY (with the next attempt's due time from the retry
 *    policy, Retry-After honoured within its cap), FAILED (permanent, or no attempt left),
 *    DEFERRED, or ABANDONED when the engine stops first. */
#ifndef NOTIFY_ENGINE_H
#define NOTIFY_ENGINE_H

#include <stddef.h>
#include <stdint.h>

#include "common/netguard.h"
#include "common/retry.h"
#include "services/notifier/delivery.h"

struct notify_engine_options {
    const struct ab_netguard *guard; /* outgoing webhooks' SSRF guard (borrowed) */
    long request_timeout_ms;         /* Feishu requests; endpoints have their own */
    int endpoint_concurrency;
    int breaker_threshold;
    int64_t breaker_cooldown_ms;
    int feishu_user_rate;
    int feishu_app_rate;
    struct ab_retry_policy feishu_retry; /* borrowed schedule */
    size_t max_transfers;
    /* Called on the engine thread, once per delivery submitted, with its outcome set. */
    void (*finished)(void *ud, struct notify_delivery *d);
    void *ud;
};

struct notify_engine;

/* Creates the engine and starts its thread. @returns NULL with errstr set on failure. */
struct notify_engine *notify_engine_new(const struct notify_engine_options *opts, char *errstr,
                                        size_t errstr_size);

/* Hands a prepared delivery over. @thread any. */
void notify_engine_submit(struct notify_engine *e, struct notify_delivery *d);

/* Deliveries handed over and not finished yet. @thread any. */
size_t notify_engine_pending(const struct notify_engine *e);

/* Stops the thread: requests in flight are cancelled and every delivery not finished is
 * finished ABANDONED before this returns. Then frees. NULL: no-op. */
void notify_engine_free(struct notify_engine *e);

#endif
