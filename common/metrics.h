/* In-process metrics (counters, gauges, histograms, with labels) rendered in the Prometheus
 * text exposition format 0.0.4 for a /metrics endpoint. */
#ifndef AB_METRICS_H
#define AB_METRICS_H

#include <stddef.h>

/* The Content-Type a /metrics response must carry for this output. */
#define AB_METRICS_CONTENT_TYPE "text/plain; version=0.0.4; charset=utf-8"

#define AB_METRICS_MAX_LABELS 8
#define AB_METRICS_MAX_BUCKETS 64
/* Label combinations one family may hold. Label values that come from input (agent ids,
 * routes) could otherwise grow memory without bound; observations of a new combination
 * beyond this are dropped and counted in agentbus_metrics_series_dropped_total. */
#define AB_METRICS_MAX_SERIES 10000

/* A registry: the set of families one /metrics endpoint renders. */
struct ab_metrics;
/* One metric family (a name, a type, label names); the handle observations go through.
 * It lives as long as its registry. */
struct ab_metric;

struct ab_metrics *ab_metrics_new(void);
/* Frees the registry and every family in it; no other thread may still use either.
 * NULL is a no-op. */
void ab_metrics_free(struct ab_metrics *m);

/* The process-wide registry services register into and serve. Created on first use, never
 * freed. NULL only if that first allocation failed. @thread safe. */
struct ab_metrics *ab_metrics_default(void);

/* Register a family, or get the one already registered under name.
 *
 * name must match [a-zA-Z_:][a-zA-Z0-9_:]*; label_names is NULL or a NULL-terminated array
 * of up to AB_METRICS_MAX_LABELS names matching [a-zA-Z_][a-zA-Z0-9_]*, not starting with
 * "__" (histograms also may not use "le"). help may be NULL (no # HELP line). Strings are
 * copied.
 *
 * Registering a name again with the same type, label names (and buckets) returns the
 * existing family, so a module may register lazily; anything else is a programming error:
 * it is logged and NULL is returned. Observing through NULL is a no-op, so a failed
 * registration costs the metric, not the service. The lookup is a linear scan under a
 * lock: keep the handle rather than registering on every observation.
 * @thread safe. */
struct ab_metric *ab_metrics_counter(struct ab_metrics *m, const char *name, const char *help,
                                     const char *const *label_names);
struct ab_metric *ab_metrics_gauge(struct ab_metrics *m, const char *name, const char *help,
                                   const char *const *label_names);
/* buckets: the upper bounds, strictly increasing, at most AB_METRICS_MAX_BUCKETS; a
 * trailing +Inf may be given or left out (the +Inf bucket is always rendered).
 * nbuckets == 0 selects the defaults, in seconds:
 * .005 .01 .025 .05 .1 .25 .5 1 2.5 5 10. */
struct ab_metric *ab_metrics_histogram(struct ab_metrics *m, const char *name, const char *help,
                                       const char *const *label_names, const double *buckets,
                                       size_t nbuckets);

/* A gauge without labels whose value is fn(ud), called at render time on the rendering
 * thread (so fn must be thread-safe and must not call ab_metric_unbind_fn on this gauge).
 * Registering the same name again with the same fn and ud, or after it was unbound,
 * returns the same family; a different fn or ud while bound is a programming error (two
 * live objects cannot share one series): NULL. @thread safe. */
struct ab_metric *ab_metrics_gauge_fn(struct ab_metrics *m, const char *name, const char *help,
                                      double (*fn)(void *ud), void *ud);
/* Stops calling the callback if it is still bound to ud: the owner of ud calls this before
 * freeing ud. On return fn is not running and will not be called again; the family then
 * renders without a sample until it is registered again. @thread safe. */
void ab_metric_unbind_fn(struct ab_metric *gauge, const void *ud);

/* Observations. label_values is NULL for a family without labels, otherwise a
 * NULL-terminated array with exactly one value per label name, e.g.
 *     ab_metric_inc(requests, (const char *[]){ route, "200", NULL }, 1);
 * Values are copied the first time a combination is seen (later observations of it do not
 * allocate) and must be UTF-8; an observation with invalid UTF-8 or beyond
 * AB_METRICS_MAX_SERIES is dropped and counted. A wrong label count, a call of the wrong
 * kind (set on a counter) or a negative counter increment is a programming error: ignored
 * and logged once per family. metric may be NULL (no-op). @thread safe. */

/* Counter += v, v >= 0. Incrementing by 0 makes a combination appear with value 0. */
void ab_metric_inc(struct ab_metric *counter, const char *const *label_values, double v);
/* Gauge = v. */
void ab_metric_set(struct ab_metric *gauge, const char *const *label_values, double v);
/* Gauge += delta (delta may be negative). */
void ab_metric_add(struct ab_metric *gauge, const char *const *label_values, double delta);
/* Histogram: counts value in the first bucket whose bound is >= value (NaN: only +Inf)
 * and adds it to the sum. */
void ab_metric_observe(struct ab_metric *histogram, const char *const *label_values,
                       double value);

/* Takes one label combination off the output, as if it had never been observed, until it is
 * observed again (then it starts from 0). For series that describe something gone (a Kafka
 * partition no longer assigned) and would otherwise go on showing its last value. Its memory
 * is kept, so it still counts towards AB_METRICS_MAX_SERIES. An unknown combination is a
 * no-op; a wrong label count or a callback gauge is a programming error (logged once).
 * metric may be NULL (no-op). @thread safe. */
void ab_metric_remove(struct ab_metric *metric, const char *const *label_values);

/* The whole registry in the text exposition format: families in registration order,
 * each family's series sorted by label values. Returns a malloc'd NUL-terminated string
 * the caller frees, its length in *len (len may be NULL); NULL when out of memory.
 * Observations may continue on other threads meanwhile. @thread safe. */
char *ab_metrics_render(struct ab_metrics *m, size_t *len);

#endif
