"""agentbusctl, the command-line client of the admin API, driven as an operator drives it:
the binary as a subprocess against a real ingress, with AGENTBUS_URL and AGENTBUS_ADMIN_TOKEN
in its environment. Each run starts in the test's own directory, so a .run/admin-token left
in the checkout by `make up` is never picked up by accident."""
import json
import os
import re
import subprocess
import uuid

from conftest import ADMIN_TOKEN, BIN, SANITIZER_MARKERS, free_port, http

CTL = os.path.join(BIN, "agentbusctl")
ADMIN = {"Authorization": "Bearer " + ADMIN_TOKEN}
UUID_LINE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\n$")
ENV_NAMES = ("AGENTBUS_URL", "AGENTBUS_ADMIN_TOKEN", "AGENTBUS_TENANT", "AGENTBUS_RUN_DIR")


def ctl(stack, *args, token=ADMIN_TOKEN, url=None, **env):
    """Runs agentbusctl; returns the CompletedProcess. env entries set to None are removed."""
    e = {k: v for k, v in os.environ.items() if k not in ENV_NAMES}
    e["AGENTBUS_URL"] = url or stack.api
    if token is not None:
        e["AGENTBUS_ADMIN_TOKEN"] = token
    for k, v in env.items():
        if v is None:
            e.pop(k, None)
        else:
            e[k] = v
    out = subprocess.run([CTL, *args], env=e, cwd=stack.workdir, capture_output=True, text=True,
                         timeout=60)
    for marker in SANITIZER_MARKERS:
        assert marker not in out.stderr, out.stderr
    return out


def ok(out):
    """The JSON a successful run printed."""
    assert out.returncode == 0, (out.returncode, out.stdout, out.stderr)
    return json.loads(out.stdout)


def quiet_id(out):
    assert out.returncode == 0, (out.returncode, out.stdout, out.stderr)
    assert UUID_LINE.match(out.stdout), repr(out.stdout)
    return out.stdout.strip()


def seed_tenant_with_agent(stack, type_="openclaw"):
    """Rows made with SQL, for tests of routes that do not need the admin resources."""
    tenant = stack.sql(f"INSERT INTO tenants (name) VALUES ('t-{uuid.uuid4().hex[:8]}') RETURNING id")
    agent = stack.sql(f"INSERT INTO agents (tenant_id, name, type) VALUES ('{tenant}', 'alice', '{type_}') "
                      "RETURNING id")
    return tenant, agent


def test_quick_start_creates_a_tenant_two_agents_and_a_member_and_lists_them(stack):
    stack.start("ingress")
    tenant = ok(ctl(stack, "tenant", "create", "acme"))
    assert tenant["name"] == "acme" and tenant["id"]
    # The quick start: three lines once the tenant exists.
    alice = ok(ctl(stack, "agent", "create", "alice", "--tenant", "acme", "--type", "openclaw"))
    bob = ok(ctl(stack, "agent", "create", "bob", "--tenant", "acme", "--type", "native",
                 "--role", "Answers questions about the build"))
    carol = ok(ctl(stack, "member", "create", "carol", "--tenant", "acme", "--email", "carol@example.com",
                   "--feishu-open-id", "ou_carol"))
    assert alice["name"] == "alice" and alice["type"] == "openclaw" and alice["tenant_id"] == tenant["id"]
    assert bob["type"] == "native" and bob["role_description"] == "Answers questions about the build"
    assert carol["tenant_id"] == tenant["id"] and carol["email"] == "carol@example.com"
    assert carol["feishu_open_id"] == "ou_carol"

    listed = ok(ctl(stack, "agents", "list", "--tenant", "acme"))
    assert sorted(a["name"] for a in listed["items"]) == ["alice", "bob"]
    assert {a["id"] for a in listed["items"]} == {alice["id"], bob["id"]}
    members = ok(ctl(stack, "members", "list", "--tenant", tenant["id"]))
    assert [m["id"] for m in members["items"]] == [carol["id"]]
    assert [t["name"] for t in ok(ctl(stack, "tenants", "list"))["items"]] == ["acme"]
    # What the tool printed is what the server holds.
    status, body, _ = http("GET", f"{stack.api}/api/admin/agents/{bob['id']}", headers=ADMIN)
    assert status == 200 and body["name"] == "bob" and body["tenant_id"] == tenant["id"]
    # A list filter other than the tenant goes through as a query parameter.
    natives = ok(ctl(stack, "agent", "list", "--type", "native", "--tenant", "acme"))
    assert [a["id"] for a in natives["items"]] == [bob["id"]]


def test_quiet_prints_only_the_id_of_what_was_created(stack):
    stack.start("ingress")
    tenant = quiet_id(ctl(stack, "-q", "tenant", "create", "acme"))
    agent = quiet_id(ctl(stack, "-q", "agent", "create", "alice", "--tenant", "acme", "--type", "openclaw"))
    status, body, _ = http("GET", f"{stack.api}/api/admin/agents/{agent}", headers=ADMIN)
    assert status == 200 and body["tenant_id"] == tenant and body["name"] == "alice"
    # -q may come anywhere; list -q prints one id per line.
    quiet_id(ctl(stack, "member", "create", "carol", "--tenant", tenant, "-q"))
    out = ctl(stack, "agents", "list", "--tenant", "acme", "-q")
    assert out.returncode == 0 and out.stdout == agent + "\n"


def test_names_resolve_inside_the_tenant(stack):
    stack.start("ingress")
    acme = quiet_id(ctl(stack, "-q", "tenant", "create", "acme"))
    globex = quiet_id(ctl(stack, "-q", "tenant", "create", "globex"))
    alice_acme = quiet_id(ctl(stack, "-q", "agent", "create", "alice", "--tenant", "acme", "--type", "openclaw"))
    alice_globex = quiet_id(ctl(stack, "-q", "agent", "create", "alice", "--tenant", "globex", "--type", "native"))
    bob = quiet_id(ctl(stack, "-q", "agent", "create", "bob", "--tenant", "acme", "--type", "native"))
    carol = quiet_id(ctl(stack, "-q", "member", "create", "carol", "--tenant", "acme"))

    assert ok(ctl(stack, "agent", "get", "alice", "--tenant", "acme"))["id"] == alice_acme
    assert ok(ctl(stack, "agent", "get", "alice", "--tenant", globex))["id"] == alice_globex
    assert ok(ctl(stack, "agent", "get", "alice", AGENTBUS_TENANT="globex"))["id"] == alice_globex
    assert ok(ctl(stack, "agent", "get", "ALICE", "--tenant", "acme"))["id"] == alice_acme  # names ignore case
    assert ok(ctl(stack, "tenant", "get", "globex"))["id"] == globex
    # Unique in every tenant: no --tenant needed. Two tenants have an alice: ambiguous.
    assert ok(ctl(stack, "agent", "get", "bob"))["id"] == bob
    out = ctl(stack, "agent", "get", "alice")
    assert out.returncode == 1 and out.stdout == ""
    assert "alice" in out.stderr and alice_acme in out.stderr and "--tenant" in out.stderr

    # relate: the agent by name, the member by name in the agent's tenant.
    rel = ok(ctl(stack, "relate", "alice", "--member", "carol", "--relation", "owner", "--tenant", "acme"))
    assert rel["agent_id"] == alice_acme and rel["member_id"] == carol and rel["relation"] == "owner"
    rel = ok(ctl(stack, "relate", alice_acme, "--agent", "bob", "--description", "reviews alice's work"))
    assert rel["agent_id"] == alice_acme and rel["target_agent_id"] == bob
    listed = ok(ctl(stack, "agent-member-relationships", "list", "--agent", "alice", "--tenant", "acme"))
    assert [r["member_id"] for r in listed["items"]] == [carol]

    # update and delete by name; a reference field given by name is resolved too.
    updated = ok(ctl(stack, "agent", "update", "bob", "--tenant", "acme", "--role", "Reviews"))
    assert updated["id"] == bob and updated["role_description"] == "Reviews"
    out = ctl(stack, "agent", "delete", "bob", "--tenant", "acme")
    assert out.returncode == 0 and out.stdout == "", out.stderr
    assert http("GET", f"{stack.api}/api/admin/agents/{bob}", headers=ADMIN)[0] == 404


def test_typed_fields_are_sent_as_numbers_and_booleans(stack):
    stack.start("ingress")
    ctl(stack, "tenant", "create", "acme")
    model = ok(ctl(stack, "llm-model", "create", "fast", "--tenant", "acme", "--provider", "openai",
                   "--base-url", "http://127.0.0.1:9/v1", "--model", "gpt-4o-mini",
                   "--max-concurrency", "3", "--total-timeout-ms", "120000", "--enabled", "false",
                   "--api-key", "sk-provider-secret"))
    assert model["max_concurrency"] == 3 and model["total_timeout_ms"] == 120000
    assert model["enabled"] is False and model["api_key_set"] is True
    assert "sk-provider-secret" not in json.dumps(model)
    # --model on an agent is its primary model, given here by name.
    agent = ok(ctl(stack, "agent", "create", "alice", "--tenant", "acme", "--type", "native",
                   "--model", "fast"))
    assert agent["primary_model_id"] == model["id"]


def test_an_unknown_name_is_exit_1_with_a_message(stack):
    stack.start("ingress")
    ctl(stack, "tenant", "create", "acme")
    out = ctl(stack, "agent", "get", "zed", "--tenant", "acme")
    assert out.returncode == 1 and out.stdout == ""
    assert 'no agent is named "zed"' in out.stderr
    out = ctl(stack, "agent", "create", "alice", "--tenant", "nope", "--type", "openclaw")
    assert out.returncode == 1 and 'no tenant is named "nope"' in out.stderr
    out = ctl(stack, "relate", "zed", "--member", "carol", "--tenant", "acme")
    assert out.returncode == 1 and '"zed"' in out.stderr


def test_server_refusals_show_the_error_code_and_message(stack):
    stack.start("ingress")
    ctl(stack, "tenant", "create", "acme")
    ok(ctl(stack, "agent", "create", "alice", "--tenant", "acme", "--type", "openclaw"))
    out = ctl(stack, "agent", "create", "Alice", "--tenant", "acme", "--type", "native")
    assert out.returncode == 1 and out.stdout == ""
    assert out.stderr.startswith("agentbusctl: conflict: "), out.stderr
    out = ctl(stack, "agent", "create", "x", "--tenant", "acme", "--type", "robot")
    assert out.returncode == 1 and "invalid_request" in out.stderr
    out = ctl(stack, "agent", "get", str(uuid.uuid4()))
    assert out.returncode == 1 and "not_found" in out.stderr


def test_usage_errors_exit_2_with_the_usage(stack):
    for args in ([], ["frobnicate"], ["agent"], ["agent", "explode"], ["agent", "get"],
                 ["relate", "alice"], ["relate", "alice", "--member", "m", "--agent", "a"],
                 ["publish", "demo.x", "--data", "{not json"], ["agent", "create", "a", "--type"],
                 ["agent", "update", "alice"], ["agent", "get", "alice", "--type", "native"]):
        out = ctl(stack, *args, url="http://127.0.0.1:1")  # no request is ever sent
        assert out.returncode == 2, (args, out.stderr)
        assert "usage: agentbusctl" in out.stderr and out.stdout == "", args


def test_help_lists_every_command(stack):
    out = ctl(stack, "--help")
    assert out.returncode == 0 and out.stderr == ""
    for command in ("tenant create", "agent create", "member create", "RESOURCE create",
                    "RESOURCE list", "RESOURCE get", "RESOURCE update", "RESOURCE delete",
                    "relate AGENT --member", "relate AGENT --agent", "api-key", "publish",
                    "llm-models", "agent-member-relationships", "agent-agent-relationships",
                    "channel-configs", "AGENTBUS_ADMIN_TOKEN", "--token-file", "AGENTBUS_URL",
                    "AGENTBUS_TENANT", "-q"):
        assert command in out.stdout, command


def test_a_missing_token_is_exit_1_with_a_clear_message(stack):
    stack.start("ingress")
    out = ctl(stack, "tenants", "list", token=None)
    assert out.returncode == 1 and out.stdout == ""
    assert "no admin token" in out.stderr and "AGENTBUS_ADMIN_TOKEN" in out.stderr
    assert "--token-file" in out.stderr
    # A token file named on the command line, and the one `make up` writes, are read.
    path = os.path.join(stack.workdir, "token")
    with open(path, "w") as f:
        f.write(ADMIN_TOKEN + "\n")
    assert ok(ctl(stack, "--token-file", path, "tenants", "list", token=None)) == {"items": []}
    os.makedirs(os.path.join(stack.workdir, ".run"), exist_ok=True)
    with open(os.path.join(stack.workdir, ".run", "admin-token"), "w") as f:
        f.write(ADMIN_TOKEN + "\n")
    assert ok(ctl(stack, "tenants", "list", token=None)) == {"items": []}
    # A wrong token is the server's 401.
    out = ctl(stack, "tenants", "list", token="not-the-admin-token")
    assert out.returncode == 1 and "unauthorized" in out.stderr


def test_the_token_never_appears_in_output_nor_is_taken_as_an_argument(stack):
    stack.start("ingress")
    _, agent = seed_tenant_with_agent(stack)
    runs = [ctl(stack, "publish", "demo.hello"), ctl(stack, "api-key", agent),
            ctl(stack, "agent", "get", str(uuid.uuid4())), ctl(stack, "agent", "get", "zed"),
            ctl(stack, "agent", "explode"),
            ctl(stack, "tenants", "list", url=f"http://127.0.0.1:{free_port()}")]
    for out in runs:
        assert ADMIN_TOKEN not in out.stdout and ADMIN_TOKEN not in out.stderr, out.args
    for flag in (["--token", ADMIN_TOKEN], ["--token=" + ADMIN_TOKEN], ["--admin-token", ADMIN_TOKEN]):
        out = ctl(stack, "tenants", "list", *flag, token=None)
        assert out.returncode == 2 and "AGENTBUS_ADMIN_TOKEN" in out.stderr
        assert ADMIN_TOKEN not in out.stdout and ADMIN_TOKEN not in out.stderr


def test_api_key_prints_the_new_key_once(stack):
    stack.start("ingress")
    _, agent = seed_tenant_with_agent(stack)
    out = ctl(stack, "api-key", agent)
    body = ok(out)
    key = body["api_key"]
    assert key.startswith("oc-") and body["agent_id"] == agent
    assert out.stdout.count(key) == 1
    # -q: the key alone, for scripts; the new key works and the previous one is revoked.
    out = ctl(stack, "-q", "api-key", agent)
    assert out.returncode == 0 and re.fullmatch(r"oc-[A-Za-z0-9_-]+\n", out.stdout), out.stdout
    second = out.stdout.strip()
    assert http("POST", stack.api + "/api/gateway/heartbeat", b"", {"X-Api-Key": second})[0] == 200
    assert http("POST", stack.api + "/api/gateway/heartbeat", b"", {"X-Api-Key": key})[0] == 401


def test_api_key_by_agent_name(stack):
    stack.start("ingress")
    ctl(stack, "tenant", "create", "acme")
    agent = quiet_id(ctl(stack, "-q", "agent", "create", "alice", "--tenant", "acme", "--type", "openclaw"))
    body = ok(ctl(stack, "api-key", "alice", "--tenant", "acme"))
    assert body["agent_id"] == agent and body["api_key"].startswith("oc-")


def test_publish_prints_the_202_answer(stack):
    stack.start("ingress")
    body = ok(ctl(stack, "publish", "demo.hello", "--subject", "conv-1", "--data", '{"text": "hi", "n": [1, 2]}'))
    assert body["status"] == "accepted" and body["type"] == "demo.hello" and body["id"]
    event_id = quiet_id(ctl(stack, "-q", "publish", "demo.hello", "--data", "42"))
    assert event_id != body["id"]
    out = ctl(stack, "publish", "bad type!")
    assert out.returncode == 1 and "invalid_request" in out.stderr


def test_connection_refused_names_the_url(stack):
    url = f"http://127.0.0.1:{free_port()}"
    out = ctl(stack, "tenants", "list", url=url)
    assert out.returncode == 1 and out.stdout == ""
    assert url in out.stderr and "cannot connect" in out.stderr


def test_dead_letters_are_listed_replayed_and_purged(stack):
    stack.start("ingress")
    dead = str(uuid.uuid4())
    job = json.dumps({"specversion": "1.0", "id": dead, "type": "agentbus.notify.webhook", "source": "/t",
                      "time": "2026-01-01T00:00:00Z", "data": {"endpoint_id": "ep", "event": "error",
                                                              "payload": {"type": "error"}}})
    stack.sql("INSERT INTO notify_dead_letters (id, kind, destination, endpoint_id, attempts, code, job)"
              f" VALUES ('{dead}', 'webhook', 'webhook:ep', 'ep', 8, 'http_503', '{job}')")
    listed = ok(ctl(stack, "dead-letters", "list", "--endpoint", "ep"))
    assert [(d["id"], d["code"], d["attempts"]) for d in listed["dead_letters"]] == [(dead, "http_503", 8)]
    assert ctl(stack, "-q", "dead-letters", "list", "--kind", "webhook").stdout.split() == [dead]
    assert ok(ctl(stack, "dead-letters", "list", "--endpoint", "other"))["dead_letters"] == []
    assert ok(ctl(stack, "dead-letters", "replay", dead)) == {"status": "replaying", "id": dead}
    [retry] = stack.broker.consume(stack.broker.topic("agentbus.notify.retry"), 1)
    event = json.loads(retry["value"])
    assert event["data"]["job"]["id"] == dead and event["data"]["attempt"] == 1 and event["data"]["replay"] == 1
    # Replayed already: "replay all since" finds nothing more.
    assert ok(ctl(stack, "dead-letters", "replay", "--endpoint", "ep", "--since", "2026-01-01T00:00:00Z")) == \
        {"status": "replaying", "replayed": 0}
    out = ctl(stack, "dead-letters", "replay", "--endpoint", "ep")
    assert out.returncode == 2 and "--endpoint and --since" in out.stderr
    out = ctl(stack, "dead-letters", "replay", "not-a-uuid")
    assert out.returncode == 2
    out = ctl(stack, "dead-letters", "list", "--since", "yesterday")
    assert out.returncode == 1 and "RFC 3339" in out.stderr
    assert ctl(stack, "-q", "dead-letters", "purge", "--endpoint", "ep").stdout.strip() == "1"
    assert ok(ctl(stack, "dead-letters", "list"))["dead_letters"] == []
    out = ctl(stack, "webhook", "enable", "ep")
    assert out.returncode == 1 and "is not disabled" in out.stderr
    stack.sql("INSERT INTO webhook_endpoint_state (endpoint_id, disabled_at) VALUES ('ep', now())")
    assert ok(ctl(stack, "webhook", "enable", "ep")) == {"id": "ep", "enabled": True}
