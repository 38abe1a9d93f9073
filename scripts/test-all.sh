#!/usr/bin/env bash
# The one command that runs every check snapscan has, as CI runs it (root, Debian 12):
# installs the Debian packages the tests need, builds everything, then runs format and lint
# checks, all unit and end-to-end tests, and a short fuzzing smoke run of every fuzz target.
#
# Fixture images (debootstrap output included) are cached in $SNAPSCAN_TEST_CACHE
# (default /var/cache/snapscan-tests) so later runs skip building them.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" -ne 0 ]; then
    echo "scripts/test-all.sh must run as root (loop devices, mounts, package installs)" >&2
    exit 1
fi

export SNAPSCAN_TEST_CACHE="${SNAPSCAN_TEST_CACHE:-/var/cache/snapscan-tests}"
export CARGO_TERM_COLOR=never
# Under CI a test whose tool or privilege is missing fails instead of skipping itself.
export CI="${CI:-true}"
FUZZ_SECONDS="${FUZZ_SECONDS:-20}"

step() { printf '\n=== %s\n' "$*"; }

step "Debian packages"
# shellcheck source=apt-install.sh
. scripts/apt-install.sh
apt_install e2fsprogs xfsprogs btrfs-progs dosfstools exfatprogs ntfs-3g gdisk fdisk util-linux \
    lvm2 cryptsetup-bin libhivex-bin debootstrap mtools zstd gzip curl \
    rpm db5.3-util db-util sqlite3 gnupg gpgconf gcc g++ systemd python3 \
    qemu-system-x86 qemu-utils tar socat packer openssh-client jq openssl nvme-cli
# Node.js and npm run Google's own metadata client against the fake metadata server. Whatever
# Node.js the machine has will do (Debian 12's is enough): install Debian's only if none.
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
    echo "installing: nodejs npm"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm >/dev/null
fi
# The Pub/Sub emulator (the work-queue tests) comes with the Google Cloud CLI and needs Java:
# from Google's apt repository if the machine has no gcloud with the emulator.
if ! command -v java >/dev/null || ! command -v gcloud >/dev/null ||
    [ ! -d "$(gcloud info --format='value(installation.sdk_root)')/platform/pubsub-emulator" ]; then
    echo "installing: google-cloud-cli google-cloud-cli-pubsub-emulator default-jre-headless"
    curl -fsSL https://packages.cloud.google.com/apt/doc/apt-key.gpg |
        gpg --batch --yes --dearmor -o /usr/share/keyrings/cloud.google.gpg
    echo "deb [signed-by=/usr/share/keyrings/cloud.google.gpg] https://packages.cloud.google.com/apt cloud-sdk main" \
        >/etc/apt/sources.list.d/google-cloud-sdk.list
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq google-cloud-cli google-cloud-cli-pubsub-emulator default-jre-headless >/dev/null
fi

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "tests"
cargo test --workspace --locked

step "fuzz smoke (${FUZZ_SECONDS}s per target)"
CARGO_FUZZ_VERSION=0.13.2
if [ "$(cargo fuzz --version 2>/dev/null)" != "cargo-fuzz $CARGO_FUZZ_VERSION" ]; then
    cargo install cargo-fuzz --version "$CARGO_FUZZ_VERSION" --locked --quiet --force
fi
scripts/fuzz-smoke.sh "$FUZZ_SECONDS"

step "all checks passed"
