#!/usr/bin/env bash
# Dump and create benchmark: ctsync side by side with conntrack(8) and two C programs,
#   ctdump_floor    the raw netlink dump floor (one dump request, nothing parsed)
#   ct_create_loop  one create per netlink request through libnetfilter_conntrack
# on the same table, in a throwaway network namespace per size (never the host's table).
#
#   contrib/bench/run.sh                     (needs root; `make bench` builds ctsync first)
#   SIZES="100000 250000" RUNS=5 CTSYNC=.build/release/ctsync contrib/bench/run.sh
#   HYPERFINE=0 ...                          (time with a plain loop even if hyperfine exists)
#
# Prints markdown tables to stdout (progress goes to stderr) and writes them to
# contrib/bench/out/results.md.
set -euo pipefail
shopt -s inherit_errexit
export LC_ALL=C                       # "." as the decimal point in EPOCHREALTIME and awk
cd "$(dirname "$0")/../.."            # every path below is relative to the repository

sizes=${SIZES:-"100000 250000"}
runs=${RUNS:-5}                       # timed runs per dump command (median reported)
fill_runs=${FILL_RUNS:-3}             # timed ctsync fills per size (median reported)
cli_n=${CLI_N:-2000}                  # conntrack -I processes timed, rate extrapolated
out=contrib/bench/out
ns=ctbench$$

die() { echo "bench: $*" >&2; exit 1; }
say() { echo "bench: $*" >&2; }

# --- Prerequisites -----------------------------------------------------------------
[ "$(id -u)" = 0 ] || die "needs root (network namespaces, sysctls)"
ctsync=$(realpath -e "${CTSYNC:-.build/release/ctsync}" 2>/dev/null) ||
  die "no ctsync at ${CTSYNC:-.build/release/ctsync} (make release, or set CTSYNC)"
[ -x "$ctsync" ] || die "$ctsync is not executable"
for tool in gcc pkg-config conntrack nft ip awk; do
  command -v "$tool" >/dev/null || die "$tool not found"
done
# GNU time for peak RSS (-v); hyperfine for timing if we can have it, else a loop.
[ -x /usr/bin/time ] || apt-get install -y -qq time >/dev/null || die "cannot install GNU time"
use_hyperfine=0
if [ "${HYPERFINE:-1}" != 0 ]; then
  command -v hyperfine >/dev/null || apt-get install -y -qq hyperfine >/dev/null 2>&1 || true
  command -v hyperfine >/dev/null && use_hyperfine=1
fi

# --- The C programs ----------------------------------------------------------------
mkdir -p "$out"
out=$(realpath "$out")
# shellcheck disable=SC2046  # pkg-config prints several words on purpose
gcc -O2 -Wall -o "$out/ctdump_floor" contrib/bench/ctdump_floor.c $(pkg-config --cflags --libs libmnl)
# shellcheck disable=SC2046
gcc -O2 -Wall -o "$out/ct_create_loop" contrib/bench/ct_create_loop.c \
  $(pkg-config --cflags --libs libnetfilter_conntrack)
floor=$out/ctdump_floor
loop=$out/ct_create_loop

# --- Namespace and host limits -----------------------------------------------------
max_file=/proc/sys/net/netfilter/nf_conntrack_max
hash_file=/sys/module/nf_conntrack/parameters/hashsize
modprobe nf_conntrack 2>/dev/null || true   # so both files exist before we read them
host_max0=$(cat "$max_file")
host_hash0=$(cat "$hash_file")
notes=()

drop_ns() {
  [ -e "/run/netns/$ns" ] || return 0
  # Flushing first frees the entries now rather than in the kernel's asynchronous
  # namespace cleanup, which would compete with whatever is timed next.
  ip netns exec "$ns" conntrack -F >/dev/null 2>&1 || true
  ip netns del "$ns" 2>/dev/null || true
}
cleanup() {
  drop_ns
  # Leave the host's global limits as we found them.
  [ "$(cat "$max_file")" = "$host_max0" ] || echo "$host_max0" > "$max_file" || true
  [ "$(cat "$hash_file")" = "$host_hash0" ] || echo "$host_hash0" > "$hash_file" || true
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

in_ns() { ip netns exec "$ns" "$@"; }

fresh_ns() {
  drop_ns
  ip netns add "$ns"
  # Conntrack only tracks in a namespace where something uses it: a ct state rule.
  in_ns nft -f - <<'NFT'
table inet ctbench {
  chain output {
    type filter hook output priority 0; policy accept;
    ct state new counter
  }
}
NFT
}

count() { in_ns conntrack -C; }
flush() {
  in_ns conntrack -F >/dev/null 2>&1
  [ "$(count)" = 0 ] || die "flush left $(count) entries"
}

# Room for n entries in the namespace. nf_conntrack_max is writable per namespace on
# some kernels; where it is read-only there (it then shows the global value), the
# limit that applies is the host's, so raise that, only upward, and say so.
make_room() {
  local n=$1 need=$(( $1 + 1024 ))
  if [ "${#notes[@]}" = 0 ]; then   # once: record how this kernel behaves
    if in_ns sh -c "cat $max_file > $max_file" 2>/dev/null; then
      notes+=("nf_conntrack_max is writable inside a namespace on this kernel.")
    else
      notes+=("nf_conntrack_max is read-only inside a namespace on this kernel and shows the host's global value (the limit is compared with each namespace's own count).")
    fi
  fi
  if [ "$(in_ns cat "$max_file")" -lt "$need" ]; then
    if in_ns sh -c "echo $need > $max_file" 2>/dev/null; then
      notes+=("nf_conntrack_max set to $need inside the namespace.")
    else
      echo "$need" > "$max_file"
      notes+=("Raised the host's global nf_conntrack_max from $host_max0 to $need for the run (restored afterwards).")
    fi
    [ "$(in_ns cat "$max_file")" -ge "$need" ] || die "cannot raise nf_conntrack_max to $need"
  fi
  # The hash table is global (shared by every namespace) and sized by this module
  # parameter; keep about one entry per bucket so chains stay short as n grows.
  if [ "$(cat "$hash_file")" -lt "$n" ]; then
    echo "$n" > "$hash_file"
    notes+=("nf_conntrack hashsize raised from $host_hash0 to $n buckets for the run (global; restored afterwards).")
  fi
}

# --- Timing --------------------------------------------------------------------------
# Seconds of one run, measured inside the namespace so that ip netns exec's own
# start-up is not counted. Output is discarded; stderr is kept in $out/last.err.
# (Functions below return on failure explicitly: callers use `|| die`, which turns
# errexit off inside them.)
timed() {
  in_ns env ERR="$out/last.err" bash -c \
    'a=$EPOCHREALTIME; "$@" >/dev/null 2>"$ERR" || exit; b=$EPOCHREALTIME; echo "$a $b"' timed "$@" |
    awk '{ printf "%.6f\n", $2 - $1 }'
}
median() { sort -g | awk '{ v[NR] = $1 } END { if (NR) printf "%.6f\n", v[int((NR + 1) / 2)] }'; }
last_err() { tail -n 3 "$out/last.err" 2>/dev/null; }
ratio()  { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }
rate()   { awk -v n="$1" -v s="$2" 'BEGIN { printf "%.0f", n / s }'; }

# Median seconds of each command (each argument one command line), run side by side
# on the same table; one line per command.
dump_times() {
  if [ "$use_hyperfine" = 1 ]; then
    # -N: no shell in between; hyperfine sends stdout and stderr to /dev/null.
    in_ns hyperfine -N --warmup 1 --runs "$runs" --export-csv "$out/hyperfine.csv" "$@" >&2 || return 1
    awk -F, 'NR == 1 { for (i = 1; i <= NF; i++) if ($i == "median") m = i; next }
             { print $m }' "$out/hyperfine.csv"
  else
    local cmd i t ts
    for cmd in "$@"; do
      # shellcheck disable=SC2086  # each argument is a word list
      timed $cmd >/dev/null || return 1          # warm-up
      ts=()
      for i in $(seq "$runs"); do
        # shellcheck disable=SC2086
        t=$(timed $cmd) || return 1
        ts+=("$t")
      done
      printf '%s\n' "${ts[@]}" | median
      say "$cmd: median $(printf '%s\n' "${ts[@]}" | median) s of ${ts[*]}"
    done
  fi
}

# Peak resident set size of one run, in MiB.
peak_rss() {
  in_ns /usr/bin/time -v "$@" 2>&1 >/dev/null |
    awk -F': ' '/Maximum resident set size/ { printf "%.1f", $2 / 1024; found = 1 } END { exit !found }'
}

# n `conntrack -R` lines with unique UDP tuples, documentation addresses only; the
# same tuples as ct_create_loop.c makes, so every fill builds the same table.
gen_lines() {
  awk -v n="$1" 'BEGIN {
    for (i = 0; i < n; i++)
      printf "-I -t 600 -s 198.51.100.%d -d 203.0.113.%d -p udp --sport %d --dport 53\n",
             1 + i % 250, 1 + int(i / 250) % 250, 1024 + int(i / 62500)
  }'
}

# --- Runs ------------------------------------------------------------------------------
timer=$([ "$use_hyperfine" = 1 ] && echo "hyperfine $(hyperfine --version | awk '{print $2}')" ||
        echo "a shell loop (bash EPOCHREALTIME)")
dump_rows=() create_rows=()

for n in $sizes; do
  say "$n entries"
  fill=$out/fill-$n.txt
  gen_lines "$n" > "$fill"
  fresh_ns
  make_room "$n"

  # Batched create: ctsync loading the whole file into an empty table, end to end
  # (process start, reading and checking every line, the kernel's inserts).
  ts=()
  for i in $(seq "$fill_runs"); do
    [ "$i" = 1 ] || flush
    t=$(timed "$ctsync" conntrack -R "$fill") || die "ctsync conntrack -R: $(last_err)"
    [ "$(count)" = "$n" ] || die "ctsync filled $(count) of $n entries"
    ts+=("$t")
  done
  ctsync_rate=$(rate "$n" "$(printf '%s\n' "${ts[@]}" | median)")
  say "ctsync conntrack -R: $ctsync_rate entries/s (fills took ${ts[*]} s)"

  # Dumps of that table, side by side.
  dump_times "$ctsync dump -o extended" "$ctsync dump -o json" \
             "conntrack -L -o extended" "$floor" > "$out/dump-times.txt" ||
    die "dump timing failed: $(last_err)"
  mapfile -t d < "$out/dump-times.txt"
  [ "${#d[@]}" = 4 ] || die "dump timing gave ${#d[@]} results, not 4"
  rss=$(peak_rss "$ctsync" dump -o extended) || die "ctsync dump under /usr/bin/time failed"
  rss_ref=$(peak_rss conntrack -L -o extended) || die "conntrack -L under /usr/bin/time failed"
  dump_rows+=("| $n | $(printf '%.3f s | ' "${d[@]}")$(ratio "${d[0]}" "${d[2]}") | $(ratio "${d[1]}" "${d[2]}") | $(ratio "${d[0]}" "${d[3]}") | $(ratio "${d[1]}" "${d[3]}") | $(ratio "${d[3]}" "${d[2]}") | $rss MiB | $rss_ref MiB |")

  # Baseline 1: the same n entries, one libnetfilter_conntrack request each (the
  # program times its own loop, so its process start is not counted).
  flush
  c_rate=$(in_ns "$loop" "$n") || die "ct_create_loop failed"
  [ "$(count)" = "$n" ] || die "ct_create_loop created $(count) of $n entries"
  say "ct_create_loop: $c_rate entries/s"

  # Baseline 2: one conntrack -I process per entry; cli_n of them, rate extrapolated.
  flush
  k=$(( n < cli_n ? n : cli_n ))
  head -n "$k" "$fill" > "$out/fill-cli.txt"
  # shellcheck disable=SC2016  # $line expands in the inner shell
  t=$(timed bash -c 'while read -r line; do conntrack $line || exit; done' < "$out/fill-cli.txt") ||
    die "conntrack -I: $(last_err)"
  [ "$(count)" = "$k" ] || die "conntrack -I created $(count) of $k entries"
  cli_rate=$(rate "$k" "$t")
  say "conntrack -I x $k: $cli_rate entries/s"

  create_rows+=("| $n | $ctsync_rate/s | $c_rate/s | $cli_rate/s | $(ratio "$ctsync_rate" "$c_rate") | $(ratio "$ctsync_rate" "$cli_rate") | $(ratio "$c_rate" "$cli_rate") |")
  drop_ns
done

# --- Report --------------------------------------------------------------------------------
{
  echo "## Dump (whole table to /dev/null, median of $runs runs after one warm-up)"
  echo
  echo "| entries | ctsync dump -o extended | ctsync dump -o json | conntrack -L -o extended | raw dump floor (C) | extended / conntrack | json / conntrack | extended / floor | json / floor | floor / conntrack | peak RSS ctsync dump -o extended | peak RSS conntrack -L |"
  echo "|---|---|---|---|---|---|---|---|---|---|---|---|"
  printf '%s\n' "${dump_rows[@]}"
  echo
  echo "## Create (empty table; ctsync: median of $fill_runs fills; conntrack -I: $cli_n processes, extrapolated)"
  echo
  echo "| entries | ctsync conntrack -R (batched) | C, one request per entry (libnetfilter_conntrack) | conntrack -I, one process per entry | ctsync / C | ctsync / conntrack -I | C / conntrack -I |"
  echo "|---|---|---|---|---|---|---|"
  printf '%s\n' "${create_rows[@]}"
  echo
  echo "Kernel $(uname -r), $(nproc) CPUs, $(conntrack --version 2>&1 | head -1), timed with $timer;"
  echo "every command ran inside a fresh network namespace (ip netns exec)."
  for note in "${notes[@]}"; do echo "- $note"; done
} | tee "$out/results.md"
