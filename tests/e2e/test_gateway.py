"""The agent gateway: API keys issued by the admin, X-Api-Key authentication, heartbeat.
Agents are created with SQL here so these tests do not depend on the admin resources."""
import uuid

from conftest import ADMIN_TOKEN, http

ADMIN = {"Authorization": "Bearer " + ADMIN_TOKEN}


def seed_agent(stack, name="alice", type_="openclaw", tenant=None):
    if tenant is None:
        tenant = stack.sql(f"INSERT INTO tenants (name) VALUES ('t-{uuid.uuid4().hex[:8]}') RETURNING id")
    agent = stack.sql(f"INSERT INTO agents (tenant_id, name, type) VALUES ('{tenant}', '{name}', '{type_}') "
                      "RETURNING id")
    return tenant, agent


def issue_key(stack, agent_id, headers=ADMIN):
    return http("POST", f"{stack.api}/api/gateway/agents/{agent_id}/api-key", b"", headers)


def ready_ingress(stack):
    # Ready means its migrations are applied: the tests seed rows right after.
    return stack.start("ingress")


def test_key_is_issued_once_hashed_and_rotation_revokes_the_old_one(stack):
    ready_ingress(stack)
    _, agent = seed_agent(stack)
    status, body, _ = issue_key(stack, agent)
    assert status == 201, body
    key = body["api_key"]
    assert key.startswith("oc-") and len(key) == 46 and body["key_prefix"] == key[:8]
    assert "shown only once" in body["message"]
    # Only a hash is stored; the key itself appears nowhere in the database.
    assert stack.sql("SELECT count(*) FROM api_keys WHERE key_hash = encode(sha256('" + key + "'), 'hex')") == "1"
    assert stack.sql(f"SELECT count(*) FROM api_keys WHERE key_hash = '{key}' OR key_prefix = '{key}'") == "0"

    status, body, _ = http("POST", stack.api + "/api/gateway/heartbeat", b"", {"X-Api-Key": key})
    assert status == 200 and body == {"status": "ok", "agent_id": agent}

    status, second, _ = issue_key(stack, agent)
    assert status == 201 and second["api_key"] != key
    status, body, _ = http("POST", stack.api + "/api/gateway/heartbeat", b"", {"X-Api-Key": key})
    assert status == 401 and body["error"]["message"] == "invalid API key"
    status, _, _ = http("POST", stack.api + "/api/gateway/heartbeat", b"", {"X-Api-Key": second["api_key"]})
    assert status == 200


def test_issuing_a_key_needs_the_admin_token_and_an_openclaw_agent(stack):
    ready_ingress(stack)
    _, agent = seed_agent(stack)
    _, native = seed_agent(stack, "nat", "native")
    status, body, _ = issue_key(stack, agent, {})
    assert status == 401 and body["error"]["code"] == "unauthorized"
    status, body, _ = issue_key(stack, agent, {"Authorization": "Bearer not-the-admin-token"})
    assert status == 401
    assert stack.sql(f"SELECT count(*) FROM api_keys WHERE agent_id = '{agent}'") == "0"
    status, body, _ = issue_key(stack, native)
    assert status == 400 and "native agent" in body["error"]["message"]
    status, body, _ = issue_key(stack, str(uuid.uuid4()))
    assert status == 404 and body["error"]["code"] == "not_found"
    status, body, _ = issue_key(stack, "not-a-uuid")
    assert status == 400


def test_heartbeat_updates_last_seen_and_bad_keys_get_401(stack):
    ready_ingress(stack)
    _, agent = seed_agent(stack)
    key = issue_key(stack, agent)[1]["api_key"]
    assert stack.sql(f"SELECT last_seen_at IS NULL FROM agents WHERE id = '{agent}'") == "t"
    status, _, _ = http("POST", stack.api + "/api/gateway/heartbeat", b"", {"X-Api-Key": key})
    assert status == 200
    assert stack.sql(f"SELECT now() - last_seen_at < interval '1 minute' FROM agents WHERE id = '{agent}'") == "t"
    for headers in ({}, {"X-Api-Key": ""}, {"X-Api-Key": "oc-wrong"}, {"X-Api-Key": "x" * 5000},
                    {"X-Api-Key": stack.sql(f"SELECT key_hash FROM api_keys WHERE agent_id = '{agent}'")}):
        status, body, _ = http("POST", stack.api + "/api/gateway/heartbeat", b"", headers)
        assert status == 401, headers
        assert body["error"]["code"] == "unauthorized"


def test_a_deleted_agents_key_stops_working_at_once(stack):
    ready_ingress(stack)
    _, agent = seed_agent(stack)
    key = issue_key(stack, agent)[1]["api_key"]
    assert http("POST", stack.api + "/api/gateway/heartbeat", b"", {"X-Api-Key": key})[0] == 200
    stack.sql(f"DELETE FROM agents WHERE id = '{agent}'")
    status, body, _ = http("POST", stack.api + "/api/gateway/heartbeat", b"", {"X-Api-Key": key})
    assert status == 401 and body["error"]["message"] == "invalid API key"
