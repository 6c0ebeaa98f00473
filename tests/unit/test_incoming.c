/* Tests for common/incoming: the incoming webhooks' configuration (the seed's examples, the
 * defaults, inheritance of the shared secret and allowlist, and every refusal with the field
 * it names). */
#include "test.h"

#include "common/incoming.h"
#include "common/webhook_auth.h"

static struct ab_incoming *parse_ok(const char *text)
{
    char errstr[512] = "";
    struct ab_incoming *in = NULL;
    json_t *j = json_loads(text, 0, NULL);
    REQUIRE(j != NULL);
    if (ab_incoming_parse(j, &in, errstr, sizeof(errstr)) != AB_OK)
        ab_test_fail(__FILE__, __LINE__, "refused: %s", errstr);
    json_decref(j);
    REQUIRE(in != NULL);
    return in;
}

/* The configuration is refused and errstr contains want. */
static void expect_refused(int line, const char *text, const char *want)
{
    char errstr[512] = "";
    struct ab_incoming *in = NULL;
    json_t *j = json_loads(text, 0, NULL);
    if (j == NULL) {
        ab_test_fail(__FILE__, line, "test JSON does not parse: %s", text);
        return;
    }
    enum ab_err err = ab_incoming_parse(j, &in, errstr, sizeof(errstr));
    if (err != AB_ERR_CONFIG || in != NULL)
        ab_test_fail(__FILE__, line, "accepted: %s", text);
    else if (strstr(errstr, want) == NULL)
        ab_test_fail(__FILE__, line, "message \"%s\" lacks \"%s\"", errstr, want);
    json_decref(j);
}

TEST(incoming_seed_examples_parse)
{
    struct ab_incoming *in = parse_ok(
        "{\"incoming\": {\"enabled\": true, \"port\": 3011, \"secret\": \"your-webhook-secret\"},"
        " \"handlers\": ["
        "  {\"id\": \"github-events\", \"path\": \"/github\", \"action\": \"run_agent\","
        "   \"agentId\": \"devops\","
        "   \"template\": \"新的 GitHub 事件: {{event.action}} 在 {{event.repository.name}}\"},"
        "  {\"id\": \"github\", \"path\": \"/gh\", \"action\": \"send_message\","
        "   \"target\": {\"channel\": \"feishu\", \"peer\": \"dev-channel\"},"
        "   \"template\": \"🔔 {{event.action}}: {{event.pull_request.title}}\"},"
        "  {\"id\": \"alerts\", \"sessionMode\": \"persistent\", \"sessionKey\": "
        "\"alerts-session\","
        "   \"action\": \"run_agent\", \"agentId\": \"oncall\"}]}");
    CHECK_INT_EQ(in->count, 3);
    CHECK(in->enabled);
    CHECK_INT_EQ(in->port, 3011);
    CHECK_INT_EQ(in->max_body_bytes, 262144);
    CHECK_INT_EQ(in->idempotency_window_s, 86400);
    const struct ab_hook *h = &in->hooks[0];
    CHECK_STR_EQ(h->id, "github-events");
    CHECK_STR_EQ(h->path, "/github");
    CHECK_INT_EQ(h->action, AB_HOOK_RUN_AGENT);
    CHECK_STR_EQ(h->agent, "devops");
    CHECK_INT_EQ(h->secret_count, 1); /* inherited */
    CHECK_STR_EQ(h->secrets[0], "your-webhook-secret");
    CHECK_STR_EQ(h->secret_header, "X-Webhook-Secret");
    CHECK(!h->persistent && h->prefix_count == 1);
    CHECK_STR_EQ(h->session_prefixes[0], "hook:");
    CHECK(h->from_config && h->enabled && !h->accept_text && !h->unsafe_external_content);
    CHECK(h->allowed == NULL);
    CHECK_STR_EQ(in->hooks[1].channel, "feishu");
    CHECK_STR_EQ(in->hooks[1].peer, "dev-channel");
    CHECK(in->hooks[2].persistent);
    CHECK_STR_EQ(in->hooks[2].session_key, "alerts-session");
    ab_incoming_free(in);
}

TEST(incoming_defaults_without_configuration)
{
    char errstr[256];
    struct ab_incoming *in = NULL;
    CHECK_INT_EQ(ab_incoming_parse(NULL, &in, errstr, sizeof(errstr)), AB_OK);
    REQUIRE(in != NULL);
    CHECK(in->enabled && in->count == 0 && in->secret == NULL);
    CHECK_STR_EQ(in->secret_header, "X-Webhook-Secret");
    CHECK_INT_EQ(in->auth_max_failures, 10);
    CHECK_INT_EQ(in->auth_window_ms, 60000);
    ab_incoming_free(in);
}

TEST(incoming_signature_hooks_do_not_inherit_the_shared_secret)
{
    struct ab_incoming *in = parse_ok(
        "{\"incoming\": {\"secret\": \"shared-secret\", \"allowedIPs\": [\"10.0.0.0/8\"]},"
        " \"handlers\": [{\"id\": \"gh\", \"action\": \"custom\", \"target\": {\"topic\": \"t\"},"
        "  \"signature\": {\"scheme\": \"github\", \"secret\": [\"old-secret\", \"new-secret\"]}},"
        " {\"id\": \"both\", \"action\": \"custom\", \"target\": {\"topic\": \"t\"},"
        "  \"secret\": \"own-secret\", \"secretHeader\": \"X-Token\", \"allowedIPs\": [\"::1\"],"
        "  \"signature\": {\"scheme\": \"standard\","
        "   \"secret\": \"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\", \"toleranceS\": 60}}]}");
    const struct ab_hook *gh = &in->hooks[0], *both = &in->hooks[1];
    CHECK_INT_EQ(gh->secret_count, 0);
    CHECK_INT_EQ(gh->scheme, AB_HOOK_SIG_GITHUB);
    CHECK_INT_EQ(gh->signature_secret_count, 2);
    CHECK(ab_cidr_list_contains_text(gh->allowed, "10.1.2.3")); /* the allowlist is inherited */
    CHECK(!ab_cidr_list_contains_text(gh->allowed, "192.168.0.1"));
    CHECK_STR_EQ(both->secrets[0], "own-secret");
    CHECK_STR_EQ(both->secret_header, "X-Token");
    CHECK_INT_EQ(both->tolerance_s, 60);
    CHECK(ab_cidr_list_contains_text(both->allowed, "::1"));
    CHECK(!ab_cidr_list_contains_text(both->allowed, "10.1.2.3"));
    ab_incoming_free(in);
}

TEST(incoming_redacted_definition_hides_every_secret)
{
    struct ab_incoming *in = parse_ok(
        "{\"handlers\": [{\"id\": \"gh\", \"action\": \"forward\","
        " \"target\": {\"url\": \"https://relay.example.com/in\"}, \"secret\": \"own-secret-1\","
        " \"signature\": {\"scheme\": \"github\", \"secret\": \"gh-secret-1\"}}]}");
    json_t *shown = ab_hook_redacted(&in->hooks[0]);
    char *text = json_dumps(shown, 0);
    CHECK(strstr(text, "own-secret-1") == NULL);
    CHECK(strstr(text, "gh-secret-1") == NULL);
    CHECK(strstr(text, "\"(set)\"") != NULL);
    CHECK(strstr(text, "\"source\": \"config\"") != NULL);
    CHECK_STR_EQ(in->hooks[0].forward_method, "POST");
    free(text);
    json_decref(shown);
    ab_incoming_free(in);
}

TEST(incoming_refusals_name_the_field)
{
#define H(body) "{\"incoming\": {\"secret\": \"shared-secret\"}, \"handlers\": [" body "]}"
    expect_refused(__LINE__,
                   "{\"handlers\": [{\"id\": \"open\", \"action\": \"run_agent\","
                   " \"agentId\": \"x\"}]}",
                   "unauthenticated hook is refused");
    expect_refused(__LINE__, H("{\"id\": \"a b\", \"action\": \"run_agent\", \"agentId\": \"x\"}"),
                   "\"id\" must be");
    expect_refused(__LINE__, H("{\"action\": \"run_agent\", \"agentId\": \"x\"}"), "\"id\"");
    expect_refused(__LINE__, H("{\"id\": \"a\", \"action\": \"run_agent\"}"), "agentId");
    expect_refused(__LINE__, H("{\"id\": \"a\", \"action\": \"fly\"}"), "\"action\" must be");
    expect_refused(__LINE__,
                   H("{\"id\": \"a\", \"action\": \"run_agent\", \"agentId\": \"x\","
                     " \"scret\": \"typo\"}"),
                   "unknown field \"scret\"");
    expect_refused(__LINE__,
                   H("{\"id\": \"a\", \"action\": \"run_agent\", \"agentId\": \"x\","
                     " \"template\": \"{{event.action\"}"),
                   "\"template\"");
    expect_refused(__LINE__,
                   H("{\"id\": \"a\", \"path\": \"/webhook/x\", \"action\": \"run_agent\","
                     " \"agentId\": \"x\"}"),
                   "\"path\"");
    expect_refused(__LINE__,
                   H("{\"id\": \"a\", \"path\": \"/../etc\", \"action\": \"run_agent\","
                     " \"agentId\": \"x\"}"),
                   "\"path\"");
    expect_refused(__LINE__,
                   H("{\"id\": \"a\", \"action\": \"send_message\","
                     " \"target\": {\"channel\": \"discord\", \"peer\": \"p\"}}"),
                   "\"channel\" must be");
    expect_refused(__LINE__,
                   H("{\"id\": \"a\", \"action\": \"send_message\","
                     " \"target\": {\"channel\": \"feishu\"}}"),
                   "\"peer\" is required");
    expect_refused(__LINE__,
                   H("{\"id\": \"a\", \"action\": \"forward\","
                     " \"target\": {\"url\": \"ftp://x/\"}}"),
                   "\"url\"");
    expect_refused(__LINE__,
                   H("{\"id\": \"a\", \"action\": \"forward\","
                     " \"target\": {\"url\": \"https://user:pw@x/\"}}"),
                   "\"url\"");
    expect_refused(__LINE__,
                   H("{\"id\": \"a\", \"action\": \"custom\", \"target\": {\"topic\": "
                     "\"agentbus.ingress\"}}"),
                   "agentbus' own topics");
    expect_refused(__LINE__,
                   H("{\"id\": \"a\", \"action\": \"custom\", \"target\": {\"topic\": "
                     "\"a/b\"}}"),
                   "\"topic\"");
    expect_refused(__LINE__,
                   H("{\"id\": \"a\", \"action\": \"run_agent\", \"agentId\": \"x\","
                     " \"sessionMode\": \"persistent\"}"),
                   "needs \"sessionKey\"");
    expect_refused(__LINE__,
                   H("{\"id\": \"a\", \"action\": \"run_agent\", \"agentId\": \"x\","
                     " \"sessionKey\": \"k\"}"),
                   "needs sessionMode");
    expect_refused(__LINE__,
                   H("{\"id\": \"a\", \"action\": \"run_agent\", \"agentId\": \"x\","
                     " \"signature\": {\"scheme\": \"standard\", \"secret\": \"short\"}}"),
                   "secret");
    expect_refused(__LINE__,
                   H("{\"id\": \"a\", \"action\": \"run_agent\", \"agentId\": \"x\","
                     " \"signature\": {\"scheme\": \"md5\", \"secret\": \"whatever-1\"}}"),
                   "\"scheme\"");
    expect_refused(__LINE__,
                   H("{\"id\": \"a\", \"action\": \"run_agent\", \"agentId\": \"x\","
                     " \"allowedIPs\": [\"10.0.0.0/33\"]}"),
                   "allowedIPs");
    expect_refused(__LINE__,
                   H("{\"id\": \"a\", \"action\": \"run_agent\", \"agentId\": \"x\"},"
                     " {\"id\": \"a\", \"action\": \"run_agent\", \"agentId\": \"y\"}"),
                   "its id is also handlers[0]'s");
    expect_refused(__LINE__,
                   H("{\"id\": \"a\", \"path\": \"/p\", \"action\": \"run_agent\","
                     " \"agentId\": \"x\"}, {\"id\": \"b\", \"path\": \"/p\","
                     " \"action\": \"run_agent\", \"agentId\": \"y\"}"),
                   "its path is also handlers[0]'s");
    expect_refused(__LINE__, "{\"incoming\": {\"maxBodyBytes\": 10}}", "maxBodyBytes");
    expect_refused(__LINE__, "{\"incoming\": {\"maxBodyBytes\": 16777216}}", "maxBodyBytes");
    expect_refused(__LINE__,
                   H("{\"id\": \"a\", \"action\": \"custom\", \"target\": {\"topic\": "
                     "\"staging.agentbus.ingress\"}}"),
                   "agentbus' own topics");
    expect_refused(__LINE__,
                   H("{\"id\": \"a\", \"action\": \"custom\", \"target\": {\"topic\": "
                     "\"__consumer_offsets\"}}"),
                   "internal ones");
    expect_refused(__LINE__,
                   H("{\"id\": \"a\", \"action\": \"send_message\","
                     " \"target\": {\"channel\": \"chat\", \"peer\": \"oc x\"}}"),
                   "chat_id");
    expect_refused(__LINE__, "{\"incoming\": {\"secret\": \"short\"}}", "at least 8 bytes");
    expect_refused(__LINE__, "{\"incoming\": {\"authFailures\": {\"max\": 0}}}", "\"max\"");
    expect_refused(__LINE__, "{\"incoming\": {\"allowedIPs\": \"10.0.0.1\"}}", "allowedIPs");
    expect_refused(__LINE__, "{\"incoming\": {\"colour\": 1}}", "unknown field \"colour\"");
    expect_refused(__LINE__, "{\"handlers\": {}}", "webhooks.handlers must be a list");
#undef H
}

TEST(incoming_hook_parse_alone)
{
    char errstr[256];
    struct ab_hook h;
    json_t *def = json_loads("{\"id\": \"x\", \"action\": \"run_agent\", \"agentId\": \"a\","
                             " \"secret\": \"per-hook-secret\", \"allowRequestSessionKey\": true,"
                             " \"allowedSessionKeyPrefixes\": [\"hook:ticket:\", \"hook:pr:\"],"
                             " \"acceptText\": true, \"enabled\": false}",
                             0, NULL);
    CHECK_INT_EQ(ab_hook_parse(def, NULL, &h, errstr, sizeof(errstr)), AB_OK);
    CHECK(h.allow_request_session_key && h.prefix_count == 2 && h.accept_text && !h.enabled);
    CHECK_STR_EQ(h.session_prefixes[1], "hook:pr:");
    CHECK(!h.from_config);
    ab_hook_cleanup(&h);
    ab_hook_cleanup(&h); /* cleaned twice is harmless */
    json_decref(def);
    CHECK_INT_EQ(ab_hook_parse(NULL, NULL, &h, errstr, sizeof(errstr)), AB_ERR_CONFIG);
}
