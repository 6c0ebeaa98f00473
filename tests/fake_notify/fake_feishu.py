#!/usr/bin/env python3
"""A fake Feishu/Lark Open Platform (tenant tokens, im/v1 send, custom group bots) for
agentbus' end-to-end tests.

    python3 tests/fake_notify/fake_feishu.py --port 0 [--host 127.0.0.1]
        [--app APP_ID:APP_SECRET]... [--user USER_ID:OPEN_ID]... [--bot TOKEN[:SECRET]]...
        [--chat CHAT_ID]...
        [--token-ttl 7200] [--user-rate 5] [--app-rate 50] [--bot-rate 5] [--reject-user-id]

prints its port (one line, the number alone) and serves until killed. It speaks the real
wire format (reference: /work/shared/reference/integration-facts.md 1.1, 1.2, 1.4, 1.5);
every answer has a JSON body with a Content-Length and an X-Tt-Logid header; error bodies
of the OpenAPI carry "error": {"log_id": ...}.

POST /open-apis/auth/v3/tenant_access_token/internal  {"app_id", "app_secret"}
    an --app pair: 200 {"code":0,"msg":"ok","tenant_access_token":"t-<hex>","expire":TTL};
    every call issues a fresh token, valid for --token-ttl seconds (older ones stay valid
    until their own expiry). Unknown app or wrong secret: 400 code 20002; a body that is not
    a JSON object with both strings: 400 code 10003.

POST /open-apis/im/v1/messages?receive_id_type=T   Authorization: Bearer <token>
    body {"receive_id", "msg_type", "content": <JSON *string*>, "uuid"?}. Checked in order:
      token missing/unknown/expired        400 code 99991663
      T not open_id|user_id|union_id|email|chat_id, receive_id/msg_type not strings,
      content not a string holding JSON (for text: an object with a string "text"),
      uuid not a string of <= 50 chars     400 code 230001
      content over 150 KB (text) / 30 KB   400 code 230025
      a failure cue (below), if one is queued
      T=user_id with --reject-user-id      400 code 99991672 (missing scope: fall back to open_id)
      T=user_id / open_id not in --user    400 code 230013
      T=chat_id not in --chat, when any --chat is given
                                           400 code 230002 (the bot is not in the chat)
      over --app-rate per app or --user-rate per receiver (the resolved user, else T+id: a
      chat is one receiver, as Feishu limits a group to 5 a second),
      sliding 1 s window                   429 code 99991400, headers x-ogw-ratelimit-limit
                                           and x-ogw-ratelimit-reset (whole seconds, >= 1)
      uuid of a successful send of the same app in the last hour: 200 with the SAME data
      (message_id, create_time, ...) and nothing is posted again
      else the message is posted: 200 {"code":0,"msg":"success","data":{"message_id":"om_..",
      "msg_type", "create_time":"<ms>", "update_time", "chat_id":"oc_..", "body":{"content":
      <the content string>}, "sender":{"id":<app_id>,"id_type":"app_id","sender_type":"app"},
      "deleted":false, "updated":false}}; data.chat_id is the receive_id for T=chat_id.
      union_id and email receivers are not checked; chat_id receivers only against --chat.

POST /open-apis/bot/v2/hook/<token>   (a custom group bot, --bot TOKEN[:SECRET])
    body {"msg_type", "content": <object> (or "card" for interactive), "timestamp"?, "sign"?};
    business errors are HTTP 200: unknown token code 19001; not a JSON object, over 20 KB, no
    msg_type, text without content.text: code 9499; with a SECRET, sign must be
    base64(HMAC-SHA256(key=f"{timestamp}\\n{secret}", msg=b"")) and timestamp (seconds) within
    an hour of now, else code 19021; then a failure cue, if queued; over --bot-rate per bot:
    code 11232. Success: {"StatusCode":0,"StatusMessage":"success","code":0,"data":{},
    "msg":"success"}. There is no idempotency for bots.

Failure cues: POST /_fake/fail {"mode": M, "count": n (default 1), "seconds": s} queues
M n times; each send (im or bot) that gets past the checks listed above it takes the next cue:
    timeout_after_accept  post the message (recorded, uuid remembered), then sleep s
                          (default 10) before answering success
    server_error          500 {"code":1,"msg":"internal error"}, nothing posted
    rate_limit            im: 429 code 99991400, x-ogw-ratelimit-reset: s (default 1);
                          bot: 200 code 11232; nothing posted
    token_invalid         im: 400 code 99991663 and the token used is invalidated;
                          bot: 200 code 19001 (the bot stays known); nothing posted
    code:<n>              im: 400 {"code":n,...}; bot: 200 {"code":n,...}; nothing posted
    drop                  the connection is closed without an answer, nothing posted
DELETE /_fake/fail forgets queued cues; GET /_fake/fail lists them.

Other controls:
    POST   /_fake/expire_tokens   invalidates every token issued so far (body {"app_id": A}
                                  optional: only that app's)
    GET    /_fake/tokens          [{token, app_id, issued, expires, valid}]
    GET    /_fake/messages        posted messages, oldest first (repeats answered from the
                                  uuid memory are not in it): {message_id, receive_id_type
                                  ("bot" for bots), receive_id (the bot token for bots),
                                  user_id, open_id (resolved, else null), msg_type, content
                                  (parsed object), uuid, app_id, time}; query parameters
                                  filter on equal fields, e.g. ?receive_id=u1
    DELETE /_fake/messages        forgets them (and the uuid memory)
    GET    /_fake/requests        every non-/_fake request, oldest first: {method, path,
                                  query (dict), headers (lower-case names), body (parsed JSON
                                  or null), raw_body, time}
    DELETE /_fake/requests        forgets them
    POST   /_fake/reset           all of the above: messages, uuids, requests, cues, rate
                                  windows (tokens stay valid)
Standard library only.
"""
import argparse
import base64
import collections
import hashlib
import hmac
import json
import math
import os
import secrets
import sys
import threading
import time
from urllib.parse import parse_qsl, urlsplit

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from fakelib import BaseHandler, serve  # noqa: E402

BOT_MAX_BODY = 20 * 1024
IDEMPOTENCY_WINDOW = 3600
RECEIVE_ID_TYPES = ("open_id", "user_id", "union_id", "email", "chat_id")
MSG_TOKEN_INVALID = ("Invalid access token for authorization. Please make a request with "
                     "token attached.")
MSG_SCOPE = ("Access denied. One of the following scopes is required: "
             "[contact:user.employee_id:readonly]")
CODE_MSGS = {  # messages for code:<n> cues (from the reference's error table)
    230001: "Your request contains an invalid request parameter.",
    230002: "The bot can not be outside the group.",
    230013: "Bot has NO availability to this user.",
    230020: "This operation triggers the frequency limit.",
    230025: "The length of the message content reaches its limit.",
    230049: "The message is being sent.",
    230053: "The user has stopped the bot from sending messages.",
    99991400: "request trigger frequency limit",
    99991663: MSG_TOKEN_INVALID,
    99991672: MSG_SCOPE,
    11232: "create message service trigger rate limit",
    19001: "param invalid: incoming webhook access token invalid",
    19021: "sign match fail or timestamp is not within one hour from current time",
}
CUE_MODES = ("timeout_after_accept", "server_error", "rate_limit", "token_invalid", "drop")

_lock = threading.Lock()
_requests = []
_messages = []
_tokens = {}          # token -> {"app_id", "issued", "expires"}
_uuids = {}           # (app_id, uuid) -> (time, data)
_cues = collections.deque()   # {"mode", "seconds"}
_windows = collections.defaultdict(collections.deque)  # key -> admission times


def log_id():
    return time.strftime("%Y%m%d%H%M%S") + secrets.token_hex(10).upper()


def bot_sign(timestamp, secret):
    """Feishu's custom-bot signature: the string to sign is the HMAC key, the message empty."""
    key = ("%s\n%s" % (timestamp, secret)).encode()
    return base64.b64encode(hmac.new(key, b"", hashlib.sha256).digest()).decode()


def parse_cue(mode):
    """A valid cue mode (str) or None."""
    if not isinstance(mode, str):
        return None
    if mode in CUE_MODES:
        return mode
    name, _, arg = mode.partition(":")
    if name == "code" and arg.lstrip("-").isdigit():
        return mode
    return None


def take_cue():
    with _lock:
        return _cues.popleft() if _cues else None


def admit(keys_limits, now):
    """Admit a request into every (key, limit) sliding 1 s window, or return (limit, reset)
    of the first one that is full. limit 0 = unlimited."""
    with _lock:
        for key, limit in keys_limits:
            if not limit:
                continue
            w = _windows[key]
            while w and w[0] <= now - 1.0:
                w.popleft()
            if len(w) >= limit:
                return limit, max(1, math.ceil(w[0] + 1.0 - now))
        for key, limit in keys_limits:
            if limit:
                _windows[key].append(now)
    return None


class Handler(BaseHandler):
    server_version = "fake-feishu/1"
    json_type = "application/json; charset=utf-8"

    # ---- plumbing ---------------------------------------------------------------------

    def send_json(self, status, obj, headers=None, logid=None):
        """Every answer carries an X-Tt-Logid (logid, else a fresh one)."""
        super().send_json(status, obj, {"X-Tt-Logid": logid or log_id(), **(headers or {})})

    def api_error(self, status, code, msg=None, headers=None):
        """An OpenAPI error body, with error.log_id as Feishu writes it."""
        lid = log_id()
        return self.send_json(status, {"code": code, "msg": msg or CODE_MSGS.get(code, "error"),
                                       "error": {"log_id": lid}}, headers, lid)

    def drop(self):
        self.close_connection = True  # no answer; the socket is closed when handle() ends

    def record(self, raw):
        return super().record(raw, _requests, _lock, self.route, self.query)

    def split_path(self):
        parts = urlsplit(self.path)
        self.route = parts.path
        self.query = dict(parse_qsl(parts.query, keep_blank_values=True))

    def not_found(self):
        self.send_json(404, {"code": 404, "msg": "404 page not found: " + self.route})

    # ---- routes -----------------------------------------------------------------------

    def do_GET(self):
        self.split_path()
        if self.route == "/_fake/requests":
            with _lock:
                out = list(_requests)
            self.send_json(200, out)
        elif self.route == "/_fake/messages":
            with _lock:
                out = [m for m in _messages
                       if all(str(m.get(k)) == v for k, v in self.query.items())]
            self.send_json(200, out)
        elif self.route == "/_fake/tokens":
            now = time.time()
            with _lock:
                out = [dict(t, token=k, valid=t["expires"] > now) for k, t in _tokens.items()]
            self.send_json(200, out)
        elif self.route == "/_fake/fail":
            with _lock:
                out = list(_cues)
            self.send_json(200, out)
        else:
            self.record(b"")
            self.not_found()

    def do_DELETE(self):
        self.split_path()
        self.read_body()
        if self.route == "/_fake/requests":
            with _lock:
                _requests.clear()
        elif self.route == "/_fake/messages":
            with _lock:
                _messages.clear()
                _uuids.clear()
        elif self.route == "/_fake/fail":
            with _lock:
                _cues.clear()
        else:
            self.record(b"")
            return self.not_found()
        self.send_json(200, {"ok": True})

    def do_POST(self):
        self.split_path()
        raw = self.read_body()
        if raw is None:
            self.close_connection = True
            return self.send_json(413, {"code": 9499, "msg": "Bad Request", "data": {}})
        if self.route.startswith("/_fake/"):
            return self.control(raw)
        body = self.record(raw)
        if self.route == "/open-apis/auth/v3/tenant_access_token/internal":
            return self.token(body)
        if self.route == "/open-apis/im/v1/messages":
            return self.send_message(body)
        if self.route.startswith("/open-apis/bot/v2/hook/"):
            return self.bot_post(self.route[len("/open-apis/bot/v2/hook/"):], raw, body)
        self.not_found()

    def control(self, raw):
        try:
            req = json.loads(raw) if raw.strip() else {}
        except ValueError:
            req = None
        if not isinstance(req, dict):
            return self.send_json(400, {"error": "body must be a JSON object"})
        if self.route == "/_fake/fail":
            mode = parse_cue(req.get("mode"))
            count = req.get("count", 1)
            seconds = req.get("seconds")
            if (mode is None or not isinstance(count, int) or count < 0
                    or not (seconds is None or isinstance(seconds, (int, float)))):
                return self.send_json(400, {"error": "want {mode: timeout_after_accept|"
                                            "server_error|rate_limit|token_invalid|drop|"
                                            "code:<n>, count: n, seconds: s}"})
            with _lock:
                _cues.extend({"mode": mode, "seconds": seconds} for _ in range(count))
                queued = len(_cues)
            return self.send_json(200, {"ok": True, "queued": queued})
        if self.route == "/_fake/expire_tokens":
            app = req.get("app_id")
            with _lock:
                n = 0
                for t in _tokens.values():
                    if app is None or t["app_id"] == app:
                        n += t["expires"] > time.time()
                        t["expires"] = min(t["expires"], time.time())
            return self.send_json(200, {"ok": True, "expired": n})
        if self.route == "/_fake/reset":
            with _lock:
                _requests.clear()
                _messages.clear()
                _uuids.clear()
                _cues.clear()
                _windows.clear()
            return self.send_json(200, {"ok": True})
        self.not_found()

    # ---- the Open Platform ------------------------------------------------------------

    def token(self, body):
        if not (isinstance(body, dict) and isinstance(body.get("app_id"), str)
                and isinstance(body.get("app_secret"), str)):
            return self.send_json(400, {"code": 10003, "msg": "invalid parameter"})
        want = self.server.apps.get(body["app_id"])
        if want is None or not hmac.compare_digest(want.encode(), body["app_secret"].encode()):
            return self.send_json(400, {"code": 20002,
                                        "msg": "app_id and app_secret did not match"})
        token = "t-" + secrets.token_hex(20)
        now = time.time()
        with _lock:
            _tokens[token] = {"app_id": body["app_id"], "issued": now,
                              "expires": now + self.server.token_ttl}
        self.send_json(200, {"code": 0, "msg": "ok", "tenant_access_token": token,
                             "expire": self.server.token_ttl})

    def send_message(self, body):
        auth = self.headers.get("Authorization") or ""
        token = auth[len("Bearer "):].strip() if auth.startswith("Bearer ") else ""
        now = time.time()
        with _lock:
            t = _tokens.get(token)
            app_id = t["app_id"] if t and t["expires"] > now else None
        if app_id is None:
            return self.api_error(400, 99991663)
        rtype = self.query.get("receive_id_type")
        if rtype not in RECEIVE_ID_TYPES or not isinstance(body, dict):
            return self.api_error(400, 230001)
        rid, msg_type, content_s, uid = (body.get("receive_id"), body.get("msg_type"),
                                         body.get("content"), body.get("uuid"))
        if not (isinstance(rid, str) and rid and isinstance(msg_type, str) and msg_type
                and isinstance(content_s, str)
                and (uid is None or (isinstance(uid, str) and len(uid) <= 50))):
            return self.api_error(400, 230001)
        try:
            content = json.loads(content_s)
        except ValueError:
            return self.api_error(400, 230001)
        if msg_type == "text" and not (isinstance(content, dict)
                                       and isinstance(content.get("text"), str)):
            return self.api_error(400, 230001)
        if len(content_s.encode()) > (150 * 1024 if msg_type == "text" else 30 * 1024):
            return self.api_error(400, 230025)

        cue = take_cue()
        mode = cue["mode"] if cue else None
        if mode == "drop":
            return self.drop()
        if mode == "server_error":
            return self.send_json(500, {"code": 1, "msg": "internal error"})
        if mode == "rate_limit":
            reset = 1 if cue["seconds"] is None else math.ceil(cue["seconds"])
            return self.api_error(429, 99991400, headers={
                "x-ogw-ratelimit-limit": self.server.app_rate, "x-ogw-ratelimit-reset": reset})
        if mode == "token_invalid":
            with _lock:
                if token in _tokens:
                    _tokens[token]["expires"] = min(_tokens[token]["expires"], now)
            return self.api_error(400, 99991663)
        if mode and mode.startswith("code:"):
            return self.api_error(400, int(mode[5:]))

        user_id = open_id = None
        if rtype == "user_id":
            if self.server.reject_user_id:
                return self.api_error(400, 99991672)
            if rid not in self.server.users:
                return self.api_error(400, 230013)
            user_id, open_id = rid, self.server.users[rid]
        elif rtype == "open_id":
            user_id = self.server.open_ids.get(rid)
            if user_id is None:
                return self.api_error(400, 230013)
            open_id = rid
        elif rtype == "chat_id" and self.server.chats and rid not in self.server.chats:
            return self.api_error(400, 230002)
        receiver = ("user", user_id) if user_id else (rtype, rid)
        full = admit([(("app", app_id), self.server.app_rate),
                      (receiver, self.server.user_rate)], now)
        if full:
            return self.api_error(429, 99991400, headers={"x-ogw-ratelimit-limit": full[0],
                                                          "x-ogw-ratelimit-reset": full[1]})
        with _lock:
            seen = _uuids.get((app_id, uid)) if uid else None
            if seen and seen[0] > now - IDEMPOTENCY_WINDOW:
                data = seen[1]
            else:
                ms = str(int(now * 1000))
                chat_id = rid if rtype == "chat_id" else "oc_" + hashlib.md5(
                    ("%s/%s" % receiver).encode()).hexdigest()
                data = {"message_id": "om_" + secrets.token_hex(16), "msg_type": msg_type,
                        "create_time": ms, "update_time": ms, "deleted": False,
                        "updated": False, "chat_id": chat_id, "body": {"content": content_s},
                        "sender": {"id": app_id, "id_type": "app_id", "sender_type": "app"}}
                if uid:
                    _uuids[(app_id, uid)] = (now, data)
                _messages.append({"message_id": data["message_id"], "receive_id_type": rtype,
                                  "receive_id": rid, "user_id": user_id, "open_id": open_id,
                                  "msg_type": msg_type, "content": content, "uuid": uid,
                                  "app_id": app_id, "time": now})
        if mode == "timeout_after_accept":
            time.sleep(cue["seconds"] if cue["seconds"] is not None else 10)
        self.send_json(200, {"code": 0, "msg": "success", "data": data})

    def bot_post(self, token, raw, body):
        if token not in self.server.bots:
            return self.send_json(200, {"code": 19001, "msg": CODE_MSGS[19001]})
        bad = {"code": 9499, "msg": "Bad Request", "data": {}}
        if len(raw) > BOT_MAX_BODY or not isinstance(body, dict):
            return self.send_json(200, bad)
        msg_type = body.get("msg_type")
        content = body.get("card") if msg_type == "interactive" else body.get("content")
        if not (isinstance(msg_type, str) and msg_type and isinstance(content, dict)):
            return self.send_json(200, bad)
        if msg_type == "text" and not isinstance(content.get("text"), str):
            return self.send_json(200, bad)
        secret = self.server.bots[token]
        now = time.time()
        if secret is not None:
            ts, sign = body.get("timestamp"), body.get("sign")
            try:
                ts_ok = abs(now - int(ts)) <= 3600
            except (TypeError, ValueError):
                ts_ok = False
            if not (ts_ok and isinstance(sign, str)
                    and hmac.compare_digest(sign.encode(), bot_sign(ts, secret).encode())):
                return self.send_json(200, {"code": 19021, "msg": CODE_MSGS[19021]})

        cue = take_cue()
        mode = cue["mode"] if cue else None
        if mode == "drop":
            return self.drop()
        if mode == "server_error":
            return self.send_json(500, {"code": 1, "msg": "internal error"})
        if mode == "rate_limit":
            return self.send_json(200, {"code": 11232, "msg": CODE_MSGS[11232]})
        if mode == "token_invalid":
            return self.send_json(200, {"code": 19001, "msg": CODE_MSGS[19001]})
        if mode and mode.startswith("code:"):
            n = int(mode[5:])
            return self.send_json(200, {"code": n, "msg": CODE_MSGS.get(n, "error")})

        if admit([(("bot", token), self.server.bot_rate)], now):
            return self.send_json(200, {"code": 11232, "msg": CODE_MSGS[11232]})
        with _lock:
            _messages.append({"message_id": None, "receive_id_type": "bot", "receive_id": token,
                              "user_id": None, "open_id": None, "msg_type": msg_type,
                              "content": content, "uuid": None, "app_id": None, "time": now})
        if mode == "timeout_after_accept":
            time.sleep(cue["seconds"] if cue["seconds"] is not None else 10)
        self.send_json(200, {"StatusCode": 0, "StatusMessage": "success", "code": 0,
                             "data": {}, "msg": "success"})


def pairs(values, what, need_second):
    out = {}
    for v in values:
        a, sep, b = v.partition(":")
        if not a or (need_second and not (sep and b)):
            raise SystemExit("bad %s %r" % (what, v))
        out[a] = b if sep else None
    return out


def main():
    ap = argparse.ArgumentParser(description="fake Feishu/Lark Open Platform for tests")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0, help="0 picks a free port")
    ap.add_argument("--app", action="append", default=[], metavar="APP_ID:APP_SECRET")
    ap.add_argument("--user", action="append", default=[], metavar="USER_ID:OPEN_ID")
    ap.add_argument("--bot", action="append", default=[], metavar="TOKEN[:SECRET]")
    ap.add_argument("--chat", action="append", default=[], metavar="CHAT_ID",
                    help="a group chat the bot is in; with any, other chat_ids answer 230002")
    ap.add_argument("--token-ttl", type=int, default=7200, help="seconds")
    ap.add_argument("--user-rate", type=int, default=5, help="sends/s per receiver, 0 = no limit")
    ap.add_argument("--app-rate", type=int, default=50, help="sends/s per app, 0 = no limit")
    ap.add_argument("--bot-rate", type=int, default=5, help="posts/s per bot, 0 = no limit")
    ap.add_argument("--reject-user-id", action="store_true",
                    help="every receive_id_type=user_id send fails with 99991672")
    args = ap.parse_args()

    def configure(server):
        server.apps = pairs(args.app, "--app", True)
        server.users = pairs(args.user, "--user", True)
        server.open_ids = {o: u for u, o in server.users.items()}
        server.bots = pairs(args.bot, "--bot", False)
        server.chats = set(args.chat)
        server.token_ttl = args.token_ttl
        server.user_rate, server.app_rate, server.bot_rate = (args.user_rate, args.app_rate,
                                                              args.bot_rate)
        server.reject_user_id = args.reject_user_id

    serve(Handler, args.host, args.port, configure)


if __name__ == "__main__":
    main()
