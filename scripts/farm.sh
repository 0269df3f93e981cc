#!/usr/bin/env bash
# Sets everything up and starts a local farm on the built-in default config
# (configs/farm/), in the foreground; Ctrl-C stops it.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh farm
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
.venv/bin/distlb-balancer --config configs/farm/balancer.toml --log-format json 2>.farm/balancer.log &
pids+=($!)
# Ready when every status page answers (bounded: 30 s).
for port in $(sed -n 's/^\(stats\|admin\)-port *= *\([0-9]*\)/\2/p' configs/farm/*.toml); do
    for _ in $(seq 300); do
        curl -fsS "http://127.0.0.1:$port/status" >/dev/null 2>&1 && break
        sleep 0.1
    done
    curl -fsS "http://127.0.0.1:$port/status" >/dev/null || { echo "farm: server on stats port $port did not start; see .farm/" >&2; exit 1; }
done
port=$(sed -n 's/^port *= *\([0-9]*\)/\1/p' configs/farm/balancer.toml)
admin=$(sed -n 's/^admin-port *= *\([0-9]*\)/\1/p' configs/farm/balancer.toml)
# ... and the balancer has backends in rotation (/healthz turns 200; bounded: 30 s).
for _ in $(seq 300); do
    curl -fsS "http://127.0.0.1:$admin/healthz" >/dev/null 2>&1 && break
    sleep 0.1
done
curl -fsS "http://127.0.0.1:$admin/healthz" >/dev/null || { echo "farm: the balancer has no healthy backend; see .farm/" >&2; exit 1; }
cat <<MSG
distlb farm running: one balancer in front of $(ls configs/farm/server-*.toml | wc -l) servers (logs in .farm/).
Use it from distcc:

    export DISTCC_HOSTS="127.0.0.1:$port/8,lzo" DISTCC_BACKOFF_PERIOD=1
    make -j8 CC="distcc gcc"

Dashboard: http://127.0.0.1:$admin/   (JSON: /status, Prometheus: /metrics)
Ctrl-C stops the farm.
MSG
wait
