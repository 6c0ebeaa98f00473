/* The Feishu/Lark Open Platform as the notifier speaks it: the tenant_access_token call,
 * the im/v1 send, and what each of Feishu's answers means for a delivery. Pure functions
 * (no I/O), so every code path is unit-tested. Facts: integration-facts.md section 1. */
#ifndef NOTIFY_FEISHU_H
#define NOTIFY_FEISHU_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Feishu's code for an invalid or expired tenant_access_token: refresh once, send again. */
#define NOTIFY_FEISHU_TOKEN_INVALID 99991663L
/* The app's rate limit (also HTTP 429): wait for x-ogw-ratelimit-reset. */
#define NOTIFY_FEISHU_RATE_LIMITED 99991400L
/* A person's or a chat's frequency limit (5 a second): wait, then send again. */
#define NOTIFY_FEISHU_FREQUENCY_LIMITED 230020L
/* A custom group bot's rate limit (5 a second, 100 a minute), with HTTP 200. */
#define NOTIFY_FEISHU_BOT_RATE_LIMITED 11232L

/* What an answer to a send means. */
enum notify_feishu_verdict {
    NOTIFY_FEISHU_SENT = 0,  /* code 0 */
    NOTIFY_FEISHU_TOKEN,     /* the token is invalid: refresh it and send again once */
    NOTIFY_FEISHU_THROTTLED, /* rate limited (429, 99991400, 230020): wait, send again */
    NOTIFY_FEISHU_RETRY,     /* transient (5xx, "being sent", frequency codes): retry */
    NOTIFY_FEISHU_REJECTED,  /* permanent for this receive id (try another id type) */
};

/* Classifies an answer to POST /open-apis/im/v1/messages (or a custom bot hook, whose codes
 * come with HTTP 200): status is the HTTP status, code Feishu's code (-1 when the body had
 * none, e.g. an HTML 502 page). */
enum notify_feishu_verdict notify_feishu_classify(long status, long code);

/* The body of a text send: {"receive_id", "msg_type": "text", "content": "{\"text\":...}",
 * "uuid"}; content is JSON serialized into a string, as Feishu requires.
 * @ownership malloc'ed; NULL only for text that is not UTF-8. */
char *notify_feishu_send_body(const char *receive_id, const char *text, const char *uuid);

/* The body of the token call: {"app_id", "app_secret"}. @ownership malloc'ed. */
char *notify_feishu_token_body(const char *app_id, const char *app_secret);

/* Reads a JSON answer in one parse: *code (-1 if absent or not JSON), msg (copied into
 * msg_out) and data.message_id (into id_out, "" if absent); msg_out and id_out may be NULL. */
void notify_feishu_read_answer(const char *body, size_t len, long *code, char *msg_out,
                               size_t msg_size, char *id_out, size_t id_size);

/* Reads a token answer: the token (copied into token_out) and its lifetime in seconds.
 * @returns false unless code is 0 and both fields are there. */
bool notify_feishu_read_token(const char *body, size_t len, char *token_out, size_t token_size,
                              long *expire_s);

/* How long a token may be used from now, in ms, given the lifetime Feishu gave: until five
 * minutes before it expires (Feishu hands out a new one from 30 minutes before), or half
 * its life when it is shorter than ten minutes. */
int64_t notify_feishu_token_use_ms(long expire_s);

/* A custom bot's body: {"timestamp": "<s>", "sign": ..., "msg_type": "text", "content":
 * {"text": ...}} (content is an object here, not a string); timestamp and sign only with a
 * secret. @ownership malloc'ed. */
char *notify_feishu_bot_body(const char *text, const char *secret, long long timestamp_s);

#endif
