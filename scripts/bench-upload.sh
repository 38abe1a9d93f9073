#!/usr/bin/env bash
# Benchmark of `snapscan upload` against curl, both sending the same 2 GiB file to the fake QFlow
# receiver (tests/src/qflow.rs, run as the `qflow-receiver` binary) on 127.0.0.1. Prints, for
# each client, the median throughput of 3 runs and the peak RSS, then snapscan/curl. Goal:
# snapscan >= 90% of curl's throughput with a peak RSS < 64 MiB. The receiver hashes and writes
# each upload to disk (under the bench directory), then deletes it; the client and the receiver
# share the machine's cores, so the figures are for comparing the two clients, not absolute.
# The test file (random data, so compression cannot help) is cached in
# ${SNAPSCAN_BENCH_DIR:-/var/tmp/snapscan-bench}. Not part of the test command: run it by hand.
set -euo pipefail
cd "$(dirname "$0")/.."

# shellcheck source=apt-install.sh
. scripts/apt-install.sh
apt_install time >/dev/null

cargo build --release -q -p snapscan -p snapscan-tests --bin snapscan --bin qflow-receiver
bin=target/release/snapscan

bench_dir=${SNAPSCAN_BENCH_DIR:-/var/tmp/snapscan-bench}
mkdir -p "$bench_dir/receiver"
file=$bench_dir/upload-2g.bin
if [ ! -s "$file.sha256" ] || [ "$(stat -c %s "$file" 2>/dev/null || echo 0)" != 2147483648 ]; then
    echo "making $file (2 GiB of random data, once)" >&2
    rm -f "$file.sha256"
    head -c 2G /dev/urandom >"$file.tmp"
    mv "$file.tmp" "$file"
    sha256sum "$file" | cut -d' ' -f1 >"$file.sha256"
fi
sum=$(cat "$file.sha256")
cat "$file" >/dev/null # both clients start with the file in the page cache
size=$(stat -c %s "$file")

tmp=$(mktemp -d)
receiver_pid=
cleanup() {
    if [ -n "$receiver_pid" ]; then kill "$receiver_pid" 2>/dev/null || true; wait "$receiver_pid" 2>/dev/null || true; fi
    rm -rf "$tmp" "$bench_dir"/receiver/fake-qflow-*
}
trap cleanup EXIT

export QFLOW_TOKEN=bench-$RANDOM$RANDOM
# The receiver's temporary files go to the bench directory: /tmp may be small or in memory.
TMPDIR=$bench_dir/receiver target/release/qflow-receiver >"$tmp/url" 2>"$tmp/receiver.err" &
receiver_pid=$!
for _ in $(seq 50); do [ -s "$tmp/url" ] && break; sleep 0.1; done
url=$(head -n1 "$tmp/url")
[ -n "$url" ] || { echo "qflow-receiver did not start: $(cat "$tmp/receiver.err")" >&2; exit 1; }

# run NAME CMD...: one timed run; appends "seconds rss_kib" to $tmp/NAME.
run() {
    local name=$1; shift
    local start end
    start=$(date +%s%N)
    if ! /usr/bin/time -f %M -o "$tmp/rss" "$@" >"$tmp/out" 2>"$tmp/err"; then
        echo "$name failed: $(tail -n 3 "$tmp/err") $(tail -c 300 "$tmp/out")" >&2
        exit 1
    fi
    end=$(date +%s%N)
    echo "$(( end - start )) $(tail -n1 "$tmp/rss")" >>"$tmp/$name"
}

for i in 1 2 3; do
    run curl curl -sS -f -o /dev/null -H "Authorization: Bearer $QFLOW_TOKEN" \
        -F "file=@$file" -F "sha256=$sum" "$url"
    # The same with the hash computed in the timed run, as snapscan does (it hashes while sending).
    run curl_hash sh -c 'curl -sS -f -o /dev/null -H "Authorization: Bearer $QFLOW_TOKEN" \
        -F "file=@$1" -F "sha256=$(sha256sum "$1" | cut -d" " -f1)" "$2"' sh "$file" "$url"
    # One multipart request, like curl -F: chunking off for this comparison.
    SNAPSCAN_UPLOAD__QFLOW__CHUNK_THRESHOLD_BYTES=$((size + 1)) \
        run snapscan "$bin" upload --upload "$url" --field x=y --field "run=$i" "$file"
    # The default: 16 MiB parts (each hashed and retried alone), then a completion call.
    run chunked "$bin" upload --upload "$url" --field x=y --field "run=c$i" "$file"
done

# median NAME COLUMN: the median of the 3 runs' column (1: ns, 2: RSS KiB).
median() { cut -d' ' -f"$2" "$tmp/$1" | sort -n | sed -n 2p; }
mbps() { awk -v b="$size" -v ns="$1" 'BEGIN { printf "%.1f", b / 1e6 / (ns / 1e9) }'; }
curl_mbps=$(mbps "$(median curl 1)")
ours_mbps=$(mbps "$(median snapscan 1)")
curl_rss=$(( $(median curl 2) / 1024 ))
curl_hash_mbps=$(mbps "$(median curl_hash 1)")
ours_rss=$(( $(median snapscan 2) / 1024 ))
chunked_mbps=$(mbps "$(median chunked 1)")
chunked_rss=$(( $(median chunked 2) / 1024 ))
peak_rss=$(( $(cat "$tmp/snapscan" "$tmp/chunked" | cut -d' ' -f2 | sort -n | tail -n1) / 1024 ))
ratio=$(awk -v a="$ours_mbps" -v b="$curl_mbps" 'BEGIN { printf "%.0f", 100 * a / b }')

printf '\nupload of %s (%d bytes) to %s, median of 3 runs\n' "$file" "$size" "$url"
printf '%-10s %10s %14s\n' client "MB/s" "peak RSS(MiB)"
printf '%-10s %10s %14s   (sha256 field precomputed, outside the timing)\n' curl "$curl_mbps" "$curl_rss"
printf '%-10s %10s %14s   (sha256sum, then curl: the same work as snapscan)\n' curl+hash "$curl_hash_mbps" "-"
printf '%-10s %10s %14s\n' snapscan "$ours_mbps" "$ours_rss"
printf '%-10s %10s %14s   (16 MiB parts; max RSS of all snapscan runs: %s MiB)\n' chunked "$chunked_mbps" "$chunked_rss" "$peak_rss"
verdict() { if [ "$1" = 1 ]; then echo ok; else echo MISSED; fi; }
ratio_hash=$(awk -v a="$ours_mbps" -v b="$curl_hash_mbps" 'BEGIN { printf "%.0f", 100 * a / b }')
printf '\nsnapscan/(curl+hash) throughput: %s%%\n' "$ratio_hash"
printf 'snapscan/curl throughput: %s%%   goal >= 90%%: %s\n' "$ratio" \
    "$(verdict "$(( ratio >= 90 ))")"
printf 'snapscan peak RSS: %s MiB      goal < 64 MiB: %s\n' "$peak_rss" \
    "$(verdict "$(( peak_rss < 64 ))")"
