#!/usr/bin/env bash
# Benchmark of `snapscan inspect` against libguestfs' virt-inspector on the same disks, in the
# same run. Prints, per disk: snapscan's wall time (hyperfine, warm cache and cold cache) and
# bytes read, and virt-inspector's wall time (one run: it boots an appliance VM under TCG).
# Also shows that bytes read do not grow with the disk size (the same Debian root on a 2 GiB and
# a 64 GiB sparse disk). Cold-cache runs drop the page cache before each run. Not part of the
# test command: run it by hand, as root.
set -euo pipefail
cd "$(dirname "$0")/.."

. scripts/bench-deps.sh

cargo build --release -q -p snapscan -p snapscan-tests --bin snapscan --bin fixture
bin=target/release/snapscan
mapfile -t disks < <(target/release/fixture debian-ext4-gpt windows-11 debian-lvm debian-ext4-gpt-64g)

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
median_ms() { python3 -c 'import json,sys; print(round(json.load(open(sys.argv[1]))["results"][0]["median"]*1000,1))' "$1"; }

export LIBGUESTFS_BACKEND=direct LIBGUESTFS_BACKEND_SETTINGS=force_tcg
printf '\n%-22s %8s %11s %9s %11s  %-22s %13s  %s\n' disk size "inspect(ms)" "cold(ms)" "bytes read" "snapscan OS" "virt-insp(ms)" "virt-inspector OS"
for d in "${disks[@]}"; do
    name=$(basename "$d" .img)
    size=$(stat -c %s "$d")
    json=$("$bin" inspect --json "$d")
    bytes=$(printf '%s' "$json" | python3 -c 'import json,sys; print(json.load(sys.stdin)["bytes_read"])')
    hyperfine -N -w 3 -r 20 --export-json "$tmp/warm.json" "$bin inspect --json $d" >/dev/null 2>&1
    hyperfine -r 5 -p 'sync; echo 3 > /proc/sys/vm/drop_caches' --export-json "$tmp/cold.json" \
        "$bin inspect --json $d" >/dev/null 2>&1
    warm=$(median_ms "$tmp/warm.json")
    cold=$(median_ms "$tmp/cold.json")
    start=$(date +%s%N)
    if virt-inspector --format=raw -a "$d" >"$tmp/$name.xml" 2>"$tmp/$name.err"; then
        vi=$(( ($(date +%s%N) - start) / 1000000 ))
    else
        vi="failed: $(tail -n 1 "$tmp/$name.err")"
    fi
    ours=$(printf '%s' "$json" | python3 -c 'import json,sys; o=json.load(sys.stdin)["os"]; print(" ".join(str(o[k]) for k in ("id", "version_id", "hostname")) if o else "none")')
    theirs=$(python3 - "$tmp/$name.xml" <<'PY' 2>/dev/null || echo "?"
import sys, xml.etree.ElementTree as ET
oses = ET.parse(sys.argv[1]).getroot().findall("operatingsystem")
print("; ".join(f'{o.findtext("distro")} {o.findtext("major_version")} {o.findtext("hostname")}' for o in oses) or "none")
PY
)
    printf '%-22s %8s %11s %9s %11s  %-22s %13s  %s\n' "${name%%.v*}" "$((size >> 20))M" "$warm" "$cold" "$bytes" "$ours" "$vi" "$theirs"
done
