#!/bin/sh
# Print keepalived.conf for one balancer node from the template (argument 1, default
# /etc/distlb/keepalived.conf.template), with a unicast peer.
# Environment: NODE, PRIORITY, SELF_IP, PEER_IP, VIP (with /prefix); VRID (63),
# INTERFACE (eth0), ADMIN_PORT (3634).
set -eu
: "${NODE:?}" "${PRIORITY:?}" "${SELF_IP:?}" "${PEER_IP:?}" "${VIP:?}"
template=${1:-/etc/distlb/keepalived.conf.template}
unicast="unicast_src_ip $SELF_IP\n    unicast_peer {\n        $PEER_IP\n    }"
# sed for the one-line placeholders, awk for the unicast block (awk -v turns the \n
# escapes into newlines).
sed -e "s|{{ROUTER_ID}}|distlb_$NODE|" -e "s|{{ADMIN_PORT}}|${ADMIN_PORT:-3634}|" \
    -e "s|{{INTERFACE}}|${INTERFACE:-eth0}|g" -e "s|{{VRID}}|${VRID:-63}|" \
    -e "s|{{PRIORITY}}|$PRIORITY|" -e "s|{{VIP}}|$VIP|" "$template" \
  | awk -v block="$unicast" '{ if (index($0, "{{UNICAST}}")) print "    " block; else print }'
