#!/usr/bin/env bash
# The whole test suite: installs what it needs, checks style and types, runs pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh test
.venv/bin/ruff check .
.venv/bin/ruff format --check .
# cache/ and balancer/ join when they exist.
.venv/bin/mypy $(for pkg in wire cache client daemon server balancer; do [ -d "$pkg" ] && echo "$pkg"; done)
exec .venv/bin/python -m pytest "$@"
