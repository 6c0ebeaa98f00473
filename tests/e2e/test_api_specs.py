"""The API contracts (docs/api/openapi.yaml, docs/api/asyncapi.yaml) are linted by real
linters and kept true by comparing them with the code:

- the (method, path) pairs the ingress registers, read from its C sources, are exactly the
  OpenAPI document's operations;
- the event types the services publish (the "agentbus.*" string literals of the code that
  are not topic names) are exactly the AsyncAPI document's messages, its topics are
  common/topics.c's (with their partitions), and its Kafka headers are the producer's.

The extractor is strict: a registration it cannot read fails the test instead of being
skipped. The linters are installed by scripts/test-tools/spec-linters.sh (run by
`scripts/install-deps.sh --test`); a missing one fails the test.
"""
import copy
import json
import os
import re
import subprocess

import pytest
import yaml

from conftest import ADMIN_TOKEN, ROOT, http

API_DIR = os.path.join(ROOT, "docs", "api")
OPENAPI = os.path.join(API_DIR, "openapi.yaml")
ASYNCAPI = os.path.join(API_DIR, "asyncapi.yaml")
RULESET = os.path.join(API_DIR, ".spectral.yaml")
TOOLS = os.path.join(ROOT, ".tools", "spec-linters")
SPECTRAL = os.path.join(TOOLS, "node_modules", ".bin", "spectral")
ASYNCAPI_SCHEMA = os.path.join(TOOLS, "node_modules", "@asyncapi", "specs", "schemas", "3.0.0.json")
PYTHON_TOOLS = os.path.join(TOOLS, "python")
INSTALL_HINT = "run scripts/test-tools/spec-linters.sh (or scripts/install-deps.sh --test)"

# Spectral findings accepted, each with its reason: (file, rule, path) -> why.
# Anything else Spectral reports, of any severity, fails the test; so does an entry here
# that Spectral no longer reports (the allowlist must not outlive its reason).
SPECTRAL_ALLOWED = {
    ("asyncapi.yaml", "asyncapi-latest-version", "asyncapi"):
        "AsyncAPI 3.0 on purpose (issue 7 asks for 3.0); 3.1 adds nothing this document uses",
    ("asyncapi.yaml", "asyncapi-info-contact-properties", "info.contact"):
        "the project publishes no contact e-mail address, and inventing one would be wrong",
}

HTTP_METHODS = ("get", "put", "post", "delete", "patch", "head", "options", "trace")

# Listeners without a route table: ab_http_server_fallback(listener, "<label>", ...) answers
# every path, and these are the operations documented for it.
FALLBACK_OPERATIONS = {
    "webhook": {("POST", "/webhook/{hookId}")},  # also POST <a hook's path>: see its description
}

# "agentbus.*" literals of the code that are neither topic names nor event types the code
# publishes, each with its reason.
NOT_PUBLISHED = {
    "agentbus.session.ended": "an outgoing event endpoints may subscribe to (common/outgoing.c); "
                              "nothing publishes it yet",
    "agentbus.notify.": "a prefix the notifier strips from its endpoint health event types",
    "agentbus.": "a prefix: a custom hook's topic may not contain it (common/incoming.c); "
                 "agentbusctl tail completes topic names with it",
}

# AsyncAPI messages that are not one event type: any operator-chosen type, and dead letters.
UNTYPED_MESSAGES = {"operatorEvent", "deadLetter"}


class ExtractError(AssertionError):
    """A registration the extractor cannot read: the test fails rather than skip it."""


# ---- tools ----

def require(path, what):
    if not os.path.exists(path):
        pytest.fail(f"{what} is missing ({path}): {INSTALL_HINT}")


def run_tool_python(code, *args):
    """Runs code on python3 with the pinned packages of .tools/ only (not the system's)."""
    require(os.path.join(PYTHON_TOOLS, "openapi_spec_validator"), "openapi-spec-validator")
    env = dict(os.environ, PYTHONPATH=PYTHON_TOOLS, PYTHONNOUSERSITE="1")
    return subprocess.run(["python3", "-c", code, *args], env=env, capture_output=True,
                          text=True, timeout=120)


# ---- C source reading ----

def strip_comments(text):
    """C text without comments, string literals kept (line numbers kept too)."""
    out, i, n = [], 0, len(text)
    while i < n:
        c = text[i]
        if c == '"' or c == "'":
            j = i + 1
            while j < n and text[j] != c:
                j += 2 if text[j] == "\\" else 1
            out.append(text[i:j + 1])
            i = j + 1
        elif text.startswith("/*", i):
            j = text.find("*/", i + 2)
            j = n if j < 0 else j + 2
            out.append("".join("\n" if ch == "\n" else " " for ch in text[i:j]))
            i = j
        elif text.startswith("//", i):
            j = text.find("\n", i)
            i = n if j < 0 else j
        else:
            out.append(c)
            i += 1
    return "".join(out)


def calls(text, name):
    """Yields (line, [top-level arguments]) of every call of name( in text."""
    for m in re.finditer(r"\b" + re.escape(name) + r"\s*\(", text):
        depth, i, args, start = 1, m.end(), [], m.end()
        while depth:
            if i >= len(text):
                raise ExtractError(f"unbalanced call of {name} at line {text.count(chr(10), 0, m.start()) + 1}")
            c = text[i]
            if c == '"':
                i += 1
                while text[i] != '"':
                    i += 2 if text[i] == "\\" else 1
            elif c in "([{":
                depth += 1
            elif c in ")]}":
                depth -= 1
            elif c == "," and depth == 1:
                args.append(text[start:i].strip())
                start = i + 1
            i += 1
        args.append(text[start:i - 1].strip())
        yield text.count("\n", 0, m.start()) + 1, args


def literal(arg, where):
    m = re.fullmatch(r'"((?:[^"\\]|\\.)*)"', arg)
    if m is None:
        raise ExtractError(f"{where}: {arg!r} is not a string literal")
    return m.group(1)


def ulfius_to_openapi(path):
    return re.sub(r":([A-Za-z_][A-Za-z0-9_]*)", r"{\1}", path)


def table_rows(text, declaration, where):
    """The brace-enclosed rows of `declaration = { {...}, {...} };` as lists of fields."""
    m = re.search(re.escape(declaration) + r"\s*=\s*\{", text)
    if m is None:
        raise ExtractError(f"{where}: no table {declaration!r}")
    body_start, depth, i = m.end(), 1, m.end()
    while depth:
        depth += {"{": 1, "}": -1}.get(text[i], 0)
        i += 1
    rows = []
    for row in split_args(text[body_start:i - 1]):
        if not row:
            continue
        row = re.sub(r"^\[[A-Z0-9_]+\]\s*=\s*", "", row)  # a designator: [AB_TOPIC_X] = {...}
        if not (row.startswith("{") and row.endswith("}")):
            raise ExtractError(f"{where}: row {row!r} of {declaration!r} is not {{...}}")
        rows.append(split_args(row[1:-1]))
    return rows


def split_args(text):
    """text split at its top-level commas."""
    return next(calls("__split__(" + text + ")", "__split__"))[1]


def admin_resource_routes(text, where):
    """The routes ingress_admin_resources_routes makes from its two tables."""
    if 'snprintf(path, sizeof(path), "/api/admin/%s%s", resources[i].name,' not in " ".join(text.split()) \
            or 'routes[r].item ? "/:id" : ""' not in text:
        raise ExtractError(f"{where}: the path of the resource routes is no longer built as "
                           '"/api/admin/%s%s" from resources[i].name and "/:id": update the extractor')
    names = [literal(row[0], where) for row in table_rows(text, "static const struct resource resources[]", where)]
    routes = []
    for row in table_rows(text, "} routes[]", where):
        if len(row) != 3 or row[1] not in ("true", "false"):
            raise ExtractError(f"{where}: route row {row!r} is not {{method, item, handler}}")
        routes.append((literal(row[0], where), row[1] == "true"))
    if not names or not routes:
        raise ExtractError(f"{where}: no resources or no routes")
    return {(method, f"/api/admin/{name}" + ("/:id" if item else "")) for name in names for method, item in routes}


def registered_routes(sources):
    """(METHOD, OpenAPI path) of every registration in sources ({relative path: C text})."""
    found = set()
    for rel, raw in sorted(sources.items()):
        text = strip_comments(raw)
        for line, args in calls(text, "ab_http_server_route"):
            where = f"{rel}:{line}"
            if rel == "common/http_server.c" and args[0].startswith("struct "):
                continue  # the wrapper's own definition
            if len(args) != 5:
                raise ExtractError(f"{where}: ab_http_server_route with {len(args)} arguments")
            if args[1] == "routes[r].method" and args[2] == "path" and rel.endswith("admin_resources.c"):
                found |= {(m, ulfius_to_openapi(p)) for m, p in admin_resource_routes(raw, where)}
                continue
            method, path = literal(args[1], where), literal(args[2], where)
            if method not in {m.upper() for m in HTTP_METHODS} or not path.startswith("/"):
                raise ExtractError(f"{where}: {method} {path} is not a route")
            found.add((method, ulfius_to_openapi(path)))
        for line, args in calls(text, "ab_http_server_fallback"):
            where = f"{rel}:{line}"
            if rel == "common/http_server.c" and args[0].startswith("struct "):
                continue
            label = literal(args[1], where) if len(args) == 4 else None
            if label not in FALLBACK_OPERATIONS:
                raise ExtractError(f"{where}: a fallback listener {label!r} that FALLBACK_OPERATIONS "
                                   "does not describe")
            found |= FALLBACK_OPERATIONS[label]
        # ulfius itself is called only by the wrapper: anything else would bypass it.
        for name in ("ulfius_add_endpoint", "ulfius_add_endpoint_by_val", "ulfius_add_endpoint_list",
                     "ulfius_set_default_endpoint"):
            for line, args in calls(text, name):
                if rel == "common/http_server.c" and (
                        args[-2:] == ["trampoline", "r"] or args[-2:] == ["trampoline", "&srv->fallback"]):
                    continue
                raise ExtractError(f"{rel}:{line}: {name} called outside ab_http_server_route")
    return found


def read_sources(*dirs):
    sources = {}
    for d in dirs:
        for name in sorted(os.listdir(os.path.join(ROOT, d))):
            if name.endswith(".c"):
                with open(os.path.join(ROOT, d, name), encoding="utf-8") as f:
                    sources[f"{d}/{name}"] = f.read()
    return sources


def code_routes():
    # The ingress binary links services/ingress and common (common/health.c: the ops routes).
    return registered_routes(read_sources("services/ingress", "common"))


def spec_operations(doc):
    return {(m.upper(), path) for path, item in doc["paths"].items() for m in item if m in HTTP_METHODS}


def compare(code, spec, what):
    """Problems (empty when the sets agree), naming what is missing on each side."""
    problems = []
    for item in sorted(code - spec):
        problems.append(f"{what} in the code, not in the document: {item}")
    for item in sorted(spec - code):
        problems.append(f"{what} in the document, not in the code: {item}")
    return problems


def load(path):
    with open(path, encoding="utf-8") as f:
        return yaml.safe_load(f)


# ---- topics, headers and event types ----

def code_topics():
    """{topic base name: partitions} of common/topics.c's table, dead-letter topics included."""
    with open(os.path.join(ROOT, "common", "topics.c"), encoding="utf-8") as f:
        text = strip_comments(f.read())
    rows = table_rows(text, "static const struct ab_topic_spec topics[AB_TOPIC__COUNT]", "common/topics.c")
    topics = {}
    for row in rows:
        fields = row if len(row) == 3 else None
        if fields is None:
            raise ExtractError(f"common/topics.c: row {row!r} is not {{base, partitions, dlq}}")
        base = literal(fields[0], "common/topics.c")
        if not fields[1].isdigit() or not (fields[2] == "NULL" or literal(fields[2], "common/topics.c")):
            raise ExtractError(f"common/topics.c: row {row!r} is not {{base, partitions, dlq}}")
        topics[base] = int(fields[1])
    for row in rows:
        if row[2] != "NULL" and literal(row[2], "common/topics.c") not in topics:
            raise ExtractError(f"common/topics.c: dead-letter topic {row[2]} has no row of its own")
    return topics


def agentbus_literals(typed):
    """Every "agentbus.<...>" name of the C code, with where it is; typed gets those used as
    an event type by their line (ab_event_new*("...", or #define ...TYPE... "...")."""
    found = {}
    for top in ("common", "services", "tools"):
        for dirpath, _, files in os.walk(os.path.join(ROOT, top)):
            for name in files:
                if not name.endswith((".c", ".h")):
                    continue
                path = os.path.join(dirpath, name)
                with open(path, encoding="utf-8") as f:
                    text = strip_comments(f.read())
                for m in re.finditer(r'"(agentbus\.[^"]*)"', text):
                    value = m.group(1)
                    rel = os.path.relpath(path, ROOT)
                    if re.search(r"\s", value) and "%" not in value:
                        continue  # prose (a metric's help, a message), not a name
                    if value not in NOT_PUBLISHED and not re.fullmatch(r"agentbus(\.[a-z0-9_]+)+", value):
                        raise ExtractError(f"{rel}: {value!r} builds an event type or topic at run "
                                           "time: the extractor cannot follow it")
                    found.setdefault(value, set()).add(rel)
                    # A name that is also a topic's is an event type only where it is one.
                    line = text[text.rfind("\n", 0, m.start()) + 1:text.find("\n", m.end())]
                    if re.search(r"ab_event_new(_derived)?\(\s*\"|#define\s+\w*TYPE\w*\s", line):
                        typed.add(value)
    return found


def code_event_types():
    typed = set()
    literals = agentbus_literals(typed)
    topics = code_topics()
    for value in NOT_PUBLISHED:
        assert value in literals, f"NOT_PUBLISHED names {value!r}, which the code no longer has"
    return {v for v in literals if (v not in topics or v in typed) and v not in NOT_PUBLISHED}


def spec_event_types(doc):
    types = set()
    for key, message in doc["components"]["messages"].items():
        consts = [part.get("properties", {}).get("type", {}).get("const")
                  for part in message.get("payload", {}).get("allOf", [])]
        consts = [c for c in consts if c is not None]
        if key in UNTYPED_MESSAGES:
            assert not consts, f"message {key} is listed as untyped but has type {consts}"
            continue
        assert len(consts) == 1, f"message {key} has no single payload type const: {consts}"
        assert message.get("name") == consts[0], f"message {key}: name {message.get('name')} != type {consts[0]}"
        types.add(consts[0])
    return types


def spec_topics(doc):
    """{base name: partitions} of the channels on agentbus' own topics ("{prefix}<base>")."""
    topics = {}
    for key, channel in doc["channels"].items():
        address = channel["address"]
        if address.startswith("{prefix}"):
            topics[address[len("{prefix}"):]] = channel.get("bindings", {}).get("kafka", {}).get("partitions")
        else:
            assert address == "{topic}" and key == "hookCustomTopic", f"channel {key}: unexpected address {address}"
    return topics


def c_header_names(rel, pattern):
    with open(os.path.join(ROOT, rel), encoding="utf-8") as f:
        names = set(re.findall(pattern, strip_comments(f.read())))
    assert names, f"{rel}: no Kafka header names found with {pattern}"
    return names


# ---- the linters ----

def test_spectral_lints_both_documents_clean(tmp_path):
    require(SPECTRAL, "Spectral")
    out = tmp_path / "spectral.json"
    proc = subprocess.run([SPECTRAL, "lint", "--ruleset", RULESET, "--format", "json", "--output", str(out),
                           "--fail-severity", "hint", OPENAPI, ASYNCAPI],
                          capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert out.exists(), f"spectral wrote no report: {proc.stdout}\n{proc.stderr}"
    findings = json.loads(out.read_text() or "[]")
    seen, unexpected = set(), []
    for f in findings:
        key = (os.path.basename(f["source"]), f["code"], ".".join(str(p) for p in f["path"]))
        seen.add(key)
        if key not in SPECTRAL_ALLOWED:
            unexpected.append(f"{key[0]}:{f['range']['start']['line'] + 1} {f['code']} "
                              f"(severity {f['severity']}) at {key[2]}: {f['message']}")
    assert not unexpected, "Spectral findings:\n" + "\n".join(unexpected)
    stale = set(SPECTRAL_ALLOWED) - seen
    assert not stale, f"allowlisted findings Spectral no longer reports (remove them): {stale}"
    # Zero findings is also what a crashed or misconfigured Spectral could say: it must
    # have reported on both files.
    assert {k[0] for k in seen} == {"asyncapi.yaml"} and proc.returncode in (0, 1), proc.stderr


def test_spectral_catches_a_broken_document(tmp_path):
    require(SPECTRAL, "Spectral")
    doc = load(OPENAPI)
    doc["paths"]["/api/gateway/poll"]["get"]["parameters"][0]["in"] = "body"  # OpenAPI 2's, not 3's
    broken = tmp_path / "openapi.yaml"
    broken.write_text(yaml.safe_dump(doc, sort_keys=False))
    proc = subprocess.run([SPECTRAL, "lint", "--ruleset", RULESET, "--format", "json", str(broken)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0 and "oas3-schema" in proc.stdout, proc.stdout + proc.stderr


def test_openapi_spec_validator_accepts_the_openapi_document():
    proc = run_tool_python(
        "import sys\n"
        "from openapi_spec_validator import validate\n"
        "from openapi_spec_validator.readers import read_from_filename\n"
        "spec, _ = read_from_filename(sys.argv[1])\n"
        "assert spec['openapi'].startswith('3.1'), spec['openapi']\n"
        "validate(spec)\n"
        "print('valid')\n", OPENAPI)
    assert proc.returncode == 0 and proc.stdout.strip() == "valid", proc.stdout + proc.stderr


ASYNCAPI_CHECK = r"""
import json, sys, yaml, jsonschema
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT7
schema = json.load(open(sys.argv[1]))
with open(sys.argv[2]) as f:
    doc = yaml.safe_load(f)
if len(sys.argv) > 3:
    doc["operations"]["ingressSendIngress"]["action"] = "publish"  # not an AsyncAPI 3 action
# The official schema references its definitions by their $id: register them, offline.
registry = Registry().with_resources(
    (d["$id"], Resource.from_contents(d, default_specification=DRAFT7))
    for d in schema["definitions"].values() if "$id" in d)
validator = jsonschema.validators.validator_for(schema)(schema, registry=registry)
errors = sorted(validator.iter_errors(doc), key=lambda e: list(e.absolute_path))
for e in errors:
    print("/".join(map(str, e.absolute_path)), e.message[:300])
print(len(errors), "errors")
"""


def test_asyncapi_document_matches_the_official_schema():
    require(ASYNCAPI_SCHEMA, "@asyncapi/specs")
    assert load(ASYNCAPI)["asyncapi"] == "3.0.0"
    proc = run_tool_python(ASYNCAPI_CHECK, ASYNCAPI_SCHEMA, ASYNCAPI)
    assert proc.returncode == 0 and proc.stdout.strip().endswith("\n0 errors") or \
        proc.stdout.strip() == "0 errors", proc.stdout + proc.stderr
    # and the check does catch a mistake
    proc = run_tool_python(ASYNCAPI_CHECK, ASYNCAPI_SCHEMA, ASYNCAPI, "break")
    assert proc.returncode == 0 and not proc.stdout.strip().endswith(" 0 errors"), proc.stdout + proc.stderr


# ---- the documents against the code ----

def test_openapi_operations_are_the_routes_the_ingress_registers():
    code = code_routes()
    assert ("GET", "/api/admin/agents/{id}") in code and ("GET", "/readyz") in code  # the extractor works
    assert len(code) >= 50, sorted(code)
    problems = compare(code, spec_operations(load(OPENAPI)), "operation")
    assert not problems, "\n".join(problems)


def test_the_route_comparison_catches_a_missing_operation():
    doc = copy.deepcopy(load(OPENAPI))
    del doc["paths"]["/api/admin/hooks/{id}"]["put"]
    problems = compare(code_routes(), spec_operations(doc), "operation")
    assert problems == ["operation in the code, not in the document: ('PUT', '/api/admin/hooks/{id}')"]
    doc["paths"]["/api/admin/hooks/{id}"]["put"] = {"responses": {}}
    doc["paths"]["/api/gateway/inbox"] = {"get": {"responses": {}}}
    problems = compare(code_routes(), spec_operations(doc), "operation")
    assert problems == ["operation in the document, not in the code: ('GET', '/api/gateway/inbox')"]


def test_the_route_extractor_refuses_what_it_cannot_read():
    ok = 'void f(void) { ab_http_server_route(api, "GET", "/api/x/:id", h, NULL); }'
    assert registered_routes({"services/ingress/x.c": ok}) == {("GET", "/api/x/{id}")}
    # a comment is not a registration
    assert registered_routes({"services/ingress/x.c": '/* ab_http_server_route(api, m, p, h, u) */'}) == set()
    for bad in ('ab_http_server_route(api, method, "/api/x", h, NULL);',
                'ab_http_server_route(api, "GET", base_path, h, NULL);',
                'ab_http_server_route(api, "GET", "/api/" "x", h, NULL);',
                'ab_http_server_fallback(listener, "other", receive, wh);',
                'ulfius_add_endpoint_by_val(&inst, "GET", NULL, "/x", 0, cb, NULL);'):
        with pytest.raises(ExtractError):
            registered_routes({"services/ingress/x.c": bad})


def test_asyncapi_event_types_are_the_ones_the_code_publishes():
    code = code_event_types()
    assert {"agentbus.message.sent", "agentbus.webhook.received", "agentbus.notify.retry"} <= code
    problems = compare(code, spec_event_types(load(ASYNCAPI)), "event type")
    assert not problems, "\n".join(problems)


def test_the_event_comparison_catches_a_missing_message():
    doc = copy.deepcopy(load(ASYNCAPI))
    del doc["components"]["messages"]["notifyEndpointRecovered"]
    problems = compare(code_event_types(), spec_event_types(doc), "event type")
    assert problems == ["event type in the code, not in the document: agentbus.notify.endpoint_recovered"]


def test_asyncapi_topics_are_common_topics():
    doc = load(ASYNCAPI)
    code, spec = code_topics(), spec_topics(doc)
    assert len(code) == 10, code
    problems = compare(set(code), set(spec), "topic")
    assert not problems, "\n".join(problems)
    assert spec == code, f"partitions differ: document {spec}, common/topics.c {code}"


def test_asyncapi_kafka_headers_are_the_producers_and_the_dead_letters():
    doc = load(ASYNCAPI)
    schemas = doc["components"]["schemas"]
    produced = c_header_names("common/kafka_producer.c", r'\(struct ab_kafka_header\)\s*\{\s*"([^"]+)"')
    assert set(schemas["KafkaHeaders"]["properties"]) == produced
    dlq = c_header_names("common/kafka_consumer.c", r'\{\s*"(x-agentbus-dlq-[a-z-]+)"')
    documented = {h for h in schemas["DeadLetterHeaders"]["properties"] if h.startswith("x-agentbus-dlq-")}
    assert documented == dlq


# ---- the documents against the running ingress ----

def test_every_documented_operation_reaches_a_route_of_the_running_ingress(stack):
    """One request per operation: none may get the listener's "no route" 404."""
    ingress = stack.start("ingress")
    doc = load(OPENAPI)
    headers = {"Authorization": "Bearer " + ADMIN_TOKEN, "Content-Type": "application/json"}
    unrouted = []
    for method, path in sorted(spec_operations(doc)):
        concrete = re.sub(r"\{[^}]+\}", "00000000-0000-4000-8000-000000000000", path)
        if path in ("/livez", "/readyz", "/metrics"):
            status, body, _ = ingress.ops(concrete)
        elif path.startswith("/webhook/"):
            status, body, _ = http(method, f"http://127.0.0.1:{stack.webhook_port}{concrete}", b"{}", headers)
        else:
            body_bytes = b"{}" if method in ("POST", "PUT", "PATCH") else None
            status, body, _ = http(method, stack.api + concrete, body_bytes, headers)
        message = body.get("error", {}).get("message", "") if isinstance(body, dict) else ""
        if status == 404 and message.startswith("no route for"):
            unrouted.append(f"{method} {path}")
    assert not unrouted, "documented but not routed: " + ", ".join(unrouted)
