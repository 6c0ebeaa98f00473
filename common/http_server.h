/* HTTP servers on ulfius: routes wrapped so that every request gets a request id, a body
 * size limit answered with 413 (ulfius itself truncates silently), JSON error bodies
 * {"error":{"code","message"}}, an access log line and request metrics. */
#ifndef AB_HTTP_SERVER_H
#define AB_HTTP_SERVER_H

#include <jansson.h>
#include <stdbool.h>
#include <sys/socket.h>
#include <ulfius.h>

#include "common/errors.h"

/* A route handler: validates, calls one function, maps its result to a response. It must
 * set a response (ab_http_json / ab_http_error / ulfius setters).
 * @thread called from many threads at once (one per connection). */
typedef void (*ab_http_handler)(const struct _u_request *req, struct _u_response *resp, void *ud);

struct ab_http_server_options {
    const char *name;      /* "api", "webhooks", "ops": in logs and metrics */
    const char *host;      /* IPv4 or IPv6 address to bind; NULL or "0.0.0.0" = all IPv4;
                            * "::" = all, IPv4 clients included (as ::ffff:a.b.c.d) */
    int port;              /* 0 = an ephemeral port (tests); see ab_http_server_port */
    size_t max_body_bytes; /* a larger body is answered 413 */
    int connection_limit;
    int idle_timeout_s;
    bool access_log;       /* one info line per request (off for the ops listener) */
};

struct ab_http_server;

enum ab_err ab_http_server_new(const struct ab_http_server_options *opts,
                               struct ab_http_server **out, char *errstr, size_t errstr_size);

/* Adds a route; path uses ulfius' format ("/api/agents/:id"). Must precede start. */
enum ab_err ab_http_server_route(struct ab_http_server *srv, const char *method,
                                 const char *path, ab_http_handler handler, void *ud);

/* Sends every request no route matches to handler instead of answering 404; label names
 * it in metrics (bounded: requests' paths are not labels). Must precede start. */
void ab_http_server_fallback(struct ab_http_server *srv, const char *label,
                             ab_http_handler handler, void *ud);

/* Binds and starts serving. @returns AB_ERR_UNAVAILABLE if the port cannot be bound. */
enum ab_err ab_http_server_start(struct ab_http_server *srv, char *errstr, size_t errstr_size);

/* Stops accepting, waits for requests in flight to finish, closes the listener. */
void ab_http_server_stop(struct ab_http_server *srv);
void ab_http_server_free(struct ab_http_server *srv);

/* The port actually bound (useful with port 0). */
int ab_http_server_port(const struct ab_http_server *srv);

/* Response helpers. body is stolen. */
void ab_http_json(struct _u_response *resp, int status, json_t *body);
/* A JSON error: the status and "code" come from err; the message is formatted. */
void ab_http_error(struct _u_response *resp, enum ab_err err, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* The request body parsed as JSON (any content type). @returns AB_OK with *out owned by the
 * caller, or AB_ERR_INVALID with errstr saying where the JSON is broken. */
enum ab_err ab_http_json_body(const struct _u_request *req, json_t **out, char *errstr,
                              size_t errstr_size);

/* A request header, case-insensitive, or NULL. */
const char *ab_http_header(const struct _u_request *req, const char *name);

/* The client's address, whole: ulfius copies just 16 bytes of the peer address (which cuts
 * an IPv6 one), so this reads it from MHD instead. Call it from the handler's thread.
 * @returns its length (sizeof sockaddr_in or sockaddr_in6), 0 when unknown. */
socklen_t ab_http_client_addr(const struct _u_request *req, struct sockaddr_storage *out);

/* The client's address as text ("127.0.0.1", "::1"; an IPv4 client of a dual-stack
 * listener as "127.0.0.1"), or "unknown". */
void ab_http_client_ip(const struct _u_request *req, char *out, size_t size);

#endif
