#!/usr/bin/env bash
# The site generators the tests build real sites with (Sphinx, MkDocs, Material for
# MkDocs), pinned by requirements.txt, installed once per requirements file into a
# virtualenv outside the clone. Prints the virtualenv's bin folder.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
digest=$(sha256sum "$here/requirements.txt" | cut -c1-16)
venv="${LECTERN_SITEGEN_CACHE:-/var/tmp/lectern-sitegen}/$digest"
if [ ! -x "$venv/bin/sphinx-build" ] || [ ! -x "$venv/bin/mkdocs" ]; then
  rm -rf "$venv"
  python3 -m venv "$venv" >&2
  "$venv/bin/pip" install -q --disable-pip-version-check -r "$here/requirements.txt" >&2
fi
echo "$venv/bin"
