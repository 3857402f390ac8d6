#!/usr/bin/env bash
# Coverage-guided fuzzing on the stable toolchain: libFuzzer (the
# `libfuzzer-sys` crate builds it from source with the system C++ compiler)
# driven by rustc's SanitizerCoverage instrumentation, which stable rustc
# enables with `-C passes=sancov-module` and `-C llvm-args` (the flags
# cargo-fuzz passes, minus the nightly-only AddressSanitizer: shmq's unsafe
# code is confined to the mapping and slot modules, and every read from
# shared memory is bounds-checked, so a bad index panics rather than
# corrupts). Debug assertions and overflow checks are on, so an arithmetic
# overflow on hostile input is a finding too.
#
#   bash .ci/fuzz.sh                 # every target, 20 s each
#   FUZZ_SECS=600 bash .ci/fuzz.sh topic
#   FUZZ_SEED=1 bash .ci/fuzz.sh     # repeatable exploration (CI)
#
# Each target starts from its seed corpus (fuzz/corpus/<target>, left
# untouched; new inputs go to target/fuzz/corpus/<target>). A crash leaves
# its input in target/fuzz/artifacts/<target>/ and fails the script;
# replay one with `target/fuzz/<host triple>/release/<target> <file>`.
set -euo pipefail
cd "$(dirname "$0")/.."

secs=${FUZZ_SECS:-20}
# A fixed seed (CI sets one) makes a run repeat the same exploration.
seed_arg=()
[ -n "${FUZZ_SEED:-}" ] && seed_arg=(-seed="$FUZZ_SEED")
targets=("$@")
[ ${#targets[@]} -eq 0 ] && targets=(region topic dlq_envelope headers)

export CARGO_TARGET_DIR=target/fuzz
export RUSTFLAGS="-C passes=sancov-module \
 -C llvm-args=-sanitizer-coverage-level=4 \
 -C llvm-args=-sanitizer-coverage-inline-8bit-counters \
 -C llvm-args=-sanitizer-coverage-pc-table \
 -C llvm-args=-sanitizer-coverage-trace-compares \
 -C debug-assertions -C overflow-checks -C opt-level=3 -C debuginfo=1 \
 --cfg fuzzing"
# An explicit --target keeps RUSTFLAGS off the build scripts (which must
# not be instrumented: nothing links libFuzzer into them).
host=$(rustc -vV | sed -n 's/^host: //p')
cargo build --release -p shmq-fuzz --features libfuzzer --bins --target "$host"
bin="target/fuzz/$host/release"

status=0
for t in "${targets[@]}"; do
    mkdir -p "target/fuzz/corpus/$t" "target/fuzz/artifacts/$t"
    echo "--- fuzz $t for ${secs} s"
    log="target/fuzz/$t.log"
    if ! "$bin/$t" \
        -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -max_len=65536 \
        -print_final_stats=1 -artifact_prefix="target/fuzz/artifacts/$t/" "${seed_arg[@]}" \
        "target/fuzz/corpus/$t" "fuzz/corpus/$t" >"$log" 2>&1; then
        status=1
        echo "fuzz $t FAILED; input saved in target/fuzz/artifacts/$t/:"
        grep -E -A 30 'panicked|ERROR: libFuzzer|deadly signal|timeout' "$log" | head -60 || tail -40 "$log"
    fi
    # libFuzzer's summary: executions, their rate, coverage.
    grep -E '^stat::(number_of_executed_units|average_exec_per_sec|peak_rss_mb)|^#[0-9]+ *DONE' "$log" || true
    grep -E 'cov: [0-9]+' "$log" | tail -1 || true
done
# The harnesses' regions and liveness token (a killed or crashed fuzz
# process cannot remove its own).
rm -f /dev/shm/shmq.fz[0-9]* /dev/shm/shmq.fzs[0-9]*
exit $status
