/* One LLM request on its way through the worker (worker.c): prepared on a database thread
 * (store.c), called on the engine thread (caller.c), recorded and published on a database
 * thread again (store.c, publish.c), then handed back to the consumer. Exactly one thread
 * touches a job at a time; the queues between the stages are the hand-overs, and their
 * locks order the writes of one stage before the reads of the next. */
#ifndef LLMW_JOB_H
#define LLMW_JOB_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#include "common/kafka_consumer.h"
#include "common/trace.h"
#include "services/llm-worker/llm_request.h"
#include "services/llm-worker/openai_stream.h"
#include "services/llm-worker/provider.h"

#define LLMW_NAME_MAX 256
#define LLMW_KEY_MAX 256
#define LLMW_MODELS_MAX 2 /* primary, fallback */

enum llmw_stage {
    LLMW_STAGE_PREPARE, /* database thread: load, store the user turn */
    LLMW_STAGE_CALL,    /* engine thread */
    LLMW_STAGE_RECORD,  /* database thread: store the outcome, then publish it */
    LLMW_STAGE_PUBLISH, /* database thread: publish an outcome recorded before */
};

enum llmw_status {
    LLMW_ANSWERED,
    LLMW_FAILED,
    LLMW_SKIPPED,
    LLMW_CANCELLED, /* stopped by a shutdown or a revoke: nothing is recorded */
};

/* The word llm_requests.status and the metrics use (a cancelled job is never recorded). */
static inline const char *llmw_status_name(enum llmw_status s)
{
    return s == LLMW_ANSWERED ? "answered" : s == LLMW_SKIPPED ? "skipped" : "failed";
}

struct llmw_worker;
struct llmw_caller;

struct llmw_job {
    struct llmw_worker *w;
    struct ab_consumer_job *cj; /* the consumer's; done exactly once */
    struct llmw_request req;    /* borrows from cj's event */
    char key[LLMW_KEY_MAX];     /* the Kafka key: the conversation */
    char traceparent[AB_TRACEPARENT_LEN + 1]; /* the worker's span of the request */
    int64_t arrived_ms;         /* monotonic, for latency */
    enum llmw_stage stage;
    struct llmw_job *next;      /* in a queue */

    /* Loaded by PREPARE. */
    char agent_name[LLMW_NAME_MAX];
    char sender_name[LLMW_NAME_MAX]; /* the sender's name now, else the message's */
    char sender_type[16];            /* "openclaw", "native", "webhook"; "" when gone */
    bool has_conversation;           /* the conversation row exists */
    struct llmw_model models[LLMW_MODELS_MAX];
    size_t model_count;
    json_t *messages; /* the prompt; owned */

    /* The outcome: set by PREPARE (skipped, or failed before any call) or by the calls. */
    enum llmw_status status;
    char error_code[48];
    char error_message[768];
    struct llmw_openai_result answer; /* LLMW_ANSWERED */
    size_t answer_model;              /* index in models */
    int64_t first_token_ms;           /* of the answering call, from its start; -1 */
    json_t *attempts;                 /* one object per call made; owned */

    /* Engine thread only: the call in progress. */
    struct llmw_caller *caller; /* set by llmw_caller_submit */
    size_t model_index;
    int attempt;           /* calls made on models[model_index] */
    struct llmw_call_spec spec;
    struct llmw_openai_stream *stream;
    char *body;            /* a non-streamed or error body */
    size_t body_len, body_cap;
    long status_code;
    int64_t retry_after_ms; /* what the provider asked for, -1 for nothing */
    int64_t call_started_ms;
    int64_t due_ms;        /* a retry waiting for its backoff */
    uint64_t http_id;      /* 0 when no call is in flight */
    struct llmw_job *slot_next; /* waiting for its model's concurrency slot */
};

#endif
