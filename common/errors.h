/* The project's one error enum: every common/ function returns one of these, and library
 * codes (CURLcode, rd_kafka_resp_err_t, PGresult status) are converted to it at the
 * boundary, so services never see a library's own codes. */
#ifndef AB_ERRORS_H
#define AB_ERRORS_H

#include <stdbool.h>

enum ab_err {
    AB_OK = 0,
    AB_ERR_INVALID,       /* the request or input is malformed: do not retry it as is */
    AB_ERR_UNAUTHORIZED,  /* missing or wrong credentials */
    AB_ERR_FORBIDDEN,     /* authenticated, but not allowed */
    AB_ERR_NOT_FOUND,     /* the named thing does not exist */
    AB_ERR_CONFLICT,      /* it exists already, or contradicts what exists */
    AB_ERR_TOO_LARGE,     /* over a size limit */
    AB_ERR_RATE_LIMITED,  /* too many requests: retry later */
    AB_ERR_TIMEOUT,       /* a deadline passed; the outcome may be unknown */
    AB_ERR_UNAVAILABLE,   /* a dependency (PostgreSQL, Kafka) cannot be reached now */
    AB_ERR_UPSTREAM,      /* a remote service answered with an error */
    AB_ERR_NOMEM,         /* out of memory */
    AB_ERR_SHUTDOWN,      /* the service is stopping and takes no new work */
    AB_ERR_CONFIG,        /* the configuration is invalid */
    AB_ERR_INTERNAL,      /* a bug or an unexpected state */
    AB_ERR__COUNT
};

/* A stable snake_case name ("invalid_request", "not_found", ...), used as the "code" of a
 * JSON error body and in logs. Never NULL. */
const char *ab_err_name(enum ab_err err);

/* Whether the same operation may succeed if tried again later (timeouts, unavailable
 * dependencies, rate limits, upstream failures). */
bool ab_err_is_retriable(enum ab_err err);

/* The HTTP status that answers a request failing with err (400, 401, ..., 503). */
int ab_err_http_status(enum ab_err err);

#endif
