/* Tests for ab_metric_remove (common/metrics.c): a removed series leaves the output until it
 * is observed again, then starts from 0; what is not there, or misused, changes nothing. */
#include "test.h"

#include "common/log.h"
#include "common/metrics.h"

static char *render(struct ab_metrics *m)
{
    char *text = ab_metrics_render(m, NULL);
    REQUIRE(text != NULL);
    return text;
}

TEST(metrics_remove_hides_a_series_until_it_is_observed_again)
{
    struct ab_metrics *m = ab_metrics_new();
    struct ab_metric *lag =
        ab_metrics_gauge(m, "lag", NULL, (const char *const[]){"topic", "partition", NULL});
    REQUIRE(lag != NULL);
    ab_metric_set(lag, (const char *const[]){"t", "0", NULL}, 5);
    ab_metric_set(lag, (const char *const[]){"t", "1", NULL}, 7);
    ab_metric_remove(lag, (const char *const[]){"t", "0", NULL});
    ab_metric_remove(lag, (const char *const[]){"t", "9", NULL}); /* never seen: no-op */
    char *text = render(m);
    CHECK_STR_EQ(text, "# TYPE lag gauge\n"
                       "lag{topic=\"t\",partition=\"1\"} 7\n");
    free(text);

    ab_metric_remove(lag, (const char *const[]){"t", "1", NULL});
    text = render(m);
    CHECK_STR_EQ(text, "# TYPE lag gauge\n"); /* the family stays, without samples */
    free(text);

    /* Back, from 0: an add does not resume the old value. */
    ab_metric_add(lag, (const char *const[]){"t", "0", NULL}, 2);
    text = render(m);
    CHECK_STR_EQ(text, "# TYPE lag gauge\n"
                       "lag{topic=\"t\",partition=\"0\"} 2\n");
    free(text);
    ab_metrics_free(m);
}

TEST(metrics_remove_resets_counters_and_histograms)
{
    struct ab_metrics *m = ab_metrics_new();
    struct ab_metric *c = ab_metrics_counter(m, "n_total", NULL, (const char *const[]){"k", NULL});
    struct ab_metric *h = ab_metrics_histogram(
        m, "d_seconds", NULL, (const char *const[]){"k", NULL}, (const double[]){1}, 1);
    REQUIRE(c != NULL && h != NULL);
    ab_metric_inc(c, (const char *const[]){"a", NULL}, 3);
    ab_metric_observe(h, (const char *const[]){"a", NULL}, 0.5);
    ab_metric_remove(c, (const char *const[]){"a", NULL});
    ab_metric_remove(h, (const char *const[]){"a", NULL});
    char *text = render(m);
    CHECK_STR_EQ(text, "# TYPE n_total counter\n# TYPE d_seconds histogram\n");
    free(text);
    ab_metric_inc(c, (const char *const[]){"a", NULL}, 1);
    ab_metric_observe(h, (const char *const[]){"a", NULL}, 2);
    text = render(m);
    CHECK_STR_EQ(text, "# TYPE n_total counter\n"
                       "n_total{k=\"a\"} 1\n"
                       "# TYPE d_seconds histogram\n"
                       "d_seconds_bucket{k=\"a\",le=\"1\"} 0\n"
                       "d_seconds_bucket{k=\"a\",le=\"+Inf\"} 1\n"
                       "d_seconds_sum{k=\"a\"} 2\n"
                       "d_seconds_count{k=\"a\"} 1\n");
    free(text);
    ab_metrics_free(m);
}

static double one(void *ud)
{
    (void)ud;
    return 1;
}

TEST(metrics_remove_misuse_changes_nothing)
{
    FILE *log = tmpfile();
    REQUIRE(log != NULL);
    ab_log_set_output(log);
    struct ab_metrics *m = ab_metrics_new();
    struct ab_metric *g = ab_metrics_gauge(m, "g", NULL, (const char *const[]){"k", NULL});
    struct ab_metric *f = ab_metrics_gauge_fn(m, "f", NULL, one, NULL);
    REQUIRE(g != NULL && f != NULL);
    ab_metric_set(g, (const char *const[]){"a", NULL}, 4);
    ab_metric_remove(g, NULL);                                  /* wrong label count */
    ab_metric_remove(g, (const char *const[]){"a", "b", NULL}); /* wrong label count */
    ab_metric_remove(f, NULL);                                  /* a callback gauge */
    ab_metric_remove(NULL, NULL);
    char *text = render(m);
    CHECK_STR_EQ(text, "# TYPE g gauge\n"
                       "g{k=\"a\"} 4\n"
                       "# TYPE f gauge\n"
                       "f 1\n");
    free(text);
    ab_metrics_free(m);
    ab_log_set_output(stderr);
    fclose(log);
}
