#!/usr/bin/env bash
# The packages as an app developer gets them, each tried in a clean project against a real
# membershipd (run by scripts/test.sh after it built them):
#
#   scripts/check-packages.sh WHEEL JAR
#
# - the wheel: `pip install` into a fresh virtual environment that has nothing else, then
#   `import unibus` (timed) and examples/python/quickstart.py with that environment's Python;
# - the jar: examples/kotlin-consumer, a Maven project outside the package that depends on
#   org.unibus:unibus by its coordinates (installed in the local repository by `mvn install`),
#   builds examples/kotlin/Quickstart.kt and runs it in a JVM of its own;
# - the size budget: the native library in each package is stripped and under 8 MiB.
#
# membershipd and nats-server come from $UNIBUS_MEMBERSHIPD and $NATS_SERVER, or from
# target/debug/membershipd and .tools/bin/nats-server.
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -eq 2 ] || { echo "usage: scripts/check-packages.sh WHEEL JAR" >&2; exit 2; }
wheel=$1 jar=$2 repo=$PWD
membershipd=${UNIBUS_MEMBERSHIPD:-$PWD/target/debug/membershipd}
nats_server=${NATS_SERVER:-$PWD/.tools/bin/nats-server}
budget=$((8 * 1024 * 1024))

scratch=$(mktemp -d)
server_pid=
cleanup() {
  if [ -n "$server_pid" ]; then kill "$server_pid" 2>/dev/null || true; wait "$server_pid" 2>/dev/null || true; fi
  rm -rf "$scratch"
}
trap cleanup EXIT

# The quickstarts print these lines when their whole story ran (Python prints True, Kotlin true).
check_story() {
  local name=$1 output=$2
  for line in "epoch 1: member opened the owner's key: true" "epoch 2: member opened the owner's key: true" "epoch 3: member refused"; do
    if ! grep -qiF -- "$line" <<<"$output"; then
      echo "$name: the quickstart did not print \"$line\"; its output:" >&2
      echo "$output" >&2
      exit 1
    fi
  done
  sed -e 's/\x1b\[[0-9;]*m//g' -e 's/^/  | /' <<<"$output"  # (Maven's colour codes dropped)
  echo "$name: the quickstart ran its whole story"
}

echo "-- a real membershipd (SQLite and its own nats-server)"
data="$scratch/membershipd"
mkdir -p "$data"
"$membershipd" --data-dir "$data" --nats-server "$nats_server" \
  --listen 127.0.0.1:0 --nats-listen 127.0.0.1:0 serve >/dev/null 2>"$scratch/membershipd.log" &
server_pid=$!
public_url=
for _ in $(seq 1 3000); do
  kill -0 "$server_pid" 2>/dev/null || { echo "membershipd exited:" >&2; cat "$scratch/membershipd.log" >&2; exit 1; }
  public_url=$(python3 - "$data/serving.json" "$server_pid" <<'EOF' 2>/dev/null || true
import json, sys
serving = json.load(open(sys.argv[1]))
if serving["pid"] == int(sys.argv[2]):
    print(serving["public_url"])
EOF
)
  [ -n "$public_url" ] && break
  sleep 0.02
done
[ -n "$public_url" ] || { echo "membershipd did not serve within 60 s" >&2; exit 1; }
invite() {
  "$membershipd" --data-dir "$data" --public-url "$public_url" --json invite create |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["link"])'
}

echo "-- the wheel, installed with pip into a fresh virtual environment"
venv="$scratch/venv"
python3 -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-index "$wheel"
# Outside the repository, so that nothing but the installed package can be imported.
import_ms=$(cd "$scratch" && for _ in 1 2 3; do
  "$venv/bin/python" -c 'import time; t = time.perf_counter(); import unibus; print(round((time.perf_counter() - t) * 1000))'
done | sort -n | sed -n 2p)
output=$(cd "$scratch" && "$venv/bin/python" "$repo/examples/python/quickstart.py" "$(invite)" "$(invite)" 2>&1) ||
  { echo "$output" >&2; exit 1; }
check_story "pip install $(basename "$wheel")" "$output"

echo "-- the jar, used by coordinates from examples/kotlin-consumer"
output=$(mvn -B -ntp -q -Dstyle.color=never -f examples/kotlin-consumer/pom.xml package exec:exec \
  -Dquickstart.owner="$(invite)" -Dquickstart.member="$(invite)" 2>&1) ||
  { echo "$output" >&2; exit 1; }
check_story "org.unibus:unibus (kotlin-consumer)" "$output"

echo "-- sizes (budget: the stripped native library under 8 MiB)"
python3 - "$wheel" "$jar" "$budget" "$import_ms" <<'EOF'
import os, sys, zipfile

wheel, jar, budget, import_ms = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]

def native(path):
    with zipfile.ZipFile(path) as z:
        libs = [i for i in z.infolist() if i.filename.endswith((".so", ".dylib", ".dll"))]
    if not libs:
        raise SystemExit(f"no native library in {path}")
    return libs

def mib(n):
    return f"{n:>11,} B  {n / 2**20:5.2f} MiB"

rows = [("wheel", wheel), ("jar", jar)]
over = []
print(f"  {'what':<52} {'size':>26}")
for name, path in rows:
    for lib in native(path):
        label = f"{lib.filename} (in the {name})"
        print(f"  {label:<52} {mib(lib.file_size)}")
        if lib.file_size >= budget:
            over.append(label)
for name, path in rows:
    print(f"  {os.path.basename(path):<52} {mib(os.path.getsize(path))}")
for suffix in ("-sources.jar", "-javadoc.jar"):
    extra = jar[: -len(".jar")] + suffix
    if os.path.exists(extra):
        print(f"  {os.path.basename(extra):<52} {mib(os.path.getsize(extra))}")
print(f"  {'import unibus (fresh venv, median of 3 runs)':<52} {import_ms:>11} ms")
if over:
    raise SystemExit(f"over the 8 MiB budget: {', '.join(over)}")
print("packages: 2 passed, 0 failed")
EOF
