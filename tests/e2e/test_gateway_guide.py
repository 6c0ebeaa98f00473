"""The setup guide (GET /api/gateway/setup-guide/{agent_id}) and the agents' online status
(docs/gateway.md), on the real binaries: the guide's URLs come from gateway.public_url or the
Host the agent called, never a hard-coded host, and never carry the key (Clawith's S5, B11);
an agent not seen for gateway.offline_after_s is offline in the admin API, in other agents'
poll relationships and in the answer of a send-message to it."""
import json
import os
import re
import socket
import subprocess
import uuid

from conftest import ADMIN_TOKEN, BIN, SANITIZER_MARKERS, http

ADMIN = {"Authorization": "Bearer " + ADMIN_TOKEN}
HEARTBEAT_LINE = "- Check Clawith inbox using the clawith_sync skill and process any pending messages"


class World:
    """A tenant whose agents are made with SQL; keys issued through the admin route."""

    def __init__(self, stack, services=("ingress",), **ingress_env):
        self.stack = stack
        stack.start("ingress", **ingress_env)
        for name in services[1:]:
            stack.start(name)
        self.tenant = stack.sql(f"INSERT INTO tenants (name) VALUES ('acme-{uuid.uuid4().hex[:6]}') RETURNING id")
        self.keys = {}

    def agent(self, name, type_="openclaw", key=True):
        agent = self.stack.sql(f"INSERT INTO agents (tenant_id, name, type) VALUES ('{self.tenant}', "
                               f"'{name}', '{type_}') RETURNING id")
        if key:
            status, body, _ = http("POST", f"{self.stack.api}/api/gateway/agents/{agent}/api-key", b"", ADMIN)
            assert status == 201, body
            self.keys[agent] = body["api_key"]
        return agent

    def relate(self, agent, target):
        self.stack.sql(f"INSERT INTO agent_agent_relationships (agent_id, target_agent_id, relation) "
                       f"VALUES ('{agent}', '{target}', 'peer')")

    def guide(self, path_agent, key, headers=None):
        h = {"X-Api-Key": key} if key is not None else {}
        h.update(headers or {})
        return http("GET", f"{self.stack.api}/api/gateway/setup-guide/{path_agent}", headers=h)

    def admin_agent(self, agent):
        status, body, _ = http("GET", f"{self.stack.api}/api/admin/agents/{agent}", headers=ADMIN)
        assert status == 200, body
        return body

    def listed(self, query):
        status, body, _ = http("GET", f"{self.stack.api}/api/admin/agents?{query}", headers=ADMIN)
        assert status == 200, body
        return sorted(a["name"] for a in body["items"])

    def heartbeat(self, agent):
        status, body, _ = http("POST", self.stack.api + "/api/gateway/heartbeat", b"",
                               {"X-Api-Key": self.keys[agent]})
        assert status == 200, body

    def poll(self, agent, wait=0):
        status, body, _ = http("GET", f"{self.stack.api}/api/gateway/poll?wait={wait}",
                               headers={"X-Api-Key": self.keys[agent]})
        assert status == 200, body
        return body

    def send(self, agent, target, content):
        return http("POST", self.stack.api + "/api/gateway/send-message",
                    {"target": target, "content": content},
                    {"X-Api-Key": self.keys[agent], "Content-Type": "application/json"})

    def seen_ago(self, agent, interval):
        self.stack.sql(f"UPDATE agents SET last_seen_at = now() - interval '{interval}' WHERE id = '{agent}'")


def url_lines(skill):
    return re.findall(r"^- URL: (\S+)$", skill, re.M)


def check_no_key(text, key):
    assert key not in text
    assert key[3:] not in text and key[:8] not in text  # not even its prefix


# ---- the setup guide ----

def test_the_guide_uses_the_public_url_and_never_the_key(stack):
    w = World(stack, AGENTBUS_GATEWAY_PUBLIC_URL="https://bus.example.com/agentbus/")
    bob = w.agent("Bob")
    key = w.keys[bob]
    status, body, headers = w.guide(bob, key)
    assert status == 200, body
    assert set(body) == {"skill_filename", "skill_content", "heartbeat_addition"}
    assert body["skill_filename"] == "clawith_sync.md"
    assert body["heartbeat_addition"] == HEARTBEAT_LINE
    assert headers["Cache-Control"] == "no-store"
    skill = body["skill_content"]
    assert skill.startswith("---\nname: clawith_sync\n")
    assert url_lines(skill) == ["https://bus.example.com/agentbus/api/gateway/" + p
                                for p in ("poll", "report", "send-message", "heartbeat")]
    for url in re.findall(r"https?://[^\s)`\"]+", skill):
        assert url.startswith("https://bus.example.com/agentbus"), url
    assert "//api" not in skill and "try.clawith.ai" not in skill
    assert "**Bob**" in skill
    # The key: a placeholder in every header line, never the key itself (Clawith's S5).
    assert skill.count("- Header: X-Api-Key: <your agentbus API key>") == 4
    check_no_key(json.dumps(body), key)
    assert key not in stack.services["ingress"][0].logs()
    # The agent's id in capitals is the same agent.
    status, upper, _ = w.guide(bob.upper(), key)
    assert status == 200 and upper == body


def test_without_a_public_url_the_guide_uses_the_host_called(stack):
    w = World(stack)
    bob = w.agent("Bob")
    key = w.keys[bob]
    status, body, _ = w.guide(bob, key)
    assert status == 200, body
    base = f"http://127.0.0.1:{stack.api_port}"
    assert url_lines(body["skill_content"])[0] == base + "/api/gateway/poll"
    assert all(u.startswith(base + "/api/gateway/") for u in url_lines(body["skill_content"]))
    # The name a reverse proxy forwarded, and the scheme it says the agent used.
    status, body, _ = w.guide(bob, key, {"Host": "agents.example.test:9443", "X-Forwarded-Proto": "https"})
    assert status == 200, body
    assert url_lines(body["skill_content"])[0] == "https://agents.example.test:9443/api/gateway/poll"
    status, body, _ = w.guide(bob, key, {"Host": "[::1]:8080", "X-Forwarded-Proto": "http"})
    assert status == 200 and url_lines(body["skill_content"])[0] == "http://[::1]:8080/api/gateway/poll"
    # A Host that is more than host[:port] never reaches the guide.
    for host in ("evil.example/x", "user@evil.example", "a b", "h:99999", "h:80:80", 'h"x'):
        status, body, _ = w.guide(bob, key, {"Host": host})
        assert status == 400, (host, body)
        assert body["error"]["code"] == "invalid_request" and "Host" in body["error"]["message"]
    # HTTP/1.0 needs no Host: then there is nothing to build the URLs from.
    with socket.create_connection(("127.0.0.1", stack.api_port), timeout=10) as s:
        s.sendall(f"GET /api/gateway/setup-guide/{bob} HTTP/1.0\r\nX-Api-Key: {key}\r\n\r\n".encode())
        raw = b""
        while chunk := s.recv(65536):
            raw += chunk
    head, _, payload = raw.decode().partition("\r\n\r\n")
    assert head.split()[1] == "400", head
    assert "gateway.public_url" in json.loads(payload)["error"]["message"]


def test_the_guide_refuses_missing_wrong_and_other_agents_keys(stack):
    w = World(stack)
    alice, bob = w.agent("Alice"), w.agent("Bob")
    for key in (None, "", "oc-wrong", w.keys[bob][:-1]):
        status, body, _ = w.guide(bob, key)
        assert status == 401 and body["error"]["code"] == "unauthorized", (key, body)
    # Alice's key, Bob's guide (and an agent that does not exist): 403, nothing of Bob's.
    for path_agent in (bob, str(uuid.uuid4())):
        status, body, _ = w.guide(path_agent, w.keys[alice])
        assert status == 403, body
        assert body["error"] == {"code": "forbidden", "message": "Key does not match this agent"}
    for bad in ("not-a-uuid", bob[:-1], bob + "0"):
        status, body, _ = w.guide(bad, w.keys[bob])
        assert status == 400 and body["error"]["code"] == "invalid_request", (bad, body)
    # A revoked key no longer reads its agent's guide.
    old = w.keys[bob]
    assert http("POST", f"{stack.api}/api/gateway/agents/{bob}/api-key", b"", ADMIN)[0] == 201
    assert w.guide(bob, old)[0] == 401


def test_a_public_url_that_is_not_a_url_stops_ingress(stack):
    svc = stack.start("ingress", wait=False, AGENTBUS_GATEWAY_PUBLIC_URL="bus.example.com")
    assert svc.proc.wait(timeout=60) == 2  # a configuration error, like any other
    assert "gateway.public_url must start with http:// or https://" in svc.logs()


# ---- online, offline, never seen ----

def test_status_follows_last_seen_in_the_admin_api_and_the_relationships(stack):
    w = World(stack, AGENTBUS_GATEWAY_OFFLINE_AFTER_S="10")
    alice, bob = w.agent("Alice"), w.agent("Bob")
    carl = w.agent("Carl", key=False)
    nat = w.agent("Nat", "native", key=False)
    for target in (bob, carl, nat):
        w.relate(alice, target)
    member = stack.sql(f"INSERT INTO org_members (tenant_id, name) VALUES ('{w.tenant}', 'Mia') RETURNING id")
    stack.sql(f"INSERT INTO agent_member_relationships (agent_id, member_id) VALUES ('{alice}', '{member}')")

    assert w.admin_agent(bob)["status"] == "never_seen"
    assert w.admin_agent(nat)["status"] == "online"  # the LLM worker answers for it
    w.heartbeat(bob)
    assert w.admin_agent(bob)["status"] == "online"

    def statuses():
        rels = w.poll(alice)["relationships"]
        assert [r for r in rels if r["type"] == "human"] == [
            {"name": "Mia", "type": "human", "role": "collaborator", "description": "", "channels": []}]
        return {r["name"]: r["status"] for r in rels if r["type"] == "agent"}

    assert statuses() == {"Bob": "online", "Carl": "never_seen", "Nat": "online"}
    # Alice's poll made her seen, too.
    assert w.listed(f"tenant_id={w.tenant}&status=online") == ["Alice", "Bob", "Nat"]
    assert w.listed(f"tenant_id={w.tenant}&status=never_seen") == ["Carl"]
    assert w.listed(f"tenant_id={w.tenant}&status=offline") == []

    # gateway.offline_after_s (10 here, not the default 300) decides.
    w.seen_ago(bob, "5 seconds")
    assert w.admin_agent(bob)["status"] == "online"
    w.seen_ago(bob, "11 seconds")
    got = w.admin_agent(bob)
    assert got["status"] == "offline" and got["last_seen_at"].endswith("Z")
    assert statuses()["Bob"] == "offline"
    assert w.listed(f"tenant_id={w.tenant}&status=offline") == ["Bob"]
    assert w.listed(f"tenant_id={w.tenant}&status=offline&type=native") == []
    # Seen again: online again; nothing was stored that had to be reset.
    w.heartbeat(bob)
    assert w.admin_agent(bob)["status"] == "online"
    assert statuses()["Bob"] == "online"


def test_the_status_is_in_every_admin_answer_and_read_only(stack):
    w = World(stack, AGENTBUS_GATEWAY_OFFLINE_AFTER_S="10")
    base = f"{stack.api}/api/admin/agents"
    status, created, _ = http("POST", base, {"tenant_id": w.tenant, "name": "Olga", "type": "openclaw"}, ADMIN)
    assert status == 201 and created["status"] == "never_seen", created
    status, native, _ = http("POST", base, {"tenant_id": w.tenant, "name": "Ned", "type": "native"}, ADMIN)
    assert status == 201 and native["status"] == "online"
    w.seen_ago(created["id"], "1 hour")
    status, patched, _ = http("PATCH", f"{base}/{created['id']}", {"role_description": "ops"}, ADMIN)
    assert status == 200 and patched["status"] == "offline", patched
    status, listed, _ = http("GET", f"{base}?tenant_id={w.tenant}", headers=ADMIN)
    assert {a["name"]: a["status"] for a in listed["items"]} == {"Olga": "offline", "Ned": "online"}
    for method, path, body in (("POST", base, {"tenant_id": w.tenant, "name": "x", "type": "native",
                                               "status": "online"}),
                               ("PATCH", f"{base}/{created['id']}", {"status": "online"})):
        status, answer, _ = http(method, path, body, ADMIN)
        assert status == 400 and '"status" is read-only' in answer["error"]["message"], answer
    for query in ("status=asleep", "status=", "status=ONLINE"):
        status, answer, _ = http("GET", f"{base}?{query}", headers=ADMIN)
        assert status == 400 and '"status" must be one of online|offline|never_seen' in answer["error"]["message"]
    # The other resources have no status filter.
    status, answer, _ = http("GET", f"{stack.api}/api/admin/members?status=online", headers=ADMIN)
    assert status == 400 and "unknown query parameter" in answer["error"]["message"]


def test_a_message_to_an_offline_agent_is_accepted_and_the_answer_says_so(stack):
    w = World(stack, ("ingress", "dispatcher"), AGENTBUS_GATEWAY_OFFLINE_AFTER_S="10")
    alice, bob = w.agent("Alice"), w.agent("Bob")
    carl = w.agent("Carl")
    w.agent("Nat", "native", key=False)
    w.heartbeat(bob)
    status, body, _ = w.send(alice, "bob", "while you are here")
    assert status == 200 and body == {"status": "accepted", "target": "Bob", "type": "openclaw_agent",
                                      "message": "Message queued. The reply will appear in your next poll."}
    w.seen_ago(bob, "3 hours")
    last_seen = stack.sql(f"SELECT to_char(last_seen_at AT TIME ZONE 'UTC', "
                          f"'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"') FROM agents WHERE id = '{bob}'")
    status, body, _ = w.send(alice, "bob", "are you there?")
    assert status == 200, body
    assert (body["status"], body["target"], body["type"]) == ("accepted", "Bob", "openclaw_agent")
    assert body["message"] == (f"Message queued. Bob is offline (last seen {last_seen}, 3 hours ago); "
                               "it will get the message when it next polls.")
    status, body, _ = w.send(alice, "Carl", "hello?")
    assert status == 200 and body["type"] == "openclaw_agent"
    assert body["message"] == ("Message queued. Carl has never connected to the gateway; "
                               "it will get the message when it first polls.")
    status, body, _ = w.send(alice, "Nat", "native agents are always there")
    assert status == 200 and body["type"] == "agent"
    assert body["message"] == "Message queued. The reply will appear in your next poll."
    # The messages waited: Bob gets both when he polls, and is online again.
    got = [m["content"] for m in w.poll(bob, wait=10)["messages"]]
    if len(got) < 2:
        got += [m["content"] for m in w.poll(bob, wait=10)["messages"]]
    assert got == ["while you are here", "are you there?"]
    status, body, _ = w.send(alice, "bob", "welcome back")
    assert body["message"] == "Message queued. The reply will appear in your next poll."
    assert [m["content"] for m in w.poll(carl, wait=10)["messages"]] == ["hello?"]


def test_agentbusctl_lists_agents_by_status(stack):
    w = World(stack, AGENTBUS_GATEWAY_OFFLINE_AFTER_S="10")
    bob, carl = w.agent("bob"), w.agent("carl", key=False)
    w.heartbeat(bob)
    w.seen_ago(bob, "1 minute")
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTBUS_")}
    env.update(AGENTBUS_URL=stack.api, AGENTBUS_ADMIN_TOKEN=ADMIN_TOKEN)

    def ctl(*args):
        out = subprocess.run([os.path.join(BIN, "agentbusctl"), *args], env=env, cwd=stack.workdir,
                             capture_output=True, text=True, timeout=60)
        for marker in SANITIZER_MARKERS:
            assert marker not in out.stderr, out.stderr
        assert out.returncode == 0, (out.stdout, out.stderr)
        return out.stdout

    listed = json.loads(ctl("agents", "list", "--tenant", w.tenant))
    assert {a["name"]: a["status"] for a in listed["items"]} == {"bob": "offline", "carl": "never_seen"}
    assert ctl("-q", "agents", "list", "--tenant", w.tenant, "--status", "offline").split() == [bob]
    assert json.loads(ctl("agent", "get", "carl", "--tenant", w.tenant))["status"] == "never_seen"
    assert "--status offline" in ctl("--help")
