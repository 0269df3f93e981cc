#!/usr/bin/env bash
# Installs everything distlb and its tests need on a Debian machine (as root),
# then builds the project's virtualenv in .venv. Safe to run again: it only
# installs what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

DEBIAN_PACKAGES=(
    python3 python3-venv python3-dev   # the interpreter, if the machine has none
    build-essential liblzo2-dev        # python-lzo builds against the reference liblzo2
    gcc g++ make                       # compilers the server runs and the tests build with
    clang                              # the second compiler family the judge and tests cover
    bubblewrap                         # the compile sandbox (distlb-server --sandbox bwrap)
    cmake ninja-build meson libtool-bin  # real build systems for the judge's corpus test
    distcc                             # the real client, distccd and lsdistcc for tests
    curl procps iproute2
    chromium                           # renders the balancer's dashboard in a test
    haproxy                            # the baseline in bench/balancer_overhead.py
    dnsmasq                            # a real DNS server for distlb-probe's discovery tests
    redis-server                       # the shared result cache, started by the tests
    keepalived iptables docker-compose # balancer pairs and faults in tests/system; compose file check
    krb5-kdc krb5-admin-server krb5-user libkrb5-dev  # Kerberos: a test KDC (k5test), kinit, and headers for gssapi
    prometheus                         # promtool checks configs/prometheus/ and our /metrics
)

missing=()
if command -v dpkg-query >/dev/null; then
    for pkg in "${DEBIAN_PACKAGES[@]}"; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
    done
fi
if ((${#missing[@]})); then
    if [ "$(id -u)" != 0 ]; then
        echo "bootstrap: missing Debian packages: ${missing[*]} (run as root to install them)" >&2
        exit 1
    fi
    echo "bootstrap: installing ${missing[*]}" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# distccd from the package must not hold the ports our tests and farm use.
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
stamp=.venv/.distlb-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
    log=.venv/pip-install.log
    if ! { .venv/bin/python -m pip install -q --upgrade pip \
           && .venv/bin/python -m pip install -q -e '.[test]'; } >"$log" 2>&1; then
        cat "$log" >&2
        echo "bootstrap: pip install failed (log above)" >&2
        exit 1
    fi
    touch "$stamp"
fi
