#!/usr/bin/env bash
# Installs what distlb needs on a Debian machine (as root), then builds the project's
# virtualenv in .venv. Two levels:
#   scripts/bootstrap.sh farm   what the farm needs to run and be used (scripts/farm.sh)
#   scripts/bootstrap.sh test   that, plus what the test suite needs (scripts/test.sh;
#                               the default, for callers that name no level)
#   scripts/bootstrap.sh --list farm|test   print that level's Debian packages, one a line
# Safe to run again: it only installs what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

FARM_PACKAGES=(
    python3 python3-venv python3-dev    # the interpreter and its venv module
    build-essential liblzo2-dev libkrb5-dev  # python-lzo and gssapi build from source (no Linux wheels)
    gcc g++ make                        # the compilers the servers run
    distcc                              # Debian's distcc client, to build through the farm
    bubblewrap                          # the compile sandbox (distlb-server --sandbox bwrap)
    curl                                # farm.sh waits for the status pages with it
)
TEST_PACKAGES=(
    clang                              # the second compiler family the judge and tests cover
    cmake ninja-build meson libtool-bin  # real build systems for the judge's corpus test
    procps iproute2
    chromium                           # renders the balancer's dashboard in a test
    haproxy                            # the baseline in bench/balancer_overhead.py
    dnsmasq                            # a real DNS server for distlb-probe's discovery tests
    redis-server                       # the shared result cache, started by the tests
    keepalived iptables docker-compose # balancer pairs and faults in tests/system; compose file check
    krb5-kdc krb5-admin-server krb5-user  # Kerberos: a test KDC (k5test) and kinit
    prometheus                         # promtool checks configs/prometheus/ and our /metrics
    systemd                            # systemd-analyze verifies configs/systemd/ (no running systemd needed)
    debootstrap buildah                # the image test: a Debian base from the archive, docker/Dockerfile built on it
    gdb                                # plays a subverted compiler that takes over its sandbox's init (ptrace)
)

list_only=
if [ "${1:-}" = --list ]; then
    list_only=1
    shift
fi
level=${1:-test}
case "$level" in
    farm) packages=("${FARM_PACKAGES[@]}"); extras= ;;
    test) packages=("${FARM_PACKAGES[@]}" "${TEST_PACKAGES[@]}"); extras='[test]' ;;
    *) echo "bootstrap: unknown level '$level' (farm or test)" >&2; exit 2 ;;
esac
if [ -n "$list_only" ]; then
    printf '%s\n' "${packages[@]}"
    exit 0
fi

missing=()
if command -v dpkg-query >/dev/null; then
    for pkg in "${packages[@]}"; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
    done
fi
if ((${#missing[@]})); then
    if [ "$(id -u)" != 0 ]; then
        echo "bootstrap: missing Debian packages: ${missing[*]} (run as root to install them)" >&2
        exit 1
    fi
    echo "bootstrap ($level): installing ${missing[*]}" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# The packages' own daemons must not hold the ports our tests and farm use.
for service in distcc redis-server dnsmasq prometheus; do
    if command -v systemctl >/dev/null && systemctl is-active --quiet "$service" 2>/dev/null; then
        systemctl stop "$service" || true
    fi
done

PYTHON=${PYTHON:-python3}
"$PYTHON" - <<'PY' || { echo "bootstrap: distlb needs Python >= 3.11" >&2; exit 1; }
import sys
sys.exit(sys.version_info < (3, 11))
PY
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
# The test level's install includes the farm's: either stamp satisfies the farm.
stamp=.venv/.distlb-installed-$level
if [ "$level" = farm ] && [ -f .venv/.distlb-installed-test ] && ! [ pyproject.toml -nt .venv/.distlb-installed-test ]; then
    stamp=.venv/.distlb-installed-test
fi
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
    log=.venv/pip-install.log
    if ! { .venv/bin/python -m pip install -q --upgrade pip \
           && .venv/bin/python -m pip install -q -e ".$extras"; } >"$log" 2>&1; then
        cat "$log" >&2
        echo "bootstrap: pip install failed (log above)" >&2
        exit 1
    fi
    touch "$stamp"
fi
