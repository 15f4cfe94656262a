#!/usr/bin/env bash
# Generates the Swift package's bindings, which are not checked in:
#   Sources/Unibus/Unibus.swift                  the Swift API
#   Sources/UnibusFFI/include/UnibusFFI.h        the C declarations of the library's symbols
#   Sources/UnibusFFI/include/module.modulemap   the Clang module UnibusFFI
# from the release native library (scripts/build-ffi-release.sh) with the workspace's pinned
# uniffi-bindgen and the settings in ffi/uniffi.toml. Prints the library's path.
#
# It runs on Linux (scripts/swift-test.sh uses it); on a Mac, run it once on a Linux machine or copy
# the three files in, then `swift build` (see Package.swift and the README).
set -euo pipefail
cd "$(dirname "$0")/../.."

lib=$(scripts/build-ffi-release.sh)
cargo build --quiet -p uniffi-bindgen --bin uniffi-bindgen
target_dir=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')

out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
"$target_dir/debug/uniffi-bindgen" generate "$lib" --language swift --out-dir "$out" --no-format >/dev/null
package=bindings/swift/Sources
mkdir -p "$package/Unibus" "$package/UnibusFFI/include"
cp "$out/Unibus.swift" "$package/Unibus/Unibus.swift"
cp "$out/UnibusFFI.h" "$package/UnibusFFI/include/UnibusFFI.h"
cp "$out/UnibusFFI.modulemap" "$package/UnibusFFI/include/module.modulemap"
echo "$lib"
