/* POST /api/gateway/send-message: an agent sends a message to another agent or a person
 * of its tenant. */
#ifndef INGRESS_GATEWAY_SEND_H
#define INGRESS_GATEWAY_SEND_H

#include "services/ingress/routes_gateway.h"

enum ab_err ingress_send_routes(struct ingress_admin *admin, struct ab_http_server *api);

/* Publishes an agentbus.message.sent event (docs/events.md) to agentbus.ingress, keyed by
 * the conversation, and waits for Kafka's ack. event_id NULL makes a fresh id.
 * @thread safe. */
enum ab_err ingress_publish_message(struct ingress_admin *admin, const char *event_id,
                                    const struct ingress_agent *sender, const char *target_type,
                                    const char *target_id, const char *target_name,
                                    const char *channel, const char *content,
                                    const char *message_id, const char *in_reply_to,
                                    char *errstr, size_t errstr_size);

#endif
