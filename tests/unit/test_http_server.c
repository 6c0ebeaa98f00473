/* Component tests of common/http_server.c and common/health.c: a real ulfius listener on
 * 127.0.0.1 (ephemeral port) driven over real HTTP with common/http_client.c. */
#include "test.h"

#include "common/health.h"
#include "common/http_client.h"
#include "common/http_server.h"
#include "common/log.h"
#include "common/util.h"

#include <ctype.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <unistd.h>

#define MAX_BODY 1024

struct hsrv {
    struct ab_http_server *srv;
    struct ab_http_client *client;
    int port;
    atomic_int calls; /* handler invocations of the test routes */
};

/* POST /echo: the body back as is, with whether a Content-Length came with it. */
static void echo(const struct _u_request *req, struct _u_response *resp, void *ud)
{
    struct hsrv *s = ud;
    atomic_fetch_add(&s->calls, 1);
    ulfius_set_binary_body_response(resp, 200, req->binary_body, req->binary_body_length);
    ulfius_add_header_to_response(resp, "X-Had-Content-Length",
                                  ab_http_header(req, "Content-Length") ? "yes" : "no");
}

/* GET /items/:id */
static void item(const struct _u_request *req, struct _u_response *resp, void *ud)
{
    struct hsrv *s = ud;
    atomic_fetch_add(&s->calls, 1);
    const char *id = u_map_get(req->map_url, "id");
    ab_http_json(resp, 200, json_pack("{s:s}", "id", id ? id : ""));
}

/* POST /json: parses the body and returns it. */
static void json_echo(const struct _u_request *req, struct _u_response *resp, void *ud)
{
    struct hsrv *s = ud;
    char errstr[256];
    json_t *body = NULL;
    atomic_fetch_add(&s->calls, 1);
    enum ab_err err = ab_http_json_body(req, &body, errstr, sizeof(errstr));
    if (err != AB_OK) {
        ab_http_error(resp, err, "%s", errstr);
        return;
    }
    ab_http_json(resp, 200, json_pack("{s:o}", "got", body));
}

static void start_server(struct hsrv *s, struct ab_health *health)
{
    char errstr[256];
    memset(s, 0, sizeof(*s));
    ab_log_init("unit", getenv("AGENTBUS_TEST_VERBOSE") ? AB_LOG_DEBUG : AB_LOG_ERROR);
    ab_log_set_output(stderr);
    struct ab_http_server_options opts = {
        .name = "test",
        .host = "127.0.0.1",
        .port = 0,
        .max_body_bytes = MAX_BODY,
        .connection_limit = 16,
        .idle_timeout_s = 10,
        .access_log = true,
    };
    REQUIRE(ab_http_server_new(&opts, &s->srv, errstr, sizeof(errstr)) == AB_OK);
    REQUIRE(ab_http_server_route(s->srv, "POST", "/echo", echo, s) == AB_OK);
    REQUIRE(ab_http_server_route(s->srv, "GET", "/items/:id", item, s) == AB_OK);
    REQUIRE(ab_http_server_route(s->srv, "POST", "/json", json_echo, s) == AB_OK);
    if (health != NULL)
        REQUIRE(ab_health_start(health, s->srv) == AB_OK);
    enum ab_err err = ab_http_server_start(s->srv, errstr, sizeof(errstr));
    if (err != AB_OK)
        fprintf(stderr, "    start: %s\n", errstr);
    REQUIRE(err == AB_OK);
    s->port = ab_http_server_port(s->srv);
    REQUIRE(s->port > 0);
    s->client = ab_http_client_new();
    REQUIRE(s->client != NULL);
}

static void stop_server(struct hsrv *s)
{
    ab_http_client_free(s->client);
    ab_http_server_free(s->srv);
}

/* One request; the response is the caller's to clean up. REQUIREs a transport success. */
static void request(struct hsrv *s, const char *method, const char *path,
                    const char *const *headers, const void *body, size_t body_len,
                    struct ab_http_response *resp)
{
    char url[256], errstr[256];
    snprintf(url, sizeof(url), "http://127.0.0.1:%d%s", s->port, path);
    struct ab_http_request req = {
        .method = method,
        .url = url,
        .headers = headers,
        .body = body,
        .body_len = body_len,
        .timeout_ms = 10000,
    };
    enum ab_err err = ab_http_client_do(s->client, &req, resp, errstr, sizeof(errstr));
    if (err != AB_OK)
        fprintf(stderr, "    %s %s: %s\n", method, path, errstr);
    REQUIRE(err == AB_OK);
}

/* The response body as JSON (NULL if it is not), and its error code if it has one. */
static json_t *body_json(const struct ab_http_response *resp)
{
    return json_loadb(resp->body, resp->body_len, 0, NULL);
}

static const char *error_code(json_t *j)
{
    return json_string_value(json_object_get(json_object_get(j, "error"), "code"));
}

static const char *error_message(json_t *j)
{
    return json_string_value(json_object_get(json_object_get(j, "error"), "message"));
}

static bool is_uuid(const char *s)
{
    if (s == NULL || strlen(s) != AB_UUID_LEN)
        return false;
    for (int i = 0; i < AB_UUID_LEN; i++) {
        bool dash = i == 8 || i == 13 || i == 18 || i == 23;
        if (dash ? s[i] != '-' : !isxdigit((unsigned char)s[i]))
            return false;
    }
    return true;
}

TEST(http_server_routes_answer)
{
    struct hsrv s;
    struct ab_http_response resp;
    start_server(&s, NULL);
    const char *h[] = { "Content-Type: text/plain", NULL };
    request(&s, "POST", "/echo", h, "hello", 5, &resp);
    CHECK_INT_EQ(resp.status, 200);
    CHECK(resp.body_len == 5 && memcmp(resp.body, "hello", 5) == 0);
    ab_http_response_cleanup(&resp);

    request(&s, "GET", "/items/abc-42", NULL, NULL, 0, &resp);
    CHECK_INT_EQ(resp.status, 200);
    CHECK_STR_CONTAINS(ab_http_response_header(&resp, "Content-Type"), "application/json");
    json_t *j = body_json(&resp);
    CHECK_STR_EQ(json_string_value(json_object_get(j, "id")), "abc-42");
    json_decref(j);
    ab_http_response_cleanup(&resp);
    CHECK_INT_EQ(atomic_load(&s.calls), 2);
    stop_server(&s);
}

TEST(http_server_unknown_path_is_json_404)
{
    struct hsrv s;
    struct ab_http_response resp;
    start_server(&s, NULL);
    const char *paths[][2] = { { "GET", "/nope" }, { "GET", "/items" }, { "GET", "/echo" },
                               { "DELETE", "/items/1" }, { "POST", "/items/1/more" } };
    for (size_t i = 0; i < sizeof(paths) / sizeof(paths[0]); i++) {
        request(&s, paths[i][0], paths[i][1], NULL, NULL, 0, &resp);
        CHECK_INT_EQ(resp.status, 404);
        CHECK_STR_CONTAINS(ab_http_response_header(&resp, "Content-Type"), "application/json");
        json_t *j = body_json(&resp);
        CHECK(j != NULL);
        CHECK_STR_EQ(error_code(j), "not_found");
        CHECK(error_message(j) != NULL && error_message(j)[0] != '\0');
        CHECK(is_uuid(ab_http_response_header(&resp, "X-Request-Id")));
        json_decref(j);
        ab_http_response_cleanup(&resp);
    }
    CHECK_INT_EQ(atomic_load(&s.calls), 0);
    stop_server(&s);
}

TEST(http_server_body_over_limit_with_content_length_is_413)
{
    struct hsrv s;
    struct ab_http_response resp;
    start_server(&s, NULL);
    static char big[100 * 1024];
    memset(big, 'x', sizeof(big));
    const size_t sizes[] = { MAX_BODY + 1, 4 * MAX_BODY, sizeof(big) };
    for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
        request(&s, "POST", "/echo", NULL, big, sizes[i], &resp);
        CHECK_INT_EQ(resp.status, 413);
        json_t *j = body_json(&resp);
        CHECK_STR_EQ(error_code(j), "payload_too_large");
        CHECK_STR_CONTAINS(error_message(j), "1024");
        json_decref(j);
        ab_http_response_cleanup(&resp);
    }
    CHECK_INT_EQ(atomic_load(&s.calls), 0); /* the handler never saw a cut body */
    /* The same on a route that parses JSON. */
    request(&s, "POST", "/json", NULL, big, MAX_BODY + 1, &resp);
    CHECK_INT_EQ(resp.status, 413);
    ab_http_response_cleanup(&resp);
    CHECK_INT_EQ(atomic_load(&s.calls), 0);
    stop_server(&s);
}

TEST(http_server_chunked_body_over_limit_is_413)
{
    struct hsrv s;
    struct ab_http_response resp;
    start_server(&s, NULL);
    static char big[64 * 1024];
    memset(big, 'y', sizeof(big));
    const char *h[] = { "Transfer-Encoding: chunked", "Content-Type: application/octet-stream",
                        NULL };
    const size_t sizes[] = { MAX_BODY + 1, sizeof(big) };
    for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
        request(&s, "POST", "/echo", h, big, sizes[i], &resp);
        CHECK_INT_EQ(resp.status, 413);
        json_t *j = body_json(&resp);
        CHECK_STR_EQ(error_code(j), "payload_too_large");
        json_decref(j);
        ab_http_response_cleanup(&resp);
    }
    CHECK_INT_EQ(atomic_load(&s.calls), 0);
    stop_server(&s);
}

TEST(http_server_body_at_limit_is_accepted_in_full)
{
    struct hsrv s;
    struct ab_http_response resp;
    static char body[MAX_BODY];
    start_server(&s, NULL);
    for (size_t i = 0; i < sizeof(body); i++)
        body[i] = (char)('a' + i % 26);
    request(&s, "POST", "/echo", NULL, body, sizeof(body), &resp);
    CHECK_INT_EQ(resp.status, 200);
    CHECK(resp.body_len == sizeof(body) && memcmp(resp.body, body, sizeof(body)) == 0);
    CHECK_STR_EQ(ab_http_response_header(&resp, "X-Had-Content-Length"), "yes");
    ab_http_response_cleanup(&resp);

    /* Chunked, the same size: no Content-Length reaches the server, and all of it does. */
    const char *h[] = { "Transfer-Encoding: chunked", NULL };
    request(&s, "POST", "/echo", h, body, sizeof(body), &resp);
    CHECK_INT_EQ(resp.status, 200);
    CHECK(resp.body_len == sizeof(body) && memcmp(resp.body, body, sizeof(body)) == 0);
    CHECK_STR_EQ(ab_http_response_header(&resp, "X-Had-Content-Length"), "no");
    ab_http_response_cleanup(&resp);
    CHECK_INT_EQ(atomic_load(&s.calls), 2);
    stop_server(&s);
}

TEST(http_server_request_id_echoed_or_generated)
{
    struct hsrv s;
    struct ab_http_response resp;
    char first[64] = "";
    start_server(&s, NULL);

    const char *given[] = { "X-Request-Id: req-123_ABC.x", NULL };
    request(&s, "GET", "/items/1", given, NULL, 0, &resp);
    CHECK_STR_EQ(ab_http_response_header(&resp, "X-Request-Id"), "req-123_ABC.x");
    ab_http_response_cleanup(&resp);

    /* Echoed on errors too. */
    request(&s, "GET", "/missing", given, NULL, 0, &resp);
    CHECK_INT_EQ(resp.status, 404);
    CHECK_STR_EQ(ab_http_response_header(&resp, "X-Request-Id"), "req-123_ABC.x");
    ab_http_response_cleanup(&resp);

    /* 64 characters is the longest kept. */
    char h64[128], h65[128], v64[80];
    memset(v64, 'a', 64);
    v64[64] = '\0';
    snprintf(h64, sizeof(h64), "X-Request-Id: %s", v64);
    const char *hdr64[] = { h64, NULL };
    request(&s, "GET", "/items/1", hdr64, NULL, 0, &resp);
    CHECK_STR_EQ(ab_http_response_header(&resp, "X-Request-Id"), v64);
    ab_http_response_cleanup(&resp);
    snprintf(h65, sizeof(h65), "X-Request-Id: %sb", v64);
    const char *hdr65[] = { h65, NULL };
    request(&s, "GET", "/items/1", hdr65, NULL, 0, &resp);
    CHECK(is_uuid(ab_http_response_header(&resp, "X-Request-Id")));
    ab_http_response_cleanup(&resp);

    /* Absent: a fresh UUID each time. */
    request(&s, "GET", "/items/1", NULL, NULL, 0, &resp);
    const char *rid = ab_http_response_header(&resp, "X-Request-Id");
    CHECK(is_uuid(rid));
    snprintf(first, sizeof(first), "%s", rid ? rid : "");
    ab_http_response_cleanup(&resp);
    request(&s, "GET", "/items/1", NULL, NULL, 0, &resp);
    rid = ab_http_response_header(&resp, "X-Request-Id");
    CHECK(is_uuid(rid));
    CHECK(rid != NULL && strcmp(rid, first) != 0);
    ab_http_response_cleanup(&resp);

    /* Invalid: too long, spaces, characters a log line or header could trip on. */
    char long_h[300];
    memset(long_h, 0, sizeof(long_h));
    strcpy(long_h, "X-Request-Id: ");
    memset(long_h + strlen(long_h), 'z', 200);
    const char *bad[] = { long_h, "X-Request-Id: has spaces in it", "X-Request-Id: a\"b",
                          "X-Request-Id: a/b", "X-Request-Id: a;b" };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        const char *hdr[] = { bad[i], NULL };
        request(&s, "GET", "/items/1", hdr, NULL, 0, &resp);
        CHECK_INT_EQ(resp.status, 200);
        CHECK(is_uuid(ab_http_response_header(&resp, "X-Request-Id")));
        ab_http_response_cleanup(&resp);
    }
    stop_server(&s);
}

TEST(http_server_invalid_json_body_is_400_with_position)
{
    struct hsrv s;
    struct ab_http_response resp;
    start_server(&s, NULL);
    const char *h[] = { "Content-Type: application/json", NULL };

    const char *broken = "{\n  \"a\": 1,\n  \"b\": }";
    request(&s, "POST", "/json", h, broken, strlen(broken), &resp);
    CHECK_INT_EQ(resp.status, 400);
    json_t *j = body_json(&resp);
    CHECK_STR_EQ(error_code(j), "invalid_request");
    CHECK_STR_CONTAINS(error_message(j), "line 3");
    CHECK_STR_CONTAINS(error_message(j), "column");
    json_decref(j);
    ab_http_response_cleanup(&resp);

    const char *bad[] = { "", "{\"a\":1,\"a\":2}", "not json", "{\"a\": 1} trailing" };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        request(&s, "POST", "/json", h, bad[i], strlen(bad[i]), &resp);
        CHECK_INT_EQ(resp.status, 400);
        j = body_json(&resp);
        CHECK_STR_EQ(error_code(j), "invalid_request");
        json_decref(j);
        ab_http_response_cleanup(&resp);
    }

    const char *good = "{\"a\": [1, 2, {\"b\": null}]}";
    request(&s, "POST", "/json", h, good, strlen(good), &resp);
    CHECK_INT_EQ(resp.status, 200);
    j = body_json(&resp);
    CHECK_INT_EQ(json_integer_value(json_array_get(json_object_get(json_object_get(j, "got"),
                                                                   "a"),
                                                   1)),
                 2);
    json_decref(j);
    ab_http_response_cleanup(&resp);
    stop_server(&s);
}

struct dep {
    atomic_bool ok;
    atomic_int calls;
};

static bool dep_check(void *ud, char *detail, size_t size)
{
    struct dep *d = ud;
    atomic_fetch_add(&d->calls, 1);
    if (!atomic_load(&d->ok))
        snprintf(detail, size, "the dependency is down");
    return atomic_load(&d->ok);
}

static const char *json_status(json_t *j)
{
    return json_string_value(json_object_get(j, "status"));
}

TEST(http_server_health_endpoints)
{
    struct hsrv s;
    struct ab_http_response resp;
    struct dep d;
    atomic_init(&d.ok, false);
    atomic_init(&d.calls, 0);
    struct ab_health *h = ab_health_new(60000); /* only ab_health_check_now refreshes */
    REQUIRE(h != NULL);
    ab_health_add_check(h, "dep", dep_check, &d);
    start_server(&s, h);
    /* The check thread's first round, then ours: afterwards only ours run. */
    int64_t deadline = ab_monotonic_ms() + 5000;
    while (atomic_load(&d.calls) < 1 && ab_monotonic_ms() < deadline)
        usleep(10 * 1000);
    CHECK(!ab_health_check_now(h));

    request(&s, "GET", "/livez", NULL, NULL, 0, &resp);
    CHECK_INT_EQ(resp.status, 200);
    ab_http_response_cleanup(&resp);

    request(&s, "GET", "/readyz", NULL, NULL, 0, &resp);
    CHECK_INT_EQ(resp.status, 503);
    json_t *j = body_json(&resp);
    CHECK_STR_EQ(json_status(j), "not ready");
    CHECK_STR_EQ(json_string_value(json_object_get(json_object_get(j, "checks"), "dep")),
                 "the dependency is down");
    json_decref(j);
    ab_http_response_cleanup(&resp);
    CHECK(!ab_health_ready(h));

    atomic_store(&d.ok, true);
    CHECK(ab_health_check_now(h));
    CHECK(ab_health_ready(h));
    request(&s, "GET", "/readyz", NULL, NULL, 0, &resp);
    CHECK_INT_EQ(resp.status, 200);
    j = body_json(&resp);
    CHECK_STR_EQ(json_status(j), "ready");
    json_decref(j);
    ab_http_response_cleanup(&resp);

    /* Failing again flips it back. */
    atomic_store(&d.ok, false);
    ab_health_check_now(h);
    request(&s, "GET", "/readyz", NULL, NULL, 0, &resp);
    CHECK_INT_EQ(resp.status, 503);
    ab_http_response_cleanup(&resp);
    atomic_store(&d.ok, true);
    ab_health_check_now(h);

    ab_health_set_draining(h);
    CHECK(!ab_health_ready(h));
    request(&s, "GET", "/readyz", NULL, NULL, 0, &resp);
    CHECK_INT_EQ(resp.status, 503);
    j = body_json(&resp);
    CHECK_STR_EQ(json_status(j), "draining");
    json_decref(j);
    ab_http_response_cleanup(&resp);
    /* Draining is for the load balancer; the process is still alive. */
    request(&s, "GET", "/livez", NULL, NULL, 0, &resp);
    CHECK_INT_EQ(resp.status, 200);
    ab_http_response_cleanup(&resp);

    request(&s, "GET", "/metrics", NULL, NULL, 0, &resp);
    CHECK_INT_EQ(resp.status, 200);
    CHECK_STR_CONTAINS(ab_http_response_header(&resp, "Content-Type"), "text/plain");
    CHECK_STR_CONTAINS(resp.body, "agentbus_http_requests_total");
    CHECK_STR_CONTAINS(resp.body, "route=\"/readyz\"");
    CHECK_STR_CONTAINS(resp.body, "agentbus_ready 0");
    ab_http_response_cleanup(&resp);
    stop_server(&s);
    ab_health_free(h);
}
