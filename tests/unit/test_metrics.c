/* Tests for common/metrics: the exact exposition text, name rules, re-registration, the
 * series cap, callback gauges and concurrent observation while rendering. */
#include "test.h"

#include "common/log.h"
#include "common/metrics.h"

#include <math.h>
#include <pthread.h>
#include <stdatomic.h>

/* Renders m, checking the returned length, for comparison with the expected text. */
static char *render(struct ab_metrics *m)
{
    size_t len = 12345;
    char *text = ab_metrics_render(m, &len);
    REQUIRE(text != NULL);
    CHECK_INT_EQ(len, strlen(text));
    return text;
}

/* Sends the log to a temporary file so a test can read what was logged (and the runner's
 * output stays readable). */
static FILE *capture_log(void)
{
    FILE *log = tmpfile();
    REQUIRE(log != NULL);
    ab_log_set_output(log);
    return log;
}

/* Everything logged so far; the caller frees. */
static char *captured(FILE *log)
{
    long size = ftell(log);
    REQUIRE(size >= 0);
    char *text = calloc(1, (size_t)size + 1);
    REQUIRE(text != NULL);
    rewind(log);
    REQUIRE(fread(text, 1, (size_t)size, log) == (size_t)size);
    return text;
}

static double read_double(void *ud)
{
    return *(const double *)ud;
}

static double twice(void *ud)
{
    return 2 * *(const double *)ud;
}

static size_t count_occurrences(const char *hay, const char *needle)
{
    size_t n = 0;
    for (const char *p = strstr(hay, needle); p != NULL; p = strstr(p + 1, needle))
        n++;
    return n;
}

TEST(metrics_empty_registry_renders_empty_text)
{
    struct ab_metrics *m = ab_metrics_new();
    REQUIRE(m != NULL);
    char *text = render(m);
    CHECK_STR_EQ(text, "");
    free(text);
    ab_metrics_free(m);
    ab_metrics_free(NULL);
    CHECK(ab_metrics_render(NULL, NULL) == NULL);
}

TEST(metrics_counter_with_labels_exact_text)
{
    struct ab_metrics *m = ab_metrics_new();
    struct ab_metric *c =
        ab_metrics_counter(m, "agentbus_http_requests_total", "HTTP requests handled.",
                           (const char *const[]){ "route", "code", NULL });
    REQUIRE(c != NULL);
    /* Inserted out of order: the output is sorted by label values. */
    ab_metric_inc(c, (const char *const[]){ "/v1/messages", "400", NULL }, 1.5);
    ab_metric_inc(c, (const char *const[]){ "/v1/messages", "202", NULL }, 1);
    ab_metric_inc(c, (const char *const[]){ "/healthz", "200", NULL }, 1);
    ab_metric_inc(c, (const char *const[]){ "/v1/messages", "202", NULL }, 2);
    ab_metric_inc(c, (const char *const[]){ "/v1/inbox", "200", NULL }, 0);

    char *text = render(m);
    CHECK_STR_EQ(text, "# HELP agentbus_http_requests_total HTTP requests handled.\n"
                       "# TYPE agentbus_http_requests_total counter\n"
                       "agentbus_http_requests_total{route=\"/healthz\",code=\"200\"} 1\n"
                       "agentbus_http_requests_total{route=\"/v1/inbox\",code=\"200\"} 0\n"
                       "agentbus_http_requests_total{route=\"/v1/messages\",code=\"202\"} 3\n"
                       "agentbus_http_requests_total{route=\"/v1/messages\",code=\"400\"} 1.5\n");
    free(text);
    ab_metrics_free(m);
}

TEST(metrics_unlabeled_counter_renders_zero_before_first_inc)
{
    struct ab_metrics *m = ab_metrics_new();
    struct ab_metric *c = ab_metrics_counter(m, "jobs_total", NULL, NULL);
    REQUIRE(c != NULL);
    char *text = render(m);
    CHECK_STR_EQ(text, "# TYPE jobs_total counter\n"
                       "jobs_total 0\n");
    free(text);
    ab_metric_inc(c, NULL, 41);
    ab_metric_inc(c, (const char *const[]){ NULL }, 1);
    text = render(m);
    CHECK_STR_EQ(text, "# TYPE jobs_total counter\n"
                       "jobs_total 42\n");
    free(text);
    ab_metrics_free(m);
}

TEST(metrics_gauge_exact_text_and_number_formats)
{
    struct ab_metrics *m = ab_metrics_new();
    struct ab_metric *g = ab_metrics_gauge(m, "queue_depth", "Messages waiting.", NULL);
    struct ab_metric *v = ab_metrics_gauge(m, "values", "Number formats.",
                                           (const char *const[]){ "case", NULL });
    REQUIRE(g != NULL && v != NULL);
    ab_metric_set(g, NULL, 40);
    ab_metric_add(g, NULL, 2.5);
    ab_metric_add(g, NULL, -0.5);

    static const struct {
        const char *name;
        double value;
    } cases[] = {
        { "a_int", 123456789012.0 },
        { "b_tenth", 0.1 },
        { "c_third", 1.0 / 3.0 },
        { "d_sum", 0.1 + 0.2 },
        { "e_small", 1e-7 },
        { "f_big", 1e20 },
        { "g_neg", -2.25 },
        { "h_negzero", -0.0 },
        { "i_inf", INFINITY },
        { "j_neginf", -INFINITY },
        { "k_nan", NAN },
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
        ab_metric_set(v, (const char *const[]){ cases[i].name, NULL }, cases[i].value);

    char *text = render(m);
    CHECK_STR_EQ(text, "# HELP queue_depth Messages waiting.\n"
                       "# TYPE queue_depth gauge\n"
                       "queue_depth 42\n"
                       "# HELP values Number formats.\n"
                       "# TYPE values gauge\n"
                       "values{case=\"a_int\"} 123456789012\n"
                       "values{case=\"b_tenth\"} 0.1\n"
                       "values{case=\"c_third\"} 0.3333333333333333\n"
                       "values{case=\"d_sum\"} 0.30000000000000004\n"
                       "values{case=\"e_small\"} 1e-07\n"
                       "values{case=\"f_big\"} 1e+20\n"
                       "values{case=\"g_neg\"} -2.25\n"
                       "values{case=\"h_negzero\"} 0\n"
                       "values{case=\"i_inf\"} +Inf\n"
                       "values{case=\"j_neginf\"} -Inf\n"
                       "values{case=\"k_nan\"} NaN\n");
    free(text);
    ab_metrics_free(m);
}

TEST(metrics_histogram_exact_text)
{
    struct ab_metrics *m = ab_metrics_new();
    const double buckets[] = { 0.25, 0.5, 1 };
    struct ab_metric *h =
        ab_metrics_histogram(m, "llm_call_seconds", "LLM call latency.",
                             (const char *const[]){ "model", NULL }, buckets, 3);
    REQUIRE(h != NULL);
    /* Binary fractions so the sum is exact; 0.25 sits on a bound, which is inclusive. */
    const double observations[] = { 0.125, 0.25, 0.375, 0.75, 2, 4 };
    for (size_t i = 0; i < 6; i++)
        ab_metric_observe(h, (const char *const[]){ "gpt", NULL }, observations[i]);
    ab_metric_observe(h, (const char *const[]){ "claude", NULL }, 0.5);

    char *text = render(m);
    CHECK_STR_EQ(text, "# HELP llm_call_seconds LLM call latency.\n"
                       "# TYPE llm_call_seconds histogram\n"
                       "llm_call_seconds_bucket{model=\"claude\",le=\"0.25\"} 0\n"
                       "llm_call_seconds_bucket{model=\"claude\",le=\"0.5\"} 1\n"
                       "llm_call_seconds_bucket{model=\"claude\",le=\"1\"} 1\n"
                       "llm_call_seconds_bucket{model=\"claude\",le=\"+Inf\"} 1\n"
                       "llm_call_seconds_sum{model=\"claude\"} 0.5\n"
                       "llm_call_seconds_count{model=\"claude\"} 1\n"
                       "llm_call_seconds_bucket{model=\"gpt\",le=\"0.25\"} 2\n"
                       "llm_call_seconds_bucket{model=\"gpt\",le=\"0.5\"} 3\n"
                       "llm_call_seconds_bucket{model=\"gpt\",le=\"1\"} 4\n"
                       "llm_call_seconds_bucket{model=\"gpt\",le=\"+Inf\"} 6\n"
                       "llm_call_seconds_sum{model=\"gpt\"} 7.5\n"
                       "llm_call_seconds_count{model=\"gpt\"} 6\n");
    free(text);
    ab_metrics_free(m);
}

TEST(metrics_histogram_default_buckets_and_explicit_inf)
{
    struct ab_metrics *m = ab_metrics_new();
    struct ab_metric *h = ab_metrics_histogram(m, "wait_seconds", NULL, NULL, NULL, 0);
    REQUIRE(h != NULL);
    ab_metric_observe(h, NULL, 0.003);
    ab_metric_observe(h, NULL, 7);
    ab_metric_observe(h, NULL, 100);
    char *text = render(m);
    CHECK_STR_EQ(text, "# TYPE wait_seconds histogram\n"
                       "wait_seconds_bucket{le=\"0.005\"} 1\n"
                       "wait_seconds_bucket{le=\"0.01\"} 1\n"
                       "wait_seconds_bucket{le=\"0.025\"} 1\n"
                       "wait_seconds_bucket{le=\"0.05\"} 1\n"
                       "wait_seconds_bucket{le=\"0.1\"} 1\n"
                       "wait_seconds_bucket{le=\"0.25\"} 1\n"
                       "wait_seconds_bucket{le=\"0.5\"} 1\n"
                       "wait_seconds_bucket{le=\"1\"} 1\n"
                       "wait_seconds_bucket{le=\"2.5\"} 1\n"
                       "wait_seconds_bucket{le=\"5\"} 1\n"
                       "wait_seconds_bucket{le=\"10\"} 2\n"
                       "wait_seconds_bucket{le=\"+Inf\"} 3\n"
                       "wait_seconds_sum 107.003\n"
                       "wait_seconds_count 3\n");
    free(text);

    /* A trailing +Inf is the implicit bucket, not a second one; the defaults, given
     * explicitly, are the same family. */
    const double with_inf[] = { 1, INFINITY };
    struct ab_metric *h2 = ab_metrics_histogram(m, "size_bytes", NULL, NULL, with_inf, 2);
    REQUIRE(h2 != NULL);
    const double one[] = { 1 };
    CHECK(ab_metrics_histogram(m, "size_bytes", NULL, NULL, one, 1) == h2);
    const double defaults[] = { .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10 };
    CHECK(ab_metrics_histogram(m, "wait_seconds", NULL, NULL, defaults, 11) == h);
    ab_metric_observe(h2, NULL, NAN); /* counted in +Inf, as client_golang does */
    text = render(m);
    CHECK_STR_CONTAINS(text, "size_bytes_bucket{le=\"1\"} 0\n"
                             "size_bytes_bucket{le=\"+Inf\"} 1\n"
                             "size_bytes_sum NaN\n"
                             "size_bytes_count 1\n");
    CHECK_INT_EQ(count_occurrences(text, "size_bytes_bucket"), 2);
    free(text);
    ab_metrics_free(m);
}

TEST(metrics_label_values_and_help_are_escaped)
{
    struct ab_metrics *m = ab_metrics_new();
    struct ab_metric *c = ab_metrics_counter(m, "escapes_total", "Line one\nback\\slash \"quoted\"",
                                             (const char *const[]){ "v", NULL });
    REQUIRE(c != NULL);
    ab_metric_inc(c, (const char *const[]){ "a\\b\"c\nd", NULL }, 1);
    ab_metric_inc(c, (const char *const[]){ "caf\xc3\xa9 \xe2\x9c\x93", NULL }, 2);
    char *text = render(m);
    CHECK_STR_EQ(text, "# HELP escapes_total Line one\\nback\\\\slash \"quoted\"\n"
                       "# TYPE escapes_total counter\n"
                       "escapes_total{v=\"a\\\\b\\\"c\\nd\"} 1\n"
                       "escapes_total{v=\"caf\xc3\xa9 \xe2\x9c\x93\"} 2\n");
    free(text);
    ab_metrics_free(m);
}

TEST(metrics_invalid_names_rejected)
{
    FILE *log = capture_log();
    struct ab_metrics *m = ab_metrics_new();
    const char *const bad_names[] = { "", "1abc", "a-b", "a b", "é", "rate{x}" };
    for (size_t i = 0; i < sizeof(bad_names) / sizeof(bad_names[0]); i++) {
        CHECK(ab_metrics_counter(m, bad_names[i], NULL, NULL) == NULL);
        CHECK(ab_metrics_gauge(m, bad_names[i], NULL, NULL) == NULL);
        CHECK(ab_metrics_histogram(m, bad_names[i], NULL, NULL, NULL, 0) == NULL);
    }
    CHECK(ab_metrics_counter(m, NULL, NULL, NULL) == NULL);
    CHECK(ab_metrics_counter(NULL, "x", NULL, NULL) == NULL);
    CHECK(ab_metrics_counter(m, "ok:name_1", NULL, NULL) != NULL);
    CHECK(ab_metrics_counter(m, ":leading_colon", NULL, NULL) != NULL);
    CHECK(ab_metrics_counter(m, "_x", NULL, NULL) != NULL);

    const char *const *bad_labels[] = {
        (const char *const[]){ "__reserved", NULL },
        (const char *const[]){ "a:b", NULL },
        (const char *const[]){ "1a", NULL },
        (const char *const[]){ "", NULL },
        (const char *const[]){ "dup", "dup", NULL },
        (const char *const[]){ "a", "b", "c", "d", "e", "f", "g", "h", "i", NULL },
    };
    for (size_t i = 0; i < sizeof(bad_labels) / sizeof(bad_labels[0]); i++)
        CHECK(ab_metrics_counter(m, "labeled_total", NULL, bad_labels[i]) == NULL);
    CHECK(ab_metrics_counter(m, "labeled_total", NULL,
                             (const char *const[]){ "a", "b", "c", "d", "e", "f", "g", "_h",
                                                    NULL }) != NULL);
    CHECK(ab_metrics_counter(m, "le_ok_on_counter", NULL, (const char *const[]){ "le", NULL }) !=
          NULL);
    CHECK(ab_metrics_histogram(m, "h", NULL, (const char *const[]){ "le", NULL }, NULL, 0) ==
          NULL);

    const double decreasing[] = { 1, 0.5 }, repeated[] = { 1, 1 }, nan[] = { NAN };
    CHECK(ab_metrics_histogram(m, "h", NULL, NULL, decreasing, 2) == NULL);
    CHECK(ab_metrics_histogram(m, "h", NULL, NULL, repeated, 2) == NULL);
    CHECK(ab_metrics_histogram(m, "h", NULL, NULL, nan, 1) == NULL);
    CHECK(ab_metrics_histogram(m, "h", NULL, NULL, NULL, 3) == NULL);
    CHECK(ab_metrics_gauge_fn(m, "cb", NULL, NULL, NULL) == NULL);

    char *logged = captured(log);
    CHECK_STR_CONTAINS(logged, "invalid metric name \\\"1abc\\\"");
    CHECK_STR_CONTAINS(logged, "reserved label name \\\"__reserved\\\"");
    free(logged);
    char *text = render(m);
    CHECK(strstr(text, "# TYPE h ") == NULL);
    free(text);
    ab_metrics_free(m);
    ab_log_set_output(NULL);
    fclose(log);
}

TEST(metrics_reregistration_returns_same_family)
{
    struct ab_metrics *m = ab_metrics_new();
    const char *const labels[] = { "topic", NULL };
    struct ab_metric *a = ab_metrics_counter(m, "consumed_total", "Consumed.", labels);
    /* A copy of the label names, not the same array: names are compared, not pointers. */
    char topic[] = "topic";
    struct ab_metric *b =
        ab_metrics_counter(m, "consumed_total", "Other help is ignored.",
                           (const char *const[]){ topic, NULL });
    REQUIRE(a != NULL);
    CHECK(a == b);
    ab_metric_inc(a, (const char *const[]){ "t", NULL }, 1);
    ab_metric_inc(b, (const char *const[]){ "t", NULL }, 1);

    struct ab_metric *g = ab_metrics_gauge(m, "in_flight", NULL, NULL);
    CHECK(ab_metrics_gauge(m, "in_flight", NULL, NULL) == g);
    const double buckets[] = { 1, 2 };
    struct ab_metric *h = ab_metrics_histogram(m, "latency", NULL, NULL, buckets, 2);
    CHECK(ab_metrics_histogram(m, "latency", NULL, NULL, buckets, 2) == h);

    char *text = render(m);
    CHECK_STR_EQ(text, "# HELP consumed_total Consumed.\n"
                       "# TYPE consumed_total counter\n"
                       "consumed_total{topic=\"t\"} 2\n"
                       "# TYPE in_flight gauge\n"
                       "in_flight 0\n"
                       "# TYPE latency histogram\n"
                       "latency_bucket{le=\"1\"} 0\n"
                       "latency_bucket{le=\"2\"} 0\n"
                       "latency_bucket{le=\"+Inf\"} 0\n"
                       "latency_sum 0\n"
                       "latency_count 0\n");
    free(text);
    ab_metrics_free(m);
}

TEST(metrics_type_or_label_mismatch_rejected)
{
    FILE *log = capture_log();
    struct ab_metrics *m = ab_metrics_new();
    const double b1[] = { 1 }, b2[] = { 2 };
    REQUIRE(ab_metrics_counter(m, "x_total", NULL, (const char *const[]){ "a", NULL }) != NULL);
    REQUIRE(ab_metrics_histogram(m, "h", NULL, NULL, b1, 1) != NULL);

    CHECK(ab_metrics_gauge(m, "x_total", NULL, (const char *const[]){ "a", NULL }) == NULL);
    CHECK(ab_metrics_histogram(m, "x_total", NULL, (const char *const[]){ "a", NULL }, NULL,
                               0) == NULL);
    CHECK(ab_metrics_counter(m, "x_total", NULL, NULL) == NULL);
    CHECK(ab_metrics_counter(m, "x_total", NULL, (const char *const[]){ "b", NULL }) == NULL);
    CHECK(ab_metrics_counter(m, "x_total", NULL, (const char *const[]){ "a", "b", NULL }) ==
          NULL);
    CHECK(ab_metrics_histogram(m, "h", NULL, NULL, b2, 1) == NULL);
    CHECK(ab_metrics_histogram(m, "h", NULL, NULL, NULL, 0) == NULL);
    /* Names that would render the same sample names as a histogram's. */
    CHECK(ab_metrics_counter(m, "h_count", NULL, NULL) == NULL);
    CHECK(ab_metrics_gauge(m, "h_bucket", NULL, NULL) == NULL);
    CHECK(ab_metrics_gauge(m, "h_sum", NULL, NULL) == NULL);
    CHECK(ab_metrics_counter(m, "y_sum", NULL, NULL) != NULL);
    CHECK(ab_metrics_histogram(m, "y", NULL, NULL, NULL, 0) == NULL);
    CHECK(ab_metrics_gauge_fn(m, "x_total", NULL, read_double, NULL) == NULL);

    char *logged = captured(log);
    CHECK_STR_CONTAINS(logged, "x_total is already registered as a counter");
    CHECK_STR_CONTAINS(logged, "h_count collides with the samples of h");
    free(logged);
    char *text = render(m);
    CHECK_INT_EQ(count_occurrences(text, "# TYPE"), 3);
    free(text);
    ab_metrics_free(m);
    ab_log_set_output(NULL);
    fclose(log);
}

TEST(metrics_misuse_is_ignored_and_logged_once)
{
    FILE *log = capture_log();
    struct ab_metrics *m = ab_metrics_new();
    struct ab_metric *c = ab_metrics_counter(m, "c_total", NULL, (const char *const[]){ "a", NULL });
    struct ab_metric *g = ab_metrics_gauge(m, "g", NULL, NULL);
    REQUIRE(c != NULL && g != NULL);
    ab_metric_inc(c, NULL, 1);                                      /* missing values */
    ab_metric_inc(c, (const char *const[]){ "x", "y", NULL }, 1); /* one too many */
    ab_metric_inc(c, (const char *const[]){ "x", NULL }, -1);     /* negative */
    ab_metric_inc(c, (const char *const[]){ "x", NULL }, NAN);
    ab_metric_set(c, (const char *const[]){ "x", NULL }, 5); /* wrong kind */
    ab_metric_observe(g, NULL, 1);
    ab_metric_inc(g, NULL, 1);
    ab_metric_set(g, (const char *const[]){ "x", NULL }, 1);
    /* Observing through a failed registration is a no-op, not a crash. */
    ab_metric_inc(NULL, NULL, 1);
    ab_metric_set(NULL, NULL, 1);
    ab_metric_add(NULL, NULL, 1);
    ab_metric_observe(NULL, NULL, 1);
    ab_metric_unbind_fn(NULL, NULL);

    char *text = render(m);
    CHECK_STR_EQ(text, "# TYPE c_total counter\n"
                       "# TYPE g gauge\n"
                       "g 0\n");
    free(text);
    char *logged = captured(log);
    CHECK_INT_EQ(count_occurrences(logged, "metric c_total"), 1);
    CHECK_INT_EQ(count_occurrences(logged, "metric g"), 1);
    CHECK_STR_CONTAINS(logged, "label values do not match");
    free(logged);
    ab_metrics_free(m);
    ab_log_set_output(NULL);
    fclose(log);
}

TEST(metrics_series_cap_drops_and_counts)
{
    FILE *log = capture_log();
    struct ab_metrics *m = ab_metrics_new();
    struct ab_metric *c =
        ab_metrics_counter(m, "per_agent_total", NULL, (const char *const[]){ "agent", NULL });
    REQUIRE(c != NULL);
    char id[32];
    for (int i = 0; i < AB_METRICS_MAX_SERIES; i++) {
        snprintf(id, sizeof(id), "agent-%05d", i);
        ab_metric_inc(c, (const char *const[]){ id, NULL }, 1);
    }
    /* Two new combinations are dropped; known ones keep counting. */
    ab_metric_inc(c, (const char *const[]){ "one-too-many", NULL }, 1);
    ab_metric_inc(c, (const char *const[]){ "two-too-many", NULL }, 1);
    ab_metric_inc(c, (const char *const[]){ "agent-00007", NULL }, 1);
    /* Invalid UTF-8 never becomes a series (it would break the whole scrape). */
    struct ab_metric *u =
        ab_metrics_counter(m, "utf8_total", NULL, (const char *const[]){ "v", NULL });
    ab_metric_inc(u, (const char *const[]){ "bad\xff", NULL }, 1);
    ab_metric_inc(u, (const char *const[]){ "\xc0\xaf", NULL }, 1); /* overlong '/' */
    ab_metric_inc(u, (const char *const[]){ "\xed\xa0\x80", NULL }, 1); /* surrogate */
    ab_metric_inc(u, (const char *const[]){ "trunc\xe2\x9c", NULL }, 1);

    char *text = render(m);
    CHECK_INT_EQ(count_occurrences(text, "per_agent_total{"), AB_METRICS_MAX_SERIES);
    CHECK(strstr(text, "too-many") == NULL);
    CHECK_STR_CONTAINS(text, "per_agent_total{agent=\"agent-00007\"} 2\n");
    CHECK_STR_CONTAINS(text, "per_agent_total{agent=\"agent-09999\"} 1\n");
    CHECK_STR_CONTAINS(text, "# TYPE agentbus_metrics_series_dropped_total counter\n"
                             "agentbus_metrics_series_dropped_total{metric=\"per_agent_total\","
                             "reason=\"series_limit\"} 2\n"
                             "agentbus_metrics_series_dropped_total{metric=\"utf8_total\","
                             "reason=\"invalid_utf8\"} 4\n");
    /* Registered at the first drop, so it sits between the two families. */
    size_t len = strlen(text), tail = strlen("# TYPE utf8_total counter\n");
    CHECK(len > tail && strcmp(text + len - tail, "# TYPE utf8_total counter\n") == 0);
    free(text);
    char *logged = captured(log);
    CHECK_INT_EQ(count_occurrences(logged, "metric per_agent_total: dropping"), 1);
    free(logged);
    ab_metrics_free(m);
    ab_log_set_output(NULL);
    fclose(log);
}

TEST(metrics_gauge_callback_evaluated_at_render)
{
    FILE *log = capture_log();
    struct ab_metrics *m = ab_metrics_new();
    double pool_size = 4, other = 1;
    struct ab_metric *g =
        ab_metrics_gauge_fn(m, "db_pool_connections", "Open connections.", read_double, &pool_size);
    REQUIRE(g != NULL);
    char *text = render(m);
    CHECK_STR_EQ(text, "# HELP db_pool_connections Open connections.\n"
                       "# TYPE db_pool_connections gauge\n"
                       "db_pool_connections 4\n");
    free(text);
    pool_size = 7.5;
    text = render(m);
    CHECK_STR_CONTAINS(text, "db_pool_connections 7.5\n");
    free(text);

    CHECK(ab_metrics_gauge_fn(m, "db_pool_connections", NULL, read_double, &pool_size) == g);
    CHECK(ab_metrics_gauge_fn(m, "db_pool_connections", NULL, read_double, &other) == NULL);
    CHECK(ab_metrics_gauge_fn(m, "db_pool_connections", NULL, twice, &pool_size) == NULL);
    CHECK(ab_metrics_gauge(m, "db_pool_connections", NULL, NULL) == NULL);
    ab_metric_set(g, NULL, 3); /* not settable: ignored */

    ab_metric_unbind_fn(g, &other); /* not bound to &other: no effect */
    text = render(m);
    CHECK_STR_CONTAINS(text, "db_pool_connections 7.5\n");
    free(text);
    ab_metric_unbind_fn(g, &pool_size);
    text = render(m);
    CHECK_STR_EQ(text, "# HELP db_pool_connections Open connections.\n"
                       "# TYPE db_pool_connections gauge\n");
    free(text);
    /* The next owner (a recreated pool) binds the same name again. */
    CHECK(ab_metrics_gauge_fn(m, "db_pool_connections", NULL, twice, &other) == g);
    text = render(m);
    CHECK_STR_CONTAINS(text, "db_pool_connections 2\n");
    free(text);
    ab_metrics_free(m);
    ab_log_set_output(NULL);
    fclose(log);
}

TEST(metrics_default_registry_is_one_instance)
{
    struct ab_metrics *d = ab_metrics_default();
    REQUIRE(d != NULL);
    CHECK(ab_metrics_default() == d);
    struct ab_metric *c = ab_metrics_counter(d, "default_registry_test_total", NULL, NULL);
    CHECK(c != NULL);
    CHECK(ab_metrics_counter(ab_metrics_default(), "default_registry_test_total", NULL, NULL) ==
          c);
}

#define THREADS 4
#define INCREMENTS 100000

struct worker_ctx {
    struct ab_metrics *m;
    struct ab_metric *counter;
    struct ab_metric *labeled;
    struct ab_metric *histogram;
    struct ab_metric *gauge;
    int index;
    atomic_int *running;
};

static void *increment_worker(void *arg)
{
    struct worker_ctx *ctx = arg;
    const char *shard = ctx->index % 2 == 0 ? "even" : "odd";
    for (int i = 0; i < INCREMENTS; i++) {
        ab_metric_inc(ctx->counter, NULL, 1);
        ab_metric_inc(ctx->labeled, (const char *const[]){ shard, NULL }, 1);
        ab_metric_observe(ctx->histogram, NULL, (i % 4) * 0.25);
        ab_metric_add(ctx->gauge, NULL, i % 2 == 0 ? 1 : -1);
        if (i % 10000 == 0) /* registration racing with render and observation */
            CHECK(ab_metrics_counter(ctx->m, "lazy_total", NULL, NULL) != NULL);
    }
    atomic_fetch_sub(ctx->running, 1);
    return NULL;
}

static double running_threads(void *ud)
{
    return atomic_load((atomic_int *)ud);
}

TEST(metrics_concurrent_increments_are_exact)
{
    struct ab_metrics *m = ab_metrics_new();
    atomic_int running = THREADS;
    struct worker_ctx ctx[THREADS];
    pthread_t threads[THREADS];
    struct ab_metric *counter = ab_metrics_counter(m, "ops_total", NULL, NULL);
    struct ab_metric *labeled =
        ab_metrics_counter(m, "sharded_total", NULL, (const char *const[]){ "shard", NULL });
    struct ab_metric *histogram = ab_metrics_histogram(m, "op_seconds", NULL, NULL, NULL, 0);
    struct ab_metric *gauge = ab_metrics_gauge(m, "balance", NULL, NULL);
    REQUIRE(ab_metrics_gauge_fn(m, "running_threads", NULL, running_threads, &running) != NULL);
    REQUIRE(counter && labeled && histogram && gauge);
    for (int i = 0; i < THREADS; i++) {
        ctx[i] = (struct worker_ctx){ m, counter, labeled, histogram, gauge, i, &running };
        REQUIRE(pthread_create(&threads[i], NULL, increment_worker, &ctx[i]) == 0);
    }
    /* Render while they run: must not crash, and every snapshot must be self-consistent. */
    int renders = 0;
    while (atomic_load(&running) > 0 || renders == 0) {
        char *text = render(m);
        CHECK_STR_CONTAINS(text, "# TYPE ops_total counter\n");
        const char *inf = strstr(text, "op_seconds_bucket{le=\"+Inf\"} ");
        const char *count = strstr(text, "op_seconds_count ");
        REQUIRE(inf != NULL && count != NULL);
        CHECK(strtoull(inf + strlen("op_seconds_bucket{le=\"+Inf\"} "), NULL, 10) ==
              strtoull(count + strlen("op_seconds_count "), NULL, 10));
        free(text);
        renders++;
    }
    for (int i = 0; i < THREADS; i++)
        pthread_join(threads[i], NULL);

    char *text = render(m);
    CHECK_STR_CONTAINS(text, "ops_total 400000\n");
    CHECK_STR_CONTAINS(text, "sharded_total{shard=\"even\"} 200000\n"
                             "sharded_total{shard=\"odd\"} 200000\n");
    CHECK_STR_CONTAINS(text, "op_seconds_bucket{le=\"0.25\"} 200000\n");
    CHECK_STR_CONTAINS(text, "op_seconds_bucket{le=\"0.5\"} 300000\n");
    CHECK_STR_CONTAINS(text, "op_seconds_bucket{le=\"1\"} 400000\n");
    CHECK_STR_CONTAINS(text, "op_seconds_bucket{le=\"+Inf\"} 400000\n");
    CHECK_STR_CONTAINS(text, "op_seconds_sum 150000\n");
    CHECK_STR_CONTAINS(text, "op_seconds_count 400000\n");
    CHECK_STR_CONTAINS(text, "balance 0\n");
    CHECK_STR_CONTAINS(text, "running_threads 0\n");
    CHECK_STR_CONTAINS(text, "lazy_total 0\n");
    free(text);
    ab_metrics_free(m);
}
