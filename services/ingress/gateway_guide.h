/* The setup guide of GET /api/gateway/setup-guide/{agent_id}: the "clawith_sync" skill an
 * OpenClaw agent installs to use the gateway, and the base URL its links start with. Pure
 * functions (no database, no request), so the unit tests link this file as it is. */
#ifndef INGRESS_GATEWAY_GUIDE_H
#define INGRESS_GATEWAY_GUIDE_H

#include <stddef.h>

#include "common/errors.h"

/* What the answer names besides the skill's text (Clawith's shape). */
#define INGRESS_GUIDE_SKILL_FILENAME "clawith_sync.md"
#define INGRESS_GUIDE_HEARTBEAT_LINE                                                       \
    "- Check Clawith inbox using the clawith_sync skill and process any pending messages"

/* The header line the skill shows where Clawith pasted the raw key (its bug S5): the
 * agent's operator puts the key there. */
#define INGRESS_GUIDE_KEY_PLACEHOLDER "<your agentbus API key>"

/* Room for any base URL: gateway.public_url is at most 2048 bytes, a Host at most 255. */
#define INGRESS_GUIDE_BASE_URL_MAX 2056

/* Checks gateway.public_url: empty (derive from each request), or an http:// or https://
 * URL with a host, in printable ASCII without spaces, and without a query or fragment. Checked at
 * start, so a wrong value stops ingress instead of reaching agents. @returns AB_OK or
 * AB_ERR_CONFIG with errstr saying why. */
enum ab_err ingress_guide_check_public_url(const char *public_url, char *errstr,
                                           size_t errstr_size);

/* The base URL the guide's links start with, into out (no trailing slash): public_url when
 * it is set (checked by ingress_guide_check_public_url), else "<scheme>://<host>" from the
 * request: host is its Host header, which must be only host[:port] (a name of letters,
 * digits, '-', '.', '_', or an IPv6 literal in brackets; a port of 1 to 65535), and the
 * scheme is https when the first value of forwarded_proto (X-Forwarded-Proto, may be NULL)
 * is "https", else http. @returns AB_OK, or AB_ERR_INVALID (the request's Host is missing
 * or malformed) with errstr saying why. */
enum ab_err ingress_guide_base_url(const char *public_url, const char *host,
                                   const char *forwarded_proto, char *out, size_t out_size,
                                   char *errstr, size_t errstr_size);

/* The skill's Markdown for the agent called agent_name, every URL starting with base_url.
 * lease_s and offline_after_s are the gateway's settings the text quotes. The API key is
 * never in it: the header line carries INGRESS_GUIDE_KEY_PLACEHOLDER. Control characters
 * of the name become spaces, so a name cannot break the Markdown's lines.
 * @ownership the caller frees the text. */
char *ingress_guide_render(const char *base_url, const char *agent_name, long long lease_s,
                           long long offline_after_s);

#endif
