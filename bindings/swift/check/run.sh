#!/usr/bin/env bash
# Swift cannot run on Linux here, so this proves what can be proved: the generated C header
# compiles with gcc, and a C program linked against the Rust library calls through it.
set -euo pipefail
cd "$(dirname "$0")"
root=$(cd ../../.. && pwd)
target_dir=$(cd "$root" && cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
(cd "$root" && cargo build --quiet -p unibus-ffi)
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
gcc -std=c11 -Wall -Wextra -Werror -D_Nonnull= -D_Nullable= \
  -I ../Sources/UnibusFFI/include header_check.c \
  -L "$target_dir/debug" -lunibus_ffi -Wl,-rpath,"$target_dir/debug" -o "$out/header_check"
"$out/header_check"
