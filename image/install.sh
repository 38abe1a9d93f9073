#!/bin/sh
# Install snapscan into a scanner image: the one script every image builder runs (Packer's
# googlecompute and qemu sources, the VM test's debootstrap guest).
#
#   install.sh [--root DIR] [--binary PATH] [--qscanner PATH] [--no-packages]
#
#   --root DIR       install into the Debian tree DIR (a chroot) instead of /
#   --binary PATH    the snapscan binary (default: ./snapscan beside this script)
#   --qscanner PATH  a Qualys qscanner binary: installed as /opt/snapscan/bin/qscanner and made
#                    the default scanner (a drop-in, /etc/snapscan/agent.d/10-qscanner.toml).
#                    Without it the built-in inventory scanner runs.
#   --no-packages    do not apt-get the runtime packages (the tree already has them)
#
# It installs:
#   /usr/local/bin/snapscan
#   /etc/systemd/system/snapscan-agent.service (enabled)
#   /etc/snapscan/agent.toml (the commented defaults; an existing file is kept)
#   /etc/modules-load.d/snapscan.conf: sd_mod at boot, so that the unit's DeviceAllow=block-sd
#     finds the SCSI disk major even when no SCSI disk is attached yet (a VM that attaches its
#     disks later, booted from virtio or NVMe)
#   /etc/udev/rules.d/65-snapscan-gce-disk-naming.rules, only when Google's own rule (package
#     google-compute-engine / google-guest-configs) is absent: /dev/disk/by-id/google-<name>
#   runtime packages: ntfs-3g xfsprogs btrfs-progs lvm2 nvme-cli e2fsprogs util-linux
set -eu

here=$(cd "$(dirname "$0")" && pwd)
root=/
binary=$here/snapscan
qscanner=
packages=yes
while [ $# -gt 0 ]; do
    case $1 in
        --root) root=$2; shift 2 ;;
        --binary) binary=$2; shift 2 ;;
        --qscanner) qscanner=$2; shift 2 ;;
        --no-packages) packages=no; shift ;;
        -h|--help) sed -n '2,22p' "$0"; exit 0 ;;
        *) echo "install.sh: unknown argument '$1'" >&2; exit 2 ;;
    esac
done
[ "$(id -u)" -eq 0 ] || { echo "install.sh: run as root" >&2; exit 1; }
[ -x "$binary" ] || { echo "install.sh: no executable snapscan at '$binary'" >&2; exit 1; }
unit=$here/../systemd/snapscan-agent.service
[ -f "$unit" ] || unit=$here/snapscan-agent.service
[ -f "$unit" ] || { echo "install.sh: snapscan-agent.service not found" >&2; exit 1; }

in_root() {
    if [ "$root" = / ]; then "$@"; else chroot "$root" "$@"; fi
}

if [ "$packages" = yes ]; then
    in_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    in_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        ntfs-3g xfsprogs btrfs-progs lvm2 nvme-cli e2fsprogs util-linux >/dev/null
fi

install -D -m 0755 "$binary" "$root/usr/local/bin/snapscan"
install -D -m 0644 "$unit" "$root/etc/systemd/system/snapscan-agent.service"
install -d -m 0755 "$root/etc/snapscan" "$root/etc/snapscan/agent.d"
[ -e "$root/etc/snapscan/agent.toml" ] ||
    install -m 0644 "$here/agent.toml" "$root/etc/snapscan/agent.toml"

if [ -n "$qscanner" ]; then
    install -D -m 0755 "$qscanner" "$root/opt/snapscan/bin/qscanner"
    cat >"$root/etc/snapscan/agent.d/10-qscanner.toml" <<'EOF'
# Written by image/install.sh --qscanner: qscanner is the default scanner of this image.
[scan]
scanner = "qscanner"
scanner_search_path = ["/opt/snapscan/bin", "/usr/local/bin", "/usr/bin", "/bin"]
EOF
fi

google_rule=
for d in /usr/lib/udev/rules.d /lib/udev/rules.d /etc/udev/rules.d; do
    [ -e "$root$d/65-gce-disk-naming.rules" ] && google_rule=$d
done
if [ -z "$google_rule" ]; then
    install -D -m 0644 "$here/65-snapscan-gce-disk-naming.rules" \
        "$root/etc/udev/rules.d/65-snapscan-gce-disk-naming.rules"
fi

# systemd resolves DeviceAllow=block-sd from /proc/devices when the unit starts: without the
# driver loaded by then, every SCSI disk attached later is refused (EPERM on open).
install -D -m 0644 /dev/null "$root/etc/modules-load.d/snapscan.conf"
printf '# snapscan-agent.service allows block-sd: the SCSI disk driver must be loaded first.\nsd_mod\n' \
    >"$root/etc/modules-load.d/snapscan.conf"

# Enable without a running systemd (works in a chroot too).
install -d "$root/etc/systemd/system/multi-user.target.wants"
ln -sf /etc/systemd/system/snapscan-agent.service \
    "$root/etc/systemd/system/multi-user.target.wants/snapscan-agent.service"

# Check what was installed: the binary runs and the configuration is valid.
# The secrets (token, scanner credentials) arrive at boot, not at bake time.
in_root /usr/local/bin/snapscan config check --no-secrets >/dev/null
echo "snapscan installed into $root"
