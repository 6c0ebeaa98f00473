/* ulfius wrapper. Every route is registered through one trampoline, so the cross-cutting
 * rules (request id, 413, access log, metrics, JSON errors) live in one place instead of in
 * each handler. MHD runs a thread per connection with poll() instead of select(): handlers
 * may block (on a Kafka ack, a long poll) without stalling other connections, and
 * descriptors above 1024 stay usable. */
#include "common/http_server.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "common/log.h"
#include "common/metrics.h"
#include "common/trace.h"
#include "common/util.h"

struct route {
    struct ab_http_server *srv;
    char *method;
    char *path; /* the route template: a metrics label with bounded values */
    ab_http_handler handler;
    void *ud;
    struct route *next;
};

struct ab_http_server {
    struct _u_instance inst;
    char *name;
    struct sockaddr_storage bind; /* sockaddr_in, or sockaddr_in6 for an IPv6 host */
    size_t max_body;
    int connection_limit;
    int idle_timeout_s;
    bool access_log;
    bool started;
    struct route *routes;
    struct route fallback; /* unmatched requests: 404 through the same trampoline */
    char *fallback_label;  /* its metrics label, when ab_http_server_fallback set one */
    struct ab_metric *m_requests;
    struct ab_metric *m_duration;
};

void ab_http_json(struct _u_response *resp, int status, json_t *body)
{
    ulfius_set_json_body_response(resp, (unsigned int)status, body);
    json_decref(body);
}

void ab_http_error(struct _u_response *resp, enum ab_err err, const char *fmt, ...)
{
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    json_t *j_msg = json_string(msg);
    json_t *body = json_pack("{s:{s:s,s:o}}", "error", "code", ab_err_name(err), "message",
                             j_msg ? j_msg : json_string("(message not utf-8)"));
    ab_http_json(resp, ab_err_http_status(err), body);
}

const char *ab_http_header(const struct _u_request *req, const char *name)
{
    return u_map_get_case(req->map_header, name);
}

enum ab_err ab_http_json_body(const struct _u_request *req, json_t **out, char *errstr,
                              size_t size)
{
    json_error_t jerr;
    *out = NULL;
    if (req->binary_body == NULL || req->binary_body_length == 0) {
        snprintf(errstr, size, "the request body is empty; a JSON object is expected");
        return AB_ERR_INVALID;
    }
    json_t *j = json_loadb(req->binary_body, req->binary_body_length, JSON_REJECT_DUPLICATES,
                           &jerr);
    if (j == NULL) {
        snprintf(errstr, size, "the request body is not valid JSON: line %d column %d: %s",
                 jerr.line, jerr.column, jerr.text);
        return AB_ERR_INVALID;
    }
    *out = j;
    return AB_OK;
}

/* The peer of the request this thread serves. ulfius keeps only the first 16 bytes of it
 * (sizeof(struct sockaddr)), which cuts an IPv6 address in half; MHD has all of it. The URI
 * log callback is the one hook that runs for every request with the MHD connection at hand,
 * and in thread-per-connection mode it runs on the thread that then calls the handler:
 * a connection's requests follow each other on its own thread, so a thread-local copy
 * always belongs to the request being handled. */
static __thread struct sockaddr_storage peer;
static __thread socklen_t peer_len;

static void *uri_logger(void *cls, const char *uri, struct MHD_Connection *con)
{
    const union MHD_ConnectionInfo *info =
        MHD_get_connection_info(con, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
    peer_len = 0;
    if (info != NULL && info->client_addr != NULL) {
        int family = info->client_addr->sa_family;
        socklen_t len = family == AF_INET    ? sizeof(struct sockaddr_in)
                        : family == AF_INET6 ? sizeof(struct sockaddr_in6)
                                             : 0;
        memcpy(&peer, info->client_addr, len);
        peer_len = len;
    }
    return ulfius_uri_logger(cls, uri);
}

socklen_t ab_http_client_addr(const struct _u_request *req, struct sockaddr_storage *out)
{
    const struct sockaddr *sa = req->client_address;
    if (peer_len > 0) {
        memcpy(out, &peer, peer_len);
        return peer_len;
    }
    if (sa != NULL && sa->sa_family == AF_INET) {
        memcpy(out, sa, sizeof(struct sockaddr_in));
        return sizeof(struct sockaddr_in);
    }
    return 0;
}

void ab_http_client_ip(const struct _u_request *req, char *out, size_t size)
{
    struct sockaddr_storage ss;
    socklen_t len = ab_http_client_addr(req, &ss);
    const struct sockaddr_in6 *v6 = (const struct sockaddr_in6 *)&ss;
    if (len > 0 && ss.ss_family == AF_INET6 && IN6_IS_ADDR_V4MAPPED(&v6->sin6_addr) &&
        inet_ntop(AF_INET, &v6->sin6_addr.s6_addr[12], out, (socklen_t)size))
        return; /* a dual-stack listener's IPv4 client, written as people know it */
    if (len > 0 && ss.ss_family == AF_INET6 &&
        inet_ntop(AF_INET6, &v6->sin6_addr, out, (socklen_t)size))
        return;
    if (len > 0 && ss.ss_family == AF_INET &&
        inet_ntop(AF_INET, &((const struct sockaddr_in *)&ss)->sin_addr, out, (socklen_t)size))
        return;
    snprintf(out, size, "unknown");
}

/* X-Request-Id from the caller is kept when it is short and plain; otherwise a new one. */
static void request_id(const struct _u_request *req, char out[65])
{
    const char *given = ab_http_header(req, "X-Request-Id");
    size_t len = given ? strlen(given) : 0;
    bool ok = len > 0 && len <= 64;
    for (size_t i = 0; ok && i < len; i++)
        ok = (given[i] >= 'a' && given[i] <= 'z') || (given[i] >= 'A' && given[i] <= 'Z') ||
             (given[i] >= '0' && given[i] <= '9') || given[i] == '-' || given[i] == '_' ||
             given[i] == '.';
    if (ok)
        snprintf(out, 65, "%s", given);
    else
        ab_uuid_v4(out);
}

/* The declared or received body is over the limit. ulfius stops storing at max_body + 1
 * bytes (we set its limit one higher than ours), so a received length above ours means the
 * body was cut. */
static bool body_too_large(const struct ab_http_server *srv, const struct _u_request *req)
{
    const char *cl = ab_http_header(req, "Content-Length");
    if (cl != NULL) {
        char *end = NULL;
        unsigned long long n = strtoull(cl, &end, 10);
        if (end != cl && n > srv->max_body)
            return true;
    }
    return req->binary_body_length > srv->max_body;
}

/* The method as a metrics label: clients choose it freely, so anything unusual is "other"
 * (an attacker must not fill the series limit with made-up methods). */
static const char *known_method(const char *verb)
{
    static const char *const known[] = { "GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS" };
    for (size_t i = 0; verb != NULL && i < sizeof(known) / sizeof(known[0]); i++)
        if (strcmp(verb, known[i]) == 0)
            return known[i];
    return "other";
}

static int trampoline(const struct _u_request *req, struct _u_response *resp, void *ud)
{
    struct route *r = ud;
    struct ab_http_server *srv = r->srv;
    char rid[65];
    int64_t started = ab_monotonic_ms();
    request_id(req, rid);
    ab_log_set_request_id(rid);
    ulfius_add_header_to_response(resp, "X-Request-Id", rid);
    /* The request's span: a child of the caller's traceparent, or a new trace. Events made
     * while handling it carry it (ab_event_new); the answer names it so a caller without a
     * tracer can find the trace in the logs. */
    char traceparent[AB_TRACEPARENT_LEN + 1];
    ab_trace_enter(ab_http_header(req, "traceparent"));
    ab_trace_current_header(traceparent);
    ulfius_add_header_to_response(resp, "traceparent", traceparent);

    if (body_too_large(srv, req))
        ab_http_error(resp, AB_ERR_TOO_LARGE, "the request body is larger than %zu bytes",
                      srv->max_body);
    else
        r->handler(req, resp, r->ud);

    double seconds = (double)(ab_monotonic_ms() - started) / 1000.0;
    char status[8];
    snprintf(status, sizeof(status), "%ld", resp->status);
    const char *method = known_method(req->http_verb);
    ab_metric_inc(srv->m_requests, (const char *const[]){ srv->name, r->path, method, status, NULL },
                  1);
    ab_metric_observe(srv->m_duration, (const char *const[]){ srv->name, r->path, method, NULL },
                      seconds);
    /* The ops listener logs only failures that are not the expected "not ready" answer. */
    if (srv->access_log || (resp->status >= 500 && resp->status != 503)) {
        char ip[64];
        ab_http_client_ip(req, ip, sizeof(ip));
        ab_log_fields(resp->status >= 500 ? AB_LOG_WARN : AB_LOG_INFO,
                      json_pack("{s:s,s:s,s:s,s:s,s:i,s:f,s:I,s:s}", "http_server", srv->name,
                                "method", method, "path", req->url_path ? req->url_path : "",
                                "route", r->path, "status", (int)resp->status, "duration_s",
                                seconds, "bytes_in", (json_int_t)req->binary_body_length,
                                "client", ip),
                      "%s %s %ld", method, req->url_path ? req->url_path : "", resp->status);
    }
    ab_log_set_request_id(NULL);
    ab_trace_leave();
    return U_CALLBACK_COMPLETE;
}

static void not_found(const struct _u_request *req, struct _u_response *resp, void *ud)
{
    (void)ud;
    ab_http_error(resp, AB_ERR_NOT_FOUND, "no route for %s %s", req->http_verb,
                  req->url_path ? req->url_path : "");
}

static int bound_port(const struct sockaddr_storage *ss)
{
    if (ss->ss_family == AF_INET6)
        return ntohs(((const struct sockaddr_in6 *)ss)->sin6_port);
    return ntohs(((const struct sockaddr_in *)ss)->sin_port);
}

void ab_http_server_fallback(struct ab_http_server *srv, const char *label,
                             ab_http_handler handler, void *ud)
{
    srv->fallback_label = ab_xstrdup(label);
    srv->fallback = (struct route){ srv, NULL, srv->fallback_label, handler, ud, NULL };
}

enum ab_err ab_http_server_new(const struct ab_http_server_options *opts,
                               struct ab_http_server **out, char *errstr, size_t size)
{
    *out = NULL;
    struct ab_http_server *srv = ab_xcalloc(1, sizeof(*srv));
    const char *host = opts->host ? opts->host : "0.0.0.0";
    struct sockaddr_in *v4 = (struct sockaddr_in *)&srv->bind;
    struct sockaddr_in6 *v6 = (struct sockaddr_in6 *)&srv->bind;
    if (inet_pton(AF_INET, host, &v4->sin_addr) == 1) {
        v4->sin_family = AF_INET;
        v4->sin_port = htons((uint16_t)opts->port);
    } else if (inet_pton(AF_INET6, host, &v6->sin6_addr) == 1) {
        v6->sin6_family = AF_INET6; /* "::" also takes IPv4 clients, as ::ffff:a.b.c.d */
        v6->sin6_port = htons((uint16_t)opts->port);
    } else {
        snprintf(errstr, size, "listen address \"%s\" is not an IPv4 or IPv6 address", host);
        free(srv);
        return AB_ERR_CONFIG;
    }
    /* ulfius refuses port 0, but MHD binds srv->bind (MHD_OPTION_SOCK_ADDR at start) and
     * ignores this port: for an ephemeral port (0) any valid placeholder will do. */
    unsigned int u_port = opts->port > 0 ? (unsigned int)opts->port : 1;
    if (ulfius_init_instance(&srv->inst, u_port, NULL, NULL) != U_OK) {
        snprintf(errstr, size, "ulfius cannot initialise the %s listener", opts->name);
        free(srv);
        return AB_ERR_INTERNAL;
    }
    srv->name = ab_xstrdup(opts->name);
    srv->max_body = opts->max_body_bytes;
    srv->connection_limit = opts->connection_limit > 0 ? opts->connection_limit : 1000;
    srv->idle_timeout_s = opts->idle_timeout_s > 0 ? opts->idle_timeout_s : 120;
    srv->access_log = opts->access_log;
    srv->inst.max_post_body_size = opts->max_body_bytes + 1;
    srv->fallback = (struct route){ srv, NULL, "unmatched", not_found, NULL, NULL };
    ulfius_set_default_endpoint(&srv->inst, trampoline, &srv->fallback);

    struct ab_metrics *m = ab_metrics_default();
    srv->m_requests = ab_metrics_counter(m, "agentbus_http_requests_total",
                                         "HTTP requests served, by listener, route and status",
                                         (const char *const[]){ "server", "route", "method",
                                                                "status", NULL });
    srv->m_duration = ab_metrics_histogram(m, "agentbus_http_request_duration_seconds",
                                           "HTTP request latency, by listener and route",
                                           (const char *const[]){ "server", "route", "method",
                                                                  NULL },
                                           NULL, 0);
    *out = srv;
    return AB_OK;
}

enum ab_err ab_http_server_route(struct ab_http_server *srv, const char *method,
                                 const char *path, ab_http_handler handler, void *ud)
{
    struct route *r = ab_xcalloc(1, sizeof(*r));
    *r = (struct route){ srv, ab_xstrdup(method), ab_xstrdup(path), handler, ud, srv->routes };
    srv->routes = r;
    if (ulfius_add_endpoint_by_val(&srv->inst, method, NULL, path, 0, trampoline, r) != U_OK)
        return AB_ERR_INVALID;
    return AB_OK;
}

enum ab_err ab_http_server_start(struct ab_http_server *srv, char *errstr, size_t size)
{
    struct MHD_OptionItem ops[] = {
        { MHD_OPTION_NOTIFY_COMPLETED, (intptr_t)mhd_request_completed, NULL },
        { MHD_OPTION_URI_LOG_CALLBACK, (intptr_t)uri_logger, NULL },
        { MHD_OPTION_SOCK_ADDR, 0, &srv->bind },
        { MHD_OPTION_CONNECTION_TIMEOUT, srv->idle_timeout_s, NULL },
        { MHD_OPTION_CONNECTION_LIMIT, srv->connection_limit, NULL },
        { MHD_OPTION_END, 0, NULL },
    };
    unsigned int flags = MHD_USE_THREAD_PER_CONNECTION | MHD_USE_INTERNAL_POLLING_THREAD |
                         MHD_USE_POLL | MHD_USE_ERROR_LOG;
    if (srv->bind.ss_family == AF_INET6)
        flags |= MHD_USE_DUAL_STACK;
    if (ulfius_start_framework_with_mhd_options(&srv->inst, flags, ops) != U_OK) {
        char host[INET6_ADDRSTRLEN] = "?";
        const struct sockaddr_in *v4 = (const struct sockaddr_in *)&srv->bind;
        const struct sockaddr_in6 *v6 = (const struct sockaddr_in6 *)&srv->bind;
        if (srv->bind.ss_family == AF_INET6)
            inet_ntop(AF_INET6, &v6->sin6_addr, host, sizeof(host));
        else
            inet_ntop(AF_INET, &v4->sin_addr, host, sizeof(host));
        snprintf(errstr, size, "the %s listener cannot bind %s port %d (in use?)", srv->name,
                 host, bound_port(&srv->bind));
        return AB_ERR_UNAVAILABLE;
    }
    srv->started = true;
    ab_info("%s listener on port %d", srv->name, ab_http_server_port(srv));
    return AB_OK;
}

int ab_http_server_port(const struct ab_http_server *srv)
{
    if (!srv->started || srv->inst.mhd_daemon == NULL)
        return bound_port(&srv->bind);
    /* Ask the socket: MHD_DAEMON_INFO_BIND_PORT reports the port passed to MHD_start_daemon,
     * which is ab_http_server_new's placeholder (1) when port 0 was asked for. */
    const union MHD_DaemonInfo *info =
        MHD_get_daemon_info(srv->inst.mhd_daemon, MHD_DAEMON_INFO_LISTEN_FD);
    struct sockaddr_storage sa;
    socklen_t len = sizeof(sa);
    if (info != NULL && getsockname(info->listen_fd, (struct sockaddr *)&sa, &len) == 0)
        return bound_port(&sa);
    return bound_port(&srv->bind);
}

void ab_http_server_stop(struct ab_http_server *srv)
{
    if (srv == NULL || !srv->started)
        return;
    ulfius_stop_framework(&srv->inst);
    srv->started = false;
}

void ab_http_server_free(struct ab_http_server *srv)
{
    if (srv == NULL)
        return;
    ab_http_server_stop(srv);
    ulfius_clean_instance(&srv->inst);
    for (struct route *r = srv->routes, *next; r != NULL; r = next) {
        next = r->next;
        free(r->method);
        free(r->path);
        free(r);
    }
    free(srv->fallback_label);
    free(srv->name);
    free(srv);
}
