/* Tests for common/netguard, the SSRF guard: every refused range with its reason, the edges
 * of the ranges, the IPv6 forms that carry an IPv4 address, public addresses, the allow
 * list (parsing, masking, bad entries) and the sockaddr and formatting entry points. */
#include "test.h"

#include "common/netguard.h"

#include <arpa/inet.h>
#include <netinet/in.h>

struct verdict_case {
    const char *address;
    const char *reason; /* "" = allowed */
};

/* Checks every case against g, failing at `line` with the address for each mismatch. */
static void expect_verdicts(int line, const struct ab_netguard *g, const struct verdict_case *c,
                            size_t n)
{
    for (size_t i = 0; i < n; i++) {
        char reason[AB_NETGUARD_REASON_MAX];
        memset(reason, '#', sizeof(reason));
        bool allowed = ab_netguard_allows_text(g, c[i].address, reason, sizeof(reason));
        bool want_allowed = c[i].reason[0] == '\0';
        if (allowed != want_allowed || strcmp(reason, c[i].reason) != 0)
            ab_test_fail(__FILE__, line, "%s: %s (\"%s\"), want %s (\"%s\")", c[i].address,
                         allowed ? "allowed" : "refused", reason,
                         want_allowed ? "allowed" : "refused", c[i].reason);
    }
}

#define EXPECT_VERDICTS(g, cases)                                                                  \
    expect_verdicts(__LINE__, g, cases, sizeof(cases) / sizeof(cases[0]))

TEST(netguard_refuses_every_ipv4_range)
{
    static const struct verdict_case cases[] = {
        {"0.0.0.0", "unspecified"},
        {"0.255.255.255", "unspecified"},
        {"127.0.0.1", "loopback"},
        {"127.255.255.254", "loopback"},
        {"10.0.0.0", "private"},
        {"10.255.255.255", "private"},
        {"172.16.0.1", "private"},
        {"172.20.10.3", "private"},
        {"192.168.0.1", "private"},
        {"192.168.255.255", "private"},
        {"100.64.0.1", "cgnat"},
        {"100.127.255.255", "cgnat"},
        {"169.254.0.1", "link-local"},
        {"169.254.255.255", "link-local"},
        {"169.254.169.254", "metadata"},
        {"169.254.169.253", "link-local"},
        {"100.100.100.200", "metadata"},
        {"100.100.100.201", "cgnat"},
        {"224.0.0.1", "multicast"},
        {"239.255.255.250", "multicast"},
        {"240.0.0.1", "reserved"},
        {"255.255.255.254", "reserved"},
        {"255.255.255.255", "broadcast"},
        {"192.0.0.8", "reserved"},
        {"192.0.0.255", "reserved"},
        {"198.18.0.1", "benchmarking"},
        {"198.19.255.255", "benchmarking"},
        {"192.0.2.1", "documentation"},
        {"198.51.100.7", "documentation"},
        {"203.0.113.255", "documentation"},
    };
    EXPECT_VERDICTS(NULL, cases);
}

TEST(netguard_ipv4_boundaries)
{
    static const struct verdict_case cases[] = {
        {"172.15.255.255", ""},
        {"172.16.0.0", "private"},
        {"172.31.255.255", "private"},
        {"172.32.0.0", ""},
        {"100.63.255.255", ""},
        {"100.64.0.0", "cgnat"},
        {"100.127.255.255", "cgnat"},
        {"100.128.0.0", ""},
        {"9.255.255.255", ""},
        {"11.0.0.0", ""},
        {"126.255.255.255", ""},
        {"128.0.0.0", ""},
        {"1.0.0.0", ""},
        {"169.253.255.255", ""},
        {"169.255.0.0", ""},
        {"192.167.255.255", ""},
        {"192.169.0.0", ""},
        {"223.255.255.255", ""},
        {"224.0.0.0", "multicast"},
        {"239.255.255.255", "multicast"},
        {"240.0.0.0", "reserved"},
        {"191.255.255.255", ""},
        {"192.0.1.0", ""},
        {"192.0.3.0", ""},
        {"198.17.255.255", ""},
        {"198.18.0.0", "benchmarking"},
        {"198.20.0.0", ""},
        {"198.51.99.255", ""},
        {"198.51.101.0", ""},
        {"203.0.112.255", ""},
        {"203.0.114.0", ""},
    };
    EXPECT_VERDICTS(NULL, cases);
}

TEST(netguard_refuses_every_ipv6_range)
{
    static const struct verdict_case cases[] = {
        {"::", "unspecified"},
        {"::1", "loopback"},
        {"fc00::1", "private"},
        {"fd12:3456:789a::1", "private"},
        {"fdff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", "private"},
        {"fd00:ec2::254", "metadata"},
        {"fd00:ec2::253", "private"},
        {"fe80::1", "link-local"},
        {"febf:ffff::1", "link-local"},
        {"fec0::1", "site-local"},
        {"feff::1", "site-local"},
        {"ff02::1", "multicast"},
        {"ff0e::101", "multicast"},
        {"2001:db8::1", "documentation"},
        {"2001:db8:ffff:ffff:ffff:ffff:ffff:ffff", "documentation"},
        {"3fff::1", "documentation"},
        {"3fff:fff::1", "documentation"},
        {"100::1", "discard"},
        {"100::ffff:ffff:ffff:ffff", "discard"},
        {"2001::1", "ipv6-tunnel"}, /* Teredo */
        {"2001:0:4136:e378:8000:63bf:3fff:fdd2", "ipv6-tunnel"},
        {"64:ff9b:1::a00:1", "ipv6-tunnel"}, /* local-use NAT64 */
        {"2001:2::1", "benchmarking"},
    };
    EXPECT_VERDICTS(NULL, cases);
}

TEST(netguard_ipv6_boundaries)
{
    static const struct verdict_case cases[] = {
        {"fbff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", ""},
        {"fe00::", ""},
        {"fe7f:ffff::1", ""},
        {"feff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", "site-local"},
        {"2001:db7:ffff:ffff:ffff:ffff:ffff:ffff", ""},
        {"2001:db9::", ""},
        {"2001:1::1", ""},
        {"2001:2:1::1", ""},
        {"100:0:0:1::", ""},
        {"ff::1", ""},
        {"3ffe:ffff::1", ""},
        {"3fff:1000::", ""},
        {"64:ff9b:2::1", ""},
        {"::2:0:0:1", ""}, /* outside ::/96 and ::ffff:0:0/96 */
    };
    EXPECT_VERDICTS(NULL, cases);
}

TEST(netguard_ipv4_inside_ipv6_is_judged_as_ipv4)
{
    static const struct verdict_case cases[] = {
        /* IPv4-mapped */
        {"::ffff:127.0.0.1", "loopback"},
        {"::ffff:7f00:1", "loopback"},
        {"::ffff:10.1.2.3", "private"},
        {"::ffff:169.254.169.254", "metadata"},
        {"::ffff:100.100.100.200", "metadata"},
        {"::ffff:0.0.0.0", "unspecified"},
        {"::ffff:255.255.255.255", "broadcast"},
        {"::ffff:8.8.8.8", ""},
        {"::ffff:172.32.0.0", ""},
        /* IPv4-compatible (deprecated): "::" and "::1" keep their own meaning */
        {"::127.0.0.1", "loopback"},
        {"::192.168.1.1", "private"},
        {"::0.0.0.2", "unspecified"},
        {"::8.8.8.8", ""},
        /* NAT64 well-known prefix */
        {"64:ff9b::7f00:1", "loopback"},
        {"64:ff9b::169.254.169.254", "metadata"},
        {"64:ff9b::a9fe:a9fe", "metadata"},
        {"64:ff9b::c0a8:101", "private"},
        {"64:ff9b::808:808", ""},
        {"64:ff9b::1.1.1.1", ""},
        /* 6to4: the IPv4 address is in bits 16..47, whatever follows */
        {"2002:7f00:1::", "loopback"},
        {"2002:7f00:1:1234:5678::1", "loopback"},
        {"2002:a9fe:a9fe::1", "metadata"},
        {"2002:c000:201::1", "documentation"},
        {"2002:a00::", "private"},
        {"2002:808:808::1", ""},
        {"2002:101:101:ffff:ffff:ffff:ffff:ffff", ""},
    };
    EXPECT_VERDICTS(NULL, cases);
}

TEST(netguard_allows_public_addresses)
{
    static const struct verdict_case cases[] = {
        {"8.8.8.8", ""},
        {"1.1.1.1", ""},
        {"9.9.9.9", ""},
        {"140.82.112.3", ""},
        {"52.94.236.248", ""},
        {"2606:4700:4700::1111", ""},
        {"2001:4860:4860::8888", ""},
        {"2a00:1450:4001:82a::200e", ""},
    };
    EXPECT_VERDICTS(NULL, cases);
    /* An empty allow list changes nothing. */
    struct ab_netguard *g = NULL;
    REQUIRE(ab_netguard_new("", &g, NULL, 0) == AB_OK && g != NULL);
    EXPECT_VERDICTS(g, cases);
    CHECK(!ab_netguard_allows_text(g, "127.0.0.1", NULL, 0));
    ab_netguard_free(g);
    REQUIRE(ab_netguard_new(NULL, &g, NULL, 0) == AB_OK && g != NULL);
    CHECK(!ab_netguard_allows_text(g, "10.0.0.1", NULL, 0));
    ab_netguard_free(g);
    ab_netguard_free(NULL);
}

TEST(netguard_invalid_text)
{
    static const struct verdict_case cases[] = {
        {"", "invalid"},
        {"localhost", "invalid"},
        {"127.1", "invalid"}, /* inet_aton would take it; inet_pton does not */
        {"0x7f.0.0.1", "invalid"},
        {"017700000001", "invalid"},
        {"2130706433", "invalid"}, /* 127.0.0.1 as one number */
        {" 127.0.0.1", "invalid"},
        {"127.0.0.1 ", "invalid"},
        {"127.0.0.1:80", "invalid"},
        {"[::1]", "invalid"},
        {"fe80::1%eth0", "invalid"},
        {"10.0.0.0/8", "invalid"},
        {"256.0.0.1", "invalid"},
        {"1:2:3:4:5:6:7:8:9", "invalid"},
    };
    EXPECT_VERDICTS(NULL, cases);
    char reason[AB_NETGUARD_REASON_MAX];
    CHECK(!ab_netguard_allows_text(NULL, NULL, reason, sizeof(reason)));
    CHECK_STR_EQ(reason, "invalid");
}

TEST(netguard_allow_list)
{
    struct ab_netguard *g = NULL;
    char err[256] = "";
    /* Commas, spaces, tabs, newlines and empty entries between commas. */
    const char *allow = " 127.0.0.1/32, ::1 ,,10.0.0.0/8\tfd00::/8\n192.168.7.9,, "
                        "fe80::1234/128 ,172.16.0.0/12,";
    REQUIRE(ab_netguard_new(allow, &g, err, sizeof(err)) == AB_OK);
    REQUIRE(g != NULL);
    static const struct verdict_case cases[] = {
        {"127.0.0.1", ""}, /* /32 */
        {"127.0.0.2", "loopback"},
        {"::1", ""},            /* a single address is a /128 */
        {"::2", "unspecified"}, /* ::0.0.0.2 */
        {"10.0.0.1", ""},
        {"10.255.255.255", ""},
        {"11.0.0.0", ""}, /* public anyway */
        {"fd00::1", ""},
        {"fd00:ec2::254", ""}, /* allowed whatever its reason */
        {"fdff::1", ""},
        {"fc00::1", "private"}, /* in fc00::/7, not in fd00::/8 */
        {"192.168.7.9", ""},
        {"192.168.7.10", "private"},
        {"fe80::1234", ""}, /* /128 */
        {"fe80::1235", "link-local"},
        {"172.31.0.1", ""},
        {"169.254.169.254", "metadata"},
        {"100.100.100.200", "metadata"},
        /* An IPv4 entry also covers the IPv6 forms that carry the address. */
        {"::ffff:127.0.0.1", ""},
        {"::ffff:127.0.0.2", "loopback"},
        {"64:ff9b::a01:203", ""},
        {"2002:a01:203::", ""},
        {"8.8.8.8", ""},
    };
    EXPECT_VERDICTS(g, cases);
    ab_netguard_free(g);
}

TEST(netguard_allow_list_masks_host_bits_and_edges)
{
    struct ab_netguard *g = NULL;
    char err[256] = "";
    /* Host bits set: "10.1.2.3/8" is 10.0.0.0/8; "fd12:3456::1/16" is fd12::/16. Odd prefix
     * lengths cut inside a byte. */
    REQUIRE(ab_netguard_new("10.1.2.3/8 fd12:3456::1/16 169.254.169.255/31 192.168.1.77/27 "
                            "fe80::ff/121",
                            &g, err, sizeof(err)) == AB_OK);
    static const struct verdict_case cases[] = {
        {"10.200.0.1", ""},
        {"fd12::1", ""},
        {"fd12:ffff::1", ""},
        {"fd13::1", "private"},
        {"169.254.169.254", ""}, /* in 169.254.169.254/31 */
        {"169.254.169.255", ""},
        {"169.254.169.253", "link-local"},
        {"192.168.1.64", ""}, /* 192.168.1.64/27 = .64 - .95 */
        {"192.168.1.95", ""},
        {"192.168.1.63", "private"},
        {"192.168.1.96", "private"},
        {"fe80::80", ""}, /* fe80::80/121 = ::80 - ::ff */
        {"fe80::ff", ""},
        {"fe80::7f", "link-local"},
        {"fe80::100", "link-local"},
    };
    EXPECT_VERDICTS(g, cases);
    ab_netguard_free(g);

    /* /0 allows the whole family, and only that family. */
    REQUIRE(ab_netguard_new("0.0.0.0/0", &g, err, sizeof(err)) == AB_OK);
    static const struct verdict_case all_v4[] = {
        {"127.0.0.1", ""},   {"169.254.169.254", ""},   {"::ffff:10.0.0.1", ""},
        {"::1", "loopback"}, {"fe80::1", "link-local"},
    };
    EXPECT_VERDICTS(g, all_v4);
    ab_netguard_free(g);
    REQUIRE(ab_netguard_new("::/0", &g, err, sizeof(err)) == AB_OK);
    static const struct verdict_case all_v6[] = {
        {"::1", ""},
        {"fe80::1", ""},
        {"::ffff:127.0.0.1", ""}, /* matched as given */
        {"127.0.0.1", "loopback"},
    };
    EXPECT_VERDICTS(g, all_v6);
    ab_netguard_free(g);

    /* An IPv6 entry for mapped addresses allows exactly those, not the IPv4 address. */
    REQUIRE(ab_netguard_new("::ffff:127.0.0.0/104", &g, err, sizeof(err)) == AB_OK);
    static const struct verdict_case mapped[] = {
        {"::ffff:127.0.0.1", ""},
        {"127.0.0.1", "loopback"},
    };
    EXPECT_VERDICTS(g, mapped);
    ab_netguard_free(g);
}

TEST(netguard_allow_list_rejects_bad_entries)
{
    static const struct {
        const char *allow, *named;
    } bad[] = {
        {"10.0.0.0/33", "10.0.0.0/33"},
        {"::1/129", "::1/129"},
        {"127.0.0.1, 10.0.0.0/-1", "10.0.0.0/-1"},
        {"10.0.0.0/+8", "10.0.0.0/+8"},
        {"10.0.0.0/", "10.0.0.0/"},
        {"10.0.0.0/8x", "10.0.0.0/8x"},
        {"10.0.0.0/0008", "10.0.0.0/0008"},
        {"10.0.0.0/8/8", "10.0.0.0/8/8"},
        {"/8", "/8"},
        {"localhost", "localhost"},
        {"10.0.0", "10.0.0"},
        {"256.1.1.1", "256.1.1.1"},
        {"127.1", "127.1"},
        {"[::1]", "[::1]"},
        {"fe80::1%eth0", "fe80::1%eth0"},
        {"::1, 10.0.0.0/8; 192.168.0.0/16", "10.0.0.0/8;"},
        {"10.0.0.0 /8", "/8"}, /* whitespace separates: "/8" alone */
        {"garbage", "garbage"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        /* Anything but NULL, to see that a failure sets it (never dereferenced). */
        struct ab_netguard *g = (struct ab_netguard *)&bad[i];
        char err[256] = "";
        enum ab_err e = ab_netguard_new(bad[i].allow, &g, err, sizeof(err));
        if (e != AB_ERR_CONFIG)
            ab_test_fail(__FILE__, __LINE__, "\"%s\" gave %d", bad[i].allow, (int)e);
        CHECK(g == NULL);
        char quoted[64];
        snprintf(quoted, sizeof(quoted), "\"%s\"", bad[i].named);
        CHECK_STR_CONTAINS(err, quoted);
        if (e == AB_OK)
            ab_netguard_free(g);
    }

    /* An entry of any length is named, cut short; the message stays a string. */
    char longer[300];
    memset(longer, '1', sizeof(longer) - 1);
    longer[sizeof(longer) - 1] = '\0';
    struct ab_netguard *g = NULL;
    char err[128];
    CHECK_INT_EQ(ab_netguard_new(longer, &g, err, sizeof(err)), AB_ERR_CONFIG);
    CHECK_STR_CONTAINS(err, "\"1111");
    CHECK(strlen(err) < sizeof(err));
    /* errstr may be NULL or tiny. */
    CHECK_INT_EQ(ab_netguard_new("nope", &g, NULL, 0), AB_ERR_CONFIG);
    char tiny[1] = "#";
    CHECK_INT_EQ(ab_netguard_new("nope", &g, tiny, sizeof(tiny)), AB_ERR_CONFIG);
    CHECK(tiny[0] == '\0');
    CHECK_INT_EQ(ab_netguard_new("::1", NULL, err, sizeof(err)), AB_ERR_CONFIG);
}

TEST(netguard_sockaddr_entry_point)
{
    struct sockaddr_in sin;
    memset(&sin, 0, sizeof(sin));
    sin.sin_family = AF_INET;
    sin.sin_port = htons(443);
    char reason[AB_NETGUARD_REASON_MAX];

    inet_pton(AF_INET, "169.254.169.254", &sin.sin_addr);
    CHECK(!ab_netguard_allows(NULL, (struct sockaddr *)&sin, sizeof(sin), reason, sizeof(reason)));
    CHECK_STR_EQ(reason, "metadata");
    inet_pton(AF_INET, "8.8.8.8", &sin.sin_addr);
    memset(reason, '#', sizeof(reason));
    CHECK(ab_netguard_allows(NULL, (struct sockaddr *)&sin, sizeof(sin), reason, sizeof(reason)));
    CHECK_STR_EQ(reason, "");
    CHECK(ab_netguard_allows(NULL, (struct sockaddr *)&sin, sizeof(sin), NULL, 0));
    /* Too short for the family. */
    CHECK(!ab_netguard_allows(NULL, (struct sockaddr *)&sin, sizeof(sin) - 1, reason,
                              sizeof(reason)));
    CHECK_STR_EQ(reason, "invalid");
    CHECK(!ab_netguard_allows(NULL, NULL, 0, reason, sizeof(reason)));
    CHECK_STR_EQ(reason, "invalid");

    struct sockaddr_in6 sin6;
    memset(&sin6, 0, sizeof(sin6));
    sin6.sin6_family = AF_INET6;
    sin6.sin6_port = htons(443);
    inet_pton(AF_INET6, "::ffff:127.0.0.1", &sin6.sin6_addr);
    CHECK(
        !ab_netguard_allows(NULL, (struct sockaddr *)&sin6, sizeof(sin6), reason, sizeof(reason)));
    CHECK_STR_EQ(reason, "loopback");
    inet_pton(AF_INET6, "2606:4700:4700::1111", &sin6.sin6_addr);
    CHECK(ab_netguard_allows(NULL, (struct sockaddr *)&sin6, sizeof(sin6), reason, sizeof(reason)));
    CHECK(!ab_netguard_allows(NULL, (struct sockaddr *)&sin6, sizeof(struct sockaddr_in), reason,
                              sizeof(reason)));
    CHECK_STR_EQ(reason, "invalid");
    /* A sockaddr_storage, as getaddrinfo's callers often hold, at a larger len. */
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof(ss));
    memcpy(&ss, &sin6, sizeof(sin6));
    CHECK(ab_netguard_allows(NULL, (struct sockaddr *)&ss, sizeof(ss), reason, sizeof(reason)));

    /* Other families are refused. */
    struct sockaddr_storage other;
    memset(&other, 0, sizeof(other));
    other.ss_family = AF_UNIX;
    CHECK(!ab_netguard_allows(NULL, (struct sockaddr *)&other, sizeof(other), reason,
                              sizeof(reason)));
    CHECK_STR_EQ(reason, "family");
    other.ss_family = AF_UNSPEC;
    CHECK(!ab_netguard_allows(NULL, (struct sockaddr *)&other, sizeof(other), reason,
                              sizeof(reason)));
    CHECK_STR_EQ(reason, "family");

    /* The allow list applies here too; a small reason buffer gets a cut, terminated word. */
    struct ab_netguard *g = NULL;
    REQUIRE(ab_netguard_new("127.0.0.0/8", &g, NULL, 0) == AB_OK);
    inet_pton(AF_INET, "127.0.0.53", &sin.sin_addr);
    CHECK(ab_netguard_allows(g, (struct sockaddr *)&sin, sizeof(sin), reason, sizeof(reason)));
    inet_pton(AF_INET6, "::ffff:127.0.0.53", &sin6.sin6_addr);
    CHECK(ab_netguard_allows(g, (struct sockaddr *)&sin6, sizeof(sin6), reason, sizeof(reason)));
    inet_pton(AF_INET, "10.0.0.1", &sin.sin_addr);
    char small[4];
    CHECK(!ab_netguard_allows(g, (struct sockaddr *)&sin, sizeof(sin), small, sizeof(small)));
    CHECK_STR_EQ(small, "pri");
    ab_netguard_free(g);
}

TEST(netguard_reason_words_fit_the_max)
{
    static const char *const addrs[] = {
        "0.0.0.1",         "127.0.0.1", "10.0.0.1",        "100.64.0.1", "169.254.1.1",
        "169.254.169.254", "224.0.0.1", "255.255.255.255", "240.0.0.1",  "198.18.0.1",
        "192.0.2.1",       "100::1",    "2001::1",         "fec0::1"};
    for (size_t i = 0; i < sizeof(addrs) / sizeof(addrs[0]); i++) {
        char reason[64];
        CHECK(!ab_netguard_allows_text(NULL, addrs[i], reason, sizeof(reason)));
        CHECK(strlen(reason) > 0 && strlen(reason) < AB_NETGUARD_REASON_MAX);
    }
}

TEST(netguard_format)
{
    char out[64];
    struct sockaddr_in sin;
    memset(&sin, 0, sizeof(sin));
    sin.sin_family = AF_INET;
    sin.sin_port = htons(8080);
    inet_pton(AF_INET, "127.0.0.1", &sin.sin_addr);
    ab_netguard_format((struct sockaddr *)&sin, sizeof(sin), out, sizeof(out));
    CHECK_STR_EQ(out, "127.0.0.1");

    struct sockaddr_in6 sin6;
    memset(&sin6, 0, sizeof(sin6));
    sin6.sin6_family = AF_INET6;
    inet_pton(AF_INET6, "::1", &sin6.sin6_addr);
    ab_netguard_format((struct sockaddr *)&sin6, sizeof(sin6), out, sizeof(out));
    CHECK_STR_EQ(out, "::1");
    inet_pton(AF_INET6, "::ffff:169.254.169.254", &sin6.sin6_addr);
    ab_netguard_format((struct sockaddr *)&sin6, sizeof(sin6), out, sizeof(out));
    CHECK_STR_EQ(out, "::ffff:169.254.169.254");
    inet_pton(AF_INET6, "2606:4700:4700::1111", &sin6.sin6_addr);
    ab_netguard_format((struct sockaddr *)&sin6, sizeof(sin6), out, sizeof(out));
    CHECK_STR_EQ(out, "2606:4700:4700::1111");

    /* Exactly enough room, and one byte less ("?" rather than a cut address). */
    char fit[10];
    ab_netguard_format((struct sockaddr *)&sin, sizeof(sin), fit, sizeof(fit));
    CHECK_STR_EQ(fit, "127.0.0.1");
    ab_netguard_format((struct sockaddr *)&sin, sizeof(sin), fit, 9);
    CHECK_STR_EQ(fit, "?");

    /* What cannot be formatted. */
    ab_netguard_format(NULL, 0, out, sizeof(out));
    CHECK_STR_EQ(out, "?");
    ab_netguard_format((struct sockaddr *)&sin, sizeof(sin) - 1, out, sizeof(out));
    CHECK_STR_EQ(out, "?");
    struct sockaddr_storage other;
    memset(&other, 0, sizeof(other));
    other.ss_family = AF_UNIX;
    ab_netguard_format((struct sockaddr *)&other, sizeof(other), out, sizeof(out));
    CHECK_STR_EQ(out, "?");
    char one[1] = "#";
    ab_netguard_format(NULL, 0, one, sizeof(one));
    CHECK(one[0] == '\0');
    ab_netguard_format((struct sockaddr *)&sin, sizeof(sin), NULL, 0); /* no crash */
}
