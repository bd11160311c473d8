# Shared by contrib/bench/load.sh and replicate.sh (sourced, not run): messages, the
# prerequisites, namespaces, the nf_conntrack limits, timing arithmetic.
# The sourcing script sets: bench (its name, for messages), n (entries), and later
# max_file, hash_file, host_max0, host_hash0 through limits_init; it keeps daemon pids in
# the array pids and its notes in the array notes.

die() { echo "$bench: $*" >&2; exit 1; }
say() { echo "$bench: $*" >&2; }

# Root, a ctsync binary (prints its real path), the tools, and conntrackd (installed if missing).
prerequisites() {
  [ "$(id -u)" = 0 ] || die "needs root (network namespaces)"
  local bin
  bin=$(realpath -e "${CTSYNC:-.build/release/ctsync}" 2>/dev/null) ||
    die "no ctsync at ${CTSYNC:-.build/release/ctsync} (make release, or set CTSYNC)"
  [ -x "$bin" ] || die "$bin is not executable"
  local tool
  for tool in conntrack nft ip awk sed python3; do
    command -v "$tool" >/dev/null || die "$tool not found"
  done
  if ! command -v conntrackd >/dev/null; then
    say "installing conntrackd"
    # Debian's policy-rc.d (where present) keeps the package's own service from starting.
    apt-get install -y -qq conntrackd >/dev/null || die "cannot install conntrackd"
  fi
  pgrep -x conntrackd >/dev/null && say "note: a conntrackd is already running on this host (left alone)"
  echo "$bin"
}

in_ns() { local ns=$1; shift; ip netns exec "$ns" "$@"; }
count() { in_ns "$1" conntrack -C; }

stop_pids() {
  local pid
  for pid in "${pids[@]}"; do
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  pids=()
}

drop_ns() {
  [ -e "/run/netns/$1" ] || return 0
  # Flushing first frees the entries now rather than in the kernel's asynchronous
  # namespace cleanup, which would compete with whatever is timed next.
  in_ns "$1" conntrack -F >/dev/null 2>&1 || true
  ip netns del "$1" 2>/dev/null || true
}

limits_init() {
  max_file=/proc/sys/net/netfilter/nf_conntrack_max
  hash_file=/sys/module/nf_conntrack/parameters/hashsize
  modprobe nf_conntrack 2>/dev/null || true   # built in on some kernels (no modprobe at all)
  [ -e "$max_file" ] && [ -e "$hash_file" ] || die "nf_conntrack is not available"
  host_max0=$(cat "$max_file")
  host_hash0=$(cat "$hash_file")
}

# Leaves the host's global limits as they were found.
limits_restore() {
  [ "$(cat "$max_file")" = "$host_max0" ] || echo "$host_max0" > "$max_file" || true
  [ "$(cat "$hash_file")" = "$host_hash0" ] || echo "$host_hash0" > "$hash_file" || true
}

# Room for n entries in a namespace. nf_conntrack_max is writable per namespace on some
# kernels; where it is read-only there (it then shows the global value), the limit that
# applies is the host's, so raise that, only upward, and say so (restored on exit).
make_room() {
  local need=$(( n + 1024 ))
  if [ "$(in_ns "$1" cat "$max_file")" -lt "$need" ]; then
    if in_ns "$1" sh -c "echo $need > $max_file" 2>/dev/null; then :; else
      echo "$need" > "$max_file"
      notes+=("Raised the host's global nf_conntrack_max from $host_max0 to $need for the run (restored afterwards).")
    fi
    [ "$(in_ns "$1" cat "$max_file")" -ge "$need" ] || die "cannot raise nf_conntrack_max to $need"
  fi
  # The hash table is global (shared by every namespace): about one bucket per entry.
  if [ "$(cat "$hash_file")" -lt "$n" ]; then
    echo "$n" > "$hash_file"
    notes+=("nf_conntrack hashsize raised from $host_hash0 to $n buckets for the run (global; restored afterwards).")
  fi
}

median() { sort -g | awk '{ v[NR] = $1 } END { if (NR) printf "%s\n", v[int((NR + 1) / 2)] }'; }
med() { printf '%s\n' "$@" | median; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b == 0) { print "—"; exit } r = a / b; printf (r < 0.1 ? "%.4f" : "%.2f"), r }'; }
secs() { awk -v s="$1" 'BEGIN { printf "%.3f", s }'; }

# A fresh namespace NS for a timed table. The nft table: a ct state rule makes the kernel
# track the namespace's own traffic (as on a router), and a `ct label set` rule, though it
# never matches, makes the kernel give every new entry room for labels: without a rule that
# sets labels the kernel drops the labels of created entries without an error. UNTRACKED
# (nft match expressions, one per line) is the daemons' own sync traffic, left untracked
# so that it adds no entry to the tables being counted. IPv6 is off (no neighbour discovery).
bench_ns() {   # NS UNTRACKED
  local rules
  rules=$(sed 's/.*/    & notrack/' <<<"$2")
  drop_ns "$1"
  ip netns add "$1"
  ip -n "$1" link set lo up
  in_ns "$1" sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1
  in_ns "$1" nft -f - <<NFT
table inet ctbench {
  chain raw_prerouting {
    type filter hook prerouting priority raw; policy accept;
$rules
  }
  chain raw_output {
    type filter hook output priority raw; policy accept;
$rules
  }
  chain output {
    type filter hook output priority 0; policy accept;
    ct state new counter
    meta mark 0x7fffffff ct label set 127
  }
}
NFT
  make_room "$1"
}
