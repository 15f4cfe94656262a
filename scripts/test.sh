#!/usr/bin/env bash
# Runs every test: the Rust workspace (unit, integration and doc tests), the API snapshot, the
# packages (the Python wheel and the Maven artifact, built with bindings generated at build time)
# with their binding tests against the release native library and end-to-end suites against a
# real membershipd, the invite page in a headless browser, each package installed into a clean
# project running the quickstart, the size budget, the Rust crates' packaging, and the Swift
# package built and tested on Linux (Swift 6.0 in a Debian 13 root made once per machine by
# scripts/install-swift.sh). Installs what is missing first (scripts/setup.sh).
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup.sh

# Each section's heading, and the wall time of the one before it.
section() {
  [ -z "${section_name:-}" ] || echo "   ($((SECONDS - section_start)) s: $section_name)"
  section_name=$1 section_start=$SECONDS
  [ -z "$1" ] || echo "== $1"
}

section "Rust: unit, integration and doc tests"
cargo test --workspace

section "The exported API matches its snapshot (ffi/api.txt)"
scripts/api-snapshot.sh --check

# The Python, Kotlin and Swift end-to-end suites run the real membershipd and nats-server, and
# the lying control plane of the trust tests (built in one command: one feature set for both).
section "membershipd and unibus-liar for the end-to-end suites"
cargo build --quiet -p unibus-server --bin membershipd -p unibus-testkit --bin unibus-liar
target_dir=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
export UNIBUS_MEMBERSHIPD="$target_dir/debug/membershipd"
export UNIBUS_LIAR="$target_dir/debug/unibus-liar"
export UNIBUS_RUST_QUICKSTART="$target_dir/debug/examples/quickstart"  # built by cargo test
export NATS_SERVER="${NATS_SERVER:-$PWD/.tools/bin/nats-server}"

section "The invite page in headless Chromium, against a real membershipd (screenshots: $target_dir/invite-page)"
UNIBUS_INVITE_PAGE_OUT="$target_dir/invite-page" python3 -m pytest -q -p no:cacheprovider server/tests/invite_page

section "Python: the wheel (maturin, release, stripped)"
wheel=$(bindings/python/build-wheel.sh)
echo "built $wheel"

section "Python bindings: the tests, with the wheel installed in a fresh virtual environment"
# The environment sees the system's test packages (pytest, pyhpke; scripts/setup.sh), but
# unibus only from the wheel. scripts/check-packages.sh also tries the wheel in one that has
# nothing else.
venv="$target_dir/python-test-venv"
python3 -m venv --clear --without-pip --system-site-packages "$venv"
python3 -m pip --python "$venv/bin/python" install --quiet --disable-pip-version-check --no-index "$wheel"
(cd bindings/python && "$venv/bin/python" -m pytest -q)

section "Kotlin bindings: mvn install (bindings generated, tests, jar with the native library, sources, javadoc)"
(cd bindings/kotlin && mvn -B -ntp install)
jar=$(ls bindings/kotlin/target/unibus-*[0-9].jar)

section "The packages in clean projects, against a real membershipd; the size budget"
scripts/check-packages.sh "$wheel" "$jar"

section "Rust crates: cargo package (unibus and unibus-server, verified together)"
scripts/package-crates.sh

section "Swift: swift build and swift test (Swift 6.0 in a Debian 13 root), against a real membershipd"
scripts/swift-test.sh

section ""
echo "== all tests passed"
