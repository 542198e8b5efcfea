#!/usr/bin/env bash
# The project's test command (the README's): prepares whatever test services
# the suites need, then runs every test of the workspace — unit, integration
# and doc tests.
set -euo pipefail
cd "$(dirname "$0")/.."

if cargo nextest --version >/dev/null 2>&1; then
    cargo nextest run --workspace --all-features --no-fail-fast
else
    cargo test --workspace --all-features --no-fail-fast --lib --bins --tests --examples
fi
# nextest does not run doc tests.
cargo test --workspace --all-features --doc
