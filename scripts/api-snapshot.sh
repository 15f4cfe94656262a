#!/usr/bin/env bash
# The API snapshot: ffi/api.txt lists every function, object, record, enum, error and callback
# that unibus_ffi exports, as uniffi sees it in the built library. The Kotlin, Python and Swift
# bindings are generated from the same metadata at build time (Maven, maturin,
# bindings/swift/generate.sh) and are not checked in, so an API change is reviewed here.
#
#   scripts/api-snapshot.sh           rewrite ffi/api.txt from the library
#   scripts/api-snapshot.sh --check   fail if ffi/api.txt differs from the library's API
set -euo pipefail
cd "$(dirname "$0")/.."

mode=${1:-write}
# Build the library alone (-p): building it together with the bindgen would unify the bindgen's
# `cli` feature into the library.
cargo build --quiet -p unibus-ffi
cargo build --quiet -p uniffi-bindgen --bin uniffi-api
target_dir=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')

fresh=$(mktemp)
trap 'rm -f "$fresh"' EXIT
"$target_dir/debug/uniffi-api" "$target_dir/debug/libunibus_ffi.so" >"$fresh"

if [ "$mode" = "--check" ]; then
  if ! diff -u ffi/api.txt "$fresh"; then
    echo "the exported API changed: review the diff above, then run scripts/api-snapshot.sh" >&2
    exit 1
  fi
  echo "API snapshot is up to date ($(grep -c . ffi/api.txt) lines)"
else
  cp "$fresh" ffi/api.txt
  echo "wrote ffi/api.txt"
fi
