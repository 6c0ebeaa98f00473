/* Applying the `seed` section of the configuration (docs/seeding.md).
 *
 * A seed names records, never ids: a tenant by its name, a model by its name in the tenant,
 * an agent or a member by its name whatever the case. Each record becomes the body of an
 * admin API create or patch (ingress_admin_write), so a seed obeys exactly the admin API's
 * rules and reference checks; the names it uses for references (primary_model, agent,
 * member, target_agent) are turned into the ids the API takes. Found records are patched
 * with the fields the seed gives; fields it does not give keep their value; nothing is
 * deleted. Any string value may be {"env": "NAME"}: the value of that environment variable,
 * so secrets can come from a Kubernetes Secret rather than the file.
 *
 * The whole seed is one transaction under an advisory lock: replicas starting together
 * apply it one after the other, and a seed the database refuses changes nothing. */
#include "services/ingress/seed.h"

#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "common/crypto.h"
#include "common/db.h"
#include "common/log.h"
#include "common/util.h"
#include "services/ingress/admin_resources.h"
#include "services/ingress/routes_gateway.h"

#define PATH_MAX_LEN 400
#define KEY_MIN_LEN 24  /* Clawith's keys are 46 characters; ours too */
#define DB_WAIT_MS 5000
#define RETRY_MAX_MS 30000
/* Any constant: the lock only serializes seed applications with each other. */
#define SEED_LOCK_SQL "SELECT pg_advisory_xact_lock(7401553120942741)"
/* The id references take while a seed is only checked: the checks are about the shape. */
#define CHECK_ONLY_ID "00000000-0000-0000-0000-000000000000"

/* Where the walk is: the database (NULL while only checking), the tenant's id, and the
 * record's path for messages ("tenants[0] \"acme\" agents[1] \"Bob\""). */
struct walk {
    PGconn *conn;
    char tenant_id[AB_UUID_LEN + 1];
    char path[PATH_MAX_LEN];
    struct ingress_seed_counts *counts;
    char *errstr;
    size_t size;
    /* The record being written ("agents", 2) and what the records written so far were:
     * "<list>/<id>" -> "<list>[i]". Two entries that fold to one record (names equal
     * whatever their case, in any script) are refused rather than merged. */
    const char *list;
    size_t index;
    json_t *written;
};

static enum ab_err fail(struct walk *w, enum ab_err err, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static enum ab_err fail(struct walk *w, enum ab_err err, const char *fmt, ...)
{
    char why[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, sizeof(why), fmt, ap);
    va_end(ap);
    snprintf(w->errstr, w->size, "seed %s: %s", w->path, why);
    return err;
}

/* Member `key` of item as text: a string, or the value of the variable {"env": NAME}
 * names; NULL when it is neither or the variable is not set. */
static const char *string_member(const json_t *item, const char *key)
{
    const json_t *j = json_object_get(item, key);
    if (json_is_object(j) && json_object_size(j) == 1 &&
        json_is_string(json_object_get(j, "env")))
        return getenv(json_string_value(json_object_get(j, "env")));
    return json_string_value(j);
}

/* Sets the path to parent + " " + key[index] "name", and the list and index written. */
static void walk_enter(struct walk *w, const char *parent, const char *key, size_t index,
                       const json_t *item)
{
    const char *name = string_member(item, "name");
    w->list = key;
    w->index = index;
    if (name == NULL)
        name = string_member(item, "agent");
    snprintf(w->path, sizeof(w->path), "%s%s%s[%zu]%s%.60s%s", parent, parent[0] ? " " : "", key,
             index, name ? " \"" : "", name ? name : "", name ? "\"" : "");
}

/* ---- Values ---- */

/* A copy of item in which every {"env": "NAME"} value is that variable's value.
 * @ownership the caller decrefs; NULL after fail(). */
static json_t *resolve_env(struct walk *w, const json_t *item)
{
    const char *key;
    json_t *value;
    json_t *out = json_deep_copy(item);
    json_object_foreach(out, key, value)
    {
        if (!json_is_object(value))
            continue;
        const char *name = json_string_value(json_object_get(value, "env"));
        if (name == NULL || json_object_size(value) != 1) {
            fail(w, AB_ERR_CONFIG, "\"%s\" must be a value or {\"env\": \"VARIABLE\"}", key);
            json_decref(out);
            return NULL;
        }
        const char *text = getenv(name);
        json_t *s = text ? json_string(text) : NULL;
        if (s == NULL) {
            fail(w, AB_ERR_CONFIG, "\"%s\": the environment variable %.64s is %s", key, name,
                 text ? "not UTF-8 text" : "not set");
            json_decref(out);
            return NULL;
        }
        json_object_set_new(out, key, s);
    }
    return out;
}

/* Moves member `key` (a name or null) out of body into *keep (NULL when absent).
 * @returns false after fail() when it is neither. @ownership the caller decrefs *keep. */
static bool take_name(struct walk *w, json_t *body, const char *key, json_t **keep)
{
    json_t *j = json_object_get(body, key);
    *keep = NULL;
    if (j == NULL)
        return true;
    if (!json_is_string(j) && !json_is_null(j)) {
        fail(w, AB_ERR_CONFIG, "\"%s\" must be a name", key);
        return false;
    }
    *keep = json_incref(j);
    json_object_del(body, key);
    return true;
}

/* ---- Database steps ---- */

/* Runs a lookup whose first column is an id; *found is the id of its only row, "" when
 * there is none. @returns AB_ERR_CONFLICT (after fail()) for several rows. */
static enum ab_err lookup(struct walk *w, const char *sql, int n, const char *const *params,
                          char found[AB_UUID_LEN + 1], char *extra, size_t extra_size)
{
    PGresult *res = NULL;
    found[0] = '\0';
    if (w->conn == NULL)
        return AB_OK; /* while checking, every record is a create */
    enum ab_err err = ab_db_exec(w->conn, sql, n, params, &res, w->errstr, w->size);
    if (err)
        return err;
    int rows = PQntuples(res);
    if (rows > 1) {
        PQclear(res);
        return fail(w, AB_ERR_CONFLICT, "the name matches %d records: rename them apart", rows);
    }
    if (rows == 1) {
        snprintf(found, AB_UUID_LEN + 1, "%s", PQgetvalue(res, 0, 0));
        if (extra && PQnfields(res) > 1)
            snprintf(extra, extra_size, "%s", PQgetvalue(res, 0, 1));
    }
    PQclear(res);
    return AB_OK;
}

/* The id of a record named by a reference (a model, an agent or a member of the tenant).
 * @returns AB_ERR_INVALID after fail() when there is none. */
static enum ab_err resolve(struct walk *w, const char *what, const char *sql, const char *name,
                           char id[AB_UUID_LEN + 1])
{
    const char *const params[] = { w->tenant_id, name };
    if (w->conn == NULL) {
        snprintf(id, AB_UUID_LEN + 1, "%s", CHECK_ONLY_ID);
        return AB_OK;
    }
    enum ab_err err = lookup(w, sql, 2, params, id, NULL, 0);
    if (err == AB_OK && id[0] == '\0')
        return fail(w, AB_ERR_INVALID, "no %s named \"%.64s\" in this tenant", what, name);
    return err;
}

static const char *const model_by_name =
    "SELECT id FROM llm_models WHERE tenant_id = $1::uuid AND name = $2";
static const char *const agent_by_name =
    "SELECT id, type FROM agents WHERE tenant_id = $1::uuid AND lower(name) = lower($2)";
static const char *const member_by_name =
    "SELECT id FROM org_members WHERE tenant_id = $1::uuid AND lower(name) = lower($2)";

/* The keys a patch may not carry: they are fixed at creation (and equal by the lookup). */
static const char *const create_only_keys[] = { "tenant_id", "agent_id", "member_id",
                                                "target_agent_id", "type", NULL };

/* Creates body as a `resource` when found is "", else patches the found record with it.
 * The record's id ends in id (may be NULL). */
static enum ab_err write_record(struct walk *w, const char *resource, json_t *body,
                                const char *found, char *id)
{
    char row_id[AB_UUID_LEN + 1], written_key[128];
    enum ab_err err;
    bool creating = found[0] == '\0';
    snprintf(written_key, sizeof(written_key), "%s/%s", w->list, found);
    const char *earlier = json_string_value(json_object_get(w->written, written_key));
    if (!creating && earlier != NULL)
        return fail(w, AB_ERR_CONFLICT, "names the same record as %s", earlier);
    if (!creating)
        for (int i = 0; create_only_keys[i] != NULL; i++)
            json_object_del(body, create_only_keys[i]);
    if (w->conn == NULL) {
        err = ingress_admin_check(resource, body, true, w->errstr, w->size);
        snprintf(row_id, sizeof(row_id), "%s", CHECK_ONLY_ID);
    } else if (!creating && json_object_size(body) == 0) {
        err = AB_OK; /* nothing to change: a relationship is only its two ends */
        snprintf(row_id, sizeof(row_id), "%s", found);
    } else {
        err = ingress_admin_write(w->conn, resource, body, creating ? NULL : found, row_id,
                                  w->errstr, w->size);
    }
    if (err == AB_ERR_INVALID || err == AB_ERR_CONFLICT || err == AB_ERR_NOT_FOUND) {
        char why[512];
        snprintf(why, sizeof(why), "%s", w->errstr);
        return fail(w, err == AB_ERR_NOT_FOUND ? AB_ERR_CONFLICT : err, "%s", why);
    }
    if (err)
        return err;
    if (w->conn != NULL) {
        char where[64];
        if (creating)
            w->counts->created++;
        else
            w->counts->updated++;
        snprintf(written_key, sizeof(written_key), "%s/%s", w->list, row_id);
        snprintf(where, sizeof(where), "%s[%zu]", w->list, w->index);
        json_object_set_new(w->written, written_key, json_string(where));
    }
    if (id != NULL)
        snprintf(id, AB_UUID_LEN + 1, "%s", row_id);
    return AB_OK;
}

/* Makes key_hash the agent's one active key. A key revoked through the API comes back if
 * the seed still names it: the seed is the source of truth, and rotating means changing
 * it; a warning says so. */
static enum ab_err set_agent_key(struct walk *w, const char *agent_id, const char *key_hash,
                                 const char *prefix)
{
    PGresult *res = NULL;
    const char *const params[] = { agent_id, key_hash, prefix };
    if (w->conn == NULL)
        return AB_OK;
    enum ab_err err = ab_db_exec(w->conn,
                                 "SELECT agent_id::text = $1, revoked_at IS NOT NULL"
                                 " FROM api_keys WHERE key_hash = $2",
                                 2, params, &res, w->errstr, w->size);
    if (err)
        return err;
    bool exists = PQntuples(res) == 1;
    bool ours = exists && strcmp(PQgetvalue(res, 0, 0), "t") == 0;
    bool revoked = exists && strcmp(PQgetvalue(res, 0, 1), "t") == 0;
    PQclear(res);
    if (exists && !ours)
        return fail(w, AB_ERR_CONFLICT, "its API key is (or was) another agent's key");
    if (exists && !revoked)
        return AB_OK; /* already the active key */
    if (revoked)
        ab_warn("seed %s: the API key it names had been revoked; it is active again because "
                "the seed names it (change the seed to rotate a key)", w->path);
    if (!revoked)
        return ingress_key_replace(w->conn, agent_id, key_hash, prefix, w->errstr, w->size);
    err = ab_db_exec(w->conn,
                     "UPDATE api_keys SET revoked_at = now()"
                     " WHERE agent_id = $1::uuid AND revoked_at IS NULL",
                     1, params, NULL, w->errstr, w->size);
    if (err == AB_OK)
        err = ab_db_exec(w->conn, "UPDATE api_keys SET revoked_at = NULL WHERE key_hash = $1",
                         1, params + 1, NULL, w->errstr, w->size);
    return err;
}

/* The agent's key from "api_key" (the key itself) or "api_key_sha256" (its SHA-256 in hex,
 * for a file that must not hold the key), taken out of body. */
static enum ab_err agent_key(struct walk *w, json_t *body, const char *agent_id,
                             const char *type)
{
    json_t *raw = json_object_get(body, "api_key"), *hashed = json_object_get(body, "api_key_sha256");
    char hash[65], prefix[9] = "";
    enum ab_err err = AB_OK;
    if (raw == NULL && hashed == NULL)
        return AB_OK;
    const char *key = json_string_value(raw), *hex = json_string_value(hashed);
    if (raw != NULL && hashed != NULL)
        err = fail(w, AB_ERR_CONFIG, "give \"api_key\" or \"api_key_sha256\", not both");
    else if (strcmp(type, "openclaw") != 0)
        err = fail(w, AB_ERR_CONFIG, "only OpenClaw agents have API keys");
    else if (raw != NULL && (key == NULL || strlen(key) < KEY_MIN_LEN ||
                             strlen(key) > INGRESS_KEY_MAX_LEN))
        err = fail(w, AB_ERR_CONFIG, "\"api_key\" must be a string of %d to %d characters",
                   KEY_MIN_LEN, INGRESS_KEY_MAX_LEN);
    else if (hashed != NULL && (hex == NULL || strlen(hex) != 64 ||
                                strspn(hex, "0123456789abcdef") != 64))
        err = fail(w, AB_ERR_CONFIG, "\"api_key_sha256\" must be 64 lowercase hex digits");
    for (const char *p = key; err == AB_OK && p != NULL && *p != '\0'; p++)
        if (!isgraph((unsigned char)*p))
            err = fail(w, AB_ERR_CONFIG, "\"api_key\" must be printable ASCII without spaces");
    if (err)
        return err;
    if (key != NULL) {
        ab_sha256_hex(key, strlen(key), hash);
        snprintf(prefix, sizeof(prefix), "%.8s", key);
    } else {
        snprintf(hash, sizeof(hash), "%s", hex);
    }
    json_object_del(body, "api_key");
    json_object_del(body, "api_key_sha256");
    return set_agent_key(w, agent_id, hash, prefix);
}

/* ---- Records ---- */

/* The admin API's reference fields, which a seed gives by name instead. */
static enum ab_err refuse_id_fields(struct walk *w, const json_t *item)
{
    static const char *const ids[][2] = {
        { "tenant_id", "the tenant it is listed under" }, { "agent_id", "\"agent\"" },
        { "member_id", "\"member\"" },                    { "target_agent_id", "\"target_agent\"" },
        { "primary_model_id", "\"primary_model\"" },     { "fallback_model_id", "\"fallback_model\"" },
        { "id", "its name" },
    };
    for (size_t i = 0; i < sizeof(ids) / sizeof(ids[0]); i++)
        if (json_object_get(item, ids[i][0]) != NULL)
            return fail(w, AB_ERR_CONFIG, "a seed names records: use %s, not \"%s\"", ids[i][1],
                        ids[i][0]);
    return AB_OK;
}

/* A record of the tenant found by its name (find_sql: $1 tenant, $2 name), created or
 * patched as a `resource`. */
static enum ab_err seed_by_name(struct walk *w, json_t *body, const char *find_sql,
                                const char *resource)
{
    char found[AB_UUID_LEN + 1];
    const char *name = json_string_value(json_object_get(body, "name"));
    const char *const params[] = { w->tenant_id, name ? name : "" };
    enum ab_err err = lookup(w, find_sql, 2, params, found, NULL, 0);
    json_object_set_new(body, "tenant_id", json_string(w->tenant_id));
    return err ? err : write_record(w, resource, body, found, NULL);
}

static enum ab_err seed_model(struct walk *w, json_t *body)
{
    return seed_by_name(w, body, model_by_name, "llm-models");
}

/* primary_model / fallback_model: a model name (or null) becomes *_model_id. */
static enum ab_err model_reference(struct walk *w, json_t *body, const char *key,
                                   const char *id_key)
{
    json_t *name = NULL;
    char id[AB_UUID_LEN + 1];
    enum ab_err err = AB_OK;
    if (!take_name(w, body, key, &name))
        return AB_ERR_CONFIG;
    if (json_is_string(name))
        err = resolve(w, "LLM model", model_by_name, json_string_value(name), id);
    if (err == AB_OK && name != NULL)
        json_object_set_new(body, id_key, json_is_null(name) ? json_null() : json_string(id));
    json_decref(name);
    return err;
}

static enum ab_err seed_agent(struct walk *w, json_t *body)
{
    char found[AB_UUID_LEN + 1], id[AB_UUID_LEN + 1], stored_type[16] = "";
    const char *name = json_string_value(json_object_get(body, "name"));
    const char *type = json_string_value(json_object_get(body, "type"));
    const char *const params[] = { w->tenant_id, name ? name : "" };
    enum ab_err err = model_reference(w, body, "primary_model", "primary_model_id");
    if (err == AB_OK)
        err = model_reference(w, body, "fallback_model", "fallback_model_id");
    if (err == AB_OK)
        err = lookup(w, agent_by_name, 2, params, found, stored_type, sizeof(stored_type));
    if (err)
        return err;
    if (found[0] != '\0' && type != NULL && strcmp(type, stored_type) != 0)
        return fail(w, AB_ERR_CONFLICT, "the agent exists as a%s %s agent; a type is set at "
                    "creation", stored_type[0] == 'o' ? "n" : "", stored_type);
    /* The key is written after the agent, so it is kept apart from the agent's fields. */
    json_t *key_fields = json_object();
    json_object_set(key_fields, "api_key", json_object_get(body, "api_key"));
    json_object_set(key_fields, "api_key_sha256", json_object_get(body, "api_key_sha256"));
    json_object_del(body, "api_key");
    json_object_del(body, "api_key_sha256");
    json_object_set_new(body, "tenant_id", json_string(w->tenant_id));
    const char *effective_type = found[0] != '\0' ? stored_type : type ? type : "";
    char type_copy[16];
    snprintf(type_copy, sizeof(type_copy), "%s", effective_type);
    err = write_record(w, "agents", body, found, id);
    if (err == AB_OK)
        err = agent_key(w, key_fields, id, type_copy);
    json_decref(key_fields);
    return err;
}

static enum ab_err seed_member(struct walk *w, json_t *body)
{
    return seed_by_name(w, body, member_by_name, "members");
}

/* {"agent": A, "member": M} or {"agent": A, "target_agent": B}, with relation and
 * description. */
static enum ab_err seed_relationship(struct walk *w, json_t *body)
{
    json_t *agent = NULL, *member = NULL, *target = NULL;
    char agent_id[AB_UUID_LEN + 1], other_id[AB_UUID_LEN + 1], found[AB_UUID_LEN + 1];
    enum ab_err err = AB_ERR_CONFIG;
    if (!take_name(w, body, "agent", &agent) || !take_name(w, body, "member", &member) ||
        !take_name(w, body, "target_agent", &target))
        goto out;
    if (!json_is_string(agent) || (member == NULL) == (target == NULL) ||
        json_is_null(member) || json_is_null(target)) {
        fail(w, AB_ERR_CONFIG, "a relationship is {\"agent\": name, \"member\": name} or "
             "{\"agent\": name, \"target_agent\": name}");
        goto out;
    }
    if (target != NULL && strcasecmp(json_string_value(agent), json_string_value(target)) == 0) {
        err = fail(w, AB_ERR_CONFIG, "an agent cannot have a relationship with itself");
        goto out;
    }
    err = resolve(w, "agent", agent_by_name, json_string_value(agent), agent_id);
    if (err == AB_OK && member != NULL)
        err = resolve(w, "member", member_by_name, json_string_value(member), other_id);
    else if (err == AB_OK)
        err = resolve(w, "agent", agent_by_name, json_string_value(target), other_id);
    const char *const params[] = { agent_id, other_id };
    if (err == AB_OK)
        err = lookup(w,
                     member ? "SELECT id FROM agent_member_relationships"
                              " WHERE agent_id = $1::uuid AND member_id = $2::uuid"
                            : "SELECT id FROM agent_agent_relationships"
                              " WHERE agent_id = $1::uuid AND target_agent_id = $2::uuid",
                     2, params, found, NULL, 0);
    if (err)
        goto out;
    json_object_set_new(body, "agent_id", json_string(agent_id));
    json_object_set_new(body, member ? "member_id" : "target_agent_id", json_string(other_id));
    err = write_record(w, member ? "agent-member-relationships" : "agent-agent-relationships",
                       body, found, NULL);
out:
    json_decref(agent);
    json_decref(member);
    json_decref(target);
    return err;
}

/* A channel config of the tenant (the default) or, with "agent", of one agent. */
static enum ab_err seed_channel(struct walk *w, json_t *body)
{
    json_t *agent = NULL;
    char agent_id[AB_UUID_LEN + 1] = "", found[AB_UUID_LEN + 1];
    const char *type = json_string_value(json_object_get(body, "channel_type"));
    enum ab_err err = AB_OK;
    if (!take_name(w, body, "agent", &agent))
        return AB_ERR_CONFIG;
    if (json_is_string(agent))
        err = resolve(w, "agent", agent_by_name, json_string_value(agent), agent_id);
    const char *const params[] = { w->tenant_id, agent_id[0] ? agent_id : NULL,
                                   type ? type : "" };
    if (err == AB_OK)
        err = lookup(w,
                     "SELECT id FROM channel_configs WHERE tenant_id = $1::uuid"
                     " AND agent_id IS NOT DISTINCT FROM $2::uuid AND channel_type = $3",
                     3, params, found, NULL, 0);
    if (err == AB_OK) {
        json_object_set_new(body, "tenant_id", json_string(w->tenant_id));
        if (agent_id[0] != '\0')
            json_object_set_new(body, "agent_id", json_string(agent_id));
        err = write_record(w, "channel-configs", body, found, NULL);
    }
    json_decref(agent);
    return err;
}

/* What tells one record from another in a list: two items naming the same record would
 * have the second silently patch the first, so a seed that does is refused. Agents and
 * members are found whatever the case of their names, models and tenants exactly. */
struct identity {
    const char *members[3]; /* NULL-terminated unless full */
    bool fold_case;
};

static const struct identity by_exact_name = { { "name" }, false };

/* The lists a tenant may hold, in the order they are applied (references point back). */
static const struct {
    const char *key;
    enum ab_err (*apply)(struct walk *, json_t *);
    struct identity identity;
} lists[] = {
    { "llm_models", seed_model, { { "name" }, false } },
    { "agents", seed_agent, { { "name" }, true } },
    { "members", seed_member, { { "name" }, true } },
    { "relationships", seed_relationship, { { "agent", "member", "target_agent" }, true } },
    { "channel_configs", seed_channel, { { "agent", "channel_type" }, true } },
};
#define N_LISTS (sizeof(lists) / sizeof(lists[0]))

static bool same_record(const struct identity *id, const json_t *a, const json_t *b)
{
    for (int m = 0; m < 3 && id->members[m] != NULL; m++) {
        const char *x = string_member(a, id->members[m]);
        const char *y = string_member(b, id->members[m]);
        if (x == NULL || y == NULL) {
            if (x != y)
                return false;
        } else if (id->fold_case ? strcasecmp(x, y) != 0 : strcmp(x, y) != 0) {
            return false;
        }
    }
    return true;
}

/* Refuses items[i] when an earlier item names the same record. */
static enum ab_err refuse_repeat(struct walk *w, const char *key, const struct identity *id,
                                 const json_t *items, size_t i)
{
    for (size_t j = 0; j < i; j++)
        if (json_is_object(json_array_get(items, j)) &&
            same_record(id, json_array_get(items, j), json_array_get(items, i)))
            return fail(w, AB_ERR_CONFIG, "names the same record as %s[%zu]", key, j);
    return AB_OK;
}

static enum ab_err seed_list(struct walk *w, const char *tenant_path, const json_t *tenant,
                             size_t l)
{
    const json_t *items = json_object_get(tenant, lists[l].key);
    size_t i;
    const json_t *item;
    if (items == NULL)
        return AB_OK;
    if (!json_is_array(items)) {
        snprintf(w->path, sizeof(w->path), "%s", tenant_path);
        return fail(w, AB_ERR_CONFIG, "\"%s\" must be an array", lists[l].key);
    }
    json_array_foreach(items, i, item)
    {
        walk_enter(w, tenant_path, lists[l].key, i, item);
        if (!json_is_object(item))
            return fail(w, AB_ERR_CONFIG, "must be an object");
        enum ab_err err = refuse_repeat(w, lists[l].key, &lists[l].identity, items, i);
        if (err == AB_OK)
            err = refuse_id_fields(w, item);
        json_t *body = err ? NULL : resolve_env(w, item);
        if (err == AB_OK && body == NULL)
            err = AB_ERR_CONFIG;
        if (err == AB_OK)
            err = lists[l].apply(w, body);
        json_decref(body);
        if (err)
            return err;
    }
    return AB_OK;
}

static enum ab_err seed_tenant(struct walk *w, const json_t *tenant)
{
    char tenant_path[PATH_MAX_LEN], found[AB_UUID_LEN + 1];
    const char *key;
    json_t *value;
    snprintf(tenant_path, sizeof(tenant_path), "%s", w->path);
    if (!json_is_object(tenant))
        return fail(w, AB_ERR_CONFIG, "must be an object");
    json_t *body = json_object();
    json_object_foreach((json_t *)tenant, key, value)
    {
        bool is_list = false;
        for (size_t l = 0; l < N_LISTS; l++)
            is_list |= strcmp(key, lists[l].key) == 0;
        if (!is_list)
            json_object_set(body, key, value);
    }
    enum ab_err err = refuse_id_fields(w, body);
    json_t *resolved = err ? NULL : resolve_env(w, body);
    json_decref(body);
    if (err == AB_OK && resolved == NULL)
        err = AB_ERR_CONFIG;
    const char *name = json_string_value(json_object_get(resolved, "name"));
    const char *const params[] = { name ? name : "" };
    if (err == AB_OK)
        err = lookup(w, "SELECT id FROM tenants WHERE name = $1", 1, params, found, NULL, 0);
    if (err == AB_OK)
        err = write_record(w, "tenants", resolved, found, w->tenant_id);
    json_decref(resolved);
    for (size_t l = 0; err == AB_OK && l < N_LISTS; l++)
        err = seed_list(w, tenant_path, tenant, l);
    return err;
}

/* Walks the seed: checks it (w->conn NULL) or applies it. */
static enum ab_err seed_walk(struct walk *w, const json_t *seed)
{
    const char *key;
    json_t *value;
    size_t i;
    const json_t *tenant;
    snprintf(w->path, sizeof(w->path), "(top level)");
    if (!json_is_object(seed))
        return fail(w, AB_ERR_CONFIG, "the seed must be an object");
    json_object_foreach((json_t *)seed, key, value)
    {
        if (strcmp(key, "tenants") != 0)
            return fail(w, AB_ERR_CONFIG, "unknown field \"%.64s\" (expected tenants)", key);
    }
    const json_t *tenants = json_object_get(seed, "tenants");
    if (tenants != NULL && !json_is_array(tenants))
        return fail(w, AB_ERR_CONFIG, "\"tenants\" must be an array");
    json_array_foreach(tenants, i, tenant)
    {
        walk_enter(w, "", "tenants", i, tenant);
        enum ab_err err = json_is_object(tenant)
                              ? refuse_repeat(w, "tenants", &by_exact_name, tenants, i)
                              : AB_OK;
        if (err == AB_OK)
            err = seed_tenant(w, tenant);
        if (err)
            return err;
    }
    return AB_OK;
}

enum ab_err ingress_seed_check(const json_t *seed, char *errstr, size_t size)
{
    struct ingress_seed_counts counts = { 0 };
    struct walk w = { .conn = NULL, .counts = &counts, .errstr = errstr, .size = size,
                      .written = json_object() };
    snprintf(w.tenant_id, sizeof(w.tenant_id), "%s", CHECK_ONLY_ID);
    enum ab_err err = seed_walk(&w, seed);
    json_decref(w.written);
    /* While checking, every refusal is the seed's fault: a configuration error. */
    return err ? AB_ERR_CONFIG : AB_OK;
}

enum ab_err ingress_seed_apply(PGconn *conn, const json_t *seed,
                               struct ingress_seed_counts *counts, char *errstr, size_t size)
{
    struct walk w = { .conn = conn, .counts = counts, .errstr = errstr, .size = size,
                      .written = json_object() };
    *counts = (struct ingress_seed_counts){ 0 };
    enum ab_err err = ab_db_begin(conn, errstr, size);
    /* Waits at most lock_timeout (the pool's), then AB_ERR_TIMEOUT: retried, and a stop
     * requested meanwhile is noticed between the tries. */
    if (err == AB_OK)
        err = ab_db_exec(conn, SEED_LOCK_SQL, 0, NULL, NULL, errstr, size);
    if (err == AB_OK)
        err = seed_walk(&w, seed);
    json_decref(w.written);
    if (err == AB_OK)
        err = ab_db_commit(conn, errstr, size);
    if (err) {
        ab_db_rollback(conn);
        *counts = (struct ingress_seed_counts){ 0 };
    }
    return err == AB_ERR_CONFIG ? AB_ERR_INVALID : err;
}

/* ---- The seeder thread ---- */

static bool check_seed(void *ud, char *detail, size_t size)
{
    struct ingress_seeder *seeder = ud;
    int state = atomic_load(&seeder->state);
    if (state == 1)
        return true;
    snprintf(detail, size, state < 0 ? "the seed was refused (the log says why)"
                                     : "the seed is not applied yet");
    return false;
}

static void *seeder_loop(void *arg)
{
    struct ingress_seeder *seeder = arg;
    struct ab_service *svc = seeder->admin->svc;
    const json_t *seed = ab_config_object(svc->cfg, AB_OPT_SEED);
    int64_t backoff = 500;
    if (!ab_service_wait_db(svc))
        return NULL;
    while (!ab_service_stopping(svc)) {
        struct ingress_seed_counts counts;
        char errstr[1024];
        PGconn *conn = NULL;
        enum ab_err err = ab_service_db_acquire(svc, DB_WAIT_MS, &conn, errstr, sizeof(errstr));
        if (err == AB_OK) {
            err = ingress_seed_apply(conn, seed, &counts, errstr, sizeof(errstr));
            ab_db_release(svc->db, conn);
        }
        if (err == AB_OK) {
            ab_info("seed applied: %d records created, %d updated", counts.created,
                    counts.updated);
            atomic_store(&seeder->state, 1);
            return NULL;
        }
        if (!ab_err_is_retriable(err)) {
            ab_error("%s", errstr);
            atomic_store(&seeder->state, -1);
            ab_service_request_stop(svc, 1);
            return NULL;
        }
        ab_warn("seed not applied yet (retrying in %lld ms): %s", (long long)backoff, errstr);
        for (int64_t until = ab_monotonic_ms() + backoff;
             ab_monotonic_ms() < until && !ab_service_stopping(svc);)
            usleep(50 * 1000);
        backoff = backoff * 2 > RETRY_MAX_MS ? RETRY_MAX_MS : backoff * 2;
    }
    return NULL;
}

enum ab_err ingress_seeder_start(struct ingress_seeder *seeder, struct ingress_admin *admin)
{
    char errstr[1024];
    const json_t *seed = ab_config_object(admin->svc->cfg, AB_OPT_SEED);
    *seeder = (struct ingress_seeder){ .admin = admin };
    if (seed == NULL || json_object_size(seed) == 0) {
        atomic_store(&seeder->state, 1);
        return AB_OK;
    }
    if (ingress_seed_check(seed, errstr, sizeof(errstr)) != AB_OK) {
        ab_error("configuration: %s", errstr);
        return AB_ERR_CONFIG;
    }
    ab_health_add_check(admin->svc->health, "seed", check_seed, seeder);
    if (pthread_create(&seeder->thread, NULL, seeder_loop, seeder) != 0) {
        ab_error("cannot start the seed thread");
        return AB_ERR_INTERNAL;
    }
    seeder->started = true;
    return AB_OK;
}

void ingress_seeder_stop(struct ingress_seeder *seeder)
{
    if (seeder->started)
        pthread_join(seeder->thread, NULL);
    seeder->started = false;
}
