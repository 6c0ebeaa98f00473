/* The notifier's PostgreSQL: what a Feishu delivery needs (the person's ids, the app), the
 * attempts and dead letters of finished attempts (one transaction per batch), the schedule
 * of retries not yet due, and the endpoints disabled at run time. Tables: migration 0004. */
#ifndef NOTIFY_STORE_H
#define NOTIFY_STORE_H

#include <libpq-fe.h>
#include <stddef.h>
#include <stdint.h>

#include "services/notifier/delivery.h"

/* Fills a Feishu delivery: the member's user_id and open_id (none for a group chat), the
 * app (the sending agent's own channel, else the tenant's default; Feishu before Lark), and
 * the text. When something is missing, sets outcome FAILED with its code
 * (member_not_found, no_feishu_id, no_channel) and returns AB_OK. @returns a database error
 * otherwise (retriable). */
enum ab_err notify_store_prepare_feishu(PGconn *conn, struct notify_delivery *d, char *errstr,
                                        size_t errstr_size);

/* Records n finished attempts in one transaction: their attempt rows (replacing a row of
 * the same attempt), dead letters for the FAILED, the removal of the schedule rows they
 * came from, and endpoint state (410 disables; a breaker opening or closing). ABANDONED
 * deliveries from the schedule get their lease back. */
enum ab_err notify_store_record(PGconn *conn, struct notify_delivery *const *ds, size_t n,
                                char *errstr, size_t errstr_size);

/* Keeps n retries that are not due yet: their event ids, when they are due (wall ms), the
 * events themselves. Idempotent on the ids. */
enum ab_err notify_store_schedule(PGconn *conn, const char *const *ids, const int64_t *due_ms,
                                  const char *const *events, size_t n, char *errstr,
                                  size_t errstr_size);

/* Claims up to limit (0: none) due retries for lease_ms: *ids and *events get n malloc'ed
 * strings each (free with notify_store_strings_free); *next_in_ms is how long until the
 * earliest of what is left unleased is due, by the server's clock (0: now; -1: none). */
enum ab_err notify_store_claim(PGconn *conn, int limit, long lease_ms, char ***ids, char ***events,
                               size_t *n, int64_t *next_in_ms, char *errstr, size_t errstr_size);

/* Retries waiting in notify_scheduled, all notifiers' (a count: run it now and then). */
enum ab_err notify_store_backlog(PGconn *conn, int64_t *count, char *errstr, size_t errstr_size);

/* Dead letters kept and not replayed since they died (all notifiers'; what the admin API
 * lists and a replay would take). A count over the table: run it now and then. */
enum ab_err notify_store_dead_letters_held(PGconn *conn, int64_t *count, char *errstr,
                                           size_t errstr_size);

/* The endpoints disabled now. */
enum ab_err notify_store_disabled(PGconn *conn, char ***ids, size_t *n, char *errstr,
                                  size_t errstr_size);

void notify_store_strings_free(char **s, size_t n);

#endif
