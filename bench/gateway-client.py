#!/usr/bin/env python3
"""The client side of bench/gateway.sh that wrk cannot play: an OpenClaw agent A sending
to an OpenClaw agent B, and B long-polling for it. Standard library only (http.client,
one keep-alive connection per thread), so it runs on the system's python3.

  gateway-client.py send N CONCURRENCY
      N send-message calls from A to B, CONCURRENCY at a time; each body is
      {"target": B, "content": "<tag> preload <i>"}. Prints
      BENCHRESULT sent=.. failed=.. duration_s=..

  gateway-client.py latency N
      N sequential samples of send-to-poll latency: B holds a long poll open
      (GET /api/gateway/poll?wait=BENCH_LAT_WAIT&limit=1), and after a random pause of
      BENCH_LAT_GAP_MS ("20 220") A sends "<tag> lat <i>"; the sample is the time from the
      start of the send until B's poll returns that message. B then reports the message
      (off the clock), as an agent would, so that its lease never brings it back. The
      random pause spreads the sends over the long poll's re-check period, if it has one.
      Afterwards the inbox rows of the samples are read from PostgreSQL (psql) to split
      each sample in three: send answered, inbox row written by the dispatcher (its
      transaction's start), row leased by the poll. Prints BENCHRESULT lines and writes
      every sample to BENCH_OUT/latency-samples.tsv.

Environment: BENCH_API (http://127.0.0.1:8080), BENCH_KEY_A, BENCH_KEY_B (X-Api-Keys, never
on a command line), BENCH_TARGET (B's name), BENCH_TAG (in every message's content),
BENCH_AGENT_B (B's id) and BENCH_DB_URL for the breakdown, BENCH_OUT (a directory).
Only a loopback BENCH_API is accepted.
"""
import http.client
import os
import queue
import random
import subprocess
import sys
import threading
import time

from benchclient import Agent, env, psql, stats


def cmd_send(n, concurrency):
    key, target, tag = env("BENCH_KEY_A"), env("BENCH_TARGET"), env("BENCH_TAG")
    counter = iter(range(n))
    lock = threading.Lock()
    failed = []

    def worker():
        agent = Agent(key)
        while True:
            with lock:
                i = next(counter, None)
            if i is None:
                return
            try:
                status, body, raw = agent.send(target, f"{tag} preload {i}")
            except (http.client.HTTPException, OSError) as e:
                status, body, raw = 0, None, str(e).encode()
            if status != 200:
                with lock:
                    failed.append((status, raw[:200]))

    threads = [threading.Thread(target=worker) for _ in range(min(concurrency, n))]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    duration = time.perf_counter() - started
    for status, raw in failed[:3]:
        print(f"gateway-client: send-message answered {status}: {raw!r}", file=sys.stderr)
    print(f"BENCHRESULT sent={n - len(failed)} failed={len(failed)} duration_s={duration:.3f}")


class Poller(threading.Thread):
    """B: on each go(content), long-polls until that message arrives (or the deadline);
    puts (monotonic time of the answer, wall time of the answer, message or None) in done."""

    def __init__(self, key, wait_s):
        super().__init__(daemon=True)
        self.agent = Agent(key)
        self.wait_s = wait_s
        self.todo = queue.Queue()
        self.done = queue.Queue()
        self.stray = 0  # messages other than the expected one (a late sample, a redelivery)

    def go(self, content):
        self.todo.put(content)

    def run(self):
        while True:
            content = self.todo.get()
            deadline = time.monotonic() + self.wait_s + 5
            found = None
            while found is None and time.monotonic() < deadline:
                try:
                    status, body, _ = self.agent.call("GET", f"/api/gateway/poll?wait={self.wait_s}&limit=1")
                except (http.client.HTTPException, OSError):
                    status, body = 0, None
                t_mono, t_wall = time.perf_counter(), time.time()
                if status != 200:
                    time.sleep(0.1)
                    continue
                for m in body.get("messages", []):
                    if m.get("content") == content:
                        found = m
                    else:
                        self.stray += 1
                        self.agent.call("POST", "/api/gateway/report",
                                        {"message_id": m["id"], "result": "ok"})
            self.done.put((t_mono, t_wall, found))


def db_rows(tag):
    """{content: (created_at, delivered_at)} of B's latency samples, epoch seconds."""
    url, agent_b = os.environ.get("BENCH_DB_URL"), os.environ.get("BENCH_AGENT_B")
    if not url or not agent_b:
        return {}
    sql = ("SELECT content, extract(epoch FROM created_at), extract(epoch FROM delivered_at)"
           " FROM gateway_messages WHERE agent_id = :'agent' AND starts_with(content, :'prefix')")
    try:
        out = psql(url, sql, {"agent": agent_b, "prefix": f"{tag} lat "}, timeout=60)
    except (RuntimeError, subprocess.SubprocessError, OSError) as e:
        print(f"gateway-client: could not read the inbox rows: {e}", file=sys.stderr)
        return {}
    rows = {}
    for content, created, delivered in out:
        if created and delivered:
            rows[content] = (float(created), float(delivered))
    return rows


def cmd_latency(n):
    key_a, key_b, target, tag = env("BENCH_KEY_A"), env("BENCH_KEY_B"), env("BENCH_TARGET"), env("BENCH_TAG")
    wait_s = int(os.environ.get("BENCH_LAT_WAIT", "10"))
    gap_min, gap_max = (int(x) / 1000 for x in os.environ.get("BENCH_LAT_GAP_MS", "20 220").split())
    out_dir = os.environ.get("BENCH_OUT", ".")
    sender = Agent(key_a)
    poller = Poller(key_b, wait_s)
    poller.start()
    samples, send_failed, missed = [], 0, 0
    for i in range(n):
        content = f"{tag} lat {i}"
        poller.go(content)
        # The poll must be waiting before the send starts (its first look at the inbox
        # takes a few ms); then the send lands at a random point of a re-check period.
        time.sleep(random.uniform(gap_min, gap_max))
        t0, t0_wall = time.perf_counter(), time.time()
        try:
            status, _, raw = sender.send(target, content)
        except (http.client.HTTPException, OSError) as e:
            status, raw = 0, str(e).encode()
        t_ack = time.perf_counter()
        if status != 200:
            send_failed += 1
            print(f"gateway-client: send-message answered {status}: {raw[:200]!r}", file=sys.stderr)
        t1, t1_wall, msg = poller.done.get()
        if msg is None:
            missed += status == 200
            continue
        samples.append((content, t0_wall, (t_ack - t0) * 1000, (t1 - t0) * 1000, t1_wall))
        poller.agent.call("POST", "/api/gateway/report", {"message_id": msg["id"], "result": "ok"})

    rows = db_rows(tag)
    split = {"ack": [], "row": [], "lease": [], "back": []}
    with open(os.path.join(out_dir, "latency-samples.tsv"), "w") as f:
        f.write("content\tsend_ms\tsend_to_poll_ms\tsend_to_row_ms\trow_to_lease_ms\tlease_to_answer_ms\n")
        for content, t0_wall, ack_ms, total_ms, t1_wall in samples:
            cells = ["", "", ""]
            if content in rows:
                created, delivered = rows[content]
                parts = ((created - t0_wall) * 1000, (delivered - created) * 1000, (t1_wall - delivered) * 1000)
                for name, v in zip(("row", "lease", "back"), parts):
                    split[name].append(v)
                cells = [f"{v:.1f}" for v in parts]
            f.write(f"{content}\t{ack_ms:.1f}\t{total_ms:.1f}\t" + "\t".join(cells) + "\n")

    totals = sorted(s[3] for s in samples)
    split["ack"] = [s[2] for s in samples]

    print(f"BENCHRESULT samples={len(totals)} send_failed={send_failed} missed={missed} stray={poller.stray}")
    print(f"BENCHLAT total {stats(totals)}")
    for name in ("ack", "row", "lease", "back"):
        print(f"BENCHLAT {name} {stats(split[name])}")


def main():
    if len(sys.argv) == 4 and sys.argv[1] == "send":
        cmd_send(int(sys.argv[2]), int(sys.argv[3]))
    elif len(sys.argv) == 3 and sys.argv[1] == "latency":
        cmd_latency(int(sys.argv[2]))
    else:
        print(__doc__, file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
