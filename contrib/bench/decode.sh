#!/usr/bin/env bash
# Decode-only throughput: `ctsync capture inspect F` (every frame decoded and counted)
# against the libpcap read floor `tcpdump -r F -w /dev/null`, alternating, median of RUNS;
# and heap allocations on a small and a large capture (they must not grow with frames).
#   contrib/bench/decode.sh                    (makes a 1M-flow capture in $TMPDIR if missing)
#   CAPTURE=/path/big.pcap RUNS=5 contrib/bench/decode.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
ctsync=$(realpath "${CTSYNC:-.build/release/ctsync}")
tmp=${TMPDIR:-/tmp}
big=${CAPTURE:-$tmp/ctsync-bench-1m.pcap}
small=$tmp/ctsync-bench-10k.pcap
runs=${RUNS:-5}
out=contrib/bench/out
mkdir -p "$out"
gen=${GEN_PCAP:-../shared/bench/gen_pcap.py}
[ -f "$big" ] || python3 "$gen" --flows 1000000 --out "$big"
[ -f "$small" ] || python3 "$gen" --flows 10000 --out "$small"
command -v tcpdump >/dev/null || { echo "decode: tcpdump missing" >&2; exit 2; }
cc -O2 -shared -fPIC contrib/bench/malloc_count.c -o "$out/malloc_count.so" -ldl

now() { date +%s.%N; }
t_ct=(); t_td=()
for _ in $(seq "$runs"); do
  a=$(now); tcpdump -r "$big" -w /dev/null 2>/dev/null; b=$(now); t_td+=("$(echo "$b - $a" | bc -l)")
  a=$(now); "$ctsync" capture inspect "$big" >/dev/null; b=$(now); t_ct+=("$(echo "$b - $a" | bc -l)")
done
med() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {printf "%.3f", a[int((NR+1)/2)]}'; }
ct=$(med "${t_ct[@]}"); td=$(med "${t_td[@]}")
frames=$("$ctsync" capture inspect -o json "$big" | sed -E 's/.*"frames":([0-9]+).*/\1/')
m_small=$(LD_PRELOAD=$(realpath "$out/malloc_count.so") "$ctsync" capture inspect "$small" 2>&1 >/dev/null | sed -n 's/mallocs: //p')
m_big=$(LD_PRELOAD=$(realpath "$out/malloc_count.so") "$ctsync" capture inspect "$big" 2>&1 >/dev/null | sed -n 's/mallocs: //p')
f_small=$("$ctsync" capture inspect -o json "$small" | sed -E 's/.*"frames":([0-9]+).*/\1/')
{
echo "| capture | frames | ctsync capture inspect | tcpdump -r F -w /dev/null | ctsync throughput / floor | ctsync Mpps |"
echo "|---|---|---|---|---|---|"
echo "| $(basename "$big") | $frames | ${ct} s | ${td} s | $(echo "scale=3; $td / $ct" | bc -l | sed 's/^\./0./') | $(echo "scale=2; $frames / $ct / 1000000" | bc -l | sed 's/^\./0./') |"
echo
echo "| capture | frames | heap allocations (whole run) |"
echo "|---|---|---|"
echo "| $(basename "$small") | $f_small | $m_small |"
echo "| $(basename "$big") | $frames | $m_big |"
} | tee "$out/decode.md"
