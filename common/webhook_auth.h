/* How an incoming webhook proves where it came from: GitHub's and Standard Webhooks'
 * signatures, a shared secret in a header, an allowlist of client addresses, and a limiter
 * of failed attempts per client address that is consulted before any secret is compared,
 * so that guessing costs the guesser a 429 rather than the service a comparison.
 *
 * Everything here compares secrets in constant time and never puts a secret in a message. */
#ifndef AB_WEBHOOK_AUTH_H
#define AB_WEBHOOK_AUTH_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "common/errors.h"

/* Whether header (the value of X-Hub-Signature-256) is "sha256=" followed by the 64 hex
 * digits (either case) of HMAC-SHA256(key = the bytes of secret, message = the raw body).
 * The decoded bytes are compared in constant time. False for a NULL or empty secret (an
 * empty key signs nothing: anyone could), a NULL header, body NULL with len > 0, another
 * prefix ("sha1=", "SHA256="), and any other length or character. */
bool ab_github_signature_valid(const char *secret, const void *body, size_t len,
                               const char *header);

enum ab_sig_result {
    AB_SIG_OK = 0,
    AB_SIG_MISSING,   /* a header is absent or empty */
    AB_SIG_MALFORMED, /* webhook-timestamp is not decimal digits, or webhook-id has a '.' */
    AB_SIG_STALE,     /* webhook-timestamp is too far from now, either way */
    AB_SIG_MISMATCH,  /* no v1 signature matches (or the secret is unusable) */
};

/* Verifies a Standard Webhooks (standardwebhooks.com, v1) request: msg_id, timestamp and
 * signature_header are the values of webhook-id, webhook-timestamp and webhook-signature;
 * body (NULL when len is 0) is the raw body. secret is "whsec_" (optional) + base64 of the
 * key, as for ab_webhook_sign, whose output is accepted here. Like the reference libraries,
 * the HMAC covers the timestamp as a number, so "0123" is checked as if it were "123".
 *
 * The checks, in order, each giving its result: a header NULL or "" (MISSING); a timestamp
 * that is not 1-19 decimal digits (no sign, no space) or does not fit a long long, or an id
 * containing '.' (MALFORMED: with a '.' in the id the signed text "id.timestamp.body" could
 * be split another way, and ab_webhook_sign refuses such ids too); |now_s - timestamp| >
 * tolerance_s (STALE; exactly tolerance_s is fresh; a negative tolerance counts as 0) -
 * before any HMAC is computed, so an old captured request costs nothing; then the signature
 * list: entries separated by spaces, each "<version>,<base64>", where only "v1" entries
 * count (others, "v1a" included, are skipped, as are v1 entries whose base64 is not 32
 * bytes). Any v1 entry equal (in constant time) to the HMAC passes: a sender rotating its
 * secret sends one per secret. None is MISMATCH, and so is a secret that is NULL, not
 * base64 or empty (validate secrets when configured, with ab_webhook_secret_valid). */
enum ab_sig_result ab_standard_webhook_verify(const char *secret, const char *msg_id,
                                              const char *timestamp, const char *signature_header,
                                              const void *body, size_t len, long long now_s,
                                              long long tolerance_s);

/* A short sentence for the message of an error body ("webhook signature does not match");
 * never contains anything from the request or a secret. Never NULL. */
const char *ab_sig_result_message(enum ab_sig_result r);

/* Whether given equals expected, in time independent of both their contents and their
 * lengths (both are hashed with SHA-256, then the digests compared). A NULL or empty given
 * is false, and an empty (or NULL) expected never matches: an unset secret is no secret. */
bool ab_shared_secret_valid(const char *expected, const char *given);

/* An allowlist of client networks. Immutable after creation: threads share it without
 * locking. */
struct ab_cidr_list;

/* Creates the list from a JSON array of strings, each a CIDR or a single address
 * ("192.168.1.0/24", "10.0.0.1", "2001:db8::/32", "::1"), parsed as netguard parses its
 * allow list (ab_net_parse): host bits below the prefix are masked off, no spaces, no
 * brackets, no zone ids.
 * @returns AB_OK with *out, to be freed with ab_cidr_list_free; or *out NULL when array is
 *          NULL, JSON null or [] - no allowlist, which callers (and ab_cidr_list_contains)
 *          treat as allowing every address. AB_ERR_CONFIG, with *out NULL and errstr
 *          (may be NULL) naming the entry by index and text, when array is not an array or
 *          an entry is not a string or not an address/CIDR. */
enum ab_err ab_cidr_list_new(const json_t *array, struct ab_cidr_list **out, char *errstr,
                             size_t errstr_size);
/* NULL is a no-op. */
void ab_cidr_list_free(struct ab_cidr_list *l);

/* Whether the client address addr (AF_INET or AF_INET6, len bytes; the port is ignored) is
 * in one of l's networks. An IPv4-mapped IPv6 address (::ffff:a.b.c.d, which a dual-stack
 * socket reports for an IPv4 client) is matched against the IPv4 entries as a.b.c.d, and
 * against IPv6 entries as written; other IPv6 forms that carry an IPv4 address (6to4,
 * NAT64) are not unwrapped: on an incoming connection they are IPv6 clients. l NULL (no
 * allowlist) contains every address; otherwise an unreadable addr (NULL, too short, other
 * family) is in nothing. */
bool ab_cidr_list_contains(const struct ab_cidr_list *l, const struct sockaddr *addr,
                           socklen_t len);

/* The same for a textual address (inet_pton forms: no port, brackets or zone id); text that
 * is not an address is in nothing, unless l is NULL. */
bool ab_cidr_list_contains_text(const struct ab_cidr_list *l, const char *address);

/* Counts failed authentications per source (a client address as text) and blocks a source
 * that failed max_failures times within a fixed window: its first failure starts a window
 * of window_ms, and when the window has passed the count starts again from the next
 * failure. A success resets nothing; a blocked source is refused before its secret is
 * looked at, so its window is not extended either. Thread-safe (one mutex).
 *
 * Memory is fixed at creation: at most max_sources sources are tracked. A failure from a
 * new source when the table is full evicts the source whose window started first, which is
 * an expired one whenever any has expired. So a blocked source is evicted only in favour
 * of a source whose window started later, and only after every source whose window started
 * before its own has been evicted: an attacker who fails from more new addresses than
 * max_sources within one window can free its blocked addresses early (each eviction costs
 * it a failure from a new address, which is then counted in turn), but can never grow
 * memory. Choose max_sources above the number of addresses a guesser is expected to have.
 * Sources are compared by their first 63 bytes (an address has at most 45). */
struct ab_auth_limiter;

/* @returns the limiter (ab_auth_limiter_free), or NULL when max_failures < 1,
 *          window_ms < 1, max_sources < 1 or max_sources > 1 << 20. */
struct ab_auth_limiter *ab_auth_limiter_new(int max_failures, int64_t window_ms,
                                            size_t max_sources);
/* NULL is a no-op. */
void ab_auth_limiter_free(struct ab_auth_limiter *l);

/* Whether key has had max_failures failures in its current window, at now_ms (any clock,
 * the same for every call; ab_monotonic_ms suits). If so the request is to be refused
 * (429) without checking its secret, and *retry_after_ms (may be NULL) gets the
 * milliseconds until the window ends (at least 1); otherwise it gets 0. A NULL limiter
 * or key blocks nothing. */
bool ab_auth_limiter_blocked(struct ab_auth_limiter *l, const char *key, int64_t now_ms,
                             int64_t *retry_after_ms);

/* Counts one failed authentication of key at now_ms. NULL limiter or key: no-op. */
void ab_auth_limiter_fail(struct ab_auth_limiter *l, const char *key, int64_t now_ms);

#endif
