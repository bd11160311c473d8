#!/usr/bin/env bash
# Replication benchmark (issue 6): ctsync replicate beside conntrackd 1.4.7, in one run:
#   (a) replication of N entries from an active node's table into a standby's cache
#         ctsync:     `ctsync replicate active` started beside a waiting standby, timed from
#                     the active's start (its kernel dump and the bulk transfer) until the
#                     standby's `status` shows the N entries and no bulk in progress; and a
#                     re-send to a standby that asks for everything (`ctsync replicate
#                     resync` on the standby: the active sends its copy in memory)
#         conntrackd: FTFW over UDP, its start-up dump (the active's internal cache polled
#                     until it holds N), then `conntrackd -n` on the standby (a resync of
#                     that internal cache) until its external cache holds N
#         Both are polled by one waiter started before each timed step (wait.py below)
#   (b) commit of the standby's cache into its empty kernel table
#         `ctsync replicate commit`  against  `conntrackd -c`
#   (c) event-to-standby latency under a steady stream of new connections (RATE/s for
#       GEN_SECONDS s, one UDP datagram per new tuple from a Python generator in the active
#       namespace): how old the newest entry in the standby's cache is, sampled every
#       10 ms through each daemon's control socket, for both alike; and ctsync's own
#       latency line in `status` if it prints one (nf_conntrack_timestamp=1 on the active).
# Every table is in a throwaway network namespace (never the host's table): an active and a
# standby linked by a veth pair (192.0.2.1 / 192.0.2.2, as in contrib/lab/lab.sh), and a
# sink namespace that swallows the generated datagrams.
#
#   bash contrib/bench/replicate.sh                (needs root; installs conntrackd if missing)
#   N=100000 RUNS=3 RATE=10000 CTSYNC=/tmp/ctsync-bin bash contrib/bench/replicate.sh
#
# Prints a markdown table to stdout (progress goes to stderr) and writes it to
# contrib/bench/out/replicate.md. With RUNS > 1 every figure is the median of RUNS runs.
set -euo pipefail
shopt -s inherit_errexit
export LC_ALL=C                       # "." as the decimal point in EPOCHREALTIME and awk
cd "$(dirname "$0")/../.."            # every path below is relative to the repository

n=${N:-100000}
runs=${RUNS:-1}
gen_rate=${RATE:-10000}               # new connections per second in stage (c)
gen_secs=${GEN_SECONDS:-5}
port=${PORT:-3780}                    # conntrackd's UDP port on the sync link
cport=${CPORT:-7890}                  # ctsync's TCP port on the sync link
wait_limit=${WAIT:-120}               # seconds to wait for any replication
poll_us=$(( ${POLL_MS:-5} * 1000 ))    # poll period of the daemons' caches in (a)
lat_poll_us=$(( ${LAT_POLL_MS:-10} * 1000 ))   # and in (c)
out=contrib/bench/out
ns_a=ctrep$$a                         # the active node
ns_b=ctrep$$b                         # the standby
ns_s=ctrep$$s                         # sink for the generated datagrams (no conntrack)

bench=replicate-bench
. contrib/bench/lib.sh

# --- Prerequisites -----------------------------------------------------------------
ctsync_src=$(prerequisites)

mkdir -p "$out"
out=$(realpath "$out")
tmp=$(mktemp -d "${TMPDIR:-/tmp}/ctrepl.XXXXXX")
# A private copy of the binary: a rebuild during the run does not change what is measured.
cp "$ctsync_src" "$tmp/ctsync"
ctsync=$tmp/ctsync
head -c 32 /dev/urandom > "$tmp/key"

# --- Namespaces, limits, cleanup ---------------------------------------------------------
limits_init
notes=()
pids=()                               # daemons started by this script

cleanup() {
  stop_pids
  [ -n "${poller:-}" ] && { kill "$poller" 2>/dev/null || true; wait "$poller" 2>/dev/null || true; }
  [ -n "${waiter:-}" ] && { kill "$waiter" 2>/dev/null || true; wait "$waiter" 2>/dev/null || true; }
  drop_ns "$ns_a"
  drop_ns "$ns_b"
  drop_ns "$ns_s"
  limits_restore
  rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# A fresh namespace (lib.sh); both daemons' sync traffic left untracked (ctsync leaves its
# own connection out of what it replicates anyway; conntrackd needs an ignore filter).
fresh_ns() { bench_ns "$1" "udp dport $port
tcp dport $cport
tcp sport $cport"; }

# The pair: active (ctl0, 192.0.2.1) -- standby (ctl1, 192.0.2.2), and the active's
# "uplink" d0 (198.51.100.1/24, no ARP) into the sink namespace, which has no address and
# no rules (so no conntrack): datagrams to 198.51.100.x leave the active and are dropped.
fresh_pair() {
  fresh_ns "$ns_a"
  fresh_ns "$ns_b"
  drop_ns "$ns_s"
  ip netns add "$ns_s"
  ip link add ctl0 netns "$ns_a" type veth peer name ctl1 netns "$ns_b"
  ip -n "$ns_a" addr add 192.0.2.1/24 dev ctl0
  ip -n "$ns_b" addr add 192.0.2.2/24 dev ctl1
  ip -n "$ns_a" link set ctl0 up
  ip -n "$ns_b" link set ctl1 up
  ip link add d0 netns "$ns_a" type veth peer name d1 netns "$ns_s"
  ip -n "$ns_a" addr add 198.51.100.1/24 dev d0
  ip -n "$ns_a" link set d0 arp off up
  ip -n "$ns_s" link set d1 up
}

rx() { in_ns "$ns_b" cat "/sys/class/net/ctl1/statistics/rx_$1"; }
mib() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", (b - a) / 1048576 }'; }
rss_mib() { awk '/^VmRSS/ { printf "%.0f", $2 / 1024 }' "/proc/$1/status" 2>/dev/null || echo "?"; }

# --- Timing helpers ------------------------------------------------------------------------
ms() { awk -v s="$1" 'BEGIN { printf "%.2f", s }'; }
sum() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.6f", a + b }'; }
since() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.6f", b - a }'; }   # seconds from a to b
us() { local t=${1:-$EPOCHREALTIME}; echo $(( 10#${t/./} )); }         # µs since the epoch
sleep_until() {   # µs
  local d=$(( $1 - $(us) ))
  [ "$d" -gt 0 ] && sleep "$(printf '%d.%06d' $(( d / 1000000 )) $(( d % 1000000 )))"
  return 0
}

# What a table holds compared with snapshot FILE, leaving out timeouts (they run down) and
# counters (ctnetlink cannot set them). Copied from load.sh.
fidelity() {
  local first
  first=$(in_ns "$1" "$ctsync" diff "snapshot:$2" kernel --ignore timeout,counters 2>/dev/null | head -1) || true
  case "$first" in
    *"no divergence"*) echo "same as $3" ;;
    *divergences*) echo "$(sed 's/.* \([0-9]*\) divergences.*/\1/' <<<"$first") divergences from $3" ;;
    *) echo "diff failed" ;;
  esac
}

# --- ctsync ------------------------------------------------------------------------------
ct_status() { "$ctsync" replicate status --control "$1" 2>/dev/null; }   # a UNIX socket: any namespace
ct_cache() { sed -n 's/^cache \([0-9]*\) entries.*/\1/p' <<<"$1"; }
ct_done() {   # STATUS N BULKS: N entries cached, BULKS bulk transfers complete, none in progress
  [[ $1 == *$'\n'"cache $2 entries, 0 expectations, $3 bulk transfers"$'\n'* ]]
}
start_ct() {   # NS ROLE ARGS...: a ctsync replicate daemon; waits for its control socket
  local ns=$1 role=$2 i; shift 2
  rm -f "$tmp/$role.sock"
  ip netns exec "$ns" "$ctsync" replicate "$role" "$@" --key-file "$tmp/key" \
    --control "$tmp/$role.sock" --name "$role" > "$tmp/ct-$role.log" 2>&1 &
  pids+=($!)
  for i in $(seq 200); do
    ct_status "$tmp/$role.sock" >/dev/null && return 0
    kill -0 "${pids[-1]}" 2>/dev/null || die "ctsync replicate $role exited: $(tail -3 "$tmp/ct-$role.log")"
    sleep 0.02
  done
  die "ctsync replicate $role did not answer on its control socket"
}
# The waiter (wait.py below) for a timed step: started before the step, it says it is
# ready, then waits for the go file, which holds the step's start (µs since the epoch), so
# that neither its start-up nor its first poll is late. waiter_start KIND SOCKET WHICH N
# BULKS; then `t0=$(go)` just before the step; then `waiter_result; read -r t polls tb < "$tmp/wait.out"`:
# seconds from t0, polls, seconds to the first poll that saw a bulk in progress (ctsync).
waiter_start() {
  rm -f "$tmp/go" "$tmp/go.ready" "$tmp/wait.out" "$tmp/wait.err"
  python3 "$tmp/wait.py" "$@" "$tmp/go" "$wait_limit" "$poll_us" > "$tmp/wait.out" 2> "$tmp/wait.err" &
  waiter=$!
  local i
  for i in $(seq 500); do [ -e "$tmp/go.ready" ] && return 0; sleep 0.01; done
  die "the waiter did not start: $(cat "$tmp/wait.err")"
}
go() { local t; t=$(us); echo "$t" > "$tmp/go.tmp"; mv "$tmp/go.tmp" "$tmp/go"; echo "$t"; }
waiter_result() {   # waits for the waiter; its line is then in $tmp/wait.out
  wait "$waiter" || die "$(cat "$tmp/wait.err")"
  waiter=
}
# Until the standby's `status` shows N entries after BULKS complete bulk transfers, none in
# progress (untimed steps).
wait_ct() {   # N BULKS
  waiter_start ctsync "$tmp/standby.sock" - "$1" "$2"
  go >/dev/null
  waiter_result
}

# --- conntrackd (configuration and helpers as in load.sh) ------------------------------------
cd_conf() {   # NODE SELF PEER DEV
  rm -f "$tmp/$1.log"
  cat > "$tmp/$1.conf" <<CONF
General {
	HashSize 65536
	HashLimit $(( 4 * n > 262144 ? 4 * n : 262144 ))
	LogFile $tmp/$1.log
	Syslog off
	LockFile $tmp/$1.lock
	UNIX {
		Path $tmp/$1.ctl
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
		IPv4_address $2
		IPv4_Destination_Address $3
		Port $port
		Interface $4
		SndSocketBuffer 67108864
		RcvSocketBuffer 67108864
		Checksum on
	}
}
CONF
}
cache_count() {   # NS NODE WHICH: objects in conntrackd's internal or external cache
  in_ns "$1" conntrackd -C "$tmp/$2.conf" -s cache 2>/dev/null |
    awk -v w="cache:$3" '$1 == w { print $NF; f = 1 } END { exit !f }'
}
start_conntrackd() {   # NS NODE
  ip netns exec "$1" conntrackd -C "$tmp/$2.conf" > "$tmp/$2.out" 2>&1 &
  pids+=($!)
  local i
  for i in $(seq 200); do
    cache_count "$1" "$2" internal >/dev/null && return 0
    kill -0 "${pids[-1]}" 2>/dev/null || die "conntrackd ($2) exited: $(tail -3 "$tmp/$2.out")"
    sleep 0.02
  done
  die "conntrackd ($2) did not answer on its control socket"
}
cd_pair() {
  cd_conf active 192.0.2.1 192.0.2.2 ctl0
  cd_conf standby 192.0.2.2 192.0.2.1 ctl1
}

# --- Stage (c): generator, poller, analysis ----------------------------------------------------
# One UDP socket, one datagram per new (address, port) tuple, paced with a time check: every
# millisecond or so it sends what is due by then. Writes "time sent-so-far" after each burst.
cat > "$tmp/gen.py" <<'PY'
import socket, sys, time
rate, dur, first, out = float(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
def dst(i):
    return ("198.51.100.%d" % (2 + i % 250), 1024 + i // 250)
sent, tl = 0, []
start = time.time()
tl.append((start, 0))
while True:
    el = time.time() - start
    if el >= dur:
        break
    due = min(int(el * rate) + 1, int(dur * rate))
    while sent < due:
        s.sendto(b"x", dst(first + sent))
        sent += 1
    tl.append((time.time(), sent))
    time.sleep(0.001)
with open(out, "w") as f:
    for t, c in tl:
        f.write("%.6f %d\n" % (t, c))
PY
# Waiter for (a): polls one daemon's control socket every PERIOD µs from T0 (µs since the
# epoch, read from the GO file once it exists) until its cache holds N, speaking the socket directly as poll.py below does, so
# that both contenders are polled alike and cheaply (about 0.1 ms a poll; a client process
# would cost 10 ms of CPU for ctsync's, 2 ms for conntrackd's, taken from the daemons being
# timed). ctsync: the standby's `status` shows "cache N entries, 0 expectations, BULKS bulk
# transfers" and no bulk in progress; conntrackd: the "cache:WHICH" line (internal or
# external) of STATS_CACHE counts N. Prints "seconds polls seconds-to-first-bulk-seen".
cat > "$tmp/ctl.py" <<'PY'
import socket, struct

def request(kind):
    """What each daemon's own client sends: ctsync's `status`; conntrackd's STATS_CACHE (29)."""
    return b"status\n" if kind == "ctsync" else struct.pack("=i", 29)

def ask(path, req):
    """One request on a control socket; the whole answer as text, "" when it cannot connect."""
    try:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.connect(path)
        s.sendall(req)
        buf = b""
        while True:
            d = s.recv(65536)
            if not d:
                break
            buf += d
        s.close()
        return buf.decode(errors="replace")
    except OSError:
        return ""
PY
cat > "$tmp/wait.py" <<'PY'
import os, re, sys, time
from ctl import ask, request
kind, path, which, want, bulks = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
go, limit, period = sys.argv[6], float(sys.argv[7]), float(sys.argv[8]) / 1e6
open(go + ".ready", "w").close()
while not os.path.exists(go):
    time.sleep(0.0005)
t0 = int(open(go).read()) / 1e6
req = request(kind)
done_line = "\ncache %d entries, 0 expectations, %d bulk transfers\n" % (want, bulks)
pat = re.compile(r"^cache:%s\s.*?(\d+)\s*$" % which, re.M)
polls, inbulk, nxt, txt = 0, 0.0, time.time(), ""
while True:
    txt = ask(path, req)
    now = time.time()
    polls += 1
    if kind == "ctsync":
        if not inbulk and "bulk transfer in progress" in txt:
            inbulk = now - t0
        if done_line in "\n" + txt:
            break
    else:
        m = pat.search(txt)
        if m and int(m.group(1)) >= want:
            break
    if now - t0 > limit:
        sys.exit("not reached after %.0f s; last answer: %s" % (limit, " ".join(txt.split())[:300]))
    nxt += period
    d = nxt - time.time()
    if d > 0:
        time.sleep(d)
print("%.6f %d %.6f" % (now - t0, polls, inbulk))
PY
# Poller: "before after count" every LAT_POLL_MS until STOP exists. It talks to the daemons'
# control sockets directly, as their clients do (`ctsync replicate status`: the line
# "status"; `conntrackd -s cache`: the 4-byte request 29, STATS_CACHE), about 0.1 ms a poll
# instead of a process start (10 ms of CPU for ctsync's client, 2 ms for conntrackd's) that
# would compete with the daemons and the generator for the two CPUs and blur the timing.
cat > "$tmp/poll.py" <<'PY'
import os, re, sys, time
from ctl import ask, request
kind, path, stop, period = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4]) / 1e6
req = request(kind)
pat = re.compile(r"^cache (\d+) entries" if kind == "ctsync" else r"^cache:external\s.*?(\d+)\s*$", re.M)
out = sys.stdout
nxt = time.time()
while not os.path.exists(stop) and os.path.isdir(os.path.dirname(stop)):
    a = time.time()
    m = pat.search(ask(path, req))
    c = m.group(1) if m else "x"
    b = time.time()
    out.write("%.6f %.6f %s\n" % (a, b, c))
    out.flush()
    nxt += period
    d = nxt - time.time()
    if d > 0:
        time.sleep(d)
out.flush()
PY
# Analysis: for every poll, the age of the newest entry the standby holds (the c-th entry
# generated, c = count - offset) when the poll returned: an upper bound on that entry's
# event-to-standby latency (and, entry c+1 not being there when the poll began, the age then
# of entry c+1 is a lower bound of its latency: the two differ by the poll's duration and the
# generator's burst spacing). Polls while the standby was behind or just caught up
# (count < total, and the first poll at the total). Prints:
#   median p99 max(ms) polls poll-duration-median(ms) sent seconds rate per-second-min per-second-max
#   lower-bound-median(ms)
cat > "$tmp/ana.py" <<'PY'
import bisect, sys
tl = [tuple(map(float, l.split())) for l in open(sys.argv[1])]
offset = int(sys.argv[3])
ts = [t for t, _ in tl]; cs = [c for _, c in tl]
total = int(cs[-1])
def t_of(c):   # when the c-th datagram had been sent (interpolated between bursts)
    i = bisect.bisect_left(cs, c)
    if i == 0: return ts[0]
    c0, c1, t0, t1 = cs[i - 1], cs[i], ts[i - 1], ts[i]
    return t0 + (t1 - t0) * (c - c0) / (c1 - c0)
def sent_at(t):
    i = bisect.bisect_right(ts, t)
    return cs[max(i - 1, 0)]
ages, lows, durs, reached = [], [], [], False
for l in open(sys.argv[2]):
    a, b, c = l.split()
    if c == "x": continue
    a, b, c = float(a), float(b), int(c) - offset
    durs.append(b - a)
    if c <= 0 or reached: continue
    if c >= total: reached = True; c = total
    ages.append((b - t_of(c)) * 1000)
    if c < total: lows.append((a - t_of(c + 1)) * 1000)
ages.sort(); lows.sort(); durs.sort()
q = lambda v, p: v[min(len(v) - 1, int(len(v) * p))] if v else float("nan")
span = ts[-1] - ts[0]
per = [sent_at(ts[0] + k + 1) - sent_at(ts[0] + k) for k in range(int(span))] or [total]
print("%.1f %.1f %.1f %d %.2f %d %.3f %.0f %d %d %.1f" % (q(ages, .5), q(ages, .99), q(ages, 1), len(ages),
      q(durs, .5) * 1000, total, span, total / span, min(per), max(per), q(lows, .5)))
print("reached" if reached else "never reached %d (last poll %s)" % (total, l.strip()), file=sys.stderr)
PY
warmup() {   # 10 datagrams (tuples apart from the generator's) so the pipeline is proven first
  in_ns "$ns_a" python3 -c '
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for i in range(10): s.sendto(b"w", ("198.51.100.%d" % (2 + i), 9))'
}
# Runs the generator in the active namespace and the poller beside it (UNIX sockets do not
# depend on the network namespace); waits until
# the standby holds offset + sent (at most 15 s after the generator); writes the analysis to
# $tmp/lat-LABEL (not run in a subshell, so that cleanup knows the poller).
latency_run() {   # KIND POLLARG OFFSET LABEL
  local kind=$1 arg=$2 offset=$3 label=$4 sent last i
  rm -f "$tmp/stop" "$tmp/polls-$label"
  python3 "$tmp/poll.py" "$kind" "$arg" "$tmp/stop" "$lat_poll_us" > "$tmp/polls-$label" &
  poller=$!
  sleep 0.1
  in_ns "$ns_a" python3 "$tmp/gen.py" "$gen_rate" "$gen_secs" 100000 "$tmp/tl-$label"
  sent=$(tail -1 "$tmp/tl-$label" | awk '{ print $2 }')
  for i in $(seq 750); do
    last=$(tail -1 "$tmp/polls-$label" | awk '{ print $3 }')
    [ "$last" = $(( offset + sent )) ] && break
    sleep 0.02
  done
  sleep 0.1
  touch "$tmp/stop"
  wait "$poller" || true
  poller=
  python3 "$tmp/ana.py" "$tmp/tl-$label" "$tmp/polls-$label" "$offset" > "$tmp/lat-$label" 2>"$tmp/ana-$label.err" ||
    die "latency analysis failed: $(cat "$tmp/ana-$label.err")"
}

# --- Snapshot ------------------------------------------------------------------------------
say "writing a $n-entry snapshot"
python3 contrib/bench/make_snapshots.py "$n" "$tmp/A.jsonl" "$tmp/B.jsonl"
# Timeouts of an hour instead of 30 s (UDP) and 120 s (TIME_WAIT), as for conntrackd in
# load.sh: nothing may expire between the load and the commit, for either contender.
sed -E 's/"timeout":(30|120),/"timeout":3600,/' "$tmp/A.jsonl" > "$tmp/A-long.jsonl"
A=$tmp/A-long.jsonl

ct_repl=() ct_resync=() ct_commit=() cd_boot=() cd_repl=() cd_commit=() cd_total=()
ct_lat=() cd_lat=() ct_rate=() cd_rate=()
ct_check="" ct_resync_check="" ct_commit_check="" cd_check="" cd_commit_check=""
ct_lat_check="" cd_lat_check="" ct_own_latency=""

for run in $(seq "$runs"); do
  say "run $run of $runs"

  # --- ctsync: (a) replication, re-send, (b) commit ----------------------------------------------
  fresh_pair
  in_ns "$ns_a" "$ctsync" snapshot load --keep-timeouts "$A" 2>/dev/null
  c=$(count "$ns_a"); [ "$c" = "$n" ] || die "active: $c of $n entries loaded"
  start_ct "$ns_b" standby --listen "192.0.2.2:$cport"
  st=$(ct_status "$tmp/standby.sock")
  ct_done "$st" 0 0 || die "the standby's cache is not empty at its start: $(tr '\n' ';' <<<"$st")"
  rx_b0=$(rx bytes) rx_p0=$(rx packets)
  waiter_start ctsync "$tmp/standby.sock" - "$n" 1
  t0=$(go)
  ip netns exec "$ns_a" "$ctsync" replicate active --peer "192.0.2.2:$cport" --key-file "$tmp/key" \
    --control "$tmp/active.sock" --name active --refresh 3600 > "$tmp/ct-active.log" 2>&1 &
  pids+=($!)
  waiter_result
  read -r t polls tb < "$tmp/wait.out"
  rx_mb=$(mib "$rx_b0" "$(rx bytes)") rx_p=$(( $(rx packets) - rx_p0 ))
  ct_repl+=("$t")
  sleep 0.3   # the acknowledgements
  ast=$(ct_status "$tmp/active.sock")
  peer=$(grep -E '^peer .*: in step, frames sent [0-9]+, acknowledged [0-9]+, lag 0 frames, bulk transfers 1,' <<<"$ast") ||
    die "the active is not in step after the bulk: $(tr '\n' ';' <<<"$ast")"
  [ "$run" = 1 ] && ct_check="standby \"$(ct_status "$tmp/standby.sock" | grep '^cache')\"; active \"$(sed 's/^peer [^ ]* //; s/, reconnects.*//' <<<"$peer")\"; $rx_mb MiB in $rx_p packets into the standby's link; $polls polls, the first to see the bulk in progress at $(secs "$tb") s; standby RSS $(rss_mib "${pids[0]}") MiB"
  say "ctsync replication: $(secs "$t") s from the active's start to $n entries in the standby's cache ($polls polls, bulk in progress seen first at $(secs "$tb") s; $rx_mb MiB in $rx_p packets)"

  # Re-send between nodes in step: the standby asks, the active dumps its kernel again.
  waiter_start ctsync "$tmp/standby.sock" - "$n" 2
  t0=$(go)
  "$ctsync" replicate resync --control "$tmp/standby.sock" >/dev/null
  waiter_result
  read -r t polls tb2 < "$tmp/wait.out"
  ct_resync+=("$t")
  [ "$run" = 1 ] && ct_resync_check="standby \"$(ct_status "$tmp/standby.sock" | grep '^cache')\"; active \"$(ct_status "$tmp/active.sock" | grep -o 'bulk transfers [0-9]*, copies re-sent [0-9]*')\"; the first poll to see the transfer in progress at $(secs "$tb2") s"
  say "ctsync resync: $(secs "$t") s ($polls polls, bulk in progress seen first at $(secs "$tb2") s)"

  # (b) commit into the standby's empty table.
  [ "$(count "$ns_b")" = 0 ] || die "the standby's table is not empty before the commit"
  t0=$EPOCHREALTIME
  msg=$("$ctsync" replicate commit --control "$tmp/standby.sock" 2>&1) || die "ctsync replicate commit failed: $msg"
  t=$(since "$t0" "$EPOCHREALTIME")
  c=$(count "$ns_b")
  [ "$c" = "$n" ] || die "ctsync replicate commit: $c of $n entries in the standby's table ($msg)"
  grep -q "committed $n entries and 0 expectations" <<<"$msg" || die "unexpected commit answer: $msg"
  ct_commit+=("$t")
  [ "$run" = 1 ] && ct_commit_check="$c in the table; \"$(grep committed <<<"$msg" | sed 's/^ok//')\"; $(fidelity "$ns_b" "$A" A)"
  say "ctsync replicate commit: $(secs "$t") s, $c entries in the standby's table ($msg)"
  stop_pids

  # --- conntrackd: (a) start-up dump and resync, (b) commit -----------------------------------
  fresh_pair
  cd_pair
  in_ns "$ns_a" "$ctsync" snapshot load --keep-timeouts "$A" 2>/dev/null
  c=$(count "$ns_a"); [ "$c" = "$n" ] || die "active: $c of $n entries loaded"
  start_conntrackd "$ns_b" standby
  c=$(cache_count "$ns_b" standby external); [ "$c" = 0 ] || die "the standby's external cache holds $c at its start"
  waiter_start conntrackd "$tmp/active.ctl" internal "$n" 0
  t0=$(go)
  ip netns exec "$ns_a" conntrackd -C "$tmp/active.conf" > "$tmp/active.out" 2>&1 &   # dumps its kernel table into its internal cache
  pids+=($!)
  waiter_result
  read -r boot polls _ < "$tmp/wait.out"
  cd_boot+=("$boot")
  c=$(cache_count "$ns_b" standby external)
  [ "$c" = 0 ] || say "note: the standby's external cache held $c entries before the resync"
  say "conntrackd start-up dump: $(secs "$boot") s until its internal cache held $n"

  # Replication: `conntrackd -n` on the standby (a client process, as `ctsync replicate
  # resync` is for ctsync), then the waiter until the external cache holds n.
  rx_b0=$(rx bytes) rx_p0=$(rx packets)
  waiter_start conntrackd "$tmp/standby.ctl" external "$n" 0
  t0=$(go)
  in_ns "$ns_b" conntrackd -C "$tmp/standby.conf" -n >/dev/null 2>&1 || die "conntrackd -n failed: $(tail -3 "$tmp/standby.log")"
  waiter_result
  read -r t polls _ < "$tmp/wait.out"
  c=$(cache_count "$ns_b" standby external)
  [ "$c" = "$n" ] || die "conntrackd replicated $c of $n entries: $(tail -3 "$tmp/standby.log")"
  rx_mb=$(mib "$rx_b0" "$(rx bytes)") rx_p=$(( $(rx packets) - rx_p0 ))
  cd_repl+=("$t") cd_total+=("$(sum "$boot" "$t")")
  [ "$run" = 1 ] && cd_check="external cache $c of $n ($polls polls); $rx_mb MiB in $rx_p packets into the standby's link; standby RSS $(rss_mib "${pids[0]}") MiB"
  say "conntrackd -n: $(secs "$t") s, $c entries in the standby's external cache ($polls polls; $rx_mb MiB in $rx_p packets)"

  # Commit, as in load.sh: timed to the client's return or the kernel count's last growth.
  [ "$(count "$ns_b")" = 0 ] || die "the standby's table is not empty before the commit"
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
  ' commit "$tmp/standby.conf" "$n") || die "commit timing failed"
  [ "$rc" = 0 ] || die "conntrackd -c exited $rc: $(tail -3 "$tmp/standby.log")"
  [ "$c" = "$n" ] || die "conntrackd -c: $c of $n entries in the standby's table"
  cd_commit+=("$t")
  logged=$(sed -n 's/.*Committed \([0-9]*\) new entries.*/\1/p' "$tmp/standby.log" | tail -1)
  took=$(sed -n 's/.*commit has taken \([0-9.]*\) seconds.*/\1/p' "$tmp/standby.log" | tail -1)
  [ "$run" = 1 ] && cd_commit_check="$c in the table (its log: \"Committed ${logged:-?} new entries\", \"commit has taken ${took:-?} seconds\"; client returned after $(secs "$tc") s); $(fidelity "$ns_b" "$A" A)"
  say "conntrackd -c: $(secs "$t") s, $c entries in the standby's table"
  stop_pids

  # --- (c) latency, ctsync ------------------------------------------------------------------------
  fresh_pair
  in_ns "$ns_a" sysctl -qw net.netfilter.nf_conntrack_timestamp=1
  start_ct "$ns_b" standby --listen "192.0.2.2:$cport"
  ip netns exec "$ns_a" "$ctsync" replicate active --peer "192.0.2.2:$cport" --key-file "$tmp/key" \
    --control "$tmp/active.sock" --name active --refresh 3600 > "$tmp/ct-active.log" 2>&1 &
  pids+=($!)
  wait_ct 0 1
  warmup
  wait_ct 10 1
  say "ctsync: $gen_rate new connections/s for $gen_secs s"
  latency_run ctsync "$tmp/standby.sock" 10 ct
  read -r m p99 mx np pd sent span r pmin pmax lo < "$tmp/lat-ct"
  grep -q '^reached' "$tmp/ana-ct.err" || die "ctsync: the standby $(cat "$tmp/ana-ct.err")"
  sleep 1.2   # an ALIVE, so the standby's lag is current
  st=$(ct_status "$tmp/standby.sock") ast=$(ct_status "$tmp/active.sock")
  c=$(count "$ns_a")
  [ "$c" = $(( sent + 10 )) ] || die "ctsync latency: the active's table holds $c, not $(( sent + 10 ))"
  [ "$(ct_cache "$st")" = "$c" ] || die "ctsync latency: the standby holds $(ct_cache "$st") of $c"
  grep -q "^events $c," <<<"$ast" || die "ctsync latency: the active saw other than $c events: $(head -2 <<<"$ast" | tail -1)"
  ct_lat+=("$m $p99 $mx") ct_rate+=("$r")
  own=$(grep '^event latency' <<<"$st" || true)
  if [ "$run" = 1 ]; then
    ct_lat_check="sent $sent in $(secs "$span") s ($r/s, per second $pmin–$pmax); active table $c = standby cache $(ct_cache "$st") = active's events; $np polls of $(ms "$pd") ms (lower bound of the median: $lo ms)"
    ct_own_latency=${own:-"no latency line in \`status\`, although nf_conntrack_timestamp=1 on the active: the kernel's NEW events carry no start timestamp (only DESTROY events do), so the standby has nothing to measure"}
  fi
  say "ctsync latency: median $m ms, p99 $p99 ms, max $mx ms ($r/s achieved); own: ${own:-none}"
  stop_pids

  # --- (c) latency, conntrackd --------------------------------------------------------------------
  fresh_pair
  cd_pair
  in_ns "$ns_a" sysctl -qw net.netfilter.nf_conntrack_timestamp=1
  start_conntrackd "$ns_b" standby
  start_conntrackd "$ns_a" active
  warmup
  for i in $(seq 250); do [ "$(cache_count "$ns_b" standby external)" = 10 ] && break; sleep 0.02; done
  c=$(cache_count "$ns_b" standby external); [ "$c" = 10 ] || die "conntrackd: the standby holds $c of 10 warm-up entries"
  say "conntrackd: $gen_rate new connections/s for $gen_secs s"
  latency_run conntrackd "$tmp/standby.ctl" 10 cd
  read -r m p99 mx np pd sent span r pmin pmax lo < "$tmp/lat-cd"
  grep -q '^reached' "$tmp/ana-cd.err" || die "conntrackd: the standby $(cat "$tmp/ana-cd.err")"
  c=$(count "$ns_a") ic=$(cache_count "$ns_a" active internal) xc=$(cache_count "$ns_b" standby external)
  [ "$c" = $(( sent + 10 )) ] || die "conntrackd latency: the active's table holds $c, not $(( sent + 10 ))"
  [ "$xc" = "$c" ] || die "conntrackd latency: the standby holds $xc of $c"
  cd_lat+=("$m $p99 $mx") cd_rate+=("$r")
  [ "$run" = 1 ] && cd_lat_check="sent $sent in $(secs "$span") s ($r/s, per second $pmin–$pmax); active table $c = active internal cache $ic = standby external cache $xc; $np polls of $(ms "$pd") ms (lower bound of the median: $lo ms)"
  say "conntrackd latency: median $m ms, p99 $p99 ms, max $mx ms ($r/s achieved)"
  stop_pids
  drop_ns "$ns_a"; drop_ns "$ns_b"; drop_ns "$ns_s"
done

# --- Report --------------------------------------------------------------------------------
col() { local k=$1; shift; printf '%s\n' "$@" | awk -v k="$k" '{ print $k }' | median; }
r_ct=$(med "${ct_repl[@]}");   r_cd=$(med "${cd_repl[@]}");   r_cdt=$(med "${cd_total[@]}")
r_boot=$(med "${cd_boot[@]}"); r_rs=$(med "${ct_resync[@]}")
c_ct=$(med "${ct_commit[@]}"); c_cd=$(med "${cd_commit[@]}")
l_ct=("$(col 1 "${ct_lat[@]}")" "$(col 2 "${ct_lat[@]}")" "$(col 3 "${ct_lat[@]}")")
l_cd=("$(col 1 "${cd_lat[@]}")" "$(col 2 "${cd_lat[@]}")" "$(col 3 "${cd_lat[@]}")")
rate_ct=$(med "${ct_rate[@]}"); rate_cd=$(med "${cd_rate[@]}")
{
  echo "| stage | ctsync | s | conntrackd | s | ratio conntrackd/ctsync | check (run 1) |"
  echo "|---|---|---|---|---|---|---|"
  echo "| (a) replication of $n entries from the active's kernel into the standby's cache, counted from the active's start | \`ctsync replicate active\` started → the standby's \`status\` shows them, no transfer in progress (its kernel dump and the bulk transfer, overlapped) | $(secs "$r_ct") | \`conntrackd\` started on the active (its start-up dump into its internal cache, $(secs "$r_boot") s) + \`conntrackd -n\` on the standby until its external cache holds them ($(secs "$r_cd") s) | $(secs "$r_cdt") | $(ratio "$r_cdt" "$r_ct") | ctsync: $ct_check. conntrackd: $cd_check |"
  echo "| (a″) re-send to a standby that asks for everything again | \`ctsync replicate resync\` on the standby (the active re-sends its copy in memory, no dump) | $(secs "$r_rs") | \`conntrackd -n\` on the standby (the active re-sends its internal cache) | $(secs "$r_cd") | $(ratio "$r_cd" "$r_rs") | ctsync: $ct_resync_check |"
  echo "| (b) commit of $n entries into the standby's empty table | \`ctsync replicate commit\` | $(secs "$c_ct") | \`conntrackd -c\` | $(secs "$c_cd") | $(ratio "$c_cd" "$c_ct") | ctsync: $ct_commit_check. conntrackd: $cd_commit_check |"
  echo "| (c) age of the newest entry in the standby's cache under $gen_rate new connections/s (ms: median / p99 / max over polls) | ctsync, $rate_ct/s achieved | ${l_ct[0]} / ${l_ct[1]} / ${l_ct[2]} ms | conntrackd, $rate_cd/s achieved | ${l_cd[0]} / ${l_cd[1]} / ${l_cd[2]} ms | $(ratio "${l_cd[0]}" "${l_ct[0]}") (medians) | ctsync: $ct_lat_check. conntrackd: $cd_lat_check |"
  echo "| (c) ctsync's own per-entry latency (kernel start to standby) | \`ctsync replicate status\` | $ct_own_latency | — | — | — | |"
  echo
  echo "N=$n, $( [ "$runs" = 1 ] && echo "one run" || echo "median of $runs runs"). Times from bash EPOCHREALTIME; in (a) the caches polled every $(( poll_us / 1000 )) ms"
  echo "by one waiter (wait.py) started before each timed step and speaking both daemons' control sockets directly (ctsync: \`status\`;"
  echo "conntrackd: STATS_CACHE), about 0.1 ms a poll, so (a) figures are good to about one poll. Entries loaded with \`ctsync snapshot load --keep-timeouts\`, timeouts"
  echo "of 30 s and 120 s raised to an hour. (c): one UDP datagram per new tuple from a Python generator in the active"
  echo "namespace (one socket, sendto, bursts every ~1 ms), $gen_secs s at $gen_rate/s; both standbys polled every $(( lat_poll_us / 1000 )) ms through"
  echo "their control sockets from one Python loop (no client process). The age is the time a poll returned minus the time the"
  echo "newest entry in the standby's cache was sent: an upper bound on that entry's event-to-standby latency, which includes"
  echo "up to ~1 ms of the generator's burst spacing."
  echo "Kernel $(uname -r), $(nproc) CPUs, conntrackd $(conntrackd -v 2>&1 | sed -n 's/.*daemon v\([0-9][0-9.]*[0-9]\).*/\1/p' | head -1) (FTFW over UDP), ctsync over TCP on the same veth link."
  for note in "${notes[@]}"; do echo "- $note"; done
} | tee "$out/replicate.md"
