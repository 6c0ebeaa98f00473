"""End-to-end harness: starts the real binaries against a real PostgreSQL and a Kafka-protocol
broker (agentbus-devbroker, or the broker in KAFKA_BOOTSTRAP), and drives them over HTTP.

Every test gets its own database and its own topic prefix, so tests never see each other's
data, even on one shared real Kafka. Service logs are kept per test; a sanitizer report in
any of them fails the test.
"""
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
import uuid

import pytest

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
BIN = os.path.abspath(os.environ.get("AGENTBUS_BIN", os.path.join(ROOT, "build", "release", "bin")))
ADMIN_TOKEN = "e2e-admin-token-" + uuid.uuid4().hex
SERVICES = ("ingress", "dispatcher", "llm-worker", "notifier")
SANITIZER_MARKERS = ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http(method, url, body=None, headers=None, timeout=20):
    """Returns (status, parsed JSON or text, headers). Never raises on HTTP errors."""
    data = None
    if body is not None:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            status, raw, hdrs = resp.status, resp.read(), resp.headers
    except urllib.error.HTTPError as e:
        status, raw, hdrs = e.code, e.read(), e.headers
    text = raw.decode("utf-8", "replace")
    try:
        return status, json.loads(text), hdrs
    except ValueError:
        return status, text, hdrs


def new_tenant(stack):
    return stack.sql(f"INSERT INTO tenants (name) VALUES ('t-{uuid.uuid4().hex[:6]}') RETURNING id")


def gateway_key(stack, agent_id):
    """A gateway API key for the agent, issued through the admin API."""
    status, body, _ = http("POST", f"{stack.api}/api/gateway/agents/{agent_id}/api-key", b"",
                           {"Authorization": "Bearer " + ADMIN_TOKEN})
    assert status == 201, body
    return body["api_key"]


def gateway_send(stack, key, target, content):
    """POST /api/gateway/send-message as the agent whose key this is; the answer's body."""
    status, body, _ = http("POST", stack.api + "/api/gateway/send-message",
                           json.dumps({"target": target, "content": content}).encode(),
                           {"X-Api-Key": key})
    assert status == 200, body
    return body


def wait_until(predicate, timeout=30.0, interval=0.2, what="condition"):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


class Postgres:
    """The test cluster (scripts/pg.sh), or AGENTBUS_TEST_DATABASE_URL when given."""

    def __init__(self, base_url):
        self.base_url = base_url

    def url_for(self, db):
        head, _, _ = self.base_url.rpartition("/")
        return f"{head}/{db}"

    def psql(self, url, sql):
        out = subprocess.run(["psql", url, "-v", "ON_ERROR_STOP=1", "-tAqX", "-c", sql],
                             capture_output=True, text=True, timeout=30)
        if out.returncode != 0:
            raise AssertionError(f"psql failed: {out.stderr}")
        return out.stdout.strip()


@pytest.fixture(scope="session")
def postgres():
    url = os.environ.get("AGENTBUS_TEST_DATABASE_URL")
    tmp = None
    if not url:
        tmp = tempfile.mkdtemp(prefix="agentbus-e2e-pg-")
        url = subprocess.run([os.path.join(ROOT, "scripts", "pg.sh"), "start", tmp, str(free_port())],
                             check=True, capture_output=True, text=True).stdout.strip()
    yield Postgres(url)
    if tmp:
        subprocess.run([os.path.join(ROOT, "scripts", "pg.sh"), "stop", tmp], check=False)
        shutil.rmtree(tmp, ignore_errors=True)


class Broker:
    """A Kafka-protocol broker for one test: its own agentbus-devbroker (librdkafka's mock
    cluster), or the shared real broker in KAFKA_BOOTSTRAP with a fresh topic prefix."""

    def __init__(self, workdir, prefix):
        self.workdir = workdir
        self.prefix = prefix
        self.real = bool(os.environ.get("KAFKA_BOOTSTRAP"))
        self.proc = None
        if self.real:
            self.bootstrap = os.environ["KAFKA_BOOTSTRAP"]
            run([os.path.join(BIN, "agentbus-topics"), "--partitions", "3"], self.env(), check=True)
        else:
            path = os.path.join(workdir, "kafka.bootstrap")
            self.log = open(os.path.join(workdir, "devbroker.log"), "ab")
            self.proc = subprocess.Popen([os.path.join(BIN, "agentbus-devbroker"), "--bootstrap-file", path],
                                         env=self.env(), stdout=self.log, stderr=subprocess.STDOUT)
            wait_until(lambda: os.path.exists(path) and open(path).read().strip(), 10, 0.05, "devbroker")
            self.bootstrap = open(path).read().strip()

    def env(self):
        env = dict(os.environ)
        env["AGENTBUS_KAFKA_TOPIC_PREFIX"] = self.prefix
        if self.real:
            env["KAFKA_BOOTSTRAP"] = os.environ["KAFKA_BOOTSTRAP"]
        elif getattr(self, "bootstrap", None):
            env["KAFKA_BOOTSTRAP"] = self.bootstrap
            # As scripts/stack.sh: the mock cluster holds an empty fetch for the whole wait.
            env.setdefault("AGENTBUS_KAFKA_FETCH_WAIT_MAX_MS", "20")
        env.setdefault("DATABASE_URL", "postgresql://unused@127.0.0.1:1/unused")
        return env

    def topic(self, base):
        return self.prefix + base

    def outage(self, seconds):
        """Takes the broker away for `seconds`, then brings it back."""
        if self.real:
            control = os.environ.get("AGENTBUS_KAFKA_CONTROL")
            if not control:
                pytest.skip("a real broker can only be restarted when AGENTBUS_KAFKA_CONTROL is set")
            subprocess.run([control, "stop"], check=True, timeout=120)
            time.sleep(seconds)
            subprocess.run([control, "start"], check=True, timeout=180, stdout=subprocess.DEVNULL)
        else:
            self.proc.send_signal(signal.SIGUSR1)
            time.sleep(seconds)
            self.proc.send_signal(signal.SIGUSR2)

    def produce(self, topic, value, key=None):
        args = [os.path.join(BIN, "agentbus-kafka"), "produce", topic, "--value", value]
        if key:
            args += ["--key", key]
        run(args, self.env(), check=True)

    def consume(self, topic, count, timeout_ms=15000, idle_ms=None):
        """Up to count messages from the start of topic; with idle_ms, what it holds now (the
        consumer stops idle_ms after the last message)."""
        args = [os.path.join(BIN, "agentbus-kafka"), "consume", topic, "--count", str(count),
                "--timeout-ms", str(timeout_ms)]
        if idle_ms is not None:
            args += ["--idle-ms", str(idle_ms)]
        out = run(args, self.env())
        return [json.loads(line) for line in out.stdout.splitlines() if line.strip()]

    def close(self):
        if self.proc:
            self.proc.terminate()
            self.proc.wait(timeout=10)
            self.log.close()


def run(args, env, check=False):
    out = subprocess.run(args, env=env, capture_output=True, text=True, timeout=120)
    if check and out.returncode != 0:
        raise AssertionError(f"{args[0]} failed ({out.returncode}): {out.stderr}")
    return out


class Service:
    def __init__(self, stack, name, env, args=()):
        self.stack = stack
        self.name = name
        self.env = env
        self.args = list(args)
        self.ops_port = int(env[f"AGENTBUS_{name.upper().replace('-', '_')}_OPS_PORT"])
        self.log_path = os.path.join(stack.workdir, f"{name}.log")
        self.proc = None

    def start(self):
        self.log = open(self.log_path, "ab")
        self.proc = subprocess.Popen([os.path.join(BIN, f"agentbus-{self.name}")] + self.args,
                                     env=self.env, stdout=self.log, stderr=subprocess.STDOUT, cwd=ROOT)
        return self

    def ops(self, path):
        return http("GET", f"http://127.0.0.1:{self.ops_port}{path}", timeout=5)

    def ready(self):
        try:
            return self.ops("/readyz")[0] == 200
        except OSError:
            return False

    def wait_ready(self, timeout=60):
        def check():
            if self.proc.poll() is not None:
                raise AssertionError(f"agentbus-{self.name} exited {self.proc.returncode}:\n{self.logs()[-3000:]}")
            return self.ready()
        wait_until(check, timeout, 0.2, f"{self.name} /readyz")
        return self

    def stop(self, timeout=40):
        """SIGTERM; returns the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait()
            raise AssertionError(f"agentbus-{self.name} did not stop within {timeout}s")
        self.log.close()
        return code

    def logs(self):
        with open(self.log_path, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def metric(self, name, labels=None):
        """The value of one sample on /metrics (0 when absent)."""
        _, text, _ = self.ops("/metrics")
        want = ",".join(f'{k}="{v}"' for k, v in (labels or {}).items())
        for line in text.splitlines():
            if line.startswith("#"):
                continue
            series, _, value = line.rpartition(" ")
            if series == name or (want and series == f"{name}{{{want}}}"):
                return float(value)
        return 0.0


class Stack:
    """One test's system: its database, its broker, and the services it starts."""

    def __init__(self, postgres, workdir):
        self.workdir = workdir
        self.pg = postgres
        self.db = "t_" + uuid.uuid4().hex[:12]
        postgres.psql(postgres.url_for("postgres"), f"CREATE DATABASE {self.db}")
        self.database_url = postgres.url_for(self.db)
        self.broker = Broker(workdir, "e2e" + uuid.uuid4().hex[:8] + ".")
        self.services = {}
        self.api_port = free_port()
        self.webhook_port = free_port()

    def env(self, name, **overrides):
        env = self.broker.env()
        env.update({
            "DATABASE_URL": self.database_url,
            "AGENTBUS_ADMIN_TOKEN": ADMIN_TOKEN,
            "AGENTBUS_LISTEN_HOST": "127.0.0.1",
            "AGENTBUS_DATABASE_MIGRATIONS_DIR": os.path.join(ROOT, "deploy", "migrations"),
            "AGENTBUS_KAFKA_SESSION_TIMEOUT_MS": "10000",
            "AGENTBUS_KAFKA_RETRY_BACKOFF_MAX_MS": "2000",
            "AGENTBUS_INGRESS_API_PORT": str(self.api_port),
            "AGENTBUS_INGRESS_WEBHOOK_PORT": str(self.webhook_port),
            f"AGENTBUS_{name.upper().replace('-', '_')}_OPS_PORT": str(free_port()),
            "ASAN_OPTIONS": "detect_leaks=1:abort_on_error=0:exitcode=99",
            "UBSAN_OPTIONS": "print_stacktrace=1:halt_on_error=1",
            "LSAN_OPTIONS": "suppressions=" + os.path.join(ROOT, "tests", "lsan.supp") + ":print_suppressions=0",
        })
        env.pop("AGENTBUS_CONFIG", None)
        for k, v in overrides.items():
            if v is None:
                env.pop(k, None)
            else:
                env[k] = v
        return env

    def start(self, name, wait=True, args=(), **overrides):
        svc = Service(self, name, self.env(name, **overrides), args).start()
        self.services.setdefault(name, []).append(svc)
        if wait:
            svc.wait_ready()
        return svc

    def start_all(self):
        return {name: self.start(name) for name in SERVICES}

    @property
    def api(self):
        return f"http://127.0.0.1:{self.api_port}"

    def publish(self, type_, data=None, subject=None, key=None):
        body = {"type": type_}
        if data is not None:
            body["data"] = data
        if subject is not None:
            body["subject"] = subject
        if key is not None:
            body["key"] = key
        return http("POST", self.api + "/api/admin/events", body,
                    {"Authorization": "Bearer " + ADMIN_TOKEN, "Content-Type": "application/json"})

    def sql(self, query):
        return self.pg.psql(self.database_url, query)

    def journaled(self, event_id):
        return self.sql(f"SELECT count(*) FROM event_log WHERE id = '{event_id}'") == "1"

    def close(self):
        problems = []
        for name, procs in self.services.items():
            for svc in procs:
                if svc.proc.poll() is None:
                    svc.stop()
                logs = svc.logs()
                for marker in SANITIZER_MARKERS:
                    if marker in logs:
                        problems.append(f"{name}: {marker}\n{logs[logs.index(marker) - 200:][:4000]}")
        self.broker.close()
        try:
            self.pg.psql(self.pg.url_for("postgres"), f"DROP DATABASE IF EXISTS {self.db} WITH (FORCE)")
        except AssertionError:
            pass
        if problems:
            raise AssertionError("sanitizer reports:\n" + "\n".join(problems))


@pytest.fixture
def stack(postgres, tmp_path):
    s = Stack(postgres, str(tmp_path))
    yield s
    s.close()
