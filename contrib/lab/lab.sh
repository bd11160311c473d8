#!/usr/bin/env bash
# Namespace lab: client -- router -- server, plus a standby router beside the router.
# Documentation addresses only, inside the namespaces only; nft rules activate conntrack
# on both routers. Usage:
#   contrib/lab/lab.sh up [PREFIX]     build (tearing down any leftover of the same PREFIX first)
#   contrib/lab/lab.sh down [PREFIX]   remove every namespace of PREFIX
#   contrib/lab/lab.sh exec PREFIX NODE CMD...   run CMD in PREFIX-NODE (client|router|standby|server)
# PREFIX defaults to "ctlab"; tests use a unique one so runs never collide.
set -euo pipefail

cmd=${1:-}
prefix=${2:-ctlab}
nodes=(client router standby server)

down() {
  for n in "${nodes[@]}"; do ip netns del "$prefix-$n" 2>/dev/null || true; done
}

up() {
  [ "$(id -u)" = 0 ] || { echo "lab: needs root (ip netns)" >&2; exit 2; }
  down
  for n in "${nodes[@]}"; do ip netns add "$prefix-$n"; ip -n "$prefix-$n" link set lo up; done
  local c="$prefix-client" r="$prefix-router" s="$prefix-server" b="$prefix-standby"
  # client <-> router (198.51.100.0/24, 2001:db8:1::/64)
  ip link add c0 netns "$c" type veth peer name r0 netns "$r"
  # router <-> server (203.0.113.0/24, 2001:db8:2::/64)
  ip link add r1 netns "$r" type veth peer name s0 netns "$s"
  # router <-> standby sync link (192.0.2.0/24, 2001:db8:3::/64)
  ip link add r2 netns "$r" type veth peer name b2 netns "$b"
  ip -n "$c" addr add 198.51.100.2/24 dev c0
  ip -n "$r" addr add 198.51.100.1/24 dev r0
  ip -n "$r" addr add 203.0.113.1/24 dev r1
  ip -n "$s" addr add 203.0.113.2/24 dev s0
  ip -n "$r" addr add 192.0.2.1/24 dev r2
  ip -n "$b" addr add 192.0.2.2/24 dev b2
  ip -n "$c" -6 addr add 2001:db8:1::2/64 dev c0 nodad
  ip -n "$r" -6 addr add 2001:db8:1::1/64 dev r0 nodad
  ip -n "$r" -6 addr add 2001:db8:2::1/64 dev r1 nodad
  ip -n "$s" -6 addr add 2001:db8:2::2/64 dev s0 nodad
  ip -n "$r" -6 addr add 2001:db8:3::1/64 dev r2 nodad
  ip -n "$b" -6 addr add 2001:db8:3::2/64 dev b2 nodad
  for l in "$c:c0" "$r:r0" "$r:r1" "$s:s0" "$r:r2" "$b:b2"; do ip -n "${l%%:*}" link set "${l##*:}" up; done
  ip -n "$c" route add default via 198.51.100.1
  ip -n "$s" route add default via 203.0.113.1
  ip -n "$c" -6 route add default via 2001:db8:1::1
  ip -n "$s" -6 route add default via 2001:db8:2::1
  for n in "$r" "$b"; do
    ip netns exec "$n" sysctl -qw net.ipv4.ip_forward=1 net.ipv6.conf.all.forwarding=1
    # A forward and an input/output rule that look at ct state make the kernel track every flow.
    ip netns exec "$n" nft -f - <<'NFT'
table inet ctlab {
  chain forward {
    type filter hook forward priority 0; policy accept;
    ct state invalid counter
    ct state new counter
  }
  chain input {
    type filter hook input priority 0; policy accept;
    ct state new counter
  }
  chain output {
    type filter hook output priority 0; policy accept;
    ct state new counter
  }
}
NFT
  done
}

case "$cmd" in
  up) up ;;
  down) down ;;
  exec) shift 2; node=$1; shift; exec ip netns exec "$prefix-$node" "$@" ;;
  *) echo "usage: $0 up|down|exec [PREFIX] ..." >&2; exit 2 ;;
esac
