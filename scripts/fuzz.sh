#!/usr/bin/env bash
# Runs each fuzz target for a while (default 60 s each) with cargo-fuzz on the nightly toolchain.
#
#   scripts/fuzz.sh [seconds-per-target] [target ...]
#
# Targets: invite_link, sealed_key, member_part, envelope, history_share, public_keys, register_body, status_body, admin_body. Crashes land in fuzz/artifacts/<target>/.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-60}
shift || true
targets=("$@")
[ ${#targets[@]} -eq 0 ] && targets=(invite_link sealed_key member_part envelope history_share public_keys register_body status_body admin_body)

command -v cargo-fuzz >/dev/null || cargo install --locked cargo-fuzz
for target in "${targets[@]}"; do
  echo "== fuzzing $target for ${seconds}s"
  cargo +nightly fuzz run "$target" -- -max_total_time="$seconds" 2>&1 | grep -E "^(#[0-9]+.*DONE|Done|==[0-9]+==|SUMMARY)|panicked" || true
  if [ -n "$(ls -A "fuzz/artifacts/$target" 2>/dev/null)" ]; then
    echo "fuzz target $target found crashes in fuzz/artifacts/$target" >&2
    exit 1
  fi
done
echo "fuzzing found no crashes"
