#!/usr/bin/env bash
# Benchmark of the lazy registry reader on a Windows disk whose hives have real sizes (126 MiB
# SOFTWARE, 20 MiB SYSTEM; fixture windows-real-hives) next to the small-hive
# windows-server-2022 fixture: inspect and inventory wall time (median of 5 fresh processes),
# bytes read and peak RSS (bench-hive). For comparison, on the same hive file and image:
# hivexget reading the CurrentVersion values (hyperfine), and virt-inspector (one run: it boots
# an appliance VM under TCG; skipped with a note when not installed). Not part of the test
# command: run it by hand, as root.
set -euo pipefail
cd "$(dirname "$0")/.."

. scripts/bench-deps.sh

cargo build --release -q -p snapscan-tests --bin bench-hive --bin fixture
bench=target/release/bench-hive
image=$(target/release/fixture windows-real-hives)

echo "--- snapscan (native, lazy hives)"
"$bench"

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
"$bench" --write-hives "$tmp"
cv='Microsoft\Windows NT\CurrentVersion'
echo "--- hivexget '$cv' on the $(( $(stat -c %s "$tmp/SOFTWARE") >> 20 )) MiB SOFTWARE hive"
if command -v hivexget >/dev/null; then
    hyperfine -N -w 2 -r 10 "hivexget $tmp/SOFTWARE '$cv'" 2>/dev/null | grep -E 'Time|Range'
else
    echo "hivexget not installed (Debian libhivex-bin): skipped"
fi

echo "--- virt-inspector on windows-real-hives"
if command -v virt-inspector >/dev/null; then
    export LIBGUESTFS_BACKEND=direct LIBGUESTFS_BACKEND_SETTINGS=force_tcg
    start=$(date +%s%N)
    if virt-inspector --format=raw -a "$image" >"$tmp/vi.xml" 2>"$tmp/vi.err"; then
        echo "$(( ($(date +%s%N) - start) / 1000000 )) ms"
    else
        echo "failed: $(tail -n 1 "$tmp/vi.err")"
    fi
else
    echo "virt-inspector not installed (libguestfs-tools): skipped"
fi
