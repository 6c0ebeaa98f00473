"""The LLM worker end to end on the real binaries: OpenClaw agent Alice sends to native
agents through the gateway, the dispatcher routes to agentbus.llm.requests, the worker calls
the fake OpenAI-compatible server (tests/fake_llm/fake_openai.py, real HTTP and SSE), and
Alice finds the answer, or a system notice, in her poll. Every failure mode of the issue,
the hop limit, a worker killed mid-call, concurrent first messages and malformed requests."""
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid

import pytest

from conftest import ROOT, gateway_key, gateway_send, http, new_tenant, wait_until

FAKE = os.path.join(ROOT, "tests", "fake_llm", "fake_openai.py")
PROVIDER_KEY = "sk-test-" + uuid.uuid4().hex
# Short backoffs, so the retry schedule runs in the test's time; the schedule itself is
# unit-tested in test_retry.c.
WORKER_ENV = {"AGENTBUS_LLM_WORKER_RETRY_BASE_MS": "100", "AGENTBUS_LLM_WORKER_RETRY_MAX_MS": "400",
              "AGENTBUS_LLM_WORKER_RETRY_AFTER_CAP_MS": "3000"}


class FakeLLM:
    def __init__(self):
        self.proc = subprocess.Popen([sys.executable, FAKE, "--port", "0", "--api-key", PROVIDER_KEY],
                                     stdout=subprocess.PIPE, text=True)
        self.port = int(self.proc.stdout.readline())
        self.url = f"http://127.0.0.1:{self.port}"

    def requests(self):
        status, body, _ = http("GET", self.url + "/_fake/requests")
        assert status == 200
        return [r for r in body if r["path"] == "/v1/chat/completions"]

    def close(self):
        self.proc.terminate()
        self.proc.wait(timeout=10)


@pytest.fixture
def fake():
    f = FakeLLM()
    yield f
    f.close()


class World:
    """A tenant with OpenClaw agent Alice (with a gateway key), and native agents made on
    demand, each with its own model on the fake."""

    def __init__(self, stack, fake, worker=True, **worker_env):
        self.stack, self.fake = stack, fake
        stack.start("ingress")
        stack.start("dispatcher")
        self.worker = stack.start("llm-worker", **dict(WORKER_ENV, **worker_env)) if worker else None
        self.tenant = new_tenant(stack)
        self.alice = self.agent("Alice", "openclaw")
        self.key = gateway_key(stack, self.alice)

    def agent(self, name, type_="native", role="", primary=None, fallback=None):
        cols = "tenant_id, name, type, role_description, primary_model_id, fallback_model_id"
        vals = ", ".join(["'%s'" % v if v is not None else "NULL"
                          for v in (self.tenant, name, type_, role, primary, fallback)])
        return self.stack.sql(f"INSERT INTO agents ({cols}) VALUES ({vals}) RETURNING id")

    def model(self, model, name=None, provider="openai", stream=True, key=PROVIDER_KEY, **cols):
        values = dict(tenant_id=self.tenant, name=name or f"m-{uuid.uuid4().hex[:8]}", provider=provider,
                      base_url=self.fake.url, model=model, api_key=key, stream="true" if stream else "false")
        values.update({k: str(v) for k, v in cols.items()})
        names = ", ".join(values)
        vals = ", ".join("'%s'" % str(v).replace("'", "''") for v in values.values())
        return self.stack.sql(f"INSERT INTO llm_models ({names}) VALUES ({vals}) RETURNING id")

    def native(self, name, model, role="", fallback=None, **model_cols):
        return self.agent(name, "native", role, self.model(model, **model_cols), fallback)

    def send(self, target, content):
        return gateway_send(self.stack, self.key, target, content)

    def poll(self, wait=5):
        status, body, _ = http("GET", self.stack.api + f"/api/gateway/poll?wait={wait}", None,
                               {"X-Api-Key": self.key}, timeout=wait + 10)
        assert status == 200, body
        return body["messages"]

    def inbox_until(self, count, timeout=60):
        """Alice's polled messages, until `count` have come (each is reported, so none returns)."""
        got = []
        deadline = time.time() + timeout
        while len(got) < count and time.time() < deadline:
            for m in self.poll(wait=3):
                got.append(m)
                status, _, _ = http("POST", self.stack.api + "/api/gateway/report",
                                    json.dumps({"message_id": m["id"], "result": "thanks"}).encode(),
                                    {"X-Api-Key": self.key})
                assert status == 200
        assert len(got) >= count, f"only {len(got)} of {count} messages came: {got}"
        return got

    def request_row(self, agent, timeout=60):
        """The llm_requests row of the (one) request to agent, once written."""
        q = (f"SELECT json_build_object('status', status, 'code', error_code, 'message', error_message,"
             f" 'attempts', attempts, 'usage', usage, 'model', model_name, 'first_token_ms', first_token_ms,"
             f" 'latency_ms', latency_ms, 'reply', reply_message_id, 'finish', finish_reason, 'hops', hops)"
             f" FROM llm_requests WHERE agent_id = '{agent}' ORDER BY created_at")
        wait_until(lambda: self.stack.sql(q) != "", timeout, 0.2, f"llm request of {agent}")
        return json.loads(self.stack.sql(q).splitlines()[0])

    def events(self, type_, want, timeout_ms=15000):
        """The events of type_ on agentbus.events, once at least `want` are there."""
        found = []
        deadline = time.time() + timeout_ms / 1000
        while time.time() < deadline:
            msgs = self.stack.broker.consume(self.stack.broker.topic("agentbus.events"), 10000,
                                             timeout_ms=15000, idle_ms=1500)
            found = [e for e in (json.loads(m["value"]) for m in msgs) if e["type"] == type_]
            if len(found) >= want:
                return found
        raise AssertionError(f"{len(found)} {type_} events, wanted {want}")


def test_openclaw_agent_asks_a_native_agent_and_finds_the_answer_in_its_poll(stack, fake):
    w = World(stack, fake)
    bob = w.native("Bob", "gpt-4o", role="You are Bob, the release manager.")
    body = w.send("bob", "When is the next release?")
    assert body["status"] == "accepted", body

    [reply] = w.inbox_until(1)
    assert reply["sender_agent_name"] == "Bob"
    assert reply["content"].startswith("echo: [Message from agent Alice.")
    assert reply["content"].endswith("When is the next release?")

    [call] = fake.requests()
    assert call["headers"]["authorization"] == "Bearer " + PROVIDER_KEY
    assert call["body"]["model"] == "gpt-4o" and call["body"]["stream"] is True
    assert call["body"]["stream_options"] == {"include_usage": True}
    messages = call["body"]["messages"]
    assert messages[0] == {"role": "system", "content": "You are Bob, the release manager."}
    assert [m["role"] for m in messages] == ["system", "user"]

    row = w.request_row(bob)
    assert row["status"] == "answered" and row["finish"] == "stop", row
    assert row["usage"]["prompt_tokens"] > 0 and row["usage"]["completion_tokens"] > 0
    assert row["first_token_ms"] is not None and row["latency_ms"] >= row["first_token_ms"]
    assert [a["outcome"] for a in row["attempts"]] == ["answer"]

    [event] = w.events("agentbus.agent_response", 1)
    data = event["data"]
    assert data["agent"] == {"id": bob, "name": "Bob"} and data["sender"]["name"] == "Alice"
    assert data["usage"] == row["usage"] and data["model"]["name"] == row["model"]
    assert data["first_token_ms"] == row["first_token_ms"] and data["reply_message_id"] == row["reply"]
    assert "content" not in json.dumps(data["attempts"])  # no conversation text in the event

    # The second message carries the exchange so far as history, as Bob sees it: his answer
    # is "assistant", Alice's turns (her report of "thanks" on his answer too) are "user".
    w.send("bob", "And the one after?")
    w.inbox_until(1)
    second = fake.requests()[1]["body"]["messages"]
    assert [m["role"] for m in second] == ["system", "user", "assistant", "user", "user"]
    assert [m["content"] for m in second[1:4]] == ["When is the next release?", reply["content"], "thanks"]
    assert second[4]["content"].endswith("And the one after?")
    turns = stack.sql(f"SELECT count(*) FROM chat_messages WHERE conversation_id = "
                      f"(SELECT conversation_id FROM llm_requests WHERE agent_id = '{bob}' LIMIT 1)")
    assert turns == "6"
    assert PROVIDER_KEY not in w.worker.logs()


def test_non_streaming_model_and_openclaw_gateway_headers(stack, fake):
    w = World(stack, fake)
    carol = w.native("Carol", "gpt-4o-mini", stream=False)
    dave = w.native("Dave", "openclaw/researcher", provider="openclaw")
    w.send("carol", "ping")
    w.send("dave", "pong")
    replies = w.inbox_until(2)
    assert sorted(r["sender_agent_name"] for r in replies) == ["Carol", "Dave"]
    calls = {c["body"]["model"]: c for c in fake.requests()}
    assert calls["gpt-4o-mini"]["body"]["stream"] is False
    assert "stream_options" not in calls["gpt-4o-mini"]["body"]
    oc = calls["openclaw/researcher"]
    conversation = stack.sql(f"SELECT conversation_id FROM llm_requests WHERE agent_id = '{dave}'")
    assert oc["headers"]["x-openclaw-agent-id"] == "researcher"
    assert oc["headers"]["x-openclaw-session-key"] == f"agent:researcher:{conversation}"
    assert w.request_row(carol)["status"] == "answered"


# model behaviour -> (error code, calls made with llm_worker.max_attempts 3, columns)
FAILURES = {
    "server_error": ("provider_error", 3, {}),
    "status:401": ("unauthorized", 1, {}),
    "status:400": ("bad_request", 1, {}),
    "rate_limit:1": ("rate_limited", 3, {}),
    "cut": ("connection_lost", 3, {}),
    "cut_clean": ("stream_truncated", 3, {}),
    "garbage": ("malformed_response", 3, {}),
    "stream_error": ("provider_error", 3, {}),
    "slow_first:3000": ("first_token_timeout", 3, {"first_token_timeout_ms": 300}),
    "slow_chunks:2000": ("idle_timeout", 3, {"idle_timeout_ms": 300}),
    "tool_calls": ("tool_calls_unsupported", 1, {}),
    "empty": ("empty_answer", 1, {}),
}


def test_each_failure_mode_ends_in_an_error_event_and_a_notice_never_a_reply(stack, fake):
    w = World(stack, fake)
    agents = {}
    for n, (behaviour, (_, _, cols)) in enumerate(FAILURES.items()):
        agents[behaviour] = w.native(f"Failing{n}", behaviour, **cols)
        w.send(f"failing{n}", f"please answer ({behaviour})")
    notices = w.inbox_until(len(FAILURES), timeout=90)
    # Every one is a notice from agentbus itself, never a reply in the agent's name.
    assert {m["sender_agent_name"] for m in notices} == {"agentbus"}
    for behaviour, (code, calls, _) in FAILURES.items():
        row = w.request_row(agents[behaviour])
        assert row["status"] == "failed" and row["code"] == code, (behaviour, row)
        assert row["reply"] is None
        assert len(row["attempts"]) == calls, (behaviour, row["attempts"])
        assert all(a["outcome"] == code for a in row["attempts"]), (behaviour, row["attempts"])
        assert any(f"({code})" in m["content"] and m["content"].startswith(f"[agentbus] Failing")
                   for m in notices), (behaviour, code)
    errors = {e["data"]["agent"]["id"]: e["data"] for e in w.events("agentbus.error", len(FAILURES))}
    for behaviour, (code, calls, _) in FAILURES.items():
        data = errors[agents[behaviour]]
        assert data["code"] == code and data["status"] == "failed" and len(data["attempts"]) == calls
    # Retry-After: 1 was honoured between the rate-limited calls (backoff alone is 100-400 ms).
    limited = [r["time"] for r in fake.requests() if r["body"]["model"] == "rate_limit:1"]
    assert all(b - a >= 0.95 for a, b in zip(limited, limited[1:])), limited
    assert PROVIDER_KEY not in w.worker.logs()
    assert w.worker.ready()


def test_fallback_model_answers_when_the_primary_keeps_failing(stack, fake):
    w = World(stack, fake)
    fallback = w.model("gpt-4o", name="backup")
    erin = w.native("Erin", "server_error", fallback=fallback)
    frank = w.native("Frank", "gpt-4o", key="sk-wrong", fallback=fallback)  # 401: not retried
    # A provider nobody listens on: the connection is refused, retried, then the fallback.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{s.getsockname()[1]}"
    olga = w.native("Olga", "gpt-4o", base_url=closed, fallback=fallback)
    w.send("erin", "hello")
    w.send("frank", "hello")
    w.send("olga", "hello")
    replies = w.inbox_until(3)
    assert sorted(r["sender_agent_name"] for r in replies) == ["Erin", "Frank", "Olga"]
    erin_row, frank_row = w.request_row(erin), w.request_row(frank)
    assert erin_row["status"] == "answered" and erin_row["model"] == "backup"
    assert [a["outcome"] for a in erin_row["attempts"]] == ["provider_error"] * 3 + ["answer"]
    olga_row = w.request_row(olga)
    assert [a["outcome"] for a in olga_row["attempts"]] == ["connection_failed"] * 3 + ["answer"]
    assert olga_row["attempts"][0]["status"] is None  # no HTTP answer at all
    assert [a["outcome"] for a in frank_row["attempts"]] == ["unauthorized", "answer"]
    # The fake's 401 quotes the wrong key it was sent: the worker keeps it out of everything.
    assert "Incorrect API key provided: ***." in frank_row["attempts"][0]["message"]
    assert "sk-wrong" not in w.worker.logs()
    errors = stack.sql("SELECT count(*) FROM llm_requests WHERE attempts::text LIKE '%sk-wrong%'")
    assert errors == "0"


def test_hop_limit_stops_two_native_agents_answering_each_other(stack, fake):
    w = World(stack, fake, AGENTBUS_LLM_WORKER_MAX_HOPS="3")
    gina = w.native("Gina", "gpt-4o")
    hank = w.native("Hank", "gpt-4o")
    # A native agent never starts a conversation by itself: the first message comes as an
    # event, as a webhook's run_agent action will send it.
    status, body, _ = stack.publish("agentbus.message.sent", {
        "tenant_id": w.tenant, "sender": {"type": "agent", "id": gina, "name": "Gina"},
        "target": {"type": "native_agent", "id": hank, "name": "Hank"}, "content": "Let's talk."},
        key=":".join(["agents"] + sorted([gina, hank])))
    assert status == 202, body
    q = "SELECT status || ':' || hops || ':' || coalesce(error_code, '') FROM llm_requests ORDER BY hops"
    wait_until(lambda: "skipped" in stack.sql(q), 60, 0.3, "the hop limit")
    assert stack.sql(q).splitlines() == ["answered:0:", "answered:1:", "answered:2:",
                                         "skipped:3:hop_limit_reached"]
    time.sleep(1)  # nothing more comes: the exchange has ended
    assert len(fake.requests()) == 3
    [error] = w.events("agentbus.error", 1)
    assert error["data"]["code"] == "hop_limit_reached" and error["data"]["status"] == "skipped"


def test_worker_killed_mid_call_answers_exactly_once_after_restart(stack, fake):
    w = World(stack, fake)
    ivan = w.native("Ivan", "slow_first:4000")
    w.send("ivan", "take your time")
    wait_until(lambda: len(fake.requests()) == 1, 30, 0.1, "the first call")
    w.worker.proc.send_signal(signal.SIGKILL)
    w.worker.proc.wait(timeout=10)
    stack.start("llm-worker", **WORKER_ENV)
    [reply] = w.inbox_until(1, timeout=90)
    assert reply["sender_agent_name"] == "Ivan"
    assert w.poll(wait=3) == []  # and no second answer
    assert stack.sql(f"SELECT count(*) FROM llm_requests WHERE agent_id = '{ivan}'") == "1"
    assert stack.sql(f"SELECT count(*) FROM chat_messages WHERE sender_agent_id = '{ivan}'") == "1"
    assert len(fake.requests()) == 2  # the killed call and the one after the restart


def test_sigterm_mid_call_exits_cleanly_and_the_request_is_answered_after_restart(stack, fake):
    w = World(stack, fake, AGENTBUS_SHUTDOWN_TIMEOUT_S="6")
    w.native("June", "slow_first:20000")
    w.send("june", "a long one")
    wait_until(lambda: len(fake.requests()) == 1, 30, 0.1, "the call")
    assert w.worker.stop(timeout=30) == 0
    assert stack.sql("SELECT count(*) FROM llm_requests") == "0"  # cancelled, nothing recorded
    stack.sql("UPDATE llm_models SET model = 'gpt-4o'")
    stack.start("llm-worker", **WORKER_ENV)
    [reply] = w.inbox_until(1, timeout=90)
    assert reply["sender_agent_name"] == "June"


def test_concurrent_first_messages_are_both_answered_in_one_conversation(stack, fake):
    w = World(stack, fake)
    kate = w.native("Kate", "gpt-4o")
    threads = [threading.Thread(target=w.send, args=("kate", f"first {i}")) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    replies = w.inbox_until(2)
    assert sorted(r["content"].rsplit(" ", 1)[1] for r in replies) == ["0", "1"]
    assert stack.sql(f"SELECT count(*) FROM conversations WHERE '{kate}' IN (agent_low, agent_high)") == "1"
    assert stack.sql(f"SELECT count(DISTINCT conversation_id) FROM llm_requests WHERE agent_id = '{kate}'") == "1"
    # The second request saw the first exchange: the turns of a conversation run in order.
    # (Alice's report of the first answer may be in between, as a "thanks" user turn, when
    # it came before the second request was taken up.)
    first, second = (c["body"]["messages"] for c in fake.requests()[:2])
    first_text = first[-1]["content"].rsplit("\n\n", 1)[1]
    assert [m["role"] for m in second[:3]] == ["system", "user", "assistant"]
    assert second[1]["content"] == first_text
    assert second[2]["content"] == "echo: " + first[-1]["content"]
    assert all(m == {"role": "user", "content": "thanks"} for m in second[3:-1]), second
    assert second[-1]["role"] == "user" and second[-1]["content"].endswith(
        "first 1" if first_text == "first 0" else "first 0")


def test_many_calls_run_at_once_within_the_model_limit(stack, fake):
    w = World(stack, fake)
    wide = w.model("slow_first:3000", max_concurrency=6)
    narrow = w.model("slow_first:1500", max_concurrency=1)
    for i in range(6):
        w.agent(f"Wide{i}", "native", "", wide)
        w.send(f"wide{i}", "hi")
    # Six calls are at the fake at once, before any has answered: one engine thread, no
    # thread per call, and different conversations do not wait for each other.
    wait_until(lambda: len(fake.requests()) == 6, 30, 0.05, "six calls in flight")
    assert stack.sql("SELECT count(*) FROM llm_requests") == "0"
    w.inbox_until(6)
    for i in range(3):
        w.agent(f"Narrow{i}", "native", "", narrow)
        w.send(f"narrow{i}", "hi")
    w.inbox_until(3)
    starts = sorted(r["time"] for r in fake.requests() if r["body"]["model"] == "slow_first:1500")
    assert len(starts) == 3
    # max_concurrency 1: each call started only after the one before had answered (1.5 s).
    assert all(b - a >= 1.4 for a, b in zip(starts, starts[1:])), starts


def test_malformed_and_repeated_requests(stack, fake):
    w = World(stack, fake)
    leo = w.native("Leo", "gpt-4o")
    topic = stack.broker.topic("agentbus.llm.requests")
    conversation = stack.sql(f"INSERT INTO conversations (tenant_id, kind, agent_low, agent_high) VALUES "
                             f"('{w.tenant}', 'agent_agent', '{min(w.alice, leo)}', '{max(w.alice, leo)}') RETURNING id")
    key = ":".join(["agents"] + sorted([w.alice, leo]))

    def request(event_id, **data):
        body = {"tenant_id": w.tenant, "conversation_id": conversation, "message_event_id": str(uuid.uuid4()),
                "sender": {"type": "agent", "id": w.alice, "name": "Alice"},
                "target": {"type": "native_agent", "id": leo, "name": "Leo"}, "content": "hello"}
        body.update(data)
        return json.dumps({"specversion": "1.0", "id": event_id, "type": "agentbus.llm.request",
                           "source": "/test", "time": "2026-12-05T12:00:00Z", "data": body})

    bad = {
        "not json": "{{{",
        "no conversation": request(str(uuid.uuid4()), conversation_id=None),
        "bad sender id": request(str(uuid.uuid4()), sender={"type": "agent", "id": "x", "name": "A"}),
        "empty content": request(str(uuid.uuid4()), content=""),
        "negative hops": request(str(uuid.uuid4()), hops=-1),
    }
    for value in bad.values():
        stack.broker.produce(topic, value, key)
    good = str(uuid.uuid4())
    stack.broker.produce(topic, request(good, content="the good one"), key)
    stack.broker.produce(topic, request(good, content="the good one"), key)  # redelivered
    [reply] = w.inbox_until(1)
    assert reply["content"].endswith("the good one")
    assert w.poll(wait=3) == []
    dead = stack.broker.consume(topic + ".dlq", 100, 15000, idle_ms=3000)
    assert len(dead) == len(bad), [d["headers"].get("x-agentbus-dlq-reason") for d in dead]
    assert len(fake.requests()) == 1
    assert stack.sql("SELECT count(*) FROM llm_requests") == "1"
    assert w.worker.ready()


def test_an_answer_too_large_for_kafka_ends_in_an_error_and_a_notice(stack, fake):
    # 1 020 000 bytes: under the worker's content cap (1 MiB), over Kafka's message.max.bytes.
    w = World(stack, fake)
    mike = w.native("Mike", "big:1020000")
    w.send("mike", "tell me everything")
    [notice] = w.inbox_until(1)
    assert notice["sender_agent_name"] == "agentbus" and "(reply_too_large)" in notice["content"]
    assert w.request_row(mike)["status"] == "answered"  # the answer is kept; it cannot travel
    [error] = w.events("agentbus.error", 1)
    assert error["data"]["code"] == "reply_too_large" and "too large" in error["data"]["message"]
    assert w.events("agentbus.agent_response", 1)
    topic = stack.broker.topic("agentbus.llm.requests")
    assert stack.broker.consume(topic + ".dlq", 1, 3000) == []  # not dead-lettered
    assert w.worker.ready()
