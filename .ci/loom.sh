#!/usr/bin/env bash
# The loom suite (see loom-tests/README.md).
#
# 1. Every model in loom-tests/ runs under `--cfg loom` in release mode and
#    must pass.
# 2. Every mutant (a deliberately weakened ordering in src/sync.rs) is built
#    and its test must pass, i.e. the model it names must FAIL with a model
#    violation under it. A mutant that survives fails this script.
#
# Prints each model's name, preemption bound, interleavings explored and run
# time, then the totals. Builds go to target/loom so they never invalidate
# the normal build. Override the bound with LOOM_MAX_PREEMPTIONS (default 2).
set -euo pipefail
cd "$(dirname "$0")/.."

export CARGO_TARGET_DIR="${LOOM_TARGET_DIR:-target/loom}"
export LOOM_MAX_PREEMPTIONS="${LOOM_MAX_PREEMPTIONS:-2}"
# Each mutant: its cfg, the test file and the test that must catch it.
MUTANTS=(
    "loom_mutant:ring:mutant_relaxed_publish_is_caught"
    "loom_mutant_fence:ring:mutant_missing_read_fence_is_caught"
    "loom_mutant_membarrier:parking:mutant_missing_park_barrier_is_caught"
    "loom_mutant_membarrier:claim:mutant_missing_takeover_barrier_is_caught"
    "loom_mutant_claim:claim:mutant_missing_claim_barrier_is_caught"
)

summary=$(mktemp)
out=$(mktemp)
trap 'rm -f "$summary" "$out"' EXIT
export LOOM_SUMMARY="$summary"
start=$(date +%s)

# Run `cargo test` for loom-tests with the given RUSTFLAGS and test args;
# keep the full output in $out and print it only if cargo fails.
run() {
    local flags=$1
    shift
    if ! RUSTFLAGS="$flags" cargo test --release -p loom-tests "$@" >"$out" 2>&1; then
        cat "$out"
        return 1
    fi
}

echo "loom: models (release, LOOM_MAX_PREEMPTIONS=$LOOM_MAX_PREEMPTIONS, CARGO_TARGET_DIR=$CARGO_TARGET_DIR)"
if ! run "--cfg loom" --tests -- --nocapture --test-threads=1; then
    echo "loom: a model FAILED (output above)"
    exit 1
fi
models=$(grep -c '^model' "$summary" || true)
if [ "$models" -lt 1 ]; then
    echo "loom: no model ran"
    exit 1
fi

for entry in "${MUTANTS[@]}"; do
    IFS=: read -r cfg file test <<<"$entry"
    echo "loom: mutant --cfg $cfg (the $file model must fail)"
    before=$(grep -c '^mutant' "$summary" || true)
    if ! run "--cfg loom --cfg $cfg" --test "$file" -- --exact "$test" --nocapture; then
        echo "loom: mutant $cfg SURVIVED or failed for another reason (output above)"
        exit 1
    fi
    after=$(grep -c '^mutant' "$summary" || true)
    if [ "$after" -ne $((before + 1)) ]; then
        cat "$out"
        echo "loom: the mutant test $test did not run"
        exit 1
    fi
done

echo
awk -F'\t' '
    $1 == "model" {
        printf "  model   %-46s preemptions=%s interleavings=%9d %7.2fs\n", $2, $3, $4, $5
        n++; total += $4; secs += $5
    }
    $1 == "mutant" {
        printf "  mutant  %-46s preemptions=%s caught after %d interleavings: %s\n", $2, $3, $4, $6
        m++
    }
    END {
        printf "loom: %d models passed (%d interleavings, %.1fs in models); %d mutants caught\n", n, total, secs, m
    }' "$summary"
echo "loom: total wall time $(($(date +%s) - start)) s"
