/* The notifier's engine thread (engine.h). Everything below runs on that one thread except
 * notify_engine_submit and notify_engine_pending; destinations, apps and calls are its own
 * and need no lock. */
#include "services/notifier/engine.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/crypto.h"
#include "common/http_multi.h"
#include "common/log.h"
#include "common/trace.h"
#include "common/util.h"
#include "services/notifier/feishu.h"

#define BODY_KEEP               (64 * 1024) /* response bytes kept (Feishu's JSON, the excerpt); no more read */
#define RESPONSE_CAP            (16 * 1024 * 1024)
#define FEISHU_BOT_RATE         5     /* a custom group bot takes 5 messages a second */
#define SWEEP_EVERY_MS          60000 /* idle destinations are forgotten */
#define MAX_IDLE_WAIT_MS        1000
#define BREAKER_MAX_COOLDOWN_MS (10 * 60 * 1000)
#define THROTTLE_WAIT_MAX_MS    60000 /* longer rate-limit resets become a scheduled retry */
#define TOKEN_FAIL_BACKOFF_MS   1000
#define USER_AGENT              "agentbus-notifier/1"
#define DEST_BUCKETS            4096

enum breaker { BREAKER_CLOSED = 0, BREAKER_OPEN, BREAKER_HALF_OPEN };

/* A Feishu app (base URL + app id): its token and its rate. */
struct app {
    struct app *next;
    char *base_url, *app_id, *app_secret;
    char token[4096 + 1]; /* tokens may be JWTs of a few KB */
    unsigned token_gen;   /* counts the tokens fetched: which one a send used */
    int64_t token_until;  /* monotonic ms; 0: none */
    bool fetching;
    int64_t fetch_after; /* after a failed fetch */
    int64_t tat_us;      /* GCRA: the theoretical arrival time of the next send */
    int64_t blocked_until;
};

/* A destination: an endpoint (or a forward), a person or a chat. */
struct dest {
    struct dest *hnext; /* hash chain */
    struct dest *anext; /* active list: has queued deliveries */
    bool active;
    char *name;
    struct notify_delivery *qhead, *qtail;
    int in_flight;
    int64_t tat_us;        /* GCRA: Feishu receivers, group bots */
    int64_t blocked_until; /* a rate-limit reset */
    /* breaker (endpoints) */
    enum breaker breaker;
    int failures;
    int64_t open_until;
    int64_t cooldown_ms;
};

enum call_kind { CALL_WEBHOOK, CALL_FEISHU, CALL_TOKEN };

struct call {
    struct notify_engine *e;
    enum call_kind kind;
    struct notify_delivery *d; /* NULL for a token fetch */
    struct dest *dest;
    struct app *app;
    unsigned token_gen; /* the app's token the send used */
    bool probe;         /* the one request a half-open breaker lets through */
    long status;
    char *body; /* the first BODY_KEEP bytes */
    size_t body_len;
    int64_t retry_after_ms;
    int64_t ratelimit_reset_ms;
    long ratelimit_limit;
};

struct notify_engine {
    struct notify_engine_options o;
    pthread_t thread;
    pthread_mutex_t lock;
    pthread_cond_t started_cond;
    int started;
    atomic_bool stop;
    struct notify_delivery *in_head, *in_tail; /* under lock */
    atomic_size_t pending;
    struct ab_http_multi *http; /* under lock for wakeups; else the thread's */

    struct dest *buckets[DEST_BUCKETS];
    struct dest *active;
    struct app *apps;
    int64_t next_sweep;
};

static struct dest *dest_of(struct notify_engine *e, const char *name)
{
    size_t b = ab_fnv1a(AB_FNV1A_INIT, name, strlen(name)) % DEST_BUCKETS;
    for (struct dest *d = e->buckets[b]; d != NULL; d = d->hnext)
        if (strcmp(d->name, name) == 0)
            return d;
    struct dest *d = ab_xcalloc(1, sizeof(*d));
    d->name = ab_xstrdup(name);
    d->hnext = e->buckets[b];
    e->buckets[b] = d;
    return d;
}

static struct app *app_of(struct notify_engine *e, const struct notify_delivery *d)
{
    for (struct app *a = e->apps; a != NULL; a = a->next)
        if (strcmp(a->app_id, d->app_id) == 0 && strcmp(a->base_url, d->base_url) == 0) {
            if (strcmp(a->app_secret, d->app_secret) != 0) { /* rotated: the old token goes */
                free(a->app_secret);
                a->app_secret = ab_xstrdup(d->app_secret);
                a->token_until = 0;
            }
            return a;
        }
    struct app *a = ab_xcalloc(1, sizeof(*a));
    a->base_url = ab_xstrdup(d->base_url);
    a->app_id = ab_xstrdup(d->app_id);
    a->app_secret = ab_xstrdup(d->app_secret);
    a->next = e->apps;
    e->apps = a;
    return a;
}

static void activate(struct notify_engine *e, struct dest *d)
{
    if (!d->active) {
        d->active = true;
        d->anext = e->active;
        e->active = d;
    }
}

static void push_back(struct dest *d, struct notify_delivery *dl)
{
    dl->next = NULL;
    if (d->qtail != NULL)
        d->qtail->next = dl;
    else
        d->qhead = dl;
    d->qtail = dl;
}

static void push_front(struct dest *d, struct notify_delivery *dl)
{
    dl->next = d->qhead;
    d->qhead = dl;
    if (d->qtail == NULL)
        d->qtail = dl;
}

static struct notify_delivery *pop(struct dest *d)
{
    struct notify_delivery *dl = d->qhead;
    d->qhead = dl->next;
    if (d->qhead == NULL)
        d->qtail = NULL;
    dl->next = NULL;
    return dl;
}

/* GCRA without a burst: sends at most `rate` per second, evenly spaced (Feishu counts per
 * second, and a burst of `rate` at the end of one second and another at the start of the
 * next would be twice its limit). *tat_us is the theoretical arrival time of the next send,
 * in microseconds. rate_free_at says when a send may go (monotonic ms; <= now: at once),
 * rate_count counts one. rate <= 0: no limit. */
static int64_t rate_free_at(int64_t tat_us, int rate, int64_t now)
{
    return rate <= 0 || tat_us <= now * 1000 ? now : (tat_us + 999) / 1000;
}

static void rate_count(int64_t *tat_us, int rate, int64_t now)
{
    if (rate > 0)
        *tat_us = (*tat_us > now * 1000 ? *tat_us : now * 1000) + 1000000 / rate;
}

static void finish(struct notify_engine *e, struct notify_delivery *d)
{
    atomic_fetch_sub(&e->pending, 1);
    e->o.finished(e->o.ud, d);
}

static const struct ab_retry_policy *policy_of(const struct notify_engine *e,
                                               const struct notify_delivery *d)
{
    return d->kind == NOTIFY_WEBHOOK ? &d->endpoint->retry : &e->o.feishu_retry;
}

/* A failed attempt: RETRY with its due time while attempts are left, else FAILED. */
static void failed_attempt(struct notify_engine *e, struct notify_delivery *d, bool retriable)
{
    int64_t delay;
    if (retriable &&
        ab_retry_next(policy_of(e, d), d->attempt, d->retry_after_ms, ab_random_unit(), &delay)) {
        d->outcome = NOTIFY_RETRY;
        d->next_due_ms = ab_wall_ms() + delay;
    } else {
        d->outcome = NOTIFY_FAILED;
        if (retriable) {
            size_t n = strlen(d->error);
            snprintf(d->error + n, sizeof(d->error) - n, " (attempt %d, no attempt left)",
                     d->attempt);
        }
    }
}

static void keep_excerpt(struct notify_delivery *d, const struct call *c)
{
    size_t n = c->body_len < NOTIFY_EXCERPT_MAX ? c->body_len : NOTIFY_EXCERPT_MAX;
    if (c->body != NULL)
        memcpy(d->excerpt, c->body, n);
    d->excerpt[n] = '\0';
    ab_utf8_sanitize(d->excerpt);
}

/* ---- the breaker of an endpoint ----
 * Only the probe a half-open breaker sends decides whether it closes or opens again:
 * requests that left before the breaker opened may end long after (an endpoint timeout can
 * be longer than the cooldown) and say nothing about the endpoint now. */

static void breaker_success(struct dest *dest, struct notify_delivery *d, bool probe)
{
    if (dest->breaker == BREAKER_CLOSED) {
        dest->failures = 0;
    } else if (probe) {
        dest->breaker = BREAKER_CLOSED;
        dest->failures = 0;
        d->breaker_closed = true;
    }
}

static void breaker_failure(struct notify_engine *e, struct dest *dest, struct notify_delivery *d,
                            bool probe)
{
    int64_t now = ab_monotonic_ms();
    int64_t cap = e->o.breaker_cooldown_ms > BREAKER_MAX_COOLDOWN_MS ? e->o.breaker_cooldown_ms
                                                                     : BREAKER_MAX_COOLDOWN_MS;
    if (dest->breaker == BREAKER_CLOSED && ++dest->failures >= e->o.breaker_threshold) {
        dest->cooldown_ms = e->o.breaker_cooldown_ms;
        dest->breaker = BREAKER_OPEN;
        dest->open_until = now + dest->cooldown_ms;
        d->breaker_opened = true;
    } else if (dest->breaker != BREAKER_CLOSED && probe) {
        dest->cooldown_ms = dest->cooldown_ms * 2 > cap ? cap : dest->cooldown_ms * 2;
        dest->breaker = BREAKER_OPEN;
        dest->open_until = now + dest->cooldown_ms;
    }
}

/* ---- HTTP callbacks ---- */

static enum ab_http_multi_next on_headers(void *ud, long status,
                                          const struct ab_http_header *headers, size_t count)
{
    struct call *c = ud;
    const char *v;
    int64_t ms;
    c->status = status;
    v = ab_http_header_find(headers, count, "Retry-After");
    if (v != NULL && ab_retry_after_parse(v, ab_wall_ms(), &ms))
        c->retry_after_ms = ms;
    v = ab_http_header_find(headers, count, "x-ogw-ratelimit-reset");
    if (v != NULL && ab_retry_after_parse(v, ab_wall_ms(), &ms))
        c->ratelimit_reset_ms = ms;
    v = ab_http_header_find(headers, count, "x-ogw-ratelimit-limit");
    if (v != NULL)
        c->ratelimit_limit = strtol(v, NULL, 10);
    return AB_HTTP_MULTI_CONTINUE;
}

static enum ab_http_multi_next on_data(void *ud, const char *data, size_t len, int64_t now_ms)
{
    struct call *c = ud;
    (void)now_ms;
    size_t take = len < BODY_KEEP - c->body_len ? len : BODY_KEEP - c->body_len;
    c->body = ab_xrealloc(c->body, c->body_len + take + 1); /* most answers are tiny */
    memcpy(c->body + c->body_len, data, take);
    c->body_len += take;
    c->body[c->body_len] = '\0';
    /* The rest says nothing we keep: a receiver streaming megabytes is not read. */
    return c->body_len < BODY_KEEP ? AB_HTTP_MULTI_CONTINUE : AB_HTTP_MULTI_ABORT;
}

/* The answer came, whole or as much as we read of it (on_data stops at BODY_KEEP). */
static bool answered(const struct call *c, const struct ab_http_multi_result *r)
{
    return r->reason == AB_HTTP_MULTI_COMPLETE ||
           (r->reason == AB_HTTP_MULTI_ABORTED && c->status > 0 && c->body_len >= BODY_KEEP);
}

/* A request that did not complete: its code and message, and whether to try again
 * (timeouts, connections refused or cut; not a refused address, nor what libcurl refused). */
static bool transport_failure(struct notify_delivery *d, const char *what,
                              const struct ab_http_multi_result *r)
{
    notify_delivery_set_error(d, ab_http_multi_failure_code(r), "%s: %s", what, r->message);
    return ab_err_is_retriable(r->err);
}

static void start_call(struct notify_engine *e, struct call *c, const char *method, const char *url,
                       const char *const *headers, const char *body, long timeout_ms);

/* ---- outgoing webhooks ---- */

static void webhook_done(struct notify_engine *e, struct call *c,
                         const struct ab_http_multi_result *r)
{
    struct notify_delivery *d = c->d;
    const struct ab_outgoing_endpoint *ep = d->endpoint;
    struct dest *dest = c->dest;
    long code = 0;
    char msg[160] = "", what[AB_OUTGOING_ID_MAX + 16];

    dest->in_flight--;
    d->status = c->status;
    d->latency_ms += r->total_ms;
    d->retry_after_ms = c->retry_after_ms;
    keep_excerpt(d, c);
    snprintf(what, sizeof(what), "endpoint %s", ep->id);
    if (r->reason == AB_HTTP_MULTI_CANCELLED) {
        d->outcome = NOTIFY_ABANDONED;
    } else if (ep->format == AB_OUTGOING_FEISHU_BOT && answered(c, r) && c->status >= 200 &&
               c->status < 300 &&
               (notify_feishu_read_answer(c->body, c->body_len, &code, msg, sizeof(msg), NULL, 0),
                code > 0)) {
        /* A custom bot answers its errors with HTTP 200 and a code. */
        char code_s[32];
        snprintf(code_s, sizeof(code_s), "feishu_%ld", code);
        notify_delivery_set_error(d, code_s, "%s: Feishu bot code %ld: %s", what, code, msg);
        if (code == NOTIFY_FEISHU_BOT_RATE_LIMITED) {
            /* The bot's own rate: wait a second; neither an attempt nor a failure. */
            dest->blocked_until = ab_monotonic_ms() + 1000;
            push_front(dest, d);
            activate(e, dest);
            return;
        }
        breaker_failure(e, dest, d, c->probe);
        failed_attempt(e, d, notify_feishu_classify(c->status, code) != NOTIFY_FEISHU_REJECTED);
    } else if (c->status >= 200 && c->status < 300) {
        /* Standard Webhooks: a 2xx head is a delivery, whatever became of the body. */
        d->outcome = NOTIFY_DELIVERED;
        breaker_success(dest, d, c->probe);
    } else if (answered(c, r)) {
        char code_s[32];
        snprintf(code_s, sizeof(code_s), "http_%ld", c->status);
        notify_delivery_set_error(d, code_s, "%s answered HTTP %ld", what, c->status);
        if (c->status == 410) {
            /* Standard Webhooks: the receiver wants no more. A configured endpoint is
             * disabled; a forward has no endpoint to disable (its URL is the handler's
             * configuration), so only this delivery ends. */
            d->endpoint_gone = d->forward == NULL;
            d->outcome = NOTIFY_FAILED;
        } else {
            breaker_failure(e, dest, d, c->probe);
            failed_attempt(e, d, true);
        }
    } else {
        bool retriable = transport_failure(d, what, r);
        if (r->reason != AB_HTTP_MULTI_ADDRESS_REFUSED) /* not the endpoint's doing */
            breaker_failure(e, dest, d, c->probe);
        failed_attempt(e, d, retriable);
    }
    finish(e, d);
}

/* A text for a Feishu group bot: what happened, in a line or two. */
static char *bot_text(const struct notify_delivery *d)
{
    json_t *p = json_loadb(d->body, d->body_len, 0, NULL);
    const json_t *msg = json_object_get(p, "message");
    const char *from = json_string_value(json_object_get(msg, "from"));
    const char *to = json_string_value(json_object_get(msg, "to"));
    const char *text = json_string_value(json_object_get(msg, "text"));
    char *out = ab_xmalloc(4096);
    if (text != NULL)
        snprintf(out, 4096, "[%s] %s -> %s: %s", d->event_type, from ? from : "?", to ? to : "?",
                 text);
    else
        snprintf(out, 4096, "[%s] %.*s", d->event_type,
                 (int)(d->body_len > 3000 ? 3000 : d->body_len), d->body);
    ab_utf8_sanitize(out);
    json_decref(p);
    return out;
}

static void webhook_send(struct notify_engine *e, struct dest *dest, struct notify_delivery *d)
{
    const struct ab_outgoing_endpoint *ep = d->endpoint;
    struct call *c = ab_xcalloc(1, sizeof(*c));
    long long now_s = (long long)(ab_wall_ms() / 1000);
    char id_h[AB_UUID_LEN + 16], ts_h[48],
        sig_h[32 + AB_OUTGOING_MAX_SECRETS * (AB_WEBHOOK_SIGNATURE_MAX + 1)];
    const char *headers[8];
    size_t n = 0;
    char *bot_body = NULL;

    c->e = e;
    c->kind = CALL_WEBHOOK;
    c->d = d;
    c->dest = dest;
    c->retry_after_ms = -1;
    c->probe = dest->breaker == BREAKER_HALF_OPEN;
    dest->in_flight++;
    headers[n++] = "Content-Type: application/json";
    if (ep->format == AB_OUTGOING_FEISHU_BOT) {
        char *text = bot_text(d);
        bot_body = notify_feishu_bot_body(text, ep->secret_count ? ep->secrets[0] : NULL, now_s);
        free(text);
    } else {
        snprintf(id_h, sizeof(id_h), "webhook-id: %s", d->id);
        snprintf(ts_h, sizeof(ts_h), "webhook-timestamp: %lld", now_s);
        headers[n++] = id_h;
        headers[n++] = ts_h;
        if (ep->secret_count > 0) {
            size_t len = (size_t)snprintf(sig_h, sizeof(sig_h), "webhook-signature:");
            for (size_t i = 0; i < ep->secret_count; i++) {
                char sig[AB_WEBHOOK_SIGNATURE_MAX];
                if (ab_webhook_sign(ep->secrets[i], d->id, now_s, d->body, d->body_len, sig,
                                    sizeof(sig)) == AB_OK)
                    len += (size_t)snprintf(sig_h + len, sizeof(sig_h) - len, " %s", sig);
            }
            headers[n++] = sig_h;
        }
    }
    headers[n] = NULL;
    start_call(e, c, ep->method, ep->url, headers, bot_body ? bot_body : d->body, ep->timeout_ms);
    free(bot_body);
}

/* ---- Feishu ---- */

static void feishu_send(struct notify_engine *e, struct dest *dest, struct notify_delivery *d,
                        struct app *a);

static void token_done(struct notify_engine *e, struct call *c,
                       const struct ab_http_multi_result *r)
{
    struct app *a = c->app;
    long expire = 0, code = -1;
    char msg[200] = "", what[300];
    bool retriable;
    struct notify_delivery probe = {0}; /* where the failure is written, then copied */

    a->fetching = false;
    if (r->reason == AB_HTTP_MULTI_CANCELLED)
        return; /* stopping: the deliveries waiting for it end abandoned, not failed */
    if (r->reason == AB_HTTP_MULTI_COMPLETE &&
        notify_feishu_read_token(c->body, c->body_len, a->token, sizeof(a->token), &expire)) {
        a->token_until = ab_monotonic_ms() + notify_feishu_token_use_ms(expire);
        a->token_gen++;
        ab_debug("feishu app %s: new tenant_access_token for %ld s", a->app_id, expire);
        return;
    }
    snprintf(what, sizeof(what), "Feishu app %s: no tenant_access_token", a->app_id);
    if (r->reason == AB_HTTP_MULTI_COMPLETE) {
        char code_s[48];
        notify_feishu_read_answer(c->body, c->body_len, &code, msg, sizeof(msg), NULL, 0);
        retriable = notify_feishu_classify(c->status, code) != NOTIFY_FEISHU_REJECTED;
        if (code >= 0)
            snprintf(code_s, sizeof(code_s), "feishu_token_%ld", code);
        else
            snprintf(code_s, sizeof(code_s), "feishu_token_http_%ld", c->status);
        notify_delivery_set_error(&probe, code_s, "%s: HTTP %ld, code %ld: %s", what, c->status,
                                  code, msg);
    } else {
        retriable = transport_failure(&probe, what, r);
    }
    ab_warn("%s", probe.error);
    a->fetch_after = ab_monotonic_ms() + TOKEN_FAIL_BACKOFF_MS;
    /* The deliveries waiting for this app end their attempt with the error. */
    for (struct dest *dest = e->active; dest != NULL; dest = dest->anext) {
        struct notify_delivery *waiting = dest->qhead;
        dest->qhead = dest->qtail = NULL;
        for (struct notify_delivery *d = waiting, *next; d != NULL; d = next) {
            next = d->next;
            if (d->kind != NOTIFY_FEISHU || strcmp(d->app_id, a->app_id) != 0 ||
                strcmp(d->base_url, a->base_url) != 0) {
                push_back(dest, d);
                continue;
            }
            notify_delivery_set_error(d, probe.code, "%s", probe.error);
            d->status = c->status;
            failed_attempt(e, d, retriable);
            finish(e, d);
        }
    }
}

static void token_fetch(struct notify_engine *e, struct app *a)
{
    struct call *c = ab_xcalloc(1, sizeof(*c));
    char url[2300];
    const char *headers[] = {"Content-Type: application/json; charset=utf-8", NULL};
    char *body = notify_feishu_token_body(a->app_id, a->app_secret);

    c->e = e;
    c->kind = CALL_TOKEN;
    c->app = a;
    c->retry_after_ms = -1;
    a->fetching = true;
    snprintf(url, sizeof(url), "%s/open-apis/auth/v3/tenant_access_token/internal", a->base_url);
    start_call(e, c, "POST", url, headers, body, e->o.request_timeout_ms);
    free(body);
}

/* feishu_<code>, or http_<status> when the answer had no code. */
static void feishu_error(struct notify_delivery *d, long status, long code, const char *msg)
{
    char code_s[32];
    if (code >= 0)
        snprintf(code_s, sizeof(code_s), "feishu_%ld", code);
    else
        snprintf(code_s, sizeof(code_s), "http_%ld", status);
    notify_delivery_set_error(d, code_s, "Feishu answered HTTP %ld, code %ld: %s", status, code,
                              msg);
}

/* Sends d again later in this attempt (a new token, the open_id, a rate limit's reset). */
static void again(struct notify_engine *e, struct dest *dest, struct notify_delivery *d)
{
    push_front(dest, d);
    activate(e, dest);
}

static void feishu_done(struct notify_engine *e, struct call *c,
                        const struct ab_http_multi_result *r)
{
    struct notify_delivery *d = c->d;
    struct dest *dest = c->dest;
    struct app *a = c->app;
    long code = -1;
    char msg[200] = "";

    dest->in_flight--;
    d->status = c->status;
    d->latency_ms += r->total_ms;
    d->retry_after_ms = c->retry_after_ms;
    keep_excerpt(d, c);
    if (r->reason == AB_HTTP_MULTI_CANCELLED) {
        d->outcome = NOTIFY_ABANDONED;
        finish(e, d);
        return;
    }
    if (!answered(c, r)) {
        /* A timeout may have posted: the next attempt's uuid is the same. */
        failed_attempt(e, d, transport_failure(d, "Feishu send", r));
        finish(e, d);
        return;
    }
    notify_feishu_read_answer(c->body, c->body_len, &code, msg, sizeof(msg), d->message_id,
                              sizeof(d->message_id));
    switch (notify_feishu_classify(c->status, code)) {
    case NOTIFY_FEISHU_SENT:
        d->outcome = NOTIFY_DELIVERED;
        finish(e, d);
        return;
    case NOTIFY_FEISHU_TOKEN:
        if (!d->token_refreshed) {
            d->token_refreshed = true;
            if (a->token_gen == c->token_gen)
                a->token_until = 0; /* not if another send already got a new one */
            again(e, dest, d);
            return;
        }
        break;
    case NOTIFY_FEISHU_THROTTLED: {
        int64_t wait = c->ratelimit_reset_ms >= 0 ? c->ratelimit_reset_ms
                       : c->retry_after_ms >= 0   ? c->retry_after_ms
                                                  : 1000;
        if (wait <= THROTTLE_WAIT_MAX_MS) {
            /* 230020 is the person's (or the chat's) frequency limit; 429 and 99991400 the
             * app's, which every send through it waits out. */
            int64_t until = ab_monotonic_ms() + (wait > 0 ? wait : 100);
            if (code == NOTIFY_FEISHU_FREQUENCY_LIMITED)
                dest->blocked_until = until;
            else
                a->blocked_until = until;
            again(e, dest, d);
            return;
        }
        d->retry_after_ms = wait;
        break;
    }
    case NOTIFY_FEISHU_REJECTED:
        if (strcmp(d->receive_id_type, "user_id") == 0 && d->open_id != NULL && !d->tried_open_id) {
            /* user_id needs a scope the app may lack; open_id always works for its users.
             * Same uuid: the user_id send did not post. */
            ab_info("feishu delivery %s: user_id refused (code %ld: %s), sending to open_id", d->id,
                    code, msg);
            d->tried_open_id = true;
            again(e, dest, d);
            return;
        }
        feishu_error(d, c->status, code, msg);
        failed_attempt(e, d, false);
        finish(e, d);
        return;
    case NOTIFY_FEISHU_RETRY:
        break;
    }
    feishu_error(d, c->status, code, msg);
    failed_attempt(e, d, true);
    finish(e, d);
}

static void feishu_send(struct notify_engine *e, struct dest *dest, struct notify_delivery *d,
                        struct app *a)
{
    struct call *c = ab_xcalloc(1, sizeof(*c));
    bool to_chat = d->chat_id[0] != '\0';
    bool by_open_id = !to_chat && (d->user_id == NULL || d->tried_open_id);
    const char *receive_id = to_chat ? d->chat_id : by_open_id ? d->open_id : d->user_id;
    char url[2300], auth[4200];
    const char *headers[] = {"Content-Type: application/json; charset=utf-8", auth, NULL};

    c->e = e;
    c->kind = CALL_FEISHU;
    c->d = d;
    c->dest = dest;
    c->app = a;
    c->retry_after_ms = c->ratelimit_reset_ms = -1;
    c->token_gen = a->token_gen;
    snprintf(d->receive_id_type, sizeof(d->receive_id_type), "%s",
             to_chat      ? "chat_id"
             : by_open_id ? "open_id"
                          : "user_id");
    snprintf(url, sizeof(url), "%s/open-apis/im/v1/messages?receive_id_type=%s", a->base_url,
             d->receive_id_type);
    snprintf(auth, sizeof(auth), "Authorization: Bearer %s", a->token);
    char *body = notify_feishu_send_body(receive_id, d->text, d->uuid);
    dest->in_flight++;
    start_call(e, c, "POST", url, headers, body, e->o.request_timeout_ms);
    free(body);
}

/* ---- the loop ---- */

static void on_done(void *ud, const struct ab_http_multi_result *r)
{
    struct call *c = ud;
    struct notify_engine *e = c->e;
    switch (c->kind) {
    case CALL_WEBHOOK:
        webhook_done(e, c, r);
        break;
    case CALL_FEISHU:
        feishu_done(e, c, r);
        break;
    case CALL_TOKEN:
        token_done(e, c, r);
        break;
    }
    free(c->body);
    free(c);
}

/* Every request is guarded, Feishu's too: a base URL is configuration an admin API
 * writes, and the app secret must not go to a metadata address either; and guarded and
 * unguarded requests would share kept-alive connections. */
static void start_call(struct notify_engine *e, struct call *c, const char *method, const char *url,
                       const char *const *headers, const char *body, long timeout_ms)
{
    /* A delivery's call is a child span of the delivery's; a token fetch serves many. */
    char traceparent[AB_TRACEPARENT_LEN + 1];
    bool traced = c->d != NULL && c->d->traceparent != NULL;
    if (traced)
        ab_trace_child_header(c->d->traceparent, traceparent);
    const struct ab_http_multi_request req = {
        .http = {.method = method,
                 .url = url,
                 .headers = headers,
                 .body = body,
                 .body_len = body ? strlen(body) : 0,
                 .timeout_ms = timeout_ms,
                 .connect_timeout_ms = timeout_ms < 10000 ? timeout_ms : 10000,
                 .max_response_bytes = RESPONSE_CAP,
                 .user_agent = USER_AGENT,
                 .traceparent = traced ? traceparent : NULL},
        .guard = e->o.guard,
    };
    const struct ab_http_multi_callbacks cb = {
        .on_headers = on_headers, .on_data = on_data, .on_done = on_done};
    char err[256];
    enum ab_err rc = ab_http_multi_add(e->http, &req, &cb, c, NULL, err, sizeof(err));
    if (rc == AB_OK)
        return;
    /* Refused before it started: the same path as a failed request. */
    struct ab_http_multi_result r = {.err = rc, .reason = AB_HTTP_MULTI_FAILED};
    snprintf(r.message, sizeof(r.message), "%s", err);
    on_done(c, &r);
}

/* Starts what a destination may start now; *wake is lowered to when it may start more. */
static void pump(struct notify_engine *e, struct dest *dest, int64_t now, int64_t *wake)
{
    while (dest->qhead != NULL) {
        struct notify_delivery *d = dest->qhead;
        if (dest->blocked_until > now) {
            if (dest->blocked_until < *wake)
                *wake = dest->blocked_until;
            return;
        }
        if (d->kind == NOTIFY_WEBHOOK) {
            if (dest->breaker == BREAKER_OPEN && now >= dest->open_until)
                dest->breaker = BREAKER_HALF_OPEN;
            if (dest->breaker == BREAKER_OPEN) {
                /* Deferred, not attempted: the attempt is not used up. */
                pop(dest);
                d->outcome = NOTIFY_DEFERRED;
                d->next_due_ms =
                    ab_wall_ms() + (dest->open_until - now) + (int64_t)(ab_random_unit() * 1000);
                notify_delivery_set_error(d, "breaker_open", "endpoint %s is failing: deferred",
                                          d->endpoint->id);
                finish(e, d);
                continue;
            }
            int limit = dest->breaker == BREAKER_HALF_OPEN ? 1 : e->o.endpoint_concurrency;
            if (dest->in_flight >= limit)
                return;
            if (d->endpoint->format == AB_OUTGOING_FEISHU_BOT) {
                int64_t at = rate_free_at(dest->tat_us, FEISHU_BOT_RATE, now);
                if (at > now) {
                    if (at < *wake)
                        *wake = at;
                    return;
                }
                rate_count(&dest->tat_us, FEISHU_BOT_RATE, now);
            }
            webhook_send(e, dest, pop(dest));
            continue;
        }
        /* Feishu: one at a time per person (or chat), within its and the app's rates. */
        if (dest->in_flight > 0)
            return;
        struct app *a = app_of(e, d);
        if (a->blocked_until > now) {
            if (a->blocked_until < *wake)
                *wake = a->blocked_until;
            return;
        }
        if (a->token_until <= now) {
            if (!a->fetching && a->fetch_after <= now)
                token_fetch(e, a);
            else if (!a->fetching && a->fetch_after < *wake)
                *wake = a->fetch_after;
            return; /* every turn pumps the active destinations again */
        }
        int64_t at = rate_free_at(dest->tat_us, e->o.feishu_user_rate, now);
        int64_t app_at = rate_free_at(a->tat_us, e->o.feishu_app_rate, now);
        if (app_at > at)
            at = app_at;
        if (at > now) {
            if (at < *wake)
                *wake = at;
            return;
        }
        rate_count(&dest->tat_us, e->o.feishu_user_rate, now);
        rate_count(&a->tat_us, e->o.feishu_app_rate, now);
        feishu_send(e, dest, pop(dest), a);
    }
}

/* Forgets destinations with nothing to remember: no delivery, no breaker, no rate or
 * rate-limit state that is still running. One per person or endpoint ever seen would
 * otherwise stay for the life of the process. */
static void sweep(struct notify_engine *e, int64_t now)
{
    if (now < e->next_sweep)
        return;
    e->next_sweep = now + SWEEP_EVERY_MS;
    for (size_t b = 0; b < DEST_BUCKETS; b++) {
        struct dest **link = &e->buckets[b];
        while (*link != NULL) {
            struct dest *d = *link;
            if (!d->active && d->in_flight == 0 && d->breaker == BREAKER_CLOSED &&
                d->failures == 0 && d->blocked_until <= now && d->tat_us <= now * 1000) {
                *link = d->hnext;
                free(d->name);
                free(d);
            } else {
                link = &d->hnext;
            }
        }
    }
}

static struct notify_delivery *take_incoming(struct notify_engine *e)
{
    pthread_mutex_lock(&e->lock);
    struct notify_delivery *list = e->in_head;
    e->in_head = e->in_tail = NULL;
    pthread_mutex_unlock(&e->lock);
    return list;
}

/* One pass over the active destinations: those with nothing queued leave the list. */
static int64_t pump_active(struct notify_engine *e)
{
    int64_t now = ab_monotonic_ms(), wake = now + MAX_IDLE_WAIT_MS;
    struct dest **link = &e->active;
    while (*link != NULL) {
        struct dest *dest = *link;
        pump(e, dest, now, &wake);
        if (dest->qhead == NULL) {
            dest->active = false;
            *link = dest->anext;
        } else {
            link = &dest->anext;
        }
    }
    return wake;
}

static void *engine_main(void *arg)
{
    struct notify_engine *e = arg;
    const struct ab_http_multi_options mo = {.max_transfers = e->o.max_transfers};
    struct ab_http_multi *http = ab_http_multi_new(&mo);

    pthread_mutex_lock(&e->lock);
    e->http = http;
    e->started = http ? 1 : -1;
    pthread_cond_broadcast(&e->started_cond);
    pthread_mutex_unlock(&e->lock);
    if (http == NULL)
        return NULL;
    while (!atomic_load(&e->stop)) {
        for (struct notify_delivery *d = take_incoming(e), *next; d != NULL; d = next) {
            next = d->next;
            struct dest *dest = dest_of(e, d->destination);
            push_back(dest, d);
            activate(e, dest);
        }
        int64_t wake = pump_active(e);
        sweep(e, ab_monotonic_ms());
        int64_t wait = wake - ab_monotonic_ms();
        ab_http_multi_run(http, wait < 0 ? 0 : (int)wait);
    }
    pthread_mutex_lock(&e->lock);
    e->http = NULL;
    pthread_mutex_unlock(&e->lock);
    ab_http_multi_free(http); /* in-flight calls end CANCELLED: abandoned */
    for (struct dest *dest = e->active; dest != NULL; dest = dest->anext)
        while (dest->qhead != NULL) {
            struct notify_delivery *d = pop(dest);
            d->outcome = NOTIFY_ABANDONED;
            finish(e, d);
        }
    e->active = NULL;
    for (struct notify_delivery *d = take_incoming(e), *next; d != NULL; d = next) {
        next = d->next;
        d->outcome = NOTIFY_ABANDONED;
        finish(e, d);
    }
    return NULL;
}

struct notify_engine *notify_engine_new(const struct notify_engine_options *opts, char *errstr,
                                        size_t size)
{
    struct notify_engine *e = ab_xcalloc(1, sizeof(*e));
    e->o = *opts;
    pthread_mutex_init(&e->lock, NULL);
    pthread_cond_init(&e->started_cond, NULL);
    if (pthread_create(&e->thread, NULL, engine_main, e) != 0) {
        snprintf(errstr, size, "notifier: cannot start the engine thread");
        free(e);
        return NULL;
    }
    pthread_mutex_lock(&e->lock);
    while (e->started == 0)
        pthread_cond_wait(&e->started_cond, &e->lock);
    pthread_mutex_unlock(&e->lock);
    if (e->started < 0) {
        pthread_join(e->thread, NULL);
        snprintf(errstr, size, "notifier: libcurl's multi interface did not start");
        free(e);
        return NULL;
    }
    return e;
}

void notify_engine_submit(struct notify_engine *e, struct notify_delivery *d)
{
    d->next = NULL;
    atomic_fetch_add(&e->pending, 1);
    pthread_mutex_lock(&e->lock);
    if (e->in_tail != NULL)
        e->in_tail->next = d;
    else
        e->in_head = d;
    e->in_tail = d;
    if (e->http != NULL)
        ab_http_multi_wakeup(e->http);
    pthread_mutex_unlock(&e->lock);
}

size_t notify_engine_pending(const struct notify_engine *e)
{
    return atomic_load(&((struct notify_engine *)e)->pending);
}

void notify_engine_free(struct notify_engine *e)
{
    if (e == NULL)
        return;
    pthread_mutex_lock(&e->lock);
    atomic_store(&e->stop, true);
    if (e->http != NULL)
        ab_http_multi_wakeup(e->http);
    pthread_mutex_unlock(&e->lock);
    pthread_join(e->thread, NULL);
    for (size_t b = 0; b < DEST_BUCKETS; b++)
        for (struct dest *d = e->buckets[b], *next; d != NULL; d = next) {
            next = d->hnext;
            free(d->name);
            free(d);
        }
    for (struct app *a = e->apps, *next; a != NULL; a = next) {
        next = a->next;
        free(a->base_url);
        free(a->app_id);
        free(a->app_secret);
        free(a);
    }
    pthread_mutex_destroy(&e->lock);
    pthread_cond_destroy(&e->started_cond);
    free(e);
}
