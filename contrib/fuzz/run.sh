#!/usr/bin/env bash
# Fuzzes the packet decoder (and checksum and defragmenter) with libFuzzer for a bounded time.
#   contrib/fuzz/run.sh            (10 minutes)
#   FUZZ_SECONDS=60 contrib/fuzz/run.sh
# Builds into .build-fuzz (git-ignored) with -sanitize=fuzzer,address. New inputs go to
# a scratch corpus; the checked-in seeds in contrib/fuzz/corpus are only read.
# Exit status is libFuzzer's: 0 when no crash was found within the time.
set -euo pipefail
cd "$(dirname "$0")/../.."
seconds=${FUZZ_SECONDS:-600}
swift build --scratch-path .build-fuzz --product DecoderFuzzer \
  -Xswiftc -sanitize=fuzzer,address -Xswiftc -DFUZZING -Xswiftc -parse-as-library
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
.build-fuzz/debug/DecoderFuzzer -max_total_time="$seconds" -print_final_stats=1 -max_len=4096 \
  "$work" contrib/fuzz/corpus
