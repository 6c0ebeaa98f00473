/* Tests for services/llm-worker/provider (the HTTP request of a chat completion) and
 * services/llm-worker/prompt (its "messages" array): the openai URL from every shape of base
 * URL, the headers of each provider and stream mode, the body parsed back with jansson, the
 * OpenClaw agent in each accepted spelling with its session key, every refused configuration
 * (with the key kept out of the message), and the prompt's system message, history roles,
 * agent-to-agent notice and text that must survive JSON unchanged. */
#include "test.h"

#include "services/llm-worker/prompt.h"
#include "services/llm-worker/provider.h"

#include <jansson.h>

/* The caller's errstr size (caller.c's launch). */
#define ERRSTR_SIZE  320
#define CONVERSATION "0b7e3c1a-5d2f-4e8a-9c61-2f4d8b9a7e10"

/* ---- helpers ------------------------------------------------------------------------------ */

/* A model row as store.c reads it: every string set ("" for no key). @ownership the caller
 * frees with llmw_model_cleanup. */
static void model_init(struct llmw_model *m, const char *provider, const char *base_url,
                       const char *model, const char *api_key, bool stream)
{
    memset(m, 0, sizeof(*m));
    snprintf(m->id, sizeof(m->id), "%s", "5f0c2a9e-8b1d-4c3f-a7e6-1d2b3c4d5e6f");
    m->name = ab_xstrdup("gw-model");
    m->provider = ab_xstrdup(provider);
    m->base_url = ab_xstrdup(base_url);
    m->model = ab_xstrdup(model);
    m->api_key = ab_xstrdup(api_key);
    m->connect_timeout_ms = 5000;
    m->first_token_timeout_ms = 60000;
    m->idle_timeout_ms = 30000;
    m->total_timeout_ms = 300000;
    m->max_concurrency = 8;
    m->stream = stream;
}

/* A small "messages" array. @ownership the caller decrefs it. */
static json_t *sample_messages(void)
{
    json_t *msgs = json_pack("[{s:s, s:s}, {s:s, s:s}]", "role", "system", "content",
                             "You are Bob.", "role", "user", "content", "Hi");
    REQUIRE(msgs != NULL);
    return msgs;
}

static size_t header_count(const struct llmw_call_spec *s)
{
    size_t n = 0;
    while (s->headers != NULL && s->headers[n] != NULL)
        n++;
    return n;
}

/* The value of header `name` (exact case, "Name: value"), or NULL; a header present twice
 * fails the test. */
static const char *header_value(const struct llmw_call_spec *s, const char *name)
{
    const char *found = NULL;
    size_t len = strlen(name);
    for (size_t i = 0; s->headers != NULL && s->headers[i] != NULL; i++) {
        const char *h = s->headers[i];
        if (strncmp(h, name, len) != 0 || h[len] != ':' || h[len + 1] != ' ')
            continue;
        if (found != NULL)
            ab_test_fail(__FILE__, __LINE__, "header %s sent twice", name);
        found = h + len + 2;
    }
    return found;
}

/* Builds the request of m, which must succeed. */
static void request_ok(const struct llmw_model *m, const json_t *messages,
                       struct llmw_call_spec *out)
{
    char err[ERRSTR_SIZE] = "";
    enum ab_err rc = llmw_provider_request(m, messages, CONVERSATION, out, err, sizeof(err));
    if (rc != AB_OK)
        ab_test_fail(__FILE__, __LINE__, "model \"%s\" (%s) refused: %s", m->model, m->provider,
                     err);
    REQUIRE(rc == AB_OK);
    REQUIRE(out->url != NULL && out->headers != NULL && out->body != NULL);
}

/* The body parsed back; its length must be the one announced. @ownership the caller decrefs. */
static json_t *body_json(const struct llmw_call_spec *s)
{
    CHECK_INT_EQ(s->body_len, strlen(s->body));
    json_error_t jerr;
    json_t *body = json_loadb(s->body, s->body_len, 0, &jerr);
    if (body == NULL)
        ab_test_fail(__FILE__, __LINE__, "body is not JSON (%s): %s", jerr.text, s->body);
    REQUIRE(json_is_object(body));
    return body;
}

/* The URL of an openai model at base_url. */
static void check_openai_url(const char *base_url, const char *want)
{
    struct llmw_model m;
    struct llmw_call_spec spec;
    json_t *msgs = sample_messages();
    model_init(&m, "openai", base_url, "gpt-4o-mini", "", true);
    request_ok(&m, msgs, &spec);
    if (strcmp(spec.url, want) != 0)
        ab_test_fail(__FILE__, __LINE__, "base \"%s\": url \"%s\", want \"%s\"", base_url, spec.url,
                     want);
    llmw_call_spec_cleanup(&spec);
    llmw_model_cleanup(&m);
    json_decref(msgs);
}

/* A model the provider must refuse: AB_ERR_INVALID, nothing allocated in out, and errstr
 * naming the model. Returns errstr (static, valid until the next call). */
static const char *refused(const struct llmw_model *m)
{
    static char err[ERRSTR_SIZE];
    struct llmw_call_spec spec;
    memset(&spec, 0xA5, sizeof(spec)); /* whatever was there is overwritten, never freed */
    json_t *msgs = sample_messages();
    strcpy(err, "untouched");
    enum ab_err rc = llmw_provider_request(m, msgs, CONVERSATION, &spec, err, sizeof(err));
    if (rc != AB_ERR_INVALID)
        ab_test_fail(__FILE__, __LINE__, "provider \"%s\" model \"%s\": got %d, want invalid",
                     m->provider, m->model, (int)rc);
    CHECK(spec.url == NULL && spec.headers == NULL && spec.body == NULL && spec.body_len == 0);
    llmw_call_spec_cleanup(&spec);
    json_decref(msgs);
    CHECK_STR_CONTAINS(err, m->name);
    return err;
}

/* ---- openai: URL -------------------------------------------------------------------------- */

TEST(llm_provider_openai_url_from_base_url)
{
    const char *want = "https://api.openai.com/v1/chat/completions";
    check_openai_url("https://api.openai.com", want);
    check_openai_url("https://api.openai.com/", want);
    check_openai_url("https://api.openai.com///", want);
    /* A base URL already ending in /v1 (as OpenAI's docs write it) gets no second /v1. */
    check_openai_url("https://api.openai.com/v1", want);
    check_openai_url("https://api.openai.com/v1/", want);
    check_openai_url("https://api.openai.com/v1//", want);
    /* A path before /v1 is kept. */
    check_openai_url("http://127.0.0.1:8080/proxy",
                     "http://127.0.0.1:8080/proxy/v1/chat/completions");
    check_openai_url("https://example.com/api/v1", "https://example.com/api/v1/chat/completions");
    check_openai_url("https://example.com/api/v1/", "https://example.com/api/v1/chat/completions");
    /* Only a whole last segment "v1" counts. */
    check_openai_url("https://example.com/v10", "https://example.com/v10/v1/chat/completions");
    check_openai_url("https://example.com/xv1", "https://example.com/xv1/v1/chat/completions");
    check_openai_url("https://example.com/v1/openai",
                     "https://example.com/v1/openai/v1/chat/completions");
}

/* ---- openai: headers ---------------------------------------------------------------------- */

TEST(llm_provider_openai_headers_streaming_with_key)
{
    struct llmw_model m;
    struct llmw_call_spec spec;
    json_t *msgs = sample_messages();
    model_init(&m, "openai", "https://api.openai.com", "gpt-4o-mini", "sk-test-123", true);
    request_ok(&m, msgs, &spec);
    CHECK_INT_EQ(header_count(&spec), 3);
    CHECK_STR_EQ(header_value(&spec, "Content-Type"), "application/json");
    CHECK_STR_EQ(header_value(&spec, "Accept"), "text/event-stream");
    CHECK_STR_EQ(header_value(&spec, "Authorization"), "Bearer sk-test-123");
    CHECK(header_value(&spec, "x-openclaw-agent-id") == NULL);
    CHECK(header_value(&spec, "x-openclaw-session-key") == NULL);
    llmw_call_spec_cleanup(&spec);
    llmw_model_cleanup(&m);
    json_decref(msgs);
}

TEST(llm_provider_openai_headers_no_key_not_streaming)
{
    struct llmw_model m;
    struct llmw_call_spec spec;
    json_t *msgs = sample_messages();
    model_init(&m, "openai", "http://localhost:11434", "llama3", "", false);
    request_ok(&m, msgs, &spec);
    CHECK_INT_EQ(header_count(&spec), 2);
    CHECK_STR_EQ(header_value(&spec, "Content-Type"), "application/json");
    CHECK_STR_EQ(header_value(&spec, "Accept"), "application/json");
    /* No key: no Authorization at all (not "Bearer " with nothing after it). */
    CHECK(header_value(&spec, "Authorization") == NULL);
    for (size_t i = 0; spec.headers[i] != NULL; i++)
        CHECK(strstr(spec.headers[i], "Bearer") == NULL);
    llmw_call_spec_cleanup(&spec);
    llmw_model_cleanup(&m);
    json_decref(msgs);
}

/* ---- openai: body ------------------------------------------------------------------------- */

TEST(llm_provider_openai_body_streaming)
{
    struct llmw_model m;
    struct llmw_call_spec spec;
    json_t *msgs = sample_messages();
    size_t refs = msgs->refcount;
    model_init(&m, "openai", "https://api.openai.com/v1", "gpt-4o-mini", "sk-x", true);
    request_ok(&m, msgs, &spec);
    /* messages is borrowed: the call keeps no reference to it. */
    CHECK_INT_EQ(msgs->refcount, refs);

    json_t *body = body_json(&spec);
    CHECK_STR_EQ(json_string_value(json_object_get(body, "model")), "gpt-4o-mini");
    CHECK(json_equal(json_object_get(body, "messages"), msgs));
    CHECK(json_is_true(json_object_get(body, "stream")));
    json_t *opts = json_object_get(body, "stream_options");
    CHECK(json_is_object(opts) && json_object_size(opts) == 1);
    CHECK(json_is_true(json_object_get(opts, "include_usage")));
    CHECK(json_is_integer(json_object_get(body, "n")));
    CHECK_INT_EQ(json_integer_value(json_object_get(body, "n")), 1);
    /* Nothing else: model, messages, stream, stream_options, n. */
    CHECK_INT_EQ(json_object_size(body), 5);
    json_decref(body);
    llmw_call_spec_cleanup(&spec);
    llmw_model_cleanup(&m);
    json_decref(msgs);
}

TEST(llm_provider_openai_body_not_streaming)
{
    struct llmw_model m;
    struct llmw_call_spec spec;
    json_t *msgs = sample_messages();
    /* An openai model name is sent as it is, slashes and all (only OpenClaw checks it). */
    model_init(&m, "openai", "https://openrouter.ai/api/v1", "meta-llama/llama-3.1-70b:free", "",
               false);
    request_ok(&m, msgs, &spec);
    CHECK_STR_EQ(spec.url, "https://openrouter.ai/api/v1/chat/completions");
    json_t *body = body_json(&spec);
    CHECK_STR_EQ(json_string_value(json_object_get(body, "model")),
                 "meta-llama/llama-3.1-70b:free");
    CHECK(json_equal(json_object_get(body, "messages"), msgs));
    CHECK(json_is_false(json_object_get(body, "stream")));
    CHECK(json_object_get(body, "stream_options") == NULL);
    CHECK_INT_EQ(json_integer_value(json_object_get(body, "n")), 1);
    CHECK_INT_EQ(json_object_size(body), 4);
    json_decref(body);
    llmw_call_spec_cleanup(&spec);
    llmw_model_cleanup(&m);
    json_decref(msgs);
}

TEST(llm_provider_body_messages_survive_round_trip)
{
    /* Quotes, backslashes, line breaks, a tab, a control character, U+2028, accented
     * letters, CJK and an emoji (a surrogate pair once escaped). */
    const char *tricky = "He said \"hi\\there\"\n\r\n\tend\x01 \xe2\x80\xa8 caf\xc3\xa9 "
                         "\xe6\x97\xa5\xe6\x9c\xac\xe8\xaa\x9e \xf0\x9f\x91\x8b </script>";
    json_t *msgs =
        json_pack("[{s:s, s:s}, {s:s, s:s}, {s:s, s:s}]", "role", "system", "content", tricky,
                  "role", "assistant", "content", "", "role", "user", "content", tricky);
    REQUIRE(msgs != NULL);
    const char *const providers[] = { "openai", "openclaw" };
    for (int p = 0; p < 2; p++) {
        for (int stream = 0; stream < 2; stream++) {
            struct llmw_model m;
            struct llmw_call_spec spec;
            model_init(&m, providers[p], "http://gw:18789", "main", "k", stream);
            request_ok(&m, msgs, &spec);
            json_t *body = body_json(&spec);
            json_t *got = json_object_get(body, "messages");
            CHECK(json_equal(got, msgs));
            CHECK_STR_EQ(json_string_value(json_object_get(json_array_get(got, 2), "content")),
                         tricky);
            json_decref(body);
            llmw_call_spec_cleanup(&spec);
            llmw_model_cleanup(&m);
        }
    }
    json_decref(msgs);
}

/* ---- openclaw ----------------------------------------------------------------------------- */

/* The request of an openclaw model `model`, which must address agent `agent`. */
static void check_openclaw_agent(const char *model, const char *agent)
{
    struct llmw_model m;
    struct llmw_call_spec spec;
    json_t *msgs = sample_messages();
    char want[256];
    model_init(&m, "openclaw", "http://127.0.0.1:18789/", model, "", true);
    request_ok(&m, msgs, &spec);
    CHECK_STR_EQ(spec.url, "http://127.0.0.1:18789/v1/chat/completions");

    json_t *body = body_json(&spec);
    snprintf(want, sizeof(want), "openclaw/%s", agent);
    const char *got = json_string_value(json_object_get(body, "model"));
    if (got == NULL || strcmp(got, want) != 0)
        ab_test_fail(__FILE__, __LINE__, "model \"%s\": body model \"%s\", want \"%s\"", model,
                     got ? got : "(null)", want);
    CHECK(json_equal(json_object_get(body, "messages"), msgs));
    CHECK_INT_EQ(json_integer_value(json_object_get(body, "n")), 1);

    got = header_value(&spec, "x-openclaw-agent-id");
    if (got == NULL || strcmp(got, agent) != 0)
        ab_test_fail(__FILE__, __LINE__, "model \"%s\": agent id header \"%s\", want \"%s\"", model,
                     got ? got : "(null)", agent);
    snprintf(want, sizeof(want), "agent:%s:%s", agent, CONVERSATION);
    got = header_value(&spec, "x-openclaw-session-key");
    if (got == NULL || strcmp(got, want) != 0)
        ab_test_fail(__FILE__, __LINE__, "model \"%s\": session key \"%s\", want \"%s\"", model,
                     got ? got : "(null)", want);
    json_decref(body);
    llmw_call_spec_cleanup(&spec);
    llmw_model_cleanup(&m);
    json_decref(msgs);
}

TEST(llm_provider_openclaw_agent_from_model)
{
    check_openclaw_agent("main", "main");
    check_openclaw_agent("openclaw/main", "main");
    check_openclaw_agent("openclaw:main", "main");
    check_openclaw_agent("agent:main", "main");
    /* Plain "openclaw" is the gateway's default agent. */
    check_openclaw_agent("openclaw", "main");
    check_openclaw_agent("openclaw/research-bot_2", "research-bot_2");
    check_openclaw_agent("agent:Ops", "Ops");
    check_openclaw_agent("A-z_0-9", "A-z_0-9");
    check_openclaw_agent("openclaw/openclaw", "openclaw");
    check_openclaw_agent("openclaw/agent", "agent");

    /* 64 characters, the most an agent id has, with and without a prefix. */
    char id64[LLMW_OPENCLAW_AGENT_MAX + 1], model[LLMW_OPENCLAW_AGENT_MAX + 16];
    memset(id64, 'a', LLMW_OPENCLAW_AGENT_MAX);
    id64[LLMW_OPENCLAW_AGENT_MAX - 1] = 'z';
    id64[LLMW_OPENCLAW_AGENT_MAX] = '\0';
    check_openclaw_agent(id64, id64);
    snprintf(model, sizeof(model), "openclaw/%s", id64);
    check_openclaw_agent(model, id64);
    snprintf(model, sizeof(model), "agent:%s", id64);
    check_openclaw_agent(model, id64);
}

TEST(llm_provider_openclaw_headers)
{
    struct llmw_model m;
    struct llmw_call_spec spec;
    json_t *msgs = sample_messages();

    /* With a gateway token, streaming: all five, each once. */
    model_init(&m, "openclaw", "https://gw.example.com/v1", "openclaw/main", "gw-token", true);
    request_ok(&m, msgs, &spec);
    CHECK_STR_EQ(spec.url, "https://gw.example.com/v1/chat/completions");
    CHECK_INT_EQ(header_count(&spec), 5);
    CHECK_STR_EQ(header_value(&spec, "Content-Type"), "application/json");
    CHECK_STR_EQ(header_value(&spec, "Accept"), "text/event-stream");
    CHECK_STR_EQ(header_value(&spec, "Authorization"), "Bearer gw-token");
    CHECK_STR_EQ(header_value(&spec, "x-openclaw-agent-id"), "main");
    CHECK_STR_EQ(header_value(&spec, "x-openclaw-session-key"), "agent:main:" CONVERSATION);
    json_t *body = body_json(&spec);
    CHECK(json_is_true(json_object_get(body, "stream")));
    CHECK(json_is_true(json_object_get(json_object_get(body, "stream_options"), "include_usage")));
    json_decref(body);
    llmw_call_spec_cleanup(&spec);
    llmw_model_cleanup(&m);

    /* No token, not streaming: no Authorization, JSON accepted, no stream_options. */
    model_init(&m, "openclaw", "http://gw:18789", "agent:ops", "", false);
    request_ok(&m, msgs, &spec);
    CHECK_INT_EQ(header_count(&spec), 4);
    CHECK_STR_EQ(header_value(&spec, "Accept"), "application/json");
    CHECK(header_value(&spec, "Authorization") == NULL);
    CHECK_STR_EQ(header_value(&spec, "x-openclaw-agent-id"), "ops");
    CHECK_STR_EQ(header_value(&spec, "x-openclaw-session-key"), "agent:ops:" CONVERSATION);
    body = body_json(&spec);
    CHECK(json_is_false(json_object_get(body, "stream")));
    CHECK(json_object_get(body, "stream_options") == NULL);
    CHECK_INT_EQ(json_object_size(body), 4);
    json_decref(body);
    llmw_call_spec_cleanup(&spec);
    llmw_model_cleanup(&m);
    json_decref(msgs);
}

TEST(llm_provider_openclaw_session_key_per_conversation)
{
    struct llmw_model m;
    struct llmw_call_spec a, b;
    char err[ERRSTR_SIZE];
    json_t *msgs = sample_messages();
    model_init(&m, "openclaw", "http://gw:18789", "main", "", true);
    REQUIRE(llmw_provider_request(&m, msgs, "11111111-1111-4111-8111-111111111111", &a, err,
                                  sizeof(err)) == AB_OK);
    REQUIRE(llmw_provider_request(&m, msgs, "22222222-2222-4222-8222-222222222222", &b, err,
                                  sizeof(err)) == AB_OK);
    CHECK_STR_EQ(header_value(&a, "x-openclaw-session-key"),
                 "agent:main:11111111-1111-4111-8111-111111111111");
    CHECK_STR_EQ(header_value(&b, "x-openclaw-session-key"),
                 "agent:main:22222222-2222-4222-8222-222222222222");
    /* Same agent, same body: only the session differs. */
    CHECK_STR_EQ(header_value(&a, "x-openclaw-agent-id"), header_value(&b, "x-openclaw-agent-id"));
    CHECK_STR_EQ(a.body, b.body);
    llmw_call_spec_cleanup(&a);
    llmw_call_spec_cleanup(&b);
    llmw_model_cleanup(&m);
    json_decref(msgs);
}

/* ---- refusals ----------------------------------------------------------------------------- */

TEST(llm_provider_refuses_unknown_provider)
{
    static const char *const bad[] = { "anthropic",     "",        "OpenAI", "openai ",
                                       "openclaw/main", "OPENCLAW" };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        struct llmw_model m;
        model_init(&m, bad[i], "https://api.openai.com", "gpt-4o-mini", "sk-x", true);
        const char *err = refused(&m);
        CHECK_STR_CONTAINS(err, "unknown provider");
        char quoted[64];
        snprintf(quoted, sizeof(quoted), "\"%s\"", bad[i]);
        CHECK_STR_CONTAINS(err, quoted);
        llmw_model_cleanup(&m);
    }
}

TEST(llm_provider_refuses_bad_openclaw_agent)
{
    char id65[LLMW_OPENCLAW_AGENT_MAX + 2], prefixed65[LLMW_OPENCLAW_AGENT_MAX + 16];
    memset(id65, 'a', LLMW_OPENCLAW_AGENT_MAX + 1);
    id65[LLMW_OPENCLAW_AGENT_MAX + 1] = '\0';
    snprintf(prefixed65, sizeof(prefixed65), "openclaw/%s", id65);
    const char *const bad[] = {
        /* empty, or a prefix and nothing after it */
        "",
        "openclaw/",
        "openclaw:",
        "agent:",
        /* 65 characters */
        id65,
        prefixed65,
        /* '/', ' ', a line break (it would end the header), a tab */
        "a/b",
        "openclaw/a/b",
        "openclaw//main",
        "ma in",
        " main",
        "main\n",
        "main\r\nX-Evil: 1",
        "ma\tin",
        /* non-ASCII */
        "caf\xc3\xa9",
        "\xe5\x8a\xa9\xe6\x89\x8b",
        "main\xff",
        /* ':' and '.'; one prefix only */
        "agent:main:extra",
        "openclaw/agent:main",
        "main.v2",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        struct llmw_model m;
        model_init(&m, "openclaw", "http://gw:18789", bad[i], "", true);
        const char *err = refused(&m);
        CHECK_STR_CONTAINS(err, "names no OpenClaw agent");
        llmw_model_cleanup(&m);
    }

    /* The message quotes the model as written, so an operator sees what to fix. */
    struct llmw_model m;
    model_init(&m, "openclaw", "http://gw:18789", "openclaw/a b", "", true);
    CHECK_STR_CONTAINS(refused(&m), "\"openclaw/a b\"");
    llmw_model_cleanup(&m);
}

TEST(llm_provider_refuses_key_with_line_break)
{
    /* Each key would split the Authorization header and smuggle one of its own. */
    static const char *const keys[] = { "sk-SECRETabc\r\nX-Evil: 1", "sk-SECRETabc\n",
                                        "\rsk-SECRETabc", "sk-SECRET\nabc",
                                        "sk-SECRET\rabc" };
    const char *const providers[] = { "openai", "openclaw" };
    for (size_t p = 0; p < 2; p++) {
        for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++) {
            struct llmw_model m;
            model_init(&m, providers[p], "https://api.openai.com", "main", keys[i], true);
            const char *err = refused(&m);
            CHECK_STR_CONTAINS(err, "line break");
            /* The key is a secret: no part of it in the message that gets logged. */
            if (strstr(err, "SECRET") != NULL || strstr(err, "sk-") != NULL ||
                strstr(err, "Evil") != NULL)
                ab_test_fail(__FILE__, __LINE__, "errstr shows the key: %s", err);
            llmw_model_cleanup(&m);
        }
    }
}

TEST(llm_provider_errstr_truncated_safely)
{
    struct llmw_model m;
    struct llmw_call_spec spec;
    json_t *msgs = sample_messages();
    model_init(&m, "nope", "https://api.openai.com", "gpt-4o-mini", "", true);
    char err[12];
    memset(err, 'X', sizeof(err));
    CHECK_INT_EQ(llmw_provider_request(&m, msgs, CONVERSATION, &spec, err, 8), AB_ERR_INVALID);
    CHECK_INT_EQ(strlen(err), 7);
    CHECK(err[8] == 'X'); /* nothing written past the size given */
    CHECK_STR_EQ(err, "model g");
    llmw_call_spec_cleanup(&spec);
    llmw_model_cleanup(&m);
    json_decref(msgs);
}

/* A refusal quotes the model with "%.80s", a byte count, so a model of non-ASCII text longer
 * than 80 bytes (the column allows 200 characters) would be cut inside a UTF-8 sequence; the
 * message goes on into JSON (record_attempt) and PostgreSQL (error_message), which both
 * refuse invalid UTF-8. The refusals end valid (ab_utf8_sanitize). */
TEST(llm_provider_refusal_is_valid_utf8_when_cut)
{
    /* "agent:x" is 7 bytes, each "é" 2: byte 80 is the first half of the 37th "é". */
    char model[128] = "agent:x";
    for (int i = 0; i < 40; i++)
        strcat(model, "\xc3\xa9");
    struct llmw_model m;
    model_init(&m, "openclaw", "http://gw:18789", model, "", true);
    json_t *s = json_string(refused(&m));
    if (s == NULL)
        ab_test_fail(__FILE__, __LINE__, "the openclaw refusal is not valid UTF-8");
    json_decref(s);
    llmw_model_cleanup(&m);

    char provider[128] = "x";
    for (int i = 0; i < 30; i++)
        strcat(provider, "\xc3\xa9");
    model_init(&m, provider, "https://api.openai.com", "gpt-4o-mini", "", true);
    s = json_string(refused(&m));
    if (s == NULL)
        ab_test_fail(__FILE__, __LINE__, "the unknown-provider refusal is not valid UTF-8");
    json_decref(s);
    llmw_model_cleanup(&m);
}

TEST(llm_provider_cleanup_is_idempotent)
{
    llmw_call_spec_cleanup(NULL);
    llmw_model_cleanup(NULL);
    struct llmw_call_spec spec = { 0 };
    llmw_call_spec_cleanup(&spec);

    struct llmw_model m;
    json_t *msgs = sample_messages();
    model_init(&m, "openai", "https://api.openai.com", "gpt-4o-mini", "sk-x", true);
    request_ok(&m, msgs, &spec);
    llmw_call_spec_cleanup(&spec);
    CHECK(spec.url == NULL && spec.headers == NULL && spec.body == NULL && spec.body_len == 0);
    llmw_call_spec_cleanup(&spec); /* cleared: a second cleanup frees nothing twice */
    llmw_model_cleanup(&m);
    CHECK(m.name == NULL && m.provider == NULL && m.api_key == NULL && m.id[0] == '\0');
    llmw_model_cleanup(&m);
    json_decref(msgs);
}

/* ---- prompt ------------------------------------------------------------------------------- */

/* Message i's role and content; each message has exactly those two string fields. */
static void check_message(const json_t *msgs, size_t i, const char *role, const char *content)
{
    const json_t *msg = json_array_get(msgs, i);
    if (!json_is_object(msg) || json_object_size(msg) != 2) {
        ab_test_fail(__FILE__, __LINE__, "message %zu is not {role, content}", i);
        return;
    }
    const char *r = json_string_value(json_object_get(msg, "role"));
    const char *c = json_string_value(json_object_get(msg, "content"));
    if (r == NULL || strcmp(r, role) != 0)
        ab_test_fail(__FILE__, __LINE__, "message %zu: role \"%s\", want \"%s\"", i,
                     r ? r : "(null)", role);
    if (content != NULL && (c == NULL || strcmp(c, content) != 0))
        ab_test_fail(__FILE__, __LINE__, "message %zu: content \"%s\", want \"%s\"", i,
                     c ? c : "(null)", content);
}

static const char *content_of(const json_t *msgs, size_t i)
{
    return json_string_value(json_object_get(json_array_get(msgs, i), "content"));
}

static bool ends_with(const char *s, const char *tail)
{
    size_t n = strlen(s), t = strlen(tail);
    return n >= t && strcmp(s + n - t, tail) == 0;
}

TEST(llm_prompt_role_description_is_system)
{
    const struct llmw_prompt p = {
        .agent_name = "Bob",
        .role_description = "You are Bob, the release manager. Answer in one line.",
        .sender_name = "Alice",
        .content = "Is 1.4 out?",
    };
    json_t *msgs = llmw_prompt_messages(&p);
    REQUIRE(json_is_array(msgs));
    CHECK_INT_EQ(json_array_size(msgs), 2);
    check_message(msgs, 0, "system", "You are Bob, the release manager. Answer in one line.");
    check_message(msgs, 1, "user", NULL);
    const char *last = content_of(msgs, 1);
    REQUIRE(last != NULL);
    /* The notice names the sender, says where the reply goes, then the message itself. */
    CHECK(strncmp(last, "[Message from agent Alice.", 26) == 0);
    CHECK_STR_CONTAINS(last, "delivered straight back to Alice");
    CHECK(ends_with(last, "]\n\nIs 1.4 out?"));
    CHECK(strstr(last, "Bob") == NULL); /* the answering agent is not the sender */
    json_decref(msgs);
}

TEST(llm_prompt_empty_role_falls_back_to_name)
{
    struct llmw_prompt p = {
        .agent_name = "Bob",
        .role_description = "",
        .sender_name = "Alice",
        .content = "ping",
    };
    json_t *msgs = llmw_prompt_messages(&p);
    CHECK_INT_EQ(json_array_size(msgs), 2);
    check_message(msgs, 0, "system", "You are Bob.");
    CHECK(ends_with(content_of(msgs, 1), "\n\nping"));
    json_decref(msgs);

    p.role_description = NULL; /* the same as "" */
    p.agent_name = "Dr. \"Q\" \xc3\x89lise";
    msgs = llmw_prompt_messages(&p);
    check_message(msgs, 0, "system", "You are Dr. \"Q\" \xc3\x89lise.");
    json_decref(msgs);
}

TEST(llm_prompt_history_roles_in_order)
{
    /* As the answering agent (Bob) sees it: its own turns are "assistant", Alice's "user". */
    static const struct llmw_turn history[] = {
        { false, "first from Alice" }, { true, "Bob answers" }, { false, "Alice again" },
        { false, "Alice once more" },  { true, "Bob, last" },
    };
    const struct llmw_prompt p = {
        .agent_name = "Bob",
        .role_description = "Be brief.",
        .sender_name = "Alice",
        .history = history,
        .history_count = 5,
        .content = "and now?",
    };
    json_t *msgs = llmw_prompt_messages(&p);
    REQUIRE(json_array_size(msgs) == 7);
    check_message(msgs, 0, "system", "Be brief.");
    check_message(msgs, 1, "user", "first from Alice");
    check_message(msgs, 2, "assistant", "Bob answers");
    check_message(msgs, 3, "user", "Alice again");
    check_message(msgs, 4, "user", "Alice once more");
    check_message(msgs, 5, "assistant", "Bob, last");
    check_message(msgs, 6, "user", NULL);
    /* History turns go as they are: the notice is only on the new message. */
    for (size_t i = 1; i <= 5; i++)
        CHECK(strstr(content_of(msgs, i), "[Message from agent") == NULL);
    CHECK_STR_CONTAINS(content_of(msgs, 6), "[Message from agent Alice.");
    CHECK(ends_with(content_of(msgs, 6), "\n\nand now?"));
    /* Only roles every provider takes. */
    for (size_t i = 0; i < json_array_size(msgs); i++) {
        const char *r = json_string_value(json_object_get(json_array_get(msgs, i), "role"));
        CHECK(r != NULL &&
              (strcmp(r, "system") == 0 || strcmp(r, "user") == 0 || strcmp(r, "assistant") == 0));
    }
    json_decref(msgs);
}

TEST(llm_prompt_no_history_and_empty_content)
{
    const struct llmw_prompt p = {
        .agent_name = "Bob",
        .role_description = "r",
        .sender_name = "Alice",
        .history = NULL,
        .history_count = 0,
        .content = "",
    };
    json_t *msgs = llmw_prompt_messages(&p);
    CHECK_INT_EQ(json_array_size(msgs), 2);
    check_message(msgs, 0, "system", "r");
    CHECK(ends_with(content_of(msgs, 1), "another way.]\n\n"));
    json_decref(msgs);
}

TEST(llm_prompt_text_survives_json_round_trip)
{
    const char *tricky = "\"quoted\" \\back\\slash\nline 2\r\n\ttab \x01\x1f caf\xc3\xa9 "
                         "\xe6\x97\xa5\xe6\x9c\xac\xe8\xaa\x9e \xf0\x9f\x91\x8b \xe2\x80\xa8 "
                         "{\"a\":[1]}";
    const struct llmw_turn history[] = { { false, tricky }, { true, tricky } };
    const struct llmw_prompt p = {
        .agent_name = "\xe5\x8a\xa9\xe6\x89\x8b \"B\"",
        .role_description = tricky,
        .sender_name = "Al\"ice\n\xf0\x9f\xa4\x96",
        .history = history,
        .history_count = 2,
        .content = tricky,
    };
    json_t *msgs = llmw_prompt_messages(&p);
    REQUIRE(json_array_size(msgs) == 4);
    check_message(msgs, 0, "system", tricky);
    check_message(msgs, 1, "user", tricky);
    check_message(msgs, 2, "assistant", tricky);
    CHECK_STR_CONTAINS(content_of(msgs, 3), "[Message from agent Al\"ice\n\xf0\x9f\xa4\x96.");
    CHECK(ends_with(content_of(msgs, 3), tricky));

    /* Dumped and loaded back (as the request body is), every string is unchanged. */
    char *text = json_dumps(msgs, JSON_COMPACT);
    REQUIRE(text != NULL);
    json_error_t jerr;
    json_t *back = json_loads(text, 0, &jerr);
    CHECK(back != NULL && json_equal(back, msgs));
    json_decref(back);
    free(text);

    /* And through the provider's body too. */
    struct llmw_model m;
    struct llmw_call_spec spec;
    model_init(&m, "openai", "https://api.openai.com", "gpt-4o-mini", "", false);
    request_ok(&m, msgs, &spec);
    json_t *body = body_json(&spec);
    CHECK(json_equal(json_object_get(body, "messages"), msgs));
    json_decref(body);
    llmw_call_spec_cleanup(&spec);
    llmw_model_cleanup(&m);
    json_decref(msgs);
}
