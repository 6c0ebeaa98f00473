/* The one HTTP client for outgoing calls (LLM APIs, Feishu, webhooks): libcurl underneath,
 * with timeouts, a response size cap and http/https only on every request. */
#ifndef AB_HTTP_CLIENT_H
#define AB_HTTP_CLIENT_H

#include <stdbool.h>
#include <stddef.h>

#include "common/errors.h"

/* The values used when a request leaves them 0 or NULL. */
#define AB_HTTP_DEFAULT_CONNECT_TIMEOUT_MS 5000L
#define AB_HTTP_DEFAULT_TIMEOUT_MS 30000L
#define AB_HTTP_DEFAULT_MAX_RESPONSE_BYTES ((size_t)1 << 20)
#define AB_HTTP_DEFAULT_USER_AGENT "agentbus"
/* Fixed limits: all response header lines together (per response), and redirects followed
 * when a request asks for them. */
#define AB_HTTP_MAX_HEADER_BYTES ((size_t)64 << 10)
#define AB_HTTP_MAX_REDIRECTS 3L

/* One request. Only url is required; every other member may be left 0/NULL. Nothing here
 * is copied beyond the ab_http_client_do call, so it may all live on the caller's stack. */
struct ab_http_request {
    const char *method;              /* upper case; NULL: "GET", or "POST" with a body */
    const char *url;                 /* absolute http:// or https:// URL */
    const char *const *headers;      /* "Name: value" lines, NULL-terminated; may be NULL */
    const void *body;                /* sent as is; NULL means no body */
    size_t body_len;
    long connect_timeout_ms;         /* 0: AB_HTTP_DEFAULT_CONNECT_TIMEOUT_MS */
    long timeout_ms;                 /* whole transfer; 0: AB_HTTP_DEFAULT_TIMEOUT_MS */
    size_t max_response_bytes;       /* body cap; 0: AB_HTTP_DEFAULT_MAX_RESPONSE_BYTES */
    bool follow_redirects;           /* at most AB_HTTP_MAX_REDIRECTS, http/https only */
    const char *user_agent;          /* NULL: AB_HTTP_DEFAULT_USER_AGENT */
    /* W3C traceparent sent as the "traceparent" header (common/trace.h), unless headers has
     * one. NULL: a child span of the thread's current span when it has one, else none.
     * An invalid value is refused like a bad header. */
    const char *traceparent;
};

/* A response header; name and value are trimmed of surrounding whitespace. */
struct ab_http_header {
    char *name;
    char *value;
};

/* What came back. After redirects, status, headers and body are the final response's.
 * @ownership everything here is owned by the struct; free it with
 * ab_http_response_cleanup. */
struct ab_http_response {
    long status;                     /* 200, 404, ...; never 0 after AB_OK */
    char *body;                      /* never NULL after AB_OK; NUL-terminated */
    size_t body_len;                 /* body may contain NULs: trust this, not strlen */
    struct ab_http_header *headers;  /* in arrival order; duplicates kept */
    size_t header_count;
    double total_seconds;            /* the whole transfer, redirects included */
};

/* Initialises libcurl once per process; later calls return the first call's result.
 * ab_http_client_new calls it too, so calling it early only moves the cost to startup.
 * @returns AB_OK, or AB_ERR_INTERNAL if libcurl could not initialise.
 * @thread safe. */
enum ab_err ab_http_global_init(void);

/* A client owning one libcurl easy handle, which keeps its connections alive between
 * requests so repeated calls to one host skip the TCP and TLS handshakes.
 * @returns NULL if out of memory or if libcurl could not initialise.
 * @thread one client per thread: a client must never be used by two threads at once. */
struct ab_http_client *ab_http_client_new(void);

/* Closes the client's connections and frees it. NULL is a no-op. */
void ab_http_client_free(struct ab_http_client *client);

/* Sends req and waits for the whole response. Only transport failures are errors: a 404 or
 * a 500 returns AB_OK with resp->status set, and the caller decides what it means.
 * A body is sent with the caller's Content-Type, or with none (never libcurl's form type).
 * @param resp overwritten on entry, not freed: it must not hold a previous response. On
 *        failure it is left empty; either way ab_http_response_cleanup is safe on it.
 * @param errstr (may be NULL) on failure, a message naming the method and host but never
 *        the rest of the URL, because URLs often carry tokens (Feishu hooks) and messages
 *        end up in logs.
 * @returns AB_OK;
 *          AB_ERR_INVALID for a bad request: no or malformed URL, a scheme other than
 *          http/https, a bad method, a header line or user agent containing CR or LF, a
 *          negative timeout, body_len without a body, or a body on HEAD;
 *          AB_ERR_TIMEOUT when the connect or total timeout passed;
 *          AB_ERR_UNAVAILABLE when the host could not be resolved or connected to;
 *          AB_ERR_TOO_LARGE when the body would exceed max_response_bytes or the headers
 *          AB_HTTP_MAX_HEADER_BYTES (the transfer is cut short as soon as it would);
 *          AB_ERR_NOMEM when out of memory;
 *          AB_ERR_UPSTREAM for any other transport failure (reset connection, TLS failure,
 *          too many redirects, a redirect to a non-http(s) URL, a malformed response);
 *          AB_ERR_INTERNAL when libcurl refuses an option (a libcurl older than 7.85).
 * @thread the client's thread only. */
enum ab_err ab_http_client_do(struct ab_http_client *client, const struct ab_http_request *req,
                              struct ab_http_response *resp, char *errstr, size_t errstr_size);

/* The value of the first response header called name (case-insensitive), or NULL.
 * @ownership borrowed from resp; valid until ab_http_response_cleanup. */
const char *ab_http_response_header(const struct ab_http_response *resp, const char *name);

/* The same lookup in any header list (count entries; headers may be NULL when count is 0).
 * @ownership borrowed from the list. */
const char *ab_http_header_find(const struct ab_http_header *headers, size_t count,
                                const char *name);

/* Frees what resp holds and zeroes it; resp itself is the caller's. NULL is a no-op, and
 * so is cleaning up twice. */
void ab_http_response_cleanup(struct ab_http_response *resp);

#endif
