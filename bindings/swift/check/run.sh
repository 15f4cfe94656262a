#!/usr/bin/env bash
# Swift cannot run on Linux here, so this proves what can be proved: the Swift package's
# sources are generated (generate.sh), the generated C header compiles with gcc, and a C program
# linked against the release library that ships calls through it.
set -euo pipefail
cd "$(dirname "$0")"
lib=$(../generate.sh)
lib_dir=$(dirname "$lib")
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
gcc -std=c11 -Wall -Wextra -Werror -D_Nonnull= -D_Nullable= \
  -I ../Sources/UnibusFFI/include header_check.c \
  -L "$lib_dir" -lunibus_ffi -Wl,-rpath,"$lib_dir" -o "$out/header_check"
"$out/header_check"
