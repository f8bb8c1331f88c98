#!/usr/bin/env bash
# Runs one AFL++ fuzz target for a bounded time (see docs/FUZZING.md).
#   fuzz/afl.sh TARGET [SECONDS]      TARGET: decoder | bodies | roundtrip | resp
# Builds the instrumented binaries into fuzz/target/afl, then fuzzes from
# fuzz/seeds/TARGET (plus, on a second run, the queue already in
# fuzz/corpus/TARGET, which is resumed) for SECONDS (default 600), headless.
# Findings: fuzz/corpus/TARGET/default/{crashes,hangs}/; stats in
# fuzz/corpus/TARGET/default/fuzzer_stats.
set -euo pipefail
target=${1:?usage: fuzz/afl.sh decoder|bodies|roundtrip|resp [SECONDS]}
secs=${2:-600}
cd "$(dirname "$0")"
CARGO_TARGET_DIR=target/afl cargo afl build --release --features afl --bin "$target"
input=seeds/$target
# An existing output directory is resumed ("-i -") rather than wiped.
if [ -d "corpus/$target/default/queue" ]; then input=-; fi
mkdir -p "corpus/$target"
# dict/TARGET.dict if the target has its own (resp), else the memcached tokens.
dict=dict/protocol.dict
if [ -f "dict/$target.dict" ]; then dict=dict/$target.dict; fi
export AFL_NO_UI=1 AFL_SKIP_CPUFREQ=1 AFL_I_DONT_CARE_ABOUT_MISSING_CRASHES=1
# -V stops AFL++ itself; timeout is the backstop.
timeout --signal=INT --kill-after=30 $((secs + 60)) \
  cargo afl fuzz -i "$input" -o "corpus/$target" -x "$dict" -V "$secs" \
  "target/afl/release/$target" > "corpus/$target.log" 2>&1 || true
grep -E '^(start_time|run_time|execs_done|execs_per_sec|corpus_count|edges_found|total_edges|bitmap_cvg|saved_crashes|saved_hangs)' \
  "corpus/$target/default/fuzzer_stats"
ls "corpus/$target/default/crashes" "corpus/$target/default/hangs" 2>/dev/null | grep -v README || true
