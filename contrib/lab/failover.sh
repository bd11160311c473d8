#!/usr/bin/env bash
# High-availability lab for the failover test (issue 6): client -- [router | standby] -- server.
#
#   client (198.51.100.2) --- switch "lan" --- router r0 / standby b0 (VIP 198.51.100.1)
#   server (203.0.113.2)  --- switch "wan" --- router r1 / standby b1 (VIP 203.0.113.1)
#   router sync0 (192.0.2.1) --- standby sync1 (192.0.2.2): the sync link (names conntrackd
#   1.4.7's configuration parser accepts: it refuses "b2")
#
# The switches are bridges in their own namespaces. Both routers run the same strict
# ruleset (forward: established/related accepted; new only with a TCP SYN or UDP from the
# client side; nf_conntrack_tcp_loose=0), so a router without the connection's state drops
# its packets. The virtual addresses start on the router; `takeover` moves them to the
# standby (and flushes the end hosts' neighbour entries, as a gratuitous ARP would).
#
#   contrib/lab/failover.sh up PREFIX | down PREFIX | takeover PREFIX
set -euo pipefail

cmd=${1:-}
p=${2:-ctha}
nodes=(client router standby server lan wan)

down() { for n in "${nodes[@]}"; do ip netns del "$p-$n" 2>/dev/null || true; done; }

ruleset() {
  ip netns exec "$1" nft -f - <<'NFT'
table inet ha {
  chain forward {
    type filter hook forward priority 0; policy drop;
    ct state established,related accept
    iifname { "r0", "b0" } tcp flags & (syn | ack | fin | rst) == syn ct state new accept
    iifname { "r0", "b0" } meta l4proto udp ct state new accept
    iifname { "r0", "b0" } meta l4proto icmp ct state new accept
    counter
  }
  chain output { type filter hook output priority 0; policy accept; ct state new counter; }
  chain input { type filter hook input priority 0; policy accept; ct state new counter; }
}
NFT
}

up() {
  [ "$(id -u)" = 0 ] || { echo "failover lab: needs root" >&2; exit 2; }
  down
  for n in "${nodes[@]}"; do ip netns add "$p-$n"; ip -n "$p-$n" link set lo up; done
  for sw in lan wan; do
    ip -n "$p-$sw" link add name sw type bridge
    ip -n "$p-$sw" link set sw up
  done
  # a veth from NODE (name IF) into switch SW
  plug() { ip link add "$2" netns "$p-$1" type veth peer name "$1-$2" netns "$p-$3"
           ip -n "$p-$3" link set "$1-$2" master sw up; ip -n "$p-$1" link set "$2" up; }
  plug client c0 lan; plug router r0 lan; plug standby b0 lan
  plug server s0 wan; plug router r1 wan; plug standby b1 wan
  ip link add sync0 netns "$p-router" type veth peer name sync1 netns "$p-standby"
  ip -n "$p-router" link set sync0 up; ip -n "$p-standby" link set sync1 up
  ip -n "$p-client" addr add 198.51.100.2/24 dev c0
  ip -n "$p-server" addr add 203.0.113.2/24 dev s0
  ip -n "$p-router" addr add 198.51.100.11/24 dev r0
  ip -n "$p-router" addr add 203.0.113.11/24 dev r1
  ip -n "$p-standby" addr add 198.51.100.12/24 dev b0
  ip -n "$p-standby" addr add 203.0.113.12/24 dev b1
  ip -n "$p-router" addr add 192.0.2.1/24 dev sync0
  ip -n "$p-standby" addr add 192.0.2.2/24 dev sync1
  # the virtual addresses start on the router
  ip -n "$p-router" addr add 198.51.100.1/24 dev r0
  ip -n "$p-router" addr add 203.0.113.1/24 dev r1
  ip -n "$p-client" route add default via 198.51.100.1
  ip -n "$p-server" route add default via 203.0.113.1
  for n in router standby; do
    ip netns exec "$p-$n" sysctl -qw net.ipv4.ip_forward=1 net.ipv6.conf.all.disable_ipv6=1
    ruleset "$p-$n"
    ip netns exec "$p-$n" sysctl -qw net.netfilter.nf_conntrack_tcp_loose=0
  done
}

takeover() {
  ip -n "$p-router" addr del 198.51.100.1/24 dev r0 2>/dev/null || true
  ip -n "$p-router" addr del 203.0.113.1/24 dev r1 2>/dev/null || true
  ip -n "$p-router" link set r0 down
  ip -n "$p-router" link set r1 down
  ip -n "$p-standby" addr add 198.51.100.1/24 dev b0
  ip -n "$p-standby" addr add 203.0.113.1/24 dev b1
  ip -n "$p-client" neigh flush dev c0
  ip -n "$p-server" neigh flush dev s0
}

case "$cmd" in
  up) up ;;
  down) down ;;
  takeover) takeover ;;
  *) echo "usage: $0 up|down|takeover [PREFIX]" >&2; exit 2 ;;
esac
