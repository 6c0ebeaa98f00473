/* The LLM worker: agentbus.llm.requests in, answers out. The consumer (asynchronous mode)
 * hands each request over without waiting for it; a few database threads prepare and
 * record requests (store.c, publish.c), and one engine thread runs every model call
 * (caller.c). So a process holds llm_worker.max_in_flight requests at once on
 * llm_worker.db_threads + 1 threads, and however slow a model is, the consumer keeps
 * polling within max.poll.interval.ms.
 *
 * A request is answered at most once: its outcome row is written before anything is
 * published, a redelivered request finds the row and publishes the same events again
 * (same ids, so downstream drops the copies), and a request whose worker died mid-call
 * has no row and is called again by the partition's next owner. */
#ifndef LLMW_WORKER_H
#define LLMW_WORKER_H

#include <stddef.h>

#include "common/kafka_consumer.h"
#include "common/service.h"

struct llmw_worker;

/* Reads the llm_worker.* options and starts the threads. svc is borrowed and must outlive
 * the worker. @returns NULL with errstr set when a thread or the engine cannot start. */
struct llmw_worker *llmw_worker_new(struct ab_service *svc, char *errstr, size_t errstr_size);

/* ab_consumer_start_fn: takes a request (ud is the worker). Never blocks. */
void llmw_worker_start_job(void *ud, struct ab_consumer_job *cj);

/* ab_consumer_quiesce_fn: cancels the calls in flight, records what was already answered,
 * ends every job, and stops the threads. */
void llmw_worker_quiesce(void *ud);

/* Frees a quiesced worker (NULL: no-op). */
void llmw_worker_free(struct llmw_worker *w);

#endif
