#!/usr/bin/env bash
# Benchmark of the work queue: scan requests through the real Pub/Sub emulator to 1 and 3 agents
# (each with its own fake VM: metadata server, Compute API attaching real loop devices), next to
# the same requests as metadata assignments of one agent (tests/src/bin/bench-queue.rs says
# what is measured). Prints requests per minute, publish->result times, messages and API calls
# per job.
#
# REQUESTS (default 12), DELAY_SCALE (default 0.25 of GCE's operation times).
# Run as root (loop devices, mounts), by hand: not part of the test command.
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" -eq 0 ] || { echo "run as root" >&2; exit 1; }
export SNAPSCAN_TEST_CACHE=${SNAPSCAN_TEST_CACHE:-/var/cache/snapscan-tests}
cargo build --release -q -p snapscan -p snapscan-tests --bin snapscan --bin bench-queue
target/release/bench-queue "$PWD/target/release/snapscan"
