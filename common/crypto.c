/* Secret handling on libcrypto. */
#include "common/crypto.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
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
