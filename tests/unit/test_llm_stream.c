/* Tests for services/llm-worker/sse (the Server-Sent Events parser) and
 * services/llm-worker/openai_stream (the chat-completion result assembler): a recorded-style
 * OpenAI stream cut at every byte position and with every line-end style, each way a stream
 * can end (answer, tool calls, error object or event, cut without [DONE], malformed, over a
 * cap, empty), whole JSON bodies and HTTP errors, and random splits and mutations that must
 * never crash (run under ASan: every piece is fed from a buffer of exactly its length). */
#include "test.h"

#include "services/llm-worker/openai_stream.h"
#include "services/llm-worker/sse.h"

#include <stdint.h>

/* ---- helpers ------------------------------------------------------------------------------ */

/* Collects events as "[type|data|id]" (data's NULs shown as '0'), so a whole run compares
 * as one string. */
struct collector {
    char log[8192];
    size_t len;
    int events;
    int stop_after; /* 0: never stop */
};

static enum llmw_sse_next collect(void *ud, const struct llmw_sse_event *ev)
{
    struct collector *c = ud;
    char data[2048];
    size_t n = ev->data_len < sizeof(data) - 1 ? ev->data_len : sizeof(data) - 1;
    for (size_t i = 0; i < n; i++)
        data[i] = ev->data[i] == '\0' ? '0' : ev->data[i];
    data[n] = '\0';
    CHECK(ev->data[ev->data_len] == '\0');
    int w = snprintf(c->log + c->len, sizeof(c->log) - c->len, "[%s|%s|%s]", ev->type, data,
                     ev->id);
    if (w > 0 && (size_t)w < sizeof(c->log) - c->len)
        c->len += (size_t)w;
    c->events++;
    return c->stop_after && c->events >= c->stop_after ? LLMW_SSE_STOP : LLMW_SSE_CONTINUE;
}

/* Feeds data[0..len) from a heap copy of exactly that length (ASan sees any over-read). */
static enum ab_err sse_feed_exact(struct llmw_sse_parser *p, const char *data, size_t len)
{
    char *copy = malloc(len ? len : 1);
    REQUIRE(copy != NULL);
    memcpy(copy, data, len);
    enum ab_err err = llmw_sse_feed(p, copy, len, NULL, 0);
    free(copy);
    return err;
}

/* Parses text whole, or in pieces of `step` bytes (0: whole); returns the log, and whether
 * the end found a cut event in *cut (may be NULL). */
static const char *sse_run(struct collector *c, const char *text, size_t len, size_t step,
                           size_t max, bool *cut)
{
    memset(c, 0, sizeof(*c));
    struct llmw_sse_parser *p = llmw_sse_new(max, collect, c);
    if (step == 0)
        step = len ? len : 1;
    for (size_t off = 0; off < len; off += step)
        CHECK_INT_EQ(sse_feed_exact(p, text + off, len - off < step ? len - off : step), AB_OK);
    bool was_cut = llmw_sse_end(p);
    if (cut != NULL)
        *cut = was_cut;
    llmw_sse_free(p);
    return c->log;
}

#define SSE_LOG(c, text) sse_run((c), (text), sizeof(text) - 1, 0, 0, NULL)

/* Replaces every LF of text by eol ("\r\n" or "\r"). @ownership the caller frees. */
static char *with_line_ends(const char *text, const char *eol, size_t *out_len)
{
    size_t n = strlen(text), extra = 0, eol_len = strlen(eol);
    for (size_t i = 0; i < n; i++)
        extra += text[i] == '\n' ? eol_len - 1 : 0;
    char *out = malloc(n + extra + 1);
    REQUIRE(out != NULL);
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        if (text[i] == '\n') {
            memcpy(out + k, eol, eol_len);
            k += eol_len;
        } else {
            out[k++] = text[i];
        }
    }
    out[k] = '\0';
    *out_len = k;
    return out;
}

/* Feeds a stream to an assembler in pieces ending at cuts[0] < cuts[1] < ... (then the
 * rest), piece i at time 1000 + i, each from an exact-length copy; then finishes. */
static void oa_run_cuts(const char *s, size_t len, const size_t *cuts, size_t ncuts,
                        const struct llmw_openai_limits *lim, struct llmw_openai_result *out)
{
    struct llmw_openai_stream *st = llmw_openai_stream_new(lim);
    size_t from = 0;
    for (size_t i = 0; i <= ncuts; i++) {
        size_t to = i < ncuts ? cuts[i] : len;
        char *copy = malloc(to - from ? to - from : 1);
        REQUIRE(copy != NULL);
        memcpy(copy, s + from, to - from);
        bool more = llmw_openai_stream_feed(st, copy, to - from, 1000 + (int64_t)i);
        free(copy);
        from = to;
        if (!more)
            break;
    }
    llmw_openai_stream_finish(st, out);
    llmw_openai_stream_free(st);
}

static void oa_run(const char *s, const struct llmw_openai_limits *lim,
                   struct llmw_openai_result *out)
{
    oa_run_cuts(s, strlen(s), NULL, 0, lim, out);
}

/* Feeds one byte at a time, byte i at time i. */
static void oa_run_bytewise(const char *s, size_t len, struct llmw_openai_result *out)
{
    struct llmw_openai_stream *st = llmw_openai_stream_new(NULL);
    for (size_t i = 0; i < len; i++) {
        char *b = malloc(1);
        REQUIRE(b != NULL);
        *b = s[i];
        bool more = llmw_openai_stream_feed(st, b, 1, (int64_t)i);
        free(b);
        if (!more)
            break;
    }
    llmw_openai_stream_finish(st, out);
    llmw_openai_stream_free(st);
}

static void oa_body(long status, const char *body, const struct llmw_openai_limits *lim,
                    struct llmw_openai_result *out)
{
    size_t len = strlen(body);
    char *copy = malloc(len ? len : 1);
    REQUIRE(copy != NULL);
    memcpy(copy, body, len);
    llmw_openai_parse_body(status, copy, len, lim, out);
    free(copy);
}

/* ---- a recorded-style OpenAI stream ------------------------------------------------------- */

/* Shaped like gpt-4o-mini's answer with stream_options.include_usage: a role chunk with
 * content "", content chunks (raw UTF-8, \u escapes, a surrogate pair, escaped quotes and
 * newlines), obfuscation padding, a final delta {} with finish_reason, then the usage
 * chunk with "choices": [] and [DONE]. */
#define OA_HEAD                                                                            \
    "data: {\"id\":\"chatcmpl-B1xQe7pKk2vYt9Lr4mN8sW3aZ0cD\","                              \
    "\"object\":\"chat.completion.chunk\",\"created\":1740000000,"                         \
    "\"model\":\"gpt-4o-mini-2024-07-18\",\"service_tier\":\"default\","                  \
    "\"system_fingerprint\":\"fp_06737a9306\","
#define OA_DELTA(delta, obf)                                                               \
    OA_HEAD "\"choices\":[{\"index\":0,\"delta\":" delta                                   \
            ",\"logprobs\":null,\"finish_reason\":null}],\"usage\":null,\"obfuscation\":\"" obf \
            "\"}\n\n"

static const char recorded[] =
    OA_DELTA("{\"role\":\"assistant\",\"content\":\"\",\"refusal\":null}", "Yq3")
    OA_DELTA("{\"content\":\"Hello\"}", "k2Fz9")
    OA_DELTA("{\"content\":\"!\"}", "p0Qw1xT")
    OA_DELTA("{\"content\":\" The\"}", "a")
    OA_DELTA("{\"content\":\" caf\\u00e9\"}", "Zz")
    OA_DELTA("{\"content\":\" is open\"}", "M")
    OA_DELTA("{\"content\":\" \\u2014 \"}", "uu7")
    OA_DELTA("{\"content\":\"日本語\"}", "q")
    OA_DELTA("{\"content\":\" \\ud83d\\udc4b\"}", "B8")
    OA_DELTA("{\"content\":\"\\n\\nSay \"}", "x")
    OA_DELTA("{\"content\":\"\\\"hi\\\".\"}", "r5")
    OA_HEAD "\"choices\":[{\"index\":0,\"delta\":{},\"logprobs\":null,\"finish_reason\":\"stop\"}],"
            "\"usage\":null,\"obfuscation\":\"Hn\"}\n\n"
    OA_HEAD "\"choices\":[],\"usage\":{\"prompt_tokens\":19,\"completion_tokens\":13,"
            "\"total_tokens\":32,\"prompt_tokens_details\":{\"cached_tokens\":0,"
            "\"audio_tokens\":0},"
            "\"completion_tokens_details\":{\"reasoning_tokens\":0,\"audio_tokens\":0,"
            "\"accepted_prediction_tokens\":0,\"rejected_prediction_tokens\":0}},"
            "\"obfuscation\":\"Qm2sd\"}\n\n"
    "data: [DONE]\n\n";

static const char recorded_content[] =
    "Hello! The caf\xc3\xa9 is open \xe2\x80\x94 日本語 \xf0\x9f\x91\x8b\n\nSay \"hi\".";

static void check_recorded(const struct llmw_openai_result *r)
{
    CHECK_STR_EQ(llmw_openai_outcome_name(r->outcome), "answer");
    CHECK_INT_EQ(r->outcome, LLMW_OPENAI_ANSWER);
    CHECK_STR_EQ(r->content, recorded_content);
    CHECK_INT_EQ(r->content_len, strlen(recorded_content));
    CHECK_STR_EQ(r->finish_reason, "stop");
    CHECK_STR_EQ(r->role, "assistant");
    CHECK_STR_EQ(r->id, "chatcmpl-B1xQe7pKk2vYt9Lr4mN8sW3aZ0cD");
    CHECK_STR_EQ(r->model, "gpt-4o-mini-2024-07-18");
    CHECK(r->refusal == NULL);
    CHECK(r->done);
    CHECK_INT_EQ(r->chunks, 13);
    CHECK(r->usage.present);
    CHECK_INT_EQ(r->usage.prompt_tokens, 19);
    CHECK_INT_EQ(r->usage.completion_tokens, 13);
    CHECK_INT_EQ(r->usage.total_tokens, 32);
    CHECK_INT_EQ(r->usage.cached_tokens, 0);
    CHECK_INT_EQ(r->usage.reasoning_tokens, 0);
    CHECK_INT_EQ(r->tool_call_count, 0);
    CHECK_INT_EQ(llmw_openai_result_err(r), AB_OK);
    CHECK_STR_EQ(r->detail, "");
}

/* The offset just past the blank line that ends the event carrying "Hello". */
static size_t hello_event_end(const char *s)
{
    const char *hello = strstr(s, "\"Hello\"");
    REQUIRE(hello != NULL);
    const char *end = strstr(hello, "\n\n");
    if (end != NULL)
        return (size_t)(end - s) + 2;
    end = strstr(hello, "\r\r");
    REQUIRE(end != NULL);
    return (size_t)(end - s) + 2;
}

/* ---- SSE ---------------------------------------------------------------------------------- */

TEST(sse_one_event_with_each_line_end)
{
    struct collector c;
    CHECK_STR_EQ(SSE_LOG(&c, "data: a\n\n"), "[message|a|]");
    CHECK_STR_EQ(SSE_LOG(&c, "data: a\r\n\r\n"), "[message|a|]");
    CHECK_STR_EQ(SSE_LOG(&c, "data: a\r\r"), "[message|a|]");
    CHECK_STR_EQ(SSE_LOG(&c, "data: a\r\n\n"), "[message|a|]");
    CHECK_STR_EQ(SSE_LOG(&c, "data: a\n\r\n"), "[message|a|]");
    CHECK_STR_EQ(SSE_LOG(&c, "data: a\r\ndata: b\rdata: c\n\r"), "[message|a\nb\nc|]");
    /* "\n\r" is two line ends (LF, then CR), not one: the event ends there. */
    CHECK_STR_EQ(SSE_LOG(&c, "data: a\n\rdata: b\n\n"), "[message|a|][message|b|]");
}

TEST(sse_crlf_split_between_chunks_is_one_line_end)
{
    struct collector c;
    memset(&c, 0, sizeof(c));
    struct llmw_sse_parser *p = llmw_sse_new(0, collect, &c);
    CHECK_INT_EQ(sse_feed_exact(p, "data: a\r", 8), AB_OK);
    CHECK_INT_EQ(sse_feed_exact(p, "\ndata: b\r", 9), AB_OK);
    CHECK_INT_EQ(c.events, 0); /* a lone LF taken as a blank line would have sent "a" */
    CHECK_INT_EQ(sse_feed_exact(p, "\n\r", 2), AB_OK);
    CHECK_INT_EQ(sse_feed_exact(p, "\n", 1), AB_OK);
    CHECK_STR_EQ(c.log, "[message|a\nb|]");
    CHECK(!llmw_sse_end(p));
    llmw_sse_free(p);
}

TEST(sse_multi_line_data_is_joined_with_lf)
{
    struct collector c;
    CHECK_STR_EQ(SSE_LOG(&c, "data: a\ndata: b\ndata:\ndata: c\n\n"), "[message|a\nb\n\nc|]");
    CHECK_STR_EQ(SSE_LOG(&c, "data: {\"x\":\ndata: 1}\n\n"), "[message|{\"x\":\n1}|]");
    CHECK_STR_EQ(SSE_LOG(&c, "data: a\n\ndata: b\n\n"), "[message|a|][message|b|]");
    CHECK_STR_EQ(SSE_LOG(&c, "data: a\n\n\n\n\ndata: b\n\n"), "[message|a|][message|b|]");
}

TEST(sse_comments_are_ignored_anywhere)
{
    struct collector c;
    CHECK_STR_EQ(SSE_LOG(&c, ": keep-alive\n\n"), "");
    CHECK_INT_EQ(c.events, 0);
    CHECK_STR_EQ(SSE_LOG(&c, ":\n: ping\r\ndata: a\n: between\ndata: b\n:x\n\n"),
                 "[message|a\nb|]");
    CHECK_STR_EQ(SSE_LOG(&c, ": OPENROUTER PROCESSING\n\ndata: a\n\n"), "[message|a|]");
}

TEST(sse_one_space_after_the_colon_is_stripped)
{
    struct collector c;
    CHECK_STR_EQ(SSE_LOG(&c, "data:a\n\n"), "[message|a|]");
    CHECK_STR_EQ(SSE_LOG(&c, "data:  a\n\n"), "[message| a|]");
    CHECK_STR_EQ(SSE_LOG(&c, "data: \n\n"), "[message||]");
    CHECK_STR_EQ(SSE_LOG(&c, "data:\ta\n\n"), "[message|\ta|]");
    CHECK_STR_EQ(SSE_LOG(&c, "data: a: b\n\n"), "[message|a: b|]");
    CHECK_STR_EQ(SSE_LOG(&c, "data: a \n\n"), "[message|a |]");
    CHECK_STR_EQ(SSE_LOG(&c, "Data: a\n\ndata : b\n\n"), ""); /* names are exact */
}

TEST(sse_field_without_colon_has_an_empty_value)
{
    struct collector c;
    CHECK_STR_EQ(SSE_LOG(&c, "data\n\n"), "[message||]");
    CHECK_STR_EQ(SSE_LOG(&c, "data\ndata\n\n"), "[message|\n|]");
    CHECK_STR_EQ(SSE_LOG(&c, "event\ndata: x\n\n"), "[message|x|]"); /* "" means message */
    CHECK_STR_EQ(SSE_LOG(&c, "foo\nbar: baz\ndata: x\n\n"), "[message|x|]");
}

TEST(sse_event_type_resets_and_id_persists)
{
    struct collector c;
    CHECK_STR_EQ(SSE_LOG(&c, "event: error\nid: 7\ndata: x\n\ndata: y\n\n"),
                 "[error|x|7][message|y|7]");
    /* An event without data is not dispatched and its type does not carry over. */
    CHECK_STR_EQ(SSE_LOG(&c, "event: foo\n\ndata: x\n\n"), "[message|x|]");
    /* An empty id resets it; an id containing NUL is ignored. */
    CHECK_STR_EQ(SSE_LOG(&c, "id: 1\ndata: a\n\nid\ndata: b\n\n"), "[message|a|1][message|b|]");
    static const char nul_id[] = "id: 1\ndata: a\n\nid: 2\0x\ndata: b\n\n";
    CHECK_STR_EQ(sse_run(&c, nul_id, sizeof(nul_id) - 1, 0, 0, NULL),
                 "[message|a|1][message|b|1]");
    /* The last event field of an event wins. */
    CHECK_STR_EQ(SSE_LOG(&c, "event: a\nevent: b\ndata: x\n\n"), "[b|x|]");
}

TEST(sse_data_may_hold_nul_bytes)
{
    static const char text[] = "data: a\0b\n\n";
    struct collector c;
    CHECK_STR_EQ(sse_run(&c, text, sizeof(text) - 1, 0, 0, NULL), "[message|a0b|]");
}

TEST(sse_bom_is_skipped_once_at_the_start)
{
    struct collector c;
    CHECK_STR_EQ(SSE_LOG(&c, "\xEF\xBB\xBF" "data: a\n\n"), "[message|a|]");
    static const char text[] = "\xEF\xBB\xBF" "data: a\n\n";
    CHECK_STR_EQ(sse_run(&c, text, sizeof(text) - 1, 1, 0, NULL), "[message|a|]");
    CHECK_STR_EQ(sse_run(&c, text, sizeof(text) - 1, 2, 0, NULL), "[message|a|]");
    /* A second BOM is part of the first field's name, which is then unknown. */
    CHECK_STR_EQ(SSE_LOG(&c, "\xEF\xBB\xBF\xEF\xBB\xBF" "data: a\n\ndata: b\n\n"),
                 "[message|b|]");
    /* A BOM later in the stream is data. */
    CHECK_STR_EQ(SSE_LOG(&c, "data: a\n\n\xEF\xBB\xBF" "data: b\n\n"), "[message|a|]");
    /* Bytes that start like a BOM but are not one are kept, even split byte by byte. */
    static const char not_bom[] = "\xEF\xBB" "data: a\n\ndata: b\n\n";
    CHECK_STR_EQ(sse_run(&c, not_bom, sizeof(not_bom) - 1, 1, 0, NULL), "[message|b|]");
    static const char utf8_first[] = "data: \xEF\xBB\xBF\n\n";
    CHECK_STR_EQ(sse_run(&c, utf8_first, sizeof(utf8_first) - 1, 1, 0, NULL),
                 "[message|\xEF\xBB\xBF|]");
    bool cut = false;
    sse_run(&c, "\xEF\xBB", 2, 1, 0, &cut);
    CHECK(cut);
    sse_run(&c, "\xEF\xBB\xBF", 3, 1, 0, &cut);
    CHECK(!cut);
}

TEST(sse_retry_takes_digits_only)
{
    struct collector c;
    memset(&c, 0, sizeof(c));
    struct llmw_sse_parser *p = llmw_sse_new(0, collect, &c);
    CHECK_INT_EQ(llmw_sse_retry_ms(p), -1);
    CHECK_INT_EQ(sse_feed_exact(p, "retry: 1500\n", 12), AB_OK);
    CHECK_INT_EQ(llmw_sse_retry_ms(p), 1500);
    CHECK_INT_EQ(sse_feed_exact(p, "retry: 15x\nretry: -3\nretry:\n", 28), AB_OK);
    CHECK_INT_EQ(llmw_sse_retry_ms(p), 1500);
    CHECK_INT_EQ(sse_feed_exact(p, "retry: 99999999999999999999\n", 28), AB_OK);
    CHECK_INT_EQ(llmw_sse_retry_ms(p), 1500);
    CHECK_INT_EQ(c.events, 0);
    llmw_sse_free(p);
}

TEST(sse_end_tells_a_cut_event)
{
    struct collector c;
    bool cut = false;
    CHECK_STR_EQ(sse_run(&c, "data: a", 7, 0, 0, &cut), "");
    CHECK(cut);
    CHECK_STR_EQ(sse_run(&c, "data: a\n", 8, 0, 0, &cut), "");
    CHECK(cut);
    CHECK_STR_EQ(sse_run(&c, "data: a\n\ndata: b\r\n", 18, 3, 0, &cut), "[message|a|]");
    CHECK(cut);
    sse_run(&c, "data: a\n\n", 9, 0, 0, &cut);
    CHECK(!cut);
    sse_run(&c, "", 0, 0, 0, &cut);
    CHECK(!cut);
    sse_run(&c, ": comment without end", 21, 0, 0, &cut);
    CHECK(!cut);
    sse_run(&c, "event: x\n", 9, 0, 0, &cut); /* no data: nothing would be dispatched */
    CHECK(!cut);
}

TEST(sse_callback_can_stop_the_parser)
{
    struct collector c;
    memset(&c, 0, sizeof(c));
    c.stop_after = 1;
    struct llmw_sse_parser *p = llmw_sse_new(0, collect, &c);
    CHECK_INT_EQ(sse_feed_exact(p, "data: a\n\ndata: b\n\n", 18), AB_OK);
    CHECK_INT_EQ(sse_feed_exact(p, "data: c\n\n", 9), AB_OK);
    CHECK_STR_EQ(c.log, "[message|a|]");
    CHECK(!llmw_sse_end(p));
    llmw_sse_free(p);
}

TEST(sse_oversized_event_is_an_error_not_growth)
{
    char big[200];
    memset(big, 'x', sizeof(big));
    memcpy(big, "data: ", 6);
    struct collector c;
    memset(&c, 0, sizeof(c));
    struct llmw_sse_parser *p = llmw_sse_new(64, collect, &c);
    char errstr[128] = "";
    CHECK_INT_EQ(llmw_sse_feed(p, big, sizeof(big), errstr, sizeof(errstr)), AB_ERR_TOO_LARGE);
    CHECK_STR_CONTAINS(errstr, "64 bytes");
    /* Failed for good. */
    CHECK_INT_EQ(llmw_sse_feed(p, "\n\ndata: a\n\n", 11, NULL, 0), AB_ERR_TOO_LARGE);
    CHECK_INT_EQ(c.events, 0);
    llmw_sse_free(p);

    /* Many small data lines count together. */
    memset(&c, 0, sizeof(c));
    p = llmw_sse_new(64, collect, &c);
    enum ab_err err = AB_OK;
    for (int i = 0; i < 20 && err == AB_OK; i++)
        err = sse_feed_exact(p, "data: 12345\n", 12);
    CHECK_INT_EQ(err, AB_ERR_TOO_LARGE);
    llmw_sse_free(p);

    /* A line of exactly the limit is fine. */
    char exact[80];
    memset(exact, 'y', sizeof(exact));
    memcpy(exact, "data:", 5);
    exact[64] = '\n';
    exact[65] = '\n';
    memset(&c, 0, sizeof(c));
    p = llmw_sse_new(64, collect, &c);
    CHECK_INT_EQ(sse_feed_exact(p, exact, 66), AB_OK);
    CHECK_INT_EQ(c.events, 1);
    llmw_sse_free(p);

    /* Comments are not held, however long. */
    memset(&c, 0, sizeof(c));
    p = llmw_sse_new(64, collect, &c);
    CHECK_INT_EQ(sse_feed_exact(p, ":", 1), AB_OK);
    for (int i = 0; i < 100; i++)
        CHECK_INT_EQ(sse_feed_exact(p, big, sizeof(big)), AB_OK);
    CHECK_INT_EQ(sse_feed_exact(p, "\ndata: ok\n\n", 11), AB_OK);
    CHECK_STR_EQ(c.log, "[message|ok|]");
    llmw_sse_free(p);
}

/* The same events whatever the pieces: whole, every 2-piece split, every 3-piece split,
 * and one byte at a time. */
TEST(sse_every_split_gives_the_same_events)
{
    static const char text[] = "\xEF\xBB\xBF: hi\r\nevent: delta\r\nid: 42\r\ndata: caf\xc3\xa9\r\n"
                               "data:\r\ndata\ndata:  two\n\n: x\rretry: 9\r\n\r\n"
                               "data: [DONE]\r\n\r\n";
    const char *want = "[delta|caf\xc3\xa9\n\n\n two|42][message|[DONE]|42]";
    const size_t len = sizeof(text) - 1;
    struct collector c;
    CHECK_STR_EQ(sse_run(&c, text, len, 0, 0, NULL), want);
    CHECK_STR_EQ(sse_run(&c, text, len, 1, 0, NULL), want);
    for (size_t i = 0; i <= len; i++) {
        for (size_t j = i; j <= len; j++) {
            memset(&c, 0, sizeof(c));
            struct llmw_sse_parser *p = llmw_sse_new(0, collect, &c);
            CHECK_INT_EQ(sse_feed_exact(p, text, i), AB_OK);
            CHECK_INT_EQ(sse_feed_exact(p, text + i, j - i), AB_OK);
            CHECK_INT_EQ(sse_feed_exact(p, text + j, len - j), AB_OK);
            CHECK(!llmw_sse_end(p));
            if (strcmp(c.log, want) != 0)
                ab_test_fail(__FILE__, __LINE__, "cut at %zu, %zu: %s", i, j, c.log);
            llmw_sse_free(p);
        }
    }
}

/* ---- the assembler: streams -------------------------------------------------------------- */

TEST(openai_recorded_stream_whole_and_byte_by_byte)
{
    struct llmw_openai_result r;
    oa_run(recorded, NULL, &r);
    check_recorded(&r);
    CHECK_INT_EQ(r.first_token_ms, 1000);
    CHECK_INT_EQ(r.http_status, 0);
    llmw_openai_result_cleanup(&r);

    oa_run_bytewise(recorded, sizeof(recorded) - 1, &r);
    check_recorded(&r);
    /* The byte that completes the "Hello" event is the first token's arrival. */
    CHECK_INT_EQ(r.first_token_ms, (int64_t)hello_event_end(recorded) - 1);
    llmw_openai_result_cleanup(&r);
    llmw_openai_result_cleanup(&r); /* twice is harmless */
}

TEST(openai_recorded_stream_cut_at_every_byte)
{
    const size_t len = sizeof(recorded) - 1;
    const size_t hello_end = hello_event_end(recorded);
    for (size_t i = 0; i <= len; i++) {
        struct llmw_openai_result r;
        oa_run_cuts(recorded, len, &i, 1, NULL, &r);
        check_recorded(&r);
        CHECK_INT_EQ(r.first_token_ms, i >= hello_end ? 1000 : 1001);
        llmw_openai_result_cleanup(&r);
    }
}

TEST(openai_recorded_stream_with_crlf_and_cr_cut_at_every_byte)
{
    const char *eols[] = { "\r\n", "\r" };
    for (size_t e = 0; e < 2; e++) {
        size_t len;
        char *text = with_line_ends(recorded, eols[e], &len);
        for (size_t i = 0; i <= len; i++) {
            struct llmw_openai_result r;
            oa_run_cuts(text, len, &i, 1, NULL, &r);
            check_recorded(&r);
            llmw_openai_result_cleanup(&r);
        }
        struct llmw_openai_result r;
        oa_run_bytewise(text, len, &r);
        check_recorded(&r);
        llmw_openai_result_cleanup(&r);
        free(text);
    }
}

TEST(openai_keepalives_bom_and_other_events_do_not_disturb)
{
    const char *text = "\xEF\xBB\xBF: keep-alive\n\n"
                       "event: ping\ndata: {\"type\":\"ping\"}\n\n"
                       "data:\n\n"
                       "data: {\"choices\":[{\"index\":1,\"delta\":{\"content\":\"other\"}},"
                       "{\"index\":0,\"delta\":{\"content\":\"a\",\"future_field\":[1]}}]}\n\n"
                       ": still there\n\n"
                       "data: {\"choices\":null,\"x_extra\":{}}\n\n"
                       "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":null}}]}\n\n"
                       "data: {\"choices\":[{\"index\":0}]}\n\n"
                       "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"b\"},"
                       "\"finish_reason\":\"length\"}]}\n\n"
                       "data: [DONE]\n\n";
    struct llmw_openai_result r;
    oa_run(text, NULL, &r);
    CHECK_INT_EQ(r.outcome, LLMW_OPENAI_ANSWER);
    CHECK_STR_EQ(r.content, "ab");
    CHECK_STR_EQ(r.finish_reason, "length");
    CHECK(!r.usage.present);
    CHECK_INT_EQ(r.usage.total_tokens, -1);
    CHECK(r.id == NULL && r.model == NULL && r.role == NULL);
    llmw_openai_result_cleanup(&r);
}

/* OpenClaw #107333 / #79897: the usage chunk comes after the finish_reason chunk and must
 * still be read. */
TEST(openai_usage_after_finish_reason_is_read)
{
    const char *text = "data: {\"id\":\"c1\",\"model\":\"openclaw\",\"choices\":[{\"index\":0,"
                       "\"delta\":{\"role\":\"assistant\",\"content\":\"ok\"},"
                       "\"finish_reason\":null}]}\n\n"
                       "data: {\"id\":\"c1\",\"choices\":[{\"index\":0,\"delta\":{},"
                       "\"finish_reason\":\"stop\"}]}\n\n"
                       "data: {\"id\":\"c1\",\"choices\":[],\"usage\":{\"prompt_tokens\":80,"
                       "\"completion_tokens\":17,\"total_tokens\":97}}\n\n"
                       "data: [DONE]\n\n";
    struct llmw_openai_result r;
    struct llmw_openai_stream *st = llmw_openai_stream_new(NULL);
    const char *usage = strstr(text, "data: {\"id\":\"c1\",\"choices\":[],");
    REQUIRE(usage != NULL);
    /* Up to the finish_reason chunk: still wanting more, nothing settled. */
    CHECK(llmw_openai_stream_feed(st, text, (size_t)(usage - text), 5));
    CHECK_INT_EQ(llmw_openai_stream_peek(st)->outcome, LLMW_OPENAI_PENDING);
    CHECK_STR_EQ(llmw_openai_stream_peek(st)->finish_reason, "stop");
    CHECK(!llmw_openai_stream_peek(st)->usage.present);
    CHECK(!llmw_openai_stream_feed(st, usage, strlen(usage), 6));
    llmw_openai_stream_finish(st, &r);
    llmw_openai_stream_free(st);
    CHECK_INT_EQ(r.outcome, LLMW_OPENAI_ANSWER);
    CHECK_STR_EQ(r.content, "ok");
    CHECK(r.usage.present);
    CHECK_INT_EQ(r.usage.prompt_tokens, 80);
    CHECK_INT_EQ(r.usage.completion_tokens, 17);
    CHECK_INT_EQ(r.usage.total_tokens, 97);
    CHECK_INT_EQ(r.usage.cached_tokens, -1);
    CHECK_INT_EQ(r.first_token_ms, 5);
    llmw_openai_result_cleanup(&r);
}

TEST(openai_first_token_is_the_first_content_not_the_role)
{
    struct llmw_openai_stream *st = llmw_openai_stream_new(NULL);
    const char *role = "data: {\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\","
                       "\"content\":\"\"}}]}\n\n";
    const char *part = "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hi\"}}]}\n";
    CHECK(llmw_openai_stream_feed(st, role, strlen(role), 100));
    CHECK_INT_EQ(llmw_openai_stream_peek(st)->first_token_ms, -1);
    CHECK(llmw_openai_stream_feed(st, part, strlen(part), 200));
    CHECK_INT_EQ(llmw_openai_stream_peek(st)->first_token_ms, -1); /* event not ended yet */
    CHECK(llmw_openai_stream_feed(st, "\n", 1, 250));
    CHECK_INT_EQ(llmw_openai_stream_peek(st)->first_token_ms, 250);
    CHECK_STR_EQ(llmw_openai_stream_peek(st)->content, "Hi");
    CHECK(llmw_openai_stream_feed(st, part, strlen(part), 300));
    CHECK(llmw_openai_stream_feed(st, "\n", 1, 300));
    CHECK_INT_EQ(llmw_openai_stream_peek(st)->first_token_ms, 250);
    struct llmw_openai_result r;
    llmw_openai_stream_finish(st, &r);
    llmw_openai_stream_free(st);
    CHECK_INT_EQ(r.outcome, LLMW_OPENAI_TRUNCATED);
    llmw_openai_result_cleanup(&r);
}

#define TC_HEAD                                                                            \
    "data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"model\":\"m\","          \
    "\"choices\":[{\"index\":0,\"delta\":"
#define TC_TAIL ",\"finish_reason\":null}]}\n\n"

static const char tool_stream[] =
    TC_HEAD "{\"role\":\"assistant\",\"content\":null,\"tool_calls\":[{\"index\":0,"
            "\"id\":\"call_abc\",\"type\":\"function\",\"function\":{\"name\":"
            "\"get_weather\",\"arguments\":\"\"}}]}" TC_TAIL
    TC_HEAD "{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":\"{\\\"loc\"}}]}" TC_TAIL
    TC_HEAD "{\"tool_calls\":[{\"index\":1,\"id\":\"call_def\",\"type\":\"function\","
            "\"function\":{\"name\":\"get_time\",\"arguments\":\"{\\\"tz\\\":\"}}]}" TC_TAIL
    TC_HEAD "{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":"
            "\"ation\\\":\\\"Par\"}}]}" TC_TAIL
    TC_HEAD "{\"tool_calls\":[{\"index\":1,\"function\":{\"arguments\":\"\\\"CET\\\"}\"}},"
            "{\"index\":0,\"function\":{\"arguments\":\"is\\\"}\"}}]}" TC_TAIL
    "data: {\"id\":\"c1\",\"choices\":[{\"index\":0,\"delta\":{},"
    "\"finish_reason\":\"tool_calls\"}]}\n\n"
    "data: {\"id\":\"c1\",\"choices\":[],\"usage\":{\"prompt_tokens\":80,\"completion_tokens\":17,"
    "\"total_tokens\":97}}\n\n"
    "data: [DONE]\n\n";

static void check_tool_stream(const struct llmw_openai_result *r)
{
    CHECK_INT_EQ(r->outcome, LLMW_OPENAI_TOOL_CALLS);
    CHECK_STR_EQ(llmw_openai_outcome_name(r->outcome), "tool_calls");
    CHECK_INT_EQ(llmw_openai_result_err(r), AB_OK);
    CHECK_STR_EQ(r->finish_reason, "tool_calls");
    CHECK_STR_EQ(r->content, "");
    REQUIRE(r->tool_call_count == 2);
    CHECK_INT_EQ(r->tool_calls[0].index, 0);
    CHECK_STR_EQ(r->tool_calls[0].id, "call_abc");
    CHECK_STR_EQ(r->tool_calls[0].type, "function");
    CHECK_STR_EQ(r->tool_calls[0].name, "get_weather");
    CHECK_STR_EQ(r->tool_calls[0].arguments, "{\"location\":\"Paris\"}");
    CHECK_INT_EQ(r->tool_calls[1].index, 1);
    CHECK_STR_EQ(r->tool_calls[1].id, "call_def");
    CHECK_STR_EQ(r->tool_calls[1].name, "get_time");
    CHECK_STR_EQ(r->tool_calls[1].arguments, "{\"tz\":\"CET\"}");
    CHECK(r->usage.present && r->usage.total_tokens == 97);
    CHECK_STR_CONTAINS(r->detail, "2 tool call(s)");
}

TEST(openai_tool_calls_split_across_chunks)
{
    const size_t len = sizeof(tool_stream) - 1;
    struct llmw_openai_result r;
    for (size_t i = 0; i <= len; i++) {
        oa_run_cuts(tool_stream, len, &i, 1, NULL, &r);
        check_tool_stream(&r);
        llmw_openai_result_cleanup(&r);
    }
    oa_run_bytewise(tool_stream, len, &r);
    check_tool_stream(&r);
    CHECK(r.first_token_ms >= 0);
    llmw_openai_result_cleanup(&r);
}

TEST(openai_tool_calls_reusing_index_0_with_new_ids_are_separate)
{
    const char *text =
        "data: {\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"id\":\"a\","
        "\"function\":{\"name\":\"f\",\"arguments\":\"{}\"}}]}}]}\n\n"
        "data: {\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"id\":\"b\","
        "\"function\":{\"name\":\"g\",\"arguments\":\"{\\\"x\\\"\"}}]}}]}\n\n"
        "data: {\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,"
        "\"function\":{\"arguments\":\":1}\"}}]}}]}\n\n"
        "data: {\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"id\":\"b\","
        "\"function\":{\"arguments\":\"\"}}]},\"finish_reason\":\"tool_calls\"}]}\n\n"
        "data: [DONE]\n\n";
    struct llmw_openai_result r;
    oa_run(text, NULL, &r);
    CHECK_INT_EQ(r.outcome, LLMW_OPENAI_TOOL_CALLS);
    REQUIRE(r.tool_call_count == 2);
    CHECK_STR_EQ(r.tool_calls[0].id, "a");
    CHECK_STR_EQ(r.tool_calls[0].name, "f");
    CHECK_STR_EQ(r.tool_calls[0].arguments, "{}");
    CHECK_STR_EQ(r.tool_calls[1].id, "b");
    CHECK_STR_EQ(r.tool_calls[1].name, "g");
    CHECK_STR_EQ(r.tool_calls[1].arguments, "{\"x\":1}");
    CHECK_STR_EQ(r.tool_calls[1].type, "");
    llmw_openai_result_cleanup(&r);
}

/* OpenClaw #54174: finish_reason says tool_calls but the calls never came. Still not an
 * answer. Also the deprecated function_call. */
TEST(openai_tool_calls_finish_without_calls_and_legacy_function_call)
{
    struct llmw_openai_result r;
    oa_run("data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"let me check\"},"
           "\"finish_reason\":\"tool_calls\"}]}\n\ndata: [DONE]\n\n",
           NULL, &r);
    CHECK_INT_EQ(r.outcome, LLMW_OPENAI_TOOL_CALLS);
    CHECK_INT_EQ(r.tool_call_count, 0);
    CHECK_STR_EQ(r.content, "let me check");
    CHECK_STR_CONTAINS(r.detail, "but no tool call came");
    llmw_openai_result_cleanup(&r);

    oa_run("data: {\"choices\":[{\"index\":0,\"delta\":{\"function_call\":{\"name\":\"f\","
           "\"arguments\":\"{\\\"a\"}}}]}\n\n"
           "data: {\"choices\":[{\"index\":0,\"delta\":{\"function_call\":"
           "{\"arguments\":\"\\\":1}\"}},"
           "\"finish_reason\":\"function_call\"}]}\n\ndata: [DONE]\n\n",
           NULL, &r);
    CHECK_INT_EQ(r.outcome, LLMW_OPENAI_TOOL_CALLS);
    REQUIRE(r.tool_call_count == 1);
    CHECK_STR_EQ(r.tool_calls[0].name, "f");
    CHECK_STR_EQ(r.tool_calls[0].arguments, "{\"a\":1}");
    CHECK_STR_EQ(r.tool_calls[0].type, "function");
    llmw_openai_result_cleanup(&r);
}

TEST(openai_error_object_in_the_stream)
{
    const char *text =
        "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"partial\"}}]}\n\n"
        "data: {\"error\":{\"message\":\"The server had an error while processing your "
        "request.\",\"type\":\"server_error\",\"param\":null,\"code\":null}}\n\n"
        "data: [DONE]\n\n";
    struct llmw_openai_result r;
    struct llmw_openai_stream *st = llmw_openai_stream_new(NULL);
    CHECK(!llmw_openai_stream_feed(st, text, strlen(text), 1)); /* settled: stop reading */
    CHECK(!llmw_openai_stream_feed(st, "data: x\n\n", 9, 2));
    llmw_openai_stream_finish(st, &r);
    llmw_openai_stream_free(st);
    CHECK_INT_EQ(r.outcome, LLMW_OPENAI_ERROR);
    CHECK_STR_EQ(r.error.message, "The server had an error while processing your request.");
    CHECK_STR_EQ(r.error.type, "server_error");
    CHECK(r.error.code == NULL && r.error.param == NULL);
    CHECK(!r.done);
    CHECK_STR_EQ(r.content, "partial"); /* kept for logs, but the outcome is an error */
    CHECK_STR_CONTAINS(r.detail, "server_error");
    CHECK_INT_EQ(llmw_openai_result_err(&r), AB_ERR_UPSTREAM);
    llmw_openai_result_cleanup(&r);

    oa_run("data: {\"error\":{\"message\":\"Rate limit reached\",\"type\":\"requests\","
           "\"param\":null,\"code\":\"rate_limit_exceeded\"}}\n\n",
           NULL, &r);
    CHECK_INT_EQ(r.outcome, LLMW_OPENAI_ERROR);
    CHECK_STR_EQ(r.error.code, "rate_limit_exceeded");
    CHECK_INT_EQ(llmw_openai_result_err(&r), AB_ERR_RATE_LIMITED);
    llmw_openai_result_cleanup(&r);

    oa_run("data: {\"error\":\"upstream timed out\"}\n\n", NULL, &r);
    CHECK_INT_EQ(r.outcome, LLMW_OPENAI_ERROR);
    CHECK_STR_EQ(r.error.message, "upstream timed out");
    llmw_openai_result_cleanup(&r);

    /* "error": null is not an error (some servers send it in every chunk). */
    oa_run("data: {\"error\":null,\"choices\":[{\"index\":0,\"delta\":{\"content\":\"x\"},"
           "\"finish_reason\":\"stop\"}]}\n\ndata: [DONE]\n\n",
           NULL, &r);
    CHECK_INT_EQ(r.outcome, LLMW_OPENAI_ANSWER);
    llmw_openai_result_cleanup(&r);
}

TEST(openai_error_event_in_the_stream)
{
    struct llmw_openai_result r;
    oa_run("data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"a\"}}]}\n\n"
           "event: error\ndata: {\"error\":{\"message\":\"overloaded\",\"type\":\"server_error\","
           "\"code\":503}}\n\n",
           NULL, &r);
    CHECK_INT_EQ(r.outcome, LLMW_OPENAI_ERROR);
    CHECK_STR_EQ(r.error.message, "overloaded");
    CHECK_STR_EQ(r.error.code, "503");
    llmw_openai_result_cleanup(&r);

    oa_run("event: error\ndata: {\"message\":\"bad gateway\",\"type\":\"api_error\"}\n\n", NULL,
           &r);
    CHECK_INT_EQ(r.outcome, LLMW_OPENAI_ERROR);
    CHECK_STR_EQ(r.error.message, "bad gateway");
    CHECK_STR_EQ(r.error.type, "api_error");
    llmw_openai_result_cleanup(&r);

    oa_run("event: error\ndata: the model crashed\n\n", NULL, &r);
    CHECK_INT_EQ(r.outcome, LLMW_OPENAI_ERROR);
    CHECK_STR_EQ(r.error.message, "the model crashed");
    llmw_openai_result_cleanup(&r);

    /* Plain text that is not UTF-8 comes out as valid UTF-8. */
    oa_run("event: error\ndata: bad \xff\xfe bytes \xc3\xa9\n\n", NULL, &r);
    CHECK_INT_EQ(r.outcome, LLMW_OPENAI_ERROR);
    CHECK_STR_EQ(r.error.message, "bad ?? bytes ??");
    llmw_openai_result_cleanup(&r);

    oa_run("event: error\ndata:\n\n", NULL, &r);
    CHECK_INT_EQ(r.outcome, LLMW_OPENAI_ERROR);
    CHECK(r.error.message == NULL);
    CHECK_STR_CONTAINS(r.detail, "(no message)");
    llmw_openai_result_cleanup(&r);

    /* A long message is cut, at a UTF-8 boundary. */
    char text[4096];
    int n = snprintf(text, sizeof(text), "data: {\"error\":{\"message\":\"");
    for (int i = 0; i < 1500; i++)
        n += snprintf(text + n, sizeof(text) - (size_t)n, "\xc3\xa9");
    snprintf(text + n, sizeof(text) - (size_t)n, "\"}}\n\n");
    oa_run(text, NULL, &r);
    CHECK_INT_EQ(r.outcome, LLMW_OPENAI_ERROR);
    REQUIRE(r.error.message != NULL);
    CHECK_INT_EQ(strlen(r.error.message), LLMW_OPENAI_MAX_ERROR_FIELD_BYTES);
    llmw_openai_result_cleanup(&r);
}

TEST(openai_stream_cut_before_done_is_truncated_not_an_answer)
{
    struct llmw_openai_result r;
    /* Content, then the connection closes: a failure, whatever came. */
    size_t upto = (size_t)(strstr(recorded, OA_HEAD "\"choices\":[{\"index\":0,\"delta\":{},") -
                           recorded);
    oa_run_cuts(recorded, upto, NULL, 0, NULL, &r);
    CHECK_INT_EQ(r.outcome, LLMW_OPENAI_TRUNCATED);
    CHECK_STR_EQ(llmw_openai_outcome_name(r.outcome), "truncated");
    CHECK_INT_EQ(llmw_openai_result_err(&r), AB_ERR_UPSTREAM);
    CHECK_STR_CONTAINS(r.detail, "after 11 chunk(s) without finish_reason or [DONE]");
    CHECK(strstr(r.detail, "inside") == NULL);
    CHECK(r.finish_reason == NULL && !r.done);
    llmw_openai_result_cleanup(&r);

    /* Cut inside an event (no blank line after the last one): the partial event is dropped. */
    oa_run_cuts(recorded, upto - 1, NULL, 0, NULL, &r);
    CHECK_INT_EQ(r.outcome, LLMW_OPENAI_TRUNCATED);
    CHECK_STR_CONTAINS(r.detail, "after 10 chunk(s)");
    CHECK_STR_CONTAINS(r.detail, "inside an event");
    llmw_openai_result_cleanup(&r);

    /* Cut at every byte before the finish_reason chunk: always truncated. */
    for (size_t i = 0; i < upto; i += 7) {
        oa_run_cuts(recorded, i, NULL, 0, NULL, &r);
        CHECK_INT_EQ(r.outcome, LLMW_OPENAI_TRUNCATED);
        llmw_openai_result_cleanup(&r);
    }
}

TEST(openai_finish_reason_without_done_is_an_answer_with_a_note)
{
    const char *usage = strstr(recorded, OA_HEAD "\"choices\":[],");
    REQUIRE(usage != NULL);
    struct llmw_openai_result r;
    oa_run_cuts(recorded, (size_t)(usage - recorded), NULL, 0, NULL, &r);
    CHECK_INT_EQ(r.outcome, LLMW_OPENAI_ANSWER);
    CHECK_STR_EQ(r.content, recorded_content);
    CHECK(!r.done);
    CHECK(!r.usage.present); /* the usage chunk never came */
    CHECK_STR_CONTAINS(r.detail, "without [DONE]");
    llmw_openai_result_cleanup(&r);

    /* [DONE] without its blank line at the very end is dropped like any cut event. */
    oa_run_cuts(recorded, sizeof(recorded) - 3, NULL, 0, NULL, &r);
    CHECK_INT_EQ(r.outcome, LLMW_OPENAI_ANSWER);
    CHECK(!r.done && r.usage.present);
    llmw_openai_result_cleanup(&r);
}

TEST(openai_done_without_finish_reason_is_an_answer_with_a_note)
{
    struct llmw_openai_result r;
    oa_run("data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"hi\"}}]}\n\ndata: [DONE]\n\n",
           NULL, &r);
    CHECK_INT_EQ(r.outcome, LLMW_OPENAI_ANSWER);
    CHECK(r.finish_reason == NULL);
    CHECK(r.done);
    CHECK_STR_CONTAINS(r.detail, "without a finish_reason");
    llmw_openai_result_cleanup(&r);
}

/* The seed client sent the request again when a stream brought no text. Here an empty
 * stream is a failure (never an answer), and an empty answer is an answer: neither is a
 * reason to ask again. */
TEST(openai_empty_streams)
{
    struct llmw_openai_result r;
    oa_run("", NULL, &r);
    CHECK_INT_EQ(r.outcome, LLMW_OPENAI_TRUNCATED);
    CHECK_STR_CONTAINS(r.detail, "empty");
    CHECK_STR_EQ(r.content, "");
    CHECK_INT_EQ(r.chunks, 0);
    llmw_openai_result_cleanup(&r);

    oa_run(": keep-alive\n\n: keep-alive\n\n", NULL, &r);
    CHECK_INT_EQ(r.outcome, LLMW_OPENAI_TRUNCATED);
    CHECK_STR_CONTAINS(r.detail, "after 0 chunk(s)");
    llmw_openai_result_cleanup(&r);

    oa_run("data: [DONE]\n\n", NULL, &r);
    CHECK_INT_EQ(r.outcome, LLMW_OPENAI_ANSWER);
    CHECK_STR_EQ(r.content, "");
    CHECK_INT_EQ(r.first_token_ms, -1);
    llmw_openai_result_cleanup(&r);

    oa_run("data: {\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"}}]}"
           "\n\ndata: {\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\n\n"
           "data: [DONE]\n\n",
           NULL, &r);
    CHECK_INT_EQ(r.outcome, LLMW_OPENAI_ANSWER);
    CHECK_STR_EQ(r.content, "");
    CHECK_INT_EQ(r.content_len, 0);
    CHECK_STR_EQ(r.finish_reason, "stop");
    llmw_openai_result_cleanup(&r);
}

TEST(openai_data_after_done_is_ignored)
{
    struct llmw_openai_result r;
    oa_run("data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"a\"},\"finish_reason\":"
           "\"stop\"}]}\n\ndata: [DONE]\n\ndata: {not json\n\nevent: error\ndata: x\n\n",
           NULL, &r);
    CHECK_INT_EQ(r.outcome, LLMW_OPENAI_ANSWER);
    CHECK_STR_EQ(r.content, "a");
    llmw_openai_result_cleanup(&r);
}

TEST(openai_malformed_chunks)
{
    /* Each line's chunk breaks the stream; "SECRET" is content that must stay out of the
     * detail, which goes to logs. */
    const char *bad[] = {
        "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"SECRET\n\n",
        "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"SECRET\xff\"}}]}\n\n",
        "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"SECRET\\u0000\"}}]}\n\n",
        "data: [\"SECRET\"]\n\n",
        "data: \"SECRET\"\n\n",
        "data: SECRET\n\n",
        "data: {\"choices\":\"SECRET\"}\n\n",
        "data: {\"choices\":[\"SECRET\"]}\n\n",
        "data: {\"choices\":[{\"index\":0,\"delta\":\"SECRET\"}]}\n\n",
        "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":42}}]}\n\n",
        "data: {\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":{\"x\":1}}}]}\n\n",
        "data: {\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":-1}]}}]}\n\n",
        "data: {\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":\"0\"}]}}]}\n\n",
        "data: {\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[7]}}]}\n\n",
        "data: {\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,"
        "\"function\":\"SECRET\"}]}}]}\n\n",
        "data: {\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,"
        "\"function\":{\"arguments\":[\"SECRET\"]}}]}}]}\n\n",
        "data: {\"a\":1}{\"b\":2}\n\n",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        char text[512];
        snprintf(text, sizeof(text),
                 "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"ok\"}}]}\n\n%s"
                 "data: {\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\n\n"
                 "data: [DONE]\n\n",
                 bad[i]);
        struct llmw_openai_result r;
        oa_run(text, NULL, &r);
        if (r.outcome != LLMW_OPENAI_MALFORMED)
            ab_test_fail(__FILE__, __LINE__, "case %zu: %s (%s)", i,
                         llmw_openai_outcome_name(r.outcome), r.detail);
        CHECK(strstr(r.detail, "SECRET") == NULL);
        CHECK(r.detail[0] != '\0');
        CHECK_INT_EQ(llmw_openai_result_err(&r), AB_ERR_UPSTREAM);
        llmw_openai_result_cleanup(&r);
    }
}

TEST(openai_oversized_event_content_and_tools)
{
    struct llmw_openai_result r;
    struct llmw_openai_limits lim = { .max_event_bytes = 100 };
    oa_run(recorded, &lim, &r); /* every chunk is over 100 bytes */
    CHECK_INT_EQ(r.outcome, LLMW_OPENAI_TOO_LARGE);
    CHECK_STR_CONTAINS(r.detail, "100 bytes");
    CHECK_INT_EQ(llmw_openai_result_err(&r), AB_ERR_TOO_LARGE);
    llmw_openai_result_cleanup(&r);

    /* Content: exactly at the cap is fine, one byte over is not. */
    lim = (struct llmw_openai_limits){ .max_content_bytes = strlen(recorded_content) };
    oa_run(recorded, &lim, &r);
    CHECK_INT_EQ(r.outcome, LLMW_OPENAI_ANSWER);
    llmw_openai_result_cleanup(&r);
    lim.max_content_bytes--;
    oa_run(recorded, &lim, &r);
    CHECK_INT_EQ(r.outcome, LLMW_OPENAI_TOO_LARGE);
    CHECK_STR_CONTAINS(r.detail, "content");
    llmw_openai_result_cleanup(&r);

    lim = (struct llmw_openai_limits){ .max_tool_calls = 1 };
    oa_run(tool_stream, &lim, &r);
    CHECK_INT_EQ(r.outcome, LLMW_OPENAI_TOO_LARGE);
    CHECK_STR_CONTAINS(r.detail, "more than 1 tool call");
    llmw_openai_result_cleanup(&r);

    lim = (struct llmw_openai_limits){ .max_tool_bytes = 20 };
    oa_run(tool_stream, &lim, &r);
    CHECK_INT_EQ(r.outcome, LLMW_OPENAI_TOO_LARGE);
    CHECK_STR_CONTAINS(r.detail, "tool calls are over");
    llmw_openai_result_cleanup(&r);
}

/* ---- the assembler: whole bodies ----------------------------------------------------------- */

TEST(openai_body_answer)
{
    const char *body =
        "{\"id\":\"chatcmpl-123\",\"object\":\"chat.completion\",\"created\":1740000000,"
        "\"model\":\"gpt-4o-mini\",\"choices\":[{\"index\":0,\"message\":{\"role\":\"assistant\","
        "\"content\":\"Hello there, caf\\u00e9.\",\"refusal\":null,\"annotations\":[]},"
        "\"logprobs\":null,\"finish_reason\":\"stop\"}],\"usage\":{\"prompt_tokens\":9,"
        "\"completion_tokens\":12,\"total_tokens\":21,\"prompt_tokens_details\":"
        "{\"cached_tokens\":4},\"completion_tokens_details\":{\"reasoning_tokens\":2}},"
        "\"service_tier\":\"default\",\"system_fingerprint\":\"fp_1\"}";
    struct llmw_openai_result r;
    oa_body(200, body, NULL, &r);
    CHECK_INT_EQ(r.outcome, LLMW_OPENAI_ANSWER);
    CHECK_INT_EQ(r.http_status, 200);
    CHECK_STR_EQ(r.content, "Hello there, caf\xc3\xa9.");
    CHECK_STR_EQ(r.finish_reason, "stop");
    CHECK_STR_EQ(r.role, "assistant");
    CHECK_STR_EQ(r.id, "chatcmpl-123");
    CHECK_STR_EQ(r.model, "gpt-4o-mini");
    CHECK(r.usage.present);
    CHECK_INT_EQ(r.usage.prompt_tokens, 9);
    CHECK_INT_EQ(r.usage.completion_tokens, 12);
    CHECK_INT_EQ(r.usage.total_tokens, 21);
    CHECK_INT_EQ(r.usage.cached_tokens, 4);
    CHECK_INT_EQ(r.usage.reasoning_tokens, 2);
    CHECK_INT_EQ(r.first_token_ms, -1);
    CHECK_INT_EQ(llmw_openai_result_err(&r), AB_OK);
    llmw_openai_result_cleanup(&r);

    /* OpenClaw's older shape: usage all zeros; content as an array of text parts. */
    oa_body(200,
            "{\"id\":\"chatcmpl_1\",\"object\":\"chat.completion\",\"model\":\"openclaw:main\","
            "\"choices\":[{\"index\":0,\"message\":{\"role\":\"assistant\",\"content\":"
            "[{\"type\":\"text\",\"text\":\"a\"},{\"type\":\"image\"},{\"type\":\"text\","
            "\"text\":\"b\"}]},\"finish_reason\":\"stop\"}],\"usage\":{\"prompt_tokens\":0,"
            "\"completion_tokens\":0,\"total_tokens\":0}}",
            NULL, &r);
    CHECK_INT_EQ(r.outcome, LLMW_OPENAI_ANSWER);
    CHECK_STR_EQ(r.content, "ab");
    CHECK(r.usage.present && r.usage.total_tokens == 0);
    llmw_openai_result_cleanup(&r);

    /* A refusal, and content null. */
    oa_body(200,
            "{\"choices\":[{\"index\":0,\"message\":{\"role\":\"assistant\",\"content\":null,"
            "\"refusal\":\"I can't help with that.\"},\"finish_reason\":\"stop\"}]}",
            NULL, &r);
    CHECK_INT_EQ(r.outcome, LLMW_OPENAI_ANSWER);
    CHECK_STR_EQ(r.content, "");
    CHECK_STR_EQ(r.refusal, "I can't help with that.");
    llmw_openai_result_cleanup(&r);
}

TEST(openai_body_tool_calls)
{
    struct llmw_openai_result r;
    oa_body(200,
            "{\"choices\":[{\"index\":0,\"message\":{\"role\":\"assistant\",\"content\":null,"
            "\"tool_calls\":[{\"id\":\"call_1\",\"type\":\"function\",\"function\":{\"name\":"
            "\"get_weather\",\"arguments\":\"{\\\"location\\\":\\\"Paris\\\"}\"}},{\"id\":"
            "\"call_2\",\"type\":\"function\",\"function\":{\"name\":\"get_time\",\"arguments\":"
            "{\"tz\":\"CET\"}}}]},\"finish_reason\":\"tool_calls\"}]}",
            NULL, &r);
    CHECK_INT_EQ(r.outcome, LLMW_OPENAI_TOOL_CALLS);
    REQUIRE(r.tool_call_count == 2);
    CHECK_INT_EQ(r.tool_calls[0].index, 0);
    CHECK_STR_EQ(r.tool_calls[0].id, "call_1");
    CHECK_STR_EQ(r.tool_calls[0].arguments, "{\"location\":\"Paris\"}");
    CHECK_INT_EQ(r.tool_calls[1].index, 1);
    CHECK_STR_EQ(r.tool_calls[1].name, "get_time");
    CHECK_STR_EQ(r.tool_calls[1].arguments, "{\"tz\":\"CET\"}"); /* an object, dumped */
    llmw_openai_result_cleanup(&r);
}

TEST(openai_body_http_errors)
{
    struct llmw_openai_result r;
    oa_body(429,
            "{\"error\":{\"message\":\"Rate limit reached for gpt-4o-mini\",\"type\":"
            "\"requests\",\"param\":null,\"code\":\"rate_limit_exceeded\"}}",
            NULL, &r);
    CHECK_INT_EQ(r.outcome, LLMW_OPENAI_ERROR);
    CHECK_STR_EQ(llmw_openai_outcome_name(r.outcome), "error");
    CHECK_INT_EQ(r.http_status, 429);
    CHECK_STR_EQ(r.error.message, "Rate limit reached for gpt-4o-mini");
    CHECK_STR_EQ(r.error.type, "requests");
    CHECK_STR_EQ(r.error.code, "rate_limit_exceeded");
    CHECK(r.error.param == NULL);
    CHECK_STR_CONTAINS(r.detail, "HTTP 429");
    CHECK_STR_CONTAINS(r.detail, "Rate limit reached");
    CHECK_INT_EQ(llmw_openai_result_err(&r), AB_ERR_RATE_LIMITED);
    llmw_openai_result_cleanup(&r);

    oa_body(429,
            "{\"error\":{\"message\":\"You exceeded your current quota\",\"type\":"
            "\"insufficient_quota\",\"param\":null,\"code\":\"insufficient_quota\"}}",
            NULL, &r);
    CHECK_INT_EQ(llmw_openai_result_err(&r), AB_ERR_FORBIDDEN);
    llmw_openai_result_cleanup(&r);

    oa_body(400,
            "{\"error\":{\"message\":\"Missing user message in `messages`.\",\"type\":"
            "\"invalid_request_error\",\"param\":\"messages\",\"code\":null}}",
            NULL, &r);
    CHECK_INT_EQ(r.outcome, LLMW_OPENAI_ERROR);
    CHECK_STR_EQ(r.error.param, "messages");
    CHECK_INT_EQ(llmw_openai_result_err(&r), AB_ERR_INVALID);
    llmw_openai_result_cleanup(&r);

    /* A proxy's HTML page: an error without an error object. */
    oa_body(502, "<html><body>Bad Gateway</body></html>", NULL, &r);
    CHECK_INT_EQ(r.outcome, LLMW_OPENAI_ERROR);
    CHECK(r.error.message == NULL && r.error.type == NULL);
    CHECK_STR_CONTAINS(r.detail, "HTTP 502 without an error object");
    CHECK_INT_EQ(llmw_openai_result_err(&r), AB_ERR_UPSTREAM);
    llmw_openai_result_cleanup(&r);

    oa_body(500, "", NULL, &r);
    CHECK_INT_EQ(r.outcome, LLMW_OPENAI_ERROR);
    CHECK_STR_EQ(r.content, "");
    llmw_openai_result_cleanup(&r);

    /* An error object in a 200 body is an error too. */
    oa_body(200, "{\"error\":{\"message\":\"context too long\",\"type\":\"invalid_request_error\","
                 "\"code\":\"context_length_exceeded\"}}",
            NULL, &r);
    CHECK_INT_EQ(r.outcome, LLMW_OPENAI_ERROR);
    CHECK_INT_EQ(llmw_openai_result_err(&r), AB_ERR_INVALID);
    llmw_openai_result_cleanup(&r);

    const struct {
        long status;
        enum ab_err err;
    } map[] = { { 401, AB_ERR_UNAUTHORIZED }, { 403, AB_ERR_FORBIDDEN },
                { 404, AB_ERR_NOT_FOUND },    { 408, AB_ERR_TIMEOUT },
                { 413, AB_ERR_TOO_LARGE },    { 422, AB_ERR_INVALID },
                { 500, AB_ERR_UPSTREAM },     { 503, AB_ERR_UPSTREAM },
                { 301, AB_ERR_UPSTREAM } };
    for (size_t i = 0; i < sizeof(map) / sizeof(map[0]); i++) {
        oa_body(map[i].status, "{\"error\":{\"message\":\"x\"}}", NULL, &r);
        CHECK_INT_EQ(r.outcome, LLMW_OPENAI_ERROR);
        CHECK_INT_EQ(llmw_openai_result_err(&r), map[i].err);
        llmw_openai_result_cleanup(&r);
    }
}

TEST(openai_body_malformed_and_too_large)
{
    const char *bad[] = {
        "",
        "not json",
        "{\"choices\":[{\"index\":0,\"message\":{\"content\":\"a\"}}]",
        "[]",
        "{}",
        "{\"choices\":[]}",
        "{\"choices\":[{\"index\":1,\"message\":{\"content\":\"a\"}}]}",
        "{\"choices\":[{\"index\":0,\"message\":{\"content\":\"\xc3\x28\"}}]}",
        "{\"choices\":[{\"index\":0,\"message\":{\"content\":{}}}]}",
        "{\"choices\":[{\"index\":0,\"message\":[]}]}",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        struct llmw_openai_result r;
        oa_body(200, bad[i], NULL, &r);
        if (r.outcome != LLMW_OPENAI_MALFORMED)
            ab_test_fail(__FILE__, __LINE__, "case %zu: %s (%s)", i,
                         llmw_openai_outcome_name(r.outcome), r.detail);
        CHECK_STR_EQ(r.content, "");
        llmw_openai_result_cleanup(&r);
    }
    struct llmw_openai_result r;
    llmw_openai_parse_body(200, NULL, 0, NULL, &r);
    CHECK_INT_EQ(r.outcome, LLMW_OPENAI_MALFORMED);
    CHECK_STR_CONTAINS(r.detail, "empty");
    llmw_openai_result_cleanup(&r);

    struct llmw_openai_limits lim = { .max_content_bytes = 4 };
    oa_body(200, "{\"choices\":[{\"index\":0,\"message\":{\"content\":\"12345\"}}]}", &lim, &r);
    CHECK_INT_EQ(r.outcome, LLMW_OPENAI_TOO_LARGE);
    llmw_openai_result_cleanup(&r);
    oa_body(200, "{\"choices\":[{\"index\":0,\"message\":{\"content\":\"1234\"}}]}", &lim, &r);
    CHECK_INT_EQ(r.outcome, LLMW_OPENAI_ANSWER);
    CHECK(r.finish_reason == NULL);
    llmw_openai_result_cleanup(&r);
}

TEST(openai_result_err_and_names_cover_every_outcome)
{
    struct llmw_openai_result r;
    memset(&r, 0, sizeof(r));
    const struct {
        enum llmw_openai_outcome outcome;
        const char *name;
        enum ab_err err;
    } rows[] = {
        { LLMW_OPENAI_PENDING, "pending", AB_ERR_INTERNAL },
        { LLMW_OPENAI_ANSWER, "answer", AB_OK },
        { LLMW_OPENAI_TOOL_CALLS, "tool_calls", AB_OK },
        { LLMW_OPENAI_ERROR, "error", AB_ERR_UPSTREAM },
        { LLMW_OPENAI_TRUNCATED, "truncated", AB_ERR_UPSTREAM },
        { LLMW_OPENAI_MALFORMED, "malformed", AB_ERR_UPSTREAM },
        { LLMW_OPENAI_TOO_LARGE, "too_large", AB_ERR_TOO_LARGE },
    };
    for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
        r.outcome = rows[i].outcome;
        CHECK_STR_EQ(llmw_openai_outcome_name(rows[i].outcome), rows[i].name);
        CHECK_INT_EQ(llmw_openai_result_err(&r), rows[i].err);
    }
}

/* ---- random splits and bytes -------------------------------------------------------------- */

/* xorshift64*: deterministic, so a failure can be replayed from its iteration number. */
static uint64_t rng_next(uint64_t *s)
{
    *s ^= *s >> 12;
    *s ^= *s << 25;
    *s ^= *s >> 27;
    return *s * 2685821657736338717ULL;
}

static size_t rng_below(uint64_t *s, size_t n)
{
    return n ? (size_t)(rng_next(s) % n) : 0;
}

/* Checks what holds for every settled result, whatever came in. */
static void check_settled(const struct llmw_openai_result *r, unsigned iteration, bool streamed)
{
    if (r->outcome == LLMW_OPENAI_PENDING || r->content == NULL ||
        strlen(r->content) != r->content_len || llmw_openai_result_err(r) == AB_ERR_INTERNAL)
        ab_test_fail(__FILE__, __LINE__, "iteration %u: outcome %s", iteration,
                     llmw_openai_outcome_name(r->outcome));
    if (streamed && (r->outcome == LLMW_OPENAI_ANSWER || r->outcome == LLMW_OPENAI_TOOL_CALLS) &&
        r->finish_reason == NULL && !r->done)
        ab_test_fail(__FILE__, __LINE__, "iteration %u: an answer without an end", iteration);
    for (size_t i = 0; i < r->tool_call_count; i++)
        if (r->tool_calls[i].id == NULL || r->tool_calls[i].name == NULL ||
            r->tool_calls[i].arguments == NULL || r->tool_calls[i].type == NULL)
            ab_test_fail(__FILE__, __LINE__, "iteration %u: a NULL in a tool call", iteration);
}

/* Feeds text in random pieces (exact-length copies) and returns the settled result. */
static void feed_randomly(uint64_t *rng, const char *text, size_t len,
                          const struct llmw_openai_limits *lim, struct llmw_openai_result *out)
{
    struct llmw_openai_stream *st = llmw_openai_stream_new(lim);
    size_t off = 0;
    while (off < len) {
        size_t n = 1 + rng_below(rng, rng_below(rng, 4) == 0 ? len - off : 16);
        if (n > len - off)
            n = len - off;
        char *piece = malloc(n);
        REQUIRE(piece != NULL);
        memcpy(piece, text + off, n);
        bool more = llmw_openai_stream_feed(st, piece, n, (int64_t)off);
        free(piece);
        off += n;
        if (!more)
            break;
    }
    if (rng_below(rng, 8) == 0)
        (void)llmw_openai_stream_peek(st);
    llmw_openai_stream_finish(st, out);
    llmw_openai_stream_free(st);
}

TEST(openai_fuzz_random_splits_and_mutations_never_crash)
{
    static const char noise[] = { '\r', '\n', ':', '{', '}', '[', ']', '"', '\\', ',', ' ', '\0',
                                  'u', '0', 'd', (char)0x80, (char)0xC3, (char)0xEF, (char)0xFF };
    const char *sources[] = { recorded, tool_stream };
    const size_t source_len[] = { sizeof(recorded) - 1, sizeof(tool_stream) - 1 };
    uint64_t rng = 0x9E3779B97F4A7C15ULL;
    int answers = 0, others = 0;
    for (unsigned it = 0; it < 3000; it++) {
        size_t which = it % 2, len = source_len[which];
        char *text = malloc(len + 64);
        REQUIRE(text != NULL);
        memcpy(text, sources[which], len);
        /* Up to 4 mutations: overwrite, insert, delete a byte, or cut the stream short. */
        size_t mutations = rng_below(&rng, 5);
        for (size_t m = 0; m < mutations && len > 0; m++) {
            size_t at = rng_below(&rng, len);
            char c = rng_below(&rng, 2) ? noise[rng_below(&rng, sizeof(noise))]
                                        : (char)rng_below(&rng, 256);
            switch (rng_below(&rng, 4)) {
            case 0:
                text[at] = c;
                break;
            case 1:
                memmove(text + at + 1, text + at, len - at);
                text[at] = c;
                len++;
                break;
            case 2:
                memmove(text + at, text + at + 1, len - at - 1);
                len--;
                break;
            default:
                len = at;
                break;
            }
        }
        struct llmw_openai_limits lim = { 0 };
        if (rng_below(&rng, 4) == 0) {
            lim.max_event_bytes = 16 + rng_below(&rng, 600);
            lim.max_content_bytes = 1 + rng_below(&rng, 80);
            lim.max_tool_bytes = 1 + rng_below(&rng, 40);
            lim.max_tool_calls = 1 + rng_below(&rng, 2);
        }
        struct llmw_openai_result r;
        feed_randomly(&rng, text, len, &lim, &r);
        check_settled(&r, it, true);
        if (r.outcome == LLMW_OPENAI_ANSWER || r.outcome == LLMW_OPENAI_TOOL_CALLS)
            answers++;
        else
            others++;
        llmw_openai_result_cleanup(&r);
        free(text);
    }
    /* The mix exercised both the good path and the failures. */
    CHECK(answers > 300);
    CHECK(others > 300);
}

TEST(openai_fuzz_random_bytes_and_sse_tokens_never_crash)
{
    static const char *tokens[] = { "data:", "data: ", "event: error", "event:", "id: 1", ":",
                                    "retry: 5", "\n", "\r", "\r\n", "\n\n", "[DONE]", "{",
                                    "}", "\"error\":", "{\"choices\":[{\"index\":0,\"delta\":",
                                    "{\"content\":\"x\"}", "\"finish_reason\":\"stop\"", "]",
                                    "\xEF\xBB\xBF", "\xff", "null", "," };
    uint64_t rng = 42;
    for (unsigned it = 0; it < 3000; it++) {
        char text[2048];
        size_t len = 0;
        bool raw = it % 3 == 0;
        size_t parts = rng_below(&rng, 60);
        for (size_t k = 0; k < parts; k++) {
            if (raw) {
                text[len++] = (char)rng_below(&rng, 256);
                continue;
            }
            const char *t = tokens[rng_below(&rng, sizeof(tokens) / sizeof(tokens[0]))];
            size_t n = strlen(t);
            if (len + n > sizeof(text))
                break;
            memcpy(text + len, t, n);
            len += n;
        }
        struct llmw_openai_limits lim = { .max_event_bytes = 8 + rng_below(&rng, 256) };
        struct llmw_openai_result r;
        feed_randomly(&rng, text, len, &lim, &r);
        check_settled(&r, it, true);
        llmw_openai_result_cleanup(&r);

        /* The same bytes as a whole body, under any status. */
        long statuses[] = { 200, 400, 429, 500 };
        char *body = malloc(len ? len : 1);
        REQUIRE(body != NULL);
        memcpy(body, text, len);
        llmw_openai_parse_body(statuses[it % 4], body, len, NULL, &r);
        free(body);
        check_settled(&r, it, false);
        llmw_openai_result_cleanup(&r);
    }
}
