#!/usr/bin/env bash
# Switchyard's two commands (see README.md):
#   ./dev.sh run    install what is missing, build in release mode, run two hosts of one cluster (5 s)
#   ./dev.sh test   install what is missing, run the whole test suite
# Extra arguments go to `switchyard run` (for example: ./dev.sh run --config my.yaml --duration 10).
set -euo pipefail
cd "$(dirname "$0")"

# Debian packages the build, the tests and the benchmarks need.
PACKAGES=(libdpdk-dev libnuma-dev dpdk-dev pkg-config libpcap-dev tshark iproute2 python3 ethtool curl prometheus bird2 valgrind)

install_missing() {
    local missing=()
    for package in "${PACKAGES[@]}"; do
        dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
    done
    if [ ${#missing[@]} -gt 0 ]; then
        echo "dev.sh: installing ${missing[*]}"
        local sudo=""
        [ "$(id -u)" -eq 0 ] || sudo="sudo"
        $sudo apt-get update -qq
        DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    fi
}

# DPDK needs root (memory, devices); re-run under sudo when we are not.
as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

case "${1:-}" in
run)
    shift
    install_missing
    swift build -c release --product switchyard
    as_root "$(swift build -c release --show-bin-path)/switchyard" run "$@"
    ;;
test)
    shift
    install_missing
    as_root swift test "$@"
    ;;
*)
    echo "usage: ./dev.sh run [switchyard run options] | ./dev.sh test [swift test options]" >&2
    exit 2
    ;;
esac
