"""W3C trace context end to end: a traceparent sent to ingress reaches the fake LLM, the fake
Feishu and an outgoing webhook receiver as the same trace with each hop's own span; it rides
in every envelope on the way; a request without one (or with an invalid one) starts a trace
at ingress; and the services' log lines of the work carry the trace id."""
import json
import re

from conftest import http, wait_until
from test_llm_worker import FakeLLM, World as LLMWorld
from test_notifier import LOOPBACK, Fake, World as NotifyWorld, endpoint, APP_ID, APP_SECRET, SECRET

TRACE = "0af7651916cd43dd8448eb211c80319c"
CALLER_SPAN = "b7ad6b7169203331"
TRACEPARENT = f"00-{TRACE}-{CALLER_SPAN}-01"
SHAPE = re.compile(r"^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$")


def send(stack, key, target, content, headers=None):
    status, body, hdrs = http("POST", stack.api + "/api/gateway/send-message",
                              json.dumps({"target": target, "content": content}).encode(),
                              {"X-Api-Key": key, **(headers or {})})
    assert status == 200, body
    return hdrs


def parts(value):
    m = SHAPE.match(value or "")
    assert m, f"not a traceparent: {value!r}"
    return m.group(1), m.group(2)


def same_trace(value):
    """The value continues TRACE in a span of its own (not the caller's)."""
    trace, span = parts(value)
    assert trace == TRACE, value
    assert span != CALLER_SPAN, value
    return span


def traced_lines(service, trace):
    return [json.loads(l) for l in service.logs().splitlines()
            if l.startswith("{") and json.loads(l).get("trace_id") == trace]


def ingress_events(stack):
    return [json.loads(m["value"]) for m in
            stack.broker.consume(stack.broker.topic("agentbus.ingress"), 1000, timeout_ms=15000, idle_ms=1500)]


def test_traceparent_reaches_feishu_and_the_webhook_receiver(stack, monkeypatch):
    monkeypatch.setenv("AGENTBUS_LOG_LEVEL", "debug")  # the dispatcher's routing lines are debug
    feishu = Fake("fake_feishu.py", "--app", f"{APP_ID}:{APP_SECRET}", "--user", "u_mary:ou_mary")
    receiver = Fake("webhook_receiver.py", "--secret", SECRET)
    try:
        w = NotifyWorld(stack, feishu, webhooks=[endpoint(receiver)], notifier_env=LOOPBACK)
        w.member("Mary", "u_mary", "ou_mary")
        answered = send(stack, w.key, "Mary", "traced", {"traceparent": TRACEPARENT})
        ingress_span = same_trace(answered["traceparent"])

        sends = wait_until(lambda: [r for r in feishu.get("/_fake/requests")
                                    if r["path"] == "/open-apis/im/v1/messages"], 30, 0.2, "a Feishu send")
        feishu_span = same_trace(sends[0]["headers"].get("traceparent"))
        hooks = wait_until(lambda: receiver.get("/_fake/deliveries?path=/hooks/a"), 30, 0.2, "a delivery")
        hook_span = same_trace(hooks[0]["headers"].get("traceparent"))
        assert len({ingress_span, feishu_span, hook_span}) == 3  # each hop is a span of its own

        # The envelope on the way carries it: ingress's span is the parent of what it published.
        [ev] = [e for e in ingress_events(stack) if e["type"] == "agentbus.message.sent"] or [None]
        assert ev is not None and ev["traceparent"] == f"00-{TRACE}-{ingress_span}-01"
        delivered = w.events("agentbus.notify.delivered", 2)
        for e in delivered:
            same_trace(e["traceparent"])

        # Every service's lines about this work carry the trace: ingress's request line, the
        # dispatcher's routing, the notifier's deliveries.
        for name, words in (("ingress", "send-message"), ("dispatcher", "routed"), ("notifier", "delivered")):
            lines = traced_lines(stack.services[name][-1], TRACE)
            assert any(words in l["message"] for l in lines), (name, lines)
    finally:
        feishu.close()
        receiver.close()


def test_traceparent_reaches_the_llm_provider(stack):
    fake = FakeLLM()
    try:
        w = LLMWorld(stack, fake)
        bob = w.native("Bob", "echo")
        send(stack, w.key, "Bob", "what is traced?", {"traceparent": TRACEPARENT})
        calls = wait_until(lambda: fake.requests(), 60, 0.2, "a call to the fake LLM")
        llm_span = same_trace(calls[0]["headers"].get("traceparent"))
        row = w.request_row(bob)
        assert row["status"] == "answered", row
        [answer] = w.events("agentbus.agent_response", 1)
        assert same_trace(answer["traceparent"]) != llm_span  # the worker's span, parent of the call
        assert traced_lines(stack.services["llm-worker"][-1], TRACE), "the worker logged nothing with the trace"
    finally:
        fake.close()


def test_ingress_starts_a_trace_when_the_caller_has_none_or_a_bad_one(stack):
    fake = FakeLLM()
    try:
        w = LLMWorld(stack, fake, worker=False)
        w.agent("Carol", "openclaw")
        started = set()
        for headers in ({}, {"traceparent": TRACEPARENT.upper()}, {"traceparent": "00-" + "0" * 32 + "-" + CALLER_SPAN + "-01"}):
            answered = send(stack, w.key, "Carol", "hello", headers)
            trace, _ = parts(answered["traceparent"])
            assert trace != TRACE and trace != "0" * 32
            started.add(trace)
        assert len(started) == 3  # a new trace each time
        sent = [e for e in ingress_events(stack) if e["type"] == "agentbus.message.sent"]
        assert {parts(e["traceparent"])[0] for e in sent} == started
    finally:
        fake.close()
