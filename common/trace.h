/* W3C Trace Context (https://www.w3.org/TR/trace-context/): the traceparent header that
 * follows one request through every service. Ingress accepts a caller's traceparent or
 * starts a trace; each service opens its own span as a child of the one it received; the
 * value travels in the event envelope and the Kafka headers, goes out on every HTTP call,
 * and its trace and span ids are written in every log line of the work it covers.
 *
 * No spans are exported (there is no collector here): the ids correlate logs, events and
 * the calls a receiver sees, and a receiver with a tracer continues the same trace. */
#ifndef AB_TRACE_H
#define AB_TRACE_H

#include <stdbool.h>
#include <stdint.h>

#define AB_TRACEPARENT_LEN 55 /* "00-" 32 hex "-" 16 hex "-" 2 hex */

struct ab_trace {
    char trace_id[33]; /* 32 lower-case hex digits, not all zero */
    char span_id[17];  /* 16 lower-case hex digits, not all zero: this hop's span */
    uint8_t flags;     /* trace-flags; bit 0 is "sampled" */
};

/* Reads a traceparent header value. Version 00 must be exactly 55 characters; a later
 * version (not ff) is read by its first 55 characters when the next one is '-' or the end,
 * as the specification asks. Upper-case hex, all-zero ids and other shapes are refused.
 * @returns true and fills out (span_id is the caller's span: our parent) when valid. */
bool ab_trace_parse(const char *header, struct ab_trace *out);

/* out = a new trace (random ids, sampled). */
void ab_trace_start(struct ab_trace *out);

/* out = a child span of parent: the same trace id and sampled flag (version 00 defines no
 * other flag, so the rest are cleared), a new random span id. A NULL parent starts a new
 * trace. out may be parent. */
void ab_trace_child(const struct ab_trace *parent, struct ab_trace *out);

/* "00-<trace>-<span>-<flags>" into out (AB_TRACEPARENT_LEN + 1 bytes). */
void ab_trace_format(const struct ab_trace *t, char out[AB_TRACEPARENT_LEN + 1]);

/* A traceparent for one outgoing call made on behalf of the work whose traceparent is
 * parent (may be NULL or invalid: a new trace): a child span, formatted into out. */
void ab_trace_child_header(const char *parent, char out[AB_TRACEPARENT_LEN + 1]);

/* The span this thread is working in (a request or a message), for log lines and for the
 * envelopes it creates. ab_trace_enter opens a child span of the traceparent received (NULL
 * or invalid: a new trace) and makes it current; ab_trace_leave clears it.
 * @thread per-thread. */
void ab_trace_enter(const char *traceparent);
void ab_trace_set_current(const struct ab_trace *t); /* NULL clears */
/* Makes the span a traceparent names current again (the same span, resumed later or on
 * another thread, e.g. when an asynchronous call completes). An invalid or NULL value
 * clears it. @returns whether a span is current. */
bool ab_trace_resume(const char *traceparent);
void ab_trace_leave(void);
/* The current span, or NULL when the thread is not working in one. The pointer is the
 * thread's own and valid until the next enter, set or leave on this thread. */
const struct ab_trace *ab_trace_current(void);
/* The current span as a traceparent into out. @returns false (out empty) when none. */
bool ab_trace_current_header(char out[AB_TRACEPARENT_LEN + 1]);

#endif
