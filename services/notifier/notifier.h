/* The notifier's stages and the threads that run them:
 *
 *   consumer (agentbus.notify, agentbus.notify.retry)      scheduler (notify_scheduled)
 *        \  a job, a due retry               a retry not due: kept  /  due: claimed
 *         v                                                         v
 *   database threads: prepare (a Feishu person's ids and app; a disabled endpoint)
 *         v
 *   engine thread: every request, on one libcurl multi handle (engine.h)
 *         v
 *   database threads: a batch of finished attempts -> Kafka (the next retry on
 *   agentbus.notify.retry, dead letters on agentbus.notify.dlq, outcome events on
 *   agentbus.events), then PostgreSQL (attempt rows, dead letters, endpoint state, the
 *   schedule) in one transaction -> the consumer's offsets
 *
 * A retry is never a timer in memory: it is an event on agentbus.notify.retry, and one not
 * yet due is kept as a row of notify_scheduled, from which any notifier claims it when it is
 * due (a lease, so a notifier dying mid-attempt leaves it to another). A restart loses
 * nothing: what was not recorded is redone, with the same webhook-id or Feishu uuid. */
#ifndef NOTIFY_NOTIFIER_H
#define NOTIFY_NOTIFIER_H

#include "common/kafka_consumer.h"
#include "common/service.h"

struct notify_notifier;

/* Reads the notifier's options and the outgoing endpoints, starts the engine, the
 * database threads and the scheduler. @returns NULL with errstr set (a configuration
 * error is reported as such). */
struct notify_notifier *notify_notifier_new(struct ab_service *svc, char *errstr,
                                            size_t errstr_size);

/* The consumer's start: takes one message of agentbus.notify or agentbus.notify.retry. */
void notify_notifier_start_job(void *ud, struct ab_consumer_job *job);

/* The consumer's quiesce: stops the scheduler and the engine (what is in flight ends
 * abandoned: not recorded, redone later), lets the database threads finish, joins them. */
void notify_notifier_quiesce(void *ud);

void notify_notifier_free(struct notify_notifier *n);

#endif
