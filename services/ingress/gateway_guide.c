/* The setup guide. Clawith's version pasted the caller's raw API key into the skill (bug S5:
 * the key then lives in a Markdown file, a chat log, a screenshot) and pointed every agent
 * at https://try.clawith.ai whatever the install (bug B11). Here the key line is a
 * placeholder the operator fills, and every URL starts with the base URL of this gateway:
 * gateway.public_url, or the Host the agent called when that is not set.
 *
 * The skill keeps Clawith's name, sections and wording where they still hold, so an agent
 * that knows clawith_sync reads it the same way; it adds what differs here (leases, the
 * long poll, message_id on send-message, the agents' status). */
#include "services/ingress/gateway_guide.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "common/util.h"

#define HOST_MAX 255
#define PORT_DIGITS_MAX 5

static bool is_digit(char c)
{
    return c >= '0' && c <= '9';
}

static bool is_hex(char c)
{
    return is_digit(c) || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

/* A character of a host name. '_' is not in RFC 952, but container names use it. */
static bool is_name_char(char c)
{
    return is_digit(c) || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '-' ||
           c == '.' || c == '_';
}

/* Whether host is host[:port] and nothing else: no user info, path, space or quote can ride
 * into the guide's URLs. */
static bool host_ok(const char *host)
{
    size_t len = strlen(host), i = 0;
    if (len == 0 || len > HOST_MAX)
        return false;
    if (host[0] == '[') {
        for (i = 1; i < len && (is_hex(host[i]) || host[i] == ':' || host[i] == '.'); i++)
            ;
        if (i == 1 || i == len || host[i] != ']')
            return false;
        i++;
    } else {
        while (i < len && is_name_char(host[i]))
            i++;
        if (i == 0)
            return false;
    }
    if (i == len)
        return true;
    if (host[i] != ':')
        return false;
    const char *port = host + i + 1;
    size_t digits = strspn(port, "0123456789");
    if (digits == 0 || digits > PORT_DIGITS_MAX || port[digits] != '\0')
        return false;
    long n = strtol(port, NULL, 10);
    return n >= 1 && n <= 65535;
}

/* Whether the first value of X-Forwarded-Proto (a proxy chain appends its own) is https. */
static bool forwarded_https(const char *proto)
{
    if (proto == NULL)
        return false;
    proto += strspn(proto, " \t");
    size_t len = strcspn(proto, ", \t");
    return len == 5 && strncasecmp(proto, "https", 5) == 0;
}

enum ab_err ingress_guide_check_public_url(const char *url, char *errstr, size_t size)
{
    if (url == NULL || url[0] == '\0')
        return AB_OK;
    const char *rest = strncmp(url, "http://", 7) == 0    ? url + 7
                       : strncmp(url, "https://", 8) == 0 ? url + 8
                                                          : NULL;
    const char *problem = NULL;
    if (rest == NULL)
        problem = "must start with http:// or https://";
    else if (rest[0] == '\0' || rest[0] == '/')
        problem = "names no host";
    for (const char *p = url; problem == NULL && *p != '\0'; p++) {
        if ((unsigned char)*p <= 0x20 || (unsigned char)*p >= 0x7f)
            problem = "contains white space, a control character or a byte that is not "
                      "ASCII (write an international name in its xn-- form)";
        else if (*p == '?' || *p == '#')
            problem = "must not have a query or a fragment";
        else if (*p == '@')
            problem = "must not carry credentials (user:password@): every guide would show them";
    }
    if (problem == NULL)
        return AB_OK;
    snprintf(errstr, size, "gateway.public_url %s (it is the base URL agents reach the gateway "
                           "at, e.g. https://agentbus.example.com)", problem);
    return AB_ERR_CONFIG;
}

enum ab_err ingress_guide_base_url(const char *public_url, const char *host,
                                   const char *forwarded_proto, char *out, size_t out_size,
                                   char *errstr, size_t errstr_size)
{
    int n;
    if (public_url != NULL && public_url[0] != '\0') {
        n = snprintf(out, out_size, "%s", public_url);
        /* The check guarantees a host, so this stops after "scheme://h". */
        for (size_t len = strlen(out); len > 0 && out[len - 1] == '/'; len--)
            out[len - 1] = '\0';
    } else if (host == NULL || host[0] == '\0') {
        snprintf(errstr, errstr_size, "the request has no Host header to build the guide's "
                                      "URLs from (the operator may set gateway.public_url)");
        return AB_ERR_INVALID;
    } else if (!host_ok(host)) {
        snprintf(errstr, errstr_size, "the Host header must be host[:port] (a name of letters, "
                                      "digits, '-', '.' and '_', or [IPv6], and a port of 1 "
                                      "to 65535)");
        return AB_ERR_INVALID;
    } else {
        n = snprintf(out, out_size, "%s://%s", forwarded_https(forwarded_proto) ? "https" : "http",
                     host);
    }
    if (n < 0 || (size_t)n >= out_size) {
        snprintf(errstr, errstr_size, "the base URL is longer than %zu bytes", out_size - 1);
        return AB_ERR_INVALID;
    }
    return AB_OK;
}

/* The key's header line, the same in every section. */
#define KEY_LINE "- Header: X-Api-Key: " INGRESS_GUIDE_KEY_PLACEHOLDER "\n"

char *ingress_guide_render(const char *base_url, const char *agent_name, long long lease_s,
                           long long offline_after_s)
{
    char *text = NULL;
    size_t len = 0;
    char *name = ab_xstrdup(agent_name);
    for (char *p = name; *p != '\0'; p++)
        if ((unsigned char)*p < 0x20 || (unsigned char)*p == 0x7f)
            *p = ' ';
    FILE *f = open_memstream(&text, &len);
    if (f == NULL)
        abort(); /* out of memory: the project's policy (common/util.h) */
    fprintf(f,
            "---\n"
            "name: clawith_sync\n"
            "description: Sync with the agentbus gateway (Clawith's gateway API) - check inbox, "
            "submit results, and send messages.\n"
            "---\n"
            "\n"
            "# Clawith Sync\n"
            "\n"
            "You are the agent **%s** on the agentbus gateway at %s.\n"
            "\n"
            "## When to use\n"
            "\n"
            "Check for new messages from the gateway during every heartbeat cycle.\n"
            "You can also proactively send messages to people and agents in your "
            "relationships.\n"
            "\n"
            "## Your API key\n"
            "\n"
            "Every request carries your API key in the `X-Api-Key` header. Where this skill "
            "says `" INGRESS_GUIDE_KEY_PLACEHOLDER "`, put the key your operator issued for "
            "you (with `agentbusctl api-key` and your name). It is shown only once, when it is issued; if it "
            "is lost, the operator issues a new one, which revokes the old one at once. Keep "
            "it secret: never put it in a message, a result or a log.\n"
            "\n",
            name, base_url);
    fprintf(f,
            "## Instructions\n"
            "\n"
            "### 1. Check inbox\n"
            "\n"
            "Make an HTTP GET request:\n"
            "- URL: %s/api/gateway/poll\n" KEY_LINE
            "\n"
            "Optional query parameters: `wait=N` (0 to 30 seconds, default 0) makes it a long "
            "poll: the answer comes as soon as a message arrives, or after N seconds with no "
            "messages; `limit=N` returns at most N messages (at most the gateway's batch "
            "size, which is also the default).\n"
            "\n"
            "The response contains a `messages` array, oldest first. Each message includes:\n"
            "- `id` - unique message ID (use this for reporting)\n"
            "- `content` - the message text\n"
            "- `sender_agent_name` - name of the agent who sent it (null when a person did)\n"
            "- `sender_user_name` - name of the person who sent it (null when an agent did)\n"
            "- `sender_user_id` - unique ID of that person (null when an agent sent it)\n"
            "- `conversation_id` - the conversation this message belongs to\n"
            "- `created_at` - when it was sent (RFC 3339, UTC)\n"
            "- `history` - up to 10 earlier turns of this conversation, oldest first, each "
            "with `role` (\"assistant\" for your own turns, \"user\" for the others'), "
            "`sender_name`, `content` and `created_at`\n"
            "\n"
            "The response also contains a `relationships` array describing your colleagues:\n"
            "- `name` - the person or agent name\n"
            "- `type` - \"human\" or \"agent\"\n"
            "- `role` - relationship type (e.g. collaborator, peer)\n"
            "- `description` - what the relationship is about\n"
            "- `channels` - available communication channels ([\"feishu\"], [\"agent\"], or [] "
            "when nothing can reach that person)\n"
            "- `status` - agents only: \"online\", \"offline\" (not seen for %lld seconds) or "
            "\"never_seen\"\n"
            "\n"
            "**IMPORTANT**: Use the `history` array to understand conversation context before "
            "replying. Different `sender_user_name` values mean different people - address "
            "them accordingly.\n"
            "\n"
            "**IMPORTANT**: Report every message you receive (step 2). A poll leases its "
            "messages for %lld seconds: a message not reported by then comes back in a later "
            "poll, with the same `id`. If you cannot do what a message asks, report that.\n"
            "\n",
            base_url, offline_after_s, lease_s);
    fprintf(f,
            "### 2. Report results\n"
            "\n"
            "For each completed message, make an HTTP POST request:\n"
            "- URL: %s/api/gateway/report\n" KEY_LINE
            "- Header: Content-Type: application/json\n"
            "- Body: {\"message_id\": \"<id from the message>\", \"result\": \"<your "
            "response>\"}\n"
            "\n"
            "The result goes back to the sender: to a person on their channel, to an agent in "
            "its next poll. Reporting the same result again is harmless (safe to retry); a "
            "different result for a message already reported is refused (409).\n"
            "\n"
            "### 3. Send a message to someone\n"
            "\n"
            "To proactively contact a person or agent, make an HTTP POST request:\n"
            "- URL: %s/api/gateway/send-message\n" KEY_LINE
            "- Header: Content-Type: application/json\n"
            "- Body: {\"target\": \"<name of person or agent>\", \"content\": \"<your "
            "message>\", \"message_id\": \"<an id you choose, e.g. a UUID>\"}\n"
            "\n"
            "`message_id` (optional, up to 128 characters) makes a retry safe: if a send fails "
            "or times out, send it again with the same `message_id` and content and it is "
            "delivered once. Never use one `message_id` for two different messages (409). "
            "`channel` (optional): \"agent\" or \"feishu\", to say which kind of target you "
            "mean.\n"
            "\n"
            "The target is your organisation's person or agent of that exact name (any letter "
            "case), else the one relationship whose name contains it. A name that matches "
            "several is refused (409) with their names in `candidates`: send again with one of "
            "them. The system auto-detects the best channel. For agents, the reply appears in "
            "your next poll; an offline agent gets the message when it next polls (the "
            "answer's `message` says so). For humans, the message is delivered via their "
            "available channel (e.g. Feishu).\n"
            "\n",
            base_url, base_url);
    fprintf(f,
            "### 4. Stay online\n"
            "\n"
            "Every poll marks you as seen; so does an HTTP POST request:\n"
            "- URL: %s/api/gateway/heartbeat\n" KEY_LINE
            "\n"
            "Other agents and your operators see you as offline when you have not been seen "
            "for %lld seconds: poll at least that often.\n"
            "\n"
            "### Errors\n"
            "\n"
            "Errors are JSON: {\"error\": {\"code\": \"...\", \"message\": \"...\"}}. 401: the "
            "key is missing or wrong. 400: the request is malformed (the message says how). "
            "404: no such target or message. 409: see above. 503: the gateway cannot do it "
            "now; retry later (with the same `message_id` for a send).\n",
            base_url, offline_after_s);
    if (fclose(f) != 0 || text == NULL)
        abort();
    free(name);
    return text;
}
