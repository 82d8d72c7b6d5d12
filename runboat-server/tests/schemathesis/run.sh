#!/usr/bin/env bash
# Schemathesis against the generated OpenAPI document of a running demo
# server: the coverage and fuzzing phases, with the demo's admin
# credentials, bounded to a few minutes. Called by .ci/run; needs
# CARGO_TARGET_DIR (the venv and the server binary live there) and python3.
#
#   bash runboat-server/tests/schemathesis/run.sh
#
# Exit status: Schemathesis's (0 when no failure was found).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../../.." && pwd)"
target="${CARGO_TARGET_DIR:-$root/target}"
venv="$target/schemathesis-venv"
version="4.32.5"
port="${RUNBOAT_SCHEMATHESIS_PORT:-18123}"
url="http://127.0.0.1:$port"

# Idempotent: the venv is made once, Schemathesis installed once per version.
if ! "$venv/bin/st" --version 2>/dev/null | grep -q "$version"; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet "schemathesis==$version"
fi

cargo build --quiet --locked -p runboat-server --features demo
log="$(mktemp)"
"$target/debug/runboat-server" --demo --listen "127.0.0.1:$port" >"$log" 2>&1 &
server=$!
trap 'kill "$server" 2>/dev/null || true; wait "$server" 2>/dev/null || true; rm -f "$log"' EXIT

# Wait for the first cluster listing (with a deadline).
for _ in $(seq 1 120); do
    if curl -sf "$url/readyz" >/dev/null 2>&1; then break; fi
    if ! kill -0 "$server" 2>/dev/null; then cat "$log" >&2; exit 1; fi
    sleep 0.5
done
curl -sf "$url/readyz" >/dev/null

# The demo's admin credentials are demo:demo (runboat-server/src/demo.rs).
# Schemathesis and Hypothesis keep caches in the working directory: run from
# one under the target directory, not from the source tree.
work="$target/schemathesis-work"
mkdir -p "$work"
cd "$work"
"$venv/bin/st" --config-file "$here/schemathesis.toml" run "$url/api/v1/openapi.json" \
    --url "$url" \
    --auth demo:demo \
    --phases coverage,fuzzing \
    --max-examples 30 \
    --max-time 150 \
    --request-timeout 5 \
    --seed 1 \
    --workers 2
