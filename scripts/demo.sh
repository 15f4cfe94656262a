#!/usr/bin/env bash
# Runs the unibus demo on this machine: membershipd on the embedded default, two people
# redeeming invites with the client SDK, a room, a rekey, a key opened,
# messages sent and read (server/examples/demo.rs).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cargo build --quiet -p unibus-server --bin membershipd
cargo run --quiet -p unibus-server --example demo
