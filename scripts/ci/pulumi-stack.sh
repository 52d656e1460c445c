#!/usr/bin/env bash
# One Pulumi operation on one stack, exactly as the deploy and drift workflows run it. A person runs the
# same from a checkout with the .venv (scripts/install-deps.sh) and the pulumi CLI:
#
#   scripts/ci/pulumi-stack.sh preview dev   # pulumi preview --diff with the policy pack
#   scripts/ci/pulumi-stack.sh up dev        # pulumi up --yes with the policy pack, then the stack outputs
#   scripts/ci/pulumi-stack.sh drift prod    # pulumi preview --refresh --expect-no-changes (exit 1 on drift)
#   scripts/ci/pulumi-stack.sh dns prod      # the stack outputs, then `spaced dns check` against them
#
# Output: the terminal and build/ci/<operation>-<stack>.txt (what the workflows post); `up` and `dns`
# also write build/ci/outputs-<stack>.json (`pulumi stack output --json`).
# Backend: Pulumi Cloud (PULUMI_ACCESS_TOKEN, or `pulumi login` done), or self-managed with
# PULUMI_BACKEND_URL (s3://bucket?region=..&endpoint=.. for S3-compatible stores, file:///path) and the
# passphrase secrets provider (PULUMI_CONFIG_PASSPHRASE or PULUMI_CONFIG_PASSPHRASE_FILE).
# Images: SPACED_IMAGE_ITEM_SOCKET (e.g. ghcr.io/<owner>/spaced-item-socket:<commit>) picks the
# item_socket image the stack deploys. Unset, with SPACED_IMAGE_OWNER=<owner> it is this checkout's
# image tag (`python3 -m infra.ci.affected image-tag --owner <owner>`, what the image workflow pushes);
# with neither, infra/app_stack/environments.py's default is used.
# DNS check: SPACED_DNS_RESOLVER (IP[:PORT]) is the server asked, default /etc/resolv.conf's.
# Exit status: pulumi's (drift: non-zero when the cloud differs), 2 for a usage or setup problem.
set -euo pipefail
cd "$(dirname "$0")/../.."

usage() { echo "usage: scripts/ci/pulumi-stack.sh preview|up|drift|dns STACK" >&2; exit 2; }
fail() { echo "ERROR ($1): $2" >&2; exit 2; }
[ $# -eq 2 ] || usage
operation=$1 stack=$2
case $operation in preview|up|drift|dns) ;; *) usage ;; esac
[ -f "stacks/Pulumi.$stack.yaml" ] || fail NoStack "stacks/Pulumi.$stack.yaml does not exist"
[ "$stack" != local ] || fail CloudEnvironment "the local stack is deployed with \`spaced up local\`"
command -v pulumi >/dev/null || fail NoPulumi "the pulumi CLI is not on PATH (https://www.pulumi.com/docs/install/)"
[ -x .venv/bin/python ] || fail NoVenv ".venv is missing: run scripts/install-deps.sh (or make deps)"
if [ -n "${PULUMI_BACKEND_URL:-}" ]; then
  # A self-managed backend keeps secrets with the passphrase provider.
  [ -n "${PULUMI_CONFIG_PASSPHRASE:-}${PULUMI_CONFIG_PASSPHRASE_FILE:-}" ] \
    || fail NoPassphrase "PULUMI_BACKEND_URL is set but neither PULUMI_CONFIG_PASSPHRASE nor PULUMI_CONFIG_PASSPHRASE_FILE"
elif [ -z "${PULUMI_ACCESS_TOKEN:-}" ] && ! pulumi whoami --non-interactive >/dev/null 2>&1; then
  fail NoBackend "set PULUMI_BACKEND_URL (+ PULUMI_CONFIG_PASSPHRASE) or PULUMI_ACCESS_TOKEN, or run pulumi login"
fi

if [ -z "${SPACED_IMAGE_ITEM_SOCKET:-}" ] && [ -n "${SPACED_IMAGE_OWNER:-}" ]; then
  SPACED_IMAGE_ITEM_SOCKET=$(python3 -m infra.ci.affected image-tag --owner "$SPACED_IMAGE_OWNER")
  export SPACED_IMAGE_ITEM_SOCKET
fi
mkdir -p build/ci
log="build/ci/$operation-$stack.txt"
outputs="build/ci/outputs-$stack.json"
common=(--stack "$stack" --non-interactive --color never)
echo "==> $operation $stack (item_socket image: ${SPACED_IMAGE_ITEM_SOCKET:-the default of infra/app_stack})"
pulumi stack select "$stack" --non-interactive \
  || fail NoStack "stack $stack does not exist in this backend: create it once with \`pulumi stack init $stack\` and commit the stack file"

status=0
case $operation in
  preview)
    pulumi preview "${common[@]}" --diff --policy-pack infra/policy 2>&1 | tee "$log" || status=${PIPESTATUS[0]}
    ;;
  up)
    pulumi up "${common[@]}" --yes --skip-preview --policy-pack infra/policy 2>&1 | tee "$log" || status=${PIPESTATUS[0]}
    [ "$status" -ne 0 ] || pulumi stack output "${common[@]}" --json >"$outputs"
    ;;
  drift)
    pulumi preview "${common[@]}" --refresh --expect-no-changes --diff 2>&1 | tee "$log" || status=${PIPESTATUS[0]}
    ;;
  dns)
    pulumi stack output "${common[@]}" --json >"$outputs"
    .venv/bin/spaced dns check "$stack" --outputs "$outputs" ${SPACED_DNS_RESOLVER:+--resolver "$SPACED_DNS_RESOLVER"} \
      2>&1 | tee "$log" || status=${PIPESTATUS[0]}
    ;;
esac
echo "==> $operation $stack: exit $status (log: $log)"
exit "$status"
