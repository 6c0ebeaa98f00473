/* Incoming webhooks' requests (webhook_receive.h). */
#include "services/ingress/webhook_receive.h"

#include <ctype.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "common/crypto.h"
#include "common/db.h"
#include "common/envelope.h"
#include "common/log.h"
#include "common/template.h"
#include "common/util.h"
#include "common/webhook_auth.h"
#include "services/ingress/routes_gateway.h"

#define SOURCE          "/agentbus/ingress/webhook"
#define EVENT_TYPE      "agentbus.webhook.received"
#define DB_WAIT_MS      2000
#define KEY_MAX         256
#define SESSION_KEY_MAX 200
#define TEXT_MAX        65536 /* a rendered template: a message or a prompt */
#define HEADERS_MAX     100
#define LIMITER_SOURCES 65536

/* Headers that are credentials: never copied into the event (nor so into templates). */
static bool header_secret(const struct ab_hook *h, const char *name)
{
    static const char *const secret[] = {
        "authorization",       "proxy-authorization", "cookie",           "x-hub-signature",
        "x-hub-signature-256", "webhook-signature",   "x-webhook-secret", NULL};
    for (size_t i = 0; secret[i] != NULL; i++)
        if (strcasecmp(name, secret[i]) == 0)
            return true;
    return strcasecmp(name, h->secret_header) == 0;
}

/* The request's headers (names lower-cased) and query values as JSON objects, without
 * credentials. ulfius drops values that are not UTF-8, so json_string cannot fail on them. */
static json_t *headers_json(const struct ab_hook *h, const struct _u_request *req)
{
    json_t *out = json_object();
    const struct _u_map *m = req->map_header;
    for (int i = 0; m != NULL && i < m->nb_values && i < HEADERS_MAX; i++) {
        char name[128];
        size_t n = strlen(m->keys[i]);
        if (n >= sizeof(name) || header_secret(h, m->keys[i]))
            continue;
        for (size_t c = 0; c <= n; c++)
            name[c] = (char)tolower((unsigned char)m->keys[i][c]);
        json_t *v = json_string(m->values[i]);
        if (v != NULL)
            json_object_set_new(out, name, v);
    }
    return out;
}

static json_t *query_json(const struct _u_request *req)
{
    json_t *out = json_object();
    const struct _u_map *m = req->map_url;
    for (int i = 0; m != NULL && i < m->nb_values && i < HEADERS_MAX; i++) {
        json_t *v = json_string(m->values[i]);
        if (v != NULL)
            json_object_set_new(out, m->keys[i], v);
    }
    return out;
}

static void refuse(struct ingress_webhooks *wh, struct _u_response *resp, const char *outcome,
                   enum ab_err err, const char *message)
{
    ab_metric_inc(wh->m_requests, (const char *const[]){outcome, NULL}, 1);
    ab_http_error(resp, err, "%s", message);
}

/* The shared secret and the signature the hook asks for. why gets what failed (never a
 * secret, nor how close a guess came). */
static bool authenticate(const struct ab_hook *h, const struct _u_request *req, long long now_s,
                         char *why, size_t size)
{
    const void *body = req->binary_body;
    size_t len = req->binary_body_length;
    if (h->secret_count > 0) {
        const char *given = ab_http_header(req, h->secret_header);
        bool ok = false;
        for (size_t i = 0; i < h->secret_count; i++) /* all compared: time says nothing */
            ok |= ab_shared_secret_valid(h->secrets[i], given);
        if (!ok) {
            snprintf(why, size, "%s header %s", given ? "wrong" : "missing", h->secret_header);
            return false;
        }
    }
    if (h->scheme == AB_HOOK_SIG_GITHUB) {
        const char *sig = ab_http_header(req, "X-Hub-Signature-256");
        bool ok = false;
        for (size_t i = 0; i < h->signature_secret_count; i++)
            ok |= ab_github_signature_valid(h->signature_secrets[i], body, len, sig);
        if (!ok) {
            snprintf(why, size, "%s X-Hub-Signature-256", sig ? "bad" : "missing");
            return false;
        }
    } else if (h->scheme == AB_HOOK_SIG_STANDARD) {
        enum ab_sig_result r = AB_SIG_MISMATCH;
        for (size_t i = 0; i < h->signature_secret_count && r != AB_SIG_OK; i++) {
            r = ab_standard_webhook_verify(
                h->signature_secrets[i], ab_http_header(req, "webhook-id"),
                ab_http_header(req, "webhook-timestamp"), ab_http_header(req, "webhook-signature"),
                body, len, now_s, h->tolerance_s);
            if (r != AB_SIG_OK && r != AB_SIG_MISMATCH)
                break; /* missing, malformed or stale whatever the key */
        }
        if (r != AB_SIG_OK) {
            snprintf(why, size, "%s", ab_sig_result_message(r));
            return false;
        }
    }
    return true;
}

/* What the request is about: the parsed body, the rendered text, the session, the
 * delivery id. */
struct received {
    json_t *payload;
    const char *format; /* "json", "text" or "empty" */
    json_t *headers, *query;
    char *text;
    bool text_truncated;
    char session[SESSION_KEY_MAX + 64];
    bool session_chosen; /* persistent or the caller's: events keyed by it, in order */
    const char *delivery_key;
    char body_sha256[65];
    char event_id[AB_UUID_LEN + 1];
};

static bool json_content_type(const char *ct)
{
    if (ct == NULL)
        return false;
    size_t n = strcspn(ct, ";");
    while (n > 0 && isspace((unsigned char)ct[n - 1]))
        n--;
    /* application/json, and the +json types (application/cloudevents+json, ...) */
    return (n == 16 && strncasecmp(ct, "application/json", 16) == 0) ||
           (n > 5 && strncasecmp(ct + n - 5, "+json", 5) == 0);
}

/* Reads the body. @returns 0, or the HTTP status of the refusal with message in why. */
static int read_body(const struct ab_hook *h, const struct _u_request *req, struct received *r,
                     char *why, size_t size)
{
    const char *ct = ab_http_header(req, "Content-Type");
    size_t len = req->binary_body_length;
    json_error_t jerr;
    ab_sha256_hex(len ? req->binary_body : "", len, r->body_sha256);
    if (len == 0) {
        r->payload = json_null();
        r->format = "empty";
        return 0;
    }
    if (json_content_type(ct) || (ct == NULL && !h->accept_text)) {
        r->payload = json_loadb(req->binary_body, len, JSON_DECODE_ANY, &jerr);
        r->format = "json";
        if (r->payload == NULL) {
            snprintf(why, size, "the body is not valid JSON: line %d column %d: %s", jerr.line,
                     jerr.column, jerr.text);
            return 400;
        }
        return 0;
    }
    if (!h->accept_text) {
        snprintf(why, size,
                 "this hook takes JSON bodies (Content-Type: application/json), "
                 "not %.100s",
                 ct ? ct : "an untyped body");
        return 415;
    }
    /* jansson keeps a NUL inside a string (as \u0000), which nothing downstream reads */
    r->payload = memchr(req->binary_body, 0, len) ? NULL : json_stringn(req->binary_body, len);
    r->format = "text";
    if (r->payload == NULL) {
        snprintf(why, size, "the text body is not valid UTF-8, or holds a NUL byte");
        return 400;
    }
    return 0;
}

static bool has_prefix_nocase(const char *s, const char *prefix)
{
    return strncasecmp(s, prefix, strlen(prefix)) == 0;
}

/* The session: the caller's (only where the hook allows it, under an allowed prefix) or
 * the hook's persistent one; "" when it is to be a new one (default_session), which needs
 * the event's id. Checked before the delivery id is reserved, so a refused request leaves
 * no record that would turn its corrected retry into a conflict. */
static int choose_session(const struct ab_hook *h, struct received *r, char *why, size_t size)
{
    const json_t *asked = json_object_get(r->payload, "sessionKey");
    if (asked != NULL && !json_is_null(asked)) {
        const char *key = json_string_value(asked);
        bool ok = false;
        if (!h->allow_request_session_key) {
            snprintf(why, size, "this hook does not take a sessionKey from the request");
            return 400;
        }
        if (key == NULL || key[0] == '\0' || strlen(key) > SESSION_KEY_MAX) {
            snprintf(why, size, "sessionKey must be a string of 1 to %d bytes", SESSION_KEY_MAX);
            return 400;
        }
        for (const char *c = key; *c; c++)
            if ((unsigned char)*c < 0x20 || *c == 0x7f) {
                snprintf(why, size, "sessionKey must not hold control characters");
                return 400;
            }
        for (size_t i = 0; i < h->prefix_count; i++)
            ok = ok || has_prefix_nocase(key, h->session_prefixes[i]);
        if (!ok) {
            snprintf(why, size, "sessionKey must start with an allowed prefix (\"%s\"%s)",
                     h->session_prefixes[0], h->prefix_count > 1 ? ", ..." : "");
            return 400;
        }
        snprintf(r->session, sizeof(r->session), "%s", key);
        r->session_chosen = true;
    } else if (h->persistent) {
        snprintf(r->session, sizeof(r->session), "%s", h->session_key);
        r->session_chosen = true;
    }
    return 0;
}

static void default_session(struct received *r)
{
    if (!r->session_chosen)
        snprintf(r->session, sizeof(r->session), "hook:%s", r->event_id);
}

/* The sender's delivery id: Idempotency-Key, else GitHub's or Standard Webhooks'. A hook
 * with a Standard Webhooks signature takes only webhook-id, which the signature covers: an
 * unsigned Idempotency-Key would let a captured request be replayed, within the timestamp
 * tolerance, as new events. */
static int delivery_key(const struct ab_hook *h, const struct _u_request *req, struct received *r,
                        char *why, size_t size)
{
    static const char *const names[] = {"Idempotency-Key", "X-GitHub-Delivery", "webhook-id", NULL};
    if (h->scheme == AB_HOOK_SIG_STANDARD)
        r->delivery_key = ab_http_header(req, "webhook-id");
    for (size_t i = 0; names[i] != NULL && r->delivery_key == NULL; i++)
        r->delivery_key = ab_http_header(req, names[i]);
    if (r->delivery_key == NULL)
        return 0;
    size_t n = strlen(r->delivery_key);
    bool ok = n > 0 && n <= KEY_MAX;
    for (size_t i = 0; ok && i < n; i++)
        ok = (unsigned char)r->delivery_key[i] >= 0x20 && r->delivery_key[i] != 0x7f;
    if (!ok) {
        snprintf(why, size, "the delivery id (Idempotency-Key) must be 1 to %d printable bytes",
                 KEY_MAX);
        return 400;
    }
    return 0;
}

/* The rendered template, marked as untrusted when it becomes an agent's prompt. */
static void render(const struct ab_hook *h, struct received *r)
{
    char now[32];
    ab_time_rfc3339(ab_wall_ms(), now);
    const struct ab_template_ctx ctx = {r->payload, r->headers, r->query, now};
    char *text = ab_template_render(h->template ? h->template : "{{event}}", &ctx, TEXT_MAX,
                                    &r->text_truncated);
    bool to_agent = h->action == AB_HOOK_RUN_AGENT ||
                    (h->action == AB_HOOK_SEND_MESSAGE && strcmp(h->channel, "agent") == 0);
    if (to_agent && !h->unsafe_external_content) {
        char source[160];
        snprintf(source, sizeof(source), "webhook %s", h->id);
        r->text = ab_untrusted_wrap(source, text ? text : "");
        free(text);
    } else {
        r->text = text ? text : ab_xstrdup("");
    }
}

/* The event's data (docs/events.md, agentbus.webhook.received). */
static json_t *event_data(const struct ab_hook *h, const struct received *r, const char *ip)
{
    json_t *target = NULL;
    if (h->action == AB_HOOK_SEND_MESSAGE)
        target = json_pack("{s:s,s:s}", "channel", h->channel, "peer", h->peer);
    else if (h->action == AB_HOOK_FORWARD)
        target = json_pack("{s:s,s:s}", "url", h->forward_url, "method", h->forward_method);
    else if (h->action == AB_HOOK_CUSTOM)
        target = json_pack("{s:s}", "topic", h->topic);
    json_t *data = json_pack(
        "{s:{s:s,s:s?,s:s},s:s?,s:s,s:s?,s:o?,s:s,s:s,s:b,s:O,s:s,s:O,s:O,"
        "s:s?,s:s}",
        "hook", "id", h->id, "path", h->path, "source", h->from_config ? "config" : "admin",
        "tenant", h->tenant, "action", ab_hook_action_name(h->action), "agent", h->agent, "target",
        target, "session_key", r->session, "text", r->text, "text_truncated", r->text_truncated,
        "payload", r->payload, "payload_format", r->format, "headers", r->headers, "query",
        r->query, "delivery_key", r->delivery_key, "client_ip", ip);
    /* The seed's incoming format {event, data, timestamp}, named where the sender used it (its
     * data is the payload's: not copied, the event must stay within Kafka's limit). */
    const json_t *name = json_object_get(r->payload, "event");
    if (data != NULL && json_is_string(name) && json_object_get(r->payload, "data") != NULL)
        json_object_set_new(data, "incoming",
                            json_pack("{s:O,s:O?}", "event", name, "timestamp",
                                      json_object_get(r->payload, "timestamp")));
    return data;
}

/* What a delivery id's record says this request is to do. */
enum reservation {
    RESERVED_FRESH,     /* first in the window: publish under r->event_id */
    RESERVED_TAKEOVER,  /* seen, never acknowledged, its publisher gone: publish it again */
    RESERVED_DUPLICATE, /* seen and acknowledged: answer with its event */
    RESERVED_BUSY,      /* seen, being published by another request right now: retry */
};

/* A record not published yet whose lease ran out (its publisher failed or died) is taken
 * over by one request, which publishes the same event again. */
static enum ab_err take_over(PGconn *conn, const char *const params[2], bool *taken, char *errstr,
                             size_t size)
{
    PGresult *res = NULL;
    enum ab_err err = ab_db_exec(conn,
                                 "UPDATE webhook_deliveries SET publishing_until = now() +"
                                 " interval '30 seconds' WHERE hook_id = $1 AND delivery_key = $2"
                                 " AND NOT published AND publishing_until < now() RETURNING 1",
                                 2, params, &res, errstr, size);
    *taken = err == AB_OK && PQntuples(res) == 1;
    PQclear(res);
    return err;
}

/* Reserves the delivery id. @returns AB_OK with *what (r->event_id is then the event to
 * publish or answer); AB_ERR_CONFLICT when the id came with a different body. */
static enum ab_err reserve(struct ingress_webhooks *wh, const struct ab_hook *h, struct received *r,
                           enum reservation *what, char *errstr, size_t size)
{
    char window[32];
    PGconn *conn = NULL;
    PGresult *res = NULL;
    snprintf(window, sizeof(window), "%lld seconds", wh->hooks->incoming->idempotency_window_s);
    const char *const params[] = {h->id, r->delivery_key, r->event_id, r->body_sha256, window};
    enum ab_err err = ab_service_db_acquire(wh->svc, DB_WAIT_MS, &conn, errstr, size);
    if (err)
        return err;
    /* The insert (or the takeover of a row older than the window) returns the row; a row
     * that is already there returns nothing, and is read by a second statement, which also
     * sees one a concurrent first delivery committed meanwhile. */
    err = ab_db_exec(conn,
                     "INSERT INTO webhook_deliveries (hook_id, delivery_key, event_id,"
                     " body_sha256) VALUES ($1, $2, $3, $4)"
                     " ON CONFLICT (hook_id, delivery_key) DO UPDATE SET event_id = $3,"
                     " body_sha256 = $4, published = false, created_at = now(),"
                     " publishing_until = now() + interval '30 seconds'"
                     " WHERE webhook_deliveries.created_at < now() - $5::interval"
                     " RETURNING event_id::text, true, published, body_sha256",
                     5, params, &res, errstr, size);
    if (err == AB_OK && PQntuples(res) == 0) {
        PQclear(res);
        res = NULL;
        err = ab_db_exec(conn,
                         "SELECT event_id::text, false, published, body_sha256"
                         " FROM webhook_deliveries WHERE hook_id = $1 AND delivery_key = $2",
                         2, params, &res, errstr, size);
    }
    if (err == AB_OK && PQntuples(res) != 1) {
        snprintf(errstr, size, "the delivery id record vanished; retry");
        err = AB_ERR_UNAVAILABLE;
    }
    if (err == AB_OK) {
        bool fresh = PQgetvalue(res, 0, 1)[0] == 't', taken = false;
        bool published = PQgetvalue(res, 0, 2)[0] == 't';
        snprintf(r->event_id, sizeof(r->event_id), "%s", PQgetvalue(res, 0, 0));
        if (strcmp(PQgetvalue(res, 0, 3), r->body_sha256) != 0) {
            snprintf(errstr, size, "this delivery id was used with a different body (event %s)",
                     r->event_id);
            err = AB_ERR_CONFLICT;
        } else if (!fresh && !published) {
            err = take_over(conn, params, &taken, errstr, size);
        }
        *what = fresh       ? RESERVED_FRESH
                : published ? RESERVED_DUPLICATE
                : taken     ? RESERVED_TAKEOVER
                            : RESERVED_BUSY;
    }
    ab_db_release(wh->svc->db, conn);
    PQclear(res);
    return err;
}

static void mark_published(struct ingress_webhooks *wh, const struct ab_hook *h,
                           const struct received *r)
{
    char errstr[256];
    PGconn *conn = NULL;
    const char *const params[] = {h->id, r->delivery_key, r->event_id};
    /* A failure only means a later duplicate publishes the same event again: harmless. */
    if (ab_service_db_acquire(wh->svc, DB_WAIT_MS, &conn, errstr, sizeof(errstr)) != AB_OK ||
        ab_db_exec(conn,
                   "UPDATE webhook_deliveries SET published = true WHERE hook_id = $1"
                   " AND delivery_key = $2 AND event_id = $3",
                   3, params, NULL, errstr, sizeof(errstr)) != AB_OK)
        ab_warn("webhook %s: delivery %s not marked published: %s", h->id, r->event_id, errstr);
    if (conn != NULL)
        ab_db_release(wh->svc->db, conn);
}

/* The Kafka key: a named session's events (persistent, or the caller's) in order; an
 * isolated one's spread. */
static void event_key(const struct ab_hook *h, const struct received *r, char *out, size_t size)
{
    if (r->session_chosen)
        snprintf(out, size, "hook:%s:%s", h->id, r->session);
    else
        snprintf(out, size, "hook:%s:%s", h->id, r->event_id);
}

static enum ab_err publish(struct ingress_webhooks *wh, const struct ab_hook *h,
                           const struct received *r, const char *ip, char *errstr, size_t size)
{
    char key[SESSION_KEY_MAX + 160];
    json_t *data = event_data(h, r, ip);
    if (data == NULL) {
        snprintf(errstr, size, "the event cannot be built");
        return AB_ERR_INTERNAL;
    }
    struct ab_event *ev = ab_event_new(EVENT_TYPE, SOURCE, h->id, data);
    free(ev->id);
    ev->id = ab_xstrdup(r->event_id);
    event_key(h, r, key, sizeof(key));
    enum ab_err err =
        ab_producer_send_event(wh->svc->producer, AB_TOPIC_INGRESS, key, ev, errstr, size);
    ab_event_free(ev);
    return err;
}

/* An authenticated request: read, render, reserve, publish, answer. */
static void accept_hook(struct ingress_webhooks *wh, const struct ab_hook *h,
                        const struct _u_request *req, struct _u_response *resp, const char *ip)
{
    struct received r = {0};
    char why[512];
    enum reservation what = RESERVED_FRESH;
    enum ab_err err = AB_OK;
    int status = read_body(h, req, &r, why, sizeof(why));
    ab_uuid_v4(r.event_id);
    if (status == 0)
        status = delivery_key(h, req, &r, why, sizeof(why));
    if (status == 0)
        status = choose_session(h, &r, why, sizeof(why));
    if (status == 0 && r.delivery_key != NULL) {
        err = reserve(wh, h, &r, &what, why, sizeof(why));
        status = err == AB_OK ? 0 : err == AB_ERR_CONFLICT ? 409 : 503;
    }
    if (status == 0 && what == RESERVED_BUSY) {
        snprintf(why, sizeof(why), "a delivery with this id is being accepted right now; retry");
        ulfius_add_header_to_response(resp, "Retry-After", "1");
        status = 409;
    }
    default_session(&r);
    if (status != 0) {
        if (status == 503)
            ingress_answer_failure(resp, err, "the webhook was not accepted; retry later", why);
        else if (status == 415)
            ab_http_json(resp, 415,
                         json_pack("{s:{s:s,s:s}}", "error", "code", "unsupported_media_type",
                                   "message", why));
        else
            ab_http_error(resp, status == 409 ? AB_ERR_CONFLICT : AB_ERR_INVALID, "%s", why);
        ab_metric_inc(wh->m_requests, (const char *const[]){"refused", NULL}, 1);
        goto out;
    }
    bool duplicate = what == RESERVED_DUPLICATE;
    if (!duplicate) {
        r.headers = headers_json(h, req);
        r.query = query_json(req);
        render(h, &r);
        err = publish(wh, h, &r, ip, why, sizeof(why));
        if (err == AB_ERR_TOO_LARGE || err == AB_ERR_INVALID) {
            ab_http_error(resp, AB_ERR_TOO_LARGE, "the event is too large for Kafka: %s", why);
            goto out;
        }
        if (err) {
            ingress_answer_failure(resp, err, "the webhook was not accepted; retry later", why);
            goto out;
        }
        if (r.delivery_key != NULL)
            mark_published(wh, h, &r);
        ab_info("webhook %s: event %s accepted (%s%s)", h->id, r.event_id,
                ab_hook_action_name(h->action),
                what == RESERVED_TAKEOVER ? ", its first delivery unacknowledged" : "");
    } else {
        ab_info("webhook %s: delivery %.80s seen before: event %s", h->id, r.delivery_key,
                r.event_id);
    }
    ab_metric_inc(wh->m_requests, (const char *const[]){duplicate ? "duplicate" : "accepted", NULL},
                  1);
    ab_http_json(resp, 202,
                 json_pack("{s:s,s:s,s:s,s:s,s:b}", "status", "accepted", "event_id", r.event_id,
                           "hook_id", h->id, "session_key", r.session[0] ? r.session : "",
                           "duplicate", duplicate));
out:
    json_decref(r.payload);
    json_decref(r.headers);
    json_decref(r.query);
    free(r.text);
}

/* Who the limiter counts failures of: the source and the path it calls. An IPv6 source is
 * its /64 (one host commonly holds all of one, and would otherwise get a fresh count per
 * address); the path keeps a sender that shares its address with others (a SaaS's egress,
 * a NAT) from locking them out of every other hook by failing on one. */
static void limiter_key(const struct sockaddr_storage *addr, socklen_t len, const char *ip,
                        const char *path, char *out, size_t size)
{
    const struct sockaddr_in6 *v6 = (const struct sockaddr_in6 *)addr;
    if (len > 0 && addr->ss_family == AF_INET6 && !IN6_IS_ADDR_V4MAPPED(&v6->sin6_addr)) {
        const unsigned char *b = v6->sin6_addr.s6_addr;
        snprintf(out, size, "%02x%02x:%02x%02x:%02x%02x:%02x%02x::/64 %.200s", b[0], b[1], b[2],
                 b[3], b[4], b[5], b[6], b[7], path ? path : "");
    } else {
        snprintf(out, size, "%s %.200s", ip, path ? path : "");
    }
}

static void receive(const struct _u_request *req, struct _u_response *resp, void *ud)
{
    struct ingress_webhooks *wh = ud;
    struct sockaddr_storage addr;
    socklen_t addr_len = ab_http_client_addr(req, &addr);
    char ip[64], why[256], source[320];
    int64_t now = ab_monotonic_ms(), retry_ms = 0;

    /* First: a source that keeps failing learns nothing more, not even whether a hook
     * exists, and costs no hashing. */
    ab_http_client_ip(req, ip, sizeof(ip));
    limiter_key(&addr, addr_len, ip, req->url_path, source, sizeof(source));
    if (ab_auth_limiter_blocked(wh->limiter, source, now, &retry_ms)) {
        char retry[24];
        snprintf(retry, sizeof(retry), "%lld", (long long)((retry_ms + 999) / 1000));
        ulfius_add_header_to_response(resp, "Retry-After", retry);
        refuse(wh, resp, "rate_limited", AB_ERR_RATE_LIMITED,
               "too many failed authentications from this address; retry later");
        return;
    }
    struct ingress_hook_set *set = ingress_hooks_get(wh->hooks);
    const struct ab_hook *h = ingress_hooks_find(set, req->url_path);
    if (h == NULL && !set->table_loaded) {
        /* The stored hooks are not read yet (just started, or PostgreSQL away): a 404 now
         * would tell a sender like GitHub to give up on a hook that may well exist. */
        ulfius_add_header_to_response(resp, "Retry-After", "1");
        refuse(wh, resp, "starting", AB_ERR_UNAVAILABLE,
               "the webhook hooks are not loaded yet; retry shortly");
    } else if (h == NULL || !h->enabled) {
        snprintf(why, sizeof(why), "no webhook at %.100s", req->url_path ? req->url_path : "");
        refuse(wh, resp, "unknown_hook", AB_ERR_NOT_FOUND, why);
    } else if (strcmp(req->http_verb, "POST") != 0) {
        ulfius_add_header_to_response(resp, "Allow", "POST");
        ab_metric_inc(wh->m_requests, (const char *const[]){"refused", NULL}, 1);
        ab_http_json(resp, 405,
                     json_pack("{s:{s:s,s:s}}", "error", "code", "method_not_allowed", "message",
                               "a webhook takes POST"));
    } else if (!ab_cidr_list_contains(h->allowed, (const struct sockaddr *)&addr, addr_len)) {
        ab_warn("webhook %s: %s is not in the hook's allowedIPs", h->id, ip);
        refuse(wh, resp, "forbidden_address", AB_ERR_FORBIDDEN,
               "this address may not call this webhook");
    } else if (!authenticate(h, req, ab_wall_ms() / 1000, why, sizeof(why))) {
        ab_auth_limiter_fail(wh->limiter, source, now);
        ab_warn("webhook %s: authentication failed from %s: %s", h->id, ip, why);
        refuse(wh, resp, "unauthorized", AB_ERR_UNAUTHORIZED, why);
    } else {
        accept_hook(wh, h, req, resp, ip);
    }
    ingress_hooks_put(set);
}

enum ab_err ingress_webhooks_init(struct ingress_webhooks *wh, struct ab_service *svc,
                                  struct ingress_hooks *hooks, struct ab_http_server *listener)
{
    const struct ab_incoming *in = hooks->incoming;
    memset(wh, 0, sizeof(*wh));
    wh->svc = svc;
    wh->hooks = hooks;
    wh->limiter = ab_auth_limiter_new(in->auth_max_failures, in->auth_window_ms, LIMITER_SOURCES);
    wh->m_requests = ab_metrics_counter(ab_metrics_default(), "agentbus_webhook_requests_total",
                                        "incoming webhook requests, by outcome",
                                        (const char *const[]){"outcome", NULL});
    if (wh->limiter == NULL)
        return AB_ERR_CONFIG;
    ab_http_server_fallback(listener, "webhook", receive, wh);
    return AB_OK;
}

void ingress_webhooks_cleanup(struct ingress_webhooks *wh)
{
    ab_auth_limiter_free(wh->limiter);
    wh->limiter = NULL;
}
