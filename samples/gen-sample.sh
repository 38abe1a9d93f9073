#!/usr/bin/env bash
# Regenerates samples/debian-mini.img, the sample disk the README's quick start inspects
# (`snapscan inspect samples/debian-mini.img`).
#
# The disk: 8 MiB, GPT, partition 1 an EFI system partition (vfat, label "EFI", 2 MiB),
# partition 2 a Linux root (ext4, label "root", 4 MiB) holding a tiny Debian-12-like root:
# usr/lib/os-release with etc/os-release -> ../usr/lib/os-release, etc/hostname "sample-vm",
# etc/debian_version, usr-merge symlinks (bin -> usr/bin, ...), usr/bin/true as a
# generated x86_64 ELF header (for architecture detection) and var/lib/dpkg/status with a few
# package stanzas as Debian writes them. It is not bootable.
#
# Needs no root: the filesystems are made in files (mkfs.vfat, mkfs.ext4 -d), the table is
# written with sgdisk on the image file, and dd copies the filesystems in. Run as root, the files
# are owned by root as on a real system; otherwise by the invoking user. Identifiers and
# timestamps are fixed so that rerunning it on the same machine gives the same bytes.
#
# Tools: e2fsprogs (mkfs.ext4, debugfs), dosfstools (mkfs.vfat), gdisk (sgdisk), coreutils.
set -euo pipefail

cd "$(dirname "$0")"
export PATH="$PATH:/usr/sbin:/sbin"
export LC_ALL=C

OUT=debian-mini.img
MIB=$((1024 * 1024))
ESP_MIB=2
ROOT_MIB=4
DISK_MIB=$((1 + ESP_MIB + ROOT_MIB + 1)) # GPT before, backup GPT after
EPOCH=1704067200                          # 2024-01-01T00:00:00Z, for every timestamp

for tool in mkfs.ext4 debugfs mkfs.vfat sgdisk dd; do
    command -v "$tool" >/dev/null || {
        echo "gen-sample.sh: $tool not found (apt-get install e2fsprogs dosfstools gdisk)" >&2
        exit 1
    }
done

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
root="$work/root"

mkdir -p "$root"/{etc,usr/bin,usr/sbin,usr/lib,usr/lib64,var/lib/dpkg,var/log,tmp,root,home}
ln -s usr/bin "$root/bin"
ln -s usr/sbin "$root/sbin"
ln -s usr/lib "$root/lib"
ln -s usr/lib64 "$root/lib64"

cat >"$root/usr/lib/os-release" <<'EOF'
PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"
NAME="Debian GNU/Linux"
VERSION_ID="12"
VERSION="12 (bookworm)"
VERSION_CODENAME=bookworm
ID=debian
HOME_URL="https://www.debian.org/"
SUPPORT_URL="https://www.debian.org/support"
BUG_REPORT_URL="https://bugs.debian.org/"
EOF
ln -s ../usr/lib/os-release "$root/etc/os-release"
echo "sample-vm" >"$root/etc/hostname"
echo "12.5" >"$root/etc/debian_version"
cat >"$root/etc/fstab" <<'EOF'
# <file system> <mount point> <type> <options> <dump> <pass>
LABEL=root      /               ext4   errors=remount-ro 0 1
LABEL=EFI       /boot/efi       vfat   umask=0077        0 1
EOF

# A minimal ELF64 little-endian header for x86-64 (e_machine 62): enough for architecture
# detection, and no third-party binary in the repository.
{
    printf '\177ELF\002\001\001\000\000\000\000\000\000\000\000\000' # e_ident
    printf '\002\000\076\000\001\000\000\000'                           # ET_EXEC, EM_X86_64, EV_CURRENT
    head -c 40 /dev/zero                                                   # rest of the header
} >"$root/usr/bin/true"
chmod 0755 "$root/usr/bin/true"

cat >"$root/var/lib/dpkg/status" <<'EOF'
Package: base-files
Essential: yes
Status: install ok installed
Priority: required
Section: admin
Installed-Size: 341
Maintainer: Santiago Vila <sanvila@debian.org>
Architecture: amd64
Multi-Arch: foreign
Version: 12.4+deb12u5
Replaces: base, dpkg (<= 1.15.0), miscutils
Provides: base
Pre-Depends: awk
Description: Debian base system miscellaneous files
 This package contains the basic filesystem hierarchy of a Debian system, and
 several important miscellaneous files, such as /etc/debian_version,
 /etc/host.conf, /etc/issue, /etc/motd, /etc/profile, and others,
 and the text of several common licenses in use on Debian systems.

Package: bash
Essential: yes
Status: install ok installed
Priority: required
Section: shells
Installed-Size: 7164
Maintainer: Matthias Klose <doko@debian.org>
Architecture: amd64
Multi-Arch: foreign
Source: bash (5.2.15-2)
Version: 5.2.15-2+b2
Replaces: bash-completion (<< 20060301-0), bash-doc (<= 2.05-1)
Depends: base-files (>= 2.1.12), debianutils (>= 5.6-0.1)
Pre-Depends: libc6 (>= 2.36), libtinfo6 (>= 6)
Recommends: bash-completion (>= 20060301-0)
Suggests: bash-doc
Conflicts: bash-completion (<< 20060301-0)
Description: GNU Bourne Again SHell
 Bash is an sh-compatible command language interpreter that executes
 commands read from the standard input or from a file.
Homepage: http://tiswww.case.edu/php/chet/bash/bashtop.html

Package: coreutils
Essential: yes
Status: install ok installed
Priority: required
Section: utils
Installed-Size: 18062
Maintainer: Michael Stone <mstone@debian.org>
Architecture: amd64
Multi-Arch: foreign
Version: 9.1-1
Pre-Depends: libacl1 (>= 2.2.23), libattr1 (>= 1:2.4.44), libc6 (>= 2.34), libgmp10 (>= 2:6.2.1+dfsg1), libselinux1 (>= 3.1~)
Description: GNU core utilities
 This package contains the basic file, shell and text manipulation
 utilities which are expected to exist on every operating system.
Homepage: http://gnu.org/software/coreutils

Package: libc6
Status: install ok installed
Priority: optional
Section: libs
Installed-Size: 13001
Maintainer: GNU Libc Maintainers <debian-glibc@lists.debian.org>
Architecture: amd64
Multi-Arch: same
Source: glibc
Version: 2.36-9+deb12u4
Replaces: libc6-amd64
Depends: libgcc-s1
Recommends: libidn2-0 (>= 2.0.5~)
Suggests: glibc-doc, debconf | debconf-2.0, libc-l10n, locales, libnss-nis, libnss-nisplus
Description: GNU C Library: Shared libraries
 Contains the standard libraries that are used by nearly all programs on
 the system. This package includes shared versions of the standard C library
 and the standard math library, as well as many others.
Homepage: https://www.gnu.org/software/libc/libc.html

Package: openssl
Status: install ok installed
Priority: optional
Section: utils
Installed-Size: 2293
Maintainer: Debian OpenSSL Team <pkg-openssl-devel@alioth-lists.debian.net>
Architecture: amd64
Version: 3.0.11-1~deb12u2
Depends: libc6 (>= 2.34), libssl3 (>= 3.0.9)
Suggests: ca-certificates
Description: Secure Sockets Layer toolkit - cryptographic utility
 This package is part of the OpenSSL project's implementation of the SSL
 and TLS cryptographic protocols for secure communication over the
 Internet.
Homepage: https://www.openssl.org/

EOF

# Fixed timestamps for every file, directory and symlink.
find "$root" -exec touch -h -d "@$EPOCH" {} +

esp="$work/esp.fs"
rootfs="$work/root.fs"
truncate -s $((ESP_MIB * MIB)) "$esp"
mkfs.vfat -n EFI --invariant "$esp" >/dev/null
truncate -s $((ROOT_MIB * MIB)) "$rootfs"
E2FSPROGS_FAKE_TIME=$EPOCH mkfs.ext4 -q -F -L root \
    -U 5a5a0003-0000-4000-8000-000000000003 -E hash_seed=5a5a0004-0000-4000-8000-000000000004 \
    -d "$root" "$rootfs"
# mkfs.ext4 -d copies each file's ctime, which touch cannot set: pin it afterwards.
(cd "$root" && find . -printf '%P\n') | while read -r path; do
    echo "set_inode_field /$path ctime @$EPOCH"
done >"$work/ctime.debugfs"
E2FSPROGS_FAKE_TIME=$EPOCH debugfs -w -f "$work/ctime.debugfs" "$rootfs" >/dev/null 2>"$work/debugfs.log" || {
    cat "$work/debugfs.log" >&2
    exit 1
}

disk="$work/disk.img"
truncate -s $((DISK_MIB * MIB)) "$disk"
esp_first=$((1 * MIB / 512))
root_first=$(((1 + ESP_MIB) * MIB / 512))
sgdisk --clear \
    --disk-guid=5A5A0000-0000-4000-8000-000000000000 \
    --new=1:$esp_first:$((root_first - 1)) --typecode=1:ef00 --change-name=1:"EFI System" \
    --partition-guid=1:5A5A0001-0000-4000-8000-000000000001 \
    --new=2:$root_first:$((root_first + ROOT_MIB * MIB / 512 - 1)) --typecode=2:8304 \
    --change-name=2:root --partition-guid=2:5A5A0002-0000-4000-8000-000000000002 \
    "$disk" >/dev/null
dd if="$esp" of="$disk" bs=1M seek=1 conv=notrunc,sparse status=none
dd if="$rootfs" of="$disk" bs=1M seek=$((1 + ESP_MIB)) conv=notrunc,sparse status=none

mv "$disk" "$OUT"
echo "wrote samples/$OUT ($DISK_MIB MiB)"
