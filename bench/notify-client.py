#!/usr/bin/env python3
"""The client side of bench/notify.sh: outgoing webhooks from the notifier to a local
keep-alive receiver (bench/notify-receiver.py, one endpoint "bench", every request signed),
measured in three phases. Prints the report's Markdown sections on stdout, problems as lines
"BENCHPROBLEM ...", and writes every sample under BENCH_OUT.

1. Event to delivery, through the bus (BENCH_BUS_RATE events a second for BENCH_LAT_S
   seconds): agentbus.message.received events written to agentbus.events (as the dispatcher
   writes them), each stamped with the time it is written; the dispatcher fans each out to
   the endpoint (a job on agentbus.notify), the notifier delivers it. Latency: the
   receiver's arrival time less the event's time (the payload's "timestamp"). The
   dispatcher handles one event at a time, each fan-out waiting for Kafka's ack: its rate
   bounds this path (BENCH_BUS_RATE stays below it).
2. Event to delivery, the notifier alone (BENCH_LAT_RATE jobs a second): the same, with
   the jobs written straight to agentbus.notify (the payload carries the time written).
3. Throughput (BENCH_COUNT jobs): jobs written to agentbus.notify as fast as the producers
   go, so a backlog forms and the notifier delivers at its own pace. Deliveries a second
   between the 10th and the 90th percentile of arrivals (the steady part), and overall;
   the notifier's CPU seconds meanwhile; every attempt row recorded. The jobs are spread
   over PRODUCERS keys: the embedded broker keeps only about 5 MiB a partition and drops
   the oldest messages of a longer backlog (real Kafka keeps them); the notifier, one
   consumer owning every partition, delivers from all of them alike.

Events and jobs go to Kafka through `agentbus-kafka produce TOPIC --lines` (one line a
message, produced as it is read), paced by this script.

Environment: BENCH_BIN, BENCH_DB_URL, BENCH_RECEIVER_URL, BENCH_NOTIFIER_PID,
BENCH_NOTIFIER_OPS, BENCH_OUT, KAFKA_BOOTSTRAP, AGENTBUS_KAFKA_TOPIC_PREFIX (optional) and
the knobs above."""
import datetime
import json
import os
import subprocess
import time
import urllib.request
import uuid

from benchclient import die, env, percentile, psql, stats

BIN, DB, RECV, OUT = env("BENCH_BIN"), env("BENCH_DB_URL"), env("BENCH_RECEIVER_URL"), env("BENCH_OUT")
NOTIFIER_PID, NOTIFIER_OPS = int(env("BENCH_NOTIFIER_PID")), env("BENCH_NOTIFIER_OPS")
RECEIVER_PID = int(env("BENCH_RECEIVER_PID"))
PREFIX = os.environ.get("AGENTBUS_KAFKA_TOPIC_PREFIX", "")
LAT_RATE = int(os.environ.get("BENCH_LAT_RATE", "200"))
BUS_RATE = int(os.environ.get("BENCH_BUS_RATE", "50"))
PRODUCERS = 12
LAT_S = int(os.environ.get("BENCH_LAT_S", "15"))
COUNT = int(os.environ.get("BENCH_COUNT", "30000"))
CLK_TCK = os.sysconf("SC_CLK_TCK")
problems = []


def get(path):
    with urllib.request.urlopen(RECV + path, timeout=60) as r:
        return json.loads(r.read())


def now_rfc3339():
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_ts(text):
    return datetime.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def cpu_s(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def machine_busy_s():
    """CPU seconds the whole machine spent busy so far (user, nice, system, irq, steal)."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    return (v[0] + v[1] + v[2] + v[5] + v[6] + v[7]) / CLK_TCK


def producer(topic, key):
    return subprocess.Popen([os.path.join(BIN, "agentbus-kafka"), "produce", PREFIX + topic, "--lines",
                             "--key", key], stdin=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(proc, what):
    proc.stdin.close()
    err = proc.stderr.read()
    if proc.wait(timeout=120) != 0:
        die(f"producing {what}: {err.strip()}")


def event_line(content):
    """An agentbus.message.received event on agentbus.events, stamped now."""
    return json.dumps({"specversion": "1.0", "id": str(uuid.uuid4()), "type": "agentbus.message.received",
                       "source": "/bench", "time": now_rfc3339(), "datacontenttype": "application/json",
                       "data": {"sender": {"name": "bench"}, "target": {"name": "receiver"},
                                "content": content, "route": "notify"}})


def job_line(content):
    """An agentbus.notify.webhook job for the endpoint, its payload stamped now."""
    t = now_rfc3339()
    return json.dumps({"specversion": "1.0", "id": str(uuid.uuid4()), "type": "agentbus.notify.webhook",
                       "source": "/bench", "time": t, "datacontenttype": "application/json",
                       "data": {"endpoint_id": "bench", "event": "message_received", "tenant_id": None,
                                "source_event": {"id": str(uuid.uuid4()), "type": "agentbus.message.received",
                                                 "source": "/bench", "time": t},
                                "payload": {"type": "message_received", "timestamp": t,
                                            "message": {"from": "bench", "text": content}},
                                "about_outcome": False}})


def wait_for(count, timeout):
    deadline = time.time() + timeout
    while time.time() < deadline:
        s = get("/_stats")
        if s["count"] >= count:
            return s
        time.sleep(0.2)
    return get("/_stats")


def latency_phase(name, topic, key, make_line, rate):
    get("/_reset")
    total = rate * LAT_S
    proc = producer(topic, key)
    start = time.time()
    for i in range(total):
        pause = start + i / rate - time.time()
        if pause > 0:
            time.sleep(pause)
        proc.stdin.write(make_line(f"lat-{i}") + "\n")
        proc.stdin.flush()
    finish(proc, name)
    s = wait_for(total, 120)
    if s["count"] < total:
        problems.append(f"{name}: {s['count']} of {total} delivered")
    dump = get("/_dump")
    ms = [(a - parse_ts(t)) * 1000 for a, t in dump if t]
    with open(os.path.join(OUT, f"latency-{key.replace(':', '_')}.json"), "w") as f:
        json.dump(dump, f)
    return ms, s


def throughput_phase():
    get("/_reset")
    rows_before = int(psql(DB, "SELECT count(*) FROM notify_attempts")[0][0])
    cpu0, recv0, busy0, t0 = cpu_s(NOTIFIER_PID), cpu_s(RECEIVER_PID), machine_busy_s(), time.time()
    procs = [producer("agentbus.notify", f"webhook:bench-{k}") for k in range(PRODUCERS)]
    for i in range(COUNT):
        procs[i % PRODUCERS].stdin.write(job_line(f"tp-{i}") + "\n")
    for proc in procs:
        finish(proc, "the throughput jobs")
    produced = time.time() - t0
    s = wait_for(COUNT, 600)
    elapsed = time.time() - t0
    cpu = cpu_s(NOTIFIER_PID) - cpu0
    recv_cpu, busy = cpu_s(RECEIVER_PID) - recv0, machine_busy_s() - busy0
    if s["count"] < COUNT:
        problems.append(f"throughput: {s['count']} of {COUNT} delivered")
    arrivals = sorted(a for a, _ in get("/_dump"))
    lo, hi = percentile(arrivals, 10), percentile(arrivals, 90)
    steady = (0.8 * len(arrivals)) / (hi - lo) if hi > lo else float("nan")
    overall = len(arrivals) / (arrivals[-1] - arrivals[0]) if len(arrivals) > 1 else float("nan")
    deadline = time.time() + 60
    while time.time() < deadline:  # the last batches' attempt rows
        rows = int(psql(DB, "SELECT count(*) FROM notify_attempts")[0][0]) - rows_before
        if rows >= COUNT:
            break
        time.sleep(0.5)
    if rows < COUNT:
        problems.append(f"throughput: {rows} attempt rows for {COUNT} deliveries")
    return dict(count=s["count"], unique=s["unique_ids"], steady=steady, overall=overall,
                produce_s=produced, elapsed=elapsed, cpu=cpu, recv_cpu=recv_cpu, busy=busy,
                rows=rows, checked=s["checked"],
                bad=s["bad_signatures"])


def main():
    # Warm up: connections, the token of nothing, the consumer's fetch sessions.
    proc = producer("agentbus.notify", "webhook:bench")
    for i in range(200):
        proc.stdin.write(job_line(f"warm-{i}") + "\n")
    finish(proc, "the warm-up")
    wait_for(200, 60)

    bus_ms, bus = latency_phase("through the bus", "agentbus.events", "bench", event_line, BUS_RATE)
    alone_ms, alone = latency_phase("the notifier alone", "agentbus.notify", "webhook:bench", job_line,
                                    LAT_RATE)
    tp = throughput_phase()
    print(f"### Event to delivery ({LAT_S} s at a steady rate), ms\n")
    print("| path | rate | n | p50 | p90 | p99 | max |")
    print("|---|---|---|---|---|---|---|")
    for label, rate, ms in (("agentbus.events -> dispatcher -> agentbus.notify -> notifier -> receiver",
                             BUS_RATE, bus_ms),
                            ("agentbus.notify -> notifier -> receiver", LAT_RATE, alone_ms)):
        v = sorted(ms)
        print(f"| {label} | {rate}/s | {len(v)} | {percentile(v, 50):.1f} | {percentile(v, 90):.1f} |"
              f" {percentile(v, 99):.1f} | {v[-1]:.1f} |" if v else f"| {label} | {rate}/s | 0 | | | | |")
    print(f"\n### Throughput ({COUNT} jobs written at once to agentbus.notify)\n")
    print("| | |\n|---|---|")
    print(f"| deliveries a second, steady (10th to 90th percentile of arrivals) | {tp['steady']:.0f} |")
    print(f"| deliveries a second, first to last | {tp['overall']:.0f} |")
    print(f"| delivered / distinct webhook-ids / attempt rows | {tp['count']} / {tp['unique']} / {tp['rows']} |")
    print(f"| writing the jobs took | {tp['produce_s']:.1f} s |")
    print(f"| notifier CPU, whole phase | {tp['cpu']:.1f} s ({tp['cpu'] / tp['elapsed'] * 100:.0f} % of one core"
          f" over {tp['elapsed']:.1f} s; {tp['cpu'] / max(tp['count'], 1) * 1e6:.0f} µs a delivery) |")
    print(f"| receiver CPU / the machine's, whole phase | {tp['recv_cpu']:.1f} s / {tp['busy']:.1f} s of"
          f" {os.cpu_count() * tp['elapsed']:.1f} s ({os.cpu_count()} CPUs) |")
    print(f"| signatures checked by the receiver / bad | {tp['checked']} / {tp['bad']} |")
    for label, ms in (("bus", bus_ms), ("alone", alone_ms)):
        print(f"BENCHRESULT latency_{label} {stats(ms)}")
    print(f"BENCHRESULT throughput steady={tp['steady']:.0f} overall={tp['overall']:.0f} count={tp['count']}"
          f" rows={tp['rows']} cpu_s={tp['cpu']:.1f}")
    if bus["bad_signatures"] or alone["bad_signatures"] or tp["bad"]:
        problems.append("the receiver found bad signatures")
    for p in problems:
        print(f"BENCHPROBLEM {p}")


if __name__ == "__main__":
    main()
