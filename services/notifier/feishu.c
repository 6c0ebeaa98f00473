/* The Feishu/Lark wire format and the meaning of its answers (feishu.h). */
#include "services/notifier/feishu.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/crypto.h"

enum notify_feishu_verdict notify_feishu_classify(long status, long code)
{
    if (code == 0 && status >= 200 && status < 300)
        return NOTIFY_FEISHU_SENT;
    if (code == NOTIFY_FEISHU_TOKEN_INVALID)
        return NOTIFY_FEISHU_TOKEN;
    if (status == 429 || code == NOTIFY_FEISHU_RATE_LIMITED ||
        code == NOTIFY_FEISHU_FREQUENCY_LIMITED)
        return NOTIFY_FEISHU_THROTTLED;
    switch (code) {
    case 230049: /* the message is being sent (same uuid in flight) */
    case 11232:  /* create message: trigger rate limit (custom bots too) */
    case 11233:
    case 11247:
    case 18121: /* create request is being processed */
    case 1:     /* internal error */
        return NOTIFY_FEISHU_RETRY;
    default:
        break;
    }
    /* No code: not Feishu's JSON (a proxy's page, a cut body): judge by the status. */
    if (code < 0 || code == 0)
        return status >= 500 || status == 408 || status == 0 ? NOTIFY_FEISHU_RETRY
                                                             : NOTIFY_FEISHU_REJECTED;
    if (status >= 500)
        return NOTIFY_FEISHU_RETRY;
    return NOTIFY_FEISHU_REJECTED;
}

char *notify_feishu_send_body(const char *receive_id, const char *text, const char *uuid)
{
    json_t *content = json_pack("{s:s}", "text", text);
    char *content_text = content ? json_dumps(content, JSON_COMPACT) : NULL;
    json_decref(content);
    if (content_text == NULL)
        return NULL;
    json_t *body = json_pack("{s:s, s:s, s:s, s:s}", "receive_id", receive_id, "msg_type", "text",
                             "content", content_text, "uuid", uuid);
    free(content_text);
    char *out = body ? json_dumps(body, JSON_COMPACT) : NULL;
    json_decref(body);
    return out;
}

char *notify_feishu_token_body(const char *app_id, const char *app_secret)
{
    json_t *body = json_pack("{s:s, s:s}", "app_id", app_id, "app_secret", app_secret);
    char *out = body ? json_dumps(body, JSON_COMPACT) : NULL;
    json_decref(body);
    return out;
}

void notify_feishu_read_answer(const char *body, size_t len, long *code, char *msg_out,
                               size_t msg_size, char *id_out, size_t id_size)
{
    json_t *root = body ? json_loadb(body, len, 0, NULL) : NULL;
    json_t *c = json_object_get(root, "code");
    *code = json_is_integer(c) ? (long)json_integer_value(c) : -1;
    if (msg_out != NULL && msg_size > 0)
        snprintf(msg_out, msg_size, "%s", json_string_value(json_object_get(root, "msg")) ?: "");
    if (id_out != NULL && id_size > 0) {
        const char *id =
            json_string_value(json_object_get(json_object_get(root, "data"), "message_id"));
        snprintf(id_out, id_size, "%s", id ? id : "");
    }
    json_decref(root);
}

bool notify_feishu_read_token(const char *body, size_t len, char *token_out, size_t token_size,
                              long *expire_s)
{
    json_t *root = body ? json_loadb(body, len, 0, NULL) : NULL;
    const char *token = json_string_value(json_object_get(root, "tenant_access_token"));
    json_t *expire = json_object_get(root, "expire");
    bool ok = json_integer_value(json_object_get(root, "code")) == 0 &&
              json_is_integer(json_object_get(root, "code")) && token != NULL && token[0] != '\0' &&
              strlen(token) < token_size && json_is_integer(expire) &&
              json_integer_value(expire) > 0;
    if (ok) {
        snprintf(token_out, token_size, "%s", token);
        *expire_s = (long)json_integer_value(expire);
    }
    json_decref(root);
    return ok;
}

int64_t notify_feishu_token_use_ms(long expire_s)
{
    if (expire_s >= 600)
        return (int64_t)(expire_s - 300) * 1000;
    return (int64_t)expire_s * 500;
}

char *notify_feishu_bot_body(const char *text, const char *secret, long long timestamp_s)
{
    json_t *body = json_pack("{s:s, s:{s:s}}", "msg_type", "text", "content", "text", text);
    if (body != NULL && secret != NULL && secret[0] != '\0') {
        char ts[24], sign[64];
        snprintf(ts, sizeof(ts), "%lld", timestamp_s);
        ab_feishu_bot_sign(timestamp_s, secret, sign, sizeof(sign));
        json_object_set_new(body, "timestamp", json_string(ts));
        json_object_set_new(body, "sign", json_string(sign));
    }
    char *out = body ? json_dumps(body, JSON_COMPACT) : NULL;
    json_decref(body);
    return out;
}
