#!/usr/bin/env bash
# The offline validators of deploy/k8s (tests/e2e/test_deploy_k8s.py), installed into .tools/:
#   .tools/bin/kustomize      kustomize, built with `go install` from the Go module proxy
#   .tools/k8s/python/        kubernetes-validate from PyPI (it bundles the Kubernetes
#                             OpenAPI schemas) and its jsonschema, via pip --target
#   .tools/k8s/crds/          the CRDs our manifests use, taken from the Go module zips of
#                             KEDA (ScaledObject, TriggerAuthentication) and the Prometheus
#                             operator (ServiceMonitor): the openAPIV3Schema the API server
#                             would check them against
# Idempotent: each piece is skipped when the pinned version is already there. Run by
# install-deps.sh --test; needs Go (PATH or /usr/local/go/bin) and pip for python3.
set -euo pipefail

KUSTOMIZE_VERSION=v5.8.2          # v5.8.3 needs go >= 1.27
KUBERNETES_VALIDATE_VERSION=1.34.1 # bundles the schemas of Kubernetes up to 1.34
KEDA_VERSION=v2.17.2              # github.com/kedacore/keda/v2
PROMETHEUS_OPERATOR_VERSION=v0.85.0

root=$(cd "$(dirname "$0")/../.." && pwd)
tools="$root/.tools"
k8s="$tools/k8s" # everything but kustomize lives here, apart from the other tools' files
mkdir -p "$tools/bin" "$k8s/crds"

go=$(command -v go || true)
if [ -z "$go" ] && [ -x /usr/local/go/bin/go ]; then go=/usr/local/go/bin/go; fi

need_go() {
    if [ -z "$go" ]; then
        echo "install-deps: k8s.sh needs Go (go on PATH or /usr/local/go/bin/go)" >&2
        exit 1
    fi
}

# kustomize
if ! "$tools/bin/kustomize" version 2>/dev/null | grep -qx "$KUSTOMIZE_VERSION"; then
    need_go
    echo "install-deps: building kustomize $KUSTOMIZE_VERSION" >&2
    GOBIN="$tools/bin" GOFLAGS=-modcacherw GOTOOLCHAIN=local \
        "$go" install "sigs.k8s.io/kustomize/kustomize/v5@$KUSTOMIZE_VERSION"
    "$tools/bin/kustomize" version | grep -qx "$KUSTOMIZE_VERSION"
fi

# kubernetes-validate (and the jsonschema it brings, used for the CRDs too)
stamp="$k8s/python/.kubernetes-validate-$KUBERNETES_VALIDATE_VERSION"
if [ ! -e "$stamp" ]; then
    echo "install-deps: installing kubernetes-validate $KUBERNETES_VALIDATE_VERSION" >&2
    rm -rf "$k8s/python"
    python3 -m pip install -q --disable-pip-version-check --target "$k8s/python" \
        "kubernetes-validate==$KUBERNETES_VALIDATE_VERSION"
    PYTHONPATH="$k8s/python" python3 -c 'import kubernetes_validate, jsonschema, yaml'
    touch "$stamp"
fi

# CRDs from the modules' zips (go mod download verifies them against the checksum database)
fetch_crds() { # module version destdir file...
    local module=$1 version=$2 dest=$3
    shift 3
    local ok=1
    for f in "$@"; do [ -s "$dest/$(basename "$f")" ] || ok=0; done
    [ $ok -eq 1 ] && return 0
    need_go
    echo "install-deps: fetching CRDs from $module@$version" >&2
    local dir
    dir=$(GOMODCACHE="$k8s/gomod" GOFLAGS=-modcacherw GOTOOLCHAIN=local \
        "$go" mod download -json "$module@$version" | python3 -c 'import json,sys; print(json.load(sys.stdin)["Dir"])')
    mkdir -p "$dest"
    for f in "$@"; do cp "$dir/$f" "$dest/"; done
}
fetch_crds github.com/kedacore/keda/v2 "$KEDA_VERSION" "$k8s/crds/keda-$KEDA_VERSION" \
    config/crd/bases/keda.sh_scaledobjects.yaml \
    config/crd/bases/keda.sh_triggerauthentications.yaml
fetch_crds github.com/prometheus-operator/prometheus-operator "$PROMETHEUS_OPERATOR_VERSION" \
    "$k8s/crds/prometheus-operator-$PROMETHEUS_OPERATOR_VERSION" \
    example/prometheus-operator-crd/monitoring.coreos.com_servicemonitors.yaml
# The module cache is only the source of the files above.
if [ -d "$k8s/gomod" ]; then rm -rf "$k8s/gomod"; fi

# What the tests read to find the pinned versions.
cat >"$k8s/versions.env" <<EOF
KUSTOMIZE_VERSION=$KUSTOMIZE_VERSION
KUBERNETES_VALIDATE_VERSION=$KUBERNETES_VALIDATE_VERSION
KEDA_VERSION=$KEDA_VERSION
PROMETHEUS_OPERATOR_VERSION=$PROMETHEUS_OPERATOR_VERSION
EOF
