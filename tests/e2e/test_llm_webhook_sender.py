"""The LLM worker answering an incoming webhook's message, end to end on the real binaries.

A webhook whose action runs a native agent makes the dispatcher route an
agentbus.message.sent whose sender is the webhook ({"type": "webhook", "name", "hook_id"},
no id) into a conversation of kind 'hook', and publish an agentbus.llm.request for it. Here
the test plays the dispatcher: it creates the 'hook' conversation row as the dispatcher
would and publishes the request straight to agentbus.llm.requests. The worker must call the
model, record both turns (the webhook's with no sender agent), publish
agentbus.agent_response, and send no reply and no notice: there is nobody to send one to."""
import json
import os
import subprocess
import sys
import time
import uuid

import pytest

from conftest import ADMIN_TOKEN, ROOT, http, wait_until

FAKE = os.path.join(ROOT, "tests", "fake_llm", "fake_openai.py")
PROVIDER_KEY = "sk-test-" + uuid.uuid4().hex
WORKER_ENV = {"AGENTBUS_LLM_WORKER_RETRY_BASE_MS": "100", "AGENTBUS_LLM_WORKER_RETRY_MAX_MS": "400"}
ADMIN = {"Authorization": "Bearer " + ADMIN_TOKEN, "Content-Type": "application/json"}
HOOK_SENDER = {"type": "webhook", "name": "webhook github-events", "hook_id": "github-events"}


@pytest.fixture
def fake():
    proc = subprocess.Popen([sys.executable, FAKE, "--port", "0", "--api-key", PROVIDER_KEY],
                            stdout=subprocess.PIPE, text=True)
    port = int(proc.stdout.readline())

    class Fake:
        url = f"http://127.0.0.1:{port}"

        def requests(self):
            status, body, _ = http("GET", self.url + "/_fake/requests")
            assert status == 200
            return [r for r in body if r["path"] == "/v1/chat/completions"]

    yield Fake()
    proc.terminate()
    proc.wait(timeout=10)


class Session:
    """A webhook session with one native agent: the message's session_key, the Kafka key the
    dispatcher gives its conversation (session:<agent id>:<hash of the session key>), and
    the conversation's id once made."""

    def __init__(self, agent, key):
        self.agent, self.key = agent, key
        self.kafka_key = f"session:{agent}:{uuid.uuid4().hex[:16]}"
        self.conversation = None


class HookWorld:
    """Ingress (for the admin API), the dispatcher and the worker; a tenant made through the
    admin API, and native agents with a model on the fake made the same way."""

    def __init__(self, stack, fake, **worker_env):
        self.stack, self.fake = stack, fake
        stack.start("ingress")
        stack.start("dispatcher")
        self.worker = stack.start("llm-worker", **dict(WORKER_ENV, **worker_env))
        self.tenant = self.admin("tenants", name=f"hooks-{uuid.uuid4().hex[:6]}")["id"]
        self.requests_topic = stack.broker.topic("agentbus.llm.requests")

    def admin(self, resource, **body):
        status, answer, _ = http("POST", f"{self.stack.api}/api/admin/{resource}", body, ADMIN)
        assert status == 201, (resource, answer)
        return answer

    def native(self, name, model, role=""):
        model_id = self.admin("llm-models", tenant_id=self.tenant, name=f"m-{uuid.uuid4().hex[:8]}",
                              provider="openai", base_url=self.fake.url, model=model,
                              api_key=PROVIDER_KEY)["id"]
        return self.admin("agents", tenant_id=self.tenant, name=name, type="native",
                          role_description=role, primary_model_id=model_id)["id"]

    def hook_conversation(self, agent):
        """The 'hook' conversation the dispatcher makes for a webhook's session, as it makes
        it: session_key 'agent:<agent id>:<the message's session_key>'. Returns a Session."""
        session = Session(agent, f"hook:{uuid.uuid4()}")
        session.conversation = self.stack.sql(
            "INSERT INTO conversations (tenant_id, kind, agent_low, session_key) VALUES "
            f"('{self.tenant}', 'hook', '{agent}', 'agent:{agent}:{session.key}') RETURNING id")
        return session

    def request(self, session, agent_name, content, event_id=None, sender=None, **extra):
        """Publishes an agentbus.llm.request as the dispatcher does for a webhook's message
        (same data plus conversation_id and message_event_id, keyed by the conversation);
        returns the request's event id."""
        event_id = event_id or str(uuid.uuid4())
        message_event_id = str(uuid.uuid5(uuid.NAMESPACE_URL, event_id))
        data = {"tenant_id": self.tenant, "sender": sender or HOOK_SENDER,
                "target": {"type": "native_agent", "id": session.agent, "name": agent_name},
                "channel": "agent", "content": content, "session_key": session.key, "hops": 0,
                "webhook_event_id": str(uuid.uuid4()), "conversation_id": session.conversation,
                "message_event_id": message_event_id}
        data.update(extra)
        envelope = {"specversion": "1.0", "id": event_id, "type": "agentbus.llm.request",
                    "source": "/agentbus/dispatcher", "subject": session.agent,
                    "time": "2026-12-05T12:00:00Z", "data": data}
        self.stack.broker.produce(self.requests_topic, json.dumps(envelope), session.kafka_key)
        return event_id

    def row(self, event_id, timeout=60):
        q = ("SELECT json_build_object('status', status, 'code', error_code, 'sender_type', sender_type,"
             " 'sender_agent_id', sender_agent_id, 'sender_name', sender_name, 'hops', hops,"
             " 'reply', reply_message_id, 'conversation', conversation_id, 'attempts', attempts)"
             f" FROM llm_requests WHERE id = '{event_id}'")
        wait_until(lambda: self.stack.sql(q) != "", timeout, 0.2, f"llm request {event_id}")
        return json.loads(self.stack.sql(q))

    def consume(self, base, idle_ms=1500, timeout_ms=15000):
        """(key, envelope) of what the topic holds now; an empty topic costs timeout_ms."""
        msgs = self.stack.broker.consume(self.stack.broker.topic(base), 10000, timeout_ms=timeout_ms,
                                         idle_ms=idle_ms)
        return [(m["key"], json.loads(m["value"])) for m in msgs]

    def ingress_messages(self):
        """The agentbus.message.sent events on agentbus.ingress: a reply or a notice. Nothing
        else writes there in these tests, and a topic keeps what it was given, so one look at
        the end covers the whole test."""
        return [e for _, e in self.consume("agentbus.ingress", timeout_ms=4000)
                if e["type"] == "agentbus.message.sent"]

    def events(self, type_, want, timeout=30):
        found = []
        deadline = time.time() + timeout
        while time.time() < deadline:
            found = [(k, e) for k, e in self.consume("agentbus.events") if e["type"] == type_]
            if len(found) >= want:
                return found
        raise AssertionError(f"{len(found)} {type_} events, wanted {want}")

    def turns(self, conversation):
        q = ("SELECT coalesce(json_agg(json_build_object('role', role, 'agent', sender_agent_id,"
             " 'name', sender_name, 'content', content) ORDER BY created_at, role DESC), '[]')"
             f" FROM chat_messages WHERE conversation_id = '{conversation}'")
        return json.loads(self.stack.sql(q))


def test_native_agent_answers_a_webhook_with_no_reply_message_and_keeps_the_history(stack, fake):
    w = HookWorld(stack, fake)
    watcher = w.native("Watcher", "gpt-4o", role="You triage repository events.")
    session = w.hook_conversation(watcher)
    conversation = session.conversation
    first = ("<<<EXTERNAL_UNTRUSTED_CONTENT>>>\npush to main by alice: fix the build\n"
             "<<<END_EXTERNAL_UNTRUSTED_CONTENT>>>")
    req1 = w.request(session, "Watcher", first)

    row = w.row(req1)
    assert row["status"] == "answered", row
    assert row["sender_type"] == "webhook" and row["sender_agent_id"] is None, row
    assert row["sender_name"] == "webhook github-events" and row["hops"] == 0
    assert row["conversation"] == conversation and row["reply"] is not None

    # The model got the webhook's text, after a notice that nobody is answered.
    [call] = fake.requests()
    messages = call["body"]["messages"]
    assert [m["role"] for m in messages] == ["system", "user"]
    assert messages[0]["content"] == "You triage repository events."
    assert messages[1]["content"] == (
        "[Message from webhook github-events (an incoming webhook, not an agent). Your text reply "
        "is recorded as your response; it is not sent back to anyone.]\n\n" + first)

    # agentbus.agent_response, as for any answer, keyed as the request came, naming the webhook.
    [(key, response)] = w.events("agentbus.agent_response", 1)
    assert key == session.kafka_key
    data = response["data"]
    assert response["subject"] == watcher and response["source"] == "/agentbus/llm-worker"
    assert data["sender"] == HOOK_SENDER  # no id: no agent sent it
    assert data["agent"] == {"id": watcher, "name": "Watcher"}
    assert data["conversation_id"] == conversation and data["request_id"] == req1
    assert data["reply_message_id"] == row["reply"] and data["hops"] == 0
    assert data["model"]["id"] is not None and data["finish_reason"] == "stop"

    turns = w.turns(conversation)
    assert turns == [
        {"role": "user", "agent": None, "name": "webhook github-events", "content": first},
        {"role": "assistant", "agent": watcher, "name": "Watcher",
         "content": "echo: " + messages[1]["content"]},
    ]

    # The second message of the session carries the first exchange as history.
    req2 = w.request(session, "Watcher", "a second push")
    assert w.row(req2)["status"] == "answered"
    second = fake.requests()[1]["body"]["messages"]
    assert [m["role"] for m in second] == ["system", "user", "assistant", "user"]
    assert second[1]["content"] == first
    assert second[2]["content"] == turns[1]["content"]
    assert second[3]["content"].endswith("\n\na second push")
    assert len(w.turns(conversation)) == 4
    assert len(w.events("agentbus.agent_response", 2)) == 2

    # A redelivered request publishes its recorded outcome again (same event id), calls
    # nobody, and still sends no reply.
    w.request(session, "Watcher", "a second push", event_id=req2)
    wait_until(lambda: len([e for _, e in w.consume("agentbus.events", 1000)
                            if e["type"] == "agentbus.agent_response"]) == 3, 30, 0.5,
               "the response published again")
    responses = [e for _, e in w.consume("agentbus.events") if e["type"] == "agentbus.agent_response"]
    assert responses[1]["id"] == responses[2]["id"]
    assert len(fake.requests()) == 2
    assert stack.sql(f"SELECT count(*) FROM llm_requests WHERE conversation_id = '{conversation}'") == "2"
    # No reply to anyone, ever: a reply leaves in the same batch as its response, so three
    # responses on agentbus.events mean any reply would be on agentbus.ingress by now.
    assert w.ingress_messages() == []
    assert PROVIDER_KEY not in w.worker.logs()


def test_the_hop_limit_never_stops_a_webhook_and_its_hook_id_is_optional(stack, fake):
    # The dispatcher sends a webhook's message at hops 0; even one that said more is no
    # answer to an answer, and is answered where a native agent's would be skipped.
    w = HookWorld(stack, fake, AGENTBUS_LLM_WORKER_MAX_HOPS="1")
    watcher = w.native("Watcher", "gpt-4o")
    session = w.hook_conversation(watcher)
    sender = {"type": "webhook", "name": "webhook alerts", "id": None}  # a null id is no id
    req = w.request(session, "Watcher", "disk full", sender=sender, hops=1)
    row = w.row(req)
    assert row["status"] == "answered" and row["hops"] == 1, row
    assert row["sender_name"] == "webhook alerts" and row["sender_agent_id"] is None
    [(_, response)] = w.events("agentbus.agent_response", 1)
    assert response["data"]["sender"] == {"type": "webhook", "name": "webhook alerts"}


def test_a_failed_answer_to_a_webhook_is_an_error_event_and_no_notice(stack, fake):
    w = HookWorld(stack, fake)
    broken = w.native("Broken", "status:401")  # refused, not retried
    session = w.hook_conversation(broken)
    req = w.request(session, "Broken", "build failed")
    row = w.row(req)
    assert row["status"] == "failed" and row["code"] == "unauthorized", row
    assert row["sender_type"] == "webhook" and row["reply"] is None
    [(key, error)] = w.events("agentbus.error", 1)
    assert key == session.kafka_key
    assert error["data"]["code"] == "unauthorized" and error["data"]["status"] == "failed"
    assert error["data"]["sender"] == HOOK_SENDER
    assert w.ingress_messages() == []  # no notice, no reply
    assert [e for _, e in w.consume("agentbus.events") if e["type"] == "agentbus.agent_response"] == []
    # The webhook's turn is kept, without a sender agent; no answer was written.
    assert [(t["role"], t["agent"]) for t in w.turns(session.conversation)] == [("user", None)]


def test_a_webhook_sender_with_an_id_is_dead_lettered(stack, fake):
    w = HookWorld(stack, fake)
    watcher = w.native("Watcher", "gpt-4o")
    session = w.hook_conversation(watcher)
    bad = dict(HOOK_SENDER, id=watcher)
    w.request(session, "Watcher", "spoofed", sender=bad)
    good = w.request(session, "Watcher", "genuine")
    assert w.row(good)["status"] == "answered"
    dead = stack.broker.consume(w.requests_topic + ".dlq", 10, 15000, idle_ms=2000)
    assert len(dead) == 1
    assert "data.sender.id must be absent for a webhook sender" in \
        dead[0]["headers"]["x-agentbus-dlq-reason"]
    assert len(fake.requests()) == 1
    assert stack.sql("SELECT count(*) FROM llm_requests") == "1"
