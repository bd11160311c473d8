#!/usr/bin/env bash
# Diff of two 1M-entry snapshots (issue 5: under 2 s and 1 GiB), side by side with what a
# user does without ctsync: sort both files and list the lines that differ (`sort | comm -3`,
# no matching by tuple, no classes, no causes; LC_ALL=C, both sorts in parallel).
#
#   bash contrib/bench/diff.sh                 (makes the snapshots in $TMPDIR if missing)
#   N=1000000 RUNS=3 CTSYNC=.build/release/ctsync bash contrib/bench/diff.sh
#
# Prints markdown (medians of RUNS, with wall time and max RSS) and writes it to
# contrib/bench/out/diff.md.
set -euo pipefail
export LC_ALL=C
cd "$(dirname "$0")/../.."

n=${N:-1000000}
runs=${RUNS:-3}
tmp=${TMPDIR:-/tmp}
a=$tmp/ctsync-diff-a-$n.jsonl
b=$tmp/ctsync-diff-b-$n.jsonl
ctsync=${CTSYNC:-.build/release/ctsync}
out=contrib/bench/out
mkdir -p "$out"

[ -x "$ctsync" ] || make release >&2
if [ ! -s "$a" ] || [ ! -s "$b" ]; then
  echo "diff-bench: writing $n-entry snapshots to $tmp" >&2
  python3 contrib/bench/make_snapshots.py "$n" "$a" "$b"
fi

# One timed run: prints "seconds max_rss_kb".
timed() {
  local f; f=$(mktemp)
  /usr/bin/time -f "%e %M" -o "$f" "$@" >/dev/null 2>&1 || true
  tail -1 "$f"; rm -f "$f"
}
median() { sort -n | awk '{v[NR]=$1} END {print v[int((NR+1)/2)]}'; }

ct_t=(); ct_m=(); so_t=()
for _ in $(seq "$runs"); do
  read -r t m < <(timed "$ctsync" diff "snapshot:$a" "snapshot:$b" -o json)
  ct_t+=("$t"); ct_m+=("$m")
  read -r t _ < <(timed bash -c "comm -3 <(sort -S 40% '$a') <(sort -S 40% '$b')")
  so_t+=("$t")
done
ct=$(printf '%s\n' "${ct_t[@]}" | median); ctm=$(printf '%s\n' "${ct_m[@]}" | median)
so=$(printf '%s\n' "${so_t[@]}" | median)
divergences=$("$ctsync" diff "snapshot:$a" "snapshot:$b" -o json 2>/dev/null | head -1 | sed 's/.*"divergences":\([0-9]*\).*/\1/') || true

{
  echo "| $n vs $n entries ($(du -m "$a" | cut -f1) MB each) | wall s (median of $runs) | max RSS MiB | ratio |"
  echo "|---|---|---|---|"
  echo "| ctsync diff snapshot:A snapshot:B -o json ($divergences divergences) | $ct | $((ctm / 1024)) | 1.00 |"
  echo "| sort both + comm -3 (lines only) | $so | (not measured: the sorts run in process substitutions) | $(awk -v a="$so" -v b="$ct" 'BEGIN{printf "%.2f", a/b}') |"
} | tee "$out/diff.md"
