/* The admin API of ingress (Authorization: Bearer AGENTBUS_ADMIN_TOKEN). */
#ifndef INGRESS_ROUTES_ADMIN_H
#define INGRESS_ROUTES_ADMIN_H

#include "common/http_server.h"
#include "common/service.h"

struct ingress_waker;

struct ingress_admin {
    struct ab_service *svc;
    struct ingress_waker *waker; /* wakes the gateway's long polls (inbox_waker.h) */
};

/* Adds the admin routes to the API listener. */
enum ab_err ingress_admin_routes(struct ingress_admin *admin, struct ab_http_server *api);

/* True when the request carries the admin bearer token; otherwise answers 401 itself. */
bool ingress_admin_authorized(const struct ingress_admin *admin, const struct _u_request *req,
                              struct _u_response *resp);

#endif
