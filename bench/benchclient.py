"""What the benchmark clients (bench/gateway-client.py, bench/llm-client.py) share: a loopback
keep-alive HTTP connection per agent, the environment, percentiles and psql. Standard
library only, so the clients run on the system's python3."""
import http.client
import json
import os
import subprocess
import sys
import urllib.parse

TIMEOUT_S = 30
NAME = os.path.basename(sys.argv[0]).removesuffix(".py")


def die(msg):
    print(f"{NAME}: {msg}", file=sys.stderr)
    sys.exit(1)


def env(name):
    value = os.environ.get(name)
    if not value:
        die(f"{name} is not set")
    return value


def connect(base_url, timeout=TIMEOUT_S):
    """A connection to base_url, which must be on loopback."""
    url = urllib.parse.urlsplit(base_url)
    if url.hostname not in ("127.0.0.1", "localhost"):
        die(f"{base_url} is not on 127.0.0.1: refusing")
    return http.client.HTTPConnection(url.hostname, url.port or 80, timeout=timeout)


class Agent:
    """One agent's keep-alive connection to the gateway (X-Api-Key); reconnects once after a
    dropped connection."""

    def __init__(self, key, api=None, timeout=TIMEOUT_S):
        self.key = key
        self.api = api or os.environ.get("BENCH_API", "http://127.0.0.1:8080")
        self.timeout = timeout
        self.conn = connect(self.api, timeout)

    def call(self, method, path, body=None):
        headers = {"X-Api-Key": self.key}
        payload = None
        if body is not None:
            payload = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        for attempt in (1, 2):
            try:
                self.conn.request(method, path, payload, headers)
                resp = self.conn.getresponse()
                data = resp.read()
                break
            except (http.client.HTTPException, OSError):
                self.conn.close()
                self.conn = connect(self.api, self.timeout)
                if attempt == 2:
                    raise
        try:
            parsed = json.loads(data) if data else None
        except ValueError:
            parsed = None
        return resp.status, parsed, data

    def send(self, target, content):
        return self.call("POST", "/api/gateway/send-message", {"target": target, "content": content})


def percentile(sorted_values, p):
    """Nearest-rank percentile of an already sorted list (p in 0..100)."""
    if not sorted_values:
        return float("nan")
    rank = max(1, -(-len(sorted_values) * p // 100))  # ceil(n * p / 100)
    return sorted_values[int(rank) - 1]


def stats(values):
    """n, p50, p90, p99, max and min of values, as one line of key=value."""
    v = sorted(values)
    if not v:
        return "n=0"
    return (f"n={len(v)} p50={percentile(v, 50):.1f} p90={percentile(v, 90):.1f}"
            f" p99={percentile(v, 99):.1f} max={v[-1]:.1f} min={v[0]:.1f}")


def psql(url, sql, variables=None, timeout=120):
    """The rows of sql (psql -At, tab-separated) as lists of strings; :'name' in sql takes
    variables[name], quoted by psql."""
    args = ["psql", url, "-XAtq", "-F", "\t", "-v", "ON_ERROR_STOP=1"]
    for k, v in (variables or {}).items():
        args += ["-v", f"{k}={v}"]
    out = subprocess.run(args, input=sql, capture_output=True, text=True, timeout=timeout)
    if out.returncode != 0:
        raise RuntimeError(f"psql: {out.stderr.strip()[:500]}")
    return [line.split("\t") for line in out.stdout.splitlines() if line]
