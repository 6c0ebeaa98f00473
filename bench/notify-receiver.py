#!/usr/bin/env python3
"""The notifier benchmark's webhook receiver: a keep-alive HTTP/1.1 server on asyncio that
answers every POST at once (200, empty body) and notes, per request, when it came and the
payload's "timestamp" (the source event's time), so the client can compute event-to-delivery
latency. Much cheaper per request than tests/fake_notify/webhook_receiver.py (a thread per
connection, every signature checked), which would be the bottleneck: this one checks the
Standard Webhooks signature of every SAMPLE-th request only (and of the first), and counts
the ones that fail.

    python3 bench/notify-receiver.py --port 0 --secret whsec_... [--sample 500]

prints its port, then serves until killed. Control, on the same port:
    GET  /_stats  {"count", "unique_ids", "first", "last", "checked", "bad_signatures"}
    GET  /_dump   [[arrival_epoch_s, "timestamp"], ...] for every request so far
    POST /_reset  forgets everything
Standard library only."""
import argparse
import asyncio
import base64
import hashlib
import hmac
import json
import re
import socket
import time

TS = re.compile(rb'"timestamp":"([^"]+)"')
OK = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"


class State:
    def __init__(self, secret, sample):
        self.key = base64.b64decode(secret[len("whsec_"):] if secret.startswith("whsec_") else secret)
        self.sample = sample
        self.reset()

    def reset(self):
        self.arrivals = []  # (epoch seconds, timestamp bytes)
        self.ids = set()
        self.checked = 0
        self.bad = 0

    def verify(self, headers, body):
        msg_id, ts, sigs = (headers.get(b"webhook-id", b""), headers.get(b"webhook-timestamp", b""),
                            headers.get(b"webhook-signature", b""))
        want = base64.b64encode(hmac.new(self.key, msg_id + b"." + ts + b"." + body,
                                         hashlib.sha256).digest())
        self.checked += 1
        if not any(s.startswith(b"v1,") and hmac.compare_digest(s[3:], want) for s in sigs.split()):
            self.bad += 1


class Conn(asyncio.Protocol):
    def __init__(self, state):
        self.state = state
        self.buf = bytearray()

    def connection_made(self, transport):
        self.t = transport
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data):
        self.buf += data
        out = []
        while True:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                break
            head = bytes(self.buf[:end])
            lines = head.split(b"\r\n")
            headers = {}
            for line in lines[1:]:
                name, _, value = line.partition(b":")
                headers[name.strip().lower()] = value.strip()
            length = int(headers.get(b"content-length", b"0"))
            if len(self.buf) < end + 4 + length:
                break
            body = bytes(self.buf[end + 4:end + 4 + length])
            del self.buf[:end + 4 + length]
            out.append(self.handle(lines[0], headers, body))
        if out:
            self.t.write(b"".join(out))

    def handle(self, request_line, headers, body):
        parts = request_line.split(b" ")
        method, path = parts[0], parts[1] if len(parts) > 1 else b"/"
        s = self.state
        if path == b"/_stats":
            arr = s.arrivals
            return reply({"count": len(arr), "unique_ids": len(s.ids),
                          "first": arr[0][0] if arr else None, "last": arr[-1][0] if arr else None,
                          "checked": s.checked, "bad_signatures": s.bad})
        if path == b"/_dump":
            return reply([[a, t.decode()] for a, t in s.arrivals])
        if path == b"/_reset":
            s.reset()
            return reply({"ok": True})
        now = time.time()
        m = TS.search(body)
        s.arrivals.append((now, m.group(1) if m else b""))
        s.ids.add(headers.get(b"webhook-id", b""))
        if len(s.arrivals) == 1 or len(s.arrivals) % s.sample == 0:
            s.verify(headers, body)
        return OK


def reply(obj):
    data = json.dumps(obj).encode()
    return b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (
        len(data), data)


async def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--secret", required=True)
    ap.add_argument("--sample", type=int, default=500)
    args = ap.parse_args()
    state = State(args.secret, args.sample)
    server = await asyncio.get_running_loop().create_server(lambda: Conn(state), "127.0.0.1",
                                                             args.port, backlog=1024)
    print(server.sockets[0].getsockname()[1], flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        pass
