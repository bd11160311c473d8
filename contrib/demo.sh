#!/usr/bin/env bash
# make demo: build the namespace lab, capture TCP, UDP and ICMP traffic on the router,
# predict the router's conntrack table from the capture with `ctsync track`, and show it
# beside the kernel's own table (`ctsync dump`), with the difference.
# Without root there is no lab: the model runs on a bundled capture, and the bundled
# snapshot is shown instead of a kernel table.
set -euo pipefail
ctsync=${1:-.build/debug/ctsync}
if [ "$(id -u)" != 0 ]; then
  capture=Tests/IntegrationTests/Fixtures/captures/mixed.pcap
  echo "== not root: no namespace lab; the model on the bundled capture $capture"
  "$ctsync" track "$capture" --sysctls builtin -o extended
  echo "== and the bundled snapshot contrib/demo/snapshot.jsonl"
  "$ctsync" show contrib/demo/snapshot.jsonl -o extended
  exit 0
fi
prefix=ctdemo$$
work=$(mktemp -d)
trap 'bash contrib/lab/lab.sh down $prefix; rm -rf "$work"' EXIT
bash contrib/lab/lab.sh up $prefix
lab() { node=$1; shift; ip netns exec "$prefix-$node" "$@"; }
lab router sysctl -qw net.netfilter.nf_conntrack_acct=1
# Capture everything the router sees (-i any: forwarded packets in and out).
ip netns exec "$prefix-router" tcpdump -q -U --immediate-mode -s 65535 -B 65536 -i any -w "$work/router.pcap" 2>"$work/tcpdump.err" &
capture=$!
for _ in $(seq 50); do grep -q listening "$work/tcpdump.err" 2>/dev/null && break; sleep 0.1; done
# The servers end by themselves; the lab is torn down on exit.
lab server sh -c 'timeout 5 nc -l 203.0.113.2 8080 >/dev/null 2>&1 & timeout 5 nc -u -l 203.0.113.2 5353 >/dev/null 2>&1 &'
sleep 0.3
lab client ping -c 2 -i 0.2 203.0.113.2 >/dev/null
lab client ping -c 1 -W 2 2001:db8:2::2 >/dev/null || true
echo hello | lab client nc -q 1 -w 2 203.0.113.2 8080 || true
echo query | lab client nc -u -q 1 -w 1 203.0.113.2 5353 || true
sleep 0.5
kill -INT $capture; wait $capture || true
echo "== ctsync track router.pcap -o extended (the model, from the capture)"
lab router "$ctsync" track "$work/router.pcap" --at now -o extended | sort > "$work/model.txt"
cat "$work/model.txt"
echo "== ctsync dump -o extended (the router's kernel)"
lab router "$ctsync" dump -o extended | sort > "$work/kernel.txt"
cat "$work/kernel.txt"
echo "== difference (timeouts may differ by a second: the two were read at different instants)"
strip() { sed -E 's/^(\S+ +\S+ +\S+ +\S+ +)[0-9]+ /\1T /' "$1"; }
if diff <(strip "$work/model.txt") <(strip "$work/kernel.txt"); then echo "none: the model predicted every entry"; fi
echo "== ctsync dump -o json (router)"
lab router "$ctsync" dump -o json
echo "== ctsync count / stats (router)"
lab router "$ctsync" count
lab router "$ctsync" stats
