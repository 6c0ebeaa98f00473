/* agentbus-ingress: wiring only. The API listener (agent gateway and admin API), the
 * incoming-webhook listener, and the ops listener. */
#include "common/log.h"
#include "common/service.h"
#include "services/ingress/routes_admin.h"
#include "services/ingress/admin_dead_letters.h"
#include "services/ingress/admin_resources.h"
#include "services/ingress/gateway_inbox.h"
#include "services/ingress/gateway_send.h"
#include "services/ingress/inbox_waker.h"
#include "services/ingress/routes_gateway.h"
#include "services/ingress/seed.h"
#include "services/ingress/webhook_hooks.h"
#include "services/ingress/webhook_receive.h"

static struct ab_http_server *listener(struct ab_service *svc, const char *name,
                                       const char *host, int port, size_t max_body)
{
    char errstr[512];
    struct ab_http_server *srv = NULL;
    const struct ab_http_server_options opts = {
        .name = name,
        .host = host,
        .port = port,
        .max_body_bytes = max_body,
        .connection_limit = (int)ab_config_int(svc->cfg, AB_OPT_HTTP_CONNECTION_LIMIT),
        .idle_timeout_s = (int)ab_config_int(svc->cfg, AB_OPT_HTTP_IDLE_TIMEOUT_S),
        .access_log = true,
    };
    if (ab_http_server_new(&opts, &srv, errstr, sizeof(errstr)) != AB_OK)
        ab_error("cannot create the %s listener: %s", name, errstr);
    return srv;
}

static int start(struct ab_http_server *srv)
{
    char errstr[512];
    if (ab_http_server_start(srv, errstr, sizeof(errstr)) != AB_OK) {
        ab_error("%s", errstr);
        return 1;
    }
    return 0;
}

int main(int argc, char **argv)
{
    struct ab_service svc;
    int rc = ab_service_init(&svc, "ingress", AB_SVC_INGRESS, AB_OPT_INGRESS_OPS_PORT, argc, argv);
    if (rc >= 0)
        return rc;
    size_t max_body = (size_t)ab_config_int(svc.cfg, AB_OPT_HTTP_MAX_BODY_BYTES);
    const char *host = ab_config_str(svc.cfg, AB_OPT_LISTEN_HOST);
    const char *hook_host = ab_config_str(svc.cfg, AB_OPT_INGRESS_WEBHOOK_HOST);
    struct ab_http_server *api = listener(&svc, "api", host,
                                          (int)ab_config_int(svc.cfg, AB_OPT_INGRESS_API_PORT),
                                          max_body);
    struct ab_http_server *webhooks = NULL;
    struct ingress_admin admin = { .svc = &svc, .waker = ingress_waker_new(&svc) };
    struct ingress_hooks hooks;
    struct ingress_webhooks receiver = { 0 };
    struct ingress_seeder seeder = { 0 };
    enum ab_err err = ingress_hooks_init(&hooks, &svc, &admin);
    if (err == AB_OK && hooks.incoming->enabled) {
        int port = hooks.incoming->port > 0 ? hooks.incoming->port
                                            : (int)ab_config_int(svc.cfg,
                                                                 AB_OPT_INGRESS_WEBHOOK_PORT);
        webhooks = listener(&svc, "webhooks", hook_host[0] ? hook_host : host, port,
                            hooks.incoming->max_body_bytes);
        err = webhooks == NULL ? AB_ERR_CONFIG : AB_OK;
        if (err == AB_OK)
            err = ingress_webhooks_init(&receiver, &svc, &hooks, webhooks);
    }
    if (err == AB_OK && api == NULL)
        err = AB_ERR_INTERNAL;
    if (err == AB_OK)
        err = ingress_admin_routes(&admin, api);
    if (err == AB_OK)
        err = ingress_gateway_routes(&admin, api);
    if (err == AB_OK)
        err = ingress_send_routes(&admin, api);
    if (err == AB_OK)
        err = ingress_inbox_routes(&admin, api);
    if (err == AB_OK)
        err = ingress_admin_resources_routes(&admin, api);
    if (err == AB_OK)
        err = ingress_dead_letter_routes(&admin, api);
    if (err == AB_OK)
        err = ingress_hooks_admin_routes(&hooks, api);
    if (err == AB_OK)
        err = ingress_seeder_start(&seeder, &admin);
    if (err) {
        rc = err == AB_ERR_CONFIG ? 2 : 1; /* 2: a bad configuration, as ab_service_init */
        goto out;
    }
    rc = ab_service_start(&svc);
    if (rc == 0)
        rc = ingress_waker_start(admin.waker);
    if (rc == 0)
        rc = ingress_hooks_start(&hooks) == AB_OK ? 0 : 1;
    if (rc == 0)
        rc = start(api);
    if (rc == 0 && webhooks != NULL)
        rc = start(webhooks);
    if (rc == 0)
        rc = ab_service_wait(&svc);
out:
    /* A start that failed stops what started already (the seed thread) under the watchdog. */
    if (!ab_service_stopping(&svc))
        ab_service_request_stop(&svc, rc);
    ingress_seeder_stop(&seeder);
    /* Long polls in flight answer at once, so the API listener need not wait for them. */
    ingress_waker_stop(admin.waker);
    /* Requests in flight finish (their events are acked) before the producer flushes. */
    ab_http_server_free(api);
    ab_http_server_free(webhooks);
    ingress_webhooks_cleanup(&receiver);
    ingress_hooks_cleanup(&hooks); /* after the listeners: requests borrow its hooks */
    ingress_waker_free(admin.waker); /* after the handlers that use it; before the pool */
    ab_service_cleanup(&svc);
    return rc;
}
