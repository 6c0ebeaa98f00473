"""The admin API's resources (docs/admin-api.md, "Resources"), driven over HTTP against the real
ingress and PostgreSQL: CRUD on every resource, the admin token on every route, every kind of
bad input named by the spec, tenant consistency, write-only secrets, cascades, list filters.
Each test ends by checking that ingress is still up and still publishes events."""
import threading
import time
import uuid

from conftest import ADMIN_TOKEN, free_port, http

AUTH = {"Authorization": "Bearer " + ADMIN_TOKEN, "Content-Type": "application/json"}
RESOURCES = ("tenants", "llm-models", "agents", "members", "agent-member-relationships",
             "agent-agent-relationships", "channel-configs")


class Admin:
    def __init__(self, stack):
        self.base = stack.api + "/api/admin/"

    def call(self, method, path, body=None, headers=AUTH):
        status, answer, _ = http(method, self.base + path, body, headers)
        return status, answer

    def create(self, resource, body):
        status, answer = self.call("POST", resource, body)
        assert status == 201, (resource, body, status, answer)
        return answer

    def get(self, resource, id_):
        return self.call("GET", f"{resource}/{id_}")

    def patch(self, resource, id_, body):
        return self.call("PATCH", f"{resource}/{id_}", body)

    def delete(self, resource, id_):
        return self.call("DELETE", f"{resource}/{id_}")

    def list(self, resource, query=""):
        status, answer = self.call("GET", resource + (f"?{query}" if query else ""))
        assert status == 200, (resource, query, status, answer)
        return answer["items"]

    # A small world: a tenant with a model, two agents and a member.
    def tenant(self, name=None):
        return self.create("tenants", {"name": name or "t-" + uuid.uuid4().hex[:8]})

    def model(self, tenant, **extra):
        body = {"tenant_id": tenant["id"], "name": "m-" + uuid.uuid4().hex[:6], "provider": "openai",
                "base_url": "https://llm.example/v1", "model": "gpt-x"}
        return self.create("llm-models", {**body, **extra})

    def agent(self, tenant, name=None, type_="native", **extra):
        body = {"tenant_id": tenant["id"], "name": name or "a-" + uuid.uuid4().hex[:6], "type": type_}
        return self.create("agents", {**body, **extra})

    def member(self, tenant, **extra):
        return self.create("members", {"tenant_id": tenant["id"], "name": "Mia", **extra})


def bad_request(status, answer, *words):
    assert status == 400, (status, answer)
    assert answer["error"]["code"] == "invalid_request", answer
    for word in words:
        assert word in answer["error"]["message"], (word, answer)


def assert_still_up(stack, svc):
    assert svc.proc.poll() is None, "ingress died"
    assert svc.ops("/livez")[0] == 200
    status, body, _ = stack.publish("admin.test.done", {"ok": True})
    assert status == 202, body


def test_every_route_requires_the_admin_token(stack):
    svc = stack.start("ingress")
    admin = Admin(stack)
    tenant = admin.tenant()
    some_id = tenant["id"]
    for resource in RESOURCES:
        for method, path, body in (("GET", resource, None), ("POST", resource, {"name": "x"}),
                                   ("GET", f"{resource}/{some_id}", None),
                                   ("PATCH", f"{resource}/{some_id}", {"name": "x"}),
                                   ("DELETE", f"{resource}/{some_id}", None)):
            for headers in ({}, {"Authorization": "Bearer wrong-" + ADMIN_TOKEN},
                            {"Authorization": ADMIN_TOKEN}):
                status, answer = admin.call(method, path, body, headers)
                assert status == 401, (method, path, headers, status, answer)
                assert answer["error"]["code"] == "unauthorized"
    # Nothing was changed by the refused requests.
    status, answer = admin.get("tenants", some_id)
    assert status == 200 and answer["name"] == tenant["name"]
    assert_still_up(stack, svc)


def check_crud(admin, resource, body, changes):
    created = admin.create(resource, body)
    assert uuid.UUID(created["id"]) and created["created_at"].endswith("Z")
    for key, value in body.items():
        if key not in ("api_key", "app_secret"):
            assert created[key] == value, (resource, key, created)
    status, got = admin.get(resource, created["id"])
    assert status == 200 and got == created, (resource, got)
    assert created["id"] in [item["id"] for item in admin.list(resource)]
    time.sleep(0.01)
    status, patched = admin.patch(resource, created["id"], changes)
    assert status == 200, (resource, patched)
    for key, value in changes.items():
        if key not in ("api_key", "app_secret"):
            assert patched[key] == value, (resource, key, patched)
    assert patched["created_at"] == created["created_at"]
    if "updated_at" in created:
        assert patched["updated_at"] > created["updated_at"], (created, patched)
    status, answer = admin.get(resource, created["id"])
    assert status == 200 and answer == patched
    status, answer = admin.delete(resource, created["id"])
    assert status == 204, (resource, status, answer)
    status, answer = admin.get(resource, created["id"])
    assert status == 404 and answer["error"]["code"] == "not_found", answer
    assert admin.delete(resource, created["id"])[0] == 404
    assert admin.patch(resource, created["id"], changes)[0] == 404
    return created


def test_full_crud_on_every_resource(stack):
    svc = stack.start("ingress")
    admin = Admin(stack)
    check_crud(admin, "tenants", {"name": "Acme"}, {"name": "Acme Corp"})
    tenant = admin.tenant()
    check_crud(admin, "llm-models",
               {"tenant_id": tenant["id"], "name": "main", "provider": "openai",
                "base_url": "https://api.example/v1", "model": "gpt-4o", "api_key": "sk-1",
                "connect_timeout_ms": 1000, "max_concurrency": 2, "enabled": True},
               {"enabled": False, "idle_timeout_ms": 5, "provider": "openclaw"})
    model = admin.model(tenant)
    created = check_crud(admin, "agents",
                         {"tenant_id": tenant["id"], "name": "Ada", "type": "openclaw",
                          "role_description": "writes", "primary_model_id": model["id"],
                          "creator": "ops"},
                         {"name": "Ada Two", "fallback_model_id": model["id"], "primary_model_id": None})
    assert created["last_seen_at"] is None and created["fallback_model_id"] is None
    check_crud(admin, "members",
               {"tenant_id": tenant["id"], "name": "Bob", "email": "bob@example.com",
                "feishu_user_id": "u1", "feishu_open_id": None},
               {"email": None, "feishu_open_id": "ou_1"})
    a, b, m = admin.agent(tenant), admin.agent(tenant), admin.member(tenant)
    rel = check_crud(admin, "agent-member-relationships", {"agent_id": a["id"], "member_id": m["id"]},
                     {"relation": "owner", "description": "runs it"})
    assert rel["relation"] == "collaborator" and rel["description"] == ""
    assert "updated_at" not in rel
    check_crud(admin, "agent-agent-relationships",
               {"agent_id": a["id"], "target_agent_id": b["id"], "relation": "peer"},
               {"description": "asks for reviews"})
    check_crud(admin, "channel-configs",
               {"tenant_id": tenant["id"], "agent_id": a["id"], "channel_type": "feishu",
                "app_id": "cli_1", "app_secret": "s3cret", "base_url": "https://open.feishu.cn"},
               {"app_id": "cli_2", "channel_type": "lark"})
    default = admin.create("channel-configs", {"tenant_id": tenant["id"], "channel_type": "lark",
                                               "app_id": "cli_d", "app_secret": "x",
                                               "base_url": "https://open.larksuite.com"})
    assert default["agent_id"] is None
    assert_still_up(stack, svc)


def test_bad_input_is_400_naming_the_problem(stack):
    svc = stack.start("ingress")
    admin = Admin(stack)
    tenant = admin.tenant()
    agent = admin.agent(tenant)
    t = tenant["id"]
    agent_body = {"tenant_id": t, "name": "Zed", "type": "native"}
    cases = [
        ("POST", "agents", {**agent_body, "colour": "red"}, ["unknown field", "colour"]),
        ("PATCH", f"agents/{agent['id']}", {"nickname": "z"}, ["unknown field", "nickname"]),
        ("POST", "agents", {**agent_body, "name": 5}, ['"name" must be a string']),
        ("POST", "agents", {**agent_body, "name": None}, ['"name" must not be null']),
        ("POST", "llm-models", {"tenant_id": t, "name": "m", "provider": "openai", "base_url": "http://x",
                                "model": "m", "enabled": "yes"}, ['"enabled" must be true or false']),
        ("POST", "llm-models", {"tenant_id": t, "name": "m", "provider": "openai", "base_url": "http://x",
                                "model": "m", "connect_timeout_ms": "5"}, ['"connect_timeout_ms" must be an integer']),
        ("POST", "llm-models", {"tenant_id": t, "name": "m", "provider": "openai", "base_url": "http://x",
                                "model": "m", "max_concurrency": 1.5}, ['"max_concurrency" must be an integer']),
        ("POST", "llm-models", {"tenant_id": t, "name": "m", "provider": "openai", "base_url": "http://x",
                                "model": "m", "idle_timeout_ms": 0}, ['"idle_timeout_ms" must be an integer from 1']),
        ("POST", "llm-models", {"tenant_id": t, "name": "m", "provider": "anthropic", "base_url": "http://x",
                                "model": "m"}, ['"provider" must be one of openai|openclaw']),
        ("POST", "llm-models", {"tenant_id": t, "name": "m", "provider": "openai", "base_url": "ftp://x",
                                "model": "m"}, ['"base_url" must be an http:// or https:// URL']),
        ("POST", "agents", {**agent_body, "type": "robot"}, ['"type" must be one of openclaw|native']),
        ("POST", "agents", {**agent_body, "name": "x" * 101}, ['"name" must be a string of 1 to 100']),
        ("POST", "agents", {**agent_body, "name": "é" * 100 + "x"}, ['"name" must be a string of 1 to 100']),
        ("POST", "agents", {**agent_body, "name": "   "}, ['"name" must not be blank']),
        ("POST", "agents", {**agent_body, "tenant_id": "not-a-uuid"}, ['"tenant_id" must be a UUID']),
        ("POST", "agents", {**agent_body, "primary_model_id": "1234"}, ['"primary_model_id" must be a UUID']),
        ("POST", "agents", {"tenant_id": t, "type": "native"}, ['"name" is required']),
        ("POST", "agents", {"name": "x", "type": "native"}, ['"tenant_id" is required']),
        ("POST", "channel-configs", {"tenant_id": t, "channel_type": "feishu", "app_id": "a",
                                     "base_url": "https://x"}, ['"app_secret" is required']),
        ("POST", "agents", {**agent_body, "id": str(uuid.uuid4())}, ['"id" is read-only']),
        ("POST", "agents", {**agent_body, "last_seen_at": "2024-01-01T00:00:00Z"}, ['"last_seen_at" is read-only']),
        ("PATCH", f"agents/{agent['id']}", {"created_at": "2024-01-01T00:00:00Z"}, ['"created_at" is read-only']),
        ("PATCH", f"agents/{agent['id']}", {"tenant_id": t}, ['"tenant_id" is set at creation']),
        ("PATCH", f"agents/{agent['id']}", {"type": "openclaw"}, ['"type" is set at creation']),
        ("PATCH", f"agents/{agent['id']}", {}, ["no field to change"]),
        ("PATCH", f"agents/{agent['id']}", {"name": None}, ['"name" must not be null']),
        ("POST", "agents", [agent_body], ["must be a JSON object"]),
        ("POST", "agents", b'{"name": ', ["not valid JSON"]),
        ("POST", "agents", b'{"name": "a", "name": "b"}', ["not valid JSON"]),
        ("POST", "agents", b'', ["body is empty"]),
        ("POST", "tenants", {"name": "bad\u0000nul"}, ["not valid JSON"]),
        ("GET", "agents/not-a-uuid", None, ["must be a UUID"]),
        ("PATCH", "agents/123", {"name": "x"}, ["must be a UUID"]),
        ("DELETE", "tenants/" + "g" * 36, None, ["must be a UUID"]),
        ("GET", "agents?limit=0", None, ['"limit" must be an integer from 1 to 1000']),
        ("GET", "agents?limit=1001", None, ['"limit"']),
        ("GET", "agents?limit=abc", None, ['"limit"']),
        ("GET", "agents?limit=-5", None, ['"limit"']),
        ("GET", "agents?colour=red", None, ['unknown query parameter "colour"']),
        ("GET", "tenants?tenant_id=" + t, None, ['unknown query parameter "tenant_id"']),
        ("GET", "agents?tenant_id=nope", None, ['"tenant_id" must be a UUID']),
        ("GET", "agents?type=robot", None, ['"type" must be one of']),
    ]
    for method, path, body, words in cases:
        status, answer = admin.call(method, path, body)
        bad_request(status, answer, *words)
    # NUL inside a JSON string never reaches PostgreSQL (which cannot store it).
    status, answer = admin.call("POST", "tenants", b'{"name": "bad\\u0000nul"}')
    bad_request(status, answer)
    # Nothing half-written: the agent is unchanged and no other agent exists.
    assert admin.get("agents", agent["id"])[1] == agent
    assert [a["id"] for a in admin.list("agents")] == [agent["id"]]
    assert_still_up(stack, svc)


def test_agent_names_are_unique_per_tenant_whatever_the_case(stack):
    svc = stack.start("ingress")
    admin = Admin(stack)
    t1, t2 = admin.tenant(), admin.tenant()
    alice = admin.agent(t1, "Alice")
    status, answer = admin.call("POST", "agents", {"tenant_id": t1["id"], "name": "alice", "type": "native"})
    assert status == 409 and answer["error"]["code"] == "conflict", answer
    assert "agent with this name exists" in answer["error"]["message"] and '"alice"' in answer["error"]["message"]
    admin.agent(t2, "ALICE")  # another tenant: allowed
    bob = admin.agent(t1, "Bob")
    status, answer = admin.patch("agents", bob["id"], {"name": "aLiCe"})
    assert status == 409, answer
    assert admin.get("agents", bob["id"])[1]["name"] == "Bob"
    status, answer = admin.patch("agents", alice["id"], {"name": "ALICE"})  # its own name, new case
    assert status == 200 and answer["name"] == "ALICE"
    # Other unique names.
    status, answer = admin.call("POST", "tenants", {"name": t1["name"]})
    assert status == 409 and "tenant with this name" in answer["error"]["message"]
    m = admin.model(t1, name="main")
    status, _ = admin.call("POST", "llm-models", {**{k: m[k] for k in ("tenant_id", "provider", "base_url", "model")},
                                                  "name": "main"})
    assert status == 409
    a, b = admin.agent(t1), admin.agent(t1)
    admin.create("agent-agent-relationships", {"agent_id": a["id"], "target_agent_id": b["id"]})
    status, answer = admin.call("POST", "agent-agent-relationships", {"agent_id": a["id"], "target_agent_id": b["id"]})
    assert status == 409, answer
    admin.create("agent-agent-relationships", {"agent_id": b["id"], "target_agent_id": a["id"]})
    cc = {"tenant_id": t1["id"], "channel_type": "feishu", "app_id": "x", "app_secret": "y", "base_url": "https://f"}
    admin.create("channel-configs", cc)
    status, answer = admin.call("POST", "channel-configs", cc)
    assert status == 409 and "channel_type" in answer["error"]["message"], answer
    admin.create("channel-configs", {**cc, "agent_id": a["id"]})
    assert_still_up(stack, svc)


def test_references_must_exist_and_stay_in_one_tenant(stack):
    svc = stack.start("ingress")
    admin = Admin(stack)
    t1, t2 = admin.tenant(), admin.tenant()
    m1, m2 = admin.model(t1), admin.model(t2)
    a1, b1, a2 = admin.agent(t1), admin.agent(t1), admin.agent(t2)
    mem1, mem2 = admin.member(t1), admin.member(t2)
    missing = str(uuid.uuid4())
    cases = [
        ("POST", "agents", {"tenant_id": missing, "name": "x", "type": "native"}, "tenant_id does not name an existing tenant"),
        ("POST", "llm-models", {"tenant_id": missing, "name": "x", "provider": "openai", "base_url": "http://x", "model": "m"},
         "tenant_id does not name an existing tenant"),
        ("POST", "members", {"tenant_id": missing, "name": "x"}, "tenant_id does not name an existing tenant"),
        ("POST", "agents", {"tenant_id": t1["id"], "name": "x", "type": "native", "primary_model_id": m2["id"]},
         "primary_model_id does not name an LLM model of the agent's tenant"),
        ("POST", "agents", {"tenant_id": t1["id"], "name": "x", "type": "native", "fallback_model_id": missing},
         "fallback_model_id does not name an LLM model"),
        ("PATCH", f"agents/{a1['id']}", {"primary_model_id": m2["id"]}, "primary_model_id does not name an LLM model"),
        ("PATCH", f"agents/{a1['id']}", {"fallback_model_id": m2["id"]}, "fallback_model_id does not name an LLM model"),
        ("POST", "agent-agent-relationships", {"agent_id": a1["id"], "target_agent_id": a2["id"]},
         "the two agents belong to different tenants"),
        ("POST", "agent-agent-relationships", {"agent_id": a1["id"], "target_agent_id": a1["id"]},
         "cannot have a relationship with itself"),
        ("POST", "agent-agent-relationships", {"agent_id": a1["id"], "target_agent_id": missing},
         "target_agent_id does not name an existing agent"),
        ("POST", "agent-member-relationships", {"agent_id": a1["id"], "member_id": mem2["id"]},
         "the agent and the member belong to different tenants"),
        ("POST", "agent-member-relationships", {"agent_id": missing, "member_id": mem1["id"]},
         "agent_id does not name an existing agent"),
        ("POST", "agent-member-relationships", {"agent_id": a1["id"], "member_id": missing},
         "member_id does not name an existing member"),
        ("POST", "channel-configs", {"tenant_id": t1["id"], "agent_id": a2["id"], "channel_type": "feishu",
                                     "app_id": "x", "app_secret": "y", "base_url": "https://f"},
         "agent_id does not name an agent of this tenant"),
        ("POST", "channel-configs", {"tenant_id": missing, "channel_type": "feishu",
                                     "app_id": "x", "app_secret": "y", "base_url": "https://f"},
         "tenant_id does not name an existing tenant"),
    ]
    for method, path, body, words in cases:
        status, answer = admin.call(method, path, body)
        bad_request(status, answer, words)
    # The same references within one tenant are fine, and nothing above was written.
    good = admin.agent(t1, primary_model_id=m1["id"], fallback_model_id=m1["id"])
    assert admin.patch("agents", a1["id"], {"primary_model_id": m1["id"]})[0] == 200
    admin.create("agent-agent-relationships", {"agent_id": a1["id"], "target_agent_id": b1["id"]})
    admin.create("agent-member-relationships", {"agent_id": a1["id"], "member_id": mem1["id"]})
    assert len(admin.list("agent-agent-relationships")) == 1
    assert len(admin.list("agent-member-relationships")) == 1
    assert len(admin.list("channel-configs")) == 0
    assert {a["id"] for a in admin.list("agents", "tenant_id=" + t1["id"])} == {a1["id"], b1["id"], good["id"]}
    assert admin.get("agents", a2["id"])[1]["primary_model_id"] is None
    assert_still_up(stack, svc)


def test_secrets_are_write_only(stack):
    svc = stack.start("ingress")
    admin = Admin(stack)
    tenant = admin.tenant()
    key, secret = "sk-" + uuid.uuid4().hex, "app-" + uuid.uuid4().hex
    model = admin.model(tenant, api_key=key)
    plain = admin.model(tenant)
    config = admin.create("channel-configs", {"tenant_id": tenant["id"], "channel_type": "feishu", "app_id": "cli",
                                              "app_secret": secret, "base_url": "https://open.feishu.cn"})
    assert model["api_key_set"] is True and "api_key" not in model
    assert plain["api_key_set"] is False
    assert config["app_secret_set"] is True and "app_secret" not in config
    answers = [model, plain, config, admin.get("llm-models", model["id"])[1],
               admin.get("channel-configs", config["id"])[1], admin.list("llm-models"), admin.list("channel-configs"),
               admin.patch("llm-models", model["id"], {"name": "renamed"})[1],
               admin.patch("channel-configs", config["id"], {"app_id": "cli2"})[1]]
    for answer in answers:
        assert key not in str(answer) and secret not in str(answer), answer
    # Stored as given, so the workers can use them.
    assert stack.sql(f"SELECT api_key FROM llm_models WHERE id = '{model['id']}'") == key
    assert stack.sql(f"SELECT app_secret FROM channel_configs WHERE id = '{config['id']}'") == secret
    # A secret can be changed or cleared, and the answer says whether one is set.
    status, answer = admin.patch("llm-models", model["id"], {"api_key": ""})
    assert status == 200 and answer["api_key_set"] is False
    status, answer = admin.patch("llm-models", plain["id"], {"api_key": "sk-new"})
    assert status == 200 and answer["api_key_set"] is True and "sk-new" not in str(answer)
    status, answer = admin.patch("llm-models", plain["id"], {"api_key_set": False})
    bad_request(status, answer, "api_key_set")
    assert key not in svc.logs() and secret not in svc.logs()
    assert_still_up(stack, svc)


def test_patch_changes_only_the_fields_given(stack):
    svc = stack.start("ingress")
    admin = Admin(stack)
    tenant = admin.tenant()
    model = admin.model(tenant)
    agent = admin.agent(tenant, "Ada", "openclaw", role_description="reviews code", creator="ops",
                        primary_model_id=model["id"])
    time.sleep(0.01)
    status, patched = admin.patch("agents", agent["id"], {"name": "Ada Lovelace"})
    assert status == 200
    assert patched["updated_at"] > agent["updated_at"] and patched["created_at"] == agent["created_at"]
    assert {k: v for k, v in patched.items() if k not in ("name", "updated_at")} == \
        {k: v for k, v in agent.items() if k not in ("name", "updated_at")}
    status, patched = admin.patch("agents", agent["id"], {"primary_model_id": None, "role_description": ""})
    assert status == 200 and patched["primary_model_id"] is None and patched["role_description"] == ""
    assert patched["name"] == "Ada Lovelace" and patched["creator"] == "ops"
    status, patched_model = admin.patch("llm-models", model["id"], {"max_concurrency": 3})
    assert status == 200 and patched_model["max_concurrency"] == 3
    assert patched_model["connect_timeout_ms"] == 5000 and patched_model["enabled"] is True
    assert_still_up(stack, svc)


def test_deleting_a_tenant_deletes_what_belongs_to_it(stack):
    svc = stack.start("ingress")
    admin = Admin(stack)
    doomed, kept = admin.tenant(), admin.tenant()
    model = admin.model(doomed)
    a, b = admin.agent(doomed, primary_model_id=model["id"]), admin.agent(doomed)
    member = admin.member(doomed)
    rel_aa = admin.create("agent-agent-relationships", {"agent_id": a["id"], "target_agent_id": b["id"]})
    rel_am = admin.create("agent-member-relationships", {"agent_id": a["id"], "member_id": member["id"]})
    config = admin.create("channel-configs", {"tenant_id": doomed["id"], "agent_id": a["id"], "channel_type": "lark",
                                              "app_id": "x", "app_secret": "y", "base_url": "https://l"})
    survivor = admin.agent(kept)
    assert admin.delete("tenants", doomed["id"])[0] == 204
    for resource, row in (("tenants", doomed), ("llm-models", model), ("agents", a), ("agents", b),
                          ("members", member), ("agent-agent-relationships", rel_aa),
                          ("agent-member-relationships", rel_am), ("channel-configs", config)):
        assert admin.get(resource, row["id"])[0] == 404, resource
    assert admin.list("agents", "tenant_id=" + doomed["id"]) == []
    assert [x["id"] for x in admin.list("agents")] == [survivor["id"]]
    # Deleting an agent takes its relationships, not the other agent.
    c, d = admin.agent(kept), admin.agent(kept)
    rel = admin.create("agent-agent-relationships", {"agent_id": c["id"], "target_agent_id": d["id"]})
    assert admin.delete("agents", d["id"])[0] == 204
    assert admin.get("agent-agent-relationships", rel["id"])[0] == 404
    assert admin.get("agents", c["id"])[0] == 200
    assert_still_up(stack, svc)


def test_lists_filter_and_limit_newest_first(stack):
    svc = stack.start("ingress")
    admin = Admin(stack)
    t1, t2 = admin.tenant(), admin.tenant()
    made = []
    for i in range(5):
        made.append(admin.agent(t1, f"n{i}", "native" if i % 2 else "openclaw"))
    other = admin.agent(t2, "elsewhere")
    everything = admin.list("agents")
    assert [a["id"] for a in everything] == [other["id"]] + [a["id"] for a in reversed(made)]
    in_t1 = admin.list("agents", "tenant_id=" + t1["id"])
    assert [a["id"] for a in in_t1] == [a["id"] for a in reversed(made)]
    natives = admin.list("agents", f"tenant_id={t1['id']}&type=native")
    assert [a["name"] for a in natives] == ["n3", "n1"]
    assert [a["name"] for a in admin.list("agents", "type=openclaw&limit=2")] == ["n4", "n2"]
    assert len(admin.list("agents", "limit=1")) == 1
    assert len(admin.list("agents", "limit=1000")) == 6
    assert admin.list("agents", "tenant_id=" + str(uuid.uuid4())) == []
    assert len(admin.list("tenants")) == 2
    a, b = made[0], made[1]
    rel = admin.create("agent-agent-relationships", {"agent_id": a["id"], "target_agent_id": b["id"]})
    assert admin.list("agent-agent-relationships", "agent_id=" + a["id"]) == [rel]
    assert admin.list("agent-agent-relationships", "target_agent_id=" + a["id"]) == []
    assert admin.list("agent-agent-relationships", f"agent_id={a['id']}&target_agent_id={b['id']}") == [rel]
    cfg = admin.create("channel-configs", {"tenant_id": t1["id"], "agent_id": a["id"], "channel_type": "lark",
                                           "app_id": "x", "app_secret": "y", "base_url": "https://l"})
    assert admin.list("channel-configs", "agent_id=" + a["id"]) == [cfg]
    assert admin.list("channel-configs", "tenant_id=" + t2["id"]) == []
    assert_still_up(stack, svc)


def test_concurrent_creates_of_one_name_make_one_agent(stack):
    svc = stack.start("ingress")
    admin = Admin(stack)
    tenant = admin.tenant()
    statuses = []

    def create(i):
        body = {"tenant_id": tenant["id"], "name": "Same" if i % 2 else "SAME", "type": "native"}
        statuses.append(admin.call("POST", "agents", body)[0])

    threads = [threading.Thread(target=create, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(statuses) == [201] + [409] * 15, statuses
    assert len(admin.list("agents")) == 1
    assert_still_up(stack, svc)


def test_postgres_unavailable_is_503_and_ingress_stays_up(stack):
    down = f"postgresql://agentbus:x@127.0.0.1:{free_port()}/agentbus"
    svc = stack.start("ingress", wait=False, DATABASE_URL=down)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if svc.ops("/livez")[0] == 200:
                break
        except OSError:
            time.sleep(0.2)
    admin = Admin(stack)
    for method, path, body in (("GET", "agents", None), ("POST", "tenants", {"name": "x"}),
                               ("GET", f"tenants/{uuid.uuid4()}", None)):
        status, answer = admin.call(method, path, body)
        assert status == 503 and answer["error"]["code"] == "unavailable", (path, status, answer)
    assert svc.proc.poll() is None and svc.ops("/livez")[0] == 200
