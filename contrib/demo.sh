#!/usr/bin/env bash
# make demo: build the namespace lab, make TCP, UDP and ICMP traffic through the router,
# and show the router's conntrack table as conntrack text and as JSON lines.
# Without root there is no lab: the bundled snapshot is shown in every format instead.
set -euo pipefail
ctsync=${1:-.build/debug/ctsync}
if [ "$(id -u)" != 0 ]; then
  echo "== not root: no namespace lab; showing the bundled snapshot contrib/demo/snapshot.jsonl"
  "$ctsync" show contrib/demo/snapshot.jsonl -o extended
  "$ctsync" show contrib/demo/snapshot.jsonl -o save
  exit 0
fi
prefix=ctdemo$$
trap 'bash contrib/lab/lab.sh down $prefix' EXIT
bash contrib/lab/lab.sh up $prefix
lab() { node=$1; shift; ip netns exec "$prefix-$node" "$@"; }
# The servers end by themselves; the lab is torn down on exit.
lab server sh -c 'timeout 5 nc -l 203.0.113.2 8080 >/dev/null 2>&1 & timeout 5 nc -u -l 203.0.113.2 5353 >/dev/null 2>&1 &'
sleep 0.3
lab client ping -c 2 -i 0.2 203.0.113.2 >/dev/null
lab client ping -c 1 -W 2 2001:db8:2::2 >/dev/null || true
echo hello | lab client nc -q 1 -w 2 203.0.113.2 8080 || true
echo query | lab client nc -u -q 1 -w 1 203.0.113.2 5353 || true
echo "== ctsync dump -o extended (router)"
lab router "$ctsync" dump -o extended
echo "== ctsync dump -o json (router)"
lab router "$ctsync" dump -o json
echo "== ctsync count / stats (router)"
lab router "$ctsync" count
lab router "$ctsync" stats
