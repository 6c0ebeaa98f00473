/* The HTTP client: one reused libcurl easy handle per client, every request's options applied
 * from scratch, and responses collected under hard size caps. */
#include "common/http_client.h"

#include <curl/curl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define ALLOWED_PROTOCOLS "http,https"
#define MAX_METHOD_LEN 20
#define BODY_INITIAL_CAP ((size_t)16 << 10)

struct ab_http_client {
    CURL *curl;
    char curl_errbuf[CURL_ERROR_SIZE]; /* libcurl's own message for the last failure */
};

/* What the callbacks fill in during one transfer. */
struct transfer {
    struct ab_http_response *resp;
    size_t max_body;
    size_t body_cap;            /* bytes allocated at resp->body */
    size_t headers_cap;         /* entries allocated at resp->headers */
    size_t header_bytes;        /* of the current response, status line included */
    /* Why a callback stopped the transfer, which libcurl reports only as a write error. */
    bool body_too_large;
    bool headers_too_large;
    bool nomem;
};

static pthread_once_t global_once = PTHREAD_ONCE_INIT;
static enum ab_err global_result = AB_ERR_INTERNAL;

static void global_init_once(void)
{
    global_result = curl_global_init(CURL_GLOBAL_DEFAULT) == CURLE_OK ? AB_OK : AB_ERR_INTERNAL;
}

enum ab_err ab_http_global_init(void)
{
    /* curl_global_init is not thread-safe in every libcurl we may meet, and a second call
     * would only count references; pthread_once gives both properties for free. */
    pthread_once(&global_once, global_init_once);
    return global_result;
}

__attribute__((format(printf, 3, 4))) static void set_err(char *errstr, size_t errstr_size,
                                                          const char *fmt, ...)
{
    va_list ap;

    if (errstr == NULL || errstr_size == 0)
        return;
    va_start(ap, fmt);
    vsnprintf(errstr, errstr_size, fmt, ap);
    va_end(ap);
}

struct ab_http_client *ab_http_client_new(void)
{
    struct ab_http_client *client;

    if (ab_http_global_init() != AB_OK)
        return NULL;
    client = calloc(1, sizeof(*client));
    if (client == NULL)
        return NULL;
    client->curl = curl_easy_init();
    if (client->curl == NULL) {
        free(client);
        return NULL;
    }
    return client;
}

void ab_http_client_free(struct ab_http_client *client)
{
    if (client == NULL)
        return;
    curl_easy_cleanup(client->curl);
    free(client);
}

/* Each header is one allocation, "name\0value\0", so name is the pointer to free. */
static void headers_clear(struct ab_http_response *resp)
{
    for (size_t i = 0; i < resp->header_count; i++)
        free(resp->headers[i].name);
    resp->header_count = 0;
}

void ab_http_response_cleanup(struct ab_http_response *resp)
{
    if (resp == NULL)
        return;
    headers_clear(resp);
    free(resp->headers);
    free(resp->body);
    memset(resp, 0, sizeof(*resp));
}

const char *ab_http_response_header(const struct ab_http_response *resp, const char *name)
{
    if (resp == NULL || name == NULL)
        return NULL;
    for (size_t i = 0; i < resp->header_count; i++)
        if (strcasecmp(resp->headers[i].name, name) == 0)
            return resp->headers[i].value;
    return NULL;
}

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

static bool header_add(struct transfer *t, const char *name, size_t name_len,
                       const char *value, size_t value_len)
{
    struct ab_http_response *resp = t->resp;

    if (resp->header_count == t->headers_cap) {
        size_t cap = t->headers_cap ? t->headers_cap * 2 : 16;
        struct ab_http_header *headers = realloc(resp->headers, cap * sizeof(*headers));

        if (headers == NULL)
            return false;
        resp->headers = headers;
        t->headers_cap = cap;
    }
    if (!header_make(&resp->headers[resp->header_count], name, name_len, value, value_len,
                     NULL, 0))
        return false;
    resp->header_count++;
    return true;
}

/* A line starting with whitespace continues the previous header (obsolete line folding,
 * RFC 9112 5.2); it joins the previous value with one space, as the RFC allows. */
static bool header_unfold(struct transfer *t, const char *fold, size_t fold_len)
{
    struct ab_http_response *resp = t->resp;
    struct ab_http_header *h, joined;

    if (resp->header_count == 0)
        return true; /* nothing to continue: ignore it */
    h = &resp->headers[resp->header_count - 1];
    if (!header_make(&joined, h->name, strlen(h->name), h->value, strlen(h->value), fold,
                     fold_len))
        return false;
    free(h->name);
    *h = joined;
    return true;
}

/* Keeps a "Name: value" line; anything else is not a header and is dropped.
 * @returns false only when out of memory. */
static bool header_parse(struct transfer *t, const char *line, size_t line_len)
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
    return header_add(t, name, name_len, value, value_len);
}

/* libcurl calls this once per header line of every response it reads, including 1xx
 * responses and redirects it follows. */
static size_t on_header(char *data, size_t size, size_t nmemb, void *userdata)
{
    struct transfer *t = userdata;
    size_t len = size * nmemb; /* size is always 1 */
    const char *line = data;
    size_t line_len = len;
    bool status_line = len >= 5 && memcmp(data, "HTTP/", 5) == 0;
    bool folded = len > 0 && (data[0] == ' ' || data[0] == '\t');

    if (status_line) {
        /* A status line starts a new response: only the last one describes the result. */
        headers_clear(t->resp);
        t->resp->body_len = 0;
        t->header_bytes = 0;
    }
    if (len > AB_HTTP_MAX_HEADER_BYTES - t->header_bytes) {
        t->headers_too_large = true;
        return 0; /* any count but len aborts the transfer */
    }
    t->header_bytes += len;
    trim(&line, &line_len);
    if (status_line || line_len == 0)
        return len; /* the status is read from libcurl; the empty line ends the headers */
    if (!(folded ? header_unfold(t, line, line_len) : header_parse(t, line, line_len))) {
        t->nomem = true;
        return 0;
    }
    return len;
}

static size_t on_body(char *data, size_t size, size_t nmemb, void *userdata)
{
    struct transfer *t = userdata;
    struct ab_http_response *resp = t->resp;
    size_t len = size * nmemb; /* size is always 1 */
    size_t need;

    /* Checked before anything is stored, so a response is cut off at the first byte over
     * the cap rather than after it has all been read. */
    if (len > t->max_body - resp->body_len) {
        t->body_too_large = true;
        return 0;
    }
    need = resp->body_len + len + 1; /* max_body < SIZE_MAX, so no overflow */
    if (need > t->body_cap) {
        size_t cap = t->body_cap ? t->body_cap : BODY_INITIAL_CAP;
        char *body;

        while (cap < need)
            cap = cap > SIZE_MAX / 2 ? need : cap * 2;
        if (cap > t->max_body + 1)
            cap = t->max_body + 1;
        body = realloc(resp->body, cap);
        if (body == NULL) {
            t->nomem = true;
            return 0;
        }
        resp->body = body;
        t->body_cap = cap;
    }
    memcpy(resp->body + resp->body_len, data, len);
    resp->body_len += len;
    resp->body[resp->body_len] = '\0';
    return len;
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

/* The caller's header lines, plus two that stop libcurl adding its own to a request with a
 * body: "Expect:" (libcurl would otherwise wait for a 100-continue before sending a larger
 * body, a round trip many servers never answer), and "Content-Type:" when the caller set
 * none (libcurl would otherwise label every body as a form). */
static enum ab_err build_headers(const struct ab_http_request *req, bool sends_body,
                                 struct curl_slist **out)
{
    struct curl_slist *list = NULL, *next;
    const char *extra[2];
    size_t extra_count = 0;

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

/* Every option a request needs, applied to a freshly reset handle, so nothing set for one
 * request can reach the next. */
static CURLcode apply_options(struct ab_http_client *client, const struct ab_http_request *req,
                              const char *method, bool sends_body,
                              struct curl_slist *headers, struct transfer *t)
{
    CURL *curl = client->curl;
    CURLcode rc = CURLE_OK;
    long connect_ms = req->connect_timeout_ms ? req->connect_timeout_ms
                                              : AB_HTTP_DEFAULT_CONNECT_TIMEOUT_MS;
    long total_ms = req->timeout_ms ? req->timeout_ms : AB_HTTP_DEFAULT_TIMEOUT_MS;
    curl_off_t max_file =
        t->max_body > (size_t)INT64_MAX ? (curl_off_t)INT64_MAX : (curl_off_t)t->max_body;

#define SET(opt, val)                                                                      \
    do {                                                                                   \
        if (rc == CURLE_OK)                                                                \
            rc = curl_easy_setopt(curl, (opt), (val));                                     \
    } while (0)

    SET(CURLOPT_ERRORBUFFER, client->curl_errbuf);
    /* libcurl would otherwise use SIGALRM for DNS timeouts, which is unsafe with threads. */
    SET(CURLOPT_NOSIGNAL, 1L);
    SET(CURLOPT_URL, req->url);
    SET(CURLOPT_PROTOCOLS_STR, ALLOWED_PROTOCOLS);
    SET(CURLOPT_REDIR_PROTOCOLS_STR, ALLOWED_PROTOCOLS);
    SET(CURLOPT_FOLLOWLOCATION, req->follow_redirects ? 1L : 0L);
    SET(CURLOPT_MAXREDIRS, AB_HTTP_MAX_REDIRECTS);
    SET(CURLOPT_CONNECTTIMEOUT_MS, connect_ms);
    SET(CURLOPT_TIMEOUT_MS, total_ms);
    /* Refuses a declared Content-Length over the cap before reading any of the body;
     * on_body enforces the cap on bodies without one. */
    SET(CURLOPT_MAXFILESIZE_LARGE, max_file);
    /* LLM calls can be silent for minutes; keepalive probes notice a dead peer sooner. */
    SET(CURLOPT_TCP_KEEPALIVE, 1L);
    SET(CURLOPT_USERAGENT, req->user_agent ? req->user_agent : AB_HTTP_DEFAULT_USER_AGENT);
    SET(CURLOPT_HTTPHEADER, headers);
    SET(CURLOPT_HEADERFUNCTION, on_header);
    SET(CURLOPT_HEADERDATA, t);
    SET(CURLOPT_WRITEFUNCTION, on_body);
    SET(CURLOPT_WRITEDATA, t);
    if (strcmp(method, "HEAD") == 0)
        SET(CURLOPT_NOBODY, 1L); /* as a custom method, libcurl would wait for a body */
    else if (strcmp(method, "GET") == 0 && !sends_body)
        SET(CURLOPT_HTTPGET, 1L);
    else if (strcmp(method, "POST") != 0)
        SET(CURLOPT_CUSTOMREQUEST, method);
    if (sends_body) {
        /* The size goes first so that a binary body is never measured with strlen. */
        SET(CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)req->body_len);
        SET(CURLOPT_POSTFIELDS, req->body != NULL ? req->body : "");
    }
#undef SET
    return rc;
}

static enum ab_err map_curl_error(CURLcode rc, const struct transfer *t, long redirects)
{
    if (t->body_too_large || t->headers_too_large)
        return AB_ERR_TOO_LARGE;
    if (t->nomem)
        return AB_ERR_NOMEM;
    switch (rc) {
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
        /* check_request passed the caller's URL, so this is a redirect's Location. */
        return redirects > 0 ? AB_ERR_UPSTREAM : AB_ERR_INVALID;
    default:
        return AB_ERR_UPSTREAM;
    }
}

static void describe_failure(CURLcode rc, const struct transfer *t, const char *method,
                             const char *host, const char *curl_errbuf, char *errstr,
                             size_t errstr_size)
{
    if (t->headers_too_large)
        set_err(errstr, errstr_size, "%s %s: response headers exceed %zu bytes", method, host,
                AB_HTTP_MAX_HEADER_BYTES);
    else if (t->body_too_large || rc == CURLE_FILESIZE_EXCEEDED)
        set_err(errstr, errstr_size, "%s %s: response body exceeds %zu bytes", method, host,
                t->max_body);
    else if (t->nomem)
        set_err(errstr, errstr_size, "%s %s: out of memory reading the response", method,
                host);
    else
        set_err(errstr, errstr_size, "%s %s: %s", method, host,
                curl_errbuf[0] != '\0' ? curl_errbuf : curl_easy_strerror(rc));
}

enum ab_err ab_http_client_do(struct ab_http_client *client, const struct ab_http_request *req,
                              struct ab_http_response *resp, char *errstr, size_t errstr_size)
{
    enum ab_err err;
    CURLcode rc;
    struct curl_slist *headers = NULL;
    struct transfer t = { .resp = resp };
    const char *method;
    bool sends_body;
    char host[256] = "";
    long redirects = 0;

    if (resp != NULL)
        memset(resp, 0, sizeof(*resp));
    if (client == NULL || req == NULL || resp == NULL) {
        set_err(errstr, errstr_size, "ab_http_client_do: NULL argument");
        return AB_ERR_INVALID;
    }
    method = req->method ? req->method : (req->body ? "POST" : "GET");
    err = check_request(req, method, host, sizeof(host), errstr, errstr_size);
    if (err != AB_OK)
        return err;
    /* An empty POST still goes through POSTFIELDS: without them libcurl would read the body
     * from stdin. */
    sends_body = req->body != NULL || strcmp(method, "POST") == 0;
    t.max_body = req->max_response_bytes ? req->max_response_bytes
                                         : AB_HTTP_DEFAULT_MAX_RESPONSE_BYTES;
    if (t.max_body == SIZE_MAX)
        t.max_body = SIZE_MAX - 1; /* room for the terminating NUL */
    err = build_headers(req, sends_body, &headers);
    if (err != AB_OK) {
        set_err(errstr, errstr_size, "out of memory");
        goto out;
    }

    /* Reset forgets every option of the previous request but keeps the connection cache,
     * which is why the handle is reused at all. */
    curl_easy_reset(client->curl);
    client->curl_errbuf[0] = '\0';
    rc = apply_options(client, req, method, sends_body, headers, &t);
    if (rc != CURLE_OK) {
        err = AB_ERR_INTERNAL;
        set_err(errstr, errstr_size, "%s %s: setting libcurl options: %s", method, host,
                curl_easy_strerror(rc));
        goto out;
    }
    rc = curl_easy_perform(client->curl);
    if (rc != CURLE_OK) {
        curl_easy_getinfo(client->curl, CURLINFO_REDIRECT_COUNT, &redirects);
        err = map_curl_error(rc, &t, redirects);
        describe_failure(rc, &t, method, host, client->curl_errbuf, errstr, errstr_size);
        goto out;
    }
    curl_easy_getinfo(client->curl, CURLINFO_RESPONSE_CODE, &resp->status);
    curl_easy_getinfo(client->curl, CURLINFO_TOTAL_TIME, &resp->total_seconds);
    if (resp->status == 0) {
        err = AB_ERR_UPSTREAM;
        set_err(errstr, errstr_size, "%s %s: no HTTP status in the response", method, host);
        goto out;
    }
    if (resp->body == NULL) {
        resp->body = calloc(1, 1);
        if (resp->body == NULL) {
            err = AB_ERR_NOMEM;
            set_err(errstr, errstr_size, "out of memory");
            goto out;
        }
    }
    err = AB_OK;
out:
    /* The handle keeps pointers to this call's headers, callbacks' data and the caller's
     * body; resetting drops them so nothing dangles once this function returns. */
    curl_easy_reset(client->curl);
    curl_slist_free_all(headers);
    if (err != AB_OK)
        ab_http_response_cleanup(resp);
    return err;
}
