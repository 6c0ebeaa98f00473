/* Incoming webhooks, as configured in the `webhooks` option in the seed's shape:
 *
 *   {"incoming": {"enabled": true, "port": 3011, "secret": "...",
 *                 "secretHeader": "X-Webhook-Secret", "allowedIPs": ["10.0.0.0/8", "::1"]},
 *    "handlers": [{"id": "github", "path": "/github", "action": "send_message",
 *                  "target": {"channel": "feishu", "peer": "Alice"},
 *                  "template": "{{event.action}}: {{event.pull_request.title}}",
 *                  "signature": {"scheme": "github", "secret": "..."}}]}
 *
 * A handler is a hook: POST /webhook/<id> reaches it, and so does its path. The same
 * parser reads the configuration file's handlers and the definitions the admin API
 * stores (webhook_hooks.definition), so the two kinds never mean different things. */
#ifndef AB_INCOMING_H
#define AB_INCOMING_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/errors.h"

struct ab_cidr_list;

enum ab_hook_action {
    AB_HOOK_SEND_MESSAGE = 0, /* the rendered text to a person, a Feishu chat or an agent */
    AB_HOOK_RUN_AGENT,        /* the rendered text as a prompt to an agent */
    AB_HOOK_FORWARD,          /* the payload to another URL, through the notifier */
    AB_HOOK_CUSTOM,           /* the event to a Kafka topic the team consumes itself */
};

enum ab_hook_scheme {
    AB_HOOK_SIG_NONE = 0,
    AB_HOOK_SIG_GITHUB,   /* X-Hub-Signature-256: sha256=<hex HMAC of the body> */
    AB_HOOK_SIG_STANDARD, /* Standard Webhooks: webhook-id, -timestamp, -signature */
};

#define AB_HOOK_ID_MAX       100
#define AB_HOOK_MAX_SECRETS  4
#define AB_HOOK_MAX_PREFIXES 16
#define AB_HOOK_MAX_HANDLERS 1000

struct ab_hook {
    char *id;
    char *path;   /* "/github": also reaches the hook; NULL when none */
    char *tenant; /* a tenant's name or id; NULL: the only tenant there is */
    enum ab_hook_action action;
    char *agent;       /* run_agent: the agent's name or id */
    char *channel;     /* send_message: "feishu", "chat" or "agent" */
    char *peer;        /* send_message: a person's or agent's name or id, or a chat id */
    char *forward_url; /* forward */
    char *forward_method;
    char *topic;     /* custom: the Kafka topic, as named */
    char *template;  /* NULL: the payload as it came */
    bool persistent; /* sessionMode "persistent": one session, session_key */
    char *session_key;
    bool allow_request_session_key; /* the body's sessionKey is taken if a prefix matches */
    char *session_prefixes[AB_HOOK_MAX_PREFIXES];
    size_t prefix_count;
    /* Authentication: the shared secrets (rotation: any matches), compared with the value
     * of secret_header; and/or a signature. At least one of the two is required. */
    char *secret_header;
    char *secrets[AB_HOOK_MAX_SECRETS];
    size_t secret_count;
    enum ab_hook_scheme scheme;
    char *signature_secrets[AB_HOOK_MAX_SECRETS];
    size_t signature_secret_count;
    long long tolerance_s;        /* Standard Webhooks' timestamp window */
    struct ab_cidr_list *allowed; /* NULL: any address */
    bool accept_text;             /* a body that is not JSON is taken as text */
    bool unsafe_external_content; /* the payload goes into prompts unmarked */
    bool enabled;
    bool from_config;   /* defined in the configuration file, not through the admin API */
    json_t *definition; /* as given, for the admin API (see ab_hook_redacted) */
};

/* The `incoming` object: the listener and what every hook inherits. */
struct ab_incoming {
    bool enabled;
    int port;                  /* 0: the ingress.webhook_port option */
    char *secret_header;       /* "X-Webhook-Secret" */
    char *secret;              /* NULL: none */
    const json_t *allowed_ips; /* borrowed from the configuration; NULL: none */
    size_t max_body_bytes;
    long long idempotency_window_s;
    int auth_max_failures;
    int64_t auth_window_ms;
    struct ab_hook *hooks; /* the configuration file's handlers */
    size_t count;
};

/* Parses webhooks (the option's object; NULL or without incoming/handlers gives defaults
 * and no hook). Every handler is parsed with ab_hook_parse under the incoming defaults.
 * incoming fields: enabled (true), port, secret, secretHeader, allowedIPs, maxBodyBytes
 * (262144, 1 KiB to 512 KiB: the event that carries the body must fit Kafka's 1 MB), idempotencyWindowS (86400, 3600 to 604800), authFailures
 * {max (10), windowS (60)}. Unknown fields are refused.
 * @returns AB_OK with *out (ab_incoming_free), or AB_ERR_CONFIG with errstr naming the
 *          handler and field. */
enum ab_err ab_incoming_parse(const json_t *webhooks, struct ab_incoming **out, char *errstr,
                              size_t errstr_size);
void ab_incoming_free(struct ab_incoming *in);

/* Parses one handler definition into h, inheriting from in (may be NULL) the secret
 * header and the allowlist it does not name itself, and the secret when it has neither its
 * own nor a signature. Fields: id (1-100 of
 * [A-Za-z0-9._-]), path ("/x[/y...]", not under /webhook/), tenant, action, agentId,
 * target ({channel, peer} | {url, method} | {topic}), template (checked),
 * sessionMode ("isolated" default, or "persistent" with sessionKey),
 * allowRequestSessionKey, allowedSessionKeyPrefixes (["hook:"]), secret (string or list),
 * secretHeader, signature {scheme "github"|"standard", secret (string or list),
 * toleranceS (300)}, allowedIPs, acceptText (false), allowUnsafeExternalContent (false),
 * enabled (true). A hook without a secret and without a signature is refused: nothing
 * unauthenticated reaches an agent. Unknown fields are refused.
 * @returns AB_OK (h to be cleaned with ab_hook_cleanup), or AB_ERR_CONFIG with errstr;
 *          h is cleaned already on failure. */
enum ab_err ab_hook_parse(const json_t *def, const struct ab_incoming *in, struct ab_hook *h,
                          char *errstr, size_t errstr_size);
void ab_hook_cleanup(struct ab_hook *h);

/* The definition as the admin API shows it: secrets replaced by "(set)".
 * @ownership a new reference. */
json_t *ab_hook_redacted(const struct ab_hook *h);

const char *ab_hook_action_name(enum ab_hook_action a);

#endif
