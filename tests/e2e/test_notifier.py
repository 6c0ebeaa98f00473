"""The notifier end to end on the real binaries: an OpenClaw agent writes to a person through
the gateway and the fake Feishu (tests/fake_notify/fake_feishu.py) gets the message; events
fan out to outgoing webhooks, which a receiver (tests/fake_notify/webhook_receiver.py) checks
against Standard Webhooks signatures. Failures on cue: a send that times out after Feishu took
it, a token expiring mid-run, 429 with a reset, a user_id Feishu refuses, receivers failing
until the schedule runs out, a private address, a notifier killed with retries pending."""
import base64
import json
import os
import subprocess
import sys
import time
import uuid

import pytest

from conftest import ADMIN_TOKEN, ROOT, gateway_key, gateway_send, http, new_tenant, wait_until

FAKES = os.path.join(ROOT, "tests", "fake_notify")
APP_ID, APP_SECRET = "cli_test_app", "app-secret-" + uuid.uuid4().hex[:8]
SECRET = "whsec_" + base64.b64encode(os.urandom(32)).decode()
# Short waits, so schedules run in the test's time (the schedule's maths: test_retry.c).
FAST = {"AGENTBUS_NOTIFIER_RETRY_SCHEDULE_MS": "300,300", "AGENTBUS_NOTIFIER_REQUEST_TIMEOUT_MS": "1500"}
# The fakes listen on loopback, which the SSRF guard refuses unless allowed (Feishu's base
# URLs are guarded as much as webhooks).
LOOPBACK = {"AGENTBUS_NOTIFIER_ALLOW_NETWORKS": "127.0.0.1/32"}


class Fake:
    def __init__(self, script, *args):
        self.proc = subprocess.Popen([sys.executable, os.path.join(FAKES, script), "--port", "0", *args],
                                     stdout=subprocess.PIPE, text=True)
        self.port = int(self.proc.stdout.readline())
        self.url = f"http://127.0.0.1:{self.port}"

    def get(self, path):
        status, body, _ = http("GET", self.url + path)
        assert status == 200, body
        return body

    def post(self, path, body=None):
        status, out, _ = http("POST", self.url + path, json.dumps(body or {}).encode(),
                              {"Content-Type": "application/json"})
        assert status in (200, 204), out
        return out

    def close(self):
        self.proc.terminate()
        self.proc.wait(timeout=10)


@pytest.fixture
def feishu():
    f = Fake("fake_feishu.py", "--app", f"{APP_ID}:{APP_SECRET}", "--user", "u_mary:ou_mary",
             "--user", "u_tom:ou_tom")
    yield f
    f.close()


@pytest.fixture
def receiver():
    f = Fake("webhook_receiver.py", "--secret", SECRET)
    yield f
    f.close()


class World:
    """A tenant with OpenClaw agent Alice (with a gateway key) and a Feishu app."""

    def __init__(self, stack, feishu=None, webhooks=None, notifier_env=None, **member_ids):
        self.stack = stack
        hooks = {"AGENTBUS_WEBHOOKS": json.dumps({"outgoing": webhooks})} if webhooks else {}
        stack.start("ingress", **hooks)
        stack.start("dispatcher", **hooks)
        self.notifier_env = {**FAST, **hooks, **(LOOPBACK if feishu else {}), **(notifier_env or {})}
        self.notifier = stack.start("notifier", **self.notifier_env)
        self.tenant = new_tenant(stack)
        self.alice = stack.sql(f"INSERT INTO agents (tenant_id, name, type) VALUES ('{self.tenant}', 'Alice',"
                               f" 'openclaw') RETURNING id")
        self.key = gateway_key(stack, self.alice)
        if feishu is not None:
            stack.sql(f"INSERT INTO channel_configs (tenant_id, channel_type, app_id, app_secret, base_url)"
                      f" VALUES ('{self.tenant}', 'feishu', '{APP_ID}', '{APP_SECRET}', '{feishu.url}')")

    def member(self, name, user_id=None, open_id=None):
        vals = ", ".join("'%s'" % v if v else "NULL" for v in (self.tenant, name, user_id, open_id))
        return self.stack.sql("INSERT INTO org_members (tenant_id, name, feishu_user_id, feishu_open_id)"
                              f" VALUES ({vals}) RETURNING id")

    def send(self, target, content):
        return gateway_send(self.stack, self.key, target, content)

    def attempts(self, where="true"):
        rows = self.stack.sql("SELECT coalesce(json_agg(json_build_object('id', delivery_id, 'attempt', attempt,"
                              " 'outcome', outcome, 'code', code, 'status', status, 'dest', destination,"
                              " 'excerpt', response_excerpt, 'error', error) ORDER BY delivery_id, attempt), '[]')"
                              f" FROM notify_attempts WHERE {where}")
        return json.loads(rows)

    def wait_attempts(self, pred, what, timeout=30):
        return wait_until(lambda: pred(self.attempts()) and self.attempts(), timeout, 0.2, what)

    def events(self, type_, want, timeout=20):
        found = []
        deadline = time.time() + timeout
        while time.time() < deadline:
            msgs = self.stack.broker.consume(self.stack.broker.topic("agentbus.events"), 100000,
                                             timeout_ms=15000, idle_ms=1000)
            found = [e for e in (json.loads(m["value"]) for m in msgs) if e["type"] == type_]
            if len(found) >= want:
                return found
            time.sleep(0.3)
        raise AssertionError(f"{len(found)} of {want} {type_} events")


def posted(feishu):
    return feishu.get("/_fake/messages")


def token_calls(feishu):
    return [r for r in feishu.get("/_fake/requests") if r["path"].endswith("/tenant_access_token/internal")]


# ---- Feishu ----

def test_a_person_gets_one_feishu_message_and_the_token_is_reused(stack, feishu):
    w = World(stack, feishu)
    w.member("Mary", "u_mary", "ou_mary")
    w.send("Mary", "the build is green")
    w.send("Mary", "and deployed")
    wait_until(lambda: len(posted(feishu)) == 2, 30, 0.2, "two Feishu messages")
    first, second = posted(feishu)
    assert (first["receive_id_type"], first["receive_id"]) == ("user_id", "u_mary")
    assert first["content"] == {"text": "[Alice] the build is green"}  # the tenant's shared app
    assert second["content"] == {"text": "[Alice] and deployed"}
    assert first["uuid"] and first["uuid"] != second["uuid"]
    assert len(token_calls(feishu)) == 1  # cached for both sends
    rows = w.wait_attempts(lambda a: len(a) == 2, "two attempt rows")
    assert {r["outcome"] for r in rows} == {"delivered"} and all(r["status"] == 200 for r in rows)
    delivered = w.events("agentbus.notify.delivered", 2)
    assert {e["data"]["message_id"] for e in delivered} == {m["message_id"] for m in posted(feishu)}
    assert APP_SECRET not in w.notifier.logs()


def test_a_send_that_timed_out_after_feishu_took_it_is_not_posted_twice(stack, feishu):
    w = World(stack, feishu)
    w.member("Mary", "u_mary", "ou_mary")
    feishu.post("/_fake/fail", {"mode": "timeout_after_accept", "seconds": 3})
    w.send("Mary", "exactly once")
    rows = w.wait_attempts(lambda a: any(r["outcome"] == "delivered" for r in a), "the retry delivered")
    assert [r["outcome"] for r in rows] == ["retry", "delivered"]
    assert rows[0]["code"] == "total_timeout"
    sends = [r for r in feishu.get("/_fake/requests") if r["path"] == "/open-apis/im/v1/messages"]
    assert len(sends) == 2 and sends[0]["body"]["uuid"] == sends[1]["body"]["uuid"]
    assert len(posted(feishu)) == 1  # Feishu's uuid dedup: the retry did not post again


def test_an_expired_token_is_refreshed_once_and_the_send_goes_again(stack, feishu):
    w = World(stack, feishu)
    w.member("Mary", "u_mary", "ou_mary")
    w.send("Mary", "one")
    wait_until(lambda: len(posted(feishu)) == 1, 30, 0.2, "the first message")
    feishu.post("/_fake/expire_tokens")
    w.send("Mary", "two")
    wait_until(lambda: len(posted(feishu)) == 2, 30, 0.2, "the second message")
    assert len(token_calls(feishu)) == 2
    rows = w.wait_attempts(lambda a: len(a) == 2, "two rows")
    assert [r["outcome"] for r in rows].count("delivered") == 2 and all(r["attempt"] == 1 for r in rows)


def test_a_rate_limited_send_waits_for_the_reset(stack, feishu):
    w = World(stack, feishu)
    w.member("Mary", "u_mary", "ou_mary")
    feishu.post("/_fake/fail", {"mode": "rate_limit", "seconds": 2})
    w.send("Mary", "after the reset")
    wait_until(lambda: len(posted(feishu)) == 1, 30, 0.2, "the message")
    sends = [r for r in feishu.get("/_fake/requests") if r["path"] == "/open-apis/im/v1/messages"]
    assert len(sends) == 2 and sends[1]["time"] - sends[0]["time"] >= 1.9
    rows = w.wait_attempts(lambda a: len(a) == 1, "one row")
    assert rows[0]["outcome"] == "delivered" and rows[0]["attempt"] == 1  # a wait, not an attempt


def test_a_refused_user_id_falls_back_to_the_open_id(stack):
    feishu = Fake("fake_feishu.py", "--app", f"{APP_ID}:{APP_SECRET}", "--user", "u_mary:ou_mary",
                  "--reject-user-id")
    try:
        w = World(stack, feishu)
        w.member("Mary", "u_mary", "ou_mary")
        w.send("Mary", "via open_id")
        wait_until(lambda: len(posted(feishu)) == 1, 30, 0.2, "the message")
        [m] = posted(feishu)
        assert (m["receive_id_type"], m["receive_id"]) == ("open_id", "ou_mary")
        sends = [r for r in feishu.get("/_fake/requests") if r["path"] == "/open-apis/im/v1/messages"]
        assert [s["query"]["receive_id_type"] for s in sends] == ["user_id", "open_id"]
    finally:
        feishu.close()


def test_a_person_feishu_does_not_know_is_a_dead_letter_with_its_code(stack, feishu):
    w = World(stack, feishu)
    w.member("Ghost", "u_ghost", None)
    w.send("Ghost", "hello?")
    rows = w.wait_attempts(lambda a: len(a) == 1, "one row")
    assert rows[0]["outcome"] == "failed" and rows[0]["code"] == "feishu_230013"
    dead = stack.sql("SELECT code || '|' || attempts FROM notify_dead_letters")
    assert dead == "feishu_230013|1"
    [err] = w.events("agentbus.error", 1)
    assert err["data"]["stage"] == "notify" and err["data"]["code"] == "feishu_230013"


# ---- outgoing webhooks ----

def endpoint(receiver, path="/hooks/a", **extra):
    ep = {"id": "ep-" + path.rsplit("/", 1)[-1], "url": receiver.url + path, "events": ["message_received"],
          "secret": SECRET}
    ep.update(extra)
    return ep



def emit(stack, data, type_="agentbus.message.received"):
    """Puts an event on agentbus.events, as the dispatcher or a worker would."""
    ev = {"specversion": "1.0", "id": str(uuid.uuid4()), "type": type_, "source": "/tests",
          "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "datacontenttype": "application/json",
          "data": data}
    stack.broker.produce(stack.broker.topic("agentbus.events"), json.dumps(ev), key="k")
    return ev["id"]


def test_an_event_reaches_a_subscribed_endpoint_signed(stack, feishu, receiver):
    w = World(stack, feishu, webhooks=[endpoint(receiver)], notifier_env=LOOPBACK)
    w.member("Mary", "u_mary", "ou_mary")
    w.send("Mary", "hooked")
    got = wait_until(lambda: receiver.get("/_fake/deliveries?path=/hooks/a"), 30, 0.2, "a delivery")
    [d] = got
    assert d["verified"] is True and d["status"] == 200
    payload = d["body"]
    assert payload["type"] == "message_received"
    assert payload["message"]["from"] == "Alice" and payload["message"]["text"] == "hooked"
    assert d["headers"]["webhook-signature"].startswith("v1,")
    rows = w.wait_attempts(lambda a: any(r["dest"] == "webhook:ep-a" for r in a), "the webhook's row")
    [row] = [r for r in rows if r["dest"] == "webhook:ep-a"]
    assert row["id"] == d["headers"]["webhook-id"] and row["outcome"] == "delivered"


def test_failures_retry_on_schedule_then_dead_letter(stack, receiver):
    ep = endpoint(receiver, retry={"scheduleMs": [300, 600]})
    # Nine failures in a row here: the breaker (its own test) would defer the last ones.
    w = World(stack, webhooks=[ep], notifier_env=dict(LOOPBACK, AGENTBUS_NOTIFIER_BREAKER_THRESHOLD="100"))
    receiver.post("/_fake/behaviour", {"path": "/hooks/a", "mode": "status", "status": 503})
    emit(stack, {"tenant_id": w.tenant, "sender": {"name": "x"}, "target": {"name": "y"}, "content": "c"})
    rows = w.wait_attempts(lambda a: any(r["outcome"] == "failed" for r in a), "the dead letter")
    since = stack.sql("SELECT to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')")
    assert [(r["attempt"], r["outcome"], r["code"]) for r in rows] == [
        (1, "retry", "http_503"), (2, "retry", "http_503"), (3, "failed", "http_503")]
    tries = receiver.get("/_fake/requests?path=/hooks/a")
    assert len(tries) == 3 and len({t["headers"]["webhook-id"] for t in tries}) == 1  # stable id
    gaps = [b["time"] - a["time"] for a, b in zip(tries, tries[1:])]
    assert gaps[0] >= 0.25 and gaps[1] >= 0.5, gaps  # the schedule, with its 10 % jitter
    assert stack.sql("SELECT endpoint_id || '|' || attempts || '|' || code FROM notify_dead_letters") \
        == "ep-a|3|http_503"
    [dlq] = stack.broker.consume(stack.broker.topic("agentbus.notify.dlq"), 1)
    assert json.loads(dlq["value"])["id"] == rows[0]["id"]
    [err] = w.events("agentbus.error", 1)
    assert err["data"]["stage"] == "notify" and err["data"]["code"] == "http_503"
    admin = {"Authorization": "Bearer " + ADMIN_TOKEN}
    status, listed, _ = http("GET", stack.api + "/api/admin/dead-letters?endpoint=ep-a", None, admin)
    assert status == 200 and [d["id"] for d in listed["dead_letters"]] == [rows[0]["id"]]
    # The endpoint is back; a replay delivers with the same webhook-id.
    receiver.post("/_fake/behaviour", {"path": "/hooks/a", "mode": "ok", "replace": True})
    status, body, _ = http("POST", stack.api + f"/api/admin/dead-letters/{rows[0]['id']}/replay", b"", admin)
    assert status == 202, body
    [d] = wait_until(lambda: receiver.get("/_fake/deliveries?path=/hooks/a"), 30, 0.2, "the replay")
    assert d["headers"]["webhook-id"] == rows[0]["id"] and d["verified"] is True
    status, body, _ = http("POST", stack.api + "/api/admin/dead-letters/00000000-0000-4000-8000-000000000000/replay",
                           b"", admin)
    assert status == 404, body
    # Two more die; "replay all since" takes exactly those (the first was replayed already).
    receiver.post("/_fake/behaviour", {"path": "/hooks/a", "mode": "status", "status": 500, "replace": True})
    for text in ("d1", "d2"):
        emit(stack, {"tenant_id": w.tenant, "content": text})
    wait_until(lambda: stack.sql("SELECT count(*) FROM notify_dead_letters WHERE replayed_at IS NULL") == "2",
               30, 0.2, "two more dead letters")
    receiver.post("/_fake/behaviour", {"path": "/hooks/a", "mode": "ok", "replace": True})
    status, body, _ = http("POST", stack.api + "/api/admin/dead-letters/replay",
                           {"endpoint": "ep-a", "since": since}, dict(admin, **{"Content-Type": "application/json"}))
    assert status == 202 and body["replayed"] == 2, body
    wait_until(lambda: {d["body"]["data"]["content"] for d in receiver.get("/_fake/deliveries?path=/hooks/a")
                        if d["body"]["data"].get("content") in ("d1", "d2")} == {"d1", "d2"}, 30, 0.2, "the replays")
    status, body, _ = http("POST", stack.api + "/api/admin/dead-letters/replay", {"endpoint": "ep-a"}, admin)
    assert status == 400, body
    status, body, _ = http("DELETE", stack.api + "/api/admin/dead-letters?endpoint=ep-a", None, admin)
    assert status == 200 and body == {"purged": 3}


def test_a_private_address_is_refused(stack, receiver):
    w = World(stack, webhooks=[endpoint(receiver)])  # no allowlist
    emit(stack, {"tenant_id": w.tenant, "content": "c"})
    rows = w.wait_attempts(lambda a: len(a) == 1, "one row")
    assert rows[0]["outcome"] == "failed" and rows[0]["code"] == "address_refused"
    assert "127.0.0.1 is loopback" in rows[0]["error"]
    assert receiver.get("/_fake/requests") == []


def test_410_disables_the_endpoint(stack, receiver):
    w = World(stack, webhooks=[endpoint(receiver)], notifier_env=LOOPBACK)
    receiver.post("/_fake/behaviour", {"path": "/hooks/a", "mode": "gone"})
    for text in ("one", "two", "three"):  # 410s that may well be recorded in one batch
        emit(stack, {"tenant_id": w.tenant, "content": text})
    w.wait_attempts(lambda a: len(a) == 3, "the 410s")
    wait_until(lambda: stack.sql("SELECT count(*) FROM webhook_endpoint_state WHERE disabled_at IS NOT NULL")
               == "1", 10, 0.2, "the endpoint disabled")
    time.sleep(2.5)  # the notifier reads disabled endpoints every 2 s
    emit(stack, {"tenant_id": w.tenant, "content": "four"})
    rows = w.wait_attempts(lambda a: len(a) == 4, "the fourth")
    assert sorted(r["code"] for r in rows) == ["endpoint_disabled", "http_410", "http_410", "http_410"]
    assert len(receiver.get("/_fake/requests?path=/hooks/a")) == 3
    assert len(w.events("agentbus.notify.endpoint_disabled", 1)) >= 1
    admin = {"Authorization": "Bearer " + ADMIN_TOKEN}
    status, body, _ = http("POST", stack.api + "/api/admin/webhooks/ep-a/enable", b"", admin)
    assert status == 200, body
    status, body, _ = http("POST", stack.api + "/api/admin/webhooks/ep-a/enable", b"", admin)
    assert status == 404, body


def test_a_notifier_killed_with_retries_pending_delivers_them_after_restart(stack, receiver):
    ep = endpoint(receiver, retry={"scheduleMs": [3000]})
    w = World(stack, webhooks=[ep], notifier_env=LOOPBACK)
    receiver.post("/_fake/behaviour", {"path": "/hooks/a", "mode": "status", "status": 500})
    for i in range(5):
        emit(stack, {"tenant_id": w.tenant, "content": f"m{i}"})
    w.wait_attempts(lambda a: len(a) == 5, "five first attempts")
    w.notifier.proc.kill()
    w.notifier.proc.wait()
    assert stack.sql("SELECT count(*) FROM notify_scheduled") == "5"
    receiver.post("/_fake/behaviour", {"path": "/hooks/a", "mode": "ok", "replace": True})
    stack.start("notifier", **w.notifier_env)

    def delivered():
        return {d["headers"]["webhook-id"]: d["body"]["message"]["text"]
                for d in receiver.get("/_fake/deliveries?path=/hooks/a")}
    wait_until(lambda: len(delivered()) == 5, 40, 0.3, "five deliveries")
    # First attempts whose offsets the killed process had not committed yet are redone: the
    # receiver sees them again under the same webhook-id (at least once, deduplicable).
    assert sorted(delivered().values()) == [f"m{i}" for i in range(5)]
    wait_until(lambda: stack.sql("SELECT count(*) FROM notify_scheduled") == "0", 10, 0.2, "schedule empty")


def test_malformed_jobs_are_dead_lettered_and_a_good_one_still_goes(stack, feishu):
    w = World(stack, feishu)
    mary = w.member("Mary", "u_mary", "ou_mary")
    topic = stack.broker.topic("agentbus.notify")
    bad = [
        ("agentbus.notify.feishu", {"tenant_id": w.tenant, "content": "no target"}, "data.target.id"),
        ("agentbus.notify.feishu", {"tenant_id": "nope", "target": {"id": mary}, "content": "x"}, "tenant_id"),
        ("agentbus.notify.webhook", {"endpoint_id": "x"}, "data.event and data.payload"),
        ("agentbus.notify.retry", {"job": {}, "attempt": 0}, "attempt (1-1000)"),
    ]
    for type_, data, _ in bad:
        ev = {"specversion": "1.0", "id": str(uuid.uuid4()), "type": type_, "source": "/tests",
              "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "data": data}
        stack.broker.produce(topic if type_ != "agentbus.notify.retry" else stack.broker.topic("agentbus.notify.retry"),
                             json.dumps(ev), key="k")
    stack.broker.produce(topic, "not json at all", key="k")
    # A retry whose id cannot name its schedule row, due in an hour.
    job = {"specversion": "1.0", "id": str(uuid.uuid4()), "type": "agentbus.notify.feishu", "source": "/t",
           "time": "2026-01-01T00:00:00Z", "data": {"tenant_id": w.tenant, "target": {"id": mary}, "content": "x"}}
    later = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 3600))
    stack.broker.produce(stack.broker.topic("agentbus.notify.retry"), json.dumps(
        {"specversion": "1.0", "id": "not-a-uuid", "type": "agentbus.notify.retry", "source": "/t",
         "time": later, "data": {"job": job, "attempt": 2, "due_at": later}}), key="k")
    bad.append((None, None, "the id must be a UUID"))
    w.send("Mary", "still here")
    wait_until(lambda: len(posted(feishu)) == 1, 30, 0.2, "the good message")
    dead = stack.broker.consume(topic + ".dlq", 4) + stack.broker.consume(stack.broker.topic("agentbus.notify.retry.dlq"), 2)
    reasons = " | ".join(d["headers"]["x-agentbus-dlq-reason"] for d in dead)
    for _, _, why in bad:
        assert why in reasons, reasons
    assert w.notifier.proc.poll() is None


def test_redirects_are_not_followed_and_retry_after_is_honoured(stack, receiver):
    ep = endpoint(receiver, retry={"scheduleMs": [100, 100]})
    w = World(stack, webhooks=[ep], notifier_env=LOOPBACK)
    receiver.post("/_fake/behaviour", {"path": "/hooks/a", "mode": "redirect", "count": 1})
    receiver.post("/_fake/behaviour", {"path": "/hooks/a", "mode": "status", "status": 429,
                                       "retry_after": "1", "count": 1})
    emit(stack, {"tenant_id": w.tenant, "content": "c"})
    rows = w.wait_attempts(lambda a: any(r["outcome"] == "delivered" for r in a), "the delivery")
    assert [(r["outcome"], r["code"]) for r in rows] == [("retry", "http_302"), ("retry", "http_429"),
                                                          ("delivered", "")]
    tries = receiver.get("/_fake/requests")
    assert [t["path"] for t in tries] == ["/hooks/a"] * 3  # /elsewhere never asked for
    assert tries[2]["time"] - tries[1]["time"] >= 0.95  # Retry-After: 1 over a 100 ms schedule


def test_a_slow_endpoint_times_out_per_request(stack, receiver):
    ep = endpoint(receiver, timeoutMs=500, retry={"maxAttempts": 1})
    w = World(stack, webhooks=[ep], notifier_env=LOOPBACK)
    receiver.post("/_fake/behaviour", {"path": "/hooks/a", "mode": "slow", "seconds": 3})
    emit(stack, {"tenant_id": w.tenant, "content": "c"})
    [row] = w.wait_attempts(lambda a: len(a) == 1, "one row")
    assert row["outcome"] == "failed" and row["code"] == "total_timeout"
    assert "after 500 ms" in row["error"]


def test_a_failing_endpoint_opens_its_breaker_then_recovers(stack, receiver):
    ep = endpoint(receiver, retry={"scheduleMs": [200] * 10})
    w = World(stack, webhooks=[ep], notifier_env=dict(
        LOOPBACK, AGENTBUS_NOTIFIER_BREAKER_THRESHOLD="2", AGENTBUS_NOTIFIER_BREAKER_COOLDOWN_MS="8000"))
    receiver.post("/_fake/behaviour", {"path": "/hooks/a", "mode": "status", "status": 500})
    for i in range(4):
        emit(stack, {"tenant_id": w.tenant, "content": f"m{i}"})
    [failing] = w.events("agentbus.notify.endpoint_failing", 1)
    assert failing["data"]["endpoint_id"] == "ep-a"
    assert stack.sql("SELECT failing_since IS NOT NULL FROM webhook_endpoint_state") == "t"
    # Inside the cooldown (long enough that reading the events above, a consumer group join of
    # a few seconds, cannot outlast it and let the probe go): deferred, not sent.
    time.sleep(1.0)
    sent = len(receiver.get("/_fake/requests?path=/hooks/a"))
    assert sent <= 4, sent  # at most the requests in flight when the breaker opened
    assert w.wait_attempts(lambda a: any(r["outcome"] == "deferred" for r in a), "a deferral")
    receiver.post("/_fake/behaviour", {"path": "/hooks/a", "mode": "ok", "replace": True})
    wait_until(lambda: len({d["headers"]["webhook-id"] for d in receiver.get("/_fake/deliveries?path=/hooks/a")})
               == 4, 30, 0.3, "all four delivered after the probe")
    assert w.events("agentbus.notify.endpoint_recovered", 1)
    assert w.stack.services["notifier"][0].metric("agentbus_notify_endpoint_failing", {"endpoint": "ep-a"}) == 0


def test_a_rotated_secret_still_verifies(stack):
    old = "whsec_" + base64.b64encode(os.urandom(32)).decode()
    new = "whsec_" + base64.b64encode(os.urandom(32)).decode()
    receiver = Fake("webhook_receiver.py", "--secret", old)  # not told of the new one yet
    try:
        w = World(stack, webhooks=[endpoint(receiver, secret=[new, old])], notifier_env=LOOPBACK)
        emit(stack, {"tenant_id": w.tenant, "content": "c"})
        [d] = wait_until(lambda: receiver.get("/_fake/deliveries"), 30, 0.2, "a delivery")
        assert d["verified"] is True and len(d["headers"]["webhook-signature"].split(" ")) == 2
    finally:
        receiver.close()


def test_a_feishu_group_bot_gets_the_event_signed(stack):
    feishu = Fake("fake_feishu.py", "--bot", "hook-token:bot-secret")
    try:
        bot = {"id": "ops-group", "url": feishu.url + "/open-apis/bot/v2/hook/hook-token",
               "events": ["message_received"], "format": "feishu_bot", "secret": "bot-secret"}
        w = World(stack, webhooks=[bot], notifier_env=LOOPBACK)
        emit(stack, {"tenant_id": w.tenant, "sender": {"name": "Alice"}, "target": {"name": "Mary"},
                     "content": "deployed"})
        [m] = wait_until(lambda: posted(feishu), 30, 0.2, "the bot message")
        assert m["receive_id_type"] == "bot" and m["content"]["text"].endswith("Alice -> Mary: deployed")
        [row] = w.wait_attempts(lambda a: len(a) == 1, "one row")
        assert row["outcome"] == "delivered"
    finally:
        feishu.close()


def test_history_on_agentbus_events_is_not_replayed_to_a_new_endpoint(stack, receiver):
    # Events published before any endpoint was configured, the dispatcher not yet running.
    for i in range(3):
        emit(stack, {"content": f"old{i}"})
    w = World(stack, webhooks=[endpoint(receiver)], notifier_env=LOOPBACK)
    time.sleep(3)  # the dispatcher has joined and owns agentbus.events
    emit(stack, {"tenant_id": w.tenant, "content": "new"})
    [d] = wait_until(lambda: receiver.get("/_fake/deliveries"), 30, 0.2, "the new event")
    assert d["body"]["data"]["content"] == "new"
    time.sleep(1)
    assert len(receiver.get("/_fake/deliveries")) == 1


def test_a_conversations_first_message_reaches_session_started_endpoints_once(stack, receiver):
    w = World(stack, webhooks=[endpoint(receiver, events=["session_started"])], notifier_env=LOOPBACK)
    stack.sql(f"INSERT INTO agents (tenant_id, name, type) VALUES ('{w.tenant}', 'Bob', 'openclaw')")
    w.send("Bob", "hello")
    w.send("Bob", "again")
    [d] = wait_until(lambda: receiver.get("/_fake/deliveries"), 30, 0.2, "session_started")
    body = d["body"]
    conversation = stack.sql("SELECT id FROM conversations")
    assert body["type"] == "session_started" and body["session"] == conversation
    assert [a["name"] for a in body["data"]["agents"]] == ["Alice", "Bob"]
    time.sleep(2)
    assert len(receiver.get("/_fake/deliveries")) == 1  # the second message starts nothing
