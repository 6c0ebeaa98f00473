"""The system as a user meets it: services start, become ready, pass an event from ingress
over Kafka into the dispatcher and PostgreSQL, and stop cleanly."""
import threading

from conftest import SERVICES, http, wait_until


def test_every_service_becomes_ready_and_serves_ops(stack):
    services = stack.start_all()
    for name, svc in services.items():
        status, body, _ = svc.ops("/livez")
        assert status == 200 and body == {"status": "alive"}, name
        status, body, _ = svc.ops("/readyz")
        assert status == 200 and body["status"] == "ready", (name, body)
        assert body["checks"]["postgres"] == "ok" and body["checks"]["kafka"] == "ok", (name, body)
        if name != "ingress":
            assert body["checks"]["consumer"] == "ok", (name, body)
        status, text, headers = svc.ops("/metrics")
        assert status == 200 and "text/plain" in headers["Content-Type"], name
        assert "agentbus_ready 1" in text, name
        assert "# TYPE agentbus_http_requests_total counter" in text, name


def test_event_flows_from_ingress_over_kafka_into_postgres(stack):
    stack.start("ingress")
    stack.start("dispatcher")
    status, body, headers = stack.publish("demo.hello", {"text": "hi", "n": [1, 2]}, subject="conv-1")
    assert status == 202, body
    assert body["status"] == "accepted" and body["type"] == "demo.hello"
    assert headers["X-Request-Id"]
    event_id = body["id"]
    wait_until(lambda: stack.journaled(event_id), 30, what="the event in event_log")
    row = stack.sql(f"SELECT type || '|' || subject || '|' || data::text || '|' || topic "
                    f"FROM event_log WHERE id = '{event_id}'")
    assert row == f'demo.hello|conv-1|{{"n": [1, 2], "text": "hi"}}|{stack.broker.topic("agentbus.ingress")}'
    # The same event is on the topic as a CloudEvents envelope with its headers.
    [msg] = [m for m in stack.broker.consume(stack.broker.topic("agentbus.ingress"), 1)]
    assert msg["key"] == "conv-1"
    assert msg["headers"]["ce_id"] == event_id and msg["headers"]["ce_type"] == "demo.hello"


def test_many_events_each_land_exactly_once(stack):
    stack.start("ingress")
    dispatcher = stack.start("dispatcher")
    ids, lock = [], threading.Lock()

    def send(worker):
        for i in range(25):
            status, body, _ = stack.publish("load.test", {"worker": worker, "i": i}, key=f"k{i % 7}")
            assert status == 202, body
            with lock:
                ids.append(body["id"])

    threads = [threading.Thread(target=send, args=(w,)) for w in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(ids)) == 100
    wait_until(lambda: stack.sql("SELECT count(*) FROM event_log") == "100", 60, what="100 rows")
    assert dispatcher.metric("agentbus_dispatcher_events_total", {"outcome": "journaled"}) == 100


def test_sigterm_drains_commits_and_exits_zero(stack):
    stack.start("ingress")
    dispatcher = stack.start("dispatcher")
    first = [stack.publish("drain.test", {"i": i})[1]["id"] for i in range(5)]
    wait_until(lambda: all(stack.journaled(i) for i in first), 30, what="first batch journaled")
    assert dispatcher.stop() == 0
    assert "agentbus-dispatcher stopped" in dispatcher.logs()

    # Offsets were committed at shutdown: a new dispatcher in the same group handles only
    # the event sent while it was away, not the five already done.
    status, body, _ = stack.publish("drain.test", {"i": 5})
    assert status == 202
    again = stack.start("dispatcher")
    wait_until(lambda: stack.journaled(body["id"]), 30, what="the event sent during the restart")
    assert again.metric("agentbus_dispatcher_events_total", {"outcome": "journaled"}) == 1

    for name in SERVICES:
        if name in ("dispatcher", "ingress"):
            continue
        svc = stack.start(name)
        assert svc.stop() == 0, name
        assert f"agentbus-{name} stopped" in svc.logs()
    ingress = stack.services["ingress"][0]
    assert ingress.stop() == 0


def test_unknown_routes_and_methods_answer_json_404(stack):
    stack.start("ingress")
    status, body, _ = http("GET", stack.api + "/no/such/route")
    assert status == 404 and body["error"]["code"] == "not_found"
    status, body, _ = http("GET", f"http://127.0.0.1:{stack.webhook_port}/webhook/nothing")
    assert status == 404 and body["error"]["code"] == "not_found"
