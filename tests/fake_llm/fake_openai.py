#!/usr/bin/env python3
"""A fake OpenAI-compatible chat-completions server for agentbus' end-to-end tests.

    python3 tests/fake_llm/fake_openai.py --port 0 [--host 127.0.0.1] [--api-key KEY]

prints its port (one line, the number alone) and serves until killed. It speaks the real
wire format: POST /v1/chat/completions with "stream": false (a chat.completion body) or true
(HTTP/1.1 chunked text/event-stream of `data: <chunk>` events ending with `data: [DONE]`; with
stream_options.include_usage, "usage": null in every chunk and a usage chunk with
"choices": [] before [DONE]); error bodies {"error": {"message", "type", "param", "code"}};
GET /v1/models. With --api-key, a request without "Authorization: Bearer KEY" gets a 401
whose message quotes the key it was given.

The behaviour is chosen per request by an `x-fake-behaviour` header, else by the model name,
written `<behaviour>[:<number>]`; any other model (gpt-4o, openclaw:main, ...) means echo:

    echo              "echo: <last user message>", streamed word by word
    empty             an answer without content (finish_reason "stop")
    tool_calls        get_weather({"location": <last user message>}), arguments split
                      across chunks; finish_reason "tool_calls"
    rate_limit[:s]    429, Retry-After: s (default 1), code rate_limit_exceeded
    server_error      500 with a server_error object
    status:<code>     that status (400-599) with an error object
    stream_error      stream: two chunks, an error object, the end of the body (no
                      finish_reason, no [DONE]); no stream: 500
    cut               stream: two chunks, then the connection closes inside the chunked
                      body; no stream: a body shorter than its Content-Length, then close
    cut_clean         stream: two chunks, then a clean end of the body without
                      finish_reason or [DONE]; no stream: a truncated JSON body
    garbage           stream: a chunk that is not JSON, then [DONE]; no stream: not JSON
    inband_error      OpenClaw's old failure: content "Error: internal error", "stop"
    slow_first[:ms]   echo, with ms (default 2000) before the first content (stream: after
                      the headers and the role chunk)
    slow_chunks[:ms]  echo, with ms (default 500) between content chunks
    big[:n]           an answer of n (default 1 000 000) ASCII bytes, streamed in 64 KiB pieces

Every request is recorded before it is answered (method, path, headers with lower-case
names, body parsed, raw_body): GET /_fake/requests lists them oldest first, DELETE forgets.
Standard library only.
"""
import argparse
import os
import re
import sys
import threading
import time
import uuid

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from fakelib import MAX_BODY, BaseHandler, dumps, serve  # noqa: E402

BEHAVIOURS = ("echo", "empty", "tool_calls", "rate_limit", "server_error", "status",
              "stream_error", "cut", "cut_clean", "garbage", "inband_error", "slow_first",
              "slow_chunks", "big")

_lock = threading.Lock()
_requests = []


def error_body(message, type_, code=None, param=None):
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


def last_user_text(messages):
    for m in reversed(messages if isinstance(messages, list) else []):
        if isinstance(m, dict) and m.get("role") == "user":
            content = m.get("content")
            if isinstance(content, list):  # content parts
                return "".join(p.get("text", "") for p in content if isinstance(p, dict))
            return content if isinstance(content, str) else ""
    return None


def choose(model, header):
    """(behaviour, number or None) from `x-fake-behaviour` or the model name."""
    for spec in (header, model):
        if not isinstance(spec, str):
            continue
        name, _, arg = spec.partition(":")
        if name in BEHAVIOURS:
            return name, (int(arg) if arg.isdigit() else None)
    return "echo", None


class Handler(BaseHandler):
    server_version = "fake-openai/1"

    # ---- plumbing ---------------------------------------------------------------------

    def start_stream(self):
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream; charset=utf-8")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        self.wfile.flush()

    def write_chunk(self, data):
        """One HTTP chunk (an empty one ends the body)."""
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        self.wfile.flush()

    def send_event(self, obj):
        text = obj if isinstance(obj, str) else dumps(obj)
        self.write_chunk(("data: %s\n\n" % text).encode())

    def read_body(self):
        """Content-Length only (no chunked bodies, unlike fakelib's), as this fake always read."""
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY:
            self.close_connection = True
            return None
        return self.rfile.read(length) if length > 0 else b""

    # ---- routes -----------------------------------------------------------------------

    def do_GET(self):
        if self.path == "/_fake/requests":
            with _lock:
                self.send_json(200, list(_requests))
        elif self.path == "/v1/models":
            self.send_json(200, {"object": "list", "data": [
                {"id": b, "object": "model", "created": 0, "owned_by": "fake"}
                for b in BEHAVIOURS]})
        else:
            self.send_json(404, error_body("Unknown path " + self.path, "invalid_request_error"))

    def do_DELETE(self):
        if self.path == "/_fake/requests":
            with _lock:
                _requests.clear()
            self.send_json(200, {"ok": True})
        else:
            self.send_json(404, error_body("Unknown path " + self.path, "invalid_request_error"))

    def do_POST(self):
        raw = self.read_body()
        if raw is None:
            return self.send_json(413, error_body("Request too large", "invalid_request_error"))
        req = self.record(raw, _requests, _lock, self.path)
        if self.path != "/v1/chat/completions":
            return self.send_json(404, error_body("Unknown path " + self.path,
                                                  "invalid_request_error"))
        key = self.server.api_key
        given = self.headers.get("Authorization") or ""
        if key and given != "Bearer " + key:
            # Quoting the key it was given, as some OpenAI-compatible servers do (OpenAI
            # itself masks the middle): the client must keep it out of logs and events.
            return self.send_json(401, error_body(
                "Incorrect API key provided: %s." % given.removeprefix("Bearer "),
                "invalid_request_error", "invalid_api_key"))
        if not isinstance(req, dict):
            return self.send_json(400, error_body("We could not parse the JSON body of your "
                                                  "request.", "invalid_request_error"))
        user = last_user_text(req.get("messages"))
        if user is None:
            return self.send_json(400, error_body("Missing user message in `messages`.",
                                                  "invalid_request_error", None, "messages"))
        model = req.get("model") if isinstance(req.get("model"), str) else "fake"
        behaviour, arg = choose(model, self.headers.get("x-fake-behaviour"))
        stream = req.get("stream") is True
        opts = req.get("stream_options")
        usage_chunk = stream and isinstance(opts, dict) and opts.get("include_usage") is True
        # A client that gives up (a timeout test) is fakelib's handle_one_request's business.
        self.answer(behaviour, arg, model, user, req, stream, usage_chunk)

    # ---- answers ----------------------------------------------------------------------

    def answer(self, behaviour, arg, model, user, req, stream, usage_chunk):
        if behaviour == "rate_limit":
            return self.send_json(429, error_body(
                "Rate limit reached for requests", "requests", "rate_limit_exceeded"),
                {"Retry-After": str(arg if arg is not None else 1)})
        if behaviour == "server_error" or (behaviour == "stream_error" and not stream):
            return self.send_json(500, error_body(
                "The server had an error while processing your request.", "server_error"))
        if behaviour == "status":
            code = arg if arg and 400 <= arg <= 599 else 500
            return self.send_json(code, error_body("Fake status %d" % code, "fake_error"))

        text = {"empty": "", "inband_error": "Error: internal error"}.get(
            behaviour, "echo: " + user)
        if behaviour == "big":
            size = arg if arg is not None else 1000000
            text = ("lorem ipsum " * (size // 12 + 1))[:size]
        words = lambda s: len(re.findall(r"\S+", s))
        prompt = sum(words(m["content"]) for m in req["messages"]
                     if isinstance(m, dict) and isinstance(m.get("content"), str))
        self.cid, self.model, self.created = ("chatcmpl-" + uuid.uuid4().hex[:24], model,
                                              int(time.time()))
        self.usage = {"prompt_tokens": prompt, "completion_tokens": words(text) + 1,
                      "total_tokens": prompt + words(text) + 1}
        self.call = None
        if behaviour == "tool_calls":
            self.call = {"id": "call_" + uuid.uuid4().hex[:24], "type": "function",
                         "function": {"name": "get_weather",
                                      "arguments": dumps({"location": user})}}
        delay = {"slow_first": 2000, "slow_chunks": 500}.get(behaviour, 0)
        delay = (arg if arg is not None else delay) / 1000 if delay else 0
        if stream:
            self.answer_stream(behaviour, text, delay, usage_chunk)
        else:
            self.answer_whole(behaviour, text, delay)

    def answer_whole(self, behaviour, text, delay):
        time.sleep(delay)
        message = {"role": "assistant", "content": None if self.call else text,
                   "refusal": None}
        if self.call:
            message["tool_calls"] = [self.call]
        data = dumps({"id": self.cid, "object": "chat.completion", "created": self.created,
                      "model": self.model, "system_fingerprint": "fp_fake",
                      "choices": [{"index": 0, "message": message, "logprobs": None,
                                   "finish_reason": "tool_calls" if self.call else "stop"}],
                      "usage": self.usage}).encode()
        if behaviour == "cut":  # announce the whole length, send half, close
            self.close_connection = True
            return self.send_bytes(200, data[: len(data) // 2], self.json_type, length=len(data))
        if behaviour == "cut_clean":
            data = data[: len(data) // 2]
        elif behaviour == "garbage":
            data = b"not json at all"
        self.send_bytes(200, data, self.json_type)

    def chunk(self, delta, finish_reason=None, usage_field=False):
        obj = {"id": self.cid, "object": "chat.completion.chunk", "created": self.created,
               "model": self.model, "system_fingerprint": "fp_fake",
               "choices": [{"index": 0, "delta": delta, "logprobs": None,
                            "finish_reason": finish_reason}]}
        if usage_field:
            obj["usage"] = None
        return obj

    def answer_stream(self, behaviour, text, delay, usage_chunk):
        self.start_stream()
        self.send_event(self.chunk({"role": "assistant", "content": "", "refusal": None},
                                   None, usage_chunk))
        if behaviour == "slow_first":
            time.sleep(delay)
        if self.call:
            args = self.call["function"]["arguments"]
            first = dict(self.call, index=0, function={"name": "get_weather", "arguments": ""})
            pieces = [{"tool_calls": [first]}] + [
                {"tool_calls": [{"index": 0, "function": {"arguments": args[i:i + 7]}}]}
                for i in range(0, len(args), 7)]
        else:
            pieces = [{"content": p} for p in re.findall(r"\s*\S+", text)]
            if behaviour == "big":
                pieces = [{"content": text[i:i + 65536]} for i in range(0, len(text), 65536)]
        for n, delta in enumerate(pieces):
            if n and behaviour == "slow_chunks":
                time.sleep(delay)
            self.send_event(self.chunk(delta, None, usage_chunk))
            if n == 1 and behaviour == "stream_error":
                self.send_event(error_body("The server had an error while processing your "
                                           "request.", "server_error"))
                return self.write_chunk(b"")
            if n == 1 and behaviour in ("cut", "cut_clean"):
                break
        if behaviour == "cut":
            self.close_connection = True  # no terminating chunk: the body is incomplete
            return
        if behaviour == "cut_clean":
            return self.write_chunk(b"")
        if behaviour == "garbage":
            self.send_event('{"choices":[{"index":0,"delta":{"content":"x"')
        else:
            self.send_event(self.chunk({}, "tool_calls" if self.call else "stop", usage_chunk))
            if usage_chunk:
                last = self.chunk({}, None)
                last["choices"], last["usage"] = [], self.usage
                self.send_event(last)
        self.send_event("[DONE]")
        self.write_chunk(b"")


def main():
    ap = argparse.ArgumentParser(description="fake OpenAI-compatible server for tests")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0, help="0 picks a free port")
    ap.add_argument("--api-key", default="", help="require Authorization: Bearer KEY")
    args = ap.parse_args()
    serve(Handler, args.host, args.port, lambda server: setattr(server, "api_key", args.api_key))


if __name__ == "__main__":
    main()
