#!/usr/bin/env bash
# Prints the digest (sha256:...) of an image reference in its registry, or exits 1 when the registry
# does not have it. The image workflow uses it to skip a build whose tag exists already (so a deploy of
# a commit that left item_socket alone keeps the running image); a person runs the same:
#   scripts/ci/image-digest.sh ghcr.io/spaced-fun/spaced-item-socket:<commit>
# Needs `docker buildx` and, for a private image, `docker login ghcr.io`.
set -euo pipefail
[ $# -eq 1 ] || { echo "usage: scripts/ci/image-digest.sh IMAGE:TAG" >&2; exit 2; }
if ! digest=$(docker buildx imagetools inspect "$1" --format '{{ .Manifest.Digest }}' 2>/dev/null); then
  echo "image-digest: $1 is not in the registry" >&2
  exit 1
fi
echo "$digest"
