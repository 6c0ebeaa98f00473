/* The parts of one libcurl request that the blocking client and the multi engine share
 * (see http_easy.h): the request's checks and options, header line collection, and the
 * CURLcode mapping, so the two can never disagree on any of them. */
#include "common/http_easy.h"

#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "common/trace.h"

#define ALLOWED_PROTOCOLS "http,https"
#define MAX_METHOD_LEN 20

void ab_http_easy_set_err(char *errstr, size_t errstr_size, const char *fmt, ...)
{
    va_list ap;

    if (errstr == NULL || errstr_size == 0)
        return;
    va_start(ap, fmt);
    vsnprintf(errstr, errstr_size, fmt, ap);
    va_end(ap);
}

/* The short name the moved code was written with. */
#define set_err ab_http_easy_set_err

static bool is_ows(char c)
{
    return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

static void trim(const char **s, size_t *len)
{
    while (*len > 0 && is_ows((*s)[0])) {
        (*s)++;
        (*len)--;
    }
    while (*len > 0 && is_ows((*s)[*len - 1]))
        (*len)--;
}

/* Each header is one allocation, "name\0value\0", so name is the pointer to free. */
static void headers_clear(struct ab_http_easy_headers *h)
{
    for (size_t i = 0; i < h->count; i++)
        free(h->items[i].name);
    h->count = 0;
}

void ab_http_easy_headers_cleanup(struct ab_http_easy_headers *h)
{
    if (h == NULL)
        return;
    headers_clear(h);
    free(h->items);
    memset(h, 0, sizeof(*h));
}

/* Makes h hold "name\0value\0", where value is value_len bytes of value followed, when
 * fold_len > 0, by one space and fold: the one allocation is freed through h->name. */
static bool header_make(struct ab_http_header *h, const char *name, size_t name_len,
                        const char *value, size_t value_len, const char *fold, size_t fold_len)
{
    /* Every length is bounded by AB_HTTP_MAX_HEADER_BYTES, so the sum cannot overflow. */
    size_t total_value = value_len + (fold_len > 0 ? 1 + fold_len : 0);
    char *block = malloc(name_len + 1 + total_value + 1);
    char *v;

    if (block == NULL)
        return false;
    memcpy(block, name, name_len);
    block[name_len] = '\0';
    v = block + name_len + 1;
    memcpy(v, value, value_len);
    if (fold_len > 0) {
        v[value_len] = ' ';
        memcpy(v + value_len + 1, fold, fold_len);
    }
    v[total_value] = '\0';
    h->name = block;
    h->value = v;
    return true;
}

static bool header_add(struct ab_http_easy_headers *h, const char *name, size_t name_len,
                       const char *value, size_t value_len)
{
    if (h->count == h->cap) {
        size_t cap = h->cap ? h->cap * 2 : 16;
        struct ab_http_header *items = realloc(h->items, cap * sizeof(*items));

        if (items == NULL)
            return false;
        h->items = items;
        h->cap = cap;
    }
    if (!header_make(&h->items[h->count], name, name_len, value, value_len, NULL, 0))
        return false;
    h->count++;
    return true;
}

/* Joins a folded line to the previous value with one space, as RFC 9112 5.2 allows. */
static bool header_unfold(struct ab_http_easy_headers *h, const char *fold, size_t fold_len)
{
    struct ab_http_header *last, joined;

    if (h->count == 0)
        return true; /* nothing to continue: ignore it */
    last = &h->items[h->count - 1];
    if (!header_make(&joined, last->name, strlen(last->name), last->value,
                     strlen(last->value), fold, fold_len))
        return false;
    free(last->name);
    *last = joined;
    return true;
}

/* Keeps a "Name: value" line; anything else is not a header and is dropped.
 * @returns false only when out of memory. */
static bool header_parse(struct ab_http_easy_headers *h, const char *line, size_t line_len)
{
    const char *colon = memchr(line, ':', line_len);
    const char *name = line, *value;
    size_t name_len, value_len;

    if (colon == NULL)
        return true;
    name_len = (size_t)(colon - line);
    value = colon + 1;
    value_len = line_len - name_len - 1;
    trim(&name, &name_len);
    trim(&value, &value_len);
    return header_add(h, name, name_len, value, value_len);
}

enum ab_err ab_http_easy_header_line(struct ab_http_easy_headers *h, const char *data,
                                     size_t len)
{
    const char *line = data;
    size_t line_len = len;
    bool status_line = len >= 5 && memcmp(data, "HTTP/", 5) == 0;
    bool folded = len > 0 && (data[0] == ' ' || data[0] == '\t');

    if (status_line) {
        /* A status line starts a new response: only the last one describes the result. */
        headers_clear(h);
        h->bytes = 0;
    }
    if (len > AB_HTTP_MAX_HEADER_BYTES - h->bytes)
        return AB_ERR_TOO_LARGE;
    h->bytes += len;
    trim(&line, &line_len);
    if (status_line || line_len == 0)
        return AB_OK; /* the status is read from libcurl; the empty line ends the head */
    if (!(folded ? header_unfold(h, line, line_len) : header_parse(h, line, line_len)))
        return AB_ERR_NOMEM;
    return AB_OK;
}

/* Methods are case-sensitive tokens; requiring upper case catches a "post" that a server
 * would answer with 405 or, worse, treat as GET. */
static bool method_valid(const char *method)
{
    size_t len = strlen(method);

    if (len == 0 || len > MAX_METHOD_LEN)
        return false;
    for (size_t i = 0; i < len; i++)
        if (!((method[i] >= 'A' && method[i] <= 'Z') || method[i] == '-' || method[i] == '_'))
            return false;
    return true;
}

static bool has_header(const char *const *headers, const char *name)
{
    size_t name_len = strlen(name);

    for (size_t i = 0; headers != NULL && headers[i] != NULL; i++)
        if (strncasecmp(headers[i], name, name_len) == 0 &&
            (headers[i][name_len] == ':' || headers[i][name_len] == ';'))
            return true;
    return false;
}

/* Checks what libcurl would otherwise accept too generously (schemeless URLs are guessed to
 * be http, header lines are sent verbatim), and copies the URL's host for messages. */
static enum ab_err check_request(const struct ab_http_request *req, const char *method,
                                 char *host, size_t host_size, char *errstr, size_t errstr_size)
{
    enum ab_err err = AB_ERR_INVALID;
    CURLU *url = NULL;
    char *scheme = NULL, *url_host = NULL;

    if (!method_valid(method)) {
        set_err(errstr, errstr_size, "invalid HTTP method \"%.*s\"", MAX_METHOD_LEN, method);
        goto out;
    }
    if (req->body == NULL && req->body_len > 0) {
        set_err(errstr, errstr_size, "%s: body_len %zu without a body", method, req->body_len);
        goto out;
    }
    if (req->body != NULL && strcmp(method, "HEAD") == 0) {
        set_err(errstr, errstr_size, "HEAD request with a body");
        goto out;
    }
    if (req->connect_timeout_ms < 0 || req->timeout_ms < 0) {
        set_err(errstr, errstr_size, "%s: negative timeout", method);
        goto out;
    }
    for (size_t i = 0; req->headers != NULL && req->headers[i] != NULL; i++) {
        if (strpbrk(req->headers[i], "\r\n") != NULL) {
            set_err(errstr, errstr_size, "%s: request header %zu contains CR or LF", method,
                    i);
            goto out;
        }
    }
    struct ab_trace trace;
    if (req->traceparent != NULL && !ab_trace_parse(req->traceparent, &trace)) {
        set_err(errstr, errstr_size, "%s: traceparent is not a W3C traceparent", method);
        goto out;
    }
    if (req->user_agent != NULL && strpbrk(req->user_agent, "\r\n") != NULL) {
        set_err(errstr, errstr_size, "%s: user agent contains CR or LF", method);
        goto out;
    }
    url = curl_url();
    if (url == NULL) {
        err = AB_ERR_NOMEM;
        set_err(errstr, errstr_size, "out of memory");
        goto out;
    }
    if (req->url == NULL || curl_url_set(url, CURLUPART_URL, req->url, 0) != CURLUE_OK ||
        curl_url_get(url, CURLUPART_SCHEME, &scheme, 0) != CURLUE_OK) {
        set_err(errstr, errstr_size, "%s: missing or malformed URL", method);
        goto out;
    }
    /* libcurl returns the scheme in lower case. */
    if (strcmp(scheme, "http") != 0 && strcmp(scheme, "https") != 0) {
        set_err(errstr, errstr_size, "%s: URL scheme \"%s\" is not http or https", method,
                scheme);
        goto out;
    }
    if (curl_url_get(url, CURLUPART_HOST, &url_host, 0) != CURLUE_OK) {
        set_err(errstr, errstr_size, "%s: URL without a host", method);
        goto out;
    }
    snprintf(host, host_size, "%s", url_host);
    err = AB_OK;
out:
    curl_free(url_host);
    curl_free(scheme);
    curl_url_cleanup(url);
    return err;
}

/* The caller's header lines, the trace context, plus two that stop libcurl adding its own
 * to a request with a body: "Expect:" (libcurl would otherwise wait for a 100-continue
 * before sending a larger body, a round trip many servers never answer), and
 * "Content-Type:" when the caller set none (libcurl would otherwise label every body as a
 * form). */
static enum ab_err build_headers(const struct ab_http_request *req, bool sends_body,
                                 struct curl_slist **out)
{
    struct curl_slist *list = NULL, *next;
    const char *extra[3];
    size_t extra_count = 0;
    char trace_line[sizeof("traceparent: ") + AB_TRACEPARENT_LEN];
    char child[AB_TRACEPARENT_LEN + 1];

    if (!has_header(req->headers, "traceparent")) {
        const char *tp = req->traceparent;
        if (tp == NULL && ab_trace_current() != NULL) {
            struct ab_trace t;
            ab_trace_child(ab_trace_current(), &t);
            ab_trace_format(&t, child);
            tp = child;
        }
        if (tp != NULL) {
            snprintf(trace_line, sizeof(trace_line), "traceparent: %s", tp);
            extra[extra_count++] = trace_line;
        }
    }
    if (sends_body && !has_header(req->headers, "Expect"))
        extra[extra_count++] = "Expect:";
    if (sends_body && !has_header(req->headers, "Content-Type"))
        extra[extra_count++] = "Content-Type:";
    for (size_t i = 0; req->headers != NULL && req->headers[i] != NULL; i++) {
        next = curl_slist_append(list, req->headers[i]);
        if (next == NULL)
            goto nomem;
        list = next;
    }
    for (size_t i = 0; i < extra_count; i++) {
        next = curl_slist_append(list, extra[i]);
        if (next == NULL)
            goto nomem;
        list = next;
    }
    *out = list;
    return AB_OK;
nomem:
    curl_slist_free_all(list);
    return AB_ERR_NOMEM;
}

enum ab_err ab_http_easy_prepare(const struct ab_http_request *req,
                                 struct ab_http_easy_prepared *p, char *errstr,
                                 size_t errstr_size)
{
    enum ab_err err;

    memset(p, 0, sizeof(*p));
    p->method = req->method ? req->method : (req->body ? "POST" : "GET");
    err = check_request(req, p->method, p->host, sizeof(p->host), errstr, errstr_size);
    if (err != AB_OK)
        return err;
    /* An empty POST still goes through POSTFIELDS: without them libcurl would read the body
     * from stdin. */
    p->sends_body = req->body != NULL || strcmp(p->method, "POST") == 0;
    p->max_body = req->max_response_bytes ? req->max_response_bytes
                                          : AB_HTTP_DEFAULT_MAX_RESPONSE_BYTES;
    if (p->max_body == SIZE_MAX)
        p->max_body = SIZE_MAX - 1; /* room for a terminating NUL */
    err = build_headers(req, p->sends_body, &p->headers);
    if (err != AB_OK)
        set_err(errstr, errstr_size, "out of memory");
    return err;
}

void ab_http_easy_prepared_cleanup(struct ab_http_easy_prepared *p)
{
    if (p == NULL)
        return;
    curl_slist_free_all(p->headers);
    p->headers = NULL;
}

CURLcode ab_http_easy_apply(CURL *curl, const struct ab_http_request *req,
                            const struct ab_http_easy_prepared *p,
                            const struct ab_http_easy_sinks *sinks)
{
    CURLcode rc = CURLE_OK;
    const char *method = p->method;
    long connect_ms = req->connect_timeout_ms ? req->connect_timeout_ms
                                              : AB_HTTP_DEFAULT_CONNECT_TIMEOUT_MS;
    long total_ms = req->timeout_ms ? req->timeout_ms : AB_HTTP_DEFAULT_TIMEOUT_MS;
    curl_off_t max_file =
        p->max_body > (size_t)INT64_MAX ? (curl_off_t)INT64_MAX : (curl_off_t)p->max_body;

#define SET(opt, val)                                                                      \
    do {                                                                                   \
        if (rc == CURLE_OK)                                                                \
            rc = curl_easy_setopt(curl, (opt), (val));                                     \
    } while (0)

    SET(CURLOPT_ERRORBUFFER, sinks->errbuf);
    /* libcurl would otherwise use SIGALRM for DNS timeouts, which is unsafe with threads. */
    SET(CURLOPT_NOSIGNAL, 1L);
    SET(CURLOPT_URL, req->url);
    SET(CURLOPT_PROTOCOLS_STR, ALLOWED_PROTOCOLS);
    SET(CURLOPT_REDIR_PROTOCOLS_STR, ALLOWED_PROTOCOLS);
    SET(CURLOPT_FOLLOWLOCATION, req->follow_redirects ? 1L : 0L);
    SET(CURLOPT_MAXREDIRS, AB_HTTP_MAX_REDIRECTS);
    SET(CURLOPT_CONNECTTIMEOUT_MS, connect_ms);
    SET(CURLOPT_TIMEOUT_MS, total_ms);
    /* Refuses a declared Content-Length over the cap before reading any of the body; the
     * body sink enforces the cap on bodies without one. */
    SET(CURLOPT_MAXFILESIZE_LARGE, max_file);
    /* LLM calls can be silent for minutes; keepalive probes notice a dead peer sooner. */
    SET(CURLOPT_TCP_KEEPALIVE, 1L);
    SET(CURLOPT_USERAGENT, req->user_agent ? req->user_agent : AB_HTTP_DEFAULT_USER_AGENT);
    SET(CURLOPT_HTTPHEADER, p->headers);
    SET(CURLOPT_HEADERFUNCTION, sinks->on_header);
    SET(CURLOPT_HEADERDATA, sinks->ud);
    SET(CURLOPT_WRITEFUNCTION, sinks->on_body);
    SET(CURLOPT_WRITEDATA, sinks->ud);
    if (strcmp(method, "HEAD") == 0)
        SET(CURLOPT_NOBODY, 1L); /* as a custom method, libcurl would wait for a body */
    else if (strcmp(method, "GET") == 0 && !p->sends_body)
        SET(CURLOPT_HTTPGET, 1L);
    else if (strcmp(method, "POST") != 0)
        SET(CURLOPT_CUSTOMREQUEST, method);
    if (p->sends_body) {
        /* The size goes first so that a binary body is never measured with strlen. */
        SET(CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)req->body_len);
        if (sinks->copy_body)
            SET(CURLOPT_COPYPOSTFIELDS, req->body != NULL ? req->body : "");
        else
            SET(CURLOPT_POSTFIELDS, req->body != NULL ? req->body : "");
    }
#undef SET
    return rc;
}

enum ab_err ab_http_easy_err(CURLcode rc, long redirects)
{
    switch (rc) {
    case CURLE_OK:
        return AB_OK;
    case CURLE_OPERATION_TIMEDOUT:
        return AB_ERR_TIMEOUT;
    case CURLE_COULDNT_RESOLVE_HOST:
    case CURLE_COULDNT_RESOLVE_PROXY:
    case CURLE_COULDNT_CONNECT:
        return AB_ERR_UNAVAILABLE;
    case CURLE_FILESIZE_EXCEEDED:
        return AB_ERR_TOO_LARGE;
    case CURLE_OUT_OF_MEMORY:
        return AB_ERR_NOMEM;
    case CURLE_URL_MALFORMAT:
    case CURLE_UNSUPPORTED_PROTOCOL:
        /* The caller's URL was checked, so after a redirect this is the server's Location. */
        return redirects > 0 ? AB_ERR_UPSTREAM : AB_ERR_INVALID;
    default:
        return AB_ERR_UPSTREAM;
    }
}
