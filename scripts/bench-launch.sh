#!/usr/bin/env bash
# Benchmark of the thin-launcher path: `snapscan launch --instance VM --wait` through the fake
# Compute API with GCE-typical operation times, the agent making, scanning and deleting its own
# disk and then itself (tests/src/bin/bench-launch.rs says what is measured). Prints the
# launch-to-acknowledged latency and the agent's own overhead per job, next to a one-shot
# `snapscan scan --upload` of the same disk.
#
# RUNS (default 3), DELAY_SCALE (default 1: GCE's figures), BOOT_SECS (default 25).
# Run as root (loop devices, mounts), by hand: not part of the test command.
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" -eq 0 ] || { echo "run as root" >&2; exit 1; }
export SNAPSCAN_TEST_CACHE=${SNAPSCAN_TEST_CACHE:-/var/cache/snapscan-tests}
cargo build --release -q -p snapscan -p snapscan-tests --bin snapscan --bin bench-launch
target/release/bench-launch "$PWD/target/release/snapscan"
