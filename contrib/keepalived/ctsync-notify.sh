#!/usr/bin/env bash
# keepalived notify script for ctsync replicate (issue 6). Install as
# /usr/local/sbin/ctsync-notify.sh (root-owned, mode 0755); see keepalived.conf.example.
#
#   ctsync-notify.sh MASTER | BACKUP | FAULT | STOP     (notify_master / _backup / _fault / _stop)
#   ctsync-notify.sh INSTANCE NAME STATE PRIORITY       (keepalived's generic `notify` form)
#   ctsync-notify.sh check                              (for track_script, see below)
#
# MASTER: write the standby's external cache into this node's kernel
#         (`ctsync replicate commit`), THEN bring up the virtual addresses (CTSYNC_VIPS) and
#         announce them (gratuitous ARP). keepalived runs notify scripts asynchronously and
#         does not wait for them, so if keepalived managed the addresses (virtual_ipaddress)
#         they would move while the commit is still running: packets of existing connections
#         would reach a kernel without their state, be dropped by a strict ruleset or, with
#         nf_conntrack_tcp_loose=1, picked up as new entries that the commit then collides
#         with. Here keepalived only elects the master; this script owns the addresses, so
#         they come up after the commit has returned. If the commit fails the addresses come
#         up anyway (an outage would be worse than lost state) and the failure is logged.
# BACKUP, FAULT: remove the virtual addresses, then ask the peer's active daemon for a full
#         copy (`ctsync replicate resync`), so the cache is complete again after a role change.
# STOP:   remove the virtual addresses (keepalived is stopping).
# check:  exit 0 while this node is MASTER (its own table is the live one; the readiness of
#         its copy of the peer's table must not lower its priority); otherwise the result of
#         `ctsync replicate ready --max-lag 1000`, i.e. whether this node's copy of the
#         master's table is in step.
#
# Settings come from /etc/ctsync/replicate.conf (also the units' EnvironmentFile):
#   CTSYNC_VIPS="198.51.100.1/24 dev eth0; 203.0.113.1/24 dev eth1"   (`ip addr add` arguments)
#   CTSYNC_MAX_LAG=1000, CTSYNC_BIN=/usr/local/bin/ctsync (optional)
# Transitions are serialised with a lock, so a BACKUP that follows a MASTER at once waits for
# the commit to finish. Every step is logged to syslog (tag ctsync-notify) and stderr.
set -uo pipefail
export LC_ALL=C

conf=${CTSYNC_CONF:-/etc/ctsync/replicate.conf}
# shellcheck disable=SC1090
[ -r "$conf" ] && . "$conf"
ctsync=${CTSYNC_BIN:-/usr/local/bin/ctsync}
control=${CTSYNC_CONTROL:-/run/ctsync/replicate.sock}   # the standby daemon's socket
max_lag=${CTSYNC_MAX_LAG:-1000}
state_file=${CTSYNC_NOTIFY_STATE:-/run/ctsync-notify.state}
lock_file=${CTSYNC_NOTIFY_LOCK:-/run/lock/ctsync-notify.lock}

log() {
  local prio=$1; shift
  echo "ctsync-notify: $*" >&2
  command -v logger >/dev/null && logger -t ctsync-notify -p "daemon.$prio" -- "$*"
  return 0
}

case "${1:-}" in
  INSTANCE|GROUP) state=${3:-} ;;   # notify "script": TYPE NAME STATE PRIORITY
  *) state=${1:-} ;;
esac

if [ "$state" = check ]; then
  [ "$(cat "$state_file" 2>/dev/null)" = MASTER ] && exit 0
  exec "$ctsync" replicate ready --max-lag "$max_lag" --control "$control" >/dev/null 2>&1
fi

# "ADDR dev IF; ADDR dev IF" -> one `ip addr` argument list per line
vips() { tr ';' '\n' <<<"${CTSYNC_VIPS:-}" | sed 's/^ *//; s/ *$//' | grep -v '^$'; }

vips_up() {
  local spec addr dev
  while read -r spec; do
    # shellcheck disable=SC2086  # spec is "ADDR dev IF [more ip-address options]"
    if ip addr replace $spec; then
      log info "virtual address up: $spec"
    else
      log err "cannot add virtual address: $spec"; continue
    fi
    addr=${spec%% *}; addr=${addr%/*}
    dev=$(sed -n 's/.* dev \([^ ]*\).*/\1/p' <<<"$spec")
    case "$addr" in
      *:*) ;;   # IPv6: the kernel sends an unsolicited NA when ndisc_notify=1 on $dev
      *) if command -v arping >/dev/null && [ -n "$dev" ]; then
           # iputils arping: -U unsolicited (gratuitous) ARP, in the background
           arping -q -U -c 3 -I "$dev" "$addr" >/dev/null 2>&1 &
         else
           log warning "arping not found: neighbours learn $addr's new address only when their ARP entry expires"
         fi ;;
    esac
  done < <(vips)
}

vips_down() {
  local spec
  while read -r spec; do
    # shellcheck disable=SC2086
    ip addr del $spec 2>/dev/null && log info "virtual address down: $spec"
  done < <(vips)
  return 0
}

mkdir -p "${lock_file%/*}"
exec 9>"$lock_file"
flock -w 120 9 || log warning "could not take $lock_file within 120 s; going on"

case "$state" in
  MASTER)
    echo MASTER > "$state_file"
    t0=$(date +%s.%N)
    if out=$(timeout 120 "$ctsync" replicate commit --control "$control" 2>&1); then
      log notice "commit done before the virtual addresses move: $out"
      rc=0
    else
      log err "commit FAILED (the virtual addresses come up anyway; connections may be lost): $out"
      rc=1
    fi
    vips_up
    log notice "MASTER: $(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.3f", b - a }') s from the transition to the addresses being up"
    exit "$rc"
    ;;
  BACKUP|FAULT)
    echo "$state" > "$state_file"
    vips_down
    if out=$("$ctsync" replicate resync --control "$control" 2>&1); then
      log info "$state: $out"
    else
      log warning "$state: resync request failed (is ctsync-replicate-standby running?): $out"
    fi
    ;;
  STOP)
    echo STOP > "$state_file"
    vips_down
    ;;
  *)
    log err "unknown state '${state}' (arguments: $*)"
    exit 2
    ;;
esac
exit 0
