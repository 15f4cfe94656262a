#!/usr/bin/env bash
# Builds the Swift package (bindings/swift) and runs its tests against a real membershipd, on
# Linux with Debian's Swift 6.0 in the Debian 13 root that scripts/install-swift.sh makes once
# per machine. Needs root (mounts, chroot), and $UNIBUS_MEMBERSHIPD, $UNIBUS_LIAR and
# $NATS_SERVER as scripts/test.sh exports them. Prints the number of tests and the times.
#
# The build and the tests run in the root, in their own mount and PID namespaces (unshare):
# the checkout, the cargo target directory and the binaries' directories are bind-mounted at
# their own paths, with a fresh /proc, the host's /dev and an empty /tmp. Nothing outlives the
# run: when it ends or is killed, the kernel ends every process of the PID namespace
# (membershipd, nats-server, the test runner) and drops the mounts with the namespace. A run
# that takes longer than $UNIBUS_SWIFT_TIMEOUT seconds (default 600) is killed and fails.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf 'swift-test: %s\n' "$*" >&2; }

for variable in UNIBUS_MEMBERSHIPD UNIBUS_LIAR NATS_SERVER; do
  if [ ! -x "${!variable:-}" ]; then
    log "\$$variable must name the binary (scripts/test.sh sets it)"
    exit 1
  fi
done
limit=${UNIBUS_SWIFT_TIMEOUT:-600}

started=$SECONDS
root=$(scripts/install-swift.sh)
lib=$(realpath "$(bindings/swift/generate.sh)")
target_dir=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
prepared=$SECONDS
# Every path the root sees, without symbolic links (they may point where the root has nothing).
checkout=$(realpath .)
target_dir=$(realpath "$target_dir")
membershipd=$(realpath "$UNIBUS_MEMBERSHIPD")
liar=$(realpath "$UNIBUS_LIAR")
nats_server=$(realpath "$NATS_SERVER")

# What the root must see at the same paths: the checkout, the target directory, and the
# directories of the binaries, each once and none inside one bound before it.
binds=()
for dir in "$checkout" "$target_dir" "$(dirname "$membershipd")" "$(dirname "$liar")" \
  "$(dirname "$nats_server")" "$(dirname "$lib")"; do
  covered=0
  for bound in "${binds[@]}"; do
    case "$dir/" in "$bound"/*) covered=1 ;; esac
  done
  [ $covered = 1 ] || binds+=("$dir")
done

# Swift's build products go into the cargo target directory, beside cargo's.
scratch="$target_dir/swift-build"
package="$checkout/bindings/swift"
inside=(
  /usr/bin/env -i HOME=/root PATH=/usr/local/bin:/usr/bin:/bin LANG=C.UTF-8
  LD_LIBRARY_PATH="$(dirname "$lib")"
  UNIBUS_MEMBERSHIPD="$membershipd" UNIBUS_LIAR="$liar" NATS_SERVER="$nats_server"
  /bin/sh -c '
    set -e
    cd "$1"
    # Warnings are errors (Package.swift: Swift 6 language mode, complete concurrency checking).
    flags="--scratch-path $2 -Xlinker -L$3 -Xswiftc -warnings-as-errors -Xcc -Werror"
    swift build $flags --build-tests
    # Line-buffered, so a run killed at the limit still shows the test that hung.
    stdbuf -oL -eL swift test $flags --skip-build
  ' swift-test "$package" "$scratch" "$(dirname "$lib")"
)

log "building and testing bindings/swift in $root (limit $limit s)"
output=$(mktemp)
trap 'rm -f "$output"' EXIT
status=0
# Inside the namespaces: mount, run, unmount in reverse order (lazily if busy) on any exit.
timeout --kill-after=10 "$limit" \
  unshare --mount --propagation private --pid --fork --kill-child -- \
  bash -c '
    set -euo pipefail
    root=$1 && shift
    count=$1 && shift
    binds=("${@:1:$count}") && shift "$count"
    mounted=()
    cleanup() {
      for ((i = ${#mounted[@]} - 1; i >= 0; i--)); do
        umount "${mounted[i]}" 2>/dev/null || umount -l "${mounted[i]}"
      done
    }
    trap cleanup EXIT
    mount_at() {
      mkdir -p "$root$2"
      mount "${@:3}" "$1" "$root$2"
      mounted+=("$root$2")
    }
    mount_at proc /proc -t proc
    mount_at /dev /dev --rbind
    mount_at tmpfs /tmp -t tmpfs
    for dir in "${binds[@]}"; do
      mount_at "$dir" "$dir" --bind
    done
    chroot "$root" "$@"
  ' swift-test "$root" "${#binds[@]}" "${binds[@]}" "${inside[@]}" 2>&1 | tee "$output" || status=$?

tests=$(grep -Eo "Executed [0-9]+ tests?, with [0-9]+ failures?" "$output" | tail -n 1 || true)
if [ "$status" != 0 ]; then
  if [ "$status" = 124 ] || [ "$status" = 137 ]; then
    log "killed after the limit of $limit s"
    last=$(grep -E "^Test Case '.*' (started|passed|failed)" "$output" | tail -n 1 || true)
    case "$last" in *started*) log "the test still running then: $last" ;; esac
  fi
  log "failed (status $status) after $((SECONDS - started)) s"
  exit 1
fi
log "${tests:-no test count found}; $((SECONDS - started)) s in all ($((prepared - started)) s for the root and the library, $((SECONDS - prepared)) s for swift build and swift test)"
# The plain closing line CI reads (SwiftPM's last line is Swift Testing's "0 tests passed", as
# the suite is XCTest).
if [[ $tests =~ Executed\ ([0-9]+)\ tests?,\ with\ ([0-9]+)\ failures? ]]; then
  echo "swift: $((BASH_REMATCH[1] - BASH_REMATCH[2])) passed, ${BASH_REMATCH[2]} failed"
fi
