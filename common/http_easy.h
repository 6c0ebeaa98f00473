/* What the blocking client (http_client.c) and the event-loop engine (http_multi.c) share
 * about one libcurl request: checking it, the options every request gets, collecting its
 * response header lines under a cap, and what a CURLcode means as an ab_err. Internal to
 * common/: services use http_client.h or http_multi.h, never this. */
#ifndef AB_HTTP_EASY_H
#define AB_HTTP_EASY_H

#include <curl/curl.h>
#include <stdbool.h>
#include <stddef.h>

#include "common/errors.h"
#include "common/http_client.h"

/* A request checked and ready to apply: what ab_http_easy_prepare derived from it.
 * @ownership headers is owned; ab_http_easy_prepared_cleanup frees it. */
struct ab_http_easy_prepared {
    const char *method;          /* the request's, or the default; borrowed from it */
    bool sends_body;             /* POSTFIELDS are set (an empty POST too) */
    size_t max_body;             /* the body cap, < SIZE_MAX */
    char host[256];              /* the URL's host alone, for messages (never the URL) */
    struct curl_slist *headers;  /* the caller's lines plus "Expect:" / "Content-Type:" */
};

/* Where libcurl delivers a response, and how the request body is handed over. */
struct ab_http_easy_sinks {
    curl_write_callback on_header; /* every header line, status lines included */
    curl_write_callback on_body;
    void *ud;                      /* HEADERDATA and WRITEDATA */
    char *errbuf;                  /* CURL_ERROR_SIZE bytes, for libcurl's own message */
    /* Copy the body into the handle (COPYPOSTFIELDS) so the caller's may be freed before
     * the transfer runs; without it libcurl reads the caller's memory during the transfer. */
    bool copy_body;
};

/* Response header lines as they arrive, under AB_HTTP_MAX_HEADER_BYTES per response.
 * Zero-initialise it. @ownership owns items; ab_http_easy_headers_cleanup frees them. */
struct ab_http_easy_headers {
    struct ab_http_header *items; /* in arrival order; duplicates kept */
    size_t count;
    size_t cap;                   /* entries allocated */
    size_t bytes;                 /* of the current response, status line included */
};

/* snprintf into errstr when there is one. */
void ab_http_easy_set_err(char *errstr, size_t errstr_size, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Checks req (see ab_http_client_do for what is refused) and prepares it.
 * @returns AB_OK, AB_ERR_INVALID or AB_ERR_NOMEM, with errstr saying why; on failure
 *          nothing is left to clean up. */
enum ab_err ab_http_easy_prepare(const struct ab_http_request *req,
                                 struct ab_http_easy_prepared *p, char *errstr,
                                 size_t errstr_size);

void ab_http_easy_prepared_cleanup(struct ab_http_easy_prepared *p);

/* Applies every option a request needs to a fresh or reset handle: http/https only,
 * NOSIGNAL, the connect and total timeouts, the body cap for a declared Content-Length,
 * TCP keepalive, the method, the body, the headers and the sinks. p and (unless
 * sinks->copy_body) req->body must outlive the transfer. */
CURLcode ab_http_easy_apply(CURL *curl, const struct ab_http_request *req,
                            const struct ab_http_easy_prepared *p,
                            const struct ab_http_easy_sinks *sinks);

/* Takes one header line from libcurl's header callback. A status line starts a new
 * response and forgets the previous one's headers (1xx, redirects); the blank line ending
 * the head and anything that is not "Name: value" are dropped; a line starting with
 * whitespace continues the previous header (obsolete folding, RFC 9112 5.2).
 * @returns AB_OK; AB_ERR_TOO_LARGE past AB_HTTP_MAX_HEADER_BYTES; AB_ERR_NOMEM. */
enum ab_err ab_http_easy_header_line(struct ab_http_easy_headers *h, const char *data,
                                     size_t len);

/* Frees the lines and zeroes h. */
void ab_http_easy_headers_cleanup(struct ab_http_easy_headers *h);

/* The ab_err for a failed transfer's CURLcode, when no callback of ours caused it:
 * timeouts → AB_ERR_TIMEOUT; unresolvable or unreachable host → AB_ERR_UNAVAILABLE; a
 * declared body over the cap → AB_ERR_TOO_LARGE; a malformed or unsupported URL → INVALID
 * (or UPSTREAM after redirects, where the server's Location is at fault); anything else,
 * a reset or cut connection and TLS failures included → AB_ERR_UPSTREAM. */
enum ab_err ab_http_easy_err(CURLcode rc, long redirects);

#endif
