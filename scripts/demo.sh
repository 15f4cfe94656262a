#!/usr/bin/env bash
# Runs the unibus demo on this machine (see examples/demo.rs).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cargo run --quiet --example demo
