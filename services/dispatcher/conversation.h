/* Conversations the dispatcher creates on first use: one per pair of agents in a tenant,
 * whoever wrote first. */
#ifndef DISPATCH_CONVERSATION_H
#define DISPATCH_CONVERSATION_H

#include <libpq-fe.h>
#include <stdbool.h>
#include <stddef.h>

#include "common/errors.h"
#include "common/util.h"

/* The conversation between agents a and b (in either order) of tenant_id, created if it
 * does not exist yet, and its last_message_at moved up to `at` (an RFC 3339 time, or NULL
 * for now). Safe against a concurrent first message either way: both land on the same
 * row. Runs on conn inside the caller's transaction. *created says whether event_id (the
 * message's) is the one that created it, now or before a redelivery.
 * @returns AB_OK with id; ab_db_exec's errors (AB_ERR_INVALID when an agent is gone). */
enum ab_err dispatch_conversation_of_agents(PGconn *conn, const char *tenant_id,
                                            const char *agent_a, const char *agent_b,
                                            const char *at, const char *event_id,
                                            char id[AB_UUID_LEN + 1], bool *created,
                                            char *reason, size_t reason_size);

/* The conversation of a webhook session with agent_id: kind 'hook', one per (tenant,
 * session_key) where session_key is "agent:<agent id>:<the hook's session key>", so two
 * hooks that name the same session for different agents never share a history (the form
 * OpenClaw gives hook session keys). Upserted like the agents' pair, with *created. */
enum ab_err dispatch_conversation_of_session(PGconn *conn, const char *tenant_id,
                                             const char *agent_id, const char *session_key,
                                             const char *at, const char *event_id,
                                             char id[AB_UUID_LEN + 1], bool *created,
                                             char *reason, size_t reason_size);

#endif
