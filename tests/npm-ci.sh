#!/usr/bin/env bash
# Installs the npm packages of one test directory (its package-lock.json,
# exactly): tests/npm-ci.sh DIR. Idempotent and quick when already done (a
# stamp holds the lock file's hash); safe to run concurrently (serialised
# with flock where available). Used by tests/upstream/setup.sh and
# tests/browser/setup.sh.
set -euo pipefail
cd "$1"

stamp=node_modules/.gatehouse-setup
want="$(sha256sum package-lock.json | cut -d' ' -f1)"
installed() { [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; }

installed && exit 0

if command -v flock >/dev/null 2>&1; then
  exec 9>.setup.lock
  flock 9
  installed && exit 0
fi

npm ci --no-audit --no-fund --loglevel=error
echo "$want" >"$stamp"
