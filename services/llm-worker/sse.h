/* An incremental Server-Sent Events (text/event-stream) parser, following the WHATWG HTML
 * "event stream interpretation" rules that OpenAI-compatible streaming servers and their
 * clients (openai-python's SSEDecoder) use. The caller feeds the body as it arrives, in
 * chunks split anywhere (inside a CRLF, a UTF-8 sequence or the BOM); the parser calls back
 * once per complete event. Pure logic: no I/O, no clock, no global state.
 *
 * What it does, per the spec:
 *  - lines end with LF, CR or CRLF (a CRLF split between two chunks is one line end);
 *  - a UTF-8 byte order mark at the very start of the stream is skipped;
 *  - a line starting with ':' is a comment (keep-alives) and is never buffered;
 *  - "name:value" with one optional space after the colon stripped; a line without a colon
 *    is a field with an empty value;
 *  - fields "event", "data", "id" (ignored when its value contains a NUL), "retry" (digits
 *    only); any other field is ignored;
 *  - a blank line dispatches the event: its data lines joined with "\n"; an event with no
 *    data line is not dispatched (only its type is reset); the type defaults to "message"
 *    (also for an empty "event" field);
 *    the last event id carries over to later events, as the spec says;
 *  - at the end of the stream an incomplete event (no blank line after it) is discarded;
 *    llmw_sse_end says whether there was one, so a caller can tell a cut stream.
 *
 * One deliberate difference: the spec decodes the stream as UTF-8 and replaces invalid
 * sequences with U+FFFD. This parser passes bytes through untouched (line ends are ASCII, so
 * splitting on bytes is exact), because our payloads are JSON and jansson rejects invalid
 * UTF-8: a corrupted stream must fail, not become an answer with replacement characters.
 *
 * Memory: the parser holds the current line and the current event's data, together at most
 * max_event_bytes; more is an error (AB_ERR_TOO_LARGE), never unbounded growth. */
#ifndef LLMW_SSE_H
#define LLMW_SSE_H

#include <stdbool.h>
#include <stddef.h>

#include "common/errors.h"

/* Used when llmw_sse_new is given 0. An OpenAI chunk is a few hundred bytes. */
#define LLMW_SSE_DEFAULT_MAX_EVENT_BYTES ((size_t)256 << 10)

/* One dispatched event. Everything is borrowed from the parser and valid only during the
 * callback. Strings are NUL-terminated; data may itself contain NUL bytes (the spec allows
 * them), so trust data_len. */
struct llmw_sse_event {
    const char *type; /* the "event" field, or "message" when there was none or it was "" */
    const char *data; /* the data lines joined with "\n" (no trailing "\n"); may be "" */
    size_t data_len;
    const char *id;   /* the last event id seen in the stream so far, or "" */
};

/* What the callback tells the parser after an event. */
enum llmw_sse_next {
    LLMW_SSE_CONTINUE, /* go on parsing */
    LLMW_SSE_STOP      /* the consumer has what it wanted ([DONE], an error): ignore the rest */
};

typedef enum llmw_sse_next (*llmw_sse_event_fn)(void *ud, const struct llmw_sse_event *ev);

struct llmw_sse_parser;

/* A parser calling on_event(ud, ...) for each event. max_event_bytes caps what one event
 * may hold (its data plus the line being read); 0 means LLMW_SSE_DEFAULT_MAX_EVENT_BYTES.
 * Allocation failure aborts (util.h's policy), so this never returns NULL.
 * @ownership the caller frees it with llmw_sse_free; ud stays the caller's. */
struct llmw_sse_parser *llmw_sse_new(size_t max_event_bytes, llmw_sse_event_fn on_event,
                                     void *ud);

/* Frees the parser. NULL is a no-op. */
void llmw_sse_free(struct llmw_sse_parser *p);

/* Parses len more bytes of the stream, calling the callback for each event they complete.
 * Once the callback has returned LLMW_SSE_STOP, the rest of data and every later feed is
 * ignored (and AB_OK returned).
 * @returns AB_OK;
 *          AB_ERR_TOO_LARGE when an event would hold more than max_event_bytes: the parser
 *          has failed for good, and every later feed returns the same error.
 * errstr (may be NULL) says why on failure. */
enum ab_err llmw_sse_feed(struct llmw_sse_parser *p, const void *data, size_t len, char *errstr,
                          size_t errstr_size);

/* Tells the parser the stream has ended. Per the spec, an event not yet ended by a blank
 * line is discarded and not dispatched.
 * @returns true when the stream ended inside an event (a partial line or data lines without
 *          the blank line that ends them): the last event was cut. */
bool llmw_sse_end(struct llmw_sse_parser *p);

/* The last valid "retry" field (the reconnection time the server asks for), or -1. */
long long llmw_sse_retry_ms(const struct llmw_sse_parser *p);

#endif
