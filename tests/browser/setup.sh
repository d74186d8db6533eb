#!/usr/bin/env bash
# Installs playwright-core for the browser tests (tests/browser.rs) exactly
# as package-lock.json says. playwright-core downloads no browser: the tests
# drive Debian's chromium (/usr/bin/chromium, or $CHROMIUM), which .ci/run
# installs. Idempotent and quick when already done; safe to run concurrently.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
exec "$here/../npm-ci.sh" "$here"
