#!/usr/bin/env bash
# The connector's dependencies on a Raspberry Pi (armv7l, Raspberry Pi OS / Debian / Ubuntu 32-bit): the modern
# equivalent of the documentation's armv7l.sh. PyPI has no MXNet 1.9.1 for armv7l, so the MXNet wheel is yours
# (--mxnet-wheel, e.g. built from source on the Pi); the script installs everything around it.
set -euo pipefail
# shellcheck source=install/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

SCRIPT_NAME=install/armv7l.sh
PLATFORM_DESCRIPTION="a Raspberry Pi (armv7l) with Raspberry Pi OS, Debian or Ubuntu"
ACCEPTED_ARCHES=(armv7l armv8l)
SUPPORTED_OS_IDS=(raspbian debian ubuntu)
SUPPORTED_OS_DESCRIPTION="Raspberry Pi OS, Debian and Ubuntu"
# What an MXNet built on the Pi links (OpenBLAS, LAPACK, gfortran 5, OpenMP), plus the C++ runtime.
APT_PACKAGES=(libopenblas0 liblapack3 libgfortran5 libgomp1 libstdc++6)
PLATFORM_NOTES="
PyPI has no MXNet 1.9.1 for armv7l: build it (docs/deployment.md: Installing the dependencies) and pass --mxnet-wheel FILE.
numpy and OpenCV come from the configured indexes (Raspberry Pi OS adds piwheels.org); if OpenCV has no wheel,
apt-get install python3-opencv and use --system-site-packages."

platform_checks() {
    if [[ -z $MXNET_WHEEL ]] && ! python_dependencies_installed; then
        die "PyPI has no MXNet 1.9.1 for armv7l (only x86_64 and aarch64 wheels): build it from source (docs/deployment.md: Installing the dependencies) and run $SCRIPT_NAME --mxnet-wheel path/to/mxnet-1.9.1-*.whl"
    fi
    # The documentation's advice: pip building or unpacking ML packages can exhaust a Pi's memory and hang it.
    local memory_kb swap_kb
    memory_kb=$(awk '/^MemTotal:/ {print $2}' /proc/meminfo 2>/dev/null || echo 0)
    swap_kb=$(awk '/^SwapTotal:/ {print $2}' /proc/meminfo 2>/dev/null || echo 0)
    if (((${memory_kb:-0} + ${swap_kb:-0}) < 2 * 1024 * 1024)); then
        warn "only $(((${memory_kb:-0} + ${swap_kb:-0}) / 1024)) MiB of memory and swap: pip may run the Pi out of memory. Raise CONF_SWAPSIZE in /etc/dphys-swapfile (e.g. 2048), then: sudo /etc/init.d/dphys-swapfile restart"
    fi
}

main_install "$@"
