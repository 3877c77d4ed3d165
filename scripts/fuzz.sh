#!/bin/sh
# fuzz.sh [SECONDS] — fuzz the C core: each target runs SECONDS (default 60).
#
# Mode "libfuzzer": clang -fsanitize=fuzzer,address,undefined (clang is
# installed with apt-get when missing and we are root; ~15 s on Debian 12).
# Mode "driver": no clang to be had: gcc -fsanitize=address,undefined with
# the blind mutator csrc/fuzz/driver.c (deterministic seed FUZZ_SEED).
# Set FUZZ_MODE=driver to force the fallback.
#
# Everything is built under build-fuzz/ (ignored by git):
#   build-fuzz/seeds/<target>/    seed corpus, rebuilt every run
#   build-fuzz/corpus/<target>/   libFuzzer's growing corpus (kept between runs)
#   build-fuzz/crashes/           crash-*, leak-*, timeout-* inputs
#   build-fuzz/<target>.log       the fuzzer's output
# Exits non-zero if any target crashed, leaked or broke an invariant; the
# last line is "fuzz: N passed, M failed (mode ...)".
set -u

SECS=${1:-60}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
B="$ROOT/build-fuzz"
TARGETS="canonical merge frames replies"
CORE_SRCS=$(ls "$ROOT"/csrc/*.c)
PY=${PYTHON:-python3}
mkdir -p "$B/crashes"

have_libfuzzer () {
    command -v clang >/dev/null 2>&1 || return 1
    printf 'int LLVMFuzzerTestOneInput(const unsigned char *d, unsigned long n)\n{ (void)d; (void)n; return 0; }\n' > "$B/probe.c"
    clang -fsanitize=fuzzer,address,undefined "$B/probe.c" -o "$B/probe" >/dev/null 2>&1
}

MODE=${FUZZ_MODE:-}
if [ -z "$MODE" ]; then
    if ! have_libfuzzer && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "fuzz: installing clang (apt-get)..."
        t0=$(date +%s)
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q clang >"$B/apt.log" 2>&1 ||
            { apt-get update -q >>"$B/apt.log" 2>&1 &&
              DEBIAN_FRONTEND=noninteractive apt-get install -y -q clang >>"$B/apt.log" 2>&1; }
        echo "fuzz: apt-get took $(( $(date +%s) - t0 )) s"
    fi
    if have_libfuzzer; then MODE=libfuzzer; else MODE=driver; fi
fi
echo "fuzz: mode $MODE, $SECS s per target"

# Seed corpus: JSONTestSuite, the workload, edge cases, kept crash inputs.
rm -rf "$B/seeds"
"$PY" "$ROOT/csrc/fuzz/build_corpus.py" --repo "$ROOT" --out "$B/seeds" || exit 2

CFLAGS="-g -O1 -fno-omit-frame-pointer -fno-sanitize-recover=all -D_GNU_SOURCE -I$ROOT/csrc"
case $MODE in
libfuzzer) CC=clang; SAN="-fsanitize=fuzzer,address,undefined" ;;
driver) CC=gcc; SAN="-fsanitize=address,undefined" ;;
*) echo "fuzz: unknown FUZZ_MODE $MODE" >&2; exit 2 ;;
esac

passed=0
failed=0
export ASAN_OPTIONS="abort_on_error=1:detect_leaks=1:${ASAN_OPTIONS:-}"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1:${UBSAN_OPTIONS:-}"
for t in $TARGETS; do
    exe="$B/fuzz_$t"
    srcs="$ROOT/csrc/fuzz/fuzz_$t.c $CORE_SRCS"
    [ "$MODE" = driver ] && srcs="$srcs $ROOT/csrc/fuzz/driver.c"
    # shellcheck disable=SC2086
    if ! $CC $CFLAGS $SAN $srcs -o "$exe" 2>"$B/$t.build.log"; then
        cat "$B/$t.build.log" >&2
        echo "fuzz: $t: build FAILED"
        failed=$((failed + 1))
        continue
    fi
    mkdir -p "$B/corpus/$t"
    log="$B/$t.log"
    if [ "$MODE" = libfuzzer ]; then
        "$exe" -max_total_time="$SECS" -timeout=10 -rss_limit_mb=2048 -max_len=16384 \
            -print_final_stats=1 -artifact_prefix="$B/crashes/$t-" \
            "$B/corpus/$t" "$B/seeds/$t" >"$log" 2>&1
        rc=$?
        stats=$(grep -E '^(#[0-9]+.*(DONE|pulse)|stat::number_of_executed_units|stat::average_exec_per_sec)' "$log" |
            tail -3 | tr '\n' ' ')
        cov=$(grep -oE 'cov: [0-9]+ ft: [0-9]+' "$log" | tail -1)
    else
        "$exe" -t "$SECS" -s "${FUZZ_SEED:-1}" -a "$B/crashes/$t-" "$B/seeds/$t" >"$log" 2>&1
        rc=$?
        stats=$(grep '^driver:' "$log" | tail -1)
        cov="no coverage in driver mode"
    fi
    if [ $rc -eq 0 ]; then
        passed=$((passed + 1))
        execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
        rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log")
        [ "$MODE" = driver ] && execs=$(sed -n 's/^driver: \([0-9]*\) execs.*(\([0-9]*\) exec.*/\1/p' "$log") &&
            rate=$(sed -n 's/^driver: .*(\([0-9]*\) exec\/s.*/\1/p' "$log")
        echo "fuzz: $t: ok ($execs execs, $rate exec/s, $cov)"
    else
        failed=$((failed + 1))
        echo "fuzz: $t: FAILED (exit $rc), last lines of $log:"
        grep -E 'ERROR|SUMMARY|invariant|crash|#[0-9]+ ' "$log" | head -20
        tail -40 "$log"
        echo "fuzz: crash inputs: $(ls "$B/crashes" | grep "^$t-" | tr '\n' ' ')"
        echo "fuzz: ${stats}"
    fi
done
echo "fuzz: $passed passed, $failed failed (mode $MODE, $SECS s per target)"
[ $failed -eq 0 ]
