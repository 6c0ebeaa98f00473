/* Hashes and comparisons for secrets (OpenSSL's libcrypto underneath). */
#ifndef AB_CRYPTO_H
#define AB_CRYPTO_H

#include <stdbool.h>
#include <stddef.h>

#include "common/util.h"

/* SHA-256 of data as 64 lower-case hex digits and a NUL. */
void ab_sha256_hex(const void *data, size_t len, char out[65]);

/* Compares two secrets in time that depends on neither their contents nor where they
 * differ (both are hashed first, so not on their lengths either). NULL equals nothing. */
bool ab_secret_equal(const char *a, const char *b);

/* A name-based UUID: the first 16 bytes of SHA-256(name) with the version and variant
 * bits placed as in UUIDv5 (RFC 9562 section 5.5), but version 8, the number RFC 9562
 * gives hash-based UUIDs that do not use SHA-1 (its appendix B.2 does exactly this).
 * The same name always gives the same id, which is what makes a redelivered or retried
 * event the same event downstream: callers pick names that say what the id stands for,
 * e.g. "<event id>:llm" or "send:<agent id>:<message id>". Lower-case text, NUL-terminated. */
void ab_uuid_derive(const char *name, char out[AB_UUID_LEN + 1]);

#endif
