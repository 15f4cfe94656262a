#!/usr/bin/env bash
# Runs every test: the Rust workspace (unit, integration and doc tests), the API snapshot, the
# packages (the Python wheel and the Maven artifact, built with bindings generated at build time)
# with their binding tests against the release native library and end-to-end suites against a
# real membershipd, each package installed into a clean project running the quickstart, the
# size budget, the Rust crates' packaging, and the Swift C-header check. Installs what is
# missing first (scripts/setup.sh).
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup.sh

echo "== Rust: unit, integration and doc tests"
cargo test --workspace

echo "== The exported API matches its snapshot (ffi/api.txt)"
scripts/api-snapshot.sh --check

# The Python and Kotlin end-to-end suites run the real membershipd and nats-server, and the
# lying control plane of the trust tests (built in one command: one feature set for both).
cargo build --quiet -p unibus-server --bin membershipd -p unibus-testkit --bin unibus-liar
export UNIBUS_MEMBERSHIPD="$PWD/target/debug/membershipd"
export UNIBUS_LIAR="$PWD/target/debug/unibus-liar"
export NATS_SERVER="${NATS_SERVER:-$PWD/.tools/bin/nats-server}"
target_dir=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')

echo "== Python: the wheel (maturin, release, stripped)"
wheel=$(bindings/python/build-wheel.sh)
echo "built $wheel"

echo "== Python bindings: the tests, with the wheel installed in a fresh virtual environment"
# The environment sees the system's test packages (pytest, pyhpke; scripts/setup.sh), but
# unibus only from the wheel. scripts/check-packages.sh also tries the wheel in one that has
# nothing else.
venv="$target_dir/python-test-venv"
python3 -m venv --clear --without-pip --system-site-packages "$venv"
python3 -m pip --python "$venv/bin/python" install --quiet --disable-pip-version-check --no-index "$wheel"
(cd bindings/python && "$venv/bin/python" -m pytest -q)

echo "== Kotlin bindings: mvn install (bindings generated, tests, jar with the native library, sources, javadoc)"
(cd bindings/kotlin && mvn -B -ntp install)
jar=$(ls bindings/kotlin/target/unibus-*[0-9].jar)

echo "== The packages in clean projects, against a real membershipd; the size budget"
scripts/check-packages.sh "$wheel" "$jar"

echo "== Rust crates: cargo package (unibus and unibus-server, verified together)"
scripts/package-crates.sh

echo "== Swift: the package's sources are generated; the C header compiles and links"
bindings/swift/check/run.sh

echo "== all tests passed"
