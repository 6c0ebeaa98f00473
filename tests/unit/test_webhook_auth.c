/* Tests for common/webhook_auth: GitHub's and Standard Webhooks' signatures against their
 * published vectors and every way a header can be wrong, shared-secret comparison, the
 * address allowlist (IPv4, IPv6, mapped addresses, bad entries, no list) and the limiter of
 * failed attempts (the threshold, the window, eviction when full, a model check of its
 * table, and threads). */
#include "test.h"

#include "common/crypto.h"
#include "common/netguard.h"
#include "common/util.h"
#include "common/webhook_auth.h"

#include <arpa/inet.h>
#include <limits.h>
#include <netinet/in.h>
#include <pthread.h>
#include <sys/un.h>

/* GitHub's documented example ("Validating webhook deliveries"). */
#define GH_SECRET    "It's a Secret to Everybody"
#define GH_BODY      "Hello, World!"
#define GH_SIGNATURE "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"

/* The vector from the Standard Webhooks specification and its reference libraries. */
#define WH_SECRET    "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
#define WH_ID        "msg_p5jXN8AQM9LWM0D4loKWxJek"
#define WH_TIMESTAMP "1614265330"
#define WH_NOW       1614265330LL
#define WH_BODY      "{\"test\": 2432232314}"
#define WH_SIGNATURE "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="

static bool github(const char *secret, const char *body, const char *header)
{
    return ab_github_signature_valid(secret, body, strlen(body), header);
}

TEST(webhook_auth_github_vector)
{
    CHECK(github(GH_SECRET, GH_BODY, GH_SIGNATURE));
    /* Hex in upper or mixed case is the same bytes. */
    CHECK(github(GH_SECRET, GH_BODY,
                 "sha256=757107EA0EB2509FC211221CCE984B8A37570B6D7586C22C46F4379C8B043E17"));
    CHECK(github(GH_SECRET, GH_BODY,
                 "sha256=757107Ea0eB2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043E17"));
    /* An empty body, given as NULL or not: value from Python's hmac module. */
    const char *empty = "sha256=66a0c074deaa0f489ead6537e0d32f9a344b90bbeda705b6ed45ecd3b413fb40";
    CHECK(ab_github_signature_valid(GH_SECRET, NULL, 0, empty));
    CHECK(ab_github_signature_valid(GH_SECRET, "", 0, empty));
}

TEST(webhook_auth_github_rejects)
{
    CHECK(!github("It's a secret to everybody", GH_BODY, GH_SIGNATURE)); /* wrong secret */
    CHECK(!github(GH_SECRET, "Hello, World?", GH_SIGNATURE));            /* one byte changed */
    CHECK(!github(GH_SECRET, "Hello, World! ", GH_SIGNATURE));           /* one byte more */
    CHECK(!ab_github_signature_valid(GH_SECRET, GH_BODY, strlen(GH_BODY) - 1, GH_SIGNATURE));
    static const char *const bad[] = {
        /* truncated by one digit, by two, and one digit too many */
        "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e1",
        "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e",
        "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e170",
        /* no prefix, another prefix, the prefix in another case or spelling */
        "757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17",
        "sha1=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17",
        "SHA256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17",
        "sha256:757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17",
        "sha256 =757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17",
        /* whitespace, a non-hex digit, a sign */
        "sha256= 757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17",
        "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17 ",
        "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e1g",
        "sha256=-57107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17",
        /* a different MAC of the right shape */
        "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e18",
        "sha256=0000000000000000000000000000000000000000000000000000000000000000",
        "sha256=",
        "",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        if (github(GH_SECRET, GH_BODY, bad[i]))
            ab_test_fail(__FILE__, __LINE__, "\"%s\" was accepted", bad[i]);
    CHECK(!github(GH_SECRET, GH_BODY, NULL));
    CHECK(!ab_github_signature_valid(NULL, GH_BODY, strlen(GH_BODY), GH_SIGNATURE));
    CHECK(!ab_github_signature_valid(GH_SECRET, NULL, 5, GH_SIGNATURE));
    /* An empty secret is refused even with the signature it gives (anyone can make it). */
    unsigned char mac[32];
    char header[7 + 65] = "sha256=";
    ab_hmac_sha256("", 0, GH_BODY, strlen(GH_BODY), mac);
    ab_hex(mac, sizeof(mac), header + 7);
    CHECK(!github("", GH_BODY, header));
}

/* Verifies the published message at now with the given headers, and a 5 minute tolerance. */
static enum ab_sig_result standard(const char *secret, const char *id, const char *ts,
                                   const char *signature, long long now)
{
    return ab_standard_webhook_verify(secret, id, ts, signature, WH_BODY, strlen(WH_BODY), now,
                                      300);
}

TEST(webhook_auth_standard_vector)
{
    CHECK_INT_EQ(standard(WH_SECRET, WH_ID, WH_TIMESTAMP, WH_SIGNATURE, WH_NOW), AB_SIG_OK);
    /* The "whsec_" prefix is optional. */
    CHECK_INT_EQ(
        standard("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", WH_ID, WH_TIMESTAMP, WH_SIGNATURE, WH_NOW),
        AB_SIG_OK);
    /* The signature's base64 without its padding decodes to the same bytes. */
    CHECK_INT_EQ(standard(WH_SECRET, WH_ID, WH_TIMESTAMP,
                          "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE", WH_NOW),
                 AB_SIG_OK);
    /* Any change to what is signed is a mismatch. */
    const char *body = "{\"test\": 2432232315}";
    CHECK_INT_EQ(ab_standard_webhook_verify(WH_SECRET, WH_ID, WH_TIMESTAMP, WH_SIGNATURE, body,
                                            strlen(body), WH_NOW, 300),
                 AB_SIG_MISMATCH);
    CHECK_INT_EQ(ab_standard_webhook_verify(WH_SECRET, WH_ID, WH_TIMESTAMP, WH_SIGNATURE, WH_BODY,
                                            strlen(WH_BODY) - 1, WH_NOW, 300),
                 AB_SIG_MISMATCH);
    CHECK_INT_EQ(
        standard(WH_SECRET, "msg_p5jXN8AQM9LWM0D4loKWxJeK", WH_TIMESTAMP, WH_SIGNATURE, WH_NOW),
        AB_SIG_MISMATCH);
    CHECK_INT_EQ(standard(WH_SECRET, WH_ID, "1614265331", WH_SIGNATURE, WH_NOW), AB_SIG_MISMATCH);
    CHECK_INT_EQ(standard("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSx", WH_ID, WH_TIMESTAMP,
                          WH_SIGNATURE, WH_NOW),
                 AB_SIG_MISMATCH);
    /* A secret that signs nothing matches nothing. */
    CHECK_INT_EQ(standard("whsec_", WH_ID, WH_TIMESTAMP, WH_SIGNATURE, WH_NOW), AB_SIG_MISMATCH);
    CHECK_INT_EQ(standard("whsec_!!", WH_ID, WH_TIMESTAMP, WH_SIGNATURE, WH_NOW), AB_SIG_MISMATCH);
    CHECK_INT_EQ(standard(NULL, WH_ID, WH_TIMESTAMP, WH_SIGNATURE, WH_NOW), AB_SIG_MISMATCH);
    CHECK_INT_EQ(ab_standard_webhook_verify(WH_SECRET, WH_ID, WH_TIMESTAMP, WH_SIGNATURE, NULL, 3,
                                            WH_NOW, 300),
                 AB_SIG_MISMATCH);
}

TEST(webhook_auth_standard_signature_lists)
{
    static const struct {
        const char *header;
        enum ab_sig_result want;
    } cases[] = {
        /* Rotation: the first entry is under the old secret, the second matches. */
        {"v1,bm9wZW5vcGVub3Blbm9wZW5vcGVub3Blbm9wZW5vcGU= " WH_SIGNATURE, AB_SIG_OK},
        {WH_SIGNATURE " v1,bm9wZW5vcGVub3Blbm9wZW5vcGVub3Blbm9wZW5vcGU=", AB_SIG_OK},
        /* Extra spaces between and around entries. */
        {"  v1,bm9wZW5vcGVub3Blbm9wZW5vcGVub3Blbm9wZW5vcGU=   " WH_SIGNATURE "  ", AB_SIG_OK},
        /* Other versions are skipped, even with the right bytes; v1 after them counts. */
        {"v1a,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=", AB_SIG_MISMATCH},
        {"v2,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=", AB_SIG_MISMATCH},
        {"V1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=", AB_SIG_MISMATCH},
        {"v1a,c29tZXRoaW5nIGVsc2U= v2,x " WH_SIGNATURE, AB_SIG_OK},
        /* Malformed v1 entries are skipped too: bad base64, wrong length, no comma. */
        {"v1,!!!! " WH_SIGNATURE, AB_SIG_OK},
        {"v1,Zm9v v1, v1 " WH_SIGNATURE, AB_SIG_OK},
        {"v1,!!!!", AB_SIG_MISMATCH},
        {"v1,", AB_SIG_MISMATCH},
        {"v1", AB_SIG_MISMATCH},
        {",", AB_SIG_MISMATCH},
        {" ", AB_SIG_MISMATCH},
        /* The right bytes plus one more, or cut short. */
        {"v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OEA", AB_SIG_MISMATCH},
        {"v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1O==", AB_SIG_MISMATCH},
        {"v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=x", AB_SIG_MISMATCH},
        /* Commas are not separators ("v1,a,v1,b" is one entry). */
        {"v1,x," WH_SIGNATURE, AB_SIG_MISMATCH},
        /* A tab is not a space. */
        {"v1,x\t" WH_SIGNATURE, AB_SIG_MISMATCH},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        enum ab_sig_result got = standard(WH_SECRET, WH_ID, WH_TIMESTAMP, cases[i].header, WH_NOW);
        if (got != cases[i].want)
            ab_test_fail(__FILE__, __LINE__, "\"%s\": %d, want %d", cases[i].header, (int)got,
                         (int)cases[i].want);
    }
    /* A long list of wrong entries is just a mismatch. */
    char many[8192] = "";
    for (int i = 0; i < 150; i++)
        strcat(many, "v1,bm9wZW5vcGVub3Blbm9wZW5vcGVub3Blbm9wZW5vcGU= ");
    CHECK_INT_EQ(standard(WH_SECRET, WH_ID, WH_TIMESTAMP, many, WH_NOW), AB_SIG_MISMATCH);
    strcat(many, WH_SIGNATURE);
    CHECK_INT_EQ(standard(WH_SECRET, WH_ID, WH_TIMESTAMP, many, WH_NOW), AB_SIG_OK);
}

TEST(webhook_auth_standard_tolerance_edges)
{
    /* Exactly the tolerance either way is fresh; one second more is stale. */
    CHECK_INT_EQ(standard(WH_SECRET, WH_ID, WH_TIMESTAMP, WH_SIGNATURE, WH_NOW + 300), AB_SIG_OK);
    CHECK_INT_EQ(standard(WH_SECRET, WH_ID, WH_TIMESTAMP, WH_SIGNATURE, WH_NOW + 301),
                 AB_SIG_STALE);
    CHECK_INT_EQ(standard(WH_SECRET, WH_ID, WH_TIMESTAMP, WH_SIGNATURE, WH_NOW - 300), AB_SIG_OK);
    CHECK_INT_EQ(standard(WH_SECRET, WH_ID, WH_TIMESTAMP, WH_SIGNATURE, WH_NOW - 301),
                 AB_SIG_STALE);
    /* Staleness is decided before the signature: a stale forgery is STALE, not MISMATCH. */
    CHECK_INT_EQ(standard(WH_SECRET, WH_ID, WH_TIMESTAMP, "v1,x", WH_NOW + 301), AB_SIG_STALE);
    CHECK_INT_EQ(standard("whsec_!!", WH_ID, WH_TIMESTAMP, WH_SIGNATURE, WH_NOW - 301),
                 AB_SIG_STALE);
    /* Tolerance 0: only the same second; a negative tolerance is 0. */
    const char *ts = WH_TIMESTAMP;
    size_t n = strlen(WH_BODY);
    CHECK_INT_EQ(
        ab_standard_webhook_verify(WH_SECRET, WH_ID, ts, WH_SIGNATURE, WH_BODY, n, WH_NOW, 0),
        AB_SIG_OK);
    CHECK_INT_EQ(
        ab_standard_webhook_verify(WH_SECRET, WH_ID, ts, WH_SIGNATURE, WH_BODY, n, WH_NOW + 1, 0),
        AB_SIG_STALE);
    CHECK_INT_EQ(
        ab_standard_webhook_verify(WH_SECRET, WH_ID, ts, WH_SIGNATURE, WH_BODY, n, WH_NOW - 1, 0),
        AB_SIG_STALE);
    CHECK_INT_EQ(
        ab_standard_webhook_verify(WH_SECRET, WH_ID, ts, WH_SIGNATURE, WH_BODY, n, WH_NOW, -5),
        AB_SIG_OK);
    CHECK_INT_EQ(
        ab_standard_webhook_verify(WH_SECRET, WH_ID, ts, WH_SIGNATURE, WH_BODY, n, WH_NOW + 1, -5),
        AB_SIG_STALE);
    /* Extreme clocks and timestamps do not overflow. */
    CHECK_INT_EQ(standard(WH_SECRET, WH_ID, WH_TIMESTAMP, WH_SIGNATURE, LLONG_MIN), AB_SIG_STALE);
    CHECK_INT_EQ(standard(WH_SECRET, WH_ID, WH_TIMESTAMP, WH_SIGNATURE, LLONG_MAX), AB_SIG_STALE);
    CHECK_INT_EQ(standard(WH_SECRET, WH_ID, "9223372036854775807", WH_SIGNATURE, LLONG_MIN),
                 AB_SIG_STALE);
    CHECK_INT_EQ(
        ab_standard_webhook_verify(WH_SECRET, WH_ID, "0", "v1,x", "", 0, LLONG_MAX, LLONG_MAX),
        AB_SIG_MISMATCH); /* fresh by a huge tolerance, then compared */
}

TEST(webhook_auth_standard_malformed_and_missing)
{
    static const char *const bad_timestamps[] = {
        "abc",          "-1614265330",          "+1614265330",
        " 1614265330",  "1614265330 ",          "1614265330.5",
        "1.6e9",        "0x60371a72",           "1614265330s",
        "1614 265330",  "99999999999999999999", "9223372036854775808",
        "\xef\xbc\x91", /* a full-width digit one */
    };
    for (size_t i = 0; i < sizeof(bad_timestamps) / sizeof(bad_timestamps[0]); i++) {
        enum ab_sig_result got = standard(WH_SECRET, WH_ID, bad_timestamps[i], WH_SIGNATURE, 0);
        if (got != AB_SIG_MALFORMED)
            ab_test_fail(__FILE__, __LINE__, "timestamp \"%s\": %d", bad_timestamps[i], (int)got);
    }
    /* An id with '.' would let "id.ts.body" be split another way. */
    CHECK_INT_EQ(standard(WH_SECRET, "msg.1", WH_TIMESTAMP, WH_SIGNATURE, WH_NOW),
                 AB_SIG_MALFORMED);
    /* Leading zeros are the same number, signed as the reference libraries sign it. */
    CHECK_INT_EQ(standard(WH_SECRET, WH_ID, "01614265330", WH_SIGNATURE, WH_NOW), AB_SIG_OK);

    /* Each header absent or empty; missing wins over everything else. */
    const char *values[3] = {WH_ID, WH_TIMESTAMP, WH_SIGNATURE};
    for (int which = 0; which < 3; which++) {
        for (int empty = 0; empty < 2; empty++) {
            const char *v[3] = {values[0], values[1], values[2]};
            v[which] = empty ? "" : NULL;
            CHECK_INT_EQ(standard(WH_SECRET, v[0], v[1], v[2], WH_NOW), AB_SIG_MISSING);
        }
    }
    CHECK_INT_EQ(standard(WH_SECRET, NULL, "garbage", NULL, 0), AB_SIG_MISSING);
    CHECK_INT_EQ(standard(NULL, NULL, NULL, NULL, 0), AB_SIG_MISSING);
}

TEST(webhook_auth_standard_round_trip_with_sign)
{
    for (int round = 0; round < 20; round++) {
        unsigned char key[32], body[200];
        ab_random_bytes(key, sizeof(key));
        ab_random_bytes(body, sizeof(body)); /* NULs and all */
        size_t body_len = (size_t)round * 10;
        char *enc = ab_base64_encode(key, sizeof(key));
        char secret[80];
        snprintf(secret, sizeof(secret), "whsec_%s", enc);
        free(enc);
        long long ts = 1700000000LL + round;
        char ts_text[24], id[AB_UUID_LEN + 5], sig[AB_WEBHOOK_SIGNATURE_MAX];
        snprintf(ts_text, sizeof(ts_text), "%lld", ts);
        char uuid[AB_UUID_LEN + 1];
        ab_uuid_v4(uuid);
        snprintf(id, sizeof(id), "msg_%s", uuid);
        REQUIRE(ab_webhook_sign(secret, id, ts, body, body_len, sig, sizeof(sig)) == AB_OK);
        CHECK_INT_EQ(
            ab_standard_webhook_verify(secret, id, ts_text, sig, body, body_len, ts + 10, 300),
            AB_SIG_OK);
        /* Rotation: the old secret's signature first. */
        char both[2 * AB_WEBHOOK_SIGNATURE_MAX + 1];
        char old_sig[AB_WEBHOOK_SIGNATURE_MAX];
        REQUIRE(ab_webhook_sign(WH_SECRET, id, ts, body, body_len, old_sig, sizeof(old_sig)) ==
                AB_OK);
        snprintf(both, sizeof(both), "%s %s", old_sig, sig);
        CHECK_INT_EQ(ab_standard_webhook_verify(secret, id, ts_text, both, body, body_len, ts, 300),
                     AB_SIG_OK);
        CHECK_INT_EQ(
            ab_standard_webhook_verify(WH_SECRET, id, ts_text, both, body, body_len, ts, 300),
            AB_SIG_OK);
        /* The new secret alone does not accept the old signature. */
        CHECK_INT_EQ(
            ab_standard_webhook_verify(secret, id, ts_text, old_sig, body, body_len, ts, 300),
            AB_SIG_MISMATCH);
        if (body_len > 0) {
            body[body_len / 2] ^= 1;
            CHECK_INT_EQ(
                ab_standard_webhook_verify(secret, id, ts_text, sig, body, body_len, ts, 300),
                AB_SIG_MISMATCH);
        }
    }
    /* An empty body given as NULL. */
    char sig[AB_WEBHOOK_SIGNATURE_MAX];
    REQUIRE(ab_webhook_sign(WH_SECRET, WH_ID, WH_NOW, NULL, 0, sig, sizeof(sig)) == AB_OK);
    CHECK_INT_EQ(
        ab_standard_webhook_verify(WH_SECRET, WH_ID, WH_TIMESTAMP, sig, NULL, 0, WH_NOW, 300),
        AB_SIG_OK);
}

TEST(webhook_auth_sig_result_messages)
{
    const char *seen[5] = {0};
    for (int r = AB_SIG_OK; r <= AB_SIG_MISMATCH; r++) {
        const char *m = ab_sig_result_message((enum ab_sig_result)r);
        REQUIRE(m != NULL);
        CHECK(m[0] != '\0');
        for (int i = 0; i < r; i++)
            CHECK(strcmp(seen[i], m) != 0);
        seen[r] = m;
    }
    CHECK_STR_CONTAINS(ab_sig_result_message(AB_SIG_STALE), "webhook-timestamp");
    CHECK(ab_sig_result_message((enum ab_sig_result)99) != NULL);
}

TEST(webhook_auth_shared_secret)
{
    CHECK(ab_shared_secret_valid("s3cret-token", "s3cret-token"));
    CHECK(!ab_shared_secret_valid("s3cret-token", "s3cret-tokem"));
    CHECK(!ab_shared_secret_valid("s3cret-token", "s3cret-toke"));   /* a prefix */
    CHECK(!ab_shared_secret_valid("s3cret-token", "s3cret-token ")); /* longer */
    CHECK(!ab_shared_secret_valid("s3cret-token", "S3CRET-TOKEN"));
    CHECK(!ab_shared_secret_valid("s3cret-token", ""));
    CHECK(!ab_shared_secret_valid("s3cret-token", NULL));
    /* An unset secret is no secret: nothing matches it, not even nothing. */
    CHECK(!ab_shared_secret_valid("", ""));
    CHECK(!ab_shared_secret_valid("", "x"));
    CHECK(!ab_shared_secret_valid(NULL, "x"));
    CHECK(!ab_shared_secret_valid(NULL, NULL));
    /* Long secrets are compared whole. */
    char a[5000], b[5000];
    memset(a, 'k', sizeof(a) - 1);
    a[sizeof(a) - 1] = '\0';
    memcpy(b, a, sizeof(a));
    CHECK(ab_shared_secret_valid(a, b));
    b[4000] = 'j';
    CHECK(!ab_shared_secret_valid(a, b));
}

/* ---- CIDR lists -------------------------------------------------------------------------- */

/* A list from JSON text; fails the test if it cannot be made. */
static struct ab_cidr_list *cidr_list(const char *json)
{
    json_error_t jerr;
    json_t *array = json_loads(json, 0, &jerr);
    REQUIRE(array != NULL);
    struct ab_cidr_list *l = NULL;
    char err[256] = "";
    enum ab_err e = ab_cidr_list_new(array, &l, err, sizeof(err));
    json_decref(array);
    if (e != AB_OK)
        ab_test_fail(__FILE__, __LINE__, "%s: %s", json, err);
    REQUIRE(e == AB_OK && l != NULL);
    return l;
}

struct in_case {
    const char *address;
    bool in;
};

static void expect_in(int line, const struct ab_cidr_list *l, const struct in_case *c, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (ab_cidr_list_contains_text(l, c[i].address) != c[i].in)
            ab_test_fail(__FILE__, line, "%s: %s, want %s", c[i].address, c[i].in ? "out" : "in",
                         c[i].in ? "in" : "out");
}

#define EXPECT_IN(l, cases) expect_in(__LINE__, l, cases, sizeof(cases) / sizeof(cases[0]))

TEST(webhook_auth_cidr_ipv4)
{
    /* The seed's example. */
    struct ab_cidr_list *l = cidr_list("[\"192.168.1.0/24\", \"10.0.0.1\"]");
    static const struct in_case cases[] = {
        {"192.168.1.0", true},
        {"192.168.1.77", true},
        {"192.168.1.255", true},
        {"192.168.0.255", false},
        {"192.168.2.0", false},
        {"10.0.0.1", true}, /* a single address is a /32 */
        {"10.0.0.0", false},
        {"10.0.0.2", false},
        {"127.0.0.1", false},
        {"::ffff:192.168.1.7", true}, /* what a dual-stack socket reports */
        {"::ffff:10.0.0.1", true},
        {"::ffff:10.0.0.2", false},
        {"::1", false},
        {"not an address", false},
        {"192.168.1.7:8080", false},
        {"", false},
    };
    EXPECT_IN(l, cases);
    CHECK(!ab_cidr_list_contains_text(l, NULL));
    ab_cidr_list_free(l);

    /* Host bits below the prefix are masked off; odd prefixes cut inside a byte; /0. */
    l = cidr_list("[\"10.1.2.3/8\", \"172.16.5.77/27\"]");
    static const struct in_case masked[] = {
        {"10.200.0.1", true},     {"11.0.0.0", false},    {"172.16.5.64", true},
        {"172.16.5.95", true},    {"172.16.5.63", false}, {"172.16.5.96", false},
        {"10.255.255.255", true},
    };
    EXPECT_IN(l, masked);
    ab_cidr_list_free(l);
    l = cidr_list("[\"0.0.0.0/0\"]");
    static const struct in_case all_v4[] = {
        {"1.2.3.4", true}, {"255.255.255.255", true}, {"::ffff:8.8.8.8", true},
        {"::1", false},    {"2001:db8::1", false},
    };
    EXPECT_IN(l, all_v4);
    ab_cidr_list_free(l);
}

TEST(webhook_auth_cidr_ipv6_and_mapped)
{
    struct ab_cidr_list *l = cidr_list("[\"2001:db8::/32\", \"::1\", \"10.0.0.0/8\"]");
    static const struct in_case cases[] = {
        {"2001:db8::1", true},
        {"2001:db8:ffff:ffff:ffff:ffff:ffff:ffff", true},
        {"2001:DB8::abcd", true},
        {"2001:db7:ffff::1", false},
        {"2001:db9::", false},
        {"::1", true},
        {"::2", false},
        {"::", false},
        {"127.0.0.1", false}, /* ::1 is not IPv4 loopback */
        {"10.0.0.1", true},
        {"10.255.255.255", true},
        {"::ffff:10.0.0.1", true}, /* IPv4-mapped: matched as 10.0.0.1 */
        {"::ffff:a00:1", true},
        {"::ffff:11.0.0.1", false},
        /* Other IPv4-carrying forms are IPv6 clients, not IPv4 ones. */
        {"::10.0.0.1", false},
        {"64:ff9b::a00:1", false},
        {"2002:a00:1::", false},
        {"::ffff:0:10.0.0.1", false}, /* SIIT's IPv4-translated form */
        {"fe80::1%eth0", false},
        {"[::1]", false},
    };
    EXPECT_IN(l, cases);
    ab_cidr_list_free(l);

    /* An IPv6 entry for mapped addresses matches them as written. */
    l = cidr_list("[\"::ffff:10.0.0.0/104\"]");
    static const struct in_case mapped[] = {
        {"::ffff:10.9.9.9", true},
        {"10.9.9.9", false},
        {"::ffff:11.0.0.1", false},
    };
    EXPECT_IN(l, mapped);
    ab_cidr_list_free(l);
    l = cidr_list("[\"::/0\"]");
    static const struct in_case all_v6[] = {
        {"2606:4700::1", true}, {"::ffff:1.2.3.4", true}, {"1.2.3.4", false}};
    EXPECT_IN(l, all_v6);
    ab_cidr_list_free(l);
}

TEST(webhook_auth_cidr_sockaddr)
{
    struct ab_cidr_list *l = cidr_list("[\"10.0.0.0/8\", \"2001:db8::/32\"]");
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_port = htons(443)};
    REQUIRE(inet_pton(AF_INET, "10.1.2.3", &sin.sin_addr) == 1);
    CHECK(ab_cidr_list_contains(l, (struct sockaddr *)&sin, sizeof(sin)));
    sin.sin_port = htons(1);
    CHECK(ab_cidr_list_contains(l, (struct sockaddr *)&sin, sizeof(sin))); /* port ignored */
    CHECK(!ab_cidr_list_contains(l, (struct sockaddr *)&sin, sizeof(sin) - 1));
    REQUIRE(inet_pton(AF_INET, "11.1.2.3", &sin.sin_addr) == 1);
    CHECK(!ab_cidr_list_contains(l, (struct sockaddr *)&sin, sizeof(sin)));

    struct sockaddr_in6 sin6 = {.sin6_family = AF_INET6, .sin6_port = htons(8080)};
    REQUIRE(inet_pton(AF_INET6, "::ffff:10.0.0.1", &sin6.sin6_addr) == 1);
    CHECK(ab_cidr_list_contains(l, (struct sockaddr *)&sin6, sizeof(sin6)));
    REQUIRE(inet_pton(AF_INET6, "2001:db8::42", &sin6.sin6_addr) == 1);
    CHECK(ab_cidr_list_contains(l, (struct sockaddr *)&sin6, sizeof(sin6)));
    CHECK(!ab_cidr_list_contains(l, (struct sockaddr *)&sin6, sizeof(struct sockaddr_in)));
    REQUIRE(inet_pton(AF_INET6, "::1", &sin6.sin6_addr) == 1);
    CHECK(!ab_cidr_list_contains(l, (struct sockaddr *)&sin6, sizeof(sin6)));

    /* A sockaddr_storage as accept() fills it, and unreadable addresses. */
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof(ss));
    memcpy(&ss, &sin6, sizeof(sin6));
    REQUIRE(inet_pton(AF_INET6, "2001:db8:1::1", &((struct sockaddr_in6 *)&ss)->sin6_addr) == 1);
    CHECK(ab_cidr_list_contains(l, (struct sockaddr *)&ss, sizeof(ss)));
    struct sockaddr_un sun = {.sun_family = AF_UNIX};
    CHECK(!ab_cidr_list_contains(l, (struct sockaddr *)&sun, sizeof(sun)));
    CHECK(!ab_cidr_list_contains(l, NULL, sizeof(sin)));
    CHECK(!ab_cidr_list_contains(l, (struct sockaddr *)&sin, 0));
    ab_cidr_list_free(l);

    /* No list: every address, even one that cannot be read. */
    CHECK(ab_cidr_list_contains(NULL, (struct sockaddr *)&sin, sizeof(sin)));
    CHECK(ab_cidr_list_contains(NULL, NULL, 0));
}

TEST(webhook_auth_cidr_no_list)
{
    struct ab_cidr_list *l = (struct ab_cidr_list *)&l; /* anything but NULL */
    CHECK_INT_EQ(ab_cidr_list_new(NULL, &l, NULL, 0), AB_OK);
    CHECK(l == NULL);
    json_t *null = json_null(), *empty = json_array();
    l = (struct ab_cidr_list *)&l;
    CHECK_INT_EQ(ab_cidr_list_new(null, &l, NULL, 0), AB_OK);
    CHECK(l == NULL);
    l = (struct ab_cidr_list *)&l;
    CHECK_INT_EQ(ab_cidr_list_new(empty, &l, NULL, 0), AB_OK);
    CHECK(l == NULL);
    json_decref(null);
    json_decref(empty);
    /* NULL is "no allowlist": everything is in it. */
    CHECK(ab_cidr_list_contains_text(NULL, "203.0.113.9"));
    CHECK(ab_cidr_list_contains_text(NULL, "::1"));
    CHECK(ab_cidr_list_contains_text(NULL, "garbage"));
    ab_cidr_list_free(NULL);
}

TEST(webhook_auth_cidr_bad_entries)
{
    static const struct {
        const char *json, *named;
    } bad[] = {
        {"[\"10.0.0.0/33\"]", "allowlist[0] \"10.0.0.0/33\": prefix length out of range"},
        {"[\"::1\", \"::1/129\"]", "allowlist[1] \"::1/129\""},
        {"[\"10.0.0.1\", \"localhost\"]", "allowlist[1] \"localhost\": not an address"},
        {"[\"192.168.1.0/24\", \"10.0.0.1\", \"\"]", "allowlist[2] \"\""},
        {"[\" 10.0.0.1\"]", "allowlist[0] \" 10.0.0.1\""},
        {"[\"10.0.0.1 \"]", "allowlist[0] \"10.0.0.1 \""},
        {"[\"10.0.0.1,10.0.0.2\"]", "allowlist[0] \"10.0.0.1,10.0.0.2\""},
        {"[\"10.0.0.0/8x\"]", "allowlist[0] \"10.0.0.0/8x\": bad prefix length"},
        {"[\"10.0.0.0/-1\"]", "\"10.0.0.0/-1\""},
        {"[\"127.1\"]", "\"127.1\""},
        {"[\"[::1]\"]", "\"[::1]\""},
        {"[\"fe80::1%eth0\"]", "\"fe80::1%eth0\""},
        {"[\"10.0.0.1\\u0000junk\"]", "allowlist[0] \"10.0.0.1\": contains a NUL"},
        {"[\"10.0.0.1\", 42]", "allowlist[1]: not a string"},
        {"[null]", "allowlist[0]: not a string"},
        {"[[\"10.0.0.1\"]]", "allowlist[0]: not a string"},
        {"\"10.0.0.1\"", "not an array"},
        {"{\"ip\": \"10.0.0.1\"}", "not an array"},
        {"42", "not an array"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        json_error_t jerr;
        json_t *j = json_loads(bad[i].json, JSON_DECODE_ANY | JSON_ALLOW_NUL, &jerr);
        if (j == NULL) {
            ab_test_fail(__FILE__, __LINE__, "%s: %s", bad[i].json, jerr.text);
            continue;
        }
        struct ab_cidr_list *l = (struct ab_cidr_list *)&bad[i];
        char err[256] = "";
        enum ab_err e = ab_cidr_list_new(j, &l, err, sizeof(err));
        json_decref(j);
        if (e != AB_ERR_CONFIG)
            ab_test_fail(__FILE__, __LINE__, "%s gave %d", bad[i].json, (int)e);
        CHECK(l == NULL);
        CHECK_STR_CONTAINS(err, bad[i].named);
        if (e == AB_OK)
            ab_cidr_list_free(l);
    }

    /* A long entry is named cut short, and a cut never leaves broken UTF-8 behind. */
    char entry[300];
    memset(entry, 'x', sizeof(entry) - 1);
    entry[sizeof(entry) - 1] = '\0';
    memcpy(entry + 63, "\xc3\xa9", 2); /* 'é' straddling the 64-byte cut */
    json_t *j = json_pack("[s]", entry);
    REQUIRE(j != NULL);
    struct ab_cidr_list *l = NULL;
    char err[256];
    CHECK_INT_EQ(ab_cidr_list_new(j, &l, err, sizeof(err)), AB_ERR_CONFIG);
    CHECK_STR_CONTAINS(err, "\"xxxxxxxx");
    CHECK_STR_CONTAINS(err, "...\"");
    CHECK(strlen(err) < 150);
    json_t *s = json_string(err);
    CHECK(s != NULL); /* valid UTF-8 */
    json_decref(s);
    /* errstr may be NULL or tiny; out may not be NULL. */
    CHECK_INT_EQ(ab_cidr_list_new(j, &l, NULL, 0), AB_ERR_CONFIG);
    char tiny[1] = "#";
    CHECK_INT_EQ(ab_cidr_list_new(j, &l, tiny, sizeof(tiny)), AB_ERR_CONFIG);
    CHECK(tiny[0] == '\0');
    CHECK_INT_EQ(ab_cidr_list_new(j, NULL, err, sizeof(err)), AB_ERR_CONFIG);
    json_decref(j);
}

TEST(webhook_auth_netguard_helpers)
{
    struct ab_net net;
    unsigned char addr[16];
    CHECK(ab_net_parse("10.1.2.3/8", &net) == NULL);
    CHECK_INT_EQ(net.family, AF_INET);
    CHECK_INT_EQ(net.prefix, 8);
    CHECK(net.addr[0] == 10 && net.addr[1] == 0 && net.addr[3] == 0);
    CHECK_INT_EQ(ab_address_parse("10.9.8.7", addr), AF_INET);
    CHECK(ab_net_contains(&net, AF_INET, addr));
    CHECK(!ab_net_contains(&net, AF_INET6, addr));
    CHECK(!ab_net_contains(NULL, AF_INET, addr));
    CHECK(ab_net_parse("::1", &net) == NULL);
    CHECK_INT_EQ(net.prefix, 128);
    CHECK(ab_net_parse("", &net) != NULL);
    CHECK(ab_net_parse(NULL, &net) != NULL);
    CHECK_STR_EQ(ab_net_parse("1.2.3.4/40", &net), "prefix length out of range (0-32)");
    CHECK_INT_EQ(ab_address_parse(NULL, addr), 0);
    CHECK_INT_EQ(ab_address_parse("10.0.0.0/8", addr), 0);
    struct sockaddr_in sin = {.sin_family = AF_INET};
    sin.sin_addr.s_addr = htonl(0x0a000001);
    CHECK_INT_EQ(ab_sockaddr_address((struct sockaddr *)&sin, sizeof(sin), addr), AF_INET);
    CHECK(addr[0] == 10 && addr[3] == 1);
    CHECK_INT_EQ(ab_sockaddr_address((struct sockaddr *)&sin, 4, addr), 0);
}

/* ---- The limiter ------------------------------------------------------------------------- */

TEST(webhook_auth_limiter_blocks_at_max_failures)
{
    struct ab_auth_limiter *l = ab_auth_limiter_new(3, 1000, 16);
    REQUIRE(l != NULL);
    int64_t retry = -1;
    CHECK(!ab_auth_limiter_blocked(l, "10.0.0.1", 100, &retry));
    CHECK_INT_EQ(retry, 0);
    ab_auth_limiter_fail(l, "10.0.0.1", 100); /* the window is 100..1099 */
    ab_auth_limiter_fail(l, "10.0.0.1", 200);
    CHECK(!ab_auth_limiter_blocked(l, "10.0.0.1", 200, &retry)); /* 2 of 3 */
    CHECK_INT_EQ(retry, 0);
    ab_auth_limiter_fail(l, "10.0.0.1", 300);
    CHECK(ab_auth_limiter_blocked(l, "10.0.0.1", 300, &retry)); /* exactly 3 */
    CHECK_INT_EQ(retry, 800);
    CHECK(ab_auth_limiter_blocked(l, "10.0.0.1", 1099, &retry));
    CHECK_INT_EQ(retry, 1);
    CHECK(ab_auth_limiter_blocked(l, "10.0.0.1", 500, NULL));
    /* Other sources are not affected; keys are exact. */
    CHECK(!ab_auth_limiter_blocked(l, "10.0.0.2", 300, NULL));
    CHECK(!ab_auth_limiter_blocked(l, "10.0.0.10", 300, NULL));
    CHECK(!ab_auth_limiter_blocked(l, "10.0.0.", 300, NULL));
    /* Failures past the threshold while blocked (if a caller reports them) do not extend
     * the window. */
    ab_auth_limiter_fail(l, "10.0.0.1", 900);
    CHECK(ab_auth_limiter_blocked(l, "10.0.0.1", 900, &retry));
    CHECK_INT_EQ(retry, 200);

    /* The window ends: unblocked, and the count starts again from the next failure. */
    CHECK(!ab_auth_limiter_blocked(l, "10.0.0.1", 1100, &retry));
    CHECK_INT_EQ(retry, 0);
    ab_auth_limiter_fail(l, "10.0.0.1", 1100);
    ab_auth_limiter_fail(l, "10.0.0.1", 1200);
    CHECK(!ab_auth_limiter_blocked(l, "10.0.0.1", 1200, NULL));
    ab_auth_limiter_fail(l, "10.0.0.1", 2099);
    CHECK(ab_auth_limiter_blocked(l, "10.0.0.1", 2099, &retry));
    CHECK_INT_EQ(retry, 1);
    /* A failure at the very end of the window still counts in it; the next does not. */
    ab_auth_limiter_fail(l, "b", 0);
    ab_auth_limiter_fail(l, "b", 999);
    ab_auth_limiter_fail(l, "b", 1000);
    CHECK(!ab_auth_limiter_blocked(l, "b", 1000, NULL));
    ab_auth_limiter_free(l);

    /* max_failures 1: the first failure blocks. */
    l = ab_auth_limiter_new(1, 60000, 1);
    REQUIRE(l != NULL);
    ab_auth_limiter_fail(l, "::1", 5);
    CHECK(ab_auth_limiter_blocked(l, "::1", 5, &retry));
    CHECK_INT_EQ(retry, 60000);
    /* A clock that went back counts as the window's start. */
    CHECK(ab_auth_limiter_blocked(l, "::1", 0, &retry));
    CHECK_INT_EQ(retry, 60000);
    ab_auth_limiter_free(l);
}

TEST(webhook_auth_limiter_arguments)
{
    CHECK(ab_auth_limiter_new(0, 1000, 10) == NULL);
    CHECK(ab_auth_limiter_new(-1, 1000, 10) == NULL);
    CHECK(ab_auth_limiter_new(5, 0, 10) == NULL);
    CHECK(ab_auth_limiter_new(5, -1, 10) == NULL);
    CHECK(ab_auth_limiter_new(5, 1000, 0) == NULL);
    CHECK(ab_auth_limiter_new(5, 1000, ((size_t)1 << 20) + 1) == NULL);
    CHECK(ab_auth_limiter_new(5, 1000, SIZE_MAX) == NULL);
    /* A NULL limiter or key blocks and counts nothing. */
    int64_t retry = -1;
    CHECK(!ab_auth_limiter_blocked(NULL, "10.0.0.1", 0, &retry));
    CHECK_INT_EQ(retry, 0);
    ab_auth_limiter_fail(NULL, "10.0.0.1", 0);
    ab_auth_limiter_free(NULL);
    struct ab_auth_limiter *l = ab_auth_limiter_new(1, 1000, 4);
    REQUIRE(l != NULL);
    ab_auth_limiter_fail(l, NULL, 0);
    CHECK(!ab_auth_limiter_blocked(l, NULL, 0, NULL));
    /* The empty key is a key like any other. */
    ab_auth_limiter_fail(l, "", 0);
    CHECK(ab_auth_limiter_blocked(l, "", 0, NULL));
    /* Keys are compared by their first 63 bytes: longer ones sharing those are one source. */
    char a[100], b[100];
    memset(a, 'a', sizeof(a) - 1);
    a[sizeof(a) - 1] = '\0';
    memcpy(b, a, sizeof(b));
    b[80] = 'b';
    ab_auth_limiter_fail(l, a, 0);
    CHECK(ab_auth_limiter_blocked(l, b, 0, NULL));
    b[62] = 'b';
    CHECK(!ab_auth_limiter_blocked(l, b, 0, NULL));
    ab_auth_limiter_free(l);
}

TEST(webhook_auth_limiter_eviction)
{
    /* Full with three sources; the fourth evicts the oldest window, blocked or not. */
    struct ab_auth_limiter *l = ab_auth_limiter_new(2, 1000, 3);
    REQUIRE(l != NULL);
    ab_auth_limiter_fail(l, "a", 0);
    ab_auth_limiter_fail(l, "a", 1);
    ab_auth_limiter_fail(l, "b", 10);
    ab_auth_limiter_fail(l, "b", 11);
    ab_auth_limiter_fail(l, "c", 20);
    ab_auth_limiter_fail(l, "c", 21);
    CHECK(ab_auth_limiter_blocked(l, "a", 30, NULL));
    ab_auth_limiter_fail(l, "d", 30);
    CHECK(!ab_auth_limiter_blocked(l, "a", 30, NULL)); /* evicted: the oldest */
    CHECK(ab_auth_limiter_blocked(l, "b", 30, NULL));  /* newer ones stay */
    CHECK(ab_auth_limiter_blocked(l, "c", 30, NULL));
    ab_auth_limiter_fail(l, "d", 31);
    CHECK(ab_auth_limiter_blocked(l, "d", 31, NULL));
    ab_auth_limiter_free(l);

    /* An expired window is the one evicted, even if it was blocked, before any live one;
     * a window restarted later counts by its new start. */
    l = ab_auth_limiter_new(2, 100, 3);
    REQUIRE(l != NULL);
    ab_auth_limiter_fail(l, "a", 0);
    ab_auth_limiter_fail(l, "a", 0); /* blocked until 100 */
    ab_auth_limiter_fail(l, "b", 10);
    ab_auth_limiter_fail(l, "c", 60);
    ab_auth_limiter_fail(l, "c", 60);  /* blocked until 160 */
    ab_auth_limiter_fail(l, "d", 120); /* a has expired: it goes */
    ab_auth_limiter_fail(l, "b", 121);
    CHECK(ab_auth_limiter_blocked(l, "c", 121, NULL));
    CHECK(!ab_auth_limiter_blocked(l, "b", 121, NULL)); /* its window ended: 1 of 2 */
    /* b restarted at 121, so c (60) is now the oldest and goes first. */
    ab_auth_limiter_fail(l, "e", 122);
    CHECK(!ab_auth_limiter_blocked(l, "c", 122, NULL));
    ab_auth_limiter_fail(l, "b", 123);
    CHECK(ab_auth_limiter_blocked(l, "b", 123, NULL)); /* its count survived */
    ab_auth_limiter_fail(l, "d", 124);
    CHECK(ab_auth_limiter_blocked(l, "d", 124, NULL));
    ab_auth_limiter_free(l);
}

TEST(webhook_auth_limiter_memory_stays_bounded)
{
    /* 20000 addresses, each failing until blocked, through a table of 8: only the last 8
     * are remembered, all of them blocked, and every earlier one was evicted (it was the
     * oldest each time). */
    struct ab_auth_limiter *l = ab_auth_limiter_new(3, 1000000, 8);
    REQUIRE(l != NULL);
    char key[32];
    for (int i = 0; i < 20000; i++) {
        snprintf(key, sizeof(key), "2001:db8::%x", i);
        for (int f = 0; f < 3; f++)
            ab_auth_limiter_fail(l, key, i);
    }
    int blocked = 0;
    for (int i = 0; i < 20000; i++) {
        snprintf(key, sizeof(key), "2001:db8::%x", i);
        bool b = ab_auth_limiter_blocked(l, key, 20000, NULL);
        blocked += b;
        if (b != (i >= 20000 - 8))
            ab_test_fail(__FILE__, __LINE__, "%s: %s", key, b ? "blocked" : "not blocked");
    }
    CHECK_INT_EQ(blocked, 8);
    ab_auth_limiter_free(l);
}

/* A model of the limiter's documented behaviour: sources in the order of their windows'
 * starts, the oldest evicted first. Time only moves forward here. */
struct model_source {
    int key;
    int64_t start;
    int failures;
};

TEST(webhook_auth_limiter_matches_model)
{
    enum { CAP = 16, KEYS = 200, MAX = 3, WINDOW = 50 };
    struct ab_auth_limiter *l = ab_auth_limiter_new(MAX, WINDOW, CAP);
    REQUIRE(l != NULL);
    struct model_source m[CAP];
    int count = 0;
    int64_t now = 0;
    uint64_t rng = 0x9e3779b97f4a7c15ULL;
    char key[16];
    for (int op = 0; op < 100000; op++) {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        now += (int64_t)(rng % 3);
        /* Mostly a few hot keys, so windows fill, expire and restart. */
        int k = (int)((rng >> 8) % (rng & 0x100 ? 24 : KEYS));
        snprintf(key, sizeof(key), "10.0.%d.%d", k / 256, k % 256);
        int at = -1;
        for (int i = 0; i < count; i++)
            if (m[i].key == k)
                at = i;
        if ((rng >> 20) % 4 != 0) {
            if (at >= 0 && now - m[at].start >= WINDOW) { /* restart: to the newest end */
                struct model_source s = {k, now, 1};
                memmove(&m[at], &m[at + 1], (size_t)(count - at - 1) * sizeof(m[0]));
                m[count - 1] = s;
            } else if (at >= 0) {
                m[at].failures += m[at].failures < MAX;
            } else {
                if (count == CAP) {
                    memmove(&m[0], &m[1], (CAP - 1) * sizeof(m[0]));
                    count--;
                }
                m[count++] = (struct model_source){k, now, 1};
            }
            ab_auth_limiter_fail(l, key, now);
        } else {
            int64_t retry = -1;
            bool want = at >= 0 && now - m[at].start < WINDOW && m[at].failures >= MAX;
            bool got = ab_auth_limiter_blocked(l, key, now, &retry);
            if (got != want) {
                ab_test_fail(__FILE__, __LINE__, "op %d, %s at %lld: %d, want %d", op, key,
                             (long long)now, got, want);
                break;
            }
            if (want)
                CHECK_INT_EQ(retry, m[at].start + WINDOW - now);
        }
    }
    ab_auth_limiter_free(l);
}

struct hammer {
    struct ab_auth_limiter *l;
    int id;
    int blocked;
};

static void *hammer_thread(void *arg)
{
    struct hammer *h = arg;
    char key[32];
    for (int i = 0; i < 50000; i++) {
        /* A few keys shared by all threads, and this thread's own: more than fit in all, so
         * sources are evicted while others look them up. */
        if (i % 4 == 0)
            snprintf(key, sizeof(key), "198.51.100.%d", i / 4 % 8);
        else
            snprintf(key, sizeof(key), "2001:db8:%x::%x", h->id, i % 97);
        int64_t now = i / 10;
        int64_t retry = 0;
        if (ab_auth_limiter_blocked(h->l, key, now, &retry)) {
            h->blocked++;
            if (retry < 1 || retry > 100)
                return "bad retry_after";
        } else {
            ab_auth_limiter_fail(h->l, key, now);
        }
    }
    return NULL;
}

TEST(webhook_auth_limiter_threads)
{
    struct ab_auth_limiter *l = ab_auth_limiter_new(5, 100, 256);
    REQUIRE(l != NULL);
    pthread_t threads[4];
    struct hammer h[4];
    for (int i = 0; i < 4; i++) {
        h[i] = (struct hammer){l, i, 0};
        REQUIRE(pthread_create(&threads[i], NULL, hammer_thread, &h[i]) == 0);
    }
    int blocked = 0;
    for (int i = 0; i < 4; i++) {
        void *result = NULL;
        pthread_join(threads[i], &result);
        if (result != NULL)
            ab_test_fail(__FILE__, __LINE__, "thread %d: %s", i, (const char *)result);
        blocked += h[i].blocked;
    }
    CHECK(blocked > 0); /* sources did get blocked along the way */
    /* Still consistent: a new key blocks at exactly the fifth failure. */
    for (int f = 0; f < 4; f++)
        ab_auth_limiter_fail(l, "203.0.113.1", 10000);
    CHECK(!ab_auth_limiter_blocked(l, "203.0.113.1", 10000, NULL));
    ab_auth_limiter_fail(l, "203.0.113.1", 10000);
    CHECK(ab_auth_limiter_blocked(l, "203.0.113.1", 10000, NULL));
    ab_auth_limiter_free(l);
}
