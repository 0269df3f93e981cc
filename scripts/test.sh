#!/usr/bin/env bash
# The whole test suite: installs what it needs, checks style and types, runs pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh test
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/mypy wire cache client daemon server balancer tests bench scripts/lock.py
exec .venv/bin/python -m pytest -n 2 "$@"
