/* The multi engine (see http_multi.h): one CURLM, one easy handle per request, and the
 * bookkeeping libcurl does not do for us, namely the first-byte and idle deadlines, the
 * callbacks' verdicts, and cancellation.
 *
 * It is event-driven (curl_multi_socket_action on an epoll set), so that a turn costs what
 * happened in it, not what is in flight: libcurl tells us which sockets to watch and when its
 * own timer is due, and we hand it back only the sockets that are ready. (curl_multi_poll and
 * curl_multi_perform walk every transfer on every turn: with thousands of streams open, that
 * walk, and a poll() over every socket, was nearly all of the engine's CPU.) Our own first-
 * byte and idle deadlines are checked by a sweep over the transfers that runs only when the
 * nearest deadline is due; a deadline that starts later (a request going out, a chunk
 * arriving) pulls the next sweep forward, never back.
 *
 * The one rule that shapes this file: libcurl forbids curl_multi_* calls from inside its
 * callbacks, and our callers' callbacks run inside them. So add and cancel never touch the
 * multi handle: add queues the request (run attaches it), and cancel only marks it (run's
 * sweep detaches it, and our curl callbacks refuse a marked transfer's data meanwhile).
 * Every transfer ends in finish(), outside libcurl's callbacks, which calls on_done. */
#include "common/http_multi.h"

#include <curl/curl.h>
#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "common/http_easy.h"
#include "common/util.h"

/* Why one of our callbacks stopped a transfer, which libcurl reports only as a write error
 * (or an aborted callback). The first verdict is kept. */
enum stop {
    STOP_NONE = 0,
    STOP_BODY_TOO_LARGE,
    STOP_HEADERS_TOO_LARGE,
    STOP_NOMEM,
    STOP_ABORTED,
    STOP_CANCELLED,
    STOP_SOCKET, /* its socket could not be watched (epoll refused it) */
};

/* Ready sockets taken per turn; more stay ready for the next (epoll is level-triggered). */
#define MAX_EVENTS 256

struct xfer {
    struct xfer *prev, *next;
    struct ab_http_multi *m;
    uint64_t id;
    CURL *curl;
    bool attached;             /* added to the multi handle (run does it) */
    bool queued;               /* in the queue of transfers to attach */
    struct xfer *next_queued;
    struct ab_http_multi_callbacks cb;
    void *ud;
    struct ab_http_easy_prepared prep; /* owns the header lines libcurl sends */
    char method[24];                   /* prep.method points here: the caller's may go */
    struct ab_http_easy_headers head;  /* response header lines, until on_headers */
    bool head_done;                    /* on_headers came (later header lines are trailers) */
    enum stop stop;
    long connect_timeout_ms, total_timeout_ms, first_byte_timeout_ms, idle_timeout_ms;
    uint64_t body_bytes;
    int64_t added_ms;
    int64_t sent_ms;       /* when the request went out, -1 before */
    int64_t first_byte_ms; /* the first body byte, -1 before */
    int64_t last_data_ms;  /* the latest body chunk, -1 before */
    bool waiting_first;    /* the first-byte clock still runs (no CONTINUE from on_data) */
    char errbuf[CURL_ERROR_SIZE];
    int socket_errno; /* STOP_SOCKET: why */
    const struct ab_netguard *guard;
    char refused[128]; /* the last address the guard refused, and why; "" if none */
    bool allowed;      /* the guard let some address through: a failure is that one's */
};

struct ab_http_multi {
    CURLM *multi;
    size_t max_transfers;
    struct xfer *head, *tail; /* every transfer whose on_done has not begun, in add order */
    size_t count;
    uint64_t last_id;
    struct xfer *queue_head, *queue_tail; /* added, not yet attached */
    int epfd;                  /* the sockets libcurl asked us to watch, and wakefd */
    int wakefd;                /* an eventfd: ab_http_multi_wakeup */
    int64_t curl_deadline;     /* when libcurl's timer is due (monotonic ms), -1: none */
    int64_t next_sweep;        /* when the nearest of our own deadlines may be due */
    bool sweep_now;            /* a cancellation waits for the sweep */
    bool in_run;  /* inside ab_http_multi_run: callbacks may be running */
    bool closing; /* inside ab_http_multi_free: no new requests */
};

static const char *const reason_names[] = {
    [AB_HTTP_MULTI_COMPLETE] = "complete",
    [AB_HTTP_MULTI_CONNECT_TIMEOUT] = "connect_timeout",
    [AB_HTTP_MULTI_FIRST_BYTE_TIMEOUT] = "first_byte_timeout",
    [AB_HTTP_MULTI_IDLE_TIMEOUT] = "idle_timeout",
    [AB_HTTP_MULTI_TOTAL_TIMEOUT] = "total_timeout",
    [AB_HTTP_MULTI_TOO_LARGE] = "too_large",
    [AB_HTTP_MULTI_ABORTED] = "aborted",
    [AB_HTTP_MULTI_CANCELLED] = "cancelled",
    [AB_HTTP_MULTI_FAILED] = "failed",
    [AB_HTTP_MULTI_ADDRESS_REFUSED] = "address_refused",
};

const char *ab_http_multi_failure_code(const struct ab_http_multi_result *r)
{
    switch (r->reason) {
    case AB_HTTP_MULTI_COMPLETE: return "";
    case AB_HTTP_MULTI_CONNECT_TIMEOUT: return "connect_timeout";
    case AB_HTTP_MULTI_FIRST_BYTE_TIMEOUT: return "first_byte_timeout";
    case AB_HTTP_MULTI_IDLE_TIMEOUT: return "idle_timeout";
    case AB_HTTP_MULTI_TOTAL_TIMEOUT: return "total_timeout";
    case AB_HTTP_MULTI_TOO_LARGE: return "response_too_large";
    case AB_HTTP_MULTI_ADDRESS_REFUSED: return "address_refused";
    case AB_HTTP_MULTI_ABORTED:
    case AB_HTTP_MULTI_CANCELLED: return "cancelled";
    default: return r->err == AB_ERR_UNAVAILABLE ? "connection_failed" : "connection_lost";
    }
}

const char *ab_http_multi_reason_name(enum ab_http_multi_reason reason)
{
    if ((int)reason < 0 || (size_t)reason >= sizeof(reason_names) / sizeof(reason_names[0]))
        return "failed";
    return reason_names[reason];
}

/* CURLMOPT_SOCKETFUNCTION: libcurl says which events of socket s it waits for. Only epoll is
 * touched here (no curl_multi_* call is allowed inside). A socket number libcurl reuses after
 * closing one is added afresh (MOD fails with ENOENT once the kernel dropped the closed
 * one), and one still registered is modified (ADD fails with EEXIST). */
static int on_socket(CURL *easy, curl_socket_t s, int what, void *userp, void *socketp)
{
    struct ab_http_multi *m = userp;
    struct epoll_event ev = { .data.fd = s };

    (void)socketp;
    if (what == CURL_POLL_REMOVE) {
        epoll_ctl(m->epfd, EPOLL_CTL_DEL, s, NULL); /* gone already when closed: fine */
        return 0;
    }
    ev.events = ((what & CURL_POLL_IN) ? EPOLLIN : 0u) | ((what & CURL_POLL_OUT) ? EPOLLOUT : 0u);
    if (epoll_ctl(m->epfd, EPOLL_CTL_MOD, s, &ev) == 0)
        return 0;
    if (errno == ENOENT && epoll_ctl(m->epfd, EPOLL_CTL_ADD, s, &ev) == 0)
        return 0;
    /* ENOMEM, or ENOSPC past max_user_watches. Returning -1 would make libcurl abort every
     * transfer of the handle and refuse new ones for good: end only this one, in the sweep
     * (its callbacks refuse its data meanwhile). */
    char *priv = NULL;
    if (curl_easy_getinfo(easy, CURLINFO_PRIVATE, &priv) == CURLE_OK && priv != NULL) {
        struct xfer *x = (struct xfer *)priv;

        if (x->stop == STOP_NONE) {
            x->stop = STOP_SOCKET;
            x->socket_errno = errno;
        }
        m->sweep_now = true;
    }
    return 0;
}

/* CURLMOPT_TIMERFUNCTION: when libcurl wants curl_multi_socket_action(CURL_SOCKET_TIMEOUT)
 * (its connect and total timeouts, retries of its own); -1 cancels the timer. */
static int on_timer(CURLM *multi, long timeout_ms, void *userp)
{
    struct ab_http_multi *m = userp;

    (void)multi;
    m->curl_deadline = timeout_ms < 0 ? -1 : ab_monotonic_ms() + timeout_ms;
    return 0;
}

/* A deadline of ours starts: the next sweep comes no later than it. */
static void deadline_at(struct ab_http_multi *m, int64_t when)
{
    if (when < m->next_sweep)
        m->next_sweep = when;
}

struct ab_http_multi *ab_http_multi_new(const struct ab_http_multi_options *options)
{
    struct ab_http_multi_options o = { .max_transfers = 0 };
    struct ab_http_multi *m;
    CURLMcode rc;

    if (options != NULL)
        o = *options;
    if (o.max_transfers == 0)
        o.max_transfers = AB_HTTP_MULTI_DEFAULT_MAX_TRANSFERS;
    if (o.max_transfers > LONG_MAX)
        o.max_transfers = LONG_MAX;
    if (o.max_host_connections < 0 || ab_http_global_init() != AB_OK)
        return NULL;
    m = calloc(1, sizeof(*m));
    if (m == NULL)
        return NULL;
    m->epfd = m->wakefd = -1;
    m->max_transfers = o.max_transfers;
    m->curl_deadline = -1;
    m->next_sweep = INT64_MAX;
    m->epfd = epoll_create1(EPOLL_CLOEXEC);
    m->wakefd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    m->multi = curl_multi_init();
    struct epoll_event wake = { .events = EPOLLIN, .data.fd = m->wakefd };
    if (m->epfd < 0 || m->wakefd < 0 || m->multi == NULL ||
        epoll_ctl(m->epfd, EPOLL_CTL_ADD, m->wakefd, &wake) != 0)
        goto fail;
    /* As many idle connections kept for reuse as transfers may run: after a burst, the next
     * one finds a warm connection for each. */
    rc = curl_multi_setopt(m->multi, CURLMOPT_MAXCONNECTS, (long)o.max_transfers);
    if (rc == CURLM_OK)
        rc = curl_multi_setopt(m->multi, CURLMOPT_MAX_HOST_CONNECTIONS,
                               o.max_host_connections);
    if (rc == CURLM_OK)
        rc = curl_multi_setopt(m->multi, CURLMOPT_SOCKETFUNCTION, on_socket);
    if (rc == CURLM_OK)
        rc = curl_multi_setopt(m->multi, CURLMOPT_SOCKETDATA, m);
    if (rc == CURLM_OK)
        rc = curl_multi_setopt(m->multi, CURLMOPT_TIMERFUNCTION, on_timer);
    if (rc == CURLM_OK)
        rc = curl_multi_setopt(m->multi, CURLMOPT_TIMERDATA, m);
    if (rc != CURLM_OK)
        goto fail;
    return m;
fail:
    if (m->multi != NULL)
        curl_multi_cleanup(m->multi);
    if (m->epfd >= 0)
        close(m->epfd);
    if (m->wakefd >= 0)
        close(m->wakefd);
    free(m);
    return NULL;
}

static void list_unlink(struct ab_http_multi *m, struct xfer *x)
{
    if (x->prev != NULL)
        x->prev->next = x->next;
    else
        m->head = x->next;
    if (x->next != NULL)
        x->next->prev = x->prev;
    else
        m->tail = x->prev;
    x->prev = x->next = NULL;
    m->count--;
}

static void xfer_free(struct xfer *x)
{
    curl_easy_cleanup(x->curl);
    ab_http_easy_prepared_cleanup(&x->prep);
    ab_http_easy_headers_cleanup(&x->head);
    free(x);
}

static int64_t info_ms(CURL *curl, CURLINFO info)
{
    curl_off_t us = 0;

    if (curl_easy_getinfo(curl, info, &us) != CURLE_OK)
        return 0;
    return (int64_t)(us / 1000);
}

/* How a transfer ended, from our verdicts first (they explain libcurl's write errors), then
 * from libcurl's code. */
static void classify(const struct xfer *x, CURLcode rc, struct ab_http_multi_result *r)
{
    const char *what = x->method, *host = x->prep.host;
    size_t n = sizeof(r->message);

    switch (x->stop) {
    case STOP_CANCELLED:
        r->reason = AB_HTTP_MULTI_CANCELLED;
        r->err = AB_ERR_SHUTDOWN;
        ab_http_easy_set_err(r->message, n, "%s %s: cancelled", what, host);
        return;
    case STOP_ABORTED:
        r->reason = AB_HTTP_MULTI_ABORTED;
        r->err = AB_ERR_SHUTDOWN;
        ab_http_easy_set_err(r->message, n, "%s %s: stopped by its callback", what, host);
        return;
    case STOP_HEADERS_TOO_LARGE:
        r->reason = AB_HTTP_MULTI_TOO_LARGE;
        r->err = AB_ERR_TOO_LARGE;
        ab_http_easy_set_err(r->message, n, "%s %s: response headers exceed %zu bytes", what,
                             host, AB_HTTP_MAX_HEADER_BYTES);
        return;
    case STOP_BODY_TOO_LARGE:
        break; /* with CURLE_FILESIZE_EXCEEDED below */
    case STOP_SOCKET:
        r->reason = AB_HTTP_MULTI_FAILED;
        r->err = AB_ERR_UNAVAILABLE;
        ab_http_easy_set_err(r->message, n, "%s %s: cannot watch its socket: %s", what, host,
                             strerror(x->socket_errno));
        return;
    case STOP_NOMEM:
        r->reason = AB_HTTP_MULTI_FAILED;
        r->err = AB_ERR_NOMEM;
        ab_http_easy_set_err(r->message, n, "%s %s: out of memory reading the response", what,
                             host);
        return;
    case STOP_NONE:
        break;
    }
    if (x->refused[0] != '\0' && !x->allowed && rc == CURLE_COULDNT_CONNECT) {
        r->reason = AB_HTTP_MULTI_ADDRESS_REFUSED;
        r->err = AB_ERR_FORBIDDEN;
        ab_http_easy_set_err(r->message, n, "%s %s: refused to connect: %s", what, host,
                             x->refused);
    } else if (x->stop == STOP_BODY_TOO_LARGE || rc == CURLE_FILESIZE_EXCEEDED) {
        r->reason = AB_HTTP_MULTI_TOO_LARGE;
        r->err = AB_ERR_TOO_LARGE;
        ab_http_easy_set_err(r->message, n, "%s %s: response body exceeds %zu bytes", what,
                             host, x->prep.max_body);
    } else if (rc == CURLE_OK && r->status == 0) {
        r->reason = AB_HTTP_MULTI_FAILED;
        r->err = AB_ERR_UPSTREAM;
        ab_http_easy_set_err(r->message, n, "%s %s: no HTTP status in the response", what,
                             host);
    } else if (rc == CURLE_OK) {
        r->reason = AB_HTTP_MULTI_COMPLETE;
        r->err = AB_OK;
    } else if (rc == CURLE_OPERATION_TIMEDOUT) {
        /* libcurl says only "timed out": before the request went out, its connect timeout
         * (or the total, if shorter) was running; after, only the total. */
        bool connect = x->sent_ms < 0 && x->connect_timeout_ms <= x->total_timeout_ms;

        r->reason = connect ? AB_HTTP_MULTI_CONNECT_TIMEOUT : AB_HTTP_MULTI_TOTAL_TIMEOUT;
        r->err = AB_ERR_TIMEOUT;
        r->timeout_ms = connect ? x->connect_timeout_ms : x->total_timeout_ms;
        ab_http_easy_set_err(r->message, n, "%s %s: %s timeout after %ld ms", what, host,
                             connect ? "connect" : "total", r->timeout_ms);
    } else {
        r->reason = AB_HTTP_MULTI_FAILED;
        r->err = ab_http_easy_err(rc, 0);
        ab_http_easy_set_err(r->message, n, "%s %s: %s", what, host,
                             x->errbuf[0] != '\0' ? x->errbuf : curl_easy_strerror(rc));
    }
}

/* Ends x: detaches it, unlinks it, tells its owner, frees it. reason is the engine's own
 * verdict (a deadline, a cancellation, a failure to attach), or AB_HTTP_MULTI_COMPLETE to
 * read the outcome from libcurl's rc and our callbacks' verdicts. Only outside libcurl's
 * callbacks. on_done may add and cancel: neither frees another transfer, so a caller
 * walking the list may keep its next pointer across this call. */
static void finish(struct ab_http_multi *m, struct xfer *x, CURLcode rc,
                   enum ab_http_multi_reason reason)
{
    struct ab_http_multi_result r = { .reason = reason };
    int64_t now = ab_monotonic_ms();
    long connects = 0;

    if (x->attached)
        curl_multi_remove_handle(m->multi, x->curl);
    list_unlink(m, x);
    curl_easy_getinfo(x->curl, CURLINFO_RESPONSE_CODE, &r.status);
    curl_easy_getinfo(x->curl, CURLINFO_NUM_CONNECTS, &connects);
    r.body_bytes = x->body_bytes;
    r.reused = x->sent_ms >= 0 && connects == 0;
    if (x->sent_ms >= 0) {
        /* TCP, then TLS for https (0 for http); both 0 on a reused connection. */
        int64_t tcp = info_ms(x->curl, CURLINFO_CONNECT_TIME_T);
        int64_t tls = info_ms(x->curl, CURLINFO_APPCONNECT_TIME_T);

        r.connect_ms = tls > tcp ? tls : tcp;
    } else {
        r.connect_ms = -1;
    }
    r.first_byte_ms = x->first_byte_ms < 0 ? -1 : x->first_byte_ms - x->added_ms;
    r.total_ms = now - x->added_ms;
    switch (reason) {
    case AB_HTTP_MULTI_COMPLETE:
        classify(x, rc, &r);
        break;
    case AB_HTTP_MULTI_FIRST_BYTE_TIMEOUT:
    case AB_HTTP_MULTI_IDLE_TIMEOUT:
        r.err = AB_ERR_TIMEOUT;
        r.timeout_ms = reason == AB_HTTP_MULTI_IDLE_TIMEOUT ? x->idle_timeout_ms
                                                            : x->first_byte_timeout_ms;
        ab_http_easy_set_err(r.message, sizeof(r.message), "%s %s: %s timeout after %ld ms",
                             x->method, x->prep.host,
                             reason == AB_HTTP_MULTI_IDLE_TIMEOUT ? "idle" : "first byte",
                             r.timeout_ms);
        break;
    case AB_HTTP_MULTI_FAILED: /* libcurl would not take the transfer */
        r.err = AB_ERR_INTERNAL;
        ab_http_easy_set_err(r.message, sizeof(r.message), "%s %s: libcurl refused the transfer",
                             x->method, x->prep.host);
        break;
    default: /* cancelled, perhaps before it started: classify says it */
        r.reason = AB_HTTP_MULTI_COMPLETE;
        classify(x, rc, &r);
        break;
    }
    x->cb.on_done(x->ud, &r);
    xfer_free(x);
}

/* CURLOPT_PREREQFUNCTION: the connection is ready (new or reused) and the request is about
 * to go out: the first-byte clock starts here. */
static int on_prereq(void *clientp, char *primary_ip, char *local_ip, int primary_port,
                     int local_port)
{
    struct xfer *x = clientp;

    (void)primary_ip;
    (void)local_ip;
    (void)primary_port;
    (void)local_port;
    if (x->stop != STOP_NONE)
        return CURL_PREREQFUNC_ABORT;
    x->sent_ms = ab_monotonic_ms();
    if (x->first_byte_timeout_ms > 0)
        deadline_at(x->m, x->sent_ms + x->first_byte_timeout_ms);
    return CURL_PREREQFUNC_OK;
}

static size_t on_header(char *data, size_t size, size_t nmemb, void *userdata)
{
    struct xfer *x = userdata;
    size_t len = size * nmemb; /* size is always 1 */
    enum ab_err err;
    long status = 0;

    if (x->stop != STOP_NONE)
        return 0;
    if (x->head_done)
        return len; /* trailers of a chunked body: not kept */
    err = ab_http_easy_header_line(&x->head, data, len);
    if (err != AB_OK) {
        x->stop = err == AB_ERR_TOO_LARGE ? STOP_HEADERS_TOO_LARGE : STOP_NOMEM;
        return 0;
    }
    if (!(len == 2 && data[0] == '\r') && !(len == 1 && data[0] == '\n'))
        return len;
    /* The blank line: the head is complete. A 1xx (or a proxy's CONNECT answer, status 0
     * here) is followed by the real response, whose status line resets the list. */
    curl_easy_getinfo(x->curl, CURLINFO_RESPONSE_CODE, &status);
    if (status < 200)
        return len;
    x->head_done = true;
    if (x->cb.on_headers != NULL &&
        x->cb.on_headers(x->ud, status, x->head.items, x->head.count) == AB_HTTP_MULTI_ABORT) {
        if (x->stop == STOP_NONE)
            x->stop = STOP_ABORTED;
        return 0;
    }
    ab_http_easy_headers_cleanup(&x->head); /* delivered: no need to hold them */
    return x->stop == STOP_NONE ? len : 0;  /* on_headers may have cancelled it */
}

static size_t on_body(char *data, size_t size, size_t nmemb, void *userdata)
{
    struct xfer *x = userdata;
    size_t len = size * nmemb; /* size is always 1 */
    int64_t now;

    if (x->stop != STOP_NONE)
        return 0;
    if (len > x->prep.max_body - x->body_bytes) {
        x->stop = STOP_BODY_TOO_LARGE;
        return 0;
    }
    now = ab_monotonic_ms();
    if (x->first_byte_ms < 0)
        x->first_byte_ms = now;
    x->last_data_ms = now;
    if (x->idle_timeout_ms > 0)
        deadline_at(x->m, now + x->idle_timeout_ms);
    x->body_bytes += len;
    if (x->cb.on_data == NULL) {
        x->waiting_first = false;
        return len;
    }
    switch (x->cb.on_data(x->ud, data, len, now)) {
    case AB_HTTP_MULTI_CONTINUE:
        x->waiting_first = false;
        break;
    case AB_HTTP_MULTI_KEEP_WAITING:
        break;
    case AB_HTTP_MULTI_ABORT:
    default:
        if (x->stop == STOP_NONE)
            x->stop = STOP_ABORTED;
        break;
    }
    return x->stop == STOP_NONE ? len : 0; /* on_data may have cancelled it */
}

void ab_http_multi_free(struct ab_http_multi *m)
{
    if (m == NULL)
        return;
    m->closing = true;
    while (m->head != NULL) {
        m->head->stop = STOP_CANCELLED;
        finish(m, m->head, CURLE_OK, AB_HTTP_MULTI_CANCELLED);
    }
    curl_multi_cleanup(m->multi); /* may still tell on_socket to forget sockets */
    close(m->epfd);
    close(m->wakefd);
    free(m);
}

/* CURLOPT_OPENSOCKETFUNCTION with a guard: libcurl hands over each address it is about to
 * connect to (every one it tries, in happy-eyeballs order), so the check is on the address
 * itself and not on a name that could resolve differently a moment later. A refused one
 * is CURL_SOCKET_BAD: libcurl tries the next, and fails with COULDNT_CONNECT when none is
 * left. */
static curl_socket_t open_guarded(void *clientp, curlsocktype purpose, struct curl_sockaddr *a)
{
    struct xfer *x = clientp;
    char why[AB_NETGUARD_REASON_MAX], text[64];

    if (purpose != CURLSOCKTYPE_IPCXN)
        return CURL_SOCKET_BAD;
    if (!ab_netguard_allows(x->guard, &a->addr, a->addrlen, why, sizeof(why))) {
        ab_netguard_format(&a->addr, a->addrlen, text, sizeof(text));
        snprintf(x->refused, sizeof(x->refused), "%s is %s", text, why);
        return CURL_SOCKET_BAD;
    }
    x->allowed = true;
    return socket(a->family, a->socktype, a->protocol);
}

/* The options libcurl needs on top of the shared ones. */
static CURLcode apply(struct xfer *x, const struct ab_http_request *req)
{
    struct ab_http_easy_sinks sinks = { .on_header = on_header,
                                        .on_body = on_body,
                                        .ud = x,
                                        .errbuf = x->errbuf,
                                        .copy_body = true };
    CURLcode rc = ab_http_easy_apply(x->curl, req, &x->prep, &sinks);

    if (rc == CURLE_OK)
        rc = curl_easy_setopt(x->curl, CURLOPT_PRIVATE, x);
    if (rc == CURLE_OK)
        rc = curl_easy_setopt(x->curl, CURLOPT_PREREQFUNCTION, on_prereq);
    if (rc == CURLE_OK)
        rc = curl_easy_setopt(x->curl, CURLOPT_PREREQDATA, x);
    /* A proxy's answer to CONNECT is not the response. */
    if (rc == CURLE_OK)
        rc = curl_easy_setopt(x->curl, CURLOPT_SUPPRESS_CONNECT_HEADERS, 1L);
    if (rc == CURLE_OK && x->guard != NULL) {
        rc = curl_easy_setopt(x->curl, CURLOPT_OPENSOCKETFUNCTION, open_guarded);
        if (rc == CURLE_OK)
            rc = curl_easy_setopt(x->curl, CURLOPT_OPENSOCKETDATA, x);
        if (rc == CURLE_OK)
            rc = curl_easy_setopt(x->curl, CURLOPT_PROXY, "");
    }
    return rc;
}

enum ab_err ab_http_multi_add(struct ab_http_multi *m, const struct ab_http_multi_request *req,
                              const struct ab_http_multi_callbacks *callbacks, void *ud,
                              uint64_t *id, char *errstr, size_t errstr_size)
{
    struct xfer *x;
    enum ab_err err;
    CURLcode rc;

    if (m == NULL || req == NULL || callbacks == NULL || callbacks->on_done == NULL) {
        ab_http_easy_set_err(errstr, errstr_size, "ab_http_multi_add: NULL argument");
        return AB_ERR_INVALID;
    }
    if (m->closing) {
        ab_http_easy_set_err(errstr, errstr_size, "the HTTP engine is closing");
        return AB_ERR_SHUTDOWN;
    }
    if (m->count >= m->max_transfers) {
        ab_http_easy_set_err(errstr, errstr_size, "%zu HTTP requests in flight already",
                             m->count);
        return AB_ERR_RATE_LIMITED;
    }
    if (req->first_byte_timeout_ms < 0 || req->idle_timeout_ms < 0 ||
        req->http.follow_redirects) {
        ab_http_easy_set_err(errstr, errstr_size,
                             req->http.follow_redirects ? "redirects are not followed here"
                                                        : "negative timeout");
        return AB_ERR_INVALID;
    }
    x = calloc(1, sizeof(*x));
    if (x == NULL) {
        ab_http_easy_set_err(errstr, errstr_size, "out of memory");
        return AB_ERR_NOMEM;
    }
    err = ab_http_easy_prepare(&req->http, &x->prep, errstr, errstr_size);
    if (err != AB_OK) {
        free(x);
        return err;
    }
    /* prepare checked the method's length. */
    snprintf(x->method, sizeof(x->method), "%s", x->prep.method);
    x->prep.method = x->method;
    x->cb = *callbacks;
    x->ud = ud;
    x->connect_timeout_ms = req->http.connect_timeout_ms ? req->http.connect_timeout_ms
                                                         : AB_HTTP_DEFAULT_CONNECT_TIMEOUT_MS;
    x->total_timeout_ms = req->http.timeout_ms ? req->http.timeout_ms
                                               : AB_HTTP_DEFAULT_TIMEOUT_MS;
    x->first_byte_timeout_ms = req->first_byte_timeout_ms;
    x->idle_timeout_ms = req->idle_timeout_ms;
    x->sent_ms = x->first_byte_ms = x->last_data_ms = -1;
    x->waiting_first = true;
    x->guard = req->guard;
    x->curl = curl_easy_init();
    if (x->curl == NULL) {
        ab_http_easy_set_err(errstr, errstr_size, "out of memory");
        xfer_free(x);
        return AB_ERR_NOMEM;
    }
    rc = apply(x, &req->http);
    if (rc != CURLE_OK) {
        ab_http_easy_set_err(errstr, errstr_size, "%s %s: setting libcurl options: %s",
                             x->method, x->prep.host, curl_easy_strerror(rc));
        xfer_free(x);
        return rc == CURLE_OUT_OF_MEMORY ? AB_ERR_NOMEM : AB_ERR_INTERNAL;
    }
    x->id = ++m->last_id;
    x->m = m;
    x->added_ms = ab_monotonic_ms();
    x->queued = true;
    if (m->queue_tail != NULL)
        m->queue_tail->next_queued = x;
    else
        m->queue_head = x;
    m->queue_tail = x;
    x->prev = m->tail;
    if (m->tail != NULL)
        m->tail->next = x;
    else
        m->head = x;
    m->tail = x;
    m->count++;
    if (id != NULL)
        *id = x->id;
    return AB_OK;
}

enum ab_err ab_http_multi_cancel(struct ab_http_multi *m, uint64_t id)
{
    /* A linear walk: the list is at most max_transfers long, and cancelling is rare. */
    for (struct xfer *x = m->head; x != NULL; x = x->next) {
        if (x->id == id) {
            x->stop = STOP_CANCELLED; /* overrides any other verdict not yet reported */
            m->sweep_now = true;
            return AB_OK;
        }
    }
    return AB_ERR_NOT_FOUND;
}

size_t ab_http_multi_in_flight(const struct ab_http_multi *m)
{
    return m->count;
}

enum ab_err ab_http_multi_wakeup(struct ab_http_multi *m)
{
    uint64_t one = 1;

    /* EAGAIN: the counter is full, so a wakeup is pending anyway. */
    if (write(m->wakefd, &one, sizeof(one)) == (ssize_t)sizeof(one) || errno == EAGAIN)
        return AB_OK;
    return AB_ERR_INTERNAL;
}

/* Attaches the queued transfers to the multi handle; a queued one cancelled meanwhile ends
 * here, never having started. @returns how many on_done were called. */
static int attach_new(struct ab_http_multi *m)
{
    int fired = 0;

    while (m->queue_head != NULL) {
        struct xfer *x = m->queue_head;

        m->queue_head = x->next_queued;
        if (m->queue_head == NULL)
            m->queue_tail = NULL;
        x->queued = false;
        x->next_queued = NULL;
        if (x->stop != STOP_NONE) {
            finish(m, x, CURLE_OK, AB_HTTP_MULTI_CANCELLED);
            fired++;
        } else if (curl_multi_add_handle(m->multi, x->curl) == CURLM_OK) {
            x->attached = true;
        } else {
            finish(m, x, CURLE_FAILED_INIT, AB_HTTP_MULTI_FAILED);
            fired++;
        }
    }
    return fired;
}

/* Ends what must end outside libcurl: cancelled transfers and our own deadlines passed.
 * @param next_deadline lowered to the nearest deadline still ahead (ms, monotonic).
 * @returns how many on_done were called. */
static int sweep(struct ab_http_multi *m, int64_t *next_deadline)
{
    int64_t now = ab_monotonic_ms();
    int fired = 0;

    for (struct xfer *x = m->head, *next; x != NULL; x = next) {
        int64_t first = INT64_MAX, idle = INT64_MAX;

        next = x->next;
        if (x->queued)
            continue; /* attach_new ends it if cancelled; none of its clocks runs yet */
        if (x->stop == STOP_CANCELLED || x->stop == STOP_SOCKET) {
            finish(m, x, CURLE_OK,
                   x->stop == STOP_SOCKET ? AB_HTTP_MULTI_COMPLETE : AB_HTTP_MULTI_CANCELLED);
            fired++;
            continue;
        }
        if (x->first_byte_timeout_ms > 0 && x->waiting_first && x->sent_ms >= 0)
            first = x->sent_ms + x->first_byte_timeout_ms;
        if (x->idle_timeout_ms > 0 && x->last_data_ms >= 0)
            idle = x->last_data_ms + x->idle_timeout_ms;
        if (now >= first || now >= idle) {
            /* Both passed: the one that passed first is the reason. */
            finish(m, x, CURLE_OK,
                   first <= idle ? AB_HTTP_MULTI_FIRST_BYTE_TIMEOUT : AB_HTTP_MULTI_IDLE_TIMEOUT);
            fired++;
            continue;
        }
        if (first < *next_deadline)
            *next_deadline = first;
        if (idle < *next_deadline)
            *next_deadline = idle;
    }
    return fired;
}

/* Ends the transfers libcurl has finished. @returns how many on_done were called. */
static int read_done(struct ab_http_multi *m)
{
    CURLMsg *msg;
    int left, fired = 0;

    while ((msg = curl_multi_info_read(m->multi, &left)) != NULL) {
        char *priv = NULL;
        struct xfer *x;
        CURLcode rc = msg->data.result;

        if (msg->msg != CURLMSG_DONE)
            continue;
        curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, &priv);
        x = (struct xfer *)priv;
        if (x == NULL)
            continue;
        finish(m, x, rc, AB_HTTP_MULTI_COMPLETE); /* msg is invalid from here */
        fired++;
    }
    return fired;
}

static enum ab_err multi_err(CURLMcode rc)
{
    return rc == CURLM_OUT_OF_MEMORY ? AB_ERR_NOMEM : AB_ERR_INTERNAL;
}

/* Sweeps when a cancellation waits or the nearest deadline of ours may have passed.
 * @returns how many on_done were called. */
static int sweep_due(struct ab_http_multi *m)
{
    int64_t deadline = INT64_MAX;
    int fired;

    if (!m->sweep_now && ab_monotonic_ms() < m->next_sweep)
        return 0;
    m->sweep_now = false;
    m->next_sweep = INT64_MAX;
    fired = sweep(m, &deadline);
    deadline_at(m, deadline);
    return fired;
}

/* Hands libcurl what epoll saw on its sockets, and its timer when due. */
static enum ab_err drive(struct ab_http_multi *m, const struct epoll_event *events, int n)
{
    CURLMcode rc = CURLM_OK;
    int running = 0;

    for (int i = 0; i < n && rc == CURLM_OK; i++) {
        int fd = events[i].data.fd, mask = 0;
        uint32_t e = events[i].events;

        if (fd == m->wakefd) {
            uint64_t count;

            if (read(m->wakefd, &count, sizeof(count)) < 0) {
                /* EAGAIN: drained already */
            }
            continue;
        }
        if (e & (EPOLLIN | EPOLLHUP | EPOLLRDHUP))
            mask |= CURL_CSELECT_IN; /* read what is left, then the end */
        if (e & EPOLLOUT)
            mask |= CURL_CSELECT_OUT;
        if (e & EPOLLERR)
            mask |= CURL_CSELECT_ERR;
        rc = curl_multi_socket_action(m->multi, fd, mask, &running);
    }
    if (rc == CURLM_OK && m->curl_deadline >= 0 && ab_monotonic_ms() >= m->curl_deadline) {
        m->curl_deadline = -1; /* on_timer may set it again from inside */
        rc = curl_multi_socket_action(m->multi, CURL_SOCKET_TIMEOUT, 0, &running);
    }
    if (rc != CURLM_OK) {
        /* libcurl tells on_timer only after a call that succeeded: ask it, so that the
         * timers it still holds are not lost (calling run again must stay safe). */
        long t = -1;

        if (curl_multi_timeout(m->multi, &t) != CURLM_OK)
            t = 100;
        m->curl_deadline = t < 0 ? -1 : ab_monotonic_ms() + t;
        return multi_err(rc);
    }
    return AB_OK;
}

enum ab_err ab_http_multi_run(struct ab_http_multi *m, int timeout_ms)
{
    struct epoll_event events[MAX_EVENTS];
    int64_t now;
    int fired, n, wait_ms = timeout_ms < 0 ? 0 : timeout_ms;
    enum ab_err err;

    if (m->in_run)
        return AB_ERR_INVALID;
    m->in_run = true;
    fired = attach_new(m);
    fired += sweep_due(m);
    now = ab_monotonic_ms();
    if (fired > 0)
        wait_ms = 0; /* this turn already did something: let the caller look at it */
    if (m->curl_deadline >= 0 && m->curl_deadline - now < wait_ms)
        wait_ms = m->curl_deadline - now < 0 ? 0 : (int)(m->curl_deadline - now);
    if (m->next_sweep != INT64_MAX && m->next_sweep - now < wait_ms)
        wait_ms = m->next_sweep - now < 0 ? 0 : (int)(m->next_sweep - now);
    n = epoll_wait(m->epfd, events, MAX_EVENTS, wait_ms);
    if (n < 0 && errno != EINTR) {
        m->in_run = false;
        return AB_ERR_INTERNAL;
    }
    if (n < 0)
        n = 0; /* EINTR: a turn without events */
    err = drive(m, events, n);
    read_done(m);
    /* Added by this turn's callbacks: they start now. A cancellation from an on_done of the
     * sweep ends in this turn too (a few rounds at most: each ends a transfer). */
    for (int round = 0; round < 4; round++) {
        attach_new(m);
        sweep_due(m);
        if (!m->sweep_now)
            break;
    }
    m->in_run = false;
    return err;
}
