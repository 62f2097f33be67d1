# shellcheck shell=bash
# Shared by install/x86_64.sh, install/armv7l.sh and install/nvidiajtx2.sh: the modern equivalents of the
# connector documentation's "Installing MXNet Dependencies" scripts. Each platform script sets its packages and
# calls main_install; everything here is idempotent (it checks before it installs), a second run repairs what is
# missing or broken in the venv, and --dry-run prints every command that would change the machine without running it
# (read-only checks such as dpkg-query still run).
#
# Overrides for tests and odd devices: GGIC_INSTALL_OS_RELEASE (a file in /etc/os-release format),
# GGIC_INSTALL_ARCH (instead of `uname -m`), GGIC_INSTALL_VENV (instead of /opt/ggic/venv).

GGIC_REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# The pins: install/constraints/pyXY.txt for a Python that has its own (chosen in choose_python), else this one.
CONSTRAINTS="$GGIC_REPO/install/constraints.txt"
DRY_RUN=0
VENV=${GGIC_INSTALL_VENV:-/opt/ggic/venv}
PYTHON=""
MXNET_WHEEL=""
GGIC_WHEEL=""
SYSTEM_SITE_PACKAGES=0
# ggic brings its runtime dependencies itself (setup.py install_requires, chosen per platform by environment
# markers); a platform script may add packages here (installed with the pins, before ggic).
PYTHON_DEPENDENCIES=()
# The Pythons this platform's dependencies have wheels for (a platform script may change them).
PYTHON_MIN=3.8 PYTHON_MAX=3.11

say() { printf '==> %s\n' "$*"; }
warn() { printf 'warning: %s\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

# Print a command (shell-quoted, so it can be pasted), then run it unless this is a dry run.
run() {
    local quoted
    quoted=$(printf '%q ' "$@")
    printf '+ %s\n' "${quoted% }"
    if ((DRY_RUN == 0)); then
        "$@"
    fi
}

as_root() {
    if ((EUID == 0)); then
        run "$@"
    else
        run sudo "$@"
    fi
}

usage() {
    cat <<EOF
Usage: $SCRIPT_NAME [--dry-run] [--venv DIR] [--python PATH] [--wheel FILE] [--mxnet-wheel FILE]
       [--system-site-packages]

Installs what the ML Image Classification connector (ggic) needs on $PLATFORM_DESCRIPTION:
the system packages (apt$([[ -n ${DNF_PACKAGES:-} ]] && printf '/dnf')), then a Python virtual environment with
ggic and its dependencies at the versions pinned in install/constraints.txt (install/constraints/pyXY.txt for a
Python that needs its own). Whatever is already installed is left alone, and a second run repairs the venv: a
package removed or with files missing is installed again.

  --dry-run               print every command that would change the machine, run none of them
  --venv DIR              the virtual environment (default /opt/ggic/venv, or \$GGIC_INSTALL_VENV)
  --python PATH           the Python $PYTHON_MIN-$PYTHON_MAX to build it with (default: the distribution's)
  --wheel FILE            install this ggic wheel (make wheel) instead of building one from $GGIC_REPO
  --mxnet-wheel FILE      install this MXNet wheel (e.g. your own build) instead of PyPI's mxnet
  --system-site-packages  let the venv see distribution packages (e.g. python3-opencv)
$PLATFORM_NOTES
EOF
}

parse_args() {
    while (($#)); do
        case $1 in
            --dry-run) DRY_RUN=1 ;;
            --venv) [[ $# -ge 2 ]] || die "--venv needs a directory"; VENV=$2; shift ;;
            --python) [[ $# -ge 2 ]] || die "--python needs a path"; PYTHON=$2; shift ;;
            --mxnet-wheel) [[ $# -ge 2 ]] || die "--mxnet-wheel needs a file"; MXNET_WHEEL=$2; shift ;;
            --wheel) [[ $# -ge 2 ]] || die "--wheel needs a file"; GGIC_WHEEL=$2; shift ;;
            --system-site-packages) SYSTEM_SITE_PACKAGES=1 ;;
            -h | --help) usage; exit 0 ;;
            *) die "unknown option '$1' (see $SCRIPT_NAME --help)" ;;
        esac
        shift
    done
    if [[ -n $MXNET_WHEEL ]]; then
        [[ -f $MXNET_WHEEL && $MXNET_WHEEL == *.whl ]] || die "--mxnet-wheel $MXNET_WHEEL is not a .whl file"
        MXNET_WHEEL=$(cd "$(dirname "$MXNET_WHEEL")" && pwd)/$(basename "$MXNET_WHEEL")
    fi
    if [[ -n $GGIC_WHEEL ]]; then
        [[ -f $GGIC_WHEEL && $(basename "$GGIC_WHEEL") == ggic-*.whl ]] || die "--wheel $GGIC_WHEEL is not a ggic-*.whl file"
        GGIC_WHEEL=$(cd "$(dirname "$GGIC_WHEEL")" && pwd)/$(basename "$GGIC_WHEEL")
    fi
}

# --- where are we --------------------------------------------------------------------------------------------

OS_ID="" OS_ID_LIKE="" OS_VERSION_ID="" OS_PRETTY=""

read_os_release() {
    local file=${GGIC_INSTALL_OS_RELEASE:-/etc/os-release} key value
    [[ -r $file ]] || die "cannot read $file, so cannot tell which OS this is"
    while IFS='=' read -r key value; do
        value=${value%\"}; value=${value#\"}; value=${value%\'}; value=${value#\'}
        case $key in
            ID) OS_ID=$value ;;
            ID_LIKE) OS_ID_LIKE=$value ;;
            VERSION_ID) OS_VERSION_ID=$value ;;
            PRETTY_NAME) OS_PRETTY=$value ;;
        esac
    done <"$file"
    OS_PRETTY=${OS_PRETTY:-${OS_ID:-unknown} ${OS_VERSION_ID}}
    OS_RELEASE_FILE=$file
}

# require_arch NAME...: this machine's `uname -m` must be one of NAME.
require_arch() {
    local machine=${GGIC_INSTALL_ARCH:-$(uname -m)} accepted suggestion
    for accepted in "$@"; do
        [[ $machine == "$accepted" ]] && return 0
    done
    case $machine in
        x86_64 | amd64) suggestion="use install/x86_64.sh" ;;
        armv7l | armv8l | armhf) suggestion="use install/armv7l.sh" ;;
        aarch64 | arm64) suggestion="use install/nvidiajtx2.sh (Jetson TX2 and other aarch64 boards)" ;;
        *) suggestion="no ML Image Classification connector exists for $machine" ;;
    esac
    die "$SCRIPT_NAME is for $(printf '%s/' "$@" | sed 's:/$::') machines, but this machine is $machine (uname -m): $suggestion"
}

# require_os ID...: /etc/os-release's ID (or one of its ID_LIKE) must be one of ID. Sets PKG_TOOL.
require_os() {
    local wanted like
    for wanted in "$@"; do
        for like in $OS_ID $OS_ID_LIKE; do
            if [[ $like == "$wanted" ]]; then
                case $wanted in
                    amzn | rhel | fedora) PKG_TOOL=dnf ;;
                    *) PKG_TOOL=apt ;;
                esac
                return 0
            fi
        done
    done
    die "$SCRIPT_NAME supports $SUPPORTED_OS_DESCRIPTION; this is '$OS_PRETTY' (ID=${OS_ID:-none} in $OS_RELEASE_FILE). On another distribution install the equivalent packages by hand (docs/deployment.md: Installing the dependencies), then run: $SCRIPT_NAME --dry-run to see the Python steps"
}

# --- system packages -----------------------------------------------------------------------------------------

package_installed() {
    case $PKG_TOOL in
        apt)
            command -v dpkg-query >/dev/null || return 1
            # shellcheck disable=SC2016  # ${Status} is dpkg-query's format field, not a shell variable
            [[ $(dpkg-query -W -f='${Status}' "$1" 2>/dev/null) == "install ok installed" ]]
            ;;
        dnf)
            command -v rpm >/dev/null && rpm -q "$1" >/dev/null 2>&1
            ;;
    esac
}

install_packages() {
    local package missing=() present=()
    for package in "$@"; do
        if package_installed "$package"; then present+=("$package"); else missing+=("$package"); fi
    done
    if ((${#present[@]})); then
        say "system packages already installed: ${present[*]}"
    fi
    if ((${#missing[@]} == 0)); then
        say "system packages: nothing to install"
        return 0
    fi
    say "system packages to install: ${missing[*]}"
    case $PKG_TOOL in
        apt)
            as_root apt-get update
            as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}"
            ;;
        dnf)
            as_root dnf install -y "${missing[@]}"
            ;;
    esac
}

# --- Python ---------------------------------------------------------------------------------------------------

# The distribution's Python packages and interpreter: python3 is 3.8-3.11 on Debian 11/12, Ubuntu 20.04/22.04 and
# Raspberry Pi OS 11/12; Ubuntu 18.04 (JetPack 4 on the TX2) needs python3.8; Amazon Linux 2023 has python3.11.
# With --python nothing is installed for Python.
PYTHON_PACKAGES=() PYTHON_DEFAULT=python3

python_for_os() {
    if [[ -n $PYTHON ]]; then
        PYTHON_PACKAGES=()
    elif [[ $PKG_TOOL == dnf ]]; then
        PYTHON_PACKAGES=(python3.11 python3.11-devel) PYTHON_DEFAULT=python3.11
    elif [[ $OS_ID == ubuntu && $OS_VERSION_ID == 18.04 ]]; then
        PYTHON_PACKAGES=(python3.8 python3.8-venv python3.8-dev) PYTHON_DEFAULT=python3.8
    else
        PYTHON_PACKAGES=(python3 python3-venv python3-dev) PYTHON_DEFAULT=python3
    fi
}

# PYTHON_MIN..PYTHON_MAX: on x86_64 numpy 1.23.5 (the pin MXNet 1.9.1 needs: it uses aliases removed in numpy 1.24)
# has wheels for CPython 3.8-3.11 only.
python_usable() {
    "$1" - "$PYTHON_MIN" "$PYTHON_MAX" <<'EOF' 2>/dev/null
import sys
low, high = (tuple(int(part) for part in bound.split(".")) for bound in sys.argv[1:3])
sys.exit(0 if low <= sys.version_info[:2] <= high else 1)
EOF
}

# The constraints file for the Python at $1: install/constraints/pyXY.txt when that Python has its own pins.
constraints_for() {
    local version
    version=$("$1" -c 'import sys; print("%d%d" % sys.version_info[:2])' 2>/dev/null) || return 0
    CONSTRAINTS=$GGIC_REPO/install/constraints.txt
    if [[ -f $GGIC_REPO/install/constraints/py$version.txt ]]; then
        CONSTRAINTS=$GGIC_REPO/install/constraints/py$version.txt
    fi
}

# choose_python DEFAULT: --python if given, else DEFAULT (the distribution's interpreter installed above).
choose_python() {
    local default=$1 version
    if [[ -n $PYTHON ]]; then
        python_usable "$PYTHON" || die "--python $PYTHON is not a working Python $PYTHON_MIN-$PYTHON_MAX"
        constraints_for "$PYTHON"
        return 0
    fi
    # A pyenv shim or a broken link may be on the PATH without a working interpreter behind it.
    version=$("$default" -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null) || version=""
    if [[ -n $version ]]; then
        python_usable "$default" || die "$default is Python $version, but ggic's dependencies on this platform need Python $PYTHON_MIN-$PYTHON_MAX (docs/deployment.md: Pythons and operating systems): install one (e.g. python3.11) and pass --python PATH"
        PYTHON=$default
        constraints_for "$PYTHON"
        return 0
    fi
    if ((DRY_RUN)); then
        PYTHON=$default
        say "$default is not installed yet: the package step above installs it"
        return 0
    fi
    die "$default does not run after installing the system packages: pass --python PATH to a Python $PYTHON_MIN-$PYTHON_MAX"
}

# True when the venv already has ggic, an MXNet, and the other runtime dependencies at their pinned versions.
# (install/armv7l.sh asks this before it insists on --mxnet-wheel.)
python_dependencies_installed() {
    [[ -x $VENV/bin/python ]] || return 1
    "$VENV/bin/python" - "$CONSTRAINTS" "${PYTHON_DEPENDENCIES[@]}" <<'EOF'
import importlib.metadata as metadata
import re
import sys

def canonical(name):
    return re.sub(r"[-_.]+", "-", name).lower()

pins = {}
for line in open(sys.argv[1]):
    line = line.split("#", 1)[0].split(";", 1)[0].strip()
    if "==" in line:
        name, version = line.split("==", 1)
        pins[canonical(name)] = version.strip()
installed = {canonical(d.metadata["Name"]): d.version for d in metadata.distributions()}
missing = [name for name in ["ggic"] + sys.argv[2:]
           if canonical(name) not in installed
           or (canonical(name) in pins and installed[canonical(name)] != pins[canonical(name)])]
if not any(name == "mxnet" or name.startswith("mxnet-") for name in installed):
    missing.append("mxnet")
sys.exit(1 if missing else 0)
EOF
}

# The distributions in the venv with files missing (a package directory deleted by hand, a half-finished
# install): pip still counts them as installed, so they are reinstalled by name and version.
broken_distributions() {
    [[ -x $VENV/bin/python ]] || return 0
    "$VENV/bin/python" - <<'EOF'
import csv
import importlib.metadata as metadata
import io

# RECORD itself, not Distribution.files: from Python 3.13 on, files leaves out the paths that no longer exist.
for distribution in metadata.distributions():
    record = distribution.read_text("RECORD") or ""
    paths = [row[0] for row in csv.reader(io.StringIO(record)) if row]
    if any(not path.endswith(".pyc") and not distribution.locate_file(path).exists() for path in paths):
        print("%s==%s" % (distribution.metadata["Name"], distribution.version))
EOF
}

install_python_dependencies() {
    if [[ ! -x $VENV/bin/python ]]; then
        if ((SYSTEM_SITE_PACKAGES)); then
            run "$PYTHON" -m venv --system-site-packages "$VENV"
        else
            run "$PYTHON" -m venv "$VENV"
        fi
    elif ! "$VENV/bin/python" -c 'import sys' 2>/dev/null; then
        die "$VENV/bin/python does not run (was its Python removed?): delete $VENV and run $SCRIPT_NAME again"
    else
        say "virtual environment $VENV exists: checking and repairing what is in it"
        constraints_for "$VENV/bin/python"  # the pins of the venv's own Python, whichever made it
        local broken=()
        mapfile -t broken < <(broken_distributions)
        if ((${#broken[@]})); then
            say "packages with files missing, reinstalled: ${broken[*]}"
            run "$VENV/bin/pip" install --disable-pip-version-check --force-reinstall --no-deps "${broken[@]}"
        fi
    fi
    # Old distribution pips (Ubuntu 18.04's 9.0) cannot install manylinux2014 wheels.
    run "$VENV/bin/python" -m pip install --disable-pip-version-check 'pip>=20.3'
    if [[ -n $MXNET_WHEEL ]]; then
        run "$VENV/bin/pip" install --disable-pip-version-check --no-deps "$MXNET_WHEEL"
    fi
    if ((${#PYTHON_DEPENDENCIES[@]})); then
        run "$VENV/bin/pip" install --disable-pip-version-check -c "$CONSTRAINTS" "${PYTHON_DEPENDENCIES[@]}"
    fi
    # ggic and its dependencies: what pip finds missing is installed again (the repair on a second run).
    run "$VENV/bin/pip" install --disable-pip-version-check -c "$CONSTRAINTS" "${GGIC_WHEEL:-$GGIC_REPO}"
    # Distribution packages a --system-site-packages venv sees may have requirements of their own unmet: reported,
    # not fatal (`ggic doctor` judges what the connector needs).
    run "$VENV/bin/pip" check || warn "pip check found the unmet requirements above in $VENV"
}

# --- the whole run --------------------------------------------------------------------------------------------

main_install() {
    parse_args "$@"
    read_os_release
    require_arch "${ACCEPTED_ARCHES[@]}"
    require_os "${SUPPORTED_OS_IDS[@]}"
    ((DRY_RUN)) && say "dry run: printing the commands that would change this machine, running none"
    say "$SCRIPT_NAME on $OS_PRETTY (${GGIC_INSTALL_ARCH:-$(uname -m)}), virtual environment $VENV"
    platform_checks
    python_for_os
    if [[ $PKG_TOOL == dnf ]]; then
        install_packages "${DNF_PACKAGES[@]}" "${PYTHON_PACKAGES[@]}"
    else
        install_packages "${APT_PACKAGES[@]}" "${PYTHON_PACKAGES[@]}"
    fi
    choose_python "$PYTHON_DEFAULT"
    install_python_dependencies
    say "done. Check the device with: $VENV/bin/ggic doctor"
}
