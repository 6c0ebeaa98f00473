/* Tests for common/envelope: new events, the serialize -> parse round trip, every way
 * ab_event_parse must refuse a message, and random mutations of a valid envelope (run
 * under ASan, an out-of-bounds read there fails the test). */
#include "test.h"

#include "common/envelope.h"
#include "common/util.h"

#include <stdint.h>

static bool is_uuid_v4(const char *s)
{
    if (s == NULL || strlen(s) != AB_UUID_LEN)
        return false;
    for (int i = 0; i < AB_UUID_LEN; i++) {
        if (i == 8 || i == 13 || i == 18 || i == 23) {
            if (s[i] != '-')
                return false;
        } else if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f'))) {
            return false;
        }
    }
    return s[14] == '4' && strchr("89ab", s[19]) != NULL;
}

/* Parses text (copied into a buffer of exactly its length, no NUL after it, so ASan sees
 * any read past the end). */
static enum ab_err parse_exact(const char *text, size_t len, struct ab_event **ev, char *err,
                               size_t size)
{
    char *copy = malloc(len ? len : 1);
    REQUIRE(copy != NULL);
    memcpy(copy, text, len);
    err[0] = '\0';
    *ev = (struct ab_event *)(uintptr_t)1; /* must be overwritten either way */
    enum ab_err rc = ab_event_parse(copy, len, ev, err, size);
    free(copy);
    return rc;
}

static enum ab_err parse_text(const char *text, struct ab_event **ev, char *err, size_t size)
{
    return parse_exact(text, strlen(text), ev, err, size);
}

/* Expects text to be refused with code, the error mentioning `what`. */
static void expect_rejected(int line, const char *text, enum ab_err code, const char *what)
{
    struct ab_event *ev;
    char err[256];
    enum ab_err rc = parse_text(text, &ev, err, sizeof(err));
    if (rc != code || ev != NULL || strstr(err, what) == NULL)
        ab_test_fail(__FILE__, line, "%s: got %d (%s), error \"%s\", wanted %d and \"%s\"", text,
                     (int)rc, ev ? "an event" : "no event", err, (int)code, what);
    if (rc == AB_OK && ev != NULL && ev != (struct ab_event *)(uintptr_t)1)
        ab_event_free(ev);
}

#define VALID_HEAD "\"specversion\":\"1.0\",\"id\":\"e-1\",\"type\":\"t\",\"source\":\"/s\""

TEST(envelope_new_sets_id_time_and_content_type)
{
    json_t *data = json_pack("{s:s}", "text", "hi");
    int64_t before = ab_wall_ms();
    struct ab_event *ev = ab_event_new("agentbus.message.received", "/ingress", NULL, data);
    int64_t after = ab_wall_ms();
    REQUIRE(ev != NULL);
    CHECK(is_uuid_v4(ev->id));
    CHECK_STR_EQ(ev->type, "agentbus.message.received");
    CHECK_STR_EQ(ev->source, "/ingress");
    CHECK(ev->subject == NULL);
    CHECK(ev->traceparent == NULL);
    CHECK(ev->extensions == NULL);
    CHECK_STR_EQ(ev->datacontenttype, "application/json");
    CHECK(ev->data == data); /* stolen, not copied */
    CHECK_INT_EQ(data->refcount, 1);
    /* "2026-11-21T08:58:45.123Z" */
    REQUIRE(ev->time != NULL);
    CHECK_INT_EQ(strlen(ev->time), 24);
    CHECK(ev->time[10] == 'T' && ev->time[19] == '.' && ev->time[23] == 'Z');
    int64_t ms = 0;
    CHECK(ab_time_parse_rfc3339(ev->time, &ms));
    CHECK(ms >= before - 1 && ms <= after + 1);

    struct ab_event *other = ab_event_new("t", "/s", "subj", NULL);
    REQUIRE(other != NULL);
    CHECK(strcmp(ev->id, other->id) != 0);
    CHECK_STR_EQ(other->subject, "subj");
    CHECK(other->data == NULL);
    ab_event_free(other);
    ab_event_free(ev);
    ab_event_free(NULL);
}

TEST(envelope_serialize_has_cloudevents_attributes)
{
    struct ab_event *ev = ab_event_new("agentbus.test", "/unit", NULL, NULL);
    REQUIRE(ev != NULL);
    size_t len = 0;
    char *text = ab_event_serialize(ev, &len);
    REQUIRE(text != NULL);
    CHECK_INT_EQ(len, strlen(text));
    CHECK(strchr(text, '\n') == NULL && strchr(text, ' ') == NULL); /* compact */
    json_error_t jerr;
    json_t *j = json_loads(text, 0, &jerr);
    REQUIRE(json_is_object(j));
    CHECK_STR_EQ(json_string_value(json_object_get(j, "specversion")), "1.0");
    CHECK_STR_EQ(json_string_value(json_object_get(j, "id")), ev->id);
    CHECK_STR_EQ(json_string_value(json_object_get(j, "type")), "agentbus.test");
    CHECK_STR_EQ(json_string_value(json_object_get(j, "source")), "/unit");
    CHECK_STR_EQ(json_string_value(json_object_get(j, "time")), ev->time);
    CHECK_STR_EQ(json_string_value(json_object_get(j, "datacontenttype")), "application/json");
    /* Absent optional attributes are left out, not written as null. */
    CHECK(json_object_get(j, "data") == NULL);
    CHECK(json_object_get(j, "subject") == NULL);
    CHECK(json_object_get(j, "traceparent") == NULL);
    CHECK_INT_EQ(json_object_size(j), 6);
    json_decref(j);
    free(text);

    /* Without a length pointer, too. */
    text = ab_event_serialize(ev, NULL);
    CHECK(text != NULL);
    free(text);
    ab_event_free(ev);
}

TEST(envelope_round_trip_preserves_every_attribute)
{
    json_t *data = json_loads("{\"text\":\"héllo \\\"quoted\\\"\\n\",\"n\":-12,\"f\":1.5,"
                              "\"ok\":true,\"none\":null,\"list\":[1,\"two\",[3],{\"four\":4}],"
                              "\"nested\":{\"deep\":{\"er\":[]}}}",
                              0, NULL);
    REQUIRE(data != NULL);
    struct ab_event *ev = ab_event_new("agentbus.message.received", "/ingress/api",
                                       "conversation/42", json_incref(data));
    REQUIRE(ev != NULL);
    ab_event_set_traceparent(ev, "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01");
    ev->extensions = json_pack("{s:s,s:i,s:b}", "tenant", "acme", "attempt", 3, "replay", 1);

    size_t len = 0;
    char *text = ab_event_serialize(ev, &len);
    REQUIRE(text != NULL);
    struct ab_event *back;
    char err[256];
    REQUIRE(parse_exact(text, len, &back, err, sizeof(err)) == AB_OK);
    REQUIRE(back != NULL);
    CHECK_STR_EQ(back->id, ev->id);
    CHECK_STR_EQ(back->type, ev->type);
    CHECK_STR_EQ(back->source, ev->source);
    CHECK_STR_EQ(back->time, ev->time);
    CHECK_STR_EQ(back->subject, "conversation/42");
    CHECK_STR_EQ(back->datacontenttype, "application/json");
    CHECK_STR_EQ(back->traceparent, "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01");
    CHECK(json_equal(back->data, data));
    CHECK(json_equal(back->extensions, ev->extensions));
    CHECK_INT_EQ(json_object_size(back->extensions), 3);

    /* And serialising the parsed event gives the same text again. */
    char *again = ab_event_serialize(back, NULL);
    CHECK_STR_EQ(again, text);
    free(again);
    free(text);
    ab_event_free(back);

    /* NULL removes the traceparent. */
    ab_event_set_traceparent(ev, NULL);
    text = ab_event_serialize(ev, NULL);
    CHECK(text != NULL && strstr(text, "traceparent") == NULL);
    free(text);
    ab_event_free(ev);
    json_decref(data);
}

TEST(envelope_round_trip_data_kinds)
{
    static const char *const kinds[] = { "[1,2,{\"a\":[]}]", "\"just text\"", "\"\"", "0",
                                         "-3.25",           "false",         "null", "{}",
                                         "[]" };
    for (size_t i = 0; i < sizeof(kinds) / sizeof(kinds[0]); i++) {
        json_t *data = json_loads(kinds[i], JSON_DECODE_ANY, NULL);
        REQUIRE(data != NULL);
        struct ab_event *ev = ab_event_new("t", "/s", NULL, json_incref(data));
        REQUIRE(ev != NULL);
        char *text = ab_event_serialize(ev, NULL);
        REQUIRE(text != NULL);
        struct ab_event *back;
        char err[256];
        CHECK_INT_EQ(parse_text(text, &back, err, sizeof(err)), AB_OK);
        if (back != NULL && !json_equal(back->data, data))
            ab_test_fail(__FILE__, __LINE__, "data %s did not survive: %s", kinds[i], text);
        CHECK(back == NULL || back->extensions == NULL);
        ab_event_free(back);
        free(text);
        ab_event_free(ev);
        json_decref(data);
    }
}

TEST(envelope_parse_minimal_and_optional_attributes)
{
    struct ab_event *ev;
    char err[256];
    REQUIRE(parse_text("{" VALID_HEAD "}", &ev, err, sizeof(err)) == AB_OK);
    REQUIRE(ev != NULL);
    CHECK_STR_EQ(ev->id, "e-1");
    CHECK(ev->time == NULL && ev->subject == NULL && ev->traceparent == NULL);
    CHECK(ev->datacontenttype == NULL && ev->data == NULL && ev->extensions == NULL);
    ab_event_free(ev);

    /* Any RFC 3339 offset; extensions of several JSON types; attribute order is free. */
    REQUIRE(parse_text("{\"data\":{\"x\":1},\"time\":\"2026-11-21T10:00:00.5+02:00\","
                       "\"partitionkey\":\"c42\",\"attempt\":2," VALID_HEAD ","
                       "\"subject\":\"\",\"datacontenttype\":\"text/plain\"}",
                       &ev, err, sizeof(err)) == AB_OK);
    REQUIRE(ev != NULL);
    CHECK_STR_EQ(ev->time, "2026-11-21T10:00:00.5+02:00");
    CHECK_STR_EQ(ev->subject, "");
    CHECK_STR_EQ(ev->datacontenttype, "text/plain");
    CHECK_INT_EQ(json_integer_value(json_object_get(ev->data, "x")), 1);
    CHECK_STR_EQ(json_string_value(json_object_get(ev->extensions, "partitionkey")), "c42");
    CHECK_INT_EQ(json_integer_value(json_object_get(ev->extensions, "attempt")), 2);
    CHECK_INT_EQ(json_object_size(ev->extensions), 2);
    ab_event_free(ev);
}

TEST(envelope_parse_rejects_bad_input)
{
    struct ab_event *ev;
    char err[256];
    CHECK_INT_EQ(parse_exact("", 0, &ev, err, sizeof(err)), AB_ERR_INVALID);
    CHECK(ev == NULL);
    CHECK_STR_CONTAINS(err, "empty");
    ev = (struct ab_event *)(uintptr_t)1;
    CHECK_INT_EQ(ab_event_parse(NULL, 10, &ev, err, sizeof(err)), AB_ERR_INVALID);
    CHECK(ev == NULL);

    expect_rejected(__LINE__, "not json", AB_ERR_INVALID, "not a JSON object");
    expect_rejected(__LINE__, "{\"id\":", AB_ERR_INVALID, "not a JSON object");
    expect_rejected(__LINE__, "[{" VALID_HEAD "}]", AB_ERR_INVALID, "not a JSON object");
    expect_rejected(__LINE__, "\"a string\"", AB_ERR_INVALID, "not a JSON object");
    expect_rejected(__LINE__, "{" VALID_HEAD "} trailing", AB_ERR_INVALID, "not a JSON object");
    expect_rejected(__LINE__, "{" VALID_HEAD "}{}", AB_ERR_INVALID, "not a JSON object");

    expect_rejected(__LINE__, "{\"specversion\":\"1.0\",\"type\":\"t\",\"source\":\"/s\"}",
                    AB_ERR_INVALID, "missing required attribute \"id\"");
    expect_rejected(__LINE__, "{\"specversion\":\"1.0\",\"id\":\"e\",\"source\":\"/s\"}",
                    AB_ERR_INVALID, "missing required attribute \"type\"");
    expect_rejected(__LINE__, "{\"specversion\":\"1.0\",\"id\":\"e\",\"type\":\"t\"}",
                    AB_ERR_INVALID, "missing required attribute \"source\"");
    expect_rejected(__LINE__,
                    "{\"specversion\":\"1.0\",\"id\":\"\",\"type\":\"t\",\"source\":\"/s\"}",
                    AB_ERR_INVALID, "\"id\" must be a non-empty string");
    expect_rejected(__LINE__,
                    "{\"specversion\":\"1.0\",\"id\":\"e\",\"type\":42,\"source\":\"/s\"}",
                    AB_ERR_INVALID, "\"type\" must be a non-empty string");
    expect_rejected(__LINE__,
                    "{\"specversion\":\"1.0\",\"id\":null,\"type\":\"t\",\"source\":\"/s\"}",
                    AB_ERR_INVALID, "\"id\"");
    expect_rejected(__LINE__,
                    "{\"specversion\":\"1.0\",\"id\":\"e\",\"type\":\"t\",\"source\":[\"/s\"]}",
                    AB_ERR_INVALID, "\"source\"");
    expect_rejected(__LINE__, "{" VALID_HEAD ",\"subject\":5}", AB_ERR_INVALID, "\"subject\"");
    expect_rejected(__LINE__, "{" VALID_HEAD ",\"traceparent\":{}}", AB_ERR_INVALID,
                    "\"traceparent\"");

    expect_rejected(__LINE__,
                    "{\"specversion\":\"0.3\",\"id\":\"e\",\"type\":\"t\",\"source\":\"/s\"}",
                    AB_ERR_INVALID, "specversion must be \"1.0\"");
    expect_rejected(__LINE__, "{\"id\":\"e\",\"type\":\"t\",\"source\":\"/s\"}", AB_ERR_INVALID,
                    "specversion");
    expect_rejected(__LINE__, "{\"specversion\":1.0,\"id\":\"e\",\"type\":\"t\",\"source\":\"/s\"}",
                    AB_ERR_INVALID, "specversion");
    expect_rejected(__LINE__,
                    "{\"specversion\":\"1.0 \",\"id\":\"e\",\"type\":\"t\",\"source\":\"/s\"}",
                    AB_ERR_INVALID, "specversion");

    expect_rejected(__LINE__, "{" VALID_HEAD ",\"time\":\"yesterday\"}", AB_ERR_INVALID,
                    "time \"yesterday\" is not an RFC 3339 timestamp");
    expect_rejected(__LINE__, "{" VALID_HEAD ",\"time\":\"\"}", AB_ERR_INVALID, "time");
    expect_rejected(__LINE__, "{" VALID_HEAD ",\"time\":\"2026-11-21T10:00:00\"}", AB_ERR_INVALID,
                    "RFC 3339");
    expect_rejected(__LINE__, "{" VALID_HEAD ",\"time\":1795251525}", AB_ERR_INVALID, "\"time\"");
    expect_rejected(__LINE__, "{" VALID_HEAD ",\"time\":\"2026-02-30T10:00:00Z\"}", AB_ERR_INVALID,
                    "RFC 3339");

    expect_rejected(__LINE__, "{" VALID_HEAD ",\"Bad-Name\":\"x\"}", AB_ERR_INVALID,
                    "\"Bad-Name\" is not a valid attribute name");
    expect_rejected(__LINE__, "{" VALID_HEAD ",\"UPPER\":\"x\"}", AB_ERR_INVALID, "\"UPPER\"");
    expect_rejected(__LINE__, "{" VALID_HEAD ",\"\":\"x\"}", AB_ERR_INVALID,
                    "not a valid attribute name");
    expect_rejected(__LINE__, "{" VALID_HEAD ",\"abcdefghijklmnopqrstu\":\"x\"}", AB_ERR_INVALID,
                    "not a valid attribute name");
    expect_rejected(__LINE__, "{" VALID_HEAD ",\"with space\":1}", AB_ERR_INVALID,
                    "not a valid attribute name");

    expect_rejected(__LINE__, "{" VALID_HEAD ",\"id\":\"e-2\"}", AB_ERR_INVALID, "duplicate");
    expect_rejected(__LINE__, "{" VALID_HEAD ",\"data\":{\"a\":1,\"a\":2}}", AB_ERR_INVALID,
                    "duplicate");
    /* NUL inside a string would cut the id short. */
    expect_rejected(__LINE__,
                    "{\"specversion\":\"1.0\",\"id\":\"e\\u0000x\",\"type\":\"t\","
                    "\"source\":\"/s\"}",
                    AB_ERR_INVALID, "not a JSON object");
    /* Not UTF-8. */
    expect_rejected(__LINE__,
                    "{\"specversion\":\"1.0\",\"id\":\"e\xff\",\"type\":\"t\",\"source\":\"/s\"}",
                    AB_ERR_INVALID, "not a JSON object");
}

TEST(envelope_exactly_max_bytes_is_accepted_one_more_is_too_large)
{
    char *buf = malloc(AB_EVENT_MAX_BYTES + 1);
    REQUIRE(buf != NULL);
    const char *head = "{" VALID_HEAD ",\"data\":\"";
    size_t head_len = strlen(head);
    /* {head + padding + "}: exactly AB_EVENT_MAX_BYTES bytes */
    memcpy(buf, head, head_len);
    memset(buf + head_len, 'x', AB_EVENT_MAX_BYTES - head_len - 2);
    memcpy(buf + AB_EVENT_MAX_BYTES - 2, "\"}", 2);
    struct ab_event *ev;
    char err[256];
    CHECK_INT_EQ(parse_exact(buf, AB_EVENT_MAX_BYTES, &ev, err, sizeof(err)), AB_OK);
    REQUIRE(ev != NULL);
    CHECK_INT_EQ(json_string_length(ev->data), AB_EVENT_MAX_BYTES - head_len - 2);
    ab_event_free(ev);

    memcpy(buf + AB_EVENT_MAX_BYTES - 2, "x\"}", 3);
    CHECK_INT_EQ(parse_exact(buf, AB_EVENT_MAX_BYTES + 1, &ev, err, sizeof(err)), AB_ERR_TOO_LARGE);
    CHECK(ev == NULL);
    CHECK_STR_CONTAINS(err, "1048577 bytes is over the 1048576 byte limit");
    /* The size check comes first: even garbage that large is "too large". */
    memset(buf, 0xff, AB_EVENT_MAX_BYTES + 1);
    CHECK_INT_EQ(parse_exact(buf, AB_EVENT_MAX_BYTES + 1, &ev, err, sizeof(err)), AB_ERR_TOO_LARGE);
    free(buf);
}

TEST(envelope_small_error_buffer)
{
    struct ab_event *ev;
    char err[8];
    CHECK_INT_EQ(parse_text("{" VALID_HEAD ",\"time\":\"yesterday\"}", &ev, err, sizeof(err)),
                 AB_ERR_INVALID);
    CHECK_INT_EQ(strlen(err), sizeof(err) - 1);
    CHECK_INT_EQ(parse_text("nope", &ev, err, sizeof(err)), AB_ERR_INVALID);
    CHECK_INT_EQ(strlen(err), sizeof(err) - 1);
}

/* A small deterministic generator, so a failing mutation can be replayed. */
static uint64_t rng_state = 0x9e3779b97f4a7c15ull;

static uint64_t rng(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return rng_state;
}

#define FUZZ_ROUNDS 20000

TEST(envelope_fuzz_mutations_never_crash)
{
    json_t *data = json_loads("{\"text\":\"héllo wörld\",\"n\":[1,2.5,-3e2,true,null],"
                              "\"o\":{\"k\":\"\\u00e9\\ud83d\\ude00\"}}",
                              0, NULL);
    REQUIRE(data != NULL);
    struct ab_event *ev = ab_event_new("agentbus.message.received", "/ingress", "conv/1", data);
    REQUIRE(ev != NULL);
    ab_event_set_traceparent(ev, "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01");
    ev->extensions = json_pack("{s:s,s:i}", "tenant", "acme", "attempt", 1);
    size_t base_len = 0;
    char *base = ab_event_serialize(ev, &base_len);
    REQUIRE(base != NULL);
    ab_event_free(ev);

    int parsed = 0, rejected = 0;
    char *buf = malloc(base_len * 2 + 16);
    REQUIRE(buf != NULL);
    for (int round = 0; round < FUZZ_ROUNDS; round++) {
        size_t len = base_len;
        memcpy(buf, base, len);
        int mutations = 1 + (int)(rng() % 4);
        for (int m = 0; m < mutations && len > 0; m++) {
            size_t at = rng() % len;
            switch (rng() % 6) {
            case 0: /* flip a bit */
                buf[at] = (char)(buf[at] ^ (1u << (rng() % 8)));
                break;
            case 1: /* truncate */
                len = at;
                break;
            case 2: /* replace with any byte */
                buf[at] = (char)(rng() & 0xff);
                break;
            case 3: /* delete a byte */
                memmove(buf + at, buf + at + 1, len - at - 1);
                len--;
                break;
            case 4: /* insert a structural byte */
                if (len < base_len * 2) {
                    static const char structural[] = "{}[]\",:\\0a \x80";
                    memmove(buf + at + 1, buf + at, len - at);
                    buf[at] = structural[rng() % (sizeof(structural) - 1)];
                    len++;
                }
                break;
            case 5: /* duplicate a chunk (can repeat keys) */
                if (len + 16 <= base_len * 2) {
                    size_t from = rng() % len, n = 1 + rng() % 16;
                    if (from + n > len)
                        n = len - from;
                    memmove(buf + at + n, buf + at, len - at);
                    memmove(buf + at, buf + (from >= at ? from + n : from), n);
                    len += n;
                }
                break;
            }
        }
        char err[256];
        struct ab_event *out;
        enum ab_err rc = parse_exact(buf, len, &out, err, sizeof(err));
        if (rc == AB_OK) {
            parsed++;
            REQUIRE(out != NULL && out->id && out->type && out->source);
            /* Whatever is accepted must serialise and parse again. */
            char *again = ab_event_serialize(out, NULL);
            REQUIRE(again != NULL);
            struct ab_event *twice;
            if (parse_text(again, &twice, err, sizeof(err)) != AB_OK)
                ab_test_fail(__FILE__, __LINE__, "round %d: re-parse failed: %s: %s", round, err,
                             again);
            else
                ab_event_free(twice);
            free(again);
            ab_event_free(out);
        } else {
            rejected++;
            if ((rc != AB_ERR_INVALID && rc != AB_ERR_TOO_LARGE) || out != NULL ||
                err[0] == '\0') {
                ab_test_fail(__FILE__, __LINE__, "round %d: code %d, error \"%s\"", round,
                             (int)rc, err);
                break;
            }
        }
    }
    /* The mutations are neither all harmless nor all fatal, or they test nothing. */
    CHECK(parsed > 100);
    CHECK(rejected > FUZZ_ROUNDS / 2);
    free(buf);
    free(base);
}
