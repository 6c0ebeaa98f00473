/* The LLM worker's reads and writes in PostgreSQL. */
#include "services/llm-worker/store.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/crypto.h"
#include "common/db.h"
#include "common/log.h"
#include "services/llm-worker/prompt.h"

void llmw_reply_id(const struct llmw_job *job, char out[AB_UUID_LEN + 1])
{
    char name[AB_UUID_LEN + 16];
    snprintf(name, sizeof(name), "%s:reply", job->req.event_id);
    ab_uuid_derive(name, out);
}

__attribute__((format(printf, 4, 5))) static void
set_outcome(struct llmw_job *job, enum llmw_status status, const char *code, const char *fmt, ...)
{
    va_list ap;
    job->status = status;
    snprintf(job->error_code, sizeof(job->error_code), "%s", code);
    va_start(ap, fmt);
    vsnprintf(job->error_message, sizeof(job->error_message), fmt, ap);
    va_end(ap);
}

static enum ab_err recorded_already(PGconn *conn, const struct llmw_job *job, bool *recorded,
                                    char *reason, size_t size)
{
    PGresult *res = NULL;
    const char *const params[] = { job->req.event_id };
    enum ab_err err = ab_db_exec(conn, "SELECT 1 FROM llm_requests WHERE id = $1", 1, params,
                                 &res, reason, size);
    if (err == AB_OK) {
        *recorded = PQntuples(res) > 0;
        PQclear(res);
    }
    return err;
}

/* The answering agent and its enabled models, primary first. A model of another tenant is
 * never used, whatever the agent row says. */
static const char *const agent_sql =
    "SELECT a.name, a.role_description, a.type, m.id, m.name, m.provider, m.base_url,"
    " m.model, m.api_key, m.connect_timeout_ms, m.first_token_timeout_ms, m.idle_timeout_ms,"
    " m.total_timeout_ms, m.max_concurrency, m.stream"
    " FROM agents a LEFT JOIN llm_models m ON m.id IN (a.primary_model_id, a.fallback_model_id)"
    " AND m.tenant_id = a.tenant_id AND m.enabled"
    " WHERE a.id = $1 AND a.tenant_id = $2"
    " ORDER BY m.id = a.primary_model_id DESC NULLS LAST";

static void read_model(PGresult *res, int row, struct llmw_model *m)
{
    snprintf(m->id, sizeof(m->id), "%s", PQgetvalue(res, row, 3));
    m->name = ab_xstrdup(PQgetvalue(res, row, 4));
    m->provider = ab_xstrdup(PQgetvalue(res, row, 5));
    m->base_url = ab_xstrdup(PQgetvalue(res, row, 6));
    m->model = ab_xstrdup(PQgetvalue(res, row, 7));
    m->api_key = ab_xstrdup(PQgetvalue(res, row, 8));
    m->connect_timeout_ms = strtol(PQgetvalue(res, row, 9), NULL, 10);
    m->first_token_timeout_ms = strtol(PQgetvalue(res, row, 10), NULL, 10);
    m->idle_timeout_ms = strtol(PQgetvalue(res, row, 11), NULL, 10);
    m->total_timeout_ms = strtol(PQgetvalue(res, row, 12), NULL, 10);
    m->max_concurrency = (int)strtol(PQgetvalue(res, row, 13), NULL, 10);
    m->stream = strcmp(PQgetvalue(res, row, 14), "t") == 0;
}

/* Loads the agent (into job) and its role description (into *role, owned). */
static enum ab_err load_agent(PGconn *conn, struct llmw_job *job, char **role, char *reason,
                              size_t size)
{
    PGresult *res = NULL;
    const char *const params[] = { job->req.target_id, job->req.tenant_id };
    enum ab_err err = ab_db_exec(conn, agent_sql, 2, params, &res, reason, size);
    if (err)
        return err;
    if (PQntuples(res) == 0) {
        set_outcome(job, LLMW_FAILED, "agent_not_found",
                    "agent %s does not exist in the tenant", job->req.target_id);
    } else if (strcmp(PQgetvalue(res, 0, 2), "native") != 0) {
        set_outcome(job, LLMW_FAILED, "agent_not_native",
                    "agent %s is not a native agent", job->req.target_id);
    }
    if (PQntuples(res) > 0) {
        snprintf(job->agent_name, sizeof(job->agent_name), "%s", PQgetvalue(res, 0, 0));
        *role = ab_xstrdup(PQgetvalue(res, 0, 1));
    }
    for (int i = 0; i < PQntuples(res) && job->model_count < LLMW_MODELS_MAX; i++)
        if (!PQgetisnull(res, i, 3))
            read_model(res, i, &job->models[job->model_count++]);
    PQclear(res);
    return AB_OK;
}

/* The sender's name and type as they are now. A webhook is no row of agents: its name is
 * the message's and its type "webhook", never "" (which would mean an agent deleted since). */
static enum ab_err load_sender(PGconn *conn, struct llmw_job *job, char *reason, size_t size)
{
    PGresult *res = NULL;
    if (job->req.sender_kind == LLMW_SENDER_WEBHOOK) {
        snprintf(job->sender_name, sizeof(job->sender_name), "%s", job->req.sender_name);
        snprintf(job->sender_type, sizeof(job->sender_type), "webhook");
        return AB_OK;
    }
    const char *const params[] = { job->req.sender_id, job->req.tenant_id };
    enum ab_err err = ab_db_exec(conn,
                                 "SELECT name, type FROM agents WHERE id = $1 AND tenant_id = $2",
                                 2, params, &res, reason, size);
    if (err)
        return err;
    snprintf(job->sender_name, sizeof(job->sender_name), "%s",
             PQntuples(res) ? PQgetvalue(res, 0, 0) : job->req.sender_name);
    snprintf(job->sender_type, sizeof(job->sender_type), "%s",
             PQntuples(res) ? PQgetvalue(res, 0, 1) : "");
    PQclear(res);
    return AB_OK;
}

/* The message as the conversation's user turn, under the message's own event id, so it is
 * in the history once however often it is answered (and not at all when the dispatcher
 * wrote it first). A webhook's turn has no sender agent, only the webhook's name. A
 * conversation deleted meanwhile is reported, not an error. */
static enum ab_err store_user_turn(PGconn *conn, struct llmw_job *job, char *reason,
                                   size_t size)
{
    PGresult *res = NULL;
    const struct llmw_request *r = &job->req;
    const char *const params[] = { r->message_event_id,
                                   r->tenant_id,
                                   r->conversation_id,
                                   r->sender_kind == LLMW_SENDER_AGENT ? r->sender_id : NULL,
                                   r->sender_name,
                                   r->content };
    enum ab_err err = ab_db_exec(conn,
                                 "WITH conv AS (SELECT id FROM conversations"
                                 " WHERE id = $3 AND tenant_id = $2 FOR KEY SHARE),"
                                 " added AS (INSERT INTO chat_messages (id, tenant_id,"
                                 " conversation_id, role, sender_agent_id, sender_name, content)"
                                 " SELECT $1, $2, id, 'user', $4, $5, $6 FROM conv"
                                 " ON CONFLICT (id) DO NOTHING)"
                                 " SELECT count(*) FROM conv",
                                 6, params, &res, reason, size);
    if (err)
        return err;
    job->has_conversation = strcmp(PQgetvalue(res, 0, 0), "0") != 0;
    PQclear(res);
    return AB_OK;
}

/* The turns before the message, oldest first, as the answering agent sees them. */
static enum ab_err load_prompt(PGconn *conn, const struct llmw_store_settings *s,
                               struct llmw_job *job, const char *role, char *reason,
                               size_t size)
{
    PGresult *res = NULL;
    char limit[16];
    snprintf(limit, sizeof(limit), "%d", s->history_turns);
    const char *const params[] = { job->req.conversation_id, job->req.message_event_id,
                                   job->req.target_id, limit };
    enum ab_err err = ab_db_exec(
        conn,
        "SELECT coalesce(sender_agent_id = $3, false), content FROM chat_messages"
        " WHERE conversation_id = $1 AND id <> $2 AND role IN ('user', 'assistant')"
        " AND created_at <= (SELECT created_at FROM chat_messages WHERE id = $2)"
        " ORDER BY created_at DESC, id DESC LIMIT $4::int",
        4, params, &res, reason, size);
    if (err)
        return err;
    int n = PQntuples(res);
    struct llmw_turn *turns = ab_xcalloc((size_t)n + 1, sizeof(*turns));
    for (int i = 0; i < n; i++) { /* the query reads newest first */
        turns[n - 1 - i].from_agent = strcmp(PQgetvalue(res, i, 0), "t") == 0;
        turns[n - 1 - i].content = PQgetvalue(res, i, 1);
    }
    const struct llmw_prompt prompt = {
        .agent_name = job->agent_name,
        .role_description = role,
        .sender_name = job->sender_name,
        .from_webhook = job->req.sender_kind == LLMW_SENDER_WEBHOOK,
        .history = turns,
        .history_count = (size_t)n,
        .content = job->req.content,
    };
    job->messages = llmw_prompt_messages(&prompt);
    free(turns);
    PQclear(res);
    return AB_OK;
}

enum ab_err llmw_store_prepare(PGconn *conn, const struct llmw_store_settings *s,
                               struct llmw_job *job, bool *recorded, char *reason, size_t size)
{
    char *role = NULL;
    *recorded = false;
    job->status = LLMW_ANSWERED;
    snprintf(job->agent_name, sizeof(job->agent_name), "%s", job->req.target_id);
    enum ab_err err = recorded_already(conn, job, recorded, reason, size);
    if (err || *recorded)
        return err;
    err = load_agent(conn, job, &role, reason, size);
    if (!err)
        err = load_sender(conn, job, reason, size);
    if (!err && job->status == LLMW_ANSWERED)
        err = store_user_turn(conn, job, reason, size);
    if (err || job->status != LLMW_ANSWERED)
        goto out;
    if (!job->has_conversation) {
        set_outcome(job, LLMW_FAILED, "conversation_not_found",
                    "conversation %s no longer exists", job->req.conversation_id);
    } else if (job->sender_type[0] == '\0') {
        set_outcome(job, LLMW_SKIPPED, "sender_not_found",
                    "sender %s no longer exists: nobody to answer", job->req.sender_id);
    } else if (strcmp(job->sender_type, "native") == 0 && job->req.hops >= s->max_hops) {
        /* Only a native agent's message can be an answer to an answer: an OpenClaw
         * agent's or a webhook's starts a chain (it comes at hops 0) and is never stopped. */
        set_outcome(job, LLMW_SKIPPED, "hop_limit_reached",
                    "%d answers led to this message (llm_worker.max_hops %d)", job->req.hops,
                    s->max_hops);
    } else if (job->model_count == 0) {
        set_outcome(job, LLMW_FAILED, "no_model",
                    "agent %s has no enabled primary or fallback model", job->agent_name);
    } else {
        err = load_prompt(conn, s, job, role, reason, size);
    }
out:
    free(role);
    return err;
}

static void llong_text(long long v, char *buf, size_t size, const char **out)
{
    if (v < 0) {
        *out = NULL;
        return;
    }
    snprintf(buf, size, "%lld", v);
    *out = buf;
}

static json_t *usage_json(const struct llmw_openai_usage *u)
{
    if (!u->present)
        return NULL;
    json_t *o = json_object();
    const struct {
        const char *name;
        long long v;
    } fields[] = {
        { "prompt_tokens", u->prompt_tokens },       { "completion_tokens", u->completion_tokens },
        { "total_tokens", u->total_tokens },         { "cached_tokens", u->cached_tokens },
        { "reasoning_tokens", u->reasoning_tokens },
    };
    for (size_t i = 0; i < sizeof(fields) / sizeof(fields[0]); i++)
        if (fields[i].v >= 0)
            json_object_set_new(o, fields[i].name, json_integer(fields[i].v));
    return o;
}

enum ab_err llmw_store_record(PGconn *conn, const struct llmw_job *job, char *reason,
                              size_t size)
{
    const struct llmw_request *r = &job->req;
    bool answered = job->status == LLMW_ANSWERED;
    const struct llmw_model *model = NULL;
    if (answered)
        model = &job->models[job->answer_model];
    else if (job->model_count > 0 && json_array_size(job->attempts) > 0)
        model = &job->models[job->model_index < job->model_count ? job->model_index
                                                                 : job->model_count - 1];
    char reply_id[AB_UUID_LEN + 1], hops[16], latency[24], ttft[24];
    /* error_message is assembled from several texts cut by bytes into a fixed buffer; the
     * column (and every event read back from it) takes valid UTF-8 only: made so here, where
     * it is written, whoever wrote into it. */
    char message[sizeof(job->error_message)];
    snprintf(message, sizeof(message), "%s", job->error_message);
    ab_utf8_sanitize(message);
    llmw_reply_id(job, reply_id);
    snprintf(hops, sizeof(hops), "%d", r->hops);
    const char *latency_p, *ttft_p;
    llong_text(ab_monotonic_ms() - job->arrived_ms, latency, sizeof(latency), &latency_p);
    llong_text(answered ? job->first_token_ms : -1, ttft, sizeof(ttft), &ttft_p);
    char *attempts = job->attempts != NULL ? json_dumps(job->attempts, JSON_COMPACT)
                                           : ab_xstrdup("[]");
    json_t *usage_obj = answered ? usage_json(&job->answer.usage) : NULL;
    char *usage = usage_obj ? json_dumps(usage_obj, JSON_COMPACT) : NULL;
    json_decref(usage_obj);
    if (attempts == NULL)
        abort();

    const char *const params[] = {
        r->event_id,
        r->tenant_id,
        job->has_conversation ? r->conversation_id : NULL,
        r->message_event_id,
        job->status == LLMW_FAILED && strcmp(job->error_code, "agent_not_found") == 0
            ? NULL
            : r->target_id,
        job->agent_name,
        job->sender_type[0] && r->sender_kind == LLMW_SENDER_AGENT ? r->sender_id : NULL,
        job->sender_name[0] ? job->sender_name : r->sender_name,
        job->sender_type,
        hops,
        llmw_status_name(job->status),
        answered ? reply_id : NULL,
        model ? model->id : NULL,
        model ? model->name : NULL,
        answered ? job->answer.finish_reason : NULL,
        attempts,
        answered ? NULL : job->error_code,
        answered ? NULL : message,
        latency_p,
        ttft_p,
        usage,
        answered ? job->answer.content : NULL,
    };
    /* One statement: the assistant turn is written only if this request's row is, so two
     * workers finishing the same request (a rebalance in the middle of a call) leave one
     * row and one answer, the first. The agents and the conversation were read before a
     * call that may have lasted minutes: each is referred to only if it still exists
     * (locked until the commit), so one deleted meanwhile leaves a NULL, not a foreign-key
     * error that would lose the outcome. */
    enum ab_err err = ab_db_exec(
        conn,
        "WITH req AS (INSERT INTO llm_requests (id, tenant_id, conversation_id,"
        " message_event_id, agent_id, agent_name, sender_agent_id, sender_name, sender_type,"
        " hops, status, reply_message_id, model_id, model_name, finish_reason, attempts,"
        " error_code, error_message, latency_ms, first_token_ms, usage)"
        " VALUES ($1, $2,"
        " (SELECT id FROM conversations WHERE id = $3 FOR KEY SHARE), $4,"
        " (SELECT id FROM agents WHERE id = $5 FOR KEY SHARE), $6,"
        " (SELECT id FROM agents WHERE id = $7 FOR KEY SHARE), $8, $9, $10::int, $11, $12,"
        " $13, $14, $15, $16::jsonb, $17, $18, $19::bigint, $20::bigint, $21::jsonb)"
        " ON CONFLICT (id) DO NOTHING RETURNING reply_message_id, conversation_id, agent_id),"
        " turn AS (INSERT INTO chat_messages (id, tenant_id, conversation_id, role,"
        " sender_agent_id, sender_name, content)"
        " SELECT reply_message_id, $2, conversation_id, 'assistant', agent_id, $6, $22 FROM req"
        " WHERE reply_message_id IS NOT NULL AND conversation_id IS NOT NULL"
        " ON CONFLICT (id) DO NOTHING)"
        " UPDATE conversations SET last_message_at = greatest(last_message_at, now())"
        " WHERE id = (SELECT conversation_id FROM req WHERE reply_message_id IS NOT NULL)",
        22, params, NULL, reason, size);
    free(attempts);
    free(usage);
    return err;
}
