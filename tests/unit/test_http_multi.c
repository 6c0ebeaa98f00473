/* Tests for common/http_multi: many requests on one thread against a real HTTP/1.1 server on
 * 127.0.0.1 that runs in threads of the test itself (one thread per connection, behaviour
 * chosen by the path, so stalls, trickles and chunk gaps can be scripted), and one test
 * against tests/fake_llm/fake_openai.py feeding the LLM worker's stream assembler. */
#include "test.h"

#include "common/http_multi.h"
#include "common/util.h"
#include "loopback_http.h"
#include "services/llm-worker/openai_stream.h"

#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <stdbool.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

/* One chunk of a chunked body. */
static bool send_chunk(int fd, const char *data, size_t len)
{
    char size_line[32];

    snprintf(size_line, sizeof(size_line), "%zx\r\n", len);
    return lh_send_str(fd, size_line) && lh_send_all(fd, data, len) && lh_send_str(fd, "\r\n");
}

/* Holds the connection until the client hangs up, as a stalled upstream would. */
static void stall(int fd)
{
    lh_nap(fd, 20000);
}

static const char chunked_head[] = "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
                                   "Transfer-Encoding: chunked\r\n\r\n";

/* Answers one request by its path. @returns false when the connection must close. */
static bool respond(int fd, const struct lh_request *req)
{
    static char big[4096];
    const char *p = req->path;
    char head[256];

    memset(big, 'x', sizeof(big));
    if (strcmp(p, "/ok") == 0)
        return lh_send_str(fd, "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nRetry-After: 7\r\n"
                               "Content-Length: 2\r\n\r\nok");
    if (strncmp(p, "/delay/", 7) == 0) {
        if (!lh_nap(fd, (int)strtol(p + 7, NULL, 10)))
            return false;
        return lh_send_str(fd, "HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\ndone");
    }
    if (strncmp(p, "/stream/", 8) == 0) {
        /* /stream/<chunks>/<gap ms>: "chunk-<i>\n" each, the gap before all but the first. */
        char *rest;
        long n = strtol(p + 8, &rest, 10), gap = strtol(rest + 1, NULL, 10);
        char piece[32];

        if (!lh_send_str(fd, chunked_head))
            return false;
        for (long i = 0; i < n; i++) {
            int len = snprintf(piece, sizeof(piece), "chunk-%ld\n", i);
            if ((i > 0 && !lh_nap(fd, (int)gap)) || !send_chunk(fd, piece, (size_t)len))
                return false;
        }
        return send_chunk(fd, "", 0);
    }
    if (strcmp(p, "/silent") == 0) {
        stall(fd);
        return false;
    }
    if (strcmp(p, "/head-then-stall") == 0) {
        if (lh_send_str(fd, chunked_head))
            stall(fd);
        return false;
    }
    if (strcmp(p, "/keepalive-then-stall") == 0) {
        if (lh_send_str(fd, chunked_head) && send_chunk(fd, ": keep-alive\n\n", 14))
            stall(fd);
        return false;
    }
    if (strcmp(p, "/chunks-then-stall") == 0) {
        if (lh_send_str(fd, chunked_head) && send_chunk(fd, "a", 1) && lh_nap(fd, 50) &&
            send_chunk(fd, "b", 1))
            stall(fd);
        return false;
    }
    if (strcmp(p, "/trickle") == 0) {
        /* A byte every 50 ms, for ever: never idle, never done. */
        if (lh_send_str(fd, chunked_head))
            while (send_chunk(fd, ".", 1) && lh_nap(fd, 50))
                ;
        return false;
    }
    if (strcmp(p, "/big") == 0) {
        snprintf(head, sizeof(head), "HTTP/1.1 200 OK\r\nContent-Length: %zu\r\n\r\n",
                 sizeof(big));
        return lh_send_str(fd, head) && lh_send_all(fd, big, sizeof(big));
    }
    if (strcmp(p, "/big-stream") == 0) {
        /* No Content-Length: the size is only known as the bytes arrive. */
        bool ok = lh_send_str(fd, chunked_head);
        for (int i = 0; ok && i < 4; i++)
            ok = send_chunk(fd, big, 1024);
        return ok && send_chunk(fd, "", 0);
    }
    if (strcmp(p, "/rate-limited") == 0)
        return lh_send_str(fd, "HTTP/1.1 429 Too Many Requests\r\n"
                               "Content-Type: application/json\r\nRetry-After: 3\r\n"
                               "Content-Length: 11\r\n\r\n{\"error\":1}");
    if (strcmp(p, "/early-hints") == 0)
        return lh_send_str(fd, "HTTP/1.1 103 Early Hints\r\nLink: </style.css>\r\n\r\n"
                               "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
    return lh_send_str(fd, "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n");
}

/* ---- a recording client ------------------------------------------------------------- */

/* What one request's callbacks saw; its ud. */
struct rec {
    enum ab_http_multi_next headers_answer, data_answer;
    int headers_calls;
    long status;
    char content_type[64];
    char retry_after[16];
    bool saw_link;
    char body[16384];
    size_t body_len;
    int data_calls;
    int64_t last_now;
    bool now_went_back;
    int done_calls;
    int calls_after_done;
    struct ab_http_multi_result result;
    /* Optional: on its first data, cancel this other request. */
    struct ab_http_multi *m;
    uint64_t cancel_on_data;
};

static enum ab_http_multi_next rec_headers(void *ud, long status,
                                           const struct ab_http_header *headers, size_t count)
{
    struct rec *r = ud;
    const char *ct = ab_http_header_find(headers, count, "content-type");
    const char *ra = ab_http_header_find(headers, count, "Retry-After");

    r->calls_after_done += r->done_calls;
    r->headers_calls++;
    r->status = status;
    snprintf(r->content_type, sizeof(r->content_type), "%s", ct ? ct : "");
    snprintf(r->retry_after, sizeof(r->retry_after), "%s", ra ? ra : "");
    r->saw_link = ab_http_header_find(headers, count, "Link") != NULL;
    return r->headers_answer;
}

static enum ab_http_multi_next rec_data(void *ud, const char *data, size_t len, int64_t now_ms)
{
    struct rec *r = ud;
    size_t room = sizeof(r->body) - 1 - r->body_len;

    r->calls_after_done += r->done_calls;
    if (now_ms < r->last_now)
        r->now_went_back = true;
    r->last_now = now_ms;
    memcpy(r->body + r->body_len, data, len < room ? len : room);
    r->body_len += len < room ? len : room;
    r->body[r->body_len] = '\0';
    r->data_calls++;
    if (r->cancel_on_data != 0) {
        CHECK_INT_EQ(ab_http_multi_cancel(r->m, r->cancel_on_data), AB_OK);
        r->cancel_on_data = 0;
    }
    return r->data_answer;
}

static void rec_done(void *ud, const struct ab_http_multi_result *result)
{
    struct rec *r = ud;

    r->done_calls++;
    r->result = *result;
}

static const struct ab_http_multi_callbacks rec_callbacks = { rec_headers, rec_data, rec_done };

/* Adds a GET of path with the given limits. @returns its id. */
static uint64_t add_get(struct ab_http_multi *m, const char *path,
                        const struct ab_http_multi_request *limits, struct rec *r)
{
    char url[128], errstr[256] = "";
    struct ab_http_multi_request req = { .http = { .url = url } };
    uint64_t id = 0;

    if (limits != NULL)
        req = *limits;
    req.http.url = lh_url(url, sizeof(url), path);
    CHECK_INT_EQ(ab_http_multi_add(m, &req, &rec_callbacks, r, &id, errstr, sizeof(errstr)),
                 AB_OK);
    CHECK_STR_EQ(errstr, "");
    CHECK(id != 0);
    return id;
}

/* Runs turns until nothing is in flight or limit_ms passed. @returns the time it took. */
static int64_t run_until_idle(struct ab_http_multi *m, int64_t limit_ms)
{
    int64_t start = ab_monotonic_ms();

    while (ab_http_multi_in_flight(m) > 0 && ab_monotonic_ms() - start < limit_ms)
        CHECK_INT_EQ(ab_http_multi_run(m, 100), AB_OK);
    CHECK_INT_EQ(ab_http_multi_in_flight(m), 0);
    return ab_monotonic_ms() - start;
}

/* A finished request's one on_done, with the expected reason and error. */
static void check_done(const struct rec *r, enum ab_http_multi_reason reason, enum ab_err err)
{
    CHECK_INT_EQ(r->done_calls, 1);
    CHECK_INT_EQ(r->calls_after_done, 0);
    CHECK_STR_EQ(ab_http_multi_reason_name(r->result.reason), ab_http_multi_reason_name(reason));
    CHECK_STR_EQ(ab_err_name(r->result.err), ab_err_name(err));
}

/* ---- tests ---------------------------------------------------------------------------- */

TEST(http_multi_get_delivers_headers_body_and_timings)
{
    struct ab_http_multi *m;
    struct rec r = { .headers_answer = AB_HTTP_MULTI_CONTINUE };

    lh_start(respond);
    m = ab_http_multi_new(NULL);
    REQUIRE(m != NULL);
    add_get(m, "/ok", NULL, &r);
    CHECK_INT_EQ(ab_http_multi_in_flight(m), 1);
    run_until_idle(m, 5000);
    check_done(&r, AB_HTTP_MULTI_COMPLETE, AB_OK);
    CHECK_INT_EQ(r.headers_calls, 1);
    CHECK_INT_EQ(r.status, 200);
    CHECK_STR_EQ(r.content_type, "text/plain");
    CHECK_STR_EQ(r.retry_after, "7");
    CHECK_STR_EQ(r.body, "ok");
    CHECK_INT_EQ(r.result.status, 200);
    CHECK_INT_EQ(r.result.body_bytes, 2);
    CHECK_INT_EQ(r.result.timeout_ms, 0);
    CHECK_STR_EQ(r.result.message, "");
    CHECK(!r.result.reused);
    CHECK(r.result.connect_ms >= 0);
    CHECK(r.result.first_byte_ms >= r.result.connect_ms);
    CHECK(r.result.total_ms >= r.result.first_byte_ms);
    CHECK(!r.now_went_back);
    ab_http_multi_free(m);
    lh_stop();
}

TEST(http_multi_post_body_is_copied_at_add)
{
    char url[128], body[2000];
    const char *const headers[] = { "Content-Type: application/json", NULL };
    struct ab_http_multi_request req = {
        .http = { .url = url, .headers = headers, .body = body, .body_len = sizeof(body) }
    };
    struct ab_http_multi *m;
    struct rec r = { .data_answer = AB_HTTP_MULTI_CONTINUE };

    lh_start(respond);
    m = ab_http_multi_new(NULL);
    REQUIRE(m != NULL);
    for (size_t i = 0; i < sizeof(body); i++)
        body[i] = (char)(i % 251); /* binary, with NULs */
    lh_url(url, sizeof(url), "/ok");
    CHECK_INT_EQ(ab_http_multi_add(m, &req, &rec_callbacks, &r, NULL, NULL, 0), AB_OK);
    /* The request may go the moment add returns: nothing of it is read later. */
    memset(body, 'Z', sizeof(body));
    memset(url, 0, sizeof(url));
    run_until_idle(m, 5000);
    check_done(&r, AB_HTTP_MULTI_COMPLETE, AB_OK);

    struct lh_request got = lh_recorded(0);
    CHECK_STR_EQ(got.method, "POST");
    CHECK_STR_EQ(got.path, "/ok");
    CHECK_INT_EQ(got.body_len, sizeof(body));
    for (size_t i = 0; i < got.body_len && i < sizeof(body); i++)
        if (got.body[i] != (char)(i % 251)) {
            CHECK(!"body differs");
            break;
        }
    ab_http_multi_free(m);
    lh_stop();
}

TEST(http_multi_twenty_concurrent_requests_on_one_thread)
{
    struct ab_http_multi *m;
    struct rec r[20];
    int64_t took;

    memset(r, 0, sizeof(r));
    lh_start(respond);
    m = ab_http_multi_new(NULL);
    REQUIRE(m != NULL);
    for (int i = 0; i < 20; i++)
        add_get(m, "/delay/400", NULL, &r[i]);
    CHECK_INT_EQ(ab_http_multi_in_flight(m), 20);
    took = run_until_idle(m, 10000);
    for (int i = 0; i < 20; i++) {
        check_done(&r[i], AB_HTTP_MULTI_COMPLETE, AB_OK);
        CHECK_INT_EQ(r[i].result.status, 200);
        CHECK_STR_EQ(r[i].body, "done");
    }
    /* One after another they would take 8 s; side by side, a little over 0.4 s. */
    CHECK(took >= 350);
    CHECK(took < 3000);
    CHECK_INT_EQ(lh_accepts(), 20);
    CHECK_INT_EQ(lh_peak_conns(), 20);
    ab_http_multi_free(m);
    lh_stop();
}

TEST(http_multi_streamed_chunks_arrive_in_order)
{
    struct ab_http_multi *m;
    struct rec r = { .data_answer = AB_HTTP_MULTI_CONTINUE };
    struct ab_http_multi_request limits = { .idle_timeout_ms = 2000,
                                            .first_byte_timeout_ms = 2000 };

    lh_start(respond);
    m = ab_http_multi_new(NULL);
    REQUIRE(m != NULL);
    add_get(m, "/stream/6/40", &limits, &r);
    run_until_idle(m, 5000);
    check_done(&r, AB_HTTP_MULTI_COMPLETE, AB_OK);
    CHECK_STR_EQ(r.content_type, "text/event-stream");
    CHECK_STR_EQ(r.body, "chunk-0\nchunk-1\nchunk-2\nchunk-3\nchunk-4\nchunk-5\n");
    CHECK_INT_EQ(r.result.body_bytes, 48);
    /* 40 ms apart, each chunk is its own delivery. */
    CHECK(r.data_calls >= 6);
    CHECK(!r.now_went_back);
    ab_http_multi_free(m);
    lh_stop();
}

TEST(http_multi_connect_timeout_has_its_own_reason)
{
    char url[128];
    struct ab_http_multi_request req = { .http = { .url = url, .connect_timeout_ms = 300 },
                                         .first_byte_timeout_ms = 100 };
    struct ab_http_multi *m;
    struct rec r = { .data_answer = AB_HTTP_MULTI_CONTINUE };
    int64_t took;

    lh_start(respond);
    m = ab_http_multi_new(NULL);
    REQUIRE(m != NULL);
    /* The server takes the TCP connection but never answers the TLS handshake, which
     * libcurl counts as connecting. The first-byte clock never starts: nothing was sent. */
    snprintf(url, sizeof(url), "https://127.0.0.1:%d/secret-token", lh_port());
    CHECK_INT_EQ(ab_http_multi_add(m, &req, &rec_callbacks, &r, NULL, NULL, 0), AB_OK);
    took = run_until_idle(m, 5000);
    check_done(&r, AB_HTTP_MULTI_CONNECT_TIMEOUT, AB_ERR_TIMEOUT);
    CHECK_INT_EQ(r.result.timeout_ms, 300);
    CHECK_STR_EQ(r.result.message, "GET 127.0.0.1: connect timeout after 300 ms");
    CHECK_INT_EQ(r.result.status, 0);
    CHECK_INT_EQ(r.result.connect_ms, -1);
    CHECK_INT_EQ(r.result.first_byte_ms, -1);
    CHECK_INT_EQ(r.headers_calls, 0);
    CHECK(took >= 250);
    CHECK(took < 2000);
    ab_http_multi_free(m);
    lh_stop();
}

TEST(http_multi_first_byte_timeout_counts_body_bytes_not_headers)
{
    struct ab_http_multi *m;
    struct rec silent = { .data_answer = AB_HTTP_MULTI_CONTINUE };
    struct rec headed = { .data_answer = AB_HTTP_MULTI_CONTINUE };
    struct ab_http_multi_request limits = { .first_byte_timeout_ms = 300,
                                            .idle_timeout_ms = 100 };
    int64_t took;

    lh_start(respond);
    m = ab_http_multi_new(NULL);
    REQUIRE(m != NULL);
    add_get(m, "/silent", &limits, &silent);
    add_get(m, "/head-then-stall", &limits, &headed);
    took = run_until_idle(m, 5000);
    check_done(&silent, AB_HTTP_MULTI_FIRST_BYTE_TIMEOUT, AB_ERR_TIMEOUT);
    CHECK_INT_EQ(silent.result.timeout_ms, 300);
    CHECK_STR_EQ(silent.result.message, "GET 127.0.0.1: first byte timeout after 300 ms");
    CHECK_INT_EQ(silent.result.status, 0);
    CHECK_INT_EQ(silent.headers_calls, 0);
    /* The head came, the body did not: still the first byte's timeout, with the status. */
    check_done(&headed, AB_HTTP_MULTI_FIRST_BYTE_TIMEOUT, AB_ERR_TIMEOUT);
    CHECK_INT_EQ(headed.headers_calls, 1);
    CHECK_INT_EQ(headed.result.status, 200);
    CHECK_INT_EQ(headed.result.body_bytes, 0);
    CHECK_INT_EQ(headed.result.first_byte_ms, -1);
    CHECK(headed.result.connect_ms >= 0);
    CHECK(took >= 250);
    CHECK(took < 2000);
    ab_http_multi_free(m);
    lh_stop();
}

TEST(http_multi_keep_waiting_keeps_the_first_byte_clock_running)
{
    struct ab_http_multi *m;
    struct rec r = { .data_answer = AB_HTTP_MULTI_KEEP_WAITING };
    struct ab_http_multi_request limits = { .first_byte_timeout_ms = 300,
                                            .idle_timeout_ms = 5000 };

    lh_start(respond);
    m = ab_http_multi_new(NULL);
    REQUIRE(m != NULL);
    /* An SSE comment comes at once; the caller says it is not what it waits for. */
    add_get(m, "/keepalive-then-stall", &limits, &r);
    run_until_idle(m, 5000);
    check_done(&r, AB_HTTP_MULTI_FIRST_BYTE_TIMEOUT, AB_ERR_TIMEOUT);
    CHECK_STR_EQ(r.body, ": keep-alive\n\n");
    CHECK_INT_EQ(r.result.body_bytes, 14);
    CHECK(r.result.first_byte_ms >= 0); /* the timing still reports the byte itself */
    CHECK(r.result.total_ms >= 250);
    ab_http_multi_free(m);
    lh_stop();
}

TEST(http_multi_idle_timeout_has_its_own_reason)
{
    struct ab_http_multi *m;
    struct rec r = { .data_answer = AB_HTTP_MULTI_CONTINUE };
    struct ab_http_multi_request limits = { .first_byte_timeout_ms = 5000,
                                            .idle_timeout_ms = 300 };

    lh_start(respond);
    m = ab_http_multi_new(NULL);
    REQUIRE(m != NULL);
    add_get(m, "/chunks-then-stall", &limits, &r);
    run_until_idle(m, 5000);
    check_done(&r, AB_HTTP_MULTI_IDLE_TIMEOUT, AB_ERR_TIMEOUT);
    CHECK_INT_EQ(r.result.timeout_ms, 300);
    CHECK_STR_EQ(r.result.message, "GET 127.0.0.1: idle timeout after 300 ms");
    CHECK_STR_EQ(r.body, "ab");
    CHECK_INT_EQ(r.result.status, 200);
    /* Measured from the last chunk: at least 50 ms + 300 ms after the first byte. */
    CHECK(r.result.total_ms - r.result.first_byte_ms >= 330);
    CHECK(r.result.total_ms < 2000);
    ab_http_multi_free(m);
    lh_stop();
}

TEST(http_multi_total_timeout_has_its_own_reason)
{
    struct ab_http_multi *m;
    struct rec r = { .data_answer = AB_HTTP_MULTI_CONTINUE };
    struct ab_http_multi_request limits = { .http.timeout_ms = 400,
                                            .first_byte_timeout_ms = 5000,
                                            .idle_timeout_ms = 5000 };

    lh_start(respond);
    m = ab_http_multi_new(NULL);
    REQUIRE(m != NULL);
    /* A byte every 50 ms: neither idle nor waiting, but never done. */
    add_get(m, "/trickle", &limits, &r);
    run_until_idle(m, 5000);
    check_done(&r, AB_HTTP_MULTI_TOTAL_TIMEOUT, AB_ERR_TIMEOUT);
    CHECK_INT_EQ(r.result.timeout_ms, 400);
    CHECK_STR_EQ(r.result.message, "GET 127.0.0.1: total timeout after 400 ms");
    CHECK(r.result.body_bytes >= 3);
    CHECK(r.result.total_ms >= 380);
    CHECK(r.result.total_ms < 2000);
    ab_http_multi_free(m);
    lh_stop();
}

TEST(http_multi_response_cap_aborts_as_too_large)
{
    struct ab_http_multi *m;
    struct rec declared = { .data_answer = AB_HTTP_MULTI_CONTINUE };
    struct rec streamed = { .data_answer = AB_HTTP_MULTI_CONTINUE };
    struct rec exact = { .data_answer = AB_HTTP_MULTI_CONTINUE };
    struct ab_http_multi_request cap_1k = { .http.max_response_bytes = 1024 };
    struct ab_http_multi_request cap_4k = { .http.max_response_bytes = 4096 };

    lh_start(respond);
    m = ab_http_multi_new(NULL);
    REQUIRE(m != NULL);
    add_get(m, "/big", &cap_1k, &declared);        /* refused on its Content-Length */
    add_get(m, "/big-stream", &cap_1k, &streamed); /* found out while reading */
    add_get(m, "/big-stream", &cap_4k, &exact);    /* exactly at the cap is fine */
    run_until_idle(m, 5000);
    check_done(&declared, AB_HTTP_MULTI_TOO_LARGE, AB_ERR_TOO_LARGE);
    CHECK_STR_EQ(declared.result.message, "GET 127.0.0.1: response body exceeds 1024 bytes");
    CHECK_INT_EQ(declared.body_len, 0);
    check_done(&streamed, AB_HTTP_MULTI_TOO_LARGE, AB_ERR_TOO_LARGE);
    CHECK(streamed.result.body_bytes <= 1024);
    CHECK(streamed.body_len <= 1024);
    check_done(&exact, AB_HTTP_MULTI_COMPLETE, AB_OK);
    CHECK_INT_EQ(exact.result.body_bytes, 4096);
    ab_http_multi_free(m);
    lh_stop();
}

TEST(http_multi_cancel_before_start_mid_stream_and_from_a_callback)
{
    struct ab_http_multi *m;
    struct rec queued = { .data_answer = AB_HTTP_MULTI_CONTINUE };
    struct rec streaming = { .data_answer = AB_HTTP_MULTI_CONTINUE };
    struct rec victim = { .data_answer = AB_HTTP_MULTI_CONTINUE };
    struct rec killer = { .data_answer = AB_HTTP_MULTI_CONTINUE };
    uint64_t queued_id, streaming_id, victim_id;
    int64_t start;

    lh_start(respond);
    m = ab_http_multi_new(NULL);
    REQUIRE(m != NULL);
    queued_id = add_get(m, "/ok", NULL, &queued);
    CHECK_INT_EQ(ab_http_multi_cancel(m, queued_id), AB_OK);
    CHECK_INT_EQ(queued.done_calls, 0); /* on_done comes from run, never from cancel */
    CHECK_INT_EQ(ab_http_multi_run(m, 0), AB_OK);
    check_done(&queued, AB_HTTP_MULTI_CANCELLED, AB_ERR_SHUTDOWN);
    CHECK_STR_EQ(queued.result.message, "GET 127.0.0.1: cancelled");
    CHECK_INT_EQ(queued.headers_calls, 0);
    CHECK_INT_EQ(ab_http_multi_cancel(m, queued_id), AB_ERR_NOT_FOUND);
    CHECK_INT_EQ(ab_http_multi_cancel(m, 12345), AB_ERR_NOT_FOUND);

    /* Mid-stream, from the owner between turns. */
    streaming_id = add_get(m, "/trickle", NULL, &streaming);
    start = ab_monotonic_ms();
    while (streaming.data_calls < 2 && ab_monotonic_ms() - start < 3000)
        ab_http_multi_run(m, 100);
    REQUIRE(streaming.data_calls >= 2);
    CHECK_INT_EQ(ab_http_multi_cancel(m, streaming_id), AB_OK);
    int calls = streaming.data_calls;
    run_until_idle(m, 2000);
    check_done(&streaming, AB_HTTP_MULTI_CANCELLED, AB_ERR_SHUTDOWN);
    CHECK_INT_EQ(streaming.data_calls, calls); /* nothing after cancel */
    CHECK_INT_EQ(streaming.result.status, 200);

    /* From another request's on_data, inside libcurl's callbacks. */
    victim_id = add_get(m, "/silent", NULL, &victim);
    killer.m = m;
    killer.cancel_on_data = victim_id;
    add_get(m, "/stream/3/100", NULL, &killer);
    run_until_idle(m, 5000);
    check_done(&victim, AB_HTTP_MULTI_CANCELLED, AB_ERR_SHUTDOWN);
    check_done(&killer, AB_HTTP_MULTI_COMPLETE, AB_OK);
    CHECK(victim.result.total_ms < 1000);
    ab_http_multi_free(m);
    CHECK(lh_recorded(0).path[0] != '\0');
    CHECK_STR_EQ(lh_recorded(0).path, "/trickle"); /* the cancelled /ok never went */
    lh_stop();
}

TEST(http_multi_refused_connection_is_unavailable)
{
    char url[128];
    struct ab_http_multi_request req = { .http = { .url = url } };
    struct ab_http_multi *m;
    struct rec r = { .data_answer = AB_HTTP_MULTI_CONTINUE };
    int port;

    lh_no_proxy();
    close(lh_bind_loopback(&port)); /* a port that was just free, and is closed now */
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/hook/secret-token", port);
    m = ab_http_multi_new(NULL);
    REQUIRE(m != NULL);
    CHECK_INT_EQ(ab_http_multi_add(m, &req, &rec_callbacks, &r, NULL, NULL, 0), AB_OK);
    run_until_idle(m, 5000);
    check_done(&r, AB_HTTP_MULTI_FAILED, AB_ERR_UNAVAILABLE);
    CHECK(ab_err_is_retriable(r.result.err));
    CHECK_STR_CONTAINS(r.result.message, "GET 127.0.0.1: ");
    CHECK(strstr(r.result.message, "secret-token") == NULL);
    CHECK_INT_EQ(r.result.connect_ms, -1);
    ab_http_multi_free(m);
}

TEST(http_multi_keep_alive_reuses_connections)
{
    struct ab_http_multi *m;
    struct rec r[3];

    memset(r, 0, sizeof(r));
    lh_start(respond);
    m = ab_http_multi_new(NULL);
    REQUIRE(m != NULL);
    for (int i = 0; i < 3; i++) {
        add_get(m, "/ok", NULL, &r[i]);
        run_until_idle(m, 5000);
        check_done(&r[i], AB_HTTP_MULTI_COMPLETE, AB_OK);
        CHECK(r[i].result.reused == (i > 0));
    }
    CHECK_INT_EQ(lh_accepts(), 1);
    CHECK_INT_EQ(r[2].result.connect_ms, 0);
    ab_http_multi_free(m);
    lh_stop();
}

TEST(http_multi_caps_transfers_in_flight)
{
    struct ab_http_multi_options opts = { .max_transfers = 2 };
    char url[128], errstr[256] = "";
    struct ab_http_multi_request req = { .http = { .url = url } };
    struct ab_http_multi *m;
    struct rec r[3];

    memset(r, 0, sizeof(r));
    lh_start(respond);
    m = ab_http_multi_new(&opts);
    REQUIRE(m != NULL);
    add_get(m, "/ok", NULL, &r[0]);
    add_get(m, "/ok", NULL, &r[1]);
    lh_url(url, sizeof(url), "/ok");
    CHECK_INT_EQ(ab_http_multi_add(m, &req, &rec_callbacks, &r[2], NULL, errstr,
                                   sizeof(errstr)),
                 AB_ERR_RATE_LIMITED);
    CHECK_STR_EQ(errstr, "2 HTTP requests in flight already");
    run_until_idle(m, 5000);
    CHECK_INT_EQ(r[2].done_calls, 0); /* refused: no callback, ever */
    add_get(m, "/ok", NULL, &r[2]);
    run_until_idle(m, 5000);
    for (int i = 0; i < 3; i++)
        check_done(&r[i], AB_HTTP_MULTI_COMPLETE, AB_OK);
    ab_http_multi_free(m);
    lh_stop();
}

TEST(http_multi_per_host_connection_limit)
{
    struct ab_http_multi_options opts = { .max_host_connections = 2 };
    struct ab_http_multi *m;
    struct rec r[6];
    int64_t took;

    memset(r, 0, sizeof(r));
    lh_start(respond);
    m = ab_http_multi_new(&opts);
    REQUIRE(m != NULL);
    for (int i = 0; i < 6; i++)
        add_get(m, "/delay/200", NULL, &r[i]);
    took = run_until_idle(m, 10000);
    for (int i = 0; i < 6; i++) {
        check_done(&r[i], AB_HTTP_MULTI_COMPLETE, AB_OK);
        CHECK_STR_EQ(r[i].body, "done");
    }
    CHECK(lh_peak_conns() <= 2);
    CHECK(took >= 550); /* three rounds of two */
    ab_http_multi_free(m);
    lh_stop();
}

static void *wake_later(void *arg)
{
    usleep(100 * 1000);
    CHECK_INT_EQ(ab_http_multi_wakeup(arg), AB_OK);
    return NULL;
}

TEST(http_multi_wakeup_interrupts_run_from_another_thread)
{
    struct ab_http_multi *m = ab_http_multi_new(NULL);
    pthread_t thread;
    int64_t start, took;

    REQUIRE(m != NULL);
    /* Nothing in flight: run waits its whole timeout... */
    start = ab_monotonic_ms();
    CHECK_INT_EQ(ab_http_multi_run(m, 150), AB_OK);
    took = ab_monotonic_ms() - start;
    CHECK(took >= 140);
    /* ...unless woken. */
    REQUIRE(pthread_create(&thread, NULL, wake_later, m) == 0);
    start = ab_monotonic_ms();
    CHECK_INT_EQ(ab_http_multi_run(m, 10000), AB_OK);
    took = ab_monotonic_ms() - start;
    pthread_join(thread, NULL);
    CHECK(took >= 50);
    CHECK(took < 3000);
    ab_http_multi_free(m);
}

TEST(http_multi_callbacks_may_abort)
{
    struct ab_http_multi *m;
    struct rec on_head = { .headers_answer = AB_HTTP_MULTI_ABORT };
    struct rec on_body = { .data_answer = AB_HTTP_MULTI_ABORT };

    lh_start(respond);
    m = ab_http_multi_new(NULL);
    REQUIRE(m != NULL);
    add_get(m, "/rate-limited", NULL, &on_head);
    add_get(m, "/trickle", NULL, &on_body);
    run_until_idle(m, 5000);
    check_done(&on_head, AB_HTTP_MULTI_ABORTED, AB_ERR_SHUTDOWN);
    CHECK_INT_EQ(on_head.status, 429);
    CHECK_STR_EQ(on_head.retry_after, "3");
    CHECK_STR_EQ(on_head.content_type, "application/json");
    CHECK_INT_EQ(on_head.data_calls, 0);
    CHECK_INT_EQ(on_head.result.status, 429);
    CHECK_STR_EQ(on_head.result.message, "GET 127.0.0.1: stopped by its callback");
    check_done(&on_body, AB_HTTP_MULTI_ABORTED, AB_ERR_SHUTDOWN);
    CHECK_INT_EQ(on_body.data_calls, 1);
    ab_http_multi_free(m);
    lh_stop();
}

TEST(http_multi_error_status_is_complete_with_its_body)
{
    struct ab_http_multi *m;
    struct rec r = { .data_answer = AB_HTTP_MULTI_CONTINUE };
    struct rec hints = { .data_answer = AB_HTTP_MULTI_CONTINUE };

    lh_start(respond);
    m = ab_http_multi_new(NULL);
    REQUIRE(m != NULL);
    add_get(m, "/rate-limited", NULL, &r);
    add_get(m, "/early-hints", NULL, &hints);
    run_until_idle(m, 5000);
    check_done(&r, AB_HTTP_MULTI_COMPLETE, AB_OK);
    CHECK_INT_EQ(r.result.status, 429);
    CHECK_STR_EQ(r.body, "{\"error\":1}");
    /* A 1xx is not the response: on_headers comes once, for the 200, without its lines. */
    check_done(&hints, AB_HTTP_MULTI_COMPLETE, AB_OK);
    CHECK_INT_EQ(hints.headers_calls, 1);
    CHECK_INT_EQ(hints.status, 200);
    CHECK(!hints.saw_link);
    CHECK_STR_EQ(hints.body, "ok");
    ab_http_multi_free(m);
    lh_stop();
}

TEST(http_multi_free_ends_what_is_in_flight)
{
    struct ab_http_multi *m;
    struct rec r[2];
    char errstr[128];

    memset(r, 0, sizeof(r));
    lh_start(respond);
    m = ab_http_multi_new(NULL);
    REQUIRE(m != NULL);
    add_get(m, "/silent", NULL, &r[0]);
    for (int i = 0; i < 3; i++)
        ab_http_multi_run(m, 20);
    add_get(m, "/ok", NULL, &r[1]); /* queued, never started */
    ab_http_multi_free(m);
    for (int i = 0; i < 2; i++)
        check_done(&r[i], AB_HTTP_MULTI_CANCELLED, AB_ERR_SHUTDOWN);
    (void)errstr;
    lh_stop();
}

TEST(http_multi_rejects_bad_requests_without_callbacks)
{
    const char *const urls[] = { "file:///etc/passwd", "ftp://127.0.0.1/x", "not a url", "" };
    struct ab_http_multi_callbacks no_done = { rec_headers, rec_data, NULL };
    struct ab_http_multi *m = ab_http_multi_new(NULL);
    struct rec r = { .data_answer = AB_HTTP_MULTI_CONTINUE };
    char errstr[256];
    uint64_t id = 99;

    REQUIRE(m != NULL);
    for (size_t i = 0; i < sizeof(urls) / sizeof(urls[0]); i++) {
        struct ab_http_multi_request req = { .http = { .url = urls[i] } };

        errstr[0] = '\0';
        CHECK_INT_EQ(ab_http_multi_add(m, &req, &rec_callbacks, &r, &id, errstr,
                                       sizeof(errstr)),
                     AB_ERR_INVALID);
        CHECK(errstr[0] != '\0');
    }
    struct ab_http_multi_request req = { .http = { .url = "http://127.0.0.1:1/" } };
    req.idle_timeout_ms = -1;
    CHECK_INT_EQ(ab_http_multi_add(m, &req, &rec_callbacks, &r, &id, NULL, 0), AB_ERR_INVALID);
    req.idle_timeout_ms = 0;
    req.http.follow_redirects = true;
    CHECK_INT_EQ(ab_http_multi_add(m, &req, &rec_callbacks, &r, &id, errstr, sizeof(errstr)),
                 AB_ERR_INVALID);
    CHECK_STR_EQ(errstr, "redirects are not followed here");
    req.http.follow_redirects = false;
    req.http.method = "get";
    CHECK_INT_EQ(ab_http_multi_add(m, &req, &rec_callbacks, &r, &id, NULL, 0), AB_ERR_INVALID);
    req.http.method = NULL;
    CHECK_INT_EQ(ab_http_multi_add(m, &req, &no_done, &r, &id, NULL, 0), AB_ERR_INVALID);
    CHECK_INT_EQ(id, 99);
    CHECK_INT_EQ(ab_http_multi_in_flight(m), 0);
    CHECK_INT_EQ(ab_http_multi_run(m, 0), AB_OK);
    CHECK_INT_EQ(r.done_calls + r.headers_calls + r.data_calls, 0);
    ab_http_multi_free(m);
}

/* An on_done that queues the next request, as a retry would. */
struct chain {
    struct ab_http_multi *m;
    char url[128];
    int done;
    long statuses[3];
};

static void chain_done(void *ud, const struct ab_http_multi_result *result);
static const struct ab_http_multi_callbacks chain_callbacks = { NULL, NULL, chain_done };

static void chain_done(void *ud, const struct ab_http_multi_result *result)
{
    struct chain *c = ud;
    struct ab_http_multi_request req = { .http = { .url = c->url } };

    c->statuses[c->done++] = result->status;
    /* A callback may not run the loop. */
    CHECK_INT_EQ(ab_http_multi_run(c->m, 0), AB_ERR_INVALID);
    if (c->done < 3)
        CHECK_INT_EQ(ab_http_multi_add(c->m, &req, &chain_callbacks, c, NULL, NULL, 0), AB_OK);
}

TEST(http_multi_on_done_may_add_the_next_request)
{
    struct chain c = { .done = 0 };
    struct ab_http_multi_request req = { .http = { .url = c.url } };

    lh_start(respond);
    c.m = ab_http_multi_new(NULL);
    REQUIRE(c.m != NULL);
    lh_url(c.url, sizeof(c.url), "/ok");
    CHECK_INT_EQ(ab_http_multi_add(c.m, &req, &chain_callbacks, &c, NULL, NULL, 0), AB_OK);
    run_until_idle(c.m, 5000);
    CHECK_INT_EQ(c.done, 3);
    CHECK_INT_EQ(c.statuses[2], 200);
    CHECK_INT_EQ(lh_accepts(), 1);
    ab_http_multi_free(c.m);
    lh_stop();
}

/* ---- with the fake OpenAI server and the LLM worker's assembler ----------------------- */

/* Starts tests/fake_llm/fake_openai.py, found from this binary (build/<kind>/bin/).
 * @returns its pid, or -1 without python3. */
static pid_t fake_openai_start(int *port)
{
    char script[4096] = "", exe[3072];
    char *const argv[] = { "python3", script, "--port", "0", NULL };
    posix_spawn_file_actions_t actions;
    ssize_t n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
    int out[2];
    pid_t pid;
    char line[32] = "";
    FILE *f;

    lh_no_proxy();
    REQUIRE(n > 0);
    exe[n] = '\0';
    for (int up = 0; up < 4; up++) { /* unit-tests, bin, <kind>, build */
        char *slash = strrchr(exe, '/');
        REQUIRE(slash != NULL);
        *slash = '\0';
    }
    snprintf(script, sizeof(script), "%s/tests/fake_llm/fake_openai.py", exe);
    REQUIRE(pipe(out) == 0);
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_adddup2(&actions, out[1], STDOUT_FILENO);
    posix_spawn_file_actions_addclose(&actions, out[0]);
    if (posix_spawnp(&pid, "python3", &actions, NULL, argv, environ) != 0)
        pid = -1;
    posix_spawn_file_actions_destroy(&actions);
    close(out[1]);
    f = fdopen(out[0], "r");
    REQUIRE(f != NULL);
    if (pid > 0 && fgets(line, sizeof(line), f) == NULL) {
        kill(pid, SIGKILL);
        waitpid(pid, NULL, 0);
        pid = -1;
    }
    fclose(f);
    *port = (int)strtol(line, NULL, 10);
    return pid;
}

/* One streamed completion: the SSE body fed to the assembler as it arrives, and the
 * first-byte clock kept running until the first token, as the LLM worker will do it. */
struct completion {
    struct llmw_openai_stream *st;
    long status;
    bool done;
    struct ab_http_multi_result result;
};

static enum ab_http_multi_next completion_headers(void *ud, long status,
                                                  const struct ab_http_header *headers,
                                                  size_t count)
{
    struct completion *c = ud;

    (void)headers;
    (void)count;
    c->status = status;
    return AB_HTTP_MULTI_CONTINUE;
}

static enum ab_http_multi_next completion_data(void *ud, const char *data, size_t len,
                                               int64_t now_ms)
{
    struct completion *c = ud;

    /* A settled stream ([DONE]) is read to its end, so the connection stays reusable. */
    llmw_openai_stream_feed(c->st, data, len, now_ms);
    return llmw_openai_stream_peek(c->st)->first_token_ms >= 0 ? AB_HTTP_MULTI_CONTINUE
                                                                : AB_HTTP_MULTI_KEEP_WAITING;
}

static void completion_done(void *ud, const struct ab_http_multi_result *result)
{
    struct completion *c = ud;

    c->done = true;
    c->result = *result;
}

static void complete(struct ab_http_multi *m, int port, const char *model,
                     long first_token_ms, long idle_ms, struct completion *c,
                     struct llmw_openai_result *out)
{
    char url[128], body[256];
    const char *const headers[] = { "Content-Type: application/json", NULL };
    struct ab_http_multi_callbacks cb = { completion_headers, completion_data,
                                          completion_done };
    struct ab_http_multi_request req = { .http = { .url = url, .headers = headers,
                                                   .body = body, .timeout_ms = 10000 },
                                         .first_byte_timeout_ms = first_token_ms,
                                         .idle_timeout_ms = idle_ms };

    snprintf(url, sizeof(url), "http://127.0.0.1:%d/v1/chat/completions", port);
    req.http.body_len = (size_t)snprintf(
        body, sizeof(body),
        "{\"model\":\"%s\",\"stream\":true,\"messages\":[{\"role\":\"user\",\"content\":"
        "\"hello world\"}]}",
        model);
    memset(c, 0, sizeof(*c));
    c->st = llmw_openai_stream_new(NULL);
    CHECK_INT_EQ(ab_http_multi_add(m, &req, &cb, c, NULL, NULL, 0), AB_OK);
    run_until_idle(m, 8000);
    CHECK(c->done);
    llmw_openai_stream_finish(c->st, out);
    llmw_openai_stream_free(c->st);
}

TEST(http_multi_streams_fake_openai_into_the_assembler)
{
    struct ab_http_multi *m;
    struct completion c;
    struct llmw_openai_result out;
    int port = 0;
    pid_t pid = fake_openai_start(&port);

    if (pid < 0) {
        printf("    skipped: python3 could not start the fake server\n");
        return;
    }
    REQUIRE(port > 0);
    m = ab_http_multi_new(NULL);
    REQUIRE(m != NULL);

    complete(m, port, "gpt-4o", 3000, 3000, &c, &out);
    CHECK_STR_EQ(ab_http_multi_reason_name(c.result.reason), "complete");
    CHECK_INT_EQ(c.status, 200);
    CHECK_STR_EQ(llmw_openai_outcome_name(out.outcome), "answer");
    CHECK_STR_EQ(out.content, "echo: hello world");
    CHECK(out.done);
    llmw_openai_result_cleanup(&out);

    /* The role chunk comes at once, the first token after 1.5 s: the first-byte clock,
     * kept running by KEEP_WAITING, is what says so. */
    complete(m, port, "slow_first:1500", 300, 5000, &c, &out);
    CHECK_STR_EQ(ab_http_multi_reason_name(c.result.reason), "first_byte_timeout");
    CHECK_STR_CONTAINS(c.result.message, "first byte timeout after 300 ms");
    CHECK(c.result.body_bytes > 0);
    CHECK_STR_EQ(llmw_openai_outcome_name(out.outcome), "truncated");
    llmw_openai_result_cleanup(&out);

    /* Tokens 800 ms apart against a 300 ms idle limit. */
    complete(m, port, "slow_chunks:800", 3000, 300, &c, &out);
    CHECK_STR_EQ(ab_http_multi_reason_name(c.result.reason), "idle_timeout");
    CHECK_INT_EQ(c.result.timeout_ms, 300);
    CHECK_STR_EQ(llmw_openai_outcome_name(out.outcome), "truncated");
    llmw_openai_result_cleanup(&out);

    ab_http_multi_free(m);
    kill(pid, SIGTERM);
    waitpid(pid, NULL, 0);
}
