#!/usr/bin/env bash
# One command for every figure in docs/benchmarks.md:
#
#   bench/run.sh [scenario…]      (default: history saturation login chat down)
#
# `login-shed`: the login storm against the default bounded hashing queue:
#   BENCH_HASH_QUEUE=32 bench/run.sh login-shed
# `streams`: 1000 chatStream subscriptions against a fake model streaming 300 tokens at
# 30/s, then 10,000 idle signed-in WebSockets (bench/src/bin/streams.rs). Its server
# can run under a profiler: a heap profile of 1000 open streams is
#   cargo build --profile production -p lectern --features system-allocator
#   STREAMS_WRAP="heaptrack -o /tmp/streams" IDLE=0 BENCH_SKIP_BUILD=1 bench/run.sh streams
# `peer`: Lectern and PostGraphile side by side on the same data with wrk (bench/peer.sh).
#
# Also, for the security review's hostile documents: `healthz` (/healthz alone),
# `hostile-each` (each document from one client, one after another) and `hostile` (a
# flood of them beside the same /healthz readers):
#   bench/run.sh healthz hostile-each hostile
# `hostile-rate` is the flood held to BENCH_RATE requests a second (default 2,200: 2,000
# documents and the 200 /healthz reads), so the cores are not all taken.
#
# Starts its own PostgreSQL cluster under $BENCH_DIR (kept between runs, so the 10k-reader
# dataset is seeded once), starts the production build of the server against it, seeds, runs each goose
# scenario and prints its table plus the server's peak RSS. Everything shares this machine.
set -euo pipefail
cd "$(dirname "$0")/.."

BENCH_DIR=${BENCH_DIR:-/var/tmp/lectern-bench}
PG_PORT=${PG_PORT:-55432}
PORT=${PORT:-8088}
HEALTH_PORT=${HEALTH_PORT:-8087}
READERS=${BENCH_READERS:-10000}
export BENCH_READERS=$READERS
export JWT_SECRET=${JWT_SECRET:-bench-secret-bench-secret-bench-secret-0123}
export LECTERN_URL="http://127.0.0.1:$PORT"
TARGET=${CARGO_TARGET_DIR:-target}
scenarios=("$@")
[ ${#scenarios[@]} -eq 0 ] && scenarios=(history saturation login chat down)

# BENCH_SKIP_BUILD=1 measures the binaries already built (an earlier commit's, say).
[ "${BENCH_SKIP_BUILD:-}" = 1 ] || cargo build --profile production -q -p lectern -p lectern-bench

bindir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
[ -x "$bindir/initdb" ] || bindir=$(pg_config --bindir)
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
mkdir -p "$BENCH_DIR"
[ "$(id -u)" = 0 ] && chown postgres "$BENCH_DIR"
pgdata="$BENCH_DIR/pg"
if [ ! -d "$pgdata" ]; then
  as_pg "$bindir/initdb" -D "$pgdata" -A trust -U postgres -E UTF8 >/dev/null
fi
pg_start() {
  as_pg "$bindir/pg_ctl" -D "$pgdata" -l "$BENCH_DIR/pg.log" -w start \
    -o "-p $PG_PORT -k $BENCH_DIR -c listen_addresses=127.0.0.1 -c max_connections=200 -c shared_buffers=1GB" >/dev/null
}
pg_stop() { as_pg "$bindir/pg_ctl" -D "$pgdata" -m fast -w stop >/dev/null; }
pg_running() { as_pg "$bindir/pg_ctl" -D "$pgdata" status >/dev/null 2>&1; }
pg_running || pg_start
psql() { "$bindir/psql" -h 127.0.0.1 -p "$PG_PORT" -U postgres -X -q "$@"; }
psql -d postgres -tc "SELECT 1 FROM pg_database WHERE datname = 'lectern'" | grep -q 1 \
  || psql -d postgres -c "CREATE DATABASE lectern"

# A corpus of well over 1,000 chunks for the chat scenario, made once from the bundled
# docs (120 copies of each page under its own title, this report excepted), indexed once with `lectern ingest`.
corpus="$BENCH_DIR/corpus"
if [ ! -d "$corpus" ]; then
  mkdir -p "$corpus"
  for i in $(seq 1 120); do
    for f in docs/*.md; do
      name=$(basename "$f" .md)
      [ "$name" = benchmarks ] && continue
      { printf -- '---\ntitle: %s, volume %s\n---\n' "$name" "$i"
        awk 'NR == 1 && /^---$/ {fm = 1; next} fm && /^---$/ {fm = 0; next} !fm' "$f"
      } > "$corpus/$name-$i.md"
    done
  done
fi
if [ ! -d "$BENCH_DIR/data/qdrant" ]; then
  DATA_DIR="$BENCH_DIR/data" "$TARGET/production/lectern" ingest "$corpus" 2>/dev/null
fi

# SERVER_CPUS=1 CLIENT_CPUS=0: the server on one core, the load tool and the probes on the
# other, as if they ran on another machine. PROBE_WRAP="chrt -f 50" (root) runs the
# probes ahead of the load tool, so they measure the server and not their own wait for a
# core beside goose. SERVER_WRAP="setpriv --bounding-set -sys_nice" starts the server
# without CAP_SYS_NICE, so its probe thread gets ordinary scheduling.
server_cpus=${SERVER_CPUS:+taskset -c $SERVER_CPUS}
client_cpus=${CLIENT_CPUS:+taskset -c $CLIENT_CPUS}
probe_wrap=${PROBE_WRAP:-}
server_wrap=${SERVER_WRAP:-}
server_pid=
stop_server() { [ -n "$server_pid" ] && kill -TERM "$server_pid" 2>/dev/null && wait "$server_pid" || true; server_pid=; }
trap stop_server EXIT
DATABASE_URL="postgres://postgres@127.0.0.1:$PG_PORT/lectern" \
DATABASE_MAX_CONNECTIONS=${DATABASE_MAX_CONNECTIONS:-20} \
BIND_ADDR="127.0.0.1:$PORT" HEALTH_BIND_ADDR="127.0.0.1:$HEALTH_PORT" DATA_DIR="$BENCH_DIR/data" CORPUS_DIR="$corpus" \
AUTH_RATE_LIMIT_PER_IP=0 AUTH_RATE_LIMIT_PER_EMAIL=0 CHAT_RATE_LIMIT_PER_IP=0 CHAT_RATE_LIMIT_PER_READER=0 \
  WS_MAX_CONNECTIONS_PER_IP=0 AUTH_HASH_QUEUE=${BENCH_HASH_QUEUE:-100000} RUST_LOG=warn \
  $server_cpus $server_wrap "$TARGET/production/lectern" serve 2> "$BENCH_DIR/server.log" &
server_pid=$!
for _ in $(seq 1 600); do
  curl -fs "$LECTERN_URL/readyz" | grep -q '"database":"up"' && break
  sleep 0.5
done

# Seed once: a template reader registered through GraphQL gives every seeded reader a
# real argon2id hash of the benchmark password.
readers=$(psql -d lectern -tAc "SELECT count(*) FROM \"user\" WHERE email LIKE 'reader%@bench.lectern'")
if [ "$readers" -lt "$READERS" ]; then
  curl -fs "$LECTERN_URL/graphql" -H 'content-type: application/json' \
    -d '{"query":"mutation { register(input: {email: \"template@bench.lectern\", password: \"bench-password-1\", name: \"Template\"}) { user { id } } }"}' >/dev/null || true
  started=$(date +%s.%N)
  psql -d lectern -v users="$READERS" -f bench/seed.sql
  echo "seeded $READERS readers x 50 conversations x 4 messages in $(awk -v a="$started" -v b="$(date +%s.%N)" 'BEGIN {printf "%.1f", b - a}') s"
fi

peak_rss() { awk '/VmHWM/ {printf "%.0f MiB", $2/1024}' "/proc/$server_pid/status"; }
# The server's CPU time so far (user + system), in seconds.
cpu() { awk -v hz="$(getconf CLK_TCK)" '{printf "%.2f", ($14 + $15) / hz}' "/proc/$server_pid/stat"; }
# Resident memory, and how much of it is the heap (RssAnon) rather than the binary's own
# pages mapped in as code paths first run (RssFile).
rss() { awk '/VmRSS/ {t = $2} /RssAnon/ {a = $2} /RssFile/ {f = $2}
  END {printf "%.1f MiB (heap %.1f, file %.1f)", t/1024, a/1024, f/1024}' "/proc/$server_pid/status"; }
for scenario in "${scenarios[@]}"; do
  if [ "$scenario" = streams ]; then
    # A second server whose model is the fake that `streams` starts on port 8099.
    DATABASE_URL="postgres://postgres@127.0.0.1:$PG_PORT/lectern" DATABASE_MAX_CONNECTIONS=20 \
    BIND_ADDR="127.0.0.1:8089" DATA_DIR="$BENCH_DIR/data-streams" CORPUS_DIR="$corpus" \
    LLM_BASE_URL="http://127.0.0.1:8099/v1" LLM_MODEL=fake LLM_MAX_CONCURRENCY=100000 \
    RETRIEVAL_MIN_SCORE=0 CHAT_RATE_LIMIT_PER_IP=0 CHAT_RATE_LIMIT_PER_READER=0 \
    WS_MAX_CONNECTIONS_PER_IP=0 MAX_CONNECTIONS=19000 RUST_LOG=warn \
      ${STREAMS_WRAP:-} "$TARGET/production/lectern" serve 2> "$BENCH_DIR/streams-server.log" &
    streams_pid=$!
    for _ in $(seq 1 120); do curl -fs http://127.0.0.1:8089/readyz >/dev/null && break; sleep 0.5; done
    "$TARGET/production/lectern-bench" tokens > "$BENCH_DIR/readers.tsv"
    ( ulimit -n "$(ulimit -Hn)"
      LECTERN_ADDR=127.0.0.1:8089 LECTERN_PID=$streams_pid READERS="$BENCH_DIR/readers.tsv" \
        "$TARGET/production/streams" )
    kill -TERM "$streams_pid"; wait "$streams_pid" || true
    continue
  fi
  if [ "$scenario" = peer ]; then
    LECTERN_PID=$server_pid PGDATA=$pgdata BENCH_DIR=$BENCH_DIR TARGET=$TARGET PG_PORT=$PG_PORT PORT=$PORT \
      bench/peer.sh
    continue
  fi
  if [ "$scenario" = down ]; then pg_stop; sleep 3; fi
  echo "server RSS before $scenario: $(rss)"
  cpu_before=$(cpu)
  probes=()
  if [ "$scenario" = hostile ] || [ "$scenario" = hostile-rate ] || [ "$scenario" = healthz ]; then
    # Beside goose's own /healthz readers: a light reader of each port, from 5 s in.
    probe_seconds=$(( ${BENCH_SECONDS:-30} - 5 ))
    ( sleep 5
      echo "API port $($client_cpus $probe_wrap python3 bench/healthz_probe.py 127.0.0.1 "$PORT" "$probe_seconds")" ) &
    probes+=($!)
    ( sleep 5
      echo "HEALTH_BIND_ADDR $($client_cpus $probe_wrap python3 bench/healthz_probe.py 127.0.0.1 "$HEALTH_PORT" "$probe_seconds")" ) &
    probes+=($!)
  fi
  $client_cpus "$TARGET/production/lectern-bench" "$scenario"
  [ ${#probes[@]} -eq 0 ] || wait "${probes[@]}"
  echo "server RSS after $scenario: $(rss); peak so far: $(peak_rss); server CPU during it: $(awk -v a="$cpu_before" -v b="$(cpu)" 'BEGIN {printf "%.2f s", b - a}')"
  if [ "$scenario" = down ]; then pg_start; fi
done
