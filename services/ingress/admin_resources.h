/* The admin API's resources (docs/admin-api.md, "Resources"): list, create, get, patch and
 * delete for tenants, LLM models, agents, members, relationships and channel configs. */
#ifndef INGRESS_ADMIN_RESOURCES_H
#define INGRESS_ADMIN_RESOURCES_H

#include "common/http_server.h"
#include "common/util.h"
#include "services/ingress/routes_admin.h"

/* Adds GET/POST /api/admin/<resource> and GET/PATCH/DELETE /api/admin/<resource>/:id for
 * every resource. admin must outlive the listener. Call once, before the listener starts. */
enum ab_err ingress_admin_resources_routes(struct ingress_admin *admin,
                                           struct ab_http_server *api);

/* Checks body as the admin API checks a create (creating) or a patch of `resource` (its
 * URL name, e.g. "agents"): the same fields, types, bounds and required fields. @returns
 * AB_OK or AB_ERR_INVALID with the reason in errstr. */
enum ab_err ingress_admin_check(const char *resource, json_t *body, bool creating,
                                char *errstr, size_t errstr_size);

/* Creates (id NULL) or patches (id) one record of `resource` from body on conn, inside the
 * caller's transaction if one is open, with the admin API's validation and reference
 * checks; the record's id ends in id_out. @returns AB_OK, AB_ERR_INVALID (a field or a
 * reference; errstr says which), AB_ERR_CONFLICT (a name in use), AB_ERR_NOT_FOUND (the
 * patched record is gone) or a database error. */
enum ab_err ingress_admin_write(PGconn *conn, const char *resource, json_t *body,
                                const char *id, char id_out[AB_UUID_LEN + 1], char *errstr,
                                size_t errstr_size);

#endif
