/* The SSRF guard for outgoing HTTP: which addresses an outgoing request (a webhook whose
 * URL a user chose) may connect to. A URL's host can name, or resolve to, the loopback
 * interface, the private network the services run in, or the cloud metadata service that
 * hands out credentials; a request there would let a user read what they must not. So the
 * guard judges the address actually connected to (after DNS, on every connection), and
 * refuses every range that is not the public Internet, unless the operator allowed it.
 *
 * IPv6 forms that carry an IPv4 address (IPv4-mapped ::ffff:0:0/96, IPv4-compatible ::/96,
 * NAT64 64:ff9b::/96, 6to4 2002::/16) are judged by the IPv4 address inside them: the
 * kernel or a translator on the path delivers them there, so ::ffff:127.0.0.1 is loopback. */
#ifndef AB_NETGUARD_H
#define AB_NETGUARD_H

#include "common/errors.h"

#include <stdbool.h>
#include <stddef.h>
#include <sys/socket.h>

/* One network: addr with every bit below prefix zero. IPv4 uses the first 4 bytes of addr.
 * Other modules that match addresses against CIDRs (the incoming webhooks' allowlist) use
 * it with the helpers at the end of this file, so there is one parser of CIDR text. */
struct ab_net {
    int family; /* AF_INET or AF_INET6 */
    unsigned char addr[16];
    unsigned prefix;
};

/* Enough for every reason word (the longest is "documentation") and its NUL. */
#define AB_NETGUARD_REASON_MAX 16

/* Immutable after creation: may be shared by threads without locking. */
struct ab_netguard;

/* Creates a guard. allow is a comma- or whitespace-separated list of CIDRs or single
 * addresses ("127.0.0.1/32, ::1, 10.0.0.0/8, fd00::/8") that are allowed even though they
 * are in a refused range; NULL or "" allows nothing extra. Host bits set below the prefix
 * are masked off ("10.1.2.3/8" is 10.0.0.0/8); empty entries (",,") are skipped.
 * @returns AB_OK with *out to be freed by ab_netguard_free, or AB_ERR_CONFIG with errstr
 *          naming the bad entry and *out NULL. */
enum ab_err ab_netguard_new(const char *allow, struct ab_netguard **out, char *errstr,
                            size_t errstr_size);
/* NULL is a no-op. */
void ab_netguard_free(struct ab_netguard *g);

/* Whether a connection to addr (an AF_INET or AF_INET6 sockaddr of len bytes; the port is
 * not looked at) may be made. g may be NULL: nothing extra allowed.
 *
 * Refused unless in an allow entry: loopback (127/8, ::1), unspecified (0/8, ::), private
 * (10/8, 172.16/12, 192.168/16, fc00::/7), carrier-grade NAT (100.64/10), link-local
 * (169.254/16, fe80::/10), multicast (224/4, ff00::/8), reserved (240/4, 192.0.0/24),
 * benchmarking (198.18/15, 2001:2::/48), documentation (192.0.2/24, 198.51.100/24,
 * 203.0.113/24, 2001:db8::/32, 3fff::/20), discard-only (100::/64), Teredo (2001::/32),
 * local-use NAT64 (64:ff9b:1::/48), site-local (fec0::/10); and the IPv4-carrying forms
 * above by the address they carry. Everything else (public) is allowed.
 *
 * reason (may be NULL) gets a short word for logs and error messages when refused:
 * "loopback", "unspecified", "private", "cgnat", "link-local", "metadata" (exactly
 * 169.254.169.254, fd00:ec2::254 and Alibaba's 100.100.100.200), "multicast", "broadcast"
 * (255.255.255.255), "reserved", "benchmarking", "documentation", "discard", "ipv6-tunnel"
 * (Teredo, local NAT64), "site-local", "family" (neither AF_INET nor AF_INET6), "invalid"
 * (NULL, or len too short for the family); "" when allowed. */
bool ab_netguard_allows(const struct ab_netguard *g, const struct sockaddr *addr, socklen_t len,
                        char *reason, size_t reason_size);

/* The same for a textual IPv4 or IPv6 address (inet_pton: no port, no brackets, no zone
 * id), for tests and for checking configuration; false with "invalid" for anything that is
 * not an address (NULL included). */
bool ab_netguard_allows_text(const struct ab_netguard *g, const char *address, char *reason,
                             size_t reason_size);

/* The address of addr as text ("127.0.0.1", "::1", "::ffff:127.0.0.1"), without the port,
 * for messages. out gets "?" when addr cannot be formatted (NULL, unknown family, len too
 * short, out too small for the text). */
void ab_netguard_format(const struct sockaddr *addr, socklen_t len, char *out, size_t out_size);

/* Parses one allow-list entry, a CIDR or a single address ("10.0.0.0/8", "::1"), exactly as
 * ab_netguard_new does (inet_pton forms, a prefix of 1-3 digits, host bits masked off), into
 * *out. @returns NULL, or a short reason it is not one ("not an address or CIDR", "bad prefix
 * length", ...) for the caller's error message; NULL and "" are not entries. */
const char *ab_net_parse(const char *text, struct ab_net *out);

/* Whether addr (4 bytes for AF_INET, 16 for AF_INET6) is in net. Families must be equal:
 * nothing IPv4-carrying is unwrapped here. False for NULL. */
bool ab_net_contains(const struct ab_net *net, int family, const unsigned char *addr);

/* A textual IPv4 or IPv6 address (inet_pton) into out (4 or 16 bytes used).
 * @returns AF_INET, AF_INET6, or 0 for NULL or not an address. */
int ab_address_parse(const char *text, unsigned char out[16]);

/* The address of an AF_INET or AF_INET6 sockaddr of len bytes into out, as above
 * (addr need not be aligned). @returns the family, or 0 for NULL, len too short, or
 * another family. */
int ab_sockaddr_address(const struct sockaddr *addr, socklen_t len, unsigned char out[16]);

#endif
