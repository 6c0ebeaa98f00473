/* Tests for services/ingress/gateway_guide (the setup guide's skill and its base URL): every
 * URL starts with the base URL, a trailing slash is not doubled, no key is ever in the text,
 * and a Host header or gateway.public_url that is not a plain base URL is refused. */
#include "test.h"

#include "services/ingress/gateway_guide.h"

/* Every http:// or https:// in text is base itself (ending the sentence) or starts with
 * base + "/api/gateway/"; returns how many. */
static int check_urls(const char *text, const char *base)
{
    int urls = 0;
    size_t base_len = strlen(base);
    for (const char *p = text; (p = strstr(p, "http")) != NULL; p++) {
        if (strncmp(p, "http://", 7) != 0 && strncmp(p, "https://", 8) != 0)
            continue;
        urls++;
        const char *after = p + base_len;
        if (strncmp(p, base, base_len) != 0 ||
            (strncmp(after, "/api/gateway/", 13) != 0 && strchr(". \n", *after) == NULL))
            ab_test_fail(__FILE__, __LINE__, "a URL not under %s: %.60s", base, p);
    }
    return urls;
}

/* Each line that says "URL:" carries the base URL. */
static void check_url_lines(const char *text, const char *base)
{
    int lines = 0;
    for (const char *p = text; (p = strstr(p, "- URL: ")) != NULL; p++) {
        lines++;
        const char *url = p + strlen("- URL: ");
        if (strncmp(url, base, strlen(base)) != 0)
            ab_test_fail(__FILE__, __LINE__, "URL line without %s: %.60s", base, url);
    }
    CHECK_INT_EQ(lines, 4); /* poll, report, send-message, heartbeat */
}

TEST(guide_every_url_starts_with_the_base_url)
{
    const char *base = "https://bus.example.com:8443/agentbus";
    char *text = ingress_guide_render(base, "Bob", 120, 300);
    REQUIRE(text != NULL);
    check_url_lines(text, base);
    CHECK(check_urls(text, base) >= 4);
    CHECK_STR_CONTAINS(text, "- URL: https://bus.example.com:8443/agentbus/api/gateway/poll\n");
    CHECK_STR_CONTAINS(text, "- URL: https://bus.example.com:8443/agentbus/api/gateway/report\n");
    CHECK_STR_CONTAINS(text,
                       "- URL: https://bus.example.com:8443/agentbus/api/gateway/send-message\n");
    CHECK(strstr(text, "try.clawith.ai") == NULL); /* Clawith's hard-coded host (B11) */
    free(text);
}

TEST(guide_has_clawiths_shape_and_our_additions)
{
    char *text = ingress_guide_render("http://127.0.0.1:8080", "Bob", 45, 600);
    REQUIRE(text != NULL);
    CHECK(strncmp(text, "---\nname: clawith_sync\n", 23) == 0);
    CHECK_STR_CONTAINS(text, "### 1. Check inbox");
    CHECK_STR_CONTAINS(text, "### 2. Report results");
    CHECK_STR_CONTAINS(text, "### 3. Send a message to someone");
    CHECK_STR_CONTAINS(text, "**Bob**");
    /* The fields of the poll's answer, and what differs from Clawith. */
    const char *fields[] = { "`id`", "`content`", "`sender_agent_name`", "`sender_user_name`",
                             "`sender_user_id`", "`conversation_id`", "`created_at`",
                             "`history`", "`channels`", "`status`", "`message_id`",
                             "`wait=N`", "45 seconds", "600 seconds" };
    for (size_t i = 0; i < sizeof(fields) / sizeof(fields[0]); i++)
        CHECK_STR_CONTAINS(text, fields[i]);
    free(text);
}

TEST(guide_never_carries_a_key)
{
    char *text = ingress_guide_render("http://h", "Bob", 120, 300);
    REQUIRE(text != NULL);
    /* The header line always names the placeholder; nothing shaped like a key is there. */
    int headers = 0;
    for (const char *p = text; (p = strstr(p, "X-Api-Key: ")) != NULL; p++) {
        headers++;
        CHECK(strncmp(p + strlen("X-Api-Key: "), INGRESS_GUIDE_KEY_PLACEHOLDER,
                      strlen(INGRESS_GUIDE_KEY_PLACEHOLDER)) == 0);
    }
    CHECK_INT_EQ(headers, 4);
    CHECK(strstr(text, "oc-") == NULL);
    free(text);
}

TEST(guide_name_cannot_break_the_markdown)
{
    char *text = ingress_guide_render("http://h", "Eve\n---\nname: evil\r", 120, 300);
    REQUIRE(text != NULL);
    CHECK(strstr(text, "name: evil") != NULL && strstr(text, "\nname: evil") == NULL);
    CHECK_STR_CONTAINS(text, "**Eve --- name: evil **");
    free(text);
}

static const char *base_of(const char *public_url, const char *host, const char *proto,
                           char *out, size_t size)
{
    char errstr[256];
    if (ingress_guide_base_url(public_url, host, proto, out, size, errstr, sizeof(errstr)) !=
        AB_OK)
        return NULL;
    return out;
}

TEST(guide_base_url_from_public_url_without_a_doubled_slash)
{
    char out[INGRESS_GUIDE_BASE_URL_MAX];
    CHECK_STR_EQ(base_of("https://bus.example.com/", "ignored", NULL, out, sizeof(out)),
                 "https://bus.example.com");
    CHECK_STR_EQ(base_of("https://bus.example.com///", NULL, NULL, out, sizeof(out)),
                 "https://bus.example.com");
    CHECK_STR_EQ(base_of("http://10.0.0.5:8080/bus/", "x", "https", out, sizeof(out)),
                 "http://10.0.0.5:8080/bus");
    CHECK_STR_EQ(base_of("https://bus.example.com", "x", NULL, out, sizeof(out)),
                 "https://bus.example.com");
    char *text = ingress_guide_render(out, "Bob", 120, 300);
    CHECK(strstr(text, "//api") == NULL);
    CHECK_STR_CONTAINS(text, "https://bus.example.com/api/gateway/poll");
    free(text);
}

TEST(guide_base_url_from_the_host_header)
{
    char out[INGRESS_GUIDE_BASE_URL_MAX];
    CHECK_STR_EQ(base_of("", "127.0.0.1:8080", NULL, out, sizeof(out)), "http://127.0.0.1:8080");
    CHECK_STR_EQ(base_of(NULL, "bus.example.com", "https", out, sizeof(out)),
                 "https://bus.example.com");
    CHECK_STR_EQ(base_of("", "bus.example.com", " HTTPS, http", out, sizeof(out)),
                 "https://bus.example.com");
    CHECK_STR_EQ(base_of("", "bus.example.com", "http, https", out, sizeof(out)),
                 "http://bus.example.com");
    CHECK_STR_EQ(base_of("", "bus.example.com", "httpsx", out, sizeof(out)),
                 "http://bus.example.com");
    CHECK_STR_EQ(base_of("", "[::1]:9000", NULL, out, sizeof(out)), "http://[::1]:9000");
    CHECK_STR_EQ(base_of("", "my_service:80", NULL, out, sizeof(out)), "http://my_service:80");
    const char *bad[] = { NULL,       "",          "a b",          "evil.com/x",
                          "u@evil.com", "h:0",      "h:65536",     "h:",
                          ":80",      "h:80:80",   "[::1",         "[]:80",
                          "h\"x",     "h\nX-Evil: 1", "h:8080x",   "h?x" };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        if (base_of("", bad[i], NULL, out, sizeof(out)) != NULL)
            ab_test_fail(__FILE__, __LINE__, "Host \"%s\" accepted", bad[i] ? bad[i] : "(null)");
    char host[300];
    memset(host, 'a', sizeof(host) - 1);
    host[sizeof(host) - 1] = '\0';
    CHECK(base_of("", host, NULL, out, sizeof(out)) == NULL); /* longer than 255 */
}

TEST(guide_public_url_check)
{
    char errstr[256];
    const char *good[] = { "", "http://h", "https://bus.example.com/agentbus/", "http://[::1]:80" };
    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++)
        CHECK_INT_EQ(ingress_guide_check_public_url(good[i], errstr, sizeof(errstr)), AB_OK);
    CHECK_INT_EQ(ingress_guide_check_public_url(NULL, errstr, sizeof(errstr)), AB_OK);
    const char *bad[] = { "bus.example.com", "ftp://h", "https://", "https:///x",
                          "https://h x",     "https://h/?q=1", "https://h/#f", "https://hé",
                          "https://user:pass@bus.example.com" };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        errstr[0] = '\0';
        CHECK_INT_EQ(ingress_guide_check_public_url(bad[i], errstr, sizeof(errstr)),
                     AB_ERR_CONFIG);
        CHECK_STR_CONTAINS(errstr, "gateway.public_url");
    }
}
