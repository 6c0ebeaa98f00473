/* The SSRF guard: special-purpose address ranges (the IANA IPv4 and IPv6 special-purpose
 * registries, RFC 6890 and its updates), the IPv6 forms that carry an IPv4 address, and the
 * operator's allow list. */
#include "common/netguard.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/util.h"

struct ab_netguard {
    size_t count;
    struct ab_net nets[]; /* the allow list, in the order written */
};

struct range {
    struct ab_net net;
    const char *reason;
};

/* The refused IPv4 ranges. The first match names the reason, so the exact addresses
 * (metadata services, the limited broadcast address) come before the ranges that hold
 * them: "metadata" tells an operator more than "link-local". */
static const struct range refused_v4[] = {
    {{AF_INET, {169, 254, 169, 254}, 32}, "metadata"}, /* AWS, GCP, Azure, OCI, ... */
    {{AF_INET, {100, 100, 100, 200}, 32}, "metadata"}, /* Alibaba Cloud */
    {{AF_INET, {255, 255, 255, 255}, 32}, "broadcast"},
    {{AF_INET, {0}, 8}, "unspecified"}, /* "this network"; 0.0.0.0 reaches the host */
    {{AF_INET, {127}, 8}, "loopback"},
    {{AF_INET, {10}, 8}, "private"},
    {{AF_INET, {172, 16}, 12}, "private"},
    {{AF_INET, {192, 168}, 16}, "private"},
    {{AF_INET, {100, 64}, 10}, "cgnat"},
    {{AF_INET, {169, 254}, 16}, "link-local"},
    {{AF_INET, {224}, 4}, "multicast"},
    {{AF_INET, {240}, 4}, "reserved"},
    {{AF_INET, {192, 0, 0}, 24}, "reserved"}, /* IETF protocol assignments */
    {{AF_INET, {198, 18}, 15}, "benchmarking"},
    {{AF_INET, {192, 0, 2}, 24}, "documentation"},
    {{AF_INET, {198, 51, 100}, 24}, "documentation"},
    {{AF_INET, {203, 0, 113}, 24}, "documentation"},
};

/* The refused IPv6 ranges, after the IPv4-carrying forms have been unwrapped (see
 * embeds_v4). Beyond the ranges the API names, three more that IANA marks as not
 * globally reachable: benchmarking 2001:2::/48 (RFC 5180), documentation 3fff::/20
 * (RFC 9637) and local-use NAT64 64:ff9b:1::/48 (RFC 8215, where the IPv4 address sits
 * depends on a prefix length only the site knows, so it cannot be unwrapped). */
static const struct range refused_v6[] = {
    {{AF_INET6, {0xfd, 0x00, 0x0e, 0xc2, [14] = 0x02, [15] = 0x54}, 128}, "metadata"},
    {{AF_INET6, {0}, 128}, "unspecified"},
    {{AF_INET6, {[15] = 1}, 128}, "loopback"},
    {{AF_INET6, {0xfc}, 7}, "private"}, /* unique local addresses */
    {{AF_INET6, {0xfe, 0x80}, 10}, "link-local"},
    {{AF_INET6, {0xfe, 0xc0}, 10}, "site-local"}, /* deprecated, still routed inside */
    {{AF_INET6, {0xff}, 8}, "multicast"},
    {{AF_INET6, {0x01, 0x00}, 64}, "discard"},
    {{AF_INET6, {0x20, 0x01, 0x00, 0x02, 0x00, 0x00}, 48}, "benchmarking"},
    {{AF_INET6, {0x20, 0x01}, 32}, "ipv6-tunnel"}, /* Teredo */
    {{AF_INET6, {0x20, 0x01, 0x0d, 0xb8}, 32}, "documentation"},
    {{AF_INET6, {0x3f, 0xff}, 20}, "documentation"},
    {{AF_INET6, {0x00, 0x64, 0xff, 0x9b, 0x00, 0x01}, 48}, "ipv6-tunnel"},
};

/* IPv6 prefixes whose addresses carry an IPv4 address at byte `offset`. */
static const struct {
    struct ab_net net;
    size_t offset;
} embeds_v4[] = {
    {{AF_INET6, {[10] = 0xff, [11] = 0xff}, 96}, 12}, /* IPv4-mapped */
    {{AF_INET6, {0}, 96}, 12},                        /* IPv4-compatible (deprecated) */
    {{AF_INET6, {0x00, 0x64, 0xff, 0x9b}, 96}, 12},   /* NAT64 well-known prefix */
    {{AF_INET6, {0x20, 0x02}, 16}, 2},                /* 6to4 */
};

#define COUNT(a) (sizeof(a) / sizeof((a)[0]))

static bool in_net(int family, const unsigned char *addr, const struct ab_net *n)
{
    if (family != n->family)
        return false;
    size_t whole = n->prefix / 8, bits = n->prefix % 8;
    if (memcmp(addr, n->addr, whole) != 0)
        return false;
    if (bits == 0)
        return true;
    unsigned char mask = (unsigned char)(0xff << (8 - bits));
    return (addr[whole] & mask) == n->addr[whole];
}

static void set_text(char *buf, size_t size, const char *text)
{
    if (buf != NULL && size > 0)
        snprintf(buf, size, "%s", text);
}

/* NULL when allowed, else the reason. IPv4 addresses are 4 bytes, IPv6 16. */
static const char *judge(const struct ab_netguard *g, int family, const unsigned char *addr)
{
    /* The allow list first, for the address as given: an operator who allowed
     * "::ffff:10.0.0.0/104" meant it. The IPv4 address inside is looked up again below. */
    if (g != NULL)
        for (size_t i = 0; i < g->count; i++)
            if (in_net(family, addr, &g->nets[i]))
                return NULL;

    if (family == AF_INET) {
        for (size_t i = 0; i < COUNT(refused_v4); i++)
            if (in_net(AF_INET, addr, &refused_v4[i].net))
                return refused_v4[i].reason;
        return NULL;
    }

    /* :: and ::1 are in the IPv4-compatible range but are not IPv4 addresses ("0.0.0.1"
     * would say "unspecified" for loopback); the table names them. */
    static const unsigned char zeros[15];
    bool unspecified_or_loopback = memcmp(addr, zeros, 15) == 0 && addr[15] <= 1;
    if (!unspecified_or_loopback)
        for (size_t i = 0; i < COUNT(embeds_v4); i++)
            if (in_net(AF_INET6, addr, &embeds_v4[i].net))
                return judge(g, AF_INET, addr + embeds_v4[i].offset);
    for (size_t i = 0; i < COUNT(refused_v6); i++)
        if (in_net(AF_INET6, addr, &refused_v6[i].net))
            return refused_v6[i].reason;
    return NULL;
}

static bool verdict(const char *refused, char *reason, size_t reason_size)
{
    set_text(reason, reason_size, refused != NULL ? refused : "");
    return refused == NULL;
}

/* The address bytes of a sockaddr: AF_INET (4 bytes) or AF_INET6 (16), else 0 with
 * *why set. Copied out, since addr need not be aligned for sockaddr_in6. */
static int sockaddr_bytes(const struct sockaddr *addr, socklen_t len, unsigned char out[16],
                          const char **why)
{
    sa_family_t family;
    *why = "invalid";
    if (addr == NULL || (size_t)len < offsetof(struct sockaddr, sa_family) + sizeof(family))
        return 0;
    memcpy(&family, (const char *)addr + offsetof(struct sockaddr, sa_family), sizeof(family));
    if (family == AF_INET) {
        struct sockaddr_in sin;
        if ((size_t)len < sizeof(sin))
            return 0;
        memcpy(&sin, addr, sizeof(sin));
        memcpy(out, &sin.sin_addr, 4);
        return AF_INET;
    }
    if (family == AF_INET6) {
        struct sockaddr_in6 sin6;
        if ((size_t)len < sizeof(sin6))
            return 0;
        memcpy(&sin6, addr, sizeof(sin6));
        memcpy(out, &sin6.sin6_addr, 16);
        return AF_INET6;
    }
    *why = "family";
    return 0;
}

bool ab_netguard_allows(const struct ab_netguard *g, const struct sockaddr *addr, socklen_t len,
                        char *reason, size_t reason_size)
{
    unsigned char bytes[16];
    const char *why;
    int family = sockaddr_bytes(addr, len, bytes, &why);
    if (family == 0)
        return verdict(why, reason, reason_size);
    return verdict(judge(g, family, bytes), reason, reason_size);
}

/* inet_pton as v4, then v6. @returns the family, or 0 for not an address. */
static int parse_address(const char *text, unsigned char out[16])
{
    if (inet_pton(AF_INET, text, out) == 1)
        return AF_INET;
    if (inet_pton(AF_INET6, text, out) == 1)
        return AF_INET6;
    return 0;
}

bool ab_netguard_allows_text(const struct ab_netguard *g, const char *address, char *reason,
                             size_t reason_size)
{
    unsigned char bytes[16];
    int family = address != NULL ? parse_address(address, bytes) : 0;
    if (family == 0)
        return verdict("invalid", reason, reason_size);
    return verdict(judge(g, family, bytes), reason, reason_size);
}

void ab_netguard_format(const struct sockaddr *addr, socklen_t len, char *out, size_t out_size)
{
    if (out == NULL || out_size == 0)
        return;
    unsigned char bytes[16];
    const char *why;
    char text[INET6_ADDRSTRLEN];
    int family = sockaddr_bytes(addr, len, bytes, &why);
    if (family == 0 || inet_ntop(family, bytes, text, sizeof(text)) == NULL ||
        strlen(text) >= out_size) {
        set_text(out, out_size, "?"); /* a cut address would name another host */
        return;
    }
    memcpy(out, text, strlen(text) + 1);
}

static bool is_separator(char c)
{
    return c == ',' || c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f';
}

static enum ab_err bad_entry(char *errstr, size_t errstr_size, const char *entry, size_t len,
                             const char *why)
{
    if (errstr != NULL && errstr_size > 0) {
        /* An entry can be any length; 64 bytes of it are enough to find it. */
        int shown = len > 64 ? 64 : (int)len;
        snprintf(errstr, errstr_size, "netguard allow list: \"%.*s%s\": %s", shown, entry,
                 len > 64 ? "..." : "", why);
    }
    return AB_ERR_CONFIG;
}

/* Parses one entry (not NUL-terminated, len > 0) into *n. @returns NULL or why not. */
static const char *parse_entry(const char *entry, size_t len, struct ab_net *n)
{
    /* The longest valid entry is a full IPv6 address in IPv4-mapped text plus "/128". */
    char buf[INET6_ADDRSTRLEN + 8];
    if (len >= sizeof(buf))
        return "not an address or CIDR";
    memcpy(buf, entry, len);
    buf[len] = '\0';

    char *slash = strchr(buf, '/');
    if (slash != NULL)
        *slash = '\0';
    memset(n, 0, sizeof(*n));
    n->family = parse_address(buf, n->addr);
    if (n->family == 0)
        return "not an address or CIDR";
    unsigned max = n->family == AF_INET ? 32 : 128;
    n->prefix = max;
    if (slash != NULL) {
        /* Digits only, at most 3: strtoul would take "+8", " 8" and "8x". */
        const char *p = slash + 1;
        size_t digits = strlen(p);
        if (digits == 0 || digits > 3 || strspn(p, "0123456789") != digits)
            return "bad prefix length";
        unsigned prefix = 0;
        for (; *p != '\0'; p++)
            prefix = prefix * 10 + (unsigned)(*p - '0');
        if (prefix > max)
            return n->family == AF_INET ? "prefix length out of range (0-32)"
                                        : "prefix length out of range (0-128)";
        n->prefix = prefix;
    }
    /* Mask the host bits, so in_net compares whole bytes: "10.1.2.3/8" is 10.0.0.0/8. */
    size_t bytes = n->family == AF_INET ? 4 : 16;
    for (size_t i = 0; i < bytes; i++) {
        size_t keep = n->prefix >= 8 * (i + 1) ? 8 : n->prefix > 8 * i ? n->prefix - 8 * i : 0;
        n->addr[i] &= (unsigned char)(0xff00u >> keep);
    }
    return NULL;
}

enum ab_err ab_netguard_new(const char *allow, struct ab_netguard **out, char *errstr,
                            size_t errstr_size)
{
    if (out == NULL) {
        set_text(errstr, errstr_size, "netguard: no place for the guard (out is NULL)");
        return AB_ERR_CONFIG;
    }
    *out = NULL;
    if (allow == NULL)
        allow = "";

    /* Count first, so the guard is one allocation that never changes afterwards. */
    size_t count = 0;
    for (const char *p = allow; *p != '\0';) {
        while (*p != '\0' && is_separator(*p))
            p++;
        if (*p == '\0')
            break;
        count++;
        while (*p != '\0' && !is_separator(*p))
            p++;
    }

    struct ab_netguard *g = ab_xcalloc(1, sizeof(*g) + count * sizeof(g->nets[0]));
    for (const char *p = allow; *p != '\0';) {
        while (*p != '\0' && is_separator(*p))
            p++;
        if (*p == '\0')
            break;
        const char *entry = p;
        while (*p != '\0' && !is_separator(*p))
            p++;
        size_t len = (size_t)(p - entry);
        const char *why = parse_entry(entry, len, &g->nets[g->count]);
        if (why != NULL) {
            ab_netguard_free(g);
            return bad_entry(errstr, errstr_size, entry, len, why);
        }
        g->count++;
    }
    *out = g;
    return AB_OK;
}

void ab_netguard_free(struct ab_netguard *g)
{
    free(g);
}

const char *ab_net_parse(const char *text, struct ab_net *out)
{
    if (text == NULL || text[0] == '\0')
        return "not an address or CIDR";
    return parse_entry(text, strlen(text), out);
}

bool ab_net_contains(const struct ab_net *net, int family, const unsigned char *addr)
{
    return net != NULL && addr != NULL && in_net(family, addr, net);
}

int ab_address_parse(const char *text, unsigned char out[16])
{
    return text != NULL ? parse_address(text, out) : 0;
}

int ab_sockaddr_address(const struct sockaddr *addr, socklen_t len, unsigned char out[16])
{
    const char *why;
    return sockaddr_bytes(addr, len, out, &why);
}
