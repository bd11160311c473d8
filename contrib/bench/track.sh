#!/usr/bin/env bash
# Tracking throughput: `ctsync track F` (every frame through the userspace conntrack model)
# side by side, on the same capture and one core each (taskset), with
#   tcpdump -r F -w /dev/null     the libpcap read floor
#   ctsync capture inspect F      decode only (what track costs before any tracking)
#   nfstream                      a flow meter with a C engine (contrib/bench/nfstream_count.py:
#                                 no dissection, no statistics, n_meters=1, every flow counted)
# and the model's memory per tracked entry (one run without -q: its `memory:` line, and the
# max RSS from /usr/bin/time -v, which also counts the resident pages of the mapped capture).
#
#   bash contrib/bench/track.sh              (makes a 1M-flow capture in $TMPDIR if missing)
#   bash contrib/bench/track.sh --install    (first installs nfstream into a venv if missing)
#   CAPTURE=/path/big.pcap RUNS=5 NF_RUNS=3 CPU=0 NFSTREAM=0 CTSYNC=... contrib/bench/track.sh
#
# Timing: RUNS interleaved rounds (tcpdump, inspect, track, nfstream, then again) after one
# untimed warm-up of each fast command, so that drift on a shared machine hits every
# contender alike; nfstream (minutes per run on 1M flows) runs in the first NF_RUNS rounds
# only. Medians are reported, with the range. Prints markdown to stdout (progress on
# stderr) and writes it to contrib/bench/out/track.md; raw times to out/track-times.txt.
set -euo pipefail
shopt -s inherit_errexit
export LC_ALL=C                       # "." as the decimal point in EPOCHREALTIME and awk
cd "$(dirname "$0")/../.."            # every path below is relative to the repository

die() { echo "track-bench: $*" >&2; exit 1; }
say() { echo "track-bench: $*" >&2; }

install=0
for arg in "$@"; do
  case $arg in
    --install) install=1 ;;
    -h|--help) sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0"; exit 0 ;;
    *) echo "track-bench: unknown argument $arg (only --install)" >&2; exit 2 ;;
  esac
done

tmp=${TMPDIR:-/tmp}
cap=${CAPTURE:-$tmp/ctsync-bench-1m.pcap}
flows=${FLOWS:-1000000}               # flows generated when the capture is missing
runs=${RUNS:-5}                       # timed rounds for tcpdump, inspect and track
nf_runs=${NF_RUNS:-3}                 # of which nfstream takes part in the first NF_RUNS
cpu=${CPU:-0}                         # the one core every contender is pinned to
use_nf=${NFSTREAM:-1}
venv=${NFSTREAM_VENV:-/tmp/nfstream-venv}
nf_spec=${NFSTREAM_SPEC:-nfstream==6.6.0}
gen=${GEN_PCAP:-../shared/bench/gen_pcap.py}
out=contrib/bench/out
track_args=(--sysctls builtin --sysctl nf_conntrack_max=4000000 --at 1900000000)

# --- Prerequisites -----------------------------------------------------------------
ctsync=$(realpath -e "${CTSYNC:-.build/release/ctsync}" 2>/dev/null) ||
  die "no ctsync at ${CTSYNC:-.build/release/ctsync} (make release, or set CTSYNC)"
for tool in tcpdump taskset awk; do
  command -v "$tool" >/dev/null || die "$tool not found"
done
if [ ! -x /usr/bin/time ]; then
  if [ "$(id -u)" = 0 ]; then apt-get install -y -qq time >/dev/null 2>&1 || die "cannot install GNU time"
  else die "GNU time missing (apt-get install time)"; fi
fi
mkdir -p "$out"
out=$(realpath "$out")
# Time a copy: a rebuild during the run (minutes, with nfstream) must not swap the binary
# between rounds.
built=$(date -u -r "$ctsync" '+%Y-%m-%d %H:%M UTC')
mkdir -p "$out/bin"
cp "$ctsync" "$out/bin/ctsync"
ctsync=$out/bin/ctsync
ctsync_sum=$(sha256sum "$ctsync" | cut -c1-12)
load0=$(cut -d' ' -f1-3 /proc/loadavg)

nf_py=$venv/bin/python
nf_ok() { [ -x "$nf_py" ] && "$nf_py" -c 'import nfstream' 2>/dev/null; }
if [ "$use_nf" != 0 ] && ! nf_ok; then
  if [ "$install" = 1 ]; then
    say "installing $nf_spec into $venv"
    if [ ! -x "$nf_py" ]; then
      "${PYTHON:-python3}" -m venv "$venv" ||
        die "cannot make a venv at $venv (Debian: apt-get install python3-venv)"
    fi
    "$venv/bin/pip" install -q "$nf_spec" || die "pip install $nf_spec failed"
    nf_ok || die "nfstream installed but does not import in $venv"
  else
    die "nfstream not found in $venv. Run with --install (it does: ${PYTHON:-python3} -m venv $venv && $venv/bin/pip install '$nf_spec'), set NFSTREAM_VENV, or NFSTREAM=0 to leave nfstream out"
  fi
fi

if [ ! -f "$cap" ]; then
  say "no $cap: generating $flows flows with $gen (about 1.5 minutes and 1.2 GB per 1M flows)"
  python3 "$gen" --flows "$flows" --out "$cap"
fi
cap=$(realpath "$cap")

# --- The capture -------------------------------------------------------------------
inspect_json=$("$ctsync" capture inspect -o json "$cap") || die "ctsync capture inspect failed"
jnum() { sed -E "s/.*\"$1\":([0-9]+).*/\1/" <<<"$inspect_json"; }
frames=$(jnum frames)
cap_bytes=$(stat -c %s "$cap")
cap_mib=$(awk -v b="$cap_bytes" 'BEGIN { printf "%.0f", b / 1048576 }')
say "$cap: $frames frames, $cap_mib MiB"

# --- Timing --------------------------------------------------------------------------
# Seconds of one run; stdout to $1, stderr kept in $out/last.err.
timed() {
  local o=$1 a b
  shift
  a=$EPOCHREALTIME
  "$@" >"$o" 2>"$out/last.err" || { say "failed: $* ($(tail -n 3 "$out/last.err"))"; return 1; }
  b=$EPOCHREALTIME
  awk -v a="$a" -v b="$b" 'BEGIN { printf "%.6f\n", b - a }'
}
median() { sort -g | awk '{ v[NR] = $1 } END { if (NR) printf "%.3f", v[int((NR + 1) / 2)] }'; }
range()  { sort -g | awk 'NR == 1 { lo = $1 } { hi = $1 } END { printf "%.3f–%.3f", lo, hi }'; }
ratio()  { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }
mpps()   { awk -v n="$frames" -v s="$1" 'BEGIN { printf "%.3g", n / s / 1e6 }'; }

pin=(taskset -c "$cpu")
names=(floor decode track nfstream)
# shellcheck disable=SC2034  # cmd_floor, cmd_decode and cmd_nfstream are used through `declare -n`
{
  cmd_floor=("${pin[@]}" tcpdump -r "$cap" -w /dev/null)
  cmd_decode=("${pin[@]}" "$ctsync" capture inspect "$cap")
  cmd_track=("${pin[@]}" "$ctsync" track "$cap" "${track_args[@]}" -q)
  cmd_nfstream=("${pin[@]}" "$nf_py" contrib/bench/nfstream_count.py "$cap")
}
declare -A times=()

say "warm-up (also brings the capture into the page cache)"
for name in floor decode track; do
  declare -n cmd=cmd_$name
  timed /dev/null "${cmd[@]}" >/dev/null || die "$name failed"
  unset -n cmd
done

rounds=$runs
[ "$use_nf" != 0 ] && [ "$nf_runs" -gt "$rounds" ] && rounds=$nf_runs
for i in $(seq "$rounds"); do
  for name in "${names[@]}"; do
    if [ "$name" = nfstream ]; then
      { [ "$use_nf" != 0 ] && [ "$i" -le "$nf_runs" ]; } || continue
    else
      [ "$i" -le "$runs" ] || continue
    fi
    declare -n cmd=cmd_$name
    o=/dev/null
    [ "$name" = nfstream ] && o=$out/nfstream.out
    t=$(timed "$o" "${cmd[@]}") || die "$name failed"
    unset -n cmd
    [ "$name" = nfstream ] && cp "$out/last.err" "$out/nfstream.err"
    times[$name]+="$t "
    say "round $i: $name $t s"
  done
done

{
  for name in "${names[@]}"; do echo "$name ${times[$name]:-}"; done
} > "$out/track-times.txt"

vals() { local -a v; read -ra v <<<"${times[$1]}"; printf '%s\n' "${v[@]}"; }
med() { vals "$1" | median; }
rng() { vals "$1" | range; }
cnt() { vals "$1" | wc -l; }

t_floor=$(med floor); t_decode=$(med decode); t_track=$(med track)

# nfstream's flows and track's "connections seen" need not agree: nfstream keys ICMP echo
# without its identifier, so two echo exchanges between the same pair of hosts within its
# idle timeout are one flow to it and two entries to conntrack (on the 1M-flow capture from
# gen_pcap.py, whose client addresses repeat every 131072 flows: 999999 against 1000000).
nf_flows=- nf_version=- nf_meters=-
if [ "$use_nf" != 0 ]; then
  t_nf=$(med nfstream)
  nf_flows=$(sed -n 's/^flows: //p' "$out/nfstream.out" | tail -n 1)
  nf_meters=$(sed -n 's/^nfstream meters: //p' "$out/nfstream.err" | tail -n 1)
  nf_version=$("$nf_py" -c 'import nfstream; print(nfstream.__version__)')
  [ "$nf_meters" = 1 ] || say "nfstream ran with ${nf_meters:-an unknown number of} meters, not 1"
fi

# --- Memory: one run without -q ------------------------------------------------------------
say "memory run (ctsync track without -q, under /usr/bin/time -v)"
/usr/bin/time -v "${cmd_track[@]:0:${#cmd_track[@]}-1}" >/dev/null 2>"$out/track-memory.txt" ||
  die "ctsync track under /usr/bin/time failed: $(tail -n 3 "$out/track-memory.txt")"
summary=$(grep '^ctsync track:' "$out/track-memory.txt") || die "no summary line from ctsync track"
memline=$(grep -E '^ *memory:' "$out/track-memory.txt" | sed 's/^ *//') || die "no memory: line from ctsync track"
conns=$(sed -E 's/.* ([0-9]+) connections seen.*/\1/' <<<"$summary")
anon_mib=$(sed -E 's/^memory: ([0-9]+) MiB anonymous.*/\1/' <<<"$memline")
per_entry=$(sed -E 's/.*\(([0-9]+) bytes per entry.*/\1/' <<<"$memline")
peak=$(sed -E 's/.*at the peak of ([0-9]+) entries.*/\1/' <<<"$memline")
table_mib=$(sed -E 's/.*table storage ([0-9]+) MiB.*/\1/' <<<"$memline")
maxrss_mib=$(awk -F': ' '/Maximum resident set size/ { printf "%.0f", $2 / 1024 }' "$out/track-memory.txt")

# --- Report ----------------------------------------------------------------------------------
row() {  # name, label, command text, time
  local t=$4
  echo "| $2 | \`$3\` | $(cnt "$1") | $t s | $(rng "$1") s | $(mpps "$t") | $(ratio "$t" "$t_track") |"
}
track_cmd="ctsync track F ${track_args[*]} -q"
{
  echo "## Track"
  echo
  echo "\`ctsync track F\` replays every frame of the capture through the conntrack model (built-in"
  echo "sysctls, a limit above the peak, the table shown at a time when every entry has expired, so"
  echo "nothing is printed), side by side with the libpcap read floor$(
    if [ "$use_nf" != 0 ]; then echo ", decode only and nfstream"; else echo " and decode only"; fi)."
  echo "Capture: \`$(basename "$cap")\` from \`../shared/bench/gen_pcap.py\`, $frames frames, $cap_mib MiB."
  if [ "$use_nf" != 0 ]; then
    echo "Every contender pinned to one core (\`taskset -c $cpu\`), one process each except nfstream"
    echo "(one meter process, n_meters=$nf_meters, feeding the Python process that counts the flows,"
    echo "both on that core); interleaved rounds after an untimed warm-up of the fast commands;"
  else
    echo "Every contender pinned to one core (\`taskset -c $cpu\`), one process each; interleaved rounds"
    echo "after an untimed warm-up;"
  fi
  echo "median wall time (the lower middle one for an even number of runs) and range (min–max)."
  echo
  echo '```sh'
  echo "bash contrib/bench/track.sh     # --install: nfstream into $venv first; CAPTURE=… RUNS=… NF_RUNS=…"
  echo '```'
  echo
  echo "| contender | command | runs | median | range | Mpps | track throughput / this |"
  echo "|---|---|---|---|---|---|---|"
  row floor "libpcap read floor" "tcpdump -r F -w /dev/null" "$t_floor"
  row decode "decode only" "ctsync capture inspect F" "$t_decode"
  row track "ctsync track" "$track_cmd" "$t_track"
  if [ "$use_nf" != 0 ]; then
    row nfstream "nfstream $nf_version" "NFStreamer(source=F, statistical_analysis=False, n_dissections=0, n_meters=1)" "$t_nf"
  fi
  echo
  echo "Ratios of throughput (packets per second; above 1 means track is faster):"
  echo "track / tcpdump floor $(ratio "$t_floor" "$t_track"), track / decode only $(ratio "$t_decode" "$t_track")$(
    [ "$use_nf" != 0 ] && echo ", track / nfstream $(ratio "$t_nf" "$t_track")")."
  echo
  echo "| ctsync track, one run without -q | |"
  echo "|---|---|"
  echo "| summary | $summary |"
  echo "| peak entries | $peak |"
  echo "| anonymous memory at the peak (its \`memory:\` line) | $anon_mib MiB, **$per_entry bytes per entry** (table storage $table_mib MiB) |"
  echo "| max RSS (\`/usr/bin/time -v\`) | $maxrss_mib MiB, which includes the resident pages of the mapped $cap_mib MiB capture |"
  if [ "$use_nf" != 0 ]; then
    echo "| connections seen (ctsync) / flows (nfstream) | $conns / $nf_flows |"
  fi
  echo
  echo "ctsync release binary built $built (sha256 $ctsync_sum…), repository at $(git rev-parse --short HEAD 2>/dev/null || echo "?");"
  echo "load average $load0 at the start, $(cut -d' ' -f1-3 /proc/loadavg) at the end."
  echo "Kernel $(uname -r), $(nproc) CPUs, $(tcpdump --version 2>&1 | head -n 1), $(tcpdump --version 2>&1 | sed -n 2p)$(
    [ "$use_nf" != 0 ] && echo ", nfstream $nf_version on $("$nf_py" -V 2>&1)"); timed with a shell loop (bash EPOCHREALTIME)."
} | tee "$out/track.md"
