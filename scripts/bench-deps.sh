# Sourced by the benchmark scripts: install what they compare against (hyperfine, virt-inspector,
# GNU time) when missing. Debian's qemu-system-x86 (pulled in by libguestfs) conflicts with a
# backported qemu-utils: the bookworm qemu-utils is installed alongside it.
need=()
for p in hyperfine libguestfs-tools time; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || need+=("$p")
done
if [ ${#need[@]} -gt 0 ]; then
    apt-get update -qq
    qu=$(apt-cache policy qemu-utils | awk '/bookworm\/main/ {print prev} {prev=$1}' | head -n1)
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --allow-downgrades "${need[@]}" \
        ${qu:+qemu-utils=$qu} >/dev/null
fi
