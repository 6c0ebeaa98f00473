/* When to try a failed request again: the retry policy shared by the LLM worker (issue 4:
 * exponential backoff with jitter for connection errors, 429 and 5xx) and the notifier
 * (issue 5: an explicit per-endpoint schedule, Svix's by default), and the parser of the
 * Retry-After header (RFC 9110 section 10.2.3) both of them honour.
 *
 * Everything here but ab_retry_in_place is pure: the caller passes the clock and the random
 * number (ab_wall_ms(), ab_random_unit()), so a schedule is reproducible in tests. Which errors are
 * worth retrying is ab_err_is_retriable (errors.h); this file only says when. */
#ifndef AB_RETRY_H
#define AB_RETRY_H

#include "errors.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* The longest delay this file ever returns or parses: 2^31 seconds (about 68 years), the
 * value RFC 9111 tells caches to use for a delta-seconds too large to represent. Larger
 * Retry-After values and schedule entries are clamped to it, so sums with a wall clock in
 * milliseconds never overflow an int64_t. */
#define AB_RETRY_DELAY_MAX_MS ((int64_t)2147483648 * 1000)

enum ab_retry_kind {
    /* delay after failed attempt n (1-based) = min(max_ms, base_ms * factor^(n-1)),
     * with equal jitter: uniform in [delay/2, delay]. */
    AB_RETRY_EXPONENTIAL = 0,
    /* delay after failed attempt n = schedule_ms[n-1] * (1 + jitter * (2u - 1)): the
     * schedule lists the waits between attempts, so it allows schedule_len + 1 attempts. */
    AB_RETRY_SCHEDULE,
};

/* Why equal jitter rather than full jitter (uniform in [0, delay]): full jitter spreads
 * clients best, but it can draw a delay near zero, which against a rate-limited or
 * overloaded upstream is one more request at the worst moment. Equal jitter keeps half of
 * the backoff as a floor and still decorrelates the other half across workers. */
struct ab_retry_policy {
    enum ab_retry_kind kind;

    /* AB_RETRY_EXPONENTIAL */
    int64_t base_ms;  /* the nominal delay after the first failure; >= 0 */
    double factor;    /* growth per attempt; >= 1 */
    int64_t max_ms;   /* the nominal delay never grows past this; >= base_ms */
    int max_attempts; /* attempts in all, the first one included; 1 = never retry */

    /* AB_RETRY_SCHEDULE. schedule_ms is borrowed: it must outlive the policy (a static
     * array, or one the owner of the policy frees after it). */
    const int64_t *schedule_ms; /* each >= 0 */
    size_t schedule_len;
    double jitter; /* fraction in [0, 1]: each delay is drawn in [d(1-j), d(1+j)] */

    /* Both kinds: a Retry-After from the server is a floor on the delay, up to this cap
     * (a server asking for a day does not stall a worker for a day). 0 ignores it. */
    int64_t retry_after_cap_ms;
};

/* Svix's schedule after the first (immediate) attempt: 5 s, 5 min, 30 min, 2 h, 5 h,
 * 10 h, 10 h, i.e. 8 attempts over about 27.6 hours. */
#define AB_RETRY_NOTIFY_DEFAULT_LEN 7
extern const int64_t ab_retry_notify_default_ms[AB_RETRY_NOTIFY_DEFAULT_LEN];

/* Fills policy with the notifier's default: the Svix schedule above, 10 % jitter, and
 * Retry-After honoured up to 1 hour. */
void ab_retry_policy_notify_default(struct ab_retry_policy *policy);

/* Checks that the fields of policy's kind are within the bounds written above.
 * @returns AB_OK, or AB_ERR_CONFIG with the reason in errstr. */
enum ab_err ab_retry_policy_check(const struct ab_retry_policy *policy, char *errstr,
                                  size_t errstr_size);

/* The wait before the next attempt, after attempt number `attempt` (1 for the first one)
 * has failed with a retriable error.
 *   retry_after_ms: what the server asked for (ab_retry_after_parse), or -1 for none; the
 *                   delay is at least min(retry_after_ms, retry_after_cap_ms), not jittered
 *                   below it (RFC 9110: the client "ought to wait" that long).
 *   random_unit:    a number in [0, 1] (ab_random_unit()); 0 gives the shortest delay of
 *                   the jitter range, 1 the longest. Values outside are clamped.
 * Sets *delay_ms, in [0, AB_RETRY_DELAY_MAX_MS].
 * @returns false when no attempt is left (or attempt < 1, or the policy fails
 *          ab_retry_policy_check); *delay_ms is then left alone. */
bool ab_retry_next(const struct ab_retry_policy *policy, int attempt, int64_t retry_after_ms,
                   double random_unit, int64_t *delay_ms);

/* Parses a Retry-After header value (RFC 9110 section 10.2.3) into the wait it asks for
 * from now_wall_ms: delta-seconds ("120"), or an HTTP-date in IMF-fixdate ("Sun, 06 Nov
 * 1994 08:49:37 GMT") or one of the two obsolete forms, RFC 850 ("Sunday, 06-Nov-94
 * 08:49:37 GMT", a two-digit year taken as the latest one not more than 50 years ahead) and
 * asctime ("Sun Nov  6 08:49:37 1994"). Surrounding spaces and tabs are allowed. A date in
 * the past gives 0; anything larger than AB_RETRY_DELAY_MAX_MS is clamped to it.
 * @returns false for NULL, an empty value, a sign, a fraction, an invalid date or any
 *          other text; *ms is then left alone. */
bool ab_retry_after_parse(const char *header, int64_t now_wall_ms, int64_t *ms);

/* One step a worker retries in place rather than handing back to Kafka (recording an
 * answer paid for, a batch of delivery attempts): it returns AB_OK, or an error with its
 * message in errstr. */
typedef enum ab_err (*ab_retry_step)(void *ud, char *errstr, size_t errstr_size);

/* Runs step until it returns AB_OK or an error ab_err_is_retriable refuses, at most
 * `tries` times, sleeping first_wait_ms, then twice that, and so on between tries; each
 * retried failure is logged as a warning "<what>: <errstr> (try n of tries)". The one
 * function here that sleeps: call it from a worker thread, never from an event loop.
 * @returns the last result of step; errstr holds its message. */
enum ab_err ab_retry_in_place(ab_retry_step step, void *ud, int tries, int first_wait_ms,
                              const char *what, char *errstr, size_t errstr_size);

#endif
