/* Hashes and comparisons for secrets (OpenSSL's libcrypto underneath). */
#ifndef AB_CRYPTO_H
#define AB_CRYPTO_H

#include <stdbool.h>
#include <stddef.h>

/* SHA-256 of data as 64 lower-case hex digits and a NUL. */
void ab_sha256_hex(const void *data, size_t len, char out[65]);

/* Compares two secrets in time that depends on neither their contents nor where they
 * differ (both are hashed first, so not on their lengths either). NULL equals nothing. */
bool ab_secret_equal(const char *a, const char *b);

#endif
