#!/usr/bin/env bash
# Builds a working distcc pump client for the tests: `pump`, its include server and the
# `distcc` client, from the source of Debian's distcc package, into a test-only prefix.
# Run by `scripts/bootstrap.sh test`; tests/support/pump.py finds what it built.
#
# Why: Debian 12's distcc-pump fails on Python 3.11 (distcc issue #454: the include
# server's C extension parses `s#` arguments without PY_SSIZE_T_CLEAN, into `int`
# lengths). scripts/pump_ssize_fix.py mends that in the unpacked source before the build.
#
# The prefix is ${DISTLB_TEST_CACHE:-/var/cache/distlb-test}/pump-<stamp>, the stamp a
# digest of this script, the fix and the source package's version: a changed recipe
# builds a new prefix, an unchanged one is reused (and this prints nothing). A build
# writes its marker file last; a prefix without one is half done and is built again.
# The file `pump-current` beside it names the prefix last built or reused.
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian's interpreter: its python3-dev and distutils build the extension, and the
# installed `pump` runs the include server with the interpreter it was configured with.
PYTHON=/usr/bin/python3
PACKAGE=distcc
CACHE=${DISTLB_TEST_CACHE:-/var/cache/distlb-test}
SOURCES_FILE=/etc/apt/sources.list.d/distlb-test-src.sources
# The main suite's sources, as in /etc/apt/sources.list.d/debian.sources.
SOURCES_ENTRY='Types: deb-src
URIs: http://deb.debian.org/debian
Suites: bookworm
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg'
# The bundled popt (no libpopt-dev needed) and no libiberty (only for @file arguments):
# the same build whatever else is installed. No -Werror: 3.4 predates gcc 12's warnings.
CONFIGURE_ARGS=(--disable-Werror --with-included-popt --without-libiberty --without-avahi
                --without-gtk --without-gnome)
LOG_LINES_ON_FAILURE=40

fail() {
    echo "build-pump-client: $*" >&2
    exit 1
}

source_version() {
    # The newest version of the source package the deb-src index offers (empty if none).
    { apt-cache showsrc --only-source "$PACKAGE" 2>/dev/null || true; } \
        | sed -n 's/^Version: //p' | sort -V | tail -n 1
}

as_root="run scripts/bootstrap.sh test as root"
if [ "$(cat "$SOURCES_FILE" 2>/dev/null)" != "$SOURCES_ENTRY" ]; then
    [ "$(id -u)" = 0 ] || fail "$SOURCES_FILE is missing or differs ($as_root)"
    printf '%s\n' "$SOURCES_ENTRY" >"$SOURCES_FILE"
fi
version=$(source_version)
if [ -z "$version" ]; then
    [ "$(id -u)" = 0 ] || fail "no deb-src index for $PACKAGE ($as_root)"
    # Only this entry's index, and keep every other list as it is.
    apt-get update -qq -o Dir::Etc::SourceList="$SOURCES_FILE" -o Dir::Etc::SourceParts=- \
        -o APT::Get::List-Cleanup=0 >&2
    version=$(source_version)
    [ -n "$version" ] || fail "the deb-src index names no source package '$PACKAGE'"
fi

# tests/support/pump.py computes the same two digests to know the prefix is current.
recipe=$(cat scripts/build-pump-client.sh scripts/pump_ssize_fix.py | sha256sum | cut -d' ' -f1)
stamp=$(printf '%s\n%s\n' "$recipe" "$version" | sha256sum | cut -c1-12)
prefix=$CACHE/pump-$stamp
marker=$prefix/.distlb-built
log=$CACHE/pump-$stamp.log

point_current_at_prefix() {
    if [ "$(cat "$CACHE/pump-current" 2>/dev/null)" != "$prefix" ]; then
        printf '%s\n' "$prefix" >"$CACHE/pump-current.tmp"
        mv -f "$CACHE/pump-current.tmp" "$CACHE/pump-current"
    fi
}

if [ -f "$marker" ]; then
    point_current_at_prefix
    exit 0
fi
mkdir -p "$CACHE"
exec 9>"$CACHE/pump.lock"
flock 9  # two bootstraps at once: the second waits, then finds the first one's build
if [ -f "$marker" ]; then
    point_current_at_prefix
    exit 0
fi

started=$SECONDS
echo "build-pump-client: building $PACKAGE $version into $prefix (log: $log)" >&2
# (What an interrupted build left: only the holder of the lock builds.)
rm -rf "$prefix" "$CACHE"/pump-build.*
scratch=$(mktemp -d "$CACHE/pump-build.XXXXXX")
trap 'rm -rf "$scratch"' EXIT

build() {
    mkdir "$scratch/download" "$scratch/src"
    # apt downloads as its own user when it may write there (else it warns).
    if id _apt >/dev/null 2>&1; then chown _apt "$scratch/download"; fi
    # Only the upstream tarball (the archive checks its hash against the signed index);
    # Debian's own patches and packaging are not used.
    (cd "$scratch/download" && apt-get source --download-only --tar-only -q "$PACKAGE=$version")
    local tarballs=("$scratch/download/${PACKAGE}_"*.orig.tar.*)
    [ "${#tarballs[@]}" = 1 ] && [ -f "${tarballs[0]}" ] \
        || { echo "expected one .orig tarball, found: ${tarballs[*]}"; return 1; }
    tar -xf "${tarballs[0]}" -C "$scratch/src"
    local tops=("$scratch/src"/*)
    [ "${#tops[@]}" = 1 ] && [ -d "${tops[0]}" ] \
        || { echo "expected one directory in the tarball, found: ${tops[*]}"; return 1; }
    local srcdir=${tops[0]}
    "$PYTHON" scripts/pump_ssize_fix.py "$srcdir"
    (
        cd "$srcdir"
        ./autogen.sh  # the tarball has configure.ac, no configure
        ./configure --prefix="$prefix" "${CONFIGURE_ARGS[@]}" PYTHON="$PYTHON"
        make -j2
        # The programs, and the include server with a pump that names its location.
        make install-programs install-include-server
    )
    # pump starts the include server from the path written into it at install time,
    # with that directory on PYTHONPATH (the .py files import each other by bare name).
    local include_server
    include_server=$(sed -n "s/^include_server='\(.*\)'\$/\1/p" "$prefix/bin/pump")
    case "$include_server" in
        "$prefix"/*/include_server.py) ;;
        *) echo "pump names no include server inside $prefix: '$include_server'"; return 1 ;;
    esac
    [ -f "$include_server" ] && [ -x "$prefix/bin/distcc" ] \
        || { echo "$prefix lacks bin/distcc or $include_server"; return 1; }
    # The fixed extension: without the fix this raises SystemError on Python >= 3.10.
    PYTHONPATH=$(dirname "$include_server") "$PYTHON" -c 'import sys, distcc_pump_c_extensions as c
sys.exit(not (c.OsPathExists("/") and c.OsPathIsFile("/etc/passwd")))'
    echo "extension check passed: $include_server"
}
# In a subshell of its own, not an `if`: bash ignores `set -e` in a condition's commands.
set +e
(set -e; build) >"$log" 2>&1
status=$?
set -e
if [ "$status" != 0 ]; then
    tail -n "$LOG_LINES_ON_FAILURE" "$log" >&2
    fail "building failed (last $LOG_LINES_ON_FAILURE lines of $log above)"
fi
printf 'recipe=%s\nsource=%s %s\n' "$recipe" "$PACKAGE" "$version" >"$marker"
point_current_at_prefix
echo "build-pump-client: built $prefix in $((SECONDS - started)) s" >&2
