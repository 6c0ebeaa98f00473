"""deploy/k8s and deploy/grafana, checked offline: every overlay is rendered by the real
kustomize, every object is validated against the Kubernetes OpenAPI schemas
(kubernetes-validate, strict) or, for KEDA and Prometheus-operator objects, against the
openAPIV3Schema of their real CRDs; then the invariants that tie the manifests to the code
are checked against the C sources themselves (partition counts, consumer groups, ports,
shutdown timeouts, metric names). No cluster is involved.

The tools come from scripts/test-tools/k8s.sh (run by scripts/install-deps.sh --test); a
missing tool fails these tests, it never skips them.
"""

import copy
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
DASHBOARD = ROOT / "deploy" / "grafana" / "agentbus-dashboard.json"
TOOLS = ROOT / ".tools"
KUSTOMIZE = TOOLS / "bin" / "kustomize"
PYTHON_TOOLS = TOOLS / "k8s" / "python"
OVERLAYS = ["dev", "production"]
KUBERNETES_VERSION = "1.34.0"
SERVICES = ["ingress", "dispatcher", "llm-worker", "notifier"]
CONSUMERS = ["dispatcher", "llm-worker", "notifier"]
INSTALL_HINT = "run scripts/test-tools/k8s.sh (or scripts/install-deps.sh --test)"


# --- the tools --------------------------------------------------------------------------


def tool_versions():
    env = TOOLS / "k8s" / "versions.env"
    if not env.exists():
        pytest.fail(f"{env} is missing: {INSTALL_HINT}")
    return dict(line.split("=", 1) for line in env.read_text().split() if "=" in line)


@pytest.fixture(scope="session")
def kv():
    """kubernetes_validate (and the yaml and jsonschema it brings) from .tools/python."""
    if not (PYTHON_TOOLS / "kubernetes_validate").is_dir():
        pytest.fail(f"kubernetes-validate is not in {PYTHON_TOOLS}: {INSTALL_HINT}")
    sys.path.insert(0, str(PYTHON_TOOLS))
    import kubernetes_validate

    return kubernetes_validate


@pytest.fixture(scope="session")
def yaml(kv):
    import yaml as pyyaml

    return pyyaml


@pytest.fixture(scope="session")
def crd_schemas(yaml):
    """{(apiVersion, kind): openAPIV3Schema} from the CRD files k8s.sh fetched."""
    versions = tool_versions()
    files = [
        TOOLS / "k8s" / "crds" / f"keda-{versions['KEDA_VERSION']}" / "keda.sh_scaledobjects.yaml",
        TOOLS / "k8s" / "crds" / f"keda-{versions['KEDA_VERSION']}" / "keda.sh_triggerauthentications.yaml",
        TOOLS / "k8s" / "crds" / f"prometheus-operator-{versions['PROMETHEUS_OPERATOR_VERSION']}"
        / "monitoring.coreos.com_servicemonitors.yaml",
    ]
    schemas = {}
    for f in files:
        if not f.exists():
            pytest.fail(f"CRD {f} is missing: {INSTALL_HINT}")
        crd = yaml.safe_load(f.read_text())
        group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
        for v in crd["spec"]["versions"]:
            if v.get("served", True):
                schemas[(f"{group}/{v['name']}", kind)] = v["schema"]["openAPIV3Schema"]
    return schemas


def strict_schema(schema):
    """The API server prunes or (kubectl's default strict field validation) rejects fields a
    structural schema does not declare; jsonschema would let them through. Close every
    object that lists its properties and does not preserve unknown fields."""
    s = copy.deepcopy(schema)

    def close(node):
        if isinstance(node, dict):
            if (node.get("type") == "object" and "properties" in node
                    and "additionalProperties" not in node
                    and not node.get("x-kubernetes-preserve-unknown-fields")):
                node["additionalProperties"] = False
            for v in node.values():
                close(v)
        elif isinstance(node, list):
            for v in node:
                close(v)

    close(s)
    # metadata is checked by the API server's ObjectMeta, not the CRD: leave it open.
    s.get("properties", {}).get("metadata", {}).pop("additionalProperties", None)
    return s


def validate_object(kv, crd_schemas, obj):
    """Raises on an invalid object; returns what validated it."""
    key = (obj.get("apiVersion"), obj.get("kind"))
    if key in crd_schemas:
        import jsonschema

        jsonschema.Draft7Validator(strict_schema(crd_schemas[key])).validate(obj)
        return "crd"
    kv.validate(obj, KUBERNETES_VERSION, strict=True)
    return "kubernetes"


def render(path):
    if not KUSTOMIZE.exists():
        pytest.fail(f"kustomize is not at {KUSTOMIZE}: {INSTALL_HINT}")
    res = subprocess.run([str(KUSTOMIZE), "build", str(path)], capture_output=True, text=True,
                         timeout=120)
    assert res.returncode == 0, f"kustomize build {path} failed:\n{res.stderr}"
    return res.stdout


@pytest.fixture(scope="session")
def rendered(yaml):
    return {o: [d for d in yaml.safe_load_all(render(K8S / "overlays" / o)) if d]
            for o in OVERLAYS}


def objects(docs, kind):
    return [d for d in docs if d["kind"] == kind]


def one(docs, kind, name):
    found = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(found) == 1, f"{kind}/{name}: {len(found)} found"
    return found[0]


# --- what the C sources say -------------------------------------------------------------


def read(rel):
    return (ROOT / rel).read_text()


def topic_partitions():
    """{"agentbus.ingress": 12, ...} and {AB_TOPIC_INGRESS: "agentbus.ingress"} from
    common/topics.c."""
    rows = re.findall(r'\[(AB_TOPIC_\w+)\]\s*=\s*\{\s*"([^"]+)"\s*,\s*(\d+)', read("common/topics.c"))
    assert len(rows) >= 5, "cannot parse common/topics.c"
    return {name: int(n) for _, name, n in rows}, {enum: name for enum, name, _ in rows}


def service_consumer(svc):
    """(group_id, [topics]) of a consumer service, from services/<svc>/main.c."""
    src = read(f"services/{svc}/main.c")
    group = re.search(r'\.group_id\s*=\s*"([^"]+)"', src)
    topics = re.search(r"enum ab_topic topics\[\]\s*=\s*\{([^}]*)\}", src)
    assert group and topics, f"cannot parse services/{svc}/main.c"
    _, enums = topic_partitions()
    return group.group(1), [enums[e.strip()] for e in topics.group(1).split(",") if e.strip()]


def config_options():
    """{"shutdown.timeout_s": ("AGENTBUS_SHUTDOWN_TIMEOUT_S", "25"), ...} from the option
    table of common/config.c (the default is None when required)."""
    src = read("common/config.c")
    rows = re.findall(
        r'\[AB_OPT_\w+\]\s*=\s*\{\s*"([^"]+)"\s*,\s*"(\w+)"\s*,\s*(?:NULL|"\w+")\s*,\s*'
        r'(?:AB_OPT_\w+\s*,\s*(NULL|"[^"]*")|PORT\("(\d+)"\)|ANY_STRING\("([^"]*)")', src)
    opts = {}
    for name, env, plain, port, anystr in rows:
        if port:
            default = port
        elif plain:
            default = None if plain == "NULL" else plain.strip('"')
        else:  # ANY_STRING("...")
            default = anystr
        opts[name] = (env, default)
    assert "shutdown.timeout_s" in opts and "dispatcher.ops_port" in opts, \
        "cannot parse the option table of common/config.c"
    return opts


def consumer_drain_default_ms():
    m = re.search(r"drain_timeout_ms\s*>\s*0\s*\?\s*opts->drain_timeout_ms\s*:\s*(\d+)",
                  read("common/kafka_consumer.c"))
    assert m, "cannot find the consumers' default drain timeout in common/kafka_consumer.c"
    return int(m.group(1))


def registered_metrics():
    """{name: (type, [labels] or None when they cannot be read)} of every metric the C code
    registers (ab_metrics_counter/gauge/histogram/gauge_fn calls)."""
    found = {}
    call = re.compile(
        r'ab_metrics_(counter|gauge_fn|gauge|histogram)\(\s*[^,;]+?,\s*"(agentbus_\w+)"\s*,'
        r'(.*?)\)\s*;', re.S)
    literal = re.compile(r'"(?:[^"\\]|\\.)*"')
    for path in list((ROOT / "common").glob("*.c")) + list((ROOT / "services").glob("*/*.c")):
        src = path.read_text()
        for kind, name, rest in call.findall(src):
            labels = None
            if kind == "gauge_fn":
                labels = []  # a gauge_fn has no labels
            else:
                # The arguments after the name: help (maybe several literals), label names.
                args = literal.sub('""', rest).split(",")
                arg = args[1].strip() if len(args) > 1 else ""
                if arg == "NULL":
                    labels = []
                elif arg.startswith("(const char *const[])"):
                    m = re.search(r"\(const char \*const\[\]\)\s*\{([^}]*)\}", rest)
                    labels = re.findall(r'"(\w+)"', m.group(1))
                elif re.fullmatch(r"\w+", arg):  # an array declared in the same file
                    m = re.search(r"\b" + arg + r"\[\]\s*=\s*\{([^}]*)\}", src)
                    labels = re.findall(r'"(\w+)"', m.group(1)) if m else None
            found.setdefault(name, (kind, labels))
    return found


# --- effective settings of a rendered Deployment ----------------------------------------


def config_file(docs):
    cms = [d for d in objects(docs, "ConfigMap") if d["metadata"]["name"].startswith("agentbus-config")]
    assert len(cms) == 1
    return json.loads(cms[0]["data"]["agentbus.json"])


def env_configmap(docs):
    cms = [d for d in objects(docs, "ConfigMap") if d["metadata"]["name"].startswith("agentbus-env")]
    assert len(cms) == 1
    return cms[0]


def effective(docs, container, option):
    """An option's value for a container: its env, then the ConfigMaps it takes env from,
    then the config file, then the default in common/config.c (the services' own order)."""
    env_name, default = config_options()[option]
    for e in container.get("env", []):
        if e["name"] == env_name and "value" in e:
            return e["value"]
    for src in container.get("envFrom", []):
        ref = src.get("configMapRef", {}).get("name")
        cm = [d for d in objects(docs, "ConfigMap") if d["metadata"]["name"] == ref]
        if cm and env_name in cm[0].get("data", {}):
            return cm[0]["data"][env_name]
    node = config_file(docs)
    for part in option.split("."):
        node = node.get(part) if isinstance(node, dict) else None
    return node if node is not None else default


def pod_spec(obj):
    return obj["spec"]["template"]["spec"]


def service_of(deploy):
    return deploy["metadata"]["name"].removeprefix("agentbus-")


# --- rendering and schema validation ----------------------------------------------------


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_renders_and_every_object_validates(rendered, kv, crd_schemas, overlay):
    docs = rendered[overlay]
    checked = {"kubernetes": 0, "crd": 0}
    for d in docs:
        try:
            checked[validate_object(kv, crd_schemas, d)] += 1
        except Exception as e:  # noqa: BLE001 - name the object, then fail
            pytest.fail(f"{overlay}: {d['kind']}/{d['metadata']['name']} is invalid: {e}")
    kinds = {d["kind"] for d in docs}
    assert {"Deployment", "Service", "HorizontalPodAutoscaler", "ScaledObject",
            "PodDisruptionBudget", "Job", "ConfigMap", "Namespace"} <= kinds
    assert checked["crd"] >= 3 and checked["kubernetes"] >= 15


def test_components_and_base_render(rendered):
    prod_kinds = {d["kind"] for d in rendered["production"]}
    dev_kinds = {d["kind"] for d in rendered["dev"]}
    assert {"ServiceMonitor", "TriggerAuthentication"} <= prod_kinds
    assert not {"ServiceMonitor", "TriggerAuthentication"} & dev_kinds
    render(K8S / "base")  # the base alone builds too


def test_validator_rejects_broken_manifests(rendered, kv, crd_schemas):
    """The validators are not rubber stamps: each broken copy of a rendered object fails."""
    docs = rendered["production"]
    deploy = copy.deepcopy(one(docs, "Deployment", "agentbus-dispatcher"))
    deploy["spec"]["template"]["spec"]["terminationGracePeriod"] = 35  # misspelt field
    with pytest.raises(Exception, match="terminationGracePeriod"):
        validate_object(kv, crd_schemas, deploy)
    deploy = copy.deepcopy(one(docs, "Deployment", "agentbus-dispatcher"))
    pod_spec(deploy)["containers"][0]["livenessProbe"]["periodSeconds"] = "ten"  # wrong type
    with pytest.raises(Exception):
        validate_object(kv, crd_schemas, deploy)
    hpa = copy.deepcopy(one(docs, "HorizontalPodAutoscaler", "agentbus-ingress"))
    del hpa["spec"]["maxReplicas"]  # required
    with pytest.raises(Exception, match="maxReplicas"):
        validate_object(kv, crd_schemas, hpa)

    so = copy.deepcopy(one(docs, "ScaledObject", "agentbus-notifier"))
    so["spec"]["minReplicas"] = 1  # the HPA's name, not KEDA's (minReplicaCount)
    with pytest.raises(Exception, match="minReplicas"):
        validate_object(kv, crd_schemas, so)
    so = copy.deepcopy(one(docs, "ScaledObject", "agentbus-notifier"))
    del so["spec"]["triggers"][0]["type"]  # required by the CRD
    with pytest.raises(Exception, match="type"):
        validate_object(kv, crd_schemas, so)
    sm = copy.deepcopy(one(docs, "ServiceMonitor", "agentbus"))
    sm["spec"]["endpoints"][0]["interval"] = "thirty seconds"  # not a duration
    with pytest.raises(Exception):
        validate_object(kv, crd_schemas, sm)

    broken = K8S / "overlays" / "dev" / "kustomization.yaml"
    res = subprocess.run([str(KUSTOMIZE), "build", "-"], input=broken.read_text() + "\nbogus: 1\n",
                         capture_output=True, text=True)
    assert res.returncode != 0  # kustomize refuses an unknown field as well


# --- invariants tied to the code --------------------------------------------------------


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_scaled_objects_respect_partitions_and_groups(rendered, overlay):
    docs = rendered[overlay]
    partitions, _ = topic_partitions()
    env_cm = env_configmap(docs)
    scaled = {so["spec"]["scaleTargetRef"]["name"]: so for so in objects(docs, "ScaledObject")}
    assert sorted(scaled) == sorted(f"agentbus-{s}" for s in CONSUMERS)
    for target, so in scaled.items():
        svc = target.removeprefix("agentbus-")
        group, topics = service_consumer(svc)
        spec = so["spec"]
        assert spec["minReplicaCount"] >= 1, f"{target}: KEDA must never scale the group to 0"
        triggers = spec["triggers"]
        assert triggers and all(t["type"] == "kafka" for t in triggers)
        trigger_topics = [t["metadata"]["topic"] for t in triggers]
        # Every topic the service consumes has a trigger, and no trigger watches another.
        assert sorted(trigger_topics) == sorted(topics), f"{target}: {trigger_topics} vs {topics}"
        cap = min(partitions[t] for t in trigger_topics)
        assert spec["minReplicaCount"] <= spec["maxReplicaCount"] <= cap, \
            f"{target}: maxReplicaCount {spec['maxReplicaCount']} > {cap} partitions"
        if "fallback" in spec:
            assert 1 <= spec["fallback"]["replicas"] <= spec["maxReplicaCount"]
        deploy = one(docs, "Deployment", target)
        container = pod_spec(deploy)["containers"][0]
        for t in triggers:
            m = t["metadata"]
            assert m["consumerGroup"] == group, f"{target}: group {m['consumerGroup']} != {group}"
            assert int(m["lagThreshold"]) > 0
            # The traps of peer-systems.md §5: explicit, and safe.
            assert m["offsetResetPolicy"] == "latest"
            assert m["allowIdleConsumers"] == "false"
            assert m["scaleToZeroOnInvalidOffset"] == "false"
            assert m["limitToPartitionsWithLag"] == "true"
            # KEDA reads the bootstrap from the first container's env: it must be there.
            var = m["bootstrapServersFromEnv"]
            assert any(src.get("configMapRef", {}).get("name") == env_cm["metadata"]["name"]
                       for src in container["envFrom"])
            assert var == config_options()["kafka.bootstrap"][0] and var in env_cm["data"]
        # Each trigger's threshold is the same for one service (one meaning of "busy").
        assert len({t["metadata"]["lagThreshold"] for t in triggers}) == 1
        # A surge pod at maxReplicaCount would get no partition and never turn ready.
        assert deploy["spec"]["strategy"]["rollingUpdate"]["maxSurge"] == 0
    if overlay == "production":
        for so in scaled.values():
            assert [t["authenticationRef"]["name"] for t in so["spec"]["triggers"]] == \
                ["agentbus-kafka"] * len(so["spec"]["triggers"])
        one(docs, "TriggerAuthentication", "agentbus-kafka")


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_deployment_is_autoscaled_without_fixed_replicas(rendered, overlay):
    docs = rendered[overlay]
    targets = {so["spec"]["scaleTargetRef"]["name"] for so in objects(docs, "ScaledObject")}
    hpas = objects(docs, "HorizontalPodAutoscaler")
    assert [h["apiVersion"] for h in hpas] == ["autoscaling/v2"]
    targets |= {h["spec"]["scaleTargetRef"]["name"] for h in hpas}
    assert hpas[0]["spec"]["scaleTargetRef"]["name"] == "agentbus-ingress"
    assert 1 <= hpas[0]["spec"]["minReplicas"] <= hpas[0]["spec"]["maxReplicas"]
    deploys = objects(docs, "Deployment")
    assert sorted(d["metadata"]["name"] for d in deploys) == sorted(f"agentbus-{s}" for s in SERVICES)
    for d in deploys:
        assert d["metadata"]["name"] in targets
        assert "replicas" not in d["spec"], "an apply would reset the autoscaler's count"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_termination_grace_exceeds_the_shutdown_timeout(rendered, overlay):
    docs = rendered[overlay]
    drain_default_s = consumer_drain_default_ms() / 1000
    for d in objects(docs, "Deployment"):
        spec = pod_spec(d)
        c = spec["containers"][0]
        timeout = int(effective(docs, c, "shutdown.timeout_s"))
        pre_stop = 0
        cmd = c.get("lifecycle", {}).get("preStop", {}).get("exec", {}).get("command")
        if cmd:
            assert cmd[0] == "sleep"
            pre_stop = int(cmd[1])
        grace = spec["terminationGracePeriodSeconds"]
        # The grace period starts with preStop; the watchdog exits shutdown.timeout_s after
        # SIGTERM. Both must fit, with a margin, or Kubernetes kills a clean drain.
        assert grace >= pre_stop + timeout + 5, f"{d['metadata']['name']}: {grace} <= {pre_stop}+{timeout}"
        if service_of(d) == "dispatcher":  # default consumer drain (10 s) within the timeout
            assert timeout > drain_default_s


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_probes_hit_the_ops_port(rendered, overlay):
    docs = rendered[overlay]
    for d in objects(docs, "Deployment"):
        svc = service_of(d)
        c = pod_spec(d)["containers"][0]
        assert c["command"] == [f"agentbus-{svc}"]
        ops = int(effective(docs, c, f"{svc.replace('-', '_')}.ops_port"))
        ports = {p["name"]: p["containerPort"] for p in c["ports"]}
        assert ports["ops"] == ops
        assert c["livenessProbe"]["httpGet"] == {"path": "/livez", "port": "ops"}
        assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "ops"}
        if "startupProbe" in c:
            assert c["startupProbe"]["httpGet"]["path"] == "/livez"
        if svc == "ingress":
            assert ports["api"] == int(effective(docs, c, "ingress.api_port"))
            assert ports["webhooks"] == int(effective(docs, c, "ingress.webhook_port"))


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_pod_is_locked_down(rendered, overlay):
    docs = rendered[overlay]
    workloads = objects(docs, "Deployment") + objects(docs, "Job")
    assert len(workloads) == 5
    for w in workloads:
        spec = pod_spec(w)
        name = w["metadata"]["name"]
        assert spec["securityContext"]["runAsNonRoot"] is True, name
        assert spec["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault", name
        assert spec["automountServiceAccountToken"] is False, name
        tmp_volumes = {v["name"] for v in spec["volumes"] if "emptyDir" in v}
        for c in spec.get("initContainers", []) + spec["containers"]:
            sc = c["securityContext"]
            assert sc["runAsNonRoot"] is True, name
            assert sc["readOnlyRootFilesystem"] is True, name
            assert sc["allowPrivilegeEscalation"] is False, name
            assert sc["capabilities"]["drop"] == ["ALL"], name
            assert not sc["capabilities"].get("add"), name
            assert any(m["mountPath"] == "/tmp" and m["name"] in tmp_volumes
                       for m in c["volumeMounts"]), f"{name}: /tmp must be a writable emptyDir"
            res = c["resources"]
            assert res["requests"]["cpu"] and res["requests"]["memory"] and res["limits"]["memory"]
    for ns in objects(docs, "Namespace"):
        assert ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_disruption_budgets_and_service_select_the_pods(rendered, overlay):
    docs = rendered[overlay]
    pdbs = objects(docs, "PodDisruptionBudget")
    for d in objects(docs, "Deployment"):
        labels = d["spec"]["template"]["metadata"]["labels"]
        assert d["spec"]["selector"]["matchLabels"].items() <= labels.items()
        mine = [p for p in pdbs if p["spec"]["selector"]["matchLabels"].items() <= labels.items()]
        assert len(mine) == 1, f"{d['metadata']['name']}: {len(mine)} PodDisruptionBudgets"
        # maxUnavailable: a single replica (dev) must not block node drains.
        assert mine[0]["spec"].get("maxUnavailable") == 1
    ingress = one(docs, "Deployment", "agentbus-ingress")
    svc = one(docs, "Service", "agentbus-ingress")
    assert svc["spec"]["selector"].items() <= ingress["spec"]["template"]["metadata"]["labels"].items()
    names = {p["name"] for p in pod_spec(ingress)["containers"][0]["ports"]}
    assert {p["targetPort"] for p in svc["spec"]["ports"]} <= names


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_config_secrets_and_jobs(rendered, overlay):
    docs = rendered[overlay]
    opts = config_options()
    # Every key of the config file is an option (the services refuse unknown fields).
    def leaves(node, prefix=""):
        for k, v in node.items():
            path = f"{prefix}.{k}" if prefix else k
            if path in opts:
                yield path
            else:
                assert isinstance(v, dict), f"agentbus.json: unknown option {path}"
                yield from leaves(v, path)
    cfg = config_file(docs)
    assert list(leaves(cfg))
    env_names = {e for e, _ in opts.values()} | {"AGENTBUS_CONFIG"}
    assert set(env_configmap(docs)["data"]) <= env_names
    # No migration Job: the services migrate at start, so that must stay on.
    assert cfg.get("database", {}).get("migrate", True) is True
    assert str(effective(docs, {}, "database.migrate")).lower() == "true"
    # Secrets only by reference; the dev overlay generates placeholders, production none.
    secrets = objects(docs, "Secret")
    refs = set()
    for w in objects(docs, "Deployment") + objects(docs, "Job"):
        for c in pod_spec(w)["containers"]:
            for e in c.get("env", []):
                ref = e.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    refs.add((ref["name"], ref["key"], ref.get("optional", False)))
    assert {r[1] for r in refs if not r[2]} == {"database-url", "admin-token"}
    if overlay == "production":
        assert secrets == [], "production must not ship a Secret"
        img = pod_spec(one(docs, "Deployment", "agentbus-ingress"))["containers"][0]["image"]
        assert not img.endswith(":latest")
    else:
        assert len(secrets) == 1
        import base64
        data = {k: base64.b64decode(v).decode() for k, v in secrets[0]["data"].items()}
        required = {key for name, key, optional in refs if not optional}
        assert required <= set(data), f"the dev Secret lacks {required - set(data)}"
        assert all("not-a-secret" in v for v in data.values())
        assert len(data["admin-token"]) >= 16  # admin.token's lower bound
    job = one(docs, "Job", "agentbus-topics")
    cmd = pod_spec(job)["containers"][0]["command"]
    assert cmd[0] == "agentbus-topics" and "--partitions" not in cmd  # the table's counts
    assert int(cmd[cmd.index("--replication-factor") + 1]) == (3 if overlay == "production" else 1)


def test_service_monitor_scrapes_every_ops_port(rendered):
    docs = rendered["production"]
    sm = one(docs, "ServiceMonitor", "agentbus")
    sel = sm["spec"]["selector"]["matchLabels"]
    scraped = [s for s in objects(docs, "Service") if sel.items() <= s["metadata"].get("labels", {}).items()]
    assert len(scraped) == 4
    for s in scraped:
        d = [d for d in objects(docs, "Deployment")
             if s["spec"]["selector"].items() <= d["spec"]["template"]["metadata"]["labels"].items()]
        assert len(d) == 1
        port = {p["name"] for p in s["spec"]["ports"]}
        assert {e["port"] for e in sm["spec"]["endpoints"]} <= port
        assert s["spec"]["ports"][0]["targetPort"] == "ops"
    assert all(e["path"] == "/metrics" for e in sm["spec"]["endpoints"])


# --- the Grafana dashboard --------------------------------------------------------------

TARGET_LABELS = {"job", "namespace", "pod", "instance", "service", "container", "endpoint", "le"}
PROMQL_WORDS = {"sum", "max", "min", "avg", "count", "rate", "irate", "increase", "by",
                "without", "histogram_quantile", "on", "ignoring", "group_left", "clamp_min",
                "topk", "bottomk", "and", "or", "unless", "offset", "delta", "deriv", "abs",
                "label_replace", "vector", "scalar", "time", "sort_desc", "sort"}


def dashboard_exprs():
    dash = json.loads(DASHBOARD.read_text())
    exprs = []

    def walk(panels):
        for p in panels:
            walk(p.get("panels", []))
            for t in p.get("targets", []):
                exprs.append((p.get("title"), t["expr"]))
    walk(dash["panels"])
    return dash, exprs


def test_dashboard_queries_only_metrics_the_code_exports():
    dash, exprs = dashboard_exprs()
    assert dash["title"] and dash["uid"] and len(exprs) >= 12
    metrics = registered_metrics()
    used = set()
    for title, expr in exprs:
        names = set(re.findall(r"\b(agentbus_\w+)", expr))
        assert names, f"panel {title!r}: no agentbus metric in {expr}"
        families = set()
        for n in names:
            base = re.sub(r"_(bucket|sum|count)$", "", n)
            if base != n and metrics.get(base, ("",))[0] == "histogram":
                n = base  # a histogram's series
            else:
                assert metrics.get(n, ("",))[0] != "histogram", \
                    f"panel {title!r}: {n} is a histogram: use its _bucket, _sum or _count"
            assert n in metrics, f"panel {title!r}: {n} is not registered in the C sources"
            families.add(n)
        used |= families
        # Labels the query groups or filters by exist on its metric (or come from the scrape).
        if len(families) == 1:
            labels = metrics[next(iter(families))][1]
            if labels is not None:
                grouped = set()
                for g in re.findall(r"\b(?:by|without)\s*\(([^)]*)\)", expr):
                    grouped |= {x.strip() for x in g.split(",") if x.strip()}
                grouped |= set(re.findall(r"[{,]\s*(\w+)\s*(?:=~|!~|!=|=)", expr))
                assert grouped <= set(labels) | TARGET_LABELS, \
                    f"panel {title!r}: labels {grouped - set(labels) - TARGET_LABELS} not on {names}"
    # The two that the scaling and the dead-letter story rest on.
    assert {"agentbus_kafka_consumer_lag", "agentbus_notify_dead_letters_held"} <= used
    # Prometheus is a variable, not a hard-coded data source uid.
    assert any(v["type"] == "datasource" for v in dash["templating"]["list"])
