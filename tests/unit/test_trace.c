/* Tests for common/trace: traceparent parsing by the W3C rules (the specification's valid
 * and invalid shapes), child spans, the thread's current span, and the places it shows:
 * log lines, new envelopes and the header of an outgoing HTTP request. */
#include "test.h"

#include "common/envelope.h"
#include "common/http_easy.h"
#include "common/log.h"
#include "common/trace.h"

#include <pthread.h>
#include <strings.h>

#define GOOD "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"

TEST(trace_parse_valid)
{
    struct ab_trace t;
    REQUIRE(ab_trace_parse(GOOD, &t));
    CHECK_STR_EQ(t.trace_id, "4bf92f3577b34da6a3ce929d0e0e4736");
    CHECK_STR_EQ(t.span_id, "00f067aa0ba902b7");
    CHECK_INT_EQ(t.flags, 1);
    REQUIRE(ab_trace_parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00", &t));
    CHECK_INT_EQ(t.flags, 0);
    /* A later version is read by its first 55 characters; more must start with '-'. */
    CHECK(ab_trace_parse("cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", &t));
    CHECK(ab_trace_parse("cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-what", &t));
    char out[AB_TRACEPARENT_LEN + 1];
    REQUIRE(ab_trace_parse(GOOD, &t));
    ab_trace_format(&t, out);
    CHECK_STR_EQ(out, GOOD);
}

TEST(trace_parse_invalid)
{
    static const char *const bad[] = {
        "",
        "00",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0",   /* short */
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-", /* 00 is exact */
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-011",
        "cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01x", /* later: '-' next */
        "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",  /* ff is invalid */
        "00-00000000000000000000000000000000-00f067aa0ba902b7-01",  /* zero trace */
        "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",  /* zero span */
        "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",  /* upper case */
        "00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01",  /* not hex */
        "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",  /* separator */
        "0-04bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        " 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01\r\nX: y",
    };
    struct ab_trace t;
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        if (ab_trace_parse(bad[i], &t))
            ab_test_fail(__FILE__, __LINE__, "accepted \"%s\"", bad[i]);
    }
    CHECK(!ab_trace_parse(NULL, &t));
}

TEST(trace_child_keeps_the_trace_and_makes_a_new_span)
{
    struct ab_trace parent, child, fresh, again;
    REQUIRE(ab_trace_parse(GOOD, &parent));
    ab_trace_child(&parent, &child);
    CHECK_STR_EQ(child.trace_id, parent.trace_id);
    CHECK(strcmp(child.span_id, parent.span_id) != 0);
    CHECK_INT_EQ(child.flags, parent.flags);
    char text[AB_TRACEPARENT_LEN + 1];
    ab_trace_format(&child, text);
    CHECK(ab_trace_parse(text, &again));

    struct ab_trace odd;
    REQUIRE(ab_trace_parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-ff", &odd));
    ab_trace_child(&odd, &child); /* bits version 00 does not define are not passed on */
    CHECK_INT_EQ(child.flags, 1);
    ab_trace_child(NULL, &fresh); /* no parent: a new, sampled trace */
    CHECK(strcmp(fresh.trace_id, parent.trace_id) != 0);
    CHECK_INT_EQ(strlen(fresh.trace_id), 32);
    CHECK_INT_EQ(strlen(fresh.span_id), 16);
    CHECK_INT_EQ(fresh.flags, 1);

    ab_trace_child_header(GOOD, text);
    REQUIRE(ab_trace_parse(text, &again));
    CHECK_STR_EQ(again.trace_id, parent.trace_id);
    CHECK(strcmp(again.span_id, parent.span_id) != 0);
    ab_trace_child_header("garbage", text); /* an invalid parent: a new trace */
    REQUIRE(ab_trace_parse(text, &again));
    CHECK(strcmp(again.trace_id, parent.trace_id) != 0);
}

static void *current_elsewhere(void *arg)
{
    (void)arg;
    return ab_trace_current() == NULL ? (void *)1 : NULL;
}

TEST(trace_current_span_per_thread)
{
    char text[AB_TRACEPARENT_LEN + 1];
    CHECK(ab_trace_current() == NULL);
    CHECK(!ab_trace_current_header(text));
    CHECK_STR_EQ(text, "");

    ab_trace_enter(GOOD);
    const struct ab_trace *cur = ab_trace_current();
    REQUIRE(cur != NULL);
    CHECK_STR_EQ(cur->trace_id, "4bf92f3577b34da6a3ce929d0e0e4736");
    CHECK(strcmp(cur->span_id, "00f067aa0ba902b7") != 0); /* our span, not the caller's */
    REQUIRE(ab_trace_current_header(text));
    pthread_t th;
    void *clean = NULL;
    REQUIRE(pthread_create(&th, NULL, current_elsewhere, NULL) == 0);
    pthread_join(th, &clean);
    CHECK(clean != NULL);

    /* Resuming the span later names the same span. */
    char saved[AB_TRACEPARENT_LEN + 1];
    snprintf(saved, sizeof(saved), "%s", text);
    ab_trace_leave();
    CHECK(ab_trace_current() == NULL);
    CHECK(ab_trace_resume(saved));
    REQUIRE(ab_trace_current_header(text));
    CHECK_STR_EQ(text, saved);
    CHECK(!ab_trace_resume("nonsense"));
    CHECK(ab_trace_current() == NULL);

    ab_trace_enter(NULL); /* nothing received: a new trace */
    REQUIRE(ab_trace_current() != NULL);
    CHECK(strcmp(ab_trace_current()->trace_id, "4bf92f3577b34da6a3ce929d0e0e4736") != 0);
    ab_trace_leave();
}

TEST(trace_ids_in_log_lines_and_new_events)
{
    char *text = NULL;
    size_t size = 0;
    FILE *out = open_memstream(&text, &size);
    REQUIRE(out != NULL);
    ab_log_set_output(out);
    ab_log_init("trace", AB_LOG_INFO);
    ab_info("before");
    ab_trace_enter(GOOD);
    char span[AB_TRACEPARENT_LEN + 1];
    REQUIRE(ab_trace_current_header(span));
    ab_info("inside");
    struct ab_event *ev = ab_event_new("agentbus.test", "/test", NULL, NULL);
    ab_trace_leave();
    struct ab_event *untraced = ab_event_new("agentbus.test", "/test", NULL, NULL);
    ab_info("after");
    ab_log_set_output(NULL);
    fclose(out);

    CHECK_STR_EQ(ev->traceparent, span);
    CHECK(untraced->traceparent == NULL);
    ab_event_free(ev);
    ab_event_free(untraced);

    char *second = strchr(text, '\n');
    REQUIRE(second != NULL);
    json_t *first = json_loadb(text, (size_t)(second - text), 0, NULL);
    json_t *inside = json_loads(second + 1, JSON_DISABLE_EOF_CHECK, NULL);
    REQUIRE(first != NULL && inside != NULL);
    CHECK(json_object_get(first, "trace_id") == NULL);
    CHECK_STR_EQ(json_string_value(json_object_get(inside, "trace_id")),
                 "4bf92f3577b34da6a3ce929d0e0e4736");
    char span_id[17];
    snprintf(span_id, sizeof(span_id), "%.16s", span + 36);
    CHECK_STR_EQ(json_string_value(json_object_get(inside, "span_id")), span_id);
    json_decref(first);
    json_decref(inside);
    free(text);
}

static const char *traceparent_line(const struct curl_slist *l)
{
    for (; l != NULL; l = l->next)
        if (strncasecmp(l->data, "traceparent:", 12) == 0)
            return l->data;
    return NULL;
}

TEST(trace_outgoing_request_header)
{
    struct ab_http_easy_prepared p;
    char err[256];
    struct ab_http_request req = {.url = "http://127.0.0.1:9/x", .traceparent = GOOD};
    REQUIRE(ab_http_easy_prepare(&req, &p, err, sizeof(err)) == AB_OK);
    CHECK_STR_EQ(traceparent_line(p.headers), "traceparent: " GOOD);
    ab_http_easy_prepared_cleanup(&p);

    /* None given: a child of the thread's span, or nothing outside one. */
    req.traceparent = NULL;
    REQUIRE(ab_http_easy_prepare(&req, &p, err, sizeof(err)) == AB_OK);
    CHECK(traceparent_line(p.headers) == NULL);
    ab_http_easy_prepared_cleanup(&p);
    ab_trace_enter(GOOD);
    REQUIRE(ab_http_easy_prepare(&req, &p, err, sizeof(err)) == AB_OK);
    const char *line = traceparent_line(p.headers);
    REQUIRE(line != NULL);
    CHECK(strncmp(line, "traceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-", 49) == 0);
    CHECK(strstr(line, ab_trace_current()->span_id) == NULL); /* a span of its own */
    ab_http_easy_prepared_cleanup(&p);
    ab_trace_leave();

    /* The caller's own header wins; an invalid value is refused, not sent. */
    const char *const mine[] = {"traceparent: " GOOD, NULL};
    req.headers = mine;
    req.traceparent = "00-11111111111111111111111111111111-2222222222222222-01";
    REQUIRE(ab_http_easy_prepare(&req, &p, err, sizeof(err)) == AB_OK);
    CHECK_STR_EQ(traceparent_line(p.headers), "traceparent: " GOOD);
    ab_http_easy_prepared_cleanup(&p);
    req.headers = NULL;
    req.traceparent = "00-abc\r\nX-Injected: 1";
    CHECK(ab_http_easy_prepare(&req, &p, err, sizeof(err)) == AB_ERR_INVALID);
    CHECK(strstr(err, "traceparent") != NULL);
}
