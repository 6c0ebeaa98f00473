/* Tests for common/crypto's signing helpers: HMAC-SHA256 (RFC 4231 vectors), base64 (RFC
 * 4648 vectors, round trips, every kind of invalid input), Standard Webhooks v1 signatures
 * and secrets, and Feishu/Lark custom bot signatures, against the vectors their documents
 * publish. (SHA-256, secret comparison and derived UUIDs are in test_util.c.) */
#include "test.h"

#include "common/crypto.h"
#include "common/util.h"

/* The vector from the Standard Webhooks specification and its reference libraries. */
#define WH_SECRET    "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
#define WH_ID        "msg_p5jXN8AQM9LWM0D4loKWxJek"
#define WH_TIMESTAMP 1614265330LL
#define WH_BODY      "{\"test\": 2432232314}"
#define WH_SIGNATURE "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="

/* HMAC of msg under key as hex. */
static void hmac_hex(const void *key, size_t key_len, const void *msg, size_t msg_len, char out[65])
{
    unsigned char mac[32];
    memset(mac, 0xee, sizeof(mac));
    ab_hmac_sha256(key, key_len, msg, msg_len, mac);
    ab_hex(mac, sizeof(mac), out);
}

TEST(crypto_hmac_sha256_rfc4231)
{
    char hex[65];
    /* Test case 1. */
    unsigned char key1[20];
    memset(key1, 0x0b, sizeof(key1));
    hmac_hex(key1, sizeof(key1), "Hi There", 8, hex);
    CHECK_STR_EQ(hex, "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7");
    /* Test case 2. */
    const char *msg = "what do ya want for nothing?";
    hmac_hex("Jefe", 4, msg, strlen(msg), hex);
    CHECK_STR_EQ(hex, "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
    /* Test case 6: a key longer than the block is hashed first. */
    unsigned char key6[131];
    memset(key6, 0xaa, sizeof(key6));
    msg = "Test Using Larger Than Block-Size Key - Hash Key First";
    hmac_hex(key6, sizeof(key6), msg, strlen(msg), hex);
    CHECK_STR_EQ(hex, "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54");
}

TEST(crypto_hmac_sha256_edges)
{
    char hex[65];
    /* Empty key and message, given as NULL or as pointers: the same MAC. */
    const char *empty = "b613679a0814d9ec772f95d778c35fc5ff1697c493715653c6c712144292c5ad";
    hmac_hex(NULL, 0, NULL, 0, hex);
    CHECK_STR_EQ(hex, empty);
    hmac_hex("", 0, "", 0, hex);
    CHECK_STR_EQ(hex, empty);
    /* Keys of exactly one block (64 bytes, used as is) and one byte more (hashed first, here
     * before libcrypto sees it): values from Python's hmac module. */
    unsigned char key[65];
    for (int i = 0; i < 65; i++)
        key[i] = (unsigned char)i;
    hmac_hex(key, 64, "abc", 3, hex);
    CHECK_STR_EQ(hex, "6ab541b4869dca71c4ca11d8bb1b02533b789a557583161429292c7404bc21f6");
    hmac_hex(key, 65, "abc", 3, hex);
    CHECK_STR_EQ(hex, "dfbffee4671bad00ed5d1e1999d55ed3b0cc774ac357f9ebf649c1612414fcec");
    /* A NUL in the message counts. */
    char a[65], b[65];
    hmac_hex("k", 1, "a\0b", 3, a);
    hmac_hex("k", 1, "a", 1, b);
    CHECK(strcmp(a, b) != 0);
}

/* Decodes text from an exactly sized heap copy (so ASan sees any read past its NUL).
 * @returns the bytes or NULL; *len as the function left it. */
static unsigned char *decode_copy(const char *text, size_t *len)
{
    size_t n = strlen(text);
    char *copy = malloc(n + 1);
    REQUIRE(copy != NULL);
    memcpy(copy, text, n + 1);
    unsigned char *out = ab_base64_decode(copy, len);
    free(copy);
    return out;
}

TEST(crypto_base64_rfc4648_vectors)
{
    static const struct {
        const char *plain, *encoded;
    } cases[] = {
        {"", ""},
        {"f", "Zg=="},
        {"fo", "Zm8="},
        {"foo", "Zm9v"},
        {"foob", "Zm9vYg=="},
        {"fooba", "Zm9vYmE="},
        {"foobar", "Zm9vYmFy"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        size_t n = strlen(cases[i].plain);
        char *enc = ab_base64_encode(cases[i].plain, n);
        CHECK_STR_EQ(enc, cases[i].encoded);
        free(enc);
        size_t len = 999;
        unsigned char *dec = decode_copy(cases[i].encoded, &len);
        REQUIRE(dec != NULL);
        CHECK_INT_EQ(len, n);
        CHECK(memcmp(dec, cases[i].plain, n) == 0);
        free(dec);
    }
    /* Every digit of the alphabet, and bytes with the high bit set. */
    const unsigned char high[] = {0xfb, 0xff, 0xbf, 0x00, 0x10, 0x83};
    char *enc = ab_base64_encode(high, sizeof(high));
    CHECK_STR_EQ(enc, "+/+/ABCD");
    free(enc);
    enc = ab_base64_encode(NULL, 0);
    CHECK_STR_EQ(enc, "");
    free(enc);
}

TEST(crypto_base64_round_trips_every_length)
{
    unsigned char data[64];
    for (size_t n = 0; n <= 64; n++) {
        ab_random_bytes(data, n);
        char *enc = ab_base64_encode(data, n);
        REQUIRE(enc != NULL);
        CHECK_INT_EQ(strlen(enc), (n + 2) / 3 * 4);
        size_t len = 999;
        unsigned char *dec = decode_copy(enc, &len);
        REQUIRE(dec != NULL);
        CHECK_INT_EQ(len, n);
        if (len == n && memcmp(dec, data, n) != 0)
            ab_test_fail(__FILE__, __LINE__, "length %zu does not round-trip", n);
        free(dec);

        /* The same without padding. */
        size_t unpadded = strlen(enc);
        while (unpadded > 0 && enc[unpadded - 1] == '=')
            unpadded--;
        CHECK(strlen(enc) - unpadded == (3 - n % 3) % 3);
        enc[unpadded] = '\0';
        len = 999;
        dec = decode_copy(enc, &len);
        REQUIRE(dec != NULL);
        CHECK_INT_EQ(len, n);
        if (len == n && memcmp(dec, data, n) != 0)
            ab_test_fail(__FILE__, __LINE__, "unpadded length %zu does not round-trip", n);
        free(dec);
        free(enc);
    }
}

TEST(crypto_base64_decode_without_padding_and_spare_bits)
{
    size_t len = 0;
    unsigned char *dec = decode_copy("Zm9vYg", &len);
    REQUIRE(dec != NULL);
    CHECK_INT_EQ(len, 4);
    CHECK(memcmp(dec, "foob", 4) == 0);
    free(dec);
    dec = decode_copy("Zm9vYmE", &len);
    REQUIRE(dec != NULL);
    CHECK_INT_EQ(len, 5);
    CHECK(memcmp(dec, "fooba", 5) == 0);
    free(dec);
    /* The unused low bits of the last digit are ignored: "Zh==" is "f" like "Zg==". */
    dec = decode_copy("Zh==", &len);
    REQUIRE(dec != NULL);
    CHECK_INT_EQ(len, 1);
    CHECK(dec[0] == 'f');
    free(dec);
    /* len may be NULL. */
    dec = decode_copy("Zm9v", NULL);
    CHECK(dec != NULL);
    free(dec);
}

TEST(crypto_base64_decode_rejects_invalid)
{
    static const char *const bad[] = {
        "Zm9v!",  /* not a digit */
        "Zm 9v",  /* no whitespace */
        "Zm9v\n", /* not even at the end */
        " Zm9v",
        "Zm9vYg==\n",
        "Zm9v\tYmFy",
        "-_-_",         /* URL-safe alphabet */
        "Zm9v\xc3\xa9", /* non-ASCII */
        "\xff\xfe\xfd\xfc",
        "Z", /* 6 bits: not a byte */
        "Zm9vY",
        "Zm9vY===",
        "Zg=", /* padding, but not complete */
        "Zm9vYg=",
        "Zg===", /* too much padding */
        "A===",
        "=",
        "==",
        "===",
        "====",
        "Zm=v", /* '=' in the middle */
        "Z=9v",
        "=m9v",
        "Zg==Zg==", /* two padded blocks */
        "Zm9v=",
        "Zm9v====",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        size_t len = 777;
        unsigned char *dec = decode_copy(bad[i], &len);
        if (dec != NULL)
            ab_test_fail(__FILE__, __LINE__, "\"%s\" was accepted (%zu bytes)", bad[i], len);
        free(dec);
        CHECK_INT_EQ(len, 777); /* untouched on failure */
    }
    size_t len = 777;
    CHECK(ab_base64_decode(NULL, &len) == NULL);
    CHECK_INT_EQ(len, 777);
}

/* Signs body under secret into a buffer filled with '#' first. @returns the result. */
static enum ab_err sign(const char *secret, const char *id, long long ts, const char *body,
                        char out[AB_WEBHOOK_SIGNATURE_MAX])
{
    memset(out, '#', AB_WEBHOOK_SIGNATURE_MAX);
    return ab_webhook_sign(secret, id, ts, body, body != NULL ? strlen(body) : 0, out,
                           AB_WEBHOOK_SIGNATURE_MAX);
}

TEST(crypto_webhook_sign_standard_webhooks_vector)
{
    char out[AB_WEBHOOK_SIGNATURE_MAX];
    CHECK_INT_EQ(sign(WH_SECRET, WH_ID, WH_TIMESTAMP, WH_BODY, out), AB_OK);
    CHECK_STR_EQ(out, WH_SIGNATURE);
    CHECK_INT_EQ(strlen(out) + 1, AB_WEBHOOK_SIGNATURE_MAX); /* the size is exact */
    /* The "whsec_" prefix is optional. */
    CHECK_INT_EQ(sign("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", WH_ID, WH_TIMESTAMP, WH_BODY, out),
                 AB_OK);
    CHECK_STR_EQ(out, WH_SIGNATURE);
    /* Any change to what is signed changes the signature. */
    CHECK_INT_EQ(sign(WH_SECRET, WH_ID, WH_TIMESTAMP + 1, WH_BODY, out), AB_OK);
    CHECK(strcmp(out, WH_SIGNATURE) != 0);
    CHECK_INT_EQ(sign(WH_SECRET, "msg_p5jXN8AQM9LWM0D4loKWxJeK", WH_TIMESTAMP, WH_BODY, out),
                 AB_OK);
    CHECK(strcmp(out, WH_SIGNATURE) != 0);
    CHECK_INT_EQ(sign(WH_SECRET, WH_ID, WH_TIMESTAMP, "{\"test\": 2432232315}", out), AB_OK);
    CHECK(strcmp(out, WH_SIGNATURE) != 0);
}

TEST(crypto_webhook_sign_other_keys_and_bodies)
{
    /* A 64-byte key (bytes 0..63), an empty body given as NULL, a negative timestamp, and a
     * body with a NUL: values from Python's hmac module. */
    const char *secret = "whsec_AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8gISIjJCUmJygpKissLS4vMD"
                         "EyMzQ1Njc4OTo7PD0+Pw==";
    char out[AB_WEBHOOK_SIGNATURE_MAX];
    CHECK_INT_EQ(ab_webhook_sign(secret, "msg_1", 0, NULL, 0, out, sizeof(out)), AB_OK);
    CHECK_STR_EQ(out, "v1,HZL6IFGXxAA5+E6GULAHVKyxB+KD+eUDyD0G8JJ0huU=");
    CHECK_INT_EQ(ab_webhook_sign(secret, "msg_1", 0, "", 0, out, sizeof(out)), AB_OK);
    CHECK_STR_EQ(out, "v1,HZL6IFGXxAA5+E6GULAHVKyxB+KD+eUDyD0G8JJ0huU=");
    CHECK_INT_EQ(sign(secret, "msg_1", -5, "x", out), AB_OK);
    CHECK_STR_EQ(out, "v1,yT+WUvfNXG9FBjvntaVOW8rFSsvTL67xgRv6L0u0wzk=");
    char a[AB_WEBHOOK_SIGNATURE_MAX], b[AB_WEBHOOK_SIGNATURE_MAX];
    CHECK_INT_EQ(ab_webhook_sign(secret, "m", 1, "x\0y", 3, a, sizeof(a)), AB_OK);
    CHECK_INT_EQ(ab_webhook_sign(secret, "m", 1, "x", 1, b, sizeof(b)), AB_OK);
    CHECK(strcmp(a, b) != 0);
    /* A larger buffer is fine. */
    char big[128];
    CHECK_INT_EQ(
        ab_webhook_sign(WH_SECRET, WH_ID, WH_TIMESTAMP, WH_BODY, strlen(WH_BODY), big, sizeof(big)),
        AB_OK);
    CHECK_STR_EQ(big, WH_SIGNATURE);
}

TEST(crypto_webhook_sign_refuses_bad_input)
{
    char out[AB_WEBHOOK_SIGNATURE_MAX];
    /* An id with '.' would make "a.b" "." ts and "a" "." "b.ts" indistinguishable. */
    CHECK_INT_EQ(sign(WH_SECRET, "msg.1", WH_TIMESTAMP, WH_BODY, out), AB_ERR_INVALID);
    CHECK_STR_EQ(out, "");
    CHECK_INT_EQ(sign(WH_SECRET, ".", WH_TIMESTAMP, WH_BODY, out), AB_ERR_INVALID);
    /* Secrets that are not base64, or decode to nothing. */
    static const char *const bad_secrets[] = {
        "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaS!",
        "whsec_MfKQ9r8G KYqrTwjUPD8ILPZIo2LaLaSw",
        "whsec_Zg=",
        "whsec_Z",
        "whsec_",
        "",
        "whsec_whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        "WHSEC_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
    };
    for (size_t i = 0; i < sizeof(bad_secrets) / sizeof(bad_secrets[0]); i++) {
        if (sign(bad_secrets[i], WH_ID, WH_TIMESTAMP, WH_BODY, out) != AB_ERR_INVALID)
            ab_test_fail(__FILE__, __LINE__, "secret \"%s\" was accepted", bad_secrets[i]);
        CHECK_STR_EQ(out, "");
    }
    CHECK_INT_EQ(sign(NULL, WH_ID, WH_TIMESTAMP, WH_BODY, out), AB_ERR_INVALID);
    CHECK_INT_EQ(sign(WH_SECRET, NULL, WH_TIMESTAMP, WH_BODY, out), AB_ERR_INVALID);
    CHECK_INT_EQ(ab_webhook_sign(WH_SECRET, WH_ID, WH_TIMESTAMP, NULL, 5, out, sizeof(out)),
                 AB_ERR_INVALID);
    CHECK_INT_EQ(ab_webhook_sign(WH_SECRET, WH_ID, WH_TIMESTAMP, "x", 1, NULL, 64), AB_ERR_INVALID);
    /* One byte too few for the signature: refused, not cut. */
    char small[AB_WEBHOOK_SIGNATURE_MAX - 1];
    memset(small, '#', sizeof(small));
    CHECK_INT_EQ(ab_webhook_sign(WH_SECRET, WH_ID, WH_TIMESTAMP, WH_BODY, strlen(WH_BODY), small,
                                 sizeof(small)),
                 AB_ERR_INVALID);
    CHECK_STR_EQ(small, "");
}

TEST(crypto_feishu_bot_sign_vector)
{
    char out[AB_FEISHU_SIGNATURE_MAX];
    memset(out, '#', sizeof(out));
    ab_feishu_bot_sign(1599360473, "demo", out, sizeof(out));
    CHECK_STR_EQ(out, "l1N0gAcBjdwBvGm1xMjOF0XSyaLRpR7tuO5dHfhAYc8=");
    CHECK_INT_EQ(strlen(out) + 1, AB_FEISHU_SIGNATURE_MAX);
    /* An empty (or NULL) secret and a negative timestamp: values from Python's hmac. */
    ab_feishu_bot_sign(1599360473, "", out, sizeof(out));
    CHECK_STR_EQ(out, "bTgbk2pXnbLSbeiYuPU4Xb5u0Ucy6Ht2YrCPIEpaI58=");
    ab_feishu_bot_sign(1599360473, NULL, out, sizeof(out));
    CHECK_STR_EQ(out, "bTgbk2pXnbLSbeiYuPU4Xb5u0Ucy6Ht2YrCPIEpaI58=");
    ab_feishu_bot_sign(-1, "x", out, sizeof(out));
    CHECK_STR_EQ(out, "yvt6b/4xhMe/r8xZGRsV5Q7x2J6z1+i5Lrw79y86brk=");
    /* A long secret is no problem for the key buffer. */
    char secret[1000];
    memset(secret, 's', sizeof(secret) - 1);
    secret[sizeof(secret) - 1] = '\0';
    ab_feishu_bot_sign(1599360473, secret, out, sizeof(out));
    CHECK_INT_EQ(strlen(out), 44);
    /* Too small a buffer gets "" rather than a cut signature; size 0 is left alone. */
    char small[AB_FEISHU_SIGNATURE_MAX - 1];
    memset(small, '#', sizeof(small));
    ab_feishu_bot_sign(1599360473, "demo", small, sizeof(small));
    CHECK_STR_EQ(small, "");
    small[0] = '#';
    ab_feishu_bot_sign(1599360473, "demo", small, 0);
    CHECK(small[0] == '#');
}

TEST(crypto_webhook_secret_valid)
{
    CHECK(ab_webhook_secret_valid(WH_SECRET)); /* 24 bytes */
    /* 24, 25 (padded and not) and 64 bytes; 23 and 65 are outside the range. */
    CHECK(ab_webhook_secret_valid("whsec_ZGVmZ2hpamtsbW5vcHFyc3R1dnd4eXp7"));
    CHECK(ab_webhook_secret_valid("whsec_ZGVmZ2hpamtsbW5vcHFyc3R1dnd4eXp7fA=="));
    CHECK(ab_webhook_secret_valid("whsec_ZGVmZ2hpamtsbW5vcHFyc3R1dnd4eXp7fA"));
    CHECK(ab_webhook_secret_valid("whsec_ZGVmZ2hpamtsbW5vcHFyc3R1dnd4eXp7fH1+f4CBgoOEhYaHiImKi4y"
                                  "Njo+QkZKTlJWWl5iZmpucnZ6foKGiow=="));
    CHECK(!ab_webhook_secret_valid("whsec_ZGVmZ2hpamtsbW5vcHFyc3R1dnd4eXo="));
    CHECK(!ab_webhook_secret_valid("whsec_ZGVmZ2hpamtsbW5vcHFyc3R1dnd4eXp7fH1+f4CBgoOEhYaHiImKi4"
                                   "yNjo+QkZKTlJWWl5iZmpucnZ6foKGio6Q="));
    /* The prefix is required here (signing tolerates its absence, a new secret must not). */
    CHECK(!ab_webhook_secret_valid("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"));
    CHECK(!ab_webhook_secret_valid("whsec:MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"));
    CHECK(!ab_webhook_secret_valid("Whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"));
    CHECK(!ab_webhook_secret_valid("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaS!"));
    CHECK(!ab_webhook_secret_valid("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw "));
    CHECK(!ab_webhook_secret_valid("whsec_"));
    CHECK(!ab_webhook_secret_valid(""));
    CHECK(!ab_webhook_secret_valid(NULL));
    /* Freshly made secrets are valid. */
    unsigned char key[32];
    ab_random_bytes(key, sizeof(key));
    char *enc = ab_base64_encode(key, sizeof(key));
    char secret[80];
    snprintf(secret, sizeof(secret), "whsec_%s", enc);
    CHECK(ab_webhook_secret_valid(secret));
    free(enc);
}
