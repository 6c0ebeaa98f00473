/* Liveness, readiness and metrics on a service's ops port: /livez answers while the
 * process runs, /readyz only while every readiness check passes and the service is not
 * draining, /metrics renders the process's metrics registry. */
#ifndef AB_HEALTH_H
#define AB_HEALTH_H

#include <stdbool.h>
#include <stddef.h>

#include "common/http_server.h"

/* A readiness check: true when the dependency is usable; detail says why not.
 * @thread called from the health thread only, never concurrently with itself. */
typedef bool (*ab_health_check_fn)(void *ud, char *detail, size_t detail_size);

struct ab_health;

/* Checks run every interval_ms on a background thread; /readyz answers from the last
 * results, so probes stay cheap and never pile up on a slow dependency. */
struct ab_health *ab_health_new(int interval_ms);
void ab_health_free(struct ab_health *h);

/* Adds a named check. Must precede ab_health_start. */
void ab_health_add_check(struct ab_health *h, const char *name, ab_health_check_fn fn, void *ud);

/* Adds /livez, /readyz and /metrics to srv, and starts the check thread. */
enum ab_err ab_health_start(struct ab_health *h, struct ab_http_server *srv);

/* From now on /readyz answers 503 "draining": the first step of a graceful shutdown. */
void ab_health_set_draining(struct ab_health *h);

/* Stops the check thread (joins it): from now on the checks' objects may be freed, and
 * /readyz answers from the last results (503 once draining). NULL or twice is fine. */
void ab_health_stop(struct ab_health *h);

/* Runs every check now and returns whether all pass (also refreshes /readyz). */
bool ab_health_check_now(struct ab_health *h);
bool ab_health_ready(struct ab_health *h);

#endif
