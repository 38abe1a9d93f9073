#!/usr/bin/env bash
# Benchmark of `snapscan scan` with the built-in inventory scanner against libguestfs'
# virt-inspector (which also lists the installed applications) on the same disks, in the same
# run. Prints, per disk: snapscan's wall time (hyperfine: kernel mounts, and native parsing with
# kernel mounts disabled), its peak RSS and package count, and virt-inspector's wall time (one
# run: it boots an appliance VM under TCG) and application count. Not part of the test command:
# run it by hand, as root.
set -euo pipefail
cd "$(dirname "$0")/.."

. scripts/bench-deps.sh

cargo build --release -q -p snapscan -p snapscan-tests --bin snapscan --bin fixture
bin=$PWD/target/release/snapscan
mapfile -t disks < <(target/release/fixture debian-ext4-gpt debian-xfs-mbr debian-lvm windows-11)

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
median_ms() { python3 -c 'import json,sys; print(round(json.load(open(sys.argv[1]))["results"][0]["median"]*1000,1))' "$1"; }
printf '[scan]\nkernel_mounts = false\n' >"$tmp/native.toml"
printf '[scan]\nprefer = "kernel"\n' >"$tmp/kernel.toml"

export LIBGUESTFS_BACKEND=direct LIBGUESTFS_BACKEND_SETTINGS=force_tcg
printf '\n%-18s %10s %10s %9s %9s  %13s %9s\n' disk "kernel(ms)" "native(ms)" "RSS(KiB)" packages "virt-insp(ms)" "apps"
for d in "${disks[@]}"; do
    name=$(basename "$d" .img)
    hyperfine -N -w 1 -r 5 --export-json "$tmp/k.json" \
        "$bin scan --config $tmp/kernel.toml --output $tmp/out-k $d" >/dev/null 2>&1
    kernel=$(median_ms "$tmp/k.json")
    if hyperfine -N -w 1 -r 5 --export-json "$tmp/n.json" \
        "$bin scan --config $tmp/native.toml --output $tmp/out-n $d" >/dev/null 2>&1; then
        native=$(median_ms "$tmp/n.json")
    else
        native="n/a"
    fi
    /usr/bin/time -f '%M' -o "$tmp/rss" "$bin" scan --config "$tmp/kernel.toml" --output "$tmp/out-r" "$d" >/dev/null 2>&1 || true
    rss=$(cat "$tmp/rss")
    pkgs=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["scanner"]["packages"])' "$tmp/out-r/report.json")
    start=$(date +%s%N)
    if virt-inspector --format=raw -a "$d" >"$tmp/$name.xml" 2>"$tmp/$name.err"; then
        vi=$(( ($(date +%s%N) - start) / 1000000 ))
        apps=$(python3 -c 'import sys, xml.etree.ElementTree as ET; print(len(ET.parse(sys.argv[1]).getroot().findall(".//application")))' "$tmp/$name.xml")
    else
        vi="failed"; apps="-"
    fi
    printf '%-18s %10s %10s %9s %9s  %13s %9s\n' "${name%%.v*}" "$kernel" "$native" "$rss" "$pkgs" "$vi" "$apps"
done
