/* Tests for the notifier's pure parts: the outgoing endpoints' configuration (common/
 * outgoing.c), what Feishu's answers mean (services/notifier/feishu.c), and how delivery
 * jobs are read (services/notifier/job.c): endpoints, forwards, members and chats. */
#include "test.h"

#include <jansson.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "common/crypto.h"
#include "common/outgoing.h"
#include "common/util.h"
#include "services/notifier/delivery.h"
#include "services/notifier/feishu.h"

#define SECRET "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"

static const int64_t default_schedule[] = {5000, 300000};

static enum ab_err parse(const char *text, struct ab_outgoing **out, char *err, size_t size)
{
    json_t *j = json_loads(text, 0, NULL);
    enum ab_err rc = ab_outgoing_parse(j, default_schedule, 2, 15000, out, err, size);
    json_decref(j);
    return rc;
}

TEST(outgoing_parses_the_seed_shape_and_its_defaults)
{
    struct ab_outgoing *o = NULL;
    char err[256] = "";
    CHECK_INT_EQ(
        parse("{\"outgoing\": [{\"id\": \"slack-notify\", \"url\": \"https://hooks.example.com/x\","
              " \"events\": [\"message_received\", \"agent_response\"], \"method\": \"POST\"},"
              " {\"id\": \"b\", \"url\": \"http://h/\", \"events\": [\"*\"], \"secret\": [\"" SECRET
              "\", \"" SECRET "\"], \"retry\": {\"maxAttempts\": 3, \"backoff\": \"exponential\"},"
              " \"method\": \"PUT\", \"timeoutMs\": 500}]}",
              &o, err, sizeof(err)),
        AB_OK);
    CHECK_INT_EQ((int)o->count, 2);
    const struct ab_outgoing_endpoint *a = ab_outgoing_find(o, "slack-notify");
    CHECK(a != NULL && strcmp(a->method, "POST") == 0 && a->timeout_ms == 15000);
    CHECK(a->events == ((1u << AB_OUTGOING_MESSAGE_RECEIVED) | (1u << AB_OUTGOING_AGENT_RESPONSE)));
    CHECK_INT_EQ((int)a->retry.schedule_len, 2); /* the default schedule */
    CHECK(a->retry.schedule_ms[1] == 300000);
    const struct ab_outgoing_endpoint *b = ab_outgoing_find(o, "b");
    CHECK(b->events == (1u << AB_OUTGOING_EVENT__COUNT) - 1 && b->secret_count == 2);
    CHECK_INT_EQ((int)b->retry.schedule_len, 2); /* 3 attempts: 5 s, 10 s */
    CHECK(b->retry.schedule_ms[0] == 5000 && b->retry.schedule_ms[1] == 10000);
    CHECK(strcmp(b->method, "PUT") == 0 && b->timeout_ms == 500);
    CHECK(ab_outgoing_find(o, "c") == NULL);
    ab_outgoing_free(o);
}

TEST(outgoing_refuses_what_would_silently_misbehave)
{
    static const struct {
        const char *json, *why;
    } bad[] = {
        {"{\"outgoing\": {}}", "must be a list"},
        {"{\"outgoing\": [{\"url\": \"http://h\", \"events\": [\"error\"]}]}", "id must be"},
        {"{\"outgoing\": [{\"id\": \"a b\", \"url\": \"http://h\", \"events\": [\"error\"]}]}",
         "id must be"},
        {"{\"outgoing\": [{\"id\": \"a\", \"url\": \"ftp://h\", \"events\": [\"error\"]}]}",
         "url must be"},
        {"{\"outgoing\": [{\"id\": \"a\", \"url\": \"http://u:p@h/\", \"events\": [\"error\"]}]}",
         "user info"},
        {"{\"outgoing\": [{\"id\": \"a\", \"url\": \"http://h\", \"events\": []}]}", "non-empty"},
        {"{\"outgoing\": [{\"id\": \"a\", \"url\": \"http://h\", \"events\": [\"msg\"]}]}",
         "unknown event \"msg\""},
        {"{\"outgoing\": [{\"id\": \"a\", \"url\": \"http://h\", \"events\": [\"error\"], "
         "\"secret\": \"plain\"}]}",
         "whsec_"},
        {"{\"outgoing\": [{\"id\": \"a\", \"url\": \"http://h\", \"events\": [\"error\"], "
         "\"scret\": \"x\"}]}",
         "unknown field \"scret\""},
        {"{\"outgoing\": [{\"id\": \"a\", \"url\": \"http://h\", \"events\": [\"error\"], "
         "\"method\": \"GET\"}]}",
         "POST or PUT"},
        {"{\"outgoing\": [{\"id\": \"a\", \"url\": \"http://h\", \"events\": [\"error\"], "
         "\"retry\": {\"maxAttempts\": 0}}]}",
         "maxAttempts"},
        {"{\"outgoing\": [{\"id\": \"a\", \"url\": \"http://h\", \"events\": [\"error\"], "
         "\"retry\": {\"scheduleMs\": [-1]}}]}",
         "scheduleMs"},
        {"{\"outgoing\": [{\"id\": \"a\", \"url\": \"http://h\", \"events\": [\"error\"]},"
         " {\"id\": \"a\", \"url\": \"http://h\", \"events\": [\"error\"]}]}",
         "used by an earlier"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        struct ab_outgoing *o = (struct ab_outgoing *)1;
        char err[256] = "";
        CHECK_INT_EQ(parse(bad[i].json, &o, err, sizeof(err)), AB_ERR_CONFIG);
        CHECK(o == NULL);
        if (strstr(err, bad[i].why) == NULL) {
            fprintf(stderr, "case %zu: \"%s\" does not say \"%s\"\n", i, err, bad[i].why);
            CHECK(false);
        }
    }
}

TEST(outgoing_maps_event_types_and_parses_schedules)
{
    enum ab_hook_event k;
    CHECK(ab_outgoing_event_of_type("agentbus.agent_response", &k) &&
          k == AB_OUTGOING_AGENT_RESPONSE);
    CHECK(ab_outgoing_event_of_type("agentbus.notify.failed", &k) &&
          k == AB_OUTGOING_DELIVERY_FAILED);
    CHECK(!ab_outgoing_event_of_type("agentbus.message.sent", &k));
    int64_t *s = NULL;
    CHECK_INT_EQ((int)ab_outgoing_parse_schedule("5000, 300000,1800000", &s), 3);
    CHECK(s[2] == 1800000);
    free(s);
    CHECK_INT_EQ((int)ab_outgoing_parse_schedule("", &s), 0);
    CHECK_INT_EQ((int)ab_outgoing_parse_schedule("5,x", &s), 0);
    CHECK_INT_EQ((int)ab_outgoing_parse_schedule("-5", &s), 0);
}

TEST(feishu_answers_are_told_apart)
{
    CHECK_INT_EQ(notify_feishu_classify(200, 0), NOTIFY_FEISHU_SENT);
    CHECK_INT_EQ(notify_feishu_classify(400, 99991663), NOTIFY_FEISHU_TOKEN);
    CHECK_INT_EQ(notify_feishu_classify(429, 99991400), NOTIFY_FEISHU_THROTTLED);
    CHECK_INT_EQ(notify_feishu_classify(400, 99991400), NOTIFY_FEISHU_THROTTLED);
    CHECK_INT_EQ(notify_feishu_classify(429, -1), NOTIFY_FEISHU_THROTTLED);
    CHECK_INT_EQ(notify_feishu_classify(400, 230020), NOTIFY_FEISHU_THROTTLED);
    CHECK_INT_EQ(notify_feishu_classify(400, 230049), NOTIFY_FEISHU_RETRY);
    CHECK_INT_EQ(notify_feishu_classify(200, 11232), NOTIFY_FEISHU_RETRY); /* custom bot */
    CHECK_INT_EQ(notify_feishu_classify(502, -1), NOTIFY_FEISHU_RETRY);    /* a proxy's page */
    CHECK_INT_EQ(notify_feishu_classify(500, 1), NOTIFY_FEISHU_RETRY);
    CHECK_INT_EQ(notify_feishu_classify(400, 230013), NOTIFY_FEISHU_REJECTED);
    CHECK_INT_EQ(notify_feishu_classify(400, 99991672), NOTIFY_FEISHU_REJECTED);
    CHECK_INT_EQ(notify_feishu_classify(200, 19021), NOTIFY_FEISHU_REJECTED); /* bot sign */
    CHECK_INT_EQ(notify_feishu_classify(404, -1), NOTIFY_FEISHU_REJECTED);
}

TEST(feishu_bodies_are_feishu_s_wire_format)
{
    char *body = notify_feishu_send_body("u1", "line \"one\"\nline two", "uuid-1");
    json_t *j = json_loads(body, 0, NULL);
    CHECK(strcmp(json_string_value(json_object_get(j, "msg_type")), "text") == 0);
    /* content is JSON serialized into a string */
    json_t *content = json_loads(json_string_value(json_object_get(j, "content")), 0, NULL);
    CHECK(strcmp(json_string_value(json_object_get(content, "text")), "line \"one\"\nline two") ==
          0);
    CHECK(strcmp(json_string_value(json_object_get(j, "uuid")), "uuid-1") == 0);
    json_decref(content);
    json_decref(j);
    free(body);

    body = notify_feishu_bot_body("hi", "demo", 1599360473);
    j = json_loads(body, 0, NULL);
    CHECK(strcmp(json_string_value(json_object_get(j, "sign")),
                 "l1N0gAcBjdwBvGm1xMjOF0XSyaLRpR7tuO5dHfhAYc8=") == 0);
    CHECK(strcmp(json_string_value(json_object_get(j, "timestamp")), "1599360473") == 0);
    CHECK(json_is_object(json_object_get(j, "content"))); /* an object for bots */
    json_decref(j);
    free(body);

    char token[64];
    long expire = 0, code = 0;
    const char *ok =
        "{\"code\":0,\"msg\":\"ok\",\"tenant_access_token\":\"t-abc\",\"expire\":7200}";
    CHECK(notify_feishu_read_token(ok, strlen(ok), token, sizeof(token), &expire));
    CHECK(strcmp(token, "t-abc") == 0 && expire == 7200);
    const char *no = "{\"code\":20002,\"msg\":\"app_id and app_secret did not match\"}";
    CHECK(!notify_feishu_read_token(no, strlen(no), token, sizeof(token), &expire));
    char msg[64], id[32];
    notify_feishu_read_answer(no, strlen(no), &code, msg, sizeof(msg), id, sizeof(id));
    CHECK(code == 20002 && strcmp(msg, "app_id and app_secret did not match") == 0 && id[0] == 0);
    const char *sent = "{\"code\":0,\"msg\":\"success\",\"data\":{\"message_id\":\"om_1\"}}";
    notify_feishu_read_answer(sent, strlen(sent), &code, NULL, 0, id, sizeof(id));
    CHECK(code == 0 && strcmp(id, "om_1") == 0);
    notify_feishu_read_answer("<html>", 6, &code, msg, sizeof(msg), NULL, 0);
    CHECK(code == -1 && msg[0] == 0);
    CHECK(notify_feishu_token_use_ms(7200) == 6900 * 1000LL);
    CHECK(notify_feishu_token_use_ms(300) == 150 * 1000LL);
}

TEST(notify_error_text_cut_to_size_stays_valid_utf8)
{
    struct notify_delivery d = {0};
    char msg[2048] = "";
    for (int i = 0; i < 300; i++)
        strcat(msg, "频"); /* 3 bytes each: the 512-byte buffer cuts one in two */
    notify_delivery_set_error(&d, "feishu_1", "Feishu answered: %s", msg);
    CHECK(strlen(d.error) < sizeof(d.error));
    CHECK(ab_utf8_sanitize(d.error)); /* true: it was valid already */
}

TEST(notify_retry_event_round_trips_with_a_stable_id)
{
    struct ab_outgoing *o = NULL;
    char err[256];
    CHECK_INT_EQ(
        parse("{\"outgoing\": [{\"id\": \"ep\", \"url\": \"http://h/\", \"events\": [\"*\"]}]}", &o,
              err, sizeof(err)),
        AB_OK);
    struct ab_event *job =
        ab_event_new_derived(NOTIFY_TYPE_WEBHOOK, "/t", "ep",
                             json_pack("{s:s, s:s, s:{s:s}}", "endpoint_id", "ep", "event", "error",
                                       "payload", "type", "error"),
                             "job:%d", 1);
    const struct notify_job_config cfg = {o, default_schedule, 2, 15000};
    struct notify_delivery *d = calloc(1, sizeof(*d));
    REQUIRE(notify_delivery_from_job(d, job, "webhook:ep", &cfg, err, sizeof(err)) == AB_OK);
    CHECK(d->attempt == 1 && strcmp(d->destination, "webhook:ep") == 0);
    d->outcome = NOTIFY_RETRY;
    d->next_due_ms = 1767225600000LL;
    struct ab_event *retry = notify_retry_event(d), *again = notify_retry_event(d);
    CHECK_STR_EQ(retry->id, again->id); /* published twice, one event */
    struct notify_delivery *r = calloc(1, sizeof(*r));
    int64_t due = 0;
    REQUIRE(notify_delivery_from_retry(r, retry, &cfg, &due, err, sizeof(err)) == AB_OK);
    CHECK(r->attempt == 2 && due == 1767225600000LL);
    CHECK_STR_EQ(r->id, d->id); /* the webhook-id of every attempt */
    CHECK_STR_EQ(r->key, "webhook:ep");
    CHECK_STR_EQ(r->body, d->body);
    ab_event_free(retry);
    ab_event_free(again);
    ab_event_free(job);
    notify_delivery_free(d);
    notify_delivery_free(r);
    ab_outgoing_free(o);
}

/* ---- jobs: forwards and Feishu chats ---- */

#define TENANT  "7d3b1c3e-9a4f-4c1e-8f00-000000000001"
#define MEMBER  "7d3b1c3e-9a4f-4c1e-8f00-000000000002"
#define FWD_URL "https://relay.example.com/in"

/* Reads one job of type (data is stolen) with the notifier's defaults (5 s, 5 min; 15 s).
 * @returns the error; *out the delivery (free it) whatever the error. */
static enum ab_err read_job(const char *type, json_t *data, struct notify_delivery **out,
                            char *reason, size_t size)
{
    const struct notify_job_config cfg = {NULL, default_schedule, 2, 15000};
    struct ab_event *ev = ab_event_new_derived(type, "/t", "s", data, "job:%s", type);
    struct notify_delivery *d = calloc(1, sizeof(*d));
    reason[0] = '\0';
    enum ab_err err = notify_delivery_from_job(d, ev, "k", &cfg, reason, size);
    ab_event_free(ev);
    *out = d;
    return err;
}

static json_t *forward_job(json_t *forward, json_t *payload)
{
    json_t *data = json_pack("{s:o, s:s, s:s}", "forward", forward, "event", "webhook_forward",
                             "tenant_id", TENANT);
    if (payload != NULL)
        json_object_set_new(data, "payload", payload);
    return data;
}

TEST(notify_forward_job_builds_its_own_endpoint)
{
    struct notify_delivery *d = NULL;
    char reason[256];
    REQUIRE(read_job(NOTIFY_TYPE_WEBHOOK,
                     forward_job(json_pack("{s:s, s:s, s:s, s:s, s:i}", "hook_id", "alerts-relay",
                                           "url", FWD_URL, "method", "PUT", "secret", SECRET,
                                           "timeout_ms", 2500),
                                 json_pack("{s:s, s:[i, i]}", "alert", "disk", "n", 1, 2)),
                     &d, reason, sizeof(reason)) == AB_OK);
    CHECK_INT_EQ(d->kind, NOTIFY_WEBHOOK);
    CHECK_STR_EQ(d->destination, "forward:alerts-relay");
    CHECK_STR_EQ(notify_delivery_endpoint_id(d), "forward:alerts-relay");
    REQUIRE(d->forward != NULL && d->endpoint == d->forward);
    CHECK_STR_EQ(d->endpoint->id, "forward:alerts-relay");
    CHECK_STR_EQ(d->endpoint->url, FWD_URL);
    CHECK_STR_EQ(d->endpoint->method, "PUT");
    CHECK(d->endpoint->secret_count == 1 && strcmp(d->endpoint->secrets[0], SECRET) == 0);
    CHECK(d->endpoint->timeout_ms == 2500 && d->endpoint->format == AB_OUTGOING_STANDARD);
    /* the notifier's schedule, copied: the delivery owns it */
    CHECK_INT_EQ((int)d->endpoint->retry.schedule_len, 2);
    CHECK(d->endpoint->retry.schedule_ms != default_schedule &&
          d->endpoint->retry.schedule_ms[1] == 300000);
    CHECK_STR_EQ(d->body, "{\"alert\":\"disk\",\"n\":[1,2]}");
    CHECK_STR_EQ(d->event_type, "webhook_forward");
    CHECK_STR_EQ(d->tenant_id, TENANT);
    notify_delivery_free(d);

    /* Defaults: POST, the notifier's timeout, no secret; any JSON value is a payload. */
    json_t *payloads[] = {json_pack("[s, i]", "a", 1), json_string("plain text"), json_integer(42),
                          json_null(), json_true()};
    const char *bodies[] = {"[\"a\",1]", "\"plain text\"", "42", "null", "true"};
    for (size_t i = 0; i < sizeof(payloads) / sizeof(payloads[0]); i++) {
        REQUIRE(read_job(NOTIFY_TYPE_WEBHOOK,
                         forward_job(json_pack("{s:s, s:s, s:n}", "hook_id", "h.1_x", "url",
                                               "http://relay.example.com:8080/p?q=1", "secret"),
                                     payloads[i]),
                         &d, reason, sizeof(reason)) == AB_OK);
        CHECK_STR_EQ(d->body, bodies[i]);
        CHECK_STR_EQ(d->endpoint->method, "POST");
        CHECK(d->endpoint->timeout_ms == 15000 && d->endpoint->secret_count == 0);
        CHECK_STR_EQ(d->destination, "forward:h.1_x");
        notify_delivery_free(d);
    }
}

TEST(notify_forward_job_refuses_what_an_endpoint_would)
{
    static const struct {
        const char *forward, *why; /* data.forward as JSON; NULL: no forward key */
    } bad[] = {
        {"\"https://x/\"", "data.forward must be an object"},
        {"{\"url\": \"" FWD_URL "\"}", "needs hook_id and url"},
        {"{\"hook_id\": \"h\"}", "needs hook_id and url"},
        {"{\"hook_id\": \"a b\", \"url\": \"" FWD_URL "\"}", "hook_id must be"},
        {"{\"hook_id\": \"a:b\", \"url\": \"" FWD_URL "\"}", "hook_id must be"},
        {"{\"hook_id\": \"\", \"url\": \"" FWD_URL "\"}", "hook_id must be"},
        {"{\"hook_id\": 7, \"url\": \"" FWD_URL "\"}", "hook_id must be"},
        {"{\"hook_id\": \"h\", \"url\": \"ftp://relay.example.com/\"}", "url must be"},
        {"{\"hook_id\": \"h\", \"url\": \"file:///etc/passwd\"}", "url must be"},
        {"{\"hook_id\": \"h\", \"url\": \"https://user:pw@relay.example.com/\"}", "user info"},
        {"{\"hook_id\": \"h\", \"url\": \"https://relay.example.com/a b\"}", "url must be"},
        {"{\"hook_id\": \"h\", \"url\": \"https:///nohost\"}", "url must be"},
        {"{\"hook_id\": \"h\", \"url\": \"" FWD_URL "\", \"method\": \"GET\"}", "POST or PUT"},
        {"{\"hook_id\": \"h\", \"url\": \"" FWD_URL "\", \"secret\": \"plain\"}", "whsec_"},
        {"{\"hook_id\": \"h\", \"url\": \"" FWD_URL "\", \"secret\": [\"" SECRET "\"]}", "whsec_"},
        {"{\"hook_id\": \"h\", \"url\": \"" FWD_URL "\", \"timeout_ms\": 99}", "timeout_ms"},
        {"{\"hook_id\": \"h\", \"url\": \"" FWD_URL "\", \"timeout_ms\": 300001}", "timeout_ms"},
        {"{\"hook_id\": \"h\", \"url\": \"" FWD_URL "\", \"timeout_ms\": \"5\"}", "timeout_ms"},
        {"{\"hook_id\": \"h\", \"url\": \"" FWD_URL "\", \"scret\": \"" SECRET "\"}",
         "unknown field data.forward.scret"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        struct notify_delivery *d = NULL;
        char reason[256];
        json_t *fwd = json_loads(bad[i].forward, JSON_DECODE_ANY, NULL);
        REQUIRE(fwd != NULL);
        CHECK_INT_EQ(read_job(NOTIFY_TYPE_WEBHOOK, forward_job(fwd, json_object()), &d, reason,
                              sizeof(reason)),
                     AB_ERR_INVALID);
        if (strstr(reason, bad[i].why) == NULL) {
            fprintf(stderr, "case %zu: \"%s\" does not say \"%s\"\n", i, reason, bad[i].why);
            CHECK(false);
        }
        CHECK(d->forward == NULL);
        notify_delivery_free(d);
    }

    /* The job around it. */
    struct notify_delivery *d = NULL;
    char reason[256];
    json_t *fwd = json_pack("{s:s, s:s}", "hook_id", "h", "url", FWD_URL);
    CHECK_INT_EQ(read_job(NOTIFY_TYPE_WEBHOOK, forward_job(fwd, NULL), &d, reason, sizeof(reason)),
                 AB_ERR_INVALID);
    CHECK_STR_CONTAINS(reason, "any JSON value");
    notify_delivery_free(d);
    json_t *data =
        forward_job(json_pack("{s:s, s:s}", "hook_id", "h", "url", FWD_URL), json_null());
    json_object_set_new(data, "endpoint_id", json_string("ep"));
    CHECK_INT_EQ(read_job(NOTIFY_TYPE_WEBHOOK, data, &d, reason, sizeof(reason)), AB_ERR_INVALID);
    CHECK_STR_CONTAINS(reason, "both endpoint_id and forward");
    notify_delivery_free(d);
    data = forward_job(json_pack("{s:s, s:s}", "hook_id", "h", "url", FWD_URL), json_object());
    json_object_del(data, "event");
    CHECK_INT_EQ(read_job(NOTIFY_TYPE_WEBHOOK, data, &d, reason, sizeof(reason)), AB_ERR_INVALID);
    CHECK_STR_CONTAINS(reason, "data.event");
    notify_delivery_free(d);
    /* An endpoint's payload is still an object, and "forward": null is no forward. */
    data = json_pack("{s:s, s:s, s:s, s:n}", "endpoint_id", "ep", "event", "error", "payload",
                     "text", "forward");
    CHECK_INT_EQ(read_job(NOTIFY_TYPE_WEBHOOK, data, &d, reason, sizeof(reason)), AB_ERR_INVALID);
    CHECK_STR_CONTAINS(reason, "(an object)");
    notify_delivery_free(d);
}

TEST(notify_forward_retry_carries_the_forward)
{
    struct notify_delivery *d = NULL;
    char reason[256];
    REQUIRE(read_job(NOTIFY_TYPE_WEBHOOK,
                     forward_job(json_pack("{s:s, s:s, s:s}", "hook_id", "alerts-relay", "url",
                                           FWD_URL, "secret", SECRET),
                                 json_pack("[i]", 1)),
                     &d, reason, sizeof(reason)) == AB_OK);
    d->outcome = NOTIFY_RETRY;
    d->next_due_ms = 1767225600000LL;
    struct ab_event *retry = notify_retry_event(d);
    /* Read back with no configured endpoint at all: the job carries everything. */
    const struct notify_job_config cfg = {NULL, default_schedule, 2, 15000};
    struct notify_delivery *r = calloc(1, sizeof(*r));
    int64_t due = 0;
    REQUIRE(notify_delivery_from_retry(r, retry, &cfg, &due, reason, sizeof(reason)) == AB_OK);
    CHECK(r->attempt == 2 && r->forward != NULL && r->endpoint == r->forward);
    CHECK_STR_EQ(r->id, d->id);
    CHECK_STR_EQ(r->endpoint->url, FWD_URL);
    CHECK_STR_EQ(r->endpoint->secrets[0], SECRET);
    CHECK_STR_EQ(r->body, "[1]");
    CHECK_STR_EQ(r->destination, "forward:alerts-relay");
    ab_event_free(retry);
    notify_delivery_free(d);
    notify_delivery_free(r);
}

TEST(notify_feishu_job_reads_a_member_or_a_chat)
{
    struct notify_delivery *d = NULL, *again = NULL, *member = NULL;
    char reason[256];
    /* The member form as the dispatcher writes it, and without a type (as before). */
    REQUIRE(read_job(NOTIFY_TYPE_FEISHU,
                     json_pack("{s:s, s:{s:s, s:s}, s:s}", "tenant_id", TENANT, "target", "type",
                               "member", "id", MEMBER, "content", "hi"),
                     &member, reason, sizeof(reason)) == AB_OK);
    CHECK_STR_EQ(member->destination, "feishu:" MEMBER);
    CHECK_STR_EQ(member->member_id, MEMBER);
    CHECK(member->chat_id[0] == '\0');
    REQUIRE(read_job(NOTIFY_TYPE_FEISHU,
                     json_pack("{s:s, s:{s:s}, s:s}", "tenant_id", TENANT, "target", "id", MEMBER,
                               "content", "hi"),
                     &d, reason, sizeof(reason)) == AB_OK);
    CHECK_STR_EQ(d->destination, "feishu:" MEMBER);
    notify_delivery_free(d);

    REQUIRE(read_job(NOTIFY_TYPE_FEISHU,
                     json_pack("{s:s, s:{s:s, s:s, s:s}, s:s}", "tenant_id", TENANT, "target",
                               "type", "chat", "id", "oc_84983ff6516d731e5b5f68d4ea2e1da5", "name",
                               "ops", "content", "deployed"),
                     &d, reason, sizeof(reason)) == AB_OK);
    CHECK_INT_EQ(d->kind, NOTIFY_FEISHU);
    CHECK_STR_EQ(d->chat_id, "oc_84983ff6516d731e5b5f68d4ea2e1da5");
    CHECK_STR_EQ(d->destination, "feishu:chat:oc_84983ff6516d731e5b5f68d4ea2e1da5");
    CHECK(d->member_id[0] == '\0');
    CHECK(ab_uuid_valid(d->uuid));
    /* The same job reads to the same uuid (every attempt); a member's differs. */
    REQUIRE(read_job(NOTIFY_TYPE_FEISHU,
                     json_pack("{s:s, s:{s:s, s:s}, s:s}", "tenant_id", TENANT, "target", "type",
                               "chat", "id", "oc_84983ff6516d731e5b5f68d4ea2e1da5", "content",
                               "deployed"),
                     &again, reason, sizeof(reason)) == AB_OK);
    CHECK_STR_EQ(again->uuid, d->uuid);
    CHECK(strcmp(member->uuid, d->uuid) != 0);
    notify_delivery_free(d);
    notify_delivery_free(again);
    notify_delivery_free(member);

    char longest[NOTIFY_CHAT_ID_MAX + 1], too_long[NOTIFY_CHAT_ID_MAX + 2];
    memset(longest, 'a', NOTIFY_CHAT_ID_MAX);
    longest[NOTIFY_CHAT_ID_MAX] = '\0';
    memset(too_long, 'a', NOTIFY_CHAT_ID_MAX + 1);
    too_long[NOTIFY_CHAT_ID_MAX + 1] = '\0';
    REQUIRE(read_job(NOTIFY_TYPE_FEISHU,
                     json_pack("{s:s, s:{s:s, s:s}, s:s}", "tenant_id", TENANT, "target", "type",
                               "chat", "id", longest, "content", "x"),
                     &d, reason, sizeof(reason)) == AB_OK);
    CHECK_STR_EQ(d->chat_id, longest);
    notify_delivery_free(d);

    static const struct {
        const char *type, *id, *tenant, *why;
    } bad[] = {
        {"chat", "", TENANT, "chat id"},
        {"chat", "oc_a b", TENANT, "chat id"},
        {"chat", "oc_a/../b", TENANT, "chat id"},
        {"chat", "oc_\xe9\xa2\x91", TENANT, "chat id"},
        {"chat", NULL, TENANT, "chat id"},
        {"chat", "oc_ok", "nope", "tenant_id"},
        {"member", "oc_ok", TENANT, "member's UUID"},
        {"agent", MEMBER, TENANT, "\"member\" or \"chat\""},
    };
    for (size_t i = 0; i <= sizeof(bad) / sizeof(bad[0]); i++) {
        /* the last case: a chat id one character too long */
        bool last = i == sizeof(bad) / sizeof(bad[0]);
        const char *id = last ? too_long : bad[i].id, *why = last ? "chat id" : bad[i].why;
        json_t *target = json_pack("{s:s}", "type", last ? "chat" : bad[i].type);
        if (id != NULL)
            json_object_set_new(target, "id", json_string(id));
        json_t *data = json_pack("{s:s, s:o, s:s}", "tenant_id", last ? TENANT : bad[i].tenant,
                                 "target", target, "content", "x");
        CHECK_INT_EQ(read_job(NOTIFY_TYPE_FEISHU, data, &d, reason, sizeof(reason)),
                     AB_ERR_INVALID);
        if (strstr(reason, why) == NULL) {
            fprintf(stderr, "case %zu: \"%s\" does not say \"%s\"\n", i, reason, why);
            CHECK(false);
        }
        notify_delivery_free(d);
    }
    /* A chat message needs its content as a member's does. */
    CHECK_INT_EQ(read_job(NOTIFY_TYPE_FEISHU,
                          json_pack("{s:s, s:{s:s, s:s}}", "tenant_id", TENANT, "target", "type",
                                    "chat", "id", "oc_ok"),
                          &d, reason, sizeof(reason)),
                 AB_ERR_INVALID);
    CHECK_STR_CONTAINS(reason, "data.content");
    notify_delivery_free(d);
}
