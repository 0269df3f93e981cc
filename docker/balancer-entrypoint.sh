#!/bin/sh
# A balancer container: keepalived (VRRP with a unicast peer, owning the VIP while
# this node's /healthz answers) in the background, distlb-balancer in the foreground.
# Environment: see render-keepalived; the arguments are the balancer's flags.
set -eu
mkdir -p /etc/keepalived
render-keepalived > /etc/keepalived/keepalived.conf
keepalived --use-file /etc/keepalived/keepalived.conf --dont-fork --log-console --vrrp \
    --no-syslog &
keepalived_pid=$!
distlb-balancer "$@" &
balancer_pid=$!
# SIGTERM goes to the balancer (it drains its jobs); keepalived stops after it, so the
# VIP moves to the peer once this node's /healthz has failed.
trap 'kill -TERM "$balancer_pid" 2>/dev/null || true' INT TERM
wait "$balancer_pid" || wait "$balancer_pid" || true
kill -TERM "$keepalived_pid" 2>/dev/null || true
wait "$keepalived_pid" || true
