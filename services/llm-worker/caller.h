/* The engine thread of the LLM worker: every model call of the process runs here, on one
 * libcurl multi handle (http_multi.h), however many are in flight. A job comes in with its
 * models and prompt and leaves with an outcome:
 *
 *  - calls to one model wait for a free slot of its max_concurrency (per process);
 *  - a connection error, a timeout, 429 and 5xx, a cut or malformed stream are retried on
 *    the same model with exponential backoff and equal jitter, at least as long as the
 *    provider's Retry-After (up to a cap), up to max_attempts calls; other 4xx, tool calls
 *    and empty answers are not;
 *  - then the fallback model, from its first attempt;
 *  - the outcome: LLMW_ANSWERED with the answer, LLMW_FAILED with the last cause, or
 *    LLMW_CANCELLED when the caller stopped or the consumer abandoned the job.
 *
 * Waiting retries are timers on this thread, not sleeping threads. Every call is recorded
 * in job->attempts (model, attempt, outcome, HTTP status, milliseconds, error code): never
 * the prompt, the answer or a key. */
#ifndef LLMW_CALLER_H
#define LLMW_CALLER_H

#include <stddef.h>

#include "common/retry.h"
#include "services/llm-worker/job.h"

struct llmw_caller_options {
    struct ab_retry_policy retry;  /* max_attempts: calls per model, the first included */
    size_t max_response_bytes;     /* one response, stream or body */
    size_t max_transfers;          /* calls in flight at once */
    /* Called on the engine thread for each job, exactly once, when its calls are over. */
    void (*finished)(void *ud, struct llmw_job *job);
    void *ud;
};

struct llmw_caller;

/* Creates the engine and starts its thread. @returns NULL with errstr set on failure. */
struct llmw_caller *llmw_caller_new(const struct llmw_caller_options *opts, char *errstr,
                                    size_t errstr_size);

/* Hands a job over (job->models, messages, model_count set). @thread any. */
void llmw_caller_submit(struct llmw_caller *c, struct llmw_job *job);

/* Stops the thread: calls in flight are cancelled, and every job handed over and not yet
 * finished gets finished (LLMW_CANCELLED) before this returns. Then frees. NULL: no-op. */
void llmw_caller_free(struct llmw_caller *c);

#endif
