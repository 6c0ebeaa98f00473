#!/usr/bin/env python3
"""An outgoing-webhook receiver that verifies Standard Webhooks v1 signatures, for agentbus'
end-to-end tests.

    python3 tests/fake_notify/webhook_receiver.py --port 0 [--host 127.0.0.1]
        [--secret whsec_...]... [--tolerance 300]

prints its port (one line, the number alone) and serves until killed. Any request (POST,
PUT, ...) to a path outside /_fake/ is a delivery to the endpoint that path names (e.g.
/hooks/a). It is verified as Standard Webhooks v1.0.0 says (reference:
/work/shared/reference/integration-facts.md 4.1): headers webhook-id, webhook-timestamp,
webhook-signature; signed content f"{id}.{timestamp}.".encode() + the raw body; key =
base64-decode(secret without its "whsec_" prefix); the signature header is a space-separated
list of "<version>,<base64>"; the request is accepted if any v1 entry matches any --secret
(several during a rotation; other versions are ignored; constant-time compare), and
webhook-timestamp is within --tolerance seconds of now, either way (0 = no timestamp check).
A missing header, a bad timestamp or no matching signature answers 401 {"error": reason}.
Without any --secret nothing is checked (recorded "verified": null).

A verified request is answered by the behaviour of its path (default ok):
    ok        200 {"ok": true}
    status    "status" (default 500) with a small JSON body (none for 204/304); with
              "retry_after" a Retry-After header of that value
    gone      410 {"error": "gone"}
    slow      sleep "seconds" (default 10), then 200 {"ok": true}
    redirect  302 Location: /elsewhere (a sender must not follow it: requests to /elsewhere
              are recorded like any other)
    drop      the connection is closed without an answer
    big       200 with a 1 MiB JSON body
Set at runtime: POST /_fake/behaviour {"path": "/hooks/a", "mode": M, "count": n or null,
"status": code, "seconds": s, "retry_after": value, "replace": bool}. count n: the next n
verified requests to that path, then back to the next queued behaviour or ok; count null or
absent: until changed. A behaviour posted behind a limited one is queued after it; one posted
behind an unlimited one replaces it; "replace": true drops the path's queue first.
GET /_fake/behaviour lists the queues; DELETE /_fake/behaviour[?path=P] resets (all) paths.

Every request is recorded before it is answered: {path, query, method, headers (lower-case
names), body (parsed JSON or null), raw_body (text), webhook_id, verified (true, false, or
null when no secret is set), reason (why not verified, else null), mode (the behaviour
applied, null if unverified), status (the status answered, null for drop; for slow the 200
it answers after sleeping), duplicate, time}. duplicate is true when a 2xx had already been
answered on the same path for the same webhook-id (so exactly-once delivery means no
duplicate in /_fake/deliveries).
    GET    /_fake/requests[?path=P]    every recorded request, oldest first
    GET    /_fake/deliveries[?path=P]  only those verified (or unchecked) and answered 2xx
    DELETE /_fake/requests             forgets all records and the webhook-ids seen
    POST   /_fake/secrets              {"secrets": [...], "tolerance": s} replaces the
                                       secrets (and the tolerance, if given)
    POST   /_fake/reset                records, webhook-ids and behaviours
Standard library only.
"""
import argparse
import base64
import binascii
import collections
import hashlib
import hmac
import json
import os
import sys
import threading
import time
from urllib.parse import parse_qsl, urlsplit

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from fakelib import BaseHandler, serve  # noqa: E402

MODES = ("ok", "status", "gone", "slow", "redirect", "drop", "big")
_BIG_HEAD = b'{"ok":true,"pad":"'
BIG_BODY = _BIG_HEAD + b"x" * ((1 << 20) - len(_BIG_HEAD) - 2) + b'"}'  # exactly 1 MiB

_lock = threading.Lock()
_requests = []
_answered = set()                               # (path, webhook-id) answered 2xx
_behaviours = collections.defaultdict(collections.deque)  # path -> deque of cue dicts
_config = {"keys": [], "tolerance": 300}


def secret_key(secret):
    """The HMAC key of a whsec_ secret (padding tolerated, as the Python library does)."""
    s = secret[len("whsec_"):] if secret.startswith("whsec_") else secret
    return base64.b64decode(s + "=" * (-len(s) % 4), validate=True)


def sign(key, msg_id, timestamp, body):
    """The v1 signature entry for raw body bytes."""
    mac = hmac.new(key, ("%s.%s." % (msg_id, timestamp)).encode() + body, hashlib.sha256)
    return "v1," + base64.b64encode(mac.digest()).decode()


def verify(keys, headers, body, tolerance, now=None):
    """(True, None) or (False, reason). headers: a mapping with lower-case names."""
    msg_id = headers.get("webhook-id")
    ts = headers.get("webhook-timestamp")
    sig = headers.get("webhook-signature")
    for name, value in (("webhook-id", msg_id), ("webhook-timestamp", ts),
                        ("webhook-signature", sig)):
        if not value:
            return False, "missing header " + name
    try:
        ts_int = int(ts)
    except ValueError:
        return False, "invalid webhook-timestamp"
    if tolerance:
        now = time.time() if now is None else now
        if ts_int < now - tolerance:
            return False, "timestamp too old"
        if ts_int > now + tolerance:
            return False, "timestamp too new"
    wanted = []
    for entry in sig.split():
        version, _, b64 = entry.partition(",")
        if version != "v1":
            continue
        try:
            wanted.append(base64.b64decode(b64, validate=True))
        except (binascii.Error, ValueError):
            continue
    if not wanted:
        return False, "no v1 signature"
    signed = ("%s.%s." % (msg_id, ts)).encode() + body
    for key in keys:
        mac = hmac.new(key, signed, hashlib.sha256).digest()
        for w in wanted:
            if hmac.compare_digest(mac, w):
                return True, None
    return False, "no matching signature"


def next_behaviour(path):
    """The behaviour for a verified request to path, consuming one count of it."""
    with _lock:
        q = _behaviours.get(path)
        if not q:
            return {"mode": "ok"}
        cue = q[0]
        if cue["count"] is not None:
            cue["count"] -= 1
            if cue["count"] <= 0:
                q.popleft()
        return cue


class Handler(BaseHandler):
    server_version = "fake-webhook-receiver/1"

    def route(self):
        parts = urlsplit(self.path)
        raw = self.read_body()
        if raw is None:
            self.close_connection = True
            return self.send_json(413, {"error": "body unreadable or too large"})
        if parts.path.startswith("/_fake/"):
            return self.control(parts.path, dict(parse_qsl(parts.query)), raw)
        self.delivery(parts.path, parts.query, raw)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = route

    # ---- deliveries -------------------------------------------------------------------

    def delivery(self, path, query, raw):
        rec = self.request_record(raw, path, query)
        headers = rec["headers"]
        keys, tolerance = _config["keys"], _config["tolerance"]
        if keys:
            verified, reason = verify(keys, headers, raw, tolerance)
        else:
            verified, reason = None, None
        rec.update(webhook_id=headers.get("webhook-id"), verified=verified, reason=reason,
                   mode=None, status=401, duplicate=False)
        if verified is False:
            with _lock:
                _requests.append(rec)
            return self.send_json(401, {"error": reason})

        cue = next_behaviour(path)
        mode = rec["mode"] = cue["mode"]
        status, obj, extra, data = 200, {"ok": True}, {}, None
        if mode == "status":
            status = cue.get("status") or 500
            obj = None if status in (204, 304) else {"error": "fake status %d" % status}
            if cue.get("retry_after") is not None:
                extra["Retry-After"] = cue["retry_after"]
        elif mode == "gone":
            status, obj = 410, {"error": "gone"}
        elif mode == "redirect":
            status, obj, extra = 302, {"redirect": "/elsewhere"}, {"Location": "/elsewhere"}
        elif mode == "big":
            data = BIG_BODY
        elif mode == "drop":
            status = None
        rec["status"] = status
        with _lock:
            if status is not None and 200 <= status < 300 and rec["webhook_id"]:
                key = (path, rec["webhook_id"])
                rec["duplicate"] = key in _answered
                _answered.add(key)
            _requests.append(rec)
        if mode == "drop":
            self.close_connection = True  # no answer; the socket is closed when handle() ends
            return
        if mode == "slow":
            time.sleep(cue.get("seconds") if cue.get("seconds") is not None else 10)
        if data is not None:
            return self.send_bytes(status, data, self.json_type, extra)
        self.send_json(status, obj, extra)

    # ---- controls ---------------------------------------------------------------------

    def control(self, path, query, raw):
        cmd = self.command
        if path == "/_fake/requests" and cmd == "GET":
            with _lock:
                out = [r for r in _requests if "path" not in query or r["path"] == query["path"]]
            return self.send_json(200, out)
        if path == "/_fake/deliveries" and cmd == "GET":
            with _lock:
                out = [r for r in _requests
                       if r["verified"] is not False and r["status"] is not None
                       and 200 <= r["status"] < 300
                       and ("path" not in query or r["path"] == query["path"])]
            return self.send_json(200, out)
        if path == "/_fake/requests" and cmd == "DELETE":
            with _lock:
                _requests.clear()
                _answered.clear()
            return self.send_json(200, {"ok": True})
        if path == "/_fake/behaviour" and cmd == "GET":
            with _lock:
                out = {p: list(q) for p, q in _behaviours.items() if q}
            return self.send_json(200, out)
        if path == "/_fake/behaviour" and cmd == "DELETE":
            with _lock:
                if "path" in query:
                    _behaviours.pop(query["path"], None)
                else:
                    _behaviours.clear()
            return self.send_json(200, {"ok": True})
        if path == "/_fake/reset" and cmd == "POST":
            with _lock:
                _requests.clear()
                _answered.clear()
                _behaviours.clear()
            return self.send_json(200, {"ok": True})
        if cmd != "POST" or path not in ("/_fake/behaviour", "/_fake/secrets"):
            return self.send_json(404, {"error": "unknown control " + cmd + " " + path})
        try:
            req = json.loads(raw)
        except ValueError:
            req = None
        if not isinstance(req, dict):
            return self.send_json(400, {"error": "body must be a JSON object"})
        if path == "/_fake/secrets":
            try:
                keys = [secret_key(s) for s in req.get("secrets", [])]
            except (binascii.Error, ValueError, TypeError, AttributeError):
                return self.send_json(400, {"error": "secrets must be whsec_<base64> strings"})
            tol = req.get("tolerance", _config["tolerance"])
            if not isinstance(tol, (int, float)) or tol < 0:
                return self.send_json(400, {"error": "tolerance must be a number >= 0"})
            with _lock:
                _config["keys"], _config["tolerance"] = keys, tol
            return self.send_json(200, {"ok": True})
        return self.set_behaviour(req)

    def set_behaviour(self, req):
        p, mode, count = req.get("path"), req.get("mode"), req.get("count")
        status, seconds = req.get("status"), req.get("seconds")
        err = None
        if not (isinstance(p, str) and p.startswith("/")):
            err = "path must start with /"
        elif mode not in MODES:
            err = "mode must be one of " + ", ".join(MODES)
        elif count is not None and (not isinstance(count, int) or count < 1):
            err = "count must be a positive integer or null"
        elif status is not None and (not isinstance(status, int) or not 200 <= status <= 599):
            err = "status must be an integer 200-599"
        elif seconds is not None and (not isinstance(seconds, (int, float)) or seconds < 0):
            err = "seconds must be a number >= 0"
        if err:
            return self.send_json(400, {"error": err})
        cue = {"mode": mode, "count": count, "status": status, "seconds": seconds,
               "retry_after": None if req.get("retry_after") is None
               else str(req["retry_after"])}
        with _lock:
            q = _behaviours[p]
            if req.get("replace"):
                q.clear()
            if q and q[-1]["count"] is None:
                q.pop()  # an unlimited behaviour lasts until changed: this changes it
            q.append(cue)
            out = list(q)
        self.send_json(200, {"ok": True, "queue": out})


def main():
    ap = argparse.ArgumentParser(description="Standard Webhooks receiver for tests")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0, help="0 picks a free port")
    ap.add_argument("--secret", action="append", default=[], metavar="whsec_...",
                    help="repeatable: a signature by any of them is accepted")
    ap.add_argument("--tolerance", type=float, default=300,
                    help="seconds either way for webhook-timestamp, 0 = no check")
    args = ap.parse_args()
    try:
        _config["keys"] = [secret_key(s) for s in args.secret]
    except (binascii.Error, ValueError):
        ap.error("--secret must be whsec_<base64>")
    _config["tolerance"] = args.tolerance
    serve(Handler, args.host, args.port)


if __name__ == "__main__":
    main()
