#!/usr/bin/env bash
# Sets everything up and starts a local farm on the built-in default config
# (configs/farm/), in the foreground; Ctrl-C stops it.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh
mkdir -p .farm
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    wait || true
}
trap cleanup EXIT INT TERM
for cfg in configs/farm/server-*.toml; do
    name=$(basename "$cfg" .toml)
    .venv/bin/distlb-server --config "$cfg" --log-format json 2>".farm/$name.log" &
    pids+=($!)
done
# Ready when every status page answers (bounded: 30 s).
for port in $(sed -n 's/^stats-port *= *\([0-9]*\)/\1/p' configs/farm/server-*.toml); do
    for _ in $(seq 300); do
        curl -fsS "http://127.0.0.1:$port/status" >/dev/null 2>&1 && break
        sleep 0.1
    done
    curl -fsS "http://127.0.0.1:$port/status" >/dev/null || { echo "farm: server on stats port $port did not start; see .farm/" >&2; exit 1; }
done
hosts=$(sed -n 's/^port *= *\([0-9]*\)/127.0.0.1:\1\/4,lzo/p' configs/farm/server-*.toml | tr '\n' ' ')
stats=$(sed -n 's/^stats-port *= *\([0-9]*\)/http:\/\/127.0.0.1:\1\/status/p' configs/farm/server-*.toml | tr '\n' ' ')
cat <<MSG
distlb farm running (logs in .farm/). Use it from distcc:

    export DISTCC_HOSTS="${hosts% }"
    make -j8 CC="distcc gcc"

Status: ${stats% }
Ctrl-C stops the farm.
MSG
wait
