#!/usr/bin/env bash
# Dump and batched-create benchmark, ctsync side by side with conntrack(8) and two C
# programs (the raw netlink dump floor, and one create per netlink request through
# libnetfilter_conntrack), all in one run, in a throwaway network namespace.
#   contrib/bench/run.sh            (make bench builds ctsync in release mode first)
#   SIZES="100000 250000" RUNS=5 CTSYNC=.build/release/ctsync contrib/bench/run.sh
# Prints a markdown table and writes it to contrib/bench/out/results.md.
set -euo pipefail
cd "$(dirname "$0")/../.."
ctsync=$(realpath "${CTSYNC:-.build/release/ctsync}")
sizes=${SIZES:-"100000 250000"}
runs=${RUNS:-5}
out=contrib/bench/out
mkdir -p "$out"
[ "$(id -u)" = 0 ] || { echo "bench: needs root (network namespaces)" >&2; exit 2; }
[ -x "$ctsync" ] || { echo "bench: $ctsync not built (make release)" >&2; exit 2; }
command -v /usr/bin/time >/dev/null || apt-get install -y -qq time >/dev/null
cc -O2 contrib/bench/ctdump_floor.c $(pkg-config --cflags --libs libmnl) -o "$out/ctdump_floor"
cc -O2 contrib/bench/ct_create_loop.c $(pkg-config --cflags --libs libnetfilter_conntrack) -o "$out/ct_create_loop"
floor=$(realpath "$out/ctdump_floor"); loop=$(realpath "$out/ct_create_loop")

ns=ctbench$$
cleanup() { ip netns del "$ns" 2>/dev/null || true; }
trap cleanup EXIT
fresh() {
  cleanup
  ip netns add "$ns"
  # A rule that looks at ct state makes conntrack active in the namespace.
  ip netns exec "$ns" nft -f - <<'NFT'
table inet bench {
  chain out {
    type filter hook output priority 0; policy accept;
    ct state new counter
  }
}
NFT
}
in_ns() { ip netns exec "$ns" "$@"; }

# N save lines with unique UDP tuples (documentation addresses only).
gen() {
  python3 - "$1" <<'PY'
import sys
n = int(sys.argv[1])
for i in range(n):
    print(f"-I -p udp -s 198.51.100.{1 + i % 250} -d 203.0.113.{1 + (i // 250) % 250} --sport {1024 + i // 62500} --dport 53 -t 600")
PY
}

now() { date +%s.%N; }
# Median wall time of $runs runs of a command (stdout and stderr discarded).
median() {
  local t=()
  for _ in $(seq "$runs"); do
    local a b; a=$(now); "$@" >/dev/null 2>&1; b=$(now)
    t+=("$(echo "$b - $a" | bc -l)")
  done
  printf '%s\n' "${t[@]}" | sort -g | awk '{a[NR]=$1} END {printf "%.3f", a[int((NR+1)/2)]}'
}
ratio() { echo "scale=3; $1 / $2" | bc -l | sed 's/^\./0./'; }

command -v bc >/dev/null || apt-get install -y -qq bc >/dev/null
max=$(cat /proc/sys/net/netfilter/nf_conntrack_max)
{
echo "| entries | ctsync dump -o extended | ctsync dump -o json | conntrack -L -o extended | raw dump floor (C) | extended / conntrack | json / conntrack | extended / floor | json / floor | floor / conntrack | peak RSS ctsync dump |"
echo "|---|---|---|---|---|---|---|---|---|---|---|"
} > "$out/dump.md"
{
echo "| entries | ctsync conntrack -R (batched) | C, one request per entry (libnetfilter_conntrack) | conntrack -I, one process per entry | ctsync / C | ctsync / conntrack -I |"
echo "|---|---|---|---|---|---|"
} > "$out/create.md"

for n in $sizes; do
  if [ "$n" -ge "$max" ]; then
    echo "bench: nf_conntrack_max is $max, below $n; raise it first" >&2; exit 2
  fi
  gen "$n" > "$out/fill.txt"

  # Batched create: median of 3 fills of a fresh table.
  create_t=()
  for _ in 1 2 3; do
    fresh
    a=$(now); in_ns "$ctsync" conntrack -R "$out/fill.txt" >/dev/null 2>&1; b=$(now)
    create_t+=("$(echo "$b - $a" | bc -l)")
  done
  ct_s=$(printf '%s\n' "${create_t[@]}" | sort -g | sed -n 2p)
  ctsync_rate=$(echo "$n / $ct_s" | bc -l | cut -d. -f1)
  [ "$(in_ns conntrack -C)" = "$n" ] || { echo "bench: fill did not create $n entries" >&2; exit 1; }

  # Dumps of the same table, side by side.
  ext=$(median in_ns "$ctsync" dump -o extended)
  json=$(median in_ns "$ctsync" dump -o json)
  ref=$(median in_ns conntrack -L -o extended)
  flo=$(median in_ns "$floor")
  rss=$(in_ns /usr/bin/time -f %M "$ctsync" dump -o extended 2>&1 >/dev/null | tail -1)
  echo "| $n | ${ext} s | ${json} s | ${ref} s | ${flo} s | $(ratio "$ext" "$ref") | $(ratio "$json" "$ref") | $(ratio "$ext" "$flo") | $(ratio "$json" "$flo") | $(ratio "$flo" "$ref") | $((rss / 1024)) MiB |" >> "$out/dump.md"

  # Baselines for creating: the C loop on N entries, conntrack -I processes on 2000.
  fresh
  c_rate=$(in_ns "$loop" "$n")
  fresh
  head -2000 "$out/fill.txt" | sed 's/^-I //' > "$out/fill2000.txt"
  a=$(now)
  while read -r line; do in_ns conntrack -I $line >/dev/null 2>&1; done < "$out/fill2000.txt"
  b=$(now)
  cli_rate=$(echo "2000 / ($b - $a)" | bc -l | cut -d. -f1)
  echo "| $n | ${ctsync_rate}/s | ${c_rate}/s | ${cli_rate}/s | $(ratio "$ctsync_rate" "$c_rate") | $(ratio "$ctsync_rate" "$cli_rate") |" >> "$out/create.md"
done

{
  echo "Dump to /dev/null, median of $runs runs:"; echo; cat "$out/dump.md"; echo
  echo "Create (batched load of save lines vs one request per entry):"; echo; cat "$out/create.md"
} | tee "$out/results.md"
