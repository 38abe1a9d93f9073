# Sourced by the test and benchmark scripts: `apt_install PACKAGE...` installs the Debian
# packages that are missing (as root). Debian 12's qemu-system-x86 conflicts with the backported
# qemu-utils some base images carry: bookworm's qemu-utils is installed alongside it then.
apt_install() {
    local need=() p qu
    for p in "$@"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || need+=("$p")
    done
    if [ ${#need[@]} -eq 0 ]; then
        echo "all present"
        return
    fi
    echo "installing: ${need[*]}"
    apt-get update -qq
    qu=
    case " ${need[*]}" in
        *" qemu-system"* | *" libguestfs"*)
            qu=$(apt-cache policy qemu-utils | awk '/bookworm\/main/ {print prev} {prev=$1}' | head -n1) ;;
    esac
    # qemu-utils itself, when asked for, comes in that version too.
    [ -n "$qu" ] && for i in "${!need[@]}"; do [ "${need[$i]}" = qemu-utils ] && unset "need[$i]"; done
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --allow-downgrades "${need[@]}" \
        ${qu:+qemu-utils=$qu} >/dev/null
}
