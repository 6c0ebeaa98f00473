/* Find-or-create of conversations. The pair is stored ordered (agent_low < agent_high) and
 * a partial unique index covers it, so an upsert is the whole protocol: of two first
 * messages A->B and B->A committing at once, one inserts and the other waits for it, then
 * takes the update branch and returns the same id. No lookup-then-insert window, no unique
 * violation to retry. */
#include "services/dispatcher/conversation.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/db.h"

/* last_message_at only ever moves forward, to the time of the event: a redelivered or
 * late event changes nothing, which keeps the write idempotent. */
static const char *const upsert_sql =
    "INSERT INTO conversations (tenant_id, kind, agent_low, agent_high, last_message_at,"
    "                           first_event_id)"
    " VALUES ($1, 'agent_agent', least($2::uuid, $3::uuid), greatest($2::uuid, $3::uuid),"
    " coalesce($4::timestamptz, now()), $5)"
    " ON CONFLICT (tenant_id, agent_low, agent_high) WHERE kind = 'agent_agent'"
    " DO UPDATE SET last_message_at ="
    " greatest(conversations.last_message_at, EXCLUDED.last_message_at)"
    " RETURNING id::text, coalesce(first_event_id = $5::uuid, false)";

static const char *const session_sql =
    "INSERT INTO conversations (tenant_id, kind, agent_low, session_key, last_message_at,"
    "                           first_event_id)"
    " VALUES ($1, 'hook', $2, $3, coalesce($4::timestamptz, now()), $5)"
    " ON CONFLICT (tenant_id, session_key) WHERE session_key IS NOT NULL"
    " DO UPDATE SET last_message_at ="
    " greatest(conversations.last_message_at, EXCLUDED.last_message_at)"
    " RETURNING id::text, coalesce(first_event_id = $5::uuid, false)";

static enum ab_err upsert(PGconn *conn, const char *sql, const char *const params[5],
                          char id[AB_UUID_LEN + 1], bool *created, char *reason, size_t size)
{
    PGresult *res = NULL;
    enum ab_err err = ab_db_exec(conn, sql, 5, params, &res, reason, size);
    if (err)
        return err;
    if (PQntuples(res) == 1) {
        snprintf(id, AB_UUID_LEN + 1, "%s", PQgetvalue(res, 0, 0));
        *created = PQgetvalue(res, 0, 1)[0] == 't';
    } else {
        snprintf(reason, size, "conversation upsert returned %d rows", PQntuples(res));
        err = AB_ERR_INTERNAL;
    }
    PQclear(res);
    return err;
}

enum ab_err dispatch_conversation_of_session(PGconn *conn, const char *tenant_id,
                                             const char *agent_id, const char *session_key,
                                             const char *at, const char *event_id,
                                             char id[AB_UUID_LEN + 1], bool *created,
                                             char *reason, size_t size)
{
    size_t size_key = strlen(agent_id) + strlen(session_key) + 8;
    char *key = ab_xmalloc(size_key);
    snprintf(key, size_key, "agent:%s:%s", agent_id, session_key);
    const char *const params[] = { tenant_id, agent_id, key, at, event_id };
    enum ab_err err = upsert(conn, session_sql, params, id, created, reason, size);
    free(key);
    return err;
}

enum ab_err dispatch_conversation_of_agents(PGconn *conn, const char *tenant_id,
                                            const char *agent_a, const char *agent_b,
                                            const char *at, const char *event_id,
                                            char id[AB_UUID_LEN + 1], bool *created,
                                            char *reason, size_t size)
{
    const char *const params[] = { tenant_id, agent_a, agent_b, at, event_id };
    return upsert(conn, upsert_sql, params, id, created, reason, size);
}
