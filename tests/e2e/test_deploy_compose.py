"""docker-compose.yml, the Dockerfile and the demo config (deploy/compose/), checked offline:
no Docker engine runs here or in CI, so the images are never built nor started. What is
checked instead, with real tools (scripts/test-tools/compose.sh installs them in .tools/):

- Docker Compose v2 (`docker-compose config`) loads and interpolates the project and checks it
  against the compose-spec schema, and refuses broken copies of it;
- the compose-spec JSON schema, separately, with jsonschema;
- hadolint lints the Dockerfile;
- the services' health checks, start order, commands and ports against the Makefile, the
  option table of the real binaries (--config-table) and the Dockerfile;
- the demo config with the real binaries: ingress started with exactly the environment compose
  gives it (the config file mounted from deploy/compose/) applies the migrations and the demo
  seed on real PostgreSQL, accepts the demo webhook, and the dispatcher (migrate=false) routes
  it to bob's inbox.

A missing validator fails these tests: it does not skip them.
"""
import fnmatch
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import pytest

from conftest import ADMIN_TOKEN, BIN, ROOT, http, wait_until

TOOLS = os.path.join(ROOT, ".tools")
COMPOSE = os.path.join(TOOLS, "bin", "docker-compose")
HADOLINT = os.path.join(TOOLS, "bin", "hadolint")
SCHEMA = os.path.join(TOOLS, "compose", "compose-spec.json")
COMPOSE_FILE = os.path.join(ROOT, "docker-compose.yml")
DOCKERFILE = os.path.join(ROOT, "Dockerfile")
INSTALL = "scripts/test-tools/compose.sh"
WEBHOOK_SECRET = "demoHookSecret42"
# What `docker compose up` needs from the environment (or .env).
COMPOSE_ENV = {"AGENTBUS_ADMIN_TOKEN": ADMIN_TOKEN, "AGENTBUS_WEBHOOK_SECRET": WEBHOOK_SECRET}
AGENTBUS_SERVICES = ("ingress", "dispatcher", "llm-worker", "notifier")
OPS_OPTION = {"ingress": "ingress.ops_port", "dispatcher": "dispatcher.ops_port",
              "llm-worker": "llm_worker.ops_port", "notifier": "notifier.ops_port"}


def tool(path):
    if not os.access(path, os.X_OK):
        pytest.fail(f"{path} is missing: run {INSTALL} (or scripts/install-deps.sh --test)")
    return path


def compose(args, project_dir=ROOT, env=None, file=None):
    """Runs the real Docker Compose CLI on the project; no engine is needed for `config`."""
    full_env = {k: v for k, v in os.environ.items()
                if not k.startswith(("AGENTBUS_", "COMPOSE_", "POSTGRES_"))}
    full_env.update(COMPOSE_ENV if env is None else env)
    full_env["DOCKER_CONFIG"] = os.path.join(TOOLS, "compose", "docker")
    cmd = [tool(COMPOSE), "-f", file or os.path.join(project_dir, "docker-compose.yml"),
           "--project-directory", project_dir,
           "--env-file", os.devnull] + list(args)  # not a developer's .env: only what is given
    return subprocess.run(cmd, env=full_env, capture_output=True, text=True, timeout=60)


@pytest.fixture(scope="module")
def project():
    """The project as Compose resolves it (anchors merged, variables interpolated)."""
    out = compose(["config", "--format", "json"])
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def schema_modules():
    sys.path.insert(0, os.path.join(TOOLS, "compose", "python"))
    try:
        import jsonschema
        import yaml
    except ImportError as e:
        pytest.fail(f"{e}: run {INSTALL}")
    finally:
        sys.path.pop(0)
    return jsonschema, yaml


def schema_errors(text):
    jsonschema, yaml = schema_modules()
    if not os.path.isfile(SCHEMA):
        pytest.fail(f"{SCHEMA} is missing: run {INSTALL}")
    with open(SCHEMA) as f:
        schema = json.load(f)
    validator = jsonschema.Draft7Validator(schema)  # the schema's own "$schema"
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}"
            for e in validator.iter_errors(yaml.safe_load(text))]


def config_table():
    """{option: default} from the real binary's option table (the code's defaults)."""
    out = subprocess.run([os.path.join(BIN, "agentbus-ingress"), "--config-table"],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    table = {}
    for line in out.stdout.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) >= 4 and cells[0].startswith("`"):
            table[cells[0].strip("`")] = cells[3]
    return table


def demo_config():
    with open(os.path.join(ROOT, "deploy", "compose", "agentbus.json")) as f:
        return json.load(f)


def makefile_binaries():
    """The binaries `make all` builds, as make itself evaluates the Makefile."""
    out = subprocess.run(["make", "-pnq", "BUILD=B", "all"], cwd=ROOT, capture_output=True,
                         text=True, timeout=60)
    names = set()
    for line in out.stdout.splitlines():
        m = re.match(r"^(SERVICE_BINS|TOOL_BINS) :?= (.*)$", line)
        if m:
            names.update(os.path.basename(p) for p in m.group(2).split())
    assert len(names) >= 8, out.stdout[-2000:] + out.stderr
    return names


def dockerfile_stages():
    """[(FROM line, [instructions])] with continuation lines joined, comments dropped."""
    with open(DOCKERFILE) as f:
        text = re.sub(r"\\\n", " ", f.read())
    stages = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.upper().startswith("FROM "):
            stages.append((line, []))
        else:
            stages[-1][1].append(line)
    return stages


def apt_packages(instructions):
    packages = set()
    for ins in instructions:
        m = re.search(r"apt-get install ([^&;]*)", ins)
        if m:
            packages.update(w for w in m.group(1).split() if not w.startswith("-"))
    return packages


# --- the validators ----------------------------------------------------------------------


def test_docker_compose_accepts_the_project():
    out = compose(["config", "--quiet"])
    assert out.returncode == 0, out.stderr
    version = subprocess.run([tool(COMPOSE), "version", "--short"], capture_output=True, text=True)
    assert version.stdout.strip().startswith("2."), version.stdout


def test_the_compose_file_matches_the_compose_spec_schema():
    with open(COMPOSE_FILE) as f:
        assert schema_errors(f.read()) == []


# name: (text, its broken replacement, what Compose says, whether the schema alone sees it)
BROKEN = {
    "a misspelt start condition": ("condition: service_healthy", "condition: service_heathy",
                                   "service_healthy", True),
    "a dependency on a service that does not exist": ("      topics:\n        condition",
                                                      "      topicz:\n        condition",
                                                      "undefined service", False),
    "a health check that is not a list or string": (
        'test: ["CMD-SHELL", "pg_isready -U agentbus -d agentbus"]', "test: {pg_isready: 1}",
        "healthcheck", True),
    "a port that is not a port": ('"9101:9101"', '"9101:port"', "containerPort", False),
}


@pytest.mark.parametrize("name", sorted(BROKEN))
def test_a_broken_copy_of_the_compose_file_is_refused(name, tmp_path):
    old, new, says, schema_sees_it = BROKEN[name]
    with open(COMPOSE_FILE) as f:
        text = f.read()
    assert old in text
    broken = text.replace(old, new, 1)
    shutil.copytree(os.path.join(ROOT, "deploy", "compose"), tmp_path / "deploy" / "compose")
    (tmp_path / "docker-compose.yml").write_text(broken)
    out = compose(["config", "--quiet"], project_dir=str(tmp_path))
    assert out.returncode != 0, f"docker-compose accepted {name}"
    assert says in out.stderr, out.stderr
    if schema_sees_it:
        assert schema_errors(broken), f"the schema accepted {name}"


def test_compose_refuses_to_start_without_the_admin_token():
    out = compose(["config", "--quiet"], env={"AGENTBUS_WEBHOOK_SECRET": WEBHOOK_SECRET})
    assert out.returncode != 0
    assert "AGENTBUS_ADMIN_TOKEN" in out.stderr


def test_hadolint_passes_the_dockerfile_and_fails_a_bad_one(tmp_path):
    out = subprocess.run([tool(HADOLINT), DOCKERFILE], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM debian:latest\nRUN cd /src && make\n")
    out = subprocess.run([HADOLINT, str(bad)], capture_output=True, text=True, timeout=60)
    assert out.returncode != 0 and "DL3007" in out.stdout, out.stdout  # "latest" refused


# --- health checks and start order -------------------------------------------------------


def test_every_long_running_service_has_a_health_check(project):
    for name, svc in project["services"].items():
        if svc.get("restart") == "no":
            assert name in ("topics", "migrate"), f"{name} is a one-shot"
            continue  # a one-shot: completes, is never healthy
        check = svc.get("healthcheck") or {}
        assert not check.get("disable") and check.get("test"), f"{name} has no health check"
    for name in AGENTBUS_SERVICES:
        test = project["services"][name]["healthcheck"]["test"]
        assert test[:2] == ["CMD", "curl"] and "-f" in "".join(test[2:-1]), test
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+/readyz", test[-1]), test


def test_the_start_order_is_gated_on_health_and_completion(project):
    want = {
        "topics": {"kafka": "service_healthy"},
        "migrate": {"postgres": "service_healthy"},
    }
    for name in AGENTBUS_SERVICES:
        want[name] = {"migrate": "service_completed_successfully",
                      "topics": "service_completed_successfully"}
    services = project["services"]
    for name, deps in want.items():
        got = {dep: d["condition"] for dep, d in services[name].get("depends_on", {}).items()}
        assert got == deps, name
    for name, svc in services.items():
        for dep, d in svc.get("depends_on", {}).items():
            if d["condition"] == "service_healthy":
                assert services[dep].get("healthcheck", {}).get("test"), f"{name} waits on {dep}"
            if d["condition"] == "service_completed_successfully":
                assert services[dep].get("restart") == "no", f"{dep} must be a one-shot"


def test_the_migrations_are_a_step_of_their_own(project):
    """`agentbus-ingress --migrate` applies the migrations (under the advisory lock) and exits;
    the services start after it and do not migrate themselves."""
    services = project["services"]
    assert services["migrate"]["command"] == ["agentbus-ingress", "--migrate"]
    assert services["migrate"]["restart"] == "no"
    for name in AGENTBUS_SERVICES:
        assert services[name]["environment"]["AGENTBUS_DATABASE_MIGRATE"] == "false", name


# --- commands, ports, image --------------------------------------------------------------


def test_the_commands_name_binaries_the_makefile_builds_and_the_image_holds(project):
    built = makefile_binaries()
    froms = [f for f, _ in dockerfile_stages()]
    copies = [i for _, ins in dockerfile_stages()[1:] for i in ins if i.startswith("COPY --from=build")]
    assert len(froms) == 2 and len(copies) == 1, (froms, copies)
    globs = [os.path.basename(p) for p in copies[0].split()[2:-1]]
    in_image = {b for b in built if any(fnmatch.fnmatch(b, g) for g in globs)}
    assert in_image == built, f"the image misses {built - in_image}"
    assert not fnmatch.fnmatch("unit-tests", globs[0])
    for name, svc in project["services"].items():
        if svc.get("image") != "agentbus:local":
            continue
        assert svc["command"][0] in built, (name, svc["command"])
    for name in AGENTBUS_SERVICES:
        assert project["services"][name]["command"] == [f"agentbus-{name}"]
    assert project["services"]["topics"]["command"] == ["agentbus-topics"]


def test_the_ports_are_the_defaults_of_the_code(project):
    table = config_table()
    config = demo_config()
    services = project["services"]
    published = {name: {int(p["target"]): int(p["published"]) for p in svc.get("ports", [])}
                 for name, svc in services.items()}
    for name, option in OPS_OPTION.items():
        port = int(table[option])
        section, key = option.split(".")
        assert config[section][key] == port, option
        assert published[name].get(port) == port, (name, published[name])
        assert services[name]["healthcheck"]["test"][-1] == f"http://127.0.0.1:{port}/readyz"
    for option in ("ingress.api_port", "ingress.webhook_port"):
        port = int(table[option])
        assert config["ingress"][option.split(".")[1]] == port
        assert published["ingress"].get(port) == port, option
    assert table["listen.host"] in ("0.0.0.0", config["listen"]["host"])
    assert config["listen"]["host"] == "0.0.0.0"  # reachable through the published ports
    # Nothing in compose overrides the ports behind the health checks' backs.
    for svc in services.values():
        assert not any(k.endswith("_PORT") for k in (svc.get("environment") or {})), svc


def test_the_runtime_image_is_slim_and_runs_as_non_root(project):
    stages = dockerfile_stages()
    assert re.fullmatch(r"FROM debian:bookworm AS build", stages[0][0], re.I), stages[0][0]
    final, instructions = stages[-1]
    assert final == "FROM debian:bookworm-slim", final
    users = [i.split()[1] for i in instructions if i.startswith("USER ")]
    assert users, "the runtime stage has no USER"
    uid = users[-1].split(":")[0]
    assert uid.isdigit() and int(uid) != 0, users[-1]  # numeric: runAsNonRoot can check it
    assert any(f"--uid {uid}" in i for i in instructions), "the user is not created"
    for name, svc in project["services"].items():
        if svc.get("image") == "agentbus:local":
            assert svc.get("user") in (None, users[-1]), name
    env = [i for i in instructions if i.startswith("ENV ")]
    assert "ENV AGENTBUS_DATABASE_MIGRATIONS_DIR=/usr/share/agentbus/migrations" in env
    assert "COPY deploy/migrations /usr/share/agentbus/migrations" in instructions
    assert "build-essential" not in apt_packages(instructions)


def test_the_runtime_image_installs_every_library_the_binaries_link():
    """Each shared library a binary needs comes from a package the runtime stage installs
    (libc6 is in the base image), and curl is there for the health checks."""
    runtime = apt_packages(dockerfile_stages()[-1][1])
    assert "curl" in runtime
    # The image holds what a plain `make all` builds (build/release), not the sanitized
    # binaries the rest of the suite may run (those also need libasan and libubsan).
    release = os.path.join(ROOT, "build", "release", "bin")
    assert os.path.isdir(release), "build/release is missing: run `make all` first"
    needed = set()
    for name in makefile_binaries():
        out = subprocess.run(["readelf", "-d", os.path.join(release, name)], capture_output=True,
                             text=True, check=True)
        needed.update(re.findall(r"\(NEEDED\)\s+Shared library: \[(.+?)\]", out.stdout))
    assert "librdkafka.so.1" in needed
    for lib in sorted(needed):
        out = subprocess.run(["dpkg", "-S", f"*/{lib}"], capture_output=True, text=True)
        owners = {line.split(":")[0] for line in out.stdout.splitlines() if ":" in line}
        owners = {p for p in owners if not p.endswith("-dev")}
        assert owners, f"no Debian package holds {lib}"
        assert owners & (runtime | {"libc6"}), f"{lib} comes from {owners}, not installed"


# --- the demo, run with the real binaries ------------------------------------------------


def container_env(project, name, stack):
    """The environment compose gives service `name`, made runnable here: the config file is
    the one compose mounts, and the engines, ports and migrations are this test's."""
    svc = project["services"][name]
    env = dict(svc["environment"])
    mounts = {c["target"]: project["configs"][c["source"]]["file"] for c in svc["configs"]}
    env["AGENTBUS_CONFIG"] = mounts[env["AGENTBUS_CONFIG"]]
    del env["DATABASE_URL"], env["KAFKA_BOOTSTRAP"]  # compose's hosts: the stack's engines here
    return env


def test_the_demo_config_runs_with_the_real_binaries(project, stack):
    assert os.path.isfile(project["configs"]["agentbus"]["file"])
    if stack.broker.real:
        # The topics step as compose runs it (the mock cluster of agentbus-devbroker makes its
        # own topics and has no controller to create them: `make test-kafka` runs this part).
        topics = subprocess.run([os.path.join(BIN, "agentbus-topics"), "--partitions", "2"],
                                env={**stack.env("topics"), **container_env(project, "topics", stack)},
                                capture_output=True, text=True, timeout=120)
        assert topics.returncode == 0, topics.stderr

    # The migrate step as compose runs it: ingress' binary with --migrate, then exit 0.
    step = subprocess.run([os.path.join(BIN, "agentbus-ingress"), "--migrate"],
                          env={**stack.env("ingress"), **container_env(project, "migrate", stack)},
                          capture_output=True, text=True, timeout=180)
    assert step.returncode == 0, step.stdout[-3000:] + step.stderr
    assert "migration 0001_event_log.sql applied" in step.stdout, step.stdout[-3000:]

    env = container_env(project, "ingress", stack)
    assert env["AGENTBUS_ADMIN_TOKEN"] == ADMIN_TOKEN
    ingress = stack.start("ingress", **env)  # waits for /readyz: schema there, seeded, Kafka up
    logs = ingress.logs()
    assert "seed applied" in logs and "migration 0001_event_log.sql applied" not in logs, logs[-3000:]

    admin = {"Authorization": "Bearer " + ADMIN_TOKEN}
    status, body, _ = http("GET", stack.api + "/api/admin/tenants", None, admin)
    assert status == 200, body
    tenant = [t for t in body["items"] if t["name"] == "demo"]
    assert tenant, body
    status, body, _ = http("GET", f"{stack.api}/api/admin/agents?tenant_id={tenant[0]['id']}", None, admin)
    assert status == 200 and {a["name"] for a in body["items"]} == {"alice", "bob"}, body

    env = container_env(project, "dispatcher", stack)
    assert env["AGENTBUS_DATABASE_MIGRATE"] == "false"
    stack.start("dispatcher", **env)

    hook = f"http://127.0.0.1:{stack.webhook_port}/webhook/alerts"
    status, body, _ = http("POST", hook, {"alert": {"name": "DiskFull", "message": "/ is 97%"}},
                           {"Content-Type": "application/json"})
    assert status == 401, body  # the demo hook takes its secret from the environment
    status, body, _ = http("POST", hook, {"alert": {"name": "DiskFull", "message": "/ is 97%"}},
                           {"Content-Type": "application/json", "X-Webhook-Secret": WEBHOOK_SECRET})
    assert status == 202, body

    # docs/deployment.md's way to bob's key: agentbusctl, with ingress' environment.
    ctl_env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTBUS_")}
    ctl_env.update(AGENTBUS_ADMIN_TOKEN=project["services"]["ingress"]["environment"]["AGENTBUS_ADMIN_TOKEN"],
                   AGENTBUS_URL=stack.api)  # in the container: the default, 127.0.0.1:8080
    out = subprocess.run([os.path.join(BIN, "agentbusctl"), "-q", "api-key", "bob", "--tenant", "demo"],
                         env=ctl_env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    key = out.stdout.strip()

    def inbox():
        status, body, _ = http("GET", f"{stack.api}/api/gateway/poll?wait=2", None, {"X-Api-Key": key})
        assert status == 200, body
        return [m for m in body["messages"] if "alert DiskFull: / is 97%" in json.dumps(m)]

    assert wait_until(inbox, 60, 0.2, "the alert in bob's inbox")


def test_a_typo_in_the_demo_config_stops_ingress_with_exit_code_2(project, stack, tmp_path):
    """The other side of the test above: the real parser is strict, so a config it accepts
    was really read."""
    config = demo_config()
    config["ingress"]["ops_prot"] = 9100
    path = tmp_path / "agentbus.json"
    path.write_text(json.dumps(config))
    env = container_env(project, "ingress", stack)
    env["AGENTBUS_CONFIG"] = str(path)
    svc = stack.start("ingress", wait=False, **env)
    assert svc.proc.wait(timeout=30) == 2
    assert 'unknown field "ingress.ops_prot"' in svc.logs()
    # The migrate step reads the same configuration first: it refuses it too, untouched.
    step = subprocess.run([os.path.join(BIN, "agentbus-ingress"), "--migrate"],
                          env={**stack.env("ingress"), **env}, capture_output=True, text=True,
                          timeout=60)
    assert step.returncode == 2 and 'unknown field "ingress.ops_prot"' in step.stderr + step.stdout
    assert stack.sql("SELECT to_regclass('public.event_log') IS NULL") == "t"


def test_the_migrate_step_waits_for_the_database_and_stops_on_sigterm(project, stack):
    """While PostgreSQL does not answer, `--migrate` retries (as a service at start does);
    a stop (compose down, a Job deleted) ends it at once rather than after its deadline."""
    env = {**stack.env("ingress"), **container_env(project, "migrate", stack),
           "DATABASE_URL": "postgresql://agentbus:x@127.0.0.1:1/agentbus"}
    proc = subprocess.Popen([os.path.join(BIN, "agentbus-ingress"), "--migrate"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        time.sleep(2)
        assert proc.poll() is None, proc.stdout.read()  # still waiting for the database
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == -signal.SIGTERM
        assert "database not ready" in proc.stdout.read()
    finally:
        if proc.poll() is None:
            proc.kill()
