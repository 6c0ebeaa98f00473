/* The result of an OpenAI-compatible chat completion (POST /v1/chat/completions), assembled
 * from a streamed answer (text/event-stream of chat.completion.chunk objects, read with
 * sse.h) or from a whole JSON body. Pure logic: no I/O, no clock (the caller passes its time
 * with each chunk), so the unit tests drive it byte by byte.
 *
 * It exists because of the seed client's bugs (seed-systems.md §3.3): it read only
 * delta.content and so could not tell an answer from an error object, a cut stream, tool
 * calls or a bad chunk, and took an empty stream as a reason to send the request again.
 * Here every ending is named by the outcome, and only LLMW_OPENAI_ANSWER is an answer:
 *
 *   ANSWER      finish_reason came (or [DONE]); content, finish_reason, usage as sent
 *   TOOL_CALLS  the model asked for tools (collected, by index, arguments concatenated);
 *               also when finish_reason is "tool_calls" but no call came (OpenClaw #54174)
 *   ERROR       an error object (in the stream, as data or "event: error", or as the
 *               body), or an HTTP error status; error.* and http_status say what
 *   TRUNCATED   the stream ended with neither finish_reason nor [DONE] (an empty stream
 *               too): a failure, never an answer, whatever content came before
 *   MALFORMED   a chunk or body that is not the JSON it must be (invalid UTF-8 included)
 *   TOO_LARGE   an SSE event, the content or the tool calls over their caps
 *
 * A stream is read to its end: after finish_reason the usage chunk ("choices": []) still
 * comes when stream_options.include_usage was set, and is read (OpenClaw #107333/#79897
 * lost it by stopping at finish_reason). Only choice index 0 is assembled (we never ask for
 * n > 1); unknown fields are ignored. */
#ifndef LLMW_OPENAI_STREAM_H
#define LLMW_OPENAI_STREAM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/errors.h"

/* Defaults for limits left 0. Content counts content and refusal text; tool bytes count
 * every tool call's name and arguments. */
#define LLMW_OPENAI_DEFAULT_MAX_EVENT_BYTES ((size_t)256 << 10)
#define LLMW_OPENAI_DEFAULT_MAX_CONTENT_BYTES ((size_t)1 << 20)
#define LLMW_OPENAI_DEFAULT_MAX_TOOL_BYTES ((size_t)256 << 10)
#define LLMW_OPENAI_DEFAULT_MAX_TOOL_CALLS 64
/* Error fields are kept for logs and reports, cut (at a UTF-8 boundary) to this many bytes. */
#define LLMW_OPENAI_MAX_ERROR_FIELD_BYTES 1024

struct llmw_openai_limits {
    size_t max_event_bytes;   /* one SSE event (streaming only) */
    size_t max_content_bytes; /* content + refusal */
    size_t max_tool_bytes;    /* all tool calls' names and arguments */
    size_t max_tool_calls;
};

enum llmw_openai_outcome {
    LLMW_OPENAI_PENDING = 0, /* a stream not finished yet (llmw_openai_stream_peek) */
    LLMW_OPENAI_ANSWER,
    LLMW_OPENAI_TOOL_CALLS,
    LLMW_OPENAI_ERROR,
    LLMW_OPENAI_TRUNCATED,
    LLMW_OPENAI_MALFORMED,
    LLMW_OPENAI_TOO_LARGE,
};

/* One tool call. Strings are NUL-terminated and never NULL ("" when not sent). arguments is
 * the JSON text exactly as concatenated from the fragments, not parsed or checked. */
struct llmw_openai_tool_call {
    long long index; /* the "index" the fragments carried (the call's position) */
    char *id;
    char *type;      /* "function", or "" */
    char *name;
    char *arguments;
};

/* Token counts; a field not sent is -1. present says a usage object came at all. */
struct llmw_openai_usage {
    bool present;
    long long prompt_tokens;
    long long completion_tokens;
    long long total_tokens;
    long long cached_tokens;    /* prompt_tokens_details.cached_tokens */
    long long reasoning_tokens; /* completion_tokens_details.reasoning_tokens */
};

/* The provider's error object {"message", "type", "param", "code"} (code may be a number on
 * the wire; it is kept as text). Any field may be NULL. */
struct llmw_openai_error {
    char *message;
    char *type;
    char *code;
    char *param;
};

/* @ownership every pointer here is owned by the struct; free with llmw_openai_result_cleanup. */
struct llmw_openai_result {
    enum llmw_openai_outcome outcome;
    long http_status;     /* the status llmw_openai_parse_body was given; 0 for a stream */
    char *id;             /* "chatcmpl-…" from the first chunk that had one, or NULL */
    char *model;          /* likewise */
    char *role;           /* delta.role / message.role, or NULL */
    char *content;        /* never NULL once settled; "" when none came */
    size_t content_len;
    char *refusal;        /* delta.refusal / message.refusal text, or NULL */
    char *finish_reason;  /* "stop", "length", "tool_calls", "content_filter", …, or NULL */
    struct llmw_openai_usage usage;
    struct llmw_openai_tool_call *tool_calls; /* in the order the calls first appeared */
    size_t tool_call_count;
    struct llmw_openai_error error;           /* set for LLMW_OPENAI_ERROR from an object */
    bool done;            /* "data: [DONE]" came */
    size_t chunks;        /* data events parsed (streaming) */
    /* The caller's now_ms at the feed that brought the first content, refusal or tool-call
     * fragment (time to first token = this minus the request's start); -1 when none came. */
    int64_t first_token_ms;
    /* For every outcome but ANSWER, a one-line reason for logs and reports, without any
     * content; for ANSWER, notes such as a missing [DONE]; "" when there is nothing to say. */
    char detail[256];
};

struct llmw_openai_stream;

/* An assembler for one streamed response (HTTP 2xx, Content-Type text/event-stream; an
 * error status or a JSON body goes to llmw_openai_parse_body instead). limits may be NULL,
 * and any field 0, for the defaults. Allocation failure aborts (util.h's policy).
 * @ownership the caller frees it with llmw_openai_stream_free. */
struct llmw_openai_stream *llmw_openai_stream_new(const struct llmw_openai_limits *limits);

void llmw_openai_stream_free(struct llmw_openai_stream *st); /* NULL is a no-op */

/* Feeds len bytes of the body as they arrived, at the caller's time now_ms (any clock, e.g.
 * ab_monotonic_ms(); used only for first_token_ms).
 * @returns true while more is wanted; false once the outcome is settled ([DONE], an error
 *          object, a malformed chunk, a cap exceeded): the caller stops reading and calls
 *          llmw_openai_stream_finish. Bytes fed after that are ignored. */
bool llmw_openai_stream_feed(struct llmw_openai_stream *st, const void *data, size_t len,
                             int64_t now_ms);

/* The result so far (outcome LLMW_OPENAI_PENDING until settled; content is NULL until some
 * arrived), e.g. to check first_token_ms against a first-token deadline.
 * @ownership borrowed; valid until the next feed, finish or free. */
const struct llmw_openai_result *llmw_openai_stream_peek(const struct llmw_openai_stream *st);

/* Ends the stream (the body is over, or feed returned false) and moves the settled result
 * into *out, which the caller then owns. The stream is spent: only free it afterwards. */
void llmw_openai_stream_finish(struct llmw_openai_stream *st, struct llmw_openai_result *out);

/* Parses a whole (non-streamed) response: a 2xx body is a chat.completion object
 * (choices[index 0].message.content / refusal / tool_calls, finish_reason, usage); any other
 * status, or a body with a top-level "error", gives LLMW_OPENAI_ERROR with the error object
 * when the body has one. body need not be NUL-terminated. limits as for the stream
 * (max_event_bytes unused: the HTTP client caps the body).
 * @ownership *out is overwritten and then owned by the caller. */
void llmw_openai_parse_body(long http_status, const void *body, size_t len,
                            const struct llmw_openai_limits *limits,
                            struct llmw_openai_result *out);

/* Frees what r holds and zeroes it. NULL is a no-op, and so is cleaning up twice. */
void llmw_openai_result_cleanup(struct llmw_openai_result *r);

/* "answer", "tool_calls", "error", "truncated", "malformed", "too_large", "pending". */
const char *llmw_openai_outcome_name(enum llmw_openai_outcome outcome);

/* The ab_err a result stands for, for the caller's retry policy and reports:
 * ANSWER and TOOL_CALLS give AB_OK (whether tools are supported is the caller's call);
 * ERROR by status: 401 → AB_ERR_UNAUTHORIZED, 403 → AB_ERR_FORBIDDEN, 404 →
 * AB_ERR_NOT_FOUND, 408 → AB_ERR_TIMEOUT, 413 → AB_ERR_TOO_LARGE, 429 →
 * AB_ERR_RATE_LIMITED, other 4xx → AB_ERR_INVALID, 5xx → AB_ERR_UPSTREAM, and code
 * "insufficient_quota" (a 429 no waiting fixes) → AB_ERR_FORBIDDEN; an error object in a
 * stream, a 2xx body or under another status
 * by its type/code (invalid_request_error → INVALID, authentication_error → UNAUTHORIZED,
 * rate limits → RATE_LIMITED), else AB_ERR_UPSTREAM;
 * TRUNCATED and MALFORMED → AB_ERR_UPSTREAM; TOO_LARGE → AB_ERR_TOO_LARGE;
 * PENDING → AB_ERR_INTERNAL. */
enum ab_err llmw_openai_result_err(const struct llmw_openai_result *r);

#endif
