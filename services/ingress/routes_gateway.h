/* The agent gateway of ingress: Clawith-compatible paths under /api/gateway, X-Api-Key
 * authentication, and the admin route that issues an agent's key. */
#ifndef INGRESS_ROUTES_GATEWAY_H
#define INGRESS_ROUTES_GATEWAY_H

#include "common/http_server.h"
#include "services/ingress/routes_admin.h"

/* The agent behind a valid X-Api-Key. */
struct ingress_agent {
    char id[37];
    char tenant_id[37];
    char name[512]; /* 100 characters of UTF-8 */
};

/* Adds the gateway routes and POST /api/gateway/agents/:id/api-key to the API listener. */
enum ab_err ingress_gateway_routes(struct ingress_admin *admin, struct ab_http_server *api);

/* Looks up the agent of the request's X-Api-Key. On failure it has answered already (401
 * for a missing or unknown key, 503 when PostgreSQL is away) and returns false. */
bool ingress_gateway_authenticate(struct ingress_admin *admin, const struct _u_request *req,
                                  struct _u_response *resp, struct ingress_agent *agent);

/* Answers a failure that is not the client's: logs why (errstr) once, then 503 with
 * `advice` when trying again may work (a dependency away, a timeout), else 500. */
void ingress_answer_failure(struct _u_response *resp, enum ab_err err, const char *advice,
                            const char *errstr);

#endif
