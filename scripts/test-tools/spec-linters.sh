#!/usr/bin/env bash
# Installs the linters of the API contracts (docs/api/openapi.yaml, docs/api/asyncapi.yaml)
# into .tools/spec-linters/, for tests/e2e/test_api_specs.py:
#   - Stoplight Spectral (npm), with its built-in OpenAPI 3.1 and AsyncAPI 3 rulesets;
#   - @asyncapi/specs (npm): the official AsyncAPI JSON schemas;
#   - openapi-spec-validator (PyPI), and jsonschema for the AsyncAPI schema.
# Every version is pinned here; the Python packages are pinned with their whole closure
# (--no-deps), the npm ones at the top level. Idempotent: a second run with the same pins
# and the same python3 installs nothing. Needs node >= 18 with npm, and python3 with pip.
set -euo pipefail

SPECTRAL_VERSION=6.16.3
ASYNCAPI_SPECS_VERSION=6.11.1
PYTHON_PACKAGES=(
    openapi-spec-validator==0.9.0
    openapi-schema-validator==0.9.0
    jsonschema==4.26.0
    jsonschema-specifications==2025.9.1
    jsonschema-path==0.5.0
    referencing==0.37.0
    rpds-py==2026.9.1
    attrs==26.1.0
    pathable==0.6.0
    lazy-object-proxy==1.13.0
    rfc3339-validator==0.1.4
    six==1.17.0
    PyYAML==6.0.4
    pydantic==2.14.4
    pydantic-core==2.50.5
    pydantic-settings==2.16.3
    python-dotenv==1.2.4
    annotated-types==0.8.0
    typing-extensions==4.16.0
    typing-inspection==0.4.5
)

root="$(cd "$(dirname "$0")/../.." && pwd)"
dir="$root/.tools/spec-linters"
py_version="$(python3 -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
stamp_want="spectral=$SPECTRAL_VERSION specs=$ASYNCAPI_SPECS_VERSION python=$py_version ${PYTHON_PACKAGES[*]}"
if [ -f "$dir/.installed" ] && [ "$(cat "$dir/.installed")" = "$stamp_want" ] &&
    [ -x "$dir/node_modules/.bin/spectral" ] &&
    [ -f "$dir/node_modules/@asyncapi/specs/schemas/3.0.0.json" ] &&
    [ -d "$dir/python/openapi_spec_validator" ]; then
    exit 0
fi

command -v npm >/dev/null || { echo "spec-linters: npm is required (node >= 18)" >&2; exit 1; }
echo "spec-linters: installing Spectral $SPECTRAL_VERSION, @asyncapi/specs $ASYNCAPI_SPECS_VERSION," \
    "openapi-spec-validator into $dir" >&2
rm -rf "$dir"
mkdir -p "$dir"
cat >"$dir/package.json" <<EOF
{
  "name": "agentbus-spec-linters",
  "private": true,
  "dependencies": {
    "@stoplight/spectral-cli": "$SPECTRAL_VERSION",
    "@asyncapi/specs": "$ASYNCAPI_SPECS_VERSION"
  }
}
EOF
# --ignore-scripts: no package here needs an install script (one would only send telemetry).
(cd "$dir" && npm install --no-audit --no-fund --ignore-scripts --loglevel=error >/dev/null)
python3 -m pip install --quiet --disable-pip-version-check --no-deps --target "$dir/python" \
    "${PYTHON_PACKAGES[@]}"

"$dir/node_modules/.bin/spectral" --version >/dev/null
PYTHONPATH="$dir/python" python3 -c 'import openapi_spec_validator, jsonschema, yaml'
echo "$stamp_want" >"$dir/.installed"
