"""Config-file seeding (docs/seeding.md): ingress applies the `seed` section at start, by
name, with the admin API's rules; a second start changes nothing; a wrong seed stops the
start with a message naming the record; secrets come from the environment and never reach
the log."""
import json
import os
import re
import subprocess

from conftest import ADMIN_TOKEN, ROOT, free_port, http, wait_until

ADMIN = {"Authorization": "Bearer " + ADMIN_TOKEN}
ALICE_KEY = "oc-alice-seeded-key-0123456789abcdefghijklmno"
BOB_KEY = "oc-bob-seeded-key-0123456789abcdefghijklmnopq"
APP_SECRET = "feishu-app-secret-from-env-42"
LLM_KEY = "sk-llm-key-from-env-0123456789"


def seed(**tenant_changes):
    tenant = {
        "name": "acme",
        "llm_models": [{"name": "gpt", "provider": "openai", "base_url": "https://llm.example",
                        "model": "gpt-4o-mini", "api_key": {"env": "SEED_LLM_KEY"}}],
        "agents": [
            {"name": "Alice", "type": "openclaw", "role_description": "triage",
             "api_key": {"env": "SEED_ALICE_KEY"}},
            {"name": "Bob", "type": "openclaw",
             "api_key_sha256": __import__("hashlib").sha256(BOB_KEY.encode()).hexdigest()},
            {"name": "Helper", "type": "native", "primary_model": "gpt"},
        ],
        "members": [{"name": "Carol", "feishu_open_id": "ou_carol", "email": "carol@example.com"}],
        "relationships": [
            {"agent": "alice", "target_agent": "Bob", "relation": "peer", "description": "reviews"},
            {"agent": "Alice", "member": "carol", "relation": "supervisor"},
            {"agent": "Alice", "target_agent": "Helper"},
        ],
        "channel_configs": [
            {"channel_type": "feishu", "app_id": "cli_tenant", "app_secret": {"env": "SEED_APP_SECRET"},
             "base_url": "https://open.feishu.cn"},
            {"agent": "Alice", "channel_type": "lark", "app_id": "cli_alice",
             "app_secret": {"env": "SEED_APP_SECRET"}, "base_url": "https://open.larksuite.com"},
        ],
    }
    tenant.update(tenant_changes)
    return {"seed": {"tenants": [tenant]}}


def write_config(stack, config, name="seed.json"):
    path = os.path.join(stack.workdir, name)
    with open(path, "w") as f:
        json.dump(config, f)
    return path


def seeded_env(stack, config, name="seed.json"):
    return {"AGENTBUS_CONFIG": write_config(stack, config, name), "SEED_ALICE_KEY": ALICE_KEY,
            "SEED_APP_SECRET": APP_SECRET, "SEED_LLM_KEY": LLM_KEY}


def admin_list(stack, resource, query=""):
    status, body, _ = http("GET", f"{stack.api}/api/admin/{resource}{query}", None, ADMIN)
    assert status == 200, body
    return body["items"]


def poll(stack, key):
    return http("GET", f"{stack.api}/api/gateway/poll", None, {"X-Api-Key": key})


def counts(stack):
    return stack.sql("SELECT (SELECT count(*) FROM tenants) || ' ' || (SELECT count(*) FROM llm_models)"
                     " || ' ' || (SELECT count(*) FROM agents) || ' ' || (SELECT count(*) FROM org_members)"
                     " || ' ' || (SELECT count(*) FROM agent_member_relationships)"
                     " || ' ' || (SELECT count(*) FROM agent_agent_relationships)"
                     " || ' ' || (SELECT count(*) FROM channel_configs)"
                     " || ' ' || (SELECT count(*) FROM api_keys WHERE revoked_at IS NULL)")


def messages(svc):
    """The service's log as plain text: the message of each JSON line, one per line."""
    out = []
    for line in svc.logs().splitlines():
        try:
            out.append(json.loads(line)["message"])
        except (ValueError, KeyError, TypeError):
            out.append(line)
    return "\n".join(out)


def exits_with(stack, env, code, timeout=30):
    svc = stack.start("ingress", wait=False, **env)
    try:
        assert svc.proc.wait(timeout=timeout) == code, svc.logs()[-3000:]
    finally:
        svc.log.close()
    return messages(svc)


def test_a_seed_creates_everything_by_name_and_the_agents_work(stack):
    ingress = stack.start("ingress", **seeded_env(stack, seed()))
    assert counts(stack) == "1 1 3 1 1 2 2 2"
    [tenant] = admin_list(stack, "tenants")
    assert tenant["name"] == "acme"
    agents = {a["name"]: a for a in admin_list(stack, "agents", "?tenant_id=" + tenant["id"])}
    [model] = admin_list(stack, "llm-models")
    assert model["api_key_set"] is True and agents["Helper"]["primary_model_id"] == model["id"]
    assert agents["Alice"]["role_description"] == "triage"
    assert stack.sql(f"SELECT api_key FROM llm_models WHERE id = '{model['id']}'") == LLM_KEY

    # Both keys work: one given in the file (through the environment), one only as a hash.
    status, inbox, _ = poll(stack, ALICE_KEY)
    assert status == 200, inbox
    rel = {(r["name"], r["type"]): r for r in inbox["relationships"]}
    assert set(rel) == {("Bob", "agent"), ("Carol", "human"), ("Helper", "agent")}
    assert rel[("Bob", "agent")]["role"] == "peer" and rel[("Carol", "human")]["channels"] == ["feishu"]
    assert poll(stack, BOB_KEY)[0] == 200

    configs = admin_list(stack, "channel-configs")
    assert sorted((c["channel_type"], c["agent_id"]) for c in configs) == \
        [("feishu", None), ("lark", agents["Alice"]["id"])]
    assert stack.sql("SELECT DISTINCT app_secret FROM channel_configs") == APP_SECRET

    logs = ingress.logs()
    assert "seed applied: 11 records created, 0 updated" in messages(ingress)
    for secret in (ALICE_KEY, APP_SECRET, LLM_KEY, BOB_KEY):
        assert secret not in logs


def test_a_second_start_changes_only_what_the_seed_changed_and_deletes_nothing(stack):
    env = seeded_env(stack, seed())
    first = stack.start("ingress", **env)
    ids = stack.sql("SELECT string_agg(id::text, ',' ORDER BY name) FROM agents")
    # A record made through the API is not the seed's business.
    tenant = admin_list(stack, "tenants")[0]["id"]
    status, body, _ = http("POST", stack.api + "/api/admin/agents",
                           {"tenant_id": tenant, "name": "Dave", "type": "openclaw"}, ADMIN)
    assert status == 201, body
    assert first.stop() == 0

    changed = seed()
    changed["seed"]["tenants"][0]["agents"][0]["role_description"] = "triage and routing"
    again = stack.start("ingress", **seeded_env(stack, changed))
    assert "seed applied: 0 records created, 11 updated" in messages(again)
    assert counts(stack) == "1 1 4 1 1 2 2 2"
    assert stack.sql("SELECT string_agg(id::text, ',' ORDER BY name) FROM agents WHERE name <> 'Dave'") == ids
    alice = [a for a in admin_list(stack, "agents") if a["name"] == "Alice"][0]
    assert alice["role_description"] == "triage and routing"
    assert poll(stack, ALICE_KEY)[0] == 200


def test_the_seed_is_the_source_of_truth_for_keys(stack):
    env = seeded_env(stack, seed())
    first = stack.start("ingress", **env)
    alice = stack.sql("SELECT id FROM agents WHERE name = 'Alice'")
    status, body, _ = http("POST", f"{stack.api}/api/gateway/agents/{alice}/api-key", b"", ADMIN)
    assert status == 201
    assert poll(stack, ALICE_KEY)[0] == 401  # rotated through the API
    assert first.stop() == 0

    again = stack.start("ingress", **env)
    assert poll(stack, ALICE_KEY)[0] == 200  # the seed names it: active again, with a warning
    assert poll(stack, body["api_key"])[0] == 401
    assert "had been revoked; it is active again" in messages(again)

    # A new key in the seed replaces the old one.
    new_key = "oc-alice-rotated-in-the-seed-0123456789abcdef"
    assert again.stop() == 0
    stack.start("ingress", **dict(env, SEED_ALICE_KEY=new_key))
    assert poll(stack, new_key)[0] == 200 and poll(stack, ALICE_KEY)[0] == 401


def test_replicas_starting_together_apply_the_seed_once(stack):
    env = seeded_env(stack, seed())
    # Hold the seed's lock so that both replicas are surely waiting for it at once.
    holder = subprocess.Popen(["psql", "-X", "-q", stack.database_url], stdin=subprocess.PIPE,
                              stdout=subprocess.DEVNULL, text=True)
    holder.stdin.write("SELECT pg_advisory_lock(7401553120942741);\n")
    holder.stdin.flush()
    wait_until(lambda: stack.sql("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted") == "1",
               10, 0.1, "the lock held")
    first = stack.start("ingress", wait=False, **env)
    second = stack.start("ingress", wait=False, AGENTBUS_INGRESS_API_PORT=str(free_port()),
                         AGENTBUS_INGRESS_WEBHOOK_PORT=str(free_port()), **env)
    wait_until(lambda: stack.sql("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted") == "2",
               30, 0.1, "both replicas waiting for the seed lock")
    holder.stdin.write("SELECT pg_advisory_unlock(7401553120942741);\n")
    holder.stdin.close()
    holder.wait(timeout=10)
    first.wait_ready()
    second.wait_ready()
    assert counts(stack) == "1 1 3 1 1 2 2 2"
    # The two replicas share one log file (the harness names it after the service).
    log = messages(stack.services["ingress"][0])
    assert sorted(int(n) for n in re.findall(r"seed applied: (\d+) records created", log)) == [0, 11]


def test_a_malformed_seed_stops_the_start_naming_the_record(stack):
    cases = [
        (seed(agents=[{"name": "Eve", "type": "robot"}]),
         'tenants[0] "acme" agents[0] "Eve": "type" must be one of openclaw|native'),
        (seed(agents=[{"name": "Eve", "type": "openclaw", "colour": "red"}]),
         'agents[0] "Eve": unknown field "colour"'),
        (seed(agents=[{"name": "Eve", "type": "openclaw", "primary_model_id": "x"}]),
         'use "primary_model", not "primary_model_id"'),
        (seed(members="Carol"), '"members" must be an array'),
        (seed(relationships=[{"agent": "Alice"}]), "a relationship is"),
        (seed(agents=[{"name": "Eve", "type": "native", "api_key": ALICE_KEY}]),
         "only OpenClaw agents have API keys"),
        (seed(agents=[{"name": "Eve", "type": "openclaw", "api_key": "short"}]),
         '"api_key" must be a string of 24 to 128 characters'),
        (seed(agents=[{"name": "Eve", "type": "openclaw", "api_key": {"env": "NOT_SET_ANYWHERE"}}]),
         "the environment variable NOT_SET_ANYWHERE is not set"),
        ({"seed": {"tenant": []}}, 'unknown field "tenant" (expected tenants)'),
        (seed(agents=[{"name": "Eve", "type": "openclaw"}, {"name": "eve", "type": "openclaw"}]),
         'agents[1] "eve": names the same record as agents[0]'),
        (seed(relationships=[{"agent": "Alice", "member": "Carol"}, {"agent": "alice", "member": "CAROL"}]),
         'relationships[1] "alice": names the same record as relationships[0]'),
        ({"seed": {"tenants": [{"name": "a"}, {"name": "a"}]}}, 'tenants[1] "a": names the same record as tenants[0]'),
        (seed(agents=[{"name": "Eve", "type": "openclaw", "api_key_sha256": "AB" * 32}]),
         '"api_key_sha256" must be 64 lowercase hex digits'),
        (seed(agents=[{"name": "Eve", "type": "openclaw", "api_key_sha256": "ab" * 31}]),
         '"api_key_sha256" must be 64 lowercase hex digits'),
        (seed(agents=[{"name": "Eve", "type": "openclaw", "api_key": ALICE_KEY, "api_key_sha256": "ab" * 32}]),
         'give "api_key" or "api_key_sha256", not both'),
        (seed(agents=[{"name": "Eve", "type": "openclaw", "api_key": {"env": "SEED_ALICE_KEY", "x": 1}}]),
         '"api_key" must be a value or {"env": "VARIABLE"}'),
        (seed(tenant_id="00000000-0000-0000-0000-000000000001"),
         'use the tenant it is listed under, not "tenant_id"'),
        (seed(relationships=[{"agent": "Alice", "target_agent": "ALICE"}]),
         "an agent cannot have a relationship with itself"),
    ]
    for config, message in cases:
        logs = exits_with(stack, seeded_env(stack, config), 2)
        assert message in logs, (message, logs[-2000:])
    assert stack.sql("SELECT count(*) FROM tenants") == "0"


def test_a_seed_the_database_refuses_changes_nothing_and_exits_1(stack):
    cases = [
        (seed(agents=[{"name": "Eve", "type": "native", "primary_model": "claude"}]),
         'agents[0] "Eve": no LLM model named "claude" in this tenant'),
        (seed(relationships=[{"agent": "Alice", "member": "Zed"}]), 'no member named "Zed"'),
        (seed(agents=[{"name": "Eve", "type": "openclaw", "api_key": ALICE_KEY},
                      {"name": "Fay", "type": "openclaw", "api_key": ALICE_KEY}]),
         "another agent's key"),
    ]
    for config, message in cases:
        logs = exits_with(stack, seeded_env(stack, config), 1)
        assert message in logs, (message, logs[-2000:])
        assert stack.sql("SELECT count(*) FROM tenants") == "0"  # one transaction: nothing kept

    # Names that are one record only when folded beyond ASCII: refused, not merged.
    logs = exits_with(stack, seeded_env(stack, seed(agents=[
        {"name": "Émile", "type": "openclaw", "role_description": "first"},
        {"name": "émile", "type": "openclaw", "role_description": "second"}])), 1)
    assert 'agents[1] "émile": names the same record as agents[0]' in logs
    assert stack.sql("SELECT count(*) FROM tenants") == "0"

    # An agent's type is fixed at creation: a seed cannot turn it into another.
    first = stack.start("ingress", **seeded_env(stack, seed()))
    assert first.stop() == 0
    logs = exits_with(stack, seeded_env(stack, seed(agents=[{"name": "Bob", "type": "native"}])), 1)
    assert "the agent exists as an openclaw agent" in logs


def test_readyz_waits_for_the_seed_while_postgres_is_away(stack):
    # PostgreSQL unreachable: ingress starts, is not ready, and says the seed is pending.
    env = seeded_env(stack, seed())
    env["DATABASE_URL"] = f"postgresql://nobody@127.0.0.1:{free_port()}/none?connect_timeout=1"
    svc = stack.start("ingress", wait=False, **env)

    def not_ready_yet():
        try:
            status, body, _ = svc.ops("/readyz")
        except OSError:
            return False
        return status == 503 and body["checks"].get("seed") == "the seed is not applied yet"
    wait_until(not_ready_yet, 30, 0.2, "readyz naming the seed")
    assert svc.stop() == 0


def test_the_example_in_the_docs_applies(stack):
    text = open(os.path.join(ROOT, "docs", "seeding.md")).read()
    example = json.loads(re.search(r"```json\n(.*?)\n```", text, re.S).group(1))
    env = {"AGENTBUS_CONFIG": write_config(stack, example), "FEISHU_APP_SECRET": "s3cret-from-a-secret",
           "OPENAI_API_KEY": "sk-example", "TRIAGE_API_KEY": "oc-" + "x" * 43}
    stack.start("ingress", **env)
    assert stack.sql("SELECT count(*) FROM agents") != "0"
    status, body, _ = poll(stack, "oc-" + "x" * 43)
    assert status == 200, body


def test_the_seed_can_come_from_the_environment(stack):
    text = json.dumps({"tenants": [{"name": "envco", "agents": [{"name": "Xavier", "type": "openclaw"}]}]})
    stack.start("ingress", AGENTBUS_SEED=text)
    assert stack.sql("SELECT t.name || '/' || a.name FROM agents a JOIN tenants t ON t.id = a.tenant_id") == "envco/Xavier"


def test_a_second_member_of_a_seeded_name_stops_the_seed_with_a_clear_message(stack):
    # Members' names are not unique (two people may share one), so a seed that names a
    # member cannot tell two of that name apart: it refuses rather than pick one.
    first = stack.start("ingress", **seeded_env(stack, seed()))
    tenant = admin_list(stack, "tenants")[0]["id"]
    status, body, _ = http("POST", stack.api + "/api/admin/members", {"tenant_id": tenant, "name": "carol"}, ADMIN)
    assert status == 201, body
    assert first.stop() == 0
    logs = exits_with(stack, seeded_env(stack, seed()), 1)
    assert 'members[0] "Carol": the name matches 2 records: rename them apart' in logs


def test_names_and_secrets_may_come_from_the_environment_at_every_level(stack):
    config = {"seed": {"tenants": [{"name": {"env": "SEED_TENANT"},
                                    "agents": [{"name": {"env": "SEED_AGENT"}, "type": "openclaw"}]}]}}
    stack.start("ingress", SEED_TENANT="from-env", SEED_AGENT="Yara", **seeded_env(stack, config))
    assert stack.sql("SELECT t.name || '/' || a.name FROM agents a JOIN tenants t ON t.id = a.tenant_id") == "from-env/Yara"
