#!/usr/bin/env bash
# Builds the release native library of unibus-ffi as the packages ship it, and prints its path:
# <cargo target>/ffi-dist/libunibus_ffi.so (the host's library; linux-x86-64 here).
#
# Stripped of debug info and of every symbol except uniffi's UNIFFI_META_* ones: uniffi-bindgen
# reads the exported API from those, so the Kotlin and Swift sources (and ffi/api.txt) can be
# generated from the very library that ships. The cargo arguments are maturin's for the wheel
# (bindings/python/pyproject.toml), so the wheel and the jar share one release build.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(uname -s)" != Linux ]; then
  echo "build-ffi-release.sh builds the Linux library (GNU strip); see the README for other platforms" >&2
  exit 1
fi

cargo rustc --quiet --release -p unibus-ffi --lib --crate-type cdylib -- -C strip=debuginfo >&2
target_dir=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
mkdir -p "$target_dir/ffi-dist"
out="$target_dir/ffi-dist/libunibus_ffi.so"
cp "$target_dir/release/libunibus_ffi.so" "$out.tmp"
strip --strip-all --wildcard --keep-symbol='UNIFFI_META_*' "$out.tmp"
mv "$out.tmp" "$out"
echo "$out"
