/* Secret handling on libcrypto: hashes, comparison, HMAC signatures, base64. */
#include "common/crypto.h"

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/params.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
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

struct part {
    const void *data;
    size_t len;
};

/* HMAC-SHA256 over the concatenation of parts, so a signed text made of pieces (id,
 * timestamp, a body of any size) is never copied into one buffer. libcrypto fails here only
 * without memory or with a broken installation; like ab_xmalloc, that aborts (a signature
 * cannot be skipped, and a void API cannot report it). */
static void hmac_parts(const void *key, size_t key_len, const struct part *parts, size_t n,
                       unsigned char out[32])
{
    static const unsigned char no_key[1];
    unsigned char hashed_key[32];
    /* RFC 2104 hashes a key longer than the block (64 bytes) itself; doing it here gives the
     * same MAC and keeps key_len within the int that libcrypto's HMAC stores it in. */
    if (key_len > 64) {
        sha256(key, key_len, hashed_key);
        key = hashed_key;
        key_len = sizeof(hashed_key);
    }
    char digest[] = "SHA256";
    OSSL_PARAM params[] = {OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, digest, 0),
                           OSSL_PARAM_construct_end()};
    EVP_MAC *mac = EVP_MAC_fetch(NULL, "HMAC", NULL);
    EVP_MAC_CTX *ctx = mac != NULL ? EVP_MAC_CTX_new(mac) : NULL;
    /* A NULL key would mean "keep the previous key" to EVP_MAC_init, and there is none. */
    int ok = ctx != NULL && EVP_MAC_init(ctx, key != NULL ? key : no_key, key_len, params);
    for (size_t i = 0; ok && i < n; i++)
        ok = parts[i].len == 0 || EVP_MAC_update(ctx, parts[i].data, parts[i].len);
    size_t out_len = 0;
    ok = ok && EVP_MAC_final(ctx, out, &out_len, 32) && out_len == 32;
    EVP_MAC_CTX_free(ctx);
    EVP_MAC_free(mac);
    OPENSSL_cleanse(hashed_key, sizeof(hashed_key));
    if (!ok) {
        fputs("HMAC-SHA256 failed in libcrypto\n", stderr);
        abort();
    }
}

void ab_hmac_sha256(const void *key, size_t key_len, const void *msg, size_t msg_len,
                    unsigned char out[32])
{
    struct part whole = {msg, msg_len};
    hmac_parts(key, key_len, &whole, 1, out);
}

static const char base64_digits[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/* The encoded length of len bytes, without the NUL. */
static size_t base64_len(size_t len)
{
    return 4 * (len / 3 + (len % 3 != 0));
}

/* Writes the base64 of len bytes and a NUL into out (base64_len(len) + 1 bytes). */
static void base64_into(const unsigned char *in, size_t len, char *out)
{
    for (; len >= 3; in += 3, len -= 3) {
        uint32_t v = (uint32_t)in[0] << 16 | (uint32_t)in[1] << 8 | in[2];
        *out++ = base64_digits[v >> 18];
        *out++ = base64_digits[(v >> 12) & 63];
        *out++ = base64_digits[(v >> 6) & 63];
        *out++ = base64_digits[v & 63];
    }
    if (len > 0) {
        uint32_t v = (uint32_t)in[0] << 16 | (len == 2 ? (uint32_t)in[1] << 8 : 0);
        *out++ = base64_digits[v >> 18];
        *out++ = base64_digits[(v >> 12) & 63];
        *out++ = len == 2 ? base64_digits[(v >> 6) & 63] : '=';
        *out++ = '=';
    }
    *out = '\0';
}

char *ab_base64_encode(const void *data, size_t len)
{
    if (len / 3 >= (SIZE_MAX - 1) / 4 - 1) { /* the length would overflow: cannot allocate */
        fputs("ab_base64_encode: input too large\n", stderr);
        abort();
    }
    char *out = ab_xmalloc(base64_len(len) + 1);
    base64_into(data, len, out);
    return out;
}

/* The value of a base64 digit, or -1. */
static int base64_value(char c)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == '+')
        return 62;
    if (c == '/')
        return 63;
    return -1;
}

unsigned char *ab_base64_decode(const char *text, size_t *len)
{
    if (text == NULL)
        return NULL;
    size_t n = strlen(text), pad = 0;
    while (pad < n && text[n - 1 - pad] == '=')
        pad++;
    /* Padding is all or nothing: "QQ==" and "QQ", not "QQ=". */
    if (pad > 2 || (pad > 0 && n % 4 != 0))
        return NULL;
    size_t digits = n - pad;
    if (digits % 4 == 1) /* 6 bits cannot end a byte */
        return NULL;
    size_t out_len = digits / 4 * 3 + (digits % 4 == 0 ? 0 : digits % 4 - 1);
    unsigned char *out = ab_xmalloc(out_len + 1); /* + 1: "" gives a buffer, not NULL */
    uint32_t acc = 0;
    unsigned bits = 0;
    size_t o = 0;
    for (size_t i = 0; i < digits; i++) {
        int v = base64_value(text[i]); /* an '=' before the end is refused here */
        if (v < 0) {
            free(out);
            return NULL;
        }
        acc = (acc << 6 | (uint32_t)v) & 0xfff; /* never more than 12 bits pending */
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out[o++] = (unsigned char)(acc >> bits);
        }
    }
    if (len != NULL)
        *len = o; /* == out_len */
    return out;
}

enum ab_err ab_webhook_sign(const char *secret, const char *msg_id, long long timestamp,
                            const void *body, size_t body_len, char *out, size_t out_size)
{
    if (out != NULL && out_size > 0)
        out[0] = '\0';
    if (secret == NULL || msg_id == NULL || out == NULL || out_size < AB_WEBHOOK_SIGNATURE_MAX ||
        (body == NULL && body_len > 0) || strchr(msg_id, '.') != NULL)
        return AB_ERR_INVALID;
    if (strncmp(secret, "whsec_", 6) == 0)
        secret += 6;
    size_t key_len = 0;
    unsigned char *key = ab_base64_decode(secret, &key_len);
    if (key == NULL)
        return AB_ERR_INVALID;
    if (key_len == 0) {
        free(key);
        return AB_ERR_INVALID;
    }

    char stamp[32]; /* ".<timestamp>." */
    int stamp_len = snprintf(stamp, sizeof(stamp), ".%lld.", timestamp);
    const struct part parts[] = {
        {msg_id, strlen(msg_id)}, {stamp, (size_t)stamp_len}, {body, body_len}};
    unsigned char mac[32];
    hmac_parts(key, key_len, parts, sizeof(parts) / sizeof(parts[0]), mac);
    OPENSSL_cleanse(key, key_len);
    free(key);

    memcpy(out, "v1,", 3);
    base64_into(mac, sizeof(mac), out + 3);
    return AB_OK;
}

void ab_feishu_bot_sign(long long timestamp, const char *secret, char *out, size_t out_size)
{
    if (out == NULL || out_size == 0)
        return;
    out[0] = '\0';
    if (out_size < AB_FEISHU_SIGNATURE_MAX)
        return;
    if (secret == NULL)
        secret = "";
    size_t key_size = strlen(secret) + 32; /* the timestamp, '\n' and a NUL fit in 32 */
    char *key = ab_xmalloc(key_size);
    int key_len = snprintf(key, key_size, "%lld\n%s", timestamp, secret);
    unsigned char mac[32];
    ab_hmac_sha256(key, (size_t)key_len, NULL, 0, mac);
    OPENSSL_cleanse(key, key_size);
    free(key);
    base64_into(mac, sizeof(mac), out);
}

bool ab_webhook_secret_valid(const char *secret)
{
    if (secret == NULL || strncmp(secret, "whsec_", 6) != 0)
        return false;
    size_t len = 0;
    unsigned char *key = ab_base64_decode(secret + 6, &len);
    if (key == NULL)
        return false;
    OPENSSL_cleanse(key, len);
    free(key);
    return len >= 24 && len <= 64;
}
