"""What the fake HTTP servers of agentbus' end-to-end tests have in common
(tests/fake_llm/fake_openai.py, tests/fake_notify/fake_feishu.py,
tests/fake_notify/webhook_receiver.py): a request handler that speaks HTTP/1.1 keep-alive
with TCP_NODELAY, reads request bodies, answers with a Content-Length and records requests
for GET /_fake/requests; and serve(), which binds, prints the port (one line, the number
alone: the tests read it from stdout) and serves until killed.

The fakes are run as scripts; each puts this directory (tests/) on sys.path to import it.
Standard library only.
"""
import json
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

MAX_BODY = 20 << 20  # OpenClaw's request body limit; the fakes take no more either


def dumps(obj):
    """Compact JSON, as the real servers write it."""
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)


def parse_json(raw):
    """The JSON value of raw bytes, None if empty or not JSON."""
    try:
        return json.loads(raw) if raw else None
    except ValueError:
        return None


class BaseHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive (and chunked streams), as real servers do
    # TCP_NODELAY on accepted sockets (StreamRequestHandler.setup), as real servers set it:
    # with Nagle, each small write after the first waits for the client's delayed ACK (40 ms
    # on Linux) on a kept-alive connection, which would show up as the client's latency.
    disable_nagle_algorithm = True
    json_type = "application/json"  # the Content-Type of send_json

    def log_message(self, fmt, *args):  # quiet: tests read stdout for the port only
        pass

    def handle_one_request(self):
        try:
            super().handle_one_request()
        except (BrokenPipeError, ConnectionResetError):  # the client gave up (timeout tests)
            self.close_connection = True

    def read_body(self, max_bytes=MAX_BODY):
        """The raw request body (Content-Length or chunked), None if unreadable/too big."""
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            parts, total = [], 0
            while True:
                line = self.rfile.readline(65537)
                try:
                    size = int(line.split(b";")[0].strip(), 16)
                except ValueError:
                    return None
                if size == 0:
                    while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(parts)
                total += size
                if total > max_bytes:
                    return None
                parts.append(self.rfile.read(size))
                self.rfile.readline(65537)
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            return None
        if length > max_bytes or length < 0:
            return None
        return self.rfile.read(length) if length else b""

    def send_bytes(self, status, data, content_type=None, headers=None, length=None):
        """An answer with a Content-Length (length, when given, is the one announced, which
        may promise more than data); no Content-Type header when content_type is None."""
        self.send_response(status)
        if content_type:
            self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data) if length is None else length))
        for k, v in (headers or {}).items():
            self.send_header(k, str(v))
        self.end_headers()
        if data:
            self.wfile.write(data)

    def send_json(self, status, obj, headers=None):
        """obj as compact JSON; None: an empty body without a Content-Type (204, 304)."""
        data = b"" if obj is None else dumps(obj).encode()
        self.send_bytes(status, data, self.json_type if data else None, headers)

    def request_record(self, raw, path, query=None):
        """{time, method, path, query (only when given), headers (lower-case names), body
        (parsed JSON or None), raw_body (text)}: a request as GET /_fake/requests lists it."""
        rec = {"time": time.time(), "method": self.command, "path": path}
        if query is not None:
            rec["query"] = query
        rec.update(headers={k.lower(): v for k, v in self.headers.items()},
                   body=parse_json(raw), raw_body=raw.decode("utf-8", "replace"))
        return rec

    def record(self, raw, requests, lock, path, query=None):
        """Appends this request's record to the list requests; returns its parsed body."""
        rec = self.request_record(raw, path, query)
        with lock:
            rec["time"] = time.time()  # taken under the lock: the list stays in time order
            requests.append(rec)
        return rec["body"]


class Server(ThreadingHTTPServer):
    # A listen backlog for many connections at once (bench/llm.sh opens thousands of
    # streams); socketserver's default is 5.
    request_queue_size = 1024
    daemon_threads = True


def serve(handler_cls, host, port, configure=None):
    """Binds host:port (0 picks a free port), calls configure(server) if given, prints the
    port and serves until killed (or interrupted)."""
    server = Server((host, port), handler_cls)
    if configure:
        configure(server)
    print(server.server_address[1], flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
