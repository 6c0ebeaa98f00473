/* Admin routes. POST /api/admin/events publishes an operator's event to agentbus.ingress
 * and answers 202 only once Kafka acknowledged it: the smallest complete path through
 * the bus, used by operators to probe it and by the end-to-end tests. */
#include "services/ingress/routes_admin.h"

#include <string.h>

#include "common/crypto.h"
#include "common/envelope.h"
#include "common/log.h"

#define EVENT_TYPE_MAX 128
#define SUBJECT_MAX 256

bool ingress_admin_authorized(const struct ingress_admin *admin, const struct _u_request *req,
                              struct _u_response *resp)
{
    const char *auth = ab_http_header(req, "Authorization");
    const char *token = NULL;
    if (auth != NULL && strncasecmp(auth, "Bearer ", 7) == 0)
        token = auth + 7;
    if (ab_secret_equal(token, ab_config_str(admin->svc->cfg, AB_OPT_ADMIN_TOKEN)))
        return true;
    ulfius_add_header_to_response(resp, "WWW-Authenticate", "Bearer realm=\"agentbus-admin\"");
    ab_http_error(resp, AB_ERR_UNAUTHORIZED,
                  token ? "the admin token is not valid"
                        : "send the admin token as \"Authorization: Bearer <token>\"");
    return false;
}

/* An event type is a dotted name: letters, digits, '.', '_' and '-'. */
static bool valid_type(const char *type)
{
    size_t len = strlen(type);
    if (len == 0 || len > EVENT_TYPE_MAX)
        return false;
    for (size_t i = 0; i < len; i++)
        if (!((type[i] >= 'a' && type[i] <= 'z') || (type[i] >= 'A' && type[i] <= 'Z') ||
              (type[i] >= '0' && type[i] <= '9') || type[i] == '.' || type[i] == '_' ||
              type[i] == '-'))
            return false;
    return true;
}

/* Checks the body {type, subject?, key?, data?}; errstr names the offending field. */
static enum ab_err parse_publish(json_t *body, const char **type, const char **subject,
                                 const char **key, char *errstr, size_t size)
{
    if (!json_is_object(body)) {
        snprintf(errstr, size, "the body must be a JSON object");
        return AB_ERR_INVALID;
    }
    const char *field;
    json_t *value;
    json_object_foreach(body, field, value)
    {
        if (strcmp(field, "type") != 0 && strcmp(field, "subject") != 0 &&
            strcmp(field, "key") != 0 && strcmp(field, "data") != 0) {
            snprintf(errstr, size, "unknown field \"%.64s\" (expected type, subject, key, data)",
                     field);
            return AB_ERR_INVALID;
        }
    }
    json_t *j_type = json_object_get(body, "type");
    if (!json_is_string(j_type) || !valid_type(json_string_value(j_type))) {
        snprintf(errstr, size, "\"type\" must be a string of 1 to %d letters, digits, '.', '_' "
                               "or '-'", EVENT_TYPE_MAX);
        return AB_ERR_INVALID;
    }
    const char *names[] = { "subject", "key" };
    const char **outs[] = { subject, key };
    for (int i = 0; i < 2; i++) {
        json_t *j = json_object_get(body, names[i]);
        *outs[i] = NULL;
        if (j == NULL || json_is_null(j))
            continue;
        if (!json_is_string(j) || json_string_length(j) == 0 ||
            json_string_length(j) > SUBJECT_MAX) {
            snprintf(errstr, size, "\"%s\" must be a string of 1 to %d characters", names[i],
                     SUBJECT_MAX);
            return AB_ERR_INVALID;
        }
        *outs[i] = json_string_value(j);
    }
    *type = json_string_value(j_type);
    return AB_OK;
}

static void publish_event(const struct _u_request *req, struct _u_response *resp, void *ud)
{
    struct ingress_admin *admin = ud;
    char errstr[512];
    json_t *body = NULL;
    const char *type, *subject, *key;
    if (!ingress_admin_authorized(admin, req, resp))
        return;
    enum ab_err err = ab_http_json_body(req, &body, errstr, sizeof(errstr));
    if (err == AB_OK)
        err = parse_publish(body, &type, &subject, &key, errstr, sizeof(errstr));
    if (err) {
        ab_http_error(resp, err, "%s", errstr);
        json_decref(body);
        return;
    }
    struct ab_event *ev = ab_event_new(type, "/agentbus/ingress/admin", subject,
                                       json_incref(json_object_get(body, "data")));
    err = ab_producer_send_event(admin->svc->producer, AB_TOPIC_INGRESS,
                                 key ? key : subject ? subject : ev->id, ev, errstr,
                                 sizeof(errstr));
    if (err == AB_OK) {
        /* The access log already records the request; one line per event is enough. */
        ab_debug("event %s (%s) accepted", ev->id, ev->type);
        ab_http_json(resp, 202, json_pack("{s:s,s:s,s:s}", "status", "accepted", "id", ev->id,
                                          "type", ev->type));
    } else {
        ab_error("event %s not accepted: %s", ev->id, errstr);
        ab_http_error(resp, err, "the event was not accepted: %s", errstr);
    }
    ab_event_free(ev);
    json_decref(body);
}

enum ab_err ingress_admin_routes(struct ingress_admin *admin, struct ab_http_server *api)
{
    return ab_http_server_route(api, "POST", "/api/admin/events", publish_event, admin);
}
