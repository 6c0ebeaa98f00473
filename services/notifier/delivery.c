/* Delivery handling (channels come with the notifier issue). */
#include "services/notifier/delivery.h"

#include <stdio.h>

enum ab_err notify_handle(void *ud, const struct ab_consumed *msg, char *reason, size_t size)
{
    (void)ud;
    snprintf(reason, size, "notifier: event type \"%s\" is not handled by this version",
             msg->event->type);
    return AB_ERR_INVALID;
}
