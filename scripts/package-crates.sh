#!/usr/bin/env bash
# The Rust crates are ready to publish: `cargo package` builds the .crate files of `unibus` and
# `unibus-server` (metadata, file lists, path dependencies with versions) and verifies each by
# building it from its packaged sources alone. Packaged together, the server is verified against
# the packaged `unibus` through cargo's temporary local registry, as if it were published.
# Offline: the dependencies come from the local cache that the build already filled. `--allow-dirty`
# lets it run on a working tree with uncommitted changes; a release publishes from a clean one.
set -euo pipefail
cd "$(dirname "$0")/.."
# Cargo takes a registry crate of a given version as immutable: it reuses the copy of the
# temporary registry's unibus-<version>.crate unpacked under $CARGO_HOME/registry/src/ (a
# directory named "-<hash>" for a local registry) and the library compiled from it by an earlier
# run, so the server would be verified against an old unibus. Remove both first (only unibus's
# unpacked copies from local registries, and unibus's debug build artifacts).
rm -rf "${CARGO_HOME:-$HOME/.cargo}"/registry/src/-*/unibus-[0-9]* \
  "${CARGO_HOME:-$HOME/.cargo}"/registry/src/-*/unibus-server-[0-9]*
cargo clean --quiet -p unibus --profile dev
cargo package --quiet --offline --allow-dirty -p unibus -p unibus-server
target_dir=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
for crate in "$target_dir"/package/unibus-*.crate; do echo "  $(basename "$crate"): $(stat -c %s "$crate") bytes"; done
