#!/usr/bin/env bash
# Long fuzz run of item_socket: the pytest fuzz tests with many more inputs per test.
# Usage: benchmarks/item_socket/fuzz_long.sh [examples per test, default 3000]
# Prints the tally of inputs by kind (also written to $ITEM_SOCKET_FUZZ_REPORT, default /tmp/item_socket_fuzz_report.json).
set -euo pipefail
cd "$(dirname "$0")/../.."
export ITEM_SOCKET_FUZZ_EXAMPLES="${1:-3000}"
export ITEM_SOCKET_FUZZ_REPORT="${ITEM_SOCKET_FUZZ_REPORT:-/tmp/item_socket_fuzz_report.json}"
exec .venv/bin/pytest tests/item_socket/fuzz -p no:cacheprovider -q -s --timeout 7200 "${@:2}"
