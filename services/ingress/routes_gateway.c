/* Gateway routes. Keys are "oc-" + 43 base64url characters (256 random bits); only their
 * SHA-256 is stored, looked up on every request (no cache), so a rotated key or a deleted
 * agent stops working at once. A stored hash is never accepted as a key. */
#include "services/ingress/routes_gateway.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "common/crypto.h"
#include "common/db.h"
#include "common/log.h"
#include "common/util.h"
#include "services/ingress/gateway_guide.h"

#define KEY_PREFIX "oc-"
#define KEY_RANDOM_BYTES 32
#define DB_WAIT_MS 2000

/* base64url without padding, as Python's secrets.token_urlsafe (Clawith's key format). */
static void base64url(const unsigned char *in, size_t n, char *out)
{
    static const char alphabet[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    size_t o = 0;
    for (size_t i = 0; i < n; i += 3) {
        unsigned v = (unsigned)in[i] << 16;
        if (i + 1 < n)
            v |= (unsigned)in[i + 1] << 8;
        if (i + 2 < n)
            v |= in[i + 2];
        out[o++] = alphabet[(v >> 18) & 63];
        out[o++] = alphabet[(v >> 12) & 63];
        if (i + 1 < n)
            out[o++] = alphabet[(v >> 6) & 63];
        if (i + 2 < n)
            out[o++] = alphabet[v & 63];
    }
    out[o] = '\0';
}

void ingress_answer_failure(struct _u_response *resp, enum ab_err err, const char *advice,
                            const char *errstr)
{
    ab_error("%s: %s", advice, errstr);
    if (ab_err_is_retriable(err))
        ab_http_error(resp, AB_ERR_UNAVAILABLE, "%s", advice);
    else
        ab_http_error(resp, AB_ERR_INTERNAL, "internal error");
}

bool ingress_gateway_authenticate(struct ingress_admin *admin, const struct _u_request *req,
                                  struct _u_response *resp, struct ingress_agent *agent)
{
    char hash[65], errstr[512];
    PGconn *conn = NULL;
    PGresult *res = NULL;
    const char *key = ab_http_header(req, "X-Api-Key");
    if (key == NULL || key[0] == '\0') {
        ab_http_error(resp, AB_ERR_UNAUTHORIZED, "missing X-Api-Key header");
        return false;
    }
    if (strlen(key) > INGRESS_KEY_MAX_LEN) {
        ab_http_error(resp, AB_ERR_UNAUTHORIZED, "invalid API key");
        return false;
    }
    ab_sha256_hex(key, strlen(key), hash);
    const char *const params[] = { hash };
    enum ab_err err = ab_service_db_acquire(admin->svc, DB_WAIT_MS, &conn, errstr, sizeof(errstr));
    if (err == AB_OK) {
        err = ab_db_exec(conn,
                         "SELECT a.id, a.tenant_id, a.name FROM api_keys k"
                         " JOIN agents a ON a.id = k.agent_id"
                         " WHERE k.key_hash = $1 AND k.revoked_at IS NULL",
                         1, params, &res, errstr, sizeof(errstr));
        ab_db_release(admin->svc->db, conn);
    }
    if (err) {
        ingress_answer_failure(resp, err, "the database is unavailable; retry later", errstr);
        return false;
    }
    bool found = PQntuples(res) == 1;
    if (found) {
        snprintf(agent->id, sizeof(agent->id), "%s", PQgetvalue(res, 0, 0));
        snprintf(agent->tenant_id, sizeof(agent->tenant_id), "%s", PQgetvalue(res, 0, 1));
        snprintf(agent->name, sizeof(agent->name), "%s", PQgetvalue(res, 0, 2));
    } else {
        ab_http_error(resp, AB_ERR_UNAUTHORIZED, "invalid API key");
    }
    PQclear(res);
    return found;
}

static void heartbeat(const struct _u_request *req, struct _u_response *resp, void *ud)
{
    struct ingress_admin *admin = ud;
    struct ingress_agent agent;
    char errstr[512];
    PGconn *conn = NULL;
    if (!ingress_gateway_authenticate(admin, req, resp, &agent))
        return;
    const char *const params[] = { agent.id };
    enum ab_err err = ab_service_db_acquire(admin->svc, DB_WAIT_MS, &conn, errstr, sizeof(errstr));
    if (err == AB_OK) {
        err = ab_db_exec(conn, "UPDATE agents SET last_seen_at = now() WHERE id = $1", 1,
                         params, NULL, errstr, sizeof(errstr));
        ab_db_release(admin->svc->db, conn);
    }
    if (err) {
        ingress_answer_failure(resp, err, "the database is unavailable; retry later", errstr);
        return;
    }
    ab_http_json(resp, 200, json_pack("{s:s,s:s}", "status", "ok", "agent_id", agent.id));
}

/* GET /api/gateway/setup-guide/:agent_id (Clawith's shape). The key must be the agent's own:
 * an agent reads its own guide only. The answer never carries the key (see gateway_guide.c)
 * and is not to be cached: it is built from the request's Host. */
static void setup_guide(const struct _u_request *req, struct _u_response *resp, void *ud)
{
    struct ingress_admin *admin = ud;
    struct ingress_agent agent;
    char base[INGRESS_GUIDE_BASE_URL_MAX], errstr[512];
    const struct ab_config *cfg = admin->svc->cfg;
    if (!ingress_gateway_authenticate(admin, req, resp, &agent))
        return;
    const char *agent_id = u_map_get(req->map_url, "agent_id");
    if (!ab_uuid_valid(agent_id)) {
        ab_http_error(resp, AB_ERR_INVALID, "the agent id must be a UUID");
        return;
    }
    if (strcasecmp(agent_id, agent.id) != 0) {
        ab_http_error(resp, AB_ERR_FORBIDDEN, "Key does not match this agent");
        return;
    }
    if (ingress_guide_base_url(ab_config_str(cfg, AB_OPT_GATEWAY_PUBLIC_URL),
                               ab_http_header(req, "Host"),
                               ab_http_header(req, "X-Forwarded-Proto"), base, sizeof(base),
                               errstr, sizeof(errstr)) != AB_OK) {
        ab_http_error(resp, AB_ERR_INVALID, "%s", errstr);
        return;
    }
    char *skill = ingress_guide_render(base, agent.name,
                                       ab_config_int(cfg, AB_OPT_GATEWAY_LEASE_S),
                                       ab_config_int(cfg, AB_OPT_GATEWAY_OFFLINE_AFTER_S));
    json_t *body = json_pack("{s:s,s:s,s:s}", "skill_filename", INGRESS_GUIDE_SKILL_FILENAME,
                             "skill_content", skill, "heartbeat_addition",
                             INGRESS_GUIDE_HEARTBEAT_LINE);
    free(skill);
    if (body == NULL) { /* only text that is not UTF-8 fails; names are stored as UTF-8 */
        ab_http_error(resp, AB_ERR_INTERNAL, "the guide could not be built");
        return;
    }
    ulfius_add_header_to_response(resp, "Cache-Control", "no-store");
    ab_http_json(resp, 200, body);
}

enum ab_err ingress_key_replace(PGconn *conn, const char *agent_id, const char *hash,
                                const char *prefix, char *errstr, size_t size)
{
    const char *const params[] = { agent_id, hash, prefix };
    enum ab_err err = ab_db_exec(conn,
                                 "UPDATE api_keys SET revoked_at = now()"
                                 " WHERE agent_id = $1::uuid AND revoked_at IS NULL",
                                 1, params, NULL, errstr, size);
    if (err == AB_OK)
        err = ab_db_exec(conn,
                         "INSERT INTO api_keys (agent_id, key_hash, key_prefix)"
                         " VALUES ($1::uuid, $2, $3)",
                         3, params, NULL, errstr, size);
    return err;
}

/* Revokes the agent's key and stores a new one, in one transaction: at no moment do two
 * keys work, and a failure leaves the old key valid. @returns AB_ERR_NOT_FOUND for no such
 * agent, AB_ERR_INVALID for a native agent (only OpenClaw agents poll the gateway). */
static enum ab_err rotate_key(PGconn *conn, const char *agent_id, const char *hash,
                              const char *prefix, char *errstr, size_t size)
{
    PGresult *res = NULL;
    const char *const id_param[] = { agent_id };
    enum ab_err err = ab_db_begin(conn, errstr, size);
    if (err == AB_OK)
        err = ab_db_exec(conn, "SELECT type FROM agents WHERE id = $1::uuid FOR UPDATE", 1,
                         id_param, &res, errstr, size);
    if (err == AB_OK && PQntuples(res) == 0) {
        snprintf(errstr, size, "no agent %s", agent_id);
        err = AB_ERR_NOT_FOUND;
    } else if (err == AB_OK && strcmp(PQgetvalue(res, 0, 0), "openclaw") != 0) {
        snprintf(errstr, size, "agent %s is a native agent: only OpenClaw agents use API keys",
                 agent_id);
        err = AB_ERR_INVALID;
    }
    PQclear(res);
    if (err == AB_OK)
        err = ingress_key_replace(conn, agent_id, hash, prefix, errstr, size);
    if (err == AB_OK)
        err = ab_db_commit(conn, errstr, size);
    if (err)
        ab_db_rollback(conn);
    return err;
}

static void issue_key(const struct _u_request *req, struct _u_response *resp, void *ud)
{
    struct ingress_admin *admin = ud;
    unsigned char random[KEY_RANDOM_BYTES];
    char key[INGRESS_KEY_MAX_LEN], hash[65], prefix[9], errstr[512];
    PGconn *conn = NULL;
    if (!ingress_admin_authorized(admin, req, resp))
        return;
    const char *agent_id = u_map_get(req->map_url, "id");
    if (!ab_uuid_valid(agent_id)) {
        ab_http_error(resp, AB_ERR_INVALID, "the agent id must be a UUID");
        return;
    }
    ab_random_bytes(random, sizeof(random));
    memcpy(key, KEY_PREFIX, sizeof(KEY_PREFIX));
    base64url(random, sizeof(random), key + strlen(KEY_PREFIX));
    ab_sha256_hex(key, strlen(key), hash);
    snprintf(prefix, sizeof(prefix), "%.8s", key);
    enum ab_err err = ab_service_db_acquire(admin->svc, DB_WAIT_MS, &conn, errstr, sizeof(errstr));
    if (err == AB_OK) {
        err = rotate_key(conn, agent_id, hash, prefix, errstr, sizeof(errstr));
        ab_db_release(admin->svc->db, conn);
    }
    if (err == AB_ERR_NOT_FOUND || err == AB_ERR_INVALID)
        ab_http_error(resp, err, "%s", errstr);
    else if (err)
        ingress_answer_failure(resp, err, "the database is unavailable; retry later", errstr);
    else
        ab_http_json(resp, 201,
                     json_pack("{s:s,s:s,s:s,s:s}", "agent_id", agent_id, "api_key", key,
                               "key_prefix", prefix, "message",
                               "Save this key: it is shown only once."));
    ab_info("agent %s: API key %s", agent_id, err ? "not issued" : "issued, previous revoked");
}

enum ab_err ingress_gateway_routes(struct ingress_admin *admin, struct ab_http_server *api)
{
    char errstr[512];
    enum ab_err err = ingress_guide_check_public_url(
        ab_config_str(admin->svc->cfg, AB_OPT_GATEWAY_PUBLIC_URL), errstr, sizeof(errstr));
    if (err != AB_OK) {
        ab_error("%s", errstr);
        return err;
    }
    err = ab_http_server_route(api, "POST", "/api/gateway/heartbeat", heartbeat, admin);
    if (err == AB_OK)
        err = ab_http_server_route(api, "GET", "/api/gateway/setup-guide/:agent_id",
                                   setup_guide, admin);
    if (err == AB_OK)
        err = ab_http_server_route(api, "POST", "/api/gateway/agents/:id/api-key", issue_key,
                                   admin);
    return err;
}
