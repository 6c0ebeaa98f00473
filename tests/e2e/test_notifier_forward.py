"""The notifier's two deliveries for incoming webhooks, end to end on the real binaries, with
jobs produced on agentbus.notify as the dispatcher will produce them:

- a forward (agentbus.notify.webhook with data.forward): the received body sent on to the URL
  the handler names, signed per Standard Webhooks when a secret comes with it, and otherwise
  treated as an outgoing endpoint's delivery (SSRF guard, retries, dead letters, replay,
  breaker), under the endpoint id "forward:<hook id>";
- a message to a Feishu group chat (agentbus.notify.feishu with target.type "chat"), sent with
  receive_id_type=chat_id through the tenant's app.
"""
import json
import time
import uuid

import pytest

from conftest import ADMIN_TOKEN, http, wait_until
from test_notifier import APP_ID, APP_SECRET, LOOPBACK, SECRET, Fake, World, posted

ADMIN = {"Authorization": "Bearer " + ADMIN_TOKEN}


@pytest.fixture
def receiver():
    f = Fake("webhook_receiver.py", "--secret", SECRET)
    yield f
    f.close()


def now_rfc3339():
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def produce_job(stack, type_, data, key):
    """Puts a delivery job on agentbus.notify, as the dispatcher does; its id (the delivery id)."""
    ev = {"specversion": "1.0", "id": str(uuid.uuid4()), "type": type_, "source": "/agentbus/dispatcher",
          "time": now_rfc3339(), "datacontenttype": "application/json", "data": data}
    stack.broker.produce(stack.broker.topic("agentbus.notify"), json.dumps(ev), key=key)
    return ev["id"]


def forward(w, hook, url, payload, **extra):
    """A forward job for hook to url (extra: method, secret, timeout_ms)."""
    data = {"forward": {"hook_id": hook, "url": url, **extra}, "event": "webhook_forward",
            "tenant_id": w.tenant, "payload": payload}
    return produce_job(w.stack, "agentbus.notify.webhook", data, "forward:" + hook)


def chat_message(w, chat_id, content, sender=None):
    data = {"tenant_id": w.tenant, "target": {"type": "chat", "id": chat_id, "name": "ops"},
            "content": content}
    if sender:
        data["sender"] = {"type": "agent", "id": sender, "name": "Alice"}
    return produce_job(w.stack, "agentbus.notify.feishu", data, "chat:" + chat_id)


# ---- forwards ----

def test_a_forward_reaches_its_url_with_the_body_as_sent_and_signed(stack, receiver):
    w = World(stack, notifier_env=LOOPBACK)
    payload = {"alert": "disk full", "host": "db-1", "values": [91.5, 97, None],
               "nested": {"ok": False, "note": "磁盘已满"}}
    job = forward(w, "alerts-relay", receiver.url + "/in", payload, secret=SECRET, timeout_ms=5000)
    [d] = wait_until(lambda: receiver.get("/_fake/deliveries"), 30, 0.2, "the forward")
    assert d["method"] == "POST" and d["path"] == "/in"
    assert d["body"] == payload
    assert d["verified"] is True  # webhook-id, webhook-timestamp, webhook-signature under SECRET
    assert d["headers"]["webhook-id"] == job
    assert d["headers"]["content-type"] == "application/json"
    [row] = w.wait_attempts(lambda a: len(a) == 1, "the attempt row")
    assert (row["dest"], row["outcome"], row["status"]) == ("forward:alerts-relay", "delivered", 200)
    [ev] = w.events("agentbus.notify.delivered", 1)
    data = ev["data"]
    assert data["delivery_id"] == job and data["kind"] == "webhook"
    assert data["endpoint_id"] == "forward:alerts-relay" and data["hook_id"] == "alerts-relay"
    assert data["event"] == "webhook_forward" and data["tenant_id"] == w.tenant
    assert SECRET not in w.notifier.logs()


def test_a_forward_without_a_secret_goes_unsigned_with_its_method_and_any_json(stack):
    receiver = Fake("webhook_receiver.py")  # checks nothing, records everything
    try:
        w = World(stack, notifier_env=LOOPBACK)
        forward(w, "put-hook", receiver.url + "/put", ["a", 1, {"b": None}], method="PUT")
        forward(w, "text-hook", receiver.url + "/text", "just a string")
        got = wait_until(lambda: len(receiver.get("/_fake/deliveries")) == 2 and receiver.get("/_fake/deliveries"),
                         30, 0.2, "two forwards")
        by_path = {d["path"]: d for d in got}
        assert by_path["/put"]["method"] == "PUT" and by_path["/put"]["body"] == ["a", 1, {"b": None}]
        assert by_path["/text"]["body"] == "just a string"
        for d in got:
            assert "webhook-signature" not in d["headers"]
            assert d["headers"]["webhook-id"] and d["headers"]["webhook-timestamp"]
        rows = w.wait_attempts(lambda a: len(a) == 2, "two rows")
        assert {r["dest"] for r in rows} == {"forward:put-hook", "forward:text-hook"}
    finally:
        receiver.close()


def test_a_forward_to_a_private_address_is_refused_and_dead_lettered(stack, receiver):
    w = World(stack)  # no allow_networks: loopback is refused too
    targets = {"loopback": receiver.url + "/in", "private": "http://10.255.255.1/in",
               "metadata": "http://169.254.169.254/latest/meta-data/"}
    jobs = {forward(w, hook, url, {"x": 1}, secret=SECRET): hook for hook, url in targets.items()}
    rows = w.wait_attempts(lambda a: len(a) == 3, "three attempt rows")
    for r in rows:
        assert r["outcome"] == "failed" and r["code"] == "address_refused", r
        assert r["attempt"] == 1  # permanent: no retry
        assert r["dest"] == "forward:" + jobs[r["id"]]
    assert receiver.get("/_fake/requests") == []
    dead = json.loads(stack.sql("SELECT json_agg(json_build_object('id', id, 'endpoint_id', endpoint_id,"
                                " 'kind', kind, 'code', code, 'attempts', attempts)) FROM notify_dead_letters"))
    assert {(d["endpoint_id"], d["kind"], d["code"], d["attempts"]) for d in dead} == {
        ("forward:" + h, "webhook", "address_refused", 1) for h in targets}
    failed = w.events("agentbus.notify.failed", 3)
    assert {(e["data"]["delivery_id"], e["data"]["endpoint_id"], e["data"]["code"]) for e in failed} == {
        (job, "forward:" + hook, "address_refused") for job, hook in jobs.items()}
    dlq = stack.broker.consume(stack.broker.topic("agentbus.notify.dlq"), 3)
    assert {json.loads(m["value"])["id"] for m in dlq} == set(jobs)
    status, listed, _ = http("GET", stack.api + "/api/admin/dead-letters?endpoint=forward:metadata", None, ADMIN)
    assert status == 200 and [d["endpoint_id"] for d in listed["dead_letters"]] == ["forward:metadata"]


def test_a_forward_answered_503_is_retried_then_delivered(stack, receiver):
    w = World(stack, notifier_env=LOOPBACK)
    receiver.post("/_fake/behaviour", {"path": "/in", "mode": "status", "status": 503, "count": 1})
    job = forward(w, "flaky", receiver.url + "/in", {"n": 1}, secret=SECRET)
    rows = w.wait_attempts(lambda a: any(r["outcome"] == "delivered" for r in a), "the retry delivered")
    assert [(r["attempt"], r["outcome"], r["code"]) for r in rows] == [(1, "retry", "http_503"),
                                                                      (2, "delivered", "")]
    tries = receiver.get("/_fake/requests?path=/in")
    assert [t["status"] for t in tries] == [503, 200]
    assert {t["headers"]["webhook-id"] for t in tries} == {job}  # the same id on every attempt
    assert all(t["verified"] is True and t["body"] == {"n": 1} for t in tries)
    assert tries[1]["time"] - tries[0]["time"] >= 0.25  # the notifier's schedule (300 ms, jittered)
    # The retry went through agentbus.notify.retry with the forward inside its job.
    [retry] = stack.broker.consume(stack.broker.topic("agentbus.notify.retry"), 1)
    data = json.loads(retry["value"])["data"]
    assert data["attempt"] == 2 and data["job"]["data"]["forward"]["url"] == receiver.url + "/in"


def test_a_forward_answered_410_fails_alone_and_replays(stack, receiver):
    w = World(stack, notifier_env=LOOPBACK)
    receiver.post("/_fake/behaviour", {"path": "/in", "mode": "gone", "count": 1})
    job = forward(w, "gone-hook", receiver.url + "/in", {"n": 1}, secret=SECRET)
    [row] = w.wait_attempts(lambda a: len(a) == 1, "the 410")
    assert (row["outcome"], row["code"], row["attempt"]) == ("failed", "http_410", 1)  # permanent
    # No endpoint to disable: no state row, no endpoint_disabled event, the next one goes.
    assert stack.sql("SELECT count(*) FROM webhook_endpoint_state WHERE disabled_at IS NOT NULL") == "0"
    second = forward(w, "gone-hook", receiver.url + "/in", {"n": 2}, secret=SECRET)
    wait_until(lambda: [d["headers"]["webhook-id"] for d in receiver.get("/_fake/deliveries")] == [second],
               30, 0.2, "the next forward delivered")
    msgs = stack.broker.consume(stack.broker.topic("agentbus.events"), 1000, idle_ms=1000)
    assert "agentbus.notify.endpoint_disabled" not in {json.loads(m["value"])["type"] for m in msgs}
    # The dead letter replays: the same job, the same webhook-id.
    status, body, _ = http("POST", stack.api + f"/api/admin/dead-letters/{job}/replay", b"", ADMIN)
    assert status == 202, body
    wait_until(lambda: job in [d["headers"]["webhook-id"] for d in receiver.get("/_fake/deliveries")],
               30, 0.2, "the replay delivered")
    [replayed] = [d for d in receiver.get("/_fake/deliveries") if d["headers"]["webhook-id"] == job]
    assert replayed["verified"] is True and replayed["body"] == {"n": 1}


def test_a_failing_forward_opens_its_own_breaker(stack, receiver):
    w = World(stack, notifier_env=dict(
        LOOPBACK, AGENTBUS_NOTIFIER_RETRY_SCHEDULE_MS=",".join(["200"] * 10),
        AGENTBUS_NOTIFIER_BREAKER_THRESHOLD="2", AGENTBUS_NOTIFIER_BREAKER_COOLDOWN_MS="1500"))
    receiver.post("/_fake/behaviour", {"path": "/in", "mode": "status", "status": 500})
    jobs = [forward(w, "breaky", receiver.url + "/in", {"n": i}, secret=SECRET) for i in range(3)]
    [failing] = w.events("agentbus.notify.endpoint_failing", 1)
    assert failing["data"]["endpoint_id"] == "forward:breaky"
    assert w.notifier.metric("agentbus_notify_endpoint_failing", {"endpoint": "forward:breaky"}) == 1
    assert w.wait_attempts(lambda a: any(r["outcome"] == "deferred" for r in a), "a deferral")
    receiver.post("/_fake/behaviour", {"path": "/in", "mode": "ok", "replace": True})
    wait_until(lambda: {d["headers"]["webhook-id"] for d in receiver.get("/_fake/deliveries")} == set(jobs),
               30, 0.3, "all three delivered after the probe")
    [recovered] = w.events("agentbus.notify.endpoint_recovered", 1)
    assert recovered["data"]["endpoint_id"] == "forward:breaky"
    assert w.notifier.metric("agentbus_notify_endpoint_failing", {"endpoint": "forward:breaky"}) == 0


def test_a_malformed_forward_is_dead_lettered_with_its_reason(stack, receiver):
    w = World(stack, notifier_env=LOOPBACK)
    forward(w, "bad", "ftp://relay.example.com/in", {})
    forward(w, "bad", "https://user:pw@relay.example.com/in", {})
    forward(w, "bad", receiver.url + "/in", {}, method="GET")
    forward(w, "bad", receiver.url + "/in", {}, secret="not-a-whsec")
    good = forward(w, "good", receiver.url + "/in", {"still": "here"}, secret=SECRET)
    wait_until(lambda: receiver.get("/_fake/deliveries"), 30, 0.2, "the good forward")
    dead = stack.broker.consume(stack.broker.topic("agentbus.notify.dlq"), 4)
    reasons = " | ".join(d["headers"]["x-agentbus-dlq-reason"] for d in dead)
    for why in ("url must be", "url must be", "POST or PUT", "whsec_"):
        assert why in reasons, reasons
    assert [d["headers"]["webhook-id"] for d in receiver.get("/_fake/deliveries")] == [good]
    assert len(receiver.get("/_fake/requests")) == 1


# ---- Feishu group chats ----

def test_a_message_to_a_group_chat_is_sent_with_receive_id_type_chat_id(stack):
    feishu = Fake("fake_feishu.py", "--app", f"{APP_ID}:{APP_SECRET}", "--chat", "oc_ops")
    try:
        w = World(stack, feishu)
        first = chat_message(w, "oc_ops", "disk full on db-1")
        chat_message(w, "oc_ops", "and on db-2", sender=w.alice)
        wait_until(lambda: len(posted(feishu)) == 2, 30, 0.2, "two chat messages")
        one, two = posted(feishu)
        assert (one["receive_id_type"], one["receive_id"]) == ("chat_id", "oc_ops")
        assert one["content"] == {"text": "disk full on db-1"}  # no agent: no prefix
        assert two["content"] == {"text": "[Alice] and on db-2"}  # the tenant's shared app, for Alice
        assert one["uuid"] and one["uuid"] != two["uuid"]
        sends = [r for r in feishu.get("/_fake/requests") if r["path"] == "/open-apis/im/v1/messages"]
        assert all(s["query"] == {"receive_id_type": "chat_id"} for s in sends)
        rows = w.wait_attempts(lambda a: len(a) == 2, "two rows")
        assert {(r["dest"], r["outcome"]) for r in rows} == {("feishu:chat:oc_ops", "delivered")}
        delivered = w.events("agentbus.notify.delivered", 2)
        [ev] = [e for e in delivered if e["data"]["delivery_id"] == first]
        assert ev["data"]["chat_id"] == "oc_ops" and ev["data"]["receive_id_type"] == "chat_id"
        assert ev["data"]["message_id"] == one["message_id"] and "member_id" not in ev["data"]
    finally:
        feishu.close()


def test_a_chat_feishu_refuses_or_a_tenant_without_an_app_is_a_dead_letter(stack):
    feishu = Fake("fake_feishu.py", "--app", f"{APP_ID}:{APP_SECRET}", "--chat", "oc_ops")
    try:
        w = World(stack, feishu)
        outside = chat_message(w, "oc_elsewhere", "the bot is not in this group")
        [row] = w.wait_attempts(lambda a: len(a) == 1, "one row")
        assert (row["id"], row["outcome"], row["code"]) == (outside, "failed", "feishu_230002")
        other = stack.sql(f"INSERT INTO tenants (name) VALUES ('t-{uuid.uuid4().hex[:6]}') RETURNING id")
        data = {"tenant_id": other, "target": {"type": "chat", "id": "oc_ops"}, "content": "x"}
        lonely = produce_job(stack, "agentbus.notify.feishu", data, "chat:oc_ops")
        rows = w.wait_attempts(lambda a: len(a) == 2, "two rows")
        [row] = [r for r in rows if r["id"] == lonely]
        assert (row["outcome"], row["code"]) == ("failed", "no_channel")
        assert stack.sql("SELECT string_agg(destination || '|' || code, ',' ORDER BY code)"
                         " FROM notify_dead_letters") == "feishu:chat:oc_elsewhere|feishu_230002,feishu:chat:oc_ops|no_channel"
        assert posted(feishu) == []
    finally:
        feishu.close()
