/* Structured logging: one JSON object per line on stdout with time, level, service,
 * message, and the request or event id that the calling thread is working on. */
#ifndef AB_LOG_H
#define AB_LOG_H

#include <jansson.h>
#include <stdbool.h>
#include <stdio.h>

enum ab_log_level { AB_LOG_DEBUG = 0, AB_LOG_INFO, AB_LOG_WARN, AB_LOG_ERROR };

/* Sets the service name written in every line and the lowest level written.
 * @thread call once, before other threads log. */
void ab_log_init(const char *service, enum ab_log_level min_level);

/* Redirects the output (tests); NULL restores stdout. */
void ab_log_set_output(FILE *out);

/* "debug", "info", "warn" (or "warning"), "error" -> level. @returns false if unknown. */
bool ab_log_level_parse(const char *name, enum ab_log_level *level);
const char *ab_log_level_name(enum ab_log_level level);
bool ab_log_enabled(enum ab_log_level level);

/* The id of the request or event this thread is handling, added to every line it logs.
 * The string is copied (truncated to 127 bytes); NULL clears it. @thread per-thread. */
void ab_log_set_request_id(const char *request_id);
void ab_log_set_event_id(const char *event_id);
const char *ab_log_request_id(void);

/* Writes one line. fields (may be NULL) is a JSON object whose members are added to the
 * line; the reference is stolen. Lines from several threads never interleave.
 * @thread safe. */
void ab_log_fields(enum ab_log_level level, json_t *fields, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#define ab_log(level, ...) ab_log_fields((level), NULL, __VA_ARGS__)
#define ab_debug(...)                                                                      \
    do {                                                                                   \
        if (ab_log_enabled(AB_LOG_DEBUG))                                                  \
            ab_log_fields(AB_LOG_DEBUG, NULL, __VA_ARGS__);                                \
    } while (0)
#define ab_info(...) ab_log_fields(AB_LOG_INFO, NULL, __VA_ARGS__)
#define ab_warn(...) ab_log_fields(AB_LOG_WARN, NULL, __VA_ARGS__)
#define ab_error(...) ab_log_fields(AB_LOG_ERROR, NULL, __VA_ARGS__)

#endif
