#!/usr/bin/env bash
# Short fuzzing run of every cargo-fuzz target in fuzz/, seeded with small real images made here
# by mkfs.ext4, mkfs.xfs, mkfs.btrfs, mkntfs, sgdisk and sfdisk, and a tiny registry hive written
# by Python. Fails on the first crash, leak or timeout found.
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

# A small hive: the root key, its subkey "Select" (an lh list) with a REG_DWORD and a REG_SZ.
python3 - "$seeds/hive" <<'HIVE'
import struct, sys
bins = bytearray(b"hbin" + bytes(28))
def cell(body):
    at = len(bins); size = (4 + len(body) + 7) // 8 * 8
    bins.extend(struct.pack("<i", -size) + body + bytes(size - 4 - len(body))); return at
def nk(name, subs, lst, nvals, vals):
    b = bytearray(0x4C); b[0:2] = b"nk"; b[2:4] = struct.pack("<H", 0x20)
    struct.pack_into("<IIIIII", b, 0x14, subs, 0, lst, 0xFFFFFFFF, nvals, vals)
    struct.pack_into("<II", b, 0x2C, 0xFFFFFFFF, 0xFFFFFFFF)
    struct.pack_into("<H", b, 0x48, len(name)); return cell(bytes(b) + name)
def vk(name, size, off, typ):
    return cell(b"vk" + struct.pack("<HIIIHH", len(name), size, off, typ, 1, 0) + name)
text = "Windows 10 Pro\0".encode("utf-16-le")
values = cell(struct.pack("<II", vk(b"Current", 0x80000004, 1, 4),
                          vk(b"ProductName", len(text), cell(text), 1)))
sub = nk(b"Select", 0, 0xFFFFFFFF, 2, values)
h = 0
for c in b"SELECT": h = (h * 37 + c) & 0xFFFFFFFF
root = nk(b"ROOT", 1, cell(b"lh" + struct.pack("<HII", 1, sub, h)), 0, 0xFFFFFFFF)
end = len(bins); bins.extend(bytes(4096 - end))
struct.pack_into("<i", bins, end, 4096 - end)  # the rest: one free cell
struct.pack_into("<I", bins, 8, len(bins))
base = bytearray(4096); base[0:4] = b"regf"
struct.pack_into("<IIQIIIIIII", base, 4, 1, 1, 0, 1, 5, 0, 1, root, len(bins), 1)
x = 0
for i in range(0, 0x1FC, 4): x ^= struct.unpack_from("<I", base, i)[0]
struct.pack_into("<I", base, 0x1FC, x)
open(sys.argv[1], "wb").write(bytes(base) + bytes(bins))
HIVE

targets=(partition_table probe ext4_rootfs xfs_rootfs btrfs_rootfs ntfs_rootfs rpm_header lvm
    metadata_inputs registry_hive image_qcow2 image_vmdk image_vhd image_vhdx image_gce_tarball)
for t in "${targets[@]}"; do mkdir -p "corpus/$t"; done
cp "$seeds/gpt.img" "$seeds/mbr.img" corpus/partition_table/
cp "$seeds/ext4.img" corpus/probe/
head -c 8192 "$seeds/ntfs.img" >corpus/probe/ntfs-head
cp "$seeds/ext4.img" corpus/ext4_rootfs/
cp "$seeds/xfs.img" corpus/xfs_rootfs/
cp "$seeds/btrfs.img" corpus/btrfs_rootfs/
cp "$seeds/ntfs.img" corpus/ntfs_rootfs/
cp "$seeds/hive" corpus/registry_hive/
# LVM text metadata; the label and area formats are found by the fuzzer from the unit tests' shapes.
printf 'vg0 {\nid = "x"\nseqno = 1\nextent_size = 8192\nlogical_volumes {\nroot {\nsegment_count = 1\nsegment1 {\nstart_extent = 0\nextent_count = 1\ntype = "striped"\nstripes = ["pv0", 0]\n}\n}\n}\n}\n' >corpus/lvm/text

# An assignment list and a disk list, as the metadata server gives them.
printf '[{"id":"a1","device_name":"disk-a","snapshot":"s","labels":{"k":"v"}},{"id":"a2"}]' \
    >corpus/metadata_inputs/assignments
printf '[{"deviceName":"disk-a","index":1,"mode":"READ_ONLY","type":"PERSISTENT"}]' \
    >corpus/metadata_inputs/disks

# Small images of each format, made by qemu-img from the GPT seed (with data) and by tar + gzip.
qemu-img convert -f raw -O qcow2 "$seeds/gpt.img" corpus/image_qcow2/plain
qemu-img convert -c -f raw -O qcow2 -o compat=0.10 "$seeds/ext4.img" corpus/image_qcow2/compressed-v2
qemu-img convert -f raw -O vmdk "$seeds/ext4.img" corpus/image_vmdk/sparse
qemu-img convert -f raw -O vmdk -o subformat=streamOptimized "$seeds/ext4.img" corpus/image_vmdk/stream
qemu-img convert -f raw -O vpc "$seeds/ext4.img" corpus/image_vhd/dynamic
qemu-img convert -f raw -O vpc -o subformat=fixed,force_size=on "$seeds/gpt.img" corpus/image_vhd/fixed
qemu-img convert -f raw -O vhdx -o block_size=1M,log_size=1M "$seeds/gpt.img" corpus/image_vhdx/plain
cp "$seeds/ext4.img" "$seeds/disk.raw"
tar --format=oldgnu -Sczf corpus/image_gce_tarball/disk.tar.gz -C "$seeds" disk.raw

# Inputs that once crashed a target run first, as regression tests.
for t in regressions/*/; do
    t=$(basename "$t")
    cp "regressions/$t"/* "corpus/$t/"
done

cargo fuzz build -O
log="$seeds/fuzz.log"
# The image targets write each input to a file under $TMPDIR: keep those with the seeds.
export TMPDIR="$seeds"
for t in "${targets[@]}"; do
    echo "--- fuzz $t for ${seconds}s"
    # XFS and Btrfs seeds are whole 16 MiB filesystems, a VHDX has a 1 MiB log and more; the
    # rest fit in 1 MiB.
    case $t in
    xfs_rootfs | btrfs_rootfs) max_len=$((16 << 20)) ;;
    image_vhdx) max_len=$((4 << 20)) ;;
    *) max_len=$((1 << 20)) ;;
    esac
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
