/* agentbusctl: the command-line client of the admin API (docs/admin-api.md), so that an
 * operator or a quick start creates tenants, agents, members and their relationships,
 * makes agent API keys and publishes events without writing JSON by hand.
 *
 * Every resource of the API gets the same five verbs; flags map to JSON fields. Tenants,
 * LLM models, agents and members may be named instead of given by id: a name is looked up
 * through the list endpoint, inside the tenant in scope. The admin token is read from the
 * environment or a file, never from the command line (it would show in `ps`), and is never
 * printed. All HTTP goes through common/http_client. `agentbusctl --help` has the details.
 * `agentbusctl tail`, which watches a topic through Kafka itself, is tools/agentbusctl_tail.c. */
#include <errno.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "common/http_client.h"
#include "common/log.h"
#include "common/util.h"
#include "tools/agentbusctl_tail.h"

#define PROG "agentbusctl"
#define DEFAULT_URL "http://127.0.0.1:8080"
#define DEFAULT_RUN_DIR ".run" /* where `make up` (scripts/stack.sh) writes admin-token */
#define MAX_TOKEN_BYTES 4096
/* A list answers at most 1000 objects, and an agent's role may be 20000 characters. */
#define MAX_RESPONSE_BYTES ((size_t)64 << 20)
#define LOOKUP_LIMIT 1000 /* the API's largest page; there is no cursor to go further */
#define MAX_POSITIONAL 8
#define MAX_FLAGS 64
#define MAX_FLAG_NAME 63
#define MAX_AMBIGUOUS_SHOWN 5
#define ID_BUF (AB_UUID_LEN + 1)

enum { EXIT_DONE = 0, EXIT_FAILED = 1, EXIT_USAGE = 2 };

/* The command lines; printed by --help and after every usage error. */
static const char usage_commands[] =
    "usage: agentbusctl [-q] [--url URL] [--token-file PATH] COMMAND ...\n"
    "\n"
    "  agentbusctl tenant create NAME\n"
    "  agentbusctl agent create NAME --tenant T --type openclaw|native [--role TEXT]\n"
    "                               [--model M] [--fallback-model M]\n"
    "  agentbusctl member create NAME --tenant T [--feishu-user-id X] [--feishu-open-id X]\n"
    "                                [--email E]\n"
    "  agentbusctl RESOURCE create [NAME] [--FIELD VALUE]... [--json OBJECT]\n"
    "  agentbusctl RESOURCE list [--tenant T] [--FILTER VALUE]... [--limit N]\n"
    "  agentbusctl RESOURCE get ID|NAME [--tenant T]\n"
    "  agentbusctl RESOURCE update ID|NAME [--tenant T] [--FIELD VALUE]... [--json OBJECT]\n"
    "  agentbusctl RESOURCE delete ID|NAME [--tenant T]\n"
    "  agentbusctl relate AGENT --member MEMBER [--relation R] [--description D] [--tenant T]\n"
    "  agentbusctl relate AGENT --agent OTHER [--relation R] [--description D] [--tenant T]\n"
    "  agentbusctl api-key AGENT [--tenant T]\n"
    "  agentbusctl publish TYPE [--subject S] [--key K] [--data JSON]\n"
    "  agentbusctl dead-letters list [--endpoint E] [--kind feishu|webhook] [--since TIME]\n"
    "                                [--limit N]\n"
    "  agentbusctl dead-letters replay ID\n"
    "  agentbusctl dead-letters replay --endpoint E --since TIME\n"
    "  agentbusctl dead-letters purge [--endpoint E] [--before TIME]\n"
    "  agentbusctl webhook enable ENDPOINT\n" CTL_TAIL_USAGE
    "  agentbusctl help\n"
    "\n"
    "RESOURCE: tenants, llm-models, agents, members, agent-member-relationships,\n"
    "          agent-agent-relationships, channel-configs (or the singular: tenant, agent, ...)\n";

static const char usage_details[] =
    "\n"
    "Fields: --FIELD VALUE sets the JSON field FIELD, '-' read as '_' (--role-description X\n"
    "  sets \"role_description\"). Values are sent as strings, except the integer fields\n"
    "  (connect_timeout_ms, first_token_timeout_ms, idle_timeout_ms, total_timeout_ms,\n"
    "  max_concurrency) and the boolean fields (enabled, stream), which are sent as numbers\n"
    "  and true/false when they read as such. --json OBJECT starts the body from OBJECT (for null\n"
    "  and anything flags cannot say); flags are applied over it. The server validates.\n"
    "  Shorthands: --tenant (tenant_id), --agent (agent_id), --member (member_id),\n"
    "  --target-agent (target_agent_id); for agents --role (role_description), --model\n"
    "  (primary_model_id), --fallback-model (fallback_model_id).\n"
    "\n"
    "Names: a tenant, llm-model, agent or member may be given by id (a UUID) or by name,\n"
    "  wherever one is expected (ID, AGENT, --tenant, --agent, --member, --model, ...); a\n"
    "  value shaped like a UUID is always taken as an id.\n"
    "  Names are looked up in the tenant in scope: --tenant T, else AGENTBUS_TENANT, else the\n"
    "  tenant of the other object named in the same command; with none, in every tenant.\n"
    "  An unknown or ambiguous name is an error (exit 1). Relationships and channel configs\n"
    "  are given by id.\n"
    "\n"
    "Options:\n"
    "  -q, --quiet        print only the id of what was created, fetched or published (one id\n"
    "                     per line for list; the key itself for api-key; nothing for delete)\n"
    "  --url URL          the ingress API; else AGENTBUS_URL, else " DEFAULT_URL "\n"
    "  --token-file PATH  a file holding the admin token\n"
    "  -h, --help         this text\n"
    "\n"
    "The admin token comes from --token-file, else AGENTBUS_ADMIN_TOKEN, else the file\n"
    "$AGENTBUS_RUN_DIR/admin-token (default .run/admin-token, which `make up` writes). It is\n"
    "never taken as an argument, because arguments show in `ps`, and it is never printed.\n"
    "\n"
    "tail reads Kafka itself, not the API: it needs KAFKA_BOOTSTRAP (or --bootstrap), not the\n"
    "token. `agentbusctl tail --help` has its options.\n"
    "\n"
    "Output: the server's JSON, pretty-printed, on stdout. Errors on stderr. Exit status: 0\n"
    "done; 1 the server refused (its error code and message are shown), a name did not\n"
    "resolve, or the server could not be reached; 2 a usage error.\n"
    "\n"
    "Example:\n"
    "  agentbusctl tenant create acme\n"
    "  agentbusctl agent create alice --tenant acme --type openclaw\n"
    "  agentbusctl agent create bob --tenant acme --type native --role \"Answers questions\"\n"
    "  agentbusctl member create carol --tenant acme --email carol@example.com\n"
    "  agentbusctl relate alice --member carol --tenant acme\n"
    "  agentbusctl -q api-key alice --tenant acme\n"
    "  agentbusctl agents list --tenant acme --status offline   (online, offline, never_seen)\n";

/* ---- resources and fields ---------------------------------------------------------------- */

enum res {
    RES_TENANTS,
    RES_LLM_MODELS,
    RES_AGENTS,
    RES_MEMBERS,
    RES_AGENT_MEMBER,
    RES_AGENT_AGENT,
    RES_CHANNEL_CONFIGS,
    RES__COUNT
};

static const struct resource {
    const char *path;     /* as in the URL and in docs/admin-api.md */
    const char *singular; /* accepted as an alias; the word used in messages */
    const char *alias;    /* one more accepted spelling, or NULL */
    bool named;           /* has a "name": NAME on create, lookups by name */
    bool in_tenant;       /* has a tenant_id: creates need one, lists filter by it */
} resources[RES__COUNT] = {
    [RES_TENANTS] = { "tenants", "tenant", NULL, true, false },
    [RES_LLM_MODELS] = { "llm-models", "llm-model", "models", true, true },
    [RES_AGENTS] = { "agents", "agent", NULL, true, true },
    [RES_MEMBERS] = { "members", "member", NULL, true, true },
    [RES_AGENT_MEMBER] = { "agent-member-relationships", "agent-member-relationship", NULL,
                           false, false },
    [RES_AGENT_AGENT] = { "agent-agent-relationships", "agent-agent-relationship", NULL, false,
                          false },
    [RES_CHANNEL_CONFIGS] = { "channel-configs", "channel-config", NULL, false, true },
};

/* Shorthand flags (after '-' became '_') and the field each sets. RES__COUNT: any resource.
 * --tenant is not here: it is the scope of a command (see struct scope). */
static const struct alias {
    enum res res;
    const char *flag;
    const char *field;
} aliases[] = {
    { RES_AGENTS, "role", "role_description" },
    { RES_AGENTS, "model", "primary_model_id" },
    { RES_AGENTS, "primary_model", "primary_model_id" },
    { RES_AGENTS, "fallback_model", "fallback_model_id" },
    { RES__COUNT, "agent", "agent_id" },
    { RES__COUNT, "member", "member_id" },
    { RES__COUNT, "target_agent", "target_agent_id" },
};

/* Fields that hold the id of another object: their values may be names. */
static const struct reference {
    const char *field;
    enum res res;
} references[] = {
    { "agent_id", RES_AGENTS },
    { "target_agent_id", RES_AGENTS },
    { "member_id", RES_MEMBERS },
    { "primary_model_id", RES_LLM_MODELS },
    { "fallback_model_id", RES_LLM_MODELS },
};

/* The fields of the API that are not strings. Flags are text, and the server rejects a
 * string where it wants a number (docs/admin-api.md: "wrong type" is 400), so these few are
 * converted; a value that does not read as its type is sent as a string for the server to
 * reject with its own message, which keeps the server the one place that validates. */
enum field_type { FIELD_INT, FIELD_BOOL };
static const struct typed_field {
    const char *field;
    enum field_type type;
} typed_fields[] = {
    { "connect_timeout_ms", FIELD_INT }, { "first_token_timeout_ms", FIELD_INT },
    { "idle_timeout_ms", FIELD_INT },    { "total_timeout_ms", FIELD_INT },
    { "max_concurrency", FIELD_INT },    { "enabled", FIELD_BOOL },
    { "stream", FIELD_BOOL },
};

#define COUNT_OF(a) (sizeof(a) / sizeof((a)[0]))

/* ---- the command line -------------------------------------------------------------------- */

struct flag {
    char name[MAX_FLAG_NAME + 1]; /* without "--", every '-' read as '_' */
    const char *value;            /* borrowed from argv */
    bool used;                    /* consumed by the command; what is left is a usage error */
};

struct args {
    const char *pos[MAX_POSITIONAL]; /* borrowed from argv */
    int npos;
    struct flag flags[MAX_FLAGS];
    int nflags;
    bool quiet;
    bool help;
    const char *url;
    const char *token_file;
};

static void usage_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static void usage_error(const char *fmt, ...)
{
    va_list ap;
    fputs(PROG ": ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputs("\n\n", stderr);
    fputs(usage_commands, stderr);
    fputs("\n`agentbusctl --help` explains fields, names, the token and exit codes.\n", stderr);
}

static void fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static void fail(const char *fmt, ...)
{
    va_list ap;
    fputs(PROG ": ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
}

/* "--role-description" as the user would type it again, from the stored name. */
static const char *flag_shown(const struct flag *f, char *buf, size_t size)
{
    snprintf(buf, size, "--%s", f->name);
    for (char *p = buf; *p != '\0'; p++)
        if (*p == '_')
            *p = '-';
    return buf;
}

static bool is_token_flag(const char *name)
{
    return strcmp(name, "token") == 0 || strcmp(name, "admin_token") == 0;
}

/* Splits argv into options, positionals and --FIELD VALUE pairs. Every flag other than -q
 * and -h takes a value, so a value may start with '-' (--data -1). Options may come
 * anywhere. @returns EXIT_DONE or EXIT_USAGE (the message is printed). */
static int args_parse(int argc, char **argv, struct args *a)
{
    memset(a, 0, sizeof(*a));
    bool only_positional = false;
    for (int i = 1; i < argc; i++) {
        const char *arg = argv[i];
        if (only_positional || arg[0] != '-' || strcmp(arg, "-") == 0) {
            if (a->npos == MAX_POSITIONAL) {
                usage_error("too many arguments");
                return EXIT_USAGE;
            }
            a->pos[a->npos++] = arg;
            continue;
        }
        if (strcmp(arg, "--") == 0) {
            only_positional = true;
        } else if (strcmp(arg, "-q") == 0 || strcmp(arg, "--quiet") == 0) {
            a->quiet = true;
        } else if (strcmp(arg, "-h") == 0 || strcmp(arg, "--help") == 0) {
            a->help = true;
        } else if (arg[1] != '-') {
            usage_error("unknown option %s", arg);
            return EXIT_USAGE;
        } else {
            struct flag f = { 0 };
            const char *name = arg + 2;
            const char *eq = strchr(name, '=');
            size_t len = eq ? (size_t)(eq - name) : strlen(name);
            if (len == 0 || len > MAX_FLAG_NAME) {
                usage_error("bad option %.80s", arg);
                return EXIT_USAGE;
            }
            for (size_t k = 0; k < len; k++)
                f.name[k] = name[k] == '-' ? '_' : name[k];
            /* Checked before the value is looked at, so it is never echoed. */
            if (is_token_flag(f.name)) {
                usage_error("the admin token is never taken as an argument (arguments show in "
                            "`ps`): set AGENTBUS_ADMIN_TOKEN or use --token-file PATH");
                return EXIT_USAGE;
            }
            if (eq) {
                f.value = eq + 1;
            } else if (i + 1 < argc) {
                f.value = argv[++i];
            } else {
                usage_error("%s needs a value", arg);
                return EXIT_USAGE;
            }
            if (strcmp(f.name, "url") == 0) {
                a->url = f.value;
                continue;
            }
            if (strcmp(f.name, "token_file") == 0) {
                a->token_file = f.value;
                continue;
            }
            char shown[MAX_FLAG_NAME + 3];
            for (int k = 0; k < a->nflags; k++) {
                if (strcmp(a->flags[k].name, f.name) == 0) {
                    usage_error("%s is given twice", flag_shown(&f, shown, sizeof(shown)));
                    return EXIT_USAGE;
                }
            }
            if (a->nflags == MAX_FLAGS) {
                usage_error("too many options");
                return EXIT_USAGE;
            }
            a->flags[a->nflags++] = f;
        }
    }
    return EXIT_DONE;
}

/* The value of --name (name with '_'), marked used; NULL if absent. */
static const char *flag_take(struct args *a, const char *name)
{
    for (int i = 0; i < a->nflags; i++) {
        if (strcmp(a->flags[i].name, name) == 0) {
            a->flags[i].used = true;
            return a->flags[i].value;
        }
    }
    return NULL;
}

static int flags_unused(const struct args *a)
{
    int n = 0;
    for (int i = 0; i < a->nflags; i++)
        n += !a->flags[i].used;
    return n;
}

/* A usage error for the first flag the command did not consume. */
static int flags_check_used(const struct args *a, const char *command)
{
    char shown[MAX_FLAG_NAME + 3];
    for (int i = 0; i < a->nflags; i++) {
        if (!a->flags[i].used) {
            usage_error("%s does not take %s", command,
                        flag_shown(&a->flags[i], shown, sizeof(shown)));
            return EXIT_USAGE;
        }
    }
    return EXIT_DONE;
}

static bool resource_find(const char *word, enum res *res)
{
    for (int r = 0; r < RES__COUNT; r++) {
        const struct resource *rs = &resources[r];
        if (strcmp(word, rs->path) == 0 || strcmp(word, rs->singular) == 0 ||
            (rs->alias && strcmp(word, rs->alias) == 0)) {
            *res = (enum res)r;
            return true;
        }
    }
    return false;
}

/* The field a flag sets on res: a shorthand's field, else the flag's own name. */
static const char *field_of(enum res res, const char *flag)
{
    for (size_t i = 0; i < COUNT_OF(aliases); i++)
        if ((aliases[i].res == res || aliases[i].res == RES__COUNT) &&
            strcmp(aliases[i].flag, flag) == 0)
            return aliases[i].field;
    return flag;
}

static const struct reference *reference_of(const char *field)
{
    for (size_t i = 0; i < COUNT_OF(references); i++)
        if (strcmp(references[i].field, field) == 0)
            return &references[i];
    return NULL;
}

/* A flag's text as the JSON value its field wants (see typed_fields). @ownership new ref. */
static json_t *typed_value(const char *field, const char *text)
{
    for (size_t i = 0; i < COUNT_OF(typed_fields); i++) {
        if (strcmp(typed_fields[i].field, field) != 0)
            continue;
        if (typed_fields[i].type == FIELD_INT) {
            char *end;
            errno = 0;
            long long n = strtoll(text, &end, 10);
            if (errno == 0 && end != text && *end == '\0')
                return json_integer(n);
        } else if (strcmp(text, "true") == 0 || strcmp(text, "false") == 0) {
            return json_boolean(text[0] == 't');
        }
        break;
    }
    return json_string(text);
}

/* ---- strings ----------------------------------------------------------------------------- */

struct strbuf {
    char *s; /* NUL-terminated; owned */
    size_t len, cap;
};

static void sb_add(struct strbuf *sb, const char *s, size_t n)
{
    if (sb->len + n + 1 > sb->cap) {
        size_t cap = sb->cap ? sb->cap : 128;
        while (cap < sb->len + n + 1)
            cap *= 2;
        char *grown = ab_xmalloc(cap);
        if (sb->s)
            memcpy(grown, sb->s, sb->len);
        free(sb->s);
        sb->s = grown;
        sb->cap = cap;
    }
    memcpy(sb->s + sb->len, s, n);
    sb->len += n;
    sb->s[sb->len] = '\0';
}

static void sb_adds(struct strbuf *sb, const char *s)
{
    sb_add(sb, s, strlen(s));
}

/* Percent-encodes everything but RFC 3986's unreserved characters, so that a name or an id
 * typed by the user stays one path segment or one query value. */
static void sb_add_encoded(struct strbuf *sb, const char *s)
{
    static const char hex[] = "0123456789ABCDEF";
    for (const unsigned char *p = (const unsigned char *)s; *p != '\0'; p++) {
        if ((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
            *p == '-' || *p == '.' || *p == '_' || *p == '~') {
            sb_add(sb, (const char *)p, 1);
        } else {
            char esc[3] = { '%', hex[*p >> 4], hex[*p & 15] };
            sb_add(sb, esc, 3);
        }
    }
}

/* "/api/admin/<resource>[/<id>]" */
static void sb_resource_path(struct strbuf *sb, enum res res, const char *id)
{
    sb_adds(sb, "/api/admin/");
    sb_adds(sb, resources[res].path);
    if (id) {
        sb_adds(sb, "/");
        sb_add_encoded(sb, id);
    }
}

/* ---- talking to the server --------------------------------------------------------------- */

struct ctl {
    const char *url;        /* the base URL as given (for messages); borrowed */
    char *base;             /* the same without trailing '/'; owned */
    const char *token_file; /* --token-file, or NULL */
    const char *token_from; /* where the token came from, for messages (never the token) */
    char default_token_file[4096];
    char *auth_header;      /* "Authorization: Bearer ..."; owned, wiped before it is freed */
    struct ab_http_client *client;
    bool quiet;
};

static bool is_blank(char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

/* Removes surrounding whitespace in place (the newline `make up` writes after the token). */
static void trim(char *s)
{
    size_t start = 0, n = strlen(s);
    while (n > 0 && is_blank(s[n - 1]))
        s[--n] = '\0';
    while (start < n && is_blank(s[start]))
        start++;
    memmove(s, s + start, n - start + 1);
}

/* Token buffers are always TOKEN_BUF bytes, so that they can be wiped whole. */
#define TOKEN_BUF (MAX_TOKEN_BYTES + 2)

static void token_free(char *token)
{
    if (token) {
        explicit_bzero(token, TOKEN_BUF);
        free(token);
    }
}

/* The first MAX_TOKEN_BYTES of path, or of text when path is NULL, in a new TOKEN_BUF
 * buffer. @returns NULL with errno set (EFBIG when longer). */
static char *token_read(const char *path, const char *text)
{
    char *buf = ab_xcalloc(1, TOKEN_BUF);
    size_t n;
    if (path == NULL) {
        n = strlen(text);
        if (n <= MAX_TOKEN_BYTES)
            memcpy(buf, text, n);
    } else {
        FILE *f = fopen(path, "r");
        if (f == NULL) {
            int saved = errno;
            free(buf);
            errno = saved;
            return NULL;
        }
        n = fread(buf, 1, MAX_TOKEN_BYTES + 1, f);
        int failed = ferror(f);
        fclose(f);
        if (failed) {
            token_free(buf);
            errno = EIO;
            return NULL;
        }
    }
    if (n > MAX_TOKEN_BYTES) {
        token_free(buf);
        errno = EFBIG;
        return NULL;
    }
    buf[n] = '\0';
    return buf;
}

/* Finds the admin token and builds the Authorization header, once; called by the first
 * request, so usage errors are reported before a missing token. @returns EXIT_DONE or
 * EXIT_FAILED (printed). */
static int ctl_load_token(struct ctl *ctl)
{
    if (ctl->auth_header)
        return EXIT_DONE;
    char *token = NULL;
    const char *run_dir = getenv("AGENTBUS_RUN_DIR");
    const char *env = getenv("AGENTBUS_ADMIN_TOKEN");
    snprintf(ctl->default_token_file, sizeof(ctl->default_token_file), "%s/admin-token",
             run_dir && run_dir[0] ? run_dir : DEFAULT_RUN_DIR);
    if (ctl->token_file) {
        ctl->token_from = ctl->token_file;
        token = token_read(ctl->token_file, NULL);
    } else if (env && env[0]) {
        ctl->token_from = "AGENTBUS_ADMIN_TOKEN";
        token = token_read(NULL, env);
    } else {
        ctl->token_from = ctl->default_token_file;
        token = token_read(ctl->default_token_file, NULL);
        if (token == NULL && errno == ENOENT) {
            fail("no admin token: set AGENTBUS_ADMIN_TOKEN or give --token-file PATH "
                 "(`make up` writes one to %s)", ctl->default_token_file);
            return EXIT_FAILED;
        }
    }
    if (token == NULL) {
        fail("cannot read the admin token from %s: %s", ctl->token_from, strerror(errno));
        return EXIT_FAILED;
    }
    trim(token);
    bool printable = token[0] != '\0';
    for (const unsigned char *p = (const unsigned char *)token; *p != '\0'; p++)
        if (*p < 0x20 || *p == 0x7f)
            printable = false;
    if (!printable) {
        fail("the admin token from %s is empty or contains control characters",
             ctl->token_from);
        token_free(token);
        return EXIT_FAILED;
    }
    size_t size = strlen("Authorization: Bearer ") + strlen(token) + 1;
    ctl->auth_header = ab_xmalloc(size);
    snprintf(ctl->auth_header, size, "Authorization: Bearer %s", token);
    token_free(token);
    return EXIT_DONE;
}

/* One line of an unexpected body, for an error message: printable ASCII, at most 200. */
static void print_snippet(const char *body, size_t len)
{
    char out[201];
    size_t n = 0;
    for (size_t i = 0; i < len && n < sizeof(out) - 1; i++)
        out[n++] = body[i] >= 0x20 && body[i] < 0x7f ? body[i] : ' ';
    out[n] = '\0';
    if (n > 0)
        fprintf(stderr, "  %s%s\n", out, len > n ? " ..." : "");
}

/* The server's refusal on stderr: its error code and message, else the status. */
static void report_http_error(const struct ctl *ctl, const char *method, const char *path,
                              const struct ab_http_response *resp)
{
    json_t *body = json_loadb(resp->body, resp->body_len, 0, NULL);
    json_t *error = json_object_get(body, "error");
    const char *code = json_string_value(json_object_get(error, "code"));
    const char *message = json_string_value(json_object_get(error, "message"));
    if (code && message) {
        fail("%s: %s (HTTP %ld from %s %s)", code, message, resp->status, method, path);
    } else {
        fail("HTTP %ld from %s %s", resp->status, method, path);
        print_snippet(resp->body, resp->body_len);
    }
    if (resp->status == 401)
        fprintf(stderr, "  (the token came from %s)\n", ctl->token_from);
    json_decref(body);
}

static void report_transport_error(const struct ctl *ctl, enum ab_err err, const char *errstr)
{
    switch (err) {
    case AB_ERR_UNAVAILABLE:
        fail("cannot connect to %s: %s\n  (is ingress running? `make up` starts it; --url or "
             "AGENTBUS_URL names another server)",
             ctl->url, errstr);
        break;
    case AB_ERR_TIMEOUT:
        fail("%s did not answer in time: %s", ctl->url, errstr);
        break;
    case AB_ERR_INVALID:
        fail("the URL %s cannot be used: %s", ctl->url, errstr);
        break;
    case AB_ERR_TOO_LARGE:
        fail("the answer of %s is larger than %zu bytes", ctl->url, MAX_RESPONSE_BYTES);
        break;
    default:
        fail("request to %s failed: %s", ctl->url, errstr);
        break;
    }
}

/* Sends one request to path (which starts with '/') with body (may be NULL).
 * @param answer on success, the parsed answer, or NULL when there was none (204).
 *        @ownership the caller decrefs.
 * @returns EXIT_DONE on a 2xx; otherwise, with the reason printed, EXIT_USAGE when the URL
 *          is unusable and EXIT_FAILED for everything else. */
static int api_call(struct ctl *ctl, const char *method, const char *path, json_t *body,
                    json_t **answer)
{
    int rc = EXIT_FAILED;
    char errstr[256] = "";
    char *text = NULL;
    struct strbuf url = { 0 };
    struct ab_http_response resp = { 0 };

    *answer = NULL;
    if (ctl_load_token(ctl) != EXIT_DONE)
        return EXIT_FAILED;
    if (body) {
        text = json_dumps(body, JSON_COMPACT);
        if (text == NULL) {
            fail("cannot encode the request body");
            return EXIT_FAILED;
        }
    }
    sb_adds(&url, ctl->base);
    sb_adds(&url, path);
    const char *headers[] = { ctl->auth_header, "Accept: application/json",
                              text ? "Content-Type: application/json" : NULL, NULL };
    struct ab_http_request req = {
        .method = method,
        .url = url.s,
        .headers = headers,
        .body = text,
        .body_len = text ? strlen(text) : 0,
        .max_response_bytes = MAX_RESPONSE_BYTES,
        .user_agent = PROG,
    };
    enum ab_err err = ab_http_client_do(ctl->client, &req, &resp, errstr, sizeof(errstr));
    if (err != AB_OK) {
        report_transport_error(ctl, err, errstr);
        if (err == AB_ERR_INVALID)
            rc = EXIT_USAGE;
        goto out;
    }
    if (resp.status < 200 || resp.status > 299) {
        report_http_error(ctl, method, path, &resp);
        goto out;
    }
    if (resp.body_len > 0) {
        json_error_t jerr;
        *answer = json_loadb(resp.body, resp.body_len, 0, &jerr);
        if (*answer == NULL) {
            fail("%s %s answered %ld with something that is not JSON (%s)", method, path,
                 resp.status, jerr.text);
            print_snippet(resp.body, resp.body_len);
            goto out;
        }
    }
    rc = EXIT_DONE;
out:
    ab_http_response_cleanup(&resp);
    free(url.s);
    free(text);
    return rc;
}

static void print_json(const json_t *j)
{
    char *text = json_dumps(j, JSON_INDENT(2) | JSON_PRESERVE_ORDER | JSON_ENCODE_ANY);
    if (text) {
        puts(text);
        free(text);
    }
}

/* What a command prints: the answer, or with -q the value of its field `quiet_field`. */
static void print_answer(const struct ctl *ctl, const json_t *answer, const char *quiet_field)
{
    if (answer == NULL)
        return;
    if (!ctl->quiet) {
        print_json(answer);
        return;
    }
    const char *value = json_string_value(json_object_get(answer, quiet_field));
    if (value)
        puts(value);
}

/* ---- names ------------------------------------------------------------------------------- */

/* The tenant a command works in. Names of tenant-scoped objects are looked up in it. It is
 * given (--tenant, AGENTBUS_TENANT), or learnt from the first object of the command that is
 * found by name, or, when only ids were given, fetched from one of them when a name needs
 * it. Without any, a name is looked up in every tenant and must be unique there. */
struct scope {
    const char *tenant_text;     /* as the user gave it, or NULL */
    char tenant_id[ID_BUF];      /* "" until known */
    enum res known_res;          /* an object given by id, whose tenant is the command's */
    char known_id[ID_BUF];       /* "" when none */
};

static int lookup(struct ctl *ctl, enum res res, const char *name, struct scope *scope,
                  char id[ID_BUF]);

static int copy_id(const char *value, char id[ID_BUF], const char *what)
{
    if (value == NULL || !ab_uuid_valid(value)) {
        fail("the answer about %s has no valid id", what);
        return EXIT_FAILED;
    }
    memcpy(id, value, ID_BUF);
    return EXIT_DONE;
}

/* Makes scope->tenant_id known if it can be: resolves the given tenant, or reads the tenant
 * of an object given by id. Leaves it "" when there is nothing to learn it from. */
static int scope_tenant(struct ctl *ctl, struct scope *scope)
{
    if (scope->tenant_id[0] != '\0')
        return EXIT_DONE;
    if (scope->tenant_text) {
        if (ab_uuid_valid(scope->tenant_text)) {
            memcpy(scope->tenant_id, scope->tenant_text, ID_BUF);
            return EXIT_DONE;
        }
        return lookup(ctl, RES_TENANTS, scope->tenant_text, scope, scope->tenant_id);
    }
    if (scope->known_id[0] == '\0')
        return EXIT_DONE;
    struct strbuf path = { 0 };
    json_t *answer = NULL;
    sb_resource_path(&path, scope->known_res, scope->known_id);
    int rc = api_call(ctl, "GET", path.s, NULL, &answer);
    if (rc == EXIT_DONE)
        rc = copy_id(json_string_value(json_object_get(answer, "tenant_id")), scope->tenant_id,
                     path.s);
    json_decref(answer);
    free(path.s);
    return rc;
}

/* Looks name up in the list of res: an exact match, else a match ignoring ASCII case
 * (agent names are unique per tenant whatever the case). In scope's tenant when known; a
 * unique match elsewhere sets the scope's tenant. */
static int lookup(struct ctl *ctl, enum res res, const char *name, struct scope *scope,
                  char id[ID_BUF])
{
    const struct resource *rs = &resources[res];
    struct strbuf path = { 0 }, ids = { 0 };
    json_t *answer = NULL;
    bool in_tenant = rs->in_tenant && scope->tenant_id[0] != '\0';
    char where[200];
    int rc;

    if (!rs->in_tenant)
        snprintf(where, sizeof(where), "%s", "");
    else if (in_tenant)
        snprintf(where, sizeof(where), " in tenant %s",
                 scope->tenant_text ? scope->tenant_text : scope->tenant_id);
    else
        snprintf(where, sizeof(where), "%s", " in any tenant");
    sb_resource_path(&path, res, NULL);
    char limit[32];
    snprintf(limit, sizeof(limit), "?limit=%d", LOOKUP_LIMIT);
    sb_adds(&path, limit);
    if (in_tenant) {
        sb_adds(&path, "&tenant_id=");
        sb_add_encoded(&path, scope->tenant_id);
    }
    rc = api_call(ctl, "GET", path.s, NULL, &answer);
    if (rc != EXIT_DONE)
        goto out;
    json_t *items = json_object_get(answer, "items");
    if (!json_is_array(items)) {
        fail("GET %s answered without \"items\"", path.s);
        rc = EXIT_FAILED;
        goto out;
    }
    /* Two passes: exact matches win over matches that differ only in case. */
    json_t *hit = NULL;
    size_t hits = 0;
    for (int pass = 0; pass < 2 && hits == 0; pass++) {
        size_t i;
        json_t *item;
        json_array_foreach(items, i, item)
        {
            const char *item_name = json_string_value(json_object_get(item, "name"));
            if (item_name == NULL ||
                (pass == 0 ? strcmp(item_name, name) : strcasecmp(item_name, name)) != 0)
                continue;
            const char *item_id = json_string_value(json_object_get(item, "id"));
            if (hits < MAX_AMBIGUOUS_SHOWN) {
                sb_adds(&ids, hits ? ", " : "");
                sb_adds(&ids, item_id ? item_id : "?");
            }
            hit = item;
            hits++;
        }
    }
    rc = EXIT_FAILED;
    if (hits == 0) {
        fail("no %s is named \"%s\"%s", rs->singular, name, where);
        if (json_array_size(items) >= LOOKUP_LIMIT)
            fprintf(stderr, "  (only the newest %d %s were searched: give the id)\n",
                    LOOKUP_LIMIT, rs->path);
    } else if (hits > 1) {
        fail("%zu %s are named \"%s\"%s: %s%s; give %s", hits, rs->path, name, where, ids.s,
             hits > MAX_AMBIGUOUS_SHOWN ? ", ..." : "",
             rs->in_tenant && !in_tenant ? "--tenant or the id" : "the id");
    } else {
        rc = copy_id(json_string_value(json_object_get(hit, "id")), id, name);
        if (rc == EXIT_DONE && rs->in_tenant && !in_tenant)
            rc = copy_id(json_string_value(json_object_get(hit, "tenant_id")), scope->tenant_id,
                         name);
    }
out:
    json_decref(answer);
    free(path.s);
    free(ids.s);
    return rc;
}

/* What the user wrote for an object of res (a UUID, or a name where res has names) as its
 * id. A UUID is taken as it is, without a request: the server checks it. */
static int resolve(struct ctl *ctl, enum res res, const char *text, struct scope *scope,
                   char id[ID_BUF])
{
    if (ab_uuid_valid(text)) {
        memcpy(id, text, ID_BUF);
        if (resources[res].in_tenant && scope->known_id[0] == '\0') {
            scope->known_res = res;
            memcpy(scope->known_id, text, ID_BUF);
        }
        return EXIT_DONE;
    }
    if (!resources[res].named) {
        usage_error("%s are given by id (a UUID), and \"%s\" is not one", resources[res].path,
                    text);
        return EXIT_USAGE;
    }
    if (res != RES_TENANTS) {
        int rc = scope_tenant(ctl, scope);
        if (rc != EXIT_DONE)
            return rc;
    }
    return lookup(ctl, res, text, scope, id);
}

/* ---- commands ---------------------------------------------------------------------------- */

/* --tenant (or --tenant-id), else AGENTBUS_TENANT for resources that live in a tenant. */
static int scope_init(struct args *a, enum res res, struct scope *scope)
{
    memset(scope, 0, sizeof(*scope));
    const char *flag = flag_take(a, "tenant");
    const char *flag_id = flag_take(a, "tenant_id");
    if (flag && flag_id) {
        usage_error("give --tenant or --tenant-id, not both");
        return EXIT_USAGE;
    }
    scope->tenant_text = flag ? flag : flag_id;
    if (res == RES_TENANTS) {
        if (scope->tenant_text) {
            usage_error("tenants do not take --tenant");
            return EXIT_USAGE;
        }
        return EXIT_DONE;
    }
    if (scope->tenant_text == NULL) {
        const char *env = getenv("AGENTBUS_TENANT");
        scope->tenant_text = env && env[0] ? env : NULL;
    }
    if (scope->tenant_text && scope->tenant_text[0] == '\0') {
        usage_error("--tenant is empty");
        return EXIT_USAGE;
    }
    return EXIT_DONE;
}

/* The body of a create or an update: --json, then each remaining flag as a field, names of
 * referenced objects resolved. @ownership *body is the caller's. */
static int body_build(struct ctl *ctl, struct args *a, enum res res, struct scope *scope,
                      const char *name, json_t **body)
{
    *body = NULL;
    const char *raw = flag_take(a, "json");
    json_t *obj;
    if (raw) {
        json_error_t jerr;
        obj = json_loads(raw, 0, &jerr);
        if (!json_is_object(obj)) {
            usage_error("--json must be a JSON object%s%s", obj ? "" : ": ",
                        obj ? "" : jerr.text);
            json_decref(obj);
            return EXIT_USAGE;
        }
    } else {
        obj = json_object();
    }
    if (name && json_object_set_new(obj, "name", json_string(name)) != 0) {
        usage_error("the name is not UTF-8");
        json_decref(obj);
        return EXIT_USAGE;
    }
    for (int i = 0; i < a->nflags; i++) {
        struct flag *f = &a->flags[i];
        if (f->used)
            continue;
        f->used = true;
        const char *field = field_of(res, f->name);
        const struct reference *ref = reference_of(field);
        json_t *value;
        if (ref) {
            char id[ID_BUF];
            int rc = resolve(ctl, ref->res, f->value, scope, id);
            if (rc != EXIT_DONE) {
                json_decref(obj);
                return rc;
            }
            value = json_string(id);
        } else {
            value = typed_value(field, f->value);
        }
        if (value == NULL) {
            char shown[MAX_FLAG_NAME + 3];
            usage_error("the value of %s is not UTF-8", flag_shown(f, shown, sizeof(shown)));
            json_decref(obj);
            return EXIT_USAGE;
        }
        json_object_set_new(obj, field, value);
    }
    *body = obj;
    return EXIT_DONE;
}

static int cmd_create(struct ctl *ctl, struct args *a, enum res res)
{
    const struct resource *rs = &resources[res];
    struct scope scope;
    json_t *body = NULL, *answer = NULL;
    struct strbuf path = { 0 };
    int rc = scope_init(a, res, &scope);
    if (rc != EXIT_DONE)
        return rc;
    if (a->npos > 3 || (a->npos == 3 && !rs->named)) {
        usage_error("%s create takes %s", rs->singular,
                    rs->named ? "one NAME and --FIELD VALUE options" : "--FIELD VALUE options");
        return EXIT_USAGE;
    }
    if (a->npos == 3 && flag_take(a, "name")) {
        usage_error("give the name once: as NAME or as --name");
        return EXIT_USAGE;
    }
    /* Every usage error above comes before the first request. */
    if (rs->in_tenant) {
        rc = scope_tenant(ctl, &scope);
        if (rc != EXIT_DONE)
            return rc;
    }
    rc = body_build(ctl, a, res, &scope, a->npos == 3 ? a->pos[2] : NULL, &body);
    if (rc != EXIT_DONE)
        return rc;
    if (rs->in_tenant && json_object_get(body, "tenant_id") == NULL) {
        /* No --tenant: the tenant of an object named in the command will do. */
        rc = scope_tenant(ctl, &scope);
        if (rc != EXIT_DONE)
            goto out;
        if (scope.tenant_id[0] == '\0') {
            usage_error("%s create needs --tenant T (or AGENTBUS_TENANT)", rs->singular);
            rc = EXIT_USAGE;
            goto out;
        }
        json_object_set_new(body, "tenant_id", json_string(scope.tenant_id));
    }
    sb_resource_path(&path, res, NULL);
    rc = api_call(ctl, "POST", path.s, body, &answer);
    if (rc == EXIT_DONE)
        print_answer(ctl, answer, "id");
out:
    json_decref(body);
    json_decref(answer);
    free(path.s);
    return rc;
}

static int cmd_list(struct ctl *ctl, struct args *a, enum res res)
{
    struct scope scope;
    struct strbuf path = { 0 };
    json_t *answer = NULL;
    int rc = scope_init(a, res, &scope);
    if (rc != EXIT_DONE)
        return rc;
    if (a->npos != 2) {
        usage_error("%s list takes no arguments, only --FILTER VALUE options",
                    resources[res].singular);
        return EXIT_USAGE;
    }
    if (resources[res].in_tenant) {
        rc = scope_tenant(ctl, &scope);
        if (rc != EXIT_DONE)
            return rc;
    }
    sb_resource_path(&path, res, NULL);
    char sep = '?';
    if (resources[res].in_tenant && scope.tenant_id[0] != '\0') {
        sb_adds(&path, "?tenant_id=");
        sb_add_encoded(&path, scope.tenant_id);
        sep = '&';
    }
    for (int i = 0; i < a->nflags; i++) {
        struct flag *f = &a->flags[i];
        if (f->used)
            continue;
        f->used = true;
        const char *field = field_of(res, f->name);
        const struct reference *ref = reference_of(field);
        char id[ID_BUF];
        const char *value = f->value;
        if (ref) {
            rc = resolve(ctl, ref->res, f->value, &scope, id);
            if (rc != EXIT_DONE)
                goto out;
            value = id;
        }
        sb_add(&path, &sep, 1);
        sb_add_encoded(&path, field);
        sb_adds(&path, "=");
        sb_add_encoded(&path, value);
        sep = '&';
    }
    rc = api_call(ctl, "GET", path.s, NULL, &answer);
    if (rc != EXIT_DONE)
        goto out;
    if (ctl->quiet) {
        size_t i;
        json_t *item;
        json_array_foreach(json_object_get(answer, "items"), i, item)
        {
            const char *id = json_string_value(json_object_get(item, "id"));
            if (id)
                puts(id);
        }
    } else {
        print_json(answer);
    }
out:
    json_decref(answer);
    free(path.s);
    return rc;
}

/* get, update and delete: one object, by id or name. */
static int cmd_one(struct ctl *ctl, struct args *a, enum res res, const char *verb)
{
    struct scope scope;
    struct strbuf path = { 0 };
    json_t *body = NULL, *answer = NULL;
    char id[ID_BUF];
    bool update = strcmp(verb, "update") == 0;
    int rc = scope_init(a, res, &scope);
    if (rc != EXIT_DONE)
        return rc;
    if (a->npos != 3) {
        usage_error("%s %s takes one ID or NAME", resources[res].singular, verb);
        return EXIT_USAGE;
    }
    if (!update) {
        rc = flags_check_used(a, verb);
        if (rc != EXIT_DONE)
            return rc;
    } else if (flags_unused(a) == 0) {
        usage_error("update needs at least one --FIELD VALUE (or --json OBJECT) to change");
        return EXIT_USAGE;
    }
    rc = resolve(ctl, res, a->pos[2], &scope, id);
    if (rc != EXIT_DONE)
        return rc;
    if (update) {
        rc = body_build(ctl, a, res, &scope, NULL, &body);
        if (rc != EXIT_DONE)
            return rc;
    }
    sb_resource_path(&path, res, id);
    const char *method = update ? "PATCH" : strcmp(verb, "delete") == 0 ? "DELETE" : "GET";
    rc = api_call(ctl, method, path.s, body, &answer);
    if (rc == EXIT_DONE)
        print_answer(ctl, answer, "id");
    json_decref(body);
    json_decref(answer);
    free(path.s);
    return rc;
}

static int cmd_resource(struct ctl *ctl, struct args *a, enum res res)
{
    if (a->npos < 2) {
        usage_error("%s needs a verb: create, list, get, update or delete", a->pos[0]);
        return EXIT_USAGE;
    }
    const char *verb = a->pos[1];
    if (strcmp(verb, "create") == 0)
        return cmd_create(ctl, a, res);
    if (strcmp(verb, "list") == 0)
        return cmd_list(ctl, a, res);
    if (strcmp(verb, "get") == 0 || strcmp(verb, "update") == 0 || strcmp(verb, "delete") == 0)
        return cmd_one(ctl, a, res, verb);
    usage_error("unknown verb \"%s\" (create, list, get, update or delete)", verb);
    return EXIT_USAGE;
}

/* relate AGENT --member M | --agent OTHER: a relationship of the agent, created. */
static int cmd_relate(struct ctl *ctl, struct args *a)
{
    struct scope scope;
    struct strbuf path = { 0 };
    json_t *body = NULL, *answer = NULL;
    char agent_id[ID_BUF], other_id[ID_BUF];
    int rc = scope_init(a, RES_AGENTS, &scope);
    if (rc != EXIT_DONE)
        return rc;
    const char *member = flag_take(a, "member");
    const char *other = flag_take(a, "agent");
    const char *relation = flag_take(a, "relation");
    const char *description = flag_take(a, "description");
    if (a->npos != 2 || (member == NULL) == (other == NULL)) {
        usage_error("relate takes one AGENT and either --member MEMBER or --agent OTHER");
        return EXIT_USAGE;
    }
    rc = flags_check_used(a, "relate");
    if (rc != EXIT_DONE)
        return rc;
    rc = resolve(ctl, RES_AGENTS, a->pos[1], &scope, agent_id);
    if (rc == EXIT_DONE)
        rc = resolve(ctl, member ? RES_MEMBERS : RES_AGENTS, member ? member : other, &scope,
                     other_id);
    if (rc != EXIT_DONE)
        return rc;
    enum res res = member ? RES_AGENT_MEMBER : RES_AGENT_AGENT;
    body = json_pack("{s:s,s:s}", "agent_id", agent_id, member ? "member_id" : "target_agent_id",
                     other_id);
    if (relation)
        json_object_set_new(body, "relation", json_string(relation));
    if (description)
        json_object_set_new(body, "description", json_string(description));
    sb_resource_path(&path, res, NULL);
    rc = api_call(ctl, "POST", path.s, body, &answer);
    if (rc == EXIT_DONE)
        print_answer(ctl, answer, "id");
    json_decref(body);
    json_decref(answer);
    free(path.s);
    return rc;
}

/* api-key AGENT: a new key for an OpenClaw agent; the server shows it this once. */
static int cmd_api_key(struct ctl *ctl, struct args *a)
{
    struct scope scope;
    struct strbuf path = { 0 };
    json_t *answer = NULL;
    char id[ID_BUF];
    int rc = scope_init(a, RES_AGENTS, &scope);
    if (rc != EXIT_DONE)
        return rc;
    if (a->npos != 2) {
        usage_error("api-key takes one AGENT (its id or name)");
        return EXIT_USAGE;
    }
    rc = flags_check_used(a, "api-key");
    if (rc != EXIT_DONE)
        return rc;
    rc = resolve(ctl, RES_AGENTS, a->pos[1], &scope, id);
    if (rc != EXIT_DONE)
        return rc;
    sb_adds(&path, "/api/gateway/agents/");
    sb_add_encoded(&path, id);
    sb_adds(&path, "/api-key");
    rc = api_call(ctl, "POST", path.s, NULL, &answer);
    if (rc == EXIT_DONE)
        print_answer(ctl, answer, "api_key");
    json_decref(answer);
    free(path.s);
    return rc;
}

/* publish TYPE: an event onto the bus through POST /api/admin/events. */
static int cmd_publish(struct ctl *ctl, struct args *a)
{
    json_t *body = NULL, *answer = NULL;
    const char *subject = flag_take(a, "subject");
    const char *key = flag_take(a, "key");
    const char *data = flag_take(a, "data");
    if (a->npos != 2) {
        usage_error("publish takes one event TYPE");
        return EXIT_USAGE;
    }
    int rc = flags_check_used(a, "publish");
    if (rc != EXIT_DONE)
        return rc;
    body = json_pack("{s:s}", "type", a->pos[1]);
    if (body == NULL) {
        usage_error("the event type is not UTF-8");
        return EXIT_USAGE;
    }
    if (data) {
        json_error_t jerr;
        json_t *j = json_loads(data, JSON_DECODE_ANY, &jerr);
        if (j == NULL) {
            usage_error("--data is not JSON: %s (line %d, column %d)", jerr.text, jerr.line,
                        jerr.column);
            json_decref(body);
            return EXIT_USAGE;
        }
        json_object_set_new(body, "data", j);
    }
    if (subject)
        json_object_set_new(body, "subject", json_string(subject));
    if (key)
        json_object_set_new(body, "key", json_string(key));
    rc = api_call(ctl, "POST", "/api/admin/events", body, &answer);
    if (rc == EXIT_DONE)
        print_answer(ctl, answer, "id");
    json_decref(body);
    json_decref(answer);
    return rc;
}

/* Appends "?name=value&..." for the flags given, in order. */
static void query_add(struct strbuf *path, struct args *a, const char *const *names)
{
    char sep = '?';
    for (; *names != NULL; names++) {
        const char *v = flag_take(a, *names);
        if (v == NULL)
            continue;
        sb_add(path, &sep, 1);
        sb_adds(path, *names);
        sb_adds(path, "=");
        sb_add_encoded(path, v);
        sep = '&';
    }
}

/* dead-letters list|replay|purge: the notifier's dead letters (docs/notifier.md). */
static int cmd_dead_letters(struct ctl *ctl, struct args *a)
{
    struct strbuf path = { 0 };
    json_t *answer = NULL, *body = NULL;
    const char *verb = a->npos >= 2 ? a->pos[1] : "";
    const char *method = NULL, *quiet = NULL;
    int rc = EXIT_DONE;

    sb_adds(&path, "/api/admin/dead-letters");
    if (strcmp(verb, "list") == 0 && a->npos == 2) {
        method = "GET";
        query_add(&path, a, (const char *const[]){ "endpoint", "kind", "since", "limit", NULL });
    } else if (strcmp(verb, "replay") == 0 && a->npos == 3) {
        method = "POST";
        quiet = "id";
        if (!ab_uuid_valid(a->pos[2])) {
            usage_error("a dead letter is given by its id (a UUID)");
            rc = EXIT_USAGE;
        }
        sb_adds(&path, "/");
        sb_add_encoded(&path, a->pos[2]);
        sb_adds(&path, "/replay");
    } else if (strcmp(verb, "replay") == 0 && a->npos == 2) {
        const char *endpoint = flag_take(a, "endpoint"), *since = flag_take(a, "since");
        method = "POST";
        quiet = "replayed";
        if (endpoint == NULL || since == NULL) {
            usage_error("dead-letters replay takes an ID, or --endpoint and --since");
            rc = EXIT_USAGE;
        }
        sb_adds(&path, "/replay");
        body = json_pack("{s:s?, s:s?}", "endpoint", endpoint, "since", since);
    } else if (strcmp(verb, "purge") == 0 && a->npos == 2) {
        method = "DELETE";
        quiet = "purged";
        query_add(&path, a, (const char *const[]){ "endpoint", "before", NULL });
    } else {
        usage_error("dead-letters takes list, replay ID, replay --endpoint E --since T, or purge");
        rc = EXIT_USAGE;
    }
    if (rc == EXIT_DONE)
        rc = flags_check_used(a, "dead-letters");
    if (rc == EXIT_DONE)
        rc = api_call(ctl, method, path.s, body, &answer);
    if (rc == EXIT_DONE) {
        const json_t *n = quiet ? json_object_get(answer, quiet) : NULL;
        if (ctl->quiet && json_is_integer(n))
            printf("%lld\n", (long long)json_integer_value(n));
        else if (ctl->quiet && quiet == NULL) /* list: the ids */
            for (size_t i = 0; i < json_array_size(json_object_get(answer, "dead_letters")); i++)
                puts(json_string_value(json_object_get(
                         json_array_get(json_object_get(answer, "dead_letters"), i), "id")) ?: "");
        else
            print_answer(ctl, answer, quiet ? quiet : "id");
    }
    json_decref(body);
    json_decref(answer);
    free(path.s);
    return rc;
}

/* webhook enable ENDPOINT: an outgoing endpoint disabled by a 410 takes deliveries again. */
static int cmd_webhook(struct ctl *ctl, struct args *a)
{
    struct strbuf path = { 0 };
    json_t *answer = NULL;
    if (a->npos != 3 || strcmp(a->pos[1], "enable") != 0) {
        usage_error("webhook takes: enable ENDPOINT");
        return EXIT_USAGE;
    }
    int rc = flags_check_used(a, "webhook");
    if (rc != EXIT_DONE)
        return rc;
    sb_adds(&path, "/api/admin/webhooks/");
    sb_add_encoded(&path, a->pos[2]);
    sb_adds(&path, "/enable");
    rc = api_call(ctl, "POST", path.s, NULL, &answer);
    if (rc == EXIT_DONE)
        print_answer(ctl, answer, "id");
    json_decref(answer);
    free(path.s);
    return rc;
}

static int run(struct ctl *ctl, struct args *a)
{
    enum res res;
    const char *command = a->pos[0];
    if (strcmp(command, "relate") == 0)
        return cmd_relate(ctl, a);
    if (strcmp(command, "api-key") == 0)
        return cmd_api_key(ctl, a);
    if (strcmp(command, "publish") == 0)
        return cmd_publish(ctl, a);
    if (strcmp(command, "dead-letters") == 0)
        return cmd_dead_letters(ctl, a);
    if (strcmp(command, "webhook") == 0)
        return cmd_webhook(ctl, a);
    if (strcmp(command, "tail") == 0) {
        usage_error("tail comes first, before its own options: agentbusctl tail [TOPIC] ...");
        return EXIT_USAGE;
    }
    if (resource_find(command, &res))
        return cmd_resource(ctl, a, res);
    usage_error("unknown command \"%s\"", command);
    return EXIT_USAGE;
}

int main(int argc, char **argv)
{
    struct args a;
    struct ctl ctl = { 0 };
    /* tail has options of its own (a repeatable --type, a --json without value) and talks
     * to Kafka rather than to the API: it takes the command line from here. */
    if (argc > 1 && strcmp(argv[1], "tail") == 0)
        return ctl_tail(argc - 1, argv + 1);
    int rc = args_parse(argc, argv, &a);
    if (rc != EXIT_DONE)
        return rc;
    if (a.help || (a.npos > 0 && strcmp(a.pos[0], "help") == 0)) {
        fputs(usage_commands, stdout);
        fputs(usage_details, stdout);
        return EXIT_DONE;
    }
    if (a.npos == 0) {
        usage_error("no command");
        return EXIT_USAGE;
    }
    /* Nothing from the library may reach stdout, which scripts read for ids. */
    ab_log_init(PROG, AB_LOG_WARN);
    ab_log_set_output(stderr);

    const char *env_url = getenv("AGENTBUS_URL");
    ctl.url = a.url ? a.url : env_url && env_url[0] ? env_url : DEFAULT_URL;
    if (strncmp(ctl.url, "http://", 7) != 0 && strncmp(ctl.url, "https://", 8) != 0) {
        usage_error("the URL must start with http:// or https://, not \"%.200s\"", ctl.url);
        return EXIT_USAGE;
    }
    ctl.base = ab_xstrdup(ctl.url);
    for (size_t n = strlen(ctl.base); n > 0 && ctl.base[n - 1] == '/'; n--)
        ctl.base[n - 1] = '\0';
    ctl.token_file = a.token_file;
    ctl.quiet = a.quiet;
    ctl.client = ab_http_client_new();
    if (ctl.client == NULL) {
        fail("cannot initialise libcurl");
        free(ctl.base);
        return EXIT_FAILED;
    }
    rc = run(&ctl, &a);
    if (ctl.auth_header) {
        explicit_bzero(ctl.auth_header, strlen(ctl.auth_header));
        free(ctl.auth_header);
    }
    ab_http_client_free(ctl.client);
    free(ctl.base);
    if (fflush(stdout) != 0 && rc == EXIT_DONE) {
        fail("cannot write the output: %s", strerror(errno));
        rc = EXIT_FAILED;
    }
    return rc;
}
