/* The notifier's PostgreSQL: what a Feishu delivery needs (the person's ids, the app), the
 * attempts and dead letters of finished attempts (one transaction per batch), the schedule
 * of retries not yet due, and the endpoints disabled at run time. Tables: migration 0004. */
#ifndef NOTIFY_STORE_H
#define NOTIFY_STORE_H

#include <libpq-fe.h>
#include <stddef.h>
#include <stdint.h>

#include "services/notifier/delivery.h"

/* Fills a Feishu delivery: the member's user_id and open_id, the app (the sending agent's
 * own channel, else the tenant's default; Feishu before Lark), and the text. When something
 * is missing, sets outcome FAILED with its code (member_not_found, no_feishu_id,
 * no_channel) and returns AB_OK. @returns a database error otherwise (retriable). */
enum ab_err notify_store_prepare_feishu(PGconn *conn, struct notify_delivery *d, char *errstr,
                                        size_t errstr_size);

/* Records n finished attempts in one transaction: their attempt rows (replacing a row of
 * the same attempt), dead letters for the FAILED, the removal of the schedule rows they
 * came from, and endpoint state (410 disables; a breaker opening or closing). ABANDONED
 * deliveries from the schedule get their lease back. */
enum ab_err notify_store_record(PGconn *conn, struct notify_delivery *const *ds, size_t n,
                                char *errstr, size_t errstr_size);

/* Keeps a retry that is not due yet (idempotent on its id). */
enum ab_err notify_store_schedule(PGconn *conn, const char *id, int64_t due_ms,
                                  const char *event, char *errstr, size_t errstr_size);

/* Claims up to limit due retries for lease_ms: *ids and *events get n malloc'ed strings
 * each (free with notify_store_strings_free); *next_due_ms the earliest due time of what
 * is left unleased (wall ms, or -1 for none). */
enum ab_err notify_store_claim(PGconn *conn, int limit, long lease_ms, char ***ids,
                               char ***events, size_t *n, int64_t *next_due_ms,
                               int64_t *backlog, char *errstr, size_t errstr_size);

/* The endpoints disabled now. */
enum ab_err notify_store_disabled(PGconn *conn, char ***ids, size_t *n, char *errstr,
                                  size_t errstr_size);

void notify_store_strings_free(char **s, size_t n);

#endif
