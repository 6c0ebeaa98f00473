"""agentbusctl tail, driven as an operator drives it: the binary as a subprocess reading the
test's own broker (the services' KAFKA_BOOTSTRAP and topic prefix, or --bootstrap and
--prefix), while events are caused through ingress and the dispatcher, or produced by hand
when they must be broken."""
import ctypes
import ctypes.util
import datetime
import json
import os
import queue
import signal
import subprocess
import threading
import time
import uuid

from conftest import BIN, SANITIZER_MARKERS, free_port, gateway_key, gateway_send, new_tenant

CTL = os.path.join(BIN, "agentbusctl")
KAFKA_ENV = ("KAFKA_BOOTSTRAP", "AGENTBUS_KAFKA_BOOTSTRAP", "AGENTBUS_KAFKA_TOPIC_PREFIX", "AGENTBUS_CONFIG")


def tail_env(stack, **overrides):
    env = stack.broker.env()
    env.pop("AGENTBUS_CONFIG", None)
    for k, v in overrides.items():
        if v is None:
            env.pop(k, None)
        else:
            env[k] = v
    return env


def run_tail(stack, *args, timeout=60, **env):
    """agentbusctl tail to its end (--count, or an error); the CompletedProcess."""
    out = subprocess.run([CTL, "tail", *args], env=tail_env(stack, **env), cwd=stack.workdir,
                         capture_output=True, text=True, timeout=timeout)
    for marker in SANITIZER_MARKERS:
        assert marker not in out.stderr, out.stderr
    return out


class Tail:
    """agentbusctl tail running in the background; its stdout lines as they come."""

    def __init__(self, stack, *args, **env):
        self.proc = subprocess.Popen([CTL, "tail", *args], env=tail_env(stack, **env), cwd=stack.workdir,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.lines = queue.Queue()
        self.seen = []
        self.stderr = []
        threading.Thread(target=self._read, args=(self.proc.stdout, self.lines.put), daemon=True).start()
        threading.Thread(target=self._read, args=(self.proc.stderr, self.stderr.append), daemon=True).start()
        # The start offsets are fixed once it says so: what is produced after is never missed.
        deadline = time.monotonic() + 30
        while not any("tailing" in line for line in self.stderr):
            assert self.proc.poll() is None, f"tail exited {self.proc.returncode}: {''.join(self.stderr)}"
            assert time.monotonic() < deadline, "tail did not start: " + "".join(self.stderr)
            time.sleep(0.05)

    @staticmethod
    def _read(pipe, put):
        for line in pipe:
            put(line)

    def wait_for(self, predicate, timeout=15, what="a line"):
        """The first line (past the ones already returned) for which predicate is true."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no {what} within {timeout}s; got {self.seen!r}; stderr "
                                     f"{''.join(self.stderr)!r}")
            try:
                line = self.lines.get(timeout=left)
            except queue.Empty:
                continue
            self.seen.append(line)
            if predicate(line):
                return line

    def drain(self, seconds=1.0):
        """Every line that comes within `seconds` (to show that nothing else comes)."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            try:
                self.seen.append(self.lines.get(timeout=max(0.01, deadline - time.monotonic())))
            except queue.Empty:
                pass
        return self.seen

    def json_lines(self):
        return [json.loads(line) for line in self.seen]

    def stop(self, sig=signal.SIGINT):
        """Sends sig; the exit status (tail must stop by itself within 10 s)."""
        self.proc.send_signal(sig)
        code = self.proc.wait(timeout=10)
        time.sleep(0.1)  # the reader threads take the last lines
        while not self.lines.empty():
            self.seen.append(self.lines.get())
        text = "".join(self.stderr)
        for marker in SANITIZER_MARKERS:
            assert marker not in text, text
        return code


def publish(stack, type_, **fields):
    status, body, _ = stack.publish(type_, **fields)
    assert status == 202, body
    return body["id"]


def envelope(type_="demo.poked", data=None, subject=None):
    ev = {"specversion": "1.0", "id": str(uuid.uuid4()), "type": type_, "source": "/e2e/tail",
          "time": datetime.datetime.now(datetime.timezone.utc).isoformat().replace("+00:00", "Z"),
          "datacontenttype": "application/json", "data": data if data is not None else {}}
    if subject:
        ev["subject"] = subject
    return ev


def test_tail_shows_a_live_event_as_a_line_and_as_json(stack):
    stack.start("ingress")
    before = publish(stack, "demo.before", data={"text": "already there"})
    # A base name gets the prefix; the full base name too.
    human = Tail(stack, "ingress")
    as_json = Tail(stack, "agentbus.ingress", "--json")

    started = time.monotonic()
    event_id = publish(stack, "demo.hello", subject="demo", data={"text": "hi there", "n": 1})
    line = human.wait_for(lambda l: event_id[:8] in l, 10, "the event's line")
    assert time.monotonic() - started < 10
    # time, type, short id, subject, then the text.
    fields = line.split()
    assert fields[1] == "demo.hello" and fields[2] == event_id[:8]
    assert "subject=demo" in line and line.rstrip().endswith('"hi there"')
    assert datetime.datetime.fromisoformat(fields[0].replace("Z", "+00:00"))

    got = json.loads(as_json.wait_for(lambda l: event_id in l, 10, "the event's JSON line"))
    assert got["topic"] == stack.broker.topic("agentbus.ingress")
    assert isinstance(got["partition"], int) and isinstance(got["offset"], int)
    assert isinstance(got["timestamp"], int) and "key" in got
    ev = got["event"]  # the envelope as it was sent
    assert ev["id"] == event_id and ev["type"] == "demo.hello" and ev["specversion"] == "1.0"
    assert ev["subject"] == "demo" and ev["data"] == {"text": "hi there", "n": 1}

    # From now: the event from before it started is not shown. Ctrl-C and SIGTERM end it, 0.
    assert human.stop(signal.SIGINT) == 0
    assert as_json.stop(signal.SIGTERM) == 0
    assert not any(before[:8] in l for l in human.seen)
    assert not any(before in l for l in as_json.seen)


def test_from_beginning_and_from_a_time_in_the_past(stack):
    stack.start("ingress")
    first = publish(stack, "demo.first")
    time.sleep(1.5)
    mark = datetime.datetime.now(datetime.timezone.utc)
    time.sleep(0.5)
    second = publish(stack, "demo.second")

    out = run_tail(stack, "ingress", "--from", "beginning", "--count", "2", "--json")
    assert out.returncode == 0, out.stderr
    assert sorted(json.loads(l)["event"]["id"] for l in out.stdout.splitlines()) == sorted([first, second])

    out = run_tail(stack, "ingress", "--from", "10m", "--count", "2")
    assert out.returncode == 0, out.stderr
    assert {l.split()[2] for l in out.stdout.splitlines()} == {first[:8], second[:8]}

    # An RFC 3339 time between the two: only the second, then nothing more.
    for text in (mark.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
                 mark.astimezone(datetime.timezone(datetime.timedelta(hours=2))).isoformat()):
        t = Tail(stack, "ingress", "--from", text, "--json")
        t.wait_for(lambda l: second in l, 10, "the second event")
        t.drain(1.5)
        assert t.stop() == 0
        assert [e["event"]["id"] for e in t.json_lines()] == [second], text


def test_filters_by_type_agent_and_conversation(stack):
    stack.start("ingress")
    stack.start("dispatcher")
    tenant = new_tenant(stack)

    def agent(name):
        return stack.sql(f"INSERT INTO agents (tenant_id, name, type) VALUES ('{tenant}', '{name}', 'openclaw') "
                         "RETURNING id")

    alice, bob, carol = agent("Alice"), agent("Bob"), agent("Carol")
    for a, b in ((alice, bob), (carol, alice)):
        stack.sql(f"INSERT INTO agent_agent_relationships (agent_id, target_agent_id, relation) "
                  f"VALUES ('{a}', '{b}', 'peer')")

    everything = Tail(stack, "--json")  # agentbus.events by default
    sessions = Tail(stack, "--json", "--type", "agentbus.session.*")
    both_types = Tail(stack, "--json", "--type", "agentbus.session.started", "--type=agentbus.message.received")
    no_type = Tail(stack, "--json", "--type", "agentbus.message.sent")
    by_bob = Tail(stack, "--json", "--agent", "bob")  # a name, in any case
    by_carol = Tail(stack, "--json", "--agent", carol)  # an id
    human = Tail(stack, "--type", "agentbus.message.received")

    gateway_send(stack, gateway_key(stack, alice), "bob", "Can you review PR 42?")
    gateway_send(stack, gateway_key(stack, carol), "alice", "Lunch?")

    # Each first message: agentbus.session.started, then agentbus.message.received.
    got = {}
    for _ in range(4):
        ev = json.loads(everything.wait_for(lambda l: True, 20, "four events"))["event"]
        got[ev["id"]] = ev
    received = {ev["data"]["content"]: ev for ev in got.values() if ev["type"] == "agentbus.message.received"}
    assert sorted(received) == ["Can you review PR 42?", "Lunch?"]
    conv_ab = received["Can you review PR 42?"]["data"]["conversation_id"]
    conv_ca = received["Lunch?"]["data"]["conversation_id"]
    assert conv_ab and conv_ca and conv_ab != conv_ca

    def ids(tail):
        tail.drain(1.5)
        assert tail.stop() == 0
        return sorted(line["event"]["id"] for line in tail.json_lines())

    def where(pred):
        return sorted(i for i, ev in got.items() if pred(ev))

    assert ids(sessions) == where(lambda ev: ev["type"] == "agentbus.session.started")
    assert len(where(lambda ev: ev["type"] == "agentbus.session.started")) == 2
    assert ids(both_types) == sorted(got)
    assert ids(no_type) == []
    assert ids(by_bob) == where(lambda ev: ev["data"]["conversation_id"] == conv_ab)
    assert ids(by_carol) == where(lambda ev: ev["data"]["conversation_id"] == conv_ca)

    human.drain(1.5)
    assert human.stop() == 0
    lines = sorted(human.seen)
    assert len(lines) == 2, lines
    line = next(l for l in lines if "PR 42" in l)
    assert f"from=Alice to=Bob conv={conv_ab[:8]}" in line and line.rstrip().endswith('"Can you review PR 42?"')

    # --conversation: its id (from the beginning, so the events are there already), with a type.
    out = run_tail(stack, "--from", "beginning", "--conversation", conv_ca, "--count", "2", "--json")
    assert out.returncode == 0, out.stderr
    assert sorted(json.loads(l)["event"]["id"] for l in out.stdout.splitlines()) == \
        where(lambda ev: ev["data"]["conversation_id"] == conv_ca)
    t = Tail(stack, "--from", "beginning", "--conversation", conv_ab, "--type", "agentbus.message.received",
             "--json")
    assert ids(t) == [received["Can you review PR 42?"]["id"]]
    t = Tail(stack, "--from", "beginning", "--conversation", str(uuid.uuid4()), "--json")
    assert ids(t) == []
    # The message itself, on agentbus.ingress, has no conversation id: its Kafka key names it.
    key = "agents:" + ":".join(sorted([alice, bob]))
    out = run_tail(stack, "ingress", "--from", "beginning", "--conversation", key, "--count", "1", "--json")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["event"]["data"]["content"] == "Can you review PR 42?"


def test_a_poison_message_is_printed_and_tail_goes_on(stack):
    topic = stack.broker.topic("agentbus.events")
    # The broker from the command line alone: no Kafka variables in the environment.
    flags = ("--bootstrap", stack.broker.bootstrap, "--prefix", stack.broker.prefix)
    no_kafka_env = {k: None for k in KAFKA_ENV}
    human = Tail(stack, *flags, **no_kafka_env)
    as_json = Tail(stack, "--json", *flags, **no_kafka_env)

    stack.broker.produce(topic, "this is not an envelope {")
    stack.broker.produce(topic, json.dumps({"specversion": "1.0", "id": "x"}))  # JSON, not an envelope
    ev = envelope("demo.after", {"content": "still here \x1b[2J\nnext line"}, subject="s1")
    stack.broker.produce(topic, json.dumps(ev), key="k1")

    # Three lines, in any order: the messages went to partitions at random.
    lines = [human.wait_for(lambda l: True, 10, "three lines") for _ in range(3)]
    [bad_json] = [l for l in lines if "this is not an envelope {" in l]
    assert "(not an event)" in bad_json and "partition" in bad_json and "offset" in bad_json
    [no_type] = [l for l in lines if 'missing required attribute "type"' in l]
    assert "(not an event)" in no_type
    [line] = [l for l in lines if ev["id"][:8] in l]
    # What an event says never reaches the terminal as control characters.
    assert "\x1b" not in line and line.count("\n") == 1 and '"still here' in line

    lines = [json.loads(as_json.wait_for(lambda l: True, 10, "three lines")) for _ in range(3)]
    poison = [l for l in lines if "event" not in l]
    assert sorted(p["value"] for p in poison) == sorted(['this is not an envelope {',
                                                         json.dumps({"specversion": "1.0", "id": "x"})])
    assert all(p["error"].startswith("envelope:") and p["topic"] == topic for p in poison)
    [good] = [l for l in lines if "event" in l]
    assert good["event"] == ev and good["key"] == "k1"
    assert human.stop() == 0 and as_json.stop() == 0


class Committed:
    """Reads (and, for the control, writes) a group's committed offsets with librdkafka
    itself, through ctypes: the tests have no Kafka client of their own."""

    class TP(ctypes.Structure):
        _fields_ = [("topic", ctypes.c_char_p), ("partition", ctypes.c_int32), ("offset", ctypes.c_int64),
                    ("metadata", ctypes.c_void_p), ("metadata_size", ctypes.c_size_t),
                    ("opaque", ctypes.c_void_p), ("err", ctypes.c_int), ("_private", ctypes.c_void_p)]

    class TPL(ctypes.Structure):
        _fields_ = [("cnt", ctypes.c_int), ("size", ctypes.c_int), ("elems", ctypes.c_void_p)]

    def __init__(self, bootstrap, group):
        lib = self.lib = ctypes.CDLL(ctypes.util.find_library("rdkafka") or "librdkafka.so.1")
        lib.rd_kafka_conf_new.restype = ctypes.c_void_p
        lib.rd_kafka_conf_set.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_char_p,
                                          ctypes.c_char_p, ctypes.c_size_t]
        lib.rd_kafka_new.restype = ctypes.c_void_p
        lib.rd_kafka_new.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_char_p, ctypes.c_size_t]
        lib.rd_kafka_topic_partition_list_new.restype = ctypes.POINTER(self.TPL)
        lib.rd_kafka_topic_partition_list_add.restype = ctypes.POINTER(self.TP)
        lib.rd_kafka_topic_partition_list_add.argtypes = [ctypes.POINTER(self.TPL), ctypes.c_char_p,
                                                          ctypes.c_int32]
        lib.rd_kafka_topic_partition_list_destroy.argtypes = [ctypes.POINTER(self.TPL)]
        lib.rd_kafka_committed.argtypes = [ctypes.c_void_p, ctypes.POINTER(self.TPL), ctypes.c_int]
        lib.rd_kafka_commit.argtypes = [ctypes.c_void_p, ctypes.POINTER(self.TPL), ctypes.c_int]
        lib.rd_kafka_destroy.argtypes = [ctypes.c_void_p]
        conf = lib.rd_kafka_conf_new()
        for k, v in (("bootstrap.servers", bootstrap), ("group.id", group), ("enable.auto.commit", "false")):
            assert lib.rd_kafka_conf_set(conf, k.encode(), v.encode(), None, 0) == 0
        err = ctypes.create_string_buffer(512)
        self.rk = lib.rd_kafka_new(1, conf, err, 512)  # RD_KAFKA_CONSUMER
        assert self.rk, err.value

    def _list(self, topic, offsets):
        tpl = self.lib.rd_kafka_topic_partition_list_new(len(offsets))
        for p, off in enumerate(offsets):
            self.lib.rd_kafka_topic_partition_list_add(tpl, topic.encode(), p).contents.offset = off
        return tpl

    def get(self, topic, partitions):
        tpl = self._list(topic, [-1001] * partitions)
        assert self.lib.rd_kafka_committed(self.rk, tpl, 10000) == 0
        elems = ctypes.cast(tpl.contents.elems, ctypes.POINTER(self.TP))
        offsets = [elems[i].offset for i in range(partitions)]
        self.lib.rd_kafka_topic_partition_list_destroy(tpl)
        return offsets

    def commit(self, topic, offsets):
        tpl = self._list(topic, offsets)
        assert self.lib.rd_kafka_commit(self.rk, tpl, 0) == 0
        self.lib.rd_kafka_topic_partition_list_destroy(tpl)

    def close(self):
        self.lib.rd_kafka_destroy(self.rk)


def test_tail_leaves_no_committed_offsets(stack):
    topic = stack.broker.topic("agentbus.events")
    partitions = 12  # agentbus.events on the dev broker (common/topics.c); at most that elsewhere
    for i in range(3):
        stack.broker.produce(topic, json.dumps(envelope(data={"n": i})), key=f"k{i}")
    group = "e2e-tail-" + uuid.uuid4().hex[:8]
    out = run_tail(stack, "--from", "beginning", "--count", "3", "--group", group)
    assert out.returncode == 0 and len(out.stdout.splitlines()) == 3, out.stderr
    assert f"as {group}" in out.stderr
    t = Tail(stack, "--from", "beginning", "--group", group)
    t.wait_for(lambda l: True, 10, "an event")
    assert t.stop() == 0
    # And its default group is its own: agentbusctl-tail-<host>-<pid>-<random>.
    t = Tail(stack, "--from", "beginning")
    t.wait_for(lambda l: True, 10, "an event")
    assert t.stop(signal.SIGTERM) == 0
    default_group = "".join(t.stderr).split(" as ")[1].split(";")[0]
    assert default_group.startswith("agentbusctl-tail-") and f"-{t.proc.pid}-" in default_group

    for g in (group, default_group):
        reader = Committed(stack.broker.bootstrap, g)
        try:
            assert reader.get(topic, partitions) == [-1001] * partitions, g  # RD_KAFKA_OFFSET_INVALID
        finally:
            reader.close()
    # The control: a commit made the same way is seen. Partition 0 only: on a real broker the
    # test's topics are auto-created with the broker's partition count, not 12.
    control = Committed(stack.broker.bootstrap, group + "-control")
    try:
        control.commit(topic, [1])
        assert control.get(topic, 1) == [1]
    finally:
        control.close()


def test_unknown_topics_and_bad_options_are_clear_errors(stack):
    out = run_tail(stack, "no-such-topic")
    assert out.returncode == 1 and out.stdout == ""
    assert 'no topic "no-such-topic"' in out.stderr and stack.broker.bootstrap in out.stderr
    # Asking did not create it (the dev broker creates topics that are asked for by name).
    out = run_tail(stack, "no-such-topic")
    assert out.returncode == 1 and 'no topic "no-such-topic"' in out.stderr
    # A base name gets the prefix in effect: here one nothing was made under (an unprefixed
    # agentbus.events may exist on a shared real broker: `make kafka` creates it).
    absent = f"absent{os.getpid()}{int(time.time())}."
    out = run_tail(stack, "events", AGENTBUS_KAFKA_TOPIC_PREFIX=absent)
    assert out.returncode == 1 and f'no topic "{absent}agentbus.events"' in out.stderr, out.stderr

    for args, words in ((["--from", "yesterday"], "--from takes now, beginning"),
                        (["--from", "2999-01-01T00:00:00Z"], "in the future"),
                        (["--from", "5 minutes"], "--from takes"),
                        (["--count", "0"], "--count takes"),
                        (["--count", "many"], "--count takes"),
                        (["--type"], "--type needs a value"),
                        (["--agent", "a", "--agent", "b"], "--agent is given twice"),
                        (["--json=yes"], "does not take --json"),
                        (["--frm", "now"], "does not take --frm"),
                        (["events", "ingress"], "one TOPIC"),
                        (["bad topic!"], "is not a topic name")):
        out = run_tail(stack, *args)
        assert out.returncode == 2, (args, out.stderr)
        assert words in out.stderr and "usage:" in out.stderr, (args, out.stderr)
        assert out.stdout == ""
    # tail's options come after it.
    out = subprocess.run([CTL, "-q", "tail"], env=tail_env(stack), capture_output=True, text=True, timeout=30)
    assert out.returncode == 2 and "tail comes first" in out.stderr

    # No Kafka configured: the variable to set is named. Configured but away: exit 1.
    out = run_tail(stack, **{k: None for k in KAFKA_ENV})
    assert out.returncode == 2 and "KAFKA_BOOTSTRAP" in out.stderr
    out = run_tail(stack, "--bootstrap", f"127.0.0.1:{free_port()}")
    assert out.returncode == 1 and "cannot reach Kafka" in out.stderr

    out = subprocess.run([CTL, "tail", "--help"], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0 and "--from now|beginning|TIME" in out.stdout
    out = subprocess.run([CTL, "--help"], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0 and "agentbusctl tail [TOPIC]" in out.stdout
