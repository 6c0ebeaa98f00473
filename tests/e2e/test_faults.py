"""Bad input and faults named by the foundation issue: each is sent for real, and each test
checks the clear error, that the service stays up, and that nothing accepted is lost."""
import json
import os
import subprocess
import shutil
import tempfile
import threading
import time
import uuid

from conftest import ADMIN_TOKEN, BIN, ROOT, free_port, http, wait_until


def run_service(stack, name, env_overrides, timeout=20):
    env = stack.env(name, **env_overrides)
    return subprocess.run([os.path.join(BIN, f"agentbus-{name}")], env=env, capture_output=True,
                          text=True, timeout=timeout, cwd=ROOT)


def test_malformed_config_file_names_the_file_and_the_field(stack, tmp_path):
    cases = [
        ('{"ingress": {"api_port": 8080,}}', "line 1"),
        ('{"kafka": {"bootstrapp": "x:1"}}', 'unknown field "kafka.bootstrapp"'),
        ('{"ingress": {"api_port": "8080"}}', 'field "ingress.api_port" must be an integer between 1 and 65535'),
        ('{"http": {"max_body_bytes": 5}}', 'field "http.max_body_bytes" must be an integer between 1024'),
        ('{"log": {"level": "verbose"}}', 'field "log.level" must be one of debug|info|warn|error'),
        ('[1, 2]', "the top level must be a JSON object"),
    ]
    for i, (text, expected) in enumerate(cases):
        path = tmp_path / f"bad{i}.json"
        path.write_text(text)
        for name in ("ingress", "dispatcher"):
            out = run_service(stack, name, {"AGENTBUS_CONFIG": str(path)})
            assert out.returncode == 2, (name, text, out.stderr)
            assert str(path) in out.stderr and expected in out.stderr, (name, text, out.stderr)


def test_missing_required_variable_names_it(stack):
    out = run_service(stack, "dispatcher", {"DATABASE_URL": None, "AGENTBUS_DATABASE_URL": None})
    assert out.returncode == 2
    assert "AGENTBUS_DATABASE_URL (or DATABASE_URL)" in out.stderr, out.stderr
    out = run_service(stack, "notifier", {"KAFKA_BOOTSTRAP": None, "AGENTBUS_KAFKA_BOOTSTRAP": None})
    assert out.returncode == 2 and "KAFKA_BOOTSTRAP" in out.stderr, out.stderr
    out = run_service(stack, "ingress", {"AGENTBUS_ADMIN_TOKEN": None})
    assert out.returncode == 2 and "AGENTBUS_ADMIN_TOKEN" in out.stderr, out.stderr
    out = run_service(stack, "ingress", {"AGENTBUS_INGRESS_API_PORT": "eighty"})
    assert out.returncode == 2
    assert 'AGENTBUS_INGRESS_API_PORT (ingress.api_port) must be an integer between 1 and 65535, got "eighty"' in out.stderr


def test_secrets_never_reach_the_logs(stack):
    svc = stack.start("ingress")
    password = stack.database_url.split(":")[2].split("@")[0]
    svc.stop()
    logs = svc.logs()
    assert '"database.url":"postgresql://agentbus:***@' in logs
    assert password not in logs and ADMIN_TOKEN not in logs


def test_postgres_down_at_start_keeps_retrying_then_becomes_ready(stack):
    # Not under tmp_path: pytest's base is private to root, and the server runs as postgres.
    pg_dir = tempfile.mkdtemp(prefix="agentbus-e2e-pg-down-")
    port = free_port()
    url = subprocess.run([os.path.join(ROOT, "scripts", "pg.sh"), "start", pg_dir, str(port)],
                         check=True, capture_output=True, text=True).stdout.strip()
    subprocess.run([os.path.join(ROOT, "scripts", "pg.sh"), "stop", pg_dir], check=True)
    try:
        svc = stack.start("dispatcher", wait=False, DATABASE_URL=url)
        time.sleep(4)
        assert svc.proc.poll() is None, "the service crashed while PostgreSQL was down"
        assert svc.ops("/livez")[0] == 200
        status, body, _ = svc.ops("/readyz")
        assert status == 503 and body["checks"]["postgres"] != "ok", body
        assert "database not ready" in svc.logs() and "retry_in_ms" in svc.logs()
        subprocess.run([os.path.join(ROOT, "scripts", "pg.sh"), "start", pg_dir, str(port)],
                       check=True, capture_output=True)
        svc.wait_ready(60)
        assert "migration 0001_event_log.sql applied" in svc.logs()
        assert svc.stop() == 0
    finally:
        subprocess.run([os.path.join(ROOT, "scripts", "pg.sh"), "stop", pg_dir], check=False)
        shutil.rmtree(pg_dir, ignore_errors=True)


def test_kafka_down_at_start_leaves_readyz_failing_without_crashing(stack):
    dead = f"127.0.0.1:{free_port()}"
    svc = stack.start("ingress", wait=False, KAFKA_BOOTSTRAP=dead, AGENTBUS_KAFKA_BOOTSTRAP=dead)
    notifier = stack.start("notifier", wait=False, KAFKA_BOOTSTRAP=dead, AGENTBUS_KAFKA_BOOTSTRAP=dead)
    time.sleep(5)
    for s in (svc, notifier):
        assert s.proc.poll() is None, s.logs()[-2000:]
        assert s.ops("/livez")[0] == 200
        status, body, _ = s.ops("/readyz")
        assert status == 503 and body["checks"]["kafka"] != "ok", body
    # A publish cannot be acknowledged: a clear retriable error, never a false 202.
    status, body, _ = http("POST", stack.api + "/api/admin/events", {"type": "x.y"},
                           {"Authorization": "Bearer " + ADMIN_TOKEN}, timeout=60)
    assert status in (503, 504) and body["error"]["code"] in ("unavailable", "timeout"), body
    assert svc.stop() == 0 and notifier.stop() == 0


def test_kafka_outage_at_start_then_recovery(stack):
    if stack.broker.real:
        return  # covered by test_broker_restart_mid_stream_loses_nothing_accepted on real Kafka
    stack.broker.proc.send_signal(__import__("signal").SIGUSR1)
    svc = stack.start("dispatcher", wait=False)
    time.sleep(4)
    assert svc.proc.poll() is None
    assert svc.ops("/readyz")[0] == 503
    stack.broker.proc.send_signal(__import__("signal").SIGUSR2)
    svc.wait_ready(60)


def test_body_over_the_limit_gets_413_and_nothing_is_lost(stack):
    stack.start("ingress", AGENTBUS_HTTP_MAX_BODY_BYTES="4096")
    stack.start("dispatcher")
    status, before, _ = stack.publish("size.test", {"i": "before"})
    assert status == 202
    big = json.dumps({"type": "size.test", "data": {"blob": "x" * 10000}}).encode()
    status, body, _ = http("POST", stack.api + "/api/admin/events", big,
                           {"Authorization": "Bearer " + ADMIN_TOKEN, "Content-Type": "application/json"})
    assert status == 413, body
    assert body["error"]["code"] == "payload_too_large" and "4096" in body["error"]["message"]
    status, after, _ = stack.publish("size.test", {"i": "after"})
    assert status == 202
    wait_until(lambda: stack.journaled(before["id"]) and stack.journaled(after["id"]), 30)
    assert stack.sql("SELECT count(*) FROM event_log") == "2"


def test_bad_requests_get_clear_json_errors(stack):
    stack.start("ingress")
    url = stack.api + "/api/admin/events"
    auth = {"Authorization": "Bearer " + ADMIN_TOKEN}
    status, body, headers = http("POST", url, {"type": "a.b"})
    assert status == 401 and body["error"]["code"] == "unauthorized"
    assert headers["WWW-Authenticate"].startswith("Bearer")
    status, body, _ = http("POST", url, {"type": "a.b"}, {"Authorization": "Bearer wrong-token-123456"})
    assert status == 401 and body["error"]["message"] == "the admin token is not valid"
    status, body, _ = http("POST", url, b'{"type": "a.b",', auth)
    assert status == 400 and body["error"]["code"] == "invalid_request"
    assert "not valid JSON" in body["error"]["message"]
    status, body, _ = http("POST", url, {"type": "a b"}, auth)
    assert status == 400 and '"type"' in body["error"]["message"]
    status, body, _ = http("POST", url, {"type": "a.b", "colour": "red"}, auth)
    assert status == 400 and 'unknown field "colour"' in body["error"]["message"]
    status, body, _ = http("POST", url, b"", auth)
    assert status == 400
    status, body, _ = stack.publish("still.up")
    assert status == 202


def envelope(event_type, data):
    return json.dumps({"specversion": "1.0", "id": str(uuid.uuid4()), "type": event_type,
                       "source": "/e2e", "time": "2026-11-21T10:00:00Z", "data": data})


def test_poison_message_goes_to_the_dead_letter_topic_and_does_not_block(stack):
    dispatcher = stack.start("dispatcher")
    topic = stack.broker.topic("agentbus.ingress")
    poison = ["this is not json", '{"specversion": "1.0", "type": "no.id"}', "[]"]
    for p in poison:
        stack.broker.produce(topic, p, key="same-key")
    good = envelope("after.poison", {"ok": True})
    stack.broker.produce(topic, good, key="same-key")
    good_id = json.loads(good)["id"]
    wait_until(lambda: stack.journaled(good_id), 30, what="the valid event behind the poison")
    dead = stack.broker.consume(stack.broker.topic("agentbus.ingress.dlq"), 3)
    assert sorted(d["value"] for d in dead) == sorted(poison)
    for d in dead:
        assert d["key"] == "same-key"
        assert d["headers"]["x-agentbus-dlq-topic"] == topic
        assert d["headers"]["x-agentbus-dlq-service"] == "agentbus-dispatcher"
        assert d["headers"]["x-agentbus-dlq-reason"].startswith("envelope:")
    assert stack.sql("SELECT count(*) FROM event_log") == "1"
    labels = {"group": "agentbus-dispatcher", "topic": topic}
    assert dispatcher.metric("agentbus_kafka_consumed_total", {**labels, "outcome": "dead_letter"}) == 3
    assert dispatcher.metric("agentbus_kafka_consumed_total", {**labels, "outcome": "done"}) == 1


def test_unhandled_events_are_dead_lettered_with_a_reason(stack):
    stack.start("llm-worker")
    stack.start("notifier")
    stack.broker.produce(stack.broker.topic("agentbus.llm.requests"), envelope("llm.request", {}), key="c1")
    stack.broker.produce(stack.broker.topic("agentbus.notify"), envelope("notify.feishu", {}), key="d1")
    [llm] = stack.broker.consume(stack.broker.topic("agentbus.llm.requests.dlq"), 1)
    [notify] = stack.broker.consume(stack.broker.topic("agentbus.notify.dlq"), 1)
    assert 'event type "llm.request" is not agentbus.llm.request' in llm["headers"]["x-agentbus-dlq-reason"]
    assert 'unknown delivery type "notify.feishu"' in notify["headers"]["x-agentbus-dlq-reason"]


def test_broker_restart_mid_stream_loses_nothing_accepted(stack):
    ingress = stack.start("ingress", AGENTBUS_KAFKA_PRODUCE_TIMEOUT_MS="60000")
    dispatcher = stack.start("dispatcher")
    accepted, refused, stop = [], [], threading.Event()

    def sender(worker):
        i = 0
        while not stop.is_set():
            status, body, _ = stack.publish("restart.test", {"w": worker, "i": i}, key=f"w{worker}")
            (accepted if status == 202 else refused).append(body if status == 202 else status)
            i += 1
            time.sleep(0.02)

    threads = [threading.Thread(target=sender, args=(w,)) for w in range(3)]
    for t in threads:
        t.start()
    time.sleep(2)
    stack.broker.outage(5)
    time.sleep(3)
    stop.set()
    for t in threads:
        t.join(timeout=120)
    assert len(accepted) > 50, (len(accepted), refused[:5])
    ids = {a["id"] for a in accepted}
    wait_until(lambda: int(stack.sql("SELECT count(*) FROM event_log WHERE type = 'restart.test'")) >= len(ids),
               120, what=f"all {len(ids)} accepted events in event_log")
    stored = set(stack.sql("SELECT id FROM event_log WHERE type = 'restart.test'").split())
    assert ids <= stored, f"{len(ids - stored)} accepted events lost"
    assert ingress.proc.poll() is None and dispatcher.proc.poll() is None
