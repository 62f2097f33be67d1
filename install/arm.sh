# shellcheck shell=bash
# Shared by install/armv7l.sh and install/nvidiajtx2.sh, on top of install/common.sh: MXNet does not run on ARM
# (PyPI's aarch64 wheel cannot import, armv7l has none), so the ARM scripts install an ONNX engine instead:
# ONNX Runtime and/or OpenCV's cv2.dnn, from PyPI where it has wheels, else from the distribution's archive (a venv
# made with --system-site-packages sees them). Then ggic's wheel and its pure-Python dependencies from PyPI.
#
# Each platform script sets SCRIPT_NAME, PLATFORM_DESCRIPTION, ACCEPTED_ARCHES, SUPPORTED_OS_IDS,
# SUPPORTED_OS_DESCRIPTION, PLATFORM_NOTES and defines arm_packages (sets APT_PACKAGES and PIP_ENGINE_PACKAGES,
# may read APT lists) and arm_checks (after the install: warnings only), then calls arm_install "$@".

WHEEL=""
ORT_WHEEL=""
APT_PACKAGES=()
PIP_ENGINE_PACKAGES=()
# What the distribution provides instead of PyPI (kept out of pip's constraints, so pip never replaces them)
DISTRIBUTION_PYTHON_PACKAGES=()

arm_usage() {
    cat <<EOF
Usage: $SCRIPT_NAME [--dry-run] [--venv DIR] [--wheel FILE] [--python PATH]$ARM_EXTRA_USAGE

Installs the ML Image Classification connector (ggic) on $PLATFORM_DESCRIPTION: the system packages (apt), then
a Python virtual environment with an inference engine and ggic. Whatever is already installed is left alone and
whatever is missing is installed, so running it again repairs an installation.

  --dry-run       print every command that would change the machine, run none of them
  --venv DIR      the virtual environment (default /opt/ggic/venv, or \$GGIC_INSTALL_VENV)
  --wheel FILE    ggic's wheel (default: the newest build/dist/ggic-*.whl next to this script, else this source tree)
  --python PATH   the Python 3.8-3.13 to build the venv with (default: the distribution's python3)
$ARM_EXTRA_OPTIONS$PLATFORM_NOTES
EOF
}

arm_parse_args() {
    while (($#)); do
        case $1 in
            --dry-run) DRY_RUN=1 ;;
            --venv) [[ $# -ge 2 ]] || die "--venv needs a directory"; VENV=$2; shift ;;
            --wheel) [[ $# -ge 2 ]] || die "--wheel needs a file"; WHEEL=$2; shift ;;
            --python) [[ $# -ge 2 ]] || die "--python needs a path"; PYTHON=$2; shift ;;
            --onnxruntime-wheel)
                [[ -n ${ARM_EXTRA_OPTIONS:-} && $ARM_EXTRA_OPTIONS == *--onnxruntime-wheel* ]] ||
                    die "unknown option '$1' (see $SCRIPT_NAME --help)"
                [[ $# -ge 2 ]] || die "--onnxruntime-wheel needs a file"; ORT_WHEEL=$2; shift ;;
            -h | --help) arm_usage; exit 0 ;;
            *) die "unknown option '$1' (see $SCRIPT_NAME --help)" ;;
        esac
        shift
    done
    local file
    for file in WHEEL ORT_WHEEL; do
        [[ -z ${!file} ]] && continue
        [[ -f ${!file} && ${!file} == *.whl ]] || die "${!file} is not a .whl file"
        printf -v "$file" '%s' "$(cd "$(dirname "${!file}")" && pwd)/$(basename "${!file}")"
    done
}

# The package to install ggic from: --wheel, else build/dist/ggic-*.whl (make wheel), else the source tree.
ggic_source() {
    if [[ -n $WHEEL ]]; then
        printf '%s' "$WHEEL"
        return 0
    fi
    local newest
    newest=$(find "$GGIC_REPO/build/dist" -maxdepth 1 -name 'ggic-*.whl' -printf '%T@ %p\n' 2>/dev/null |
        sort -n | tail -n 1 | cut -d' ' -f2-)
    if [[ -n $newest ]]; then
        printf '%s' "$newest"
    elif [[ -f $GGIC_REPO/setup.py ]]; then
        printf '%s' "$GGIC_REPO"
    else
        die "no ggic to install: pass --wheel FILE (make wheel builds build/dist/ggic-*.whl)"
    fi
}

# The machine's architecture, as `uname -m` says, but a 32-bit user space on a 64-bit kernel (Raspberry Pi OS
# 32-bit on a Pi 4 says aarch64) counts as armv7l.
arm_machine() {
    local machine=${GGIC_INSTALL_ARCH:-$(uname -m)}
    if [[ -z ${GGIC_INSTALL_ARCH:-} && $machine == aarch64 ]] && [[ $(getconf LONG_BIT 2>/dev/null) == 32 ]]; then
        machine=armv7l
    fi
    printf '%s' "$machine"
}

# Whether APT knows a package (a candidate version in the lists); updates the lists first on a machine without any.
APT_LISTS_FRESH=0
apt_has() {
    if ((APT_LISTS_FRESH == 0)); then
        APT_LISTS_FRESH=1
        if ! compgen -G "/var/lib/apt/lists/*_Packages*" >/dev/null; then
            as_root apt-get update
        fi
    fi
    local candidate
    candidate=$(apt-cache policy "$1" 2>/dev/null | awk '/Candidate:/ {print $2}')
    [[ -n $candidate && $candidate != "(none)" ]]
}

# The constraints without the packages the distribution provides: a pin on them would make pip replace Debian's
# build with a PyPI one that does not exist for this platform (and try to compile it).
filtered_constraints() {
    local output=$1 name pattern
    pattern="^($(printf '%s|' "${DISTRIBUTION_PYTHON_PACKAGES[@]}" mxnet | sed 's/|$//'))=="
    grep -viE "$pattern" "${CONSTRAINTS:?}" >"$output"
    for name in "${DISTRIBUTION_PYTHON_PACKAGES[@]}"; do
        grep -qiE "^$name==" "$output" && die "could not drop $name from $CONSTRAINTS"
    done
    return 0
}

venv_python_ok() {
    [[ -x $VENV/bin/python ]] && "$VENV/bin/python" -c 'import sys' 2>/dev/null
}

venv_sees_system_site_packages() {
    grep -qiE '^include-system-site-packages *= *true' "$VENV/pyvenv.cfg" 2>/dev/null
}

# True when ggic (at the version being installed, if known) and all its dependencies are in the venv.
ggic_installed() {
    local source=$1 wanted=""
    venv_python_ok || return 1
    if [[ $source == *.whl ]]; then
        wanted=$(basename "$source" | cut -d- -f2)
    fi
    "$VENV/bin/python" - "$wanted" <<'EOF' || return 1
import importlib.metadata as metadata
import sys
try:
    have = metadata.version("ggic")
except metadata.PackageNotFoundError:
    sys.exit(1)
sys.exit(0 if not sys.argv[1] or have == sys.argv[1] else 1)
EOF
    # Only ggic's own requirements count: in a --system-site-packages venv pip check also reports the
    # distribution's packages, which are not ours to fix.
    ! "$VENV/bin/python" -m pip check 2>/dev/null | grep -qi '^ggic '
}

arm_make_venv() {
    local flags=()
    ((NEED_SYSTEM_SITE_PACKAGES)) && flags=(--system-site-packages)
    if venv_python_ok; then
        if ((NEED_SYSTEM_SITE_PACKAGES)) && ! venv_sees_system_site_packages; then
            say "$VENV does not see the system's Python packages ($(printf '%s ' "${DISTRIBUTION_PYTHON_PACKAGES[@]}")from apt): recreating it with --system-site-packages"
            run "$PYTHON" -m venv --clear "${flags[@]}" "$VENV"
        fi
        return 0
    fi
    [[ -e $VENV ]] && say "$VENV exists but its Python does not run: recreating it"
    run "$PYTHON" -m venv --clear "${flags[@]}" "$VENV"
}

arm_install_python() {
    local source constraints
    source=$(ggic_source)
    # Packages with files missing (a directory deleted by hand, a half-finished install): pip still counts them as
    # installed, so they are reinstalled by name and version (common.sh's broken_distributions).
    local broken=()
    if venv_python_ok; then
        mapfile -t broken < <(broken_distributions)
    fi
    if ((${#broken[@]} == 0)) && ggic_installed "$source"; then
        say "ggic and its dependencies are already installed in $VENV: nothing to do"
        return 0
    fi
    arm_make_venv
    # the pins of the venv's Python (install/constraints/pyXY.txt where it has its own), as common.sh chooses them
    if venv_python_ok; then constraints_for "$VENV/bin/python"; else constraints_for "$PYTHON"; fi
    constraints=$(mktemp "${TMPDIR:-/tmp}/ggic-constraints.XXXXXX")
    # shellcheck disable=SC2064  # expand now: the file name is fixed
    trap "rm -f '$constraints'" EXIT
    filtered_constraints "$constraints"
    if ((${#DISTRIBUTION_PYTHON_PACKAGES[@]})); then
        say "from the distribution, not PyPI (kept out of pip's constraints): ${DISTRIBUTION_PYTHON_PACKAGES[*]}"
    fi
    if ((${#broken[@]})); then
        say "packages with files missing, reinstalled: ${broken[*]}"
        run "$VENV/bin/pip" install --disable-pip-version-check --force-reinstall --no-deps "${broken[@]}"
    fi
    if [[ -n $ORT_WHEEL ]]; then
        run "$VENV/bin/pip" install --disable-pip-version-check -c "$constraints" "$ORT_WHEEL"
    fi
    if ((${#PIP_ENGINE_PACKAGES[@]})); then
        run "$VENV/bin/pip" install --disable-pip-version-check -c "$constraints" "${PIP_ENGINE_PACKAGES[@]}"
    fi
    if [[ -n $ORT_WHEEL ]]; then
        # ggic requires "onnxruntime" by name; the given build (onnxruntime-gpu, say) provides it under another.
        run "$VENV/bin/pip" install --disable-pip-version-check --no-deps "$source"
        run "$VENV/bin/pip" install --disable-pip-version-check -c "$constraints" jsonschema boto3 prometheus_client \
            paho-mqtt
    else
        run "$VENV/bin/pip" install --disable-pip-version-check -c "$constraints" "$source"
    fi
}

# Which Python: --python, else python3; ggic runs on 3.8-3.13.
arm_choose_python() {
    local default=${PYTHON:-python3} version
    version=$("$default" -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null) || version=""
    if [[ -z $version ]]; then
        ((DRY_RUN)) && { PYTHON=$default; say "$default is not installed yet: the package step installs it"; return 0; }
        die "$default does not run: pass --python PATH to a Python 3.8-3.13"
    fi
    "$default" -c 'import sys; sys.exit(0 if (3, 8) <= sys.version_info[:2] <= (3, 13) else 1)' ||
        die "$default is Python $version; ggic needs Python 3.8-3.13: install one and pass --python PATH"
    PYTHON=$default
}

arm_install() {
    arm_parse_args "$@"
    read_os_release
    local machine
    machine=$(arm_machine)
    GGIC_INSTALL_ARCH=$machine require_arch "${ACCEPTED_ARCHES[@]}"
    require_os "${SUPPORTED_OS_IDS[@]}"
    ((DRY_RUN)) && say "dry run: printing the commands that would change this machine, running none"
    say "$SCRIPT_NAME on $OS_PRETTY ($machine), virtual environment $VENV"
    arm_packages
    install_packages "${APT_PACKAGES[@]}"
    arm_choose_python
    arm_install_python
    ((DRY_RUN)) || arm_checks
    say "done. Check the device with: $VENV/bin/ggic doctor"
}
