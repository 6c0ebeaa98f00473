#!/usr/bin/env python3
"""Self-test of the fakes in tests/fake_notify (fake_feishu.py, webhook_receiver.py).

    python3 tests/fake_notify/selftest_fakes.py

starts the fakes on port 0, exercises every behaviour over real HTTP (keep-alive), checks
the signature test vectors, prints "ok" and exits 0; an assertion error otherwise.
Standard library only; it takes about 10 seconds (rate windows, slow and timeout cues).
"""
import base64
import hashlib
import hmac
import http.client
import json
import os
import socket
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.dont_write_bytecode = True

import fake_feishu  # noqa: E402
import webhook_receiver  # noqa: E402

FEISHU = os.path.join(HERE, "fake_feishu.py")
RECEIVER = os.path.join(HERE, "webhook_receiver.py")
PROCS = []


def start(script, *args):
    p = subprocess.Popen([sys.executable, script, "--port", "0", *args],
                         stdout=subprocess.PIPE, text=True)
    PROCS.append(p)
    line = p.stdout.readline()
    assert line.strip().isdigit(), "no port line: %r" % line
    return int(line)


class Client:
    """One kept-alive connection; every answer must carry a Content-Length."""

    def __init__(self, port, timeout=10):
        self.port, self.timeout = port, timeout
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)

    def __call__(self, method, path, body=None, headers=None, raw=None, timeout=None):
        data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
        hdrs = {"Content-Type": "application/json"}
        hdrs.update(headers or {})
        if timeout is not None:
            self.conn.timeout = timeout
            if self.conn.sock:
                self.conn.sock.settimeout(timeout)
        try:
            self.conn.request(method, path, body=data, headers=hdrs)
            resp = self.conn.getresponse()
            payload = resp.read()
        except Exception:
            self.reconnect()
            raise
        finally:
            if timeout is not None:
                self.conn.timeout = self.timeout
                if self.conn.sock:
                    self.conn.sock.settimeout(self.timeout)
        assert resp.getheader("Content-Length") == str(len(payload)), (path, resp.getheaders())
        try:
            obj = json.loads(payload) if payload else None
        except ValueError:
            obj = payload
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, obj

    def reconnect(self):
        self.conn.close()
        self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=self.timeout)


def expect_drop(c, *a, **kw):
    try:
        c(*a, **kw)
    except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
        return
    raise AssertionError("expected the connection to be dropped")


def expect_timeout(c, *a, **kw):
    try:
        c(*a, **kw)
    except (socket.timeout, TimeoutError):
        return
    raise AssertionError("expected a client timeout")


def sendmsg(c, token, rtype, rid, text="hi", uuid=None, content=None, msg_type="text"):
    body = {"receive_id": rid, "msg_type": msg_type,
            "content": content if content is not None else json.dumps({"text": text})}
    if uuid:
        body["uuid"] = uuid
    hdrs = {"Authorization": "Bearer " + token} if token else {}
    return c("POST", "/open-apis/im/v1/messages?receive_id_type=" + rtype, body, hdrs)


def get_token(c, app="cli_a", secret="sa"):
    st, _, b = c("POST", "/open-apis/auth/v3/tenant_access_token/internal",
                 {"app_id": app, "app_secret": secret})
    assert st == 200 and b["code"] == 0, b
    return b["tenant_access_token"]


def messages(c, query=""):
    return c("GET", "/_fake/messages" + query)[2]


def bot_body(text, ts=None, secret=None):
    b = {"msg_type": "text", "content": {"text": text}}
    if secret is not None:
        b["timestamp"] = str(ts)
        b["sign"] = fake_feishu.bot_sign(ts, secret)
    return b


def test_feishu():
    # the Feishu bot signature vector (integration-facts 1.5)
    assert fake_feishu.bot_sign(1599360473, "demo") == \
        "l1N0gAcBjdwBvGm1xMjOF0XSyaLRpR7tuO5dHfhAYc8="
    key = "1599360473\ndemo".encode()
    assert base64.b64encode(hmac.new(key, b"", hashlib.sha256).digest()).decode() == \
        "l1N0gAcBjdwBvGm1xMjOF0XSyaLRpR7tuO5dHfhAYc8="

    port = start(FEISHU, "--app", "cli_a:sa", "--app", "cli_b:sb", "--user", "u1:ou_1",
                 "--user", "u2:ou_2", "--user", "u3:ou_3", "--bot", "hookplain",
                 "--bot", "hooksig:s3cr3t")
    c = Client(port)

    # ---- tokens
    P = "/open-apis/auth/v3/tenant_access_token/internal"
    st, h, b = c("POST", P, {"app_id": "cli_a", "app_secret": "wrong"})
    assert st == 400 and b == {"code": 20002, "msg": "app_id and app_secret did not match"}, b
    assert h.get("x-tt-logid")
    st, _, b = c("POST", P, {"app_id": "cli_zz", "app_secret": "sa"})
    assert st == 400 and b["code"] == 20002
    st, _, b = c("POST", P, raw=b"not json")
    assert st == 400 and b["code"] == 10003
    st, _, b = c("POST", P, {"app_id": "cli_a", "app_secret": "sa"})
    assert st == 200 and b["code"] == 0 and b["msg"] == "ok" and b["expire"] == 7200
    t1 = b["tenant_access_token"]
    assert t1.startswith("t-")
    t2 = get_token(c)
    assert t2 != t1  # every call a fresh token
    toks = c("GET", "/_fake/tokens")[2]
    assert {t["token"] for t in toks} == {t1, t2} and all(t["valid"] for t in toks)

    # ---- sends
    st, _, b = sendmsg(c, t1, "user_id", "u1", "hello", uuid="id-1")
    assert st == 200 and b["code"] == 0 and b["msg"] == "success", b
    d = b["data"]
    assert d["message_id"].startswith("om_") and d["chat_id"].startswith("oc_")
    assert d["msg_type"] == "text" and d["create_time"].isdigit()
    assert d["body"] == {"content": json.dumps({"text": "hello"})}
    assert d["sender"] == {"id": "cli_a", "id_type": "app_id", "sender_type": "app"}
    first_id = d["message_id"]
    # the same uuid: the same message, not posted again
    st, _, b = sendmsg(c, t2, "user_id", "u1", "hello", uuid="id-1")
    assert st == 200 and b["data"]["message_id"] == first_id
    m = messages(c)
    assert len(m) == 1 and m[0]["message_id"] == first_id and m[0]["user_id"] == "u1"
    assert m[0]["open_id"] == "ou_1" and m[0]["content"] == {"text": "hello"}
    assert m[0]["uuid"] == "id-1" and m[0]["app_id"] == "cli_a"
    assert m[0]["receive_id_type"] == "user_id" and isinstance(m[0]["time"], float)
    # the uuid memory is per app
    tb = get_token(c, "cli_b", "sb")
    st, _, b = sendmsg(c, tb, "user_id", "u1", "hello", uuid="id-1")
    assert st == 200 and b["data"]["message_id"] != first_id
    st, _, b = sendmsg(c, t1, "open_id", "ou_2", "via open_id")
    assert st == 200
    assert messages(c, "?receive_id=ou_2")[0]["user_id"] == "u2"
    st, _, b = sendmsg(c, t1, "chat_id", "oc_group", "to a group")
    assert st == 200 and b["data"]["chat_id"] == "oc_group"
    for rtype in ("email", "union_id"):
        assert sendmsg(c, t1, rtype, "x@y")[0] == 200
    st, _, b = sendmsg(c, t1, "user_id", "nobody")
    assert st == 400 and b["code"] == 230013 and \
        b["msg"] == "Bot has NO availability to this user." and b["error"]["log_id"]
    st, _, b = sendmsg(c, t1, "open_id", "ou_nobody")
    assert st == 400 and b["code"] == 230013
    # bad requests
    assert sendmsg(c, t1, "phone", "u1")[2]["code"] == 230001
    assert sendmsg(c, t1, "user_id", "u1", content="not json")[2]["code"] == 230001
    assert sendmsg(c, t1, "user_id", "u1", content=json.dumps({"txt": "x"}))[2]["code"] == 230001
    assert sendmsg(c, t1, "user_id", "u1", uuid="x" * 51)[2]["code"] == 230001
    st, _, b = sendmsg(c, t1, "user_id", "u1", content=json.dumps({"text": "x" * 160000}))
    assert st == 400 and b["code"] == 230025
    # tokens: missing, unknown
    for tok in ("", "t-bogus"):
        st, _, b = sendmsg(c, tok, "user_id", "u1")
        assert st == 400 and b["code"] == 99991663 and b["msg"] == fake_feishu.MSG_TOKEN_INVALID
        assert b["error"]["log_id"]
    # expire mid-run
    st, _, b = c("POST", "/_fake/expire_tokens")
    assert st == 200 and b["expired"] == 3
    assert sendmsg(c, t1, "user_id", "u2")[2]["code"] == 99991663
    assert not any(t["valid"] for t in c("GET", "/_fake/tokens")[2])
    t3 = get_token(c)
    assert sendmsg(c, t3, "user_id", "u2")[0] == 200

    # ---- rate limits: 5/s per receiver (user_id and open_id of u3 count together)
    c("DELETE", "/_fake/messages")
    codes = [sendmsg(c, t3, "user_id" if i % 2 else "open_id", "u3" if i % 2 else "ou_3")
             for i in range(6)]
    assert [x[0] for x in codes] == [200] * 5 + [429], [x[0] for x in codes]
    st, h, b = codes[5]
    assert b["code"] == 99991400 and b["msg"] == "request trigger frequency limit"
    assert h["x-ogw-ratelimit-limit"] == "5" and int(h["x-ogw-ratelimit-reset"]) >= 1
    assert len(messages(c)) == 5
    time.sleep(1.05)
    assert sendmsg(c, t3, "user_id", "u3")[0] == 200

    # ---- failure cues
    c("DELETE", "/_fake/messages")
    st, _, b = c("POST", "/_fake/fail", {"mode": "bogus"})
    assert st == 400
    c("POST", "/_fake/fail", {"mode": "timeout_after_accept", "seconds": 1})
    c("POST", "/_fake/fail", {"mode": "server_error"})
    c("POST", "/_fake/fail", {"mode": "rate_limit", "seconds": 3})
    c("POST", "/_fake/fail", {"mode": "code:230020"})
    c("POST", "/_fake/fail", {"mode": "drop"})
    st, _, b = c("POST", "/_fake/fail", {"mode": "token_invalid", "count": 2})
    assert b["queued"] == 7
    assert [q["mode"] for q in c("GET", "/_fake/fail")[2]] == [
        "timeout_after_accept", "server_error", "rate_limit", "code:230020", "drop",
        "token_invalid", "token_invalid"]
    t0 = time.time()
    expect_timeout(c, "POST", "/open-apis/im/v1/messages?receive_id_type=user_id",
                   {"receive_id": "u1", "msg_type": "text", "uuid": "id-2",
                    "content": json.dumps({"text": "accepted"})},
                   {"Authorization": "Bearer " + t3}, timeout=0.3)
    assert time.time() - t0 < 0.9
    posted = messages(c)
    assert len(posted) == 1 and posted[0]["uuid"] == "id-2"  # Feishu accepted it
    st, _, b = sendmsg(c, t3, "user_id", "u1", "accepted", uuid="id-2")  # server_error cue
    assert st == 500 and b == {"code": 1, "msg": "internal error"}
    st, h, b = sendmsg(c, t3, "user_id", "u1", "accepted", uuid="id-2")
    assert st == 429 and b["code"] == 99991400 and h["x-ogw-ratelimit-reset"] == "3"
    st, _, b = sendmsg(c, t3, "user_id", "u1", "accepted", uuid="id-2")
    assert st == 400 and b["code"] == 230020
    expect_drop(sendmsg, c, t3, "user_id", "u1", "accepted", uuid="id-2")
    st, _, b = sendmsg(c, t3, "user_id", "u1", "accepted", uuid="id-2")
    assert st == 400 and b["code"] == 99991663
    assert sendmsg(c, t3, "user_id", "u1")[2]["code"] == 99991663  # t3 was invalidated
    t4 = get_token(c)
    st, _, b = sendmsg(c, t4, "user_id", "u1", "accepted", uuid="id-2")  # 2nd token_invalid
    assert st == 400 and b["code"] == 99991663
    t5 = get_token(c)
    st, _, b = sendmsg(c, t5, "user_id", "u1", "accepted", uuid="id-2")  # the retry: dedup
    assert st == 200 and b["data"]["message_id"] == posted[0]["message_id"]
    assert len(messages(c)) == 1
    c("POST", "/_fake/fail", {"mode": "server_error", "count": 3})
    assert len(c("GET", "/_fake/fail")[2]) == 3
    c("DELETE", "/_fake/fail")
    assert c("GET", "/_fake/fail")[2] == []

    # ---- custom group bots
    H = "/open-apis/bot/v2/hook/"
    c("DELETE", "/_fake/messages")
    st, _, b = c("POST", H + "nope", bot_body("x"))
    assert st == 200 and b == {"code": 19001, "msg": "param invalid: incoming webhook access "
                               "token invalid"}
    st, _, b = c("POST", H + "hookplain", bot_body("plain"))
    assert st == 200 and b == {"StatusCode": 0, "StatusMessage": "success", "code": 0,
                               "data": {}, "msg": "success"}, b
    now = int(time.time())
    st, _, b = c("POST", H + "hooksig", bot_body("signed", now, "s3cr3t"))
    assert st == 200 and b["code"] == 0, b
    for body in (bot_body("x"), bot_body("x", now, "wrong"), bot_body("x", now - 4000, "s3cr3t"),
                 bot_body("x", now + 4000, "s3cr3t")):
        st, _, b = c("POST", H + "hooksig", body)
        assert st == 200 and b["code"] == 19021 and b["msg"] == fake_feishu.CODE_MSGS[19021]
    for raw in (b"nope", json.dumps({"msg_type": "text", "content": "{\"text\":\"x\"}"}).encode(),
                json.dumps({"content": {"text": "x"}}).encode(),
                json.dumps({"msg_type": "text", "content": {"text": "x" * 21000}}).encode()):
        st, _, b = c("POST", H + "hookplain", raw=raw)
        assert st == 200 and b == {"code": 9499, "msg": "Bad Request", "data": {}}, b
    st, _, b = c("POST", H + "hookplain", {"msg_type": "interactive",
                                          "card": {"elements": []}})
    assert st == 200 and b["code"] == 0
    m = messages(c, "?receive_id_type=bot")
    assert [(x["receive_id"], x["content"]) for x in m] == [
        ("hookplain", {"text": "plain"}), ("hooksig", {"text": "signed"}),
        ("hookplain", {"elements": []})], m
    time.sleep(1.05)
    codes = [c("POST", H + "hookplain", bot_body("r%d" % i))[2]["code"] for i in range(6)]
    assert codes == [0] * 5 + [11232], codes
    time.sleep(1.05)
    for mode, want in (("server_error", (500, 1)), ("rate_limit", (200, 11232)),
                       ("token_invalid", (200, 19001)), ("code:19024", (200, 19024))):
        c("POST", "/_fake/fail", {"mode": mode})
        st, _, b = c("POST", H + "hookplain", bot_body(mode))
        assert (st, b["code"]) == want, (mode, st, b)
    c("POST", "/_fake/fail", {"mode": "drop"})
    expect_drop(c, "POST", H + "hookplain", bot_body("drop"))
    c("POST", "/_fake/fail", {"mode": "timeout_after_accept", "seconds": 1})
    expect_timeout(c, "POST", H + "hookplain", bot_body("late"), timeout=0.3)
    assert messages(c)[-1]["content"] == {"text": "late"}
    assert not any(x["content"].get("text") in ("server_error", "rate_limit", "token_invalid",
                                                 "code:19024", "drop") for x in messages(c))
    assert c("POST", H + "hookplain", bot_body("after"))[2]["code"] == 0  # bot still known

    # ---- the requests log
    reqs = c("GET", "/_fake/requests")[2]
    r = [x for x in reqs if x["path"] == "/open-apis/im/v1/messages"][0]
    assert r["method"] == "POST" and r["query"] == {"receive_id_type": "user_id"}
    assert r["headers"]["authorization"].startswith("Bearer t-")
    assert r["body"]["receive_id"] == "u1" and isinstance(r["time"], float)
    assert not any(x["path"].startswith("/_fake/") for x in reqs)
    c("DELETE", "/_fake/requests")
    assert c("GET", "/_fake/requests")[2] == []
    assert c("GET", "/nowhere")[0] == 404
    c("POST", "/_fake/fail", {"mode": "drop"})
    assert c("POST", "/_fake/reset")[0] == 200
    assert c("GET", "/_fake/requests")[2] == [] and messages(c) == []
    assert c("GET", "/_fake/fail")[2] == []

    # ---- keep-alive: one connection served all of the above (after its reconnects)
    sock = c.conn.sock
    for _ in range(3):
        c("GET", "/_fake/messages")
    assert c.conn.sock is sock

    # ---- a second instance: short tokens, --reject-user-id, an app rate of 3/s
    port2 = start(FEISHU, "--app", "cli_a:sa", "--user", "u1:ou_1", "--token-ttl", "1",
                  "--reject-user-id", "--app-rate", "3", "--user-rate", "0")
    c2 = Client(port2)
    st, _, b = c2("POST", P, {"app_id": "cli_a", "app_secret": "sa"})
    assert b["expire"] == 1
    tok = b["tenant_access_token"]
    st, _, b = sendmsg(c2, tok, "user_id", "u1")
    assert st == 400 and b == {"code": 99991672, "msg": fake_feishu.MSG_SCOPE,
                               "error": b["error"]}
    res = [sendmsg(c2, tok, "open_id", "ou_1") for _ in range(4)]  # user-rate 0: no limit
    assert [x[0] for x in res] == [200, 200, 200, 429]
    assert res[3][1]["x-ogw-ratelimit-limit"] == "3"
    time.sleep(1.1)  # the token expired on its own
    assert sendmsg(c2, tok, "open_id", "ou_1")[2]["code"] == 99991663

    # ---- a third: the chats the bot is in (--chat); a chat is one receiver for the rate
    port3 = start(FEISHU, "--app", "cli_a:sa", "--chat", "oc_in", "--user-rate", "2")
    c3 = Client(port3)
    tok = get_token(c3)
    st, _, b = sendmsg(c3, tok, "chat_id", "oc_out", "not a member")
    assert st == 400 and b["code"] == 230002 and b["error"]["log_id"], b
    res = [sendmsg(c3, tok, "chat_id", "oc_in", "to the group") for _ in range(3)]
    assert [x[0] for x in res] == [200, 200, 429] and res[0][2]["data"]["chat_id"] == "oc_in"
    [m, _] = messages(c3, "?receive_id_type=chat_id")
    assert m["receive_id"] == "oc_in" and m["user_id"] is None and m["open_id"] is None


def whsig(secret, msg_id, ts, body):
    return webhook_receiver.sign(webhook_receiver.secret_key(secret), msg_id, ts, body)


def hook(c, path, body, secret, msg_id="msg_1", ts=None, sig=None, **kw):
    raw = json.dumps(body).encode()
    ts = int(time.time()) if ts is None else ts
    hdrs = {"webhook-id": msg_id, "webhook-timestamp": str(ts),
            "webhook-signature": sig or whsig(secret, msg_id, ts, raw)}
    return c("POST", path, raw=raw, headers=hdrs, **kw)


def test_receiver():
    S1 = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    S2 = "whsec_" + base64.b64encode(b"another secret of 32 bytes......").decode()
    vector_sig = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
    vbody = b'{"test": 2432232314}'
    vid, vts = "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330
    # the Standard Webhooks vector (integration-facts 4.1), function level
    key = webhook_receiver.secret_key(S1)
    assert webhook_receiver.sign(key, vid, vts, vbody) == vector_sig
    vh = {"webhook-id": vid, "webhook-timestamp": str(vts), "webhook-signature": vector_sig}
    assert webhook_receiver.verify([key], vh, vbody, 0) == (True, None)
    assert webhook_receiver.verify([key], vh, vbody, 300) == (False, "timestamp too old")
    assert webhook_receiver.verify([key], vh, vbody, 300, now=vts + 10) == (True, None)

    # over HTTP, --tolerance 0: no timestamp check
    pv = start(RECEIVER, "--secret", S1, "--tolerance", "0")
    cv = Client(pv)
    st, _, b = cv("POST", "/hooks/v", raw=vbody, headers=vh)
    assert st == 200 and b == {"ok": True}
    rec = cv("GET", "/_fake/deliveries")[2]
    assert len(rec) == 1 and rec[0]["verified"] is True and rec[0]["raw_body"] == vbody.decode()

    port = start(RECEIVER, "--secret", S1, "--secret", S2, "--tolerance", "300")
    c = Client(port)
    # verification failures: 401, recorded unverified with a reason
    raw = b'{"a":1}'
    now = int(time.time())
    bad = [({}, "missing header webhook-id"),
           ({"webhook-id": "m", "webhook-timestamp": str(now)}, "missing header webhook-signature"),
           ({"webhook-id": "m", "webhook-timestamp": "soon", "webhook-signature": "v1,AA=="},
            "invalid webhook-timestamp"),
           ({"webhook-id": "m", "webhook-timestamp": str(now),
             "webhook-signature": whsig(S1, "m", now, b'{"a":2}')}, "no matching signature"),
           ({"webhook-id": "m", "webhook-timestamp": str(now),
             "webhook-signature": "v1a," + whsig(S1, "m", now, raw)[3:]}, "no v1 signature"),
           ({"webhook-id": "m", "webhook-timestamp": str(now - 400),
             "webhook-signature": whsig(S1, "m", now - 400, raw)}, "timestamp too old"),
           ({"webhook-id": "m", "webhook-timestamp": str(now + 400),
             "webhook-signature": whsig(S1, "m", now + 400, raw)}, "timestamp too new")]
    c("POST", "/_fake/behaviour", {"path": "/hooks/a", "mode": "gone", "count": 1})
    for hdrs, reason in bad:
        st, _, b = c("POST", "/hooks/a", raw=raw, headers=hdrs)
        assert st == 401 and b == {"error": reason}, (st, b, reason)
    reqs = c("GET", "/_fake/requests?path=/hooks/a")[2]
    assert [(r["verified"], r["reason"], r["status"]) for r in reqs] == \
        [(False, reason, 401) for _, reason in bad]
    # unverified requests did not consume the behaviour
    assert hook(c, "/hooks/a", {"n": 1}, S1)[0] == 410
    # rotation: the second secret; a list with other versions and a wrong v1 first
    assert hook(c, "/hooks/a", {"n": 2}, S2, "msg_2")[0] == 200
    ts = int(time.time())
    body = json.dumps({"n": 3}).encode()
    sig = "v1a,Zm9v v1,AAAA " + whsig(S1, "msg_3", ts, body) + " v2,xyz"
    st, _, b = c("POST", "/hooks/a", raw=body, headers={
        "webhook-id": "msg_3", "webhook-timestamp": str(ts), "webhook-signature": sig})
    assert st == 200 and b == {"ok": True}
    # header names are case-insensitive
    st, _, _ = c("POST", "/hooks/a", raw=body, headers={
        "Webhook-Id": "msg_3", "WEBHOOK-TIMESTAMP": str(ts), "Webhook-Signature": sig})
    assert st == 200

    # behaviours
    B = "/_fake/behaviour"
    assert c("POST", B, {"path": "/hooks/b", "mode": "explode"})[0] == 400
    assert c("POST", B, {"path": "hooks/b", "mode": "ok"})[0] == 400
    c("POST", B, {"path": "/hooks/b", "mode": "status", "status": 503, "retry_after": 7,
                  "count": 1})
    c("POST", B, {"path": "/hooks/b", "mode": "status", "status": 429, "count": 1})
    c("POST", B, {"path": "/hooks/b", "mode": "status", "status": 204, "count": 1})
    c("POST", B, {"path": "/hooks/b", "mode": "gone", "count": 1})
    c("POST", B, {"path": "/hooks/b", "mode": "redirect", "count": 1})
    c("POST", B, {"path": "/hooks/b", "mode": "big", "count": 1})
    c("POST", B, {"path": "/hooks/b", "mode": "slow", "seconds": 0.5, "count": 1})
    st, _, b = c("POST", B, {"path": "/hooks/b", "mode": "drop", "count": 1})
    assert [q["mode"] for q in b["queue"]] == ["status", "status", "status", "gone",
                                              "redirect", "big", "slow", "drop"]
    assert list(c("GET", B)[2]) == ["/hooks/b"]
    st, h, b = hook(c, "/hooks/b", {"i": 1}, S1, "b1")
    assert st == 503 and h["retry-after"] == "7" and b["error"]
    st, h, b = hook(c, "/hooks/b", {"i": 2}, S1, "b2")
    assert st == 429 and "retry-after" not in h
    st, h, b = hook(c, "/hooks/b", {"i": 3}, S1, "b3")
    assert st == 204 and b is None and h["content-length"] == "0"
    assert hook(c, "/hooks/b", {"i": 4}, S1, "b4")[0] == 410
    st, h, b = hook(c, "/hooks/b", {"i": 5}, S1, "b5")
    assert st == 302 and h["location"] == "/elsewhere"
    st, h, b = hook(c, "/hooks/b", {"i": 6}, S1, "b6")
    assert st == 200 and int(h["content-length"]) == 1 << 20 and b["ok"] is True
    t0 = time.time()
    st, _, b = hook(c, "/hooks/b", {"i": 7}, S1, "b7")
    assert st == 200 and time.time() - t0 >= 0.5
    expect_drop(hook, c, "/hooks/b", {"i": 8}, S1, "b8")
    st, _, b = hook(c, "/hooks/b", {"i": 9}, S1, "b9")  # the queue is empty: ok again
    assert st == 200 and b == {"ok": True}
    assert c("GET", B)[2] == {}
    # unlimited behaviours last until changed; a new one replaces them
    c("POST", B, {"path": "/hooks/c", "mode": "status", "status": 500})
    assert [hook(c, "/hooks/c", {}, S1, "c%d" % i)[0] for i in range(3)] == [500] * 3
    c("POST", B, {"path": "/hooks/c", "mode": "gone", "count": None})
    assert hook(c, "/hooks/c", {}, S1, "c3")[0] == 410
    c("POST", B, {"path": "/hooks/c", "mode": "ok"})
    assert hook(c, "/hooks/c", {}, S1, "c4")[0] == 200
    # a limited one queued before an unlimited one; replace; DELETE
    c("POST", B, {"path": "/hooks/c", "mode": "status", "status": 502, "count": 1,
                  "replace": True})
    c("POST", B, {"path": "/hooks/c", "mode": "gone"})
    assert [hook(c, "/hooks/c", {}, S1, "c%d" % i)[0] for i in (5, 6, 7)] == [502, 410, 410]
    c("DELETE", B + "?path=/hooks/c")
    assert hook(c, "/hooks/c", {}, S1, "c8")[0] == 200
    c("POST", B, {"path": "/hooks/c", "mode": "gone"})
    c("DELETE", B)
    assert hook(c, "/hooks/c", {}, S1, "c9")[0] == 200
    # /elsewhere is recorded when requested (a sender that followed a redirect)
    assert c("GET", "/_fake/requests?path=/elsewhere")[2] == []
    c("GET", "/elsewhere")
    assert len(c("GET", "/_fake/requests?path=/elsewhere")[2]) == 1

    # deliveries: verified 2xx only; duplicates by webhook-id per path
    c("DELETE", "/_fake/requests")
    assert c("GET", "/_fake/requests")[2] == []
    c("POST", B, {"path": "/hooks/d", "mode": "status", "status": 500, "count": 1})
    assert hook(c, "/hooks/d", {"x": 1}, S1, "evt_1")[0] == 500   # failed attempt
    assert hook(c, "/hooks/d", {"x": 1}, S1, "evt_1")[0] == 200   # retry delivered
    assert hook(c, "/hooks/d", {"x": 1}, S1, "evt_1")[0] == 200   # a duplicate
    assert hook(c, "/hooks/d", {"x": 2}, S1, "evt_2")[0] == 200
    assert hook(c, "/hooks/e", {"x": 1}, S1, "evt_1")[0] == 200   # another endpoint
    assert hook(c, "/hooks/d", {"x": 3}, "whsec_" + "QUFB" * 8, "evt_3")[0] == 401
    dl = c("GET", "/_fake/deliveries?path=/hooks/d")[2]
    assert [(d["webhook_id"], d["duplicate"]) for d in dl] == \
        [("evt_1", False), ("evt_1", True), ("evt_2", False)], dl
    assert dl[0]["body"] == {"x": 1} and dl[0]["headers"]["webhook-id"] == "evt_1"
    assert dl[0]["method"] == "POST" and dl[0]["mode"] == "ok" and dl[0]["status"] == 200
    all_d = c("GET", "/_fake/deliveries")[2]
    assert len(all_d) == 4 and not all_d[3]["duplicate"]
    assert len(c("GET", "/_fake/requests")[2]) == 6
    # PUT and a chunked body
    raw = b'{"put":true}'
    ts = int(time.time())
    hdrs = {"webhook-id": "p1", "webhook-timestamp": str(ts),
            "webhook-signature": whsig(S2, "p1", ts, raw)}
    assert c("PUT", "/hooks/p", raw=raw, headers=hdrs)[0] == 200
    c.conn.putrequest("POST", "/hooks/p")
    for k, v in hdrs.items():
        c.conn.putheader(k, v)
    c.conn.putheader("Transfer-Encoding", "chunked")
    c.conn.endheaders()
    c.conn.send(b"5\r\n" + raw[:5] + b"\r\n" + b"%x\r\n" % (len(raw) - 5) + raw[5:] +
                b"\r\n0\r\n\r\n")
    resp = c.conn.getresponse()
    assert resp.status == 200 and resp.read() == b'{"ok":true}'
    dl = c("GET", "/_fake/deliveries?path=/hooks/p")[2]
    assert [(d["method"], d["body"], d["duplicate"]) for d in dl] == \
        [("PUT", {"put": True}, False), ("POST", {"put": True}, True)]

    # secrets replaced at runtime; none: nothing checked
    assert c("POST", "/_fake/secrets", {"secrets": ["not base64!"]})[0] == 400
    c("POST", "/_fake/secrets", {"secrets": [S2], "tolerance": 0})
    assert hook(c, "/hooks/f", {}, S1, "f1")[0] == 401
    assert hook(c, "/hooks/f", {}, S2, "f2", ts=1000)[0] == 200
    c("POST", "/_fake/secrets", {"secrets": []})
    st, _, _ = c("POST", "/hooks/f", raw=b"plain text")
    assert st == 200
    r = c("GET", "/_fake/requests?path=/hooks/f")[2][-1]
    assert r["verified"] is None and r["body"] is None and r["raw_body"] == "plain text"
    assert len(c("GET", "/_fake/deliveries?path=/hooks/f")[2]) == 2
    c("POST", B, {"path": "/hooks/f", "mode": "gone"})
    assert c("POST", "/_fake/reset")[0] == 200
    assert c("GET", "/_fake/requests")[2] == [] and c("GET", B)[2] == {}
    assert c("GET", "/_fake/nothing")[0] == 404

    # throughput over one kept-alive connection
    sock = c.conn.sock
    n, t0 = 2000, time.time()
    for i in range(n):
        assert c("POST", "/hooks/load", raw=b'{"i":%d}' % i)[0] == 200
    rate = n / (time.time() - t0)
    assert c.conn.sock is sock
    assert len(c("GET", "/_fake/deliveries?path=/hooks/load")[2]) == n
    print("receiver: %d requests/s over one keep-alive connection" % rate)


def main():
    try:
        test_feishu()
        test_receiver()
    finally:
        for p in PROCS:
            p.kill()
            p.wait()
    print("ok")


if __name__ == "__main__":
    main()
