"""Metrics end to end (docs/observability.md): one flow through all four services (an agent's
message answered by a native agent through the fake LLM, a Feishu message, and an outgoing
webhook that fails until its delivery is dead-lettered), then every service's /metrics is
read with Prometheus' own text parser (prometheus_client) and checked for the families the
issue asks for, with sensible labels and values."""
import base64
import json
import math
import os
import re
import uuid

import pytest

from conftest import ROOT, gateway_key, gateway_send, http, new_tenant, wait_until
from test_notifier import Fake  # joins its argument to tests/fake_notify: an absolute path stays

try:
    from prometheus_client.parser import text_string_to_metric_families
except ImportError:  # fail, not skip: scripts/test-tools/prometheus-client.sh installs it
    text_string_to_metric_families = None

FAKE_LLM = os.path.join(ROOT, "tests", "fake_llm", "fake_openai.py")
FAKES = os.path.join(ROOT, "tests", "fake_notify")
PROVIDER_KEY = "sk-test-" + uuid.uuid4().hex
APP_ID, APP_SECRET = "cli_test_app", "app-secret-" + uuid.uuid4().hex[:8]
SECRET = "whsec_" + base64.b64encode(os.urandom(32)).decode()
CONSUMERS = {"dispatcher": "agentbus-dispatcher", "llm-worker": "agentbus-llm-worker",
             "notifier": "agentbus-notifier"}
# Statistics every second rather than every 5 (kafka.properties wins over the default), so
# the lag gauge shows within the test's time.
KAFKA_PROPS = json.dumps({"statistics.interval.ms": 1000})


@pytest.fixture
def fakes():
    made = {}
    try:
        made["llm"] = Fake(FAKE_LLM, "--api-key", PROVIDER_KEY)
        made["feishu"] = Fake(os.path.join(FAKES, "fake_feishu.py"), "--app", f"{APP_ID}:{APP_SECRET}",
                              "--user", "u_mary:ou_mary")
        made["receiver"] = Fake(os.path.join(FAKES, "webhook_receiver.py"), "--secret", SECRET)
        yield made
    finally:
        for f in made.values():
            f.close()


class Scrape:
    """One /metrics text, parsed by prometheus_client; samples indexed by sample name."""

    def __init__(self, service, text):
        self.service = service
        self.text = text
        self.families = list(text_string_to_metric_families(text))
        self.types = {}
        self.samples = {}
        for fam in self.families:
            for s in fam.samples:
                self.types[s.name] = fam.type
                self.samples.setdefault(s.name, []).append((s.labels, s.value))

    def get(self, name, **labels):
        """The samples of name whose labels include labels."""
        return [(lab, v) for lab, v in self.samples.get(name, [])
                if all(lab.get(k) == v2 for k, v2 in labels.items())]

    def require(self, name, type_, label_names, **labels):
        """The samples of name (at least one), checked for their type and label names."""
        found = self.get(name, **labels)
        assert found, f"{self.service}: no sample {name} {labels or ''}"
        assert self.types[name] == type_, f"{self.service}: {name} is a {self.types[name]}, not a {type_}"
        for lab, value in found:
            keys = set(lab) - {"le"}
            assert keys == set(label_names), f"{self.service}: {name} has labels {sorted(keys)}"
            assert not math.isnan(value), f"{self.service}: {name}{lab} is NaN"
        return found

    def total(self, name, **labels):
        return sum(v for _, v in self.get(name, **labels))


def well_formed(scrape):
    """What the parser lets through but Prometheus or a dashboard would not like."""
    seen = set()
    for line in scrape.text.splitlines():
        if line.startswith("#") or not line:
            continue
        series = line.rpartition(" ")[0]
        assert series not in seen, f"{scrape.service}: {series} twice"
        seen.add(series)
    for fam in scrape.families:
        assert re.fullmatch(r"agentbus_[a-z0-9_]+", fam.name), f"{scrape.service}: odd name {fam.name}"
        assert fam.type in ("counter", "gauge", "histogram"), f"{scrape.service}: {fam.name} {fam.type}"
        for s in fam.samples:
            if fam.type == "counter":
                assert s.name.endswith("_total") and s.value >= 0, f"{scrape.service}: {s}"
        if fam.type != "histogram":
            continue
        # Each series: cumulative buckets ending in +Inf == _count.
        series = {}
        for s in fam.samples:
            key = tuple(sorted((k, v) for k, v in s.labels.items() if k != "le"))
            series.setdefault(key, {"buckets": [], "count": None})
            if s.name.endswith("_bucket"):
                series[key]["buckets"].append((float(s.labels["le"]), s.value))
            elif s.name.endswith("_count"):
                series[key]["count"] = s.value
        for key, h in series.items():
            counts = [c for _, c in sorted(h["buckets"])]
            assert counts == sorted(counts), f"{scrape.service}: {fam.name}{key} buckets not cumulative"
            assert h["buckets"] and math.isinf(max(b for b, _ in h["buckets"])), f"{fam.name}{key}: no +Inf"
            assert counts[-1] == h["count"], f"{scrape.service}: {fam.name}{key}: +Inf != _count"


def scrape(svc):
    status, text, headers = svc.ops("/metrics")
    assert status == 200, text
    assert headers["Content-Type"].startswith("text/plain; version=0.0.4"), headers["Content-Type"]
    return Scrape(svc.name, text)


def lag_groups(s):
    return {lab["group"] for lab, _ in s.get("agentbus_kafka_consumer_lag")}


def test_every_service_exposes_the_metrics_the_issue_asks_for(stack, fakes):
    assert text_string_to_metric_families is not None, \
        "prometheus_client is missing: run scripts/install-deps.sh --test (scripts/test-tools/prometheus-client.sh)"
    llm, feishu, receiver = fakes["llm"], fakes["feishu"], fakes["receiver"]
    # An endpoint that fails for good: each delivery to it is dead-lettered after 2 attempts.
    hooks = {"AGENTBUS_WEBHOOKS": json.dumps({"outgoing": [{
        "id": "ep-a", "url": receiver.url + "/hooks/a", "events": ["message_received"], "secret": SECRET,
        "retry": {"scheduleMs": [300]}}]})}
    receiver.post("/_fake/behaviour", {"path": "/hooks/a", "mode": "status", "status": 503})
    common = dict(hooks, AGENTBUS_KAFKA_PROPERTIES=KAFKA_PROPS)
    svcs = {
        "ingress": stack.start("ingress", **common),
        "dispatcher": stack.start("dispatcher", **common),
        "llm-worker": stack.start("llm-worker", AGENTBUS_LLM_WORKER_RETRY_BASE_MS="100", **common),
        "notifier": stack.start("notifier", AGENTBUS_NOTIFIER_ALLOW_NETWORKS="127.0.0.1/32",
                                AGENTBUS_NOTIFIER_RETRY_SCHEDULE_MS="300,300",
                                AGENTBUS_NOTIFIER_BREAKER_THRESHOLD="100", **common),
    }
    tenant = new_tenant(stack)
    alice = stack.sql(f"INSERT INTO agents (tenant_id, name, type) VALUES ('{tenant}', 'Alice', 'openclaw')"
                      " RETURNING id")
    model = stack.sql("INSERT INTO llm_models (tenant_id, name, provider, base_url, model, api_key, stream)"
                      f" VALUES ('{tenant}', 'm-metrics', 'openai', '{llm.url}', 'gpt-4o', '{PROVIDER_KEY}', true)"
                      " RETURNING id")
    stack.sql("INSERT INTO agents (tenant_id, name, type, primary_model_id)"
              f" VALUES ('{tenant}', 'Bob', 'native', '{model}')")
    stack.sql("INSERT INTO org_members (tenant_id, name, feishu_user_id, feishu_open_id)"
              f" VALUES ('{tenant}', 'Mary', 'u_mary', 'ou_mary')")
    stack.sql("INSERT INTO channel_configs (tenant_id, channel_type, app_id, app_secret, base_url)"
              f" VALUES ('{tenant}', 'feishu', '{APP_ID}', '{APP_SECRET}', '{feishu.url}')")
    key = gateway_key(stack, alice)

    # Agent to agent: Bob answers through the fake LLM (streamed: a first token, usage).
    assert gateway_send(stack, key, "bob", "When is the next release?")["status"] == "accepted"
    # Agent to person: a Feishu message; the message_received event dead-letters at ep-a.
    gateway_send(stack, key, "Mary", "the build is green")
    wait_until(lambda: feishu.get("/_fake/messages"), 30, 0.2, "the Feishu message")
    wait_until(lambda: stack.sql("SELECT count(*) FROM llm_requests WHERE status = 'answered'") == "1",
               60, 0.2, "Bob's answer")
    wait_until(lambda: int(stack.sql("SELECT count(*) FROM notify_dead_letters WHERE replayed_at IS NULL")) >= 1,
               30, 0.2, "a dead letter")

    # The gauges that come from a periodic reading: the dead letters held, the lag.
    wait_until(lambda: scrape(svcs["notifier"]).total("agentbus_notify_dead_letters_held") >= 1,
               20, 0.3, "agentbus_notify_dead_letters_held >= 1")
    for name, group in CONSUMERS.items():
        wait_until(lambda: group in lag_groups(scrape(svcs[name])), 30, 0.3, f"{name}'s consumer lag")
    svcs["ingress"].ops("/metrics")  # so the ops listener's own route has a count everywhere

    got = {name: scrape(svc) for name, svc in svcs.items()}
    for name, s in got.items():
        well_formed(s)
        # HTTP, by route and status, with a latency histogram (the ops listener at least).
        s.require("agentbus_http_requests_total", "counter", ["server", "route", "method", "status"],
                  server="ops", route="/metrics", status="200")
        s.require("agentbus_http_request_duration_seconds_count", "histogram", ["server", "route", "method"],
                  server="ops", route="/metrics")
        s.require("agentbus_http_request_duration_seconds_bucket", "histogram", ["server", "route", "method"])
        # Events produced, by topic; the PostgreSQL pool; readiness.
        produced = s.require("agentbus_kafka_produced_total", "counter", ["topic", "outcome"], outcome="acked")
        assert sum(v for _, v in produced) >= 1, f"{name}: nothing produced"
        assert all(lab["topic"].startswith(stack.broker.prefix) for lab, _ in produced), produced
        [(_, in_use)] = s.require("agentbus_db_pool_connections_in_use", "gauge", [])
        [(_, pool_max)] = s.require("agentbus_db_pool_connections_max", "gauge", [])
        assert 0 <= in_use <= pool_max and pool_max >= 1, (name, in_use, pool_max)
        assert s.total("agentbus_ready") == 1, name

    for name, group in CONSUMERS.items():
        s = got[name]
        # Events consumed, by topic, and how long handling took.
        done = s.require("agentbus_kafka_consumed_total", "counter", ["group", "topic", "outcome"],
                         group=group, outcome="done")
        assert sum(v for _, v in done) >= 1, f"{name}: nothing consumed"
        s.require("agentbus_kafka_handle_duration_seconds_count", "histogram", ["group", "topic"], group=group)
        assert s.total("agentbus_kafka_handle_duration_seconds_count", group=group) >= 1
        # Consumer lag per group and partition, in messages.
        lags = s.require("agentbus_kafka_consumer_lag", "gauge", ["group", "topic", "partition"], group=group)
        for lab, value in lags:
            assert lab["topic"].startswith(stack.broker.prefix) and not lab["topic"].endswith(".dlq"), lab
            assert re.fullmatch(r"\d+", lab["partition"]), lab
            assert value >= 0 and value == int(value), (lab, value)
        assert {lab["group"] for lab in (l for l, _ in lags)} == {group}

    # The ingress API: the gateway's send, by route and status.
    ingress = got["ingress"]
    ingress.require("agentbus_http_requests_total", "counter", ["server", "route", "method", "status"],
                    route="/api/gateway/send-message", status="200")
    assert ingress.total("agentbus_http_request_duration_seconds_count", route="/api/gateway/send-message") >= 2
    assert not ingress.get("agentbus_kafka_consumer_lag")  # no consumer there

    # The LLM: latency, time to first token, tokens.
    worker = got["llm-worker"]
    assert worker.total("agentbus_llm_calls_total", model="m-metrics", outcome="answer") == 1
    assert worker.require("agentbus_llm_call_duration_seconds_count", "histogram", ["model"],
                          model="m-metrics")[0][1] == 1
    assert worker.require("agentbus_llm_time_to_first_token_seconds_count", "histogram", ["model"],
                          model="m-metrics")[0][1] >= 1
    ttft = worker.total("agentbus_llm_time_to_first_token_seconds_sum")
    assert 0 < ttft <= worker.total("agentbus_llm_call_duration_seconds_sum")
    for kind in ("prompt", "completion"):
        assert worker.require("agentbus_llm_tokens_total", "counter", ["model", "kind"], kind=kind)[0][1] > 0
    assert worker.require("agentbus_llm_request_duration_seconds_count", "histogram", ["status"],
                          status="answered")[0][1] == 1

    # Deliveries: attempts by kind and outcome, the dead letters, the DLQ topic.
    notifier = got["notifier"]
    notifier.require("agentbus_notify_attempts_total", "counter", ["kind", "outcome"], kind="feishu",
                     outcome="delivered")
    assert notifier.total("agentbus_notify_attempts_total", kind="webhook", outcome="retry") >= 1
    assert notifier.total("agentbus_notify_attempts_total", kind="webhook", outcome="failed") >= 1
    assert notifier.require("agentbus_notify_delivery_seconds_count", "histogram", ["kind"], kind="feishu")[0][1] >= 1
    assert notifier.total("agentbus_notify_attempt_seconds_count", kind="webhook") >= 2
    assert notifier.total("agentbus_notify_dead_letters_total", kind="webhook") >= 1
    [(_, held)] = notifier.require("agentbus_notify_dead_letters_held", "gauge", [])
    # Counted from the table (the gauge may trail a dead letter that came since by a second).
    assert 1 <= held <= int(stack.sql("SELECT count(*) FROM notify_dead_letters WHERE replayed_at IS NULL"))
    dlq = notifier.get("agentbus_kafka_produced_total", topic=stack.broker.topic("agentbus.notify.dlq"),
                       outcome="acked")
    assert dlq and dlq[0][1] >= 1, "the dead letter's job on agentbus.notify.dlq"
