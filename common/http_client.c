/* The HTTP client: one reused libcurl easy handle per client, every request's options applied
 * from scratch (http_easy.c, shared with the multi engine), and responses collected under
 * hard size caps. */
#include "common/http_client.h"

#include <curl/curl.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "common/http_easy.h"

#define BODY_INITIAL_CAP ((size_t)16 << 10)

struct ab_http_client {
    CURL *curl;
    char curl_errbuf[CURL_ERROR_SIZE]; /* libcurl's own message for the last failure */
};

/* What the callbacks fill in during one transfer. */
struct transfer {
    struct ab_http_response *resp;
    struct ab_http_easy_headers headers; /* moved into resp once the transfer succeeded */
    size_t max_body;
    size_t body_cap;            /* bytes allocated at resp->body */
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

void ab_http_response_cleanup(struct ab_http_response *resp)
{
    struct ab_http_easy_headers headers;

    if (resp == NULL)
        return;
    headers = (struct ab_http_easy_headers){ .items = resp->headers,
                                             .count = resp->header_count };
    ab_http_easy_headers_cleanup(&headers);
    free(resp->body);
    memset(resp, 0, sizeof(*resp));
}

const char *ab_http_header_find(const struct ab_http_header *headers, size_t count,
                                const char *name)
{
    if (headers == NULL || name == NULL)
        return NULL;
    for (size_t i = 0; i < count; i++)
        if (strcasecmp(headers[i].name, name) == 0)
            return headers[i].value;
    return NULL;
}

const char *ab_http_response_header(const struct ab_http_response *resp, const char *name)
{
    return resp == NULL ? NULL : ab_http_header_find(resp->headers, resp->header_count, name);
}

/* libcurl calls this once per header line of every response it reads, including 1xx
 * responses and redirects it follows. */
static size_t on_header(char *data, size_t size, size_t nmemb, void *userdata)
{
    struct transfer *t = userdata;
    size_t len = size * nmemb; /* size is always 1 */
    enum ab_err err;

    if (len >= 5 && memcmp(data, "HTTP/", 5) == 0)
        t->resp->body_len = 0; /* a new response: a redirect's body is not this one's */
    err = ab_http_easy_header_line(&t->headers, data, len);
    if (err == AB_OK)
        return len;
    if (err == AB_ERR_TOO_LARGE)
        t->headers_too_large = true;
    else
        t->nomem = true;
    return 0; /* any count but len aborts the transfer */
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

static enum ab_err map_curl_error(CURLcode rc, const struct transfer *t, long redirects)
{
    if (t->body_too_large || t->headers_too_large)
        return AB_ERR_TOO_LARGE;
    if (t->nomem)
        return AB_ERR_NOMEM;
    return ab_http_easy_err(rc, redirects);
}

static void describe_failure(CURLcode rc, const struct transfer *t, const char *method,
                             const char *host, const char *curl_errbuf, char *errstr,
                             size_t errstr_size)
{
    if (t->headers_too_large)
        ab_http_easy_set_err(errstr, errstr_size, "%s %s: response headers exceed %zu bytes",
                             method, host, AB_HTTP_MAX_HEADER_BYTES);
    else if (t->body_too_large || rc == CURLE_FILESIZE_EXCEEDED)
        ab_http_easy_set_err(errstr, errstr_size, "%s %s: response body exceeds %zu bytes",
                             method, host, t->max_body);
    else if (t->nomem)
        ab_http_easy_set_err(errstr, errstr_size, "%s %s: out of memory reading the response",
                             method, host);
    else
        ab_http_easy_set_err(errstr, errstr_size, "%s %s: %s", method, host,
                             curl_errbuf[0] != '\0' ? curl_errbuf : curl_easy_strerror(rc));
}

enum ab_err ab_http_client_do(struct ab_http_client *client, const struct ab_http_request *req,
                              struct ab_http_response *resp, char *errstr, size_t errstr_size)
{
    enum ab_err err;
    CURLcode rc;
    struct ab_http_easy_prepared p = { .headers = NULL };
    struct transfer t = { .resp = resp };
    struct ab_http_easy_sinks sinks;
    long redirects = 0;

    if (resp != NULL)
        memset(resp, 0, sizeof(*resp));
    if (client == NULL || req == NULL || resp == NULL) {
        ab_http_easy_set_err(errstr, errstr_size, "ab_http_client_do: NULL argument");
        return AB_ERR_INVALID;
    }
    err = ab_http_easy_prepare(req, &p, errstr, errstr_size);
    if (err != AB_OK)
        return err;
    t.max_body = p.max_body;
    sinks = (struct ab_http_easy_sinks){ .on_header = on_header,
                                         .on_body = on_body,
                                         .ud = &t,
                                         .errbuf = client->curl_errbuf };

    /* Reset forgets every option of the previous request but keeps the connection cache,
     * which is why the handle is reused at all. */
    curl_easy_reset(client->curl);
    client->curl_errbuf[0] = '\0';
    rc = ab_http_easy_apply(client->curl, req, &p, &sinks);
    if (rc != CURLE_OK) {
        err = AB_ERR_INTERNAL;
        ab_http_easy_set_err(errstr, errstr_size, "%s %s: setting libcurl options: %s",
                             p.method, p.host, curl_easy_strerror(rc));
        goto out;
    }
    rc = curl_easy_perform(client->curl);
    if (rc != CURLE_OK) {
        curl_easy_getinfo(client->curl, CURLINFO_REDIRECT_COUNT, &redirects);
        err = map_curl_error(rc, &t, redirects);
        describe_failure(rc, &t, p.method, p.host, client->curl_errbuf, errstr, errstr_size);
        goto out;
    }
    curl_easy_getinfo(client->curl, CURLINFO_RESPONSE_CODE, &resp->status);
    curl_easy_getinfo(client->curl, CURLINFO_TOTAL_TIME, &resp->total_seconds);
    if (resp->status == 0) {
        err = AB_ERR_UPSTREAM;
        ab_http_easy_set_err(errstr, errstr_size, "%s %s: no HTTP status in the response",
                             p.method, p.host);
        goto out;
    }
    if (resp->body == NULL) {
        resp->body = calloc(1, 1);
        if (resp->body == NULL) {
            err = AB_ERR_NOMEM;
            ab_http_easy_set_err(errstr, errstr_size, "out of memory");
            goto out;
        }
    }
    /* The response takes the header lines over. */
    resp->headers = t.headers.items;
    resp->header_count = t.headers.count;
    t.headers = (struct ab_http_easy_headers){ .items = NULL };
    err = AB_OK;
out:
    /* The handle keeps pointers to this call's headers, callbacks' data and the caller's
     * body; resetting drops them so nothing dangles once this function returns. */
    curl_easy_reset(client->curl);
    ab_http_easy_prepared_cleanup(&p);
    ab_http_easy_headers_cleanup(&t.headers);
    if (err != AB_OK)
        ab_http_response_cleanup(resp);
    return err;
}
