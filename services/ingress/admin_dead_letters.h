/* The admin API of the notifier's dead letters (deliveries that used up their attempts or
 * failed for good) and of outgoing endpoints disabled at run time:
 *
 *   GET    /api/admin/dead-letters[?endpoint=&kind=&since=&limit=]   list, newest first
 *   POST   /api/admin/dead-letters/:id/replay                        replay one
 *   POST   /api/admin/dead-letters/replay {"endpoint", "since"}      replay all not replayed
 *   DELETE /api/admin/dead-letters[?endpoint=&before=]                purge
 *   POST   /api/admin/webhooks/:id/enable                            after a 410, or by hand
 *
 * A replay is the delivery's own job again, wrapped in an agentbus.notify.retry event due
 * now, attempt 1: same delivery id (the receiver's webhook-id, Feishu's uuid), its full
 * schedule again; its attempt rows continue under the same id. */
#ifndef INGRESS_ADMIN_DEAD_LETTERS_H
#define INGRESS_ADMIN_DEAD_LETTERS_H

#include "common/http_server.h"
#include "services/ingress/routes_admin.h"

enum ab_err ingress_dead_letter_routes(struct ingress_admin *admin, struct ab_http_server *api);

#endif
