#!/usr/bin/env bash
# The connector's dependencies on an NVIDIA Jetson TX2 (aarch64, JetPack 4 = Ubuntu 18.04): the modern equivalent of
# the documentation's nvidiajtx2.sh. CUDA and cuDNN come with JetPack. PyPI's mxnet 1.9.1 for aarch64 is CPU-only:
# for GPUAcceleration=GPU pass an MXNet built with CUDA for your JetPack (--mxnet-wheel).
set -euo pipefail
# shellcheck source=install/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

SCRIPT_NAME=install/nvidiajtx2.sh
PLATFORM_DESCRIPTION="an NVIDIA Jetson TX2 (aarch64) with JetPack's Ubuntu"
ACCEPTED_ARCHES=(aarch64 arm64)
SUPPORTED_OS_IDS=(ubuntu)
SUPPORTED_OS_DESCRIPTION="Ubuntu (JetPack's L4T)"
# The documented BLAS/LAPACK set, plus OpenMP and the C++ runtime that MXNet links.
APT_PACKAGES=(libopenblas-dev liblapack-dev libatlas-base-dev libgomp1 libstdc++6)
PLATFORM_NOTES="
Without --mxnet-wheel, PyPI's CPU-only mxnet 1.9.1 is installed: GPUAcceleration=CPU works, GPU does not.
On Ubuntu 18.04, python3.8 comes from the universe repository: enable it first (see the connector documentation)."

platform_checks() {
    if [[ ! -e /etc/nv_tegra_release ]]; then
        warn "no /etc/nv_tegra_release: this is not a Jetson with JetPack (L4T), so only GPUAcceleration=CPU can work"
    elif ! compgen -G "/usr/local/cuda/lib64/libcudart.so*" >/dev/null; then
        warn "JetPack's CUDA is not installed (/usr/local/cuda/lib64/libcudart.so*): sudo apt-get install nvidia-jetpack"
    fi
    if [[ -z $MXNET_WHEEL ]]; then
        warn "no --mxnet-wheel: installing PyPI's CPU-only mxnet 1.9.1 (GPUAcceleration=GPU will refuse to start)"
    fi
}

main_install "$@"
