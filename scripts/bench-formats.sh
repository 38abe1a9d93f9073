#!/usr/bin/env bash
# Benchmark of scanning VM image files directly against the raw disk with the same contents, and
# against what users do without snapscan's readers: `qemu-img convert -O raw`, then scan the raw
# disk. The benchmark Debian disk (2 GiB, ext4, 88 packages) is written in every format by
# qemu-img and tar. Per format it prints the file size; `snapscan scan` (built-in inventory,
# native) median wall time with a warm cache; with a cold cache (caches dropped) wall time, bytes
# read from storage and peak RSS; cold, an external scanner that walks the whole mounted tree
# (`find`, reading every directory: for an image file the tree is mounted through snapscan's FUSE
# file and a loop device); and, cold, qemu-img convert + scan of the raw result. Trivy's
# `trivy vm` (VMDK and raw only) runs on the same files as the peer. Not part of the test command:
# run it by hand, as root.
set -euo pipefail
cd "$(dirname "$0")/.."

. scripts/bench-deps.sh

trivy=$(trivy_bin)

cargo build --release -q -p snapscan -p snapscan-tests --bin snapscan --bin fixture
bin=$PWD/target/release/snapscan
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
raw=$(target/release/fixture debian-ext4-gpt)
mapfile -t variants < <(target/release/fixture --formats debian-ext4-gpt "$tmp")
printf '[scan]\nwork_dir = "%s/work"\nprefer = "native"\n' "$tmp" >"$tmp/native.toml"
cat >"$tmp/tree.toml" <<TOML
[scan]
work_dir = "$tmp/work"
scanner = "walk"
[scanner.profiles.walk]
command = ["/bin/sh", "-c", "find \\"\$0\\" -xdev | wc -l > files.txt", "{mount}"]
outputs = ["files.txt"]
TOML
median_ms() { python3 -c 'import json,sys; print(round(json.load(open(sys.argv[1]))["results"][0]["median"]*1000))' "$1"; }
drop() { sync; echo 3 >/proc/sys/vm/drop_caches; }
# Cold run of a command: "wall_ms read_MiB peak_rss_KiB" (read: file system inputs, 512 B each).
cold() {
    drop
    /usr/bin/time -f '%e %I %M' -o "$tmp/t" "$@" >/dev/null 2>&1 || true
    python3 -c 'import sys; e,i,m=open(sys.argv[1]).read().split()[-3:]; print(round(float(e)*1000), round(int(i)*512/2**20,1), m)' "$tmp/t"
}
scan() { rm -rf "$tmp/out"; "$bin" scan --config "$tmp/native.toml" --output "$tmp/out" "$1"; }
walk() { rm -rf "$tmp/walk"; "$bin" scan --config "$tmp/tree.toml" --output "$tmp/walk" "$1"; }
export -f scan walk
export bin tmp

printf '\n%-18s %9s %9s %9s %10s %9s %12s %15s %12s\n' format "file MiB" "warm ms" "cold ms" "read MiB" "RSS KiB" "tree walk ms" "convert+scan ms" "trivy vm ms"
for entry in "raw $raw" "${variants[@]}"; do
    name=${entry%% *}
    path=${entry#* }
    size=$(du -m --apparent-size "$path" | cut -f1)
    hyperfine -N -w 1 -r 5 --export-json "$tmp/h.json" "bash -c 'scan $path'" >/dev/null 2>&1
    warm=$(median_ms "$tmp/h.json")
    read -r cold_ms read_mib rss < <(cold bash -c "scan $path")
    packages=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["scanner"]["packages"])' "$tmp/out/report.json")
    read -r walk_ms _ _ < <(cold bash -c "walk $path")
    entries=$(cat "$tmp/walk/files.txt" 2>/dev/null || echo failed)
    if [ "$name" = raw ]; then
        convert=-
    else
        drop
        start=$(date +%s%N)
        case $name in *.tar.gz) tar -xSzf "$path" -C "$tmp" disk.raw && mv "$tmp/disk.raw" "$tmp/conv.raw" ;;
            *) qemu-img convert -O raw "$path" "$tmp/conv.raw" ;; esac
        scan "$tmp/conv.raw" >/dev/null 2>&1
        convert=$(( ($(date +%s%N) - start) / 1000000 ))
        rm -f "$tmp/conv.raw"
    fi
    case $name in raw | *.vmdk)
        drop
        start=$(date +%s%N)
        "$trivy" vm --format json --list-all-pkgs --scanners license --skip-db-update --offline-scan \
            --cache-dir "$tmp/trivy-cache" -q -o "$tmp/trivy.json" "$path" >/dev/null 2>&1 || true
        trivy_ms=$(( ($(date +%s%N) - start) / 1000000 ))
        rm -rf "$tmp/trivy-cache" ;;
        *) trivy_ms=- ;;
    esac
    printf '%-18s %9s %9s %9s %10s %9s %12s %15s %12s   (%s packages, %s entries)\n' "$name" "$size" "$warm" "$cold_ms" "$read_mib" "$rss" "$walk_ms" "$convert" "$trivy_ms" "$packages" "$entries"
done
