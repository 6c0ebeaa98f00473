/* GET /api/gateway/poll and POST /api/gateway/report: the OpenClaw agent's inbox. */
#ifndef INGRESS_GATEWAY_INBOX_H
#define INGRESS_GATEWAY_INBOX_H

#include "services/ingress/routes_gateway.h"

enum ab_err ingress_inbox_routes(struct ingress_admin *admin, struct ab_http_server *api);

#endif
