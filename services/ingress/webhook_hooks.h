/* The hooks ingress knows: the configuration file's handlers and those created through the
 * admin API (table webhook_hooks), as one immutable snapshot that requests borrow. A
 * thread reloads the table's hooks when its generation moves (checked every second), so
 * every replica sees an admin change within a second or so, and purges idempotency
 * records older than the window. The admin API: /api/admin/hooks[/:id]. */
#ifndef INGRESS_WEBHOOK_HOOKS_H
#define INGRESS_WEBHOOK_HOOKS_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>

#include "common/incoming.h"
#include "services/ingress/routes_admin.h"

/* One snapshot: immutable once published; freed when the last borrower returns it. */
struct ingress_hook_set {
    atomic_int refs;
    const struct ab_hook **hooks; /* configuration hooks first, then the table's */
    size_t count;
    struct ab_hook *owned; /* the table's hooks (the configuration's belong to incoming) */
    bool table_loaded;     /* false until the table was read once: only the file's hooks */
    size_t owned_count;
};

struct ingress_hooks {
    struct ab_service *svc;
    struct ingress_admin *admin;  /* the admin API's authorization */
    struct ab_incoming *incoming; /* the configuration, parsed once */
    pthread_mutex_t lock;         /* guards current */
    struct ingress_hook_set *current;
    long long generation; /* of the table, as last loaded; -1 before the first load */
    pthread_mutex_t wait_lock;
    pthread_cond_t wake;
    bool stop;
    bool initialized;
    bool started;
    pthread_t thread;
};

/* Parses the `webhooks` option's incoming part. @returns AB_ERR_CONFIG (logged) when the
 * configuration is bad. */
enum ab_err ingress_hooks_init(struct ingress_hooks *hk, struct ab_service *svc,
                               struct ingress_admin *admin);
/* Starts the reload thread (the table's hooks appear after its first load). */
enum ab_err ingress_hooks_start(struct ingress_hooks *hk);
void ingress_hooks_stop(struct ingress_hooks *hk);
void ingress_hooks_cleanup(struct ingress_hooks *hk);

/* Borrows the current snapshot; give it back with ingress_hooks_put. @thread safe. */
struct ingress_hook_set *ingress_hooks_get(struct ingress_hooks *hk);
void ingress_hooks_put(struct ingress_hook_set *set);

/* The hook a request path names: "/webhook/<id>" or a handler's path. NULL if none.
 * @ownership borrowed from set. */
const struct ab_hook *ingress_hooks_find(const struct ingress_hook_set *set, const char *path);

/* Adds /api/admin/hooks (GET list, POST create) and /api/admin/hooks/:id (GET, PUT,
 * DELETE) to the API listener. */
enum ab_err ingress_hooks_admin_routes(struct ingress_hooks *hk, struct ab_http_server *api);

#endif
