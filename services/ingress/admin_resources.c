/* The admin API's resources, as one generic layer driven by a static descriptor per
 * resource (its table, its fields and how each may be written, its list filters, the
 * references it must keep within a tenant). The rules every resource shares (validation,
 * write-only secrets, tenant consistency, error mapping) are thus written once.
 *
 * SQL text is assembled only from the descriptors' constant strings; every value travels as
 * a PQexecParams parameter with an explicit cast. Values are validated here first, so a
 * client's mistake is a 400 naming the field rather than whatever PostgreSQL says.
 *
 * A create or a patch is one statement:
 *   WITH v   AS (the row as it will be: the values given, the rest NULL or as stored),
 *        chk AS (the index of the first reference check v fails, or NULL),
 *        t   AS (INSERT/UPDATE ... only when chk is NULL ... RETURNING *)
 *   SELECT chk.problem, the answer built from t
 * so a reference is checked by the statement that writes, not by an earlier one. A row's
 * tenant never changes (tenant_id and the references that imply one are create only), so
 * the check cannot be invalidated by a concurrent write; a concurrent delete is caught by
 * the foreign keys. */
#include "services/ingress/admin_resources.h"

#include <ctype.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "common/util.h"
#include "services/ingress/routes_gateway.h"

#define DB_ACQUIRE_TIMEOUT_MS 2000
#define SQL_MAX 16384
#define MAX_FIELDS 24 /* fields of the largest resource (llm-models has 17) */
#define MAX_PARAMS (MAX_FIELDS + 2)
#define LIST_LIMIT_DEFAULT "100"
#define LIST_LIMIT_MAX 1000
#define URL_MAX 2048
#define SECRET_MAX 4096
#define QUOTE_MAX 64 /* bytes of a client's name quoted back in an error */
/* RFC 3339 in UTC with milliseconds, like ab_time_rfc3339. */
#define SQL_TIME_FORMAT "'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"'"

enum field_type { FT_TEXT, FT_INT, FT_BOOL, FT_UUID, FT_TIME };

/* What PostgreSQL casts each parameter to (parameters are sent as text), and how an
 * error names the JSON type expected. */
static const char *const sql_types[] = { "text", "integer", "boolean", "uuid", "timestamptz" };
static const char *const json_types[] = { "a string", "an integer", "true or false",
                                          "a UUID string", "a timestamp" };

enum field_flag {
    F_REQUIRED = 1 << 0,    /* must be in a create body */
    F_CREATE_ONLY = 1 << 1, /* 400 in a PATCH body */
    F_READ_ONLY = 1 << 2,   /* 400 in any body (id, times) */
    F_SECRET = 1 << 3,      /* write-only: answers carry "<name>_set" instead */
    F_NULLABLE = 1 << 4,    /* JSON null is accepted and stored as NULL */
    F_NOT_BLANK = 1 << 5,   /* text that is not only white space */
    F_HTTP_URL = 1 << 6,    /* text starting with http:// or https:// */
};

/* A field computed when read instead of stored: SQL over the row "t" whose one parameter,
 * an integer option of the configuration, is written between head and tail. Such a field
 * is read-only; as a list filter its expression is what is compared. */
struct computed {
    const char *head;
    enum ab_opt opt;
    const char *tail;
};

/* One field: its JSON name is its column name, unless it is computed. */
struct field {
    const char *name;
    enum field_type type;
    unsigned flags;
    int min; /* text: length in characters; int: value */
    int max;
    const char *const *allowed; /* text: the values allowed, NULL-terminated; or NULL */
    const struct computed *computed; /* or NULL: the column `name` */
};

/* A condition on the row-to-be "v" that must hold, and the 400 message when it does not. */
struct ref_check {
    const char *sql;
    const char *message;
};

struct resource {
    const char *name;  /* in the URL */
    const char *table; /* also the SQL identifier: a trusted constant */
    const struct field *fields;       /* ends with a NULL name */
    const char *const *filters;       /* text or uuid fields; NULL-terminated */
    const struct ref_check *checks;   /* ends with a NULL sql */
    const char *conflict;             /* the 409 message of a unique violation */
    const char *conflict_field;       /* its value is quoted after it when given, or NULL */
    bool has_updated_at;
};

/* ---- The descriptors ---- */

static const char *const providers[] = { "openai", "openclaw", NULL };
static const char *const agent_types[] = { "openclaw", "native", NULL };
static const char *const channel_types[] = { "feishu", "lark", NULL };
static const char *const agent_statuses[] = { "online", "offline", "never_seen", NULL };

/* The agent's status (routes_gateway.h has the rule). */
static const struct computed agent_status = { INGRESS_AGENT_STATUS_HEAD("t"),
                                              AB_OPT_GATEWAY_OFFLINE_AFTER_S,
                                              INGRESS_AGENT_STATUS_TAIL };

#define FIELD_ID { .name = "id", .type = FT_UUID, .flags = F_READ_ONLY }
#define FIELD_TIME(n) { .name = (n), .type = FT_TIME, .flags = F_READ_ONLY | F_NULLABLE }
#define FIELD_TEXT(n, fl, lo, hi)                                                          \
    { .name = (n), .type = FT_TEXT, .flags = (fl), .min = (lo), .max = (hi) }
#define FIELD_ONE_OF(n, fl, values)                                                        \
    { .name = (n), .type = FT_TEXT, .flags = (fl), .allowed = (values) }
#define FIELD_INT(n, lo, hi) { .name = (n), .type = FT_INT, .min = (lo), .max = (hi) }
#define FIELD_BOOL(n) { .name = (n), .type = FT_BOOL }
#define FIELD_UUID(n, fl) { .name = (n), .type = FT_UUID, .flags = (fl) }
#define FIELD_TENANT FIELD_UUID("tenant_id", F_REQUIRED | F_CREATE_ONLY)
#define FIELDS_END { .name = NULL }

static const struct field tenant_fields[] = {
    FIELD_ID,
    FIELD_TEXT("name", F_REQUIRED | F_NOT_BLANK, 1, 100),
    FIELD_TIME("created_at"),
    FIELD_TIME("updated_at"),
    FIELDS_END,
};

static const struct field llm_model_fields[] = {
    FIELD_ID,
    FIELD_TENANT,
    FIELD_TEXT("name", F_REQUIRED | F_NOT_BLANK, 1, 100),
    FIELD_ONE_OF("provider", F_REQUIRED, providers),
    FIELD_TEXT("base_url", F_REQUIRED | F_HTTP_URL, 1, URL_MAX),
    FIELD_TEXT("model", F_REQUIRED | F_NOT_BLANK, 1, 200),
    FIELD_TEXT("api_key", F_SECRET, 0, SECRET_MAX),
    FIELD_INT("connect_timeout_ms", 1, INT_MAX),
    FIELD_INT("first_token_timeout_ms", 1, INT_MAX),
    FIELD_INT("idle_timeout_ms", 1, INT_MAX),
    FIELD_INT("total_timeout_ms", 1, INT_MAX),
    FIELD_INT("max_concurrency", 1, INT_MAX),
    FIELD_BOOL("stream"),
    FIELD_BOOL("enabled"),
    FIELD_TIME("created_at"),
    FIELD_TIME("updated_at"),
    FIELDS_END,
};

static const struct field agent_fields[] = {
    FIELD_ID,
    FIELD_TENANT,
    FIELD_TEXT("name", F_REQUIRED | F_NOT_BLANK, 1, 100),
    FIELD_ONE_OF("type", F_REQUIRED | F_CREATE_ONLY, agent_types),
    FIELD_TEXT("role_description", 0, 0, 20000),
    FIELD_UUID("primary_model_id", F_NULLABLE),
    FIELD_UUID("fallback_model_id", F_NULLABLE),
    FIELD_TEXT("creator", 0, 0, 200),
    FIELD_TIME("last_seen_at"),
    { .name = "status", .type = FT_TEXT, .flags = F_READ_ONLY, .allowed = agent_statuses,
      .computed = &agent_status },
    FIELD_TIME("created_at"),
    FIELD_TIME("updated_at"),
    FIELDS_END,
};

static const struct field member_fields[] = {
    FIELD_ID,
    FIELD_TENANT,
    FIELD_TEXT("name", F_REQUIRED | F_NOT_BLANK, 1, 100),
    FIELD_TEXT("feishu_user_id", F_NULLABLE, 1, 128),
    FIELD_TEXT("feishu_open_id", F_NULLABLE, 1, 128),
    FIELD_TEXT("email", F_NULLABLE, 0, 320),
    FIELD_TIME("created_at"),
    FIELD_TIME("updated_at"),
    FIELDS_END,
};

static const struct field agent_member_fields[] = {
    FIELD_ID,
    FIELD_UUID("agent_id", F_REQUIRED | F_CREATE_ONLY),
    FIELD_UUID("member_id", F_REQUIRED | F_CREATE_ONLY),
    FIELD_TEXT("relation", F_NOT_BLANK, 1, 50),
    FIELD_TEXT("description", 0, 0, 2000),
    FIELD_TIME("created_at"),
    FIELDS_END,
};

static const struct field agent_agent_fields[] = {
    FIELD_ID,
    FIELD_UUID("agent_id", F_REQUIRED | F_CREATE_ONLY),
    FIELD_UUID("target_agent_id", F_REQUIRED | F_CREATE_ONLY),
    FIELD_TEXT("relation", F_NOT_BLANK, 1, 50),
    FIELD_TEXT("description", 0, 0, 2000),
    FIELD_TIME("created_at"),
    FIELDS_END,
};

static const struct field channel_config_fields[] = {
    FIELD_ID,
    FIELD_TENANT,
    FIELD_UUID("agent_id", F_CREATE_ONLY | F_NULLABLE),
    FIELD_ONE_OF("channel_type", F_REQUIRED, channel_types),
    FIELD_TEXT("app_id", F_REQUIRED | F_NOT_BLANK, 1, 255),
    FIELD_TEXT("app_secret", F_REQUIRED | F_SECRET | F_NOT_BLANK, 1, SECRET_MAX),
    FIELD_TEXT("base_url", F_REQUIRED | F_HTTP_URL, 1, URL_MAX),
    FIELD_TIME("created_at"),
    FIELD_TIME("updated_at"),
    FIELDS_END,
};

#define CHECK_TENANT                                                                       \
    { "EXISTS (SELECT 1 FROM tenants x WHERE x.id = v.tenant_id)",                         \
      "tenant_id does not name an existing tenant" }
#define CHECK_AGENT(col)                                                                   \
    { "EXISTS (SELECT 1 FROM agents x WHERE x.id = v." col ")",                            \
      col " does not name an existing agent" }
#define CHECKS_END { NULL, NULL }

static const struct ref_check tenant_checks[] = { CHECK_TENANT, CHECKS_END };

static const struct ref_check agent_checks[] = {
    CHECK_TENANT,
    { "v.primary_model_id IS NULL OR EXISTS (SELECT 1 FROM llm_models x"
      " WHERE x.id = v.primary_model_id AND x.tenant_id = v.tenant_id)",
      "primary_model_id does not name an LLM model of the agent's tenant" },
    { "v.fallback_model_id IS NULL OR EXISTS (SELECT 1 FROM llm_models x"
      " WHERE x.id = v.fallback_model_id AND x.tenant_id = v.tenant_id)",
      "fallback_model_id does not name an LLM model of the agent's tenant" },
    CHECKS_END,
};

static const struct ref_check agent_member_checks[] = {
    CHECK_AGENT("agent_id"),
    { "EXISTS (SELECT 1 FROM org_members x WHERE x.id = v.member_id)",
      "member_id does not name an existing member" },
    { "EXISTS (SELECT 1 FROM agents a JOIN org_members m ON m.tenant_id = a.tenant_id"
      " WHERE a.id = v.agent_id AND m.id = v.member_id)",
      "the agent and the member belong to different tenants" },
    CHECKS_END,
};

static const struct ref_check agent_agent_checks[] = {
    CHECK_AGENT("agent_id"),
    CHECK_AGENT("target_agent_id"),
    { "v.agent_id <> v.target_agent_id", "an agent cannot have a relationship with itself" },
    { "EXISTS (SELECT 1 FROM agents a JOIN agents b ON b.tenant_id = a.tenant_id"
      " WHERE a.id = v.agent_id AND b.id = v.target_agent_id)",
      "the two agents belong to different tenants" },
    CHECKS_END,
};

static const struct ref_check channel_config_checks[] = {
    CHECK_TENANT,
    { "v.agent_id IS NULL OR EXISTS (SELECT 1 FROM agents x"
      " WHERE x.id = v.agent_id AND x.tenant_id = v.tenant_id)",
      "agent_id does not name an agent of this tenant" },
    CHECKS_END,
};

static const char *const no_filters[] = { NULL };
static const char *const tenant_filter[] = { "tenant_id", NULL };
static const char *const agent_filters[] = { "tenant_id", "type", "status", NULL };
static const char *const agent_member_filters[] = { "agent_id", "member_id", NULL };
static const char *const agent_agent_filters[] = { "agent_id", "target_agent_id", NULL };
static const char *const channel_config_filters[] = { "tenant_id", "agent_id", NULL };
static const struct ref_check no_checks[] = { CHECKS_END };

static const struct resource resources[] = {
    { "tenants", "tenants", tenant_fields, no_filters, no_checks,
      "a tenant with this name exists already", "name", true },
    { "llm-models", "llm_models", llm_model_fields, tenant_filter, tenant_checks,
      "an LLM model with this name exists already in this tenant", "name", true },
    { "agents", "agents", agent_fields, agent_filters, agent_checks,
      "an agent with this name exists already in this tenant (names are unique whatever "
      "their case)", "name", true },
    { "members", "org_members", member_fields, tenant_filter, tenant_checks,
      "this member conflicts with an existing one", NULL, true },
    { "agent-member-relationships", "agent_member_relationships", agent_member_fields,
      agent_member_filters, agent_member_checks,
      "a relationship between this agent and this member exists already", NULL, false },
    { "agent-agent-relationships", "agent_agent_relationships", agent_agent_fields,
      agent_agent_filters, agent_agent_checks,
      "a relationship from this agent to the target agent exists already", NULL, false },
    { "channel-configs", "channel_configs", channel_config_fields, channel_config_filters,
      channel_config_checks,
      "a config of this channel_type exists already for this agent (or, without agent_id, "
      "as the tenant's default)", "channel_type", true },
};

#define N_RESOURCES (sizeof(resources) / sizeof(resources[0]))

/* What each route's handler gets. Filled once by ingress_admin_resources_routes before the
 * listener starts, read-only afterwards, so the handlers' threads share it unguarded. */
struct route_ctx {
    struct ingress_admin *admin;
    const struct resource *res;
};
static struct route_ctx route_ctxs[N_RESOURCES];
/* The configuration computed fields read their parameter from; set with route_ctxs. */
static const struct ab_config *computed_cfg;

/* ---- Validation ---- */

/* A parameter about to be sent: the field it sets and its text. */
struct binding {
    const struct field *f;
    const char *value; /* NULL sends SQL NULL; borrows the request (body or URL) or num */
    char num[24];
};

struct bindings {
    struct binding b[MAX_FIELDS];
    int n;
};

static const struct field *find_field(const struct resource *res, const char *name)
{
    for (const struct field *f = res->fields; f->name != NULL; f++)
        if (strcmp(f->name, name) == 0)
            return f;
    return NULL;
}

static const struct binding *find_binding(const struct bindings *bs, const struct field *f)
{
    for (int i = 0; i < bs->n; i++)
        if (bs->b[i].f == f)
            return &bs->b[i];
    return NULL;
}

/* How many bytes of s to quote so that at most QUOTE_MAX are, without cutting a UTF-8
 * sequence (a cut one would make the error message invalid JSON text). */
static int quote_len(const char *s)
{
    size_t n = strlen(s);
    if (n <= QUOTE_MAX)
        return (int)n;
    n = QUOTE_MAX;
    while (n > 0 && ((unsigned char)s[n] & 0xC0) == 0x80)
        n--;
    return (int)n;
}

/* Characters, as PostgreSQL's length() counts them (jansson guarantees valid UTF-8). */
static size_t utf8_length(const char *s)
{
    size_t n = 0;
    for (; *s != '\0'; s++)
        n += ((unsigned char)*s & 0xC0) != 0x80;
    return n;
}

/* Joins names with sep into out (truncated if it must be). */
static void join_names(const char *const *names, const char *sep, char *out, size_t size)
{
    size_t len = 0;
    out[0] = '\0';
    for (int i = 0; names[i] != NULL && len < size; i++) {
        int n = snprintf(out + len, size - len, "%s%s", i ? sep : "", names[i]);
        len += n > 0 ? (size_t)n : 0;
    }
}

static bool text_ok(const struct field *f, const char *s, char *errstr, size_t size)
{
    if (f->allowed != NULL) {
        char list[128];
        for (const char *const *a = f->allowed; *a != NULL; a++)
            if (strcmp(*a, s) == 0)
                return true;
        join_names(f->allowed, "|", list, sizeof(list));
        snprintf(errstr, size, "\"%s\" must be one of %s", f->name, list);
        return false;
    }
    size_t len = utf8_length(s);
    if (len < (size_t)f->min || len > (size_t)f->max) {
        snprintf(errstr, size, "\"%s\" must be a string of %d to %d characters", f->name,
                 f->min, f->max);
        return false;
    }
    if ((f->flags & F_NOT_BLANK) && s[strspn(s, " \t\r\n")] == '\0') {
        snprintf(errstr, size, "\"%s\" must not be blank", f->name);
        return false;
    }
    if ((f->flags & F_HTTP_URL) && strncmp(s, "http://", 7) != 0 &&
        strncmp(s, "https://", 8) != 0) {
        snprintf(errstr, size, "\"%s\" must be an http:// or https:// URL", f->name);
        return false;
    }
    return true;
}

/* Checks j against f and fills b with the parameter's text. */
static bool bind_value(const struct field *f, json_t *j, struct binding *b, char *errstr,
                       size_t size)
{
    *b = (struct binding){ .f = f };
    if (json_is_null(j)) {
        if (f->flags & F_NULLABLE)
            return true;
        snprintf(errstr, size, "\"%s\" must not be null", f->name);
        return false;
    }
    if (f->type == FT_TEXT && json_is_string(j)) {
        /* No NUL inside: jansson refuses \u0000 unless JSON_ALLOW_NUL is given. */
        b->value = json_string_value(j);
        return text_ok(f, b->value, errstr, size);
    }
    if (f->type == FT_UUID && json_is_string(j)) {
        b->value = json_string_value(j);
        if (ab_uuid_valid(b->value))
            return true;
        snprintf(errstr, size, "\"%s\" must be a UUID (8-4-4-4-12 hex digits)", f->name);
        return false;
    }
    if (f->type == FT_INT && json_is_integer(j)) {
        json_int_t n = json_integer_value(j);
        if (n < f->min || n > f->max) {
            snprintf(errstr, size, "\"%s\" must be an integer from %d to %d", f->name, f->min,
                     f->max);
            return false;
        }
        snprintf(b->num, sizeof(b->num), "%" JSON_INTEGER_FORMAT, n);
        b->value = b->num;
        return true;
    }
    if (f->type == FT_BOOL && json_is_boolean(j)) {
        b->value = json_is_true(j) ? "true" : "false";
        return true;
    }
    snprintf(errstr, size, "\"%s\" must be %s", f->name, json_types[f->type]);
    return false;
}

/* The fields a body may carry, for the message about an unknown one. */
static void writable_names(const struct resource *res, bool creating, char *out, size_t size)
{
    const char *names[MAX_FIELDS + 1];
    int n = 0;
    for (const struct field *f = res->fields; f->name != NULL && n < MAX_FIELDS; f++)
        if (!(f->flags & F_READ_ONLY) && (creating || !(f->flags & F_CREATE_ONLY)))
            names[n++] = f->name;
    names[n] = NULL;
    join_names(names, ", ", out, size);
}

static bool field_writable(const struct resource *res, const struct field *f, const char *key,
                           bool creating, char *errstr, size_t size)
{
    if (f == NULL) {
        char expected[400];
        writable_names(res, creating, expected, sizeof(expected));
        snprintf(errstr, size, "unknown field \"%.*s\" (expected %s)", quote_len(key), key,
                 expected);
        return false;
    }
    if (f->flags & F_READ_ONLY) {
        snprintf(errstr, size, "\"%s\" is read-only", f->name);
        return false;
    }
    if (!creating && (f->flags & F_CREATE_ONLY)) {
        snprintf(errstr, size, "\"%s\" is set at creation and cannot be changed", f->name);
        return false;
    }
    return true;
}

/* Checks a create (creating) or patch body and binds each field it gives. */
static enum ab_err parse_body(const struct resource *res, json_t *body, bool creating,
                              struct bindings *bs, char *errstr, size_t size)
{
    const char *key;
    json_t *value;
    bs->n = 0;
    if (!json_is_object(body)) {
        snprintf(errstr, size, "the body must be a JSON object");
        return AB_ERR_INVALID;
    }
    if (!creating && json_object_size(body) == 0) {
        snprintf(errstr, size, "the body names no field to change");
        return AB_ERR_INVALID;
    }
    json_object_foreach(body, key, value)
    {
        const struct field *f = find_field(res, key);
        if (!field_writable(res, f, key, creating, errstr, size))
            return AB_ERR_INVALID;
        /* Cannot overflow: each key is a different field (duplicates fail json_loadb). */
        if (!bind_value(f, value, &bs->b[bs->n], errstr, size))
            return AB_ERR_INVALID;
        bs->n++;
    }
    for (const struct field *f = res->fields; creating && f->name != NULL; f++) {
        if ((f->flags & F_REQUIRED) && json_object_get(body, f->name) == NULL) {
            snprintf(errstr, size, "\"%s\" is required", f->name);
            return AB_ERR_INVALID;
        }
    }
    return AB_OK;
}

static bool is_filter(const struct resource *res, const char *name)
{
    for (int i = 0; res->filters[i] != NULL; i++)
        if (strcmp(res->filters[i], name) == 0)
            return true;
    return false;
}

static bool limit_ok(const char *s)
{
    size_t len = strlen(s);
    if (len == 0 || len > 4 || strspn(s, "0123456789") != len)
        return false;
    long n = strtol(s, NULL, 10);
    return n >= 1 && n <= LIST_LIMIT_MAX;
}

/* One query parameter of a list: "limit" or a filter, checked like a body field. */
static enum ab_err parse_query_param(const struct resource *res, const char *key,
                                     const char *value, struct bindings *bs,
                                     const char **limit, char *errstr, size_t size)
{
    char expected[256];
    if (strcmp(key, "limit") == 0) {
        if (!limit_ok(value)) {
            snprintf(errstr, size, "\"limit\" must be an integer from 1 to %d", LIST_LIMIT_MAX);
            return AB_ERR_INVALID;
        }
        *limit = value;
        return AB_OK;
    }
    const struct field *f = is_filter(res, key) ? find_field(res, key) : NULL;
    if (f == NULL || bs->n == MAX_FIELDS) {
        join_names(res->filters, ", ", expected, sizeof(expected));
        snprintf(errstr, size, "unknown query parameter \"%.*s\" (expected limit%s%s)",
                 quote_len(key), key, expected[0] ? ", " : "", expected);
        return AB_ERR_INVALID;
    }
    json_t *j = json_string(value); /* NULL when not UTF-8 */
    bool ok = j != NULL && bind_value(f, j, &bs->b[bs->n], errstr, size);
    json_decref(j);
    if (j == NULL)
        snprintf(errstr, size, "\"%s\" is not UTF-8 text", f->name);
    if (!ok)
        return AB_ERR_INVALID;
    bs->b[bs->n++].value = value; /* the request's copy: j is gone */
    return AB_OK;
}

static enum ab_err parse_query(const struct resource *res, const struct _u_request *req,
                               struct bindings *bs, const char **limit, char *errstr,
                               size_t size)
{
    const char **keys = u_map_enum_keys(req->map_url);
    bs->n = 0;
    *limit = LIST_LIMIT_DEFAULT;
    for (int i = 0; keys != NULL && keys[i] != NULL; i++) {
        const char *value = u_map_get(req->map_url, keys[i]);
        enum ab_err err = parse_query_param(res, keys[i], value ? value : "", bs, limit,
                                            errstr, size);
        if (err)
            return err;
    }
    return AB_OK;
}

/* ---- SQL ---- */

/* A statement under construction. Only descriptor constants go into text; values go into
 * params. */
struct sql {
    char text[SQL_MAX];
    size_t len;
    bool overflow; /* descriptors too long for text: a bug, answered 500 */
    const char *params[MAX_PARAMS];
    int nparams;
    char nums[MAX_PARAMS][24]; /* the text of numbers sql_param_int sent */
};

__attribute__((sentinel)) static void sql_cat(struct sql *q, ...)
{
    va_list ap;
    va_start(ap, q);
    for (const char *s = va_arg(ap, const char *); s != NULL && !q->overflow;
         s = va_arg(ap, const char *)) {
        size_t n = strlen(s);
        if (q->len + n >= sizeof(q->text)) {
            q->overflow = true;
            continue;
        }
        memcpy(q->text + q->len, s, n + 1);
        q->len += n;
    }
    va_end(ap);
}
#define sql_add(q, ...) sql_cat((q), __VA_ARGS__, (const char *)NULL)

/* Appends "$n::type" for a new parameter whose text is value (NULL = SQL NULL). */
static void sql_param(struct sql *q, const char *value, enum field_type type)
{
    char ref[32];
    if (q->nparams == MAX_PARAMS) {
        q->overflow = true;
        return;
    }
    q->params[q->nparams++] = value;
    snprintf(ref, sizeof(ref), "$%d::%s", q->nparams, sql_types[type]);
    sql_add(q, ref);
}

/* Appends "$n::integer" for a new parameter whose value is n; q keeps its text. */
static void sql_param_int(struct sql *q, long long n)
{
    if (q->nparams == MAX_PARAMS) {
        q->overflow = true;
        return;
    }
    snprintf(q->nums[q->nparams], sizeof(q->nums[0]), "%lld", n);
    sql_param(q, q->nums[q->nparams], FT_INT);
}

/* Field f of the row "t": its column, or its computed value. Without a configuration
 * (ingress_admin_resources_routes not called) a computed field's option has its default. */
static void sql_field(struct sql *q, const struct field *f)
{
    const struct computed *c = f->computed;
    if (c == NULL) {
        sql_add(q, "t.", f->name);
        return;
    }
    sql_add(q, "(", c->head);
    sql_param_int(q, computed_cfg ? ab_config_int(computed_cfg, c->opt)
                                  : strtoll(ab_config_option(c->opt)->def, NULL, 10));
    sql_add(q, c->tail, ")");
}

/* json_build_object('id', t.id, ...) over the row "t": what an answer shows of it. */
static void sql_object(struct sql *q, const struct resource *res)
{
    sql_add(q, "json_build_object(");
    for (const struct field *f = res->fields; f->name != NULL; f++) {
        const char *sep = f == res->fields ? "" : ", ";
        if (f->flags & F_SECRET)
            sql_add(q, sep, "'", f->name, "_set', t.", f->name, " <> ''");
        else if (f->type == FT_TIME)
            sql_add(q, sep, "'", f->name, "', to_char(t.", f->name,
                    " AT TIME ZONE 'UTC', " SQL_TIME_FORMAT ")");
        else {
            sql_add(q, sep, "'", f->name, "', ");
            sql_field(q, f);
        }
    }
    sql_add(q, ")");
}

static void sql_get(struct sql *q, const struct resource *res, const char *id)
{
    sql_add(q, "SELECT ");
    sql_object(q, res);
    sql_add(q, " FROM ", res->table, " t WHERE t.id = ");
    sql_param(q, id, FT_UUID);
}

static void sql_list(struct sql *q, const struct resource *res, const struct bindings *filters,
                     const char *limit)
{
    sql_add(q, "SELECT ");
    sql_object(q, res);
    sql_add(q, " FROM ", res->table, " t WHERE true");
    for (int i = 0; i < filters->n; i++) {
        sql_add(q, " AND ");
        sql_field(q, filters->b[i].f);
        sql_add(q, " = ");
        sql_param(q, filters->b[i].value, filters->b[i].f->type);
    }
    sql_add(q, " ORDER BY t.created_at DESC, t.id DESC LIMIT ");
    sql_param(q, limit, FT_INT);
}

/* v: the row as it will be. Given values, then for a patch (id set) the stored ones, for a
 * create NULL (only the references checks read there, and they are NULL by default). */
static void sql_row_to_be(struct sql *q, const struct resource *res, const struct bindings *bs,
                          const char *id)
{
    const char *sep = "";
    if (id != NULL) {
        sql_add(q, "r.id");
        sep = ", ";
    }
    for (const struct field *f = res->fields; f->name != NULL; f++) {
        if (f->flags & F_READ_ONLY)
            continue;
        const struct binding *b = find_binding(bs, f);
        sql_add(q, sep);
        sep = ", ";
        if (b != NULL)
            sql_param(q, b->value, f->type);
        else if (id != NULL)
            sql_add(q, "r.", f->name);
        else
            sql_add(q, "NULL::", sql_types[f->type]);
        sql_add(q, " AS ", f->name);
    }
    if (id != NULL) {
        sql_add(q, " FROM ", res->table, " r WHERE r.id = ");
        sql_param(q, id, FT_UUID);
    }
}

/* The index of the first check v fails, or NULL when all hold. */
static void sql_checks(struct sql *q, const struct resource *res)
{
    if (res->checks[0].sql == NULL) {
        sql_add(q, "NULL::integer");
        return;
    }
    sql_add(q, "CASE");
    for (int i = 0; res->checks[i].sql != NULL; i++) {
        char index[16];
        snprintf(index, sizeof(index), "%d", i);
        sql_add(q, " WHEN NOT COALESCE((", res->checks[i].sql, "), false) THEN ", index);
    }
    sql_add(q, " END");
}

static void sql_insert(struct sql *q, const struct resource *res, const struct bindings *bs)
{
    sql_add(q, "INSERT INTO ", res->table, " AS u (");
    for (int i = 0; i < bs->n; i++)
        sql_add(q, i ? ", " : "", bs->b[i].f->name);
    sql_add(q, ") SELECT ");
    for (int i = 0; i < bs->n; i++)
        sql_add(q, i ? ", " : "", "v.", bs->b[i].f->name);
    sql_add(q, " FROM v WHERE (SELECT problem FROM chk) IS NULL");
}

static void sql_update(struct sql *q, const struct resource *res, const struct bindings *bs)
{
    sql_add(q, "UPDATE ", res->table, " AS u SET ");
    for (int i = 0; i < bs->n; i++)
        sql_add(q, i ? ", " : "", bs->b[i].f->name, " = v.", bs->b[i].f->name);
    if (res->has_updated_at)
        sql_add(q, ", updated_at = now()");
    sql_add(q, " FROM v WHERE u.id = v.id AND (SELECT problem FROM chk) IS NULL");
}

/* A create (id NULL) or a patch; one row: (failed check or NULL, answer or NULL). */
static void sql_write(struct sql *q, const struct resource *res, const struct bindings *bs,
                      const char *id)
{
    sql_add(q, "WITH v AS (SELECT ");
    sql_row_to_be(q, res, bs, id);
    sql_add(q, "), chk AS (SELECT ");
    sql_checks(q, res);
    sql_add(q, " AS problem FROM v), t AS (");
    if (id == NULL)
        sql_insert(q, res, bs);
    else
        sql_update(q, res, bs);
    sql_add(q, " RETURNING u.*) SELECT (SELECT problem FROM chk), (SELECT ");
    sql_object(q, res);
    sql_add(q, " FROM t)");
}

static enum ab_err sql_run(const struct route_ctx *ctx, const struct sql *q, PGresult **pg,
                           char *errstr, size_t size)
{
    PGconn *conn = NULL;
    if (q->overflow) {
        snprintf(errstr, size, "a statement for %s is longer than %d bytes", ctx->res->name,
                 SQL_MAX);
        return AB_ERR_INTERNAL;
    }
    enum ab_err err = ab_service_db_acquire(ctx->admin->svc, DB_ACQUIRE_TIMEOUT_MS, &conn, errstr,
                                    size);
    if (err != AB_OK)
        return err;
    err = ab_db_exec(conn, q->text, q->nparams, q->params, pg, errstr, size);
    ab_db_release(ctx->admin->svc->db, conn);
    return err;
}

/* ---- Answers ---- */

static void reply_db_error(struct _u_response *resp, const struct resource *res, json_t *body,
                           enum ab_err err, const char *errstr)
{
    const char *why = strncmp(errstr, "ERROR:  ", 8) == 0 ? errstr + 8 : errstr;
    json_t *j = body && res->conflict_field ? json_object_get(body, res->conflict_field) : NULL;
    const char *given = json_string_value(j);
    switch (err) {
    case AB_ERR_CONFLICT:
        if (given != NULL)
            ab_http_error(resp, err, "%s: %s \"%.*s\"", res->conflict, res->conflict_field,
                          quote_len(given), given);
        else
            ab_http_error(resp, err, "%s", res->conflict);
        return;
    case AB_ERR_INVALID:
        /* Validation and the checks leave only races here (a tenant deleted meanwhile). */
        ab_http_error(resp, err, "the database refused the values: %s", why);
        return;
    case AB_ERR_UNAVAILABLE:
    case AB_ERR_TIMEOUT:
        ab_warn("admin %s: PostgreSQL unavailable: %s", res->name, errstr);
        ab_http_error(resp, AB_ERR_UNAVAILABLE, "PostgreSQL is not available now: %s", why);
        return;
    default:
        ab_error("admin %s: %s", res->name, errstr);
        ab_http_error(resp, AB_ERR_INTERNAL, "the database failed; the ingress log says why");
    }
}

/* Answers the JSON text in (row, col) of pg with status. */
static void reply_row(struct _u_response *resp, const struct resource *res, PGresult *pg,
                      int row, int col, int status)
{
    json_error_t jerr;
    json_t *j = json_loads(PQgetvalue(pg, row, col), 0, &jerr);
    if (j == NULL) {
        ab_error("admin %s: PostgreSQL answered JSON jansson cannot read: %s", res->name,
                 jerr.text);
        ab_http_error(resp, AB_ERR_INTERNAL, "the answer could not be read");
        return;
    }
    ab_http_json(resp, status, j);
}

static void reply_not_found(struct _u_response *resp, const struct resource *res,
                            const char *id)
{
    ab_http_error(resp, AB_ERR_NOT_FOUND, "%s/%s does not exist", res->name, id);
}

/* What sql_write's answer says: AB_OK (the row's JSON is at (0, 1)), AB_ERR_INVALID for a
 * failed reference check, AB_ERR_NOT_FOUND for a patch of a row that is gone, or
 * AB_ERR_INTERNAL for an answer of the wrong shape; errstr says which. */
static enum ab_err written_outcome(const struct resource *res, PGresult *pg, const char *id,
                                   char *errstr, size_t size)
{
    int nchecks = 0;
    while (res->checks[nchecks].sql != NULL)
        nchecks++;
    if (PQntuples(pg) != 1 || PQnfields(pg) != 2) {
        snprintf(errstr, size, "a write of %s answered %d rows", res->name, PQntuples(pg));
        return AB_ERR_INTERNAL;
    }
    if (!PQgetisnull(pg, 0, 0)) {
        long i = strtol(PQgetvalue(pg, 0, 0), NULL, 10);
        snprintf(errstr, size, "%s",
                 i >= 0 && i < nchecks ? res->checks[i].message : "a reference is invalid");
        return AB_ERR_INVALID;
    }
    if (PQgetisnull(pg, 0, 1)) {
        /* Only a patch can write nothing without failing a check: its row is gone. */
        snprintf(errstr, size, "%s/%s does not exist", res->name, id ? id : "(new)");
        return id != NULL ? AB_ERR_NOT_FOUND : AB_ERR_INTERNAL;
    }
    return AB_OK;
}

/* The answer of sql_write: a failed check (400), nothing patched (404), or the row. */
static void reply_written(struct _u_response *resp, const struct resource *res, PGresult *pg,
                          const char *id)
{
    char errstr[512];
    enum ab_err err = written_outcome(res, pg, id, errstr, sizeof(errstr));
    if (err == AB_OK) {
        reply_row(resp, res, pg, 0, 1, id ? 200 : 201);
    } else if (err == AB_ERR_INVALID || err == AB_ERR_NOT_FOUND) {
        ab_http_error(resp, err, "%s", errstr);
    } else {
        ab_error("admin: %s", errstr);
        ab_http_error(resp, AB_ERR_INTERNAL, "the database answered an unexpected shape");
    }
}

/* ---- Handlers ---- */

/* The :id of the path, or NULL after answering 400. */
static const char *path_id(const struct resource *res, const struct _u_request *req,
                           struct _u_response *resp)
{
    const char *id = u_map_get(req->map_url, "id");
    if (ab_uuid_valid(id))
        return id;
    ab_http_error(resp, AB_ERR_INVALID, "the id in /api/admin/%s/<id> must be a UUID "
                  "(8-4-4-4-12 hex digits)", res->name);
    return NULL;
}

static void list_items(const struct _u_request *req, struct _u_response *resp, void *ud)
{
    const struct route_ctx *ctx = ud;
    struct bindings filters;
    struct sql q = { .len = 0 };
    const char *limit;
    char errstr[512];
    PGresult *pg = NULL;
    if (!ingress_admin_authorized(ctx->admin, req, resp))
        return;
    enum ab_err err = parse_query(ctx->res, req, &filters, &limit, errstr, sizeof(errstr));
    if (err) {
        ab_http_error(resp, err, "%s", errstr);
        return;
    }
    sql_list(&q, ctx->res, &filters, limit);
    err = sql_run(ctx, &q, &pg, errstr, sizeof(errstr));
    if (err) {
        reply_db_error(resp, ctx->res, NULL, err, errstr);
        return;
    }
    json_t *items = json_array();
    for (int i = 0; i < PQntuples(pg); i++) {
        json_t *item = json_loads(PQgetvalue(pg, i, 0), 0, NULL);
        if (item == NULL || json_array_append_new(items, item) != 0) {
            ab_error("admin %s: PostgreSQL answered JSON jansson cannot read", ctx->res->name);
            ab_http_error(resp, AB_ERR_INTERNAL, "the answer could not be read");
            json_decref(items);
            PQclear(pg);
            return;
        }
    }
    PQclear(pg);
    ab_http_json(resp, 200, json_pack("{s:o}", "items", items));
}

/* Create (id NULL) or patch. */
static void write_item(const struct route_ctx *ctx, const struct _u_request *req,
                       struct _u_response *resp, const char *id)
{
    struct bindings bs;
    struct sql q = { .len = 0 };
    char errstr[512];
    json_t *body = NULL;
    PGresult *pg = NULL;
    enum ab_err err = ab_http_json_body(req, &body, errstr, sizeof(errstr));
    if (err == AB_OK)
        err = parse_body(ctx->res, body, id == NULL, &bs, errstr, sizeof(errstr));
    if (err) {
        ab_http_error(resp, err, "%s", errstr);
        goto out;
    }
    /* bs borrows body's strings: body lives until the statement ran. */
    sql_write(&q, ctx->res, &bs, id);
    err = sql_run(ctx, &q, &pg, errstr, sizeof(errstr));
    if (err) {
        reply_db_error(resp, ctx->res, body, err, errstr);
        goto out;
    }
    reply_written(resp, ctx->res, pg, id);
    PQclear(pg);
out:
    json_decref(body);
}

static void create_item(const struct _u_request *req, struct _u_response *resp, void *ud)
{
    const struct route_ctx *ctx = ud;
    if (ingress_admin_authorized(ctx->admin, req, resp))
        write_item(ctx, req, resp, NULL);
}

static void update_item(const struct _u_request *req, struct _u_response *resp, void *ud)
{
    const struct route_ctx *ctx = ud;
    if (!ingress_admin_authorized(ctx->admin, req, resp))
        return;
    const char *id = path_id(ctx->res, req, resp);
    if (id != NULL)
        write_item(ctx, req, resp, id);
}

static void get_item(const struct _u_request *req, struct _u_response *resp, void *ud)
{
    const struct route_ctx *ctx = ud;
    struct sql q = { .len = 0 };
    char errstr[512];
    PGresult *pg = NULL;
    if (!ingress_admin_authorized(ctx->admin, req, resp))
        return;
    const char *id = path_id(ctx->res, req, resp);
    if (id == NULL)
        return;
    sql_get(&q, ctx->res, id);
    enum ab_err err = sql_run(ctx, &q, &pg, errstr, sizeof(errstr));
    if (err) {
        reply_db_error(resp, ctx->res, NULL, err, errstr);
        return;
    }
    if (PQntuples(pg) == 0)
        reply_not_found(resp, ctx->res, id);
    else
        reply_row(resp, ctx->res, pg, 0, 0, 200);
    PQclear(pg);
}

static void delete_item(const struct _u_request *req, struct _u_response *resp, void *ud)
{
    const struct route_ctx *ctx = ud;
    struct sql q = { .len = 0 };
    char errstr[512];
    PGresult *pg = NULL;
    if (!ingress_admin_authorized(ctx->admin, req, resp))
        return;
    const char *id = path_id(ctx->res, req, resp);
    if (id == NULL)
        return;
    /* What belongs to the row goes with it: the foreign keys cascade. */
    sql_add(&q, "DELETE FROM ", ctx->res->table, " WHERE id = ");
    sql_param(&q, id, FT_UUID);
    enum ab_err err = sql_run(ctx, &q, &pg, errstr, sizeof(errstr));
    if (err) {
        reply_db_error(resp, ctx->res, NULL, err, errstr);
        return;
    }
    if (strcmp(PQcmdTuples(pg), "0") == 0)
        reply_not_found(resp, ctx->res, id);
    else
        ulfius_set_empty_body_response(resp, 204);
    PQclear(pg);
}

enum ab_err ingress_admin_resources_routes(struct ingress_admin *admin,
                                           struct ab_http_server *api)
{
    static const struct {
        const char *method;
        bool item; /* the route ends with /:id */
        ab_http_handler handler;
    } routes[] = {
        { "GET", false, list_items },  { "POST", false, create_item },
        { "GET", true, get_item },     { "PATCH", true, update_item },
        { "DELETE", true, delete_item },
    };
    computed_cfg = admin->svc->cfg;
    for (size_t i = 0; i < N_RESOURCES; i++) {
        route_ctxs[i] = (struct route_ctx){ admin, &resources[i] };
        for (size_t r = 0; r < sizeof(routes) / sizeof(routes[0]); r++) {
            char path[128];
            snprintf(path, sizeof(path), "/api/admin/%s%s", resources[i].name,
                     routes[r].item ? "/:id" : "");
            enum ab_err err = ab_http_server_route(api, routes[r].method, path,
                                                   routes[r].handler, &route_ctxs[i]);
            if (err != AB_OK)
                return err;
        }
    }
    return AB_OK;
}

/* ---- For the seed (services/ingress/seed.c) ---- */

static const struct resource *find_resource(const char *name)
{
    for (size_t i = 0; i < N_RESOURCES; i++)
        if (strcmp(resources[i].name, name) == 0)
            return &resources[i];
    return NULL;
}

enum ab_err ingress_admin_check(const char *resource, json_t *body, bool creating,
                                char *errstr, size_t size)
{
    struct bindings bs;
    const struct resource *res = find_resource(resource);
    if (res == NULL) {
        snprintf(errstr, size, "no admin resource \"%s\"", resource);
        return AB_ERR_INTERNAL;
    }
    return parse_body(res, body, creating, &bs, errstr, size);
}

enum ab_err ingress_admin_write(PGconn *conn, const char *resource, json_t *body,
                                const char *id, char id_out[AB_UUID_LEN + 1], char *errstr,
                                size_t size)
{
    struct bindings bs;
    struct sql q = { .len = 0 };
    PGresult *pg = NULL;
    const struct resource *res = find_resource(resource);
    if (res == NULL) {
        snprintf(errstr, size, "no admin resource \"%s\"", resource);
        return AB_ERR_INTERNAL;
    }
    /* bs borrows body's strings: body outlives the statement. */
    enum ab_err err = parse_body(res, body, id == NULL, &bs, errstr, size);
    if (err)
        return err;
    sql_write(&q, res, &bs, id);
    if (q.overflow) {
        snprintf(errstr, size, "a statement for %s is longer than %d bytes", res->name, SQL_MAX);
        return AB_ERR_INTERNAL;
    }
    err = ab_db_exec(conn, q.text, q.nparams, q.params, &pg, errstr, size);
    if (err == AB_ERR_CONFLICT)
        snprintf(errstr, size, "%s", res->conflict);
    if (err == AB_OK)
        err = written_outcome(res, pg, id, errstr, size);
    if (err == AB_OK) {
        json_t *row = json_loads(PQgetvalue(pg, 0, 1), 0, NULL);
        const char *row_id = json_string_value(json_object_get(row, "id"));
        snprintf(id_out, AB_UUID_LEN + 1, "%s", row_id ? row_id : "");
        json_decref(row);
        if (row_id == NULL) {
            snprintf(errstr, size, "a write of %s answered no id", res->name);
            err = AB_ERR_INTERNAL;
        }
    }
    PQclear(pg);
    return err;
}
