#!/usr/bin/env bash
# Regenerates the Kotlin, Python and Swift bindings from the unibus_ffi library, and copies the
# native library where the Kotlin and Python packages load it from.
#
#   scripts/gen-bindings.sh           regenerate the checked-in bindings in place
#   scripts/gen-bindings.sh --check   fail if the checked-in bindings differ from a fresh run
set -euo pipefail
cd "$(dirname "$0")/.."

mode=${1:-write}
# Build the library alone (-p): building it together with the bindgen would unify the bindgen's
# `cli` feature into the library and bloat it.
cargo build --quiet -p unibus-ffi
cargo build --quiet -p uniffi-bindgen
target_dir=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
lib="$target_dir/debug/libunibus_ffi.so"

out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
for language in kotlin python swift; do
  "$target_dir/debug/uniffi-bindgen" generate "$lib" --language "$language" \
    --out-dir "$out/$language" --config uniffi/uniffi.toml --no-format >/dev/null
done

# Where each generated file lives in the language packages.
declare -A dest=(
  ["kotlin/org/unibus/unibus.kt"]="bindings/kotlin/src/main/kotlin/org/unibus/unibus.kt"
  ["python/unibus.py"]="bindings/python/src/unibus/unibus.py"
  ["swift/Unibus.swift"]="bindings/swift/Sources/Unibus/Unibus.swift"
  ["swift/UnibusFFI.h"]="bindings/swift/Sources/UnibusFFI/include/UnibusFFI.h"
  ["swift/UnibusFFI.modulemap"]="bindings/swift/Sources/UnibusFFI/include/module.modulemap"
)

status=0
for generated in "${!dest[@]}"; do
  target=${dest[$generated]}
  if [ "$mode" = "--check" ]; then
    if ! diff -q "$out/$generated" "$target" >/dev/null 2>&1; then
      echo "stale binding: $target differs from a fresh generation; run scripts/gen-bindings.sh" >&2
      status=1
    fi
  else
    mkdir -p "$(dirname "$target")"
    cp "$out/$generated" "$target"
  fi
done

# The packages load the library from these places (both are git-ignored).
cp "$lib" bindings/python/src/unibus/
mkdir -p bindings/kotlin/src/main/resources/linux-x86-64
cp "$lib" bindings/kotlin/src/main/resources/linux-x86-64/

[ "$mode" = "--check" ] && [ $status -eq 0 ] && echo "bindings are up to date"
exit $status
