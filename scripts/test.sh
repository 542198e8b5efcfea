#!/usr/bin/env bash
# The project's test command (the README's): prepares whatever test services
# the suites need, then runs every test of the workspace — unit, integration
# and doc tests.
set -euo pipefail
cd "$(dirname "$0")/.."

# The MongoDB tests run against the server MONGODB_URI names. Unless it is
# set already (a real MongoDB or replica set), start the nx-27017 test server
# (scripts/mongo-test-server.sh installs it into .venv/ on first use) and stop
# it on exit. In CI a server that cannot start fails the run; elsewhere the
# MongoDB tests then skip, each test binary saying why.
if [[ -z "${MONGODB_URI:-}" ]]; then
    instance="test-$$"
    if uri="$(bash scripts/mongo-test-server.sh start --name "$instance")"; then
        trap 'bash scripts/mongo-test-server.sh stop --name "$instance"' EXIT
        export MONGODB_URI="$uri"
        echo "MongoDB tests: nx-27017 test server at $MONGODB_URI"
    elif [[ "${CI:-}" == "true" ]]; then
        echo "CI=true and the MongoDB test server could not start" >&2
        exit 1
    else
        echo "warning: the MongoDB test server could not start; the MongoDB tests will skip" >&2
    fi
else
    echo "MongoDB tests: using MONGODB_URI from the environment"
fi

# Doc tests first (nextest does not run them), so the run closes with the
# main runner's summary of every other test.
cargo test --workspace --all-features --doc
if cargo nextest --version >/dev/null 2>&1; then
    cargo nextest run --workspace --all-features --no-fail-fast
else
    cargo test --workspace --all-features --no-fail-fast --lib --bins --tests --examples
fi
