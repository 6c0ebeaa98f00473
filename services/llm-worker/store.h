/* The LLM worker's PostgreSQL side: what a request needs before its call (the answering
 * agent, its models, the sender, the conversation's last turns), the user turn, and the
 * outcome afterwards. Every write is idempotent on an id derived from the request, so a
 * redelivered request writes nothing twice. @thread any database thread, one job each. */
#ifndef LLMW_STORE_H
#define LLMW_STORE_H

#include <libpq-fe.h>
#include <stdbool.h>

#include "common/errors.h"
#include "services/llm-worker/job.h"

struct llmw_store_settings {
    int history_turns; /* earlier turns sent with the request */
    int max_hops;      /* a native sender's message is answered while hops < max_hops */
};

/* The id of the request's answer: its assistant turn and its reply event. */
void llmw_reply_id(const struct llmw_job *job, char out[AB_UUID_LEN + 1]);

/* PREPARE. Sets *recorded when the request has an outcome row already (only publishing is
 * left); otherwise loads the job's agent, sender, models and prompt, stores the user turn,
 * and decides: job->status LLMW_ANSWERED (meaning: call the models), or LLMW_FAILED /
 * LLMW_SKIPPED with error_code and error_message set (record without a call).
 * @returns AB_OK, or the database's error (retriable ones: try again later). */
enum ab_err llmw_store_prepare(PGconn *conn, const struct llmw_store_settings *s,
                               struct llmw_job *job, bool *recorded, char *reason,
                               size_t reason_size);

/* RECORD: the outcome row and, for an answer, the assistant turn, in one statement; a row
 * there already (another worker finished first) wins and nothing is written.
 * @returns AB_OK or the database's error. */
enum ab_err llmw_store_record(PGconn *conn, const struct llmw_job *job, char *reason,
                              size_t reason_size);

#endif
