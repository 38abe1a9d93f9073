# Sourced by the benchmark scripts: install what they compare against (hyperfine, virt-inspector,
# GNU time) when missing.
# shellcheck source=apt-install.sh
. scripts/apt-install.sh
apt_install hyperfine libguestfs-tools time >/dev/null
