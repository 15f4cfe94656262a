#!/usr/bin/env bash
# Run by Maven in the generate-sources phase (pom.xml):
#
#   generate.sh SOURCES_DIR NATIVES_DIR VERSION
#
# builds the release native library (scripts/build-ffi-release.sh: stripped, the same build as
# the wheel's), generates the Kotlin bindings from it with the workspace's pinned uniffi-bindgen
# (settings in ffi/uniffi.toml) into SOURCES_DIR, and puts the library into
# NATIVES_DIR/<JNA platform folder>/, from where it goes into the jar: JNA loads a library from
# the class path folder named for the platform it runs on (com.sun.jna.Platform.RESOURCE_PREFIX,
# e.g. linux-x86-64, linux-aarch64, darwin-aarch64, win32-x86-64). Only the host's library is
# built here; see the pom for adding other platforms' libraries.
set -euo pipefail
[ $# -eq 3 ] || { echo "usage: generate.sh SOURCES_DIR NATIVES_DIR VERSION" >&2; exit 2; }
sources=$1 natives=$2 version=$3
cd "$(dirname "$0")/../.."

# The artifact's version is the Rust crates' version.
crate_version=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(next(p["version"] for p in json.load(sys.stdin)["packages"] if p["name"] == "unibus-ffi"))')
if [ "$version" != "$crate_version" ]; then
  echo "pom.xml has version $version but unibus-ffi is $crate_version: keep them equal" >&2
  exit 1
fi

lib=$(scripts/build-ffi-release.sh)
cargo build --quiet -p uniffi-bindgen --bin uniffi-bindgen
target_dir=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')

rm -rf "$sources"
"$target_dir/debug/uniffi-bindgen" generate "$lib" --language kotlin --out-dir "$sources" --no-format >/dev/null

case "$(uname -m)" in
  x86_64) platform=linux-x86-64 ;;
  aarch64) platform=linux-aarch64 ;;
  *) echo "no JNA platform folder known for $(uname -m)" >&2; exit 1 ;;
esac
mkdir -p "$natives/$platform"
cp "$lib" "$natives/$platform/"
echo "generated the Kotlin bindings; $platform/$(basename "$lib") ($(stat -c %s "$lib") bytes) goes into the jar"
