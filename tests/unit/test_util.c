/* Tests for common/util (ids, clocks, RFC 3339 timestamps, hex, random numbers),
 * common/crypto (SHA-256, secret comparison, derived UUIDs) and common/topics (names,
 * prefixes, DLQs). */
#include "test.h"

#include "common/crypto.h"
#include "common/topics.h"
#include "common/util.h"

#include <jansson.h>
#include <time.h>

static int compare_ids(const void *a, const void *b)
{
    return strcmp((const char *)a, (const char *)b);
}

#define UUID_COUNT 1000

TEST(util_uuid_v4_format_and_uniqueness)
{
    static char ids[UUID_COUNT][AB_UUID_LEN + 1];
    bool variants[4] = { false };
    for (int i = 0; i < UUID_COUNT; i++) {
        memset(ids[i], 'Z', sizeof(ids[i]));
        ab_uuid_v4(ids[i]);
        const char *id = ids[i];
        REQUIRE(strlen(id) == AB_UUID_LEN);
        for (int k = 0; k < AB_UUID_LEN; k++) {
            if (k == 8 || k == 13 || k == 18 || k == 23)
                CHECK(id[k] == '-');
            else
                CHECK((id[k] >= '0' && id[k] <= '9') || (id[k] >= 'a' && id[k] <= 'f'));
        }
        CHECK(id[14] == '4'); /* version */
        const char *v = strchr("89ab", id[19]);
        CHECK(v != NULL && id[19] != '\0'); /* RFC 4122 variant 10xx */
        if (v != NULL && id[19] != '\0')
            variants[v - "89ab"] = true;
    }
    /* All four variant nibbles occur in 1000 ids (each is missing with odds 0.75^1000). */
    CHECK(variants[0] && variants[1] && variants[2] && variants[3]);
    qsort(ids, UUID_COUNT, sizeof(ids[0]), compare_ids);
    for (int i = 1; i < UUID_COUNT; i++)
        CHECK(strcmp(ids[i - 1], ids[i]) != 0);
}

TEST(util_random_bytes_fill_the_buffer)
{
    unsigned char a[64], b[64];
    memset(a, 0, sizeof(a));
    memset(b, 0, sizeof(b));
    ab_random_bytes(a, sizeof(a));
    ab_random_bytes(b, sizeof(b));
    CHECK(memcmp(a, b, sizeof(a)) != 0);
    /* The last byte is written too (odds of a zero byte: 1/256 each, so check 4). */
    CHECK(a[60] | a[61] | a[62] | a[63]);
    ab_random_bytes(a, 0); /* nothing to do */
}

TEST(util_clocks)
{
    int64_t wall = ab_wall_ms();
    time_t now = time(NULL);
    CHECK(wall / 1000 >= (int64_t)now - 2 && wall / 1000 <= (int64_t)now + 2);
    int64_t m1 = ab_monotonic_ms();
    struct timespec pause = { 0, 20 * 1000 * 1000 };
    nanosleep(&pause, NULL);
    int64_t m2 = ab_monotonic_ms();
    CHECK(m2 - m1 >= 19 && m2 - m1 < 5000);
}

TEST(util_time_rfc3339_format)
{
    static const struct {
        int64_t ms;
        const char *text;
    } cases[] = {
        { 0, "1970-01-01T00:00:00.000Z" },
        { 1795251525123, "2026-11-21T08:58:45.123Z" },
        { 1709164800000, "2024-02-29T00:00:00.000Z" },
        { 999, "1970-01-01T00:00:00.999Z" },
        { 253402300799999, "9999-12-31T23:59:59.999Z" },
        /* Before the epoch the millisecond part still counts forwards. */
        { -1, "1969-12-31T23:59:59.999Z" },
        { -1000, "1969-12-31T23:59:59.000Z" },
        { -14182940000 + 250, "1969-07-20T20:17:40.250Z" },
        { -30610224000000, "1000-01-01T00:00:00.000Z" },
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char out[32];
        memset(out, 'Z', sizeof(out));
        ab_time_rfc3339(cases[i].ms, out);
        CHECK_STR_EQ(out, cases[i].text);
    }
}

TEST(util_time_round_trip)
{
    /* Deterministic spread over years 1000..9999, plus the edges. */
    uint64_t x = 88172645463325252ull;
    const int64_t lo = -30610224000000, hi = 253402300799999;
    for (int i = 0; i < 20000; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        int64_t ms = i == 0 ? lo : i == 1 ? hi : lo + (int64_t)(x % (uint64_t)(hi - lo + 1));
        char text[32];
        ab_time_rfc3339(ms, text);
        int64_t back = 0;
        if (!ab_time_parse_rfc3339(text, &back) || back != ms) {
            ab_test_fail(__FILE__, __LINE__, "%lld -> %s -> %lld", (long long)ms, text,
                         (long long)back);
            break;
        }
    }
}

/* Parses text, failing the test at `line` unless it gives `want` ms. */
static void expect_time(int line, const char *text, int64_t want)
{
    int64_t got = -12345;
    if (!ab_time_parse_rfc3339(text, &got))
        ab_test_fail(__FILE__, line, "\"%s\" was rejected", text);
    else if (got != want)
        ab_test_fail(__FILE__, line, "\"%s\" -> %lld, want %lld", text, (long long)got,
                     (long long)want);
}

TEST(util_time_parse_offsets_and_fractions)
{
    const int64_t base = 1795251525000; /* 2026-11-21T08:58:45Z */
    expect_time(__LINE__, "2026-11-21T08:58:45Z", base);
    expect_time(__LINE__, "2026-11-21t08:58:45z", base);
    expect_time(__LINE__, "2026-11-21T08:58:45+00:00", base);
    expect_time(__LINE__, "2026-11-21T08:58:45-00:00", base);
    expect_time(__LINE__, "2026-11-21T10:58:45+02:00", base);
    expect_time(__LINE__, "2026-11-21T03:28:45-05:30", base);
    expect_time(__LINE__, "2026-11-22T08:57:45+23:59", base);
    expect_time(__LINE__, "2026-11-21T00:58:45-08:00", base);
    expect_time(__LINE__, "2026-11-21T08:58:45.1Z", base + 100);
    expect_time(__LINE__, "2026-11-21T08:58:45.12Z", base + 120);
    expect_time(__LINE__, "2026-11-21T08:58:45.123Z", base + 123);
    expect_time(__LINE__, "2026-11-21T08:58:45.123999999Z", base + 123); /* truncated */
    expect_time(__LINE__, "2026-11-21T08:58:45.000000000000000000000001Z", base);
    expect_time(__LINE__, "2026-11-21T10:58:45.5+02:00", base + 500);
    expect_time(__LINE__, "2024-02-29T00:00:00Z", 1709164800000);
    expect_time(__LINE__, "1970-01-01T00:00:00Z", 0);
    expect_time(__LINE__, "1969-12-31T23:59:59.999Z", -1);
    expect_time(__LINE__, "1970-01-01T01:00:00+01:00", 0);
}

TEST(util_time_parse_rejects_malformed)
{
    static const char *const bad[] = {
        "",
        "yesterday",
        "2026-11-21T10:00:00",          /* no offset */
        "2026-11-21T10:00:00.123",      /* no offset */
        "2026-13-21T10:00:00Z",         /* month 13 */
        "2026-00-21T10:00:00Z",         /* month 0 */
        "2026-11-00T10:00:00Z",         /* day 0 */
        "2026-11-32T10:00:00Z",         /* day 32 */
        "2026-11-31T10:00:00Z",         /* November has 30 days */
        "2026-02-29T10:00:00Z",         /* not a leap year */
        "2026-02-30T10:00:00Z",
        "1900-02-29T10:00:00Z",         /* divisible by 100, not by 400 */
        "2026-04-31T10:00:00Z",
        "2026-11-21T24:00:00Z",         /* hour 24 */
        "2026-11-21T10:60:00Z",         /* minute 60 */
        "2026-11-21T10:00:61Z",         /* second 61 */
        "2026-11-21 10:00:00Z",         /* space for T */
        "2026-11-21T10:00:00Zjunk",     /* trailing garbage */
        "2026-11-21T10:00:00Z ",        /* trailing space */
        " 2026-11-21T10:00:00Z",        /* leading space */
        "2026-11-21T10:00:00+02:00x",
        "2026-11-21T10:00:00.Z",        /* dot without digits */
        "2026-11-21T10:00:00,5Z",       /* comma fraction */
        "2026-11-21T10:00:00+0200",     /* offset without colon */
        "2026-11-21T10:00:00+02",       /* offset without minutes */
        "2026-11-21T10:00:00+2:00",     /* one-digit hour */
        "2026-11-21T10:00:00+24:00",    /* offset hour 24 */
        "2026-11-21T10:00:00+02:60",    /* offset minute 60 */
        "2026-11-21T10:00:00+02:00:00",
        "2026-11-21T10:00:00UTC",
        "2026-1-21T10:00:00Z",          /* one-digit month */
        "2026-11-21T1:00:00Z",
        "+2026-11-21T10:00:00Z",
        "20261121T100000Z",             /* basic ISO 8601, not RFC 3339 */
        "2026-11-21T10:00:00\xef\xbc\xba", /* fullwidth Z */
        "2026-11-21T10:00:0",
        "2026-11-21",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        /* A copy of exactly the string, so ASan catches a read past its NUL. */
        size_t len = strlen(bad[i]);
        char *copy = malloc(len + 1);
        REQUIRE(copy != NULL);
        memcpy(copy, bad[i], len + 1);
        int64_t ms = 777;
        if (ab_time_parse_rfc3339(copy, &ms))
            ab_test_fail(__FILE__, __LINE__, "\"%s\" was accepted (%lld)", bad[i], (long long)ms);
        CHECK_INT_EQ(ms, 777); /* untouched on failure */
        free(copy);
    }
}

TEST(util_time_parse_every_prefix_is_safe)
{
    /* Every truncation of valid timestamps is rejected and read only within the string. */
    static const char *const good[] = { "2026-11-21T10:00:00.123456+05:30",
                                        "2026-11-21T10:00:00Z" };
    for (size_t g = 0; g < 2; g++) {
        size_t full = strlen(good[g]);
        for (size_t len = 0; len < full; len++) {
            char *copy = malloc(len + 1);
            REQUIRE(copy != NULL);
            memcpy(copy, good[g], len);
            copy[len] = '\0';
            int64_t ms;
            /* "....00.123456" without an offset is invalid; so is every shorter prefix. */
            if (ab_time_parse_rfc3339(copy, &ms))
                ab_test_fail(__FILE__, __LINE__, "prefix \"%s\" was accepted", copy);
            free(copy);
        }
    }
}

TEST(util_hex)
{
    const unsigned char bytes[] = { 0x00, 0x01, 0x7f, 0x80, 0xab, 0xff };
    char out[2 * sizeof(bytes) + 2];
    memset(out, '#', sizeof(out));
    ab_hex(bytes, sizeof(bytes), out);
    CHECK_STR_EQ(out, "00017f80abff");
    CHECK(out[sizeof(out) - 1] == '#'); /* nothing written past 2n+1 */
    char empty[2] = "#";
    ab_hex(bytes, 0, empty);
    CHECK_STR_EQ(empty, "");
}

TEST(util_random_unit_is_in_range)
{
    double min = 1, max = 0, sum = 0;
    const int n = 200000;
    int low_half = 0;
    for (int i = 0; i < n; i++) {
        double r = ab_random_unit();
        if (!(r >= 0.0 && r < 1.0)) {
            ab_test_fail(__FILE__, __LINE__, "ab_random_unit() = %.17g", r);
            break;
        }
        min = r < min ? r : min;
        max = r > max ? r : max;
        sum += r;
        low_half += r < 0.5;
    }
    /* Uniform: the mean is 0.5 within many standard deviations (0.00065). */
    CHECK(sum / n > 0.49 && sum / n < 0.51);
    CHECK(low_half > n * 0.48 && low_half < n * 0.52);
    CHECK(min < 0.001 && max > 0.999);
}

TEST(util_sha256_known_vectors)
{
    char out[65];
    ab_sha256_hex("abc", 3, out);
    CHECK_STR_EQ(out, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    ab_sha256_hex("", 0, out);
    CHECK_STR_EQ(out, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    const char *two_blocks = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
    ab_sha256_hex(two_blocks, strlen(two_blocks), out);
    CHECK_STR_EQ(out, "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
    char *million = malloc(1000000);
    REQUIRE(million != NULL);
    memset(million, 'a', 1000000);
    ab_sha256_hex(million, 1000000, out);
    CHECK_STR_EQ(out, "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
    free(million);
    /* Binary data with NULs: the length counts, not the first NUL. */
    char with_nul[65];
    ab_sha256_hex("a\0c", 3, with_nul);
    ab_sha256_hex("a", 1, out);
    CHECK(strcmp(with_nul, out) != 0);
}

/* Vectors computed independently (Python: the first 16 bytes of hashlib.sha256, byte 6
 * high nibble set to 8, byte 8 top bits to 10). */
TEST(util_uuid_derive_is_stable_and_well_formed)
{
    static const struct {
        const char *name;
        const char *uuid;
    } cases[] = {
        { "", "e3b0c442-98fc-8c14-9afb-f4c8996fb924" },
        { "abc", "ba7816bf-8f01-8fea-8141-40de5dae2223" },
        { "6f1c2a8e-0000-4000-8000-000000000001:llm", "84c21b1d-3e3e-839b-b4ab-a9764c209d21" },
        { "6f1c2a8e-0000-4000-8000-000000000001:notify",
          "67b73fff-31d9-8648-aa50-614b3b396319" },
    };
    char out[AB_UUID_LEN + 1], again[AB_UUID_LEN + 1];
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        memset(out, 'Z', sizeof(out));
        ab_uuid_derive(cases[i].name, out);
        CHECK_STR_EQ(out, cases[i].uuid);
        CHECK(out[14] == '8');                  /* version 8 */
        CHECK(strchr("89ab", out[19]) != NULL); /* variant 10xx */
        ab_uuid_derive(cases[i].name, again);
        CHECK_STR_EQ(again, out); /* the same name, the same id, every time */
    }
    /* Names that differ anywhere give different ids; so do the suffixes a route uses. */
    char a[AB_UUID_LEN + 1], b[AB_UUID_LEN + 1];
    ab_uuid_derive("x:llm", a);
    ab_uuid_derive("x:notify", b);
    CHECK(strcmp(a, b) != 0);
    ab_uuid_derive("x:llm ", b);
    CHECK(strcmp(a, b) != 0);
}

TEST(util_secret_equal)
{
    CHECK(ab_secret_equal("s3cret-token", "s3cret-token"));
    CHECK(ab_secret_equal("", ""));
    char copy[] = "s3cret-token"; /* equal contents, different storage */
    CHECK(ab_secret_equal(copy, "s3cret-token"));
    CHECK(!ab_secret_equal("s3cret-token", "s3cret-tokeN"));
    CHECK(!ab_secret_equal("s3cret-token", "S3cret-token"));
    CHECK(!ab_secret_equal("s3cret-token", "s3cret-token2"));
    CHECK(!ab_secret_equal("s3cret-token", "s3cret"));
    CHECK(!ab_secret_equal("", "x"));
    CHECK(!ab_secret_equal(NULL, "x"));
    CHECK(!ab_secret_equal("x", NULL));
    CHECK(!ab_secret_equal(NULL, NULL));
    CHECK(!ab_secret_equal(NULL, ""));
}

TEST(util_topic_table)
{
    CHECK(ab_topic_spec(AB_TOPIC__COUNT) == NULL);
    CHECK(ab_topic_spec((enum ab_topic)-1) == NULL);
    for (int i = 0; i < AB_TOPIC__COUNT; i++) {
        const struct ab_topic_spec *s = ab_topic_spec((enum ab_topic)i);
        REQUIRE(s != NULL && s->base != NULL);
        CHECK(strncmp(s->base, "agentbus.", 9) == 0);
        CHECK(s->partitions > 0);
        size_t len = strlen(s->base);
        bool is_dlq = len > 4 && strcmp(s->base + len - 4, ".dlq") == 0;
        /* A DLQ has no DLQ of its own; every other topic's DLQ is in the table. */
        CHECK(is_dlq == (s->dlq == NULL));
        if (s->dlq != NULL) {
            char want[128];
            snprintf(want, sizeof(want), "%s.dlq", s->base);
            CHECK_STR_EQ(s->dlq, want);
            bool found = false;
            for (int k = 0; k < AB_TOPIC__COUNT; k++)
                found = found || strcmp(ab_topic_spec((enum ab_topic)k)->base, s->dlq) == 0;
            CHECK(found);
        }
        for (int k = i + 1; k < AB_TOPIC__COUNT; k++)
            CHECK(strcmp(s->base, ab_topic_spec((enum ab_topic)k)->base) != 0);
    }
}

TEST(util_topic_name_with_and_without_prefix)
{
    char out[64];
    CHECK_INT_EQ(ab_topic_name(NULL, AB_TOPIC_INGRESS, out, sizeof(out)), 0);
    CHECK_STR_EQ(out, "agentbus.ingress");
    CHECK_INT_EQ(ab_topic_name("", AB_TOPIC_NOTIFY, out, sizeof(out)), 0);
    CHECK_STR_EQ(out, "agentbus.notify");
    CHECK_INT_EQ(ab_topic_name("staging.", AB_TOPIC_NOTIFY_RETRY, out, sizeof(out)), 0);
    CHECK_STR_EQ(out, "staging.agentbus.notify.retry");
    CHECK_INT_EQ(ab_topic_name("staging.", AB_TOPIC__COUNT, out, sizeof(out)), -1);

    /* "staging.agentbus.events" is 23 bytes: it needs 24 with the NUL. */
    char small[24];
    memset(small, '#', sizeof(small));
    CHECK_INT_EQ(ab_topic_name("staging.", AB_TOPIC_EVENTS, small, 24), 0);
    CHECK_STR_EQ(small, "staging.agentbus.events");
    CHECK_INT_EQ(ab_topic_name("staging.", AB_TOPIC_EVENTS, small, 23), -1);
    CHECK(memchr(small, '\0', 23) != NULL); /* still a string, cut short */
    CHECK_INT_EQ(ab_topic_name("staging.", AB_TOPIC_EVENTS, small, 1), -1);
    CHECK_STR_EQ(small, "");
}

TEST(util_topic_dlq_name)
{
    char out[64];
    CHECK_INT_EQ(ab_topic_dlq_name("staging.", "staging.agentbus.notify", out, sizeof(out)), 0);
    CHECK_STR_EQ(out, "staging.agentbus.notify.dlq");
    CHECK_INT_EQ(ab_topic_dlq_name(NULL, "agentbus.ingress", out, sizeof(out)), 0);
    CHECK_STR_EQ(out, "agentbus.ingress.dlq");
    CHECK_INT_EQ(ab_topic_dlq_name("", "agentbus.llm.requests", out, sizeof(out)), 0);
    CHECK_STR_EQ(out, "agentbus.llm.requests.dlq");
    CHECK_INT_EQ(ab_topic_dlq_name("staging.", "staging.agentbus.notify.retry", out, sizeof(out)),
                 0);
    CHECK_STR_EQ(out, "staging.agentbus.notify.retry.dlq");
    CHECK_INT_EQ(ab_topic_dlq_name(NULL, "custom.x", out, sizeof(out)), 0);
    CHECK_STR_EQ(out, "custom.x.dlq");
    CHECK_INT_EQ(ab_topic_dlq_name("staging.", "custom.x", out, sizeof(out)), 0);
    CHECK_STR_EQ(out, "custom.x.dlq");
    CHECK_INT_EQ(ab_topic_dlq_name("staging.", "sta", out, sizeof(out)), 0);
    CHECK_STR_EQ(out, "sta.dlq");
    /* Another prefix's topic is not ours, but its DLQ is still name + ".dlq". */
    CHECK_INT_EQ(ab_topic_dlq_name("staging.", "prod.agentbus.notify", out, sizeof(out)), 0);
    CHECK_STR_EQ(out, "prod.agentbus.notify.dlq");

    char small[27]; /* "staging.agentbus.notify.dlq" needs 28 */
    CHECK_INT_EQ(ab_topic_dlq_name("staging.", "staging.agentbus.notify", small, sizeof(small)),
                 -1);
    CHECK_INT_EQ(ab_topic_dlq_name(NULL, "abcdefghijklmnopqrstuv", small, sizeof(small)), 0);
    CHECK_STR_EQ(small, "abcdefghijklmnopqrstuv.dlq");
    CHECK_INT_EQ(ab_topic_dlq_name(NULL, "abcdefghijklmnopqrstuvw", small, sizeof(small)), -1);
}

/* sanitize(in) into a buffer, with the result: what the function left and whether it said
 * the input was valid. */
static bool sanitized(const char *in, char *out, size_t size)
{
    snprintf(out, size, "%s", in);
    return ab_utf8_sanitize(out);
}

TEST(util_utf8_sanitize_keeps_valid_text)
{
    char buf[128];
    const char *valid[] = { "", "plain ascii", "caf\xc3\xa9", "\xe4\xb8\xad\xe6\x96\x87",
                            "\xf0\x9f\x98\x80 emoji", "\xe2\x80\xa8 line separator",
                            "\xf4\x8f\xbf\xbf max", "\xed\x9f\xbf below surrogates" };
    for (size_t i = 0; i < sizeof(valid) / sizeof(valid[0]); i++) {
        CHECK(sanitized(valid[i], buf, sizeof(buf)));
        CHECK_STR_EQ(buf, valid[i]);
    }
}

TEST(util_utf8_sanitize_drops_a_sequence_cut_at_the_end)
{
    char buf[128];
    CHECK(!sanitized("caf\xc3", buf, sizeof(buf)));
    CHECK_STR_EQ(buf, "caf");
    CHECK(!sanitized("x\xe4\xb8", buf, sizeof(buf)));
    CHECK_STR_EQ(buf, "x");
    CHECK(!sanitized("x\xf0\x9f\x98", buf, sizeof(buf)));
    CHECK_STR_EQ(buf, "x");
    /* What snprintf's byte cut makes of a multi-byte text, at every cut. */
    const char *text = "\xc3\xa9\xe4\xb8\xad\xf0\x9f\x98\x80";
    for (size_t cap = 1; cap <= strlen(text) + 1; cap++) {
        char cutbuf[16];
        snprintf(cutbuf, cap, "%s", text);
        ab_utf8_sanitize(cutbuf);
        json_t *probe = json_string(cutbuf); /* jansson accepts valid UTF-8 only */
        CHECK(probe != NULL);
        json_decref(probe);
        CHECK(strncmp(cutbuf, text, strlen(cutbuf)) == 0); /* a prefix: nothing replaced */
    }
}

TEST(util_utf8_sanitize_replaces_invalid_bytes)
{
    char buf[128];
    const struct {
        const char *in, *out;
    } cases[] = {
        { "a\xff" "b", "a?b" },                 /* never in UTF-8 */
        { "a\x80" "b", "a?b" },                 /* a lone continuation byte */
        { "\xc0\xaf", "??" },                   /* overlong '/' */
        { "\xe0\x80\xaf", "???" },              /* overlong, three bytes */
        { "\xed\xa0\x80", "???" },              /* a surrogate */
        { "\xf4\x90\x80\x80", "????" },         /* beyond U+10FFFF */
        { "\xf5\x80\x80\x80", "????" },
        { "\xc3" "A\xc3\xa9", "?A\xc3\xa9" },   /* a start without its continuation */
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        CHECK(!sanitized(cases[i].in, buf, sizeof(buf)));
        CHECK_STR_EQ(buf, cases[i].out);
    }
}

TEST(util_utf8_sanitize_any_bytes_give_valid_utf8)
{
    char buf[64];
    for (int round = 0; round < 20000; round++) {
        size_t len = (size_t)(ab_random_unit() * 40);
        for (size_t i = 0; i < len; i++)
            buf[i] = (char)(1 + (int)(ab_random_unit() * 255)); /* no NUL inside */
        buf[len] = '\0';
        ab_utf8_sanitize(buf);
        json_t *probe = json_string(buf);
        CHECK(probe != NULL);
        json_decref(probe);
        CHECK(ab_utf8_sanitize(buf)); /* and once is enough */
    }
}

TEST(util_redact_replaces_every_occurrence)
{
    char buf[128];
    snprintf(buf, sizeof(buf), "Incorrect API key provided: sk-abc123. Key sk-abc123 again");
    CHECK_INT_EQ(ab_redact(buf, "sk-abc123"), 2);
    CHECK_STR_EQ(buf, "Incorrect API key provided: ***. Key *** again");
    snprintf(buf, sizeof(buf), "sk-abc123sk-abc123");
    CHECK_INT_EQ(ab_redact(buf, "sk-abc123"), 2);
    CHECK_STR_EQ(buf, "******");
    snprintf(buf, sizeof(buf), "nothing here");
    CHECK_INT_EQ(ab_redact(buf, "sk-abc123"), 0);
    CHECK_INT_EQ(ab_redact(buf, ""), 0);
    CHECK_INT_EQ(ab_redact(buf, NULL), 0);
    CHECK_INT_EQ(ab_redact(buf, "her"), 0); /* too short to be a secret */
    CHECK_STR_EQ(buf, "nothing here");
    snprintf(buf, sizeof(buf), "cut short: sk-abc1"); /* a start of the key ends the text */
    CHECK_INT_EQ(ab_redact(buf, "sk-abc123"), 1);
    CHECK_STR_EQ(buf, "cut short: ***");
    snprintf(buf, sizeof(buf), "ends with sk-"); /* under 4 bytes of it: left */
    CHECK_INT_EQ(ab_redact(buf, "sk-abc123"), 0);
    snprintf(buf, sizeof(buf), "****"); /* the replacement never matches again */
    CHECK_INT_EQ(ab_redact(buf, "****"), 1);
    CHECK_STR_EQ(buf, "***");
}

TEST(util_json_text_or_hex)
{
    json_t *j = ab_json_text_or_hex("héllo", strlen("héllo"));
    CHECK_STR_EQ(json_string_value(j), "héllo");
    json_decref(j);
    const unsigned char bad[] = { 0xff, 0x00, 0x41 };
    j = ab_json_text_or_hex(bad, sizeof(bad));
    CHECK_STR_EQ(json_string_value(j), "hex:ff0041");
    json_decref(j);
    j = ab_json_text_or_hex(NULL, 0);
    CHECK(json_is_null(j));
    json_decref(j);
}
