#!/usr/bin/env bash
# Bounded fuzzing for CI: every atheris target for FUZZ_RUNS inputs (default 20000) and at
# most FUZZ_MAX_TIME seconds each (default 300), from a fresh seed corpus recorded from real
# exchanges.  Exit status 0: no finding; 1: a target found a crash, a contract violation, a
# hang (-timeout) or excess memory (-rss_limit_mb); the input is kept and printed.
#
#   bash fuzz/run_ci.sh                      # all targets
#   FUZZ_RUNS=2000 bash fuzz/run_ci.sh frames responder
#
# Environment: FUZZ_RUNS, FUZZ_MAX_TIME, FUZZ_SEED (libFuzzer -seed, default 1: a CI run
# is reproducible), FUZZ_KEEP (directory for corpora and findings; default: a temp dir,
# removed when nothing was found).
set -uo pipefail
cd "$(dirname "$0")/.."

RUNS=${FUZZ_RUNS:-20000}
MAX_TIME=${FUZZ_MAX_TIME:-300}
SEED=${FUZZ_SEED:-1}
TARGETS=("$@")
if [ ${#TARGETS[@]} -eq 0 ]; then
    TARGETS=(responder frames transport profile secured storage tcp)
fi
WORK=${FUZZ_KEEP:-$(mktemp -d -t spdm-fuzz.XXXXXX)}
mkdir -p "$WORK"

if ! python3 fuzz/make_corpus.py --out "$WORK/corpus" >"$WORK/make_corpus.log" 2>&1; then
    echo "fuzz: make_corpus.py failed:" >&2
    cat "$WORK/make_corpus.log" >&2
    exit 1
fi

status=0
for target in "${TARGETS[@]}"; do
    script="fuzz/fuzz_${target}.py"
    if [ ! -f "$script" ]; then
        echo "fuzz: $target: no $script, skipped"
        continue
    fi
    corpus="$WORK/corpus/$target"
    artifacts="$WORK/findings/$target"
    mkdir -p "$corpus" "$artifacts"
    extra=()
    if [ "$target" = profile ] && [ -f "$WORK/corpus/profile.dict" ]; then
        extra+=("-dict=$WORK/corpus/profile.dict")
    fi
    log="$WORK/$target.log"
    start=$(date +%s.%N)
    python3 "$script" -runs="$RUNS" -max_total_time="$MAX_TIME" -seed="$SEED" \
        -timeout=20 -rss_limit_mb=2048 -print_final_stats=1 \
        -artifact_prefix="$artifacts/" "${extra[@]}" "$corpus" >"$log" 2>&1
    rc=$?
    end=$(date +%s.%N)
    runs=$(grep -o 'Done [0-9]* runs' "$log" | grep -o '[0-9]*' | tail -1)
    secs=$(python3 -c "print(f'{$end - $start:.1f}')")
    if [ $rc -ne 0 ]; then
        status=1
        echo "fuzz: $target: FINDING (exit $rc) after ${secs} s; log: $log"
        grep -A 30 -E 'Uncaught Python exception|ERROR: libFuzzer' "$log" | head -60
        for f in "$artifacts"/*; do
            [ -f "$f" ] || continue
            echo "  input $f (base64 $(base64 -w0 "$f" | head -c 2000))"
            echo "  save it as tests/fuzz_regressions/$target/<name> to replay it in pytest"
        done
    else
        echo "fuzz: $target: ${runs:-?} runs in ${secs} s, no finding"
    fi
done

if [ $status -eq 0 ] && [ -z "${FUZZ_KEEP:-}" ]; then
    rm -rf "$WORK"
else
    echo "fuzz: corpora, logs and findings kept in $WORK"
fi
exit $status
