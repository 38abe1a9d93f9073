#!/usr/bin/env bash
# Benchmark of `snapscan agent` against the fake metadata server and QFlow receiver of the tests
# (run as the `metadata-server` and `qflow-receiver` binaries). Prints:
#
# 1. Idle cost: the agent watching the metadata server with nothing assigned for IDLE_SECS
#    (default 600): peak RSS and CPU time, next to the usual shell alternative run at the same
#    time (a bash loop of `curl ...?wait_for_change=true&last_etag=...` on the attributes
#    directory, against its own server), and the metadata requests each made (hanging watches:
#    about one per directory a minute, not polling).
# 2. Latency: from the assignment written to the metadata server to the SBOM acknowledged by the
#    receiver, for the Debian fixture (debian-ext4-gpt) attached as a GCE-style disk (read-only
#    loop device, google-<name> link, serial in a private sysfs tree); median of RUNS (default
#    5), next to a one-shot `snapscan scan --upload` of the same device (no metadata, no
#    journal: the floor).
#
# Run as root (loop devices, mounts), by hand: not part of the test command.
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" -eq 0 ] || { echo "run as root" >&2; exit 1; }

IDLE_SECS=${IDLE_SECS:-600}
RUNS=${RUNS:-5}
# shellcheck source=bench-deps.sh
. scripts/bench-deps.sh
cargo build --release -q -p snapscan -p snapscan-tests \
    --bin snapscan --bin metadata-server --bin qflow-receiver --bin fixture
export SNAPSCAN_TEST_CACHE=${SNAPSCAN_TEST_CACHE:-/var/cache/snapscan-tests}
image=$(target/release/fixture debian-ext4-gpt | tail -n1)
bin=$PWD/target/release/snapscan

tmp=$(mktemp -d)
pids=()
loop=
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    # snapscan set the device read-only (BLKROSET); on a loop device that outlives the binding.
    [ -z "$loop" ] || { blockdev --setrw "$loop"; losetup -d "$loop"; } 2>/dev/null || true
    rm -rf "$tmp"
}
trap cleanup EXIT

export QFLOW_TOKEN=bench-$RANDOM$RANDOM
target/release/qflow-receiver >"$tmp/qflow.url" 2>"$tmp/qflow.err" &
pids+=($!)
mkfifo "$tmp/md.in"
target/release/metadata-server --disk disk-a:ro --log-requests <"$tmp/md.in" >"$tmp/md.url" \
    2>"$tmp/md.log" &
pids+=($!)
exec 3>"$tmp/md.in" # keeps the server's stdin open: one KEY=VALUE line sets an attribute
# A second server for the shell loop, so that each watcher's requests can be counted.
target/release/metadata-server --log-requests </dev/null >"$tmp/md2.url" 2>"$tmp/md2.log" &
pids+=($!)
for _ in $(seq 100); do
    [ -s "$tmp/md.url" ] && [ -s "$tmp/md2.url" ] && [ -s "$tmp/qflow.url" ] && break
    sleep 0.1
done
md_url=$(head -n1 "$tmp/md.url")
md2_url=$(head -n1 "$tmp/md2.url")
qflow_url=$(head -n1 "$tmp/qflow.url")

# The disk, as GCE shows it to the agent.
loop=$(losetup --find --show --read-only "$image")
k=$(basename "$loop")
mkdir -p "$tmp/by-id" "$tmp/sys/block/$k/device"
ln -s "$loop" "$tmp/by-id/google-disk-a"
printf '\x00\x80\x00\x06disk-a' >"$tmp/sys/block/$k/device/vpd_pg80"
echo 1 >"$tmp/sys/block/$k/ro"

cat >"$tmp/agent.toml" <<EOF
[agent]
state_dir = "$tmp/state"
by_id_dir = "$tmp/by-id"
sys_dir = "$tmp/sys"
[metadata]
url = "$md_url"
[scan]
work_dir = "$tmp/work"
[upload]
sink = "qflow"
[upload.qflow]
url = "$qflow_url"
EOF
cat >"$tmp/watch.sh" <<EOF
#!/bin/bash
# What a shell script would do: hang on the directory, act on a new ETag.
etag=0
while :; do
    h=\$(curl -s -D - -o /dev/null -H 'Metadata-Flavor: Google' \
        "$md2_url/computeMetadata/v1/instance/attributes/?recursive=true&wait_for_change=true&last_etag=\$etag&timeout_sec=60")
    etag=\$(printf '%s' "\$h" | tr -d '\r' | awk -F': ' 'tolower(\$1)=="etag" {print \$2}')
    [ -n "\$etag" ] || { etag=0; sleep 1; }
done
EOF
chmod +x "$tmp/watch.sh"

echo "== idle: ${IDLE_SECS} s of watching, nothing assigned"
/usr/bin/time -f "%M %U %S" -o "$tmp/agent.time" \
    timeout -s TERM "$IDLE_SECS" "$bin" agent --config "$tmp/agent.toml" 2>"$tmp/agent-idle.log" &
a=$!
/usr/bin/time -f "%M %U %S" -o "$tmp/watch.time" timeout -s TERM "$IDLE_SECS" "$tmp/watch.sh" &
w=$!
wait "$a" || true
wait "$w" || true
sleep 0.5 # the servers print their request logs every 200 ms
a_req=$(grep -c . "$tmp/md.log" || true)
w_req=$(grep -c . "$tmp/md2.log" || true)
# GNU time writes "Command exited with non-zero status 124" first (timeout's code).
read -r a_rss a_u a_s < <(tail -n1 "$tmp/agent.time")
read -r w_rss w_u w_s < <(tail -n1 "$tmp/watch.time")
row() { # name rss_kib user sys requests
    awk -v n="$1" -v r="$2" -v u="$3" -v s="$4" -v q="$5" -v t="$IDLE_SECS" \
        'BEGIN { printf "%-32s %8.1f MiB %9.2f s %8.3f%% %9d\n", n, r/1024, u+s, (u+s)*100/t, q }'
}
printf '%-32s %12s %11s %9s %9s\n' "watcher" "peak RSS" "CPU (u+s)" "CPU %" "requests"
row "snapscan agent (2 directories)" "$a_rss" "$a_u" "$a_s" "$a_req"
row "bash+curl loop (1 directory)" "$w_rss" "$w_u" "$w_s" "$w_req"
echo "(bash+curl: peak RSS is its largest single process; its CPU includes every curl)"

echo
echo "== latency: assignment written -> SBOM acknowledged (debian-ext4-gpt, ${RUNS} runs)"
"$bin" agent --config "$tmp/agent.toml" 2>"$tmp/agent.log" &
agent=$!
pids+=($agent)
sleep 2
lat=()
for i in $(seq "$RUNS"); do
    id=bench-$i-$RANDOM
    start=$(date +%s%N)
    echo "snapscan-assignments=[{\"id\":\"$id\",\"device_name\":\"disk-a\",\"snapshot\":\"snap-$i\"}]" >&3
    journal=$tmp/state/jobs/$id/job.json
    until [ -f "$journal" ] && grep -q '"state": "\(uploaded\|done\|failed\)"' "$journal"; do
        sleep 0.002
    done
    end=$(date +%s%N)
    grep -q '"state": "failed"' "$journal" && { echo "job failed: $(cat "$journal")" >&2; exit 1; }
    lat+=("$(( (end - start) / 1000000 ))")
    sleep 0.5 # the next list replaces this one; the finished job is not redone
done
kill -TERM "$agent"; wait "$agent" || true
one=()
for i in $(seq "$RUNS"); do
    start=$(date +%s%N)
    "$bin" scan --config "$tmp/agent.toml" --output "$tmp/one-$i" --upload "$qflow_url" \
        --snapshot "one-$i" "$loop" >/dev/null
    end=$(date +%s%N)
    one+=("$(( (end - start) / 1000000 ))")
done
median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
echo "agent, assignment -> acknowledged:  median $(median "${lat[@]}") ms  (runs: ${lat[*]})"
echo "snapscan scan --upload (one-shot):  median $(median "${one[@]}") ms  (runs: ${one[*]})"
