/* The admin API's resources (docs/admin-api.md, "Resources"): list, create, get, patch and
 * delete for tenants, LLM models, agents, members, relationships and channel configs. */
#ifndef INGRESS_ADMIN_RESOURCES_H
#define INGRESS_ADMIN_RESOURCES_H

#include "common/http_server.h"
#include "services/ingress/routes_admin.h"

/* Adds GET/POST /api/admin/<resource> and GET/PATCH/DELETE /api/admin/<resource>/:id for
 * every resource. admin must outlive the listener. Call once, before the listener starts. */
enum ab_err ingress_admin_resources_routes(struct ingress_admin *admin,
                                           struct ab_http_server *api);

#endif
