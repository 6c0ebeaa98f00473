/* The chat-completion result assembler (see openai_stream.h for the outcomes and why they
 * exist). One assembler serves both shapes: a streamed chunk's choices[].delta and a whole
 * body's choices[].message carry the same fields, so apply_message reads either, and the
 * stream only adds the SSE framing, [DONE], and the question of how the stream ended. */
#include "services/llm-worker/openai_stream.h"

#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "services/llm-worker/sse.h"

/* Length and capacity of a growing NUL-terminated heap string held in the result. */
struct grow {
    size_t len, cap;
};

struct tool_grow {
    struct grow name, arguments;
};

struct assembler {
    struct llmw_openai_limits limits;
    struct llmw_openai_result r;
    struct grow content, refusal;
    struct tool_grow *tool_grow; /* parallel to r.tool_calls */
    size_t tool_slots;           /* allocated entries of both arrays */
    size_t tool_bytes;
    bool streaming;
    int64_t now_ms; /* the time of the feed being parsed */
};

struct llmw_openai_stream {
    struct assembler a;
    struct llmw_sse_parser *sse;
    size_t bytes; /* fed so far, to tell an empty stream in the detail */
};

static void *xrealloc(void *p, size_t n)
{
    void *grown = realloc(p, n);
    if (grown == NULL)
        abort(); /* util.h's policy: out of memory ends the process */
    return grown;
}

static void append(char **s, struct grow *g, const char *src, size_t n)
{
    if (*s == NULL || g->len + n + 1 > g->cap) {
        size_t cap = g->cap ? g->cap : 64;
        while (cap < g->len + n + 1)
            cap *= 2;
        *s = xrealloc(*s, cap);
        g->cap = cap;
    }
    memcpy(*s + g->len, src, n);
    g->len += n;
    (*s)[g->len] = '\0';
}

/* A copy of s cut to at most cap bytes, backing off to the start of a UTF-8 sequence so the
 * copy stays valid UTF-8 (jansson only hands out valid UTF-8). */
static char *dup_capped(const char *s, size_t len, size_t cap)
{
    if (len > cap) {
        len = cap;
        while (len > 0 && ((unsigned char)s[len] & 0xC0) == 0x80)
            len--;
    }
    char *copy = xrealloc(NULL, len + 1);
    memcpy(copy, s, len);
    copy[len] = '\0';
    return copy;
}

/* Plain text from the network (an "event: error" whose data is not JSON), kept for logs and
 * reports: cut to cap and made valid UTF-8 (every byte >= 0x80 becomes '?' when it is not),
 * so that it can go into a JSON event later. NUL ends it. */
static char *dup_text(const char *s, size_t len, size_t cap)
{
    char *copy = dup_capped(s, strnlen(s, len), cap);
    json_t *probe = json_string(copy); /* NULL when copy is not valid UTF-8 */
    if (probe == NULL)
        for (char *c = copy; *c != '\0'; c++)
            if ((unsigned char)*c >= 0x80)
                *c = '?';
    json_decref(probe);
    return copy;
}

static char *dup_json_string(const json_t *v, size_t cap)
{
    return dup_capped(json_string_value(v), json_string_length(v), cap);
}

/* Settles the outcome once: the first ending found is the one reported. */
__attribute__((format(printf, 3, 4))) static void settle(struct assembler *a,
                                                         enum llmw_openai_outcome outcome,
                                                         const char *fmt, ...)
{
    if (a->r.outcome != LLMW_OPENAI_PENDING)
        return;
    a->r.outcome = outcome;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(a->r.detail, sizeof(a->r.detail), fmt, ap);
    va_end(ap);
}

static bool settled(const struct assembler *a)
{
    return a->r.outcome != LLMW_OPENAI_PENDING;
}

/* A finished answer: tool calls win over text, because the caller must not deliver half a
 * turn as if it were the whole one. */
static void settle_complete(struct assembler *a, const char *note)
{
    const char *fr = a->r.finish_reason;
    bool tools = a->r.tool_call_count > 0 ||
                 (fr != NULL &&
                  (strcmp(fr, "tool_calls") == 0 || strcmp(fr, "function_call") == 0));
    if (tools && a->r.tool_call_count == 0) /* OpenClaw #54174: the calls were lost */
        settle(a, LLMW_OPENAI_TOOL_CALLS, "finish_reason is \"%s\" but no tool call came%s%s",
               fr, *note ? "; " : "", note);
    else if (tools)
        settle(a, LLMW_OPENAI_TOOL_CALLS, "the model asked for %zu tool call(s)%s%s",
               a->r.tool_call_count, *note ? "; " : "", note);
    else
        settle(a, LLMW_OPENAI_ANSWER, "%s", note);
}

static void assembler_init(struct assembler *a, const struct llmw_openai_limits *limits,
                           bool streaming)
{
    memset(a, 0, sizeof(*a));
    if (limits != NULL)
        a->limits = *limits;
    if (a->limits.max_event_bytes == 0)
        a->limits.max_event_bytes = LLMW_OPENAI_DEFAULT_MAX_EVENT_BYTES;
    if (a->limits.max_content_bytes == 0)
        a->limits.max_content_bytes = LLMW_OPENAI_DEFAULT_MAX_CONTENT_BYTES;
    if (a->limits.max_tool_bytes == 0)
        a->limits.max_tool_bytes = LLMW_OPENAI_DEFAULT_MAX_TOOL_BYTES;
    if (a->limits.max_tool_calls == 0)
        a->limits.max_tool_calls = LLMW_OPENAI_DEFAULT_MAX_TOOL_CALLS;
    a->streaming = streaming;
    a->r.first_token_ms = -1;
    a->r.usage = (struct llmw_openai_usage){ false, -1, -1, -1, -1, -1 };
}

/* Hands the result to *out and leaves the assembler owning nothing but its bookkeeping. */
static void assembler_take(struct assembler *a, struct llmw_openai_result *out)
{
    if (a->r.content == NULL)
        append(&a->r.content, &a->content, "", 0);
    a->r.content_len = a->content.len;
    *out = a->r;
    memset(&a->r, 0, sizeof(a->r));
    free(a->tool_grow);
    a->tool_grow = NULL;
    a->tool_slots = 0;
}

static void mark_first_token(struct assembler *a)
{
    if (a->streaming && a->r.first_token_ms < 0)
        a->r.first_token_ms = a->now_ms;
}

/* ---- error objects ---------------------------------------------------------------------- */

static void error_from_json(struct assembler *a, const json_t *err)
{
    struct llmw_openai_error *e = &a->r.error;
    const size_t cap = LLMW_OPENAI_MAX_ERROR_FIELD_BYTES;
    if (json_is_string(err)) { /* {"error": "text"}: not OpenAI's shape, but seen */
        e->message = dup_json_string(err, cap);
        return;
    }
    const json_t *v;
    if (json_is_string(v = json_object_get(err, "message")))
        e->message = dup_json_string(v, cap);
    if (json_is_string(v = json_object_get(err, "type")))
        e->type = dup_json_string(v, cap);
    if (json_is_string(v = json_object_get(err, "param")))
        e->param = dup_json_string(v, cap);
    v = json_object_get(err, "code");
    if (json_is_string(v)) {
        e->code = dup_json_string(v, cap);
    } else if (json_is_integer(v)) {
        char num[32];
        snprintf(num, sizeof(num), "%lld", (long long)json_integer_value(v));
        e->code = dup_capped(num, strlen(num), cap);
    }
}

/* The error's type, code and message for the detail line (the message is the provider's
 * words about the failure, not the conversation's content). */
static void settle_error(struct assembler *a, const char *where)
{
    const struct llmw_openai_error *e = &a->r.error;
    settle(a, LLMW_OPENAI_ERROR, "%s: type %s, code %s: %.160s", where,
           e->type ? e->type : "-", e->code ? e->code : "-",
           e->message ? e->message : "(no message)");
}

/* The value of a top-level "error" when it is an error (an object or a string), else NULL. */
static const json_t *error_member(const json_t *root)
{
    const json_t *err = json_object_get(root, "error");
    return json_is_object(err) || json_is_string(err) ? err : NULL;
}

/* ---- choices, deltas and messages ---------------------------------------------------------- */

static void parse_usage(struct assembler *a, const json_t *u)
{
    struct llmw_openai_usage *us = &a->r.usage;
    const json_t *v;
    us->present = true;
    if (json_is_integer(v = json_object_get(u, "prompt_tokens")))
        us->prompt_tokens = json_integer_value(v);
    if (json_is_integer(v = json_object_get(u, "completion_tokens")))
        us->completion_tokens = json_integer_value(v);
    if (json_is_integer(v = json_object_get(u, "total_tokens")))
        us->total_tokens = json_integer_value(v);
    if (json_is_integer(v = json_object_get(json_object_get(u, "prompt_tokens_details"),
                                            "cached_tokens")))
        us->cached_tokens = json_integer_value(v);
    if (json_is_integer(v = json_object_get(json_object_get(u, "completion_tokens_details"),
                                            "reasoning_tokens")))
        us->reasoning_tokens = json_integer_value(v);
}

/* Appends text to content or refusal, both under max_content_bytes together. */
static bool add_text(struct assembler *a, char **s, struct grow *g, const char *text, size_t n)
{
    if (n > a->limits.max_content_bytes - a->content.len - a->refusal.len) {
        settle(a, LLMW_OPENAI_TOO_LARGE, "the content is over the limit of %zu bytes",
               a->limits.max_content_bytes);
        return false;
    }
    append(s, g, text, n);
    if (n > 0)
        mark_first_token(a);
    return true;
}

/* content is a string, null, or (some compatible servers, whole bodies) an array of parts
 * {"type": "text", "text": "..."}; anything else is malformed. */
static bool add_content(struct assembler *a, const json_t *c)
{
    if (c == NULL || json_is_null(c))
        return true;
    if (json_is_string(c))
        return add_text(a, &a->r.content, &a->content, json_string_value(c),
                        json_string_length(c));
    if (json_is_array(c)) {
        size_t i;
        const json_t *part;
        json_array_foreach(c, i, part) {
            const json_t *text = json_object_get(part, "text");
            if (json_is_string(text) &&
                !add_text(a, &a->r.content, &a->content, json_string_value(text),
                          json_string_length(text)))
                return false;
        }
        return true;
    }
    settle(a, LLMW_OPENAI_MALFORMED, "content is neither a string nor null");
    return false;
}

static bool add_tool_text(struct assembler *a, char **s, struct grow *g, const json_t *v)
{
    char *dumped = NULL;
    const char *text;
    size_t n;
    bool ok = true;
    if (v == NULL || json_is_null(v))
        return true;
    if (json_is_string(v)) {
        text = json_string_value(v);
        n = json_string_length(v);
    } else if (json_is_object(v)) { /* arguments sent as an object, not as JSON text */
        dumped = json_dumps(v, JSON_COMPACT);
        if (dumped == NULL)
            abort();
        text = dumped;
        n = strlen(dumped);
    } else {
        settle(a, LLMW_OPENAI_MALFORMED, "a tool call's name or arguments is not a string");
        return false;
    }
    if (n > a->limits.max_tool_bytes - a->tool_bytes) {
        settle(a, LLMW_OPENAI_TOO_LARGE, "the tool calls are over the limit of %zu bytes",
               a->limits.max_tool_bytes);
        ok = false;
    } else {
        append(s, g, text, n);
        a->tool_bytes += n;
        mark_first_token(a);
    }
    free(dumped);
    return ok;
}

static struct llmw_openai_tool_call *new_tool_call(struct assembler *a, long long index,
                                                   size_t *slot)
{
    if (a->r.tool_call_count == a->limits.max_tool_calls) {
        settle(a, LLMW_OPENAI_TOO_LARGE, "more than %zu tool calls", a->limits.max_tool_calls);
        return NULL;
    }
    if (a->r.tool_call_count == a->tool_slots) {
        a->tool_slots = a->tool_slots ? a->tool_slots * 2 : 4;
        a->r.tool_calls = xrealloc(a->r.tool_calls, a->tool_slots * sizeof(*a->r.tool_calls));
        a->tool_grow = xrealloc(a->tool_grow, a->tool_slots * sizeof(*a->tool_grow));
    }
    *slot = a->r.tool_call_count++;
    struct llmw_openai_tool_call *tc = &a->r.tool_calls[*slot];
    memset(tc, 0, sizeof(*tc));
    memset(&a->tool_grow[*slot], 0, sizeof(a->tool_grow[*slot]));
    tc->index = index;
    tc->id = dup_capped("", 0, 0);
    tc->type = dup_capped("", 0, 0);
    append(&tc->name, &a->tool_grow[*slot].name, "", 0);
    append(&tc->arguments, &a->tool_grow[*slot].arguments, "", 0);
    return tc;
}

/* One element of delta.tool_calls (a fragment keyed by "index") or of message.tool_calls
 * (a whole call; its position stands in for a missing index). Fragments for one index are
 * joined in arrival order, except that a fragment bringing a different id starts a new call:
 * some servers (Ollama-compatible ones) reuse index 0 for parallel calls. */
static bool add_tool_call(struct assembler *a, const json_t *frag, long long position)
{
    if (!json_is_object(frag)) {
        settle(a, LLMW_OPENAI_MALFORMED, "a tool call is not an object");
        return false;
    }
    const json_t *jindex = json_object_get(frag, "index");
    const json_t *jid = json_object_get(frag, "id");
    const char *id = json_is_string(jid) && json_string_length(jid) > 0 ? json_string_value(jid)
                                                                         : NULL;
    long long index = position;
    if (jindex != NULL && !json_is_null(jindex)) {
        if (!json_is_integer(jindex) || json_integer_value(jindex) < 0) {
            settle(a, LLMW_OPENAI_MALFORMED, "a tool call's index is not a whole number >= 0");
            return false;
        }
        index = json_integer_value(jindex);
    }

    size_t slot = a->r.tool_call_count;
    for (size_t i = a->r.tool_call_count; i-- > 0;) {
        if (a->r.tool_calls[i].index == index) {
            slot = i;
            break;
        }
    }
    if (slot < a->r.tool_call_count && id != NULL && a->r.tool_calls[slot].id[0] != '\0' &&
        strcmp(a->r.tool_calls[slot].id, id) != 0)
        slot = a->r.tool_call_count; /* same index, another id: another call */
    struct llmw_openai_tool_call *tc;
    if (slot == a->r.tool_call_count) {
        tc = new_tool_call(a, index, &slot);
        if (tc == NULL)
            return false;
    } else {
        tc = &a->r.tool_calls[slot];
    }
    if (id != NULL && tc->id[0] == '\0') {
        free(tc->id);
        tc->id = dup_json_string(jid, 256);
    }
    const json_t *jtype = json_object_get(frag, "type");
    if (json_is_string(jtype)) {
        free(tc->type);
        tc->type = dup_json_string(jtype, 64);
    }
    const json_t *fn = json_object_get(frag, "function");
    if (fn == NULL || json_is_null(fn))
        return true;
    if (!json_is_object(fn)) {
        settle(a, LLMW_OPENAI_MALFORMED, "a tool call's function is not an object");
        return false;
    }
    /* tool_grow may move in new_tool_call, so it is indexed only now. */
    return add_tool_text(a, &tc->name, &a->tool_grow[slot].name, json_object_get(fn, "name")) &&
           add_tool_text(a, &tc->arguments, &a->tool_grow[slot].arguments,
                         json_object_get(fn, "arguments"));
}

/* The deprecated single function_call of older servers: one call at index 0. */
static bool add_function_call(struct assembler *a, const json_t *fc)
{
    json_t *frag = json_pack("{s:i, s:s, s:O}", "index", 0, "type", "function", "function", fc);
    if (frag == NULL)
        abort();
    bool ok = add_tool_call(a, frag, 0);
    json_decref(frag);
    return ok;
}

/* Reads a delta (stream) or a message (body). */
static bool apply_message(struct assembler *a, const json_t *m)
{
    const json_t *v;
    if (json_is_string(v = json_object_get(m, "role")) && a->r.role == NULL)
        a->r.role = dup_json_string(v, 64);
    if (!add_content(a, json_object_get(m, "content")))
        return false;
    v = json_object_get(m, "refusal");
    if (json_is_string(v) &&
        !add_text(a, &a->r.refusal, &a->refusal, json_string_value(v), json_string_length(v)))
        return false;
    v = json_object_get(m, "tool_calls");
    if (json_is_array(v)) {
        size_t i;
        const json_t *frag;
        json_array_foreach(v, i, frag) {
            if (!add_tool_call(a, frag, (long long)i))
                return false;
        }
    } else if (v != NULL && !json_is_null(v)) {
        settle(a, LLMW_OPENAI_MALFORMED, "tool_calls is not an array");
        return false;
    }
    v = json_object_get(m, "function_call");
    if (json_is_object(v) && !add_function_call(a, v))
        return false;
    return true;
}

/* Reads one chunk or body object: id, model, usage, and the choice with index 0.
 * @returns whether that choice was there (false too when the outcome was settled). */
static bool apply_object(struct assembler *a, const json_t *root)
{
    const json_t *v;
    if (a->r.id == NULL && json_is_string(v = json_object_get(root, "id")))
        a->r.id = dup_json_string(v, 256);
    if (a->r.model == NULL && json_is_string(v = json_object_get(root, "model")))
        a->r.model = dup_json_string(v, 256);
    if (json_is_object(v = json_object_get(root, "usage")))
        parse_usage(a, v);

    /* "choices" may be [] (the usage chunk), null or absent (vLLM and others). */
    const json_t *choices = json_object_get(root, "choices");
    if (choices == NULL || json_is_null(choices))
        return false;
    if (!json_is_array(choices)) {
        settle(a, LLMW_OPENAI_MALFORMED, "choices is not an array");
        return false;
    }
    const json_t *choice = NULL, *c;
    size_t i;
    json_array_foreach(choices, i, c) {
        if (!json_is_object(c)) {
            settle(a, LLMW_OPENAI_MALFORMED, "a choice is not an object");
            return false;
        }
        const json_t *idx = json_object_get(c, "index");
        if (idx == NULL || (json_is_integer(idx) && json_integer_value(idx) == 0)) {
            choice = c;
            break;
        }
    }
    if (choice == NULL)
        return false;
    const json_t *m = json_object_get(choice, a->streaming ? "delta" : "message");
    if (m != NULL && !json_is_null(m)) {
        if (!json_is_object(m)) {
            settle(a, LLMW_OPENAI_MALFORMED, "%s is not an object",
                   a->streaming ? "delta" : "message");
            return false;
        }
        if (!apply_message(a, m))
            return false;
    }
    if (json_is_string(v = json_object_get(choice, "finish_reason"))) {
        free(a->r.finish_reason);
        a->r.finish_reason = dup_json_string(v, 64);
    }
    return true;
}

/* ---- the stream --------------------------------------------------------------------------- */

static enum llmw_sse_next on_event(void *ud, const struct llmw_sse_event *ev)
{
    struct llmw_openai_stream *st = ud;
    struct assembler *a = &st->a;
    bool error_event = strcmp(ev->type, "error") == 0;

    /* Other named events (pings, vendor extensions) are not chat chunks; openai-python
     * skips them too. */
    if (!error_event && strcmp(ev->type, "message") != 0)
        return LLMW_SSE_CONTINUE;
    if (!error_event && strncmp(ev->data, "[DONE]", 6) == 0) { /* openai-python's test */
        a->r.done = true;
        settle_complete(a, a->r.finish_reason ? "" : "[DONE] came without a finish_reason");
        return LLMW_SSE_STOP;
    }
    if (ev->data_len == 0 && !error_event) /* an empty data line: a keep-alive at most */
        return LLMW_SSE_CONTINUE;
    a->r.chunks++;

    json_error_t jerr;
    json_t *root = json_loadb(ev->data, ev->data_len, 0, &jerr);
    if (error_event) {
        /* The data is an error object, or at worst plain text saying what went wrong. */
        const json_t *err = json_is_object(root) ? error_member(root) : NULL;
        if (err != NULL)
            error_from_json(a, err);
        else if (json_is_object(root))
            error_from_json(a, root);
        else if (ev->data_len > 0)
            a->r.error.message = dup_text(ev->data, ev->data_len,
                                          LLMW_OPENAI_MAX_ERROR_FIELD_BYTES);
        settle_error(a, "an error event in the stream");
    } else if (root == NULL) {
        /* Only the position: jansson's text quotes the input, which is content. */
        settle(a, LLMW_OPENAI_MALFORMED, "chunk %zu is not valid JSON (at byte %d)", a->r.chunks,
               jerr.position);
    } else if (!json_is_object(root)) {
        settle(a, LLMW_OPENAI_MALFORMED, "chunk %zu is not a JSON object", a->r.chunks);
    } else if (error_member(root) != NULL) {
        error_from_json(a, error_member(root));
        settle_error(a, "an error object in the stream");
    } else {
        apply_object(a, root);
    }
    json_decref(root);
    return settled(a) ? LLMW_SSE_STOP : LLMW_SSE_CONTINUE;
}

struct llmw_openai_stream *llmw_openai_stream_new(const struct llmw_openai_limits *limits)
{
    struct llmw_openai_stream *st = xrealloc(NULL, sizeof(*st));
    memset(st, 0, sizeof(*st));
    assembler_init(&st->a, limits, true);
    st->sse = llmw_sse_new(st->a.limits.max_event_bytes, on_event, st);
    return st;
}

void llmw_openai_stream_free(struct llmw_openai_stream *st)
{
    if (st == NULL)
        return;
    llmw_sse_free(st->sse);
    llmw_openai_result_cleanup(&st->a.r);
    free(st->a.tool_grow);
    free(st);
}

bool llmw_openai_stream_feed(struct llmw_openai_stream *st, const void *data, size_t len,
                             int64_t now_ms)
{
    struct assembler *a = &st->a;
    if (settled(a) || st->sse == NULL)
        return false;
    a->now_ms = now_ms;
    st->bytes += len;
    char errstr[160];
    if (llmw_sse_feed(st->sse, data, len, errstr, sizeof(errstr)) != AB_OK)
        settle(a, LLMW_OPENAI_TOO_LARGE, "%s", errstr);
    return !settled(a);
}

const struct llmw_openai_result *llmw_openai_stream_peek(const struct llmw_openai_stream *st)
{
    return &st->a.r;
}

void llmw_openai_stream_finish(struct llmw_openai_stream *st, struct llmw_openai_result *out)
{
    struct assembler *a = &st->a;
    if (!settled(a)) {
        bool cut = st->sse != NULL && llmw_sse_end(st->sse);
        if (a->r.finish_reason != NULL)
            settle_complete(a, "the stream ended without [DONE]");
        else if (st->bytes == 0)
            settle(a, LLMW_OPENAI_TRUNCATED, "the stream was empty");
        else
            settle(a, LLMW_OPENAI_TRUNCATED,
                   "the stream ended after %zu chunk(s) without finish_reason or [DONE]%s",
                   a->r.chunks, cut ? ", inside an event" : "");
    }
    llmw_sse_free(st->sse);
    st->sse = NULL;
    assembler_take(a, out);
}

/* ---- a whole body ----------------------------------------------------------------------- */

void llmw_openai_parse_body(long http_status, const void *body, size_t len,
                            const struct llmw_openai_limits *limits,
                            struct llmw_openai_result *out)
{
    struct assembler a;
    assembler_init(&a, limits, false);
    a.r.http_status = http_status;
    json_error_t jerr;
    json_t *root = body != NULL && len > 0 ? json_loadb(body, len, 0, &jerr) : NULL;
    const json_t *err = json_is_object(root) ? error_member(root) : NULL;

    if (http_status < 200 || http_status > 299) {
        if (err != NULL)
            error_from_json(&a, err);
        char where[48];
        snprintf(where, sizeof(where), "HTTP %ld%s", http_status,
                 err ? "" : " without an error object");
        settle_error(&a, where);
    } else if (root == NULL) {
        if (body == NULL || len == 0)
            settle(&a, LLMW_OPENAI_MALFORMED, "the body is empty");
        else
            settle(&a, LLMW_OPENAI_MALFORMED, "the body is not valid JSON (at byte %d)",
                   jerr.position);
    } else if (!json_is_object(root)) {
        settle(&a, LLMW_OPENAI_MALFORMED, "the body is not a JSON object");
    } else if (err != NULL) {
        error_from_json(&a, err);
        settle_error(&a, "an error object in a 2xx body");
    } else if (!apply_object(&a, root)) {
        settle(&a, LLMW_OPENAI_MALFORMED, "the body has no choice with index 0");
    } else {
        settle_complete(&a, "");
    }
    json_decref(root);
    assembler_take(&a, out);
}

void llmw_openai_result_cleanup(struct llmw_openai_result *r)
{
    if (r == NULL)
        return;
    free(r->id);
    free(r->model);
    free(r->role);
    free(r->content);
    free(r->refusal);
    free(r->finish_reason);
    for (size_t i = 0; i < r->tool_call_count; i++) {
        free(r->tool_calls[i].id);
        free(r->tool_calls[i].type);
        free(r->tool_calls[i].name);
        free(r->tool_calls[i].arguments);
    }
    free(r->tool_calls);
    free(r->error.message);
    free(r->error.type);
    free(r->error.code);
    free(r->error.param);
    memset(r, 0, sizeof(*r));
}

const char *llmw_openai_outcome_name(enum llmw_openai_outcome outcome)
{
    switch (outcome) {
    case LLMW_OPENAI_PENDING:
        return "pending";
    case LLMW_OPENAI_ANSWER:
        return "answer";
    case LLMW_OPENAI_TOOL_CALLS:
        return "tool_calls";
    case LLMW_OPENAI_ERROR:
        return "error";
    case LLMW_OPENAI_TRUNCATED:
        return "truncated";
    case LLMW_OPENAI_MALFORMED:
        return "malformed";
    case LLMW_OPENAI_TOO_LARGE:
        return "too_large";
    }
    return "unknown";
}

static bool is(const char *s, const char *want)
{
    return s != NULL && strcmp(s, want) == 0;
}

static enum ab_err error_err(const struct llmw_openai_result *r)
{
    const struct llmw_openai_error *e = &r->error;
    long s = r->http_status;
    if (is(e->code, "insufficient_quota"))
        return AB_ERR_FORBIDDEN; /* a 429 that no amount of waiting fixes */
    if (s == 401)
        return AB_ERR_UNAUTHORIZED;
    if (s == 403)
        return AB_ERR_FORBIDDEN;
    if (s == 404)
        return AB_ERR_NOT_FOUND;
    if (s == 408)
        return AB_ERR_TIMEOUT;
    if (s == 413)
        return AB_ERR_TOO_LARGE;
    if (s == 429)
        return AB_ERR_RATE_LIMITED;
    if (s >= 400 && s <= 499)
        return AB_ERR_INVALID;
    if (s >= 500)
        return AB_ERR_UPSTREAM;
    /* In a stream or a 2xx body only the object says what kind of failure it is. */
    if (is(e->type, "invalid_request_error") || is(e->code, "context_length_exceeded"))
        return AB_ERR_INVALID;
    if (is(e->type, "authentication_error") || is(e->code, "invalid_api_key"))
        return AB_ERR_UNAUTHORIZED;
    if (is(e->type, "rate_limit_error") || is(e->code, "rate_limit_exceeded"))
        return AB_ERR_RATE_LIMITED;
    return AB_ERR_UPSTREAM;
}

enum ab_err llmw_openai_result_err(const struct llmw_openai_result *r)
{
    switch (r->outcome) {
    case LLMW_OPENAI_ANSWER:
    case LLMW_OPENAI_TOOL_CALLS:
        return AB_OK;
    case LLMW_OPENAI_ERROR:
        return error_err(r);
    case LLMW_OPENAI_TRUNCATED:
    case LLMW_OPENAI_MALFORMED:
        return AB_ERR_UPSTREAM;
    case LLMW_OPENAI_TOO_LARGE:
        return AB_ERR_TOO_LARGE;
    case LLMW_OPENAI_PENDING:
        break;
    }
    return AB_ERR_INTERNAL;
}
