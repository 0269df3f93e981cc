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
    strace                             # watches every file and program each option the judge accepts makes the tools touch
    autoconf automake                  # distcc's source has no configure: scripts/build-pump-client.sh runs its autogen.sh
    zlib1g-dev                         # git's libgit.a, built through the farm by bench/pump.py --project git
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
# kubectl's kustomize builds deploy/kubernetes/ in a test: Debian's kubernetes-client,
# unless a kubectl is already here (another package of it would conflict).
if [ "$level" = test ] && ! command -v kubectl >/dev/null && [ "$(id -u)" = 0 ]; then
    apt-get update -qq && apt-get install -y -qq --no-install-recommends kubernetes-client >/dev/null
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
# The Python side is the lock in requirements/ (docs/decisions.md, "The lock"), installed
# exactly: first pip and the build tools, then the level's lock with every hash checked
# (the two packages with no Linux wheel are built with those locked tools, not with
# whatever a build environment would fetch today), then distlb itself without
# dependencies, then anything the lock does not name is removed.
# A stamp holds the digest of what was installed; the test level's includes the farm's.
digest() { cat requirements/build.txt "requirements/$1.txt" pyproject.toml | sha256sum | cut -d' ' -f1; }
installed() { [ -f ".venv/.distlb-installed-$1" ] && [ "$(cat ".venv/.distlb-installed-$1")" = "$(digest "$1")" ]; }
if ! installed "$level" && ! { [ "$level" = farm ] && installed test; }; then
    log=.venv/pip-install.log
    pip=(.venv/bin/python -m pip install -q --no-input)
    if ! { "${pip[@]}" --require-hashes --no-deps -r requirements/build.txt \
           && "${pip[@]}" --require-hashes --no-deps --no-build-isolation -r "requirements/$level.txt" \
           && "${pip[@]}" --no-deps --no-build-isolation -e . \
           && .venv/bin/python scripts/lock.py sync requirements/build.txt "requirements/$level.txt"; } >"$log" 2>&1; then
        cat "$log" >&2
        echo "bootstrap: installing the lock failed (log above)" >&2
        exit 1
    fi
    rm -f .venv/.distlb-installed-*
    digest "$level" >".venv/.distlb-installed-$level"
fi
# A distcc pump client that works on this Python (Debian's distcc-pump does not), built
# from Debian's distcc source into a test-only prefix; quiet when already built.
if [ "$level" = test ]; then
    scripts/build-pump-client.sh
fi
