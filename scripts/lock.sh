#!/usr/bin/env bash
# Resolves the Python dependencies of pyproject.toml into the two lock files (pinned, with hashes):
#   requirements/item-socket.lock  item_socket's runtime, for the image's Python (Debian bookworm's 3.11.2, Linux)
#   requirements/dev.lock          everything the toolkit, the tests and CI need (any Linux, CPython 3.11+),
#                                  constrained by the first, so the tests run the versions the image ships
# Install steps (scripts/install-deps.sh, the item_socket image) install from these files only.
#
#   scripts/lock.sh            # after editing pyproject.toml: resolve again, keeping every pin that still fits
#   scripts/lock.sh --upgrade  # move every package to its newest allowed version (then run `make test`)
#   scripts/lock.sh --upgrade-package python-socketio   # one package (repeatable)
set -euo pipefail
cd "$(dirname "$0")/.."

uv=.venv/bin/uv
if [ ! -x "$uv" ]; then
  echo "lock: run scripts/install-deps.sh first (it installs uv into .venv)" >&2
  exit 1
fi
mkdir -p requirements
# No index URLs in the files: they name packages, versions and hashes only.
common=(--quiet --generate-hashes --no-emit-index-url --no-header --annotation-style line "$@")
"$uv" pip compile pyproject.toml "${common[@]}" \
  --python-version 3.11.2 --python-platform x86_64-unknown-linux-gnu \
  -o requirements/item-socket.lock
"$uv" pip compile pyproject.toml "${common[@]}" --extra infra --extra dev --universal \
  --python-version 3.11 -c requirements/item-socket.lock \
  -o requirements/dev.lock
echo "lock: wrote requirements/item-socket.lock and requirements/dev.lock"
