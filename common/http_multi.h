/* An asynchronous HTTP engine on libcurl's multi interface: many requests in flight on one
 * thread, no thread per request. Built for the LLM worker's streamed completions (and later
 * the notifier's deliveries): the body reaches the caller chunk by chunk as it arrives, and
 * every way a request can stall has its own timeout and its own reason in the result, so a
 * caller can say "first byte timeout after 30000 ms" rather than "timeout".
 *
 * Lifecycle: ab_http_multi_new, then any number of ab_http_multi_add; the owner thread calls
 * ab_http_multi_run in a loop, and each call runs one turn of the event loop and fires the
 * callbacks of whatever happened in it; ab_http_multi_free ends what is still in flight.
 *
 * Every accepted request gets exactly one on_done, and it is its last callback, so the
 * request's ud may be freed there: when it completes, fails, times out, is aborted by a
 * callback, is cancelled, or is still in flight at ab_http_multi_free.
 *
 * Threads: an engine belongs to the thread that created it (its owner). Only the owner calls
 * these functions, and all callbacks run on it, inside ab_http_multi_run or
 * ab_http_multi_free; the one exception is ab_http_multi_wakeup, which any thread may call
 * while the engine exists.
 *
 * Connections: every request shares the engine's connection cache (kept-alive connections
 * are reused across requests to the same host) and DNS cache. Redirects are never followed;
 * http and https only; NOSIGNAL; each request has a response body cap and a total timeout
 * (the defaults of http_client.h when left 0). */
#ifndef AB_HTTP_MULTI_H
#define AB_HTTP_MULTI_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/errors.h"
#include "common/http_client.h"
#include "common/netguard.h"

#define AB_HTTP_MULTI_DEFAULT_MAX_TRANSFERS 64

/* All members may be left 0. */
struct ab_http_multi_options {
    /* Requests in flight at once (added, on_done not yet called); ab_http_multi_add refuses
     * more. It also sizes the cache of idle connections kept for reuse.
     * 0: AB_HTTP_MULTI_DEFAULT_MAX_TRANSFERS. */
    size_t max_transfers;
    /* Connections open to one host at a time; requests beyond it wait inside libcurl for
     * one to come free, their connect and total clocks running. 0: no limit. */
    long max_host_connections;
};

/* One request. Everything is copied by ab_http_multi_add (the body included), so it may
 * all be freed as soon as add returns. */
struct ab_http_multi_request {
    /* As for ab_http_client_do (method, URL, header lines, body, connect timeout, total
     * timeout, response body cap, user agent), except that follow_redirects must be false. */
    struct ab_http_request http;
    /* From the moment the request goes out (its connection is ready: connected, or reused)
     * until the first response body byte (or, see AB_HTTP_MULTI_KEEP_WAITING, the first byte
     * the caller counts). Headers do not stop it. 0: none. */
    long first_byte_timeout_ms;
    /* The longest silence allowed between two body chunks, counted from the first chunk;
     * before it the first-byte and connect timeouts apply. 0: none. */
    long idle_timeout_ms;
    /* When set (borrowed: it must outlive the request), every address libcurl is about to
     * connect to is first checked by ab_netguard_allows: the check is on the address
     * actually connected to, after DNS, so a name that resolves to a private address (or
     * rebinds to one) is refused too. Proxies from the environment are not used, since
     * the guard would then see only the proxy. A request whose every address is refused
     * ends AB_HTTP_MULTI_ADDRESS_REFUSED. NULL: no check. */
    const struct ab_netguard *guard;
};

/* What a callback tells the engine. */
enum ab_http_multi_next {
    AB_HTTP_MULTI_CONTINUE = 0,
    /* on_data only: go on, but these bytes were not yet what the first-byte timeout waits
     * for (an SSE keep-alive comment, a chunk carrying only the role), so its clock keeps
     * running. Once on_data has returned CONTINUE, the clock has stopped for good. */
    AB_HTTP_MULTI_KEEP_WAITING,
    /* Stop the transfer now: on_done follows with AB_HTTP_MULTI_ABORTED. */
    AB_HTTP_MULTI_ABORT,
};

/* Why a request ended. Each timeout is its own reason; result.timeout_ms says its limit. */
enum ab_http_multi_reason {
    AB_HTTP_MULTI_COMPLETE = 0,       /* the whole response came, whatever its status */
    AB_HTTP_MULTI_CONNECT_TIMEOUT,    /* no usable connection in time (DNS, TCP, TLS) */
    AB_HTTP_MULTI_FIRST_BYTE_TIMEOUT, /* connected and sent, but no first byte in time */
    AB_HTTP_MULTI_IDLE_TIMEOUT,       /* the body stopped arriving for too long */
    AB_HTTP_MULTI_TOTAL_TIMEOUT,      /* the whole request took too long */
    AB_HTTP_MULTI_TOO_LARGE,          /* body over its cap, or headers over theirs */
    AB_HTTP_MULTI_ABORTED,            /* a callback returned AB_HTTP_MULTI_ABORT */
    AB_HTTP_MULTI_CANCELLED,          /* ab_http_multi_cancel, or ab_http_multi_free */
    AB_HTTP_MULTI_FAILED,             /* anything else: err and message say what */
    AB_HTTP_MULTI_ADDRESS_REFUSED,    /* the request's guard refused every address */
};

/* How a request ended, for on_done. Times are milliseconds from ab_http_multi_add. */
struct ab_http_multi_result {
    /* AB_OK for COMPLETE (a 404 or a 500 too: the caller judges the status);
     * AB_ERR_TIMEOUT for the four timeouts; AB_ERR_TOO_LARGE; AB_ERR_SHUTDOWN for ABORTED and
     * CANCELLED (stopped on purpose by its owner); for FAILED, as http_client maps libcurl:
     * AB_ERR_UNAVAILABLE when the host could not be resolved or connected to (refused),
     * AB_ERR_UPSTREAM for a reset or cut connection, a TLS failure or a malformed response,
     * AB_ERR_NOMEM, AB_ERR_INTERNAL when libcurl refused the request; AB_ERR_FORBIDDEN for
     * ADDRESS_REFUSED (the message names the address and why: "... 10.0.0.5 is private"). */
    enum ab_err err;
    enum ab_http_multi_reason reason;
    long timeout_ms;        /* the limit that fired, for the four timeouts; else 0 */
    long status;            /* the response's status, 0 if no response head came */
    uint64_t body_bytes;    /* body bytes received (all passed to on_data) */
    int64_t connect_ms;     /* until connected (DNS, TCP, TLS); -1 if never; see reused */
    bool reused;            /* the request went out on a kept-alive connection */
    int64_t first_byte_ms;  /* until the first body byte; -1 if none came */
    int64_t total_ms;       /* until the end */
    /* For every reason but COMPLETE, one line for logs naming the method and host but never
     * the rest of the URL (URLs carry tokens): "POST api.example.com: first byte timeout
     * after 30000 ms", or libcurl's own words for FAILED. "" for COMPLETE. */
    char message[320];
};

/* The callbacks of one request; only on_done is required. They run on the owner thread.
 * Inside on_headers and on_data, the engine's functions other than add, cancel and
 * in_flight must not be called; inside on_done, neither run nor free. */
struct ab_http_multi_callbacks {
    /* Once, when the head of the final response has come (1xx responses are skipped).
     * headers are trimmed "Name: value" pairs in arrival order (see ab_http_header_find for
     * Content-Type or Retry-After), borrowed for the call. */
    enum ab_http_multi_next (*on_headers)(void *ud, long status,
                                          const struct ab_http_header *headers, size_t count);
    /* Each piece of the body, in order, as it arrives (never more than the cap in total);
     * data is borrowed for the call and not NUL-terminated. now_ms is ab_monotonic_ms() at
     * its arrival. The body of an error status comes here too. NULL: the body is dropped
     * (still counted and capped). */
    enum ab_http_multi_next (*on_data)(void *ud, const char *data, size_t len, int64_t now_ms);
    /* The end, exactly once; result is borrowed for the call. */
    void (*on_done)(void *ud, const struct ab_http_multi_result *result);
};

struct ab_http_multi;

/* An engine with no request in flight. options may be NULL for the defaults.
 * @returns NULL if libcurl could not initialise, memory ran out, or max_host_connections is
 *          negative.
 * @ownership the caller frees it with ab_http_multi_free, on the same thread. */
struct ab_http_multi *ab_http_multi_new(const struct ab_http_multi_options *options);

/* Ends every request still in flight, each with on_done (AB_HTTP_MULTI_CANCELLED) called
 * from here, closes the connections and frees the engine. NULL is a no-op. Never from a
 * callback; no other thread may call ab_http_multi_wakeup once this has begun. */
void ab_http_multi_free(struct ab_http_multi *m);

/* Queues a request; it starts at the next ab_http_multi_run. May be called from a callback.
 * @param callbacks copied; on_done must be set.
 * @param ud passed to every callback and otherwise untouched: it stays the caller's, and must
 *        stay valid until on_done.
 * @param id (may be NULL) set to the request's id (never 0), for ab_http_multi_cancel.
 * @returns AB_OK, after which exactly one on_done is owed;
 *          AB_ERR_INVALID as ab_http_client_do refuses a request, for a negative first-byte
 *          or idle timeout, follow_redirects, or a missing on_done;
 *          AB_ERR_RATE_LIMITED when max_transfers are already in flight;
 *          AB_ERR_SHUTDOWN inside ab_http_multi_free;
 *          AB_ERR_NOMEM, AB_ERR_INTERNAL (libcurl refused an option).
 *          On failure no callback is ever called. errstr (may be NULL) says why. */
enum ab_err ab_http_multi_add(struct ab_http_multi *m, const struct ab_http_multi_request *req,
                              const struct ab_http_multi_callbacks *callbacks, void *ud,
                              uint64_t *id, char *errstr, size_t errstr_size);

/* Runs one turn: starts queued requests, waits up to timeout_ms for network activity, a
 * deadline or ab_http_multi_wakeup, then moves every transfer on and fires the callbacks due
 * (on_done of cancelled requests included). It waits less when a deadline of its own is
 * nearer, and not at all when a callback already fired before the wait.
 * With nothing in flight it simply waits for the timeout or a wakeup.
 * @returns AB_OK; AB_ERR_INVALID when called from a callback; AB_ERR_NOMEM or
 *          AB_ERR_INTERNAL when libcurl's event loop failed (the requests are left as they
 *          were; calling again is safe). */
enum ab_err ab_http_multi_run(struct ab_http_multi *m, int timeout_ms);

/* Makes the current or next ab_http_multi_run return early (for example: new work was
 * queued for the owner thread).
 * @thread any thread, as long as the engine exists.
 * @returns AB_OK, or AB_ERR_INTERNAL. */
enum ab_err ab_http_multi_wakeup(struct ab_http_multi *m);

/* Stops a request: none of its on_headers or on_data come after this returns, and its
 * on_done (AB_HTTP_MULTI_CANCELLED) comes from the current ab_http_multi_run when called from
 * a callback, else from the next one (or from ab_http_multi_free).
 * @returns AB_OK, or AB_ERR_NOT_FOUND for an id that is unknown or whose on_done has begun. */
enum ab_err ab_http_multi_cancel(struct ab_http_multi *m, uint64_t id);

/* Requests added whose on_done has not been called yet. */
size_t ab_http_multi_in_flight(const struct ab_http_multi *m);

/* The stable word for a request that did not complete, for error codes shared by the
 * services: connect_timeout, first_byte_timeout, idle_timeout, total_timeout,
 * response_too_large, address_refused, cancelled (aborted too), connection_failed (could
 * not connect), connection_lost (anything else); "" for a complete one. */
const char *ab_http_multi_failure_code(const struct ab_http_multi_result *r);

/* "complete", "connect_timeout", "first_byte_timeout", "idle_timeout", "total_timeout",
 * "too_large", "aborted", "cancelled", "failed", "address_refused": stable, for logs and
 * metric labels. */
const char *ab_http_multi_reason_name(enum ab_http_multi_reason reason);

#endif
