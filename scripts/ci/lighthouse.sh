#!/usr/bin/env bash
# Lighthouse CI against the page a stack serves, with the budgets of lighthouserc.json (scores, Core
# Web Vitals, bytes and requests). The lighthouse workflow and tests/ci/test_lighthouse.py run this;
# a person runs the same:
#
#   scripts/ci/lighthouse.sh https://dev.spaced.fun/            # a deployed stack
#   scripts/ci/lighthouse.sh http://localhost:8080/             # `spaced up local`
#
# Chrome: CHROME_PATH, else Debian's chromium or Google Chrome from PATH; nothing is downloaded.
# Reports: build/lighthouse/ (LHCI_OUTPUT_DIR overrides). Exit status: lhci's (non-zero when a budget
# with level "error" fails).
set -euo pipefail
cd "$(dirname "$0")/../.."
[ $# -eq 1 ] || { echo "usage: scripts/ci/lighthouse.sh URL" >&2; exit 2; }
url=$1
chrome=${CHROME_PATH:-$(command -v chromium || command -v google-chrome || command -v google-chrome-stable || true)}
[ -n "$chrome" ] || { echo "ERROR (NoChrome): set CHROME_PATH or install chromium" >&2; exit 2; }
[ -x node_modules/.bin/lhci ] || { echo "ERROR (NoLhci): node_modules/.bin/lhci is missing: run npm ci" >&2; exit 2; }
export CHROME_PATH=$chrome
# No telemetry, no update checks, no browser download.
export LHCI_NO_LIGHTHOUSERC=1 PUPPETEER_SKIP_DOWNLOAD=1 CI="${CI:-true}"
output_dir=${LHCI_OUTPUT_DIR:-build/lighthouse}
exec node_modules/.bin/lhci autorun --config=lighthouserc.json --collect.url="$url" \
  --upload.outputDir="$output_dir"
