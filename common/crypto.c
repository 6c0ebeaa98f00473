/* Secret handling on libcrypto. */
#include "common/crypto.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <string.h>

#include "common/util.h"

static void sha256(const void *data, size_t len, unsigned char out[32])
{
    unsigned int n = 0;
    EVP_Digest(data, len, out, &n, EVP_sha256(), NULL);
}

void ab_sha256_hex(const void *data, size_t len, char out[65])
{
    unsigned char digest[32];
    sha256(data, len, digest);
    ab_hex(digest, sizeof(digest), out);
}

bool ab_secret_equal(const char *a, const char *b)
{
    unsigned char da[32], db[32];
    if (a == NULL || b == NULL)
        return false;
    sha256(a, strlen(a), da);
    sha256(b, strlen(b), db);
    return CRYPTO_memcmp(da, db, sizeof(da)) == 0;
}

void ab_uuid_derive(const char *name, char out[AB_UUID_LEN + 1])
{
    unsigned char b[32];
    sha256(name, strlen(name), b);
    b[6] = (unsigned char)((b[6] & 0x0f) | 0x80); /* version 8: custom (here SHA-256) */
    b[8] = (unsigned char)((b[8] & 0x3f) | 0x80); /* RFC 4122/9562 variant 10xx */
    snprintf(out, AB_UUID_LEN + 1,
             "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", b[0], b[1],
             b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11], b[12], b[13], b[14],
             b[15]);
}
