#!/usr/bin/env bash
# Benchmark of `snapscan inspect` against libguestfs' virt-inspector on the same disks, in the
# same run. Prints, per disk: snapscan's wall time (hyperfine, warm cache and cold cache) and
# bytes read, and virt-inspector's wall time (one run: it boots an appliance VM under TCG).
# Also shows that bytes read do not grow with the disk size (the same Debian root on a 2 GiB and
# a 64 GiB sparse disk). Not part of the test command: run it by hand, as root.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
for p in hyperfine libguestfs-tools time; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || need+=("$p")
done
if [ ${#need[@]} -gt 0 ]; then
    apt-get update -qq
    # Debian's qemu-system-x86 (pulled in by libguestfs) conflicts with a backported qemu-utils:
    # install the bookworm qemu-utils alongside it.
    qu=$(apt-cache policy qemu-utils | awk '/bookworm\/main/ {print prev} {prev=$1}' | head -n1)
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --allow-downgrades "${need[@]}" \
        ${qu:+qemu-utils=$qu} >/dev/null
fi

cargo build --release -q -p snapscan -p snapscan-tests --bin snapscan --bin fixture
bin=target/release/snapscan
mapfile -t disks < <(target/release/fixture debian-ext4-gpt windows-11 debian-lvm debian-ext4-gpt-64g)

export LIBGUESTFS_BACKEND=direct LIBGUESTFS_BACKEND_SETTINGS=force_tcg
printf '\n%-24s %12s %12s %12s %14s %16s\n' disk size "inspect(ms)" "cold(ms)" "bytes read" "virt-insp(ms)"
for d in "${disks[@]}"; do
    name=$(basename "$d" .img)
    size=$(stat -c %s "$d")
    json=$("$bin" inspect --json "$d")
    bytes=$(printf '%s' "$json" | python3 -c 'import json,sys; print(json.load(sys.stdin)["bytes_read"])')
    warm=$(hyperfine -N -w 3 -r 20 --export-json /dev/stdout "$bin inspect --json $d" 2>/dev/null |
        python3 -c 'import json,sys; print(round(json.load(sys.stdin)["results"][0]["median"]*1000,1))')
    cold=$(hyperfine -N -r 5 -p 'sync; echo 3 > /proc/sys/vm/drop_caches' --export-json /dev/stdout \
        "$bin inspect --json $d" 2>/dev/null |
        python3 -c 'import json,sys; print(round(json.load(sys.stdin)["results"][0]["median"]*1000,1))')
    start=$(date +%s%N)
    if virt-inspector -a "$d" --format=raw >/tmp/virt-inspector-"$name".xml 2>/tmp/virt-inspector-"$name".err; then
        vi=$(( ($(date +%s%N) - start) / 1000000 ))
    else
        vi="failed"
    fi
    printf '%-24s %12s %12s %12s %14s %16s\n' "$name" "$((size >> 20))M" "$warm" "$cold" "$bytes" "$vi"
done
