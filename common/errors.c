/* The table behind enum ab_err: one row per error, so a name, a retry policy and an HTTP
 * status can never disagree. */
#include "common/errors.h"

static const struct {
    const char *name;
    bool retriable;
    int http_status;
} err_table[AB_ERR__COUNT] = {
    [AB_OK] = { "ok", false, 200 },
    [AB_ERR_INVALID] = { "invalid_request", false, 400 },
    [AB_ERR_UNAUTHORIZED] = { "unauthorized", false, 401 },
    [AB_ERR_FORBIDDEN] = { "forbidden", false, 403 },
    [AB_ERR_NOT_FOUND] = { "not_found", false, 404 },
    [AB_ERR_CONFLICT] = { "conflict", false, 409 },
    [AB_ERR_TOO_LARGE] = { "payload_too_large", false, 413 },
    [AB_ERR_RATE_LIMITED] = { "rate_limited", true, 429 },
    [AB_ERR_TIMEOUT] = { "timeout", true, 504 },
    [AB_ERR_UNAVAILABLE] = { "unavailable", true, 503 },
    [AB_ERR_UPSTREAM] = { "upstream_error", true, 502 },
    [AB_ERR_NOMEM] = { "out_of_memory", true, 503 },
    [AB_ERR_SHUTDOWN] = { "shutting_down", true, 503 },
    [AB_ERR_CONFIG] = { "invalid_config", false, 500 },
    [AB_ERR_INTERNAL] = { "internal_error", false, 500 },
};

static bool valid(enum ab_err err)
{
    return (int)err >= 0 && err < AB_ERR__COUNT;
}

const char *ab_err_name(enum ab_err err)
{
    return valid(err) ? err_table[err].name : "internal_error";
}

bool ab_err_is_retriable(enum ab_err err)
{
    return valid(err) && err_table[err].retriable;
}

int ab_err_http_status(enum ab_err err)
{
    return valid(err) ? err_table[err].http_status : 500;
}
