"""The dispatcher's routes for agentbus.message.sent (docs/events.md): an OpenClaw agent's
inbox, an LLM request for a native agent, a Feishu notification for a member, and
agentbus.message.received after each; and the system notices the LLM worker leaves in an
OpenClaw agent's inbox. Envelopes are built by hand and put on
agentbus.ingress directly, so every test controls the exact bytes the dispatcher sees
(duplicates, malformed data, other tenants) without depending on ingress."""
import datetime
import hashlib
import json
import os
import shutil
import subprocess
import tempfile
import threading
import time
import uuid

from conftest import ADMIN_TOKEN, ROOT, free_port, http, wait_until


def derive(name):
    """common/crypto.c ab_uuid_derive: SHA-256 of the name, version 8, variant 10."""
    b = bytearray(hashlib.sha256(name.encode()).digest()[:16])
    b[6] = (b[6] & 0x0F) | 0x80
    b[8] = (b[8] & 0x3F) | 0x80
    return str(uuid.UUID(bytes=bytes(b)))


def pair_key(a, b):
    return "agents:%s:%s" % tuple(sorted([a, b]))


class World:
    """Two tenants' worth of agents and people, made with SQL once the schema is there."""

    def __init__(self, stack):
        self.stack = stack
        self.tenant = self.tenant_new()
        self.other_tenant = self.tenant_new()

    def tenant_new(self):
        return self.stack.sql(f"INSERT INTO tenants (name) VALUES ('t-{uuid.uuid4().hex[:8]}') RETURNING id")

    def agent(self, name, type_="openclaw", tenant=None):
        return self.stack.sql(f"INSERT INTO agents (tenant_id, name, type) VALUES "
                              f"('{tenant or self.tenant}', '{name}', '{type_}') RETURNING id")

    def member(self, name, tenant=None):
        return self.stack.sql(f"INSERT INTO org_members (tenant_id, name, feishu_open_id) VALUES "
                              f"('{tenant or self.tenant}', '{name}', 'ou_{uuid.uuid4().hex[:8]}') RETURNING id")

    def conversation(self, a, b, tenant=None):
        low, high = sorted([a, b])
        return self.stack.sql(f"INSERT INTO conversations (tenant_id, kind, agent_low, agent_high) VALUES "
                              f"('{tenant or self.tenant}', 'agent_agent', '{low}', '{high}') RETURNING id")


def message(tenant, sender, sender_name, target, target_type, content, target_name="bob"):
    return {
        "tenant_id": tenant,
        "sender": {"type": "agent", "id": sender, "name": sender_name},
        "target": {"type": target_type, "id": target, "name": target_name},
        "channel": "agent",
        "content": content,
        "message_id": None,
        "in_reply_to": None,
    }


def notice(tenant, target, content, conversation=None, target_type="openclaw_agent"):
    """What the LLM worker sends when it cannot answer: from agentbus itself, no sender id."""
    data = {
        "tenant_id": tenant,
        "sender": {"type": "system", "name": "agentbus"},
        "target": {"type": target_type, "id": target, "name": "bob"},
        "channel": "agent",
        "content": content,
    }
    if conversation is not None:
        data["conversation_id"] = conversation
    return data


def envelope(data, event_id=None, subject=None, type_="agentbus.message.sent"):
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
    env = {"specversion": "1.0", "id": event_id or str(uuid.uuid4()), "type": type_,
           "source": "/agentbus/ingress/gateway", "time": now, "datacontenttype": "application/json",
           "data": data}
    if subject:
        env["subject"] = subject
    return env


def send(stack, env, key):
    stack.broker.produce(stack.broker.topic("agentbus.ingress"), json.dumps(env), key=key)
    return env["id"]


def consume(stack, base, n, timeout_ms=20000, idle_ms=None):
    msgs = stack.broker.consume(stack.broker.topic(base), n, timeout_ms, idle_ms)
    for m in msgs:
        m["event"] = json.loads(m["value"]) if m["value"] else None
    return msgs


def events_of(stack, type_, n):
    """The first n events of type_ on agentbus.events (a conversation's first message also
    publishes agentbus.session.started there)."""
    deadline = time.time() + 20
    while True:
        found = [m for m in consume(stack, "agentbus.events", 1000, idle_ms=1000)
                 if m["event"]["type"] == type_]
        if len(found) >= n or time.time() > deadline:
            return found[:n]
        time.sleep(0.2)


def received(stack, n):
    return events_of(stack, "agentbus.message.received", n)


def in_inbox(stack, event_id):
    return stack.sql(f"SELECT count(*) FROM gateway_messages WHERE id = '{event_id}'") == "1"


def inbox_row(stack, event_id):
    return stack.sql("SELECT agent_id || '|' || sender_agent_id || '|' || sender_name || '|' || status"
                     f" || '|' || content || '|' || conversation_id FROM gateway_messages WHERE id = '{event_id}'")


def test_openclaw_target_gets_one_inbox_row_chat_message_and_conversation(stack):
    dispatcher = stack.start("dispatcher")
    w = World(stack)
    alice, bob = w.agent("alice"), w.agent("bob")
    data = message(w.tenant, alice, "alice", bob, "openclaw_agent", "hello bob")
    event_id = send(stack, envelope(data, subject=bob), pair_key(alice, bob))

    row = wait_until(lambda: inbox_row(stack, event_id), 30, what="the inbox row")
    agent_id, sender_id, sender_name, status, content, conversation = row.split("|")
    assert (agent_id, sender_id, sender_name, status, content) == (bob, alice, "alice", "pending", "hello bob")
    assert stack.sql("SELECT count(*) FROM conversations") == "1"
    assert stack.sql("SELECT id || '|' || kind || '|' || agent_low || '|' || agent_high || '|' || tenant_id"
                     " FROM conversations") == "|".join([conversation, "agent_agent", *sorted([alice, bob]), w.tenant])
    assert stack.sql("SELECT conversation_id || '|' || role || '|' || sender_agent_id || '|' || sender_name"
                     f" || '|' || content FROM chat_messages WHERE id = '{event_id}'") == \
        f"{conversation}|user|{alice}|alice|hello bob"
    assert stack.sql("SELECT count(*) FROM chat_messages") == "1"
    assert stack.journaled(event_id)

    [announced] = received(stack, 1)
    ev = announced["event"]
    assert ev["type"] == "agentbus.message.received" and ev["id"] == derive(f"{event_id}:received")
    assert announced["key"] == pair_key(alice, bob) and announced["headers"]["ce_id"] == ev["id"]
    assert ev["data"] == {**data, "route": "inbox", "conversation_id": conversation}
    # The conversation's first message started a session (outgoing webhooks' session_started).
    [started] = events_of(stack, "agentbus.session.started", 1)
    assert started["event"]["id"] == derive(f"{event_id}:session_started")
    assert started["key"] == pair_key(alice, bob)
    assert started["event"]["data"] == {"tenant_id": w.tenant, "conversation_id": conversation,
                                        "kind": "agent_agent", "first_message_event_id": event_id,
                                        "agents": [data["sender"], data["target"]]}
    assert ev["source"] == "/agentbus/dispatcher" and ev["subject"] == bob
    assert dispatcher.metric("agentbus_dispatcher_routed_total", {"route": "inbox"}) == 1


def test_the_same_event_delivered_twice_is_stored_once(stack):
    dispatcher = stack.start("dispatcher")
    w = World(stack)
    alice, bob = w.agent("alice"), w.agent("bob")
    env = envelope(message(w.tenant, alice, "alice", bob, "openclaw_agent", "once"), subject=bob)
    key = pair_key(alice, bob)
    send(stack, env, key)
    send(stack, env, key)
    # Same key, same partition: once the next message is in, both copies were handled.
    later = send(stack, envelope(message(w.tenant, bob, "bob", alice, "openclaw_agent", "reply")), key)
    wait_until(lambda: inbox_row(stack, later), 30, what="the later message")
    wait_until(lambda: dispatcher.metric("agentbus_dispatcher_routed_total", {"route": "inbox"}) == 3, 10,
               what="three deliveries routed")
    assert stack.sql(f"SELECT count(*) FROM gateway_messages WHERE id = '{env['id']}'") == "1"
    assert stack.sql("SELECT count(*) FROM gateway_messages") == "2"
    assert stack.sql("SELECT count(*) FROM chat_messages") == "2"
    assert stack.sql("SELECT count(*) FROM conversations") == "1"
    assert stack.sql("SELECT count(DISTINCT conversation_id) FROM gateway_messages") == "1"
    assert stack.sql("SELECT count(*) FROM event_log") == "2"
    # Both deliveries announced the message under one id: consumers see one event.
    ids = [m["event"]["id"] for m in received(stack, 3)]
    assert sorted(ids) == sorted([derive(f"{env['id']}:received")] * 2 + [derive(f"{later}:received")])
    # One session, started by the first delivery; the redelivery publishes the same event.
    started = {m["event"]["id"] for m in events_of(stack, "agentbus.session.started", 5)}
    assert started == {derive(f"{env['id']}:session_started")}


def test_first_messages_both_ways_at_once_make_one_conversation(stack):
    # Two dispatchers, and each direction under its own key, so the two first messages of a
    # pair usually land on different partitions and run in parallel transactions.
    first, second = stack.start("dispatcher"), stack.start("dispatcher")
    w = World(stack)
    pairs = [(w.agent(f"a{i}"), w.agent(f"b{i}")) for i in range(8)]
    envs = []
    for a, b in pairs:
        envs.append((envelope(message(w.tenant, a, "a", b, "openclaw_agent", "hi b")), f"from:{a}"))
        envs.append((envelope(message(w.tenant, b, "b", a, "openclaw_agent", "hi a")), f"from:{b}"))
    threads = [threading.Thread(target=send, args=(stack, env, key)) for env, key in envs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wait_until(lambda: stack.sql("SELECT count(*) FROM gateway_messages") == str(len(envs)), 60,
               what="every inbox row")
    assert stack.sql("SELECT count(*) FROM conversations") == str(len(pairs))
    for a, b in pairs:
        low, high = sorted([a, b])
        conv = stack.sql(f"SELECT id FROM conversations WHERE agent_low = '{low}' AND agent_high = '{high}'")
        assert stack.sql("SELECT count(*) FROM gateway_messages WHERE conversation_id = "
                         f"'{conv}' AND agent_id IN ('{a}', '{b}')") == "2"
    # Both took part (16 keys over 12 partitions shared by two members).
    routed = [d.metric("agentbus_dispatcher_routed_total", {"route": "inbox"}) for d in (first, second)]
    assert all(n > 0 for n in routed) and sum(routed) >= len(envs), routed


def test_native_target_becomes_an_llm_request_keyed_by_conversation(stack):
    dispatcher = stack.start("dispatcher")
    w = World(stack)
    alice, nat = w.agent("alice"), w.agent("nat", "native")
    data = message(w.tenant, alice, "alice", nat, "native_agent", "what is 2+2?", target_name="nat")
    event_id = send(stack, envelope(data, subject=nat), pair_key(alice, nat))

    [req] = consume(stack, "agentbus.llm.requests", 1)
    conversation = stack.sql("SELECT id FROM conversations")
    ev = req["event"]
    assert ev["type"] == "agentbus.llm.request" and ev["id"] == derive(f"{event_id}:llm")
    assert req["key"] == pair_key(alice, nat)
    # message_event_id: the worker stores the user turn under it, so history holds it once.
    assert ev["data"] == {**data, "conversation_id": conversation, "message_event_id": event_id}
    assert stack.sql(f"SELECT agent_low || '|' || agent_high FROM conversations WHERE id = '{conversation}'") \
        == "|".join(sorted([alice, nat]))
    # The native agent has no inbox: the LLM worker answers for it.
    assert stack.sql("SELECT count(*) FROM gateway_messages") == "0"
    assert stack.journaled(event_id)
    [announced] = received(stack, 1)
    assert announced["event"]["id"] == derive(f"{event_id}:received")
    assert announced["event"]["data"] == {**data, "route": "llm", "conversation_id": conversation}
    assert dispatcher.metric("agentbus_dispatcher_routed_total", {"route": "llm"}) == 1


def test_hops_and_the_canonical_message_event_id_pass_through_to_the_llm_request(stack):
    stack.start("dispatcher")
    w = World(stack)
    alice, nat = w.agent("alice"), w.agent("nat", "native")
    key = pair_key(alice, nat)
    sent = []
    for hops in (0, 7, 1000):
        data = message(w.tenant, alice, "alice", nat, "native_agent", f"hop {hops}", target_name="nat")
        data["hops"] = hops
        event_id = str(uuid.uuid4()).upper()  # the event's spelling; the request names it canonically
        sent.append((send(stack, envelope(data, event_id=event_id), key), data))
    requests = consume(stack, "agentbus.llm.requests", len(sent))
    assert len(requests) == len(sent)
    conversation = stack.sql("SELECT id FROM conversations")
    for req, (event_id, data) in zip(requests, sent):  # one key, one partition: in order
        ev = req["event"]
        assert ev["id"] == derive(f"{event_id.lower()}:llm")
        assert ev["data"] == {**data, "conversation_id": conversation, "message_event_id": event_id.lower()}
    announced = received(stack, len(sent))
    assert [r["event"]["data"]["hops"] for r in announced] == [0, 7, 1000]


def test_member_target_becomes_a_feishu_notification_keyed_by_member(stack):
    stack.start("dispatcher")
    w = World(stack)
    alice, mary = w.agent("alice"), w.member("mary")
    data = message(w.tenant, alice, "alice", mary, "member", "the build is green", target_name="mary")
    data["channel"] = "feishu"
    event_id = send(stack, envelope(data, subject=mary), f"member:{alice}:{mary}")

    [job] = consume(stack, "agentbus.notify", 1)
    ev = job["event"]
    assert ev["type"] == "agentbus.notify.feishu" and ev["id"] == derive(f"{event_id}:notify")
    assert job["key"] == f"member:{mary}" and ev["data"] == data
    [announced] = received(stack, 1)
    assert announced["key"] == f"member:{alice}:{mary}"
    assert announced["event"]["data"] == {**data, "route": "notify", "conversation_id": None}
    assert stack.journaled(event_id)
    assert stack.sql("SELECT count(*) FROM gateway_messages") == "0"


def test_malformed_messages_are_dead_lettered_with_a_reason_and_the_partition_flows_on(stack):
    stack.start("dispatcher")
    w = World(stack)
    alice, bob, nat = w.agent("alice"), w.agent("bob"), w.agent("nat", "native")
    good = message(w.tenant, alice, "alice", bob, "openclaw_agent", "fine")

    def variant(**changes):
        data = json.loads(json.dumps(good))
        for path, value in changes.items():
            obj, *rest = path.split("__")
            target = data if not rest else data[obj]
            name = rest[0] if rest else obj
            if value is KeyError:
                del target[name]
            else:
                target[name] = value
        return data

    cases = [
        (envelope(variant(content=KeyError)), "data.content is missing"),
        (envelope(variant(content=42)), "data.content must be a string"),
        (envelope(variant(tenant_id="not-a-uuid")), "data.tenant_id \"not-a-uuid\" is not a UUID"),
        (envelope(variant(sender__id=7)), "data.sender.id must be a string"),
        (envelope(variant(sender__name="")), "data.sender.name is empty"),
        (envelope(variant(sender__type="member")), "data.sender.type must be \"agent\", \"system\" or \"webhook\""),
        (envelope(variant(hops="x")), "data.hops must be an integer between 0 and 1000"),
        (envelope(variant(hops=-1)), "data.hops must be an integer between 0 and 1000"),
        (envelope(variant(hops=1001)), "data.hops must be an integer between 0 and 1000"),
        (envelope(variant(hops=1.5)), "data.hops must be an integer between 0 and 1000"),
        (envelope(variant(hops=True)), "data.hops must be an integer between 0 and 1000"),
        (envelope(variant(sender={"type": "system", "name": ""})), "data.sender.name is empty"),
        (envelope(variant(sender={"type": "system"})), "data.sender.name is missing"),
        (envelope(variant(sender={"type": "system", "id": alice, "name": "agentbus"})),
         "a system sender has no data.sender.id"),
        (envelope(variant(sender={"type": "webhook", "id": alice, "name": "webhook x"}, session_key="s")),
         "a webhook sender has no data.sender.id"),
        (envelope(variant(sender={"type": "webhook", "name": "webhook x"})), "data.session_key is missing"),
        (envelope(variant(sender={"type": "webhook", "name": "webhook x"}, session_key="")),
         "data.session_key must be 1 to 300 bytes"),
        (envelope(notice(w.tenant, bob, "hi", conversation="nope")), "data.conversation_id \"nope\" is not a UUID"),
        (envelope(notice(w.tenant, bob, "hi", conversation=7)), "data.conversation_id must be a string"),
        (envelope(variant(target=KeyError)), "data.target must be an object"),
        (envelope(variant(target__type="robot")), "data.target.type \"robot\" is not one of"),
        (envelope(variant(target__id=bob[:-1])), "is not a UUID"),
        (envelope(variant(channel="sms")), "data.channel must be"),
        (envelope(variant(target__id=alice)), "sends to itself"),
        (envelope("just text"), "data must be a JSON object"),
        (envelope(good, event_id="evt-1"), "the event id \"evt-1\" is not a UUID"),
        (envelope(variant(target__id=nat)), f"target agent {nat} is a native agent, not openclaw"),
        (envelope(variant(target__id=str(uuid.uuid4()))), "does not exist in tenant"),
    ]
    key = pair_key(alice, bob)
    for env, _ in cases:
        send(stack, env, key)
    after = send(stack, envelope(good), key)  # same key, same partition, after all of them

    wait_until(lambda: inbox_row(stack, after), 30, what="the good message behind the bad ones")
    dead = consume(stack, "agentbus.ingress.dlq", len(cases))
    assert len(dead) == len(cases)
    by_id = {d["event"]["id"]: d for d in dead}
    for env, expected in cases:
        d = by_id[env["id"]]
        assert expected in d["headers"]["x-agentbus-dlq-reason"], (expected, d["headers"])
        assert d["headers"]["x-agentbus-dlq-service"] == "agentbus-dispatcher"
        assert d["key"] == key
    # Nothing of a dead-lettered message was written, not even its journal entry.
    assert stack.sql("SELECT count(*) FROM gateway_messages") == "1"
    assert stack.sql("SELECT count(*) FROM event_log") == "1"
    assert stack.sql("SELECT count(*) FROM conversations") == "1"


def poll(stack, agent, wait=5):
    """The agent's gateway poll, with a key issued for it, as an OpenClaw agent would."""
    status, body, _ = http("POST", f"{stack.api}/api/gateway/agents/{agent}/api-key", b"",
                           {"Authorization": "Bearer " + ADMIN_TOKEN})
    assert status == 201, body
    status, body, _ = http("GET", f"{stack.api}/api/gateway/poll?wait={wait}", None,
                           {"X-Api-Key": body["api_key"]})
    assert status == 200, body
    return body["messages"]


def test_a_system_notice_lands_in_the_inbox_as_no_turn_of_the_conversation(stack):
    stack.start("ingress")
    dispatcher = stack.start("dispatcher")
    w = World(stack)
    alice, bob = w.agent("alice"), w.agent("bob")
    first = send(stack, envelope(message(w.tenant, alice, "alice", bob, "openclaw_agent", "hello bob")),
                 pair_key(alice, bob))
    wait_until(lambda: inbox_row(stack, first), 30, what="alice's message")
    conversation = stack.sql("SELECT id FROM conversations")
    last_message_at = stack.sql("SELECT last_message_at FROM conversations")

    key = f"system:{bob}"
    # The conversation in any letter case names the same conversation.
    about = notice(w.tenant, bob, "nat could not answer your message", conversation=conversation.upper())
    loose = notice(w.tenant, bob, "a notice about nothing in particular")
    about_id, loose_id = send(stack, envelope(about, subject=bob), key), send(stack, envelope(loose), key)
    wait_until(lambda: in_inbox(stack, about_id) and in_inbox(stack, loose_id), 30, what="both notices")

    row = stack.sql("SELECT agent_id || '|' || coalesce(sender_agent_id::text, 'null') || '|'"
                    " || coalesce(sender_member_id::text, 'null') || '|' || sender_name || '|' || status"
                    " || '|' || coalesce(conversation_id::text, 'null') || '|' || content FROM gateway_messages"
                    f" WHERE id IN ('{about_id}', '{loose_id}') ORDER BY content")
    assert row.splitlines() == [f"{bob}|null|null|agentbus|pending|null|a notice about nothing in particular",
                                f"{bob}|null|null|agentbus|pending|{conversation}|nat could not answer your message"]
    # A notice is no turn of the conversation: no chat message, and the conversation stands still.
    assert stack.sql("SELECT count(*) FROM chat_messages") == "1"
    assert stack.sql("SELECT count(*) FROM conversations") == "1"
    assert stack.sql("SELECT last_message_at FROM conversations") == last_message_at
    assert stack.journaled(about_id) and stack.journaled(loose_id)

    messages = {m["content"]: m for m in poll(stack, bob)}
    assert set(messages) == {"hello bob", about["content"], loose["content"]}
    shown = messages[about["content"]]
    assert shown["sender_agent_name"] == "agentbus" and shown["sender_user_name"] is None
    assert shown["conversation_id"] == conversation
    assert [(h["role"], h["sender_name"], h["content"]) for h in shown["history"]] == [("user", "alice", "hello bob")]
    assert messages[loose["content"]]["sender_agent_name"] == "agentbus"
    assert messages[loose["content"]]["conversation_id"] is None

    events = received(stack, 3)
    by_id = {e["event"]["id"]: e for e in events}
    announced = by_id[derive(f"{about_id}:received")]
    assert announced["key"] == key and announced["event"]["subject"] == bob
    assert announced["event"]["data"] == {**about, "route": "inbox", "conversation_id": conversation}
    assert by_id[derive(f"{loose_id}:received")]["event"]["data"] == {**loose, "route": "inbox",
                                                                       "conversation_id": None}
    assert dispatcher.metric("agentbus_dispatcher_routed_total", {"route": "inbox"}) == 3


def test_a_redelivered_system_notice_makes_one_inbox_row(stack):
    dispatcher = stack.start("dispatcher")
    w = World(stack)
    bob = w.agent("bob")
    key = f"system:{bob}"
    env = envelope(notice(w.tenant, bob, "once"))
    send(stack, env, key)
    send(stack, env, key)
    later = send(stack, envelope(notice(w.tenant, bob, "later")), key)  # same key: after both copies
    wait_until(lambda: in_inbox(stack, later), 30, what="the later notice")
    wait_until(lambda: dispatcher.metric("agentbus_dispatcher_routed_total", {"route": "inbox"}) == 3, 10,
               what="three deliveries routed")
    assert stack.sql(f"SELECT count(*) FROM gateway_messages WHERE id = '{env['id']}'") == "1"
    assert stack.sql("SELECT count(*) FROM gateway_messages") == "2"
    assert stack.sql("SELECT count(*) FROM event_log") == "2"
    assert stack.sql("SELECT count(*) FROM chat_messages") == "0"
    assert stack.sql("SELECT count(*) FROM conversations") == "0"
    ids = [m["event"]["id"] for m in received(stack, 3)]
    assert sorted(ids) == sorted([derive(f"{env['id']}:received")] * 2 + [derive(f"{later}:received")])


def test_a_system_sender_writes_only_to_an_openclaw_agent_in_its_own_conversations(stack):
    stack.start("dispatcher")
    w = World(stack)
    alice, bob, carol = w.agent("alice"), w.agent("bob"), w.agent("carol")
    nat, mary = w.agent("nat", "native"), w.member("mary")
    eve, mallory = w.agent("eve", tenant=w.other_tenant), w.agent("mallory", tenant=w.other_tenant)
    theirs = w.conversation(eve, mallory, tenant=w.other_tenant)
    not_bobs = w.conversation(alice, carol)
    bobs = w.conversation(alice, bob)
    unknown = str(uuid.uuid4())

    cases = [
        (notice(w.tenant, nat, "hi", target_type="native_agent"), "a system sender may only write to an openclaw_agent"),
        (notice(w.tenant, mary, "hi", target_type="member"), "a system sender may only write to an openclaw_agent"),
        (notice(w.tenant, nat, "hi"), f"target agent {nat} is a native agent, not openclaw"),
        (notice(w.tenant, eve, "hi"), f"target agent {eve} does not exist in tenant {w.tenant}"),
        (notice(w.tenant, bob, "hi", conversation=theirs),
         f"data.conversation_id {theirs} is not a conversation of agent {bob} in tenant {w.tenant}"),
        (notice(w.tenant, bob, "hi", conversation=not_bobs),
         f"data.conversation_id {not_bobs} is not a conversation of agent {bob} in tenant {w.tenant}"),
        (notice(w.tenant, bob, "hi", conversation=unknown), f"data.conversation_id {unknown} is not a conversation"),
        # Fine: eve's own conversation, in her tenant, in any letter case.
        (notice(w.other_tenant, eve, "hi", conversation=theirs.upper()), None),
    ]
    key = f"system:{bob}"
    envs = [envelope(data) for data, _ in cases]
    for env in envs:
        send(stack, env, key)
    good = send(stack, envelope(notice(w.tenant, bob, "fine", conversation=bobs)), key)  # after them all

    wait_until(lambda: in_inbox(stack, good), 30, what="the good notice behind the bad ones")
    bad = [(env, expected) for env, (_, expected) in zip(envs, cases) if expected]
    dead = consume(stack, "agentbus.ingress.dlq", len(bad))
    assert len(dead) == len(bad)
    by_id = {d["event"]["id"]: d["headers"]["x-agentbus-dlq-reason"] for d in dead}
    for env, expected in bad:
        assert expected in by_id[env["id"]], (expected, by_id[env["id"]])
    # Nothing of a dead-lettered notice was written; the two good ones were.
    assert stack.sql("SELECT string_agg(agent_id || ':' || conversation_id, ',' ORDER BY content)"
                     " FROM gateway_messages") == f"{bob}:{bobs},{eve}:{theirs}"
    assert stack.sql("SELECT count(*) FROM event_log") == "2"
    assert stack.sql("SELECT count(*) FROM chat_messages") == "0"


def test_agents_of_another_tenant_or_deleted_are_refused(stack):
    stack.start("dispatcher")
    w = World(stack)
    alice, bob = w.agent("alice"), w.agent("bob")
    eve = w.agent("eve", tenant=w.other_tenant)
    # eve writes to bob claiming bob's tenant; alice writes to eve; eve names her own tenant
    # but a target in another.
    cases = [
        (message(w.tenant, eve, "eve", bob, "openclaw_agent", "let me in"), f"sender agent {eve} does not exist in tenant"),
        (message(w.tenant, alice, "alice", eve, "openclaw_agent", "hi"), f"target agent {eve} does not exist in tenant"),
        (message(w.other_tenant, eve, "eve", bob, "openclaw_agent", "hi"), f"target agent {bob} does not exist in tenant"),
    ]
    gone = w.agent("gone")
    stack.sql(f"DELETE FROM agents WHERE id = '{gone}'")
    cases.append((message(w.tenant, gone, "gone", bob, "openclaw_agent", "still there?"),
                  f"sender agent {gone} does not exist in tenant"))
    envs = [envelope(data) for data, _ in cases]
    for env in envs:
        send(stack, env, "cross-tenant")
    dead = consume(stack, "agentbus.ingress.dlq", len(cases))
    by_id = {d["event"]["id"]: d["headers"]["x-agentbus-dlq-reason"] for d in dead}
    for env, (_, expected) in zip(envs, cases):
        assert expected in by_id[env["id"]], by_id
    assert stack.sql("SELECT count(*) FROM gateway_messages") == "0"
    assert stack.sql("SELECT count(*) FROM conversations") == "0"
    assert stack.sql("SELECT count(*) FROM chat_messages") == "0"


def test_a_killed_dispatcher_loses_nothing(stack):
    dispatcher = stack.start("dispatcher")
    w = World(stack)
    agents = [w.agent(f"agent{i}") for i in range(4)]
    envs = []
    for i in range(50):
        sender, target = agents[i % 4], agents[(i % 4 + 1 + (i // 4) % 3) % 4]  # never itself
        data = message(w.tenant, sender, f"agent{i % 4}", target, "openclaw_agent", f"message {i}")
        envs.append((envelope(data), pair_key(sender, target)))
    done = threading.Event()

    def publish_all():
        for env, key in envs:
            send(stack, env, key)
        done.set()

    publisher = threading.Thread(target=publish_all)
    publisher.start()
    wait_until(lambda: int(stack.sql("SELECT count(*) FROM gateway_messages")) >= 5, 60,
               interval=0.05, what="the first messages routed")
    dispatcher.proc.kill()  # SIGKILL: no drain, no offset commit
    dispatcher.proc.wait()
    dispatcher.log.close()
    stored_before = int(stack.sql("SELECT count(*) FROM gateway_messages"))
    assert stored_before < 50, "the kill came too late to test anything"
    publisher.join()
    restarted = stack.start("dispatcher")

    ids = [env["id"] for env, _ in envs]
    id_list = ",".join(f"'{i}'" for i in ids)
    wait_until(lambda: stack.sql(f"SELECT count(*) FROM gateway_messages WHERE id IN ({id_list})") == "50",
               90, what="all 50 inbox rows")
    time.sleep(1)  # let any redelivered duplicates land, if they would write anything
    per_id = stack.sql("SELECT string_agg(n::text, ',') FROM (SELECT count(*) AS n FROM gateway_messages"
                       " GROUP BY id) c")
    assert per_id == ",".join(["1"] * 50)
    assert stack.sql("SELECT count(*) FROM chat_messages") == "50"
    assert stack.sql("SELECT count(*) FROM event_log") == "50"
    assert stack.sql("SELECT count(*) FROM conversations") == \
        str(len({key for _, key in envs}))
    # The new dispatcher routed at least everything the killed one had not stored (more when
    # offsets of stored messages were not committed yet: those came again and wrote nothing).
    routed = restarted.metric("agentbus_dispatcher_routed_total", {"route": "inbox"})
    assert routed >= 50 - stored_before, (routed, stored_before)
    print(f"stored before the kill: {stored_before}; routed after the restart: {routed}")


def test_postgres_outage_makes_messages_wait_not_dead_letter(stack):
    # Its own PostgreSQL, so the test can stop it (not under tmp_path: see test_faults).
    pg_dir = tempfile.mkdtemp(prefix="agentbus-e2e-pg-route-")
    port = free_port()
    pg = os.path.join(ROOT, "scripts", "pg.sh")
    url = subprocess.run([pg, "start", pg_dir, str(port)], check=True, capture_output=True,
                         text=True).stdout.strip()
    try:
        dispatcher = stack.start("dispatcher", DATABASE_URL=url)
        stack.database_url = url  # stack.sql() now talks to this cluster
        w = World(stack)
        alice, bob = w.agent("alice"), w.agent("bob")
        subprocess.run([pg, "stop", pg_dir], check=True, capture_output=True)
        data = message(w.tenant, alice, "alice", bob, "openclaw_agent", "are you there?")
        event_id = send(stack, envelope(data), pair_key(alice, bob))
        wait_until(lambda: dispatcher.metric("agentbus_dispatcher_events_total", {"outcome": "unavailable"}) >= 2,
                   30, what="retries while PostgreSQL is down")
        subprocess.run([pg, "start", pg_dir, str(port)], check=True, capture_output=True)
        row = wait_until(lambda: inbox_row(stack, event_id), 60, what="the inbox row after the outage")
        assert row.startswith(f"{bob}|{alice}|alice|pending|are you there?|")
        assert consume(stack, "agentbus.ingress.dlq", 1, timeout_ms=3000) == []
        assert dispatcher.stop() == 0
    finally:
        subprocess.run([pg, "stop", pg_dir], check=False, capture_output=True)
        shutil.rmtree(pg_dir, ignore_errors=True)
