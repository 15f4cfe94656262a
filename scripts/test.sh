#!/usr/bin/env bash
# Runs every test: the Rust workspace (unit, integration and doc tests), the freshness of the
# generated bindings, the Python and Kotlin binding tests against the real native library (with
# end-to-end suites against a real membershipd), and the Swift C-header check. Installs what is
# missing first (scripts/setup.sh).
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup.sh

echo "== Rust: unit, integration and doc tests"
cargo test --workspace

echo "== Generated bindings match the library (also stages the native library for the tests)"
scripts/gen-bindings.sh --check

# The Python and Kotlin end-to-end suites run the real membershipd and nats-server, and the
# lying control plane of the trust tests (built in one command: one feature set for both).
cargo build --quiet -p unibus-server --bin membershipd -p unibus-testkit --bin unibus-liar
export UNIBUS_MEMBERSHIPD="$PWD/target/debug/membershipd"
export UNIBUS_LIAR="$PWD/target/debug/unibus-liar"
export NATS_SERVER="${NATS_SERVER:-$PWD/.tools/bin/nats-server}"

echo "== Python bindings"
(cd bindings/python && python3 -m pytest -q)

echo "== Kotlin bindings"
(cd bindings/kotlin && mvn -B -ntp test)

echo "== Swift: generated C header compiles and links"
bindings/swift/check/run.sh

echo "== all tests passed"
