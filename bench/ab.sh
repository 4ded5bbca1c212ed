#!/usr/bin/env bash
# Two (or more) builds of the server against each other, alternating, on bench/run.sh's
# cluster and data (run `bench/run.sh peer` once first):
#
#   C=1000 S=15 ROUNDS=2 bench/ab.sh /path/to/lectern-before /path/to/lectern-after
#
# Each round starts each binary in turn on port 8088, mints fresh reader tokens, warms it
# up for 5 s, then runs wrk with bench/wrk/history.lua ("a reader's 20 newest
# conversations", every answer checked) at C connections for S seconds, and prints
# req/s, p95, the server's CPU per request (user + system from /proc over the
# measured window) and how often per request its threads were switched out (`slept`:
# voluntary context switches; `preempted`: involuntary ones). Copy each build's binary
# aside first: cargo overwrites its target. A BINARY may be a script that sets the
# environment and `exec`s the server (its CPU is then the server's).
set -euo pipefail
cd "$(dirname "$0")/.."
C=${C:-1000}; S=${S:-15}; ROUNDS=${ROUNDS:-2}
TARGET=${CARGO_TARGET_DIR:-target}
BENCH_DIR=${BENCH_DIR:-/var/tmp/lectern-bench}
DB_URL="postgres://postgres@127.0.0.1:${PG_PORT:-55432}/lectern"
export JWT_SECRET=${JWT_SECRET:-bench-secret-bench-secret-bench-secret-0123}
HZ=$(getconf CLK_TCK)
ulimit -n "$(ulimit -Hn)"
readers=$(mktemp)
pid=
trap '[ -n "$pid" ] && kill -TERM "$pid" 2>/dev/null; rm -f "$readers"' EXIT
cpu() { awk -v hz="$HZ" '{print ($14 + $15) / hz}' "/proc/$1/stat"; }
# Context switches of all the server's threads: "voluntary nonvoluntary".
switches() { cat /proc/"$1"/task/*/status | awk '/^voluntary_ctxt/ {v += $2} /^nonvoluntary_ctxt/ {n += $2} END {print v, n}'; }
for _ in $(seq 1 "$ROUNDS"); do
  for bin in "$@"; do
    DATABASE_URL="$DB_URL" DATABASE_MAX_CONNECTIONS=${DATABASE_MAX_CONNECTIONS:-20} \
    BIND_ADDR=127.0.0.1:8088 HEALTH_BIND_ADDR=127.0.0.1:8087 DATA_DIR="$BENCH_DIR/data" \
    CORPUS_DIR="$BENCH_DIR/corpus" RUST_LOG=warn "$bin" serve 2> "$BENCH_DIR/ab-server.log" &
    pid=$!
    for _ in $(seq 1 100); do
      curl -fs http://127.0.0.1:8088/readyz 2>/dev/null | grep -q '"database":"up"' && break
      sleep 0.3
    done
    BENCH_READERS=${BENCH_READERS:-10000} DATABASE_URL="$DB_URL" "$TARGET/production/lectern-bench" tokens > "$readers"
    WRK_TARGET=lectern WRK_READERS=$readers wrk -t2 -c"$C" -d5s --timeout 10s \
      -s bench/wrk/history.lua http://127.0.0.1:8088 > /dev/null
    before=$(cpu "$pid"); switched=$(switches "$pid")
    out=$(WRK_TARGET=lectern WRK_READERS=$readers wrk -t2 -c"$C" -d"${S}s" --timeout 10s \
      -s bench/wrk/history.lua http://127.0.0.1:8088)
    after=$(cpu "$pid")
    echo "$out" | awk -v bin="$bin" -v c="$C" -v cpu="$(awk -v a="$before" -v b="$after" 'BEGIN {print b - a}')" \
      -v switched="$switched" -v now="$(switches "$pid")" '
      /^RESULT/ { for (i = 2; i <= NF; i++) { split($i, kv, "="); r[kv[1]] = kv[2] }
        split(switched, s0, " "); split(now, s1, " ")
        printf "%-40s c=%-4d %7.0f req/s  p95 %7.2f ms  failed %d/%d  server %6.1f us/req  switches/req %.2f slept %.2f preempted\n",
          bin, c, r["requests"] / r["seconds"], r["p95_ms"], r["failures"] + r["socket_errors"], r["checked"], cpu * 1e6 / r["requests"],
          (s1[1] - s0[1]) / r["requests"], (s1[2] - s0[2]) / r["requests"] }'
    kill -TERM "$pid"; wait "$pid" 2>/dev/null || true; pid=
  done
done
