#!/usr/bin/env bash
# Installs the test OpenID Connect provider (oidc-provider, tests/upstream)
# exactly as package-lock.json says. Idempotent and quick when already done;
# safe to run concurrently (serialised with flock where available).
set -euo pipefail
cd "$(dirname "$0")"

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
