/* Tests for services/llm-worker/llm_request (the agentbus.llm.request a native agent answers)
 * with a sender that is an agent or an incoming webhook, and for the prompt's notice to a
 * webhook's message (services/llm-worker/prompt): what is accepted, what each field becomes,
 * and every refused shape with the reason the dead letter carries.
 *
 * llm_request.c is included rather than linked: the Makefile's UNIT_SERVICE_SRC, the list
 * of service files the unit tests link, does not name it. Its only exported function is
 * llmw_request_parse, which no other file of the unit-test binary defines. */
#include "test.h"

#include "services/llm-worker/llm_request.h"
#include "services/llm-worker/prompt.h"

#include <jansson.h>

#define TENANT       "0b7e3c1a-5d2f-4e8a-9c61-2f4d8b9a7e10"
#define CONVERSATION "1c8f4d2b-6e3a-4f9b-8d72-3a5e9c0b8f21"
#define MESSAGE      "2d9a5e3c-7f4b-4a0c-9e83-4b6f0d1c9a32"
#define ALICE        "3e0b6f4d-8a5c-4b1d-8f94-5c7a1e2d0b43"
#define BOB          "4f1c7a5e-9b6d-4c2e-9a05-6d8b2f3e1c54"
#define REASON_SIZE  512

/* The data of a request from agent Alice to native agent Bob. @ownership the caller's. */
static json_t *agent_data(void)
{
    json_t *data = json_pack("{s:s, s:s, s:s, s:{s:s, s:s, s:s}, s:{s:s, s:s, s:s}, s:s, s:s}",
                             "tenant_id", TENANT, "conversation_id", CONVERSATION,
                             "message_event_id", MESSAGE, "sender", "type", "agent", "id", ALICE,
                             "name", "Alice", "target", "type", "native_agent", "id", BOB, "name",
                             "Bob", "channel", "agent", "content", "hello");
    REQUIRE(data != NULL);
    return data;
}

/* The same request as the dispatcher makes it for a webhook's run_agent action. */
static json_t *webhook_data(void)
{
    json_t *data = agent_data();
    json_object_set_new(data, "sender",
                        json_pack("{s:s, s:s, s:s}", "type", "webhook", "name",
                                  "webhook github-events", "hook_id", "github-events"));
    json_object_set_new(data, "session_key", json_string("hook:alerts-session"));
    return data;
}

/* Parses an llm.request with data (taken); *ev is the event r borrows from (the caller frees
 * it with ab_event_free). */
static enum ab_err parse(json_t *data, struct ab_event **ev, struct llmw_request *r,
                         char reason[REASON_SIZE])
{
    *ev = ab_event_new(LLMW_LLM_REQUEST_TYPE, "/test", BOB, data);
    REQUIRE(*ev != NULL);
    reason[0] = '\0';
    return llmw_request_parse(*ev, r, reason, REASON_SIZE);
}

/* Expects data (taken) to be refused with a reason containing `why`. */
static void expect_refused(json_t *data, const char *why)
{
    struct ab_event *ev;
    struct llmw_request r;
    char reason[REASON_SIZE];
    CHECK_INT_EQ(parse(data, &ev, &r, reason), AB_ERR_INVALID);
    CHECK_STR_CONTAINS(reason, why);
    ab_event_free(ev);
}

/* ---- the sender --------------------------------------------------------------------------- */

TEST(llm_request_agent_sender_is_read_as_before)
{
    struct ab_event *ev;
    struct llmw_request r;
    char reason[REASON_SIZE];
    json_t *data = agent_data();
    json_object_set_new(json_object_get(data, "sender"), "id",
                        json_string("3E0B6F4D-8A5C-4B1D-8F94-5C7A1E2D0B43"));
    json_object_set_new(data, "hops", json_integer(2));
    REQUIRE(parse(data, &ev, &r, reason) == AB_OK);
    CHECK_INT_EQ(r.sender_kind, LLMW_SENDER_AGENT);
    CHECK_STR_EQ(r.sender_id, ALICE); /* in lower case */
    CHECK_STR_EQ(r.sender_name, "Alice");
    CHECK(r.hook_id == NULL);
    CHECK_STR_EQ(r.target_id, BOB);
    CHECK_STR_EQ(r.conversation_id, CONVERSATION);
    CHECK_STR_EQ(r.message_event_id, MESSAGE);
    CHECK_STR_EQ(r.content, "hello");
    CHECK_INT_EQ(r.hops, 2);
    CHECK_INT_EQ(strlen(r.event_id), AB_UUID_LEN);
    ab_event_free(ev);
}

TEST(llm_request_webhook_sender_has_a_name_and_a_hook_id_and_no_id)
{
    struct ab_event *ev;
    struct llmw_request r;
    char reason[REASON_SIZE];
    REQUIRE(parse(webhook_data(), &ev, &r, reason) == AB_OK);
    CHECK_INT_EQ(r.sender_kind, LLMW_SENDER_WEBHOOK);
    CHECK_STR_EQ(r.sender_id, "");
    CHECK_STR_EQ(r.sender_name, "webhook github-events");
    CHECK_STR_EQ(r.hook_id, "github-events");
    CHECK_STR_EQ(r.target_id, BOB);
    CHECK_STR_EQ(r.conversation_id, CONVERSATION);
    CHECK_INT_EQ(r.hops, 0);
    ab_event_free(ev);
}

TEST(llm_request_webhook_hook_id_is_optional)
{
    struct ab_event *ev;
    struct llmw_request r;
    char reason[REASON_SIZE];
    json_t *data = webhook_data();
    json_object_del(json_object_get(data, "sender"), "hook_id");
    REQUIRE(parse(data, &ev, &r, reason) == AB_OK);
    CHECK(r.hook_id == NULL);
    CHECK_STR_EQ(r.sender_name, "webhook github-events");
    ab_event_free(ev);

    data = webhook_data();
    json_object_set_new(json_object_get(data, "sender"), "hook_id", json_null());
    REQUIRE(parse(data, &ev, &r, reason) == AB_OK);
    CHECK(r.hook_id == NULL);
    ab_event_free(ev);
}

TEST(llm_request_webhook_with_an_id_is_refused)
{
    json_t *data = webhook_data();
    json_object_set_new(json_object_get(data, "sender"), "id", json_string(ALICE));
    expect_refused(data, "data.sender.id must be absent for a webhook sender");
    data = webhook_data();
    json_object_set_new(json_object_get(data, "sender"), "id", json_string("not a uuid"));
    expect_refused(data, "data.sender.id must be absent for a webhook sender");
    data = webhook_data();
    json_object_set_new(json_object_get(data, "sender"), "id", json_integer(0));
    expect_refused(data, "data.sender.id must be absent for a webhook sender");
}

/* As the dispatcher reads it: a null id is no id, so what it routed is answered here. */
TEST(llm_request_webhook_null_id_is_no_id)
{
    struct ab_event *ev;
    struct llmw_request r;
    char reason[REASON_SIZE];
    json_t *data = webhook_data();
    json_object_set_new(json_object_get(data, "sender"), "id", json_null());
    REQUIRE(parse(data, &ev, &r, reason) == AB_OK);
    CHECK_INT_EQ(r.sender_kind, LLMW_SENDER_WEBHOOK);
    CHECK_STR_EQ(r.sender_id, "");
    ab_event_free(ev);
}

TEST(llm_request_webhook_without_a_name_is_refused)
{
    json_t *data = webhook_data();
    json_object_del(json_object_get(data, "sender"), "name");
    expect_refused(data, "data.sender.name must be a non-empty string");
    data = webhook_data();
    json_object_set_new(json_object_get(data, "sender"), "name", json_string(""));
    expect_refused(data, "data.sender.name must be a non-empty string");
    data = webhook_data();
    json_object_set_new(json_object_get(data, "sender"), "name", json_integer(7));
    expect_refused(data, "data.sender.name must be a non-empty string");
}

TEST(llm_request_webhook_hook_id_must_be_a_string)
{
    json_t *data = webhook_data();
    json_object_set_new(json_object_get(data, "sender"), "hook_id", json_integer(1));
    expect_refused(data, "data.sender.hook_id must be a non-empty string");
    data = webhook_data();
    json_object_set_new(json_object_get(data, "sender"), "hook_id", json_string(""));
    expect_refused(data, "data.sender.hook_id must be a non-empty string");
    data = webhook_data();
    json_object_set_new(json_object_get(data, "sender"), "hook_id",
                        json_stringn("a\0b", 3)); /* PostgreSQL text holds no NUL */
    expect_refused(data, "data.sender.hook_id must be a non-empty string without NUL");
}

TEST(llm_request_other_sender_types_are_refused)
{
    const char *types[] = { "system", "member", "Webhook", "agents", "" };
    for (size_t i = 0; i < sizeof(types) / sizeof(types[0]); i++) {
        json_t *data = agent_data();
        json_object_set_new(json_object_get(data, "sender"), "type", json_string(types[i]));
        expect_refused(data, types[i][0] ? "data.sender.type must be \"agent\" or \"webhook\""
                                         : "data.sender.type must be a non-empty string");
    }
    json_t *data = agent_data();
    json_object_del(json_object_get(data, "sender"), "type");
    expect_refused(data, "data.sender.type must be a non-empty string");
}

TEST(llm_request_agent_sender_still_needs_its_id)
{
    json_t *data = agent_data();
    json_object_del(json_object_get(data, "sender"), "id");
    expect_refused(data, "data.sender.id must be a UUID");
    data = agent_data();
    json_object_set_new(json_object_get(data, "sender"), "id", json_string("x"));
    expect_refused(data, "data.sender.id must be a UUID");
}

TEST(llm_request_webhook_request_still_needs_the_rest)
{
    const char *fields[] = { "tenant_id", "conversation_id", "message_event_id", "content" };
    for (size_t i = 0; i < sizeof(fields) / sizeof(fields[0]); i++) {
        json_t *data = webhook_data();
        json_object_del(data, fields[i]);
        expect_refused(data, fields[i]);
    }
    json_t *data = webhook_data();
    json_object_del(json_object_get(data, "target"), "id");
    expect_refused(data, "data.target.id must be a UUID");
    data = webhook_data();
    json_object_set_new(data, "hops", json_integer(-1));
    expect_refused(data, "data.hops must be an integer");
    data = webhook_data();
    json_object_set_new(data, "sender", json_string("webhook github-events"));
    expect_refused(data, "data.sender and data.target must be objects");
}

/* ---- the prompt of a webhook's message ---------------------------------------------------- */

TEST(llm_prompt_webhook_notice_says_nobody_is_answered)
{
    const struct llmw_turn history[] = { { false, "an earlier alert" }, { true, "noted" } };
    const struct llmw_prompt p = {
        .agent_name = "Bob",
        .role_description = "You watch the alerts.",
        .sender_name = "webhook github-events",
        .from_webhook = true,
        .history = history,
        .history_count = 2,
        .content = "<<<EXTERNAL_UNTRUSTED_CONTENT>>> push to main",
    };
    json_t *msgs = llmw_prompt_messages(&p);
    REQUIRE(json_array_size(msgs) == 4);
    CHECK_STR_EQ(json_string_value(json_object_get(json_array_get(msgs, 1), "role")), "user");
    CHECK_STR_EQ(json_string_value(json_object_get(json_array_get(msgs, 2), "role")),
                 "assistant");
    json_t *last = json_array_get(msgs, 3);
    const char *text = json_string_value(json_object_get(last, "content"));
    CHECK_STR_EQ(json_string_value(json_object_get(last, "role")), "user");
    CHECK_STR_EQ(text, "[Message from webhook github-events (an incoming webhook, not an agent). "
                       "Your text reply is recorded as your response; it is not sent back to "
                       "anyone.]\n\n<<<EXTERNAL_UNTRUSTED_CONTENT>>> push to main");
    CHECK(strstr(text, "delivered straight back") == NULL);
    json_decref(msgs);
}
