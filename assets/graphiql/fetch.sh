#!/usr/bin/env bash
# Re-fetches the GraphiQL page's assets from the npm registry at the pinned versions and
# checks them against SHA256SUMS. The server embeds these files, so GraphiQL works offline
# and behind a firewall. To upgrade: change the versions, run with --update, review.
set -euo pipefail
cd "$(dirname "$0")"
GRAPHIQL=3.9.0
REACT=18.3.1
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
(cd "$work" && npm pack --silent "graphiql@$GRAPHIQL" "react@$REACT" "react-dom@$REACT" >/dev/null)
for package in "graphiql-$GRAPHIQL" "react-$REACT" "react-dom-$REACT"; do
  mkdir -p "$work/$package" && tar xzf "$work/$package.tgz" -C "$work/$package"
done
cp "$work/graphiql-$GRAPHIQL/package/graphiql.min.js" "$work/graphiql-$GRAPHIQL/package/graphiql.min.css" .
cp "$work/react-$REACT/package/umd/react.production.min.js" .
cp "$work/react-dom-$REACT/package/umd/react-dom.production.min.js" .
if [ "${1:-}" = --update ]; then
  sha256sum ./*.js ./*.css | sed 's# \./# #' > SHA256SUMS
fi
sha256sum -c SHA256SUMS
