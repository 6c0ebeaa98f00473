/* The agent gateway of ingress: Clawith-compatible paths under /api/gateway, X-Api-Key
 * authentication, heartbeat, the setup guide, the admin route that issues an agent's key,
 * and the rule that says whether an agent is online. */
#ifndef INGRESS_ROUTES_GATEWAY_H
#define INGRESS_ROUTES_GATEWAY_H

#include "common/http_server.h"
#include "services/ingress/routes_admin.h"

/* The longest X-Api-Key accepted; issued keys are "oc-" + 43 characters. */
#define INGRESS_KEY_MAX_LEN 128

/* The agent behind a valid X-Api-Key. */
struct ingress_agent {
    char id[37];
    char tenant_id[37];
    char name[512]; /* 100 characters of UTF-8 */
};

/* Whether an agent can be reached now, as SQL over a row `a` of agents, giving "online",
 * "offline" or "never_seen". An OpenClaw agent is online when it polled or sent a
 * heartbeat within gateway.offline_after_s: the statement passes that as an integer
 * parameter, written between INGRESS_AGENT_STATUS_HEAD(a) and INGRESS_AGENT_STATUS_TAIL.
 * A native agent is answered by the LLM worker, so it is always "online". The status is
 * computed when read, never stored, so nothing has to set an agent back to offline
 * (Clawith sets "running" and never resets it). The admin API, the poll's relationships and
 * send-message all use this one rule. */
#define INGRESS_AGENT_STATUS_HEAD(a)                                                       \
    "CASE WHEN " a ".type <> 'openclaw' THEN 'online' WHEN " a ".last_seen_at IS NULL"       \
    " THEN 'never_seen' WHEN " a ".last_seen_at >= now() - make_interval(secs => "
#define INGRESS_AGENT_STATUS_TAIL ") THEN 'online' ELSE 'offline' END"
#define INGRESS_AGENT_STATUS_SQL(a, param)                                                 \
    INGRESS_AGENT_STATUS_HEAD(a) param INGRESS_AGENT_STATUS_TAIL

/* Adds heartbeat, setup-guide and POST /api/gateway/agents/:id/api-key to the API
 * listener. @returns AB_ERR_CONFIG (logged) when gateway.public_url is not a base URL. */
enum ab_err ingress_gateway_routes(struct ingress_admin *admin, struct ab_http_server *api);

/* Looks up the agent of the request's X-Api-Key. On failure it has answered already (401
 * for a missing or unknown key, 503 when PostgreSQL is away) and returns false. */
bool ingress_gateway_authenticate(struct ingress_admin *admin, const struct _u_request *req,
                                  struct _u_response *resp, struct ingress_agent *agent);

/* Answers a failure that is not the client's: logs why (errstr) once, then 503 with
 * `advice` when trying again may work (a dependency away, a timeout), else 500. */
void ingress_answer_failure(struct _u_response *resp, enum ab_err err, const char *advice,
                            const char *errstr);

/* Makes the key whose SHA-256 is hash (hex) the agent's only active key: revokes the active
 * one and stores this one, on conn (inside the caller's transaction, so that at no moment
 * do two keys work). @returns AB_ERR_CONFLICT when the hash is stored already (any agent's
 * key, revoked or not), or a database error. */
enum ab_err ingress_key_replace(PGconn *conn, const char *agent_id, const char *hash,
                                const char *prefix, char *errstr, size_t errstr_size);

#endif
