/* The notifier's handling of one delivery event. */
#ifndef NOTIFY_DELIVERY_H
#define NOTIFY_DELIVERY_H

#include "common/kafka_consumer.h"

/* Handles a delivery event. Feishu and outgoing webhooks arrive with the notifier issue;
 * until then every delivery is refused with a reason and so kept, replayable, in the
 * dead-letter topic rather than dropped. */
enum ab_err notify_handle(void *ud, const struct ab_consumed *msg, char *reason,
                          size_t reason_size);

#endif
