#!/usr/bin/env bash
# Runs every fuzz target for SECONDS each (default 60) on the stable toolchain and fails if any
# input crashes one. See fuzz/README.md.
#
#   bash fuzz/run.sh [SECONDS]
#
# Builds the libFuzzer binaries with plain `cargo build` and the same flags as
# `cargo fuzz build --sanitizer none` (so no nightly and no cargo-fuzz install is needed), into
# fuzz/target (or $FUZZ_TARGET_DIR). Each target starts from a temporary copy of
# fuzz/seeds/<target>/ plus fuzz/regressions/<target>-*.bin; crashing inputs are written to
# fuzz/artifacts/<target>/ and their paths printed.
set -euo pipefail

secs="${1:-60}"
if ! [[ "$secs" =~ ^[0-9]+$ ]] || [ "$secs" -lt 1 ]; then
    echo "usage: bash fuzz/run.sh [SECONDS]" >&2
    exit 2
fi

fuzz_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
target_dir="${FUZZ_TARGET_DIR:-$fuzz_dir/target}"
targets=(parse_line ingest_datagram health_body import_decode)

work=""
fuzzer_pid=""
cleanup() {
    if [ -n "$fuzzer_pid" ] && kill -0 "$fuzzer_pid" 2>/dev/null; then
        kill "$fuzzer_pid" 2>/dev/null || true
        wait "$fuzzer_pid" 2>/dev/null || true
    fi
    if [ -n "$work" ]; then rm -rf "$work"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- what the build needs: cargo (the machine's toolchain) and a C++ compiler (libfuzzer-sys
# compiles libFuzzer from the sources it ships).
if ! command -v cargo >/dev/null; then
    echo "fuzz/run.sh: cargo not found" >&2
    exit 1
fi
if ! command -v c++ >/dev/null; then
    echo "fuzz/run.sh: installing g++ (for libFuzzer)"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq g++ >/dev/null
fi

# --- build: the flags of `cargo fuzz build --sanitizer none` (cargo-fuzz 0.13), which are all
# stable: SanitizerCoverage for libFuzzer's feedback, --cfg fuzzing, debug assertions and
# overflow checks on. --target keeps them off build scripts and proc macros.
host="$(rustc -vV | sed -n 's/^host: //p')"
unset CARGO_ENCODED_RUSTFLAGS # it would take precedence over RUSTFLAGS
export RUSTFLAGS="-Cpasses=sancov-module \
-Cllvm-args=-sanitizer-coverage-level=4 \
-Cllvm-args=-sanitizer-coverage-inline-8bit-counters \
-Cllvm-args=-sanitizer-coverage-pc-table \
-Cllvm-args=-sanitizer-coverage-trace-compares \
--cfg fuzzing \
-Cllvm-args=-simplifycfg-branch-fold-threshold=0 \
-Cllvm-args=-sanitizer-coverage-stack-depth \
-Cdebug-assertions \
-Ccodegen-units=1"
echo "fuzz/run.sh: building ${targets[*]} (${host}, into ${target_dir})"
build_start=$SECONDS
cargo build --release --manifest-path "$fuzz_dir/Cargo.toml" --target "$host" \
    --target-dir "$target_dir" --config 'profile.release.debug="line-tables-only"' --bins
echo "fuzz/run.sh: built in $((SECONDS - build_start)) s"
unset RUSTFLAGS
bin_dir="$target_dir/$host/release"

# --- run
work="$(mktemp -d "${TMPDIR:-/tmp}/meterd-fuzz.XXXXXX")"
failed=()
for t in "${targets[@]}"; do
    corpus="$work/corpus/$t"
    artifacts="$fuzz_dir/artifacts/$t"
    log="$work/$t.log"
    mkdir -p "$corpus" "$artifacts"
    cp "$fuzz_dir/seeds/$t/"* "$corpus/"
    for r in "$fuzz_dir/regressions/$t"-*; do
        if [ -f "$r" ]; then cp "$r" "$corpus/"; fi
    done
    case "$t" in
        parse_line | ingest_datagram) dict="$fuzz_dir/dicts/statsd.dict" ;;
        health_body) dict="$fuzz_dir/dicts/health.dict" ;;
        *) dict="" ;;
    esac
    echo "fuzz/run.sh: $t for ${secs} s ($(find "$corpus" -type f | wc -l) seeds)"
    rc=0
    "$bin_dir/$t" "$corpus" ${dict:+-dict="$dict"} \
        -max_total_time="$secs" -timeout=30 -rss_limit_mb=2048 \
        -artifact_prefix="$artifacts/" -print_final_stats=1 >"$log" 2>&1 &
    fuzzer_pid=$!
    wait "$fuzzer_pid" || rc=$?
    fuzzer_pid=""
    execs="$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)"
    cov="$(grep -o 'cov: [0-9]*' "$log" | tail -1 || true)"
    if [ "$rc" -eq 0 ]; then
        echo "fuzz/run.sh: $t ok: ${execs:-?} execs, ${cov:-cov: ?}"
    else
        failed+=("$t")
        echo "fuzz/run.sh: $t FAILED (exit $rc); its log from the failure:"
        if grep -q "panicked at" "$log"; then
            sed -n '/panicked at/,$p' "$log" | head -n 80 | sed 's/^/    /'
        else
            tail -n 60 "$log" | sed 's/^/    /'
        fi
        crash="$(sed -n 's/.*Test unit written to \(.*\)$/\1/p' "$log" | tail -1)"
        echo "fuzz/run.sh: crashing input: ${crash:-(none written; see the log above)}"
        if [ -n "$crash" ]; then
            for r in "$fuzz_dir/regressions/$t"-*; do
                if [ -f "$r" ] && cmp -s "$r" "$crash"; then
                    echo "fuzz/run.sh: it is the saved regression ${r#"$fuzz_dir/"} (not fixed yet)"
                fi
            done
            echo "fuzz/run.sh: reproduce with: $bin_dir/$t $crash"
        fi
    fi
done

if [ "${#failed[@]}" -gt 0 ]; then
    echo "fuzz/run.sh: crashes in: ${failed[*]}"
    echo "fuzz: $((${#targets[@]} - ${#failed[@]})) passed, ${#failed[@]} failed"
    exit 1
fi
echo "fuzz/run.sh: ${#targets[@]} targets ran ${secs} s each without a crash"
echo "fuzz: ${#targets[@]} passed, 0 failed"
