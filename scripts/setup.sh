#!/usr/bin/env bash
# Installs what the demo and the tests need and are missing, and nothing else. Idempotent:
# a second run finds everything in place and returns at once.
#
# Needs: a Rust toolchain from rustup (with rustfmt and clippy), and root or sudo for apt-get.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf 'setup: %s\n' "$*"; }

as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi
}

apt_updated=0
apt_install() {
  if [ $apt_updated = 0 ]; then
    as_root apt-get update -qq
    apt_updated=1
  fi
  log "installing $* with apt-get"
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq "$@" >/dev/null
}

if ! command -v cargo >/dev/null; then
  echo "setup: cargo not found. Install Rust with rustup (https://rustup.rs), then rerun." >&2
  exit 1
fi

command -v cc >/dev/null || apt_install build-essential
# GNU strip, for the release library the packages ship (scripts/build-ffi-release.sh).
command -v strip >/dev/null || apt_install binutils

# nats-server 2.15.1 for the store and cluster tests (pinned by sha256; see the script).
scripts/install-nats-server.sh

# The Kotlin bindings' tests: a JDK (17 or newer) and Maven.
command -v javac >/dev/null || apt_install openjdk-17-jdk-headless
command -v mvn >/dev/null || apt_install maven

# The Python package and its tests: virtual environments (the wheel is installed into fresh
# ones), maturin to build the wheel, and the test requirements.
command -v python3 >/dev/null || apt_install python3 python3-pip
python3 -c 'import venv, ensurepip' 2>/dev/null || apt_install python3-venv
if ! python3 -c 'import pytest, pyhpke, cryptography, zxingcpp, PIL' 2>/dev/null; then
  log "installing the Python test requirements"
  python3 -m pip install --quiet --disable-pip-version-check -r bindings/python/requirements-test.txt
fi
maturin_version=1.15.0
if [ "$(python3 -m maturin --version 2>/dev/null)" != "maturin $maturin_version" ]; then
  log "installing maturin $maturin_version"
  python3 -m pip install --quiet --disable-pip-version-check "maturin==$maturin_version"
fi

# The invite page's tests load it in a real headless browser: Debian's Chromium.
command -v chromium >/dev/null || apt_install chromium

log "ready"
