#!/usr/bin/env bash
# Load, commit and sync apply benchmark (issue 5): putting N entries into an empty kernel
# table, side by side, in one run:
#   ctsync snapshot load A          batched netlink creates from a snapshot file
#   conntrack -I, once per entry    what a shell script without ctsync does (CLI_N timed,
#                                   rate extrapolated)
#   conntrackd -c                   conntrackd 1.4.7 (FTFW over UDP between two namespaces)
#                                   committing its external cache into the standby's table,
#                                   and the replication that filled that cache
#   ctsync sync snapshot:B --apply  a table holding A made equal to B (1% differs), and
#   ctsync sync snapshot:A --apply  an empty table made equal to A (N creates)
# Every table is in a throwaway network namespace (never the host's table).
#
#   bash contrib/bench/load.sh                     (needs root; installs conntrackd if missing)
#   N=100000 RUNS=3 CLI_N=2000 CTSYNC=.build/release/ctsync bash contrib/bench/load.sh
#
# Prints a markdown table to stdout (progress goes to stderr) and writes it to
# contrib/bench/out/load.md. With RUNS > 1 every figure is the median of RUNS runs.
set -euo pipefail
shopt -s inherit_errexit
export LC_ALL=C                       # "." as the decimal point in EPOCHREALTIME and awk
cd "$(dirname "$0")/../.."            # every path below is relative to the repository

n=${N:-100000}
runs=${RUNS:-1}
cli_n=${CLI_N:-2000}                  # conntrack -I processes timed, rate extrapolated
port=${PORT:-3780}                    # conntrackd's UDP port on the veth link
cd_wait=${CD_WAIT:-300}               # seconds to wait for conntrackd's replication
out=contrib/bench/out
ns_a=ctload$$a                        # the table of every single-table stage; conntrackd's active
ns_b=ctload$$b                        # conntrackd's standby

bench=load-bench
. contrib/bench/lib.sh

# --- Prerequisites -----------------------------------------------------------------
ctsync=$(prerequisites)

mkdir -p "$out"
out=$(realpath "$out")
tmp=$(mktemp -d "${TMPDIR:-/tmp}/ctload.XXXXXX")

# --- Namespaces, limits, cleanup ---------------------------------------------------------
limits_init
notes=()
pids=()                               # conntrackd daemons started by this script

cleanup() {
  stop_pids
  drop_ns "$ns_a"
  drop_ns "$ns_b"
  limits_restore
  rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# A fresh namespace (lib.sh); conntrackd's sync traffic left untracked.
fresh_ns() { bench_ns "$1" "udp dport $port"; }

# --- Timing ------------------------------------------------------------------------------
# "seconds exit-status" of one run of a command, measured inside the namespace so that
# ip netns exec's own start-up is not counted. Stdout is discarded, stderr kept in ERRFILE.
timed() {
  local ns=$1 err=$2; shift 2
  in_ns "$ns" env ERR="$err" bash -c \
    'a=$EPOCHREALTIME; "$@" >/dev/null 2>"$ERR"; rc=$?; b=$EPOCHREALTIME; echo "$a $b $rc"' timed "$@" |
    awk '{ printf "%.6f %d\n", $2 - $1, $3 }'
}
rate() { awk -v n="$1" -v s="$2" 'BEGIN { printf "%.0f", n / s }'; }

# What a table holds compared with snapshot FILE, leaving out timeouts (they run down) and
# counters (ctnetlink cannot set them): "same as A" or "N divergences from A".
fidelity() {
  local first
  first=$(in_ns "$1" "$ctsync" diff "snapshot:$2" kernel --ignore timeout,counters 2>/dev/null | head -1) || true
  case "$first" in
    *"no divergence"*) echo "same as $3" ;;
    *divergences*) echo "$(sed 's/.* \([0-9]*\) divergences.*/\1/' <<<"$first") divergences from $3" ;;
    *) echo "diff failed" ;;
  esac
}

cache_count() {   # NS NODE WHICH: objects in conntrackd's internal or external cache
  in_ns "$1" conntrackd -C "$tmp/$2.conf" -s cache 2>/dev/null |
    awk -v w="cache:$3" '$1 == w { print $NF; f = 1 } END { exit !f }'
}
start_conntrackd() {   # NS NODE
  # ip netns exec (not the in_ns function, which would fork a shell) so that $! is
  # conntrackd's own pid: ip netns exec execs the command.
  ip netns exec "$1" conntrackd -C "$tmp/$2.conf" > "$tmp/$2.out" 2>&1 &
  pids+=($!)
  local i
  for i in $(seq 200); do
    cache_count "$1" "$2" internal >/dev/null && return 0
    kill -0 "${pids[-1]}" 2>/dev/null || die "conntrackd ($2) exited: $(tail -3 "$tmp/$2.out")"
    sleep 0.05
  done
  die "conntrackd ($2) did not answer on its control socket"
}

# --- Snapshots -----------------------------------------------------------------------------
say "writing two $n-entry snapshots"
python3 contrib/bench/make_snapshots.py "$n" "$tmp/A.raw" "$tmp/B.raw"
for f in A B; do mv "$tmp/$f.raw" "$tmp/$f.jsonl"; done
A=$tmp/A.jsonl B=$tmp/B.jsonl
# conntrackd's stage takes longer than the 30 s of the UDP and the 120 s of the TIME_WAIT
# entries; give those an hour there so that nothing expires while it replicates.
sed -E 's/"timeout":(30|120),/"timeout":3600,/' "$A" > "$tmp/A-long.jsonl"
# conntrack -I arguments: `ctsync show -o save` lines, `-A` made `-I`. conntrack 1.4.7
# accepts all of it except --label-add, which resolves label names through
# /etc/xtables/connlabel.conf (absent: "unknown label '0'"); that option is dropped, so 1 in
# 40 of these entries are created without their labels.
"$ctsync" show "$A" -o save |   # sed reads it all (head would end ctsync with SIGPIPE)
  sed -E -n "1,${cli_n}{s/^-A /-I /; s/ --label-add [^ ]+//; p}" > "$tmp/cli.txt"
k=$(wc -l < "$tmp/cli.txt")

load_t=() load_check=""
cli_t=() cli_check=""
repl_t=() repl_n=() repl_check="" commit_t=() commit_n=() commit_log_t=() commit_client_t=() cd_check=""
syncb_t=() syncb_w=() syncb_left="" synca_t=() synca_check=""
keep_t=()

for run in $(seq "$runs"); do
  say "run $run of $runs"

  # --- 1. ctsync snapshot load into an empty table -------------------------------------
  fresh_ns "$ns_a"
  read -r t rc < <(timed "$ns_a" "$tmp/load.err" "$ctsync" snapshot load "$A") || die "timing failed"
  [ "$rc" = 0 ] || die "ctsync snapshot load exited $rc: $(tail -3 "$tmp/load.err")"
  c=$(in_ns "$ns_a" "$ctsync" count)
  [ "$c" = "$n" ] || die "ctsync snapshot load: $c of $n entries in the table ($(tail -1 "$tmp/load.err"))"
  load_t+=("$t")
  [ "$run" = 1 ] && load_check="$c in the table, $(fidelity "$ns_a" "$A" A)"
  say "ctsync snapshot load: $(secs "$t") s, $(rate "$n" "$t") entries/s ($load_check)"

  # --- 2. conntrack -I, one process per entry ---------------------------------------------
  fresh_ns "$ns_a"
  # shellcheck disable=SC2016  # $line expands in the inner shell
  read -r t rc < <(timed "$ns_a" "$tmp/cli.err" bash -c \
    'while read -r line; do conntrack $line || exit; done < "$0"' "$tmp/cli.txt") || die "timing failed"
  [ "$rc" = 0 ] || die "conntrack -I failed: $(tail -3 "$tmp/cli.err")"
  c=$(count "$ns_a")
  [ "$c" = "$k" ] || die "conntrack -I: $c of $k entries in the table"
  cli_t+=("$t")
  cli_check="$c in the table"
  say "conntrack -I x $k: $(secs "$t") s, $(rate "$k" "$t") entries/s"

  # --- 3. conntrackd: replication to the standby, then commit -----------------------------
  stop_pids
  fresh_ns "$ns_a"
  fresh_ns "$ns_b"
  ip link add ctl0 netns "$ns_a" type veth peer name ctl1 netns "$ns_b"
  ip -n "$ns_a" addr add 192.0.2.1/24 dev ctl0
  ip -n "$ns_b" addr add 192.0.2.2/24 dev ctl1
  ip -n "$ns_a" link set ctl0 up
  ip -n "$ns_b" link set ctl1 up
  for node in active standby; do
    if [ "$node" = active ]; then self=192.0.2.1 peer=192.0.2.2 dev=ctl0
    else self=192.0.2.2 peer=192.0.2.1 dev=ctl1; fi
    rm -f "$tmp/$node.log"
    # FTFW over UDP unicast on the veth link; own control socket and lock file per
    # instance; event and socket buffers far above the defaults so that nothing is
    # dropped at this size; the sync link ignored (it is untracked anyway).
    cat > "$tmp/$node.conf" <<CONF
General {
	HashSize 65536
	HashLimit $(( 4 * n > 262144 ? 4 * n : 262144 ))
	LogFile $tmp/$node.log
	Syslog off
	LockFile $tmp/$node.lock
	UNIX {
		Path $tmp/$node.ctl
	}
	NetlinkBufferSize 16777216
	NetlinkBufferSizeMaxGrowth 134217728
	NetlinkOverrunResync off
	Filter From Userspace {
		Address Ignore {
			IPv4_address 127.0.0.1
			IPv4_address 192.0.2.0/24
		}
	}
}
Sync {
	Mode FTFW {
		ResendQueueSize $(( 2 * n > 131072 ? 2 * n : 131072 ))
	}
	UDP {
		IPv4_address $self
		IPv4_Destination_Address $peer
		Port $port
		Interface $dev
		SndSocketBuffer 67108864
		RcvSocketBuffer 67108864
		Checksum on
	}
}
CONF
  done
  in_ns "$ns_a" "$ctsync" snapshot load --keep-timeouts "$tmp/A-long.jsonl" 2>/dev/null
  c=$(count "$ns_a")
  [ "$c" = "$n" ] || die "active: $c of $n entries loaded"

  start_conntrackd "$ns_b" standby
  start_conntrackd "$ns_a" active    # dumps its kernel table into its internal cache
  for i in $(seq 600); do
    [ "$(cache_count "$ns_a" active internal)" = "$n" ] && break
    sleep 0.1
  done
  c=$(cache_count "$ns_a" active internal)
  [ "$c" = "$n" ] || die "active conntrackd holds $c of $n entries in its internal cache"
  c=$(cache_count "$ns_b" standby external)
  [ "$c" = 0 ] || say "note: the standby's external cache held $c entries before the resync"
  [ "$(count "$ns_b")" = 0 ] || die "the standby's table is not empty before the commit"

  # Replication: `conntrackd -n` on the standby asks the active for a resync (FTFW), and
  # the active sends its whole internal cache (`conntrackd -B` on the active, a bulk
  # send, fills the standby's external cache too in 1.4.7). Timed until the standby's
  # external cache holds n entries or has not grown for 15 s; polled as fast as
  # `conntrackd -s cache` answers (a few ms), so the time is good to about one poll.
  say "conntrackd: replicating $n entries"
  rx() { in_ns "$ns_b" cat "/sys/class/net/ctl1/statistics/rx_$1"; }
  rx_b0=$(rx bytes) rx_p0=$(rx packets)
  # shellcheck disable=SC2016
  read -r t c polls t1 < <(in_ns "$ns_b" bash -c '
    conf=$1 n=$2 limit=$3
    ext() { conntrackd -C "$conf" -s cache 2>/dev/null | awk '\''$1 == "cache:external" { print $NF }'\''; }
    a=$EPOCHREALTIME
    conntrackd -C "$conf" -n >/dev/null 2>&1 || { echo "0 -1"; exit; }
    last=0 tlast=$a polls=0 t1=
    while :; do
      c=$(ext); now=$EPOCHREALTIME; polls=$((polls + 1)); t1=${t1:-$now}
      [ "${c:-0}" -gt "$last" ] && { last=$c; tlast=$now; }
      [ "$last" -ge "$n" ] && break
      awk -v a="$tlast" -v b="$now" -v s="$a" -v l="$limit" "BEGIN { exit !(b - a > 15 || b - s > l) }" && break
      sleep 0.005
    done
    awk -v a="$a" -v b="$tlast" -v c="$last" -v p="$polls" -v f="$t1" \
      "BEGIN { printf \"%.6f %d %d %.6f\\n\", b - a, c, p, f - a }"
  ' load "$tmp/standby.conf" "$n" "$cd_wait") || die "replication timing failed"
  [ "$c" -ge 0 ] || die "conntrackd -n failed"
  rx_mb=$(awk -v a="$rx_b0" -v b="$(rx bytes)" 'BEGIN { printf "%.1f", (b - a) / 1048576 }')
  rx_p=$(( $(rx packets) - rx_p0 ))
  repl_t+=("$t") repl_n+=("$c")
  [ "$run" = 1 ] && repl_check="$c of $n in the external cache ($polls poll(s), the first answered after $(secs "$t1") s; $rx_mb MiB in $rx_p packets into the standby's link)"
  say "conntrackd replication: $(secs "$t") s, $c of $n entries in the standby's external cache ($polls polls, the first at $(secs "$t1") s; $rx_mb MiB in $rx_p packets received)"
  [ "$c" -gt 0 ] || die "nothing replicated: $(tail -5 "$tmp/standby.log")"

  # Commit: `conntrackd -c` returns when the daemon has written its external cache (1.4.7
  # answers the client at the end of the commit); the kernel count is polled anyway until
  # it reaches the cache's size or has not grown for 1 s, and the time runs to the last
  # growth (or to the client's return, if that is later).
  # shellcheck disable=SC2016
  read -r t tc c rc < <(in_ns "$ns_b" bash -c '
    conf=$1 want=$2
    a=$EPOCHREALTIME
    conntrackd -C "$conf" -c >/dev/null 2>&1; rc=$?
    r=$EPOCHREALTIME
    last=$(conntrack -C) tlast=$r
    while [ "$last" -lt "$want" ]; do
      sleep 0.05
      c=$(conntrack -C); now=$EPOCHREALTIME
      if [ "$c" -gt "$last" ]; then last=$c tlast=$now
      else awk -v a="$tlast" -v b="$now" "BEGIN { exit !(b - a > 1) }" && break; fi
    done
    awk -v a="$a" -v b="$tlast" -v r="$r" -v c="$last" -v rc="$rc" \
      "BEGIN { printf \"%.6f %.6f %d %d\\n\", b - a, r - a, c, rc }"
  ' commit "$tmp/standby.conf" "$c") || die "commit timing failed"
  [ "$rc" = 0 ] || die "conntrackd -c exited $rc: $(tail -3 "$tmp/standby.log")"
  commit_t+=("$t") commit_n+=("$c") commit_client_t+=("$tc")
  logged=$(sed -n 's/.*Committed \([0-9]*\) new entries.*/\1/p' "$tmp/standby.log" | tail -1)
  took=$(sed -n 's/.*commit has taken \([0-9.]*\) seconds.*/\1/p' "$tmp/standby.log" | tail -1)
  commit_log_t+=("${took:-0}")
  [ "$run" = 1 ] && cd_check="$c in the table (its log: \"Committed ${logged:-?} new entries\", \"commit has taken ${took:-?} seconds\"), $(fidelity "$ns_b" "$tmp/A-long.jsonl" A)"
  say "conntrackd -c: $(secs "$t") s (client returned after $(secs "$tc") s), $c entries in the standby's table, log: ${logged:-?} committed in ${took:-?} s"
  stop_pids
  drop_ns "$ns_b"

  # --- 4. ctsync sync --apply ----------------------------------------------------------------
  # A table holding A, then made equal to B. The sync starts right after the load: B's
  # timeouts are the saved ones, so a table older than the tolerance (2 s) would differ in
  # every timeout.
  fresh_ns "$ns_a"
  read -r t rc < <(timed "$ns_a" "$tmp/keep.err" "$ctsync" snapshot load --keep-timeouts "$A") || die "timing failed"
  [ "$rc" = 0 ] || die "ctsync snapshot load --keep-timeouts exited $rc: $(tail -3 "$tmp/keep.err")"
  keep_t+=("$t")
  read -r t rc < <(timed "$ns_a" "$tmp/sync.err" "$ctsync" sync "snapshot:$B" --apply) || die "timing failed"
  summary=$(grep -E 'writes applied' "$tmp/sync.err" | tail -1) ||
    die "ctsync sync snapshot:B --apply exited $rc: $(tail -3 "$tmp/sync.err")"
  w=$(sed -E 's/.* ([0-9]+) writes applied.*/\1/' <<<"$summary")
  left=$(sed -E 's/.*; ([0-9]+) divergences left.*/\1/' <<<"$summary")
  syncb_t+=("$t") syncb_w+=("$w")
  [ "$run" = 1 ] && syncb_left="$left divergences left (exit $rc), $(count "$ns_a") in the table, $(fidelity "$ns_a" "$B" B)"
  say "ctsync sync snapshot:B --apply: $(secs "$t") s, $summary"

  # An empty table made equal to A: n creates.
  fresh_ns "$ns_a"
  read -r t rc < <(timed "$ns_a" "$tmp/synca.err" "$ctsync" sync "snapshot:$A" --apply) || die "timing failed"
  [ "$rc" = 0 ] || die "ctsync sync snapshot:A --apply exited $rc: $(tail -3 "$tmp/synca.err")"
  c=$(count "$ns_a")
  [ "$c" = "$n" ] || die "ctsync sync snapshot:A --apply: $c of $n entries in the table"
  synca_t+=("$t")
  [ "$run" = 1 ] && synca_check="$c in the table, $(tail -1 "$tmp/synca.err" | sed 's/^ctsync sync: //'), $(fidelity "$ns_a" "$A" A)"
  say "ctsync sync snapshot:A --apply: $(secs "$t") s, $(rate "$n" "$t") entries/s"
  drop_ns "$ns_a"
done

# --- Report --------------------------------------------------------------------------------
lt=$(med "${load_t[@]}");   lr=$(rate "$n" "$lt")
ct=$(med "${cli_t[@]}");    cr=$(rate "$k" "$ct")
rt=$(med "${repl_t[@]}");   rn=$(med "${repl_n[@]}");   rr=$(rate "$rn" "$rt")
mt=$(med "${commit_t[@]}"); mn=$(med "${commit_n[@]}"); mr=$(rate "$mn" "$mt")
mlt=$(med "${commit_log_t[@]}")
mct=$(med "${commit_client_t[@]}")
kt=$(med "${keep_t[@]}");   kr=$(rate "$n" "$kt")
bt=$(med "${syncb_t[@]}");  bw=$(med "${syncb_w[@]}");  br=$(rate "$bw" "$bt")
at=$(med "${synca_t[@]}");  ar=$(rate "$n" "$at")
row() {   # operation command entries seconds rate check [ratio]
  echo "| $1 | $2 | $3 | $(secs "$4") | $5 | ${7:-$(ratio "$5" "$lr")} | $6 |"
}
{
  echo "| operation | command | entries | wall s | entries/s | ratio to ctsync snapshot load | check (run 1) |"
  echo "|---|---|---|---|---|---|---|"
  row "ctsync snapshot load, empty table" "\`ctsync snapshot load A.jsonl\`" "$n" "$lt" "$lr" "$load_check"
  row "conntrack -I, one process per entry (first $k of A, extrapolated)" "\`conntrack -I …\` × $k" "$k" "$ct" "$cr" "$cli_check; $n would take $(awk -v n="$n" -v r="$cr" 'BEGIN { printf "%.0f", n / r }') s"
  row "conntrackd replication, active → standby external cache (FTFW, UDP)" "\`conntrackd -C standby.conf -n\`, until the external cache holds them" "$rn" "$rt" "$rr" "$repl_check"
  row "conntrackd commit, external cache → standby's empty table" "\`conntrackd -C standby.conf -c\`" "$mn" "$mt" "$mr" "$cd_check"
  row "ctsync snapshot load --keep-timeouts, empty table (before the next row)" "\`ctsync snapshot load --keep-timeouts A.jsonl\`" "$n" "$kt" "$kr" "$n in the table"
  row "ctsync sync, table holding A made equal to B (1% differs)" "\`ctsync sync snapshot:B.jsonl --apply\`" "$bw writes" "$bt" "$br writes/s" "$syncb_left" "— (see below)"
  row "ctsync sync, empty table made equal to A" "\`ctsync sync snapshot:A.jsonl --apply\`" "$n" "$at" "$ar" "$synca_check"
  echo
  echo "N=$n, $( [ "$runs" = 1 ] && echo "one run" || echo "median of $runs runs"); ratio = entries/s divided by ctsync snapshot load's."
  echo "conntrackd -c: the client returned after $(secs "$mct") s; conntrackd's log said the commit took $(secs "$mlt") s."
  echo "The sync snapshot:B row counts writes, so its rate is not comparable with the loads: its wall time"
  echo "is mostly reading B, dumping the $n-entry table and diffing the two, before the writes and again"
  echo "after them ($(rate "$n" "$bt") table entries/s)."
  echo "Kernel $(uname -r), $(nproc) CPUs, $(conntrack --version 2>&1 | head -1), conntrackd $(conntrackd -v 2>&1 | sed -n 's/.*daemon v\([0-9][0-9.]*[0-9]\).*/\1/p' | head -1), timed with bash EPOCHREALTIME"
  echo "inside the namespaces (ip netns exec's start-up not counted); every table in a fresh network namespace."
  for note in "${notes[@]}"; do echo "- $note"; done
} | tee "$out/load.md"
