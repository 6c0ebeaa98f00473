/* Readiness checks on their own thread; HTTP handlers only read the cached results. */
#include "common/health.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/log.h"
#include "common/metrics.h"

#define MAX_CHECKS 8

struct check {
    char name[32];
    ab_health_check_fn fn;
    void *ud;
    bool ok;
    char detail[256];
};

struct ab_health {
    struct check checks[MAX_CHECKS];
    int count;
    int interval_ms;
    pthread_mutex_t lock; /* guards ok/detail of the checks */
    pthread_mutex_t run_lock; /* one evaluation at a time */
    pthread_cond_t wake;
    pthread_t thread;
    bool started;
    bool stop;
    atomic_bool draining;
    struct ab_metric *m_ready;
};

struct ab_health *ab_health_new(int interval_ms)
{
    struct ab_health *h = calloc(1, sizeof(*h));
    if (h == NULL)
        return NULL;
    h->interval_ms = interval_ms;
    pthread_mutex_init(&h->lock, NULL);
    pthread_mutex_init(&h->run_lock, NULL);
    pthread_cond_init(&h->wake, NULL);
    h->m_ready = ab_metrics_gauge(ab_metrics_default(), "agentbus_ready",
                                  "1 when the service passes its readiness checks", NULL);
    return h;
}

void ab_health_add_check(struct ab_health *h, const char *name, ab_health_check_fn fn, void *ud)
{
    if (h->count == MAX_CHECKS)
        abort(); /* a programming error: raise MAX_CHECKS */
    struct check *c = &h->checks[h->count++];
    snprintf(c->name, sizeof(c->name), "%s", name);
    c->fn = fn;
    c->ud = ud;
    snprintf(c->detail, sizeof(c->detail), "not checked yet");
}

bool ab_health_check_now(struct ab_health *h)
{
    bool all = true;
    pthread_mutex_lock(&h->run_lock);
    for (int i = 0; i < h->count; i++) {
        char detail[256] = "";
        bool ok = h->checks[i].fn(h->checks[i].ud, detail, sizeof(detail));
        pthread_mutex_lock(&h->lock);
        if (ok != h->checks[i].ok)
            ab_log(ok ? AB_LOG_INFO : AB_LOG_WARN, "readiness check %s: %s%s%s", h->checks[i].name,
                   ok ? "ok" : "failing", ok ? "" : ": ", ok ? "" : detail);
        h->checks[i].ok = ok;
        snprintf(h->checks[i].detail, sizeof(h->checks[i].detail), "%s", ok ? "ok" : detail);
        pthread_mutex_unlock(&h->lock);
        all = all && ok;
    }
    pthread_mutex_unlock(&h->run_lock);
    ab_metric_set(h->m_ready, NULL, all && !atomic_load(&h->draining) ? 1 : 0);
    return all;
}

bool ab_health_ready(struct ab_health *h)
{
    bool all = !atomic_load(&h->draining);
    pthread_mutex_lock(&h->lock);
    for (int i = 0; i < h->count; i++)
        all = all && h->checks[i].ok;
    pthread_mutex_unlock(&h->lock);
    return all;
}

static void *check_loop(void *arg)
{
    struct ab_health *h = arg;
    pthread_mutex_lock(&h->lock);
    while (!h->stop) {
        pthread_mutex_unlock(&h->lock);
        ab_health_check_now(h);
        pthread_mutex_lock(&h->lock);
        struct timespec until;
        clock_gettime(CLOCK_REALTIME, &until);
        until.tv_sec += h->interval_ms / 1000;
        until.tv_nsec += (long)(h->interval_ms % 1000) * 1000000L;
        if (until.tv_nsec >= 1000000000L) {
            until.tv_sec++;
            until.tv_nsec -= 1000000000L;
        }
        if (!h->stop)
            pthread_cond_timedwait(&h->wake, &h->lock, &until);
    }
    pthread_mutex_unlock(&h->lock);
    return NULL;
}

static void livez(const struct _u_request *req, struct _u_response *resp, void *ud)
{
    (void)req;
    (void)ud;
    ab_http_json(resp, 200, json_pack("{s:s}", "status", "alive"));
}

static void readyz(const struct _u_request *req, struct _u_response *resp, void *ud)
{
    struct ab_health *h = ud;
    (void)req;
    json_t *checks = json_object();
    bool ready = !atomic_load(&h->draining);
    pthread_mutex_lock(&h->lock);
    for (int i = 0; i < h->count; i++) {
        json_object_set_new(checks, h->checks[i].name, json_string(h->checks[i].detail));
        ready = ready && h->checks[i].ok;
    }
    pthread_mutex_unlock(&h->lock);
    const char *status = atomic_load(&h->draining) ? "draining" : ready ? "ready" : "not ready";
    ab_http_json(resp, ready ? 200 : 503, json_pack("{s:s,s:o}", "status", status, "checks", checks));
}

static void metrics(const struct _u_request *req, struct _u_response *resp, void *ud)
{
    size_t len = 0;
    (void)req;
    (void)ud;
    char *text = ab_metrics_render(ab_metrics_default(), &len);
    if (text == NULL) {
        ab_http_error(resp, AB_ERR_NOMEM, "cannot render metrics");
        return;
    }
    ulfius_set_binary_body_response(resp, 200, text, len);
    u_map_put(resp->map_header, "Content-Type", AB_METRICS_CONTENT_TYPE);
    free(text);
}

enum ab_err ab_health_start(struct ab_health *h, struct ab_http_server *srv)
{
    enum ab_err err = ab_http_server_route(srv, "GET", "/livez", livez, h);
    if (err == AB_OK)
        err = ab_http_server_route(srv, "GET", "/readyz", readyz, h);
    if (err == AB_OK)
        err = ab_http_server_route(srv, "GET", "/metrics", metrics, NULL);
    if (err)
        return err;
    if (pthread_create(&h->thread, NULL, check_loop, h) != 0)
        return AB_ERR_INTERNAL;
    h->started = true;
    return AB_OK;
}

void ab_health_set_draining(struct ab_health *h)
{
    atomic_store(&h->draining, true);
    ab_metric_set(h->m_ready, NULL, 0);
}

void ab_health_stop(struct ab_health *h)
{
    if (h == NULL || !h->started)
        return;
    pthread_mutex_lock(&h->lock);
    h->stop = true;
    pthread_cond_signal(&h->wake);
    pthread_mutex_unlock(&h->lock);
    pthread_join(h->thread, NULL);
    h->started = false;
}

void ab_health_free(struct ab_health *h)
{
    if (h == NULL)
        return;
    ab_health_stop(h);
    pthread_cond_destroy(&h->wake);
    pthread_mutex_destroy(&h->run_lock);
    pthread_mutex_destroy(&h->lock);
    free(h);
}
