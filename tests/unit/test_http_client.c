/* Tests for common/http_client against a real HTTP/1.1 server on 127.0.0.1 that runs in
 * threads of the test itself, so what goes over the wire can be scripted and checked. */
#include "test.h"

#include "common/http_client.h"
#include "loopback_http.h"

#include <pthread.h>
#include <stdbool.h>
#include <time.h>
#include <unistd.h>

/* Holds the response until the client hangs up (or 5 s pass), as a stalled upstream would. */
static void stall(int fd)
{
    lh_nap(fd, 5000);
}

static bool send_response(int fd, const char *method, const char *status, const char *headers,
                          const char *body, size_t body_len)
{
    char head[1024];
    int n = snprintf(head, sizeof(head), "HTTP/1.1 %s\r\nContent-Length: %zu\r\n%s\r\n", status,
                     body_len, headers);

    if (n < 0 || (size_t)n >= sizeof(head) || !lh_send_all(fd, head, (size_t)n))
        return false;
    return strcmp(method, "HEAD") == 0 || lh_send_all(fd, body, body_len);
}

/* Answers one request by its path. @returns false when the connection must close. */
static bool respond(int fd, const struct lh_request *req)
{
    static char big[4096];
    const char *m = req->method;

    memset(big, 'x', sizeof(big));
    if (strcmp(req->path, "/json") == 0)
        return send_response(fd, m, "200 OK", "Content-Type: application/json\r\n",
                             "{\"ok\":true}", 11);
    if (strcmp(req->path, "/missing") == 0)
        return send_response(fd, m, "404 Not Found", "", "not found", 9);
    if (strcmp(req->path, "/big") == 0)
        return send_response(fd, m, "200 OK", "", big, sizeof(big));
    if (strcmp(req->path, "/huge-declared") == 0) {
        /* Announces 10 MB, then stalls: only the announced length can stop the client. */
        const char *head = "HTTP/1.1 200 OK\r\nContent-Length: 10000000\r\n\r\nxx";
        if (lh_send_all(fd, head, strlen(head)))
            stall(fd);
        return false;
    }
    if (strcmp(req->path, "/big-stream") == 0) {
        /* No Content-Length: the size is only known as the bytes arrive. */
        const char *head = "HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n";
        if (lh_send_all(fd, head, strlen(head)))
            lh_send_all(fd, big, sizeof(big));
        return false;
    }
    if (strcmp(req->path, "/big-headers") == 0) {
        char line[1100];
        const char *head = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n";
        bool ok = lh_send_all(fd, head, strlen(head));
        for (int i = 0; ok && i < 100; i++) {
            int n = snprintf(line, sizeof(line), "X-Filler-%d: %.1000s\r\n", i, big);
            ok = lh_send_all(fd, line, (size_t)n);
        }
        if (ok)
            lh_send_all(fd, "\r\nok", 4);
        return false;
    }
    if (strcmp(req->path, "/folded") == 0)
        return send_response(fd, m, "200 OK",
                             "X-Folded: first\r\n \t second\r\nX-Padded:   padded value  \r\n"
                             "Set-Cookie: a=1\r\nSet-Cookie: b=2\r\n",
                             "ok", 2);
    if (strcmp(req->path, "/slow") == 0) {
        stall(fd);
        send_response(fd, m, "200 OK", "", "late", 4);
        return false;
    }
    if (strcmp(req->path, "/redirect") == 0)
        return send_response(fd, m, "302 Found", "Location: /json\r\n", "", 0);
    if (strcmp(req->path, "/loop") == 0)
        return send_response(fd, m, "302 Found", "Location: /loop\r\n", "", 0);
    if (strcmp(req->path, "/to-file") == 0)
        return send_response(fd, m, "302 Found", "Location: file:///etc/passwd\r\n", "", 0);
    return send_response(fd, m, "200 OK", "Content-Type: text/plain\r\n", "ok", 2);
}

static double now_seconds(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

TEST(http_client_get_returns_status_body_and_headers)
{
    char url[128], errstr[256] = "";
    struct ab_http_response resp;
    struct ab_http_request req = { .url = url };
    struct ab_http_client *client;

    lh_start(respond);
    lh_url(url, sizeof(url), "/json");
    client = ab_http_client_new();
    REQUIRE(client != NULL);
    CHECK_INT_EQ(ab_http_client_do(client, &req, &resp, errstr, sizeof(errstr)), AB_OK);
    CHECK_INT_EQ(resp.status, 200);
    CHECK_STR_EQ(resp.body, "{\"ok\":true}");
    CHECK_INT_EQ(resp.body_len, 11);
    CHECK_STR_EQ(ab_http_response_header(&resp, "content-type"), "application/json");
    CHECK_STR_EQ(ab_http_response_header(&resp, "CONTENT-LENGTH"), "11");
    CHECK(ab_http_response_header(&resp, "X-Absent") == NULL);
    CHECK(resp.total_seconds >= 0.0);
    CHECK_STR_EQ(errstr, "");

    struct lh_request got = lh_recorded(0);
    CHECK_STR_EQ(got.method, "GET");
    CHECK_STR_EQ(got.path, "/json");
    CHECK_STR_CONTAINS(got.head, "\r\nUser-Agent: " AB_HTTP_DEFAULT_USER_AGENT "\r\n");
    ab_http_response_cleanup(&resp);
    ab_http_client_free(client);
    lh_stop();
}

TEST(http_client_post_sends_body_and_headers_exactly)
{
    char url[128], errstr[256] = "";
    char body[2000]; /* over 1 KiB, where libcurl 7.x would add Expect: 100-continue */
    const char *const headers[] = { "Content-Type: application/json",
                                    "Authorization: Bearer tok-123", "X-Trace: a b  c", NULL };
    struct ab_http_response resp;
    struct ab_http_request req = { .method = "POST",
                                   .url = url,
                                   .headers = headers,
                                   .body = body,
                                   .body_len = sizeof(body),
                                   .user_agent = "agentbus-test/1" };
    struct ab_http_client *client;

    for (size_t i = 0; i < sizeof(body); i++)
        body[i] = (char)(i % 251); /* binary, with NULs: must not be measured with strlen */
    lh_start(respond);
    lh_url(url, sizeof(url), "/echo");
    client = ab_http_client_new();
    REQUIRE(client != NULL);
    CHECK_INT_EQ(ab_http_client_do(client, &req, &resp, errstr, sizeof(errstr)), AB_OK);
    CHECK_INT_EQ(resp.status, 200);
    CHECK_STR_EQ(resp.body, "ok");

    struct lh_request got = lh_recorded(0);
    CHECK_STR_EQ(got.method, "POST");
    CHECK_STR_EQ(got.path, "/echo");
    CHECK_INT_EQ(got.body_len, sizeof(body));
    CHECK(memcmp(got.body, body, sizeof(body)) == 0);
    CHECK_STR_CONTAINS(got.head, "\r\nContent-Type: application/json\r\n");
    CHECK_STR_CONTAINS(got.head, "\r\nAuthorization: Bearer tok-123\r\n");
    CHECK_STR_CONTAINS(got.head, "\r\nX-Trace: a b  c\r\n");
    CHECK_STR_CONTAINS(got.head, "\r\nContent-Length: 2000\r\n");
    CHECK_STR_CONTAINS(got.head, "\r\nUser-Agent: agentbus-test/1\r\n");
    CHECK(strcasestr(got.head, "Expect:") == NULL);
    CHECK(strcasestr(got.head, "x-www-form-urlencoded") == NULL);
    ab_http_response_cleanup(&resp);
    ab_http_client_free(client);
    lh_stop();
}

TEST(http_client_body_without_content_type_is_not_labelled_a_form)
{
    char url[128], errstr[256] = "";
    struct ab_http_response resp;
    struct ab_http_request req = { .url = url,
                                   .body = "{}",
                                   .body_len = 2 };
    struct ab_http_client *client;

    lh_start(respond);
    lh_url(url, sizeof(url), "/echo");
    client = ab_http_client_new();
    REQUIRE(client != NULL);
    /* No method: a body makes it a POST. */
    CHECK_INT_EQ(ab_http_client_do(client, &req, &resp, errstr, sizeof(errstr)), AB_OK);
    struct lh_request got = lh_recorded(0);
    CHECK_STR_EQ(got.method, "POST");
    CHECK_INT_EQ(got.body_len, 2);
    CHECK(strcasestr(got.head, "Content-Type:") == NULL);
    CHECK(strcasestr(got.head, "Expect:") == NULL);
    ab_http_response_cleanup(&resp);
    ab_http_client_free(client);
    lh_stop();
}

TEST(http_client_other_methods)
{
    char url[128], errstr[256] = "";
    struct ab_http_response resp;
    struct ab_http_request put = { .method = "PUT",
                                   .url = url,
                                   .body = "data",
                                   .body_len = 4 };
    struct ab_http_request del = { .method = "DELETE", .url = url };
    struct ab_http_request head = { .method = "HEAD", .url = url };
    struct ab_http_request empty_post = { .method = "POST", .url = url };
    struct ab_http_client *client;

    lh_start(respond);
    lh_url(url, sizeof(url), "/echo");
    client = ab_http_client_new();
    REQUIRE(client != NULL);
    CHECK_INT_EQ(ab_http_client_do(client, &put, &resp, errstr, sizeof(errstr)), AB_OK);
    ab_http_response_cleanup(&resp);
    CHECK_INT_EQ(ab_http_client_do(client, &del, &resp, errstr, sizeof(errstr)), AB_OK);
    ab_http_response_cleanup(&resp);
    /* The answer to HEAD has a Content-Length but no body: the client must not wait. */
    CHECK_INT_EQ(ab_http_client_do(client, &head, &resp, errstr, sizeof(errstr)), AB_OK);
    CHECK_INT_EQ(resp.status, 200);
    CHECK_INT_EQ(resp.body_len, 0);
    REQUIRE(resp.body != NULL);
    CHECK_STR_EQ(resp.body, "");
    ab_http_response_cleanup(&resp);
    CHECK_INT_EQ(ab_http_client_do(client, &empty_post, &resp, errstr, sizeof(errstr)), AB_OK);
    ab_http_response_cleanup(&resp);

    struct lh_request got = lh_recorded(0);
    CHECK_STR_EQ(got.method, "PUT");
    CHECK_INT_EQ(got.body_len, 4);
    CHECK(memcmp(got.body, "data", 4) == 0);
    got = lh_recorded(1);
    CHECK_STR_EQ(got.method, "DELETE");
    CHECK_INT_EQ(got.body_len, 0);
    CHECK(strcasestr(got.head, "Content-Length") == NULL);
    got = lh_recorded(2);
    CHECK_STR_EQ(got.method, "HEAD");
    got = lh_recorded(3);
    CHECK_STR_EQ(got.method, "POST");
    CHECK_STR_CONTAINS(got.head, "\r\nContent-Length: 0\r\n");
    CHECK_INT_EQ(lh_accepts(), 1);
    ab_http_client_free(client);
    lh_stop();
}

TEST(http_client_non_2xx_is_not_an_error)
{
    char url[128], errstr[256] = "";
    struct ab_http_response resp;
    struct ab_http_request req = { .url = url };
    struct ab_http_client *client;

    lh_start(respond);
    lh_url(url, sizeof(url), "/missing");
    client = ab_http_client_new();
    REQUIRE(client != NULL);
    CHECK_INT_EQ(ab_http_client_do(client, &req, &resp, errstr, sizeof(errstr)), AB_OK);
    CHECK_INT_EQ(resp.status, 404);
    CHECK_STR_EQ(resp.body, "not found");
    ab_http_response_cleanup(&resp);
    ab_http_client_free(client);
    lh_stop();
}

TEST(http_client_body_over_cap_is_too_large)
{
    char url[128], errstr[256] = "";
    struct ab_http_response resp;
    struct ab_http_request req = { .url = url,
                                   .max_response_bytes = 1024 };
    struct ab_http_client *client;

    lh_start(respond);
    lh_url(url, sizeof(url), "/big");
    client = ab_http_client_new();
    REQUIRE(client != NULL);
    /* Declared by Content-Length. */
    CHECK_INT_EQ(ab_http_client_do(client, &req, &resp, errstr, sizeof(errstr)),
                 AB_ERR_TOO_LARGE);
    CHECK_STR_CONTAINS(errstr, "exceeds 1024 bytes");
    CHECK(resp.body == NULL);
    CHECK_INT_EQ(resp.status, 0);
    ab_http_response_cleanup(&resp);

    /* Refused on the announced length, before waiting for the body. */
    req.url = lh_url(url, sizeof(url), "/huge-declared");
    req.timeout_ms = 2000;
    CHECK_INT_EQ(ab_http_client_do(client, &req, &resp, errstr, sizeof(errstr)),
                 AB_ERR_TOO_LARGE);
    ab_http_response_cleanup(&resp);

    /* Only found out while reading. */
    errstr[0] = '\0';
    req.url = lh_url(url, sizeof(url), "/big-stream");
    CHECK_INT_EQ(ab_http_client_do(client, &req, &resp, errstr, sizeof(errstr)),
                 AB_ERR_TOO_LARGE);
    CHECK_STR_CONTAINS(errstr, "exceeds 1024 bytes");
    CHECK(resp.body == NULL);
    ab_http_response_cleanup(&resp);

    /* Exactly at the cap is fine, either way. */
    req.max_response_bytes = 4096;
    CHECK_INT_EQ(ab_http_client_do(client, &req, &resp, errstr, sizeof(errstr)), AB_OK);
    CHECK_INT_EQ(resp.body_len, 4096);
    CHECK_INT_EQ(strlen(resp.body), 4096);
    ab_http_response_cleanup(&resp);
    req.url = lh_url(url, sizeof(url), "/big");
    CHECK_INT_EQ(ab_http_client_do(client, &req, &resp, errstr, sizeof(errstr)), AB_OK);
    CHECK_INT_EQ(resp.body_len, 4096);
    ab_http_response_cleanup(&resp);
    ab_http_client_free(client);
    lh_stop();
}

TEST(http_client_headers_over_cap_are_too_large)
{
    char url[128], errstr[256] = "";
    struct ab_http_response resp;
    struct ab_http_request req = { .url = url };
    struct ab_http_client *client;

    lh_start(respond);
    lh_url(url, sizeof(url), "/big-headers");
    client = ab_http_client_new();
    REQUIRE(client != NULL);
    /* 100 lines of 1 KB: over the 64 KiB header cap, under libcurl's own limits. */
    CHECK_INT_EQ(ab_http_client_do(client, &req, &resp, errstr, sizeof(errstr)),
                 AB_ERR_TOO_LARGE);
    CHECK_STR_CONTAINS(errstr, "headers exceed");
    CHECK(resp.headers == NULL && resp.header_count == 0);
    ab_http_response_cleanup(&resp);
    ab_http_client_free(client);
    lh_stop();
}

TEST(http_client_total_timeout_then_reuse)
{
    char url[128], errstr[256] = "";
    struct ab_http_response resp;
    struct ab_http_request req = { .url = url,
                                   .timeout_ms = 200 };
    struct ab_http_client *client;
    double started, elapsed;

    lh_start(respond);
    lh_url(url, sizeof(url), "/slow");
    client = ab_http_client_new();
    REQUIRE(client != NULL);
    started = now_seconds();
    CHECK_INT_EQ(ab_http_client_do(client, &req, &resp, errstr, sizeof(errstr)), AB_ERR_TIMEOUT);
    elapsed = now_seconds() - started;
    CHECK(elapsed >= 0.15);
    CHECK(elapsed < 2.0);
    CHECK_STR_CONTAINS(errstr, "GET 127.0.0.1: ");
    ab_http_response_cleanup(&resp);

    /* A failed transfer leaves the client usable. */
    req.url = lh_url(url, sizeof(url), "/json");
    CHECK_INT_EQ(ab_http_client_do(client, &req, &resp, errstr, sizeof(errstr)), AB_OK);
    CHECK_INT_EQ(resp.status, 200);
    ab_http_response_cleanup(&resp);
    ab_http_client_free(client);
    lh_stop();
}

TEST(http_client_connection_refused_is_unavailable)
{
    char url[128], errstr[256] = "";
    struct ab_http_response resp;
    struct ab_http_request req = { .url = url };
    struct ab_http_client *client;
    int port;

    /* A port that was just free, and is closed now. */
    close(lh_bind_loopback(&port));
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/hook/secret-token", port);
    client = ab_http_client_new();
    REQUIRE(client != NULL);
    CHECK_INT_EQ(ab_http_client_do(client, &req, &resp, errstr, sizeof(errstr)),
                 AB_ERR_UNAVAILABLE);
    CHECK_STR_CONTAINS(errstr, "GET 127.0.0.1: ");
    /* Webhook URLs carry credentials in the path; messages end up in logs. */
    CHECK(strstr(errstr, "secret-token") == NULL);
    ab_http_response_cleanup(&resp);
    ab_http_client_free(client);
}

TEST(http_client_redirect_not_followed_by_default)
{
    char url[128], errstr[256] = "";
    struct ab_http_response resp;
    struct ab_http_request req = { .url = url };
    struct ab_http_client *client;

    lh_start(respond);
    lh_url(url, sizeof(url), "/redirect");
    client = ab_http_client_new();
    REQUIRE(client != NULL);
    CHECK_INT_EQ(ab_http_client_do(client, &req, &resp, errstr, sizeof(errstr)), AB_OK);
    CHECK_INT_EQ(resp.status, 302);
    CHECK_STR_EQ(ab_http_response_header(&resp, "location"), "/json");
    REQUIRE(resp.body != NULL);
    CHECK_INT_EQ(resp.body_len, 0);
    ab_http_response_cleanup(&resp);
    ab_http_client_free(client);
    CHECK_INT_EQ(lh_recorded(1).conn, 0); /* /json was never asked for */
    lh_stop();
}

TEST(http_client_redirect_followed_when_asked)
{
    char url[128], errstr[256] = "";
    struct ab_http_response resp;
    struct ab_http_request req = { .url = url,
                                   .follow_redirects = true };
    struct ab_http_client *client;

    lh_start(respond);
    lh_url(url, sizeof(url), "/redirect");
    client = ab_http_client_new();
    REQUIRE(client != NULL);
    CHECK_INT_EQ(ab_http_client_do(client, &req, &resp, errstr, sizeof(errstr)), AB_OK);
    CHECK_INT_EQ(resp.status, 200);
    CHECK_STR_EQ(resp.body, "{\"ok\":true}");
    /* Only the final response's headers are kept. */
    CHECK(ab_http_response_header(&resp, "Location") == NULL);
    CHECK_STR_EQ(ab_http_response_header(&resp, "Content-Type"), "application/json");
    ab_http_response_cleanup(&resp);

    req.url = lh_url(url, sizeof(url), "/loop");
    CHECK_INT_EQ(ab_http_client_do(client, &req, &resp, errstr, sizeof(errstr)),
                 AB_ERR_UPSTREAM);
    ab_http_response_cleanup(&resp);

    /* The server's Location is at fault, not the caller's URL. */
    req.url = lh_url(url, sizeof(url), "/to-file");
    CHECK_INT_EQ(ab_http_client_do(client, &req, &resp, errstr, sizeof(errstr)),
                 AB_ERR_UPSTREAM);
    ab_http_response_cleanup(&resp);
    ab_http_client_free(client);

    /* /redirect, /json, then /loop once and three times more, then /to-file. */
    CHECK_STR_EQ(lh_recorded(2).path, "/loop");
    CHECK_STR_EQ(lh_recorded(5).path, "/loop");
    CHECK_STR_EQ(lh_recorded(6).path, "/to-file");
    CHECK_INT_EQ(lh_recorded(7).conn, 0);
    lh_stop();
}

TEST(http_client_keep_alive_reuses_one_connection)
{
    char url[128], errstr[256] = "";
    struct ab_http_response resp;
    struct ab_http_request req = { .url = url };
    struct ab_http_client *client;

    lh_start(respond);
    lh_url(url, sizeof(url), "/json");
    client = ab_http_client_new();
    REQUIRE(client != NULL);
    for (int i = 0; i < 3; i++) {
        CHECK_INT_EQ(ab_http_client_do(client, &req, &resp, errstr, sizeof(errstr)), AB_OK);
        CHECK_INT_EQ(resp.status, 200);
        ab_http_response_cleanup(&resp);
    }
    CHECK_INT_EQ(lh_accepts(), 1);
    CHECK_INT_EQ(lh_recorded(2).conn, 1);
    ab_http_client_free(client);
    lh_stop();
}

TEST(http_client_headers_do_not_leak_into_next_request)
{
    char url[128], errstr[256] = "";
    const char *const headers[] = { "X-Only-First: 1", "Content-Type: text/plain", NULL };
    struct ab_http_response resp;
    struct ab_http_request first = { .method = "PATCH",
                                     .url = url,
                                     .headers = headers,
                                     .body = "hello",
                                     .body_len = 5,
                                     .user_agent = "first-agent" };
    struct ab_http_request second = { .url = url };
    struct ab_http_client *client;

    lh_start(respond);
    lh_url(url, sizeof(url), "/echo");
    client = ab_http_client_new();
    REQUIRE(client != NULL);
    CHECK_INT_EQ(ab_http_client_do(client, &first, &resp, errstr, sizeof(errstr)), AB_OK);
    ab_http_response_cleanup(&resp);
    CHECK_INT_EQ(ab_http_client_do(client, &second, &resp, errstr, sizeof(errstr)), AB_OK);
    ab_http_response_cleanup(&resp);

    struct lh_request got = lh_recorded(1);
    CHECK_STR_EQ(got.method, "GET");
    CHECK_INT_EQ(got.body_len, 0);
    CHECK(strstr(got.head, "X-Only-First") == NULL);
    CHECK(strstr(got.head, "first-agent") == NULL);
    CHECK(strstr(got.head, "Content-Type") == NULL);
    CHECK(strstr(got.head, "Content-Length") == NULL);
    CHECK_STR_CONTAINS(lh_recorded(0).head, "\r\nX-Only-First: 1\r\n");
    /* ...and the reset that guarantees it kept the connection. */
    CHECK_INT_EQ(lh_accepts(), 1);
    ab_http_client_free(client);
    lh_stop();
}

static void *client_thread_main(void *arg)
{
    const char *url = arg;
    struct ab_http_request req = { .url = url };
    struct ab_http_response resp;
    struct ab_http_client *client = ab_http_client_new();
    int ok = 0;

    for (int i = 0; client != NULL && i < 5; i++) {
        ok += ab_http_client_do(client, &req, &resp, NULL, 0) == AB_OK && resp.status == 200;
        ab_http_response_cleanup(&resp);
    }
    ab_http_client_free(client);
    return (void *)(intptr_t)ok;
}

TEST(http_client_one_client_per_thread)
{
    char url[128];
    pthread_t threads[4];
    void *ok;

    lh_start(respond);
    lh_url(url, sizeof(url), "/json");
    /* Every thread creates its client at once, racing on the process-wide init. */
    for (int i = 0; i < 4; i++)
        REQUIRE(pthread_create(&threads[i], NULL, client_thread_main, url) == 0);
    for (int i = 0; i < 4; i++) {
        pthread_join(threads[i], &ok);
        CHECK_INT_EQ((intptr_t)ok, 5);
    }
    CHECK_INT_EQ(lh_accepts(), 4); /* one kept-alive connection per client */
    lh_stop();
}

TEST(http_client_response_headers_are_trimmed_and_unfolded)
{
    char url[128], errstr[256] = "";
    struct ab_http_response resp;
    struct ab_http_request req = { .url = url };
    struct ab_http_client *client;

    lh_start(respond);
    lh_url(url, sizeof(url), "/folded");
    client = ab_http_client_new();
    REQUIRE(client != NULL);
    CHECK_INT_EQ(ab_http_client_do(client, &req, &resp, errstr, sizeof(errstr)), AB_OK);
    CHECK_STR_EQ(ab_http_response_header(&resp, "x-folded"), "first second");
    CHECK_STR_EQ(ab_http_response_header(&resp, "X-Padded"), "padded value");
    /* The first of duplicates; all are in the list. */
    CHECK_STR_EQ(ab_http_response_header(&resp, "Set-Cookie"), "a=1");
    int cookies = 0;
    for (size_t i = 0; i < resp.header_count; i++)
        cookies += strcmp(resp.headers[i].name, "Set-Cookie") == 0;
    CHECK_INT_EQ(cookies, 2);
    ab_http_response_cleanup(&resp);
    ab_http_client_free(client);
    lh_stop();
}

TEST(http_client_rejects_non_http_urls)
{
    const char *const urls[] = { "file:///etc/passwd", "ftp://127.0.0.1/x",
                                 "gopher://127.0.0.1/", "127.0.0.1/no-scheme",
                                 "http://", "not a url", "" };
    char errstr[256];
    struct ab_http_response resp;
    struct ab_http_client *client = ab_http_client_new();

    REQUIRE(client != NULL);
    for (size_t i = 0; i < sizeof(urls) / sizeof(urls[0]); i++) {
        struct ab_http_request req = { .url = urls[i] };

        errstr[0] = '\0';
        CHECK_INT_EQ(ab_http_client_do(client, &req, &resp, errstr, sizeof(errstr)),
                     AB_ERR_INVALID);
        CHECK(errstr[0] != '\0');
        CHECK(resp.body == NULL);
        ab_http_response_cleanup(&resp);
    }
    struct ab_http_request file = { .url = "FILE:///etc/passwd" };
    CHECK_INT_EQ(ab_http_client_do(client, &file, &resp, errstr, sizeof(errstr)),
                 AB_ERR_INVALID);
    CHECK_STR_CONTAINS(errstr, "\"file\" is not http or https");
    struct ab_http_request no_url = { .url = NULL };
    CHECK_INT_EQ(ab_http_client_do(client, &no_url, &resp, NULL, 0), AB_ERR_INVALID);
    ab_http_client_free(client);
}

TEST(http_client_rejects_malformed_requests)
{
    const char *const crlf_headers[] = { "X-Ok: 1", "X-Evil: a\r\nX-Injected: 1", NULL };
    const char *url = "http://127.0.0.1:9/";
    struct ab_http_request bad[] = {
        { .url = url, .headers = crlf_headers },
        { .url = url, .method = "get" },
        { .url = url, .method = "" },
        { .url = url, .method = "GET /x HTTP/1.1\r\n" },
        { .url = url, .method = "HEAD", .body = "x", .body_len = 1 },
        { .url = url, .body_len = 3 },
        { .url = url, .timeout_ms = -1 },
        { .url = url, .connect_timeout_ms = -5 },
        { .url = url, .user_agent = "ua\r\nX-Injected: 1" },
    };
    char errstr[256];
    struct ab_http_response resp;
    struct ab_http_client *client = ab_http_client_new();

    REQUIRE(client != NULL);
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        errstr[0] = '\0';
        CHECK_INT_EQ(ab_http_client_do(client, &bad[i], &resp, errstr, sizeof(errstr)),
                     AB_ERR_INVALID);
        CHECK(errstr[0] != '\0');
        ab_http_response_cleanup(&resp);
    }
    CHECK_INT_EQ(ab_http_client_do(NULL, &bad[0], &resp, NULL, 0), AB_ERR_INVALID);
    CHECK_INT_EQ(ab_http_client_do(client, NULL, &resp, NULL, 0), AB_ERR_INVALID);
    CHECK_INT_EQ(ab_http_client_do(client, &bad[0], NULL, NULL, 0), AB_ERR_INVALID);
    ab_http_client_free(client);
}

TEST(http_client_init_free_and_cleanup_are_safe)
{
    struct ab_http_response resp = { .status = 0 };

    CHECK_INT_EQ(ab_http_global_init(), AB_OK);
    CHECK_INT_EQ(ab_http_global_init(), AB_OK);
    ab_http_client_free(NULL);
    ab_http_response_cleanup(NULL);
    ab_http_response_cleanup(&resp);
    ab_http_response_cleanup(&resp);
    CHECK(ab_http_response_header(&resp, "X") == NULL);
    CHECK(ab_http_response_header(NULL, "X") == NULL);
}
