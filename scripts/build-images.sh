#!/usr/bin/env bash
# Builds the application stack's images on the local Docker engine without any image registry:
# a debootstrap Debian base (cached under ${SPACED_CACHE_DIR:-/var/cache/spaced}) and the images on
# top of it. Unchanged images are skipped by their content tag. Options: see --help.
#   scripts/build-images.sh                  # all images
#   scripts/build-images.sh --only item_socket --json
set -euo pipefail
cd "$(dirname "$0")/.."
exec .venv/bin/spaced images "$@"
