#!/usr/bin/env bash
# Instructions and allocations per history page, counted by valgrind's callgrind: the
# same count for the same binary and inputs whatever else the machine is doing, so one
# change can be weighed without the run-to-run spread of a throughput figure.
#
#   bench/run.sh peer                    # once: the cluster, the seeded data, the binaries
#   bench/instructions.sh [BINARY]       # default: the production build of this checkout
#   CALLGRIND_OUT=/tmp/page.callgrind bench/instructions.sh   # and keep the profile
#
# Starts BINARY under callgrind on port 8088 against bench/run.sh's cluster (port 55432),
# warms it up for 5 s, then counts only while wrk asks "a reader's 20 newest
# conversations" (bench/wrk/history.lua, 4 connections) for BENCH_SECONDS (default 20),
# and prints instructions and allocations (calls to mimalloc's `mi_malloc_aligned`) per request.
# Needs valgrind (Debian package) and wrk.
set -euo pipefail
cd "$(dirname "$0")/.."
TARGET=${CARGO_TARGET_DIR:-target}
BIN=${1:-$TARGET/production/lectern}
BENCH_DIR=${BENCH_DIR:-/var/tmp/lectern-bench}
SECONDS_COUNTED=${BENCH_SECONDS:-20}
export JWT_SECRET=${JWT_SECRET:-bench-secret-bench-secret-bench-secret-0123}
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
BENCH_READERS=${BENCH_READERS:-10000} "$TARGET/production/lectern-bench" tokens > "$out/readers.tsv"
DATABASE_URL="postgres://postgres@127.0.0.1:${PG_PORT:-55432}/lectern" DATABASE_MAX_CONNECTIONS=20 \
BIND_ADDR=127.0.0.1:8088 DATA_DIR="$BENCH_DIR/data" CORPUS_DIR="$BENCH_DIR/corpus" RUST_LOG=warn \
  valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$out/callgrind.out" \
  "$BIN" serve > /dev/null 2> "$out/server.log" &
pid=$!
for _ in $(seq 1 300); do
  curl -fs http://127.0.0.1:8088/readyz 2>/dev/null | grep -q '"database":"up"' && break
  sleep 1
done
load() {
  WRK_TARGET=lectern WRK_READERS="$out/readers.tsv" wrk -t1 -c4 -d"$1s" --timeout 10s \
    -s bench/wrk/history.lua http://127.0.0.1:8088 | grep '^RESULT'
}
load 5 > /dev/null
callgrind_control -i on "$pid" > /dev/null
result=$(load "$SECONDS_COUNTED")
callgrind_control -i off "$pid" > /dev/null
callgrind_control -d "$pid" > /dev/null
kill "$pid"; wait "$pid" 2>/dev/null || true
echo "$result"
requests=$(echo "$result" | sed -E 's/.* requests=([0-9]+) .*/\1/')
failures=$(echo "$result" | sed -E 's/.* failures=([0-9]+) .*/\1/')
[ "$failures" = 0 ] || { echo "$failures answers were wrong; not counted" >&2; exit 1; }
dump=$(ls "$out"/callgrind.out.* | head -1)
# CALLGRIND_OUT=FILE keeps the profile, for `callgrind_annotate --inclusive=yes FILE`.
[ -z "${CALLGRIND_OUT:-}" ] || cp "$dump" "$CALLGRIND_OUT"
callgrind_annotate --tree=caller "$dump" 2>/dev/null | python3 -c '
import re, sys
requests = int(sys.argv[1])
lines = sys.stdin.read().split("\n")
total = next(int(l.split()[0].replace(",", "")) for l in lines if "PROGRAM TOTALS" in l)
allocations = 0
for i, line in enumerate(lines):
    # Calls into the global allocator (mimalloc): `__rust_alloc` itself is inlined
    # into its callers by link-time optimisation, so the count is taken one level down.
    if "*  " in line[:40] and "mi_malloc_aligned " in line:
        j = i - 1
        while j >= 0 and lines[j].strip() and "<" in lines[j][:45]:
            allocations += int(re.search(r"\(([\d,]+)x\)", lines[j]).group(1).replace(",", ""))
            j -= 1
print(f"{total / requests:,.0f} instructions and {allocations / requests:,.0f} allocations per request ({requests} requests)")
' "$requests"
