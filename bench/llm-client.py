#!/usr/bin/env python3
"""The client side of bench/llm.sh: an OpenClaw agent (alice) talking to native agents through
the whole bus (gateway send-message, dispatcher, agentbus.llm.requests, the LLM worker, the
fake OpenAI-compatible model tests/fake_llm/fake_openai.py, the reply back through
agentbus.ingress and the dispatcher into alice's inbox), measured in three phases. Prints
the report's Markdown sections on stdout, problems as lines "BENCHPROBLEM ..." and writes
every sample under BENCH_OUT.

1. Latency (BENCH_LAT_SAMPLES, after BENCH_WARMUP unmeasured): alice sends to bob (native,
   a streaming model that echoes word by word at once) and long-polls until bob's answer
   comes, one at a time. Each sample is split with the request's own clocks: the Kafka
   timestamp (CreateTime, ms) of the agentbus.llm.request the dispatcher produced (T0); the
   worker's log line saying the request was answered, written once Kafka acknowledged its
   events (T1, the line's time, ms); and the llm_requests row (created_at when the outcome
   was recorded, latency_ms from the request's arrival in the worker to then, the call's
   ms as libcurl measured it). (The events' own CreateTime cannot serve as T1: they are
   queued together, and stamped before their acks.)
   The worker's span is T1 - T0; what the worker adds is that span less its model call:
   Kafka's delivery to the worker + the work before and after the call (PostgreSQL reads
   and writes, hand-overs between threads) + recording and publishing the outcome (two
   Kafka sends, acks=all).
2. Direct (BENCH_DIRECT_SAMPLES): the same request, the body the worker sent last, posted
   to the fake with curl (libcurl, like the worker; a new connection each time), timed by
   curl's time_total: what calling the model directly costs.
3. Concurrency (BENCH_CONC_LEVELS, e.g. "100 1000"): N native agents with one streaming
   model that takes about BENCH_HOLD_S seconds per answer (slow_chunks); alice sends one
   message to each, 32 at a time; while the calls stream, the worker's
   agentbus_llm_calls_in_flight gauge, its resident memory and threads are sampled every
   250 ms; until every request has an outcome. Peak calls in flight, memory per call
   (resident growth at the peak over the idle worker), threads, CPU, and the outcomes.

Environment: BENCH_API, BENCH_ADMIN_TOKEN, BENCH_DB_URL, BENCH_FAKE_URL, BENCH_FAKE_KEY
(the fake's API key, never on a command line), BENCH_BIN (agentbus-kafka), KAFKA_BOOTSTRAP,
BENCH_WORKER_PID, BENCH_WORKER_OPS (the worker's ops URL), BENCH_WORKER_LOG (its log file), BENCH_OUT, BENCH_TAG, and the
knobs above. The tenant it creates is removed at the end unless BENCH_KEEP=1.
"""
import concurrent.futures
import datetime
import json
import os
import re
import subprocess
import sys
import threading
import time
import urllib.request

from benchclient import Agent, connect, env, percentile, psql, stats

API, DB, FAKE, BIN, OUT, TAG = (env(n) for n in ("BENCH_API", "BENCH_DB_URL", "BENCH_FAKE_URL",
                                                 "BENCH_BIN", "BENCH_OUT", "BENCH_TAG"))
ADMIN, FAKE_KEY = env("BENCH_ADMIN_TOKEN"), env("BENCH_FAKE_KEY")
WORKER_PID, WORKER_OPS = int(env("BENCH_WORKER_PID")), env("BENCH_WORKER_OPS")
WORKER_LOG = env("BENCH_WORKER_LOG")
LAT_SAMPLES = int(os.environ.get("BENCH_LAT_SAMPLES", "300"))
WARMUP = int(os.environ.get("BENCH_WARMUP", "10"))
DIRECT_SAMPLES = int(os.environ.get("BENCH_DIRECT_SAMPLES", "300"))
LEVELS = [int(x) for x in os.environ.get("BENCH_CONC_LEVELS", "100 1000").split()]
HOLD_S = float(os.environ.get("BENCH_HOLD_S", "30"))
SENDERS = 32
CLK_TCK = os.sysconf("SC_CLK_TCK")
problems = []


def problem(text):
    problems.append(text)
    print(f"BENCHPROBLEM {text}")


def sql1(query, variables=None):
    rows = psql(DB, query, variables)
    return rows[0][0] if rows else None


# --- the worker process -------------------------------------------------------------------

def proc_status():
    """VmRSS and VmHWM in KiB, and Threads, of the worker."""
    out = {}
    with open(f"/proc/{WORKER_PID}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM", "Threads"):
                out[key] = int(value.split()[0])
    return out


def proc_cpu_s():
    with open(f"/proc/{WORKER_PID}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime + stime


def calls_in_flight():
    with urllib.request.urlopen(WORKER_OPS + "/metrics", timeout=5) as resp:
        for line in resp.read().decode().splitlines():
            if line.startswith("agentbus_llm_calls_in_flight "):
                return int(float(line.split()[1]))
    return 0


# --- setup --------------------------------------------------------------------------------

class Tenant:
    def __init__(self):
        self.id = sql1("INSERT INTO tenants (name) VALUES (:'name') RETURNING id", {"name": TAG})
        self.alice = sql1("INSERT INTO agents (tenant_id, name, type) VALUES (:'t', 'alice', 'openclaw')"
                          " RETURNING id", {"t": self.id})
        conn = connect(API)
        conn.request("POST", f"/api/gateway/agents/{self.alice}/api-key", b"",
                     {"Authorization": "Bearer " + ADMIN})
        resp = conn.getresponse()
        body = json.loads(resp.read())
        conn.close()
        if resp.status != 201:
            raise RuntimeError(f"api-key: {resp.status} {body}")
        self.key = body["api_key"]

    def model(self, name, model, concurrency):
        return sql1("INSERT INTO llm_models (tenant_id, name, provider, base_url, model, api_key,"
                    " stream, max_concurrency) VALUES (:'t', :'name', 'openai', :'url', :'model',"
                    " :'key', true, :'n') RETURNING id",
                    {"t": self.id, "name": name, "url": FAKE, "model": model, "key": FAKE_KEY,
                     "n": str(concurrency)})

    def natives(self, prefix, count, model_id):
        psql(DB, "INSERT INTO agents (tenant_id, name, type, primary_model_id)"
                 " SELECT :'t', :'prefix' || g, 'native', :'m' FROM generate_series(1, :'n'::int) g",
             {"t": self.id, "prefix": prefix, "m": model_id, "n": str(count)})

    def agent_ids(self, pattern):
        return [r[0] for r in psql(DB, "SELECT id FROM agents WHERE tenant_id = :'t' AND name LIKE :'p'",
                                   {"t": self.id, "p": pattern})]

    def remove(self):
        psql(DB, "DELETE FROM tenants WHERE id = :'t'", {"t": self.id})
        psql(DB, "DELETE FROM event_log WHERE data->>'tenant_id' = :'t'", {"t": self.id})


def wait_for(what, predicate, timeout):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return True
        time.sleep(0.5)
    problem(f"timed out after {timeout:.0f} s waiting for {what}")
    return False


# --- phase 1: latency through the worker ---------------------------------------------------

def kafka_timestamps(topic):
    """{event id: timestamp ms} and the events, of everything topic holds now."""
    out = subprocess.run([os.path.join(BIN, "agentbus-kafka"), "consume", topic, "--count", "100000000",
                          "--timeout-ms", "120000", "--idle-ms", "3000"],
                         capture_output=True, text=True, timeout=200)
    events = []
    for line in out.stdout.splitlines():
        msg = json.loads(line)
        try:
            ev = json.loads(msg["value"])
        except (TypeError, ValueError):
            continue
        events.append((msg["timestamp"], ev))
    return events


def phase_latency(t):
    fast = t.model("bench-fast", "gpt-4o", 64)
    t.natives("bob", 1, fast)
    [bob] = t.agent_ids("bob%")
    alice = Agent(t.key, API, timeout=60)
    samples = []
    for i in range(WARMUP + LAT_SAMPLES):
        content = f"{TAG} lat {i}"
        t0 = time.perf_counter()
        status, body, raw = alice.send("bob1", content)
        if status != 200:
            problem(f"send-message answered {status}: {raw[:200]!r}")
            continue
        got = None
        deadline = time.time() + 60
        while got is None and time.time() < deadline:
            status, body, _ = alice.call("GET", "/api/gateway/poll?wait=10&limit=1")
            for m in (body or {}).get("messages", []):
                alice.call("POST", "/api/gateway/report", {"message_id": m["id"], "result": "ok"})
                if m["content"].endswith(content):
                    got = m
        if got is None:
            problem(f"no answer to latency sample {i} within 60 s")
            continue
        if i >= WARMUP:
            samples.append((time.perf_counter() - t0) * 1000)

    rows = psql(DB, "SELECT id, extract(epoch FROM created_at) * 1000, latency_ms, attempts->-1->>'ms',"
                    " first_token_ms, status FROM llm_requests WHERE agent_id = :'a' ORDER BY created_at",
                {"a": bob})[WARMUP:]
    requests = {ev["id"]: ts for ts, ev in kafka_timestamps("agentbus.llm.requests")}
    responses = answered_times()
    parts = {k: [] for k in ("span", "call", "added", "to_worker", "in_worker", "out", "ttft")}
    with open(os.path.join(OUT, "llm-latency-samples.tsv"), "w") as f:
        f.write("request_id\tspan_ms\tcall_ms\tadded_ms\tto_worker_ms\tin_worker_ms\tout_ms\n")
        for rid, created, latency, call, ttft, status in rows:
            if status != "answered" or rid not in requests or rid not in responses:
                problem(f"request {rid}: {status}, timestamps {rid in requests}/{rid in responses}")
                continue
            t0, t1 = requests[rid], responses[rid]
            created, latency, call = float(created), float(latency), float(call)
            v = {"span": t1 - t0, "call": call, "added": t1 - t0 - call,
                 "to_worker": created - latency - t0, "in_worker": latency - call, "out": t1 - created,
                 "ttft": float(ttft)}
            for k in parts:
                parts[k].append(v[k])
            f.write(rid + "\t" + "\t".join(f"{v[k]:.2f}" for k in list(parts)[:-1]) + "\n")
    body = last_worker_body()
    return samples, parts, body


def answered_times():
    """{request id: ms since the epoch} of the worker's "answered" log lines, written once
    Kafka acknowledged the request's events."""
    times = {}
    pattern = re.compile(r"^llm request ([0-9a-f-]{36}): .* answered ")
    with open(WORKER_LOG, errors="replace") as f:
        for line in f:
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            match = pattern.match(entry.get("message", ""))
            if match:
                when = datetime.datetime.fromisoformat(entry["time"].replace("Z", "+00:00"))
                times[match.group(1)] = when.timestamp() * 1000
    return times


def last_worker_body():
    with urllib.request.urlopen(FAKE + "/_fake/requests", timeout=30) as resp:
        calls = [r for r in json.loads(resp.read()) if r["path"] == "/v1/chat/completions"]
    return calls[-1]["raw_body"]


# --- phase 2: the model called directly ----------------------------------------------------

def phase_direct(body):
    body_file = os.path.join(OUT, "direct-body.json")
    headers_file = os.path.join(OUT, "direct-headers.txt")  # the key stays off the command line
    with open(body_file, "w") as f:
        f.write(body)
    with open(headers_file, "w") as f:
        f.write(f"Authorization: Bearer {FAKE_KEY}\nContent-Type: application/json\n"
                "Accept: text/event-stream\n")
    os.chmod(headers_file, 0o600)
    totals = []
    try:
        for _ in range(DIRECT_SAMPLES):
            out = subprocess.run(["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code} %{time_total}",
                                  "-H", "@" + headers_file, "--data-binary", "@" + body_file,
                                  FAKE + "/v1/chat/completions"], capture_output=True, text=True, timeout=60)
            code, total = out.stdout.split()
            if code != "200":
                problem(f"direct call answered {code}")
                continue
            totals.append(float(total) * 1000)
    finally:
        os.unlink(headers_file)
    return totals


# --- phase 3: concurrent streaming calls ---------------------------------------------------

def hold_content():
    """A message whose echo streams in about 50 chunks."""
    notice = "[Message from agent alice. Your text reply is delivered straight back to alice; do not try to send it another way.]"
    content = f"{TAG} hold " + " ".join(f"w{i}" for i in range(28))
    chunks = len(re.findall(r"\s*\S+", f"echo: {notice}\n\n{content}"))
    return content, chunks


def phase_concurrency(t, n):
    content, chunks = hold_content()
    interval = max(1, int(HOLD_S * 1000 / chunks))
    prefix = f"c{n}-"
    model = t.model(f"bench-hold-{n}", f"slow_chunks:{interval}", n)
    t.natives(prefix, n, model)

    def outcomes():
        return dict(psql(DB, "SELECT r.status, count(*) FROM llm_requests r JOIN agents a ON a.id = r.agent_id"
                             " WHERE a.tenant_id = :'t' AND a.name LIKE :'p' GROUP BY r.status",
                         {"t": t.id, "p": prefix + "%"}))

    base = proc_status()
    base_cpu, started = proc_cpu_s(), time.time()
    peak = {"in_flight": 0, "rss": base["VmRSS"], "threads": base["Threads"], "rss_at_peak": base["VmRSS"]}
    stop = threading.Event()

    def sampler():
        while not stop.is_set():
            try:
                calls, st = calls_in_flight(), proc_status()
            except OSError:
                break
            if calls >= peak["in_flight"]:
                peak["in_flight"], peak["rss_at_peak"] = calls, st["VmRSS"]
            peak["rss"] = max(peak["rss"], st["VmRSS"])
            peak["threads"] = max(peak["threads"], st["Threads"])
            stop.wait(0.25)

    watcher = threading.Thread(target=sampler, daemon=True)
    watcher.start()
    failed_sends = []
    local = threading.local()

    def send(i):
        if not hasattr(local, "agent"):
            local.agent = Agent(t.key, API, timeout=60)
        status, _, raw = local.agent.send(f"{prefix}{i}", content)
        if status != 200:
            failed_sends.append((status, raw[:200]))

    with concurrent.futures.ThreadPoolExecutor(SENDERS) as pool:
        list(pool.map(send, range(1, n + 1)))
    sent_s = time.time() - started
    for status, raw in failed_sends[:3]:
        problem(f"send-message answered {status}: {raw!r}")
    done = wait_for(f"{n} outcomes", lambda: sum(int(c) for c in outcomes().values()) >= n - len(failed_sends),
                    sent_s + HOLD_S * 3 + 120)
    total_s = time.time() - started
    stop.set()
    watcher.join()
    cpu_s = proc_cpu_s() - base_cpu
    result = outcomes()
    if result.get("answered", "0") != str(n) or not done:
        problem(f"level {n}: outcomes {result}")
    per_call = (peak["rss_at_peak"] - base["VmRSS"]) / peak["in_flight"] if peak["in_flight"] else float("nan")
    return {"n": n, "interval": interval, "chunks": chunks, "sent_s": sent_s, "total_s": total_s,
            "peak": peak["in_flight"], "base_rss": base["VmRSS"], "rss_at_peak": peak["rss_at_peak"],
            "max_rss": peak["rss"], "per_call_kib": per_call, "threads": peak["threads"],
            "base_threads": base["Threads"], "cpu_s": cpu_s, "outcomes": result}


def replies_routed(t, expected):
    """True once every answer is in alice's inbox: the dispatcher is done with the run."""
    got = int(sql1("SELECT count(*) FROM gateway_messages WHERE agent_id = :'a'", {"a": t.alice}))
    return got >= expected


# --- report --------------------------------------------------------------------------------

def row(label, values):
    v = sorted(values)
    if not v:
        return f"| {label} | n/a | n/a | n/a | 0 |"
    return (f"| {label} | {percentile(v, 50):.2f} | {percentile(v, 90):.2f} | {percentile(v, 99):.2f} |"
            f" {len(v)} |")


def main():
    t = Tenant()
    try:
        samples, parts, body = phase_latency(t)
        direct = phase_direct(body)
        levels = [phase_concurrency(t, n) for n in LEVELS]
        answered = WARMUP + LAT_SAMPLES + sum(int(lv["outcomes"].get("answered", 0)) for lv in levels)
        wait_for("the dispatcher to route every answer", lambda: replies_routed(t, answered), 300)
    finally:
        if os.environ.get("BENCH_KEEP") != "1":
            t.remove()

    prompt = json.loads(body)["messages"]
    print(f"""### Added latency of the LLM worker

{LAT_SAMPLES} requests one at a time (after {WARMUP} unmeasured), alice (OpenClaw) to bob (native) through the whole
bus; the model streams its echo at once ({len(prompt)} messages in the prompt: the system prompt, up to
llm_worker.history_turns earlier turns, the new message). Milliseconds.

| | p50 | p90 | p99 | n |
|---|---:|---:|---:|---:|
{row("**added by the worker** (span less its model call)", parts["added"])}
{row("&nbsp;&nbsp;Kafka delivery to the worker (T0 to arrival)", parts["to_worker"])}
{row("&nbsp;&nbsp;in the worker before and after the call (load, user turn, hand-overs)", parts["in_worker"])}
{row("&nbsp;&nbsp;recording the outcome and publishing reply + agent_response (acks=all)", parts["out"])}
{row("model call inside the worker (libcurl multi, keep-alive)", parts["call"])}
{row("model call, direct (curl, same body, new connection)", direct)}
{row("worker span: llm.request produced to its events acknowledged", parts["span"])}
{row("time to first token inside the worker", parts["ttft"])}
{row("send-message to the answer in alice's long poll (whole bus)", samples)}
""")
    print("""### Concurrent streaming calls in one worker process

Each request streams about 50 chunks over BENCH_HOLD_S seconds; alice sends all of them
through the gateway, 32 at a time (the dispatcher routes them at its own pace).

| requests | peak calls in flight | resident memory idle → at peak (MiB) | per call in flight (KiB) | threads (idle → max) | worker CPU (s) | sent in (s) | all answered in (s) | outcomes |
|---:|---:|---:|---:|---:|---:|---:|---:|---|""")
    for lv in levels:
        outcomes = ", ".join(f"{k} {v}" for k, v in sorted(lv["outcomes"].items()))
        print(f"| {lv['n']} | {lv['peak']} | {lv['base_rss'] / 1024:.1f} → {lv['rss_at_peak'] / 1024:.1f}"
              f" | {lv['per_call_kib']:.1f} | {lv['base_threads']} → {lv['threads']} | {lv['cpu_s']:.1f}"
              f" | {lv['sent_s']:.1f} | {lv['total_s']:.1f} | {outcomes} |")
    print("\nchunk interval per level: " +
          ", ".join(f"{lv['n']}: {lv['chunks']} chunks every {lv['interval']} ms" for lv in levels))
    print(f"BENCHRESULT added_p50={percentile(sorted(parts['added']), 50):.2f}"
          f" added_p99={percentile(sorted(parts['added']), 99):.2f}"
          f" direct_p50={percentile(sorted(direct), 50):.2f} problems={len(problems)}")
    print(f"BENCHSTATS added {stats(parts['added'])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
