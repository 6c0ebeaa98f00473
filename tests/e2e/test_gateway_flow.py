"""The clawith_sync flow end to end on the real binaries: agent A sends to OpenClaw agent
B, B polls and reports, A polls and sees the reply with its history; plus leases,
concurrent polls and every bad input the gateway issue names."""
import json
import threading
import time
import uuid

from conftest import ADMIN_TOKEN, http, wait_until

ADMIN = {"Authorization": "Bearer " + ADMIN_TOKEN}


class World:
    """A tenant with OpenClaw agents alice and bob (alice relates to bob), and keys."""

    def __init__(self, stack, **ingress_env):
        self.stack = stack
        stack.start("ingress", **ingress_env)
        stack.start("dispatcher")
        self.tenant = stack.sql(f"INSERT INTO tenants (name) VALUES ('acme-{uuid.uuid4().hex[:6]}') RETURNING id")
        self.alice = self.agent("Alice")
        self.bob = self.agent("Bob")
        stack.sql(f"INSERT INTO agent_agent_relationships (agent_id, target_agent_id, relation) "
                  f"VALUES ('{self.alice}', '{self.bob}', 'peer')")
        self.keys = {a: self.key(a) for a in (self.alice, self.bob)}

    def agent(self, name, type_="openclaw"):
        return self.stack.sql(f"INSERT INTO agents (tenant_id, name, type) VALUES ('{self.tenant}', "
                              f"'{name}', '{type_}') RETURNING id")

    def member(self, name, feishu=True):
        fid = f"'ou_{uuid.uuid4().hex[:8]}'" if feishu else "NULL"
        member = self.stack.sql(f"INSERT INTO org_members (tenant_id, name, feishu_open_id) VALUES "
                                f"('{self.tenant}', '{name}', {fid}) RETURNING id")
        self.stack.sql(f"INSERT INTO agent_member_relationships (agent_id, member_id) VALUES "
                       f"('{self.alice}', '{member}')")
        return member

    def key(self, agent):
        status, body, _ = http("POST", f"{self.stack.api}/api/gateway/agents/{agent}/api-key", b"", ADMIN)
        assert status == 201, body
        return body["api_key"]

    def call(self, method, path, agent, body=None):
        headers = {"X-Api-Key": self.keys[agent]} if agent else {}
        payload = body if isinstance(body, (bytes, type(None))) else json.dumps(body).encode()
        return http(method, self.stack.api + path, payload, headers)

    def send(self, agent, target, content, **extra):
        return self.call("POST", "/api/gateway/send-message", agent, dict(target=target, content=content, **extra))

    def poll(self, agent, wait=10, limit=None):
        q = f"?wait={wait}" + (f"&limit={limit}" if limit else "")
        status, body, _ = self.call("GET", "/api/gateway/poll" + q, agent)
        assert status == 200, body
        return body

    def report(self, agent, message_id, result):
        return self.call("POST", "/api/gateway/report", agent, {"message_id": message_id, "result": result})


def test_send_poll_report_and_the_reply_comes_back_with_history(stack):
    w = World(stack)
    status, body, _ = w.send(w.alice, "bob", "Can you review PR 42?")
    assert status == 200, body
    assert body == {"status": "accepted", "target": "Bob", "type": "openclaw_agent",
                    "message": "Message queued. Bob has never connected to the gateway; it will "
                               "get the message when it first polls."}  # bob has not polled yet

    inbox = w.poll(w.bob)
    assert [r["name"] for r in inbox["relationships"]] == []  # bob relates to no one
    [msg] = inbox["messages"]
    assert msg["sender_agent_name"] == "Alice" and msg["content"] == "Can you review PR 42?"
    assert msg["sender_user_name"] is None and msg["conversation_id"]
    assert msg["history"] == []  # the message itself is the content, not its own history

    assert w.report(w.bob, msg["id"], "Approved, two nits.")[0] == 200
    assert w.report(w.bob, msg["id"], "Approved, two nits.")[0] == 200  # the same again: no effect
    status, body, _ = w.report(w.bob, msg["id"], "Something else")
    assert status == 409 and body["error"]["code"] == "conflict"

    reply = w.poll(w.alice)
    assert reply["relationships"] == [{"name": "Bob", "type": "agent", "role": "peer",
                                       "description": "", "channels": ["agent"],
                                       "status": "online"}]  # bob polled just now
    [back] = reply["messages"]
    assert back["sender_agent_name"] == "Bob" and back["content"] == "Approved, two nits."
    assert back["conversation_id"] == msg["conversation_id"]
    assert [(h["role"], h["sender_name"], h["content"]) for h in back["history"]] == [
        ("assistant", "Alice", "Can you review PR 42?")]
    # The repeated report sent no second reply.
    assert w.poll(w.alice, wait=1)["messages"] == []
    assert stack.sql(f"SELECT count(*) FROM gateway_messages WHERE agent_id = '{w.alice}'") == "1"


def test_an_unreported_message_comes_back_after_its_lease(stack):
    w = World(stack, AGENTBUS_GATEWAY_LEASE_S="5")
    assert w.send(w.alice, "Bob", "ping")[0] == 200
    [first] = w.poll(w.bob)["messages"]
    assert w.poll(w.bob, wait=0)["messages"] == []  # leased: not handed out twice
    again = wait_until(lambda: w.poll(w.bob, wait=1)["messages"], 20, what="redelivery after the lease")
    assert [m["id"] for m in again] == [first["id"]]
    assert stack.sql(f"SELECT delivery_count FROM gateway_messages WHERE id = '{first['id']}'") == "2"
    assert w.report(w.bob, first["id"], "pong")[0] == 200
    time.sleep(6)
    assert w.poll(w.bob, wait=0)["messages"] == []  # reported: never again


def test_concurrent_polls_split_the_messages_without_duplicates(stack):
    w = World(stack)
    for i in range(20):
        assert w.send(w.alice, "bob", f"m{i}")[0] == 200
    wait_until(lambda: stack.sql(f"SELECT count(*) FROM gateway_messages WHERE agent_id = '{w.bob}'") == "20",
               30, what="20 inbox rows")
    seen, lock = [], threading.Lock()

    def poller():
        for _ in range(4):
            got = w.poll(w.bob, wait=0, limit=3)["messages"]
            with lock:
                seen.extend(m["id"] for m in got)

    threads = [threading.Thread(target=poller) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    seen.extend(m["id"] for m in w.poll(w.bob, wait=0, limit=20)["messages"])
    assert len(seen) == 20 and len(set(seen)) == 20


def test_long_poll_returns_as_soon_as_a_message_arrives(stack):
    w = World(stack)
    result = {}

    def waiter():
        started = time.monotonic()
        result["body"] = w.poll(w.bob, wait=20)
        result["took"] = time.monotonic() - started

    t = threading.Thread(target=waiter)
    t.start()
    time.sleep(2)
    assert w.send(w.alice, "bob", "wake up")[0] == 200
    t.join(timeout=30)
    assert [m["content"] for m in result["body"]["messages"]] == ["wake up"]
    assert result["took"] < 15


def test_message_id_makes_a_retry_idempotent_and_a_reuse_conflict(stack):
    w = World(stack)
    assert w.send(w.alice, "bob", "once", message_id="m-1")[0] == 200
    assert w.send(w.alice, "bob", "once", message_id="m-1")[0] == 200
    status, body, _ = w.send(w.alice, "bob", "different", message_id="m-1")
    assert status == 409 and "m-1" in body["error"]["message"]
    time.sleep(3)
    msgs = w.poll(w.bob, wait=2)["messages"]
    assert [m["content"] for m in msgs] == ["once"]


def test_targets_resolve_inside_the_tenant_only(stack):
    w = World(stack)
    other = stack.sql(f"INSERT INTO tenants (name) VALUES ('other-{uuid.uuid4().hex[:6]}') RETURNING id")
    stack.sql(f"INSERT INTO agents (tenant_id, name, type) VALUES ('{other}', 'Mallory', 'openclaw')")
    status, body, _ = w.send(w.alice, "Mallory", "hi")
    assert status == 404 and "Mallory" in body["error"]["message"]
    # A partial name is matched among alice's relationships only, and must be unique.
    w.member("Sam Lee")
    w.member("Sam Wu")
    status, body, _ = w.send(w.alice, "sam", "hi")
    assert status == 409
    assert sorted(c["name"] for c in body["error"]["candidates"]) == ["Sam Lee", "Sam Wu"]
    assert w.send(w.alice, "bo", "partial match of a relationship")[1]["target"] == "Bob"
    status, body, _ = w.send(w.alice, "Sam Lee", "exact name")
    assert status == 200 and body["type"] == "human"
    w.member("Nobody", feishu=False)
    status, body, _ = w.send(w.alice, "Nobody", "hi")
    assert status == 400 and "no available channel" in body["error"]["message"]


def test_bad_input_gets_clear_errors_and_nothing_is_lost(stack):
    w = World(stack, AGENTBUS_GATEWAY_MAX_CONTENT_BYTES="1024")
    assert w.send(w.alice, "bob", "kept")[0] == 200
    for path, method in (("/api/gateway/poll", "GET"), ("/api/gateway/report", "POST"),
                         ("/api/gateway/send-message", "POST"), ("/api/gateway/heartbeat", "POST")):
        status, body, _ = w.call(method, path, None, {} if method == "POST" else None)
        assert status == 401 and body["error"]["code"] == "unauthorized", path
    assert w.send(w.alice, "bob", "")[0] == 400
    assert w.send(w.alice, "bob", "   \n\t")[0] == 400
    status, body, _ = w.send(w.alice, "bob", "x" * 2000)
    assert status == 413 and body["error"]["code"] == "payload_too_large"
    status, _, _ = w.call("POST", "/api/gateway/send-message", w.alice, b'{"target": "bob",')
    assert status == 400
    assert w.send(w.alice, "nobody-at-all", "hi")[0] == 404
    # Another agent's message, and a message that does not exist: 404.
    [msg] = w.poll(w.bob)["messages"]
    assert w.report(w.alice, msg["id"], "not mine")[0] == 404
    assert w.report(w.bob, str(uuid.uuid4()), "who?")[0] == 404
    assert w.report(w.bob, "not-a-uuid", "x")[0] == 400
    assert w.report(w.bob, msg["id"], "  ")[0] == 400
    # Still up, and the message accepted first is still there to report.
    assert w.report(w.bob, msg["id"], "done")[0] == 200


def test_a_report_in_other_letter_case_is_the_same_report(stack):
    w = World(stack)
    assert w.send(w.alice, "bob", "case?")[0] == 200
    [msg] = w.poll(w.bob)["messages"]
    assert w.report(w.bob, msg["id"], "yes")[0] == 200
    assert w.report(w.bob, msg["id"].upper(), "yes")[0] == 200
    replies = w.poll(w.alice)["messages"]
    assert [m["content"] for m in replies] == ["yes"]
    time.sleep(2)
    assert w.poll(w.alice, wait=1)["messages"] == []
    assert stack.sql(f"SELECT count(*) FROM chat_messages WHERE content = 'yes'") == "1"
