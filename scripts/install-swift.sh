#!/usr/bin/env bash
# Makes the Swift toolchain the tests use, once per machine, and prints the path of its root:
# a Debian 13 (trixie) root made with debootstrap, holding Debian's own Swift 6.0 (`swiftlang`)
# with the C and C++ headers it compiles against. Debian 12 has no Swift package; trixie has.
#
# The root lives outside the checkout (CI runs in a fresh clone elsewhere), at
# $UNIBUS_SWIFT_ROOT or /var/cache/unibus/swift-trixie, and is reused when complete: a marker
# file is written last, so a root left half made by an interrupted run is made again.
# Everything comes from Debian's package repositories through debootstrap and apt-get, from the
# mirror this machine's own apt configuration names. Needs root (debootstrap, chroot).
# scripts/swift-test.sh runs the package's build and tests in it.
set -euo pipefail

root=${UNIBUS_SWIFT_ROOT:-/var/cache/unibus/swift-trixie}
packages=(swiftlang libc6-dev libstdc++-14-dev ca-certificates)
# What the marker records: a root made for another list is made again.
marker="$root/.unibus-swift-complete"
want="trixie ${packages[*]}"

log() { printf 'install-swift: %s\n' "$*" >&2; }

if [ -f "$marker" ] && [ "$(cat "$marker")" = "$want" ]; then
  log "reusing $root"
  echo "$root"
  exit 0
fi
if [ "$(id -u)" != 0 ]; then
  log "making the Swift root at $root needs root (debootstrap, chroot); rerun as root"
  exit 1
fi

if ! command -v debootstrap >/dev/null; then
  log "installing debootstrap with apt-get"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null
fi

# The first Debian mirror this machine's apt uses (deb822 .sources files or one-line lists).
debian_mirror() {
  local file
  for file in /etc/apt/sources.list.d/*.sources; do
    [ -f "$file" ] && awk '/^URIs:/ { for (i = 2; i <= NF; i++) print $i }' "$file"
  done
  for file in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
    [ -f "$file" ] && awk '$1 == "deb" { for (i = 2; i <= NF; i++) if ($i ~ /^[a-z]+:\/\//) { print $i; break } }' "$file"
  done
  return 0
}
mirror=$(debian_mirror | grep -v security | head -n 1 || true)
if [ -z "$mirror" ]; then
  log "found no Debian mirror in /etc/apt/sources.list*; configure apt first"
  exit 1
fi

started=$SECONDS
if [ -e "$root" ]; then
  log "removing the incomplete root at $root"
  # A root left by a killed run may still have mounts under it: never delete through them.
  if grep -q " $root/" /proc/mounts; then
    log "$root still has mounts (see /proc/mounts); unmount them, then rerun"
    exit 1
  fi
  rm -rf "$root"
fi
mkdir -p "$(dirname "$root")"
log "debootstrap --variant=minbase trixie $root $mirror"
debootstrap --variant=minbase trixie "$root" "$mirror" >"$root.debootstrap.log" 2>&1 || {
  log "debootstrap failed; its log: $root.debootstrap.log"
  exit 1
}
rm -f "$root.debootstrap.log"
log "apt-get install --no-install-recommends ${packages[*]} (in the root)"
chroot "$root" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin DEBIAN_FRONTEND=noninteractive \
  sh -c "apt-get update -qq && apt-get install -y -qq --no-install-recommends ${packages[*]} && apt-get clean" \
  >"$root.apt.log" 2>&1 || {
  log "apt-get failed in the root; its log: $root.apt.log"
  exit 1
}
rm -f "$root.apt.log"
echo "$want" >"$marker"
version=$(chroot "$root" dpkg-query --show --showformat='${Version}' swiftlang)
log "made $root in $((SECONDS - started)) s ($(du -sh "$root" | cut -f1)): swiftlang $version"
echo "$root"
