/* Hashes, comparisons and signatures for secrets (OpenSSL's libcrypto underneath), and the
 * base64 the signatures are written in. */
#ifndef AB_CRYPTO_H
#define AB_CRYPTO_H

#include <stdbool.h>
#include <stddef.h>

#include "common/errors.h"
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

/* HMAC-SHA256 (RFC 2104) of msg under key into out (32 bytes). key and msg may be NULL when
 * their length is 0. */
void ab_hmac_sha256(const void *key, size_t key_len, const void *msg, size_t msg_len,
                    unsigned char out[32]);

/* Standard base64 (RFC 4648 section 4, with padding) of data.
 * @returns a NUL-terminated string the caller frees (allocation aborts on OOM). */
char *ab_base64_encode(const void *data, size_t len);

/* Decodes standard base64: padding optional (but if present, complete), no whitespace, no
 * URL-safe alphabet. Unused low bits of the last character are ignored, as most decoders do
 * (Go's and Python's among them), so a secret another library accepts is accepted here.
 * @returns the bytes, which the caller frees, with *len (may be NULL) set to their number;
 *          NULL for invalid input or NULL text (*len untouched). "" decodes to 0 bytes. */
unsigned char *ab_base64_decode(const char *text, size_t *len);

/* "v1," + 44 characters of base64 + NUL. */
#define AB_WEBHOOK_SIGNATURE_MAX 48

/* The Standard Webhooks (standardwebhooks.com, Svix) v1 signature of a message:
 * "v1," + base64(HMAC-SHA256(key, msg_id "." timestamp "." body)), where key is the
 * base64 decoding of secret after an optional "whsec_" prefix; timestamp is in Unix seconds.
 * Goes into the webhook-signature header beside webhook-id and webhook-timestamp, which
 * must carry the same msg_id and timestamp. body may be NULL when body_len is 0.
 * @returns AB_OK with the signature in out, or AB_ERR_INVALID with out "" when secret is
 *          not base64 or decodes to nothing (an empty key signs nothing: anyone could),
 *          msg_id contains '.' (the signed text would be ambiguous), an argument is NULL,
 *          or out_size < AB_WEBHOOK_SIGNATURE_MAX. */
enum ab_err ab_webhook_sign(const char *secret, const char *msg_id, long long timestamp,
                            const void *body, size_t body_len, char *out, size_t out_size);

/* 44 characters of base64 + NUL. */
#define AB_FEISHU_SIGNATURE_MAX 45

/* The signature of a Feishu/Lark custom bot message (its "sign" field, sent with
 * "timestamp" in Unix seconds): base64(HMAC-SHA256(key = "<timestamp>\n<secret>",
 * message = empty)). Feishu puts the secret in the key and signs nothing, which is odd but
 * what its servers check. NULL secret counts as "". out gets "" when out_size is less than
 * AB_FEISHU_SIGNATURE_MAX: a cut signature is only a wrong one. */
void ab_feishu_bot_sign(long long timestamp, const char *secret, char *out, size_t out_size);

/* Whether secret is a usable Standard Webhooks secret: "whsec_" followed by the base64 of
 * 24 to 64 bytes (the spec's range: at least 192 bits, at most one SHA-256 block). */
bool ab_webhook_secret_valid(const char *secret);

#endif
