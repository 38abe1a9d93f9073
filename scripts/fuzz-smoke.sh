#!/usr/bin/env bash
# Short fuzzing run of every cargo-fuzz target in fuzz/, seeded with small real images made here
# by mkfs.ext4, mkfs.xfs, mkfs.btrfs, mkntfs, sgdisk and sfdisk. Fails on the first crash, leak or
# timeout found.
# Usage: scripts/fuzz-smoke.sh [SECONDS_PER_TARGET]   (longer runs: just pass a bigger number)
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
seconds="${1:-20}"
# cargo-fuzz passes -Z flags (sanitizers); the stable toolchain accepts them this way.
export RUSTC_BOOTSTRAP=1

seeds=$(mktemp -d)
trap 'rm -rf "$seeds"' EXIT
mkdir -p "$seeds/root/etc" "$seeds/root/usr/bin"
printf 'ID=debian\nVERSION_ID="12"\n' >"$seeds/root/etc/os-release"
echo seed-host >"$seeds/root/etc/hostname"
ln -s usr/bin "$seeds/root/bin"
ln -s /etc/os-release "$seeds/root/etc/abs-link"
ln -s ../../../etc "$seeds/root/usr/bin/up"

truncate -s 256K "$seeds/ext4.img"
mkfs.ext4 -q -b 1024 -N 32 -d "$seeds/root" "$seeds/ext4.img" 2>/dev/null
# The smallest XFS (16 MiB: mkfs.xfs allows it only under fstests' variables; empty) and Btrfs
# (filled).
truncate -s 16M "$seeds/xfs.img" "$seeds/btrfs.img"
TEST_DEV=1 TEST_DIR=1 QA_CHECK_FS=1 mkfs.xfs -q -f "$seeds/xfs.img"
mkfs.btrfs -q --mixed --rootdir "$seeds/root" "$seeds/btrfs.img" >/dev/null 2>&1
truncate -s 2M "$seeds/ntfs.img"
mkntfs -q -F -Q -s 512 -c 512 "$seeds/ntfs.img" >/dev/null 2>&1
echo "ID=windows-seed" >"$seeds/hello.txt"
ntfscp -q "$seeds/ntfs.img" "$seeds/hello.txt" /hello.txt
truncate -s 64K "$seeds/gpt.img"
sgdisk -q -a 1 -n 1:34:60 -n 2:61:100 "$seeds/gpt.img" >/dev/null
truncate -s 64K "$seeds/mbr.img"
printf 'label: dos\n1,20,c\n30,90,5\n31,20,83\n60,20,83\n' | sfdisk -q "$seeds/mbr.img" >/dev/null

targets=(partition_table probe ext4_rootfs xfs_rootfs btrfs_rootfs ntfs_rootfs rpm_header lvm metadata_inputs)
for t in "${targets[@]}"; do mkdir -p "corpus/$t"; done
cp "$seeds/gpt.img" "$seeds/mbr.img" corpus/partition_table/
cp "$seeds/ext4.img" corpus/probe/
head -c 8192 "$seeds/ntfs.img" >corpus/probe/ntfs-head
cp "$seeds/ext4.img" corpus/ext4_rootfs/
cp "$seeds/xfs.img" corpus/xfs_rootfs/
cp "$seeds/btrfs.img" corpus/btrfs_rootfs/
cp "$seeds/ntfs.img" corpus/ntfs_rootfs/
# LVM text metadata; the label and area formats are found by the fuzzer from the unit tests' shapes.
printf 'vg0 {\nid = "x"\nseqno = 1\nextent_size = 8192\nlogical_volumes {\nroot {\nsegment_count = 1\nsegment1 {\nstart_extent = 0\nextent_count = 1\ntype = "striped"\nstripes = ["pv0", 0]\n}\n}\n}\n}\n' >corpus/lvm/text

# An assignment list and a disk list, as the metadata server gives them.
printf '[{"id":"a1","device_name":"disk-a","snapshot":"s","labels":{"k":"v"}},{"id":"a2"}]' \
    >corpus/metadata_inputs/assignments
printf '[{"deviceName":"disk-a","index":1,"mode":"READ_ONLY","type":"PERSISTENT"}]' \
    >corpus/metadata_inputs/disks

# Inputs that once crashed a target run first, as regression tests.
for t in regressions/*/; do
    t=$(basename "$t")
    cp "regressions/$t"/* "corpus/$t/"
done

cargo fuzz build -O
log="$seeds/fuzz.log"
for t in "${targets[@]}"; do
    echo "--- fuzz $t for ${seconds}s"
    # XFS and Btrfs seeds are whole 16 MiB filesystems; the rest fit in 1 MiB.
    case $t in xfs_rootfs | btrfs_rootfs) max_len=$((16 << 20)) ;; *) max_len=$((1 << 20)) ;; esac
    if ! cargo fuzz run -O "$t" "corpus/$t" -- \
        -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -max_len="$max_len" \
        -print_final_stats=1 >"$log" 2>&1; then
        # The crashing input is saved under fuzz/artifacts/$t/.
        grep -E 'panicked|ERROR|SUMMARY|Test unit written' -A3 "$log" | head -n 40
        echo "fuzz target $t failed"
        exit 1
    fi
    grep -E '^(Done|stat::number_of_executed_units|stat::peak_rss_mb)' "$log"
done
